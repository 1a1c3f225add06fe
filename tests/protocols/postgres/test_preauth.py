"""
Pre-authentication limits through the real daemon: the login timeout, the
connection caps, the pre-auth message sizes and the encryption-request
rules, each attacked by a client without a token.

Judged on the system's state: the attacker's socket is closed by the
gateway (EOF or reset) within the timeout, the daemon's open descriptors
(/proc/PID/fd) come back down, nothing is written under the recordings
directory or into the index for the refused logins, and a well-behaved
client (psql, psycopg) is served during the attack and after it.
"""

from __future__ import annotations

import os
import socket
import ssl
import struct
import threading
import time

import psycopg

from gatehouse.protocols.postgres import codec
from gatehouse.recording.reader import read_records
from gatehouse.recording.verify import verify_session
from tests.protocols.postgres.harness import Gateway
from tests.protocols.postgres.test_e2e import GatewayTestCase, error_of

#: the test listener's limits (small, so a test reaches them quickly)
TIMEOUT = 1.0
MAX_CONNECTIONS = 12
MAX_UNAUTHENTICATED = 8
PER_ADDRESS = 4
#: how long after the timeout the gateway may take to close (its grace
#: for a client to read the FATAL, plus scheduling on a busy machine)
SLACK = 2.0


class Attacker:
    """One raw connection from a chosen loopback source address."""

    def __init__(self, port: int, source: str = "127.0.0.1"):
        self.sock = socket.socket()
        self.sock.bind((source, 0))
        self.sock.settimeout(TIMEOUT + SLACK + 5)
        self.sock.connect(("127.0.0.1", port))
        self.opened = time.monotonic()

    def tls(self, ca: str) -> None:
        """SSLRequest, then a completed TLS handshake."""
        self.sock.sendall(codec.SSLRequest().encode())
        assert self.sock.recv(1) == b"S"
        ctx = ssl.create_default_context(cafile=ca)
        self.sock = ctx.wrap_socket(self.sock, server_hostname="localhost")

    def read_to_close(self) -> tuple[bytes, float]:
        """What the gateway sent until it closed, and when (from connect)."""
        chunks = []
        try:
            while chunk := self.sock.recv(65536):
                chunks.append(chunk)
        except (ConnectionResetError, ssl.SSLError):
            pass
        except TimeoutError:
            raise AssertionError("the gateway did not close the connection")
        return b"".join(chunks), time.monotonic() - self.opened

    def close(self) -> None:
        self.sock.close()


