-- Acquires a mutex (`x`), a write lock (`w`), a read lock (`r`) or the leadership (`l`) of an
-- election, whose record (see leader.lua) is written with the grant.
-- KEYS: lock, readers, queue, queue_exp, fence, epoch, sem, sem_queue, sem_queue_exp, leader,
--       candidates
-- ARGV: mode, id, ttl, enqueue, waiter_ttl, inbox_prefix, restart_delay, fast, value (what a
--       candidate advertises; empty for other modes)
-- -> {1, token, value} granted | {0, wait_ms} busy | {-3, kind} the name is used as another
--    kind | {-4, wait_ms} no grants yet after a restart
local mode, id, ttl = ARGV[1], ARGV[2], tonumber(ARGV[3])
local member = id .. ':' .. mode
-- The fast path (a client that is not queued, whose server is past its restart delay): a free
-- name that is not crowded (see grant.lua) is taken with two commands and no clock (a
-- candidate's also writes its record, unless one is there to be looked at).
if ARGV[8] == '1' and mode ~= 'r' and (mode ~= 'l' or redis.call('EXISTS', KEYS[10]) == 0) then
  local token = redis.pcall('INCRBY', KEYS[5], 2)
  if type(token) == 'number' and token % 2 == 0 and token >= ANCHORED and token < 9007199254740991 then
    local value = id .. ':' .. mode .. ':' .. num(token)
    if redis.call('SET', KEYS[1], value, 'NX', 'PX', ttl) then
      if mode == 'l' then elect(KEYS[10], value, ARGV[9], ttl) end
      return {1, token, value}
    end
  end
end
tick()
-- A counter the fast path just created (it was missing) gets its anchor and lifetime now.
local fence = counter(KEYS[5])
if fence > 0 and fence < ANCHORED then crowd(KEYS[5]) end
local others
if mode == 'r' then
  others = redis.call('EXISTS', KEYS[1], KEYS[3], KEYS[7], KEYS[8])
else
  others = redis.call('EXISTS', KEYS[1], KEYS[2], KEYS[3], KEYS[7], KEYS[8])
end
local rank, held = false, false
-- A candidate looks at the leader record first: data tumbler did not write there stops it
-- before anything is written.
if mode == 'l' then
  leader_record(KEYS[10], false)
  expect_type(KEYS[11], 'hash')
end
if others > 0 then
  expect_type(KEYS[1], 'string')
  for _, i in ipairs({2, 3, 4}) do expect_type(KEYS[i], 'zset') end
  purge_waiters(KEYS[3], KEYS[4])
  redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
  -- One kind of primitive per name: a mutex, a read-write lock or a semaphore. (The semaphore
  -- keys are looked at only when there are any, which is rare under a lock's name.)
  local asked = kind_of(mode)
  if redis.call('EXISTS', KEYS[7], KEYS[8]) > 0 then
    for _, i in ipairs({7, 8, 9}) do expect_type(KEYS[i], 'zset') end
    purge_waiters(KEYS[8], KEYS[9])
    redis.call('ZREMRANGEBYSCORE', KEYS[7], '-inf', now)
    if redis.call('EXISTS', KEYS[7], KEYS[8]) > 0 then return {-3, 'semaphore'} end
  end
  held = redis.call('GET', KEYS[1])
  if held then
    local held_id, held_mode, held_token = string.match(held, '^(%x+):([xwl]):(%d+)~?$')
    if held_mode and kind_of(held_mode) ~= asked then return {-3, kind_of(held_mode)} end
    -- Handed to this waiter by a release (whose message it has not seen yet): take it, for a
    -- whole TTL from now.
    if held_id == id and held_mode == mode then
      redis.call('PEXPIRE', KEYS[1], ttl)
      if mode == 'l' then redis.call('PEXPIRE', KEYS[10], ttl) end
      return {1, tonumber(held_token), id .. ':' .. mode .. ':' .. held_token}
    end
    -- Another client's value (redis-py, rslock) holds the lock until it expires; one that
    -- never expires would make every acquisition wait forever.
    if not held_mode and redis.call('PTTL', KEYS[1]) == -1 then
      foreign(KEYS[1], 'holds a value without expiry, which no lock holder writes')
    end
  end
  if (mode == 'x' or mode == 'l') and redis.call('EXISTS', KEYS[2]) == 1 then return {-3, 'read-write lock'} end
  local first = head(KEYS[3])
  if first then
    local first_mode = string.match(first, ':(%a)$')
    if first_mode and kind_of(first_mode) ~= asked then return {-3, kind_of(first_mode)} end
  end
  rank = redis.call('ZRANK', KEYS[3], member)
end
local wait = restart_wait(KEYS[6], tonumber(ARGV[7]))
local recovering = wait > 0
local ok = not recovering
if ok and others > 0 then
  local left = redis.call('PTTL', KEYS[1])
  if left ~= -2 then
    ok, wait = false, left
  elseif mode == 'r' then
    local ahead
    if rank == 0 then
      ahead = {}
    elseif rank then
      ahead = redis.call('ZRANGE', KEYS[3], 0, rank - 1)
    else
      ahead = redis.call('ZRANGE', KEYS[3], 0, -1)
    end
    for _, m in ipairs(ahead) do
      if not is_reader(m) then ok = false end
    end
  else
    local last = redis.call('ZRANGE', KEYS[2], -1, -1, 'WITHSCORES')
    if last[2] then
      ok, wait = false, tonumber(last[2]) - now
    else
      local first = head(KEYS[3])
      if first and first ~= member then
        ok = false
        wait = (tonumber(redis.call('ZSCORE', KEYS[4], first)) or now) - now
      end
    end
  end
end
if ok then
  if rank then
    redis.call('ZREM', KEYS[3], member)
    redis.call('ZREM', KEYS[4], member)
  end
  if mode == 'l' then redis.call('HDEL', KEYS[11], member) end
  local waiting = redis.call('EXISTS', KEYS[3]) == 1
  local token = next_token(KEYS[5], waiting or mode == 'r' or redis.call('EXISTS', KEYS[2]) == 1)
  local value = id .. ':' .. mode .. ':' .. num(token)
  if mode == 'r' then
    redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
    redis.call('ZADD', KEYS[2], num(now + ttl), value)
    keep(KEYS[2], ttl)
    local first = head(KEYS[3])
    if first and is_reader(first) then notify(ARGV[6], first, 'wake ' .. first) end
  elseif waiting then
    redis.call('SET', KEYS[1], value .. '~', 'PX', ttl)
  else
    redis.call('SET', KEYS[1], value, 'PX', ttl)
  end
  if mode == 'l' then elect(KEYS[10], value, ARGV[9], ttl) end
  return {1, token, value}
end
if ARGV[4] == '1' then
  enqueue(KEYS[3], KEYS[4], member, rank, tonumber(ARGV[5]))
  if mode == 'l' then
    -- The value a release elects this candidate with.
    prune_candidates(KEYS[11], KEYS[3])
    redis.call('HSET', KEYS[11], member, ARGV[9])
    keep(KEYS[11], tonumber(ARGV[5]))
  end
  -- Crowded already (odd, anchored) or a held value flagged already: nothing to write.
  if fence % 2 == 0 or fence < ANCHORED then crowd(KEYS[5]) end
  if held and string.sub(held, -1) ~= '~' then flag_holder(KEYS[1]) end
end
if recovering then return {-4, wait} end
return {0, wait}
