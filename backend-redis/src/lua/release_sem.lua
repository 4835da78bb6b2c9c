-- Releases a semaphore lease and wakes the head of the queue.
-- KEYS: sem, queue, queue_exp, revoked
-- ARGV: value, inbox_prefix, events, announce_free
-- -> 1 released | 0 not ours
tick()
local released = 0
local score = zscore(KEYS[1], ARGV[1])
if score then
  if tonumber(score) > now then released = 1 end
  redis.call('ZREM', KEYS[1], ARGV[1])
end
redis.pcall('SREM', KEYS[4], ARGV[1])
if released == 1 then announce(KEYS[2], KEYS[3], ARGV[2], ARGV[3], ARGV[4]) end
return released
