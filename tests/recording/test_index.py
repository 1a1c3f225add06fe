"""
Tests for L{gatehouse.recording.index}: the daemon's batched writer, driven
by the real reactor and its own thread, and the auditors' queries.
"""

from __future__ import annotations

import json
import os
import sqlite3

import attrs
from twisted.internet import reactor
from twisted.internet.defer import gatherResults, inlineCallbacks
from twisted.logger import globalLogPublisher
from twisted.trial.unittest import TestCase

from gatehouse.recording import index as index_module
from gatehouse.recording.format import RecordType
from gatehouse.recording.index import (
    CommandRow,
    IndexUnavailable,
    SessionIndex,
    SessionRow,
    approvals_for,
    commands_for,
    facts_for,
    get_session,
    index_text,
    query_sessions,
    unescape_index_text,
)

T0 = 1_790_000_000.0


def session(session_id: str, **fields: object) -> SessionRow:
    """A session row with plausible defaults."""
    values: dict[str, object] = {
        "id": session_id,
        "gateway_id": "gw-1",
        "protocol": "postgres",
        "target": "orders-db",
        "listener": "pg",
        "subject": "svc-ci",
        "display_name": "CI pipeline",
        "issuer": "https://idp.example",
        "groups": ("ci", "deployers"),
        "client_address": "10.0.0.5:51000",
        "started": T0,
        "directory": f"/rec/2026-09-21/{session_id}",
    }
    values.update(fields)
    return SessionRow(**values)


def command(session_id: str, seq: int, text: str, **fields: object) -> CommandRow:
    """A command row with plausible defaults."""
    values: dict[str, object] = {
        "session_id": session_id,
        "seq": seq,
        "at": T0 + seq,
        "kind": "SelectStmt",
        "text": text,
        "decision": "allow",
        "objects": (),
    }
    values.update(fields)
    return CommandRow(**values)


@attrs.frozen
class FakeIdentity:
    """What L{SessionIndex.session_identified} reads of an identity."""

    subject: str
    name: str
    issuer: str
    groups: tuple[str, ...]


class IndexTestCase(TestCase):
    """Runs a L{SessionIndex} on a fresh file, stopped after each test."""

    def make_index(self, **options: object) -> SessionIndex:
        directory = self.mktemp()
        os.makedirs(directory)
        self.path = os.path.join(directory, "index.sqlite3")
        idx = SessionIndex(self.path, reactor, **options)
        self.addCleanup(idx.stop)
        return idx


