"""
Policy rules on plain HTTP requests (L{gatehouse.protocols.http.attributes}),
through the configuration reader.  (Here until the C{http} tests have a
package of their own.)
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from gatehouse.config import TargetConfig
from gatehouse.policy import Policy
from gatehouse.protocols.http.attributes import (
    POLICY_ATTRIBUTES,
    PROTOCOL,
    commands_for,
)

from . import policy as kube_policy

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


def load(text: str) -> tuple[Policy, list[str]]:
    return kube_policy.load(text, TARGETS)


class HTTPRuleTests(SynchronousTestCase):
    def setUp(self) -> None:
        kube_policy.declare(self, PROTOCOL, POLICY_ATTRIBUTES)

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
