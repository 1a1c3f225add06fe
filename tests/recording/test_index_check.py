"""
C{gatehouse index check|rebuild} and verify's comparison with the index:
the index is derived data, checked against the recordings (the evidence)
and rebuilt from them.

Recordings are made in-process by the real L{SessionHub}, segment recorder
and index writer (its SQL, written inline on a fake clock).
"""

from __future__ import annotations

import io
import json
import os
import shutil
import sqlite3
import sys
import time
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet.defer import succeed
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from gatehouse import ids
from gatehouse.cli import main
from gatehouse.config import TargetConfig
from gatehouse.identity import IssuerConfig, TokenVerifier
from gatehouse.recording import keys
from gatehouse.recording.format import Direction
from gatehouse.recording.index import (
    SessionIndex,
    _write_batch,
    commands_for,
    get_session,
    query_sessions,
)
from gatehouse.recording.index_check import check_index, rebuild_index
from gatehouse.recording.interfaces import SPACE_EXHAUSTED, RecordingFailed
from gatehouse.recording.recorder import SegmentRecorder, synchronous_executor
from gatehouse.session import SessionHub
from tests.recording.test_space import no_space_for

NS = 1_000_000_000
ISSUER = "https://idp.example.com/realms/ops"
SECRET = b"the index check tests' HS256 secret, 32+ bytes!"


class InlineIndex(SessionIndex):
    """The daemon's index writer with its batches written inline, no thread."""

    def start(self):
        self._connect()
        self._open = True
        self._kick()
        return succeed(None)

    def _flush(self) -> None:
        self._scheduled = None
        batch = list(self._queue)
        self._queue.clear()
        self._busy = True
        self._written(_write_batch(self._conn, [w for w, _ in batch]), batch)

    def close(self) -> None:
        self._conn.close()


