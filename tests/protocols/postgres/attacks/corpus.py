"""
The corpus's shape: attacks as data, one generated test method each.

A module lists its cases::

    CASES = [
        Attack("pipelined_scs_off", "SET standard_conforming_strings = off; ..."),
        Attack("set_config_scs", ..., note="a function call changes the reading"),
    ]

and its test class runs them::

    class DesyncTests(GatewayTestCase):
        def run_attack(self, attack: Attack) -> None:
            ...  # try attack.payload, then assert the server's state

    add_cases(DesyncTests, CASES)
"""

from __future__ import annotations

import re
from collections.abc import Iterable

import attrs

__all__ = ["Attack", "add_cases", "count"]

_NAME = re.compile(r"^[a-z0-9_]+$")
_registered: dict[str, int] = {}


@attrs.frozen
class Attack:
    """
    One attack.

    @ivar name: unique in its module; the test method is C{test_<name>}.
    @ivar payload: what the module's runner sends (SQL text, a list of
        statements, raw protocol messages: the module decides).
    @ivar note: what the attacker hopes for, for whoever reads a failure.
    @ivar expect: what the module's runner should see the server keep
        (module-defined; for example C{"intact"} or C{"refused"}).
    """

    name: str
    payload: object
    note: str = ""
    expect: object = None


def add_cases(cls: type, cases: Iterable[Attack], runner: str = "run_attack") -> type:
    """
    Add a C{test_<name>} method to C{cls} for each attack, calling
    C{getattr(self, runner)(attack)}.  Names must be unique per class.
    """
    seen: set[str] = set()
    for attack in cases:
        if not _NAME.match(attack.name):
            raise ValueError(f"attack name {attack.name!r}: use [a-z0-9_]")
        if attack.name in seen:
            raise ValueError(f"duplicate attack {attack.name!r} in {cls.__name__}")
        seen.add(attack.name)

        def test(self: object, attack: Attack = attack) -> None:
            getattr(self, runner)(attack)

        test.__name__ = f"test_{attack.name}"
        test.__doc__ = attack.note or None
        setattr(cls, test.__name__, test)
    _registered[f"{cls.__module__}.{cls.__qualname__}"] = len(seen)
    return cls


def count() -> int:
    """Attacks registered by the modules imported so far."""
    return sum(_registered.values())
