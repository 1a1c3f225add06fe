"""
Red-team attacks on the daemon's lifecycle (issue 10), through the real
C{twistd -n gatehouse} in front of the real PostgreSQL: cases the
builders' modules (test_preauth, test_disconnects, test_signals, ...)
did not try.

Judged on the system's state: PostgreSQL's own C{pg_stat_activity} and
tables, the recordings as C{verify} reads them, the process's exit, and
another client still served.  A case marked C{todo} is a weakness found
and described, not fixed here (the reason is beside it).
"""

from __future__ import annotations

import json
import os
import re
import resource
import signal
import socket
import ssl
import struct
import threading
import time
import types
import urllib.error
import urllib.request
import uuid

import psycopg
import yaml
from twisted.trial.unittest import SynchronousTestCase

from gatehouse.protocols.postgres import codec
from gatehouse.recording.index import CRASHED, query_sessions
from gatehouse.recording.verify import verify_session
from tests.fixtures.postgres import shared_cluster
from tests.protocols.postgres.harness import Gateway
from tests.protocols.postgres.test_disconnects import _POLICY as _REVIEW_DROPS
from tests.protocols.postgres.test_disconnects import Client
from tests.protocols.postgres.test_e2e import GatewayTestCase, RawClient, error_of
from tests.protocols.postgres.test_preauth import Attacker
from tests.test_signals import wait_for


class _TargetTestCase(SynchronousTestCase):
    """A fresh daemon per test (it is stopped or killed), the target watched."""

    def setUp(self) -> None:
        self.cluster = shared_cluster()
        self.monitor = psycopg.connect(
            self.cluster.socket_dsn(dbname="app"), autocommit=True
        )
        self.addCleanup(self.monitor.close)

    def direct(self, sql: str) -> list[tuple]:
        return self.monitor.execute(sql).fetchall()

    def backends(self, prefix: str) -> list[tuple]:
        return self.direct(
            "select application_name, state from pg_stat_activity "
            f"where application_name like '{prefix}%'"
        )

    def copy_and_held(
        self, gateway: Gateway, tag: str, held_target: str = "app"
    ) -> tuple[str, str]:
        """
        Two sessions in the middle of something: C{tag}copy has sent half a
        COPY FROM STDIN, C{tag}held has a DROP held for approval.

        @return: the COPY's table and the table the DROP would drop.
        """
        copy_table, held_table = self.table(), self.table()
        copying = Client(gateway, "app", tag + "copy")
        self.addCleanup(copying.sock.close)
        copying.send(codec.Query(f"COPY {copy_table} FROM STDIN").encode())
        copying.expect(b"G")
        copying.send(codec.CopyData(b"half a copy\n").encode())
        held = Client(gateway, held_target, tag + "held")
        self.addCleanup(held.sock.close)
        held.send(codec.Query(f"DROP TABLE {held_table}").encode())
        self.assertIn(b"approv", held.expect(b"N"))
        return copy_table, held_table

    def table(self) -> str:
        name = f"disc_rt{uuid.uuid4().hex[:8]}"  # disc_*: what _REVIEW_DROPS holds
        self.monitor.execute(
            f"create table {name} (v text); alter table {name} owner to gw_scram"
        )
        self.addCleanup(self.monitor.execute, f"drop table if exists {name}")
        return name


