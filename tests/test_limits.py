"""
Tests for L{gatehouse.limits} and the session's pending recording.
"""

from __future__ import annotations

import resource

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from gatehouse.limits import (
    Admission,
    ConnectionCaps,
    ConnectionLimits,
    fds_needed,
    open_file_limit,
    raise_open_file_limit,
)
from gatehouse.recording.format import RecordType
from gatehouse.recording.interfaces import RecordingFailed
from gatehouse.session import PendingRecording, SessionHub, refusal_kind


class ConnectionLimitsTests(SynchronousTestCase):
    """Admission against the total, pre-auth and per-address caps."""

    def setUp(self) -> None:
        self.limits = ConnectionLimits(ConnectionCaps(4, 3, 2))

    def test_per_address(self) -> None:
        a = [self.limits.admit("10.0.0.1") for _ in range(2)]
        self.assertTrue(all(isinstance(x, Admission) for x in a))
        self.assertIn("10.0.0.1 holds its maximum of 2", self.limits.admit("10.0.0.1"))
        self.assertIsInstance(self.limits.admit("10.0.0.2"), Admission)
        a[0].release()
        self.assertIsInstance(self.limits.admit("10.0.0.1"), Admission)

    def test_unauthenticated_then_total(self) -> None:
        """Authenticated connections leave the pre-auth counts, not the total."""
        first = self.limits.admit("a")
        self.limits.admit("b")
        self.limits.admit("c")
        self.assertIn("3 unauthenticated", self.limits.admit("d"))
        first.authenticated()
        first.authenticated()  # idempotent
        self.assertEqual(self.limits.unauthenticated, 2)
        self.assertIsInstance(self.limits.admit("d"), Admission)
        self.assertIn("maximum of 4 connections", self.limits.admit("e"))
        first.release()
        first.release()
        self.assertEqual((self.limits.total, self.limits.unauthenticated), (3, 3))
        self.assertEqual(self.limits.unauthenticated_from("a"), 0)

    def test_heaviest_address_gives_way(self) -> None:
        """
        With the pre-auth cap full, a client from an address holding two
        fewer than the heaviest takes the place of that address's oldest
        connection (evicted, its owner told); an address at its share
        takes none.
        """
        limits = ConnectionLimits(ConnectionCaps(10, 3, 2))
        evicted = []
        first, second = limits.admit("a"), limits.admit("a")
        first.on_evict = lambda: evicted.append("first")
        second.on_evict = lambda: evicted.append("second")
        limits.admit("b")
        self.assertIsInstance(limits.admit("c"), Admission)
        self.assertEqual(evicted, ["first"])
        self.assertEqual(
            (limits.unauthenticated, limits.unauthenticated_from("a")), (3, 1)
        )
        self.assertIn("3 unauthenticated", limits.admit("d"))
        self.assertIn("3 unauthenticated", limits.admit("a"))
        # The evicted connection still counts in the total until it closes.
        self.assertEqual(limits.total, 4)
        first.release()
        first.authenticated()
        self.assertEqual((limits.total, limits.unauthenticated), (3, 3))


class OpenFileLimitTests(SynchronousTestCase):
    def test_raised_to_hard(self) -> None:
        """The soft limit ends at the hard one (or stays where it was)."""
        before = resource.getrlimit(resource.RLIMIT_NOFILE)
        self.addCleanup(resource.setrlimit, resource.RLIMIT_NOFILE, before)
        old, new = raise_open_file_limit()
        self.assertEqual(old, before[0])
        self.assertEqual(resource.getrlimit(resource.RLIMIT_NOFILE)[0], new)
        if before[1] != resource.RLIM_INFINITY:
            self.assertEqual(new, before[1])
        self.assertEqual(open_file_limit(), new)

    def test_fds_needed(self) -> None:
        """Three per logged-in session (client, target, recording) and some."""
        self.assertEqual(fds_needed(1000), 3064)


class _Recorder:
    def __init__(self) -> None:
        self.opened: list = []

    def open(self, session_id: object, meta: dict) -> object:
        recording = _Recording()
        self.opened.append((session_id, meta, recording))
        return recording


class _Recording:
    directory = "/nowhere"

    def __init__(self) -> None:
        self.records: list = []

    def record(self, rtype: int, direction: int, channel: int, payload: bytes) -> int:
        self.records.append((rtype, direction, channel, payload))
        return len(self.records)

    def registerProducer(self, producer: object) -> None:
        pass


class PendingRecordingTests(SynchronousTestCase):
    """Nothing is opened before the recording starts; then all is kept."""

    def test_held_then_written_in_order(self) -> None:
        recorder = _Recorder()
        hub = SessionHub("gw", recorder, None, Clock())
        session = hub.open("postgres", "pg", "10.0.0.1:5")
        self.assertFalse(session.recorded)
        for byte in b"abc":
            session.data(0, bytes([byte]))
        session.event("tls")
        session.data(0, b"d")
        self.assertEqual(recorder.opened, [])
        hub.start_recording(session)
        ((_, meta, recording),) = recorder.opened
        self.assertEqual(meta["client_address"], "10.0.0.1:5")
        self.assertEqual(
            [(r[0], r[3]) for r in recording.records],
            [
                (RecordType.DATA, b"abc"),
                (RecordType.EVENT, b'{"event": "tls"}'),
                (RecordType.DATA, b"d"),
            ],
        )
        self.assertTrue(session.recorded)

    def test_bounded(self) -> None:
        pending = PendingRecording({}, limit=100)
        pending.record(RecordType.DATA, 0, 0, b"x" * 30)
        with self.assertRaises(RecordingFailed):
            pending.record(RecordType.DATA, 0, 0, b"x" * 71)

    def test_refusal_kind(self) -> None:
        self.assertEqual(
            refusal_kind("authentication failed: token expired"),
            "authentication_failed",
        )
        self.assertEqual(
            refusal_kind("too many connections: 1.2.3.4 holds ..."),
            "too_many_connections",
        )
