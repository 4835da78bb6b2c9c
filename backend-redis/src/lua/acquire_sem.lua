-- Acquires `count` permits of a semaphore of `limit`.
-- KEYS: sem, sem_limit, sem_queue, sem_queue_exp, fence, epoch, lock, readers, queue, queue_exp
-- ARGV: limit, count, id, ttl, enqueue, waiter_ttl, inbox_prefix, restart_delay
-- -> {1, token, value} granted | {0, wait_ms} busy | {-1, stored_limit} another limit |
--    {-3, kind} the name is used as another kind | {-4, wait_ms} no grants yet after a restart
local limit, count, id, ttl = tonumber(ARGV[1]), tonumber(ARGV[2]), ARGV[3], tonumber(ARGV[4])
tick()
expect_type(KEYS[1], 'zset')
expect_type(KEYS[2], 'string')
expect_type(KEYS[3], 'zset')
expect_type(KEYS[4], 'zset')
-- One kind of primitive per name: a mutex, a read-write lock or a semaphore.
if redis.call('EXISTS', KEYS[7], KEYS[8], KEYS[9]) > 0 then
  expect_type(KEYS[7], 'string')
  for i = 8, 10 do expect_type(KEYS[i], 'zset') end
  purge_waiters(KEYS[9], KEYS[10])
  redis.call('ZREMRANGEBYSCORE', KEYS[8], '-inf', now)
  -- A mutex or writer value (with the `~` that a waiter, even one gone since, leaves on it), or
  -- a value tumbler did not write (redis-py, rslock): the name is held as a lock.
  local held = redis.call('GET', KEYS[7])
  if held then return {-3, kind_of(string.match(held, '^%x+:([xwl]):%d+~?$') or 'x')} end
  if redis.call('EXISTS', KEYS[8]) == 1 then return {-3, 'read-write lock'} end
  local first = head(KEYS[9])
  if first then return {-3, kind_of(string.match(first, ':(%a)$') or 'x')} end
end
purge_waiters(KEYS[3], KEYS[4])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local holders = redis.call('ZRANGE', KEYS[1], 0, -1, 'WITHSCORES')
if #holders == 0 and redis.call('EXISTS', KEYS[3]) == 0 then redis.call('DEL', KEYS[2]) end
local stored = redis.call('GET', KEYS[2])
if stored and not string.match(stored, '^%d+$') then
  foreign(KEYS[2], 'holds ' .. string.format('%q', string.sub(stored, 1, 40)) .. ', not a semaphore limit tumbler wrote')
end
if stored and stored ~= ARGV[1] then return {-1, tonumber(stored)} end
local used, soonest = 0, nil
for i = 1, #holders, 2 do
  local n = string.match(holders[i], '^%x+:p(%d+):%d+$')
  if not n then
    foreign(KEYS[1], 'holds the lease ' .. string.format('%q', string.sub(holders[i], 1, 40)) .. ' that tumbler did not write')
  end
  used = used + tonumber(n)
  if not soonest then soonest = tonumber(holders[i + 1]) end
end
local member = id .. ':p'
local rank = redis.call('ZRANK', KEYS[3], member)
local wait = restart_wait(KEYS[6], tonumber(ARGV[8]))
local recovering = wait > 0
local ok = not recovering
if ok then
  if used + count > limit then
    ok, wait = false, (soonest or now) - now
  else
    local first = head(KEYS[3])
    if first and first ~= member then
      ok = false
      wait = (tonumber(redis.call('ZSCORE', KEYS[4], first)) or now) - now
    end
  end
end
if ok then
  local token = next_token(KEYS[5], true)
  local value = id .. ':p' .. count .. ':' .. num(token)
  redis.call('ZADD', KEYS[1], num(now + ttl), value)
  keep(KEYS[1], ttl)
  redis.call('SET', KEYS[2], ARGV[1], 'PX', redis.call('PTTL', KEYS[1]))
  if rank then
    redis.call('ZREM', KEYS[3], member)
    redis.call('ZREM', KEYS[4], member)
  end
  if used + count < limit then
    local first = head(KEYS[3])
    if first then notify(ARGV[7], first, 'wake ' .. first) end
  end
  return {1, token, value}
end
if ARGV[5] == '1' then
  local wttl = tonumber(ARGV[6])
  enqueue(KEYS[3], KEYS[4], member, rank, wttl)
  crowd(KEYS[5])
  -- Waiters keep the limit recorded, so a client with another limit is told so.
  if not stored then redis.call('SET', KEYS[2], ARGV[1], 'PX', wttl) end
  keep(KEYS[2], wttl)
end
if recovering then return {-4, wait} end
return {0, wait}
