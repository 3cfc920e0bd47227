-- A gauge under the name of one of the core's counters: loading must fail here.
local hk = require "hancock"

hk.metrics.gauge("hancock_requests_total", "Not the core's counter.")
