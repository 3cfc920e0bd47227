"""Several workers behave as one server: every counter equals the traffic sent whichever worker
took it, a reload reaches every worker before the admin route answers, a rate limit holds for
the process, a health check is probed once per interval however many workers answer /health,
open connections are the process total, and SIGTERM drains every worker."""
import json
import os
import re
import signal
import socket
import threading
import unittest
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import harness
from harness import Server

SCRIPTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "scripts_workers")
WORKERS = ("--workers", "4")
TOKEN = "a-test-token-long-enough"


class CountingBackend:
    """Answers GET /probe with 200 and counts the probes."""

    def __init__(self):
        self.count = 0
        self.lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                with outer.lock:
                    outer.count += 1
                self.send_response(200)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = "http://127.0.0.1:%d" % self.httpd.server_address[1]
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def stop(self):
        self.httpd.shutdown()
        self.httpd.server_close()


def fixture_source():
    with open(os.path.join(SCRIPTS, "workers.lua"), encoding="utf-8") as f:
        return f.read()


def get_on_new_connection(server, path, headers=None):
    # A connection each: the kernel spreads them over the workers' sockets.
    return harness.request(server, "GET", path, headers=headers)


class WorkersTest(harness.ServersTestCase):
    def start(self, scripts=SCRIPTS, env=None, args=()):
        server = Server(scripts=scripts, args=(*WORKERS, *args), env=env)
        self.servers.append(server)
        return server

    def metrics(self, server):
        _, _, text = harness.request(server, "GET", "/metrics")
        return text.decode()

    def test_listening_reports_the_workers(self):
        server = self.start()
        self.assertEqual(server.wait_event("server_listening")["workers"], 4)

    def test_counts_equal_the_traffic_across_workers(self):
        server = self.start()
        sent = 400
        errors = []

        def client(n):
            for _ in range(n):
                status, _, _ = get_on_new_connection(server, "/version")
                if status != 200:
                    errors.append(status)

        threads = [threading.Thread(target=client, args=(sent // 8,)) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        self.assertEqual(errors, [])
        text = self.metrics(server)
        self.assertEqual(harness.metric_value(text, "hancock_requests_by_endpoint", endpoint="/version"), sent)
        self.assertEqual(harness.metric_value(text, "hancock_requests_total"), sent + 1)  # + this scrape
        count = harness.metric_value(text, "hancock_request_duration_seconds_count", method="GET",
                                     endpoint="/version", status_code="200")
        self.assertEqual(count, sent)
        self.assertEqual(harness.metric_value(text, "hancock_script_generation"), 1)

    def test_reload_reaches_every_worker_before_it_answers(self):
        scripts = harness.write_scripts({"workers.lua": fixture_source()})
        server = self.start(scripts=scripts, env={"HANCOCK_ADMIN_TOKEN": TOKEN})
        with open(os.path.join(scripts, "workers.lua")) as f:
            source = f.read()
        with open(os.path.join(scripts, "workers.lua"), "w") as f:
            f.write(source.replace('local VERSION = "v1"', 'local VERSION = "v2"'))
        status, _, body = harness.request(server, "POST", "/admin/reload",
                                          headers={"Authorization": "Bearer " + TOKEN})
        self.assertEqual(status, 200, body)
        self.assertEqual(json.loads(body)["generation"], 2)
        versions = {json.loads(get_on_new_connection(server, "/version")[2])["version"] for _ in range(60)}
        self.assertEqual(versions, {"v2"})
        self.assertEqual(len(server.events("reload_succeeded")), 1)  # one per process, not per worker
        text = self.metrics(server)
        self.assertEqual(harness.metric_value(text, "hancock_reloads_total", result="success"), 1)
        self.assertEqual(harness.metric_value(text, "hancock_script_generation"), 2)

    def test_failed_reload_changes_no_worker(self):
        scripts = harness.write_scripts({"workers.lua": fixture_source()})
        server = self.start(scripts=scripts, env={"HANCOCK_ADMIN_TOKEN": TOKEN})
        with open(os.path.join(scripts, "broken.lua"), "w") as f:
            f.write("this is not lua\n")
        status, _, body = harness.request(server, "POST", "/admin/reload",
                                          headers={"Authorization": "Bearer " + TOKEN})
        self.assertEqual(status, 422, body)
        self.assertIn("broken.lua:1:", json.loads(body)["error"])
        for _ in range(20):
            self.assertEqual(get_on_new_connection(server, "/version")[0], 200)

    def test_rate_limit_holds_for_the_process(self):
        server = self.start()
        statuses = [get_on_new_connection(server, "/limited")[0] for _ in range(40)]
        self.assertEqual(statuses.count(200), 10)
        self.assertEqual(statuses.count(429), 30)

    def test_one_probe_per_check_however_many_workers_answer(self):
        backend = CountingBackend()
        self.fakes.append(backend)
        server = self.start(env={"HK_TEST_UPSTREAM": backend.url})
        server.wait_event("health_changed", predicate=lambda e: e["check"] == "backend")
        bodies = [json.loads(get_on_new_connection(server, "/health")[2]) for _ in range(60)]
        for body in bodies:
            self.assertEqual(body["checks"]["backend"]["status"], "ok", body)
        self.assertEqual(backend.count, 1)
        self.assertEqual(len(server.events("health_changed")), 1)
        status, _, body = get_on_new_connection(server, "/health/ready")
        self.assertEqual(status, 200, body)

    def test_active_connections_are_the_process_total(self):
        server = self.start()
        idle = [server.connect() for _ in range(12)]
        for s in idle:  # one request each, so every connection is accepted and counted
            s.sendall(b"GET /version HTTP/1.1\r\nHost: x\r\n\r\n")
            harness.recv_response(s)
        text = self.metrics(server)
        self.assertEqual(harness.metric_value(text, "hancock_active_connections"), 13)  # + the scrape's
        for s in idle:
            s.close()

    def test_connection_cap_is_for_the_process(self):
        server = self.start(args=("--max-connections", "6"))
        held = [server.connect() for _ in range(6)]
        for s in held:
            s.sendall(b"GET /version HTTP/1.1\r\nHost: x\r\n\r\n")
            harness.recv_response(s)
        extra = server.connect()
        extra.settimeout(5)
        self.assertEqual(harness.read_until_closed(extra), b"")  # closed at once, unanswered
        extra.close()
        server.wait_event("connection_limit_reached")
        for s in held:
            s.close()

    def test_sigterm_drains_every_worker(self):
        server = Server(scripts=SCRIPTS, args=WORKERS)
        socks = []
        for _ in range(8):
            s = server.connect()
            s.sendall(b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
            socks.append(s)
        server.wait_event("request_started", predicate=lambda e: len(server.events("request_started")) >= 8)
        server.proc.send_signal(signal.SIGTERM)
        for s in socks:
            s.settimeout(10)
            status, headers, _ = harness.recv_response(s)
            self.assertEqual(status, 200)
            self.assertEqual(headers.get("connection"), "close")
            s.close()
        self.assertEqual(server.stop(), 0, server.stderr)
        self.assertEqual(len(server.events("shutdown_complete")), 1)


if __name__ == "__main__":
    unittest.main()