class DrainRedTeamTests(_TargetTestCase):
    """
    SIGTERM while sessions are in the middle of something: each one is
    closed within the grace period, its backend gone, nothing half-done
    committed on the target, its recording sealed and complete.
    """

    def test_drain_mid_everything(self) -> None:
        """
        One SIGTERM (grace 1 s) with a session mid-COPY FROM STDIN, one
        with a DROP held for approval, one that stopped reading a large
        result, one idle, and a client that sent its startup but no
        password: the daemon exits 0 within a few seconds; no backend of
        theirs is left; the half-sent COPY stored nothing and the held
        DROP never ran; every recording verifies sealed and complete.
        """
        gateway = Gateway(self.mktemp(), self.cluster, extra_config=_REVIEW_DROPS)
        gateway.start()
        self.addCleanup(gateway.stop)
        tag = f"rtd-{uuid.uuid4().hex[:6]}-"
        started = time.time()
        copy_table, held_table = self.copy_and_held(gateway, tag)
        stalled = Client(gateway, "app", tag + "stalled")
        stalled.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        stalled.send(
            codec.Query(
                "select repeat('x', 1000) from generate_series(1, 100000)"
            ).encode()
        )
        idle = Client(gateway, "app", tag + "idle")
        for client in (stalled, idle):
            self.addCleanup(client.sock.close)
        wait_for("four backends", lambda: len(self.backends(tag)) == 4)

        raw = socket.create_connection(("127.0.0.1", gateway.port), timeout=10)
        raw.sendall(codec.SSLRequest().encode())
        self.assertEqual(raw.recv(1), b"S")
        login = ssl.create_default_context(cafile=gateway.ca_cert).wrap_socket(
            raw, server_hostname="localhost"
        )
        self.addCleanup(login.close)
        login.sendall(
            codec.StartupMessage({"user": "alice", "database": "app"}).encode()
        )
        asked = b""
        while len(asked) < 9:  # AuthenticationCleartextPassword
            asked += login.recv(9 - len(asked))
        self.assertEqual(asked, codec.AuthenticationCleartextPassword().encode())

        process = gateway.process
        sent = time.monotonic()
        process.terminate()
        code = process.wait(15)
        elapsed = time.monotonic() - sent
        self.assertEqual(code, 0, gateway.log()[-3000:])
        self.assertLess(elapsed, 6.0, gateway.log()[-3000:])

        wait_for("no backend left", lambda: not self.backends(tag), timeout=2)
        self.assertEqual(self.direct(f"select count(*) from {copy_table}"), [(0,)])
        self.assertEqual(
            self.direct(f"select to_regclass('public.{held_table}') is not null"),
            [(True,)],
        )
        rows = [
            r
            for r in query_sessions(
                gateway.path("recordings", "index.sqlite3"), limit=None
            )
            if r.started >= started - 1
        ]
        self.assertEqual(len(rows), 4, [r.close_reason for r in rows])
        for row in rows:
            self.assertIsNotNone(row.ended, row)
            report = verify_session(row.directory, gateway.anchors())
            self.assertEqual(
                (report.findings, report.complete), ((), True), row.close_reason
            )
        # The client in the middle of its login was told, or cut off.
        login.settimeout(5)
        try:
            rest = login.recv(65536)
        except (ConnectionResetError, ssl.SSLError):
            rest = b""
        if rest:
            self.assertEqual(error_of(rest).sqlstate, "57P01")

    def draining_gateway(self, **kw: object) -> tuple[Gateway, psycopg.Connection]:
        """A daemon with a 5 s shutdown_grace, and a session logged in to it."""
        gateway = Gateway(
            self.mktemp(),
            self.cluster,
            extra_config={"gateway": {"id": "gw-e2e", "shutdown_grace": "5s"}},
            **kw,
        )
        gateway.start()
        self.addCleanup(gateway.stop)
        session = psycopg.connect(gateway.conninfo(), password=gateway.token())
        self.addCleanup(session.close)
        self.assertEqual(session.execute("select 1").fetchone(), (1,))
        return gateway, session

    def test_preauth_connections_do_not_hold_the_drain(self) -> None:
        """
        Clients without a token that sent an SSLRequest and stopped (one
        before SIGTERM, one during the drain): once the one logged-in
        session ends, the daemon stops, not at the end of the grace period
        (5 s here, 30 s by default: every restart of a gateway on the
        internet would take that long).
        """
        gateway, session = self.draining_gateway()
        early = Attacker(gateway.port, "127.0.0.2")
        self.addCleanup(early.close)
        early.sock.sendall(codec.SSLRequest().encode())
        self.assertEqual(early.sock.recv(1), b"S")
        process = gateway.process
        process.terminate()
        wait_for("the drain", lambda: "Draining" in gateway.log())
        late = Attacker(gateway.port, "127.0.0.3")
        self.addCleanup(late.close)
        late.sock.sendall(codec.SSLRequest().encode())
        self.assertEqual(late.sock.recv(1), b"S")
        ended = time.monotonic()
        session.close()
        self.assertEqual(process.wait(15), 0)
        self.assertLess(time.monotonic() - ended, 1.5, gateway.log()[-2000:])
        self.assertIn("Draining: 1 session(s) open", gateway.log())

    def test_hup_during_drain(self) -> None:
        """
        An operator (or logrotate) sends SIGHUP during the drain: the
        daemon keeps draining (a newcomer is refused 57P03, /readyz stays
        503) and exits when the last session ends.
        """
        gateway, session = self.draining_gateway(admin=True)
        process = gateway.process
        process.terminate()
        wait_for("the drain", lambda: "Draining" in gateway.log())
        process.send_signal(signal.SIGHUP)
        wait_for("the reload", lambda: "Reloaded " in gateway.log())
        newcomer = RawClient(gateway.port, gateway.ca_cert)
        self.addCleanup(newcomer.close)
        newcomer.send(
            codec.StartupMessage({"user": "alice", "database": "app"}).encode()
        )
        self.assertEqual(error_of(newcomer.read_all()).sqlstate, "57P03")
        try:
            urllib.request.urlopen(gateway.admin_url + "/readyz", timeout=5)
            self.fail("/readyz is ready during the drain")
        except urllib.error.HTTPError as e:
            self.assertEqual(e.code, 503)
        self.assertEqual(session.execute("select 2").fetchone(), (2,))
        session.close()
        self.assertEqual(process.wait(15), 0)


