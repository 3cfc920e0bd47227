"""Fake upstream servers for black-box tests, on 127.0.0.1 with an ephemeral port.

FakeLLM answers POST /v1/chat/completions the way an OpenAI-compatible backend does (Ollama,
NVIDIA NIM, OpenAI) and POST /api/chat the way Ollama's native API does (NDJSON when streamed,
a final object with Ollama's own timers), plus GET /api/ps, with knobs for the failures Hancock
must handle and for the timing of what it streams. FakeReceiver stands in for Slack and Teams
incoming webhooks. Both record what they received. Use them as context managers.
"""
import json
import socket
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 1024  # 200 concurrent connects must not overflow the backlog

    def handle_error(self, request, client_address):
        # Hancock hanging up on a call it cancelled (client gone, timeout) is expected.
        if isinstance(sys.exc_info()[1], (BrokenPipeError, ConnectionResetError)):
            return
        super().handle_error(request, client_address)


class _FakeBase:
    """A threaded HTTP server running `handler_class` with a reference back to this object."""

    def __init__(self, handler_class):
        owner = self

        class Handler(handler_class):
            fake = owner

        self.requests = []
        self.connections = set()
        self.lock = threading.Lock()
        self.httpd = _Server(("127.0.0.1", 0), Handler)
        self.port = self.httpd.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                       daemon=True)
        self.thread.start()

    def record(self, entry):
        with self.lock:
            self.requests.append(entry)

    def received(self):
        with self.lock:
            return list(self.requests)

    def wait_for(self, count, timeout=5):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if len(self.received()) >= count:
                return self.received()
            time.sleep(0.01)
        raise AssertionError(f"expected {count} requests, got {len(self.received())}")

    def stop(self):
        """Stops listening and drops open keep-alive connections, so the fake is really gone."""
        self.httpd.shutdown()
        self.httpd.server_close()
        with self.lock:
            connections = list(self.connections)
        for conn in connections:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    fake = None  # set by _FakeBase

    def log_message(self, *args):  # keep test output clean
        pass

    def setup(self):
        super().setup()
        # No Nagle: a streamed piece leaves when written, so the timing a test sets is the
        # timing Hancock sees (with Nagle, a piece after the head waits for a delayed ACK).
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with self.fake.lock:
            self.fake.connections.add(self.connection)

    def finish(self):
        with self.fake.lock:
            self.fake.connections.discard(self.connection)
        super().finish()

    def read_body(self):
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def send(self, status, body, content_type="application/json"):
        if isinstance(body, (dict, list)):
            body = json.dumps(body).encode()
        elif isinstance(body, str):
            body = body.encode()
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def wait(what):
    """Waits `what` milliseconds, or until `what` (a threading.Event) is set (30 s at most)."""
    if isinstance(what, threading.Event):
        what.wait(30)
    else:
        time.sleep(what / 1000)


