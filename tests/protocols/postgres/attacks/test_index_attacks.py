"""
The audit index against hostile bytes.

Each attack opens a session with raw protocol messages carrying what an
attacker controls (statement bytes that are not valid in the client's
encoding, NUL, terminal escapes, a startup packet whose database or user
name is not UTF-8, an application_name with control characters, identity
claims with escapes, lone surrogates or another identity's subject) while
a well-behaved witness session runs beside it.  Judged on the index and on
what auditors' tools print: every statement of both sessions is in the
index (the hostile one as the gateway read it, exactly once unescaped),
no row was lost or replaced, and neither C{gatehouse sessions} nor
C{gatehouse replay} writes a raw control character.
"""

from __future__ import annotations

import contextlib
import io
import json
import struct
import threading
import time
import uuid

import psycopg

from gatehouse.cli import main as gatehouse_main
from gatehouse.protocols.postgres import codec
from gatehouse.recording.format import RecordType
from gatehouse.recording.index import (
    commands_for,
    query_sessions,
    unescape_index_text,
)
from gatehouse.recording.reader import read_records
from tests.protocols.postgres.attacks.corpus import Attack, add_cases
from tests.protocols.postgres.test_e2e import GatewayTestCase, RawClient

ALLOW_ALL = {"policy": {"default": "allow", "unparseable": "allow", "opaque": "allow"}}


def _message(kind: bytes, body: bytes) -> bytes:
    return kind + struct.pack("!I", len(body) + 4) + body


def query(sql: bytes) -> bytes:
    """A simple-protocol Query carrying C{sql} as raw bytes."""
    return _message(b"Q", sql + b"\0")


def extended(sql: bytes) -> bytes:
    """Parse, Bind, Execute, Sync of C{sql} (unnamed), as raw bytes."""
    return (
        _message(b"P", b"\0" + sql + b"\0" + struct.pack("!H", 0))
        + _message(b"B", b"\0\0" + struct.pack("!HHH", 0, 0, 0))
        + _message(b"E", b"\0" + struct.pack("!I", 0))
        + _message(b"S", b"")
    )


def startup(parameters: dict[bytes, bytes]) -> bytes:
    """A protocol 3.0 startup packet with raw parameter bytes."""
    body = struct.pack("!I", 196608)
    for key, value in parameters.items():
        body += key + b"\0" + value + b"\0"
    body += b"\0"
    return struct.pack("!I", len(body) + 4) + body


def whole(*statements: str) -> list[str]:
    """
    The index entry for a Query the gateway cannot parse (bytes not valid
    in the client's encoding): one command, the whole text.
    """
    return ["; ".join(statements)]


def _raw_controls(text: str) -> list[str]:
    return [ch for ch in text if not ch.isprintable() and ch != "\n"]


