"""
Tests for L{gatehouse.protocols.postgres.replay}: psql-like transcripts of
recorded sessions, built by hand from the codec's encoders and cut into
odd chunks, as the recorder stores them.

The module under test registers itself in the process-wide renderer
registry when imported.  Other tests use "postgres" as a stand-in protocol
with the registry empty, so these tests import it only while they run and
leave the registry as they found it (see L{ReplayTestCase}).
"""

from __future__ import annotations

import contextlib
import importlib
import io
import json
import os
import subprocess
import sys
from collections.abc import Iterable
from types import ModuleType

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from gatehouse.protocols.postgres import codec as c
from gatehouse.recording.format import Direction, Record, RecordType
from gatehouse.recording.render import (
    register_renderer,
    render,
    render_generic,
    renderer_for,
    unregister_renderer,
)

MS = 1_000_000
SID = "0192f1a0-0000-7000-8000-000000000001"
SECRET = "eyJhbGciOiJSUzI1NiJ9.c2VjcmV0LXRva2Vu.SIGNATURE"
#: 2023-11-14T22:13:20.250Z
STARTED = 1_700_000_000.25


def _replay() -> ModuleType:
    return importlib.import_module("gatehouse.protocols.postgres.replay")


class ReplayTestCase(SynchronousTestCase):
    """
    Imports the replay module for each test, and if that import registered
    its renderer, unregisters it afterwards.
    """

    def setUp(self):
        registered = renderer_for("postgres") is not render_generic
        self.replay = _replay()
        if not registered and renderer_for("postgres") is not render_generic:
            self.addCleanup(unregister_renderer, "postgres")


def chunks(data: bytes, sizes: Iterable[int] = (1, 4, 2, 7, 3, 11)) -> list[bytes]:
    """Cut C{data} into pieces of the given sizes, cycling through them."""
    sizes = list(sizes)
    out = []
    pos = 0
    i = 0
    while pos < len(data):
        size = sizes[i % len(sizes)]
        out.append(data[pos : pos + size])
        pos += size
        i += 1
    return out


class Recording:
    """
    Builds a session's records in order: META first, then DATA, EVENT and
    CLOSE records with increasing sequence numbers.
    """

    def __init__(self, split: bool = True, meta: dict | None = None):
        self.split = split
        self.records: list[Record] = []
        if meta is None:
            meta = {
                "session_id": SID,
                "gateway_id": "gw-1",
                "protocol": "postgres",
                "listener": "pg",
                "client_address": "10.0.0.5:53422",
                "started": STARTED,
            }
        if meta:
            self._add(RecordType.META, Direction.GATEWAY, 0, json.dumps(meta).encode())

    def _add(self, type_: int, direction: int, mono: int, payload: bytes) -> None:
        seq = len(self.records)
        self.records.append(Record(seq, type_, direction, 0, mono, payload))

    def data(self, direction: int, data: bytes, mono: int) -> Recording:
        """Bytes that crossed at C{mono}, cut into odd chunks."""
        for piece in chunks(data) if self.split else [data]:
            self._add(RecordType.DATA, direction, mono, piece)
        return self

    def client(self, *messages: bytes | c.Message, mono: int = 0) -> Recording:
        """What the client sent."""
        return self.data(Direction.CLIENT_TO_GATEWAY, _encode(messages), mono)

    def server(self, *messages: bytes | c.Message, mono: int = 0) -> Recording:
        """What the client received."""
        return self.data(Direction.GATEWAY_TO_CLIENT, _encode(messages), mono)

    def event(self, name: str, mono: int = 0, /, **fields: object) -> Recording:
        """A gateway event."""
        fields["event"] = name
        body = json.dumps(fields, sort_keys=True).encode()
        self._add(RecordType.EVENT, Direction.GATEWAY, mono, body)
        return self

    def close(self, reason: str, mono: int = 0) -> Recording:
        """The CLOSE record."""
        body = json.dumps({"reason": reason}).encode()
        self._add(RecordType.CLOSE, Direction.GATEWAY, mono, body)
        return self

    def login(self) -> Recording:
        """TLS, startup, password, authentication, the greeting."""
        self.client(c.SSLRequest().encode(), mono=1 * MS)
        self.data(Direction.GATEWAY_TO_CLIENT, b"S", 1 * MS)
        self.event("tls", 2 * MS, negotiation="postgres")
        self.client(
            c.StartupMessage(
                {"user": "alice", "database": "orders", "application_name": "psql"}
            ).encode(),
            mono=3 * MS,
        )
        self.event(
            "startup", 3 * MS, user="alice", database="orders", application_name="psql"
        )
        self.server(c.AuthenticationCleartextPassword(), mono=3 * MS)
        self.client(c.encode_message(b"p", SECRET.encode() + b"\0"), mono=4 * MS)
        self.event(
            "authenticated",
            5 * MS,
            subject="alice@example.com",
            name="Alice",
            issuer="https://idp.example.com",
            groups=["dba", "ops"],
            target="orders",
        )
        self.event(
            "upstream-connected",
            6 * MS,
            target="orders",
            auth="scram-sha-256",
            tls=True,
            backend_pid=4242,
            server_version="16.2",
        )
        self.server(
            c.AuthenticationOk(),
            c.ParameterStatus("server_version", "16.2"),
            c.ParameterStatus("client_encoding", "UTF8"),
            c.BackendKeyData(1234, b"abcd"),
            c.ReadyForQuery("I"),
            mono=6 * MS,
        )
        return self

    def render(self) -> str:
        """The transcript."""
        out = io.StringIO()
        _replay().render_postgres(self.records, out)
        return out.getvalue()


def _encode(messages: Iterable[bytes | c.Message]) -> bytes:
    return b"".join(m if isinstance(m, bytes) else m.encode() for m in messages)


def users_result() -> list[c.Message]:
    """A three-row result of (id int4, name text) and its tag."""
    return [
        c.RowDescription(
            [c.FieldDescription("id", type_oid=23), c.FieldDescription("name")]
        ),
        c.DataRow([b"1", b"alice"]),
        c.DataRow([b"22", None]),
        c.DataRow([b"333", "zoë".encode()]),
        c.CommandComplete("SELECT 3"),
    ]


