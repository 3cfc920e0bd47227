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
from fakes import FakeLLM
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

    def test_slow_reader_gets_every_streamed_delta(self):
        # The model streams far more than the 1 MiB backlog while the client reads nothing: the
        # relay must wait (pausing the backend transfer), never drop an event.
        words = [f"w{i}-" + "x" * 200 for i in range(60000)]
        llm = FakeLLM(reply=" ".join(words))
        self.fakes.append(llm)
        server = self.start(scripts=SHIPPED, env={"OLLAMA_BASE_URL": llm.url, "HANCOCK_RATE_LIMIT": "100000"})
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        s.connect(("127.0.0.1", server.port))
        body = json.dumps({"message": "hi", "stream": True}).encode()
        s.sendall(b"POST /v1/chat HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: application/json\r\n"
                  b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
        time.sleep(2)  # not reading: the backlog builds up (not an assertion)
        s.settimeout(60)
        pieces = []
        while True:
            piece = s.recv(1 << 20)
            if not piece:
                break
            pieces.append(piece)
        s.close()
        head, _, chunked = b"".join(pieces).partition(b"\r\n\r\n")
        self.assertTrue(head.startswith(b"HTTP/1.1 200"), head)
        raw, pos = [], 0
        while True:  # de-chunk
            eol = chunked.index(b"\r\n", pos)
            size = int(chunked[pos:eol], 16)
            if size == 0:
                break
            raw.append(chunked[eol + 2:eol + 2 + size])
            pos = eol + 2 + size + 2
        text = b"".join(raw).decode()
        events = [json.loads(line[6:]) for line in text.split("\n\n") if line.startswith("data: ")]
        deltas = [e["delta"] for e in events if "delta" in e]
        self.assertEqual(len(deltas), len(words))
        self.assertEqual("".join(deltas), " ".join(words))
        self.assertTrue(events[-1].get("done"))

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

    def test_json_encode_stops_at_the_memory_cap(self):
        server = self.start("--lua-memory-limit", "48m")
        self.assert_500(server, "/encode-bomb", "would not fit in the Lua memory limit")
        self.assert_alive(server)

    def test_on_chunk_error_in_a_background_task(self):
        llm = FakeLLM(reply="one two three")
        self.fakes.append(llm)
        server = self.start(env={"HK_TEST_UPSTREAM": llm.url})
        status, headers, _ = harness.request(server, "GET", "/spawn-chunk-error")
        self.assertEqual(status, 200)
        ev = server.wait_event("handler_error", predicate=lambda e: "boom in on_chunk" in e.get("error", ""))
        self.assertEqual(ev["request_id"], headers["x-request-id"])  # the parent's id
        self.assert_alive(server)

    # ---- every entry into Lua is bounded -------------------------------------------------------

    def test_looping_log_hook_is_bounded(self):
        scripts = harness.write_scripts({"hook.lua": """
local hk = require "hancock"
hk.on_log(function(ev)
  if ev.event == "request_started" then
    while true do end -- luacheck: ignore 512
  end
end)
hk.route("GET", "/ok", function() return { ok = true } end)
"""})
        server = self.start(scripts=scripts)
        self.assert_alive(server)
        ev = server.wait_event("log_hook_error")
        self.assertIn("instruction budget exceeded", ev["error"])
        self.assert_alive(server)

    def test_looping_script_dropped_in_is_refused_by_the_reload(self):
        scripts = harness.write_scripts({"ok.lua": 'local hk = require "hancock"\n'
                                                   'hk.route("GET", "/ok", function() return { ok = true } end)\n'})
        server = self.start(scripts=scripts)
        with open(os.path.join(scripts, "zz_loop.lua"), "w") as f:
            f.write("while true do end -- luacheck: ignore 512\n")
        ev = server.wait_event("reload_failed", timeout=20)
        self.assertIn("instruction budget exceeded", ev["error"])
        self.assertIn("zz_loop.lua:1:", ev["error"])
        self.assert_alive(server)

    def test_reload_runs_off_the_loop(self):
        # A slow (bounded) top level: requests sent while the reload builds are answered before
        # it is done, since the new generation is built on another thread.
        scripts = harness.write_scripts({"ok.lua": 'local hk = require "hancock"\n'
                                                   'hk.route("GET", "/ok", function() return { ok = true } end)\n'})
        server = self.start("--lua-instruction-limit", "0", scripts=scripts)
        with open(os.path.join(scripts, "slow.lua"), "w") as f:
            f.write("local t0 = os.clock()\nwhile os.clock() - t0 < 0.4 do end\n")
        server.proc.send_signal(signal.SIGHUP)
        status, headers, _ = harness.request(server, "GET", "/ok")
        self.assertEqual(status, 200)
        server.wait_event("reload_succeeded", timeout=60)
        names = [(e.get("event"), e.get("request_id")) for e in server.events()]
        answered = names.index(("request_completed", headers["x-request-id"]))
        reloaded = [n for n, _ in names].index("reload_succeeded")
        self.assertLess(answered, reloaded)

    def test_many_generations_may_finish_requests_at_once(self):
        # Each reload leaves the previous generation finishing one slow request: more than the
        # 64 the host once had room for, all freed once their requests end.
        server = self.start(env={"HK_TEST_SLOW_MS": "3000"})
        waiting = []
        for i in range(80):
            s = server.connect()
            s.sendall(b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
            server.wait_event("request_started", predicate=lambda e, n=i + 1: len(server.events("request_started")) >= n)
            waiting.append(s)
            server.proc.send_signal(signal.SIGHUP)
            server.wait_event("reload_succeeded", predicate=lambda e, g=i + 2: e["generation"] == g)
        self.assertEqual(server.events("reload_failed"), [])
        for s in waiting:
            s.settimeout(30)
            status, _, _ = harness.recv_response(s)
            self.assertEqual(status, 200)
            s.close()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:  # the reaper runs right after the last task ends
            _, _, text = harness.request(server, "GET", "/metrics")
            if harness.metric_value(text.decode(), "hancock_lua_memory_bytes", generation="retiring") == 0:
                break
            time.sleep(0.1)
        self.assertEqual(harness.metric_value(text.decode(), "hancock_lua_memory_bytes", generation="retiring"), 0)

    def test_sigterm_while_the_scripts_load_still_drains(self):
        # The signal lands while the scripts' (slow) top level runs, before the server's loop
        # watches for it: the watchdog saw it, and the server acts on it once it runs.
        scripts = harness.write_scripts({"slow.lua": "local t0 = os.clock()\nwhile os.clock() - t0 < 0.6 do end\n"})
        server = Server(scripts=scripts, args=("--lua-instruction-limit", "0"), wait=False)
        time.sleep(0.3)  # into the load (not an assertion: the order is what the test checks)
        server.proc.send_signal(signal.SIGTERM)
        code = server.proc.wait(timeout=30)
        server.stop()
        self.assertEqual(code, 0, server.stderr)
        self.assertEqual(len(server.events("shutdown_started")), 1)
        self.assertNotIn("shutdown_forced", server.stderr)

    def test_memory_limit_holds_while_scripts_load(self):
        scripts = harness.write_scripts({"big.lua": 'local big = string.rep("m", 48 * 1024 * 1024)\n'
                                                    'return #big\n'})
        server = Server(scripts=scripts, args=("--lua-memory-limit", "32m"), wait=False)
        code = server.proc.wait(timeout=30)
        server.stop()
        self.assertEqual(code, 1)
        self.assertIn("not enough memory", server.stderr)

    # ---- responses ----------------------------------------------------------------------------

    def test_control_bytes_never_reach_the_response_head(self):
        # A script reflecting client input into a header or the content type: a control byte
        # (CR LF would split the response; %01 was found by fuzz_conn) makes the response a 500
        # with the reason logged, and the keep-alive connection still carries exactly one
        # response per request.
        server = self.start()
        with server.connect() as sock:
            for path in ("/reflect-header/a%01b", "/reflect-header/a%0d%0aX-Injected:%20yes",
                         "/reflect-type/%0d%0aX-Injected:%20yes", "/reflect-type/;%7f"):
                sock.sendall(b"GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n" % path.encode())
                status, headers, body = harness.recv_response(sock)
                self.assertEqual(status, 500, (path, body))
                self.assertNotIn("x-injected", headers)
                ev = server.wait_event("handler_bad_response",
                                       predicate=lambda e, rid=headers["x-request-id"]: e["request_id"] == rid)
                self.assertIn("invalid", ev["error"])
            sock.sendall(b"GET /reflect-header/plain HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            status, headers, _ = harness.recv_response(sock)
            self.assertEqual(status, 200)
            self.assertEqual(headers["x-name"], "plain")

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

    # ---- slow clients ---------------------------------------------------------------------------

    def test_body_trickled_inside_the_idle_timeout_still_times_out(self):
        server = self.start("--body-timeout", "1s", "--body-min-rate", "100")
        s = server.connect()
        s.sendall(b"POST /ok HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n")
        s.settimeout(0.4)
        sent, answer = 0, b""
        while sent < 100 and not answer:  # 1 byte / 0.4 s: each pause inside the 1 s idle timeout
            try:
                s.sendall(b"x")
                sent += 1
                answer = s.recv(4096)
            except socket.timeout:
                continue
            except (BrokenPipeError, ConnectionResetError):
                break
        s.close()
        self.assertIn(b"408", answer)
        self.assertLess(sent, 100)  # old behaviour: held open until the client gave up
        ev = server.wait_event("client_timeout")
        self.assertEqual(ev["phase"], "body")
        self.assert_alive(server)

    # ---- metric labels --------------------------------------------------------------------------

    def test_clients_control_no_mode_label(self):
        scripts = harness.write_scripts({"modes.lua": """
local hk = require "hancock"
local llm = require "hancock.llm"
llm.mode("soc", { system = "You triage alerts." })
hk.route("POST", "/echo-mode", function(req)   -- leaves req.mode as the body gave it
  return { mode = req.mode }
end)
"""})
        server = self.start(scripts=scripts)
        with server.connect() as s:
            for i in range(300):
                for path, mode in (("/echo-mode", f"made-up-{i}"), ("/no-such-route", f"x{i}"), ("/echo-mode", "soc")):
                    body = json.dumps({"mode": mode}).encode()
                    s.sendall(b"POST %s HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                              b"Content-Length: %d\r\n\r\n%s" % (path.encode(), len(body), body))
                    harness.recv_response(s)
        started = server.wait_event("request_started", predicate=lambda e: e["endpoint"] == "/echo-mode")
        self.assertEqual(started["mode"], "made-up-0")  # the log keeps what was sent; labels do not
        _, _, text = harness.request(server, "GET", "/metrics")
        modes = sorted(line for line in text.decode().splitlines() if line.startswith("hancock_requests_by_mode{"))
        self.assertEqual(modes, ['hancock_requests_by_mode{mode="other"} 300', 'hancock_requests_by_mode{mode="soc"} 300'])

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
