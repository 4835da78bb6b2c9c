-- Removes whatever a cancelled acquisition left: its queue entry (and a candidate's value), or
-- a hold it was granted without knowing (then the lock goes on to the next waiter).
-- KEYS: lock, readers, queue, queue_exp, fence, leader, candidates
-- ARGV: id, inbox_prefix, events, announce_free
-- -> 1 if anything of this acquisition was removed
tick()
expect_type(KEYS[2], 'zset')
expect_type(KEYS[3], 'zset')
expect_type(KEYS[4], 'zset')
local p = ARGV[1] .. ':'
local changed = false
for _, mode in ipairs({'x', 'w', 'r', 'l'}) do
  if redis.call('ZREM', KEYS[3], p .. mode) == 1 then changed = true end
  redis.call('ZREM', KEYS[4], p .. mode)
end
redis.pcall('HDEL', KEYS[7], p .. 'l')
local value = get_string(KEYS[1])
local led = false
if value and string.sub(value, 1, #p) == p then
  redis.call('DEL', KEYS[1])
  changed = true
  led = string.sub(value, #p + 1, #p + 2) == 'l:'
  if led then redis.call('DEL', KEYS[6]) end
end
for _, m in ipairs(redis.call('ZRANGE', KEYS[2], 0, -1)) do
  if string.sub(m, 1, #p) == p then
    redis.call('ZREM', KEYS[2], m)
    changed = true
  end
end
if changed then
  local elected = hand_off(KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], ARGV[2], ARGV[3], ARGV[4], KEYS[6], KEYS[7])
  if led and not elected then redis.call('PUBLISH', KEYS[6], 'leader') end
end
if changed then return 1 end
return 0
