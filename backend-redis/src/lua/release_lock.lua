-- Releases a mutex, write, read or leader hold and hands the lock to the head of the queue.
-- KEYS: lock, readers, queue, queue_exp, revoked, fence, leader, candidates
-- ARGV: mode, value, inbox_prefix, events, announce_free
-- -> 1 released | 0 not ours
-- The fast path: an unmarked mutex, writer or leader value (nobody queued behind it, no
-- revocation asked) is deleted with two commands and no clock (a leader's record with it, and
-- the end of its leadership announced); not in Redlock mode (announce_free '1'), whose
-- waiters do not queue but wait for `free`.
local released = 0
if ARGV[1] ~= 'r' then
  local v = get_string(KEYS[1])
  if v == ARGV[2] and ARGV[5] ~= '1' then
    if ARGV[1] == 'l' then
      redis.call('DEL', KEYS[1], KEYS[7])
      redis.call('PUBLISH', KEYS[7], 'leader')
    else
      redis.call('DEL', KEYS[1])
    end
    return 1
  end
  tick()
  if v == ARGV[2] or v == ARGV[2] .. '~' then
    redis.call('DEL', KEYS[1])
    released = 1
  end
else
  tick()
  local score = zscore(KEYS[2], ARGV[2])
  if score then
    if tonumber(score) > now then released = 1 end
    redis.call('ZREM', KEYS[2], ARGV[2])
    redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
  end
end
redis.pcall('SREM', KEYS[5], ARGV[2])
if released == 1 then
  if ARGV[1] == 'l' then redis.call('DEL', KEYS[7]) end
  local elected = hand_off(KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[6], ARGV[3], ARGV[4], ARGV[5], KEYS[7], KEYS[8])
  if ARGV[1] == 'l' and not elected then redis.call('PUBLISH', KEYS[7], 'leader') end
end
return released
