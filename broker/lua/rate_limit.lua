-- Takes one token from a task name's bucket, shared by every worker. The
-- bucket holds up to ARGV[1] tokens and refills at ARGV[1] per ARGV[2] ms.
--
-- KEYS[1]  the bucket: spool:rate:<task name>
-- ARGV[1]  capacity (the limit)
-- ARGV[2]  the period, in ms
-- ARGV[3]  now, in ms since the Unix epoch
--
-- Returns 0 if a token was taken, else how many ms until one is available.

local capacity = tonumber(ARGV[1])
local period = tonumber(ARGV[2])
local now = tonumber(ARGV[3])
local per_ms = capacity / period

local bucket = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens = tonumber(bucket[1]) or capacity
local at = tonumber(bucket[2]) or now
-- A clock behind the last taker's refills nothing rather than a negative.
tokens = math.min(capacity, tokens + math.max(0, now - at) * per_ms)

local wait = 0
if tokens >= 1 then
  tokens = tokens - 1
else
  wait = math.ceil((1 - tokens) / per_ms)
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'at', tostring(math.max(now, at)))
redis.call('PEXPIRE', KEYS[1], period * 2)
return wait
