-- The same counter registered twice with different labels: loading must fail here.
local hk = require "hancock"

hk.metrics.counter("hk_test_conflict_total", "First registration.", { "mode" })
hk.metrics.counter("hk_test_conflict_total", "Same name, other labels.", { "mode", "user" })
