"""
Policy rules on Kubernetes requests (L{gatehouse.protocols.kubernetes.
attributes}), through the configuration reader as an operator writes them.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from gatehouse.protocols.kubernetes.attributes import (
    ALL_NAMESPACES,
    POLICY_ATTRIBUTES,
    commands_for,
)
from gatehouse.protocols.kubernetes.request import VERBS, classify

from .policy import decide, load, with_kubernetes

SECRET = b"/api/v1/namespaces/kube-system/secrets/admin-token"
RULE = "opaque: deny\nrules:\n  - name: r\n    action: deny\n"
EXEC = b"/api/v1/namespaces/prod/pods/web-7/exec?command=sh&container=app"


class CommandTests(SynchronousTestCase):
    """The command a request makes."""

    def test_resource_request(self) -> None:
        (command,) = commands_for(classify("POST", EXEC))
        self.assertEqual(command.protocol, "kubernetes")
        self.assertEqual(command.kind, "exec")
        self.assertEqual(command.kinds, frozenset({"exec"}))
        self.assertEqual(command.text, "exec prod/web-7 -c app: sh")
        self.assertEqual(command.objects, ("pods/web-7", "pods", "namespaces/prod"))
        self.assertEqual(tuple(command.values("resource")), ("pods/exec",))
        self.assertEqual(tuple(command.values("subresource")), ("exec",))
        self.assertEqual(tuple(command.values("api_group")), ("core",))
        self.assertEqual(tuple(command.values("namespace")), ("prod",))
        self.assertEqual(tuple(command.values("resource_name")), ("web-7",))
        self.assertEqual(tuple(command.values("container")), ("app",))

    def test_group_and_kubectl_names(self) -> None:
        (command,) = commands_for(
            classify("PATCH", b"/apis/apps/v1/namespaces/a/deployments/w/scale")
        )
        self.assertEqual(
            tuple(command.values("resource")),
            ("deployments/scale", "deployments.apps/scale"),
        )
        self.assertEqual(
            command.objects, ("deployments.apps/w", "deployments.apps", "namespaces/a")
        )
        self.assertEqual(tuple(command.values("api_group")), ("apps",))
        self.assertEqual(tuple(command.values("version")), ("v1",))

    def test_namespaces(self) -> None:
        """All namespaces, cluster scope, and the namespace object itself."""
        cases = [
            (b"/api/v1/secrets", (ALL_NAMESPACES,)),
            (b"/api/v1/watch/secrets", (ALL_NAMESPACES,)),
            (b"/apis/example.com/v1/widgets", (ALL_NAMESPACES,)),
            (b"/api/v1/nodes", ()),
            (b"/api/v1/nodes/n1", ()),
            (b"/api/v1/namespaces", ()),
            (b"/api/v1/namespaces/prod", ("prod",)),
        ]
        for target, expected in cases:
            (command,) = commands_for(classify("GET", target))
            self.assertEqual(tuple(command.values("namespace")), expected, target)

    def test_non_resource(self) -> None:
        (command,) = commands_for(classify("GET", b"/version"))
        self.assertEqual((command.kind, command.text), ("get", "get /version"))
        self.assertEqual(tuple(command.values("non_resource_url")), ("/version",))
        self.assertEqual(tuple(command.values("resource")), ())

    def test_declared_words(self) -> None:
        verb = POLICY_ATTRIBUTES.get("verb")
        assert verb is not None
        self.assertEqual(verb.words, VERBS)
        self.assertIs(
            POLICY_ATTRIBUTES.get("group"), POLICY_ATTRIBUTES.get("api_group")
        )


class RuleTests(SynchronousTestCase):
    """The rules of the issue, written in YAML, decide requests."""

    def setUp(self) -> None:
        with_kubernetes(self)
        self.policy, problems = load()
        self.assertEqual(problems, [])

    def rule(self, method: str, target: bytes, *groups: str) -> str:
        return decide(self.policy, method, target, groups or ("dev",)).rule

    def test_secrets_in_kube_system(self) -> None:
        """Nobody reads them: get, list, watch, across all namespaces too."""
        for method, target in [
            ("GET", SECRET),
            ("HEAD", SECRET),
            ("GET", b"/api/v1/namespaces/kube-system/secrets"),
            ("GET", b"/api/v1/namespaces/kube-system/secrets?watch=true"),
            ("GET", b"/api/v1/watch/namespaces/kube-system/secrets/x"),
            ("GET", b"/api/v1/secrets"),
            ("GET", b"/api/v1/secrets?watch=1"),
        ]:
            self.assertEqual(
                self.rule(method, target), "no-kube-system-secrets", target
            )
        self.assertEqual(
            self.rule("GET", b"/api/v1/namespaces/shop/secrets/x"), "default"
        )
        self.assertEqual(
            self.rule("GET", b"/api/v1/namespaces/kube-system/configmaps"), "default"
        )

    def test_namespace_delete(self) -> None:
        self.assertEqual(
            self.rule("DELETE", b"/api/v1/namespaces/prod"), "no-namespace-delete"
        )
        self.assertEqual(
            self.rule("DELETE", b"/api/v1/namespaces"), "no-namespace-delete"
        )
        self.assertEqual(
            self.rule("DELETE", b"/api/v1/namespaces/prod/pods/x"), "default"
        )
        self.assertEqual(self.rule("GET", b"/api/v1/namespaces/prod"), "default")

    def test_exec_in_prod(self) -> None:
        for method in ("GET", "POST"):
            self.assertEqual(self.rule(method, EXEC), "prod-exec")
        self.assertEqual(
            self.rule("POST", b"/api/v1/namespaces/prod/pods/web/attach"), "prod-exec"
        )
        self.assertEqual(
            self.rule("POST", b"/api/v1/namespaces/dev/pods/web/exec?command=sh"),
            "default",
        )
        decision = decide(self.policy, "POST", EXEC)
        self.assertEqual((decision.action, decision.approvers), ("review", ("sre",)))

    def test_agents_read_only(self) -> None:
        for method, target in [
            ("GET", b"/api/v1/namespaces/shop/pods"),
            ("GET", b"/api/v1/namespaces/shop/pods/web"),
            ("GET", b"/api/v1/namespaces/shop/pods?watch=true"),
            ("HEAD", b"/apis/apps/v1/namespaces/shop/deployments/web"),
        ]:
            self.assertEqual(self.rule(method, target, "agents"), "agents-read")
        for method, target in [
            ("DELETE", b"/api/v1/namespaces/shop/pods/web"),
            ("DELETE", b"/api/v1/namespaces/shop/pods"),
            ("POST", b"/api/v1/namespaces/shop/pods"),
            ("PATCH", b"/apis/apps/v1/namespaces/shop/deployments/web"),
            ("POST", b"/api/v1/namespaces/shop/pods/web/exec?command=ls"),
            ("GET", b"/api/v1/namespaces/shop/pods/web/log"),
            ("GET", b"/api/v1/namespaces/shop/services/web/proxy/"),
        ]:
            self.assertEqual(
                self.rule(method, target, "agents"), "agents-nothing-else", target
            )
        # The earlier rules still come first for agents.
        self.assertEqual(self.rule("GET", SECRET, "agents"), "no-kube-system-secrets")


class SubresourceTests(SynchronousTestCase):
    """
    C{resource: pods} is the pods, not C{pods/exec} (as in RBAC); the
    subresource is named as C{pods/exec}, C{pods/*}, C{subresource:} or by
    its verb.
    """

    POLICY = """
review:
  approvers: [sre]
rules:
  - name: {name}
    action: deny
{condition}
"""

    def setUp(self) -> None:
        with_kubernetes(self)

    def matches(self, condition: str, method: str, target: bytes) -> bool:
        policy, problems = load(self.POLICY.format(name="r", condition=condition))
        self.assertEqual(problems, [])
        return decide(policy, method, target).rule == "r"

    def test_matching(self) -> None:
        exec_ = ("POST", b"/api/v1/namespaces/a/pods/web/exec?command=sh")
        get = ("GET", b"/api/v1/namespaces/a/pods/web")
        log = ("GET", b"/api/v1/namespaces/a/pods/web/log")
        scale = ("PUT", b"/apis/apps/v1/namespaces/a/deployments/web/scale")
        cases = [
            ("    resource: pods", [get]),
            ("    resource: pods/exec", [exec_]),
            ("    resource: pods/*", [exec_, log]),
            ('    resource: "*"', [exec_, get, log, scale]),
            ("    subresource: exec", [exec_]),
            ('    subresource: "*"', [exec_, log, scale]),
            ("    verb: exec", [exec_]),
            ("    resource: pods\n    verb: exec", []),
            ("    resource: deployments.apps/scale", [scale]),
            ("    resource: deployments/*\n    group: apps", [scale]),
            ("    resource: deployments/*\n    group: core", []),
            ("    resource: pods\n    api_group: core", [get]),
            ("    resource_name: web\n    verb: [get]", [get]),
            ("    container: app", []),
            ('    text: "^exec a/web"', [exec_]),
        ]
        for condition, matched in cases:
            for request in (exec_, get, log, scale):
                self.assertEqual(
                    self.matches(condition, *request),
                    request in matched,
                    (condition, request),
                )


class LoaderTests(SynchronousTestCase):
    """The configuration reader checks rules on Kubernetes keys."""

    def setUp(self) -> None:
        with_kubernetes(self)

    def test_unknown_verb(self) -> None:
        _, problems = load(
            "opaque: deny\nrules:\n  - name: r\n    action: deny\n    verb: delet\n"
        )
        self.assertEqual(
            problems,
            [
                "policy.rules[0].verb: can never match: no command has verb "
                "'delet' (did you mean delete?)"
            ],
        )

    def test_key_of_another_protocol(self) -> None:
        _, problems = load(RULE + "    protocols: [postgres]\n    namespace: prod\n")
        self.assertEqual(
            problems,
            [
                "policy.rules[0].namespace: can never match: postgres commands "
                "have no namespace"
            ],
        )

    def test_name_is_the_rules(self) -> None:
        """C{name} names the rule; the object's name is C{resource_name}."""
        self.assertIsNone(POLICY_ATTRIBUTES.get("name"))
        self.assertIsNotNone(POLICY_ATTRIBUTES.get("resource_name"))
