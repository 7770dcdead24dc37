-- Gives a delivery back unrun: the entry is appended again to its stream
-- (any consumer may take it) and the claimed copy acknowledged and deleted,
-- atomically. Used when a worker shuts down with tasks it prefetched but
-- never started.
--
-- KEYS[1]  the stream the delivery came from
-- ARGV[1]  consumer group
-- ARGV[2]  entry id
--
-- Returns 1 if the entry was requeued, 0 if it was no longer pending.

local entry = redis.call('XRANGE', KEYS[1], ARGV[2], ARGV[2])
if redis.call('XACK', KEYS[1], ARGV[1], ARGV[2]) == 0 then
  return 0
end
if entry[1] then
  redis.call('XADD', KEYS[1], '*', unpack(entry[1][2]))
end
redis.call('XDEL', KEYS[1], ARGV[2])
return 1