class World:
    """
    Sessions recorded by a real hub into C{root}: Alice's (a denied
    command among allowed ones) and Bob's, indexed at C{index}.
    """

    def __init__(self, root: str, full_disk: bool = False):
        os.makedirs(root)
        self.root = root
        self.recordings = os.path.join(root, "recordings")
        self.index = os.path.join(root, "index.sqlite3")
        # Session ids only grow within a process: start from now, not a
        # fixed time that ids made by other tests may have passed.
        # Ids stay ordered through a module-level last time, which other
        # tests' fixed clocks must not find moved: restored at the end.
        saved = ids._last_ms, ids._counter
        self.now = now = time.time()
        self.clock = Clock()
        self.clock.advance(now)
        signing_root = keys.generate_root_key()
        epoch = keys.issue_epoch_keys(
            signing_root, "gw-1", int((now - 10) * NS), 900 * NS, 4
        )
        self.anchors = keys.TrustAnchors.from_public_keys(
            [keys.raw_public(signing_root)]
        )
        self.root_pub = os.path.join(root, "root.pub")
        with open(self.root_pub, "wb") as f:
            f.write(
                signing_root.public_key().public_bytes(
                    serialization.Encoding.PEM,
                    serialization.PublicFormat.SubjectPublicKeyInfo,
                )
            )
        recorder = SegmentRecorder(
            self.recordings,
            "gw-1",
            lambda wall: keys.current_key(epoch, wall),
            self.clock,
            no_space_for("prepare") if full_disk else synchronous_executor,
            monotonic_ns=lambda: int(self.clock.seconds() * NS),
            segment_max_bytes=64 * 1024,
            block_bytes=16 * 1024,
        )
        verifier = TokenVerifier(
            [
                IssuerConfig(
                    ISSUER, ("gatehouse",), algorithms=("HS256",), hs256_secret=SECRET
                )
            ],
            self.clock,
            clock=self.clock,
        )
        self.writer = InlineIndex(self.index, self.clock)
        self.writer.start()
        self.hub = SessionHub(
            "gw-1",
            recorder,
            verifier,
            self.clock,
            self.writer,
            targets=[
                TargetConfig(name, "postgres", allow_groups=("*",))
                for name in ("shop", "crm")
            ],
        )
        self.alice = self.session(
            "alice", "Alice", ["dba", "ops"], "shop", "app_rw", deny="drop table t"
        )
        self.bob = self.session("bob", "Bob", ["dev"], "crm", "app_ro")
        if full_disk:
            self.carol = self.filled("carol")
        self.clock.advance(0)
        self.writer.close()
        ids._last_ms, ids._counter = saved

    def token(self, subject: str, name: str, groups: list[str]) -> str:
        claims = {
            "iss": ISSUER,
            "aud": "gatehouse",
            "sub": subject,
            "name": name,
            "groups": groups,
            "iat": int(self.now),
            "exp": int(self.now + 3600),
        }
        return jwt.encode(claims, SECRET, algorithm="HS256")

    def filled(self, subject: str) -> str:
        """A session the gateway ends because its disk filled."""
        session = self.hub.open("postgres", "pg", "127.0.0.1:5001")
        d = session.authenticate(self.token(subject, subject, []), "shop")
        assert d.called
        while session.recording.exhausted is None:
            self.clock.advance(0.01)
            try:
                session.data(Direction.UPSTREAM_TO_GATEWAY, os.urandom(4000))
            except RecordingFailed:
                break
        session.close(session.recording.exhausted)
        self.clock.advance(0)
        return str(session.id)

    def session(
        self,
        subject: str,
        name: str,
        groups: list[str],
        target: str,
        role: str,
        deny: str | None = None,
    ) -> str:
        session = self.hub.open("postgres", "pg", "127.0.0.1:5000")
        session.data(Direction.CLIENT_TO_GATEWAY, b"startup")
        d = session.authenticate(self.token(subject, name, groups), target)
        assert d.called
        session.upstream_login(role, "default")
        for n, text in enumerate(["select 1", f"select * from {target}_items"]):
            self.clock.advance(1.5)
            session.data(Direction.CLIENT_TO_GATEWAY, b"Q..." + text.encode() + b"\0")
            session.command_seen("SelectStmt", text, (f"{target}_items",) * n, "allow")
            session.data(Direction.GATEWAY_TO_UPSTREAM, text.encode())
            session.data(Direction.UPSTREAM_TO_GATEWAY, b"rows " * (n + 1))
            session.data(Direction.GATEWAY_TO_CLIENT, b"rows " * (n + 1))
        if deny is not None:
            self.clock.advance(2)
            session.data(Direction.CLIENT_TO_GATEWAY, b"Q..." + deny.encode() + b"\0")
            session.event(
                "decision",
                action="deny",
                rule="no-ddl",
                message="no",
                commands=[{"kind": "DropStmt", "text": deny, "objects": ["t"]}],
            )
            session.command_seen("DropStmt", deny, ("t",), "deny")
        self.clock.advance(3)
        session.close("client hung up")
        self.clock.advance(0)
        return str(session.id)


def edit(path: str, sql: str, *params: object) -> None:
    """Run one statement on the index at C{path}, as an intruder would."""
    conn = sqlite3.connect(path)
    try:
        conn.execute(sql, params)
        conn.commit()
    finally:
        conn.close()


#: Edits that can be applied to an index, by field: how to make a value
#: different from C{old} out of a random draw.
def _text_edit(old: str, draw: str) -> str:
    return old + "~" + draw


def _time_edit(old: float, draw: float) -> float:
    return old + (draw if draw else 100.0)


