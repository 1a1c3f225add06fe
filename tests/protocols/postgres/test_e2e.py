"""
End-to-end: real clients through the real daemon to a real PostgreSQL.

psql, pgbench, psycopg 3 and asyncpg connect to C{twistd -n gatehouse} with
a JWT as their password; the gateway reaches PostgreSQL 15 with its own
credentials.  Every session's recording is verified and replayed.
"""

from __future__ import annotations

import asyncio
import atexit
import hashlib
import io
import json
import os
import re
import shutil
import socket
import ssl
import struct
import subprocess
import tempfile
import threading
import time

import psycopg
from twisted.trial.unittest import SynchronousTestCase

from gatehouse.protocols.postgres import codec
from gatehouse.recording.format import RecordType
from gatehouse.recording.index import IndexUnavailable, commands_for, query_sessions
from gatehouse.recording.reader import read_records
from gatehouse.recording.render import render
from gatehouse.recording.verify import verify_session
from tests.fixtures.postgres import shared_cluster
from tests.protocols.postgres.harness import Gateway

_gateways: dict[type, Gateway] = {}


@atexit.register
def _stop_gateways() -> None:
    for gateway in _gateways.values():
        gateway.stop()
        shutil.rmtree(gateway.directory, ignore_errors=True)


class GatewayTestCase(SynchronousTestCase):
    """
    Runs one gateway per test class (started by its first test, stopped at
    exit), in front of the shared cluster.
    """

    gateway: Gateway

    def setUp(self) -> None:
        self.cluster = shared_cluster()
        cls = type(self)
        if cls not in _gateways:
            base = tempfile.mkdtemp(prefix=f"gatehouse-e2e-{cls.__name__}-")
            gateway = _gateways[cls] = self.make_gateway(base)
            gateway.start()
        self.gateway = _gateways[cls]

    def make_gateway(self, base: str) -> Gateway:
        """The gateway this class's tests run against."""
        return Gateway(base, self.cluster)

    # -- helpers -----------------------------------------------------------

    def psql_ok(self, sql: str | None = None, **kw: object) -> str:
        """Run psql through the gateway; it must succeed."""
        result = self.gateway.psql(sql, **kw)
        self.assertEqual(
            result.returncode,
            0,
            f"psql failed:\n{result.stderr}\n{self.gateway.log()[-4000:]}",
        )
        return result.stdout

    def direct(self, sql: str) -> str:
        """Run SQL directly on the cluster (as the superuser)."""
        return self.cluster.psql(sql, dbname="app").strip()

    def latest_session(self, after: float, wait_closed: bool = True) -> object:
        """The newest session that started after C{after}, once closed."""
        index = self.gateway.path("recordings", "index.sqlite3")
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            try:
                rows = query_sessions(index, limit=None)
            except IndexUnavailable:  # the daemon may still be creating it
                time.sleep(0.05)
                continue
            rows = [r for r in rows if r.started >= after]
            rows.sort(key=lambda r: r.started)
            if rows and (
                not wait_closed or (rows[-1].ended is not None and rows[-1].final)
            ):
                return rows[-1]
            time.sleep(0.05)
        log = self.gateway.log()[-3000:]
        self.fail(f"no closed session after {after} in the index:\n{log}")

    def transcript(self, row: object) -> str:
        """Verify a session's recording (it must be clean) and replay it."""
        report = verify_session(row.directory, self.gateway.anchors())
        self.assertEqual(report.findings, (), f"recording of {row.id} does not verify")
        self.assertEqual(report.exit_code, 0)
        out = io.StringIO()
        render(read_records(row.directory), out)
        return out.getvalue()

    def close_reason(self, row: object) -> str:
        """The reason in the recording's CLOSE record."""
        records = list(read_records(row.directory))
        self.assertEqual(records[-1].type, RecordType.CLOSE)
        return json.loads(records[-1].payload)["reason"]

    def assert_still_serving(self) -> None:
        """Another client still gets through."""
        self.assertIn("still-here", self.psql_ok("select 'still-here'"))

    def log_mark(self) -> tuple[float, int, list[str]]:
        """Where a test starts: time, log length, recorded directories."""
        return time.time(), len(self.gateway.log()), self.gateway.recordings()

    def assert_login_event(
        self,
        mark: tuple[float, int, list[str]],
        reason: str,
        count: int = 1,
        served: int = 0,
    ) -> str:
        """
        A login refused since C{mark} left an event, not a recording: at
        least C{count} C{login.refused} log lines with C{reason} (waited
        for), and no session directory or index row but those of the
        C{served} clients that logged in meanwhile.

        @return: the log written since C{mark}.
        """
        start, offset, before = mark
        deadline = time.monotonic() + 10
        while True:
            log = self.gateway.log()[offset:]
            lines = [
                line
                for line in log.splitlines()
                if "login.refused " in line
                and "client_address=127.0.0." in line
                and reason in line
            ]
            if len(lines) >= count or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        self.assertGreaterEqual(len(lines), count, log[-4000:])
        new = sorted(set(self.gateway.recordings()) - set(before))
        index = self.gateway.path("recordings", "index.sqlite3")
        try:
            rows = query_sessions(index, limit=None)
        except IndexUnavailable:
            rows = []
        rows = [r for r in rows if r.started >= start]
        # Every new directory and row is a client that logged in.
        self.assertEqual(len(new), served, new)
        self.assertEqual(len(rows), served, rows)
        self.assertEqual(sorted(r.directory for r in rows), new)
        for row in rows:
            self.assertIsNotNone(row.subject, row)
        return log


