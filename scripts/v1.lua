-- The Hancock API: /v1 routes, JSON in and out, with the original service's field names.
-- Who may call and how often is set once here; the modes are defined in modes.lua.
local hk = require "hancock"
local llm = require "hancock.llm"
local api = require "api"

api.access {
  api_key = hk.env("HANCOCK_API_KEY"),               -- unset: no key needed
  rate_limit = hk.env("HANCOCK_RATE_LIMIT", "60"),   -- requests per client per window
  rate_window_s = hk.env("HANCOCK_RATE_LIMIT_WINDOW", "60"),
}

-- ---- conversation ---------------------------------------------------------------------------

local MAX_HISTORY = 100
local ROLES = { user = true, assistant = true, system = true }

-- The optional history as a list of {role, content}, or nil and a message.
local function history_of(value)
  if value == nil or value == hk.json.null then
    return {}
  elseif type(value) ~= "table" or not hk.json.is_array(value) then
    return nil, "field 'history' must be an array of {role, content} objects"
  elseif #value > MAX_HISTORY then
    return nil, ("field 'history' may hold at most %d messages"):format(MAX_HISTORY)
  end
  for i, m in ipairs(value) do
    if type(m) ~= "table" or not ROLES[m.role] or type(m.content) ~= "string" then
      return nil, ("field 'history[%d]' must be {\"role\": \"user\"|\"assistant\"|\"system\", "
                   .. "\"content\": string}"):format(i - 1)
    end
  end
  return value
end

-- Server-sent events in the original's stream format: a "delta" event per piece of the answer
-- as the model produces it, then "done" with the whole response (or "error").
local function send_event(req, event)
  return req:write("data: " .. hk.json.encode(event) .. "\n\n")
end

local function stream_chat(req, fields, messages, headers)
  local stream_headers = { ["Cache-Control"] = "no-cache" }
  for name, value in pairs(headers or {}) do
    stream_headers[name] = value
  end
  req:stream(200, stream_headers)
  local answer, err = llm.chat {
    mode = fields.mode,
    messages = messages,
    on_delta = function(text)
      send_event(req, { delta = text })
    end,
  }
  if answer == nil then
    send_event(req, { error = err, request_id = req.id })
  else
    send_event(req, { done = true, response = answer.text, model = answer.model, mode = fields.mode })
  end
end

