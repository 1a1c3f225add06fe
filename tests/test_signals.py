"""
The daemon's signals, through the real C{twistd -n gatehouse} in front of a
real PostgreSQL: SIGHUP reloads (or refuses) the configuration and reopens
the log file; SIGTERM drains; a session left open by C{kill -9} is marked
ended at the next start.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import psycopg
import yaml
from twisted.trial.unittest import SynchronousTestCase

from gatehouse.protocols.postgres import codec
from gatehouse.recording import keys as gkeys
from gatehouse.recording.format import Delegation, SegmentHeader, segment_filename
from gatehouse.recording.index import CRASHED, get_session, query_sessions
from gatehouse.recording.verify import verify_session
from tests.fixtures.postgres import shared_cluster
from tests.protocols.postgres.harness import GATEWAY_ID, Gateway
from tests.protocols.postgres.test_e2e import RawClient, error_of

#: a statement the reloaded policy refuses
MAGIC = "SELECT 'magic_word_4711'"
MAGIC_RULE = {"name": "no-magic", "text": "magic_word_4711", "action": "deny"}


def wait_for(
    what: str, check: Callable[[], Any], timeout: float = 15.0, log: Any = None
) -> Any:
    """Poll C{check} until it returns something true; fail after C{timeout}."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            extra = f"\n{log()[-3000:]}" if log is not None else ""
            raise AssertionError(f"timed out waiting for {what}{extra}")
        time.sleep(0.05)


