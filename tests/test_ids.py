"""
Tests for L{gatehouse.ids}.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from gatehouse import ids


class NewSessionIdTests(SynchronousTestCase):
    """
    Ids are ordered within a process and name the time they were made.
    """

    def setUp(self) -> None:
        saved = ids._last_ms, ids._counter

        def restore() -> None:
            ids._last_ms, ids._counter = saved

        self.addCleanup(restore)

    def test_same_millisecond_ordered(self) -> None:
        """Ids made in one millisecond sort in the order they were made."""
        made = [ids.new_session_id(1_800_000_000.0001) for _ in range(50)]
        self.assertEqual(sorted(made), made)
        self.assertEqual(len(set(made)), 50)

    def test_small_step_back_ordered(self) -> None:
        """A clock stepped back half a second still gives later-sorting ids."""
        first = ids.new_session_id(1_800_000_000.0)
        second = ids.new_session_id(1_799_999_999.5)
        self.assertLess(first, second)

    def test_large_step_back_names_its_time(self) -> None:
        """
        After a clock stepped back by more than L{ids.MAX_BACKSTEP_MS}, an id
        names the clock's time (the verifier checks segment 0's start against
        it), not the last id's.
        """
        ids.new_session_id(1_800_000_000.0)
        later = ids.new_session_id(1_790_000_000.0)
        self.assertEqual(ids.session_time(later), 1_790_000_000.0)
        self.assertTrue(ids.is_session_id(str(later)))
