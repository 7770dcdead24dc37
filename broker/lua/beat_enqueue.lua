-- Enqueues one tick of a periodic entry, fenced and at most once.
--
-- 1. Fencing: the queue keeps the newest token any leader used on it. An
--    older token is refused: its leader lost the lock and another has since
--    written here.
-- 2. Idempotence: the entry's last enqueued tick (its scheduled time, ms)
--    only moves forward. A tick at or before it was enqueued already, by
--    this leader or another, and is not enqueued again.
-- 3. Then the envelope is appended to its priority stream, in the same
--    script, so the tick is either recorded and queued or neither.
--
-- Every key carries the queue's hash tag: one slot, one script.
--
-- KEYS[1]  the queue's copy of the lock's token: spool:{queue}:fence:<lock>
-- KEYS[2]  the entry's last tick: spool:{queue}:beat:<entry>
-- KEYS[3]  the priority stream
-- ARGV[1]  the caller's fencing token
-- ARGV[2]  the tick's scheduled time, ms since the epoch
-- ARGV[3]  the encoded envelope
--
-- Returns {1, tick} when enqueued, {0, last tick} when a tick at or after
-- this one was enqueued before, {-1, newest token} when fenced off.

local seen = tonumber(redis.call('GET', KEYS[1]) or '0')
local token = tonumber(ARGV[1])
if token < seen then
  return {-1, seen}
end
if token > seen then
  redis.call('SET', KEYS[1], ARGV[1])
end
local last = tonumber(redis.call('GET', KEYS[2]) or '-1')
local tick = tonumber(ARGV[2])
if tick <= last then
  return {0, last}
end
redis.call('SET', KEYS[2], ARGV[2])
redis.call('XADD', KEYS[3], '*', 'e', ARGV[3])
return {1, tick}
