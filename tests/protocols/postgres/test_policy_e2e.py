"""
End-to-end: policy, guardrails, inline approval and masking, with real
psql and psycopg through the real daemon to a real PostgreSQL.

Every guardrail is proven on the database afterwards, not only by the
error the client saw: the table is still there, its rows untouched.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time

import psycopg
from psycopg import sql as pgsql

from gatehouse.protocols.postgres import codec
from gatehouse.recording.format import RecordType
from gatehouse.recording.index import approvals_for, commands_for, get_session
from gatehouse.recording.reader import read_records
from tests.protocols.postgres.harness import Gateway
from tests.protocols.postgres.test_e2e import GatewayTestCase, RawClient, error_of

GUARD_POLICY = {
    "policy": {
        "review": {"approvers": ["approvers"], "timeout": "60s"},
        "rules": [
            {"name": "dba-anything", "groups": ["dba"], "action": "allow"},
            {
                "name": "no-drop",
                "kind": ["DropStmt", "TruncateStmt"],
                "action": "deny",
                "message": "agents may not drop or truncate",
            },
            {
                "name": "no-unbounded-writes",
                "kind": ["DeleteStmt", "UpdateStmt"],
                "flag": ["no-where"],
                "action": "deny",
            },
            {"name": "no-copy-program", "flag": ["copy-program"], "action": "deny"},
            {
                "name": "no-kill",
                "function": ["pg_terminate_backend"],
                "action": "deny",
            },
            {"name": "no-grant", "kind": ["GrantStmt"], "action": "deny"},
            # A rule on the text: statements are then decided text by text.
            {"name": "no-xyzzy", "text": "xyzzy_forbidden", "action": "deny"},
        ],
        "unparseable": "deny",
        "opaque": "deny",
    }
}


def read_until_ready(client: RawClient) -> bytes:
    """What the gateway sends up to an idle ReadyForQuery (or the close)."""
    got = b""
    while codec.ReadyForQuery("I").encode() not in got:
        chunk = client.sock.recv(65536)
        if not chunk:
            break
        got += chunk
    return got


def _guard_table(test: GatewayTestCase) -> None:
    test.direct(
        "drop table if exists guard_t; "
        "create table guard_t (id int primary key, v text); "
        "insert into guard_t select i, 'row ' || i from generate_series(1, 10) i; "
        "alter table guard_t owner to gw_scram"
    )


#: guard_t's rows as text, and what _guard_table put there
GUARD_ROWS = "select string_agg(t::text, ',' order by id) from guard_t t"
GUARD_CONTENT = ",".join(f'({i},"row {i}")' for i in range(1, 11))
GUARD_VERSIONS = (
    "select string_agg(format('%s %s %s', id, ctid, xmin), ',' order by id)"
    " from guard_t"
)


class GuardrailTests(GatewayTestCase):
    """
    Dangerous statements in many spellings, each blocked before it reaches
    PostgreSQL.  The target role owns the table, so anything let through
    would have worked.
    """

    def make_gateway(self, base: str) -> Gateway:
        return Gateway(base, self.cluster, extra_config=GUARD_POLICY)

    def setUp(self) -> None:
        super().setUp()
        _guard_table(self)
        self.versions = self.direct(GUARD_VERSIONS)

    def agent(self) -> str:
        return self.gateway.token(subject="agent-7", groups=("agents",))

    def assert_intact(self, spelling: str) -> None:
        # Every column of every row, as PostgreSQL prints the row, and each
        # row's version (ctid, xmin): an UPDATE that wrote the same value
        # back still shows.
        self.assertEqual(
            self.direct(GUARD_ROWS),
            GUARD_CONTENT,
            f"guard_t changed after {spelling!r}",
        )
        self.assertEqual(
            self.direct(GUARD_VERSIONS),
            self.versions,
            f"guard_t rows rewritten by {spelling!r}",
        )
        self.assertEqual(
            self.direct("select has_table_privilege('public', 'guard_t', 'select')"),
            "f",
            f"privileges changed after {spelling!r}",
        )

    def assert_refused_psql(self, spelling: str, *commands: str) -> str:
        args = ["-v", "VERBOSITY=verbose"]
        for command in commands or (spelling,):
            args += ["-c", command]
        result = self.gateway.psql(token=self.agent(), args=tuple(args))
        self.assertNotEqual(result.returncode, 0, spelling)
        self.assertIn("42501", result.stderr, spelling)
        self.assertIn("gatehouse policy rule", result.stderr, spelling)
        self.assert_intact(spelling)
        return result.stderr

    SIMPLE_SPELLINGS = [
        "DROP TABLE guard_t",
        "drop table guard_t",
        "DrOp TaBlE GUARD_T",
        "DROP/**/TABLE/**/guard_t",
        "DROP -- a comment\n TABLE guard_t",
        "/* leading comment */ DROP TABLE guard_t",
        'DROP TABLE "guard_t"',
        'DROP TABLE "public"."guard_t"',
        "DROP\n\t  TABLE\n\n guard_t  ",
        'DROP TABLE U&"guard\\005ft"',
        "DROP TABLE IF EXISTS guard_t CASCADE",
        "SELECT 1; DROP TABLE guard_t",
        "BEGIN; DROP TABLE guard_t; COMMIT",
        "TRUNCATE guard_t",
        "truncate table only public.guard_t",
        "DELETE FROM guard_t",
        "delete from guard_t /* where id = 1 */",
        "UPDATE guard_t SET v = 'gone'",
        "WITH gone AS (DELETE FROM guard_t RETURNING *) SELECT count(*) FROM gone",
        "EXPLAIN ANALYZE DELETE FROM guard_t",
        "EXPLAIN (ANALYZE, COSTS OFF) UPDATE guard_t SET v = NULL",
        "GRANT SELECT ON guard_t TO PUBLIC",
        "PREPARE wipe AS DELETE FROM guard_t",
    ]

    def test_simple_protocol_spellings(self) -> None:
        """psql sends each as a simple Query; every one is refused."""
        for spelling in self.SIMPLE_SPELLINGS:
            self.assert_refused_psql(spelling)
        self.assertGreaterEqual(len(self.SIMPLE_SPELLINGS), 20)

    def test_copy_to_program(self) -> None:
        """COPY ... TO PROGRAM never runs its program."""
        marker = os.path.join(tempfile.mkdtemp(), "pwned")
        self.assert_refused_psql("copy", f"COPY (SELECT 1) TO PROGRAM 'touch {marker}'")
        self.assertFalse(os.path.exists(marker))

    def test_inside_transaction_block(self) -> None:
        """
        In a transaction, a refused statement fails the transaction as
        PostgreSQL would: the rest of it is refused, and nothing commits.
        """
        with psycopg.connect(
            self.gateway.conninfo(), password=self.agent(), autocommit=True
        ) as conn:
            conn.execute("BEGIN")
            conn.execute("INSERT INTO guard_t VALUES (100, 'in tx')")
            with self.assertRaises(psycopg.errors.InsufficientPrivilege) as e:
                conn.execute("DROP TABLE guard_t")
            self.assertIn("no-drop", str(e.exception))
            with self.assertRaises(psycopg.errors.InFailedSqlTransaction):
                conn.execute("SELECT 1")
            conn.execute("ROLLBACK")
            # The session goes on.
            self.assertEqual(conn.execute("SELECT 41 + 1").fetchone(), (42,))
        self.assert_intact("DROP inside a transaction")

    def test_long_statements(self) -> None:
        """
        Statements too long to parse on the reactor are classified in a
        thread, the client's input held meanwhile: a long allowed one runs,
        a long refused one is refused, in both protocols, and what the
        client pipelined behind them is answered in order.
        """
        pad = "/* " + "padding " * 4000 + "*/"
        count = self.direct("select count(*) from guard_t")
        with psycopg.connect(
            self.gateway.conninfo(), password=self.agent(), autocommit=True
        ) as conn:
            got = conn.execute(f"SELECT count(*) FROM guard_t {pad}").fetchone()
            self.assertEqual(got, (int(count),))
            got = conn.execute(
                f"SELECT count(*) FROM guard_t WHERE id > %s {pad}", [0]
            ).fetchone()
            self.assertEqual(got, (int(count),))
            with self.assertRaises(psycopg.errors.InsufficientPrivilege):
                conn.execute(f"DELETE FROM guard_t {pad}")
            with self.assertRaises(psycopg.errors.InsufficientPrivilege):
                conn.execute(f"DROP TABLE guard_t {pad}", prepare=True)
            with conn.pipeline():
                first = conn.execute(f"SELECT 1 {pad}")
                second = conn.execute("SELECT 2")
                third = conn.execute(f"SELECT 3 {pad}")
            self.assertEqual(
                [c.fetchone() for c in (first, second, third)], [(1,), (2,), (3,)]
            )
        self.assert_intact("long statements")

    def test_long_statement_after_encoding_change(self) -> None:
        """
        A long statement pipelined behind SET client_encoding is decided
        on the text PostgreSQL will read, every statement of it (it was
        classified in the old encoding while the SET ran).
        """
        values = ",".join(str(i) for i in range(20000))
        long_query = f"SELECT 'é' WHERE 1 IN ({values}); DROP TABLE guard_t"
        client = RawClient(self.gateway.port, self.gateway.ca_cert)
        try:
            client.login(self.agent())
            client.send(
                codec.Query("SET client_encoding TO 'LATIN1'").encode()
                + codec.Query(long_query).encode()
            )
            got = b""
            ready = codec.ReadyForQuery("I").encode()
            while got.count(ready) < 2:
                chunk = client.sock.recv(65536)
                if not chunk:
                    break
                got += chunk
        finally:
            client.close()
        self.assertIn(b"42501", got)
        self.assert_intact("long statement after SET client_encoding")

    def test_extended_protocol_and_prepared(self) -> None:
        """
        psycopg's extended protocol, server-side prepared statements and a
        pipeline: the Parse is refused, the batch fails to its Sync.
        """
        with psycopg.connect(
            self.gateway.conninfo(), password=self.agent(), autocommit=True
        ) as conn:
            for statement in [
                "DROP TABLE guard_t",
                "DELETE FROM guard_t",
                "TRUNCATE guard_t",
            ]:
                with self.assertRaises(psycopg.errors.InsufficientPrivilege):
                    conn.execute(statement, prepare=True)
                self.assert_intact(f"extended {statement}")
            with self.assertRaises(psycopg.errors.InsufficientPrivilege):
                conn.execute(
                    pgsql.SQL("UPDATE {} SET v = %s").format(
                        pgsql.Identifier("guard_t")
                    ),
                    ["x"],
                )
            # Pipeline: an allowed insert, then the refused statement, in one
            # batch up to Sync; the insert is rolled back with the batch.
            with self.assertRaises(psycopg.errors.InsufficientPrivilege):
                with conn.pipeline():
                    conn.execute("INSERT INTO guard_t VALUES (%s, %s)", [200, "p"])
                    conn.execute("DROP TABLE guard_t")
            self.assertEqual(conn.execute("SELECT 1").fetchone(), (1,))
        self.assert_intact("pipelined DROP")

    def test_sql_prepare_then_execute(self) -> None:
        """An allowed PREPARE whose EXECUTE comes later still runs only it."""
        out = self.psql_ok(
            "PREPARE one(int) AS DELETE FROM guard_t WHERE id = $1;EXECUTE one(1000)",
            token=self.agent(),
        )
        self.assertIn("DELETE 0", out)
        self.assert_refused_psql("PREPARE wipe AS DELETE FROM guard_t")

    def test_function_call(self) -> None:
        """pg_terminate_backend is refused wherever it is called."""
        self.assert_refused_psql(
            "kill",
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE pid <> pg_backend_pid()",
        )

    def test_unparseable_is_not_allowed(self) -> None:
        self.assert_refused_psql("junk", "DROPP TABLE guard_t")

    def read_until_ready(self, client: RawClient) -> bytes:
        return read_until_ready(client)

    def test_fast_path_function_call(self) -> None:
        """
        A FunctionCall message names its function by OID only: opaque, so
        refused here (policy.opaque: deny), and the session goes on.
        """
        client = RawClient(self.gateway.port, self.gateway.ca_cert)
        try:
            client.login(self.agent())
            oid = int(self.direct("select 'pg_terminate_backend'::regproc::oid"))
            client.send(codec.FunctionCall(oid, (0,), (b"1",), 0).encode())
            error = error_of(self.read_until_ready(client))
            self.assertEqual(error.sqlstate, "42501")
            client.send(codec.Query("SELECT 'after'").encode())
            self.assertIn(b"after", self.read_until_ready(client))
        finally:
            client.close()

    def test_standard_conforming_strings_off_refuses_backslashes(self) -> None:
        """
        With backslashes escaping quotes the policy would not read strings
        as the server does: a statement with a backslash is refused while
        standard_conforming_strings is off, and the session goes on (it
        used to end the session).
        """
        self.direct(
            "create or replace function guard_scs_off() returns text "
            "language sql as "
            "$$ select set_config('standard_conforming_strings', 'off', false) $$"
        )
        with psycopg.connect(
            self.gateway.conninfo(), password=self.agent(), autocommit=True
        ) as conn:
            # Spelled directly it is a built-in protection's refusal ...
            with self.assertRaises(psycopg.errors.InsufficientPrivilege):
                conn.execute("SET standard_conforming_strings = off")
            # ... but a function the gateway cannot see into still flips it.
            conn.execute("SELECT guard_scs_off()")
            with self.assertRaises(psycopg.errors.FeatureNotSupported) as caught:
                conn.execute("SELECT 'x\\'' ; DROP TABLE guard_t; --'")
            self.assertIn("standard_conforming_strings", str(caught.exception))
            self.assertEqual(
                conn.execute("SELECT 'still-going'").fetchone(), ("still-going",)
            )
        self.assert_intact("standard_conforming_strings off")

    def test_dba_control(self) -> None:
        """
        The same statement from a dba goes through: the guard, not the
        database, is what refused the agents.
        """
        _guard_table(self)
        self.psql_ok("DELETE FROM guard_t WHERE id = 10", token=self.gateway.token())
        self.assertEqual(self.direct("select count(*) from guard_t"), "9")

    def test_refusals_recorded_and_indexed(self) -> None:
        """The decision, the rule and the statement are in the recording."""
        start = time.time()
        self.assert_refused_psql("DROP TABLE guard_t")
        row = self.latest_session(start)
        events = [
            json.loads(r.payload)
            for r in read_records(row.directory)
            if r.type == RecordType.EVENT
        ]
        decision = [e for e in events if e.get("event") == "decision"]
        self.assertEqual(decision[0]["rule"], "no-drop")
        self.assertEqual(decision[0]["action"], "deny")
        self.assertIn("DROP TABLE guard_t", decision[0]["commands"][0]["text"])
        commands = commands_for(
            self.gateway.path("recordings", "index.sqlite3"), row.id
        )
        self.assertIn(("DropStmt", "deny"), [(c.kind, c.decision) for c in commands])
        self.transcript(row)

    def test_refusals_of_one_shape_recorded_as_sent(self) -> None:
        """
        Statements that differ only in constants share one classification
        and decision, yet each refusal is recorded and indexed with the
        client's own text.
        """
        start = time.time()
        result = self.gateway.psql(
            token=self.agent(),
            args=(
                "-v",
                "ON_ERROR_STOP=0",
                "-c",
                "SELECT pg_terminate_backend(99991)",
                "-c",
                "SELECT pg_terminate_backend(99992)",
            ),
        )
        self.assertEqual(result.stderr.count('rule "no-kill"'), 2, result.stderr)
        row = self.latest_session(start)
        texts = [
            json.loads(r.payload)["commands"][0]["text"]
            for r in read_records(row.directory)
            if r.type == RecordType.EVENT
            and json.loads(r.payload).get("event") == "decision"
        ]
        self.assertEqual(
            texts,
            [
                "SELECT pg_terminate_backend(99991)",
                "SELECT pg_terminate_backend(99992)",
            ],
        )
        index = self.gateway.path("recordings", "index.sqlite3")
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            denied = [
                c.text for c in commands_for(index, row.id) if c.decision == "deny"
            ]
            if len(denied) == 2:
                break
            time.sleep(0.1)
        self.assertEqual(sorted(denied), sorted(texts))


APPROVAL_POLICY = {
    "policy": {
        "review": {"approvers": ["approvers"], "timeout": "60s"},
        "rules": [
            {
                "name": "drop-quick",
                "kind": ["DropStmt"],
                "object": ["appr_quick*"],
                "action": "review",
                "timeout": "2s",
            },
            {
                "name": "drop-two",
                "kind": ["DropStmt"],
                "object": ["appr_two*"],
                "action": "review",
                "approvals": 2,
            },
            {
                "name": "drop-review",
                "kind": ["DropStmt"],
                "action": "review",
                "message": "dropping needs a second pair of eyes",
            },
        ],
    }
}


class _Waiting:
    """A psql run in the background: it blocks on an approval."""

    def __init__(self, gateway: Gateway, sql: str, token: str):
        self.result: subprocess.CompletedProcess | None = None
        self._thread = threading.Thread(
            target=self._run, args=(gateway, sql, token), daemon=True
        )
        self._thread.start()

    def _run(self, gateway: Gateway, sql: str, token: str) -> None:
        self.result = gateway.psql(
            sql, token=token, args=("-v", "VERBOSITY=verbose"), timeout=90
        )

    def wait(self, timeout: float = 60) -> subprocess.CompletedProcess:
        self._thread.join(timeout)
        assert self.result is not None, "psql did not finish"
        return self.result

    @property
    def done(self) -> bool:
        return not self._thread.is_alive()


class ApprovalTests(GatewayTestCase):
    """A DROP TABLE pauses inside the live session until people decide."""

    def make_gateway(self, base: str) -> Gateway:
        return Gateway(base, self.cluster, extra_config=APPROVAL_POLICY, admin=True)

    def agent(self, subject: str = "agent-7", *groups: str) -> str:
        return self.gateway.token(subject=subject, groups=("agents", *groups))

    def approver(self, subject: str = "bob") -> str:
        return self.gateway.token(subject=subject, groups=("approvers",))

    def cli(self, *args: str, token: str) -> subprocess.CompletedProcess:
        env = dict(os.environ)
        env["GATEHOUSE_TOKEN"] = token
        env["GATEHOUSE_ADMIN_URL"] = self.gateway.admin_url
        return subprocess.run(
            [sys.executable, "-m", "gatehouse", "approvals", *args],
            capture_output=True,
            text=True,
            env=env,
            timeout=30,
        )

    def make_table(self, name: str) -> None:
        self.direct(
            f"drop table if exists {name}; create table {name} (id int); "
            f"alter table {name} owner to gw_scram"
        )

    def exists(self, name: str) -> bool:
        return self.direct(f"select to_regclass('public.{name}') is not null") == "t"

    def pending_for(self, table: str, timeout: float = 20) -> dict:
        """The pending approval whose statement names C{table}."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            listed = self.cli("list", "--json", token=self.approver())
            self.assertEqual(listed.returncode, 0, listed.stderr)
            for request in json.loads(listed.stdout)["approvals"]:
                texts = " ".join(c["text"] for c in request["commands"])
                if table in texts and request["state"] == "pending":
                    return request
            time.sleep(0.1)
        self.fail(f"no pending approval for {table}:\n{self.gateway.log()[-3000:]}")

    def events(self, directory: str) -> list[dict]:
        return [
            json.loads(r.payload)
            for r in read_records(directory)
            if r.type == RecordType.EVENT
        ]

    def test_approved(self) -> None:
        """
        The client sees the notice, another identity approves with the
        CLI, the table is dropped and the client sees DROP TABLE.  The
        recording and the index hold the request, decision and approver.
        """
        self.make_table("appr_ok")
        start = time.time()
        waiting = _Waiting(self.gateway, "DROP TABLE appr_ok", self.agent())
        request = self.pending_for("appr_ok")
        time.sleep(0.5)
        self.assertFalse(waiting.done, "psql finished before the approval")
        self.assertTrue(self.exists("appr_ok"), "dropped before approval")
        shown = self.cli("show", request["id"], token=self.approver())
        self.assertEqual(shown.returncode, 0, shown.stderr)
        self.assertIn("DROP TABLE appr_ok", shown.stdout)
        approved = self.cli(
            "approve", request["id"], "-m", "ticket OPS-1", token=self.approver()
        )
        self.assertEqual(approved.returncode, 0, approved.stderr)
        result = waiting.wait()
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertIn("DROP TABLE", result.stdout)
        self.assertIn(request["id"], result.stderr)  # the notice
        self.assertIn("gatehouse approvals approve", result.stderr)
        self.assertFalse(self.exists("appr_ok"))

        row = self.latest_session(start)
        events = self.events(row.directory)
        names = [e["event"] for e in events]
        self.assertIn("approval-requested", names)
        vote = next(e for e in events if e["event"] == "approval-approved")
        self.assertEqual((vote["approver"], vote["comment"]), ("bob", "ticket OPS-1"))
        decided = next(e for e in events if e["event"] == "approval-decided")
        self.assertEqual(decided["state"], "approved")
        self.transcript(row)
        index = self.gateway.path("recordings", "index.sqlite3")
        recorded = approvals_for(index, row.id)
        self.assertEqual(recorded[0]["state"], "approved")
        self.assertEqual(recorded[0]["votes"][0]["subject"], "bob")

    def test_denied(self) -> None:
        self.make_table("appr_no")
        waiting = _Waiting(self.gateway, "DROP TABLE appr_no", self.agent())
        request = self.pending_for("appr_no")
        denied = self.cli(
            "deny", request["id"], "-m", "not today", token=self.approver()
        )
        self.assertEqual(denied.returncode, 0, denied.stderr)
        result = waiting.wait()
        self.assertNotEqual(result.returncode, 0)
        self.assertIn("42501", result.stderr)
        self.assertIn("not today", result.stderr)
        self.assertTrue(self.exists("appr_no"))

    def test_timed_out(self) -> None:
        self.make_table("appr_quick")
        waiting = _Waiting(self.gateway, "DROP TABLE appr_quick", self.agent())
        result = waiting.wait()
        self.assertNotEqual(result.returncode, 0)
        self.assertIn("42501", result.stderr)
        self.assertIn("timed out", result.stderr)
        self.assertTrue(self.exists("appr_quick"))

    def test_self_approval_refused(self) -> None:
        self.make_table("appr_self")
        own = self.agent("dave", "approvers")
        waiting = _Waiting(self.gateway, "DROP TABLE appr_self", own)
        request = self.pending_for("appr_self")
        refused = self.cli("approve", request["id"], token=own)
        self.assertEqual(refused.returncode, 1)
        self.assertIn("own", refused.stderr)
        self.assertTrue(self.exists("appr_self"))
        self.assertFalse(waiting.done)
        self.cli("deny", request["id"], token=self.approver())
        waiting.wait()
        self.assertTrue(self.exists("appr_self"))

    def test_outside_group_refused(self) -> None:
        self.make_table("appr_grp")
        waiting = _Waiting(self.gateway, "DROP TABLE appr_grp", self.agent())
        request = self.pending_for("appr_grp")
        refused = self.cli("approve", request["id"], token=self.agent("mallory"))
        self.assertEqual(refused.returncode, 1)
        self.assertIn("approvers", refused.stderr)
        self.assertFalse(waiting.done)
        self.cli("deny", request["id"], token=self.approver())
        waiting.wait()
        self.assertTrue(self.exists("appr_grp"))

    def test_two_approvals(self) -> None:
        self.make_table("appr_two")
        waiting = _Waiting(self.gateway, "DROP TABLE appr_two", self.agent())
        request = self.pending_for("appr_two")
        first = self.cli("approve", request["id"], token=self.approver("bob"))
        self.assertEqual(first.returncode, 0, first.stderr)
        again = self.cli("approve", request["id"], token=self.approver("bob"))
        self.assertEqual(again.returncode, 1)
        time.sleep(0.5)
        self.assertFalse(waiting.done)
        self.assertTrue(self.exists("appr_two"))
        second = self.cli("approve", request["id"], token=self.approver("carol"))
        self.assertEqual(second.returncode, 0, second.stderr)
        result = waiting.wait()
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertFalse(self.exists("appr_two"))

    def test_client_gone_while_pending(self) -> None:
        """
        A client that hangs up while its statement waits: the request is
        cancelled, the recording says so, and the statement never runs.
        """
        self.make_table("appr_gone")
        start = time.time()
        client = RawClient(self.gateway.port, self.gateway.ca_cert)
        try:
            client.login(self.agent())
            client.send(codec.Query("DROP TABLE appr_gone").encode())
            request = self.pending_for("appr_gone")
        finally:
            client.close()
        row = self.latest_session(start)
        decided = [
            e for e in self.events(row.directory) if e["event"] == "approval-decided"
        ]
        self.assertEqual(
            [(e["approval_id"], e["state"]) for e in decided],
            [(request["id"], "cancelled")],
        )
        self.assertTrue(self.exists("appr_gone"))

    def test_daemon_stopped_while_pending(self) -> None:
        """Stopping the gateway denies what waits: the statement never runs."""
        gateway = Gateway(
            tempfile.mkdtemp(prefix="gatehouse-e2e-stop-"),
            self.cluster,
            extra_config=APPROVAL_POLICY,
            admin=True,
        )
        gateway.start()
        saved, self.gateway = self.gateway, gateway
        try:
            self.make_table("appr_stop")
            waiting = _Waiting(gateway, "DROP TABLE appr_stop", self.agent())
            self.pending_for("appr_stop")
            gateway.stop()
            result = waiting.wait()
            self.assertNotEqual(result.returncode, 0)
            self.assertIn("gateway", result.stderr)
            self.assertTrue(self.exists("appr_stop"))
            time.sleep(0.5)
            self.assertTrue(self.exists("appr_stop"))
        finally:
            self.gateway = saved
            gateway.stop()
            shutil.rmtree(gateway.directory, ignore_errors=True)


