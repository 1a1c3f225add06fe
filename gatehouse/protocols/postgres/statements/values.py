"""
The values L{gatehouse.protocols.postgres.statements.classify} reports:
one L{Statement} per statement, what it does to roles and settings
(L{Sensitive}), what a COPY moves (L{CopyInfo}), and the flags a rule
can ask about.
"""

from __future__ import annotations

import attrs

__all__ = [
    "COPY_FROM_FILE",
    "COPY_TO_FILE",
    "OPAQUE_FLAG",
    "SERVER_FILE",
    "STATEMENT_FLAGS",
    "UNPARSEABLE",
    "CopyInfo",
    "Sensitive",
    "Statement",
]

#: The kind of a statement that PostgreSQL's grammar rejects.
UNPARSEABLE = "Unparseable"


@attrs.frozen
class Sensitive:
    """
    Something a statement does to roles or settings, for the built-in
    protections (L{gatehouse.protocols.postgres.protections}).

    @ivar action: C{"alter-role"} (ALTER ROLE options, PASSWORD included),
        C{"membership"} (GRANT/REVOKE of a role to C{role}, ALTER GROUP
        ... ADD/DROP USER C{role}, CREATE ROLE ... ROLE/ADMIN C{role}),
        C{"rename-role"}, C{"drop-role"}, C{"role-setting"} (ALTER ROLE
        ... SET/RESET), C{"database-setting"} (ALTER DATABASE ... SET),
        C{"set"} (SET/RESET, or a C{set_config} call).
    @ivar role: the role acted on: a name, or C{"CURRENT_USER"},
        C{"SESSION_USER"}, C{"CURRENT_ROLE"}, C{"PUBLIC"}, C{"ALL"}; None
        where no role is named.
    @ivar setting: the setting's name (lower case); None when not a
        literal (C{set_config($1, ...)}) or for RESET ALL.
    @ivar value: the value set, None for RESET or a non-literal value.
    @ivar reset: RESET (or SET ... TO DEFAULT).
    @ivar literal: the name and value were both literals (or absent).
    """

    action: str
    role: str | None = None
    setting: str | None = None
    value: str | None = None
    reset: bool = False
    literal: bool = True


@attrs.frozen
class CopyInfo:
    """
    What a COPY statement moves, for masking its output.

    @ivar to_client: C{COPY ... TO STDOUT} (rows flow to the client).
    @ivar relation: the table copied, or None for C{COPY (query)}.
    @ivar columns: the column list given, or C{()} for all columns.
    @ivar format: C{"text"}, C{"csv"} or C{"binary"}.
    @ivar delimiter: the field delimiter.
    """

    to_client: bool
    relation: str | None
    columns: tuple[str, ...]
    format: str
    delimiter: str
    header: bool = False
    quote: str = '"'
    escape: str | None = None

    def rewrites_values(self) -> bool:
        """
        Whether its options make PostgreSQL split or double characters
        that detectors read together: a text DELIMITER that is a letter,
        digit or one of C{@ . - _ + space} (escaped with a backslash inside
        values), a CSV QUOTE or ESCAPE other than C{"} (doubled or escaped
        inside values).  C{COPY (SELECT card ...) TO STDOUT (FORMAT csv,
        QUOTE '1')} sends every 1 of a card twice.
        """
        if self.format == "csv":
            return self.quote != '"' or self.escape not in (None, '"')
        return _joins_values(self.delimiter)


def _joins_values(char: str) -> bool:
    return not char.isascii() or char.isalnum() or char in "@.-_+ "


