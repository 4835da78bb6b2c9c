-- Removes whatever a cancelled semaphore acquisition left.
-- KEYS: sem, queue, queue_exp
-- ARGV: id, inbox_prefix, events, announce_free
-- -> 1 if anything of this acquisition was removed
tick()
expect_type(KEYS[1], 'zset')
expect_type(KEYS[2], 'zset')
expect_type(KEYS[3], 'zset')
local p = ARGV[1] .. ':'
local changed = redis.call('ZREM', KEYS[2], p .. 'p') == 1
redis.call('ZREM', KEYS[3], p .. 'p')
for _, m in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  if string.sub(m, 1, #p) == p then
    redis.call('ZREM', KEYS[1], m)
    changed = true
  end
end
if changed then announce(KEYS[2], KEYS[3], ARGV[2], ARGV[3], ARGV[4]) end
if changed then return 1 end
return 0
