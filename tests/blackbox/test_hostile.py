"""Hostile clients and careless scripts: a client that resets mid-stream, error messages larger
than memory allows, loops where the instruction hook cannot reach (message handlers, finalizers,
C functions), 1xx final statuses, a full Lua state, and the sandbox's closed doors. Each case
must end in a clear error for that request only, with the process serving and stoppable."""
import json
import os
import signal
import socket
import struct
import time
import unittest

import harness
from harness import Server

SCRIPTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "scripts_hostile")
SHIPPED = os.path.join(harness.SOURCE_DIR, "scripts")


def reset_close(sock):
    """Close with SO_LINGER (1, 0): the kernel answers any later write from the server with RST."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


class HostileTest(harness.ServersTestCase):
    def start(self, *args, env=None, scripts=SCRIPTS):
        server = Server(scripts=scripts, args=("--lua-instruction-limit", "2000000", *args), env=env)
        self.servers.append(server)
        return server

    def assert_alive(self, server):
        status, _, body = harness.request(server, "GET", "/ok")
        self.assertEqual((status, json.loads(body)), (200, {"ok": True}))
        self.assertIsNone(server.proc.poll())

    # ---- a connection never frees a running handler ------------------------------------------

    def test_client_reset_while_handler_streams(self):
        server = self.start()
        for _ in range(30):
            s = server.connect()
            s.sendall(b"GET /firehose HTTP/1.1\r\nHost: x\r\n\r\n")
            s.recv(100)
            reset_close(s)
        self.assert_alive(server)
        completed = server.wait_event("request_completed", predicate=lambda e: e["endpoint"] == "/firehose")
        self.assertIn(completed["status"], (200, 499))

    def test_reset_right_after_streamed_chat_with_shipped_scripts(self):
        # The default scripts, no model backend: each streamed /v1/chat fails fast and writes its
        # error event to a client that has already reset the connection.
        server = self.start(scripts=SHIPPED, env={"OLLAMA_BASE_URL": f"http://127.0.0.1:{harness.free_port()}"})
        body = json.dumps({"message": "hi", "stream": True}).encode()
        for _ in range(60):
            s = server.connect()
            s.sendall(b"POST /v1/chat HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                      b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
            reset_close(s)
        status, _, _ = harness.request(server, "GET", "/health/live")
        self.assertEqual(status, 200)
        self.assertIsNone(server.proc.poll())

    # ---- errors and loops the hook cannot see -------------------------------------------------

    def assert_500(self, server, path, reason):
        status, headers, body = harness.request(server, "GET", path)
        self.assertEqual(status, 500, body)
        ev = server.wait_event("handler_error", predicate=lambda e: e["request_id"] == headers["x-request-id"])
        self.assertIn(reason, ev["error"])
        return ev

    def test_huge_error_message_is_cut_not_fatal(self):
        server = self.start("--lua-memory-limit", "48m")
        ev = self.assert_500(server, "/huge-error", "error message cut")
        self.assertLess(len(ev["error"]), 16 * 1024)
        self.assertIn("hostile.lua:", ev["error"])
        self.assert_alive(server)

    def test_loop_in_xpcall_message_handler(self):
        server = self.start()
        self.assert_500(server, "/loop-in-message-handler", "instruction budget exceeded")
        self.assert_alive(server)

    def test_loop_under_xpcall(self):
        server = self.start()
        self.assert_500(server, "/loop-in-xpcall", "instruction budget exceeded")
        self.assert_alive(server)

    def test_loop_in_finalizer(self):
        server = self.start()
        status, _, body = harness.request(server, "GET", "/loop-in-finalizer")
        self.assertEqual((status, json.loads(body)), (200, {"collected": True}))
        ev = server.wait_event("finalizer_error")
        self.assertIn("instruction budget exceeded", ev["error"])
        self.assert_alive(server)

    def test_loop_in_finalizer_when_a_reload_closes_the_generation(self):
        server = self.start()
        self.assertEqual(harness.request(server, "GET", "/immortal")[0], 200)
        server.proc.send_signal(signal.SIGHUP)
        server.wait_event("reload_succeeded")
        self.assert_alive(server)
        ev = server.wait_event("finalizer_error")  # the retired generation was closed
        self.assertIn("instruction budget exceeded", ev["error"])
        self.assert_alive(server)

    def test_wall_clock_limit_without_instruction_limit(self):
        server = Server(scripts=SCRIPTS, args=("--lua-instruction-limit", "0", "--lua-time-limit", "300ms"))
        self.servers.append(server)
        self.assert_500(server, "/loop-in-xpcall", "time limit exceeded")
        self.assert_alive(server)

    def test_uninterruptible_c_call_is_reported_and_sigterm_still_exits(self):
        server = Server(scripts=SCRIPTS, args=("--lua-time-limit", "200ms", "--drain-timeout", "500ms"))
        s = server.connect()
        s.sendall(b"GET /catastrophic-pattern HTTP/1.1\r\nHost: x\r\n\r\n")
        ev = server.wait_event("lua_stuck", timeout=20)
        self.assertGreaterEqual(ev["seconds"], 0.2)
        self.assertTrue(ev["request_id"])
        server.proc.send_signal(signal.SIGTERM)
        code = server.proc.wait(timeout=30)  # the watchdog ends what the stuck loop cannot
        self.assertEqual(code, 1)
        server.stop()
        self.assertIn("shutdown_forced", server.stderr)
        s.close()

    # ---- responses ----------------------------------------------------------------------------

    def test_informational_status_is_not_a_final_response(self):
        server = self.start()
        for code in (100, 101, 103, 199):
            status, headers, _ = harness.request(server, "GET", f"/status/{code}")
            self.assertEqual(status, 500, code)
            ev = server.wait_event("handler_bad_response",
                                   predicate=lambda e, rid=headers["x-request-id"]: e["request_id"] == rid)
            self.assertIn("200 to 599", ev["error"])
        self.assertEqual(harness.request(server, "GET", "/status/299")[0], 299)
        self.assert_alive(server)

    # ---- a full state -------------------------------------------------------------------------

    def test_full_state_answers_503_or_500_never_aborts(self):
        server = self.start("--lua-memory-limit", "32m", env={"HK_TEST_HOLD_MS": "1500"})
        holder = server.connect()
        holder.sendall(b"GET /hold HTTP/1.1\r\nHost: x\r\n\r\n")
        time.sleep(0.3)  # let the holder fill the state (not an assertion: either order passes)
        statuses = [harness.request(server, "GET", "/ok")[0] for _ in range(5)]
        for status in statuses:
            self.assertIn(status, (200, 500, 503))
        status, _, body = harness.recv_response(holder)
        self.assertEqual(status, 200, body)
        holder.close()
        self.assert_alive(server)

    # ---- the sandbox --------------------------------------------------------------------------

    def test_sandbox_doors_are_closed(self):
        server = self.start("--script-env", "EXTRA_SETTING",
                            env={"HANCOCK_TEST_VALUE": "visible", "EXTRA_SETTING": "listed",
                                 "HANCOCK_ADMIN_TOKEN": "a-secret-token-of-some-length",
                                 "AWS_SECRET_ACCESS_KEY": "nope"})
        status, _, body = harness.request(server, "GET", "/sandbox")
        self.assertEqual(status, 200, body)
        doors = json.loads(body)
        self.assertEqual({k: v for k, v in doors.items() if v is not True}, {})
        self.assertEqual(len(doors), 20)


if __name__ == "__main__":
    unittest.main()
