"""
Red-team attacks on the hardened classifier, categories, built-in
protections and masking (issue 9): spellings and routes the builders'
modules did not try.

Each guard case is sent through the real daemon to PostgreSQL 15 under
L{GUARD_CATEGORY_POLICY} and judged on the server's state (every column
of every row, relations, role, settings, large objects, files), and on
the session's own state as the server reports it afterwards: its
C{current_user} and C{standard_conforming_strings} must be what they
were.  Masking cases are judged on the bytes the client received and the
recording.

Cases marked C{todo} are bypasses found and described, not fixed here
(see the module's notes beside each).
"""

from __future__ import annotations

import psycopg

from tests.protocols.postgres.attacks import guard
from tests.protocols.postgres.attacks import test_masking_channels as channels
from tests.protocols.postgres.attacks.corpus import Attack, add_cases
from tests.protocols.postgres.attacks.guard import FILE_PREFIX, GuardedTestCase
from tests.protocols.postgres.harness import Gateway
from tests.protocols.postgres.test_e2e import GatewayTestCase

F = FILE_PREFIX
REFUSED = "refused"
#: allowed, but it must leave the server and the session as they were
HARMLESS = "harmless"
BUILDERS = "builders"
DBA = "dba"


def refused(name: str, payload: object, note: str = "", who: str = "agents") -> Attack:
    """A case the gateway must refuse (42501), by identity C{who}."""
    return Attack(name, payload, note=note, expect=(REFUSED, who))


def harmless(name: str, payload: str, note: str = "", who: str = "agents") -> Attack:
    """A case the gateway may allow: state and session must stay as they were."""
    return Attack(name, payload, note=note, expect=(HARMLESS, who))


_UPD = "update guard_t set v = 'gone' where "