class TranscriptTests(ReplayTestCase):
    """A whole session, the way an auditor reads it."""

    def test_full_session(self):
        """Header, startup, a query with its table, tag and time, close."""
        rec = Recording().login()
        rec.client(c.Query("SELECT id, name FROM users"), mono=100 * MS)
        rec.server(*users_result(), c.ReadyForQuery("I"), mono=101 * MS + 234_000)
        rec.client(c.Terminate(), mono=200 * MS)
        rec.close("client terminated the session", mono=201 * MS)
        self.assertEqual(
            rec.render(),
            "-- PostgreSQL session 0192f1a0-0000-7000-8000-000000000001\n"
            "-- identity: Alice <alice@example.com> (groups: dba, ops;"
            " issuer https://idp.example.com)\n"
            "-- target: orders\n"
            "-- client: 10.0.0.5:53422 via listener pg on gateway gw-1\n"
            "-- started: 2023-11-14 22:13:20.250 UTC\n"
            "\n"
            "-- client: SSLRequest\n"
            "-- gateway: TLS started (postgres negotiation)\n"
            "-- startup (protocol 3.0): user=alice database=orders"
            " application_name=psql\n"
            "-- server: authentication request: password\n"
            "-- client: [password redacted]\n"
            "-- gateway: authenticated Alice <alice@example.com> (groups: dba, ops)"
            " target=orders\n"
            "-- gateway: upstream-connected auth=scram-sha-256 backend_pid=4242"
            " server_version=16.2 target=orders tls=true\n"
            "-- server: authentication ok\n"
            "-- server parameters: server_version=16.2, client_encoding=UTF8\n"
            "\n"
            "=> SELECT id, name FROM users\n"
            " id  | name\n"
            "-----+-------\n"
            "   1 | alice\n"
            "  22 |\n"
            " 333 | zoë\n"
            "(3 rows)\n"
            "SELECT 3\n"
            "Time: 1.234 ms\n"
            "\n"
            "-- client: Terminate\n"
            "\n"
            "-- session closed: client terminated the session\n",
        )

    def test_chunking_does_not_matter(self):
        """Whole messages or odd pieces: the same transcript."""
        transcripts = []
        for split in (False, True):
            rec = Recording(split=split).login()
            rec.client(c.Query("SELECT id, name FROM users"), mono=100 * MS)
            rec.server(*users_result(), c.ReadyForQuery("I"), mono=102 * MS)
            transcripts.append(rec.render())
        self.assertEqual(transcripts[0], transcripts[1])
        self.assertIn("(3 rows)", transcripts[1])

    def test_password_never_shown(self):
        """
        The client's password message is shown redacted, whatever it holds,
        even when the stream breaks right after it.
        """
        rec = Recording().login()
        rec.client(c.encode_message(b"p", b"SCRAM " + SECRET.encode()), b"\x00junk")
        text = rec.render()
        self.assertEqual(text.count("[password redacted]"), 2)
        self.assertNotIn("SIGNATURE", text)
        self.assertNotIn("c2VjcmV0", text)
        self.assertIn("-- (unparseable client bytes from here:", text)

    def test_header_without_authentication(self):
        """A failed login: the header says so; the failure and the FATAL show."""
        rec = Recording()
        rec.client(c.StartupMessage({"user": "mallory", "database": "orders"}).encode())
        rec.server(c.AuthenticationCleartextPassword())
        rec.client(c.encode_message(b"p", b"not-a-jwt\0"))
        rec.event("authentication-failed", reason="token is not a JWT")
        rec.server(
            c.ErrorResponse.build(
                "FATAL",
                "28P01",
                "authentication failed",
                hint="the password must be a valid access token (JWT) for this gateway",
            )
        )
        rec.close("authentication failed: token is not a JWT")
        text = rec.render()
        self.assertIn("-- identity: (not authenticated)\n-- target: (none)\n", text)
        self.assertIn("-- gateway: authentication failed: token is not a JWT\n", text)
        self.assertIn(
            "FATAL:  28P01: authentication failed\n"
            "HINT:  the password must be a valid access token (JWT) for this gateway\n",
            text,
        )
        self.assertNotIn("not-a-jwt", text)
        self.assertNotIn("Time:", text)

    def test_header_comes_first(self):
        """Lines before authentication are held back until the header."""
        text = Recording().login().render()
        self.assertTrue(text.startswith("-- PostgreSQL session "), text)
        self.assertIn("-- identity: Alice", text.split("\n\n")[0])

    def test_no_meta(self):
        """A recording without META still renders, with unknowns."""
        rec = Recording(meta={})
        rec.client(c.StartupMessage({"user": "u"}).encode())
        rec.client(c.Query("SELECT 1"))
        text = rec.render()
        self.assertIn("-- PostgreSQL session (unknown)\n", text)
        self.assertIn("=> SELECT 1\n", text)


