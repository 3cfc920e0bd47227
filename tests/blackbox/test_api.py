"""Black-box tests of the Hancock API: the repository's own scripts/ (modes.lua, v1.lua,
webhook.lua) served by the real build/hancock against fake LLM backends and fake Slack/Teams
receivers (fakes.py), all on 127.0.0.1.
"""
import hashlib
import hmac
import json
import os
import re
import threading
import time
import unittest
import urllib.request

from fakes import FakeLLM, FakeReceiver
import harness
from harness import metric_value
from harness import SOURCE_DIR, Server, free_port, request

SCRIPTS = os.path.join(os.path.abspath(SOURCE_DIR), "scripts")
MODES = ["auto", "ciso", "code", "ioc", "pentest", "sigma", "soc", "yara"]

# Every variable the scripts read, cleared so the runner's own environment cannot leak in
# (hk.env treats an empty value as unset).
CLEAN_ENV = {name: "" for name in (
    "HANCOCK_API_KEY", "HANCOCK_WEBHOOK_SECRET", "HANCOCK_SLACK_WEBHOOK", "HANCOCK_TEAMS_WEBHOOK",
    "HANCOCK_LLM_BACKEND", "HANCOCK_LLM_TIMEOUT_MS", "HANCOCK_LLM_CONNECT_TIMEOUT_MS",
    "HANCOCK_RATE_LIMIT", "HANCOCK_RATE_LIMIT_WINDOW", "HANCOCK_NOTIFY_TIMEOUT_MS",
    "OLLAMA_BASE_URL", "OLLAMA_MODEL", "OLLAMA_CODER_MODEL",
    "NVIDIA_BASE_URL", "NVIDIA_API_KEY", "NVIDIA_MODEL", "NVIDIA_CODER_MODEL",
    "OPENAI_BASE_URL", "OPENAI_API_KEY", "OPENAI_MODEL", "OPENAI_CODER_MODEL")}

# route → (a valid body, the response field holding the answer, the mode it runs in)
ROUTES = {
    "/v1/chat": ({"message": "What is kerberoasting?"}, "response", "auto"),
    "/v1/ask": ({"question": "What is DCSync?"}, "answer", "auto"),
    "/v1/triage": ({"alert": "4625 x 500 from 10.0.0.5"}, "triage", "soc"),
    "/v1/hunt": ({"target": "T1003.001 LSASS access", "siem": "elastic"}, "query", "soc"),
    "/v1/respond": ({"incident": "ransomware on a file server"}, "playbook", "soc"),
    "/v1/code": ({"task": "parse nginx logs for SQLi", "language": "go"}, "code", "code"),
    "/v1/ciso": ({"question": "How do we prioritise NIS2 work?"}, "advice", "ciso"),
    "/v1/sigma": ({"description": "certutil downloading a file"}, "rule", "sigma"),
    "/v1/yara": ({"description": "Cobalt Strike beacon in memory"}, "rule", "yara"),
    "/v1/ioc": ({"indicator": "185.220.101.1"}, "report", "ioc"),
    "/v1/webhook": ({"alert": "impossible travel for alice", "source": "sentinel", "severity": "high"},
                    "triage", "soc"),
}
REQUIRED = {"/v1/chat": "message", "/v1/ask": "question", "/v1/triage": "alert", "/v1/hunt": "target",
            "/v1/respond": "incident", "/v1/code": "task", "/v1/ciso": "question",
            "/v1/sigma": "description", "/v1/yara": "description", "/v1/ioc": "indicator",
            "/v1/webhook": "alert"}


def sign(secret, body):
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


