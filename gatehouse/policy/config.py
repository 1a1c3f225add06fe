"""
Read the C{policy}, C{masking} and C{approval} sections of a configuration
file, and find the mistakes a reader would miss: rules that can never
match (an unknown statement kind, a target pattern no target meets, a rule
hidden behind an earlier catch-all), unknown targets and groups, regular
expressions that do not compile.

Every problem goes through the L{ConfigSection} it was found in, so it
carries the full key path like every other configuration error.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

import attrs

from gatehouse._suggest import suggest as _suggest
from gatehouse.policy.attributes import (
    REGEX,
    Condition,
    PolicyAttribute,
    PolicyAttributes,
)
from gatehouse.policy.detectors import DETECTORS, compile_pattern
from gatehouse.policy.masking import MaskingRule
from gatehouse.policy.rules import (
    ACTIONS,
    ERROR,
    FALLBACK_ACTIONS,
    OPAQUE,
    UNPARSEABLE,
    Decision,
    Policy,
    RecordScope,
    Rule,
    Scope,
)
from gatehouse.protocols import get_protocol, protocol_names

if TYPE_CHECKING:
    from gatehouse.config import ConfigSection, TargetConfig

__all__ = [
    "ApprovalConfig",
    "MaskingScope",
    "WebhookConfig",
    "parse_approval",
    "parse_masking",
    "parse_policy",
]

_DEFAULT_TIMEOUT = 300.0
_MAX_TIMEOUT = 7 * 86400.0


@attrs.frozen
class WebhookConfig:
    """Where approval requests are announced (Slack-compatible JSON POST)."""

    url: str
    retries: int = 5
    timeout: float = 10.0


@attrs.frozen
class ApprovalConfig:
    """
    How approvers learn of requests.

    @ivar admin_url: the admin API's URL as approvers reach it; shown in the
        notice a waiting client gets and in webhook messages.
    @ivar admin_ca_file: the CA certificates (PEM) that verify the admin
        API's certificate at C{admin_url}: shown with it as C{--ca-file},
        and trusted by C{gatehouse approvals --config}.
    """

    webhook: WebhookConfig | None = None
    admin_url: str | None = None
    admin_ca_file: str | None = None


@attrs.frozen
class MaskingScope:
    """
    A masking rule and the sessions it applies to: those whose identity
    has one of C{groups} (C{"*"}: all) and none of C{except_groups}, on a
    target matching one of C{targets} (all when empty), speaking one of
    C{protocols} (all when empty).
    """

    rule: MaskingRule
    groups: frozenset[str] = frozenset({"*"})
    except_groups: frozenset[str] = frozenset()
    targets: tuple[str, ...] = ()
    protocols: frozenset[str] = frozenset()
    _scope: Scope = attrs.field(init=False, eq=False)

    def __attrs_post_init__(self) -> None:
        scope = Scope(
            self.groups,
            self.targets,
            self.protocols,
            except_groups=self.except_groups,
        )
        object.__setattr__(self, "_scope", scope)

    def applies(
        self, groups: Iterable[str], target: str, protocol: str | None = None
    ) -> bool:
        """
        Whether the rule masks this session's results (C{protocol} None:
        whatever its protocol).
        """
        return self._scope.holds(groups, target, protocol)


class _Vocabulary:
    """
    What names a policy may use: targets, groups, and the attributes each
    protocol declares (L{IProtocolAdapter.policy_attributes}).
    """

    def __init__(self, targets: Sequence[TargetConfig], groups: frozenset[str] | None):
        self.targets = {t.name: t.protocol for t in targets}
        self.groups = groups
        self._rule_keys: dict[str, PolicyAttribute] | None = None

    def attributes(self, protocol: str) -> PolicyAttributes:
        """What rules may say about C{protocol}'s commands (nothing if unknown)."""
        try:
            found: PolicyAttributes = get_protocol(protocol).policy_attributes
        except KeyError:
            return PolicyAttributes()
        return found

    def rule_keys(self) -> dict[str, PolicyAttribute]:
        """
        Every rule key some protocol declares (aliases included), with the
        first protocol's declaration of it.
        """
        if self._rule_keys is None:
            self._rule_keys = {}
            for protocol in protocol_names():
                for attribute in self.attributes(protocol).attributes:
                    for key in attribute.keys:
                        self._rule_keys.setdefault(key, attribute)
        return self._rule_keys

    def check_groups(
        self, section: ConfigSection, key: str, groups: Iterable[str]
    ) -> None:
        if self.groups is None:
            return
        for group in groups:
            if group != "*" and group not in self.groups:
                section.problem(
                    f"unknown group {group!r}{_suggest(group, self.groups)}; "
                    "policy.groups lists the known ones",
                    key,
                )

    def matching_targets(
        self, section: ConfigSection, key: str, patterns: Sequence[str]
    ) -> set[str]:
        """The configured targets the patterns name; report those naming none."""
        found: set[str] = set()
        for pattern in patterns:
            hits = {n for n in self.targets if fnmatch.fnmatchcase(n, pattern)}
            if not hits:
                section.problem(
                    f"no target named {pattern!r}{_suggest(pattern, self.targets)}",
                    key,
                )
            found |= hits
        return found


