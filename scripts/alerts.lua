-- Alerting thresholds. `hancock rules` renders these as Prometheus rule groups
-- (monitoring/alerting_rules.yaml); change a number here, then regenerate:
--   build/hancock rules --scripts scripts > monitoring/alerting_rules.yaml
-- Each alert has a runbook section in docs/monitoring.md (anchor = lowercased name).
-- `{threshold}` in expr, summary and description is replaced by the threshold.
local hk = require "hancock"

local MiB = 1024 * 1024
local GiB = 1024 * MiB

-- Requests ------------------------------------------------------------------------------------

hk.alert("HancockHighErrorRate", {
  group = "hancock.requests",
  threshold = 0.05, -- fraction of requests answered with status >= 400
  expr = "rate(hancock_errors_total[5m]) / rate(hancock_requests_total[5m]) > {threshold}",
  ["for"] = "5m",
  severity = "warning",
  summary = "Hancock error rate is high",
  description = "More than {threshold} of requests to {{ $labels.instance }} failed over 5 minutes "
    .. "(current ratio {{ $value | humanizePercentage }}).",
})

hk.alert("HancockNoTraffic", {
  group = "hancock.requests",
  expr = "absent(hancock_requests_total) or rate(hancock_requests_total[5m]) == 0",
  ["for"] = "5m",
  severity = "critical",
  summary = "Hancock receives no requests",
  description = "No requests reached Hancock for 5 minutes, or its request counter is not "
    .. "scraped at all.",
})

-- Resources -----------------------------------------------------------------------------------

hk.alert("HancockMemoryGrowth", {
  group = "hancock.resources",
  threshold = 50 * MiB, -- bytes per minute of resident-set growth
  expr = "deriv(hancock_memory_usage_bytes[10m]) * 60 > {threshold}",
  ["for"] = "5m",
  severity = "warning",
  summary = "Hancock memory keeps growing",
  description = "Resident memory of {{ $labels.instance }} grew faster than {threshold} bytes "
    .. "per minute over 10 minutes ({{ $value | humanize1024 }}B/min).",
})

hk.alert("HancockHighMemoryUsage", {
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

hk.alert("HancockHealthCheckFailing", {
  group = "hancock.service",
  threshold = 2, -- hancock_health_check_status: 0 ok, 1 degraded, 2 error
  expr = "max by (instance, check) (hancock_health_check_status) >= {threshold}",
  ["for"] = "2m",
  severity = "critical",
  summary = "A Hancock health check is failing",
  description = "Health check {{ $labels.check }} on {{ $labels.instance }} has reported an "
    .. "error for 2 minutes.",
})

hk.alert("HancockScriptReloadFailed", {
  group = "hancock.service",
  expr = "hancock_config_last_reload_successful == 0",
  ["for"] = "1m",
  severity = "warning",
  summary = "Hancock script reload failed",
  description = "The last script reload on {{ $labels.instance }} failed; the previous scripts "
    .. "are still serving. See the reload_failed log event.",
})
