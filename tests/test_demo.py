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
from gatehouse._pgcluster import (
    clean_env,
    free_port,
    pg_bin,
    pid_alive,
    read_pidfile,
)
from tests.fixtures.sshd import sshd_program

_PG_FILES = re.compile(r"\(files in (/\S+), removed at exit\)")
_PG_PORT = re.compile(r"PostgreSQL \d+ on 127\.0\.0\.1:(\d+) ")
_APPROVE = re.compile(r"approve with: (gatehouse approvals approve .+?) \(or deny")
_SSHD = re.compile(r"sshd on 127\.0\.0\.1:(\d+) as SSH target (\S+) \(account (\S+);")
#: The demo's customers' e-mail addresses and card numbers, as stored.
_EMAILS = ("ada.lovelace@example.com", "grace@example.org", "ewd@example.org")
_CARDS = ("4111 1111 1111 1111", "5555 5555 5555 4444", "3782 822463 10005")


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
    """
    The printed commands that connect as C{subject}: its export line and
    the psql line after it, as a shell script to which psql options may
    be appended.
    """
    for index, line in enumerate(lines):
        if f"{subject}.token" in line and "export PGPASSWORD" in line:
            psql = lines[index + 1].strip()
            if "psql" in psql and f"user={subject} " in psql:
                return line.strip() + "\n" + psql
    raise AssertionError(f"no psql lines for {subject}:\n" + "\n".join(lines))


def _printed(lines: list[str], start: str) -> str:
    """The printed command line that starts with C{start}."""
    for line in lines:
        if line.strip().startswith(start):
            return line.strip()
    raise AssertionError(f"no line starting {start!r}:\n" + "\n".join(lines))


def _ssh_lines(lines: list[str], subject: str) -> tuple[str, str, str]:
    """
    The printed SSH commands for C{subject}: its export line, and the ssh
    and sftp lines after it.
    """
    for index, line in enumerate(lines):
        if line.strip().startswith("export SSH_ASKPASS=") and (
            f"{subject}.token" in line
        ):
            ssh, sftp = (lines[index + 1].strip(), lines[index + 2].strip())
            if ssh.startswith("ssh -p ") and sftp.startswith("sftp -P "):
                return line.strip(), ssh, sftp
    raise AssertionError(f"no SSH lines for {subject}:\n" + "\n".join(lines))


