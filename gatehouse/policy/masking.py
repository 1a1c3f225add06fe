"""
Masking of sensitive values, independent of any wire protocol.

A L{Masker} combines the L{MaskingRule}s that apply to one session.  It
answers two questions: does a structural rule cover this part of a result
(a whole column, by its name or its C{schema.table.column} name; a JSON
object member named like a masked column), and where in a value are the
card numbers, e-mail addresses, IBANs and user-defined patterns that must
be replaced (the value detectors, L{gatehouse.policy.detectors}).
"""

from __future__ import annotations

import fnmatch
import json
import re
from collections.abc import Sequence

import attrs

from gatehouse.policy.detectors import (
    DETECTORS,
    JSON,
    NUMERIC,
    TEXT,
    ValueDetectors,
    compile_pattern,
)

__all__ = [
    "DETECTORS",
    "JSON",
    "NUMERIC",
    "TEXT",
    "Masker",
    "MaskingRule",
    "compile_pattern",
]


@attrs.frozen
class MaskingRule:
    """
    What one configured masking rule masks.

    @ivar name: the rule's name, for messages.
    @ivar detectors: built-in detectors to run on values (L{DETECTORS}).
    @ivar patterns: C{(name, regular expression)} pairs; every match in a
        value is masked.
    @ivar columns: globs (L{fnmatch}, case-insensitive) on result column
        names, e.g. C{"*password*"}; a matching column is masked whole.
    @ivar relation_columns: globs on C{schema.table.column}; a glob of two
        parts, C{table.column}, matches in any schema.
    @ivar secrets: the values of Kubernetes C{Secret} objects (C{data},
        C{stringData}) are masked whole.
    """

    name: str
    detectors: frozenset[str] = frozenset()
    patterns: tuple[tuple[str, str], ...] = ()
    columns: tuple[str, ...] = ()
    relation_columns: tuple[str, ...] = ()
    secrets: bool = False


_DIGITS_B = re.compile(rb"[0-9]")


class _RawJSON(str):
    """A JSON number or constant, kept as it was written."""


class _Pairs(list[tuple[str, object]]):
    """A JSON object, its members in order (duplicates kept)."""


def _json_text(value: object) -> str:
    if isinstance(value, _RawJSON):
        return value
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if value is True:
        return "true"
    if value is False:
        return "false"
    if value is None:
        return "null"
    if isinstance(value, _Pairs):
        return (
            "{" + ", ".join(f"{_json_text(k)}: {_json_text(v)}" for k, v in value) + "}"
        )
    if isinstance(value, list):
        return "[" + ", ".join(_json_text(v) for v in value) + "]"
    raise TypeError(f"not a decoded JSON value: {value!r}")


def _globs(globs: Sequence[str]) -> re.Pattern[str] | None:
    if not globs:
        return None
    return re.compile("|".join(fnmatch.translate(g) for g in globs), re.IGNORECASE)


