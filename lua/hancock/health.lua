-- hancock.health: deep health checks. It owns their definitions (hk.health.check and
-- hk.health.threshold), the background tasks that probe them, the cached results that
-- GET /health, /health/live and /health/ready answer from, their metrics and their change log.
-- The core owns the timers, outbound calls and metric storage. Entry point: lua/hancock.lua
-- attaches it with `hk.health = require("hancock.health")(hk)`.
--
-- Every piece of state lives in the closure one call of the returned function builds, so each
-- Lua state (each script generation) has its own checks. The one exception is each check's last
-- result, left in the core's carry map (core.carry_set) for the next generation, which adopts it
-- when the check's definition is unchanged: a reload neither forgets a status nor logs it again.

local core = require "hancock.core"

local monotonic = core.monotonic
local json = core.json

local MIB = 1024 * 1024
local GIB = 1024 * MIB
local MAX_BODY_BYTES = 4 * MIB -- a health endpoint that answers more is broken anyway
local MAX_DETAIL = 300         -- characters of detail kept per result
local NAME_PATTERN = "^[%w_.%-]+$"

-- 0 ok, 1 degraded, 2 error: hancock_health_check_status, and the order of badness.
local LEVELS = { ok = 0, degraded = 1, error = 2 }

local DEFAULTS = { interval_ms = 30000, timeout_ms = 5000, critical = false }

-- Options every check takes, then each kind's own. `true` marks the kind's thresholds, which
-- hk.health.threshold may tune.
local COMMON_OPTIONS = { kind = false, interval_ms = false, ttl_ms = false, timeout_ms = false,
                         critical = false, group = false }
local KINDS = {
  http = { url = false, headers = false, expect_status = false, expect_json = false,
           validate = false, warn_above_ms = true },
  memory = { warn_below_mb = true, error_below_mb = true },
  disk = { path = false, warn_below_mb = true, error_below_mb = true },
  lua = { run = false, warn_above_ms = true },
}
local KIND_DEFAULTS = {
  memory = { warn_below_mb = 512 },
  disk = { path = "/", warn_below_mb = 1024 },
}
local THRESHOLD_NAMES = { warn_below_mb = true, error_below_mb = true, warn_above_ms = true }

local NO_STORE = { ["Cache-Control"] = "no-store" }

-- Keys in the carry map: one result per check, and the names of the checks defined, so the next
-- generation can drop the results of checks it no longer defines. Names cannot hold ':'.
local CARRY_PREFIX = "health:"
local CARRY_INDEX = "health.checks"
local CLAIM_PREFIX = "health.probing:" -- held by whichever thread of the process probes a check

-- ---- small helpers ------------------------------------------------------------------------

local function clip(text)
  text = tostring(text)
  if #text > MAX_DETAIL then
    return text:sub(1, MAX_DETAIL) .. "…"
  end
  return text
end

