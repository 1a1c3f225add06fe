"""
Defence in depth by the database itself: credentials per group.

A target maps the C{agents} group to C{gw_ro}, a role PostgreSQL itself
limits (SELECT on one table, nothing else), and C{dba} to the gateway's
usual role.  The gateway's policy here allows everything, so whatever holds
below is PostgreSQL's own doing: every attack is judged on the server's
state (rows compared column by column, roles' attributes, files, catalog
entries), and the refusal must be PostgreSQL's (SQLSTATE 42501).
"""

from __future__ import annotations

import contextlib
import io
import os
import time
import uuid

import attrs
import psycopg

from gatehouse.cli import main as gatehouse_main
from tests.protocols.postgres.attacks.corpus import Attack, add_cases
from tests.protocols.postgres.harness import Gateway
from tests.protocols.postgres.test_e2e import GatewayTestCase

#: The gateway's policy allows everything: only PostgreSQL stands in the way.
ALLOW_ALL = {"default": "allow", "unparseable": "allow", "opaque": "allow"}
TABLE = "roles_people"
ROWS = [(1, "Ada", "likes tea"), (2, "Alan", "vault code 1912")]
OUTSIDE = "/tmp/gatehouse-roles-attack"


def roles_gateway(base: str, cluster: object, **extra: object) -> Gateway:
    """
    A gateway with target C{roles} (agents -> gw_ro, dba -> gw_scram,
    others -> gw_scram by default) and C{roles_strict} (agents -> gw_ro,
    no default: everyone else refused), masking a column by name so that
    the column catalog is used.
    """
    passwords = {}
    for role in ("gw_scram", "gw_ro"):
        passwords[role] = os.path.join(base, f"{role}.pw")
        with open(passwords[role], "w") as f:
            f.write(cluster.passwords[role] + "\n")

    def target(name: str, **options: object) -> dict:
        base_options = {
            "host": "127.0.0.1",
            "port": cluster.port,
            "database": "app",
            "tls": {"mode": "verify-full", "ca_file": str(cluster.ca_cert_path)},
            "allow_groups": ["dba", "agents", "ops"],
        }
        base_options.update(options)
        return {"name": name, "protocol": "postgres", "options": base_options}

    agents = {
        "groups": ["agents"],
        "user": "gw_ro",
        "password_file": passwords["gw_ro"],
    }
    dba = {
        "groups": ["dba"],
        "user": "gw_scram",
        "password_file": passwords["gw_scram"],
    }
    return Gateway(
        base,
        cluster,
        extra_targets=[
            target(
                "roles",
                user="gw_scram",
                password_file=passwords["gw_scram"],
                credentials=[agents, dba],
            ),
            target("roles_strict", credentials=[agents]),
        ],
        extra_config={
            "policy": ALLOW_ALL,
            "masking": [
                {"name": "secrets", "relation_columns": [f"public.{TABLE}.secret"]}
            ],
            **extra,
        },
    )


class RolesTestCase(GatewayTestCase):
    """Runs the roles gateway; resets the table and gw_ro's grants per test."""

    def make_gateway(self, base: str) -> Gateway:
        return roles_gateway(base, self.cluster)

    def setUp(self) -> None:
        super().setUp()
        values = ", ".join(f"({i}, '{n}', '{s}')" for i, n, s in ROWS)
        self.direct(
            f"DROP TABLE IF EXISTS {TABLE};"
            f" CREATE TABLE {TABLE} (id int PRIMARY KEY, name text, secret text);"
            f" ALTER TABLE {TABLE} OWNER TO gw_scram;"
            f" INSERT INTO {TABLE} VALUES {values};"
            f" GRANT SELECT ON {TABLE} TO gw_ro;"
        )

    def connect(self, groups: tuple[str, ...], target: str = "roles", **claims):
        """A psycopg connection through the gateway (autocommit)."""
        token = self.gateway.token(
            subject=claims.pop("subject", "agent-7"), groups=groups, **claims
        )
        conn = psycopg.connect(
            self.gateway.conninfo(target, password=token), autocommit=True
        )
        self.addCleanup(conn.close)
        return conn

    def rows(self) -> list[tuple]:
        """The table's rows, every column, read as the superuser."""
        out = self.direct(f"SELECT id, name, secret FROM {TABLE} ORDER BY id")
        return [
            (int(i), n, s)
            for i, n, s in (line.split("|") for line in out.splitlines() if line)
        ]

    def fails_in_postgres(self, conn, sql: str, sqlstate: str = "42501") -> str:
        """C{sql} fails with C{sqlstate}; the session stays usable."""
        with self.assertRaises(psycopg.Error) as caught:
            conn.execute(sql)
        self.assertEqual(caught.exception.sqlstate, sqlstate, str(caught.exception))
        conn.execute("ROLLBACK")  # a no-op (a warning) outside a transaction
        self.assertEqual(conn.execute("SELECT 1").fetchone(), (1,))
        return str(caught.exception)


