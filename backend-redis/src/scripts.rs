//! The Lua scripts: every change to a lock's keys happens inside one of them, atomically.
//!
//! They are sent with `EVALSHA` and loaded on `NOSCRIPT` (the redis crate's [`Script`]).
//! Times come from the server's `TIME`, so client clocks never meet server clocks. Numbers
//! that leave a script are formatted with `%d` (Lua would print large ones in exponent form).

use std::sync::LazyLock;

use redis::Script;

/// The server clock (`now` in ms, `now_us` as a string of µs) and key-lifetime helpers: in every
/// script.
macro_rules! clock {
    () => {
        r#"
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
local now_us = clock[1] .. string.format('%06d', tonumber(clock[2]))
local function num(x) return string.format('%d', x) end
local function keep(key, ms)
  local left = redis.call('PTTL', key)
  if left ~= -2 and left < ms then redis.call('PEXPIRE', key, ms) end
end
"#
    };
}

/// The waiter queue: expiry, head, wake-ups, joining.
macro_rules! queue {
    () => {
        r#"
local function purge_waiters(queue, exp)
  for _, m in ipairs(redis.call('ZRANGEBYSCORE', exp, '-inf', now)) do
    redis.call('ZREM', queue, m)
    redis.call('ZREM', exp, m)
  end
end
local function head(queue)
  return redis.call('ZRANGE', queue, 0, 0)[1]
end
local function is_reader(member)
  return string.sub(member, -2) == ':r'
end
local function announce(queue, exp, channel, free)
  if redis.call('EXISTS', queue) == 1 then
    purge_waiters(queue, exp)
    local first = head(queue)
    if first then
      redis.call('PUBLISH', channel, 'wake ' .. first)
      return
    end
  end
  if free == '1' then redis.call('PUBLISH', channel, 'free') end
end
local function enqueue(queue, exp, member, rank, wttl)
  if not rank then redis.call('ZADD', queue, now_us, member) end
  redis.call('ZADD', exp, num(now + wttl), member)
  keep(queue, wttl)
  keep(exp, wttl)
end
"#
    };
}

/// Granting: fencing tokens and the restart delay.
macro_rules! grant {
    () => {
        r#"
local function next_token(key)
  local last = tonumber(redis.call('GET', key) or '0') or 0
  local token = math.max(last + 1, tonumber(now_us))
  redis.call('SET', key, num(token), 'PX', 3600000)
  return token
end
local function restart_wait(epoch, delay)
  if delay <= 0 then return 0 end
  local began = redis.call('GET', epoch)
  if not began then
    local ok, info = pcall(redis.call, 'INFO', 'server')
    local up = 0
    if ok and type(info) == 'string' then
      up = tonumber(string.match(info, 'uptime_in_seconds:(%d+)')) or 0
    end
    -- Redis counts uptime in whole seconds of its cached clock: the start may be up to a
    -- second later than the uptime says; assume the latest.
    began = num(math.min(now, now - up * 1000 + 1000))
    redis.call('SET', epoch, began)
  end
  local left = tonumber(began) + delay - now
  if left > 0 then return left end
  return 0
end
"#
    };
}