class PsqlTests(GatewayTestCase):
    """psql over TLS with sslmode=verify-full against the gateway's CA."""

    def test_ddl_dml_and_recording(self) -> None:
        """
        DDL and DML reach PostgreSQL; the recording verifies and replays to
        a transcript holding the statements and the rows that crossed.
        """
        start = time.time()
        out = self.psql_ok(
            "create table if not exists e2e_people (id int primary key, name text);"
            "truncate e2e_people;"
            "insert into e2e_people values (1, 'Ada Lovelace'), (2, 'Alan Turing');"
            "update e2e_people set name = 'Grace Hopper' where id = 2;"
            "select id, name from e2e_people order by id;"
        )
        self.assertIn("Grace Hopper", out)
        self.assertEqual(
            self.direct("select string_agg(name, ',' order by id) from e2e_people"),
            "Ada Lovelace,Grace Hopper",
        )
        row = self.latest_session(start)
        self.assertEqual(
            (row.subject, row.target, row.protocol), ("alice", "app", "postgres")
        )
        self.assertEqual(row.groups, ("dba",))
        text = self.transcript(row)
        self.assertIn("insert into e2e_people values (1, 'Ada Lovelace')", text)
        self.assertIn("Grace Hopper", text)
        self.assertIn("UPDATE 1", text)
        # The client's token never reaches the recording.
        token_tail = self.gateway.token()[-20:]
        for record in read_records(row.directory):
            self.assertNotIn(token_tail.encode(), record.payload)
        kinds = {
            c.kind
            for c in commands_for(
                self.gateway.path("recordings", "index.sqlite3"), row.id
            )
        }
        self.assertTrue(
            {"CreateStmt", "InsertStmt", "UpdateStmt", "SelectStmt"} <= kinds, kinds
        )

    def test_token_not_recorded(self) -> None:
        """The password message is recorded redacted."""
        start = time.time()
        token = self.gateway.token(subject="redact-check")
        self.psql_ok("select 1", token=token)
        row = self.latest_session(start)
        blob = b"".join(r.payload for r in read_records(row.directory))
        self.assertNotIn(token.encode(), blob)
        self.assertNotIn(token.split(".")[2][:16].encode(), blob)
        self.assertIn(b"[REDACTED]", blob)
        # Nor the upstream password.
        self.assertNotIn(self.cluster.passwords["gw_scram"].encode(), blob)

    def test_copy_in_and_out(self) -> None:
        """\\copy from stdin and to stdout pass through both ways."""
        self.psql_ok(
            "create table if not exists e2e_copy (a int, b text); truncate e2e_copy"
        )
        rows = "".join(f"{i}\trow {i}\n" for i in range(1, 2001))
        self.psql_ok(args=("-c", "\\copy e2e_copy from stdin"), stdin=rows)
        self.assertEqual(
            self.direct("select count(*), sum(a) from e2e_copy"), "2000|2001000"
        )
        out = self.psql_ok(
            args=("-c", "\\copy (select * from e2e_copy order by a) to stdout")
        )
        self.assertEqual(out, rows)

    def test_multi_statement_query(self) -> None:
        """A Query with several statements returns every result."""
        out = self.psql_ok(
            "select 1 as one; select 2 as two; select 3 as three", args=("-At",)
        )
        self.assertEqual(out.split(), ["1", "2", "3"])

    def test_listen_notify(self) -> None:
        """A notification sent by another session reaches a listening client."""
        listener = subprocess.Popen(
            [self.cluster.bin("psql"), "-X", self.gateway.conninfo()],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "PGPASSWORD": self.gateway.token()},
        )
        listener.stdin.write("LISTEN e2e_channel;\nSELECT 'listening';\n")
        listener.stdin.flush()
        self.assertIn(
            "listening",
            listener.stdout.readline()
            + listener.stdout.readline()
            + listener.stdout.readline()
            + listener.stdout.readline(),
        )
        self.psql_ok("NOTIFY e2e_channel, 'hello-from-gatehouse'")
        # psql reports notifications after its next command.
        out, err = listener.communicate("SELECT 'after';\n", timeout=30)
        self.assertIn(
            'Asynchronous notification "e2e_channel" with payload '
            '"hello-from-gatehouse"',
            out + err,
        )

    def test_cancel_pg_sleep(self) -> None:
        """
        A cancel (what Ctrl-C in psql sends, through libpq's cancel key)
        stops a running pg_sleep on the target.
        """
        conn = psycopg.connect(self.gateway.conninfo(password=self.gateway.token()))
        self.addCleanup(conn.close)
        threading.Timer(1.0, conn.cancel).start()
        started = time.monotonic()
        with self.assertRaises(psycopg.errors.QueryCanceled):
            conn.execute("select pg_sleep(30)")
        self.assertLess(time.monotonic() - started, 10)
        conn.rollback()
        self.assertEqual(conn.execute("select 'alive'").fetchone(), ("alive",))

    def test_other_upstream_auth_methods(self) -> None:
        """The gateway logs in with md5, cleartext and trust as the target asks."""
        for target, role in (
            ("app_md5", "gw_md5"),
            ("app_clear", "gw_clear"),
            ("app_trust", "gw_trust"),
        ):
            self.assertEqual(
                self.psql_ok(
                    "select current_user", target=target, args=("-At",)
                ).strip(),
                role,
            )

    def test_not_allowed_group(self) -> None:
        """An identity outside the target's groups is refused (28000)."""
        result = self.gateway.psql("select 1", target="ops_only")
        self.assertNotEqual(result.returncode, 0)
        self.assertIn('"alice" may not reach target "ops_only"', result.stderr)

    def test_tls_required(self) -> None:
        """sslmode=disable is refused: this listener accepts only TLS."""
        result = self.gateway.psql("select 1", sslmode="disable")
        self.assertNotEqual(result.returncode, 0)
        self.assertIn("accepts only TLS", result.stderr)


