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
"""

from __future__ import annotations

import json
import re

import attrs
from pglast import parser as _pg

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

#: The kind of a statement that PostgreSQL's grammar rejects.
UNPARSEABLE = "Unparseable"

# Fields that name the type of object a utility statement acts on.
_OBJECT_KIND_FIELDS = ("removeType", "objtype", "renameType", "objectType")
# Statements that wrap one other statement in their "query" field; the
# wrapped statement's findings are merged so the wrapper cannot hide it.
_WRAPPERS = frozenset({"ExplainStmt", "PrepareStmt"})
# Statements whose "objects" list names their targets, not as RangeVars.
_OBJECT_LISTS = frozenset({"DropStmt", "GrantStmt"})
_WHERE_KINDS = frozenset({"DeleteStmt", "UpdateStmt"})
# The C scanner behind json.loads, without the Python-level wrapper that
# strips whitespace (libpg_query's JSON has none): a third of the cost of
# loading a small statement's tree.
_load_json = json.JSONDecoder().scan_once
# Node types that cannot hold a relation, a function call or a statement:
# not descended into (the walk is the bulk of classify's cost).
_LEAVES = frozenset(
    {
        "A_Const",
        "A_Star",
        "AccessPriv",
        "BitString",
        "Boolean",
        "ColumnRef",
        "Float",
        "Integer",
        "ParamRef",
        "RoleSpec",
        "SQLValueFunction",
        "String",
        "TypeName",
    }
)


_ROLE_SPECS = {
    "ROLESPEC_CURRENT_USER": "CURRENT_USER",
    "ROLESPEC_SESSION_USER": "SESSION_USER",
    "ROLESPEC_CURRENT_ROLE": "CURRENT_ROLE",
    "ROLESPEC_PUBLIC": "PUBLIC",
}


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


def _copy_info(body: dict) -> CopyInfo:
    fmt = "text"
    delimiter = None
    header = False
    quote = '"'
    escape = None
    for option in body.get("options") or ():
        elem = option.get("DefElem") if isinstance(option, dict) else None
        if not isinstance(elem, dict):
            continue
        arg = elem.get("arg")
        value = arg.get("String", {}).get("sval") if isinstance(arg, dict) else None
        if elem.get("defname") == "format" and isinstance(value, str):
            fmt = value.lower()
        elif elem.get("defname") == "delimiter" and isinstance(value, str):
            delimiter = value
        elif elem.get("defname") == "quote" and isinstance(value, str):
            quote = value
        elif elem.get("defname") == "escape" and isinstance(value, str):
            escape = value
        elif elem.get("defname") == "header":
            # HEADER alone, true/on/1, or MATCH (COPY FROM only)
            header = value is None or str(value).lower() not in ("false", "off", "0")
    relation = body.get("relation")
    return CopyInfo(
        to_client=not body.get("is_from") and not body.get("filename"),
        relation=_rangevar_name(relation) if isinstance(relation, dict) else None,
        columns=tuple(
            item["String"]["sval"]
            for item in body.get("attlist") or ()
            if isinstance(item, dict) and "String" in item
        ),
        format=fmt,
        delimiter=delimiter or ("," if fmt == "csv" else "\t"),
        header=header,
        quote=quote,
        escape=escape,
    )


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


def _unparseable(
    sql: str, error: str, sqlstate: str = "42601"
) -> tuple[Statement, ...]:
    return (Statement(kind=UNPARSEABLE, text=sql, error=error, sqlstate=sqlstate),)


def _dotted(items: object) -> str | None:
    """Join a list of C{String} nodes as C{a.b.c}."""
    if not isinstance(items, list):
        return None
    parts = []
    for item in items:
        if not isinstance(item, dict):
            return None
        string = item.get("String")
        if not isinstance(string, dict):
            return None
        parts.append(string.get("sval", ""))
    return ".".join(parts) if parts else None


def _object_name(node: object) -> str | None:
    """The name in one entry of DropStmt/GrantStmt C{objects}."""
    if not isinstance(node, dict):
        return None
    for key, value in node.items():
        if not isinstance(value, dict):
            return None
        if key == "String":
            return value.get("sval")
        if key == "List":
            return _dotted(value.get("items"))
        if key == "ObjectWithArgs":
            return _dotted(value.get("objname"))
        if key == "TypeName":
            return _dotted(value.get("names"))
    return None


def _rangevar_name(rv: dict) -> str:
    name = rv.get("relname", "")
    schema = rv.get("schemaname")
    if schema:
        name = f"{schema}.{name}"
        catalog = rv.get("catalogname")
        if catalog:
            name = f"{catalog}.{name}"
    return name


# -- facts beyond the kind ---------------------------------------------------

#: Flags a statement can carry (see L{Statement.flags}).
OPAQUE_FLAG = "opaque"
SERVER_FILE = "server-file"
COPY_FROM_FILE = "copy-from-file"
COPY_TO_FILE = "copy-to-file"
STATEMENT_FLAGS = frozenset({OPAQUE_FLAG, SERVER_FILE, COPY_FROM_FILE, COPY_TO_FILE})

#: How deep SQL in string literals is classified (SQL naming SQL naming ...).
MAX_INNER_DEPTH = 4


# Built-ins that run SQL text: name -> how to find the SQL argument, a
# function of the argument count giving its index (None: no SQL argument
# the gateway can read, always opaque).
def _first(count: int) -> int | None:
    return 0


def _second(count: int) -> int | None:
    return 1 if count >= 2 else None


def _ts_rewrite(count: int) -> int | None:
    # ts_rewrite(query, select text) runs SQL; ts_rewrite(q, target, sub) does not
    return 1 if count == 2 else -1


def _dblink(count: int) -> int | None:
    # dblink(sql), dblink(sql, fail bool), dblink(conn, sql [, fail])
    return 0 if count == 1 else 1


def _dblink_open(count: int) -> int | None:
    # dblink_open(cursor, sql [, fail]) or dblink_open(conn, cursor, sql [, fail])
    return None


def _never(count: int) -> int | None:
    return None


_SQL_RUNNERS = {
    "query_to_xml": _first,
    "query_to_xmlschema": _first,
    "query_to_xml_and_xmlschema": _first,
    "ts_stat": _first,
    "ts_rewrite": _ts_rewrite,
    "dblink": _dblink,
    "dblink_exec": _dblink,
    "dblink_send_query": _second,
    "dblink_open": _dblink_open,
    # cursors and results of SQL run elsewhere, whole schemas/databases
    "cursor_to_xml": _never,
    "cursor_to_xmlschema": _never,
    "dblink_fetch": _never,
    "dblink_get_result": _never,
    "dblink_close": _never,
    "schema_to_xml": _never,
    "schema_to_xmlschema": _never,
    "schema_to_xml_and_xmlschema": _never,
    "database_to_xml": _never,
    "database_to_xmlschema": _never,
    "database_to_xml_and_xmlschema": _never,
    # extensions that run SQL text
    "crosstab": _first,
    "crosstab2": _first,
    "crosstab3": _first,
    "crosstab4": _first,
    "xpath_table": _never,
    "pg_background_launch": _never,
    "schedule": _never,  # pg_cron: cron.schedule(...) runs later
    "schedule_in_database": _never,
}
# pg_cron's functions, whose names are common: only as cron.x or unqualified.
_CRON = frozenset({"schedule", "schedule_in_database"})
# Built-ins that read a relation named by text (its first argument).
_NAME_READERS = frozenset(
    {
        "table_to_xml",
        "table_to_xmlschema",
        "table_to_xml_and_xmlschema",
        "connectby",
        "pg_prewarm",
    }
)
# Built-ins that read or write files (or list directories) on the server.
_FILE_FUNCTIONS = frozenset(
    {
        "pg_read_file",
        "pg_read_binary_file",
        "pg_ls_dir",
        "pg_stat_file",
        "pg_ls_logdir",
        "pg_ls_waldir",
        "pg_ls_tmpdir",
        "pg_ls_archive_statusdir",
        "pg_ls_logicalsnapdir",
        "pg_ls_logicalmapdir",
        "pg_ls_replslotdir",
        "lo_import",
        "lo_export",
        "pg_file_write",
        "pg_file_rename",
        "pg_file_unlink",
        "pg_file_sync",
        "pg_logdir_ls",
    }
)
# Built-ins that change data or the server although called from a SELECT:
# the fact they add (see categories: write, destructive, admin).
FUNCTION_DESTROYS = "function-destroys"
FUNCTION_WRITES = "function-writes"
FUNCTION_ADMIN = "function-admin"
_FUNCTION_FACTS = {
    **dict.fromkeys(("lo_unlink", "lo_truncate", "lo_truncate64"), FUNCTION_DESTROYS),
    **dict.fromkeys(
        (
            "lo_put",
            "lowrite",
            "lo_create",
            "lo_creat",
            "lo_from_bytea",
            "lo_import",
            "setval",
            "nextval",
            "pg_logical_emit_message",
        ),
        FUNCTION_WRITES,
    ),
    **dict.fromkeys(
        (
            "pg_terminate_backend",
            "pg_cancel_backend",
            "pg_reload_conf",
            "pg_rotate_logfile",
            "pg_switch_wal",
            "pg_create_restore_point",
            "pg_promote",
            "pg_log_backend_memory_contexts",
            "pg_stat_reset",
            "pg_stat_reset_shared",
            "pg_stat_reset_single_table_counters",
            "pg_stat_reset_single_function_counters",
            "pg_stat_reset_slru",
            "pg_stat_reset_replication_slot",
            "pg_stat_reset_subscription_stats",
            "pg_stat_statements_reset",
            "pg_create_physical_replication_slot",
            "pg_create_logical_replication_slot",
            "pg_drop_replication_slot",
            "pg_copy_physical_replication_slot",
            "pg_copy_logical_replication_slot",
            "pg_replication_origin_create",
            "pg_replication_origin_drop",
            "pg_backup_start",
            "pg_backup_stop",
            "pg_wal_replay_pause",
            "pg_wal_replay_resume",
            "pg_import_system_collations",
        ),
        FUNCTION_ADMIN,
    ),
}
# DefElem names that name a function, in CREATE OPERATOR / AGGREGATE /
# TYPE / RANGE TYPE / TEXT SEARCH PARSER and TEMPLATE, ALTER TYPE /
# OPERATOR ... SET (...), ALTER FUNCTION ... SUPPORT, foreign data wrappers.
_FUNCTION_DEFNAMES = frozenset(
    {
        "function",
        "procedure",
        "restrict",
        "join",
        "sfunc",
        "finalfunc",
        "combinefunc",
        "serialfunc",
        "deserialfunc",
        "msfunc",
        "minvfunc",
        "mfinalfunc",
        "input",
        "output",
        "receive",
        "send",
        "typmod_in",
        "typmod_out",
        "analyze",
        "subscript",
        "canonical",
        "subtype_diff",
        "start",
        "gettoken",
        "end",
        "lextypes",
        "headline",
        "init",
        "lexize",
        "handler",
        "validator",
        "support",
    }
)
# Statements whose DefElem lists name functions, and the fields holding them.
_DEFELEM_FIELDS = {
    "DefineStmt": ("definition",),
    "AlterTypeStmt": ("options",),
    "AlterOperatorStmt": ("options",),
    "CreateRangeStmt": ("params",),
    "CreateFdwStmt": ("func_options",),
    "AlterFdwStmt": ("func_options",),
    "AlterFunctionStmt": ("actions",),
}
# Statements naming a function in a list of Strings, and the fields.
_NAME_LIST_FIELDS = {
    "CreateFunctionStmt": ("funcname",),
    "CreateTrigStmt": ("funcname",),
    "CreateEventTrigStmt": ("funcname",),
    "CreateConversionStmt": ("func_name",),
    "CreatePLangStmt": ("plhandler", "plinline", "plvalidator"),
    "CreateAmStmt": ("handler_name",),
}
# Statements naming a function as an ObjectWithArgs, and the fields.
_OBJECT_WITH_ARGS_FIELDS = {
    "AlterFunctionStmt": ("func",),
    "CreateCastStmt": ("func",),
    "CreateTransformStmt": ("fromsql", "tosql"),
}


def _role_name(spec: object) -> str | None:
    if not isinstance(spec, dict):
        return None
    roletype = spec.get("roletype")
    if roletype == "ROLESPEC_CSTRING":
        return spec.get("rolename")
    return _ROLE_SPECS.get(roletype)


def _literal(node: object) -> str | None:
    """The text of a string (or number, or boolean) constant, possibly cast."""
    if not isinstance(node, dict):
        return None
    cast = node.get("TypeCast")
    if isinstance(cast, dict):
        node = cast.get("arg")
        if not isinstance(node, dict):
            return None
    const = node.get("A_Const")
    if not isinstance(const, dict):
        return None
    if "sval" in const:
        return const["sval"].get("sval", "")
    if "ival" in const:
        return str(const["ival"].get("ival", 0))
    if "fval" in const:
        return const["fval"].get("fval", "0")
    if "boolval" in const:
        return "on" if const["boolval"].get("boolval") else "off"
    return None


def _set_value(args: object) -> str | None:
    """The value of a SET statement's argument list, if all literal."""
    if not isinstance(args, list) or not args:
        return None
    values = [_literal(a) for a in args]
    if any(v is None for v in values):
        return None
    return ", ".join(values)  # type: ignore[arg-type]


