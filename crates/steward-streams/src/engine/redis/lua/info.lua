
-- What the stream holds.
-- ARGV: 1 epoch candidate, 2 meta ttl ms, 3 history_ttl ms.
-- Answers {epoch, top, history entries, live keys}.
local epoch, top = ensure_meta(ARGV[1], tonumber(ARGV[2]))
trim_history(tonumber(ARGV[3]))
purge_keys()
return {epoch, int(top), redis.call('XLEN', history), live_keys()}
