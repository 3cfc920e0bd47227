"""The real stack, natively (tests/stack/stack.py): hancock, Prometheus with the generated rules
(test-sized windows), Alertmanager, and fake model backends on loopback (a fake Ollama speaking
its native API, a fake OpenAI as the fallback). Traffic with errors makes HancockHighErrorRate
fire and reach Alertmanager; the dashboard's queries return data from the real Prometheus — the
original panels, and every LLM panel but those that only have data in a fault."""
import json
import math
import os
import re
import shutil
import subprocess
import sys
import unittest
import urllib.error
import urllib.request

import harness

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "stack"))
import stack as stack_module  # noqa: E402

SCRIPTS = os.path.join(os.path.abspath(harness.SOURCE_DIR), "scripts")

# An expression about hancock.llm's families (docs/llm-observability.md).
LLM_FAMILY = re.compile(r"\b(gen_ai_\w+|hancock_llm_\w+|hancock_gateway_overhead_seconds\w*)")

# LLM panels that by design have data only in a fault, which this traffic does not cause, by
# title: (the refId left out, or None for the whole panel, and why). Everything else must have
# data. The gauges and counters of hangs, stalls, queued calls and refused admissions need no
# exclusion: their series exist at 0 from the start (the refusals' with a cap, which the stack
# sets), so their panels draw a 0; a cooldown shows in Backend State, which always has data; a
# spill to CPU has an alert, not a panel of its own; the fake's 500s and one empty answer give
# the error, fallback and empty-answer panels theirs.
FAULT_ONLY = {
    "Unpriced Calls": (None, "counts only calls to a model missing from the price table; the "
                             "shipped table prices every model the stack calls"),
}


class StackTest(unittest.TestCase):
    def setUp(self):
        missing = [b for b in ("prometheus", "prometheus-alertmanager") if shutil.which(b) is None]
        if missing:
            self.skipTest("not installed: " + ", ".join(missing))
        # A cap per backend, so that the queue's families have series (8 slots, more than this
        # traffic takes: no call waits long, none is refused).
        self.stack = stack_module.Stack(rules_for="5s", rules_window="20s", fake_llm=True, env={
            "HANCOCK_RATE_LIMIT": "1000000", "HANCOCK_API_KEY": "",
            "HANCOCK_LLM_MAX_CONCURRENCY": "ollama=8,openai=8"})

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

    def post(self, path, body):
        req = urllib.request.Request(f"http://127.0.0.1:{self.stack.hancock_port}{path}",
                                     data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                return r.status, r.read()
        except urllib.error.HTTPError as e:
            return e.code, e.read()

    # One round of model calls: several modes and endpoints, streamed and not; the fake Ollama
    # fails every fifth call (500, so the fallback answers) and answers one prompt with nothing.
    LLM_CALLS = (
        ("/v1/ask", {"question": "what is a SOC?"}),
        ("/v1/triage", {"alert": "4625 failed logons from 10.0.0.7"}),
        ("/v1/code", {"task": "a YARA rule for a PE file"}),
        ("/v1/chat", {"message": "hello", "mode": "soc"}),
        ("/v1/chat", {"message": "hello", "stream": True}),
        ("/v1/chat", {"message": "hello", "mode": "soc", "stream": True}),
        ("/v1/ask", {"question": "say nothing"}),
    )

    def llm_traffic(self):
        statuses = [self.post(path, body)[0] for path, body in self.LLM_CALLS]
        self.assertEqual(statuses[:-1], [200] * (len(self.LLM_CALLS) - 1))  # failures fell back
        self.assertIn(statuses[-1], (502, 200))  # the empty answer (or the fallback's, after a 500)

    def dashboard(self):
        """The dashboard the scripts generate (monitoring/grafana_dashboard.json is this, committed)."""
        out = subprocess.run([stack_module.BIN, "dashboard", "--scripts", SCRIPTS], capture_output=True,
                             text=True, check=True).stdout
        return json.loads(out)

    @staticmethod
    def targets(dashboard):
        """(panel title, refId, expr) of every query, rows' panels included."""
        def panels(items):
            for p in items:
                yield p
                yield from panels(p.get("panels", []))
        return [(p.get("title", "?"), t.get("refId"), t["expr"]) for p in panels(dashboard["panels"])
                for t in p.get("targets", []) if t.get("expr")]

    @staticmethod
    def concrete(expr):
        """The expression with Grafana's variables as Grafana would substitute them."""
        return re.sub(r"\$__(rate_)?interval|\$__range", "1m", expr)

    def has_data(self, expr):
        """True when the query returns at least one series with a number (not NaN: a quantile
        of a histogram that observed nothing in its window is NaN, which Grafana draws as nothing)."""
        return any(not math.isnan(float(r["value"][1])) for r in self.stack.query(self.concrete(expr)))

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
        s = self.stack
        s.wait(lambda: s.query("up{job='hancock'} == 1"), "Prometheus scraping hancock")
        targets = self.targets(self.dashboard())
        self.assertGreaterEqual(len(targets), 10)
        original = ["Request Rate", "Error Rate", "Requests by Endpoint", "Memory Usage", "Active Connections",
                    "Total Requests", "Total Errors", "Current Memory"]
        llm = [t for t in targets if LLM_FAMILY.search(t[2])]
        llm_titles = {title for title, _, _ in llm}
        for title, (refs, reason) in FAULT_ONLY.items():
            self.assertIn(title, llm_titles, f"an exclusion for no LLM panel: {title} ({reason})")
        checked = [t for t in llm if not (t[0] in FAULT_ONLY and FAULT_ONLY[t[0]][0] in (None, t[1]))]
        self.assertGreaterEqual(len({title for title, _, _ in checked}), 20, llm_titles)  # 23 now

        # The first call finds the model unloaded (a cold start: Ollama reports a 1.5 s load).
        s.ollama.timings = dict(s.ollama.timings, load=1.5)
        self.post("/v1/ask", {"question": "warm up"})
        s.ollama.timings = dict(s.ollama.timings, load=0.003)
        s.ollama.fail_every = 5
        s.ollama.reply = lambda doc: "" if "say nothing" in json.dumps(doc.get("messages")) else \
            "a fake answer from the stack's Ollama, one word at a time"
        missing = []

        def all_have_data():
            # Traffic between every two scrapes, so that every rate over the window is above 0.
            self.traffic(ok=10, errors=3)
            self.llm_traffic()
            missing[:] = [t for t in original for title, _, e in targets
                          if title.startswith(t) and not self.has_data(e)]
            missing.extend(f"{title} [{ref}]: {expr}" for title, ref, expr in checked if not self.has_data(expr))
            return not missing or None

        try:
            s.wait(all_have_data, "data for every original panel and every LLM panel", timeout=60)
        except TimeoutError:
            self.fail("no data for:\n" + "\n".join(missing))
        # The traffic reached the fakes: both backends, the fallback after each failure.
        self.assertGreater(s.ollama.chat_failures, 0)
        self.assertGreaterEqual(len(s.openai.received()), s.ollama.chat_failures)


if __name__ == "__main__":
    unittest.main()