def _variable_set(body: dict) -> Sensitive:
    kind = body.get("kind", "")
    name = body.get("name")
    name = name.lower() if isinstance(name, str) else None
    if kind in ("VAR_RESET", "VAR_SET_DEFAULT", "VAR_RESET_ALL"):
        return Sensitive("set", setting=name, reset=True)
    if kind == "VAR_SET_VALUE":
        value = _set_value(body.get("args"))
        return Sensitive("set", setting=name, value=value, literal=value is not None)
    # SET ... FROM CURRENT, SET TRANSACTION ...: no value the gateway reads
    return Sensitive("set", setting=name, value=None, literal=False)


def _pg_settings_name(where: object) -> str | None:
    """The setting of C{WHERE name = 'x'} (alone), else None."""
    expr = where.get("A_Expr") if isinstance(where, dict) else None
    if not isinstance(expr, dict) or expr.get("kind") != "AEXPR_OP":
        return None
    if _dotted(expr.get("name")) != "=":
        return None
    for column, value in (("lexpr", "rexpr"), ("rexpr", "lexpr")):
        fields = _column_fields(expr.get(column))
        if fields and _dotted(fields[-1:]) == "name":
            return _literal(expr.get(value))
    return None


def qualified_name(text: str) -> tuple[str, ...] | None:
    """
    A name as PostgreSQL reads a C{regclass} text (C{'public."My T"'}):
    dot-separated identifiers, double quotes keeping case and dots,
    unquoted parts lower-cased; None if it is not one.
    """
    parts: list[str] = []
    i, n = 0, len(text)
    while True:
        while i < n and text[i].isspace():
            i += 1
        if i < n and text[i] == '"':
            i += 1
            part = []
            while True:
                if i >= n:
                    return None
                if text[i] == '"':
                    if i + 1 < n and text[i + 1] == '"':
                        part.append('"')
                        i += 2
                        continue
                    i += 1
                    break
                part.append(text[i])
                i += 1
            name = "".join(part)
        else:
            start = i
            while i < n and text[i] != "." and not text[i].isspace():
                if text[i] == '"':
                    return None
                i += 1
            name = text[start:i]
            name = "".join(c.lower() if c.isascii() else c for c in name)
        if not name:
            return None
        parts.append(name)
        while i < n and text[i].isspace():
            i += 1
        if i == n:
            return tuple(parts)
        if text[i] != ".":
            return None
        i += 1