GUARD_CASES = [
    # -- constant-true WHERE spellings: no-unbounded-writes ------------------
    refused("where_in_self", _UPD + "id in (id)", "x IN (x) holds for every row"),
    refused("where_coalesce_true", _UPD + "coalesce(null, true)"),
    refused("where_between_constants", _UPD + "1 between 0 and 2"),
    refused("where_scalar_subquery_true", _UPD + "(select true)"),
    refused("where_case_true", _UPD + "case when true then true end"),
    refused("where_any_array_self", _UPD + "id = any(array[id])"),
    refused("where_exists_values", _UPD + "exists (values (1))"),
    refused("where_like_operator", _UPD + "v ~~ '%'", "LIKE spelled as its operator"),
    refused("where_int_cast_text", _UPD + "1::text = '1'"),
    refused("where_qualified_self", _UPD + "guard_t.id = id"),
    refused("where_collate_constants", _UPD + "'1' = '1' collate \"C\""),
    refused("where_division", _UPD + "10 / 2 = 5"),
    refused("where_and_subquery", _UPD + "true and (select true)"),
    refused(
        "where_no_column_param",
        (_UPD + "%s::bool", ("true",)),
        "a condition reading no column is the same for every row",
    ),
    refused("where_no_column_function", _UPD + "now() > '2000-01-01'"),
    refused("where_uncorrelated_exists", _UPD + "exists (select 1 from pg_class)"),
    refused(
        "merge_on_source_only",
        "merge into guard_t t using (select 1 as k) s on s.k = 1 "
        "when matched then update set v = 'gone'",
        "an ON that reads only the source matches every target row",
    ),
    refused(
        "update_from_where_source_only",
        _UPD.replace(" where ", " from (select 1 as k) s where ") + "s.k = 1",
    ),
    refused(
        "update_where_other_table_only",
        _UPD.replace(" where ", " from pg_namespace n where ") + "n.nspname = 'public'",
    ),
    # held: spellings the builders handle (regression)
    refused("where_not_false_compare", _UPD + "not (1 = 2)"),
    refused("where_bool_literal_cast", _UPD + "'t'::bool"),
    refused("where_exists_select_1", _UPD + "exists (select 1)"),
    refused("where_two_gt_one", _UPD + "2 > 1"),
    refused("where_row_self", _UPD + "(id, v) = (id, v)"),
    refused("where_cast_self", _UPD + "id::text = id::text"),
    refused("where_dollar_bool", _UPD + "$$yes$$::boolean"),
    refused(
        "merge_on_true",
        "merge into guard_t t using (select 1 k) s on 1 = 1 "
        "when matched then update set v = 'gone'",
    ),
    refused(
        "cte_update_in_true",
        "with u as (" + _UPD + "id in (id) returning 1) select count(*) from u",
    ),
    refused(
        "prepare_update_coalesce", "prepare guard_p as " + _UPD + "coalesce(null, true)"
    ),
    # -- settings through the pg_settings view's update rule ------------------
    refused(
        "pg_settings_role",
        "update pg_settings set setting = 'guard_admin' where name = 'role'",
        "pg_settings' rule calls set_config (PostgreSQL hides role there: "
        "the gateway must refuse it all the same)",
    ),
    refused(
        "pg_settings_scs_qualified_cte",
        "with s as (update pg_catalog.pg_settings set setting = 'off' "
        "where name = 'standard_conforming_strings') select 1",
    ),
    refused(
        "pg_settings_scs_dba",
        "update pg_settings set setting = 'off' "
        "where name = 'standard_conforming_strings'",
        "built-in protections hold for every group",
        who=DBA,
    ),
    refused(
        "pg_settings_scs_off",
        "update pg_settings set setting = 'off' "
        "where name = 'standard_conforming_strings'",
        "no SET, no function call: the value changes the reading",
    ),
    refused(
        "pg_settings_scs_in_query_to_xml",
        "select query_to_xml('update pg_settings set setting = ''off'' "
        "where name = ''standard_conforming_strings''', true, true, '')",
    ),
    refused(
        "pg_settings_role_param",
        ("update pg_settings set setting = %s where name = 'role'", ("guard_admin",)),
        "a setting's value as a parameter, like set_config('role', $1)",
        who=DBA,
    ),
    # -- built-in functions that write or destroy: categories ---------------
    refused("lo_unlink", "select lo_unlink(424242)", "removes a large object"),
    refused(
        "lo_unlink_qualified",
        "select pg_catalog.lo_unlink(oid) from pg_largeobject_metadata",
    ),
    # -- role protections: spellings (held) ---------------------------------
    refused(
        "set_config_role_cast", "select set_config('role'::text, 'guard_admin', false)"
    ),
    refused(
        "set_config_role_from_values",
        "select set_config(n, 'guard_admin', false) from (values ('role')) v(n)",
    ),
    refused(
        "set_config_role_named_args",
        "select set_config(setting_name => 'role', new_value => 'guard_admin', "
        "is_local => false)",
    ),
    refused("set_role_quoted", 'set role "guard_admin"'),
    refused("set_local_role_in_tx", "begin; set local role guard_admin; commit"),
    refused(
        "set_reader_then_admin",
        "set role guard_reader; set role guard_admin",
    ),
    refused(
        "alter_role_in_database_set_role",
        "alter role gw_scram in database app set role = 'guard_admin'",
        who=DBA,
    ),
    refused(
        "alter_user_current_password", "alter user current_user password 'x'", who=DBA
    ),
    refused(
        "alter_function_set_role",
        "alter function evil_fn(int, int) set role = 'guard_admin'",
        who=DBA,
    ),
    refused(
        "create_procedure_set_role",
        "create procedure public.guard_proc() language sql "
        "set role = guard_admin as 'select 1'",
        who=DBA,
    ),
    refused(
        "alter_role_quoted_self", 'alter role "gw_scram" connection limit 1', who=DBA
    ),
    # memberships of the gateway's own role: inherited privileges of
    # another role, without SET ROLE
    refused(
        "grant_role_to_self",
        "grant pg_read_all_data to current_user",
        "the gateway's role inherits what another role may do",
        who=DBA,
    ),
    refused(
        "grant_role_to_self_by_name",
        'grant pg_read_all_data to "gw_scram"',
        who=DBA,
    ),
    refused(
        "alter_group_add_self",
        "create role guard_grp; alter group guard_grp add user session_user",
        who=DBA,
    ),
    refused(
        "create_role_with_self_member",
        "create role guard_new_role role current_user",
        "the new role's members include the gateway's role",
        who=DBA,
    ),
    refused(
        "revoke_role_from_self",
        "revoke guard_reader from current_user",
        "its settable role taken away",
        who=DBA,
    ),
    harmless("reset_all_after_reader", "set role guard_reader; reset all"),
    harmless("discard_all_after_reader", "set role guard_reader; discard all"),
    harmless("set_role_default", "set role guard_reader; set role to default"),
    # -- SQL-running built-ins: spellings (held) -----------------------------
    refused(
        "query_to_xml_quoted_qualified",
        "select pg_catalog.\"query_to_xml\"('select * from guard_secret', true, "
        "true, '')",
    ),
    refused(
        "query_to_xml_upper",
        "select PG_CATALOG.QUERY_TO_XML('select * from guard_secret', true, true, '')",
    ),
    refused(
        "query_to_xml_variadic",
        "select query_to_xml(variadic array['table guard_secret'])",
    ),
    refused(
        "query_to_xml_in_xmltable",
        "select * from xmltable('//id' passing query_to_xml('delete from guard_t "
        "returning id', true, true, '') columns id int)",
    ),
    refused(
        "query_to_xml_rows_from",
        "select * from rows from (query_to_xml('table guard_secret', true, true, ''))",
    ),
    refused(
        "query_to_xml_string_continuation",
        "select query_to_xml('select * from '\n'guard_secret', true, true, '')",
        "adjacent literals separated by a newline are one string",
    ),
    refused(
        "query_to_xml_escape_underscore",
        "select query_to_xml(E'select * from guard\\x5fsecret', true, true, '')",
    ),
    refused(
        "query_to_xml_name_cast",
        "select query_to_xml('table guard_secret'::name, true, true, '')",
    ),
    refused(
        "table_to_xml_catalog_qualified",
        "select table_to_xml('app.public.guard_secret', true, true, '')",
    ),
    refused("copy_old_syntax_csv", f"copy guard_t to '{F}old' csv header"),
    refused(
        "copy_binary_to_file",
        f"copy guard_t to '{F}bin' with (format binary)",
    ),
    # -- file_fdw: a foreign table over a server file or program -----------
    refused(
        "file_fdw_filename",
        "create foreign table guard_ft (line text) server guard_files "
        "options (filename '/etc/passwd'); select * from guard_ft",
        "COPY FROM a file by another name",
        who=BUILDERS,
    ),
    refused(
        "file_fdw_program",
        "create foreign table guard_ft (line text) server guard_files "
        f"options (program 'touch {F}fdw'); select * from guard_ft",
        "COPY FROM PROGRAM by another name",
        who=BUILDERS,
    ),
    refused(
        "file_fdw_alter_options",
        "create foreign table guard_ft (line text) server guard_files "
        "options (filename '/dev/null'); "
        "alter foreign table guard_ft options (set filename '/etc/passwd'); "
        "select * from guard_ft",
        who=BUILDERS,
    ),
    # -- the secret relation by other spellings (held) -----------------------
    refused("secret_catalog_qualified", "select * from app.public.guard_secret"),
    refused("secret_spaced_quoted", 'select * from "public" . "guard_secret"'),
    refused("secret_table_command", "table guard_secret"),
    refused("secret_only", "select * from only guard_secret"),
    refused("secret_nested_table", "select * from (table guard_secret) s"),
    refused(
        "secret_cte_shadowed_qualified",
        "with guard_secret as (select 1) select * from public.guard_secret",
    ),
    refused(
        "secret_cte_reads_itself",
        "with guard_secret as (select * from guard_secret) select * from guard_secret",
    ),
    refused(
        "secret_sibling_cte_scope",
        "select * from (with guard_secret as (select 1) select 1) a, guard_secret",
    ),
    refused("secret_unicode_ident", 'select * from U&"guard\\005fsecret"'),
    refused(
        "secret_search_path",
        "set search_path = guard_s, public; select * from guard_secret",
    ),
    refused("secret_copy_stdout", "copy guard_secret to stdout"),
    refused(
        "secret_cursor",
        "begin; declare c cursor for select * from guard_secret; fetch all c; commit",
    ),
    # -- functions in DDL expressions (builders may run DDL) ----------------
    refused(
        "default_calls_evil",
        "create table guard_new (a bool default evil_fn(1, 1))",
        who=BUILDERS,
    ),
    refused(
        "check_calls_evil",
        "create table guard_new (a int check (evil_fn(a, a)))",
        who=BUILDERS,
    ),
    refused(
        "generated_calls_evil",
        "create table guard_new (a int, b bool generated always as "
        "(evil_fn(a, a)) stored)",
        who=BUILDERS,
    ),
    refused(
        "view_calls_evil",
        "create view guard_v as select evil_fn(1, 1)",
        who=BUILDERS,
    ),
    refused(
        "policy_calls_evil",
        "create policy guard_pol on guard_t using (evil_fn(id, id))",
        who=BUILDERS,
    ),
    refused(
        "rule_calls_evil",
        "create rule guard_rule as on insert to guard_t do also select evil_fn(1, 1)",
        who=BUILDERS,
    ),
    # -- DDL that names an existing function (a function rule must see it) --
    refused(
        "rename_evil_function",
        "alter function evil_fn(int, int) rename to guard_nice",
        "renamed, the evil function is callable under a harmless name",
        who=BUILDERS,
    ),
    refused(
        "replace_evil_function",
        "create or replace function public.evil_fn(int, int) returns bool "
        "language sql immutable as 'select false'",
        who=BUILDERS,
    ),
    refused("drop_evil_function", "drop function evil_fn(int, int)", who=BUILDERS),
    refused(
        "move_evil_function",
        "alter routine evil_fn(int, int) set schema guard_s",
        who=BUILDERS,
    ),
    refused(
        "evil_function_owner",
        "alter function public.evil_fn(int, int) owner to guard_reader",
        who=BUILDERS,
    ),
    refused(
        "grant_evil_function",
        "grant execute on function evil_fn(int, int) to guard_reader",
        who=BUILDERS,
    ),
    refused(
        "alter_column_default_evil",
        "alter table guard_t alter column v set default evil_fn(1, 1)::text",
        who=BUILDERS,
    ),
]