class SessionIndexTests(IndexTestCase):
    """The daemon side: queued, batched, ordered, never raising."""

    @inlineCallbacks
    def test_creates_schema(self):
        """
        start() creates the file in WAL mode with the current schema
        version, and opening it again is harmless.
        """
        idx = self.make_index()
        yield idx.start()
        yield idx.stop()
        again = SessionIndex(self.path, reactor)
        yield again.start()
        yield again.stop()
        conn = sqlite3.connect(self.path)
        self.addCleanup(conn.close)
        self.assertEqual(
            conn.execute("PRAGMA user_version").fetchone()[0],
            index_module.SCHEMA_VERSION,
        )
        self.assertEqual(conn.execute("PRAGMA journal_mode").fetchone()[0], "wal")

    @inlineCallbacks
    def test_session_lifecycle(self):
        """
        Opening, sealing and closing a session fire True once committed and
        leave the whole story in the index.
        """
        idx = self.make_index()
        yield idx.start()
        sid = "0192f1a0-0000-7000-8000-000000000001"
        results = yield gatherResults(
            [
                idx.session_opened(session(sid)),
                idx.segment_sealed(sid, 0, b"\x01" * 32, False, 10),
                idx.segment_sealed(sid, 1, b"\x02" * 32, True, 5),
                idx.session_closed(
                    sid,
                    T0 + 42.5,
                    "client-exit",
                    bytes_from_client=100,
                    bytes_to_client=2000,
                    bytes_to_upstream=90,
                    bytes_from_upstream=2100,
                ),
            ]
        )
        self.assertEqual(results, [True] * 4)
        row = get_session(self.path, sid)
        self.assertEqual(
            row,
            attrs.evolve(
                session(sid),
                ended=T0 + 42.5,
                close_reason="client-exit",
                segments=2,
                last_link=b"\x02" * 32,
                final=True,
                records=15,
                bytes_from_client=100,
                bytes_to_client=2000,
                bytes_to_upstream=90,
                bytes_from_upstream=2100,
            ),
        )
        self.assertTrue(row.closed)
        self.assertEqual(row.identity, "svc-ci (CI pipeline)")

    @inlineCallbacks
    def test_identified_later(self):
        """
        A session opened before the client authenticated gets its identity
        and target with session_identified; a None target keeps the old one.
        """
        idx = self.make_index()
        yield idx.start()
        a = "0192f1a0-0000-7000-8000-00000000000a"
        b = "0192f1a0-0000-7000-8000-00000000000b"
        yield gatherResults(
            [
                idx.session_opened(
                    session(
                        a,
                        subject=None,
                        display_name=None,
                        issuer=None,
                        groups=None,
                        target=None,
                    )
                ),
                idx.session_opened(session(b, target="kube")),
                idx.session_identified(
                    a, FakeIdentity("u-1", "Ada", "https://idp", ("dba",)), "orders-db"
                ),
                idx.session_identified(
                    b, FakeIdentity("u-2", "Bob", "https://idp", ()), None
                ),
            ]
        )
        row = get_session(self.path, a)
        self.assertEqual(
            (row.subject, row.display_name, row.issuer, row.groups, row.target),
            ("u-1", "Ada", "https://idp", ("dba",), "orders-db"),
        )
        self.assertEqual(get_session(self.path, b).target, "kube")

    @inlineCallbacks
    def test_queued_before_start(self):
        """Reports made before start() are written once the index opens."""
        idx = self.make_index()
        sid = "0192f1a0-0000-7000-8000-000000000002"
        d = idx.session_opened(session(sid))
        self.assertNoResult(d)
        yield idx.start()
        self.assertTrue((yield d))
        self.assertIsNotNone(get_session(self.path, sid))

    @inlineCallbacks
    def test_batches(self):
        """
        Reports made in one turn of the reactor share one transaction; with
        a batch limit they are cut into batches of that size, in order.
        """
        batches = []
        real = index_module._write_batch

        def spy(conn, writes):
            batches.append(len(writes))
            return real(conn, writes)

        self.patch(index_module, "_write_batch", spy)
        idx = self.make_index(max_batch=10)
        yield idx.start()
        sid = "0192f1a0-0000-7000-8000-000000000003"
        ds = [idx.session_opened(session(sid))]
        ds += [idx.command_seen(command(sid, i, f"select {i}")) for i in range(34)]
        self.assertEqual((yield gatherResults(ds)), [True] * 35)
        self.assertEqual(batches, [10, 10, 10, 5])
        self.assertEqual(
            [c.text for c in commands_for(self.path, sid)],
            [f"select {i}" for i in range(34)],
        )

        del batches[:]
        ds = [idx.command_seen(command(sid, 100 + i, "x")) for i in range(7)]
        yield gatherResults(ds)
        self.assertEqual(batches, [7])

    @inlineCallbacks
    def test_order_per_session(self):
        """
        Fire-and-forget reports for interleaved sessions are applied in the
        order they were made: every seal counts, none is taken for a repeat.
        """
        idx = self.make_index(max_batch=7)
        yield idx.start()
        sids = [f"0192f1a0-0000-7000-8000-00000000010{n}" for n in range(3)]
        ds = [idx.session_opened(session(s)) for s in sids]
        for segment in range(40):
            for n, s in enumerate(sids):
                link = bytes([n, segment]) * 16
                ds.append(idx.segment_sealed(s, segment, link, segment == 39, n + 1))
                ds.append(idx.command_seen(command(s, segment, f"q{segment}")))
        ds += [idx.session_closed(s, T0 + 60, "eof") for s in sids]
        self.assertEqual(set((yield gatherResults(ds))), {True})
        for n, s in enumerate(sids):
            row = get_session(self.path, s)
            self.assertEqual(
                (row.segments, row.records, row.final, row.last_link, row.ended),
                (40, 40 * (n + 1), True, bytes([n, 39]) * 16, T0 + 60),
            )
            self.assertEqual(
                [c.text for c in commands_for(self.path, s)],
                [f"q{i}" for i in range(40)],
            )

    @inlineCallbacks
    def test_repeated_seal_ignored(self):
        """
        A seal reported twice, or an older one reported late, changes
        nothing; the write still commits but the oddity is logged.
        """
        events = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        idx = self.make_index()
        yield idx.start()
        sid = "0192f1a0-0000-7000-8000-000000000004"
        yield gatherResults(
            [
                idx.session_opened(session(sid)),
                idx.segment_sealed(sid, 0, b"a" * 32, False, 3),
                idx.segment_sealed(sid, 1, b"b" * 32, False, 4),
                idx.segment_sealed(sid, 1, b"b" * 32, False, 4),
                idx.segment_sealed(sid, 0, b"a" * 32, False, 3),
            ]
        )
        row = get_session(self.path, sid)
        self.assertEqual((row.segments, row.records, row.last_link), (2, 7, b"b" * 32))
        self.assertTrue(
            any(
                e.get("count") == 2 and "problems" in e.get("log_format", "")
                for e in events
            )
        )

    @inlineCallbacks
    def test_bad_write_isolated(self):
        """
        A write that fails (a duplicate session id) fires False, is logged,
        and does not take the rest of its batch with it.
        """
        events = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        idx = self.make_index()
        yield idx.start()
        a = "0192f1a0-0000-7000-8000-000000000005"
        b = "0192f1a0-0000-7000-8000-000000000006"
        results = yield gatherResults(
            [
                idx.session_opened(session(a)),
                idx.session_opened(session(a)),
                idx.session_opened(session(b)),
                idx.command_seen(command(b, 1, "select 1")),
            ]
        )
        self.assertEqual(results, [True, False, True, True])
        self.assertEqual(len(commands_for(self.path, b)), 1)
        self.assertTrue(
            any(f"session {a} opened" in str(e.get("first")) for e in events)
        )

    @inlineCallbacks
    def test_stop_flushes(self):
        """stop() commits what was queued, then refuses new reports."""
        idx = self.make_index()
        yield idx.start()
        sid = "0192f1a0-0000-7000-8000-000000000007"
        ds = [idx.session_opened(session(sid))]
        ds += [idx.command_seen(command(sid, i, "q")) for i in range(50)]
        yield idx.stop()
        self.assertEqual(set((yield gatherResults(ds))), {True})
        self.assertEqual(len(commands_for(self.path, sid)), 50)
        late = idx.session_closed(sid, T0 + 1, "late")
        self.assertFalse(self.successResultOf(late))
        self.assertIsNone(get_session(self.path, sid).ended)

    @inlineCallbacks
    def test_stop_while_starting(self):
        """stop() right after start() waits for the open, then closes."""
        idx = self.make_index()
        sid = "0192f1a0-0000-7000-8000-000000000008"
        d = idx.session_opened(session(sid))
        started = idx.start()
        yield idx.stop()
        yield started
        self.assertTrue((yield d))
        self.assertFalse(idx._pool.started)

    @inlineCallbacks
    def test_start_fails(self):
        """
        An index that cannot be opened fails start(); queued reports fire
        False and stop() still works.
        """
        blocker = self.mktemp()
        with open(blocker, "w") as f:
            f.write("a file, not a directory")
        idx = SessionIndex(os.path.join(blocker, "index.sqlite3"), reactor)
        d = idx.session_opened(session("0192f1a0-0000-7000-8000-000000000009"))
        yield self.assertFailure(idx.start(), OSError)
        yield idx.stop()
        self.assertFalse((yield d))

    @inlineCallbacks
    def test_newer_schema_refused(self):
        """An index from a newer gatehouse is not touched."""
        directory = self.mktemp()
        os.makedirs(directory)
        path = os.path.join(directory, "index.sqlite3")
        conn = sqlite3.connect(path)
        conn.execute("PRAGMA user_version = 99")
        conn.close()
        idx = SessionIndex(path, reactor)
        failure = yield self.assertFailure(idx.start(), sqlite3.DatabaseError)
        self.assertIn("newer", str(failure))
        yield idx.stop()

    def test_queue_bounded(self):
        """Past max_queued, reports are dropped (False at once) and logged."""
        events = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        idx = self.make_index(max_queued=2)
        sid = "0192f1a0-0000-7000-8000-000000000010"
        first = [idx.command_seen(command(sid, i, "q")) for i in range(2)]
        dropped = idx.command_seen(command(sid, 2, "q"))
        self.assertFalse(self.successResultOf(dropped))
        for d in first:
            self.assertNoResult(d)
        self.assertTrue(any("queue full" in e.get("log_format", "") for e in events))


