"""Black-box tests of the request limits: head size (431), request-line length (414), body size
(413, default 1 MiB and --max-body, with Content-Length and chunked bodies), header count, and
the routing errors 404 and 405 (with Allow).

Each test starts its own server (some need flags). Only 127.0.0.1 is contacted.
"""
import json
import socket
import unittest

from harness import Server, read_until_closed, recv_response

KIB = 1024
MIB = 1024 * 1024


class BufferedSocket(socket.socket):
    """A socket that can carry harness.recv_response's read buffer (socket.socket has __slots__)."""


def connect(server, timeout=10):
    sock = BufferedSocket(socket.AF_INET, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    sock.connect(("127.0.0.1", server.port))
    return sock


def parse_responses(data):
    """Splits raw bytes into [(status, headers, body)], Content-Length framed."""
    out = []
    while data:
        head, sep, rest = data.partition(b"\r\n\r\n")
        if not sep:
            raise AssertionError("trailing bytes that are not a response head: %r" % data[:200])
        lines = head.decode("latin-1").split("\r\n")
        if not lines[0].startswith("HTTP/1.1 "):
            raise AssertionError("not a status line: %r" % lines[0][:200])
        status = int(lines[0].split(" ")[1])
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        length = 0 if status in (100, 204, 304) else int(headers.get("content-length", "0"))
        if len(rest) < length:
            raise AssertionError("truncated body: want %d bytes, have %d" % (length, len(rest)))
        out.append((status, headers, rest[:length]))
        data = rest[length:]
    return out


def send_collect(sock, raw, timeout=10):
    """Sends raw (the server may stop reading and close early) and returns all it answered."""
    try:
        sock.sendall(raw)
    except (BrokenPipeError, ConnectionResetError):
        pass  # it answered and closed before taking everything; the answer is still readable
    return read_until_closed(sock, timeout)


def head_with_padding(path, total, extra=b""):
    """A GET head of exactly `total` bytes, padded with X-Pad-N header lines of <= 1000 bytes."""
    start = b"GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n" % path.encode() + extra
    end = b"\r\n"
    lines = []
    room = total - len(start) - len(end)
    n = 0
    while room > 0:
        prefix = b"X-Pad-%d: " % n
        size = min(1000, room)
        if room - size and room - size < len(prefix) + 3:
            size = room - (len(prefix) + 3)  # keep the last line big enough for its own name
        value_len = size - len(prefix) - 2
        lines.append(prefix + b"v" * value_len + b"\r\n")
        room -= size
        n += 1
    raw = start + b"".join(lines) + end
    assert len(raw) == total, (len(raw), total)
    return raw


class HttpLimitsTest(unittest.TestCase):

    def start(self, *args):
        server = Server(args=args)
        self.addCleanup(self.stop, server)
        return server

    def stop(self, server):
        code = server.stop()
        self.assertEqual(code, 0, "hancock exited with %s; stderr: %s" % (code, server.stderr))

    def assert_error(self, response, want_status):
        status, headers, body = response
        self.assertEqual(status, want_status, body)
        doc = json.loads(body)
        self.assertTrue(doc.get("error"))
        self.assertEqual(doc.get("request_id"), headers.get("x-request-id"))
        self.assertTrue(headers.get("x-request-id"))

    def assert_rejected_and_closed(self, server, raw, want_status):
        with connect(server) as sock:
            data = send_collect(sock, raw)
        responses = parse_responses(data)
        self.assertEqual(len(responses), 1, data[:300])
        self.assert_error(responses[0], want_status)
        self.assertEqual(responses[0][1].get("connection", "").lower(), "close")
        self.assert_still_serving(server)

    def assert_still_serving(self, server):
        with connect(server) as sock:
            sock.sendall(b"GET /v1/items/alive HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
            status, _, body = recv_response(sock)
        self.assertEqual(status, 200)
        self.assertEqual(json.loads(body)["id"], "alive")

    def post_echo(self, server, body, extra=b""):
        with connect(server) as sock:
            sock.sendall(b"POST /echo HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
                         b"Content-Length: %d\r\n%s\r\n" % (len(body), extra) + body)
            return recv_response(sock)

    def chunked_echo(self, server, chunks):
        raw = b"POST /echo HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n\r\n"
        raw += b"".join(b"%x\r\n%s\r\n" % (len(c), c) for c in chunks) + b"0\r\n\r\n"
        with connect(server) as sock:
            return parse_responses(send_collect(sock, raw))

    # ---- request head and request line ----------------------------------------------------

    def test_head_of_exactly_16k_is_accepted(self):
        server = self.start()
        raw = head_with_padding("/v1/items/big-head", 16 * KIB)  # blank line included
        with connect(server) as sock:
            sock.sendall(raw)
            status, _, body = recv_response(sock)
        self.assertEqual(status, 200)
        self.assertEqual(json.loads(body)["id"], "big-head")

    def test_head_over_16k_gets_431(self):
        server = self.start()
        # 16 KiB + 3: over the limit even when the final blank line is not counted.
        self.assert_rejected_and_closed(server, head_with_padding("/v1/items/1", 16 * KIB + 3), 431)
        self.assert_rejected_and_closed(server, head_with_padding("/v1/items/1", 64 * KIB), 431)

    def test_unterminated_head_over_16k_gets_431_without_waiting(self):
        # The head never ends: the server must answer as soon as it has 16 KiB, not wait for
        # the header timeout (10 s here, far past the read timeout).
        server = self.start("--header-timeout", "10s")
        raw = head_with_padding("/v1/items/1", 20 * KIB)[:-2]
        with connect(server, timeout=5) as sock:
            data = send_collect(sock, raw, timeout=5)
        responses = parse_responses(data)
        self.assertEqual(len(responses), 1)
        self.assert_error(responses[0], 431)
        self.assert_still_serving(server)

    def test_request_line_over_8k_gets_414(self):
        server = self.start()
        for line_len in (8 * KIB + 1, 12 * KIB):  # without the CRLF
            path = "/v1/items/" + "a" * (line_len - len("GET /v1/items/ HTTP/1.1"))
            line = b"GET %s HTTP/1.1" % path.encode()
            self.assertEqual(len(line), line_len)
            with self.subTest(line_len=line_len):
                self.assert_rejected_and_closed(server, line + b"\r\nHost: 127.0.0.1\r\n\r\n", 414)

    def test_unterminated_request_line_over_8k_gets_414_without_waiting(self):
        server = self.start("--header-timeout", "10s")
        with connect(server, timeout=5) as sock:
            data = send_collect(sock, b"GET /v1/items/" + b"a" * (9 * KIB), timeout=5)
        responses = parse_responses(data)
        self.assertEqual(len(responses), 1)
        self.assert_error(responses[0], 414)

    def test_request_line_of_8k_is_accepted(self):
        server = self.start()
        # 8 KiB counting its CRLF: within the limit however the line is measured.
        item = "i" * (8 * KIB - len("GET /v1/items/ HTTP/1.1\r\n"))
        line = b"GET /v1/items/%s HTTP/1.1\r\n" % item.encode()
        self.assertEqual(len(line), 8 * KIB)
        with connect(server) as sock:
            sock.sendall(line + b"Host: 127.0.0.1\r\n\r\n")
            status, _, body = recv_response(sock)
        self.assertEqual(status, 200)
        self.assertEqual(json.loads(body)["id"], item)

    def test_100_headers_accepted_101_rejected(self):
        server = self.start()
        def head(count):  # Host plus count - 1 others
            return (b"GET /v1/items/h HTTP/1.1\r\nHost: 127.0.0.1\r\n" +
                    b"".join(b"X-H%d: %d\r\n" % (i, i) for i in range(count - 1)) + b"\r\n")
        with connect(server) as sock:
            sock.sendall(head(100))
            status, _, _ = recv_response(sock)
        self.assertEqual(status, 200)
        self.assert_rejected_and_closed(server, head(101), 400)
        self.assert_rejected_and_closed(server, head(500), 400)

    # ---- body size --------------------------------------------------------------------------

    def test_body_of_exactly_1mib_is_accepted_by_default(self):
        server = self.start()
        body = bytes(range(256)) * (MIB // 256)
        status, _, echoed = self.post_echo(server, body)
        self.assertEqual(status, 200)
        self.assertEqual(echoed, body)

    def test_content_length_over_1mib_gets_413_before_the_body(self):
        server = self.start()
        # Only the head is sent: the limit is enforced from Content-Length alone.
        self.assert_rejected_and_closed(
            server, b"POST /echo HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: %d\r\n\r\n" % (MIB + 1), 413)

    def test_chunked_body_growing_past_1mib_gets_413(self):
        server = self.start()
        chunk = b"c" * (256 * KIB)
        responses = self.chunked_echo(server, [chunk] * 5)
        self.assertEqual(len(responses), 1)
        self.assert_error(responses[0], 413)
        self.assert_still_serving(server)

    def test_max_body_flag_limits_content_length(self):
        server = self.start("--max-body", "1k")
        status, _, echoed = self.post_echo(server, b"k" * 1024)
        self.assertEqual((status, len(echoed)), (200, 1024))
        self.assert_rejected_and_closed(
            server, b"POST /echo HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 1025\r\n\r\n" + b"k" * 1025, 413)

    def test_max_body_flag_limits_chunked_body(self):
        server = self.start("--max-body", "1k")
        responses = self.chunked_echo(server, [b"a" * 500, b"b" * 524])
        self.assertEqual([r[0] for r in responses], [200])
        self.assertEqual(responses[0][2], b"a" * 500 + b"b" * 524)
        responses = self.chunked_echo(server, [b"a" * 500, b"b" * 500, b"c" * 25])
        self.assertEqual(len(responses), 1)
        self.assert_error(responses[0], 413)
        self.assertEqual(responses[0][1].get("connection", "").lower(), "close")
        self.assert_still_serving(server)

    # ---- routing errors ---------------------------------------------------------------------

    def test_unknown_route_gets_404(self):
        server = self.start()
        for path in (b"/nope", b"/v1/items", b"/v1/items/1/extra", b"/ECHO"):
            with self.subTest(path=path), connect(server) as sock:
                sock.sendall(b"GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n" % path)
                self.assert_error(recv_response(sock), 404)

    def test_wrong_method_gets_405_with_allow(self):
        server = self.start()
        cases = [(b"POST", b"/v1/items/1", {"GET", "HEAD"}),
                 (b"DELETE", b"/v1/items/1", {"GET", "HEAD"}),
                 (b"GET", b"/echo", {"POST"}),
                 (b"PUT", b"/v1/chat", {"POST"})]
        for method, path, allowed in cases:
            with self.subTest(method=method, path=path), connect(server) as sock:
                sock.sendall(b"%s %s HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 0\r\n"
                             b"Connection: close\r\n\r\n" % (method, path))
                response = recv_response(sock)
                self.assert_error(response, 405)
                allow = response[1].get("allow")
                self.assertIsNotNone(allow, "405 without an Allow header")
                self.assertEqual({m.strip() for m in allow.split(",")}, allowed)


if __name__ == "__main__":
    unittest.main()
