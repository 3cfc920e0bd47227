#!/usr/bin/env python3
"""A fleet, natively: replicas of the real hancock on free 127.0.0.1 ports, each serving its own
copy of the same scripts, and one real Prometheus that finds them through file-based service
discovery — a JSON targets file rewritten when a replica is added or removed, standing in for
Kubernetes pod discovery — and evaluates the rules `hancock rules` generates.

    python3 tests/fleet/fleet.py            # three replicas for a person (make fleet)
    (imported by tests/blackbox/test_fleet.py, which checks the dashboard's queries, the
     per-instance alerts and a rolling scripts change through Prometheus' HTTP API)

Each replica's scripts directory is laid out as the kubelet lays out a mounted ConfigMap: the files
live in a versioned directory `..<version>/`, `..data` links to it, and every top-level entry
links through `..data`. update_scripts() changes a replica's scripts as the kubelet does, by
swapping `..data` atomically, so a rollout here takes the path a ConfigMap change takes in a pod.

Stopping works as in tests/stack/stack.py (whose process helpers this reuses): Ctrl-C, SIGTERM or
SIGHUP stops everything and removes the temporary directory; the kernel stops the children should
this process be killed outright (PR_SET_PDEATHSIG).

Environment: HANCOCK_BIN (default build/hancock), FLEET_REPLICAS (default 3).
"""
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "stack"))
from stack import BIN, ROOT, Stack, find, free_port, run_until_signal  # noqa: E402

JOB = "hancock"


class Replica:
    """One hancock process of the fleet: its index (the `pod` label), port, scripts directory
    (a ConfigMap-style volume), log file and process."""

    def __init__(self, index, port, scripts, log, proc):
        self.index, self.port, self.scripts, self.log, self.proc = index, port, scripts, log, proc
        self.version = 1

    @property
    def instance(self):
        """The `instance` label Prometheus gives its series."""
        return f"127.0.0.1:{self.port}"

    @property
    def pod(self):
        return f"hancock-{self.index}"


