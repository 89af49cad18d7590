-- Prepended to every script of the Redis engine (see scripts.rs). Every script takes the five
-- keys of one stream first, all with the stream's hash tag (one Redis Cluster slot):
-- KEYS[1] meta (hash: epoch, top), KEYS[2] history (stream, field `p`), KEYS[3] latest (hash:
-- field -> publication), KEYS[4] order (zset: field -> offset of its latest value), KEYS[5]
-- expiry (zset: field -> when its latest value expires, ms).
local meta, history, latest, order, expiry = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]

-- Integers as Redis arguments and answers: "%d", never Lua's "%.14g" exponent form.
local function int(x)
  return string.format('%d', x)
end

-- Redis time, ms since the Unix epoch: the one clock of every node.
local now
do
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- The stream's epoch and top. A stream without meta (new, or Redis lost its data) gets the
-- caller's fresh epoch candidate, and whatever an older epoch left is dropped so no offset of
-- it is mistaken for one of the new epoch. Meta created here expires after `ttl` ms unless a
-- publication keeps it.
local function ensure_meta(candidate, ttl)
  local m = redis.call('HMGET', meta, 'epoch', 'top')
  if m[1] then
    return m[1], tonumber(m[2])
  end
  redis.call('DEL', history, latest, order, expiry)
  redis.call('HSET', meta, 'epoch', candidate, 'top', 0)
  redis.call('PEXPIRE', meta, int(ttl))
  return candidate, 0
end

-- Drops history entries older than `ttl` ms (entry ids are Redis time).
local function trim_history(ttl)
  local min = now - ttl + 1
  if min > 0 then
    redis.call('XTRIM', history, 'MINID', int(min))
  end
end

-- Drops at most 100 latest values whose key TTL passed (the rest go with later calls; reads
-- skip expired values meanwhile).
local function purge_keys()
  local gone = redis.call('ZRANGEBYSCORE', expiry, '-inf', int(now), 'LIMIT', 0, 100)
  if #gone > 0 then
    redis.call('HDEL', latest, unpack(gone))
    redis.call('ZREM', order, unpack(gone))
    redis.call('ZREM', expiry, unpack(gone))
  end
end

-- Whether `field`'s expiry (if any) is still ahead.
local function unexpired(field)
  local due = redis.call('ZSCORE', expiry, field)
  return (not due) or tonumber(due) > now
end

-- Whether `field` has a live latest value.
local function is_live(field)
  return unexpired(field) and redis.call('HEXISTS', latest, field) == 1
end

-- Keys with a live latest value.
local function live_keys()
  return redis.call('HLEN', latest) - redis.call('ZCOUNT', expiry, '-inf', int(now))
end

-- At most `limit` live latest values, most recent first.
local function latest_values(limit)
  local out = {}
  local start = 0
  while #out < limit do
    local fields = redis.call('ZREVRANGE', order, int(start), int(start + limit - 1))
    if #fields == 0 then
      break
    end
    for _, field in ipairs(fields) do
      if unexpired(field) then
        local value = redis.call('HGET', latest, field)
        if value then
          out[#out + 1] = value
          if #out >= limit then
            break
          end
        end
      end
    end
    start = start + limit
  end
  return out
end

-- The offset of an encoded publication.
local function offset_of(publication)
  return tonumber(string.match(publication, '^(%d+),'))
end

-- The newest `count` publications of the history, newest first.
local function newest(count)
  local out = {}
  if count <= 0 then
    return out
  end
  local entries = redis.call('XREVRANGE', history, '+', '-', 'COUNT', int(count))
  for i, entry in ipairs(entries) do
    out[i] = entry[2][2]
  end
  return out
end
