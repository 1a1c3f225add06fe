"""
A guarded gateway for the policy attack modules (SQL in strings,
categories, built-in protections, syntax errors): a policy written with
categories, a victim schema owned by the target's role (so anything let
through would work), and a snapshot of the server's state to judge each
attack by.

The target's role C{gw_scram} gets, for the duration of a test, what an
attacker would need: membership of C{guard_admin} (SET ROLE), the file
roles (pg_read_server_files, pg_write_server_files,
pg_execute_server_program), EXECUTE on the large-object file functions,
CREATEROLE (so it may alter roles, itself included), and dblink with
its own password.
"""

from __future__ import annotations

import glob
import os

import psycopg

from tests.fixtures.postgres import PsqlError
from tests.protocols.postgres.harness import Gateway
from tests.protocols.postgres.test_e2e import GatewayTestCase

__all__ = ["GUARD_CATEGORY_POLICY", "GuardedTestCase", "Outcome"]

#: GUARD_POLICY of test_policy_e2e, written with categories.
GUARD_CATEGORY_POLICY = {
    "policy": {
        "review": {"approvers": ["approvers"], "timeout": "60s"},
        "rules": [
            {"name": "dba-anything", "groups": ["dba"], "action": "allow"},
            {
                "name": "no-evil-functions",
                "function": ["evil_*"],
                "action": "deny",
                "message": "evil functions are off limits",
            },
            {
                "name": "no-secrets",
                "object": ["guard_secret"],
                "action": "deny",
            },
            {"name": "no-server-files", "flag": ["server-file"], "action": "deny"},
            {"name": "no-copy-from-file", "flag": ["copy-from-file"], "action": "deny"},
            {"name": "no-copy-to-file", "flag": ["copy-to-file"], "action": "deny"},
            {"name": "no-copy-program", "flag": ["copy-program"], "action": "deny"},
            {
                "name": "builders-ddl",
                "groups": ["builders"],
                "category": ["ddl"],
                "action": "allow",
            },
            {
                "name": "no-destructive",
                "category": ["destructive"],
                "action": "deny",
                "message": "agents may not drop, truncate or delete",
            },
            {
                "name": "no-unbounded-writes",
                "category": ["write"],
                "flag": ["no-where"],
                "action": "deny",
            },
            {"name": "no-ddl", "category": ["ddl"], "action": "deny"},
            {"name": "no-privilege", "category": ["privilege"], "action": "deny"},
            {"name": "no-admin", "category": ["admin"], "action": "deny"},
        ],
        "opaque": "deny",
    }
}

#: Where attacks would write files; none may exist afterwards.  Per test
#: process, so two runs on one machine do not judge each other's files.
FILE_PREFIX = f"/tmp/gatehouse_attack_{os.getpid()}_"

_SETUP = """
drop schema if exists guard_s cascade;
drop table if exists guard_t, guard_secret, guard_new, guard_new2 cascade;
drop view if exists guard_v;
drop sequence if exists guard_seq;
drop schema if exists guard_s2 cascade;
drop type if exists guard_ty;
drop operator if exists === (int, int);
drop aggregate if exists guard_agg(int);
create table guard_t (id int primary key, v text not null, n numeric);
insert into guard_t select i, 'row ' || i, i * 1.5 from generate_series(1, 10) i;
create table guard_secret (id int primary key, secret text);
insert into guard_secret values (1, 'TOPSECRET-4711');
create schema guard_s;
create or replace function public.evil_fn(int, int) returns bool
  language sql immutable as 'select true';
create or replace function public.evil_sfunc(int, int) returns int
  language sql immutable as 'select $1 + $2';
create or replace function public.evil_trig() returns trigger
  language plpgsql as 'begin return new; end';
alter table guard_t owner to gw_scram;
alter table guard_secret owner to gw_scram;
alter schema guard_s owner to gw_scram;
do $$ begin
  if not exists (select from pg_roles where rolname = 'guard_admin') then
    create role guard_admin;
  end if;
  if not exists (select from pg_roles where rolname = 'guard_reader') then
    create role guard_reader;
  end if;
end $$;
grant guard_admin, guard_reader to gw_scram;
alter role gw_scram createrole;
grant create on schema public to guard_reader;
grant pg_read_server_files, pg_write_server_files, pg_execute_server_program
  to gw_scram;
grant execute on function lo_import(text), lo_export(oid, text),
  pg_read_file(text), pg_ls_dir(text) to gw_scram;
create extension if not exists dblink;
select lo_unlink(oid) from pg_largeobject_metadata;
select lo_from_bytea(424242, 'large object');
alter large object 424242 owner to gw_scram;
"""

_TEARDOWN = """
revoke guard_admin, guard_reader from gw_scram;
revoke create on schema public from guard_reader;
revoke pg_read_server_files, pg_write_server_files, pg_execute_server_program
  from gw_scram;
revoke execute on function lo_import(text), lo_export(oid, text),
  pg_read_file(text), pg_ls_dir(text) from gw_scram;
alter role gw_scram nocreaterole;
drop extension if exists dblink;
select lo_unlink(oid) from pg_largeobject_metadata;
"""

