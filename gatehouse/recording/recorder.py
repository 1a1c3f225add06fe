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
from io import FileIO
from typing import Any, TypeVar

from twisted.internet.defer import Deferred, maybeDeferred, succeed
from twisted.internet.interfaces import (
    IDelayedCall,
    IPushProducer,
    IReactorFromThreads,
    IReactorTime,
)
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.python.threadpool import ThreadPool
from zope.interface import implementer

from gatehouse.recording.encoder import (
    PendingBlock,
    PendingSeal,
    RecordChain,
    SealedSegment,
    SessionEncoder,
    complete_seal,
    frame_block_parts,
)
from gatehouse.recording.format import (
    BLOCK_HEADER,
    MAX_PAYLOAD,
    MAX_SEAL,
    RECORD_HEADER,
    RecordType,
    SegmentHeader,
    add_block_to_digest,
    segment_filename,
)
from gatehouse.recording.interfaces import (
    SEGMENT_UNAVAILABLE,
    SPACE_EXHAUSTED,
    IRecorder,
    ISessionRecording,
    RecordingFailed,
    RecordingUnavailable,
    SealInfo,
)
from gatehouse.recording.keys import EpochKey
from gatehouse.recording.reader import session_directory

NS = 1_000_000_000
RECORD_FRAMING = RECORD_HEADER.size
#: The close record keeps at most this many characters of each reason.
MAX_CLOSE_REASON = 1024
#: Space kept back in every segment for the close record and the final
#: seal (JSON may spell a character in six bytes).
#: Space kept back in every segment for what the gateway tells the client
#: when it ends a session whose recording is exhausted.
LAST_WORDS = 4096
CLOSE_RESERVE = LAST_WORDS + (
    RECORD_FRAMING + BLOCK_HEADER.size + 12 * MAX_CLOSE_REASON + 64 + MAX_SEAL
)

#: An executor runs a callable somewhere (a thread) and returns a Deferred.
Executor = Callable[..., Deferred[Any]]

_T = TypeVar("_T")


def synchronous_executor(fn: Callable[..., object], *args: object) -> Deferred[Any]:
    """Run C{fn} right away on this thread: for in-memory tests."""
    return maybeDeferred(fn, *args)


def thread_executor(reactor: IReactorFromThreads, pool: ThreadPool) -> Executor:
    """An executor on a Twisted thread pool."""

    def run(fn: Callable[..., object], *args: object) -> Deferred[Any]:
        return deferToThreadPool(reactor, pool, fn, *args)

    return run