class ApiTest(harness.ServersTestCase):
    # ---- helpers ---------------------------------------------------------------------------

    def fake_llm(self, **kw):
        fake = FakeLLM(**kw)
        self.fakes.append(fake)
        return fake

    def receiver(self, **kw):
        fake = FakeReceiver(**kw)
        self.fakes.append(fake)
        return fake

    def serve(self, llm=None, **env):
        full = dict(CLEAN_ENV)
        full["HANCOCK_RATE_LIMIT"] = "100000"
        if llm is not None:
            full["OLLAMA_BASE_URL"] = llm.url
        full.update({k: str(v) for k, v in env.items()})
        server = Server(scripts=SCRIPTS, env=full)
        self.servers.append(server)
        return server

    def post(self, server, path, body, headers=None):
        status, hdrs, raw = request(server, "POST", path, body=body, headers=headers)
        try:
            doc = json.loads(raw) if raw else None
        except ValueError:
            doc = raw
        return status, hdrs, doc

    def metrics(self, server):
        # /metrics is chunked; urllib reads that framing (harness.request reads Content-Length).
        with urllib.request.urlopen(f"http://127.0.0.1:{server.port}/metrics", timeout=10) as resp:
            self.assertEqual(resp.status, 200)
            return resp.read().decode()

    def wait_events(self, server, name, count, timeout=5):
        """The first `count` log events called `name`, waiting for the log writer to catch up."""
        deadline = time.monotonic() + timeout
        while len(server.events(name)) < count and time.monotonic() < deadline:
            time.sleep(0.01)
        events = server.events(name)
        self.assertEqual(len(events), count, events)
        return events

    def assert_error(self, status, headers, doc, expected_status, message=None):
        self.assertEqual(status, expected_status, doc)
        self.assertEqual(set(doc), {"error", "request_id"}, doc)
        self.assertEqual(doc["request_id"], headers.get("x-request-id"))
        if message is not None:
            self.assertEqual(doc["error"], message)

    # ---- happy paths -----------------------------------------------------------------------

    def test_every_route_answers_from_the_backend(self):
        llm = self.fake_llm(reply=lambda doc: "answer to: " + doc["messages"][-1]["content"][:20])
        server = self.serve(llm, OLLAMA_MODEL="fake-chat:1b", OLLAMA_CODER_MODEL="fake-coder:1b")
        for path, (body, field, mode) in ROUTES.items():
            with self.subTest(path=path):
                before = len(llm.received())
                status, headers, doc = self.post(server, path, body)
                self.assertEqual(status, 200, doc)
                self.assertEqual(headers.get("content-type"), "application/json")
                sent = llm.received()[before]
                self.assertEqual(doc[field], "answer to: " + sent["messages"][-1]["content"][:20])
                expected_model = "fake-coder:1b" if mode == "code" else "fake-chat:1b"
                self.assertEqual(sent["model"], expected_model)
                self.assertEqual(doc["model"], expected_model)
                self.assertEqual(sent["messages"][0]["role"], "system")
                self.assertIn("Hancock", sent["messages"][0]["content"])
                self.assertIsNone(sent["authorization"], "ollama needs no key")
                for name in ("x-ratelimit-limit", "x-ratelimit-remaining", "x-ratelimit-window"):
                    self.assertIn(name, headers)
        # The mode-specific answers and echoes keep the original field names.
        _, _, doc = self.post(server, "/v1/hunt", {"target": "x"})
        self.assertEqual(doc["siem"], "splunk")
        _, _, doc = self.post(server, "/v1/code", {"task": "x"})
        self.assertEqual((doc["language"], doc["task"]), ("auto", "x"))
        _, _, doc = self.post(server, "/v1/ciso", {"query": "alias works", "output": "board-summary"})
        self.assertEqual(doc["output"], "board-summary")
        self.assertIn("board-ready", llm.received()[-1]["messages"][-1]["content"])
        _, _, doc = self.post(server, "/v1/ioc", {"ioc": "evil.example", "type": "domain"})
        self.assertEqual((doc["indicator"], doc["type"]), ("evil.example", "domain"))
        _, _, doc = self.post(server, "/v1/webhook", ROUTES["/v1/webhook"][0])
        self.assertEqual((doc["status"], doc["source"], doc["severity"], doc["notifications"]),
                         ("triaged", "sentinel", "high", {}))
        # Every /v1 request is counted under its mode.
        text = self.metrics(server)
        self.assertGreaterEqual(metric_value(text, "hancock_requests_by_mode", mode="soc"), 4)
        self.assertEqual(metric_value(text, "hancock_requests_by_mode", mode="code"), 2)

    def test_chat_uses_mode_history_and_sampling(self):
        llm = self.fake_llm(reply="use a golden ticket detection")
        server = self.serve(llm)
        history = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]
        status, headers, doc = self.post(server, "/v1/chat",
                                         {"message": "and now?", "mode": "pentest", "history": history})
        self.assertEqual(status, 200, doc)
        self.assertEqual(doc, {"response": "use a golden ticket detection", "model": "llama3.1:8b",
                               "mode": "pentest"})
        sent = llm.received()[-1]
        self.assertEqual(sent["model"], "llama3.1:8b")  # the default Ollama model
        self.assertEqual([m["role"] for m in sent["messages"]], ["system", "user", "assistant", "user"])
        self.assertIn("penetration", sent["messages"][0]["content"])
        self.assertEqual(sent["messages"][-1]["content"], "and now?")
        self.assertEqual((sent["temperature"], sent["max_tokens"]), (0.7, 1536))
        self.assertIs(sent["body"]["stream"], False)
        # A client's own system message follows the mode's prompt; it does not replace it.
        self.post(server, "/v1/chat", {"message": "y", "mode": "ciso",
                                       "history": [{"role": "system", "content": "be brief"}]})
        sent = llm.received()[-1]
        self.assertEqual([m["role"] for m in sent["messages"]], ["system", "system", "user"])
        self.assertIn("CISO", sent["messages"][0]["content"])
        self.assertEqual(sent["messages"][1]["content"], "be brief")
        # The mode is logged with the request.
        ev = server.wait_event("request_completed", predicate=lambda e: e.get("endpoint") == "/v1/chat")
        self.assertEqual((ev["mode"], ev["status"]), ("pentest", 200))
        # stream=true: the original's server-sent events, relayed as the model produces them
        # (the fake streams one word per event): deltas, then done.
        status, headers, raw = request(server, "POST", "/v1/chat", body={"message": "x", "stream": True})
        self.assertEqual(status, 200)
        self.assertEqual(headers.get("content-type"), "text/event-stream")
        self.assertEqual(headers.get("transfer-encoding"), "chunked")
        self.assertIn("x-ratelimit-limit", headers)
        self.assertIs(llm.received()[-1]["body"]["stream"], True)
        events = [json.loads(line[6:]) for line in raw.decode().split("\n\n") if line.startswith("data: ")]
        self.assertEqual(events, [{"delta": "use"}, {"delta": " a"}, {"delta": " golden"},
                                  {"delta": " ticket"}, {"delta": " detection"},
                                  {"done": True, "response": "use a golden ticket detection",
                                   "model": "llama3.1:8b", "mode": "auto"}])

    def test_streamed_chat_relays_deltas_as_they_arrive(self):
        llm = self.fake_llm(reply="one two three")
        llm.stream_gap_ms = 300
        server = self.serve(llm)
        body = json.dumps({"message": "x", "stream": True}).encode()
        with server.connect() as sock:
            sock.sendall(b"POST /v1/chat HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
            sock.settimeout(10)
            seen = b""
            while b'"delta"' not in seen:
                seen += sock.recv(65536)
            # The first piece is here while the model is still producing the rest.
            self.assertEqual([e for e in server.events("request_completed") if e["endpoint"] == "/v1/chat"], [])
            self.assertNotIn(b'"done"', seen)
        # A client that leaves mid-stream cancels the backend call (logged as 499).
        ev = server.wait_event("request_completed", predicate=lambda e: e.get("endpoint") == "/v1/chat")
        self.assertEqual(ev["status"], 499)

    def test_modes_listing(self):
        server = self.serve(self.fake_llm(), OLLAMA_CODER_MODEL="coder:x")
        status, headers, doc = self.post(server, "/v1/modes", None)
        self.assertEqual(status, 405)
        status, headers, raw = request(server, "GET", "/v1/modes")
        doc = json.loads(raw)
        self.assertEqual(status, 200)
        self.assertEqual([m["name"] for m in doc["modes"]], MODES)
        self.assertEqual((doc["default"], doc["backend"]), ("auto", "ollama"))
        code = next(m for m in doc["modes"] if m["name"] == "code")
        self.assertEqual(code["model"], "coder:x")
        self.assertTrue(all("system" not in m for m in doc["modes"]), "system prompts stay private")
        self.assertIn("x-ratelimit-remaining", headers)

    # ---- client errors ---------------------------------------------------------------------

    def test_missing_and_wrong_typed_fields_name_the_field(self):
        llm = self.fake_llm()
        server = self.serve(llm)
        for path, field in REQUIRED.items():
            expected = (f"field '{field}' is required and must be a non-empty string"
                        + (" or a JSON object" if field == "alert" else ""))
            for body in ({}, {field: ""}, {field: "   "}, {field: 42}, {field: None}, {field: True}):
                with self.subTest(path=path, body=body):
                    status, headers, doc = self.post(server, path, body)
                    self.assert_error(status, headers, doc, 400, expected)
                    self.assertIn("x-ratelimit-limit", headers)
        cases = [
            ("/v1/chat", {"message": "x", "history": "no"}, "field 'history' must be an array"),
            ("/v1/chat", {"message": "x", "history": {}}, "field 'history' must be an array"),
            ("/v1/chat", {"message": "x", "history": [{"role": "robot", "content": "x"}]},
             "field 'history[0]' must be"),
            ("/v1/chat", {"message": "x", "history": [{"role": "user", "content": 1}]},
             "field 'history[0]' must be"),
            ("/v1/chat", {"message": "x", "stream": "yes"}, "field 'stream' must be a boolean"),
            ("/v1/chat", {"message": "x", "mode": 7}, "field 'mode' must be a string"),
            ("/v1/hunt", {"target": "x", "siem": ["splunk"]}, "field 'siem' must be a string"),
            ("/v1/code", {"task": "x", "language": 3}, "field 'language' must be a string"),
            ("/v1/ciso", {"question": "x", "output": "poem"},
             "field 'output' must be one of: advice, report, gap-analysis, board-summary"),
            ("/v1/webhook", {"alert": "x", "severity": 5}, "field 'severity' must be a string"),
        ]
        for path, body, message in cases:
            with self.subTest(path=path, body=body):
                status, headers, doc = self.post(server, path, body)
                self.assertEqual(status, 400, doc)
                self.assertTrue(doc["error"].startswith(message), doc)
        # Not a JSON object at all.
        for raw in (b"", b"not json", b"[1, 2]", b'"text"'):
            status, headers, body = request(server, "POST", "/v1/ask", body=raw)
            self.assert_error(status, headers, json.loads(body), 400, "request body must be a JSON object")
        self.assertEqual(llm.received(), [], "no invalid request reaches the model")

    def test_unknown_mode_lists_the_valid_modes(self):
        llm = self.fake_llm()
        server = self.serve(llm)
        for path, body in (("/v1/chat", {"message": "x", "mode": "wizard"}),
                           ("/v1/ask", {"question": "x", "mode": "wizard"})):
            status, headers, doc = self.post(server, path, body)
            self.assert_error(status, headers, doc, 400,
                              "unknown mode 'wizard'; valid modes: " + ", ".join(MODES))
        self.assertEqual(llm.received(), [])
        # A client's invented mode does not become a metric label.
        self.assertNotIn('mode="wizard"', self.metrics(server))

    # ---- backend failures ------------------------------------------------------------------

    def test_backend_down_is_502(self):
        server = self.serve(OLLAMA_BASE_URL=f"http://127.0.0.1:{free_port()}")
        status, headers, doc = self.post(server, "/v1/chat", {"message": "x"})
        self.assert_error(status, headers, doc, 502, "model backend unreachable")
        ev = server.wait_event("llm_request_failed")
        self.assertEqual((ev["backend"], ev["status"], ev["request_id"]), ("ollama", 502, doc["request_id"]))
        self.assertEqual(server.events("llm_fallback"), [], "no OpenAI key, no fallback")

    def test_backend_errors_and_malformed_answers_are_502(self):
        llm = self.fake_llm(status=500)
        server = self.serve(llm)
        status, headers, doc = self.post(server, "/v1/ask", {"question": "x"})
        self.assert_error(status, headers, doc, 502, "model backend error (HTTP 500)")
        llm.status = 404
        status, headers, doc = self.post(server, "/v1/ask", {"question": "x"})
        self.assert_error(status, headers, doc, 502, "model backend rejected the request (HTTP 404)")
        llm.status, llm.malformed = 200, True
        status, headers, doc = self.post(server, "/v1/triage", {"alert": "x"})
        self.assert_error(status, headers, doc, 502, "model backend returned a malformed response")

    def test_slow_backend_is_504(self):
        llm = self.fake_llm(delay_ms=3000)
        server = self.serve(llm, HANCOCK_LLM_TIMEOUT_MS=300)
        started = time.monotonic()
        status, headers, doc = self.post(server, "/v1/chat", {"message": "x"})
        elapsed = time.monotonic() - started
        self.assert_error(status, headers, doc, 504, "model backend timed out")
        self.assertLess(elapsed, 2.5)

    def test_empty_model_answer_is_502(self):
        llm = self.fake_llm(empty=True)
        server = self.serve(llm)
        for path in ("/v1/chat", "/v1/webhook"):
            body = ROUTES[path][0]
            status, headers, doc = self.post(server, path, body)
            self.assert_error(status, headers, doc, 502, "model returned empty response")
            server.wait_event("model_empty_response", predicate=lambda e: e["request_id"] == doc["request_id"])
        llm.empty, llm.reply = False, " \n\t "
        status, headers, doc = self.post(server, "/v1/ask", {"question": "x"})
        self.assert_error(status, headers, doc, 502, "model returned empty response")

    def test_fallback_to_openai(self):
        openai = self.fake_llm(reply="from openai")
        primary = self.fake_llm(status=503)
        server = self.serve(primary, OPENAI_BASE_URL=openai.url, OPENAI_API_KEY="sk-test-fallback-key",
                            OPENAI_MODEL="gpt-fake-mini", OPENAI_CODER_MODEL="gpt-fake-coder")
        status, headers, doc = self.post(server, "/v1/chat", {"message": "x", "mode": "soc"})
        self.assertEqual(status, 200, doc)
        self.assertEqual(doc, {"response": "from openai", "model": "gpt-fake-mini", "mode": "soc"})
        self.assertEqual(len(primary.received()), 1)
        sent = openai.received()[-1]
        self.assertEqual((sent["model"], sent["authorization"]), ("gpt-fake-mini", "Bearer sk-test-fallback-key"))
        self.assertIn("SOC", sent["messages"][0]["content"])
        ev = server.wait_event("llm_fallback")
        self.assertEqual((ev["level"], ev["from"], ev["to"], ev["model"], ev["request_id"]),
                         ("WARNING", "ollama", "openai", "gpt-fake-mini", headers["x-request-id"]))
        # A request the primary rejected (4xx) is not retried elsewhere.
        primary.status = 400
        status, headers, doc = self.post(server, "/v1/ask", {"question": "x"})
        self.assert_error(status, headers, doc, 502, "model backend rejected the request (HTTP 400)")
        self.assertEqual(len(openai.received()), 1)
        # A dead primary falls back too, and the coder model to OpenAI's coder model.
        primary.stop()
        self.fakes.remove(primary)
        status, _, doc = self.post(server, "/v1/code", {"task": "x"})
        self.assertEqual((status, doc["model"]), (200, "gpt-fake-coder"))
        # When the fallback fails as well, the client gets the fallback's error.
        openai.status = 500
        status, headers, doc = self.post(server, "/v1/ask", {"question": "x"})
        self.assert_error(status, headers, doc, 502, "model backend error (HTTP 500)")
        self.wait_events(server, "llm_fallback", 3)
        self.assertNotIn("sk-test-fallback-key", "\n".join(server.lines))

    def test_nvidia_and_openai_backends(self):
        nim = self.fake_llm(reply="nim says")
        server = self.serve(HANCOCK_LLM_BACKEND="nvidia", NVIDIA_BASE_URL=nim.url + "/v1",
                            NVIDIA_API_KEY="nvapi-secret")
        status, _, doc = self.post(server, "/v1/code", {"task": "x"})
        self.assertEqual((status, doc["code"]), (200, "nim says"))
        sent = nim.received()[-1]
        self.assertEqual(sent["authorization"], "Bearer nvapi-secret")
        self.assertEqual(sent["model"], "qwen/qwen2.5-coder-32b-instruct")
        self.post(server, "/v1/ask", {"question": "x"})
        self.assertEqual(nim.received()[-1]["model"], "meta/llama-3.1-8b-instruct")
        self.assertEqual(nim.received()[-1]["path"], "/v1/chat/completions")  # base URL's /v1 not doubled
        self.assertNotIn("nvapi-secret", "\n".join(server.lines))
        server.stop()
        self.servers.remove(server)
        openai = self.fake_llm(reply="openai says")
        server = self.serve(HANCOCK_LLM_BACKEND="openai", OPENAI_BASE_URL=openai.url + "/",
                            OPENAI_API_KEY="sk-primary")
        status, _, doc = self.post(server, "/v1/ask", {"question": "x"})
        self.assertEqual((status, doc["answer"], doc["model"]), (200, "openai says", "gpt-4o-mini"))
        self.assertEqual(openai.received()[-1]["path"], "/v1/chat/completions")
        # An unknown backend stops start-up with a message naming the variable.
        bad = Server(scripts=SCRIPTS, env=dict(CLEAN_ENV, HANCOCK_LLM_BACKEND="bard"), wait=False)
        bad.proc.wait(timeout=10)
        self.assertEqual(bad.stop(), 1)
        self.assertIn("HANCOCK_LLM_BACKEND must be ollama, nvidia or openai", bad.stderr + "\n".join(bad.lines))

    # ---- auth and rate limits --------------------------------------------------------------

    def test_api_key_required_when_set(self):
        llm = self.fake_llm()
        server = self.serve(llm, HANCOCK_API_KEY="hk-right-key")
        for headers in ({}, {"Authorization": "Bearer hk-wrong-key"}, {"Authorization": "hk-right-key"},
                        {"Authorization": "Basic aGs6aGs="}, {"Authorization": "Bearer hk-right-key-and-more"}):
            with self.subTest(headers=headers):
                status, hdrs, doc = self.post(server, "/v1/chat", {"message": "x"}, headers=headers)
                self.assert_error(status, hdrs, doc, 401, "unauthorized")
                self.assertIn("x-ratelimit-remaining", hdrs)
        status, hdrs, raw = request(server, "GET", "/v1/modes")
        self.assertEqual(status, 401)
        self.assertEqual(llm.received(), [])
        for scheme in ("Bearer", "bearer"):
            status, _, doc = self.post(server, "/v1/chat", {"message": "x"},
                                       headers={"Authorization": f"{scheme} hk-right-key"})
            self.assertEqual(status, 200, doc)
        # /metrics stays open; the key is never logged.
        self.assertIn("hancock_requests_total", self.metrics(server))
        self.assertNotIn("hk-right-key", "\n".join(server.lines))

    def test_rate_limit_headers_on_route_answers_only(self):
        # docs/api.md: every answer of a /v1 route carries them, refusals and errors included;
        # what the core answers before any route runs (404, 405, 413) does not.
        llm = self.fake_llm()
        server = self.serve(llm, HANCOCK_API_KEY="hk-right-key")
        key = {"Authorization": "Bearer hk-right-key"}
        answers = {
            "200": self.post(server, "/v1/chat", {"message": "x"}, headers=key),
            "400": self.post(server, "/v1/chat", {"message": ""}, headers=key),
            "401": self.post(server, "/v1/chat", {"message": "x"}),
        }
        for status, (got, hdrs, doc) in answers.items():
            with self.subTest(status=status):
                self.assertEqual(str(got), status, doc)
                for name in ("x-ratelimit-limit", "x-ratelimit-remaining", "x-ratelimit-window"):
                    self.assertIn(name, hdrs)
        core = {
            "404": request(server, "GET", "/v1/nope", headers=key),
            "405": request(server, "GET", "/v1/chat", headers=key),
            "413": request(server, "POST", "/v1/chat", body=b"x" * (1024 * 1024 + 1), headers=key),
        }
        for status, (got, hdrs, _) in core.items():
            with self.subTest(status=status):
                self.assertEqual(str(got), status)
                self.assertFalse([h for h in hdrs if h.startswith("x-ratelimit")], hdrs)

    def test_hints_echoed_as_documented(self):
        # docs/api.md: logsource, technique, file_type and type are echoed (auto when absent);
        # hash and context only reach the model.
        llm = self.fake_llm()
        server = self.serve(llm)
        _, _, doc = self.post(server, "/v1/yara", {"description": "beacon", "hash": "d41d8cd98f00b204e9800998ecf8427e"})
        self.assertEqual(set(doc), {"rule", "file_type", "model"}, doc)
        self.assertEqual(doc["file_type"], "auto")
        self.assertIn("d41d8cd98f00b204e9800998ecf8427e", llm.received()[-1]["messages"][-1]["content"])
        _, _, doc = self.post(server, "/v1/ioc", {"indicator": "185.220.101.1", "context": "seen in proxy logs"})
        self.assertEqual(set(doc), {"report", "indicator", "type", "model"}, doc)
        self.assertEqual(doc["type"], "auto")
        _, _, doc = self.post(server, "/v1/sigma", {"description": "certutil", "technique": "T1105"})
        self.assertEqual((doc["technique"], doc["logsource"]), ("T1105", "auto"))

    def test_rate_limit_refuses_then_refills(self):
        llm = self.fake_llm()
        server = self.serve(llm, HANCOCK_RATE_LIMIT=3, HANCOCK_RATE_LIMIT_WINDOW=2)
        remaining = []
        for _ in range(3):
            status, headers, doc = self.post(server, "/v1/ask", {"question": "x"})
            self.assertEqual(status, 200, doc)
            self.assertEqual((headers["x-ratelimit-limit"], headers["x-ratelimit-window"]), ("3", "2"))
            remaining.append(headers["x-ratelimit-remaining"])
        emptied = time.monotonic()
        self.assertEqual(remaining, ["2", "1", "0"])
        status, headers, doc = self.post(server, "/v1/chat", {"message": "x"})
        self.assert_error(status, headers, doc, 429, "rate limit exceeded")
        self.assertEqual(headers["x-ratelimit-remaining"], "0")
        self.assertEqual(headers["retry-after"], "1")  # one token per 667 ms, rounded up
        self.assertEqual(len(llm.received()), 3)
        text = self.metrics(server)
        self.assertEqual(metric_value(text, "hancock_rate_limit_exceeded_total",
                                      endpoint="/v1/chat", client_id="127.0.0.1"), 1)
        # The bucket refills continuously: one token is back 667 ms after it emptied.
        time.sleep(max(0, emptied + 0.8 - time.monotonic()))
        status, headers, doc = self.post(server, "/v1/chat", {"message": "x"})
        self.assertEqual(status, 200, doc)
        self.assertIn(headers["x-ratelimit-remaining"], ("0", "1"))

    def test_rate_limit_buckets_the_api_key_not_invented_keys(self):
        server = self.serve(self.fake_llm(), HANCOCK_API_KEY="k1", HANCOCK_RATE_LIMIT=2,
                            HANCOCK_RATE_LIMIT_WINDOW=60)
        auth = {"Authorization": "Bearer k1"}
        for _ in range(2):
            self.assertEqual(self.post(server, "/v1/ask", {"question": "x"}, headers=auth)[0], 200)
        status, headers, doc = self.post(server, "/v1/ask", {"question": "x"}, headers=auth)
        self.assert_error(status, headers, doc, 429, "rate limit exceeded")
        self.assertGreaterEqual(int(headers["retry-after"]), 1)
        # Wrong keys count against the address, so guessing is limited too; refusals win over 401.
        codes = [self.post(server, "/v1/ask", {"question": "x"},
                           headers={"Authorization": f"Bearer guess{i}"})[0] for i in range(3)]
        self.assertEqual(codes, [401, 401, 429])
        text = self.metrics(server)
        self.assertEqual(metric_value(text, "hancock_rate_limit_exceeded_total",
                                      endpoint="/v1/ask", client_id="api-key"), 1)
        self.assertNotIn("k1\"", text, "the key never becomes a label")

    # ---- webhook ---------------------------------------------------------------------------

    def test_webhook_signature(self):
        llm = self.fake_llm(reply="true positive")
        secret = "whsec-test-secret"
        server = self.serve(llm, HANCOCK_WEBHOOK_SECRET=secret)
        body = json.dumps({"alert": {"rule": "mimikatz", "host": "dc01"}, "source": "edr",
                           "severity": "critical"}).encode()
        headers = {"Content-Type": "application/json"}
        status, hdrs, raw = request(server, "POST", "/v1/webhook", body=body,
                                    headers=dict(headers, **{"X-Hancock-Signature": sign(secret, body)}))
        doc = json.loads(raw)
        self.assertEqual(status, 200, doc)
        self.assertEqual((doc["status"], doc["triage"], doc["severity"]), ("triaged", "true positive", "critical"))
        # An object alert reaches the model as JSON text.
        self.assertIn('"rule":"mimikatz"', llm.received()[-1]["messages"][-1]["content"])
        bad = [
            ("mismatch", sign("other-secret", body)),
            ("mismatch", sign(secret, body + b" ")),
            ("mismatch", "sha1=" + hmac.new(secret.encode(), body, hashlib.sha1).hexdigest()),
            ("mismatch", sign(secret, body)[7:]),
            ("missing", None),
        ]
        for reason, signature in bad:
            with self.subTest(signature=signature):
                extra = dict(headers)
                if signature is not None:
                    extra["X-Hancock-Signature"] = signature
                status, hdrs, raw = request(server, "POST", "/v1/webhook", body=body, headers=extra)
                self.assert_error(status, hdrs, json.loads(raw), 401, "Invalid webhook signature")
        events = self.wait_events(server, "webhook_invalid_signature", len(bad))
        self.assertEqual([e["reason"] for e in events], [r for r, _ in bad])
        self.assertEqual(len(llm.received()), 1, "unsigned alerts never reach the model")
        self.assertNotIn(secret, "\n".join(server.lines))
        # Upper-case hex is the same signature.
        status, _, _ = request(server, "POST", "/v1/webhook", body=body,
                               headers=dict(headers, **{"X-Hancock-Signature": "sha256=" + sign(secret, body)[7:].upper()}))
        self.assertEqual(status, 200)

    def test_webhook_notifies_slack_and_teams(self):
        llm = self.fake_llm(reply="Severity: Critical. Contain dc01 now.")
        slack, teams = self.receiver(), self.receiver()
        server = self.serve(llm, HANCOCK_SLACK_WEBHOOK=slack.url + "/services/T0/B0/secretpath",
                            HANCOCK_TEAMS_WEBHOOK=teams.url + "/webhookb2/secretpath")
        status, headers, doc = self.post(server, "/v1/webhook",
                                         {"alert": "LSASS dump on dc01", "source": "edr", "severity": "Critical"})
        self.assertEqual(status, 200, doc)
        self.assertEqual(doc["notifications"], {"slack": "queued", "teams": "queued"})
        (posted,) = slack.wait_for(1)
        self.assertEqual(posted["path"], "/services/T0/B0/secretpath")
        self.assertEqual(posted["content_type"], "application/json")
        attachment = posted["json"]["attachments"][0]
        self.assertEqual(attachment["color"], "#D0021B")
        self.assertIn("EDR [CRITICAL]", attachment["title"].upper())
        self.assertIn("LSASS dump on dc01", attachment["text"])
        self.assertIn("Contain dc01 now.", attachment["text"])
        (card,) = teams.wait_for(1)
        self.assertEqual(card["json"]["@type"], "MessageCard")
        self.assertEqual(card["json"]["@context"], "https://schema.org/extensions")
        self.assertEqual(card["json"]["themeColor"], "D0021B")
        self.assertIn("Contain dc01 now.", card["json"]["sections"][0]["text"])
        sent = self.wait_events(server, "notify_sent", 2)
        self.assertEqual([(e["target"], e["request_id"]) for e in sent],
                         [("slack", headers["x-request-id"]), ("teams", headers["x-request-id"])])
        # Colours follow the reported severity.
        for n, (severity, colour) in enumerate((("high", "#F5A623"), ("low", "#4A90E2"),
                                                ("whatever", "#9B9B9B")), start=2):
            self.post(server, "/v1/webhook", {"alert": "x", "severity": severity})
            self.assertEqual(slack.wait_for(n)[-1]["json"]["attachments"][0]["color"], colour)

    def test_webhook_notification_failures_are_logged_not_fatal(self):
        llm = self.fake_llm()
        slack = self.receiver(status=500)
        server = self.serve(llm, HANCOCK_SLACK_WEBHOOK=slack.url + "/hooks/secretpath",
                            HANCOCK_TEAMS_WEBHOOK=f"http://127.0.0.1:{free_port()}/secretpath")
        status, headers, doc = self.post(server, "/v1/webhook", {"alert": "x", "severity": "high"})
        self.assertEqual(status, 200, doc)
        self.assertEqual(doc["notifications"], {"slack": "queued", "teams": "queued"})
        events = self.wait_events(server, "notify_failed", 2)
        self.assertEqual([(e["target"], e["level"]) for e in events], [("slack", "ERROR"), ("teams", "ERROR")])
        self.assertEqual(events[0]["status"], 500)
        self.assertIn("error", events[1])
        self.assertEqual({e["request_id"] for e in events}, {headers["x-request-id"]})
        self.assertNotIn("secretpath", "\n".join(server.lines), "webhook URLs are secrets")
        # Notifications go out after the response: a slow receiver does not delay it, and its
        # timeout is logged later.
        slow = self.receiver(delay_ms=4000)
        server2 = self.serve(llm, HANCOCK_SLACK_WEBHOOK=slow.url, HANCOCK_NOTIFY_TIMEOUT_MS=1500)
        started = time.monotonic()
        status, _, doc = self.post(server2, "/v1/webhook", {"alert": "x"})
        self.assertEqual((status, doc["notifications"]), (200, {"slack": "queued"}))
        self.assertLess(time.monotonic() - started, 1.2, "the response did not wait for Slack")
        (failed,) = self.wait_events(server2, "notify_failed", 1)
        self.assertEqual(failed["target"], "slack")
        self.assertGreaterEqual(time.monotonic() - started, 1.4)

    # ---- metrics ---------------------------------------------------------------------------

    def test_model_metrics_after_calls(self):
        llm = self.fake_llm(usage={"prompt_tokens": 100, "completion_tokens": 25, "total_tokens": 125})
        server = self.serve(llm, OLLAMA_CODER_MODEL="coder:m")
        for _ in range(2):
            self.post(server, "/v1/triage", {"alert": "x"})
        self.post(server, "/v1/code", {"task": "x"})
        llm.status = 500
        self.post(server, "/v1/triage", {"alert": "x"})  # failures are timed too
        text = self.metrics(server)
        self.assertEqual(metric_value(text, "hancock_model_response_time_seconds_count",
                                      model="llama3.1:8b", operation="soc"), 3)
        self.assertEqual(metric_value(text, "hancock_model_response_time_seconds_count",
                                      model="coder:m", operation="code"), 1)
        self.assertGreater(metric_value(text, "hancock_model_response_time_seconds_sum",
                                        model="llama3.1:8b", operation="soc"), 0)
        self.assertEqual(metric_value(text, "hancock_llm_tokens_total", model="llama3.1:8b", kind="prompt"), 200)
        self.assertEqual(metric_value(text, "hancock_llm_tokens_total", model="llama3.1:8b", kind="completion"), 50)
        self.assertEqual(metric_value(text, "hancock_llm_tokens_total", model="coder:m", kind="prompt"), 100)
        self.assertIn("# TYPE hancock_llm_tokens_total counter", text)

    # ---- concurrency -----------------------------------------------------------------------

    def test_200_concurrent_chats_overlap(self):
        llm = self.fake_llm(delay_ms=200, reply="slow answer")
        server = self.serve(llm, HANCOCK_LLM_TIMEOUT_MS=30000)
        results = []
        lock = threading.Lock()
        barrier = threading.Barrier(200)

        def one(i):
            barrier.wait()
            try:
                status, _, doc = self.post(server, "/v1/chat", {"message": f"question {i}"})
                outcome = (status, doc.get("response") if isinstance(doc, dict) else doc)
            except Exception as exc:  # recorded, asserted below
                outcome = ("exception", repr(exc))
            with lock:
                results.append(outcome)

        threads = [threading.Thread(target=one, args=(i,)) for i in range(200)]
        started = time.monotonic()
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        wall = time.monotonic() - started
        print(f"\n200 concurrent /v1/chat against a 200 ms backend: {wall:.2f} s wall", flush=True)
        self.assertEqual(len(results), 200)
        self.assertEqual([r for r in results if r != (200, "slow answer")], [])
        self.assertEqual(len(llm.received()), 200)
        self.assertLess(wall, 10.0, "handlers must wait on the backend concurrently (serial: 40 s)")


if __name__ == "__main__":
    unittest.main()