#: The server's state, one query per line of the snapshot.
_STATE = """
select 'rows', string_agg(format('%s|%s|%s', id, v, n), ';' order by id) from guard_t;
select 'secret', string_agg(format('%s|%s', id, secret), ';') from guard_secret;
select 'relations', string_agg(format('%s.%s:%s:%s', n.nspname, c.relname, c.relkind,
    c.relowner::regrole), ',' order by n.nspname, c.relname)
  from pg_class c join pg_namespace n on n.oid = c.relnamespace
  where n.nspname in ('public', 'guard_s', 'guard_s2')
    and c.relkind in ('r','v','m','S','c')
    and c.relname like 'guard%';
select 'acl', string_agg(format('%s:%s', relname, relacl), ',' order by relname)
  from pg_class where relname in ('guard_t', 'guard_secret');
select 'columns', string_agg(attname, ',' order by attnum) from pg_attribute
  where attrelid = 'guard_t'::regclass and attnum > 0 and not attisdropped;
select 'schemas', string_agg(nspname, ',' order by nspname) from pg_namespace
  where nspname like 'guard%';
select 'types', count(*) from pg_type where typname like 'guard%';
select 'operators', count(*) from pg_operator where oprname = '===';
select 'aggregates', count(*) from pg_proc where proname like 'guard_agg%';
select 'casts', count(*) from pg_cast c join pg_proc p on p.oid = c.castfunc
  where p.proname like 'evil%';
select 'triggers', count(*) from pg_trigger where tgname like 'guard%';
select 'role', format('%s|%s|%s|%s|%s|%s', a.rolname, a.rolpassword, a.rolsuper,
    a.rolvaliduntil, a.rolconnlimit, r.rolconfig)
  from pg_authid a join pg_roles r on r.oid = a.oid
  where a.rolname = 'gw_scram';
select 'roles', string_agg(rolname, ',' order by rolname) from pg_roles
  where rolname like 'g%';
select 'settings', string_agg(format('%s/%s:%s', setdatabase, setrole, setconfig), ';'
    order by setdatabase, setrole) from pg_db_role_setting;
select 'databases', string_agg(datname, ',' order by datname) from pg_database;
select 'members', string_agg(format('%s>%s', roleid::regrole, member::regrole), ','
    order by 1) from pg_auth_members where member = 'gw_scram'::regrole;
select 'largeobjects', count(*) from pg_largeobject_metadata;
"""


def read_state(cluster: object) -> dict[str, str]:
    """The state of C{cluster}'s C{app} database (see L{_STATE})."""
    try:
        out = cluster.psql(_STATE, dbname="app")
    except PsqlError as e:
        return {"unreadable": str(e)}
    state = {}
    for line in out.splitlines():
        key, _, value = line.partition("|")
        state[key] = value
    return state


class Outcome:
    """What a client saw: the error (if any), its output, its notices."""

    def __init__(self) -> None:
        self.error: psycopg.Error | None = None
        self.rows: list = []
        self.notices: list[str] = []

    @property
    def sqlstate(self) -> str | None:
        return self.error.diag.sqlstate if self.error is not None else None

    @property
    def text(self) -> str:
        """Everything the client received, as text."""
        parts = [repr(self.rows), *self.notices]
        if self.error is not None:
            parts.append(str(self.error))
        return "\n".join(parts)


