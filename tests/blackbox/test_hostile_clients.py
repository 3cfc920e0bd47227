"""Hostile clients at scale: 2,000 connections at once past --max-connections 500, a 1,000-request
pipelined burst on one connection, and clients that reset mid-request and mid-response. Each:
the right answer or a close, the others still served, the process fine and its memory bounded.

(A client that never reads is test_connections.py's: its output buffer stays bounded and it is
closed after --send-timeout.) Waits are on answers, closes and log events, bounded; only
127.0.0.1 is contacted.
"""
import json
import resource
import selectors
import socket
import struct
import threading
import time
import unittest

import harness
from harness import Server, metric_value, recv_response

GET_ITEM = b"GET /v1/items/%s HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"


class BufferedSocket(socket.socket):
    """A socket that can carry harness.recv_response's read buffer (socket.socket has __slots__)."""


def connect(server, timeout=10):
    sock = BufferedSocket(socket.AF_INET, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    sock.connect(("127.0.0.1", server.port))
    return sock


def reset(sock):
    """Closes with an RST instead of a FIN (SO_LINGER 0)."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


def rss_kib(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


class HostileClientsTest(harness.ServersTestCase):

    def start(self, *args, env=None):
        server = Server(args=args, env=env)
        self.servers.append(server)
        return server

    def get_item(self, server, name):
        with connect(server) as sock:
            sock.sendall(GET_ITEM % name.encode())
            status, _, body = recv_response(sock)
        self.assertEqual((status, json.loads(body)["id"]), (200, name))

    def metrics(self, server):
        with connect(server) as sock:
            sock.sendall(b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
            status, _, body = recv_response(sock)
        self.assertEqual(status, 200)
        return body.decode()

    def wait_active_connections(self, server, want, timeout=15):
        """Waits until hancock_active_connections (the scrape's own connection included) is want."""
        deadline = time.monotonic() + timeout
        while True:
            got = metric_value(self.metrics(server), "hancock_active_connections")
            if got == want or time.monotonic() > deadline:
                self.assertEqual(got, want, "connections still open after the clients went")
                return
            time.sleep(0.05)

    # ---- the connection cap ----------------------------------------------------------------

    def test_2000_connections_at_once_past_a_cap_of_500(self):
        total, cap = 2000, 500
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if hard != resource.RLIM_INFINITY and hard < total + 200:
            self.skipTest("RLIMIT_NOFILE hard limit %d is below %d" % (hard, total + 200))
        if soft != resource.RLIM_INFINITY and soft < total + 200:
            # The server inherits it: it needs a descriptor for every connection it accepts.
            resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 8192) if hard != resource.RLIM_INFINITY
                                                        else 8192, hard))
            self.addCleanup(resource.setrlimit, resource.RLIMIT_NOFILE, (soft, hard))
        server = self.start("--max-connections", str(cap))
        before = rss_kib(server.proc.pid)

        socks = []
        self.addCleanup(lambda: [s.close() for s in socks])
        for _ in range(total):  # all open at once
            sock = socket.socket()
            sock.settimeout(20)
            sock.connect(("127.0.0.1", server.port))
            socks.append(sock)
        for i, sock in enumerate(socks):
            try:
                sock.sendall(GET_ITEM % (b"c%d" % i))
            except (BrokenPipeError, ConnectionResetError):
                pass  # closed by the cap already

        # Every connection either gets its one response or is closed without a byte.
        pending = {sock: b"" for sock in socks}
        done = {}
        sel = selectors.DefaultSelector()  # epoll: descriptors past 1024 are fine
        self.addCleanup(sel.close)
        for sock in socks:
            sel.register(sock, selectors.EVENT_READ)
        deadline = time.monotonic() + 30
        while pending and time.monotonic() < deadline:
            for key, _ in sel.select(1):
                sock = key.fileobj
                try:
                    chunk = sock.recv(65536)
                except ConnectionResetError:
                    chunk = b""
                if not chunk:
                    done[sock] = pending.pop(sock)
                    sel.unregister(sock)
                    continue
                pending[sock] += chunk
                head, sep, rest = pending[sock].partition(b"\r\n\r\n")
                if sep:
                    length = int([line.split(b":")[1] for line in head.split(b"\r\n")
                                  if line.lower().startswith(b"content-length:")][0])
                    if len(rest) >= length:
                        done[sock] = pending.pop(sock)
                        sel.unregister(sock)
        self.assertEqual(pending, {}, "%d connections neither answered nor closed" % len(pending))
        served = [i for i, sock in enumerate(socks) if done[sock]]
        refused = [i for i, sock in enumerate(socks) if not done[sock]]
        for i in served:
            data = done[socks[i]]
            self.assertTrue(data.startswith(b"HTTP/1.1 200 "), data[:200])
            self.assertEqual(json.loads(data.partition(b"\r\n\r\n")[2])["id"], "c%d" % i)
        self.assertEqual(len(served), cap, "exactly the cap is served while all are open")
        self.assertEqual(len(refused), total - cap)

        ev = server.wait_event("connection_limit_reached")
        self.assertEqual((ev["level"], ev["limit"]), ("WARNING", cap))
        for sock in socks:
            sock.close()
        socks.clear()
        self.wait_active_connections(server, 1)
        text = self.metrics(server)
        self.assertEqual(metric_value(text, "hancock_connections_rejected_total"), total - cap)
        self.get_item(server, "after")
        self.assertIsNone(server.proc.poll())
        grown = rss_kib(server.proc.pid) - before
        self.assertLess(grown, 64 * 1024, "RSS grew by %d KiB" % grown)

    # ---- pipelining ------------------------------------------------------------------------

    def test_1000_request_pipelined_burst_is_answered_in_order(self):
        server = self.start()
        count = 1000
        # About 200 KiB of requests, past the 64 KiB of queued input at which reading pauses.
        burst = b"".join(b"GET /v1/items/p%d HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Pad: %s\r\n\r\n"
                         % (i, b"p" * 150) for i in range(count))
        sock = connect(server, timeout=30)
        self.addCleanup(sock.close)
        sender_error = []

        def send():
            try:
                sock.sendall(burst)
            except OSError as exc:
                sender_error.append(exc)

        sender = threading.Thread(target=send, daemon=True)
        sender.start()  # written while we read, as a real pipelining client does
        ids = []
        for i in range(count):
            status, headers, body = recv_response(sock)
            self.assertEqual(status, 200, body)
            self.assertEqual(json.loads(body)["id"], "p%d" % i, "answers out of order")
            ids.append(headers["x-request-id"])
        sender.join(30)
        self.assertEqual(sender_error, [])
        self.assertEqual(len(set(ids)), count, "every request has its own X-Request-ID")
        sock.sendall(GET_ITEM % b"last")  # the connection is still good
        status, _, body = recv_response(sock)
        self.assertEqual((status, json.loads(body)["id"]), (200, "last"))
        completed = [e for e in server.events("request_completed") if e.get("endpoint") == "/v1/items/:id"]
        deadline = time.monotonic() + 10
        while len(completed) < count + 1 and time.monotonic() < deadline:
            time.sleep(0.05)
            completed = [e for e in server.events("request_completed") if e.get("endpoint") == "/v1/items/:id"]
        self.assertEqual(len(completed), count + 1)

    # ---- resets ----------------------------------------------------------------------------

    def test_reset_mid_request_leaves_nothing_behind(self):
        server = self.start()
        self.get_item(server, "warm")
        before = rss_kib(server.proc.pid)
        shapes = [
            b"GET /v1/items/x HTTP/1.1\r\nHost: 12",  # mid-head
            b"POST /echo HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 100000\r\n\r\n" + b"b" * 5000,  # mid-body
            b"POST /echo HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"1000\r\n" + b"c" * 2000,  # mid-chunk
            GET_ITEM % b"ok" + b"GET /v1/items/y HTTP/1.1\r\n",  # mid-second pipelined request
        ]
        for _ in range(50):
            for shape in shapes:
                sock = connect(server)
                sock.sendall(shape)
                reset(sock)
        self.wait_active_connections(server, 1)
        self.get_item(server, "after")
        grown = rss_kib(server.proc.pid) - before
        self.assertLess(grown, 32 * 1024, "RSS grew by %d KiB over 200 resets" % grown)

    def test_reset_mid_response_leaves_nothing_behind(self):
        server = self.start(env={"HANCOCK_TEST_PROTOCOL_ROUTES": "1"})

        def reset_big_answers(count):
            for _ in range(count):
                sock = connect(server)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
                sock.sendall(b"GET /protocol/big/4096 HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
                self.assertTrue(sock.recv(1024).startswith(b"HTTP/1.1 200 "))  # the 4 MiB answer has started
                reset(sock)
            self.wait_active_connections(server, 1)

        # Warm-up first: each worker's allocator keeps its high-water mark of 4 MiB answers, so
        # what must stay flat is the growth after it (a leak grows with every reset).
        reset_big_answers(20)
        before = rss_kib(server.proc.pid)
        reset_big_answers(60)
        self.get_item(server, "after")
        grown = rss_kib(server.proc.pid) - before
        self.assertLess(grown, 64 * 1024, "RSS grew by %d KiB over 60 reset 4 MiB answers" % grown)


if __name__ == "__main__":
    unittest.main()