MASKING_CONFIG = {
    "masking": [
        {
            "name": "pii",
            "detect": ["card", "email"],
            "columns": ["ssn"],
            "relation_columns": ["public.customers.secret_note"],
        }
    ]
}

CUSTOMERS = [
    (1, "Ada", "4111 1111 1111 1111", "ada@example.com", "123-45-6789", "likes tea"),
    (
        2,
        "Alan",
        "5500-0000-0000-0004",
        "alan.turing@bletchley.org",
        "987-65-4321",
        "vault code 1912",
    ),
]
RAW = [
    "4111 1111 1111 1111",
    "5500-0000-0000-0004",
    "ada@example.com",
    "alan.turing@bletchley.org",
    "123-45-6789",
    "987-65-4321",
    "likes tea",
    "vault code 1912",
]


def _make_customers(case: GatewayTestCase) -> None:
    """The customers table of L{CUSTOMERS}, owned by the gateway's role."""
    values = ", ".join(
        "(" + ", ".join(f"'{v}'" if isinstance(v, str) else str(v) for v in row) + ")"
        for row in CUSTOMERS
    )
    case.direct(
        "drop table if exists customers; create table customers "
        "(id int, name text, card text, email text, ssn text, secret_note text);"
        f"insert into customers values {values};"
        "alter table customers owner to gw_scram"
    )


