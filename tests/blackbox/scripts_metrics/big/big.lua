-- 250,000 series at load (five counters of 50,000), for the large-scrape test, and one cheap
-- route to time while a scrape is in progress.
local hk = require "hancock"

local COUNTERS = 5
local PER_COUNTER = 50000

for c = 1, COUNTERS do
  local name = ("hk_test_big_%d_total"):format(c)
  local counter = hk.metrics.counter(name, "One of five wide counters.", { "id" }, { max_series = PER_COUNTER })
  local labels = {}
  for i = 1, PER_COUNTER do
    labels.id = tostring(i)
    counter:inc(labels)
  end
end

hk.route("GET", "/v1/ping", function()
  return { pong = true }
end)