class PreauthRedTeamTests(GatewayTestCase):
    """
    An attacker without a token, from several source addresses (as from
    a handful of hosts, or one IPv6 /64), against a listener's pre-auth
    caps.
    """

    TIMEOUT = 3.0
    PER_ADDRESS = 2
    UNAUTHENTICATED = 6

    def make_gateway(self, base: str) -> Gateway:
        return Gateway(
            base,
            self.cluster,
            listener_options={
                "authentication_timeout": f"{self.TIMEOUT:g}s",
                "max_connections": 20,
                "max_unauthenticated": self.UNAUTHENTICATED,
                "max_unauthenticated_per_address": self.PER_ADDRESS,
            },
        )

    def hold(self, count: int, source: str) -> list[Attacker]:
        """C{count} idle pre-auth connections from C{source}, admitted."""
        held = []
        for _ in range(count):
            attacker = Attacker(self.gateway.port, source)
            self.addCleanup(attacker.close)
            held.append(attacker)
        # Admitted, not refused: an SSLRequest is answered.
        for attacker in held:
            attacker.sock.sendall(codec.SSLRequest().encode())
            self.assertEqual(attacker.sock.recv(1), b"S")
        return held

    def test_several_addresses_do_not_lock_out_others(self) -> None:
        """
        Attackers from three addresses, each within its per-address cap,
        fill the listener's pre-auth cap: a well-behaved client from
        another address is still served (the heaviest address's oldest
        pre-auth connection makes room), not refused until the attackers
        give up.
        """
        attackers = []
        for n in range(self.UNAUTHENTICATED // self.PER_ADDRESS):
            attackers += self.hold(self.PER_ADDRESS, f"127.0.0.{n + 2}")
        opened = time.monotonic()
        with psycopg.connect(
            self.gateway.conninfo(password=self.gateway.token())
        ) as conn:
            self.assertEqual(conn.execute("select 'served'").fetchone(), ("served",))
        # Served at once, not after the attackers' login timeout.
        self.assertLess(time.monotonic() - opened, self.TIMEOUT / 2)
        # The place was taken from the heaviest address's oldest, refused
        # at once (it had started TLS: it may only see the connection end).
        _, elapsed = attackers[0].read_to_close()
        self.assertLess(elapsed, self.TIMEOUT)
        # An address at its share gets no more by evicting others.
        self.hold(1, "127.0.0.9")
        refused = Attacker(self.gateway.port, "127.0.0.2")
        self.addCleanup(refused.close)
        data, elapsed = refused.read_to_close()
        self.assertLess(elapsed, self.TIMEOUT)
        error = error_of(data)
        self.assertEqual(error.sqlstate, "53300")
        self.assertIn(f"maximum of {self.UNAUTHENTICATED} unauth", error.detail)
        for attacker in attackers[1:]:
            self.assertGreaterEqual(attacker.read_to_close()[1], self.TIMEOUT - 0.1)

    def test_tls_renegotiation_refused(self) -> None:
        """
        A client without a token renegotiates TLS 1.2 (each handshake costs
        the gateway a signature): refused with no_renegotiation, and the
        gateway goes on serving.
        """
        from OpenSSL import SSL

        sock = socket.create_connection(("127.0.0.1", self.gateway.port), timeout=5)
        self.addCleanup(sock.close)
        sock.sendall(codec.SSLRequest().encode())
        self.assertEqual(sock.recv(1), b"S")
        sock.settimeout(None)  # pyOpenSSL wants a blocking socket
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, struct.pack("ll", 5, 0))
        context = SSL.Context(SSL.TLS_CLIENT_METHOD)
        context.set_max_proto_version(SSL.TLS1_2_VERSION)
        tls = SSL.Connection(context, sock)
        tls.set_connect_state()
        tls.do_handshake()
        self.assertTrue(tls.renegotiate())
        with self.assertRaises(SSL.Error) as raised:
            tls.do_handshake()
        self.assertIn("no renegotiation", str(raised.exception))
        self.assert_still_serving()

    def test_cancel_request_flood(self) -> None:
        """
        A hundred CancelRequests with made-up keys from several
        addresses while a session's statement runs: none cancels it, the
        daemon's descriptors come back, and a new client is served.
        """
        pid = self.gateway.process.pid
        # Counted after a first session: the index opens its files on it.
        self.assert_still_serving()
        fds = len(os.listdir(f"/proc/{pid}/fd"))
        with psycopg.connect(
            self.gateway.conninfo(password=self.gateway.token())
        ) as conn:
            result: list = []
            runner = threading.Thread(
                target=lambda: result.append(
                    conn.execute("select pg_sleep(1), 'ran'").fetchone()
                )
            )
            runner.start()
            for n in range(100):
                sock = socket.socket()
                sock.bind((f"127.0.0.{n % 3 + 2}", 0))
                try:
                    sock.connect(("127.0.0.1", self.gateway.port))
                    sock.sendall(codec.CancelRequest(n + 1, os.urandom(4)).encode())
                except OSError:
                    pass
                sock.close()
            runner.join(10)
            self.assertEqual(result, [("", "ran")])
        wait_for(
            "descriptors back",
            lambda: len(os.listdir(f"/proc/{pid}/fd")) <= fds + 2,
        )
        self.assert_still_serving()


