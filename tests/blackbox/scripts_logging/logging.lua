-- Fixture routes for tests/blackbox/test_logging.py: log events from Lua at every level,
-- secret-named fields and strings that need escaping.
local hk = require "hancock"

-- Logged while the scripts load, outside any request.
hk.log.info("script_loaded", { file = "logging.lua" })

hk.route("GET", "/v1/items/:id", function(req)
  return { id = req.params.id, request_id = req.id }
end)

hk.route("POST", "/v1/chat", function(req)
  local body = req:json()
  if type(body) == "table" and type(body.override_mode) == "string" then
    req.mode = body.override_mode
  end
  return { mode = req.mode or hk.json.null, request_id = req.id }
end)

hk.route("GET", "/levels", function(req)
  hk.log.debug("debug_event", { n = 1 })
  hk.log.info("info_event", { n = 2 })
  hk.log.warn("warn_event", { n = 3 })
  hk.log.error("error_event", { n = 4 })
  return { request_id = req.id }
end)

hk.route("GET", "/fields", function(req)
  hk.log.info("custom_fields", {
    user = "alice",
    count = 3,
    ratio = 0.5,
    flag = true,
    list = { 1, 2, 3 },
    object = { a = "b" },
  })
  return { request_id = req.id }
end)

-- Logs the secret it is sent under secret-looking names; none may reach the log in clear.
hk.route("POST", "/secrets", function(req)
  local value = assert(req:json()).value
  hk.log.info("secret_fields", {
    api_key = value,
    apikey = value,
    password = value,
    db_password = value,
    token = value,
    access_token = value,
    secret = value,
    client_secret = value,
    authorization = req.headers.authorization,
    Authorization = req:header("Authorization"),
    visible = "not-a-secret",
  })
  return { ok = true }
end)

-- The same, one level down in tables (and the whole header table, Authorization included).
hk.route("POST", "/secrets/nested", function(req)
  local value = assert(req:json()).value
  hk.log.info("nested_secret_fields", {
    config = { password = value, api_key = value, name = "db" },
    headers = req.headers,
  })
  return { ok = true }
end)

-- Logs the raw body as the message and as a field (with a key that needs escaping).
hk.route("POST", "/escape", function(req)
  hk.log.info("escape_test", { message = req.body, text = req.body, ["we\"ird\nkey\u{e9}"] = 1 })
  return { ok = true }
end)

hk.route("POST", "/escape/nested", function(req)
  hk.log.info("escape_nested_test", { nested = { text = req.body }, list = { req.body } })
  return { ok = true }
end)

hk.route("GET", "/boom", function()
  error("logging-fixture-boom")
end)
