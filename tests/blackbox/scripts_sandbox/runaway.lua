-- Fixture handlers that misbehave on purpose: the host must answer 500 and keep serving.
local hk = require "hancock"

hk.route("GET", "/loop", function()
  while true do end -- luacheck: ignore 512
end)

hk.route("GET", "/loop-in-pcall", function()
  -- A script that tries to swallow the budget error and carry on.
  for _ = 1, 1000 do
    pcall(function()
      while true do end -- luacheck: ignore 512
    end)
  end
  return { escaped = true }
end)

hk.route("GET", "/huge-string", function()
  local s = string.rep("x", 1024 * 1024 * 1024)
  return { length = #s }
end)

hk.route("GET", "/concat-bomb", function()
  local s = "x"
  for _ = 1, 64 do
    s = s .. s
  end
  return { length = #s }
end)

local function recurse(n)
  return recurse(n + 1) + 1
end

hk.route("GET", "/deep", function()
  return { depth = recurse(1) }
end)

hk.route("GET", "/ok", function()
  return { ok = true }
end)

hk.route("GET", "/stdlib", function()
  return {
    execute = os.execute == nil,
    popen = io == nil,
    exit = os.exit == nil,
    dofile = dofile == nil,
    debug_getinfo = debug.getinfo == nil,
    traceback = type(debug.traceback) == "function",
    binary_load = select(2, load(string.char(27) .. "Lua")) ~= nil,
    text_load = load("return 1 + 1")() == 2,
  }
end)

hk.route("GET", "/print", function()
  print("hello", "from", "print")
  return { printed = true }
end)