class _LLMHandler(_Handler):
    def do_GET(self):
        if self.path == "/api/ps":
            with self.fake.lock:
                self.fake.ps_calls += 1
            return self.send(200, {"models": list(self.fake.ps_models)})
        if self.path == "/api/tags" and self.fake.tags is not None:
            return self.send(200, {"models": [{"name": name} for name in self.fake.tags]})
        if self.path == "/v1/models" and self.fake.models is not None:
            return self.send(200, {"object": "list", "data": [{"id": name, "object": "model"}
                                                              for name in self.fake.models]})
        return self.send(404, {"error": "not found"})

    def do_POST(self):
        fake = self.fake
        raw = self.read_body()
        try:
            doc = json.loads(raw)
        except ValueError:
            doc = {}
        native = self.path == "/api/chat"
        with fake.lock:
            fake.active += 1
            fake.max_active = max(fake.max_active, fake.active)
        try:
            self.answer(fake, doc, native)
        finally:
            with fake.lock:
                fake.active -= 1

    def answer(self, fake, doc, native):
        options = doc.get("options") if native and isinstance(doc.get("options"), dict) else {}
        fake.record({
            "path": self.path,
            "model": doc.get("model"),
            "messages": doc.get("messages"),
            # Ollama's native API takes the sampling settings under "options".
            "temperature": options.get("temperature") if native else doc.get("temperature"),
            "max_tokens": options.get("num_predict") if native else doc.get("max_tokens"),
            "authorization": self.headers.get("Authorization"),
            "traceparent": self.headers.get("traceparent"),
            "body": doc,
            "received_at": time.monotonic(),
        })
        if fake.delay_ms:
            time.sleep(fake.delay_ms / 1000)
        if fake.hold is not None:
            fake.hold.wait(30)
        if self.path not in ("/v1/chat/completions", "/api/chat"):
            return self.send(404, {"error": "not found"})
        with fake.lock:
            fake.chat_calls += 1
            failing = bool(fake.fail_every) and fake.chat_calls % fake.fail_every == 0
            if failing or fake.status != 200:
                fake.chat_failures += 1
        if failing:
            if native:
                return self.send(fake.fail_status, {"error": "fake backend failure"})
            return self.send(fake.fail_status, {"error": {"message": "fake backend failure"}})
        if fake.status != 200:
            if native:
                return self.send(fake.status, {"error": "fake backend failure"})
            return self.send(fake.status, {"error": {"message": "fake backend failure"}})
        if fake.malformed:
            return self.send(200, "this is { not json", "application/json")
        content = "" if fake.empty else fake.reply_for(doc)
        if native:
            if doc.get("stream", True):  # Ollama streams unless told not to
                return self.send_ndjson(doc, content)
            final = self.ollama_final(doc, fake.timings.get("decode", 0.0))
            final["message"] = {"role": "assistant", "content": content}
            return self.send(200, final)
        if doc.get("stream"):
            return self.send_stream(doc, content)
        self.send(200, {
            "id": "chatcmpl-fake",
            "object": "chat.completion",
            "model": fake.response_model or doc.get("model"),
            "choices": [{"index": 0, "message": {"role": "assistant", "content": content},
                         "finish_reason": fake.done_reason}],
            "usage": dict(fake.usage),
        })

    def ollama_final(self, doc, decode_s):
        """Ollama's final object: done, done_reason and its timers (integers of nanoseconds),
        from the `timings` knob (seconds: load, prefill, decode) and the `usage` knob's counts."""
        fake = self.fake
        ns = lambda seconds: int(round(seconds * 1e9))  # noqa: E731
        load, prefill = fake.timings.get("load", 0.001), fake.timings.get("prefill", 0.002)
        decode = fake.timings.get("decode", decode_s)
        return {
            "model": fake.response_model or doc.get("model"),
            "created_at": "2026-01-01T00:00:00Z",
            "done": True,
            "done_reason": fake.done_reason,
            "total_duration": ns(load + prefill + decode),
            "load_duration": ns(load),
            "prompt_eval_count": fake.usage.get("prompt_tokens"),
            "prompt_eval_duration": ns(prefill),
            "eval_count": fake.usage.get("completion_tokens"),
            "eval_duration": ns(decode),
        }

    def write_chunk(self, data):
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        self.wfile.flush()

    def pause_before(self, index):
        """`stream_gap_ms` between events; `stream_pause = (i, ms)` adds ms before event i."""
        pause = self.fake.stream_pause
        if index > 0 and self.fake.stream_gap_ms:
            time.sleep(self.fake.stream_gap_ms / 1000)
        if pause and pause[0] == index:
            wait(pause[1])

    def send_ndjson(self, doc, content):
        """Ollama's streamed form: one JSON object per line, a piece of the answer each (one per
        word), then the final object with the timers; the decode time is the one measured."""
        self.send_response(200)
        self.send_header("Content-Type", "application/x-ndjson")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        model = self.fake.response_model or doc.get("model")
        started = None
        words = content.split(" ") if content else []
        for i, word in enumerate(words):
            self.pause_before(i)
            started = started or time.monotonic()
            piece = word if i == 0 else " " + word
            line = {"model": model, "created_at": "2026-01-01T00:00:00Z",
                    "message": {"role": "assistant", "content": piece}, "done": False}
            self.write_chunk(json.dumps(line).encode() + b"\n")
        self.pause_before(len(words))
        final = self.ollama_final(doc, time.monotonic() - started if started else 0.0)
        final["message"] = {"role": "assistant", "content": ""}
        self.write_chunk(json.dumps(final).encode() + b"\n")
        self.wfile.write(b"0\r\n\r\n")


    def send_stream(self, doc, content):
        """OpenAI's streamed form: chat.completion.chunk events, one per word, then usage and
        [DONE]; `stream_gap_ms` between events."""
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()

        def event(obj):
            data = b"data: " + (obj if isinstance(obj, bytes) else json.dumps(obj).encode()) + b"\n\n"
            self.write_chunk(data)
            if self.fake.stream_gap_ms:
                time.sleep(self.fake.stream_gap_ms / 1000)

        model = self.fake.response_model or doc.get("model")
        words = content.split(" ")
        for i, word in enumerate(words):
            pause = self.fake.stream_pause
            if pause and pause[0] == i:
                wait(pause[1])
            piece = word if i == 0 else " " + word
            event({"object": "chat.completion.chunk", "model": model,
                   "choices": [{"index": 0, "delta": {"content": piece}}]})
        event({"object": "chat.completion.chunk", "model": model,
               "choices": [{"index": 0, "delta": {}, "finish_reason": self.fake.done_reason}]})
        event({"object": "chat.completion.chunk", "model": model, "choices": [],
               "usage": dict(self.fake.usage)})
        event(b"[DONE]")
        self.wfile.write(b"0\r\n\r\n")