class DirectTLSTests(GatewayTestCase):
    """PostgreSQL 17+ direct TLS (ALPN postgresql), through psycopg's libpq."""

    def test_direct_tls(self) -> None:
        self.assertGreaterEqual(
            psycopg.pq.version(), 170000, "psycopg's libpq lacks direct TLS"
        )
        start = time.time()
        with psycopg.connect(
            self.gateway.conninfo(
                password=self.gateway.token(), sslnegotiation="direct"
            )
        ) as conn:
            self.assertEqual(conn.execute("select 40 + 2").fetchone(), (42,))
            self.assertEqual(conn.pgconn.ssl_in_use, True)
        row = self.latest_session(start)
        events = [
            json.loads(r.payload)
            for r in read_records(row.directory)
            if r.type == RecordType.EVENT
        ]
        self.assertIn({"event": "tls", "negotiation": "direct"}, events)

    def test_direct_tls_needs_alpn_postgresql(self) -> None:
        """
        Direct TLS must agree ALPN "postgresql", as PostgreSQL 17 requires:
        a client offering only another protocol fails the handshake; one
        offering none gets 08P01 at its startup message.  The TLS port is
        not a cross-protocol target.
        """
        from gatehouse.protocols.postgres import codec

        def connect(offered: list[str] | None) -> ssl.SSLSocket:
            ctx = ssl.create_default_context(cafile=self.gateway.ca_cert)
            if offered is not None:
                ctx.set_alpn_protocols(offered)
            raw = socket.create_connection(("127.0.0.1", self.gateway.port), 10)
            try:
                return ctx.wrap_socket(raw, server_hostname="localhost")
            except BaseException:
                raw.close()
                raise

        self.assertRaises(ssl.SSLError, connect, ["http/1.1"])
        startup = codec.StartupMessage({"user": "alice", "database": "app"}).encode()
        with connect(None) as sock:
            self.assertIsNone(sock.selected_alpn_protocol())
            sock.settimeout(10)
            sock.sendall(startup)
            answer = b""
            try:
                while chunk := sock.recv(65536):
                    answer += chunk
            except (ConnectionResetError, ssl.SSLError, TimeoutError):
                pass
        self.assertEqual(answer[:1], b"E", answer)
        self.assertIn(b"C08P01", answer)
        self.assertIn(b'ALPN protocol "postgresql"', answer)


