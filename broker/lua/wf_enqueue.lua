-- Enqueues one workflow node's task at most once ever: the dispatch step
-- of settling, run on the target queue's slot. The mark is set with NX,
-- and the task added only when the mark was new, so dispatching the same
-- outbox entry twice (after a crash, by the sweeper and a settler at
-- once) enqueues it once.
--
-- KEYS[1]  the mark: spool:{queue}:wfdone:<task id>
-- KEYS[2]  the priority stream
-- KEYS[3]  the queue's delayed set
-- ARGV[1]  the mark's time to live, in ms
-- ARGV[2]  0 to XADD the envelope now, else the due time in ms to ZADD it
-- ARGV[3]  the encoded envelope (for XADD) or delayed-set member (for ZADD)
--
-- Returns 1 when enqueued now, 0 when it had been already.

if not redis.call('SET', KEYS[1], '1', 'NX', 'PX', ARGV[1]) then
  return 0
end
if ARGV[2] == '0' then
  redis.call('XADD', KEYS[2], '*', 'e', ARGV[3])
else
  redis.call('ZADD', KEYS[3], ARGV[2], ARGV[3])
end
return 1