def _shell(script: str, *args: str, **kw: Any) -> subprocess.CompletedProcess:
    """Run C{script} with C{sh -c}, stdin closed, PATH finding C{gatehouse}."""
    env = dict(os.environ)
    env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env["PATH"]
    for name in list(env):
        if name.startswith(("GATEHOUSE_", "SSH_")) or name == "DISPLAY":
            del env[name]
    if "input" not in kw:
        kw["stdin"] = subprocess.DEVNULL
    return subprocess.run(
        ["sh", "-c", script, "sh", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=kw.pop("timeout", 30),
        **kw,
    )


def _psql(lines: list[str], subject: str, sql: str) -> subprocess.CompletedProcess:
    """Run the printed psql command for C{subject} with one statement."""
    return subprocess.run(
        [
            "sh",
            "-c",
            _command_for(lines, subject) + ' -X -A -t -v ON_ERROR_STOP=1 -c "$1"',
            "sh",
            sql,
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )


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
        # The SSH part runs when sshd is installed: make sure it is (as
        # root; otherwise this names the packages to install).
        sshd_program()

        run = _DemoProcess(self, directory, port)
        lines = run.wait_ready()
        self.assertIn(f"gateway on 127.0.0.1:{port} (TLS)", "\n".join(lines))

        self.check_policy(run, lines, directory)

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
                {r["subject"] for r in rows} == {"alice", "ci-bot"}
                and [r["subject"] for r in rows if r["ended"] is None] == ["ci-bot"]
            ),
        )
        self.assertEqual({r["target"] for r in rows}, {"shop"})

        self.assertStoppedClean(run, run.stop(signal.SIGINT))
        bot.stdin.close()
        bot.wait(10)

        rows = self.sessions(config)
        self.assertEqual({r["subject"] for r in rows}, {"alice", "ci-bot"})
        # Only ci-bot's last session was open when the demo stopped; the
        # others had ended on their own (how the gateway words that
        # depends on which side's close it sees first).
        stopped = [r for r in rows if r["close_reason"] == "gateway stopping"]
        self.assertEqual([r["subject"] for r in stopped], ["ci-bot"])
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
        drop = _psql(lines, "ci-bot", "DROP OWNED BY CURRENT_USER")
        self.assertNotEqual(drop.returncode, 0)
        self.assertIn('policy rule "no-destructive"', drop.stderr)

        sshd_port = self.check_ssh(lines)
        ssh_rows = [r for r in self.sessions(config) if r["target"] == "demo-ssh"]
        self.assertEqual({r["protocol"] for r in ssh_rows}, {"ssh"})
        self.assertEqual({r["subject"] for r in ssh_rows}, {"alice", "ci-bot"})

        self.assertStoppedClean(again, again.stop(signal.SIGTERM))
        # The demo's sshd went with it.
        with socket.socket() as probe:
            self.assertNotEqual(probe.connect_ex(("127.0.0.1", sshd_port)), 0)
        for row in ssh_rows:
            verified = _gatehouse("verify", "--config", config, row["id"])
            self.assertEqual(verified.returncode, 0, verified.stdout + verified.stderr)

    def check_ssh(self, lines: list[str]) -> int:
        """
        The printed SSH commands reach the demo's sshd through the gateway:
        an exec with the token as the password, SFTP, a certificate from
        C{gatehouse ssh-cert}; the demo's SSH rules refuse a recursive
        delete and hold systemctl until alice approves it.

        @return: The demo sshd's port.
        """
        found = [_SSHD.search(line) for line in lines]
        [sshd] = [m for m in found if m is not None]
        port, target, account = int(sshd.group(1)), sshd.group(2), sshd.group(3)
        self.assertEqual(target, "demo-ssh")
        export, ssh, sftp = _ssh_lines(lines, "ci-bot")

        ran = _shell(f"{export}\n{ssh} 'echo through the gateway; id -un'")
        self.assertEqual(
            (ran.returncode, ran.stdout),
            (0, f"through the gateway\n{account}\n"),
            ran.stderr,
        )

        # SFTP, its commands on stdin (sftp -b would turn the askpass off).
        listed = _shell(f"{export}\n{sftp}", input="ls -1 /\nbye\n")
        self.assertEqual(listed.returncode, 0, listed.stderr)
        self.assertIn("/etc", listed.stdout.split())

        refused = _shell(f"{export}\n{ssh} 'rm -r /tmp/gatehouse-demo-nothing'")
        self.assertEqual(refused.returncode, 126, refused.stderr)
        self.assertIn("agents may not delete recursively", refused.stderr)

        # Held until alice approves with the command the client is shown.
        held = subprocess.Popen(
            ["sh", "-c", f"{export}\n{ssh} 'systemctl --version; echo released'"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.addCleanup(lambda: held.poll() is None and held.kill())
        assert held.stderr is not None
        told = _Lines(held.stderr)
        hint = told.wait_for("gatehouse: approve with:", 20)
        self.assertIn("gatehouse: held for approval", "\n".join(told.seen))
        approve = _APPROVE.search(hint)
        self.assertIsNotNone(approve, hint)
        assert approve is not None
        time.sleep(0.5)
        self.assertIsNone(held.poll(), "systemctl did not wait")
        alice = _printed(lines, "export GATEHOUSE_TOKEN_FILE=")
        approved = _shell(f"{alice}\n{approve.group(1)}")
        self.assertEqual(approved.returncode, 0, approved.stderr)
        out, _ = held.communicate(timeout=20)
        self.assertNotEqual(held.returncode, 126)
        self.assertTrue(out.endswith("released\n"), out)

        # alice, the DBA, may delete recursively.
        doomed = Path(self.mktemp()).absolute()
        (doomed / "inside").mkdir(parents=True)
        alice_export, alice_ssh, _ = _ssh_lines(lines, "alice")
        mine = _shell(f'{alice_export}\n{alice_ssh} "rm -r $1"', str(doomed))
        self.assertEqual(mine.returncode, 0, mine.stderr)
        self.assertFalse(doomed.exists())

        # A certificate from the gateway's user CA, instead of the password.
        [keygen] = [line.strip() for line in lines if " ssh-cert --config " in line]
        with_key = _printed(lines, "ssh -i ")
        certified = _shell(
            f"{export}\n{keygen}\nunset SSH_ASKPASS\n"
            f"{with_key} -o BatchMode=yes 'echo certified'"
        )
        self.assertEqual(
            (certified.returncode, certified.stdout.splitlines()[-1:]),
            (0, ["certified"]),
            certified.stderr,
        )
        return port

    def check_policy(self, run: _DemoProcess, lines: list[str], directory: str) -> None:
        """
        The demo's policy, through the printed commands, judged on what
        the clients receive and on what PostgreSQL holds.
        """
        direct = self.direct_query(run, lines, directory)
        orders = "SELECT md5(string_agg(o::text, ',' ORDER BY id)) FROM orders o"
        before = direct(orders)

        # ci-bot reads, with e-mail addresses and card numbers masked.
        read = _psql(lines, "ci-bot", "SELECT count(*) FROM orders")
        self.assertEqual((read.returncode, read.stdout), (0, "20\n"), read.stderr)
        read = _psql(
            lines,
            "ci-bot",
            "SELECT c.email, p.card_number FROM customers c"
            " JOIN payment_cards p ON p.customer_id = c.id ORDER BY c.id",
        )
        self.assertEqual(read.returncode, 0, read.stderr)
        rows = [line.split("|") for line in read.stdout.splitlines()]
        self.assertEqual(len(rows), 12, read.stdout)
        for email, card in rows:
            self.assertRegex(email, r"^[a-z]\*\*\*@\*\*\*\.(com|org|net)$")
            self.assertRegex(card, r"^\*\*\*\*[* ]+\d{4}$")
        for secret in _EMAILS + _CARDS:
            self.assertNotIn(secret, read.stdout)
            self.assertNotIn(secret.split("@")[0], read.stdout)
        self.assertEqual(rows[0], ["a***@***.com", "**** **** **** 1111"])

        # Destructive statements and writes without WHERE are refused.
        for sql, rule in (
            ("DELETE FROM orders", "no-destructive"),
            ("DROP TABLE orders", "no-destructive"),
            ("TRUNCATE orders", "no-destructive"),
            ("UPDATE orders SET status = 'refunded'", "no-unbounded-writes"),
        ):
            refused = _psql(lines, "ci-bot", sql)
            self.assertNotEqual(refused.returncode, 0, sql)
            self.assertIn(f'policy rule "{rule}"', refused.stderr)
        self.assertEqual(direct(orders), before)
        self.assertEqual(direct("SELECT count(*) FROM orders"), "20")

        # A schema change waits; the command in the NOTICE, run as printed
        # with the printed token export, approves it as alice.
        column = (
            "SELECT count(*) FROM information_schema.columns"
            " WHERE table_name = 'orders' AND column_name = 'note'"
        )
        held = subprocess.Popen(
            [
                "sh",
                "-c",
                _command_for(lines, "ci-bot") + " -X -A -t -v ON_ERROR_STOP=1"
                " -c 'ALTER TABLE orders ADD COLUMN note text'",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.addCleanup(lambda: held.poll() is None and held.kill())
        hint = _Lines(held.stderr).wait_for("HINT:", 20)
        found = _APPROVE.search(hint)
        self.assertIsNotNone(found, hint)
        assert found is not None
        approve = found.group(1)
        self.assertIn(" --config ", approve)
        self.assertEqual(direct(column), "0")
        time.sleep(0.5)
        self.assertIsNone(held.poll(), "the schema change did not wait")
        env = dict(os.environ)
        env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env["PATH"]
        for name in list(env):
            if name.startswith("GATEHOUSE_"):
                del env[name]
        export = _printed(lines, "export GATEHOUSE_TOKEN_FILE=")
        # ci-bot cannot approve its own statement (nor use the API at all).
        own = export.replace("alice.token", "ci-bot.token")

        def shell(script: str) -> subprocess.CompletedProcess:
            return subprocess.run(
                ["sh", "-c", script],
                capture_output=True,
                text=True,
                env=env,
                timeout=30,
            )

        refused = shell(f"{own}\n{approve}")
        self.assertEqual(refused.returncode, 1, refused.stdout)
        self.assertIn("may not use the admin API", refused.stderr)
        self.assertEqual(direct(column), "0")
        approved = shell(f"{export}\n{approve}")
        self.assertEqual(approved.returncode, 0, approved.stderr)
        self.assertRegex(approved.stdout, r"^apr-\w+: approved\n$")
        _, err = held.communicate(timeout=20)
        self.assertEqual(held.returncode, 0, err)
        self.assertEqual(direct(column), "1")

        # alice, the DBA, sees the values as stored.
        mine = _psql(
            lines,
            "alice",
            "SELECT c.email, p.card_number FROM customers c"
            " JOIN payment_cards p ON p.customer_id = c.id WHERE c.id = 1",
        )
        self.assertEqual(
            (mine.returncode, mine.stdout),
            (0, "ada.lovelace@example.com|4111 1111 1111 1111\n"),
            mine.stderr,
        )

    def direct_query(self, run: _DemoProcess, lines: list[str], directory: str) -> Any:
        """
        A function running SQL on the demo's PostgreSQL itself, as the
        gateway's role, past the gateway.
        """
        port = None
        for line in lines:
            found = _PG_PORT.search(line)
            if found:
                port = found.group(1)
        self.assertIsNotNone(port, lines)
        password = Path(directory, "upstream.password").read_text().strip()
        target = (
            f"host=127.0.0.1 port={port} dbname=shop user={demo.UPSTREAM_ROLE}"
            " sslmode=require"
        )

        def query(sql: str) -> str:
            command = [pg_bin("psql"), "-X", "-A", "-t", "-v", "ON_ERROR_STOP=1"]
            result = subprocess.run(
                [*command, "-d", target, "-c", sql],
                capture_output=True,
                text=True,
                timeout=30,
                env=clean_env(PGPASSWORD=password),
            )
            self.assertEqual(result.returncode, 0, result.stderr)
            return result.stdout.strip()

        return query

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

    def test_withoutSshd(self) -> None:
        """
        Without sshd the demo says how to install it and leaves the SSH
        parts out of its configuration.
        """
        import io

        self.patch(demo, "sshd_program", lambda: None)
        directory = Path(self.mktemp())
        directory.mkdir()
        out = io.StringIO()
        run = demo._Demo(directory, 1, False, out)
        run.start_ssh(taken=())
        self.assertIsNone(run.sshd)
        self.assertIn("apt-get install openssh-server", out.getvalue())
        self.assertFalse((directory / "ssh").exists())
        self.assertEqual(set(run.ssh_sections().values()), {""})
