"""What a new user hits in the first hour (issue 16), against the real binary, the repository's
own scripts and its stack: health checks that follow the deploy files and the LLM backend in use,
the original /health details, a duplicate route that names both files, the open-API warning,
`make stack` stopping everything it started, and runbook links. The alert rules' side (paging only
for critical checks, what counts as an error) is in monitoring/alerting_rules_test.yaml
(ctest monitoring.rules_unit), the compose file's in tests/deploy_test.sh (deploy.compose_valid),
the README's first example and every other documented example in test_docs_examples.py.

Fixtures: tests/blackbox/scripts_first_hour/ (a custom alert without a runbook).
"""
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import unittest
import urllib.request
import uuid

import harness
from harness import SOURCE_DIR, Server, free_port, metric_value, request, write_scripts
from test_health import CLEAN_ENV, FakeUpstream

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(SOURCE_DIR)
SCRIPTS = os.path.join(ROOT, "scripts")
STACK = os.path.join(ROOT, "tests", "stack", "stack.py")
FIXTURE = os.path.join(HERE, "scripts_first_hour")

# Every backend endpoint the checks probe, answering as the real ones do.
BACKEND_ANSWERS = {
    "/api/tags": {"body": {"models": [{"name": "llama3.1:8b"}, {"name": "qwen2.5-coder:7b"}]}},
    "/v1/models": {"body": {"object": "list", "data": [{"id": "gpt-4o-mini"}]}},
    "/-/healthy": {"body": "Healthy.\n"},
}


def refused_url():
    return "http://127.0.0.1:%d" % free_port()


