"""
Tests for L{gatehouse.recording.keyring}.
"""

from __future__ import annotations

import io
import os
import sys
import time

from twisted.internet.task import Clock
from twisted.logger import LogLevel, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from gatehouse.cli import main
from gatehouse.ids import new_session_id
from gatehouse.recording import keys
from gatehouse.recording.keyring import KeyRing
from gatehouse.recording.recorder import SegmentRecorder, synchronous_executor
from gatehouse.recording.verify import verify_session

NS = 1_000_000_000
T0 = 1_790_000_000.0
HOUR = 3600.0


class KeyDirectoryCase(SynchronousTestCase):
    """A signing-key directory, a root key and a fake clock at L{T0}."""

    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(T0)
        self.directory = self.mktemp()
        self.root = keys.generate_root_key()
        self.events: list[dict] = []
        globalLogPublisher.addObserver(self.events.append)
        self.addCleanup(globalLogPublisher.removeObserver, self.events.append)

    def issue(self, start: float, hours: int, gateway: str = "gw-1") -> list:
        issued = keys.issue_epoch_keys(
            self.root, gateway, int(start * NS), int(HOUR * NS), hours
        )
        keys.KeyDirectory(self.directory).add(issued)
        return issued

    def ring(self, **kw: object) -> KeyRing:
        ring = KeyRing(self.directory, "gw-1", self.clock, synchronous_executor, **kw)
        self.assertEqual(ring.load_now(), [])
        return ring

    def logged(self, level: LogLevel) -> list[str]:
        from twisted.logger import formatEvent

        return [formatEvent(e) for e in self.events if e.get("log_level") == level]

    # The key windows start at whole seconds and the clock moves by whole
    # seconds, so that float seconds hit the ns boundaries exactly.

    def started(self, **kw: object) -> KeyRing:
        ring = self.ring(**kw)
        ring.startService()
        self.addCleanup(ring.stopService)
        return ring

    def on_disk(self) -> set[str]:
        return set(os.listdir(self.directory))

    def advance_to(self, wall_ns: int) -> None:
        """Move the clock to C{wall_ns} (a whole second) in 1 s steps."""
        while int(self.clock.seconds() * NS) < wall_ns:
            self.clock.advance(1.0)
        self.assertEqual(int(self.clock.seconds() * NS), wall_ns)

    def assert_erased_at_end(self, ring: KeyRing, key: keys.EpochKey) -> None:
        """C{key}'s file is there 1 s before its window ends, gone at the end."""
        end = key.certificate.not_after
        self.advance_to(end - NS)
        self.assertIn(key.filename(), self.on_disk())
        self.assertEqual(ring.current(end - 1).certificate, key.certificate)
        self.advance_to(end)
        self.assertNotIn(key.filename(), self.on_disk())
        after = ring.current(end)
        if after is not None:
            self.assertNotEqual(after.certificate.key_id, key.certificate.key_id)


