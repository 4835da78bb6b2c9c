-- Renews a semaphore lease for another ttl.
-- KEYS: sem, sem_limit, revoked
-- ARGV: value, ttl
-- -> {1, revoke_requested} | {0, 0} not ours any more
tick()
local ttl = tonumber(ARGV[2])
local score = zscore(KEYS[1], ARGV[1])
if not score or tonumber(score) <= now then
  if score then redis.call('ZREM', KEYS[1], ARGV[1]) end
  return {0, 0}
end
redis.call('ZADD', KEYS[1], num(now + ttl), ARGV[1])
keep(KEYS[1], ttl)
keep(KEYS[2], ttl)
local asked = redis.pcall('SISMEMBER', KEYS[3], ARGV[1])
if type(asked) ~= 'number' then asked = 0 end
return {1, asked}