class GuardedTestCase(GatewayTestCase):
    """A gateway with L{GUARD_CATEGORY_POLICY} and a victim schema."""

    def make_gateway(self, base: str) -> Gateway:
        settable = {
            "name": "app_settable",
            "protocol": "postgres",
            "options": {
                "host": "127.0.0.1",
                "port": self.cluster.port,
                "database": "app",
                "user": "gw_scram",
                "password_file": os.path.join(os.path.abspath(base), "gw_scram.pw"),
                "tls": {
                    "mode": "verify-full",
                    "ca_file": str(self.cluster.ca_cert_path),
                },
                "allow_groups": ["dba", "agents"],
                "settable_roles": ["guard_reader"],
            },
        }
        return Gateway(
            base,
            self.cluster,
            extra_config=GUARD_CATEGORY_POLICY,
            extra_targets=[settable],
        )

    def setUp(self) -> None:
        super().setUp()
        self.cluster.psql(_SETUP, dbname="app")
        self.addCleanup(self._teardown)
        self.before = self.state()

    def _teardown(self) -> None:
        for path in glob.glob(FILE_PREFIX + "*"):
            os.unlink(path)
        password = self.cluster.passwords["gw_scram"].replace("'", "''")
        # First from another database: settings an attack stored on app
        # (role = ...) would apply to this very connection.
        self.cluster.psql(
            "alter database app reset all; alter role gw_scram reset all; "
            "alter role gw_scram in database app reset all; "
            "alter role gw_scram nocreaterole;",
            dbname="postgres",
        )
        self.cluster.psql(
            _TEARDOWN
            + "alter role gw_scram reset all;"
            + f"alter role gw_scram password '{password}' valid until 'infinity' "
            + "connection limit -1;"
            + "alter database app reset all;",
            dbname="app",
        )

    # -- the server's state -------------------------------------------------

    def state(self) -> dict[str, str]:
        """The server's state, by aspect (rows, relations, role, ...)."""
        return read_state(self.cluster)

    def assert_unchanged(self, attack: object, outcome: Outcome) -> None:
        """Every aspect of the server's state is as before the attack."""
        after = self.state()
        for key, value in self.before.items():
            self.assertEqual(
                after.get(key),
                value,
                f"{key} changed after {attack!r}; the client saw:\n{outcome.text}",
            )
        written = glob.glob(FILE_PREFIX + "*")
        planted = getattr(self, "planted", ())
        self.assertEqual(
            [p for p in written if p not in planted],
            [],
            f"files written after {attack!r}",
        )
        seen = outcome.text.lower()
        self.assertNotIn("topsecret", seen, f"secret leaked: {attack!r}")
        for marker in ("root:x", "'passwd'"):
            self.assertNotIn(marker, seen, f"server file read: {attack!r}")

    # -- clients -------------------------------------------------------------

    def connect(self, groups=("agents",), target: str = "app") -> psycopg.Connection:
        """An autocommit psycopg connection through the gateway."""
        token = self.gateway.token(subject="attacker", groups=groups)
        conn = psycopg.connect(
            self.gateway.conninfo(target, password=token),
            autocommit=True,
            cursor_factory=psycopg.ClientCursor,
        )
        self.addCleanup(conn.close)
        return conn

    def run_sql(
        self,
        conn: psycopg.Connection,
        sql: str,
        params: tuple | None = None,
    ) -> Outcome:
        """
        Send C{sql}: as one simple Query (several statements allowed), or
        with C{params} as Parse/Bind/Execute.
        """
        outcome = Outcome()
        conn.add_notice_handler(
            lambda diag: outcome.notices.append(diag.message_primary or "")
        )
        try:
            if params is None:
                cursor = conn.execute(sql)
            else:
                cursor = psycopg.Cursor(conn).execute(sql, params)
            while True:
                if cursor.description is not None:
                    outcome.rows.extend(cursor.fetchall())
                if not cursor.nextset():
                    break
        except psycopg.Error as e:
            outcome.error = e
        return outcome

    def assert_refused(self, attack: object, outcome: Outcome) -> None:
        """The gateway refused it (42501, its own message), state intact."""
        self.assertIsNotNone(
            outcome.error, f"{attack!r} was not refused; got {outcome.rows!r}"
        )
        self.assertEqual(outcome.sqlstate, "42501", outcome.text)
        self.assertIn("gatehouse", str(outcome.error))
        self.assertFalse(
            any("held for approval" in n for n in outcome.notices), outcome.notices
        )
        self.assert_unchanged(attack, outcome)

    def fill(self, payload: object) -> tuple[str, tuple | None]:
        """A case's SQL and parameters, placeholders filled."""
        values = {"conn": self.dblink_conninfo(), "planted": self.plant()}
        if isinstance(payload, tuple):
            sql, params = payload
            return sql, tuple(str(p).format(**values) for p in params)
        return str(payload).format(**values), None

    def plant(self) -> str:
        """A file of one row for guard_t that COPY FROM could read."""
        planted = FILE_PREFIX + "planted.tsv"
        with open(planted, "w") as f:
            f.write("99\tplanted\t1\n")
        os.chmod(planted, 0o644)
        self.planted = (planted,)
        return planted

    def run_control(self, attack: object) -> None:
        """
        The attack, sent straight to PostgreSQL as the target's role (no
        gateway), does change the server's state or leak: so the gateway's
        refusal of it is what kept the state intact.
        """
        sql, params = self.fill(attack.payload)
        conn = psycopg.connect(
            self.cluster.socket_dsn("gw_scram", "app"),
            autocommit=True,
            cursor_factory=psycopg.ClientCursor,
        )
        self.addCleanup(conn.close)
        outcome = self.run_sql(conn, sql, params)
        if isinstance(attack.expect, str) and attack.expect.startswith("control:"):
            # run after a first statement: nothing to change
            return
        with self.assertRaises(self.failureException, msg=outcome.text):
            self.assert_unchanged(attack, outcome)

    def dblink_conninfo(self) -> str:
        """How dblink reaches the same database as the target's role."""
        password = self.cluster.passwords["gw_scram"]
        return (
            f"host=127.0.0.1 port={self.cluster.port} dbname=app user=gw_scram "
            f"password={password} sslmode=require"
        )
