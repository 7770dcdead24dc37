-- Settles a delivery by scheduling its next attempt: the new envelope goes to
-- the delayed set and the old entry is acknowledged and deleted, atomically,
-- so the task is never both pending and scheduled, nor neither.
--
-- KEYS[1]  the stream the delivery came from
-- KEYS[2]  the queue's delayed set
-- ARGV[1]  consumer group
-- ARGV[2]  entry id
-- ARGV[3]  due time in ms
-- ARGV[4]  delayed-set member (priority digit and encoded envelope)
--
-- Returns 1 if the entry was still pending for the group, 0 if another
-- worker had already settled it (nothing is scheduled then).

if redis.call('XACK', KEYS[1], ARGV[1], ARGV[2]) == 0 then
  return 0
end
redis.call('XDEL', KEYS[1], ARGV[2])
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[4])
return 1
