-- hancock.alerting: the hk.alert rules evaluated inside the host, with no Prometheus. It owns
-- the alert state machine (inactive → pending → firing → resolved, as Prometheus' rule manager
-- runs it), annotation templates, the evaluation loop on the control thread, what GET /alerts
-- and the status page read, delivery to Alertmanager, and `hancock test-alerts` (promtool's
-- test files run through the same evaluator).
--
-- Samples come from the core's history (core.history_*, host/hk_history.c): one sample of every
-- series the rules read, every interval, kept as long as the longest range a rule reads. The
-- history and the alerts' state outlive a reload (the history is the server's; the state is
-- left in the carry map), so a reload neither restarts a `for:` nor forgets a firing alert.
-- Entry point: lua/hancock.lua attaches it with `hk.alerts = require("hancock.alerting")(hk)`.

local core = require "hancock.core"
local promql = require "hancock.promql"
local rules_module = require "hancock.rules"

local json = core.json

local M = {}

local function array(t) return json.array(t or {}) end

local RESOLVED_RETENTION_MS = 15 * 60 * 1000 -- Prometheus keeps resolved alerts this long
local CARRY_STATE = "alerts.state"
local CARRY_ALERTS = "alerts.json"
local CARRY_STATUS = "status.json"
local CARRY_TICK = "alerts.tick" -- monotonic ms of the last evaluation, whichever generation ran it
local CARRY_MAX = 16 * 1024 - 64 -- what one carry value holds (HK_CARRY_MAX_VALUE)
local TREND_SPAN_MS, TREND_POINTS = 10 * 60 * 1000, 60

-- ---- numbers and templates as Prometheus prints them -------------------------------------------

local function is_nan(v) return v ~= v end

-- Go's %.4g (C's, but Go writes +Inf and NaN).
local function g4(v)
  if is_nan(v) then return "NaN" end
  if v == math.huge then return "+Inf" end
  if v == -math.huge then return "-Inf" end
  return ("%.4g"):format(v)
end

