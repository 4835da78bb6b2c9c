-- Who leads an election, read with the lock key in one step.
-- KEYS: lock, leader
-- -> {0} nobody | {1, value, term, id, pttl} the leader (id: its acquisition id; pttl: how
--    long its hold lives unless renewed) | {-3, kind} the name is used as another kind
expect_type(KEYS[1], 'string')
local held = redis.call('GET', KEYS[1])
local record = leader_record(KEYS[2], false)
if not held then return {0} end
local id, mode = string.match(held, '^(%x+):([xwl]):%d+~?$')
if not mode then
  foreign(KEYS[1], 'is held by a lock tumbler did not write (a redis-py or rslock Lock?), which is no leader of an election: wait for it to be released, or use another name for the election')
end
if mode ~= 'l' then return {-3, kind_of(mode)} end
local owner = string.gsub(held, '~$', '')
if not record or record[3] ~= owner then
  foreign(KEYS[2], 'does not describe the leadership held at ' .. KEYS[1])
end
return {1, record[1], record[2], id, redis.call('PTTL', KEYS[1])}
