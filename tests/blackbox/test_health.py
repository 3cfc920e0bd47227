"""Black-box tests of deep health checks: GET /health, /health/live and /health/ready, the probes
(http, memory, disk, lua) against a fake upstream on 127.0.0.1, the cache that keeps reads from
waiting on probes or stampeding them, the health_changed log and the hancock_health_* metrics.

Fixtures: tests/blackbox/scripts_health/ (probes/: one HTTP check per outcome; rules/: a
critical and a non-critical check; system/: memory and disk; lua/: checks written in Lua) and the
repository's own scripts/health.lua. Intervals and timeouts come from the environment so the
suite stays fast. The reload tests write their checks as Lua (lua_checks) into a directory of
their own and reload it through POST /admin/reload.
"""
import json
import os
import re
import shutil
import subprocess
import threading
import time
import unittest
import urllib.request
import uuid

import harness
from harness import metric_value
from fakes import _FakeBase, _Handler
from harness import SOURCE_DIR, Server, free_port, request, write_scripts

HERE = os.path.dirname(os.path.abspath(__file__))
FIXTURES = os.path.join(HERE, "scripts_health")
SCRIPTS = os.path.join(os.path.abspath(SOURCE_DIR), "scripts")

# Every variable the repository's scripts read, cleared so the runner's environment cannot leak
# in (hk.env treats an empty value as unset).
CLEAN_ENV = {name: "" for name in (
    "HANCOCK_API_KEY", "HANCOCK_WEBHOOK_SECRET", "HANCOCK_SLACK_WEBHOOK", "HANCOCK_TEAMS_WEBHOOK",
    "HANCOCK_LLM_BACKEND", "HANCOCK_HEALTH_INTERVAL_MS", "HANCOCK_HEALTH_TIMEOUT_MS",
    "OLLAMA_BASE_URL", "OLLAMA_MODEL", "OLLAMA_CODER_MODEL", "NVIDIA_BASE_URL", "NVIDIA_API_KEY",
    "NVIDIA_MODEL", "OPENAI_BASE_URL", "OPENAI_API_KEY", "OPENAI_MODEL", "PROMETHEUS_URL")}


ADMIN_TOKEN = "health-reload-token-0123456789"


def lua_value(value):
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    return json.dumps(value)  # a JSON string of ASCII is a Lua string


def lua_checks(checks, thresholds=None):
    """A script defining one http check per name in `checks` ({name: {option: value}}, Python
    values written as Lua), then hk.health.threshold(name, values) per entry of `thresholds`."""
    lines = ['local hk = require "hancock"', ""]
    for name, opts in checks.items():
        fields = "".join(", %s = %s" % (k, lua_value(v)) for k, v in opts.items())
        lines.append('hk.health.check("%s", { kind = "http"%s })' % (name, fields))
    for name, values in (thresholds or {}).items():
        fields = ", ".join("%s = %s" % (k, lua_value(v)) for k, v in values.items())
        lines.append('hk.health.threshold("%s", { %s })' % (name, fields))
    return "\n".join(lines) + "\n"


# ---- a fake upstream: GET endpoints with scripted answers ------------------------------------

class _UpstreamHandler(_Handler):
    def do_GET(self):
        fake = self.fake
        fake.record({"path": self.path, "authorization": self.headers.get("Authorization")})
        answer = fake.answer(self.path)
        if answer.get("hang"):
            fake.release.wait(60)  # never answers within a test; released when the fake stops
            return
        if answer.get("delay_s"):
            time.sleep(answer["delay_s"])
        body = answer.get("body", {"status": "up"})
        self.send(answer.get("status", 200), body)


class FakeUpstream(_FakeBase):
    """Answers GET on any path; `answers[path]` = {status, body (dict or raw str), delay_s, hang}
    (default: 200 {"status": "up"}). Change answers any time; `count(path)` counts requests."""

    def __init__(self, answers=None):
        self.answers = dict(answers or {})
        self.release = threading.Event()
        super().__init__(_UpstreamHandler)

    def answer(self, path):
        with self.lock:
            return dict(self.answers.get(path, {}))

    def set(self, path, **answer):
        with self.lock:
            self.answers[path] = answer

    def count(self, path):
        return sum(1 for r in self.received() if r["path"] == path)

    def stop(self):
        self.release.set()
        super().stop()


