-- Fixture for the hk.on_log tests in tests/blackbox/test_logging.py.
local hk = require "hancock"

-- Adds a field to every event, removes the raw path, and drops some events.
hk.on_log(function(event)
  event.service = "hooked-service"
  event.path = nil
  if event.event == "noisy_event" or event.endpoint == "/quiet" then
    return false
  end
  if event.event == "kept_event" then
    event.session_token = "HOOK-ADDED-SECRET-6b1f"
  end
end)

-- Runs after the first hook and sees its changes.
hk.on_log(function(event)
  event.seen_by_second_hook = event.service
end)

hk.route("GET", "/v1/items/:id", function(req)
  return { id = req.params.id, request_id = req.id }
end)

hk.route("GET", "/quiet", function(req)
  return { request_id = req.id }
end)

hk.route("GET", "/noisy", function(req)
  hk.log.info("noisy_event", { n = 1 })
  hk.log.info("kept_event", { n = 2 })
  return { request_id = req.id }
end)

hk.route("GET", "/boom", function()
  error("hooks-fixture-boom")
end)
