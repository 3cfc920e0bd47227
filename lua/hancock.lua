-- hancock: the API scripts see through `require "hancock"`.
-- Routing, logging and JSON are thin layers over the C core (hancock.core); the shaping of a
-- handler's return values into a response lives here, where it reads as the contract it is.

local core = require "hancock.core"

local json = core.json

local hk = {
  json = json,
  version = core.version,
  log = {},
  -- C functions of the program that embeds the host (hk_native_add in hancock.h); empty in
  -- the hancock binary.
  native = core.native,
}

local ErrorResponse = { __name = "hancock.ErrorResponse" }

--- Registers `handler(req)` for `method` ("GET", "POST", … or "*") and `pattern`
--- ("/v1/chat", "/v1/items/:id", "/static/*path").
function hk.route(method, pattern, handler)
  core.route(method, pattern, handler)
end

--- An error response: return hk.error(400, "message required") from a handler.
--- The body is {"error": message, "request_id": req.id}.
function hk.error(status, message)
  if math.type(status) ~= "integer" or status < 400 or status > 599 then
    error("hk.error: status must be an integer from 400 to 599", 2)
  end
  if type(message) ~= "string" then
    error("hk.error: message must be a string", 2)
  end
  return setmetatable({ status = status, message = message }, ErrorResponse)
end

--- Waits `ms` milliseconds without blocking the server (in a handler only).
function hk.sleep(ms)
  core.sleep(ms)
end

--- Runs fn(...) in a background task once the current handler has returned (or, called while
--- the scripts load, once the server is up): for work that must neither delay nor fail a
--- response, and for periodic work. It may sleep and make HTTP calls; errors go to the log
--- (task_error). Tasks still running at shutdown are cancelled.
function hk.spawn(fn, ...)
  core.spawn(fn, ...)
end

hk.http = {}

--- An outbound HTTP call from a handler; the handler waits, the server does not.
--- opts: url, method ("GET"), headers (table), body (string), timeout_ms (60000),
--- connect_timeout_ms (5000), max_bytes (16 MiB), on_chunk(bytes) (streamed bodies; return
--- false to stop). Returns {status, headers, body, seconds}, or nil, message, kind where kind
--- is "connect", "timeout", "too_large", "aborted" or "protocol".
function hk.http.request(opts)
  if type(opts) ~= "table" then
    error("hk.http.request: expected a table of options", 2)
  end
  return core.http_request(opts)
end

--- Compares two secrets in constant time (SHA-256 digests), so neither content nor length leaks.
function hk.secure_equal(a, b)
  return core.secure_equal(a, b)
end

--- True when `header` is "sha256=<hex HMAC-SHA256 of raw_body under secret>".
function hk.verify_signature(secret, raw_body, header)
  return core.verify_signature(secret, raw_body, header)
end

hk.system = {}

--- {total, available} bytes of system memory (/proc/meminfo), or nil, message.
function hk.system.meminfo()
  return core.meminfo()
end

--- {total, free} bytes of the filesystem holding `path`, or nil, message.
function hk.system.disk(path)
  return core.disk(path)
end

hk.ratelimit = {}

--- Takes one token from `key`'s bucket (capacity `limit`, refilled over `window_ms`).
--- Returns allowed, remaining, reset_ms (until full), retry_after_ms (until a token).
function hk.ratelimit.take(key, limit, window_ms)
  return core.ratelimit_take(key, limit, window_ms)
end

--- The environment variable `name`, or `default` when it is unset or empty. Scripts read
--- only the documented families (HANCOCK_*, OLLAMA_*, OPENAI_*, NVIDIA_*, HK_*, LOG_LEVEL,
--- PROMETHEUS_URL, ALERTMANAGER_URL) and names the operator lists in --script-env; any other
--- name is an error. HANCOCK_ADMIN_TOKEN is never readable.
function hk.env(name, default)
  if type(name) ~= "string" then
    error("hk.env: name must be a string", 2)
  end
  local value = core.env(name)
  if value == nil or value == "" then
    return default
  end
  return value
end

for _, level in ipairs { "debug", "info", "warn", "error" } do
  local core_level = level == "warn" and "WARNING" or level:upper()
  hk.log[level] = function(event, fields)
    core.log(core_level, event, fields)
  end
end

-- Metrics live in C and outlive script reloads: registering the same name, type and labels
-- again returns the same metric with its values. Label values are given by label name
-- ({mode = "soc"}) or by position ({"soc"}).
local core_register = core.metrics.register

-- Families registered from Lua, by name ({type, labels, help}), for `hancock dashboard`.
local registered = {}

