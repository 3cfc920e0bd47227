"""Black-box tests of HTTP/1.1 message handling: keep-alive, pipelining, HTTP/1.0, chunked bodies,
Expect: 100-continue, HEAD, X-Request-ID on every response, and the malformed requests that must
get 400 and a closed connection (request smuggling and parser-confusion shapes).

Every raw request is written byte for byte; only 127.0.0.1 is contacted.
"""
import json
import socket
import unittest

import harness
from harness import read_until_closed, recv_response


class BufferedSocket(socket.socket):
    """A socket that can carry harness.recv_response's read buffer (socket.socket has __slots__)."""


def connect(server, timeout=10):
    sock = BufferedSocket(socket.AF_INET, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.connect(("127.0.0.1", server.port))
    return sock


def parse_responses(data, head_only_first=False):
    """Splits raw bytes into [(status, headers, body)], Content-Length framed. Leftover bytes that
    are not a complete response make the parse fail loudly."""
    out = []
    first = True
    while data:
        head, sep, rest = data.partition(b"\r\n\r\n")
        if not sep:
            raise AssertionError("trailing bytes that are not a response head: %r" % data[:200])
        lines = head.decode("latin-1").split("\r\n")
        parts = lines[0].split(" ", 2)
        if len(parts) < 2 or not parts[0].startswith("HTTP/1."):
            raise AssertionError("not a status line: %r" % lines[0])
        status = int(parts[1])
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        length = 0
        if not (head_only_first and first) and status not in (100, 204, 304):
            length = int(headers.get("content-length", "0"))
        if len(rest) < length:
            raise AssertionError("truncated body: want %d bytes, have %d" % (length, len(rest)))
        out.append((status, headers, rest[:length]))
        data = rest[length:]
        first = False
    return out


def exchange(server, raw, timeout=10):
    """Sends raw bytes on a fresh connection; returns everything until the server closes."""
    with connect(server, timeout) as sock:
        sock.sendall(raw)
        return read_until_closed(sock, timeout)


def expect_silence(test, sock, seconds=0.05):
    """Asserts the server sends nothing within `seconds` (a read with a timeout, not a sleep)."""
    old = sock.gettimeout()
    sock.settimeout(seconds)
    try:
        data = sock.recv(65536)
    except (socket.timeout, TimeoutError):
        data = None
    finally:
        sock.settimeout(old)
    test.assertIsNone(data, "server answered before the request was complete")


class HttpProtocolTest(harness.HancockTestCase):

    # Short enough that a request the server wrongly waits on fails fast, long enough for the
    # split-send test's deliberate pauses.
    server_args = ("--header-timeout", "2s")

    # ---- helpers -------------------------------------------------------------------------

    def assert_error_body(self, status, headers, body, want_status):
        self.assertEqual(status, want_status, body)
        rid = headers.get("x-request-id")
        self.assertTrue(rid, "no X-Request-ID on a %d response" % status)
        self.assertTrue(headers.get("content-type", "").startswith("application/json"), headers)
        doc = json.loads(body)
        self.assertIsInstance(doc.get("error"), str)
        self.assertTrue(doc["error"])
        self.assertEqual(doc.get("request_id"), rid)

    def assert_still_serving(self):
        status, _, body = self.fresh_get("/v1/items/alive")
        self.assertEqual(status, 200)
        self.assertEqual(json.loads(body)["id"], "alive")

    def fresh_get(self, path):
        with connect(self.server) as sock:
            sock.sendall(b"GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n" % path.encode())
            return recv_response(sock)

    def assert_rejected(self, raw, want_status=400):
        """raw gets exactly one error response, the connection closes, and the server lives on."""
        data = exchange(self.server, raw)
        responses = parse_responses(data)
        self.assertEqual(len(responses), 1, "want one response then close, got %r" % data)
        status, headers, body = responses[0]
        self.assert_error_body(status, headers, body, want_status)
        self.assertEqual(headers.get("connection", "").lower(), "close")
        self.assert_still_serving()

    # ---- keep-alive, pipelining, HTTP/1.0 -------------------------------------------------

    def test_keepalive_serves_several_requests_on_one_connection(self):
        ids = set()
        with connect(self.server) as sock:
            for i in range(4):
                sock.sendall(b"GET /v1/items/k%d HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n" % i)
                status, headers, body = recv_response(sock)
                self.assertEqual(status, 200)
                self.assertEqual(json.loads(body)["id"], "k%d" % i)
                self.assertNotEqual(headers.get("connection", "").lower(), "close")
                ids.add(headers["x-request-id"])
            sock.sendall(b"POST /echo HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 4\r\n\r\nlast")
            status, _, body = recv_response(sock)
            self.assertEqual((status, body), (200, b"last"))
        self.assertEqual(len(ids), 4, "every request gets its own X-Request-ID")

    def test_pipelined_requests_are_answered_in_order(self):
        raw = (b"GET /v1/items/one HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
               b"POST /echo HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 17\r\n\r\n"
               b"GET /v1/items/two"  # a body that looks like a request line
               b"GET /v1/items/three HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
               b"POST /echo HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n\r\n"
               b"3\r\nabc\r\n0\r\n\r\n"
               b"GET /v1/items/four?x=1 HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
               b"GET /v1/items/after-close HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")  # never answered
        responses = parse_responses(exchange(self.server, raw))
        self.assertEqual([r[0] for r in responses], [200] * 5)
        self.assertEqual(json.loads(responses[0][2])["id"], "one")
        self.assertEqual(responses[1][2], b"GET /v1/items/two")
        self.assertEqual(json.loads(responses[2][2])["id"], "three")
        self.assertEqual(responses[3][2], b"abc")
        last = json.loads(responses[4][2])
        self.assertEqual((last["id"], last["query"]), ("four", {"x": "1"}))
        self.assertEqual(len({r[1]["x-request-id"] for r in responses}), 5)

    def test_http10_closes_after_the_response_by_default(self):
        data = exchange(self.server, b"GET /v1/items/old HTTP/1.0\r\n\r\n")
        responses = parse_responses(data)
        self.assertEqual(len(responses), 1)
        status, headers, body = responses[0]
        self.assertEqual(status, 200)
        self.assertEqual(json.loads(body)["id"], "old")
        self.assertNotEqual(headers.get("connection", "").lower(), "keep-alive")

    def test_http10_keepalive_when_asked(self):
        with connect(self.server) as sock:
            for name in (b"a", b"b"):
                sock.sendall(b"GET /v1/items/%s HTTP/1.0\r\nConnection: keep-alive\r\n\r\n" % name)
                status, headers, body = recv_response(sock)
                self.assertEqual(status, 200)
                self.assertEqual(json.loads(body)["id"], name.decode())
                self.assertEqual(headers.get("connection", "").lower(), "keep-alive")
            # Without the token the connection closes after this response.
            sock.sendall(b"GET /v1/items/c HTTP/1.0\r\n\r\n")
            responses = parse_responses(read_until_closed(sock))
            self.assertEqual(len(responses), 1)
            self.assertEqual(json.loads(responses[0][2])["id"], "c")

    # ---- chunked request bodies -----------------------------------------------------------

    def test_chunked_body_is_reassembled(self):
        raw = (b"POST /echo HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n"
               b"Connection: close\r\n\r\n"
               b"5\r\nhello\r\n1\r\n \r\nA\r\n0123456789\r\n1a\r\nabcdefghijklmnopqrstuvwxyz\r\n0\r\n\r\n")
        (status, _, body), = parse_responses(exchange(self.server, raw))
        self.assertEqual(status, 200)
        self.assertEqual(body, b"hello 0123456789abcdefghijklmnopqrstuvwxyz")

    def test_chunked_body_split_across_sends(self):
        pieces = [b"POST /echo HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-", b"Encoding: chunked\r\n\r",
                  b"\n", b"4", b"\r", b"\nwi", b"ki\r\n5\r\npedia\r", b"\n", b"E\r\n in\r\n\r\nchunks.",
                  b"\r\n0\r", b"\n\r"]
        with connect(self.server) as sock:
            for piece in pieces:
                sock.sendall(piece)
                expect_silence(self, sock)
            sock.sendall(b"\n")
            status, _, body = recv_response(sock)
        self.assertEqual(status, 200)
        self.assertEqual(body, b"wikipedia in\r\n\r\nchunks.")

    def test_chunk_extensions_are_ignored(self):
        raw = (b"POST /echo HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n"
               b"Connection: close\r\n\r\n"
               b"5;foo=bar\r\nhello\r\n6;a;b=\"quoted value\"\r\n world\r\n0;last=1\r\n\r\n")
        (status, _, body), = parse_responses(exchange(self.server, raw))
        self.assertEqual(status, 200)
        self.assertEqual(body, b"hello world")

    # ---- Expect: 100-continue -------------------------------------------------------------

    def test_expect_100_continue_before_body(self):
        with connect(self.server) as sock:
            sock.sendall(b"POST /echo HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 11\r\n"
                         b"Expect: 100-continue\r\n\r\n")
            status, _, body = recv_response(sock)  # sent before any body byte exists
            self.assertEqual((status, body), (100, b""))
            sock.sendall(b"hello world")
            status, headers, body = recv_response(sock)
            self.assertEqual((status, body), (200, b"hello world"))
            self.assertTrue(headers.get("x-request-id"))

    def test_expect_100_continue_too_large_gets_413_without_100(self):
        data = exchange(self.server, b"POST /echo HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                                     b"Content-Length: 2000000\r\nExpect: 100-continue\r\n\r\n")
        self.assertNotIn(b"100 Continue", data)
        responses = parse_responses(data)
        self.assertEqual(len(responses), 1, data)
        self.assert_error_body(*responses[0], 413)
        self.assert_still_serving()

    def test_expect_100_continue_ignored_for_http10(self):
        # RFC 9110 §10.1.1 and §15.2: an HTTP/1.0 request's 100-continue expectation is ignored,
        # and no 1xx response may be sent to an HTTP/1.0 client.
        data = exchange(self.server, b"POST /echo HTTP/1.0\r\nContent-Length: 3\r\n"
                                     b"Expect: 100-continue\r\n\r\nabc")
        self.assertNotIn(b" 100 ", data.split(b"\r\n", 1)[0], "1xx sent to an HTTP/1.0 client: %r" % data[:60])
        responses = parse_responses(data)
        self.assertEqual([(r[0], r[2]) for r in responses], [(200, b"abc")])

    # ---- HEAD -----------------------------------------------------------------------------

    def test_head_has_get_headers_and_no_body(self):
        raw = (b"HEAD /v1/items/h1?q=2 HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
               b"GET /v1/items/h1?q=2 HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        data = exchange(self.server, raw)
        # The HEAD response is a bare head: the next bytes must be the GET's status line.
        head, _, rest = data.partition(b"\r\n\r\n")
        self.assertTrue(rest.startswith(b"HTTP/1.1 200 "), "bytes after the HEAD response head: %r" % rest[:80])
        (h_status, h_headers, h_body), (g_status, g_headers, g_body) = parse_responses(data, head_only_first=True)
        self.assertEqual((h_status, g_status), (200, 200))
        self.assertEqual(h_body, b"")
        self.assertEqual(json.loads(g_body), {"id": "h1", "query": {"q": "2"}})
        self.assertEqual(h_headers.get("content-length"), str(len(g_body)))
        self.assertEqual(h_headers.get("content-type"), g_headers.get("content-type"))
        self.assertTrue(h_headers.get("x-request-id"))
        ignore = {"date", "x-request-id", "connection"}
        self.assertEqual({k for k in h_headers if k not in ignore}, {k for k in g_headers if k not in ignore})

    # ---- X-Request-ID and error bodies ----------------------------------------------------

    def test_every_response_has_request_id_and_errors_carry_it(self):
        ids = []
        status, headers, _ = self.fresh_get("/v1/items/1")
        self.assertEqual(status, 200)
        ids.append(headers.get("x-request-id"))
        status, headers, body = self.fresh_get("/no/such/route")
        self.assert_error_body(status, headers, body, 404)
        ids.append(headers["x-request-id"])
        with connect(self.server) as sock:
            sock.sendall(b"POST /v1/items/1 HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 0\r\n"
                         b"Connection: close\r\n\r\n")
            status, headers, body = recv_response(sock)
        self.assert_error_body(status, headers, body, 405)
        ids.append(headers["x-request-id"])
        (status, headers, body), = parse_responses(exchange(self.server, b"GET / HTTP/1.1\r\n\r\n"))
        self.assert_error_body(status, headers, body, 400)
        ids.append(headers["x-request-id"])
        (status, headers, body), = parse_responses(exchange(
            self.server, b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999\r\n\r\n"))
        self.assert_error_body(status, headers, body, 413)
        ids.append(headers["x-request-id"])
        self.assertTrue(all(ids), ids)
        self.assertEqual(len(set(ids)), len(ids), "request ids repeat: %r" % ids)

    # ---- malformed requests: 400 and close ------------------------------------------------

    def test_rejects_transfer_encoding_with_content_length(self):
        for raw in (b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n"
                    b"0\r\n\r\n",
                    b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"
                    b"0\r\n\r\n"):
            with self.subTest(raw=raw):
                self.assert_rejected(raw)

    def test_rejects_two_content_length_headers(self):
        for raw in (b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 5\r\n\r\nabcde",
                    b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nabcde",
                    b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5, 5\r\n\r\nabcde"):
            with self.subTest(raw=raw):
                self.assert_rejected(raw)

    def test_rejects_bare_lf_line_endings(self):
        for raw in (b"GET /v1/items/1 HTTP/1.1\nHost: x\n\n",
                    b"GET /v1/items/1 HTTP/1.1\r\nHost: x\nX-A: b\r\n\r\n",
                    b"GET /v1/items/1 HTTP/1.1\r\nHost: x\r\n\n"):
            with self.subTest(raw=raw):
                self.assert_rejected(raw)

    def test_rejects_bare_cr_in_header_line(self):
        for raw in (b"GET /v1/items/1 HTTP/1.1\r\nHost: x\rX-A: b\r\n\r\n",
                    b"GET /v1/items/1 HTTP/1.1\r\nHost: x\r\nX-A: b\rc\r\n\r\n"):
            with self.subTest(raw=raw):
                self.assert_rejected(raw)

    def test_rejects_obs_fold(self):
        for raw in (b"GET /v1/items/1 HTTP/1.1\r\nHost: x\r\nX-A: b\r\n c\r\n\r\n",
                    b"GET /v1/items/1 HTTP/1.1\r\nHost: x\r\nX-A: b\r\n\tc\r\n\r\n",
                    b"GET /v1/items/1 HTTP/1.1\r\n Host: x\r\n\r\n"):
            with self.subTest(raw=raw):
                self.assert_rejected(raw)

    def test_rejects_whitespace_in_or_after_header_name(self):
        for raw in (b"GET /v1/items/1 HTTP/1.1\r\nHost : x\r\n\r\n",
                    b"GET /v1/items/1 HTTP/1.1\r\nHost\t: x\r\n\r\n",
                    b"GET /v1/items/1 HTTP/1.1\r\nHost: x\r\nX Forwarded: y\r\n\r\n",
                    b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length : 3\r\n\r\nabc"):
            with self.subTest(raw=raw):
                self.assert_rejected(raw)

    def test_rejects_unsupported_http_versions(self):
        for raw in (b"GET /\r\n\r\n",
                    b"GET /v1/items/1 HTTP/2.0\r\nHost: x\r\n\r\n",
                    b"GET /v1/items/1 HTTP/1.2\r\nHost: x\r\n\r\n",
                    b"GET /v1/items/1 HTTP/0.9\r\nHost: x\r\n\r\n",
                    b"GET /v1/items/1 RTSP/1.0\r\nHost: x\r\n\r\n",
                    b"GET /v1/items/1 http/1.1\r\nHost: x\r\n\r\n"):
            with self.subTest(raw=raw):
                self.assert_rejected(raw)

    def test_rejects_http09_request_line_without_waiting_for_more(self):
        # An HTTP/0.9 client sends only "GET /" CRLF and then waits: no header block follows.
        # The line alone is already not HTTP/1.x, so the stricter reading is a 400 at once, not a
        # 408 once the header timeout (2 s here) runs out.
        with connect(self.server) as sock:
            sock.sendall(b"GET /\r\n")
            data = read_until_closed(sock, 5)
        responses = parse_responses(data)
        self.assertEqual(len(responses), 1, data)
        self.assert_error_body(*responses[0], 400)
        self.assert_still_serving()

    def test_rejects_http11_without_host(self):
        self.assert_rejected(b"GET /v1/items/1 HTTP/1.1\r\nAccept: */*\r\n\r\n")

    def test_rejects_two_host_headers(self):
        for raw in (b"GET /v1/items/1 HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
                    b"GET /v1/items/1 HTTP/1.1\r\nHost: a\r\nhost: a\r\n\r\n"):
            with self.subTest(raw=raw):
                self.assert_rejected(raw)

    def test_rejects_transfer_encoding_other_than_chunked(self):
        for te in (b"gzip", b"identity", b"gzip, chunked", b"chunked, gzip", b"xchunked"):
            with self.subTest(te=te):
                self.assert_rejected(b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: " + te +
                                     b"\r\n\r\n3\r\nabc\r\n0\r\n\r\n")

    def test_rejects_bad_chunk_size_line(self):
        for chunks in (b"zz\r\nhello\r\n0\r\n\r\n", b"-5\r\nhello\r\n0\r\n\r\n", b" 5\r\nhello\r\n0\r\n\r\n",
                       b"\r\nhello\r\n0\r\n\r\n"):
            with self.subTest(chunks=chunks):
                self.assert_rejected(b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n" + chunks)

    def test_rejects_chunk_data_not_followed_by_crlf(self):
        for chunks in (b"3\r\nabcX\r\n0\r\n\r\n", b"3\r\nabc\n0\r\n\r\n", b"3\r\nabc0\r\n\r\n"):
            with self.subTest(chunks=chunks):
                self.assert_rejected(b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n" + chunks)

    def test_rejects_chunk_size_line_ending_in_bare_lf(self):
        for chunks in (b"5\nhello\r\n0\r\n\r\n", b"5\r\nhello\r\n0\n\r\n", b"5;ext=1\nhello\r\n0\r\n\r\n"):
            with self.subTest(chunks=chunks):
                self.assert_rejected(b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n" + chunks)

    def test_malformed_request_after_good_one_on_same_connection(self):
        # A pipelined bad request still gets its good predecessor answered, then 400 and close.
        raw = (b"GET /v1/items/good HTTP/1.1\r\nHost: x\r\n\r\n"
               b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\nA"
               b"GET /v1/items/never HTTP/1.1\r\nHost: x\r\n\r\n")
        responses = parse_responses(exchange(self.server, raw))
        self.assertEqual([r[0] for r in responses], [200, 400])
        self.assertEqual(json.loads(responses[0][2])["id"], "good")
        self.assert_error_body(*responses[1], 400)
        self.assert_still_serving()


if __name__ == "__main__":
    unittest.main()
