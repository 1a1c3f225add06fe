"""
Tests for L{gatehouse.policy}: rule scope and conditions, evaluation
order, the fallbacks for unparseable and opaque commands, and combining
the decisions of a multi-statement query.
"""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from gatehouse.policy import (
    Command,
    Decision,
    Policy,
    RecordScope,
    Rule,
    combine,
)
from gatehouse.protocols.postgres.commands import CommandCache


def sql(text: str) -> tuple[Command, ...]:
    return CommandCache().classify(text).commands


def decide(policy: Policy, text: str, groups=("agents",), target="app") -> Decision:
    return policy.for_session(groups, target, "postgres").decide_all(sql(text))


GUARDS = Policy(
    rules=(
        Rule(name="dba-anything", action="allow", groups=frozenset({"dba"})),
        Rule(
            name="no-drop",
            action="deny",
            kinds=frozenset({"DropStmt", "TruncateStmt"}),
            message="no dropping",
        ),
        Rule(
            name="no-unbounded-delete",
            action="deny",
            kinds=frozenset({"DeleteStmt", "UpdateStmt"}),
            flags=frozenset({"no-where"}),
        ),
        Rule(
            name="audit-readonly",
            action="deny",
            schemas=frozenset({"audit"}),
            kinds=frozenset({"InsertStmt", "UpdateStmt", "DeleteStmt"}),
        ),
        Rule(
            name="no-kill",
            action="deny",
            functions=("pg_terminate_backend", "pg_cancel_backend"),
        ),
        Rule(
            name="review-alter",
            action="review",
            kinds=frozenset({"AlterTableStmt"}),
            approvers=("dba",),
            approvals=2,
            timeout=60,
        ),
        Rule(name="secrets", action="deny", text=r"\bsecret_[a-z]+\b"),
    ),
)


class RuleTests(SynchronousTestCase):
    """Each condition, and the spellings it must see through."""

    def assertAction(self, text: str, action: str, rule: str | None = None, **kw):
        decision = decide(GUARDS, text, **kw)
        self.assertEqual(decision.action, action, (text, decision))
        if rule is not None:
            self.assertEqual(decision.rule, rule)

    def test_spellings_of_drop(self) -> None:
        for text in [
            "DROP TABLE t",
            "drop table t",
            "DrOp/**/TaBlE/**/t",
            '/* hi */ drop -- x\n table "t"',
            "SELECT 1; DROP TABLE t",
            "BEGIN; DROP TABLE IF EXISTS public.t CASCADE; COMMIT",
            "TRUNCATE ONLY t",
        ]:
            self.assertAction(text, "deny", "no-drop")

    def test_delete_without_where(self) -> None:
        self.assertAction("DELETE FROM t", "deny", "no-unbounded-delete")
        self.assertAction("delete from t /* where id = 1 */", "deny")
        self.assertAction("EXPLAIN ANALYZE DELETE FROM t", "deny")
        self.assertAction(
            "WITH x AS (DELETE FROM t RETURNING *) SELECT * FROM x", "deny"
        )
        self.assertAction("PREPARE p AS UPDATE t SET a = 1", "deny")
        self.assertAction("DELETE FROM public.t WHERE id = 1", "allow")

    def test_schema(self) -> None:
        self.assertAction("INSERT INTO audit.log VALUES (1)", "deny", "audit-readonly")
        self.assertAction('INSERT INTO "audit"."log" VALUES (1)', "deny")
        # Unqualified: the client's search_path decides the schema.
        self.assertAction("INSERT INTO log VALUES (1)", "deny", "audit-readonly")
        self.assertAction("INSERT INTO public.log VALUES (1)", "allow")

    def test_functions(self) -> None:
        self.assertAction("SELECT pg_terminate_backend(42)", "deny", "no-kill")
        self.assertAction(
            "select pg_catalog.pg_cancel_backend(pid) from pg_stat_activity",
            "deny",
        )

    def test_text_regex_on_normalised_text(self) -> None:
        self.assertAction("SELECT secret_sauce FROM t", "deny", "secrets")
        self.assertAction("SELECT /* secret_x */ 1", "allow")

    def test_review(self) -> None:
        decision = decide(GUARDS, "ALTER TABLE t ADD COLUMN c int")
        self.assertEqual(
            (decision.action, decision.approvers, decision.approvals, decision.timeout),
            ("review", ("dba",), 2, 60),
        )

    def test_scope_first_match(self) -> None:
        self.assertAction("DROP TABLE t", "allow", "dba-anything", groups=("dba",))

    def test_target_scope(self) -> None:
        policy = Policy(rules=(Rule(name="prod", action="deny", targets=("prod-*",)),))
        self.assertEqual(decide(policy, "SELECT 1", target="prod-eu").action, "deny")
        self.assertEqual(decide(policy, "SELECT 1", target="dev").action, "allow")


