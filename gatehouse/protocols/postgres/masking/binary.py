"""
Binary values of PostgreSQL's built-in types, decoded and encoded again
for masking: numeric, arrays, records, ranges.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence

# -- binary values -------------------------------------------------------------


class _BadBinary(Exception):
    """A binary value does not have the structure its type says."""


_I32 = struct.Struct("!i")
_U32 = struct.Struct("!I")
_I64 = struct.Struct("!q")
_U64 = struct.Struct("!Q")
_NUMERIC_HEAD = struct.Struct("!hhHh")
_ARRAY_HEAD = struct.Struct("!iiI")
_NUMERIC_SPECIAL = frozenset({0xC000, 0xD000, 0xF000})
#: range types and their element types; multiranges and their ranges
_RANGES = {3904: 23, 3926: 20, 3906: 1700}
_MULTIRANGES = {4451: 3904, 4536: 3926, 4532: 3906}
#: nesting a binary value may have (arrays of records of arrays ...)
_MAX_DEPTH = 16
#: numbers below this have at most 12 digits
_SHORT_NUMBER = 10**12


def _numeric_text(raw: bytes) -> tuple[str, int] | None:
    """A binary numeric as text and its display scale (None: NaN, infinity)."""
    if len(raw) < 8:
        raise _BadBinary("numeric")
    ndigits, weight, sign, dscale = _NUMERIC_HEAD.unpack_from(raw)
    if sign in _NUMERIC_SPECIAL:
        return None
    if ndigits < 0 or len(raw) != 8 + 2 * ndigits or sign not in (0, 0x4000):
        raise _BadBinary("numeric")
    digits = struct.unpack_from(f"!{ndigits}h", raw, 8)
    if any(not 0 <= d < 10000 for d in digits) or dscale < 0:
        raise _BadBinary("numeric")
    text = "".join(f"{d:04d}" for d in digits)
    whole = weight + 1
    if whole >= ndigits:
        int_part, frac = text + "0000" * (whole - ndigits), ""
    elif whole <= 0:
        int_part, frac = "", "0000" * -whole + text
    else:
        int_part, frac = text[: 4 * whole], text[4 * whole :]
    out = int_part.lstrip("0") or "0"
    if dscale:
        out += "." + (frac + "0" * dscale)[:dscale]
    return ("-" + out if sign == 0x4000 else out), dscale


def _numeric_binary(text: str, dscale: int) -> bytes:
    """Encode decimal text (digits, an optional sign and point) as numeric."""
    negative = text.startswith("-")
    int_part, _, frac = text.lstrip("-").partition(".")
    int_part = int_part.lstrip("0")
    int_part = "0" * (-len(int_part) % 4) + int_part
    frac += "0" * (-len(frac) % 4)
    groups = [int(int_part[i : i + 4]) for i in range(0, len(int_part), 4)]
    groups += [int(frac[i : i + 4]) for i in range(0, len(frac), 4)]
    weight = len(int_part) // 4 - 1
    while groups and groups[0] == 0:
        groups.pop(0)
        weight -= 1
    while groups and groups[-1] == 0:
        groups.pop()
    if not groups:
        weight, negative = 0, False
    return _NUMERIC_HEAD.pack(
        len(groups), weight, 0x4000 if negative else 0, dscale
    ) + struct.pack(f"!{len(groups)}h", *groups)


def _parse_array(
    raw: bytes,
) -> tuple[int, list[tuple[int, int]], list[bytes | None]]:
    """A binary array: element type, dimensions, element values."""
    if len(raw) < 12:
        raise _BadBinary("array")
    ndim, flags, elem = _ARRAY_HEAD.unpack_from(raw)
    if not 0 <= ndim <= 6 or flags not in (0, 1) or elem == 0:
        raise _BadBinary("array")
    pos = 12
    dims = []
    count = 1 if ndim else 0
    for _ in range(ndim):
        if pos + 8 > len(raw):
            raise _BadBinary("array")
        size, lower = struct.unpack_from("!ii", raw, pos)
        if size < 0:
            raise _BadBinary("array")
        dims.append((size, lower))
        count *= size
        pos += 8
    values, pos = _parse_values(raw, pos, count)
    if pos != len(raw):
        raise _BadBinary("array")
    return elem, dims, values


def _parse_values(raw: bytes, pos: int, count: int) -> tuple[list[bytes | None], int]:
    values: list[bytes | None] = []
    end = len(raw)
    for _ in range(count):
        if pos + 4 > end:
            raise _BadBinary("truncated")
        n = _I32.unpack_from(raw, pos)[0]
        pos += 4
        if n == -1:
            values.append(None)
            continue
        if n < 0 or pos + n > end:
            raise _BadBinary("truncated")
        values.append(raw[pos : pos + n])
        pos += n
    return values, pos


def _pack_elements(values: Sequence[bytes | None]) -> bytes:
    return b"".join(
        b"\xff\xff\xff\xff" if v is None else _I32.pack(len(v)) + v for v in values
    )


def _parse_record(raw: bytes) -> list[tuple[int, bytes | None]]:
    """A binary record: (type OID, value) per field."""
    if len(raw) < 4:
        raise _BadBinary("record")
    count = _I32.unpack_from(raw)[0]
    if count < 0 or count > 1664:
        raise _BadBinary("record")
    pos = 4
    fields = []
    for _ in range(count):
        if pos + 4 > len(raw):
            raise _BadBinary("record")
        oid = _U32.unpack_from(raw, pos)[0]
        values, pos = _parse_values(raw, pos + 4, 1)
        fields.append((oid, values[0]))
    if pos != len(raw):
        raise _BadBinary("record")
    return fields
