"""
Tests for L{gatehouse.recording.keyring}.
"""

from __future__ import annotations

import os

from twisted.internet.task import Clock
from twisted.logger import LogLevel, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from gatehouse.recording import keys
from gatehouse.recording.keyring import KeyRing
from gatehouse.recording.recorder import synchronous_executor

NS = 1_000_000_000
T0 = 1_790_000_000.0
HOUR = 3600.0


class KeyRingTests(SynchronousTestCase):
    """
    The daemon's signing keys: found, warned about, erased when used up.
    """

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
