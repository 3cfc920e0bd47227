#!/usr/bin/env python3
"""Writes the seed corpora of the fuzz targets: tests/fuzz/corpus/{http,json,router}/.

Run it from anywhere (python3 tests/fuzz/make_corpus.py); it replaces every file in those three
directories except regress_* (inputs a fuzzer found, committed as they were), so the other seeds
are exactly what this script produces. Add a seed here, not by hand. The input format of each
target is described at the top of its fuzz_<name>.c:

  http    byte 0 picks how the rest is split into feeds (high nibble: largest feed is
          1 << nibble bytes), the rest is what a client sends on one connection
  json    the bytes are JSON text
  router  byte 0: high bit clear = match the rest as a path with method (byte & 0x7f) % 12,
          high bit set = add the rest as a pattern for that method
"""
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
CORPUS = os.path.join(HERE, "corpus")

# ---- http -------------------------------------------------------------------------------------

# Split seeds cycled over the HTTP seeds: 1-byte feeds, small, medium and large feeds.
SPLITS = [0x00, 0x15, 0x32, 0x47, 0x63, 0x7a, 0x96, 0xc1, 0xf4, 0x2b]


def req(line, headers=(), body=b""):
    """One request: a request line, headers as (name, value) pairs or raw lines, then body."""
    out = line.encode() + b"\r\n"
    for h in headers:
        out += h if isinstance(h, bytes) else f"{h[0]}: {h[1]}".encode()
        out += b"\r\n"
    return out + b"\r\n" + body


def get(path="/", *extra, version="1.1"):
    return req(f"GET {path} HTTP/{version}", [("Host", "example.test"), *extra])


def chunked(*chunks, trailers=b""):
    out = b""
    for c in chunks:
        out += f"{len(c):x}\r\n".encode() + c + b"\r\n"
    return out + b"0\r\n" + trailers + b"\r\n"


HOST = ("Host", "example.test")


class Split(bytes):
    """An HTTP seed with its own split byte, instead of the next one from SPLITS (so adding a
    seed does not change the split byte of every seed sorted after it)."""

    def __new__(cls, seed, data):
        self = super().__new__(cls, data)
        self.seed = seed
        return self


CHUNKED = ("Transfer-Encoding", "chunked")