class DriverTests(GatewayTestCase):
    """psycopg 3 and asyncpg: prepared statements and pipelining."""

    def test_psycopg_prepared_and_pipeline(self) -> None:
        with psycopg.connect(
            self.gateway.conninfo(password=self.gateway.token())
        ) as conn:
            conn.execute("create table if not exists e2e_pipe (k int, v text)")
            conn.execute("truncate e2e_pipe")
            for i in range(10):
                # prepare=True makes a named server-side prepared statement.
                conn.execute(
                    "insert into e2e_pipe values (%s, %s)", (i, f"v{i}"), prepare=True
                )
            with conn.pipeline():
                cursors = [
                    conn.execute("select v from e2e_pipe where k = %s", (i,))
                    for i in range(10)
                ]
            self.assertEqual(
                [c.fetchone()[0] for c in cursors], [f"v{i}" for i in range(10)]
            )
            conn.commit()
        self.assertEqual(self.direct("select count(*) from e2e_pipe"), "10")

    def test_large_message(self) -> None:
        """
        A 30 MiB value goes up in one Bind and comes back in one DataRow;
        the recording (which splits records at 16 MiB) still verifies.
        """
        start = time.time()
        value = "".join(chr(ord("a") + i % 26) for i in range(64)) * (
            30 * 1024 * 1024 // 64
        )
        with psycopg.connect(
            self.gateway.conninfo(password=self.gateway.token())
        ) as conn:
            (length, md5) = conn.execute(
                "select length(%s::text), md5(%s::text)", (value, value)
            ).fetchone()
            self.assertEqual(length, len(value))
            (back,) = conn.execute("select repeat(%s, 1)", (value,)).fetchone()
            self.assertEqual(back, value)
        self.assertEqual(md5, hashlib.md5(value.encode()).hexdigest())
        row = self.latest_session(start)
        report = verify_session(row.directory, self.gateway.anchors())
        self.assertEqual((report.findings, report.exit_code), ((), 0))
        self.assertGreater(row.bytes_from_client, 60 * 1024 * 1024)

    def test_asyncpg(self) -> None:
        import asyncpg

        async def run() -> list:
            ctx = ssl.create_default_context(cafile=self.gateway.ca_cert)
            conn = await asyncpg.connect(
                host="localhost",
                port=self.gateway.port,
                user="alice",
                password=self.gateway.token(),
                database="app",
                ssl=ctx,
            )
            try:
                stmt = await conn.prepare("select $1::int * 2 as doubled")
                values = [await stmt.fetchval(i) for i in range(5)]
                await conn.executemany("select $1::text", [("a",), ("b",)])
                return values
            finally:
                await conn.close()

        self.assertEqual(asyncio.run(run()), [0, 2, 4, 6, 8])


