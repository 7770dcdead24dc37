-- A workflow's state and every node's, in one snapshot. Read in bulk (one
-- HMGET per hash per chunk of nodes), so a 10,000-node workflow costs a
-- few dozen calls, not several per node.
--
-- KEYS  the workflow's keys (see wf_submit.lua)
--
-- Returns false for an unknown workflow, else
-- {state, created, finished or '', deadline, failed node or '',
--  failed reason or '', then per node in order: name, state, task id,
--  attempts or '' (absent: 1 for a success, else 0), has output (0/1),
--  error or false, parents or '', envelope}.

-- Names per HMGET: Lua's unpack takes a few thousand values at most.
local CHUNK = 1000

if redis.call('EXISTS', KEYS[1]) == 0 then
  return false
end
local meta = redis.call('HMGET', KEYS[1], 'state', 'created', 'finished', 'deadline',
  'failed_node', 'failed_reason')
local out = {}
for i = 1, 6 do
  out[i] = meta[i] or ''
end
local names = redis.call('LRANGE', KEYS[2], 0, -1)
local o = 6
for first = 1, #names, CHUNK do
  local last = math.min(first + CHUNK - 1, #names)
  local function read(key)
    return redis.call('HMGET', key, unpack(names, first, last))
  end
  local states, ids, atts, errs, parents, envs =
    read(KEYS[3]), read(KEYS[4]), read(KEYS[11]), read(KEYS[10]), read(KEYS[6]), read(KEYS[5])
  for k = 1, last - first + 1 do
    local name = names[first + k - 1]
    -- Only a success stores an output, and a success without one has the
    -- unit output: only other nodes need looking up (outputs are not read
    -- into the script, they may be large).
    local has_output = 1
    if states[k] ~= 'succeeded' then
      has_output = redis.call('HEXISTS', KEYS[9], name)
    end
    out[o + 1], out[o + 2], out[o + 3], out[o + 4] = name, states[k], ids[k], atts[k] or ''
    out[o + 5], out[o + 6], out[o + 7], out[o + 8] = has_output, errs[k], parents[k] or '', envs[k]
    o = o + 8
  end
end
return out
