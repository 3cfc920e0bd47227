-- hancock.llm: chat completions against the model backend, the registry of specialist modes
-- (a system prompt, a model and sampling settings under a name), and the observability of every
-- call (docs/llm-observability.md): latency split, Ollama's own phase timers, hangs and stalls.
--
--   local llm = require "hancock.llm"
--   llm.mode("soc", { model = llm.models.default, system = "You are a SOC analyst …" })
--   local answer, err, status = llm.chat{ mode = "soc", messages = { { role = "user", content = "…" } } }
--
-- The backend is chosen once, when the module loads (that is, when the scripts load or reload),
-- from HANCOCK_LLM_BACKEND: ollama (default; its native /api/chat unless OLLAMA_API=openai),
-- nvidia or openai (OpenAI's chat completions). When the backend is unreachable, times out or
-- answers 5xx and OPENAI_API_KEY is set, the call is retried once against OpenAI.

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

local ollama_api = hk.env("OLLAMA_API", "native"):lower()
if ollama_api ~= "native" and ollama_api ~= "openai" then
  error(("OLLAMA_API must be native or openai, not '%s'"):format(ollama_api), 0)
end

local openai = {
  name = "openai",
  protocol = "openai",
  base_url = hk.env("OPENAI_BASE_URL", "https://api.openai.com"),
  api_key = hk.env("OPENAI_API_KEY"),
  model = hk.env("OPENAI_MODEL", "gpt-4o-mini"),
}
openai.coder_model = hk.env("OPENAI_CODER_MODEL", openai.model)

local backends = {
  ollama = {
    name = "ollama",
    protocol = ollama_api == "native" and "ollama" or "openai",
    base_url = hk.env("OLLAMA_BASE_URL", "http://localhost:11434"),
    model = hk.env("OLLAMA_MODEL", "llama3.1:8b"),
    coder_model = hk.env("OLLAMA_CODER_MODEL", "qwen2.5-coder:7b"),
  },
  nvidia = {
    name = "nvidia",
    protocol = "openai",
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

-- Hang and stall detection: a call in flight longer than HANG is hanging; a streamed call that
-- received nothing for STALL is stalled. A load_duration above COLD_START is a cold start.
local hang_s = positive_integer("HANCOCK_LLM_HANG_MS", "60000") / 1000
local stall_s = positive_integer("HANCOCK_LLM_STALL_MS", "15000") / 1000
local cold_start_s = positive_integer("HANCOCK_LLM_COLD_START_MS", "1000") / 1000

-- Admission: HANCOCK_LLM_MAX_CONCURRENCY caps the calls in flight per backend, for the whole
-- process: a number (the active backend's cap) or a list such as "ollama=2,openai=16". Unset,
-- no cap. Past the cap a call waits in its worker's queue, at most HANCOCK_LLM_QUEUE_TIMEOUT_MS,
-- behind at most HANCOCK_LLM_MAX_QUEUE others.
local MAX_CAP = 256
local function concurrency_caps(text)
  local caps = {}
  if text == nil then
    return caps
  end
  local function cap_of(name, value)
    local n = math.tointeger(tonumber(value))
    if backends[name] == nil or n == nil or n < 1 or n > MAX_CAP then
      error(("HANCOCK_LLM_MAX_CONCURRENCY must be a number from 1 to %d or a list such as "
             .. "'ollama=2,openai=16', not '%s'"):format(MAX_CAP, text), 0)
    end
    caps[name] = n
  end
  if text:match("^%s*%d+%s*$") then
    cap_of(primary.name, text)
    return caps
  end
  for item in (text .. ","):gmatch("([^,]*),") do
    local name, value = item:match("^%s*(%a+)%s*=%s*(%d+)%s*$")
    cap_of(name and name:lower() or "", value)
  end
  return caps
end
local caps = concurrency_caps(hk.env("HANCOCK_LLM_MAX_CONCURRENCY"))

-- Cooldown (off unless HANCOCK_LLM_COOLDOWN_FAILURES is set, and only with a fallback): after
-- that many failures of the active backend in a row (unreachable, timed out, 5xx), calls skip
-- it for HANCOCK_LLM_COOLDOWN_MS and go to the fallback; the first call after that tries it again.
local cooldown_failures = math.tointeger(tonumber(hk.env("HANCOCK_LLM_COOLDOWN_FAILURES", "0")))
if cooldown_failures == nil or cooldown_failures < 0 then
  error("HANCOCK_LLM_COOLDOWN_FAILURES must be a number of failures, 0 (no cooldown) or more", 0)
end
local cooldown_ms = positive_integer("HANCOCK_LLM_COOLDOWN_MS", "30000")

-- The passive error ratio (llm.watch_state): a backend whose calls in the last
-- HANCOCK_LLM_ERROR_WINDOW_MS number HANCOCK_LLM_DEGRADED_MIN_CALLS or more, of which a share of
-- HANCOCK_LLM_DEGRADED_ERROR_RATIO or more failed, is degraded.
local MAX_WINDOW_MS = 24 * 3600 * 1000
local error_window_ms = math.tointeger(tonumber(hk.env("HANCOCK_LLM_ERROR_WINDOW_MS", "60000")))
if error_window_ms == nil or error_window_ms < 1000 or error_window_ms > MAX_WINDOW_MS then
  error(("HANCOCK_LLM_ERROR_WINDOW_MS must be a whole number of milliseconds from 1000 to %d, not '%s'")
        :format(MAX_WINDOW_MS, hk.env("HANCOCK_LLM_ERROR_WINDOW_MS")), 0)
end
local degraded_ratio_text = hk.env("HANCOCK_LLM_DEGRADED_ERROR_RATIO", "0.25")
local degraded_ratio = tonumber(degraded_ratio_text)
if degraded_ratio == nil or not (degraded_ratio > 0 and degraded_ratio <= 1) then
  error(("HANCOCK_LLM_DEGRADED_ERROR_RATIO must be a fraction of calls above 0 and at most 1 "
         .. "(0.25: a quarter of them failed), not '%s'"):format(degraded_ratio_text), 0)
end
local degraded_min_calls = math.tointeger(tonumber(hk.env("HANCOCK_LLM_DEGRADED_MIN_CALLS", "5")))
if degraded_min_calls == nil or degraded_min_calls < 1 then
  error(("HANCOCK_LLM_DEGRADED_MIN_CALLS must be a whole number of calls, 1 or more, not '%s'")
        :format(hk.env("HANCOCK_LLM_DEGRADED_MIN_CALLS")), 0)
end
local queue_timeout_s = positive_integer("HANCOCK_LLM_QUEUE_TIMEOUT_MS", "30000") / 1000
local max_queue = math.tointeger(tonumber(hk.env("HANCOCK_LLM_MAX_QUEUE", "100")))
if max_queue == nil or max_queue < 0 then
  error("HANCOCK_LLM_MAX_QUEUE must be a number of calls, 0 or more", 0)
end

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

local metrics = hk.metrics

local response_time = assert(metrics.get("hancock_model_response_time_seconds"),
                             "the core did not register hancock_model_response_time_seconds")
local tokens = metrics.counter("hancock_llm_tokens_total",
  "Tokens reported by the LLM backend, by model and kind (prompt or completion).",
  { "model", "kind" })

-- The OpenTelemetry GenAI semantic conventions' metrics (gen-ai-metrics.md), in Prometheus
-- form: dots become underscores, the unit a suffix; their advised bucket boundaries.
local GENAI = { "gen_ai_operation_name", "gen_ai_provider_name", "gen_ai_request_model",
                "gen_ai_response_model", "mode", "stream" }
local function with(labels, extra)
  local out = table.move(labels, 1, #labels, 1, {})
  out[#out + 1] = extra
  return out
end
local GENAI_SERIES = { max_series = 500 }

local operation_duration = metrics.histogram("gen_ai_client_operation_duration_seconds",
  "Duration of each call to the model backend (each attempt, failures with error_type).",
  with(GENAI, "error_type"),
  { 0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92 },
  GENAI_SERIES)
local time_to_first_token = metrics.histogram("gen_ai_server_time_to_first_token_seconds",
  "Time from sending the call to the first token of the answer, streamed or not.", GENAI,
  { 0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0 },
  GENAI_SERIES)
local time_per_output_token = metrics.histogram("gen_ai_server_time_per_output_token_seconds",
  "Time per output token after the first, for successful calls.", GENAI,
  { 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5 }, GENAI_SERIES)
local token_usage = metrics.histogram("gen_ai_client_token_usage",
  "Tokens per call, by gen_ai_token_type (input or output), as the backend reports them.",
  with(GENAI, "gen_ai_token_type"),
  { 1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304, 16777216, 67108864 },
  GENAI_SERIES)

-- Ollama's own timers, from the final object of /api/chat.
local PHASE_BUCKETS = { 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120 }
local RATE_BUCKETS = { 1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000 }
local phase = {
  load = metrics.histogram("hancock_llm_load_duration_seconds",
    "Ollama: time spent loading the model for a call (load_duration).", { "model" }, PHASE_BUCKETS),
  prefill = metrics.histogram("hancock_llm_prefill_duration_seconds",
    "Ollama: time spent evaluating the prompt (prompt_eval_duration).", { "model" }, PHASE_BUCKETS),
  decode = metrics.histogram("hancock_llm_decode_duration_seconds",
    "Ollama: time spent generating the answer (eval_duration).", { "model" }, PHASE_BUCKETS),
  prefill_rate = metrics.histogram("hancock_llm_prefill_tokens_per_second",
    "Ollama: prompt tokens evaluated per second (prompt_eval_count / prompt_eval_duration).",
    { "model" }, RATE_BUCKETS),
  decode_rate = metrics.histogram("hancock_llm_decode_tokens_per_second",
    "Ollama: answer tokens generated per second (eval_count / eval_duration).", { "model" },
    RATE_BUCKETS),
  cold_starts = metrics.counter("hancock_llm_cold_starts_total",
    "Ollama: calls whose load_duration exceeded HANCOCK_LLM_COLD_START_MS.", { "model" }),
}
local finish_reasons = metrics.counter("hancock_llm_finish_reasons_total",
  "Successful calls by the backend's finish reason (stop, length, …).", { "mode", "reason" })

-- In flight, hanging and stalled calls, per backend: exact counts of the calls running now.
local in_flight = metrics.gauge("hancock_llm_requests_in_flight",
  "Calls to the model backend in flight now.", { "backend" })
local hanging = metrics.gauge("hancock_llm_requests_hanging",
  "Calls in flight for longer than HANCOCK_LLM_HANG_MS now.", { "backend" })
local stalled = metrics.gauge("hancock_llm_streams_stalled",
  "Streamed calls that have received nothing for HANCOCK_LLM_STALL_MS now.", { "backend" })
local hangs_total = metrics.counter("hancock_llm_hangs_total",
  "Calls that were in flight for longer than HANCOCK_LLM_HANG_MS.", { "backend" })
local stalls_total = metrics.counter("hancock_llm_stalls_total",
  "Times a streamed call received nothing for HANCOCK_LLM_STALL_MS.", { "backend" })

-- Cost, from the price table the scripts give (llm.prices), in its currency.
local cost_total = metrics.counter("hancock_llm_cost_total",
  "What successful calls cost by the scripts' price table (llm.prices), in its currency.",
  { "model", "mode", "currency" })
local unpriced = metrics.counter("hancock_llm_unpriced_calls_total",
  "Successful calls that could not be priced: no_price (not in the table), no_usage, no_timers.",
  { "model", "reason" })
local compute_seconds = metrics.counter("hancock_llm_compute_seconds_total",
  "Ollama: seconds the local model worked for successful calls (total_duration).", { "model", "mode" })

-- Fallbacks, empty answers, prompt versions.
local fallbacks = metrics.counter("hancock_llm_fallbacks_total",
  "Calls retried on the fallback backend, by from, to, the first backend's error and the outcome.",
  { "from", "to", "reason", "outcome" })
local empty_answers = metrics.counter("hancock_llm_empty_answers_total",
  "Answers without text (502 model returned empty response), by mode and backend.", { "mode", "backend" })
local prompt_info = metrics.gauge("hancock_llm_prompt_info",
  "1 for each mode's prompt version (a digest of its system prompt and settings) now loaded, 0 once replaced.",
  { "mode", "prompt_version" })

-- Model residency, from Ollama's /api/ps (llm.watch_residency).
local RESIDENCY = { max_series = 100 }
local residency = {
  loaded = metrics.gauge("hancock_llm_model_loaded",
    "Ollama: 1 while the model is loaded (GET /api/ps), 0 once unloaded.", { "model" }, RESIDENCY),
  size = metrics.gauge("hancock_llm_model_size_bytes",
    "Ollama: memory the loaded model takes (size).", { "model" }, RESIDENCY),
  vram = metrics.gauge("hancock_llm_model_vram_bytes",
    "Ollama: of which in GPU memory (size_vram); less than the size means a spill to CPU.", { "model" },
    RESIDENCY),
  context = metrics.gauge("hancock_llm_model_context_length",
    "Ollama: the loaded model's context length, in tokens.", { "model" }, RESIDENCY),
}

local backend_state = metrics.gauge("hancock_llm_backend_state",
  "Each backend a call may go to: 0 ok, 1 degraded (its probe not ok, its last call failed, or its "
  .. "error ratio at HANCOCK_LLM_DEGRADED_ERROR_RATIO or more), 2 cooldown.",
  { "backend" })
local error_ratio = metrics.gauge("hancock_llm_backend_error_ratio",
  "Share of each backend's calls that failed (unreachable, timed out, 5xx) over the last "
  .. "HANCOCK_LLM_ERROR_WINDOW_MS, for the whole process; 0 when it had no call.",
  { "backend" })

local queued = metrics.gauge("hancock_llm_requests_queued",
  "Calls waiting for a slot under HANCOCK_LLM_MAX_CONCURRENCY now.", { "backend" })
local queue_wait = metrics.histogram("hancock_llm_queue_wait_seconds",
  "Time calls waited for a slot under HANCOCK_LLM_MAX_CONCURRENCY (0 when one was free).",
  { "backend" }, { 0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60 })
local refused = metrics.counter("hancock_llm_admission_refused_total",
  "Calls refused under HANCOCK_LLM_MAX_CONCURRENCY: queue_full (429) or queue_timeout (503).",
  { "backend", "reason" })

-- The series of every backend a call may go to exist from the start, at 0.
for _, backend in ipairs { primary, fallback } do
  local labels = { backend = backend.name }
  for _, family in ipairs { in_flight, hanging, stalled, hangs_total, stalls_total, backend_state, error_ratio } do
    family:inc(labels, 0)
  end
  if caps[backend.name] then
    queued:inc(labels, 0)
    for _, reason in ipairs { "queue_full", "queue_timeout" } do
      refused:inc({ backend = backend.name, reason = reason }, 0)
    end
  end
end

local gateway_overhead = metrics.histogram("hancock_gateway_overhead_seconds",
  "Time a request that called the model spent in the gateway, not waiting on a backend.",
  { "endpoint" }, { 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5 })

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

-- The model a backend says answered, as a label: the requested one, or a name that extends it
-- (a dated snapshot, ":latest"); anything else is "other", so a backend cannot mint series.
local function response_model_label(reported, requested)
  if type(reported) ~= "string" or reported == "" or reported == requested then
    return requested
  end
  if #reported <= 128 and reported:sub(1, #requested) == requested and reported:match("^[%w%._:/%-]+$") then
    return reported
  end
  return "other"
end

local FINISH_REASONS = { stop = true, length = true, content_filter = true, tool_calls = true,
                         load = true, unload = true }

-- ---- modes -------------------------------------------------------------------------------

local modes = {}

-- A mode's prompt version: 8 hex digits of FNV-1a over what shapes its answers (system prompt,
-- model, temperature, max_tokens), so a changed prompt shows as a new version after a reload.
local function prompt_version(mode)
  local hash = 0x811c9dc5
  local text = table.concat({ mode.system, mode.model, tostring(mode.temperature), tostring(mode.max_tokens) }, "\0")
  for i = 1, #text do
    hash = ((hash ~ text:byte(i)) * 0x01000193) & 0xffffffff
  end
  return ("%08x"):format(hash)
end

-- Once the server is up (a task spawned while loading runs once per process, in the control
-- thread's copy): each mode's prompt version is 1 in hancock_llm_prompt_info, and the version
-- the previous generation left in the carry map, if another, drops to 0.
local prompts_published = false
local function publish_prompt_versions()
  for name, mode in pairs(modes) do
    local key = "llm-prompt:" .. name
    local before = core.carry_get(key)
    if before and before ~= mode.prompt_version then
      prompt_info:set({ mode = name, prompt_version = before }, 0)
    end
    prompt_info:set({ mode = name, prompt_version = mode.prompt_version }, 1)
    core.carry_set(key, mode.prompt_version)
  end
end

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
  local mode = {
    name = name,
    system = opts.system,
    model = opts.model or llm.models.default,
    temperature = opts.temperature or 0.7,
    max_tokens = opts.max_tokens or 1024,
    description = opts.description,
  }
  mode.prompt_version = prompt_version(mode)
  modes[name] = mode
  if not prompts_published then
    prompts_published = true
    hk.spawn(publish_prompt_versions)
  end
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

-- ---- failures ------------------------------------------------------------------------------

-- A failure: the message for the client, the HTTP status to answer, whether trying the
-- fallback backend makes sense (the backend is down or broken, not the request), and the
-- error_type label of gen_ai_client_operation_duration_seconds.
local function failure(message, status, retryable, error_type, detail)
  return { message = message, status = status, retryable = retryable, error_type = error_type,
           detail = detail }
end

local function transport_failure(message, kind)
  if kind == "timeout" then
    return failure("model backend timed out", 504, true, "timeout", message)
  elseif kind == "connect" then
    return failure("model backend unreachable", 502, true, "connect", message)
  elseif kind == "too_large" then
    return failure("model backend response too large", 502, false, "too_large", message)
  end
  return failure("model backend request failed", 502, false, kind or "protocol", message)
end

local function http_failure(status)
  if status >= 500 then
    return failure(("model backend error (HTTP %d)"):format(status), 502, true, tostring(status))
  end
  return failure(("model backend rejected the request (HTTP %d)"):format(status), 502, false,
                 tostring(status))
end

local function malformed()
  return failure("model backend returned a malformed response", 502, false, "malformed_response")
end

local function empty_answer()
  return failure("model returned empty response", 502, false, "empty_response")
end

-- ---- the two protocols ---------------------------------------------------------------------

-- A base URL given with or without a trailing "/v1" (the OpenAI SDKs' OPENAI_BASE_URL has it,
-- Ollama's usual base URL does not), without it.
local function base_of(base_url)
  return (base_url:gsub("/+$", ""):gsub("/v1$", ""))
end

-- Ollama's durations are integers of nanoseconds.
local function seconds_of(ns)
  local n = math.tointeger(ns)
  return n and n >= 0 and n / 1e9 or nil
end

local function count_of(value)
  local n = math.tointeger(value)
  return n and n >= 0 and n or nil
end

-- Ollama's final object (the whole answer, or the stream's last line): its timers and counts.
local function ollama_timings(doc)
  return {
    load = seconds_of(doc.load_duration),
    prefill = seconds_of(doc.prompt_eval_duration),
    decode = seconds_of(doc.eval_duration),
    total = seconds_of(doc.total_duration),
    prompt_tokens = count_of(doc.prompt_eval_count),
    output_tokens = count_of(doc.eval_count),
  }
end

-- Usage in OpenAI's shape (what answer.usage has always been), from Ollama's counts.
local function ollama_usage(timings)
  local usage = { prompt_tokens = timings.prompt_tokens, completion_tokens = timings.output_tokens }
  if usage.prompt_tokens and usage.completion_tokens then
    usage.total_tokens = usage.prompt_tokens + usage.completion_tokens
  end
  return usage
end

local protocols = {
  openai = {
    url = function(backend) return base_of(backend.base_url) .. "/v1/chat/completions" end,
    payload = function(request)
      return {
        model = request.model,
        messages = request.messages,
        temperature = request.temperature,
        max_tokens = request.max_tokens,
        stream = request.stream,
        stream_options = request.stream and { include_usage = true } or nil,
      }
    end,
    -- The answer from a chat-completions document, or nil and a failure.
    parse = function(doc)
      local choice = type(doc.choices) == "table" and doc.choices[1]
      local message = type(choice) == "table" and choice.message
      if type(message) ~= "table" then
        return nil, malformed()
      end
      return {
        text = message.content,
        usage = type(doc.usage) == "table" and doc.usage or {},
        finish_reason = choice.finish_reason,
        response_model = doc.model,
      }
    end,
  },
  ollama = {
    url = function(backend) return base_of(backend.base_url) .. "/api/chat" end,
    payload = function(request)
      return {
        model = request.model,
        messages = request.messages,
        stream = request.stream,
        options = { temperature = request.temperature, num_predict = request.max_tokens },
      }
    end,
    parse = function(doc)
      local message = doc.message
      if type(message) ~= "table" then
        return nil, malformed()
      end
      local timings = ollama_timings(doc)
      return {
        text = message.content,
        usage = ollama_usage(timings),
        finish_reason = doc.done_reason,
        response_model = doc.model,
        timings = timings,
      }
    end,
  },
}

-- A parser for a streamed answer, in either framing: server-sent events of OpenAI's
-- chat.completion.chunk objects, or Ollama's NDJSON (one object per line, the last with
-- done = true and the timers). feed(bytes) takes body pieces as they arrive and calls
-- on_delta(text) for each piece of the answer; finish() returns the result like a parse.
local function stream_parser(on_delta)
  local pending, parts = "", {}
  local result = { usage = {} }
  local parser = {}
  local function object(doc)
    if type(doc.model) == "string" then
      result.response_model = doc.model
    end
    if type(doc.error) == "string" or type(doc.error) == "table" then
      result.error = true
      return
    end
    if type(doc.usage) == "table" then
      result.usage = doc.usage
    end
    local piece
    local choice = type(doc.choices) == "table" and doc.choices[1]
    if type(choice) == "table" then
      piece = type(choice.delta) == "table" and choice.delta.content
      if type(choice.finish_reason) == "string" then
        result.finish_reason = choice.finish_reason
      end
    elseif type(doc.message) == "table" then
      piece = doc.message.content
    end
    if doc.done == true then
      result.timings = ollama_timings(doc)
      result.usage = ollama_usage(result.timings)
      result.finish_reason = doc.done_reason
    end
    if type(piece) == "string" and piece ~= "" then
      parts[#parts + 1] = piece
      on_delta(piece)
    end
  end
  local function line(text)
    local data = text:match("^data:%s?(.*)$")
    if data == nil then
      data = text:match("^%s*({.*)$") -- an NDJSON line
    end
    if data == nil or data == "[DONE]" then
      return
    end
    local doc = json.decode(data)
    if type(doc) == "table" then
      object(doc)
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
    if pending ~= "" then -- a last NDJSON line without its newline
      line(pending)
      pending = ""
    end
    if result.error then
      return nil, failure("model backend failed mid-stream", 502, #parts == 0, "stream_error")
    end
    result.text = table.concat(parts)
    return result
  end
  return parser
end

-- ---- trace context (W3C traceparent) --------------------------------------------------------

local function fnv1a64(prefix, text)
  local hash = 0xcbf29ce484222325 -- wraps to the 64-bit integer, as the C core's uint64_t
  for _, part in ipairs { prefix, text } do
    for i = 1, #part do
      hash = (hash ~ part:byte(i)) * 0x100000001b3
    end
  end
  return hash
end

local function nonzero(hex)
  return hex:find("[1-9a-f]") ~= nil
end

-- The caller's trace from a traceparent header value: trace id, parent span id, flags; or nil
-- when it is absent or not valid (W3C Trace Context: lower-case hex, ids not all zeros,
-- version ff invalid, version 00 exactly 55 characters). A repeated header counts by its first.
local function parse_traceparent(value)
  if type(value) ~= "string" then
    return nil
  end
  value = value:match("^[^,]*"):gsub("^%s+", ""):gsub("%s+$", "")
  local version, trace, parent, flags, rest =
    value:match("^([0-9a-f][0-9a-f])%-([0-9a-f]+)%-([0-9a-f]+)%-([0-9a-f][0-9a-f])(.*)$")
  if version == nil or version == "ff" or #trace ~= 32 or #parent ~= 16
      or not nonzero(trace) or not nonzero(parent)
      or (rest ~= "" and (version == "00" or rest:sub(1, 1) ~= "-")) then
    return nil
  end
  return trace, parent, flags
end

-- The request's trace id by the core's rule (host/hk_conn.c, request_trace_id), so both name
-- the same trace in their log lines: the inbound traceparent's, else the request id's hex
-- digits when it is a UUID, else two FNV-1a 64 digests of the request id.
local function trace_of(req)
  local trace, parent, flags = parse_traceparent(req:header("traceparent"))
  if trace then
    return trace, parent, flags
  end
  local id = req.id
  if #id == 36 and id:match("^%x+%-%x+%-%x+%-%x+%-%x+$") and id:sub(9, 9) == "-" and id:sub(14, 14) == "-"
      and id:sub(19, 19) == "-" and id:sub(24, 24) == "-" then
    local hex = id:gsub("%-", ""):lower()
    if nonzero(hex) then
      return hex, nil, "01"
    end
  end
  return ("%016x%016x"):format(fnv1a64("", id), fnv1a64("trace:", id)), nil, "01"
end

-- A new span id: 16 hex digits, not all zeros.
local function new_span_id()
  local id
  repeat
    id = ("%016x"):format(math.random(0))
  until nonzero(id)
  return id
end

-- ---- admission: slots per backend, shared by the workers -----------------------------------

-- A slot is a key of the process-wide carry map, claimed for SLOT_HOLD_MS and renewed by the
-- call's watcher while the call runs (at least once a second), released when it ends. A slot
-- whose holder is gone (a generation retired by a reload cannot write the map) frees itself
-- within SLOT_HOLD_MS.
local SLOT_HOLD_MS = 3000
local POLL_MS = 20
local waiting = {} -- backend name -> this worker's waiting tickets, first come first

local function now_ms()
  return math.floor(core.monotonic() * 1000)
end

local function try_slot(ticket)
  for i = 1, ticket.cap do
    local key = ("llm-slot:%s:%d"):format(ticket.backend, i)
    if core.carry_claim(key, SLOT_HOLD_MS) then
      ticket.slot = key
      return true
    end
  end
  return false
end

local function renew_slot(ticket)
  if ticket and ticket.slot then
    core.carry_set(ticket.slot, tostring(now_ms() + SLOT_HOLD_MS))
  end
end

local function leave_queue(ticket)
  if not ticket.queued then
    return
  end
  ticket.queued = false
  local list = waiting[ticket.backend]
  for i, other in ipairs(list) do
    if other == ticket then
      table.remove(list, i)
      break
    end
  end
  queued:dec({ backend = ticket.backend })
end

-- A call's place: in the queue, then its slot; closing it (however the call ends, its request
-- cancelled included) gives both back.
local Ticket = {
  __close = function(ticket)
    leave_queue(ticket)
    if ticket.slot then
      core.carry_set(ticket.slot, nil)
      ticket.slot = nil
    end
  end,
}

-- A ticket for a call to `backend`, or nil when the backend has no cap. The caller holds it
-- in a to-be-closed variable before waiting in admit, so a request cancelled while queued
-- leaves the queue too.
local function ticket_for(backend)
  local cap = caps[backend.name]
  return cap and setmetatable({ backend = backend.name, cap = cap }, Ticket) or nil
end

-- Waits for a slot for `ticket`: nil once it holds one; else a failure (429 when the queue is
-- full, 503 when no slot came within the queue timeout; both worth the fallback, which is
-- another backend).
local function admit(ticket)
  local labels = { backend = ticket.backend }
  local started = core.monotonic()
  local list = waiting[ticket.backend] or {}
  waiting[ticket.backend] = list
  if #list == 0 and try_slot(ticket) then
    queue_wait:observe(labels, 0)
    return nil
  end
  if #list >= max_queue then
    refused:inc({ backend = ticket.backend, reason = "queue_full" })
    return failure("model backend queue full", 429, true, "queue_full")
  end
  list[#list + 1] = ticket
  ticket.queued = true
  queued:inc(labels)
  while true do
    hk.sleep(POLL_MS)
    local waited = core.monotonic() - started
    if list[1] == ticket and try_slot(ticket) then
      leave_queue(ticket)
      queue_wait:observe(labels, waited)
      return nil
    elseif waited >= queue_timeout_s then
      leave_queue(ticket)
      refused:inc({ backend = ticket.backend, reason = "queue_timeout" })
      return failure("model backend busy", 503, true, "queue_timeout")
    end
  end
end

-- ---- calls in flight: hang and stall detection ----------------------------------------------

-- The request a handler serves, by the coroutine it runs in (see llm.track), so calls add
-- their backend time to it. Weak keys: a finished handler's coroutine leaves no trace.
local scopes = setmetatable({}, { __mode = "k" })

local function mark_hanging(call, now)
  call.hanging = true
  hanging:inc({ backend = call.backend })
  hangs_total:inc({ backend = call.backend })
  hk.log.warn("llm_request_hanging", {
    message = "model call in flight for longer than HANCOCK_LLM_HANG_MS",
    backend = call.backend, model = call.model, operation = call.mode, stream = call.stream,
    elapsed_ms = math.floor((now - call.started) * 1000), threshold_ms = math.floor(hang_s * 1000),
    llm_span_id = call.span_id,
  })
end

local function mark_stalled(call, now)
  call.stalled = true
  call.stalls = call.stalls + 1
  stalled:inc({ backend = call.backend })
  stalls_total:inc({ backend = call.backend })
  if call.stalls == 1 then
    hk.log.warn("llm_stream_stalled", {
      message = "streamed model call received nothing for HANCOCK_LLM_STALL_MS",
      backend = call.backend, model = call.model, operation = call.mode,
      silent_ms = math.floor((now - call.last_bytes_at) * 1000), threshold_ms = math.floor(stall_s * 1000),
      chunks = call.deltas,
    })
  end
end

-- A background task per call, on the call's worker: wakes at the next deadline (hang, or stall
-- for a stream), at least once a second so that it ends soon after the call does. A stream
-- stalls only once it has started: the wait for its first bytes is the backend's time to first
-- token (a cold model load can take minutes), which hang detection covers.
local function watch(call)
  while not call.done do
    renew_slot(call.ticket)
    local now = core.monotonic()
    if not call.hanging and now - call.started >= hang_s then
      mark_hanging(call, now)
    end
    local last = call.last_bytes_at
    if last and not call.stalled and now - last >= stall_s then
      mark_stalled(call, now)
    end
    local next_at = now + 1
    if not call.hanging then
      next_at = math.min(next_at, call.started + hang_s)
    end
    if last and not call.stalled then
      next_at = math.min(next_at, last + stall_s)
    end
    hk.sleep(math.max(1, math.ceil((next_at - now) * 1000)))
  end
end

-- Bytes arrived: a stalled stream is flowing again.
local function on_bytes(call)
  call.last_bytes_at = core.monotonic()
  if call.stalled then
    call.stalled = false
    stalled:dec({ backend = call.backend })
  end
end

-- A piece of the answer arrived.
local function on_piece(call)
  local now = core.monotonic()
  call.first_at = call.first_at or now
  call.last_at = now
  call.deltas = call.deltas + 1
end

-- The end of a call, however it ends: returned, failed, or its request cancelled (a client
-- that left: the handler's coroutine is closed, which closes this).
local Call = {
  __close = function(call)
    if call.done then
      return
    end
    call.done = true
    local labels = { backend = call.backend }
    in_flight:dec(labels)
    if call.hanging then
      hanging:dec(labels)
    end
    if call.stalled then
      stalled:dec(labels)
    end
    if call.scope then
      call.scope.backend_seconds = call.scope.backend_seconds + (core.monotonic() - call.started)
    end
  end,
}

local function begin_call(backend, model, mode, stream)
  local now = core.monotonic()
  local call = setmetatable({
    backend = backend.name, model = model, mode = mode, stream = stream,
    started = now, deltas = 0, stalls = 0, span_id = new_span_id(),
    scope = scopes[coroutine.running()],
  }, Call)
  if call.scope then
    call.scope.calls = call.scope.calls + 1
    call.scope.backend = backend.name
    call.scope.model = model
    call.scope.prompt_version = modes[mode] and modes[mode].prompt_version
  end
  hk.spawn(watch, call) -- first: if it raises, nothing is counted yet
  in_flight:inc({ backend = backend.name })
  return call
end

-- ---- prices --------------------------------------------------------------------------------

local prices = { currency = "USD", models = {} }

local function check_price(model, price)
  if type(model) ~= "string" or model == "" or type(price) ~= "table" then
    error("llm.prices: each entry must be [\"model\"] = { input = …, output = … } or { per_second = … }", 3)
  end
  for key, value in pairs(price) do
    if key ~= "input" and key ~= "output" and key ~= "per_second" then
      error(("llm.prices(%s): unknown field '%s' (input, output, per_second)"):format(model, tostring(key)), 3)
    elseif type(value) ~= "number" or value ~= value or value < 0 or value == math.huge then
      error(("llm.prices(%s): %s must be a finite number, 0 or more"):format(model, key), 3)
    end
  end
  if price.per_second == nil and (price.input == nil or price.output == nil) then
    error(("llm.prices(%s): give input and output (per million tokens), or per_second"):format(model), 3)
  end
end

--- Sets the price table (replacing the one before; a reload loads it anew): `currency` (a
--- label value, "USD" unless given) and, by model name, { input = p, output = p } per million
--- tokens, or { per_second = p } for a local model priced by the seconds it works (Ollama's
--- total_duration). Calls to a model not in the table are counted as unpriced, never as free.
function llm.prices(table_)
  if type(table_) ~= "table" then
    error("llm.prices: expected a table of prices by model", 2)
  end
  local currency = table_.currency or "USD"
  if type(currency) ~= "string" or not currency:match("^%u%u%u$") then
    error("llm.prices: currency must be a three-letter code such as USD", 2)
  end
  local models = {}
  for model, price in pairs(table_) do
    if model ~= "currency" then
      check_price(model, price)
      models[model] = { input = price.input, output = price.output, per_second = price.per_second }
    end
  end
  prices = { currency = currency, models = models }
end

-- A successful call's cost, or nil and why it has none.
local function cost_of(model, usage, timings)
  local price = prices.models[model]
  if price == nil then
    return nil, "no_price"
  end
  local cost = 0
  if price.input then
    local input, output = count_of(usage.prompt_tokens), count_of(usage.completion_tokens)
    if input == nil or output == nil then
      return nil, "no_usage"
    end
    cost = cost + (input * price.input + output * price.output) / 1e6
  end
  if price.per_second then
    local seconds = timings and timings.total
    if seconds == nil then
      return nil, "no_timers"
    end
    cost = cost + seconds * price.per_second
  end
  return cost
end

local function record_cost(call, result)
  local t = result.timings
  if t and t.total then
    compute_seconds:inc({ model = call.model, mode = call.mode }, t.total)
  end
  local cost, why = cost_of(call.model, result.usage or {}, t)
  if cost then
    cost_total:inc({ model = call.model, mode = call.mode, currency = prices.currency }, cost)
  else
    unpriced:inc({ model = call.model, reason = why })
  end
  return cost
end

-- ---- recording one call ---------------------------------------------------------------------

local function genai_labels(call, response_model)
  return {
    gen_ai_operation_name = "chat",
    gen_ai_provider_name = call.backend,
    gen_ai_request_model = call.model,
    gen_ai_response_model = response_model or call.model,
    mode = call.mode,
    stream = call.stream and "true" or "false",
  }
end

-- The exemplar of a call's latency observations (OpenMetrics): its request's id and trace id,
-- as on hancock_request_duration_seconds. OpenMetrics allows 128 characters of exemplar labels:
-- with a client's request id too long to fit beside the trace id, the trace id goes alone.
local function exemplar_of(call)
  local scope = call.scope
  if scope == nil or scope.trace_id == nil then return nil end
  local exemplar = { trace_id = scope.trace_id }
  if scope.id and #"request_id" + #scope.id + #"trace_id" + #scope.trace_id <= 128 then
    exemplar.request_id = scope.id
  end
  return exemplar
end

local function observe_with(histogram, labels, key, value, amount, exemplar)
  labels[key] = value
  histogram:observe(labels, amount, exemplar)
  labels[key] = nil
end

local function record_phases(model, t)
  local labels = { model = model }
  if t.load then
    phase.load:observe(labels, t.load)
    if t.load > cold_start_s then
      phase.cold_starts:inc(labels)
    end
  end
  if t.prefill then
    phase.prefill:observe(labels, t.prefill)
    if t.prompt_tokens and t.prefill > 0 then
      phase.prefill_rate:observe(labels, t.prompt_tokens / t.prefill)
    end
  end
  if t.decode then
    phase.decode:observe(labels, t.decode)
    if t.output_tokens and t.decode > 0 then
      phase.decode_rate:observe(labels, t.output_tokens / t.decode)
    end
  end
end

-- A successful call: latency split, tokens, phases, finish reason. `wall` is the call's time.
local function record_success(call, result, wall)
  local labels = genai_labels(call, response_model_label(result.response_model, call.model))
  local exemplar = exemplar_of(call)
  observe_with(operation_duration, labels, "error_type", "", wall, exemplar)
  local usage = result.usage or {}
  local output_tokens = count_of(usage.completion_tokens)
  local t = result.timings
  -- Time to first token: seen arriving when streamed; else, from Ollama's timers, the call's
  -- time less the decoding (so both include the network and the backend's queue).
  local ttft
  if call.first_at then
    ttft = call.first_at - call.started
  elseif t and t.decode then
    ttft = math.max(0, wall - t.decode)
  end
  if ttft then
    time_to_first_token:observe(labels, ttft, exemplar)
  end
  -- Time per output token after the first: measured between the first and last pieces when
  -- streamed; else Ollama's decode time per token.
  local tpot
  local n = output_tokens or call.deltas
  if call.first_at and n > 1 and call.last_at > call.first_at then
    tpot = (call.last_at - call.first_at) / (n - 1)
  elseif not call.first_at and t and t.decode and t.output_tokens and t.output_tokens > 0 then
    tpot = t.decode / t.output_tokens
  end
  if tpot then
    time_per_output_token:observe(labels, tpot, exemplar)
  end
  local input_tokens = count_of(usage.prompt_tokens)
  if input_tokens then
    observe_with(token_usage, labels, "gen_ai_token_type", "input", input_tokens)
  end
  if output_tokens then
    observe_with(token_usage, labels, "gen_ai_token_type", "output", output_tokens)
  end
  if t then
    record_phases(call.model, t)
  end
  local reason = result.finish_reason
  reason = type(reason) == "string" and (FINISH_REASONS[reason] and reason or "other") or "unknown"
  finish_reasons:inc({ mode = call.mode, reason = reason })
  local cost = record_cost(call, result)
  local scope = call.scope
  if scope then
    scope.cost = cost and (scope.cost or 0) + cost or scope.cost
    scope.ttft = scope.ttft or ttft
    scope.input_tokens = (scope.input_tokens or 0) + (input_tokens or 0)
    scope.output_tokens = (scope.output_tokens or 0) + (output_tokens or 0)
    scope.finish_reason = reason
  end
end

local function record_failure(call, err, wall)
  observe_with(operation_duration, genai_labels(call), "error_type", err.error_type or "other", wall,
    exemplar_of(call))
  if call.scope then
    call.scope.error_type = err.error_type
  end
end

-- ---- backend state: failures in a row, error ratio, cooldown --------------------------------

-- Shared by the workers through the carry map: "llm-fails:<backend>" counts the backend's
-- failures in a row (a success clears it; two workers failing at once may count one), and
-- "llm-cooldown:<backend>" holds when its cooldown ends (monotonic milliseconds).
local function failures_of(backend)
  return math.tointeger(tonumber(core.carry_get("llm-fails:" .. backend.name))) or 0
end

local function cooling_until(backend)
  return math.tointeger(tonumber(core.carry_get("llm-cooldown:" .. backend.name)))
end

local function in_cooldown(backend)
  if cooldown_failures == 0 then
    return false
  end
  local until_ms = cooling_until(backend)
  return until_ms ~= nil and until_ms > now_ms()
end

-- The error window: each backend's calls and failures over the last HANCOCK_LLM_ERROR_WINDOW_MS,
-- for the whole process. Each copy of the scripts that makes calls (a worker's, per generation)
-- counts its own in a lane of the carry map that no other writes, so two workers counting at
-- once lose nothing: "llm-window:<backend>:<lane id>" = "<start> <calls> <errors> <previous
-- calls> <previous errors>". The lanes are listed under "llm-window:<backend>" (edited under a
-- short lock) for llm.watch_state, which sums them and drops the lanes the window has left.
--
-- A lane holds two buckets of the window's length, back to back: the current one, which starts
-- with the lane's first call after two idle windows, and the one before it. The approximation:
-- the window ending now holds all of the current bucket and the part of the previous one still
-- inside it, counted as if that bucket's calls had been spread evenly over it. So a burst of
-- calls counts whole for a window after its first call, then fades out over the next one.
local WINDOW_PREFIX = "llm-window:"
local LANE_LIST_HOLD_MS = 100 -- the list's lock is held for two carry operations; a lost holder's expires
local MAX_LANES = 64 -- per backend: the copies that made calls in the last two windows (workers × reloads)
local lane_id = ("%012x"):format(math.random(0) & 0xffffffffffff)
local my_lanes = {} -- backend name -> this copy's lane

local function new_lane(start)
  return { start = start, calls = 0, errors = 0, previous_calls = 0, previous_errors = 0 }
end

-- Moves `lane` on to `now` (ms): the current bucket becomes the previous one once it has
-- lasted a window; after two windows both are empty and the next call starts a new bucket.
local function roll(lane, now)
  local age = now - lane.start
  if age >= 2 * error_window_ms then
    lane.start, lane.calls, lane.errors, lane.previous_calls, lane.previous_errors = now, 0, 0, 0, 0
  elseif age >= error_window_ms then
    lane.start = lane.start + error_window_ms
    lane.previous_calls, lane.previous_errors = lane.calls, lane.errors
    lane.calls, lane.errors = 0, 0
  end
end

local function encode_lane(lane)
  return ("%d %d %d %d %d"):format(lane.start, lane.calls, lane.errors, lane.previous_calls, lane.previous_errors)
end

local function decode_lane(text)
  local fields = {}
  for n in (text or ""):gmatch("%d+") do
    fields[#fields + 1] = math.tointeger(n)
  end
  if #fields ~= 5 then
    return nil
  end
  local lane = new_lane(fields[1])
  lane.calls, lane.errors, lane.previous_calls, lane.previous_errors = fields[2], fields[3], fields[4], fields[5]
  return lane
end

-- Rewrites the backend's list of lane ids with edit(list) under the list's lock; false when the
-- lock stays taken (another thread holds it for microseconds; a retired generation, which
-- cannot release it, for LANE_LIST_HOLD_MS): the caller tries again another time.
local function edit_lane_list(name, edit)
  local key, lock = WINDOW_PREFIX .. name, WINDOW_PREFIX .. name .. ":lock"
  for _ = 1, 50 do
    if core.carry_claim(lock, LANE_LIST_HOLD_MS) then
      local before = core.carry_get(key) or ""
      local after = edit(before)
      if after ~= before then
        core.carry_set(key, after ~= "" and after or nil)
      end
      core.carry_set(lock, nil)
      return true
    end
  end
  return false
end

-- One call's outcome into this copy's lane for the backend (listed, if it is not yet).
local function count_call(backend, failed)
  local name, now = backend.name, now_ms()
  local lane = my_lanes[name] or new_lane(now)
  my_lanes[name] = lane
  roll(lane, now)
  lane.calls = lane.calls + 1
  if failed then
    lane.errors = lane.errors + 1
  end
  if not core.carry_set(WINDOW_PREFIX .. name .. ":" .. lane_id, encode_lane(lane)) then
    return -- the carry map is full: this call goes uncounted
  end
  if not (core.carry_get(WINDOW_PREFIX .. name) or ""):find(lane_id, 1, true) then
    edit_lane_list(name, function(list)
      if list:find(lane_id, 1, true) or select(2, list:gsub("%S+", "")) >= MAX_LANES then
        return list
      end
      return list == "" and lane_id or list .. " " .. lane_id
    end)
  end
end

-- The backend's calls and failures in the window ending at `now` (ms), summed over its lanes;
-- lanes the window has left are dropped (their key and their place in the list).
local function window_of(name, now)
  local calls, errors, gone = 0, 0, {}
  for id in (core.carry_get(WINDOW_PREFIX .. name) or ""):gmatch("%S+") do
    local lane = decode_lane(core.carry_get(WINDOW_PREFIX .. name .. ":" .. id))
    if lane then
      local at = math.max(now, lane.start) -- a lane written after `now` was read
      roll(lane, at)
      local inside = 1 - (at - lane.start) / error_window_ms -- of the previous bucket
      calls = calls + lane.calls + lane.previous_calls * inside
      errors = errors + lane.errors + lane.previous_errors * inside
    end
    if lane == nil or lane.calls + lane.previous_calls == 0 then
      gone[id] = true
    end
  end
  if next(gone) then
    edit_lane_list(name, function(list)
      local kept = {}
      for id in list:gmatch("%S+") do
        -- Checked again under the lock; a lane's owner that writes between this and the
        -- removal lists it again with its next call (its own copy of the lane has the counts).
        local key = WINDOW_PREFIX .. name .. ":" .. id
        local lane = gone[id] and decode_lane(core.carry_get(key))
        if lane then
          roll(lane, math.max(now, lane.start))
        end
        if gone[id] and (lane == nil or lane.calls + lane.previous_calls == 0) then
          core.carry_set(key, nil)
        else
          kept[#kept + 1] = id
        end
      end
      return table.concat(kept, " ")
    end)
  end
  return calls, errors
end

-- The outcomes counted against a backend: its successes, and its failures that are its own
-- (unreachable, timed out, 5xx, a stream that broke before any text) — not the request's
-- fault (4xx, a response too large), nor ours (refused for want of a slot).
local function note_outcome(backend, err)
  if err == nil then
    count_call(backend, false)
    if failures_of(backend) > 0 then
      core.carry_set("llm-fails:" .. backend.name, nil)
    end
    return
  elseif not err.retryable or err.error_type == "queue_full" or err.error_type == "queue_timeout" then
    return -- the request's fault, or ours (busy): not the backend's
  end
  count_call(backend, true)
  local failures = failures_of(backend) + 1
  core.carry_set("llm-fails:" .. backend.name, tostring(failures))
  if cooldown_failures > 0 and fallback and backend == primary and failures >= cooldown_failures
      and not in_cooldown(backend) then
    core.carry_set("llm-cooldown:" .. backend.name, tostring(now_ms() + cooldown_ms))
    hk.log.warn("llm_backend_cooldown", {
      message = "the model backend failed repeatedly: calls go to the fallback for a while",
      backend = backend.name, failures = failures, cooldown_ms = cooldown_ms, to = fallback.name,
    })
  end
end

local STATE_NAMES = { [0] = "ok", "degraded", "cooldown" }

-- A backend's state and why: 2, "cooldown"; 1, "probe", "error_ratio" or "failures" (when
-- both of the last two hold, the error ratio is the lasting cause, so it is the one named); 0.
local function judge(backend, probe, calls, ratio)
  if in_cooldown(backend) then
    return 2, "cooldown"
  elseif probe ~= nil and probe ~= "ok" then
    return 1, "probe"
  elseif calls >= degraded_min_calls and ratio >= degraded_ratio then
    return 1, "error_ratio"
  elseif failures_of(backend) > 0 then
    return 1, "failures"
  end
  return 0, nil
end

local function rounded(x)
  return math.floor(x * 10000 + 0.5) / 10000
end

-- Logs llm_backend_state_changed when the backend's state is not the one seen last, which the
-- carry map keeps ("llm-state:<backend>" = "<state> <reason>") so that a reload does not log
-- it again. A return to ok names the reason of the state it leaves.
local function note_state(backend, state, reason, calls, ratio)
  local key = "llm-state:" .. backend.name
  local carried = core.carry_get(key) or "0"
  local now = state == 0 and "0" or ("%d %s"):format(state, reason)
  if now == carried then
    return
  end
  core.carry_set(key, state ~= 0 and now or nil)
  local before, before_reason = carried:match("^(%d) ?(%S*)$")
  before = math.tointeger(tonumber(before)) or 0
  if before == state then
    return -- the same state for another reason: not a change
  end
  local log = state == 0 and hk.log.info or hk.log.warn
  log("llm_backend_state_changed", {
    message = ("model backend %s is %s"):format(backend.name, STATE_NAMES[state]),
    backend = backend.name, from = STATE_NAMES[before] or "ok", to = STATE_NAMES[state],
    reason = state == 0 and (before_reason ~= "" and before_reason or nil) or reason,
    error_ratio = rounded(ratio), window_calls = rounded(calls), failures = failures_of(backend),
  })
end

--- Keeps hancock_llm_backend_state{backend} and hancock_llm_backend_error_ratio{backend}
--- current, every opts.interval_ms (1000): the state is 2 while the backend cools down; 1 when
--- opts.probe(name) — its active health probe's status — is not "ok", when its error ratio over
--- the window is at least HANCOCK_LLM_DEGRADED_ERROR_RATIO with HANCOCK_LLM_DEGRADED_MIN_CALLS
--- calls or more in it, or when its last call failed; 0 otherwise. Each change of state is
--- logged once (llm_backend_state_changed). Call it while the scripts load (scripts/health.lua
--- does): it runs once per process, in the background, the gauges' only writer.
function llm.watch_state(opts)
  local interval_ms = opts.interval_ms or 1000
  hk.spawn(function()
    while true do
      local now = now_ms()
      for _, backend in ipairs { primary, fallback } do
        local labels = { backend = backend.name }
        local calls, errors = window_of(backend.name, now)
        local ratio = calls > 0 and errors / calls or 0
        error_ratio:set(labels, ratio)
        local state, reason = judge(backend, opts.probe and opts.probe(backend.name), calls, ratio)
        backend_state:set(labels, state)
        note_state(backend, state, reason, calls, ratio)
      end
      hk.sleep(interval_ms)
    end
  end)
end

-- ---- one call to one backend ---------------------------------------------------------------

local function request_options(backend, protocol, request, call_timeout_ms, call)
  local headers = { ["Content-Type"] = "application/json", Accept = "application/json" }
  if backend.api_key then
    headers.Authorization = "Bearer " .. backend.api_key
  end
  -- The backend's parent is this call's own span (a child of the request's span), not the
  -- caller's: its spans then hang under Hancock's in the trace.
  local scope = call.scope
  if scope and scope.trace_id then
    headers.traceparent = ("00-%s-%s-%s"):format(scope.trace_id, call.span_id, scope.trace_flags or "01")
  end
  return {
    method = "POST",
    url = protocol.url(backend),
    headers = headers,
    body = json.encode(protocol.payload(request)),
    timeout_ms = call_timeout_ms,
    connect_timeout_ms = math.min(connect_timeout_ms, call_timeout_ms),
    max_bytes = MAX_RESPONSE_BYTES,
  }
end

-- The answer from a whole (not streamed) body, or nil and a failure.
local function parse_body(protocol, body)
  local doc = json.decode(body)
  if type(doc) ~= "table" then
    return nil, malformed()
  end
  return protocol.parse(doc)
end

-- Sends `request` (its model set) to `backend`; returns a result or nil, failure. With
-- on_delta the call is streamed and answer pieces go to on_delta as they arrive.
local function complete(backend, request, mode, call_timeout_ms, on_delta)
  local protocol = protocols[backend.protocol]
  local ticket <close> = ticket_for(backend)
  local refusal = ticket and admit(ticket)
  if refusal then
    local scope = scopes[coroutine.running()]
    if scope then
      scope.retry_after, scope.error_type = 1, refusal.error_type
    end
    return nil, refusal
  end
  local call <close> = begin_call(backend, request.model, mode, on_delta ~= nil)
  call.ticket = ticket
  local opts = request_options(backend, protocol, request, call_timeout_ms, call)
  local stream
  if on_delta then
    stream = stream_parser(function(text)
      on_piece(call)
      on_delta(text)
    end)
    opts.headers.Accept = backend.protocol == "ollama" and "application/x-ndjson" or "text/event-stream"
    opts.on_chunk = function(bytes)
      on_bytes(call)
      stream.feed(bytes)
    end
  end
  local labels = { model = request.model, operation = mode }
  local response, message, kind = hk.metrics.time(response_time, labels, hk.http.request, opts)
  local wall = core.monotonic() - call.started
  local result, err
  if response == nil then
    err = transport_failure(message, kind)
    err.retryable = err.retryable and not (stream and stream.delivered())
  elseif response.status < 200 or response.status > 299 then
    err = http_failure(response.status)
  elseif stream then
    result, err = stream.finish()
  else
    result, err = parse_body(protocol, response.body)
  end
  if result and (type(result.text) ~= "string" or not result.text:find("%S")) then
    result, err = nil, empty_answer()
    empty_answers:inc({ mode = mode, backend = backend.name })
  end
  note_outcome(backend, result == nil and err or nil)
  if result == nil then
    record_failure(call, err, wall)
    return nil, err
  end
  count_tokens(request.model, result.usage)
  record_success(call, result, wall)
  return { text = result.text, usage = result.usage, model = request.model }
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

-- ---- per request: gateway overhead and the request_completed event --------------------------

-- What a request's calls add to its request_completed log line, by request id, until that line
-- is written (bounded: entries of requests whose line never comes are dropped in bulk).
local summaries, summary_count = {}, 0
local MAX_SUMMARIES = 4096
-- The trace of each request tracked, by request id, until its request_completed line: every
-- line logged for the request (its handler's, its calls', their watchers') gets its trace_id.
local traces, trace_count = {}, 0

local function ms(seconds)
  return seconds and math.floor(seconds * 1000 * 100 + 0.5) / 100 or nil
end

local Scope = {
  __close = function(scope)
    if scope.closed then
      return
    end
    scope.closed = true
    scopes[scope.co] = nil
    if scope.calls == 0 then
      return
    end
    local overhead = math.max(0, core.monotonic() - scope.started - scope.backend_seconds)
    gateway_overhead:observe({ endpoint = scope.endpoint }, overhead)
    if summary_count >= MAX_SUMMARIES then
      summaries, summary_count = {}, 0
    end
    summaries[scope.id] = {
      llm_backend = scope.backend, llm_model = scope.model, llm_calls = scope.calls,
      llm_backend_ms = ms(scope.backend_seconds), gateway_overhead_ms = ms(overhead),
      -- (not "*_tokens": the log redacts keys that look like secrets, "token" among them)
      llm_ttft_ms = ms(scope.ttft), llm_usage_input = scope.input_tokens,
      llm_usage_output = scope.output_tokens, llm_finish_reason = scope.finish_reason,
      llm_cost = scope.cost, llm_currency = scope.cost and prices.currency or nil,
      llm_prompt_version = scope.prompt_version,
      llm_error_type = scope.error_type,
    }
    summary_count = summary_count + 1
  end,
}

--- Accounts the model calls made while serving `req` (call it as the handler starts, in the
--- handler's coroutine; `local scope <close> = llm.track(req)`): when the scope closes, the
--- request's time not spent waiting on a backend goes to hancock_gateway_overhead_seconds
--- {endpoint}, and its per-request figures (backend, model, tokens, time to first token,
--- overhead) to its request_completed log line.
--- The scope's `retry_after` is set (seconds) when a call was refused for want of a slot, for
--- the response's Retry-After header.
function llm.track(req)
  local co = coroutine.running()
  local trace, parent, flags = trace_of(req)
  local scope = setmetatable({
    id = req.id, endpoint = req.endpoint, started = core.monotonic(), backend_seconds = 0,
    calls = 0, co = co, trace_id = trace, parent_span_id = parent, trace_flags = flags,
    span_id = new_span_id(),
  }, Scope)
  scopes[co] = scope
  if trace_count >= MAX_SUMMARIES then
    traces, trace_count = {}, 0
  end
  traces[req.id] = { trace_id = trace, span_id = scope.span_id, parent_span_id = parent }
  trace_count = trace_count + 1
  return scope
end

hk.on_log(function(ev)
  local id = ev.request_id
  local trace = trace_count > 0 and id and traces[id]
  if trace then
    ev.trace_id = ev.trace_id or trace.trace_id
  end
  if ev.event ~= "request_completed" then
    return
  end
  if trace then
    traces[id] = nil
    trace_count = trace_count - 1
    ev.span_id, ev.parent_span_id = trace.span_id, trace.parent_span_id
  end
  local summary = summary_count > 0 and summaries[id]
  if summary then
    summaries[id] = nil
    summary_count = summary_count - 1
    for key, value in pairs(summary) do
      ev[key] = value
    end
  end
end)

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
--- Every attempt is timed in hancock_model_response_time_seconds{model, operation = mode} and
--- the gen_ai_* histograms (docs/llm-observability.md).
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
  local request = {
    model = args.model or mode.model,
    messages = with_system_prompt(mode, args.messages),
    temperature = args.temperature or mode.temperature,
    max_tokens = args.max_tokens or mode.max_tokens,
    stream = args.on_delta ~= nil,
  }
  local call_timeout_ms = args.timeout_ms or timeout_ms
  local result, err
  if fallback and in_cooldown(primary) then
    err = failure("model backend cooling down", 503, true, "cooldown")
  else
    result, err = complete(primary, request, name, call_timeout_ms, args.on_delta)
    if result then
      return result
    end
    log_failure(primary, request.model, name, err)
  end
  if not (fallback and err.retryable) then
    return nil, err.message, err.status
  end
  local from_model = request.model
  request.model = fallback_model(from_model)
  hk.log.warn("llm_fallback", { from = primary.name, from_model = from_model, to = fallback.name,
                                model = request.model, operation = name, reason = err.message })
  local reason = err.error_type or "other"
  result, err = complete(fallback, request, name, call_timeout_ms, args.on_delta)
  fallbacks:inc({ from = primary.name, to = fallback.name, reason = reason, outcome = result and "ok" or "failed" })
  if result then
    return result
  end
  log_failure(fallback, request.model, name, err)
  return nil, err.message, err.status
end

-- ---- model residency (Ollama's /api/ps) -----------------------------------------------------

-- One poll: the models loaded now, with their sizes; those gone since the last poll drop to 0.
local function poll_residency(backend, poll_ms, known)
  local response = hk.http.request {
    url = base_of(backend.base_url) .. "/api/ps", timeout_ms = poll_ms,
    connect_timeout_ms = math.min(connect_timeout_ms, poll_ms), max_bytes = 1024 * 1024,
  }
  local doc = response and response.status == 200 and json.decode(response.body)
  if type(doc) ~= "table" or type(doc.models) ~= "table" then
    return known -- unknown now: keep what was last seen rather than guess
  end
  local now = {}
  for _, m in ipairs(doc.models) do
    local name = type(m) == "table" and (m.name or m.model)
    if type(name) == "string" and name ~= "" and #name <= 128 then
      local labels = { model = name }
      now[name] = true
      residency.loaded:set(labels, 1)
      for family, field in pairs { size = "size", vram = "size_vram", context = "context_length" } do
        local value = math.tointeger(m[field])
        if value and value >= 0 then
          residency[family]:set(labels, value)
        end
      end
    end
  end
  for name in pairs(known) do
    if not now[name] then
      residency.loaded:set({ model = name }, 0)
    end
  end
  return now
end

--- Polls Ollama's GET /api/ps every opts.interval_ms (each poll at most opts.timeout_ms) into
--- hancock_llm_model_loaded, _size_bytes, _vram_bytes and _context_length {model}, when a
--- backend a call may go to is Ollama. Call it while the scripts load (scripts/health.lua
--- does, on the health checks' interval): it runs once per process, in the background.
function llm.watch_residency(opts)
  local interval_ms, poll_timeout_ms = opts.interval_ms or 30000, opts.timeout_ms or 5000
  for _, backend in ipairs { primary, fallback } do
    if backend.name == "ollama" then
      hk.spawn(function()
        local known = {}
        while true do
          known = poll_residency(backend, poll_timeout_ms, known)
          hk.sleep(interval_ms)
        end
      end)
    end
  end
end

return llm
