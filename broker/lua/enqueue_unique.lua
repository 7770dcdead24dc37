-- Enqueues a task unless one with the same unique key is queued or running:
-- the lock and the enqueue happen together, so two producers racing with
-- the same key enqueue exactly one task.
--
-- KEYS[1]  the lock: spool:{queue}:unique:<key>
-- KEYS[2]  the priority stream
-- KEYS[3]  the queue's delayed set
-- ARGV[1]  the task id (the lock's value)
-- ARGV[2]  the lock's time to live, in ms
-- ARGV[3]  0 to XADD the envelope now, else the due time in ms to ZADD it
-- ARGV[4]  the encoded envelope (for XADD) or delayed-set member (for ZADD)
--
-- Returns the id of the task already holding the key, or false when this
-- one was enqueued.

local holder = redis.call('GET', KEYS[1])
if holder then
  return holder
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
if ARGV[3] == '0' then
  redis.call('XADD', KEYS[2], '*', 'e', ARGV[4])
else
  redis.call('ZADD', KEYS[3], ARGV[3], ARGV[4])
end
return false
