"""
Tests for L{gatehouse.recording.recorder}.
"""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import textwrap
import time

import zstandard
from twisted.internet import reactor
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.task import Clock, deferLater
from twisted.python.threadpool import ThreadPool
from twisted.trial.unittest import SynchronousTestCase, TestCase
from zope.interface.verify import verifyObject

from gatehouse.ids import new_session_id
from gatehouse.recording import keys
from gatehouse.recording.encoder import SessionEncoder, frame_block_parts
from gatehouse.recording.format import (
    BLOCK_HEADER,
    CODEC_STORED,
    CODEC_ZSTD,
    ZERO_LINK,
    Direction,
    RecordType,
)
from gatehouse.recording.interfaces import (
    IRecorder,
    ISessionRecording,
    RecordingFailed,
    RecordingUnavailable,
)
from gatehouse.recording.reader import read_records
from gatehouse.recording.recorder import (
    SegmentRecorder,
    synchronous_executor,
    thread_executor,
)
from gatehouse.recording.verify import IndexFacts, verify_session

from .helpers import read_segment

NS = 1_000_000_000


def epoch_keys(start: float, period: float = 900.0, count: int = 8, gateway="gw-test"):
    root = keys.generate_root_key()
    issued = keys.issue_epoch_keys(
        root, gateway, int(start * NS), int(period * NS), count
    )
    return keys.TrustAnchors.from_public_keys([keys.raw_public(root)]), issued


class FakeProducer:
    """Counts pause/resume calls, like a transport would receive them."""

    def __init__(self):
        self.paused = False
        self.pauses = 0
        self.resumes = 0

    def pauseProducing(self):
        self.paused = True
        self.pauses += 1

    def resumeProducing(self):
        self.paused = False
        self.resumes += 1

    def stopProducing(self):
        pass


