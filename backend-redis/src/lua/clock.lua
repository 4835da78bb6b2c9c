-- Shared by every script: the server clock, number formatting, key lifetimes and the checks
-- that turn data tumbler did not write into a typed error instead of a Lua error.
-- The server clock in ms and µs, read by `tick()`: every script calls it before it needs the
-- time (the fast paths of acquire_lock and release_lock never do).
local now, now_us
local function tick()
  local clock = redis.call('TIME')
  now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
  now_us = tonumber(clock[1]) * 1000000 + tonumber(clock[2])
end
local function num(x) return string.format('%d', x) end
local function keep(key, ms)
  local left = redis.call('PTTL', key)
  if left ~= -2 and left < ms then redis.call('PEXPIRE', key, ms) end
end
-- Stops the script with an error the client turns into Error::Conflict naming `key`.
local function foreign(key, what)
  error({err = 'TUMBLERCONFLICT key ' .. key .. ' ' .. what})
end
-- `key` must be missing or of type `wanted`.
local function expect_type(key, wanted)
  local t = redis.call('TYPE', key)['ok']
  if t ~= 'none' and t ~= wanted then
    foreign(key, 'is a ' .. t .. ', not the ' .. wanted .. ' tumbler keeps there')
  end
end
-- The string at `key`; false when missing or not a string (then it is not ours).
local function get_string(key)
  local v = redis.pcall('GET', key)
  if type(v) == 'table' then return false end
  return v
end
-- The score of `member` in the sorted set `key`; false when missing or not a sorted set.
local function zscore(key, member)
  local v = redis.pcall('ZSCORE', key, member)
  if type(v) == 'table' then return false end
  return v
end
-- The decimal counter at `key` (missing: 0). Anything else is foreign: a counter tumbler did
-- not write, or one so large that Lua's numbers (doubles) could no longer count it exactly.
local function counter(key)
  local v = redis.pcall('GET', key)
  if type(v) == 'table' then foreign(key, 'is not a string counter') end
  if not v then return 0 end
  if #v > 16 or not string.match(v, '^%d+$') or tonumber(v) >= 9007199254740991 then
    foreign(key, 'holds ' .. string.format('%q', string.sub(v, 1, 40)) .. ', not a counter tumbler wrote')
  end
  return tonumber(v)
end
-- The mutex or writer value at `lock` if tumbler wrote it: `ID:MODE:TOKEN`, with a trailing `~`
-- while waiters or a revocation need the release's slow path (see release_lock). Returns the
-- value without the `~`, and whether it was there; false for anything else.
local function our_value(lock)
  local v = get_string(lock)
  if not v or not string.match(v, '^%x+:[xwl]:%d+~?$') then return false, false end
  if string.sub(v, -1) == '~' then return string.sub(v, 1, -2), true end
  return v, false
end
-- Adds the `~` to a held mutex or writer value, so that its release looks at the queue and
-- the revocations (the release fast path only deletes an unmarked value).
local function flag_holder(lock)
  local v, flagged = our_value(lock)
  if v and not flagged then redis.call('SET', lock, v .. '~', 'KEEPTTL') end
end
-- The kind of primitive a mode letter belongs to (error messages name both kinds).
local function kind_of(mode)
  if mode == 'x' then return 'mutex' end
  if mode == 'l' then return 'election' end
  if mode == 'p' or string.sub(mode, 1, 1) == 'p' then return 'semaphore' end
  return 'read-write lock'
end
