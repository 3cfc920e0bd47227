-- Alerting thresholds. `hancock rules` renders these as Prometheus rule groups
-- (monitoring/alerting_rules.yaml); change a number here, then regenerate:
--   build/hancock rules --scripts scripts > monitoring/alerting_rules.yaml
-- `{threshold}` in expr, summary and description is replaced by the threshold.
local hk = require "hancock"

local MiB = 1024 * 1024
local GiB = 1024 * MiB

-- Every alert here has a runbook section in docs/monitoring.md (anchor = lowercased name);
-- `hancock rules` makes the path a link under HANCOCK_RUNBOOK_BASE_URL when that is set.
local function alert(name, opts)
  opts.runbook_url = "docs/monitoring.md#" .. name:lower()
  return hk.alert(name, opts) -- a tail call, so a bad option is reported at the caller's line
end

-- Requests ------------------------------------------------------------------------------------

-- What counts as an error: every response with status >= 400 (a 4xx is often a client
-- misconfigured by an operator, a 429 an abusive one), except those of the health routes and
-- /metrics, which report on the service rather than serve it: a 503 from /health is a failing
-- dependency, paged by the health alerts below, and probes and scrapes must not dilute the ratio.
local SERVED = 'endpoint!~"/health|/health/.+|/metrics"'
local BY_INSTANCE = "sum without (method, endpoint, status_code)"

alert("HancockHighErrorRate", {
  group = "hancock.requests",
  threshold = 0.05, -- fraction of requests answered with status >= 400 (health and /metrics aside)
  expr = BY_INSTANCE .. ' (rate(hancock_request_duration_seconds_count{status_code=~"[45]..", '
    .. SERVED .. "}[5m])) / " .. BY_INSTANCE .. " (rate(hancock_request_duration_seconds_count{"
    .. SERVED .. "}[5m])) > {threshold}",
  ["for"] = "5m",
  severity = "warning",
  summary = "Hancock error rate is high",
  description = "More than {threshold} of requests to {{ $labels.instance }} failed over 5 minutes "
    .. "(current ratio {{ $value | humanizePercentage }}).",
})

alert("HancockNoTraffic", {
  group = "hancock.requests",
  expr = "absent(hancock_requests_total) or rate(hancock_requests_total[5m]) == 0",
  ["for"] = "5m",
  severity = "critical",
  summary = "Hancock receives no requests",
  description = "No requests reached Hancock for 5 minutes, or its request counter is not "
    .. "scraped at all.",
})

-- Resources -----------------------------------------------------------------------------------

alert("HancockMemoryGrowth", {
  group = "hancock.resources",
  threshold = 50 * MiB, -- bytes per minute of resident-set growth
  expr = "deriv(hancock_memory_usage_bytes[10m]) * 60 > {threshold}",
  ["for"] = "5m",
  severity = "warning",
  summary = "Hancock memory keeps growing",
  description = "Resident memory of {{ $labels.instance }} grew faster than {threshold} bytes "
    .. "per minute over 10 minutes ({{ $value | humanize1024 }}B/min).",
})

alert("HancockHighMemoryUsage", {
  group = "hancock.resources",
  threshold = 1 * GiB, -- bytes of resident memory
  expr = "hancock_memory_usage_bytes > {threshold}",
  ["for"] = "5m",
  severity = "critical",
  summary = "Hancock memory usage is high",
  description = "{{ $labels.instance }} uses {{ $value | humanize1024 }}B of resident memory "
    .. "(threshold {threshold} bytes).",
})

-- Service -------------------------------------------------------------------------------------

-- One replica of a fleet that Prometheus discovers but cannot scrape: `up` is Prometheus' own
-- series, one per target, so the alert names the instance that is down and no other.
alert("HancockInstanceDown", {
  group = "hancock.service",
  expr = 'up{job="hancock"} == 0',
  ["for"] = "1m",
  severity = "critical",
  summary = "A Hancock instance is down",
  description = "Prometheus has failed to scrape {{ $labels.instance }} (job {{ $labels.job }}) "
    .. "for 1 minute: the process is gone, hung or unreachable.",
})

