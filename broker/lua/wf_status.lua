-- A workflow's state and every node's, in one snapshot.
--
-- KEYS  the workflow's keys (see wf_submit.lua)
--
-- Returns false for an unknown workflow, else
-- {state, created, finished or '', deadline, failed node or '',
--  failed reason or '', then per node in order: name, state, task id,
--  attempts or '', has output (0/1), error or false, parents or '',
--  envelope}.

if redis.call('EXISTS', KEYS[1]) == 0 then
  return false
end
local meta = redis.call('HMGET', KEYS[1], 'state', 'created', 'finished', 'deadline',
  'failed_node', 'failed_reason')
local out = {}
for i = 1, 6 do
  out[i] = meta[i] or ''
end
for _, name in ipairs(redis.call('LRANGE', KEYS[2], 0, -1)) do
  out[#out + 1] = name
  out[#out + 1] = redis.call('HGET', KEYS[3], name)
  out[#out + 1] = redis.call('HGET', KEYS[4], name)
  out[#out + 1] = redis.call('HGET', KEYS[11], name) or ''
  out[#out + 1] = redis.call('HEXISTS', KEYS[9], name)
  out[#out + 1] = redis.call('HGET', KEYS[10], name)
  out[#out + 1] = redis.call('HGET', KEYS[6], name) or ''
  out[#out + 1] = redis.call('HGET', KEYS[5], name)
end
return out
