-- Claims up to ARGV[3] tasks for one consumer, highest priority first, after
-- promoting the delayed tasks that are due. Atomic, so the count is exact:
-- a worker never holds more unacknowledged entries than its prefetch bound.
--
-- KEYS[1..3]  the queue's streams: high, normal, low
-- KEYS[4]     the queue's delayed set (score: due time in ms; member: one
--             priority digit followed by the encoded envelope)
-- KEYS[5]     the queue's paused flag: while it exists nothing is promoted
--             or claimed
-- KEYS[6]     the queue's consumers, scored by their last fetch (ms), for
--             stats.lua; those silent for an hour are dropped
-- KEYS[7]     the queue's dead-letter stream, for delayed members whose
--             score is no time at all (see below)
-- ARGV[1]     consumer group
-- ARGV[2]     consumer name
-- ARGV[3]     how many entries to claim at most
-- ARGV[4]     now, in ms since the Unix epoch
-- ARGV[5]     how many due tasks to promote at most
--
-- Returns { high, normal, low, idle } where each of the first three is the
-- XREADGROUP entry list of that stream ({ {id, {field, value, ...}}, ... }),
-- and idle is false when something was claimed, else
-- { next_due_ms or -1, last_id_high, last_id_normal, last_id_low } so the
-- caller can block on XREAD from exactly where the streams stand now.
-- A paused queue returns { {}, {}, {}, false, 1 }.

-- A Redis full under `noeviction` must still be drained: it refuses a
-- script's first command that may grow memory (ZADD, XADD, XGROUP CREATE)
-- until the script has written something, but not XREADGROUP, XACK or
-- XDEL. So every write that only adds (promotion, group creation, the
-- consumers' bookkeeping) is best-effort, through pcall, and the claim does
-- not depend on it: under OOM due tasks wait in the delayed set and ready
-- ones are still claimed, run and acknowledged, which frees memory.

if redis.call('EXISTS', KEYS[5]) == 1 then
  redis.pcall('ZADD', KEYS[6], ARGV[4], ARGV[2])
  return { {}, {}, {}, false, 1 }
end

local group, consumer = ARGV[1], ARGV[2]
local want = tonumber(ARGV[3])
local now = tonumber(ARGV[4])

local function failed(reply)
  return type(reply) == 'table' and reply.err ~= nil
end

-- A member Spool did not write may carry a score that is no due time:
-- +inf would never fall due and -inf, a negative or a score past the year
-- 9999 (253402300799999 ms) is no time either. Such a member is moved to
-- the dead letters as malformed, bytes intact, rather than left in the
-- delayed set forever (or promoted as if due). Best-effort, as promotion.
local function bury_timeless(min, max)
  local members = redis.call('ZRANGE', KEYS[4], min, max, 'BYSCORE', 'LIMIT', 0, 100, 'WITHSCORES')
  for i = 1, #members, 2 do
    local member, score = members[i], members[i + 1]
    local level = tonumber(string.sub(member, 1, 1))
    local envelope = member
    if level ~= nil and level >= 0 and level <= 2 then
      envelope = string.sub(member, 2)
    end
    local buried = redis.pcall('XADD', KEYS[7], '*',
      'e', envelope, 'reason', 'malformed',
      'error', 'due time is not a finite time (delayed-set score ' .. score .. ')',
      'attempts', 0, 'at', ARGV[4], 'stream', KEYS[4])
    if failed(buried) then
      return -- out of memory: it waits, as due tasks do
    end
    redis.call('ZREM', KEYS[4], member)
  end
end
bury_timeless('-inf', '(0')
bury_timeless('(253402300799999', '+inf')

local due = redis.call('ZRANGE', KEYS[4], '-inf', now, 'BYSCORE', 'LIMIT', 0, tonumber(ARGV[5]))
for _, member in ipairs(due) do
  local level = tonumber(string.sub(member, 1, 1))
  local added
  if level ~= nil and level >= 0 and level <= 2 then
    added = redis.pcall('XADD', KEYS[level + 1], '*', 'e', string.sub(member, 2))
  else
    -- A member we did not write: keep it visible as a normal-priority entry,
    -- where the worker dead-letters it as malformed instead of losing it.
    added = redis.pcall('XADD', KEYS[2], '*', 'e', member)
  end
  if failed(added) then
    break -- out of memory: the rest stay delayed until there is room
  end
  redis.call('ZREM', KEYS[4], member)
end

local function read(stream, count)
  local reply = redis.pcall('XREADGROUP', 'GROUP', group, consumer, 'COUNT', count, 'STREAMS', stream, '>')
  if failed(reply) then
    if string.find(reply.err, 'NOGROUP', 1, true) then
      -- First use of this queue, or a Redis that lost its data: create the
      -- group from the start of the stream so nothing already queued is
      -- skipped. Refused when memory is full: then nothing is claimed here.
      if failed(redis.pcall('XGROUP', 'CREATE', stream, group, '0', 'MKSTREAM')) then
        return {}
      end
      reply = redis.call('XREADGROUP', 'GROUP', group, consumer, 'COUNT', count, 'STREAMS', stream, '>')
    else
      return redis.error_reply(reply.err)
    end
  end
  if not reply then
    return {}
  end
  return reply[1][2]
end

local out = { {}, {}, {} }
local claimed = 0
for level = 1, 3 do
  if want - claimed <= 0 then
    break
  end
  local entries = read(KEYS[level], want - claimed)
  out[level] = entries
  claimed = claimed + #entries
end

-- Who fetched last, for stats.lua; best-effort (see above).
redis.pcall('ZADD', KEYS[6], ARGV[4], ARGV[2])
redis.pcall('ZREMRANGEBYSCORE', KEYS[6], '-inf', now - 3600000)

if claimed > 0 then
  out[4] = false
  return out
end

local idle = { -1 }
local next_due = redis.call('ZRANGE', KEYS[4], 0, 0, 'WITHSCORES')
if next_due[2] then
  idle[1] = tonumber(next_due[2])
end
for level = 1, 3 do
  local last = redis.call('XREVRANGE', KEYS[level], '+', '-', 'COUNT', 1)
  if last[1] then
    idle[level + 1] = last[1][1]
  else
    idle[level + 1] = '0-0'
  end
end
out[4] = idle
return out
