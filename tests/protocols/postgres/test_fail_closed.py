"""
The server's fail-closed branches, each driven for real: a gateway built
in this process from a configuration (L{gatehouse.service.makeService}, so
the listener is the L{PostgresServerFactory} the adapter builds), clients
speaking real protocol bytes, and behind it the shared PostgreSQL cluster or,
where the branch is about a misbehaving target, a hostile target written
with the codec.

A failure is injected only through public seams: a module-level function
patched with C{self.patch} (the recorder's executor, the catalog's
connection, the masker's detector scan), never a private attribute of the
server.  Each test judges on the target (its log of statements, a table),
on what the client received, on the recording and its index row, and on a
second client being served afterwards.
"""

from __future__ import annotations

import base64
import errno
import gc
import json
import os
import socket
import struct

import scramp
from twisted.internet import reactor, tcp
from twisted.internet.defer import fail, inlineCallbacks
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import deferLater
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import TestCase

import gatehouse.service
from gatehouse.config import load_config
from gatehouse.protocols.postgres import catalog as catalog_module
from gatehouse.protocols.postgres import codec, commands
from gatehouse.protocols.postgres.upstream import UpstreamError
from gatehouse.recording.format import Direction, RecordType
from gatehouse.recording.index import IndexUnavailable, query_sessions
from gatehouse.recording.interfaces import RecordingFailed
from gatehouse.recording.reader import read_records
from gatehouse.recording.verify import verify_session
from gatehouse.service import makeService
from tests.fixtures.postgres import shared_cluster
from tests.protocols.postgres.harness import Gateway

#: a Luhn-valid card number: masked by the C{card} detector
CARD = "4111111111111111"
CARD_BYTES = CARD.encode()

T = codec.BackendType


# -- a client on a plain socket (run in a thread) ------------------------------


class Client:
    """
    A PostgreSQL client that sends exactly the bytes it is given and keeps
    every message it receives; blocking, so tests run it in a thread.
    """

    def __init__(self, port: int):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.reader = codec.FrameReader.backend()
        self.received = bytearray()
        self.closed = False
        self._pending: list[tuple[int, bytes]] = []

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def messages(self, until: int | None = None) -> list[tuple[int, bytes]]:
        """Messages up to one of type C{until} (or the end of the connection)."""
        got: list[tuple[int, bytes]] = []
        while True:
            while self._pending:
                message = self._pending.pop(0)
                got.append(message)
                if message[0] == until:
                    return got
            if self.closed:
                return got
            try:
                chunk = self.sock.recv(65536)
            except (ConnectionResetError, TimeoutError):
                chunk = b""
            if not chunk:
                self.closed = True
                continue
            self.received += chunk
            self._pending = list(self.reader.feed_messages(chunk))

    def login(self, token: str, target: str = "app", after: bytes = b"") -> list:
        """Startup and password (and C{after} in the same packet)."""
        self._log_in(token, target, after)
        return self.messages(until=T.READY_FOR_QUERY)

    def refused(self, token: str, target: str, sql: bytes) -> list:
        """
        Log in with the Query C{sql} pipelined after the password (it must
        never run): every message up to the end of the connection.
        """
        self._log_in(token, target, codec.encode_message(b"Q", sql + b"\0"))
        return self.messages()

    def _log_in(self, token: str, target: str, after: bytes) -> None:
        startup = codec.StartupMessage({"user": "alice", "database": target})
        self.send(startup.encode())
        [(kind, _)] = self.messages(until=T.AUTHENTICATION)
        assert kind == T.AUTHENTICATION, kind
        self.send(codec.PasswordMessage(token).encode() + after)

    def query(self, sql: str | bytes) -> list[tuple[int, bytes]]:
        """Send one Query; its answer up to ReadyForQuery (or the close)."""
        if isinstance(sql, str):
            sql = sql.encode()
        self.send(codec.encode_message(b"Q", sql + b"\0"))
        return self.messages(until=T.READY_FOR_QUERY)

    def close(self) -> None:
        self.sock.close()


def errors(messages: list[tuple[int, bytes]]) -> list[codec.ErrorResponse]:
    """The ErrorResponses among C{messages}."""
    return [codec.ErrorResponse.decode(b) for t, b in messages if t == T.ERROR_RESPONSE]