class UpstreamRoleTests(RolesTestCase):
    """Which role each identity lands as, recorded and indexed."""

    def test_agent_lands_read_only(self) -> None:
        """
        An agent reaches the target as gw_ro (current_user and
        session_user, asked through the gateway); the session's index row
        and recording name the role.
        """
        start = time.time()
        conn = self.connect(("agents",))
        self.assertEqual(
            conn.execute("SELECT current_user, session_user").fetchone(),
            ("gw_ro", "gw_ro"),
        )
        self.assertEqual(conn.execute(f"SELECT count(*) FROM {TABLE}").fetchone(), (2,))
        conn.close()
        row = self.latest_session(start)
        self.assertEqual(row.upstream_role, "gw_ro")
        self.assertIn("upstream-login", self.transcript(row))
        self.assertIn("credentials=credentials[0]", self.transcript(row))

    def test_dba_lands_admin(self) -> None:
        """The DBA identity lands as the admin role, and may write."""
        start = time.time()
        conn = self.connect(("dba",), subject="dba-1")
        self.assertEqual(conn.execute("SELECT current_user").fetchone(), ("gw_scram",))
        conn.execute(f"UPDATE {TABLE} SET name = 'Grace' WHERE id = 2")
        conn.close()
        self.assertEqual(self.rows()[1], (2, "Grace", "vault code 1912"))
        self.assertEqual(self.latest_session(start).upstream_role, "gw_scram")

    def test_first_match_wins(self) -> None:
        """An identity in both groups gets the first entry's role (gw_ro)."""
        conn = self.connect(("dba", "agents"))
        self.assertEqual(conn.execute("SELECT current_user").fetchone(), ("gw_ro",))

    def test_default_for_others(self) -> None:
        """A group no entry names gets the default user."""
        conn = self.connect(("ops",))
        self.assertEqual(conn.execute("SELECT current_user").fetchone(), ("gw_scram",))

    def test_no_default_refuses_others(self) -> None:
        """
        Without a default user, an identity no entry matches is refused
        (28000) before the gateway opens anything upstream.
        """
        with self.assertRaises(psycopg.OperationalError) as caught:
            self.connect(("ops",), target="roles_strict")
        self.assertIn("may not reach target", str(caught.exception))
        conn = self.connect(("agents",), target="roles_strict")
        self.assertEqual(conn.execute("SELECT current_user").fetchone(), ("gw_ro",))

    def test_agent_writes_refused_by_postgres(self) -> None:
        """
        The policy allows every write, and PostgreSQL refuses each one to
        gw_ro with 42501; every row is unchanged, the table still there.
        """
        conn = self.connect(("agents",))
        for sql in (
            f"INSERT INTO {TABLE} VALUES (3, 'Eve', 'x')",
            f"UPDATE {TABLE} SET secret = 'gone'",
            f"DELETE FROM {TABLE}",
            f"TRUNCATE {TABLE}",
            f"DROP TABLE {TABLE}",
            f"ALTER TABLE {TABLE} ADD COLUMN owned int",
            "CREATE TABLE agent_made (x int)",
        ):
            self.fails_in_postgres(conn, sql)
        self.assertEqual(self.rows(), ROWS)
        self.assertEqual(
            self.direct("SELECT count(*) FROM pg_class WHERE relname = 'agent_made'"),
            "0",
        )

    def test_catalog_masking_with_roles(self) -> None:
        """
        Masking by column name still works for an agent: the catalog
        connection logs in with the default role (and, on a target without
        one, with the first entry's), and the secret column is masked.
        """
        for target in ("roles", "roles_strict"):
            start = time.time()
            conn = self.connect(("agents",), target=target)
            got = conn.execute(f"SELECT id, secret FROM {TABLE} ORDER BY id").fetchall()
            conn.close()
            self.assertEqual([i for i, _ in got], [1, 2])
            for _, secret in got:
                self.assertNotIn(secret, ("likes tea", "vault code 1912"))
            transcript = self.transcript(self.latest_session(start))
            self.assertNotIn("likes tea", transcript)
            self.assertNotIn("vault code", transcript)