SESSION_EDITS: dict[str, Any] = {
    "subject": st.text(min_size=1, max_size=8),
    "display_name": st.text(min_size=1, max_size=8),
    "issuer": st.text(min_size=1, max_size=8),
    "groups": st.lists(st.text(min_size=1, max_size=5), max_size=3),
    "target": st.text(min_size=1, max_size=8),
    "listener": st.text(min_size=1, max_size=8),
    "client_address": st.text(min_size=1, max_size=8),
    "upstream_role": st.text(min_size=1, max_size=8),
    "close_reason": st.text(min_size=1, max_size=8),
    "started": st.floats(-1e6, 1e6).filter(lambda x: abs(x) >= 1e-3),
    "ended": st.floats(-1e6, 1e6).filter(lambda x: abs(x) > 20),
    "segments": st.integers(1, 1000),
    "records": st.integers(1, 1000),
    "bytes_from_client": st.integers(1, 1000),
    "bytes_to_client": st.integers(1, 1000),
}
COMMAND_EDITS: dict[str, Any] = {
    "text": st.text(min_size=1, max_size=8),
    "decision": st.sampled_from(["allow", "deny", "review"]),
    "at": st.floats(-1e6, 1e6).filter(lambda x: abs(x) > 20),
    "channel": st.integers(1, 1000),
}


def _edited(field: str, old: Any, draw: Any) -> Any:
    """A value for C{field} that differs from C{old}."""
    if field == "objects":
        return json.dumps([*json.loads(old), draw])
    if field == "groups":
        old_groups = json.loads(old)
        new = draw if draw != old_groups else [*draw, "x"]
        return json.dumps(new)
    if isinstance(old, str):
        return old + "~" + draw if field not in ("decision",) else draw
    if isinstance(old, float):
        return old + draw
    return old + draw


class IndexCheckTests(SynchronousTestCase):
    """L{check_index} and L{rebuild_index} on an index written by the daemon's code."""

    def setUp(self) -> None:
        self.world = World(self.mktemp())

    def check(self, index: str | None = None) -> list:
        w = self.world
        return check_index(index or w.index, w.recordings, w.anchors)

    def test_clean(self) -> None:
        """The index the hub wrote agrees with the recordings."""
        self.assertEqual(self.check(), [])
        self.assertEqual(len(commands_for(self.world.index, self.world.alice)), 3)

    def test_named_per_session_and_field(self) -> None:
        """Alice's session made Bob's, and a command's text changed: both named."""
        w = self.world
        edit(w.index, "UPDATE sessions SET subject = 'bob' WHERE id = ?", w.alice)
        edit(
            w.index,
            "UPDATE commands SET text = 'select 2' WHERE session_id = ? AND "
            "text = 'select 1'",
            w.alice,
        )
        found = {(d.session_id, d.field) for d in self.check()}
        self.assertEqual(found, {(w.alice, "subject"), (w.alice, "commands[0].text")})

    def test_channel(self) -> None:
        """A row that names another channel than its record's is named."""
        w = self.world
        edit(
            w.index,
            "UPDATE commands SET channel = 2 WHERE session_id = ? AND "
            "text = 'select 1'",
            w.alice,
        )
        self.assertEqual(
            [(d.session_id, d.field, d.index, d.recording) for d in self.check()],
            [(w.alice, "commands[0].channel", 2, 0)],
        )

    def test_one_side_only(self) -> None:
        """A session only the index knows, and a recording the index lacks."""
        w = self.world
        directory = get_session(w.index, w.bob).directory
        shutil.rmtree(directory)
        edit(w.index, "DELETE FROM sessions WHERE id = ?", w.alice)
        found = {(d.session_id, d.field) for d in self.check()}
        self.assertEqual(found, {(w.bob, "recording"), (w.alice, "index")})

    def test_rebuild(self) -> None:
        """
        A rebuilt index agrees with the recordings, holds every session and
        command of the daemon's index, and undoes edits.
        """
        w = self.world
        edit(w.index, "UPDATE sessions SET subject = 'bob' WHERE id = ?", w.alice)
        fresh = os.path.join(w.root, "fresh.sqlite3")
        self.assertEqual(rebuild_index(fresh, w.recordings, w.anchors, w.index), (2, 5))
        self.assertEqual(self.check(fresh), [])
        self.assertEqual(
            [r.id for r in query_sessions(fresh, identity="alice")], [w.alice]
        )
        before = get_session(w.index, w.bob)
        after = get_session(fresh, w.bob)
        self.assertEqual(after, before)
        self.assertEqual(commands_for(fresh, w.alice), commands_for(w.index, w.alice))
        # Without the old index, the commands the policy refused still.
        bare = os.path.join(w.root, "bare.sqlite3")
        self.assertEqual(rebuild_index(bare, w.recordings, w.anchors), (2, 1))
        (denied,) = commands_for(bare, w.alice)
        self.assertEqual((denied.text, denied.decision), ("drop table t", "deny"))

    def test_unverified_recording(self) -> None:
        """A recording that does not verify is reported, its facts not trusted."""
        w = self.world
        directory = get_session(w.index, w.bob).directory
        (segment,) = [f for f in os.listdir(directory) if f.endswith(".ghs")]
        path = os.path.join(directory, segment)
        data = bytearray(open(path, "rb").read())
        data[200] ^= 1
        open(path, "wb").write(bytes(data))
        found = {(d.session_id, d.field) for d in self.check()}
        self.assertEqual(found, {(w.bob, "recording")})