HTTP = {
    # ---- well-formed
    "get_simple": get("/"),
    "get_query": get("/v1/items/42?x=1&y=%20z&empty="),
    "head": req("HEAD /head-only HTTP/1.1", [HOST, ("Accept", "*/*")]),
    "post_content_length": req("POST /v1/chat HTTP/1.1",
                               [HOST, ("Content-Type", "application/json"),
                                ("Content-Length", "27")], b'{"message":"hello","n":42}\n'),
    "put_delete_patch": req("PUT /v1/items/1 HTTP/1.1", [HOST, ("Content-Length", "3")], b"abc")
    + req("DELETE /v1/items/1 HTTP/1.1", [HOST])
    + req("PATCH /v1/items/1 HTTP/1.1", [HOST, ("Content-Length", "2")], b"{}"),
    "content_length_zero": req("POST /empty HTTP/1.1", [HOST, ("Content-Length", "0")]),
    "body_at_limit": req("POST /big HTTP/1.1", [HOST, ("Content-Length", "4096")], b"x" * 4096),
    "keepalive_pipelined": get("/one") + get("/two") + get("/three"),
    "pipelined_mixed": get("/a")
    + req("POST /b HTTP/1.1", [HOST, ("Content-Length", "5")], b"12345")
    + req("POST /c HTTP/1.1", [HOST, ("Transfer-Encoding", "chunked")], chunked(b"abc"))
    + get("/d", ("Connection", "close")),
    "connection_close_then_more": get("/", ("Connection", "close")) + get("/never"),
    "http10": req("GET /old HTTP/1.0"),
    "http10_keepalive": req("GET /a HTTP/1.0", [("Connection", "keep-alive")])
    + req("GET /b HTTP/1.0", [("Connection", "Keep-Alive")]) + req("GET /c HTTP/1.0"),
    "http10_keepalive_close": req("GET / HTTP/1.0", [("Connection", "keep-alive, close")])
    + req("GET /x HTTP/1.0"),
    "connection_list": get("/", ("Connection", "foo, keep-alive ,bar")) + get("/2"),
    "chunked": req("POST /up HTTP/1.1", [HOST, ("Transfer-Encoding", "chunked")],
                   chunked(b"hello ", b"world", b"!" * 300)),
    "chunked_extensions": req("POST /up HTTP/1.1", [HOST, ("Transfer-Encoding", "chunked")],
                              b"5;name=value\r\nhello\r\n6;flag;other\r\n world\r\n"
                              b"1;q=\"quoted \\\"string\\\"\";x=1\r\n!\r\n0;last\r\n\r\n"),
    "chunked_trailers": req("POST /up HTTP/1.1", [HOST, ("Transfer-Encoding", "Chunked")],
                            chunked(b"data", trailers=b"X-Checksum: abc\r\nX-More: 1\r\n")),
    "expect_100_continue": req("POST /upload HTTP/1.1",
                               [HOST, ("Expect", "100-continue"), ("Content-Length", "10")],
                               b"0123456789") + get("/after"),
    "expect_100_chunked": req("PUT /upload HTTP/1.1",
                              [HOST, ("Expect", "100-Continue"),
                               ("Transfer-Encoding", "chunked")], chunked(b"abc", b"defg")),
    "expect_100_no_body": req("GET / HTTP/1.1", [HOST, ("Expect", "100-continue")]),
    "absolute_form": req("GET http://example.test/a/b?c=d HTTP/1.1", [HOST])
    + req("GET HTTPS://example.test:8443/ HTTP/1.1", [HOST]),
    "options_star": req("OPTIONS * HTTP/1.1", [HOST]),
    "leading_empty_lines": b"\r\n\r\n" + get("/after-crlf"),
    "header_whitespace": req("GET / HTTP/1.1", [b"Host:\t example.test \t", b"X-Empty:",
                                                b"X-Tab:\tv\tv\t", b"x-lower: ok"]),
    "headers_at_limit": req("GET / HTTP/1.1", [HOST] + [(f"X-H{i}", str(i)) for i in range(99)]),
    "upgrade_alone": req("GET /ws HTTP/1.1", [HOST, ("Connection", "Upgrade"),
                                             ("Upgrade", "websocket"),
                                             ("Sec-WebSocket-Version", "13")]),
    # What curl sends for --http2 on an http:// URL, then a second request on the connection.
    "upgrade_then_get": req("GET /ws HTTP/1.1", [HOST, ("Connection", "Upgrade, HTTP2-Settings"),
                                                 ("Upgrade", "h2c"),
                                                 ("HTTP2-Settings", "AAMAAABkAAQAoAAAAAIAAAAA")])
    + get("/next"),
    "truncated_body": req("POST / HTTP/1.1", [HOST, ("Content-Length", "10")], b"short"),
    "truncated_head": b"GET /partial HTTP/1.1\r\nHost: exa",
    "unknown_method": req("BREW /pot HTTP/1.1", [HOST]),
    # ---- malformed: each shape the parser must reject
    "te_and_cl": req("POST / HTTP/1.1", [HOST, ("Transfer-Encoding", "chunked"),
                                         ("Content-Length", "3")], chunked(b"abc")),
    "duplicate_cl": req("POST / HTTP/1.1", [HOST, ("Content-Length", "3"),
                                            ("Content-Length", "3")], b"abc"),
    "cl_not_a_number": req("POST / HTTP/1.1", [HOST, ("Content-Length", "+3")], b"abc"),
    "cl_list": req("POST / HTTP/1.1", [HOST, ("Content-Length", "3, 3")], b"abc"),
    "bare_lf": b"GET / HTTP/1.1\nHost: example.test\n\n",
    "bare_cr": b"GET / HTTP/1.1\rHost: example.test\r\n\r\n",
    "obs_fold": req("GET / HTTP/1.1", [HOST, b"X-Folded: a", b" b"]),
    "space_before_colon": req("GET / HTTP/1.1", [b"Host : example.test"]),
    "nul_in_header": req("GET / HTTP/1.1", [HOST, b"X-Nul: a\x00b"]),
    "bad_version_2": req("GET / HTTP/2.0", [HOST]),
    "bad_version_12": req("GET / HTTP/1.2", [HOST]),
    "bad_version_lowercase": req("GET / http/1.1", [HOST]),
    "missing_host": req("GET / HTTP/1.1", [("Accept", "*/*")]),
    "duplicate_host": req("GET / HTTP/1.1", [HOST, ("host", "other.test")]),
    "too_many_headers": req("GET / HTTP/1.1", [HOST] + [(f"X-H{i}", "v") for i in range(100)]),
    "request_line_too_long": get("/" + "a" * 9000),
    "head_too_large": req("GET / HTTP/1.1", [HOST] + [(f"X-Big{i}", "b" * 1000)
                                                     for i in range(17)]),
    "bad_target": req("GET noslash HTTP/1.1", [HOST]),
    "target_with_fragment": req("GET /a#frag HTTP/1.1", [HOST]),
    "bad_chunk_size": req("POST / HTTP/1.1", [HOST, ("Transfer-Encoding", "chunked")],
                          b"zz\r\nabc\r\n0\r\n\r\n"),
    "chunk_size_overflow": req("POST / HTTP/1.1", [HOST, ("Transfer-Encoding", "chunked")],
                               b"1" + b"0" * 17 + b"\r\nabc\r\n0\r\n\r\n"),
    "chunk_missing_crlf": req("POST / HTTP/1.1", [HOST, ("Transfer-Encoding", "chunked")],
                              b"3\r\nabcX0\r\n\r\n"),
    "chunk_extension_bad": req("POST / HTTP/1.1", [HOST, ("Transfer-Encoding", "chunked")],
                               b"3;na\x01me=v\r\nabc\r\n0\r\n\r\n"),
    "te_not_chunked": req("POST / HTTP/1.1", [HOST, ("Transfer-Encoding", "gzip, chunked")],
                          chunked(b"abc")),
    "te_on_http10": req("POST / HTTP/1.0", [("Transfer-Encoding", "chunked")], chunked(b"abc")),
    "body_too_large_cl": req("POST / HTTP/1.1", [HOST, ("Content-Length", "5000")], b"y" * 64),
    "body_too_large_chunked": req("POST / HTTP/1.1", [HOST, ("Transfer-Encoding", "chunked")],
                                  chunked(b"z" * 3000, b"z" * 3000)),
    "expect_unknown": req("POST / HTTP/1.1", [HOST, ("Expect", "200-ok"),
                                              ("Content-Length", "1")], b"x"),
    "connect": req("CONNECT example.test:443 HTTP/1.1", [HOST]),
    "garbage": b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",
    # ---- chunk extensions and trailers count toward the body limit (fuzz_http's is 4096)
    "limit_chunk_ext_and_trailer_ok": Split(0x32, req(
        "POST / HTTP/1.1", [HOST, CHUNKED],
        b"5;a=" + b"e" * 1000 + b"\r\nhello\r\n0;z\r\nX-T: " + b"t" * 1000 + b"\r\n\r\n")),
    "limit_chunk_ext_over": Split(0x63, req(
        "POST / HTTP/1.1", [HOST, CHUNKED],
        b"".join(b"1;e=" + b"x" * 100 + b"\r\nd\r\n" for _ in range(50)) + b"0\r\n\r\n")),
    "limit_chunk_line_too_long": Split(0x96, req(
        "POST / HTTP/1.1", [HOST, CHUNKED], b"1;a=" + b"v" * 5000 + b"\r\nx\r\n0\r\n\r\n")),
    "limit_trailers_over": Split(0x47, req(
        "POST / HTTP/1.1", [HOST, CHUNKED], b"1\r\nx\r\n0\r\n" + b"X-T: yyy\r\n" * 600 + b"\r\n")),
}

