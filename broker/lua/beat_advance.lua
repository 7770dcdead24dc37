-- Raises a leader lock's token counter to at least a token seen elsewhere.
--
-- Recovery for a Redis that lost the counter but kept a queue's copy of a
-- newer token (a cluster node restarted without its data, say): without it
-- every new token would be older than the copy, and refused for good.
-- Raising a counter is always safe: tokens only have to grow.
--
-- KEYS[1]  the counter: spool:{@leader}:<name>:fence
-- ARGV[1]  the token it must reach
--
-- Returns the counter's value.

local current = tonumber(redis.call('GET', KEYS[1]) or '0')
local floor = tonumber(ARGV[1])
if current < floor then
  redis.call('SET', KEYS[1], ARGV[1])
  return floor
end
return current