class FallbackTests(SynchronousTestCase):
    """Unparseable and opaque commands are never allowed by a catch-all."""

    def test_unparseable_error_by_default(self) -> None:
        """A typo gets the parser's error by default: nobody is paged."""
        policy = Policy(rules=(Rule(name="all", action="allow"),))
        decision = decide(policy, "DROPP TABLE t")
        self.assertEqual((decision.action, decision.rule), ("error", "unparseable"))
        self.assertFalse(decision.allowed)

    def test_opaque_reviewed_by_default(self) -> None:
        policy = Policy(rules=(Rule(name="all", action="allow"),))
        for text in [
            "DO $$ BEGIN EXECUTE 'DROP TABLE t'; END $$",
            "CREATE FUNCTION f() RETURNS int LANGUAGE sql AS 'SELECT 1'",
        ]:
            self.assertEqual(decide(policy, text).rule, "opaque", text)

    def test_rule_naming_them(self) -> None:
        policy = Policy(
            rules=(
                Rule(name="do-ok", action="allow", flags=frozenset({"opaque"})),
                Rule(name="junk", action="deny", kinds=frozenset({"Unparseable"})),
            )
        )
        self.assertEqual(decide(policy, "DO $$ BEGIN END $$").rule, "do-ok")
        self.assertEqual(decide(policy, "garbage here").rule, "junk")

    def test_nul_byte_unparseable(self) -> None:
        self.assertEqual(
            decide(Policy(), "SELECT 1\0; DROP TABLE t").rule, "unparseable"
        )

    def test_empty_query_allowed(self) -> None:
        self.assertEqual(decide(GUARDS, "  -- nothing\n").action, "allow")


class CombineTests(SynchronousTestCase):
    """The strictest decision wins."""

    def test_order(self) -> None:
        allow = Decision("allow", "a")
        review1 = Decision("review", "r1", approvals=1)
        review2 = Decision("review", "r2", approvals=2)
        deny = Decision("deny", "d")
        self.assertIs(combine([allow, review1, review2]), review2)
        self.assertIs(combine([review2, deny, allow]), deny)
        self.assertIsNone(combine([]))

    def test_reviews_with_different_approvers(self) -> None:
        """
        An approver must satisfy every statement's rule: only common
        groups qualify, and with none in common nobody could approve.
        """
        dba = Decision("review", "drops", approvers=("dba", "sec"))
        sec = Decision("review", "deletes", approvers=("sec",), approvals=2)
        joint = combine([dba, sec])
        self.assertEqual(
            (joint.action, joint.approvers, joint.approvals, joint.rule),
            ("review", ("sec",), 2, "drops, deletes"),
        )
        apart = combine([Decision("review", "a", approvers=("dba",)), sec])
        self.assertEqual(apart.action, "deny")
        anyone = combine([Decision("review", "a", approvers=("*",)), sec])
        self.assertEqual(anyone.approvers, ("sec",))

    @given(st.lists(st.sampled_from(["allow", "review", "deny"]), min_size=1))
    def test_strictest(self, actions: list[str]) -> None:
        decisions = [Decision(a, str(i)) for i, a in enumerate(actions)]
        expected = max(actions, key=["allow", "review", "deny"].index)
        self.assertEqual(combine(decisions).action, expected)


class RecordScopeTests(SynchronousTestCase):
    """Per-scope recording switch."""

    def test_first_scope_wins(self) -> None:
        policy = Policy(
            record_scopes=(RecordScope(groups=frozenset({"load-test"}), record=False),)
        )
        self.assertFalse(policy.records(("load-test",), "app", "postgres"))
        self.assertTrue(policy.records(("dba",), "app", "postgres"))


class CacheTests(SynchronousTestCase):
    """One parse per statement shape."""

    def test_constants_share_a_parse(self) -> None:
        cache = CommandCache()
        for i in range(100):
            found = cache.classify(f"SELECT abalance FROM a WHERE aid = {i}")
            self.assertEqual(found.commands[0].objects, ("a",))
        self.assertEqual(cache.parses, 1)
        self.assertEqual(
            cache.classify("SELECT abalance FROM a WHERE aid = 7").commands[0].text,
            "SELECT abalance FROM a WHERE aid = 7",
        )


