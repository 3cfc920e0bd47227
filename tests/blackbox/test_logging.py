"""Black-box tests of the JSON log on stdout, request IDs, LOG_LEVEL, hk.log.* and hk.on_log.

Fixtures: tests/blackbox/scripts_logging/ (routes that log), scripts_logging_hooks/ (hk.on_log
hooks that add, remove, drop) and scripts_logging_hook_error/ (a hook that always fails).
"""
import datetime
import json
import os
import re
import socket
import subprocess
import time
import unittest

import harness
from harness import free_port, line_of
from harness import Server, read_until_closed, recv_response, request

HERE = os.path.dirname(os.path.abspath(__file__))
LOGGING_DIR = os.path.join(HERE, "scripts_logging")
LOGGING_LUA = os.path.join(LOGGING_DIR, "logging.lua")
HOOKS_DIR = os.path.join(HERE, "scripts_logging_hooks")
HOOK_ERROR_DIR = os.path.join(HERE, "scripts_logging_hook_error")

UUID4 = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")
TIMESTAMP = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$")
LATENCY = re.compile(r'"latency_ms":\d+\.\d{2}[,}]')
LEVELS = {"DEBUG", "INFO", "WARNING", "ERROR"}


def wait_any(server, predicate, timeout=10, what="matching event"):
    """The first log event (any name) for which predicate(event) is true."""
    deadline = time.monotonic() + timeout
    with server.cond:
        while True:
            for line in server.lines:
                ev = json.loads(line)
                if predicate(ev):
                    return ev
            left = deadline - time.monotonic()
            if left <= 0 or (server.proc.poll() is not None and not server.reader.is_alive()):
                raise AssertionError(f"no {what} within {timeout}s; log:\n" + "\n".join(server.lines[-20:]))
            server.cond.wait(min(left, 0.5))


def completed(server, rid):
    return server.wait_event("request_completed", predicate=lambda e: e.get("request_id") == rid)


