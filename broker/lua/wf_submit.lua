-- Writes a whole workflow atomically, or nothing if it exists already,
-- and readies its roots (marked queued): a root with a route is added to
-- its queue's stream here, in the same atomic step; the others go to the
-- outbox for dispatch. Written in bulk (one HSET per hash per chunk of
-- nodes), so a 10,000-node graph costs a few dozen calls, not several per
-- node.
--
-- KEYS  the workflow's keys, all under its hash tag {wf:<id>}:
--       1 meta, 2 order, 3 state, 4 ids, 5 env, 6 parents, 7 children,
--       8 pending, 9 out, 10 err, 11 att, 12 outbox, 13 route
-- ARGV[1]  now, in ms
-- ARGV[2]  the deadline in ms, or 0
-- ARGV[3]  the node limit (dynamic children included)
-- ARGV[4]  how many nodes follow
-- then per node, 7 values: name, task id, envelope, parents ("name
--       policy,..."), children (same form), unsettled-parent count, and
--       its route: the stream its envelope is added to as it stands when
--       it becomes ready, or '' to dispatch it through the outbox. Routes
--       are given only on a single server, where a script may write any
--       key (see the rustdoc of spool_broker::workflow).
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
  local order, ids, envs, parents, children, pending, states, outbox, routes, streamed =
    {}, {}, {}, {}, {}, {}, {}, {}, {}, {}
  local function pair(t, name, value)
    t[#t + 1] = name
    t[#t + 1] = value
  end
  for i = first, last do
    local at = 5 + i * 7
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
    local count, route = tonumber(ARGV[at + 5]), ARGV[at + 6]
    if count == 0 then
      pair(states, name, 'queued')
      if route ~= '' then
        streamed[#streamed + 1] = at
      else
        pair(outbox, now, name)
      end
    else
      -- Only a node with parents has a counter to count down.
      pair(pending, name, count)
      pair(states, name, 'waiting')
      if route ~= '' then
        pair(routes, name, route)
      end
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
  if #pending > 0 then
    redis.call('HSET', KEYS[8], unpack(pending))
  end
  redis.call('HSET', KEYS[3], unpack(states))
  if #outbox > 0 then
    redis.call('ZADD', KEYS[12], unpack(outbox))
  end
  if #routes > 0 then
    redis.call('HSET', KEYS[13], unpack(routes))
  end
  for _, root in ipairs(streamed) do
    redis.call('XADD', ARGV[root + 6], '*', 'e', ARGV[root + 2])
  end
end
return 1
