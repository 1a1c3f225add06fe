"""
Commands and records carry a channel (an SSH channel, an HTTP stream), so
each index row points to the data record of its own channel; an index
written before channels came gains the column (0) when opened.
"""

from __future__ import annotations

import json
import os
import sqlite3
from typing import Any

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from gatehouse.config import TargetConfig
from gatehouse.policy import Command, Decision, Policy
from gatehouse.policy.approval import ApprovalBroker
from gatehouse.recording import index as index_module
from gatehouse.recording.format import Direction, RecordType
from gatehouse.recording.index import CommandRow, commands_for
from tests.recording.test_index_check import InlineIndex
from tests.test_session_access import NOW, MemoryRecording, memory_hub, token

C2G = Direction.CLIENT_TO_GATEWAY
SID = "0192f1a0-0000-7000-8000-00000000c4a1"


def _events(recording: MemoryRecording) -> list[tuple[int, dict[str, Any]]]:
    """(channel, fields) of each EVENT record."""
    return [
        (r[2], json.loads(r[3])) for r in recording.records if r[0] == RecordType.EVENT
    ]


class ChannelTests(SynchronousTestCase):
    """A session's commands, decisions and events on several channels."""

    def setUp(self) -> None:
        directory = self.mktemp()
        os.makedirs(directory)
        self.path = os.path.join(directory, "index.sqlite3")
        self.clock = Clock()
        self.clock.advance(NOW)
        self.index = InlineIndex(self.path, self.clock)
        self.index.start()
        self.addCleanup(self.index.close)
        self.hub, self.recorder, _ = memory_hub(
            clock=self.clock,
            index=self.index,
            targets=[TargetConfig("box", "ssh", allow_groups=("*",))],
            policy=Policy(default=Decision("deny", "default", message="no")),
        )
        self.session = self.hub.open("ssh", "s", "10.0.0.1:2")
        self.successResultOf(self.session.authenticate(token(), "box"))
        (self.recording,) = self.recorder.opened

    def record(self, seq: int) -> tuple[int, int, int, bytes]:
        return self.recording.records[seq]

    def test_rows_point_to_their_channel(self) -> None:
        """
        Two channels interleaved: each command's row names its channel and
        that channel's last data record, not the session's last one.
        """
        session = self.session
        session.data(C2G, b"ls\n", channel=1)
        session.data(C2G, b"cat x\n", channel=2)
        session.command_seen("exec", "ls", channel=1)
        session.data(C2G, b"pwd\n", channel=1)
        session.command_seen("exec", "cat x", channel=2)
        session.command_seen("exec", "pwd", channel=1)
        self.clock.advance(1)
        rows = commands_for(self.path, str(session.id))
        self.assertEqual(
            [(r.text, r.channel) for r in rows],
            [("ls", 1), ("cat x", 2), ("pwd", 1)],
        )
        for row, sent in zip(rows, (b"ls\n", b"cat x\n", b"pwd\n"), strict=True):
            rtype, _, channel, payload = self.record(row.seq)
            self.assertEqual(
                (rtype, channel, payload), (RecordType.DATA, row.channel, sent)
            )
        self.assertEqual(session.last_seq_of(2), rows[1].seq)
        self.assertEqual(session.last_seq, -1)

    def test_channel_zero(self) -> None:
        """Without a channel, as before: channel 0 and C{last_seq}."""
        self.session.data(C2G, b"select 1")
        self.session.command_seen("SelectStmt", "select 1")
        self.clock.advance(1)
        (row,) = commands_for(self.path, str(self.session.id))
        self.assertEqual((row.channel, row.seq), (0, self.session.last_seq))
        self.assertEqual(self.record(row.seq)[3], b"select 1")

    def test_events_on_channel(self) -> None:
        """A decision, and any event given one, is recorded on its channel."""
        self.session.data(C2G, b"rm -rf /\n", channel=3)
        decision = self.session.decide([Command("ssh", "exec", "rm -rf /")], channel=3)
        self.assertEqual(decision.action, "deny")
        self.session.event("note", channel=4, what="x")
        self.session.event("plain")
        self.assertEqual(
            [(channel, event["event"]) for channel, event in _events(self.recording)],
            [(0, "authenticated"), (3, "decision"), (4, "note"), (0, "plain")],
        )

    def test_approval_events_on_channel(self) -> None:
        """An approval request's events are recorded on its command's channel."""
        broker = ApprovalBroker(self.clock)
        hub, recorder, _ = memory_hub(
            clock=self.clock,
            broker=broker,
            targets=[TargetConfig("box", "ssh", allow_groups=("*",))],
        )
        session = hub.open("ssh", "s", "10.0.0.1:3")
        self.successResultOf(session.authenticate(token(), "box"))
        review = Decision("review", "r", approvers=("dba",), timeout=60)
        request, _ = session.request_approval(
            [Command("ssh", "exec", "reboot")], review, channel=5
        )
        broker.cancel(request.id, "changed my mind")
        (recording,) = recorder.opened
        channels = {
            event["event"]: channel
            for channel, event in _events(recording)
            if event["event"].startswith("approval-")
        }
        self.assertEqual(channels, {"approval-requested": 5, "approval-decided": 5})


class MigrationTests(SynchronousTestCase):
    """An index of schema 3 (before channels) gains C{commands.channel}."""

    def test_old_schema(self) -> None:
        directory = self.mktemp()
        os.makedirs(directory)
        path = os.path.join(directory, "index.sqlite3")
        conn = sqlite3.connect(path, isolation_level=None)
        for step in index_module._MIGRATIONS[:3]:
            for statement in step:
                conn.execute(statement)
        conn.execute("PRAGMA user_version = 3")
        conn.execute(
            "INSERT INTO commands (session_id, seq, at, kind, text, decision)"
            " VALUES (?, 7, 1.5, 'SelectStmt', 'select 1', 'allow')",
            (SID,),
        )
        conn.close()
        index = InlineIndex(path, Clock())
        index.start()
        self.addCleanup(index.close)
        conn = sqlite3.connect(path)
        self.addCleanup(conn.close)
        self.assertEqual(
            conn.execute("PRAGMA user_version").fetchone()[0],
            index_module.SCHEMA_VERSION,
        )
        self.assertEqual(
            commands_for(path, SID),
            [
                CommandRow(
                    session_id=SID,
                    seq=7,
                    channel=0,
                    at=1.5,
                    kind="SelectStmt",
                    text="select 1",
                    decision="allow",
                )
            ],
        )
