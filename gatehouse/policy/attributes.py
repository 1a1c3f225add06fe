"""
What policy rules can say about a command: attributes, declared by protocols.

A protocol's commands carry attributes (PostgreSQL: statement kinds,
categories, flags, the relations and functions named; SSH: the program and
its arguments; Kubernetes: verb, resource, namespace, name).  Each adapter
declares them as data, a L{PolicyAttributes}: for each rule key, which
field of L{Command} holds the values, how the rule's values match them (a
I{match} kind below) and, where the set is closed, the words a rule may
use.  The configuration reader accepts a rule key only when a protocol in
the rule's scope declares it, checks its words (with a did-you-mean), and
builds the rule's L{Condition}s from the declaration; the engine then
evaluates conditions without knowing any protocol.

Match kinds:

  - C{any}: the command carries any of the rule's words (C{kind:},
    C{category:}).
  - C{all}: the command carries all of the rule's words (C{flag:}).
  - C{glob}: any value matches any of the rule's shell globs, as a whole;
    dots are ordinary characters (a Kubernetes name C{web.v2}, an SSH
    program C{/usr/bin/*}).
  - C{sql-name}: globs over dotted SQL names, where the schema an
    unqualified name resolves to depends on the client's C{search_path}
    (L{SQLNames}).
  - C{sql-schema}: the schema part of dotted SQL names; an unqualified name
    is in every schema (its schema depends on the C{search_path}).
  - C{regex}: a regular expression searched in the command's normalised
    text (C{text:}); at most one such key per protocol.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Callable, Iterable
from operator import attrgetter, methodcaller
from typing import TYPE_CHECKING

import attrs

if TYPE_CHECKING:
    from gatehouse.policy.rules import Command

__all__ = [
    "ALL",
    "ANY",
    "COMMAND_FIELDS",
    "GLOB",
    "MATCHES",
    "REGEX",
    "RESERVED",
    "SQL_NAME",
    "SQL_SCHEMA",
    "Condition",
    "PolicyAttribute",
    "PolicyAttributes",
    "SQLNames",
]

ANY = "any"
ALL = "all"
GLOB = "glob"
SQL_NAME = "sql-name"
SQL_SCHEMA = "sql-schema"
REGEX = "regex"
#: The fields of L{Command} that hold values (others are its C{extra}).
COMMAND_FIELDS = frozenset(
    {"kind", "text", "objects", "kinds", "functions", "flags", "normalized"}
    | {"categories"}
)
#: Every match kind an attribute may declare.
MATCHES = (ANY, ALL, GLOB, SQL_NAME, SQL_SCHEMA, REGEX)
#: Keys a rule uses for itself and its scope: no attribute may take them.
RESERVED = frozenset(
    {"name", "action", "groups", "targets", "protocols", "message"}
    | {"approvers", "approvals", "timeout"}
)


def glob(pattern: str) -> re.Pattern[str]:
    """A shell glob as a compiled regular expression (whole value, case kept)."""
    return re.compile(fnmatch.translate(pattern))


def _last(name: str) -> str:
    return name.rsplit(".", 1)[-1]


@attrs.frozen
class SQLNames:
    """
    Globs over dotted SQL names.  A pattern without a dot matches the last
    part of a name; a qualified pattern matches a qualified name, and also
    an unqualified name whose last part it matches: the schema an
    unqualified name resolves to depends on the client's search_path,
    which the client controls, so the gateway assumes the worst.
    """

    patterns: tuple[str, ...]
    _bare: tuple[re.Pattern[str], ...] = attrs.field(init=False)
    _qualified: tuple[tuple[re.Pattern[str], re.Pattern[str]], ...] = attrs.field(
        init=False
    )

    def __attrs_post_init__(self) -> None:
        bare, qualified = [], []
        for pattern in self.patterns:
            if "." in pattern:
                qualified.append((glob(pattern), glob(_last(pattern))))
            else:
                bare.append(glob(pattern))
        object.__setattr__(self, "_bare", tuple(bare))
        object.__setattr__(self, "_qualified", tuple(qualified))

    def matches_any(self, names: Iterable[str]) -> bool:
        """Whether any of C{names} matches any pattern."""
        for name in names:
            last = _last(name)
            for pattern in self._bare:
                if pattern.match(last):
                    return True
            qualified = "." in name
            for full, tail in self._qualified:
                if qualified:
                    # "a.b.c" also stands for "b.c" (catalog-qualified).
                    if full.match(name) or full.match(name.split(".", 1)[-1]):
                        return True
                elif tail.match(last):
                    return True
        return False


def _schemas_match(schemas: frozenset[str], objects: Iterable[str]) -> bool:
    """
    Whether any object lies in one of C{schemas}.  Unqualified names match
    every schema rule (their schema depends on the client's search_path).
    """
    for name in objects:
        parts = name.split(".")
        if len(parts) == 1:
            return True
        if parts[-2] in schemas:
            return True
    return False


def _test(match: str, values: tuple[str, ...]) -> Callable[[Iterable[str]], bool]:
    """The predicate over a command's values for a rule's C{values}."""
    if match == ANY:
        words = frozenset(values)
        return lambda carried: not words.isdisjoint(carried)
    if match == ALL:
        required = frozenset(values)
        return required.issubset
    if match == GLOB:
        patterns = tuple(map(glob, values))
        return lambda carried: any(p.match(v) for v in carried for p in patterns)
    if match == SQL_NAME:
        return SQLNames(values).matches_any
    if match == SQL_SCHEMA:
        schemas = frozenset(values)
        return lambda carried: _schemas_match(schemas, carried)
    raise ValueError(f"{match!r} is not a match kind for a condition")


@attrs.frozen
class Condition:
    """
    One condition of a rule: the command's values of C{field} (see
    L{Command.values}) match the rule's C{values} as C{match} says.

    @ivar key: the rule key it was written as (for messages).
    @ivar protocols: the protocols that declare the key; the rule cannot
        apply to sessions of others (empty: any protocol).
    """

    key: str
    field: str
    match: str
    values: tuple[str, ...]
    protocols: frozenset[str] = frozenset()
    _holds: Callable[[Iterable[str]], bool] = attrs.field(
        init=False, eq=False, repr=False
    )
    #: C{test(command)}: whether the command meets the condition
    test: Callable[[Command], bool] = attrs.field(init=False, eq=False, repr=False)

    def __attrs_post_init__(self) -> None:
        holds = _test(self.match, self.values)
        object.__setattr__(self, "_holds", holds)
        get: Callable[[Command], Iterable[str]] = (
            attrgetter(self.field)
            if self.field in COMMAND_FIELDS
            else methodcaller("values", self.field)
        )

        def test(command: Command) -> bool:
            return holds(get(command))

        object.__setattr__(self, "test", test)

    def holds(self, values: Iterable[str]) -> bool:
        """Whether a command carrying C{values} meets the condition."""
        return self._holds(values)


@attrs.frozen
class PolicyAttribute:
    """
    One rule key a protocol's commands can be matched on.

    @ivar key: the key in a rule (C{"kind"}).
    @ivar match: how the rule's values match (one of L{MATCHES}).
    @ivar field: the L{Command} field (or extra attribute) holding the
        command's values (C{"kinds"}).
    @ivar words: the values a rule may name (a closed set: others are a
        load-time error with a did-you-mean); None when any value may be
        named.
    @ivar aliases: other keys that mean the same (C{relation} for
        C{object}).
    @ivar doc: what the attribute is, for documentation and errors.
    """

    key: str
    match: str = attrs.field()
    field: str
    words: frozenset[str] | None = None
    aliases: tuple[str, ...] = ()
    doc: str = ""

    @match.validator
    def _known_match(self, _attribute: object, value: str) -> None:
        if value not in MATCHES:
            raise ValueError(f"{value!r} is not one of {', '.join(MATCHES)}")

    @property
    def keys(self) -> tuple[str, ...]:
        """The key and its aliases."""
        return (self.key, *self.aliases)

    def same_meaning(self, other: PolicyAttribute) -> bool:
        """Whether a rule naming this key means the same for both protocols."""
        return (self.match, self.field) == (other.match, other.field)


@attrs.frozen
class PolicyAttributes:
    """
    Every rule key one protocol's commands can be matched on.
    """

    attributes: tuple[PolicyAttribute, ...] = ()

    def __attrs_post_init__(self) -> None:
        keys = [key for a in self.attributes for key in a.keys]
        if len(keys) != len(set(keys)):
            raise ValueError(f"a key is declared twice in {keys}")
        if not RESERVED.isdisjoint(keys):
            raise ValueError(f"{sorted(RESERVED & set(keys))}: a rule's own keys")
        if sum(a.match == REGEX for a in self.attributes) > 1:
            raise ValueError("at most one regex attribute (the text)")

    def get(self, key: str) -> PolicyAttribute | None:
        """The attribute a rule key (or alias) names, or None."""
        for attribute in self.attributes:
            if key in attribute.keys:
                return attribute
        return None

    @property
    def keys(self) -> tuple[str, ...]:
        """Every rule key, aliases included."""
        return tuple(key for a in self.attributes for key in a.keys)
