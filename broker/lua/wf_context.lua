-- What a worker reads before running a node: its state, its current task
-- id, and each parent's state, output and error.
--
-- KEYS  the workflow's keys (see wf_submit.lua)
-- ARGV[1]  the node
--
-- Returns false for an unknown workflow or node, else {state, task id,
-- output or false, error or false, then per parent: name, state, output or
-- false, error or false}.

local state = redis.call('HGET', KEYS[3], ARGV[1])
if not state then
  return false
end
local out = {state, redis.call('HGET', KEYS[4], ARGV[1]), redis.call('HGET', KEYS[9], ARGV[1]),
  redis.call('HGET', KEYS[10], ARGV[1])}
local parents = redis.call('HGET', KEYS[6], ARGV[1])
if parents then
  for edge in string.gmatch(parents, '[^,]+') do
    local parent = string.match(edge, '^(%S+)')
    out[#out + 1] = parent
    out[#out + 1] = redis.call('HGET', KEYS[3], parent)
    out[#out + 1] = redis.call('HGET', KEYS[9], parent)
    out[#out + 1] = redis.call('HGET', KEYS[10], parent)
  end
end
return out
