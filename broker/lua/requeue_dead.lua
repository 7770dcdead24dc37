-- Moves one dead letter back to a stream of its queue, atomically: the
-- dead-letter entry is deleted and the envelope appended, or, if another
-- operator requeued or purged it first, nothing happens.
--
-- KEYS[1]  the queue's dead-letter stream
-- KEYS[2]  the stream to requeue into
-- ARGV[1]  the dead-letter entry id
-- ARGV[2]  the envelope to enqueue (reset for a fresh run)
--
-- Returns 1 if requeued, 0 if the dead letter was gone.

if redis.call('XDEL', KEYS[1], ARGV[1]) == 0 then
  return 0
end
redis.call('XADD', KEYS[2], '*', 'e', ARGV[2])
return 1