class CheckConfigTests(RolesTestCase):
    """C{gatehouse check-config} says which role each group logs in as."""

    def test_reports_roles(self) -> None:
        """check-config prints, per target with credentials, who logs in as what."""
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            code = gatehouse_main(["check-config", self.gateway.config_path])
        self.assertEqual(code, 0)
        lines = out.getvalue().splitlines()
        self.assertEqual(lines[0], "ok")
        self.assertIn(
            "target roles: groups agents -> role gw_ro; groups dba -> role "
            "gw_scram; others -> role gw_scram",
            lines,
        )
        self.assertIn(
            "target roles_strict: groups agents -> role gw_ro; others -> refused "
            "(no default user)",
            lines,
        )


# -- escalation attempts from the read-only role -----------------------------


@attrs.frozen
class Probe:
    """What an escalation attack must leave as it was: SQL run as superuser."""

    sql: str
    expected: str


def _role_flags(role: str) -> Probe:
    return Probe(
        "SELECT rolsuper, rolcreaterole, rolcreatedb, rolbypassrls, rolreplication"
        f" FROM pg_roles WHERE rolname = '{role}'",
        "f|f|f|f|f",
    )


_GW_RO = _role_flags("gw_ro")
_MEMBERSHIP = Probe(
    "SELECT count(*) FROM pg_auth_members m JOIN pg_roles r ON r.oid = m.member"
    " WHERE r.rolname = 'gw_ro'",
    "0",
)
_PRIVILEGES = Probe(
    f"SELECT has_table_privilege('gw_ro', '{TABLE}', 'INSERT'),"
    f" has_table_privilege('gw_ro', '{TABLE}', 'UPDATE'),"
    f" has_table_privilege('gw_ro', '{TABLE}', 'DELETE'),"
    f" has_table_privilege('gw_ro', '{TABLE}', 'TRUNCATE')",
    "f|f|f|f",
)
_NO_FUNCTION = Probe("SELECT count(*) FROM pg_proc WHERE proname = 'gh_escalate'", "0")
_NO_SCHEMA = Probe("SELECT count(*) FROM pg_namespace WHERE nspname = 'gh_evil'", "0")
_NO_EXTENSION = Probe("SELECT count(*) FROM pg_extension WHERE extname = 'dblink'", "0")
_NO_LARGE_OBJECTS = Probe("SELECT count(*) FROM pg_largeobject_metadata", "0")
_ADMIN_FLAGS = Probe(
    "SELECT rolsuper, rolcreaterole FROM pg_roles WHERE rolname = 'gw_scram'", "f|f"
)

