-- The host's side of tests/bench/compare: the chat-shaped route every peer serves.
-- POST /v1/chat validates {"message": non-empty string, "mode": one of MODES (optional)}, 400
-- otherwise, and answers {"response", "mode", "request_id"}. The host itself counts the request
-- (hancock_requests_by_endpoint, hancock_requests_by_mode for the registered modes below), times it
-- (hancock_request_duration_seconds), sends X-Request-ID and serves GET /metrics.
local hk = require "hancock"

local MODES = { "auto", "pentest", "soc", "code", "ciso", "sigma", "yara", "ioc" }

local known = {}
for _, mode in ipairs(MODES) do
  hk.register_mode(mode)
  known[mode] = true
end

hk.route("POST", "/v1/chat", function(req)
  local body = req:json()
  if type(body) ~= "table" or type(body.message) ~= "string" or body.message == "" then
    return hk.error(400, "field 'message' must be a non-empty string")
  end
  local mode = body.mode
  if mode == nil then
    mode = "auto"
  elseif not known[mode] then
    return hk.error(400, "field 'mode' must be one of: " .. table.concat(MODES, ", "))
  end
  return { response = "ok", mode = mode, request_id = req.id }
end)
