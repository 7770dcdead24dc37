-- Writes a whole workflow atomically, or nothing if it exists already;
-- puts its roots in the outbox (marked queued) for dispatch.
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

if redis.call('EXISTS', KEYS[1]) == 1 then
  return 0
end
local now = ARGV[1]
local n = tonumber(ARGV[4])
redis.call('HSET', KEYS[1], 'state', 'running', 'created', now, 'deadline', ARGV[2],
  'max_nodes', ARGV[3], 'total', n, 'settled', 0)
for i = 0, n - 1 do
  local at = 5 + i * 6
  local name = ARGV[at]
  redis.call('RPUSH', KEYS[2], name)
  redis.call('HSET', KEYS[4], name, ARGV[at + 1])
  redis.call('HSET', KEYS[5], name, ARGV[at + 2])
  if ARGV[at + 3] ~= '' then
    redis.call('HSET', KEYS[6], name, ARGV[at + 3])
  end
  if ARGV[at + 4] ~= '' then
    redis.call('HSET', KEYS[7], name, ARGV[at + 4])
  end
  local pending = tonumber(ARGV[at + 5])
  redis.call('HSET', KEYS[8], name, pending)
  if pending == 0 then
    redis.call('HSET', KEYS[3], name, 'queued')
    redis.call('ZADD', KEYS[12], now, name)
  else
    redis.call('HSET', KEYS[3], name, 'waiting')
  end
end
return 1
