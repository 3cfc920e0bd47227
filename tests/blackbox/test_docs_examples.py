"""The README and docs/ against the real thing, so they cannot drift: every curl example run
against a started host (shipped scripts, a fake model backend), with its documented answer; the
README's first example as printed, on a fresh scripts directory; every complete Lua example
loaded; the command line, the API's route table, the health and deploy examples, the alert
runbooks, and every file and section the docs cite.

Conventions the docs keep so that this test can read them:
- a Lua example that is an addition to scripts/ starts with `-- scripts/<name>.lua`; one that
  starts with `local hk = require "hancock"` stands alone;
- in a `console` block, `$ command` is followed by its output; in an `sh` block, a comment line
  `# {…}` after a curl is the JSON it answers. A string "…" in an expected JSON value matches any
  text there.
"""
import glob
import json
import os
import re
import shutil
import subprocess
import tempfile
import unittest
import urllib.request

import yaml

from fakes import FakeLLM
import harness
from harness import SOURCE_DIR, Server, request

ROOT = os.path.abspath(SOURCE_DIR)
SCRIPTS = os.path.join(ROOT, "scripts")
DOCS = ["README.md", "monitoring/README.md"] + sorted(
    os.path.relpath(p, ROOT) for p in glob.glob(os.path.join(ROOT, "docs", "*.md"))
    if not p.endswith("bench.md"))  # docs/bench.md is the benchmark's, tested with it
WEBHOOK_SECRET = "docs-webhook-secret"
ADMIN_TOKEN = "docs-admin-token-0123456789abcdef"

CLEAN_ENV = {name: "" for name in (
    "HANCOCK_API_KEY", "HANCOCK_WEBHOOK_SECRET", "HANCOCK_SLACK_WEBHOOK", "HANCOCK_TEAMS_WEBHOOK",
    "HANCOCK_LLM_BACKEND", "HANCOCK_RATE_LIMIT", "HANCOCK_RATE_LIMIT_WINDOW", "HANCOCK_ADMIN_TOKEN",
    "OLLAMA_BASE_URL", "OLLAMA_MODEL", "OLLAMA_CODER_MODEL", "NVIDIA_BASE_URL", "NVIDIA_API_KEY",
    "OPENAI_BASE_URL", "OPENAI_API_KEY", "OPENAI_MODEL", "PROMETHEUS_URL", "ALERTMANAGER_URL",
    "HANCOCK_RUNBOOK_BASE_URL")}

# Paths the docs name as patterns, not as files.
PLACEHOLDERS = {"scripts/util.lua", "scripts/util/init.lua", "scripts/name.lua", "scripts/name/init.lua"}


def read(rel):
    with open(os.path.join(ROOT, rel), encoding="utf-8") as f:
        return f.read()


def blocks(rel):
    """(language, text, line) of every fenced block of a Markdown file."""
    text = read(rel)
    out = []
    for m in re.finditer(r"^( *)```(\w*)\n(.*?)^\1```", text, re.S | re.M):
        body = "\n".join(line[len(m.group(1)):] for line in m.group(3).split("\n"))
        out.append((m.group(2), body, text[:m.start()].count("\n") + 1))
    return out


def slug(heading):
    """GitHub's anchor for a heading."""
    heading = re.sub(r"[`*]", "", heading.strip().lower())
    return re.sub(r"[^\w\- ]", "", heading).replace(" ", "-")


def matches(expected, actual):
    """expected (parsed JSON) equals actual, "…" in a string matching any text."""
    if isinstance(expected, str) and "…" in expected:
        pattern = ".*".join(re.escape(part) for part in expected.split("…"))
        return isinstance(actual, str) and re.fullmatch(pattern, actual, re.S) is not None
    if isinstance(expected, dict):
        return isinstance(actual, dict) and expected.keys() == actual.keys() and all(
            matches(v, actual[k]) for k, v in expected.items())
    if isinstance(expected, list):
        return isinstance(actual, list) and len(expected) == len(actual) and all(
            matches(e, a) for e, a in zip(expected, actual))
    return expected == actual


def first_example():
    """The README's first Lua example and the console block after it: (name, source, block)."""
    found = blocks("README.md")
    for i, (lang, body, _) in enumerate(found):
        if lang == "lua":
            name = re.match(r"-- scripts/(\S+\.lua)\n", body).group(1)
            console = next(b for lang2, b, _ in found[i + 1:] if lang2 == "console")
            return name, body, console
    raise AssertionError("README.md has no Lua example")


