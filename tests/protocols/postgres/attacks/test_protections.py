"""
Attacks on the gateway's own role and the session's identity and reading
(issue 9, class 4): built-in protections no policy can turn off.

The policy here would allow all of these (the dba group allows anything;
the attacker is a dba): only the built-in protections stand in the way.
Judged on the server's state (the role's password, validity, settings,
the database's settings, through a direct connection) and on the
session's own identity and settings afterwards (current_user,
client_encoding, standard_conforming_strings).  Controls prove each
attack works when sent straight to PostgreSQL as the target's role,
except where PostgreSQL itself refuses (marked).
"""

from __future__ import annotations

import psycopg

from tests.protocols.postgres.attacks.corpus import Attack, add_cases
from tests.protocols.postgres.attacks.guard import GuardedTestCase

#: what the session must still be after a refused attack
_SESSION = (
    "select current_user, current_setting('client_encoding'), "
    "current_setting('standard_conforming_strings')"
)
_INTACT = [("gw_scram", "UTF8", "on")]

_SCRAM = (
    "SCRAM-SHA-256$4096:c2FsdHNhbHRzYWx0$"
    "dGVzdHRlc3R0ZXN0dGVzdHRlc3R0ZXN0dGVzdHRlc3Q=:"
    "dGVzdHRlc3R0ZXN0dGVzdHRlc3R0ZXN0dGVzdHRlc3Q="
)


def _case(name: str, sql: object, note: str = "", **expect: object) -> Attack:
    return Attack(name, sql, note, expect=expect)


CASES = [
    # -- the gateway's own role ------------------------------------------------
    _case("alter_current_user_password", "alter role current_user password 'owned'"),
    _case("alter_user_by_name_password", "alter user gw_scram with password 'owned'"),
    _case(
        "psql_backslash_password",
        f"ALTER USER \"gw_scram\" PASSWORD '{_SCRAM}'",
        "what psql's \\password sends",
    ),
    _case("alter_session_user_password_null", "alter role session_user password null"),
    _case(
        "alter_current_role_valid_until",
        "alter role current_role valid until '2000-01-01'",
    ),
    _case("alter_role_connection_limit", "alter role gw_scram connection limit 0"),
    _case(
        "alter_role_set_search_path",
        "alter role current_user set search_path = guard_s",
    ),
    _case(
        "alter_role_in_database_set_scs",
        "alter role gw_scram in database app set standard_conforming_strings = off",
    ),
    _case(
        "alter_role_all_set",
        "alter role all set statement_timeout = '1ms'",
        "PostgreSQL refuses it to a non-superuser too",
        control=False,
    ),
    _case(
        "rename_own_role",
        "alter role gw_scram rename to gw_owned",
        "PostgreSQL refuses to rename the session user too",
        control=False,
    ),
    _case(
        "drop_own_role",
        "drop role gw_scram",
        "PostgreSQL refuses to drop the current user too",
        control=False,
    ),
    _case(
        "dblink_alter_password",
        "select dblink_exec('{conn}', 'alter role current_user password ''owned''')",
        "the same, inside SQL text dblink runs",
    ),
    # -- settings that lock later sessions out or read them differently -------
    _case(
        "alter_database_set_scs_off",
        "alter database app set standard_conforming_strings = off",
    ),
    _case(
        "alter_database_set_client_encoding",
        "alter database app set client_encoding = 'SJIS'",
    ),
    _case("alter_database_set_role", "alter database app set role = 'guard_admin'"),
    # -- becoming another role ------------------------------------------------
    _case("set_role", "set role guard_admin", judge="session"),
    _case("set_session_role", "set session role 'guard_admin'", judge="session"),
    _case(
        "set_local_role_in_transaction",
        "begin; set local role guard_admin; select current_user; commit",
        judge="session",
    ),
    _case(
        "set_config_role",
        "select set_config('role', 'guard_admin', false)",
        judge="session",
    ),
    _case(
        "set_config_role_concatenated",
        "select set_config('ro' || 'le', 'guard_admin', false)",
        "a setting name the gateway cannot read",
        judge="session",
    ),
    _case(
        "set_config_role_parameters",
        ("select set_config(%s, %s, false)", ("role", "guard_admin")),
        "name and value as bound parameters",
        judge="session",
    ),
    _case(
        "set_session_authorization",
        "set session authorization guard_admin",
        "PostgreSQL refuses it to a non-superuser too",
        judge="session",
        control=False,
    ),
    _case(
        "set_role_not_settable",
        "set role guard_admin",
        "the target allows guard_reader only",
        judge="session",
        target="app_settable",
    ),
    # -- encodings and string syntax the gateway does not follow --------------
    _case("set_client_encoding_sjis", "set client_encoding to 'SJIS'", judge="session"),
    _case("set_names_gbk", "set names 'GBK'", judge="session"),
    _case(
        "set_client_encoding_shift_jis_2004",
        "set client_encoding = shift_jis_2004",
        judge="session",
    ),
    _case(
        "set_config_client_encoding_big5",
        "select set_config('client_encoding', 'BIG5', false)",
        judge="session",
    ),
    _case("set_scs_off", "set standard_conforming_strings = off", judge="session"),
    _case(
        "set_local_scs_off_in_transaction",
        "begin; set local standard_conforming_strings to off; "
        "select current_setting('standard_conforming_strings'); commit",
        judge="session",
    ),
    _case(
        "set_config_scs_off",
        "select set_config('standard_conforming_strings', 'of', false)",
        "'of' is how little of 'off' PostgreSQL needs",
        judge="session",
    ),
]