class PgbenchTests(GatewayTestCase):
    """pgbench through the gateway keeps the TPC-B invariants."""

    def pgbench(self, *args: str) -> str:
        env = {**os.environ, "PGPASSWORD": self.gateway.token(lifetime=3600)}
        env.update(
            PGHOST="localhost",
            PGPORT=str(self.gateway.port),
            PGSSLMODE="verify-full",
            PGSSLROOTCERT=self.gateway.ca_cert,
            PGUSER="alice",
        )
        self.cluster.create_database("bench_gw", "gw_scram")
        result = subprocess.run(
            [self.cluster.bin("pgbench"), *args, "bench_gw"],
            capture_output=True,
            text=True,
            env=env,
            timeout=300,
        )
        self.assertEqual(
            result.returncode, 0, result.stderr + self.gateway.log()[-3000:]
        )
        return result.stdout + result.stderr

    def test_pgbench(self) -> None:
        self.gateway_target("bench_gw")
        self.pgbench("-i", "-s", "1", "-q")
        count = self.cluster.psql(
            "select count(*) from pgbench_accounts", dbname="bench_gw"
        ).strip()
        self.assertEqual(count, "100000")
        for mode in ("simple", "extended", "prepared"):
            # -n: keep pgbench_history across runs (no vacuum/truncate).
            out = self.pgbench("-n", "-M", mode, "-c", "4", "-j", "2", "-t", "50")
            self.assertIn("number of transactions actually processed: 200/200", out)
            self.assertIn("number of failed transactions: 0", out)
        sums = (
            self.cluster.psql(
                "select (select sum(abalance) from pgbench_accounts),"
                " (select sum(tbalance) from pgbench_tellers),"
                " (select sum(bbalance) from pgbench_branches),"
                " (select sum(delta) from pgbench_history),"
                " (select count(*) from pgbench_history)",
                dbname="bench_gw",
            )
            .strip()
            .split("|")
        )
        self.assertEqual(len(set(sums[:4])), 1, sums)
        self.assertEqual(sums[4], "600")

    def gateway_target(self, name: str) -> None:
        self.assertIn(name, [t["name"] for t in self.gateway.extra_targets])

    def make_gateway(self, base: str) -> Gateway:
        self.cluster.create_database("bench_gw", "gw_scram")
        return Gateway(
            base,
            self.cluster,
            extra_targets=[
                {
                    "name": "bench_gw",
                    "protocol": "postgres",
                    "options": {
                        "host": "127.0.0.1",
                        "port": self.cluster.port,
                        "database": "bench_gw",
                        "user": "gw_scram",
                        "password_file": os.path.join(base, "gw_scram.pw"),
                        "tls": {
                            "mode": "verify-full",
                            "ca_file": str(self.cluster.ca_cert_path),
                        },
                        "allow_groups": ["dba"],
                    },
                }
            ],
        )


class RawClient:
    """A hand-driven client socket, for input no real client would send."""

    def __init__(self, port: int, tls_ca: str | None = None):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        if tls_ca is not None:
            self.sock.sendall(codec.SSLRequest().encode())
            assert self.sock.recv(1) == b"S"
            ctx = ssl.create_default_context(cafile=tls_ca)
            self.sock = ctx.wrap_socket(self.sock, server_hostname="localhost")

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def read_all(self) -> bytes:
        chunks = []
        try:
            while chunk := self.sock.recv(65536):
                chunks.append(chunk)
        except (ConnectionResetError, ssl.SSLError, TimeoutError):
            pass
        return b"".join(chunks)

    def login(self, token: str, target: str = "app") -> bytes:
        """Startup and password; returns what the gateway sent up to ReadyForQuery."""
        self.send(codec.StartupMessage({"user": "alice", "database": target}).encode())
        self.expect(b"R")
        self.send(codec.PasswordMessage(token).encode())
        got = b""
        while not got.endswith(codec.ReadyForQuery("I").encode()):
            chunk = self.sock.recv(65536)
            if not chunk:
                raise AssertionError(f"closed during login: {got!r}")
            got += chunk
        return got

    def expect(self, kind: bytes) -> bytes:
        header = self.sock.recv(5)
        assert header[:1] == kind, header
        (length,) = struct.unpack("!I", header[1:])
        return self.sock.recv(length - 4)

    def close(self) -> None:
        self.sock.close()


def error_of(data: bytes) -> codec.ErrorResponse:
    """The first ErrorResponse in C{data}."""
    reader = codec.FrameReader.backend()
    for kind, body in reader.feed_messages(data):
        if kind == codec.BackendType.ERROR_RESPONSE:
            return codec.ErrorResponse.decode(body)
    raise AssertionError(f"no ErrorResponse in {data!r}")


