-- Reads a queue's counts and signals in one round trip; read-only, and
-- quiet about streams or groups that do not exist yet.
--
-- KEYS[1..3]  the queue's streams: high, normal, low
-- KEYS[4]     the queue's delayed set (score: due time in ms)
-- KEYS[5]     the queue's dead-letter stream
-- KEYS[6]     the queue's paused flag
-- KEYS[7]     the queue's consumers, scored by their last fetch (ms)
-- ARGV[1]     consumer group
-- ARGV[2]     now, in ms since the Unix epoch (the clock delayed tasks are
--             scored by: the producers' and workers')
-- ARGV[3]     a consumer that has not fetched for this long (ms) counts only
--             while it holds pending entries
--
-- Returns { ready_high, ready_normal, ready_low, pending, delayed, dead,
-- delayed_due, oldest_age_ms (-1: nothing runnable), consumers,
-- enqueued_total, completed_total, paused (0 or 1) }.
--
-- Ready entries are those after the group's last-delivered id: acknowledged
-- entries are deleted, so everything up to it is pending. Their age comes
-- from their ids, which Redis stamps with its own clock, so it is measured
-- against Redis' TIME. The counters come from XINFO STREAM's entries-added
-- (Redis 7.0): every entry ever added, and since entries are only ever
-- removed by XDEL when settled, added minus XLEN is how many left.
-- Consumers are those that fetched lately (fetch.lua keeps KEYS[7]) and
-- those holding pending entries (a busy worker does not fetch); never
-- XINFO CONSUMERS, whose list keeps every consumer that ever was.

local group = ARGV[1]
local now = tonumber(ARGV[2])
local window = tonumber(ARGV[3])
local time = redis.call('TIME')
local server_now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)

local function field(flat, name)
  for i = 1, #flat, 2 do
    if flat[i] == name then
      return flat[i + 1]
    end
  end
  return nil
end

local function id_ms(id)
  return tonumber(string.match(id, '^(%d+)'))
end

local active = {}
local consumers = 0
local function count_consumer(name)
  if not active[name] then
    active[name] = true
    consumers = consumers + 1
  end
end
for _, name in ipairs(redis.call('ZRANGE', KEYS[7], now - window, '+inf', 'BYSCORE')) do
  count_consumer(name)
end

local out = {}
local pending_total = 0
local added_total, length_total = 0, 0
local counted = true
local oldest_age = -1
for level = 1, 3 do
  local stream = KEYS[level]
  local length = redis.call('XLEN', stream)
  local pending = 0
  local after = nil
  if length > 0 or redis.call('EXISTS', stream) == 1 then
    local info = redis.pcall('XINFO', 'STREAM', stream)
    local added = nil
    if type(info) == 'table' and not info.err then
      added = tonumber(field(info, 'entries-added'))
    end
    if added == nil then
      counted = false
    else
      added_total = added_total + added
      length_total = length_total + length
    end
    local groups = redis.pcall('XINFO', 'GROUPS', stream)
    if type(groups) == 'table' and not groups.err then
      for _, g in ipairs(groups) do
        if field(g, 'name') == group then
          pending = tonumber(field(g, 'pending')) or 0
          after = field(g, 'last-delivered-id')
        end
      end
    end
    if pending > 0 then
      local summary = redis.pcall('XPENDING', stream, group)
      if type(summary) == 'table' and not summary.err and type(summary[4]) == 'table' then
        for _, holder in ipairs(summary[4]) do
          count_consumer(holder[1])
        end
      end
    end
    if length > pending then
      local first
      if after ~= nil then
        first = redis.call('XRANGE', stream, '(' .. after, '+', 'COUNT', 1)
      else
        first = redis.call('XRANGE', stream, '-', '+', 'COUNT', 1)
      end
      if first[1] then
        local age = math.max(0, server_now - id_ms(first[1][1]))
        oldest_age = math.max(oldest_age, age)
      end
    end
  end
  out[level] = length - pending
  pending_total = pending_total + pending
end
out[4] = pending_total
out[5] = redis.call('ZCARD', KEYS[4])
out[6] = redis.call('XLEN', KEYS[5])
out[7] = redis.call('ZCOUNT', KEYS[4], '-inf', now)
local earliest = redis.call('ZRANGE', KEYS[4], 0, 0, 'WITHSCORES')
if earliest[2] and tonumber(earliest[2]) <= now then
  oldest_age = math.max(oldest_age, now - tonumber(earliest[2]))
end
out[8] = oldest_age
out[9] = consumers
if counted then
  out[10] = added_total
  out[11] = added_total - length_total
else
  out[10] = 0
  out[11] = 0
end
out[12] = redis.call('EXISTS', KEYS[6])
return out
