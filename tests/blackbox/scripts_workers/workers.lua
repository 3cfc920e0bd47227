-- Fixture for tests/blackbox/test_workers.py: routes whose answers show which copy of the
-- scripts served them, a process-wide rate limit, a slow route for the drain, a health check
-- against a fake backend.
local hk = require "hancock"

local VERSION = "v1"

hk.route("GET", "/version", function()
  return { version = VERSION }
end)

hk.route("GET", "/limited", function(req)
  local allowed = hk.ratelimit.take("limited:" .. req.remote_addr, 10, 60000)
  if not allowed then
    return hk.error(429, "slow down")
  end
  return { ok = true }
end)

hk.route("GET", "/slow", function()
  hk.sleep(800)
  return { slow = true }
end)

local upstream = hk.env("HK_TEST_UPSTREAM")
if upstream then
  hk.health.check("backend", {
    kind = "http",
    url = upstream .. "/probe",
    interval_ms = 60000,
    ttl_ms = 60000,
    critical = true,
  })
end
