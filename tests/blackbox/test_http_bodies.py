"""Black-box tests of chunked request bodies against the body limit: chunk extensions and
trailer fields count toward --max-body like the data (413 and close past it), one chunk-size line
is capped at 4 KiB (400), and ordinary extensions and trailers still work.

Each test starts its own server with tests/blackbox/scripts (POST /echo answers the de-chunked
body). Only 127.0.0.1 is contacted.
"""
import json
import unittest

from harness import Server, recv_response
from test_http_limits import connect, parse_responses, send_collect

HEAD = (b"POST /echo HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n")


class HttpBodiesTest(unittest.TestCase):

    def start(self, *args):
        server = Server(args=args)
        self.addCleanup(self.stop, server)
        return server

    def stop(self, server):
        code = server.stop()
        self.assertEqual(code, 0, "hancock exited with %s; stderr: %s" % (code, server.stderr))

    def send(self, server, body):
        """Sends one chunked POST /echo with the raw chunked `body`; returns every response the
        server sent before closing the connection."""
        with connect(server) as sock:
            return parse_responses(send_collect(sock, HEAD + body))

    def assert_refused(self, server, body, status):
        responses = self.send(server, body)
        self.assertEqual(len(responses), 1, responses)
        got, headers, answer = responses[0]
        self.assertEqual(got, status, answer)
        self.assertTrue(json.loads(answer).get("error"))
        self.assertEqual(headers.get("connection", "").lower(), "close")
        # The server lives on and serves the next connection.
        with connect(server) as sock:
            sock.sendall(b"GET /v1/items/alive HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                         b"Connection: close\r\n\r\n")
            self.assertEqual(recv_response(sock)[0], 200)

    def test_chunk_extensions_over_max_body_get_413(self):
        server = self.start("--max-body", "1k")
        # 4 bytes of data carrying 4 * 304 = 1216 bytes of extensions.
        body = b"".join(b"1;e=" + b"x" * 300 + b"\r\nd\r\n" for _ in range(4)) + b"0\r\n\r\n"
        self.assert_refused(server, body, 413)

    def test_one_long_chunk_extension_over_max_body_gets_413(self):
        server = self.start("--max-body", "1k")
        self.assert_refused(server, b"1;e=" + b"x" * 2000 + b"\r\nd\r\n0\r\n\r\n", 413)

    def test_last_chunk_extensions_over_max_body_get_413(self):
        server = self.start("--max-body", "1k")
        self.assert_refused(server, b"0;e=" + b"x" * 2000 + b"\r\n\r\n", 413)

    def test_trailers_over_max_body_get_413(self):
        server = self.start("--max-body", "1k")
        trailers = b"".join(b"X-Pad-%d: %s\r\n" % (i, b"v" * 200) for i in range(6))
        self.assert_refused(server, b"2\r\nhi\r\n0\r\n" + trailers + b"\r\n", 413)

    def test_data_extensions_and_trailers_share_the_limit(self):
        server = self.start("--max-body", "1k")
        # 1000 data bytes + 13 of extension (";a=bbbbbbbbbb") + a trailer line of 7 + k bytes.
        def body(k):
            return (b"3e8;a=bbbbbbbbbb\r\n" + b"d" * 1000 + b"\r\n0\r\nX-T: " + b"v" * k +
                    b"\r\n\r\n")
        responses = self.send(server, body(4))  # exactly 1024
        self.assertEqual([r[0] for r in responses], [200])
        self.assertEqual(responses[0][2], b"d" * 1000)
        self.assert_refused(server, body(5), 413)

    def test_chunk_line_over_4k_gets_400(self):
        server = self.start()  # the default 1 MiB limit: the line cap comes first
        self.assert_refused(server, b"1;a=" + b"v" * 5000 + b"\r\nd\r\n0\r\n\r\n", 400)

    def test_short_extensions_and_trailers_still_work(self):
        server = self.start("--max-body", "1k")
        # (llhttp 8.1.0 refuses some valid shapes: several extensions on one line, a quoted-pair
        # inside a quoted value. Those get a 400 whatever the limit, so they are not used here.)
        responses = self.send(server, b"5;name=value\r\nhello\r\n6;q=\"a b\"\r\n world\r\n"
                                      b"0;last\r\nX-Checksum: abc\r\nX-More: 1\r\n\r\n")
        self.assertEqual([r[0] for r in responses], [200])
        self.assertEqual(responses[0][2], b"hello world")


if __name__ == "__main__":
    unittest.main()