#: what the protections must let through
ALLOWED = [
    Attack(
        "set_role_settable",
        "set role guard_reader",
        expect=("app_settable", "guard_reader"),
    ),
    Attack(
        "reset_role_forms",
        "set role guard_reader; reset role; set role none; "
        "set session authorization default; reset session authorization",
        expect=("app_settable", "gw_scram"),
    ),
    Attack(
        "set_client_encoding_latin1_and_back",
        "set client_encoding = 'LATIN1'; reset client_encoding",
        expect=("app", "gw_scram"),
    ),
    Attack(
        "scs_on", "set standard_conforming_strings = on", expect=("app", "gw_scram")
    ),
    Attack(
        "alter_other_role_setting",
        "alter role guard_reader set search_path = public; "
        "alter role guard_reader reset all",
        "another role's settings are the policy's business",
        expect=("app", "gw_scram"),
    ),
]


class ProtectionAttackTests(GuardedTestCase):
    """A dba, whom the policy allows anything, still cannot do these."""

    def run_attack(self, attack: Attack) -> None:
        expect = attack.expect
        conn = self.connect(("dba",), target=expect.get("target", "app"))
        outcome = self.run_sql(conn, *self.fill(attack.payload))
        self.assertIn("gatehouse: built-in protection: ", str(outcome.error))
        self.assert_refused(attack, outcome)
        self.assertNotIn("guard_admin", repr(outcome.rows))
        self.assertEqual(self.run_sql(conn, _SESSION).rows, _INTACT)


class ProtectionAllowedTests(GuardedTestCase):
    """What the protections must let through."""

    def run_allowed(self, attack: Attack) -> None:
        target, user = attack.expect
        conn = self.connect(("dba",), target=target)
        outcome = self.run_sql(conn, attack.payload)
        self.assertIsNone(outcome.error, outcome.text)
        self.assertEqual(self.run_sql(conn, _SESSION).rows, [(user, "UTF8", "on")])


class ProtectionControls(GuardedTestCase):
    """Each attack, sent straight to PostgreSQL, does its harm."""

    def run_session_control(self, attack: Attack) -> None:
        if attack.expect.get("judge") != "session":
            self.run_control(attack)
            return
        conn = psycopg.connect(
            self.cluster.socket_dsn("gw_scram", "app"),
            autocommit=True,
            cursor_factory=psycopg.ClientCursor,
        )
        self.addCleanup(conn.close)
        outcome = self.run_sql(conn, *self.fill(attack.payload))
        after = self.run_sql(conn, _SESSION)
        changed = after.rows != _INTACT or "guard_admin" in repr(outcome.rows)
        changed = changed or "off" in repr(outcome.rows)
        self.assertTrue(changed, f"{outcome.text}\n{after.text}")


add_cases(ProtectionAttackTests, CASES)
add_cases(ProtectionAllowedTests, ALLOWED, runner="run_allowed")
add_cases(
    ProtectionControls,
    [c for c in CASES if c.expect.get("control", True)],
    runner="run_session_control",
)