class BadInputTests(GatewayTestCase):
    """
    Bad input gets a protocol-correct error, the gateway keeps serving, and
    the recording of the session closes with the reason.
    """

    def raw(self, tls: bool = True) -> RawClient:
        client = RawClient(self.gateway.port, self.gateway.ca_cert if tls else None)
        self.addCleanup(client.close)
        return client

    def assert_refused(
        self, start: float, data: bytes, sqlstate: str, reason: str
    ) -> None:
        error = error_of(data)
        self.assertEqual(error.sqlstate, sqlstate, error)
        row = self.latest_session(start)
        self.assertIn(reason, self.close_reason(row))
        self.assertIn(reason, row.close_reason or "")
        self.assert_still_serving()

    def assert_refused_unrecorded(
        self, mark: tuple, data: bytes, sqlstate: str, reason: str
    ) -> None:
        """Refused before authentication: an event, not a recording."""
        error = error_of(data)
        self.assertEqual(error.sqlstate, sqlstate, error)
        self.assert_login_event(mark, reason)
        self.assert_still_serving()

    def test_garbage_before_startup(self) -> None:
        mark = self.log_mark()
        client = self.raw(tls=False)
        client.send(b"\x00\x00\x00\x04GET / HTTP/1.1\r\n\r\n")
        self.assert_refused_unrecorded(
            mark, client.read_all(), "08P01", "protocol violation"
        )

    def test_bytes_pipelined_after_ssl_request(self) -> None:
        """
        Bytes sent in clear right after an SSLRequest, before the answer,
        are refused rather than read as if they came over TLS
        (CVE-2021-23214).
        """
        mark = self.log_mark()
        client = self.raw(tls=False)
        startup = codec.StartupMessage({"user": "alice", "database": "app"}).encode()
        client.send(codec.SSLRequest().encode() + startup)
        self.assert_refused_unrecorded(
            mark, client.read_all(), "08P01", "protocol violation"
        )

    def test_gssenc_refused_then_tls(self) -> None:
        """GSSENCRequest is answered N; the client goes on with TLS."""
        sock = socket.create_connection(("127.0.0.1", self.gateway.port), timeout=10)
        self.addCleanup(sock.close)
        sock.sendall(codec.GSSENCRequest().encode())
        self.assertEqual(sock.recv(1), b"N")
        sock.sendall(codec.SSLRequest().encode())
        self.assertEqual(sock.recv(1), b"S")
        ctx = ssl.create_default_context(cafile=self.gateway.ca_cert)
        client = RawClient.__new__(RawClient)
        client.sock = ctx.wrap_socket(sock, server_hostname="localhost")
        client.login(self.gateway.token())
        client.send(codec.Query("select 'via-gss-fallback'").encode())
        self.assertIn(b"via-gss-fallback", self.read_until(client, b"SELECT 1"))

    def test_startup_packet_too_large(self) -> None:
        """
        Before authentication an oversized packet is a protocol violation
        (08P01, as PostgreSQL has it), refused before it is buffered.
        """
        mark = self.log_mark()
        client = self.raw(tls=False)
        client.send(struct.pack("!II", 1_000_000, 196608) + b"user\0x\0")
        self.assert_refused_unrecorded(
            mark, client.read_all(), "08P01", "startup packet too long"
        )

    def test_negative_and_huge_length(self) -> None:
        for length, sqlstate in ((-5, "08P01"), (0x7FFFFFF0, "54000")):
            start = time.time()
            client = self.raw()
            client.login(self.gateway.token())
            client.send(b"Q" + struct.pack("!i", length) + b"select 1\0")
            self.assert_refused(
                start, client.read_all(), sqlstate, "protocol violation"
            )

    def test_truncated_message_then_close(self) -> None:
        start = time.time()
        client = self.raw()
        client.login(self.gateway.token())
        client.send(b"Q" + struct.pack("!I", 100) + b"select")
        client.sock.shutdown(socket.SHUT_RDWR)
        client.close()
        row = self.latest_session(start)
        self.assertEqual(self.close_reason(row), "client disconnected")
        self.assert_still_serving()

    def read_until(self, client: RawClient, marker: bytes) -> bytes:
        got = b""
        while marker not in got:
            chunk = client.sock.recv(65536)
            if not chunk:
                break
            got += chunk
        return got

    def test_query_pipelined_with_password(self) -> None:
        """
        A query sent in the same packet as the password is recorded and
        indexed before it reaches the target; the token is not recorded.
        """
        start = time.time()
        token = self.gateway.token()
        client = self.raw()
        client.send(codec.StartupMessage({"user": "alice", "database": "app"}).encode())
        client.expect(b"R")
        client.send(
            codec.PasswordMessage(token).encode()
            + codec.Query("select 'piggyback' as x").encode()
        )
        self.assertIn(b"piggyback", self.read_until(client, b"SELECT 1"))
        client.send(codec.Terminate().encode())
        row = self.latest_session(start)
        blob = b"".join(r.payload for r in read_records(row.directory))
        self.assertIn(b"select 'piggyback' as x", blob)
        self.assertNotIn(token.encode(), blob)
        index = self.gateway.path("recordings", "index.sqlite3")
        texts = [c.text for c in commands_for(index, row.id)]
        self.assertIn("select 'piggyback' as x", texts)

    def test_password_pipelined_with_startup(self) -> None:
        """A password sent with the startup packet is still recorded redacted."""
        start = time.time()
        token = self.gateway.token()
        client = self.raw()
        client.send(
            codec.StartupMessage({"user": "alice", "database": "app"}).encode()
            + codec.PasswordMessage(token).encode()
        )
        self.read_until(client, codec.ReadyForQuery("I").encode())
        client.send(codec.Terminate().encode())
        row = self.latest_session(start)
        blob = b"".join(r.payload for r in read_records(row.directory))
        self.assertNotIn(token.encode(), blob)
        self.assertNotIn(token.split(".")[1][:20].encode(), blob)
        self.assertIn(b"[REDACTED]", blob)

    def test_expired_token(self) -> None:
        """A refused token is an event (log line), not a recording."""
        mark = self.log_mark()
        result = self.gateway.psql("select 1", token=self.gateway.token(lifetime=-600))
        self.assertIn("authentication failed", result.stderr)
        log = self.assert_login_event(mark, "authentication failed")
        self.assertIn("expired", log)
        self.assert_still_serving()

    def test_invalid_token(self) -> None:
        mark = self.log_mark()
        result = self.gateway.psql("select 1", token="not-a-token")
        self.assertIn("authentication failed", result.stderr)
        self.assert_login_event(mark, "authentication failed")
        self.assert_still_serving()

    def test_unknown_database(self) -> None:
        start = time.time()
        result = self.gateway.psql("select 1", target="no_such_target")
        self.assertIn('no target named "no_such_target"', result.stderr)
        self.assertIn("unknown target", self.close_reason(self.latest_session(start)))
        self.assert_still_serving()