def rows(messages: list[tuple[int, bytes]]) -> list[list[bytes | None]]:
    """The DataRow values among C{messages}."""
    return [codec.data_row_values(b) for t, b in messages if t == T.DATA_ROW]


# -- a hostile target ------------------------------------------------------------


class FakeTarget(Protocol):
    """
    A PostgreSQL server written with the codec whose answers a test
    scripts (L{HostileTarget}); it keeps every byte it receives.
    """

    def __init__(self, script: HostileTarget):
        self.script = script
        self.parser = codec.StartupParser(detect_tls=False)
        self.reader: codec.FrameReader | None = None

    def connectionMade(self) -> None:
        self.script.connections.append(self)
        self.received = bytearray()

    def dataReceived(self, data: bytes) -> None:
        self.received += data
        if self.reader is not None:
            for kind, body in self.reader.feed_messages(data):
                self.script.message(self, kind, body)
            return
        self.parser.receive_data(data)
        while (event := self.parser.next_event()) is not None:
            if isinstance(event, codec.SSLRequest):
                self.script.ssl_request(self)
                return
            if isinstance(event, codec.StartupMessage):
                self.reader = codec.FrameReader.frontend()
                self.script.startup(self, event)
                rest = self.parser.take_remaining()
                if rest:
                    self.dataReceived(b"")
                    for kind, body in self.reader.feed_messages(rest):
                        self.script.message(self, kind, body)
                return

    def write(self, *messages: codec.Message | bytes) -> None:
        self.transport.write(
            b"".join(m if isinstance(m, bytes) else m.encode() for m in messages)
        )

    def ready(self, user: str, encoding: str = "UTF8") -> None:
        """Everything a server sends after authentication."""
        self.write(
            codec.AuthenticationOk(),
            codec.ParameterStatus("server_version", "15.0"),
            codec.ParameterStatus("client_encoding", encoding),
            codec.ParameterStatus("standard_conforming_strings", "on"),
            codec.ParameterStatus("session_authorization", user),
            codec.BackendKeyData(4242, b"\0\0\0\1"),
            codec.ReadyForQuery("I"),
        )


class HostileTarget:
    """
    What a hostile target does; the default is a trusting server that
    answers every Query with a syntax error.  Subclasses override.
    """

    user = "gw_trust"

    def __init__(self) -> None:
        self.connections: list[FakeTarget] = []
        self.queries: list[bytes] = []
        self.port = None

    def listen(self, case: TestCase) -> int:
        port = reactor.listenTCP(
            0, Factory.forProtocol(lambda: FakeTarget(self)), interface="127.0.0.1"
        )
        case.addCleanup(port.stopListening)
        case.addCleanup(
            lambda: [c.transport.abortConnection() for c in self.connections]
        )
        self.port = port.getHost().port
        return self.port

    def ssl_request(self, conn: FakeTarget) -> None:
        conn.write(b"N")

    def startup(self, conn: FakeTarget, message: codec.StartupMessage) -> None:
        conn.ready(self.user)

    def message(self, conn: FakeTarget, kind: int, body: bytes) -> None:
        if kind == ord("Q"):
            self.queries.append(body.rstrip(b"\0"))
            self.query(conn, body.rstrip(b"\0").decode("utf-8", "replace"))
        elif kind == ord("X"):
            conn.transport.loseConnection()

    def query(self, conn: FakeTarget, sql: str) -> None:
        conn.write(
            codec.ErrorResponse.build("ERROR", "42601", "syntax error"),
            codec.ReadyForQuery("I"),
        )


# -- the gateway ---------------------------------------------------------------


MASK_CARDS = {"name": "cards", "detect": ["card"]}
MASK_SSN = {"name": "ssn", "detect": ["card"], "columns": ["ssn"]}


