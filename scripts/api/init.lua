-- api: what the /v1 routes share, so the route scripts read like configuration.
--
--   api.access{ api_key = …, rate_limit = 60, rate_window_s = 60 }   -- who may call, how often
--   api.post("/v1/triage", { mode = "soc", input = {…}, prompt = fn, output = fn })
--   api.route("POST", "/v1/webhook", "soc", handler)                 -- a hand-written handler
--
-- Every route made here checks the API key and the rate limit first and answers with the
-- X-RateLimit-* headers, whatever the outcome. Lives in scripts/api/, a subdirectory, so it
-- is loaded by `require "api"` and not run as a script of its own.

local hk = require "hancock"
local llm = require "hancock.llm"

local json = hk.json

local api = {}

-- ---- access: API key and rate limit ---------------------------------------------------------

local access = { api_key = nil, rate_limit = 60, rate_window_s = 60 }
local refusals = hk.metrics.get("hancock_rate_limit_exceeded_total")

local function positive_integer(value, what)
  local n = math.tointeger(tonumber(value))
  if n == nil or n <= 0 then
    error(("api.access: %s must be a positive integer, not '%s'"):format(what, tostring(value)), 3)
  end
  return n
end

--- Sets who may call the /v1 routes and how often: opts.api_key (nil or "" = no key needed),
--- opts.rate_limit (requests per window per client), opts.rate_window_s (the window).
function api.access(opts)
  local key = opts.api_key
  access = {
    api_key = (key ~= nil and key ~= "") and key or nil,
    rate_limit = positive_integer(opts.rate_limit or 60, "rate_limit"),
    rate_window_s = positive_integer(opts.rate_window_s or 60, "rate_window_s"),
  }
end

-- The token of an "Authorization: Bearer <token>" header, or nil.
local function bearer_token(req)
  local value = req:header("Authorization")
  return value and value:match("^[Bb][Ee][Aa][Rr][Ee][Rr]%s+(%S+)%s*$")
end

-- Who the client is for the rate limiter and whether it may call at all. A client with the
-- right key is "api-key" (one bucket for the key: the key itself never becomes a label); any
-- other client is its address, so inventing keys buys no fresh buckets.
local function identify(req)
  if access.api_key == nil then
    return req.remote_addr, true
  end
  local token = bearer_token(req)
  if token ~= nil and hk.secure_equal(token, access.api_key) then
    return "api-key", true
  end
  return req.remote_addr, false
end

local function error_body(req, message)
  return { error = message, request_id = req.id }
end

