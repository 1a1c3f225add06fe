"""
Attacks: statement kinds that slip past kind rules (issue 9, class 3).

The policy names categories (destructive, write + no-where, ddl,
privilege), not kinds: every sibling of DROP, DELETE, UPDATE and CREATE
an attacker might reach for is refused, and constant-true WHERE clauses
count as no WHERE.  Judged on the server's state; each case's control
proves it does harm when sent straight to PostgreSQL as the target's role.
"""

from __future__ import annotations

import random

from twisted.trial.unittest import SynchronousTestCase

from gatehouse.protocols.postgres.statements import classify
from tests.fixtures.postgres import shared_cluster
from tests.protocols.postgres.attacks.corpus import Attack, add_cases
from tests.protocols.postgres.attacks.guard import GuardedTestCase

_UPDATE = "update guard_t set v = 'owned' where "

CASES = [
    # -- destructive siblings of DROP ----------------------------------------
    Attack("drop_owned_current_user", "drop owned by current_user"),
    Attack("drop_owned_role_cascade", "drop owned by gw_scram cascade"),
    Attack("drop_schema_cascade", "drop schema guard_s cascade"),
    Attack(
        "alter_table_drop_column",
        "alter table guard_t drop column n",
        "ALTER TABLE that destroys a column",
    ),
    Attack(
        "merge_when_matched_delete",
        "merge into guard_t g using guard_t s on g.id = s.id when matched then delete",
        "MERGE ... DELETE is a DeleteStmt",
    ),
    Attack(
        "merge_on_true_update",
        "merge into guard_t g using (select 1) s on true "
        "when matched then update set v = 'owned'",
        "MERGE ON true updates every row",
    ),
    Attack(
        "merge_on_one_equals_one_update",
        "merge into guard_t g using (values (1)) s(x) on 1 = 1 "
        "when matched then update set v = 'owned'",
    ),
    Attack(
        "upsert_from_table_no_where",
        "insert into guard_t select * from guard_t "
        "on conflict (id) do update set v = 'owned'",
        "INSERT ... SELECT ... ON CONFLICT DO UPDATE over the whole table",
    ),
    Attack(
        "upsert_where_true",
        "insert into guard_t select id, v, n from guard_t where true "
        "on conflict (id) do update set v = 'owned' where true",
    ),
    Attack(
        "cte_merge_delete",
        "with x as (select 1) merge into guard_t g using guard_t s on g.id = s.id "
        "when matched then delete",
    ),
    # -- writes without a real WHERE -------------------------------------------
    Attack("update_where_true", _UPDATE + "true"),
    Attack("update_where_one_equals_one", _UPDATE + "1 = 1"),
    Attack("update_where_strings_equal", _UPDATE + "'a' = 'a'"),
    Attack("update_where_column_equals_itself", _UPDATE + "id = id"),
    Attack("update_where_not_false", _UPDATE + "not false"),
    Attack("update_where_null_or_not_null", _UPDATE + "v is not null or v is null"),
    Attack("update_where_or_true", _UPDATE + "id = 3 or true"),
    Attack("update_where_arithmetic", _UPDATE + "1 + 1 = 2"),
    Attack("update_where_comparison", _UPDATE + "2 > 1"),
    Attack("update_where_exists_select_1", _UPDATE + "exists (select 1)"),
    Attack("update_where_like_percent", _UPDATE + "v like '%'"),
    Attack("update_where_true_is_true", _UPDATE + "true is true"),
    Attack("update_where_cast_true", _UPDATE + "'t'::boolean"),
    Attack("update_where_p_or_not_p", _UPDATE + "id > 5 or not id > 5"),
    Attack("update_where_between_constants", _UPDATE + "2 between 1 and 3"),
    Attack("update_where_scalar_subquery_true", _UPDATE + "(select true)"),
    Attack(
        "update_where_true_extended_protocol",
        (_UPDATE + "1 = 1", ()),
        "Parse/Bind/Execute",
    ),
    Attack(
        "delete_where_true_in_prepare",
        "prepare wipe as update guard_t set v = 'owned' where true; execute wipe",
        "PREPARE wraps the unbounded write",
    ),
    Attack(
        "shape_shared_with_harmless_text",
        _UPDATE.replace("'owned'", "'harmless'") + "1 = 2; " + _UPDATE + "1 = 1",
        "a harmless text of the same shape first, sent on its own: the "
        "second is classified on its own constants, not the cached shape's",
        expect="sequence",
    ),
    # -- DDL siblings ------------------------------------------------------------
    Attack("create_table_as", "create table guard_new as select * from guard_t"),
    Attack("select_into", "select * into guard_new from guard_t"),
    Attack("create_view", "create view guard_v as select * from guard_t"),
    Attack("create_sequence", "create sequence guard_seq"),
    Attack("create_schema", "create schema guard_s2"),
    Attack("create_type", "create type guard_ty as (a int)"),
    Attack("alter_table_set_schema", "alter table guard_t set schema guard_s"),
    Attack(
        "explain_analyze_ctas", "explain analyze create table guard_new2 as select 1"
    ),
    # -- privileges ----------------------------------------------------------------
    Attack("grant_to_public", "grant all on guard_t to public"),
    Attack("alter_owner", "alter table guard_t owner to guard_reader"),
    Attack(
        "alter_default_privileges",
        "alter default privileges grant all on tables to public; "
        "create table guard_new (a int)",
    ),
]


