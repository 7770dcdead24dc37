-- Ends a running workflow early: cancelled by a user, or failed because
-- its deadline passed. Its unsettled nodes are cancelled (expired for a
-- deadline) and its outbox emptied; the task ids of its queued nodes are
-- returned, for the caller to revoke.
--
-- KEYS  the workflow's keys (see wf_submit.lua)
-- ARGV[1]  now, in ms
-- ARGV[2]  how long a finished workflow's keys live, in ms
-- ARGV[3]  'cancel', or 'deadline' (does nothing unless the deadline passed)
--
-- Returns {'unknown'}, {'finished'} (not running, or deadline not passed),
-- or {'ended', task id of a queued node, ...}.

local META, ORDER, STATE, IDS, ERR, OUTBOX = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[10], KEYS[12]
local meta = redis.call('HMGET', META, 'state', 'deadline', 'failed_node')
if not meta[1] then
  return {'unknown'}
end
if meta[1] ~= 'running' then
  return {'finished'}
end
local deadline_mode = ARGV[3] == 'deadline'
if deadline_mode then
  local deadline = tonumber(meta[2]) or 0
  if deadline == 0 or deadline > tonumber(ARGV[1]) then
    return {'finished'}
  end
end

local new_state = deadline_mode and 'expired' or 'cancelled'
local why = deadline_mode and 'the workflow deadline passed' or 'the workflow was cancelled'
local reply = {'ended'}
local first_open = nil
local settled = 0
for _, name in ipairs(redis.call('LRANGE', ORDER, 0, -1)) do
  local state = redis.call('HGET', STATE, name)
  if state == 'waiting' or state == 'queued' then
    if state == 'queued' then
      reply[#reply + 1] = redis.call('HGET', IDS, name)
    end
    first_open = first_open or name
    redis.call('HSET', STATE, name, new_state)
    redis.call('HSET', ERR, name, why)
    settled = settled + 1
  end
end
-- Emptied rather than deleted: producers cancel workflows, and their ACL
-- (ops/redis/users.acl) has no DEL, which would reach queues' streams.
redis.call('ZREMRANGEBYSCORE', OUTBOX, '-inf', '+inf')
redis.call('HINCRBY', META, 'settled', settled)
if settled > 0 then
  redis.call('HSET', META, 'no_failures', 0)
end
if deadline_mode then
  redis.call('HSET', META, 'state', 'failed', 'finished', ARGV[1])
  if not meta[3] then
    redis.call('HSET', META, 'failed_node', first_open or '', 'failed_reason', why)
  end
else
  redis.call('HSET', META, 'state', 'cancelled', 'finished', ARGV[1])
end
for i = 1, #KEYS do
  redis.call('PEXPIRE', KEYS[i], ARGV[2])
end
return reply