@attrs.frozen
class FakeApproval:
    """What L{SessionIndex.approval_changed} reads of an approval request."""

    id: str
    session_id: str
    state: str
    rule: str
    requester: FakeIdentity
    created: float
    expires: float
    reason: str | None

    def as_json(self) -> dict:
        return {"id": self.id, "reason": self.reason, "rule": self.rule}


#: Values a hostile client can put in what the index stores: undecodable
#: bytes (surrogateescape), a lone surrogate from a JSON claim, NUL,
#: terminal escapes, newlines, a backslash next to what looks like an escape.
HOSTILE = (
    "select '\udcff\udcfe' /* latin1 bytes */",
    "a\ud800b",
    "select 1\x00; drop table users",
    "\x1b[2J\x1b[1;1Hall clear\r\nrm -rf \x08",
    "C:\\x00 not a nul \\xff not a byte",
    "é ✓ 𝄞",
)


class HostileTextTests(IndexTestCase):
    """
    No value a client controls makes the index drop rows: text SQLite
    cannot hold is escaped reversibly, and a write that fails anyway is
    replaced by a placeholder without taking its batch with it.
    """

    def test_escape_round_trip(self):
        """
        index_text leaves storable text alone and escapes the rest so that
        unescape_index_text gives back the exact string.
        """
        for value in HOSTILE:
            stored, escaped = index_text(value)
            stored.encode("utf-8")  # storable
            self.assertNotIn("\x00", stored)
            self.assertEqual(unescape_index_text(stored) if escaped else stored, value)
        self.assertEqual(index_text("\x1b[31m\\x41"), ("\x1b[31m\\x41", False))
        self.assertEqual(index_text("a\\xff\udcff\x00"), ("a\\\\xff\\xff\\x00", True))

    @inlineCallbacks
    def test_every_write_path(self):
        """
        Hostile text in every field of every write (open, identify, upstream
        role, command, approval, close) commits in one batch with a
        well-behaved session's rows, and reads back exactly once unescaped.
        """
        idx = self.make_index()
        failures = []
        idx.observe_failures(lambda *a: failures.append(a))
        yield idx.start()
        good = "0192f1a0-0000-7000-8000-0000000000e1"
        bad = "0192f1a0-0000-7000-8000-0000000000e2"
        ds = [idx.session_opened(session(good))]
        ds.append(idx.command_seen(command(good, 1, "select 'before'")))
        for n, value in enumerate(HOSTILE):
            sid = f"{bad[:-2]}{n:02x}"
            ds += [
                idx.session_opened(
                    session(
                        sid,
                        target=value,
                        subject=value,
                        display_name=value,
                        issuer=value,
                        groups=(value,),
                        client_address=value,
                        listener=value,
                    )
                ),
                idx.session_identified(
                    sid, FakeIdentity(value, value, value, (value,)), value
                ),
                idx.session_upstream(sid, value),
                idx.command_seen(
                    command(sid, 3, value, kind=value, decision=value, objects=(value,))
                ),
                idx.approval_changed(
                    FakeApproval(
                        f"apr-{n}",
                        sid,
                        value,
                        value,
                        FakeIdentity(value, "", "", ()),
                        T0,
                        T0 + 1,
                        value,
                    )
                ),
                idx.session_closed(sid, T0 + 5, value, masked_values=3),
            ]
        ds.append(idx.command_seen(command(good, 2, "select 'after'")))
        ds.append(idx.session_closed(good, T0 + 9, "eof"))
        results = yield gatherResults(ds)
        self.assertEqual(set(results), {True})
        self.assertEqual(failures, [])
        self.assertEqual(
            [c.text for c in commands_for(self.path, good)],
            ["select 'before'", "select 'after'"],
        )
        for n, value in enumerate(HOSTILE):
            sid = f"{bad[:-2]}{n:02x}"
            row = get_session(self.path, sid)

            def read(field, stored, row=row):
                return unescape_index_text(stored) if field in row.escaped else stored

            for field in ("target", "subject", "display_name", "issuer"):
                self.assertEqual(read(field, getattr(row, field)), value, field)
            self.assertEqual(row.groups, (value,))
            self.assertEqual(read("upstream_role", row.upstream_role), value)
            self.assertEqual(read("close_reason", row.close_reason), value)
            self.assertEqual(read("client_address", row.client_address), value)
            self.assertEqual(read("listener", row.listener), value)
            self.assertEqual(row.masked_values, 3)
            self.assertEqual(row.index_problems, "")
            (cmd,) = commands_for(self.path, sid)
            for field in ("text", "kind", "decision"):
                stored = getattr(cmd, field)
                got = unescape_index_text(stored) if field in cmd.escaped else stored
                self.assertEqual(got, value, field)
            self.assertEqual(cmd.objects, (value,))
            (approval,) = approvals_for(self.path, sid)
            self.assertEqual(approval["reason"], value)
            self.assertEqual(query_sessions(self.path, identity=value)[0].id, sid)
        self.assertEqual(
            [r.id for r in query_sessions(self.path, command="\udcff\udcfe")],
            [f"{bad[:-2]}00"],
        )

    @inlineCallbacks
    def test_failing_row_placeholder(self):
        """
        A command the index cannot store at all (a sequence number out of
        SQLite's range) is replaced by a placeholder row naming the failure,
        noted on its session and reported to observers; the rest of its
        batch, another session's rows included, commits.
        """
        idx = self.make_index()
        failures = []
        idx.observe_failures(lambda *a: failures.append(a))
        yield idx.start()
        a = "0192f1a0-0000-7000-8000-0000000000f1"
        b = "0192f1a0-0000-7000-8000-0000000000f2"
        results = yield gatherResults(
            [
                idx.session_opened(session(a)),
                idx.session_opened(session(b)),
                idx.command_seen(command(a, 1, "select 1")),
                idx.command_seen(command(a, 2**70, "select 'huge seq'")),
                idx.command_seen(command(b, 1, "select 'other session'")),
                idx.session_closed(b, T0 + 1, "eof", masked_values=2**70),
                idx.session_closed(a, T0 + 2, "eof"),
            ]
        )
        self.assertEqual(results, [True, True, True, False, True, False, True])
        placeholder, first = commands_for(self.path, a)  # ordered by seq
        self.assertEqual(first.text, "select 1")
        self.assertEqual((placeholder.kind, placeholder.seq), ("(not indexed)", -1))
        self.assertIn("OverflowError", placeholder.text)
        self.assertEqual(
            [c.text for c in commands_for(self.path, b)], ["select 'other session'"]
        )
        row_a = get_session(self.path, a)
        self.assertIn(f"session {a} command at seq {2**70}", row_a.index_problems)
        self.assertEqual(row_a.close_reason, "eof")
        row_b = get_session(self.path, b)
        self.assertTrue(row_b.closed)
        self.assertTrue(row_b.close_reason.startswith("(not indexed): OverflowError"))
        self.assertEqual(row_b.masked_values, -1)
        self.assertEqual([(f[0], f[3]) for f in failures], [(a, True), (b, True)])


