-- The benchmark's route: POST /v1/chat answers {"response":"ok","mode":...,"request_id":...}.
-- Just enough work to exercise the host's request path (JSON in, Lua handler, JSON out).
local hk = require "hancock"

hk.route("POST", "/v1/chat", function(req)
  local body = req:json()
  if type(body) ~= "table" or type(body.message) ~= "string" or body.message == "" then
    return hk.error(400, "message required")
  end
  return { response = "ok", mode = body.mode or "auto", request_id = req.id }
end)
