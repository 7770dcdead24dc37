-- Reads a workflow's outbox for dispatch: each entry's node, current task
-- id and envelope. Entries whose node is no longer queued (the workflow
-- was cancelled meanwhile) are dropped instead.
--
-- KEYS  the workflow's keys (see wf_submit.lua)
-- ARGV[1]  only entries added at or before this time, in ms
-- ARGV[2]  the most entries to return (at most a few thousand)
--
-- Returns a flat array: node, task id, envelope, node, ...

local names = redis.call('ZRANGEBYSCORE', KEYS[12], '-inf', ARGV[1], 'LIMIT', 0, ARGV[2])
if #names == 0 then
  return {}
end
local states = redis.call('HMGET', KEYS[3], unpack(names))
local ids = redis.call('HMGET', KEYS[4], unpack(names))
local envs = redis.call('HMGET', KEYS[5], unpack(names))
local out = {}
for i, name in ipairs(names) do
  if states[i] == 'queued' then
    out[#out + 1] = name
    out[#out + 1] = ids[i]
    out[#out + 1] = envs[i]
  else
    redis.call('ZREM', KEYS[12], name)
  end
end
return out
