"""
An SSH policy as an operator writes it (YAML), and deciding exec lines
with it, for the classifier's tests.
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
from gatehouse.protocols.ssh.attributes import POLICY_ATTRIBUTES
from gatehouse.protocols.ssh.commands import classify_exec

POLICY = """
default: allow
unparseable: deny
review:
  approvers: [ops]
rules:
  - name: no-rm
    action: deny
    protocols: [ssh]
    program: [rm, shred, wipefs, "mkfs*"]
    message: deleting through exec is not allowed
  - name: no-pipe-to-shell
    action: deny
    flag: [pipe-to-shell]
  - name: no-decode-to-shell
    action: deny
    flag: [decode-to-shell]
  - name: no-find-delete
    action: deny
    flag: [find-delete]
  - name: no-unparsed
    action: deny
    kind: [Unparseable]
  - name: sudo
    action: review
    flag: [sudo]
  - name: dynamic
    action: review
    flag: [dynamic-program]
"""

TARGETS = (TargetConfig("host", "ssh"), TargetConfig("app", "postgres"))


class _SSHDeclaration(ProtocolAdapterBase):
    """The SSH adapter's policy declaration alone (until the adapter lands)."""

    name = "ssh"
    policy_attributes = POLICY_ATTRIBUTES


def with_ssh(case: SynchronousTestCase) -> None:
    """
    Make the C{ssh} protocol known for C{case} (its own adapter when it is
    registered, else one declaring L{POLICY_ATTRIBUTES}).
    """
    if "ssh" in protocol_names():
        return
    register_protocol(_SSHDeclaration())
    case.addCleanup(unregister_protocol, "ssh")


def load(text: str = POLICY) -> tuple[Policy, list[str]]:
    """The policy C{text} (YAML) says, and the problems found in it."""
    raw: Any = yaml.safe_load(text)
    problems = _Problems("gw.yaml")
    policy = parse_policy(ConfigSection(raw, "policy", problems, "."), TARGETS)
    return policy, [f"{p.location}: {p.message}" for p in problems.found]


def decide(
    policy: Policy, line: str | bytes, groups: tuple[str, ...] = ("dev",)
) -> Decision:
    """The decision for an exec request's line on the target C{host}."""
    session = policy.for_session(groups, "host", "ssh")
    return session.decide_all(classify_exec(line))
