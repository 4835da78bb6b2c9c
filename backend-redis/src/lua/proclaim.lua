-- Replaces what a leader advertises, if the leadership is still its own.
-- KEYS: lock, leader
-- ARGV: owner (the hold's value), value
-- -> 1 proclaimed | 0 the leadership is not ours
local held = get_string(KEYS[1])
if held ~= ARGV[1] and held ~= ARGV[1] .. '~' then return 0 end
leader_record(KEYS[2], false)
local left = redis.call('PTTL', KEYS[1])
elect(KEYS[2], ARGV[1], ARGV[2], math.max(1, left))
return 1