class InMemoryRecorderTests(SynchronousTestCase):
    """
    The recorder driven by a fake clock, its file work run synchronously.
    """

    def setUp(self):
        self.clock = Clock()
        # Session ids only grow: start from now, not a fixed time that ids
        # made earlier in the run may have passed.
        self.t0 = time.time()
        self.clock.advance(self.t0)
        self.anchors, self.keys = epoch_keys(self.t0 - 10)
        self.root = self.mktemp()

    def recorder(self, executor=synchronous_executor, keyfn=None, **kw):
        return SegmentRecorder(
            self.root,
            "gw-test",
            keyfn or (lambda wall: keys.current_key(self.keys, wall)),
            self.clock,
            executor,
            monotonic_ns=lambda: int(self.clock.seconds() * NS),
            **kw,
        )

    def test_interfaces(self):
        recorder = self.recorder()
        self.assertTrue(verifyObject(IRecorder, recorder))
        recording = recorder.open(new_session_id(self.t0), {"protocol": "test"})
        self.assertTrue(verifyObject(ISessionRecording, recording))

    def test_records_roundtrip_and_verify(self):
        """
        Every record comes back in order with its fields, and the closed
        recording verifies clean.
        """
        recording = self.recorder().open(new_session_id(self.t0), {"protocol": "test"})
        sent = []
        for i in range(50):
            payload = bytes([i]) * (i * 37)
            direction = (
                Direction.CLIENT_TO_GATEWAY if i % 2 else Direction.UPSTREAM_TO_GATEWAY
            )
            seq = recording.record(RecordType.DATA, direction, i % 3, payload)
            sent.append((seq, direction, i % 3, payload))
            self.clock.advance(0.01)
        info = self.successResultOf(recording.close("client quit"))
        self.assertTrue(info.final)
        records = list(read_records(recording.directory))
        self.assertEqual(records[0].type, RecordType.META)
        self.assertEqual(records[-1].type, RecordType.CLOSE)
        self.assertIn(b"client quit", records[-1].payload)
        data = [(r.seq, r.direction, r.channel, r.payload) for r in records[1:-1]]
        self.assertEqual(data, sent)
        monos = [r.mono for r in records]
        self.assertEqual(monos, sorted(monos))
        report = verify_session(recording.directory, self.anchors)
        self.assertEqual(report.findings, ())
        self.assertEqual(report.exit_code, 0)

    def test_heartbeat_seals_idle_session(self):
        """
        An idle session is sealed every seal_interval, with empty segments.
        """
        recorder = self.recorder(seal_interval=10.0)
        seals = []
        recorder.observe_seals(seals.append)
        recording = recorder.open(new_session_id(self.t0), {})
        for _ in range(3):
            self.clock.advance(10.0)
        self.assertEqual([s.segment_index for s in seals], [0, 1, 2])
        self.assertEqual([s.record_count for s in seals], [1, 0, 0])
        self.successResultOf(recording.close("idle"))
        self.assertEqual(len(os.listdir(recording.directory)), 4)
        self.assertEqual(verify_session(recording.directory, self.anchors).exit_code, 0)

    def test_seal_on_size(self):
        """
        A segment is sealed once its raw bytes pass segment_max_bytes.
        """
        recorder = self.recorder(segment_max_bytes=64 * 1024, block_bytes=16 * 1024)
        recording = recorder.open(new_session_id(self.t0), {})
        for _ in range(64):
            recording.record(
                RecordType.DATA, Direction.GATEWAY_TO_CLIENT, 0, b"r" * 4000
            )
        self.successResultOf(recording.close("done"))
        segments = sorted(os.listdir(recording.directory))
        self.assertGreaterEqual(len(segments), 4)
        report = verify_session(recording.directory, self.anchors)
        self.assertEqual((report.exit_code, report.records), (0, 66))

    def test_flush_interval_writes_block(self):
        """
        Records that are not yet a full block reach the file after
        flush_interval, before any seal.
        """
        recording = self.recorder(flush_interval=0.2).open(new_session_id(self.t0), {})
        path = os.path.join(recording.directory, "seg-00000000.ghs")

        def written():
            # The file is preallocated: what was written is what is not zero.
            with open(path, "rb") as f:
                return len(f.read().rstrip(b"\0"))

        before = written()
        recording.record(RecordType.DATA, Direction.CLIENT_TO_GATEWAY, 0, b"select 1")
        self.assertEqual(written(), before)
        self.clock.advance(0.2)
        self.assertGreater(written(), before)

    def test_no_key_refuses(self):
        """
        With no epoch key valid now, no session starts (fail closed).
        """
        recorder = self.recorder(keyfn=lambda wall: None)
        self.assertRaises(
            RecordingUnavailable, recorder.open, new_session_id(self.t0), {}
        )

    def test_write_failure_fails_closed(self):
        """
        When the disk refuses a write, the recording fails: further records
        raise, failure observers and waiters hear the reason.
        """

        def full_disk(fn, *args):
            if fn.__name__ == "write_block":
                d = Deferred()
                d.errback(OSError(errno.ENOSPC, "No space left on device"))
                return d
            return synchronous_executor(fn, *args)

        recorder = self.recorder(executor=full_disk)
        failures = []
        recorder.observe_failures(lambda rec, why: failures.append(why))
        recording = recorder.open(new_session_id(self.t0), {})
        waiter = recording.notifyFailure()
        recording.record(RecordType.DATA, Direction.CLIENT_TO_GATEWAY, 0, b"x")
        self.clock.advance(1)
        self.assertTrue(recording.failed)
        self.assertIn("disk full", self.successResultOf(waiter))
        self.assertEqual(len(failures), 1)
        self.assertRaises(
            RecordingFailed,
            recording.record,
            RecordType.DATA,
            Direction.CLIENT_TO_GATEWAY,
            0,
            b"y",
        )
        self.failureResultOf(recording.close("x"), RecordingFailed)
        self.assertEqual(len(self.flushLoggedErrors(OSError)), 1)

    def test_backpressure(self):
        """
        When writes lag, registered producers are paused; they resume once
        the backlog drains below the low-water mark.
        """
        pending = []

        def slow(fn, *args):
            d = Deferred()
            pending.append((d, fn, args))
            return d

        recorder = self.recorder(
            executor=slow, block_bytes=1024, high_water=8 * 1024, low_water=2 * 1024
        )
        recording = recorder.open(new_session_id(self.t0), {})
        producer = FakeProducer()
        recording.registerProducer(producer)
        for _ in range(12):
            recording.record(
                RecordType.DATA, Direction.UPSTREAM_TO_GATEWAY, 0, b"z" * 1000
            )
        self.assertTrue(producer.paused)
        while pending:
            d, fn, args = pending.pop(0)
            d.callback(fn(*args))
        self.assertFalse(producer.paused)
        self.assertEqual((producer.pauses, producer.resumes), (1, 1))

    def test_records_while_sealing(self):
        """
        A seal first prepares the next segment's file; records go on into
        the open segment while that file work is queued, and the seal
        covers them.  Seals asked for meanwhile are the same seal.  What
        observers hear of each seal (its link) is what the files hold.
        """
        pending = []

        def queued(fn, *args):
            d = Deferred()
            pending.append((d, fn, args))
            return d

        def run_one():
            d, fn, args = pending.pop(0)
            d.callback(fn(*args))

        recorder = self.recorder(executor=queued)
        heard = []
        recorder.observe_seals(heard.append)
        recording = recorder.open(new_session_id(self.t0), {})
        sealed = []
        for i in range(3):
            recording.record(RecordType.DATA, Direction.GATEWAY, 0, b"q%d" % i)
            recording.seal().addCallback(sealed.append)
            recording.seal().addCallback(sealed.append)
            recording.record(RecordType.DATA, Direction.GATEWAY, 0, b"r%d" % i)
            while len(sealed) < 2 * (i + 1):
                run_one()
                if len(sealed) < 2 * (i + 1):
                    recording.record(RecordType.DATA, Direction.GATEWAY, 0, b"w")
            self.assertEqual(sealed[-1], sealed[-2])
        closed = recording.close("done")
        while pending:
            run_one()
        self.assertEqual(self.successResultOf(closed), heard[-1])
        self.assertEqual(heard[:-1], sealed[::2])
        self.assertEqual([s.segment_index for s in heard], [0, 1, 2, 3])
        self.assertEqual([s.final for s in heard], [False] * 3 + [True])
        segments = [
            [
                r.payload
                for r in read_records(recording.directory)
                if r.seq >= s.first_seq and r.seq < s.first_seq + s.record_count
            ]
            for s in heard
        ]
        for i in range(3):
            self.assertIn(b"r%d" % i, segments[i])
        report = verify_session(recording.directory, self.anchors)
        self.assertEqual(report.findings, ())
        self.assertEqual(report.records, heard[-1].first_seq + heard[-1].record_count)
        previous = ZERO_LINK
        for info, path in zip(
            heard, sorted(os.listdir(recording.directory)), strict=True
        ):
            contents = read_segment(os.path.join(recording.directory, path))
            self.assertEqual(contents.header.prev_link, previous)
            self.assertEqual(info.link, contents.statement.link())
            self.assertEqual(info.record_count, contents.statement.record_count)
            previous = info.link