def peer_certificate(port: int) -> bytes:
    """The DER certificate the gateway serves after an SSLRequest."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(codec.SSLRequest().encode())
        assert sock.recv(1) == b"S"
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        with context.wrap_socket(sock) as tls:
            return tls.getpeercert(binary_form=True)


class DaemonTestCase(SynchronousTestCase):
    """Starts a fresh daemon per test (signals end or change it)."""

    def start(self, **kw: Any) -> Gateway:
        gateway = Gateway(self.mktemp(), shared_cluster(), **kw)
        gateway.start()
        self.addCleanup(gateway.stop)
        return gateway

    def connect(self, gateway: Gateway, **kw: Any) -> psycopg.Connection:
        conn = psycopg.connect(
            gateway.conninfo(**kw), password=gateway.token(), autocommit=True
        )
        self.addCleanup(conn.close)
        return conn

    def edit_config(self, gateway: Gateway, change: Callable[[dict], None]) -> None:
        with open(gateway.config_path) as f:
            data = yaml.safe_load(f)
        change(data)
        with open(gateway.config_path, "w") as f:
            yaml.safe_dump(data, f)

    def signal(self, gateway: Gateway, signum: int) -> None:
        assert gateway.process is not None
        gateway.process.send_signal(signum)

    def wait_log(self, gateway: Gateway, text: str, timeout: float = 15.0) -> str:
        return wait_for(
            repr(text),
            lambda: text in gateway.log() and gateway.log(),
            timeout,
            gateway.log,
        )

    def index_path(self, gateway: Gateway) -> str:
        return gateway.path("recordings", "index.sqlite3")


class ReloadTests(DaemonTestCase):
    """SIGHUP: reload the configuration, or refuse a bad one."""

    def test_good_config(self) -> None:
        """
        A good new file applies to new sessions: a new target is reachable,
        the new policy refuses a statement, a new certificate is served.  A
        session open across the reload keeps working, under the policy it
        started with (say so in the notes).
        """
        gateway = self.start()
        live = self.connect(gateway)
        self.assertEqual(live.execute("SELECT 1").fetchone(), (1,))
        old_cert = peer_certificate(gateway.port)
        refused = gateway.psql("SELECT 1", target="app_new")
        self.assertNotEqual(refused.returncode, 0)

        cert, key = (
            str(p)
            for p in gateway.ca.issue("localhost", directory=gateway.path("tls2"))
        )
        # New signing keys, in a new directory, from the same root.
        root = gkeys.load_root_private(gateway.path("root.key"))
        new_keys = gkeys.issue_epoch_keys(
            root, GATEWAY_ID, time.time_ns() - 60 * 10**9, 3600 * 10**9, 2
        )
        gkeys.KeyDirectory(gateway.path("signing2")).add(new_keys)

        def change(data: dict) -> None:
            app = next(t for t in data["targets"] if t["name"] == "app")
            data["targets"].append({**app, "name": "app_new"})
            data["policy"] = {"rules": [MAGIC_RULE], "opaque": "deny"}
            data["listeners"][0]["tls"] = {"certificate": cert, "key": key}
            data["recording"]["signing_keys"] = gateway.path("signing2")

        self.edit_config(gateway, change)
        self.signal(gateway, signal.SIGHUP)
        self.wait_log(gateway, "Reloaded ")

        self.assertEqual(gateway.psql("SELECT 2", target="app_new").returncode, 0)
        new_cert = peer_certificate(gateway.port)
        with open(cert, "rb") as f:
            expected = ssl.PEM_cert_to_DER_cert(f.read().decode())
        self.assertNotEqual(new_cert, old_cert)
        self.assertEqual(new_cert, expected)
        fresh = gateway.psql(MAGIC)
        self.assertNotEqual(fresh.returncode, 0)
        self.assertIn("no-magic", fresh.stderr)
        # New sessions are signed with the new keys.
        after = time.time()
        self.assertEqual(gateway.psql("SELECT 4").returncode, 0)
        newest = wait_for(
            "the new session sealed in the index",
            lambda: [
                r
                for r in query_sessions(self.index_path(gateway), limit=None)
                if r.started >= after and r.final
            ],
        )[0]
        self.assertGreaterEqual(newest.started, after - 1)
        with open(os.path.join(newest.directory, segment_filename(0)), "rb") as f:
            header, _ = SegmentHeader.parse(f.read())
        signer = Delegation.from_bytes(header.delegation).certificate.key_id
        self.assertIn(signer, [k.certificate.key_id for k in new_keys])
        report = verify_session(newest.directory, gateway.anchors())
        self.assertEqual(report.findings, ())
        # The live session goes on, with the policy it started with.
        self.assertEqual(live.execute("SELECT 3").fetchone(), (3,))
        self.assertEqual(live.execute(MAGIC).fetchone(), ("magic_word_4711",))
        self.assertEqual(gateway.process.poll(), None)

    def test_bad_config(self) -> None:
        """
        A bad file is refused: each problem on its own log line, the daemon
        goes on with the old configuration (old targets, old certificate;
        a key that does not match its certificate never gets served).
        """
        gateway = self.start()
        live = self.connect(gateway)
        old_cert = peer_certificate(gateway.port)
        _, other_key = gateway.ca.issue("other", directory=gateway.path("other"))

        def change(data: dict) -> None:
            data["gateway"]["idd"] = "x"
            data["targets"] = [t for t in data["targets"] if t["name"] != "app"]
            data["listeners"][0]["tls"]["key"] = str(other_key)

        self.edit_config(gateway, change)
        self.signal(gateway, signal.SIGHUP)
        log = self.wait_log(gateway, "Reload refused: 2 problem(s)")
        path = gateway.config_path
        lines = [line.split(" ", 2)[-1] for line in log.splitlines()]
        self.assertIn(f"{path}: gateway.idd: unknown key (did you mean id?)", lines)
        self.assertIn(
            f"{path}: listeners[0].tls.key: {other_key} does not match the "
            f"certificate in {gateway.path('tls', 'localhost.crt')}",
            lines,
        )
        self.assertNotIn("Reloaded ", log)
        self.assertEqual(live.execute("SELECT 1").fetchone(), (1,))
        self.assertEqual(gateway.psql("SELECT 1", target="app").returncode, 0)
        self.assertEqual(peer_certificate(gateway.port), old_cert)
        self.assertEqual(gateway.process.poll(), None)

        # Otherwise good, but a signing-key directory with no valid key.
        empty = gateway.path("no-keys")
        os.makedirs(empty)

        def keyless(data: dict) -> None:
            del data["gateway"]["idd"]
            data["listeners"][0]["tls"]["key"] = gateway.path("tls", "localhost.key")
            data["recording"]["signing_keys"] = empty

        self.edit_config(gateway, keyless)
        self.signal(gateway, signal.SIGHUP)
        log = self.wait_log(gateway, "Reload refused: 1 problem(s)")
        lines = [line.split(" ", 2)[-1] for line in log.splitlines()]
        self.assertIn(
            f"{path}: recording.signing_keys: no signing key in {empty} is valid "
            "now (sessions would be refused); issue keys with `gatehouse keys "
            "issue`",
            lines,
        )
        self.assertEqual(gateway.psql("SELECT 1", target="app").returncode, 0)

    def test_listener_change_needs_restart(self) -> None:
        """
        A new listener port is not half-applied: the log says it needs a
        restart and the gateway stays where it was; the rest applies.
        """
        gateway = self.start()
        self.edit_config(
            gateway,
            lambda data: data["listeners"][0].update(
                port=data["listeners"][0]["port"] + 1
            ),
        )
        self.signal(gateway, signal.SIGHUP)
        log = self.wait_log(gateway, "Reloaded ")
        self.assertIn("Reload: listener pg: postgres 127.0.0.1:", log)
        self.assertIn("needs a restart; the running value stays", log)
        self.assertEqual(gateway.psql("SELECT 1").returncode, 0)

    def test_log_reopen(self) -> None:
        """
        SIGHUP reopens twistd's log file: after logrotate renames it, a new
        file appears and the daemon writes there.
        """
        gateway = self.start()
        os.rename(gateway.log_path, gateway.log_path + ".1")
        self.signal(gateway, signal.SIGHUP)
        wait_for("a new log file", lambda: os.path.exists(gateway.log_path))
        self.wait_log(gateway, "Reloaded ")
        self.assertEqual(gateway.psql("SELECT 1").returncode, 0)
        with open(gateway.log_path + ".1") as f:
            self.assertNotIn("Reloaded ", f.read())

    def test_usr1_reopens_logs(self) -> None:
        """
        SIGUSR1 (twistd's rotation signal, which the gateway's log observer
        would otherwise leave deadly) reopens the log file; the daemon
        lives on and serves.
        """
        gateway = self.start()
        os.rename(gateway.log_path, gateway.log_path + ".1")
        self.signal(gateway, signal.SIGUSR1)
        wait_for("a new log file", lambda: os.path.exists(gateway.log_path))
        self.assertIsNone(gateway.process.poll(), "SIGUSR1 ended the daemon")
        self.assertEqual(gateway.psql("SELECT 1").returncode, 0)

    def test_open_file_limit_raised_before_listening(self) -> None:
        """
        The soft open-file limit is raised before the listeners start, so
        their check of it does not warn about a limit already lifted.
        """
        gateway = self.start()
        log = self.wait_log(gateway, "RLIMIT_NOFILE")
        raised = log.index("RLIMIT_NOFILE")
        self.assertNotIn("needs about", log[:raised])
        self.assertNotIn("starting on", log[:raised])
        self.assertIn("starting on", log[raised:])


class DrainTests(DaemonTestCase):
    """SIGTERM: drain, then close what is left and exit 0."""

    def test_drain(self) -> None:
        """
        During the grace period new clients get 57P03 and /readyz says not
        ready; a session that ends within it is not cut; an idle one is
        closed with 57P01 when it runs out, its recording sealed and
        complete; the process exits 0 after about the grace period.
        """
        gateway = self.start(
            admin=True,
            extra_config={"gateway": {"id": "gw-e2e", "shutdown_grace": "2s"}},
        )
        idle = self.connect(gateway)
        busy = self.connect(gateway)
        self.assertEqual(idle.execute("SELECT 1").fetchone(), (1,))
        started = time.time()
        self.assertEqual(busy.execute("SELECT 1").fetchone(), (1,))

        self.assertEqual(
            self.get(gateway.admin_url + "/readyz"),
            (200, {"status": "ready", "problems": []}),
        )
        sent = time.monotonic()
        self.signal(gateway, signal.SIGTERM)
        self.wait_log(gateway, "Draining: 2 session(s) open")

        # A newcomer is refused, after TLS, with 57P03.
        client = RawClient(gateway.port, gateway.ca_cert)
        client.send(codec.StartupMessage({"user": "alice", "database": "app"}).encode())
        error = error_of(client.read_all())
        client.close()
        self.assertEqual(
            (error.get("S"), error.get("C"), error.get("M")),
            ("FATAL", "57P03", "the gateway is shutting down"),
        )
        status, body = self.get(gateway.admin_url + "/readyz")
        self.assertEqual(status, 503)
        self.assertIn("the gateway is shutting down", body["problems"])
        self.assertEqual(self.get(gateway.admin_url + "/healthz")[0], 200)

        # A session that finishes within the grace period is not cut.
        self.assertEqual(busy.execute("SELECT pg_sleep(0.3), 2").fetchone()[1], 2)
        busy.close()

        process = gateway.process
        assert process is not None
        code = process.wait(15)
        elapsed = time.monotonic() - sent
        self.assertEqual(code, 0, gateway.log()[-3000:])
        self.assertGreaterEqual(elapsed, 2.0)
        self.assertLess(elapsed, 8.0)
        with self.assertRaises(psycopg.OperationalError) as caught:
            idle.execute("SELECT 1")
        self.assertIn("the gateway is shutting down", str(caught.exception))
        self.assertEqual(caught.exception.sqlstate, "57P01")

        rows = [
            r
            for r in query_sessions(self.index_path(gateway), limit=None)
            if r.started >= started - 1 and r.subject == "alice"
        ]
        reasons = sorted(r.close_reason for r in rows)
        self.assertEqual(len(rows), 2, reasons)
        cut = [r for r in rows if r.close_reason == "gateway stopping"]
        self.assertEqual(len(cut), 1, reasons)
        for row in rows:
            report = verify_session(row.directory, gateway.anchors())
            self.assertEqual(
                (report.findings, report.complete), ((), True), row.close_reason
            )
        self.assertIn("Closing 1 session(s) still open after the drain", gateway.log())

    def test_second_signal(self) -> None:
        """
        A second SIGTERM (or SIGINT) ends the drain at once, still closing
        and sealing the open session.
        """
        gateway = self.start()  # the harness's grace: 1 s; make it long
        self.edit_config(
            gateway, lambda data: data["gateway"].update(shutdown_grace="60s")
        )
        self.signal(gateway, signal.SIGHUP)
        self.wait_log(gateway, "Reloaded ")
        idle = self.connect(gateway)
        self.assertEqual(idle.execute("SELECT 1").fetchone(), (1,))
        sent = time.monotonic()
        self.signal(gateway, signal.SIGTERM)
        self.wait_log(gateway, "waiting up to 60.0 s")
        self.signal(gateway, signal.SIGINT)
        assert gateway.process is not None
        self.assertEqual(gateway.process.wait(15), 0)
        self.assertLess(time.monotonic() - sent, 5.0)
        (row,) = query_sessions(self.index_path(gateway), limit=None)
        self.assertEqual(row.close_reason, "gateway stopping")
        report = verify_session(row.directory, gateway.anchors())
        self.assertEqual((report.findings, report.complete), ((), True))

    def get(self, url: str) -> tuple[int, Any]:
        import urllib.error
        import urllib.request

        try:
            with urllib.request.urlopen(url, timeout=10) as response:
                return response.status, json.load(response)
        except urllib.error.HTTPError as e:
            return e.code, json.load(e)


class CrashTests(DaemonTestCase):
    """kill -9, then a restart: open sessions are marked ended by the crash."""

    def test_crash_marked(self) -> None:
        """
        The session open at C{kill -9} is, after a restart, ended in the
        index with the crash as its reason; C{gatehouse sessions} shows it;
        its recording verifies as an unsealed end (exit 3), not as cut.
        """
        gateway = self.start()
        conn = self.connect(gateway)
        self.assertEqual(conn.execute("SELECT 1").fetchone(), (1,))
        # A long statement is classified in a worker process: the gateway
        # has children that kill -9 must not leave behind.
        long_select = "SELECT 1 AS one" + " " * 9000
        self.assertEqual(conn.execute(long_select).fetchone(), (1,))
        assert gateway.process is not None
        children = _children(gateway.process.pid)
        self.assertTrue(children, "no classifier worker was started")
        index = self.index_path(gateway)
        (row,) = wait_for(
            "the session in the index",
            lambda: [
                r for r in query_sessions(index, limit=None) if r.subject == "alice"
            ],
        )
        assert gateway.process is not None
        gateway.process.kill()
        gateway.process.wait(10)
        wait_for(
            "the classifier workers to die with the gateway",
            lambda: not [c for c in children if os.path.exists(f"/proc/{c}")],
        )
        self.assertIsNone(get_session(index, row.id).ended)
        gateway.start()
        self.wait_log(gateway, "marked ended")
        after = get_session(index, row.id)
        self.assertEqual(after.close_reason, CRASHED)
        self.assertIsNotNone(after.ended)

        env = dict(os.environ)
        listed = subprocess.run(
            [
                sys.executable,
                "-m",
                "gatehouse",
                "sessions",
                "--config",
                gateway.config_path,
                "--json",
            ],
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
        )
        self.assertEqual(listed.returncode, 0, listed.stderr)
        (shown,) = [s for s in json.loads(listed.stdout) if s["id"] == row.id]
        self.assertEqual(shown["close_reason"], CRASHED)
        verified = subprocess.run(
            [
                sys.executable,
                "-m",
                "gatehouse",
                "verify",
                "--config",
                gateway.config_path,
                row.id,
            ],
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
        )
        self.assertEqual(verified.returncode, 3, verified.stdout + verified.stderr)
        self.assertNotIn("truncated", verified.stdout + verified.stderr)
        # The new daemon serves.
        self.assertEqual(gateway.psql("SELECT 1").returncode, 0)


def _children(pid: int) -> list[int]:
    """The processes whose parent is C{pid} (Linux /proc)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(entry))
    return found