class QueryTests(ReplayTestCase):
    """Simple-protocol statements and their results."""

    def session(self) -> Recording:
        return Recording().login()

    def test_multi_statement(self):
        """
        A multi-statement Query is shown as sent; each result has its own
        tag and time; an error shows its SQLSTATE, line and caret.
        """
        rec = self.session()
        rec.client(c.Query("INSERT INTO t VALUES (1);\nSELECT 1/0"), mono=10 * MS)
        rec.server(c.CommandComplete("INSERT 0 1"), mono=12 * MS)
        rec.server(
            c.ErrorResponse.build("ERROR", "22012", "division by zero", position="35"),
            c.ReadyForQuery("I"),
            mono=13 * MS + 500_000,
        )
        text = rec.render()
        self.assertIn(
            "=> INSERT INTO t VALUES (1);\n"
            "-> SELECT 1/0\n"
            "INSERT 0 1\n"
            "Time: 2.000 ms\n"
            "ERROR:  22012: division by zero\n"
            "LINE 2: SELECT 1/0\n"
            "                ^\n"
            "Time: 1.500 ms\n",
            text,
        )

    def test_error_fields(self):
        """ERROR with SQLSTATE, then DETAIL, HINT and CONTEXT lines."""
        rec = self.session()
        rec.client(c.Query("SELECT * FROM x"), mono=10 * MS)
        rec.server(
            c.ErrorResponse.build(
                "ERROR",
                "42P01",
                'relation "x" does not exist',
                detail="first\nsecond",
                hint="create it",
                position="15",
                where="SQL function f",
            ),
            c.ReadyForQuery("I"),
            mono=11 * MS,
        )
        self.assertIn(
            "=> SELECT * FROM x\n"
            'ERROR:  42P01: relation "x" does not exist\n'
            "LINE 1: SELECT * FROM x\n"
            "                      ^\n"
            "DETAIL:  first\n"
            "second\n"
            "HINT:  create it\n"
            "CONTEXT:  SQL function f\n"
            "Time: 1.000 ms\n",
            rec.render(),
        )

    def test_notice_and_notification(self):
        """Notices read like psql's; notifications use psql's sentence."""
        rec = self.session()
        rec.client(c.Query("DROP TABLE IF EXISTS t"))
        rec.server(
            c.NoticeResponse.build(
                "NOTICE", "00000", 'table "t" does not exist, skipping'
            ),
            c.CommandComplete("DROP TABLE"),
            c.NotificationResponse(77, "chan", "x"),
            c.NotificationResponse(78, "other", ""),
            c.ReadyForQuery("I"),
        )
        text = rec.render()
        self.assertIn('NOTICE:  table "t" does not exist, skipping\nDROP TABLE\n', text)
        self.assertIn(
            'Asynchronous notification "chan" with payload "x" received from'
            " server process with PID 77.\n",
            text,
        )
        self.assertIn(
            'Asynchronous notification "other" received from server process'
            " with PID 78.\n",
            text,
        )

    def test_empty_result_and_query(self):
        """Zero rows show headings and (0 rows); an empty query says so."""
        rec = self.session()
        rec.client(c.Query("SELECT a FROM t WHERE false"))
        rec.server(
            c.RowDescription([c.FieldDescription("a")]),
            c.CommandComplete("SELECT 0"),
            c.ReadyForQuery("I"),
        )
        rec.client(c.Query(""))
        rec.server(c.EmptyQueryResponse(), c.ReadyForQuery("I"))
        text = rec.render()
        self.assertIn(" a\n---\n(0 rows)\nSELECT 0\n", text)
        self.assertIn("=> \n-- (empty query)\n", text)

    def test_row_cap(self):
        """At most MAX_ROWS rows are shown; the count stays exact."""
        max_rows = self.replay.MAX_ROWS
        rows = [c.DataRow([str(i).encode()]) for i in range(max_rows + 50)]
        rec = self.session()
        rec.client(c.Query("SELECT generate_series(0, 149)"))
        rec.server(
            c.RowDescription([c.FieldDescription("n", type_oid=23)]),
            *rows,
            c.CommandComplete("SELECT 150"),
            c.ReadyForQuery("I"),
        )
        text = rec.render()
        self.assertIn(
            f"\n {max_rows - 1}\n… 50 more rows (use --full)\n(150 rows)\nSELECT 150\n",
            text,
        )
        self.assertNotIn(f"\n {max_rows}\n", text)

    def test_wide_and_binary_cells(self):
        """
        Long values are cut short; binary columns of common types are
        decoded, others show as hex.
        """
        rec = self.session()
        rec.client(c.Query("SELECT big, raw FROM t"))
        rec.server(
            c.RowDescription(
                [
                    c.FieldDescription("big"),
                    c.FieldDescription("raw", type_oid=17, format=1),
                    c.FieldDescription("n", type_oid=20, format=1),
                    c.FieldDescription("s", type_oid=25, format=1),
                    c.FieldDescription("b", type_oid=16, format=1),
                ]
            ),
            c.DataRow(
                [
                    b"x" * 1000,
                    b"\x00\x01\xff",
                    (-5).to_bytes(8, "big", signed=True),
                    b"hi",
                    b"\x01",
                ]
            ),
            c.CommandComplete("SELECT 1"),
            c.ReadyForQuery("I"),
        )
        text = rec.render()
        self.assertIn("… (800 more characters; use --full)", text)
        self.assertIn("| \\x0001ff | -5 | hi | t\n", text)

    def test_escaping(self):
        """
        Control characters from the recording never reach the terminal:
        they are shown escaped, in statements, cells and messages.
        """
        rec = self.session()
        rec.client(c.Query("SELECT '\x1b[2J'\t-- x"))
        rec.server(
            c.RowDescription([c.FieldDescription("v\x07")]),
            c.DataRow([b"\x1b]0;owned\x07", b"\xff\xfe"]),
            c.CommandComplete("SELECT 1"),
            c.NoticeResponse.build("NOTICE", "00000", "bell\x07"),
            c.ReadyForQuery("I"),
        )
        text = rec.render()
        self.assertNotIn("\x1b", text)
        self.assertNotIn("\x07", text)
        self.assertIn("=> SELECT '\\x1b[2J'\t-- x\n", text)
        self.assertIn("\\x1b]0;owned\\x07", text)
        self.assertIn("\\xff\\xfe", text)
        self.assertIn("NOTICE:  bell\\x07", text)

    def test_client_encoding(self):
        """Statements and values are decoded in the client encoding."""
        rec = self.session()
        rec.server(c.ParameterStatus("client_encoding", "LATIN1"))
        rec.client(c.Query("SELECT 'café'").encode("latin-1"))
        rec.server(
            c.RowDescription([c.FieldDescription("v")]),
            c.DataRow([b"caf\xe9"]),
            c.CommandComplete("SELECT 1"),
            c.ReadyForQuery("I"),
        )
        text = rec.render()
        self.assertIn("-- server parameter: client_encoding=LATIN1\n", text)
        self.assertIn("=> SELECT 'café'\n", text)
        self.assertIn(" café\n", text)

    def test_copy_out(self):
        """COPY TO STDOUT: a count of rows and bytes and the first few lines."""
        rec = self.session()
        rec.client(c.Query("COPY t TO STDOUT"), mono=10 * MS)
        data = [c.CopyData(f"{i}\tname {i}\n".encode()) for i in range(8)]
        rec.server(
            c.CopyOutResponse(0, (0, 0)),
            *data,
            c.CopyDone(),
            c.CommandComplete("COPY 8"),
            c.ReadyForQuery("I"),
            mono=14 * MS,
        )
        size = sum(len(d.data) for d in data)
        self.assertIn(
            "=> COPY t TO STDOUT\n"
            f"-- COPY TO STDOUT (8 rows of data, {size} bytes, text)\n"
            "   0\tname 0\n"
            "   1\tname 1\n"
            "   2\tname 2\n"
            "   3\tname 3\n"
            "   4\tname 4\n"
            "   … 3 more rows of data (use --full)\n"
            "COPY 8\n"
            "Time: 4.000 ms\n",
            rec.render(),
        )

    def test_copy_in(self):
        """COPY FROM STDIN: the client's data is summarised the same way."""
        rec = self.session()
        rec.client(c.Query("COPY t FROM STDIN"))
        rec.server(c.CopyInResponse(0, (0,)))
        rec.client(c.CopyData(b"1\n2\n"), c.CopyData(b"3\n"), c.CopyDone())
        rec.server(c.CommandComplete("COPY 3"), c.ReadyForQuery("I"))
        text = rec.render()
        self.assertIn(
            "-- COPY FROM STDIN (3 rows of data, 6 bytes, text)\n"
            "   1\n   2\n   3\nCOPY 3\n",
            text,
        )

    def test_copy_end_marker(self):
        """The old end-of-data line (backslash, period) is no row."""
        rec = self.session()
        rec.client(c.Query("COPY t FROM STDIN"))
        rec.server(c.CopyInResponse(0, (0,)))
        rec.client(c.CopyData(b"1\n2\n"), c.CopyData(b"\\.\n"), c.CopyDone())
        rec.server(c.CommandComplete("COPY 2"), c.ReadyForQuery("I"))
        self.assertIn(
            "-- COPY FROM STDIN (2 rows of data, 7 bytes, text)\n", rec.render()
        )

    def test_canceled(self):
        """
        A statement cancelled before any row: only the error, like psql,
        timed from the statement.
        """
        rec = self.session()
        rec.client(c.Query("SELECT pg_sleep(30)"), mono=10 * MS)
        rec.event("cancel-request", 20 * MS, peer="127.0.0.1:5000")
        rec.server(
            c.RowDescription([c.FieldDescription("pg_sleep", type_oid=2278)]),
            c.ErrorResponse.build(
                "ERROR", "57014", "canceling statement due to user request"
            ),
            c.ReadyForQuery("I"),
            mono=1010 * MS,
        )
        self.assertIn(
            "=> SELECT pg_sleep(30)\n"
            "-- gateway: cancel-request peer=127.0.0.1:5000\n"
            "ERROR:  57014: canceling statement due to user request\n"
            "Time: 1000.000 ms (00:01.000)\n",
            rec.render(),
        )

    def test_fatal_ends_statements(self):
        """After a FATAL error, the gateway's own FATAL is not timed."""
        rec = self.session()
        rec.client(c.Query("SELECT pg_sleep(30)"), mono=10 * MS)
        rec.server(
            c.ErrorResponse.build(
                "FATAL", "57P01", "terminating connection due to administrator command"
            ),
            mono=12 * MS,
        )
        rec.event("refused", 13 * MS, reason="upstream connection lost")
        rec.server(
            c.ErrorResponse.build("FATAL", "08006", "the connection was lost"),
            mono=13 * MS,
        )
        rec.close("upstream connection lost", mono=14 * MS)
        text = rec.render()
        self.assertIn(
            "FATAL:  57P01: terminating connection due to administrator command\n"
            "Time: 2.000 ms\n"
            "-- gateway: refused reason=upstream connection lost\n"
            "FATAL:  08006: the connection was lost\n"
            "\n-- session closed: upstream connection lost\n",
            text,
        )

    def test_copy_fail(self):
        """A client aborting COPY FROM STDIN says why."""
        rec = self.session()
        rec.client(c.Query("COPY t FROM STDIN"))
        rec.server(c.CopyInResponse(1, (1,)))
        rec.client(c.CopyData(b"PGCOPY\n\xff"), c.CopyFail("stop"))
        rec.server(
            c.ErrorResponse.build("ERROR", "57014", "COPY from stdin failed: stop"),
            c.ReadyForQuery("I"),
        )
        text = rec.render()
        self.assertIn("-- COPY FROM STDIN (1 row of data, 8 bytes, binary)\n", text)
        self.assertIn("-- client aborts COPY: stop\n", text)
        self.assertIn("ERROR:  57014: COPY from stdin failed: stop\n", text)


