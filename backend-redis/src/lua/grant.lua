-- Granting: fencing tokens and the restart delay.
--
-- The counter at `fence` holds the last token handed out for the name (always even), plus 1
-- while the name is "crowded": waiters, readers or semaphore leases may exist. Slow grants
-- anchor it to 2 × the server time in µs (so tokens keep increasing after the counter is
-- lost); a fast grant (acquire_lock) adds 2 without reading the clock, and only to an even,
-- anchored counter, so it never jumps a queue nor meets readers or semaphore leases.
local FENCE_LIFE = 3600000
local ANCHORED = 2 ^ 50
local function fence_value(token, crowded)
  if crowded then return num(token + 1) end
  return num(token)
end
local function next_token(key, crowded)
  local last = counter(key)
  local token = math.max(last - last % 2 + 2, 2 * now_us)
  redis.call('SET', key, fence_value(token, crowded), 'PX', FENCE_LIFE)
  return token
end
-- Marks the name crowded (a waiter, reader or lease is about to exist): the fast path stays
-- off until a slow grant finds it empty again.
local function crowd(key)
  local last = counter(key)
  if last % 2 == 1 and last >= ANCHORED then return end
  local token = math.max(last - last % 2, 2 * now_us)
  redis.call('SET', key, fence_value(token, true), 'PX', FENCE_LIFE)
end
-- How long no lock may be granted yet because the server's data set began recently (after a
-- restart that may have lost holds); 0 when it may.
local function restart_wait(epoch, delay)
  if delay <= 0 then return 0 end
  local began = redis.pcall('GET', epoch)
  if type(began) == 'table' then foreign(epoch, 'is not a string') end
  if began and not string.match(began, '^%d+$') then
    foreign(epoch, 'holds ' .. string.format('%q', string.sub(began, 1, 40)) .. ', not the time tumbler wrote')
  end
  if not began then
    local ok, info = pcall(redis.call, 'INFO', 'server')
    local up = 0
    if ok and type(info) == 'string' then
      up = tonumber(string.match(info, 'uptime_in_seconds:(%d+)')) or 0
    end
    -- Redis counts uptime in whole seconds of its cached clock: the start may be up to a
    -- second later than the uptime says; assume the latest.
    began = num(math.min(now, now - up * 1000 + 1000))
    -- It may expire (a day): it is worked out again from the uptime, to the same time. So a
    -- cluster's per-lock epochs do not pile up.
    redis.call('SET', epoch, began, 'PX', 86400000)
  end
  local left = tonumber(began) + delay - now
  if left > 0 then return left end
  return 0
end
