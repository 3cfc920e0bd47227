#!/usr/bin/env python3
"""The monitoring stack, natively: the real hancock, a real Prometheus scraping it with the rules
`hancock rules` generates, and a real Alertmanager — the services of deploy/docker-compose.yml
without a container engine. All on 127.0.0.1 with free ports; hancock's PROMETHEUS_URL and
ALERTMANAGER_URL point at the two.

    python3 tests/stack/stack.py            # start it for a person (make stack)
    (imported by tests/blackbox/test_stack.py, which drives traffic and checks alerts)

Ctrl-C, SIGTERM or SIGHUP stops all three and removes the temporary directory, and so does the
end of whatever started this process (`make stack`, a shell, a pyenv shim: PR_SET_PDEATHSIG sends
it SIGTERM). Should this process be killed outright, the kernel sends the three SIGTERM the same
way, so none is left behind (the directory then is: its path is printed at start).

    python3 tests/stack/stack.py --fake-llm # hancock's model backends are fakes on loopback

With fake_llm=True (--fake-llm), hancock talks to a fake Ollama (tests/blackbox/fakes.py: its
native /api/chat, streamed as NDJSON, with Ollama's timers; /api/tags and /api/ps with the
shipped models resident) and to a fake OpenAI as its fallback, in this process, so the LLM
metrics and the dashboard's LLM panels have data without a GPU; `stack.ollama` and
`stack.openai` are the fakes, whose knobs a test may turn.

Environment: HANCOCK_BIN (default build/hancock), STACK_RULES_FOR / STACK_RULES_WINDOW (the
`for:` and rate windows passed to `hancock rules`; short in tests, real ones by default).
"""
import argparse
import ctypes
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
BIN = os.path.abspath(os.environ.get("HANCOCK_BIN") or os.path.join(ROOT, "build", "hancock"))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


PR_SET_PDEATHSIG = 1
_libc = ctypes.CDLL(None, use_errno=True)


def _die_with_parent():
    """In the child, before exec: SIGTERM when the process that started it exits."""
    _libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def find(*names):
    for name in names:
        path = shutil.which(name)
        if path:
            return path
    return None


# The models the shipped scripts ask for, as the fake Ollama lists them (pulled and resident).
FAKE_OLLAMA_MODELS = ("llama3.1:8b", "qwen2.5-coder:7b")
FAKE_OPENAI_MODEL = "gpt-4o-mini"


def start_fake_llms():
    """A fake Ollama and a fake OpenAI (tests/blackbox/fakes.py), answering like the real ones
    with a little latency; returns (ollama, openai, the environment that points hancock at them)."""
    blackbox = os.path.join(ROOT, "tests", "blackbox")
    if blackbox not in sys.path:
        sys.path.insert(0, blackbox)
    from fakes import FakeLLM  # noqa: E402 (the black-box tests' fakes, shared)

    ollama = FakeLLM(reply="a fake answer from the stack's Ollama, one word at a time",
                     delay_ms=40, usage={"prompt_tokens": 42, "completion_tokens": 11})
    ollama.stream_gap_ms = 5
    ollama.timings = {"load": 0.003, "prefill": 0.012, "decode": 0.03}
    ollama.tags = list(FAKE_OLLAMA_MODELS)
    ollama.ps_models = [{"name": m, "model": m, "size": 5 * 1024 ** 3, "size_vram": 5 * 1024 ** 3,
                         "context_length": 8192} for m in FAKE_OLLAMA_MODELS]
    try:
        openai = FakeLLM(reply="a fake answer from the stack's OpenAI", delay_ms=60,
                         usage={"prompt_tokens": 40, "completion_tokens": 9, "total_tokens": 49})
    except BaseException:
        ollama.stop()
        raise
    openai.models = [FAKE_OPENAI_MODEL]
    env = {"HANCOCK_LLM_BACKEND": "ollama", "OLLAMA_BASE_URL": ollama.url, "OLLAMA_API": "native",
           "OLLAMA_MODEL": FAKE_OLLAMA_MODELS[0], "OLLAMA_CODER_MODEL": FAKE_OLLAMA_MODELS[1],
           "OPENAI_BASE_URL": openai.url, "OPENAI_API_KEY": "sk-fake-stack",
           "OPENAI_MODEL": FAKE_OPENAI_MODEL, "OPENAI_CODER_MODEL": FAKE_OPENAI_MODEL}
    return ollama, openai, env


