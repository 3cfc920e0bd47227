-- hancock.llm: chat completions against an OpenAI-compatible backend, and the registry of
-- specialist modes (a system prompt, a model and sampling settings under a name).
--
--   local llm = require "hancock.llm"
--   llm.mode("soc", { model = llm.models.default, system = "You are a SOC analyst …" })
--   local answer, err, status = llm.chat{ mode = "soc", messages = { { role = "user", content = "…" } } }
--
-- The backend is chosen once, when the module loads (that is, when the scripts load or reload),
-- from HANCOCK_LLM_BACKEND: ollama (default), nvidia or openai. When the backend is unreachable,
-- times out or answers 5xx and OPENAI_API_KEY is set, the call is retried once against OpenAI.

local hk = require "hancock"
local core = require "hancock.core"

local json = hk.json

local llm = {}

-- ---- configuration (read once, at load) ------------------------------------------------------

local function positive_integer(name, default)
  local text = hk.env(name, default)
  local value = math.tointeger(tonumber(text))
  if value == nil or value <= 0 then
    error(("%s must be a positive integer of milliseconds, not '%s'"):format(name, text), 0)
  end
  return value
end

local openai = {
  name = "openai",
  base_url = hk.env("OPENAI_BASE_URL", "https://api.openai.com"),
  api_key = hk.env("OPENAI_API_KEY"),
  model = hk.env("OPENAI_MODEL", "gpt-4o-mini"),
}
openai.coder_model = hk.env("OPENAI_CODER_MODEL", openai.model)

local backends = {
  ollama = {
    name = "ollama",
    base_url = hk.env("OLLAMA_BASE_URL", "http://localhost:11434"),
    model = hk.env("OLLAMA_MODEL", "llama3.1:8b"),
    coder_model = hk.env("OLLAMA_CODER_MODEL", "qwen2.5-coder:7b"),
  },
  nvidia = {
    name = "nvidia",
    base_url = hk.env("NVIDIA_BASE_URL", "https://integrate.api.nvidia.com"),
    api_key = hk.env("NVIDIA_API_KEY"),
    model = hk.env("NVIDIA_MODEL", "meta/llama-3.1-8b-instruct"),
    coder_model = hk.env("NVIDIA_CODER_MODEL", "qwen/qwen2.5-coder-32b-instruct"),
  },
  openai = openai,
}

local backend_name = hk.env("HANCOCK_LLM_BACKEND", "ollama"):lower()
local primary = backends[backend_name]
if primary == nil then
  error(("HANCOCK_LLM_BACKEND must be ollama, nvidia or openai, not '%s'"):format(backend_name), 0)
end

-- OpenAI is the fallback when its key is set and it is not already the primary.
local fallback = (primary ~= openai and openai.api_key) and openai or nil

local timeout_ms = positive_integer("HANCOCK_LLM_TIMEOUT_MS", "120000")
local connect_timeout_ms = positive_integer("HANCOCK_LLM_CONNECT_TIMEOUT_MS", "5000")
local MAX_RESPONSE_BYTES = 8 * 1024 * 1024

--- The active backend's name ("ollama", "nvidia" or "openai").
llm.backend = primary.name

--- The active backend's models: llm.models.default and llm.models.coder.
llm.models = { default = primary.model, coder = primary.coder_model }

--- The backends a call may go to, in the order they are tried: the active one, then the
--- fallback when there is one. A list of copies of {name, role ("primary" or "fallback"),
--- base_url, api_key (nil when none), model, coder_model}: what health checks probe.
function llm.backends()
  local list = {}
  for i, backend in ipairs { primary, fallback } do
    list[i] = {
      name = backend.name,
      role = i == 1 and "primary" or "fallback",
      base_url = backend.base_url,
      api_key = backend.api_key,
      model = backend.model,
      coder_model = backend.coder_model,
    }
  end
  return list
end

-- ---- metrics -----------------------------------------------------------------------------

local response_time = assert(hk.metrics.get("hancock_model_response_time_seconds"),
                              "the core did not register hancock_model_response_time_seconds")
local tokens = hk.metrics.counter("hancock_llm_tokens_total",
  "Tokens reported by the LLM backend, by model and kind (prompt or completion).",
  { "model", "kind" })

local function count_tokens(model, usage)
  if type(usage) ~= "table" then
    return
  end
  for kind, field in pairs { prompt = "prompt_tokens", completion = "completion_tokens" } do
    local n = math.tointeger(usage[field])
    if n and n >= 0 then
      tokens:inc({ model = model, kind = kind }, n)
    end
  end
end

-- ---- modes -------------------------------------------------------------------------------

local modes = {}

