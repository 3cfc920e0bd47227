-- A helper module: routes.lua loads it with `require "util"`, which must find this file in the
-- scripts directory. It is also run on its own in name order, so it has no side effects.
local util = {}

--- A copy of a header table's lookups for the names a test asks about, as seen by the script.
function util.lookups(headers, names)
  local out = {}
  for _, name in ipairs(names) do
    out[name] = headers[name] or false
  end
  return out
end

util.loaded_from = "util.lua"

return util
