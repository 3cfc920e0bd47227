-- The /metrics part of tests/bench/compare: HK_COMPARE_SERIES (default 0) counter series created
-- at load, bench_series_total{id="1".."N"}, each incremented once, as every peer does at its start.
local hk = require "hancock"

local setting = hk.env("HK_COMPARE_SERIES", "0")
local total = math.tointeger(tonumber(setting))
if total == nil or total < 0 then
  error(string.format("HK_COMPARE_SERIES must be a non-negative integer, got %q", setting))
end

if total > 0 then
  local counter = hk.metrics.counter("bench_series_total", "Benchmark fixture: one series per id.",
    { "id" }, { max_series = total })
  for id = 1, total do
    counter:inc({ id = tostring(id) })
  end
end
