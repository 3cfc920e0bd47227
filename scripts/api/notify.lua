-- api.notify: tells Slack and Microsoft Teams about a triaged webhook alert.
--
-- Sent from a background task (hk.spawn) after the webhook's response. A failed notification
-- is logged as notify_failed (without the webhook URL, which is a secret) and not retried.

local hk = require "hancock"

local json = hk.json

local notify = {}

local TIMEOUT_MS = math.tointeger(tonumber(hk.env("HANCOCK_NOTIFY_TIMEOUT_MS", "5000")))
assert(TIMEOUT_MS and TIMEOUT_MS > 0, "HANCOCK_NOTIFY_TIMEOUT_MS must be a positive integer")

-- Colours by the severity the alert's source reported.
local COLOURS = {
  critical = "#D0021B",
  high = "#F5A623",
  medium = "#F8E71C",
  low = "#4A90E2",
  info = "#7ED321",
  informational = "#7ED321",
}
local DEFAULT_COLOUR = "#9B9B9B"

local function colour(severity)
  return COLOURS[severity:lower()] or DEFAULT_COLOUR
end

-- At most `n` characters of `text`, cut on a UTF-8 boundary, with "…" when cut.
local function clip(text, n)
  local ok, cut = pcall(utf8.offset, text, n + 1)
  if not ok or cut == nil or cut > #text then
    return text
  end
  return text:sub(1, cut - 1) .. "…"
end

local function title(alert)
  return ("Hancock alert: %s [%s]"):format(alert.source, alert.severity:upper())
end

local function slack_payload(alert)
  return {
    attachments = {
      {
        color = colour(alert.severity),
        fallback = title(alert),
        title = title(alert),
        text = ("*Alert:* %s\n\n*Triage:* %s"):format(clip(alert.alert, 300), clip(alert.triage, 1500)),
        footer = "Hancock · request " .. alert.request_id,
      },
    },
  }
end

local function teams_payload(alert)
  return {
    ["@type"] = "MessageCard",
    ["@context"] = "https://schema.org/extensions",
    summary = title(alert),
    themeColor = colour(alert.severity):sub(2),
    title = title(alert),
    sections = {
      {
        facts = {
          { name = "Source", value = alert.source },
          { name = "Severity", value = alert.severity },
          { name = "Request", value = alert.request_id },
        },
        text = ("**Alert:** %s\n\n**Triage:** %s"):format(clip(alert.alert, 300), clip(alert.triage, 1500)),
      },
    },
  }
end

local payloads = { slack = slack_payload, teams = teams_payload }

-- Posts one notification; returns "sent" or "failed".
local function post(target, url, payload)
  local response, message = hk.http.request {
    method = "POST",
    url = url,
    headers = { ["Content-Type"] = "application/json" },
    body = json.encode(payload),
    timeout_ms = TIMEOUT_MS,
    connect_timeout_ms = math.min(2000, TIMEOUT_MS),
    max_bytes = 64 * 1024,
  }
  if response and response.status >= 200 and response.status < 300 then
    hk.log.info("notify_sent", { target = target, status = response.status })
    return "sent"
  end
  hk.log.error("notify_failed", {
    target = target,
    status = response and response.status,
    error = response and "unexpected HTTP status" or message,
  })
  return "failed"
end

--- {slack = "queued", teams = "queued"} for the targets configured in `urls`.
function notify.targets(urls)
  local queued = {}
  for _, target in ipairs { "slack", "teams" } do
    if urls[target] then
      queued[target] = "queued"
    end
  end
  return queued
end

--- Sends `alert` ({source, severity, alert, triage, request_id}) to every configured target in
--- `urls` ({slack = url, teams = url}; nil entries are skipped), Slack first; meant to run in
--- hk.spawn. Returns {slack = "sent"|"failed", teams = …} for the configured ones.
function notify.send(urls, alert)
  local results = {}
  for _, target in ipairs { "slack", "teams" } do
    if urls[target] then
      results[target] = post(target, urls[target], payloads[target](alert))
    end
  end
  return results
end

return notify
