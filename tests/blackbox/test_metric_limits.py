"""Black-box tests of the registry's limits on what scripts register: the family cap (1,000
families registered by scripts) and the help-text limit (1,024 bytes). A route registers gauges
named from request input until refused: the script gets an error it can catch, the refusals are
counted in hancock_metric_families_refused_total{reason}, /metrics stays bounded and valid
(promtool), and the server keeps serving.

Fixture: tests/blackbox/scripts_metric_limits/routes.lua. Only 127.0.0.1 is contacted.
"""
import json
import os
import shutil
import subprocess
import unittest

import harness
from harness import Server, metric_value, recv_response

HERE = os.path.dirname(os.path.abspath(__file__))
SCRIPTS = os.path.join(HERE, "scripts_metric_limits")
PROMTOOL = shutil.which("promtool") or "/usr/bin/promtool"
FAMILY_CAP = 1000
HELP_LIMIT = 1024
LEGACY_COUNTERS = ("hancock_requests_by_endpoint", "hancock_requests_by_mode")


class MetricLimitsTest(harness.ServersTestCase):
    def serve(self):
        server = Server(scripts=SCRIPTS)
        self.servers.append(server)
        return server

    @staticmethod
    def post(sock, path, body):
        data = json.dumps(body).encode()
        sock.sendall(b"POST %s HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                     b"Content-Length: %d\r\n\r\n%s" % (path.encode(), len(data), data))
        status, _, raw = recv_response(sock)
        return status, json.loads(raw)

    @staticmethod
    def get(sock, path):
        sock.sendall(b"GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n" % path.encode())
        return recv_response(sock)

    def promtool(self, body):
        if not os.path.exists(PROMTOOL):
            self.fail("promtool not found (install the prometheus package: deploy/install-deps.sh --test)")
        proc = subprocess.run([PROMTOOL, "check", "metrics"], input=body, capture_output=True, timeout=60)
        return proc.returncode, proc.stderr.decode()

    def test_families_from_request_input_are_capped(self):
        server = self.serve()
        full_help = "h" * HELP_LIMIT  # the largest help accepted: the worst case for /metrics
        registered = 0
        refusal = None
        with server.connect() as sock:
            for i in range(FAMILY_CAP + 10):
                status, body = self.post(sock, "/families", {"name": "hk_input_%05d" % i, "help": full_help})
                if status != 200:
                    refusal = (i, status, body)
                    break
                registered += 1
            self.assertIsNotNone(refusal, "no family was refused")
            i, status, body = refusal
            # The fixture registers nothing at load: the whole budget went to request input.
            self.assertEqual(registered, FAMILY_CAP)
            self.assertEqual(status, 422, body)
            self.assertIn("metric hk_input_%05d not registered" % i, body["error"])
            self.assertIn("%d metric families, the limit" % FAMILY_CAP, body["error"])
            # Refused again: counted again; an existing family is still returned at the cap.
            self.assertEqual(self.post(sock, "/families", {"name": "hk_input_again"})[0], 422)
            self.assertEqual(self.post(sock, "/families", {"name": "hk_input_00000"})[0], 200)

            status, headers, raw = self.get(sock, "/metrics")
            self.assertEqual(status, 200)
            self.assertEqual(self.get(sock, "/ping")[0], 200)  # still serving
        text = raw.decode()
        self.assertEqual(metric_value(text, "hancock_metric_families_refused_total", reason="family_cap"), 2)
        self.assertEqual(metric_value(text, "hancock_metric_families_refused_total", reason="help_too_long"), 0)
        self.assertIn("# TYPE hancock_metric_families_refused_total counter", text)
        self.assertNotIn("hk_input_again", text)
        self.assertEqual(text.count("# TYPE hk_input_"), registered)
        # Bounded: 1,000 families with the longest help are ~1.3 MB (the report had 30.8 MB).
        self.assertLess(len(raw), 2 * 1024 * 1024)
        rc, err = self.promtool(raw)
        # Only the lint warnings for the legacy names with series (see docs/metrics.md).
        legacy = {'%s counter metrics should have "_total" suffix' % name for name in LEGACY_COUNTERS}
        self.assertTrue(set(err.splitlines()) <= legacy, err)
        self.assertIn(rc, (0, 3), err)  # 3: lint problems only, the input parsed
        self.assertEqual(server.events("metric_family_refused")[0]["reason"], "family_cap")
        self.assertEqual(len(server.events("metric_family_refused")), 1)  # logged once

    def test_help_over_the_limit_is_refused(self):
        server = self.serve()
        with server.connect() as sock:
            status, body = self.post(sock, "/families", {"name": "hk_input_long", "help": "h" * 100 * 1024})
            self.assertEqual(status, 422, body)
            self.assertIn("metric hk_input_long: help text is 102400 bytes, more than the limit of %d"
                          % HELP_LIMIT, body["error"])
            status, body = self.post(sock, "/families", {"name": "hk_input_fits", "help": "h" * HELP_LIMIT})
            self.assertEqual(status, 200, body)
            status, _, raw = self.get(sock, "/metrics")
        self.assertEqual(status, 200)
        text = raw.decode()
        self.assertEqual(metric_value(text, "hancock_metric_families_refused_total", reason="help_too_long"), 1)
        self.assertNotIn("hk_input_long", text)
        self.assertIn("# HELP hk_input_fits " + "h" * HELP_LIMIT + "\n", text)


if __name__ == "__main__":
    unittest.main()