class ExtendedProtocolTests(ReplayTestCase):
    """Parse, Bind, Describe, Execute, Sync."""

    def session(self) -> Recording:
        return Recording().login()

    def test_parse_bind_execute(self):
        """
        The prepared statement, its parameters (text quoted, NULL, binary as
        hex), the rows under the described columns, the tag and the time.
        """
        rec = self.session()
        rec.client(
            c.Parse("s1", "SELECT id FROM t WHERE id = $1 AND a = $2 AND b = $3"),
            c.Bind("", "s1", (0, 0, 1), (b"42", None, b"\x00\x01"), ()),
            c.Describe("P", ""),
            c.Execute("", 0),
            c.Sync(),
            mono=10 * MS,
        )
        rec.server(
            c.ParseComplete(),
            c.BindComplete(),
            c.RowDescription([c.FieldDescription("id", type_oid=23)]),
            c.DataRow([b"42"]),
            c.CommandComplete("SELECT 1"),
            c.ReadyForQuery("I"),
            mono=13 * MS,
        )
        self.assertIn(
            '=> [prepared stmt "s1"] SELECT id FROM t WHERE id = $1 AND a = $2'
            " AND b = $3\n"
            "   bind: $1='42', $2=NULL, $3=\\x0001\n"
            " id\n"
            "----\n"
            " 42\n"
            "(1 row)\n"
            "SELECT 1\n"
            "Time: 3.000 ms\n",
            rec.render(),
        )

    def test_binary_parameters(self):
        """
        Binary parameters are decoded by the types the Parse declared, or
        else the types a Describe of the statement reported.
        """
        rec = self.session()
        rec.client(
            c.Parse("s", "SELECT $1, $2, $3, $4", (23, 0, 0, 0)),
            c.Describe("S", "s"),
            c.Sync(),
        )
        rec.server(
            c.ParseComplete(),
            c.ParameterDescription((23, 25, 16, 17)),
            c.NoData(),
            c.ReadyForQuery("I"),
        )
        rec.client(
            c.Bind("", "s", (1,), (b"\x00\x00\x00\x2a", b"O'x", b"\x00", b"\xff"), ()),
            c.Execute(),
            c.Sync(),
        )
        text = rec.render()
        self.assertIn("   bind: $1=42, $2='O''x', $3=f, $4=\\xff\n", text)

    def test_binary_results_of_described_statement(self):
        """
        A statement's description says text; the Bind's result formats say
        binary: the rows are decoded as binary (asyncpg's way).
        """
        rec = self.session()
        rec.client(
            c.Parse("a1", "SELECT $1::int * 2 AS doubled"),
            c.Describe("S", "a1"),
            c.Sync(),
        )
        rec.server(
            c.ParseComplete(),
            c.ParameterDescription((23,)),
            c.RowDescription([c.FieldDescription("doubled", type_oid=23)]),
            c.ReadyForQuery("I"),
        )
        rec.client(
            c.Bind("", "a1", (1,), ((21).to_bytes(4, "big"),), (1,)),
            c.Execute("", 1),
            c.Sync(),
        )
        rec.server(
            c.BindComplete(),
            c.DataRow([(42).to_bytes(4, "big")]),
            c.PortalSuspended(),
            c.ReadyForQuery("I"),
        )
        text = rec.render()
        self.assertIn(
            "   bind: $1=21\n"
            "   execute (at most 1 rows)\n"
            " doubled\n"
            "---------\n"
            "      42\n"
            "(1 row)\n",
            text,
        )

    def test_unnamed_and_quotes(self):
        """The unnamed statement; quotes in parameters are doubled."""
        rec = self.session()
        rec.client(
            c.Parse("", "INSERT INTO t VALUES ($1)"),
            c.Bind("", "", (), (b"O'Brien",), ()),
            c.Execute(),
            c.Sync(),
        )
        rec.server(
            c.ParseComplete(),
            c.BindComplete(),
            c.CommandComplete("INSERT 0 1"),
            c.ReadyForQuery("I"),
        )
        text = rec.render()
        self.assertIn(
            "=> [prepared stmt] INSERT INTO t VALUES ($1)\n"
            "   bind: $1='O''Brien'\n"
            "INSERT 0 1\n",
            text,
        )

    def test_describe_statement_pipelined(self):
        """
        Columns learnt from Describe of the statement, answered after the
        Execute was sent, head the rows.
        """
        rec = self.session()
        rec.client(
            c.Parse("q", "SELECT name FROM users"),
            c.Describe("S", "q"),
            c.Bind("p1", "q", (), (), ()),
            c.Execute("p1", 0),
            c.Sync(),
        )
        rec.server(
            c.ParseComplete(),
            c.ParameterDescription(()),
            c.RowDescription([c.FieldDescription("name")]),
            c.BindComplete(),
            c.DataRow([b"alice"]),
            c.CommandComplete("SELECT 1"),
            c.ReadyForQuery("I"),
        )
        text = rec.render()
        self.assertIn(
            '   bind portal "p1": (no parameters)\n'
            '   execute portal "p1"\n'
            " name\n-------\n alice\n(1 row)\nSELECT 1\n",
            text,
        )

    def test_reused_statement(self):
        """
        Executing a statement prepared earlier shows its text again; times
        are measured from each Execute; results of pipelined Executes name
        the statement and parameters they answer.
        """
        rec = self.session()
        rec.client(
            c.Parse("s1", "UPDATE t SET a = a + 1 WHERE id = $1"),
            c.Sync(),
            mono=10 * MS,
        )
        rec.server(c.ParseComplete(), c.ReadyForQuery("I"), mono=11 * MS)
        rec.client(c.Query("SELECT 1"), mono=20 * MS)
        rec.server(c.CommandComplete("SELECT 0"), c.ReadyForQuery("I"), mono=21 * MS)
        for n, mono in ((7, 30), (8, 40)):
            rec.client(
                c.Bind("", "s1", (), (str(n).encode(),), ()),
                c.Execute(),
                c.Sync(),
                mono=mono * MS,
            )
        rec.server(
            c.BindComplete(),
            c.CommandComplete("UPDATE 1"),
            c.ReadyForQuery("I"),
            mono=45 * MS,
        )
        rec.server(
            c.BindComplete(),
            c.CommandComplete("UPDATE 0"),
            c.ReadyForQuery("I"),
            mono=46 * MS,
        )
        text = rec.render()
        self.assertEqual(
            text.count('=> [prepared stmt "s1"] UPDATE t SET a = a + 1 WHERE id = $1'),
            2,
        )
        self.assertIn(
            "   bind: $1='7'\n"
            "   bind: $1='8'\n"
            '-- result of: [prepared stmt "s1"] UPDATE t SET a = a + 1 WHERE id = $1'
            " ($1='7')\n"
            "UPDATE 1\n"
            "Time: 15.000 ms\n"
            '-- result of: [prepared stmt "s1"] UPDATE t SET a = a + 1 WHERE id = $1'
            " ($1='8')\n"
            "UPDATE 0\n"
            "Time: 6.000 ms\n",
            text,
        )

    def test_error_skips_to_sync(self):
        """After an error in a batch, the rest of it is skipped to the Sync."""
        rec = self.session()
        rec.client(
            c.Parse("", "SELEC 1"),
            c.Bind("", "", (), (), ()),
            c.Execute(),
            c.Sync(),
            mono=10 * MS,
        )
        rec.server(
            c.ErrorResponse.build(
                "ERROR", "42601", 'syntax error at or near "SELEC"', position="1"
            ),
            c.ReadyForQuery("I"),
            mono=12 * MS,
        )
        rec.client(
            c.Parse("", "SELECT 2"),
            c.Bind("", "", (), (), ()),
            c.Execute(),
            c.Sync(),
            mono=20 * MS,
        )
        rec.server(
            c.ParseComplete(),
            c.BindComplete(),
            c.DataRow([b"2"]),
            c.CommandComplete("SELECT 1"),
            c.ReadyForQuery("I"),
            mono=25 * MS,
        )
        text = rec.render()
        self.assertIn(
            'ERROR:  42601: syntax error at or near "SELEC"\n'
            "LINE 1: SELEC 1\n"
            "        ^\n"
            "Time: 2.000 ms\n",
            text,
        )
        self.assertIn("(1 row)\nSELECT 1\nTime: 5.000 ms\n", text)

    def test_portal_suspended(self):
        """Execute with a row limit: rows, then a suspended-portal note."""
        rec = self.session()
        rec.client(
            c.Parse("", "SELECT n FROM big"),
            c.Bind("cur", "", (), (), ()),
            c.Describe("P", "cur"),
            c.Execute("cur", 2),
            c.Sync(),
        )
        rec.server(
            c.ParseComplete(),
            c.BindComplete(),
            c.RowDescription([c.FieldDescription("n")]),
            c.DataRow([b"1"]),
            c.DataRow([b"2"]),
            c.PortalSuspended(),
            c.ReadyForQuery("T"),
        )
        text = rec.render()
        self.assertIn('   execute portal "cur" (at most 2 rows)\n', text)
        self.assertIn(
            "(2 rows)\n-- (portal suspended: more rows available)\nTime:", text
        )


