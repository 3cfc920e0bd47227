"""Black-box tests of exemplars (issue 14): every request's hancock_request_duration_seconds
observation carries its request_id and trace_id as the exemplar of its bucket, in OpenMetrics
scrapes only; `histogram:observe(labels, v, exemplar)` does the same from Lua and refuses bad
exemplar tables with errors that name the metric; and a real Prometheus with exemplar storage on
scrapes them (OpenMetrics, which it negotiates by default) and answers them from
/api/v1/query_exemplars.

Expositions are parsed by test_metrics' strict parser (Exposition), which checks the exemplar
syntax and limits and that an exemplar lies in its bucket. promtool's `check metrics` reads only
the text format; its OpenMetrics parser is the backfill's (`promtool tsdb create-blocks-from
openmetrics`), which needs a timestamp on every sample, so the OpenMetrics scrape is fed to it
with one added. The Prometheus part reuses test_prometheus_scrape's helpers. Only 127.0.0.1 is
contacted.
"""
import json
import os
import shutil
import subprocess
import tempfile
import time
import unittest

import harness
import test_metrics
import test_prometheus_scrape
from harness import Server, write_scripts
from test_metrics import Exposition, ExpositionError

PROMETHEUS = test_prometheus_scrape.PROMETHEUS
DURATION = "hancock_request_duration_seconds"
TRACEPARENT_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
TRACEPARENT = "00-%s-00f067aa0ba902b7-01" % TRACEPARENT_TRACE
OM_ACCEPT = {"Accept": "application/openmetrics-text"}

LUA_SCRIPT = r'''
local hk = require "hancock"

local work = hk.metrics.histogram("hk_test_exemplar_seconds", "Observed with exemplars from Lua.", { "step" },
  { 0.1, 1, 10 })
local plain = hk.metrics.histogram("hk_test_exemplar_plain_seconds", "A label-less histogram.", nil, { 0.1, 1 })
local TRACE = "@TRACE@"

local function answer(ok, err)
  return { ok = ok == nil and hk.json.null or ok, err = err or hk.json.null }
end

-- Observations that keep their exemplar, or return nil and why not (never an error).
local kept = {
  strings = function() return work:observe({ step = "strings" }, 0.5, { trace_id = TRACE, request_id = "lua-1" }) end,
  number = function() return work:observe({ step = "number" }, 5, { attempt = 3 }) end,
  positional = function() return work:observe({ "positional" }, 0.05, { trace_id = TRACE }) end,
  escaped = function() return work:observe({ step = "escaped" }, 0.5, { note = 'a "q" \\ \u{e9}\nz' }) end,
  plain = function() return plain:observe(0.05, { trace_id = TRACE }) end,
  plain_nil_labels = function() return plain:observe(nil, 0.5, { trace_id = TRACE }) end,
  empty = function() return work:observe({ step = "empty" }, 0.5, {}) end,
  none = function() return work:observe({ step = "none" }, 0.5, nil) end,
  too_long = function() return work:observe({ step = "too_long" }, 0.5, { request_id = string.rep("x", 119) }) end,
  at_limit = function() return work:observe({ step = "at_limit" }, 0.5, { request_id = string.rep("x", 118) }) end,
  not_utf8 = function() return work:observe({ step = "not_utf8" }, 0.5, { request_id = "bad \xff byte" }) end,
}

-- Misuse: each raises an error that names the metric.
local misuse = {
  not_table = function() work:observe({ step = "bad" }, 0.5, "trace") end,
  array = function() work:observe({ step = "bad" }, 0.5, { "a", "b" }) end,
  bad_name = function() work:observe({ step = "bad" }, 0.5, { ["trace-id"] = TRACE }) end,
  nul_name = function() work:observe({ step = "bad" }, 0.5, { ["a\0b"] = "x" }) end,
  table_value = function() work:observe({ step = "bad" }, 0.5, { trace_id = {} }) end,
  boolean_value = function() work:observe({ step = "bad" }, 0.5, { trace_id = true }) end,
  too_many = function() work:observe({ step = "bad" }, 0.5, { a = "1", b = "2", c = "3", d = "4", e = "5" }) end,
  plain_not_table = function() plain:observe(0.5, 7) end,
}

hk.route("GET", "/kept/:case", function(req)
  return answer(assert(kept[req.params.case], "no such case")())
end)

hk.route("GET", "/misuse/:case", function(req)
  local ok, err = pcall(assert(misuse[req.params.case], "no such case"))
  return { raised = not ok, error = tostring(err) }
end)

-- The request's own id, as a handler passes it on.
hk.route("GET", "/own", function(req)
  return answer(work:observe({ step = "own" }, 0.05, { request_id = req.id, trace_id = TRACE }))
end)

-- Misuse a handler does not catch: a 500, like any other error.
hk.route("GET", "/uncaught", function()
  work:observe({ step = "uncaught" }, 0.5, { trace_id = 42, ["0"] = "x" })
end)
'''.replace("@TRACE@", TRACEPARENT_TRACE)


