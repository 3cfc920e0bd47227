"""A fleet scraped as one (tests/fleet/fleet.py): three replicas of the real host, one real
Prometheus discovering them through file_sd and evaluating the generated rules. Through
Prometheus' HTTP API: the generated dashboard's queries aggregate across replicas (each
aggregation equals the same aggregation done here over its per-instance series; traffic sent in
known amounts shows up per instance), one replica killed is `up == 0` and HancockInstanceDown for
that instance alone, and a scripts change rolled out replica by replica — as the kubelet updates a
mounted ConfigMap — fails no request of a client calling every replica throughout.
Skipped only when the prometheus binary is absent (make test installs it).
"""
import http.client
import json
import math
import os
import re
import shutil
import sys
import threading
import time
import unittest

from harness import SOURCE_DIR, metric_value

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "fleet"))
from fleet import Fleet  # noqa: E402

DASHBOARD = os.path.join(SOURCE_DIR, "monitoring", "grafana_dashboard.json")
# A route whose answer the rollout changes; the rest of each replica's scripts are scripts/.
RELEASE = 'local hk = require "hancock"\nhk.route("GET", "/release", function() return { release = %d } end)\n'
# Grafana's built-in variables, as a dashboard at its default range would have them.
GRAFANA_VARIABLES = {"__rate_interval": "1m", "__interval": "15s", "__interval_ms": "15000",
                     "__range": "1h", "__range_s": "3600", "__range_ms": "3600000"}
AGGREGATION = re.compile(r"^(sum|max|min|count)(?: by \(([^)]*)\))? ?\((.*)\)$", re.S)


def grafana_expr(expr, variables):
    """A panel's expr with Grafana's variables replaced: the built-ins by their values at the
    default range, a dashboard variable by a regex matching every value."""
    def value(m):
        name = m.group(1) or m.group(2)
        if name in GRAFANA_VARIABLES:
            return GRAFANA_VARIABLES[name]
        if name in variables:
            return ".+"
        raise AssertionError(f"unknown Grafana variable ${name} in {expr}")
    return re.sub(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)", value, expr)


def balanced(text):
    depth = 0
    for c in text:
        depth += {"(": 1, ")": -1}.get(c, 0)
        if depth < 0:
            return False
    return depth == 0


def aggregate(op, values):
    return {"sum": sum, "max": max, "min": min, "count": len}[op](values)


class Client(threading.Thread):
    """Calls GET /release on every replica in turn over one keep-alive connection each, until
    stopped: every answer (the release number) by replica, and every failure."""

    def __init__(self, replicas):
        super().__init__(daemon=True)
        self.replicas = replicas
        self.answers = {r.pod: [] for r in replicas}
        self.failures = []
        self.done = threading.Event()
        self.progress = threading.Condition()
        self.count = 0

    def run(self):
        conns = {r.pod: http.client.HTTPConnection("127.0.0.1", r.port, timeout=10) for r in self.replicas}
        while not self.done.is_set():
            for r in self.replicas:
                try:
                    conns[r.pod].request("GET", "/release")
                    response = conns[r.pod].getresponse()
                    body = response.read()
                    if response.status != 200:
                        self.failures.append((r.pod, response.status, body[:200]))
                    else:
                        self.answers[r.pod].append(json.loads(body)["release"])
                except (OSError, http.client.HTTPException, ValueError, KeyError) as e:
                    self.failures.append((r.pod, type(e).__name__, str(e)))
                    conns[r.pod].close()
                    conns[r.pod] = http.client.HTTPConnection("127.0.0.1", r.port, timeout=10)
                with self.progress:
                    self.count += 1
                    self.progress.notify_all()
        for conn in conns.values():
            conn.close()

    def wait_requests(self, n, timeout=30):
        """Until n more requests have been answered or failed."""
        with self.progress:
            target = self.count + n
            if not self.progress.wait_for(lambda: self.count >= target, timeout):
                raise AssertionError(f"the client made {self.count} of {target} requests")