class QueryTests(IndexTestCase):
    """The auditor side, over an index populated by the writer."""

    # started offsets, in seconds after T0, and how long they lasted
    A = "0192f1a0-0000-7000-8000-0000000000a1"  # Ada, orders-db, deletes users
    B = "0192f1a0-0000-7000-8000-0000000000b2"  # CI, orders-db, selects
    C = "0192f1a0-0000-7000-8000-0000000000c3"  # Bob, ssh host, still open
    D = "0192f1a0-0000-7000-8000-0000000000d4"  # CI, kube

    @inlineCallbacks
    def setUp(self):
        idx = self.make_index()
        yield idx.start()
        ds = [
            idx.session_opened(
                session(self.A, subject="u-ada", display_name="Ada Lovelace")
            ),
            idx.command_seen(
                command(
                    self.A,
                    3,
                    "DELETE FROM public.users",
                    kind="DeleteStmt",
                    decision="review",
                    objects=("public.users",),
                )
            ),
            idx.command_seen(
                command(
                    self.A,
                    5,
                    "SELECT * FROM orders",
                    objects=("public.orders",),
                )
            ),
            idx.session_closed(self.A, T0 + 100, "client-exit"),
            idx.session_opened(session(self.B, started=T0 + 1000)),
            idx.command_seen(
                command(
                    self.B,
                    2,
                    "select id from superusers",
                    objects=("superusers",),
                )
            ),
            idx.segment_sealed(self.B, 0, b"L" * 32, True, 9),
            idx.session_closed(self.B, T0 + 1060, "eof"),
            idx.session_opened(
                session(
                    self.C,
                    protocol="ssh",
                    target="bastion",
                    subject="u-bob",
                    display_name="Bob",
                    started=T0 + 2000,
                )
            ),
            idx.command_seen(
                command(self.C, 7, "rm -rf /tmp/x", kind="exec", objects=())
            ),
            idx.segment_sealed(self.C, 0, b"C" * 32, False, 4),
            idx.session_opened(
                session(self.D, protocol="kubernetes", target="prod", started=T0 + 3000)
            ),
            idx.command_seen(
                command(
                    self.D,
                    1,
                    "delete pods/web-1",
                    kind="delete",
                    objects=("pods/web-1",),
                )
            ),
            idx.session_closed(self.D, T0 + 3001, "eof"),
        ]
        results = yield gatherResults(ds)
        self.assertEqual(set(results), {True})
        yield idx.stop()

    def ids(self, **filters):
        return [row.id for row in query_sessions(self.path, **filters)]

    def test_all_newest_first(self):
        """No filter: every session, newest first."""
        self.assertEqual(self.ids(), [self.D, self.C, self.B, self.A])

    def test_limit(self):
        """limit caps the count; None lifts it."""
        self.assertEqual(self.ids(limit=2), [self.D, self.C])
        self.assertEqual(len(self.ids(limit=None)), 4)

    def test_identity(self):
        """
        identity matches the subject exactly, never the display name (which
        any token may claim); name matches part of the display name.
        """
        self.assertEqual(self.ids(identity="u-ada"), [self.A])
        self.assertEqual(self.ids(identity="u-bob"), [self.C])
        self.assertEqual(self.ids(identity="svc-ci"), [self.D, self.B])
        self.assertEqual(self.ids(identity="u-bo"), [])
        self.assertEqual(self.ids(identity="U-ADA"), [])
        self.assertEqual(self.ids(identity="Ada Lovelace"), [])
        self.assertEqual(self.ids(name="LOVELACE"), [self.A])
        self.assertEqual(self.ids(name="u-ada"), [])

    def test_target_and_protocol(self):
        """target and protocol match exactly."""
        self.assertEqual(self.ids(target="orders-db"), [self.B, self.A])
        self.assertEqual(self.ids(target="orders"), [])
        self.assertEqual(self.ids(protocol="ssh"), [self.C])
        self.assertEqual(self.ids(protocol="postgres", identity="u-ada"), [self.A])

    def test_time_window(self):
        """
        since/until select the sessions running at some point in between;
        an open session runs until now.
        """
        self.assertEqual(self.ids(since=T0 + 50, until=T0 + 60), [self.A])
        self.assertEqual(self.ids(since=T0 + 101, until=T0 + 1001), [self.B])
        self.assertEqual(self.ids(since=T0 + 5000), [self.C])
        self.assertEqual(self.ids(until=T0 + 1000), [self.A])

    def test_command_text(self):
        """command matches part of a command's text, any case."""
        self.assertEqual(self.ids(command="delete from"), [self.A])
        self.assertEqual(self.ids(command="SELECT"), [self.B, self.A])
        self.assertEqual(self.ids(command="rm -rf"), [self.C])

    def test_kind(self):
        """kind matches the command kind, any case."""
        self.assertEqual(self.ids(kind="DeleteStmt"), [self.A])
        self.assertEqual(self.ids(kind="delete"), [self.D])
        self.assertEqual(self.ids(kind="EXEC"), [self.C])

    def test_touched(self):
        """
        touched matches an object exactly or by its unqualified name, but
        not as a substring of another name.
        """
        self.assertEqual(self.ids(touched="users"), [self.A])
        self.assertEqual(self.ids(touched="public.users"), [self.A])
        self.assertEqual(self.ids(touched="Users"), [self.A])
        self.assertEqual(self.ids(touched="superusers"), [self.B])
        self.assertEqual(self.ids(touched="pods/web-1"), [self.D])
        self.assertEqual(self.ids(touched="sers"), [])

    def test_one_command_matches_all(self):
        """command, kind and touched must hold for the same command."""
        self.assertEqual(self.ids(kind="DeleteStmt", touched="users"), [self.A])
        self.assertEqual(self.ids(kind="DeleteStmt", touched="orders"), [])
        self.assertEqual(self.ids(kind="SelectStmt", command="orders"), [self.A])
        self.assertEqual(self.ids(kind="SelectStmt", command="users"), [self.B])

    def test_get_session_and_commands(self):
        """get_session and commands_for return rows; unknown ids give None/[]."""
        self.assertEqual(get_session(self.path, self.C).protocol, "ssh")
        self.assertIsNone(
            get_session(self.path, "0192f1a0-0000-7000-8000-0000000000ff")
        )
        self.assertEqual(
            commands_for(self.path, self.A),
            [
                command(
                    self.A,
                    3,
                    "DELETE FROM public.users",
                    kind="DeleteStmt",
                    decision="review",
                    objects=("public.users",),
                ),
                command(self.A, 5, "SELECT * FROM orders", objects=("public.orders",)),
            ],
        )
        self.assertEqual(commands_for(self.path, self.D.upper())[0].kind, "delete")
        self.assertEqual(commands_for(self.path, "nope"), [])

    def test_facts(self):
        """
        facts_for tells a verifier whether the session closed, how many
        segments were sealed, and the link of the last one.
        """
        from gatehouse.recording.verify import IndexFacts

        self.assertEqual(
            facts_for(self.path, self.B),
            IndexFacts(closed=True, segment_count=1, final_link=b"L" * 32),
        )
        self.assertEqual(
            facts_for(self.path, self.C),
            IndexFacts(closed=False, segment_count=1, final_link=b"C" * 32),
        )
        self.assertEqual(
            facts_for(self.path, self.A),
            IndexFacts(closed=True, segment_count=0, final_link=None),
        )
        self.assertIsNone(facts_for(self.path, "0192f1a0-0000-7000-8000-0000000000ff"))

    def test_read_only(self):
        """Auditors' queries open the index read-only."""
        with index_module._reader(self.path) as conn:
            self.assertRaises(
                sqlite3.OperationalError, conn.execute, "DELETE FROM sessions"
            )
        self.assertEqual(len(self.ids()), 4)


