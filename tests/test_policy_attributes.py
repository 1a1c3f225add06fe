"""
Policy attributes declared by protocols (L{gatehouse.policy.attributes}):
how rule keys match, how the configuration reader checks them against the
declarations of the protocols in a rule's scope, and masking scopes by
protocol.
"""

from __future__ import annotations

from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from gatehouse.config import ConfigSection, TargetConfig, _Problems
from gatehouse.policy import Command, Policy, Rule
from gatehouse.policy.attributes import (
    ALL,
    ANY,
    GLOB,
    REGEX,
    SQL_NAME,
    SQL_SCHEMA,
    Condition,
    PolicyAttribute,
    PolicyAttributes,
)
from gatehouse.policy.config import parse_masking, parse_policy
from gatehouse.protocols import ProtocolAdapterBase, register_protocol
from gatehouse.protocols import unregister_protocol as unregister

#: A Kubernetes-like protocol's declaration: names with dots are names.
#: Its C{verb} means what the built-in C{kubernetes} protocol's does (the
#: command's kind): an unscoped rule may name it for both.
KUBE = PolicyAttributes(
    (
        PolicyAttribute("verb", ANY, "kinds", frozenset({"get", "list", "delete"})),
        PolicyAttribute("resource", GLOB, "resource"),
        PolicyAttribute("namespace", GLOB, "namespace"),
        PolicyAttribute("resource_name", GLOB, "name"),
    )
)


TARGETS = (TargetConfig("app", "postgres"), TargetConfig("k8s", "kube-test"))


class _Declaring(ProtocolAdapterBase):
    def __init__(self, name: str, attributes: PolicyAttributes) -> None:
        self.name = name
        self.policy_attributes = attributes


def kube(verb: str, resource: str, namespace: str, name: str) -> Command:
    """A Kubernetes-like request as a command."""
    return Command(
        "kube-test",
        verb,
        f"{verb} {resource}/{name} -n {namespace}",
        extra=(
            ("verb", (verb,)),
            ("resource", (resource,)),
            ("namespace", (namespace,)),
            ("name", (name,)),
        ),
    )


class ConditionTests(SynchronousTestCase):
    """Each match kind, on its own."""

    def test_any_and_all(self) -> None:
        self.assertTrue(Condition("k", "kinds", ANY, ("A", "B")).holds({"B", "C"}))
        self.assertFalse(Condition("k", "kinds", ANY, ("A",)).holds({"B"}))
        self.assertTrue(Condition("f", "flags", ALL, ("a", "b")).holds({"a", "b", "c"}))
        self.assertFalse(Condition("f", "flags", ALL, ("a", "b")).holds({"a"}))

    def test_glob_keeps_dots(self) -> None:
        """A glob matches whole values; a dot is an ordinary character."""
        name = Condition("name", "name", GLOB, ("v2",))
        self.assertFalse(name.holds(("web.v2",)))
        self.assertTrue(Condition("name", "name", GLOB, ("web.*",)).holds(("web.v2",)))
        self.assertFalse(Condition("name", "name", GLOB, ("web.*",)).holds(("webxv2",)))

    def test_sql_names_assume_the_worst_search_path(self) -> None:
        """
        An SQL name pattern matches the last part; a qualified one also an
        unqualified name (its schema is the client's search_path).
        """
        bare = Condition("object", "objects", SQL_NAME, ("v2",))
        self.assertTrue(bare.holds(("web.v2",)))
        qualified = Condition("object", "objects", SQL_NAME, ("hr.salaries",))
        self.assertTrue(qualified.holds(("salaries",)))
        self.assertTrue(qualified.holds(("db.hr.salaries",)))
        self.assertFalse(qualified.holds(("pub.salaries",)))
        schema = Condition("schema", "objects", SQL_SCHEMA, ("hr",))
        self.assertTrue(schema.holds(("salaries",)))
        self.assertTrue(schema.holds(("hr.salaries",)))
        self.assertFalse(schema.holds(("pub.salaries",)))

    def test_declarations_checked(self) -> None:
        """
        A declaration with an unknown match kind, a key twice, two regular
        expressions or a key a rule uses for its scope is refused.
        """
        self.assertRaises(ValueError, PolicyAttribute, "k", "fuzzy", "kinds")
        for key in ("name", "action", "groups", "targets", "protocols", "timeout"):
            self.assertRaises(
                ValueError, PolicyAttributes, (PolicyAttribute(key, GLOB, key),)
            )
        self.assertRaises(
            ValueError,
            PolicyAttributes,
            (
                PolicyAttribute("object", SQL_NAME, "objects"),
                PolicyAttribute("table", SQL_NAME, "objects", aliases=("object",)),
            ),
        )
        self.assertRaises(
            ValueError,
            PolicyAttributes,
            (
                PolicyAttribute("text", REGEX, "normalized"),
                PolicyAttribute("line", REGEX, "text"),
            ),
        )

    def test_extra_values(self) -> None:
        """A command's protocol-specific attributes are found by name."""
        command = kube("get", "pods", "prod", "web.v2")
        self.assertEqual(command.values("name"), ("web.v2",))
        self.assertEqual(command.values("kinds"), frozenset({"get"}))
        self.assertEqual(tuple(command.values("argv")), ())