# ---- json -------------------------------------------------------------------------------------

JSON = {
    "literals": b'[null, true, false]',
    "numbers": b'[0, -0, 1, -1, 1.5, -2.25e10, 1E-5, 6.02e+23, 0.1]',
    "int64_limits": b'[9223372036854775807, -9223372036854775808]',
    "int64_overflow": b'[9223372036854775808, -9223372036854775809, 18446744073709551616]',
    "float_overflow": b'[1e400, -1e400, 1e-400]',
    "string_escapes": b'"quote \\" backslash \\\\ slash \\/ \\b\\f\\n\\r\\t"',
    "unicode_escapes": b'["\\u00e9", "\\u20ac", "\\ud83d\\ude00", "\\u0000", "\\uFFFF"]',
    "lone_surrogate": b'["\\ud800", "\\udc00", "\\ud800\\u0041"]',
    "utf8_valid": '{"caf\u00e9": "\u20ac\U0001f600 \u65e5\u672c"}'.encode(),
    "utf8_invalid_byte": b'"\xff"',
    "utf8_overlong": b'"\xc0\xaf"',
    "utf8_truncated": b'"\xe2\x82"',
    "utf8_surrogate_encoded": b'"\xed\xa0\x80"',
    "nested_objects": b'{"a": {"b": [1, 2, {"c": null, "d": [[], {}]}]}, "e": ""}',
    "nesting_at_limit": b"[" * 128 + b"]" * 128,
    "nesting_over_limit": b"[" * 129 + b"]" * 129,
    "empty_containers": b'[[], {}, [[]], [{}], {"a": []}, {"b": {}}]',
    "duplicate_keys": b'{"a": 1, "a": 2}',
    "whitespace": b' \t\r\n{ "k" :\n[ 1 ,\t2 ] }\r\n ',
    "trailing_comma": b'[1, 2,]',
    "leading_zero": b'[01]',
    "unterminated": b'{"a": "b',
    "control_in_string": b'"tab\there"',
    "trailing_garbage": b'{} x',
    "bom": b'\xef\xbb\xbf{}',
    "number_array": ("[" + ", ".join(str(i * 7919 - 50000) for i in range(200)) + "]").encode(),
    # ---- for hk_json_scan_member, which fuzz_json checks against the decoder for "mode"
    "scan_mode_top_level": b'{"a": 1, "mode": "fast", "b": [true]}',
    "scan_mode_nested_only": b'{"a": {"mode": "inner"}, "b": [{"mode": "x"}], "c": "mode"}',
    "scan_mode_duplicates": b'{"mode": "first", "x": {}, "mode": "last"}',
    "scan_mode_duplicate_not_string": b'{"mode": "first", "mode": 7}',
    "scan_mode_escaped_name": b'{"mo\\u0064e": "caf\\u00e9 \\"q\\" \\\\ \\ud83d\\ude00"}',
    "scan_mode_nul": b'{"mode": "a\\u0000b"}',
    "scan_mode_too_long": b'{"mode": "0123456789abcdefghij"}',
    "scan_mode_after_error": b'{"mode": "x", "b": [1 2]}',
    "scan_mode_deep": b'{"a": ' + b"[" * 127 + b"]" * 127 + b', "mode": "deep"}',
    "scan_mode_too_deep": b'{"a": ' + b"[" * 128 + b"]" * 128 + b', "mode": "deep"}',
    "scan_mode_array_top": b'[{"mode": "x"}]',
}