def scrape(server, openmetrics):
    status, headers, body = harness.request(server, "GET", "/metrics", headers=OM_ACCEPT if openmetrics else None)
    assert status == 200, (status, body)
    return body, Exposition(body, "openmetrics" if openmetrics else "text")


def with_sample_timestamps(body, timestamp):
    """The exposition with `timestamp` after every sample's value (before its exemplar), as
    promtool's OpenMetrics backfill requires."""
    out = []
    for line in body.decode("utf-8").split("\n"):
        if line and not line.startswith("#"):
            pos = test_metrics.METRIC_NAME.match(line).end()
            if line[pos:pos + 1] == "{":
                _, pos = test_metrics._parse_labels(line, pos, "openmetrics")
            value, sep, exemplar = line[pos + 1:].partition(" # ")
            line = "%s %s %d%s%s" % (line[:pos], value, timestamp, sep, exemplar)
        out.append(line)
    return "\n".join(out).encode("utf-8")


class ExemplarsTest(harness.ServersTestCase):
    def serve(self, scripts=test_metrics.ROUTES_DIR):
        server = Server(scripts=scripts)
        self.servers.append(server)
        return server

    def assert_promtool_reads_openmetrics(self, body):
        """promtool's OpenMetrics parser (its backfill) reads the whole exposition."""
        if not os.path.exists(test_metrics.PROMTOOL):
            self.fail("promtool not found (install the prometheus package: deploy/install-deps.sh --test)")
        tmp = tempfile.mkdtemp(prefix="hancock-om-")
        try:
            path = os.path.join(tmp, "scrape.om")
            with open(path, "wb") as f:
                f.write(with_sample_timestamps(body, int(time.time())))
            proc = subprocess.run([test_metrics.PROMTOOL, "tsdb", "create-blocks-from", "openmetrics", path,
                                   os.path.join(tmp, "blocks")], capture_output=True, timeout=120)
            self.assertEqual(proc.returncode, 0, proc.stderr.decode() + proc.stdout.decode())
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    # ---- the strict parser ---------------------------------------------------------------------

    def test_strict_parser_knows_exemplar_syntax(self):
        head = "# HELP h_seconds H.\n# TYPE h_seconds histogram\n"
        tail = 'h_seconds_bucket{le="+Inf"} 2\nh_seconds_sum 0.6\nh_seconds_count 2\n'

        def om(bucket_line, more=tail):
            return head + bucket_line + "\n" + more + "# EOF\n"

        good = om('h_seconds_bucket{le="1.0"} 1 # {request_id="r 1 # x",trace_id="ab\\"c"} 0.5 1700000000.123')
        exp = Exposition(good, "openmetrics")
        ex = exp.exemplar("h_seconds_bucket", le="1.0")
        self.assertEqual(ex.labels, {"request_id": "r 1 # x", "trace_id": 'ab"c'})
        self.assertEqual((ex.value, ex.timestamp), (0.5, 1700000000.123))
        # The timestamp is optional; a sample timestamp may come before the exemplar; {} is a set.
        self.assertIsNone(Exposition(om('h_seconds_bucket{le="1.0"} 1 # {a="b"} 1'), "openmetrics")
                          .exemplar("h_seconds_bucket", le="1.0").timestamp)
        Exposition(om('h_seconds_bucket{le="1.0"} 1 1700000000 # {} 0.5'), "openmetrics")
        # 128 code points of names and values is the limit, characters not bytes.
        Exposition(om('h_seconds_bucket{le="1.0"} 1 # {a="%s"} 0.5' % ("\u00e9" * 127)), "openmetrics")
        bad = {
            "over 128": om('h_seconds_bucket{le="1.0"} 1 # {a="%s"} 0.5' % ("x" * 128)),
            "value not a float": om('h_seconds_bucket{le="1.0"} 1 # {a="b"} fast'),
            "no value": om('h_seconds_bucket{le="1.0"} 1 # {a="b"}'),
            "timestamp not a float": om('h_seconds_bucket{le="1.0"} 1 # {a="b"} 0.5 noon'),
            "timestamp not finite": om('h_seconds_bucket{le="1.0"} 1 # {a="b"} 0.5 +Inf'),
            "extra field": om('h_seconds_bucket{le="1.0"} 1 # {a="b"} 0.5 1 2'),
            "no label set": om('h_seconds_bucket{le="1.0"} 1 # 0.5'),
            "bad label name": om('h_seconds_bucket{le="1.0"} 1 # {a-b="c"} 0.5'),
            "repeated label": om('h_seconds_bucket{le="1.0"} 1 # {a="b",a="c"} 0.5'),
            "outside its bucket": om('h_seconds_bucket{le="1.0"} 1 # {a="b"} 1.5'),
            "on _sum": head + 'h_seconds_bucket{le="1.0"} 1\nh_seconds_bucket{le="+Inf"} 2\n'
                              'h_seconds_sum 0.6 # {a="b"} 0.5\nh_seconds_count 2\n# EOF\n',
        }
        for what, text in bad.items():
            with self.assertRaises(ExpositionError, msg=what):
                Exposition(text, "openmetrics")
        # The text format has no exemplars at all.
        text = good.replace("# EOF\n", "").replace('le="1.0"', 'le="1"')
        with self.assertRaisesRegex(ExpositionError, "exemplar in the text format"):
            Exposition(text, "text")

    # ---- (a) request ids on the request duration histogram --------------------------------------

    def test_request_ids_become_exemplars_in_openmetrics_only(self):
        server = self.serve()
        long_id = "L" * 100        # with its name 110: no room left for the trace id
        longest_id = "M" * 125     # over 118: only the trace id fits
        started = time.time()
        # (method, path, headers) -> the series it lands on; one request per series, except items.
        traffic = [
            ("GET", "/v1/ping", {"X-Request-ID": "ex-ping-1"}),
            ("GET", "/v1/items/7", {"X-Request-ID": "ex-items-1", "traceparent": TRACEPARENT}),
            ("GET", "/v1/items/8", {"X-Request-ID": "ex-items-2", "traceparent": TRACEPARENT}),
            ("GET", "/v1/slow", {"X-Request-ID": "ex-slow-1"}),
            ("PUT", "/v1/any", {}),
            ("DELETE", "/v1/any", {"X-Request-ID": long_id}),
            ("PATCH", "/v1/any", {"X-Request-ID": longest_id}),
            ("GET", "/nowhere", {"X-Request-ID": "ex-404"}),
        ]
        ids = []
        for method, path, headers in traffic:
            status, response_headers, _ = harness.request(server, method, path, headers=headers)
            self.assertIn(status, (200, 404))
            ids.append(response_headers["x-request-id"])
        finished = time.time()
        generated = ids[4]
        self.assertRegex(generated, r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")
        # The trace id each request's log lines carry.
        traces = {}
        for rid in ids:
            ev = server.wait_event("request_completed", predicate=lambda e, r=rid: e.get("request_id") == r)
            traces[rid] = ev["trace_id"]
        self.assertEqual(traces["ex-items-1"], TRACEPARENT_TRACE)
        self.assertEqual(traces[generated], generated.replace("-", ""))

        body, exp = scrape(server, openmetrics=True)
        found = {}  # request_id (or trace_id when it goes alone) -> (series labels, le, Exemplar)
        for labels, ex in exp.exemplars_of(DURATION + "_bucket").items():
            d = dict(labels)
            le = d.pop("le")
            key = ex.labels.get("request_id", ex.labels.get("trace_id"))
            self.assertNotIn(key, found, "one request, one exemplar")
            found[key] = (d, le, ex)
            self.assertTrue(started - 1 <= ex.timestamp <= time.time() + 1, ex)
            self.assertGreater(ex.value, 0)

        def check(rid, method, endpoint, status, labels, alone=True):
            self.assertIn(rid, found, sorted(found))
            series, le, ex = found[rid]
            self.assertEqual(series, {"method": method, "endpoint": endpoint, "status_code": status})
            self.assertEqual(ex.labels, labels)
            if alone:  # the only request of its series: the exemplar is its whole sum
                self.assertEqual(ex.value, exp.value(DURATION + "_sum", **series))
            # The slowest request of the test took what the client saw at most.
            self.assertLessEqual(ex.value, finished - started)

        check("ex-ping-1", "GET", "/v1/ping", "200", {"request_id": "ex-ping-1", "trace_id": traces["ex-ping-1"]})
        check("ex-items-2", "GET", "/v1/items/:id", "200",
              {"request_id": "ex-items-2", "trace_id": TRACEPARENT_TRACE}, alone=False)
        if "ex-items-1" in found:  # latest wins: only in another bucket than ex-items-2's
            self.assertNotEqual(found["ex-items-1"][1], found["ex-items-2"][1])
        check("ex-slow-1", "GET", "/v1/slow", "200", {"request_id": "ex-slow-1", "trace_id": traces["ex-slow-1"]})
        self.assertGreaterEqual(found["ex-slow-1"][2].value, 0.03)  # the route spins 30 ms
        check(generated, "PUT", "/v1/any", "200", {"request_id": generated, "trace_id": traces[generated]})
        check(long_id, "DELETE", "/v1/any", "200", {"request_id": long_id})
        check(traces[longest_id], "PATCH", "/v1/any", "200", {"trace_id": traces[longest_id]})
        check("ex-404", "GET", "unmatched", "404", {"request_id": "ex-404", "trace_id": traces["ex-404"]})
        # Other histograms and samples have none.
        self.assertEqual({n for n, _ in exp.exemplars}, {DURATION + "_bucket"})
        self.assert_promtool_reads_openmetrics(body)

        # The text format: no exemplar, none of the ids, and promtool finds only the legacy names.
        text, text_exp = scrape(server, openmetrics=False)
        self.assertEqual(text_exp.exemplars, {})
        self.assertEqual([line for line in text.decode().split("\n") if not line.startswith("#") and "#" in line], [])
        for rid in ids:
            self.assertNotIn(rid.encode(), text)
        rc, out, err = test_metrics.promtool(text)
        legacy = {'%s counter metrics should have "_total" suffix' % name for name in test_metrics.LEGACY_COUNTERS}
        self.assertTrue(err and set(err.splitlines()) <= legacy, err)  # by_mode only once a mode counted
        self.assertEqual(rc, 3, err)
        # The same series in both, exemplars aside.
        _, again = scrape(server, openmetrics=True)
        self.assertEqual(
            {k for k in again.normalized_keys() if k[0].startswith(DURATION)},
            {k for k in text_exp.normalized_keys() if k[0].startswith(DURATION)})

    # ---- (b) from Lua ---------------------------------------------------------------------------

    def test_lua_observe_with_exemplar(self):
        server = self.serve(write_scripts({"exemplars.lua": LUA_SCRIPT}))
        answers = {}
        for case in ("strings", "number", "positional", "escaped", "plain", "plain_nil_labels", "empty", "none",
                     "too_long", "at_limit", "not_utf8"):
            status, _, body = harness.request(server, "GET", "/kept/" + case)
            self.assertEqual(status, 200, (case, body))
            answers[case] = json.loads(body)
        status, headers, body = harness.request(server, "GET", "/own", headers={"X-Request-ID": "lua-own-1"})
        self.assertEqual((status, json.loads(body)), (200, {"ok": True, "err": None}))
        for case in ("strings", "number", "positional", "escaped", "plain", "plain_nil_labels", "at_limit"):
            self.assertEqual(answers[case], {"ok": True, "err": None}, case)
        # No exemplar, nothing returned.
        self.assertEqual(answers["empty"], {"ok": None, "err": None})
        self.assertEqual(answers["none"], {"ok": None, "err": None})
        # Values a client may have sent: not kept, and said so, but not an error.
        self.assertEqual(answers["too_long"]["ok"], None)
        self.assertIn("over 128 characters (the OpenMetrics limit)", answers["too_long"]["err"])
        self.assertEqual(answers["not_utf8"], {"ok": None, "err": "exemplar not kept: a label value is not valid UTF-8"})

        body, exp = scrape(server, openmetrics=True)
        name = "hk_test_exemplar_seconds"

        def exemplar(step, le):
            return exp.exemplar(name + "_bucket", step=step, le=le)

        # Sorted by label name, whatever the table's order.
        ex = exemplar("strings", "1.0")
        self.assertEqual(ex.labels, {"request_id": "lua-1", "trace_id": TRACEPARENT_TRACE})
        self.assertEqual(list(ex.labels), ["request_id", "trace_id"])
        self.assertEqual(ex.value, 0.5)
        self.assertIn('# {request_id="lua-1",trace_id="%s"} 0.5 ' % TRACEPARENT_TRACE, body.decode())
        self.assertEqual(exemplar("number", "10.0").labels, {"attempt": "3"})
        self.assertEqual(exemplar("positional", "0.1").labels, {"trace_id": TRACEPARENT_TRACE})
        self.assertEqual(exemplar("escaped", "1.0").labels, {"note": 'a "q" \\ \u00e9\nz'})
        self.assertEqual(exemplar("own", "0.1").labels, {"request_id": "lua-own-1", "trace_id": TRACEPARENT_TRACE})
        self.assertEqual(exemplar("at_limit", "1.0").labels, {"request_id": "x" * 118})
        plain = "hk_test_exemplar_plain_seconds_bucket"
        self.assertEqual(exp.exemplar(plain, le="0.1").labels, {"trace_id": TRACEPARENT_TRACE})
        self.assertEqual(exp.exemplar(plain, le="1.0").value, 0.5)
        # Counted with or without their exemplar, each in one bucket.
        for step in ("strings", "number", "positional", "escaped", "own", "empty", "none", "too_long", "at_limit",
                     "not_utf8"):
            self.assertEqual(exp.value(name + "_count", step=step), 1, step)
            held = [le for (n, labels), _ in exp.exemplars.items()
                    if n == name + "_bucket" and dict(labels)["step"] == step for le in [dict(labels)["le"]]]
            self.assertEqual(len(held), 0 if step in ("empty", "none", "too_long", "not_utf8") else 1, (step, held))
        self.assert_promtool_reads_openmetrics(body)
        text, text_exp = scrape(server, openmetrics=False)
        self.assertEqual(text_exp.exemplars, {})
        self.assertNotIn(b"lua-1", text)

        # Misuse raises, naming the metric and what is wrong, and counts nothing.
        expected = {
            "not_table": "metric hk_test_exemplar_seconds: the exemplar must be a table of labels, got string",
            "array": "metric hk_test_exemplar_seconds: exemplar label names must be strings, got number",
            "bad_name": "metric hk_test_exemplar_seconds: exemplar label name 'trace-id' is not valid "
                        "([a-zA-Z_][a-zA-Z0-9_]*)",
            "nul_name": "metric hk_test_exemplar_seconds: exemplar label name 'a' is not valid",
            "table_value": "metric hk_test_exemplar_seconds: exemplar label 'trace_id' must be a string or a number, "
                           "got table",
            "boolean_value": "metric hk_test_exemplar_seconds: exemplar label 'trace_id' must be a string or a "
                             "number, got boolean",
            "too_many": "metric hk_test_exemplar_seconds: an exemplar has at most 4 labels",
            "plain_not_table": "metric hk_test_exemplar_plain_seconds: the exemplar must be a table of labels, "
                               "got number",
        }
        for case, message in expected.items():
            status, _, body = harness.request(server, "GET", "/misuse/" + case)
            self.assertEqual(status, 200, (case, body))
            doc = json.loads(body)
            self.assertTrue(doc["raised"], (case, doc))
            self.assertIn(message, doc["error"], case)
            self.assertIn("exemplars.lua:", doc["error"], case)  # the script's line
        status, headers, body = harness.request(server, "GET", "/uncaught")
        self.assertEqual(status, 500, body)
        rid = headers["x-request-id"]
        ev = server.wait_event("handler_error", predicate=lambda e: e.get("request_id") == rid)
        self.assertIn("metric hk_test_exemplar_seconds: exemplar label", ev["error"].split("\n")[0])
        _, exp = scrape(server, openmetrics=True)
        steps = {dict(labels)["step"] for labels in exp.series(name + "_count")}
        self.assertNotIn("bad", steps)
        self.assertNotIn("uncaught", steps)
        self.assertEqual(exp.value("hk_test_exemplar_plain_seconds_count"), 2)

    # ---- (c) a real Prometheus ------------------------------------------------------------------

    def start_prometheus(self, server):
        """Prometheus with exemplar storage, scraping `server` every second (OpenMetrics is what
        it asks for first). Sets what test_prometheus_scrape's helpers use: prom, prom_port."""
        self.tmp = tempfile.mkdtemp(prefix="hancock-prom-")
        self.addCleanup(shutil.rmtree, self.tmp, True)
        self.prom, self.prom_port = test_prometheus_scrape.start_prometheus(
            self.tmp, server.port, "--enable-feature=exemplar-storage")
        self.addCleanup(test_prometheus_scrape.stop_prometheus, self.prom)

    # test_prometheus_scrape's helpers, on this test's Prometheus.
    api = test_prometheus_scrape.PrometheusScrapeTest.api
    wait_for = test_prometheus_scrape.PrometheusScrapeTest.wait_for

    def test_prometheus_stores_our_exemplars(self):
        if PROMETHEUS is None:
            self.skipTest("prometheus is not installed")
        server = self.serve()
        start = time.time()
        self.start_prometheus(server)

        def healthy_target():
            targets = self.api("/api/v1/targets")["activeTargets"]
            return targets and targets[0]["health"] == "up" and targets[0]

        # Up with no error: its OpenMetrics parser read every exemplar of every scrape.
        target = self.wait_for(healthy_target, "a healthy scrape")
        self.assertEqual(target["lastError"], "")
        # After the first scrape, so none of these is overwritten before Prometheus sees it.
        sent = {
            "prom-ex-ping": ("GET", "/v1/ping", {"X-Request-ID": "prom-ex-ping"}),
            "prom-ex-items": ("GET", "/v1/items/3", {"X-Request-ID": "prom-ex-items", "traceparent": TRACEPARENT}),
            "prom-ex-404": ("GET", "/nowhere", {"X-Request-ID": "prom-ex-404"}),
        }
        for method, path, headers in sent.values():
            harness.request(server, method, path, headers=headers)
        traces = {rid: server.wait_event("request_completed", predicate=lambda e, r=rid: e.get("request_id") == r)
                  ["trace_id"] for rid in sent}
        self.assertEqual(traces["prom-ex-items"], TRACEPARENT_TRACE)
        _, ours = scrape(server, openmetrics=True)
        ours = {ex.labels.get("request_id"): (dict(labels), ex)
                for labels, ex in ours.exemplars_of(DURATION + "_bucket").items()}

        def stored():
            data = self.api("/api/v1/query_exemplars", query=DURATION + "_bucket",
                            start="%.3f" % (start - 60), end="%.3f" % (time.time() + 60))
            got = {}
            for series in data:
                for ex in series["exemplars"]:
                    rid = ex["labels"].get("request_id")
                    if rid in sent:
                        got[rid] = (series["seriesLabels"], ex)
            return len(got) == len(sent) and got

        got = self.wait_for(stored, "our exemplars in /api/v1/query_exemplars")
        endpoints = {"prom-ex-ping": "/v1/ping", "prom-ex-items": "/v1/items/:id", "prom-ex-404": "unmatched"}
        for rid, (series, ex) in got.items():
            self.assertEqual(ex["labels"], {"request_id": rid, "trace_id": traces[rid]})
            self.assertEqual(series["__name__"], DURATION + "_bucket")
            self.assertEqual(series["endpoint"], endpoints[rid])
            self.assertEqual(series["job"], "hancock")
            # What we exposed: the same bucket, value and time (Prometheus keeps milliseconds).
            our_series, our_ex = ours[rid]
            self.assertEqual(series["le"], our_series["le"])
            self.assertEqual(float(ex["value"]), our_ex.value)
            self.assertAlmostEqual(float(ex["timestamp"]), our_ex.timestamp, delta=0.002)
        target = self.wait_for(healthy_target, "a healthy scrape")
        self.assertEqual(target["lastError"], "")


if __name__ == "__main__":
    unittest.main()