--- A float as Go's fmt %v prints it (what {{ $value }} gives): shortest round-trip digits, in
--- exponent form only below 1e-4 or from 1e21 up.
local function go_float(v)
  if is_nan(v) then return "NaN" end
  if v == math.huge then return "+Inf" end
  if v == -math.huge then return "-Inf" end
  if v == 0 then return (1 / v < 0) and "-0" or "0" end
  local digits
  for d = 1, 17 do
    digits = ("%." .. (d - 1) .. "e"):format(v)
    if tonumber(digits) == v then break end
  end
  local sign, mantissa, exponent = digits:match("^(-?)(%d[%.%d]*)e([-+]%d+)$")
  exponent = tonumber(exponent)
  local figures = mantissa:gsub("%.", "")
  if exponent < -4 or exponent >= 21 then
    local m = figures:sub(1, 1) .. (#figures > 1 and ("." .. figures:sub(2)) or "")
    return ("%s%se%s%02d"):format(sign, m, exponent < 0 and "-" or "+", math.abs(exponent))
  end
  if exponent < 0 then
    return sign .. "0." .. ("0"):rep(-exponent - 1) .. figures
  end
  if #figures <= exponent + 1 then
    return sign .. figures .. ("0"):rep(exponent + 1 - #figures)
  end
  return sign .. figures:sub(1, exponent + 1) .. "." .. figures:sub(exponent + 2)
end

local function humanize(v)
  if v == 0 or is_nan(v) or v == math.huge or v == -math.huge then return g4(v) end
  local prefix = ""
  if math.abs(v) >= 1 then
    for _, p in ipairs { "k", "M", "G", "T", "P", "E", "Z", "Y" } do
      if math.abs(v) < 1000 then break end
      prefix, v = p, v / 1000
    end
  else
    for _, p in ipairs { "m", "u", "n", "p", "f", "a", "z", "y" } do
      if math.abs(v) >= 1 then break end
      prefix, v = p, v * 1000
    end
  end
  return g4(v) .. prefix
end

local function humanize1024(v)
  if math.abs(v) <= 1 or is_nan(v) or v == math.huge or v == -math.huge then return g4(v) end
  local prefix = ""
  for _, p in ipairs { "ki", "Mi", "Gi", "Ti", "Pi", "Ei", "Zi", "Yi" } do
    if math.abs(v) < 1024 then break end
    prefix, v = p, v / 1024
  end
  return g4(v) .. prefix
end

local function humanize_duration(v)
  if is_nan(v) or v == math.huge or v == -math.huge then return g4(v) end
  if math.abs(v) < 1 then
    if v == 0 then return "0s" end
    if math.abs(v) >= 1e-3 then return g4(v * 1e3) .. "ms" end
    if math.abs(v) >= 1e-6 then return g4(v * 1e6) .. "us" end
    return g4(v * 1e9) .. "ns"
  end
  local sign = v < 0 and "-" or ""
  v = math.abs(v)
  local seconds = math.floor(v) % 60
  local minutes = math.floor(v / 60) % 60
  local hours = math.floor(v / 3600) % 24
  local days = math.floor(v / 86400)
  if days ~= 0 then return ("%s%dd %dh %dm %ds"):format(sign, days, hours, minutes, seconds) end
  if hours ~= 0 then return ("%s%dh %dm %ds"):format(sign, hours, minutes, seconds) end
  if minutes ~= 0 then return ("%s%dm %ds"):format(sign, minutes, seconds) end
  return ("%s%.4gs"):format(sign, v)
end

local TEMPLATE_FUNCTIONS = {
  humanize = humanize,
  humanize1024 = humanize1024,
  humanizePercentage = function(v) return g4(v * 100) .. "%" end,
  humanizeDuration = humanize_duration,
}

-- One {{ … }} action: $labels.name, $value, $labels, a function applied ("fn $value"), and
-- pipes ("$value | fn"). Anything else is an error, shown the way Prometheus shows one.
local function template_action(action, labels, value)
  local stages = {}
  for stage in (action .. "|"):gmatch("%s*(.-)%s*|") do stages[#stages + 1] = stage end
  local current
  for i, stage in ipairs(stages) do
    local fn, arg = stage:match("^(%a[%w_]*)%s+(.+)$")
    local term = fn and arg or stage
    local result
    if term == "$value" then
      result = value
    elseif term:match("^%$labels%.[%a_][%w_]*$") then
      result = labels[term:sub(9)] or "<no value>"
    elseif term:match("^%$labels%[?\"") then
      result = labels[term:match('"(.-)"')] or "<no value>"
    elseif term == "." or term == "" then
      result = current
    elseif i > 1 and TEMPLATE_FUNCTIONS[term] then
      fn, result = term, current
    else
      error(("unsupported template action {{ %s }}"):format(action), 0)
    end
    if fn then
      local f = TEMPLATE_FUNCTIONS[fn]
      if f == nil then error(("function %q not defined"):format(fn), 0) end
      local n = tonumber(result)
      if n == nil then error(("%s: %q is not a number"):format(fn, tostring(result)), 0) end
      result = f(n)
    end
    current = result
  end
  if type(current) == "number" then return go_float(current) end
  return tostring(current)
end

--- Expands an annotation as Prometheus does for an alert with these labels and value; an error
--- gives "<error expanding template: …>" rather than failing the rule.
local function expand(text, labels, value)
  local ok, result = pcall(function()
    return (text:gsub("{{%-?%s*(.-)%s*%-?}}", function(action)
      return template_action(action, labels, value)
    end))
  end)
  if ok then return result end
  return "<error expanding template: " .. tostring(result) .. ">"
end

-- ---- the state machine ------------------------------------------------------------------------

-- Alertmanager's fingerprint: FNV-1a 64 over the sorted labels, each name and value followed
-- by 0xff.
local function fingerprint(labels)
  local names = {}
  for name in pairs(labels) do names[#names + 1] = name end
  table.sort(names)
  local h = -3750763034362895579 -- 14695981039346656037 as a signed 64-bit integer
  local function add(s)
    for i = 1, #s do
      h = (h ~ s:byte(i)) * 1099511628211
    end
    h = (h ~ 0xff) * 1099511628211
  end
  for _, name in ipairs(names) do
    add(name)
    add(labels[name])
  end
  return ("%016x"):format(h)
end

local function compile(rule)
  local tree, err = promql.parse(rule.expr)
  local hold = promql.duration_ms(rule["for"]) or 0
  return { rule = rule, tree = tree, error = err, hold_ms = hold, active = {} }
end

--- Rules ready to evaluate: { rule, tree | nil, error, hold_ms, active = {fp -> alert} }.
local function compile_all(rules)
  local compiled = {}
  for i, rule in ipairs(rules) do compiled[i] = compile(rule) end
  return compiled
end

--- One evaluation of one rule at t_ms (monotonic) / wall (seconds since the epoch), as
--- Prometheus' AlertingRule.Eval: returns the transitions { {alert, from, to}, ... } or nil
--- and the evaluation's error. extra_labels: labels a target would add (instance, job).
local function eval_rule(c, storage, t_ms, wall)
  if c.tree == nil then return nil, c.error end
  local value, err = promql.eval(c.tree, storage, t_ms)
  if value == nil then return nil, err end
  local samples = value.samples
  if value.type == "scalar" then
    samples = { { labels = {}, v = value.v } }
  elseif value.type ~= "vector" then
    return nil, "the expression is not an instant vector"
  end
  local seen, transitions = {}, {}
  for _, s in ipairs(samples) do
    local sample_labels = {}
    for k, v in pairs(s.labels) do
      if k ~= "__name__" then sample_labels[k] = v end
    end
    local labels = {}
    for k, v in pairs(sample_labels) do labels[k] = v end
    for k, v in pairs(c.rule.labels or {}) do labels[k] = expand(v, sample_labels, s.v) end
    labels.alertname = c.rule.name
    local fp = fingerprint(labels)
    if seen[fp] then
      return nil, "vector contains metrics with the same labelset after applying alert labels"
    end
    seen[fp] = true
    local annotations = {}
    for k, v in pairs(c.rule.annotations or {}) do annotations[k] = expand(v, sample_labels, s.v) end
    local alert = c.active[fp]
    if alert and alert.state ~= "inactive" then
      alert.value, alert.annotations, alert.labels = s.v, annotations, labels
    else
      alert = { fingerprint = fp, labels = labels, annotations = annotations, value = s.v,
                state = "pending", active_at = t_ms, active_wall = wall, updated_wall = wall }
      c.active[fp] = alert
      transitions[#transitions + 1] = { alert = alert, from = "inactive", to = "pending" }
    end
    alert.updated_wall = wall
  end
  for fp, alert in pairs(c.active) do
    if not seen[fp] then
      if alert.state == "pending" or (alert.resolved_at and t_ms - alert.resolved_at > RESOLVED_RETENTION_MS) then
        c.active[fp] = nil
        if alert.state == "pending" then
          transitions[#transitions + 1] = { alert = alert, from = "pending", to = "inactive" }
        end
      elseif alert.state ~= "inactive" then
        alert.state = "inactive"
        alert.resolved_at, alert.resolved_wall = t_ms, wall
        transitions[#transitions + 1] = { alert = alert, from = "firing", to = "resolved" }
      end
    elseif alert.state == "pending" and t_ms - alert.active_at >= c.hold_ms then
      alert.state = "firing"
      alert.fired_at, alert.fired_wall = t_ms, wall
      transitions[#transitions + 1] = { alert = alert, from = "pending", to = "firing" }
    end
  end
  return transitions
end

-- ---- promtool's test files through the same evaluator (`hancock test-alerts`) -----------------

-- promtool's expanding notation: "0+10x5" "1x3" "_" "_x2" "stale" "1 2 3".
local function expand_values(text)
  local out = {}
  for token in text:gmatch("%S+") do
    local a, sign, b, n = token:match("^([-+]?[%d.]+[eE]?[-+]?%d*)([+-])([%d.]+[eE]?[-+]?%d*)x(%d+)$")
    if a then
      local start, step = tonumber(a), tonumber(b) * (sign == "-" and -1 or 1)
      for i = 0, tonumber(n) do out[#out + 1] = start + i * step end
    elseif token:match("^_x%d+$") then
      for _ = 1, tonumber(token:sub(3)) do out[#out + 1] = false end
    elseif token:match("^[-+]?[%d.]+[eE]?[-+]?%d*x%d+$") then
      local value, count = token:match("^(.-)x(%d+)$")
      for _ = 0, tonumber(count) do out[#out + 1] = tonumber(value) end
    elseif token == "_" then
      out[#out + 1] = false
    elseif token == "stale" then
      out[#out + 1] = "stale"
    elseif tonumber(token) or token == "Inf" or token == "+Inf" or token == "-Inf" or token == "NaN" then
      local v = tonumber(token)
      if v == nil then v = (token == "NaN") and (0 / 0) or (token:sub(1, 1) == "-" and -math.huge or math.huge) end
      out[#out + 1] = v
    else
      error(("values %q: cannot read %q"):format(text, token), 0)
    end
  end
  return out
end

local function series_storage(input, interval_ms)
  local by_name = {}
  for _, item in ipairs(input or {}) do
    local tree, err = promql.parse(item.series)
    if tree == nil or tree.kind ~= "selector" or tree.name == nil then
      error(("input series %q: %s"):format(tostring(item.series), err or "not a series"), 0)
    end
    local labels = { __name__ = tree.name }
    for _, m in ipairs(tree.matchers) do
      if m.op ~= "=" then error(("input series %q: labels must be given with ="):format(item.series), 0) end
      labels[m.name] = m.value
    end
    local stream = { labels = labels, t = {}, v = {}, stale = {} }
    for i, v in ipairs(expand_values(tostring(item.values or ""))) do
      if v ~= false then
        stream.t[#stream.t + 1] = (i - 1) * interval_ms
        if v == "stale" then
          stream.v[#stream.v + 1] = 0
          stream.stale[#stream.t] = true
        else
          stream.v[#stream.v + 1] = v
        end
      end
    end
    by_name[tree.name] = by_name[tree.name] or {}
    table.insert(by_name[tree.name], stream)
  end
  for name, streams in pairs(by_name) do by_name[name] = promql.sort_streams(streams) end
  return { sorted = true, select = function(name) return by_name[name] or {} end }
end

local function without_alertname(labels)
  local out = {}
  for k, v in pairs(labels) do
    if k ~= "alertname" then out[k] = v end
  end
  return out
end

--- Runs a promtool test file (as JSON: the YAML document converted) through the in-process
--- evaluator with the scripts' rules. Returns JSON: { tests = { { results = { {eval_time,
--- alertname, alerts = { {labels, annotations} } } } } } }, firing alerts only, as promtool
--- compares them.
function M.replay(input)
  local doc = json.decode(input)
  if type(doc) ~= "table" or type(doc.tests) ~= "table" then
    error("test-alerts: expected a JSON document with a tests list (promtool's test file format)", 0)
  end
  local default_interval = promql.duration_ms(doc.evaluation_interval or "1m")
  if default_interval == nil or default_interval <= 0 then
    error("test-alerts: evaluation_interval is not a duration", 0)
  end
  local out = { tests = array() }
  for index, test in ipairs(doc.tests) do
    local interval = promql.duration_ms(test.interval or doc.evaluation_interval or "1m")
    if interval == nil or interval <= 0 then
      error(("test-alerts: test %d: interval is not a duration"):format(index), 0)
    end
    local storage = series_storage(test.input_series, interval)
    local compiled = compile_all(rules_module.rules())
    for _, c in ipairs(compiled) do
      if c.tree == nil then error(("test-alerts: rule %s: %s"):format(c.rule.name, c.error), 0) end
    end
    local wanted, last = {}, 0
    for case_index, case in ipairs(test.alert_rule_test or {}) do
      local at = promql.duration_ms(case.eval_time)
      if at == nil then
        error(("test-alerts: test %d: eval_time %q is not a duration"):format(index, tostring(case.eval_time)), 0)
      end
      wanted[#wanted + 1] = { at = at, case = case, index = case_index }
      if at > last then last = at end
    end
    local results = {}
    local t = 0
    while t <= last do
      for _, c in ipairs(compiled) do
        local _, err = eval_rule(c, storage, t, t / 1000)
        if err then
          error(("test-alerts: test %d: rule %s at %ds: %s"):format(index, c.rule.name, t // 1000, err), 0)
        end
      end
      for _, w in ipairs(wanted) do
        if w.at == t then
          local alerts = {}
          for _, c in ipairs(compiled) do
            if c.rule.name == w.case.alertname then
              for _, alert in pairs(c.active) do
                if alert.state == "firing" then
                  alerts[#alerts + 1] = { labels = without_alertname(alert.labels), annotations = alert.annotations }
                end
              end
            end
          end
          results[w.index] = { eval_time = w.case.eval_time, alertname = w.case.alertname, alerts = array(alerts) }
        end
      end
      t = t + default_interval
    end
    -- promtool's promql_expr_test: the expression's samples at eval_time, for comparing the
    -- PromQL engine itself with Prometheus'.
    local exprs = array()
    for _, case in ipairs(test.promql_expr_test or {}) do
      local at = promql.duration_ms(case.eval_time)
      local tree, perr = promql.parse(case.expr)
      if at == nil or tree == nil then
        error(("test-alerts: test %d: expr %q: %s"):format(index, tostring(case.expr), perr or "bad eval_time"), 0)
      end
      local value, eerr = promql.eval(tree, storage, at)
      if value == nil then error(("test-alerts: test %d: expr %q: %s"):format(index, case.expr, eerr), 0) end
      local samples = array()
      if value.type == "scalar" then
        samples[1] = { labels = {}, value = go_float(value.v) }
      else
        for i, sample in ipairs(value.samples) do
          samples[i] = { labels = sample.labels, value = go_float(sample.v) }
        end
      end
      exprs[#exprs + 1] = { expr = case.expr, eval_time = case.eval_time, samples = samples }
    end
    out.tests[index] = { results = array(results), exprs = exprs }
  end
  return json.encode(out)
end

-- ---- the host's own evaluation loop -------------------------------------------------------------

local function iso(wall)
  local whole = math.floor(wall)
  return os.date("!%Y-%m-%dT%H:%M:%S", whole) .. (".%03dZ"):format(math.floor((wall - whole) * 1000))
end

local function env_duration(hk, name, default)
  local text = hk.env(name)
  if text == nil then return promql.duration_ms(default) end
  local ms = promql.duration_ms(text)
  if ms == nil or ms <= 0 then
    hk.log.warn("alerts_config_invalid", {
      message = ("%s=%q is not a duration such as 15s; using %s"):format(name, text, default),
      variable = name,
    })
    return promql.duration_ms(default)
  end
  return ms
end

-- What the status page reads besides the rules' own series.
local STATUS_NAMES = {
  "hancock_requests_total", "hancock_request_duration_seconds_bucket",
  "hancock_request_duration_seconds_count", "hancock_requests_by_mode",
  "hancock_script_generation", "hancock_config_last_reload_successful",
  "hancock_config_last_reload_success_timestamp_seconds", "hancock_reloads_total",
}
local SERVED = 'endpoint!~"/health|/health/.+|/metrics|/status|/status.json|/alerts"'
local STATUS_QUERIES = {
  requests_per_second = "sum(rate(hancock_requests_total[1m]))",
  error_ratio = "sum(rate(hancock_request_duration_seconds_count{status_code=~\"[45]..\", " .. SERVED
    .. "}[1m])) / sum(rate(hancock_request_duration_seconds_count{" .. SERVED .. "}[1m]))",
  p50 = "histogram_quantile(0.5, sum by (le) (rate(hancock_request_duration_seconds_bucket{" .. SERVED .. "}[1m])))",
  p90 = "histogram_quantile(0.9, sum by (le) (rate(hancock_request_duration_seconds_bucket{" .. SERVED .. "}[1m])))",
  p99 = "histogram_quantile(0.99, sum by (le) (rate(hancock_request_duration_seconds_bucket{" .. SERVED .. "}[1m])))",
  modes = "sum by (mode) (rate(hancock_requests_by_mode[1m]))",
  generation = "max(hancock_script_generation)",
  reload_ok = "max(hancock_config_last_reload_successful)",
  reload_time = "max(hancock_config_last_reload_success_timestamp_seconds)",
}
local STATUS_TREES = {}
for key, text in pairs(STATUS_QUERIES) do
  STATUS_TREES[key] = assert(promql.parse(text))
end

local function finite(v)
  if v == nil or is_nan(v) or v == math.huge or v == -math.huge then return nil end
  return v
end

local function scalar_of(value)
  if value == nil then return nil end
  if value.type == "scalar" then return finite(value.v) end
  if #value.samples == 0 then return nil end
  return finite(value.samples[1].v)
end

-- The shape Alertmanager's GET /api/v2/alerts answers, plus the evaluator's own state.
local function gettable(alert, rule_state_wall, resend_ms, interval_ms)
  local state = alert.state == "inactive" and "resolved" or alert.state
  local ends
  if state == "resolved" then
    ends = alert.resolved_wall
  else
    ends = rule_state_wall + 4 * math.max(resend_ms, interval_ms) / 1000
  end
  return {
    labels = alert.labels,
    annotations = alert.annotations,
    startsAt = iso(alert.active_wall),
    endsAt = iso(ends),
    updatedAt = iso(alert.updated_wall or rule_state_wall),
    fingerprint = alert.fingerprint,
    generatorURL = alert.generator_url or "",
    receivers = array(),
    status = { state = state, silencedBy = array(), inhibitedBy = array() },
    value = go_float(alert.value or 0),
  }
end

local STATE_ORDER = { firing = 1, pending = 2, inactive = 3 }

local function sorted_alerts(compiled)
  local list = {}
  for _, c in ipairs(compiled) do
    for _, alert in pairs(c.active) do list[#list + 1] = alert end
  end
  table.sort(list, function(a, b)
    if a.state ~= b.state then return STATE_ORDER[a.state] < STATE_ORDER[b.state] end
    if a.labels.alertname ~= b.labels.alertname then return a.labels.alertname < b.labels.alertname end
    return a.fingerprint < b.fingerprint
  end)
  return list
end

-- Encodes items into one JSON array of at most `limit` bytes: the first ones that fit, and how
-- many were left out.
local function bounded_array(items, limit)
  local parts, size, left_out = {}, 2, 0
  for _, item in ipairs(items) do
    local text = json.encode(item)
    if size + #text + 1 > limit then
      left_out = left_out + 1
    else
      parts[#parts + 1] = text
      size = size + #text + 1
    end
  end
  return "[" .. table.concat(parts, ",") .. "]", left_out
end

--- Attaches the evaluator to a Lua state's hk: the routes, and the loop (a background task,
--- so it runs in the control copy only).
function M.attach(hk)
  local alerts = {}

  local function carry_get_json(key)
    local text = core.carry_get(key)
    if text == nil then return nil end
    local ok, value = pcall(json.decode, text)
    if ok then return value end
    return nil
  end

  -- ---- routes, present in every Hancock ----------------------------------------------------


  hk.route("GET", "/alerts", function(req)
    local text = core.carry_get(CARRY_ALERTS) or "[]"
    local wanted = req.query and req.query.state
    if wanted == nil or wanted == "" then
      wanted = "firing,resolved"
    end
    local states = {}
    for state in wanted:gmatch("[^,]+") do states[state] = true end
    if states.all then states = { firing = true, pending = true, resolved = true } end
    for state in pairs(states) do
      if state ~= "firing" and state ~= "pending" and state ~= "resolved" then
        return hk.error(400, ("state must be firing, pending, resolved or all (comma-separated), not %q"):format(state))
      end
    end
    local list = json.decode(text)
    local out = {}
    for _, alert in ipairs(list) do
      if states[alert.status.state] then out[#out + 1] = alert end
    end
    local headers = { ["Cache-Control"] = "no-store", ["Content-Type"] = "application/json" }
    local truncated = core.carry_get(CARRY_ALERTS .. ".left_out")
    if truncated then headers["X-Hancock-Alerts-Left-Out"] = truncated end
    if #out == 0 then return 200, "[]", headers end
    return 200, out, headers
  end)

  -- ---- the loop, in the control copy only (load-time tasks run there) ------------------------

  local function start()
    local enabled = (hk.env("HANCOCK_ALERTS", "on")):lower()
    if enabled ~= "on" and enabled ~= "off" then
      hk.log.warn("alerts_config_invalid", {
        message = ("HANCOCK_ALERTS must be on or off, not %q: on"):format(enabled),
      })
    end
    if enabled == "off" then
      hk.log.info("alerts_disabled", { message = "HANCOCK_ALERTS=off: rules are not evaluated in the host" })
      return
    end
    local interval_ms = env_duration(hk, "HANCOCK_ALERTS_INTERVAL", "15s")
    local resend_ms = env_duration(hk, "HANCOCK_ALERTS_RESEND", "1m")
    local instance = hk.env("HANCOCK_ALERTS_INSTANCE") or core.hostname()
    local job = hk.env("HANCOCK_ALERTS_JOB", "hancock")
    local alertmanager = hk.env("ALERTMANAGER_URL")
    local external = hk.env("HANCOCK_ALERTS_EXTERNAL_URL")
    if alertmanager then alertmanager = alertmanager:gsub("/+$", "") end
    -- Where a Prometheus evaluates the same generated rules and notifies the same Alertmanager
    -- (the compose stack), the host's own copies would arrive as second alerts under another
    -- instance label: HANCOCK_ALERTS_NOTIFY=off keeps /alerts and /status and sends nothing.
    local notify = (hk.env("HANCOCK_ALERTS_NOTIFY", "on")):lower()
    if notify ~= "on" and notify ~= "off" then
      hk.log.warn("alerts_config_invalid", {
        message = ("HANCOCK_ALERTS_NOTIFY must be on or off, not %q: on"):format(notify),
      })
    elseif notify == "off" then
      alertmanager = nil
    end

    local compiled = compile_all(rules_module.rules())
    local names, seen_names, longest = {}, {}, 60 * 1000
    local function want(name)
      if not seen_names[name] then
        seen_names[name] = true
        names[#names + 1] = name
      end
    end
    for _, c in ipairs(compiled) do
      if c.tree == nil then
        hk.log.warn("alert_rule_unsupported", {
          message = ("rule %s is not evaluated in the host: %s (Prometheus still evaluates it)")
            :format(c.rule.name, c.error),
          alertname = c.rule.name,
        })
      else
        local rule_names, range = promql.names(c.tree)
        for _, name in ipairs(rule_names) do want(name) end
        if range > longest then longest = range end
      end
    end
    for _, name in ipairs(STATUS_NAMES) do want(name) end
    local retention = longest + 2 * interval_ms

    -- What the previous generation left: the alerts and when each rule's were last sent.
    local saved = carry_get_json(CARRY_STATE) or {}
    for _, c in ipairs(compiled) do
      local previous = saved[c.rule.name]
      if type(previous) == "table" and previous.expr == c.rule.expr and type(previous.active) == "table" then
        for fp, alert in pairs(previous.active) do c.active[fp] = alert end
      end
    end

    -- The host's own families (host/hk_host_metrics.c): not a share of the scripts' cap.
    local firing_gauge = hk.metrics.get("hancock_alerts_firing")
    local pending_gauge = hk.metrics.get("hancock_alerts_pending")
    local evaluations = hk.metrics.get("hancock_alert_evaluations_total")
    local notifications = hk.metrics.get("hancock_alert_notifications_total")

    local function target_labels(labels)
      local out = {}
      for k, v in pairs(labels) do out[k] = v end
      -- As a scrape would: the target's labels win, the series' own move aside.
      if out.instance ~= nil then out.exported_instance = out.instance end
      if out.job ~= nil then out.exported_job = out.job end
      out.instance, out.job = instance, job
      return out
    end

    local now_ms = 0
    -- Every rule and status query of a tick reads the same history: each name is copied out
    -- of it (and sorted) once per tick, not once per expression.
    local selected = {}
    local storage = {
      sorted = true,
      select = function(name)
        local streams = selected[name]
        if streams then return streams end
        if name == "up" then
          streams = { { labels = { __name__ = "up", instance = instance, job = job }, t = { now_ms }, v = { 1 } } }
        else
          streams = core.history_select(name)
          for _, stream in ipairs(streams) do stream.labels = target_labels(stream.labels) end
          streams = promql.sort_streams(streams)
        end
        selected[name] = streams
        return streams
      end,
    }

    local rule_errors = {}
    local last_sent_ms = nil
    local sending = false

    local function log_transition(t)
      local alert = t.alert
      local fields = {
        alertname = alert.labels.alertname,
        severity = alert.labels.severity,
        labels = alert.labels,
        value = finite(alert.value),
        fingerprint = alert.fingerprint,
        summary = alert.annotations.summary,
      }
      if t.to == "firing" then
        fields.message = ("alert %s is firing"):format(alert.labels.alertname)
        hk.log[alert.labels.severity == "critical" and "error" or "warn"]("alert_firing", fields)
      elseif t.to == "resolved" then
        fields.message = ("alert %s resolved"):format(alert.labels.alertname)
        hk.log.info("alert_resolved", fields)
      elseif t.to == "pending" then
        fields.message = ("alert %s is pending"):format(alert.labels.alertname)
        hk.log.info("alert_pending", fields)
      else
        fields.message = ("alert %s no longer pending"):format(alert.labels.alertname)
        hk.log.info("alert_inactive", fields)
      end
    end

    local function deliver(batch)
      sending = true
      local body = json.encode(batch)
      local response, message = hk.http.request {
        method = "POST", url = alertmanager .. "/api/v2/alerts",
        headers = { ["Content-Type"] = "application/json" }, body = body,
        timeout_ms = 10000, connect_timeout_ms = 5000, max_bytes = 64 * 1024,
      }
      sending = false
      if response and response.status >= 200 and response.status < 300 then
        notifications:inc({ "ok" })
        return true
      end
      notifications:inc({ "error" })
      hk.log.warn("alert_notification_failed", {
        message = ("Alertmanager did not take %d alert(s): %s"):format(#batch,
          response and ("HTTP " .. response.status) or tostring(message)),
        alerts = #batch,
      })
      return false
    end

    local function publish(wall)
      local list, all = {}, sorted_alerts(compiled)
      for _, alert in ipairs(all) do list[#list + 1] = gettable(alert, wall, resend_ms, interval_ms) end
      local text, left_out = bounded_array(list, CARRY_MAX)
      core.carry_set(CARRY_ALERTS, text)
      core.carry_set(CARRY_ALERTS .. ".left_out", left_out > 0 and tostring(left_out) or nil)
      local state = {}
      for _, c in ipairs(compiled) do
        state[c.rule.name] = { expr = c.rule.expr, active = c.active }
      end
      local state_text = json.encode(state)
      if #state_text <= CARRY_MAX then core.carry_set(CARRY_STATE, state_text) end
    end

    -- The status page's sparklines: request rate and error ratio over the last ten minutes, at
    -- most TREND_POINTS points. Each tick adds its own point (and the first one backfills from
    -- the history), so a tick evaluates two expressions for the trend whatever the interval.
    local trend_step = math.max(interval_ms, TREND_SPAN_MS // TREND_POINTS)
    local trend_points = {}
    local function trend_point(t)
      return { t = t, rps = scalar_of(promql.eval(STATUS_TREES.requests_per_second, storage, t)),
               errors = scalar_of(promql.eval(STATUS_TREES.error_ratio, storage, t)) }
    end
    local function update_trend()
      local last = trend_points[#trend_points]
      if last == nil then
        local history_from = now_ms - (retention - 2 * interval_ms)
        for k = TREND_POINTS - 1, 1, -1 do
          local t = now_ms - k * trend_step
          if t >= history_from then trend_points[#trend_points + 1] = trend_point(t) end
        end
      elseif now_ms - last.t < trend_step - interval_ms // 2 then
        return
      end
      trend_points[#trend_points + 1] = trend_point(now_ms)
      while #trend_points > TREND_POINTS do table.remove(trend_points, 1) end
    end

    local function status_summary(wall, counts)
      local values = {}
      for key, tree in pairs(STATUS_TREES) do
        values[key] = promql.eval(tree, storage, now_ms)
      end
      local modes = array()
      if values.modes then
        for _, s in ipairs(values.modes.samples) do
          modes[#modes + 1] = { mode = s.labels.mode or "", requests_per_second = finite(s.v) or 0 }
        end
        table.sort(modes, function(a, b) return a.requests_per_second > b.requests_per_second end)
      end
      update_trend()
      local trend = {}
      for i, p in ipairs(trend_points) do
        trend[i] = { seconds_ago = (now_ms - p.t) / 1000, requests_per_second = p.rps, error_ratio = p.errors }
      end
      local rules = {}
      for _, c in ipairs(compiled) do
        local state = "inactive"
        for _, alert in pairs(c.active) do
          if alert.state == "firing" then
            state = "firing"
          elseif alert.state == "pending" and state ~= "firing" then
            state = "pending"
          end
        end
        rules[#rules + 1] = { name = c.rule.name, severity = c.rule.labels.severity, state = state,
                              ["for"] = c.rule["for"], error = c.error or rule_errors[c.rule.name] }
      end
      local streams, dropped = core.history_stats()
      local reload_time = scalar_of(values.reload_time)
      local summary = {
        generated_at = iso(wall),
        instance = instance,
        interval_seconds = interval_ms / 1000,
        requests_per_second = scalar_of(values.requests_per_second),
        error_ratio = scalar_of(values.error_ratio),
        latency_seconds = { p50 = scalar_of(values.p50), p90 = scalar_of(values.p90), p99 = scalar_of(values.p99) },
        modes = modes,
        alerts = counts,
        rules = rules,
        generation = scalar_of(values.generation),
        last_reload = {
          successful = scalar_of(values.reload_ok) == 1,
          at = reload_time and iso(reload_time) or nil,
        },
        trend = trend,
        history = { streams = streams, dropped = dropped, retention_seconds = retention / 1000 },
        alertmanager = alertmanager ~= nil,
      }
      local text = json.encode(summary)
      while #text > CARRY_MAX and #trend > 2 do
        table.remove(trend, 1)
        text = json.encode(summary)
      end
      core.carry_set(CARRY_STATUS, text)
    end

    local function tick()
      local recorded, err = core.history_record(names, retention)
      if recorded == nil then
        hk.log.warn("alerts_history_failed", { message = "cannot record the metrics history: " .. tostring(err) })
        return
      end
      now_ms = recorded
      selected = {}
      local wall = core.wall_time()
      local counts = { firing = 0, pending = 0 }
      local per_rule = {}
      local changed = false
      for _, c in ipairs(compiled) do
        if c.tree then
          local transitions, eval_err = eval_rule(c, storage, now_ms, wall)
          if transitions == nil then
            evaluations:inc({ "error" })
            if rule_errors[c.rule.name] ~= eval_err then
              hk.log.warn("alert_rule_failed", {
                message = ("rule %s cannot be evaluated: %s"):format(c.rule.name, eval_err),
                alertname = c.rule.name,
              })
            end
            rule_errors[c.rule.name] = eval_err
          else
            evaluations:inc({ "ok" })
            rule_errors[c.rule.name] = nil
            for _, t in ipairs(transitions) do
              log_transition(t)
              if t.to == "firing" or t.to == "resolved" then changed = true end
            end
          end
        end
        local firing, pending = 0, 0
        for _, alert in pairs(c.active) do
          if alert.state == "firing" then firing = firing + 1 end
          if alert.state == "pending" then pending = pending + 1 end
        end
        local key = { alertname = c.rule.name, severity = c.rule.labels.severity }
        per_rule[#per_rule + 1] = { key, firing, pending }
        counts.firing, counts.pending = counts.firing + firing, counts.pending + pending
      end
      for _, r in ipairs(per_rule) do
        firing_gauge:set(r[1], r[2])
        pending_gauge:set(r[1], r[3])
      end
      publish(wall)
      status_summary(wall, counts)
      if alertmanager and not sending
          and (changed or last_sent_ms == nil or now_ms - last_sent_ms >= resend_ms) then
        local batch = {}
        for _, alert in ipairs(sorted_alerts(compiled)) do
          if alert.state ~= "pending" then
            local g = gettable(alert, wall, resend_ms, interval_ms)
            batch[#batch + 1] = {
              labels = g.labels, annotations = g.annotations, startsAt = g.startsAt, endsAt = g.endsAt,
              generatorURL = external and (external:gsub("/+$", "") .. "/alerts") or nil,
            }
          end
        end
        if #batch > 0 then
          last_sent_ms = now_ms
          hk.spawn(deliver, batch)
        end
      end
    end

    alerts.interval_ms = interval_ms
    -- Evaluations keep their cadence across reloads, as Prometheus' do: a new generation waits
    -- out the interval its predecessor started. Evaluating at once on every reload would add a
    -- sample per reload to the history, so a burst of reloads would fill every range with
    -- points and make each evaluation slower than the last.
    local last_tick = math.tointeger(tonumber(core.carry_get(CARRY_TICK) or ""))
    if last_tick then
      local wait = last_tick + interval_ms - math.floor(core.monotonic() * 1000)
      if wait > 0 then hk.sleep(math.min(wait, interval_ms)) end
    end
    while true do
      core.carry_set(CARRY_TICK, tostring(math.floor(core.monotonic() * 1000)))
      local ok, err = pcall(tick)
      if not ok then
        hk.log.error("alerts_tick_failed", { message = "in-process alert evaluation failed: " .. tostring(err) })
      end
      hk.sleep(interval_ms)
    end
  end

  -- Spawned while the runtime loads, so it runs once every script (and hk.alert) has loaded,
  -- and only in the copy that runs background tasks.
  hk.spawn(start)

  return alerts
end

M.expand = expand
M.go_float = go_float
M.fingerprint = fingerprint

return M
