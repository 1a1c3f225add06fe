"""
Tests for L{gatehouse.protocols.postgres.server} pieces that need no network.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from gatehouse.protocols.postgres.server import StatementIndexer
from gatehouse.protocols.postgres.statements import StatementCache


class RecordingSession:
    """Collects what the indexer reports."""

    def __init__(self) -> None:
        self.commands: list[tuple[str, str, tuple[str, ...]]] = []

    def command_seen(self, kind: str, text: str, objects: tuple[str, ...]) -> None:
        self.commands.append((kind, text, objects))


class StatementIndexerTests(SynchronousTestCase):
    """Each statement shape is indexed once; new shapes always are."""

    def test_shapes_once(self) -> None:
        session = RecordingSession()
        indexer = StatementIndexer(session, StatementCache())
        for aid in range(3 * StatementIndexer.MAX_TEXTS):
            indexer.saw(f"select abalance from accounts where aid = {aid}")
        indexer.saw("select abalance from accounts where aid = 7")
        self.assertEqual(
            session.commands,
            [
                (
                    "SelectStmt",
                    "select abalance from accounts where aid = 0",
                    ("accounts",),
                )
            ],
        )

    def test_new_shape_after_many_texts(self) -> None:
        """
        The exact-text cache filling up never stops indexing: a DROP after
        thousands of distinct texts is still indexed.
        """
        session = RecordingSession()
        indexer = StatementIndexer(session, StatementCache())
        for aid in range(2 * StatementIndexer.MAX_TEXTS + 1):
            indexer.saw(f"select 1 from t where id = {aid}")
        indexer.saw("DROP TABLE t")
        self.assertEqual(session.commands[-1], ("DropStmt", "DROP TABLE t", ("t",)))