class Masker(ValueDetectors):
    """
    The masking rules of one session, compiled: the value detectors
    (L{ValueDetectors}: L{might_match}, L{candidates}, L{mask}) and the
    structural rules (L{column_masked}, L{mask_json_keys}).

    @ivar active: whether there is any rule at all.
    @ivar scans_values: whether values must be scanned (a detector or a
        pattern).
    @ivar has_column_rules: whether a rule names result columns.
    @ivar has_relation_rules: whether a rule names C{schema.table.column}s
        (the protocol then needs a catalog to name its result columns).
    @ivar has_patterns: whether there are user patterns (which no
        pre-check can rule out).
    """

    def __init__(self, rules: Sequence[MaskingRule]):
        self.rules = tuple(rules)
        detectors: set[str] = set()
        patterns: list[re.Pattern[str]] = []
        columns: list[str] = []
        full: list[str] = []
        short: list[str] = []
        for rule in self.rules:
            unknown = rule.detectors - DETECTORS
            if unknown:
                raise ValueError(f"rule {rule.name!r}: unknown detectors {unknown}")
            detectors |= rule.detectors
            for name, text in rule.patterns:
                pattern, error = compile_pattern(text)
                if pattern is None:
                    raise ValueError(f"rule {rule.name!r}, pattern {name!r}: {error}")
                patterns.append(pattern)
            columns.extend(rule.columns)
            for glob in rule.relation_columns:
                parts = glob.split(".")
                if len(parts) >= 3:
                    full.append(".".join(parts[-3:]))
                else:
                    full.append("*." + glob)
                short.append(".".join(parts[-2:]) if len(parts) >= 2 else "*." + glob)
        ValueDetectors.__init__(self, detectors, patterns)
        self._columns = _globs(columns)
        # JSON keys that name a masked column (to_json(t), json_agg(t),
        # jsonb_build_object('ssn', ...)): the column globs, and the column
        # part of the relation globs.
        self._keys = _globs(
            columns
            + [g.rsplit(".", 1)[-1] for r in self.rules for g in r.relation_columns]
        )
        self._full = _globs(full)
        self._short = _globs(short)
        self.active = bool(self.rules)
        #: whether Kubernetes Secret values are masked
        self.masks_secrets = any(rule.secrets for rule in self.rules)
        self.has_column_rules = bool(columns)
        self.has_relation_rules = bool(full)

    def column_masked(self, column: str | None, relation_column: str | None) -> bool:
        """
        Whether a whole-column rule covers a result column.

        @param column: the column's name in the result (its label).
        @param relation_column: the C{schema.table.column} it comes from,
            if known.  A C{table.column} name (schema unknown) matches the
            rules for that table and column in any schema.  Column-name
            rules also match the column part, so an alias does not hide a
            table's column.
        """
        names = self._columns
        if names is not None and column is not None and names.match(column):
            return True
        if relation_column is None:
            return False
        parts = relation_column.split(".")
        if names is not None and names.match(parts[-1]):
            return True
        if len(parts) >= 3:
            return self._full is not None and bool(
                self._full.match(".".join(parts[-3:]))
            )
        return self._short is not None and bool(self._short.match(relation_column))

    def mask_json_keys(self, text: str) -> tuple[str | None, int]:
        """
        Mask, in JSON text, the value of every object member whose key
        names a masked column (a column glob, or the column part of a
        relation glob), as the JSON string C{"***"}.

        @return: the JSON text (re-serialised only where something was
            masked) and the number of values masked; C{(None, 0)} if the
            text is not JSON (the caller withholds it).
        """
        keys = self._keys
        if keys is None or ":" not in text:
            return text, 0
        try:
            value = json.loads(
                text,
                object_pairs_hook=_Pairs,
                parse_int=_RawJSON,
                parse_float=_RawJSON,
                parse_constant=_RawJSON,
            )
        except (ValueError, RecursionError):
            return None, 0
        hits = 0
        stack = [value]
        while stack:
            item = stack.pop()
            if isinstance(item, _Pairs):
                for i, (key, member) in enumerate(item):
                    if keys.match(key):
                        if member is not None:
                            item[i] = (key, "***")
                            hits += 1
                    elif isinstance(member, list):
                        stack.append(member)
            elif isinstance(item, list):
                stack.extend(v for v in item if isinstance(v, list))
        if not hits:
            return text, 0
        return _json_text(value), hits

    def mask_text(self, value: str) -> tuple[str, int]:
        """
        Mask every detected occurrence in C{value}.

        @return: the masked text and the number of occurrences masked.
        """
        return self.mask(value, TEXT)

    @staticmethod
    def mask_whole(value: str) -> str:
        """Mask a whole value: as many C{*} as it has characters."""
        return "*" * len(value)

    @staticmethod
    def zero_digits(raw: bytes) -> bytes:
        """Mask numeric text whole, keeping it a valid number: digits to C{0}."""
        return _DIGITS_B.sub(b"0", raw)
