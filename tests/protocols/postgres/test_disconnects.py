"""
End-to-end: every way a session can end closes its upstream backend.

Each case ends a session one way (a socket closed or reset without
Terminate, C{kill -9} of psql, a FATAL from the gateway, a hang-up while a
statement is held for approval, mid-COPY, mid-query, mid-result with the
client not reading, during the upstream login) against a TLS target
(C{app}) and a plain one (C{app_md5}), and is judged on PostgreSQL's own
state: the gateway's backend, found in C{pg_stat_activity} by its
application_name, must be gone within L{LIMIT} seconds, queried directly on
the cluster.  The reverse is checked too: a backend that dies ends its
client's session with a FATAL, and the recording is sealed.
"""

from __future__ import annotations

import atexit
import os
import signal
import socket
import ssl
import struct
import subprocess
import threading
import time
import uuid

import psycopg
from twisted.internet.defer import CancelledError
from twisted.internet.error import ConnectionDone
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from gatehouse._pgcluster import clean_env
from gatehouse.protocols.postgres import codec
from gatehouse.protocols.postgres.upstream import UpstreamProtocol
from tests.protocols.postgres.harness import Gateway
from tests.protocols.postgres.test_e2e import GatewayTestCase

#: seconds within which a session's upstream backend must be gone
LIMIT = 1.0

TLS_TARGET = "app"
PLAIN_TARGET = "app_md5"

_POLICY = {
    "policy": {
        "review": {"approvers": ["approvers"], "timeout": "60s"},
        "rules": [
            {
                "name": "drop-review",
                "kind": ["DropStmt"],
                "object": ["disc_*"],
                "action": "review",
            }
        ],
    }
}


class Client:
    """
    A hand-driven PostgreSQL client over TLS to the gateway: it can stop
    reading, hang up without Terminate, or reset its connection.
    """

    def __init__(
        self, gateway: Gateway, target: str, app: str, *, wait_ready: bool = True
    ):
        raw = socket.create_connection(("127.0.0.1", gateway.port), timeout=10)
        raw.sendall(codec.SSLRequest().encode())
        assert raw.recv(1) == b"S"
        ctx = ssl.create_default_context(cafile=gateway.ca_cert)
        self.sock = ctx.wrap_socket(raw, server_hostname="localhost")
        self.sock.sendall(
            codec.StartupMessage(
                {"user": "alice", "database": target, "application_name": app}
            ).encode()
        )
        self.expect(b"R")
        self.sock.sendall(codec.PasswordMessage(gateway.token()).encode())
        if wait_ready:
            self.until(b"Z")

    def _exact(self, n: int) -> bytes:
        data = b""
        while len(data) < n:
            chunk = self.sock.recv(n - len(data))
            if not chunk:
                raise EOFError(f"connection closed after {data!r}")
            data += chunk
        return data

    def message(self) -> tuple[bytes, bytes]:
        """The next message from the gateway: (type, body)."""
        header = self._exact(5)
        (length,) = struct.unpack("!I", header[1:])
        return header[:1], self._exact(length - 4)

    def expect(self, kind: bytes) -> bytes:
        got, body = self.message()
        assert got == kind, (got, body)
        return body

    def until(self, kind: bytes) -> list[tuple[bytes, bytes]]:
        """Messages up to and including the first of type C{kind}."""
        seen = []
        while True:
            message = self.message()
            seen.append(message)
            if message[0] == b"E" and kind != b"E" and b"FATAL" in message[1]:
                raise AssertionError(f"FATAL while waiting for {kind!r}: {seen}")
            if message[0] == kind:
                return seen

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def close(self) -> None:
        """Hang up without Terminate (FIN, no TLS close_notify)."""
        self.sock.close()

    def reset(self) -> None:
        """Hang up with a TCP reset (SO_LINGER 0), as a killed host would."""
        self.sock.setsockopt(
            socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
        )
        self.sock.close()

    def read_to_eof(self, timeout: float) -> tuple[bytes, float]:
        """Everything until the gateway closes, and how long that took."""
        start = time.monotonic()
        self.sock.settimeout(timeout)
        chunks = []
        try:
            while chunk := self.sock.recv(65536):
                chunks.append(chunk)
        except (ConnectionResetError, ssl.SSLError):
            pass
        return b"".join(chunks), time.monotonic() - start