class DocsExamplesTest(harness.ServersTestCase):
    # ---- helpers ---------------------------------------------------------------------------

    def scripts_copy(self, extra=None):
        d = tempfile.mkdtemp(prefix="hancock-docs-")
        self.addCleanup(shutil.rmtree, d, True)
        shutil.copytree(SCRIPTS, d, dirs_exist_ok=True)
        for name, source in (extra or {}).items():
            with open(os.path.join(d, name), "w") as f:
                f.write(source)
        return d

    def serve(self, scripts, **env):
        server = Server(scripts=scripts, env=dict(CLEAN_ENV, **{k: str(v) for k, v in env.items()}))
        self.servers.append(server)
        return server

    def shell(self, server, script, **env):
        """Runs a documented command with localhost:5000 meaning the test's server."""
        script = script.replace("localhost:5000", f"127.0.0.1:{server.port}")
        proc = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=30,
                              env=dict(os.environ, **env))
        self.assertEqual(proc.returncode, 0, (script, proc.stderr))
        return proc.stdout

    def assert_answer(self, expected, output, where):
        expected = expected.strip()
        try:
            want = json.loads(expected)
        except ValueError:
            self.assertEqual(output.strip(), expected, where)
            return
        got = json.loads(output)
        self.assertTrue(matches(want, got), f"{where}: documented {expected}\ngot {output}")

    def check(self, scripts):
        return subprocess.run([harness.BIN, "check", "--scripts", scripts], capture_output=True,
                              text=True, timeout=30, env=dict(os.environ, **CLEAN_ENV))

    # ---- the README's first example, as a new user runs it ------------------------------------

    def test_readme_first_example_works_as_printed(self):
        name, source, console = first_example()
        d = self.scripts_copy()
        server = self.serve(d)  # `make run`: the shipped scripts, no model backend
        with open(os.path.join(d, name + ".tmp"), "w") as f:  # saved while it serves
            f.write(source)
        os.rename(os.path.join(d, name + ".tmp"), os.path.join(d, name))
        server.wait_event("reload_succeeded", timeout=15)
        lines = console.strip().split("\n")
        commands = [i for i, line in enumerate(lines) if line.startswith("$ ")]
        self.assertTrue(commands, console)
        for n, i in enumerate(commands):
            end = commands[n + 1] if n + 1 < len(commands) else len(lines)
            output = self.shell(server, lines[i][2:])
            self.assertEqual(output.strip(), "\n".join(lines[i + 1:end]).strip(), lines[i])

    def test_documented_duplicate_route_message_is_the_real_one(self):
        route = 'local hk = require "hancock"\nhk.route("POST", "/v1/chat", function() return {} end)\n'
        d = self.scripts_copy({"chat.lua": route})
        proc = self.check(d)
        self.assertEqual(proc.returncode, 1)
        message = proc.stderr.strip().replace(d + "/", "scripts/")
        for rel in ("README.md", "docs/lua-api.md"):
            self.assertIn("`%s`" % message, read(rel), rel)

    # ---- every curl example against a started host ------------------------------------------

    def curl_examples(self):
        """(file, line, commands, expected output) of every example that talks to localhost:5000."""
        found = []
        for rel in DOCS:
            for lang, body, line in blocks(rel):
                if "localhost:5000" not in body:
                    continue
                if lang == "console":
                    lines = body.strip().split("\n")
                    commands = [i for i, text in enumerate(lines) if text.startswith("$ ")]
                    for n, i in enumerate(commands):
                        end = commands[n + 1] if n + 1 < len(commands) else len(lines)
                        found.append((rel, line, lines[i][2:], "\n".join(lines[i + 1:end])))
                elif lang == "sh":
                    expected = [text[2:] for text in body.split("\n") if text.startswith("# {")]
                    self.assertEqual(len(expected), 1, f"{rel}:{line}: document the answer as '# {{…}}'")
                    found.append((rel, line, body, expected[0]))
                else:
                    self.fail(f"{rel}:{line}: a {lang or 'plain'} block with a command for localhost:5000")
        return found

    def test_curl_examples_answer_as_documented(self):
        llm = FakeLLM()
        self.fakes.append(llm)
        name, source, _ = first_example()
        server = self.serve(self.scripts_copy({name: source}), OLLAMA_BASE_URL=llm.url,
                            HANCOCK_WEBHOOK_SECRET=WEBHOOK_SECRET, HANCOCK_ADMIN_TOKEN=ADMIN_TOKEN)
        examples = self.curl_examples()
        self.assertGreaterEqual(len(examples), 4, examples)
        for rel, line, commands, expected in examples:
            with self.subTest(example=f"{rel}:{line}"):
                output = self.shell(server, commands, HANCOCK_WEBHOOK_SECRET=WEBHOOK_SECRET,
                                    HANCOCK_ADMIN_TOKEN=ADMIN_TOKEN)
                self.assert_answer(expected, output, f"{rel}:{line}")

    # ---- Lua examples ----------------------------------------------------------------------

    def test_complete_lua_examples_load(self):
        loaded = 0
        for rel in DOCS:
            for lang, body, line in blocks(rel):
                if lang != "lua":
                    continue
                addition = re.match(r"-- scripts/(\S+\.lua)\n", body)
                if addition:
                    d = self.scripts_copy({addition.group(1): body})  # next to the shipped scripts
                elif body.startswith('local hk = require "hancock"\n'):
                    d = tempfile.mkdtemp(prefix="hancock-docs-")
                    self.addCleanup(shutil.rmtree, d, True)
                    with open(os.path.join(d, "example.lua"), "w") as f:
                        f.write(body)
                else:
                    continue  # a fragment
                with self.subTest(example=f"{rel}:{line}"):
                    proc = self.check(d)
                    self.assertEqual(proc.returncode, 0, proc.stderr)
                    loaded += 1
        self.assertGreaterEqual(loaded, 3)

    # ---- the command line ------------------------------------------------------------------

    def test_readme_command_line_lists_every_command(self):
        help_text = subprocess.run([harness.BIN, "--help"], capture_output=True, text=True).stdout
        commands = re.findall(r"^(?:Usage:)?\s+hancock \[?(\w[\w-]*)\]?", help_text, re.M)
        self.assertEqual(set(commands) - {"serve"}, {"check", "rules", "dashboard", "test-alerts"}, help_text)
        block = next(b for lang, b, _ in blocks("README.md") if lang == "" and "hancock --help" in b)
        for command in commands:
            self.assertRegex(block, r"hancock \[?%s\]?" % command)

    # ---- what the docs cite ------------------------------------------------------------------

    def test_docs_cite_files_and_sections_that_exist(self):
        anchors = {}

        def sections(path):
            if path not in anchors:
                with open(path, encoding="utf-8") as f:
                    anchors[path] = {slug(line.lstrip("#")) for line in f if line.startswith("#")}
            return anchors[path]

        # The files the examples ask the reader to create.
        created = {"scripts/" + m.group(1) for rel in DOCS for lang, body, _ in blocks(rel)
                   for m in [re.match(r"-- scripts/(\S+\.lua)\n", body)] if lang == "lua" and m}
        problems = []
        for rel in DOCS:
            text = read(rel)
            base = os.path.dirname(os.path.join(ROOT, rel))
            for target, anchor in re.findall(r"\]\(([^)#\s]*)(?:#([^)\s]+))?\)", text):
                if target.startswith(("http://", "https://")):
                    continue
                path = os.path.normpath(os.path.join(base, target)) if target else os.path.join(ROOT, rel)
                if not os.path.exists(path):
                    problems.append(f"{rel}: link to {target}, which does not exist")
                elif anchor and path.endswith(".md") and anchor not in sections(path):
                    problems.append(f"{rel}: link to {target}#{anchor}, a section that does not exist")
            for path in re.findall(r"`((?:host|lua|scripts|tests|docs|deploy|monitoring|vendor)/[\w./-]*)`", text):
                if path not in PLACEHOLDERS | created and not os.path.exists(os.path.join(ROOT, path)):
                    problems.append(f"{rel}: cites {path}, which is not in the repository")
            for path in re.findall(r"(?<![\w.])\.\./[\w./-]+", text):
                if not os.path.normpath(os.path.join(base, path)).startswith(ROOT + os.sep):
                    problems.append(f"{rel}: cites {path}, outside the repository")
        self.assertEqual(problems, [])

    # ---- the API's route table ----------------------------------------------------------------

    def test_api_route_table_matches_the_responses(self):
        rows = re.findall(r"^\| `(GET|POST) (/v1/\S+)` \| [^|]* \| ([^|]*) \| ([^|]*) \|$", read("docs/api.md"), re.M)
        self.assertGreaterEqual(len(rows), 12)
        llm = FakeLLM()
        self.fakes.append(llm)
        server = self.serve(SCRIPTS, OLLAMA_BASE_URL=llm.url, HANCOCK_RATE_LIMIT="100000")

        def names(cell):
            return re.findall(r"`(\w+)`", re.sub(r"\([^)]*\)", "", cell))

        for method, path, fields, response in rows:
            with self.subTest(route=path):
                required = re.findall(r"\*\*`(\w+)`\*\*", fields)
                optional = [n for n in names(fields) if n not in required
                            and n not in ("history", "stream", "mode", "output")]  # not plain strings
                body = {name: "a documented %s" % name for name in required + optional}
                status, headers, raw = request(server, method, path, body=body if method == "POST" else None)
                self.assertEqual(status, 200, raw)
                self.assertEqual(sorted(json.loads(raw)), sorted(names(response)))
                self.assertIn("x-ratelimit-limit", headers)

    # ---- HTTP framing ------------------------------------------------------------------------

    def test_http_md_framing_is_what_the_server_sends(self):
        text = read("docs/http.md")
        self.assertIn("`HEAD /metrics`, which says the same", text)
        server = self.serve(os.path.join(os.path.dirname(os.path.abspath(__file__)), "scripts"))
        for method in ("GET", "HEAD"):
            status, headers, _ = request(server, method, "/metrics")
            self.assertEqual((status, headers.get("transfer-encoding")), (200, "chunked"), method)
            self.assertNotIn("content-length", headers)
            status, headers, body = request(server, method, "/health")
            self.assertEqual(int(headers["content-length"]), len(request(server, "GET", "/health")[2]))

    # ---- health.md's Kubernetes example is the manifest -------------------------------------

    def test_health_md_kubernetes_example_is_the_manifest(self):
        example = next(b for lang, b, _ in blocks("docs/health.md") if lang == "yaml" and "livenessProbe" in b)
        documented = yaml.safe_load(example)["containers"][0]
        with open(os.path.join(ROOT, "deploy", "k8s", "deployment.yaml")) as f:
            container = yaml.safe_load(f)["spec"]["template"]["spec"]["containers"][0]
        for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
            with self.subTest(probe=probe):
                self.assertIn(probe, container)
                self.assertEqual(documented[probe]["httpGet"]["path"], container[probe]["httpGet"]["path"])
                for key in ("periodSeconds", "failureThreshold"):
                    self.assertEqual(documented[probe][key], container[probe][key], key)

    # ---- monitoring.md: runbooks and the Grafana import ------------------------------------

    def test_every_alert_has_its_runbook_as_generated(self):
        proc = subprocess.run([harness.BIN, "rules", "--scripts", SCRIPTS], capture_output=True, text=True,
                              env=dict(os.environ, **CLEAN_ENV))
        rules = [r for g in yaml.safe_load(proc.stdout)["groups"] for r in g["rules"]]
        text = read("docs/monitoring.md")
        documented = dict(re.findall(r"^### (Hancock\w+)\n\n(.*?)(?=^### |\Z)", text, re.S | re.M))
        self.assertEqual(sorted(documented), sorted(r["alert"] for r in rules))
        for rule in rules:
            with self.subTest(alert=rule["alert"]):
                section = documented[rule["alert"]]
                self.assertRegex(section, r"for %s — \*\*%s\*\*" % (rule["for"], rule["labels"]["severity"]))
                self.assertEqual(rule["annotations"]["runbook_url"], "docs/monitoring.md#" + rule["alert"].lower())

    def test_monitoring_md_threshold_example_is_the_script(self):
        example = next(b for lang, b, _ in blocks("docs/monitoring.md") if lang == "lua" and "HancockHighErrorRate" in b)
        source = read("scripts/alerts.lua")
        for line in example.split("\n"):
            if line.strip() and "..." not in line:  # "..." marks what the example leaves out
                self.assertIn(line, source)

    def test_grafana_import_as_documented(self):
        with open(os.path.join(ROOT, "monitoring", "grafana_dashboard.json")) as f:
            dashboard = json.load(f)
        text = read("docs/monitoring.md")
        self.assertNotIn("__inputs", dashboard)
        self.assertIn("The import asks for no data source: the dashboard has no `__inputs`", text)
        variables = {v["name"]: v for v in dashboard["templating"]["list"]}
        self.assertEqual(variables["datasource"]["type"], "datasource")

    # ---- deploy.md's compose table is the compose file --------------------------------------

    def test_deploy_md_compose_table_is_the_compose_file(self):
        with open(os.path.join(ROOT, "deploy", "docker-compose.yml")) as f:
            compose = yaml.safe_load(f)
        text = read("docs/deploy.md")
        table = re.search(r"\| service \| port \| notes \|\n\|---\|---\|---\|\n((?:\|.*\n)+)", text).group(1)
        documented = dict(re.findall(r"^\| ([\w-]+) \| ([\d—]+) \|", table, re.M))
        published = {name: ",".join(p.split(":")[-1] for p in s.get("ports", [])) or "—"
                     for name, s in compose["services"].items()}
        self.assertEqual(documented, published)
        for service in compose["services"].values():
            if not service["image"].startswith("hancock:"):
                self.assertIn("`%s`" % service["image"], text)


if __name__ == "__main__":
    unittest.main()