class LoggingTest(unittest.TestCase):
    def setUp(self):
        self.servers = []

    def tearDown(self):
        for server in self.servers:
            if not hasattr(server, "exit_code"):
                self.stop(server)
            self.assertEqual(server.exit_code, 0, "hancock exited with %s; stderr: %s"
                             % (server.exit_code, server.stderr))

    def serve(self, scripts=LOGGING_DIR, env=None):
        server = Server(scripts=scripts, env=env)
        self.servers.append(server)
        return server

    def serve_quiet(self, level, scripts=LOGGING_DIR):
        """A server at a level that hides server_listening: listen on a port picked here and wait
        until it accepts a connection."""
        port = free_port()
        server = Server(scripts=scripts, env={"LOG_LEVEL": level},
                        args=("--listen", "127.0.0.1:%d" % port), wait=False)
        self.servers.append(server)
        server.port = port
        deadline = time.monotonic() + 10
        while True:
            try:
                server.connect(timeout=2).close()
                return server
            except ConnectionRefusedError:
                if server.proc.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError("hancock did not start listening at LOG_LEVEL=%s" % level)

    def stop(self, server):
        """Stops the server (flushing its log) and returns all stdout lines."""
        server.exit_code = server.stop()
        return list(server.lines)

    def assert_lines_valid(self, lines):
        self.assertTrue(lines)
        for line in lines:
            self.assertTrue(line.isascii(), "log line is not pure ASCII: %r" % line)
            ev = json.loads(line)
            self.assertIsInstance(ev, dict, line)

    # ---- the line format ---------------------------------------------------------------------

    def test_every_line_is_ascii_json_with_the_fixed_keys(self):
        server = self.serve()
        request(server, "GET", "/v1/items/1")
        request(server, "GET", "/nope")
        request(server, "GET", "/boom")
        request(server, "GET", "/fields")
        request(server, "POST", "/escape", body="caf\u00e9 \"q\" \n \x01 \U0001F600".encode())
        lines = self.stop(server)
        self.assert_lines_valid(lines)
        now = datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None)
        events = set()
        for line in lines:
            self.assertTrue(line.startswith("{") and line.endswith("}"), line)
            ev = json.loads(line)
            for key in ("timestamp", "level", "request_id", "event", "message"):
                self.assertIn(key, ev, line)
            self.assertRegex(ev["timestamp"], TIMESTAMP)
            ts = datetime.datetime.strptime(ev["timestamp"], "%Y-%m-%dT%H:%M:%S.%fZ")
            self.assertLess(abs((now - ts).total_seconds()), 300, "timestamp is not UTC now: " + line)
            self.assertIn(ev["level"], LEVELS)
            self.assertIsInstance(ev["event"], str)
            self.assertIsInstance(ev["message"], str)
            self.assertTrue(ev["request_id"] is None or isinstance(ev["request_id"], str), line)
            events.add(ev["event"])
        for name in ("server_listening", "request_started", "request_completed", "handler_error",
                     "custom_fields", "escape_test"):
            self.assertIn(name, events)

    def test_request_started_and_completed(self):
        server = self.serve()
        status, headers, body = request(server, "GET", "/v1/items/42?x=1", headers={"X-Request-ID": "life-1"})
        self.assertEqual(status, 200)
        done = completed(server, "life-1")
        started = server.wait_event("request_started", predicate=lambda e: e.get("request_id") == "life-1")
        self.assertEqual(started["level"], "INFO")
        self.assertEqual(started["method"], "GET")
        self.assertEqual(started["endpoint"], "/v1/items/:id")
        self.assertNotIn("mode", started)
        self.assertEqual(done["level"], "INFO")
        self.assertEqual(done["status"], 200)
        self.assertEqual(done["endpoint"], "/v1/items/:id")
        self.assertIsInstance(done["latency_ms"], (int, float))
        self.assertGreaterEqual(done["latency_ms"], 0)
        self.assertLess(done["latency_ms"], 10000)
        self.assertNotIn("mode", done)
        raw = [line for line in server.lines if '"request_id":"life-1"' in line]
        self.assertEqual([json.loads(line)["event"] for line in raw], ["request_started", "request_completed"])

    def test_latency_ms_has_two_decimals(self):
        server = self.serve()
        for i in range(5):
            request(server, "GET", "/v1/items/%d" % i, headers={"X-Request-ID": "lat-%d" % i})
            completed(server, "lat-%d" % i)
        lines = [line for line in server.lines if '"event":"request_completed"' in line]
        self.assertEqual(len(lines), 5)
        for line in lines:
            self.assertRegex(line, LATENCY)

    def test_unmatched_path_logs_endpoint_unmatched(self):
        server = self.serve()
        status, headers, body = request(server, "GET", "/no/such/path", headers={"X-Request-ID": "unm-1"})
        self.assertEqual(status, 404)
        self.assertEqual(headers.get("x-request-id"), "unm-1")
        done = completed(server, "unm-1")
        started = server.wait_event("request_started", predicate=lambda e: e.get("request_id") == "unm-1")
        self.assertEqual(started["endpoint"], "unmatched")
        self.assertEqual(done["endpoint"], "unmatched")
        self.assertEqual(done["status"], 404)

    def test_mode_is_logged(self):
        server = self.serve()
        request(server, "POST", "/v1/chat", body={"message": "hi", "mode": "fast"}, headers={"X-Request-ID": "m-1"})
        done = completed(server, "m-1")
        started = server.wait_event("request_started", predicate=lambda e: e.get("request_id") == "m-1")
        self.assertEqual(started["mode"], "fast")
        self.assertEqual(done["mode"], "fast")
        # The script changing req.mode shows in request_completed.
        request(server, "POST", "/v1/chat", body={"message": "hi", "mode": "fast", "override_mode": "turbo"},
                headers={"X-Request-ID": "m-2"})
        self.assertEqual(completed(server, "m-2")["mode"], "turbo")
        # No mode in the body: no mode field.
        request(server, "POST", "/v1/chat", body={"message": "hi"}, headers={"X-Request-ID": "m-3"})
        self.assertNotIn("mode", completed(server, "m-3"))
        started = server.wait_event("request_started", predicate=lambda e: e.get("request_id") == "m-3")
        self.assertNotIn("mode", started)

    def test_handler_error_logged_with_traceback(self):
        server = self.serve()
        status, headers, body = request(server, "GET", "/boom")
        self.assertEqual(status, 500)
        rid = headers["x-request-id"]
        self.assertEqual(json.loads(body), {"error": "internal error", "request_id": rid})
        self.assertNotIn(b"logging-fixture-boom", body)
        ev = server.wait_event("handler_error", predicate=lambda e: e.get("request_id") == rid)
        self.assertEqual(ev["level"], "ERROR")
        text = json.dumps(ev)
        self.assertIn("logging-fixture-boom", text)
        self.assertIn("logging.lua:%d:" % line_of(LOGGING_LUA, "logging-fixture-boom"), text)
        self.assertIn("traceback", text)
        self.assertEqual(completed(server, rid)["status"], 500)
        self.assertEqual(request(server, "GET", "/v1/items/1")[0], 200)

    # ---- request IDs -------------------------------------------------------------------------

    def test_valid_inbound_request_id_is_kept(self):
        server = self.serve()
        for rid in ("a", "abc-123_X.y", "A" * 128, "0.1_-", "Z9"):
            status, headers, body = request(server, "GET", "/v1/items/1", headers={"X-Request-ID": rid})
            self.assertEqual(status, 200)
            self.assertEqual(headers.get("x-request-id"), rid)
            self.assertEqual(json.loads(body)["request_id"], rid)
            completed(server, rid)
            started = server.wait_event("request_started", predicate=lambda e, r=rid: e.get("request_id") == r)
            self.assertEqual(started["endpoint"], "/v1/items/:id")

    def test_invalid_inbound_request_id_is_replaced(self):
        server = self.serve()
        bad = ["A" * 129, "has space", '"quoted"', "", "caf\u00c3\u00a9", "abc/def", "a;b", "a\tb", "x" * 1000]
        seen = set()
        for sent in bad:
            status, headers, body = request(server, "GET", "/v1/items/1", headers={"X-Request-ID": sent})
            self.assertEqual(status, 200, repr(sent))
            rid = headers.get("x-request-id")
            self.assertIsNotNone(rid)
            self.assertRegex(rid, UUID4, "replacement for %r" % sent)
            self.assertEqual(json.loads(body)["request_id"], rid)
            self.assertEqual(completed(server, rid)["status"], 200)
            seen.add(rid)
        self.assertEqual(len(seen), len(bad))
        for line in server.lines:
            self.assertNotIn("has space", line)
            self.assertNotIn("xxxxxxxxxx", line)

    def test_generated_request_ids_are_unique_uuid4(self):
        server = self.serve()
        ids = []
        for _ in range(20):
            status, headers, body = request(server, "GET", "/v1/items/1")
            self.assertEqual(status, 200)
            self.assertRegex(headers["x-request-id"], UUID4)
            self.assertEqual(json.loads(body)["request_id"], headers["x-request-id"])
            ids.append(headers["x-request-id"])
        self.assertEqual(len(set(ids)), 20)
        for rid in ids:
            self.assertEqual(completed(server, rid)["request_id"], rid)

    def test_request_id_on_error_responses(self):
        server = self.serve()
        cases = [("GET", "/nope", 404), ("POST", "/v1/items/1", 405), ("GET", "/boom", 500)]
        for method, path, expected in cases:
            rid = "err-%d" % expected
            status, headers, body = request(server, method, path, headers={"X-Request-ID": rid})
            self.assertEqual(status, expected, path)
            self.assertEqual(headers.get("x-request-id"), rid, path)
            self.assertEqual(json.loads(body)["request_id"], rid, path)
            self.assertEqual(completed(server, rid)["status"], expected)
        # Without an inbound ID the error responses carry a generated one.
        for method, path, expected in cases:
            status, headers, body = request(server, method, path)
            self.assertEqual(status, expected)
            self.assertRegex(headers.get("x-request-id", ""), UUID4)
            self.assertEqual(json.loads(body)["request_id"], headers["x-request-id"])
        # A malformed request: 400, still with an ID, in the body and in a log event.
        with server.connect() as s:
            s.sendall(b"GET /v1/items/1 HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Request-ID: bad-400\r\n"
                      b"Bad Header: v\r\n\r\n")
            status, headers, body = recv_response(s)
            read_until_closed(s)
        self.assertEqual(status, 400)
        rid = headers.get("x-request-id")
        self.assertTrue(rid == "bad-400" or UUID4.match(rid or ""), rid)
        self.assertEqual(json.loads(body)["request_id"], rid)
        wait_any(server, lambda e: e.get("request_id") == rid, what="log event for the 400")

    def test_request_id_matches_lua_and_custom_events(self):
        server = self.serve()
        status, headers, body = request(server, "GET", "/levels", headers={"X-Request-ID": "corr-77"})
        self.assertEqual(json.loads(body)["request_id"], "corr-77")
        completed(server, "corr-77")
        for name in ("info_event", "warn_event", "error_event"):
            self.assertEqual(server.wait_event(name)["request_id"], "corr-77")
        status, headers, body = request(server, "GET", "/levels")
        rid = headers["x-request-id"]
        self.assertEqual(json.loads(body)["request_id"], rid)
        completed(server, rid)
        names = {e["event"] for e in server.events() if e.get("request_id") == rid}
        self.assertTrue({"request_started", "info_event", "warn_event", "error_event",
                         "request_completed"} <= names, names)

    # ---- hk.log from Lua ---------------------------------------------------------------------

    def test_hk_log_fields_and_levels(self):
        server = self.serve()
        status, headers, body = request(server, "GET", "/fields")
        rid = headers["x-request-id"]
        ev = server.wait_event("custom_fields")
        self.assertEqual(ev["request_id"], rid)
        self.assertEqual(ev["level"], "INFO")
        self.assertEqual(ev["user"], "alice")
        self.assertEqual(ev["count"], 3)
        self.assertEqual(ev["ratio"], 0.5)
        self.assertIs(ev["flag"], True)
        self.assertEqual(ev["list"], [1, 2, 3])
        self.assertEqual(ev["object"], {"a": "b"})
        request(server, "GET", "/levels")
        self.assertEqual(server.wait_event("info_event")["level"], "INFO")
        self.assertEqual(server.wait_event("warn_event")["level"], "WARNING")
        self.assertEqual(server.wait_event("error_event")["level"], "ERROR")
        self.assertEqual(server.wait_event("error_event")["n"], 4)

    def test_hk_log_outside_a_request_has_no_request_id(self):
        server = self.serve()
        ev = server.wait_event("script_loaded")
        self.assertIsNone(ev["request_id"])
        self.assertEqual(ev["file"], "logging.lua")
        self.assertEqual(ev["level"], "INFO")

    # ---- LOG_LEVEL ---------------------------------------------------------------------------

    def test_log_level_debug_shows_debug_events(self):
        server = self.serve(env={"LOG_LEVEL": "DEBUG"})
        request(server, "GET", "/levels", headers={"X-Request-ID": "dbg"})
        completed(server, "dbg")
        self.assertEqual(server.wait_event("debug_event")["level"], "DEBUG")
        self.assertEqual(server.wait_event("debug_event")["request_id"], "dbg")

    def test_log_level_info_hides_debug(self):
        server = self.serve(env={"LOG_LEVEL": "INFO"})
        request(server, "GET", "/levels", headers={"X-Request-ID": "inf"})
        completed(server, "inf")
        names = [e["event"] for e in server.events()]
        self.assertNotIn("debug_event", names)
        for name in ("info_event", "warn_event", "error_event", "request_started"):
            self.assertIn(name, names)

    def test_log_level_warning(self):
        server = self.serve_quiet("WARNING")
        status, headers, body = request(server, "GET", "/levels", headers={"X-Request-ID": "w-1"})
        self.assertEqual(status, 200)
        status, headers, body = request(server, "GET", "/boom", headers={"X-Request-ID": "w-2"})
        self.assertEqual(status, 500)
        ev = server.wait_event("handler_error", predicate=lambda e: e.get("request_id") == "w-2")
        self.assertEqual(ev["level"], "ERROR")
        events = server.events()
        names = [e["event"] for e in events]
        self.assertIn("warn_event", names)
        self.assertIn("error_event", names)
        for hidden in ("request_started", "request_completed", "info_event", "debug_event",
                       "server_listening", "script_loaded"):
            self.assertNotIn(hidden, names)
        self.assertTrue(all(e["level"] in ("WARNING", "ERROR") for e in events), events)

    def test_log_level_error(self):
        server = self.serve_quiet("ERROR")
        request(server, "GET", "/levels", headers={"X-Request-ID": "e-1"})
        request(server, "GET", "/boom", headers={"X-Request-ID": "e-2"})
        server.wait_event("handler_error", predicate=lambda e: e.get("request_id") == "e-2")
        events = server.events()
        names = [e["event"] for e in events]
        self.assertIn("error_event", names)
        self.assertNotIn("warn_event", names)
        self.assertNotIn("request_completed", names)
        self.assertTrue(all(e["level"] == "ERROR" for e in events), events)

    def test_log_level_bogus_exits_1_with_one_line(self):
        env = dict(os.environ)
        for name in list(env):
            if name.startswith("HANCOCK_"):
                del env[name]
        for extra_env, args in (({"LOG_LEVEL": "bogus"}, []), ({"LOG_LEVEL": "INFO"}, ["--log-level", "bogus"])):
            proc = subprocess.run(
                [harness.BIN, "serve", "--listen", "127.0.0.1:0", "--scripts", LOGGING_DIR, *args],
                env={**env, **extra_env}, capture_output=True, timeout=10)
            self.assertEqual(proc.returncode, 1, proc)
            err = proc.stderr.decode()
            self.assertEqual(len(err.splitlines()), 1, err)
            self.assertIn("bogus", err)
            self.assertNotIn(b"server_listening", proc.stdout)

    # ---- redaction and escaping --------------------------------------------------------------

    def test_secret_fields_and_authorization_redacted(self):
        server = self.serve()
        secret = "s3cr3t-VALUE-9f2c"
        auth = "Bearer AUTH-SECRET-41d0"
        status, headers, body = request(server, "POST", "/secrets", body={"value": secret},
                                        headers={"Authorization": auth})
        self.assertEqual(status, 200)
        ev = server.wait_event("secret_fields")
        for key in ("api_key", "apikey", "password", "db_password", "token", "access_token", "secret",
                    "client_secret", "authorization", "Authorization"):
            self.assertIn(key, ev)
            self.assertNotEqual(ev[key], secret)
        self.assertEqual(ev["visible"], "not-a-secret")
        # Secrets in a query string are not logged either.
        request(server, "GET", "/v1/items/1?token=QUERY-SECRET-77&api_key=QUERY-SECRET-88",
                headers={"Authorization": auth})
        lines = self.stop(server)
        out = "\n".join(lines) + server.stderr
        for value in (secret, "AUTH-SECRET-41d0", "QUERY-SECRET-77", "QUERY-SECRET-88"):
            self.assertNotIn(value, out)

    def test_nested_secret_fields_redacted(self):
        server = self.serve()
        secret = "nested-SECRET-5e7a"
        status, _, _ = request(server, "POST", "/secrets/nested", body={"value": secret},
                               headers={"Authorization": "Bearer NESTED-AUTH-3c3c"})
        self.assertEqual(status, 200)
        ev = server.wait_event("nested_secret_fields")
        self.assertEqual(ev["config"]["name"], "db")
        lines = self.stop(server)
        out = "\n".join(lines)
        self.assertNotIn(secret, out)
        self.assertNotIn("NESTED-AUTH-3c3c", out)

    def test_log_strings_are_escaped_ascii(self):
        server = self.serve()
        body = 'quote" back\\ nl\n cr\r tab\t ctl\x01 del\x7f \u00e9 \u4e2d \U0001F600 end'.encode() + b" \xff!"
        request(server, "POST", "/escape", body=body)
        ev = server.wait_event("escape_test")
        expected = body.decode("utf-8", "replace")
        self.assertEqual(ev["message"], expected)
        self.assertEqual(ev["text"], expected)
        self.assertEqual(ev["we\"ird\nkey\u00e9"], 1)
        raw = [line for line in server.lines if '"event":"escape_test"' in line][0]
        self.assertTrue(raw.isascii(), raw)
        for escape in ("\\u00e9", "\\u4e2d", "\\ud83d\\ude00", "\\n", "\\r", "\\t", '\\"', "\\\\", "\\ufffd"):
            self.assertIn(escape.lower(), raw.lower())
        self.assertIn("\\u0001", raw.lower())
        self.assert_lines_valid(self.stop(server))

    def test_nested_log_strings_are_escaped_ascii(self):
        server = self.serve()
        body = 'n\u00e9sted "q" \x02 \U0001F600'.encode() + b" \xfe"
        request(server, "POST", "/escape/nested", body=body)
        ev = server.wait_event("escape_nested_test")
        expected = body.decode("utf-8", "replace")
        self.assertEqual(ev["nested"], {"text": expected})
        self.assertEqual(ev["list"], [expected])
        self.assert_lines_valid(self.stop(server))

    # ---- hk.on_log ---------------------------------------------------------------------------

    def test_on_log_adds_and_removes_fields(self):
        server = self.serve(scripts=HOOKS_DIR)
        request(server, "GET", "/v1/items/7", headers={"X-Request-ID": "hook-1"})
        done = completed(server, "hook-1")
        started = server.wait_event("request_started", predicate=lambda e: e.get("request_id") == "hook-1")
        for ev in (started, done):
            self.assertEqual(ev["service"], "hooked-service")
            self.assertEqual(ev["seen_by_second_hook"], "hooked-service")
            self.assertNotIn("path", ev)
            self.assertEqual(ev["endpoint"], "/v1/items/:id")
        self.assertEqual(done["status"], 200)
        self.assertEqual(started["method"], "GET")
        kept = server.events("kept_event")
        self.assertEqual(kept, [])  # not requested yet
        request(server, "GET", "/noisy", headers={"X-Request-ID": "hook-2"})
        kept = server.wait_event("kept_event")
        self.assertEqual(kept["service"], "hooked-service")
        self.assertEqual(kept["request_id"], "hook-2")

    def test_on_log_applies_to_every_event(self):
        # "Every event": also the ones the host writes itself (handler_error, lifecycle events).
        server = self.serve(scripts=HOOKS_DIR)
        status, headers, _ = request(server, "GET", "/boom")
        self.assertEqual(status, 500)
        rid = headers["x-request-id"]
        server.wait_event("handler_error", predicate=lambda e: e.get("request_id") == rid)
        request(server, "GET", "/nope")
        lines = self.stop(server)
        names = [json.loads(line)["event"] for line in lines]
        for name in ("server_listening", "request_started", "handler_error", "request_completed",
                     "shutdown_complete"):
            self.assertIn(name, names)
        missing = [json.loads(line)["event"] for line in lines
                   if json.loads(line).get("service") != "hooked-service"]
        self.assertEqual(missing, [], "events the hk.on_log hook did not see")

    def test_on_log_returning_false_drops_events(self):
        server = self.serve(scripts=HOOKS_DIR)
        status, _, _ = request(server, "GET", "/quiet", headers={"X-Request-ID": "quiet-1"})
        self.assertEqual(status, 200)
        request(server, "GET", "/noisy", headers={"X-Request-ID": "noisy-1"})
        completed(server, "noisy-1")
        names = [e["event"] for e in server.events()]
        self.assertIn("kept_event", names)
        self.assertNotIn("noisy_event", names)
        self.assertEqual([e for e in server.events() if e.get("request_id") == "quiet-1"], [])

    def test_on_log_added_secret_is_redacted(self):
        server = self.serve(scripts=HOOKS_DIR)
        request(server, "GET", "/noisy")
        ev = server.wait_event("kept_event")
        self.assertIn("session_token", ev)
        lines = self.stop(server)
        self.assertNotIn("HOOK-ADDED-SECRET-6b1f", "\n".join(lines))

    def test_latency_ms_has_two_decimals_with_on_log_hook(self):
        server = self.serve(scripts=HOOKS_DIR)
        for i in range(5):
            request(server, "GET", "/v1/items/%d" % i, headers={"X-Request-ID": "hl-%d" % i})
            completed(server, "hl-%d" % i)
        lines = [line for line in server.lines if '"event":"request_completed"' in line]
        self.assertEqual(len(lines), 5)
        for line in lines:
            self.assertRegex(line, LATENCY)

    def test_failing_on_log_hook_does_not_break_logging(self):
        server = self.serve(scripts=HOOK_ERROR_DIR)
        for i in range(3):
            status, headers, body = request(server, "GET", "/v1/items/%d" % i, headers={"X-Request-ID": "he-%d" % i})
            self.assertEqual(status, 200)
            self.assertEqual(json.loads(body), {"id": str(i), "request_id": "he-%d" % i})
            done = completed(server, "he-%d" % i)
            self.assertEqual(done["status"], 200)
            self.assertIs(done["after_failed_hook"], True)
            started = server.wait_event("request_started", predicate=lambda e, r="he-%d" % i: e.get("request_id") == r)
            self.assertIs(started["after_failed_hook"], True)
            handler = server.wait_event("handler_event", predicate=lambda e, r="he-%d" % i: e.get("request_id") == r)
            self.assertEqual(handler["id"], str(i))
        err = wait_any(server, lambda e: e.get("level") == "ERROR" and "hook exploded" in json.dumps(e),
                       what="ERROR event about the failing hook")
        self.assertIn("hook", err["event"])
        self.assert_lines_valid(self.stop(server))


if __name__ == "__main__":
    unittest.main()