class ThreadedRecorderTests(TestCase):
    """
    The recorder with a real thread pool and the real reactor.
    """

    @inlineCallbacks
    def test_threaded_session(self):
        anchors, issued = epoch_keys(time.time() - 10)
        pool = ThreadPool(1, 2, "test-recorder")
        pool.start()
        self.addCleanup(pool.stop)
        recorder = SegmentRecorder(
            self.mktemp(),
            "gw-test",
            lambda wall: keys.current_key(issued, wall),
            reactor,
            thread_executor(reactor, pool),
            segment_max_bytes=256 * 1024,
            block_bytes=32 * 1024,
        )
        recording = recorder.open(new_session_id(), {"protocol": "test"})
        for i in range(2000):
            recording.record(
                RecordType.DATA, Direction.CLIENT_TO_GATEWAY, 0, b"%d" % i * 50
            )
            if i % 200 == 0:
                yield deferLater(reactor, 0, lambda: None)
        # A seal waits for the next segment's file; a close would not.
        yield recording.seal()
        yield recording.close("done")
        report = verify_session(recording.directory, anchors)
        self.assertEqual(report.findings, ())
        self.assertEqual(report.records, 2002)
        self.assertGreater(report.segments, 1)


CHILD = textwrap.dedent(
    """
    import sys, time
    from twisted.internet import reactor, task
    from twisted.python.threadpool import ThreadPool
    from gatehouse.ids import new_session_id
    from gatehouse.recording import keys
    from gatehouse.recording.recorder import SegmentRecorder, thread_executor

    root_pem, key_dir, rec_dir = sys.argv[1:4]
    issued, problems = keys.KeyDirectory(key_dir).load()
    pool = ThreadPool(1, 2, "child")
    pool.start()
    recorder = SegmentRecorder(
        rec_dir, "gw-crash", lambda wall: keys.current_key(issued, wall), reactor,
        thread_executor(reactor, pool), block_bytes=4096, flush_interval=0.01,
    )
    recording = recorder.open(new_session_id(), {"protocol": "crash-test"})
    print("DIR", recording.directory, flush=True)

    def sealed(info):
        print("SEALED", info.first_seq + info.record_count - 1, flush=True)

    def tick(n=[0]):
        for _ in range(50):
            recording.record(2, 1, 0, b"row %08d " % n[0] + b"x" * 180)
            n[0] += 1
        if n[0] % 1000 == 0:
            recording.seal().addCallback(sealed)

    task.LoopingCall(tick).start(0.001)
    reactor.run()
    """
)