class StartupTests(ReplayTestCase):
    """The untyped startup phase, in its variants."""

    def test_encryption_refused(self):
        """GSSENCRequest refused, then SSLRequest; both shown."""
        rec = Recording()
        rec.client(c.GSSENCRequest().encode())
        rec.data(Direction.GATEWAY_TO_CLIENT, b"N", 0)
        rec.client(c.SSLRequest().encode())
        rec.data(Direction.GATEWAY_TO_CLIENT, b"S", 0)
        rec.client(c.StartupMessage({"user": "u", "database": "d"}).encode())
        rec.server(c.AuthenticationCleartextPassword())
        text = rec.render()
        self.assertIn(
            "-- client: GSSENCRequest\n"
            "-- gateway: encryption refused; the client goes on in clear\n"
            "-- client: SSLRequest\n"
            "-- startup (protocol 3.0): user=u database=d\n"
            "-- server: authentication request: password\n",
            text,
        )
        self.assertNotIn("unparseable", text)

    def test_direct_tls(self):
        """A direct TLS ClientHello is noted, then the decrypted startup."""
        hello = b"\x16\x03\x01\x00\x05" + b"hello"
        rec = Recording(split=False)
        rec.data(Direction.CLIENT_TO_GATEWAY, hello, 0)
        rec.event("tls", negotiation="direct")
        rec.client(c.StartupMessage({"user": "u"}).encode())
        text = rec.render()
        self.assertIn("-- client: direct TLS (ClientHello, 10 bytes)\n", text)
        self.assertIn("-- gateway: TLS started (direct negotiation)\n", text)
        self.assertIn("-- startup (protocol 3.0): user=u\n", text)

    def test_cancel_request(self):
        """A CancelRequest connection; nothing may follow it."""
        rec = Recording()
        rec.client(c.CancelRequest(4242, b"abcd").encode())
        rec.client(b"more")
        text = rec.render()
        self.assertIn("-- client: CancelRequest for backend 4242\n", text)
        self.assertIn(
            "-- (unparseable client bytes from here: bytes after a CancelRequest)\n",
            text,
        )
        self.assertIn("-- (4 client bytes not shown)\n", text)

    def test_extra_startup_parameters(self):
        """Other startup parameters follow the main three; the encoding is used."""
        rec = Recording()
        rec.client(
            c.StartupMessage(
                [("client_encoding", "LATIN1"), ("user", "u"), ("DateStyle", "ISO")],
                version=c.PROTOCOL_3_2,
            ).encode(),
            c.Query("SELECT '\xe9'").encode("latin-1"),
        )
        text = rec.render()
        self.assertIn(
            "-- startup (protocol 3.2): user=u client_encoding=LATIN1 DateStyle=ISO\n",
            text,
        )
        self.assertIn("=> SELECT 'é'\n", text)

    def test_upstream_directions(self):
        """
        The gateway's own login to the target is summarised; its password
        and authentication data never show.
        """
        rec = Recording()
        rec.data(
            Direction.GATEWAY_TO_UPSTREAM,
            c.StartupMessage({"user": "svc", "database": "orders"}).encode(),
            0,
        )
        rec.data(
            Direction.UPSTREAM_TO_GATEWAY,
            c.AuthenticationSASLContinue(b"r=nonce,s=SALTSALT,i=4096").encode(),
            0,
        )
        rec.data(
            Direction.GATEWAY_TO_UPSTREAM,
            c.encode_message(b"p", b"c=biws,r=nonce,p=PROOFPROOF"),
            0,
        )
        rec.data(
            Direction.UPSTREAM_TO_GATEWAY,
            c.AuthenticationOk().encode() + c.ReadyForQuery("I").encode(),
            0,
        )
        text = rec.render()
        self.assertIn(
            "-- gateway→upstream: startup user=svc database=orders\n"
            "-- upstream: authentication: SASL challenge\n"
            "-- gateway→upstream: [password redacted]\n"
            "-- upstream: authentication ok\n"
            "-- upstream: ready for queries\n",
            text,
        )
        self.assertNotIn("SALT", text)
        self.assertNotIn("PROOF", text)


