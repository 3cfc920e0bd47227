"""Faults around the server: an LLM backend that refuses, hangs, resets mid-stream, answers
garbage, a 10 MB body or an endless chunked one; Slack down; Prometheus down; the scripts
directory deleted or unreadable at a reload; a SIGHUP storm. Each is answered as docs/faults.md
says while other requests are still served and memory stays bounded.

The misbehaving backends are raw TCP servers on 127.0.0.1 (BadBackend below); the well-behaved
one is fakes.FakeLLM. Waits are on log events or on answers, bounded.
"""
import json
import os
import signal
import socket
import struct
import threading
import time
import unittest

from fakes import FakeLLM, _FakeBase, _LLMHandler
import harness
from harness import SOURCE_DIR, Server, free_port, request, write_scripts

SCRIPTS = os.path.join(os.path.abspath(SOURCE_DIR), "scripts")
MODEL, CODER = "fault-chat:1b", "fault-coder:1b"

# Every variable the shipped scripts read, cleared so the runner's environment cannot leak in.
CLEAN_ENV = {name: "" for name in (
    "HANCOCK_API_KEY", "HANCOCK_WEBHOOK_SECRET", "HANCOCK_SLACK_WEBHOOK", "HANCOCK_TEAMS_WEBHOOK",
    "HANCOCK_LLM_BACKEND", "HANCOCK_LLM_TIMEOUT_MS", "HANCOCK_LLM_CONNECT_TIMEOUT_MS",
    "HANCOCK_RATE_LIMIT", "HANCOCK_RATE_LIMIT_WINDOW", "HANCOCK_NOTIFY_TIMEOUT_MS",
    "OLLAMA_BASE_URL", "OLLAMA_MODEL", "OLLAMA_CODER_MODEL",
    "NVIDIA_BASE_URL", "NVIDIA_API_KEY", "NVIDIA_MODEL", "NVIDIA_CODER_MODEL",
    "OPENAI_BASE_URL", "OPENAI_API_KEY", "OPENAI_MODEL", "OPENAI_CODER_MODEL",
    "PROMETHEUS_URL", "ALERTMANAGER_URL")}

SSE_HEAD = (b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n")


def sse_chunk(obj):
    data = b"data: " + json.dumps(obj).encode() + b"\n\n"
    return b"%x\r\n%s\r\n" % (len(data), data)


def read_request(conn):
    """Reads one request (head and Content-Length body) from the server under test."""
    buf = b""
    while b"\r\n\r\n" not in buf:
        more = conn.recv(65536)
        if not more:
            return None
        buf += more
    head, _, rest = buf.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value.strip())
    while len(rest) < length:
        more = conn.recv(65536)
        if not more:
            break
        rest += more
    return head + b"\r\n\r\n" + rest


class BadBackend:
    """A raw TCP "backend" on 127.0.0.1 that misbehaves as `behaviour` says, for every connection:
    hang (reads the request, never answers), reset (RST after the request, or after one streamed
    event when the request asked for a stream), garbage (bytes that are not HTTP, then close),
    huge (a 200 with a 10 MB Content-Length body), endless (a 200 with chunks until the peer
    goes, at most 512 MiB)."""

    def __init__(self, behaviour):
        self.behaviour = behaviour
        self.stopping = threading.Event()
        self.conns = []
        self.lock = threading.Lock()
        self.accepted = 0
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.url = "http://127.0.0.1:%d" % self.sock.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while not self.stopping.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with self.lock:
                self.conns.append(conn)
                self.accepted += 1
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn):
        try:
            req = read_request(conn)
            if req is None:
                return
            getattr(self, "_" + self.behaviour)(conn, req)
        except OSError:
            pass  # the server under test hung up: expected for most behaviours

    def _hang(self, conn, req):
        self.stopping.wait(60)

    def _reset(self, conn, req):
        if b'"stream": true' in req or b'"stream":true' in req:
            conn.sendall(SSE_HEAD + sse_chunk({"object": "chat.completion.chunk", "model": MODEL,
                                               "choices": [{"index": 0, "delta": {"content": "partial"}}]}))
            time.sleep(0.2)  # let the event reach the client before the reset
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        conn.close()

    def _garbage(self, conn, req):
        conn.sendall(b"\x00\xff\xfeSSH-2.0-not-http\r\n\x16\x03\x01garbage\r\n\r\n")
        conn.shutdown(socket.SHUT_WR)
        self.stopping.wait(2)

    def _huge(self, conn, req):
        size = 10 * 1024 * 1024
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n" % size)
        piece = b'{"pad": "' + b"x" * 65000 + b'"}\n'
        sent = 0
        while sent < size and not self.stopping.is_set():
            part = piece[:size - sent]
            conn.sendall(part)
            sent += len(part)

    def _endless(self, conn, req):
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n")
        chunk = b"%x\r\n%s\r\n" % (65536, b"y" * 65536)
        for _ in range(8192):  # 512 MiB at most, far past any limit
            if self.stopping.is_set():
                return
            conn.sendall(chunk)

    def stop(self):
        self.stopping.set()
        self.sock.close()
        with self.lock:
            conns = list(self.conns)
        for conn in conns:
            try:
                conn.close()
            except OSError:
                pass