class _RedTeamRunner(GuardedTestCase):
    """Runs a guard case and judges it on the server and the session."""

    def setUp(self) -> None:
        super().setUp()
        self.addCleanup(self._unrename)
        # a file_fdw server, as a DBA would have made it (the attacks
        # create foreign tables on it)
        self.cluster.psql(
            "create extension if not exists file_fdw;"
            " drop server if exists guard_files cascade;"
            " create server guard_files foreign data wrapper file_fdw;"
            " grant usage on foreign server guard_files to gw_scram;",
            dbname="app",
        )

    def state(self) -> dict[str, str]:
        """The guard's state, and the functions the policy names."""
        state = super().state()
        state["functions"] = self.cluster.psql(
            "select string_agg(format('%s.%s:%s:%s', pronamespace::regnamespace,"
            " proname, proowner::regrole, md5(prosrc)), ',' order by proname)"
            " from pg_proc where proname like 'evil%' or proname like 'guard%'",
            dbname="app",
        )
        return state

    def _unrename(self) -> None:
        # a rename that got through must not break the guard's teardown
        self.cluster.psql(
            "do $$ begin"
            " if exists (select from pg_roles where rolname = 'guard_renamed') then"
            "  alter role guard_renamed rename to guard_reader; end if;"
            " if exists (select from pg_roles where rolname = 'guard_admin2') then"
            "  alter role guard_admin2 rename to guard_admin; end if;"
            " end $$; drop function if exists guard_nice(int, int);"
            " revoke pg_read_all_data from gw_scram;"
            " drop role if exists guard_new_role; drop role if exists guard_grp;"
            " drop function if exists guard_s.evil_fn(int, int);",
            dbname="app",
        )

    def run_attack(self, attack: Attack) -> None:
        expect, who = attack.expect
        groups = {
            "agents": ("agents",),
            BUILDERS: ("agents", "builders"),
            DBA: ("dba",),
        }[who]
        conn = self.connect(groups)
        outcome = self.run_sql(conn, *self.fill(attack.payload))
        # the server first: what a bypass did, then whether it was refused
        self.assert_unchanged(attack, outcome)
        # the session is who it was, reading SQL as it did
        self.assertEqual(
            self.run_sql(conn, "select current_user::text").rows,
            [("gw_scram",)],
            f"the session changed role after {attack!r}: {outcome.text}",
        )
        self.assertEqual(
            self.run_sql(conn, "show standard_conforming_strings").rows,
            [("on",)],
            f"standard_conforming_strings changed after {attack!r}",
        )
        if expect == REFUSED:
            self.assert_refused(attack, outcome)


