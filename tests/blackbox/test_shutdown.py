"""Black-box tests of shutdown when stdout misbehaves: a stdout pipe nobody reads (the log writer
blocks in write(2) for good) and a stdout whose reader went away (EPIPE). In both, SIGTERM must
end the process: the log writer gets a bounded time to flush (docs/logging.md), then what it
could not write is abandoned and counted.

The server is started with subprocess directly, not harness.Server, whose reader thread would
keep draining stdout. Requests go to GET /v1/items/:id of tests/blackbox/scripts/routes.lua,
over one keep-alive connection. Only 127.0.0.1 is contacted.
"""
import fcntl
import json
import os
import platform
import select
import signal
import socket
import subprocess
import tempfile
import termios
import time
import unittest

import harness

REQUESTS = 5000
EXIT_BOUND = 15  # seconds: --drain-timeout 1s plus the log writer's bound, with a wide margin


class ShutdownTest(unittest.TestCase):
    def setUp(self):
        self.procs = []

    def tearDown(self):
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            proc.stdout.close()

    def start(self):
        """hancock serve with stdout a pipe: returns (proc, port) once server_listening was read."""
        stderr = tempfile.TemporaryFile()
        self.addCleanup(stderr.close)
        env = dict(os.environ, LOG_LEVEL="INFO")
        env.pop("HANCOCK_PORT", None)
        proc = subprocess.Popen(
            [harness.BIN, "serve", "--listen", "127.0.0.1:0", "--scripts", harness.SCRIPTS,
             "--drain-timeout", "1s"],
            stdout=subprocess.PIPE, stderr=stderr, env=env)
        self.procs.append(proc)
        proc.stderr_file = stderr
        fd = proc.stdout.fileno()
        pending = b""
        deadline = time.monotonic() + 10
        while True:
            while b"\n" in pending:
                line, _, pending = pending.partition(b"\n")
                event = json.loads(line)
                if event.get("event") == "server_listening":
                    return proc, event["port"]
            ready, _, _ = select.select([fd], [], [], max(0, deadline - time.monotonic()))
            self.assertTrue(ready, "no server_listening line within 10 s")
            chunk = os.read(fd, 65536)
            self.assertTrue(chunk, "hancock exited before listening")
            pending += chunk

    def traffic(self, port, count):
        """`count` GETs over one keep-alive connection; every one must be answered 200."""
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            for i in range(count):
                sock.sendall(b"GET /v1/items/%d HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n" % i)
                status, _, _ = harness.recv_response(sock)
                self.assertEqual(status, 200)

    def scrape(self, port):
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            sock.sendall(b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            status, _, body = harness.recv_response(sock)
        self.assertEqual(status, 200)
        return body.decode()

    def stop(self, proc):
        """SIGTERM, then the exit status: the process must be gone within EXIT_BOUND seconds."""
        proc.send_signal(signal.SIGTERM)
        try:
            code = proc.wait(timeout=EXIT_BOUND)
        except subprocess.TimeoutExpired:
            self.fail("hancock still running %d s after SIGTERM (stdout not read)" % EXIT_BOUND)
        proc.stderr_file.seek(0)
        return code, proc.stderr_file.read().decode("utf-8", "replace")

    def test_sigterm_exits_when_stdout_is_never_read(self):
        proc, port = self.start()
        # From here on nobody reads stdout. A one-page pipe fills after a few lines, so the log
        # writer blocks in write(2) early; the lines of the traffic pile up in its queue.
        fd = proc.stdout.fileno()
        try:
            fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, 4096)
        except OSError:
            pass  # lines still in the pipe (EBUSY): it stays at its size, and fills all the same
        capacity = fcntl.fcntl(fd, fcntl.F_GETPIPE_SZ)
        self.traffic(port, REQUESTS)
        # Precondition: the log writer is stuck, i.e. one of the process's threads sits in
        # write(2) on fd 1. It writes within milliseconds of a line being queued; this waits
        # for that state, it does not time anything. (How full the pipe looks says little: a
        # write of at most PIPE_BUF bytes is atomic and blocks while any smaller gap is free.)
        deadline = time.monotonic() + 30
        while not self.blocked_writing_stdout(proc.pid) and time.monotonic() < deadline:
            time.sleep(0.01)
        self.assertTrue(self.blocked_writing_stdout(proc.pid),
                        "the log writer never blocked on stdout (pipe holds %d of %d bytes)"
                        % (self.pipe_bytes(fd), capacity))
        code, stderr = self.stop(proc)
        self.assertEqual(code, 0, stderr)
        # The last word, on stderr (stdout is what blocks): how many lines were dropped.
        notes = [json.loads(line) for line in stderr.splitlines() if '"log_abandoned"' in line]
        self.assertEqual(len(notes), 1, stderr)
        self.assertGreater(notes[0]["abandoned"], 0)

    def test_sigterm_exits_cleanly_when_stdout_reader_is_gone(self):
        proc, port = self.start()
        proc.stdout.close()  # the reader goes away: every write to stdout now fails with EPIPE
        self.traffic(port, REQUESTS // 2)
        # Not killed by SIGPIPE, still serving, and the lost lines are counted.
        dropped = harness.metric_value(self.scrape(port), "hancock_log_lines_dropped_total")
        self.assertIsNotNone(dropped)
        self.assertGreater(dropped, 0)
        code, stderr = self.stop(proc)
        self.assertEqual(code, 0, stderr)
        self.assertNotIn("log_abandoned", stderr)  # nothing blocks on a closed pipe: a clean stop

    def test_disk_full_for_logs_drops_lines_and_keeps_serving(self):
        # stdout is a file on a full disk: /dev/full fails every write with ENOSPC. The log
        # writer counts what it could not write; requests, scrapes and the stop are unaffected.
        stderr = tempfile.TemporaryFile()
        self.addCleanup(stderr.close)
        port = harness.free_port()
        env = dict(os.environ, LOG_LEVEL="INFO")
        env.pop("HANCOCK_PORT", None)
        with open("/dev/full", "w") as full:
            proc = subprocess.Popen(
                [harness.BIN, "serve", "--listen", "127.0.0.1:%d" % port, "--scripts", harness.SCRIPTS,
                 "--drain-timeout", "1s"], stdout=full, stderr=stderr, env=env)
        proc.stdout = open(os.devnull)  # for tearDown
        self.procs.append(proc)
        proc.stderr_file = stderr
        deadline = time.monotonic() + 10
        while True:  # no server_listening line to read: wait for the port instead
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                self.assertIsNone(proc.poll(), "hancock exited with stdout on a full disk")
                self.assertLess(time.monotonic(), deadline, "not listening within 10 s")
                time.sleep(0.05)
        self.traffic(port, 200)
        dropped = harness.metric_value(self.scrape(port), "hancock_log_lines_dropped_total")
        self.assertIsNotNone(dropped)
        self.assertGreaterEqual(dropped, 200)  # at least a request_completed line per request
        code, stderr_text = self.stop(proc)
        self.assertEqual(code, 0, stderr_text)
        self.assertNotIn("log_abandoned", stderr_text)  # a failing write does not block the stop

    @staticmethod
    def blocked_writing_stdout(pid):
        """True when a thread of `pid` is inside write(2) on fd 1 (from /proc/PID/task/*/syscall:
        the syscall number, then its arguments)."""
        write_nr = {"x86_64": 1, "aarch64": 64}[platform.machine()]
        for tid in os.listdir("/proc/%d/task" % pid):
            try:
                with open("/proc/%d/task/%s/syscall" % (pid, tid)) as f:
                    fields = f.read().split()
            except OSError:
                continue
            if len(fields) >= 2 and fields[0] == str(write_nr) and int(fields[1], 16) == 1:
                return True
        return False

    @staticmethod
    def pipe_bytes(fd):
        buf = bytearray(4)
        fcntl.ioctl(fd, termios.FIONREAD, buf)
        return int.from_bytes(buf, "little")


if __name__ == "__main__":
    unittest.main()
