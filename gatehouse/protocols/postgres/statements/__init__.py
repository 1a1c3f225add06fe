"""
Classify SQL statements with PostgreSQL's own parser (libpg_query, via
pglast), for policy decisions and the session index.

L{classify} splits a query string into its statements and reports, for
each: the parse node's name (C{DropStmt}, C{DeleteStmt}, ...), its own
text, the relations and functions it touches, and the flags a policy asks
about (DELETE/UPDATE without WHERE, COPY ... PROGRAM, what an EXPLAIN or
PREPARE wraps).  SQL is never matched with regexes: whatever the text looks
like (comments, case, quoting, odd whitespace), the parse tree decides.

The tree is read as libpg_query's JSON (C{parse_sql_json} + C{json.loads})
and walked generically: building pglast's Python AST objects costs about
ten times as much.  Two shapes of node occur in that JSON: fields typed
C{Node *} hold a one-key dict naming the node type (C{{"RangeVar": {...}}}),
fields typed with a concrete struct hold the struct bare
(C{DeleteStmt.relation}, C{CallStmt.funccall}).

Text that cannot be parsed (or cannot be encoded for the parser) is one
C{Unparseable} statement: a decision in itself, never silently allowed.

The modules: C{values} (what classification reports), C{nodes} (loading
and reading the JSON tree), C{walk} (one statement's facts), C{functions}
(what the walk knows of built-in functions) and C{conditions} (whether a
WHERE clause bounds anything).
"""

from __future__ import annotations

from pglast import parser as _pg

from gatehouse.protocols.postgres.statements.conditions import (
    always_true,
)
from gatehouse.protocols.postgres.statements.functions import (
    FUNCTION_ADMIN as FUNCTION_ADMIN,
)
from gatehouse.protocols.postgres.statements.functions import (
    FUNCTION_DESTROYS as FUNCTION_DESTROYS,
)
from gatehouse.protocols.postgres.statements.functions import (
    FUNCTION_WRITES as FUNCTION_WRITES,
)
from gatehouse.protocols.postgres.statements.nodes import (
    _load_deep as _load_deep,
)
from gatehouse.protocols.postgres.statements.nodes import qualified_name
from gatehouse.protocols.postgres.statements.values import (
    COPY_FROM_FILE as COPY_FROM_FILE,
)
from gatehouse.protocols.postgres.statements.values import (
    COPY_TO_FILE as COPY_TO_FILE,
)
from gatehouse.protocols.postgres.statements.values import (
    OPAQUE_FLAG as OPAQUE_FLAG,
)
from gatehouse.protocols.postgres.statements.values import (
    SERVER_FILE as SERVER_FILE,
)
from gatehouse.protocols.postgres.statements.values import (
    STATEMENT_FLAGS,
    UNPARSEABLE,
    Sensitive,
    Statement,
)
from gatehouse.protocols.postgres.statements.values import (
    CopyInfo as CopyInfo,
)
from gatehouse.protocols.postgres.statements.walk import (
    MAX_INNER_DEPTH as MAX_INNER_DEPTH,
)
from gatehouse.protocols.postgres.statements.walk import _statements

__all__ = [
    "STATEMENT_FLAGS",
    "UNPARSEABLE",
    "Sensitive",
    "Statement",
    "always_true",
    "classify",
    "qualified_name",
    "shape",
]


def _unparseable(
    sql: str, error: str, sqlstate: str = "42601"
) -> tuple[Statement, ...]:
    return (Statement(kind=UNPARSEABLE, text=sql, error=error, sqlstate=sqlstate),)


def classify(sql: str) -> tuple[Statement, ...]:
    """
    Classify every statement of C{sql} (one or several, as in a simple
    Query).  Empty, blank or comment-only text gives C{()}; text the
    parser rejects gives one C{Unparseable} statement holding all of it,
    with PostgreSQL's message, SQLSTATE and position.
    """
    if "\0" in sql:
        # libpq cannot send one; libpg_query reads a C string and would
        # not see what follows.
        return _unparseable(sql, "NUL byte in statement text")
    try:
        return _statements(sql, 0)
    except _pg.ParseError as e:
        message, location = (*e.args, None, None)[:2]
        message = str(message)
        if isinstance(location, int):
            position = location + 1
        elif "end of input" in message:
            position = len(sql) + 1
        else:
            position = None
        sqlstate = _STACK_DEPTH if "stack depth" in message else _SYNTAX_ERROR
        return (
            Statement(
                kind=UNPARSEABLE,
                text=sql,
                error=message,
                sqlstate=sqlstate,
                position=position,
            ),
        )
    except UnicodeEncodeError:
        # Lone surrogates: bytes that were not valid in the client encoding.
        # PostgreSQL answers such bytes with 22021 (character_not_in_repertoire).
        return _unparseable(sql, "statement text is not valid in its encoding", "22021")
    except RecursionError:
        # Not expected (the walks are bounded), but never an exception.
        statement = Statement(
            kind=UNPARSEABLE,
            text=sql,
            error="statement too deeply nested for the gateway to classify",
            sqlstate=_STACK_DEPTH,
        )
        return (statement,)


_SYNTAX_ERROR = "42601"
_STACK_DEPTH = "54001"


def shape(sql: str) -> str | None:
    """
    C{sql} with its constants replaced by placeholders (libpg_query's
    normalisation: C{WHERE aid = 5} becomes C{WHERE aid = $1}); equal for
    texts that differ only in constant values, which classification never
    reads.  C{None} if unparseable.

    Not libpg_query's fingerprint: that also ignores names (a relation
    with an alias, a schema, a temporary or date-suffixed table), so
    texts touching different relations would share one classification.
    """
    if "\0" in sql:
        return None
    try:
        return _pg.normalize(sql)
    except (_pg.ParseError, UnicodeEncodeError):
        return None
    try:
        return _pg.fingerprint(sql)
    except (_pg.ParseError, UnicodeEncodeError):
        return None