class DelayLine:
    """
    A TCP relay in front of PostgreSQL that holds the server's first answer
    on each connection back for C{delay} seconds, so that a session stays in
    its upstream login that long.  It closes the server side as soon as the
    gateway closes its side, and notes when that happened.
    """

    def __init__(self, server_port: int, delay: float):
        self.server_port = server_port
        self.delay = delay
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        #: per accepted connection: [accepted, gateway closed (or None)]
        self.connections: list[list] = []
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                down, _ = self.listener.accept()
            except OSError:
                return
            up = socket.create_connection(("127.0.0.1", self.server_port))
            record = [time.monotonic(), None]
            with self._lock:
                self.connections.append(record)
            threading.Thread(
                target=self._down, args=(down, up, record), daemon=True
            ).start()
            threading.Thread(
                target=self._up, args=(down, up, record), daemon=True
            ).start()

    def _down(self, down: socket.socket, up: socket.socket, record: list) -> None:
        """Gateway to server, until the gateway closes."""
        try:
            while data := down.recv(65536):
                up.sendall(data)
        except OSError:
            pass
        record[1] = time.monotonic()
        for s in (up, down):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()

    def _up(self, down: socket.socket, up: socket.socket, record: list) -> None:
        """Server to gateway, the first bytes late."""
        first = True
        try:
            while data := up.recv(65536):
                if first:
                    first = False
                    due = record[0] + self.delay
                    while record[1] is None and time.monotonic() < due:
                        time.sleep(0.01)
                    if record[1] is not None:
                        return
                down.sendall(data)
        except OSError:
            pass

    def close(self) -> None:
        self.listener.close()