class MaskingTests(GatewayTestCase):
    """Sensitive values never reach the client, nor the recording."""

    def make_gateway(self, base: str) -> Gateway:
        return Gateway(base, self.cluster, extra_config=MASKING_CONFIG)

    def setUp(self) -> None:
        super().setUp()
        _make_customers(self)

    def assert_clean(self, output: str, how: str) -> None:
        for raw in RAW:
            self.assertNotIn(raw, output, f"{raw!r} reached the client via {how}")
        self.assertIn("Ada", output, how)
        self.assertIn("Alan", output, how)

    def assert_recording_clean(self, start: float) -> None:
        row = self.latest_session(start)
        blob = b"".join(r.payload for r in read_records(row.directory))
        for raw in RAW:
            self.assertNotIn(raw.encode(), blob)
        self.assertIn(b"Ada", blob)
        self.transcript(row)
        deadline = time.monotonic() + 10
        index = self.gateway.path("recordings", "index.sqlite3")
        while time.monotonic() < deadline:
            session = get_session(index, row.id)
            if session.masked_values:
                break
            time.sleep(0.1)
        self.assertGreaterEqual(session.masked_values, 1)

    def test_psql_select(self) -> None:
        start = time.time()
        out = self.psql_ok("SELECT * FROM customers ORDER BY id")
        self.assert_clean(out, "psql")
        self.assertIn("1111", out)  # the last four digits stay
        self.assert_recording_clean(start)

    def test_alias_does_not_dodge_relation_rule(self) -> None:
        out = self.psql_ok("SELECT name, secret_note AS x FROM customers ORDER BY id")
        self.assertNotIn("likes tea", out)
        self.assertIn("Ada", out)

    def test_copy_to_stdout(self) -> None:
        start = time.time()
        out = self.psql_ok(args=("-c", "\\copy customers to stdout"))
        self.assert_clean(out, "\\copy text")
        self.assertEqual(len(out.splitlines()), 2)
        self.assertEqual(len(out.splitlines()[0].split("\t")), 6)
        self.assert_recording_clean(start)
        csv_out = self.psql_ok(args=("-c", "\\copy customers to stdout csv header"))
        self.assert_clean(csv_out, "\\copy csv")

    def test_decoy_describe(self) -> None:
        """
        Rows are masked by their own columns, not by whatever statement the
        client last described.
        """
        client = RawClient(self.gateway.port, self.gateway.ca_cert)
        try:
            client.login(self.gateway.token())
            client.send(
                codec.Parse(
                    "s1", "SELECT name, ssn, secret_note FROM customers"
                ).encode()
                + codec.Parse("s2", "SELECT 'x' AS a, 'y' AS b, 'z' AS c").encode()
                + codec.Describe("S", "s2").encode()
                + codec.Bind("", "s1").encode()
                + codec.Execute("", 0).encode()
                + codec.Sync().encode()
            )
            got = read_until_ready(client)
        finally:
            client.close()
        self.assertIn(b"Ada", got)
        for raw in ("123-45-6789", "likes tea", "vault code 1912"):
            self.assertNotIn(raw.encode(), got)
        # The client's own Describe is answered; the gateway's is not.
        kinds = [k for k, _ in codec.FrameReader.backend().feed_messages(got)]
        self.assertEqual(kinds.count(codec.BackendType.ROW_DESCRIPTION), 1)

    def exchange(self, *messages: object) -> bytes:
        client = RawClient(self.gateway.port, self.gateway.ca_cert)
        try:
            client.login(self.gateway.token())
            client.send(b"".join(m.encode() for m in messages))
            return read_until_ready(client)
        finally:
            client.close()

    def assert_rows_masked(self, got: bytes, descriptions: int) -> None:
        self.assertIn(b"Ada", got)
        for raw in ("123-45-6789", "likes tea", "vault code 1912"):
            self.assertNotIn(raw.encode(), got)
        kinds = [k for k, _ in codec.FrameReader.backend().feed_messages(got)]
        self.assertEqual(
            kinds.count(codec.BackendType.ROW_DESCRIPTION), descriptions, kinds
        )

    def test_decoy_portal_describe(self) -> None:
        """
        The client describing another portal just before an Execute does
        not make the gateway skip describing the portal executed.
        """
        got = self.exchange(
            codec.Parse("s1", "SELECT name, ssn, secret_note FROM customers"),
            codec.Parse("s2", "SELECT 'x' AS a, 'y' AS b, 'z' AS c"),
            codec.Bind("p1", "s1"),
            codec.Bind("p2", "s2"),
            codec.Describe("P", "p2"),
            codec.Execute("p1", 0),
            codec.Sync(),
        )
        self.assert_rows_masked(got, 1)

    def test_described_portal_resumed(self) -> None:
        """
        libpq's Describe-then-Execute is masked by the client's own
        Describe; a second Execute of the portal (after PortalSuspended)
        is described again by the gateway, whose answer is kept.
        """
        got = self.exchange(
            codec.Parse("s1", "SELECT name, ssn, secret_note FROM customers"),
            codec.Bind("", "s1"),
            codec.Describe("P", ""),
            codec.Execute("", 1),
            codec.Execute("", 0),
            codec.Sync(),
        )
        self.assert_rows_masked(got, 1)
        kinds = [k for k, _ in codec.FrameReader.backend().feed_messages(got)]
        self.assertEqual(kinds.count(codec.BackendType.DATA_ROW), len(CUSTOMERS))
        self.assertIn(codec.BackendType.PORTAL_SUSPENDED, kinds)

    def test_psycopg_binary(self) -> None:
        start = time.time()
        with psycopg.connect(
            self.gateway.conninfo(), password=self.gateway.token()
        ) as conn:
            with conn.cursor(binary=True) as cur:
                cur.execute("SELECT * FROM customers ORDER BY id")
                rows = cur.fetchall()
        flat = repr(rows)
        self.assert_clean(flat, "psycopg binary")
        self.assertEqual(rows[0][0], 1)
        self.assert_recording_clean(start)


