"""Asynchronous handlers: hk.sleep, hk.http.request (libcurl on the loop), hk.spawn, and the
cancellation of a handler's outbound call when its client goes away. A small upstream server
runs in the test on 127.0.0.1."""
import http.server
import json
import os
import subprocess
import threading
import unittest

import harness
from harness import Server, recv_response

SCRIPTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "scripts_async")


class Upstream(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self):
        super().__init__(("127.0.0.1", 0), UpstreamHandler)
        self.requests = []
        self.release = threading.Event()  # /hold answers only once this is set
        self.held = threading.Event()  # /hold has arrived
        self.held_peer_closed = threading.Event()
        self.thread = threading.Thread(target=self.serve_forever, daemon=True)
        self.thread.start()

    def stop(self):
        self.release.set()
        self.shutdown()
        self.server_close()


class UpstreamHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def do_POST(self):
        length = int(self.headers.get("Content-Length", "0"))
        body = self.rfile.read(length)
        self.server.requests.append((self.command, self.path, dict(self.headers), body))
        if self.path == "/hold":
            self.server.held.set()
            # Wait for the client (hancock) to give up: its close shows as EOF on our side.
            self.connection.settimeout(10)
            try:
                if self.connection.recv(1) == b"":
                    self.server.held_peer_closed.set()
            except OSError:
                self.server.held_peer_closed.set()
            return
        if self.path == "/slow":
            self.server.release.wait(10)
        out = b"echo:" + body
        try:
            self.send_response(201)
            self.send_header("X-Upstream", "here")
            self.send_header("Content-Length", str(len(out)))
            self.end_headers()
            self.wfile.write(out)
        except (BrokenPipeError, ConnectionResetError):
            pass  # hancock gave up first (the timeout test)

    def do_GET(self):
        if self.path == "/chunked":
            self.send_response(200)
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for piece in (b"alpha", b"beta", b"gamma"):
                self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
                self.wfile.flush()
            self.wfile.write(b"0\r\n\r\n")
            return
        self.send_error(404)


