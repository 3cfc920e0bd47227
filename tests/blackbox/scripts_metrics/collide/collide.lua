-- Two different names whose expositions would share a name (the counter's OpenMetrics family
-- hk_test_thing and the gauge hk_test_thing): loading must fail at the second.
local hk = require "hancock"

hk.metrics.counter("hk_test_thing_total", "A counter.")
hk.metrics.gauge("hk_test_thing", "A gauge named like the counter's family.")
