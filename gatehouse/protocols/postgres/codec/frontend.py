"""
Typed frontend messages (what a client sends after startup).
"""

from __future__ import annotations

import struct
from typing import TYPE_CHECKING, Any, ClassVar

import attrs

from .core import (
    FrontendType,
    _cstr,
    _malformed,
)
from .framing import (
    _I16,
    _I32,
    _NULL,
    _U16,
    _U32,
    encode_message,
)
from .message import (
    Message,
    _Cursor,
    _Empty,
    _int_tuple,
    _kind,
    _pack_int16s,
    _pack_values,
    _value_tuple,
)

# -- frontend messages -------------------------------------------------------


@attrs.frozen
class Query(Message):
    """
    Simple query: one string, possibly several statements.
    """

    TYPE: ClassVar[int] = FrontendType.QUERY
    sql: str

    @classmethod
    def decode(cls, body: bytes, encoding: str = "utf-8") -> Query:
        if not body or body.find(b"\0") != len(body) - 1:
            raise _malformed("Query", "expected one terminated string")
        return cls(body[:-1].decode(encoding, "surrogateescape"))

    def encode(self, encoding: str = "utf-8") -> bytes:
        return encode_message(self.TYPE, _cstr(self.sql, encoding))


@attrs.frozen
class Parse(Message):
    """
    Extended query: prepare C{query} as statement C{name} ("" = unnamed).
    """

    TYPE: ClassVar[int] = FrontendType.PARSE
    name: str
    query: str
    param_types: tuple[int, ...] = attrs.field(default=(), converter=_int_tuple)

    @classmethod
    def decode(cls, body: bytes, encoding: str = "utf-8") -> Parse:
        c = _Cursor(body, "Parse")
        name = c.text(encoding)
        query = c.text(encoding)
        types = c.uint32s(c.uint16())
        c.finish()
        return cls(name, query, types)

    def encode(self, encoding: str = "utf-8") -> bytes:
        n = len(self.param_types)
        return encode_message(
            self.TYPE,
            _cstr(self.name, encoding)
            + _cstr(self.query, encoding)
            + _U16.pack(n)
            + struct.pack(f"!{n}I", *self.param_types),
        )


@attrs.frozen
class Bind(Message):
    """
    Extended query: bind parameter values (C{None} = NULL) to a prepared
    statement, creating C{portal}.
    """

    TYPE: ClassVar[int] = FrontendType.BIND
    portal: str
    statement: str
    param_formats: tuple[int, ...] = attrs.field(default=(), converter=_int_tuple)
    params: tuple[bytes | None, ...] = attrs.field(default=(), converter=_value_tuple)
    result_formats: tuple[int, ...] = attrs.field(default=(), converter=_int_tuple)

    @classmethod
    def decode(cls, body: bytes, encoding: str = "utf-8") -> Bind:
        c = _Cursor(body, "Bind")
        portal = c.text(encoding)
        statement = c.text(encoding)
        formats = c.int16s(c.uint16())
        params = c.values(c.uint16())
        if len(formats) > 1 and len(formats) != len(params):
            raise _malformed(
                "Bind",
                f"{len(formats)} parameter formats but {len(params)} parameters",
            )
        result_formats = c.int16s(c.uint16())
        c.finish()
        return cls(portal, statement, formats, params, result_formats)

    def encode(self, encoding: str = "utf-8") -> bytes:
        return encode_message(
            self.TYPE,
            _cstr(self.portal, encoding)
            + _cstr(self.statement, encoding)
            + _pack_int16s(self.param_formats)
            + _pack_values(self.params)
            + _pack_int16s(self.result_formats),
        )


