-- Fixture handlers a careless or hostile script author might write: each must end in a clear
-- error for that request (or that finalizer) and leave the host serving.
local hk = require "hancock"

hk.route("GET", "/ok", function()
  return { ok = true }
end)

-- Streams 64 KiB pieces for as long as the client takes them.
hk.route("GET", "/firehose", function(req)
  req:stream(200, { ["Content-Type"] = "text/plain" })
  local piece = string.rep("s", 65536)
  for _ = 1, 4096 do
    if not req:write(piece) then
      return
    end
  end
end)

hk.route("GET", "/huge-error", function()
  error(string.rep("E", 20 * 1024 * 1024))
end)

hk.route("GET", "/loop-in-message-handler", function()
  local ok = xpcall(function()
    error("first")
  end, function()
    while true do end -- luacheck: ignore 512
  end)
  return { ok = ok }
end)

hk.route("GET", "/loop-in-xpcall", function()
  xpcall(function()
    while true do end -- luacheck: ignore 512
  end, function(e)
    return e
  end)
  return { escaped = true }
end)

hk.route("GET", "/loop-in-finalizer", function()
  setmetatable({}, {
    __gc = function()
      while true do end -- luacheck: ignore 512
    end,
  })
  collectgarbage()
  collectgarbage()
  return { collected = true }
end)

-- Kept alive by this upvalue until the generation is closed at a reload.
local immortal = setmetatable({}, {
  __gc = function()
    while true do end -- luacheck: ignore 512
  end,
})

hk.route("GET", "/immortal", function()
  return { alive = immortal ~= nil }
end)

hk.route("GET", "/status/:code", function(req)
  return tonumber(req.params.code), "x"
end)

hk.route("GET", "/catastrophic-pattern", function()
  -- No hook runs inside string.find: only the watchdog sees this.
  return { found = string.find(string.rep("a", 5000), ".-.-.-.-b") ~= nil }
end)

-- Fills the state to its cap and holds it across a wait, so other requests meet a full state.
hk.route("GET", "/hold", function()
  local held = {}
  pcall(function()
    while true do
      held[#held + 1] = string.rep("h", 1000) .. #held
    end
  end)
  hk.sleep(tonumber(hk.env("HK_TEST_HOLD_MS", "1500")))
  return { held = #held }
end)

hk.route("GET", "/sandbox", function()
  local doors = {
    io = io == nil,
    getenv = os.getenv == nil,
    loadlib = package.loadlib == nil,
    searchpath = package.searchpath == nil,
    execute = os.execute == nil,
    dofile = dofile == nil,
    loadfile = loadfile == nil,
    dump = string.dump == nil,
    debug_getinfo = debug.getinfo == nil,
    traceback = type(debug.traceback) == "function",
    binary_load = select(2, load(string.char(27) .. "Lua")) ~= nil,
    text_load = load("return math.pi")() == math.pi,
    env_load = load("return x", "chunk", "t", { x = 42 })() == 42,
    admin_token = not pcall(hk.env, "HANCOCK_ADMIN_TOKEN"),
    other_secret = not pcall(hk.env, "AWS_SECRET_ACCESS_KEY"),
    allowed = hk.env("HANCOCK_TEST_VALUE") == "visible",
    listed = hk.env("EXTRA_SETTING") == "listed",
  }
  package.path = "/etc/?;/etc/?.lua"
  doors.path_escape = not pcall(require, "passwd")
  doors.dotdot = not pcall(require, "..secret")
  doors.own_module = require("helper_module").answer == 42
  return doors
end)

-- Ten references to one large string: the encoder must stop at the state's cap, not allocate
-- ten times the string outside it.
hk.route("GET", "/encode-bomb", function()
  local big = string.rep("j", 8 * 1024 * 1024)
  local many = {}
  for i = 1, 10 do
    many[i] = big
  end
  return many
end)

-- A background task whose on_chunk fails: logged with the request that spawned it.
hk.route("GET", "/spawn-chunk-error", function()
  hk.spawn(function()
    hk.http.request {
      method = "POST",
      url = hk.env("HK_TEST_UPSTREAM", "http://127.0.0.1:9") .. "/v1/chat/completions",
      headers = { ["Content-Type"] = "application/json" },
      body = '{"stream": true, "messages": []}',
      on_chunk = function()
        error("boom in on_chunk")
      end,
    }
  end)
  return { spawned = true }
end)

hk.route("GET", "/slow", function()
  hk.sleep(tonumber(hk.env("HK_TEST_SLOW_MS", "2000")))
  return { slow = true }
end)

-- Client input reflected into the head: a header value or a content type with a control byte.
hk.route("GET", "/reflect-header/:value", function(req)
  return 200, { ok = true }, { ["X-Name"] = req.params.value }
end)

hk.route("GET", "/reflect-type/:value", function(req)
  return 200, "body", { ["Content-Type"] = "text/plain" .. req.params.value }
end)