class AsyncTest(unittest.TestCase):
    def setUp(self):
        self.upstream = Upstream()
        port = self.upstream.server_address[1]
        self.server = Server(scripts=SCRIPTS, env={"HK_TEST_UPSTREAM": f"http://127.0.0.1:{port}"})

    def tearDown(self):
        self.upstream.stop()
        self.assertEqual(self.server.stop(), 0, self.server.stderr)

    def post(self, path, body=b"", conn=None):
        raw = (f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n\r\n").encode() + body
        sock = conn or self.server.connect()
        sock.sendall(raw)
        return sock

    def test_sleeping_handler_does_not_block_others(self):
        slow = self.server.connect()
        slow.sendall(b"GET /sleep/700 HTTP/1.1\r\nHost: x\r\n\r\n")
        self.server.wait_event("request_started", predicate=lambda e: e.get("endpoint") == "/sleep/:ms")
        status, _, body = harness.request(self.server, "GET", "/fast")
        self.assertEqual(status, 200)
        # The fast answer came while the slow one still sleeps: no completion logged for it yet.
        self.assertEqual([e for e in self.server.events("request_completed") if e["endpoint"] == "/sleep/:ms"], [])
        status, _, body = recv_response(slow)
        self.assertEqual((status, json.loads(body)), (200, {"slept": 700}))
        slow.close()

    def test_http_request_round_trip(self):
        status, _, body = harness.request(self.server, "POST", "/proxy/echo", body=b"hello upstream")
        self.assertEqual(status, 200, body)
        self.assertEqual(json.loads(body), {"status": 201, "body": "echo:hello upstream", "header": "here"})
        method, path, headers, sent = self.upstream.requests[-1]
        self.assertEqual((method, path, sent), ("POST", "/echo", b"hello upstream"))
        self.assertEqual(headers.get("X-Test"), "yes")
        self.assertNotIn("Expect", headers)

    def test_connection_refused_is_an_expected_failure(self):
        server = Server(scripts=SCRIPTS, env={"HK_TEST_UPSTREAM": f"http://127.0.0.1:{harness.free_port()}"})
        try:
            status, _, body = harness.request(server, "POST", "/proxy/echo", body=b"x")
            self.assertEqual(status, 502)
            self.assertEqual(json.loads(body)["kind"], "connect")
        finally:
            self.assertEqual(server.stop(), 0)

    def test_timeout(self):
        status, _, body = harness.request(self.server, "POST", "/proxy/slow?timeout_ms=200", body=b"x")
        self.assertEqual(status, 502)
        self.assertEqual(json.loads(body)["kind"], "timeout")

    def test_streamed_body_arrives_in_chunks(self):
        status, _, body = harness.request(self.server, "GET", "/chunks")
        self.assertEqual(status, 200)
        doc = json.loads(body)
        self.assertEqual(doc["joined"], "alphabetagamma")
        self.assertGreaterEqual(doc["pieces"], 1)
        self.assertEqual(doc["body"], "")  # with on_chunk the body is not accumulated

    def test_client_disconnect_cancels_the_outbound_call(self):
        sock = self.post("/proxy/hold", b"x")
        # The upstream has the call; now the client goes away.
        ev = self.server.wait_event("request_started", predicate=lambda e: e.get("endpoint") == "/proxy/*path")
        self.assertTrue(self.upstream.held.wait(10), "the call never reached the upstream")
        sock.close()
        self.assertTrue(self.upstream.held_peer_closed.wait(10), "hancock kept the upstream call open")
        done = self.server.wait_event("request_completed", predicate=lambda e: e["request_id"] == ev["request_id"])
        self.assertEqual(done["status"], 499)
        self.server.wait_event("client_closed")
        status, _, _ = harness.request(self.server, "GET", "/fast")  # still serving
        self.assertEqual(status, 200)

    def test_spawned_task_runs_after_the_response(self):
        status, headers, body = harness.request(self.server, "GET", "/spawn")
        self.assertEqual((status, json.loads(body)), (200, {"spawned": True}))
        rid = headers["x-request-id"]
        done = self.server.wait_event("spawned_done")
        self.assertEqual(done["parent"], rid)
        self.assertEqual(done["request_id"], rid)
        err = self.server.wait_event("task_error")
        self.assertIn("async.lua", err["error"])
        self.assertIn("task failed on purpose", err["error"])

    def read_chunked(self, sock):
        """Reads a chunked response; returns (status, headers, [chunk payloads])."""
        sock.settimeout(10)
        data = b""
        while b"\r\n\r\n" not in data:
            data += sock.recv(65536)
        head, _, rest = data.partition(b"\r\n\r\n")
        lines = head.decode().split("\r\n")
        headers = {k.strip().lower(): v.strip() for k, _, v in (l.partition(":") for l in lines[1:])}
        chunks = []
        while True:
            while b"\r\n" not in rest:
                rest += sock.recv(65536)
            size_line, _, rest = rest.partition(b"\r\n")
            size = int(size_line, 16)
            while len(rest) < size + 2:
                more = sock.recv(65536)
                if not more:
                    raise ConnectionError("closed inside a chunk")
                rest += more
            if size == 0:
                return int(lines[0].split()[1]), headers, chunks
            chunks.append(rest[:size])
            rest = rest[size + 2:]

    def test_handler_streams_events_as_they_happen(self):
        with self.server.connect() as sock:
            sock.sendall(b"GET /events HTTP/1.1\r\nHost: x\r\n\r\n")
            status, headers, chunks = self.read_chunked(sock)
            self.assertEqual(status, 200)
            self.assertEqual(headers["content-type"], "text/event-stream")
            self.assertEqual(headers["transfer-encoding"], "chunked")
            self.assertEqual(headers["cache-control"], "no-cache")
            self.assertEqual(chunks, [b"data: 1\n\n", b"data: 2\n\n", b"data: 3\n\n"])
            # The connection stays usable after a streamed response.
            sock.sendall(b"GET /fast HTTP/1.1\r\nHost: x\r\n\r\n")
            status, _, body = recv_response(sock)
            self.assertEqual((status, json.loads(body)), (200, {"fast": True}))

    def test_first_event_arrives_before_the_handler_finishes(self):
        with self.server.connect() as sock:
            sock.sendall(b"GET /events HTTP/1.1\r\nHost: x\r\n\r\n")
            sock.settimeout(10)
            first = b""
            while b"data: 1" not in first:
                first += sock.recv(65536)
            # The handler is still sleeping between events: it has not completed yet.
            self.assertEqual([e for e in self.server.events("request_completed") if e["endpoint"] == "/events"], [])

    def test_error_after_streaming_ends_the_body_and_is_logged(self):
        with self.server.connect() as sock:
            sock.sendall(b"GET /events?fail=1 HTTP/1.1\r\nHost: x\r\n\r\n")
            status, _, chunks = self.read_chunked(sock)
        self.assertEqual(status, 200)
        self.assertEqual(len(chunks), 3)
        err = self.server.wait_event("handler_error")
        self.assertIn("failed after streaming", err["error"])

    def test_upstream_stream_relayed(self):
        with self.server.connect() as sock:
            sock.sendall(b"GET /relay HTTP/1.1\r\nHost: x\r\n\r\n")
            status, _, chunks = self.read_chunked(sock)
        self.assertEqual(status, 200)
        self.assertEqual(b"".join(chunks).replace(b"data: ", b"").replace(b"\n\n", b""), b"alphabetagamma")

    def test_async_calls_at_load_time_are_script_errors(self):
        d = harness.write_scripts({"a.lua": 'local hk = require "hancock"\n\nhk.sleep(10)\n'})
        out = subprocess.run([harness.BIN, "check", "--scripts", d], capture_output=True, text=True)
        self.assertEqual(out.returncode, 1)
        self.assertRegex(out.stderr + out.stdout, r"a\.lua:3: .*hk\.sleep can only be called from a request handler")


if __name__ == "__main__":
    unittest.main()