class FullDiskTests(SynchronousTestCase):
    """A session ended by a full disk is complete, to verify and to index check."""

    def test_complete_with_reason(self) -> None:
        w = World(self.mktemp(), full_disk=True)
        row = get_session(w.index, w.carol)
        self.assertTrue(row.close_reason.startswith(SPACE_EXHAUSTED), row.close_reason)
        self.assertEqual(check_index(w.index, w.recordings, w.anchors), [])
        out, err = io.StringIO(), io.StringIO()
        self.patch(sys, "stdout", out)
        self.patch(sys, "stderr", err)
        code = main(
            [
                "verify",
                w.carol,
                "--recordings",
                w.recordings,
                "--index",
                w.index,
                "--root-key",
                w.root_pub,
            ]
        )
        self.assertEqual(code, 0, out.getvalue() + err.getvalue())
        self.assertIn("OK: complete and intact", out.getvalue())
        self.assertIn("could not record more: " + SPACE_EXHAUSTED, out.getvalue())


class RandomEditTests(SynchronousTestCase):
    """Every random edit of an indexed fact is reported, by session and field."""

    @settings(max_examples=60, deadline=None)
    @given(data=st.data())
    def test_random_edits(self, data: st.DataObject) -> None:
        world = _shared_world(self)
        root = self.mktemp()
        os.makedirs(root)
        index = os.path.join(root, "index.sqlite3")
        shutil.copy(world.index, index)
        self.assertEqual(check_index(index, world.recordings, world.anchors), [])
        sid = data.draw(st.sampled_from([world.alice, world.bob]))
        conn = sqlite3.connect(index)
        try:
            if data.draw(st.booleans()):
                field = data.draw(st.sampled_from(sorted(SESSION_EDITS)))
                (old,) = conn.execute(
                    f"SELECT {field} FROM sessions WHERE id = ?", (sid,)
                ).fetchone()
                new = _edited(field, old, data.draw(SESSION_EDITS[field]))
                conn.execute(
                    f"UPDATE sessions SET {field} = ? WHERE id = ?", (new, sid)
                )
                expected = field
            else:
                rows = conn.execute(
                    "SELECT rowid FROM commands WHERE session_id = ?"
                    " ORDER BY seq, rowid",
                    (sid,),
                ).fetchall()
                n = data.draw(st.integers(0, len(rows) - 1))
                (decision,) = conn.execute(
                    "SELECT decision FROM commands WHERE rowid = ?", rows[n]
                ).fetchone()
                # Kind and objects are in the recording only for commands
                # the policy did not simply allow (their decision event).
                fields = sorted(COMMAND_EDITS)
                if decision != "allow":
                    fields += ["kind", "objects"]
                field = data.draw(st.sampled_from(fields))
                (old,) = conn.execute(
                    f"SELECT {field} FROM commands WHERE rowid = ?", rows[n]
                ).fetchone()
                strategy = COMMAND_EDITS.get(field, st.text(min_size=1, max_size=8))
                draw = data.draw(strategy.filter(lambda v: v != old))
                new = _edited(field, old, draw)
                conn.execute(
                    f"UPDATE commands SET {field} = ? WHERE rowid = ?", (new, *rows[n])
                )
                expected = f"commands[{n}].{field}"
            conn.commit()
        finally:
            conn.close()
        found = {
            (d.session_id, d.field)
            for d in check_index(index, world.recordings, world.anchors)
        }
        self.assertIn((sid, expected), found)


