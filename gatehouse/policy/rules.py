"""
Policy: what each identity may do on each target, command by command.

The configuration's C{policy} section is a list of rules, evaluated top to
bottom; the first rule whose scope (identity groups, targets, protocols)
and conditions (command kind, category, objects, schemas, functions,
flags, text) all hold decides.  A decision is C{allow}, C{deny} (with a
message for the client) or C{review} (paused for approval by other
people).

Two kinds of command never fall through to the catch-all: text the
protocol's parser rejects (kind C{Unparseable}) and commands whose effect
the gateway cannot see (C{opaque}: a PostgreSQL C{DO} block or a function
body).  They match only rules that name them explicitly; otherwise the
policy's C{unparseable} and C{opaque} actions apply: C{error} (the
client gets the parser's own error, as from the database) and C{review}
by default.  Nothing is ever allowed because it could not be understood.

The engine is protocol-neutral: a protocol turns what its client sent into
L{Command} values (PostgreSQL: one per SQL statement, classified by
libpg_query) and asks L{Policy.decide}.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence

import attrs

from gatehouse.policy.attributes import (
    ALL,
    ANY,
    COMMAND_FIELDS,
    SQL_NAME,
    SQL_SCHEMA,
    Condition,
    glob,
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
    "combine",
    "normalized_text",
    "register_normalizer",
]

ACTIONS = ("allow", "deny", "review")
#: The action that answers a command with the protocol's own error for it
#: (PostgreSQL: a syntax error, 42601, with its position); only for the
#: policy's C{unparseable} fallback.
ERROR = "error"
#: Actions the C{unparseable} fallback may take.
FALLBACK_ACTIONS = (*ACTIONS, ERROR)
#: The kind of a command its protocol's parser rejects.
UNPARSEABLE = "Unparseable"
#: The flag of a command whose effect cannot be seen (DO blocks, function bodies).
OPAQUE = "opaque"
#: The kind of a tunnel to a network destination (SSH C{direct-tcpip}):
#: only rules that name this kind decide one; else the C{forwards} fallback.
FORWARD = "forward"

_SEVERITY = {"allow": 0, "review": 1, "deny": 2, ERROR: 3}
_normalizers: dict[str, Callable[[str], str]] = {}


def register_normalizer(protocol: str, normalizer: Callable[[str], str]) -> None:
    """
    Have C{normalizer(text)} compute the normalised text of C{protocol}'s
    commands, on demand (only text rules need it).
    """
    _normalizers[protocol] = normalizer


def normalized_text(command: Command) -> str:
    """The command's normalised text, computed if the protocol left it empty."""
    if command.normalized:
        return command.normalized
    normalizer = _normalizers.get(command.protocol)
    return normalizer(command.text) if normalizer is not None else command.text


