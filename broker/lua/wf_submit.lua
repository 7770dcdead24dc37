-- Writes a whole workflow atomically, or nothing if it exists already;
-- puts its roots in the outbox (marked queued) for dispatch. Written in
-- bulk (one HSET per hash per chunk of nodes), so a 10,000-node graph
-- costs a few dozen calls, not several per node.
--
-- KEYS  the workflow's keys, all under its hash tag {wf:<id>}:
--       1 meta, 2 order, 3 state, 4 ids, 5 env, 6 parents, 7 children,
--       8 pending, 9 out, 10 err, 11 att, 12 outbox
-- ARGV[1]  now, in ms
-- ARGV[2]  the deadline in ms, or 0
-- ARGV[3]  the node limit (dynamic children included)
-- ARGV[4]  how many nodes follow
-- then per node, 6 values: name, task id, envelope, parents ("name
--       policy,..."), children (same form), unsettled-parent count
--
-- Returns 1 when written, 0 when the workflow exists.

-- Nodes per bulk write: Lua's unpack takes a few thousand values at most.
local CHUNK = 1000

if redis.call('EXISTS', KEYS[1]) == 1 then
  return 0
end
local now = ARGV[1]
local n = tonumber(ARGV[4])
redis.call('HSET', KEYS[1], 'state', 'running', 'created', now, 'deadline', ARGV[2],
  'max_nodes', ARGV[3], 'total', n, 'settled', 0)
for first = 0, n - 1, CHUNK do
  local last = math.min(first + CHUNK, n) - 1
  local order, ids, envs, parents, children, pending, states, outbox = {}, {}, {}, {}, {}, {}, {},
    {}
  local function pair(t, name, value)
    t[#t + 1] = name
    t[#t + 1] = value
  end
  for i = first, last do
    local at = 5 + i * 6
    local name = ARGV[at]
    order[#order + 1] = name
    pair(ids, name, ARGV[at + 1])
    pair(envs, name, ARGV[at + 2])
    if ARGV[at + 3] ~= '' then
      pair(parents, name, ARGV[at + 3])
    end
    if ARGV[at + 4] ~= '' then
      pair(children, name, ARGV[at + 4])
    end
    local count = tonumber(ARGV[at + 5])
    pair(pending, name, count)
    if count == 0 then
      pair(states, name, 'queued')
      pair(outbox, now, name)
    else
      pair(states, name, 'waiting')
    end
  end
  redis.call('RPUSH', KEYS[2], unpack(order))
  redis.call('HSET', KEYS[4], unpack(ids))
  redis.call('HSET', KEYS[5], unpack(envs))
  if #parents > 0 then
    redis.call('HSET', KEYS[6], unpack(parents))
  end
  if #children > 0 then
    redis.call('HSET', KEYS[7], unpack(children))
  end
  redis.call('HSET', KEYS[8], unpack(pending))
  redis.call('HSET', KEYS[3], unpack(states))
  if #outbox > 0 then
    redis.call('ZADD', KEYS[12], unpack(outbox))
  end
end
return 1