class _Findings:
    """What a walk over one statement's tree collects."""

    __slots__ = (
        "dependent",
        "depth",
        "facts",
        "flags",
        "functions",
        "missing_where",
        "nested",
        "relations",
        "sensitive",
        "where_kinds",
    )

    def __init__(self, depth: int = 0) -> None:
        # dicts as ordered sets
        self.relations: dict[str, None] = {}
        self.functions: dict[str, None] = {}
        self.nested: dict[str, None] = {}
        self.flags: set[str] = set()
        self.facts: set[str] = set()
        self.sensitive: list[Sensitive] = []
        self.where_kinds = 0
        self.missing_where = False
        self.depth = depth
        self.dependent = False

    # -- statements --------------------------------------------------------

    def statement(self, kind: str, body: dict) -> None:
        """Facts of one statement (the top one or one nested anywhere)."""
        if kind in _WHERE_KINDS:
            self.where_kinds += 1
            if self._unbounded(body.get("whereClause"), _target_names(body)):
                self.missing_where = True
        handler = _STATEMENT_HANDLERS.get(kind)
        if handler is not None:
            handler(self, body)
        fields = _DEFELEM_FIELDS.get(kind)
        if fields:
            for field in fields:
                for item in body.get(field) or ():
                    self._defelem_function(item)
        fields = _NAME_LIST_FIELDS.get(kind)
        if fields:
            for field in fields:
                self._function_name(_dotted(body.get(field)))
        fields = _OBJECT_WITH_ARGS_FIELDS.get(kind)
        if fields:
            for field in fields:
                value = body.get(field)
                if isinstance(value, dict):
                    self._function_name(_dotted(value.get("objname")))

    def _function_name(self, name: str | None) -> None:
        if name:
            self.functions[name] = None

    def _defelem_function(self, item: object) -> None:
        elem = item.get("DefElem") if isinstance(item, dict) else None
        if not isinstance(elem, dict) or elem.get("defname") not in _FUNCTION_DEFNAMES:
            return
        arg = elem.get("arg")
        if not isinstance(arg, dict):
            return
        if "TypeName" in arg:
            self._function_name(_dotted(arg["TypeName"].get("names")))
        elif "List" in arg:
            self._function_name(_dotted(arg["List"].get("items")))
        elif "String" in arg:
            self._function_name(arg["String"].get("sval"))
        elif "ObjectWithArgs" in arg:
            self._function_name(_dotted(arg["ObjectWithArgs"].get("objname")))

    def _update(self, body: dict) -> None:
        relation = body.get("relation")
        if not isinstance(relation, dict) or relation.get("relname") != "pg_settings":
            return
        if relation.get("schemaname") not in (None, "pg_catalog"):
            return
        # pg_settings' update rule calls set_config(name, setting, false):
        # a SET by another spelling, for the built-in protections
        self.dependent = True
        setting = _pg_settings_name(body.get("whereClause"))
        value = None
        for item in body.get("targetList") or ():
            target = item.get("ResTarget") if isinstance(item, dict) else None
            if isinstance(target, dict) and target.get("name") == "setting":
                value = _literal(target.get("val"))
        self.sensitive.append(
            Sensitive(
                "set",
                setting=setting.lower() if setting is not None else None,
                value=value,
                literal=setting is not None and value is not None,
            )
        )

    def _merge(self, body: dict) -> None:
        where = body.get("joinCondition")
        kinds = set()
        for clause in body.get("mergeWhenClauses") or ():
            when = clause.get("MergeWhenClause") if isinstance(clause, dict) else None
            if not isinstance(when, dict):
                continue
            command = when.get("commandType")
            if command == "CMD_UPDATE":
                kinds.add("UpdateStmt")
            elif command == "CMD_DELETE":
                kinds.add("DeleteStmt")
            elif command == "CMD_INSERT":
                kinds.add("InsertStmt")
        for kind in sorted(kinds):
            self.nested[kind] = None
        if kinds & {"UpdateStmt", "DeleteStmt"}:
            self.where_kinds += 1
            if self._unbounded(where, _target_names(body)):
                self.missing_where = True

    def _insert(self, body: dict) -> None:
        conflict = body.get("onConflictClause")
        if not isinstance(conflict, dict):
            return
        if conflict.get("action") != "ONCONFLICT_UPDATE":
            return
        self.nested["UpdateStmt"] = None
        self.where_kinds += 1
        where = conflict.get("whereClause")
        if not self._unbounded(where):
            return
        select = body.get("selectStmt")
        select = select.get("SelectStmt") if isinstance(select, dict) else None
        if not isinstance(select, dict) or "valuesLists" in select:
            return  # VALUES: at most its rows
        if self._unbounded(select.get("whereClause")):
            self.missing_where = True

    def _always_true(self, where: object) -> bool:
        if _reads_values(where):
            self.dependent = True
        return always_true(where)

    def _unbounded(self, where: object, target: frozenset[str] = frozenset()) -> bool:
        """
        A condition that bounds nothing: absent, constant-true, or one
        that reads no column of the C{target} row (C{WHERE $1}, C{WHERE
        now() > '2000-01-01'}, C{WHERE EXISTS (SELECT 1 FROM t)}, C{FROM u
        WHERE u.k = 1}: the same for every target row, so every row or
        none), unless it is known false or NULL.  C{target}: the names
        (table, alias) that qualify the statement's target's columns; an
        unqualified column may be the target's.
        """
        if where is None:
            return True
        if not _reads_no_row(where, target):
            return self._always_true(where)
        if _reads_values(where):
            self.dependent = True
        try:
            value = _as_bool(_value(where, 0))
        except (ArithmeticError, ValueError, TypeError, OverflowError):
            return True
        # known false or NULL: no row at all
        return value is not False and value is not _NULL

    def _select(self, body: dict) -> None:
        if isinstance(body.get("intoClause"), dict):
            # SELECT ... INTO: PostgreSQL runs it as CREATE TABLE AS
            self.nested["CreateTableAsStmt"] = None

    def _copy(self, body: dict) -> None:
        from_ = bool(body.get("is_from"))
        self.facts.add("copy-from" if from_ else "copy-to")
        if body.get("filename") and not body.get("is_program"):
            self.flags.add(COPY_FROM_FILE if from_ else COPY_TO_FILE)

    def _alter_table(self, body: dict) -> None:
        for cmd in body.get("cmds") or ():
            command = cmd.get("AlterTableCmd") if isinstance(cmd, dict) else None
            if not isinstance(command, dict):
                continue
            subtype = command.get("subtype", "")
            if subtype in ("AT_DropColumn", "AT_DropConstraint"):
                self.facts.add("drop-column")
            elif "RowSecurity" in subtype:
                self.facts.add("row-security")
            elif subtype == "AT_ChangeOwner":
                self.facts.add("owner-change")
            elif subtype == "AT_GenericOptions":
                definition = command.get("def")
                if isinstance(definition, dict):
                    self._foreign_options(definition.get("List", {}).get("items"))
            elif subtype == "AT_AlterColumnType":
                definition = command.get("def")
                column = (
                    definition.get("ColumnDef")
                    if isinstance(definition, dict)
                    else None
                )
                if isinstance(column, dict) and column.get("raw_default") is not None:
                    # ALTER COLUMN ... TYPE ... USING expr: an UPDATE of
                    # every row, with no WHERE
                    self.nested["UpdateStmt"] = None
                    self.where_kinds += 1
                    self.missing_where = True

    def _foreign_table(self, body: dict) -> None:
        self._foreign_options(body.get("options"))

    def _foreign_options(self, options: object) -> None:
        """
        A foreign table's options: file_fdw reads C{filename} and runs
        C{program} (as COPY FROM does), postgres_fdw and its kind read
        the relation C{table_name} (in C{schema_name}).
        """
        values = {}
        for item in options or ():
            elem = item.get("DefElem") if isinstance(item, dict) else None
            if not isinstance(elem, dict) or not isinstance(elem.get("defname"), str):
                continue
            arg = elem.get("arg")
            value = arg.get("String", {}).get("sval") if isinstance(arg, dict) else None
            values[elem["defname"].lower()] = value
        if "filename" in values:
            self.flags.add(SERVER_FILE)
            self.flags.add(COPY_FROM_FILE)
        if "program" in values:
            self.facts.add("copy-program")
        table = values.get("table_name")
        if "table_name" in values or "schema_name" in values:
            self.dependent = True
            if not table:
                self.flags.add(OPAQUE_FLAG)  # a relation the gateway cannot name
                return
            schema = values.get("schema_name")
            self.relations[f"{schema}.{table}" if schema else table] = None

    def _variable_set(self, body: dict) -> None:
        self.dependent = True
        found = _variable_set(body)
        if found.setting in ("role", "session_authorization"):
            self.facts.add("set-role")
        self.sensitive.append(found)

    def _alter_role(self, body: dict) -> None:
        self.sensitive.append(
            Sensitive("alter-role", role=_role_name(body.get("role")))
        )
        self._members(body.get("options"))

    def _members(self, options: object) -> None:
        """ALTER GROUP ... ADD/DROP USER, CREATE ROLE ... ROLE/ADMIN: members."""
        for item in options or ():
            elem = item.get("DefElem") if isinstance(item, dict) else None
            if not isinstance(elem, dict):
                continue
            if elem.get("defname") not in ("rolemembers", "adminmembers"):
                continue
            arg = elem.get("arg")
            items = arg.get("List", {}).get("items") if isinstance(arg, dict) else None
            for spec in items or ():
                role = spec.get("RoleSpec") if isinstance(spec, dict) else None
                self.sensitive.append(Sensitive("membership", role=_role_name(role)))

    def _create_role(self, body: dict) -> None:
        self._members(body.get("options"))

    def _grant_role(self, body: dict) -> None:
        for spec in body.get("grantee_roles") or ():
            role = spec.get("RoleSpec") if isinstance(spec, dict) else None
            self.sensitive.append(Sensitive("membership", role=_role_name(role)))

    def _alter_role_set(self, body: dict) -> None:
        role = _role_name(body.get("role")) if body.get("role") else "ALL"
        setstmt = body.get("setstmt")
        found = _variable_set(setstmt if isinstance(setstmt, dict) else {})
        self.sensitive.append(attrs.evolve(found, action="role-setting", role=role))

    def _alter_database_set(self, body: dict) -> None:
        setstmt = body.get("setstmt")
        found = _variable_set(setstmt if isinstance(setstmt, dict) else {})
        self.sensitive.append(attrs.evolve(found, action="database-setting"))

    def _drop_role(self, body: dict) -> None:
        for item in body.get("roles") or ():
            spec = item.get("RoleSpec") if isinstance(item, dict) else None
            self.sensitive.append(Sensitive("drop-role", role=_role_name(spec)))

    def _rename(self, body: dict) -> None:
        if body.get("renameType") == "OBJECT_ROLE":
            self.facts.add("role-rename")
            self.sensitive.append(Sensitive("rename-role", role=body.get("subname")))
        elif body.get("renameType") in ("OBJECT_DATABASE", "OBJECT_TABLESPACE"):
            self.facts.add("server-rename")

    # -- function calls ----------------------------------------------------

    def call(self, name: str, body: dict) -> None:
        """A function call: SQL it runs, relations it names, files."""
        self.functions[name] = None
        last = name.rsplit(".", 1)[-1].lower()
        fact = _FUNCTION_FACTS.get(last)
        if fact is not None:
            self.facts.add(fact)
        if last in _FILE_FUNCTIONS:
            self.flags.add(SERVER_FILE)
        elif last == "set_config":
            self.dependent = True
            args = body.get("args") or []
            setting = _literal(args[0]) if len(args) >= 1 else None
            value = _literal(args[1]) if len(args) >= 2 else None
            literal = setting is not None and value is not None and len(args) == 3
            self.sensitive.append(
                Sensitive(
                    "set",
                    setting=setting.lower() if setting is not None else None,
                    value=value,
                    literal=literal,
                )
            )
        if last in _NAME_READERS:
            self.dependent = True
            self._named_relation(body)
        locate = _SQL_RUNNERS.get(last)
        if last in _CRON and name.count(".") == 1 and not name.startswith("cron."):
            locate = None  # some other schema's schedule(), not pg_cron's
        if locate is not None:
            self.dependent = True
            self._inner_sql(body, locate)

    def _arguments(self, body: dict) -> list | None:
        args = body.get("args") or []
        if body.get("func_variadic") or body.get("agg_star"):
            return None
        for arg in args:
            if isinstance(arg, dict) and "NamedArgExpr" in arg:
                return None  # named notation: which is the SQL is not read here
        return args

    def _named_relation(self, body: dict) -> None:
        args = self._arguments(body)
        text = _literal(args[0]) if args else None
        name = qualified_name(text) if text is not None else None
        if name is None or len(name) > 3:
            self.flags.add(OPAQUE_FLAG)
            return
        self.relations[".".join(name)] = None

    def _inner_sql(self, body: dict, locate) -> None:
        args = self._arguments(body)
        index = locate(len(args)) if args is not None else None
        if index == -1:
            return  # a form that runs no SQL
        if index is None or index >= len(args):  # type: ignore[arg-type]
            self.flags.add(OPAQUE_FLAG)
            return
        if locate is _dblink and len(args) == 2:  # type: ignore[arg-type]
            # dblink(sql, fail_on_error) has a boolean second argument
            second = args[1].get("A_Const") if isinstance(args[1], dict) else None  # type: ignore[index]
            if isinstance(second, dict) and "boolval" in second:
                index = 0
        sql = _literal(args[index])  # type: ignore[index]
        if sql is None or self.depth >= MAX_INNER_DEPTH:
            self.flags.add(OPAQUE_FLAG)
            return
        try:
            inner = _statements(sql, self.depth + 1)
        except (_pg.ParseError, UnicodeEncodeError, RecursionError):
            self.flags.add(OPAQUE_FLAG)
            return
        for statement in inner:
            if statement.kind != "SelectStmt":
                self.nested[statement.kind] = None
            for kind in statement.nested:
                self.nested[kind] = None
            if statement.explain_of and statement.explain_of != "SelectStmt":
                self.nested[statement.explain_of] = None
            self.relations.update(dict.fromkeys(statement.relations))
            self.functions.update(dict.fromkeys(statement.functions))
            self.flags |= statement.flags
            self.facts |= statement.facts
            self.sensitive.extend(statement.sensitive)
            if statement.copy_program:
                self.facts.add("copy-program")
            if statement.has_where is not None:
                self.where_kinds += 1
                if not statement.has_where:
                    self.missing_where = True
            if statement.kind in _OPAQUE_INNER:
                self.flags.add(OPAQUE_FLAG)

    # -- the walk ----------------------------------------------------------

    def walk(self, root: dict, ctes: frozenset[str]) -> None:
        """
        Collect from the subtree of C{root}; C{ctes} are the CTE names in
        scope.  Recursive down to L{_MAX_RECURSION} levels (fast), where
        deeper subtrees are set aside and walked from a work list: a tree
        as deep as PostgreSQL accepts never meets Python's recursion limit.
        """
        deferred = [(root, ctes)]
        while deferred:
            node, scope = deferred.pop()
            self._walk(node, scope, 0, deferred)

    def _walk(
        self, node: dict, ctes: frozenset[str], depth: int, deferred: list
    ) -> None:
        if "relname" in node:
            # A bare RangeVar: a statement's target, never a CTE reference.
            self.relations[_rangevar_name(node)] = None
            return
        if depth > _MAX_RECURSION:
            deferred.append((node, ctes))
            return
        depth += 1
        with_clause = node.get("withClause")
        if type(with_clause) is dict:
            ctes, cte_nodes = self._ctes(with_clause, ctes)
            for cte, scope in cte_nodes:
                self._walk(cte, scope, depth, deferred)
        for key, value in node.items():
            kind = type(value)
            if kind is list:
                if key not in _LEAVES:
                    self._walk_list(value, ctes, depth, deferred)
                continue
            if kind is not dict or key in _LEAVES or key == "withClause":
                continue
            if key == "RangeVar":
                if "schemaname" not in value and value.get("relname") in ctes:
                    continue
            elif key == "FuncCall" or key == "funccall":
                name = _dotted(value.get("funcname"))
                if name:
                    self.call(name, value)
            elif key == "ObjectWithArgs":
                # DROP/ALTER/GRANT/COMMENT ... FUNCTION name(args): a
                # function rule must see a function renamed, moved,
                # dropped or granted, not only one called
                self._function_name(_dotted(value.get("objname")))
            elif key == "CreateOpClassItem":
                if value.get("itemtype") == 2:
                    item = value.get("name")
                    if isinstance(item, dict):
                        self._function_name(_dotted(item.get("objname")))
            elif key[0].isupper() and key.endswith("Stmt"):
                if key != "SelectStmt":
                    self.nested[key] = None
                self.statement(key, value)
            self._walk(value, ctes, depth, deferred)

    def _walk_list(
        self, items: list, ctes: frozenset[str], depth: int, deferred: list
    ) -> None:
        for item in items:
            kind = type(item)
            if kind is dict:
                self._walk(item, ctes, depth, deferred)
            elif kind is list:
                self._walk_list(item, ctes, depth + 1, deferred)

    def _ctes(
        self, with_clause: dict, outer: frozenset[str]
    ) -> tuple[frozenset[str], list]:
        """
        A WITH clause's queries, each with the names in its scope, and
        the names in scope for the rest of the statement.  A non-recursive
        CTE sees only the CTEs before it, so C{WITH t AS (SELECT * FROM t)}
        still reports C{t}.
        """
        ctes = with_clause.get("ctes")
        if not isinstance(ctes, list):
            return outer, []
        recursive = bool(with_clause.get("recursive"))
        names = []
        for cte in ctes:
            body = cte.get("CommonTableExpr") if isinstance(cte, dict) else None
            if isinstance(body, dict) and isinstance(body.get("ctename"), str):
                names.append(body["ctename"])
        full = outer.union(names)
        out = []
        for index, cte in enumerate(ctes):
            scope = full if recursive else outer.union(names[:index])
            if type(cte) is dict:
                out.append((cte, scope))
        return full, out