class RobustnessTests(ReplayTestCase):
    """Damaged recordings render as far as they can, without raising."""

    def test_garbage_after_messages(self):
        """Messages before the bad bytes (even in the same chunk) are shown."""
        rec = Recording(split=False).login()
        rec.client(c.Query("SELECT 1"), b"\x00\x00\x00\x00junk", c.Query("SELECT 2"))
        rec.server(c.CommandComplete("SELECT 1"), c.ReadyForQuery("I"))
        text = rec.render()
        self.assertIn("=> SELECT 1\n", text)
        self.assertIn(
            "-- (unparseable client bytes from here: invalid message type b'\\x00')\n",
            text,
        )
        self.assertNotIn("SELECT 2", text)
        self.assertIn("SELECT 1\nTime:", text)
        self.assertIn("client bytes not shown)\n", text)

    def test_truncated(self):
        """A stream that ends inside a message says so; rows so far show."""
        rec = Recording().login()
        rec.client(c.Query("SELECT a FROM t"))
        row = c.DataRow([b"xyz"]).encode()
        rec.server(
            c.RowDescription([c.FieldDescription("a")]), c.DataRow([b"1"]), row[:6]
        )
        text = rec.render()
        self.assertIn(
            " a\n---\n 1\n(1 row)\n-- (no completion recorded for this result)\n", text
        )
        self.assertIn("-- (server stream ends inside a message: 6 bytes)\n", text)

    def test_malformed_message(self):
        """A well-framed message with a bad body is noted; the rest goes on."""
        rec = Recording().login()
        rec.client(c.Query("SELECT a FROM t"))
        rec.server(
            c.RowDescription([c.FieldDescription("a")]),
            c.encode_message(b"D", b"\x00\x01\x00\x00\x00\x09ab"),
            c.DataRow([b"2"]),
            c.CommandComplete("SELECT 2"),
            c.ReadyForQuery("I"),
        )
        text = rec.render()
        self.assertIn("-- (malformed b'D' message from server:", text)
        self.assertIn(" 2\n(2 rows)\nSELECT 2\n", text)

    def test_broken_startup(self):
        """A bad startup packet stops the client stream, not the replay."""
        rec = Recording()
        rec.client(b"\x00\x00\x00\x02xx")
        rec.event("refused", reason="protocol violation", sqlstate="08P01")
        rec.server(c.ErrorResponse.build("FATAL", "08P01", "invalid length"))
        rec.close("protocol violation")
        text = rec.render()
        self.assertIn("-- (unparseable client bytes from here:", text)
        self.assertIn(
            "-- gateway: refused reason=protocol violation sqlstate=08P01\n", text
        )
        self.assertIn("FATAL:  08P01: invalid length\n", text)
        self.assertIn("-- session closed: protocol violation\n", text)

    def test_odd_records(self):
        """Unknown record types and directions and non-JSON events fall back."""
        rec = Recording()
        rec._add(9, Direction.GATEWAY, 0, b"mystery")
        rec._add(RecordType.DATA, 7, 0, b"sideways")
        rec._add(RecordType.EVENT, Direction.GATEWAY, 0, b"not json")
        rec.event("policy", decision="deny", rule="no-drop", statement="DROP TABLE t")
        text = rec.render()
        self.assertIn("type 9", text)
        self.assertIn("direction 7", text)
        self.assertIn("not json", text)
        self.assertIn(
            "-- gateway: policy decision=deny rule=no-drop statement=DROP TABLE t\n",
            text,
        )

    @settings(max_examples=150, deadline=None)
    @given(
        st.lists(
            st.tuples(st.sampled_from([0, 1, 2, 3, 4, 5]), st.binary(max_size=40)),
            max_size=30,
        )
    )
    def test_fuzz(self, pieces):
        """Random bytes in every direction never make the renderer raise."""
        rec = Recording(split=False)
        rec.client(c.StartupMessage({"user": "u"}).encode())
        for direction, data in pieces:
            rec.data(direction, data, 0)
        self.assertNotIn("could not render", rec.render())

    @settings(max_examples=100, deadline=None)
    @given(st.binary(min_size=1, max_size=2000), st.integers(1, 17))
    def test_fuzz_valid_prefix(self, junk, size):
        """Valid traffic followed by junk, in any chunking, never raises."""
        rec = Recording(split=False).login()
        stream = c.Query("SELECT 1").encode() + junk
        for i in range(0, len(stream), size):
            rec.data(Direction.CLIENT_TO_GATEWAY, stream[i : i + size], 0)
            rec.data(Direction.GATEWAY_TO_CLIENT, junk[i : i + size], 0)
        text = rec.render()
        self.assertIn("=> SELECT 1\n", text)
        self.assertNotIn("could not render", text)

    @settings(max_examples=200, deadline=None)
    @given(
        st.lists(
            st.tuples(st.booleans(), st.integers(0, 100), st.booleans()), max_size=40
        ),
        st.integers(1, 9),
    )
    def test_fuzz_messages(self, steps, size):
        """
        Well-formed messages in any order (and some cut short), in any
        chunking, never trip the renderer, and the password never shows.
        """
        rec = Recording(split=False)
        rec.client(c.StartupMessage({"user": "u"}).encode())
        for frontend, index, cut in steps:
            messages = FRONTEND_SAMPLES if frontend else BACKEND_SAMPLES
            data = _encode([messages[index % len(messages)]])
            if cut:
                data = data[: index % (len(data) + 1)]
            direction = (
                Direction.CLIENT_TO_GATEWAY if frontend else Direction.GATEWAY_TO_CLIENT
            )
            for i in range(0, len(data), size):
                rec.data(direction, data[i : i + size], index * MS)
        text = rec.render()
        self.assertNotIn("could not render", text)
        self.assertNotIn("hunter2", text)


