"""The hk.alert rules evaluated inside the host (lua/hancock/alerting.lua): the same decisions as
Prometheus on promtool's own test cases, GET /alerts, hancock_alerts_firing, a log event per
transition, delivery to a real Alertmanager (the Debian package) and resolution, state kept
across a reload, and clear errors for what it cannot do."""
import json
import math
import os
import re
import shutil
import subprocess
import tempfile
import time
import unittest
import threading
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import yaml

from harness import (BIN, SOURCE_DIR, Server, ServersTestCase, free_port, metric_value, request,
                     write_scripts)

RULES_TEST = os.path.join(SOURCE_DIR, "monitoring", "alerting_rules_test.yaml")
PROMQL_CASES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "promql_cases.yaml")
SCRIPTS = os.path.join(SOURCE_DIR, "scripts")
TOKEN = "alerts-test-admin-token-0123456789"

# A rule on a gauge the test sets, so firing and resolving follow exactly what the test does.
LEVEL_SCRIPT = r'''
local hk = require "hancock"
local level = hk.metrics.gauge("demo_level", "A level the test sets", { "zone" })
hk.route("POST", "/level/:zone/:value", function(req)
  level:set({ zone = req.params.zone }, tonumber(req.params.value))
  return { ok = true }
end)
hk.alert("DemoLevelHigh", {
  group = "demo", threshold = 5, expr = "demo_level > {threshold}", ["for"] = "%s",
  severity = "page",
  summary = "Level high in {{ $labels.zone }}",
  description = "Level {{ $value }} in {{ $labels.zone }} is over {threshold} ({{ $value | humanizePercentage }})",
})
'''
UNSUPPORTED_SCRIPT = r'''
local hk = require "hancock"
hk.alert("UsesGroupLeft", {
  group = "demo", expr = "demo_level * on (zone) group_left demo_level > 1", ["for"] = "0s",
  severity = "warning", summary = "s", description = "d",
})
'''

FAST = {"HANCOCK_ALERTS_INTERVAL": "200ms", "LOG_LEVEL": "INFO"}