def _names(section: ConfigSection, key: str) -> tuple[str, ...]:
    return section.strings(key, single=True)


def _action(
    section: ConfigSection, key: str, default: str, actions: Sequence[str] = ACTIONS
) -> str:
    value = section.string(key, default)
    if value not in actions:
        hint = _suggest(value, actions)
        if value == ERROR:
            hint = "; error is only for policy.unparseable"
        section.problem(f"{value!r} is not one of {', '.join(actions)}{hint}", key)
        return default
    return value


@attrs.frozen
class _ReviewDefaults:
    approvers: tuple[str, ...] = ()
    approvals: int = 1
    timeout: float = _DEFAULT_TIMEOUT


def _review_fields(
    section: ConfigSection, defaults: _ReviewDefaults, vocabulary: _Vocabulary
) -> _ReviewDefaults:
    approvers = _names(section, "approvers") or defaults.approvers
    vocabulary.check_groups(section, "approvers", approvers)
    approvals = section.integer("approvals", defaults.approvals, minimum=1, maximum=10)
    timeout = section.duration(
        "timeout", defaults.timeout, positive=True, maximum=_MAX_TIMEOUT
    )
    return _ReviewDefaults(approvers, approvals, timeout)


def parse_policy(
    section: ConfigSection | None, targets: Sequence[TargetConfig]
) -> Policy:
    """
    Read the C{policy} section (absent: allow everything parseable, review
    the rest).
    """
    if section is None:
        return Policy()
    declared = _names(section, "groups")
    vocabulary = _Vocabulary(targets, frozenset(declared) if declared else None)
    review_section = section.section("review")
    defaults = _ReviewDefaults(approvers=())
    if review_section is not None:
        defaults = _review_fields(review_section, defaults, vocabulary)
        review_section.finish()

    def fallback(key: str, default: str, actions: Sequence[str] = ACTIONS) -> Decision:
        action = _action(section, key, default, actions)
        if action == "review" and not defaults.approvers:
            section.problem(
                f"{key}: review needs approvers; set policy.review.approvers",
                key,
            )
        return Decision(
            action,
            key,
            message=f"{key} statements are not allowed here"
            if action == "deny"
            else None,
            approvers=defaults.approvers if action == "review" else (),
            approvals=defaults.approvals,
            timeout=defaults.timeout,
        )

    default = fallback("default", "allow")
    unparseable = fallback("unparseable", ERROR, FALLBACK_ACTIONS)
    opaque = fallback("opaque", "review")
    forwards = fallback("forwards", "deny")
    if forwards.action == "deny":
        forwards = attrs.evolve(forwards, message="no policy rule allows this forward")
    rules: list[Rule] = []
    names: dict[str, str] = {}
    for rule_section in section.sections("rules"):
        rule = _parse_rule(rule_section, defaults, vocabulary)
        if rule is None:
            continue
        if rule.name in names:
            rule_section.problem(
                f"{rule.name} is already used by {names[rule.name]}", "name"
            )
        names[rule.name] = rule_section.path
        _check_reachable(rule, rules, rule_section, vocabulary)
        rules.append(rule)
    scopes = []
    for scope_section in section.sections("record"):
        groups = _names(scope_section, "groups")
        vocabulary.check_groups(scope_section, "groups", groups)
        scope_targets = _names(scope_section, "targets")
        vocabulary.matching_targets(scope_section, "targets", scope_targets)
        scopes.append(
            RecordScope(
                groups=frozenset(groups),
                targets=scope_targets,
                protocols=frozenset(_protocols(scope_section)),
                record=scope_section.boolean("record", True),
            )
        )
        scope_section.finish()
    section.finish()
    return Policy(
        groups=vocabulary.groups,
        rules=tuple(rules),
        default=default,
        unparseable=unparseable,
        opaque=opaque,
        forwards=forwards,
        record_scopes=tuple(scopes),
    )