local function check_mode_options(name, opts)
  if type(name) ~= "string" or not name:match("^[%w_%-]+$") or #name > 64 then
    error("llm.mode: name must be 1 to 64 letters, digits, '_' or '-'", 3)
  end
  if modes[name] then
    error(("llm.mode: mode '%s' is already defined"):format(name), 3)
  end
  if type(opts) ~= "table" or type(opts.system) ~= "string" or opts.system == "" then
    error(("llm.mode(%s): opts.system must be a non-empty string"):format(name), 3)
  end
  if opts.model ~= nil and (type(opts.model) ~= "string" or opts.model == "") then
    error(("llm.mode(%s): opts.model must be a non-empty string"):format(name), 3)
  end
  local t = opts.temperature
  if t ~= nil and (type(t) ~= "number" or t < 0 or t > 2) then
    error(("llm.mode(%s): opts.temperature must be a number from 0 to 2"):format(name), 3)
  end
  local m = opts.max_tokens
  if m ~= nil and (math.type(m) ~= "integer" or m <= 0) then
    error(("llm.mode(%s): opts.max_tokens must be a positive integer"):format(name), 3)
  end
end

--- Defines the specialist mode `name`: opts.system (the system prompt, required), opts.model
--- (llm.models.default unless given), opts.temperature (0.7), opts.max_tokens (1024),
--- opts.description (one line for clients listing the modes).
function llm.mode(name, opts)
  check_mode_options(name, opts)
  core.register_mode(name)
  modes[name] = {
    name = name,
    system = opts.system,
    model = opts.model or llm.models.default,
    temperature = opts.temperature or 0.7,
    max_tokens = opts.max_tokens or 1024,
    description = opts.description,
  }
end

--- True when a mode called `name` is defined.
function llm.is_mode(name)
  return modes[name] ~= nil
end

--- The defined modes, sorted by name: a list of {name, model, temperature, max_tokens,
--- description} (copies; the system prompts stay private).
function llm.modes()
  local list = {}
  for _, mode in pairs(modes) do
    list[#list + 1] = {
      name = mode.name,
      model = mode.model,
      temperature = mode.temperature,
      max_tokens = mode.max_tokens,
      description = mode.description,
    }
  end
  table.sort(list, function(a, b) return a.name < b.name end)
  return list
end

-- ---- one call to one backend ---------------------------------------------------------------

-- A failure: the message for the client, the HTTP status to answer, and whether trying the
-- fallback backend makes sense (the backend is down or broken, not the request).
local function failure(message, status, retryable, detail)
  return { message = message, status = status, retryable = retryable, detail = detail }
end

local function transport_failure(message, kind)
  if kind == "timeout" then
    return failure("model backend timed out", 504, true, message)
  elseif kind == "connect" then
    return failure("model backend unreachable", 502, true, message)
  elseif kind == "too_large" then
    return failure("model backend response too large", 502, false, message)
  end
  return failure("model backend request failed", 502, false, message)
end

local function http_failure(status)
  if status >= 500 then
    return failure(("model backend error (HTTP %d)"):format(status), 502, true)
  end
  return failure(("model backend rejected the request (HTTP %d)"):format(status), 502, false)
end

-- The answer's text from a chat-completions document, or nil and a failure.
local function parse_completion(body)
  local doc = json.decode(body)
  local choice = type(doc) == "table" and type(doc.choices) == "table" and doc.choices[1]
  local message = type(choice) == "table" and choice.message
  if type(message) ~= "table" then
    return nil, failure("model backend returned a malformed response", 502, false)
  end
  local text = message.content
  if type(text) ~= "string" or not text:find("%S") then
    return nil, failure("model returned empty response", 502, false)
  end
  return { text = text, usage = type(doc.usage) == "table" and doc.usage or {} }
end

-- The chat-completions URL under a base URL given with or without a trailing "/v1" (the
-- OpenAI SDKs' OPENAI_BASE_URL has it, Ollama's usual base URL does not).
local function completions_url(base_url)
  local base = base_url:gsub("/+$", "")
  base = base:gsub("/v1$", "")
  return base .. "/v1/chat/completions"
end

local function request_options(backend, payload, call_timeout_ms)
  local headers = { ["Content-Type"] = "application/json", Accept = "application/json" }
  if backend.api_key then
    headers.Authorization = "Bearer " .. backend.api_key
  end
  return {
    method = "POST",
    url = completions_url(backend.base_url),
    headers = headers,
    body = json.encode(payload),
    timeout_ms = call_timeout_ms,
    connect_timeout_ms = math.min(connect_timeout_ms, call_timeout_ms),
    max_bytes = MAX_RESPONSE_BYTES,
  }
end