#: Tree levels walked by recursion; deeper ones go to a work list.
_MAX_RECURSION = 60

_STATEMENT_HANDLERS = {
    "UpdateStmt": _Findings._update,
    "MergeStmt": _Findings._merge,
    "InsertStmt": _Findings._insert,
    "SelectStmt": _Findings._select,
    "CopyStmt": _Findings._copy,
    "AlterTableStmt": _Findings._alter_table,
    "CreateForeignTableStmt": _Findings._foreign_table,
    "VariableSetStmt": _Findings._variable_set,
    "AlterRoleStmt": _Findings._alter_role,
    "CreateRoleStmt": _Findings._create_role,
    "GrantRoleStmt": _Findings._grant_role,
    "AlterRoleSetStmt": _Findings._alter_role_set,
    "AlterDatabaseSetStmt": _Findings._alter_database_set,
    "DropRoleStmt": _Findings._drop_role,
    "RenameStmt": _Findings._rename,
}
# Statements in SQL text run by a built-in that make it opaque in turn.
_OPAQUE_INNER = frozenset({"DoStmt", "CreateFunctionStmt"})


# -- constant-true conditions ------------------------------------------------

_UNKNOWN = object()
_NULL = None
#: how deep a condition is evaluated; deeper is "not known to be true"
_MAX_CONDITION_DEPTH = 64
_TRUE_TEXT = frozenset({"t", "true", "y", "yes", "on", "1"})
_FALSE_TEXT = frozenset({"f", "false", "n", "no", "off", "0"})