class KeyRingTests(KeyDirectoryCase):
    """
    The daemon's signing keys: found, warned about, erased when used up.
    """

    def test_current_key(self) -> None:
        """The key whose window holds the time is the one used."""
        issued = self.issue(T0 - 10, 3)
        ring = self.ring()
        self.assertEqual(ring.current(int(T0 * NS)).certificate, issued[0].certificate)
        later = int((T0 + 1.5 * HOUR) * NS)
        self.assertEqual(ring.current(later).certificate, issued[1].certificate)

    def test_warns_before_running_out(self) -> None:
        """
        With less than warn_before left, the log says so, and says it again
        only after WARN_EVERY.
        """
        self.issue(T0 - 10, 3)
        ring = self.ring(warn_before=24 * HOUR, check_interval=30.0)
        ring.startService()
        self.addCleanup(ring.stopService)
        self.clock.advance(120)
        warnings = [w for w in self.logged(LogLevel.warn) if "run out" in w]
        self.assertEqual(len(warnings), 1)
        self.assertIn("gatehouse keys issue", warnings[0])
        self.clock.advance(ring.WARN_EVERY)
        warnings = [w for w in self.logged(LogLevel.warn) if "run out" in w]
        self.assertEqual(len(warnings), 2)

    def test_no_valid_key_fails_closed(self) -> None:
        """
        With no key valid now the ring gives none (the recorder then refuses
        sessions) and logs a critical message naming the fix.
        """
        self.issue(T0 + HOUR, 2)  # only future keys
        ring = self.ring()
        self.assertIsNone(ring.current(int(T0 * NS)))
        critical = self.logged(LogLevel.critical)
        self.assertEqual(len(critical), 1)
        self.assertIn("new sessions are refused", critical[0])

    def test_expired_keys_erased(self) -> None:
        """
        A key whose window has ended is erased from disk at the next
        refresh and dropped from memory at once.
        """
        issued = self.issue(T0 - 10, 3)
        ring = self.ring()
        self.assertEqual(len(os.listdir(self.directory)), 3)
        self.clock.advance(HOUR)
        now = int(self.clock.seconds() * NS)
        self.assertEqual(ring.current(now).certificate, issued[1].certificate)
        self.assertNotIn(issued[0].certificate, [k.certificate for k in ring._keys])
        self.successResultOf(ring.refresh())
        remaining = sorted(os.listdir(self.directory))
        self.assertEqual(remaining, sorted(k.filename() for k in issued[1:]))

    def test_new_keys_picked_up(self) -> None:
        """Keys issued while the daemon runs are used after the next refresh."""
        self.issue(T0 - 10, 1)
        ring = self.ring()
        later = int((T0 + 1.5 * HOUR) * NS)
        self.assertIsNone(ring.current(later))
        self.issue(T0 - 10 + HOUR, 2)
        self.successResultOf(ring.refresh())
        self.assertIsNotNone(ring.current(later))

    def test_other_gateway_keys_refused(self) -> None:
        """Keys issued for another gateway are reported and not used."""
        self.issue(T0 - 10, 2, gateway="gw-other")
        ring = KeyRing(self.directory, "gw-1", self.clock, synchronous_executor)
        problems = ring.load_now()
        self.assertEqual(len(problems), 2)
        self.assertIn("gw-other", problems[0])
        self.assertIsNone(ring.current(int(T0 * NS)))


class ErasureTimingTests(KeyDirectoryCase):
    """
    Each epoch key's file is erased at the very end of its window, on a
    timer, not at the next re-read of the directory.
    """

    def test_consecutive_epochs(self) -> None:
        """
        Three consecutive keys are each erased exactly at the end of their
        window, between re-reads of the directory (every 30 s, offset by
        10 s from the windows' ends).
        """
        issued = self.issue(T0 - 10, 4)
        ring = self.started(check_interval=30.0)
        for i, key in enumerate(issued[:3]):
            self.assert_erased_at_end(ring, key)
            self.assertEqual(self.on_disk(), {k.filename() for k in issued[i + 1 :]})
            self.assertEqual(
                ring.current(int(self.clock.seconds() * NS)).certificate,
                issued[i + 1].certificate,
            )

    def test_timer_alone(self) -> None:
        """With no re-read for days, the timer still erases on time."""
        issued = self.issue(T0 - 10, 3)
        ring = self.started(check_interval=10 * 86400.0)
        for key in issued:
            self.assert_erased_at_end(ring, key)
        self.assertEqual(self.on_disk(), set())

    def test_short_windows(self) -> None:
        """Windows of 7 s, ending off the 30 s grid, each erased on time."""
        issued = keys.issue_epoch_keys(self.root, "gw-1", int((T0 - 3) * NS), 7 * NS, 6)
        keys.KeyDirectory(self.directory).add(issued)
        ring = self.started()
        for key in issued:
            self.assert_erased_at_end(ring, key)

    def test_key_added_while_running(self) -> None:
        """
        A key issued into the directory while the daemon runs is erased at
        the end of its window once the directory has been re-read.
        """
        self.issue(T0 - 10, 1)
        ring = self.started(check_interval=30.0)
        added = keys.issue_epoch_keys(
            self.root, "gw-1", int((T0 - 10 + HOUR) * NS), 45 * NS, 2
        )
        keys.KeyDirectory(self.directory).add(added)
        self.clock.advance(30.0)  # the re-read
        for key in added:
            self.assert_erased_at_end(ring, key)

    def test_expired_at_load(self) -> None:
        """Keys whose window ended before the daemon started are erased at once."""
        issued = self.issue(T0 - 2 * HOUR - 10, 4)
        self.ring()
        self.assertEqual(self.on_disk(), {k.filename() for k in issued[2:]})

    def test_stop_cancels_timer(self) -> None:
        """A stopped ring leaves no timer behind."""
        self.issue(T0 - 10, 2)
        ring = self.ring()
        ring.startService()
        self.assertEqual(len(self.clock.getDelayedCalls()), 2)  # loop + erasure
        ring.stopService()
        self.assertEqual(self.clock.getDelayedCalls(), [])


