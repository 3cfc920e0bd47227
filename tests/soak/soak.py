#!/usr/bin/env python3
"""Soak: the shipped scripts/ served by build/hancock against a fake OpenAI-compatible backend on
127.0.0.1, under mixed traffic from a few client threads, with a SIGHUP reload every few seconds.

Prints requests served, outcomes by kind (expected vs unexpected), RSS at start, middle and end,
and exits 1 on any unexpected outcome, a failed or missing reload, an ERROR log event, a request
the log does not account for, or RSS growth past --rss-growth-mib. Usage:

    python3 tests/soak/soak.py --seconds 60 [--threads 4] [--workers 2] [--reload-every 3]

Only 127.0.0.1 is contacted. The black-box harness (tests/blackbox) starts and reads the server.
"""
import argparse
import collections
import json
import os
import random
import signal
import socket
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "blackbox"))

import fakes  # noqa: E402
import harness  # noqa: E402
from harness import Server, recv_response  # noqa: E402

SCRIPTS = os.path.join(os.path.abspath(harness.SOURCE_DIR), "scripts")
MODEL, CODER = "soak-chat:1b", "soak-coder:1b"

# Every variable the scripts read, cleared so the runner's environment cannot leak in.
CLEAN_ENV = {name: "" for name in (
    "HANCOCK_API_KEY", "HANCOCK_WEBHOOK_SECRET", "HANCOCK_SLACK_WEBHOOK", "HANCOCK_TEAMS_WEBHOOK",
    "HANCOCK_LLM_BACKEND", "HANCOCK_LLM_TIMEOUT_MS", "HANCOCK_LLM_CONNECT_TIMEOUT_MS",
    "HANCOCK_RATE_LIMIT", "HANCOCK_RATE_LIMIT_WINDOW", "HANCOCK_NOTIFY_TIMEOUT_MS",
    "OLLAMA_BASE_URL", "OLLAMA_MODEL", "OLLAMA_CODER_MODEL",
    "NVIDIA_BASE_URL", "NVIDIA_API_KEY", "NVIDIA_MODEL", "NVIDIA_CODER_MODEL",
    "OPENAI_BASE_URL", "OPENAI_API_KEY", "OPENAI_MODEL", "OPENAI_CODER_MODEL",
    "PROMETHEUS_URL", "ALERTMANAGER_URL")}


class _SoakLLMHandler(fakes._LLMHandler):
    def do_GET(self):
        # Ollama's model list, so the shipped health check sees both models pulled.
        if self.path == "/api/tags":
            return self.send(200, {"models": [{"name": MODEL}, {"name": CODER}]})
        return self.send(404, {"error": "not found"})