class CrashRedTeamTests(_TargetTestCase):
    """kill -9 with sessions in the middle of something, then a restart."""

    def test_kill_mid_everything(self) -> None:
        """
        kill -9 with a session mid-COPY, one whose DROP is held for
        approval and one that has been relaying for a while (segments
        sealed every 0.2 s): PostgreSQL sees every backend's socket close
        (none left), the half COPY stored nothing, the held DROP never
        ran (not after the restart either); the restart marks the three
        sessions crashed, each recording verifies as an unsealed end
        (exit 3), never as cut or tampered, and a new client is served.
        """
        gateway = Gateway(
            self.mktemp(),
            self.cluster,
            extra_config=_REVIEW_DROPS,
            seal_interval="0.2s",
        )
        gateway.start()
        self.addCleanup(gateway.stop)
        tag = f"rtk-{uuid.uuid4().hex[:6]}-"
        started = time.time()
        copy_table, held_table = self.copy_and_held(gateway, tag, "app_md5")
        busy = Client(gateway, "app", tag + "busy")
        for n in range(20):
            busy.send(codec.Query(f"select repeat('y', 5000), {n}").encode())
            busy.until(b"Z")
            time.sleep(0.02)
        self.addCleanup(busy.sock.close)
        wait_for("three backends", lambda: len(self.backends(tag)) == 3)

        gateway.process.kill()
        gateway.process.wait(10)
        wait_for("no backend left", lambda: not self.backends(tag), timeout=3)
        self.assertEqual(self.direct(f"select count(*) from {copy_table}"), [(0,)])

        gateway.start()
        index = gateway.path("recordings", "index.sqlite3")
        wait_for("marked crashed", lambda: "marked ended" in gateway.log())
        rows = [
            r for r in query_sessions(index, limit=None) if r.started >= started - 1
        ]
        self.assertEqual(len(rows), 3, rows)
        for row in rows:
            self.assertEqual(row.close_reason, CRASHED, row)
            report = verify_session(row.directory, gateway.anchors())
            self.assertEqual(report.exit_code, 3, report.findings)
            text = repr(report.findings).lower()
            self.assertNotIn("truncat", text)
            self.assertNotIn("tamper", text)
        self.assertEqual(gateway.psql("SELECT 1").returncode, 0)
        self.assertEqual(
            self.direct(f"select to_regclass('public.{held_table}') is not null"),
            [(True,)],
        )

    def test_kill_mid_statement(self) -> None:
        """
        kill -9 while a statement runs on the target (pg_sleep(4)): the
        backend ends within a second or two of the gateway's death, not
        when the statement would have finished (a long report or a lock
        held for an hour would outlive the gateway).
        """
        gateway = Gateway(self.mktemp(), self.cluster)
        gateway.start()
        self.addCleanup(gateway.stop)
        client = Client(gateway, "app", "rt-kill-running")
        self.addCleanup(client.sock.close)
        client.send(codec.Query("select pg_sleep(4)").encode())
        wait_for(
            "the statement running",
            lambda: self.direct(
                "select 1 from pg_stat_activity where application_name ="
                " 'rt-kill-running' and state = 'active'"
            ),
        )
        gateway.process.kill()
        gateway.process.wait(10)
        killed = time.monotonic()
        wait_for("backend gone", lambda: not self.backends("rt-kill-running"), 6)
        self.assertLess(time.monotonic() - killed, 2.0)

    test_kill_mid_statement.todo = (  # type: ignore[attr-defined]
        "open: PostgreSQL notices a closed client socket only when it next"
        " reads or writes, so a statement running when the gateway dies runs"
        " to its end (its cancel key died with the gateway). A fix: have the"
        " target check its socket while it runs (client_connection_check_interval,"
        " PostgreSQL 14+, Linux), set by the gateway for targets that have it"
        " (not as a startup parameter: older servers refuse the whole login),"
        " or recommend it in the target's postgresql.conf."
    )


