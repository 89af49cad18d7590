
-- Latest values.
-- ARGV: 1 epoch candidate, 2 meta ttl ms, 3 field ('': every key), 4 max latest values.
-- Answers {'ok', epoch, top, values (most recent first)} or {'not_found', epoch, top}.
local epoch, top = ensure_meta(ARGV[1], tonumber(ARGV[2]))
purge_keys()
local field = ARGV[3]
if field == '' then
  return {'ok', epoch, int(top), latest_values(tonumber(ARGV[4]))}
end
if not is_live(field) then
  return {'not_found', epoch, int(top)}
end
return {'ok', epoch, int(top), {redis.call('HGET', latest, field)}}
