-- Asks every holder of a name to release.
-- KEYS: lock, readers, sem, revoked
-- ARGV: inbox_prefix, keep_ms
-- -> number of holders asked
tick()
local values = live_values(KEYS[1], KEYS[2], KEYS[3])
if #values == 0 then return 0 end
expect_type(KEYS[4], 'set')
local keep_ms = tonumber(ARGV[2])
for i = 1, 3 do
  local left = redis.call('PTTL', KEYS[i])
  if left > keep_ms then keep_ms = left end
end
for _, value in ipairs(values) do redis.call('SADD', KEYS[4], value) end
redis.call('PEXPIRE', KEYS[4], keep_ms)
-- The mutex holder's release must clear its entry in `revoked`: not the fast path.
flag_holder(KEYS[1])
tell_holders(values, ARGV[1], 'revoke')
return #values