class InProcessGatewayTestCase(TestCase):
    """
    A gateway per test, in this process, in front of the shared cluster
    (targets as in L{Gateway}) and the targets a test adds.
    """

    masking: list[dict] = []

    def setUp(self) -> None:
        self.cluster = shared_cluster()

    @inlineCallbacks
    def start_gateway(self, extra_targets=(), masking=None):
        base = os.path.abspath(self.mktemp())
        extra = {"masking": masking if masking is not None else self.masking}
        if not extra["masking"]:
            del extra["masking"]
        self.files = Gateway(
            base,
            self.cluster,
            allow_cleartext=True,
            extra_targets=list(extra_targets),
            extra_config=extra,
            listener_options={"authentication_timeout": "5s"},
        )
        self.service = makeService(load_config(self.files.config_path), reactor)
        yield self.service.startService()
        self.addCleanup(self.stop_gateway)
        self.port = self.files.port

    @inlineCallbacks
    def stop_gateway(self):
        """Stop the gateway, and wait for its connections to end."""
        if self.service.running:
            yield self.service.stopService()
        # Sessions that ended with a FATAL close their client (and target)
        # connections within a second.
        for _ in range(60):
            clients = [
                s
                for s in reactor.getReaders() + reactor.getWriters()
                if isinstance(s, tcp.Client | tcp.Server)
            ]
            # (trial's own timeout of the test is one of the calls)
            calls = [c for c in reactor.getDelayedCalls() if "onTimeout" not in repr(c)]
            if not clients and not calls:
                return
            yield deferLater(reactor, 0.05, lambda: None)

    def target(self, name: str, port: int, **options: object) -> dict:
        """A target on a hostile server at C{port}."""
        base = {
            "host": "127.0.0.1",
            "port": port,
            "database": "app",
            "user": "gw_trust",
            "tls": {"mode": "disable"},
            "allow_groups": ["dba"],
        }
        base.update(options)
        return {"name": name, "protocol": "postgres", "options": base}

    def client(self) -> Client:
        client = Client(self.port)
        self.addCleanup(client.close)
        return client

    def in_thread(self, fn, *args):
        return deferToThread(fn, *args)

    def direct(self, sql: str):
        """SQL run directly on the cluster (superuser), in a thread."""
        return deferToThread(lambda: self.cluster.psql(sql, dbname="app").strip())

    def create(self, sql: str, *objects: str):
        """Run C{sql} directly; drop C{objects} ("TABLE t", ...) after the test."""
        drops = " ".join(
            "DROP {} IF EXISTS {};".format(*o.split(" ", 1)) for o in objects
        )
        self.addCleanup(self.direct, drops)
        return self.direct(sql)

    @inlineCallbacks
    def assert_no_backend(self, text: str):
        """No backend on the cluster runs (or last ran) a query with C{text}."""
        for _ in range(100):
            busy = yield self.direct(
                "SELECT count(*) FROM pg_stat_activity WHERE query LIKE "
                f"'%{text}%' AND pid <> pg_backend_pid()"
            )
            if busy == "0":
                return
            yield deferLater(reactor, 0.05, lambda: None)
        self.fail(f"a backend still holds {text!r}")

    @inlineCallbacks
    def assert_still_serving(self):
        """Another client logs in and gets an answer."""
        client = self.client()

        def talk():
            client.login(self.files.token())
            return rows(client.query("SELECT 'still-here'"))

        got = yield self.in_thread(talk)
        self.assertEqual(got, [[b"still-here"]])

    @inlineCallbacks
    def session(self, subject: str = "alice", sealed: bool = True):
        """The index row of the first session, once it is closed."""
        index = self.files.path("recordings", "index.sqlite3")
        for _ in range(200):
            try:
                found = [
                    r
                    for r in query_sessions(index, limit=None)
                    if r.ended is not None and r.subject == subject
                ]
            except IndexUnavailable:  # still being created
                found = []
            if found:
                found.sort(key=lambda r: r.started)
                row = found[0]
                if not sealed:
                    return row
                # the recording itself ends with the same reason
                records = list(read_records(row.directory))
                self.assertEqual(records[-1].type, RecordType.CLOSE)
                closing = json.loads(records[-1].payload)["reason"]
                self.assertEqual(closing, row.close_reason)
                return row
            yield deferLater(reactor, 0.05, lambda: None)
        self.fail("no closed session in the index")

    def events(self, row) -> list[dict]:
        return [
            json.loads(r.payload)
            for r in read_records(row.directory)
            if r.type == RecordType.EVENT
        ]

    def to_client(self, row) -> bytes:
        """Every byte the recording says reached the client."""
        return b"".join(
            r.payload
            for r in read_records(row.directory)
            if r.type == RecordType.DATA and r.direction == Direction.GATEWAY_TO_CLIENT
        )

    def assert_verifies(self, row) -> None:
        report = verify_session(row.directory, self.files.anchors())
        self.assertEqual(report.findings, (), report)


