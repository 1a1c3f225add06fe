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
from gatehouse.policy.attributes import PolicyAttributes
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


class _Declaration(ProtocolAdapterBase):
    """A protocol's policy declaration alone (until its adapter lands)."""

    def __init__(self, name: str, attributes: PolicyAttributes) -> None:
        self.name = name
        self.policy_attributes = attributes


def declare(
    case: SynchronousTestCase,
    name: str = PROTOCOL,
    attributes: PolicyAttributes = POLICY_ATTRIBUTES,
) -> None:
    """
    Make protocol C{name} known for C{case} (its own adapter when it is
    registered, else one declaring C{attributes}).
    """
    if name in protocol_names():
        return
    register_protocol(_Declaration(name, attributes))
    case.addCleanup(unregister_protocol, name)


def with_kubernetes(case: SynchronousTestCase) -> None:
    """Make the C{kubernetes} protocol known for C{case}."""
    declare(case)


def load(
    text: str = POLICY, targets: tuple[TargetConfig, ...] = TARGETS
) -> tuple[Policy, list[str]]:
    """The policy C{text} (YAML) says, and the problems found in it."""
    raw: Any = yaml.safe_load(text)
    problems = _Problems("gw.yaml")
    policy = parse_policy(ConfigSection(raw, "policy", problems, "."), targets)
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
