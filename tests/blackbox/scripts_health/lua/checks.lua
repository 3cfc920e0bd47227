-- Fixture for test_health.py: checks written in Lua, one per kind of answer a script can give.
local hk = require "hancock"

local upstream = hk.env("HK_TEST_UPSTREAM", "http://127.0.0.1:9")

local function lua_check(name, opts)
  opts.kind = "lua"
  opts.interval_ms = opts.interval_ms or 60000
  hk.health.check(name, opts)
end

lua_check("fine", { run = function() return true end })
lua_check("queue", { critical = true, run = function() return "degraded", "queue is long" end })
lua_check("stalled", { run = function() return false, "queue stalled" end })
lua_check("raises", { run = function() error("kaboom-health-fixture") end })
lua_check("odd", { run = function() return 42 end })
lua_check("hangs", { timeout_ms = 300, run = function() hk.sleep(60000) return true end })
lua_check("upstream", {
  critical = true,
  run = function()
    local response, message = hk.http.request { url = upstream .. "/ok", timeout_ms = 2000 }
    if response == nil then
      return false, message
    end
    local doc = hk.json.decode(response.body)
    return doc and doc.status == "up", "upstream says " .. tostring(doc and doc.status)
  end,
})
