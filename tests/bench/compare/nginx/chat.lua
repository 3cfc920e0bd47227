-- The nginx peer's chat route (content_by_lua): POST /v1/chat validates {"message": non-empty
-- string, "mode": one of MODES (optional)}, 400 otherwise, and answers {"response", "mode",
-- "request_id"} with X-Request-ID. Counting and timing happen in the log phase (prom.lua).
-- luacheck: globals ngx
local cjson = require "cjson.safe"

local MODES = { "auto", "pentest", "soc", "code", "ciso", "sigma", "yara", "ioc" }
local KNOWN = {}
for _, mode in ipairs(MODES) do
  KNOWN[mode] = true
end
local MODE_ERROR = "field 'mode' must be one of: " .. table.concat(MODES, ", ")

local M = {}

local function answer(status, body)
  ngx.status = status
  ngx.header["Content-Type"] = "application/json"
  ngx.print(cjson.encode(body))
end

function M.handle()
  local request_id = ngx.var.request_id
  ngx.header["X-Request-ID"] = request_id
  if ngx.req.get_method() ~= "POST" then
    ngx.header["Allow"] = "POST"
    return answer(405, { error = "method not allowed", request_id = request_id })
  end
  ngx.req.read_body()
  local body = cjson.decode(ngx.req.get_body_data() or "")
  if type(body) ~= "table" or type(body.message) ~= "string" or body.message == "" then
    return answer(400, { error = "field 'message' must be a non-empty string", request_id = request_id })
  end
  local mode = body.mode
  if mode == nil then
    mode = "auto"
  elseif not KNOWN[mode] then
    return answer(400, { error = MODE_ERROR, request_id = request_id })
  else
    ngx.ctx.mode = mode
  end
  ngx.var.chat_mode = mode
  return answer(200, { response = "ok", mode = mode, request_id = request_id })
end

return M
