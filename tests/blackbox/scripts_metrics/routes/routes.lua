-- Fixture routes for tests/blackbox/test_metrics.py: traffic for the core's own metrics, every
-- part of the hk.metrics API, and misuse of it (each /bad/ case must end in a 500).
local hk = require "hancock"

local items = hk.metrics.counter("hk_test_items_total", "Items served by the metrics fixture.", { "kind" })
local shared = hk.metrics.counter("hk_test_shared_total", "Registered by routes.lua first.", { "via" })
local plain = hk.metrics.counter("hk_test_plain_total", "A counter without labels.")
local pairs_total = hk.metrics.counter("hk_test_pairs_total", "A counter with two labels.", { "a", "b" })
local depth = hk.metrics.gauge("hk_test_queue_depth", "A gauge with one label.", { "queue" })
local temperature = hk.metrics.gauge("hk_test_temperature_celsius", "A gauge without labels.")
local work = hk.metrics.histogram("hk_test_work_seconds", "A histogram with its own buckets.", { "step" },
  { 0.1, 1, 10 })
local capped = hk.metrics.counter("hk_test_capped_total", "A counter kept to three users.", { "user" },
  { max_series = 3 })
local odd = hk.metrics.counter("hk_test_odd_labels_total",
  "Help with a backslash \\ a \"quote\" and a\nsecond line.", { "value" })
-- A script rate limiter feeds the core's counter by registering it exactly as the core does.
local limited = hk.metrics.counter("hancock_rate_limit_exceeded_total", "Refused by the fixture's limiter.",
  { "endpoint", "client_id" })

-- A mode with every character the exposition must escape in a label value.
local ESCAPED_MODE = 'back\\slash "quoted"\nnext line'

-- Only registered modes label hancock_requests_by_mode; anything else counts as "other".
for _, mode in ipairs { "soc", "pentest", "code", ESCAPED_MODE } do
  hk.register_mode(mode)
end

-- ---- traffic -----------------------------------------------------------------------------------

hk.route("GET", "/v1/ping", function()
  return { pong = true }
end)

hk.route("GET", "/v1/items/:id", function(req)
  items:inc({ kind = "item" })
  return { id = req.params.id }
end)

-- The mode comes from the JSON body's "mode" (the core's default for req.mode).
hk.route("POST", "/v1/chat", function(req)
  return { mode = req.mode or hk.json.null }
end)

-- The script's req.mode wins over the body's.
hk.route("POST", "/v1/mode/:mode", function(req)
  req.mode = req.params.mode
  return { mode = req.mode }
end)

-- Clearing req.mode: the request counts under no mode.
hk.route("POST", "/v1/nomode", function(req)
  req.mode = nil
  return { mode = hk.json.null }
end)

hk.route("POST", "/v1/escaped-mode", function(req)
  req.mode = ESCAPED_MODE
  return { mode = req.mode }
end)

hk.route("GET", "/v1/fail", function()
  return hk.error(503, "unavailable")
end)

-- Busy for at least 30 ms of CPU time (so at least 30 ms of wall time): lands above the 0.025
-- bucket of the request duration histogram.
hk.route("GET", "/v1/slow", function()
  local deadline = os.clock() + 0.03
  local spins = 0
  while os.clock() < deadline do
    spins = spins + 1
  end
  return { spins = spins }
end)

hk.route("*", "/v1/any", function(req)
  return { method = req.method }
end)

-- ---- the API, used correctly ---------------------------------------------------------------------

hk.route("POST", "/api/use", function()
  items:inc({ kind = "named" }, 2)
  items:inc({ "positional" }, 3)
  items:inc({ kind = "positional" }, 0.5)
  plain:inc()
  plain:inc(4)
  plain:inc(nil, 2)
  pairs_total:inc({ "x", "y" })
  pairs_total:inc({ b = "y", a = "x" })
  pairs_total:inc({ "x", b = "y" })
  depth:set({ queue = "a" }, 10)
  depth:inc({ queue = "a" }, 5)
  depth:dec({ queue = "a" }, 3)
  depth:set({ "b" }, -2.5)
  depth:dec({ "b" })
  temperature:set(21.5)
  temperature:inc()
  for _, seconds in ipairs { 0.05, 0.5, 5, 50 } do
    work:observe({ step = "parse" }, seconds)
  end
  shared:inc({ via = "routes" })
  local sum, second, third = hk.metrics.time(work, { step = "timed" }, function(a, b)
    return a + b, nil, "third"
  end, 2, 3)
  local ok, err = pcall(hk.metrics.time, work, { step = "failing" }, function()
    error("timed-failure", 0)
  end)
  return {
    sum = sum,
    second_is_nil = second == nil,
    third = third,
    ok = ok,
    err = err,
    name = items.name,
    type = items.type,
    hist_type = work.type,
    text = tostring(items),
  }
end)

hk.route("GET", "/api/cap/:user", function(req)
  capped:inc({ user = req.params.user })
  return { user = req.params.user }
end)

hk.route("GET", "/api/limited", function(req)
  limited:inc({ endpoint = req.endpoint, client_id = req:header("X-Client-ID") or req.remote_addr })
  return hk.error(429, "slow down")
end)

hk.route("POST", "/api/odd", function()
  odd:inc({ value = 'a\\b"c\nd' })
  odd:inc({ value = "caf\u{E9} \u{2713}" })
  odd:inc({ value = string.rep("x", 255) .. "\u{E9}" })
  odd:inc({ value = "bad \xff byte" })
  return { ok = true }
end)

-- ---- the API, misused: each case raises, so the request ends in a 500 -------------------------

local misuse = {
  unknown_label = function() items:inc({ kind = "x", colour = "red" }) end,
  missing_label = function() items:inc({}) end,
  label_type = function() items:inc({ kind = {} }) end,
  labels_not_table = function() items:inc("item") end,
  extra_position = function() items:inc({ "a", "b" }) end,
  negative = function() items:inc({ kind = "neg" }, -1) end,
  not_finite = function() items:inc({ kind = "inf" }, math.huge) end,
  gauge_nan = function() depth:set({ queue = "nan" }, 0 / 0) end,
  amount_type = function() items:inc({ kind = "str" }, "lots") end,
  counter_set = function() items:set({ kind = "set" }, 1) end,
  counter_dec = function() items:dec({ kind = "dec" }, 1) end,
  histogram_inc = function() work:inc({ step = "inc" }) end,
  gauge_observe = function() depth:observe({ queue = "obs" }, 1) end,
  set_without_value = function() depth:set({ queue = "none" }) end,
  observe_type = function() work:observe({ step = "obs" }, "slow") end,
  labels_on_plain = function() plain:inc({ kind = "x" }) end,
  time_bad_labels = function() hk.metrics.time(work, { nope = "x" }, function() end) end,
}

hk.route("GET", "/bad/:case", function(req)
  local case = assert(misuse[req.params.case], "no such misuse case")
  case()
  return { unexpected = true }
end)
