-- hancock.dashboard: the Grafana dashboard for Hancock's metrics, printed by
-- `hancock dashboard` (monitoring/grafana_dashboard.json). The core's metrics get the
-- original ten panels and rows for latency, the model backend, rate limiting, health and
-- reloads; families the scripts register through hk.metrics.* get a panel each. The JSON is
-- indented with sorted keys, so regenerating an unchanged dashboard changes nothing.

local json = require("hancock").json

local M = {}

local DATASOURCE = { type = "prometheus", uid = "${datasource}" }

-- Families that have panels of their own below; script families other than these get a panel
-- in the "Script metrics" row.
local COVERED = {
  hancock_health_check_status = true,
  hancock_health_check_latency_seconds = true,
  hancock_health_check_runs_total = true,
  hancock_health_check_critical = true,
  hancock_health_status = true,
}
-- hancock.llm's families (docs/llm-observability.md): the LLM rows below.
for _, name in ipairs {
  "gen_ai_client_operation_duration_seconds", "gen_ai_server_time_to_first_token_seconds",
  "gen_ai_server_time_per_output_token_seconds", "gen_ai_client_token_usage",
  "hancock_gateway_overhead_seconds", "hancock_llm_load_duration_seconds",
  "hancock_llm_prefill_duration_seconds", "hancock_llm_decode_duration_seconds",
  "hancock_llm_prefill_tokens_per_second", "hancock_llm_decode_tokens_per_second",
  "hancock_llm_cold_starts_total", "hancock_llm_finish_reasons_total",
  "hancock_llm_requests_in_flight", "hancock_llm_requests_hanging", "hancock_llm_streams_stalled",
  "hancock_llm_hangs_total", "hancock_llm_stalls_total", "hancock_llm_requests_queued",
  "hancock_llm_queue_wait_seconds", "hancock_llm_admission_refused_total",
  "hancock_llm_cost_total", "hancock_llm_unpriced_calls_total", "hancock_llm_compute_seconds_total",
  "hancock_llm_fallbacks_total", "hancock_llm_empty_answers_total", "hancock_llm_prompt_info",
  "hancock_llm_model_loaded", "hancock_llm_model_size_bytes", "hancock_llm_model_vram_bytes",
  "hancock_llm_model_context_length", "hancock_llm_backend_state", "hancock_llm_backend_error_ratio",
} do
  COVERED[name] = true
end

local function target(expr, legend, ref)
  return { expr = expr, legendFormat = legend, refId = ref or "A", datasource = DATASOURCE }
end

local function timeseries(title, unit, targets, w)
  return {
    type = "timeseries",
    title = title,
    datasource = DATASOURCE,
    fieldConfig = { defaults = { unit = unit }, overrides = json.array() },
    targets = targets,
    w = w or 12,
    h = 8,
  }
end

local function stat(title, unit, expr)
  return {
    type = "stat",
    title = title,
    datasource = DATASOURCE,
    fieldConfig = { defaults = { unit = unit }, overrides = json.array() },
    options = { reduceOptions = { calcs = { "lastNotNull" }, fields = "", values = false } },
    targets = { target(expr, title) },
    w = 6,
    h = 4,
  }
end

local function row(title)
  return { type = "row", title = title, collapsed = false, panels = json.array(), w = 24, h = 1 }
end

local function quantiles(metric, by, legend)
  local targets = {}
  for i, q in ipairs { 0.5, 0.95, 0.99 } do
    targets[i] = target(
      ("histogram_quantile(%s, sum by (le, %s) (rate(%s_bucket[5m])))"):format(q, by, metric),
      ("p%d %s"):format(math.floor(q * 100 + 0.5), legend), string.char(64 + i))
  end
  return targets
end

-- One quantile of a histogram, by `by`.
local function quantile(q, metric, by, legend, ref)
  return target(("histogram_quantile(%s, sum by (le, %s) (rate(%s_bucket[5m])))"):format(q, by, metric),
                legend, ref)
end

