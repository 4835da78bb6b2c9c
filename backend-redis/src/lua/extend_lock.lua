-- Renews a mutex, write, read or leader hold for another ttl (a leader's record with it).
-- KEYS: lock, readers, revoked, leader
-- ARGV: mode, value, ttl
-- -> {1, revoke_requested} | {0, 0} not ours any more
local ttl = tonumber(ARGV[3])
if ARGV[1] == 'r' then
  tick()
  local score = zscore(KEYS[2], ARGV[2])
  if not score or tonumber(score) <= now then
    if score then redis.call('ZREM', KEYS[2], ARGV[2]) end
    return {0, 0}
  end
  redis.call('ZADD', KEYS[2], num(now + ttl), ARGV[2])
  keep(KEYS[2], ttl)
else
  local held = get_string(KEYS[1])
  if held ~= ARGV[2] and held ~= ARGV[2] .. '~' then return {0, 0} end
  redis.call('PEXPIRE', KEYS[1], ttl)
  if ARGV[1] == 'l' then redis.call('PEXPIRE', KEYS[4], ttl) end
end
local asked = redis.pcall('SISMEMBER', KEYS[3], ARGV[2])
if type(asked) ~= 'number' then asked = 0 end
return {1, asked}
