"""Black-box tests of the LLM observability (docs/llm-observability.md): the repository's scripts/
served by the real binary against fake backends (fakes.py) on 127.0.0.1 — a fake Ollama speaking
its native /api/chat (NDJSON streamed with controlled chunk timing, a final object with Ollama's
own timers) and a fake NIM speaking OpenAI's chat completions. Each metric is checked against
the timing the fake produced or reported: lower bounds are what the fake waited, upper bounds
are wide (a loaded 2-core machine), and values taken from Ollama's timers are exact.
"""
import json
import os
import re
import shutil
import signal
import tempfile
import threading
import time

from fakes import FakeLLM
import harness
from harness import SOURCE_DIR, Server, request

SCRIPTS = os.path.join(os.path.abspath(SOURCE_DIR), "scripts")
SLACK = 1.5  # seconds a loaded machine may add to anything measured

CLEAN_ENV = {name: "" for name in (
    "HANCOCK_API_KEY", "HANCOCK_WEBHOOK_SECRET", "HANCOCK_SLACK_WEBHOOK", "HANCOCK_TEAMS_WEBHOOK",
    "HANCOCK_LLM_BACKEND", "HANCOCK_LLM_TIMEOUT_MS", "HANCOCK_LLM_CONNECT_TIMEOUT_MS",
    "HANCOCK_LLM_HANG_MS", "HANCOCK_LLM_STALL_MS", "HANCOCK_LLM_COLD_START_MS", "OLLAMA_API",
    "HANCOCK_LLM_ERROR_WINDOW_MS", "HANCOCK_LLM_DEGRADED_ERROR_RATIO", "HANCOCK_LLM_DEGRADED_MIN_CALLS",
    "HANCOCK_LLM_COOLDOWN_FAILURES", "HANCOCK_LLM_COOLDOWN_MS", "HANCOCK_LLM_MAX_CONCURRENCY",
    "HANCOCK_RATE_LIMIT", "HANCOCK_RATE_LIMIT_WINDOW", "HANCOCK_NOTIFY_TIMEOUT_MS",
    "OLLAMA_BASE_URL", "OLLAMA_MODEL", "OLLAMA_CODER_MODEL",
    "NVIDIA_BASE_URL", "NVIDIA_API_KEY", "NVIDIA_MODEL", "NVIDIA_CODER_MODEL",
    "OPENAI_BASE_URL", "OPENAI_API_KEY", "OPENAI_MODEL", "OPENAI_CODER_MODEL")}

MODEL = "llama3.1:8b"
NIM_MODEL = "meta/llama-3.1-8b-instruct"


def genai(provider, model, mode, stream, response_model=None):
    return {"gen_ai_operation_name": "chat", "gen_ai_provider_name": provider,
            "gen_ai_request_model": model, "gen_ai_response_model": response_model or model,
            "mode": mode, "stream": "true" if stream else "false"}


class Exposition:
    """A parsed text exposition: value(name, **labels) for one series (None when absent)."""

    LINE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$')

    def __init__(self, text):
        self.series = []
        for line in text.splitlines():
            m = self.LINE.match(line)
            if m and not line.startswith("#"):
                labels = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', m.group(2) or ""))
                self.series.append((m.group(1), labels, float(m.group(3))))

    def value(self, name, **labels):
        want = {k: str(v) for k, v in labels.items()}
        for got_name, got, value in self.series:
            if got_name == name and got == want:
                return value
        return None

    def names(self, name):
        return [labels for got, labels, _ in self.series if got == name]