REVIEWED_COPY_CONFIG = {
    **MASKING_CONFIG,
    "policy": {
        "review": {"approvers": ["approvers"], "timeout": "60s"},
        "rules": [{"name": "copy-review", "kind": ["CopyStmt"], "action": "review"}],
    },
}


class ReviewedCopyMaskingTests(GatewayTestCase):
    """
    A statement held for approval is checked for masking once approved,
    as an allowed one is: approvers cannot wave through a result the
    gateway cannot mask.
    """

    agent = ApprovalTests.agent
    approver = ApprovalTests.approver
    cli = ApprovalTests.cli
    pending_for = ApprovalTests.pending_for

    def make_gateway(self, base: str) -> Gateway:
        return Gateway(
            base, self.cluster, extra_config=REVIEWED_COPY_CONFIG, admin=True
        )

    assert_recording_clean = MaskingTests.assert_recording_clean

    def setUp(self) -> None:
        super().setUp()
        _make_customers(self)

    def test_approved_binary_copy_refused(self) -> None:
        """
        An approved binary COPY of a masked table is still refused: no
        value reaches the client or the recording.
        """
        start = time.time()
        waiting = _Waiting(
            self.gateway, "COPY customers TO STDOUT (FORMAT binary)", self.agent()
        )
        request = self.pending_for("customers")
        approved = self.cli("approve", request["id"], token=self.approver())
        self.assertEqual(approved.returncode, 0, approved.stderr)
        result = waiting.wait()
        output = result.stdout + result.stderr
        self.assertIn("binary COPY output cannot be masked", output)
        for raw in RAW:
            self.assertNotIn(raw, output)
        row = self.latest_session(start)
        blob = b"".join(r.payload for r in read_records(row.directory))
        self.assertIn(b"approval-approved", blob)
        for raw in RAW:
            self.assertNotIn(raw.encode(), blob)

    def test_approved_text_copy_masked(self) -> None:
        """An approved text COPY of a masked table arrives masked."""
        start = time.time()
        waiting = _Waiting(self.gateway, "COPY customers TO STDOUT", self.agent())
        request = self.pending_for("customers")
        approved = self.cli("approve", request["id"], token=self.approver())
        self.assertEqual(approved.returncode, 0, approved.stderr)
        result = waiting.wait()
        self.assertEqual(result.returncode, 0, result.stderr)
        for raw in RAW:
            self.assertNotIn(raw, result.stdout)
        self.assertIn("Ada", result.stdout)
        self.assertIn("Alan", result.stdout)
        self.assert_recording_clean(start)