class LeftoverTests(KeyDirectoryCase):
    """
    Every copy of an expired key is erased, whatever its name; files that are
    not key material are warned about once and left alone; no failed erasure
    stops the others.
    """

    def copy(self, key: keys.EpochKey, name: str, data: bytes | None = None) -> str:
        path = os.path.join(self.directory, name)
        with open(path, "wb") as f:
            f.write(key.to_json() if data is None else data)
        return path

    def swap_file(self, key: keys.EpochKey) -> bytes:
        """What an editor's swap file of a key file looks like: binary blocks
        with the text's lines in them, in another order."""
        lines = key.to_json().split(b"\n")
        return b"b0VIM 9.0\x00" + b"\x00" * 1000 + b"\x00U3210".join(reversed(lines))

    def test_second_copy_and_backups(self) -> None:
        """
        A second C{*.epochkey} copy of an expired key (which made erasure
        raise and stop before) and backups under many names are all erased
        at the end of the window, and the next keys on time after them.
        """
        issued = self.issue(T0 - 10, 3)
        first = issued[0]
        stem = first.filename()
        names = [
            "copy-of-it.epochkey",
            stem + ".bak",
            stem + "~",
            ".#" + stem,
            stem + ".orig",
            stem + ".tmp",
            "noextension",
            "." + stem + ".swp",
        ]
        for name in names[:-1]:
            self.copy(first, name)
        self.copy(first, names[-1], self.swap_file(first))
        # A backup of the second key, too.
        self.copy(issued[1], issued[1].filename() + ".bak")
        ring = self.started()
        self.assertEqual(ring.problems(), [])
        self.assert_erased_at_end(ring, first)
        self.assertEqual(
            self.on_disk(),
            {k.filename() for k in issued[1:]} | {issued[1].filename() + ".bak"},
        )
        self.assert_erased_at_end(ring, issued[1])
        self.assertEqual(self.on_disk(), {issued[2].filename()})
        self.assert_erased_at_end(ring, issued[2])
        self.assertEqual(self.on_disk(), set())
        self.assertEqual(ring.problems(), [])

    def test_concatenated_copies(self) -> None:
        """
        A file holding two keys (two key files concatenated) is key material
        of both, and is erased when the first of their windows ends.
        """
        issued = self.issue(T0 - 10, 3)
        both = issued[1].to_json() + b"\n" + issued[0].to_json()
        self.copy(issued[0], "all-keys.txt", both)
        ring = self.started()
        self.assertEqual(ring.problems(), [])
        self.assert_erased_at_end(ring, issued[0])
        self.assertEqual(self.on_disk(), {k.filename() for k in issued[1:]})

    def test_copy_of_expired_key_at_load(self) -> None:
        """
        A leftover copy of a key whose window ended before start: loading
        does not raise; both copies are gone; the next key is used.
        """
        issued = self.issue(T0 - HOUR - 10, 3)
        self.copy(issued[0], "zz-second.epochkey")
        self.copy(issued[0], issued[0].filename() + ".bak")
        ring = self.ring()
        self.assertEqual(self.on_disk(), {k.filename() for k in issued[1:]})
        self.assertEqual(ring.current(int(T0 * NS)).certificate, issued[1].certificate)

    def test_not_key_material_warned_once(self) -> None:
        """
        Files that are not key material (notes, a subdirectory, a broken
        copy) are left alone and logged once each, whatever the re-reads.
        """
        issued = self.issue(T0 - 10, 2)
        self.copy(issued[0], "README", b"keys for gw-1\n")
        self.copy(issued[0], "half.bak", issued[0].to_json()[:100])
        os.mkdir(os.path.join(self.directory, "old"))
        self.copy(issued[0], os.path.join("old", issued[0].filename()))
        ring = self.started()
        self.clock.advance(300)
        warnings = [w for w in self.logged(LogLevel.warn) if "Not key material" in w]
        self.assertEqual(len(warnings), 3, warnings)
        for name in ("README", "half.bak", "old"):
            self.assertEqual(len([w for w in warnings if name + ":" in w]), 1)
        self.assert_erased_at_end(ring, issued[0])
        self.assertEqual(
            self.on_disk(), {issued[1].filename(), "README", "half.bak", "old"}
        )
        # What is inside a subdirectory is not the daemon's to erase.
        self.assertEqual(
            os.listdir(os.path.join(self.directory, "old")),
            [issued[0].filename()],
        )

    def test_unreadable_file(self) -> None:
        """
        A file that cannot be read is reported and left; the keys around it
        are erased on time.  (Tests may run as root, who reads any file: the
        read fails in the file system seam.)
        """
        issued = self.issue(T0 - 10, 2)
        locked = self.copy(issued[0], "locked.bak")
        real = keys._open_file

        def open_file(path: str, flags: int, *a: object) -> int:
            if path == locked:
                raise PermissionError(13, "Permission denied", path)
            return real(path, flags, *a)

        self.patch(keys, "_open_file", open_file)
        ring = self.started()
        warnings = [w for w in self.logged(LogLevel.warn) if "locked.bak" in w]
        self.assertEqual(len(warnings), 1)
        self.assertIn("Permission denied", warnings[0])
        for key in issued:
            self.assert_erased_at_end(ring, key)
        self.assertEqual(self.on_disk(), {"locked.bak"})

    def test_erasure_refused(self) -> None:
        """
        A copy that cannot be erased (permission denied to write it) is logged with its
        path and reason, reported by L{KeyRing.problems}, retried at each
        re-read; the other copies and later keys are erased on time and the
        ring keeps giving the current key.
        """
        issued = self.issue(T0 - 10, 3)
        stuck = self.copy(issued[0], "stuck.bak")
        real = keys._open_file

        def open_file(path: str, flags: int, *a: object) -> int:
            if path == stuck and flags & os.O_RDWR:
                raise PermissionError(13, "Permission denied", path)
            return real(path, flags, *a)

        self.patch(keys, "_open_file", open_file)
        ring = self.started()
        self.assert_erased_at_end(ring, issued[0])
        self.assertEqual(
            self.on_disk(), {k.filename() for k in issued[1:]} | {"stuck.bak"}
        )
        errors = [e for e in self.logged(LogLevel.error) if "stuck.bak" in e]
        self.assertEqual(len(errors), 1)
        self.assertIn("Permission denied", errors[0])
        self.assertEqual(len(ring.problems()), 1)
        self.assertIn(stuck, ring.problems()[0])
        now = int(self.clock.seconds() * NS)
        self.assertEqual(ring.current(now).certificate, issued[1].certificate)
        self.clock.advance(90)  # re-reads retry, without a new log line each
        self.assertEqual(
            len([e for e in self.logged(LogLevel.error) if "stuck.bak" in e]), 1
        )
        self.assert_erased_at_end(ring, issued[1])
        self.assertEqual(self.on_disk(), {issued[2].filename(), "stuck.bak"})
        # Once the operator removes it, the problem is gone.
        self.patch(keys, "_open_file", real)
        self.clock.advance(30)
        self.assertEqual(ring.problems(), [])
        self.assertNotIn("stuck.bak", self.on_disk())

    def test_vanishes_before_erasure(self) -> None:
        """
        A copy removed by someone else between the reading and the erasure
        is not a failure, and stops nothing.
        """
        issued = self.issue(T0 - 10, 2)
        gone = self.copy(issued[0], "gone.bak")
        real = keys._open_file

        def open_file(path: str, flags: int, *a: object) -> int:
            if path == gone and flags & os.O_RDWR:
                os.unlink(path)
            return real(path, flags, *a)

        self.patch(keys, "_open_file", open_file)
        ring = self.started()
        self.assert_erased_at_end(ring, issued[0])
        self.assertEqual(self.on_disk(), {issued[1].filename()})
        self.assertEqual(ring.problems(), [])
        self.assert_erased_at_end(ring, issued[1])

    def test_replaced_by_directory(self) -> None:
        """
        A copy replaced by a directory of the same name after the reading:
        the erasure fails for it alone (logged), the others are erased, and
        the next reading no longer counts it as key material.
        """
        issued = self.issue(T0 - 10, 2)
        swapped = self.copy(issued[0], "swapped.bak")
        ring = self.started(check_interval=10 * 86400.0)
        os.unlink(swapped)
        os.mkdir(swapped)
        self.assert_erased_at_end(ring, issued[0])
        self.assertEqual(self.on_disk(), {issued[1].filename(), "swapped.bak"})
        self.assertTrue(os.path.isdir(swapped))
        self.assertEqual(ring.problems(), [])  # the re-read after the erasure
        errors = [e for e in self.logged(LogLevel.error) if "swapped.bak" in e]
        self.assertEqual(len(errors), 1, errors)
        self.assert_erased_at_end(ring, issued[1])

    def test_replaced_file_not_erased(self) -> None:
        """
        A file replaced by another one after the reading is not overwritten
        on the strength of the old reading.
        """
        issued = self.issue(T0 - 10, 2)
        path = self.copy(issued[0], "notes.bak")
        ring = self.started(check_interval=10 * 86400.0)
        os.unlink(path)
        self.copy(issued[0], "notes.bak", b"my notes\n")
        self.assert_erased_at_end(ring, issued[0])
        with open(path, "rb") as f:
            self.assertEqual(f.read(), b"my notes\n")