/// Every live holder value of a name (mutex/writer, readers, semaphore leases).
macro_rules! values {
    () => {
        r#"
local function live_values(lock, readers, sem)
  redis.call('ZREMRANGEBYSCORE', readers, '-inf', now)
  redis.call('ZREMRANGEBYSCORE', sem, '-inf', now)
  local values = {}
  local v = redis.call('GET', lock)
  if v then values[#values + 1] = v end
  for _, key in ipairs({readers, sem}) do
    for _, m in ipairs(redis.call('ZRANGE', key, 0, -1)) do values[#values + 1] = m end
  end
  return values
end
"#
    };
}

/// A script made of helper groups and a body.
macro_rules! script {
    ($name:ident, [$($part:ident),*], $body:literal) => {
        pub(crate) static $name: LazyLock<Script> =
            LazyLock::new(|| Script::new(concat!($($part!(),)* $body)));
    };
}

// KEYS: lock, readers, queue, queue_exp, fence, epoch
// ARGV: mode, id, ttl, enqueue, waiter_ttl, channel, restart_delay
// -> {1, token, value} | {0, wait_ms}
script!(
    ACQUIRE_LOCK,
    [clock, queue, grant],
    r#"
local mode, id, ttl = ARGV[1], ARGV[2], tonumber(ARGV[3])
local member = id .. ':' .. mode
-- Nobody holding or waiting is the common case: then only the grant itself runs.
local others
if mode == 'r' then
  others = redis.call('EXISTS', KEYS[1], KEYS[3])
else
  others = redis.call('EXISTS', KEYS[1], KEYS[2], KEYS[3])
end
local rank = false
if others > 0 then
  purge_waiters(KEYS[3], KEYS[4])
  redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
  rank = redis.call('ZRANK', KEYS[3], member)
end
local wait = restart_wait(KEYS[6], tonumber(ARGV[7]))
local ok = wait == 0
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
  local token = next_token(KEYS[5])
  local value = id .. ':' .. mode .. ':' .. num(token)
  if mode == 'r' then
    redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
    redis.call('ZADD', KEYS[2], num(now + ttl), value)
    keep(KEYS[2], ttl)
  else
    redis.call('SET', KEYS[1], value, 'PX', ttl)
  end
  if rank then
    redis.call('ZREM', KEYS[3], member)
    redis.call('ZREM', KEYS[4], member)
  end
  if mode == 'r' then
    local first = head(KEYS[3])
    if first and is_reader(first) then redis.call('PUBLISH', ARGV[6], 'wake ' .. first) end
  end
  return {1, token, value}
end
if ARGV[4] == '1' then enqueue(KEYS[3], KEYS[4], member, rank, tonumber(ARGV[5])) end
return {0, wait}
"#
);

// KEYS: lock, readers, queue, queue_exp, revoked
// ARGV: mode, value, channel, announce_free
// -> 1 released | 0 not ours
script!(
    RELEASE_LOCK,
    [clock, queue],
    r#"
local released = 0
if ARGV[1] == 'r' then
  local score = redis.call('ZSCORE', KEYS[2], ARGV[2])
  if score and tonumber(score) > now then released = 1 end
  redis.call('ZREM', KEYS[2], ARGV[2])
  redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
elseif redis.call('GET', KEYS[1]) == ARGV[2] then
  redis.call('DEL', KEYS[1])
  released = 1
end
redis.call('SREM', KEYS[5], ARGV[2])
if released == 1 and redis.call('EXISTS', KEYS[2]) == 0 then
  announce(KEYS[3], KEYS[4], ARGV[3], ARGV[4])
end
return released
"#
);

// KEYS: lock, readers, revoked
// ARGV: mode, value, ttl
// -> {1, revoke_requested} | {0, 0}
script!(
    EXTEND_LOCK,
    [clock],
    r#"
local ttl = tonumber(ARGV[3])
if ARGV[1] == 'r' then
  local score = redis.call('ZSCORE', KEYS[2], ARGV[2])
  if not score or tonumber(score) <= now then
    redis.call('ZREM', KEYS[2], ARGV[2])
    return {0, 0}
  end
  redis.call('ZADD', KEYS[2], num(now + ttl), ARGV[2])
  keep(KEYS[2], ttl)
elseif redis.call('GET', KEYS[1]) == ARGV[2] then
  redis.call('PEXPIRE', KEYS[1], ttl)
else
  return {0, 0}
end
return {1, redis.call('SISMEMBER', KEYS[3], ARGV[2])}
"#
);

// KEYS: lock, readers, queue
// ARGV: write value, read value, ttl, channel
// -> 1 downgraded | 0 not ours
script!(
    DOWNGRADE,
    [clock, queue],
    r#"
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
local ttl = tonumber(ARGV[3])
redis.call('ZADD', KEYS[2], num(now + ttl), ARGV[2])
keep(KEYS[2], ttl)
redis.call('DEL', KEYS[1])
local first = head(KEYS[3])
if first and is_reader(first) then redis.call('PUBLISH', ARGV[4], 'wake ' .. first) end
return 1
"#
);

// KEYS: lock, readers, queue, queue_exp
// ARGV: id, channel, announce_free
// -> 1 if anything of this acquisition was removed
script!(
    CANCEL_LOCK,
    [clock, queue],
    r#"
local p = ARGV[1] .. ':'
local changed = false
for _, mode in ipairs({'x', 'w', 'r'}) do
  if redis.call('ZREM', KEYS[3], p .. mode) == 1 then changed = true end
  redis.call('ZREM', KEYS[4], p .. mode)
end
local value = redis.call('GET', KEYS[1])
if value and string.sub(value, 1, #p) == p then
  redis.call('DEL', KEYS[1])
  changed = true
end
for _, m in ipairs(redis.call('ZRANGE', KEYS[2], 0, -1)) do
  if string.sub(m, 1, #p) == p then
    redis.call('ZREM', KEYS[2], m)
    changed = true
  end
end
if changed then announce(KEYS[3], KEYS[4], ARGV[2], ARGV[3]) end
if changed then return 1 end
return 0
"#
);

// KEYS: sem, sem_limit, queue, queue_exp, fence, epoch
// ARGV: limit, count, id, ttl, enqueue, waiter_ttl, channel, restart_delay
// -> {1, token, value} | {0, wait_ms} | {-1, stored_limit}
script!(
    ACQUIRE_SEM,
    [clock, queue, grant],
    r#"
local limit, count, id, ttl = tonumber(ARGV[1]), tonumber(ARGV[2]), ARGV[3], tonumber(ARGV[4])
purge_waiters(KEYS[3], KEYS[4])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local holders = redis.call('ZRANGE', KEYS[1], 0, -1, 'WITHSCORES')
if #holders == 0 then redis.call('DEL', KEYS[2]) end
local stored = redis.call('GET', KEYS[2])
if stored and stored ~= ARGV[1] then return {-1, tonumber(stored) or 0} end
local used, soonest = 0, nil
for i = 1, #holders, 2 do
  used = used + (tonumber(string.match(holders[i], ':p(%d+):')) or 0)
  if not soonest then soonest = tonumber(holders[i + 1]) end
end
local member = id .. ':p'
local rank = redis.call('ZRANK', KEYS[3], member)
local wait = restart_wait(KEYS[6], tonumber(ARGV[8]))
local ok = wait == 0
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
  local token = next_token(KEYS[5])
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
    if first then redis.call('PUBLISH', ARGV[7], 'wake ' .. first) end
  end
  return {1, token, value}
end
if ARGV[5] == '1' then enqueue(KEYS[3], KEYS[4], member, rank, tonumber(ARGV[6])) end
return {0, wait}
"#
);

// KEYS: sem, queue, queue_exp, revoked
// ARGV: value, channel, announce_free
// -> 1 released | 0 not ours
script!(
    RELEASE_SEM,
    [clock, queue],
    r#"
local released = 0
local score = redis.call('ZSCORE', KEYS[1], ARGV[1])
if score and tonumber(score) > now then released = 1 end
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('SREM', KEYS[4], ARGV[1])
if released == 1 then announce(KEYS[2], KEYS[3], ARGV[2], ARGV[3]) end
return released
"#
);

// KEYS: sem, sem_limit, revoked
// ARGV: value, ttl
// -> {1, revoke_requested} | {0, 0}
script!(
    EXTEND_SEM,
    [clock],
    r#"
local ttl = tonumber(ARGV[2])
local score = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not score or tonumber(score) <= now then
  redis.call('ZREM', KEYS[1], ARGV[1])
  return {0, 0}
end
redis.call('ZADD', KEYS[1], num(now + ttl), ARGV[1])
keep(KEYS[1], ttl)
keep(KEYS[2], ttl)
return {1, redis.call('SISMEMBER', KEYS[3], ARGV[1])}
"#
);

// KEYS: sem, queue, queue_exp
// ARGV: id, channel, announce_free
// -> 1 if anything of this acquisition was removed
script!(
    CANCEL_SEM,
    [clock, queue],
    r#"
local p = ARGV[1] .. ':'
local changed = redis.call('ZREM', KEYS[2], p .. 'p') == 1
redis.call('ZREM', KEYS[3], p .. 'p')
for _, m in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  if string.sub(m, 1, #p) == p then
    redis.call('ZREM', KEYS[1], m)
    changed = true
  end
end
if changed then announce(KEYS[2], KEYS[3], ARGV[2], ARGV[3]) end
if changed then return 1 end
return 0
"#
);

// KEYS: lock, readers, sem, revoked
// ARGV: channel, keep_ms
// -> number of holders asked
script!(
    REVOKE,
    [clock, values],
    r#"
local values = live_values(KEYS[1], KEYS[2], KEYS[3])
if #values == 0 then return 0 end
local keep_ms = tonumber(ARGV[2])
for i = 1, 3 do
  local left = redis.call('PTTL', KEYS[i])
  if left > keep_ms then keep_ms = left end
end
for _, value in ipairs(values) do redis.call('SADD', KEYS[4], value) end
redis.call('PEXPIRE', KEYS[4], keep_ms)
redis.call('PUBLISH', ARGV[1], 'revoke ' .. table.concat(values, ' '))
return #values
"#
);

// KEYS: lock, readers, sem, revoked, queue, queue_exp, sem_queue, sem_queue_exp
// ARGV: channel, announce_free
// -> number of holds removed
script!(
    FORCE_RELEASE,
    [clock, queue, values],
    r#"
local values = live_values(KEYS[1], KEYS[2], KEYS[3])
redis.call('DEL', KEYS[1], KEYS[2], KEYS[3], KEYS[4])
if #values == 0 then return 0 end
redis.call('PUBLISH', ARGV[1], 'gone ' .. table.concat(values, ' '))
announce(KEYS[5], KEYS[6], ARGV[1], ARGV[2])
announce(KEYS[7], KEYS[8], ARGV[1], '0')
return #values
"#
);

// KEYS: lock, readers, sem, queue_exp, sem_queue_exp
// -> {lock value or '', {reader values}, {lease values}, waiters}
script!(
    STATE,
    [clock],
    r#"
local after = '(' .. num(now)
local value = redis.call('GET', KEYS[1]) or ''
local readers = redis.call('ZRANGEBYSCORE', KEYS[2], after, '+inf')
local leases = redis.call('ZRANGEBYSCORE', KEYS[3], after, '+inf')
local waiting = redis.call('ZCOUNT', KEYS[4], after, '+inf') + redis.call('ZCOUNT', KEYS[5], after, '+inf')
return {value, readers, leases, waiting}
"#
);

// Marks the server's data set as not restarted: `SET epoch 0`.
// KEYS: epoch
script!(
    DECLARE_FRESH,
    [],
    r#"
redis.call('SET', KEYS[1], '0')
return 1
"#
);