ESCALATIONS = [
    Attack("set_role", "SET ROLE gw_scram", "become the admin role", [_MEMBERSHIP]),
    Attack("set_role_postgres", "SET ROLE postgres", "become the superuser", [_GW_RO]),
    Attack(
        "set_config_role",
        "SELECT set_config('role', 'gw_scram', false)",
        "SET ROLE spelt as a function call",
        [_MEMBERSHIP],
    ),
    Attack(
        "set_session_authorization",
        "SET SESSION AUTHORIZATION gw_scram",
        "change the session user",
        [_GW_RO],
    ),
    Attack(
        "set_config_session_authorization",
        "SELECT set_config('session_authorization', 'postgres', false)",
        "the same as a function call",
        [_GW_RO],
    ),
    Attack(
        "security_definer_function",
        "CREATE FUNCTION public.gh_escalate() RETURNS void LANGUAGE sql"
        f" SECURITY DEFINER AS 'DELETE FROM {TABLE}'",
        "plant a SECURITY DEFINER function for a privileged caller",
        [_NO_FUNCTION],
    ),
    Attack(
        "grant_admin_role_to_self",
        "GRANT gw_scram TO gw_ro",
        "grant itself the admin role",
        [_MEMBERSHIP],
    ),
    Attack(
        "grant_table_to_self",
        f"GRANT INSERT, UPDATE, DELETE, TRUNCATE ON {TABLE} TO gw_ro",
        "grant itself write privileges (PostgreSQL warns, grants nothing)",
        [_PRIVILEGES],
        # not an error in PostgreSQL: a WARNING, no privilege granted
    ),
    Attack(
        "alter_role_superuser",
        "ALTER ROLE gw_ro SUPERUSER",
        "make itself superuser",
        [_GW_RO],
    ),
    Attack(
        "alter_role_createrole",
        "ALTER ROLE CURRENT_USER CREATEROLE CREATEDB BYPASSRLS",
        "give itself role attributes",
        [_GW_RO],
    ),
    Attack(
        "alter_admin_role",
        "ALTER ROLE gw_scram SUPERUSER CREATEROLE",
        "raise the admin role",
        [_ADMIN_FLAGS],
    ),
    Attack(
        "copy_to_file",
        f"COPY {TABLE} TO '{OUTSIDE}-copy'",
        "write a server file",
        [],
    ),
    Attack(
        "copy_to_program",
        f"COPY {TABLE} TO PROGRAM 'touch {OUTSIDE}-program'",
        "run a program on the server",
        [],
    ),
    Attack(
        "copy_from_file",
        f"COPY {TABLE} FROM '/etc/hostname'",
        "read a server file into a table",
        [],
    ),
    Attack(
        "pg_read_file",
        "SELECT pg_read_file('/etc/passwd')",
        "read a server file",
        [],
    ),
    Attack(
        "pg_ls_dir",
        "SELECT pg_ls_dir('.')",
        "list the data directory",
        [],
    ),
    Attack(
        "lo_import",
        "SELECT lo_import('/etc/passwd')",
        "read a server file as a large object",
        [_NO_LARGE_OBJECTS],
    ),
    Attack(
        "create_schema",
        "CREATE SCHEMA gh_evil",
        "create objects in the database",
        [_NO_SCHEMA],
    ),
    Attack(
        "create_extension_dblink",
        "CREATE EXTENSION dblink",
        "load an extension that opens new connections",
        [_NO_EXTENSION],
    ),
    Attack(
        "alter_system",
        "ALTER SYSTEM SET log_statement = 'none'",
        "turn off the server's statement log",
        [],
    ),
    Attack(
        "do_block_drop",
        f"DO $$ BEGIN EXECUTE 'DROP TABLE ' || '{TABLE}'; END $$",
        "a DROP the parser cannot see, built inside a DO block",
        [],
    ),
    Attack(
        "lock_table_exclusive",
        f"BEGIN; LOCK TABLE {TABLE} IN ACCESS EXCLUSIVE MODE",
        "lock everyone else out of the table",
        [],
    ),
]


class EscalationTests(RolesTestCase):
    """
    An agent on gw_ro tries to climb out of it, with the gateway's policy
    allowing everything: PostgreSQL refuses (42501) and nothing changed.
    """

    def run_attack(self, attack: Attack) -> None:
        for suffix in ("-copy", "-program"):
            if os.path.exists(OUTSIDE + suffix):
                os.unlink(OUTSIDE + suffix)
        # Other modules share the cluster: start from the state each probe
        # expects, so that an attack cannot pass because its object exists.
        self.direct(
            "DROP EXTENSION IF EXISTS dblink; "
            "SELECT lo_unlink(oid) FROM pg_largeobject_metadata"
        )
        before = {probe.sql: self.direct(probe.sql) for probe in attack.expect}
        for probe in attack.expect:
            self.assertEqual(before[probe.sql], probe.expected, probe.sql)
        conn = self.connect(("agents",), subject=f"agent-{uuid.uuid4().hex[:6]}")
        if attack.name == "grant_table_to_self":
            # PostgreSQL answers with a WARNING and grants nothing.
            conn.execute(attack.payload)
        else:
            self.fails_in_postgres(conn, attack.payload)
        self.assertEqual(
            conn.execute("SELECT current_user, session_user").fetchone(),
            ("gw_ro", "gw_ro"),
        )
        for probe in attack.expect:
            self.assertEqual(self.direct(probe.sql), probe.expected, probe.sql)
        self.assertEqual(self.rows(), ROWS)
        self.assertEqual(_GW_RO.expected, self.direct(_GW_RO.sql))
        self.assertEqual(_MEMBERSHIP.expected, self.direct(_MEMBERSHIP.sql))
        for suffix in ("-copy", "-program"):
            self.assertFalse(os.path.exists(OUTSIDE + suffix))


add_cases(EscalationTests, ESCALATIONS)