class _OllamaHandler(_LLMHandler):
    def do_GET(self):
        # Ollama's model list, so the shipped health check finds both models pulled.
        if self.path == "/api/tags":
            return self.send(200, {"models": [{"name": MODEL}, {"name": CODER}]})
        return self.send(404, {"error": "not found"})


class FakeOllama(FakeLLM):
    """FakeLLM that also answers GET /api/tags as Ollama does."""

    def __init__(self):
        self.reply, self.delay_ms, self.status, self.empty, self.malformed = "fine answer", 0, 200, False, False
        self.usage = {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}
        self.stream_gap_ms = 0
        _FakeBase.__init__(self, _OllamaHandler)


VERSIONED = """local hk = require "hancock"
hk.route("GET", "/v", function() return {{ version = {v} }} end)
"""


def rss_kib(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


class FaultsTest(harness.ServersTestCase):

    # ---- helpers ---------------------------------------------------------------------------

    def backend(self, behaviour):
        fake = BadBackend(behaviour)
        self.fakes.append(fake)
        return fake

    def ollama(self):
        fake = FakeOllama()
        self.fakes.append(fake)
        return fake

    def serve(self, base_url, scripts=SCRIPTS, **env):
        full = dict(CLEAN_ENV)
        full.update({"OLLAMA_BASE_URL": base_url, "OLLAMA_MODEL": MODEL, "OLLAMA_CODER_MODEL": CODER,
                     "HANCOCK_RATE_LIMIT": "100000"})
        full.update({k: str(v) for k, v in env.items()})
        server = Server(scripts=scripts, env=full)
        self.servers.append(server)
        return server

    def post(self, server, path, body):
        status, headers, raw = request(server, "POST", path, body=body)
        try:
            doc = json.loads(raw)
        except ValueError:
            doc = raw
        return status, headers, doc

    def assert_error(self, got, status, message):
        code, headers, doc = got
        self.assertEqual(code, status, doc)
        self.assertEqual(doc["error"], message)
        self.assertEqual(doc["request_id"], headers["x-request-id"])

    def assert_serving(self, server):
        status, _, body = request(server, "GET", "/v1/modes")
        self.assertEqual(status, 200, body)
        status, _, _ = request(server, "GET", "/metrics")
        self.assertEqual(status, 200)

    def assert_failure_logged(self, server, request_id, status):
        ev = server.wait_event("llm_request_failed", predicate=lambda e: e.get("request_id") == request_id)
        self.assertEqual((ev["level"], ev["status"]), ("ERROR", status))
        return ev

    def chat_in_background(self, server, body):
        """Starts one POST /v1/chat on a thread; returns a function that joins it (bounded)."""
        result = {}

        def run():
            try:
                result["got"] = self.post(server, "/v1/chat", body)
            except Exception as exc:  # reported by the join below
                result["exc"] = exc

        thread = threading.Thread(target=run, daemon=True)
        thread.start()

        def join(timeout=30):
            thread.join(timeout)
            self.assertFalse(thread.is_alive(), "the chat got no answer within %ss" % timeout)
            if "exc" in result:
                raise result["exc"]
            return result["got"]
        return join

    # ---- the LLM backend -------------------------------------------------------------------

    def test_backend_refusing_connections_is_502(self):
        server = self.serve("http://127.0.0.1:%d" % free_port())
        got = self.post(server, "/v1/chat", {"message": "x"})
        self.assert_error(got, 502, "model backend unreachable")
        self.assert_failure_logged(server, got[2]["request_id"], 502)
        # Streamed: the 200 stream opens before the backend is called, so the failure is the
        # stream's one event, in the error shape.
        status, headers, body = request(server, "POST", "/v1/chat", body={"message": "x", "stream": True})
        self.assertEqual(status, 200, body)
        self.assertTrue(headers["content-type"].startswith("text/event-stream"))
        self.assertEqual(body, b'data: {"error":"model backend unreachable","request_id":"%s"}\n\n'
                         % headers["x-request-id"].encode())
        self.assert_serving(server)

    def test_backend_hanging_past_the_timeout_is_504_and_others_are_served(self):
        hang = self.backend("hang")
        server = self.serve(hang.url, HANCOCK_LLM_TIMEOUT_MS=1500)
        join = self.chat_in_background(server, {"message": "x"})
        hang_wait = time.monotonic() + 10
        while hang.accepted < 1 and time.monotonic() < hang_wait:
            time.sleep(0.01)
        # >= 1: the shipped health check may probe the same backend (it hangs there too).
        self.assertGreaterEqual(hang.accepted, 1, "the chat never reached the backend")
        # While the call hangs, the server answers everything else.
        for _ in range(5):
            self.assert_serving(server)
        got = join()
        self.assert_error(got, 504, "model backend timed out")
        self.assert_failure_logged(server, got[2]["request_id"], 504)

    def test_backend_reset_is_502_or_an_error_event_mid_stream(self):
        reset = self.backend("reset")
        server = self.serve(reset.url)
        got = self.post(server, "/v1/chat", {"message": "x"})
        self.assertEqual(got[0], 502, got[2])
        self.assertTrue(got[2]["error"].startswith("model backend "), got[2])
        self.assert_failure_logged(server, got[2]["request_id"], 502)
        # Streamed: the status line has gone out with the first delta, so the failure is the
        # stream's last event; the response ends cleanly and the connection stays usable.
        with server.connect() as sock:
            body = json.dumps({"message": "x", "stream": True}).encode()
            sock.sendall(b"POST /v1/chat HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                         b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
            status, headers, stream = harness.recv_response(sock)
            self.assertEqual(status, 200)
            self.assertTrue(headers["content-type"].startswith("text/event-stream"))
            events = [json.loads(line[len(b"data: "):]) for line in stream.split(b"\n")
                      if line.startswith(b"data: ")]
            self.assertEqual(events[0], {"delta": "partial"}, stream)
            self.assertEqual(set(events[-1]), {"error", "request_id"}, stream)
            self.assertEqual(events[-1]["request_id"], headers["x-request-id"])
            sock.sendall(b"GET /v1/modes HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            self.assertEqual(harness.recv_response(sock)[0], 200)
        self.assert_serving(server)

    def test_backend_garbage_is_502(self):
        garbage = self.backend("garbage")
        server = self.serve(garbage.url)
        got = self.post(server, "/v1/chat", {"message": "x"})
        self.assertEqual(got[0], 502, got[2])
        self.assertTrue(got[2]["error"].startswith("model backend "), got[2])
        self.assert_failure_logged(server, got[2]["request_id"], 502)
        self.assert_serving(server)

    def test_backend_10mb_body_is_502_too_large_and_memory_stays_bounded(self):
        huge = self.backend("huge")
        server = self.serve(huge.url)
        before = rss_kib(server.proc.pid)
        for _ in range(3):
            got = self.post(server, "/v1/chat", {"message": "x"})
            self.assert_error(got, 502, "model backend response too large")
        self.assert_failure_logged(server, got[2]["request_id"], 502)
        self.assert_serving(server)
        grown = rss_kib(server.proc.pid) - before
        self.assertLess(grown, 64 * 1024, "RSS grew by %d KiB over three 10 MB answers" % grown)

    def test_backend_endless_chunked_body_is_cut_off(self):
        endless = self.backend("endless")
        server = self.serve(endless.url)
        before = rss_kib(server.proc.pid)
        join = self.chat_in_background(server, {"message": "x"})
        got = join(60)
        self.assert_error(got, 502, "model backend response too large")
        self.assert_failure_logged(server, got[2]["request_id"], 502)
        self.assert_serving(server)
        grown = rss_kib(server.proc.pid) - before
        self.assertLess(grown, 64 * 1024, "RSS grew by %d KiB on an endless answer" % grown)

    # ---- other dependencies ----------------------------------------------------------------

    def test_slack_down_is_logged_and_the_response_unaffected(self):
        llm = self.ollama()
        server = self.serve(llm.url, HANCOCK_SLACK_WEBHOOK="http://127.0.0.1:%d/hooks/secret-xyz" % free_port())
        got = self.post(server, "/v1/webhook", {"alert": "x", "severity": "high"})
        self.assertEqual(got[0], 200, got[2])
        self.assertEqual((got[2]["status"], got[2]["notifications"]), ("triaged", {"slack": "queued"}))
        ev = server.wait_event("notify_failed", predicate=lambda e: e.get("request_id") == got[2].get("request_id")
                               or e.get("request_id") == got[1]["x-request-id"])
        self.assertEqual((ev["level"], ev["target"]), ("ERROR", "slack"))
        self.assertIn("error", ev)
        self.assertNotIn("secret-xyz", "\n".join(server.lines), "the webhook URL is a secret")
        got = self.post(server, "/v1/chat", {"message": "still there?"})
        self.assertEqual((got[0], got[2]["response"]), (200, "fine answer"))

    def test_prometheus_down_makes_health_degraded_not_error(self):
        llm = self.ollama()
        server = self.serve(llm.url, PROMETHEUS_URL="http://127.0.0.1:%d" % free_port(),
                            HANCOCK_HEALTH_INTERVAL_MS=200)
        server.wait_event("health_changed", timeout=15,
                          predicate=lambda e: e.get("check") == "prometheus" and e.get("to") == "error")
        deadline = time.monotonic() + 15
        while True:  # until the backend's own first probe has answered too
            status, _, body = request(server, "GET", "/health")
            doc = json.loads(body)
            if doc["checks"]["ollama"]["status"] == "ok" or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        self.assertEqual(status, 200, doc)
        self.assertEqual(doc["status"], "degraded", doc)
        self.assertEqual(doc["checks"]["prometheus"]["status"], "error", doc)
        self.assertEqual(doc["checks"]["ollama"]["status"], "ok", doc)
        status, _, body = request(server, "GET", "/health/ready")
        self.assertEqual(status, 200, body)  # Prometheus is not critical: still ready
        got = self.post(server, "/v1/chat", {"message": "x"})
        self.assertEqual(got[0], 200, got[2])

    # ---- the scripts directory at reload ---------------------------------------------------

    def version(self, server):
        status, _, body = request(server, "GET", "/v")
        self.assertEqual(status, 200, body)
        return json.loads(body)["version"]

    def write_version(self, directory, v):
        path = os.path.join(directory, "app.lua")
        with open(path + ".tmp", "w") as f:
            f.write(VERSIONED.format(v=v))
        os.rename(path + ".tmp", path)

    def test_scripts_dir_deleted_or_unreadable_at_reload_keeps_the_old_scripts(self):
        parent = write_scripts({})
        directory = os.path.join(parent, "scripts")
        os.mkdir(directory)
        self.write_version(directory, 1)
        server = Server(scripts=directory)
        self.servers.append(server)
        self.assertEqual(self.version(server), 1)

        # Each way the directory can go bad: a reload fails, the old scripts keep serving.
        moved = os.path.join(parent, "moved")
        breakages = [("deleted", lambda: os.rename(directory, moved), lambda: os.rename(moved, directory)),
                     ("replaced by a file", lambda: (os.rename(directory, moved), open(directory, "w").close()),
                      lambda: (os.remove(directory), os.rename(moved, directory)))]
        if os.geteuid() != 0:  # root reads a mode-000 directory anyway
            breakages.append(("unreadable", lambda: os.chmod(directory, 0), lambda: os.chmod(directory, 0o755)))
        for n, (how, breaking, fixing) in enumerate(breakages, start=2):
            with self.subTest(how=how):
                failed = len(server.events("reload_failed"))
                breaking()
                server.proc.send_signal(signal.SIGHUP)
                server.wait_event("reload_failed", predicate=lambda e, failed=failed: (
                    e["trigger"] == "SIGHUP" and len(server.events("reload_failed")) > failed))
                self.assertEqual(self.version(server), n - 1, "the old scripts keep serving")
                fixing()
                self.write_version(directory, n)
                server.proc.send_signal(signal.SIGHUP)
                deadline = time.monotonic() + 15
                while self.version(server) != n and time.monotonic() < deadline:
                    time.sleep(0.05)
                self.assertEqual(self.version(server), n, "the fixed directory reloads")
        text = request(server, "GET", "/metrics")[2].decode()
        self.assertEqual(harness.metric_value(text, "hancock_config_last_reload_successful"), 1)

    def test_sighup_storm_loads_the_last_state(self):
        directory = write_scripts({})
        self.write_version(directory, 0)
        server = Server(scripts=directory)
        self.servers.append(server)
        self.assertEqual(self.version(server), 0)
        for i in range(1, 51):  # 50 SIGHUPs in a burst, the scripts changing under them
            if i % 10 == 0:
                self.write_version(directory, i)
            server.proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 20
        while self.version(server) != 50 and time.monotonic() < deadline:
            time.sleep(0.05)
        self.assertEqual(self.version(server), 50, "the last state is loaded")
        # Log lines travel through the log writer thread and the pipe: the event can arrive
        # after the response that shows the reload.
        server.wait_event("reload_succeeded")
        self.assertEqual(server.events("reload_failed"), [])
        succeeded = server.events("reload_succeeded")
        self.assertTrue(1 <= len(succeeded) <= 55, len(succeeded))  # storms coalesce
        self.assertIsNone(server.proc.poll())
        for _ in range(5):
            self.assertEqual(self.version(server), 50)


if __name__ == "__main__":
    unittest.main()
