"""
Attacks: SQL inside strings, relations named by text, server files, and
functions named by DDL (issue 9, class 2).

Each case is sent by an agent (or a builder, who may run DDL) through
the daemon to PostgreSQL 15, and judged on the server's state: every
column of every row of the victim table, the relations, the role, the
files under /tmp, and the secret absent from what the client received.
The target's role has the rights that would make each attack work.
"""

from __future__ import annotations

from tests.protocols.postgres.attacks.corpus import Attack, add_cases
from tests.protocols.postgres.attacks.guard import FILE_PREFIX, GuardedTestCase

F = FILE_PREFIX

CASES = [
    # -- dblink: SQL text run on a connection back to the same database ----
    Attack(
        "dblink_exec_drop",
        "select dblink_exec('{conn}', 'drop table guard_t')",
        "a DROP in a literal run by dblink_exec",
    ),
    Attack(
        "dblink_exec_drop_dollar",
        "select dblink_exec('{conn}', $q$drop table guard_t$q$)",
        "dollar-quoted SQL text",
    ),
    Attack(
        "dblink_exec_escape_string",
        "select dblink_exec('{conn}', E'drop\\x20table\\tguard_t')",
        "escapes in an E'' string spell the DROP",
    ),
    Attack(
        "dblink_exec_unicode_string",
        "select dblink_exec('{conn}', U&'drop table guard\\005ft')",
        "a Unicode-escaped identifier",
    ),
    Attack(
        "dblink_exec_truncate_in_from",
        "select * from dblink_exec('{conn}', 'truncate guard_t')",
        "dblink_exec in FROM",
    ),
    Attack(
        "dblink_delete_returning",
        "select * from dblink('{conn}', 'delete from guard_t returning id') "
        "as t(id int)",
        "a DELETE ... RETURNING read back through dblink",
    ),
    Attack(
        "dblink_update_no_where",
        "select dblink_exec('{conn}', 'update guard_t set v = ''gone''')",
        "an unbounded UPDATE inside the string",
    ),
    Attack(
        "dblink_concatenated",
        "select dblink_exec('{conn}', 'drop ' || 'table guard_t')",
        "SQL built by concatenation: opaque",
    ),
    Attack(
        "dblink_format",
        "select dblink_exec('{conn}', format('drop table %I', 'guard_t'))",
        "SQL built by format(): opaque",
    ),
    Attack(
        "dblink_subquery",
        "select dblink_exec('{conn}', (select 'drop table guard_t'))",
        "SQL from a subquery: opaque",
    ),
    Attack(
        "dblink_from_column",
        "select dblink_exec('{conn}', q) from (values ('drop table guard_t')) v(q)",
        "SQL from a column: opaque",
    ),
    Attack(
        "dblink_nested_query_to_xml",
        "select dblink_exec('{conn}', "
        "'select query_to_xml(''select dblink_exec(''''{conn}'''', "
        "''''drop table guard_t'''')'', true, true, '''')')",
        "SQL inside SQL inside SQL",
    ),
    Attack(
        "dblink_parameter",
        ("select dblink_exec(%s, %s)", ("{conn}", "drop table guard_t")),
        "the SQL as a bound parameter: opaque",
    ),
    Attack(
        "dblink_connect_send_query",
        "select dblink_connect('h1', '{conn}'); "
        "select dblink_send_query('h1', 'delete from guard_t')",
        "an asynchronous query",
    ),
    # -- reading a relation by a name in a string --------------------------
    Attack(
        "query_to_xml_secret",
        "select query_to_xml('select * from guard_secret', true, false, '')",
    ),
    Attack(
        "query_to_xml_named_notation",
        "select query_to_xml(query => 'select * from guard_secret', nulls => true, "
        "tableforest => false, targetns => '')",
        "named arguments: opaque",
    ),
    Attack(
        "query_to_xmlschema_and_data",
        "select query_to_xml_and_xmlschema('select secret from guard_secret', "
        "true, false, '')",
    ),
    Attack(
        "table_to_xml_secret",
        "select table_to_xml('guard_secret', true, false, '')",
    ),
    Attack(
        "table_to_xml_quoted_qualified",
        "select table_to_xml('public.\"guard_secret\"', true, false, '')",
    ),
    Attack(
        "table_to_xml_upper_case",
        "select table_to_xml('GUARD_SECRET'::regclass, true, false, '')",
        "regclass text folds case as identifiers do",
    ),
    Attack(
        "table_to_xml_by_oid",
        "select table_to_xml(oid::regclass, true, false, '') from pg_class "
        "where relname = 'guard_secret'",
        "a relation chosen at run time: opaque",
    ),
    Attack(
        "schema_to_xml_public",
        "select schema_to_xml('public', true, false, '')",
        "every table of a schema: opaque",
    ),
    Attack(
        "database_to_xml",
        "select database_to_xml(true, false, '')",
        "every table: opaque",
    ),
    Attack(
        "cursor_to_xml",
        "begin; declare c cursor for select * from guard_secret; "
        "select cursor_to_xml('c', 10, false, false, ''); commit",
    ),
    Attack(
        "ts_stat_secret",
        "select * from ts_stat('select to_tsvector(secret) from guard_secret')",
    ),
    # -- server files --------------------------------------------------------
    Attack("pg_read_file", "select pg_read_file('/etc/passwd')", "expect root:x"),
    Attack("pg_ls_dir", "select pg_ls_dir('/etc')"),
    Attack("lo_import", "select lo_import('/etc/passwd')"),
    Attack(
        "lo_export",
        f"select lo_export(424242, '{F}lo')",
    ),
    Attack("copy_to_file", f"copy guard_t to '{F}copy'"),
    Attack(
        "copy_query_to_file",
        f"copy (select * from guard_t) to '{F}copy_q' with (format csv)",
    ),
    Attack("copy_from_file", "copy guard_t from '{planted}'"),
    Attack("copy_to_program", f"copy guard_t to program 'cat > {F}program'"),
    Attack(
        "file_in_dblink_string",
        "select dblink_exec('{conn}', 'copy guard_t to ''" + F + "dbl''')",
        "a COPY TO file inside a dblink string",
    ),
    # -- functions named by DDL (builders may run DDL) ----------------------
    Attack(
        "create_operator_function",
        "create operator === (leftarg = int, rightarg = int, function = evil_fn)",
        expect="builders",
    ),
    Attack(
        "create_operator_procedure",
        "create operator === (leftarg = int, rightarg = int, procedure = evil_fn)",
        expect="builders",
    ),
    Attack(
        "create_aggregate_sfunc",
        "create aggregate guard_agg(int) (sfunc = evil_sfunc, stype = int)",
        expect="builders",
    ),
    Attack(
        "create_trigger",
        "create trigger guard_trg before insert on guard_t for each row "
        "execute function public.evil_trig()",
        expect="builders",
    ),
    Attack(
        "create_schema_with_trigger",
        "create schema guard_s2 create table guard_x (a int) "
        "create trigger guard_trg2 before insert on guard_x for each row "
        "execute procedure evil_trig()",
        expect="builders",
    ),
]


class SQLInStringsTests(GuardedTestCase):
    """SQL in strings and functions named by DDL, against the server."""

    def run_attack(self, attack: Attack) -> None:
        groups = ("agents", "builders") if attack.expect == "builders" else ("agents",)
        conn = self.connect(groups)
        outcome = self.run_sql(conn, *self.fill(attack.payload))
        self.assert_refused(attack, outcome)
        # the session goes on
        self.assertEqual(self.run_sql(conn, "select 1").rows, [(1,)])


class SQLInStringsControls(GuardedTestCase):
    """Each attack, sent straight to PostgreSQL, does its harm."""


add_cases(SQLInStringsTests, CASES)
add_cases(SQLInStringsControls, CASES, runner="run_control")
