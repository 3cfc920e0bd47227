"""Black-box tests of Lua routes: the request object, response shapes, the JSON bridge, handler
errors and script loading, against the real build/hancock.

Fixture routes live in tests/blackbox/scripts_routes/ (routes.lua and the module util.lua it
requires); a few tests build their own scripts directory with harness.write_scripts.
"""
import json
import os
import re
import unittest

from harness import Server, read_until_closed, recv_response, request, write_scripts
from harness import line_of

HERE = os.path.dirname(os.path.abspath(__file__))
ROUTES_DIR = os.path.join(HERE, "scripts_routes")
ROUTES_LUA = os.path.join(ROUTES_DIR, "routes.lua")
UUID4 = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")


def raw_exchange(server, raw):
    """Sends raw bytes on a fresh connection and returns everything until the server closes."""
    with server.connect() as s:
        s.sendall(raw)
        return read_until_closed(s)


class LuaRoutesTest(unittest.TestCase):
    def setUp(self):
        self.servers = []

    def tearDown(self):
        for server in self.servers:
            code = server.stop()
            self.assertEqual(code, 0, "hancock exited with %s; stderr: %s" % (code, server.stderr))

    def serve(self, scripts=ROUTES_DIR, env=None):
        server = Server(scripts=scripts, env=env)
        self.servers.append(server)
        return server

    def get_json(self, server, path, **kw):
        status, headers, body = request(server, "GET", path, **kw)
        return status, headers, json.loads(body) if body else None

    def assert_server_error(self, server, status, headers, body):
        """A 500 with the generic body and a matching X-Request-ID; returns the request id."""
        self.assertEqual(status, 500, body)
        self.assertEqual(headers.get("content-type"), "application/json")
        doc = json.loads(body)
        self.assertEqual(set(doc), {"error", "request_id"}, doc)
        self.assertEqual(doc["error"], "internal error")
        self.assertEqual(doc["request_id"], headers.get("x-request-id"))
        return doc["request_id"]

    # ---- routing and the request object ------------------------------------------------------

    def test_exact_path_route_and_unknown_path(self):
        server = self.serve()
        status, headers, doc = self.get_json(server, "/v1/ping")
        self.assertEqual(status, 200)
        self.assertEqual(headers.get("content-type"), "application/json")
        self.assertEqual(doc, {"pong": True, "util": "util.lua"})
        # Exact: no prefix or trailing-slash matching.
        for path in ("/v1/ping/", "/v1/pin", "/v1/ping/x", "/V1/PING"):
            status, _, doc = self.get_json(server, path)
            self.assertEqual(status, 404, path)
            self.assertEqual(doc["error"], "not found")

    def test_path_parameters_are_percent_decoded(self):
        server = self.serve()
        status, _, doc = self.get_json(server, "/v1/items/abc-123")
        self.assertEqual((status, doc), (200, {"id": "abc-123", "endpoint": "/v1/items/:id"}))
        status, _, doc = self.get_json(server, "/v1/items/a%20b%2Fc%C3%A9")
        self.assertEqual(status, 200)
        self.assertEqual(doc["id"], "a b/c\u00e9")
        # '+' is a literal plus in a path (only query strings use it for a space).
        self.assertEqual(self.get_json(server, "/v1/items/a+b")[2]["id"], "a+b")
        status, _, doc = self.get_json(server, "/v1/users/u%40x/items/42")
        self.assertEqual(doc, {"user": "u@x", "item": "42", "endpoint": "/v1/users/:user/items/:item"})
        # A parameter never matches an empty segment.
        self.assertEqual(self.get_json(server, "/v1/items/")[0], 404)

    def test_request_object_fields(self):
        server = self.serve()
        body = b"raw \x00 body \xff bytes"
        raw = (b"PUT /inspect?q=a+b&x=%41%42&empty= HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
               b"X-Custom-Header: Value One\r\nX-Request-ID: inspect-req-1\r\n"
               b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n") + body
        with server.connect() as s:
            s.sendall(raw)
            local_port = s.getsockname()[1]
            status, headers, resp = recv_response(s)
        self.assertEqual(status, 200, resp)
        doc = json.loads(resp)
        self.assertEqual(doc["method"], "PUT")
        self.assertEqual(doc["path"], "/inspect")
        self.assertEqual(doc["query_string"], "q=a+b&x=%41%42&empty=")
        self.assertEqual(doc["query"], {"q": "a b", "x": "AB", "empty": ""})
        self.assertEqual(doc["id"], "inspect-req-1")
        self.assertEqual(headers.get("x-request-id"), "inspect-req-1")
        self.assertEqual(doc["remote_addr"], "127.0.0.1")
        self.assertEqual(doc["remote_port"], local_port)
        self.assertEqual(doc["endpoint"], "/inspect")
        # The raw body reaches Lua byte for byte; JSON-encoding it turns the bad byte into U+FFFD.
        self.assertEqual(doc["body"], "raw \x00 body \ufffd bytes")
        self.assertEqual(doc["lookups"], {"X-Custom-Header": "Value One", "x-custom-header": "Value One",
                                          "X-CUSTOM-HEADER": "Value One"})
        self.assertEqual(doc["header_method"], "Value One")
        self.assertIs(doc["missing_header"], True)

    def test_query_string_absent(self):
        server = self.serve()
        status, _, doc = self.get_json(server, "/inspect")
        self.assertEqual(status, 200)
        self.assertIsNone(doc["query_string"])
        self.assertEqual(doc["query"], {})

    def test_raw_body_echoed_byte_for_byte(self):
        server = self.serve()
        body = bytes(range(256)) * 3
        status, headers, resp = request(server, "POST", "/raw", body=body)
        self.assertEqual(status, 200)
        self.assertEqual(headers.get("content-type"), "application/octet-stream")
        self.assertEqual(resp, body)

    def test_mode_and_script_fields_on_request(self):
        server = self.serve()
        status, _, resp = request(server, "POST", "/fields", body={"message": "hi", "mode": "fast"})
        self.assertEqual(status, 200, resp)
        doc = json.loads(resp)
        self.assertEqual(doc, {"initial_mode": "fast", "mode": "turbo", "user": "ada", "path": "/fields",
                               "path_assignment_failed": True})
        status, _, resp = request(server, "POST", "/fields", body={"message": "hi"})
        self.assertIsNone(json.loads(resp)["initial_mode"])

    def test_hk_env(self):
        server = self.serve(env={"HK_BLACKBOX_VALUE": "from-env", "HK_BLACKBOX_EMPTY": ""})
        status, _, doc = self.get_json(server, "/env")
        self.assertEqual(status, 200)
        self.assertEqual(doc, {"value": "from-env", "empty": "fallback-empty", "unset": "fallback-unset"})

    # ---- response shapes ---------------------------------------------------------------------

    def test_table_return_is_200_json(self):
        server = self.serve()
        status, headers, body = request(server, "GET", "/shape/table")
        self.assertEqual(status, 200)
        self.assertEqual(headers.get("content-type"), "application/json")
        self.assertEqual(int(headers["content-length"]), len(body))
        self.assertEqual(json.loads(body), {"shape": "table"})

    def test_status_body_headers_return(self):
        server = self.serve()
        status, headers, body = request(server, "GET", "/shape/full")
        self.assertEqual(status, 201)
        self.assertEqual(body, b"plain body, as is")
        self.assertEqual(headers.get("x-custom"), "custom-value")
        self.assertEqual(headers.get("x-number"), "42")
        self.assertTrue(headers.get("content-type", "").startswith("text/plain"), headers)
        status, headers, body = request(server, "GET", "/shape/content-type")
        self.assertEqual((status, body), (200, b"<p>hi</p>"))
        self.assertEqual(headers.get("content-type"), "text/html; charset=utf-8")
        status, headers, body = request(server, "GET", "/shape/status-table")
        self.assertEqual(status, 202)
        self.assertEqual(headers.get("content-type"), "application/json")
        self.assertEqual(json.loads(body), {"accepted": True})

    def test_nil_return_is_204_without_body(self):
        server = self.serve()
        data = raw_exchange(server, b"GET /shape/nil HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        head, sep, rest = data.partition(b"\r\n\r\n")
        self.assertTrue(sep, data)
        self.assertTrue(head.startswith(b"HTTP/1.1 204 "), head)
        self.assertEqual(rest, b"", "a 204 must not carry a body")
        self.assertIn(b"\r\nx-request-id: ", head.lower())

    def test_hk_error_response(self):
        server = self.serve()
        status, headers, body = request(server, "GET", "/shape/error", headers={"X-Request-ID": "err-id-1"})
        self.assertEqual(status, 418)
        self.assertEqual(headers.get("content-type"), "application/json")
        self.assertEqual(headers.get("x-request-id"), "err-id-1")
        self.assertEqual(json.loads(body), {"error": "short and \"stout\" \u00e9", "request_id": "err-id-1"})
        status, headers, body = request(server, "GET", "/shape/error-503")
        self.assertEqual(status, 503)
        doc = json.loads(body)
        self.assertEqual(doc, {"error": "try later", "request_id": headers["x-request-id"]})
        self.assertRegex(doc["request_id"], UUID4)

    # ---- the JSON bridge ---------------------------------------------------------------------

    def test_json_null_and_empty_containers_round_trip(self):
        server = self.serve()
        cases = [
            b'{"a":null,"b":[],"c":{}}',
            b'{"x":[null,[],{},[1,2],{"k":[]}]}',
            b"[]",
            b"{}",
            b"[null]",
            b'[{"a":[]},{}]',
        ]
        for raw in cases:
            status, headers, body = request(server, "POST", "/json/echo", body=raw)
            self.assertEqual(status, 200, (raw, body))
            self.assertEqual(headers.get("content-type"), "application/json")
            self.assertEqual(json.loads(body), json.loads(raw), raw)
        # Compact input comes back byte-identical when key order cannot differ.
        self.assertEqual(request(server, "POST", "/json/echo", body=b'{"b":[]}')[2], b'{"b":[]}')
        self.assertEqual(request(server, "POST", "/json/echo", body=b'{"c":{}}')[2], b'{"c":{}}')
        self.assertEqual(request(server, "POST", "/json/echo", body=b'{"a":null}')[2], b'{"a":null}')

    def test_json_types_seen_from_lua(self):
        server = self.serve()
        raw = b'{"n":null,"arr":[],"obj":{},"i":9007199254740993,"f":1.5,"s":"x","t":true}'
        status, _, body = request(server, "POST", "/json/types", body=raw)
        self.assertEqual(status, 200, body)
        self.assertEqual(json.loads(body), {"n": "null", "arr": "array", "obj": "object", "i": "integer",
                                            "f": "float", "s": "string", "t": "boolean"})

    def test_json_built_in_lua(self):
        server = self.serve()
        status, _, body = request(server, "GET", "/json/built")
        self.assertEqual(status, 200)
        self.assertEqual(json.loads(body), {
            "empty_array": [], "empty_object": {}, "null": None, "sequence": [1, 2, 3],
            "nested": [None, [], {}], "big": 2**63 - 1, "small": -2**63})

    def test_json_big_integers_exact(self):
        server = self.serve()
        numbers = [9007199254740993, 2**63 - 1, -2**63, 1234567890123456789, -9007199254740993]
        raw = ("[" + ",".join(str(n) for n in numbers) + "]").encode()
        status, _, body = request(server, "POST", "/json/echo", body=raw)
        self.assertEqual(status, 200, body)
        self.assertEqual(body, raw)
        self.assertEqual(json.loads(body), numbers)

    def test_json_invalid_input_gives_nil_and_error(self):
        server = self.serve()
        cases = [
            b"",                          # empty body
            b"{",                         # truncated
            b'{"a":1,}',                  # trailing comma
            b"[1 2]",
            b'{"a":1} trailing',
            b"{'a':1}",
            b"nul",
            b"01",
            b'["tab\there"]',             # raw control character in a string
            b"[" * 200 + b"]" * 200,      # nesting deeper than the limit
            b'{"a":"\xff"}',              # invalid UTF-8
            b'{"a":"\xc0\xaf"}',          # overlong encoding
            b'{"a":"\xed\xa0\x80"}',      # UTF-8-encoded surrogate
            b'{"a":"\xe2\x82"}',          # truncated sequence
        ]
        for raw in cases:
            status, _, body = request(server, "POST", "/json/echo", body=raw)
            self.assertEqual(status, 400, (raw[:40], body))
            doc = json.loads(body)
            self.assertIs(doc["decoded"], False, raw[:40])
            self.assertEqual(doc["err_type"], "string", raw[:40])
            self.assertTrue(doc["err"], raw[:40])
        # Still serving.
        self.assertEqual(request(server, "GET", "/v1/ping")[0], 200)

    def test_invalid_utf8_in_lua_string_encodes_as_replacement_character(self):
        server = self.serve()
        status, _, body = request(server, "GET", "/json/invalid-utf8")
        self.assertEqual(status, 200)
        text = body.decode("utf-8")  # strict: raises on invalid UTF-8
        self.assertNotIn(b"\xff", body)
        self.assertEqual(json.loads(text), {"text": "a\ufffdb", "tail": "ok\ufffd"})

    # ---- handler failures --------------------------------------------------------------------

    def test_lua_error_is_500_with_traceback_only_in_log(self):
        server = self.serve()
        status, headers, body = request(server, "GET", "/fail/error")
        rid = self.assert_server_error(server, status, headers, body)
        for leak in (b"kaboom", b"routes.lua", b"traceback", b"stack"):
            self.assertNotIn(leak, body)
        ev = server.wait_event("handler_error", predicate=lambda e: e.get("request_id") == rid)
        self.assertEqual(ev["level"], "ERROR")
        text = json.dumps(ev)
        line = line_of(ROUTES_LUA, "kaboom-routes-fixture")
        self.assertIn("kaboom-routes-fixture", text)
        self.assertIn("routes.lua:%d:" % line, text)
        self.assertIn("traceback", text)
        # The process keeps serving.
        status, _, doc = self.get_json(server, "/v1/ping")
        self.assertEqual((status, doc["pong"]), (200, True))

    def test_error_with_non_string_value_is_500(self):
        server = self.serve()
        status, headers, body = request(server, "GET", "/fail/error-table")
        rid = self.assert_server_error(server, status, headers, body)
        server.wait_event("handler_error", predicate=lambda e: e.get("request_id") == rid)
        self.assertEqual(request(server, "GET", "/v1/ping")[0], 200)

    def test_bad_returns_are_500_and_logged(self):
        server = self.serve()
        for path in ("/fail/status-low", "/fail/status-high", "/fail/header-name", "/fail/return-boolean"):
            status, headers, body = request(server, "GET", path)
            rid = self.assert_server_error(server, status, headers, body)
            ev = server.wait_event("request_completed", predicate=lambda e, r=rid: e.get("request_id") == r)
            self.assertEqual(ev["status"], 500, path)
            errors = [e for e in server.events() if e.get("request_id") == rid and e.get("level") == "ERROR"]
            self.assertTrue(errors, "no ERROR event logged for " + path)
        self.assertEqual(request(server, "GET", "/v1/ping")[0], 200)

    def test_header_value_with_newline_is_500_not_split(self):
        server = self.serve()
        for path in ("/fail/header-crlf", "/fail/header-lf"):
            data = raw_exchange(server, ("GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
                                         % path).encode())
            self.assertEqual(data.count(b"HTTP/1.1 "), 1, data)
            self.assertTrue(data.startswith(b"HTTP/1.1 500 "), data)
            self.assertNotIn(b"X-Injected", data)
            self.assertNotIn(b"X-Split", data)
            head, _, body = data.partition(b"\r\n\r\n")
            rid = json.loads(body)["request_id"]
            self.assertIn(("x-request-id: " + rid).encode(), head.lower())
            ev = server.wait_event("request_completed", predicate=lambda e, r=rid: e.get("request_id") == r)
            self.assertEqual(ev["status"], 500)
            errors = [e for e in server.events() if e.get("request_id") == rid and e.get("level") == "ERROR"]
            self.assertTrue(errors, "no ERROR event logged for " + path)

    # ---- loading scripts ---------------------------------------------------------------------

    def test_scripts_run_in_name_order(self):
        # Created in a scrambled order so directory order is unlikely to be name order.
        names = ["40_d.lua", "10_a.lua", "60_f.lua", "30_c.lua", "50_e.lua", "20_b.lua"]
        files = {}
        for name in names:
            tag = name[:-4]
            files[name] = (
                'local state = require "state"\n'
                f'state.order[#state.order + 1] = "{tag}"\n'
            )
        # 20_b relies on something 10_a defined; 60_f, the last, registers the route.
        files["10_a.lua"] += 'state.greet = function(who)\n  return "hello " .. who\nend\n'
        files["20_b.lua"] += 'state.greeting = state.greet("b")\n'
        files["60_f.lua"] = (
            'local hk = require "hancock"\n'
            'local state = require "state"\n'
            'state.order[#state.order + 1] = "60_f"\n'
            'hk.route("GET", "/order", function()\n'
            '  return { order = state.order, greeting = state.greeting }\n'
            'end)\n'
        )
        files["state.lua"] = "return { order = {} }\n"
        ordered = {name: files[name] for name in names + ["state.lua"]}
        server = self.serve(scripts=write_scripts(ordered))
        status, _, doc = self.get_json(server, "/order")
        self.assertEqual(status, 200)
        self.assertEqual(doc, {"order": ["10_a", "20_b", "30_c", "40_d", "50_e", "60_f"], "greeting": "hello b"})

    def test_require_finds_module_in_scripts_dir(self):
        # routes.lua requires "util" (util.lua sorts after it, so only require can have loaded it).
        server = self.serve()
        self.assertEqual(self.get_json(server, "/v1/ping")[2]["util"], "util.lua")
        d = write_scripts({
            "a_main.lua": ('local hk = require "hancock"\n'
                           'local helper = require "zz_helper"\n'
                           'hk.route("GET", "/helper", function()\n'
                           '  return { answer = helper.answer() }\n'
                           'end)\n'),
            "zz_helper.lua": "local M = {}\nfunction M.answer()\n  return 42\nend\nreturn M\n",
        })
        server = self.serve(scripts=d)
        self.assertEqual(self.get_json(server, "/helper")[2], {"answer": 42})


if __name__ == "__main__":
    unittest.main()