class Fleet(Stack):
    """Replicas and one Prometheus. Stack's helpers serve it: get(port, path), prom(path),
    query(expr), wait(predicate, what), stop(). `replicas` lists every replica started, in order;
    `discovered` those in the targets file."""

    def __init__(self, replicas=3, scripts=os.path.join(ROOT, "scripts"), extra_scripts=None,
                 rules_for=None, rules_window=None, scrape_interval="1s", workers=1, env=None):
        self.dir = tempfile.mkdtemp(prefix="hancock-fleet-")
        self.procs, self.replicas, self.discovered = [], [], []
        self.hancock_log = None  # Stack.stop closes it; the replicas' logs are closed by stop()
        self._source, self._extra = scripts, dict(extra_scripts or {})
        self._workers, self._env = workers, dict(env or {})
        try:
            self._start(replicas, rules_for, rules_window, scrape_interval)
        except BaseException:
            self.stop()
            raise

    # ---- start ---------------------------------------------------------------------------------

    def _start(self, replicas, rules_for, rules_window, scrape_interval):
        self.prom_port = free_port()
        os.makedirs(os.path.join(self.dir, "targets"))
        self._write_targets()  # an empty list first: Prometheus starts with nothing to scrape
        with open(os.path.join(self.dir, "rules.yml"), "w") as rules:
            subprocess.run([BIN, "rules", "--scripts", self._source], stdout=rules, check=True,
                           env=dict(os.environ, HANCOCK_RULES_FOR=rules_for or "",
                                    HANCOCK_RULES_WINDOW=rules_window or ""))
        # JSON is YAML. refresh_interval is the fallback: Prometheus watches the targets directory
        # (inotify) and passes a rewritten file on within its discovery manager's 5 s update cycle.
        config = {
            "global": {"scrape_interval": scrape_interval, "evaluation_interval": scrape_interval},
            "rule_files": ["rules.yml"],
            "scrape_configs": [{"job_name": JOB, "file_sd_configs": [
                {"files": ["targets/*.json"], "refresh_interval": "5s"}]}],
        }
        with open(os.path.join(self.dir, "prometheus.yml"), "w") as f:
            json.dump(config, f, indent=2)
        for _ in range(replicas):
            self.add()
        self.start([find("prometheus"), f"--config.file={self.dir}/prometheus.yml",
                    f"--storage.tsdb.path={self.dir}/prom", f"--web.listen-address=127.0.0.1:{self.prom_port}",
                    "--log.level=warn"])
        self.wait(lambda: self.get(self.prom_port, "/-/ready")[0] == 200, "Prometheus ready")

    def add(self):
        """Starts one more replica, waits until it answers, and adds it to the targets file.
        Returns it."""
        index = len(self.replicas)
        root = os.path.join(self.dir, f"replica-{index}")
        scripts = os.path.join(root, "scripts")
        os.makedirs(scripts)
        shutil.copytree(self._source, os.path.join(scripts, "..v1"))
        self._write_files(os.path.join(scripts, "..v1"), self._extra)
        os.symlink("..v1", os.path.join(scripts, "..data"))
        self._link_entries(scripts)
        port = free_port()
        log = open(os.path.join(root, "hancock.log"), "w")
        argv = [BIN, "serve", "--listen", f"127.0.0.1:{port}", "--scripts", scripts]
        if self._workers:
            argv += ["--workers", str(self._workers)]
        self.start(argv, env=dict(os.environ, **self._env), stdout=log)
        replica = Replica(index, port, scripts, log, self.procs[-1])
        self.replicas.append(replica)
        self.wait(lambda: self.get(port, "/health/live")[0] == 200, f"{replica.pod} answering")
        self.discovered.append(replica)
        self._write_targets()
        return replica

    # ---- discovery -----------------------------------------------------------------------------

    def _write_targets(self):
        """Rewrites the targets file atomically (Prometheus must never read half of one)."""
        groups = [{"targets": [r.instance], "labels": {"pod": r.pod}} for r in self.discovered]
        path = os.path.join(self.dir, "targets", "hancock.json")
        with open(path + ".tmp", "w") as f:
            json.dump(groups, f, indent=2)
        os.replace(path + ".tmp", path)

    def targets(self):
        """Prometheus' active targets of the job: {instance: health}."""
        return {t["labels"]["instance"]: t["health"] for t in self.prom("/api/v1/targets")["activeTargets"]
                if t["labels"].get("job") == JOB}

    def wait_discovered(self, timeout=30):
        """Until Prometheus scrapes exactly the discovered replicas, each healthy."""
        want = {r.instance: "up" for r in self.discovered}
        return self.wait(lambda: self.targets() == want, f"targets {sorted(want)} up", timeout=timeout)

    # ---- replicas come and go ----------------------------------------------------------------

    def kill(self, replica, sig=signal.SIGKILL):
        """Ends a replica's process and leaves it discovered, as a crashed pod is: Prometheus keeps
        scraping it and records up == 0."""
        self.procs.remove(replica.proc)  # Stack.wait fails on any exited process it tracks
        replica.proc.send_signal(sig)
        replica.proc.wait()
        replica.log.close()

    def remove(self, replica):
        """Takes a replica out of discovery (a pod deleted, a scale-in) and stops it if it runs."""
        self.discovered.remove(replica)
        self._write_targets()
        if replica.proc in self.procs:
            self.kill(replica, signal.SIGTERM)

    # ---- scripts ---------------------------------------------------------------------------------

    @staticmethod
    def _write_files(directory, files):
        for rel, source in files.items():
            path = os.path.join(directory, rel)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "w") as f:
                f.write(source)

    @staticmethod
    def _link_entries(scripts):
        """The user-visible names: each top-level entry of ..data, linked through it."""
        for name in os.listdir(os.path.join(scripts, "..data")):
            link = os.path.join(scripts, name)
            if not os.path.lexists(link):
                os.symlink(os.path.join("..data", name), link)

    def update_scripts(self, replica, files):
        """Changes `files` ({relative path: source}) in a replica's scripts as the kubelet updates a
        mounted ConfigMap: a new versioned directory, `..data` swapped to it by one rename, the
        old version removed. The replica's file watch sees the swap and reloads."""
        old = f"..v{replica.version}"
        replica.version += 1
        new = f"..v{replica.version}"
        shutil.copytree(os.path.join(replica.scripts, old), os.path.join(replica.scripts, new))
        self._write_files(os.path.join(replica.scripts, new), files)
        tmp = os.path.join(replica.scripts, "..data_tmp")
        os.symlink(new, tmp)
        os.replace(tmp, os.path.join(replica.scripts, "..data"))
        self._link_entries(replica.scripts)
        shutil.rmtree(os.path.join(replica.scripts, old))

    def stop(self):
        """Stops everything (Stack.stop) and closes the replicas' logs. Returns the exit status of
        each replica that was still running, by pod name."""
        running = [r for r in self.replicas if r.proc in self.procs]
        super().stop()
        for r in self.replicas:
            r.log.close()
        return {r.pod: r.proc.returncode for r in running}


def main():
    def describe(fleet):
        lines = [f"{r.pod:<11} http://{r.instance}/health   scripts {r.scripts}" for r in fleet.replicas]
        lines += [f"prometheus  http://127.0.0.1:{fleet.prom_port}/targets   "
                  "(try: sum by (instance) (rate(hancock_requests_total[1m])))",
                  f"targets     {fleet.dir}/targets/hancock.json (file_sd: edit it to add or remove a target)",
                  f"logs in {fleet.dir}; Ctrl-C (or SIGTERM) stops everything"]
        return "\n".join(lines)

    return run_until_signal(lambda: Fleet(replicas=int(os.environ.get("FLEET_REPLICAS", "3"))), describe, "fleet")


if __name__ == "__main__":
    sys.exit(main())