class ShapeDecisionTests(SynchronousTestCase):
    """Decisions shared by the texts of one shape, and where they are not."""

    def decide_in_order(self, policy: Policy, texts: list[str]) -> list[str]:
        cache = CommandCache()
        session = policy.for_session(("agents",), "app", "postgres")
        actions = []
        for text in texts:
            found = cache.lookup(text)
            if session.reads_text:
                found = found.for_text(text)
            actions.append(session.decide_all(found.commands, found.shape).action)
        return actions

    def test_shared_by_constants(self) -> None:
        """Texts differing in constants are decided once, alike."""
        cache = CommandCache()
        first = cache.lookup("DELETE FROM t WHERE id = 1")
        again = cache.lookup("DELETE FROM t WHERE id = 2")
        self.assertIs(first, again)
        self.assertEqual(
            again.for_text("DELETE FROM t WHERE id = 2").commands[0].text,
            "DELETE FROM t WHERE id = 2",
        )
        self.assertEqual(
            self.decide_in_order(
                GUARDS,
                [
                    "DELETE FROM public.t WHERE id = 1",
                    "DELETE FROM public.t WHERE id = 2",
                    "DELETE FROM audit.t WHERE id = 2",
                ],
            ),
            ["allow", "allow", "deny"],
        )

    def test_aliased_relations_not_shared(self) -> None:
        """
        A relation under an alias is not taken for another one that came
        first (libpg_query's fingerprint would have made them one).
        """
        self.assertEqual(
            self.decide_in_order(
                GUARDS,
                [
                    "DELETE FROM public.log AS a WHERE id = 1",
                    "DELETE FROM audit.log AS a WHERE id = 1",
                    "INSERT INTO public.x AS i VALUES (1)",
                    "INSERT INTO audit.x AS i VALUES (1)",
                ],
            ),
            ["allow", "deny", "allow", "deny"],
        )

    def test_text_rules_decide_each_text(self) -> None:
        """With a rule on the text, texts of one shape are decided apart."""
        policy = Policy(
            rules=(Rule(name="not-seven", action="deny", text=r"aid = 7\b"),)
        )
        self.assertTrue(policy.for_session(("agents",), "app", "postgres").reads_text)
        self.assertEqual(
            self.decide_in_order(
                policy,
                [
                    "SELECT * FROM a WHERE aid = 1",
                    "SELECT * FROM a WHERE aid = 7",
                    "SELECT * FROM a WHERE aid = 70",
                ],
            ),
            ["allow", "deny", "allow"],
        )


def load_policy(raw: dict) -> tuple[Policy | None, list[str]]:
    """Parse a C{policy} section; the policy and the problems found."""
    from gatehouse.config import ConfigSection, TargetConfig, _Problems
    from gatehouse.policy.config import parse_policy

    problems = _Problems("gw.yaml")
    raw = {"opaque": "deny", **raw}
    section = ConfigSection(raw, "policy", problems, ".")
    policy = parse_policy(section, [TargetConfig("app", "postgres")])
    return policy, [f"{p.location}: {p.message}" for p in problems.found]


class CategoryRuleTests(SynchronousTestCase):
    """Rules on categories, as configured."""

    def test_category_rules_decide(self) -> None:
        policy, problems = load_policy(
            {
                "rules": [
                    {
                        "name": "no-destructive",
                        "category": ["destructive"],
                        "action": "deny",
                    },
                    {
                        "name": "no-unbounded",
                        "category": "write",
                        "flag": ["no-where"],
                        "action": "deny",
                    },
                    {
                        "name": "no-ddl",
                        "category": ["ddl", "privilege"],
                        "action": "deny",
                    },
                ]
            }
        )
        self.assertEqual(problems, [])
        for text, rule in [
            ("DROP OWNED BY current_user", "no-destructive"),
            ("DROP DATABASE app", "no-destructive"),
            (
                "MERGE INTO t USING s ON t.id = s.id WHEN MATCHED THEN DELETE",
                "no-destructive",
            ),
            (
                "MERGE INTO t USING s ON true WHEN MATCHED THEN UPDATE SET a = 1",
                "no-unbounded",
            ),
            (
                "INSERT INTO t SELECT * FROM s ON CONFLICT (id) DO UPDATE SET a = 1",
                "no-unbounded",
            ),
            ("UPDATE t SET a = 1 WHERE 1 = 1", "no-unbounded"),
            ("CREATE TABLE t2 AS SELECT 1", "no-ddl"),
            ("SELECT * INTO t2 FROM t", "no-ddl"),
            ("CREATE VIEW v AS SELECT 1", "no-ddl"),
            ("ALTER TABLE t SET SCHEMA s", "no-ddl"),
            ("GRANT ALL ON t TO PUBLIC", "no-ddl"),
        ]:
            self.assertEqual(decide(policy, text).rule, rule, text)
        for text in (
            "SELECT 1",
            "UPDATE t SET a = 1 WHERE id = 4",
            "INSERT INTO t VALUES (1)",
        ):
            self.assertEqual(decide(policy, text).action, "allow", text)

    def test_unknown_category(self) -> None:
        _, problems = load_policy(
            {"rules": [{"name": "r", "category": ["destrutive"], "action": "deny"}]}
        )
        self.assertEqual(len(problems), 1, problems)
        self.assertIn(
            "can never match: no command has category 'destrutive'", problems[0]
        )
        self.assertIn("destructive", problems[0])

    def test_unparseable_actions(self) -> None:
        policy, problems = load_policy({})
        self.assertEqual((policy.unparseable.action, problems), ("error", []))
        for action in ("deny", "error", "allow"):
            policy, problems = load_policy({"unparseable": action})
            self.assertEqual((policy.unparseable.action, problems), (action, []))
        _, problems = load_policy({"opaque": "error"})  # not for opaque
        self.assertIn(
            "policy.opaque: 'error' is not one of allow, deny, review; "
            "error is only for policy.unparseable",
            problems,
        )
        _, problems = load_policy(
            {"rules": [{"name": "r", "action": "error", "kind": "SelectStmt"}]}
        )
        self.assertIn("error is only for policy.unparseable", problems[0])

    def test_error_is_strictest(self) -> None:
        error = Decision("error", "unparseable")
        self.assertEqual(combine([Decision("deny", "x"), error]), error)
