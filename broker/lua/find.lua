-- Looks for a task in one key of a queue, a page at a time, so that a long
-- backlog never blocks Redis for long: returns the values holding the
-- needle (a task id as the envelope encodes it), for the caller to decode
-- and check, and where to go on from.
--
-- KEYS[1]  a priority stream, the dead-letter stream, or the delayed set
-- ARGV[1]  'stream' or 'zset'
-- ARGV[2]  the needle
-- ARGV[3]  where to start: for a stream an XRANGE start ('-' first, then
--          what the last call returned), for the set an index (0 first)
-- ARGV[4]  the page size
--
-- Returns { next_start or false when the key is read to its end, value... }

local kind, needle, count = ARGV[1], ARGV[2], tonumber(ARGV[4])
local out = { false }
if kind == 'stream' then
  local entries = redis.call('XRANGE', KEYS[1], ARGV[3], '+', 'COUNT', count)
  for _, entry in ipairs(entries) do
    local fields = entry[2]
    for i = 1, #fields, 2 do
      if fields[i] == 'e' and string.find(fields[i + 1], needle, 1, true) then
        out[#out + 1] = fields[i + 1]
      end
    end
  end
  if #entries == count then
    out[1] = '(' .. entries[#entries][1]
  end
else
  local start = tonumber(ARGV[3])
  local members = redis.call('ZRANGE', KEYS[1], start, start + count - 1)
  for _, member in ipairs(members) do
    if string.find(member, needle, 1, true) then
      out[#out + 1] = member
    end
  end
  if #members == count then
    out[1] = tostring(start + count)
  end
end
return out