class Stack:
    # The fake backends, with fake_llm (class attributes too, for subclasses that set up their
    # own processes without Stack.__init__: tests/fleet/fleet.py).
    ollama = openai = None

    def __init__(self, scripts=os.path.join(ROOT, "scripts"), rules_for=None, rules_window=None,
                 scrape_interval="1s", env=None, fake_llm=False):
        self.dir = tempfile.mkdtemp(prefix="hancock-stack-")
        self.procs = []
        self.hancock_log = None
        try:
            self._start(scripts, rules_for, rules_window, scrape_interval, env, fake_llm)
        except BaseException:
            self.stop()  # what has started so far, and the directory
            raise

    def _start(self, scripts, rules_for, rules_window, scrape_interval, env, fake_llm=False):
        self.hancock_port, self.prom_port, self.am_port = free_port(), free_port(), free_port()
        rules_env = dict(os.environ)
        if rules_for:
            rules_env["HANCOCK_RULES_FOR"] = rules_for
        if rules_window:
            rules_env["HANCOCK_RULES_WINDOW"] = rules_window
        rules = subprocess.run([BIN, "rules", "--scripts", scripts], capture_output=True, text=True,
                               env=rules_env, check=True).stdout
        with open(os.path.join(self.dir, "rules.yml"), "w") as f:
            f.write(rules)
        with open(os.path.join(self.dir, "prometheus.yml"), "w") as f:
            f.write(f"""global:
  scrape_interval: {scrape_interval}
  evaluation_interval: {scrape_interval}
rule_files: [rules.yml]
alerting:
  alertmanagers:
    - static_configs:
        - targets: ['127.0.0.1:{self.am_port}']
scrape_configs:
  - job_name: hancock
    static_configs:
      - targets: ['127.0.0.1:{self.hancock_port}']
""")
        with open(os.path.join(self.dir, "alertmanager.yml"), "w") as f:
            f.write("""route:
  receiver: log
  group_wait: 1s
  group_interval: 1s
receivers:
  - name: log
""")
        hancock_env = dict(os.environ)
        hancock_env.update({"PROMETHEUS_URL": f"http://127.0.0.1:{self.prom_port}",
                            "ALERTMANAGER_URL": f"http://127.0.0.1:{self.am_port}"})
        if fake_llm:
            self.ollama, self.openai, llm_env = start_fake_llms()
            hancock_env.update(llm_env)
        hancock_env.update(env or {})
        self.hancock_log = open(os.path.join(self.dir, "hancock.log"), "w")
        self.start([BIN, "serve", "--listen", f"127.0.0.1:{self.hancock_port}", "--scripts", scripts],
                   env=hancock_env, stdout=self.hancock_log)
        am = find("prometheus-alertmanager", "alertmanager")
        self.start([am, f"--config.file={self.dir}/alertmanager.yml", f"--storage.path={self.dir}/am",
                    f"--web.listen-address=127.0.0.1:{self.am_port}",
                    f"--cluster.listen-address=", "--log.level=warn"])
        self.start([find("prometheus"), f"--config.file={self.dir}/prometheus.yml",
                    f"--storage.tsdb.path={self.dir}/prom", f"--web.listen-address=127.0.0.1:{self.prom_port}",
                    "--log.level=warn"])
        # Up means answering: the addresses printed work at once, and a stop that follows is
        # never one that races a process's start.
        for port, path in ((self.hancock_port, "/health/live"), (self.am_port, "/-/ready"),
                           (self.prom_port, "/-/ready")):
            self.wait(lambda port=port, path=path: self.get(port, path)[0] == 200,
                      f"127.0.0.1:{port}{path} answering", timeout=60)

    def start(self, argv, env=None, stdout=subprocess.DEVNULL):
        self.procs.append(subprocess.Popen(argv, env=env, stdout=stdout, stderr=subprocess.DEVNULL,
                                           cwd=self.dir, preexec_fn=_die_with_parent))

    def get(self, port, path, **params):
        url = f"http://127.0.0.1:{port}{path}" + ("?" + urllib.parse.urlencode(params) if params else "")
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status, r.read()

    def prom(self, path, **params):
        return json.loads(self.get(self.prom_port, path, **params)[1])["data"]

    def query(self, expr):
        return self.prom("/api/v1/query", query=expr)["result"]

    def wait(self, predicate, what, timeout=60):
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            for p in self.procs:
                if p.poll() is not None:
                    raise RuntimeError(f"{p.args[0]} exited with {p.returncode} while waiting for {what}")
            try:
                last = predicate()
                if last:
                    return last
            except (OSError, ValueError, KeyError):
                pass
            time.sleep(0.5)  # polling other processes' HTTP APIs: there is no event to wait on
        raise TimeoutError(f"timed out waiting for {what}; last answer: {last!r}")

    def stop(self):
        """Stops every process (SIGTERM, then SIGKILL after 20 s) and removes the directory.
        Returns hancock's exit status. Safe to call twice."""
        codes = []
        for p in reversed(self.procs):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in self.procs:
            try:
                codes.append(p.wait(timeout=20))
            except subprocess.TimeoutExpired:
                p.kill()
                codes.append(p.wait())
        if self.hancock_log is not None:
            self.hancock_log.close()
        for fake in (self.ollama, self.openai):
            if fake is not None:
                fake.stop()
        self.ollama = self.openai = None
        shutil.rmtree(self.dir, ignore_errors=True)
        return codes[0] if codes else None  # hancock's


