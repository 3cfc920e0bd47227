-- The nginx peer's metrics, written the way nginx-lua-prometheus users keep them (written here
-- from scratch): one lua_shared_dict key per sample, shared by every worker, updated with
-- dict:incr in the log phase and rendered at GET /metrics from dict:get_keys.
--   init(series)  init_by_lua: creates bench_series_total{id="1".."series"}
--   log()         log_by_lua: counts the request by endpoint and mode, observes its duration
--   collect()     content_by_lua: the Prometheus text format 0.0.4
-- luacheck: globals ngx
local dict = ngx.shared.metrics

local BUCKETS = { 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10 }
local LE = {}
for i, bound in ipairs(BUCKETS) do
  LE[i] = tostring(bound)
end
LE[#BUCKETS + 1] = "+Inf"

local FAMILIES = {
  hancock_requests_by_endpoint = { "counter", "Requests by route pattern." },
  hancock_requests_by_mode = { "counter", "Requests by specialist mode." },
  hancock_request_duration_seconds = { "histogram", "Time from a complete request to its response." },
  bench_series_total = { "counter", "Benchmark fixture: one series per id." },
  nginx_metric_errors_total = { "counter", "Metric updates lost (shared dict full)." },
}
local HISTOGRAM = "hancock_request_duration_seconds"

local M = {}

local function inc(key, value)
  local _, err = dict:incr(key, value, 0)
  if err then
    dict:incr("nginx_metric_errors_total", 1, 0)
    ngx.log(ngx.ERR, "metrics: cannot update ", key, ": ", err)
  end
end

function M.init(series)
  dict:set("nginx_metric_errors_total", 0)
  for id = 1, series do
    dict:set('bench_series_total{id="' .. id .. '"}', 1)
  end
end

function M.log()
  local endpoint = ngx.var.uri
  inc('hancock_requests_by_endpoint{endpoint="' .. endpoint .. '"}', 1)
  local mode = ngx.ctx.mode
  if mode then
    inc('hancock_requests_by_mode{mode="' .. mode .. '"}', 1)
  end
  local labels = 'method="' .. ngx.req.get_method() .. '",endpoint="' .. endpoint ..
    '",status_code="' .. ngx.status .. '"'
  local seconds = tonumber(ngx.var.request_time)
  local bucket = #BUCKETS + 1
  for i, bound in ipairs(BUCKETS) do
    if seconds <= bound then
      bucket = i
      break
    end
  end
  -- One bucket per observation; collect() makes them cumulative.
  inc(HISTOGRAM .. "_bucket{" .. labels .. ',le="' .. LE[bucket] .. '"}', 1)
  inc(HISTOGRAM .. "_sum{" .. labels .. "}", seconds)
  inc(HISTOGRAM .. "_count{" .. labels .. "}", 1)
end

-- The family a sample key belongs to: its name before "{", without a histogram's suffix.
local function family_of(key)
  local name = key:match("^[^{]+")
  if name:sub(1, #HISTOGRAM) == HISTOGRAM then
    return HISTOGRAM
  end
  return name
end

function M.collect()
  local keys = dict:get_keys(0)
  table.sort(keys)
  local out, n = {}, 0
  local function emit(line)
    n = n + 1
    out[n] = line
  end
  local current
  for _, key in ipairs(keys) do
    local family = family_of(key)
    if family ~= current then
      current = family
      local meta = FAMILIES[family] or { "untyped", family }
      emit("# HELP " .. family .. " " .. meta[2] .. "\n")
      emit("# TYPE " .. family .. " " .. meta[1] .. "\n")
    end
    if family ~= HISTOGRAM then
      emit(key .. " " .. tostring(dict:get(key) or 0) .. "\n")
    elseif key:find("_count{", #HISTOGRAM, true) then
      -- One label set: its buckets in order, cumulated, then _sum and _count.
      local labels = key:match("{(.*)}")
      local total = 0
      for _, le in ipairs(LE) do
        total = total + (dict:get(HISTOGRAM .. "_bucket{" .. labels .. ',le="' .. le .. '"}') or 0)
        emit(HISTOGRAM .. "_bucket{" .. labels .. ',le="' .. le .. '"} ' .. total .. "\n")
      end
      local sum = dict:get(HISTOGRAM .. "_sum{" .. labels .. "}") or 0
      emit(HISTOGRAM .. "_sum{" .. labels .. "} " .. tostring(sum) .. "\n")
      emit(key .. " " .. tostring(dict:get(key) or 0) .. "\n")
    end
  end
  ngx.header["Content-Type"] = "text/plain; version=0.0.4"
  ngx.print(out)
end

return M