def always_true(node: object) -> bool:
    """
    Whether a WHERE (or ON) condition is true for every row, as far as a
    parser can tell: constants (C{true}, C{1=1}, C{'a'='a'}, C{NOT false},
    C{2>1}, C{1+1=2}), a column compared with itself (C{x = x}), C{p OR
    NOT p}, C{x IS NULL OR x IS NOT NULL}, anything C{OR true}, C{EXISTS
    (SELECT 1)}, C{LIKE '%'}.  Best effort: False means "not known".
    """
    try:
        return _value(node, 0) is True
    except (ArithmeticError, ValueError, TypeError, OverflowError):
        return False


def _reads_values(where: object) -> bool:
    """
    Whether a condition's constant-truth may depend on the values of its
    constants or parameters (a fact of its shape: texts of one shape
    agree).  Plain filters, C{col = 5 AND col2 IN (1, $1)}, do not.
    """
    stack = [where]
    found = False
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            if "A_Const" in node or "ParamRef" in node:
                found = True
                break
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    return found and not _plain_filter(where)


def _target_names(body: dict) -> frozenset[str]:
    """The names that qualify a DELETE/UPDATE/MERGE target's columns."""
    relation = body.get("relation")
    if not isinstance(relation, dict):
        return frozenset()
    names = {relation.get("relname")}
    alias = relation.get("alias")
    if isinstance(alias, dict):
        names.add(alias.get("aliasname"))
    return frozenset(n for n in names if isinstance(n, str))


def _reads_no_row(where: object, target: frozenset[str] = frozenset()) -> bool:
    """
    Whether a condition reads no column of the target row (nor C{CURRENT
    OF}): then it has one value for every target row.  A column qualified
    by another relation (C{u.k}) is not the target's when C{target} names
    the target; an unqualified one may be.
    """
    stack = [where]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            if "CurrentOfExpr" in node:
                return False
            column = node.get("ColumnRef")
            if isinstance(column, dict):
                fields = column.get("fields")
                if not target or not isinstance(fields, list) or len(fields) < 2:
                    return False
                qualifier = _dotted(fields[-2:-1])
                if qualifier is None or qualifier in target:
                    return False
                continue
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    return True