# -- the tests ---------------------------------------------------------------


class CopyRefusalTests(InProcessGatewayTestCase):
    """Masked sessions: a COPY whose rows cannot be masked never runs."""

    masking = [MASK_CARDS]

    @inlineCallbacks
    def test_binary_copy_refused(self):
        """
        COPY ... (FORMAT binary) under masking is refused with 42501 before
        it reaches the target (a function it would call logs nothing), and
        the session goes on.
        """
        yield self.create(
            "DROP TABLE IF EXISTS fc_copy_log; CREATE TABLE fc_copy_log (n int);"
            "GRANT ALL ON fc_copy_log TO PUBLIC;"
            "CREATE OR REPLACE FUNCTION fc_copy_note() RETURNS text LANGUAGE sql "
            "AS 'INSERT INTO fc_copy_log VALUES (1) RETURNING ''" + CARD + "''';",
            "FUNCTION fc_copy_note()",
            "TABLE fc_copy_log",
        )
        yield self.start_gateway()
        mark = self.cluster.log_size()
        client = self.client()
        sql = "COPY (SELECT fc_copy_note()) TO STDOUT (FORMAT binary)"

        def talk():
            client.login(self.files.token())
            refused = client.query(sql)
            after = client.query("SELECT 'goes-on'")
            client.send(codec.Terminate().encode())
            return refused, after

        refused, after = yield self.in_thread(talk)
        [error] = errors(refused)
        self.assertEqual((error.severity, error.sqlstate), ("ERROR", "42501"))
        self.assertIn("binary COPY output cannot be masked", error.message)
        self.assertNotIn(T.COPY_OUT_RESPONSE, [t for t, _ in refused])
        self.assertEqual(rows(after), [[b"goes-on"]])
        # the target never saw it: no statement in its log, no row written
        log = self.cluster.server_log(mark)
        self.assertNotIn("fc_copy_note", log)
        self.assertIn("goes-on", log)
        count = yield self.direct("SELECT count(*) FROM fc_copy_log")
        self.assertEqual(count, "0")
        yield self.assert_still_serving()
        row = yield self.session()
        refusals = [e for e in self.events(row) if e["event"] == "refused-statement"]
        self.assertEqual([e["sqlstate"] for e in refusals], ["42501"])
        self.assertIn("binary COPY", refusals[0]["message"])
        self.assertNotIn(CARD_BYTES, self.to_client(row))


class UnmaskableTargetTests(InProcessGatewayTestCase):
    """
    A target that answers a COPY otherwise than it was asked (binary rows
    to a text COPY, rows with more fields than columns) cannot be masked:
    nothing of the rows reaches the client, the session ends with 42501.
    """

    masking = [MASK_SSN]

    @inlineCallbacks
    def copy_answered(self, answer: list):
        class Target(HostileTarget):
            def query(self, conn, sql):
                conn.write(*answer)

        target = Target()
        yield self.start_gateway([self.target("hostile", target.listen(self))])
        client = self.client()

        def talk():
            client.login(self.files.token(), "hostile")
            # the rest of the answer, then the error, then the close
            return client.query("COPY people (name, ssn) TO STDOUT") + client.messages()

        got = yield self.in_thread(talk)
        self.assertTrue(client.closed)
        [error] = errors(got)
        self.assertEqual((error.severity, error.sqlstate), ("FATAL", "42501"))
        self.assertIn("could not mask this result", error.message)
        self.assertNotIn(CARD_BYTES, bytes(client.received))
        self.assertEqual(target.queries, [b"COPY people (name, ssn) TO STDOUT"])
        yield self.assert_still_serving()
        yield self.stop_gateway()
        row = yield self.session()
        self.assertEqual(row.close_reason, "result could not be masked")
        self.assertNotIn(CARD_BYTES, self.to_client(row))
        self.assert_verifies(row)

    def test_binary_rows_for_text_copy(self):
        binary_row = (
            b"PGCOPY\n\xff\r\n\x00"
            + struct.pack("!IIh", 0, 0, 2)
            + struct.pack("!I", 3)
            + b"ann"
            + struct.pack("!I", len(CARD))
            + CARD_BYTES
        )
        return self.copy_answered(
            [
                codec.CopyOutResponse(1, (1, 1)),
                codec.CopyData(binary_row),
                codec.CopyDone(),
                codec.CommandComplete("COPY 1"),
                codec.ReadyForQuery("I"),
            ]
        )

    def test_more_fields_than_columns(self):
        return self.copy_answered(
            [
                codec.CopyOutResponse(0, (0, 0)),
                codec.CopyData(b"ann\tx\t" + CARD_BYTES + b"\n"),
                codec.CopyDone(),
                codec.CommandComplete("COPY 1"),
                codec.ReadyForQuery("I"),
            ]
        )


