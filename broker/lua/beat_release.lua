-- Gives a leader lock up, if the caller still holds it with the same token,
-- so a standby takes over at once instead of after the lease.
--
-- KEYS[1]  the lock
-- ARGV[1]  the holder's value, "<token>:<owner>"
--
-- Returns 1 if released, 0 if the caller did not hold it.

if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