@attrs.frozen
class Command:
    """
    One command a client sent, as its protocol understood it.

    @ivar protocol: C{"postgres"}, C{"ssh"}, C{"http"}, ...
    @ivar kind: what sort of command it is (C{"DropStmt"}, C{"exec"},
        C{"get"}), or C{"Unparseable"}.
    @ivar text: the command as the client sent it.
    @ivar objects: what it touches (relations, paths, resources), as named.
    @ivar kinds: every kind the command amounts to: its own, and those it
        wraps or nests (an C{EXPLAIN ANALYZE DELETE} is also a
        C{DeleteStmt}).  Defaults to C{{kind}}.
    @ivar functions: functions it calls, as named.
    @ivar flags: protocol-defined facts (C{"no-where"}, C{"copy-program"},
        C{"opaque"}, ...).
    @ivar normalized: the text in canonical form (keywords in one case, no
        comments, single spaces) for regular-expression rules.  Empty: ask
        the protocol's normaliser (L{register_normalizer}) when a rule
        needs it; C{text} if the protocol has none.
    @ivar categories: protocol-defined categories of command (C{"read"},
        C{"write"}, C{"destructive"}, C{"ddl"}, C{"privilege"}, ...).
    @ivar extra: the protocol's other attributes, as (name, values) pairs
        (SSH: C{("program", ...)}, C{("argv", ...)}; see L{values}).
    """

    protocol: str
    kind: str
    text: str
    objects: tuple[str, ...] = ()
    kinds: frozenset[str] = attrs.field()
    functions: tuple[str, ...] = ()
    flags: frozenset[str] = frozenset()
    normalized: str = attrs.field()
    categories: frozenset[str] = frozenset()
    extra: tuple[tuple[str, tuple[str, ...]], ...] = ()

    @kinds.default
    def _kinds(self) -> frozenset[str]:
        return frozenset((self.kind,))

    @normalized.default
    def _normalized(self) -> str:
        return self.text

    def values(self, field: str) -> Iterable[str]:
        """
        The command's values of an attribute (L{PolicyAttribute.field}):
        one of the fields above, else an C{extra} one (none if absent).
        """
        if field in COMMAND_FIELDS:
            found: Iterable[str] = getattr(self, field)
            return found
        for name, values in self.extra:
            if name == field:
                return values
        return ()

    def as_json(self) -> dict[str, object]:
        """Kind, text and objects, for recordings and the admin API."""
        return {"kind": self.kind, "text": self.text, "objects": list(self.objects)}

    @property
    def unparseable(self) -> bool:
        """The protocol's parser rejected it."""
        return self.kind == UNPARSEABLE

    @property
    def opaque(self) -> bool:
        """Its effect cannot be seen by the gateway."""
        return OPAQUE in self.flags


@attrs.frozen
class Decision:
    """
    What the policy says about a command.

    @ivar action: C{"allow"}, C{"deny"}, C{"review"}, or C{"error"} (for
        an unparseable command: answer with the protocol's own error).
    @ivar rule: the name of the rule that decided (C{"default"},
        C{"unparseable"} or C{"opaque"} for the policy's own fallbacks).
    @ivar message: for the client, on deny (and review, as context).
    @ivar approvers: review: identity groups whose members may approve
        (C{"*"}: anyone but the requester).
    @ivar approvals: review: distinct approvers needed.
    @ivar timeout: review: seconds before the request expires (denied).
    """

    action: str
    rule: str
    message: str | None = None
    approvers: tuple[str, ...] = ()
    approvals: int = 1
    timeout: float = 300.0

    @property
    def allowed(self) -> bool:
        """The command may go ahead without anyone's say."""
        return self.action == "allow"


def combine(decisions: Iterable[Decision]) -> Decision | None:
    """
    The decision for several commands sent as one (a multi-statement
    query): the strictest one, error over deny over review over allow.  Of several
    reviews, the one needing most approvals (then the shortest timeout);
    if they name different approver groups, approvers must belong to
    every one of them (L{_joint_review}).
    """
    best: Decision | None = None
    reviews: list[Decision] = []
    for decision in decisions:
        if decision.action == "review":
            reviews.append(decision)
        if best is None:
            best = decision
            continue
        a, b = _SEVERITY[decision.action], _SEVERITY[best.action]
        if a > b or (
            a == b
            and decision.action == "review"
            and (decision.approvals, -decision.timeout)
            > (best.approvals, -best.timeout)
        ):
            best = decision
    if best is not None and best.action == "review":
        if any(set(r.approvers) != set(best.approvers) for r in reviews):
            return _joint_review(best, reviews)
    return best


def _joint_review(best: Decision, reviews: Sequence[Decision]) -> Decision:
    """
    One review for statements whose rules name different approver
    groups: an approver must satisfy each rule, so only the groups common
    to all of them (C{"*"} stands for any) qualify.  With none in common
    nobody could approve: the statements are refused, to be sent apart.
    """
    common: set[str] | None = None
    for review in reviews:
        groups = set(review.approvers)
        if "*" in groups:
            continue
        common = groups if common is None else common & groups
    rules = ", ".join(dict.fromkeys(r.rule for r in reviews))
    if common is not None and not common:
        return Decision(
            "deny",
            rules,
            message="these statements need approvers from different groups; "
            "send them one at a time",
        )
    return attrs.evolve(
        best,
        rule=rules,
        approvers=tuple(sorted(common)) if common is not None else ("*",),
    )