class CatalogFailureTests(InProcessGatewayTestCase):
    """
    Column rules need the catalog to name a result's columns: when it
    cannot (its connection fails), nothing of the result reaches the
    client (58000, the session ends), and a COPY that needs it is refused.
    """

    masking = [MASK_SSN]

    @inlineCallbacks
    def setUp(self):
        super().setUp()
        yield self.create(
            "DROP TABLE IF EXISTS fc_people; "
            "CREATE TABLE fc_people (name text, ssn text); "
            "INSERT INTO fc_people VALUES ('ann', '123-45-6789'); "
            "GRANT ALL ON fc_people TO PUBLIC;",
            "TABLE fc_people",
        )

        def no_catalog(*args, **kwargs):
            return fail(UpstreamError("catalog connection refused (injected)"))

        self.patch(catalog_module, "connect_upstream", no_catalog)
        yield self.start_gateway()

    @inlineCallbacks
    def test_result_withheld(self):
        client = self.client()

        def talk():
            client.login(self.files.token())
            return client.query("SELECT name, ssn FROM fc_people") + client.messages()

        got = yield self.in_thread(talk)
        self.assertTrue(client.closed)
        [error] = errors(got)
        self.assertEqual((error.severity, error.sqlstate), ("FATAL", "58000"))
        # the target session is gone with it
        yield self.assert_no_backend("FROM fc_people")
        self.assertEqual(rows(got), [])
        self.assertNotIn(b"123-45-6789", bytes(client.received))
        yield self.assert_still_serving()
        row = yield self.session()
        self.assertIn("catalog lookup failed", row.close_reason)
        self.assertIn("injected", row.close_reason)
        self.assertNotIn(b"123-45-6789", self.to_client(row))

    @inlineCallbacks
    def test_copy_refused(self):
        """COPY table TO STDOUT (no column list) is refused; the session goes on."""
        mark = self.cluster.log_size()
        client = self.client()

        def talk():
            client.login(self.files.token())
            refused = client.query("COPY fc_people TO STDOUT")
            return refused, client.query("SELECT 'goes-on'")

        refused, after = yield self.in_thread(talk)
        [error] = errors(refused)
        self.assertEqual((error.severity, error.sqlstate), ("ERROR", "42501"))
        self.assertEqual(rows(after), [[b"goes-on"]])
        self.assertNotIn(b"123-45-6789", bytes(client.received))
        log = self.cluster.server_log(mark)
        self.assertNotIn("COPY fc_people", log)
        self.assertIn("goes-on", log)
        self.assertEqual(len(self.flushLoggedErrors(UpstreamError)), 1)