class CategoryAttackTests(GuardedTestCase):
    """Siblings of the kinds the old example rules named, refused."""

    def run_attack(self, attack: Attack) -> None:
        conn = self.connect()
        sql, params = self.fill(attack.payload)
        if attack.expect == "sequence":
            first, second = sql.split("; ")
            self.assertIsNone(self.run_sql(conn, first).error)
            outcome = self.run_sql(conn, second)
            self.assertIn("no-unbounded-writes", str(outcome.error))
        else:
            outcome = self.run_sql(conn, sql, params)
        self.assert_refused(attack, outcome)
        self.assertEqual(self.run_sql(conn, "select 1").rows, [(1,)])


class CategoryControls(GuardedTestCase):
    """Each attack, sent straight to PostgreSQL, does its harm."""


add_cases(CategoryAttackTests, CASES)
add_cases(CategoryControls, CASES, runner="run_control")


# -- the constant-truth evaluator against PostgreSQL's own -------------------


def int_expr(r, d):
    if d <= 0 or r.random() < 0.4:
        c = r.random()
        if c < 0.1:
            return "NULL::int"
        return str(r.randint(-5, 5))
    op = r.choice(["+", "-", "*"])
    return f"({int_expr(r, d - 1)} {op} {int_expr(r, d - 1)})"


def text_expr(r, d):
    if d <= 0 or r.random() < 0.6:
        return r.choice(["'a'", "'b'", "'ab'", "NULL::text"])
    return f"({text_expr(r, d - 1)} || {text_expr(r, d - 1)})"


def bool_expr(r, d):
    if d <= 0 or r.random() < 0.2:
        return r.choice(
            ["true", "false", "NULL::boolean", "'t'::boolean", "'no'::boolean"]
        )
    c = r.randint(0, 9)
    if c == 0:
        return f"NOT {bool_expr(r, d - 1)}"
    if c == 1:
        return f"({bool_expr(r, d - 1)} AND {bool_expr(r, d - 1)})"
    if c == 2:
        return f"({bool_expr(r, d - 1)} OR {bool_expr(r, d - 1)})"
    if c == 3:
        op = r.choice(["=", "<>", "<", ">", "<=", ">="])
        return f"({int_expr(r, d - 1)} {op} {int_expr(r, d - 1)})"
    if c == 4:
        return f"({text_expr(r, d - 1)} {r.choice(['=', '<>'])} {text_expr(r, d - 1)})"
    if c == 5:
        return f"({int_expr(r, d - 1)} IS {r.choice(['', 'NOT '])}NULL)"
    if c == 6:
        test = r.choice(["TRUE", "FALSE", "UNKNOWN"])
        return f"({bool_expr(r, d - 1)} IS {r.choice(['', 'NOT '])}{test})"
    if c == 7:
        low, high = int_expr(r, 0), int_expr(r, 0)
        between = r.choice(["", "NOT "]) + "BETWEEN"
        return f"({int_expr(r, d - 1)} {between} {low} AND {high})"
    if c == 8:
        return f"({int_expr(r, d - 1)} IN ({int_expr(r, 0)}, {int_expr(r, 0)}))"
    return f"(x = x OR {bool_expr(r, d - 1)})"


class ConstantTruthTests(SynchronousTestCase):
    """
    Random constant conditions (integers, text, booleans, NULL, AND, OR,
    NOT, IS [NOT] NULL/TRUE/FALSE/UNKNOWN, BETWEEN, IN, x = x): whatever
    the classifier calls always true, PostgreSQL evaluates to true (it is
    sound), and whatever PostgreSQL evaluates to true, the classifier
    calls always true (it is complete over this grammar).
    """

    def test_agrees_with_postgresql(self) -> None:
        rng = random.Random(9)
        conditions = [bool_expr(rng, rng.randint(1, 4)) for _ in range(400)]
        columns = ", ".join(f"coalesce(({c}) is true, false)" for c in conditions)
        out = shared_cluster().psql(
            f"select {columns} from (values (1)) v(x)", dbname="app"
        )
        truths = [value == "t" for value in out.strip().split("|")]
        self.assertEqual(len(truths), len(conditions))
        for condition, truth in zip(conditions, truths, strict=True):
            (statement,) = classify(f"DELETE FROM t WHERE {condition}")
            self.assertEqual(statement.has_where is False, truth, condition)
