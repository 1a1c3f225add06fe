"""
Tests for L{gatehouse.protocols.postgres.protections}: what no policy can
allow, in every spelling the parser gives the same facts for.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from gatehouse.protocols.postgres.protections import PREFIX, refusal
from gatehouse.protocols.postgres.statements import classify

OWN = frozenset({"gw"})
SETTABLE = frozenset({"reader"})


def why(sql: str) -> str | None:
    return refusal(classify(sql), OWN, SETTABLE)


class RefusedTests(SynchronousTestCase):
    REFUSED = [
        # the gateway's own role
        "ALTER ROLE CURRENT_USER PASSWORD 'x'",
        "ALTER USER current_user WITH PASSWORD 'x'",
        "ALTER ROLE SESSION_USER PASSWORD NULL",
        "ALTER ROLE CURRENT_ROLE VALID UNTIL '2000-01-01'",
        "ALTER ROLE gw CONNECTION LIMIT 0",
        "ALTER USER \"gw\" PASSWORD 'SCRAM-SHA-256$4096:abc$def:ghi'",
        "ALTER ROLE gw RENAME TO other",
        "DROP ROLE gw",
        "DROP ROLE IF EXISTS someone, current_user",
        "DROP USER gw",
        "ALTER ROLE gw SET search_path = evil",
        "ALTER ROLE current_user IN DATABASE app SET work_mem = '1GB'",
        "ALTER ROLE ALL SET statement_timeout = 1",
        "ALTER ROLE ALL IN DATABASE app SET search_path = evil",
        "ALTER GROUP gw RENAME TO x",
        # settings that change identity or reading, on a role or database
        "ALTER ROLE someone SET role = 'admin'",
        "ALTER ROLE someone SET session_authorization = 'admin'",
        "ALTER DATABASE app SET standard_conforming_strings = off",
        "ALTER DATABASE app SET client_encoding = 'SJIS'",
        "ALTER DATABASE app SET role = admin",
        "ALTER ROLE someone IN DATABASE app SET standard_conforming_strings TO on",
        "ALTER DATABASE app SET session_preload_libraries = 'evil'",
        # becoming another role
        "SET ROLE admin",
        "SET SESSION ROLE admin",
        "SET LOCAL ROLE admin",
        "SET ROLE 'admin'",
        'SET ROLE "Reader"',
        "SET SESSION AUTHORIZATION admin",
        "SET SESSION AUTHORIZATION 'reader2'",
        "SELECT set_config('role', 'admin', false)",
        "SELECT pg_catalog.set_config('ROLE', 'admin', true)",
        "SELECT set_config('session_authorization', 'admin', false)",
        "SELECT set_config('ro' || 'le', 'admin', false)",
        "SELECT set_config($1, $2, false)",
        "SELECT set_config('role', $1, false)",
        "SELECT set_config(name, 'x', false) FROM settings",
        "SELECT 1; SET ROLE admin",
        # encodings and string syntax
        "SET client_encoding TO 'SJIS'",
        "SET client_encoding = sjis",
        "SET NAMES 'GBK'",
        "SET NAMES 'Shift_JIS'",
        "SET client_encoding = 'SHIFT_JIS_2004'",
        "SET client_encoding = 'big5'",
        "SET client_encoding = 'GB18030'",
        "SET client_encoding = 'UHC'",
        "SET client_encoding = 'JOHAB'",
        "SET client_encoding = 'WIN932'",
        "SET client_encoding = 'cp949'",
        "SELECT set_config('client_encoding', 'SJIS', false)",
        "SELECT set_config('client_encoding', $1, false)",
        "SET standard_conforming_strings = off",
        "SET standard_conforming_strings TO false",
        "SET LOCAL standard_conforming_strings = 'of'",
        "SET standard_conforming_strings = 0",
        "SET standard_conforming_strings = no",
        "SELECT set_config('standard_conforming_strings', 'off', false)",
        "SELECT set_config('standard_conforming_strings', $1, false)",
        # inside SQL text a built-in runs
        "SELECT dblink_exec('c', 'alter role current_user password ''x''')",
        "SELECT query_to_xml('select set_config(''role'', ''admin'', false)', "
        "true, true, '')",
    ]

    def test_refused(self):
        for sql in self.REFUSED:
            message = why(sql)
            self.assertIsNotNone(message, sql)
            self.assertTrue(message.startswith(PREFIX), message)


class AllowedTests(SynchronousTestCase):
    ALLOWED = [
        "SELECT 1",
        "RESET ROLE",
        "SET ROLE NONE",
        "SET ROLE reader",
        "SET LOCAL ROLE reader",
        "SET ROLE gw",
        "RESET SESSION AUTHORIZATION",
        "SET SESSION AUTHORIZATION DEFAULT",
        "RESET ALL",
        "DISCARD ALL",
        "SELECT set_config('role', 'reader', false)",
        "SELECT set_config('application_name', $1, false)",
        "SELECT set_config('search_path', 'a, b', false)",
        "SET client_encoding = 'UTF8'",
        "SET NAMES 'LATIN1'",
        "RESET client_encoding",
        "SET client_encoding TO DEFAULT",
        "SET standard_conforming_strings = on",
        "SET standard_conforming_strings = 'true'",
        "RESET standard_conforming_strings",
        "ALTER ROLE someone PASSWORD 'x'",
        "ALTER ROLE someone SET search_path = a",
        "ALTER ROLE someone RESET ALL",
        "ALTER DATABASE app SET search_path = a",
        "ALTER DATABASE app RESET ALL",
        "ALTER DATABASE app RESET client_encoding",
        "ALTER ROLE ALL RESET work_mem",
        "DROP ROLE someone",
        "ALTER ROLE someone RENAME TO other",
        "ALTER ROLE \"GW\" PASSWORD 'x'",
        "SET search_path = evil",
        "SET application_name = 'x'",
    ]

    def test_allowed(self):
        for sql in self.ALLOWED:
            self.assertIsNone(why(sql), sql)

    def test_settable_roles_per_target(self):
        self.assertIsNotNone(refusal(classify("SET ROLE reader"), OWN, frozenset()))
        self.assertIsNone(
            refusal(classify("SET ROLE admin"), OWN, frozenset({"admin"}))
        )


class PgSettingsTests(SynchronousTestCase):
    """
    pg_settings' update rule runs set_config(name, setting, false): an
    UPDATE of it is a SET by another spelling (found by the red team).
    """

    def test_refused(self):
        for sql in [
            "UPDATE pg_settings SET setting = 'admin' WHERE name = 'role'",
            "UPDATE pg_catalog.pg_settings SET setting = 'off'"
            " WHERE name = 'standard_conforming_strings'",
            "UPDATE pg_settings SET setting = 'SJIS' WHERE 'client_encoding' = name",
            "WITH s AS (UPDATE pg_settings SET setting = 'off'"
            " WHERE name = 'standard_conforming_strings') SELECT 1",
            "SELECT query_to_xml('UPDATE pg_settings SET setting = ''admin''"
            " WHERE name = ''role''', true, true, '')",
            "UPDATE pg_settings SET setting = $1 WHERE name = 'role'",
            "UPDATE pg_settings SET setting = 'off' WHERE name IN ('x', 'y')",
            "UPDATE pg_settings SET setting = 'off' WHERE name = $1",
        ]:
            self.assertTrue((why(sql) or "").startswith(PREFIX), sql)

    def test_allowed(self):
        for sql in [
            "UPDATE pg_settings SET setting = '10s' WHERE name = 'statement_timeout'",
            "UPDATE pg_settings SET setting = 'reader' WHERE name = 'role'",
            "UPDATE other.pg_settings SET setting = 'off' WHERE name = 'x'",
        ]:
            self.assertIsNone(why(sql), sql)


class MembershipTests(SynchronousTestCase):
    """
    The gateway's own role's memberships: a role granted to it lends its
    privileges without SET ROLE (found by the red team).
    """

    def test_refused(self):
        for sql in [
            "GRANT pg_read_all_data TO CURRENT_USER",
            'GRANT admin TO "gw"',
            "GRANT admin TO someone, gw WITH ADMIN OPTION",
            "REVOKE reader FROM CURRENT_ROLE",
            "ALTER GROUP admin ADD USER SESSION_USER",
            "ALTER GROUP admin DROP USER gw",
            "CREATE ROLE x ROLE current_user",
            "CREATE ROLE x ADMIN gw",
            "CREATE GROUP x USER gw",
        ]:
            self.assertTrue((why(sql) or "").startswith(PREFIX), sql)

    def test_allowed(self):
        for sql in [
            "GRANT admin TO someone",
            "REVOKE admin FROM someone",
            "ALTER GROUP admin ADD USER someone",
            "CREATE ROLE x IN ROLE reader",
            "CREATE ROLE x ROLE someone",
        ]:
            self.assertIsNone(why(sql), sql)
