"""Black-box tests of connection handling: the header, body and keep-alive timeouts, the
connection cap, the SIGTERM/SIGINT drain, start-up failures, and slow readers.

Each test starts its own server with the flags it needs (short timeouts such as 300ms keep the
suite fast). Waits are on log events, on process exit, or on socket reads with timeouts. Only
127.0.0.1 is contacted.
"""
import json
import os
import select
import signal
import socket
import tempfile
import time
import unittest

from harness import Server, read_until_closed, recv_response, write_scripts

TIMEOUT_FLAG = "300ms"
TIMEOUT_S = 0.3
SLACK_S = 0.05  # timers may fire a little early relative to our clock; never this early


class BufferedSocket(socket.socket):
    """A socket that can carry harness.recv_response's read buffer (socket.socket has __slots__)."""


def connect(server, timeout=10, rcvbuf=None):
    sock = BufferedSocket(socket.AF_INET, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    if rcvbuf is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.connect(("127.0.0.1", server.port))
    return sock


def parse_one_response(data):
    """(status, headers, body) of the only response in data; fails on anything after it."""
    head, sep, rest = data.partition(b"\r\n\r\n")
    if not sep:
        raise AssertionError("no complete response head in %r" % data[:300])
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ")[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    length = int(headers.get("content-length", "0"))
    if len(rest) != length:
        raise AssertionError("want one response with a %d-byte body, got %r" % (length, data[:300]))
    return status, headers, rest


def read_until_closed_or_reset(sock, timeout=5):
    """Like harness.read_until_closed but a reset before any byte also counts as closed."""
    try:
        return read_until_closed(sock, timeout)
    except ConnectionResetError:
        return b""


def rss_bytes(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS for %d" % pid)


GET_ITEM = b"GET /v1/items/%s HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"


class ConnectionsTest(unittest.TestCase):

    # ---- helpers ------------------------------------------------------------------------

    def start(self, *args, env=None):
        server = Server(args=args, env=env)
        self.addCleanup(self.stop_checked, server)
        return server

    def stop_checked(self, server):
        if getattr(server, "stopped", False):
            return
        server.stopped = True
        code = server.stop()
        self.assertEqual(code, 0, "hancock exited with %s; stderr: %s" % (code, server.stderr))

    def wait_exit(self, server, timeout=5):
        """Waits for the process to exit on its own; returns (exit code, stderr)."""
        try:
            server.proc.wait(timeout=timeout)
        except Exception:
            server.proc.kill()
            raise AssertionError("hancock did not exit within %ss" % timeout)
        server.stopped = True
        code = server.stop()
        return code, server.stderr

    def get_item(self, sock, name):
        sock.sendall(GET_ITEM % name.encode())
        status, headers, body = recv_response(sock)
        self.assertEqual(status, 200)
        self.assertEqual(json.loads(body)["id"], name)
        return headers

    def assert_still_serving(self, server):
        with connect(server) as sock:
            self.get_item(sock, "alive")

    def assert_timeout_408(self, data, elapsed):
        status, headers, body = parse_one_response(data)
        self.assertEqual(status, 408, data)
        self.assertEqual(headers.get("connection", "").lower(), "close")
        self.assertEqual(json.loads(body).get("request_id"), headers.get("x-request-id"))
        self.assertGreaterEqual(elapsed, TIMEOUT_S - SLACK_S, "408 before the timeout elapsed")
        self.assertLess(elapsed, 3.0)

    def open_busy_request(self, server):
        """A connection with a request in flight: head read (proved by 100 Continue), body pending."""
        sock = connect(server)
        sock.sendall(b"POST /echo HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 10\r\n"
                     b"Expect: 100-continue\r\n\r\n")
        status, _, _ = recv_response(sock)
        self.assertEqual(status, 100)
        sock.sendall(b"01234")
        return sock

    # ---- timeouts -----------------------------------------------------------------------

    def test_header_timeout_half_head_gets_408_and_close(self):
        server = self.start("--header-timeout", TIMEOUT_FLAG)
        with connect(server) as sock:
            sock.sendall(b"GET /v1/items/1 HTTP/1.1\r\nHo")
            t0 = time.monotonic()
            data = read_until_closed(sock, 5)
            elapsed = time.monotonic() - t0
        self.assert_timeout_408(data, elapsed)
        server.wait_event("client_timeout")
        self.assert_still_serving(server)

    def test_body_timeout_mid_body_gets_408_and_close(self):
        server = self.start("--body-timeout", TIMEOUT_FLAG, "--header-timeout", "10s")
        with connect(server) as sock:
            sock.sendall(b"POST /echo HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 10\r\n\r\n01234")
            t0 = time.monotonic()
            data = read_until_closed(sock, 5)
            elapsed = time.monotonic() - t0
        self.assert_timeout_408(data, elapsed)
        self.assert_still_serving(server)

    def test_idle_keepalive_connection_is_closed_without_bytes(self):
        server = self.start("--keepalive-timeout", TIMEOUT_FLAG)
        with connect(server) as sock:
            headers = self.get_item(sock, "ka")
            self.assertNotEqual(headers.get("connection", "").lower(), "close")
            t0 = time.monotonic()
            data = read_until_closed(sock, 5)
            elapsed = time.monotonic() - t0
        self.assertEqual(data, b"", "an idle keep-alive close must not send anything")
        self.assertGreaterEqual(elapsed, TIMEOUT_S - SLACK_S)
        self.assertLess(elapsed, 3.0)
        self.assert_still_serving(server)

    def test_trickled_head_is_cut_off_by_total_header_timeout(self):
        # One byte every 20 ms: each byte arrives well inside 300 ms, but the whole head would
        # take ~2.6 s. The head timer must not restart on each byte.
        server = self.start("--header-timeout", TIMEOUT_FLAG)
        head = (b"GET /v1/items/slow HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: trickle\r\n"
                b"X-Padding: " + b"p" * 60 + b"\r\n\r\n")
        sent = 0
        with connect(server) as sock:
            t0 = time.monotonic()
            try:
                for i in range(len(head)):
                    sock.sendall(head[i:i + 1])
                    sent += 1
                    readable, _, _ = select.select([sock], [], [], 0.02)  # pacing; stops on any answer
                    if readable:
                        break
            except (BrokenPipeError, ConnectionResetError):
                pass
            data = read_until_closed_or_reset(sock, 5)
            elapsed = time.monotonic() - t0
        self.assertLess(sent, len(head), "the whole head got through: the timer restarted per byte")
        self.assertLess(elapsed, 1.5)
        self.assert_timeout_408(data, elapsed)
        self.assert_still_serving(server)

    # ---- connection cap -----------------------------------------------------------------

    def test_connection_cap_closes_extra_connection(self):
        server = self.start("--max-connections", "2")
        first, second = connect(server), connect(server)
        self.addCleanup(first.close)
        self.addCleanup(second.close)
        self.get_item(first, "c1")  # both are accepted and counted
        self.get_item(second, "c2")

        with connect(server) as third:
            try:
                third.sendall(GET_ITEM % b"c3")
            except (BrokenPipeError, ConnectionResetError):
                pass
            self.assertEqual(read_until_closed_or_reset(third, 3), b"",
                             "the connection past the cap got bytes")
        ev = server.wait_event("connection_limit_reached")
        self.assertEqual(ev.get("level"), "WARNING")

        self.get_item(first, "c1-again")  # the open ones are untouched
        self.get_item(second, "c2-again")

        # Close one: the client half-closes, the server closes its side, then a slot is free.
        first.shutdown(socket.SHUT_WR)
        self.assertEqual(read_until_closed_or_reset(first, 5), b"")
        first.close()
        with connect(server) as fourth:
            self.get_item(fourth, "c4")

    # ---- SIGTERM / SIGINT drain ---------------------------------------------------------

    def test_sigterm_lets_in_flight_request_finish_then_exits_0(self):
        server = self.start()
        sock = self.open_busy_request(server)
        self.addCleanup(sock.close)
        server.proc.send_signal(signal.SIGTERM)
        ev = server.wait_event("shutdown_started")
        self.assertEqual(ev.get("signal"), "SIGTERM")
        sock.sendall(b"56789")
        status, headers, body = recv_response(sock)
        self.assertEqual((status, body), (200, b"0123456789"))
        self.assertEqual(headers.get("connection", "").lower(), "close")
        self.assertEqual(read_until_closed(sock, 5), b"")
        sock.close()  # as a client does after Connection: close
        code, _ = self.wait_exit(server)
        self.assertEqual(code, 0)

    def test_sigterm_closes_idle_connections_and_refuses_new_ones(self):
        server = self.start()
        idle = connect(server)
        self.addCleanup(idle.close)
        self.get_item(idle, "idle")
        busy = self.open_busy_request(server)  # keeps the process alive while we look
        self.addCleanup(busy.close)

        server.proc.send_signal(signal.SIGTERM)
        server.wait_event("shutdown_started")
        self.assertEqual(read_until_closed_or_reset(idle, 5), b"", "idle keep-alive connection not closed")
        # The listener closes no later than the idle connections do.
        with self.assertRaises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", server.port), timeout=5).close()

        busy.sendall(b"56789")
        status, headers, body = recv_response(busy)
        self.assertEqual((status, body), (200, b"0123456789"))
        self.assertEqual(headers.get("connection", "").lower(), "close")
        self.assertEqual(read_until_closed(busy, 5), b"")
        busy.close()  # as a client does after Connection: close
        code, _ = self.wait_exit(server)
        self.assertEqual(code, 0)

    def test_sigint_drains_like_sigterm(self):
        server = self.start()
        sock = self.open_busy_request(server)
        self.addCleanup(sock.close)
        server.proc.send_signal(signal.SIGINT)
        ev = server.wait_event("shutdown_started")
        self.assertEqual(ev.get("signal"), "SIGINT")
        sock.sendall(b"56789")
        status, headers, body = recv_response(sock)
        self.assertEqual((status, body), (200, b"0123456789"))
        self.assertEqual(headers.get("connection", "").lower(), "close")
        self.assertEqual(read_until_closed(sock, 5), b"")
        sock.close()  # as a client does after Connection: close
        code, _ = self.wait_exit(server)
        self.assertEqual(code, 0)

    def test_drain_timeout_bounds_shutdown(self):
        # The body timeout (10 s) would not end this request; the 300 ms drain timeout must.
        server = self.start("--drain-timeout", TIMEOUT_FLAG, "--body-timeout", "10s")
        sock = self.open_busy_request(server)
        self.addCleanup(sock.close)
        t0 = time.monotonic()
        server.proc.send_signal(signal.SIGTERM)
        code, stderr = self.wait_exit(server, timeout=5)
        elapsed = time.monotonic() - t0
        self.assertEqual(code, 0, stderr)
        self.assertGreaterEqual(elapsed, TIMEOUT_S - SLACK_S, "exited without draining the busy connection")
        self.assertLess(elapsed, 3.0)
        data = read_until_closed_or_reset(sock, 5)  # closed, not left hanging
        self.assertNotIn(b"HTTP/1.1 200", data)

    # ---- start-up failures --------------------------------------------------------------

    def assert_startup_fails(self, server, *needles):
        code, stderr = self.wait_exit(server, timeout=10)
        self.assertEqual(code, 1, stderr)
        lines = stderr.splitlines()
        self.assertEqual(len(lines), 1, "want exactly one stderr line, got %r" % stderr)
        for needle in needles:
            self.assertIn(needle, lines[0])
        self.assertEqual(server.events("server_listening"), [])

    def test_startup_fails_on_unknown_flag(self):
        server = Server(args=("--no-such-flag", "1"), wait=False)
        self.assert_startup_fails(server, "--no-such-flag")

    def test_startup_fails_when_port_in_use(self):
        taken = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.addCleanup(taken.close)
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        server = Server(args=("--listen", "127.0.0.1:%d" % port), wait=False)
        self.assert_startup_fails(server, str(port))

    def test_startup_fails_on_missing_or_unreadable_scripts_dir(self):
        missing = os.path.join(tempfile.mkdtemp(prefix="hancock-noscripts-"), "does-not-exist")
        not_a_dir = os.path.join(write_scripts({"routes.lua": "-- empty\n"}), "routes.lua")
        cases = [missing, not_a_dir]
        if os.geteuid() != 0:  # root reads any directory
            unreadable = write_scripts({"a.lua": "-- empty\n"})
            os.chmod(unreadable, 0)
            self.addCleanup(os.chmod, unreadable, 0o755)
            cases.append(unreadable)
        for path in cases:
            with self.subTest(path=path):
                self.assert_startup_fails(Server(scripts=path, wait=False), path)

    # ---- slow readers -------------------------------------------------------------------

    def test_pipelining_client_that_never_reads_does_not_grow_memory(self):
        server = self.start("--drain-timeout", "2s", env={"HANCOCK_TEST_PROTOCOL_ROUTES": "1"})
        big = b"GET /protocol/big/1024 HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
        with connect(server) as warm:  # one 1 MiB response read normally: the baseline
            warm.sendall(big)
            status, _, body = recv_response(warm)
            self.assertEqual((status, len(body)), (200, 1024 * 1024))
        self.assert_still_serving(server)
        baseline = rss_bytes(server.proc.pid)

        count = 300  # 300 MiB of responses asked for in ~16 KiB of requests
        slow = connect(server, rcvbuf=4096)
        self.addCleanup(slow.close)
        slow.sendall(big * count)
        self.assertTrue(slow.recv(1), "the server never started answering")  # it has read the batch

        with connect(server) as other:  # served while the slow client sits on its responses
            for i in range(5):
                self.get_item(other, "other-%d" % i)
        grown = rss_bytes(server.proc.pid) - baseline
        completed = len([e for e in server.events("request_completed")
                         if e.get("endpoint") == "/protocol/big/:kib"])
        self.assertLess(grown, 64 * 1024 * 1024,
                        "RSS grew by %d MiB (%d big responses built)" % (grown >> 20, completed))
        slow.close()  # unread data: the kernel resets it; the server must let go of it
        self.assert_still_serving(server)

    def test_send_timeout_drops_client_that_stops_reading(self):
        server = self.start("--send-timeout", TIMEOUT_FLAG, env={"HANCOCK_TEST_PROTOCOL_ROUTES": "1"})
        big = b"GET /protocol/big/4096 HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
        count = 8  # 32 MiB asked for: far more than the socket buffers between us can hold
        with connect(server, rcvbuf=4096) as slow:
            slow.sendall(big * count)
            ev = server.wait_event("client_timeout", timeout=5, predicate=lambda e: e.get("phase") == "send")
            self.assertTrue(ev)
            received = len(read_until_closed_or_reset(slow, 10))  # what was already in flight, then EOF
        self.assertLess(received, count * 4 * 1024 * 1024, "every response was delivered anyway")
        self.assert_still_serving(server)


if __name__ == "__main__":
    unittest.main()