class HealthTest(harness.ServersTestCase):
    # ---- helpers ---------------------------------------------------------------------------

    def upstream(self, answers=None):
        fake = FakeUpstream(answers)
        self.fakes.append(fake)
        return fake

    def serve(self, scripts, **env):
        full = dict(CLEAN_ENV)
        full.update({k: str(v) for k, v in env.items()})
        server = Server(scripts=scripts, env=full)
        self.servers.append(server)
        return server

    def get(self, server, path):
        status, headers, body = request(server, "GET", path)
        self.assertEqual(headers.get("content-type"), "application/json", body)
        return status, json.loads(body)

    def metrics(self, server):
        # /metrics is chunked; urllib reads that framing.
        with urllib.request.urlopen(f"http://127.0.0.1:{server.port}/metrics", timeout=10) as resp:
            return resp.read().decode()

    def changes(self, server, check):
        return [(e["from"], e["to"]) for e in server.events("health_changed") if e["check"] == check]

    def wait_change(self, server, check, to, frm="pending", timeout=10):
        """The health_changed event of `check` from `frm` to `to` (each change is logged once)."""
        return server.wait_event("health_changed", timeout,
                                 lambda e: e["check"] == check and e["from"] == frm and e["to"] == to)

    def wait_changes(self, server, check, count, timeout=10):
        """Waits for the count-th health_changed event of `check`; returns them all as (from, to)."""
        deadline = time.monotonic() + timeout
        while len(self.changes(server, check)) < count:
            if time.monotonic() > deadline:
                raise AssertionError("%s: %d changes, not %d" % (check, len(self.changes(server, check)), count))
            with server.cond:
                server.cond.wait(0.1)
        return self.changes(server, check)

    def wait_all_checked(self, server, names, timeout=10):
        for name in names:
            server.wait_event("health_changed", timeout, lambda e, n=name: e["check"] == n)

    def reloadable(self, source, **env):
        """A server on a scripts directory of its own (checks.lua = source) that reloads on
        POST /admin/reload; returns (directory, server)."""
        d = write_scripts({"checks.lua": source})
        self.addCleanup(shutil.rmtree, d, True)
        return d, self.serve(d, HANCOCK_ADMIN_TOKEN=ADMIN_TOKEN, **env)

    def rewrite(self, directory, source, name="checks.lua"):
        """Replaces a script (write, then rename, as editors do); None removes it. The change also
        starts a file-watch reload of its own, which the tests must (and do) take in their stride."""
        path = os.path.join(directory, name)
        if source is None:
            os.remove(path)
            return
        with open(path + ".tmp", "w") as f:
            f.write(source)
        os.rename(path + ".tmp", path)

    def reload(self, server):
        """Reloads the scripts; returns the new generation."""
        status, _, body = request(server, "POST", "/admin/reload", body=b"",
                                  headers={"Authorization": "Bearer " + ADMIN_TOKEN})
        doc = json.loads(body)
        self.assertEqual((status, doc["result"]), (200, "success"), doc)
        return doc["generation"]

    def sync_log(self, server):
        """Returns once every line the server logged before this call has been read: a request's
        request_completed comes after them on stdout."""
        request_id = "sync-" + uuid.uuid4().hex
        request(server, "GET", "/health/live", headers={"X-Request-Id": request_id})
        server.wait_event("request_completed", predicate=lambda e: e["request_id"] == request_id)

    def runs(self, server, check):
        """Probes of `check` so far, whatever their result (hancock_health_check_runs_total)."""
        text = self.metrics(server)
        return sum(metric_value(text, "hancock_health_check_runs_total", check=check, result=result) or 0
                   for result in ("ok", "degraded", "error"))

    def wait_probed(self, server, check):
        """Waits for a probe of `check` that ends after this call (so, after a reload, a probe of the
        new generation), then for the log to be read up to it."""
        before = self.runs(server, check)
        self.wait_metric(server, lambda _: self.runs(server, check) > before, "a probe of " + check)
        self.sync_log(server)

    def wait_metric(self, server, condition, what, timeout=10):
        """Scrapes until condition(exposition text) holds."""
        deadline = time.monotonic() + timeout
        while True:
            text = self.metrics(server)
            if condition(text):
                return text
            if time.monotonic() > deadline:
                raise AssertionError("timed out waiting for %s; metrics:\n%s" % (what, text))
            time.sleep(0.05)

    # ---- no checks: the routes exist anyway ---------------------------------------------------

    def test_routes_exist_without_checks(self):
        d = write_scripts({})
        self.addCleanup(shutil.rmtree, d, True)
        server = self.serve(d)
        status, headers, body = request(server, "GET", "/health")
        self.assertEqual((status, json.loads(body)), (200, {"status": "ok", "checks": {}}))
        self.assertEqual(headers.get("cache-control"), "no-store")
        self.assertEqual(body, b'{"checks":{},"status":"ok"}')  # {} stays an object
        self.assertEqual(self.get(server, "/health/live"), (200, {"status": "ok"}))
        self.assertEqual(self.get(server, "/health/ready"), (200, {"ready": True, "status": "ok"}))
        status, _, body = request(server, "HEAD", "/health")
        self.assertEqual((status, body), (200, b""))
        status, headers, _ = request(server, "POST", "/health", body=b"")
        self.assertEqual(status, 405)
        self.assertIn("GET", headers.get("allow", ""))
        self.assertEqual(server.events("health_changed"), [])
        self.assertEqual(server.events("task_error"), [])
        self.assertNotIn("hancock_health_check", self.metrics(server))  # registered with a check

    # ---- what each probe outcome reports ------------------------------------------------------

    def test_http_probe_outcomes(self):
        fake = self.upstream({
            "/slow": {"delay_s": 2},
            "/fail": {"status": 500, "body": {"error": "boom"}},
            "/malformed": {"body": "this is { not json"},
            "/api/tags": {"body": {"models": [{"name": "present:1b"}, {"name": "other:7b"}]}},
        })
        server = self.serve(os.path.join(FIXTURES, "probes"), HK_TEST_UPSTREAM=fake.url,
                            HK_TEST_REFUSED_URL="http://127.0.0.1:%d" % free_port(), HK_TEST_TIMEOUT_MS=300)
        names = ["ok", "slow", "server_error", "refused", "malformed", "model_missing", "model_present",
                 "wrong_status", "field_equals", "validated", "slow_warn"]
        self.wait_all_checked(server, names)
        started = time.monotonic()
        status, doc = self.get(server, "/health")
        self.assertLess(time.monotonic() - started, 0.5)
        self.assertEqual(status, 200, doc)  # nothing critical: degraded, still 200
        self.assertEqual(doc["status"], "degraded")
        checks = doc["checks"]
        self.assertEqual(sorted(checks), sorted(names))

        self.assertEqual(checks["ok"]["status"], "ok")
        self.assertNotIn("detail", checks["ok"])
        self.assertIsInstance(checks["ok"]["latency_ms"], (int, float))
        self.assertGreaterEqual(checks["ok"]["latency_ms"], 0)
        self.assertLess(checks["ok"]["latency_ms"], 1000)

        self.assertEqual(checks["slow"]["status"], "error")
        self.assertEqual(checks["slow"]["detail"], "timeout after 300 ms")
        self.assertGreaterEqual(checks["slow"]["latency_ms"], 250)
        self.assertLess(checks["slow"]["latency_ms"], 1900)

        self.assertEqual(checks["server_error"], {"status": "error", "detail": "HTTP 500",
                                                  "latency_ms": checks["server_error"]["latency_ms"]})
        self.assertEqual(checks["refused"]["status"], "error")
        self.assertTrue(checks["refused"]["detail"].startswith("connect: "), checks["refused"])
        self.assertEqual(checks["malformed"]["status"], "error")
        self.assertTrue(checks["malformed"]["detail"].startswith("invalid JSON"), checks["malformed"])
        self.assertEqual(checks["model_missing"]["status"], "error")
        self.assertEqual(checks["model_missing"]["detail"],
                         'models.*.name has no "llama3.1:8b" (found: "present:1b", "other:7b")')
        self.assertEqual(checks["model_present"]["status"], "ok")
        self.assertEqual(checks["wrong_status"]["detail"], "HTTP 200")
        self.assertEqual(checks["field_equals"]["detail"], 'status is "up", expected "down"')
        self.assertEqual(checks["validated"]["status"], "degraded")
        self.assertEqual(checks["validated"]["detail"], "validate saw 200 and status=up")
        self.assertEqual(checks["slow_warn"]["status"], "degraded")
        self.assertRegex(checks["slow_warn"]["detail"], r"^slow: \d+ ms \(degraded above 0 ms\)$")

        # The log says the same, once per check, at a level that matches.
        for name in names:
            events = [e for e in server.events("health_changed") if e["check"] == name]
            self.assertEqual(len(events), 1, events)
            event = events[0]
            self.assertEqual((event["from"], event["to"]), ("pending", checks[name]["status"]))
            self.assertEqual(event.get("detail"), checks[name].get("detail"))
            self.assertEqual(event["level"], {"ok": "INFO", "degraded": "WARNING", "error": "ERROR"}[event["to"]])
            self.assertIs(event["critical"], False)

    # ---- overall status and HTTP codes --------------------------------------------------------

    def test_critical_failure_is_error_non_critical_is_degraded(self):
        fake = self.upstream()
        server = self.serve(os.path.join(FIXTURES, "rules"), HK_TEST_UPSTREAM=fake.url,
                            HK_TEST_INTERVAL_MS=100)
        self.wait_change(server, "core", "ok")
        self.wait_change(server, "extra", "ok")
        status, doc = self.get(server, "/health")
        self.assertEqual((status, doc["status"]), (200, "ok"), doc)
        self.assertEqual(sorted(doc["checks"]), ["core", "extra"])
        self.assertEqual(doc["checks"]["core"]["status"], "ok")
        self.assertEqual(self.get(server, "/health/ready"), (200, {"ready": True, "status": "ok"}))

        fake.set("/extra", status=500)
        self.wait_change(server, "extra", "error", frm="ok")
        status, doc = self.get(server, "/health")
        self.assertEqual((status, doc["status"]), (200, "degraded"), doc)
        self.assertEqual(doc["checks"]["extra"]["detail"], "HTTP 500")
        self.assertEqual(self.get(server, "/health/ready"), (200, {"ready": True, "status": "degraded"}))

        fake.set("/core", status=503)
        self.wait_change(server, "core", "error", frm="ok")
        status, doc = self.get(server, "/health")
        self.assertEqual((status, doc["status"]), (503, "error"), doc)
        self.assertEqual(doc["checks"]["core"], {"status": "error", "detail": "HTTP 503",
                                                 "latency_ms": doc["checks"]["core"]["latency_ms"]})
        status, ready = self.get(server, "/health/ready")
        self.assertEqual((status, ready["ready"], ready["status"]), (503, False, "error"))
        self.assertEqual(self.get(server, "/health/live"), (200, {"status": "ok"}))  # alive all along

        fake.set("/extra")
        self.wait_change(server, "extra", "ok", frm="error")
        self.assertEqual(self.get(server, "/health")[0], 503)  # core still down
        fake.set("/core")
        self.wait_change(server, "core", "ok", frm="error")
        status, doc = self.get(server, "/health")
        self.assertEqual((status, doc["status"]), (200, "ok"), doc)
        self.assertEqual(self.get(server, "/health/ready")[0], 200)

    def test_critical_degraded_is_only_degraded_and_lua_checks(self):
        fake = self.upstream()
        server = self.serve(os.path.join(FIXTURES, "lua"), HK_TEST_UPSTREAM=fake.url)
        names = ["fine", "queue", "stalled", "raises", "odd", "upstream"]
        self.wait_all_checked(server, names)
        self.wait_change(server, "hangs", "error")  # the watchdog: 300 ms
        status, doc = self.get(server, "/health")
        self.assertEqual((status, doc["status"]), (200, "degraded"), doc)
        checks = doc["checks"]
        self.assertEqual(checks["fine"]["status"], "ok")
        self.assertIn("latency_ms", checks["fine"])
        self.assertEqual((checks["queue"]["status"], checks["queue"]["detail"]), ("degraded", "queue is long"))
        self.assertEqual((checks["stalled"]["status"], checks["stalled"]["detail"]), ("error", "queue stalled"))
        self.assertEqual(checks["raises"]["status"], "error")
        self.assertRegex(checks["raises"]["detail"], r"checks\.lua:\d+: kaboom-health-fixture$")
        self.assertEqual(checks["odd"]["status"], "error")
        self.assertIn("run returned 42", checks["odd"]["detail"])
        self.assertEqual(checks["hangs"], {"status": "error", "detail": "timeout after 300 ms (still running)",
                                           "latency_ms": 300.0})
        # A lua check may make HTTP calls.
        self.assertEqual((checks["upstream"]["status"], checks["upstream"]["detail"]), ("ok", "upstream says up"))
        self.assertEqual(fake.count("/ok"), 1)
        self.assertEqual(server.events("task_error"), [])

        # The hung probe is never doubled, however often /health is read.
        for _ in range(20):
            self.get(server, "/health")
        self.assertEqual(len([e for e in server.events("health_changed") if e["check"] == "hangs"]), 1)

        text = self.metrics(server)
        self.assertEqual(metric_value(text, "hancock_health_check_status", check="queue"), 1)
        self.assertEqual(metric_value(text, "hancock_health_check_status", check="hangs"), 2)
        self.assertEqual(metric_value(text, "hancock_health_check_runs_total", check="hangs", result="error"), 1)

    def test_lua_check_failing_critical_makes_503(self):
        fake = self.upstream({"/ok": {"body": {"status": "down"}}})
        server = self.serve(os.path.join(FIXTURES, "lua"), HK_TEST_UPSTREAM=fake.url)
        event = self.wait_change(server, "upstream", "error")
        self.assertEqual(event["detail"], "upstream says down")
        self.assertIs(event["critical"], True)
        status, doc = self.get(server, "/health")
        self.assertEqual((status, doc["status"]), (503, "error"))
        self.assertEqual(self.get(server, "/health/ready")[0], 503)

    # ---- the cache: reads never wait, probes never stampede -----------------------------------

    def test_rapid_reads_cause_at_most_one_probe_per_ttl(self):
        # Slow probes, so many reads land while a result is stale and its refresh in flight.
        fake = self.upstream({"/core": {"delay_s": 0.3}, "/extra": {"delay_s": 0.3}})
        started = time.monotonic()
        server = self.serve(os.path.join(FIXTURES, "rules"), HK_TEST_UPSTREAM=fake.url,
                            HK_TEST_INTERVAL_MS=1000)
        self.wait_change(server, "core", "ok")
        self.wait_change(server, "extra", "ok")
        statuses = []

        def reader():
            for _ in range(20):
                statuses.append(self.get(server, "/health")[0])
                time.sleep(0.1)  # 200 reads spread over about two TTLs

        threads = [threading.Thread(target=reader) for _ in range(10)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        elapsed = time.monotonic() - started
        self.assertEqual(statuses, [200] * 200)
        # One probe at start, then at most one per 1 s TTL (and one in flight at the end).
        self.assertGreater(elapsed, 2)
        allowed = 1 + int(elapsed / 1.0) + 1
        for path in ("/core", "/extra"):
            self.assertLessEqual(fake.count(path), allowed, (path, fake.count(path), elapsed))

    def test_stale_results_refresh_once_in_the_background(self):
        # A long interval and a short TTL: reads past the TTL refresh in the background. Slow
        # probes, so reads keep arriving while a refresh is in flight.
        fake = self.upstream({"/core": {"delay_s": 0.1}, "/extra": {"delay_s": 0.1}})
        server = self.serve(os.path.join(FIXTURES, "rules"), HK_TEST_UPSTREAM=fake.url,
                            HK_TEST_INTERVAL_MS=60000, HK_TEST_TTL_MS=300)
        self.wait_change(server, "core", "ok")
        self.assertEqual(fake.count("/core"), 1)
        started = time.monotonic()
        while time.monotonic() - started < 1.5:
            self.assertEqual(self.get(server, "/health")[0], 200)
        elapsed = time.monotonic() - started
        refreshes = fake.count("/core") - 1
        self.assertGreaterEqual(refreshes, 2)  # the reads did refresh it…
        self.assertLessEqual(refreshes, int(elapsed / 0.3) + 1)  # …once per TTL at most

    def test_health_answers_at_once_while_a_probe_hangs(self):
        fake = self.upstream({"/core": {"hang": True}, "/extra": {"hang": True}})
        server = self.serve(os.path.join(FIXTURES, "rules"), HK_TEST_UPSTREAM=fake.url,
                            HK_TEST_INTERVAL_MS=200, HK_TEST_TTL_MS=100, HK_TEST_TIMEOUT_MS=20000)
        fake.wait_for(2)  # both probes are in flight, and will not come back during the test
        slowest = 0
        for _ in range(50):
            started = time.monotonic()
            status, doc = self.get(server, "/health")
            slowest = max(slowest, time.monotonic() - started)
            # Not checked yet: degraded (a critical check is not an error before its first result).
            self.assertEqual((status, doc["status"]), (200, "degraded"))
            self.assertEqual(doc["checks"]["core"], {"status": "degraded", "detail": "not checked yet"})
        self.assertLess(slowest, 0.5)  # a probe would take 20 s
        # Ready waits for the critical check's first result; live does not.
        status, ready = self.get(server, "/health/ready")
        self.assertEqual(status, 503)
        self.assertEqual(ready, {"ready": False, "status": "degraded",
                                 "detail": "critical checks not run yet: core"})
        self.assertEqual(self.get(server, "/health/live"), (200, {"status": "ok"}))
        # However stale, at most one probe per check is in flight.
        self.assertEqual((fake.count("/core"), fake.count("/extra")), (1, 1))

    # ---- the log and the metrics ----------------------------------------------------------

    def test_health_changed_logged_once_per_change(self):
        fake = self.upstream()
        server = self.serve(os.path.join(FIXTURES, "rules"), HK_TEST_UPSTREAM=fake.url,
                            HK_TEST_INTERVAL_MS=50)

        def runs(result):
            return lambda text: (metric_value(text, "hancock_health_check_runs_total",
                                              check="extra", result=result) or 0) >= 5

        self.wait_change(server, "extra", "ok")
        self.wait_metric(server, runs("ok"), "5 ok runs")
        fake.set("/extra", status=500)
        event = self.wait_change(server, "extra", "error", frm="ok")
        self.assertEqual(event["detail"], "HTTP 500")
        self.assertEqual(event["level"], "ERROR")
        self.assertEqual(event["message"], "health check extra: ok -> error")
        self.wait_metric(server, runs("error"), "5 error runs")
        fake.set("/extra")
        self.wait_change(server, "extra", "ok", frm="error")
        before = len(fake.received())
        fake.wait_for(before + 10)  # more runs, no more changes
        self.assertEqual(self.changes(server, "extra"), [("pending", "ok"), ("ok", "error"), ("error", "ok")])
        self.assertEqual(self.changes(server, "core"), [("pending", "ok")])

    def test_metrics_match_the_results(self):
        fake = self.upstream({"/extra": {"status": 500}, "/core": {"delay_s": 0.05}})
        server = self.serve(os.path.join(FIXTURES, "rules"), HK_TEST_UPSTREAM=fake.url,
                            HK_TEST_INTERVAL_MS=60000)
        self.wait_change(server, "core", "ok")
        self.wait_change(server, "extra", "error")
        text = self.metrics(server)
        self.assertIn("# TYPE hancock_health_check_status gauge", text)
        self.assertIn("# TYPE hancock_health_check_latency_seconds gauge", text)
        self.assertIn("# TYPE hancock_health_check_runs_total counter", text)
        self.assertEqual(metric_value(text, "hancock_health_check_status", check="core"), 0)
        self.assertEqual(metric_value(text, "hancock_health_check_status", check="extra"), 2)
        latency = metric_value(text, "hancock_health_check_latency_seconds", check="core")
        self.assertGreaterEqual(latency, 0.05)
        self.assertLess(latency, 1)
        doc = self.get(server, "/health")[1]
        self.assertAlmostEqual(doc["checks"]["core"]["latency_ms"], latency * 1000, delta=0.01)
        self.assertEqual(metric_value(text, "hancock_health_check_runs_total", check="core", result="ok"), 1)
        self.assertEqual(metric_value(text, "hancock_health_check_runs_total", check="extra", result="error"), 1)
        self.assertIsNone(metric_value(text, "hancock_health_check_runs_total", check="extra", result="ok"))

    # ---- reloads carry each check's state ------------------------------------------------

    def test_reloads_carry_a_failing_check_without_logging_it_again(self):
        fake = self.upstream({"/core": {"status": 500}})
        _, server = self.reloadable(lua_checks({
            "core": {"url": fake.url + "/core", "critical": True, "interval_ms": 200},
            "extra": {"url": fake.url + "/extra", "interval_ms": 200},
        }))
        self.wait_change(server, "core", "error")
        self.wait_change(server, "extra", "ok")
        for i in range(10):
            self.assertEqual(self.reload(server), i + 2)
            # At once, before the new generation has probed: the carried results, not pending.
            status, doc = self.get(server, "/health")
            self.assertEqual((status, doc["status"]), (503, "error"), doc)
            core = doc["checks"]["core"]
            self.assertEqual((core["status"], core["detail"], sorted(core)),
                             ("error", "HTTP 500", ["detail", "latency_ms", "status"]))
            self.assertEqual(doc["checks"]["extra"]["status"], "ok")
            self.assertEqual(self.get(server, "/health/ready"),
                             (503, {"ready": False, "status": "error", "detail": "a critical check failed"}))
        # The last generation probes, finds the same: nothing to log.
        self.wait_probed(server, "core")
        self.wait_probed(server, "extra")
        self.assertEqual(self.changes(server, "core"), [("pending", "error")])
        self.assertEqual(self.changes(server, "extra"), [("pending", "ok")])
        self.assertEqual(metric_value(self.metrics(server), "hancock_health_check_status", check="core"), 2)

        # A real change is logged once, from the carried status, whichever generation sees it.
        fake.set("/core")
        self.reload(server)
        self.wait_change(server, "core", "ok", frm="error")
        self.reload(server)
        self.wait_probed(server, "core")
        self.assertEqual(self.changes(server, "core"), [("pending", "error"), ("error", "ok")])
        self.assertEqual(self.get(server, "/health/ready"), (200, {"ready": True, "status": "ok"}))
        self.assertEqual(server.events("task_error"), [])

    def test_a_changed_definition_starts_over(self):
        fake = self.upstream({"/down": {"status": 500}})
        checks = {
            "core": {"url": fake.url + "/up", "critical": True, "interval_ms": 200},
            "extra": {"url": fake.url + "/up", "interval_ms": 200},
        }
        d, server = self.reloadable(lua_checks(checks))
        self.wait_change(server, "core", "ok")
        self.wait_change(server, "extra", "ok")

        # Another URL: core is pending again and logs its new result from there; extra carries on.
        checks["core"]["url"] = fake.url + "/down"
        self.rewrite(d, lua_checks(checks))
        self.reload(server)
        event = self.wait_change(server, "core", "error")
        self.assertEqual(event["detail"], "HTTP 500")
        self.wait_probed(server, "extra")
        self.assertEqual(self.changes(server, "core"), [("pending", "ok"), ("pending", "error")])
        self.assertEqual(self.changes(server, "extra"), [("pending", "ok")])

        # A threshold is part of the definition too, set with hk.health.threshold or not.
        self.rewrite(d, lua_checks(checks, thresholds={"extra": {"warn_above_ms": 0}}))
        self.reload(server)
        self.wait_change(server, "extra", "degraded")
        self.wait_probed(server, "core")
        self.assertEqual(self.changes(server, "extra"), [("pending", "ok"), ("pending", "degraded")])
        self.assertEqual(self.changes(server, "core"), [("pending", "ok"), ("pending", "error")])
        self.assertEqual(self.get(server, "/health")[1]["checks"]["extra"]["status"], "degraded")

    def test_reloads_do_not_add_or_postpone_probes(self):
        fake = self.upstream()
        _, server = self.reloadable(lua_checks({
            "rare": {"url": fake.url + "/rare", "interval_ms": 600000},
            "often": {"url": fake.url + "/often", "interval_ms": 500},
        }))
        self.wait_change(server, "rare", "ok")
        self.wait_change(server, "often", "ok")
        for _ in range(10):
            self.reload(server)
        # Reloading without pause until often's next probe is due: a generation that started its
        # schedule afresh would never get there.
        probes = fake.count("/often")
        deadline = time.monotonic() + 20
        while fake.count("/often") == probes:
            if time.monotonic() > deadline:
                self.fail("reloads keep postponing the next probe")
            self.reload(server)
        # …by which time a probe that a reload had started would long have reached the fake.
        self.assertEqual(fake.count("/rare"), 1)
        self.sync_log(server)
        text = self.metrics(server)
        self.assertEqual(metric_value(text, "hancock_health_check_runs_total", check="rare", result="ok"), 1)
        self.assertEqual(self.changes(server, "rare"), [("pending", "ok")])
        self.assertEqual(self.changes(server, "often"), [("pending", "ok")])
        self.assertEqual(self.get(server, "/health")[1]["checks"]["rare"]["status"], "ok")

    def test_a_removed_check_is_gone_after_reload(self):
        fake = self.upstream()
        checks = {"core": {"url": fake.url + "/core", "interval_ms": 600000},
                  "gone": {"url": fake.url + "/gone", "interval_ms": 600000}}
        d, server = self.reloadable(lua_checks(checks))
        self.wait_change(server, "core", "ok")
        self.wait_change(server, "gone", "ok")

        removed = dict(checks)
        del removed["gone"]
        self.rewrite(d, lua_checks(removed))
        self.reload(server)
        self.assertEqual(sorted(self.get(server, "/health")[1]["checks"]), ["core"])

        # Its carried result went with it: defined again, it starts from pending.
        self.rewrite(d, lua_checks(checks))
        self.reload(server)
        self.assertEqual(self.wait_changes(server, "gone", 2), [("pending", "ok"), ("pending", "ok")])
        self.assertEqual(fake.count("/gone"), 2)
        self.assertEqual(self.changes(server, "core"), [("pending", "ok")])
        self.assertEqual(fake.count("/core"), 1)

    # ---- memory and disk ------------------------------------------------------------------

    def test_memory_and_disk_thresholds(self):
        fixture = os.path.join(FIXTURES, "system")
        relaxed = self.serve(fixture, HK_TEST_MEMORY_WARN_MB=0, HK_TEST_DISK_WARN_MB=0)
        tight = self.serve(fixture, HK_TEST_MEMORY_WARN_MB=1e9, HK_TEST_DISK_WARN_MB=1e9)
        failing = self.serve(fixture, HK_TEST_MEMORY_ERROR_MB=1e9, HK_TEST_DISK_ERROR_MB=1e9)
        for server in (relaxed, tight, failing):
            self.wait_all_checked(server, ["memory", "disk", "missing_disk"])
        # The details are the original service's strings, which its users' parsers read; the
        # figures are fields of their own besides.
        checks = self.get(relaxed, "/health")[1]["checks"]
        memory, disk = checks["memory"], checks["disk"]
        self.assertEqual(memory["status"], "ok")
        self.assertRegex(memory["detail"], r"^available_mb=\d+$")
        self.assertEqual(memory["detail"], "available_mb=%d" % memory["available_mb"])
        self.assertIsInstance(memory["total_mb"], int)
        self.assertGreaterEqual(memory["total_mb"], memory["available_mb"])
        self.assertNotIn("latency_ms", memory)
        self.assertNotIn("threshold", memory)
        self.assertEqual(disk["status"], "ok")
        self.assertRegex(disk["detail"], r"^available_gb=\d+$")
        self.assertEqual(disk["detail"], "available_gb=%d" % disk["available_gb"])
        self.assertEqual(disk["available_gb"], disk["available_mb"] // 1024)
        self.assertEqual(disk["path"], "/")
        self.assertGreaterEqual(disk["total_gb"], disk["available_gb"])
        self.assertEqual(checks["missing_disk"]["status"], "error")
        self.assertIn("/nonexistent/hancock-test", checks["missing_disk"]["detail"])

        checks = self.get(tight, "/health")[1]["checks"]
        self.assertEqual(checks["memory"]["status"], "degraded")
        self.assertRegex(checks["memory"]["detail"], r"^available_mb=\d+$")
        self.assertEqual(checks["memory"]["threshold"], "degraded below 1e+09 MiB")
        self.assertEqual(checks["disk"]["status"], "degraded")
        self.assertRegex(checks["disk"]["detail"], r"^available_gb=\d+$")
        self.assertEqual(checks["disk"]["threshold"], "degraded below 1e+09 MiB")

        status, doc = self.get(failing, "/health")
        self.assertEqual((status, doc["status"]), (200, "degraded"))  # neither is critical
        self.assertEqual(doc["checks"]["memory"]["status"], "error")
        self.assertRegex(doc["checks"]["memory"]["detail"], r"^available_mb=\d+$")
        self.assertEqual(doc["checks"]["memory"]["threshold"], "error below 1e+09 MiB")
        self.assertEqual(doc["checks"]["disk"]["status"], "error")
        text = self.metrics(failing)
        self.assertEqual(metric_value(text, "hancock_health_check_status", check="memory"), 2)
        self.assertEqual(metric_value(self.metrics(tight), "hancock_health_check_status", check="disk"), 1)

    def test_reloads_carry_the_fields_of_a_result(self):
        source = ('local hk = require "hancock"\n'
                  'hk.health.check("memory", { kind = "memory", interval_ms = 60000 })\n'
                  'hk.health.threshold("memory", { warn_below_mb = 0 })\n')
        _, server = self.reloadable(source)
        self.wait_change(server, "memory", "ok")
        before = self.get(server, "/health")[1]["checks"]["memory"]
        self.assertIn("available_mb", before)
        runs = self.runs(server, "memory")
        self.reload(server)
        self.assertEqual(self.get(server, "/health")[1]["checks"]["memory"], before)
        self.assertEqual(self.runs(server, "memory"), runs)  # adopted, not probed again

    # ---- groups: alternatives, such as a backend and its fallback --------------------------

    def test_a_group_fails_only_when_every_check_in_it_fails(self):
        fake = self.upstream()
        refused = "http://127.0.0.1:%d/" % free_port()
        d = write_scripts({"checks.lua": lua_checks({
            "primary": {"url": refused, "critical": True, "group": "llm", "interval_ms": 60000},
            "fallback": {"url": fake.url + "/fallback", "critical": True, "group": "llm", "interval_ms": 100},
            "alone": {"url": fake.url + "/alone", "critical": True, "interval_ms": 100},
        })})
        self.addCleanup(shutil.rmtree, d, True)
        server = self.serve(d)
        self.wait_change(server, "primary", "error")
        self.wait_change(server, "fallback", "ok")
        self.wait_change(server, "alone", "ok")
        # One of the group answers: the service answers, degraded, and stays ready.
        status, doc = self.get(server, "/health")
        self.assertEqual((status, doc["status"]), (200, "degraded"), doc)
        self.assertEqual(self.get(server, "/health/ready"), (200, {"ready": True, "status": "degraded"}))
        text = self.wait_metric(server, lambda t: metric_value(t, "hancock_health_status") == 1,
                                "hancock_health_status 1")
        for name in ("primary", "fallback", "alone"):
            self.assertEqual(metric_value(text, "hancock_health_check_critical", check=name), 1)
        event = [e for e in server.events("health_changed") if e["check"] == "primary"][0]
        self.assertEqual(event["group"], "llm")

        # The whole group down: an error.
        fake.set("/fallback", status=503)
        self.wait_change(server, "fallback", "error", frm="ok")
        status, doc = self.get(server, "/health")
        self.assertEqual((status, doc["status"]), (503, "error"), doc)
        self.assertEqual(self.get(server, "/health/ready")[0], 503)
        self.wait_metric(server, lambda t: metric_value(t, "hancock_health_status") == 2,
                         "hancock_health_status 2")

        # A critical check outside the group fails on its own, whatever the group does.
        fake.set("/fallback")
        self.wait_change(server, "fallback", "ok", frm="error")
        fake.set("/alone", status=500)
        self.wait_change(server, "alone", "error", frm="ok")
        self.assertEqual(self.get(server, "/health")[0], 503)

    def test_a_group_with_no_answer_yet_keeps_readiness_waiting(self):
        fake = self.upstream({"/hang": {"hang": True}})
        refused = "http://127.0.0.1:%d/" % free_port()
        d = write_scripts({"checks.lua": lua_checks({
            "primary": {"url": refused, "critical": True, "group": "llm"},
            "fallback": {"url": fake.url + "/hang", "critical": True, "group": "llm", "timeout_ms": 60000},
        })})
        self.addCleanup(shutil.rmtree, d, True)
        server = self.serve(d)
        self.wait_change(server, "primary", "error")
        fake.wait_for(1)  # the fallback's probe is in flight, and stays so
        # Not an error while an alternative may still answer, but not ready either.
        status, doc = self.get(server, "/health")
        self.assertEqual((status, doc["status"]), (200, "degraded"), doc)
        self.assertEqual(doc["checks"]["fallback"], {"status": "degraded", "detail": "not checked yet"})
        self.assertEqual(self.get(server, "/health/ready"),
                         (503, {"ready": False, "status": "degraded",
                                "detail": "critical checks not run yet: fallback"}))

    # ---- the repository's scripts/health.lua ----------------------------------------------

    def test_default_scripts_configure_the_service_checks(self):
        llm = self.upstream({
            "/api/tags": {"body": {"models": [{"name": "llama3.1:8b"}, {"name": "qwen2.5-coder:7b"}]}},
            "/v1/models": {"body": {"object": "list", "data": [{"id": "meta/llama-3.1-8b-instruct"}]}},
            "/-/healthy": {"body": "Prometheus Server is Healthy.\n"},
        })
        # NVIDIA as the backend: nim is critical, and Ollama, which no call goes to, is not
        # checked at all.
        server = self.serve(SCRIPTS, HANCOCK_LLM_BACKEND="nvidia", NVIDIA_BASE_URL=llm.url + "/v1",
                            NVIDIA_API_KEY="nv-secret-key", OLLAMA_BASE_URL=llm.url + "/",
                            PROMETHEUS_URL=llm.url)
        self.wait_all_checked(server, ["nim", "memory", "disk", "prometheus"])
        status, doc = self.get(server, "/health")
        self.assertEqual(sorted(doc["checks"]), ["disk", "memory", "nim", "prometheus"])
        for name in ("nim", "prometheus"):
            self.assertEqual(doc["checks"][name]["status"], "ok", doc)
        for name in ("memory", "disk"):  # the machine's own: ok, or degraded below the defaults
            self.assertIn(doc["checks"][name]["status"], ("ok", "degraded"), doc)
        self.assertEqual(status, 200)
        nim = [r for r in llm.received() if r["path"] == "/v1/models"]
        self.assertEqual(nim[0]["authorization"], "Bearer nv-secret-key")
        self.assertNotIn("nv-secret-key", "\n".join(server.lines))
        critical = {e["check"]: e["critical"] for e in server.events("health_changed")}
        self.assertEqual(critical, {"nim": True, "memory": False, "disk": False, "prometheus": False})
        self.assertEqual(llm.count("/api/tags"), 0)

        # Ollama as the backend (the default) without its model pulled: ollama is critical, so
        # the service is in error; Prometheus down only degrades; no nim check.
        llm.set("/api/tags", body={"models": [{"name": "qwen2.5-coder:7b"}]})
        server = self.serve(SCRIPTS, OLLAMA_BASE_URL=llm.url, OLLAMA_MODEL="llama3.1",
                            PROMETHEUS_URL="http://127.0.0.1:%d" % free_port())
        self.wait_all_checked(server, ["ollama", "memory", "disk", "prometheus"])
        status, doc = self.get(server, "/health")
        self.assertEqual((status, doc["status"]), (503, "error"))
        self.assertNotIn("nim", doc["checks"])
        self.assertEqual(doc["checks"]["ollama"]["detail"],
                         'models.*.name has no "llama3.1:latest" (found: "qwen2.5-coder:7b")')
        self.assertEqual(doc["checks"]["prometheus"]["status"], "error")
        self.assertEqual(self.get(server, "/health/ready")[0], 503)

    # ---- misconfiguration fails at load, at the operator's line ----------------------------

    def test_bad_definitions_fail_at_load_with_the_line(self):
        cases = {
            'hk.health.check("x", { kind = "ftp" })':
                "kind must be one of http, memory, disk, lua",
            'hk.health.check("x", { kind = "memory", interval = 5 })':
                "unknown option 'interval' for a memory check (use interval_ms)",
            'hk.health.check("x", { kind = "http", url = "ftp://a" })':
                "url must be an http:// or https:// URL",
            'hk.health.check("x", { kind = "http", url = "http://a", timeout_ms = 1.5 })':
                "timeout_ms must be a positive integer",
            'hk.health.check("x", { kind = "http", url = "http://a", expect_json = { path = "a..b" } })':
                "empty segment",
            'hk.health.check("x", { kind = "lua" })':
                "a lua check needs run = function",
            'hk.health.check("bad name", { kind = "memory" })':
                "the name must be",
            'hk.health.check("m", { kind = "memory" })\nhk.health.check("m", { kind = "disk" })':
                "already defined",
            'hk.health.threshold("m", { warn_below = 1 })':
                "unknown threshold 'warn_below'",
            'hk.health.check("m", { kind = "memory" })\nhk.health.threshold("m", { warn_above_ms = 1 })':
                "'warn_above_ms' does not apply to m, a memory check",
            'hk.health.threshold("m", { warn_above_ms = 1 })\nhk.health.check("m", { kind = "memory" })':
                "'warn_above_ms' does not apply to m, a memory check",
            'hk.health.check("m", { kind = "memory", group = "llm" })':
                "group only applies to critical checks",
            'hk.health.check("m", { kind = "memory", critical = true, group = "a b" })':
                "group must be 1 to 64 letters",
        }
        for source, needle in cases.items():
            with self.subTest(source=source):
                d = write_scripts({"health.lua": 'local hk = require "hancock"\n\n' + source + "\n"})
                self.addCleanup(shutil.rmtree, d, True)
                proc = subprocess.run([harness.BIN, "check", "--scripts", d], capture_output=True, timeout=10)
                self.assertEqual(proc.returncode, 1, proc)
                err = proc.stderr.decode()
                line = source.count("\n") + 3
                self.assertTrue(err.startswith(os.path.join(d, "health.lua") + ":%d: " % line), err)
                self.assertIn(needle, err)

    def test_definitions_are_fixed_once_serving(self):
        d = write_scripts({"health.lua": 'local hk = require "hancock"\n'
                                         'hk.health.threshold("nosuch", { warn_below_mb = 1 })\n'
                                         'hk.route("POST", "/late", function()\n'
                                         '  hk.health.check("late", { kind = "memory" })\n'
                                         'end)\n'})
        self.addCleanup(shutil.rmtree, d, True)
        server = self.serve(d)
        # A threshold for a check nobody defined is worth a warning once the scripts have loaded.
        event = server.wait_event("health_threshold_unused")
        self.assertEqual((event["check"], event["level"]), ("nosuch", "WARNING"))
        # Checks are defined when the scripts load (a reload changes them), not by a handler.
        status, _, _ = request(server, "POST", "/late", body=b"")
        self.assertEqual(status, 500)
        error = server.wait_event("handler_error")["error"]
        self.assertRegex(error, r"health\.lua:4: hk\.health\.check: define health checks when the scripts load")
        self.assertEqual(self.get(server, "/health"), (200, {"status": "ok", "checks": {}}))


if __name__ == "__main__":
    unittest.main()