def _is_column(node: object) -> bool:
    return isinstance(node, dict) and "ColumnRef" in node


def _is_value(node: object) -> bool:
    if isinstance(node, dict) and "TypeCast" in node:
        node = node["TypeCast"].get("arg")
    return isinstance(node, dict) and ("A_Const" in node or "ParamRef" in node)


def _items(node: object) -> list:
    """The items of an IN list (a bare list or a List node)."""
    if isinstance(node, dict) and isinstance(node.get("List"), dict):
        node = node["List"].get("items")
    return node if isinstance(node, list) else []


def _plain_filter(where: object) -> bool:
    """C{col <op> value} comparisons and C{col IN (values)}, ANDed."""
    stack = [where]
    while stack:
        node = stack.pop()
        if not isinstance(node, dict) or len(node) != 1:
            return False
        ((kind, body),) = node.items()
        if not isinstance(body, dict):
            return False
        if kind == "BoolExpr" and body.get("boolop") == "AND_EXPR":
            stack.extend(body.get("args") or ())
            continue
        if kind != "A_Expr":
            return False
        left, right = body.get("lexpr"), body.get("rexpr")
        if body.get("kind") == "AEXPR_OP" and _dotted(body.get("name")) in _COMPARE:
            if (_is_column(left) and _is_value(right)) or (
                _is_column(right) and _is_value(left)
            ):
                continue
        if body.get("kind") == "AEXPR_IN" and _is_column(left):
            items = _items(right)
            if items and all(map(_is_value, items)):
                continue
        return False
    return True


def _strip(node: object, depth: int = 0) -> object:
    """A subtree without its locations, for comparing operands."""
    if depth > _MAX_CONDITION_DEPTH:
        raise ValueError("too deep")
    if isinstance(node, dict):
        if len(node) == 1:
            ((kind, body),) = node.items()
            if kind == "CollateClause" and isinstance(body, dict):
                # a collation changes no equality with itself
                return _strip(body.get("arg"), depth + 1)
        return {k: _strip(v, depth + 1) for k, v in node.items() if k != "location"}
    if isinstance(node, list):
        return [_strip(v, depth + 1) for v in node]
    return node


def _column_fields(node: object) -> list | None:
    if isinstance(node, dict) and isinstance(node.get("CollateClause"), dict):
        node = node["CollateClause"].get("arg")
    body = node.get("ColumnRef") if isinstance(node, dict) else None
    fields = body.get("fields") if isinstance(body, dict) else None
    return fields if isinstance(fields, list) and fields else None


def _same(a: object, b: object) -> bool:
    if a is None:
        return False
    left, right = _column_fields(a), _column_fields(b)
    if left is not None and right is not None and min(len(left), len(right)) == 1:
        # t.c and c name one column wherever both resolve (else PostgreSQL
        # refuses c as ambiguous); t.c and u.c are two columns
        return _strip(left[-1]) == _strip(right[-1])
    return _strip(a) == _strip(b)


def _const(const: dict) -> object:
    if const.get("isnull"):
        return _NULL
    if "boolval" in const:
        return bool(const["boolval"].get("boolval", False))
    if "ival" in const:
        return int(const["ival"].get("ival", 0))
    if "fval" in const:
        return float(const["fval"].get("fval", "0"))
    if "sval" in const:
        return str(const["sval"].get("sval", ""))
    if "bsval" in const:
        return ("bits", const["bsval"].get("bsval", ""))
    return _UNKNOWN


def _as_bool(value: object) -> object:
    if value is _NULL or isinstance(value, bool):
        return value
    if isinstance(value, int):
        return value != 0
    if isinstance(value, str):
        text = value.strip().lower()
        if text in _TRUE_TEXT:
            return True
        if text in _FALSE_TEXT:
            return False
    return _UNKNOWN


_COMPARE = {
    "=": lambda a, b: a == b,
    "<>": lambda a, b: a != b,
    "!=": lambda a, b: a != b,
    "<": lambda a, b: a < b,
    ">": lambda a, b: a > b,
    "<=": lambda a, b: a <= b,
    ">=": lambda a, b: a >= b,
}
_ARITHMETIC = {
    "+": lambda a, b: a + b,
    "-": lambda a, b: a - b,
    "*": lambda a, b: a * b,
}
_REFLEXIVE = frozenset({"=", "<=", ">="})


def _comparable(a: object, b: object) -> bool:
    numbers = (int, float)
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool)
    if isinstance(a, numbers) and isinstance(b, numbers):
        return True
    return type(a) is type(b) and not isinstance(a, numbers)


def _value(node: object, depth: int) -> object:
    """The constant value of an expression: a Python value, None (NULL), or _UNKNOWN."""
    if depth > _MAX_CONDITION_DEPTH or not isinstance(node, dict) or len(node) != 1:
        return _UNKNOWN
    ((kind, body),) = node.items()
    if not isinstance(body, dict):
        return _UNKNOWN
    depth += 1
    if kind == "A_Const":
        return _const(body)
    if kind == "TypeCast":
        value = _value(body.get("arg"), depth)
        type_name = _dotted((body.get("typeName") or {}).get("names")) or ""
        last = type_name.rsplit(".", 1)[-1]
        if last in ("bool", "boolean"):
            return _as_bool(value)
        if last in ("int", "int2", "int4", "int8", "integer", "smallint", "bigint"):
            if isinstance(value, bool) or value is _UNKNOWN:
                return _UNKNOWN
            return int(value) if value is not _NULL else _NULL
        if last in ("text", "varchar", "name"):
            if value is _NULL or isinstance(value, str):
                return value
            if isinstance(value, bool):
                return "true" if value else "false"
            if isinstance(value, int):
                return str(value)
        return _UNKNOWN
    if kind == "CollateClause":
        return _value(body.get("arg"), depth)
    if kind == "CoalesceExpr":
        # the first argument that is not NULL
        for arg in body.get("args") or ():
            value = _value(arg, depth)
            if value is not _NULL:
                return value
        return _NULL
    if kind == "CaseExpr":
        return _case(body, depth)
    if kind == "BoolExpr":
        return _bool_expr(body, depth)
    if kind == "A_Expr":
        return _a_expr(body, depth)
    if kind == "NullTest":
        arg = _value(body.get("arg"), depth)
        if arg is _UNKNOWN:
            return _UNKNOWN
        is_null = arg is _NULL
        return is_null if body.get("nulltesttype") == "IS_NULL" else not is_null
    if kind == "BooleanTest":
        arg = _as_bool(_value(body.get("arg"), depth))
        if arg is _UNKNOWN:
            return _UNKNOWN
        test = body.get("booltesttype", "")
        return {
            "IS_TRUE": arg is True,
            "IS_NOT_TRUE": arg is not True,
            "IS_FALSE": arg is False,
            "IS_NOT_FALSE": arg is not False,
            "IS_UNKNOWN": arg is _NULL,
            "IS_NOT_UNKNOWN": arg is not _NULL,
        }.get(test, _UNKNOWN)
    if kind == "SubLink" and body.get("subLinkType") == "EXPR_SUBLINK":
        # (SELECT <constant>): one row, no table
        select = body.get("subselect")
        select = select.get("SelectStmt") if isinstance(select, dict) else None
        targets = select.get("targetList") if isinstance(select, dict) else None
        if (
            isinstance(targets, list)
            and len(targets) == 1
            and set(select) <= {"targetList", "limitOption", "op"}
            and select.get("op", "SETOP_NONE") == "SETOP_NONE"
        ):
            target = (
                targets[0].get("ResTarget") if isinstance(targets[0], dict) else None
            )
            if isinstance(target, dict):
                return _value(target.get("val"), depth)
        return _UNKNOWN
    if kind == "SubLink" and body.get("subLinkType") == "EXISTS_SUBLINK":
        select = body.get("subselect")
        select = select.get("SelectStmt") if isinstance(select, dict) else None
        if (
            isinstance(select, dict)
            and set(select) <= {"valuesLists", "limitOption", "op"}
            and select.get("valuesLists")
        ):
            return True  # VALUES has at least one row
        if (
            isinstance(select, dict)
            and "fromClause" not in select
            and "limitCount" not in select
            and "havingClause" not in select
            and select.get("op", "SETOP_NONE") == "SETOP_NONE"
            and "valuesLists" not in select
        ):
            where = select.get("whereClause")
            if where is None or _value(where, depth) is True:
                return True
            if _as_bool(_value(where, depth)) in (False, _NULL):
                return False  # no row
        return _UNKNOWN
    return _UNKNOWN