class RedTeamGuardTests(_RedTeamRunner):
    """The guard policy against new spellings, judged on the server."""


add_cases(RedTeamGuardTests, GUARD_CASES)


class RedTeamVictimTests(GuardedTestCase):
    """Another session of the same role must survive an agent."""

    def _victim(self) -> psycopg.Connection:
        conn = psycopg.connect(
            self.cluster.socket_dsn("gw_scram", "app"), autocommit=True
        )
        self.addCleanup(conn.close)
        return conn

    def _attack(self, sql: str) -> None:
        victim = self._victim()
        pid = victim.execute("select pg_backend_pid()").fetchone()[0]
        conn = self.connect(("agents",))
        outcome = self.run_sql(conn, sql.format(pid=pid))
        try:
            alive = victim.execute("select 1").fetchone() == (1,)
        except psycopg.OperationalError:
            alive = False
        self.assertTrue(
            alive, f"the victim backend is gone; the client saw: {outcome.text}"
        )
        self.assertEqual(outcome.sqlstate, "42501", outcome.text)

    def test_terminate_backend(self) -> None:
        """An admin function: the no-admin rule must see it."""
        self._attack("select pg_terminate_backend({pid})")

    def test_terminate_backend_qualified(self) -> None:
        self._attack(
            "select pg_catalog.pg_terminate_backend(pid) from pg_stat_activity "
            "where pid = {pid}"
        )