class StatusViewTests(SynchronousTestCase):
    """C{gatehouse keys status} sees the directory as the daemon does."""

    def test_leftover_copies_shown(self) -> None:
        """
        A key's backup copy is counted once and listed as a leftover copy;
        a file that is not key material is a warning.
        """
        directory = self.mktemp()
        root = keys.generate_root_key()
        now = time.time_ns()
        issued = keys.issue_epoch_keys(root, "gw-1", now - 60 * NS, 3600 * NS, 2)
        keys.KeyDirectory(directory).add(issued)
        backup = os.path.join(directory, issued[0].filename() + ".bak")
        with open(backup, "wb") as f:
            f.write(issued[0].to_json())
        with open(os.path.join(directory, "README"), "wb") as f:
            f.write(b"notes\n")
        out, err = io.StringIO(), io.StringIO()
        self.patch(sys, "stdout", out)
        self.patch(sys, "stderr", err)
        code = main(["keys", "status", directory, "--warn", "1s"])
        self.assertEqual(code, 0, err.getvalue())
        self.assertIn("2 epoch keys for gateway gw-1", out.getvalue())
        key_id = issued[0].certificate.key_id.hex()[:12]
        self.assertIn(f"leftover copy: {backup} (key {key_id}, until ", out.getvalue())
        self.assertIn("README", err.getvalue())


