-- Fixture for test_health.py: one HTTP check per way a probe can end, none critical, against
-- the test's fake upstream (HK_TEST_UPSTREAM) and a port nobody listens on (HK_TEST_REFUSED_URL).
local hk = require "hancock"

local upstream = hk.env("HK_TEST_UPSTREAM", "http://127.0.0.1:9")
local interval_ms = math.tointeger(tonumber(hk.env("HK_TEST_INTERVAL_MS", "60000")))
local timeout_ms = math.tointeger(tonumber(hk.env("HK_TEST_TIMEOUT_MS", "300")))

local function http(name, path, opts)
  opts.kind = "http"
  opts.url = opts.url or upstream .. path
  opts.interval_ms = interval_ms
  opts.timeout_ms = timeout_ms
  hk.health.check(name, opts)
end

http("ok", "/ok", {})
http("slow", "/slow", {})
http("server_error", "/fail", {})
http("refused", nil, { url = hk.env("HK_TEST_REFUSED_URL", "http://127.0.0.1:9") .. "/" })
http("malformed", "/malformed", { expect_json = { path = "models.*.name", contains = "llama3.1:8b" } })
http("model_missing", "/api/tags", { expect_status = 200,
                                     expect_json = { path = "models.*.name", contains = "llama3.1:8b" } })
http("model_present", "/api/tags", { expect_status = 200,
                                     expect_json = { path = "models.*.name", contains = "present:1b" } })
http("wrong_status", "/ok", { expect_status = { 204, 418 } })
http("field_equals", "/ok", { expect_json = { path = "status", equals = "down" } })
http("validated", "/ok", {
  validate = function(response, doc)
    return "degraded", ("validate saw %d and status=%s"):format(response.status, doc.status)
  end,
})
http("slow_warn", "/ok", { warn_above_ms = 0 })
