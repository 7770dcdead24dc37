-- What a worker reads before running nodes of one workflow: each node's
-- state, its current task id, and each parent's state, output and error.
-- Read in bulk (HMGET), so a node with 10,000 parents costs three calls
-- per few thousand parents, not three per parent.
--
-- KEYS  the workflow's keys (see wf_submit.lua)
-- ARGV  the nodes
--
-- Returns one reply per node, in order: false for an unknown workflow or
-- node, else {state, task id, output or false, error or false, then per
-- parent: name, state, output or false, error or false}.

-- Lua's unpack takes a few thousand values at most.
local CHUNK = 1000

local function bulk(key, names, from, to)
  return redis.call('HMGET', key, unpack(names, from, to))
end

local replies = {}
for i, node in ipairs(ARGV) do
  local state = redis.call('HGET', KEYS[3], node)
  if not state then
    replies[i] = false
  else
    local out = {state, redis.call('HGET', KEYS[4], node), redis.call('HGET', KEYS[9], node),
      redis.call('HGET', KEYS[10], node)}
    local edges = redis.call('HGET', KEYS[6], node)
    if edges then
      local parents = {}
      for edge in string.gmatch(edges, '[^,]+') do
        parents[#parents + 1] = string.match(edge, '^(%S+)')
      end
      for from = 1, #parents, CHUNK do
        local to = math.min(from + CHUNK - 1, #parents)
        local states = bulk(KEYS[3], parents, from, to)
        local outputs = bulk(KEYS[9], parents, from, to)
        local errors = bulk(KEYS[10], parents, from, to)
        for k = 1, to - from + 1 do
          out[#out + 1] = parents[from + k - 1]
          out[#out + 1] = states[k]
          out[#out + 1] = outputs[k]
          out[#out + 1] = errors[k]
        end
      end
    end
    replies[i] = out
  end
end
return replies