class FleetTest(unittest.TestCase):
    def setUp(self):
        if shutil.which("prometheus") is None:
            self.skipTest("prometheus is not installed")
        self.started = time.monotonic()
        self.fleet = Fleet(replicas=3, extra_scripts={"release.lua": RELEASE % 1}, rules_for="2s",
                           env={"LOG_LEVEL": "WARNING"})
        self.addCleanup(self.stop_fleet)
        self.fleet.wait_discovered()

    def stop_fleet(self):
        codes = self.fleet.stop()
        self.assertEqual(set(codes.values()), {0}, codes)  # every replica still running drained cleanly
        print(f"\n{self.id()}: {time.monotonic() - self.started:.1f} s", file=sys.stderr)

    def query(self, expr, at=None):
        params = {"query": expr}
        if at is not None:
            params["time"] = f"{at:.3f}"
        return self.fleet.prom("/api/v1/query", **params)["result"]

    def by_instance(self, expr, at=None):
        return {r["metric"]["instance"]: float(r["value"][1]) for r in self.query(expr, at)}

    def send_release(self, amounts):
        """Sends amounts[instance] GET /release to each replica over one connection."""
        for r in self.fleet.replicas:
            conn = http.client.HTTPConnection("127.0.0.1", r.port, timeout=10)
            for _ in range(amounts.get(r.instance, 0)):
                conn.request("GET", "/release")
                self.assertEqual(conn.getresponse().read(), b'{"release":1}')
            conn.close()

    def get_release(self, replica):
        return json.loads(self.fleet.get(replica.port, "/release")[1])["release"]

    # ---- (a) the dashboard's queries over three replicas ---------------------------------------

    def test_dashboard_queries_aggregate_across_replicas(self):
        fleet = self.fleet
        sent = {r.instance: 2 * (r.index + 1) * (r.index + 2) for r in fleet.replicas}  # 4, 12, 24 requests
        # One request each first, so that the route's series exist before the known amounts
        # arrive and Prometheus sees those as an increase (a rate), not as a series' first value.
        self.send_release({r.instance: 1 for r in fleet.replicas})
        requests = 'sum by (instance) (hancock_requests_by_endpoint{endpoint="/release"})'
        fleet.wait(lambda: self.by_instance(requests) == {i: 1.0 for i in sent}, "the route's series scraped")
        self.send_release(sent)
        fleet.wait(lambda: self.by_instance(requests) == {i: 1.0 + n for i, n in sent.items()},
                   f"per-instance counts 1 + {sent}")
        scrapes = "count_over_time(hancock_requests_total[1m])"
        fleet.wait(lambda: len(self.by_instance(scrapes)) == 3 and min(self.by_instance(scrapes).values()) >= 4,
                   "four scrapes of every replica")
        # Every query below is evaluated at this one instant, once every scrape up to it is stored
        # (a scrape's samples carry its start time and are stored up to scrape_timeout later).
        at = time.time()
        time.sleep(1.5)
        self.assertEqual(self.by_instance('sum by (instance) (max_over_time(hancock_requests_by_endpoint{endpoint="/release"}[1m])'
                                          ' - min_over_time(hancock_requests_by_endpoint{endpoint="/release"}[1m]))', at),
                         sent)
        self.assertEqual(self.by_instance('sum by (instance) (hancock_request_duration_seconds_count{endpoint="/release"})', at),
                         {i: 1.0 + n for i, n in sent.items()})
        self.assertEqual(float(self.query('sum(hancock_requests_by_endpoint{endpoint="/release"})', at)[0]["value"][1]),
                         3 + sum(sent.values()))
        per_instance = self.by_instance("rate(hancock_requests_total[1m])", at)
        self.assertEqual(set(per_instance), set(sent))
        total = float(self.query("sum(rate(hancock_requests_total[1m]))", at)[0]["value"][1])
        self.assertTrue(math.isclose(total, sum(per_instance.values()), rel_tol=1e-9), (total, per_instance))
        # The route's rate, per instance, follows the amounts sent (4 < 12 < 24 over the window).
        release_rate = self.by_instance('sum by (instance) (rate(hancock_requests_by_endpoint{endpoint="/release"}[2m]))', at)
        self.assertEqual(sorted(release_rate, key=release_rate.get), sorted(sent, key=sent.get), release_rate)
        self.assertGreater(min(release_rate.values()), 0)

        # Every panel's query runs against the fleet; each aggregation equals the same
        # aggregation done here over the series it aggregates.
        with open(DASHBOARD) as f:
            dashboard = json.load(f)
        variables = {v["name"] for v in dashboard["templating"]["list"]}
        checked, with_data = [], {}
        for panel in dashboard["panels"]:
            for target in panel.get("targets", []):
                expr = grafana_expr(target["expr"], variables)
                outer = self.query(expr, at)  # a query Prometheus refuses fails here (HTTP 400)
                m = AGGREGATION.match(expr)
                if not m or not balanced(m.group(3)):
                    continue
                op, labels, inner = m.group(1), [s.strip() for s in (m.group(2) or "").split(",") if s.strip()], m.group(3)
                groups = {}
                instances = {}
                for series in self.query(inner, at):
                    key = tuple(series["metric"].get(label, "") for label in labels)
                    groups.setdefault(key, []).append(float(series["value"][1]))
                    instances.setdefault(key, set()).add(series["metric"].get("instance"))
                got = {tuple(s["metric"].get(label, "") for label in labels): float(s["value"][1]) for s in outer}
                want = {key: aggregate(op, values) for key, values in groups.items()}
                self.assertEqual(set(got), set(want), f"{panel['title']}: {expr}")
                for key in want:
                    self.assertTrue(math.isclose(got[key], want[key], rel_tol=1e-9, abs_tol=1e-12),
                                    f"{panel['title']}: {expr} {key}: {got[key]} != {want[key]}")
                checked.append(panel["title"])
                if want:
                    with_data[panel["title"]] = max(len(i) for i in instances.values())
        # The fleet-wide panels aggregate all three replicas, not one of them.
        for title in ("Total Requests", "Total Errors", "Current Memory", "Active Connections",
                      "Requests by Endpoint", "Last Reload Successful"):
            self.assertEqual(with_data.get(title), 3, f"{title}: {with_data}")
        across = [float(r["value"][1]) for r in self.query(
            "sum by (endpoint) (rate(hancock_requests_by_endpoint[2m]))", at) if r["metric"]["endpoint"] == "/release"]
        self.assertEqual(len(across), 1)
        self.assertTrue(math.isclose(across[0], sum(release_rate.values()), rel_tol=1e-9), (across, release_rate))
        print(f"\nfleet: sent {sent}; sum(rate(hancock_requests_total[1m])) = {total:.4f} = sum of "
              f"{ {k: round(v, 4) for k, v in per_instance.items()} }; /release rate per instance "
              f"{ {k: round(v, 4) for k, v in release_rate.items()} }, across replicas {across}; {len(checked)} dashboard aggregations checked, "
              f"{len(with_data)} with data", file=sys.stderr)

    # ---- (b) one replica down --------------------------------------------------------------------

    def test_one_replica_down_fires_instance_down_for_it_alone(self):
        fleet = self.fleet
        victim = fleet.replicas[1]
        fleet.kill(victim)
        fleet.wait(lambda: self.by_instance('up{job="hancock"} == 0') == {victim.instance: 0.0},
                   f"up == 0 for {victim.instance} alone")
        self.assertEqual(self.by_instance('up{job="hancock"} == 1'),
                         {r.instance: 1.0 for r in fleet.replicas if r is not victim})
        seen = []  # (state, instance) of every HancockInstanceDown alert, in order observed

        def instance_down():
            alerts = [a for a in fleet.prom("/api/v1/alerts")["alerts"]
                      if a["labels"]["alertname"] == "HancockInstanceDown"]
            for a in alerts:
                if (a["state"], a["labels"]["instance"]) not in seen:
                    seen.append((a["state"], a["labels"]["instance"]))
            return [a for a in alerts if a["state"] == "firing"]

        firing = fleet.wait(instance_down, "HancockInstanceDown firing", timeout=30)
        self.assertEqual(seen, [("pending", victim.instance), ("firing", victim.instance)])
        self.assertEqual(len(firing), 1)
        labels = firing[0]["labels"]
        self.assertEqual((labels["instance"], labels["pod"], labels["job"], labels["severity"]),
                         (victim.instance, victim.pod, "hancock", "critical"))
        self.assertIn(victim.instance, firing[0]["annotations"]["description"])

        # A replacement (a new pod): the dead target leaves discovery, the new one joins, and
        # the alert resolves, since the removed target has no `up` series any more.
        fleet.remove(victim)
        replacement = fleet.add()
        fleet.wait_discovered()
        fleet.wait(lambda: not [a for a in fleet.prom("/api/v1/alerts")["alerts"]
                                if a["labels"]["alertname"] == "HancockInstanceDown"],
                   "HancockInstanceDown resolved")
        fleet.wait(lambda: self.by_instance('up{job="hancock"}') == {r.instance: 1.0 for r in fleet.discovered},
                   "three replicas up")
        print(f"\nfleet: killed {victim.pod} ({victim.instance}): alert states {seen}; replaced by "
              f"{replacement.pod} ({replacement.instance})", file=sys.stderr)

    # ---- (c) a rolling scripts change ------------------------------------------------------------

    def test_rolling_scripts_change_fails_no_request(self):
        fleet = self.fleet
        client = Client(fleet.replicas)
        client.start()
        self.addCleanup(client.done.set)
        client.wait_requests(60)
        for replica in fleet.replicas:
            generation = metric_value(fleet.get(replica.port, "/metrics")[1].decode(), "hancock_script_generation")
            fleet.update_scripts(replica, {"release.lua": RELEASE % 2})
            fleet.wait(lambda r=replica: metric_value(fleet.get(r.port, "/metrics")[1].decode(),
                                                      "hancock_script_generation") == generation + 1,
                       f"{replica.pod} reloaded")
            self.assertEqual(self.get_release(replica), 2)
            client.wait_requests(60)  # the mixed fleet serves a while before the next replica
        client.done.set()
        client.join(30)
        self.assertEqual(client.failures, [])
        for pod, answers in client.answers.items():
            with self.subTest(pod=pod):
                # Old until its swap, new from then on: no replica goes back.
                self.assertEqual(answers, sorted(answers))
                self.assertEqual((answers[0], answers[-1]), (1, 2), f"{pod}: {len(answers)} answers")
        self.assertEqual({self.get_release(r) for r in fleet.replicas}, {2})
        # What an operator checks after a ConfigMap change, per pod.
        want = {r.instance: 2.0 for r in fleet.replicas}
        fleet.wait(lambda: self.by_instance("hancock_script_generation") == want, f"generation 2 on {sorted(want)}")
        self.assertEqual(self.by_instance("hancock_config_last_reload_successful"), {i: 1.0 for i in want})
        self.assertEqual(self.by_instance('hancock_reloads_total{result="failure"}'), {i: 0.0 for i in want})
        counts = {pod: (answers.count(1), answers.count(2)) for pod, answers in client.answers.items()}
        print(f"\nfleet: rollout over {len(counts)} replicas; the client made {client.count} requests "
              f"(from before the first swap to after the last), {len(client.failures)} failed; "
              f"(old, new) answers per pod {counts}", file=sys.stderr)


if __name__ == "__main__":
    unittest.main()