_UNION = (
    "SELECT name FROM m_customers WHERE false UNION ALL SELECT ssn FROM m_customers"
)
case = channels.case
MASKING_CASES = [
    case(
        "union_renames_column",
        "cols",
        _UNION,
        "ssn",
        "the UNION's column is named by its first branch and has no source",
    ),
    case(
        "scalar_subquery_alias",
        "cols",
        "SELECT (SELECT ssn FROM m_customers WHERE id = 1) AS name",
        "ssn",
        "a scalar subquery has no source column",
    ),
    case(
        "from_alias_list",
        "cols",
        "SELECT e FROM m_customers AS t(i, n, c, m, e)",
        "ssn",
        "columns renamed in FROM keep their source",
    ),
    case(
        "returning_alias",
        "cols",
        "UPDATE m_customers SET name = name WHERE id = 1 RETURNING ssn AS x",
        "ssn",
    ),
    case(
        "returning_card_detect",
        "detect",
        "UPDATE m_customers SET name = name WHERE id = 1 RETURNING card",
        "card",
    ),
    case(
        "cursor_fetch_alias",
        "cols",
        "BEGIN; DECLARE c CURSOR FOR SELECT ssn AS q FROM m_customers;"
        " FETCH ALL FROM c; COMMIT",
        "ssn",
    ),
    case(
        "custom_setting_card",
        "detect",
        "SELECT set_config('x.y', card, false) FROM m_customers WHERE id = 1;"
        " SELECT current_setting('x.y')",
        "card",
    ),
    case(
        "notify_channel_name",
        "detect",
        "DO $$ BEGIN EXECUTE format('LISTEN %I', (SELECT email FROM m_customers"
        " WHERE id = 1)); EXECUTE format('NOTIFY %I', (SELECT email FROM"
        " m_customers WHERE id = 1)); END $$",
        "email",
        "the channel name, not the payload, carries the value",
    ),
    case(
        "copy_csv_forced_quotes",
        "detect",
        "COPY (SELECT card, email FROM m_customers) TO STDOUT"
        " (FORMAT csv, FORCE_QUOTE *)",
        "card",
    ),
    case(
        "copy_csv_quote_digit",
        "detect",
        "COPY (SELECT card FROM m_customers) TO STDOUT (FORMAT csv, QUOTE '1')",
        "card",
        "every 1 of the card doubled and the field quoted by 1s",
    ),
    case(
        "copy_csv_escape_digit",
        "detect",
        "COPY (SELECT card FROM m_customers) TO STDOUT"
        " (FORMAT csv, FORCE_QUOTE *, ESCAPE '1')",
        "card",
    ),
    case(
        "copy_text_delimiter_at",
        "detect",
        "COPY (SELECT email FROM m_customers) TO STDOUT (DELIMITER '@')",
        "email-local",
        "PostgreSQL writes the @ of an address as \\@: no address to detect",
    ),
    case(
        "copy_header_from_data",
        "detect",
        "DO $$ BEGIN EXECUTE format('CREATE TEMP TABLE m_hdr AS SELECT 1 AS %I',"
        " (SELECT card FROM m_customers WHERE id = 1)); END $$;"
        " COPY m_hdr TO STDOUT (FORMAT csv, HEADER)",
        "card",
        "the header row names the columns: a name made from a value",
    ),
    case(
        "copy_header_from_data_text",
        "detect",
        "DO $$ BEGIN EXECUTE format('CREATE TEMP TABLE m_hdr AS SELECT 1 AS %I',"
        " (SELECT email FROM m_customers WHERE id = 1)); END $$;"
        " COPY m_hdr TO STDOUT (HEADER)",
        "email",
    ),
    case(
        "constraint_name_from_data",
        "detect",
        "DO $$ BEGIN EXECUTE format('CREATE TEMP TABLE m_c (a int CONSTRAINT %I"
        " CHECK (a > 0))', (SELECT card FROM m_customers WHERE id = 1)); END $$;"
        " INSERT INTO m_c VALUES (0)",
        "card",
        "the error's constraint field (n) and message name the constraint",
    ),
    case(
        "relation_name_from_data",
        "detect",
        "DO $$ BEGIN EXECUTE format('CREATE TEMP TABLE %I (a int NOT NULL)',"
        " (SELECT email FROM m_customers WHERE id = 1)); END $$;"
        " DO $$ BEGIN EXECUTE format('INSERT INTO %I VALUES (NULL)',"
        " (SELECT email FROM m_customers WHERE id = 1)); END $$",
        "email",
        "the error's table field (t) and message name the relation",
    ),
    case(
        "copy_csv_delimiter_digit",
        "detect",
        "COPY (SELECT card, email FROM m_customers) TO STDOUT"
        " (FORMAT csv, DELIMITER '1')",
        "card",
    ),
    case(
        "binary_cursor_int8",
        "detect",
        "BEGIN; DECLARE c BINARY CURSOR FOR SELECT card_int8 FROM m_customers;"
        " FETCH ALL c; COMMIT",
        "card-int8",
    ),
    case(
        "binary_cursor_cols",
        "cols",
        "BEGIN; DECLARE c BINARY CURSOR FOR SELECT ssn AS q FROM m_customers;"
        " FETCH ALL c; COMMIT",
        "ssn",
    ),
    case(
        "error_detail_in_function",
        "detect",
        "DO $$ BEGIN RAISE EXCEPTION 'x' USING DETAIL = (SELECT card FROM"
        " m_customers WHERE id = 1), HINT = (SELECT email FROM m_customers"
        " WHERE id = 1); END $$",
        "card",
    ),
]


