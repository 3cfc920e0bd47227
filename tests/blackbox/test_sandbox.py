"""Lua that cannot take the host down: runaway loops (even inside the script's own pcall),
memory bombs and unbounded recursion end in a 500 for that request only; the trimmed standard
library has no way to run programs, exit, load binary chunks or write to the log stream."""
import json
import os
import unittest

import harness
from harness import Server

SCRIPTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "scripts_sandbox")


class SandboxTest(unittest.TestCase):
    def setUp(self):
        # A small budget keeps the runaway tests quick; the default is 10 M instructions.
        self.server = Server(scripts=SCRIPTS, args=("--lua-instruction-limit", "2000000",
                                                    "--lua-memory-limit", "64m"))

    def tearDown(self):
        self.assertEqual(self.server.stop(), 0, self.server.stderr)

    def assert_500_then_healthy(self, path, reason):
        status, headers, body = harness.request(self.server, "GET", path)
        self.assertEqual(status, 500, body)
        self.assertEqual(json.loads(body), {"error": "internal error", "request_id": headers["x-request-id"]})
        ev = self.server.wait_event("handler_error", predicate=lambda e: e["request_id"] == headers["x-request-id"])
        self.assertIn(reason, ev["error"])
        status, _, body = harness.request(self.server, "GET", "/ok")
        self.assertEqual((status, json.loads(body)), (200, {"ok": True}))

    def test_infinite_loop(self):
        self.assert_500_then_healthy("/loop", "instruction budget exceeded")

    def test_scripts_own_pcall_cannot_swallow_the_budget(self):
        self.assert_500_then_healthy("/loop-in-pcall", "instruction budget exceeded")

    def test_huge_string(self):
        self.assert_500_then_healthy("/huge-string", "not enough memory")

    def test_concatenation_bomb(self):
        self.assert_500_then_healthy("/concat-bomb", "not enough memory")

    def test_deep_recursion(self):
        self.assert_500_then_healthy("/deep", "stack overflow")

    def test_trimmed_standard_library(self):
        status, _, body = harness.request(self.server, "GET", "/stdlib")
        self.assertEqual(status, 200)
        self.assertEqual(json.loads(body), {"execute": True, "popen": True, "exit": True, "dofile": True,
                                            "debug_getinfo": True, "traceback": True,
                                            "binary_load": True, "text_load": True})

    def test_print_goes_to_the_log_as_an_event(self):
        status, headers, _ = harness.request(self.server, "GET", "/print")
        self.assertEqual(status, 200)
        ev = self.server.wait_event("script_print")
        self.assertEqual(ev["message"], "hello\tfrom\tprint")
        self.assertEqual(ev["request_id"], headers["x-request-id"])
        for line in self.server.lines:  # stdout is still nothing but JSON lines
            json.loads(line)


if __name__ == "__main__":
    unittest.main()
