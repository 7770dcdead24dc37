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
  -- Argument lists built by index, not by appending through a helper: this
  -- loop runs once per node.
  local order, ids, envs, parents, children, pending, states, outbox, routes, streamed =
    {}, {}, {}, {}, {}, {}, {}, {}, {}, {}
  local o, p, c, w, s, x, r, t = 0, 0, 0, 0, 0, 0, 0, 0
  for i = first, last do
    local at = 5 + i * 7
    local name = ARGV[at]
    o = o + 1
    order[o] = name
    ids[2 * o - 1], ids[2 * o] = name, ARGV[at + 1]
    envs[2 * o - 1], envs[2 * o] = name, ARGV[at + 2]
    if ARGV[at + 3] ~= '' then
      parents[p + 1], parents[p + 2] = name, ARGV[at + 3]
      p = p + 2
    end
    if ARGV[at + 4] ~= '' then
      children[c + 1], children[c + 2] = name, ARGV[at + 4]
      c = c + 2
    end
    local count, route = ARGV[at + 5], ARGV[at + 6]
    if count == '0' then
      states[s + 1], states[s + 2] = name, 'queued'
      s = s + 2
      if route ~= '' then
        t = t + 1
        streamed[t] = at
      else
        outbox[x + 1], outbox[x + 2] = now, name
        x = x + 2
      end
    else
      -- Only a node with parents has a counter to count down.
      pending[w + 1], pending[w + 2] = name, count
      w = w + 2
      states[s + 1], states[s + 2] = name, 'waiting'
      s = s + 2
      if route ~= '' then
        routes[r + 1], routes[r + 2] = name, route
        r = r + 2
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
