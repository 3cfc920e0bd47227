-- Fixture: an hk.on_log hook that always fails, followed by one that works.
local hk = require "hancock"

hk.on_log(function(event)
  if event.event ~= nil then
    error("hook exploded")
  end
end)

hk.on_log(function(event)
  event.after_failed_hook = true
end)

hk.route("GET", "/v1/items/:id", function(req)
  hk.log.info("handler_event", { id = req.params.id })
  return { id = req.params.id, request_id = req.id }
end)
