-- Releases a unique lock if this task still holds it (it may have expired
-- and been taken by a newer task, whose lock must stay).
--
-- KEYS[1]  the lock
-- ARGV[1]  the task id
--
-- Returns 1 if released, 0 otherwise.

if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
