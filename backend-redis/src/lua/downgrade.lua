-- Turns a write hold into a read hold with the same token.
-- KEYS: lock, readers, queue, fence
-- ARGV: write value, read value, ttl, inbox_prefix
-- -> 1 downgraded | 0 not ours
tick()
local held = get_string(KEYS[1])
if held ~= ARGV[1] and held ~= ARGV[1] .. '~' then return 0 end
expect_type(KEYS[2], 'zset')
local ttl = tonumber(ARGV[3])
redis.call('ZADD', KEYS[2], num(now + ttl), ARGV[2])
-- A reader holds now: keep free-mutex fast paths off the name.
crowd(KEYS[4])
keep(KEYS[2], ttl)
redis.call('DEL', KEYS[1])
local first = head(KEYS[3])
if first and is_reader(first) then notify(ARGV[4], first, 'wake ' .. first) end
return 1
