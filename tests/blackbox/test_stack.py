"""The real stack, natively (tests/stack/stack.py): hancock, Prometheus with the generated rules
(test-sized windows), Alertmanager. Traffic with errors makes HancockHighErrorRate fire and reach
Alertmanager; the dashboard's queries return data from the real Prometheus."""
import json
import os
import re
import shutil
import sys
import unittest

import harness

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "stack"))
import stack as stack_module  # noqa: E402

DASHBOARD = os.path.join(harness.SOURCE_DIR, "monitoring", "grafana_dashboard.json")


class StackTest(unittest.TestCase):
    def setUp(self):
        missing = [b for b in ("prometheus", "prometheus-alertmanager") if shutil.which(b) is None]
        if missing:
            self.skipTest("not installed: " + ", ".join(missing))
        self.stack = stack_module.Stack(rules_for="5s", rules_window="20s",
                                        env={"HANCOCK_RATE_LIMIT": "1000000"})

    def tearDown(self):
        if hasattr(self, "stack"):
            self.assertEqual(self.stack.stop(), 0)

    def traffic(self, ok, errors):
        for _ in range(ok):
            self.stack.get(self.stack.hancock_port, "/health/live")
        for i in range(errors):
            try:
                self.stack.get(self.stack.hancock_port, f"/no/such/page/{i}")
            except Exception:  # urllib raises on 404: that is the point
                pass

    def test_high_error_rate_fires_and_reaches_alertmanager(self):
        s = self.stack
        s.wait(lambda: s.query("up{job='hancock'} == 1"), "Prometheus scraping hancock")
        self.traffic(ok=20, errors=20)

        def firing():
            self.traffic(ok=2, errors=2)  # keep the rate up while the alert's `for` runs
            alerts = s.prom("/api/v1/alerts")["alerts"]
            return [a for a in alerts if a["labels"]["alertname"] == "HancockHighErrorRate"
                    and a["state"] == "firing"]

        alert = s.wait(firing, "HancockHighErrorRate firing", timeout=90)[0]
        self.assertEqual(alert["labels"]["severity"], "warning")

        def in_alertmanager():
            _, body = s.get(s.am_port, "/api/v2/alerts")
            return [a for a in json.loads(body) if a["labels"]["alertname"] == "HancockHighErrorRate"]

        received = s.wait(in_alertmanager, "the alert in Alertmanager", timeout=60)[0]
        self.assertIn("summary", received["annotations"])

    def test_dashboard_queries_return_data(self):
        if not os.path.exists(DASHBOARD):
            self.skipTest("no generated dashboard")
        s = self.stack
        s.wait(lambda: s.query("up{job='hancock'} == 1"), "Prometheus scraping hancock")
        self.traffic(ok=10, errors=3)
        with open(DASHBOARD) as f:
            dashboard = json.load(f)

        def panels(items):
            for p in items:
                yield p
                yield from panels(p.get("panels", []))

        exprs = {}
        for p in panels(dashboard["panels"]):
            for t in p.get("targets", []):
                if t.get("expr"):
                    exprs[p.get("title", "?")] = t["expr"]
        self.assertGreaterEqual(len(exprs), 10)
        original = ["Request Rate", "Error Rate", "Requests by Endpoint", "Memory Usage", "Active Connections",
                    "Total Requests", "Total Errors", "Current Memory"]

        def concrete(expr):
            return re.sub(r"\$__(rate_)?interval|\$__range", "1m", expr)

        def all_have_data():
            missing = [t for t in original for title, e in exprs.items()
                       if title.startswith(t) and not s.query(concrete(e))]
            return not missing or None

        s.wait(all_have_data, "data for every original panel", timeout=60)


if __name__ == "__main__":
    unittest.main()
