"""GET /status in a real browser: headless Chromium (Debian's chromium) loads the page from the
real host, the page's own script fetches /status.json, and the test reads the DOM Chromium
rendered (request rate, error ratio, latency, mode mix, health checks, firing alerts, rules,
generation, last reload) and checks a screenshot: a PNG of the window's size that is not blank."""
import html.parser
import json
import os
import shutil
import struct
import subprocess
import tempfile
import time
import zlib

from harness import SOURCE_DIR, Server, ServersTestCase, request

SCRIPTS = os.path.join(SOURCE_DIR, "scripts")
WIDTH, HEIGHT = 1280, 1000


class Dom(html.parser.HTMLParser):
    """Text by element id (nested text included) and the body's attributes."""

    def __init__(self):
        super().__init__()
        self.text = {}
        self.body = {}
        self.open = []  # ids of the elements we are inside, with their depth

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "body":
            self.body = attrs
        if tag in ("meta", "br", "img", "input", "link", "path"):
            return
        self.open.append(attrs.get("id"))
        if attrs.get("id"):
            self.text.setdefault(attrs["id"], "")

    def handle_endtag(self, tag):
        if tag in ("meta", "br", "img", "input", "link", "path"):
            return
        if self.open:
            self.open.pop()

    def handle_data(self, data):
        for element_id in self.open:
            if element_id:
                self.text[element_id] += data


def png_pixels(path):
    """(width, height, number of distinct RGB(A) pixels in a sample of rows) of a PNG."""
    with open(path, "rb") as f:
        data = f.read()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, idat, width, height, channels = 8, b"", 0, 0, 4
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        chunk = data[pos + 8:pos + 8 + length]
        if kind == b"IHDR":
            width, height, depth, color = struct.unpack(">IIBB", chunk[:10])
            assert depth == 8, depth
            channels = {2: 3, 6: 4}[color]
        elif kind == b"IDAT":
            idat += chunk
        pos += 12 + length
    raw = zlib.decompress(idat)
    stride = width * channels + 1
    previous = bytearray(width * channels)
    distinct = set()
    for y in range(height):
        line = bytearray(raw[y * stride + 1:(y + 1) * stride])
        kind = raw[y * stride]
        for i in range(len(line)):  # undo the PNG filters (needed to read real pixel values)
            left = line[i - channels] if i >= channels else 0
            up = previous[i]
            corner = previous[i - channels] if i >= channels else 0
            if kind == 1:
                line[i] = (line[i] + left) & 255
            elif kind == 2:
                line[i] = (line[i] + up) & 255
            elif kind == 3:
                line[i] = (line[i] + ((left + up) >> 1)) & 255
            elif kind == 4:
                p = left + up - corner
                pa, pb, pc = abs(p - left), abs(p - up), abs(p - corner)
                line[i] = (line[i] + (left if pa <= pb and pa <= pc else up if pb <= pc else corner)) & 255
        previous = line
        if y % 10 == 0:
            for x in range(0, width * channels, channels * 3):
                distinct.add(bytes(line[x:x + channels]))
    return width, height, len(distinct)