FRONTEND_SAMPLES: list[bytes | c.Message] = [
    c.Query("SELECT 1"),
    c.Parse("s", "SELECT $1", (23,)),
    c.Bind("", "s", (1,), (b"\x00\x00\x00\x01",), (1,)),
    c.Bind("p", "s", (), (None,), ()),
    c.Describe("S", "s"),
    c.Describe("P", ""),
    c.Execute("", 0),
    c.Execute("p", 3),
    c.Sync(),
    c.Flush(),
    c.Close("S", "s"),
    c.Close("P", "p"),
    c.CopyData(b"a\tb\n"),
    c.CopyDone(),
    c.CopyFail("x"),
    c.FunctionCall(12, (0,), (b"1",), 0),
    c.Terminate(),
    c.encode_message(b"p", b"hunter2\0"),
]

BACKEND_SAMPLES: list[bytes | c.Message] = [
    c.RowDescription([c.FieldDescription("a", type_oid=23, format=1)]),
    c.DataRow([b"\x00\x00\x00\x05"]),
    c.DataRow([None, b"x"]),
    c.CommandComplete("SELECT 1"),
    c.EmptyQueryResponse(),
    c.ErrorResponse.build("ERROR", "42000", "bad", position="99"),
    c.ErrorResponse.build("FATAL", "57P01", "bye"),
    c.NoticeResponse.build("WARNING", "01000", "w"),
    c.NotificationResponse(1, "c", ""),
    c.ParseComplete(),
    c.BindComplete(),
    c.CloseComplete(),
    c.NoData(),
    c.ParameterDescription((23, 0)),
    c.PortalSuspended(),
    c.ReadyForQuery("I"),
    c.ReadyForQuery("E"),
    c.CopyInResponse(0, (0,)),
    c.CopyOutResponse(1, (1,)),
    c.CopyBothResponse(0, ()),
    c.CopyData(b"1\n"),
    c.CopyDone(),
    c.ParameterStatus("client_encoding", "SJIS"),
    c.FunctionCallResponse(None),
    c.NegotiateProtocolVersion(196608, ("_pq_.x",)),
    c.AuthenticationOk(),
    c.BackendKeyData(1, b"abcd"),
]