local function register(kind, name, help, labels, opts)
  local metric = core_register(kind, name, help, labels, opts)
  local names = {}
  for i, label in ipairs(type(labels) == "table" and labels or {}) do
    names[i] = tostring(label)
  end
  registered[name] = { type = kind, labels = names, help = help }
  return metric
end

hk.metrics = {}

--- The families registered through hk.metrics.counter/gauge/histogram (internal: dashboards).
function hk.metrics._registered()
  return registered
end

--- A counter: m:inc(labels, n). `opts.max_series` caps the label combinations kept (1000).
function hk.metrics.counter(name, help, labels, opts)
  return register("counter", name, help, labels, opts)
end

--- A gauge: m:set(labels, v), m:inc(labels, n), m:dec(labels, n).
function hk.metrics.gauge(name, help, labels, opts)
  return register("gauge", name, help, labels, opts)
end

--- A histogram: m:observe(labels, v). `buckets` defaults to Prometheus's
--- {.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10}.
function hk.metrics.histogram(name, help, labels, buckets, opts)
  local options = { buckets = buckets }
  for key, value in pairs(opts or {}) do
    options[key] = value
  end
  return register("histogram", name, help, labels, options)
end

--- The registered metric called `name` (the core's own included), or nil:
--- hk.metrics.get("hancock_model_response_time_seconds"):observe({ model = m, operation = mode }, s)
function hk.metrics.get(name)
  return core.metrics.find(name)
end

--- Runs fn(...) and observes how long it took in `histogram` (also when fn raises, which
--- then propagates). Returns fn's results.
function hk.metrics.time(histogram, labels, fn, ...)
  local started = core.monotonic()
  local results = table.pack(pcall(fn, ...))
  histogram:observe(labels, core.monotonic() - started)
  if not results[1] then
    error(results[2], 0)
  end
  return table.unpack(results, 2, results.n)
end

--- Records an alerting threshold for `hancock rules` (see lua/hancock/rules.lua and
--- docs/monitoring.md): hk.alert("HancockHighErrorRate", {group, expr, threshold, ...}).
hk.alert = require("hancock.rules").define

--- Declares a specialist mode name: requests whose req.mode is `name` are counted under it in
--- hancock_requests_by_mode, any other mode as "other" (so clients cannot mint series).
--- llm.mode registers its modes itself.
function hk.register_mode(name)
  if type(name) ~= "string" then
    error("hk.register_mode: name must be a string", 2)
  end
  core.register_mode(name)
end

--- Registers fn(event) to run on every log event: it may add, change or remove fields, and
--- returning false drops the event.
function hk.on_log(fn)
  core.on_log(fn)
end

local function error_body(err, req)
  return json.encode { error = err.message, request_id = req.id }
end

local function encode_body(body, headers)
  if body == nil then
    return "", nil
  elseif type(body) == "string" then
    local has_type = false
    for name in pairs(headers or {}) do
      if type(name) == "string" and name:lower() == "content-type" then
        has_type = true
      end
    end
    return body, (not has_type) and "text/plain; charset=utf-8" or nil
  elseif type(body) == "table" then
    if getmetatable(body) == ErrorResponse then
      error("return hk.error(...) alone, not as a body", 0)
    end
    return json.encode(body), "application/json"
  end
  error(("response body must be a string or a table, not %s"):format(type(body)), 0)
end

--- Called by the core in the request's coroutine: runs the handler and returns
--- status, body, content type, headers.
function hk._respond(handler, req)
  local first, body, headers = handler(req)
  if getmetatable(first) == ErrorResponse then
    return first.status, error_body(first, req), "application/json"
  elseif first == nil then
    return 204, "", nil
  elseif type(first) == "table" then
    return 200, json.encode(first), "application/json"
  elseif type(first) == "string" then
    return 200, first, "text/plain; charset=utf-8"
  elseif math.type(first) == "integer" then
    if headers ~= nil and type(headers) ~= "table" then
      error("response headers must be a table", 0)
    end
    local text, content_type = encode_body(body, headers)
    return first, text, content_type, headers
  end
  error(("handler returned %s; return a table, a string, or status, body, headers"):format(type(first)), 0)
end

-- Deep health checks and the /health, /health/live and /health/ready routes (lua/hancock/health.lua).
-- The module receives hk rather than requiring "hancock", which is still loading here.
hk.health = require("hancock.health")(hk)

-- The hk.alert rules evaluated in the host, GET /alerts and the status page's data
-- (lua/hancock/alerting.lua).
hk.alerts = require("hancock.alerting").attach(hk)

-- GET /status, the live page, and the /status.json it refreshes from (lua/hancock/status.lua).
require("hancock.status").attach(hk)

return hk
