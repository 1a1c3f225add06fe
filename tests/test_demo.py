"""
Tests for C{gatehouse demo}, run as users run it: a child process, driven
through what it prints, with the real psql.
"""

from __future__ import annotations

import fcntl
import json
import os
import queue
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from twisted.trial.unittest import TestCase

from gatehouse import demo
from gatehouse._pgcluster import free_port, pid_alive, read_pidfile

_PG_FILES = re.compile(r"\(files in (/\S+), removed at exit\)")


def _gatehouse(*args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    """Run the C{gatehouse} command."""
    return subprocess.run(
        [sys.executable, "-m", "gatehouse.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


class _Lines:
    """The lines a child process writes, read by a thread as they come."""

    def __init__(self, stream: Any) -> None:
        self.seen: list[str] = []
        self._queue: queue.Queue[str | None] = queue.Queue()
        self._thread = threading.Thread(target=self._read, args=(stream,), daemon=True)
        self._thread.start()

    def _read(self, stream: Any) -> None:
        for line in stream:
            self._queue.put(line.rstrip("\n"))
        self._queue.put(None)

    def wait_for(self, prefix: str, timeout: float) -> str:
        """Return the first line starting with C{prefix}; fail after C{timeout}."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            try:
                line = self._queue.get(timeout=max(left, 0.01))
            except queue.Empty:
                line = ""
                if time.monotonic() > deadline:
                    raise AssertionError(
                        f"no line starting {prefix!r} within {timeout}s:\n"
                        + "\n".join(self.seen)
                    )
                continue
            if line is None:
                raise AssertionError(
                    f"output ended before {prefix!r}:\n" + "\n".join(self.seen)
                )
            self.seen.append(line)
            if line.startswith(prefix):
                return line

    def rest(self, timeout: float = 10) -> list[str]:
        """Every line until the stream ends."""
        self._thread.join(timeout)
        while True:
            try:
                line = self._queue.get_nowait()
            except queue.Empty:
                return self.seen
            if line is not None:
                self.seen.append(line)


class _DemoProcess:
    """One C{gatehouse demo} child process, and what it told us."""

    def __init__(self, test: TestCase, directory: str, port: int) -> None:
        self.stderr_path = Path(test.mktemp())
        self._stderr = self.stderr_path.open("w")
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "gatehouse.cli",
                "demo",
                "--directory",
                directory,
                "--port",
                str(port),
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            text=True,
            start_new_session=True,
        )
        self.pg_files: Path | None = None
        self.pg_pid: int | None = None
        test.addCleanup(self.kill)
        self.lines = _Lines(self.process.stdout)

    def wait_ready(self, timeout: float = 60) -> list[str]:
        """Wait for the ready line; learn where PostgreSQL runs."""
        try:
            self.lines.wait_for(demo.READY, timeout)
        except AssertionError as e:
            raise AssertionError(f"{e}\nstderr:\n{self.stderr()}")
        for line in self.lines.seen:
            found = _PG_FILES.search(line)
            if found:
                self.pg_files = Path(found.group(1))
                self.pg_pid = read_pidfile(self.pg_files / "data" / "postmaster.pid")
        return self.lines.seen

    def stop(self, signum: int, timeout: float = 30) -> int:
        """Send C{signum}; return the exit status."""
        self.process.send_signal(signum)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"demo did not exit within {timeout}s")

    def stderr(self) -> str:
        """What the demo wrote on standard error."""
        self._stderr.flush()
        return self.stderr_path.read_text(errors="replace")

    def kill(self) -> None:
        """Whatever happened: no demo, no PostgreSQL left behind."""
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
        self.process.stdout.close()
        self._stderr.close()
        if self.pg_pid is not None and pid_alive(self.pg_pid):
            os.kill(self.pg_pid, signal.SIGKILL)
        if self.pg_files is not None:
            shutil.rmtree(self.pg_files, ignore_errors=True)


def _command_for(lines: list[str], subject: str) -> str:
    """The printed psql command line for C{subject}."""
    for line in lines:
        if f"{subject}.token" in line and "psql" in line:
            return line.strip()
    raise AssertionError(f"no psql line for {subject}:\n" + "\n".join(lines))


class DemoTests(TestCase):
    """
    C{gatehouse demo} starts PostgreSQL and a gateway, prints commands that
    work, and stops cleanly on SIGINT or SIGTERM, keeping its recordings.
    """

    def sessions(self, config: str) -> list[dict[str, Any]]:
        result = _gatehouse("sessions", "--config", config, "--json")
        self.assertEqual(result.returncode, 0, result.stderr)
        return json.loads(result.stdout)

    def wait_sessions(
        self, config: str, done: Any, timeout: float = 15
    ) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while True:
            rows = self.sessions(config)
            if done(rows):
                return rows
            if time.monotonic() > deadline:
                self.fail(f"sessions never got there: {rows}")
            time.sleep(0.1)

    def assertStoppedClean(self, run: _DemoProcess, status: int) -> None:
        stderr = run.stderr()
        self.assertEqual(status, 0, stderr)
        self.assertNotIn("Traceback", stderr)
        lines = run.lines.rest()
        self.assertTrue(lines[-1].startswith("gatehouse demo: stopped"), lines)
        self.assertIsNotNone(run.pg_pid)
        assert run.pg_pid is not None and run.pg_files is not None
        self.assertFalse(pid_alive(run.pg_pid), "PostgreSQL still runs")
        self.assertFalse(run.pg_files.exists(), "PostgreSQL files left behind")

    def test_demo(self) -> None:
        """
        The printed psql commands reach the demo database as alice and
        ci-bot; Ctrl-C closes and seals open sessions, stops PostgreSQL and
        exits 0; the recorded sessions are listed and verify.  A second run
        in the same directory keeps the keys and the history, moves to a
        free port when the one asked for is taken, and stops on SIGTERM.
        """
        directory = os.path.abspath(self.mktemp())
        config = os.path.join(directory, "gatehouse.yaml")
        port = free_port()

        run = _DemoProcess(self, directory, port)
        lines = run.wait_ready()
        self.assertIn(f"gateway on 127.0.0.1:{port} (TLS)", "\n".join(lines))

        # alice runs a query and leaves.
        alice = subprocess.run(
            [
                "sh",
                "-c",
                _command_for(lines, "alice")
                + " -X -A -t -v ON_ERROR_STOP=1 -c 'SELECT count(*) FROM customers'",
            ],
            capture_output=True,
            text=True,
            timeout=30,
        )
        self.assertEqual(
            (alice.returncode, alice.stdout.strip()), (0, "12"), alice.stderr
        )

        # ci-bot stays connected while the demo stops.
        bot = subprocess.Popen(
            ["sh", "-c", _command_for(lines, "ci-bot") + " -X -A -t"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.addCleanup(lambda: bot.poll() is None and bot.kill())
        assert bot.stdin is not None and bot.stdout is not None
        bot.stdin.write("SELECT count(*) FROM orders;\n")
        bot.stdin.flush()
        self.assertEqual(_Lines(bot.stdout).wait_for("", 20), "20")

        rows = self.wait_sessions(
            config,
            lambda rows: (
                len(rows) == 2
                and {r["subject"]: r["ended"] is not None for r in rows}
                == {"alice": True, "ci-bot": False}
            ),
        )
        self.assertEqual({r["target"] for r in rows}, {"shop"})

        self.assertStoppedClean(run, run.stop(signal.SIGINT))
        bot.stdin.close()
        bot.wait(10)

        rows = self.sessions(config)
        reasons = {r["subject"]: r["close_reason"] for r in rows}
        self.assertEqual(sorted(reasons), ["alice", "ci-bot"])
        # alice's session had ended on its own (how the gateway words that
        # depends on which side's close it sees first).
        self.assertNotEqual(reasons["alice"], "gateway stopping")
        self.assertEqual(reasons["ci-bot"], "gateway stopping")
        for row in rows:
            verified = _gatehouse("verify", "--config", config, row["id"])
            self.assertEqual(verified.returncode, 0, verified.stdout + verified.stderr)
        first_ids = {r["id"] for r in rows}

        # Again, in the same directory, with the port taken.
        root_public = Path(directory, "keys", "root.pub").read_bytes()
        ca = Path(directory, "ca.crt").read_bytes()
        with socket.socket() as taken:
            taken.bind(("127.0.0.1", 0))
            taken.listen()
            busy = taken.getsockname()[1]
            again = _DemoProcess(self, directory, busy)
            lines = again.wait_ready()
        self.assertIn(f"port {busy} is taken; using ", "\n".join(lines))
        self.assertEqual(Path(directory, "keys", "root.pub").read_bytes(), root_public)
        self.assertEqual(Path(directory, "ca.crt").read_bytes(), ca)
        self.assertTrue(first_ids <= {r["id"] for r in self.sessions(config)})
        # ci-bot, an agent, may not drop (the demo's policy, by category).
        drop = subprocess.run(
            [
                "sh",
                "-c",
                _command_for(lines, "ci-bot")
                + " -X -A -t -v ON_ERROR_STOP=1 -c 'DROP OWNED BY CURRENT_USER'",
            ],
            capture_output=True,
            text=True,
            timeout=30,
        )
        self.assertNotEqual(drop.returncode, 0)
        self.assertIn('policy rule "no-destructive"', drop.stderr)

        self.assertStoppedClean(again, again.stop(signal.SIGTERM))

    def test_another_demo_running(self) -> None:
        """
        A second demo in a directory where one runs stops at once, saying
        so, without touching the running one.
        """
        directory = Path(self.mktemp())
        directory.mkdir()
        with open(directory / ".lock", "wb") as held:
            fcntl.flock(held, fcntl.LOCK_EX)
            result = _gatehouse("demo", "--directory", str(directory), timeout=30)
        self.assertEqual(result.returncode, 1)
        self.assertIn("another gatehouse demo is running in", result.stderr)
