-- hancock.status: GET /status, one self-contained HTML page (no external asset: its styles
-- and script are inline, and its Content-Security-Policy forbids loading anything else) that
-- refreshes itself from GET /status.json; and /status.json, which joins what the in-process
-- evaluator last published (rates, latency, modes, rules, reloads: lua/hancock/alerting.lua)
-- with the health report and the firing alerts. Entry point: lua/hancock.lua attaches it with
-- `require("hancock.status").attach(hk)`.

local core = require "hancock.core"

local json = core.json

local M = {}

local CSP = "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
  .. "connect-src 'self'; img-src data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

-- Every value is written with textContent or as SVG numbers: no markup from data, ever.
M.PAGE = [==[<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Hancock status</title>
<style>
  :root { --bg: #0f1419; --panel: #182028; --text: #e6e9ec; --dim: #8a96a3; --ok: #3fb950;
          --warn: #d29922; --bad: #f85149; --line: #58a6ff; }
  * { box-sizing: border-box; }
  body { margin: 0; font: 14px/1.4 system-ui, sans-serif; background: var(--bg); color: var(--text); }
  header { display: flex; align-items: baseline; gap: 1rem; padding: 1rem 1.5rem; border-bottom: 1px solid #2a333d; }
  header h1 { font-size: 1.2rem; margin: 0; }
  header .meta { color: var(--dim); }
  #overall { font-weight: 600; padding: .1rem .6rem; border-radius: 1rem; background: #2a333d; }
  main { display: grid; grid-template-columns: repeat(auto-fill, minmax(18rem, 1fr)); gap: 1rem; padding: 1rem 1.5rem; }
  section { background: var(--panel); border-radius: .5rem; padding: 1rem; }
  section.wide { grid-column: 1 / -1; }
  h2 { font-size: .8rem; text-transform: uppercase; letter-spacing: .06em; color: var(--dim); margin: 0 0 .6rem; }
  .big { font-size: 2rem; font-weight: 600; font-variant-numeric: tabular-nums; }
  .unit { color: var(--dim); font-size: .9rem; margin-left: .25rem; }
  table { width: 100%; border-collapse: collapse; font-variant-numeric: tabular-nums; }
  th, td { text-align: left; padding: .25rem .4rem; border-bottom: 1px solid #2a333d; vertical-align: top; }
  th { color: var(--dim); font-weight: 500; }
  .state-ok, .state-inactive { color: var(--ok); }
  .state-degraded, .state-pending, .state-warning { color: var(--warn); }
  .state-error, .state-firing, .state-critical { color: var(--bad); }
  .bar { height: .5rem; background: var(--line); border-radius: .25rem; }
  .empty { color: var(--dim); }
  svg { width: 100%; height: 4rem; }
  footer { color: var(--dim); padding: 0 1.5rem 1rem; }
</style>
</head>
<body data-ready="0">
<header>
  <h1>Hancock</h1>
  <span id="overall">loading…</span>
  <span class="meta">instance <span id="instance">–</span></span>
  <span class="meta">generation <span id="generation">–</span></span>
  <span class="meta">last reload <span id="reload">–</span></span>
</header>
<main>
  <section><h2>Requests</h2><span class="big" id="rps">–</span><span class="unit">req/s</span>
    <svg id="rps-trend" viewBox="0 0 100 30" preserveAspectRatio="none" aria-label="request rate trend"></svg></section>
  <section><h2>Errors</h2><span class="big" id="errors">–</span><span class="unit">of requests</span>
    <svg id="errors-trend" viewBox="0 0 100 30" preserveAspectRatio="none"
         aria-label="error ratio trend"></svg></section>
  <section><h2>Latency</h2>
    <table><tr><th>p50</th><th>p90</th><th>p99</th></tr>
      <tr><td id="p50">–</td><td id="p90">–</td><td id="p99">–</td></tr></table></section>
  <section><h2>Modes</h2><table id="modes"></table></section>
  <section class="wide"><h2>Firing alerts</h2><table id="alerts"></table></section>
  <section class="wide"><h2>Health checks</h2><table id="checks"></table></section>
  <section class="wide"><h2>Alert rules</h2><table id="rules"></table></section>
</main>
<footer>Updated <span id="updated">never</span> · refreshes every <span id="refresh">5</span> s ·
  data from <a href="status.json" style="color:inherit">/status.json</a> and
  <a href="alerts" style="color:inherit">/alerts</a></footer>
<script>
"use strict";
const REFRESH_MS = 5000;
const $ = (id) => document.getElementById(id);
function text(id, value) { $(id).textContent = value; }
function number(v, digits) {
  if (v === null || v === undefined) return "–";
  return Number(v).toLocaleString("en-US", { maximumFractionDigits: digits });
}
function seconds(v) {
  if (v === null || v === undefined) return "–";
  return v < 1 ? number(v * 1000, 1) + " ms" : number(v, 2) + " s";
}
function percent(v) { return v === null || v === undefined ? "–" : number(v * 100, 2) + " %"; }
function cell(row, value, cls) {
  const td = document.createElement("td");
  td.textContent = value;
  if (cls) td.className = cls;
  row.appendChild(td);
  return td;
}
function table(id, headers, rows, empty) {
  const t = $(id);
  t.replaceChildren();
  const head = document.createElement("tr");
  for (const h of headers) { const th = document.createElement("th"); th.textContent = h; head.appendChild(th); }
  t.appendChild(head);
  if (rows.length === 0) {
    const tr = document.createElement("tr");
    cell(tr, empty, "empty").colSpan = headers.length;
    t.appendChild(tr);
  }
  for (const r of rows) {
    const tr = document.createElement("tr");
    for (const [value, cls] of r) cell(tr, value, cls);
    t.appendChild(tr);
  }
}
function trend(id, points, key) {
  const svg = $(id);
  svg.replaceChildren();
  const values = points.map((p) => p[key]).filter((v) => v !== null && v !== undefined);
  if (values.length < 2) return;
  const max = Math.max(...values, 1e-9);
  const step = 100 / (points.length - 1);
  let d = "";
  points.forEach((p, i) => {
    const v = p[key];
    if (v === null || v === undefined) return;
    d += (d ? " L" : "M") + (i * step).toFixed(2) + " " + (30 - (v / max) * 28).toFixed(2);
  });
  const path = document.createElementNS("http://www.w3.org/2000/svg", "path");
  path.setAttribute("d", d);
  path.setAttribute("fill", "none");
  path.setAttribute("stroke", "#58a6ff");
  path.setAttribute("stroke-width", "1.5");
  path.setAttribute("vector-effect", "non-scaling-stroke");
  svg.appendChild(path);
}
function render(s) {
  const health = s.health || { status: "unknown", checks: {} };
  const overall = $("overall");
  overall.textContent = health.status;
  overall.className = "state-" + health.status;
  text("instance", s.instance || "–");
  text("generation", s.generation === undefined || s.generation === null ? "–" : number(s.generation, 0));
  const reload = s.last_reload || {};
  text("reload", (reload.at || "–") + (reload.successful === false ? " (failed)" : ""));
  text("rps", number(s.requests_per_second, 2));
  text("errors", percent(s.error_ratio));
  const latency = s.latency_seconds || {};
  text("p50", seconds(latency.p50));
  text("p90", seconds(latency.p90));
  text("p99", seconds(latency.p99));
  const modes = s.modes || [];
  const top = Math.max(...modes.map((m) => m.requests_per_second), 1e-9);
  table("modes", ["mode", "req/s", ""], modes.map((m) => [[m.mode], [number(m.requests_per_second, 2)], [""]]),
        "no requests with a mode yet");
  $("modes").querySelectorAll("tr").forEach((tr, i) => {
    if (i === 0 || !modes[i - 1]) return;
    const bar = document.createElement("div");
    bar.className = "bar";
    bar.style.width = Math.round((modes[i - 1].requests_per_second / top) * 100) + "%";
    tr.lastChild.appendChild(bar);
  });
  const alerts = (s.firing || []).map((a) => [
    [a.labels.alertname, "state-" + (a.labels.severity || "")], [a.labels.severity || ""],
    [a.annotations.summary || ""], [a.startsAt]]);
  table("alerts", ["alert", "severity", "summary", "since"], alerts, "none firing");
  const checks = Object.keys(health.checks || {}).sort().map((name) => {
    const c = health.checks[name];
    return [[name], [c.status, "state-" + c.status], [c.detail || ""]];
  });
  table("checks", ["check", "status", "detail"], checks, "no health checks defined");
  table("rules", ["rule", "severity", "for", "state"], (s.rules || []).map((r) => [
    [r.name], [r.severity], [r["for"]], [r.error ? "not evaluated: " + r.error : r.state, "state-" + r.state]]),
        "no hk.alert rules");
  trend("rps-trend", s.trend || [], "requests_per_second");
  trend("errors-trend", s.trend || [], "error_ratio");
  text("updated", s.generated_at || "–");
  document.body.dataset.ready = "1";
}
async function refresh() {
  try {
    const response = await fetch("status.json", { cache: "no-store" });
    if (!response.ok) throw new Error("HTTP " + response.status);
    render(await response.json());
  } catch (e) {
    text("updated", "failed: " + e.message);
  }
  setTimeout(refresh, REFRESH_MS);
}
text("refresh", REFRESH_MS / 1000);
refresh();
</script>
</body>
</html>
]==]

function M.attach(hk)
  local headers = {
    ["Content-Type"] = "text/html; charset=utf-8",
    ["Cache-Control"] = "no-store",
    ["Content-Security-Policy"] = CSP,
    ["X-Content-Type-Options"] = "nosniff",
  }
  hk.route("GET", "/status", function()
    return 200, M.PAGE, headers
  end)

  hk.route("GET", "/status.json", function()
    local text = core.carry_get("status.json")
    local status = text and json.decode(text) or { evaluator = "not started yet" }
    status.health = hk.health.report()
    local alerts = json.decode(core.carry_get("alerts.json") or "[]")
    local firing = json.array()
    for _, alert in ipairs(alerts) do
      if alert.status.state == "firing" then firing[#firing + 1] = alert end
    end
    status.firing = firing
    return 200, status, { ["Cache-Control"] = "no-store" }
  end)
end

return M
