-- Removes every hold of a name, whoever owns it (an administrator breaking a lock), and
-- hands the lock to the head of the queue (a leader's record goes with its hold).
-- KEYS: lock, readers, sem, revoked, queue, queue_exp, sem_queue, sem_queue_exp, fence, leader,
--       candidates
-- ARGV: inbox_prefix, events, announce_free
-- -> number of holds removed
tick()
local values = live_values(KEYS[1], KEYS[2], KEYS[3])
local led = string.match(values[1] or '', '^%x+:l:%d+$') ~= nil
redis.call('DEL', KEYS[1], KEYS[2], KEYS[3], KEYS[4])
if #values == 0 then return 0 end
if led then redis.call('DEL', KEYS[10]) end
tell_holders(values, ARGV[1], 'gone')
local elected = hand_off(KEYS[1], KEYS[2], KEYS[5], KEYS[6], KEYS[9], ARGV[1], ARGV[2], ARGV[3], KEYS[10], KEYS[11])
if led and not elected then redis.call('PUBLISH', KEYS[10], 'leader') end
announce(KEYS[7], KEYS[8], ARGV[1], ARGV[2], '0')
return #values