class AdminFloodTests(GatewayTestCase):
    """
    An attacker without a token who can reach the admin API (load
    balancers and Prometheus must): idle, half-sent requests, which
    Twisted's idle timeout never ends while a byte comes now and then.
    """

    #: the daemon's open-file limit in this test (set after start)
    NOFILE = 200

    def make_gateway(self, base: str) -> Gateway:
        gateway = Gateway(base, self.cluster, admin=True)
        return gateway

    def test_admin_connections_do_not_starve_the_listener(self) -> None:
        """
        300 half-sent requests from five addresses against a daemon that
        may open 200 files: the admin API holds only a bounded number, so
        a PostgreSQL client is still served, and so is a load balancer's
        /healthz from another address.
        """
        pid = self.gateway.process.pid
        resource.prlimit(pid, resource.RLIMIT_NOFILE, (self.NOFILE, self.NOFILE))
        held = []
        for n in range(300):
            sock = socket.socket()
            sock.bind((f"127.0.0.{n % 5 + 2}", 0))
            sock.settimeout(5)
            try:
                sock.connect(("127.0.0.1", self.gateway.admin_port))
                sock.sendall(b"GET /healthz HTTP/1.1\r\nX-Slow: ")
            except OSError:
                pass
            held.append(sock)
        self.addCleanup(lambda: [s.close() for s in held])
        time.sleep(0.5)
        fds = len(os.listdir(f"/proc/{pid}/fd"))
        self.assertIn("still-here", self.psql_ok("select 'still-here'"))
        with urllib.request.urlopen(
            self.gateway.admin_url + "/healthz", timeout=5
        ) as response:
            self.assertEqual(response.status, 200)
        self.assertLess(fds, self.NOFILE - 20)


class ExpiryRedTeamTests(GatewayTestCase):
    """A token that expires while the session streams."""

    LIFETIME = 2

    def make_gateway(self, base: str) -> Gateway:
        gateway = Gateway(base, self.cluster)
        with open(gateway.config_path) as f:
            config = yaml.safe_load(f)
        config["identity"]["issuers"][0]["leeway"] = "0s"
        with open(gateway.config_path, "w") as f:
            yaml.safe_dump(config, f)
        return gateway

    def test_expiry_mid_copy_in(self) -> None:
        """
        COPY FROM STDIN streaming rows (the client never reads) when the
        token expires: the target's backend is gone within a moment of the
        expiry, the COPY aborted there (no row stored), and the recording
        verifies.
        """
        monitor = psycopg.connect(
            self.cluster.socket_dsn(dbname="app"), autocommit=True
        )
        self.addCleanup(monitor.close)
        table = f"rt_{uuid.uuid4().hex[:8]}"
        monitor.execute(f"create table {table} (v text)")
        monitor.execute(f"alter table {table} owner to gw_scram")
        self.addCleanup(monitor.execute, f"drop table if exists {table}")
        start = time.time()
        expires = int(start) + self.LIFETIME + 1
        token = self.gateway.token(exp=expires)
        as_gateway = types.SimpleNamespace(
            port=self.gateway.port, ca_cert=self.gateway.ca_cert, token=lambda: token
        )
        client = Client(as_gateway, "app", "rt-expiry-copy")
        self.addCleanup(client.sock.close)
        client.send(codec.Query(f"COPY {table} FROM STDIN").encode())
        client.expect(b"G")

        def backend() -> list:
            return monitor.execute(
                "select 1 from pg_stat_activity "
                "where application_name = 'rt-expiry-copy'"
            ).fetchall()

        rows = codec.CopyData(b"x" * 200 + b"\n").encode() * 50
        sent = 0
        while backend():
            self.assertLess(time.time(), expires + 5, "the session outlived its token")
            for _ in range(20):
                client.send(rows)
                sent += 1
                time.sleep(0.001)
        self.assertLess(time.time() - expires, 1.5)
        self.assertGreater(sent, 20)
        client.reset()
        self.assertEqual(
            monitor.execute(f"select count(*) from {table}").fetchone(), (0,)
        )
        session = self.latest_session(start)
        self.assertTrue(session.close_reason.startswith("token expired at "))
        self.transcript(session)
        self.assert_still_serving()


