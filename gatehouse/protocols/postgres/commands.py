"""
SQL text to policy L{Command}s: one per statement, classified by
libpg_query, with the kinds, objects and flags rules ask about.

L{CommandCache} makes a statement cost one parse however often it runs:
exact texts are remembered, and texts that differ only in constants
(pgbench's random keys, an ORM's literals) share their shape's
classification (L{shape}: the text with its constants replaced).
"""

from __future__ import annotations

from collections import OrderedDict
from functools import lru_cache

import attrs
import pglast.ast
from pglast import parser as _pg

from gatehouse.policy import OPAQUE, UNPARSEABLE, Command, register_normalizer
from gatehouse.protocols.postgres.categories import CATEGORIES, categories_of
from gatehouse.protocols.postgres.statements import (
    COPY_FROM_FILE,
    COPY_TO_FILE,
    OPAQUE_FLAG,
    SERVER_FILE,
    Statement,
    classify,
    shape,
)

__all__ = [
    "COMMAND_CATEGORIES",
    "COMMAND_FLAGS",
    "COMMAND_KINDS",
    "Classified",
    "CommandCache",
    "classify_text",
    "statement_command",
]

#: Statements whose effect is code the gateway cannot see.
OPAQUE_KINDS = frozenset({"DoStmt", "CreateFunctionStmt"})
NO_WHERE = "no-where"
COPY_PROGRAM = "copy-program"
COPY_TO_CLIENT = "copy-to-client"
#: The kind of a fast-path FunctionCall message (opaque: a function by OID).
FUNCTION_CALL = "FunctionCall"
#: Every statement kind PostgreSQL's grammar produces, and the two above.
COMMAND_KINDS = frozenset(name for name in dir(pglast.ast) if name.endswith("Stmt")) | {
    UNPARSEABLE,
    FUNCTION_CALL,
}
COMMAND_FLAGS = frozenset(
    {
        NO_WHERE,
        COPY_PROGRAM,
        COPY_TO_CLIENT,
        COPY_FROM_FILE,
        COPY_TO_FILE,
        SERVER_FILE,
        OPAQUE,
    }
)
#: Categories policy rules may name (see L{categories}).
COMMAND_CATEGORIES = frozenset(CATEGORIES)
assert OPAQUE == OPAQUE_FLAG


@lru_cache(maxsize=4096)
def normalize(sql: str) -> str:
    """
    C{sql} as PostgreSQL's deparser writes it back: keywords upper-cased,
    comments gone, single spaces, identifiers quoted only where needed.
    Unparseable text is returned as it is.
    """
    try:
        return _pg.deparse_protobuf(_pg.parse_sql_protobuf(sql))
    except Exception:
        return sql


register_normalizer("postgres", normalize)


def statement_command(statement: Statement) -> Command:
    """The policy's view of one classified statement."""
    kinds = {statement.kind, *statement.nested}
    if statement.explain_of:
        kinds.add(statement.explain_of)
    flags = set()
    if statement.has_where is False:
        flags.add(NO_WHERE)
    if statement.copy_program:
        flags.add(COPY_PROGRAM)
    if statement.copy is not None and statement.copy.to_client:
        flags.add(COPY_TO_CLIENT)
    if not kinds.isdisjoint(OPAQUE_KINDS):
        flags.add(OPAQUE)
    flags |= statement.flags
    return Command(
        protocol="postgres",
        kind=statement.kind,
        text=statement.text,
        objects=statement.relations,
        kinds=frozenset(kinds),
        functions=statement.functions,
        flags=frozenset(flags),
        normalized=statement.text if statement.kind == UNPARSEABLE else "",
        categories=categories_of(kinds, statement.facts),
    )


