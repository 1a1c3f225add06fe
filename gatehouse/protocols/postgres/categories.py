"""
Categories of PostgreSQL statements, for policy rules (C{category:}).

A category is a documented list of statement kinds (libpg_query node
names) and of statement facts that also put a statement in it.  A
statement belongs to every category of every kind it amounts to: its own
kind, the kinds it nests (a C{DELETE} in a CTE, under C{EXPLAIN ANALYZE},
in a C{PREPARE}, in a literal C{query_to_xml('...')}), and the kinds its
parts stand for (C{MERGE ... WHEN MATCHED THEN DELETE} is also a
C{DeleteStmt}, C{INSERT ... ON CONFLICT DO UPDATE} also an C{UpdateStmt},
C{SELECT ... INTO} also a C{CreateTableAsStmt}).

Every statement kind PostgreSQL's grammar produces is in at least one
category (a unit test holds this), so a rule on categories never misses a
kind added here later without a decision.
"""

from __future__ import annotations

from collections.abc import Iterable

import attrs

__all__ = ["CATEGORIES", "Category", "categories_of"]

# Facts (see Statement.facts) that decide membership beyond the kind.
COPY_FROM = "copy-from"
COPY_TO = "copy-to"
DROP_COLUMN = "drop-column"
SET_ROLE = "set-role"
ROW_SECURITY = "row-security"
OWNER_CHANGE = "owner-change"
# built-ins called anywhere in a statement (statements.functions._FUNCTION_FACTS)
FUNCTION_DESTROYS = "function-destroys"
FUNCTION_WRITES = "function-writes"
FUNCTION_ADMIN = "function-admin"
ROLE_RENAME = "role-rename"
SERVER_RENAME = "server-rename"


@attrs.frozen
class Category:
    """
    One category: the kinds in it, the facts that also put a statement
    in it, and what it is for.
    """

    name: str
    doc: str
    kinds: frozenset[str]
    facts: frozenset[str] = frozenset()


def _kinds(text: str) -> frozenset[str]:
    return frozenset(text.split())


