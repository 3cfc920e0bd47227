-- The service's own routes that are not part of the LLM API: what this is and which version.
local hk = require "hancock"

hk.route("GET", "/", function()
  return { service = "hancock", version = hk.version }
end)

-- Every log line says which service wrote it, so a shared log pipeline can tell them apart.
hk.on_log(function(event)
  event.service = "hancock"
end)
