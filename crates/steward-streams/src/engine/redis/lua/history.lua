
-- A page of history.
-- ARGV: 1 epoch candidate, 2 meta ttl ms, 3 history_ttl ms, 4 since given (1/0), 5 since
-- epoch, 6 since offset, 7 limit, 8 reverse (1/0).
-- Answers {'ok', epoch, top, publications}, {'epoch', epoch} (since names another epoch) or
-- {'offset', epoch, top} (since is past the top).
local epoch, top = ensure_meta(ARGV[1], tonumber(ARGV[2]))
trim_history(tonumber(ARGV[3]))
local after = 0
if ARGV[4] == '1' then
  if ARGV[5] ~= epoch then
    return {'epoch', epoch}
  end
  after = tonumber(ARGV[6])
  if after > top then
    return {'offset', epoch, int(top)}
  end
end
local limit, reverse = tonumber(ARGV[7]), ARGV[8] == '1'
local out = {}
if limit > 0 and after < top then
  if reverse then
    -- newest first: the newest min(limit, top - after) entries
    for _, p in ipairs(newest(math.min(limit, top - after))) do
      if offset_of(p) > after then
        out[#out + 1] = p
      end
    end
  else
    -- oldest first: the oldest `limit` of the entries after `after`
    local got = newest(top - after)
    for i = #got, 1, -1 do
      if #out >= limit then
        break
      end
      if offset_of(got[i]) > after then
        out[#out + 1] = got[i]
      end
    end
  end
end
return {'ok', epoch, int(top), out}