#: The most pieces one gathered write may take (Linux's IOV_MAX).
_IOV_MAX = min(os.sysconf("SC_IOV_MAX"), 1024) if hasattr(os, "sysconf") else 16


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

    With C{capacity}, each segment file is preallocated to that many bytes
    when it is opened, so that writing the records the reactor has accepted
    for it cannot fail for lack of space, and cut back to its real length
    when it is sealed.  The next segment's file is prepared (created under a
    name the reader ignores, and preallocated) before the current one is
    sealed, and takes its real name only once it holds its header.
    """

    def __init__(self, directory: str, capacity: int | None = None):
        self.directory = directory
        self.capacity = capacity
        self._file: FileIO | None = None
        #: prepared files by segment index: (file, temporary path)
        self._next: dict[int, tuple[FileIO, str]] = {}
        self._prev_link: bytes | None = None
        self._stored = hashlib.sha256()
        self._broken: str | None = None
        #: the records' hash chain, extended here (see L{RecordChain})
        self._chain: RecordChain | None = None

    def _write(self, data: bytes) -> None:
        f, _ = self._segment()
        view = memoryview(data)
        while view:
            written = f.write(view)
            if not written:
                raise OSError("short write to segment file")
            view = view[written:]

    def _check(self) -> None:
        # After one failed write nothing else may land in the files: a
        # seal over blocks that were never written would be a lie.
        if self._broken is not None:
            raise RecordingFailed(f"an earlier write failed: {self._broken}")

    def _segment(self) -> tuple[FileIO, bytes]:
        """The open segment's file and the link it binds to its predecessor."""
        if self._file is None or self._prev_link is None:
            raise RecordingFailed("no segment file is open")
        return self._file, self._prev_link

    def _guarded(self, fn: Callable[..., _T], *args: object) -> _T:
        self._check()
        try:
            return fn(*args)
        except Exception as e:
            self._broken = str(e) or type(e).__name__
            raise

    def _reserve(self, f: FileIO) -> None:
        if self.capacity is not None:
            os.posix_fallocate(f.fileno(), 0, self.capacity)

    def open(self, header: SegmentHeader) -> int | None:
        """Open segment 0; return a duplicate of its descriptor (see L{grow})."""
        self._guarded(self._open, header)
        return self._dup(self._segment()[0])

    def _dup(self, f: FileIO) -> int | None:
        return os.dup(f.fileno()) if self.capacity is not None else None

    def _open(self, header: SegmentHeader) -> None:
        os.makedirs(self.directory, mode=0o750, exist_ok=True)
        path = os.path.join(self.directory, segment_filename(header.segment_index))
        self._file = open(path, "xb", buffering=0)
        self._prev_link = header.prev_link
        self._chain = RecordChain(header)
        self._write(header.to_bytes())
        self._reserve(self._file)
        self._stored = hashlib.sha256()

    def prepare(self, index: int) -> int | None:
        """
        Create and preallocate the file of segment C{index}, before the
        open segment is sealed.  A failure (no space) leaves the open
        segment as it was, to be sealed as the last.
        """
        self._check()
        # This may run before the job that opens segment 0 has made the
        # directory: prepare runs beside the queue of writes, not in it.
        os.makedirs(self.directory, mode=0o750, exist_ok=True)
        name = "." + segment_filename(index) + ".new"
        path = os.path.join(self.directory, name)
        f = open(path, "wb", buffering=0)
        try:
            self._reserve(f)
        except BaseException:
            f.close()
            os.unlink(path)
            raise
        self._next[index] = (f, path)
        return self._dup(f)

    def discard_next(self) -> None:
        """Drop the prepared files that no seal will use."""
        while self._next:
            _, (f, path) = self._next.popitem()
            f.close()
            try:
                os.unlink(path)
            except OSError:
                pass

    def write_block(self, block: PendingBlock) -> int:
        return self._guarded(self._write_block, block)

    def _write_block(self, block: PendingBlock) -> int:
        assert self._chain is not None, "a block before segment 0 was opened"
        header, data = frame_block_parts(self._chain.block(block))
        f, _ = self._segment()
        fd = f.fileno()
        start = f.tell()
        # Gathered writes: the header, records and payloads are not copied
        # into one string first.
        pieces = (header, *data)
        size = 0
        for i in range(0, len(pieces), _IOV_MAX):
            chunk = pieces[i : i + _IOV_MAX]
            length = sum(map(len, chunk))
            written = os.writev(fd, chunk)
            if written < length:
                self._write(b"".join(chunk)[written:])
            size += length
        # Start writing the block back to disk now, in the background, so
        # the fsync at the seal has little left to wait for.
        _start_writeback(fd, start, size)
        # A compressed block's data is one piece, its zstd frame; a stored
        # block's data is not hashed (see add_block_to_digest).
        add_block_to_digest(self._stored, header, data[0] if data else b"")
        return size

    def seal(self, pending: PendingSeal) -> SealedSegment:
        return self._guarded(self._seal, pending)

    def _seal(self, pending: PendingSeal) -> SealedSegment:
        f, prev_link = self._segment()
        assert self._chain is not None, "a seal before segment 0 was opened"
        pending = self._chain.seal(pending)
        sealed = complete_seal(pending, self._stored.digest(), prev_link)
        self._write(sealed.seal)
        if self.capacity is not None:
            # Give back the preallocated space the segment did not use.
            os.ftruncate(f.fileno(), f.tell())
        os.fsync(f.fileno())
        f.close()
        self._file = None
        header = sealed.next_header
        if header is None:
            self.discard_next()
        elif header.segment_index in self._next:
            index = header.segment_index
            f, path = self._next.pop(index)
            self._file = f
            self._prev_link = header.prev_link
            self._write(header.to_bytes())
            os.rename(path, os.path.join(self.directory, segment_filename(index)))
            self._stored = hashlib.sha256()
        # The new file's directory entry must survive a crash too.
        fd = os.open(self.directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        if header is not None and self._file is None:
            self._open(header)
        return sealed

    def abandon(self) -> None:
        self.discard_next()
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
        self._queue: deque[
            tuple[Callable[..., object], tuple[object, ...], Deferred[Any]]
        ] = deque()
        self._running = False

    def submit(self, fn: Callable[..., object], *args: object) -> Deferred[Any]:
        d: Deferred[Any] = Deferred()
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

    Space: a record is accepted (and may then be forwarded) only when it
    fits, with the close record and the final seal, into the space
    preallocated for the open segment.  The next segment's file is prepared
    before the open one is sealed; while that is under way records go on
    into the open segment (its headroom) and the producers are paused.  If
    the next file cannot be made (the disk is full), the recording is
    I{exhausted}: it accepts no more records, tells the session to end
    (L{notifyFailure}), and its L{close} still seals the open segment as
    the last, with the reason, so the session verifies as complete.

    @ivar exhausted: the reason the recording stopped accepting records
        while its files are sound, or None.
    @param wall_start: the wall ns C{epoch_key} was chosen for (default:
        now); the delegation is signed for that time.
    """

    _log = Logger()

    def __init__(
        self,
        recorder: SegmentRecorder,
        session_id: uuid.UUID,
        epoch_key: EpochKey,
        meta: dict[str, Any],
        wall_start: int | None = None,
    ):
        self._recorder = recorder
        self._clock = recorder.clock
        self._monotonic = recorder.monotonic_ns
        self.session_id = str(session_id)
        self.directory = session_directory(recorder.directory, session_id)
        self.failed = False
        self.exhausted: str | None = None
        self._failure_reason: str | None = None
        self._failure_waiters: list[Deferred[Any]] = []
        self._closing = False
        self._producers: list[IPushProducer] = []
        self._paused = False
        self._backlogged = False
        #: waiters for a seal that waits for the next segment's file
        self._rotation: list[Deferred[Any]] | None = None
        self._preparing = False
        self._next_ready = False
        self._queued = 0
        self._flush_call: IDelayedCall | None = None
        self._mono0 = self._monotonic()
        # The wall time the epoch key was chosen for: read again, it could
        # lie past the end of the key's window.
        wall = int(self._clock.seconds() * NS) if wall_start is None else wall_start
        self._encoder = SessionEncoder(
            session_id.bytes,
            recorder.gateway_id,
            epoch_key,
            wall,
            recorder.seal_interval_ns,
            chain_in_writer=True,
        )
        self._files = _SegmentFiles(self.directory, recorder.segment_capacity)
        self._jobs = _SerialJobs(recorder.executor)
        self._used = len(self._encoder.header.to_bytes())
        #: how far records may fill the open segment
        self._limit = recorder.segment_limit
        #: duplicates of the segment files' descriptors, by index, for
        #: growing a file on this thread (L{_grow})
        self._fds: dict[int, int] = {}
        self._jobs.submit(self._files.open, self._encoder.header).addCallbacks(
            self._opened, self._fail, callbackArgs=(0,)
        ).addErrback(_ignore)
        self._heartbeat: IDelayedCall | None = self._clock.callLater(
            recorder.seal_interval, self._on_heartbeat
        )
        self.record(RecordType.META, 0, 0, json.dumps(meta, sort_keys=True).encode())

    # -- data path ---------------------------------------------------------

    def record(self, rtype: int, direction: int, channel: int, payload: bytes) -> int:
        """See L{ISessionRecording.record}."""
        if self.failed or self._closing:
            raise RecordingFailed(self._failure_reason or "recording is closed")
        encoder = self._encoder
        recorder = self._recorder
        need = len(payload) + RECORD_FRAMING * (1 + len(payload) // MAX_PAYLOAD)
        if not encoder.pending_bytes:
            need += BLOCK_HEADER.size
        if self.exhausted:
            # Room is kept for the gateway's last words to the client.
            if self._used + need > self._last_words:
                raise RecordingFailed(self.exhausted)
        elif self._used + need > self._limit and not self._grow(need):
            raise RecordingFailed(self.exhausted)
        seq = encoder.add(
            rtype, direction, channel, self._monotonic() - self._mono0, payload
        )
        self._used += need
        if encoder.pending_bytes >= recorder.block_bytes:
            self._cut_block()
        elif self._flush_call is None:
            self._flush_call = self._clock.callLater(
                recorder.flush_interval, self._on_flush
            )
        if self._used >= recorder.segment_max_bytes // 2 and not self.exhausted:
            if self._used >= recorder.segment_max_bytes:
                if self._rotation is None:
                    self._rotate().addErrback(_ignore)
                elif not self._paused:
                    self._update_paused()
            elif not (self._preparing or self._next_ready):
                self._prepare()
        return seq

    def _opened(self, fd: int | None, index: int) -> None:
        if fd is None:
            return
        if self._closing or self.failed:
            os.close(fd)
        else:
            self._fds[index] = fd

    def _forget_fds(self, upto: int | None = None) -> None:
        for index in [i for i in self._fds if upto is None or i <= upto]:
            os.close(self._fds.pop(index))

    def _grow(self, need: int) -> bool:
        """
        Make room in the open segment for a record larger than its
        headroom left, here and now: preallocate the file further (a system
        call on this thread, as long as the kernel takes to reserve C{need}
        bytes: rare, and cheaper than hashing the record).  On failure the
        recording is exhausted.

        @return: whether the record may be accepted.
        """
        recorder = self._recorder
        limit = self._used + need
        index = self._encoder.header.segment_index
        if recorder.segment_capacity is not None:
            fd = self._fds.get(index)
            if fd is None:
                self._exhaust(
                    f"{SPACE_EXHAUSTED}: a record of {need} bytes does not fit in "
                    f"the space reserved for segment {index}, whose file is not "
                    "open yet"
                )
                return False
            try:
                recorder.fallocate(fd, 0, limit + CLOSE_RESERVE)
            except OSError as e:
                self._exhaust(
                    f"{SPACE_EXHAUSTED}: no space for a record of {need} bytes "
                    f"in segment {index} in {self.directory} ({e.strerror})"
                )
                return False
        self._limit = limit
        return True

    def _cut_block(self) -> None:
        block = self._encoder.take_block()
        if block is None:
            return
        if self._flush_call is not None and self._flush_call.active():
            self._flush_call.cancel()
        self._flush_call = None
        size = block.size
        self._queued += size
        if not self._backlogged and self._queued > self._recorder.high_water:
            self._backlogged = True
            self._update_paused()
        self._jobs.submit(self._files.write_block, block).addCallbacks(
            self._written, self._fail, callbackArgs=(size,)
        ).addErrback(_ignore)

    def _written(self, stored: int, size: int) -> None:
        self._recorder.bytes_written += stored
        self._queued -= size
        if self._backlogged and self._queued <= self._recorder.low_water:
            self._backlogged = False
            self._update_paused()

    def _on_flush(self) -> None:
        self._flush_call = None
        if not self.failed:
            self._cut_block()

    # -- sealing -----------------------------------------------------------

    def _on_heartbeat(self) -> None:
        self._heartbeat = None
        if not self.failed and not self._closing and not self.exhausted:
            if self._rotation is None:
                self._rotate().addErrback(_ignore)

    def _prepare(self) -> None:
        """
        Have the next segment's file made and preallocated, ahead of the
        seal that will open it (at half a segment, so that it is usually
        ready when the segment is full).
        """
        if self._preparing or self._next_ready:
            return
        self._preparing = True
        index = self._encoder.header.segment_index + 1

        def prepared(fd: int | None) -> None:
            self._preparing = False
            self._opened(fd, index)
            if self._closing or self.failed:
                # The final seal (or the abandon) may have run before the
                # file was made: drop it in turn.
                self._jobs.submit(self._files.discard_next).addErrback(_ignore)
                return
            self._next_ready = True
            if self._rotation is not None:
                self._seal_rotation()

        def not_prepared(failure: Failure) -> None:
            self._preparing = False
            if self.failed:
                return
            error = failure.value
            if isinstance(error, OSError) and error.errno in (
                errno.ENOSPC,
                errno.EDQUOT,
            ):
                reason = (
                    f"{SPACE_EXHAUSTED}: no space for segment {index} in "
                    f"{self.directory}"
                )
            else:
                reason = (
                    f"{SEGMENT_UNAVAILABLE}: segment {index} cannot be created: "
                    f"{failure.getErrorMessage()}"
                )
            self._exhaust(reason)
            waiters, self._rotation = self._rotation or [], None
            for d in waiters:
                d.errback(RecordingFailed(reason))

        # Not queued behind the blocks waiting to be written: it touches
        # only the next file, which no queued job reads before the seal
        # that this callback submits.
        self._recorder.executor(self._files.prepare, index).addCallbacks(
            prepared, not_prepared
        ).addErrback(_ignore)

    def _rotate(self) -> Deferred[Any]:
        """
        Seal the open segment into the next one's file, once that file is
        ready.  Until it is, records go on into the open segment (its
        headroom), with the producers paused past C{segment_max_bytes}.
        Fires with the seal's L{SealInfo}.
        """
        d: Deferred[Any] = Deferred()
        if self._rotation is not None:
            self._rotation.append(d)
            return d
        self._rotation = [d]
        if self._next_ready:
            self._seal_rotation()
        else:
            self._prepare()
            self._update_paused()
        return d

    def _seal_rotation(self) -> None:
        waiters, self._rotation = self._rotation or [], None
        self._next_ready = False
        self._update_paused()

        def done(result: object) -> object:
            for d in waiters:
                if isinstance(result, Failure):
                    d.errback(RecordingFailed(result.getErrorMessage()))
                else:
                    d.callback(result)
            return None

        self._seal(final=False).addBoth(done)

    def _seal(self, final: bool) -> Deferred[Any]:
        self._cut_block()
        if self._heartbeat is not None and self._heartbeat.active():
            self._heartbeat.cancel()
        self._heartbeat = None
        wall = int(self._clock.seconds() * NS)
        mono = self._monotonic() - self._mono0
        d = self._jobs.submit(self._files.seal, self._encoder.seal(wall, mono, final))
        if not final:
            self._used = len(self._encoder.header.to_bytes())
            self._limit = self._recorder.segment_limit
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
            self._recorder.bytes_written += len(sealed.seal)
            self._forget_fds(upto=sealed.index)
            self._recorder.sealed(info)
            return info

        d.addCallbacks(sealed_ok, self._fail)
        return d

    def seal(self) -> Deferred[Any]:
        """
        See L{ISessionRecording.seal}.  The seal covers at least what was
        recorded before the call: it is made once the next segment's file
        is ready.
        """
        if self.failed:
            return _failed(self._failure_reason)
        if self._closing:
            return _failed("recording is closed")
        if self.exhausted:
            return _failed(self.exhausted)
        return self._rotate()

    def close(self, reason: str) -> Deferred[Any]:
        """
        See L{ISessionRecording.close}.  An exhausted recording still
        closes cleanly: the close record says why it ended, and the space
        for it and the final seal was kept free.
        """
        if self._closing:
            return _failed("recording is already closed")
        if self.failed:
            self._closing = True
            self._recorder.closed(self)
            return _failed(self._failure_reason)
        close = {"reason": reason[:MAX_CLOSE_REASON]}
        if self.exhausted:
            close["recording_ended"] = self.exhausted[:MAX_CLOSE_REASON]
        self._closing = True
        # Room for this record and the final seal is always kept back.
        self._encoder.add(
            RecordType.CLOSE,
            0,
            0,
            self._monotonic() - self._mono0,
            json.dumps(close).encode(),
        )
        d = self._seal(final=True)
        d.addBoth(self._closed)
        return d

    def _closed(self, result: object) -> object:
        self._recorder.closed(self)
        self._forget_fds()
        # A seal that waited for the next file: the final seal covers it.
        waiters, self._rotation = self._rotation or [], None
        for d in waiters:
            if isinstance(result, Failure):
                d.errback(RecordingFailed(result.getErrorMessage()))
            else:
                d.callback(result)
        self._backlogged = False
        self._update_paused()
        self._producers = []
        return result

    # -- failure -----------------------------------------------------------

    def _exhaust(self, reason: str) -> None:
        """
        Stop accepting records, the files being sound: the session must end,
        and L{close} seals what was recorded.
        """
        if self.exhausted or self.failed:
            return
        self.exhausted = reason
        self._last_words = self._used + LAST_WORDS
        self._log.warn(
            "Recording of session {session_id} stops: {reason}; the session "
            "is ended and its recording sealed",
            session_id=self.session_id,
            reason=reason,
        )
        waiters, self._failure_waiters = self._failure_waiters, []
        for d in waiters:
            d.callback(reason)
        self._recorder.exhausted_recording(self, reason)

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
            self._forget_fds()
            waiters, self._failure_waiters = self._failure_waiters, []
            for d in waiters:
                d.callback(reason)
            self._recorder.failed_recording(self, reason)
        return failure

    def notifyFailure(self) -> Deferred[Any]:
        """
        See L{ISessionRecording.notifyFailure}.  Also fires when the
        recording is exhausted: the session must end then too.
        """
        if self.failed:
            return succeed(self._failure_reason)
        if self.exhausted:
            return succeed(self.exhausted)
        d: Deferred[Any] = Deferred()
        self._failure_waiters.append(d)
        return d

    # -- backpressure ------------------------------------------------------

    def registerProducer(self, producer: IPushProducer) -> None:
        """See L{ISessionRecording.registerProducer}."""
        self._producers.append(producer)
        if self._paused:
            producer.pauseProducing()

    def unregisterProducer(self, producer: IPushProducer) -> None:
        """See L{ISessionRecording.unregisterProducer}."""
        if producer in self._producers:
            self._producers.remove(producer)
            if self._paused:
                producer.resumeProducing()

    def _update_paused(self) -> None:
        # Paused while writes lag, and past segment_max_bytes while the
        # next segment's file is being prepared.  Not when exhausted: the
        # protocol stops reading itself, and a closing TLS connection must
        # still read.
        full = (
            self._rotation is not None
            and self._used >= self._recorder.segment_max_bytes
        )
        paused = not self._closing and bool(self._backlogged or full)
        if paused == self._paused:
            return
        self._paused = paused
        for producer in list(self._producers):
            if paused:
                producer.pauseProducing()
            else:
                producer.resumeProducing()


def _ignore(failure: Failure) -> None:
    """Swallow a failure that L{SegmentRecording._fail} has already reported."""


def _failed(reason: str | None) -> Deferred[Any]:
    d: Deferred[Any] = Deferred()
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
    @param reserve_bytes: free space, beyond a new session's first segment,
        below which new sessions are refused; open sessions may use it to
        finish.
    @param preallocate: preallocate each segment file (see L{_SegmentFiles}).
    @param headroom_bytes: how far a segment may grow past
        C{segment_max_bytes} while its successor's file is prepared
        (default: L{default_headroom}); the documented slack of the
        segment size limit.
    @param free_bytes: gives the free space (for unprivileged users) of a
        directory; inject for tests.
    @param fallocate: C{os.posix_fallocate}, used on the reactor thread to
        grow a segment for a record larger than its headroom; inject for
        tests.

    @ivar bytes_written: bytes written into segment files (blocks and
        seals), for metrics.
    @ivar failures: recordings that failed (their files are not sound).
    @ivar exhaustions: recordings ended cleanly for lack of space (or of a
        new segment file).
    @ivar refused: sessions refused for want of free space.
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
        reserve_bytes: int = 0,
        preallocate: bool = True,
        headroom_bytes: int | None = None,
        free_bytes: Callable[[str], int] | None = None,
        fallocate: Callable[[int, int, int], None] = os.posix_fallocate,
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
        self.reserve_bytes = reserve_bytes
        if headroom_bytes is None:
            headroom_bytes = default_headroom(segment_max_bytes)
        #: the most a segment's header, blocks and records may take
        self.segment_limit = segment_max_bytes + headroom_bytes
        #: what each segment file is preallocated to, or None
        self.segment_capacity = (
            self.segment_limit + CLOSE_RESERVE if preallocate else None
        )
        self._free_bytes = free_bytes or free_space
        self.fallocate = fallocate
        self.bytes_written = 0
        self.failures = 0
        self.exhaustions = 0
        self.refused = 0
        self.open_recordings: set[SegmentRecording] = set()
        self._seal_observers: list[Callable[[SealInfo], object]] = []
        self._failure_observers: list[Callable[[SegmentRecording, str], object]] = []

    def can_open(self) -> bool:
        """Whether L{open} would accept a new session now."""
        return self.open_problem() is None

    def open_problem(self) -> str | None:
        """Why L{open} would refuse a new session now (no valid signing
        key, free space below the reserve), or None."""
        if self._keys(int(self.clock.seconds() * NS)) is None:
            return "no signing key is valid now"
        problem = self._space_problem()
        return None if problem is None else f"{SPACE_EXHAUSTED}: {problem}"

    def _space_problem(self) -> str | None:
        """Why no new session may start for want of space, or None."""
        if not self.reserve_bytes and self.segment_capacity is None:
            return None
        try:
            free = self._free_bytes(self.directory)
        except OSError as e:
            return f"the free space of {self.directory} cannot be read: {e.strerror}"
        need = self.reserve_bytes + (self.segment_capacity or 0)
        if free < need:
            return (
                f"free space in {self.directory} is {_mib(free)}, below the "
                f"reserve of {_mib(self.reserve_bytes)} plus a new session's "
                f"first segment ({_mib(self.segment_capacity or 0)})"
            )
        return None

    def open(self, session_id: uuid.UUID, meta: dict[str, Any]) -> SegmentRecording:
        """
        See L{IRecorder.open}.  Refuses while free space is below the
        reserve: what is left is for the open sessions to finish.
        """
        wall = int(self.clock.seconds() * NS)
        key = self._keys(wall)
        if key is None:
            raise RecordingUnavailable("no signing key is valid now")
        problem = self._space_problem()
        if problem is not None:
            self.refused += 1
            raise RecordingUnavailable(f"{SPACE_EXHAUSTED}: {problem}")
        recording = SegmentRecording(self, session_id, key, meta, wall)
        self.open_recordings.add(recording)
        return recording

    def readiness_problems(self) -> list[str]:
        """
        What keeps this recorder from taking new sessions, for people (a
        readiness check): the directory is not writable, or free space is
        below the reserve.  Empty when all is well.  Cheap (two system
        calls); callable on the reactor thread.
        """
        directory = self.directory
        if not os.path.isdir(directory):
            return [f"recording directory {directory} does not exist"]
        problems = []
        if not os.access(directory, os.W_OK | os.X_OK):
            problems.append(f"recording directory {directory} is not writable")
        problem = self._space_problem()
        if problem is not None:
            problems.append(problem)
        return problems

    def observe_seals(self, observer: Callable[[SealInfo], object]) -> None:
        """Call C{observer} with every durable seal (index, metrics)."""
        self._seal_observers.append(observer)

    def observe_failures(
        self, observer: Callable[[SegmentRecording, str], object]
    ) -> None:
        """
        Call C{observer} with every recording that fails or is exhausted
        (metrics, alerts); the reason tells which (L{SPACE_EXHAUSTED}).
        """
        self._failure_observers.append(observer)

    def sealed(self, info: SealInfo) -> None:
        """Report a durable seal to the observers."""
        for observer in self._seal_observers:
            observer(info)

    def failed_recording(self, recording: SegmentRecording, reason: str) -> None:
        """Report a failed recording to the observers."""
        self.failures += 1
        for observer in self._failure_observers:
            observer(recording, reason)

    def exhausted_recording(self, recording: SegmentRecording, reason: str) -> None:
        """Report a recording that stopped for want of space to the observers."""
        self.exhaustions += 1
        for observer in self._failure_observers:
            observer(recording, reason)

    def closed(self, recording: SegmentRecording) -> None:
        """Forget a recording that has closed."""
        self.open_recordings.discard(recording)


def default_headroom(segment_max_bytes: int) -> int:
    """
    How far a segment's framed records may run past C{segment_max_bytes}
    while the next segment's file is made: one default block (1 MiB), the
    slack documented in docs/recording-format.md, "Sealing".  It must cover
    what arrives between the segment filling and the producers pausing,
    and the wait for the next file when it was not ready in time.
    """
    return 1024 * 1024


def free_space(directory: str) -> int:
    """
    Bytes free for unprivileged users on the filesystem that holds (or will
    hold) C{directory}: its nearest existing ancestor's.
    """
    path = os.path.abspath(directory)
    while not os.path.exists(path) and os.path.dirname(path) != path:
        path = os.path.dirname(path)
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def _mib(n: int) -> str:
    return f"{n / (1024 * 1024):.1f} MiB"
