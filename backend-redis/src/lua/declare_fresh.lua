-- Marks the server's data set as not restarted: no restart delay for the first locks.
-- KEYS: epoch
redis.call('SET', KEYS[1], '0')
return 1
