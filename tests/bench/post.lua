-- wrk script for tests/bench/run.sh: POST /v1/chat with a small JSON body, and one
-- machine-readable line at the end:
--   RESULT rps=<req/s> p50_ms=<ms> p99_ms=<ms> requests=<n> non2xx=<n> socket_errors=<n> errors=<n>
-- non2xx counts every response whose status is not 2xx (each thread counts its own);
-- socket_errors is connect + read + write + timeout; errors is their sum.
-- luacheck: globals wrk setup response done non2xx

wrk.method = "POST"
wrk.path = "/v1/chat"
wrk.body = '{"message":"hello","mode":"soc"}'
wrk.headers["Content-Type"] = "application/json"

local threads = {}

function setup(thread)
  thread:set("non2xx", 0)
  threads[#threads + 1] = thread
end

-- Runs in each thread's own Lua state: `non2xx` is that thread's global counter.
function response(status)
  if status < 200 or status > 299 then
    non2xx = non2xx + 1
  end
end

function done(summary, latency)
  local bad = 0
  for _, thread in ipairs(threads) do
    bad = bad + thread:get("non2xx")
  end
  local e = summary.errors
  local socket_errors = e.connect + e.read + e.write + e.timeout
  local seconds = summary.duration / 1e6
  io.write(string.format("RESULT rps=%.1f p50_ms=%.3f p99_ms=%.3f requests=%d non2xx=%d socket_errors=%d errors=%d\n",
    summary.requests / seconds, latency:percentile(50) / 1000, latency:percentile(99) / 1000,
    summary.requests, bad, socket_errors, bad + socket_errors))
end