def _protocols(section: ConfigSection) -> tuple[str, ...]:
    protocols = _names(section, "protocols")
    known = protocol_names()
    for protocol in protocols:
        if protocol not in known:
            section.problem(
                f"unknown protocol {protocol!r}{_suggest(protocol, known)}",
                "protocols",
            )
    return protocols


def _parse_rule(
    section: ConfigSection, defaults: _ReviewDefaults, vocabulary: _Vocabulary
) -> Rule | None:
    name = section.string("name", required=True)
    section.get("action", required=True)
    action = _action(section, "action", "deny")
    groups = _names(section, "groups")
    vocabulary.check_groups(section, "groups", groups)
    targets = _names(section, "targets")
    protocols = _protocols(section)
    # Conditions: every key a protocol declares is read here (so an unknown
    # key gets a did-you-mean among them); whether the protocols in the
    # rule's scope declare it is checked below.
    given: dict[str, tuple[str, ...]] = {}
    for key, attribute in vocabulary.rule_keys().items():
        if attribute.match == REGEX:
            text = section.string(key)
            if text is not None:
                try:
                    re.compile(text)
                except re.error as e:
                    section.problem(f"not a valid regular expression: {e}", key)
                else:
                    given[key] = (text,)
        else:
            values = _names(section, key)
            if values:
                given[key] = values
    message = section.string("message")
    review = _review_fields(section, defaults, vocabulary)
    if action == "review" and not review.approvers:
        section.problem(
            "a review rule needs approvers (here or in policy.review)", "approvers"
        )
    section.finish()
    if name is None:
        return None
    # The protocols the rule can apply to: its own, or its targets'.
    in_scope = set(protocols)
    if targets:
        target_protocols = {
            vocabulary.targets[t]
            for t in vocabulary.matching_targets(section, "targets", targets)
        }
        if protocols and target_protocols and not target_protocols & in_scope:
            section.problem(
                "can never match: its targets speak "
                f"{', '.join(sorted(target_protocols))}, not "
                f"{', '.join(sorted(in_scope))}",
                "protocols",
            )
        in_scope = in_scope & target_protocols if in_scope else target_protocols
    text, conditions = _conditions(section, given, in_scope, vocabulary)
    return Rule(
        name=name,
        action=action,
        groups=frozenset(groups),
        targets=targets,
        protocols=frozenset(protocols),
        conditions=conditions,
        text=text,
        message=message,
        approvers=review.approvers if action == "review" else (),
        approvals=review.approvals,
        timeout=review.timeout,
    )


