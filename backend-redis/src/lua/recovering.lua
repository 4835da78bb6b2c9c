-- How long no lock is granted yet after a restart (0: locks are granted).
-- KEYS: epoch
-- ARGV: restart_delay
-- -> ms
tick()
return restart_wait(KEYS[1], tonumber(ARGV[1]))
