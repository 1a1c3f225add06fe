"""
The segment size limit: C{segment_max_bytes} is honoured within the
documented slack (docs/recording-format.md, "Sealing"), judged on the
sealed files on disk, and the recording stays whole and verifiable.
"""

from __future__ import annotations

import os
import time

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from gatehouse.ids import new_session_id
from gatehouse.recording import keys
from gatehouse.recording.format import MAX_SEAL, RECORD_HEADER, Direction, RecordType
from gatehouse.recording.reader import list_segments, read_records
from gatehouse.recording.recorder import (
    SegmentRecorder,
    default_headroom,
    synchronous_executor,
)
from gatehouse.recording.verify import verify_session

from .test_recorder import NS, FakeProducer, epoch_keys

KiB = 1024
#: What a producer may deliver after it was paused: one socket read.
READ = 64 * KiB


class LaggingFiles:
    """
    An executor that runs file work at once but for preparing the next
    segment's file, which waits until L{ready} (a slow disk): the worst
    case, where every segment fills before its successor's file exists.
    """

    def __init__(self):
        self.pending = []

    def __call__(self, fn, *args):
        if fn.__name__ == "prepare":
            d = synchronous_executor(lambda: None)
            d.pause()
            self.pending.append((d, fn, args))
            return d.addCallback(lambda _: fn(*args))
        return synchronous_executor(fn, *args)

    def ready(self):
        pending, self.pending = self.pending, []
        for d, _, _ in pending:
            d.unpause()


class SegmentSizeTests(SynchronousTestCase):
    """Limits of 64 KiB, 256 KiB and 1 MiB; records of 100 B, 10 KiB, 300 KiB."""

    def setUp(self):
        self.clock = Clock()
        self.clock.advance(time.time())
        self.anchors, self.keys = epoch_keys(self.clock.seconds() - 10)

    def write(self, limit: int, size: int, total: int, lag: bool) -> None:
        files = LaggingFiles() if lag else synchronous_executor
        recorder = SegmentRecorder(
            self.mktemp(),
            "gw-test",
            lambda wall: keys.current_key(self.keys, wall),
            self.clock,
            files,
            monotonic_ns=lambda: int(self.clock.seconds() * NS),
            segment_max_bytes=limit,
        )
        recording = recorder.open(new_session_id(self.clock.seconds()), {})
        producer = FakeProducer()
        recording.registerProducer(producer)
        sent = []
        since_pause_check = 0
        n = 0
        while n * size < total:
            # A transport stops reading once paused, but the read under
            # way (up to 64 KiB) is still recorded.
            if since_pause_check >= READ:
                since_pause_check = 0
                if producer.paused and lag:
                    files.ready()
                self.assertFalse(producer.paused)
            payload = n.to_bytes(4, "big") + os.urandom(size - 4)
            recording.record(RecordType.DATA, Direction.UPSTREAM_TO_GATEWAY, 0, payload)
            sent.append(payload)
            since_pause_check += size
            n += 1
        if lag:
            files.ready()
        self.successResultOf(recording.close("done"))

        report = verify_session(recording.directory, self.anchors)
        self.assertEqual((report.exit_code, report.findings), (0, ()))
        got = [
            r.payload
            for r in read_records(recording.directory)
            if r.type == RecordType.DATA
        ]
        self.assertEqual(got, sent)

        segments = list_segments(recording.directory)
        self.assertGreater(len(segments), 1)
        framed = size + RECORD_HEADER.size
        headroom = default_headroom(limit)
        # The documented bound: the headroom, or one record larger than it.
        slack = max(headroom, framed)
        # What it does with a producer that honours the pause: past the
        # limit by at most what was read before the pause, and one record.
        actual_slack = READ + framed
        sizes = [
            os.path.getsize(os.path.join(recording.directory, name))
            for _, name in segments
        ]
        overhead = 1024 + MAX_SEAL  # the header (with delegation) and the seal
        for index, got_size in enumerate(sizes):
            self.assertLessEqual(got_size, limit + slack + overhead, (index, sizes))
            self.assertLessEqual(
                got_size, limit + actual_slack + overhead, (index, sizes)
            )
        # The limit was reached (the test is not vacuous): every segment but
        # the last holds segment_max_bytes of records (stored compressed:
        # the framing of random payloads shrinks, by less than half).
        for got_size in sizes[:-1]:
            self.assertGreaterEqual(got_size, limit // 2)


def _case(limit: int, size: int, lag: bool):
    def test(self):
        self.write(limit, size, total=max(4 * limit, 3 * size), lag=lag)

    test.__doc__ = (
        f"A {limit // KiB} KiB limit with {size} B records"
        + (", the next file late" if lag else "")
        + ": every sealed segment within the slack."
    )
    return test


for _limit in (64 * KiB, 256 * KiB, 1024 * KiB):
    for _size in (100, 10 * KiB, 300 * KiB):
        for _lag in (False, True):
            setattr(
                SegmentSizeTests,
                f"test_{_limit // KiB}k_{_size}b{'_lag' if _lag else ''}",
                _case(_limit, _size, _lag),
            )