@attrs.frozen
class Scope:
    """
    Which sessions something applies to: identities with one of C{groups}
    (empty or C{"*"}: all) and none of C{except_groups}, on a target
    matching one of the C{targets} globs, speaking one of C{protocols}
    (empty: all).
    """

    groups: frozenset[str] = frozenset()
    targets: tuple[str, ...] = ()
    protocols: frozenset[str] = frozenset()
    except_groups: frozenset[str] = frozenset()
    _target_globs: tuple[re.Pattern[str], ...] = attrs.field(init=False, eq=False)

    def __attrs_post_init__(self) -> None:
        object.__setattr__(self, "_target_globs", tuple(map(glob, self.targets)))

    def holds(
        self, groups: Iterable[str], target: str, protocol: str | None = None
    ) -> bool:
        """Whether a session of this identity, target and protocol is in it."""
        if protocol is not None and self.protocols and protocol not in self.protocols:
            return False
        if self._target_globs and not any(g.match(target) for g in self._target_globs):
            return False
        if self.except_groups and not self.except_groups.isdisjoint(groups):
            return False
        if self.groups and "*" not in self.groups:
            if self.groups.isdisjoint(groups):
                return False
        return True


_ANY_OF, _ALL_OF, _CALL = range(3)
_INLINE = {ANY: _ANY_OF, ALL: _ALL_OF}


