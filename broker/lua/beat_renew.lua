-- Extends a leader's lease if it still holds the lock with the same token:
-- compare, then PEXPIRE. A lease that lapsed, or a lock taken by another
-- (a newer token), is not renewed.
--
-- KEYS[1]  the lock
-- ARGV[1]  the holder's value, "<token>:<owner>"
-- ARGV[2]  the lease, in ms
--
-- Returns 1 if renewed, 0 if the caller no longer leads.

if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