-- A parser for a streamed completion (server-sent events, OpenAI's chat.completion.chunk
-- objects): feed(bytes) takes body pieces as they arrive and calls on_delta(text) for each piece
-- of the answer; finish() returns the whole result like parse_completion.
local function stream_parser(on_delta)
  local pending, parts, usage = "", {}, {}
  local parser = {}
  local function line(text)
    local data = text:match("^data:%s?(.*)$")
    if data == nil or data == "[DONE]" then
      return
    end
    local doc = json.decode(data)
    if type(doc) ~= "table" then
      return
    end
    if type(doc.usage) == "table" then
      usage = doc.usage
    end
    local choice = type(doc.choices) == "table" and doc.choices[1]
    local delta = type(choice) == "table" and choice.delta
    local text_part = type(delta) == "table" and delta.content
    if type(text_part) == "string" and text_part ~= "" then
      parts[#parts + 1] = text_part
      on_delta(text_part)
    end
  end
  function parser.feed(bytes)
    pending = pending .. bytes
    -- Positions from gmatch refer to the string it started on: cut the consumed lines once,
    -- after the loop (cutting inside it dropped the partial line a chunk ends with).
    local consumed = 1
    for text, rest in pending:gmatch("([^\n]*)\n()") do
      line((text:gsub("\r$", "")))
      consumed = rest
    end
    pending = pending:sub(consumed)
  end
  function parser.delivered()
    return #parts > 0
  end
  function parser.finish()
    local text = table.concat(parts)
    if not text:find("%S") then
      return nil, failure("model returned empty response", 502, false)
    end
    return { text = text, usage = usage }
  end
  return parser
end

-- Sends `payload` (its model already set) to `backend`; returns a result or nil, failure.
-- With payload.stream, answer pieces go to on_delta as they arrive.
local function complete(backend, payload, operation, call_timeout_ms, on_delta)
  local labels = { model = payload.model, operation = operation }
  local opts = request_options(backend, payload, call_timeout_ms)
  local stream = on_delta and stream_parser(on_delta)
  if stream then
    opts.headers.Accept = "text/event-stream"
    opts.on_chunk = stream.feed
  end
  local response, message, kind = hk.metrics.time(response_time, labels, hk.http.request, opts)
  if response == nil then
    local err = transport_failure(message, kind)
    err.retryable = err.retryable and not (stream and stream.delivered())
    return nil, err
  elseif response.status < 200 or response.status > 299 then
    return nil, http_failure(response.status)
  end
  local result, err
  if stream then
    result, err = stream.finish()
  else
    result, err = parse_completion(response.body)
  end
  if result == nil then
    return nil, err
  end
  count_tokens(payload.model, result.usage)
  result.model = payload.model
  return result
end

local function log_failure(backend, model, operation, err)
  local fields = { backend = backend.name, model = model, operation = operation,
                   status = err.status, error = err.message, detail = err.detail }
  if err.message == "model returned empty response" then
    hk.log.error("model_empty_response", fields)
  else
    hk.log.error("llm_request_failed", fields)
  end
end

-- ---- llm.chat ------------------------------------------------------------------------------

local function check_messages(messages)
  if type(messages) ~= "table" or #messages == 0 then
    error("llm.chat: messages must be a non-empty list of {role, content}", 3)
  end
  for i, m in ipairs(messages) do
    if type(m) ~= "table" or type(m.role) ~= "string" or type(m.content) ~= "string" then
      error(("llm.chat: messages[%d] must be {role = string, content = string}"):format(i), 3)
    end
  end
end

-- The mode's system prompt first, then the conversation (copied: the caller's list is kept).
local function with_system_prompt(mode, messages)
  local out = json.array { { role = "system", content = mode.system } }
  for _, m in ipairs(messages) do
    out[#out + 1] = { role = m.role, content = m.content }
  end
  return out
end

-- The fallback's model for a request that asked the primary for `model`.
local function fallback_model(model)
  return model == primary.coder_model and openai.coder_model or openai.model
end

--- One chat completion. args: mode ("auto" unless given; must be defined with llm.mode),
--- messages (a list of {role, content}, sent after the mode's system prompt), and optional
--- model, temperature, max_tokens, timeout_ms that override the mode's. Returns
--- {text, model, usage}, or nil, message, status — 502 when the backend is unreachable,
--- answers an error or something malformed or empty, 504 on timeout.
--- With on_delta = function(text) … end the completion is streamed: each piece of the answer
--- goes to on_delta as the backend produces it (the result still carries the whole text). The
--- fallback backend is tried only while nothing has been delivered.
--- Every attempt is timed in hancock_model_response_time_seconds{model, operation = mode}.
function llm.chat(args)
  if type(args) ~= "table" then
    error("llm.chat: expected a table of arguments", 2)
  end
  local name = args.mode or "auto"
  local mode = modes[name]
  if mode == nil then
    error(("llm.chat: unknown mode '%s'"):format(tostring(name)), 2)
  end
  check_messages(args.messages)
  local payload = {
    model = args.model or mode.model,
    messages = with_system_prompt(mode, args.messages),
    temperature = args.temperature or mode.temperature,
    max_tokens = args.max_tokens or mode.max_tokens,
    stream = args.on_delta ~= nil,
    stream_options = args.on_delta and { include_usage = true } or nil,
  }
  local call_timeout_ms = args.timeout_ms or timeout_ms
  local result, err = complete(primary, payload, name, call_timeout_ms, args.on_delta)
  if result then
    return result
  end
  log_failure(primary, payload.model, name, err)
  if not (fallback and err.retryable) then
    return nil, err.message, err.status
  end
  local from_model = payload.model
  payload.model = fallback_model(from_model)
  hk.log.warn("llm_fallback", { from = primary.name, from_model = from_model, to = fallback.name,
                                model = payload.model, operation = name, reason = err.message })
  result, err = complete(fallback, payload, name, call_timeout_ms, args.on_delta)
  if result then
    return result
  end
  log_failure(fallback, payload.model, name, err)
  return nil, err.message, err.status
end

return llm