@attrs.frozen
class Rule:
    """
    One policy rule: a scope, conditions on the command, and an action.

    Empty scope or condition fields hold for everything.  Within a field
    any listed value may match; across fields all must.

    The condition fields below (C{kinds} to C{flags}) are a shorthand for
    the PostgreSQL-style L{Condition}s a configuration builds from its
    protocol's declared attributes (L{gatehouse.policy.attributes});
    C{conditions} holds any others.

    @ivar name: names the rule in decisions, errors and the recording.
    @ivar groups: identity groups the rule applies to (C{"*"}: everyone).
    @ivar targets: target names (globs) it applies to.
    @ivar protocols: protocols it applies to.
    @ivar kinds: command kinds (any of the command's L{Command.kinds}).
    @ivar categories: command categories (any of L{Command.categories}).
    @ivar objects: globs over the objects touched (see L{SQLNames}).
    @ivar schemas: schemas of the objects touched.
    @ivar functions: globs over functions called.
    @ivar flags: flags the command must all carry.
    @ivar text: regular expression searched in the normalised text.
    @ivar conditions: more conditions, all of which must hold.
    """

    name: str
    action: str
    groups: frozenset[str] = frozenset()
    targets: tuple[str, ...] = ()
    protocols: frozenset[str] = frozenset()
    kinds: frozenset[str] = frozenset()
    objects: tuple[str, ...] = ()
    schemas: frozenset[str] = frozenset()
    functions: tuple[str, ...] = ()
    flags: frozenset[str] = frozenset()
    text: str | None = None
    message: str | None = None
    categories: frozenset[str] = frozenset()
    approvers: tuple[str, ...] = ()
    approvals: int = 1
    timeout: float = 300.0
    conditions: tuple[Condition, ...] = ()
    _scope: Scope = attrs.field(init=False, eq=False)
    _conditions: tuple[Condition, ...] = attrs.field(init=False, eq=False)
    _checks: tuple[tuple[int, str, object], ...] = attrs.field(init=False, eq=False)
    _names_fallback: bool = attrs.field(init=False, eq=False)
    _names_forward: bool = attrs.field(init=False, eq=False)
    _regex: re.Pattern[str] | None = attrs.field(init=False, eq=False)

    def __attrs_post_init__(self) -> None:
        scope = Scope(self.groups, self.targets, self.protocols)
        object.__setattr__(self, "_scope", scope)
        shorthand = (
            ("kind", "kinds", ANY, self.kinds),
            ("category", "categories", ANY, self.categories),
            ("object", "objects", SQL_NAME, self.objects),
            ("schema", "objects", SQL_SCHEMA, self.schemas),
            ("function", "functions", SQL_NAME, self.functions),
            ("flag", "flags", ALL, self.flags),
        )
        conditions = tuple(
            Condition(key, field, match, tuple(sorted(values)))
            for key, field, match, values in shorthand
            if values
        )
        conditions += self.conditions
        object.__setattr__(self, "_conditions", conditions)
        # Set tests on the Command's own fields run inline (no Python call
        # per condition): deciding a new command is on the data path.
        checks: list[tuple[int, str, object]] = []
        for c in conditions:
            if c.field in COMMAND_FIELDS and c.match in (ANY, ALL):
                checks.append((_INLINE[c.match], c.field, frozenset(c.values)))
            else:
                checks.append((_CALL, c.field, c.test))
        object.__setattr__(self, "_checks", tuple(checks))
        names_fallback = any(
            (c.field == "kinds" and UNPARSEABLE in c.values)
            or (c.field == "flags" and OPAQUE in c.values)
            for c in conditions
        )
        object.__setattr__(self, "_names_fallback", names_fallback)
        object.__setattr__(
            self,
            "_names_forward",
            any(c.field == "kinds" and FORWARD in c.values for c in conditions),
        )
        regex = re.compile(self.text, re.IGNORECASE | re.DOTALL) if self.text else None
        object.__setattr__(self, "_regex", regex)

    @property
    def conditional(self) -> bool:
        """Whether the rule looks at the command at all."""
        return bool(self._conditions or self.text)

    @property
    def names_fallback(self) -> bool:
        """It explicitly names unparseable or opaque commands."""
        return self._names_fallback

    def in_scope(self, groups: Iterable[str], target: str, protocol: str) -> bool:
        """
        Whether the rule applies to this identity, target and protocol (a
        protocol that does not declare one of its conditions' keys is out).
        """
        for condition in self._conditions:
            if condition.protocols and protocol not in condition.protocols:
                return False
        return self._scope.holds(groups, target, protocol)

    def matches(self, command: Command) -> bool:
        """Whether the command meets every condition of the rule."""
        if (command.unparseable or command.opaque) and not self.names_fallback:
            return False
        if command.kind == FORWARD and not self._names_forward:
            # A catch-all rule does not open tunnels: a rule names forwards.
            return False
        for how, field, arg in self._checks:
            if how == _ANY_OF:
                if arg.isdisjoint(getattr(command, field)):  # type: ignore[attr-defined]
                    return False
            elif how == _ALL_OF:
                if not arg.issubset(getattr(command, field)):  # type: ignore[attr-defined]
                    return False
            elif not arg(command):  # type: ignore[operator]
                return False
        if self._regex is not None and not self._regex.search(normalized_text(command)):
            return False
        return True

    def decision(self) -> Decision:
        """What this rule says when it matches."""
        return Decision(
            action=self.action,
            rule=self.name,
            message=self.message,
            approvers=self.approvers,
            approvals=self.approvals,
            timeout=self.timeout,
        )


@attrs.frozen
class RecordScope:
    """
    Whether sessions in a scope have their data recorded.  Decisions,
    approvals and session events are recorded regardless.
    """

    groups: frozenset[str] = frozenset()
    targets: tuple[str, ...] = ()
    protocols: frozenset[str] = frozenset()
    record: bool = True
    _scope: Scope = attrs.field(init=False, eq=False)

    def __attrs_post_init__(self) -> None:
        scope = Scope(self.groups, self.targets, self.protocols)
        object.__setattr__(self, "_scope", scope)

    def applies(self, groups: Iterable[str], target: str, protocol: str) -> bool:
        """Whether this scope holds for the session."""
        return self._scope.holds(groups, target, protocol)