def _bool_expr(body: dict, depth: int) -> object:
    op = body.get("boolop")
    args = body.get("args") or []
    values = [_as_bool(_value(a, depth)) for a in args]
    if op == "NOT_EXPR":
        value = values[0] if values else _UNKNOWN
        if value is _UNKNOWN or value is _NULL:
            return value
        return not value
    # three-valued logic; _UNKNOWN (not known here) wins over NULL
    if op == "AND_EXPR":
        if any(v is False for v in values):
            return False
        if any(v is _UNKNOWN for v in values):
            return _UNKNOWN
        return _NULL if any(v is _NULL for v in values) else True
    if op == "OR_EXPR":
        if any(v is True for v in values):
            return True
        if any(v is _UNKNOWN for v in values):
            # p OR NOT p over what only the rows decide
            return True if _tautology(args) else _UNKNOWN
        return _NULL if any(v is _NULL for v in values) else False
    return _UNKNOWN


def _case(body: dict, depth: int) -> object:
    """A CASE whose branches decide on constants."""
    subject = body.get("arg")
    subject_value = _value(subject, depth) if subject is not None else None
    if subject is not None and subject_value is _UNKNOWN:
        return _UNKNOWN
    for arm in body.get("args") or ():
        when = arm.get("CaseWhen") if isinstance(arm, dict) else None
        if not isinstance(when, dict):
            return _UNKNOWN
        test = _value(when.get("expr"), depth)
        if subject is not None:
            if test is _UNKNOWN:
                return _UNKNOWN
            if test is _NULL or subject_value is _NULL:
                continue
            if not _comparable(subject_value, test):
                return _UNKNOWN
            test = subject_value == test
        else:
            test = _as_bool(test)
        if test is _UNKNOWN:
            return _UNKNOWN
        if test is True:
            return _value(when.get("result"), depth)
    default = body.get("defresult")
    return _value(default, depth) if default is not None else _NULL


def _tautology(args: list) -> bool:
    """C{p OR NOT p}, C{x IS NULL OR x IS NOT NULL} among OR's arguments."""
    nots = []
    null_tests: dict[str, list] = {"IS_NULL": [], "IS_NOT_NULL": []}
    for arg in args:
        if not isinstance(arg, dict):
            continue
        expr = arg.get("BoolExpr")
        if isinstance(expr, dict) and expr.get("boolop") == "NOT_EXPR":
            nots.extend(expr.get("args") or ())
        test = arg.get("NullTest")
        if isinstance(test, dict) and test.get("nulltesttype") in null_tests:
            null_tests[test["nulltesttype"]].append(test.get("arg"))
    for negated in nots:
        if any(_same(negated, arg) for arg in args):
            return True
    return any(
        _same(a, b) for a in null_tests["IS_NULL"] for b in null_tests["IS_NOT_NULL"]
    )


def _number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _among(node: object, items: list) -> bool:
    """Whether C{node} is one of C{items} (L{_same}); cheap for long lists."""
    if not isinstance(node, dict) or len(node) != 1:
        return False
    kind = next(iter(node))
    kinds = (kind, "CollateClause") if kind != "CollateClause" else None
    return any(
        isinstance(item, dict)
        and (kinds is None or next(iter(item), None) in kinds)
        and _same(node, item)
        for item in items
    )


def _between(kind: str, subject: object, bounds: list, depth: int) -> object:
    """
    x [NOT] BETWEEN [SYMMETRIC] a AND b, on constants or x between x and x,
    in three-valued logic: C{a <= x AND x <= b} (SYMMETRIC: either way
    round), negated for NOT, so C{2 NOT BETWEEN NULL AND 0} is true.
    """
    if len(bounds) != 2:
        return _UNKNOWN
    low, high = bounds
    negated = "NOT" in kind
    if _same(subject, low) and _same(subject, high):
        value = _value(subject, depth)
        return _NULL if value is _NULL else (not negated)
    x, a, b = (_value(v, depth) for v in (subject, low, high))
    if x is _UNKNOWN or a is _UNKNOWN or b is _UNKNOWN:
        return _UNKNOWN
    inside = _and3(_le3(a, x), _le3(x, b))
    if kind.endswith("_SYM"):
        inside = _or3(inside, _and3(_le3(b, x), _le3(x, a)))
    return _not3(inside) if negated else inside


def _le3(p: object, q: object) -> object:
    if p is _NULL or q is _NULL:
        return _NULL
    if not _comparable(p, q):
        return _UNKNOWN
    return p <= q  # type: ignore[operator]


def _and3(p: object, q: object) -> object:
    if p is False or q is False:
        return False
    if p is _UNKNOWN or q is _UNKNOWN:
        return _UNKNOWN
    if p is _NULL or q is _NULL:
        return _NULL
    return True


def _or3(p: object, q: object) -> object:
    if p is True or q is True:
        return True
    if p is _UNKNOWN or q is _UNKNOWN:
        return _UNKNOWN
    if p is _NULL or q is _NULL:
        return _NULL
    return False


def _not3(p: object) -> object:
    if p is True:
        return False
    if p is False:
        return True
    return p


