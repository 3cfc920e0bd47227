"""Fake upstream servers for black-box tests, on 127.0.0.1 with an ephemeral port.

FakeLLM answers POST /v1/chat/completions the way an OpenAI-compatible backend does (Ollama,
NVIDIA NIM, OpenAI), with knobs for the failures Hancock must handle. FakeReceiver stands in for
Slack and Teams incoming webhooks. Both record what they received. Use them as context managers.
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


class _LLMHandler(_Handler):
    def do_POST(self):
        fake = self.fake
        raw = self.read_body()
        try:
            doc = json.loads(raw)
        except ValueError:
            doc = {}
        fake.record({
            "path": self.path,
            "model": doc.get("model"),
            "messages": doc.get("messages"),
            "temperature": doc.get("temperature"),
            "max_tokens": doc.get("max_tokens"),
            "authorization": self.headers.get("Authorization"),
            "body": doc,
        })
        if fake.delay_ms:
            time.sleep(fake.delay_ms / 1000)
        if self.path != "/v1/chat/completions":
            return self.send(404, {"error": "not found"})
        if fake.status != 200:
            return self.send(fake.status, {"error": {"message": "fake backend failure"}})
        if fake.malformed:
            return self.send(200, "this is { not json", "application/json")
        content = "" if fake.empty else fake.reply_for(doc)
        if doc.get("stream"):
            return self.send_stream(doc, content)
        self.send(200, {
            "id": "chatcmpl-fake",
            "object": "chat.completion",
            "model": doc.get("model"),
            "choices": [{"index": 0, "message": {"role": "assistant", "content": content},
                         "finish_reason": "stop"}],
            "usage": dict(fake.usage),
        })


    def send_stream(self, doc, content):
        """OpenAI's streamed form: chat.completion.chunk events, one per word, then usage and
        [DONE]; `stream_gap_ms` between events."""
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()

        def event(obj):
            data = b"data: " + (obj if isinstance(obj, bytes) else json.dumps(obj).encode()) + b"\n\n"
            self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
            self.wfile.flush()
            if self.fake.stream_gap_ms:
                time.sleep(self.fake.stream_gap_ms / 1000)

        words = content.split(" ")
        for i, word in enumerate(words):
            piece = word if i == 0 else " " + word
            event({"object": "chat.completion.chunk", "model": doc.get("model"),
                   "choices": [{"index": 0, "delta": {"content": piece}}]})
        event({"object": "chat.completion.chunk", "model": doc.get("model"), "choices": [],
               "usage": dict(self.fake.usage)})
        event(b"[DONE]")
        self.wfile.write(b"0\r\n\r\n")


class FakeLLM(_FakeBase):
    """An OpenAI-compatible chat-completions server.

    Knobs (attributes, change them any time): reply (text, or a function of the request JSON),
    delay_ms (before answering), status (non-200 answers with an error body), empty (content ""),
    malformed (a body that is not JSON), usage (the usage object returned).
    `requests` records model, messages, temperature, max_tokens, authorization and body.
    """

    def __init__(self, reply="fake answer", delay_ms=0, status=200, empty=False, malformed=False,
                 usage=None):
        self.reply = reply
        self.delay_ms = delay_ms
        self.status = status
        self.empty = empty
        self.malformed = malformed
        self.usage = usage or {"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18}
        self.stream_gap_ms = 0
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