class RecordingFailureTests(InProcessGatewayTestCase):
    """
    The recording's writes fail in the middle of a session: the session
    ends with 58030, what the target was running is stopped there, the
    index says why, and the next client is served (and recorded).
    """

    @inlineCallbacks
    def test_write_fails(self):
        armed = []
        real = gatehouse.service.thread_executor

        def failing_executor(reactor_, pool):
            run = real(reactor_, pool)

            def submit(fn, *args):
                if armed and getattr(fn, "__name__", "") == "write_block":
                    armed.clear()
                    return fail(OSError(errno.EIO, "Input/output error (injected)"))
                return run(fn, *args)

            return submit

        self.patch(gatehouse.service, "thread_executor", failing_executor)
        yield self.create(
            "DROP TABLE IF EXISTS fc_rec; CREATE TABLE fc_rec (v text); "
            "GRANT ALL ON fc_rec TO PUBLIC;",
            "TABLE fc_rec",
        )
        yield self.start_gateway()
        client = self.client()
        yield self.in_thread(client.login, self.files.token())
        armed.append(True)

        def talk():
            # The write of this statement's records fails while the target
            # sleeps: the INSERT after the sleep must never run.
            got = client.query(
                "SELECT pg_sleep(3); INSERT INTO fc_rec VALUES ('after-failure')"
            )
            return got + client.messages()

        got = yield self.in_thread(talk)
        self.assertEqual(armed, [])
        self.assertTrue(client.closed)
        [error] = errors(got)
        self.assertEqual((error.severity, error.sqlstate), ("FATAL", "58030"))
        yield self.assert_no_backend("SELECT pg_sleep(3)")
        # the statement was stopped, not merely left to finish unseen
        count = yield self.direct("SELECT count(*) FROM fc_rec")
        self.assertEqual(count, "0")
        yield self.assert_still_serving()
        row = yield self.session(sealed=False)
        report = verify_session(row.directory, self.files.anchors())
        # What could not be written is a detectable loss, not a silent one:
        # the segment ends without a seal, and the index says why.
        self.assertEqual([f.problem for f in report.findings], ["incomplete"])
        self.assertNotEqual(report.exit_code, 0)
        self.assertIn("recording failed", row.close_reason)
        self.assertIn("injected", row.close_reason)
        self.assertEqual(len(self.flushLoggedErrors(OSError)), 1)
        # The failed recording's close fails too: the server consumes it
        # (Session.close logged it), no "Unhandled error in Deferred".
        gc.collect()
        self.assertEqual(self.flushLoggedErrors(RecordingFailed), [])
        # The next session's recording is whole.
        yield self.stop_gateway()
        index = self.files.path("recordings", "index.sqlite3")
        later = [r for r in query_sessions(index, limit=None) if r.id != row.id]
        self.assertEqual(len(later), 1)
        self.assert_verifies(later[0])


class CheckFailureTests(InProcessGatewayTestCase):
    """
    An error inside the gateway while it checks a result: the result is
    not sent (XX000, the session ends) and the gateway goes on serving.
    """

    masking = [MASK_CARDS]

    @inlineCallbacks
    def test_masker_raises(self):
        armed = [True]
        real = codec.data_row_values

        def broken(body):
            if armed and CARD_BYTES in body:
                armed.clear()
                raise RuntimeError("injected masking bug")
            return real(body)

        self.patch(codec, "data_row_values", broken)
        yield self.start_gateway()
        client = self.client()

        def talk():
            client.login(self.files.token())
            return client.query(f"SELECT '{CARD}' AS card") + client.messages()

        got = yield self.in_thread(talk)
        self.assertEqual(armed, [])
        self.assertTrue(client.closed)
        [error] = errors(got)
        self.assertEqual((error.severity, error.sqlstate), ("FATAL", "XX000"))
        self.assertIn("could not check this result", error.message)
        self.assertNotIn(CARD_BYTES, bytes(client.received))
        yield self.assert_still_serving()
        row = yield self.session()
        self.assertEqual(row.close_reason, "internal error checking a result")
        self.assertNotIn(CARD_BYTES, self.to_client(row))
        errors_logged = self.flushLoggedErrors(RuntimeError)
        self.assertEqual(len(errors_logged), 1)

    @inlineCallbacks
    def test_statement_check_raises(self):
        """
        A statement held until the target answered what came before it
        (non-ASCII text is read only then) whose check raises: it never
        reaches the target (XX000, the session ends).
        """
        armed = [True]
        real = commands.CommandCache.lookup

        def broken(cache, sql):
            if armed and "é" in sql:
                armed.clear()
                raise RuntimeError("injected classifier bug")
            return real(cache, sql)

        self.patch(commands.CommandCache, "lookup", broken)
        yield self.start_gateway()
        mark = self.cluster.log_size()
        client = self.client()

        def talk():
            client.login(self.files.token())
            # both in one packet: the second waits for the first's answer
            client.send(
                codec.Query("SELECT 'first'").encode()
                + codec.Query("SELECT 'café-second'").encode()
            )
            return client.messages()

        got = yield self.in_thread(talk)
        self.assertEqual(armed, [])
        self.assertEqual(rows(got), [[b"first"]])
        [error] = errors(got)
        self.assertEqual((error.severity, error.sqlstate), ("FATAL", "XX000"))
        self.assertIn("could not check this statement", error.message)
        log = self.cluster.server_log(mark)
        self.assertIn("SELECT 'first'", log)
        self.assertNotIn("second", log)
        yield self.assert_still_serving()
        row = yield self.session()
        self.assertEqual(row.close_reason, "internal error checking a statement")
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)


