-- The waiter queues: `queue` orders members by arrival, `exp` scores them by expiry. A
-- waiter refreshes its expiry while it waits; one that stops (killed, cut off) is pruned here.
-- A member is `ID:MODE`, and its ID begins with the 16 hex digits of the waiting client, whose
-- inbox channel is `INBOX_PREFIX .. client`: messages for one waiter go to its client alone.
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
-- Sends `message` to the client that owns `member` (a waiter member or a holder value).
local function notify(inbox_prefix, member, message)
  redis.call('PUBLISH', inbox_prefix .. string.sub(member, 1, 16), message)
end
-- Wakes the head of a queue (it acquires by itself); `free` is published on `events` when
-- nobody is queued and `announce_free` is '1' (Redlock waiters, who do not queue).
local function announce(queue, exp, inbox_prefix, events, announce_free)
  if redis.call('EXISTS', queue) == 1 then
    purge_waiters(queue, exp)
    local first = head(queue)
    if first then
      notify(inbox_prefix, first, 'wake ' .. first)
      return
    end
  end
  if announce_free == '1' then redis.call('PUBLISH', events, 'free') end
end
local function enqueue(queue, exp, member, rank, wttl)
  if not rank then redis.call('ZADD', queue, num(now_us), member) end
  redis.call('ZADD', exp, num(now + wttl), member)
  keep(queue, wttl)
  keep(exp, wttl)
end
