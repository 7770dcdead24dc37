-- Writes a whole workflow atomically, or nothing if it exists already,
-- and readies its roots (marked queued): a root with a route is added to
-- its queue's stream here, in the same atomic step; the others go to the
-- outbox for dispatch.
--
-- The client lays the graph out as the bulk writes take it, one block of
-- arguments per key, so each block goes to Redis as it came (one command
-- per chunk of it, straight from ARGV): a 10,000-node graph costs a few
-- dozen calls and no Lua work per node but its roots' XADDs.
--
-- KEYS  the workflow's keys, all under its hash tag {wf:<id>}:
--       1 meta, 2 order, 3 state, 4 ids, 5 env, 6 parents, 7 children,
--       8 pending, 9 out, 10 err, 11 att, 12 outbox, 13 route
-- ARGV[1]  now, in ms
-- ARGV[2]  the deadline in ms, or 0
-- ARGV[3]  the node limit (dynamic children included)
-- ARGV[4]  how many nodes the graph has
-- ARGV[5] to ARGV[13]  how many values each block holds, in this order:
--       order (every name, in order), then pairs of name and value for
--       ids (task id), env (envelope), parents ("name policy,..."),
--       children (same form), pending (unsettled-parent count, nodes with
--       parents only), state ('queued' for roots, else 'waiting'), route
--       (the stream a waiting node's envelope is added to as it stands
--       when it becomes ready), and the outbox's score and name pairs
--       (roots without a route)
-- ARGV[14]  how many routed roots follow the blocks, each as two values:
--       its stream and its position in the env block (0 for the first
--       pair)
-- Routes are given only on a single server, where a script may write any
-- key (see the rustdoc of spool_broker::workflow).
--
-- Returns 1 when written, 0 when the workflow exists.

-- Values per bulk command: Lua's unpack takes a few thousand at most. Even,
-- so that a chunk of pairs never splits one.
local CHUNK = 4000

if redis.call('EXISTS', KEYS[1]) == 1 then
  return 0
end
-- `no_failures` and `no_outputs` stay '1' until a node first settles
-- other than succeeded (wf_settle.lua, wf_cancel.lua) or first stores an
-- output (wf_settle.lua); a retry does not set them again. While they
-- hold, wf_context.lua need not read the parents of a node it reads.
redis.call('HSET', KEYS[1], 'state', 'running', 'created', ARGV[1], 'deadline', ARGV[2],
  'max_nodes', ARGV[3], 'total', ARGV[4], 'settled', 0, 'no_failures', 1, 'no_outputs', 1)

local at = 15
-- Writes the next block of `len` values with `command` on `key`.
local function block(command, key, len)
  local last = at + len - 1
  for first = at, last, CHUNK do
    redis.call(command, key, unpack(ARGV, first, math.min(first + CHUNK - 1, last)))
  end
  at = last + 1
end

local env_at = at + tonumber(ARGV[5]) + tonumber(ARGV[6])
block('RPUSH', KEYS[2], tonumber(ARGV[5]))
for i, key in ipairs({KEYS[4], KEYS[5], KEYS[6], KEYS[7], KEYS[8], KEYS[3], KEYS[13]}) do
  block('HSET', key, tonumber(ARGV[5 + i]))
end
block('ZADD', KEYS[12], tonumber(ARGV[13]))
for root = at, at + 2 * tonumber(ARGV[14]) - 1, 2 do
  redis.call('XADD', ARGV[root], '*', 'e', ARGV[env_at + 2 * tonumber(ARGV[root + 1]) + 1])
end
return 1
