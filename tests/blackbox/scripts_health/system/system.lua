-- Fixture for test_health.py: memory and disk checks, their thresholds tuned from the test's
-- environment (absurd values force degraded or error).
local hk = require "hancock"

local function mb(name)
  local value = hk.env(name)
  return value and tonumber(value)
end

-- Tuned before the checks exist: thresholds apply whatever the order.
hk.health.threshold("memory", { warn_below_mb = mb("HK_TEST_MEMORY_WARN_MB"),
                                error_below_mb = mb("HK_TEST_MEMORY_ERROR_MB") })

hk.health.check("memory", { kind = "memory", interval_ms = 200 })
hk.health.check("disk", { kind = "disk", path = hk.env("HK_TEST_DISK_PATH", "/"), interval_ms = 200 })
hk.health.check("missing_disk", { kind = "disk", path = "/nonexistent/hancock-test", interval_ms = 60000 })

hk.health.threshold("disk", { warn_below_mb = mb("HK_TEST_DISK_WARN_MB"),
                              error_below_mb = mb("HK_TEST_DISK_ERROR_MB") })