class EncodingTests(InProcessGatewayTestCase):
    """
    Client encodings whose characters can hide ASCII bytes (SJIS, BIG5,
    GBK...) let a statement read one way at the gateway and another at the
    target: a target session in one is refused, and non-ASCII statements
    are refused once the target reports one.
    """

    @inlineCallbacks
    def test_target_session_in_unsafe_encoding(self):
        """A role's default client_encoding SJIS: the login fails (08006)."""
        yield deferToThread(self.cluster.create_database, "fc_sjis", "gw_trust")
        yield self.direct(
            "ALTER ROLE gw_trust IN DATABASE fc_sjis SET client_encoding = 'SJIS'"
        )
        self.addCleanup(
            self.direct, "ALTER ROLE gw_trust IN DATABASE fc_sjis RESET ALL"
        )
        yield self.start_gateway(
            [
                self.target(
                    "sjis", self.cluster.port, database="fc_sjis", user="gw_trust"
                )
            ]
        )
        client = self.client()
        mark = self.cluster.log_size()
        got = yield self.in_thread(
            client.refused, self.files.token(), "sjis", b"SELECT 'pipelined-sjis'"
        )
        [error] = errors(got)
        self.assertEqual((error.severity, error.sqlstate), ("FATAL", "08006"))
        self.assertIn("client_encoding", error.message)
        self.assertNotIn(T.READY_FOR_QUERY, [t for t, _ in got])
        self.assertNotIn("pipelined-sjis", self.cluster.server_log(mark))
        yield self.assert_still_serving()
        row = yield self.session()
        self.assertEqual(row.close_reason, "unsafe upstream client_encoding")

    @inlineCallbacks
    def test_encoding_changed_by_a_function(self):
        """
        A function the classifier cannot see into sets client_encoding to
        SJIS: the next non-ASCII statement is refused (0A000) and never
        reaches the target; ASCII statements go on.
        """
        yield self.create(
            "DROP TABLE IF EXISTS fc_enc; CREATE TABLE fc_enc (v text); "
            "GRANT ALL ON fc_enc TO PUBLIC; "
            "CREATE OR REPLACE FUNCTION fc_to_sjis() RETURNS text LANGUAGE sql "
            "AS $$SELECT set_config('client_encoding', 'SJIS', false)$$;",
            "FUNCTION fc_to_sjis()",
            "TABLE fc_enc",
        )
        yield self.start_gateway()
        mark = self.cluster.log_size()
        client = self.client()
        # U+8868 in SJIS is 0x95 0x5C: its trail byte is a backslash.
        statement = "INSERT INTO fc_enc VALUES ('表')".encode("shift_jis")

        def talk():
            client.login(self.files.token())
            switched = client.query("SELECT fc_to_sjis()")
            refused = client.query(statement)
            after = client.query("SELECT 'ascii'")
            client.send(codec.Terminate().encode())
            return switched, refused, after

        _, refused, after = yield self.in_thread(talk)
        log = self.cluster.server_log(mark)
        self.assertIn(
            codec.ParameterStatus("client_encoding", "SJIS").encode(),
            bytes(client.received),
        )
        [error] = errors(refused)
        self.assertEqual((error.severity, error.sqlstate), ("ERROR", "0A000"))
        self.assertIn("client encoding", error.message)
        self.assertEqual(rows(after), [[b"ascii"]])
        count = yield self.direct("SELECT count(*) FROM fc_enc")
        self.assertEqual(count, "0")
        self.assertIn("fc_to_sjis", log)
        self.assertNotIn("fc_enc", log)
        yield self.assert_still_serving()
        row = yield self.session()
        refusals = [e for e in self.events(row) if e["event"] == "refused-statement"]
        self.assertEqual([e["sqlstate"] for e in refusals], ["0A000"])


