"""
Parse the human-friendly durations and sizes used in configuration files.

Durations: C{"200ms"}, C{"30s"}, C{"15m"}, C{"2h"}, C{"1d"}, and compounds such
as C{"1h30m"}.  Sizes: C{"512"} or C{"512B"}, decimal C{"8kB"}, C{"8MB"},
C{"1GB"}, C{"1TB"} and binary C{"16KiB"}, C{"16MiB"}, C{"1GiB"}, C{"1TiB"}.
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation

__all__ = ["format_duration", "parse_duration", "parse_size"]

_DURATION_UNITS: dict[str, Decimal] = {
    "ms": Decimal("0.001"),
    "s": Decimal(1),
    "m": Decimal(60),
    "h": Decimal(3600),
    "d": Decimal(86400),
}

_SIZE_UNITS: dict[str, int] = {
    "b": 1,
    "kb": 1000,
    "mb": 1000**2,
    "gb": 1000**3,
    "tb": 1000**4,
    "kib": 1024,
    "mib": 1024**2,
    "gib": 1024**3,
    "tib": 1024**4,
}

_NUMBER = r"(?:\d+(?:\.\d*)?|\.\d+)"
_DURATION_PART = re.compile(rf"({_NUMBER})\s*(ms|s|m|h|d)")
_DURATION = re.compile(rf"(?:{_NUMBER}\s*(?:ms|s|m|h|d)\s*)+")
_SIZE = re.compile(rf"({_NUMBER})\s*([a-z]*)", re.IGNORECASE)


def parse_duration(value: str | int | float) -> float:
    """
    Parse a duration into seconds.

    A bare number is only accepted when it is zero: C{flush_interval: 200}
    could mean 200 milliseconds as easily as 200 seconds, so a unit is
    required.

    @raise ValueError: with a message fit to show the user.
    """
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise ValueError(f"{value!r} is not a duration")
    if isinstance(value, int | float):
        if value == 0:
            return 0.0
        raise ValueError(
            f"{value} needs a unit, for example {value}s or {value}ms "
            "(units: ms, s, m, h, d)"
        )
    text = value.strip()
    if not _DURATION.fullmatch(text):
        raise ValueError(
            f"{value!r} is not a duration (examples: 200ms, 30s, 15m, 2h, 1h30m)"
        )
    total = sum(
        (
            Decimal(number) * _DURATION_UNITS[unit]
            for number, unit in _DURATION_PART.findall(text)
        ),
        Decimal(0),
    )
    return float(total)


def parse_size(value: str | int) -> int:
    """
    Parse a size into a whole number of bytes.

    Units are case-insensitive; C{kB}/C{MB}/C{GB}/C{TB} are powers of 1000 and
    C{KiB}/C{MiB}/C{GiB}/C{TiB} powers of 1024.  A bare integer is bytes.

    @raise ValueError: with a message fit to show the user.
    """
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ValueError(f"{value!r} is not a size")
    if isinstance(value, int):
        if value < 0:
            raise ValueError(f"{value} is negative")
        return value
    match = _SIZE.fullmatch(value.strip())
    if match is None:
        raise ValueError(
            f"{value!r} is not a size (examples: 4096, 512KiB, 16MiB, 8MB)"
        )
    number, unit = match.groups()
    multiplier = _SIZE_UNITS.get(unit.lower() or "b")
    if multiplier is None:
        raise ValueError(
            f"{value!r} has an unknown unit {unit!r} "
            "(units: B, kB, MB, GB, TB, KiB, MiB, GiB, TiB)"
        )
    try:
        size = Decimal(number) * multiplier
    except InvalidOperation:
        raise ValueError(f"{value!r} is not a size")
    if size != size.to_integral_value():
        raise ValueError(f"{value!r} is not a whole number of bytes")
    return int(size)


def format_duration(seconds: float, largest: int | None = None) -> str:
    """
    A length of time as people write it: C{5400} as C{"1h30m"}, C{300} as
    C{"5m"}; under a minute with its fraction (C{"2.5s"}).

    @param largest: keep only this many of the largest units (C{4m30s}
        rather than C{1d0h4m30s} ... C{1d0h} with 2).
    """
    if seconds < 60:
        return f"{max(seconds, 0):g}s"
    whole = round(seconds)
    parts: list[tuple[int, str]] = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        count, whole = divmod(whole, size)
        if count or parts:
            parts.append((count, unit))
    if largest is not None:
        parts = parts[:largest]
    return "".join(f"{count}{unit}" for count, unit in parts if count)
