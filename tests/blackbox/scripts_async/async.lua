-- Fixture routes for the asynchronous calls: hk.sleep, hk.http.request, hk.spawn.
local hk = require "hancock"

local upstream = hk.env("HK_TEST_UPSTREAM", "http://127.0.0.1:9")

hk.route("GET", "/sleep/:ms", function(req)
  hk.sleep(tonumber(req.params.ms))
  return { slept = tonumber(req.params.ms) }
end)

hk.route("GET", "/fast", function()
  return { fast = true }
end)

hk.route("POST", "/proxy/*path", function(req)
  local res, err, kind = hk.http.request {
    method = req.query.method or "POST",
    url = upstream .. "/" .. req.params.path,
    headers = { ["Content-Type"] = "text/plain", ["X-Test"] = "yes" },
    body = req.body,
    timeout_ms = tonumber(req.query.timeout_ms),
  }
  if not res then
    return 502, { error = err, kind = kind }
  end
  return { status = res.status, body = res.body, header = res.headers["x-upstream"] }
end)

hk.route("GET", "/chunks", function()
  local pieces = {}
  local res, err = hk.http.request {
    url = upstream .. "/chunked",
    on_chunk = function(bytes)
      pieces[#pieces + 1] = bytes
    end,
  }
  if not res then
    return 502, { error = err }
  end
  return { status = res.status, pieces = #pieces, joined = table.concat(pieces), body = res.body }
end)

hk.route("GET", "/spawn", function(req)
  hk.spawn(function(id)
    hk.sleep(20)
    hk.log.info("spawned_done", { parent = id })
    error("task failed on purpose")
  end, req.id)
  return { spawned = true }
end)

hk.route("GET", "/events", function(req)
  req:stream(200, { ["Cache-Control"] = "no-cache" })
  for i = 1, 3 do
    assert(req:write(("data: %d\n\n"):format(i)))
    hk.sleep(30)
  end
  if req.query.fail then
    error("failed after streaming")
  end
end)

hk.route("GET", "/relay", function(req)
  req:stream(200)
  local res, err = hk.http.request {
    url = upstream .. "/chunked",
    on_chunk = function(bytes)
      req:write("data: " .. bytes .. "\n\n")
    end,
  }
  if not res then
    req:write("event: error\ndata: " .. err .. "\n\n")
  end
end)