def _conditions(
    section: ConfigSection,
    given: dict[str, tuple[str, ...]],
    in_scope: set[str],
    vocabulary: _Vocabulary,
) -> tuple[str | None, tuple[Condition, ...]]:
    """
    The rule's text and conditions, as the protocols in its scope (all
    when none is named) declare its keys; report keys none of them
    declares, keys they declare differently, and words no command carries.
    """
    known = set(protocol_names())
    candidates = sorted((in_scope or known) & known)
    if not candidates:
        return None, ()  # only unknown protocols: reported already
    declarations = {p: vocabulary.attributes(p) for p in candidates}
    text = None
    # canonical key -> (attribute, protocols declaring it, values); aliases
    # add to their key's values
    merged: dict[str, tuple[PolicyAttribute, frozenset[str], tuple[str, ...]]] = {}
    for key, values in given.items():
        declared = {
            p: a for p, d in declarations.items() if (a := d.get(key)) is not None
        }
        if not declared:
            section.problem(
                f"can never match: {', '.join(candidates)} commands have no {key}",
                key,
            )
            continue
        first = next(iter(declared.values()))
        if any(not a.same_meaning(first) for a in declared.values()):
            section.problem(
                f"{key} means different things for "
                f"{', '.join(sorted(declared))} commands; limit the rule with "
                "protocols or targets",
                key,
            )
            continue
        if first.match == REGEX:
            text = values[0]
            continue
        _check_words(section, key, values, first.field, declared.values())
        if first.key in merged:
            values = merged[first.key][2] + values
        merged[first.key] = (first, frozenset(declared), values)
    conditions = tuple(
        Condition(
            key,
            attribute.field,
            attribute.match,
            tuple(dict.fromkeys(values)),
            protocols,
        )
        for key, (attribute, protocols, values) in merged.items()
    )
    return text, conditions


def _check_words(
    section: ConfigSection,
    key: str,
    words: Sequence[str],
    field: str,
    declared: Iterable[PolicyAttribute],
) -> None:
    """Report words (kinds, flags, ...) no command in scope ever carries."""
    # Unparseable and opaque commands are the policy's own: always nameable.
    known: set[str] = {UNPARSEABLE} if field == "kinds" else set()
    if field == "flags":
        known.add(OPAQUE)
    for attribute in declared:
        if attribute.words is None:
            return  # a protocol that does not say: accept anything
        known |= attribute.words
    for word in words:
        if word not in known:
            section.problem(
                f"can never match: no command has {key} {word!r}"
                f"{_suggest(word, known)}",
                key,
            )


def _covers(earlier: Iterable[str], later: Iterable[str]) -> bool:
    earlier = set(earlier)
    later = set(later)
    if not earlier or "*" in earlier:
        return True
    return bool(later) and "*" not in later and later <= earlier


def _check_reachable(
    rule: Rule, before: Sequence[Rule], section: ConfigSection, vocabulary: _Vocabulary
) -> None:
    """Report a rule that an earlier unconditional rule always pre-empts."""
    if rule.names_fallback:
        return  # catch-alls never take unparseable or opaque commands
    for earlier in before:
        if earlier.conditional:
            continue
        if not _covers(earlier.groups, rule.groups):
            continue
        if not _covers(earlier.protocols, rule.protocols):
            continue
        if earlier.targets:
            mine = (
                {
                    n
                    for n in vocabulary.targets
                    if any(fnmatch.fnmatchcase(n, t) for t in rule.targets)
                }
                if rule.targets
                else set(vocabulary.targets)
            )
            theirs = {
                n
                for n in vocabulary.targets
                if any(fnmatch.fnmatchcase(n, t) for t in earlier.targets)
            }
            if not mine <= theirs:
                continue
        section.problem(
            f"can never match: rule {earlier.name!r} before it applies to "
            "every command in its scope",
        )
        return


