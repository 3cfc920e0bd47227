#!/usr/bin/env python3
"""Writes the seed corpora of the fuzz targets: tests/fuzz/corpus/<target>/.

Run it from anywhere (python3 tests/fuzz/make_corpus.py); it replaces every file in those
directories except regress_* (inputs a fuzzer found, committed as they were), so the other seeds
are exactly what this script produces. Add a seed here, not by hand. The input format of each
target is described at the top of its fuzz_<name>.c:

  http    byte 0 picks how the rest is split into feeds (high nibble: largest feed is
          1 << nibble bytes), the rest is what a client sends on one connection
  json    the bytes are JSON text
  router  byte 0: high bit clear = match the rest as a path with method (byte & 0x7f) % 12,
          high bit set = add the rest as a pattern for that method
  exposition, generators, conn: see the helpers in their sections below
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

# ---- exposition -------------------------------------------------------------------------------
# A program for fuzz_exposition.c: byte 0 is the slice budget / 16, then operations. These
# helpers write each operation the way the target reads it.

PIECES = ["a", "b", "x", "_", "_total", "_bucket", "_sum", "_count", "_created", "_info", ":", "1",
          "le", "__", "A", "quantile"]
COUNTER, GAUGE, HISTOGRAM = 0, 1, 2


def ename(name):
    """A name from the pieces above (fewer bytes, and what the fuzzer recombines), else raw."""
    if isinstance(name, bytes):
        return bytes([0x80, len(name)]) + name
    out, rest = [], name
    while rest:
        for i in sorted(range(len(PIECES)), key=lambda i: -len(PIECES[i])):
            if rest.startswith(PIECES[i]):
                out.append(i)
                rest = rest[len(PIECES[i]):]
                break
        else:
            break
    if not rest and 1 <= len(out) <= 6:
        return bytes([len(out) - 1] + out)
    raw = name.encode() if isinstance(name, str) else name
    return bytes([0x80, len(raw)]) + raw


def enumber(v):
    """A double for the target's number(): raw IEEE bits (kind 6), big-endian."""
    import struct
    return bytes([6]) + struct.pack(">d", v)


