"""
Recorder throughput next to a plain fsync'd write of the same bytes.

Writes one session of 200-byte records and one of 64 KiB records through
the real recorder (reactor thread framing and hashing, a worker thread
compressing, writing and fsyncing, segments sealed on size and at close),
then the same records with a plain writer, then verifies the recording;
prints records/s and MB/s for each and the ratio recorder / plain.

The plain writer is what an application that wants the same durability
would do, with nothing of the recorder's: the same records in the same
order (the same payload objects), through a buffered file (1 MiB buffer,
the recorder's block size), into a new file for every C{segment_max_bytes}
of payload, each fsync'd and closed when full and the directory fsync'd
after it (the recorder fsyncs the segment and its directory at every
seal, which happens every C{segment_max_bytes}); no framing, hashing,
compression or signing.  It runs twice: as is (write, then wait for the
fsync) and with the kernel asked to start writeback of each 1 MiB at once
(POSIX_FADV_DONTNEED, as the recorder does): that one is the disk's limit
for this cadence, and the ratio against it is the one that says whether
the recorder or the disk limits.  Same disk, same directory tree, same process;
C{sync} before each run so that neither pays for the other's dirty pages.

    python bench/recorder.py [--seconds 3] [--all-cores] [--profile]

By default the process is pinned to one CPU, as the goal is stated per
core: the reactor thread and the writer thread share it, so their CPU
adds up, and a ratio of 1 means the disk (and the kernel's copy into the
page cache), not the recorder, is the limit.  C{--profile} runs the 64
KiB session under cProfile (both threads) and prints the top functions.
This is a benchmark, not a test.
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import shutil
import sys
import tempfile
import threading
import time

from twisted.internet import defer, reactor, task, threads
from twisted.python.threadpool import ThreadPool

from gatehouse.ids import new_session_id
from gatehouse.recording import keys
from gatehouse.recording.format import Direction, RecordType
from gatehouse.recording.recorder import SegmentRecorder, thread_executor
from gatehouse.recording.verify import verify_session

SEGMENT_MAX_BYTES = 16 * 1024 * 1024
#: The plain writer's buffer: the recorder's block size.
BUFFER = 1024 * 1024


def make_keys(gateway_id: str) -> tuple[keys.TrustAnchors, list[keys.EpochKey]]:
    root = keys.generate_root_key()
    now = time.time_ns()
    epoch = keys.issue_epoch_keys(root, gateway_id, now - 60 * 10**9, 3600 * 10**9, 2)
    return keys.TrustAnchors.from_public_keys([keys.raw_public(root)]), epoch


def payloads(size: int) -> list[bytes]:
    # Row-like text for small records (compressible, like result sets);
    # random bytes for large ones (the worst case for compression): enough
    # distinct ones that no 1 MiB block holds the same payload twice, or
    # zstd would find the repeats and flatter the figures.
    if size <= 1024:
        line = b"42|alice|alice@example.com|2026-11-22 10:00:00|ok\n"
        return [(line * (size // len(line) + 1))[:size] for _ in range(16)]
    return [os.urandom(size) for _ in range(max(4, 2 * (1 << 20) // size))]


@defer.inlineCallbacks
def write_session(root: str, size: int, seconds: float, epoch_keys, executor):
    recorder = SegmentRecorder(
        root,
        "bench-gw",
        lambda wall: keys.current_key(epoch_keys, wall),
        reactor,
        executor,
        segment_max_bytes=SEGMENT_MAX_BYTES,
        seal_interval=30.0,
    )
    recording = recorder.open(new_session_id(), {"protocol": "bench"})
    data = payloads(size)
    record = recording.record
    n = 0
    batch = max(1, (1 << 20) // size)
    start = time.perf_counter()
    deadline = start + seconds
    while time.perf_counter() < deadline:
        for i in range(n, n + batch):
            record(
                RecordType.DATA, Direction.UPSTREAM_TO_GATEWAY, 0, data[i % len(data)]
            )
        n += batch
        # Let the reactor deliver finished writes, as a live gateway would.
        yield task.deferLater(reactor, 0, lambda: None)
    yield recording.close("bench done")
    elapsed = time.perf_counter() - start
    return recording.directory, n, elapsed


def plain_write(
    root: str, size: int, n: int, segment_max_bytes: int, writeback: bool
) -> float:
    """
    Write the same C{n} records plainly, fsync'd at the recorder's cadence
    (see the module docstring); return the seconds it took.  With
    C{writeback}, ask the kernel to start writing each 1 MiB back at once,
    as the recorder does, so that the fsync has little left to wait for.
    """
    data = payloads(size)
    directory = os.path.join(root, "plain")
    os.makedirs(directory)
    dirfd = os.open(directory, os.O_RDONLY)
    fd = None
    index = filled = offset = pending = 0
    parts: list[bytes] = []

    def flush() -> None:
        nonlocal offset, pending
        chunk = b"".join(parts)
        parts.clear()
        pending = 0
        view = memoryview(chunk)
        while view:
            view = view[os.write(fd, view) :]
        if writeback:
            os.posix_fadvise(fd, offset, len(chunk), os.POSIX_FADV_DONTNEED)
        offset += len(chunk)

    def finish() -> None:
        flush()
        os.fsync(fd)
        os.close(fd)
        os.fsync(dirfd)

    start = time.perf_counter()
    try:
        for i in range(n):
            if fd is None:
                path = os.path.join(directory, f"{index:08d}")
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o640)
                offset = 0
            parts.append(data[i % len(data)])
            pending += size
            filled += size
            if pending >= BUFFER:
                flush()
            if filled >= segment_max_bytes:
                finish()
                fd, filled, index = None, 0, index + 1
        if fd is not None:
            finish()
        return time.perf_counter() - start
    finally:
        os.close(dirfd)
        shutil.rmtree(directory)


def report(
    label: str, n: int, size: int, elapsed: float, recorder: float | None = None
) -> None:
    """One line: records/s, MB/s, and the recorder's speed over this one's."""
    rate = n / elapsed
    mbs = n * size / elapsed / 1e6
    extra = f"  ratio recorder/this {elapsed / recorder:5.2f}" if recorder else ""
    print(f"{label:<34} {rate:>12,.0f} records/s {mbs:>9.1f} MB/s{extra}")


class Profiles:
    """cProfile on the reactor thread and on every worker thread, merged."""

    def __init__(self):
        self._local = threading.local()
        self._all: list[cProfile.Profile] = []
        self._lock = threading.Lock()

    def _mine(self) -> cProfile.Profile:
        prof = getattr(self._local, "prof", None)
        if prof is None:
            prof = self._local.prof = cProfile.Profile()
            with self._lock:
                self._all.append(prof)
        return prof

    def executor(self, reactor, pool):
        """A thread executor whose jobs run under their thread's profile."""

        def run(fn, *args):
            return threads.deferToThreadPool(
                reactor, pool, lambda: self._mine().runcall(fn, *args)
            )

        return run

    def print(self, top: int = 25) -> None:
        stats = pstats.Stats(self._all[0])
        for prof in self._all[1:]:
            stats.add(prof)
        stats.sort_stats("tottime").print_stats(top)