def parse_masking(
    sections: Sequence[ConfigSection],
    targets: Sequence[TargetConfig],
    groups: frozenset[str] | None = None,
) -> tuple[MaskingScope, ...]:
    """Read the C{masking} list."""
    if not sections:
        return ()
    vocabulary = _Vocabulary(targets, groups)
    scopes = []
    for section in sections:
        name = section.string("name", required=True)
        detectors = _names(section, "detect")
        for detector in detectors:
            if detector not in DETECTORS:
                section.problem(
                    f"unknown detector {detector!r}; known: "
                    f"{', '.join(sorted(DETECTORS))}{_suggest(detector, DETECTORS)}",
                    "detect",
                )
        patterns = []
        raw = section.get("patterns")
        if raw is not None:
            if not isinstance(raw, dict) or not raw:
                section.problem(
                    "expected a mapping of name: regular expression", "patterns"
                )
            else:
                for key, value in raw.items():
                    if not isinstance(value, str):
                        section.problem(
                            "expected a regular expression", f"patterns.{key}"
                        )
                        continue
                    _, error = compile_pattern(value)
                    if error:
                        section.problem(
                            f"not a valid regular expression: {error}",
                            f"patterns.{key}",
                        )
                    else:
                        patterns.append((str(key), value))
        columns = _names(section, "columns")
        relation_columns = _names(section, "relation_columns")
        for column in relation_columns:
            if column.count(".") not in (1, 2):
                section.problem(
                    f"{column!r}: expected table.column or schema.table.column",
                    "relation_columns",
                )
        scope_groups = _names(section, "groups") or ("*",)
        vocabulary.check_groups(section, "groups", scope_groups)
        except_groups = _names(section, "except_groups")
        vocabulary.check_groups(section, "except_groups", except_groups)
        scope_targets = _names(section, "targets")
        matched = vocabulary.matching_targets(section, "targets", scope_targets)
        protocols = _protocols(section)
        speak = {vocabulary.targets[t] for t in matched}
        if protocols and speak and speak.isdisjoint(protocols):
            section.problem(
                f"can never apply: its targets speak {', '.join(sorted(speak))}, "
                f"not {', '.join(sorted(protocols))}",
                "protocols",
            )
        secrets = section.boolean("secrets")
        if not (detectors or patterns or columns or relation_columns or secrets):
            section.problem(
                "masks nothing: give detect, patterns, columns, relation_columns "
                "or secrets"
            )
        section.finish()
        if name is None:
            continue
        scopes.append(
            MaskingScope(
                rule=MaskingRule(
                    name=name,
                    detectors=frozenset(detectors),
                    patterns=tuple(patterns),
                    columns=columns,
                    relation_columns=relation_columns,
                    secrets=secrets,
                ),
                groups=frozenset(scope_groups),
                except_groups=frozenset(except_groups),
                targets=scope_targets,
                protocols=frozenset(protocols),
            )
        )
    return tuple(scopes)


def parse_approval(section: ConfigSection | None) -> ApprovalConfig:
    """Read the C{approval} section."""
    if section is None:
        return ApprovalConfig()
    webhook = None
    webhook_section = section.section("webhook")
    if webhook_section is not None:
        url = webhook_section.url("url", required=True)
        retries = webhook_section.integer("retries", 5, minimum=0, maximum=20)
        timeout = webhook_section.duration("timeout", 10.0, positive=True, maximum=300)
        webhook_section.finish()
        if url is not None:
            webhook = WebhookConfig(url=url, retries=retries, timeout=timeout)
    admin_url = section.url("admin_url")
    admin_ca_file = section.readable_file("admin_ca_file")
    if admin_ca_file is not None and admin_url is None:
        section.problem("needs admin_url (the URL it verifies)", "admin_ca_file")
    section.finish()
    return ApprovalConfig(
        webhook=webhook, admin_url=admin_url, admin_ca_file=admin_ca_file
    )
