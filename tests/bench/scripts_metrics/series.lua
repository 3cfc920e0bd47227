-- Fixture for tests/bench/run.sh's /metrics timing: creates BENCH_SERIES counter series at load
-- (default 100), so that GET /metrics renders that many series plus the host's own families.
-- Counters bench_series_0_total, bench_series_1_total, ... with one label, id = "1".."N", at
-- most SERIES_PER_FAMILY series each (every family gets max_series to hold exactly its share,
-- so no update is dropped). Each series is incremented once: every sample line reads 1.
local hk = require "hancock"

local SERIES_PER_FAMILY = 50000

local setting = hk.env("BENCH_SERIES", "100")
local total = math.tointeger(tonumber(setting))
if total == nil or total < 0 then
  error(string.format("BENCH_SERIES must be a non-negative integer, got %q", setting))
end

local first = 1
local family = 0
while first <= total do
  local last = math.min(first + SERIES_PER_FAMILY - 1, total)
  local counter = hk.metrics.counter(
    string.format("bench_series_%d_total", family),
    "Benchmark fixture: one series per id, each incremented once at load.",
    { "id" },
    { max_series = last - first + 1 }
  )
  for id = first, last do
    counter:inc({ id = tostring(id) })
  end
  first = last + 1
  family = family + 1
end
