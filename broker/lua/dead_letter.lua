-- Moves a delivery to the queue's dead-letter stream, copying the original
-- entry's bytes server-side (so even an undecodable entry is kept exactly),
-- then acknowledges and deletes it, atomically.
--
-- KEYS[1]  the stream the delivery came from
-- KEYS[2]  the queue's dead-letter stream
-- ARGV[1]  consumer group
-- ARGV[2]  entry id
-- ARGV[3]  reason (a short code)
-- ARGV[4]  error text
-- ARGV[5]  attempts made
-- ARGV[6]  now, in ms since the Unix epoch
--
-- Returns the dead-letter entry id, or false if the entry was no longer
-- pending for the group.

local entry = redis.call('XRANGE', KEYS[1], ARGV[2], ARGV[2])
if redis.call('XACK', KEYS[1], ARGV[1], ARGV[2]) == 0 then
  return false
end
-- The envelope field, or else every field of the entry, MessagePack-encoded
-- (as an array of alternating names and values), so nothing is lost.
local envelope = ''
if entry[1] then
  local fields = entry[1][2]
  for i = 1, #fields, 2 do
    if fields[i] == 'e' then
      envelope = fields[i + 1]
    end
  end
  if envelope == '' and #fields > 0 then
    envelope = cmsgpack.pack(fields)
  end
end
local id = redis.call('XADD', KEYS[2], '*',
  'e', envelope, 'reason', ARGV[3], 'error', ARGV[4],
  'attempts', ARGV[5], 'at', ARGV[6], 'stream', KEYS[1])
redis.call('XDEL', KEYS[1], ARGV[2])
return id