@attrs.frozen
class Execute(Message):
    """
    Extended query: run C{portal}, returning at most C{max_rows} (0 = all).
    """

    TYPE: ClassVar[int] = FrontendType.EXECUTE
    portal: str = ""
    max_rows: int = 0

    @classmethod
    def decode(cls, body: bytes, encoding: str = "utf-8") -> Execute:
        c = _Cursor(body, "Execute")
        portal = c.text(encoding)
        max_rows = c.int32()
        c.finish()
        return cls(portal, max_rows)

    def encode(self, encoding: str = "utf-8") -> bytes:
        return encode_message(
            self.TYPE, _cstr(self.portal, encoding) + _I32.pack(self.max_rows)
        )


class _KindName(Message):
    """
    Body layout shared by Describe and Close: kind byte, name.
    """

    __slots__ = ()
    kind: str
    name: str

    if TYPE_CHECKING:
        # attrs writes each subclass's __init__
        def __init__(self, kind: str, name: str) -> None: ...

    @classmethod
    def decode(cls, body: bytes, encoding: str = "utf-8") -> Any:
        c = _Cursor(body, cls.__name__)
        kind = c.byte()
        if kind not in b"SP":
            raise _malformed(cls.__name__, f"invalid kind {bytes([kind])!r}")
        name = c.text(encoding)
        c.finish()
        return cls(chr(kind), name)

    def encode(self, encoding: str = "utf-8") -> bytes:
        return encode_message(
            self.TYPE, self.kind.encode("ascii") + _cstr(self.name, encoding)
        )


@attrs.frozen
class Describe(_KindName):
    """
    Describe prepared statement (C{kind} "S") or portal ("P") C{name}.
    """

    TYPE: ClassVar[int] = FrontendType.DESCRIBE
    kind: str = attrs.field(converter=_kind)
    name: str = ""


@attrs.frozen
class Close(_KindName):
    """
    Close prepared statement (C{kind} "S") or portal ("P") C{name}.
    """

    TYPE: ClassVar[int] = FrontendType.CLOSE
    kind: str = attrs.field(converter=_kind)
    name: str = ""


@attrs.frozen
class Sync(_Empty):
    """
    End of an extended-query batch.
    """

    TYPE: ClassVar[int] = FrontendType.SYNC


@attrs.frozen
class Flush(_Empty):
    """
    Ask the server to send what it has buffered.
    """

    TYPE: ClassVar[int] = FrontendType.FLUSH


@attrs.frozen
class Terminate(_Empty):
    """
    The client is closing the connection.
    """

    TYPE: ClassVar[int] = FrontendType.TERMINATE


@attrs.frozen
class CopyData(Message):
    """
    COPY payload (both directions).
    """

    TYPE: ClassVar[int] = FrontendType.COPY_DATA
    data: bytes

    @classmethod
    def decode(cls, body: bytes, encoding: str = "utf-8") -> CopyData:
        return cls(bytes(body))

    def encode(self, encoding: str = "utf-8") -> bytes:
        return encode_message(self.TYPE, self.data)


@attrs.frozen
class CopyDone(_Empty):
    """
    End of COPY data (both directions).
    """

    TYPE: ClassVar[int] = FrontendType.COPY_DONE


@attrs.frozen
class CopyFail(Message):
    """
    The client aborts COPY FROM STDIN with C{message}.
    """

    TYPE: ClassVar[int] = FrontendType.COPY_FAIL
    message: str

    @classmethod
    def decode(cls, body: bytes, encoding: str = "utf-8") -> CopyFail:
        c = _Cursor(body, "CopyFail")
        message = c.text(encoding)
        c.finish()
        return cls(message)

    def encode(self, encoding: str = "utf-8") -> bytes:
        return encode_message(self.TYPE, _cstr(self.message, encoding))


