"""
Recorder throughput: write and verify, side by side.

Writes one session of 200-byte records and one of 64 KiB records through
the real recorder (reactor thread framing and hashing, a worker thread
compressing, writing and fsyncing, segments sealed on size and at close),
then verifies both, and prints records/s and MB/s for each.  The baseline
is writing the same bytes to a file with no framing, hashing or signing.

    python bench/recorder.py [--seconds 3] [--all-cores]

By default the process is pinned to one CPU, as the goal is stated per
core.  This is a benchmark, not a test.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time

from twisted.internet import defer, reactor, task
from twisted.python.threadpool import ThreadPool

from gatehouse.ids import new_session_id
from gatehouse.recording import keys
from gatehouse.recording.format import Direction, RecordType
from gatehouse.recording.recorder import SegmentRecorder, thread_executor
from gatehouse.recording.verify import verify_session


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
def write_session(root: str, size: int, seconds: float, epoch_keys, pool):
    recorder = SegmentRecorder(
        root,
        "bench-gw",
        lambda wall: keys.current_key(epoch_keys, wall),
        reactor,
        thread_executor(reactor, pool),
        segment_max_bytes=16 * 1024 * 1024,
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


def baseline(root: str, size: int, n: int) -> float:
    data = payloads(size)
    path = os.path.join(root, "plain.bin")
    start = time.perf_counter()
    with open(path, "wb") as f:
        for i in range(n):
            f.write(data[i % len(data)])
        f.flush()
        os.fsync(f.fileno())
    return time.perf_counter() - start


def report(
    label: str, n: int, size: int, elapsed: float, base: float | None = None
) -> None:
    rate = n / elapsed
    mbs = n * size / elapsed / 1e6
    extra = f"  ratio to plain write {base / elapsed:5.2f}" if base else ""
    print(f"{label:<34} {rate:>12,.0f} records/s {mbs:>9.1f} MB/s{extra}")


@defer.inlineCallbacks
def main(args) -> defer.Deferred:
    root = tempfile.mkdtemp(prefix="gatehouse-bench-")
    pool = ThreadPool(1, 4, "bench-recorder")
    pool.start()
    try:
        anchors, epoch_keys = make_keys("bench-gw")
        for size in (200, 64 * 1024):
            directory, n, elapsed = yield write_session(
                root, size, args.seconds, epoch_keys, pool
            )
            base = baseline(root, size, n)
            report(f"write {size} B records", n, size, elapsed)
            report("  plain file write, same bytes", n, size, base)
            start = time.perf_counter()
            result = verify_session(directory, anchors)
            v_elapsed = time.perf_counter() - start
            assert result.exit_code == 0, result.findings
            report(f"verify {size} B records", result.records, size, v_elapsed)
            disk = sum(
                os.path.getsize(os.path.join(directory, f))
                for f in os.listdir(directory)
            )
            print(
                f"  {result.segments} segments, {n * size / 1e6:.1f} MB recorded, "
                f"{disk / 1e6:.1f} MB on disk"
            )
    finally:
        pool.stop()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--all-cores", action="store_true")
    args = parser.parse_args()
    if not args.all_cores:
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})
    print(f"python {sys.version.split()[0]}, cpus {sorted(os.sched_getaffinity(0))}")
    d = main(args)
    d.addErrback(lambda f: (f.printTraceback(), None))
    d.addBoth(lambda _: reactor.stop())
    reactor.run()
