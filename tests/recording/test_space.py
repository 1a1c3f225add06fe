"""
Tests for how L{gatehouse.recording.recorder} handles disk space:
preallocated segments, the reserve, and a recording that ends cleanly when
no new segment fits.
"""

from __future__ import annotations

import errno
import json
import os
import time

from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from gatehouse.ids import new_session_id
from gatehouse.recording import keys
from gatehouse.recording.format import Direction, RecordType
from gatehouse.recording.interfaces import (
    SPACE_EXHAUSTED,
    RecordingFailed,
    RecordingUnavailable,
)
from gatehouse.recording.reader import list_segments, read_records
from gatehouse.recording.recorder import (
    CLOSE_RESERVE,
    SegmentRecorder,
    default_headroom,
    synchronous_executor,
)
from gatehouse.recording.verify import IndexFacts, verify_session

from .test_recorder import NS, FakeProducer, epoch_keys

MiB = 1024 * 1024
_G2C = Direction.GATEWAY_TO_CLIENT


def no_space_for(name: str):
    """An executor whose C{name} jobs fail as a full disk would."""

    def run(fn, *args):
        if fn.__name__ == name:
            d = Deferred()
            d.errback(OSError(errno.ENOSPC, "No space left on device"))
            return d
        return synchronous_executor(fn, *args)

    return run


