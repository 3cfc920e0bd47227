-- The embedding example's routes: Lua in front, the service's C behind (hk.native, registered
-- by examples/embed/service.c with hk_native_add).
local hk = require "hancock"

local native = hk.native

hk.route("GET", "/embed/stats", function()
  return 200, native.stats()
end)

hk.route("POST", "/embed/jobs", function(req)
  local body = req:json()
  local count = type(body) == "table" and body.count or nil
  if math.type(count) ~= "integer" then
    return hk.error(400, "count must be an integer")
  end
  local ok, depth = pcall(native.enqueue, count)
  if not ok then
    return hk.error(400, depth)
  end
  return 202, { queued = depth }
end)

hk.route("GET", "/embed/users/:name", function(req)
  local ok, user = pcall(native.lookup, req.params.name)
  if not ok then
    return hk.error(404, user)
  end
  return 200, user
end)

-- A native error not caught: the host answers 500 and logs the traceback.
hk.route("GET", "/embed/users-unchecked/:name", function(req)
  return 200, native.lookup(req.params.name)
end)

hk.route("GET", "/embed/version", function()
  return 200, { version = "v1" }
end)