class TickingClock(Clock):
    """A clock that moves on by 1 µs each time it is read, as a real one does."""

    def seconds(self) -> float:
        self.rightNow += 1e-6
        return self.rightNow


class BoundaryTests(SynchronousTestCase):
    """
    A session opened at the very end of a window: the key is chosen and the
    delegation signed for one wall time, so the recording verifies (there is
    no seal in flight that would need the key after its window).
    """

    def test_session_at_window_end(self) -> None:
        root = keys.generate_root_key()
        issued = keys.issue_epoch_keys(root, "gw-1", int((T0 - 10) * NS), 20 * NS, 2)
        directory = self.mktemp()
        keys.KeyDirectory(directory).add(issued)
        clock = TickingClock()
        clock.rightNow = issued[0].certificate.not_after / NS - 2.5e-6
        ring = KeyRing(directory, "gw-1", clock, synchronous_executor)
        ring.load_now()
        recorder = SegmentRecorder(
            self.mktemp(),
            "gw-1",
            ring.current,
            clock,
            synchronous_executor,
            monotonic_ns=lambda: int(clock.rightNow * NS),
        )
        recording = recorder.open(new_session_id(clock.rightNow), {"protocol": "test"})
        self.successResultOf(recording.close("done"))
        anchors = keys.TrustAnchors.from_public_keys([keys.raw_public(root)])
        report = verify_session(recording.directory, anchors)
        self.assertEqual(report.findings, ())
