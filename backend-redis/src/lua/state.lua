-- Who holds a name and how many wait.
-- KEYS: lock, readers, sem, queue_exp, sem_queue_exp
-- -> {lock value or '', {reader values}, {lease values}, waiters}
tick()
expect_type(KEYS[1], 'string')
for i = 2, 5 do expect_type(KEYS[i], 'zset') end
local after = '(' .. num(now)
local value = our_value(KEYS[1]) or redis.call('GET', KEYS[1]) or ''
local readers = redis.call('ZRANGEBYSCORE', KEYS[2], after, '+inf')
local leases = redis.call('ZRANGEBYSCORE', KEYS[3], after, '+inf')
local waiting = redis.call('ZCOUNT', KEYS[4], after, '+inf') + redis.call('ZCOUNT', KEYS[5], after, '+inf')
return {value, readers, leases, waiting}
