
-- Removes a key's latest value (the history keeps its publications).
-- ARGV: 1 field. Answers 1 when the key had a live value, else 0.
local field = ARGV[1]
local had = is_live(field)
redis.call('HDEL', latest, field)
redis.call('ZREM', order, field)
redis.call('ZREM', expiry, field)
if had then
  return 1
end
return 0