def shape_byte(labels, long_help=False, buckets=False, cap=False):
    for b in range(256):
        count = (b // 4 % 10) if b % 4 == 3 else b % 4
        if (count == labels and bool(b & 0x80) == long_help and bool(b & 0x40) == buckets
                and bool(b & 0x20) == cap):
            return b
    raise ValueError("no shape byte for that")


def reg(kind, name, labels=(), help=b"help", legacy=False, script=False, buckets=None, cap=None):
    low = next(t for t in range(16) if (t + 16 * legacy + 32 * script) % 3 == kind)
    op = (low | legacy << 4 | script << 5) << 2
    help = help.encode() if isinstance(help, str) else help
    out = bytes([op]) + ename(name)
    out += bytes([shape_byte(len(labels), len(help) > 255, buckets is not None, cap is not None)])
    for label in labels:
        out += ename(label)
    out += bytes([min(len(help), 255)]) + help[:255]
    if buckets is not None:
        out += bytes([len(buckets)])
        for i, v in enumerate(buckets):
            out += (b"\x00" if i > 0 else b"") + enumber(v)
    if cap is not None:
        out += bytes([cap])
    return out


def series(family, *values):
    out = bytes([1, family])
    for v in values:
        v = v.encode() if isinstance(v, str) else v
        out += bytes([len(v)]) + v
    return out


def update(index, value, worker=0, gauge_set=False):
    return bytes([2 | worker << 2 | (0x10 if gauge_set else 0), index]) + enumber(value)


def render(openmetrics=False):
    return bytes([3 | 0x10 | (0x20 if openmetrics else 0)])


INF, NAN = float("inf"), float("nan")

EXPOSITION = {
    "three_types": bytes([4]) + reg(COUNTER, "a_total", ["x"]) + reg(GAUGE, "b", ["x", "le"])
    + reg(HISTOGRAM, "a", ["x"]) + series(0, "1") + series(1, "2", "3") + series(2, "4")
    + update(0, 3) + update(1, -2.5) + update(2, 0.3) + update(2, 7, worker=1),
    "label_escapes": bytes([0]) + reg(GAUGE, "b", ["x"]) + series(0, 'q"uote') + series(0, "back\\slash")
    + series(0, "new\nline") + series(0, "caf\u00e9 \U0001f600") + series(0, b"\xff\xfe bad")
    + series(0, b"nul\x00inside") + series(0, ""),
    "long_label_value": bytes([0]) + reg(GAUGE, "b", ["x"]) + series(0, b"\xff" + "\u20ac".encode() * 80),
    "help_escapes": bytes([0]) + reg(COUNTER, "x_total", [], help='back\\slash "quote"\nnewline caf\u00e9'),
    "help_too_long": bytes([0]) + reg(GAUGE, "b", [], help=b"h" * 255),
    "odd_values": bytes([0]) + reg(GAUGE, "b", ["x"]) + series(0, "v") + update(0, NAN, gauge_set=True)
    + render() + update(0, INF, gauge_set=True) + render(True) + update(0, -INF, gauge_set=True)
    + update(0, 1e300) + update(0, 5e-324, gauge_set=True) + update(0, 2.0 ** 53 + 2, gauge_set=True),
    "counter_rejects": bytes([0]) + reg(COUNTER, "a_total") + series(0) + update(0, -1) + update(0, NAN)
    + update(0, INF) + update(0, 1e308) + update(0, 1e308),
    "histogram_buckets": bytes([1]) + reg(HISTOGRAM, "a", ["x"], buckets=[-1, 0, 0.005, 1e20])
    + series(0, "s") + update(0, -5) + update(0, 0) + update(0, 3) + update(0, INF) + update(0, NAN),
    "histogram_bad_buckets": bytes([0]) + reg(HISTOGRAM, "a", [], buckets=[1, 1]) + reg(HISTOGRAM, "b", [], buckets=[2, 1])
    + reg(HISTOGRAM, "x", [], buckets=[NAN]) + reg(HISTOGRAM, "x", [], buckets=[INF]),
    "histogram_le_label": bytes([0]) + reg(HISTOGRAM, "a", ["le"]) + reg(HISTOGRAM, "b", ["quantile"]),
    "collisions": bytes([0]) + reg(HISTOGRAM, "a") + reg(GAUGE, "a_sum") + reg(GAUGE, "a_bucket")
    + reg(COUNTER, "x_total") + reg(GAUGE, "x") + reg(GAUGE, "b_count") + reg(HISTOGRAM, "b"),
    "legacy_counter": bytes([0]) + reg(COUNTER, "a", ["x"], legacy=True) + series(0, "y") + update(0, 2)
    + reg(COUNTER, "b", []) + reg(GAUGE, "x", [], legacy=True),
    "bad_names": bytes([0]) + reg(GAUGE, b"1abc") + reg(GAUGE, b"a-b") + reg(GAUGE, b"") + reg(GAUGE, "b", ["__x"])
    + reg(GAUGE, "x", [b"a b"]) + reg(GAUGE, b"a:b:c", ["a", "a"]) + reg(GAUGE, b"\xc3\xa9"),
    "too_many_labels": bytes([0]) + reg(GAUGE, "b", ["a"] * 3 + ["b", "x", "A", "_", "a_", "b_"], cap=0),
    "series_cap": bytes([0]) + reg(GAUGE, "b", ["x"], cap=2) + series(0, "1") + series(0, "2") + series(0, "3")
    + series(0, "1"),
    "reregister": bytes([0]) + reg(GAUGE, "b", ["x"], help="one") + reg(GAUGE, "b", ["x"], help="two")
    + reg(COUNTER, "b", ["x"]) + reg(GAUGE, "b", ["A"]),
    "script_flag": bytes([0]) + reg(GAUGE, "b", script=True) + reg(COUNTER, "a_total", script=True),
    "sliced_small_budget": bytes([0]) + reg(GAUGE, "b", ["x"]) + b"".join(series(0, str(i)) for i in range(20))
    + render() + render(True),
    # A counter x_total and a gauge x_created: in OpenMetrics the counter owns x_created (its
    # created timestamp), so the registry must refuse the gauge (found by the fuzzer).
    "regress_01_om_created_clash": bytes([0]) + reg(COUNTER, "x_total") + reg(GAUGE, "x_created")
    + series(0) + series(1),
    "regress_02_histogram_created_clash": bytes([0]) + reg(HISTOGRAM, "a") + reg(GAUGE, "a_created") + series(1),
}

# ---- generators -------------------------------------------------------------------------------
# A script for fuzz_generators.c: byte 0 sets the environment overrides (2 bits each for
# HANCOCK_RULES_FOR, _WINDOW, HANCOCK_RUNBOOK_BASE_URL: unset, valid, or the raw string that
# follows; bit 6 renders the dashboard even without script metrics), then alerts and metrics.

OMIT, TYPICAL, THRESHOLDS, EMPTY = b"\x00", b"\x01", b"\x02", b"\x03"


def gstr(text):
    raw = text.encode() if isinstance(text, str) else text
    return bytes([4, len(raw)]) + raw


def env(for_=0, window=0, base=0, dashboard=False, raw=()):
    out = bytes([for_ | window << 2 | base << 4 | (0x40 if dashboard else 0)])
    for r in raw:
        out += bytes([len(r)]) + r
    return out


def threshold(kind, payload=b""):
    return bytes([kind]) + payload


def t_double(v):
    import struct
    return threshold(0, struct.pack(">d", v))


def t_int(v):
    import struct
    return threshold(1, struct.pack(">q", v))


def t_special(i):
    return threshold(4, bytes([i]))  # NaN, Inf, -Inf, 1e308, -1e308, 5e-324, -0.0, maxinteger, ...


def alert(kind, thr=None, expr=TYPICAL, fields=(TYPICAL,) * 5 + (OMIT,), raw_name=b"", bare=False):
    """kind: 0 probe (expr "{threshold}", valid fields), 1 "A<i>", 2 raw name, 3 "A0"."""
    shape = kind | (0x04 if thr is not None else 0) | (0x80 if bare else 0)
    out = bytes([1, shape])
    if kind == 2:
        out += bytes([len(raw_name)]) + raw_name
    if thr is not None:
        out += thr
    if kind != 0:
        out += expr + b"".join(fields)
    return out


def metric(kind, help=b"help", labels=0, raw_name=None, raw_labels=(), buckets=None):
    shape = kind | (0x08 if raw_name is not None else 0) | labels << 4 | (0x40 if buckets is not None else 0)
    out = bytes([0, shape])
    if raw_name is not None:
        out += bytes([len(raw_name)]) + raw_name
    out += bytes([len(help)]) + help
    for i in range(labels):
        if i < len(raw_labels):
            out += b"\x01" + bytes([len(raw_labels[i])]) + raw_labels[i]
        else:
            out += b"\x00"
    if buckets is not None:
        out += bytes([len(buckets)]) + b"".join(buckets)
    return out


GENERATORS = {
    "empty": env(),
    "one_alert": env() + alert(1, threshold(12)),
    "probes_numbers": env() + alert(0, t_double(0.05)) + alert(0, t_double(1e-7)) + alert(0, t_double(-2.5))
    + alert(0, t_int(9223372036854775807)) + alert(0, t_int(-9223372036854775808)) + alert(0, t_int(0))
    + alert(0, t_double(5e-324)) + alert(0, t_double(1.7976931348623157e308)) + alert(0, t_double(0.1 + 0.2)),
    "probes_special": env() + b"".join(alert(0, t_special(i)) for i in range(14)),
    "thresholds_wrong_type": env() + alert(1, threshold(5)) + alert(1, threshold(6)) + alert(1, threshold(7))
    + alert(1, threshold(8)) + alert(1, t_special(0)) + alert(1, t_special(1)),
    "odd_strings": env() + alert(1, threshold(2), expr=gstr('a"b\\c\nd\re\tf\x01\x7f'),
                                 fields=(gstr("g"), TYPICAL, gstr("sev-1_x"), gstr("caf\u00e9 {threshold} \U0001f600"),
                                         gstr("line\nbreak"), gstr("https://example.test/x"))),
    "invalid_fields": env() + alert(1, threshold(2), fields=(gstr("bad group"), TYPICAL, TYPICAL, TYPICAL, TYPICAL, OMIT))
    + alert(1, threshold(2), fields=(TYPICAL, gstr("5 minutes"), TYPICAL, TYPICAL, TYPICAL, OMIT))
    + alert(1, threshold(2), fields=(TYPICAL, TYPICAL, EMPTY, TYPICAL, TYPICAL, OMIT))
    + alert(1, threshold(2), fields=(TYPICAL,) * 5 + (gstr("has space"),))
    + alert(2, threshold(2), raw_name=b"not an identifier") + alert(1, None, expr=THRESHOLDS),
    "bare_error": env() + alert(1, threshold(2)) + alert(1, None, expr=THRESHOLDS, bare=True),
    "redefine": env() + alert(3, threshold(2)) + alert(3, threshold(22), fields=(gstr("other"),) + (TYPICAL,) * 4 + (OMIT,)),
    "env_valid": env(1, 1, 1) + alert(1, threshold(2), fields=(TYPICAL,) * 6),
    "env_invalid": env(2, 2, 2, raw=(b"5 min", b"[5m]", b"not a url")) + alert(1, threshold(2)),
    "env_invalid_utf8_base": env(0, 0, 2, raw=(b"https://x.test/\xff",)) + alert(1, threshold(2), fields=(TYPICAL,) * 6),
    "metrics_dashboard": env() + metric(0, b"requests", 2) + metric(1, b"depth 'q' \"x\"", 1)
    + metric(2, b"latency", 1, buckets=[t_double(0.1), t_double(1)]) + metric(2, b"bad buckets", 0, buckets=[t_special(0)])
    + metric(1, b"odd", 1, raw_name=b"bad name", raw_labels=(b"x y",)) + metric(1, b"\xff\xfe help", 3, raw_labels=(b"le",)),
    "dashboard_only": env(dashboard=True),
    # Invalid UTF-8 in a summary made `hancock rules` write a YAML file promtool rejects
    # ("invalid leading UTF-8 octet"); NEL and LS were written raw and folded by YAML parsers.
    "regress_01_summary_invalid_utf8": env() + alert(1, threshold(12), fields=(TYPICAL, TYPICAL, TYPICAL, gstr(b"\xffa\xc2\x85"), TYPICAL, OMIT)),
    "regress_02_nel_ls_raw": env() + alert(1, threshold(12), fields=(TYPICAL, TYPICAL, TYPICAL, gstr("a\u0085b\u2028c\u2029\ufeff\u0080"), TYPICAL, OMIT)),
}

# ---- conn -------------------------------------------------------------------------------------
# fuzz_conn.c: byte 0 = mode (bit 7 JSON body to POST /echo, bit 6 half-close when idle, low
# bits: write sizes as in fuzz_http), then the bytes a client sends (or the JSON body).

RAW, JSONBODY, HALF_CLOSE = 0x00, 0x80, 0x40


def conn(mode, data):
    return bytes([mode]) + data


CONN = {
    "get_root": conn(RAW | 0x3f, get("/")),
    "pipelined_routes": conn(RAW | 0x0c, get("/") + get("/items/5?x=1", ("X-Test", "hi")) + get("/empty")
                             + get("/fail") + get("/nope") + req("POST /items/1 HTTP/1.1", [HOST, ("Content-Length", "0")])
                             + get("/stream")),
    "head_routes": conn(RAW | 0x3f, req("HEAD / HTTP/1.1", [HOST]) + req("HEAD /stream HTTP/1.1", [HOST])
                        + req("HEAD /metrics HTTP/1.1", [HOST]) + get("/")),
    "metrics": conn(RAW | 0x3f, get("/metrics", ("Accept-Encoding", "gzip")) + get("/metrics", ("Accept", "application/openmetrics-text"))),
    "http10": conn(HALF_CLOSE | 0x3f, get("/", version="1.0")),
    "http10_keepalive_stream": conn(RAW | 0x3f, get("/stream", ("Connection", "keep-alive"), version="1.0") + get("/")),
    "statuses": conn(RAW | 0x01, b"".join(req(f"DELETE /status/{c} HTTP/1.1", [HOST]) for c in (100, 101, 204, 304, 418, 599, 600, 99))
                     + b"".join(req(f"PATCH /plain/{c} HTTP/1.1", [HOST]) for c in (100, 199, 204, 304, 999))),
    "put_body_continue": conn(RAW | 0x07, req("PUT /raw/n%41me HTTP/1.1", [HOST, ("Expect", "100-continue"), ("Content-Length", "5")], b"hello")
                              + req("PUT /raw/c HTTP/1.1", [HOST, CHUNKED], chunked(b"ab", b"cde"))),
    "continue_then_413": conn(RAW | 0x3f, req("PUT /raw/x HTTP/1.1", [HOST, ("Expect", "100-continue"), ("Content-Length", "9000")])),
    "body_too_large_chunked": conn(RAW | 0x0a, req("PUT /raw/x HTTP/1.1", [HOST, CHUNKED], chunked(b"x" * 5000, b"y" * 5000))),
    "smuggling_te_cl": conn(RAW | 0x3f, req("POST /echo HTTP/1.1", [HOST, CHUNKED, ("Content-Length", "3")], b"0\r\n\r\n") + get("/")),
    "error_then_more": conn(HALF_CLOSE | 0x3f, b"GET / HTTP/1.1\r\nHost: a\nX: y\r\n\r\n" + get("/")),
    "connection_close_then_more": conn(RAW | 0x3f, get("/", ("Connection", "close")) + get("/")),
    "partial_head": conn(HALF_CLOSE | 0x3f, b"GET / HTTP/1.1\r\nHost: a\r\n"),
    "partial_body": conn(RAW | 0x3f, req("PUT /raw/x HTTP/1.1", [HOST, ("Content-Length", "10")], b"abc")),
    "upgrade": conn(RAW | 0x3f, get("/", ("Connection", "upgrade"), ("Upgrade", "websocket")) + get("/")),
    "request_id": conn(RAW | 0x3f, get("/", ("X-Request-ID", "abc-123")) + get("/", ("X-Request-ID", "bad id\x7f"))),
    "json_values": conn(JSONBODY | 0x3f, b'{"a": [1, 2.5, -0, 1e300, {}], "b": null, "c": [], "d": "caf\\u00e9 \\ud83d\\ude00", "e": true}'),
    "json_int64": conn(JSONBODY | 0x3f, b'[9223372036854775807, -9223372036854775808, 9223372036854775808, 0.1]'),
    "json_top_scalars": conn(JSONBODY | 0x05, b'"just a string"'),
    "json_null": conn(JSONBODY | 0x3f, b"null"),
    "json_invalid": conn(JSONBODY | 0x3f, b'{"a": [1, 2'),
    "json_deep": conn(JSONBODY | 0x3f, b"[" * 127 + b"]" * 127),
    "json_too_deep": conn(JSONBODY | HALF_CLOSE | 0x3f, b"[" * 129 + b"]" * 129),
    "json_invalid_utf8": conn(JSONBODY | 0x3f, b'"\xff"'),
    "json_duplicate_keys": conn(JSONBODY | 0x3f, b'{"mode": "a", "mode": "b"}'),
    # HEAD ran the streaming GET handler and its body went out after the HEAD response's head:
    # a keep-alive client read it as the next response (found by the fuzzer).
    "regress_01_head_streamed_body": conn(RAW | 0x3f, req("HEAD /stream HTTP/1.1", [HOST]) + get("/")),
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
        "exposition": write("exposition", EXPOSITION),
        "generators": write("generators", GENERATORS),
        "conn": write("conn", CONN),
    }
    for kind, n in counts.items():
        print(f"corpus/{kind}: {n} seeds", file=sys.stderr)


if __name__ == "__main__":
    main()
