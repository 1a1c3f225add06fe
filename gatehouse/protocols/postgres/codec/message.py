"""
The base of typed messages (L{Message}) and the body cursor and packers
their decoders and encoders share.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Sequence
from typing import Any, ClassVar

from .core import (
    _malformed,
)
from .framing import (
    _HEADER,
    _I16,
    _I32,
    _NULL,
    _U16,
    _U32,
)

# -- message base ------------------------------------------------------------


class Message:
    """
    Base of every typed message: C{TYPE} is its type byte as C{int}.
    """

    __slots__ = ()
    TYPE: ClassVar[int]

    @classmethod
    def decode(cls, body: bytes, encoding: str = "utf-8") -> Any:
        """
        Decode a message body (without type byte and length word).

        @raise ProtocolViolation: if the body is malformed.
        """
        raise NotImplementedError

    def encode(self, encoding: str = "utf-8") -> bytes:
        """
        Return the complete message on the wire.
        """
        raise NotImplementedError


class _Empty(Message):
    """
    A message without a body.
    """

    __slots__ = ()

    @classmethod
    def decode(cls, body: bytes, encoding: str = "utf-8") -> Any:
        if body:
            raise _malformed(cls.__name__, "unexpected body")
        return cls()

    def encode(self, encoding: str = "utf-8") -> bytes:
        return _HEADER.pack(self.TYPE, 4)


class _Cursor:
    """
    Reads fields off a message body, turning every shortfall into a
    L{ProtocolViolation}.
    """

    __slots__ = ("body", "end", "pos", "what")

    def __init__(self, body: bytes, what: str):
        self.body = body
        self.pos = 0
        self.end = len(body)
        self.what = what

    def _advance(self, n: int) -> int:
        pos = self.pos
        if pos + n > self.end:
            raise _malformed(self.what, "message is truncated")
        self.pos = pos + n
        return pos

    def byte(self) -> int:
        return self.body[self._advance(1)]

    def int16(self) -> int:
        value: int = _I16.unpack_from(self.body, self._advance(2))[0]
        return value

    def uint16(self) -> int:
        value: int = _U16.unpack_from(self.body, self._advance(2))[0]
        return value

    def int32(self) -> int:
        value: int = _I32.unpack_from(self.body, self._advance(4))[0]
        return value

    def uint32(self) -> int:
        value: int = _U32.unpack_from(self.body, self._advance(4))[0]
        return value

    def int16s(self, n: int) -> tuple[int, ...]:
        return struct.unpack_from(f"!{n}h", self.body, self._advance(2 * n))

    def uint32s(self, n: int) -> tuple[int, ...]:
        return struct.unpack_from(f"!{n}I", self.body, self._advance(4 * n))

    def raw(self, n: int) -> bytes:
        pos = self._advance(n)
        return self.body[pos : pos + n]

    def rest(self) -> bytes:
        pos = self.pos
        self.pos = self.end
        return self.body[pos:]

    def cstring(self) -> bytes:
        body = self.body
        pos = self.pos
        nul = body.find(b"\0", pos)
        if nul < 0:
            raise _malformed(self.what, "missing string terminator")
        self.pos = nul + 1
        return body[pos:nul]

    def text(self, encoding: str) -> str:
        return self.cstring().decode(encoding, "surrogateescape")

    def value(self) -> bytes | None:
        n = self.int32()
        if n < 0:
            if n != -1:
                raise _malformed(self.what, f"invalid value length {n}")
            return None
        return self.raw(n)

    def values(self, n: int) -> tuple[bytes | None, ...]:
        return tuple([self.value() for _ in range(n)])

    def finish(self) -> None:
        if self.pos != self.end:
            raise _malformed(self.what, "unexpected bytes after the last field")


# Typed converters for tuple fields (attrs' converter=tuple leaves mypy
# without the element type).
def _int_tuple(values: Iterable[int]) -> tuple[int, ...]:
    return tuple(values)


def _str_tuple(values: Iterable[str]) -> tuple[str, ...]:
    return tuple(values)


def _value_tuple(values: Iterable[bytes | None]) -> tuple[bytes | None, ...]:
    return tuple(values)


def _pack_values(values: Sequence[bytes | None]) -> bytes:
    parts = [_U16.pack(len(values))]
    append = parts.append
    pack = _I32.pack
    for value in values:
        if value is None:
            append(_NULL)
        else:
            append(pack(len(value)))
            append(value)
    return b"".join(parts)


def _pack_int16s(values: Sequence[int]) -> bytes:
    return _U16.pack(len(values)) + struct.pack(f"!{len(values)}h", *values)


def _kind(value: str) -> str:
    if value not in ("S", "P"):
        raise ValueError(f"kind must be 'S' or 'P', not {value!r}")
    return value
