"""
Policy: what each identity may do on each target, and what it may see.

The package holds the protocol-neutral half of enforcement:

  - L{gatehouse.policy.rules}: commands, rules, decisions and their
    evaluation (re-exported here, so C{from gatehouse.policy import
    Decision} works);
  - L{gatehouse.policy.config}: reading the C{policy}, C{masking} and
    C{approval} sections of a configuration;
  - L{gatehouse.policy.approval}: reviews waiting for people to approve;
  - L{gatehouse.policy.masking}: masking values in results.
"""

from gatehouse.policy.rules import (
    ACTIONS,
    ERROR,
    FALLBACK_ACTIONS,
    OPAQUE,
    UNPARSEABLE,
    Command,
    Decision,
    Policy,
    RecordScope,
    Rule,
    Scope,
    SessionPolicy,
    combine,
    normalized_text,
    register_normalizer,
)

__all__ = [
    "ACTIONS",
    "ERROR",
    "FALLBACK_ACTIONS",
    "OPAQUE",
    "UNPARSEABLE",
    "Command",
    "Decision",
    "Policy",
    "RecordScope",
    "Rule",
    "Scope",
    "SessionPolicy",
    "combine",
    "normalized_text",
    "register_normalizer",
]