def http_json(url, data=None):
    req = urllib.request.Request(url, data=json.dumps(data).encode() if data is not None else None,
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as response:
        return json.loads(response.read())


class Alertmanager:
    """The real Alertmanager (Debian's prometheus-alertmanager) on a free loopback port."""

    def __init__(self):
        binary = shutil.which("prometheus-alertmanager") or shutil.which("alertmanager")
        if binary is None:
            raise unittest.SkipTest("prometheus-alertmanager is not installed (make deps-test)")
        self.dir = tempfile.mkdtemp(prefix="hancock-am-")
        with open(os.path.join(self.dir, "am.yml"), "w") as f:
            f.write("route:\n  receiver: none\n  group_wait: 1s\nreceivers:\n  - name: none\n")
        self.port = free_port()
        self.proc = subprocess.Popen(
            [binary, f"--config.file={self.dir}/am.yml", f"--storage.path={self.dir}/data",
             f"--web.listen-address=127.0.0.1:{self.port}", f"--cluster.listen-address=",
             "--log.level=warn"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.url = f"http://127.0.0.1:{self.port}"
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(self.url + "/-/ready", timeout=2).read()
                return
            except OSError:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    self.stop()
                    raise AssertionError("Alertmanager did not become ready")
                time.sleep(0.2)

    def alerts(self, name):
        return [a for a in http_json(self.url + "/api/v2/alerts")
                if a["labels"].get("alertname") == name]

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)


def wait_for(predicate, what, timeout=20):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


class AlertsTest(ServersTestCase):
    def level_server(self, hold="0s", env=None, extra_files=None):
        files = {"level.lua": LEVEL_SCRIPT % hold}
        files.update(extra_files or {})
        self.scripts = write_scripts(files)
        full_env = dict(FAST)
        full_env.update(env or {})
        server = Server(scripts=self.scripts, env=full_env)
        self.servers.append(server)
        return server

    def alerts(self, server, query=""):
        status, _, body = request(server, "GET", "/alerts" + query)
        self.assertEqual(status, 200, body)
        return json.loads(body)

    # ---- the same decisions as Prometheus -----------------------------------------------------

    def test_rules_decide_as_promtool_on_the_projects_test_cases(self):
        """Every case of monitoring/alerting_rules_test.yaml, run through promtool and through the
        host's evaluator: promtool passes them, and the host fires exactly the alerts (labels and
        annotations) each case expects, at each eval_time, and none other."""
        promtool = shutil.which("promtool")
        if promtool is None:
            self.skipTest("promtool is not installed (make deps-test)")
        subprocess.run([promtool, "test", "rules", "alerting_rules_test.yaml"], check=True,
                       cwd=os.path.dirname(RULES_TEST), capture_output=True)
        with open(RULES_TEST) as f:
            doc = yaml.safe_load(f)
        with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
            json.dump(doc, f)
            path = f.name
        try:
            out = subprocess.run([BIN, "test-alerts", path, "--scripts", SCRIPTS],
                                 capture_output=True, text=True, timeout=60)
        finally:
            os.unlink(path)
        self.assertEqual(out.returncode, 0, out.stderr)
        got = json.loads(out.stdout)["tests"]
        self.assertEqual(len(got), len(doc["tests"]))
        compared = fired = 0
        for test, result in zip(doc["tests"], got):
            self.assertEqual(len(result["results"]), len(test["alert_rule_test"]))
            for case, res in zip(test["alert_rule_test"], result["results"]):
                self.assertEqual((res["alertname"], res["eval_time"]), (case["alertname"], case["eval_time"]))
                expected = sorted(json.dumps([a.get("exp_labels", {}), a.get("exp_annotations", {})], sort_keys=True)
                                  for a in case.get("exp_alerts") or [])
                have = sorted(json.dumps([a["labels"], a["annotations"]], sort_keys=True) for a in res["alerts"])
                self.assertEqual(have, expected, f"{case['alertname']} at {case['eval_time']}")
                compared += 1
                fired += len(expected)
        self.assertGreaterEqual(compared, 20)
        self.assertGreaterEqual(fired, 10)

    def test_promql_engine_answers_as_prometheus(self):
        """Every expression of promql_cases.yaml (selectors, lookback and staleness, rate and its
        kin over resets, aggregations, vector matching, set operators, histogram_quantile, the
        math and *_over_time functions): the host's answers, written in as exp_samples, are what
        promtool computes, sample for sample; a value may differ only in its last bits, where
        Prometheus' own summation order varies between runs."""
        promtool = shutil.which("promtool")
        if promtool is None:
            self.skipTest("promtool is not installed (make deps-test)")
        with open(PROMQL_CASES) as f:
            doc = yaml.safe_load(f)
        work = tempfile.mkdtemp(prefix="hancock-promql-")
        self.addCleanup(shutil.rmtree, work, True)
        with open(os.path.join(work, "cases.json"), "w") as f:
            json.dump(doc, f)
        out = subprocess.run([BIN, "test-alerts", os.path.join(work, "cases.json"), "--scripts", SCRIPTS],
                             capture_output=True, text=True, timeout=60)
        self.assertEqual(out.returncode, 0, out.stderr)
        answers = json.loads(out.stdout)["tests"][0]["exprs"]
        cases = doc["tests"][0]["promql_expr_test"]
        self.assertEqual([(a["expr"], a["eval_time"]) for a in answers],
                         [(c["expr"], c["eval_time"]) for c in cases])
        samples = 0
        for case, answer in zip(cases, answers):
            case["exp_samples"] = [{"labels": self.series_text(s["labels"]), "value": float(s["value"])}
                                   for s in answer["samples"]]
            samples += len(answer["samples"])
        self.assertGreaterEqual(len(cases), 80)
        self.assertGreaterEqual(samples, 150)
        with open(os.path.join(work, "cases.yaml"), "w") as f:
            yaml.safe_dump(doc, f, sort_keys=False)
        run = subprocess.run([promtool, "test", "rules", "cases.yaml"], cwd=work, capture_output=True,
                             text=True, timeout=120)
        report = run.stdout + run.stderr
        mismatches = re.findall(r'expr: "((?:[^"\\]|\\.)*)", time: (\S+),\n\s+exp: (.*)\n\s+got: (.*)', report)
        self.assertEqual(run.returncode != 0, bool(mismatches), report)
        for expr, at, expected, got in mismatches:
            ours, theirs = self.parse_samples(expected), self.parse_samples(got)
            self.assertEqual(sorted(ours), sorted(theirs), f"{expr} at {at}: series differ\n{report}")
            for labels, value in ours.items():
                other = theirs[labels]
                self.assertTrue(math.isclose(value, other, rel_tol=1e-12) or (math.isnan(value) and math.isnan(other)),
                                f"{expr} at {at} {labels}: host {value!r}, Prometheus {other!r}")

    @staticmethod
    def series_text(labels):
        name = labels.get("__name__", "")
        rest = ", ".join('%s="%s"' % (k, v) for k, v in sorted(labels.items()) if k != "__name__")
        return name + ("{%s}" % rest if rest or not name else "")

    @staticmethod
    def parse_samples(text):
        """promtool's `{a="b", c="d"} 1.5E-01, name{...} 2` into {labels text: value}."""
        out = {}
        for labels, value in re.findall(r'([\w:]*\{[^}]*\})\s+(\S+?)(?:,\s*|$)', text.strip()):
            out[labels] = float(value)
        return out

    def test_test_alerts_explains_bad_input(self):
        out = subprocess.run([BIN, "test-alerts"], capture_output=True, text=True)
        self.assertEqual(out.returncode, 2)
        self.assertIn("needs a file", out.stderr)
        out = subprocess.run([BIN, "test-alerts", "/nonexistent.json", "--scripts", SCRIPTS],
                             capture_output=True, text=True)
        self.assertEqual(out.returncode, 1)
        self.assertIn("cannot read /nonexistent.json", out.stderr)
        with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
            json.dump({"tests": [{"interval": "1m", "input_series": [{"series": "x{a=~\"b\"}", "values": "1"}],
                                  "alert_rule_test": [{"eval_time": "1m", "alertname": "A"}]}]}, f)
            path = f.name
        try:
            out = subprocess.run([BIN, "test-alerts", path, "--scripts", SCRIPTS], capture_output=True, text=True)
        finally:
            os.unlink(path)
        self.assertEqual(out.returncode, 1)
        self.assertIn("labels must be given with =", out.stderr)

    # ---- in the running host --------------------------------------------------------------------

    def test_gauge_over_threshold_fires_and_resolves(self):
        server = self.level_server()
        self.assertEqual(request(server, "POST", "/level/east/12")[0], 200)
        firing = server.wait_event("alert_firing", predicate=lambda e: e["alertname"] == "DemoLevelHigh")
        self.assertEqual(firing["labels"], {"alertname": "DemoLevelHigh", "zone": "east", "severity": "page",
                                            "instance": firing["labels"]["instance"], "job": "hancock"})
        self.assertEqual(firing["level"], "WARNING")
        alerts = [a for a in self.alerts(server) if a["labels"]["alertname"] == "DemoLevelHigh"]
        self.assertEqual(len(alerts), 1)
        alert = alerts[0]
        self.assertEqual(alert["status"]["state"], "firing")
        self.assertEqual(alert["annotations"]["summary"], "Level high in east")
        self.assertEqual(alert["annotations"]["description"], "Level 12 in east is over 5 (1200%)")
        self.assertRegex(alert["fingerprint"], r"^[0-9a-f]{16}$")
        self.assertRegex(alert["startsAt"], r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
        metrics = request(server, "GET", "/metrics")[2].decode()
        self.assertEqual(metric_value(metrics, "hancock_alerts_firing", alertname="DemoLevelHigh", severity="page"), 1)

        self.assertEqual(request(server, "POST", "/level/east/1")[0], 200)
        resolved = server.wait_event("alert_resolved", predicate=lambda e: e["alertname"] == "DemoLevelHigh")
        self.assertEqual(resolved["fingerprint"], alert["fingerprint"])
        self.assertEqual([a["labels"]["zone"] for a in self.alerts(server, "?state=firing")
                          if a["labels"]["alertname"] == "DemoLevelHigh"], [])
        done = [a for a in self.alerts(server, "?state=resolved") if a["labels"]["alertname"] == "DemoLevelHigh"]
        self.assertEqual(len(done), 1)
        self.assertGreaterEqual(done[0]["endsAt"], done[0]["startsAt"])
        metrics = request(server, "GET", "/metrics")[2].decode()
        self.assertEqual(metric_value(metrics, "hancock_alerts_firing", alertname="DemoLevelHigh", severity="page"), 0)

    def test_for_duration_holds_an_alert_pending(self):
        server = self.level_server(hold="1h")
        request(server, "POST", "/level/west/9")
        server.wait_event("alert_pending", predicate=lambda e: e["alertname"] == "DemoLevelHigh")
        time.sleep(1)  # five evaluations at 200 ms
        self.assertEqual(server.events("alert_firing"), [])
        pending = [a for a in self.alerts(server, "?state=pending") if a["labels"]["alertname"] == "DemoLevelHigh"]
        self.assertEqual([a["labels"]["zone"] for a in pending], ["west"])
        self.assertEqual([a for a in self.alerts(server) if a["labels"]["alertname"] == "DemoLevelHigh"], [])
        metrics = request(server, "GET", "/metrics")[2].decode()
        self.assertEqual(metric_value(metrics, "hancock_alerts_pending", alertname="DemoLevelHigh", severity="page"), 1)

    def test_a_reload_keeps_a_firing_alert_and_its_start(self):
        files = {"level.lua": LEVEL_SCRIPT % "0s"}
        self.scripts = write_scripts(files)
        server = Server(scripts=self.scripts, env=dict(FAST, HANCOCK_ADMIN_TOKEN=TOKEN))
        self.servers.append(server)
        request(server, "POST", "/level/north/50")
        server.wait_event("alert_firing")
        before = [a for a in self.alerts(server) if a["labels"]["alertname"] == "DemoLevelHigh"]
        status, _, body = request(server, "POST", "/admin/reload", headers={"Authorization": "Bearer " + TOKEN})
        self.assertEqual(status, 200, body)
        time.sleep(0.8)  # several evaluations by the new generation
        after = [a for a in self.alerts(server) if a["labels"]["alertname"] == "DemoLevelHigh"]
        self.assertEqual(len(after), 1)
        self.assertEqual(after[0]["startsAt"], before[0]["startsAt"])
        self.assertEqual(after[0]["fingerprint"], before[0]["fingerprint"])
        self.assertEqual(len(server.events("alert_firing")), 1, "the reload must not fire it again")
        self.assertEqual(len(server.events("alert_pending")), 1)

    def test_shipped_rules_keep_evaluating_at_a_short_interval(self):
        """The shipped rules read ranges of up to an hour: at a 200 ms interval the history holds
        thousands of samples a series, and a tick must still stay small (a tick that rebuilt the
        status trend from the whole history ran past the Lua time limit and ended the loop)."""
        server = Server(scripts=SCRIPTS, env=dict(FAST, HANCOCK_LLM_BACKEND="ollama",
                                                  OLLAMA_BASE_URL=f"http://127.0.0.1:{free_port()}"))
        self.servers.append(server)

        def evaluations():
            metrics = request(server, "GET", "/metrics")[2].decode()
            return metric_value(metrics, "hancock_alert_evaluations_total", result="ok") or 0

        first = wait_for(evaluations, "a first evaluation")
        wait_for(lambda: evaluations() >= first * 10, "ten more ticks", timeout=30)
        self.assertEqual(server.events("task_error"), [])
        status = json.loads(request(server, "GET", "/status.json")[2])
        self.assertLessEqual(len(status["trend"]), 60)

    def test_alerts_endpoint_refuses_an_unknown_state(self):
        server = self.level_server()
        status, _, body = request(server, "GET", "/alerts?state=bogus")
        self.assertEqual(status, 400)
        self.assertIn("state must be firing, pending, resolved or all", json.loads(body)["error"])
        self.assertEqual(self.alerts(server, "?state=all"), self.alerts(server, "?state=all"))

    def test_unsupported_rule_is_reported_and_the_others_still_run(self):
        server = self.level_server(extra_files={"z_unsupported.lua": UNSUPPORTED_SCRIPT})
        event = server.wait_event("alert_rule_unsupported")
        self.assertEqual(event["alertname"], "UsesGroupLeft")
        self.assertIn("group_left is not supported", event["message"])
        request(server, "POST", "/level/south/7")
        server.wait_event("alert_firing", predicate=lambda e: e["alertname"] == "DemoLevelHigh")

        def rules():
            status = json.loads(request(server, "GET", "/status.json")[2])
            by_name = {r["name"]: r for r in status["rules"]}
            return by_name if by_name["DemoLevelHigh"]["state"] == "firing" else None
        by_name = wait_for(rules, "the status page's data to show the alert firing")
        self.assertIn("group_left is not supported", by_name["UsesGroupLeft"]["error"])

    def test_disabled_evaluates_nothing(self):
        server = self.level_server(env={"HANCOCK_ALERTS": "off"})
        server.wait_event("alerts_disabled")
        request(server, "POST", "/level/east/12")
        time.sleep(0.6)
        self.assertEqual(server.events("alert_firing"), [])
        self.assertEqual(self.alerts(server, "?state=all"), [])

    def test_bad_interval_is_reported_and_the_default_used(self):
        server = self.level_server(env={"HANCOCK_ALERTS_INTERVAL": "soon"})
        event = server.wait_event("alerts_config_invalid")
        self.assertIn("HANCOCK_ALERTS_INTERVAL", event["message"])

    # ---- the real rules, a real Alertmanager ------------------------------------------------------

    def test_error_rate_fires_in_process_reaches_alertmanager_and_resolves(self):
        am = Alertmanager()
        self.fakes.append(am)
        server = Server(scripts=SCRIPTS, env={
            "HANCOCK_ALERTS_INTERVAL": "250ms", "HANCOCK_ALERTS_RESEND": "1s",
            "HANCOCK_RULES_FOR": "1s", "HANCOCK_RULES_WINDOW": "4s", "ALERTMANAGER_URL": am.url,
            "HANCOCK_ALERTS_INSTANCE": "hancock-test:5000", "LOG_LEVEL": "INFO"})
        self.servers.append(server)
        deadline = time.monotonic() + 20
        while not server.events("alert_firing") or not any(
                e["alertname"] == "HancockHighErrorRate" for e in server.events("alert_firing")):
            self.assertEqual(request(server, "GET", "/no-such-page")[0], 404)
            self.assertLess(time.monotonic(), deadline, "HancockHighErrorRate did not fire")
            time.sleep(0.02)
        local = [a for a in self.alerts(server) if a["labels"]["alertname"] == "HancockHighErrorRate"]
        self.assertEqual(len(local), 1)
        self.assertEqual(local[0]["labels"]["instance"], "hancock-test:5000")
        self.assertEqual(local[0]["labels"]["severity"], "warning")
        self.assertIn("hancock-test:5000 failed", local[0]["annotations"]["description"])

        received = wait_for(lambda: am.alerts("HancockHighErrorRate"), "the alert in Alertmanager")
        self.assertEqual(received[0]["labels"], local[0]["labels"])
        self.assertEqual(received[0]["annotations"], local[0]["annotations"])
        self.assertEqual(received[0]["fingerprint"], local[0]["fingerprint"])
        self.assertEqual(received[0]["status"]["state"], "active")

        # Errors stop, good requests go on: resolved here, then in Alertmanager.
        deadline = time.monotonic() + 20
        while not any(e["alertname"] == "HancockHighErrorRate" for e in server.events("alert_resolved")):
            self.assertEqual(request(server, "GET", "/")[0], 200)
            self.assertLess(time.monotonic(), deadline, "HancockHighErrorRate did not resolve")
            time.sleep(0.02)
        wait_for(lambda: not am.alerts("HancockHighErrorRate"), "Alertmanager to see it resolved")
        metrics = request(server, "GET", "/metrics")[2].decode()
        self.assertGreaterEqual(metric_value(metrics, "hancock_alert_notifications_total", result="ok"), 2)
        self.assertEqual(metric_value(metrics, "hancock_alert_notifications_total", result="error"), None)

    def test_unreachable_alertmanager_is_counted_and_logged(self):
        server = self.level_server(env={"ALERTMANAGER_URL": f"http://127.0.0.1:{free_port()}"})
        request(server, "POST", "/level/east/12")
        event = server.wait_event("alert_notification_failed")
        self.assertIn("Alertmanager did not take 1 alert(s)", event["message"])
        metrics = request(server, "GET", "/metrics")[2].decode()
        self.assertGreaterEqual(metric_value(metrics, "hancock_alert_notifications_total", result="error"), 1)

    def fake_alertmanager(self):
        """A stand-in Alertmanager on loopback that keeps every alert batch POSTed to it."""
        batches = []

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                batches.append((self.path, json.loads(body)))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=httpd.serve_forever, daemon=True).start()
        self.addCleanup(httpd.server_close)
        self.addCleanup(httpd.shutdown)
        return f"http://127.0.0.1:{httpd.server_address[1]}", batches

    def test_notify_off_keeps_alerts_in_the_host_and_sends_nothing(self):
        url, batches = self.fake_alertmanager()
        server = self.level_server(env={"ALERTMANAGER_URL": url, "HANCOCK_ALERTS_NOTIFY": "off"})
        request(server, "POST", "/level/east/12")
        server.wait_event("alert_firing", predicate=lambda e: e["alertname"] == "DemoLevelHigh")
        self.assertEqual([a["status"]["state"] for a in self.alerts(server)
                          if a["labels"]["alertname"] == "DemoLevelHigh"], ["firing"])
        time.sleep(1)  # five evaluations at 200 ms: any of them would have sent the batch
        self.assertEqual(batches, [])
        self.assertEqual(server.events("alert_notification_failed"), [])

    def test_bad_switch_values_are_reported_and_on_is_kept(self):
        url, batches = self.fake_alertmanager()
        server = self.level_server(env={"ALERTMANAGER_URL": url, "HANCOCK_ALERTS_NOTIFY": "maybe",
                                        "HANCOCK_ALERTS": "yes"})
        server.wait_event("alerts_config_invalid", predicate=lambda e: "HANCOCK_ALERTS_NOTIFY" in e["message"])
        invalid = [e["message"] for e in server.events("alerts_config_invalid")]
        self.assertTrue(any('HANCOCK_ALERTS must be on or off, not "yes"' in m for m in invalid), invalid)
        self.assertTrue(any('HANCOCK_ALERTS_NOTIFY must be on or off, not "maybe"' in m for m in invalid), invalid)
        request(server, "POST", "/level/east/12")
        wait_for(lambda: batches, "the firing alert at the fake Alertmanager")
        path, alerts = batches[0]
        self.assertEqual(path, "/api/v2/alerts")
        self.assertEqual([a["labels"]["zone"] for a in alerts if a["labels"]["alertname"] == "DemoLevelHigh"],
                         ["east"])


if __name__ == "__main__":
    unittest.main()