class SpaceTests(SynchronousTestCase):
    """The recorder on a fake clock, its file work run synchronously."""

    def setUp(self):
        # Session ids only grow: start from now, not a fixed time that ids
        # made by other modules may have passed.
        self.clock = Clock()
        self.clock.advance(time.time())
        self.anchors, self.keys = epoch_keys(self.clock.seconds() - 10)
        self.root = self.mktemp()
        self.free = 10**12

    def recorder(self, executor=synchronous_executor, **kw):
        kw.setdefault("segment_max_bytes", 64 * 1024)
        kw.setdefault("block_bytes", 16 * 1024)
        return SegmentRecorder(
            self.root,
            "gw-test",
            lambda wall: keys.current_key(self.keys, wall),
            self.clock,
            executor,
            monotonic_ns=lambda: int(self.clock.seconds() * NS),
            free_bytes=lambda directory: self.free,
            **kw,
        )

    def session_id(self):
        return new_session_id(self.clock.seconds())

    def fill(self, recording, n=40, size=4000):
        for _ in range(n):
            recording.record(RecordType.DATA, _G2C, 0, os.urandom(size))

    def test_preallocated_then_cut_back(self):
        """
        An open segment's file has its full capacity; sealed, it has its
        real length, and no prepared file is left behind.
        """
        recorder = self.recorder()
        recording = recorder.open(self.session_id(), {})
        path = os.path.join(recording.directory, "seg-00000000.ghs")
        self.assertEqual(os.path.getsize(path), recorder.segment_capacity)
        self.assertGreaterEqual(
            recorder.segment_capacity,
            recorder.segment_max_bytes
            + default_headroom(recorder.segment_max_bytes)
            + CLOSE_RESERVE,
        )
        self.fill(recording)
        self.successResultOf(recording.close("done"))
        names = sorted(os.listdir(recording.directory))
        self.assertEqual([n for _, n in list_segments(recording.directory)], names)
        self.assertGreater(len(names), 1)
        for name in names:
            with open(os.path.join(recording.directory, name), "rb") as f:
                self.assertFalse(f.read().endswith(b"\0" * 64), name)
        report = verify_session(recording.directory, self.anchors)
        self.assertEqual((report.findings, report.exit_code), ((), 0))
        self.assertEqual(report.close_reason, "done")
        self.assertIsNone(report.recording_ended)
        self.assertGreater(recorder.bytes_written, 40 * 4000 // 2)

    def test_no_space_for_next_segment(self):
        """
        When the next segment's file cannot be made, the recording stops
        accepting records, tells the session to end, pauses its producers,
        and still closes with a final seal that says why: the session
        verifies as complete, ended for want of space.
        """
        recorder = self.recorder(executor=no_space_for("prepare"))
        heard = []
        recorder.observe_failures(lambda rec, why: heard.append(why))
        recording = recorder.open(self.session_id(), {})
        producer = FakeProducer()
        recording.registerProducer(producer)
        waiter = recording.notifyFailure()
        heard_by_session = []
        waiter.addCallback(heard_by_session.append)
        accepted = []
        # Like a protocol, stop forwarding once told.
        while not heard_by_session:
            payload = b"%04d" % len(accepted) + os.urandom(4000)
            recording.record(RecordType.DATA, _G2C, 0, payload)
            accepted.append(payload)
        self.assertTrue(heard_by_session[0].startswith(SPACE_EXHAUSTED))
        with self.assertRaises(RecordingFailed) as caught:
            recording.record(RecordType.DATA, _G2C, 0, os.urandom(8000))
        self.assertTrue(str(caught.exception).startswith(SPACE_EXHAUSTED))
        self.assertEqual(heard, [recording.exhausted])
        self.assertEqual((recorder.exhaustions, recorder.failures), (1, 0))
        self.assertFalse(recording.failed)
        # Not paused: the protocol stops reading itself, and a closing TLS
        # connection must still read its peer's close.
        self.assertFalse(producer.paused)
        # The gateway's last words to its client still fit, and are kept.
        recording.record(RecordType.DATA, _G2C, 0, b"E-fatal-53100")
        self.assertRaises(
            RecordingFailed, recording.record, RecordType.DATA, _G2C, 0, b"x" * 8192
        )
        info = self.successResultOf(recording.close(recording.exhausted))
        self.assertTrue(info.final)
        self.assertEqual(info.segment_index, 0)
        self.assertFalse(producer.paused)
        records = list(read_records(recording.directory))
        data = [r.payload for r in records if r.type == RecordType.DATA]
        self.assertEqual(data, [*accepted, b"E-fatal-53100"])
        close = json.loads(records[-1].payload)
        self.assertEqual(close["recording_ended"], recording.exhausted)
        report = verify_session(
            recording.directory, self.anchors, IndexFacts(closed=True)
        )
        self.assertEqual(report.findings, ())
        self.assertTrue(report.complete)
        self.assertEqual(report.exit_code, 0)
        self.assertEqual(report.recording_ended, recording.exhausted)
        self.assertEqual(report.as_dict()["recording_ended"], recording.exhausted)
        self.assertEqual(os.listdir(recording.directory), ["seg-00000000.ghs"])

    def test_cut_short_is_still_truncated(self):
        """
        An attacker who cuts the last segment of such a session short (or
        drops its seal) gets C{truncated} or C{altered}, not complete: only
        a genuine final seal carries the reason.
        """
        recording = self.recorder(executor=no_space_for("prepare")).open(
            self.session_id(), {}
        )
        self.assertRaises(RecordingFailed, self.fill, recording, 100)
        self.successResultOf(recording.close(recording.exhausted))
        path = os.path.join(recording.directory, "seg-00000000.ghs")
        with open(path, "rb") as f:
            whole = f.read()
        for cut in (1, 200, len(whole) // 2):
            with open(path, "wb") as f:
                f.write(whole[:-cut])
            report = verify_session(
                recording.directory, self.anchors, IndexFacts(closed=True)
            )
            problems = {f.problem for f in report.findings}
            self.assertTrue(problems & {"truncated", "altered"}, (cut, problems))
            self.assertEqual(report.exit_code, 1)
            self.assertFalse(report.complete)
            self.assertIsNone(report.recording_ended)

    def test_record_larger_than_headroom(self):
        """
        A record larger than what is left of its segment's reserved space
        grows the segment's preallocation first (a masked row of many MiB).
        """
        recorder = self.recorder(headroom_bytes=32 * 1024)
        recording = recorder.open(self.session_id(), {})
        big = os.urandom(3 * MiB)
        recording.record(RecordType.DATA, _G2C, 0, big)
        self.assertIsNone(recording.exhausted)
        self.successResultOf(recording.close("done"))
        report = verify_session(recording.directory, self.anchors)
        self.assertEqual((report.findings, report.exit_code), ((), 0))
        payloads = [r.payload for r in read_records(recording.directory)]
        self.assertIn(big, payloads)

    def test_no_space_to_grow(self):
        """
        When the segment cannot grow for a record larger than its headroom,
        the record is refused (not forwarded) and the recording ends cleanly.
        """
        grown = []

        def full(fd, offset, length):
            grown.append(length)
            raise OSError(errno.ENOSPC, "No space left on device")

        recorder = self.recorder(headroom_bytes=32 * 1024, fallocate=full)
        recording = recorder.open(self.session_id(), {})
        self.assertRaises(
            RecordingFailed, recording.record, RecordType.DATA, _G2C, 0, b"z" * 200_000
        )
        self.assertEqual(len(grown), 1)
        self.assertTrue(recording.exhausted.startswith(SPACE_EXHAUSTED))
        self.successResultOf(recording.close(recording.exhausted))
        report = verify_session(recording.directory, self.anchors)
        self.assertEqual((report.findings, report.exit_code), ((), 0))
        self.assertEqual(report.recording_ended, recording.exhausted)
        payloads = [r.payload for r in read_records(recording.directory)]
        self.assertNotIn(b"z" * 200_000, payloads)

    def test_paused_while_next_segment_prepared(self):
        """
        Past segment_max_bytes, records go on into the open segment while
        the next file is prepared, with the producers paused; they resume
        once it is sealed into the new file.
        """
        pending = []

        def queued(fn, *args):
            d = Deferred()
            pending.append((d, fn, args))
            return d

        recorder = self.recorder(executor=queued)
        recording = recorder.open(self.session_id(), {})
        producer = FakeProducer()
        recording.registerProducer(producer)
        self.fill(recording, n=17)
        self.assertTrue(producer.paused)
        recording.record(RecordType.DATA, _G2C, 0, b"in flight")

        def run_all():
            while pending:
                d, fn, args = pending.pop(0)
                d.callback(fn(*args))

        run_all()
        self.assertFalse(producer.paused)
        closed = recording.close("done")
        run_all()
        self.successResultOf(closed)
        report = verify_session(recording.directory, self.anchors)
        self.assertEqual((report.findings, report.segments), ((), 2))

    def test_reserve_refuses_new_sessions(self):
        """
        Below the reserve (plus a first segment) new sessions are refused
        and readiness says why; open sessions go on.
        """
        recorder = self.recorder(reserve_bytes=4 * MiB)
        open_one = recorder.open(self.session_id(), {})
        self.assertEqual(recorder.readiness_problems(), [])
        self.free = 4 * MiB + recorder.segment_capacity - 1
        with self.assertRaises(RecordingUnavailable) as caught:
            recorder.open(self.session_id(), {})
        self.assertTrue(str(caught.exception).startswith(SPACE_EXHAUSTED))
        self.assertEqual(recorder.refused, 1)
        (problem,) = recorder.readiness_problems()
        self.assertIn("below the reserve of 4.0 MiB", problem)
        self.fill(open_one)
        self.successResultOf(open_one.close("done"))
        self.free += 1
        recorder.open(self.session_id(), {})
        self.assertEqual(recorder.readiness_problems(), [])

    def test_readiness_of_missing_directory(self):
        """A recordings directory that does not exist is a problem."""
        recorder = self.recorder()
        (problem,) = recorder.readiness_problems()
        self.assertIn("does not exist", problem)

    def test_without_preallocation(self):
        """preallocate=False writes files as they grow; they verify the same."""
        recorder = self.recorder(preallocate=False)
        self.assertIsNone(recorder.segment_capacity)
        recording = recorder.open(self.session_id(), {})
        path = os.path.join(recording.directory, "seg-00000000.ghs")
        self.assertLess(os.path.getsize(path), 4096)
        self.fill(recording)
        self.successResultOf(recording.close("done"))
        report = verify_session(recording.directory, self.anchors)
        self.assertEqual((report.findings, report.exit_code), ((), 0))
