-- Renews a consumer's leases on one stream: resets the idle time of the
-- entries it still owns (XCLAIM ... JUSTID neither moves them nor counts a
-- delivery), so a live worker's long task is never reclaimed as abandoned.
--
-- KEYS[1]  the stream
-- ARGV[1]  consumer group
-- ARGV[2]  consumer name
-- ARGV[3..] the entry ids the consumer believes it holds, ascending
--
-- Returns the ids it no longer owns: another worker reclaimed them after this
-- one looked dead, or they were settled or purged meanwhile.

local group, consumer = ARGV[1], ARGV[2]
local first, last = ARGV[3], ARGV[#ARGV]
local owned = {}
-- Some slack over the ids asked about, in case the consumer holds others.
local reply = redis.pcall('XPENDING', KEYS[1], group, first, last, #ARGV + 1000, consumer)
if type(reply) == 'table' and not reply.err then
  for _, entry in ipairs(reply) do
    owned[entry[1]] = true
  end
end

local mine, lost = {}, {}
for i = 3, #ARGV do
  if owned[ARGV[i]] then
    mine[#mine + 1] = ARGV[i]
  else
    lost[#lost + 1] = ARGV[i]
  end
end
-- unpack is bounded by Lua's stack: claim in slices. Every argument goes
-- in one table, expanded last: Lua cuts an expansion that is followed by
-- another argument (as `unpack(ids), 'JUSTID'` was) to its first value,
-- which renewed only the first lease of each slice and let the others
-- lapse under a live worker.
for i = 1, #mine, 1000 do
  local args = { 'XCLAIM', KEYS[1], group, consumer, 0 }
  for j = i, math.min(i + 999, #mine) do
    args[#args + 1] = mine[j]
  end
  args[#args + 1] = 'JUSTID'
  redis.call(unpack(args))
end
return lost
