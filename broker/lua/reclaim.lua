-- Claims entries of a queue whose lease lapsed (idle past the visibility
-- timeout: their worker died), highest priority first, with how many times
-- each has been delivered, this time included.
--
-- KEYS[1..3]  the queue's streams: high, normal, low
-- ARGV[1]     consumer group
-- ARGV[2]     consumer name
-- ARGV[3]     minimum idle time, in ms
-- ARGV[4]     how many entries to claim at most
--
-- Returns { high, normal, low }, each a list of { id, {field, value, ...},
-- deliveries }.

local group, consumer, min_idle = ARGV[1], ARGV[2], ARGV[3]
local want = tonumber(ARGV[4])
local out = { {}, {}, {} }
for level = 1, 3 do
  local cursor = '0-0'
  -- XAUTOCLAIM examines at most ten entries per one it may claim; follow
  -- the cursor a few times so live workers' fresh entries at the head of a
  -- long pending list do not hide stale ones behind them.
  for _ = 1, 8 do
    if want <= 0 then
      break
    end
    local reply = redis.pcall('XAUTOCLAIM', KEYS[level], group, consumer, min_idle, cursor, 'COUNT', want)
    if type(reply) ~= 'table' or reply.err then
      break -- no stream or no group yet: nothing to reclaim
    end
    for _, entry in ipairs(reply[2]) do
      local id = entry[1]
      local info = redis.call('XPENDING', KEYS[level], group, id, id, 1)
      local deliveries = 1
      if info[1] then
        deliveries = info[1][4]
      end
      local claimed = out[level]
      claimed[#claimed + 1] = { id, entry[2], deliveries }
      want = want - 1
    end
    cursor = reply[1]
    if cursor == '0-0' then
      break
    end
  end
end
return out