@attrs.frozen
class FunctionCall(Message):
    """
    Fast-path call of function C{function_oid} with C{args} (C{None} = NULL).
    """

    TYPE: ClassVar[int] = FrontendType.FUNCTION_CALL
    function_oid: int
    arg_formats: tuple[int, ...] = attrs.field(default=(), converter=_int_tuple)
    args: tuple[bytes | None, ...] = attrs.field(default=(), converter=_value_tuple)
    result_format: int = 0

    @classmethod
    def decode(cls, body: bytes, encoding: str = "utf-8") -> FunctionCall:
        c = _Cursor(body, "FunctionCall")
        oid = c.uint32()
        formats = c.int16s(c.uint16())
        args = c.values(c.uint16())
        if len(formats) > 1 and len(formats) != len(args):
            raise _malformed(
                "FunctionCall",
                f"{len(formats)} argument formats but {len(args)} arguments",
            )
        result_format = c.int16()
        c.finish()
        return cls(oid, formats, args, result_format)

    def encode(self, encoding: str = "utf-8") -> bytes:
        return encode_message(
            self.TYPE,
            _U32.pack(self.function_oid)
            + _pack_int16s(self.arg_formats)
            + _pack_values(self.args)
            + _I16.pack(self.result_format),
        )


@attrs.frozen
class AuthResponse(Message):
    """
    A 'p' message whose meaning depends on the authentication exchange in
    progress; decode the body with L{PasswordMessage}, L{SASLInitialResponse},
    L{SASLResponse} or L{GSSResponse}.
    """

    TYPE: ClassVar[int] = FrontendType.PASSWORD
    data: bytes

    @classmethod
    def decode(cls, body: bytes, encoding: str = "utf-8") -> AuthResponse:
        return cls(bytes(body))

    def encode(self, encoding: str = "utf-8") -> bytes:
        return encode_message(self.TYPE, self.data)


@attrs.frozen
class PasswordMessage(Message):
    """
    A cleartext (or MD5-hashed) password, answering
    L{AuthenticationCleartextPassword} or L{AuthenticationMD5Password}.
    """

    TYPE: ClassVar[int] = FrontendType.PASSWORD
    password: str = attrs.field(repr=False)

    @classmethod
    def decode(cls, body: bytes, encoding: str = "utf-8") -> PasswordMessage:
        c = _Cursor(body, "password")
        password = c.text(encoding)
        c.finish()
        return cls(password)

    def encode(self, encoding: str = "utf-8") -> bytes:
        return encode_message(self.TYPE, _cstr(self.password, encoding))


@attrs.frozen
class SASLInitialResponse(Message):
    """
    The client's chosen SASL C{mechanism} and first message (C{None}: none).
    """

    TYPE: ClassVar[int] = FrontendType.PASSWORD
    mechanism: str
    data: bytes | None = attrs.field(default=None, repr=False)

    @classmethod
    def decode(cls, body: bytes, encoding: str = "utf-8") -> SASLInitialResponse:
        c = _Cursor(body, "SASLInitialResponse")
        mechanism = c.text(encoding)
        data = c.value()
        c.finish()
        return cls(mechanism, data)

    def encode(self, encoding: str = "utf-8") -> bytes:
        data = self.data
        return encode_message(
            self.TYPE,
            _cstr(self.mechanism, encoding)
            + (_NULL if data is None else _I32.pack(len(data)) + data),
        )


@attrs.frozen
class SASLResponse(Message):
    """
    A further SASL message from the client.
    """

    TYPE: ClassVar[int] = FrontendType.PASSWORD
    data: bytes = attrs.field(repr=False)

    @classmethod
    def decode(cls, body: bytes, encoding: str = "utf-8") -> SASLResponse:
        return cls(bytes(body))

    def encode(self, encoding: str = "utf-8") -> bytes:
        return encode_message(self.TYPE, self.data)


@attrs.frozen
class GSSResponse(Message):
    """
    A GSSAPI or SSPI token from the client.
    """

    TYPE: ClassVar[int] = FrontendType.PASSWORD
    data: bytes = attrs.field(repr=False)

    @classmethod
    def decode(cls, body: bytes, encoding: str = "utf-8") -> GSSResponse:
        return cls(bytes(body))

    def encode(self, encoding: str = "utf-8") -> bytes:
        return encode_message(self.TYPE, self.data)