# Each payload: what the hostile session sends.
#   database, user, application_name: raw startup bytes
#   claims: extra token claims (name, subject)
#   messages: raw frontend messages after login
#   statements: the texts the index must hold for them, as the gateway read
#     them (str, surrogateescape for undecodable bytes), markers included
#   login: False when the gateway refuses at startup (no statements)
CASES = [
    Attack(
        "invalid_utf8_statement",
        {
            "messages": [
                query(b"SELECT 'good-1'; SELECT 'caf\xe9\xff'; SELECT 'good-2'")
            ],
            "statements": whole(
                "SELECT 'good-1'", "SELECT 'caf\udce9\udcff'", "SELECT 'good-2'"
            ),
        },
        "bytes that are not UTF-8 in a UTF-8 session (PostgreSQL refuses them)",
    ),
    Attack(
        "encoded_surrogate",
        {
            "messages": [
                query(b"SELECT 'good-1'; SELECT '\xed\xa0\x80'; SELECT 'good-2'")
            ],
            "statements": whole(
                "SELECT 'good-1'", "SELECT '\udced\udca0\udc80'", "SELECT 'good-2'"
            ),
        },
        "UTF-8 encoding of a lone surrogate (invalid UTF-8, surrogateescaped)",
    ),
    Attack(
        "latin1_session",
        {
            "client_encoding": b"LATIN1",
            "messages": [
                query(b"SELECT 'good-1'; SELECT 'caf\xe9 \xff'; SELECT 'good-2'")
            ],
            "statements": ["SELECT 'good-1'", "SELECT 'café ÿ'", "SELECT 'good-2'"],
        },
        "LATIN1 client: stored as the server reads it, not mangled",
    ),
    Attack(
        "nul_in_query",
        {
            "messages": [
                query(b"SELECT 'good' AS g1"),
                query(b"SELECT 1\0; DROP TABLE victims"),
                query(b"SELECT 'good' AS g2"),
            ],
            # The gateway refuses the message (a protocol violation) and
            # ends the session: what came before it is indexed.
            "statements": ["SELECT 'good' AS g1"],
            "close_reason": "protocol violation",
        },
        "a NUL inside the Query string",
    ),
    Attack(
        "terminal_escapes_in_statement",
        {
            "messages": [
                query(
                    b"SELECT 'good-1'; "
                    b"SELECT '\x1b[2J\x1b[1;1H\rfake\x08\x9b'; SELECT 'good-2'"
                )
            ],
            # 0x9b alone is not UTF-8: the gateway cannot parse the text and
            # indexes it whole.
            "statements": whole(
                "SELECT 'good-1'",
                "SELECT '\x1b[2J\x1b[1;1H\rfake\x08\udc9b'",
                "SELECT 'good-2'",
            ),
        },
        "ANSI escapes, CR, BS in a statement (valid text: stored exactly)",
    ),
    Attack(
        "newline_and_bidi_in_statement",
        {
            "messages": [
                query(
                    "SELECT 'good-1'; "
                    "SELECT '\n0192 fake row\u202e\u2028'; SELECT 'good-2'".encode()
                )
            ],
            "statements": [
                "SELECT 'good-1'",
                "SELECT '\n0192 fake row\u202e\u2028'",
                "SELECT 'good-2'",
            ],
        },
        "forged lines and a right-to-left override",
    ),
    Attack(
        "invalid_bytes_extended",
        {
            "messages": [
                extended(b"SELECT 'good' AS g1"),
                extended(b"SELECT '\xc3\x28\xa0\xa1'"),
                extended(b"SELECT 'good' AS g2"),
            ],
            "statements": [
                "SELECT 'good' AS g1",
                "SELECT '\udcc3(\udca0\udca1'",
                "SELECT 'good' AS g2",
            ],
        },
        "invalid UTF-8 in a Parse message (extended protocol)",
    ),
    Attack(
        "invalid_utf8_dbname",
        {"database": b"app\xff\xfe", "login": False},
        "a database name that is not UTF-8 (the target name)",
    ),
    Attack(
        "escapes_in_dbname",
        {"database": b"app\x1b[2J\r\nfake", "login": False},
        "terminal escapes and a newline in the database name",
    ),
    Attack(
        "invalid_utf8_user_as_target",
        {"database": None, "user": b"\xc0\xafroot\x1b[2J", "login": False},
        "no database: the user name (not UTF-8) selects the target",
    ),
    Attack(
        "application_name_controls",
        {
            "application_name": b"psql\x1b]0;owned\x07\r\n\xff",
            "messages": [query(b"SELECT 'good-1'; SELECT 'good-2'")],
            "statements": ["SELECT 'good-1'", "SELECT 'good-2'"],
        },
        "application_name with control characters and a bad byte",
    ),
    Attack(
        "name_claim_is_other_subject",
        {
            "claims": {"preferred_username": "witness-subject"},
            "messages": [query(b"SELECT 'good-1'; SELECT 'good-2'")],
            "statements": ["SELECT 'good-1'", "SELECT 'good-2'"],
        },
        "a token whose name claim is another identity's subject",
    ),
    Attack(
        "name_claim_escapes",
        {
            "claims": {"preferred_username": "root\x1b[8m\r\nADMIN\u202e"},
            "messages": [query(b"SELECT 'good-1'; SELECT 'good-2'")],
            "statements": ["SELECT 'good-1'", "SELECT 'good-2'"],
        },
        "a display name with escapes and newlines",
    ),
    Attack(
        "lone_surrogate_claims",
        {
            "subject": "mallory-\ud800",
            "claims": {"preferred_username": "\udcff\x00name"},
            "messages": [query(b"SELECT 'good-1'; SELECT 'good-2'")],
            "statements": ["SELECT 'good-1'", "SELECT 'good-2'"],
        },
        "lone surrogates (JSON \\ud800 escapes) and NUL in identity claims",
    ),
    Attack(
        "subject_with_controls",
        {
            "subject": "svc\r\x1b[1A\x08",
            "messages": [query(b"SELECT 'good-1'; SELECT 'good-2'")],
            "statements": ["SELECT 'good-1'", "SELECT 'good-2'"],
        },
        "a subject with CR, a cursor-up escape and BS",
    ),
    Attack(
        "hostile_group_names",
        {
            "groups": ("dba", "x\udcff\x1b[31m\x00"),
            "messages": [query(b"SELECT 'good-1'; SELECT 'bad \xff'; SELECT 'good-2'")],
            "statements": whole(
                "SELECT 'good-1'", "SELECT 'bad \udcff'", "SELECT 'good-2'"
            ),
        },
        "group names with surrogates, escapes and NUL, plus a bad statement",
    ),
    Attack(
        "many_bad_statements_one_batch",
        {
            "messages": [
                query(
                    b"; ".join(
                        b"SELECT '%d \xfe'" % i if i % 2 else b"SELECT 'ok %d'" % i
                        for i in range(40)
                    )
                )
            ],
            "statements": whole(
                *(
                    f"SELECT '{i} \udcfe'" if i % 2 else f"SELECT 'ok {i}'"
                    for i in range(40)
                )
            ),
        },
        "forty statements, every other one with a bad byte, in one batch",
    ),
]


