"""
What policy rules can say about PostgreSQL statements: the attributes the
C{postgres} adapter declares (L{gatehouse.policy.attributes}).

Relations and functions match as SQL names: the schema of an unqualified
name depends on the client's C{search_path}, so a qualified pattern
(C{hr.salaries}) also matches an unqualified C{salaries}, and an
unqualified name is in every schema a C{schema:} rule names.  The
categories are this protocol's data (L{categories}).
"""

from __future__ import annotations

from gatehouse.policy.attributes import (
    ALL,
    ANY,
    REGEX,
    SQL_NAME,
    SQL_SCHEMA,
    PolicyAttribute,
    PolicyAttributes,
)
from gatehouse.protocols.postgres.categories import CATEGORIES
from gatehouse.protocols.postgres.commands import COMMAND_FLAGS, COMMAND_KINDS

__all__ = ["POLICY_ATTRIBUTES"]

POLICY_ATTRIBUTES = PolicyAttributes(
    (
        PolicyAttribute(
            "kind",
            ANY,
            "kinds",
            COMMAND_KINDS,
            doc="statement kinds (libpg_query node names) it is, wraps or nests",
        ),
        PolicyAttribute(
            "category",
            ANY,
            "categories",
            frozenset(CATEGORIES),
            doc="categories of statement (read, write, destructive, ddl, ...)",
        ),
        PolicyAttribute(
            "flag",
            ALL,
            "flags",
            COMMAND_FLAGS,
            doc="facts about the statement (no-where, copy-program, opaque, ...)",
        ),
        PolicyAttribute(
            "object",
            SQL_NAME,
            "objects",
            aliases=("relation",),
            doc="relations it touches (globs over SQL names)",
        ),
        PolicyAttribute(
            "schema",
            SQL_SCHEMA,
            "objects",
            doc="schemas of the relations it touches",
        ),
        PolicyAttribute(
            "function",
            SQL_NAME,
            "functions",
            doc="functions it calls (globs over SQL names)",
        ),
        PolicyAttribute(
            "text",
            REGEX,
            "normalized",
            doc="a regular expression searched in the normalised text",
        ),
    )
)