# ---- router -----------------------------------------------------------------------------------

METHODS = ["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "PURGE", "TRACE",
           "PROPFIND", "*", "BREW"]


def match(method, path):
    return bytes([METHODS.index(method)]) + path.encode()


def pattern(method, text):
    return bytes([0x80 | METHODS.index(method)]) + text.encode()


ROUTER = {
    "match_root": match("GET", "/"),
    "match_literal": match("POST", "/v1/chat"),
    "match_trailing_slash": match("GET", "/v1/chat/"),
    "match_param": match("DELETE", "/v1/items/42"),
    "match_literal_beats_param": match("GET", "/v1/items/new"),
    "match_two_params": match("PUT", "/v1/items/7/tags/red"),
    "match_wildcard": match("POST", "/a/1/2/rest/of/the/path"),
    "match_any_method": match("BREW", "/any/thing"),
    "match_head_falls_back": match("HEAD", "/v1/chat"),
    "match_wildcard_empty": match("GET", "/static/"),
    "match_empty_segment": match("GET", "/c//d"),
    "match_sixteen_params": match("OPTIONS", "/" + "/".join(str(i) for i in range(16))),
    "method_not_allowed": match("PATCH", "/v1/chat"),
    "not_found": match("GET", "/nope/nothing"),
    "pattern_params": pattern("GET", "/v1/:id/*rest"),
    "pattern_literal": pattern("POST", "/a//b/"),
    "pattern_bad_param": pattern("GET", "/:"),
    "pattern_bad_wildcard": pattern("PUT", "/*"),
    "pattern_duplicate_names": pattern("PROPFIND", "/:a/:a"),
}

# ---- writing ----------------------------------------------------------------------------------


def write(kind, seeds, prefix=lambda i: b""):
    directory = os.path.join(CORPUS, kind)
    os.makedirs(directory, exist_ok=True)
    for name in os.listdir(directory):
        if not name.startswith("regress_"):
            os.remove(os.path.join(directory, name))
    i = 0
    for name, data in sorted(seeds.items()):
        if isinstance(data, Split):
            head = bytes([data.seed])
        else:
            head = prefix(i)
            i += 1
        with open(os.path.join(directory, name), "wb") as f:
            f.write(head + bytes(data))
    return len(seeds)


def main():
    counts = {
        "http": write("http", HTTP, lambda i: bytes([SPLITS[i % len(SPLITS)]])),
        "json": write("json", JSON),
        "router": write("router", ROUTER),
    }
    for kind, n in counts.items():
        print(f"corpus/{kind}: {n} seeds", file=sys.stderr)


if __name__ == "__main__":
    main()
