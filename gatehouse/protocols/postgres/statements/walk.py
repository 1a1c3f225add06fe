"""
One parsed statement's facts: a walk over its tree collecting the
relations, functions, nested statements, flags and role or setting changes
that L{gatehouse.protocols.postgres.statements.classify} reports.
"""

from __future__ import annotations

import attrs
from pglast import parser as _pg

from gatehouse.protocols.postgres.statements.conditions import (
    _NULL,
    _as_bool,
    _column_fields,
    _reads_no_row,
    _reads_values,
    _target_names,
    _value,
    always_true,
)
from gatehouse.protocols.postgres.statements.functions import (
    _CRON,
    _DEFELEM_FIELDS,
    _FILE_FUNCTIONS,
    _FUNCTION_DEFNAMES,
    _FUNCTION_FACTS,
    _NAME_LIST_FIELDS,
    _NAME_READERS,
    _OBJECT_WITH_ARGS_FIELDS,
    _SQL_RUNNERS,
    _dblink,
)
from gatehouse.protocols.postgres.statements.nodes import (
    _dotted,
    _literal,
    _load_tree,
    _object_name,
    _rangevar_name,
    _role_name,
    qualified_name,
)
from gatehouse.protocols.postgres.statements.values import (
    COPY_FROM_FILE,
    COPY_TO_FILE,
    OPAQUE_FLAG,
    SERVER_FILE,
    CopyInfo,
    Sensitive,
    Statement,
)

# Fields that name the type of object a utility statement acts on.
_OBJECT_KIND_FIELDS = ("removeType", "objtype", "renameType", "objectType")
# Statements that wrap one other statement in their "query" field; the
# wrapped statement's findings are merged so the wrapper cannot hide it.
_WRAPPERS = frozenset({"ExplainStmt", "PrepareStmt"})
# Statements whose "objects" list names their targets, not as RangeVars.
_OBJECT_LISTS = frozenset({"DropStmt", "GrantStmt"})
_WHERE_KINDS = frozenset({"DeleteStmt", "UpdateStmt"})


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


#: How deep SQL in string literals is classified (SQL naming SQL naming ...).
MAX_INNER_DEPTH = 4


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
        for item in options if isinstance(options, list) else ():
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
        for item in options if isinstance(options, list) else ():
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