class StatusPageTest(ServersTestCase):
    def chromium(self, url, *args):
        binary = shutil.which("chromium") or shutil.which("chromium-browser")
        self.assertIsNotNone(binary, "chromium is not installed: make deps-test installs it")
        profile = tempfile.mkdtemp(prefix="hancock-chromium-")
        try:
            out = subprocess.run(
                [binary, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--no-first-run", "--disable-extensions", "--disable-background-networking",
                 f"--user-data-dir={profile}", f"--window-size={WIDTH},{HEIGHT}",
                 # Virtual time runs only while nothing is loading: the page's fetch of
                 # /status.json completes inside the budget whatever the machine's speed.
                 "--virtual-time-budget=15000", *args, url],
                capture_output=True, text=True, timeout=120)
        finally:
            shutil.rmtree(profile, ignore_errors=True)
        self.assertEqual(out.returncode, 0, out.stderr[-2000:])
        return out.stdout

    def test_the_page_shows_live_data_in_a_real_browser(self):
        server = Server(scripts=SCRIPTS, env={
            "HANCOCK_ALERTS_INTERVAL": "250ms", "HANCOCK_RULES_FOR": "1s", "HANCOCK_RULES_WINDOW": "4s",
            "HANCOCK_ALERTS_INSTANCE": "status-test:5000", "LOG_LEVEL": "INFO"})
        self.servers.append(server)
        body = {"mode": "soc", "message": "triage this"}
        deadline = time.monotonic() + 30
        while True:
            self.assertEqual(request(server, "GET", "/")[0], 200)
            self.assertEqual(request(server, "POST", "/v1/chat", body)[0], 502)  # no model behind it
            status = json.loads(request(server, "GET", "/status.json")[2])
            firing = [a["labels"]["alertname"] for a in status.get("firing", [])]
            if status.get("requests_per_second") and status.get("modes") and "HancockHighErrorRate" in firing:
                break
            self.assertLess(time.monotonic(), deadline, f"no data in /status.json: {status}")
            time.sleep(0.05)

        status_code, headers, page = request(server, "GET", "/status")
        self.assertEqual(status_code, 200)
        self.assertEqual(headers["content-type"], "text/html; charset=utf-8")
        self.assertIn("default-src 'none'", headers["content-security-policy"])
        text = page.decode()
        # Nothing fetched from elsewhere (the SVG namespace URI is a name, never loaded).
        for external in ('href="http', "<link", " src=", "url(", "@import", 'fetch("http', "//cdn"):
            self.assertFalse(external in text, f"the page refers to an external asset ({external})")

        url = f"http://127.0.0.1:{server.port}/status"
        dom = Dom()
        dom.feed(self.chromium(url, "--dump-dom"))
        self.assertEqual(dom.body.get("data-ready"), "1", "the page's script never rendered data")
        t = dom.text
        self.assertGreater(float(t["rps"].replace(",", "")), 0)
        self.assertRegex(t["errors"], r"^\d+(\.\d+)? %$")
        self.assertGreater(float(t["errors"].split()[0]), 0)
        for q in ("p50", "p90", "p99"):
            self.assertRegex(t[q], r"^\d+(\.\d+)? (ms|s)$", q)
        self.assertIn("soc", t["modes"])
        self.assertIn("HancockHighErrorRate", t["alerts"])
        self.assertIn("Hancock error rate is high", t["alerts"])
        self.assertIn("ollama", t["checks"])
        self.assertIn("error", t["checks"])
        self.assertIn("HancockNoTraffic", t["rules"])
        self.assertEqual(t["instance"], "status-test:5000")
        self.assertEqual(t["generation"], "1")
        self.assertRegex(t["reload"], r"^\d{4}-\d\d-\d\dT")
        self.assertEqual(t["overall"], "error")  # ollama is critical and unreachable
        self.assertNotIn("failed", t["updated"])

        shot = os.path.join(tempfile.mkdtemp(prefix="hancock-shot-"), "status.png")
        self.chromium(url, f"--screenshot={shot}")
        width, height, distinct = png_pixels(shot)
        self.assertEqual((width, height), (WIDTH, HEIGHT))
        self.assertGreater(distinct, 20, "the screenshot is (nearly) blank")
        shutil.rmtree(os.path.dirname(shot), ignore_errors=True)

    def test_status_json_before_the_first_evaluation_and_without_alerts(self):
        server = Server(scripts=SCRIPTS, env={"HANCOCK_ALERTS": "off", "LOG_LEVEL": "INFO"})
        self.servers.append(server)
        status_code, _, body = request(server, "GET", "/status.json")
        self.assertEqual(status_code, 200)
        status = json.loads(body)
        self.assertEqual(status["evaluator"], "not started yet")
        self.assertIn("checks", status["health"])
        self.assertEqual(status["firing"], [])
        self.assertEqual(request(server, "GET", "/status")[0], 200)