_CATEGORY_LIST = (
    Category(
        "read",
        "reads data: queries, cursors, COPY ... TO, EXPLAIN, SHOW",
        _kinds("SelectStmt DeclareCursorStmt FetchStmt ExplainStmt VariableShowStmt"),
        frozenset({COPY_TO}),
    ),
    Category(
        "write",
        "changes rows: INSERT, UPDATE, DELETE, MERGE, COPY ... FROM, TRUNCATE, "
        "CREATE TABLE AS / SELECT INTO, REFRESH MATERIALIZED VIEW; and calls "
        "of built-ins that write (large objects: lo_put, lowrite, lo_create, "
        "lo_from_bytea, lo_import, lo_unlink, lo_truncate; setval, nextval, "
        "pg_logical_emit_message)",
        _kinds(
            "InsertStmt UpdateStmt DeleteStmt MergeStmt TruncateStmt "
            "CreateTableAsStmt RefreshMatViewStmt"
        ),
        frozenset({COPY_FROM, FUNCTION_WRITES, FUNCTION_DESTROYS}),
    ),
    Category(
        "destructive",
        "removes data or objects: every DROP (tables, databases, roles, "
        "DROP OWNED), TRUNCATE, DELETE (also MERGE ... THEN DELETE), "
        "REASSIGN OWNED, ALTER TABLE ... DROP COLUMN/CONSTRAINT, and calls of "
        "lo_unlink, lo_truncate",
        _kinds(
            "DropStmt DropdbStmt DropOwnedStmt DropRoleStmt DropTableSpaceStmt "
            "DropSubscriptionStmt DropUserMappingStmt TruncateStmt DeleteStmt "
            "ReassignOwnedStmt"
        ),
        frozenset({DROP_COLUMN, FUNCTION_DESTROYS}),
    ),
    Category(
        "ddl",
        "changes the schema: every CREATE, ALTER, DROP, RENAME, COMMENT of "
        "tables, views, sequences, schemas, types, functions, operators, "
        "triggers, rules, indexes, extensions, ... and ALTER ... SET SCHEMA",
        _kinds(
            "AlterCollationStmt AlterDomainStmt AlterEnumStmt AlterEventTrigStmt "
            "AlterExtensionContentsStmt AlterExtensionStmt AlterFdwStmt "
            "AlterForeignServerStmt AlterFunctionStmt AlterObjectDependsStmt "
            "AlterObjectSchemaStmt AlterOpFamilyStmt AlterOperatorStmt "
            "AlterOwnerStmt AlterPolicyStmt AlterPublicationStmt AlterSeqStmt "
            "AlterStatsStmt AlterSubscriptionStmt AlterTSConfigurationStmt "
            "AlterTSDictionaryStmt AlterTableMoveAllStmt AlterTableStmt "
            "AlterTypeStmt CommentStmt CompositeTypeStmt CreateAmStmt "
            "CreateCastStmt CreateConversionStmt CreateDomainStmt CreateEnumStmt "
            "CreateEventTrigStmt CreateExtensionStmt CreateFdwStmt "
            "CreateForeignServerStmt CreateForeignTableStmt CreateFunctionStmt "
            "CreateOpClassStmt CreateOpFamilyStmt CreatePLangStmt "
            "CreatePolicyStmt CreatePublicationStmt CreateRangeStmt "
            "CreateSchemaStmt CreateSeqStmt CreateStatsStmt CreateStmt "
            "CreateSubscriptionStmt CreateTableAsStmt CreateTransformStmt "
            "CreateTrigStmt DefineStmt DropStmt DropSubscriptionStmt "
            "ImportForeignSchemaStmt IndexStmt RenameStmt ReplicaIdentityStmt "
            "RuleStmt SecLabelStmt ViewStmt RefreshMatViewStmt"
        ),
    ),
    Category(
        "privilege",
        "changes who may do what: GRANT/REVOKE, roles, default privileges, "
        "ownership (ALTER ... OWNER, REASSIGN OWNED), row security policies, "
        "user mappings, security labels, SET ROLE / SET SESSION AUTHORIZATION, "
        "ALTER ROLE ... RENAME",
        _kinds(
            "GrantStmt GrantRoleStmt CreateRoleStmt AlterRoleStmt AlterRoleSetStmt "
            "DropRoleStmt AlterDefaultPrivilegesStmt AlterOwnerStmt "
            "ReassignOwnedStmt DropOwnedStmt CreatePolicyStmt AlterPolicyStmt "
            "CreateUserMappingStmt AlterUserMappingStmt DropUserMappingStmt "
            "SecLabelStmt"
        ),
        frozenset({SET_ROLE, ROW_SECURITY, OWNER_CHANGE, ROLE_RENAME}),
    ),
    Category(
        "session",
        "changes the session only: SET, RESET, DISCARD, PREPARE (also the "
        "categories of what it prepares), EXECUTE (of a statement decided "
        "when prepared), DEALLOCATE, CLOSE, LISTEN, UNLISTEN, NOTIFY, LOCK, "
        "SET CONSTRAINTS, transactions",
        _kinds(
            "VariableSetStmt DiscardStmt PrepareStmt ExecuteStmt DeallocateStmt "
            "ClosePortalStmt ListenStmt UnlistenStmt NotifyStmt LockStmt "
            "ConstraintsSetStmt TransactionStmt"
        ),
    ),
    Category(
        "admin",
        "runs the server or a database: VACUUM, ANALYZE, CLUSTER, REINDEX, "
        "CHECKPOINT, ALTER SYSTEM, LOAD, CREATE/ALTER/DROP/RENAME DATABASE and "
        "TABLESPACE, ALTER ROLE/DATABASE ... SET; and calls of built-ins that "
        "act on the server: pg_terminate_backend, pg_cancel_backend, "
        "pg_reload_conf, pg_rotate_logfile, pg_switch_wal, pg_promote, "
        "pg_stat_reset*, replication slots and origins, backups, ...",
        _kinds(
            "VacuumStmt ClusterStmt ReindexStmt CheckPointStmt AlterSystemStmt "
            "LoadStmt CreatedbStmt AlterDatabaseStmt AlterDatabaseSetStmt "
            "AlterDatabaseRefreshCollStmt DropdbStmt CreateTableSpaceStmt "
            "AlterTableSpaceOptionsStmt DropTableSpaceStmt AlterRoleSetStmt"
        ),
        frozenset({FUNCTION_ADMIN, SERVER_RENAME}),
    ),
    Category(
        "code",
        "runs code the gateway cannot read: DO, CALL, CREATE FUNCTION, "
        "fast-path function calls (also flagged opaque where unreadable)",
        _kinds("DoStmt CallStmt CreateFunctionStmt FunctionCall"),
    ),
)

#: Categories by name.
CATEGORIES: dict[str, Category] = {c.name: c for c in _CATEGORY_LIST}

# Statement kinds the grammar produces only inside others (never alone).
INNER_ONLY = frozenset({"RawStmt", "SetOperationStmt", "PLAssignStmt", "ReturnStmt"})

_BY_KIND: dict[str, frozenset[str]] = {}
_BY_FACT: dict[str, frozenset[str]] = {}
for _category in _CATEGORY_LIST:
    for _kind in _category.kinds:
        _BY_KIND[_kind] = _BY_KIND.get(_kind, frozenset()) | {_category.name}
    for _fact in _category.facts:
        _BY_FACT[_fact] = _BY_FACT.get(_fact, frozenset()) | {_category.name}


def categories_of(kinds: Iterable[str], facts: Iterable[str] = ()) -> frozenset[str]:
    """The categories of a statement of these kinds with these facts."""
    out: set[str] = set()
    for kind in kinds:
        found = _BY_KIND.get(kind)
        if found:
            out |= found
    for fact in facts:
        found = _BY_FACT.get(fact)
        if found:
            out |= found
    return frozenset(out)
