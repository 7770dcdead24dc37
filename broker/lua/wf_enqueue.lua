-- Enqueues workflow nodes' tasks of one queue, each at most once ever:
-- the dispatch step of settling, run on the target queue's slot. Each
-- task's mark is set with NX, and the task added only when its mark was
-- new, so dispatching the same outbox entry twice (after a crash, by the
-- sweeper and a settler at once) enqueues it once.
--
-- KEYS[1]  the queue's delayed set
-- then per task: KEYS[2i] its mark (spool:{queue}:wfdone:<task id>),
--          KEYS[2i+1] its priority stream
-- ARGV[1]  the marks' time to live, in ms
-- then per task: ARGV[2i] 0 to XADD the envelope now, else the due time
--          in ms to ZADD it; ARGV[2i+1] the encoded envelope (for XADD)
--          or delayed-set member (for ZADD)
--
-- Returns how many tasks were enqueued now (the others had been already).

local enqueued = 0
for i = 1, (#KEYS - 1) / 2 do
  if redis.call('SET', KEYS[2 * i], '1', 'NX', 'PX', ARGV[1]) then
    if ARGV[2 * i] == '0' then
      redis.call('XADD', KEYS[2 * i + 1], '*', 'e', ARGV[2 * i + 1])
    else
      redis.call('ZADD', KEYS[1], ARGV[2 * i], ARGV[2 * i + 1])
    end
    enqueued = enqueued + 1
  end
end
return enqueued
