-- What the sweeper must do for one workflow of the index.
--
-- KEYS  the workflow's keys (see wf_submit.lua)
-- ARGV[1]  now, in ms
-- ARGV[2]  outbox entries added at or before this time are overdue
--
-- Returns 'gone' (no graph), 'cancelled' (ended by a cancel), 'finished'
-- (ended otherwise), 'deadline' (running past its deadline), 'outbox'
-- (overdue outbox entries) or 'ok'.

local meta = redis.call('HMGET', KEYS[1], 'state', 'deadline')
if not meta[1] then
  return 'gone'
end
if meta[1] == 'cancelled' then
  return 'cancelled'
end
if meta[1] ~= 'running' then
  return 'finished'
end
local deadline = tonumber(meta[2]) or 0
if deadline > 0 and deadline <= tonumber(ARGV[1]) then
  return 'deadline'
end
if #redis.call('ZRANGEBYSCORE', KEYS[12], '-inf', ARGV[2], 'LIMIT', 0, 1) > 0 then
  return 'outbox'
end
return 'ok'
