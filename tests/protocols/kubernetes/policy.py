"""
A Kubernetes policy as an operator writes it (YAML), and deciding API
requests with it, for the classifier's and the attributes' tests.
"""

from __future__ import annotations

from typing import Any

import yaml
from twisted.trial.unittest import SynchronousTestCase

from gatehouse.config import ConfigSection, TargetConfig, _Problems
from gatehouse.policy import Decision, Policy
from gatehouse.policy.config import parse_policy
from gatehouse.protocols import (
    ProtocolAdapterBase,
    protocol_names,
    register_protocol,
    unregister_protocol,
)
from gatehouse.protocols.kubernetes.attributes import (
    POLICY_ATTRIBUTES,
    PROTOCOL,
    commands_for,
)
from gatehouse.protocols.kubernetes.request import classify

POLICY = """
default: allow
review:
  approvers: [sre]
rules:
  - name: no-kube-system-secrets
    action: deny
    resource: [secrets]
    namespace: [kube-system, all-namespaces]
    message: nobody reads secrets in kube-system
  - name: no-namespace-delete
    action: deny
    verb: [delete, deletecollection]
    resource: namespaces
  - name: prod-exec
    action: review
    verb: [exec, attach]
    namespace: prod
  - name: agents-read
    action: allow
    groups: [agents]
    verb: [get, list, watch]
  - name: agents-nothing-else
    action: deny
    groups: [agents]
"""

TARGETS = (TargetConfig("cluster", PROTOCOL), TargetConfig("app", "postgres"))


class _KubernetesDeclaration(ProtocolAdapterBase):
    """The Kubernetes adapter's policy declaration alone (until it lands)."""

    name = PROTOCOL
    policy_attributes = POLICY_ATTRIBUTES


def with_kubernetes(case: SynchronousTestCase) -> None:
    """
    Make the C{kubernetes} protocol known for C{case} (its own adapter when
    it is registered, else one declaring L{POLICY_ATTRIBUTES}).
    """
    if PROTOCOL in protocol_names():
        return
    register_protocol(_KubernetesDeclaration())
    case.addCleanup(unregister_protocol, PROTOCOL)


def load(text: str = POLICY) -> tuple[Policy, list[str]]:
    """The policy C{text} (YAML) says, and the problems found in it."""
    raw: Any = yaml.safe_load(text)
    problems = _Problems("gw.yaml")
    policy = parse_policy(ConfigSection(raw, "policy", problems, "."), TARGETS)
    return policy, [f"{p.location}: {p.message}" for p in problems.found]


def decide(
    policy: Policy,
    method: str,
    target: bytes,
    groups: tuple[str, ...] = ("dev",),
) -> Decision:
    """The decision for one API request on the target C{cluster}."""
    session = policy.for_session(groups, "cluster", PROTOCOL)
    return session.decide_all(commands_for(classify(method, target)))
