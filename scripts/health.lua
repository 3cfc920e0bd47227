-- The service's deep health checks, answered by GET /health from a cache (docs/health.md):
-- the LLM backend, memory, disk and Prometheus. Only a failing critical check makes the
-- service "error" (503); the others make it "degraded".
local hk = require "hancock"

local backend = hk.env("HANCOCK_LLM_BACKEND", "ollama"):lower()

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

-- Ollama answers and has the model pulled ("llama3.1" is listed as "llama3.1:latest").
local ollama_model = hk.env("OLLAMA_MODEL", "llama3.1:8b")
if not ollama_model:find(":", 1, true) then
  ollama_model = ollama_model .. ":latest"
end
hk.health.check("ollama", {
  kind = "http",
  url = base(hk.env("OLLAMA_BASE_URL", "http://localhost:11434")) .. "/api/tags",
  expect_status = 200,
  expect_json = { path = "models.*.name", contains = ollama_model },
  critical = backend == "ollama",
  interval_ms = every.interval_ms,
  timeout_ms = every.timeout_ms,
})

-- NVIDIA NIM answers with our key, when it is the backend.
if backend == "nvidia" then
  local key = hk.env("NVIDIA_API_KEY")
  hk.health.check("nim", {
    kind = "http",
    url = base(hk.env("NVIDIA_BASE_URL", "https://integrate.api.nvidia.com")) .. "/v1/models",
    headers = key and { Authorization = "Bearer " .. key } or nil,
    expect_status = 200,
    critical = true,
    interval_ms = every.interval_ms,
    timeout_ms = every.timeout_ms,
  })
end

hk.health.check("memory", { kind = "memory", interval_ms = every.interval_ms })
hk.health.threshold("memory", { warn_below_mb = 512 })

hk.health.check("disk", { kind = "disk", path = "/", interval_ms = every.interval_ms })
hk.health.threshold("disk", { warn_below_mb = 1024 })

hk.health.check("prometheus", {
  kind = "http",
  url = (hk.env("PROMETHEUS_URL", "http://localhost:9090"):gsub("/+$", "")) .. "/-/healthy",
  expect_status = 200,
  critical = false,
  interval_ms = every.interval_ms,
  timeout_ms = every.timeout_ms,
})