_WORLD: list[World] = []


def _shared_world(test: SynchronousTestCase) -> World:
    """One set of recordings for every example (read only; each copies the index)."""
    if not _WORLD:
        _WORLD.append(World(os.path.abspath(test.mktemp())))
    return _WORLD[0]


class CLITests(SynchronousTestCase):
    """C{gatehouse index check|rebuild} and their exit codes."""

    def setUp(self) -> None:
        self.world = World(self.mktemp())

    def run_cli(self, *argv: str) -> tuple[int, str, str]:
        out, err = io.StringIO(), io.StringIO()
        self.patch(sys, "stdout", out)
        self.patch(sys, "stderr", err)
        try:
            code = main(list(argv))
        except SystemExit as e:
            code = e.code
        return code, out.getvalue(), err.getvalue()

    def args(self, *more: str) -> list[str]:
        w = self.world
        return [
            *more,
            "--index",
            w.index,
            "--recordings",
            w.recordings,
            "--root-key",
            w.root_pub,
        ]

    def test_check_exit_codes(self) -> None:
        """0 when the index agrees, 1 with each difference named, 2 on misuse."""
        w = self.world
        code, out, _ = self.run_cli("index", *self.args("check"))
        self.assertEqual((code, out), (0, "index agrees with the recordings\n"))
        edit(w.index, "UPDATE sessions SET target = 'prod' WHERE id = ?", w.bob)
        code, out, _ = self.run_cli("index", *self.args("check"))
        self.assertEqual(code, 1)
        self.assertIn(f"{w.bob}: target: index says 'prod', recording says 'crm'", out)
        code, out, _ = self.run_cli("index", *self.args("check", w.alice))
        self.assertEqual(code, 0)
        code, out, _ = self.run_cli("index", *self.args("check", "--json"))
        self.assertEqual(json.loads(out)["differences"][0]["field"], "target")
        code, _, err = self.run_cli("index", "check", "--index", w.index)
        self.assertEqual(code, 2)
        self.assertIn("--recordings DIR", err)

    def test_rebuild_replace(self) -> None:
        """--replace puts a fresh index in place and keeps the old one."""
        w = self.world
        edit(w.index, "UPDATE sessions SET subject = 'bob' WHERE id = ?", w.alice)
        code, out, _ = self.run_cli("index", *self.args("rebuild", "--replace"))
        self.assertEqual(code, 0, out)
        self.assertIn("old index kept as", out)
        backup = out.split("old index kept as ")[1].split("\n")[0]
        self.assertEqual(get_session(backup, w.alice).subject, "bob")
        self.assertEqual(get_session(w.index, w.alice).subject, "alice")
        code, _, _ = self.run_cli("index", *self.args("check"))
        self.assertEqual(code, 0)

    def test_rebuild_refuses(self) -> None:
        """Neither --output nor --replace, an existing --output, an open index."""
        w = self.world
        code, _, err = self.run_cli("index", *self.args("rebuild"))
        self.assertEqual(code, 2)
        code, _, err = self.run_cli("index", *self.args("rebuild", "--output", w.index))
        self.assertEqual(code, 2)
        self.assertIn("already exists", err)
        held = open(w.index, "rb")
        self.addCleanup(held.close)
        code, _, err = self.run_cli("index", *self.args("rebuild", "--replace"))
        self.assertEqual(code, 2)
        self.assertIn(f"is open in process {os.getpid()}", err)
