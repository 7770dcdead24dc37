-- Raises a queue's copy of a lock's fencing token: from now on the queue
-- refuses fenced writes from older tokens (stale leaders).
--
-- The copy lives in the queue's hash slot, so the fenced enqueue
-- (beat_enqueue.lua) checks it in the same script as its XADD, even on a
-- Redis Cluster where the lock itself lives on another slot.
--
-- KEYS[1]  the queue's copy: spool:{queue}:fence:<lock name>
-- ARGV[1]  the caller's token
--
-- Returns 1 if the caller's token is the newest the queue has seen, 0 if a
-- newer one is there (the caller is a stale leader).

local seen = tonumber(redis.call('GET', KEYS[1]) or '0')
local token = tonumber(ARGV[1])
if token < seen then
  return 0
end
if token > seen then
  redis.call('SET', KEYS[1], ARGV[1])
end
return 1
