"""Black-box tests of the command line: --help, --version, `check`, start-up errors of `serve`,
unknown options, HANCOCK_PORT and HANCOCK_LUA_PATH.
"""
import json
import os
import queue
import re
import shutil
import socket
import subprocess
import tempfile
import threading
import unittest

import harness
from harness import free_port
from harness import Server, request, write_scripts

HERE = os.path.dirname(os.path.abspath(__file__))
FIXTURE_SCRIPTS = os.path.join(HERE, "scripts")
RUNTIME_LUA = os.path.join(harness.SOURCE_DIR, "lua", "hancock.lua")

GOOD_ROUTE = 'local hk = require "hancock"\n\nhk.route("GET", "/ok", function()\n  return { ok = true }\nend)\n'


def clean_env(**extra):
    """The environment without any HANCOCK_* or LOG_LEVEL setting, plus `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("HANCOCK_") and k != "LOG_LEVEL"}
    env.update(extra)
    return env


def run(*args, env=None, timeout=10):
    return subprocess.run([harness.BIN, *args], env=env if env is not None else clean_env(),
                          capture_output=True, timeout=timeout)


class CliTest(unittest.TestCase):
    def assert_one_line_error(self, proc, *needles):
        self.assertEqual(proc.returncode, 1, proc)
        err = proc.stderr.decode("utf-8", "replace")
        self.assertEqual(len(err.splitlines()), 1, "expected one stderr line, got %r" % err)
        self.assertTrue(err.endswith("\n"), err)
        for needle in needles:
            self.assertIn(needle, err)
        return err.rstrip("\n")

    def check_error_line(self, proc):
        """`check` failed: exit 1, one line `file:line: message`. Returns the line."""
        self.assertEqual(proc.returncode, 1, proc)
        self.assertNotIn(b"ok", proc.stdout.lower())
        return self.assert_one_line_error(proc)

    # ---- help and version --------------------------------------------------------------------

    def test_help_lists_options(self):
        for args in (["--help"], ["-h"], ["serve", "--help"], ["check", "--help"]):
            proc = run(*args)
            self.assertEqual(proc.returncode, 0, (args, proc))
            self.assertEqual(proc.stderr, b"", args)
            out = proc.stdout.decode()
            for needle in ("serve", "check", "--listen", "--scripts", "--log-level", "--max-body",
                           "HANCOCK_PORT", "LOG_LEVEL", "HANCOCK_LUA_PATH"):
                self.assertIn(needle, out, (args, needle))

    def test_version(self):
        proc = run("--version")
        self.assertEqual(proc.returncode, 0)
        self.assertEqual(proc.stderr, b"")
        out = proc.stdout.decode()
        m = re.fullmatch(r"hancock (\d+\.\d+\.\d+\S*)\n", out)
        self.assertIsNotNone(m, out)
        # Scripts see the same version as hk.version.
        d = write_scripts({"v.lua": 'local hk = require "hancock"\n\nhk.route("GET", "/v", function()\n'
                                    '  return { version = hk.version }\nend)\n'})
        with Server(scripts=d) as server:
            status, _, body = request(server, "GET", "/v")
        self.assertEqual(json.loads(body), {"version": m.group(1)})
        self.assertEqual(server.proc.returncode, 0)

    # ---- check -------------------------------------------------------------------------------

    def test_check_good_scripts(self):
        proc = run("check", "--scripts", FIXTURE_SCRIPTS)
        self.assertEqual(proc.returncode, 0, proc)
        self.assertEqual(proc.stderr, b"")
        self.assertIn("ok", proc.stdout.decode().lower())
        proc = run("check", env=clean_env(HANCOCK_SCRIPTS=write_scripts({"a.lua": GOOD_ROUTE})))
        self.assertEqual(proc.returncode, 0, proc)
        self.assertIn("ok", proc.stdout.decode().lower())

    def test_check_syntax_error(self):
        d = write_scripts({
            "a_good.lua": GOOD_ROUTE,
            "b_bad.lua": 'local hk = require "hancock"\n\nlocal x = {\nhk.route("GET", "/x" function() end)\n',
        })
        line = self.check_error_line(run("check", "--scripts", d))
        self.assertRegex(line, "^" + re.escape(os.path.join(d, "b_bad.lua")) + r":4: \S")

    def test_check_runtime_error_at_load(self):
        d = write_scripts({"a.lua": GOOD_ROUTE,
                           "b.lua": 'local hk = require "hancock"\nlocal _ = hk\nerror("x")\n'})
        line = self.check_error_line(run("check", "--scripts", d))
        self.assertEqual(line, os.path.join(d, "b.lua") + ":3: x")

    def test_check_bad_route_pattern_points_at_the_script(self):
        d = write_scripts({"routes.lua": 'local hk = require "hancock"\n\n'
                                         'hk.route("GET", "no-leading-slash", function() end)\n'})
        line = self.check_error_line(run("check", "--scripts", d))
        self.assertRegex(line, "^" + re.escape(os.path.join(d, "routes.lua")) + r":3: .*no-leading-slash")
        d = write_scripts({"routes.lua": 'local hk = require "hancock"\n\n\n'
                                         'hk.route("GET", "/a/:", function() end)\n'})
        line = self.check_error_line(run("check", "--scripts", d))
        self.assertRegex(line, "^" + re.escape(os.path.join(d, "routes.lua")) + r":4: ")

    def test_check_error_in_required_module(self):
        d = write_scripts({"main.lua": 'local helper = require "helper"\nlocal _ = helper\n',
                           "helper.lua": 'local M = {}\n\nerror("helper broke")\nreturn M\n'})
        line = self.check_error_line(run("check", "--scripts", d))
        self.assertRegex(line, "^" + re.escape(os.path.join(d, "helper.lua")) + r":3: helper broke")

    def test_check_reports_first_failing_script_in_name_order(self):
        d = write_scripts({"b.lua": '\n\n\n\nerror("second")\n', "a.lua": '\nerror("first")\n'})
        line = self.check_error_line(run("check", "--scripts", d))
        self.assertEqual(line, os.path.join(d, "a.lua") + ":2: first")

    def test_check_missing_scripts_dir(self):
        d = os.path.join(tempfile.mkdtemp(prefix="hancock-cli-"), "does-not-exist")
        self.assert_one_line_error(run("check", "--scripts", d), d)

    # ---- serve start-up errors ---------------------------------------------------------------

    def test_serve_script_error_exits_1_with_one_line(self):
        d = write_scripts({"a.lua": GOOD_ROUTE,
                           "b.lua": 'local hk = require "hancock"\nlocal _ = hk\nerror("broken at load")\n'})
        proc = run("serve", "--listen", "127.0.0.1:0", "--scripts", d)
        self.assert_one_line_error(proc, os.path.join(d, "b.lua") + ":3:", "broken at load")
        self.assertNotIn(b"server_listening", proc.stdout)
        # The same with a syntax error.
        d = write_scripts({"a.lua": "local x = = 1\n"})
        proc = run("serve", "--listen", "127.0.0.1:0", "--scripts", d)
        self.assert_one_line_error(proc, os.path.join(d, "a.lua") + ":1:")

    def test_unknown_option_exits_1_with_one_line(self):
        for args in (["serve", "--bogus"], ["check", "--bogus"], ["--bogus"], ["serve", "--bogus=1"]):
            proc = run(*args)
            self.assert_one_line_error(proc, "--bogus")
            self.assertEqual(proc.stdout, b"", args)
        proc = run("frobnicate")
        self.assert_one_line_error(proc, "frobnicate")
        proc = run("serve", "--listen")
        self.assert_one_line_error(proc, "--listen")
        proc = run("serve", "--listen", "not-an-address", "--scripts", FIXTURE_SCRIPTS)
        self.assert_one_line_error(proc, "not-an-address")

    # ---- environment -------------------------------------------------------------------------

    def test_hancock_port_is_the_default_port(self):
        port = free_port()
        d = write_scripts({"a.lua": GOOD_ROUTE})
        proc = subprocess.Popen([harness.BIN, "serve", "--scripts", d],
                                env=clean_env(HANCOCK_PORT=str(port), LOG_LEVEL="INFO"),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        lines = queue.Queue()
        reader = threading.Thread(target=lambda: [lines.put(raw) for raw in proc.stdout] + [lines.put(None)],
                                  daemon=True)
        reader.start()
        try:
            listening = None
            while listening is None:
                raw = lines.get(timeout=10)
                if raw is None:
                    self.fail("hancock exited before listening: %r" % proc.stderr.read())
                ev = json.loads(raw)
                if ev.get("event") == "server_listening":
                    listening = ev
            self.assertEqual(listening["port"], port)
            with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
                s.sendall(b"GET /ok HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
                data = harness.read_until_closed(s)
            self.assertTrue(data.startswith(b"HTTP/1.1 200 "), data)
            self.assertTrue(data.endswith(b'{"ok":true}'), data)
        finally:
            proc.terminate()
            code = proc.wait(timeout=15)
            reader.join(5)
            proc.stdout.close()
            proc.stderr.close()
        self.assertEqual(code, 0)

    def test_hancock_lua_path_loads_the_runtime_from_a_directory(self):
        with open(RUNTIME_LUA, encoding="utf-8") as f:
            source = f.read()
        self.assertIn("\nreturn hk\n", source)
        runtime = tempfile.mkdtemp(prefix="hancock-runtime-")
        with open(os.path.join(runtime, "hancock.lua"), "w", encoding="utf-8") as f:
            f.write(source.replace("\nreturn hk\n", '\nhk.dev_marker = "from HANCOCK_LUA_PATH"\n\nreturn hk\n'))
        self.addCleanup(shutil.rmtree, runtime, True)
        d = write_scripts({"a.lua": ('local hk = require "hancock"\n\n'
                                     'hk.route("GET", "/marker", function()\n'
                                     '  return { marker = hk.dev_marker or "embedded" }\nend)\n')})
        with Server(scripts=d, env={"HANCOCK_LUA_PATH": runtime}) as server:
            status, _, body = request(server, "GET", "/marker")
        self.assertEqual((status, json.loads(body)), (200, {"marker": "from HANCOCK_LUA_PATH"}))
        self.assertEqual(server.proc.returncode, 0)
        # Without it the embedded runtime (no marker) is used; an empty value means unset.
        with Server(scripts=d, env={"HANCOCK_LUA_PATH": ""}) as server:
            status, _, body = request(server, "GET", "/marker")
        self.assertEqual(json.loads(body), {"marker": "embedded"})
        # `check` loads the runtime the same way.
        strict = write_scripts({"a.lua": 'local hk = require "hancock"\n\nassert(hk.dev_marker, "no marker")\n'})
        self.assertEqual(run("check", "--scripts", strict, env=clean_env(HANCOCK_LUA_PATH=runtime)).returncode, 0)
        proc = run("check", "--scripts", strict)
        self.assertEqual(proc.returncode, 1)
        self.assertIn(b"no marker", proc.stderr)


if __name__ == "__main__":
    unittest.main()
