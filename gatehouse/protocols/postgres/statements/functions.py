"""
What the classifier knows about PostgreSQL's built-in functions: those
that run SQL text, read a relation named by text, touch server files or
change data or the server, and where utility statements name functions.
"""

from __future__ import annotations


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
_DEFELEM_FIELDS: dict[str, tuple[str, ...]] = {
    "DefineStmt": ("definition",),
    "AlterTypeStmt": ("options",),
    "AlterOperatorStmt": ("options",),
    "CreateRangeStmt": ("params",),
    "CreateFdwStmt": ("func_options",),
    "AlterFdwStmt": ("func_options",),
    "AlterFunctionStmt": ("actions",),
}
# Statements naming a function in a list of Strings, and the fields.
_NAME_LIST_FIELDS: dict[str, tuple[str, ...]] = {
    "CreateFunctionStmt": ("funcname",),
    "CreateTrigStmt": ("funcname",),
    "CreateEventTrigStmt": ("funcname",),
    "CreateConversionStmt": ("func_name",),
    "CreatePLangStmt": ("plhandler", "plinline", "plvalidator"),
    "CreateAmStmt": ("handler_name",),
}
# Statements naming a function as an ObjectWithArgs, and the fields.
_OBJECT_WITH_ARGS_FIELDS: dict[str, tuple[str, ...]] = {
    "AlterFunctionStmt": ("func",),
    "CreateCastStmt": ("func",),
    "CreateTransformStmt": ("fromsql", "tosql"),
}
