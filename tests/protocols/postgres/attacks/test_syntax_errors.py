"""
SQL that does not parse (issue 9, class 7): the client gets PostgreSQL's
own answer (SQLSTATE, message, position: compared with what PostgreSQL
itself says to the same text over a direct connection), nobody is asked
to approve anything, the session goes on, and a transaction fails as it
would have.  Expressions deeper than the classifier's recursion limit but
accepted by PostgreSQL run; deeper ones get PostgreSQL's 54001.
"""

from __future__ import annotations

import subprocess
import time

import psycopg

from gatehouse.recording.index import approvals_for, commands_for
from tests.fixtures.postgres import clean_env
from tests.protocols.postgres.attacks.corpus import Attack, add_cases
from tests.protocols.postgres.attacks.guard import GuardedTestCase, Outcome


def _sum(terms: int) -> str:
    return "SELECT " + "+".join(["1"] * terms)


CASES = [
    Attack("typo_keyword", "selec 1"),
    Attack("end_of_input", "SELECT 1 +"),
    Attack("near_semicolon", "SELECT 1 + ;"),
    Attack("non_ascii_before_error", "select 'ééé', )", "positions count characters"),
    Attack("emoji_before_error", "select '😀😀' frm guard_t"),
    Attack("unterminated_dollar_quote", "select $$abc"),
    Attack("unterminated_quote", "select 'abc"),
    Attack("second_statement_typo", "select 1; selec 2", expect="simple"),
    Attack("multi_line", "select 1\nfrom guard_t\nwher id = 1"),
    Attack("typo_drop_table", "DROP TABEL guard_t"),
    Attack("delete_without_from", "DELETE guard_t"),
    Attack("invalid_unicode_escape", "select U&'\\zzzz'"),
    Attack("unicode_surrogate", "select U&'\\d800'"),
    Attack("trailing_junk", "select 1abc"),
    Attack("empty_identifier", 'select ""'),
    Attack("typo_after_comment", "/* ok */ -- fine\nUPDTE guard_t SET v = 'x'"),
    Attack("deep_20000_terms", _sum(20000), "PostgreSQL's parser refuses: 54001"),
    Attack("deep_5000_terms", _sum(5000), "parsed; PostgreSQL's planner refuses"),
    Attack("deep_600_terms", _sum(600), "classified and run: 600"),
    Attack("deep_3000_terms", _sum(3000), "classified and run: 3000"),
]


def _answer(outcome: Outcome) -> tuple:
    if outcome.error is None:
        return ("ok", outcome.rows)
    diag = outcome.error.diag
    return (diag.sqlstate, diag.message_primary, diag.statement_position)


class _Checks:
    """Compare the gateway's answer with PostgreSQL's own."""

    def direct_answer(self, sql: str, extended: bool) -> tuple:
        conn = psycopg.connect(
            self.cluster.socket_dsn("gw_scram", "app"),
            autocommit=True,
            cursor_factory=psycopg.ClientCursor,
        )
        self.addCleanup(conn.close)
        return _answer(self.run_sql(conn, sql, () if extended else None))

    def check(self, attack: Attack, extended: bool) -> None:
        sql = attack.payload
        expected = self.direct_answer(sql, extended)
        conn = self.connect()
        outcome = self.run_sql(conn, sql, () if extended else None)
        self.assertEqual(_answer(outcome), expected, outcome.text)
        self.assertEqual(outcome.notices, [], "nobody is asked to approve a typo")
        self.assert_unchanged(attack, outcome)
        self.assertEqual(self.run_sql(conn, "select 1").rows, [(1,)])

    def run_attack(self, attack: Attack) -> None:
        self.check(attack, extended=False)

    def run_extended(self, attack: Attack) -> None:
        if attack.expect == "simple":
            return  # several statements: the simple protocol only
        self.check(attack, extended=True)


class SyntaxErrorTests(_Checks, GuardedTestCase):
    """What PostgreSQL says to text it cannot parse, through the gateway."""

    def test_transaction_fails_as_it_would(self) -> None:
        """A typo inside a transaction aborts it, as PostgreSQL does."""
        conn = self.connect()
        self.assertIsNone(self.run_sql(conn, "begin").error)
        self.assertIsNone(
            self.run_sql(conn, "update guard_t set v = 'x' where id = 1").error
        )
        self.assertEqual(self.run_sql(conn, "selec 1").sqlstate, "42601")
        self.assertEqual(self.run_sql(conn, "select 1").sqlstate, "25P02")
        self.assertIsNone(self.run_sql(conn, "rollback").error)
        self.assert_unchanged("transaction", self.run_sql(conn, "select 1"))

    def test_recorded_as_errors_not_approvals(self) -> None:
        """
        The index records each typo with the decision "error"; the session
        has no approval request.
        """
        started = time.time()
        conn = self.connect()
        for typo in ("selec 1", "DROP TABEL guard_t", "SELECT 1 +"):
            self.assertEqual(self.run_sql(conn, typo).sqlstate, "42601")
        conn.close()
        row = self.latest_session(started)
        index = self.gateway.path("recordings", "index.sqlite3")
        self.assertEqual(approvals_for(index, row.id), [])
        decisions = [(c.text, c.decision) for c in commands_for(index, row.id)]
        for typo in ("selec 1", "DROP TABEL guard_t", "SELECT 1 +"):
            self.assertIn((typo, "error"), decisions)

    def test_psql_shows_what_postgresql_shows(self) -> None:
        """psql prints the same error, line and caret as PostgreSQL's."""
        sql = "select 1,\n  2 frm guard_t"
        result = self.gateway.psql(sql, token=self.gateway.token(groups=("agents",)))
        expected = subprocess.run(
            [
                self.cluster.bin("psql"),
                "-X",
                "-v",
                "ON_ERROR_STOP=1",
                "-c",
                sql,
                self.cluster.socket_dsn("gw_scram", "app"),
            ],
            capture_output=True,
            text=True,
            env=clean_env(),
        )
        self.assertEqual(result.returncode, expected.returncode)
        self.assertEqual(result.stderr, expected.stderr)
        self.assertIn("LINE 2:   2 frm guard_t", result.stderr)


class SyntaxErrorsExtended(_Checks, GuardedTestCase):
    """The same through Parse/Bind/Execute."""


add_cases(SyntaxErrorTests, CASES)
add_cases(SyntaxErrorsExtended, CASES, runner="run_extended")
