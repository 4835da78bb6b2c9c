-- The hand-off of a free mutex, read-write lock or leadership (needs clock, queue, grant and
-- leader).
--
-- When `lock` and `readers` are both free, the head of the queue is served inside the releasing
-- script: a mutex or writer head is granted the lock (its value is set, and `grant VALUE` goes
-- to its client's inbox alone), a reader head is woken (`wake MEMBER`; readers take the lock
-- themselves and wake the next reader). The grant lives only as long as the waiter's queue
-- entry would have, so a waiter that died after its last refresh blocks the lock no longer
-- than its entry would have; the waiter renews it to a full TTL as soon as it learns of it.
-- A candidate at the head is elected with the value it queued with (`candidates`), unless the
-- leader record holds data tumbler did not write or the value is missing: then it is woken,
-- and its own attempt reports the problem. Returns true when it elected a leader.
local function hand_off(lock, readers, queue, exp, fence, inbox_prefix, events, announce_free, leader, candidates)
  if redis.call('EXISTS', lock, readers) > 0 then return false end
  if redis.call('EXISTS', queue) == 1 then
    purge_waiters(queue, exp)
    local first = head(queue)
    if first then
      local candidate = string.sub(first, -2) == ':l'
      local advertised = false
      if candidate then
        advertised = redis.pcall('HGET', candidates, first)
        if type(advertised) ~= 'string' or leader_record(leader, true) == nil then advertised = false end
      end
      if is_reader(first) or (candidate and not advertised) then
        notify(inbox_prefix, first, 'wake ' .. first)
        return false
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
      if candidate then
        redis.call('HDEL', candidates, first)
        elect(leader, value, advertised, math.max(1, left))
      end
      notify(inbox_prefix, first, 'grant ' .. value)
      return candidate
    end
  end
  if announce_free == '1' then redis.call('PUBLISH', events, 'free') end
  return false
end