@defer.inlineCallbacks
def main(args) -> defer.Deferred:
    root = tempfile.mkdtemp(prefix="gatehouse-bench-")
    pool = ThreadPool(1, 4, "bench-recorder")
    pool.start()
    try:
        anchors, epoch_keys = make_keys("bench-gw")
        sizes = (64 * 1024,) if args.profile else (200, 64 * 1024)
        for size in sizes:
            profiles = Profiles() if args.profile else None
            executor = (
                profiles.executor(reactor, pool)
                if profiles
                else thread_executor(reactor, pool)
            )
            # Each run starts with no dirty pages left by the one before.
            os.sync()
            if profiles:
                profiles._mine().enable()
            directory, n, elapsed = yield write_session(
                root, size, args.seconds, epoch_keys, executor
            )
            if profiles:
                profiles._mine().disable()
            os.sync()
            base = plain_write(root, size, n, SEGMENT_MAX_BYTES, False)
            os.sync()
            ahead = plain_write(root, size, n, SEGMENT_MAX_BYTES, True)
            print(f"{size} B records, {n * size / 1e6:.0f} MB:")
            report("  recorder", n, size, elapsed)
            report("  plain fsync'd write", n, size, base, elapsed)
            report("  plain, early writeback", n, size, ahead, elapsed)
            start = time.perf_counter()
            result = verify_session(directory, anchors)
            v_elapsed = time.perf_counter() - start
            assert result.exit_code == 0, result.findings
            report("  verify", result.records, size, v_elapsed)
            disk = sum(
                os.path.getsize(os.path.join(directory, f))
                for f in os.listdir(directory)
            )
            print(
                f"  {result.segments} segments, {n * size / 1e6:.1f} MB recorded, "
                f"{disk / 1e6:.1f} MB on disk"
            )
            shutil.rmtree(directory)
            if profiles:
                profiles.print()
    finally:
        pool.stop()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--all-cores", action="store_true")
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args()
    if not args.all_cores:
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})
    print(f"python {sys.version.split()[0]}, cpus {sorted(os.sched_getaffinity(0))}")
    d = main(args)
    d.addErrback(lambda f: (f.printTraceback(), None))
    d.addBoth(lambda _: reactor.stop())
    reactor.run()
