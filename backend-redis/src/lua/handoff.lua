-- The hand-off of a free mutex or read-write lock (needs clock, queue and grant).
--
-- When `lock` and `readers` are both free, the head of the queue is served inside the releasing
-- script: a mutex or writer head is granted the lock (its value is set, and `grant VALUE` goes
-- to its client's inbox alone), a reader head is woken (`wake MEMBER`; readers take the lock
-- themselves and wake the next reader). The grant lives only as long as the waiter's queue
-- entry would have, so a waiter that died after its last refresh blocks the lock no longer
-- than its entry would have; the waiter renews it to a full TTL as soon as it learns of it.
local function hand_off(lock, readers, queue, exp, fence, inbox_prefix, events, announce_free)
  if redis.call('EXISTS', lock, readers) > 0 then return end
  if redis.call('EXISTS', queue) == 1 then
    purge_waiters(queue, exp)
    local first = head(queue)
    if first then
      if is_reader(first) then
        notify(inbox_prefix, first, 'wake ' .. first)
        return
      end
      local left = (tonumber(redis.call('ZSCORE', exp, first)) or now) - now
      redis.call('ZREM', queue, first)
      redis.call('ZREM', exp, first)
      local waiting = redis.call('EXISTS', queue) == 1
      local token = next_token(fence, waiting)
      local value = first .. ':' .. num(token)
      local stored = value
      if waiting then stored = value .. '~' end
      redis.call('SET', lock, stored, 'PX', math.max(1, left))
      notify(inbox_prefix, first, 'grant ' .. value)
      return
    end
  end
  if announce_free == '1' then redis.call('PUBLISH', events, 'free') end
end