class CrashTests(TestCase):
    """
    A recorder killed with SIGKILL mid-stream leaves a verifiable prefix.
    """

    def test_sigkill_mid_stream(self):
        anchors, issued = epoch_keys(time.time() - 10, gateway="gw-crash")
        key_dir = self.mktemp()
        keys.KeyDirectory(key_dir).add(issued)
        rec_dir = self.mktemp()
        child = subprocess.Popen(
            [sys.executable, "-c", CHILD, "unused", key_dir, rec_dir],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        acknowledged = -1
        directory = None
        try:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                line = child.stdout.readline()
                if not line:
                    break
                word, value = line.split(None, 1)
                if word == "DIR":
                    directory = value.strip()
                elif word == "SEALED":
                    acknowledged = int(value)
                    if acknowledged >= 5000:
                        break
        finally:
            os.kill(child.pid, signal.SIGKILL)
            child.wait()
            child.stdout.close()
            child.stderr.close()
        self.assertIsNotNone(directory, "child never started recording")
        self.assertGreaterEqual(acknowledged, 5000, "child acknowledged too few seals")

        report = verify_session(directory, anchors)
        problems = {f.problem for f in report.findings}
        self.assertEqual(problems, {"incomplete"}, report.findings)
        self.assertEqual(report.exit_code, 3)
        self.assertFalse(report.complete)
        self.assertGreaterEqual(report.sealed_records, acknowledged + 1)
        seqs = [r.seq for r in read_records(directory)]
        self.assertEqual(seqs[: acknowledged + 1], list(range(acknowledged + 1)))

        # Were the index to say the session closed, the tail would be an
        # alarm rather than a crash.
        closed = verify_session(directory, anchors, IndexFacts(closed=True))
        self.assertEqual(closed.exit_code, 1)


class BlockFramingTests(SynchronousTestCase):
    """L{frame_block_parts}: what is compressed, what is stored, as pieces."""

    def block(self, payloads):
        encoder = SessionEncoder(
            new_session_id().bytes, "gw", epoch_keys(time.time() - 10)[1][0], 0, NS
        )
        for payload in payloads:
            encoder.add(RecordType.DATA, 1, 0, 0, payload)
        return encoder.take_block()

    def framed(self, block):
        header, data = frame_block_parts(block)
        fields = BLOCK_HEADER.unpack(header)
        return fields[1], fields[3], fields[4], data

    def test_text_compressed(self):
        """Text-like records are compressed: one piece, the zstd frame."""
        block = self.block([b"42|alice|alice@example.com|ok\n" * 10] * 4000)
        codec, raw_len, stored_len, data = self.framed(block)
        self.assertEqual((codec, raw_len), (CODEC_ZSTD, block.size))
        self.assertEqual(len(data), 1)
        self.assertEqual(len(data[0]), stored_len)
        self.assertEqual(zstandard.decompress(data[0]), block.raw)

    def test_random_stored_as_pieces(self):
        """
        A large block of random bytes is stored (its first 64 KiB do not
        compress), its pieces the records' own framing and payloads.
        """
        block = self.block([os.urandom(64 * 1024) for _ in range(16)])
        codec, raw_len, stored_len, data = self.framed(block)
        self.assertEqual(
            (codec, raw_len, stored_len), (CODEC_STORED,) + (block.size,) * 2
        )
        self.assertEqual(b"".join(data), block.raw)
        self.assertEqual(len(data), 32)

    def test_random_head_compressible_tail(self):
        """
        The sample decides for a large block: a random first 64 KiB stores
        the block, whatever follows (a valid, if larger, block).
        """
        block = self.block([os.urandom(64 * 1024)] + [b"a" * 65536] * 8)
        self.assertEqual(self.framed(block)[0], CODEC_STORED)
        # A small block is always tried whole.
        block = self.block([os.urandom(1000), b"a" * 100_000])
        self.assertEqual(self.framed(block)[0], CODEC_ZSTD)

    def test_many_pieces_written(self):
        """
        A stored block of more pieces than one gathered write takes (small
        random records) is written whole and verifies.
        """
        clock = Clock()
        clock.advance(time.time())
        anchors, issued = epoch_keys(clock.seconds() - 10)
        recorder = SegmentRecorder(
            self.mktemp(),
            "gw-test",
            lambda wall: keys.current_key(issued, wall),
            clock,
            synchronous_executor,
            monotonic_ns=lambda: int(clock.seconds() * NS),
        )
        recording = recorder.open(new_session_id(clock.seconds()), {})
        sent = [os.urandom(100) for _ in range(9000)]
        for payload in sent:
            recording.record(RecordType.DATA, 1, 0, payload)
        self.successResultOf(recording.close("done"))
        report = verify_session(recording.directory, anchors)
        self.assertEqual((report.exit_code, report.findings), (0, ()))
        got = [r.payload for r in read_records(recording.directory)][1:-1]
        self.assertEqual(got, sent)
