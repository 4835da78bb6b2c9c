-- Removes every hold of a name, whoever owns it (an administrator breaking a lock), and
-- hands the lock to the head of the queue.
-- KEYS: lock, readers, sem, revoked, queue, queue_exp, sem_queue, sem_queue_exp, fence
-- ARGV: inbox_prefix, events, announce_free
-- -> number of holds removed
tick()
local values = live_values(KEYS[1], KEYS[2], KEYS[3])
redis.call('DEL', KEYS[1], KEYS[2], KEYS[3], KEYS[4])
if #values == 0 then return 0 end
tell_holders(values, ARGV[1], 'gone')
hand_off(KEYS[1], KEYS[2], KEYS[5], KEYS[6], KEYS[9], ARGV[1], ARGV[2], ARGV[3])
announce(KEYS[7], KEYS[8], ARGV[1], ARGV[2], '0')
return #values