api.route("POST", "/v1/chat", nil, function(req)
  local fields, body = api.fields(req, {   -- the fields, and the whole body for the rest
    { "message" },
    { "mode", default = "auto", mode = true },
  })
  if fields == nil then
    return hk.error(400, body)                 -- here: what is wrong
  end
  req.mode = fields.mode
  local history, problem = history_of(body.history)
  if history == nil then
    return hk.error(400, problem)
  elseif body.stream ~= nil and type(body.stream) ~= "boolean" then
    return hk.error(400, "field 'stream' must be a boolean")
  end
  local messages = {}
  for _, m in ipairs(history) do
    messages[#messages + 1] = { role = m.role, content = m.content }
  end
  messages[#messages + 1] = { role = "user", content = fields.message }
  if body.stream then
    return stream_chat(req, fields, messages, req.rate_limit_headers)
  end
  local answer, err, status = llm.chat { mode = fields.mode, messages = messages }
  if answer == nil then
    return hk.error(status, err)
  end
  return { response = answer.text, model = answer.model, mode = fields.mode }
end)

api.route("POST", "/v1/ask", nil, function(req)
  local fields, problem = api.fields(req, {
    { "question" },
    { "mode", default = "auto", mode = true },
  })
  if fields == nil then
    return hk.error(400, problem)
  end
  req.mode = fields.mode
  local answer, failure = api.ask(fields.mode, fields.question)
  if answer == nil then
    return failure
  end
  return { answer = answer.text, model = answer.model, mode = fields.mode }
end)

api.route("GET", "/v1/modes", nil, function()
  return { modes = llm.modes(), default = "auto", backend = llm.backend }
end)

-- ---- one-shot specialist endpoints ----------------------------------------------------------

api.post("/v1/triage", {
  mode = "soc",
  input = { { "alert", json = true } },
  prompt = function(f)
    return "Triage this security alert. Give: severity (Critical/High/Medium/Low/Informational); "
      .. "the MITRE ATT&CK technique IDs involved; whether it is a true or a likely false positive, "
      .. "with the evidence; immediate containment steps; and the next investigative steps.\n\n"
      .. "Alert:\n" .. f.alert
  end,
  output = function(_, answer)
    return { triage = answer.text, model = answer.model }
  end,
})

api.post("/v1/hunt", {
  mode = "soc",
  input = { { "target" }, { "siem", default = "splunk" } },
  prompt = function(f)
    return ("Write a %s threat-hunting query for: %s\n\nExplain the query line by line in comments, "
      .. "list the data sources and fields it needs, what a hit looks like, likely false positives, "
      .. "and the MITRE ATT&CK techniques it covers."):format(f.siem, f.target)
  end,
  output = function(f, answer)
    return { query = answer.text, siem = f.siem, model = answer.model }
  end,
})

api.post("/v1/respond", {
  mode = "soc",
  input = { { "incident" } },
  prompt = function(f)
    return "Write an incident response playbook for: " .. f.incident .. "\n\nOrganise it by phase "
      .. "(preparation; detection and analysis; containment; eradication; recovery; lessons learned). "
      .. "For each phase give concrete actions, tools, evidence to preserve and who to inform."
  end,
  output = function(f, answer)
    return { playbook = answer.text, incident = f.incident, model = answer.model }
  end,
})

api.post("/v1/code", {
  mode = "code",
  input = { { "task" }, { "language", optional = true } },
  prompt = function(f)
    local language = f.language and (" Write it in " .. f.language .. ".") or ""
    return f.task .. language .. "\nReturn complete, working code with comments."
  end,
  output = function(f, answer)
    return { code = answer.text, model = answer.model, language = f.language or "auto", task = f.task }
  end,
})

local CISO_FORMATS = {
  advice = "",
  report = "Format the answer as a risk report: executive summary, findings, risk ratings, recommendations.",
  ["gap-analysis"] = "Format the answer as a gap analysis table: control, current state, target state, "
    .. "gap, priority.",
  ["board-summary"] = "Format the answer as a board-ready summary of at most 300 words, in business terms.",
}

api.post("/v1/ciso", {
  mode = "ciso",
  input = {
    { "question", aliases = { "query", "message" } },
    { "context", optional = true },
    { "output", default = "advice", one_of = { "advice", "report", "gap-analysis", "board-summary" } },
  },
  prompt = function(f)
    local context = f.context and ("\n\nOrganisation context: " .. f.context) or ""
    return f.question .. context .. "\n\n" .. CISO_FORMATS[f.output]
  end,
  output = function(f, answer)
    return { advice = answer.text, output = f.output, model = answer.model }
  end,
})

api.post("/v1/sigma", {
  mode = "sigma",
  input = {
    { "description", aliases = { "ttp", "query" } },
    { "logsource", optional = true },
    { "technique", optional = true },
  },
  prompt = function(f)
    local hints = (f.logsource and ("\nLog source: " .. f.logsource) or "")
      .. (f.technique and ("\nMITRE ATT&CK technique (tag it): " .. f.technique) or "")
    return "Write a Sigma rule that detects:\n\n" .. f.description .. "\n" .. hints
  end,
  output = function(f, answer)
    return { rule = answer.text, logsource = f.logsource or "auto", technique = f.technique or "auto",
             model = answer.model }
  end,
})

api.post("/v1/yara", {
  mode = "yara",
  input = {
    { "description", aliases = { "malware", "query" } },
    { "file_type", optional = true },
    { "hash", optional = true },
  },
  prompt = function(f)
    local hints = (f.file_type and ("\nTarget file type: " .. f.file_type) or "")
      .. (f.hash and ("\nKnown sample hash (put it in meta): " .. f.hash) or "")
    return "Write a YARA rule that detects:\n\n" .. f.description .. "\n" .. hints
  end,
  output = function(f, answer)
    return { rule = answer.text, file_type = f.file_type or "auto", model = answer.model }
  end,
})

api.post("/v1/ioc", {
  mode = "ioc",
  input = {
    { "indicator", aliases = { "ioc", "query" } },
    { "type", default = "auto" },
    { "context", optional = true },
  },
  prompt = function(f)
    local context = f.context and ("\nContext: " .. f.context) or ""
    return ("Assess this indicator of compromise.\nIndicator: %s\nType: %s%s")
      :format(f.indicator, f.type, context)
  end,
  output = function(f, answer)
    return { report = answer.text, indicator = f.indicator, type = f.type, model = answer.model }
  end,
})
