-- Fixture routes for tests/blackbox/test_lua_routes.py.
local hk = require "hancock"
local util = require "util"

hk.route("GET", "/v1/ping", function()
  return { pong = true, util = util.loaded_from }
end)

hk.route("GET", "/v1/items/:id", function(req)
  return { id = req.params.id, endpoint = req.endpoint }
end)

hk.route("GET", "/v1/users/:user/items/:item", function(req)
  return { user = req.params.user, item = req.params.item, endpoint = req.endpoint }
end)

-- Everything the request object exposes, as JSON.
hk.route("*", "/inspect", function(req)
  return {
    method = req.method,
    path = req.path,
    query = req.query,
    query_string = req.query_string or hk.json.null,
    id = req.id,
    remote_addr = req.remote_addr,
    remote_port = req.remote_port,
    endpoint = req.endpoint,
    body = req.body,
    lookups = util.lookups(req.headers, { "X-Custom-Header", "x-custom-header", "X-CUSTOM-HEADER" }),
    header_method = req:header("x-CUSTOM-header") or false,
    missing_header = req.headers["X-Not-Sent"] == nil and req:header("X-Not-Sent") == nil,
  }
end)

hk.route("POST", "/raw", function(req)
  return 200, req.body, { ["Content-Type"] = "application/octet-stream" }
end)

-- Decodes the body and sends it back re-encoded; reports req:json()'s failure otherwise.
hk.route("POST", "/json/echo", function(req)
  local value, err = req:json()
  if value == nil then
    return 400, { decoded = false, err = err, err_type = type(err) }
  end
  return value
end)

-- How the decoded JSON looks from Lua.
hk.route("POST", "/json/types", function(req)
  local value = assert(req:json())
  local out = {}
  for key, item in pairs(value) do
    local kind = type(item)
    if item == hk.json.null then
      kind = "null"
    elseif kind == "number" then
      kind = math.type(item)
    elseif kind == "table" then
      kind = hk.json.is_array(item) and "array" or "object"
    end
    out[key] = kind
  end
  return out
end)

hk.route("GET", "/json/built", function()
  return {
    empty_array = hk.json.array({}),
    empty_object = {},
    null = hk.json.null,
    sequence = { 1, 2, 3 },
    nested = { hk.json.null, hk.json.array({}), {} },
    big = math.maxinteger,
    small = math.mininteger,
  }
end)

hk.route("GET", "/json/invalid-utf8", function()
  return { text = "a\xffb", tail = "ok\xc3" }
end)

hk.route("GET", "/shape/table", function()
  return { shape = "table" }
end)

hk.route("GET", "/shape/full", function()
  return 201, "plain body, as is", { ["X-Custom"] = "custom-value", ["X-Number"] = 42 }
end)

hk.route("GET", "/shape/content-type", function()
  return 200, "<p>hi</p>", { ["Content-Type"] = "text/html; charset=utf-8" }
end)

hk.route("GET", "/shape/status-table", function()
  return 202, { accepted = true }
end)

hk.route("GET", "/shape/nil", function()
  return nil
end)

hk.route("GET", "/shape/error", function()
  return hk.error(418, "short and \"stout\" \u{e9}")
end)

hk.route("GET", "/shape/error-503", function()
  return hk.error(503, "try later")
end)

hk.route("GET", "/fail/error", function()
  error("kaboom-routes-fixture")
end)

hk.route("GET", "/fail/error-table", function()
  error({ code = 7 })
end)

hk.route("GET", "/fail/status-low", function()
  return 99, "too low"
end)

hk.route("GET", "/fail/status-high", function()
  return 600, "too high"
end)

hk.route("GET", "/fail/header-name", function()
  return 200, "x", { ["Bad Header"] = "v" }
end)

hk.route("GET", "/fail/header-crlf", function()
  return 200, "x", { ["X-Split"] = "a\r\nX-Injected: yes" }
end)

hk.route("GET", "/fail/header-lf", function()
  return 200, "x", { ["X-Split"] = "a\nX-Injected: yes" }
end)

hk.route("GET", "/fail/return-boolean", function()
  return true
end)

-- req.mode defaults to the JSON body's "mode" and is settable; the script's own fields stick.
hk.route("POST", "/fields", function(req)
  local initial = req.mode or hk.json.null
  req.mode = "turbo"
  req.user = { name = "ada" }
  local ok_path = pcall(function()
    req.path = "/elsewhere"
  end)
  return {
    initial_mode = initial,
    mode = req.mode,
    user = req.user.name,
    path = req.path,
    path_assignment_failed = not ok_path,
  }
end)

hk.route("GET", "/env", function()
  return {
    value = hk.env("HK_BLACKBOX_VALUE", "fallback"),
    empty = hk.env("HK_BLACKBOX_EMPTY", "fallback-empty"),
    unset = hk.env("HK_BLACKBOX_UNSET_VARIABLE", "fallback-unset"),
  }
end)
