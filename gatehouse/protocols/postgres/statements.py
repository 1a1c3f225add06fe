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

import attrs
from pglast import parser as _pg

__all__ = [
    "UNPARSEABLE",
    "Statement",
    "classify",
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


def _copy_info(body: dict) -> CopyInfo:
    fmt = "text"
    delimiter = None
    header = False
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
        (including inside a CTE or an EXPLAIN/PREPARE); otherwise whether
        every DELETE and UPDATE in it has a WHERE clause.
    @ivar explain_of: for EXPLAIN (and PREPARE), the kind of the statement
        wrapped; its relations and flags are merged into this one.
    @ivar copy_program: COPY ... TO/FROM PROGRAM.
    @ivar error: why the parser refused the text, for C{Unparseable}.
    @ivar nested: kinds of the statements nested inside this one other
        than plain SELECTs (a C{DeleteStmt} in a CTE or under EXPLAIN or
        COPY), deduplicated, in order.
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

    @property
    def parseable(self) -> bool:
        """False for the C{Unparseable} stand-in."""
        return self.kind != UNPARSEABLE


def _unparseable(sql: str, error: str) -> tuple[Statement, ...]:
    return (Statement(kind=UNPARSEABLE, text=sql, error=error),)


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


class _Findings:
    """What a walk over one statement's tree collects."""

    __slots__ = ("functions", "missing_where", "nested", "relations", "where_kinds")

    def __init__(self) -> None:
        # dicts as ordered sets
        self.relations: dict[str, None] = {}
        self.functions: dict[str, None] = {}
        self.nested: dict[str, None] = {}
        self.where_kinds = 0
        self.missing_where = False

    def statement(self, kind: str, body: dict) -> None:
        if kind in _WHERE_KINDS:
            self.where_kinds += 1
            if "whereClause" not in body:
                self.missing_where = True

    def walk(self, node: dict, ctes: frozenset[str]) -> None:
        """
        Collect from the subtree of C{node}; C{ctes} are the CTE names in
        scope.  (Recursion depth is bounded by libpg_query's own stack
        limit, far below Python's.)
        """
        if "relname" in node:
            # A bare RangeVar: a statement's target, never a CTE reference.
            self.relations[_rangevar_name(node)] = None
            return
        with_clause = node.get("withClause")
        if type(with_clause) is dict:
            ctes = self._walk_ctes(with_clause, ctes)
        for key, value in node.items():
            kind = type(value)
            if kind is list:
                if key not in _LEAVES:
                    self.walk_list(value, ctes)
                continue
            if kind is not dict or key in _LEAVES or key == "withClause":
                continue
            if key == "RangeVar":
                if "schemaname" not in value and value.get("relname") in ctes:
                    continue
            elif key == "FuncCall" or key == "funccall":
                name = _dotted(value.get("funcname"))
                if name:
                    self.functions[name] = None
            elif key[0].isupper() and key.endswith("Stmt"):
                if key != "SelectStmt":
                    self.nested[key] = None
                self.statement(key, value)
            self.walk(value, ctes)

    def walk_list(self, items: list, ctes: frozenset[str]) -> None:
        """L{walk} each node of a list."""
        for item in items:
            kind = type(item)
            if kind is dict:
                self.walk(item, ctes)
            elif kind is list:
                self.walk_list(item, ctes)

    def _walk_ctes(self, with_clause: dict, outer: frozenset[str]) -> frozenset[str]:
        """
        Walk a WITH clause's queries; return the names in scope for the
        rest of the statement.  A non-recursive CTE sees only the CTEs
        before it, so C{WITH t AS (SELECT * FROM t)} still reports C{t}.
        """
        ctes = with_clause.get("ctes")
        if not isinstance(ctes, list):
            return outer
        recursive = bool(with_clause.get("recursive"))
        names = []
        for cte in ctes:
            body = cte.get("CommonTableExpr") if isinstance(cte, dict) else None
            if isinstance(body, dict) and isinstance(body.get("ctename"), str):
                names.append(body["ctename"])
        full = outer.union(names)
        for index, cte in enumerate(ctes):
            scope = full if recursive else outer.union(names[:index])
            if type(cte) is dict:
                self.walk(cte, scope)
        return full


def _classify_one(kind: str, body: dict, text: str) -> Statement:
    found = _Findings()
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
    )


def classify(sql: str) -> tuple[Statement, ...]:
    """
    Classify every statement of C{sql} (one or several, as in a simple
    Query).  Empty, blank or comment-only text gives C{()}; text the
    parser rejects gives one C{Unparseable} statement holding all of it.
    """
    if "\0" in sql:
        # libpg_query reads a C string: it would not see what follows.
        return _unparseable(sql, "NUL byte in statement text")
    try:
        return _classify(sql)
    except _pg.ParseError as e:
        message, location = (*e.args, None, None)[:2]
        where = f" (at offset {location})" if isinstance(location, int) else ""
        return _unparseable(sql, f"{message}{where}")
    except UnicodeEncodeError:
        # Lone surrogates: bytes that were not valid in the client encoding.
        return _unparseable(sql, "statement text is not valid in its encoding")
    except RecursionError:
        # Nesting deeper than Python's recursion limit (about 450 levels,
        # e.g. a sum of 1000 terms) that PostgreSQL itself would accept.
        return _unparseable(sql, "statement too deeply nested to classify")


def _classify(sql: str) -> tuple[Statement, ...]:
    tree = _load_json(_pg.parse_sql_json(sql), 0)[0]
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
        out.append(_classify_one(kind, body, piece.strip()))
    return tuple(out)


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