-- A check in error pages only when it takes the service down: it is critical and /health is an
-- error (a critical backend whose fallback answers is not). Any other check in error is a
-- warning. hancock_health_check_status and hancock_health_status: 0 ok, 1 degraded, 2 error.
local CHECK_IN_ERROR = "max by (instance, check) (hancock_health_check_status) >= {threshold}"
local SERVICE_DOWN = "(" .. CHECK_IN_ERROR .. ")"
  .. " and on (instance, check) (max by (instance, check) (hancock_health_check_critical) == 1)"
  .. " and on (instance) (max by (instance) (hancock_health_status) >= {threshold})"

alert("HancockHealthCheckFailing", {
  group = "hancock.service",
  threshold = 2,
  expr = SERVICE_DOWN,
  ["for"] = "2m",
  severity = "critical",
  summary = "A critical Hancock health check is failing",
  description = "Critical health check {{ $labels.check }} on {{ $labels.instance }} has reported "
    .. "an error for 2 minutes and /health answers 503.",
})

alert("HancockHealthCheckDegraded", {
  group = "hancock.service",
  threshold = 2,
  expr = CHECK_IN_ERROR .. " unless on (instance, check) (" .. SERVICE_DOWN .. ")",
  ["for"] = "5m",
  severity = "warning",
  summary = "A Hancock health check is failing; the service still answers",
  description = "Health check {{ $labels.check }} on {{ $labels.instance }} has reported an "
    .. "error for 5 minutes; it is not critical, or another backend covers it.",
})

alert("HancockScriptReloadFailed", {
  group = "hancock.service",
  expr = "hancock_config_last_reload_successful == 0",
  ["for"] = "1m",
  severity = "warning",
  summary = "Hancock script reload failed",
  description = "The last script reload on {{ $labels.instance }} failed; the previous scripts "
    .. "are still serving. See the reload_failed log event.",
})

-- The model backend ------------------------------------------------------------------------------

-- Exact, not estimated: the gauges count the calls in flight right now that have run longer than
-- HANCOCK_LLM_HANG_MS, or streams silent for HANCOCK_LLM_STALL_MS (docs/llm-observability.md), so
-- the alert fires while such a call runs and resolves when it ends. The delay is the threshold
-- itself; no `for` on top of it.
alert("HancockLLMRequestHanging", {
  group = "hancock.llm",
  expr = "max by (instance, backend) (hancock_llm_requests_hanging) > 0",
  ["for"] = "0s",
  severity = "warning",
  summary = "A model call is hanging",
  description = "{{ $value }} call(s) to the {{ $labels.backend }} backend on {{ $labels.instance }} "
    .. "have been in flight for longer than HANCOCK_LLM_HANG_MS; see the llm_request_hanging log event.",
})

alert("HancockLLMStreamStalled", {
  group = "hancock.llm",
  expr = "max by (instance, backend) (hancock_llm_streams_stalled) > 0",
  ["for"] = "0s",
  severity = "warning",
  summary = "A streamed model answer has stalled",
  description = "{{ $value }} streamed call(s) to the {{ $labels.backend }} backend on "
    .. "{{ $labels.instance }} have received nothing for HANCOCK_LLM_STALL_MS; see the "
    .. "llm_stream_stalled log event.",
})

-- A model Ollama has loaded with part of it outside GPU memory (size_vram < size, from
-- /api/ps): it answers several times slower. On a machine without a GPU every model is "spilled";
-- silence the alert there.
alert("HancockLLMModelSpilledToCPU", {
  group = "hancock.llm",
  expr = "max by (instance, model) (hancock_llm_model_size_bytes - hancock_llm_model_vram_bytes) > 0 "
    .. "and on (instance, model) max by (instance, model) (hancock_llm_model_loaded) == 1",
  ["for"] = "5m",
  severity = "warning",
  summary = "An Ollama model runs partly on the CPU",
  description = "Model {{ $labels.model }} behind {{ $labels.instance }} has {{ $value | humanize1024 }}B "
    .. "outside GPU memory (size_vram < size in /api/ps) for 5 minutes.",
})
