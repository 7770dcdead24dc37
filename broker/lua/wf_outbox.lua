-- Reads a workflow's outbox for dispatch: each entry's node, current task
-- id and envelope. Entries whose node is no longer queued (the workflow
-- was cancelled meanwhile) are dropped instead.
--
-- KEYS  the workflow's keys (see wf_submit.lua)
-- ARGV[1]  only entries added at or before this time, in ms
-- ARGV[2]  the most entries to return
--
-- Returns a flat array: node, task id, envelope, node, ...

local names = redis.call('ZRANGEBYSCORE', KEYS[12], '-inf', ARGV[1], 'LIMIT', 0, ARGV[2])
local out = {}
for _, name in ipairs(names) do
  if redis.call('HGET', KEYS[3], name) == 'queued' then
    out[#out + 1] = name
    out[#out + 1] = redis.call('HGET', KEYS[4], name)
    out[#out + 1] = redis.call('HGET', KEYS[5], name)
  else
    redis.call('ZREM', KEYS[12], name)
  end
end
return out