-- Takes a token for the client. Returns the X-RateLimit-* headers, and an error response
-- (status, body) when the request must be refused.
local function admit(req)
  local client, authorized = identify(req)
  local window_ms = access.rate_window_s * 1000
  local allowed, remaining, _, retry_after_ms = hk.ratelimit.take("v1:" .. client, access.rate_limit, window_ms)
  local headers = {
    ["X-RateLimit-Limit"] = tostring(access.rate_limit),
    ["X-RateLimit-Remaining"] = tostring(remaining),
    ["X-RateLimit-Window"] = tostring(access.rate_window_s),
  }
  if not allowed then
    -- Until one token is back: the limiter's own figure, or one token's refill time.
    local wait_ms = retry_after_ms or window_ms // access.rate_limit
    headers["Retry-After"] = tostring(math.max(1, (wait_ms + 999) // 1000))
    refusals:inc({ endpoint = req.endpoint, client_id = client })
    return headers, 429, error_body(req, "rate limit exceeded")
  elseif not authorized then
    return headers, 401, error_body(req, "unauthorized")
  end
  return headers
end

-- ---- responses ------------------------------------------------------------------------------

local ErrorResponse = getmetatable(hk.error(400, "probe"))

-- status, body, headers from whatever a handler returned, with `headers` added.
local function respond(req, headers, first, body, extra)
  if getmetatable(first) == ErrorResponse then
    return first.status, error_body(req, first.message), headers
  elseif first == nil then
    return 204, nil, headers
  elseif type(first) ~= "number" then
    return 200, first, headers
  end
  for name, value in pairs(extra or {}) do
    headers[name] = value
  end
  return first, body, headers
end

-- Once the scripts have loaded: a warning when the /v1 routes are open to anyone.
local routes_made = 0

local function warn_when_open()
  if access.api_key == nil then
    hk.log.warn("api_key_unset", {
      message = "HANCOCK_API_KEY is unset: the /v1 routes need no key, so anyone who can reach "
        .. "this port can use them and the model behind them; set it in production "
        .. "(docs/configuration.md#production)",
      routes = routes_made,
    })
  end
end

--- Registers `handler(req)` like hk.route, behind the API key and the rate limit. `mode`
--- (a mode name, or nil) labels the request (req.mode) from the start, refusals included.
function api.route(method, path, mode, handler)
  if mode ~= nil and not llm.is_mode(mode) then
    error(("api.route(%s): unknown mode '%s' (define it with llm.mode first)"):format(path, mode), 2)
  end
  if routes_made == 0 then
    hk.spawn(warn_when_open)
  end
  routes_made = routes_made + 1
  -- A tail call: the route is then registered "at" the script line that called api.route (the
  -- first frame outside the runtime), which is what a duplicate route's error names.
  return hk.route(method, path, function(req)
    req.mode = mode
    local headers, status, body = admit(req)
    if status then
      return status, body, headers
    end
    req.rate_limit_headers = headers -- for handlers that stream (req:stream)
    -- The model calls the handler makes are accounted to this request (gateway overhead, the
    -- request_completed line) until it returns or is cancelled.
    local scope <close> = llm.track(req)
    local first, content, extra = handler(req)
    if scope.retry_after then -- a model call refused for want of a slot (HANCOCK_LLM_MAX_CONCURRENCY)
      headers["Retry-After"] = tostring(scope.retry_after)
    end
    if scope.backend then -- the backend that answered (or was tried last): ollama, nvidia, openai
      headers["X-Hancock-Backend"] = scope.backend
    end
    return respond(req, headers, first, content, extra)
  end)
end

-- ---- request fields -------------------------------------------------------------------------

--- The request body as a JSON object, or nil and a message for a 400.
function api.body(req)
  local body = req:json()
  if type(body) ~= "table" or json.is_array(body) then
    return nil, "request body must be a JSON object"
  end
  return body
end

local function mode_names()
  local names = {}
  for _, mode in ipairs(llm.modes()) do
    names[#names + 1] = mode.name
  end
  return table.concat(names, ", ")
end

local function present(value)
  return value ~= nil and value ~= json.null and value ~= ""
end

-- The field's raw value: under its own name, else under the first alias that has one.
local function raw_value(body, spec)
  local value = body[spec[1]]
  for _, alias in ipairs(spec.aliases or {}) do
    if present(value) then
      break
    end
    value = body[alias]
  end
  return present(value) and value or nil
end

local function required_message(spec)
  local what = spec.json and "a non-empty string or a JSON object" or "a non-empty string"
  return ("field '%s' is required and must be %s"):format(spec[1], what)
end

local function check_choice(spec, value)
  if spec.mode and not llm.is_mode(value) then
    return ("unknown mode '%s'; valid modes: %s"):format(value:sub(1, 64), mode_names())
  end
  if spec.one_of then
    for _, choice in ipairs(spec.one_of) do
      if value == choice then
        return nil
      end
    end
    return ("field '%s' must be one of: %s"):format(spec[1], table.concat(spec.one_of, ", "))
  end
end

-- One field's value, or nil and a message. spec: { name, optional = bool, default = string,
-- aliases = {…}, one_of = {…}, mode = true (a defined mode), json = true (an object is welcome,
-- passed on as JSON text) }.
local function read_field(body, spec)
  local required = spec.default == nil and not spec.optional
  local value = raw_value(body, spec)
  if value == nil then
    if required then
      return nil, required_message(spec)
    end
    return spec.default
  end
  if spec.json and type(value) == "table" then
    return json.encode(value)
  elseif required and (type(value) ~= "string" or not value:find("%S")) then
    return nil, required_message(spec)
  elseif type(value) ~= "string" then
    return nil, ("field '%s' must be a string"):format(spec[1])
  end
  local problem = check_choice(spec, value)
  if problem then
    return nil, problem
  end
  return value
end

--- The fields `specs` (a list of field specs, see read_field) from the request's JSON body:
--- a table by name, or nil and a message for a 400 that names the field.
function api.fields(req, specs)
  local body, problem = api.body(req)
  if body == nil then
    return nil, problem
  end
  local fields = {}
  for _, spec in ipairs(specs) do
    local value, err = read_field(body, spec)
    if err then
      return nil, err
    end
    fields[spec[1]] = value
  end
  return fields, body
end

-- ---- asking the model -----------------------------------------------------------------------

--- The model's answer to one user message in `mode`, or nil and an error response.
function api.ask(mode, message)
  local answer, err, status = llm.chat { mode = mode, messages = { { role = "user", content = message } } }
  if answer == nil then
    return nil, hk.error(status, err)
  end
  return answer
end

--- A one-shot endpoint: `spec.input` (field specs), `spec.prompt(fields)` → the user message
--- for the model in `spec.mode`, `spec.output(fields, answer)` → the response table.
function api.post(path, spec)
  return api.route("POST", path, spec.mode, function(req) -- a tail call, as in api.route
    local fields, problem = api.fields(req, spec.input)
    if fields == nil then
      return hk.error(400, problem)
    end
    local answer, failure = api.ask(spec.mode, spec.prompt(fields))
    if answer == nil then
      return failure
    end
    return spec.output(fields, answer)
  end)
end

return api
