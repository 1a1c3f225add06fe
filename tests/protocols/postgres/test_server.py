"""
Tests for L{gatehouse.protocols.postgres.server} pieces that need no network.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from gatehouse.policy import Decision
from gatehouse.protocols.postgres.commands import CommandCache
from gatehouse.protocols.postgres.server import StatementIndexer

ALLOW = Decision("allow", "default")


class RecordingSession:
    """Collects what the indexer reports."""

    def __init__(self) -> None:
        self.commands: list[tuple[str, str, tuple[str, ...], str]] = []

    def command_seen(
        self, kind: str, text: str, objects: tuple[str, ...], decision: str
    ) -> None:
        self.commands.append((kind, text, objects, decision))


class StatementIndexerTests(SynchronousTestCase):
    """
    Each allowed statement shape is indexed once; new shapes always are,
    and so is every statement the policy did not simply allow.
    """

    def saw(self, indexer, cache, sql, decision=ALLOW) -> None:
        indexer.saw(sql, cache.classify(sql), decision)

    def test_shapes_once(self) -> None:
        session, cache = RecordingSession(), CommandCache()
        indexer = StatementIndexer(session)
        for aid in range(3000):
            self.saw(indexer, cache, f"select abalance from accounts where aid = {aid}")
        self.assertEqual(
            session.commands,
            [
                (
                    "SelectStmt",
                    "select abalance from accounts where aid = 0",
                    ("accounts",),
                    "allow",
                )
            ],
        )

    def test_refusals_always_indexed(self) -> None:
        session, cache = RecordingSession(), CommandCache()
        indexer = StatementIndexer(session)
        deny = Decision("deny", "no-drop")
        for _ in range(3):
            self.saw(indexer, cache, "DROP TABLE t", deny)
        self.assertEqual(
            session.commands, [("DropStmt", "DROP TABLE t", ("t",), "deny")] * 3
        )

    def test_new_shape_after_many_texts(self) -> None:
        """A DROP after thousands of distinct texts is still indexed."""
        session, cache = RecordingSession(), CommandCache()
        indexer = StatementIndexer(session)
        for aid in range(9000):
            self.saw(indexer, cache, f"select 1 from t where id = {aid}")
        self.saw(indexer, cache, "DROP TABLE t")
        self.assertEqual(
            session.commands[-1], ("DropStmt", "DROP TABLE t", ("t",), "allow")
        )
