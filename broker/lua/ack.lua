-- Acknowledges and deletes settled entries of one stream, atomically.
--
-- A script rather than MULTI/EXEC: a Redis out of memory refuses to queue
-- any command in a transaction, but runs a script whose commands (XACK,
-- XDEL) only free memory, so a full Redis can still be drained.
--
-- KEYS[1]   the stream
-- ARGV[1]   consumer group
-- ARGV[2..] entry ids
--
-- Returns how many were acknowledged.

local acked = 0
-- unpack is bounded by Lua's stack: in slices, each expanded last.
for i = 2, #ARGV, 1000 do
  local last = math.min(i + 999, #ARGV)
  acked = acked + redis.call('XACK', KEYS[1], ARGV[1], unpack(ARGV, i, last))
  redis.call('XDEL', KEYS[1], unpack(ARGV, i, last))
end
return acked
