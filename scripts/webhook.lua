-- POST /v1/webhook: a SIEM or EDR pushes an alert; Hancock triages it in SOC mode, answers,
-- and tells Slack and Teams. Signed with HANCOCK_WEBHOOK_SECRET when it is set:
-- X-Hancock-Signature: sha256=<hex HMAC-SHA256 of the raw body> (see docs/api.md, also for
-- why a replayed delivery is accepted).
local hk = require "hancock"
local api = require "api"
local notify = require "api.notify"

local secret = hk.env("HANCOCK_WEBHOOK_SECRET")
local targets = { slack = hk.env("HANCOCK_SLACK_WEBHOOK"), teams = hk.env("HANCOCK_TEAMS_WEBHOOK") }

local INPUT = {
  { "alert", json = true },
  { "source", default = "unknown" },
  { "severity", default = "unknown" },
}

local function prompt(f)
  return ("[Webhook alert from %s, reported severity %s]\n\nTriage this alert: severity "
    .. "(Critical/High/Medium/Low/Informational), MITRE ATT&CK techniques, true or likely false "
    .. "positive with the evidence, immediate containment steps and next steps.\n\nAlert:\n%s")
    :format(f.source, f.severity, f.alert)
end

-- Checks the signature over the raw body, before anything parses it.
local function signature_ok(req)
  if secret == nil then
    return true
  end
  local header = req:header("X-Hancock-Signature")
  if header ~= nil and hk.verify_signature(secret, req.body, header) then
    return true
  end
  hk.log.warn("webhook_invalid_signature", { reason = header and "mismatch" or "missing",
                                             client = req.remote_addr })
  return false
end

api.route("POST", "/v1/webhook", "soc", function(req)
  if not signature_ok(req) then
    return hk.error(401, "Invalid webhook signature")
  end
  local f, problem = api.fields(req, INPUT)
  if f == nil then
    return hk.error(400, problem)
  end
  local answer, failure = api.ask("soc", prompt(f))
  if answer == nil then
    return failure
  end
  -- Slack and Teams hear about it after the response, in a background task: a slow or failing
  -- receiver neither delays nor fails the webhook (failures are logged as notify_failed).
  local queued = notify.targets(targets)
  if next(queued) then
    hk.spawn(notify.send, targets, { source = f.source, severity = f.severity, alert = f.alert,
                                     triage = answer.text, request_id = req.id })
  end
  return { status = "triaged", source = f.source, severity = f.severity, triage = answer.text,
           model = answer.model, notifications = queued }
end)