class UpstreamFailureTests(GatewayTestCase):
    """Targets that are down, refuse the gateway, or die mid-query."""

    def make_gateway(self, base: str) -> Gateway:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            dead_port = s.getsockname()[1]
        wrong = os.path.join(base, "wrong.pw")
        with open(wrong, "w") as f:
            f.write("not-the-password\n")
        common = {
            "tls": {"mode": "disable"},
            "allow_groups": ["dba"],
            "database": "app",
        }
        return Gateway(
            base,
            self.cluster,
            extra_targets=[
                {
                    "name": "down",
                    "protocol": "postgres",
                    "options": {
                        "host": "127.0.0.1",
                        "port": dead_port,
                        "user": "gw_scram",
                        **common,
                    },
                },
                {
                    "name": "wrong_password",
                    "protocol": "postgres",
                    "options": {
                        "host": "127.0.0.1",
                        "port": self.cluster.port,
                        "user": "gw_scram",
                        "password_file": wrong,
                        **common,
                    },
                },
            ],
        )

    def test_upstream_down(self) -> None:
        start = time.time()
        result = self.gateway.psql("select 1", target="down")
        self.assertIn('could not open a session on target "down"', result.stderr)
        self.assertIn("cannot connect", self.close_reason(self.latest_session(start)))
        self.assert_still_serving()

    def test_upstream_refuses_credentials(self) -> None:
        start = time.time()
        result = self.gateway.psql("select 1", target="wrong_password")
        self.assertIn(
            'could not open a session on target "wrong_password"', result.stderr
        )
        self.assertNotIn("not-the-password", result.stderr)
        self.assertIn("28P01", self.close_reason(self.latest_session(start)))
        self.assert_still_serving()

    def test_upstream_dies_mid_query(self) -> None:
        start = time.time()
        conn = psycopg.connect(self.gateway.conninfo(password=self.gateway.token()))
        self.addCleanup(conn.close)
        (backend,) = conn.execute("select pg_backend_pid()").fetchone()
        threading.Timer(1.0, self.cluster.terminate_backend, (backend,)).start()
        with self.assertRaises(psycopg.OperationalError) as caught:
            conn.execute("select pg_sleep(30)")
        self.assertRegex(
            str(caught.exception), re.compile("terminating connection|lost", re.I)
        )
        row = self.latest_session(start)
        self.assertIn("upstream connection lost", self.close_reason(row))
        self.assert_still_serving()
