"""A real Prometheus scrapes the real host: the exposition must parse in the format Prometheus
negotiates (OpenMetrics first), the legacy counter names must arrive unchanged, and the values
must match the traffic. Skipped only when the prometheus binary is absent (make test installs it).
"""
import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
import unittest
import urllib.parse
import urllib.request

import harness
from harness import free_port

PROMETHEUS = shutil.which("prometheus")


def start_prometheus(tmp, target_port, *flags):
    """A Prometheus scraping 127.0.0.1:target_port every second, its data under tmp; returns
    (process, its port). Extra command-line flags (feature flags) follow the standard ones."""
    port = free_port()
    config = os.path.join(tmp, "prometheus.yml")
    with open(config, "w") as f:
        f.write(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n"
            "scrape_configs:\n  - job_name: hancock\n    static_configs:\n"
            f"      - targets: ['127.0.0.1:{target_port}']\n")
    proc = subprocess.Popen(
        [PROMETHEUS, f"--config.file={config}", f"--storage.tsdb.path={tmp}/data",
         f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn", *flags],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    return proc, port


def stop_prometheus(proc):
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    proc.stderr.close()


class PrometheusScrapeTest(unittest.TestCase):
    def setUp(self):
        if PROMETHEUS is None:
            self.skipTest("prometheus is not installed")
        self.server = harness.Server()
        self.tmp = tempfile.mkdtemp(prefix="hancock-prom-")
        self.prom, self.prom_port = start_prometheus(self.tmp, self.server.port)

    def tearDown(self):
        if PROMETHEUS is None:
            return
        stop_prometheus(self.prom)
        shutil.rmtree(self.tmp, ignore_errors=True)
        self.assertEqual(self.server.stop(), 0)

    def api(self, path, **params):
        url = f"http://127.0.0.1:{self.prom_port}{path}?" + urllib.parse.urlencode(params)
        with urllib.request.urlopen(url, timeout=5) as r:
            return json.loads(r.read())["data"]

    def wait_for(self, predicate, what, timeout=60):
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            try:
                last = predicate()
                if last:
                    return last
            except (OSError, ValueError, KeyError):
                pass
            if self.prom.poll() is not None:
                self.fail("prometheus exited: " + self.prom.stderr.read().decode())
            time.sleep(0.2)  # polling an external process's API: there is no event to wait on
        self.fail(f"timed out waiting for {what}; last answer: {last!r}")

    def query(self, expr):
        return self.api("/api/v1/query", query=expr)["result"]

    def test_prometheus_scrapes_every_promised_series(self):
        for _ in range(5):
            harness.request(self.server, "GET", "/v1/items/1")
        harness.request(self.server, "GET", "/nowhere")
        harness.request(self.server, "POST", "/v1/chat", body={"message": "hi", "mode": "soc"})

        def healthy_target():
            targets = self.api("/api/v1/targets")["activeTargets"]
            return targets and targets[0]["health"] == "up" and targets[0]

        target = self.wait_for(healthy_target, "a healthy scrape")
        self.assertEqual(target["lastError"], "")

        by_endpoint = self.wait_for(
            lambda: {r["metric"]["endpoint"]: float(r["value"][1])
                     for r in self.query("hancock_requests_by_endpoint")},
            "hancock_requests_by_endpoint in Prometheus")
        self.assertEqual(by_endpoint.get("/v1/items/:id"), 5.0)
        self.assertEqual(by_endpoint.get("unmatched"), 1.0)
        self.assertEqual(by_endpoint.get("/v1/chat"), 1.0)
        by_mode = {r["metric"]["mode"]: float(r["value"][1]) for r in self.query("hancock_requests_by_mode")}
        self.assertEqual(by_mode, {"soc": 1.0})
        for name in ("hancock_requests_total", "hancock_errors_total", "hancock_memory_usage_bytes",
                     "hancock_active_connections", "hancock_build_info", "process_resident_memory_bytes",
                     "process_start_time_seconds", "hancock_request_duration_seconds_bucket",
                     "hancock_request_duration_seconds_count"):
            self.assertTrue(self.query(name), f"{name} missing from Prometheus")
        errors = float(self.query("hancock_errors_total")[0]["value"][1])
        self.assertEqual(errors, 1.0)
        # The histogram is usable for the dashboards' percentile queries.
        p99 = self.query('histogram_quantile(0.99, sum by (le) (hancock_request_duration_seconds_bucket{endpoint="/v1/items/:id"}))')
        self.assertTrue(p99 and float(p99[0]["value"][1]) >= 0)


if __name__ == "__main__":
    unittest.main()
