-- Counts a queue's tasks by state in one round trip; read-only, and quiet
-- about streams or groups that do not exist yet.
--
-- KEYS[1..3]  the queue's streams: high, normal, low
-- KEYS[4]     the queue's delayed set
-- KEYS[5]     the queue's dead-letter stream
-- ARGV[1]     consumer group
--
-- Returns { ready_high, ready_normal, ready_low, pending, delayed, dead }.

local out = {}
local pending_total = 0
for level = 1, 3 do
  local length = redis.call('XLEN', KEYS[level])
  local pending = 0
  local summary = redis.pcall('XPENDING', KEYS[level], ARGV[1])
  if type(summary) == 'table' and not summary.err then
    pending = tonumber(summary[1]) or 0
  end
  out[level] = length - pending
  pending_total = pending_total + pending
end
out[4] = pending_total
out[5] = redis.call('ZCARD', KEYS[4])
out[6] = redis.call('XLEN', KEYS[5])
return out