class ReloadRedTeamTests(_TargetTestCase):
    """SIGHUP storms and reloads that take away what a live session uses."""

    def admin(self, gateway: Gateway, method: str, path: str) -> tuple[int, dict]:
        token = gateway.token(subject="bob", groups=("approvers",))
        request = urllib.request.Request(
            gateway.admin_url + path,
            method=method,
            headers={"Authorization": f"Bearer {token}"},
            data=b"" if method == "POST" else None,
        )
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return response.status, json.load(response)
        except urllib.error.HTTPError as e:
            return e.code, json.load(e)

    def test_hup_storm_while_held(self) -> None:
        """
        Thirty SIGHUPs while a DROP is held for approval and another
        session streams queries: the daemon lives, the streaming session
        never fails, the held request is still listed and its approval
        still releases the statement (the table is dropped).
        """
        gateway = Gateway(
            self.mktemp(), self.cluster, extra_config=_REVIEW_DROPS, admin=True
        )
        gateway.start()
        self.addCleanup(gateway.stop)
        table = self.table()
        held = Client(gateway, "app", "rt-hup-held")
        self.addCleanup(held.sock.close)
        held.send(codec.Query(f"DROP TABLE {table}").encode())
        self.assertIn(b"approv", held.expect(b"N"))
        busy = psycopg.connect(gateway.conninfo(), password=gateway.token())
        self.addCleanup(busy.close)
        for n in range(30):
            gateway.process.send_signal(signal.SIGHUP)
            self.assertEqual(busy.execute("select %s::int", (n,)).fetchone(), (n,))
            time.sleep(0.01)
        wait_for(
            "the reloads",
            lambda: (
                gateway.log().count("Reloaded ") >= 1
                and gateway.log().count("SIGHUP") >= 30
            ),
        )
        self.assertIsNone(gateway.process.poll())
        status, body = self.admin(gateway, "GET", "/api/v1/approvals")
        self.assertEqual(status, 200, body)
        (request,) = body["approvals"]
        status, body = self.admin(
            gateway, "POST", f"/api/v1/approvals/{request['id']}/approve"
        )
        self.assertEqual(status, 200, body)
        self.assertEqual(held.until(b"Z")[-2][0], b"C")
        self.assertEqual(
            self.direct(f"select to_regclass('public.{table}') is null"), [(True,)]
        )

    def test_removed_target_ends_live_sessions(self) -> None:
        """
        A reload that removes the target a live session uses (an operator
        cutting access in an incident): the session ends (57P01), its
        backend is gone, and its recording says why; new sessions are
        refused (3D000).
        """
        gateway = Gateway(self.mktemp(), self.cluster)
        gateway.start()
        self.addCleanup(gateway.stop)
        conn = psycopg.connect(
            gateway.conninfo("app_md5", application_name="rt-removed"),
            password=gateway.token(),
            autocommit=True,
        )
        self.addCleanup(conn.close)
        self.assertEqual(conn.execute("select 1").fetchone(), (1,))
        with open(gateway.config_path) as f:
            config = yaml.safe_load(f)
        config["targets"] = [t for t in config["targets"] if t["name"] != "app_md5"]
        with open(gateway.config_path, "w") as f:
            yaml.safe_dump(config, f)
        gateway.process.send_signal(signal.SIGHUP)
        wait_for("the reload", lambda: "Reloaded " in gateway.log())
        refused = gateway.psql("select 1", target="app_md5")
        self.assertIn('no target named "app_md5"', refused.stderr)
        with self.assertRaises(psycopg.OperationalError) as raised:
            conn.execute("select 2")
        self.assertEqual(raised.exception.sqlstate, "57P01")
        wait_for("backend gone", lambda: not self.backends("rt-removed"), 2)