class IndexAttackTests(GatewayTestCase):
    """The index keeps every session's rows, whatever one client sends."""

    def make_gateway(self, base: str) -> object:
        from tests.protocols.postgres.harness import Gateway

        return Gateway(base, self.cluster, extra_config=ALLOW_ALL)

    def index_path(self) -> str:
        return self.gateway.path("recordings", "index.sqlite3")

    def witness(self, marker: str, ready: threading.Event, done: threading.Event):
        """A well-behaved session running statements beside the attack."""
        conn = psycopg.connect(
            self.gateway.conninfo(
                password=self.gateway.token(subject="witness-subject")
            ),
            autocommit=True,
        )
        try:
            ready.set()
            n = 0
            # Distinct aliases: the index holds each statement shape once.
            while (not done.is_set() or n < 5) and n < 400:
                conn.execute(f"SELECT '{marker}' AS w{n}")
                n += 1
                time.sleep(0.002)
            self.witness_count = n
        finally:
            conn.close()

    def run_attack(self, attack: Attack) -> None:
        p = attack.payload
        start = time.time()
        marker = f"witness-{uuid.uuid4().hex[:8]}"
        ready, done = threading.Event(), threading.Event()
        thread = threading.Thread(target=self.witness, args=(marker, ready, done))
        thread.start()
        try:
            ready.wait(10)
            self.hostile_session(p)
        finally:
            done.set()
            thread.join(30)
        sessions = self.sessions_after(start, 2)
        witness = [s for s in sessions if s.subject == "witness-subject"]
        hostile = [s for s in sessions if s.subject != "witness-subject"]
        self.assertEqual((len(witness), len(hostile)), (1, 1), sessions)
        self.check_witness(witness[0], marker)
        self.check_hostile(hostile[0], p)
        self.check_tools(hostile[0])

    def hostile_session(self, p: dict) -> None:
        client = RawClient(self.gateway.port, self.gateway.ca_cert)
        self.addCleanup(client.close)
        params = {b"user": p.get("user", b"mallory")}
        if p.get("database", b"app") is not None:
            params[b"database"] = p.get("database", b"app")
        if "application_name" in p:
            params[b"application_name"] = p["application_name"]
        if "client_encoding" in p:
            params[b"client_encoding"] = p["client_encoding"]
        client.send(startup(params))
        client.expect(b"R")
        claims = dict(p.get("claims", {}))
        token = self.gateway.token(
            subject=p.get("subject", f"mallory-{uuid.uuid4().hex[:6]}"),
            groups=p.get("groups", ("dba",)),
            **claims,
        )
        client.send(codec.PasswordMessage(token).encode())
        if p.get("login", True):
            got = b""
            while not got.endswith(codec.ReadyForQuery("I").encode()):
                chunk = client.sock.recv(65536)
                self.assertTrue(chunk, f"closed during login: {got!r}")
                got += chunk
            for message in p["messages"]:
                client.send(message)
            client.send(_message(b"X", b""))
        # The gateway ends the session on Terminate (or its refusal); its
        # TLS close may not reach this socket as EOF at once.
        client.sock.settimeout(1.5)
        client.read_all()
        client.close()

    def sessions_after(self, start: float, count: int) -> list:
        deadline = time.monotonic() + 20
        rows: list = []
        while time.monotonic() < deadline:
            rows = [
                r
                for r in query_sessions(self.index_path(), limit=None)
                if r.started >= start
            ]
            if len(rows) >= count and all(r.closed and r.final for r in rows):
                return rows
            time.sleep(0.05)
        self.fail(
            f"sessions did not close in the index: {rows}\n{self.gateway.log()[-3000:]}"
        )

    def texts(self, session_id: str) -> list[str]:
        return [
            unescape_index_text(c.text) if "text" in c.escaped else c.text
            for c in commands_for(self.index_path(), session_id)
        ]

    def check_witness(self, row: object, marker: str) -> None:
        """Every statement of the witness is indexed, in order."""
        self.assertEqual(
            self.texts(row.id),
            [f"SELECT '{marker}' AS w{n}" for n in range(self.witness_count)],
        )
        self.assertEqual(row.index_problems, "")

    def check_hostile(self, row: object, p: dict) -> None:
        """The hostile session's statements are all there, as read."""
        self.assertEqual(row.index_problems, "")
        texts = self.texts(row.id)
        if not p.get("login", True):
            self.assertEqual(texts, [])
            target = row.target
            if "target" in row.escaped:
                target = unescape_index_text(target)
            raw = p["database"] if p.get("database") is not None else p["user"]
            self.assertEqual(target, raw.decode("utf-8", "surrogateescape"))
            return
        self.assertEqual(texts, p["statements"], row.close_reason)
        if "close_reason" in p:
            self.assertIn(p["close_reason"], row.close_reason)
        subject = row.subject
        if "subject" in row.escaped:
            subject = unescape_index_text(subject)
        if "subject" in p:
            self.assertEqual(subject, p["subject"])
        name = p.get("claims", {}).get("preferred_username")
        if name is not None:
            shown = row.display_name
            if "display_name" in row.escaped:
                shown = unescape_index_text(shown)
            self.assertEqual(shown, name)
        if "groups" in p:
            self.assertEqual(row.groups, tuple(p["groups"]))

    def cli(self, *argv: str) -> str:
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            self.assertEqual(gatehouse_main(list(argv)), 0)
        return out.getvalue()

    def check_tools(self, row: object) -> None:
        """
        gatehouse sessions: one line per session, the subject shown, no raw
        control character; --identity with the exact subject finds it;
        gatehouse replay of the session: no raw control character either.
        """
        out = self.cli("sessions", "--index", self.index_path(), "--limit", "0")
        self.assertEqual(_raw_controls(out), [])
        lines = out.splitlines()
        rows = query_sessions(self.index_path(), limit=None)
        self.assertEqual(len(lines), 1 + len(rows))
        self.assertEqual(sum(line.startswith(row.id) for line in lines), 1)
        subject = (
            unescape_index_text(row.subject)
            if "subject" in row.escaped
            else row.subject
        )
        found = self.cli(
            "sessions", "--index", self.index_path(), "--identity", subject
        )
        self.assertEqual([line.split()[0] for line in found.splitlines()[1:]], [row.id])
        replay = self.cli(
            "replay", row.id, "--recordings", self.gateway.path("recordings")
        )
        self.assertEqual(_raw_controls(replay), [])
        # The recording, the evidence, holds no index failure either.
        events = [
            json.loads(r.payload)
            for r in read_records(row.directory)
            if r.type == RecordType.EVENT
        ]
        self.assertNotIn("index-write-failed", [e.get("event") for e in events])


add_cases(IndexAttackTests, CASES)