local function sorted_keys(t)
  local keys = {}
  for key in pairs(t) do
    keys[#keys + 1] = key
  end
  table.sort(keys)
  return keys
end

-- FNV-1a, 64 bits, as 16 hex digits: a short, fixed-size digest of a definition (Lua integers
-- wrap on overflow, which is the arithmetic FNV wants).
local function fnv1a(text)
  local hash = 0xcbf29ce484222325
  for i = 1, #text do
    hash = (hash ~ text:byte(i)) * 0x100000001b3
  end
  return ("%016x"):format(hash)
end

-- A number as it goes into a fingerprint: 512 and 512.0 alike, and inf (which JSON cannot
-- hold) as text.
local function canonical(value)
  if math.type(value) == "float" then
    return math.tointeger(value) or ("%.17g"):format(value)
  end
  return value
end

-- A value as it reads in a detail: JSON, shortened.
local function show(value)
  local ok, text = pcall(json.encode, value)
  text = ok and text or tostring(value)
  return #text > 40 and text:sub(1, 40) .. "…" or text
end

-- ---- option checking (load time) ----------------------------------------------------------

-- Raised without a location: the public functions re-raise it at their caller's line.
local function invalid(fmt, ...)
  error(fmt:format(...), 0)
end

local function check_positive_integer(what, value)
  if math.type(value) ~= "integer" or value <= 0 then
    invalid("%s must be a positive integer of milliseconds, not %s", what, show(value))
  end
end

local function check_threshold(what, value)
  if type(value) ~= "number" or value < 0 or value ~= value then
    invalid("%s must be a non-negative number, not %s", what, show(value))
  end
end

local function check_status_list(value)
  local list = type(value) == "table" and value or { value }
  if #list == 0 then
    invalid("expect_status must be a status or a list of statuses")
  end
  local set = {}
  for _, status in ipairs(list) do
    if math.type(status) ~= "integer" or status < 100 or status > 599 then
      invalid("expect_status must hold integers from 100 to 599, not %s", show(status))
    end
    set[status] = true
  end
  return set
end

local function split_path(path)
  if type(path) ~= "string" or path == "" then
    invalid("expect_json.path must be a non-empty string such as \"models.*.name\"")
  end
  local segments = {}
  for segment in (path .. "."):gmatch("([^.]*)%.") do
    if segment == "" then
      invalid("expect_json.path '%s' has an empty segment", path)
    end
    segments[#segments + 1] = segment
  end
  return segments
end

local SCALARS = { string = true, number = true, boolean = true }

-- expect_json: one {path, contains | equals} or a list of them.
local function compile_expectations(value)
  if type(value) ~= "table" then
    invalid("expect_json must be a table: { path = \"models.*.name\", contains = \"llama3.1:8b\" }")
  end
  local list = type(value[1]) == "table" and value or { value }
  local compiled = {}
  for _, spec in ipairs(list) do
    for key in pairs(spec) do
      if key ~= "path" and key ~= "contains" and key ~= "equals" then
        invalid("expect_json: unknown field '%s' (path, contains, equals)", tostring(key))
      end
    end
    if spec.contains ~= nil and spec.equals ~= nil then
      invalid("expect_json: give contains or equals, not both")
    end
    local wanted = spec.contains
    if wanted == nil then
      wanted = spec.equals
    end
    if wanted ~= nil and not SCALARS[type(wanted)] then
      invalid("expect_json: contains/equals must be a string, number or boolean")
    end
    compiled[#compiled + 1] = {
      path = spec.path,
      segments = split_path(spec.path),
      contains = spec.contains,
      equals = spec.equals,
    }
  end
  return compiled
end

local function check_url(url)
  if type(url) ~= "string" or not (url:find("^http://") or url:find("^https://")) then
    invalid("url must be an http:// or https:// URL, not %s", show(url))
  end
end

local function check_headers(headers)
  if type(headers) ~= "table" then
    invalid("headers must be a table of name = value")
  end
  for name, value in pairs(headers) do
    if type(name) ~= "string" or type(value) ~= "string" then
      invalid("headers must map names to strings")
    end
  end
end

-- Checks `opts` against the kind's options and builds the check (without its probe).
local function build_check(name, opts)
  if type(name) ~= "string" or #name > 64 or not name:find(NAME_PATTERN) then
    invalid("the name must be 1 to 64 letters, digits, '_', '-' or '.', not %s", show(name))
  end
  if type(opts) ~= "table" then
    invalid("options must be a table")
  end
  local kind = opts.kind
  local own = KINDS[kind]
  if own == nil then
    invalid("kind must be one of http, memory, disk, lua, not %s", show(kind))
  end
  for key in pairs(opts) do
    if COMMON_OPTIONS[key] == nil and own[key] == nil then
      local hint = (key == "interval" or key == "ttl" or key == "timeout") and (" (use %s_ms)"):format(key) or ""
      invalid("unknown option '%s' for a %s check%s", tostring(key), kind, hint)
    end
  end
  -- The definition, and (filled in as it runs) the state: result = {status, detail,
  -- latency_ms, at}, in_flight (a probe is running), probe_count.
  local check = {
    name = name,
    kind = kind,
    interval_ms = opts.interval_ms or DEFAULTS.interval_ms,
    timeout_ms = opts.timeout_ms or DEFAULTS.timeout_ms,
    critical = opts.critical,
    in_flight = false,
    probe_count = 0,
  }
  check_positive_integer("interval_ms", check.interval_ms)
  check_positive_integer("timeout_ms", check.timeout_ms)
  check.ttl_ms = opts.ttl_ms or check.interval_ms
  check_positive_integer("ttl_ms", check.ttl_ms)
  if check.critical == nil then
    check.critical = DEFAULTS.critical
  elseif type(check.critical) ~= "boolean" then
    invalid("critical must be true or false")
  end
  -- Critical checks of one group are alternatives (a backend and its fallback): the group
  -- fails only when every one of them is in error.
  check.group = opts.group
  if check.group ~= nil then
    if type(check.group) ~= "string" or #check.group > 64 or not check.group:find(NAME_PATTERN) then
      invalid("group must be 1 to 64 letters, digits, '_', '-' or '.', not %s", show(check.group))
    elseif not check.critical then
      invalid("group only applies to critical checks (critical = true)")
    end
  end
  for key, value in pairs(KIND_DEFAULTS[kind] or {}) do
    check[key] = value
  end
  for key, is_threshold in pairs(own) do
    if opts[key] ~= nil then
      if is_threshold then
        check_threshold(key, opts[key])
      end
      check[key] = opts[key]
    end
  end
  if kind == "http" then
    check_url(check.url)
    if check.headers ~= nil then
      check_headers(check.headers)
    end
    check.statuses = check.expect_status ~= nil and check_status_list(check.expect_status) or nil
    check.expectations = check.expect_json ~= nil and compile_expectations(check.expect_json) or nil
    if check.validate ~= nil and type(check.validate) ~= "function" then
      invalid("validate must be a function(response, json) returning ok, detail")
    end
  elseif kind == "lua" and type(check.run) ~= "function" then
    invalid("a lua check needs run = function() return status, detail end")
  elseif kind == "disk" and (type(check.path) ~= "string" or check.path == "") then
    invalid("path must be a non-empty string")
  end
  return check
end

-- ---- outcomes -----------------------------------------------------------------------------

-- A script's verdict (true/false or a status name, and a detail) as status, detail.
local function verdict(what, ok, detail)
  if detail ~= nil then
    detail = clip(detail)
  end
  if ok == true then
    return "ok", detail
  elseif ok == false or ok == nil then
    return "error", detail or (what .. " returned " .. tostring(ok))
  elseif LEVELS[ok] then
    return ok, detail
  end
  return "error", ("%s returned %s; expected true, false, \"ok\", \"degraded\" or \"error\""):format(what, show(ok))
end

-- The values `segments` reach in a decoded JSON document: "*" steps into every element of an
-- array (or value of an object); null and missing keys reach nothing.
local function reach(doc, segments)
  local values = { doc }
  for _, segment in ipairs(segments) do
    local found = {}
    for _, value in ipairs(values) do
      if type(value) == "table" then
        if segment == "*" then
          local iterate = json.is_array(value) and ipairs or pairs
          for _, item in iterate(value) do
            found[#found + 1] = item
          end
        elseif value[segment] ~= nil and value[segment] ~= json.null then
          found[#found + 1] = value[segment]
        end
      end
    end
    values = found
  end
  return values
end

local function list_of(values)
  local shown = {}
  for i = 1, math.min(#values, 5) do
    shown[i] = show(values[i])
  end
  return table.concat(shown, ", ") .. (#values > 5 and ", …" or "")
end

-- nil when the document meets `expectation`, else a detail.
local function unmet(doc, expectation)
  local values = reach(doc, expectation.segments)
  if #values == 0 then
    return ("no %s in the response"):format(expectation.path)
  end
  if expectation.contains ~= nil then
    for _, value in ipairs(values) do
      if value == expectation.contains then
        return nil
      end
      if type(value) == "table" then
        for _, item in ipairs(value) do
          if item == expectation.contains then
            return nil
          end
        end
      end
    end
    return ("%s has no %s (found: %s)"):format(expectation.path, show(expectation.contains), list_of(values))
  elseif expectation.equals ~= nil then
    for _, value in ipairs(values) do
      if value ~= expectation.equals then
        return ("%s is %s, expected %s"):format(expectation.path, show(value), show(expectation.equals))
      end
    end
  end
  return nil
end

-- ---- the module ---------------------------------------------------------------------------

return function(hk)
  local health = {}

  local checks = {}    -- by name
  local order = {}     -- names, in definition order
  local tuned = {}     -- hk.health.threshold overrides, by check name
  local started = false -- the server is up and the scripts have loaded

  -- Registered with the first check, so a Hancock without checks exposes no health families
  -- (and a load that fails before defining one leaves the registry as it was).
  local metrics
  local function register_metrics()
    metrics = metrics or {
      status = hk.metrics.gauge("hancock_health_check_status",
        "Result of each health check: 0 ok, 1 degraded, 2 error.", { "check" }),
      latency = hk.metrics.gauge("hancock_health_check_latency_seconds",
        "How long the last probe of each health check took.", { "check" }),
      runs = hk.metrics.counter("hancock_health_check_runs_total",
        "Health check probes, by check and result (ok, degraded or error).", { "check", "result" }),
      critical = hk.metrics.gauge("hancock_health_check_critical",
        "1 for a critical check (its error can make /health an error), 0 for the others.", { "check" }),
      overall = hk.metrics.gauge("hancock_health_status",
        "The overall status GET /health reports: 0 ok, 1 degraded, 2 error."),
    }
  end

  -- A threshold: hk.health.threshold's value, else the check's own (or its kind's default).
  local function setting(check, key)
    local override = tuned[check.name]
    if override and override[key] ~= nil then
      return override[key]
    end
    return check[key]
  end

  -- ---- probes: each returns status, detail and optionally fields -------------------------
  --
  -- Fields are extra members of the check's entry in /health (numbers a dashboard or a parser
  -- may read without parsing the detail).

  -- The status for `bytes` left, against the check's thresholds, and the threshold crossed.
  local function against_thresholds(check, bytes)
    local error_mb, warn_mb = setting(check, "error_below_mb"), setting(check, "warn_below_mb")
    if error_mb and bytes < error_mb * MIB then
      return "error", ("error below %g MiB"):format(error_mb)
    elseif warn_mb and bytes < warn_mb * MIB then
      return "degraded", ("degraded below %g MiB"):format(warn_mb)
    end
    return "ok", nil
  end

  -- Whole units of `bytes`, rounded down, as an integer (JSON writes a float with ".0").
  local function whole(bytes, unit)
    return math.tointeger(bytes // unit) or 0
  end

  -- The details are the original service's, "available_mb=4096" and "available_gb=42", which
  -- its users' parsers read: they stay exactly that, and everything else is a field.
  local function probe_memory(check)
    local info, err = hk.system.meminfo()
    if info == nil then
      return "error", err
    end
    local status, threshold = against_thresholds(check, info.available)
    local available_mb = whole(info.available, MIB)
    return status, ("available_mb=%d"):format(available_mb),
           { available_mb = available_mb, total_mb = whole(info.total, MIB), threshold = threshold }
  end

  local function probe_disk(check)
    local info, err = hk.system.disk(check.path)
    if info == nil then
      return "error", err
    end
    local status, threshold = against_thresholds(check, info.free)
    local available_gb = whole(info.free, GIB)
    return status, ("available_gb=%d"):format(available_gb),
           { available_gb = available_gb, available_mb = whole(info.free, MIB),
             total_gb = whole(info.total, GIB), path = check.path, threshold = threshold }
  end

  local function probe_http(check)
    local response, message, kind = hk.http.request {
      url = check.url,
      headers = check.headers,
      timeout_ms = check.timeout_ms,
      connect_timeout_ms = check.timeout_ms,
      max_bytes = MAX_BODY_BYTES,
    }
    if response == nil then
      if kind == "timeout" then
        return "error", ("timeout after %d ms"):format(check.timeout_ms)
      end
      return "error", clip(("%s: %s"):format(kind, message))
    end
    local status = response.status
    local expected
    if check.statuses then
      expected = check.statuses[status] ~= nil
    else
      expected = status >= 200 and status <= 299
    end
    if not expected then
      return "error", ("HTTP %d"):format(status)
    end
    local doc, decode_error
    if check.expectations or check.validate then
      doc, decode_error = json.decode(response.body)
    end
    if check.expectations then
      if doc == nil then
        return "error", clip("invalid JSON: " .. tostring(decode_error))
      end
      for _, expectation in ipairs(check.expectations) do
        local problem = unmet(doc, expectation)
        if problem then
          return "error", clip(problem)
        end
      end
    end
    if check.validate then
      return verdict("validate", check.validate(response, doc))
    end
    return "ok"
  end

  local function probe_lua(check)
    return verdict("run", check.run())
  end

  local PROBES = { http = probe_http, memory = probe_memory, disk = probe_disk, lua = probe_lua }

  -- ---- carrying results across a reload ---------------------------------------------------
  --
  -- The carry map is the worker's, and only the event loop may touch it: these functions run in
  -- the probe tasks and handlers, never while the scripts load.

  -- The check's whole definition as a digest, computed once the scripts have loaded (so that
  -- thresholds set after the check count): any change of an option or of a threshold gives
  -- another. Functions (validate, run) cannot be compared, so only their presence counts.
  local function fingerprint(check)
    if check.fingerprint then
      return check.fingerprint
    end
    local definition = {
      kind = check.kind,
      interval_ms = check.interval_ms,
      ttl_ms = check.ttl_ms,
      timeout_ms = check.timeout_ms,
      critical = check.critical,
      group = check.group,
    }
    for key in pairs(KINDS[check.kind]) do
      local value = setting(check, key)
      definition[key] = type(value) == "function" or canonical(value)
    end
    -- The expectations in their compiled form, so that 200 and { 200 } are one definition.
    definition.expect_status = check.statuses and sorted_keys(check.statuses)
    if check.expectations then
      local expectations = {}
      for i, expectation in ipairs(check.expectations) do
        expectations[i] = { path = expectation.path, contains = canonical(expectation.contains),
                            equals = canonical(expectation.equals) }
      end
      definition.expect_json = expectations
    end
    check.fingerprint = fnv1a(json.encode(definition))
    return check.fingerprint
  end

  local carry_warned = false

  -- core.carry_set, and one warning per generation when the map refuses (it holds 1024 keys).
  -- A refused value drops the key (removing never fails), lest the next generation adopt the
  -- value it was meant to replace.
  local function carry(key, value)
    local ok, message = core.carry_set(key, value)
    if not ok then
      core.carry_set(key, nil)
    end
    if not ok and not carry_warned then
      carry_warned = true
      hk.log.warn("health_carry_failed", {
        message = "health results will not survive the next reload: " .. message,
        key = key,
        error = message,
      })
    end
  end

  -- Leaves the check's latest result for the next generation.
  local function remember(check)
    local result = check.result
    carry(CARRY_PREFIX .. check.name, json.encode({
      fingerprint = fingerprint(check),
      status = result.status,
      detail = result.detail,
      fields = result.fields,
      latency_ms = result.latency_ms,
      latency_seconds = result.seconds,
      checked_at = result.at,
    }))
  end

  local function carried_result(text)
    local saved = text and json.decode(text)
    if type(saved) == "table" and LEVELS[saved.status] and type(saved.checked_at) == "number"
        and type(saved.latency_seconds) == "number" and type(saved.latency_ms) == "number"
        and (saved.detail == nil or type(saved.detail) == "string")
        and (saved.fields == nil or type(saved.fields) == "table") then
      return saved
    end
    return nil
  end

  -- A carried record as a check's result (the cache /health answers from).
  local function result_of(saved)
    return {
      status = saved.status,
      detail = saved.detail,
      fields = saved.fields,
      latency_ms = saved.latency_ms,
      seconds = saved.latency_seconds,
      at = saved.checked_at,
    }
  end

  -- Adopts the result an earlier generation left for this same definition: it becomes the
  -- cache, and the gauges say it again (it is no new probe: runs_total does not count it).
  -- Returns the milliseconds until the probe the earlier generation would have run next, or
  -- nil when there is nothing to adopt, after dropping a result of another definition.
  local function resume(check)
    local key = CARRY_PREFIX .. check.name
    local text = core.carry_get(key)
    local saved = carried_result(text)
    if saved == nil or saved.fingerprint ~= fingerprint(check) then
      if text ~= nil then
        carry(key, nil)
      end
      return nil
    end
    check.result = result_of(saved)
    local labels = { check = check.name }
    metrics.status:set(labels, LEVELS[saved.status])
    metrics.latency:set(labels, saved.latency_seconds)
    local due_ms = (saved.checked_at - monotonic()) * 1000 + check.interval_ms
    return math.max(0, math.min(check.interval_ms, due_ms))
  end

  -- A worker's copy of the scripts probes on its own only to refresh a stale result (claimed
  -- for the process); the control thread's copy probes on schedule. Every probe leaves its
  -- result in the carry map: this takes the newest one of this definition, wherever it came from.
  local function adopt(check)
    local saved = carried_result(core.carry_get(CARRY_PREFIX .. check.name))
    if saved ~= nil and saved.fingerprint == fingerprint(check)
        and (check.result == nil or saved.checked_at > check.result.at) then
      check.result = result_of(saved)
    end
  end

  local function adopt_all()
    for _, name in ipairs(order) do
      adopt(checks[name])
    end
  end

  -- One probe of a check at a time in the whole process (every worker reads the same result).
  local function claim(check)
    return core.carry_claim(CLAIM_PREFIX .. check.name, check.timeout_ms + 1000)
  end

  -- Drops what an earlier generation left for checks this one no longer defines, and names
  -- this one's for the next.
  local function forget_removed()
    local previous = json.decode(core.carry_get(CARRY_INDEX) or "[]")
    for _, name in ipairs(type(previous) == "table" and previous or {}) do
      if type(name) == "string" and checks[name] == nil then
        carry(CARRY_PREFIX .. name, nil)
      end
    end
    carry(CARRY_INDEX, #order > 0 and json.encode(order) or nil)
  end

  -- ---- the overall status ----------------------------------------------------------------

  -- One check's entry in /health: status, detail, latency_ms and the probe's fields.
  local function entry(check)
    local result = check.result
    if result == nil then
      return { status = "degraded", detail = "not checked yet" }
    end
    local item = {
      status = result.status,
      detail = result.detail,
      latency_ms = (check.kind == "http" or check.kind == "lua") and result.latency_ms or nil,
    }
    for key, value in pairs(result.fields or {}) do
      if item[key] == nil then
        item[key] = value
      end
    end
    return item
  end

  -- The critical dependencies: each group's checks together (alternatives, such as a backend
  -- and its fallback), each other critical check alone; in definition order.
  local function critical_units()
    local units, by_group = {}, {}
    for _, name in ipairs(order) do
      local check = checks[name]
      if check.critical then
        local unit = check.group and by_group[check.group]
        if unit == nil then
          unit = {}
          units[#units + 1] = unit
          if check.group then
            by_group[check.group] = unit
          end
        end
        unit[#unit + 1] = check
      end
    end
    return units
  end

  -- "ok" when one of the unit's checks has a result that is not an error, "error" when every
  -- one of them is in error, else "pending" and the names of the checks without a result.
  local function unit_state(unit)
    local pending = {}
    for _, check in ipairs(unit) do
      if check.result == nil then
        pending[#pending + 1] = check.name
      elseif check.result.status ~= "error" then
        return "ok", pending
      end
    end
    return #pending > 0 and "pending" or "error", pending
  end

  -- The /health document from the cached results: "error" when a critical dependency is in
  -- error, else "degraded" when any check is not ok, else "ok".
  local function build_report()
    local report = { status = "ok", checks = {} }
    for _, name in ipairs(order) do
      local item = entry(checks[name])
      report.checks[name] = item
      if item.status ~= "ok" then
        report.status = "degraded"
      end
    end
    for _, unit in ipairs(critical_units()) do
      if unit_state(unit) == "error" then
        report.status = "error"
      end
    end
    return report
  end

  -- hancock_health_status says what /health would answer now.
  local function publish_overall()
    if metrics then
      metrics.overall:set(nil, LEVELS[build_report().status])
    end
  end

  -- ---- results ---------------------------------------------------------------------------

  -- Stores a probe's result, updates the metrics, logs a change of status and leaves the
  -- result for the next generation.
  local function record(check, status, detail, seconds, fields)
    assert(LEVELS[status], "a probe returned an unknown status")
    local from = check.result and check.result.status or "pending"
    check.result = {
      status = status,
      detail = detail,
      fields = fields,
      latency_ms = math.floor(seconds * 100000 + 0.5) / 100,
      seconds = seconds,
      at = monotonic(),
    }
    local labels = { check = check.name }
    metrics.status:set(labels, LEVELS[status])
    metrics.latency:set(labels, seconds)
    metrics.runs:inc({ check = check.name, result = status })
    remember(check)
    publish_overall()
    if from ~= status then
      local log = status == "ok" and hk.log.info or status == "degraded" and hk.log.warn or hk.log.error
      log("health_changed", {
        message = ("health check %s: %s -> %s"):format(check.name, from, status),
        check = check.name,
        from = from,
        to = status,
        detail = detail,
        critical = check.critical,
        group = check.group,
      })
    end
  end

  -- A lua check cannot be interrupted: when it runs past its timeout, the check is an error
  -- until it returns (and no second probe starts meanwhile).
  local function watch(check, probe_number)
    hk.sleep(check.timeout_ms)
    if check.in_flight and check.probe_count == probe_number then
      record(check, "error", ("timeout after %d ms (still running)"):format(check.timeout_ms),
             check.timeout_ms / 1000)
    end
  end

  -- Runs one probe in the calling task. The caller has set check.in_flight and claimed it.
  local function probe(check)
    adopt(check) -- a change is logged against the newest result, whoever probed it
    check.probe_count = check.probe_count + 1
    if check.kind == "lua" then
      hk.spawn(watch, check, check.probe_count)
    end
    local began = monotonic()
    local ok, status, detail, fields = pcall(PROBES[check.kind], check)
    local seconds = monotonic() - began
    check.in_flight = false
    if not ok then
      status, detail, fields = "error", clip(status), nil
    end
    local slow = setting(check, "warn_above_ms")
    if status == "ok" and slow and seconds * 1000 > slow then
      status, detail = "degraded", ("slow: %d ms (degraded above %g ms)"):format(math.floor(seconds * 1000), slow)
    end
    record(check, status, detail, seconds, fields)
    core.carry_set(CLAIM_PREFIX .. check.name, nil)
  end

  -- The background task of one check: a probe every interval_ms, unless one is in flight. It
  -- starts with the carried result when there is one, and probes when that result's next probe
  -- was due. All of a generation's tasks take their first step in the loop turn after the
  -- scripts load, before it serves a request, so /health never shows a carried check pending.
  local function keep_checking(check)
    metrics.critical:set({ check = check.name }, check.critical and 1 or 0)
    local wait_ms = check.result == nil and resume(check)
    if wait_ms then
      publish_overall()
      hk.sleep(wait_ms)
    end
    while true do
      if not check.in_flight and claim(check) then
        check.in_flight = true
        probe(check)
      end
      hk.sleep(check.interval_ms)
    end
  end

  -- Starts a background probe of every check whose result is missing or older than its TTL
  -- and has none in flight: a read never waits, and never starts a second probe.
  local function refresh_stale()
    if not started then
      return
    end
    local now = monotonic()
    for _, name in ipairs(order) do
      local check = checks[name]
      local result = check.result
      if not check.in_flight and (result == nil or (now - result.at) * 1000 > check.ttl_ms)
          and claim(check) then
        check.in_flight = true
        hk.spawn(probe, check)
      end
    end
  end

  -- ---- reports ---------------------------------------------------------------------------

  --- The /health document: {status = "ok"|"degraded"|"error", checks = {name = {status,
  --- latency_ms, detail, …}}}, from the cached results. Starts background refreshes of stale
  --- ones.
  function health.report()
    if core.role() == "worker" then
      started = true -- serving: the scripts have loaded, the definitions are fixed
      adopt_all()
    end
    refresh_stale()
    return build_report()
  end

  local function readiness()
    local report = health.report()
    if not started then
      return 503, { ready = false, status = report.status, detail = "scripts loading" }
    end
    local waiting = {}
    for _, unit in ipairs(critical_units()) do
      local state, pending = unit_state(unit)
      if state == "pending" then
        table.move(pending, 1, #pending, #waiting + 1, waiting)
      end
    end
    if report.status == "error" then
      return 503, { ready = false, status = report.status, detail = "a critical check failed" }
    elseif #waiting > 0 then
      return 503, { ready = false, status = report.status,
                    detail = "critical checks not run yet: " .. table.concat(waiting, ", ") }
    end
    return 200, { ready = true, status = report.status }
  end

  -- ---- the API ---------------------------------------------------------------------------

  local function loading_only(what)
    if started or core.role() == "worker" then
      error(what .. ": define health checks when the scripts load, not while serving", 3)
    end
  end

  -- Checks a threshold override against the kind of the check it tunes.
  local function check_applies(name, kind, values)
    for key in pairs(values) do
      if not KINDS[kind][key] then
        invalid("'%s' does not apply to %s, a %s check", key, name, kind)
      end
    end
  end

  --- Defines the health check `name`. opts.kind is "http", "memory", "disk" or "lua"; the
  --- other options (interval_ms, ttl_ms, timeout_ms, critical, group, and the kind's own) are
  --- described in docs/health.md. Its probes start once the server is up.
  function health.check(name, opts)
    loading_only("hk.health.check")
    local ok, check = pcall(function()
      local built = build_check(name, opts)
      if checks[name] then
        invalid("a check with this name is already defined")
      end
      if tuned[name] then
        check_applies(name, built.kind, tuned[name])
      end
      return built
    end)
    if not ok then
      error(("hk.health.check(%s): %s"):format(show(name), check), 2)
    end
    register_metrics()
    checks[name] = check
    order[#order + 1] = name
    hk.spawn(keep_checking, check)
  end

  --- Tunes the thresholds of the check `name` (defined before or after): warn_below_mb and
  --- error_below_mb (memory, disk), warn_above_ms (http, lua).
  function health.threshold(name, values)
    loading_only("hk.health.threshold")
    local ok, err = pcall(function()
      if type(name) ~= "string" then
        invalid("the name must be a check's name (a string)")
      elseif type(values) ~= "table" then
        invalid("thresholds must be a table such as { warn_below_mb = 512 }")
      end
      for key, value in pairs(values) do
        if not THRESHOLD_NAMES[key] then
          invalid("unknown threshold '%s' (warn_below_mb, error_below_mb, warn_above_ms)", tostring(key))
        end
        check_threshold(key, value)
      end
      if checks[name] then
        check_applies(name, checks[name].kind, values)
      end
    end)
    if not ok then
      error(("hk.health.threshold(%s): %s"):format(show(name), err), 2)
    end
    local override = tuned[name] or {}
    for key, value in pairs(values) do
      override[key] = value
    end
    tuned[name] = override
  end

  -- ---- routes, present in every Hancock --------------------------------------------------

  hk.route("GET", "/health", function()
    local report = health.report()
    return report.status == "error" and 503 or 200, report, NO_STORE
  end)

  hk.route("GET", "/health/live", function()
    return 200, { status = "ok" }, NO_STORE
  end)

  hk.route("GET", "/health/ready", function()
    local status, body = readiness()
    return status, body, NO_STORE
  end)

  -- Spawned while the runtime loads, so it runs once every script has loaded and the server
  -- is up: from then on the definitions are fixed.
  hk.spawn(function()
    started = true
    forget_removed()
    publish_overall()
    for _, name in ipairs(sorted_keys(tuned)) do
      if checks[name] == nil then
        hk.log.warn("health_threshold_unused", {
          message = ("hk.health.threshold(%q): no check has that name"):format(name),
          check = name,
        })
      end
    end
  end)

  return health
end
