"""Black-box tests of the embedding example (examples/embed/service.c): a C program with its own
libuv loop and C metrics that hosts Hancock through host/include/hancock.h. EMBED_BIN is the
built example, EMBED_MODE "attach" (Hancock on the program's loop) or "threads" (hk_host_start).

Checked from outside, as a user of the program would: its C metric on /metrics next to
Hancock's, a Lua route calling back into C (results, a raised error caught by the script and one
that is not), the C health check on /health, a reload by SIGHUP, and a clean stop on SIGTERM
(exit status 0: under AddressSanitizer that includes LeakSanitizer finding nothing). Only
127.0.0.1 is contacted.
"""
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "blackbox"))
import harness  # noqa: E402

BIN = os.environ.get("EMBED_BIN", "")
MODE = os.environ.get("EMBED_MODE", "attach")
SOURCE_DIR = os.environ.get("HANCOCK_SOURCE_DIR") or os.path.join(os.path.dirname(__file__), "..", "..")
SCRIPTS = os.path.join(SOURCE_DIR, "examples", "embed", "scripts")


class EmbedService(harness.Server):
    """The example program, started like harness.Server starts hancock."""

    def __init__(self, scripts):  # pylint: disable=super-init-not-called
        self.lines = []
        self.cond = threading.Condition()
        args = [BIN, "--listen", "127.0.0.1:0", "--scripts", scripts]
        if MODE == "threads":
            args.append("--threads")
        self.proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()
        self.port = self.wait_event("server_listening", timeout=20)["port"]


class EmbedTest(unittest.TestCase):
    def setUp(self):
        if not BIN or not os.path.exists(BIN):
            self.fail("EMBED_BIN must name the built example (got %r)" % BIN)
        self.scripts = tempfile.mkdtemp(prefix="hancock-embed-")
        self.addCleanup(shutil.rmtree, self.scripts, True)
        shutil.copy(os.path.join(SCRIPTS, "service.lua"), self.scripts)
        self.service = EmbedService(self.scripts)
        self.stopped = False

    def tearDown(self):
        if not self.stopped:
            self.service.stop(signal.SIGKILL)

    def get(self, path):
        status, _, body = harness.request(self.service, "GET", path)
        return status, body.decode()

    def stop_cleanly(self):
        code = self.service.stop(signal.SIGTERM, timeout=30)
        self.stopped = True
        self.assertEqual(code, 0, "exit status %d; stderr:\n%s" % (code, self.service.stderr))
        self.service.wait_event("shutdown_complete")
        return self.service.stderr

    def test_c_metric_is_scraped_with_hancocks(self):
        status, _, body = harness.request(self.service, "POST", "/embed/jobs", {"count": 7})
        self.assertEqual(status, 202, body)
        self.assertEqual(json.loads(body)["queued"], 7)
        # The service's own timer drains the queue (5 jobs per 100 ms) and counts each job.
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            _, text = self.get("/metrics")
            done = harness.metric_value(text, "embed_jobs_processed_total", kind="queued")
            if done == 7:
                break
            time.sleep(0.05)
        self.assertEqual(done, 7, text)
        self.assertEqual(harness.metric_value(text, "embed_queue_depth"), 0)
        self.assertIn("# HELP embed_jobs_processed_total Jobs the service has processed.", text)
        # Hancock's own families are there too, and count the requests the host answered.
        self.assertGreaterEqual(harness.metric_value(text, "hancock_requests_total"), 1)
        self.stop_cleanly()

    def test_lua_route_calls_into_c(self):
        status, body = self.get("/embed/users/grace")
        self.assertEqual(status, 200, body)
        self.assertEqual(json.loads(body), {"name": "grace", "id": 2})
        status, body = self.get("/embed/stats")
        self.assertEqual(status, 200, body)
        stats = json.loads(body)
        self.assertEqual(stats["queued"], 0)
        self.assertRegex(stats["version"], r"^\d+\.\d+\.\d+$")

    def test_native_error_is_a_lua_error(self):
        # Caught by the script with pcall: the message is the one the C function set.
        status, body = self.get("/embed/users/nobody")
        self.assertEqual(status, 404, body)
        self.assertEqual(json.loads(body)["error"], "hk.native.lookup: no such user: nobody")
        # Wrong argument type: the C function refuses it, nothing crashes.
        status, _, body = harness.request(self.service, "POST", "/embed/jobs", {"count": 5000})
        self.assertEqual(status, 400, body)
        self.assertIn("expected a job count from 1 to 1000", body.decode())
        # Not caught: a 500 like any script error, with the traceback in the log only.
        status, body = self.get("/embed/users-unchecked/nobody")
        self.assertEqual(status, 500, body)
        self.assertNotIn("no such user", body)
        err = self.service.wait_event("handler_error")
        self.assertIn("hk.native.lookup: no such user: nobody", json.dumps(err))
        self.stop_cleanly()

    def test_c_health_check(self):
        deadline = time.monotonic() + 20
        while True:
            status, body = self.get("/health")
            checks = json.loads(body).get("checks", {})
            if "embed_queue" in checks and checks["embed_queue"]["status"] == "ok":
                break
            self.assertLess(time.monotonic(), deadline, body)
            time.sleep(0.05)
        self.assertEqual(checks["embed_queue"]["detail"], "queue_depth=0")
        # Past 50 queued jobs the C check says degraded (the timer drains 50 jobs/s, so 900
        # stay queued for many of the check's 200 ms probes).
        harness.request(self.service, "POST", "/embed/jobs", {"count": 900})
        deadline = time.monotonic() + 20
        while True:
            status, body = self.get("/health")
            check = json.loads(body)["checks"]["embed_queue"]
            if check["status"] == "degraded":
                break
            self.assertLess(time.monotonic(), deadline, body)
            time.sleep(0.05)
        self.assertEqual(status, 200)  # degraded, not critical: still serving
        self.assertRegex(check["detail"], r"^queue_depth=\d+$")
        _, text = self.get("/metrics")
        self.assertEqual(harness.metric_value(text, "hancock_health_check_status", check="embed_queue"), 1)

    def test_sighup_reloads_the_scripts(self):
        status, body = self.get("/embed/version")
        self.assertEqual(json.loads(body), {"version": "v1"})
        path = os.path.join(self.scripts, "service.lua")
        with open(path) as f:
            text = f.read()
        with open(path + ".new", "w") as f:
            f.write(text.replace('version = "v1"', 'version = "v2"'))
        os.rename(path + ".new", path)
        self.service.proc.send_signal(signal.SIGHUP)
        self.service.wait_event("reload_succeeded")
        status, body = self.get("/embed/version")
        self.assertEqual(json.loads(body), {"version": "v2"})
        # The natives survive the reload: the new generation has them too.
        status, body = self.get("/embed/users/ada")
        self.assertEqual(json.loads(body), {"name": "ada", "id": 1})
        self.stop_cleanly()

    def test_clean_stop(self):
        self.get("/embed/users/linus")
        stderr = self.stop_cleanly()
        self.assertNotIn("handles left open", stderr)
        self.assertNotIn("LeakSanitizer", stderr)


if __name__ == "__main__":
    unittest.main()