class _Stop(Exception):
    """Raised by the signal handler to leave signal.pause()."""


def _stop_on_signal(signum, _frame):
    raise _Stop(signum)


def run_until_signal(start, describe, name):
    """Starts what start() returns (an object with stop()), prints describe(it) and waits for
    SIGINT, SIGTERM or SIGHUP, or for the parent to go away; then stops it and says so. A signal
    while it starts stops what has started so far. Returns the exit status (0)."""
    # Handlers first: a SIGTERM while the services start must stop what has started so far.
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, _stop_on_signal)
    running = None
    try:
        parent = os.getppid()
        _die_with_parent()
        if os.getppid() != parent:  # the parent is gone already: no signal will come
            raise _Stop(signal.SIGTERM)
        running = start()
        print(describe(running), flush=True)
        while True:
            signal.pause()
    except _Stop:
        pass
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(signum, signal.SIG_IGN)  # a second signal must not cut the cleanup short
        if running is not None:
            running.stop()
    print(f"{name} stopped", flush=True)
    return 0


def main(argv=None):
    parser = argparse.ArgumentParser(description="hancock + Prometheus + Alertmanager, natively")
    parser.add_argument("--fake-llm", action="store_true",
                        help="point hancock at a fake Ollama (and a fake OpenAI fallback) on loopback")
    args = parser.parse_args(argv)

    def describe(stack):
        lines = [f"hancock      http://127.0.0.1:{stack.hancock_port}/health"]
        if stack.ollama is not None:
            lines.append(f"fake ollama  {stack.ollama.url} (fallback: fake openai {stack.openai.url})")
        lines += [f"prometheus   http://127.0.0.1:{stack.prom_port}/alerts",
                  f"alertmanager http://127.0.0.1:{stack.am_port}/",
                  f"logs in {stack.dir}; Ctrl-C (or SIGTERM) stops everything"]
        return "\n".join(lines)

    return run_until_signal(lambda: Stack(fake_llm=args.fake_llm), describe, "stack")


if __name__ == "__main__":
    sys.exit(main())
