-- Reruns a finished workflow's unsuccessful nodes: each is reset to
-- waiting with a new task id (so revocations and deduplication marks of
-- its last run do not touch the new one); succeeded nodes keep their
-- outputs. Nodes whose parents all succeeded go to the outbox, and every
-- reset node loses its route (its stored envelope has the old task id).
--
-- KEYS  the workflow's keys (see wf_submit.lua)
-- ARGV[1]  now, in ms
-- ARGV[2..]  fresh task ids, at least one per node
--
-- Returns {'unknown'}, {'running'}, or {'retried', nodes reset}.

local META, ORDER, STATE, IDS, PARENTS, PENDING, OUT, ERR, ATT, OUTBOX, ROUTE =
  KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[6], KEYS[8], KEYS[9], KEYS[10], KEYS[11], KEYS[12],
  KEYS[13]
local state = redis.call('HGET', META, 'state')
if not state then
  return {'unknown'}
end
if state == 'running' then
  return {'running'}
end
local names = redis.call('LRANGE', ORDER, 0, -1)
local reset = {}
local next_id = 2
for _, name in ipairs(names) do
  if redis.call('HGET', STATE, name) ~= 'succeeded' then
    redis.call('HSET', STATE, name, 'waiting')
    redis.call('HSET', IDS, name, ARGV[next_id])
    next_id = next_id + 1
    redis.call('HDEL', OUT, name)
    redis.call('HDEL', ERR, name)
    redis.call('HDEL', ATT, name)
    -- A stored envelope carries the old task id: the outbox's dispatch
    -- enqueues the node under its new one.
    redis.call('HDEL', ROUTE, name)
    reset[#reset + 1] = name
  end
end
for _, name in ipairs(reset) do
  local pending = 0
  local parents = redis.call('HGET', PARENTS, name)
  if parents then
    for edge in string.gmatch(parents, '[^,]+') do
      local parent = string.match(edge, '^(%S+)')
      if redis.call('HGET', STATE, parent) ~= 'succeeded' then
        pending = pending + 1
      end
    end
  end
  redis.call('HSET', PENDING, name, pending)
end
for _, name in ipairs(reset) do
  if tonumber(redis.call('HGET', PENDING, name)) == 0 then
    redis.call('HSET', STATE, name, 'queued')
    redis.call('ZADD', OUTBOX, ARGV[1], name)
  end
end
redis.call('HINCRBY', META, 'settled', -#reset)
redis.call('HSET', META, 'state', 'running')
redis.call('HDEL', META, 'finished', 'failed_node', 'failed_reason')
for i = 1, #KEYS do
  redis.call('PERSIST', KEYS[i])
end
return {'retried', #reset}