class RegistrationTests(ReplayTestCase):
    """The renderer is registered for protocol "postgres"."""

    def test_registered_on_import(self):
        """Importing the module registers render_postgres for "postgres"."""
        # In a fresh interpreter: this process's registry is shared.
        code = (
            "from gatehouse.recording.render import renderer_for\n"
            "from gatehouse.protocols.postgres import replay\n"
            "assert renderer_for('postgres') is replay.render_postgres\n"
        )
        subprocess.run([sys.executable, "-c", code], check=True)

    def test_render_dispatch(self):
        """render() picks the transcript renderer from the META record."""
        if renderer_for("postgres") is render_generic:
            register_renderer("postgres", self.replay.render_postgres)
            self.addCleanup(unregister_renderer, "postgres")
        rec = Recording().login()
        out = io.StringIO()
        render(rec.records, out)
        self.assertTrue(out.getvalue().startswith("-- PostgreSQL session "))


#: The 100 KiB value of L{big_session}: terminal escapes at both ends and
#: in the middle, so that the whole of it must be shown escaped.
BIG_VALUE = "\x1b[2J" + "v" * (50 * 1024) + "\x9b31m" + "w" * (50 * 1024) + "\x07"
BIG_ROWS = 10_000


def big_session() -> Recording:
    """A 10,000-row result (cells with a BEL), then one 100 KiB value."""
    rec = Recording(split=False).login()
    rec.client(c.Query("SELECT n, tag FROM big"))
    rec.server(
        c.RowDescription(
            [c.FieldDescription("n", type_oid=23), c.FieldDescription("tag")]
        ),
        *(c.DataRow([b"%d" % i, b"row\x07%d" % i]) for i in range(BIG_ROWS)),
        c.CommandComplete(f"SELECT {BIG_ROWS}"),
        c.ReadyForQuery("I"),
    )
    rec.client(c.Query("SELECT doc FROM docs"))
    rec.server(
        c.RowDescription([c.FieldDescription("doc")]),
        c.DataRow([BIG_VALUE.encode()]),
        c.CommandComplete("SELECT 1"),
        c.ReadyForQuery("I"),
    )
    rec.close("client-exit")
    return rec


def _raw_controls(text: str) -> list[str]:
    return [ch for ch in text if not (ch.isprintable() or ch in "\n\t")]


ESCAPED_BIG = "\\x1b[2J" + "v" * (50 * 1024) + "\\x9b31m" + "w" * (50 * 1024) + "\\x07"


class FullReplayTests(ReplayTestCase):
    """
    The default replay abbreviates and says where and by how much; a full
    one (C{gatehouse replay --full}) shows every row and every value; both
    escape what would drive a terminal.
    """

    def transcript(self, full: bool) -> str:
        out = io.StringIO()
        render(big_session().records, out, full=full)
        return out.getvalue()

    def test_default_says_where_and_how_much(self):
        text = self.transcript(full=False)
        self.assertEqual(_raw_controls(text), [])
        shown = self.replay.MAX_ROWS
        self.assertIn(f" {shown - 1} | row\\x07{shown - 1}\n", text)
        self.assertNotIn(f" {shown} | row\\x07{shown}\n", text)
        self.assertIn(
            f"… {BIG_ROWS - shown:,} more rows (use --full)\n(10000 rows)\n", text
        )
        cut = len(ESCAPED_BIG) - self.replay.MAX_VALUE
        self.assertIn(
            f" {ESCAPED_BIG[: self.replay.MAX_VALUE]}… ({cut:,} more characters;"
            " use --full)\n",
            text,
        )
        self.assertNotIn("w" * 1024, text)

    def test_full_shows_everything(self):
        text = self.transcript(full=True)
        self.assertEqual(_raw_controls(text), [])
        self.assertNotIn("use --full", text)
        self.assertNotIn("more rows", text)
        lines = text.split("\n")
        rows = [line for line in lines if "| row\\x07" in line]
        self.assertEqual(
            [row.split("|")[0].strip() for row in rows],
            [str(i) for i in range(BIG_ROWS)],
        )
        self.assertTrue(rows[-1].endswith(f"| row\\x07{BIG_ROWS - 1}"), rows[-1])
        self.assertIn(f" {ESCAPED_BIG}\n(1 row)\n", text)

    def test_cli_full(self):
        """C{gatehouse replay --full} over real segment files, and without."""
        from gatehouse.cli import main
        from tests.recording.helpers import Rec, make_signing, write_session

        root = os.path.abspath(self.mktemp())
        records = [Rec(r.payload, r.type, r.direction) for r in big_session().records]
        sid = str(write_session(root, make_signing(), records).session_id)
        for flag, expect, absent in (
            ([], "more rows (use --full)", ESCAPED_BIG),
            (["--full"], ESCAPED_BIG, "use --full"),
        ):
            out, err = io.StringIO(), io.StringIO()
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                code = main(["replay", sid, "--recordings", root, *flag])
            text = out.getvalue()
            self.assertEqual((code, err.getvalue()), (0, ""))
            self.assertEqual(_raw_controls(text), [])
            self.assertIn(expect, text)
            self.assertNotIn(absent, text)
            self.assertIn("(1 row)\nSELECT 1\n", text)