def _a_expr(body: dict, depth: int) -> object:
    kind = body.get("kind")
    name = _dotted(body.get("name")) or ""
    lexpr, rexpr = body.get("lexpr"), body.get("rexpr")
    if kind in ("AEXPR_NOT_DISTINCT", "AEXPR_DISTINCT") and _same(lexpr, rexpr):
        return kind == "AEXPR_NOT_DISTINCT"
    if kind == "AEXPR_OP" and name in _REFLEXIVE and _same(lexpr, rexpr):
        # x = x holds for every row where x is not null (NULL = NULL does not)
        return _NULL if _value(lexpr, depth) is _NULL else True
    if kind in ("AEXPR_LIKE", "AEXPR_ILIKE", "AEXPR_OP") and name in ("~~", "~~*"):
        pattern = _value(rexpr, depth)
        if isinstance(pattern, str) and pattern and set(pattern) == {"%"}:
            return True
    if kind == "AEXPR_IN" and name == "=" and lexpr is not None:
        if _among(lexpr, _items(rexpr)):
            # x IN (..., x, ...): true wherever x is not null
            return _NULL if _value(lexpr, depth) is _NULL else True
    if kind == "AEXPR_OP_ANY" and name in _REFLEXIVE and lexpr is not None:
        array = rexpr.get("A_ArrayExpr") if isinstance(rexpr, dict) else None
        elements = array.get("elements") if isinstance(array, dict) else None
        if isinstance(elements, list) and _among(lexpr, elements):
            return _NULL if _value(lexpr, depth) is _NULL else True
    if kind in (
        "AEXPR_BETWEEN",
        "AEXPR_NOT_BETWEEN",
        "AEXPR_BETWEEN_SYM",
        "AEXPR_NOT_BETWEEN_SYM",
    ):
        return _between(kind, lexpr, _items(rexpr), depth)
    if kind == "AEXPR_IN":
        left = _value(lexpr, depth)
        items = _items(rexpr)
        values = [_value(i, depth) for i in items]
        if left is _UNKNOWN or any(v is _UNKNOWN for v in values):
            return _UNKNOWN
        if left is _NULL:
            return _NULL
        if any(v is not _NULL and not _comparable(left, v) for v in values):
            return _UNKNOWN
        if any(left == v for v in values if v is not _NULL):
            return name == "="
        if _NULL in values:
            return _NULL  # no match, but a NULL might have been one
        return name != "="
    if kind != "AEXPR_OP":
        return _UNKNOWN
    right = _value(rexpr, depth)
    if lexpr is None:
        if (
            name == "-"
            and isinstance(right, (int, float))
            and not isinstance(right, bool)
        ):
            return -right
        if name == "+" and isinstance(right, (int, float)):
            return right
        return _UNKNOWN
    left = _value(lexpr, depth)
    if left is _UNKNOWN or right is _UNKNOWN:
        return _UNKNOWN
    if left is _NULL or right is _NULL:
        return _NULL
    if name in _COMPARE:
        if isinstance(left, bool) or isinstance(right, bool):
            left, right = _as_bool(left), _as_bool(right)
            if left is _UNKNOWN or right is _UNKNOWN:
                return _UNKNOWN
        if not _comparable(left, right):
            return _UNKNOWN
        return _COMPARE[name](left, right)
    if name in ("/", "%") and _number(left) and _number(right):
        if isinstance(left, int) and isinstance(right, int):
            # PostgreSQL truncates toward zero; the remainder has the
            # dividend's sign
            quotient = (
                abs(left) // abs(right) * (1 if (left < 0) == (right < 0) else -1)
            )
            return quotient if name == "/" else left - right * quotient
        return left / right if name == "/" else _UNKNOWN
    if name in _ARITHMETIC:
        numbers = (int, float)
        if (
            isinstance(left, numbers)
            and isinstance(right, numbers)
            and not isinstance(left, bool)
            and not isinstance(right, bool)
        ):
            return _ARITHMETIC[name](left, right)
        return _UNKNOWN
    if name == "||" and isinstance(left, str) and isinstance(right, str):
        return left + right
    return _UNKNOWN


# -- classification ----------------------------------------------------------


def _classify_one(kind: str, body: dict, text: str, depth: int = 0) -> Statement:
    found = _Findings(depth)
    found.statement(kind, body)
    if kind in _OBJECT_LISTS:
        for obj in body.get("objects") or ():
            name = _object_name(obj)
            if name is not None:
                found.relations[name] = None
    found.walk(body, frozenset())
    object_kind = None
    for field in _OBJECT_KIND_FIELDS:
        value = body.get(field)
        if isinstance(value, str):
            object_kind = value
            break
    if kind == "TruncateStmt":
        object_kind = "OBJECT_TABLE"
    explain_of = None
    copy_program = kind == "CopyStmt" and bool(body.get("is_program"))
    if "copy-program" in found.facts:
        copy_program = True
        found.facts.discard("copy-program")
    if kind in _WRAPPERS:
        query = body.get("query")
        if isinstance(query, dict) and query:
            explain_of = next(iter(query))
            inner = query[explain_of]
            if object_kind is None and isinstance(inner, dict):
                for field in _OBJECT_KIND_FIELDS:
                    value = inner.get(field)
                    if isinstance(value, str):
                        object_kind = value
                        break
    return Statement(
        kind=kind,
        text=text,
        relations=tuple(found.relations),
        functions=tuple(found.functions),
        object_kind=object_kind,
        has_where=(not found.missing_where) if found.where_kinds else None,
        explain_of=explain_of,
        copy_program=copy_program,
        nested=tuple(found.nested),
        copy=_copy_info(body) if kind == "CopyStmt" else None,
        flags=frozenset(found.flags),
        facts=frozenset(found.facts),
        sensitive=tuple(found.sensitive),
        constant_dependent=found.dependent or bool(found.sensitive),
    )


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


def _statements(sql: str, depth: int) -> tuple[Statement, ...]:
    tree = _load_tree(_pg.parse_sql_json(sql))
    raws = tree.get("stmts") or ()
    if not raws:
        return ()
    # libpg_query reports byte offsets into the UTF-8 text.
    source: str | bytes = sql if sql.isascii() else sql.encode("utf-8")
    out = []
    for raw in raws:
        stmt = raw.get("stmt")
        if not stmt:
            continue
        start = raw.get("stmt_location", 0)
        length = raw.get("stmt_len", 0)
        piece = source[start : start + length] if length else source[start:]
        if isinstance(piece, bytes):
            piece = piece.decode("utf-8", "replace")
        kind, body = next(iter(stmt.items()))
        if not isinstance(body, dict):
            body = {}
        out.append(_classify_one(kind, body, piece.strip(), depth))
    return tuple(out)


def _load_tree(text: str) -> dict:
    """
    libpg_query's JSON as Python values: the C scanner when the tree is
    shallow enough for it, else an iterative decoder (PostgreSQL accepts
    expressions thousands of levels deep).
    """
    try:
        return _load_json(text, 0)[0]
    except RecursionError:
        return _load_deep(text)


_TOKEN = re.compile(r'\s*(?:([{}\[\],:])|(")|(-?\d[\d.eE+-]*)|(true|false|null))')
_scan_string = json.decoder.scanstring  # type: ignore[attr-defined]


def _load_deep(text: str) -> dict:
    """Decode JSON without recursion (an explicit stack of containers)."""
    stack: list = []
    keys: list = []
    root: object = None
    pos = 0
    end = len(text)
    pending_key: object = None
    while pos < end:
        match = _TOKEN.match(text, pos)
        if match is None:
            if text[pos:].strip() == "":
                break
            raise ValueError(f"bad JSON at {pos}")
        pos = match.end()
        punct, quote, number, word = match.groups()
        if punct in ("{", "["):
            container: object = {} if punct == "{" else []
            _put(stack, keys, container)
            if not stack and root is None:
                root = container
            stack.append(container)
            keys.append(None)
            continue
        if punct in ("}", "]"):
            stack.pop()
            keys.pop()
            continue
        if punct == "," or punct == ":":
            continue
        if quote:
            value, pos = _scan_string(text, pos)
            top = stack[-1] if stack else None
            if isinstance(top, dict) and keys[-1] is None:
                keys[-1] = value
                continue
            _put(stack, keys, value)
            continue
        if number:
            value = float(number) if any(c in number for c in ".eE") else int(number)
            _put(stack, keys, value)
            continue
        _put(stack, keys, {"true": True, "false": False, "null": None}[word])
    del pending_key
    if not isinstance(root, dict):
        raise ValueError("JSON is not an object")
    return root


def _put(stack: list, keys: list, value: object) -> None:
    if not stack:
        return
    top = stack[-1]
    if isinstance(top, dict):
        top[keys[-1]] = value
        keys[-1] = None
    else:
        top.append(value)


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
