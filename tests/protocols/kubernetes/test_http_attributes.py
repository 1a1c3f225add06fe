"""
Policy rules on plain HTTP requests (L{gatehouse.protocols.http.attributes}),
through the configuration reader.  (Here until the C{http} tests have a
package of their own.)
"""

from __future__ import annotations

from typing import Any

import yaml
from twisted.trial.unittest import SynchronousTestCase

from gatehouse.config import ConfigSection, TargetConfig, _Problems
from gatehouse.policy import Policy
from gatehouse.policy.config import parse_policy
from gatehouse.protocols import (
    ProtocolAdapterBase,
    protocol_names,
    register_protocol,
    unregister_protocol,
)
from gatehouse.protocols.http.attributes import (
    POLICY_ATTRIBUTES,
    PROTOCOL,
    commands_for,
)

POLICY = """
opaque: deny
rules:
  - name: no-admin-writes
    action: deny
    method: [POST, PUT, PATCH, DELETE]
    path: /admin/*
    host: "admin.*"
  - name: no-debug
    action: deny
    text: "^GET /debug"
"""

TARGETS = (
    TargetConfig("admin", PROTOCOL),
    TargetConfig("box", "ssh"),
    TargetConfig("db", "postgres"),
)


class _HTTPDeclaration(ProtocolAdapterBase):
    name = PROTOCOL
    policy_attributes = POLICY_ATTRIBUTES


def load(text: str) -> tuple[Policy, list[str]]:
    raw: Any = yaml.safe_load(text)
    problems = _Problems("gw.yaml")
    policy = parse_policy(ConfigSection(raw, "policy", problems, "."), TARGETS)
    return policy, [f"{p.location}: {p.message}" for p in problems.found]


class HTTPRuleTests(SynchronousTestCase):
    def setUp(self) -> None:
        if PROTOCOL not in protocol_names():
            register_protocol(_HTTPDeclaration())
            self.addCleanup(unregister_protocol, PROTOCOL)

    def rule(self, policy: Policy, method: str, path: str, host: str) -> str:
        session = policy.for_session(("dev",), "admin", PROTOCOL)
        return session.decide_all(commands_for(method, path, host)).rule

    def test_rules(self) -> None:
        policy, problems = load(POLICY)
        self.assertEqual(problems, [])
        for method, path, host, rule in [
            ("DELETE", "/admin/users/7", "admin.internal", "no-admin-writes"),
            ("POST", "/admin/x", "ADMIN.internal", "no-admin-writes"),
            ("GET", "/admin/users/7", "admin.internal", "default"),
            ("DELETE", "/public/x", "admin.internal", "default"),
            ("DELETE", "/admin/x", "www.internal", "default"),
            ("GET", "/debug/pprof", "www.internal", "no-debug"),
        ]:
            self.assertEqual(self.rule(policy, method, path, host), rule, path)

    def test_words_and_shared_keys(self) -> None:
        """Methods are a closed set; path may be shared with SSH unscoped."""
        _, problems = load(
            "opaque: deny\nrules:\n  - name: r\n    action: deny\n    method: GTE\n"
        )
        self.assertEqual(
            problems,
            [
                "policy.rules[0].method: can never match: no command has method "
                "'GTE' (did you mean GET?)"
            ],
        )
        _, problems = load(
            "opaque: deny\nrules:\n  - name: r\n    action: deny\n    path: /etc/*\n"
        )
        self.assertEqual(problems, [])
