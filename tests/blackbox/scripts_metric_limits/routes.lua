-- Fixture routes for tests/blackbox/test_metric_limits.py: metric families named from request
-- input, the pattern the registry's family cap and help limit exist for.
local hk = require "hancock"

-- POST /families {"name": ..., "help": ...}: registers a gauge the client names. A refusal (the
-- family cap, help over the limit) is caught and answered 422 with the registry's message.
hk.route("POST", "/families", function(req)
  local body = req:json()
  local ok, err = pcall(hk.metrics.gauge, body.name, body.help or "Named from request input.")
  if not ok then
    return hk.error(422, err)
  end
  return { registered = body.name }
end)

hk.route("GET", "/ping", function()
  return { pong = true }
end)