def load(
    rules: list[dict[str, Any]],
    targets: tuple[TargetConfig, ...] = (TargetConfig("app", "postgres"),),
) -> tuple[Policy, list[str]]:
    """Parse a policy with these rules; the policy and its problems."""
    problems = _Problems("gw.yaml")
    # opaque: deny, as a policy without approvers must say
    raw = {"opaque": "deny", "rules": rules}
    section = ConfigSection(raw, "policy", problems, ".")
    policy = parse_policy(section, targets)
    return policy, [f"{p.location}: {p.message}" for p in problems.found]


def decide(policy: Policy, command: Command, target: str = "app") -> str:
    """The rule (or fallback) that decides C{command}."""
    session = policy.for_session(("dev",), target, command.protocol)
    return session.decide(command).rule


class PostgresDeclarationTests(SynchronousTestCase):
    """Rules on PostgreSQL statements, through the adapter's declaration."""

    def test_same_decisions_as_the_rule_fields(self) -> None:
        """
        A configured rule decides as the same rule written with L{Rule}'s
        fields: the declaration keeps the old matching.
        """
        configured, problems = load(
            [
                {
                    "name": "hr",
                    "action": "deny",
                    "relation": ["hr.salaries"],
                    "object": "payroll.*",
                    "schema": ["audit"],
                    "kind": ["SelectStmt", "UpdateStmt"],
                    "flag": "no-where",
                    "category": "write",
                    "function": ["pg_catalog.lo_*"],
                    "text": "secret",
                }
            ]
        )
        self.assertEqual(problems, [])
        written = Policy(
            rules=(
                Rule(
                    name="hr",
                    action="deny",
                    objects=("payroll.*", "hr.salaries"),
                    schemas=frozenset({"audit"}),
                    kinds=frozenset({"SelectStmt", "UpdateStmt"}),
                    flags=frozenset({"no-where"}),
                    categories=frozenset({"write"}),
                    functions=("pg_catalog.lo_*",),
                    text="secret",
                ),
            )
        )
        base = {
            "kind": "UpdateStmt",
            "text": "UPDATE salaries SET secret = 1",
            "objects": ("salaries",),
            "functions": ("lo_put",),
            "flags": frozenset({"no-where"}),
            "categories": frozenset({"write"}),
        }
        variants = [
            {},
            {"objects": ("pub.salaries",)},
            {"objects": ("audit.salaries",)},
            {"objects": ("audit.t", "salaries")},
            {"objects": ("payroll.x",)},
            {"kind": "DeleteStmt"},
            {"flags": frozenset()},
            {"categories": frozenset({"read"})},
            {"functions": ("lower",)},
            {"text": "UPDATE salaries SET a = 1"},
        ]
        decided = []
        for variant in variants:
            command = Command("postgres", **{**base, **variant})
            rule = decide(configured, command)
            self.assertEqual(rule, decide(written, command), variant)
            decided.append(rule)
        # Not vacuous: some commands match and some do not.
        self.assertEqual(
            decided,
            ["hr", "default", "default", "hr", *["default"] * 6],
        )

    def test_unknown_kind_suggests(self) -> None:
        _, problems = load([{"name": "r", "action": "deny", "kind": "DropStm"}])
        self.assertEqual(
            problems,
            [
                "policy.rules[0].kind: can never match: no command has "
                "kind 'DropStm' (did you mean DropStmt?)"
            ],
        )

    def test_unknown_key_suggests(self) -> None:
        _, problems = load([{"name": "r", "action": "deny", "objct": "t"}])
        self.assertEqual(
            problems,
            ["policy.rules[0].objct: unknown key (did you mean object?)"],
        )

    def test_fallback_words_always_known(self) -> None:
        """Unparseable and opaque are the policy's own words."""
        _, problems = load(
            [
                {"name": "a", "action": "deny", "kind": "Unparseable"},
                {"name": "b", "action": "deny", "flag": "opaque"},
            ]
        )
        self.assertEqual(problems, [])


class _WithKube(SynchronousTestCase):
    """Registers the Kubernetes-like protocol C{kube-test} for each test."""

    targets = (TargetConfig("app", "postgres"), TargetConfig("k8s", "kube-test"))

    def setUp(self) -> None:
        register_protocol(_Declaring("kube-test", KUBE))
        self.addCleanup(unregister, "kube-test")


