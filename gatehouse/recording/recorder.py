"""
The default recorder: signed segment files, written off the reactor thread.

The reactor thread does only per-record framing and hashing
(L{SessionEncoder.add}); compressing, writing and fsyncing happen on a
thread pool, one job at a time per session so that each file is written in
order.  Blocks are cut when enough bytes wait or after C{flush_interval};
segments are sealed on size, on time (heartbeat) and at close.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import time
import uuid
from collections import deque
from collections.abc import Callable

from twisted.internet.defer import Deferred, maybeDeferred, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from gatehouse.recording.encoder import (
    PendingBlock,
    PendingSeal,
    SealedSegment,
    SessionEncoder,
    complete_seal,
    frame_block,
)
from gatehouse.recording.format import (
    BLOCK_HEADER,
    RecordType,
    SegmentHeader,
    add_block_to_digest,
    segment_filename,
)
from gatehouse.recording.interfaces import (
    IRecorder,
    ISessionRecording,
    RecordingFailed,
    RecordingUnavailable,
    SealInfo,
)
from gatehouse.recording.keys import EpochKey
from gatehouse.recording.reader import session_directory

NS = 1_000_000_000

#: An executor runs a callable somewhere (a thread) and returns a Deferred.
Executor = Callable[..., Deferred]


def synchronous_executor(fn: Callable, *args: object) -> Deferred:
    """Run C{fn} right away on this thread: for in-memory tests."""
    return maybeDeferred(fn, *args)


def thread_executor(reactor: object, pool: object) -> Executor:
    """An executor on a Twisted thread pool."""

    def run(fn: Callable, *args: object) -> Deferred:
        return deferToThreadPool(reactor, pool, fn, *args)

    return run


def _start_writeback(fd: int, offset: int, length: int) -> None:
    """
    Ask the kernel to begin writing a range back now.  On Linux,
    POSIX_FADV_DONTNEED starts asynchronous writeback of dirty pages (and
    drops clean ones: recordings are written once and read rarely).
    """
    advise = getattr(os, "posix_fadvise", None)
    if advise is not None:
        try:
            advise(fd, offset, length, os.POSIX_FADV_DONTNEED)
        except OSError:
            pass


class _SegmentFiles:
    """
    The files of one session.  Every method runs on a worker thread, one at
    a time, in submission order.

    Seals are completed here (L{complete_seal}): only here are the stored
    bytes of the blocks known, and the link of the previous seal.
    """

    def __init__(self, directory: str):
        self.directory = directory
        self._file = None
        self._prev_link: bytes | None = None
        self._stored = hashlib.sha256()
        self._broken: str | None = None

    def _write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            written = self._file.write(view)
            if not written:
                raise OSError("short write to segment file")
            view = view[written:]

    def _check(self) -> None:
        # After one failed write nothing else may land in the files: a
        # seal over blocks that were never written would be a lie.
        if self._broken is not None:
            raise RecordingFailed(f"an earlier write failed: {self._broken}")

    def _guarded(self, fn, *args):
        self._check()
        try:
            return fn(*args)
        except Exception as e:
            self._broken = str(e) or type(e).__name__
            raise

    def open(self, header: SegmentHeader) -> None:
        self._guarded(self._open, header)

    def _open(self, header: SegmentHeader) -> None:
        os.makedirs(self.directory, mode=0o750, exist_ok=True)
        path = os.path.join(self.directory, segment_filename(header.segment_index))
        self._file = open(path, "xb", buffering=0)
        self._write(header.to_bytes())
        self._prev_link = header.prev_link
        self._stored = hashlib.sha256()

    def write_block(self, block: PendingBlock) -> None:
        self._guarded(self._write_block, block)

    def _write_block(self, block: PendingBlock) -> None:
        data = frame_block(block)
        start = self._file.tell()
        self._write(data)
        # Start writing the block back to disk now, in the background, so
        # the fsync at the seal has little left to wait for.
        _start_writeback(self._file.fileno(), start, len(data))
        view = memoryview(data)
        add_block_to_digest(
            self._stored, view[: BLOCK_HEADER.size], view[BLOCK_HEADER.size :]
        )

    def seal(self, pending: PendingSeal) -> SealedSegment:
        return self._guarded(self._seal, pending)

    def _seal(self, pending: PendingSeal) -> SealedSegment:
        sealed = complete_seal(pending, self._stored.digest(), self._prev_link)
        f = self._file
        self._write(sealed.seal)
        os.fsync(f.fileno())
        f.close()
        self._file = None
        # The new file's directory entry must survive a crash too.
        fd = os.open(self.directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        if sealed.next_header is not None:
            self._open(sealed.next_header)
        return sealed

    def abandon(self) -> None:
        if self._file is not None:
            try:
                self._file.close()
            except OSError:
                pass
            self._file = None


class _SerialJobs:
    """Runs jobs through an executor strictly one after another."""

    def __init__(self, executor: Executor):
        self._executor = executor
        self._queue: deque = deque()
        self._running = False

    def submit(self, fn: Callable, *args: object) -> Deferred:
        d = Deferred()
        self._queue.append((fn, args, d))
        if not self._running:
            self._next()
        return d

    def _next(self) -> None:
        if not self._queue:
            self._running = False
            return
        self._running = True
        fn, args, d = self._queue.popleft()

        def done(result: object) -> None:
            self._next()
            if isinstance(result, Failure):
                d.errback(result)
            else:
                d.callback(result)

        self._executor(fn, *args).addBoth(done)


@implementer(ISessionRecording)
class SegmentRecording:
    """
    The recording of one session into signed segment files.

    Create through L{SegmentRecorder.open}.
    """

    _log = Logger()

    def __init__(
        self,
        recorder: SegmentRecorder,
        session_id: uuid.UUID,
        epoch_key: EpochKey,
        meta: dict,
    ):
        self._recorder = recorder
        self._clock = recorder.clock
        self._monotonic = recorder.monotonic_ns
        self.session_id = str(session_id)
        self.directory = session_directory(recorder.directory, session_id)
        self.failed = False
        self._failure_reason: str | None = None
        self._failure_waiters: list[Deferred] = []
        self._closing = False
        self._producers: list = []
        self._paused = False
        self._queued = 0
        self._flush_call = None
        self._mono0 = self._monotonic()
        wall = int(self._clock.seconds() * NS)
        self._encoder = SessionEncoder(
            session_id.bytes,
            recorder.gateway_id,
            epoch_key,
            wall,
            recorder.seal_interval_ns,
        )
        self._files = _SegmentFiles(self.directory)
        self._jobs = _SerialJobs(recorder.executor)
        self._jobs.submit(self._files.open, self._encoder.header).addErrback(
            self._fail
        ).addErrback(_ignore)
        self._heartbeat = self._clock.callLater(
            recorder.seal_interval, self._on_heartbeat
        )
        self.record(RecordType.META, 0, 0, json.dumps(meta, sort_keys=True).encode())

    # -- data path ---------------------------------------------------------

    def record(self, rtype: int, direction: int, channel: int, payload: bytes) -> int:
        """See L{ISessionRecording.record}."""
        if self.failed or self._closing:
            raise RecordingFailed(self._failure_reason or "recording is closed")
        encoder = self._encoder
        seq = encoder.add(
            rtype, direction, channel, self._monotonic() - self._mono0, payload
        )
        if encoder.pending_bytes >= self._recorder.block_bytes:
            self._cut_block()
            if encoder.segment_raw_bytes >= self._recorder.segment_max_bytes:
                self._seal(final=False)
        elif self._flush_call is None:
            self._flush_call = self._clock.callLater(
                self._recorder.flush_interval, self._on_flush
            )
        return seq

    def _cut_block(self) -> None:
        block = self._encoder.take_block()
        if block is None:
            return
        if self._flush_call is not None and self._flush_call.active():
            self._flush_call.cancel()
        self._flush_call = None
        size = len(block.raw)
        self._queued += size
        if not self._paused and self._queued > self._recorder.high_water:
            self._set_paused(True)
        self._jobs.submit(self._files.write_block, block).addCallbacks(
            self._written, self._fail, callbackArgs=(size,)
        ).addErrback(_ignore)

    def _written(self, _: object, size: int) -> None:
        self._queued -= size
        if self._paused and self._queued <= self._recorder.low_water:
            self._set_paused(False)

    def _on_flush(self) -> None:
        self._flush_call = None
        if not self.failed:
            self._cut_block()

    # -- sealing -----------------------------------------------------------

    def _on_heartbeat(self) -> None:
        self._heartbeat = None
        if not self.failed and not self._closing:
            self._seal(final=False).addErrback(_ignore)

    def _seal(self, final: bool) -> Deferred:
        self._cut_block()
        if self._heartbeat is not None and self._heartbeat.active():
            self._heartbeat.cancel()
        self._heartbeat = None
        wall = int(self._clock.seconds() * NS)
        mono = self._monotonic() - self._mono0
        d = self._jobs.submit(self._files.seal, self._encoder.seal(wall, mono, final))
        if not final:
            self._heartbeat = self._clock.callLater(
                self._recorder.seal_interval, self._on_heartbeat
            )

        def sealed_ok(sealed: SealedSegment) -> SealInfo:
            statement = sealed.statement
            info = SealInfo(
                session_id=self.session_id,
                segment_index=sealed.index,
                link=sealed.link,
                final=statement.final,
                first_seq=statement.first_seq,
                record_count=statement.record_count,
                wall_seal=statement.wall_seal,
            )
            self._recorder.sealed(info)
            return info

        d.addCallbacks(sealed_ok, self._fail)
        return d

    def seal(self) -> Deferred:
        """See L{ISessionRecording.seal}."""
        if self.failed:
            return _failed(self._failure_reason)
        if self._closing:
            return _failed("recording is closed")
        return self._seal(final=False)

    def close(self, reason: str) -> Deferred:
        """See L{ISessionRecording.close}."""
        if self._closing:
            return _failed("recording is already closed")
        if self.failed:
            self._closing = True
            self._recorder.closed(self)
            return _failed(self._failure_reason)
        self.record(RecordType.CLOSE, 0, 0, json.dumps({"reason": reason}).encode())
        self._closing = True
        d = self._seal(final=True)
        d.addBoth(self._closed)
        return d

    def _closed(self, result: object) -> object:
        self._recorder.closed(self)
        if self._paused:
            self._set_paused(False)
        self._producers = []
        return result

    # -- failure -----------------------------------------------------------

    def _fail(self, failure: Failure) -> Failure:
        if not self.failed:
            self.failed = True
            error = failure.value
            if isinstance(error, OSError) and error.errno == errno.ENOSPC:
                reason = f"recording failed: disk full ({self.directory})"
            else:
                reason = f"recording failed: {failure.getErrorMessage()}"
            self._failure_reason = reason
            self._log.failure(
                "Recording of session {session_id} failed; the session is stopped",
                failure,
                session_id=self.session_id,
            )
            for call in (self._flush_call, self._heartbeat):
                if call is not None and call.active():
                    call.cancel()
            self._jobs.submit(self._files.abandon).addErrback(_ignore)
            waiters, self._failure_waiters = self._failure_waiters, []
            for d in waiters:
                d.callback(reason)
            self._recorder.failed_recording(self, reason)
        return failure

    def notifyFailure(self) -> Deferred:
        """See L{ISessionRecording.notifyFailure}."""
        if self.failed:
            return succeed(self._failure_reason)
        d = Deferred()
        self._failure_waiters.append(d)
        return d

    # -- backpressure ------------------------------------------------------

    def registerProducer(self, producer: object) -> None:
        """See L{ISessionRecording.registerProducer}."""
        self._producers.append(producer)
        if self._paused:
            producer.pauseProducing()

    def unregisterProducer(self, producer: object) -> None:
        """See L{ISessionRecording.unregisterProducer}."""
        if producer in self._producers:
            self._producers.remove(producer)
            if self._paused:
                producer.resumeProducing()

    def _set_paused(self, paused: bool) -> None:
        self._paused = paused
        for producer in list(self._producers):
            if paused:
                producer.pauseProducing()
            else:
                producer.resumeProducing()


def _ignore(failure: Failure) -> None:
    """Swallow a failure that L{SegmentRecording._fail} has already reported."""


def _failed(reason: str | None) -> Deferred:
    d = Deferred()
    d.errback(RecordingFailed(reason))
    return d


@implementer(IRecorder)
class SegmentRecorder:
    """
    Makes L{SegmentRecording}s under one recordings directory.

    @param keys: gives the epoch key valid at a wall time (ns), or None;
        see L{gatehouse.recording.keyring.KeyRing.current}.
    @param monotonic_ns: the monotonic clock, in ns (inject for tests).
    @param executor: where file work runs; a thread pool in the daemon.
    """

    def __init__(
        self,
        directory: str,
        gateway_id: str,
        keys: Callable[[int], EpochKey | None],
        clock: IReactorTime,
        executor: Executor,
        *,
        monotonic_ns: Callable[[], int] = time.monotonic_ns,
        segment_max_bytes: int = 16 * 1024 * 1024,
        seal_interval: float = 30.0,
        flush_interval: float = 0.2,
        block_bytes: int = 1024 * 1024,
        high_water: int = 16 * 1024 * 1024,
        low_water: int = 4 * 1024 * 1024,
    ):
        self.directory = directory
        self.gateway_id = gateway_id
        self._keys = keys
        self.clock = clock
        self.executor = executor
        self.monotonic_ns = monotonic_ns
        self.segment_max_bytes = segment_max_bytes
        self.seal_interval = seal_interval
        self.seal_interval_ns = int(seal_interval * NS)
        self.flush_interval = flush_interval
        self.block_bytes = block_bytes
        self.high_water = high_water
        self.low_water = low_water
        self.open_recordings: set[SegmentRecording] = set()
        self._seal_observers: list[Callable[[SealInfo], object]] = []
        self._failure_observers: list[Callable[[SegmentRecording, str], object]] = []

    def can_open(self) -> bool:
        """Whether L{open} would find a signing key valid now."""
        return self._keys(int(self.clock.seconds() * NS)) is not None

    def open(self, session_id: uuid.UUID, meta: dict) -> SegmentRecording:
        """See L{IRecorder.open}."""
        wall = int(self.clock.seconds() * NS)
        key = self._keys(wall)
        if key is None:
            raise RecordingUnavailable("no signing key is valid now")
        recording = SegmentRecording(self, session_id, key, meta)
        self.open_recordings.add(recording)
        return recording

    def observe_seals(self, observer: Callable[[SealInfo], object]) -> None:
        """Call C{observer} with every durable seal (index, metrics)."""
        self._seal_observers.append(observer)

    def observe_failures(
        self, observer: Callable[[SegmentRecording, str], object]
    ) -> None:
        """Call C{observer} with every recording that fails (metrics, alerts)."""
        self._failure_observers.append(observer)

    def sealed(self, info: SealInfo) -> None:
        """Report a durable seal to the observers."""
        for observer in self._seal_observers:
            observer(info)

    def failed_recording(self, recording: SegmentRecording, reason: str) -> None:
        """Report a failed recording to the observers."""
        for observer in self._failure_observers:
            observer(recording, reason)

    def closed(self, recording: SegmentRecording) -> None:
        """Forget a recording that has closed."""
        self.open_recordings.discard(recording)