-- The rows for hancock.llm's families, when the scripts use it.
local function llm_panels(panels)
  local families = require("hancock").metrics._registered()
  if families.gen_ai_client_operation_duration_seconds == nil then
    return
  end
  local LOADED = "(max by (model) (hancock_llm_model_loaded) == 1)"
  local MODEL = "gen_ai_provider_name, gen_ai_request_model"
  local BY_MODEL = "{{gen_ai_provider_name}} {{gen_ai_request_model}}"
  local rows = {
    row("LLM latency (OpenTelemetry GenAI)"),
    timeseries("Time to First Token", "s",
      quantiles("gen_ai_server_time_to_first_token_seconds", MODEL, BY_MODEL)),
    timeseries("Time per Output Token", "s",
      quantiles("gen_ai_server_time_per_output_token_seconds", MODEL, BY_MODEL)),
    timeseries("Model Call Duration", "s",
      quantiles("gen_ai_client_operation_duration_seconds", MODEL, BY_MODEL)),
    timeseries("Model Call Errors by Type", "reqps", {
      target('sum by (gen_ai_provider_name, error_type) '
        .. '(rate(gen_ai_client_operation_duration_seconds_count{error_type!=""}[5m]))',
        "{{gen_ai_provider_name}} {{error_type}}"),
    }),
    timeseries("Tokens per Second", "short", {
      target("sum by (gen_ai_provider_name, gen_ai_token_type) (rate(gen_ai_client_token_usage_sum[5m]))",
        "{{gen_ai_provider_name}} {{gen_ai_token_type}}"),
    }),
    timeseries("Gateway Overhead", "s", quantiles("hancock_gateway_overhead_seconds", "endpoint", "{{endpoint}}")),

    row("Ollama phases"),
    timeseries("Load, Prefill, Decode (p95)", "s", {
      quantile(0.95, "hancock_llm_load_duration_seconds", "model", "load {{model}}", "A"),
      quantile(0.95, "hancock_llm_prefill_duration_seconds", "model", "prefill {{model}}", "B"),
      quantile(0.95, "hancock_llm_decode_duration_seconds", "model", "decode {{model}}", "C"),
    }),
    timeseries("Tokens per Second (median)", "short", {
      quantile(0.5, "hancock_llm_prefill_tokens_per_second", "model", "prefill {{model}}", "A"),
      quantile(0.5, "hancock_llm_decode_tokens_per_second", "model", "decode {{model}}", "B"),
    }),
    timeseries("Cold Starts", "short", {
      target("sum by (model) (increase(hancock_llm_cold_starts_total[5m]))", "{{model}}"),
    }),
    timeseries("Finish Reasons", "reqps", {
      target("sum by (mode, reason) (rate(hancock_llm_finish_reasons_total[5m]))", "{{mode}} {{reason}}"),
    }),
    timeseries("Resident Models: Size and VRAM", "bytes", {
      target("max by (model) (hancock_llm_model_size_bytes) and on (model) " .. LOADED, "size {{model}}", "A"),
      target("max by (model) (hancock_llm_model_vram_bytes) and on (model) " .. LOADED, "vram {{model}}", "B"),
    }),

    row("LLM backends and quality"),
    timeseries("Backend State (0 ok, 1 degraded, 2 cooldown)", "short", {
      target("max by (backend) (hancock_llm_backend_state)", "{{backend}}"),
    }),
    timeseries("Backend Error Ratio (calls failed over HANCOCK_LLM_ERROR_WINDOW_MS)", "percentunit", {
      target("max by (backend) (hancock_llm_backend_error_ratio)", "{{backend}}"),
    }),
    timeseries("Fallbacks", "reqps", {
      target("sum by (from, to, reason, outcome) (rate(hancock_llm_fallbacks_total[5m]))",
        "{{from}} → {{to}} {{reason}} {{outcome}}"),
    }),
    timeseries("Empty Answers", "reqps", {
      target("sum by (mode, backend) (rate(hancock_llm_empty_answers_total[5m]))", "{{mode}} {{backend}}"),
    }),
    timeseries("Prompt Versions Loaded", "short", {
      target("max by (mode, prompt_version) (hancock_llm_prompt_info) == 1", "{{mode}} {{prompt_version}}"),
    }),

    row("LLM cost"),
    timeseries("Cost per Hour by Model and Mode", "short", {
      target("sum by (model, mode, currency) (increase(hancock_llm_cost_total[1h]))",
        "{{model}} {{mode}} ({{currency}})"),
    }),
    timeseries("Unpriced Calls", "reqps", {
      target("sum by (model, reason) (rate(hancock_llm_unpriced_calls_total[5m]))", "{{model}} {{reason}}"),
    }),
    timeseries("Local Model Compute (busy seconds per second)", "short", {
      target("sum by (model) (rate(hancock_llm_compute_seconds_total[5m]))", "{{model}}"),
    }),

    row("LLM calls in flight"),
    timeseries("In Flight, Queued, Hanging, Stalled", "short", {
      target("sum by (backend) (hancock_llm_requests_in_flight)", "in flight {{backend}}", "A"),
      target("sum by (backend) (hancock_llm_requests_queued)", "queued {{backend}}", "B"),
      target("sum by (backend) (hancock_llm_requests_hanging)", "hanging {{backend}}", "C"),
      target("sum by (backend) (hancock_llm_streams_stalled)", "stalled {{backend}}", "D"),
    }),
    timeseries("Queue Wait", "s", quantiles("hancock_llm_queue_wait_seconds", "backend", "{{backend}}")),
    timeseries("Admission Refusals", "reqps", {
      target("sum by (backend, reason) (rate(hancock_llm_admission_refused_total[5m]))",
        "{{backend}} {{reason}}"),
    }),
    timeseries("Hangs and Stalls", "short", {
      target("sum by (backend) (increase(hancock_llm_hangs_total[5m]))", "hangs {{backend}}", "A"),
      target("sum by (backend) (increase(hancock_llm_stalls_total[5m]))", "stalls {{backend}}", "B"),
    }),
  }
  table.move(rows, 1, #rows, #panels + 1, panels)
end

local function script_panels(panels)
  local families = require("hancock").metrics._registered()
  local names = {}
  for name in pairs(families) do
    if not COVERED[name] then
      names[#names + 1] = name
    end
  end
  table.sort(names)
  if #names == 0 then
    return
  end
  panels[#panels + 1] = row("Script metrics")
  for _, name in ipairs(names) do
    local family = families[name]
    local by = table.concat(family.labels, ", ")
    local legend = {}
    for i, label in ipairs(family.labels) do
      legend[i] = "{{" .. label .. "}}"
    end
    legend = #legend > 0 and table.concat(legend, " ") or name
    local grouping = by ~= "" and ("sum by (%s) "):format(by) or "sum "
    local panel
    if family.type == "counter" then
      panel = timeseries(name, "ops", { target(("%s(rate(%s[2m]))"):format(grouping, name), legend) })
    elseif family.type == "histogram" then
      panel = timeseries(name, "s", quantiles(name, by ~= "" and by or "job", legend))
    else
      panel = timeseries(name, "short", { target(("%s(%s)"):format(grouping, name), legend) })
    end
    panel.description = family.help
    panels[#panels + 1] = panel
  end
end

local function layout(panels)
  local x, y, row_height = 0, 0, 0
  for i, panel in ipairs(panels) do
    if x + panel.w > 24 or panel.type == "row" then
      x, y, row_height = 0, y + row_height, 0
    end
    panel.gridPos = { x = x, y = y, w = panel.w, h = panel.h }
    panel.id = i
    x = x + panel.w
    if panel.h > row_height then
      row_height = panel.h
    end
    panel.w, panel.h = nil, nil
  end
end

--- The dashboard as a Lua table.
function M.build()
  local panels = {
    timeseries("Request Rate", "reqps", { target("rate(hancock_requests_total[2m])", "requests/s") }),
    timeseries("Error Rate %", "percent", {
      target("rate(hancock_errors_total[2m]) / rate(hancock_requests_total[2m]) * 100", "errors %"),
    }),
    timeseries("Requests by Endpoint", "reqps", {
      target("sum by (endpoint) (rate(hancock_requests_by_endpoint[2m]))", "{{endpoint}}"),
    }),
    timeseries("Requests by Mode", "reqps", {
      target("sum by (mode) (rate(hancock_requests_by_mode[2m]))", "{{mode}}"),
    }),
    timeseries("Memory Usage", "bytes", { target("hancock_memory_usage_bytes", "{{instance}}") }),
    timeseries("Active Connections", "short", { target("hancock_active_connections", "{{instance}}") }),
    stat("Total Requests", "short", "sum(hancock_requests_total)"),
    stat("Total Errors", "short", "sum(hancock_errors_total)"),
    stat("Current Memory", "bytes", "sum(hancock_memory_usage_bytes)"),
    stat("Active Connections", "short", "sum(hancock_active_connections)"),

    row("Latency"),
    timeseries("Request Latency Percentiles", "s",
      quantiles("hancock_request_duration_seconds", "endpoint", "{{endpoint}}"), 24),

    row("Model backend"),
    timeseries("Model Response Time", "s",
      quantiles("hancock_model_response_time_seconds", "model", "{{model}}"), 24),

    row("Rate limiting"),
    timeseries("Rate-Limit Hits", "reqps", {
      target("sum by (endpoint) (rate(hancock_rate_limit_exceeded_total[2m]))", "{{endpoint}}"),
    }, 24),

    row("Health"),
    timeseries("Overall Health (/health: 0 ok, 1 degraded, 2 error)", "short", {
      target("max by (instance) (hancock_health_status)", "{{instance}}"),
    }, 24),
    timeseries("Health Check Status (0 ok, 1 degraded, 2 error)", "short", {
      target("max by (check) (hancock_health_check_status)", "{{check}}"),
    }),
    timeseries("Health Check Latency", "s", {
      target("max by (check) (hancock_health_check_latency_seconds)", "{{check}}"),
    }),

    row("Reloads"),
    timeseries("Script Reloads", "short", {
      target("sum by (result) (increase(hancock_reloads_total[5m]))", "{{result}}"),
    }),
    timeseries("Last Reload Successful", "short", {
      target("min(hancock_config_last_reload_successful)", "successful", "A"),
      target("max(hancock_script_generation)", "generation", "B"),
    }),
  }
  llm_panels(panels)
  script_panels(panels)
  layout(panels)
  return {
    title = "Hancock",
    uid = "hancock",
    tags = { "hancock" },
    timezone = "browser",
    refresh = "30s",
    schemaVersion = 39,
    version = 1,
    editable = true,
    time = { from = "now-1h", to = "now" },
    templating = {
      list = {
        {
          name = "datasource",
          label = "Prometheus",
          type = "datasource",
          query = "prometheus",
          current = {},
          hide = 0,
          refresh = 1,
          options = json.array(),
        },
      },
    },
    panels = panels,
  }
end

-- Indented JSON with sorted keys; scalars and strings are encoded by hk.json.
local function encode(value, indent, out)
  if type(value) ~= "table" then
    out[#out + 1] = json.encode(value)
    return
  end
  local inner = indent .. "  "
  local is_array = json.is_array(value) or (next(value) ~= nil and #value > 0)
  if next(value) == nil then
    out[#out + 1] = json.is_array(value) and "[]" or "{}"
    return
  end
  if is_array then
    out[#out + 1] = "[\n"
    for i, item in ipairs(value) do
      out[#out + 1] = inner
      encode(item, inner, out)
      out[#out + 1] = i < #value and ",\n" or "\n"
    end
    out[#out + 1] = indent .. "]"
    return
  end
  local keys = {}
  for key in pairs(value) do
    keys[#keys + 1] = key
  end
  table.sort(keys)
  out[#out + 1] = "{\n"
  for i, key in ipairs(keys) do
    out[#out + 1] = inner .. json.encode(key) .. ": "
    encode(value[key], inner, out)
    out[#out + 1] = i < #keys and ",\n" or "\n"
  end
  out[#out + 1] = indent .. "}"
end

--- The dashboard as indented JSON.
function M.render()
  local out = {}
  encode(M.build(), "", out)
  return table.concat(out) .. "\n"
end

return M
