-- Takes a leader lock if nobody holds it, with a new fencing token.
--
-- KEYS[1]  the lock: spool:{@leader}:<name>, value "<token>:<owner>"
-- KEYS[2]  the lock's token counter: spool:{@leader}:<name>:fence (never
--          expires, so tokens only grow, across holders and restarts)
-- ARGV[1]  the caller's owner id
-- ARGV[2]  the lease, in ms
--
-- Returns {token, ms left}: token > 0 when the caller holds the lock (newly
-- taken, or already its own, whose lease is then extended), 0 when someone
-- else holds it for the ms left.

local held = redis.call('GET', KEYS[1])
if held then
  local sep = string.find(held, ':', 1, true)
  if sep and string.sub(held, sep + 1) == ARGV[1] then
    redis.call('PEXPIRE', KEYS[1], ARGV[2])
    return {tonumber(string.sub(held, 1, sep - 1)), tonumber(ARGV[2])}
  end
  return {0, redis.call('PTTL', KEYS[1])}
end
local token = redis.call('INCR', KEYS[2])
redis.call('SET', KEYS[1], token .. ':' .. ARGV[1], 'PX', ARGV[2])
return {token, tonumber(ARGV[2])}