@attrs.frozen
class Statement:
    """
    One SQL statement, as PostgreSQL's parser sees it.

    @ivar kind: the libpg_query node name (C{"SelectStmt"}, C{"DropStmt"},
        C{"DeleteStmt"}, ...), or C{"Unparseable"}.
    @ivar text: the statement's own text, stripped (the whole input for
        C{Unparseable}).
    @ivar relations: relations touched anywhere in the statement (CTEs,
        subqueries, joins, targets), as written: C{"public.users"} stays
        qualified, C{"users"} stays bare; identifiers are as the parser
        folds them (unquoted names lower-cased).  References to a CTE of
        the statement are left out.  For DROP and GRANT these are the
        objects named, whatever their type (see C{object_kind}).
        Deduplicated, in order of appearance.
    @ivar functions: functions called, as written (C{"pg_sleep"},
        C{"pg_catalog.pg_terminate_backend"}).
    @ivar object_kind: the object type a utility statement acts on
        (C{removeType}, C{objtype}, ...: C{"OBJECT_TABLE"},
        C{"OBJECT_SCHEMA"}, ...); C{"OBJECT_TABLE"} for TRUNCATE.
    @ivar has_where: C{None} if no DELETE or UPDATE occurs in the statement
        (including inside a CTE or an EXPLAIN/PREPARE, MERGE's UPDATE and
        DELETE actions, INSERT ... ON CONFLICT DO UPDATE); otherwise
        whether every one of them is bounded: a WHERE clause that is not
        constant-true (L{always_true}), a MERGE join condition that is
        not, an ON CONFLICT DO UPDATE with such a WHERE or over VALUES or
        a SELECT with one.
    @ivar explain_of: for EXPLAIN (and PREPARE), the kind of the statement
        wrapped; its relations and flags are merged into this one.
    @ivar copy_program: COPY ... TO/FROM PROGRAM.
    @ivar error: why the parser refused the text, for C{Unparseable}.
    @ivar nested: kinds of the statements nested inside this one other
        than plain SELECTs (a C{DeleteStmt} in a CTE or under EXPLAIN or
        COPY, or in SQL text a built-in runs), and the kinds its parts
        amount to (MERGE's actions, ON CONFLICT DO UPDATE, SELECT INTO as
        C{CreateTableAsStmt}), deduplicated, in order.
    @ivar flags: rule-visible facts (L{STATEMENT_FLAGS}): C{opaque} (a
        built-in runs SQL the gateway cannot read), C{server-file},
        C{copy-from-file}, C{copy-to-file}.
    @ivar facts: what decides category membership beyond the kind (see
        L{gatehouse.protocols.postgres.categories}).
    @ivar sensitive: what it does to roles and settings (L{Sensitive}).
    @ivar sqlstate: for C{Unparseable}: PostgreSQL's SQLSTATE for it.
    @ivar position: for C{Unparseable}: where the parser stopped, as
        PostgreSQL reports it (1-based, in characters), if known.
    @ivar constant_dependent: some fact above depends on a constant's
        value (a constant-true WHERE, SQL or a name in a literal, a SET
        value): texts of the same shape (L{shape}) may classify
        differently, so this classification is never shared by shape.
    """

    kind: str
    text: str
    relations: tuple[str, ...] = ()
    functions: tuple[str, ...] = ()
    object_kind: str | None = None
    has_where: bool | None = None
    explain_of: str | None = None
    copy_program: bool = False
    error: str | None = None
    nested: tuple[str, ...] = ()
    copy: CopyInfo | None = None
    flags: frozenset[str] = frozenset()
    facts: frozenset[str] = frozenset()
    sensitive: tuple[Sensitive, ...] = ()
    sqlstate: str | None = None
    position: int | None = None
    constant_dependent: bool = False

    @property
    def parseable(self) -> bool:
        """False for the C{Unparseable} stand-in."""
        return self.kind != UNPARSEABLE


#: Flags a statement can carry (see L{Statement.flags}).
OPAQUE_FLAG = "opaque"
SERVER_FILE = "server-file"
COPY_FROM_FILE = "copy-from-file"
COPY_TO_FILE = "copy-to-file"
STATEMENT_FLAGS = frozenset({OPAQUE_FLAG, SERVER_FILE, COPY_FROM_FILE, COPY_TO_FILE})
