"""Black-box tests of metrics: the families the core exposes with no script, what each request
records, GET/HEAD /metrics (text format 0.0.4 and OpenMetrics 1.0, gzip, chunked framing), label
escaping, histograms, series caps, the hk.metrics Lua API and its errors, conflicting
registrations, and a 250,000-series scrape that must not stall other requests.

Fixture scripts live in tests/blackbox/scripts_metrics/ (routes/ for traffic and the Lua API,
big/ for the large scrape, conflict_labels/, conflict_core/ and collide/ for registrations that
must fail). Every exposition is parsed back by a strict parser written here (both formats, and
OpenMetrics exemplars, which the text format must never carry) and linted with promtool. Only
127.0.0.1 is contacted.
"""
import gzip
import http.client
import json
import math
import os
import random
import re
import shutil
import socket
import string
import struct
import subprocess
import sys
import threading
import time
import unittest

import harness
from harness import line_of
from harness import Server, write_scripts

HERE = os.path.dirname(os.path.abspath(__file__))
FIXTURES = os.path.join(HERE, "scripts_metrics")
ROUTES_DIR = os.path.join(FIXTURES, "routes")
ROUTES_LUA = os.path.join(ROUTES_DIR, "routes.lua")
BIG_DIR = os.path.join(FIXTURES, "big")
PROMTOOL = shutil.which("promtool") or "/usr/bin/promtool"

TEXT_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
OPENMETRICS_CONTENT_TYPE = "application/openmetrics-text; version=1.0.0; charset=utf-8"
# What Prometheus itself sends when scraping.
PROMETHEUS_ACCEPT = ("application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;"
                     "q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1")