class LlmObservabilityTest(harness.ServersTestCase):
    # ---- helpers ---------------------------------------------------------------------------

    def fake(self, **kw):
        fake = FakeLLM(**kw)
        self.fakes.append(fake)
        return fake

    def serve(self, llm=None, **env):
        full = dict(CLEAN_ENV, HANCOCK_RATE_LIMIT="100000")
        if llm is not None:
            full["OLLAMA_BASE_URL"] = llm.url
        full.update({k: str(v) for k, v in env.items()})
        server = Server(scripts=SCRIPTS, env=full)
        self.servers.append(server)
        return server

    def scrape(self, server):
        status, _, body = request(server, "GET", "/metrics")
        self.assertEqual(status, 200)
        return Exposition(body.decode())

    def post(self, server, path, body, headers=None):
        status, hdrs, raw = request(server, "POST", path, body=body, headers=headers)
        return status, hdrs, raw

    def histogram(self, exp, name, **labels):
        """(count, sum) of one histogram series, asserting it exists."""
        count = exp.value(name + "_count", **labels)
        total = exp.value(name + "_sum", **labels)
        self.assertIsNotNone(count, f"no {name}{labels}; have {exp.names(name + '_count')}")
        return count, total

    def wait_metric(self, server, name, expected, timeout=8, **labels):
        """Polls /metrics until name{labels} == expected; returns the exposition."""
        deadline = time.monotonic() + timeout
        while True:
            exp = self.scrape(server)
            got = exp.value(name, **labels)
            if got == expected:
                return exp
            if time.monotonic() > deadline:
                self.fail(f"{name}{labels} stayed {got}, expected {expected}")
            time.sleep(0.05)

    def wait_close(self, server, name, expected, timeout=8, **labels):
        """Polls /metrics until name{labels} is expected (to 1e-9); returns the exposition."""
        deadline = time.monotonic() + timeout
        while True:
            exp = self.scrape(server)
            got = exp.value(name, **labels)
            if got is not None and abs(got - expected) < 1e-9:
                return exp
            if time.monotonic() > deadline:
                self.fail(f"{name}{labels} stayed {got}, expected {expected}")
            time.sleep(0.05)

    def state_changes(self, server, backend, at_least=0, timeout=5):
        """The backend's llm_backend_state_changed events, once there are at_least of them."""
        deadline = time.monotonic() + timeout
        while True:
            changes = [e for e in server.events("llm_backend_state_changed") if e["backend"] == backend]
            if len(changes) >= at_least or time.monotonic() > deadline:
                return changes
            time.sleep(0.05)

    def completed(self, server, request_id):
        return server.wait_event("request_completed", predicate=lambda e: e["request_id"] == request_id)

    def in_background(self, fn):
        result = {}

        def run():
            try:
                result["got"] = fn()
            except Exception as exc:  # reported by join
                result["exc"] = exc

        thread = threading.Thread(target=run, daemon=True)
        thread.start()

        def join(timeout=30):
            thread.join(timeout)
            self.assertFalse(thread.is_alive(), "no answer within %ss" % timeout)
            if "exc" in result:
                raise result["exc"]
            return result["got"]
        return join

    # ---- latency split ---------------------------------------------------------------------

    def test_streamed_ollama_latency_split_matches_the_stream(self):
        # Ollama's native API, streamed: 300 ms before the first line, then six words 80 ms
        # apart, then the final object with Ollama's timers (reported, so exact below).
        llm = self.fake(reply="one two three four five six",
                        usage={"prompt_tokens": 11, "completion_tokens": 6})
        llm.delay_ms, llm.stream_gap_ms = 300, 80
        llm.timings = {"load": 1.5, "prefill": 0.05, "decode": 0.4}
        server = self.serve(llm)
        status, headers, raw = self.post(server, "/v1/chat", {"message": "x", "mode": "soc", "stream": True},
                                         headers={"X-Request-ID": "stream-split-0001"})
        self.assertEqual(status, 200)
        events = [json.loads(line[6:]) for line in raw.decode().split("\n\n") if line.startswith("data: ")]
        self.assertEqual(events[-1], {"done": True, "response": "one two three four five six",
                                      "model": MODEL, "mode": "soc"})  # the shape is unchanged
        sent = llm.received()[-1]
        self.assertEqual(sent["path"], "/api/chat")
        self.assertEqual((sent["body"]["stream"], sent["max_tokens"], sent["temperature"]), (True, 1200, 0.4))

        exp = self.scrape(server)
        labels = genai("ollama", MODEL, "soc", True)
        count, ttft = self.histogram(exp, "gen_ai_server_time_to_first_token_seconds", **labels)
        self.assertEqual(count, 1)
        self.assertGreaterEqual(ttft, 0.3)
        self.assertLess(ttft, 0.3 + SLACK)
        # Between the first and the last of six pieces: five gaps of 80 ms, per token after the first.
        count, tpot = self.histogram(exp, "gen_ai_server_time_per_output_token_seconds", **labels)
        self.assertEqual(count, 1)
        self.assertGreaterEqual(tpot, 0.078)
        self.assertLess(tpot, 0.08 + SLACK / 5)
        count, duration = self.histogram(exp, "gen_ai_client_operation_duration_seconds", error_type="", **labels)
        self.assertEqual(count, 1)
        self.assertGreaterEqual(duration, 0.3 + 6 * 0.08)
        self.assertLess(duration, 0.3 + 6 * 0.08 + SLACK)
        self.assertGreaterEqual(duration, ttft + 5 * tpot)
        # Tokens per call, in the conventions' buckets: 11 input tokens are in le=16, not le=4.
        usage = dict(labels, gen_ai_token_type="input")
        self.assertEqual(self.histogram(exp, "gen_ai_client_token_usage", **usage), (1, 11))
        self.assertEqual(exp.value("gen_ai_client_token_usage_bucket", le="16", **usage), 1)
        self.assertEqual(exp.value("gen_ai_client_token_usage_bucket", le="4", **usage), 0)
        usage["gen_ai_token_type"] = "output"
        self.assertEqual(self.histogram(exp, "gen_ai_client_token_usage", **usage), (1, 6))
        # Ollama's own phases, exactly as it reported them; a 1.5 s load is a cold start.
        self.assertEqual(self.histogram(exp, "hancock_llm_load_duration_seconds", model=MODEL), (1, 1.5))
        self.assertEqual(self.histogram(exp, "hancock_llm_prefill_duration_seconds", model=MODEL), (1, 0.05))
        self.assertEqual(self.histogram(exp, "hancock_llm_decode_duration_seconds", model=MODEL), (1, 0.4))
        self.assertAlmostEqual(self.histogram(exp, "hancock_llm_decode_tokens_per_second", model=MODEL)[1], 15, 9)
        self.assertAlmostEqual(self.histogram(exp, "hancock_llm_prefill_tokens_per_second", model=MODEL)[1], 220, 9)
        self.assertEqual(exp.value("hancock_llm_cold_starts_total", model=MODEL), 1)
        self.assertEqual(exp.value("hancock_llm_finish_reasons_total", mode="soc", reason="stop"), 1)
        # The existing families are kept as they were.
        self.assertEqual(exp.value("hancock_model_response_time_seconds_count", model=MODEL, operation="soc"), 1)
        self.assertEqual(exp.value("hancock_llm_tokens_total", model=MODEL, kind="completion"), 6)
        # Per-request truths go to the request's log line, not to labels.
        ev = self.completed(server, "stream-split-0001")
        self.assertAlmostEqual(ev["llm_ttft_ms"], ttft * 1000, delta=0.02)
        self.assertEqual((ev["llm_backend"], ev["llm_model"], ev["llm_calls"], ev["llm_usage_input"],
                          ev["llm_usage_output"], ev["llm_finish_reason"]), ("ollama", MODEL, 1, 11, 6, "stop"))
        self.assertGreaterEqual(ev["llm_backend_ms"], duration * 1000 - 0.02)
        self.assertNotIn("stream-split-0001", "".join(str(labels) for _, labels, _ in exp.series))

    def test_unstreamed_ollama_split_comes_from_its_timers(self):
        # Not streamed: Ollama answers after 600 ms in all, 400 ms of which it reports decoding
        # (seven tokens). The first token came when the call had taken all but the decoding.
        llm = self.fake(reply="an answer")
        llm.delay_ms = 600
        llm.timings = {"load": 0.2, "prefill": 0.1, "decode": 0.4}
        llm.done_reason = "length"
        server = self.serve(llm)
        status, _, raw = self.post(server, "/v1/ask", {"question": "x"}, headers={"X-Request-ID": "unstreamed-0001"})
        self.assertEqual((status, json.loads(raw)), (200, {"answer": "an answer", "model": MODEL, "mode": "auto"}))
        self.assertIs(llm.received()[-1]["body"]["stream"], False)
        exp = self.scrape(server)
        labels = genai("ollama", MODEL, "auto", False)
        count, duration = self.histogram(exp, "gen_ai_client_operation_duration_seconds", error_type="", **labels)
        self.assertEqual(count, 1)
        self.assertGreaterEqual(duration, 0.6)
        count, ttft = self.histogram(exp, "gen_ai_server_time_to_first_token_seconds", **labels)
        self.assertEqual(count, 1)
        self.assertAlmostEqual(ttft, duration - 0.4, delta=1e-6)
        self.assertGreaterEqual(ttft, 0.2)
        count, tpot = self.histogram(exp, "gen_ai_server_time_per_output_token_seconds", **labels)
        self.assertEqual(count, 1)
        self.assertAlmostEqual(tpot, 0.4 / 7, delta=1e-9)
        self.assertEqual(exp.value("hancock_llm_cold_starts_total", model=MODEL), None)  # 0.2 s: warm
        self.assertEqual(exp.value("hancock_llm_finish_reasons_total", mode="auto", reason="length"), 1)
        # Gateway overhead: the request's time not spent waiting on the backend, so at most the
        # request's duration less the 600 ms the backend took.
        count, overhead = self.histogram(exp, "hancock_gateway_overhead_seconds", endpoint="/v1/ask")
        self.assertEqual(count, 1)
        request_total = exp.value("hancock_request_duration_seconds_sum", method="POST", endpoint="/v1/ask",
                                  status_code="200")
        self.assertGreaterEqual(overhead, 0)
        self.assertLessEqual(overhead, request_total - 0.6 + 0.001)
        ev = self.completed(server, "unstreamed-0001")
        self.assertAlmostEqual(ev["gateway_overhead_ms"], overhead * 1000, delta=0.02)
        self.assertAlmostEqual(ev["llm_ttft_ms"], ttft * 1000, delta=0.02)
        # A failed call is timed with its error type; it has no first token.
        llm.delay_ms, llm.status = 0, 503
        status, _, _ = self.post(server, "/v1/ask", {"question": "x"})
        self.assertEqual(status, 502)
        exp = self.scrape(server)
        self.assertEqual(exp.value("gen_ai_client_operation_duration_seconds_count", error_type="503", **labels), 1)
        self.assertEqual(exp.value("gen_ai_server_time_to_first_token_seconds_count", **labels), 1)

    def test_nim_keeps_the_openai_path_and_bounds_model_labels(self):
        nim = self.fake(reply="nim says this", usage={"prompt_tokens": 5, "completion_tokens": 3})
        server = self.serve(HANCOCK_LLM_BACKEND="nvidia", NVIDIA_BASE_URL=nim.url + "/v1", NVIDIA_API_KEY="nv-key")
        nim.delay_ms = 250
        status, _, raw = self.post(server, "/v1/ask", {"question": "x"})
        self.assertEqual(status, 200, raw)
        self.assertEqual(nim.received()[-1]["path"], "/v1/chat/completions")
        exp = self.scrape(server)
        plain = genai("nvidia", NIM_MODEL, "auto", False)
        count, duration = self.histogram(exp, "gen_ai_client_operation_duration_seconds", error_type="", **plain)
        self.assertEqual(count, 1)
        self.assertGreaterEqual(duration, 0.25)
        # Not streamed, an OpenAI-compatible answer says nothing of its first token: none recorded.
        self.assertIsNone(exp.value("gen_ai_server_time_to_first_token_seconds_count", **plain))
        self.assertEqual(self.histogram(exp, "gen_ai_client_token_usage", gen_ai_token_type="output", **plain), (1, 3))
        self.assertEqual(exp.names("hancock_llm_load_duration_seconds_count"), [])  # Ollama's timers only
        # Streamed: the first token is seen arriving (250 ms), the answer names a dated snapshot
        # of the model (kept as the response model); one naming another model counts as "other".
        nim.response_model = NIM_MODEL + "-2024-07-18"
        nim.stream_gap_ms = 50
        status, _, raw = self.post(server, "/v1/chat", {"message": "x", "stream": True})
        self.assertEqual(status, 200)
        self.assertIn(b'"done":true', raw)
        nim.response_model = "a-model-nobody-asked-for"
        self.post(server, "/v1/chat", {"message": "x", "stream": True})
        exp = self.scrape(server)
        streamed = genai("nvidia", NIM_MODEL, "auto", True, NIM_MODEL + "-2024-07-18")
        count, ttft = self.histogram(exp, "gen_ai_server_time_to_first_token_seconds", **streamed)
        self.assertEqual(count, 1)
        self.assertGreaterEqual(ttft, 0.25)
        self.assertLess(ttft, 0.25 + SLACK)
        # three words, 50 ms apart: two gaps over the two tokens after the first
        count, tpot = self.histogram(exp, "gen_ai_server_time_per_output_token_seconds", **streamed)
        self.assertGreaterEqual(tpot, 0.048)
        other = genai("nvidia", NIM_MODEL, "auto", True, "other")
        self.assertEqual(exp.value("gen_ai_client_operation_duration_seconds_count", error_type="", **other), 1)
        responses = {labels["gen_ai_response_model"] for labels in exp.names("gen_ai_client_operation_duration_seconds_count")}
        self.assertEqual(responses, {NIM_MODEL, NIM_MODEL + "-2024-07-18", "other"})

    def test_ollama_api_openai_keeps_the_compatible_endpoint(self):
        llm = self.fake(reply="compatible")
        server = self.serve(llm, OLLAMA_API="openai")
        status, _, raw = self.post(server, "/v1/ask", {"question": "x"})
        self.assertEqual((status, json.loads(raw)["answer"]), (200, "compatible"))
        self.assertEqual(llm.received()[-1]["path"], "/v1/chat/completions")
        exp = self.scrape(server)
        self.assertEqual(exp.value("gen_ai_client_operation_duration_seconds_count", error_type="",
                                   **genai("ollama", MODEL, "auto", False)), 1)
        self.assertEqual(exp.names("hancock_llm_decode_duration_seconds_count"), [])  # no Ollama timers there
        bad = Server(scripts=SCRIPTS, env=dict(CLEAN_ENV, OLLAMA_API="grpc"), wait=False)
        bad.proc.wait(timeout=10)
        self.assertEqual(bad.stop(), 1)
        self.assertIn("OLLAMA_API must be native or openai", bad.stderr + "\n".join(bad.lines))

    # ---- concurrency: in flight, queued, admission cap --------------------------------------

    def test_admission_cap_holds_the_backend_to_its_slots_and_queues_the_rest(self):
        # One slot for the whole process, whatever the worker count: the second call waits in
        # a queue until the first ends, then runs; the backend never sees two at once.
        llm = self.fake(reply="one at a time")
        llm.hold = threading.Event()
        self.addCleanup(llm.hold.set)
        server = self.serve(llm, HANCOCK_LLM_MAX_CONCURRENCY="1")
        first = self.in_background(lambda: self.post(server, "/v1/ask", {"question": "a"}))
        self.wait_metric(server, "hancock_llm_requests_in_flight", 1, backend="ollama")
        second = self.in_background(lambda: self.post(server, "/v1/ask", {"question": "b"}))
        exp = self.wait_metric(server, "hancock_llm_requests_queued", 1, backend="ollama")
        queued_at = time.monotonic()
        self.assertEqual(exp.value("hancock_llm_requests_in_flight", backend="ollama"), 1)
        # A client that leaves while queued gives its place back.
        body = json.dumps({"question": "c"}).encode()
        sock = server.connect()
        sock.sendall(b"POST /v1/ask HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
        self.wait_metric(server, "hancock_llm_requests_queued", 2, backend="ollama")
        sock.close()
        self.wait_metric(server, "hancock_llm_requests_queued", 1, backend="ollama")
        self.assertEqual(len(llm.received()), 1, "the queued calls must not reach the backend")
        llm.hold.set()
        released_at = time.monotonic()
        self.assertEqual(first()[0], 200)
        self.assertEqual(second()[0], 200)
        self.assertEqual(llm.max_active, 1)
        exp = self.wait_metric(server, "hancock_llm_requests_in_flight", 0, backend="ollama")
        self.assertEqual(exp.value("hancock_llm_requests_queued", backend="ollama"), 0)
        count, waited = self.histogram(exp, "hancock_llm_queue_wait_seconds", backend="ollama")
        self.assertEqual(count, 2)
        self.assertGreaterEqual(waited, released_at - queued_at)  # the second waited at least that
        self.assertLess(waited, released_at - queued_at + 0.3 + SLACK)
        self.assertEqual(exp.value("hancock_llm_queue_wait_seconds_bucket", backend="ollama", le="0.001"), 1)

    def test_admission_refusals_are_429_or_503_with_retry_after(self):
        # One worker, so that its queue (one place) is the one every request meets.
        llm = self.fake(reply="busy")
        llm.hold = threading.Event()
        self.addCleanup(llm.hold.set)
        full = dict(CLEAN_ENV, HANCOCK_RATE_LIMIT="100000", OLLAMA_BASE_URL=llm.url,
                    HANCOCK_LLM_MAX_CONCURRENCY="ollama=1", HANCOCK_LLM_QUEUE_TIMEOUT_MS="500",
                    HANCOCK_LLM_MAX_QUEUE="1")
        server = Server(scripts=SCRIPTS, env=full, args=("--workers", "1"))
        self.servers.append(server)
        holder = self.in_background(lambda: self.post(server, "/v1/ask", {"question": "a"}))
        self.wait_metric(server, "hancock_llm_requests_in_flight", 1, backend="ollama")
        started = time.monotonic()
        waiter = self.in_background(lambda: self.post(server, "/v1/ask", {"question": "b"}))
        self.wait_metric(server, "hancock_llm_requests_queued", 1, backend="ollama")
        # The queue is full: refused at once, 429.
        status, headers, raw = self.post(server, "/v1/triage", {"alert": "c"})
        doc = json.loads(raw)
        self.assertEqual((status, doc["error"], headers.get("retry-after")), (429, "model backend queue full", "1"))
        self.assertEqual(doc["request_id"], headers["x-request-id"])
        self.assertIn("x-ratelimit-limit", headers)
        # The queued one gives up after 500 ms: 503.
        status, headers, raw = waiter()
        self.assertEqual((status, json.loads(raw)["error"], headers.get("retry-after")),
                         (503, "model backend busy", "1"))
        self.assertGreaterEqual(time.monotonic() - started, 0.5)
        llm.hold.set()
        self.assertEqual(holder()[0], 200)
        exp = self.scrape(server)
        self.assertEqual(exp.value("hancock_llm_admission_refused_total", backend="ollama", reason="queue_full"), 1)
        self.assertEqual(exp.value("hancock_llm_admission_refused_total", backend="ollama", reason="queue_timeout"), 1)
        self.assertEqual(exp.value("hancock_llm_requests_queued", backend="ollama"), 0)
        self.assertEqual(len(llm.received()), 1)  # refused calls never reached the backend
        # The slot is free again: the next call runs at once.
        status, headers, _ = self.post(server, "/v1/ask", {"question": "d"})
        self.assertEqual((status, headers.get("retry-after")), (200, None))

    # ---- cost ------------------------------------------------------------------------------

    def test_cost_follows_the_price_table_and_its_reload(self):
        scripts = tempfile.mkdtemp(prefix="hancock-prices-")
        self.addCleanup(shutil.rmtree, scripts, True)
        shutil.copytree(SCRIPTS, scripts, dirs_exist_ok=True)
        prices = os.path.join(scripts, "prices.lua")

        def write_prices(entry):
            with open(prices, "w") as f:
                f.write('local llm = require "hancock.llm"\nllm.prices { currency = "EUR", ["%s"] = %s }\n'
                        % (MODEL, entry))

        write_prices("{ input = 2, output = 10 }")  # per million tokens
        llm = self.fake(reply="priced", usage={"prompt_tokens": 11, "completion_tokens": 7})
        llm.timings = {"load": 0.1, "prefill": 0.2, "decode": 0.3}
        full = dict(CLEAN_ENV, HANCOCK_RATE_LIMIT="100000", OLLAMA_BASE_URL=llm.url, OLLAMA_CODER_MODEL="coder:m")
        server = Server(scripts=scripts, env=full)
        self.servers.append(server)
        status, _, _ = self.post(server, "/v1/ask", {"question": "x"}, headers={"X-Request-ID": "priced-call-0001"})
        self.assertEqual(status, 200)
        self.post(server, "/v1/code", {"task": "x"})  # the coder model has no price
        exp = self.scrape(server)
        cost = (11 * 2 + 7 * 10) / 1e6
        self.assertAlmostEqual(exp.value("hancock_llm_cost_total", model=MODEL, mode="auto", currency="EUR"), cost, 12)
        self.assertEqual(exp.value("hancock_llm_unpriced_calls_total", model="coder:m", reason="no_price"), 1)
        self.assertIsNone(exp.value("hancock_llm_cost_total", model="coder:m", mode="code", currency="EUR"))
        # Compute seconds of the local model: Ollama's total_duration, as reported.
        self.assertAlmostEqual(exp.value("hancock_llm_compute_seconds_total", model=MODEL, mode="auto"), 0.6, 9)
        self.assertAlmostEqual(exp.value("hancock_llm_compute_seconds_total", model="coder:m", mode="code"), 0.6, 9)
        ev = self.completed(server, "priced-call-0001")
        self.assertAlmostEqual(ev["llm_cost"], cost, 12)
        self.assertEqual(ev["llm_currency"], "EUR")
        # A new table applies once the scripts reload: now priced by the second of compute.
        write_prices("{ per_second = 0.5 }")
        server.proc.send_signal(signal.SIGHUP)
        server.wait_event("reload_succeeded", predicate=lambda e: e["trigger"] == "SIGHUP")
        self.post(server, "/v1/ask", {"question": "x"})
        exp = self.scrape(server)
        self.assertAlmostEqual(exp.value("hancock_llm_cost_total", model=MODEL, mode="auto", currency="EUR"),
                               cost + 0.6 * 0.5, 9)
        # A table the scripts get wrong stops the reload, and the old one keeps pricing.
        write_prices("{ input = -1, output = 2 }")
        server.proc.send_signal(signal.SIGHUP)
        failed = server.wait_event("reload_failed")
        self.assertIn("must be a finite number, 0 or more", json.dumps(failed))

    # ---- backends, fallbacks, quality, residency -------------------------------------------

    def test_fallback_is_counted_and_the_backend_named(self):
        primary = self.fake(reply="from ollama")
        openai = self.fake(reply="from openai")
        server = self.serve(primary, OPENAI_BASE_URL=openai.url, OPENAI_API_KEY="sk-test", OPENAI_MODEL="gpt-fake")
        status, headers, _ = self.post(server, "/v1/ask", {"question": "x"})
        self.assertEqual((status, headers.get("x-hancock-backend")), (200, "ollama"))
        primary.status = 503
        status, headers, raw = self.post(server, "/v1/ask", {"question": "x"}, headers={"X-Request-ID": "fell-back-0001"})
        self.assertEqual((status, json.loads(raw)["answer"], headers.get("x-hancock-backend")),
                         (200, "from openai", "openai"))
        openai.status = 500
        status, headers, _ = self.post(server, "/v1/ask", {"question": "x"})
        self.assertEqual((status, headers.get("x-hancock-backend")), (502, "openai"))
        exp = self.scrape(server)
        self.assertEqual(exp.value("hancock_llm_fallbacks_total", reason="503", outcome="ok",
                                   **{"from": "ollama", "to": "openai"}), 1)
        self.assertEqual(exp.value("hancock_llm_fallbacks_total", reason="503", outcome="failed",
                                   **{"from": "ollama", "to": "openai"}), 1)
        # The fallback's calls are its own: provider openai, its model.
        self.assertEqual(exp.value("gen_ai_client_operation_duration_seconds_count", error_type="",
                                   **genai("openai", "gpt-fake", "auto", False)), 1)
        self.assertEqual(exp.value("gen_ai_client_operation_duration_seconds_count", error_type="503",
                                   **genai("ollama", MODEL, "auto", False)), 2)
        ev = self.completed(server, "fell-back-0001")
        self.assertEqual((ev["llm_calls"], ev["llm_backend"], ev["llm_model"]), (2, "openai", "gpt-fake"))
        # An empty answer is counted per mode and backend (and not retried elsewhere).
        primary.status, primary.empty = 200, True
        status, _, _ = self.post(server, "/v1/triage", {"alert": "x"})
        self.assertEqual(status, 502)
        self.assertEqual(self.scrape(server).value("hancock_llm_empty_answers_total", mode="soc", backend="ollama"), 1)

    def test_backend_state_degrades_cools_down_and_recovers(self):
        primary = self.fake(reply="from ollama")
        primary.tags = [MODEL, "qwen2.5-coder:7b"]  # its health probe passes
        openai = self.fake(reply="from openai")
        server = self.serve(primary, OPENAI_BASE_URL=openai.url, OPENAI_API_KEY="sk-test", OPENAI_MODEL="gpt-fake",
                            HANCOCK_LLM_COOLDOWN_FAILURES=2, HANCOCK_LLM_COOLDOWN_MS=3000,
                            HANCOCK_HEALTH_INTERVAL_MS=100)
        self.wait_metric(server, "hancock_llm_backend_state", 0, backend="ollama")
        # OpenAI's probe (GET /v1/models) gets a 404 from its fake: degraded by its probe.
        self.wait_metric(server, "hancock_llm_backend_state", 1, backend="openai")
        # One failure: degraded; two in a row: cooldown, and the next call skips Ollama.
        primary.status = 503
        self.assertEqual(self.post(server, "/v1/ask", {"question": "x"})[0], 200)
        self.wait_metric(server, "hancock_llm_backend_state", 1, backend="ollama")
        self.assertEqual(self.post(server, "/v1/ask", {"question": "x"})[0], 200)
        cooling_since = time.monotonic()
        cooled = server.wait_event("llm_backend_cooldown")
        self.assertEqual((cooled["backend"], cooled["failures"], cooled["to"]), ("ollama", 2, "openai"))
        self.wait_metric(server, "hancock_llm_backend_state", 2, backend="ollama")
        asked = len(primary.received())
        status, headers, raw = self.post(server, "/v1/ask", {"question": "x"})
        self.assertEqual((status, json.loads(raw)["answer"], headers.get("x-hancock-backend")),
                         (200, "from openai", "openai"))
        self.assertEqual(len(primary.received()), asked, "a backend cooling down is not called")
        exp = self.scrape(server)
        self.assertEqual(exp.value("hancock_llm_fallbacks_total", reason="cooldown", outcome="ok",
                                   **{"from": "ollama", "to": "openai"}), 1)
        self.assertEqual(exp.value("hancock_llm_fallbacks_total", reason="503", outcome="ok",
                                   **{"from": "ollama", "to": "openai"}), 2)
        # The cooldown ends; Ollama answers again: its failures are forgotten, calls go to it.
        primary.status = 200
        time.sleep(max(0, cooling_since + 3.0 - time.monotonic()) + 0.05)
        status, headers, _ = self.post(server, "/v1/ask", {"question": "x"})
        self.assertEqual((status, headers.get("x-hancock-backend")), (200, "ollama"))
        self.wait_metric(server, "hancock_llm_backend_state", 0, backend="ollama")

    def test_error_ratio_degrades_the_backend_until_it_falls_or_the_window_passes(self):
        # Every second call answers 500. With a ratio of 0.3 from 2 calls on, the ratio holds
        # from the first failure on (1/2, 1/3, 2/4, 2/5, …), so whenever the state is judged the
        # reason is the ratio, never a failure in a row alone: the log is the same every run.
        window = 4.0
        llm = self.fake(reply="sometimes")
        llm.tags = [MODEL, "qwen2.5-coder:7b"]  # its health probe passes
        llm.fail_every = 2
        server = self.serve(llm, HANCOCK_LLM_ERROR_WINDOW_MS=int(window * 1000),
                            HANCOCK_LLM_DEGRADED_ERROR_RATIO="0.3", HANCOCK_LLM_DEGRADED_MIN_CALLS=2)
        self.wait_metric(server, "hancock_llm_backend_state", 0, backend="ollama")
        self.assertEqual(self.scrape(server).value("hancock_llm_backend_error_ratio", backend="ollama"), 0)

        def burst(calls):
            return [self.post(server, "/v1/ask", {"question": "x"})[0] for _ in range(calls)]

        # Nine calls, the last a success (so no failure in a row): 4 of 9 failed.
        first_call = time.monotonic()
        self.assertEqual(burst(9), [200, 502] * 4 + [200])
        self.assertEqual((llm.chat_calls, llm.chat_failures), (9, 4))
        self.wait_close(server, "hancock_llm_backend_error_ratio", 4 / 9, backend="ollama")
        self.wait_metric(server, "hancock_llm_backend_state", 1, backend="ollama")
        changes = self.state_changes(server, "ollama", at_least=1)
        self.assertEqual([(e["from"], e["to"], e["reason"], e["level"]) for e in changes],
                         [("ok", "degraded", "error_ratio", "WARNING")])
        self.assertGreaterEqual(changes[0]["error_ratio"], 0.3)
        self.assertGreaterEqual(changes[0]["window_calls"], 2)
        # The errors stop and no call comes: the window forgets them. The burst counts whole for
        # a window after its first call and fades out over the next (calls below the minimum
        # first: ok), so the ratio is 0 (no call) two windows after the burst, not before.
        llm.fail_every = 0
        self.wait_metric(server, "hancock_llm_backend_state", 0, backend="ollama", timeout=2 * window + 4)
        self.wait_metric(server, "hancock_llm_backend_error_ratio", 0, backend="ollama", timeout=2 * window + 4)
        self.assertGreaterEqual(time.monotonic() - first_call, 2 * window)
        changes = self.state_changes(server, "ollama", at_least=2)
        self.assertEqual([(e["from"], e["to"], e["reason"]) for e in changes],
                         [("ok", "degraded", "error_ratio"), ("degraded", "ok", "error_ratio")])
        self.assertEqual(changes[1]["level"], "INFO")
        # Errors again, then successes only: the ratio falls below 0.3 at 4 of 14 and the state
        # returns to ok then, inside the window (which counts these calls whole, exactly).
        llm.fail_every, llm.chat_calls, llm.chat_failures = 2, 0, 0
        self.assertEqual(burst(9), [200, 502] * 4 + [200])
        self.wait_metric(server, "hancock_llm_backend_state", 1, backend="ollama")
        llm.fail_every = 0
        self.assertEqual(burst(4), [200] * 4)  # 4 of 13: 0.308, still degraded
        self.assertEqual(burst(1), [200])
        self.assertEqual((llm.chat_calls, llm.chat_failures), (14, 4))
        exp = self.wait_metric(server, "hancock_llm_backend_state", 0, backend="ollama")
        self.assertAlmostEqual(exp.value("hancock_llm_backend_error_ratio", backend="ollama"), 4 / 14, places=9)
        changes = self.state_changes(server, "ollama", at_least=4)
        self.assertEqual([(e["from"], e["to"], e["reason"]) for e in changes[2:]],
                         [("ok", "degraded", "error_ratio"), ("degraded", "ok", "error_ratio")])
        self.assertAlmostEqual(changes[3]["error_ratio"], round(4 / 14, 4), places=9)
        self.assertEqual(changes[3]["window_calls"], 14)

    def test_error_ratio_below_the_minimum_calls_changes_nothing(self):
        # Defaults but for the minimum (4): 1 of 3 failed is a ratio above 0.25 over too few calls.
        llm = self.fake(reply="sometimes")
        llm.tags = [MODEL, "qwen2.5-coder:7b"]
        llm.fail_every = 2
        server = self.serve(llm, HANCOCK_LLM_ERROR_WINDOW_MS=30000, HANCOCK_LLM_DEGRADED_MIN_CALLS=4)
        statuses = [self.post(server, "/v1/ask", {"question": "x"})[0] for _ in range(3)]
        self.assertEqual(statuses, [200, 502, 200])
        self.wait_close(server, "hancock_llm_backend_error_ratio", 1 / 3, backend="ollama")
        self.wait_metric(server, "hancock_llm_backend_state", 0, backend="ollama")
        # (A tick between the failure and the next success sees a failure in a row: that alone.)
        self.assertEqual([e for e in self.state_changes(server, "ollama") if e["reason"] != "failures"], [])
        # The fourth call reaches the minimum: 2 of 4 failed, degraded by the ratio.
        statuses = [self.post(server, "/v1/ask", {"question": "x"})[0] for _ in range(2)]
        self.assertEqual(statuses, [502, 200])
        self.wait_close(server, "hancock_llm_backend_error_ratio", 2 / 5, backend="ollama")
        self.wait_metric(server, "hancock_llm_backend_state", 1, backend="ollama")
        degraded = server.wait_event("llm_backend_state_changed", predicate=lambda e: e["reason"] == "error_ratio")
        self.assertEqual((degraded["backend"], degraded["from"], degraded["to"]), ("ollama", "ok", "degraded"))
        # judged after the fourth call (2 of 4) or after the fifth (2 of 5)
        self.assertIn((degraded["error_ratio"], degraded["window_calls"]), {(0.5, 4), (0.4, 5)})

    def test_error_ratio_counts_concurrent_calls_exactly(self):
        # Forty calls from eight clients at once, spread over the workers, every fourth answered
        # 500: each worker counts in a lane of its own, so none is lost and the ratio is 10 / 40.
        llm = self.fake(reply="busy")
        llm.tags = [MODEL, "qwen2.5-coder:7b"]
        llm.fail_every, llm.delay_ms = 4, 20
        server = self.serve(llm, HANCOCK_LLM_ERROR_WINDOW_MS=30000)
        clients = [self.in_background(lambda: [self.post(server, "/v1/ask", {"question": "x"})[0] for _ in range(5)])
                   for _ in range(8)]
        statuses = [status for join in clients for status in join()]
        self.assertEqual((statuses.count(200), statuses.count(502)), (30, 10))
        self.assertEqual((llm.chat_calls, llm.chat_failures), (40, 10))
        self.wait_close(server, "hancock_llm_backend_error_ratio", 10 / 40, backend="ollama")
        self.wait_metric(server, "hancock_llm_backend_state", 1, backend="ollama")  # 0.25 is the default threshold

    def test_error_ratio_settings_are_checked_at_load(self):
        for name, value, message in (
                ("HANCOCK_LLM_ERROR_WINDOW_MS", "1m", "HANCOCK_LLM_ERROR_WINDOW_MS must be a whole number of "
                                                      "milliseconds from 1000 to 86400000, not '1m'"),
                ("HANCOCK_LLM_ERROR_WINDOW_MS", "500", "from 1000 to 86400000, not '500'"),
                ("HANCOCK_LLM_DEGRADED_ERROR_RATIO", "25%", "HANCOCK_LLM_DEGRADED_ERROR_RATIO must be a fraction "
                                                            "of calls above 0 and at most 1"),
                ("HANCOCK_LLM_DEGRADED_ERROR_RATIO", "1.5", "at most 1 (0.25: a quarter of them failed), not '1.5'"),
                ("HANCOCK_LLM_DEGRADED_ERROR_RATIO", "0", "not '0'"),
                ("HANCOCK_LLM_DEGRADED_MIN_CALLS", "0", "HANCOCK_LLM_DEGRADED_MIN_CALLS must be a whole number "
                                                        "of calls, 1 or more, not '0'"),
                ("HANCOCK_LLM_DEGRADED_MIN_CALLS", "2.5", "1 or more, not '2.5'")):
            with self.subTest(name=name, value=value):
                bad = Server(scripts=SCRIPTS, env=dict(CLEAN_ENV, **{name: value}), wait=False)
                bad.proc.wait(timeout=10)
                self.assertEqual(bad.stop(), 1)
                self.assertIn(message, bad.stderr + "\n".join(bad.lines))

    def test_prompt_version_follows_the_scripts(self):
        scripts = tempfile.mkdtemp(prefix="hancock-prompts-")
        self.addCleanup(shutil.rmtree, scripts, True)
        shutil.copytree(SCRIPTS, scripts, dirs_exist_ok=True)
        llm = self.fake(reply="versioned")
        server = Server(scripts=scripts, env=dict(CLEAN_ENV, HANCOCK_RATE_LIMIT="100000", OLLAMA_BASE_URL=llm.url))
        self.servers.append(server)
        self.post(server, "/v1/triage", {"alert": "x"}, headers={"X-Request-ID": "prompt-before-01"})
        first = self.completed(server, "prompt-before-01")["llm_prompt_version"]
        self.assertRegex(first, r"^[0-9a-f]{8}$")
        self.wait_metric(server, "hancock_llm_prompt_info", 1, mode="soc", prompt_version=first)
        # Another SOC prompt, reloaded: a new version is loaded, the old one drops to 0, and the
        # other modes keep theirs.
        auto_before = [l["prompt_version"] for l in self.scrape(server).names("hancock_llm_prompt_info")
                       if l["mode"] == "auto"]
        modes = os.path.join(scripts, "modes.lua")
        with open(modes) as f:
            text = f.read()
        with open(modes, "w") as f:
            f.write(text.replace("You are Hancock in SOC mode", "You are Hancock in SOC mode, terse,"))
        server.proc.send_signal(signal.SIGHUP)
        server.wait_event("reload_succeeded", predicate=lambda e: e["trigger"] == "SIGHUP")
        self.post(server, "/v1/triage", {"alert": "x"}, headers={"X-Request-ID": "prompt-after-001"})
        second = self.completed(server, "prompt-after-001")["llm_prompt_version"]
        self.assertNotEqual(second, first)
        exp = self.wait_metric(server, "hancock_llm_prompt_info", 1, mode="soc", prompt_version=second)
        self.assertEqual(exp.value("hancock_llm_prompt_info", mode="soc", prompt_version=first), 0)
        self.assertEqual([l["prompt_version"] for l in exp.names("hancock_llm_prompt_info") if l["mode"] == "auto"],
                         auto_before)

    def test_residency_comes_from_api_ps_once_per_process(self):
        llm = self.fake()
        big = {"name": MODEL, "model": MODEL, "size": 6 * 1024 ** 3, "size_vram": 4 * 1024 ** 3, "context_length": 8192}
        coder = {"name": "qwen2.5-coder:7b", "model": "qwen2.5-coder:7b", "size": 5 * 1024 ** 3, "size_vram": 5 * 1024 ** 3}
        llm.ps_models = [big, coder]
        started = time.monotonic()
        server = self.serve(llm, HANCOCK_HEALTH_INTERVAL_MS=100)
        exp = self.wait_metric(server, "hancock_llm_model_loaded", 1, model=MODEL)
        self.assertEqual(exp.value("hancock_llm_model_size_bytes", model=MODEL), 6 * 1024 ** 3)
        self.assertEqual(exp.value("hancock_llm_model_vram_bytes", model=MODEL), 4 * 1024 ** 3)
        self.assertEqual(exp.value("hancock_llm_model_context_length", model=MODEL), 8192)
        self.assertEqual(exp.value("hancock_llm_model_vram_bytes", model="qwen2.5-coder:7b"), 5 * 1024 ** 3)
        self.assertIsNone(exp.value("hancock_llm_model_context_length", model="qwen2.5-coder:7b"))
        # Unloaded: 0, and its sizes stay as last seen (the alert requires loaded == 1).
        llm.ps_models = [coder]
        exp = self.wait_metric(server, "hancock_llm_model_loaded", 0, model=MODEL)
        self.assertEqual(exp.value("hancock_llm_model_loaded", model="qwen2.5-coder:7b"), 1)
        # One poller for the process, however many workers: about one poll per interval.
        elapsed = time.monotonic() - started
        self.assertLessEqual(llm.ps_calls, elapsed / 0.1 + 2)

    # ---- trace context ---------------------------------------------------------------------

    def test_trace_context_is_accepted_or_started_and_the_backend_gets_our_child(self):
        primary = self.fake(reply="traced", status=503)
        openai = self.fake(reply="traced")
        server = self.serve(primary, OPENAI_BASE_URL=openai.url, OPENAI_API_KEY="sk-test")
        trace, caller_span = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
        status, headers, _ = self.post(server, "/v1/ask", {"question": "x"},
                                       headers={"traceparent": f"00-{trace}-{caller_span}-01"})
        self.assertEqual(status, 200)
        rid = headers["x-request-id"]
        done = self.completed(server, rid)
        self.assertEqual((done["trace_id"], done["parent_span_id"]), (trace, caller_span))
        self.assertRegex(done["span_id"], r"^[0-9a-f]{16}$")
        # Each backend call is a child span of ours: same trace, its own span id, the caller's flags.
        sent = [primary.received()[-1]["traceparent"], openai.received()[-1]["traceparent"]]
        spans = set()
        for value in sent:
            version, got_trace, span, flags = value.split("-")
            self.assertEqual((version, got_trace, flags), ("00", trace, "01"))
            self.assertNotIn(span, (caller_span, done["span_id"]))
            spans.add(span)
        self.assertEqual(len(spans), 2, "one span per call")
        # Every line of the request carries its trace id: the core's and the scripts' alike.
        lines = [e for e in server.events() if e.get("request_id") == rid]
        self.assertTrue({"request_started", "llm_request_failed", "llm_fallback", "request_completed"}
                        <= {e["event"] for e in lines}, lines)
        self.assertEqual({e.get("trace_id") for e in lines}, {trace})
        # Several entries joined with commas: the first counts, for the core and the scripts alike.
        primary.status = 200
        other = "0af7651916cd43dd8448eb211c80319c"
        status, headers, _ = self.post(server, "/v1/ask", {"question": "x"}, headers={
            "traceparent": f"00-{other}-b7ad6b7169203331-00 , 00-{trace}-{caller_span}-01"})
        started = server.wait_event("request_started", predicate=lambda e: e["request_id"] == headers["x-request-id"])
        self.assertEqual(started["trace_id"], other)
        self.assertEqual(primary.received()[-1]["traceparent"].split("-")[1::2], [other, "00"])
        # No (or an invalid) traceparent: a trace is started, named alike by the core and the
        # scripts — from the request id, whether the server made it or the client sent it.
        for extra in ({}, {"X-Request-ID": "client-chosen-id-7"},
                      {"traceparent": "00-00000000000000000000000000000000-00f067aa0ba902b7-01"}):
            status, headers, _ = self.post(server, "/v1/ask", {"question": "x"}, headers=extra)
            rid = headers["x-request-id"]
            started = server.wait_event("request_started", predicate=lambda e, r=rid: e["request_id"] == r)
            done = self.completed(server, rid)
            self.assertRegex(started["trace_id"], r"^[0-9a-f]{32}$")
            self.assertEqual(done["trace_id"], started["trace_id"])
            self.assertNotIn("parent_span_id", done)
            self.assertEqual(primary.received()[-1]["traceparent"].split("-")[1], started["trace_id"])
            if "X-Request-ID" not in extra:
                self.assertEqual(started["trace_id"], rid.replace("-", ""))

    def test_latency_histograms_carry_the_request_and_trace_as_exemplars(self):
        llm = self.fake(reply="one two three four five")
        server = self.serve(llm)
        trace = "4bf92f3577b34da6a3ce929d0e0e4736"
        status, headers, _ = self.post(server, "/v1/ask", {"question": "x", "stream": True},
                                       headers={"traceparent": f"00-{trace}-00f067aa0ba902b7-01",
                                                "X-Request-ID": "exemplar-req-1"})
        self.assertEqual(status, 200)
        self.completed(server, "exemplar-req-1")
        status, _, body = request(server, "GET", "/metrics",
                                  headers={"Accept": "application/openmetrics-text; version=1.0.0"})
        self.assertEqual(status, 200)
        found = {}
        for line in body.decode().splitlines():
            name = line.split("{", 1)[0]
            if " # {" in line and name in ("gen_ai_client_operation_duration_seconds_bucket",
                                           "gen_ai_server_time_to_first_token_seconds_bucket",
                                           "gen_ai_server_time_per_output_token_seconds_bucket"):
                found[name] = line.split(" # ", 1)[1]
        self.assertEqual(set(found), {"gen_ai_client_operation_duration_seconds_bucket",
                                      "gen_ai_server_time_to_first_token_seconds_bucket",
                                      "gen_ai_server_time_per_output_token_seconds_bucket"}, found)
        for name, exemplar in found.items():
            self.assertIn('request_id="exemplar-req-1"', exemplar, name)
            self.assertIn(f'trace_id="{trace}"', exemplar, name)
        # A client's request id too long to sit beside the trace id: the trace id goes alone.
        long_id = "r" * 100
        status, _, _ = self.post(server, "/v1/ask", {"question": "y"}, headers={"X-Request-ID": long_id})
        self.assertEqual(status, 200)
        done = self.completed(server, long_id)
        text = request(server, "GET", "/metrics",
                       headers={"Accept": "application/openmetrics-text; version=1.0.0"})[2].decode()
        exemplars = [line.split(" # ", 1)[1] for line in text.splitlines()
                     if line.startswith("gen_ai_client_operation_duration_seconds_bucket") and " # {" in line]
        self.assertTrue(any(e.startswith('{trace_id="%s"}' % done["trace_id"]) for e in exemplars), exemplars)

    # ---- hangs and stalls ------------------------------------------------------------------

    def test_hanging_call_is_counted_logged_and_released(self):
        llm = self.fake(reply="slow answer")
        server = self.serve(llm, HANCOCK_LLM_HANG_MS=500)
        # A quick call never hangs.
        self.assertEqual(self.post(server, "/v1/ask", {"question": "x"})[0], 200)
        llm.hold = threading.Event()  # the backend answers when the test says so
        started = time.monotonic()
        join = self.in_background(lambda: self.post(server, "/v1/ask", {"question": "x"},
                                                    headers={"X-Request-ID": "hanging-call-0001"}))
        exp = self.wait_metric(server, "hancock_llm_requests_hanging", 1, backend="ollama")
        self.assertGreaterEqual(time.monotonic() - started, 0.5)
        self.assertEqual(exp.value("hancock_llm_requests_in_flight", backend="ollama"), 1)
        ev = server.wait_event("llm_request_hanging")
        self.assertEqual((ev["request_id"], ev["backend"], ev["model"], ev["operation"], ev["level"]),
                         ("hanging-call-0001", "ollama", MODEL, "auto", "WARNING"))
        self.assertGreaterEqual(ev["elapsed_ms"], 500)
        self.assertLess(ev["elapsed_ms"], 500 + SLACK * 1000)
        time.sleep(0.3)  # still hanging: counted once, logged once
        self.assertEqual(self.scrape(server).value("hancock_llm_hangs_total", backend="ollama"), 1)
        llm.hold.set()
        self.assertEqual(join()[0], 200)
        # Released when the call ends (the alert resolves): the gauge is back to 0, the counter keeps it.
        exp = self.wait_metric(server, "hancock_llm_requests_hanging", 0, backend="ollama")
        self.assertEqual(exp.value("hancock_llm_requests_in_flight", backend="ollama"), 0)
        self.assertEqual(exp.value("hancock_llm_hangs_total", backend="ollama"), 1)
        self.assertEqual(len(server.events("llm_request_hanging")), 1, "one event per hanging call")
        # A client that leaves while its call hangs releases it too (the handler is cancelled).
        llm.hold = threading.Event()
        self.addCleanup(llm.hold.set)
        body = json.dumps({"question": "x"}).encode()
        sock = server.connect()
        sock.sendall(b"POST /v1/ask HTTP/1.1\r\nHost: x\r\nX-Request-ID: hanging-call-0002\r\n"
                     b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
        self.wait_metric(server, "hancock_llm_requests_hanging", 1, backend="ollama")
        sock.close()
        exp = self.wait_metric(server, "hancock_llm_requests_in_flight", 0, backend="ollama")
        self.assertEqual(exp.value("hancock_llm_requests_hanging", backend="ollama"), 0)
        self.assertEqual(exp.value("hancock_llm_hangs_total", backend="ollama"), 2)
        self.assertEqual(self.completed(server, "hanging-call-0002")["status"], 499)
        self.assertEqual(len(server.events("llm_request_hanging")), 2)

    def test_stalled_stream_is_counted_and_flows_again(self):
        # Pieces every 30 ms, then silence before the third until the test resumes the stream:
        # a stall past the 400 ms threshold. 600 ms before the first byte is not one (that wait
        # is the time to first token, which hang detection covers).
        llm = self.fake(reply="alpha beta gamma delta")
        resume = threading.Event()
        self.addCleanup(resume.set)
        llm.delay_ms, llm.stream_gap_ms, llm.stream_pause = 600, 30, (2, resume)
        server = self.serve(llm, HANCOCK_LLM_STALL_MS=400)
        started = time.monotonic()
        join = self.in_background(lambda: self.post(server, "/v1/chat", {"message": "x", "stream": True},
                                                    headers={"X-Request-ID": "stalled-stream-01"}))
        exp = self.wait_metric(server, "hancock_llm_streams_stalled", 1, backend="ollama")
        self.assertGreaterEqual(time.monotonic() - started, 0.6 + 0.03 + 0.4)
        self.assertEqual(exp.value("hancock_llm_requests_hanging", backend="ollama"), 0)  # 60 s default
        ev = server.wait_event("llm_stream_stalled")
        self.assertEqual((ev["request_id"], ev["chunks"]), ("stalled-stream-01", 2))
        self.assertGreaterEqual(ev["silent_ms"], 400)
        self.assertLess(ev["silent_ms"], 400 + SLACK * 1000)
        time.sleep(0.5)
        resume.set()
        status, _, raw = join()
        self.assertEqual(status, 200)
        events = [json.loads(line[6:]) for line in raw.decode().split("\n\n") if line.startswith("data: ")]
        self.assertEqual(events[-1]["response"], "alpha beta gamma delta")  # nothing lost
        exp = self.wait_metric(server, "hancock_llm_streams_stalled", 0, backend="ollama")
        self.assertEqual(exp.value("hancock_llm_stalls_total", backend="ollama"), 1)
        self.assertEqual(len(server.events("llm_stream_stalled")), 1)
        # The pause is inside the time per output token, as a client saw it: from the first piece
        # to the last are one 30 ms gap, the 400 ms before the stall showed and the 500 ms the
        # test then waited, over 7 - 1 tokens (the fake's usage).
        count, tpot = self.histogram(exp, "gen_ai_server_time_per_output_token_seconds",
                                     **genai("ollama", MODEL, "auto", True))
        self.assertGreaterEqual(tpot, (0.03 + 0.4 + 0.5) / 6)


if __name__ == "__main__":
    import unittest
    unittest.main()