@attrs.frozen
class Policy:
    """
    The rules of one gateway, and its fallbacks.

    @ivar rules: evaluated in order; the first match decides.
    @ivar default: the decision when no rule matches.
    @ivar unparseable: the decision for unparseable commands no rule names
        (C{error} by default: the protocol's own error, nobody paged).
    @ivar opaque: the decision for opaque commands no rule names.
    @ivar record_scopes: first match says whether a session's data is
        recorded; recorded when none matches.
    @ivar groups: the identity groups the configuration declares
        (C{policy.groups}), or None if it declares none.
    """

    rules: tuple[Rule, ...] = ()
    default: Decision = Decision("allow", "default")
    # Without a policy section nobody is named to approve: such reviews
    # end denied at once (see Session.request_approval).
    unparseable: Decision = Decision(ERROR, "unparseable")
    opaque: Decision = Decision("review", "opaque")
    #: a forward no rule naming forwards decides
    forwards: Decision = Decision(
        "deny", "forwards", message="no policy rule allows this forward"
    )
    record_scopes: tuple[RecordScope, ...] = ()
    groups: frozenset[str] | None = None

    def for_session(
        self, groups: Sequence[str], target: str, protocol: str
    ) -> SessionPolicy:
        """The rules that apply to one session, resolved once at its start."""
        rules = tuple(
            rule for rule in self.rules if rule.in_scope(groups, target, protocol)
        )
        return SessionPolicy(self, rules)

    def records(self, groups: Sequence[str], target: str, protocol: str) -> bool:
        """Whether a session's data is recorded."""
        for scope in self.record_scopes:
            if scope.applies(groups, target, protocol):
                return scope.record
        return True


#: The decision for a message holding no command (an empty query).
_EMPTY = Decision("allow", "empty")


class SessionPolicy:
    """
    The policy as it applies to one session: only the rules in its scope,
    and a cache of decisions by command (commands repeat) and by shape.

    @ivar reads_text: some rule in scope matches the text (a regex), so
        commands of one shape may be decided differently.
    """

    MAX_CACHED = 4096

    def __init__(self, policy: Policy, rules: tuple[Rule, ...]):
        self.policy = policy
        self.rules = rules
        self.reads_text = any(rule.text for rule in rules)
        self._cache: dict[Command, Decision] = {}
        self._shapes: dict[str, Decision] = {}

    def decide(self, command: Command) -> Decision:
        """The decision for one command."""
        cached = self._cache.get(command)
        if cached is not None:
            return cached
        decision = self._decide(command)
        if len(self._cache) >= self.MAX_CACHED:
            self._cache.clear()
        self._cache[command] = decision
        return decision

    def _decide(self, command: Command) -> Decision:
        for rule in self.rules:
            if rule.matches(command):
                return rule.decision()
        if command.unparseable:
            return self.policy.unparseable
        if command.opaque:
            return self.policy.opaque
        if command.kind == FORWARD:
            return self.policy.forwards
        return self.policy.default

    def decide_all(
        self, commands: Sequence[Command], shape: str | None = None
    ) -> Decision:
        """
        The combined decision for commands sent together (L{combine}).

        @param shape: a key the protocol gives commands that differ only in
            their text's constants (PostgreSQL: the text with constants
            replaced).
            Unless a rule reads the text, such commands are decided once.
        """
        if not commands:
            return _EMPTY
        if shape is None or self.reads_text:
            return combine(self.decide(c) for c in commands)  # type: ignore[return-value]
        found = self._shapes.get(shape)
        if found is None:
            found = combine(self._decide(c) for c in commands)
            if len(self._shapes) >= self.MAX_CACHED:
                self._shapes.clear()
            self._shapes[shape] = found  # type: ignore[assignment]
        return found  # type: ignore[return-value]