class FirstHourTest(harness.ServersTestCase):
    # ---- helpers ---------------------------------------------------------------------------

    def upstream(self, answers=None):
        fake = FakeUpstream(answers if answers is not None else BACKEND_ANSWERS)
        self.fakes.append(fake)
        return fake

    def serve(self, scripts=SCRIPTS, **env):
        full = dict(CLEAN_ENV, ALERTMANAGER_URL="", HANCOCK_RATE_LIMIT="")
        full.update({k: str(v) for k, v in env.items()})
        server = Server(scripts=scripts, env=full)
        self.servers.append(server)
        return server

    def health(self, server, path="/health"):
        status, _, body = request(server, "GET", path)
        return status, json.loads(body)

    def metrics(self, server):
        with urllib.request.urlopen(f"http://127.0.0.1:{server.port}/metrics", timeout=10) as resp:
            return resp.read().decode()

    def checked(self, server, *names):
        """Waits for the first result of each check; returns /health."""
        for name in names:
            server.wait_event("health_changed", 10, lambda e, n=name: e["check"] == n)
        return self.health(server)

    def sync_log(self, server):
        """Returns once every event logged before this call has been read."""
        request_id = "sync-" + uuid.uuid4().hex
        request(server, "GET", "/health/live", headers={"X-Request-Id": request_id})
        server.wait_event("request_completed", predicate=lambda e: e["request_id"] == request_id)

    # ---- 1. checks of the monitoring stack only where there is one --------------------------

    def test_no_prometheus_check_without_a_prometheus_url(self):
        server = self.serve(OLLAMA_BASE_URL=self.upstream().url)
        _, doc = self.checked(server, "ollama", "memory", "disk")
        self.sync_log(server)
        self.assertEqual(sorted(doc["checks"]), ["disk", "memory", "ollama"])
        checked = {e["check"] for e in server.events("health_changed")}
        self.assertEqual(checked, {"ollama", "memory", "disk"})  # nothing probed localhost:9090

    def test_prometheus_and_alertmanager_checked_where_configured(self):
        fake = self.upstream()
        server = self.serve(OLLAMA_BASE_URL=fake.url, PROMETHEUS_URL=fake.url + "/",
                            ALERTMANAGER_URL=refused_url())
        status, doc = self.checked(server, "ollama", "memory", "disk", "prometheus", "alertmanager")
        self.assertEqual(doc["checks"]["prometheus"]["status"], "ok", doc)
        self.assertEqual(doc["checks"]["alertmanager"]["status"], "error", doc)
        self.assertEqual(status, 200)  # neither is critical: the service answers
        self.assertEqual(doc["status"], "degraded")
        # The alerts read which checks are critical and what /health says.
        text = self.metrics(server)
        critical = {name: metric_value(text, "hancock_health_check_critical", check=name)
                    for name in ("ollama", "memory", "disk", "prometheus", "alertmanager")}
        self.assertEqual(critical, {"ollama": 1, "memory": 0, "disk": 0, "prometheus": 0, "alertmanager": 0})
        self.assertEqual(metric_value(text, "hancock_health_status"), 1)

    def test_the_stack_points_hancock_at_its_own_prometheus_and_alertmanager(self):
        missing = [b for b in ("prometheus", "prometheus-alertmanager") if shutil.which(b) is None]
        if missing:
            self.skipTest("not installed: " + ", ".join(missing))
        sys.path.insert(0, os.path.dirname(STACK))
        import stack as stack_module  # noqa: E402
        fake = self.upstream()
        env = {k: v for k, v in CLEAN_ENV.items() if k != "PROMETHEUS_URL"}  # the stack sets it
        stack = stack_module.Stack(env=dict(env, OLLAMA_BASE_URL=fake.url, HANCOCK_HEALTH_INTERVAL_MS="200"))
        self.addCleanup(stack.stop)

        def both_ok():
            doc = json.loads(stack.get(stack.hancock_port, "/health")[1])
            return all(doc["checks"].get(n, {}).get("status") == "ok" for n in ("prometheus", "alertmanager"))

        stack.wait(both_ok, "hancock's prometheus and alertmanager checks ok")
        self.assertEqual(stack.stop(), 0)

    # ---- 2. backend health follows the backend in use and its fallback ------------------------

    def test_a_working_fallback_keeps_the_service_ready(self):
        openai = self.upstream()
        server = self.serve(OLLAMA_BASE_URL=refused_url(), OPENAI_API_KEY="sk-test-key",
                            OPENAI_BASE_URL=openai.url + "/v1")
        status, doc = self.checked(server, "ollama", "openai", "memory", "disk")
        self.assertEqual(doc["checks"]["ollama"]["status"], "error")
        self.assertEqual(doc["checks"]["openai"]["status"], "ok")
        self.assertEqual((status, doc["status"]), (200, "degraded"), doc)
        self.assertEqual(self.health(server, "/health/ready")[0], 200)
        probe = [r for r in openai.received() if r["path"] == "/v1/models"][0]
        self.assertEqual(probe["authorization"], "Bearer sk-test-key")
        self.assertNotIn("sk-test-key", "\n".join(server.lines))

    def test_the_service_is_down_only_when_every_backend_is(self):
        server = self.serve(OLLAMA_BASE_URL=refused_url(), OPENAI_API_KEY="sk-test-key",
                            OPENAI_BASE_URL=refused_url())
        status, doc = self.checked(server, "ollama", "openai")
        self.assertEqual((status, doc["status"]), (503, "error"), doc)
        self.assertEqual(self.health(server, "/health/ready")[0], 503)

    def test_an_unused_backend_is_not_checked(self):
        fake = self.upstream()
        server = self.serve(HANCOCK_LLM_BACKEND="openai", OPENAI_API_KEY="sk-test-key",
                            OPENAI_BASE_URL=fake.url, OLLAMA_BASE_URL=fake.url)
        status, doc = self.checked(server, "openai", "memory", "disk")
        self.sync_log(server)
        self.assertEqual(sorted(doc["checks"]), ["disk", "memory", "openai"])
        self.assertEqual(fake.count("/api/tags"), 0)
        self.assertEqual(doc["checks"]["openai"]["status"], "ok")
        self.assertEqual(status, 200)
        self.assertEqual(self.health(server, "/health/ready")[0], 200)

    def test_a_missing_coder_model_only_degrades(self):
        fake = self.upstream(dict(BACKEND_ANSWERS, **{"/api/tags": {"body": {"models": [{"name": "llama3.1:8b"}]}}}))
        server = self.serve(OLLAMA_BASE_URL=fake.url)
        status, doc = self.checked(server, "ollama")
        self.assertEqual(doc["checks"]["ollama"]["status"], "degraded")
        self.assertEqual(doc["checks"]["ollama"]["detail"],
                         "coder model qwen2.5-coder:7b not pulled (/v1/code fails): ollama pull qwen2.5-coder:7b")
        self.assertEqual(status, 200)
        self.assertEqual(self.health(server, "/health/ready")[0], 200)

    # ---- 4. a duplicate route names both files ----------------------------------------------

    def check_scripts(self, extra):
        d = tempfile.mkdtemp(prefix="hancock-scripts-")
        self.addCleanup(shutil.rmtree, d, True)
        shutil.copytree(SCRIPTS, d, dirs_exist_ok=True)
        for name, source in extra.items():
            with open(os.path.join(d, name), "w") as f:
                f.write(source)
        proc = subprocess.run([harness.BIN, "check", "--scripts", d], capture_output=True, text=True,
                              timeout=30, env=dict(os.environ, **CLEAN_ENV))
        return d, proc

    def test_a_duplicate_route_names_both_files(self):
        route = 'local hk = require "hancock"\nhk.route("POST", "/v1/chat", function() return {} end)\n'
        v1_line = harness.line_of(os.path.join(SCRIPTS, "v1.lua"), 'api.route("POST", "/v1/chat"')
        # Loaded before v1.lua (name order): v1.lua's line is the second registration.
        d, proc = self.check_scripts({"chat.lua": route})
        self.assertEqual(proc.returncode, 1, proc)
        self.assertEqual(proc.stderr.strip(),
                         "%s/v1.lua:%d: hk.route(POST, /v1/chat): already registered at %s/chat.lua:2"
                         % (d, v1_line, d))
        # Loaded after it: the user's file is the second, and v1.lua's line (not the helper
        # module's) is the first.
        d, proc = self.check_scripts({"zz_chat.lua": route})
        self.assertEqual(proc.stderr.strip(),
                         "%s/zz_chat.lua:2: hk.route(POST, /v1/chat): already registered at %s/v1.lua:%d"
                         % (d, d, v1_line))
        # The same for a route made by api.post.
        ioc_line = harness.line_of(os.path.join(SCRIPTS, "v1.lua"), 'api.post("/v1/ioc"')
        d, proc = self.check_scripts({"zz_ioc.lua": route.replace("/v1/chat", "/v1/ioc")})
        self.assertEqual(proc.stderr.strip(),
                         "%s/zz_ioc.lua:2: hk.route(POST, /v1/ioc): already registered at %s/v1.lua:%d"
                         % (d, d, ioc_line))

    # ---- 5. the original /health details ---------------------------------------------------

    def test_memory_and_disk_details_are_the_originals(self):
        server = self.serve(OLLAMA_BASE_URL=self.upstream().url)
        _, doc = self.checked(server, "memory", "disk")
        memory, disk = doc["checks"]["memory"], doc["checks"]["disk"]
        # A parser written for the original: int(detail.split("=")[1]).
        self.assertRegex(memory["detail"], r"^available_mb=\d+$")
        self.assertRegex(disk["detail"], r"^available_gb=\d+$")
        self.assertEqual(int(memory["detail"].split("=")[1]), memory["available_mb"])
        self.assertEqual(int(disk["detail"].split("=")[1]), disk["available_gb"])
        event = [e for e in server.events("health_changed") if e["check"] == "memory"][0]
        self.assertEqual(event["detail"], memory["detail"])

    # ---- 6. make stack stops everything it started -------------------------------------------

    def start_stack(self, argv):
        missing = [b for b in ("prometheus", "prometheus-alertmanager") if shutil.which(b) is None]
        if missing:
            self.skipTest("not installed: " + ", ".join(missing))
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                env=dict(os.environ, HANCOCK_BIN=os.path.abspath(harness.BIN)),
                                start_new_session=True)
        self.addCleanup(lambda: proc.poll() is None and os.killpg(proc.pid, signal.SIGKILL))
        lines = []
        for line in proc.stdout:  # the last line of its banner says it is up
            lines.append(line)
            if "stops everything" in line:
                break
        else:
            self.fail("the stack did not start: " + "".join(lines))
        directory = re.search(r"logs in (\S+);", lines[-1]).group(1)
        self.assertTrue(os.path.isdir(directory))
        return proc, directory

    @staticmethod
    def descendants(pid):
        """Every process whose chain of parents leads to pid."""
        parents = {}
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                try:
                    with open(f"/proc/{entry}/stat") as f:
                        parents[int(entry)] = int(f.read().rsplit(")", 1)[1].split()[1])
                except (OSError, IndexError, ValueError):
                    pass
        found, todo = set(), [pid]
        while todo:
            parent = todo.pop()
            for child, ppid in parents.items():
                if ppid == parent and child not in found:
                    found.add(child)
                    todo.append(child)
        return found

    def wait_gone(self, pids, directory):
        deadline = time.monotonic() + 30
        while any(os.path.exists(f"/proc/{p}") for p in pids) or os.path.exists(directory):
            if time.monotonic() > deadline:
                alive = [p for p in pids if os.path.exists(f"/proc/{p}")]
                self.fail(f"left behind: processes {alive}, directory {os.path.exists(directory)}")
            time.sleep(0.1)  # other processes' exits: nothing to wait on but /proc

    def test_sigterm_to_the_stack_stops_its_children_and_removes_its_directory(self):
        proc, directory = self.start_stack([sys.executable, STACK])
        children = self.descendants(proc.pid)
        names = {open(f"/proc/{p}/comm").read().strip() for p in children}
        self.assertTrue({"hancock", "prometheus"} <= names, names)
        proc.send_signal(signal.SIGTERM)
        self.assertEqual(proc.wait(timeout=30), 0)
        self.assertIn("stack stopped", proc.stdout.read())
        self.wait_gone(children, directory)

    def test_the_stack_stops_when_what_started_it_is_killed(self):
        # As under make or a pyenv shim: a parent that does not pass the signal on, killed outright.
        proc, directory = self.start_stack(["/bin/sh", "-c", '"$0" "$1"; exit $?', sys.executable, STACK])
        everything = self.descendants(proc.pid)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        self.wait_gone(everything, directory)

    # ---- 7. an open /v1 is announced --------------------------------------------------------

    def test_an_open_api_is_warned_about_at_start(self):
        server = self.serve(OLLAMA_BASE_URL=self.upstream().url)
        event = server.wait_event("api_key_unset")
        self.assertEqual(event["level"], "WARNING")
        self.assertIn("HANCOCK_API_KEY is unset", event["message"])
        self.assertIn("docs/configuration.md#production", event["message"])
        self.assertGreater(event["routes"], 10)

        keyed = self.serve(OLLAMA_BASE_URL=self.upstream().url, HANCOCK_API_KEY="a-key-for-production")
        self.sync_log(keyed)  # the warning would come before the first request is served
        self.assertEqual(keyed.events("api_key_unset"), [])

    # ---- 8. runbook links ---------------------------------------------------------------------

    def rules(self, scripts, **env):
        proc = subprocess.run([harness.BIN, "rules", "--scripts", scripts], capture_output=True,
                              text=True, timeout=30, env=dict(os.environ, **CLEAN_ENV, **env))
        return proc

    def test_runbook_links_follow_the_base_url(self):
        plain = self.rules(SCRIPTS, HANCOCK_RUNBOOK_BASE_URL="")
        self.assertEqual(plain.returncode, 0, plain.stderr)
        self.assertIn('runbook_url: "docs/monitoring.md#hancocknotraffic"', plain.stdout)
        linked = self.rules(SCRIPTS, HANCOCK_RUNBOOK_BASE_URL="https://git.example.com/acme/hancock/blob/main/")
        urls = re.findall(r'runbook_url: "([^"]*)"', linked.stdout)
        self.assertEqual(len(urls), plain.stdout.count("- alert:"))
        for url in urls:
            self.assertRegex(url, r"^https://git\.example\.com/acme/hancock/blob/main/docs/monitoring\.md#hancock[a-z]+$")
        # Every shipped alert's link has its section in docs/monitoring.md.
        with open(os.path.join(ROOT, "docs", "monitoring.md")) as f:
            sections = {line[4:].strip().lower() for line in f if line.startswith("### ")}
        for url in urls:
            self.assertIn(url.split("#")[1], sections)

        # An alert of one's own has no runbook link unless it gives one; an absolute one stays.
        custom = self.rules(FIXTURE, HANCOCK_RUNBOOK_BASE_URL="https://git.example.com/acme/ops/")
        self.assertEqual(custom.returncode, 0, custom.stderr)
        blocks = dict(re.findall(r'- alert: "(\w+)"(.*?)(?=- alert:|\Z)', custom.stdout, re.S))
        self.assertNotIn("runbook_url", blocks["CustomNoRunbook"])
        self.assertIn('runbook_url: "https://wiki.example.com/queue"', blocks["CustomWikiRunbook"])
        self.assertIn('runbook_url: "https://git.example.com/acme/ops/runbooks/disk.md"',
                      blocks["CustomRepoRunbook"])

        bad = self.rules(SCRIPTS, HANCOCK_RUNBOOK_BASE_URL="not a url")
        self.assertEqual(bad.returncode, 1)
        self.assertIn("HANCOCK_RUNBOOK_BASE_URL", bad.stderr)


if __name__ == "__main__":
    unittest.main()
