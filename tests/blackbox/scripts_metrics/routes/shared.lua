-- Registers hk_test_shared_total again, exactly as routes.lua does (only the help differs): both
-- files get the same metric, so their increments add up.
local hk = require "hancock"

local shared = hk.metrics.counter("hk_test_shared_total", "A different help text: the first one stays.",
  { "via" })

hk.route("POST", "/api/shared", function()
  shared:inc({ via = "routes" }, 10)
  return { name = shared.name }
end)