class DisconnectTests(GatewayTestCase):
    """
    Every way a session ends closes its upstream within L{LIMIT} seconds,
    on a TLS target and on a plain one.
    """

    delay_line: DelayLine | None = None

    def make_gateway(self, base: str) -> Gateway:
        base = os.path.abspath(base)
        line = DisconnectTests.delay_line = DelayLine(self.cluster.port, 1.5)
        atexit.register(line.close)

        def slow(name: str, role: str, tls: dict) -> dict:
            return {
                "name": name,
                "protocol": "postgres",
                "options": {
                    "host": "127.0.0.1",
                    "port": line.port,
                    "database": "app",
                    "user": role,
                    "password_file": os.path.join(base, f"{role}.pw"),
                    "tls": tls,
                    "allow_groups": ["dba"],
                },
            }

        verify = {"mode": "verify-full", "ca_file": str(self.cluster.ca_cert_path)}
        return Gateway(
            base,
            self.cluster,
            extra_config=_POLICY,
            extra_targets=[
                slow("slow_tls", "gw_scram", verify),
                slow("slow_plain", "gw_md5", {"mode": "disable"}),
            ],
        )

    def setUp(self) -> None:
        super().setUp()
        self.monitor = psycopg.connect(self.cluster.socket_dsn(), autocommit=True)
        self.addCleanup(self.monitor.close)

    # -- helpers -------------------------------------------------------------

    def app_name(self) -> str:
        return f"disc-{uuid.uuid4().hex[:12]}"

    def backends(self, app: str) -> list[tuple]:
        """The cluster's backends for C{app} (LIKE pattern): (pid, state)."""
        return self.monitor.execute(
            "select pid, usename, client_port, state from pg_stat_activity "
            "where application_name like %s",
            (app,),
        ).fetchall()

    def wait_backend(self, app: str, timeout: float = 10) -> tuple:
        """The one backend of C{app}, once it exists."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            rows = self.backends(app)
            if rows:
                self.assertEqual(len(rows), 1, rows)
                return rows[0]
            time.sleep(0.02)
        self.fail(f"no backend for {app}:\n{self.gateway.log()[-3000:]}")

    def assert_gone(self, app: str, since: float, limit: float = LIMIT) -> float:
        """
        No backend of C{app} is left within C{limit} seconds of C{since}
        (a monotonic time); returns how long it took.
        """
        while True:
            rows = self.backends(app)
            elapsed = time.monotonic() - since
            if not rows:
                return elapsed
            if elapsed > limit:
                self.fail(
                    f"{len(rows)} backend(s) of {app} still there {elapsed:.2f} s "
                    f"after the session ended: {rows}\n{self.gateway.log()[-3000:]}"
                )
            time.sleep(0.01)

    def session_reason(self, start: float) -> str:
        """The recorded close reason of the session that started after C{start}."""
        row = self.latest_session(start)
        self.transcript(row)  # it verifies
        return self.close_reason(row)

    def logged_in(self, target: str) -> tuple[Client, str, float]:
        start = time.time()
        app = self.app_name()
        client = Client(self.gateway, target, app)
        self.addCleanup(client.sock.close)
        self.wait_backend(app)
        return client, app, start

    # -- hang-ups without Terminate -----------------------------------------

    def check_hangup(self, target: str, reset: bool) -> None:
        client, app, start = self.logged_in(target)
        client.send(codec.Query("select 1").encode())
        client.until(b"Z")
        ended = time.monotonic()
        client.reset() if reset else client.close()
        self.assert_gone(app, ended)
        self.assertEqual(self.session_reason(start), "client disconnected")
        self.assert_still_serving()

    def test_close_tls(self) -> None:
        """The client closes its socket without Terminate (TLS target)."""
        self.check_hangup(TLS_TARGET, reset=False)

    def test_close_plain(self) -> None:
        """The client closes its socket without Terminate (plain target)."""
        self.check_hangup(PLAIN_TARGET, reset=False)

    def test_reset_tls(self) -> None:
        """The client's connection is reset (TLS target)."""
        self.check_hangup(TLS_TARGET, reset=True)

    def test_reset_plain(self) -> None:
        """The client's connection is reset (plain target)."""
        self.check_hangup(PLAIN_TARGET, reset=True)

    def check_kill_psql(self, target: str) -> None:
        app = self.app_name()
        psql = subprocess.Popen(
            [
                self.cluster.bin("psql"),
                "-X",
                "-q",
                "-A",
                "-t",
                self.gateway.conninfo(target, application_name=app),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=clean_env(PGPASSWORD=self.gateway.token()),
        )

        def stop() -> None:
            if psql.poll() is None:
                psql.kill()
            psql.communicate()

        self.addCleanup(stop)
        psql.stdin.write(b"select 'up';\n")
        psql.stdin.flush()
        self.assertEqual(psql.stdout.readline().strip(), b"up")
        self.wait_backend(app)
        ended = time.monotonic()
        os.kill(psql.pid, signal.SIGKILL)
        psql.wait()
        self.assert_gone(app, ended)

    def test_kill_psql_tls(self) -> None:
        """psql killed with SIGKILL (TLS target)."""
        self.check_kill_psql(TLS_TARGET)

    def test_kill_psql_plain(self) -> None:
        """psql killed with SIGKILL (plain target)."""
        self.check_kill_psql(PLAIN_TARGET)

    # -- the gateway ends the session ---------------------------------------

    def check_fatal(self, target: str) -> None:
        """
        A message the gateway refuses (a length below 4): it answers FATAL
        and closes; the client keeps its socket open and reads, and the
        gateway's TLS close reaches it.
        """
        client, app, start = self.logged_in(target)
        ended = time.monotonic()
        client.send(b"Q\x00\x00\x00\x02")
        data, took = client.read_to_eof(timeout=5)
        client.close()  # as libpq does once it has read the FATAL
        self.assertIn(b"FATAL", data)
        self.assertLess(took, LIMIT, "the gateway did not close the client")
        self.assert_gone(app, ended)
        self.assertIn("protocol violation", self.session_reason(start))
        self.assert_still_serving()

    def test_fatal_tls(self) -> None:
        """The gateway ends the session with FATAL (TLS target)."""
        self.check_fatal(TLS_TARGET)

    def test_fatal_plain(self) -> None:
        """The gateway ends the session with FATAL (plain target)."""
        self.check_fatal(PLAIN_TARGET)

    # -- hang-ups in the middle of something ---------------------------------

    def make_table(self) -> str:
        """A fresh table (v text) both targets' roles may use; dropped after."""
        table = f"disc_{uuid.uuid4().hex[:8]}"
        self.direct(
            f"create table {table} (v text); alter table {table} owner to gw_scram;"
            f"grant all on {table} to gw_md5"
        )
        self.addCleanup(self.direct, f"drop table if exists {table}")
        return table

    def check_held(self, target: str) -> None:
        """A hang-up while a statement waits for approval."""
        table = self.make_table()
        client, app, _ = self.logged_in(target)
        client.send(codec.Query(f"DROP TABLE {table}").encode())
        notice = client.expect(b"N")
        self.assertIn(b"approv", notice)
        ended = time.monotonic()
        client.reset()
        self.assert_gone(app, ended)
        self.assertEqual(
            self.direct(f"select to_regclass('public.{table}') is not null"), "t"
        )

    def test_held_tls(self) -> None:
        """Hang-up while held for approval (TLS target)."""
        self.check_held(TLS_TARGET)

    def test_held_plain(self) -> None:
        """Hang-up while held for approval (plain target)."""
        self.check_held(PLAIN_TARGET)

    def check_copy(self, target: str) -> None:
        """A hang-up in the middle of COPY FROM STDIN: nothing is stored."""
        table = self.make_table()
        client, app, _ = self.logged_in(target)
        client.send(codec.Query(f"COPY {table} FROM STDIN").encode())
        client.expect(b"G")
        client.send(codec.CopyData(b"half a copy\n").encode())
        self.assertEqual(self.backends(app)[0][3], "active")
        ended = time.monotonic()
        client.reset()
        self.assert_gone(app, ended)
        self.assertEqual(self.direct(f"select count(*) from {table}"), "0")

    def test_copy_tls(self) -> None:
        """Hang-up mid-COPY (TLS target)."""
        self.check_copy(TLS_TARGET)

    def test_copy_plain(self) -> None:
        """Hang-up mid-COPY (plain target)."""
        self.check_copy(PLAIN_TARGET)

    def check_paused(self, target: str) -> None:
        """
        The client asks for a large result and stops reading: the gateway's
        buffers fill and it stops reading the target, which blocks sending;
        then the client is reset.
        """
        client, app, _ = self.logged_in(target)
        client.send(
            codec.Query(
                "select repeat('x', 1000), generate_series(1, 10000000)"
            ).encode()
        )
        time.sleep(0.5)  # long enough for every buffer on the way to fill
        self.assertEqual(self.backends(app)[0][3], "active")
        ended = time.monotonic()
        client.reset()
        self.assert_gone(app, ended)

    def test_paused_tls(self) -> None:
        """Hang-up mid-result with the client not reading (TLS target)."""
        self.check_paused(TLS_TARGET)

    def test_paused_plain(self) -> None:
        """Hang-up mid-result with the client not reading (plain target)."""
        self.check_paused(PLAIN_TARGET)

    def check_running(self, target: str) -> None:
        """
        A hang-up while a statement runs (PostgreSQL notices a closed
        socket only when it next reads or writes: the gateway cancels it).
        """
        client, app, _ = self.logged_in(target)
        client.send(codec.Query("select pg_sleep(60)").encode())
        deadline = time.monotonic() + 5
        while self.backends(app)[0][3] != "active" and time.monotonic() < deadline:
            time.sleep(0.01)
        ended = time.monotonic()
        client.reset()
        self.assert_gone(app, ended)

    def test_running_tls(self) -> None:
        """Hang-up mid-query (TLS target)."""
        self.check_running(TLS_TARGET)

    def test_running_plain(self) -> None:
        """Hang-up mid-query (plain target)."""
        self.check_running(PLAIN_TARGET)

    def check_connecting(self, target: str) -> None:
        """
        A hang-up while the gateway logs in to the target (held 1.5 s by a
        relay): the gateway closes its upstream connection within L{LIMIT},
        and no backend is left once the login would have finished.
        """
        line = self.delay_line
        before = len(line.connections)
        start = time.time()
        app = self.app_name()
        client = Client(self.gateway, target, app, wait_ready=False)
        self.addCleanup(client.sock.close)
        deadline = time.monotonic() + 5
        while len(line.connections) == before and time.monotonic() < deadline:
            time.sleep(0.01)
        self.assertEqual(len(line.connections), before + 1, "no upstream connection")
        record = line.connections[before]
        ended = time.monotonic()
        client.reset()
        while record[1] is None and time.monotonic() < ended + LIMIT:
            time.sleep(0.01)
        self.assertIsNotNone(
            record[1],
            f"the upstream connection was still open {LIMIT} s after the client "
            f"left\n{self.gateway.log()[-3000:]}",
        )
        # Past the moment the login would have finished: nothing came of it.
        time.sleep(max(0.0, record[0] + line.delay + 0.3 - time.monotonic()))
        self.assertEqual(self.backends(app), [])
        self.assertEqual(self.session_reason(start), "client disconnected")

    def test_connecting_tls(self) -> None:
        """Hang-up during the upstream login (TLS target)."""
        self.check_connecting("slow_tls")

    def test_connecting_plain(self) -> None:
        """Hang-up during the upstream login (plain target)."""
        self.check_connecting("slow_plain")

    # -- the reverse: the target ends the session ----------------------------

    def check_upstream_dies(self, target: str) -> None:
        """
        The backend is terminated: the client gets a FATAL and is closed
        within L{LIMIT}; the session is sealed saying why.
        """
        client, app, start = self.logged_in(target)
        (pid, *_) = self.wait_backend(app)
        ended = time.monotonic()
        self.monitor.execute("select pg_terminate_backend(%s)", (pid,))
        data, _ = client.read_to_eof(timeout=5)
        took = time.monotonic() - ended
        client.close()  # as libpq does once it has read the FATAL
        self.assertIn(b"FATAL", data)
        self.assertIn(b"was lost", data)
        self.assertLess(took, LIMIT, "the gateway did not close the client")
        self.assertIn("upstream connection lost", self.session_reason(start))
        self.assert_still_serving()

    def test_upstream_dies_tls(self) -> None:
        """The target's backend dies (TLS target)."""
        self.check_upstream_dies(TLS_TARGET)

    def test_upstream_dies_plain(self) -> None:
        """The target's backend dies (plain target)."""
        self.check_upstream_dies(PLAIN_TARGET)

    # -- many at once -----------------------------------------------------------

    def test_burst(self) -> None:
        """
        60 clients in a row, half on each target, reset right after login:
        no backend is left, and a well-behaved client is still served.
        """
        prefix = f"burst-{uuid.uuid4().hex[:8]}-"
        for i in range(60):
            target = TLS_TARGET if i % 2 else PLAIN_TARGET
            client = Client(self.gateway, target, f"{prefix}{i}")
            client.reset()
        ended = time.monotonic()
        self.assert_gone(prefix + "%", ended)
        self.assert_still_serving()


class _Transport:
    """Records what L{UpstreamProtocol.terminate} asks of a transport, in order."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.written = b""

    def write(self, data: bytes) -> None:
        self.calls.append("write")
        self.written += data

    def __getattr__(self, name: str):
        if name not in (
            "loseConnection",
            "abortConnection",
            "unregisterProducer",
            "resumeProducing",
        ):
            raise AttributeError(name)
        return lambda: self.calls.append(name)


class TerminateTests(SynchronousTestCase):
    """
    L{UpstreamProtocol.terminate}: what it sends and in which order it
    closes (Twisted's TLS transport sends close_notify only once its
    producer is unregistered, and flushes its write buffer only in
    loseConnection), and the cut-off.
    """

    def new_protocol(self) -> tuple[UpstreamProtocol, _Transport, Clock]:
        """A protocol in its startup."""
        # the target's options are used only during startup
        protocol = UpstreamProtocol(None, codec.StartupMessage({"user": "u"}), None)
        protocol.transport = transport = _Transport()
        return protocol, transport, Clock()

    def ready_protocol(self) -> tuple[UpstreamProtocol, _Transport, Clock]:
        """A protocol past startup: relaying."""
        protocol, transport, clock = self.new_protocol()
        protocol._done = True
        protocol.ready = None
        protocol.on_data = protocol.on_lost = self.fail
        return protocol, transport, clock

    def test_terminate_then_close(self) -> None:
        protocol, transport, clock = self.ready_protocol()
        protocol.terminate(clock, 0.5)
        self.assertEqual(transport.written, codec.Terminate().encode())
        self.assertEqual(
            transport.calls,
            ["write", "loseConnection", "unregisterProducer", "resumeProducing"],
        )
        protocol.dataReceived(b"late bytes")  # not relayed any more
        protocol.terminate(clock, 0.5)  # once only
        self.assertEqual(len(transport.calls), 4)

    def test_cut_off(self) -> None:
        """A target that has not closed after the grace period is cut off."""
        protocol, transport, clock = self.ready_protocol()
        protocol.terminate(clock, 0.5)
        clock.advance(0.49)
        self.assertNotIn("abortConnection", transport.calls)
        clock.advance(0.01)
        self.assertEqual(transport.calls[-1], "abortConnection")

    def test_closed_in_time(self) -> None:
        protocol, transport, clock = self.ready_protocol()
        protocol.terminate(clock, 0.5)
        protocol.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(clock.getDelayedCalls(), [])
        self.assertNotIn("abortConnection", transport.calls)

    def test_copy_in(self) -> None:
        """A target waiting for COPY data gets CopyFail first."""
        protocol, transport, clock = self.ready_protocol()
        protocol.terminate(clock, 0.5, copy_in=True)
        frames = codec.FrameReader.frontend().feed_messages(transport.written)
        self.assertEqual(
            [kind for kind, _ in frames],
            [codec.FrontendType.COPY_FAIL, codec.FrontendType.TERMINATE],
        )

    def test_client_said_it(self) -> None:
        """After the client's own Terminate, nothing more is sent."""
        protocol, transport, clock = self.ready_protocol()
        protocol.terminate(clock, 0.5, said=True)
        self.assertEqual(transport.written, b"")
        self.assertEqual(transport.calls[0], "loseConnection")

    def test_cancel_startup(self) -> None:
        """Cancelling L{UpstreamProtocol.ready} aborts the connection."""
        protocol, transport, _ = self.new_protocol()
        ready = protocol.ready
        ready.cancel()
        self.assertEqual(transport.calls, ["abortConnection"])
        self.failureResultOf(ready, CancelledError)
        protocol.connectionLost(Failure(ConnectionDone()))  # no second errback
