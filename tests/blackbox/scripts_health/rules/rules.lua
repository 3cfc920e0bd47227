-- Fixture for test_health.py: a critical check ("core") and a non-critical one ("extra") against
-- the test's fake upstream, with the interval, TTL and timeout the test asks for.
local hk = require "hancock"

local upstream = hk.env("HK_TEST_UPSTREAM", "http://127.0.0.1:9")

local function ms(name, default)
  return math.tointeger(tonumber(hk.env(name, default)))
end

local timing = {
  interval_ms = ms("HK_TEST_INTERVAL_MS", "1000"),
  ttl_ms = ms("HK_TEST_TTL_MS", hk.env("HK_TEST_INTERVAL_MS", "1000")),
  timeout_ms = ms("HK_TEST_TIMEOUT_MS", "2000"),
}

hk.health.check("core", {
  kind = "http",
  url = upstream .. "/core",
  critical = true,
  interval_ms = timing.interval_ms,
  ttl_ms = timing.ttl_ms,
  timeout_ms = timing.timeout_ms,
})

hk.health.check("extra", {
  kind = "http",
  url = upstream .. "/extra",
  critical = false,
  interval_ms = timing.interval_ms,
  ttl_ms = timing.ttl_ms,
  timeout_ms = timing.timeout_ms,
})
