-- Fixture routes for the black-box tests.
local hk = require "hancock"

-- The specialist modes requests may be counted under (others count as "other").
hk.register_mode("soc")

hk.route("POST", "/v1/chat", function(req)
  local body = req:json()
  if type(body) ~= "table" or type(body.message) ~= "string" or body.message == "" then
    return hk.error(400, "message required")
  end
  req.mode = body.mode or "auto"
  return { response = "ok", mode = req.mode, request_id = req.id }
end)

hk.route("GET", "/v1/items/:id", function(req)
  return { id = req.params.id, query = req.query }
end)

hk.route("POST", "/echo", function(req)
  return 200, req.body, { ["Content-Type"] = "application/octet-stream" }
end)

hk.route("GET", "/boom", function()
  error("kaboom")
end)
