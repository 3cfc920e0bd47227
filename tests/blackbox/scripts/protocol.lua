-- Extra fixture routes for the connection tests (test_connections.py), all under /protocol/.
-- They are registered only when HANCOCK_TEST_PROTOCOL_ROUTES=1, so every other suite that
-- loads this directory sees exactly the routes of routes.lua.
local hk = require "hancock"

if hk.env("HANCOCK_TEST_PROTOCOL_ROUTES") ~= "1" then
  return
end

local MAX_KIB = 4096

-- A text body of :kib KiB: a small request that asks for a large response.
hk.route("GET", "/protocol/big/:kib", function(req)
  local n = tonumber(req.params.kib)
  local kib = n and math.tointeger(n)
  if kib == nil or kib < 0 or kib > MAX_KIB then
    return hk.error(400, ("kib must be an integer from 0 to %d"):format(MAX_KIB))
  end
  return 200, string.rep("x", kib * 1024), { ["Content-Type"] = "text/plain" }
end)
