-- Claims entries of a queue whose lease lapsed (idle past the visibility
-- timeout: their worker died), highest priority first, with how many times
-- each has been delivered, this time included.
--
-- An entry whose delivery count would reach ARGV[5] has now been in two or
-- more crashed workers: a suspect, possibly a poison task that kills its
-- process. Suspects are claimed only by a worker that holds nothing else
-- (ARGV[6] = 1), and then alone, so a poison task can only take itself down
-- and the innocent tasks that crashed with it are not carried along again.
--
-- KEYS[1..3]  the queue's streams: high, normal, low
-- ARGV[1]     consumer group
-- ARGV[2]     consumer name
-- ARGV[3]     minimum idle time, in ms
-- ARGV[4]     how many entries to claim at most
-- ARGV[5]     the delivery count that makes an entry a suspect
-- ARGV[6]     1 if the caller holds nothing and may take a suspect
--
-- Returns { high, normal, low, suspects_left }, the first three each a list
-- of { id, {field, value, ...}, deliveries }.

local group, consumer, min_idle = ARGV[1], ARGV[2], ARGV[3]
local want = tonumber(ARGV[4])
local suspect_at = tonumber(ARGV[5])
local alone = ARGV[6] == '1'
local out = { {}, {}, {}, 0 }
local claimed, suspects = 0, 0

local function claim(level, id)
  local entry = redis.call('XCLAIM', KEYS[level], group, consumer, min_idle, id)
  if not entry[1] then
    return false -- taken by another worker meanwhile, or deleted
  end
  local info = redis.call('XPENDING', KEYS[level], group, id, id, 1)
  local deliveries = 1
  if info[1] then
    deliveries = info[1][4]
  end
  local list = out[level]
  list[#list + 1] = { id, entry[1][2], deliveries }
  claimed = claimed + 1
  return true
end

local function stale_entries(level)
  local stale = redis.pcall('XPENDING', KEYS[level], group, 'IDLE', min_idle, '-', '+', 100)
  if type(stale) == 'table' and not stale.err then
    return stale
  end
  return {} -- no stream or no group yet: nothing to reclaim
end

if alone then
  for level = 1, 3 do
    for _, entry in ipairs(stale_entries(level)) do
      if entry[4] + 1 >= suspect_at and claim(level, entry[1]) then
        return out -- a suspect goes alone
      end
    end
  end
end

for level = 1, 3 do
  for _, entry in ipairs(stale_entries(level)) do
    if entry[4] + 1 >= suspect_at then
      suspects = suspects + 1
    elseif claimed < want then
      claim(level, entry[1])
    end
  end
end
out[4] = suspects
return out
