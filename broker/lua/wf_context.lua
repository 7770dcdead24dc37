-- What a worker reads before running nodes of one workflow: each node's
-- state, its current task id, and each parent's state, output and error.
-- Read in bulk (HMGET per hash for all the nodes, then for all their
-- parents), so a batch of nodes, or a node with 10,000 parents, costs a
-- few calls per few thousand names, not several per name.
--
-- KEYS  the workflow's keys (see wf_submit.lua)
-- ARGV  the nodes
--
-- Returns one reply per node, in order: false for an unknown workflow or
-- node, else {state, task id, output or false, error or false, parents,
-- parent states, parent outputs, parent errors}, where parents is the
-- node's stored edge list ("name policy,...", '' for none), parent states
-- their states in that order joined by ',', and parent outputs and errors
-- flat {position, value, ...} lists (positions from 1) holding only the
-- parents that have one. A join of 10,000 parents thus replies with a few
-- strings and its parents' outputs, not 40,000 values.
--
-- While no node of the workflow has settled other than succeeded (meta
-- `no_failures`, see wf_submit.lua), every parent of a node that runs
-- succeeded: parent states is then '*' instead of a list, and the
-- parents' states are not read; while no node has stored an output
-- (`no_outputs`) either, nothing of the parents is read at all.

-- Lua's unpack takes a few thousand values at most.
local CHUNK = 1000

-- HMGET of `names` in chunks: the values, in order.
local function bulk(key, names)
  local values = {}
  for from = 1, #names, CHUNK do
    local to = math.min(from + CHUNK - 1, #names)
    local got = redis.call('HMGET', key, unpack(names, from, to))
    for k = 1, to - from + 1 do
      values[from + k - 1] = got[k]
    end
  end
  return values
end

local nodes = ARGV
local states = bulk(KEYS[3], nodes)
local ids = bulk(KEYS[4], nodes)
local outs = bulk(KEYS[9], nodes)
local errs = bulk(KEYS[10], nodes)
local edges = bulk(KEYS[6], nodes)
local flags = redis.call('HMGET', KEYS[1], 'no_failures', 'no_outputs')
local all_succeeded = flags[1] == '1'
local read_parents = not (all_succeeded and flags[2] == '1')

-- Every parent named, once; each node's parents as positions in that list
-- (none, and nothing read of them, when there is nothing to read).
local parents, position, parents_of = {}, {}, {}
for i = 1, #nodes do
  if read_parents and states[i] and edges[i] then
    local mine = {}
    for parent in string.gmatch(edges[i], '([^ ,]+) [^,]+') do
      local p = position[parent]
      if not p then
        parents[#parents + 1] = parent
        p = #parents
        position[parent] = p
      end
      mine[#mine + 1] = p
    end
    parents_of[i] = mine
  end
end
local parent_states = all_succeeded and {} or bulk(KEYS[3], parents)
-- Only a succeeded parent has an output, and only another one an error:
-- a join of 10,000 succeeded parents reads 10,000 outputs, not 20,000
-- fields.
local succeeded, others = {}, {}
for p, parent in ipairs(parents) do
  if all_succeeded or parent_states[p] == 'succeeded' then
    succeeded[#succeeded + 1] = parent
  else
    others[#others + 1] = parent
  end
end
local parent_outs, parent_errs = {}, {}
for k, value in ipairs(bulk(KEYS[9], succeeded)) do
  parent_outs[position[succeeded[k]]] = value
end
for k, value in ipairs(bulk(KEYS[10], others)) do
  parent_errs[position[others[k]]] = value
end

local replies = {}
for i = 1, #nodes do
  if not states[i] then
    replies[i] = false
  else
    local their_states, their_outs, their_errs = {}, {}, {}
    for k, p in ipairs(parents_of[i] or {}) do
      -- A parent that does not exist reads as '?', which the caller
      -- refuses as it refuses any unknown state.
      if not all_succeeded then
        their_states[k] = parent_states[p] or '?'
      end
      if parent_outs[p] then
        their_outs[#their_outs + 1] = k
        their_outs[#their_outs + 1] = parent_outs[p]
      end
      if parent_errs[p] then
        their_errs[#their_errs + 1] = k
        their_errs[#their_errs + 1] = parent_errs[p]
      end
    end
    local their_states_reply = table.concat(their_states, ',')
    if all_succeeded and edges[i] then
      their_states_reply = '*'
    end
    replies[i] = {states[i], ids[i], outs[i], errs[i], edges[i] or '',
      their_states_reply, their_outs, their_errs}
  end
end
return replies
