-- The service's deep health checks, answered by GET /health from a cache (docs/health.md):
-- the LLM backends a call may go to, memory, disk, and Prometheus and Alertmanager when their
-- URLs are set. Only a failing critical dependency makes the service "error" (503); the
-- others make it "degraded".
local hk = require "hancock"
local llm = require "hancock.llm"

local function milliseconds(name, default)
  local value = math.tointeger(tonumber(hk.env(name, default)))
  assert(value and value > 0, name .. " must be a positive integer of milliseconds")
  return value
end

local every = { -- how often each check probes, and how long one probe may take
  interval_ms = milliseconds("HANCOCK_HEALTH_INTERVAL_MS", "30000"),
  timeout_ms = milliseconds("HANCOCK_HEALTH_TIMEOUT_MS", "5000"),
}

-- A base URL without its trailing "/" (nor "/v1", which the LLM client also accepts).
local function base(url)
  return (url:gsub("/+$", ""):gsub("/v1$", ""))
end

-- The LLM backends -------------------------------------------------------------------------

-- Ollama lists a model pulled without a tag ("llama3.1") as "llama3.1:latest".
local function tagged(model)
  return model:find(":", 1, true) and model or model .. ":latest"
end

-- Ollama answers and has the model pulled; without the coder model only /v1/code fails, so
-- that is "degraded".
local function ollama_check(backend)
  local model, coder = tagged(backend.model), tagged(backend.coder_model)
  return {
    kind = "http",
    url = base(backend.base_url) .. "/api/tags",
    expect_status = 200,
    expect_json = { path = "models.*.name", contains = model },
    validate = function(_, doc)
      for _, pulled in ipairs(doc.models) do
        if type(pulled) == "table" and pulled.name == coder then
          return true
        end
      end
      return "degraded", ("coder model %s not pulled (/v1/code fails): ollama pull %s"):format(coder, coder)
    end,
  }
end

-- An OpenAI-compatible API (NVIDIA NIM, OpenAI) answers its model list with our key.
local function api_check(backend)
  return {
    kind = "http",
    url = base(backend.base_url) .. "/v1/models",
    headers = backend.api_key and { Authorization = "Bearer " .. backend.api_key } or nil,
    expect_status = 200,
  }
end

local CHECK_NAMES = { ollama = "ollama", nvidia = "nim", openai = "openai" }

-- Every backend a call may go to, and no other, is a critical check of the group "llm": the
-- service answers while one of them does (the active backend, or OpenAI as its fallback when
-- OPENAI_API_KEY is set), so only all of them down makes it an error.
for _, backend in ipairs(llm.backends()) do
  local opts = backend.name == "ollama" and ollama_check(backend) or api_check(backend)
  opts.critical = true
  opts.group = "llm"
  opts.interval_ms = every.interval_ms
  opts.timeout_ms = every.timeout_ms
  hk.health.check(CHECK_NAMES[backend.name], opts)
end

-- Which models Ollama has loaded, their size and how much of it is in VRAM (GET /api/ps), on
-- the same interval: hancock_llm_model_* and the HancockLLMModelSpilledToCPU alert. Not a
-- check: a model not loaded yet is not a failure.
llm.watch_residency(every)

-- Each backend's state (hancock_llm_backend_state: ok, degraded, cooldown) from its check above
-- and the outcomes of its calls (its last one, its error ratio over a window), once a second. A
-- check that has not probed yet says nothing of the backend (docs/health.md: "not checked yet").
llm.watch_state {
  probe = function(backend)
    local check = hk.health.report().checks[CHECK_NAMES[backend]]
    if check == nil or check.detail == "not checked yet" then
      return nil
    end
    return check.status
  end,
}

-- The machine --------------------------------------------------------------------------------

hk.health.check("memory", { kind = "memory", interval_ms = every.interval_ms })
hk.health.threshold("memory", { warn_below_mb = 512 })

hk.health.check("disk", { kind = "disk", path = "/", interval_ms = every.interval_ms })
hk.health.threshold("disk", { warn_below_mb = 1024 })

-- The monitoring stack, when its URLs are set (deploy/docker-compose.yml and make stack set
-- them; a Hancock without them has no such checks rather than one probing localhost).
for _, service in ipairs { { "prometheus", "PROMETHEUS_URL" }, { "alertmanager", "ALERTMANAGER_URL" } } do
  local name, variable = service[1], service[2]
  local url = hk.env(variable)
  if url then
    hk.health.check(name, {
      kind = "http",
      url = (url:gsub("/+$", "")) .. "/-/healthy",
      expect_status = 200,
      critical = false,
      interval_ms = every.interval_ms,
      timeout_ms = every.timeout_ms,
    })
  end
end