class LogForgeryTests(GatewayTestCase):
    """
    Text a client chooses that reaches the text log by way of the
    target: a startup setting the target refuses, quoted in its error.
    """

    FORGED = "2026-01-01T00:00:00.000+00:00 [gatehouse.session.Session] session.start"

    def test_startup_setting_cannot_forge_a_line(self) -> None:
        """
        A DateStyle value with a line break and a whole fake log line in
        it: the target refuses it and the gateway logs why, but no line of
        the log (leading whitespace or not) is the fake one.
        """
        mark = len(self.gateway.log())
        evil = f"ISO\n{self.FORGED} subject=root target=prod"
        client = RawClient(self.gateway.port, self.gateway.ca_cert)
        self.addCleanup(client.close)
        client.send(
            codec.StartupMessage(
                {"user": "alice", "database": "app", "DateStyle": evil}
            ).encode()
        )
        client.expect(b"R")
        client.send(codec.PasswordMessage(self.gateway.token()).encode())
        self.assertEqual(error_of(client.read_all()).sqlstate, "08006")
        client.close()
        log = wait_for(
            "the refusal logged",
            lambda: (
                "session.end" in self.gateway.log()[mark:] and self.gateway.log()[mark:]
            ),
        )
        self.assertIn("DateStyle", log)
        forged = re.compile(r"^\s*" + re.escape(self.FORGED), re.M)
        self.assertIsNone(forged.search(log), log)
        self.assert_still_serving()


class CloseRedTeamTests(GatewayTestCase):
    """How long the gateway holds a session it has ended with FATAL."""

    def test_fatal_closes_without_the_clients_close_notify(self) -> None:
        """
        A logged-in TLS client sends a second password message (FATAL
        08P01), reads the error and the gateway's close_notify, and keeps
        its socket open without answering: the gateway closes the
        connection and ends the session within a second or two, as
        PostgreSQL does, not after CLOSE_TIMEOUT (10 s) holding the
        descriptor, its place under max_connections and the unsealed
        recording.
        """
        start = time.time()
        client = Client(self.gateway, "app", "rt-close-notify")
        self.addCleanup(client.sock.close)
        client.send(codec.PasswordMessage("again").encode())
        data, _ = client.read_to_eof(5)
        self.assertEqual(error_of(data).sqlstate, "08P01")
        fatal = time.monotonic()
        index = self.gateway.path("recordings", "index.sqlite3")

        def ended() -> bool:
            rows = [r for r in query_sessions(index, limit=None) if r.started >= start]
            return bool(rows) and rows[-1].ended is not None

        wait_for("the session ended", ended, timeout=3)
        self.assertLess(time.monotonic() - fatal, 2.0)


class MetricsRedTeamTests(GatewayTestCase):
    """Label values a client chooses, in the metrics."""

    def make_gateway(self, base: str) -> Gateway:
        return Gateway(base, self.cluster, admin=True)

    def test_unknown_targets_add_no_series(self) -> None:
        """
        Thirty logins (valid token) naming databases that are no target:
        each is refused (3D000) and /metrics grows no series per name (a
        client could otherwise add one per name, for ever, to the
        gateway's memory and every Prometheus scrape).
        """
        names = [f"nothere{uuid.uuid4().hex[:8]}" for _ in range(30)]
        token = self.gateway.token()
        for name in names:
            client = RawClient(self.gateway.port, self.gateway.ca_cert)
            client.send(
                codec.StartupMessage({"user": "alice", "database": name}).encode()
            )
            client.expect(b"R")
            client.send(codec.PasswordMessage(token).encode())
            self.assertEqual(error_of(client.read_all()).sqlstate, "3D000")
            client.close()
        wait_for(
            "the sessions closed",
            lambda: self.gateway.log().count('reason="unknown target') >= 30,
        )
        with urllib.request.urlopen(
            self.gateway.admin_url + "/metrics", timeout=10
        ) as response:
            metrics = response.read().decode()
        self.assertNotIn("nothere", metrics)
        self.assert_still_serving()