class SoakLLM(fakes.FakeLLM):
    """FakeLLM that also answers Ollama's GET /api/tags."""

    def __init__(self):
        self.reply = "soak answer with a few words in it"
        self.delay_ms, self.status, self.empty, self.malformed = 0, 200, False, False
        self.usage = {"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18}
        self.stream_gap_ms = 0
        fakes._FakeBase.__init__(self, _SoakLLMHandler)

    def record(self, entry):  # the soak sends thousands of calls; keep no history
        pass


class SoakServer(Server):
    """The harness's server, reading its log as it comes: request events are counted and
    dropped, every other event is kept. A long soak logs millions of request lines; keeping and
    re-parsing them all made the accounting at the end hold the interpreter for seconds, long
    enough for the fake backend, in this same process, to miss the host's health probe."""

    REQUEST_EVENTS = ("request_started", "request_completed", "request_rejected")

    def __init__(self, *args, **kwargs):
        self.answered = 0  # request_completed + request_rejected
        Server.__init__(self, *args, **kwargs)

    def _read(self):
        for raw in self.proc.stdout:
            line = raw.decode("utf-8", "replace").rstrip("\n")
            try:
                event = json.loads(line).get("event")
            except ValueError:
                event = None
            with self.cond:
                if event in self.REQUEST_EVENTS:
                    if event != "request_started":
                        self.answered += 1
                else:
                    self.lines.append(line)
                self.cond.notify_all()
        with self.cond:
            self.cond.notify_all()


def raw_request(port, method, path, body=b"", headers=None, send_body=True):
    hdrs = {"Host": "127.0.0.1", "Connection": "close"}
    if body or method == "POST":
        hdrs["Content-Length"] = str(len(body))
        hdrs["Content-Type"] = "application/json"
    hdrs.update(headers or {})
    head = f"{method} {path} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in hdrs.items()) + "\r\n"
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(head.encode("latin-1") + (body if send_body else b""))
        return recv_response(sock)


def json_of(body):
    try:
        return json.loads(body)
    except ValueError:
        return None


# Each kind: (weight, function(port) -> None on the expected answer, else a short reason).
def chat(port):
    status, _, body = raw_request(port, "POST", "/v1/chat", json.dumps(
        {"message": "soak %d" % random.randrange(1 << 30), "mode": random.choice(["auto", "soc"])}).encode())
    doc = json_of(body)
    if status != 200 or not doc or doc.get("model") != MODEL or not doc.get("response"):
        return "status %d %r" % (status, body[:120])
    return None


def chat_stream(port):
    status, headers, body = raw_request(port, "POST", "/v1/chat", json.dumps(
        {"message": "stream please", "stream": True}).encode())
    if status != 200 or not headers.get("content-type", "").startswith("text/event-stream"):
        return "status %d %r" % (status, body[:120])
    if b'"done":true' not in body.replace(b" ", b"") or b'"delta"' not in body:
        return "stream without deltas or done: %r" % body[-200:]
    return None


def metrics(port):
    status, _, body = raw_request(port, "GET", "/metrics")
    if status != 200 or b"hancock_requests_total" not in body:
        return "status %d, %d bytes" % (status, len(body))
    return None


def health(port):
    status, _, body = raw_request(port, "GET", "/health")
    doc = json_of(body)
    # Every critical check (the backend) answers, so never "error"; "degraded" is expected where
    # the machine's disk or memory is under the shipped thresholds.
    if status != 200 or not doc or doc.get("status") not in ("ok", "degraded"):
        return "status %d %r" % (status, body[:200])
    return None


def bad_json(port):
    status, _, body = raw_request(port, "POST", "/v1/chat", b'{"message": "unterminated')
    doc = json_of(body)
    if status != 400 or not doc or doc.get("error") != "request body must be a JSON object":
        return "status %d %r" % (status, body[:120])
    return None


def oversized(port):
    # Declared over --max-body: 413 before the body is read, then the connection closes.
    status, _, body = raw_request(port, "POST", "/v1/chat", b"x" * (2 << 20), send_body=False)
    if status != 413:
        return "status %d %r" % (status, body[:120])
    return None


def unknown_route(port):
    status, _, body = raw_request(port, "GET", "/no/such/route/%d" % random.randrange(1000))
    if status != 404:
        return "status %d %r" % (status, body[:120])
    return None


KINDS = {
    "chat": (6, chat),
    "chat_stream": (3, chat_stream),
    "metrics": (2, metrics),
    "health": (2, health),
    "bad_json": (1, bad_json),
    "oversized_body": (1, oversized),
    "unknown_route": (1, unknown_route),
}


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--reload-every", type=float, default=3.0, help="seconds between SIGHUPs")
    parser.add_argument("--rss-growth-mib", type=float, default=32.0,
                        help="fail if RSS grows more than this between start (after warm-up) and end")
    opts = parser.parse_args()

    llm = SoakLLM()
    env = dict(CLEAN_ENV)
    env.update({"OLLAMA_BASE_URL": llm.url, "OLLAMA_MODEL": MODEL, "OLLAMA_CODER_MODEL": CODER,
                "HANCOCK_LLM_BACKEND": "ollama", "HANCOCK_RATE_LIMIT": "100000000",
                "HANCOCK_HEALTH_INTERVAL_MS": "1000", "HANCOCK_HEALTH_TIMEOUT_MS": "5000"})
    server = SoakServer(scripts=SCRIPTS, env=env, args=("--workers", str(opts.workers)))
    port, pid = server.port, server.proc.pid

    lock = threading.Lock()
    served = collections.Counter()      # kind -> expected answers
    unexpected = collections.Counter()  # "kind: reason" -> count
    samples = []
    stop = threading.Event()
    names = list(KINDS)
    weights = [KINDS[k][0] for k in names]

    def client(seed):
        rnd = random.Random(seed)
        while not stop.is_set():
            kind = rnd.choices(names, weights)[0]
            try:
                reason = KINDS[kind][1](port)
            except (OSError, ValueError, IndexError) as exc:
                reason = "%s: %s" % (type(exc).__name__, exc)
            with lock:
                if reason is None:
                    served[kind] += 1
                else:
                    unexpected["%s: %s" % (kind, reason[:160])] += 1

    # Warm-up: one of each, so the start RSS is taken with every path's buffers allocated.
    for kind in names:
        reason = KINDS[kind][1](port)
        if reason:
            unexpected["%s (warm-up): %s" % (kind, reason[:160])] += 1
    rss_start = rss_kib(pid)
    samples.append(("start", rss_start))
    # AddressSanitizer keeps freed memory in quarantine (up to 256 MiB): RSS says nothing about
    # leaks there, and its leak check at exit (the server must exit 0) covers that build.
    with open("/proc/%d/maps" % pid) as f:
        sanitized = "libasan" in f.read()

    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(opts.threads)]
    started = time.monotonic()
    for t in threads:
        t.start()
    hups = 0
    next_hup = started + opts.reload_every
    middle_taken = False
    trace, next_trace = [], started  # RSS every 10 s, to tell a plateau from a slope
    while time.monotonic() - started < opts.seconds:
        now = time.monotonic()
        if now >= next_hup:
            os.kill(pid, signal.SIGHUP)
            hups += 1
            next_hup = now + opts.reload_every
        if now >= next_trace:
            trace.append(rss_kib(pid))
            next_trace = now + 10
        if not middle_taken and now - started >= opts.seconds / 2:
            samples.append(("middle", rss_kib(pid)))
            middle_taken = True
        if server.proc.poll() is not None:
            unexpected["server exited with %s" % server.proc.returncode] += 1
            break
        time.sleep(0.1)
    stop.set()
    for t in threads:
        t.join(60)
    elapsed = time.monotonic() - started
    alive = server.proc.poll() is None
    if alive:
        samples.append(("end", rss_kib(pid)))
    total = sum(served.values()) + sum(unexpected.values()) + len(names)

    def answered_in_log():
        with server.cond:
            return server.answered

    def reloads_in_log():
        return sum(1 for e in server.events() if e.get("event") == "reload_succeeded")

    # The log writer catches up with the last requests and the last reload.
    deadline = time.monotonic() + 10
    while alive and (answered_in_log() < total or reloads_in_log() < hups) and time.monotonic() < deadline:
        time.sleep(0.1)
    events = server.events()
    reload_ok = sum(1 for e in events if e.get("event") == "reload_succeeded")
    reload_failed = [e for e in events if e.get("event") == "reload_failed"]
    errors = [e for e in events if e.get("level") in ("ERROR", "FATAL")]
    completed = answered_in_log()
    code = server.stop(timeout=30) if alive else server.proc.returncode
    llm.stop()

    if reload_ok < hups:  # SIGHUPs seconds apart never coalesce: each one is a reload
        unexpected["%d SIGHUPs but %d reloads succeeded" % (hups, reload_ok)] += 1
    for e in reload_failed:
        unexpected["reload_failed: %s" % e.get("error", e.get("message"))] += 1
    for e in errors:
        detail = {k: v for k, v in e.items() if k not in ("ts", "level", "event", "message", "pid")}
        unexpected["log %s: %s %s" % (e.get("event"), str(e.get("error") or e.get("message"))[:120],
                                      json.dumps(detail)[:300])] += 1
    if code != 0:
        unexpected["exit status %s" % code] += 1
    # Every request the clients sent is in the log exactly once (request_completed, or
    # request_rejected for the 413s answered before routing): none lost, none doubled.
    if completed != total:
        unexpected["log shows %d answered requests for %d sent" % (completed, total)] += 1

    growth_mib = (samples[-1][1] - rss_start) / 1024
    print("soak: %.1f s, %d client threads, %d workers, %d SIGHUPs -> %d reloads succeeded, %d failed"
          % (elapsed, opts.threads, opts.workers, hups, reload_ok, len(reload_failed)))
    print("requests sent: %d (%.0f/s); answered in the log: %d" % (total, total / elapsed, completed))
    print("expected answers by kind:")
    for kind in names:
        print("  %-15s %d" % (kind, served[kind]))
    print("unexpected: %d" % sum(unexpected.values()))
    for reason, count in unexpected.most_common():
        print("  %5d  %s" % (count, reason))
    print("RSS: " + ", ".join("%s %.1f MiB" % (name, kib / 1024) for name, kib in samples)
          + " (growth %.1f MiB, bound %s)" % (growth_mib, "not applied: AddressSanitizer build" if sanitized
                                               else "%.0f MiB" % opts.rss_growth_mib))
    print("RSS every 10 s (MiB): " + " ".join("%.1f" % (kib / 1024) for kib in trace))
    failed = bool(unexpected) or (not sanitized and growth_mib > opts.rss_growth_mib)
    print("soak: " + ("FAIL" if failed else "PASS"))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
