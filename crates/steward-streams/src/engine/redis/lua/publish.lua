
-- Publish. KEYS[6] (optional): the idempotency key.
-- ARGV: 1 epoch candidate, 2 latest field, 3 data, 4 json (1/0), 5 history_size,
-- 6 history_ttl ms, 7 key_ttl ms (0: none), 8 idempotency window ms, 9 max_keys,
-- 10 meta ttl ms, 11 channel.
-- Answers {'ok', epoch, offset, time_ms}, {'duplicate', epoch, offset} or {'quota', max_keys}.
local idempotency = KEYS[6]
local field, data, json = ARGV[2], ARGV[3], ARGV[4]
local history_size, history_ttl = tonumber(ARGV[5]), tonumber(ARGV[6])
local key_ttl, window, max_keys = tonumber(ARGV[7]), ARGV[8], tonumber(ARGV[9])
local meta_ttl, channel = tonumber(ARGV[10]), ARGV[11]

local epoch, top = ensure_meta(ARGV[1], meta_ttl)
if idempotency then
  local earlier = redis.call('GET', idempotency)
  if earlier then
    local e, o = string.match(earlier, '^(.*),(%d+)$')
    if e == epoch and tonumber(o) <= top then
      return {'duplicate', epoch, o}
    end
  end
end
trim_history(history_ttl)
purge_keys()
if not is_live(field) and live_keys() >= max_keys then
  return {'quota', ARGV[9]}
end

top = redis.call('HINCRBY', meta, 'top', 1)
local key = ''
if field ~= '\0' then
  key = field
end
local publication = int(top) .. ',' .. int(now) .. ',' .. json .. ',' .. int(#key) .. ',' .. key .. data
if history_size > 0 then
  redis.call('XADD', history, 'MAXLEN', int(history_size), '*', 'p', publication)
  -- an abandoned history goes away history_ttl after its last publication
  redis.call('PEXPIRE', history, int(history_ttl))
else
  redis.call('DEL', history)
end
redis.call('HSET', latest, field, publication)
redis.call('ZADD', order, int(top), field)
if key_ttl > 0 then
  redis.call('ZADD', expiry, int(now + key_ttl), field)
else
  redis.call('ZREM', expiry, field)
end
if idempotency then
  redis.call('SET', idempotency, epoch .. ',' .. int(top), 'PX', window)
end
-- meta and latest values outlive the history and every key TTL; without key TTL they stay
for _, k in ipairs({meta, latest, order, expiry}) do
  if key_ttl > 0 then
    redis.call('PEXPIRE', k, int(meta_ttl))
  else
    redis.call('PERSIST', k)
  end
end
redis.call('PUBLISH', channel, epoch .. ',' .. publication)
return {'ok', epoch, int(top), int(now)}