class PreauthTests(GatewayTestCase):
    """A listener with a 1 s login timeout and small caps, under attack."""

    def make_gateway(self, base: str) -> Gateway:
        return Gateway(
            base,
            self.cluster,
            listener_options={
                "authentication_timeout": f"{TIMEOUT:g}s",
                "max_connections": MAX_CONNECTIONS,
                "max_unauthenticated": MAX_UNAUTHENTICATED,
                "max_unauthenticated_per_address": PER_ADDRESS,
            },
        )

    def setUp(self) -> None:
        super().setUp()
        self.mark = self.log_mark()
        # The daemon opens its session index in a thread after it listens:
        # the baseline is taken once it has (else the first test of a
        # fresh daemon counts the index's three files as a leak).
        deadline = time.monotonic() + 30
        while not any(t.endswith("index.sqlite3") for t in self.fd_targets()):
            if time.monotonic() > deadline:
                self.fail(f"the daemon never opened its index: {self.fd_targets()}")
            time.sleep(0.05)
        self.fds_before = self.fds()
        self.targets_before = self.fd_targets()

    # -- helpers -----------------------------------------------------------

    def fds(self) -> int:
        """The daemon's open file descriptors now."""
        return len(os.listdir(f"/proc/{self.gateway.process.pid}/fd"))

    def fd_targets(self) -> list[str]:
        """What the daemon's descriptors are open on (for a failure's message)."""
        base = f"/proc/{self.gateway.process.pid}/fd"
        found = []
        for fd in sorted(os.listdir(base), key=int):
            try:
                found.append(f"{fd}: {os.readlink(os.path.join(base, fd))}")
            except OSError:
                continue
        return found

    def attacker(self, source: str = "127.0.0.1") -> Attacker:
        attacker = Attacker(self.gateway.port, source)
        self.addCleanup(attacker.close)
        return attacker

    def assert_fds_back(self) -> None:
        """The daemon's descriptors come back to where the test began."""
        deadline = time.monotonic() + 10
        while self.fds() > self.fds_before + 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        self.assertLessEqual(
            self.fds(),
            self.fds_before + 2,
            f"before: {self.targets_before}\nnow: {self.fd_targets()}",
        )

    def assert_timed_out(self, attacker: Attacker, fatal: bool = True) -> None:
        """
        The gateway closed C{attacker} at the login timeout (not before,
        not much after), with FATAL 08P01 when the client could read it.
        """
        data, elapsed = attacker.read_to_close()
        self.assertGreaterEqual(elapsed, TIMEOUT - 0.05)
        self.assertLess(elapsed, TIMEOUT + SLACK)
        if fatal:
            error = error_of(data)
            self.assertEqual(
                (error.severity, error.sqlstate), ("FATAL", "08P01"), error
            )
            self.assertIn("authentication timeout", error.message)

    def assert_served(self) -> None:
        """A well-behaved client gets through now."""
        self.assertIn("still-here", self.psql_ok("select 'still-here'"))

    def assert_clean(self, reason: str, served: int = 0, count: int = 1) -> None:
        """
        After the attack: an event each, no files but those of the
        C{served} well-behaved clients, descriptors back.
        """
        self.assert_login_event(self.mark, reason, count, served)
        self.assert_fds_back()
        self.assert_served()

    # -- the login timeout ---------------------------------------------------

    def test_bare_tcp_idle(self) -> None:
        """A connection that sends nothing is closed at the timeout."""
        attacker = self.attacker()
        self.assert_served()
        self.assert_timed_out(attacker)
        self.assert_clean("authentication timeout", served=1)

    def test_tls_handshake_then_idle(self) -> None:
        """TLS done, then nothing: the FATAL comes over TLS at the timeout."""
        attacker = self.attacker()
        attacker.tls(self.gateway.ca_cert)
        self.assert_served()
        self.assert_timed_out(attacker)
        self.assert_clean("authentication timeout", served=1)

    def test_ssl_request_then_no_handshake(self) -> None:
        """
        SSLRequest answered, then no ClientHello: the TLS layer waits for
        one, the timeout does not (no FATAL can be read: it is cut off).
        """
        attacker = self.attacker()
        attacker.sock.sendall(codec.SSLRequest().encode())
        self.assertEqual(attacker.sock.recv(1), b"S")
        self.assert_served()
        self.assert_timed_out(attacker, fatal=False)
        self.assert_clean("authentication timeout", served=1)

    def test_half_sent_startup(self) -> None:
        attacker = self.attacker()
        startup = codec.StartupMessage({"user": "alice", "database": "app"}).encode()
        attacker.sock.sendall(startup[:10])
        self.assert_served()
        self.assert_timed_out(attacker)
        self.assert_clean("authentication timeout", served=1)

    def test_trickled_startup(self) -> None:
        """
        A startup packet sent a byte at a time, faster than the timeout:
        the deadline counts from accept and is not reset by the bytes.
        """
        attacker = self.attacker()
        startup = codec.StartupMessage(
            {"user": "alice", "database": "app", "application_name": "x" * 200}
        ).encode()
        stop = threading.Event()

        def trickle() -> None:
            for byte in startup:
                if stop.wait(0.1):
                    return
                try:
                    attacker.sock.sendall(bytes([byte]))
                except OSError:
                    return

        sender = threading.Thread(target=trickle)
        sender.start()
        self.addCleanup(sender.join)
        self.addCleanup(stop.set)
        self.assert_served()
        self.assert_timed_out(attacker)
        self.assert_clean("authentication timeout", served=1)

    def test_half_sent_password(self) -> None:
        attacker = self.attacker()
        attacker.tls(self.gateway.ca_cert)
        attacker.sock.sendall(
            codec.StartupMessage({"user": "alice", "database": "app"}).encode()
        )
        password = codec.PasswordMessage(self.gateway.token()).encode()
        attacker.sock.sendall(password[: len(password) // 2])
        self.assert_served()
        self.assert_timed_out(attacker)
        self.assert_clean("authentication timeout", served=1)

    # -- sizes and encryption requests -------------------------------------------

    def test_oversized_password_message(self) -> None:
        """
        A password message longer than identity.max_token_bytes allows is
        refused from its header (08P01), long before the timeout.
        """
        attacker = self.attacker()
        attacker.tls(self.gateway.ca_cert)
        attacker.sock.sendall(
            codec.StartupMessage({"user": "alice", "database": "app"}).encode()
            + b"p"
            + struct.pack("!I", 100_000_000)
            + b"x" * 1000
        )
        data, elapsed = attacker.read_to_close()
        self.assertLess(elapsed, TIMEOUT)
        error = error_of(data)
        self.assertEqual(error.sqlstate, "08P01", error)
        self.assertIn("too long", error.message)
        self.assert_clean("protocol violation")

    def test_oversized_startup_packet(self) -> None:
        attacker = self.attacker()
        attacker.sock.sendall(struct.pack("!II", 10_001, 196608) + b"user\0")
        data, elapsed = attacker.read_to_close()
        self.assertLess(elapsed, TIMEOUT)
        self.assertEqual(error_of(data).sqlstate, "08P01")
        self.assert_clean("startup packet too long")

    def test_repeated_ssl_request(self) -> None:
        """An SSLRequest inside TLS is a second one: 08P01."""
        attacker = self.attacker()
        attacker.tls(self.gateway.ca_cert)
        attacker.sock.sendall(codec.SSLRequest().encode())
        data, elapsed = attacker.read_to_close()
        self.assertLess(elapsed, TIMEOUT)
        error = error_of(data)
        self.assertEqual(error.sqlstate, "08P01", error)
        self.assertIn("repeated SSLRequest", error.message)
        self.assert_clean("protocol violation")

    def test_repeated_gssenc_request(self) -> None:
        attacker = self.attacker()
        attacker.sock.sendall(codec.GSSENCRequest().encode())
        self.assertEqual(attacker.sock.recv(1), b"N")
        attacker.sock.sendall(codec.GSSENCRequest().encode())
        data, elapsed = attacker.read_to_close()
        self.assertLess(elapsed, TIMEOUT)
        self.assertIn("repeated GSSENCRequest", error_of(data).message)
        self.assert_clean("protocol violation")

    # -- caps -----------------------------------------------------------------

    def hold(self, count: int, source: str) -> list[Attacker]:
        """
        C{count} idle pre-auth connections from C{source}, each known to
        be accepted (its GSSENCRequest answered).
        """
        held = [self.attacker(source) for _ in range(count)]
        for attacker in held:
            attacker.sock.sendall(codec.GSSENCRequest().encode())
        for attacker in held:
            self.assertEqual(attacker.sock.recv(1), b"N")
        return held

    def assert_over_cap(self, source: str, why: str) -> None:
        """A connection from C{source} is refused at once with 53300."""
        attacker = self.attacker(source)
        data, elapsed = attacker.read_to_close()
        self.assertLess(elapsed, TIMEOUT)
        error = error_of(data)
        self.assertEqual((error.severity, error.sqlstate), ("FATAL", "53300"))
        self.assertEqual(error.message, "too many connections")
        self.assertIn(why, error.detail)

    def test_per_address_cap(self) -> None:
        """
        One address holding its maximum of pre-auth connections is refused
        more; other addresses (the well-behaved client) are served.
        """
        held = self.hold(PER_ADDRESS, "127.0.0.2")
        self.assert_over_cap(
            "127.0.0.2", f"127.0.0.2 holds its maximum of {PER_ADDRESS}"
        )
        self.assert_served()
        for attacker in held:
            self.assert_timed_out(attacker)
        self.assert_clean("too many connections", served=1)

    def test_unauthenticated_cap(self) -> None:
        """
        The listener's pre-auth maximum, reached from several addresses
        holding one each (from fewer, heavier addresses a newcomer would
        take the oldest's place: see the red team's lifecycle tests):
        more are refused; a session that had logged in goes on working,
        and new clients are served once the attackers time out.
        """
        with psycopg.connect(
            self.gateway.conninfo(password=self.gateway.token())
        ) as conn:
            held = []
            for n in range(MAX_UNAUTHENTICATED):
                held += self.hold(1, f"127.0.0.{n + 2}")
            self.assert_over_cap(
                f"127.0.0.{MAX_UNAUTHENTICATED + 2}",
                f"maximum of {MAX_UNAUTHENTICATED} unauthenticated",
            )
            self.assertEqual(conn.execute("select 'during'").fetchone(), ("during",))
            for attacker in held:
                self.assert_timed_out(attacker)
            self.assertEqual(conn.execute("select 'after'").fetchone(), ("after",))
        self.assert_clean("too many connections", served=1)

    def test_total_cap(self) -> None:
        """
        max_connections counts logged-in sessions too: with the listener
        full, a new connection is refused; sessions in it keep working.
        """
        logged_in = MAX_CONNECTIONS - PER_ADDRESS
        conns = [
            psycopg.connect(self.gateway.conninfo(password=self.gateway.token()))
            for _ in range(logged_in)
        ]
        try:
            held = self.hold(PER_ADDRESS, "127.0.0.2")
            self.assert_over_cap(
                "127.0.0.3", f"maximum of {MAX_CONNECTIONS} connections"
            )
            self.assertEqual(conns[0].execute("select 1").fetchone(), (1,))
            for attacker in held:
                self.assert_timed_out(attacker)
        finally:
            for conn in conns:
                conn.close()
        self.assert_clean("too many connections", served=logged_in)

    # -- what an accepted session records ----------------------------------

    def test_accepted_session_records_preauth(self) -> None:
        """
        What a client sent before its token was verified (the startup
        packet, a query pipelined with the password) is in its recording,
        which verifies; the token is not.
        """
        start = time.time()
        token = self.gateway.token()
        attacker = self.attacker()
        attacker.tls(self.gateway.ca_cert)
        attacker.sock.sendall(
            codec.StartupMessage(
                {"user": "alice", "database": "app", "application_name": "pre-auth"}
            ).encode()
            + codec.PasswordMessage(token).encode()
            + codec.Query("select 'pipelined'").encode()
        )
        got = b""
        while b"pipelined" not in got or not got.endswith(b"Z\0\0\0\x05I"):
            chunk = attacker.sock.recv(65536)
            self.assertTrue(chunk, got)
            got += chunk
        attacker.sock.sendall(codec.Terminate().encode())
        attacker.close()
        row = self.latest_session(start)
        blob = b"".join(r.payload for r in read_records(row.directory))
        self.assertIn(b"application_name\0pre-auth\0", blob)
        self.assertIn(b"select 'pipelined'", blob)
        self.assertIn(b"[REDACTED]", blob)
        self.assertNotIn(token.encode(), blob)
        report = verify_session(row.directory, self.gateway.anchors())
        self.assertEqual(report.findings, ())
        self.assertEqual(report.exit_code, 0)