@attrs.frozen
class Classified:
    """
    A query text's statements and their commands.

    A classification may be shared by texts of the same shape (see
    L{CommandCache.lookup}): then its commands carry the first text seen,
    and L{for_text} gives the client's own.
    """

    statements: tuple[Statement, ...]
    commands: tuple[Command, ...]
    #: the text with constants replaced (L{shape}; None if unparseable or
    #: not computed)
    shape: str | None = None
    #: the text classified, as the client sent it
    source: str = ""

    def for_text(self, text: str) -> Classified:
        """
        This classification with the commands of C{text} (of its shape).
        Only single statements are shared by shape; anything else is
        classified again rather than rebound (never a statement lost).
        """
        if text == self.source or not self.statements:
            return self
        if len(self.statements) != 1:
            return _classified(text, shape(text))
        return self.with_text(text)

    def with_text(self, text: str) -> Classified:
        """The same single statement under another text of its shape."""
        stripped = text.strip()
        statement = attrs.evolve(self.statements[0], text=stripped)
        command = attrs.evolve(self.commands[0], text=stripped, normalized="")
        return Classified((statement,), (command,), self.shape, text)


def classify_text(sql: str) -> Classified:
    """
    Classify C{sql} without any cache: safe to call from a thread (the
    parser releases the GIL), for texts too long to parse on the reactor.
    Remember the result with L{CommandCache.remember}.
    """
    return _classified(sql, shape(sql) if len(sql) <= _MAX_SHAPE else None)


#: texts longer than this get no shape (they are rarely repeated)
_MAX_SHAPE = 64 * 1024


def _classified(sql: str, shape: str | None) -> Classified:
    statements = classify(sql)
    if any(s.constant_dependent for s in statements):
        # Its facts read constants: texts of its shape may differ.
        shape = None
    commands = tuple(map(statement_command, statements))
    return Classified(statements, commands, shape, sql)


class CommandCache:
    """
    Classifies query texts, once per distinct text or constant-free shape.

    @param size: texts (and shapes) remembered, least recently used first out.
    @param max_text: longer texts are classified but not remembered.
    @ivar hits: lookups answered by an exact text.
    @ivar misses: lookups of a text not remembered.
    @ivar parses: how many texts were parsed (misses that no shape answered).
    """

    def __init__(self, size: int = 10_000, max_text: int = 64 * 1024):
        if size < 1:
            raise ValueError("cache size must be at least 1")
        self.size = size
        self.max_text = max_text
        self.hits = 0
        self.misses = 0
        self.parses = 0
        self._texts: OrderedDict[str, Classified] = OrderedDict()
        self._shapes: OrderedDict[str, Classified] = OrderedDict()

    def classify(self, sql: str) -> Classified:
        """The statements and commands of C{sql}."""
        return self.lookup(sql).for_text(sql)

    def lookup(self, sql: str) -> Classified:
        """
        The classification of C{sql}, or of another text of the same shape
        (then its C{source} differs, and the caller binds C{sql} with
        L{Classified.for_text} where the text matters).
        """
        texts = self._texts
        found = texts.get(sql)
        if found is not None:
            self.hits += 1
            texts.move_to_end(sql)
            return found
        self.misses += 1
        if len(sql) > self.max_text:
            self.parses += 1
            return _classified(sql, None)
        key = shape(sql)
        found = self._shapes.get(key) if key is not None else None
        if found is None:
            self.parses += 1
            found = _classified(sql, key)
            if found.shape is not None and len(found.statements) == 1:
                self._remember(self._shapes, found.shape, found)
        self._remember(texts, sql, found)
        return found

    def cached(self, sql: str) -> Classified | None:
        """The classification of exactly C{sql}, if remembered (a hit)."""
        found = self._texts.get(sql)
        if found is not None:
            self.hits += 1
            self._texts.move_to_end(sql)
        return found

    def remember(self, sql: str, found: Classified) -> None:
        """Keep a classification made elsewhere (L{classify_text})."""
        self.misses += 1
        self.parses += 1
        if len(sql) > self.max_text:
            return
        if found.shape is not None and len(found.statements) == 1:
            self._remember(self._shapes, found.shape, found)
        self._remember(self._texts, sql, found)

    def __len__(self) -> int:
        return len(self._texts)

    def clear(self) -> None:
        """Forget every text and shape (the counters stay)."""
        self._texts.clear()
        self._shapes.clear()

    def _remember(
        self, entries: OrderedDict[str, Classified], key: str, value: Classified
    ) -> None:
        entries[key] = value
        if len(entries) > self.size:
            entries.popitem(last=False)