class UnavailableTests(TestCase):
    """Queries on something that is not an index say so in one line."""

    def test_missing(self):
        path = self.mktemp()
        e = self.assertRaises(IndexUnavailable, query_sessions, path)
        self.assertIn("no such index", str(e))

    def test_not_sqlite(self):
        path = self.mktemp()
        with open(path, "wb") as f:
            f.write(b"this is not a database, not even close" * 100)
        e = self.assertRaises(IndexUnavailable, get_session, path, "x")
        self.assertIn(path, str(e))

    def test_not_an_index(self):
        path = self.mktemp()
        sqlite3.connect(path).close()
        with open(path, "wb"):
            pass
        e = self.assertRaises(IndexUnavailable, commands_for, path, "x")
        self.assertIn("not a gatehouse session index", str(e))


class HubReportsTests(IndexTestCase):
    """
    The session hub and the index together: a failed index write is
    recorded in the session's own recording (the evidence), and the
    upstream role a session uses is recorded and indexed.
    """

    @inlineCallbacks
    def test_failure_recorded_in_session(self):
        """
        A command the index cannot store leaves an C{index-write-failed}
        event in the session's recording; the session's other commands,
        hostile text included, are indexed.
        """
        from twisted.internet.task import Clock

        from gatehouse.recording import keys
        from gatehouse.recording.reader import read_records
        from gatehouse.recording.recorder import SegmentRecorder, synchronous_executor
        from gatehouse.session import SessionHub

        ns = 1_000_000_000
        clock = Clock()
        clock.advance(T0)
        root = keys.generate_root_key()
        epoch = keys.issue_epoch_keys(root, "gw-1", int((T0 - 10) * ns), 900 * ns, 4)
        recorder = SegmentRecorder(
            self.mktemp(),
            "gw-1",
            lambda wall: keys.current_key(epoch, wall),
            clock,
            synchronous_executor,
            monotonic_ns=lambda: int(clock.seconds() * ns),
        )
        idx = self.make_index()
        hub = SessionHub("gw-1", recorder, None, clock, idx)
        yield idx.start()
        session = hub.open("postgres", "pg", "127.0.0.1:5000")
        hub.start_recording(session)  # as a verified token would
        sid = str(session.id)
        session.upstream_login("agent_ro", "groups [agents]")
        session.command_seen("SelectStmt", "select '\udcff'\x00")
        ok = yield idx.command_seen(
            CommandRow(
                session_id=sid,
                seq=2**70,
                at=T0,
                kind="SelectStmt",
                text="x",
                decision="allow",
            )
        )
        self.assertFalse(ok)
        yield session.close("done")
        yield idx.stop()
        events = [
            json.loads(r.payload)
            for r in read_records(session.recording.directory)
            if r.type == RecordType.EVENT
        ]
        names = [e["event"] for e in events]
        self.assertIn("upstream-login", names)
        (failed,) = [e for e in events if e["event"] == "index-write-failed"]
        self.assertEqual(failed["what"], f"session {sid} command at seq {2**70}")
        self.assertIn("OverflowError", failed["error"])
        self.assertTrue(failed["placeholder"])
        row = get_session(self.path, sid)
        self.assertEqual(row.upstream_role, "agent_ro")
        texts = [c.text for c in commands_for(self.path, sid)]
        self.assertIn("select '\\xff'\\x00", texts)
