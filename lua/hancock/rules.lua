-- hancock.rules: alert thresholds defined by the scripts (hk.alert) and their rendering as
-- Prometheus rule groups, printed by `hancock rules`. The YAML is written by hand: every
-- string is double-quoted and escaped, so no value can change the document's structure.
--
-- HANCOCK_RUNBOOK_BASE_URL, read as the rules are rendered, turns relative runbook_url values
-- (paths in this repository, such as docs/monitoring.md#hancocknotraffic) into links.
--
-- For tests, two environment variables rewrite the rules as they are rendered:
--   HANCOCK_RULES_FOR     replaces every rule's `for:` duration (e.g. "1s")
--   HANCOCK_RULES_WINDOW  replaces every range window in the expressions, "[5m]" -> "[10s]"

local core = require "hancock.core"

local M = {}

local alerts = {}   -- name -> definition
local order = {}    -- names in definition order

local DURATION = "^%d+[smhdwy]$"

local function check_string(name, opts, key, pattern)
  local value = opts[key]
  if type(value) ~= "string" or value == "" then
    error(("hk.alert %s: %s must be a non-empty string"):format(name, key), 3)
  end
  if pattern and not value:match(pattern) then
    error(("hk.alert %s: %s %q is not valid"):format(name, key, value), 3)
  end
  -- YAML streams are Unicode: one invalid byte makes Prometheus (and promtool) reject the
  -- whole rules file ("invalid leading UTF-8 octet"). Found by tests/fuzz/fuzz_generators.c.
  if utf8.len(value) == nil then
    error(("hk.alert %s: %s is not valid UTF-8"):format(name, key), 3)
  end
  return value
end

--- Formats a threshold for PromQL: integers without a fraction, others as short as exact.
local function format_number(n)
  if math.type(n) == "integer" then
    return tostring(n)
  end
  if n == math.floor(n) and math.abs(n) < 2^53 then
    return ("%d"):format(n)
  end
  for digits = 14, 17 do
    local text = ("%." .. digits .. "g"):format(n)
    if tonumber(text) == n then
      return text
    end
  end
  return ("%.17g"):format(n)
end

--- Records an alert. opts: group, expr (may contain {threshold}), threshold (number), for
--- (duration such as "5m"), severity, summary, description (both may contain {threshold}),
--- runbook_url (a URL, or a path resolved against HANCOCK_RUNBOOK_BASE_URL; none when not
--- given, rather than a link to a runbook nobody wrote). Defining a name again replaces it.
function M.define(name, opts)
  if type(name) ~= "string" or not name:match("^[A-Za-z_][A-Za-z0-9_]*$") then
    error("hk.alert: name must be an identifier such as HancockHighErrorRate", 2)
  end
  if type(opts) ~= "table" then
    error(("hk.alert %s: expected a table of options"):format(name), 2)
  end
  local threshold = opts.threshold
  if threshold ~= nil and (type(threshold) ~= "number" or threshold ~= threshold
      or threshold == math.huge or threshold == -math.huge) then
    error(("hk.alert %s: threshold must be a finite number"):format(name), 2)
  end
  local def = {
    name = name,
    group = check_string(name, opts, "group", "^[%w_.%-]+$"),
    expr = check_string(name, opts, "expr"),
    threshold = threshold,
    ["for"] = check_string(name, opts, "for", DURATION),
    severity = check_string(name, opts, "severity", "^[%w_%-]+$"),
    summary = check_string(name, opts, "summary"),
    description = check_string(name, opts, "description"),
    runbook_url = opts.runbook_url ~= nil and check_string(name, opts, "runbook_url", "^%S+$") or nil,
  }
  if def.expr:find("{threshold}", 1, true) and threshold == nil then
    error(("hk.alert %s: expr uses {threshold} but no threshold is set"):format(name), 2)
  end
  if alerts[name] == nil then
    order[#order + 1] = name
  end
  alerts[name] = def
  return def
end

--- The definitions in definition order (copies are not made: do not modify).
function M.list()
  local list = {}
  for i, name in ipairs(order) do
    list[i] = alerts[name]
  end
  return list
end

local function substitute(text, def)
  if def.threshold == nil then
    return text
  end
  local value = format_number(def.threshold)
  return (text:gsub("{threshold}", function() return value end))
end

local ESCAPES = { ['"'] = '\\"', ["\\"] = "\\\\", ["\n"] = "\\n", ["\r"] = "\\r", ["\t"] = "\\t" }

-- Characters that are valid UTF-8 but must not appear raw in a double-quoted scalar: the C1
-- controls (not YAML-printable), NEL, LS and PS (YAML parsers fold them as line breaks, so the
-- value would change), the BOM and the noncharacters U+FFFE/U+FFFF. Written as \uXXXX.
local UNPRINTABLE = { "\194[\128-\159]", "\226\128[\168\169]", "\239\187\191", "\239\191[\190\191]" }

--- A YAML double-quoted scalar. Every value passed here is valid UTF-8 (check_string and the
--- overrides' patterns see to it); the check below keeps the document valid if one is not.
local function quote(s)
  if utf8.len(s) == nil then
    error(("hancock rules: %q is not valid UTF-8"):format(s), 0)
  end
  s = s:gsub('[%c"\\]', function(c)
    return ESCAPES[c] or ("\\x%02X"):format(c:byte())
  end)
  for _, pattern in ipairs(UNPRINTABLE) do
    s = s:gsub(pattern, function(c) return ("\\u%04X"):format(utf8.codepoint(c)) end)
  end
  return '"' .. s .. '"'
end

-- A runbook_url as rendered: a relative one (no scheme) under the base URL, when there is one.
local function runbook(url, base)
  if url == nil or base == nil or url:find("^%a[%w+.%-]*:") then
    return url
  end
  return (base:gsub("/+$", "")) .. "/" .. (url:gsub("^/+", ""))
end

local function override(name, pattern, what)
  local value = core.env(name)
  if value == nil or value == "" then
    return nil
  end
  if not value:match(pattern) or utf8.len(value) == nil then
    error(("%s=%q is not %s"):format(name, value, what or "a duration such as 30s or 5m"), 0)
  end
  return value
end

--- The rules as Prometheus would load them, in definition order: each { name, group, expr,
--- ["for"], labels = {severity}, annotations = {summary, description[, runbook_url]} } with the
--- threshold substituted and the test overrides (HANCOCK_RULES_FOR, HANCOCK_RULES_WINDOW)
--- applied. `hancock rules` renders these; the in-process evaluator (hancock.alerting) runs them.
function M.rules()
  local for_override = override("HANCOCK_RULES_FOR", DURATION)
  local window_override = override("HANCOCK_RULES_WINDOW", DURATION)
  local runbook_base = override("HANCOCK_RUNBOOK_BASE_URL", "^%a[%w+.%-]*://%S+$", "a URL such as https://…")
  local rules = {}
  for _, def in ipairs(M.list()) do
    local expr = substitute(def.expr, def)
    if window_override then
      expr = expr:gsub("%[%d+[smhdwy]%]", function() return "[" .. window_override .. "]" end)
    end
    rules[#rules + 1] = {
      name = def.name,
      group = def.group,
      expr = expr,
      ["for"] = for_override or def["for"],
      labels = { severity = def.severity },
      annotations = {
        summary = substitute(def.summary, def),
        description = substitute(def.description, def),
        runbook_url = runbook(def.runbook_url, runbook_base),
      },
    }
  end
  return rules
end

--- The rule groups as YAML.
function M.render()
  local groups, group_order = {}, {}
  for _, rule in ipairs(M.rules()) do
    if groups[rule.group] == nil then
      groups[rule.group] = {}
      group_order[#group_order + 1] = rule.group
    end
    table.insert(groups[rule.group], rule)
  end
  local out = {
    "# Generated by `hancock rules` from the hk.alert definitions in the scripts",
    "# (scripts/alerts.lua). Do not edit: change the scripts and regenerate.",
  }
  if #group_order == 0 then
    out[#out + 1] = "groups: []"
    return table.concat(out, "\n") .. "\n"
  end
  out[#out + 1] = "groups:"
  for _, group in ipairs(group_order) do
    out[#out + 1] = "  - name: " .. quote(group)
    out[#out + 1] = "    rules:"
    for _, rule in ipairs(groups[group]) do
      out[#out + 1] = "      - alert: " .. quote(rule.name)
      out[#out + 1] = "        expr: " .. quote(rule.expr)
      out[#out + 1] = "        for: " .. quote(rule["for"])
      out[#out + 1] = "        labels:"
      out[#out + 1] = "          severity: " .. quote(rule.labels.severity)
      out[#out + 1] = "        annotations:"
      out[#out + 1] = "          summary: " .. quote(rule.annotations.summary)
      out[#out + 1] = "          description: " .. quote(rule.annotations.description)
      if rule.annotations.runbook_url then
        out[#out + 1] = "          runbook_url: " .. quote(rule.annotations.runbook_url)
      end
    end
  end
  return table.concat(out, "\n") .. "\n"
end

M.format_number = format_number

return M
