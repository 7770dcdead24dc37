-- Deletes every task of a queue, whatever its state, and says how many.
--
-- KEYS[1..3]  the queue's streams: high, normal, low
-- KEYS[4]     the queue's delayed set
-- KEYS[5]     the queue's dead-letter stream
--
-- Returns the number of tasks deleted. Workers holding deliveries of the
-- queue find them gone when they settle (acknowledging nothing), and the
-- consumer group is recreated by the next fetch.

local deleted = redis.call('ZCARD', KEYS[4]) + redis.call('XLEN', KEYS[5])
for level = 1, 3 do
  deleted = deleted + redis.call('XLEN', KEYS[level])
end
redis.call('DEL', KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5])
return deleted