LEGACY_COUNTERS = ("hancock_requests_by_endpoint", "hancock_requests_by_mode")
# OpenMetrics: the label names and values of an exemplar are at most 128 code points together.
EXEMPLAR_MAX_RUNES = 128
DEFAULT_BUCKETS = ["0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1", "2.5", "5", "10", "+Inf"]
METHOD_LABELS = {"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "other"}
ESCAPED_MODE = 'back\\slash "quoted"\nnext line'


def le(fmt, bound):
    """A bucket bound as each format writes it: "1" in text, "1.0" in OpenMetrics (which, like
    the client libraries, always writes le with a fraction or an exponent)."""
    if fmt == "openmetrics" and not re.search(r"[.eI]", bound):
        return bound + ".0"
    return bound


def vm_rss_bytes(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS for %d" % pid)


# ---- HTTP over a raw socket, with a strict chunked decoder -------------------------------------


class Response:
    def __init__(self, status, headers, body, chunks, head):
        self.status = status
        self.headers = headers  # lower-case name -> value (a repeated header fails the read)
        self.body = body
        self.chunks = chunks    # chunk sizes when the body was chunked, else None
        self.head = head        # the raw head, for messages

    def json(self):
        return json.loads(self.body)


class Conn:
    """One keep-alive client connection. `recv_size`/`delay` throttle reading (a slow scraper)."""

    def __init__(self, server, timeout=10, recv_size=65536, delay=0.0):
        self.sock = server.connect(timeout=timeout)
        self.buf = bytearray()
        self.recv_size = recv_size
        self.delay = delay
        self.received = 0

    def close(self):
        self.sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _fill(self):
        if self.delay:
            time.sleep(self.delay)
        data = self.sock.recv(self.recv_size)
        if not data:
            raise ConnectionError("connection closed; unparsed: %r" % bytes(self.buf[:200]))
        self.received += len(data)
        self.buf += data

    def _line(self):
        while True:
            at = self.buf.find(b"\r\n")
            if at >= 0:
                line = bytes(self.buf[:at])
                del self.buf[:at + 2]
                return line
            self._fill()

    def _take(self, n):
        while len(self.buf) < n:
            self._fill()
        data = bytes(self.buf[:n])
        del self.buf[:n]
        return data

    def _until_closed(self):
        while True:
            data = self.sock.recv(self.recv_size)
            if not data:
                break
            self.buf += data
        data = bytes(self.buf)
        self.buf.clear()
        return data

    def _chunked(self):
        parts, sizes = [], []
        while True:
            line = self._line()
            if not re.fullmatch(rb"[0-9a-fA-F]+", line):
                raise AssertionError("bad chunk-size line %r" % line)
            size = int(line, 16)
            if size == 0:
                break
            parts.append(self._take(size))
            sizes.append(size)
            crlf = self._take(2)
            if crlf != b"\r\n":
                raise AssertionError("chunk of %d bytes not followed by CRLF but %r" % (size, crlf))
        trailer = self._line()
        if trailer != b"":
            raise AssertionError("unexpected trailer %r after the last chunk" % trailer)
        return b"".join(parts), sizes

    def send(self, method, path, body=None, headers=None, version="1.1"):
        hdrs = {"Host": "127.0.0.1"}
        if body is not None:
            if not isinstance(body, (bytes, bytearray)):
                body = json.dumps(body).encode()
                hdrs["Content-Type"] = "application/json"
            hdrs["Content-Length"] = str(len(body))
        hdrs.update(headers or {})
        raw = f"{method} {path} HTTP/{version}\r\n" + "".join(f"{k}: {v}\r\n" for k, v in hdrs.items()) + "\r\n"
        self.sock.sendall(raw.encode("latin-1") + (body or b""))

    def read(self, head_only=False):
        while b"\r\n\r\n" not in self.buf:
            self._fill()
        at = self.buf.find(b"\r\n\r\n")
        head = bytes(self.buf[:at]).decode("latin-1")
        del self.buf[:at + 4]
        lines = head.split("\r\n")
        m = re.fullmatch(r"HTTP/1\.1 (\d{3}) .*", lines[0])
        if not m:
            raise AssertionError("bad status line %r" % lines[0])
        status = int(m.group(1))
        headers = {}
        for line in lines[1:]:
            name, sep, value = line.partition(":")
            if not sep or name != name.strip():
                raise AssertionError("bad header line %r" % line)
            key = name.lower()
            if key in headers:
                raise AssertionError("header %s sent twice:\n%s" % (name, head))
            headers[key] = value.strip()
        chunks = None
        if head_only or status in (204, 304) or 100 <= status < 200:
            body = b""
        elif "transfer-encoding" in headers:
            if headers["transfer-encoding"].lower() != "chunked":
                raise AssertionError("unexpected Transfer-Encoding: %s" % headers["transfer-encoding"])
            if "content-length" in headers:
                raise AssertionError("both Transfer-Encoding and Content-Length:\n" + head)
            body, chunks = self._chunked()
        elif "content-length" in headers:
            body = self._take(int(headers["content-length"]))
        else:
            body = self._until_closed()
        return Response(status, headers, body, chunks, head)

    def request(self, method, path, body=None, headers=None, version="1.1"):
        self.send(method, path, body, headers, version)
        return self.read(head_only=(method == "HEAD"))


# ---- a strict parser for both exposition formats -----------------------------------------------

METRIC_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
NUMBER = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?|[+-]?Inf|NaN")
TYPES = {
    "text": {"counter": [""], "gauge": [""], "untyped": [""], "summary": ["", "_sum", "_count"],
             "histogram": ["_bucket", "_sum", "_count"]},
    "openmetrics": {"counter": ["_total", "_created"], "gauge": [""], "unknown": [""],
                    "histogram": ["_bucket", "_sum", "_count", "_created"], "info": ["_info"],
                    "stateset": [""], "gaugehistogram": ["_bucket", "_gsum", "_gcount"],
                    "summary": ["", "_sum", "_count", "_created"]},
}


class ExpositionError(AssertionError):
    pass


def _unescape(text, quote_escapes, where):
    out, i = [], 0
    while i < len(text):
        c = text[i]
        if c != "\\":
            out.append(c)
            i += 1
            continue
        nxt = text[i + 1:i + 2]
        if nxt == "\\":
            out.append("\\")
        elif nxt == "n":
            out.append("\n")
        elif nxt == '"' and quote_escapes:
            out.append('"')
        else:
            raise ExpositionError("invalid escape \\%s in %s" % (nxt, where))
        i += 2
    return "".join(out)


def _parse_labels(line, pos, fmt):
    """Parses `{a="x",b="y"}` starting at line[pos] == '{'. Returns ([(name, value)], next pos)."""
    labels = []
    pos += 1
    if line[pos:pos + 1] == "}":
        return labels, pos + 1
    while True:
        m = LABEL_NAME.match(line, pos)
        if not m:
            raise ExpositionError("bad label name at column %d: %r" % (pos, line))
        name = m.group(0)
        pos = m.end()
        if line[pos:pos + 2] != '="':
            raise ExpositionError("expected =\" after label %s: %r" % (name, line))
        pos += 2
        raw = []
        while True:
            if pos >= len(line):
                raise ExpositionError("unterminated label value: %r" % line)
            c = line[pos]
            if c == "\\":
                raw.append(line[pos:pos + 2])
                pos += 2
            elif c == '"':
                pos += 1
                break
            else:
                raw.append(c)
                pos += 1
        labels.append((name, _unescape("".join(raw), True, "label value of %r" % line)))
        if line[pos:pos + 1] == ",":
            pos += 1
            if line[pos:pos + 1] == "}":
                raise ExpositionError("trailing comma in label set: %r" % line)
            continue
        if line[pos:pos + 1] == "}":
            return labels, pos + 1
        raise ExpositionError("expected , or } at column %d: %r" % (pos, line))


def _number(text):
    return float(text.replace("Inf", "inf").replace("NaN", "nan"))


def _finite_number(text):
    return NUMBER.fullmatch(text) is not None and math.isfinite(_number(text))


class Exemplar:
    def __init__(self, labels, value, timestamp):
        self.labels = labels  # {name: value}
        self.value = value
        self.timestamp = timestamp  # seconds since the epoch, or None

    def __repr__(self):
        return "Exemplar(%r, %r, %r)" % (self.labels, self.value, self.timestamp)


def _parse_exemplar(line, pos, where):
    """Parses an OpenMetrics exemplar, `{a="x"} value [timestamp]`, from line[pos] to the end: the
    label set at most EXEMPLAR_MAX_RUNES code points of names and values, the value a float, the
    timestamp, when there is one, a finite float."""
    if line[pos:pos + 1] != "{":
        raise ExpositionError("exemplar without a label set, " + where)
    labels, pos = _parse_labels(line, pos, "openmetrics")
    names = [n for n, _ in labels]
    if len(set(names)) != len(names):
        raise ExpositionError("repeated exemplar label name, " + where)
    runes = sum(len(n) + len(v) for n, v in labels)
    if runes > EXEMPLAR_MAX_RUNES:
        raise ExpositionError("exemplar labels are %d characters, over %d, %s" % (runes, EXEMPLAR_MAX_RUNES, where))
    if line[pos:pos + 1] != " ":
        raise ExpositionError("expected one space before the exemplar's value, " + where)
    fields = line[pos + 1:].split(" ")
    if len(fields) > 2 or not NUMBER.fullmatch(fields[0]):
        raise ExpositionError("bad exemplar value or timestamp, " + where)
    if len(fields) == 2 and not _finite_number(fields[1]):
        raise ExpositionError("bad exemplar timestamp, " + where)
    return Exemplar(dict(labels), _number(fields[0]), _number(fields[1]) if len(fields) == 2 else None)


class Family:
    def __init__(self, name):
        self.name = name
        self.type = None
        self.help = None
        self.samples = []  # (sample name, [(label, value)], float)


class Exposition:
    """A parsed exposition. Raises ExpositionError on anything a strict scraper would reject."""

    def __init__(self, body, fmt):
        assert fmt in ("text", "openmetrics")
        self.fmt = fmt
        try:
            text = body.decode("utf-8") if isinstance(body, (bytes, bytearray)) else body
        except UnicodeDecodeError as e:
            raise ExpositionError("exposition is not valid UTF-8: %s" % e)
        self.text = text
        self.families = {}
        self.order = []
        self.values = {}  # (sample name, frozenset of labels) -> value
        self.exemplars = {}  # (sample name, frozenset of labels) -> Exemplar (OpenMetrics only)
        if not text.endswith("\n"):
            raise ExpositionError("exposition does not end with a newline: %r" % text[-80:])
        lines = text[:-1].split("\n")
        if fmt == "openmetrics":
            if lines[-1] != "# EOF":
                raise ExpositionError("OpenMetrics exposition does not end with # EOF: %r" % lines[-3:])
            lines = lines[:-1]
        current = None
        for number, line in enumerate(lines, 1):
            where = "line %d: %r" % (number, line[:200])
            if line == "":
                raise ExpositionError("empty " + where)
            if line.startswith("#"):
                current = self._meta(line, where, current)
                continue
            self._sample(line, where, current)
        for family in self.families.values():
            if family.type is None:
                raise ExpositionError("family %s has no TYPE" % family.name)
            if family.help is None:
                raise ExpositionError("family %s has no HELP" % family.name)
            if family.type == "histogram":
                self._check_histogram(family)

    def _meta(self, line, where, current):
        parts = line.split(" ", 3)
        if len(parts) < 3 or parts[0] != "#" or parts[1] not in ("HELP", "TYPE", "UNIT"):
            raise ExpositionError("unexpected comment " + where)
        kind, name = parts[1], parts[2]
        if not METRIC_NAME.fullmatch(name):
            raise ExpositionError("bad metric name in " + where)
        if kind == "UNIT" and self.fmt == "text":
            raise ExpositionError("# UNIT in the text format, " + where)
        family = self.families.get(name)
        if family is None:
            family = Family(name)
            self.families[name] = family
            self.order.append(name)
        elif family is not current or family.samples:
            raise ExpositionError("metadata of %s repeated or not contiguous, %s" % (name, where))
        rest = parts[3] if len(parts) > 3 else ""
        if kind == "HELP":
            if family.help is not None:
                raise ExpositionError("second HELP for %s" % name)
            family.help = _unescape(rest, self.fmt == "openmetrics", where)
        elif kind == "TYPE":
            if family.type is not None:
                raise ExpositionError("second TYPE for %s" % name)
            if rest not in TYPES[self.fmt]:
                raise ExpositionError("type %r not valid in %s, %s" % (rest, self.fmt, where))
            family.type = rest
        return family

    def _sample(self, line, where, current):
        m = METRIC_NAME.match(line)
        if not m:
            raise ExpositionError("bad sample " + where)
        name = m.group(0)
        pos = m.end()
        labels = []
        if line[pos:pos + 1] == "{":
            labels, pos = _parse_labels(line, pos, self.fmt)
        if line[pos:pos + 1] != " ":
            raise ExpositionError("expected one space before the value, " + where)
        # Numbers hold no '#': the first " # " after the labels starts an exemplar.
        rest, hash_sep, exemplar_text = line[pos + 1:].partition(" # ")
        if hash_sep and self.fmt == "text":
            raise ExpositionError("exemplar in the text format (OpenMetrics only), " + where)
        fields = rest.split(" ")
        if not fields or len(fields) > 2 or not NUMBER.fullmatch(fields[0]):
            raise ExpositionError("bad value or timestamp, " + where)
        if len(fields) == 2 and not _finite_number(fields[1]):
            raise ExpositionError("bad timestamp, " + where)
        value = _number(fields[0])
        names = [n for n, _ in labels]
        if len(set(names)) != len(names):
            raise ExpositionError("repeated label name, " + where)
        if current is None or current.type is None:
            raise ExpositionError("sample before any TYPE, " + where)
        if not any(name == current.name + suffix for suffix in TYPES[self.fmt][current.type]):
            raise ExpositionError("sample %s does not belong to the %s family %s, %s" % (
                name, current.type, current.name, where))
        if self.fmt == "openmetrics" and current.type == "counter" and name.endswith("_total"):
            if math.isnan(value) or value < 0:
                raise ExpositionError("OpenMetrics counter value must be >= 0, " + where)
        key = (name, frozenset(labels))
        if key in self.values:
            raise ExpositionError("duplicate series, " + where)
        if hash_sep:
            # OpenMetrics puts exemplars on counters' _total and (gauge) histograms' _bucket only.
            if not ((current.type == "counter" and name == current.name + "_total") or
                    (current.type in ("histogram", "gaugehistogram") and name == current.name + "_bucket")):
                raise ExpositionError("exemplar on %s, which is not a counter's _total or a bucket, %s" % (
                    name, where))
            self.exemplars[key] = _parse_exemplar(line, len(line) - len(exemplar_text), where)
        self.values[key] = value
        current.samples.append((name, labels, value))

    def _check_histogram(self, family):
        groups = {}
        for name, labels, value in family.samples:
            rest = frozenset((k, v) for k, v in labels if k != "le")
            group = groups.setdefault(rest, {"buckets": [], "sum": None, "count": None})
            if name == family.name + "_bucket":
                le = dict(labels).get("le")
                if le is None:
                    raise ExpositionError("%s bucket without le" % family.name)
                group["buckets"].append((le, value))
            elif "le" in dict(labels):
                raise ExpositionError("%s: le on %s" % (family.name, name))
            elif name == family.name + "_sum":
                group["sum"] = value
            elif name == family.name + "_count":
                group["count"] = value
        for rest, group in groups.items():
            what = "%s%s" % (family.name, dict(rest))
            les = [le for le, _ in group["buckets"]]
            counts = [v for _, v in group["buckets"]]
            if not les or les[-1] != "+Inf":
                raise ExpositionError("%s: buckets do not end with +Inf: %s" % (what, les))
            bounds = [float(le.replace("Inf", "inf")) for le in les]
            if bounds != sorted(bounds) or len(set(bounds)) != len(bounds):
                raise ExpositionError("%s: le not strictly increasing: %s" % (what, les))
            if any(b > a for a, b in zip(counts[1:], counts)):
                raise ExpositionError("%s: buckets not cumulative: %s" % (what, counts))
            if group["count"] is None or group["sum"] is None:
                raise ExpositionError("%s: missing _count or _sum" % what)
            if counts[-1] != group["count"]:
                raise ExpositionError("%s: +Inf bucket %s != _count %s" % (what, counts[-1], group["count"]))
            # A bucket's exemplar is an observation that bucket counted: above the previous bound,
            # at most its own, and the bucket is not empty.
            for i, (le, count) in enumerate(group["buckets"]):
                ex = self.exemplars.get((family.name + "_bucket", rest | {("le", le)}))
                if ex is None:
                    continue
                low = bounds[i - 1] if i > 0 else -math.inf
                if not low < ex.value <= bounds[i]:
                    raise ExpositionError("%s: exemplar %s outside its bucket (%s, %s]" % (what, ex.value, low, le))
                if count - (counts[i - 1] if i > 0 else 0) < 1:
                    raise ExpositionError("%s: exemplar on the empty bucket le=%s" % (what, le))

    # -- lookups --

    def family(self, name):
        if name not in self.families:
            raise AssertionError("no family %s; families: %s" % (name, self.order))
        return self.families[name]

    def series(self, name):
        """{frozenset(labels): value} for every sample named `name`."""
        return {labels: v for (n, labels), v in self.values.items() if n == name}

    def labelled(self, name, label):
        """{value of `label`: sample value} for a one-label sample name."""
        out = {}
        for labels, v in self.series(name).items():
            d = dict(labels)
            assert set(d) == {label}, (name, d)
            out[d[label]] = v
        return out

    def value(self, name, **labels):
        key = (name, frozenset(labels.items()))
        if key not in self.values:
            raise AssertionError("no sample %s%s; have: %s" % (name, labels, sorted(
                dict(l) for l in self.series(name))))
        return self.values[key]

    def histogram(self, name, **labels):
        """(buckets {le: cumulative count}, sum, count) of one histogram series."""
        buckets = {}
        for (n, lset), v in self.values.items():
            d = dict(lset)
            le = d.pop("le", None)
            if n == name + "_bucket" and d == labels:
                buckets[le] = v
        return buckets, self.value(name + "_sum", **labels), self.value(name + "_count", **labels)

    def exemplar(self, name, **labels):
        """The exemplar of the sample `name{labels}`, or None."""
        return self.exemplars.get((name, frozenset(labels.items())))

    def exemplars_of(self, name):
        """{frozenset(labels): Exemplar} for every sample named `name` that carries one."""
        return {labels: ex for (n, labels), ex in self.exemplars.items() if n == name}

    def keys(self):
        return set(self.values)

    def normalized_keys(self):
        """keys() with le values as numbers, to compare the two formats."""
        return {(name, frozenset((k, float(v.replace("Inf", "inf")) if k == "le" else v) for k, v in labels))
                for name, labels in self.values}


def promtool(body):
    if not os.path.exists(PROMTOOL):
        raise AssertionError("promtool not found (install the prometheus package: deploy/install-deps.sh --test)")
    proc = subprocess.run([PROMTOOL, "check", "metrics"], input=body, capture_output=True, timeout=60)
    return proc.returncode, proc.stdout.decode(), proc.stderr.decode()


# ---- traffic with a tally of what it must have recorded ---------------------------------------


class Tally:
    """Sends requests on one keep-alive connection and counts what the core must record."""

    def __init__(self, test, server):
        self.test = test
        self.conn = Conn(server)
        self.total = 0
        self.errors = 0
        self.by_endpoint = {}
        self.by_mode = {}
        self.duration = {}  # (method label, endpoint, status) -> count

    def close(self):
        self.conn.close()

    def send(self, method, path, endpoint, status, mode=None, body=None, method_label=None):
        res = self.conn.request(method, path, body=body)
        self.test.assertEqual(res.status, status, (method, path, res.body))
        self.record(method_label or method, endpoint, status, mode)
        return res

    def record(self, method, endpoint, status, mode=None):
        self.total += 1
        self.errors += status >= 400
        self.by_endpoint[endpoint] = self.by_endpoint.get(endpoint, 0) + 1
        if mode is not None:
            self.by_mode[mode] = self.by_mode.get(mode, 0) + 1
        key = (method, endpoint, str(status))
        self.duration[key] = self.duration.get(key, 0) + 1

    def scrape(self, fmt="text", gzip_ok=False):
        """Scrapes on this connection; the scrape is itself a request the core records."""
        headers = {}
        if fmt == "openmetrics":
            headers["Accept"] = PROMETHEUS_ACCEPT
        if gzip_ok:
            headers["Accept-Encoding"] = "gzip"
        res = self.conn.request("GET", "/metrics", headers=headers)
        self.test.assertEqual(res.status, 200)
        self.record("GET", "/metrics", 200)
        body = gzip.decompress(res.body) if gzip_ok else res.body
        return Exposition(body, fmt)

    def standard_traffic(self):
        """Several routes, modes, methods and statuses: the numbers test_counts_match_traffic_exactly
        spells out."""
        for i in range(7):
            res = self.send("GET", "/v1/items/%d" % i, "/v1/items/:id", 200)
            self.test.assertEqual(res.json(), {"id": str(i)})
        for path in ("/nope", "/v1/items", "/v1/items/1/extra"):
            self.send("GET", path, "unmatched", 404)
        for _ in range(2):
            self.send("GET", "/v1/fail", "/v1/fail", 503)
        self.send("PURGE", "/v1/any", "/v1/any", 200, method_label="other")
        self.send("DELETE", "/v1/any", "/v1/any", 200)
        # The mode: the JSON body's top-level "mode" by default …
        for mode in ("soc", "soc", "soc", "pentest"):
            res = self.send("POST", "/v1/chat", "/v1/chat", 200, mode=mode, body={"mode": mode, "message": "hi"})
            self.test.assertEqual(res.json(), {"mode": mode})
        # … but only a non-empty string at the top level of a JSON object.
        for body in ({"message": "no mode"}, b'{"mode": "soc"', {"mode": 5}, {"mode": ""}, [{"mode": "soc"}],
                     {"outer": {"mode": "soc"}}):
            res = self.send("POST", "/v1/chat", "/v1/chat", 200, body=body)
            self.test.assertEqual(res.json(), {"mode": None}, body)
        # … and req.mode set by the script wins; clearing it counts no mode.
        for _ in range(2):
            res = self.send("POST", "/v1/mode/code", "/v1/mode/:mode", 200, mode="code", body={"mode": "soc"})
            self.test.assertEqual(res.json(), {"mode": "code"})
        self.send("POST", "/v1/nomode", "/v1/nomode", 200, body={"mode": "soc"})


class MetricsTest(unittest.TestCase):
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

    def empty_scripts(self):
        d = write_scripts({})
        self.addCleanup(shutil.rmtree, d, True)
        return d

    def scrape(self, server, headers=None, fmt="text"):
        with Conn(server) as conn:
            res = conn.request("GET", "/metrics", headers=headers)
        self.assertEqual(res.status, 200, res.body[:300])
        body = gzip.decompress(res.body) if res.headers.get("content-encoding") == "gzip" else res.body
        return res, Exposition(body, fmt)

    def assert_family(self, exp, name, type_, labels=None):
        family = exp.family(name)
        self.assertEqual(family.type, type_, name)
        self.assertTrue(family.help and family.help.strip(), "%s has an empty HELP" % name)
        for sample_name, lset, _ in family.samples:
            names = [n for n, _ in lset if n != "le"]
            self.assertEqual(names, list(labels or []), "%s labels (in order)" % sample_name)
        return family

    # ---- what the core exposes with no script -------------------------------------------------

    def test_core_metrics_exposed_without_script(self):
        launched = time.time()
        server = self.serve(scripts=self.empty_scripts())
        _, exp = self.scrape(server)
        pid = server.proc.pid
        self.assert_family(exp, "hancock_requests_total", "counter")
        self.assert_family(exp, "hancock_errors_total", "counter")
        self.assert_family(exp, "hancock_requests_by_endpoint", "counter", ["endpoint"])
        self.assert_family(exp, "hancock_requests_by_mode", "counter", ["mode"])
        self.assert_family(exp, "hancock_request_duration_seconds", "histogram", ["method", "endpoint", "status_code"])
        self.assert_family(exp, "hancock_model_response_time_seconds", "histogram", ["model", "operation"])
        self.assert_family(exp, "hancock_rate_limit_exceeded_total", "counter", ["endpoint", "client_id"])
        self.assert_family(exp, "hancock_memory_usage_bytes", "gauge")
        self.assert_family(exp, "hancock_active_connections", "gauge")
        self.assert_family(exp, "hancock_build_info", "gauge", ["version"])
        self.assert_family(exp, "process_resident_memory_bytes", "gauge")
        self.assert_family(exp, "process_cpu_seconds_total", "counter")
        self.assert_family(exp, "process_open_fds", "gauge")
        self.assert_family(exp, "process_max_fds", "gauge")
        self.assert_family(exp, "process_start_time_seconds", "gauge")

        # This scrape is the only request so far, and it counts itself.
        self.assertEqual(exp.value("hancock_requests_total"), 1)
        self.assertEqual(exp.value("hancock_errors_total"), 0)
        self.assertEqual(exp.labelled("hancock_requests_by_endpoint", "endpoint"), {"/metrics": 1})
        self.assertEqual(exp.series("hancock_requests_by_mode"), {})
        self.assertEqual(exp.value("hancock_request_duration_seconds_count", method="GET", endpoint="/metrics",
                                   status_code="200"), 1)
        self.assertEqual(exp.series("hancock_model_response_time_seconds_count"), {})
        self.assertEqual(exp.series("hancock_rate_limit_exceeded_total"), {})
        self.assertEqual(exp.value("hancock_active_connections"), 1)

        version = subprocess.run([harness.BIN, "--version"], capture_output=True, text=True).stdout.split()[1]
        self.assertEqual(exp.labelled("hancock_build_info", "version"), {version: 1})

        rss = exp.value("process_resident_memory_bytes")
        memory = exp.value("hancock_memory_usage_bytes")
        vm_rss = vm_rss_bytes(pid)
        self.assertGreater(memory, 0)
        self.assertLessEqual(abs(memory - rss), 0.05 * rss, (memory, rss))
        self.assertLessEqual(abs(rss - vm_rss), max(8 << 20, 0.25 * vm_rss), (rss, vm_rss))

        fds = len(os.listdir(f"/proc/{pid}/fd"))
        self.assertLessEqual(abs(exp.value("process_open_fds") - fds), 2, (exp.value("process_open_fds"), fds))
        with open(f"/proc/{pid}/limits") as f:
            soft = next(line.split()[3] for line in f if line.startswith("Max open files"))
        self.assertEqual(exp.value("process_max_fds"), -1 if soft == "unlimited" else int(soft))

        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rpartition(")")[2].split()
        cpu_now = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        self.assertGreaterEqual(exp.value("process_cpu_seconds_total"), 0)
        self.assertLessEqual(exp.value("process_cpu_seconds_total"), cpu_now + 0.05)

        start = exp.value("process_start_time_seconds")
        now = time.time()
        self.assertLess(abs(now - start), 60, (start, now))
        self.assertLess(abs(start - launched), 5, (start, launched))

    def test_series_gauge_matches_the_exposition(self):
        # hancock_metric_series{metric} says how many series each family holds: in the scrape
        # that reports it, that is how many the family shows (its first scrape included).
        server = self.serve(scripts=self.empty_scripts())
        for scrape_number in (1, 2):
            _, exp = self.scrape(server)
            shown = {}
            for name, family in exp.families.items():
                label_sets = {frozenset((k, v) for k, v in labels if k != "le") for _, labels, _ in family.samples}
                shown[name] = len(label_sets)
            reported = exp.labelled("hancock_metric_series", "metric")
            self.assertEqual(set(reported), set(shown))
            wrong = {name: (reported[name], shown[name]) for name in shown if reported[name] != shown[name]}
            self.assertEqual(wrong, {}, "scrape %d: {family: (reported, shown)}" % scrape_number)

    def test_active_connections_counts_open_connections(self):
        server = self.serve()
        idle = [Conn(server) for _ in range(3)]
        try:
            for conn in idle:  # each answered once, then left open and idle
                self.assertEqual(conn.request("GET", "/v1/ping").status, 200)
            with Conn(server) as scraper:
                exp = Exposition(scraper.request("GET", "/metrics").body, "text")
                self.assertEqual(exp.value("hancock_active_connections"), 4)
                for conn in idle:
                    conn.close()
                idle = []
                deadline = time.monotonic() + 5
                while True:
                    exp = Exposition(scraper.request("GET", "/metrics").body, "text")
                    if exp.value("hancock_active_connections") == 1 or time.monotonic() > deadline:
                        break
                    time.sleep(0.02)
                self.assertEqual(exp.value("hancock_active_connections"), 1)
        finally:
            for conn in idle:
                conn.close()

    # ---- what each request records ------------------------------------------------------------

    def test_counts_match_traffic_exactly(self):
        server = self.serve()
        tally = Tally(self, server)
        try:
            tally.standard_traffic()
            # A request that never parsed is answered (400) and counted too: no route, no method.
            with Conn(server) as bad:
                res = bad.request("GET", "/v1/items/1", headers={"Bad Header": "x"})
            self.assertEqual(res.status, 400)
            tally.record("other", "unmatched", 400)
            # The numbers, spelled out (standard_traffic's tally must agree with them).
            self.assertEqual(tally.by_endpoint, {"/v1/items/:id": 7, "unmatched": 4, "/v1/fail": 2, "/v1/any": 2,
                                                 "/v1/chat": 10, "/v1/mode/:mode": 2, "/v1/nomode": 1})
            self.assertEqual((tally.total, tally.errors), (28, 6))
            self.assertEqual(tally.by_mode, {"soc": 3, "pentest": 1, "code": 2})
            for scrape_number, fmt in enumerate(("text", "openmetrics", "text"), 1):
                exp = tally.scrape(fmt=fmt, gzip_ok=scrape_number == 3)
                what = "scrape %d (%s)" % (scrape_number, fmt)
                # Each scrape is recorded before it is rendered: it counts itself.
                self.assertEqual(tally.by_endpoint["/metrics"], scrape_number)
                self.assertEqual(exp.value("hancock_requests_total"), 28 + scrape_number, what)
                self.assertEqual(exp.value("hancock_errors_total"), 6, what)
                self.assertEqual(exp.labelled("hancock_requests_by_endpoint", "endpoint"), tally.by_endpoint, what)
                self.assertEqual(exp.labelled("hancock_requests_by_mode", "mode"), tally.by_mode, what)
                counts = {}
                for labels, v in exp.series("hancock_request_duration_seconds_count").items():
                    d = dict(labels)
                    counts[(d["method"], d["endpoint"], d["status_code"])] = v
                self.assertEqual(counts, tally.duration, what)
                self.assertEqual(sum(exp.labelled("hancock_requests_by_endpoint", "endpoint").values()),
                                 exp.value("hancock_requests_total"), what)
                self.assertEqual(sum(v for k, v in counts.items() if int(k[2]) >= 400),
                                 exp.value("hancock_errors_total"), what)
        finally:
            tally.close()

    def test_unmatched_paths_and_unknown_methods_stay_bounded(self):
        server = self.serve()
        rng = random.Random(20261126)
        alphabet = string.ascii_letters + string.digits + "-._~"
        paths = []
        for i in range(50):
            segments = ["".join(rng.choice(alphabet) for _ in range(rng.randint(4, 12)))
                        for _ in range(rng.randint(1, 4))]
            paths.append("/r%d-" % i + "/".join(segments))
        tally = Tally(self, server)
        try:
            for path in paths:
                tally.send("GET", path, "unmatched", 404)
            for method in ("PURGE", "MKCOL", "LOCK", "PROPFIND"):
                tally.send(method, "/zz-" + method.lower(), "unmatched", 404, method_label="other")
                tally.send(method, "/v1/any", "/v1/any", 200, method_label="other")
            for method in ("PUT", "PATCH", "OPTIONS", "HEAD"):
                tally.send(method, "/v1/any", "/v1/any", 200)
            exp = tally.scrape()
        finally:
            tally.close()
        self.assertEqual(exp.labelled("hancock_requests_by_endpoint", "endpoint"),
                         {"unmatched": 54, "/v1/any": 8, "/metrics": 1})
        methods = {dict(l)["method"] for l in exp.series("hancock_request_duration_seconds_count")}
        self.assertLessEqual(methods, METHOD_LABELS)
        self.assertEqual(exp.value("hancock_request_duration_seconds_count", method="other", endpoint="unmatched",
                                   status_code="404"), 4)
        self.assertEqual(exp.value("hancock_request_duration_seconds_count", method="GET", endpoint="unmatched",
                                   status_code="404"), 50)
        self.assertEqual(exp.value("hancock_request_duration_seconds_count", method="other", endpoint="/v1/any",
                                   status_code="200"), 4)
        self.assertEqual(len(exp.series("hancock_request_duration_seconds_count")), 8)
        for path in paths:
            self.assertNotIn(path, exp.text, "a raw path reached a label")
        for method in ("PURGE", "MKCOL", "LOCK", "PROPFIND"):
            self.assertNotIn('"%s"' % method, exp.text)

    def test_wrong_method_counts_under_the_route_pattern(self):
        # A 405 is a path a route matches (hancock_requests_by_endpoint's HELP: "unmatched for
        # paths no route matches"), so it counts under that route's pattern.
        server = self.serve()
        tally = Tally(self, server)
        try:
            res = tally.send("DELETE", "/v1/ping", "/v1/ping", 405)
            self.assertEqual(res.headers.get("allow"), "GET, HEAD")
            tally.send("POST", "/v1/items/7", "/v1/items/:id", 405)
            exp = tally.scrape()
        finally:
            tally.close()
        self.assertEqual(exp.labelled("hancock_requests_by_endpoint", "endpoint"),
                         {"/v1/ping": 1, "/v1/items/:id": 1, "/metrics": 1})
        self.assertEqual(exp.value("hancock_request_duration_seconds_count", method="DELETE", endpoint="/v1/ping",
                                   status_code="405"), 1)

    def test_client_modes_count_as_other(self):
        # The mode comes from the client's JSON body, but only modes the scripts registered label
        # the counter: 1,005 made-up modes are one "other" series, and nothing reaches the cap.
        server = self.serve()
        with Conn(server) as conn:
            for i in range(1005):
                res = conn.request("POST", "/v1/chat", body={"mode": "m%d" % i})
                self.assertEqual(res.status, 200)
            conn.request("POST", "/v1/chat", body={"mode": "soc"})
            last = conn.request("GET", "/v1/ping").headers["x-request-id"]
        _, exp = self.scrape(server)
        modes = exp.labelled("hancock_requests_by_mode", "mode")
        self.assertEqual(modes, {"other": 1005, "soc": 1})
        self.assertEqual(exp.value("hancock_metric_series_dropped_total", metric="hancock_requests_by_mode"), 0)
        self.assertEqual(exp.value("hancock_requests_by_endpoint", endpoint="/v1/chat"), 1006)
        server.wait_event("request_completed", predicate=lambda e: e.get("request_id") == last)
        self.assertEqual(server.events("metric_series_dropped"), [])

    # ---- formats, promtool, framing ------------------------------------------------------------

    def test_promtool_accepts_text_and_openmetrics(self):
        server = self.serve()
        tally = Tally(self, server)
        try:
            tally.standard_traffic()
            tally.send("POST", "/v1/escaped-mode", "/v1/escaped-mode", 200, mode=ESCAPED_MODE)
            tally.send("POST", "/api/odd", "/api/odd", 200)
            tally.send("POST", "/api/use", "/api/use", 200)
            tally.send("GET", "/v1/slow", "/v1/slow", 200)
            for user in range(5):
                tally.send("GET", "/api/cap/u%d" % user, "/api/cap/:user", 200)
            tally.send("GET", "/bad/negative", "/bad/:case", 500)
            tally.send("POST", "/metrics", "/metrics", 405)
        finally:
            tally.close()
        # Text format: clean except the two legacy counters, kept without _total on purpose.
        res, exp = self.scrape(server)
        rc, out, err = promtool(res.body)
        self.assertEqual(out, "")
        self.assertEqual(sorted(err.splitlines()), sorted(
            '%s counter metrics should have "_total" suffix' % name for name in LEGACY_COUNTERS), err)
        self.assertEqual(rc, 3, err)  # 3: lint problems only, the input parsed
        for name in LEGACY_COUNTERS:
            self.assertEqual(exp.family(name).type, "counter")

        # OpenMetrics: promtool 2.42 reads only the text format. It parses up to the first line
        # it cannot read and stops there: the first `# TYPE … unknown` (one of the two legacy
        # counters, typed unknown as OpenMetrics requires) or the first bucket with an exemplar
        # (every request leaves one on hancock_request_duration_seconds), whichever comes first;
        # that must be its one complaint. The strict parser above checks the rest
        # (test_exemplars has promtool's OpenMetrics parser read the whole of it).
        res, exp = self.scrape(server, headers={"Accept": PROMETHEUS_ACCEPT}, fmt="openmetrics")
        self.assertEqual(res.headers["content-type"], OPENMETRICS_CONTENT_TYPE)
        lines = res.body.decode().split("\n")
        first_unknown = next(i for i, line in enumerate(lines, 1) if line.startswith("# TYPE ") and
                             line.endswith(" unknown"))
        self.assertIn(lines[first_unknown - 1].split(" ")[2], LEGACY_COUNTERS)
        first_exemplar = next(i for i, line in enumerate(lines, 1) if not line.startswith("#") and " # {" in line)
        self.assertTrue(lines[first_exemplar - 1].startswith("hancock_request_duration_seconds_bucket{"))
        rc, out, err = promtool(res.body)
        self.assertEqual(out, "")
        if first_exemplar < first_unknown:
            complaint = 'expected integer as timestamp, got "#"'
        else:
            complaint = 'unknown metric type "unknown"'
        self.assertEqual(err, 'error while linting: text format parsing error in line %d: %s\n' % (
            min(first_unknown, first_exemplar), complaint))
        self.assertEqual(rc, 1)
        unknown = sorted(f.name for f in exp.families.values() if f.type == "unknown")
        self.assertEqual(unknown, sorted(LEGACY_COUNTERS))
        for name in LEGACY_COUNTERS:
            self.assertTrue(exp.family(name).samples, name)
            self.assertTrue(all(s[0] == name for s in exp.family(name).samples))

    def test_text_format_by_default_openmetrics_when_asked(self):
        server = self.serve()
        with Conn(server) as conn:
            conn.request("POST", "/api/use")
            conn.request("GET", "/v1/items/1")
        cases = [
            (None, "text"),
            ({"Accept": PROMETHEUS_ACCEPT}, "openmetrics"),
            ({"Accept": "text/plain"}, "text"),
            ({"Accept": "*/*"}, "text"),
            ({"Accept": "application/openmetrics-text"}, "openmetrics"),
            ({"Accept": "application/openmetrics-text;version=1.0.0"}, "openmetrics"),
            ({"Accept": "application/openmetrics-text;q=0.3,text/plain;q=0.9"}, "text"),
            ({"Accept": "application/openmetrics-text;q=0, text/plain"}, "text"),
            ({"Accept": "Application/OpenMetrics-Text"}, "openmetrics"),
            ({"Accept": "application/json"}, "text"),
        ]
        exps = {}
        for headers, fmt in cases:
            res, exp = self.scrape(server, headers=headers, fmt=fmt)
            self.assertEqual(res.headers.get("content-type"),
                             OPENMETRICS_CONTENT_TYPE if fmt == "openmetrics" else TEXT_CONTENT_TYPE, headers)
            if fmt == "text":
                self.assertNotIn("# EOF", exp.text, headers)
            else:
                self.assertTrue(exp.text.endswith("\n# EOF\n"), headers)
                self.assertEqual(exp.text.count("# EOF"), 1, headers)
            exps.setdefault(fmt, exp)
        text, om = exps["text"], exps["openmetrics"]
        # Same series, same help, in both formats; counters' families are named without _total in
        # OpenMetrics, and the legacy counters are typed unknown there.
        self.assertEqual({k[0] for k in text.keys()}, {k[0] for k in om.keys() if not k[0].endswith("_created")})
        self.assertEqual({k for k in text.normalized_keys() if k[0].startswith("hk_test_")},
                         {k for k in om.normalized_keys() if k[0].startswith("hk_test_")})
        for name, family in text.families.items():
            if family.type == "counter" and name not in LEGACY_COUNTERS:
                self.assertTrue(name.endswith("_total"), name)
                other = om.family(name[:-len("_total")])
                self.assertEqual(other.type, "counter", name)
            elif name in LEGACY_COUNTERS:
                other = om.family(name)
                self.assertEqual((family.type, other.type), ("counter", "unknown"))
            else:
                other = om.family(name)
                self.assertEqual(other.type, family.type, name)
            self.assertEqual(other.help, family.help, name)
        self.assertEqual(len(text.families), len(om.families))
        om_values = {(name, frozenset((k, le("openmetrics", v) if k == "le" else v) for k, v in labels)): value
                     for (name, labels), value in text.values.items()}
        for key, value in om_values.items():
            if key[0].startswith("hk_test_"):
                self.assertEqual(om.values.get(key), value, key)

    def test_gzip_when_accepted(self):
        server = self.serve()
        with Conn(server) as conn:
            conn.request("POST", "/api/use")
            conn.request("GET", "/v1/ping")
        _, plain = self.scrape(server)
        for accept_encoding, gzipped in (("gzip", True), ("deflate, gzip;q=0.5", True), ("*", True),
                                         ("GZIP", True), ("gzip;q=0", False), ("identity", False), ("br", False)):
            with Conn(server) as conn:
                res = conn.request("GET", "/metrics", headers={"Accept-Encoding": accept_encoding})
                # The connection stays usable after a compressed chunked body.
                self.assertEqual(conn.request("GET", "/v1/ping").json(), {"pong": True})
            self.assertEqual(res.status, 200)
            self.assertEqual(res.headers.get("content-type"), TEXT_CONTENT_TYPE)
            if gzipped:
                self.assertEqual(res.headers.get("content-encoding"), "gzip", accept_encoding)
                self.assertIn("accept-encoding", res.headers.get("vary", "").lower())
                self.assertEqual(res.body[:2], b"\x1f\x8b")
                body = gzip.decompress(res.body)
            else:
                self.assertNotIn("content-encoding", res.headers, accept_encoding)
                body = res.body
            exp = Exposition(body, "text")
            # Same content as uncompressed, modulo the values that move between scrapes.
            self.assertEqual(exp.keys(), plain.keys(), accept_encoding)
            self.assertEqual(exp.value("hk_test_plain_total"), 7)
        # OpenMetrics and gzip together; and HTTP/1.0 (no chunking: the body ends at close).
        with Conn(server) as conn:
            res = conn.request("GET", "/metrics", headers={"Accept": PROMETHEUS_ACCEPT, "Accept-Encoding": "gzip"})
        self.assertEqual(res.headers.get("content-type"), OPENMETRICS_CONTENT_TYPE)
        self.assertTrue(gzip.decompress(res.body).endswith(b"\n# EOF\n"))
        with Conn(server) as conn:
            res = conn.request("GET", "/metrics", headers={"Accept-Encoding": "gzip"}, version="1.0")
        self.assertIsNone(res.chunks)
        self.assertEqual(Exposition(gzip.decompress(res.body), "text").keys(), plain.keys())

    def test_chunked_framing_pipelining_and_http10(self):
        server = self.serve()
        with Conn(server) as conn:
            # Two scrapes and a route, pipelined in one write: each response must end exactly
            # where its framing says, or the next one would not parse.
            conn.sock.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"
                              b"GET /metrics HTTP/1.1\r\nHost: x\r\nAccept-Encoding: gzip\r\n\r\n"
                              b"GET /v1/ping HTTP/1.1\r\nHost: x\r\n\r\n")
            first, second, third = conn.read(), conn.read(), conn.read()
        for res in (first, second):
            self.assertEqual(res.status, 200)
            self.assertEqual(res.headers.get("transfer-encoding"), "chunked")
            self.assertNotIn("content-length", res.headers)
            self.assertTrue(res.chunks and all(size > 0 for size in res.chunks), res.chunks)
        self.assertEqual(Exposition(first.body, "text").labelled("hancock_requests_by_endpoint", "endpoint"),
                         {"/metrics": 1})
        self.assertEqual(Exposition(gzip.decompress(second.body), "text").labelled(
            "hancock_requests_by_endpoint", "endpoint"), {"/metrics": 2})
        self.assertEqual((third.status, third.json()), (200, {"pong": True}))

        # http.client's own chunked decoding agrees.
        client = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
        try:
            client.request("GET", "/metrics")
            resp = client.getresponse()
            body = resp.read()
            self.assertEqual(resp.status, 200)
            self.assertEqual(resp.getheader("Transfer-Encoding"), "chunked")
        finally:
            client.close()
        exp = Exposition(body, "text")
        self.assertEqual(exp.value("hancock_requests_by_endpoint", endpoint="/metrics"), 3)

        # HTTP/1.0 has no chunked encoding: the body is delimited by closing the connection.
        with Conn(server) as conn:
            res = conn.request("GET", "/metrics", version="1.0")
            self.assertEqual(conn.sock.recv(1), b"", "connection not closed after an HTTP/1.0 scrape")
        self.assertEqual(res.status, 200)
        self.assertNotIn("transfer-encoding", res.headers)
        self.assertEqual(res.headers.get("connection", "").lower(), "close")
        exp = Exposition(res.body, "text")
        self.assertEqual(exp.value("hancock_requests_by_endpoint", endpoint="/metrics"), 4)
        self.assertIn("process_start_time_seconds", exp.families)  # the last family: complete

    def test_head_and_other_methods(self):
        server = self.serve()
        with Conn(server) as conn:
            get = conn.request("GET", "/metrics")
            head = conn.request("HEAD", "/metrics")
            # Headers only: the next response on the connection starts right after the head.
            ping = conn.request("GET", "/v1/ping")
            head_om = conn.request("HEAD", "/metrics", headers={"Accept": PROMETHEUS_ACCEPT,
                                                                "Accept-Encoding": "gzip"})
            ping2 = conn.request("GET", "/v1/ping")
            rejected = {}
            for method in ("POST", "PUT", "DELETE", "PATCH"):
                rejected[method] = conn.request(method, "/metrics", body=b"x=1")
            exp = Exposition(conn.request("GET", "/metrics").body, "text")
        self.assertEqual(head.status, 200)
        self.assertEqual(head.headers.get("content-type"), get.headers.get("content-type"))
        self.assertEqual((ping.status, ping.json()), (200, {"pong": True}))
        self.assertEqual(head_om.headers.get("content-type"), OPENMETRICS_CONTENT_TYPE)
        self.assertEqual(head_om.headers.get("content-encoding"), "gzip")
        self.assertEqual((ping2.status, ping2.json()), (200, {"pong": True}))
        for method, res in rejected.items():
            self.assertEqual(res.status, 405, method)
            self.assertEqual(res.headers.get("allow"), "GET, HEAD", method)
            self.assertEqual(res.json()["error"], "method not allowed")
            self.assertEqual(exp.value("hancock_request_duration_seconds_count", method=method, endpoint="/metrics",
                                       status_code="405"), 1)
        self.assertEqual(exp.value("hancock_request_duration_seconds_count", method="HEAD", endpoint="/metrics",
                                   status_code="200"), 2)
        self.assertEqual(exp.value("hancock_requests_by_endpoint", endpoint="/metrics"), 8)
        self.assertEqual(exp.value("hancock_errors_total"), 4)
        # RFC 9110 §8.6: a HEAD response may carry Content-Length only if it equals the length
        # GET would send; GET /metrics is chunked and never empty, so 0 is a false length.
        for res in (head, head_om):
            self.assertNotEqual(res.headers.get("content-length"), "0",
                                "HEAD /metrics claims an empty body:\n" + res.head)

    # ---- content --------------------------------------------------------------------------------

    def test_label_values_and_help_escaped(self):
        server = self.serve()
        with Conn(server) as conn:
            res = conn.request("POST", "/v1/escaped-mode")
            self.assertEqual(res.json(), {"mode": ESCAPED_MODE})
            self.assertEqual(conn.request("POST", "/api/odd").status, 200)
        odd_values = {'a\\b"c\nd': 1, "caf\u00e9 \u2713": 1,
                      "x" * 255: 1,  # 255 x and a 2-byte character: cut at 256 bytes, on a character
                      "bad \ufffd byte": 1}  # an invalid byte becomes U+FFFD
        help_text = 'Help with a backslash \\ a "quote" and a\nsecond line.'
        for headers, fmt, family in ((None, "text", "hk_test_odd_labels_total"),
                                     ({"Accept": PROMETHEUS_ACCEPT}, "openmetrics", "hk_test_odd_labels")):
            res, exp = self.scrape(server, headers=headers, fmt=fmt)
            self.assertEqual(exp.labelled("hancock_requests_by_mode", "mode"), {ESCAPED_MODE: 1}, fmt)
            self.assertIn('hancock_requests_by_mode{mode="back\\\\slash \\"quoted\\"\\nnext line"} 1\n', exp.text)
            self.assertEqual(exp.labelled("hk_test_odd_labels_total", "value"), odd_values, fmt)
            self.assertEqual(exp.family(family).help, help_text, fmt)
        rc, _, err = promtool(self.scrape(server)[0].body)
        self.assertEqual(sorted(err.splitlines()), sorted(
            '%s counter metrics should have "_total" suffix' % name for name in LEGACY_COUNTERS), err)

    def test_histograms_cumulative(self):
        server = self.serve()
        started = time.monotonic()
        with Conn(server) as conn:
            self.assertEqual(conn.request("POST", "/api/use").status, 200)
            t0 = time.monotonic()
            self.assertEqual(conn.request("GET", "/v1/slow").status, 200)
            slow_wall = time.monotonic() - t0
            for i in range(20):
                conn.request("GET", "/v1/items/%d" % i)
        elapsed = time.monotonic() - started
        for headers, fmt in ((None, "text"), ({"Accept": PROMETHEUS_ACCEPT}, "openmetrics")):
            _, exp = self.scrape(server, headers=headers, fmt=fmt)  # the parser checks every histogram
            buckets, total, count = exp.histogram("hk_test_work_seconds", step="parse")
            self.assertEqual(buckets, {"0.1": 1, le(fmt, "1"): 2, le(fmt, "10"): 3, "+Inf": 4}, fmt)
            self.assertEqual((round(total, 9), count), (55.55, 4), fmt)
            for step in ("timed", "failing"):
                buckets, total, count = exp.histogram("hk_test_work_seconds", step=step)
                self.assertEqual(count, 1, step)
                self.assertEqual(buckets["0.1"], 1, step)
                self.assertTrue(0 <= total < 0.1, (step, total))
            series = exp.series("hancock_request_duration_seconds_count")
            self.assertEqual(len(series), 4, series)  # /api/use, /v1/slow, /v1/items/:id, /metrics
            for labels in series:
                buckets, total, count = exp.histogram("hancock_request_duration_seconds", **dict(labels))
                self.assertEqual(list(buckets), [le(fmt, b) for b in DEFAULT_BUCKETS], fmt)
                self.assertEqual(buckets["+Inf"], count)
                self.assertTrue(0 <= total <= count * elapsed + 1, (labels, total, count))
            buckets, total, count = exp.histogram("hancock_request_duration_seconds", method="GET",
                                                  endpoint="/v1/items/:id", status_code="200")
            self.assertEqual(count, 20)
            buckets, total, count = exp.histogram("hancock_request_duration_seconds", method="GET",
                                                  endpoint="/v1/slow", status_code="200")
            self.assertEqual(count, 1)
            self.assertEqual(buckets["0.025"], 0, "a request of >= 30 ms counted in le=0.025")
            self.assertEqual(buckets["+Inf"], 1)
            self.assertTrue(0.03 <= total <= slow_wall + 0.01, (total, slow_wall))

    def test_series_cap_drops_and_logs_once(self):
        server = self.serve()
        _, exp = self.scrape(server)
        self.assertEqual(exp.value("hancock_metric_series_dropped_total", metric="hk_test_capped_total"), 0)
        with Conn(server) as conn:
            for user in range(1, 11):
                self.assertEqual(conn.request("GET", "/api/cap/u%d" % user).status, 200)
            _, exp = self.scrape(server)
            self.assertEqual(exp.labelled("hk_test_capped_total", "user"), {"u1": 1, "u2": 1, "u3": 1})
            self.assertEqual(exp.value("hancock_metric_series_dropped_total", metric="hk_test_capped_total"), 7)
            self.assertEqual(exp.value("hancock_metric_series", metric="hk_test_capped_total"), 3)
            # A kept series still counts; every refused call is counted, a repeated value too.
            for user in ("u1", "u11", "u4"):
                self.assertEqual(conn.request("GET", "/api/cap/" + user).status, 200)
            last = conn.request("GET", "/v1/ping").headers["x-request-id"]
        _, exp = self.scrape(server)
        self.assertEqual(exp.labelled("hk_test_capped_total", "user"), {"u1": 2, "u2": 1, "u3": 1})
        self.assertEqual(exp.value("hancock_metric_series_dropped_total", metric="hk_test_capped_total"), 9)
        self.assertEqual(exp.value("hancock_metric_series_dropped_total", metric="hk_test_items_total"), 0)
        server.wait_event("request_completed", predicate=lambda e: e.get("request_id") == last)
        events = server.events("metric_series_dropped")
        self.assertEqual(len(events), 1, events)
        self.assertEqual(events[0]["level"], "WARNING")
        self.assertEqual(events[0].get("metric"), "hk_test_capped_total")
        self.assertEqual(events[0].get("cap"), 3)

    # ---- the Lua API ----------------------------------------------------------------------------

    def test_lua_api_from_a_handler(self):
        server = self.serve()
        with Conn(server) as conn:
            doc = conn.request("POST", "/api/use").json()
        self.assertEqual(doc, {"sum": 5, "second_is_nil": True, "third": "third", "ok": False,
                               "err": "timed-failure", "name": "hk_test_items_total", "type": "counter",
                               "hist_type": "histogram", "text": "hancock.Metric (counter hk_test_items_total)"})
        _, exp = self.scrape(server)
        self.assert_family(exp, "hk_test_items_total", "counter", ["kind"])
        self.assert_family(exp, "hk_test_plain_total", "counter")
        self.assert_family(exp, "hk_test_pairs_total", "counter", ["a", "b"])
        self.assert_family(exp, "hk_test_queue_depth", "gauge", ["queue"])
        self.assert_family(exp, "hk_test_temperature_celsius", "gauge")
        self.assert_family(exp, "hk_test_work_seconds", "histogram", ["step"])
        self.assertEqual(exp.family("hk_test_items_total").help, "Items served by the metrics fixture.")
        self.assertEqual(exp.labelled("hk_test_items_total", "kind"), {"named": 2, "positional": 3.5})
        self.assertEqual(exp.value("hk_test_plain_total"), 7)
        self.assertEqual(exp.series("hk_test_pairs_total"), {frozenset({("a", "x"), ("b", "y")}): 3})
        self.assertEqual(exp.labelled("hk_test_queue_depth", "queue"), {"a": 12, "b": -3.5})
        self.assertEqual(exp.value("hk_test_temperature_celsius"), 22.5)
        self.assertEqual({dict(l)["step"] for l in exp.series("hk_test_work_seconds_count")},
                         {"parse", "timed", "failing"})
        with Conn(server) as conn:
            conn.request("POST", "/api/use")
        _, exp = self.scrape(server)
        # Counters add up, gauges are set again, histograms keep observing.
        self.assertEqual(exp.labelled("hk_test_items_total", "kind"), {"named": 4, "positional": 7})
        self.assertEqual(exp.value("hk_test_plain_total"), 14)
        self.assertEqual(exp.labelled("hk_test_queue_depth", "queue"), {"a": 12, "b": -3.5})
        self.assertEqual(exp.value("hk_test_temperature_celsius"), 22.5)
        self.assertEqual(exp.value("hk_test_work_seconds_count", step="parse"), 8)
        self.assertEqual(exp.value("hk_test_work_seconds_count", step="failing"), 2)

    def test_lua_api_misuse_is_500_naming_the_metric(self):
        server = self.serve()
        # case -> (metric the error must name, a piece of the message)
        cases = {
            "unknown_label": ("hk_test_items_total", "has no label 'colour'"),
            "missing_label": ("hk_test_items_total", "label 'kind' must be a string, got nil"),
            "label_type": ("hk_test_items_total", "label 'kind' must be a string, got table"),
            "labels_not_table": ("hk_test_items_total", "labels must be a table, got string"),
            "extra_position": ("hk_test_items_total", "label"),
            "negative": ("hk_test_items_total", "cannot decrease"),
            "not_finite": ("hk_test_items_total", "finite"),
            "gauge_nan": ("hk_test_queue_depth", "finite"),
            "amount_type": ("hk_test_items_total", "number"),
            "counter_set": ("hk_test_items_total", "is a counter"),
            "counter_dec": ("hk_test_items_total", "is a counter"),
            "histogram_inc": ("hk_test_work_seconds", "is a histogram"),
            "gauge_observe": ("hk_test_queue_depth", "is a gauge"),
            "set_without_value": ("hk_test_queue_depth", "needs a value"),
            "observe_type": ("hk_test_work_seconds", "number"),
            "labels_on_plain": ("hk_test_plain_total", "has no labels"),
            "time_bad_labels": ("hk_test_work_seconds", "label 'step'"),
        }
        problems = []
        with Conn(server) as conn:
            for case, (metric, piece) in cases.items():
                res = conn.request("GET", "/bad/" + case)
                self.assertEqual(res.status, 500, (case, res.body))
                self.assertEqual(res.json()["error"], "internal error")
                rid = res.headers["x-request-id"]
                ev = server.wait_event("handler_error", predicate=lambda e, r=rid: e.get("request_id") == r)
                self.assertEqual(ev["level"], "ERROR")
                first_line = ev["error"].split("\n")[0]
                location = "routes.lua:%d:" % line_of(ROUTES_LUA, "  %s = function()" % case)
                for needle in (metric, piece, location):
                    if needle not in first_line:
                        problems.append("%s: %r not in %r" % (case, needle, first_line))
                # Errors point at the script's line, never at the runtime's.
                if "hancock.lua" in first_line:
                    problems.append("%s: the runtime's location in %r" % (case, first_line))
            # The server keeps serving.
            self.assertEqual(conn.request("GET", "/v1/ping").json(), {"pong": True})
        _, exp = self.scrape(server)
        # A failed call leaves no series behind.
        self.assertEqual(exp.series("hk_test_items_total"), {})
        self.assertEqual(exp.series("hk_test_queue_depth"), {})
        self.assertEqual(exp.series("hk_test_work_seconds_count"), {})
        self.assertEqual(exp.series("hk_test_plain_total"), {})
        self.assertEqual(exp.value("hancock_request_duration_seconds_count", method="GET", endpoint="/bad/:case",
                                   status_code="500"), len(cases))
        self.assertEqual(exp.value("hancock_errors_total"), len(cases))
        self.assertEqual(problems, [], "handler_error messages that miss the metric, the message or the line")

    def test_identical_registration_shares_values(self):
        server = self.serve()
        with Conn(server) as conn:
            conn.request("POST", "/api/use")  # routes.lua's handle: +1
            self.assertEqual(conn.request("POST", "/api/shared").json(), {"name": "hk_test_shared_total"})  # +10
            # The core's own counter, fed by the script that registered it as the core does.
            for client in ("key-1", "key-1", None):
                res = conn.request("GET", "/api/limited", headers={"X-Client-ID": client} if client else None)
                self.assertEqual(res.status, 429)
        _, exp = self.scrape(server)
        self.assertEqual(exp.labelled("hk_test_shared_total", "via"), {"routes": 11})
        self.assertEqual(exp.family("hk_test_shared_total").help, "Registered by routes.lua first.")
        limited = exp.series("hancock_rate_limit_exceeded_total")
        self.assertEqual(limited, {frozenset({("endpoint", "/api/limited"), ("client_id", "key-1")}): 2,
                                   frozenset({("endpoint", "/api/limited"), ("client_id", "127.0.0.1")}): 1})
        self.assertEqual(exp.family("hancock_rate_limit_exceeded_total").help,
                         "Requests refused by the rate limiter, by route pattern and client.")
        self.assertEqual(exp.value("hancock_request_duration_seconds_count", method="GET", endpoint="/api/limited",
                                   status_code="429"), 3)

    def test_conflicting_registration_fails_check_and_serve(self):
        cases = [
            ("conflict_labels", "conflict.lua", 'hk.metrics.counter("hk_test_conflict_total", "Same name',
             ["hk_test_conflict_total", "already registered"]),
            ("conflict_core", "conflict.lua", 'hk.metrics.gauge("hancock_requests_total"',
             ["hancock_requests_total", "already registered as a counter"]),
            ("collide", "collide.lua", 'hk.metrics.gauge("hk_test_thing"', ["hk_test_thing", "hk_test_thing_total"]),
        ]
        for directory, script, needle, pieces in cases:
            scripts = os.path.join(FIXTURES, directory)
            line = line_of(os.path.join(scripts, script), needle)
            proc = subprocess.run([harness.BIN, "check", "--scripts", scripts], capture_output=True, timeout=30)
            err = proc.stderr.decode()
            self.assertEqual(proc.returncode, 1, (directory, proc))
            self.assertNotIn(b"ok", proc.stdout.lower())
            self.assertEqual(len(err.splitlines()), 1, err)
            self.assertRegex(err, r"^\S*%s:%d: " % (re.escape(script), line), directory)
            for piece in pieces:
                self.assertIn(piece, err, directory)
            proc = subprocess.run([harness.BIN, "serve", "--listen", "127.0.0.1:0", "--scripts", scripts],
                                  capture_output=True, timeout=30)
            self.assertEqual(proc.returncode, 1, (directory, proc))
            self.assertIn("%s:%d: " % (script, line), proc.stderr.decode())
        proc = subprocess.run([harness.BIN, "check", "--scripts", ROUTES_DIR], capture_output=True, timeout=30)
        self.assertEqual(proc.returncode, 0, proc)

    # ---- a large scrape ---------------------------------------------------------------------------

    def test_large_scrape_does_not_stall_others(self):
        started = time.monotonic()
        server = self.serve(scripts=BIG_DIR)
        load_seconds = time.monotonic() - started
        pid = server.proc.pid
        with Conn(server) as conn:
            self.assertEqual(conn.request("GET", "/v1/ping").status, 200)
        rss_before = vm_rss_bytes(pid)
        rss_peak = [rss_before]
        result = {}

        def slow_scrape():
            try:
                with Conn(server, timeout=30, recv_size=64 * 1024, delay=0.01) as slow:
                    t0 = time.monotonic()
                    result["response"] = slow.request("GET", "/metrics")
                    result["seconds"] = time.monotonic() - t0
                    result["wire_bytes"] = slow.received
            except BaseException as e:  # reported by the main thread
                result["error"] = e

        scraper = threading.Thread(target=slow_scrape)
        scraper.start()
        latencies = []
        with Conn(server) as conn:
            while scraper.is_alive():
                t0 = time.monotonic()
                res = conn.request("GET", "/v1/ping")
                latencies.append(time.monotonic() - t0)
                self.assertEqual(res.status, 200)
                rss_peak[0] = max(rss_peak[0], vm_rss_bytes(pid))
                time.sleep(0.005)
        scraper.join()
        if "error" in result:
            raise result["error"]
        res = result["response"]
        self.assertEqual(res.status, 200)

        lines = res.body.split(b"\n")
        big = [line for line in lines if line.startswith(b"hk_test_big_")]
        self.assertEqual(len(big), 250000)
        self.assertTrue(all(line.endswith(b"} 1") for line in big))
        for c in range(1, 6):
            self.assertEqual(sum(1 for line in big if line.startswith(b"hk_test_big_%d_total{" % c)), 50000)
        exp = Exposition(b"\n".join(line for line in lines if not line.startswith(b"hk_test_big_")), "text")
        self.assertIn("process_start_time_seconds", exp.families)  # rendered to the end
        self.assertEqual(exp.value("hancock_metric_series", metric="hk_test_big_3_total"), 50000)

        # The same scrape read at full speed, plain and gzipped, for the report.
        with Conn(server, timeout=30) as conn:
            t0 = time.monotonic()
            fast = conn.request("GET", "/metrics")
            fast_seconds = time.monotonic() - t0
            t0 = time.monotonic()
            zipped = conn.request("GET", "/metrics", headers={"Accept-Encoding": "gzip"})
            gzip_seconds = time.monotonic() - t0
        self.assertEqual(len(gzip.decompress(zipped.body).split(b"\n")), len(fast.body.split(b"\n")))
        # Scrapers that go away mid-body (a reset, or a plain close) cost nothing and break nothing.
        for headers in (None, {"Accept-Encoding": "gzip"}, {"Accept": PROMETHEUS_ACCEPT}):
            conn = Conn(server, timeout=30)
            conn.send("GET", "/metrics", headers=headers)
            conn._take(256 * 1024 if headers is None else 64 * 1024)
            if headers is None:
                conn.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            conn.close()
        with Conn(server) as conn:
            self.assertEqual(conn.request("GET", "/v1/ping").json(), {"pong": True})
            after = conn.request("GET", "/metrics")
        self.assertEqual(after.body.count(b"\nhk_test_big_"), 250000)
        growth = rss_peak[0] - rss_before
        report = ("\n[large scrape] %d series loaded in %.2f s; slow scrape (64 KiB per 10 ms): %.2f s, %d bytes "
                  "in %d chunks (largest %d); full-speed scrape %.3f s, %d bytes; gzip %.3f s, %d bytes; %d requests "
                  "on another connection meanwhile: median %.1f ms, max %.1f ms; RSS %.1f MiB before, growth "
                  "%.1f MiB\n" % (
                      len(big), load_seconds, result["seconds"], len(res.body), len(res.chunks), max(res.chunks),
                      fast_seconds, len(fast.body), gzip_seconds, len(zipped.body), len(latencies),
                      sorted(latencies)[len(latencies) // 2] * 1000, max(latencies) * 1000, rss_before / 2**20,
                      growth / 2**20))
        sys.stderr.write(report)
        self.assertGreaterEqual(len(latencies), 5, "too few requests during the scrape to judge: " + report)
        self.assertLess(max(latencies), 1.0, report)
        self.assertLess(growth, 50 << 20, report)


if __name__ == "__main__":
    unittest.main()