class ScramTarget(HostileTarget):
    """
    A target that asks for SCRAM-SHA-256 and answers the client's proof
    with C{final} (a function of the correct server-final message).
    """

    user = "gw_scram"

    def __init__(self, password: str, final) -> None:
        super().__init__()
        mechanism = scramp.ScramMechanism("SCRAM-SHA-256")
        auth = mechanism.make_auth_info(password, iteration_count=4096)
        self.server = mechanism.make_server(lambda username: auth)
        self.final = final
        self.after_auth: list[int] = []
        self.state = "first"

    def startup(self, conn, message):
        conn.write(codec.AuthenticationSASL(("SCRAM-SHA-256",)))

    def message(self, conn, kind, body):
        if self.state == "done":
            self.after_auth.append(kind)
            return super().message(conn, kind, body)
        if self.state == "first":
            initial = codec.SASLInitialResponse.decode(body)
            self.server.set_client_first(initial.data.decode())
            conn.write(
                codec.AuthenticationSASLContinue(
                    self.server.get_server_first().encode()
                )
            )
            self.state = "final"
            return
        self.server.set_client_final(codec.SASLResponse.decode(body).data.decode())
        self.state = "done"
        for message in self.final(self.server.get_server_final()):
            conn.write(message)
        conn.ready(self.user)


class UpstreamAuthenticationTests(InProcessGatewayTestCase):
    """
    A target that cannot prove it knows the password (a wrong SCRAM server
    signature, or none at all) is not talked to: the client gets 08006
    and nothing it sent reaches that target.
    """

    @inlineCallbacks
    def refused_target(self, final, reason: str):
        password = "not-the-real-one-" + os.urandom(4).hex()
        target = ScramTarget(password, final)
        port = target.listen(self)
        with open(self.mktemp(), "w") as f:
            f.write(password + "\n")
            password_file = os.path.abspath(f.name)
        yield self.start_gateway(
            [self.target("scram", port, user="gw_scram", password_file=password_file)]
        )
        client = self.client()
        got = yield self.in_thread(
            client.refused, self.files.token(), "scram", b"DELETE FROM accounts"
        )
        [error] = errors(got)
        self.assertEqual((error.severity, error.sqlstate), ("FATAL", "08006"))
        self.assertNotIn(T.READY_FOR_QUERY, [t for t, _ in got])
        self.assertEqual(target.queries, [])
        self.assertEqual(target.after_auth, [])
        for conn in target.connections:
            self.assertNotIn(b"DELETE", bytes(conn.received))
        yield self.assert_still_serving()
        row = yield self.session()
        self.assertIn(reason, row.close_reason)
        upstream = [e for e in self.events(row) if e["event"] == "upstream-connected"]
        self.assertEqual(upstream, [])

    def test_wrong_server_signature(self):
        def forged(final: str):
            signature = base64.b64encode(os.urandom(32)).decode()
            yield codec.AuthenticationSASLFinal(f"v={signature}".encode())

        return self.refused_target(forged, "failed SCRAM server verification")

    def test_no_server_signature(self):
        def skipped(final: str):
            return ()

        return self.refused_target(skipped, "skipped SCRAM server verification")


class UpstreamTLSInjectionTests(InProcessGatewayTestCase):
    """
    A target (or a man in the middle) that sends bytes in clear right after
    its 'S' to the gateway's SSLRequest (CVE-2021-23222): the gateway does
    not read them, sends nothing more (no startup, no password), and the
    client gets 08006.
    """

    @inlineCallbacks
    def test_bytes_after_s(self):
        class Injector(HostileTarget):
            user = "gw_scram"

            def ssl_request(self, conn):
                injected = (
                    codec.AuthenticationOk().encode()
                    + codec.ReadyForQuery("I").encode()
                )
                conn.write(b"S" + injected)

        target = Injector()
        port = target.listen(self)
        yield self.start_gateway(
            [
                self.target(
                    "tls",
                    port,
                    user="gw_scram",
                    tls={"mode": "require"},
                    password_file=self.files_password(),
                )
            ]
        )
        client = self.client()
        got = yield self.in_thread(
            client.refused, self.files.token(), "tls", b"DELETE FROM accounts"
        )
        [error] = errors(got)
        self.assertEqual((error.severity, error.sqlstate), ("FATAL", "08006"))
        self.assertNotIn(T.READY_FOR_QUERY, [t for t, _ in got])
        [conn] = target.connections
        # Only the SSLRequest: no startup packet, no password in clear.
        self.assertEqual(bytes(conn.received), codec.SSLRequest().encode())
        yield self.assert_still_serving()
        row = yield self.session()
        self.assertIn("unencrypted bytes after accepting TLS", row.close_reason)

    def files_password(self) -> str:
        path = os.path.abspath(self.mktemp())
        with open(path, "w") as f:
            f.write("secret-not-to-be-sent\n")
        return path