class RedTeamMaskingTests(GatewayTestCase):
    """New masking routes, judged on the client's bytes and the recording."""

    make_gateway = channels.MaskingChannelTests.make_gateway
    exchange = channels.MaskingChannelTests.exchange
    assert_absent = channels.MaskingChannelTests.assert_absent
    recorded = channels.MaskingChannelTests.recorded
    run_attack = channels.MaskingChannelTests.run_attack

    def setUp(self) -> None:
        super().setUp()
        self.direct(channels.SETUP)


add_cases(RedTeamMaskingTests, MASKING_CASES)

_UNSOURCED = (
    "bypass, not fixed: a result column without a source column (UNION, a "
    "scalar subquery) escapes columns: rules; see the red-team notes"
)
RedTeamMaskingTests.test_union_renames_column.todo = _UNSOURCED  # type: ignore[attr-defined]
RedTeamMaskingTests.test_scalar_subquery_alias.todo = _UNSOURCED  # type: ignore[attr-defined]


#: a policy that puts the privilege, destructive and unbounded-write rules
#: before the builders' DDL: a statement's categories must say all it does
STRICT_ORDER_POLICY = {
    "policy": {
        "review": {"approvers": ["approvers"], "timeout": "60s"},
        "rules": [
            {"name": "no-privilege", "category": ["privilege"], "action": "deny"},
            {"name": "no-admin", "category": ["admin"], "action": "deny"},
            {"name": "no-destructive", "category": ["destructive"], "action": "deny"},
            {
                "name": "no-unbounded-writes",
                "category": ["write"],
                "flag": ["no-where"],
                "action": "deny",
            },
            {
                "name": "builders-ddl",
                "groups": ["builders"],
                "category": ["ddl"],
                "action": "allow",
            },
            {"name": "no-ddl", "category": ["ddl"], "action": "deny"},
        ],
        "opaque": "deny",
    }
}

