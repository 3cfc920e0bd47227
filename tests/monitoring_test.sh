#!/usr/bin/env bash
# Monitoring assets: the committed rules and dashboard match what the binary generates, the
# rules pass promtool's checks and unit tests, a threshold change in the scripts reaches the
# rules, and the dashboard is valid JSON with the expected panels.
#   tests/monitoring_test.sh <subcommand> <path to hancock>
# Subcommands: rules_fresh dashboard_fresh rules_check rules_unit threshold_changes_rule
#              dashboard_valid
set -euo pipefail

cmd=${1:?usage: monitoring_test.sh <subcommand> <hancock binary>}
hancock=${2:?usage: monitoring_test.sh <subcommand> <hancock binary>}
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
# The committed files are generated with the defaults: overrides must not leak in.
unset HANCOCK_RULES_FOR HANCOCK_RULES_WINDOW HANCOCK_RUNBOOK_BASE_URL

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

fail() { echo "FAIL: $*" >&2; exit 1; }

fresh() { # fresh <subcommand> <committed file>
  "$hancock" "$1" --scripts scripts >"$tmp/generated"
  if ! diff -u "$2" "$tmp/generated"; then
    echo "FAIL: $2 is stale; regenerate: $hancock $1 --scripts scripts > $2" >&2
    exit 1
  fi
}

case "$cmd" in
  rules_fresh) fresh rules monitoring/alerting_rules.yaml ;;
  dashboard_fresh) fresh dashboard monitoring/grafana_dashboard.json ;;
  rules_check) promtool check rules monitoring/alerting_rules.yaml ;;
  rules_unit) (cd monitoring && promtool test rules alerting_rules_test.yaml) ;;
  threshold_changes_rule)
    cp -r scripts "$tmp/scripts"
    grep -q 'threshold = 0.05,' "$tmp/scripts/alerts.lua"
    sed -i 's/threshold = 0.05,/threshold = 0.125,/' "$tmp/scripts/alerts.lua"
    "$hancock" rules --scripts "$tmp/scripts" >"$tmp/rules.yaml"
    grep -q '\[5m\])) > 0.125"' "$tmp/rules.yaml"
    if grep -q '> 0.05"' "$tmp/rules.yaml"; then fail "old threshold still in the rules"; fi
    promtool check rules "$tmp/rules.yaml"
    # The test overrides rewrite every for: and every range window.
    HANCOCK_RULES_FOR=2s HANCOCK_RULES_WINDOW=10s "$hancock" rules --scripts "$tmp/scripts" >"$tmp/fast.yaml"
    grep -q 'for: "2s"' "$tmp/fast.yaml"
    if grep -Eq 'for: "[0-9]+m"' "$tmp/fast.yaml"; then fail "HANCOCK_RULES_FOR left a for: unchanged"; fi
    grep -q 'deriv(hancock_memory_usage_bytes\[10s\])' "$tmp/fast.yaml"
    if grep -Eq '\[[0-9]+m\]' "$tmp/fast.yaml"; then fail "HANCOCK_RULES_WINDOW left a window unchanged"; fi
    promtool check rules "$tmp/fast.yaml"
    echo "ok: threshold change reached the rules"
    ;;
  dashboard_valid)
    python3 - monitoring/grafana_dashboard.json <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
panels = [p for p in d["panels"] if p["type"] != "row"]
titles = [p["title"] for p in panels]
assert len(panels) >= 10, titles
for name in ["Request Rate", "Error Rate %", "Requests by Endpoint", "Requests by Mode",
             "Memory Usage", "Active Connections", "Total Requests", "Total Errors",
             "Current Memory"]:
    assert name in titles, name
assert titles.count("Active Connections") == 2, titles
assert d["refresh"] == "30s"
assert any(v["type"] == "datasource" and v["query"] == "prometheus"
           for v in d["templating"]["list"])
exprs = [t["expr"] for p in panels for t in p["targets"]]
assert "rate(hancock_requests_total[2m])" in exprs
assert any("histogram_quantile" in e and "hancock_request_duration_seconds_bucket" in e for e in exprs)
assert any("hancock_model_response_time_seconds_bucket" in e for e in exprs)
assert any("hancock_rate_limit_exceeded_total" in e for e in exprs)
assert any("hancock_health_check_status" in e for e in exprs)
assert any("hancock_config_last_reload_successful" in e for e in exprs)
ids = [p["id"] for p in d["panels"]]
assert len(ids) == len(set(ids)), ids
print("ok: %d panels" % len(panels))
PY
    ;;
  *) echo "unknown subcommand: $cmd" >&2; exit 2 ;;
esac
