"""Black-box harness: starts the real build/hancock on a free loopback port and talks to it.

Each test starts its own server (fast: a few milliseconds) so tests are independent. The server's
stdout (JSON log lines) is collected by a reader thread; tests wait on log events rather than on
the clock. Only 127.0.0.1 is ever contacted.
"""
import json
import re
import os
import socket
import subprocess
import tempfile
import threading
import time
import unittest
import weakref

BIN = os.environ.get("HANCOCK_BIN") or os.path.join(
    os.path.dirname(__file__), "..", "..", "build", "hancock")
SOURCE_DIR = os.environ.get("HANCOCK_SOURCE_DIR") or os.path.join(os.path.dirname(__file__), "..", "..")
SCRIPTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "scripts")


class Server:
    """One running hancock process. Use as a context manager or call stop()."""

    def __init__(self, scripts=SCRIPTS, args=(), env=None, wait=True):
        self.lines = []
        self.cond = threading.Condition()
        full_env = dict(os.environ)
        full_env.setdefault("LOG_LEVEL", "INFO")
        full_env.pop("HANCOCK_PORT", None)
        if env:
            full_env.update(env)
        # HANCOCK_TEST_WORKERS runs every suite at a given worker count (ctest registers the
        # black-box tests at 1 and again at 4); a test that passes --workers itself keeps it.
        workers = os.environ.get("HANCOCK_TEST_WORKERS")
        if workers and "--workers" not in args:
            args = ("--workers", workers, *args)
        self.proc = subprocess.Popen(
            [BIN, "serve", "--listen", "127.0.0.1:0", "--scripts", scripts, *args],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=full_env)
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()
        self.port = None
        if wait:
            ev = self.wait_event("server_listening", timeout=10)
            self.port = ev["port"]

    def _read(self):
        for raw in self.proc.stdout:
            line = raw.decode("utf-8", "replace").rstrip("\n")
            with self.cond:
                self.lines.append(line)
                self.cond.notify_all()
        with self.cond:
            self.cond.notify_all()

    def events(self, name=None):
        """Every JSON log event so far (optionally only those named `name`)."""
        out = []
        with self.cond:
            lines = list(self.lines)
        for line in lines:
            ev = json.loads(line)
            if name is None or ev.get("event") == name:
                out.append(ev)
        return out

    def wait_event(self, name, timeout=10, predicate=None):
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                for line in self.lines:
                    ev = json.loads(line)
                    if ev.get("event") == name and (predicate is None or predicate(ev)):
                        return ev
                left = deadline - time.monotonic()
                if left <= 0 or (self.proc.poll() is not None and not self.reader.is_alive()):
                    raise AssertionError(f"no {name!r} event within {timeout}s; log:\n" + "\n".join(self.lines[-20:]))
                self.cond.wait(min(left, 0.5))

    def connect(self, timeout=10):
        s = socket.create_connection(("127.0.0.1", self.port), timeout=timeout)
        return s

    def stop(self, sig=None, timeout=15):
        if self.proc.poll() is None:
            self.proc.send_signal(sig or 15)
        try:
            code = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError("hancock did not exit after the signal")
        self.reader.join(5)
        self.stderr = self.proc.stderr.read().decode("utf-8", "replace")
        self.proc.stderr.close()
        self.proc.stdout.close()
        return code

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


# Bytes read past one response, per socket (socket objects take no new attributes).
_pending = weakref.WeakKeyDictionary()


def recv_response(sock, head_only=False):
    """Reads one HTTP/1.1 response (Content-Length framed) from a socket with its own buffer.

    Returns (status, headers dict with lower-case names, body bytes). Raises on EOF first.
    """
    buf = _pending.pop(sock, b"")
    while b"\r\n\r\n" not in buf:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("connection closed before a response head; got %r" % buf)
        buf += chunk
    head, _, rest = buf.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ")[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    if not head_only and status not in (100, 204, 304) and headers.get("transfer-encoding") == "chunked":
        body, rest = _read_chunked(sock, rest)
        _pending[sock] = rest
        return status, headers, body
    length = 0 if head_only or status in (100, 204, 304) else int(headers.get("content-length", "0"))
    while len(rest) < length:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("connection closed inside a body")
        rest += chunk
    body = rest[:length]
    _pending[sock] = rest[length:]
    return status, headers, body


def _read_chunked(sock, rest):
    """De-chunks a body (no trailers expected); returns (body, bytes after it)."""
    body = b""
    while True:
        while b"\r\n" not in rest:
            more = sock.recv(65536)
            if not more:
                raise ConnectionError("connection closed inside a chunked body")
            rest += more
        size_line, _, rest = rest.partition(b"\r\n")
        size = int(size_line.split(b";")[0], 16)
        while len(rest) < size + 2:
            more = sock.recv(65536)
            if not more:
                raise ConnectionError("connection closed inside a chunk")
            rest += more
        if size == 0:
            return body, rest[2:]
        body += rest[:size]
        rest = rest[size + 2:]


def request(server, method, path, body=None, headers=None):
    """One request on a fresh connection: (status, headers, body)."""
    hdrs = {"Host": "127.0.0.1", "Connection": "close"}
    if body is not None:
        if not isinstance(body, (bytes, bytearray)):
            body = json.dumps(body).encode()
            hdrs["Content-Type"] = "application/json"
        hdrs["Content-Length"] = str(len(body))
    hdrs.update(headers or {})
    raw = f"{method} {path} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in hdrs.items()) + "\r\n"
    with server.connect() as s:
        s.sendall(raw.encode("latin-1") + (body or b""))
        return recv_response(s, head_only=(method == "HEAD"))


def read_until_closed(sock, timeout=10):
    """Everything the server sends until it closes the connection."""
    sock.settimeout(timeout)
    data = b""
    while True:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            break
        if not chunk:
            break
        data += chunk
    return data


def free_port():
    """A loopback port nobody listens on right now (for tests that start processes themselves)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def line_of(path, needle):
    """1-based number of the first line of `path` containing `needle`."""
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            if needle in line:
                return number
    raise AssertionError(f"{needle!r} not in {path}")


def write_scripts(files):
    """A temporary scripts directory with {name: source}. Returns its path (kept for the test)."""
    d = tempfile.mkdtemp(prefix="hancock-scripts-")
    for name, src in files.items():
        with open(os.path.join(d, name), "w") as f:
            f.write(src)
    return d


def metric_value(text, name, **labels):
    """The value of the series `name{labels}` in a Prometheus text exposition, or None."""
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        m = re.match(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$', line)
        if not m or m.group(1) != name:
            continue
        got = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', m.group(2) or ""))
        if got == {k: str(v) for k, v in labels.items()}:
            return float(m.group(3))
    return None


class ServersTestCase(unittest.TestCase):
    """For tests that start their own servers (append to self.servers) and fakes (append to
    self.fakes, anything with stop()): all are stopped, and every server must exit 0."""

    def setUp(self):
        self.servers = []
        self.fakes = []

    def tearDown(self):
        for server in self.servers:
            code = server.stop()
            self.assertEqual(code, 0, "hancock exited with %s; stderr: %s" % (code, server.stderr))
        for fake in self.fakes:
            fake.stop()


class HancockTestCase(unittest.TestCase):
    """Starts a server with tests/blackbox/scripts for each test (self.server)."""

    server_args = ()
    server_env = None

    def setUp(self):
        self.server = Server(args=self.server_args, env=self.server_env)

    def tearDown(self):
        code = self.server.stop()
        self.assertEqual(code, 0, "hancock exited with %s; stderr: %s" % (code, self.server.stderr))
