-- Every live holder value of a name (mutex/writer, readers, semaphore leases), as their
-- holders know them (a mutex value without its `~` flag).
local function live_values(lock, readers, sem)
  expect_type(lock, 'string')
  expect_type(readers, 'zset')
  expect_type(sem, 'zset')
  redis.call('ZREMRANGEBYSCORE', readers, '-inf', now)
  redis.call('ZREMRANGEBYSCORE', sem, '-inf', now)
  local values = {}
  local v = redis.call('GET', lock)
  if v then values[#values + 1] = our_value(lock) or v end
  for _, key in ipairs({readers, sem}) do
    for _, m in ipairs(redis.call('ZRANGE', key, 0, -1)) do values[#values + 1] = m end
  end
  return values
end
-- Sends `word VALUE` to the client of each holder value (its first 16 hex digits name the
-- client's inbox); values tumbler did not write have no inbox and are skipped.
local function tell_holders(values, inbox_prefix, word)
  for _, value in ipairs(values) do
    if string.match(value, '^%x+:') then notify(inbox_prefix, value, word .. ' ' .. value) end
  end
end
