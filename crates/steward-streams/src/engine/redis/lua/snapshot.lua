
-- Snapshot: the top, the publications after a recovery point (all or nothing), the latest
-- values.
-- ARGV: 1 epoch candidate, 2 meta ttl ms, 3 history_ttl ms, 4 recovering (1/0), 5 since epoch,
-- 6 since offset, 7 max latest values (0: none asked).
-- Answers {epoch, top, recovered (1/0), publications oldest first, latest values}.
local epoch, top = ensure_meta(ARGV[1], tonumber(ARGV[2]))
trim_history(tonumber(ARGV[3]))
purge_keys()
local recovered, publications = 0, {}
if ARGV[4] == '1' and ARGV[5] == epoch then
  local after = tonumber(ARGV[6])
  if after == top then
    recovered = 1
  elseif after < top then
    -- offsets in the history are contiguous up to the top: the newest top - after entries
    -- are the ones missed, if the oldest of them is after + 1
    local got = newest(top - after)
    if #got > 0 and offset_of(got[#got]) == after + 1 then
      recovered = 1
      for i = #got, 1, -1 do
        publications[#publications + 1] = got[i]
      end
    end
  end
end
local values = {}
local max_latest = tonumber(ARGV[7])
if max_latest > 0 then
  values = latest_values(max_latest)
end
return {epoch, int(top), recovered, publications, values}