class FakeLLM(_FakeBase):
    """An OpenAI-compatible chat-completions server.

    Also Ollama's native POST /api/chat (NDJSON when streamed, which is its default) and
    GET /api/ps.

    Knobs (attributes, change them any time): reply (text, or a function of the request JSON),
    delay_ms (before answering), status (non-200 answers with an error body), empty (content ""),
    malformed (a body that is not JSON), usage (the usage object returned; Ollama's
    prompt_eval_count and eval_count come from it), stream_gap_ms (between streamed events),
    stream_pause ((i, ms): a pause before streamed event i; ms may be a threading.Event to wait
    for instead), hold (a threading.Event: answer only once it is set), timings (Ollama's timers to report,
    in seconds: load, prefill, decode; decode defaults to the time the stream took), done_reason,
    response_model (the model the answer names; the requested one by default), ps_models (what
    /api/ps lists), tags (model names GET /api/tags lists; None, the default: 404), models (model
    ids GET /v1/models lists, as OpenAI does; None, the default: 404), fail_every (n: every n-th
    chat call is answered fail_status, 500 by default, whatever `status` says; 0, the default:
    none).
    `requests` records path, model, messages, temperature, max_tokens, authorization, traceparent,
    body and received_at (time.monotonic()); `max_active` is the most chat calls it has served at
    once; `chat_calls` counts the chat calls it answered (past `delay_ms` and `hold`) and
    `chat_failures` those it answered with an error status.
    """

    # Defaults for the knobs that came later, for subclasses that set only the first ones.
    stream_pause = None
    hold = None
    timings = {}
    done_reason = "stop"
    response_model = None
    ps_models = ()
    ps_calls = 0
    tags = None
    active = 0
    max_active = 0
    models = None
    fail_every = 0
    fail_status = 500
    chat_calls = 0
    chat_failures = 0

    def __init__(self, reply="fake answer", delay_ms=0, status=200, empty=False, malformed=False,
                 usage=None):
        self.reply = reply
        self.delay_ms = delay_ms
        self.status = status
        self.empty = empty
        self.malformed = malformed
        self.usage = usage or {"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18}
        self.stream_gap_ms = 0
        self.stream_pause = None
        self.timings = {}
        self.done_reason = "stop"
        self.response_model = None
        self.ps_models = []
        self.ps_calls = 0
        super().__init__(_LLMHandler)

    def reply_for(self, doc):
        return self.reply(doc) if callable(self.reply) else self.reply


class _ReceiverHandler(_Handler):
    def do_POST(self):
        fake = self.fake
        raw = self.read_body()
        try:
            doc = json.loads(raw)
        except ValueError:
            doc = None
        fake.record({"path": self.path, "json": doc, "content_type": self.headers.get("Content-Type")})
        if fake.delay_ms:
            time.sleep(fake.delay_ms / 1000)
        self.send(fake.status, "ok" if fake.status == 200 else "invalid_payload", "text/plain")


class FakeReceiver(_FakeBase):
    """An incoming-webhook receiver (Slack or Teams): records each POST's path and JSON body.
    Knobs: status (200; anything else fails the delivery), delay_ms."""

    def __init__(self, status=200, delay_ms=0):
        self.status = status
        self.delay_ms = delay_ms
        super().__init__(_ReceiverHandler)