STRICT_CASES = [
    refused(
        "rename_other_role",
        "alter role guard_reader rename to guard_renamed",
        "a role's rename is a privilege change, not only DDL",
        who=BUILDERS,
    ),
    refused(
        "rename_other_user",
        "alter user guard_admin rename to guard_admin2",
        who=BUILDERS,
    ),
    refused(
        "alter_column_type_using_constant",
        "alter table guard_t alter column v type text using 'gone'",
        "a USING expression rewrites every row: an unbounded write",
        who=BUILDERS,
    ),
    refused(
        "alter_column_type_using_zero",
        "alter table guard_t alter column n type numeric using 0",
        who=BUILDERS,
    ),
    # held
    refused(
        "owner_to_other_role",
        "alter table guard_t owner to guard_reader",
        who=BUILDERS,
    ),
    refused("grant_to_reader", "grant select on guard_t to guard_reader", who=BUILDERS),
    refused("drop_column", "alter table guard_t drop column n", who=BUILDERS),
    refused(
        "large_object_owner",
        "alter large object 424242 owner to guard_reader",
        who=BUILDERS,
    ),
    refused(
        "reassign_owned",
        "reassign owned by guard_reader to gw_scram",
        who=BUILDERS,
    ),
    refused(
        "policy_to_reader",
        "create policy guard_pol on guard_t to guard_reader using (true)",
        who=BUILDERS,
    ),
]


class RedTeamStrictOrderTests(_RedTeamRunner):
    """Builders may run DDL, but not what DDL also does to roles or rows."""

    def make_gateway(self, base: str) -> Gateway:
        # the guard's gateway (targets, settable roles), with this policy
        saved = guard.GUARD_CATEGORY_POLICY
        guard.GUARD_CATEGORY_POLICY = STRICT_ORDER_POLICY
        try:
            return super().make_gateway(base)
        finally:
            guard.GUARD_CATEGORY_POLICY = saved


add_cases(RedTeamStrictOrderTests, STRICT_CASES)