class DeclaringProtocolTests(_WithKube):
    """A second protocol, declaring its own attributes."""

    def test_rules_on_its_attributes(self) -> None:
        policy, problems = load(
            [
                {
                    "name": "no-prod-delete",
                    "action": "deny",
                    "protocols": ["kube-test"],
                    "verb": "delete",
                    "namespace": "prod*",
                    "resource_name": "web.*",
                },
                {"name": "pg-drop", "action": "deny", "kind": "DropStmt"},
            ],
            self.targets,
        )
        self.assertEqual(problems, [])
        for command, rule in [
            (kube("delete", "pods", "prod-eu", "web.v2"), "no-prod-delete"),
            (kube("delete", "pods", "prod-eu", "webxv2"), "default"),
            (kube("delete", "pods", "dev", "web.v2"), "default"),
            (kube("get", "pods", "prod-eu", "web.v2"), "default"),
        ]:
            self.assertEqual(decide(policy, command, "k8s"), rule, command.text)
        # The PostgreSQL rule never applies to the other protocol's commands,
        # even one whose kind reads the same.
        self.assertEqual(
            decide(policy, kube("DropStmt", "x", "y", "z"), "k8s"), "default"
        )

    def test_key_of_another_protocol(self) -> None:
        """A key only protocols outside the rule's scope declare is refused."""
        _, problems = load(
            [
                {"name": "a", "action": "deny", "protocols": "postgres", "verb": "get"},
                {"name": "b", "action": "deny", "targets": "k8s", "object": "t"},
            ],
            self.targets,
        )
        self.assertEqual(
            problems,
            [
                "policy.rules[0].verb: can never match: postgres commands have no verb",
                "policy.rules[1].object: can never match: kube-test "
                "commands have no object",
            ],
        )

    def test_unscoped_rule_on_one_protocols_key(self) -> None:
        """
        A rule without scope may name a key one protocol declares; it
        matches only that protocol's commands.
        """
        policy, problems = load(
            [{"name": "verbs", "action": "deny", "verb": ["delete"]}], self.targets
        )
        self.assertEqual(problems, [])
        self.assertEqual(
            decide(policy, kube("delete", "pods", "a", "b"), "k8s"), "verbs"
        )
        self.assertEqual(
            decide(policy, Command("postgres", "DeleteStmt", "DELETE FROM t")),
            "default",
        )

    def test_words_of_its_own(self) -> None:
        _, problems = load(
            [{"name": "r", "action": "deny", "targets": "k8s", "verb": "delte"}],
            self.targets,
        )
        self.assertEqual(
            problems,
            [
                "policy.rules[0].verb: can never match: no command has "
                "verb 'delte' (did you mean delete?)"
            ],
        )

    def test_same_key_different_meaning(self) -> None:
        """Two protocols declaring one key differently: the rule must choose."""
        other = PolicyAttributes((PolicyAttribute("kind", GLOB, "kinds"),))
        register_protocol(_Declaring("other-test", other))
        self.addCleanup(unregister, "other-test")
        _, problems = load([{"name": "r", "action": "deny", "kind": "DropStmt"}])
        self.assertEqual(
            problems,
            [
                "policy.rules[0].kind: kind means different things for "
                "other-test, postgres, ssh commands; limit the rule with protocols"
                " or targets"
            ],
        )
        _, problems = load(
            [
                {
                    "name": "r",
                    "action": "deny",
                    "protocols": "postgres",
                    "kind": "DropStmt",
                }
            ]
        )
        self.assertEqual(problems, [])


def load_masking(
    entries: list[dict[str, Any]], targets: tuple[TargetConfig, ...]
) -> tuple[tuple[Any, ...], list[str]]:
    problems = _Problems("gw.yaml")
    sections = [
        ConfigSection(entry, f"masking[{n}]", problems, ".")
        for n, entry in enumerate(entries)
    ]
    scopes = parse_masking(sections, targets)
    return scopes, [f"{p.location}: {p.message}" for p in problems.found]


class MaskingProtocolsTests(_WithKube):
    """Masking scopes limited to protocols."""

    def test_default_all(self) -> None:
        (scope,), problems = load_masking(
            [{"name": "m", "detect": ["email"]}], self.targets
        )
        self.assertEqual((problems, scope.protocols), ([], frozenset()))
        self.assertTrue(scope.applies(("dev",), "app", "postgres"))
        self.assertTrue(scope.applies(("dev",), "k8s", "kube-test"))

    def test_limited(self) -> None:
        (scope,), problems = load_masking(
            [{"name": "m", "detect": ["email"], "protocols": ["postgres"]}],
            self.targets,
        )
        self.assertEqual(problems, [])
        self.assertTrue(scope.applies(("dev",), "app", "postgres"))
        self.assertFalse(scope.applies(("dev",), "k8s", "kube-test"))

    def test_problems(self) -> None:
        _, problems = load_masking(
            [
                {"name": "a", "detect": ["email"], "protocols": ["postgress"]},
                {
                    "name": "b",
                    "columns": ["ssn"],
                    "protocols": "kube-test",
                    "targets": ["app"],
                },
            ],
            self.targets,
        )
        self.assertEqual(
            problems,
            [
                "masking[0].protocols: unknown protocol 'postgress' "
                "(did you mean postgres?)",
                "masking[1].protocols: can never apply: its targets "
                "speak postgres, not kube-test",
            ],
        )
