"""
Typed backend messages (what a server sends).
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, ClassVar

import attrs

from .core import (
    MAX_CANCEL_KEY_LENGTH,
    MIN_CANCEL_KEY_LENGTH,
    BackendType,
    FrontendType,
    ProtocolViolation,
    _cstr,
    _malformed,
    _text,
)
from .framing import (
    _I32,
    _II,
    _NULL,
    _U16,
    encode_message,
)
from .message import (
    Message,
    _Cursor,
    _Empty,
    _int_tuple,
    _pack_int16s,
    _pack_values,
    _str_tuple,
    _value_tuple,
)

# -- backend messages --------------------------------------------------------


class _Authentication(Message):
    """
    An 'R' message; C{CODE} is its subtype.
    """

    __slots__ = ()
    TYPE: ClassVar[int] = BackendType.AUTHENTICATION
    CODE: ClassVar[int]

    @classmethod
    def decode(cls, body: bytes, encoding: str = "utf-8") -> Any:
        c = _Cursor(body, "Authentication")
        code = c.int32()
        kind = _AUTHENTICATION.get(code)
        if kind is None:
            raise _malformed("Authentication", f"unknown request type {code}")
        if kind is not cls and cls is not _Authentication:
            raise _malformed(cls.__name__, f"request type is {code}")
        return kind._decode_rest(c, encoding)

    @classmethod
    def _decode_rest(cls, c: _Cursor, encoding: str) -> Any:
        c.finish()
        return cls()

    def _rest(self, encoding: str) -> bytes:
        return b""

    def encode(self, encoding: str = "utf-8") -> bytes:
        return encode_message(self.TYPE, _I32.pack(self.CODE) + self._rest(encoding))


class _AuthenticationData(_Authentication):
    """
    An authentication request carrying opaque data.
    """

    __slots__ = ()
    data: bytes

    if TYPE_CHECKING:
        # attrs writes each subclass's __init__
        def __init__(self, data: bytes) -> None: ...

    @classmethod
    def _decode_rest(cls, c: _Cursor, encoding: str) -> Any:
        return cls(c.rest())

    def _rest(self, encoding: str) -> bytes:
        return self.data


@attrs.frozen
class AuthenticationOk(_Authentication):
    """
    Authentication succeeded.
    """

    CODE: ClassVar[int] = 0


@attrs.frozen
class AuthenticationKerberosV5(_Authentication):
    """
    Kerberos V5 requested (obsolete; no server sends it any more).
    """

    CODE: ClassVar[int] = 2


@attrs.frozen
class AuthenticationCleartextPassword(_Authentication):
    """
    Send the password in clear (over TLS, one hopes).
    """

    CODE: ClassVar[int] = 3


@attrs.frozen
class AuthenticationMD5Password(_Authentication):
    """
    Send the MD5-hashed password, salted with the 4-byte C{salt}.
    """

    CODE: ClassVar[int] = 5
    salt: bytes = attrs.field(validator=lambda _i, _a, v: _check_salt(v))

    @classmethod
    def _decode_rest(cls, c: _Cursor, encoding: str) -> Any:
        salt = c.raw(4)
        c.finish()
        return cls(salt)

    def _rest(self, encoding: str) -> bytes:
        return self.salt


def _check_salt(value: bytes) -> None:
    if len(value) != 4:
        raise ValueError("MD5 salt must be 4 bytes")


@attrs.frozen
class AuthenticationGSS(_Authentication):
    """
    Start GSSAPI authentication.
    """

    CODE: ClassVar[int] = 7


@attrs.frozen
class AuthenticationGSSContinue(_AuthenticationData):
    """
    A GSSAPI or SSPI token from the server.
    """

    CODE: ClassVar[int] = 8
    data: bytes


@attrs.frozen
class AuthenticationSSPI(_Authentication):
    """
    Start SSPI authentication.
    """

    CODE: ClassVar[int] = 9


@attrs.frozen
class AuthenticationSASL(_Authentication):
    """
    Start SASL authentication with one of C{mechanisms}.
    """

    CODE: ClassVar[int] = 10
    mechanisms: tuple[str, ...] = attrs.field(converter=_str_tuple)

    @classmethod
    def _decode_rest(cls, c: _Cursor, encoding: str) -> Any:
        mechanisms = []
        while name := c.cstring():
            mechanisms.append(_text(name, encoding))
        c.finish()
        return cls(tuple(mechanisms))

    def _rest(self, encoding: str) -> bytes:
        for name in self.mechanisms:
            if not name:
                raise ValueError("empty SASL mechanism name")
        return b"".join(_cstr(m, encoding) for m in self.mechanisms) + b"\0"


@attrs.frozen
class AuthenticationSASLContinue(_AuthenticationData):
    """
    A SASL challenge.
    """

    CODE: ClassVar[int] = 11
    data: bytes


@attrs.frozen
class AuthenticationSASLFinal(_AuthenticationData):
    """
    The SASL outcome ("additional data").
    """

    CODE: ClassVar[int] = 12
    data: bytes


_AUTHENTICATION: dict[int, type[_Authentication]] = {
    k.CODE: k
    for k in (
        AuthenticationOk,
        AuthenticationKerberosV5,
        AuthenticationCleartextPassword,
        AuthenticationMD5Password,
        AuthenticationGSS,
        AuthenticationGSSContinue,
        AuthenticationSSPI,
        AuthenticationSASL,
        AuthenticationSASLContinue,
        AuthenticationSASLFinal,
    )
}


@attrs.frozen
class ParameterStatus(Message):
    """
    A run-time parameter's current value (server_version, client_encoding,
    ...).
    """

    TYPE: ClassVar[int] = BackendType.PARAMETER_STATUS
    name: str
    value: str

    @classmethod
    def decode(cls, body: bytes, encoding: str = "utf-8") -> ParameterStatus:
        c = _Cursor(body, "ParameterStatus")
        name = c.text(encoding)
        value = c.text(encoding)
        c.finish()
        return cls(name, value)

    def encode(self, encoding: str = "utf-8") -> bytes:
        return encode_message(
            self.TYPE, _cstr(self.name, encoding) + _cstr(self.value, encoding)
        )


@attrs.frozen
class BackendKeyData(Message):
    """
    The cancel key: backend C{pid} and C{secret} (4 bytes in protocol 3.0,
    4 to 256 bytes in 3.2).
    """

    TYPE: ClassVar[int] = BackendType.BACKEND_KEY_DATA
    pid: int
    secret: bytes = attrs.field(repr=False)

    @classmethod
    def decode(cls, body: bytes, encoding: str = "utf-8") -> BackendKeyData:
        c = _Cursor(body, "BackendKeyData")
        pid = c.int32()
        secret = c.rest()
        if not MIN_CANCEL_KEY_LENGTH <= len(secret) <= MAX_CANCEL_KEY_LENGTH:
            raise _malformed("BackendKeyData", f"cancel key of {len(secret)} bytes")
        return cls(pid, secret)

    def encode(self, encoding: str = "utf-8") -> bytes:
        if not MIN_CANCEL_KEY_LENGTH <= len(self.secret) <= MAX_CANCEL_KEY_LENGTH:
            raise ValueError(f"cancel key of {len(self.secret)} bytes")
        return encode_message(self.TYPE, _I32.pack(self.pid) + self.secret)


_READY = {s: encode_message(BackendType.READY_FOR_QUERY, s.encode()) for s in "ITE"}


@attrs.frozen
class ReadyForQuery(Message):
    """
    The server awaits a query; C{status} is "I" (idle), "T" (in a
    transaction) or "E" (in a failed transaction).
    """

    TYPE: ClassVar[int] = BackendType.READY_FOR_QUERY
    status: str = attrs.field(
        default="I", validator=attrs.validators.in_(("I", "T", "E"))
    )

    @classmethod
    def decode(cls, body: bytes, encoding: str = "utf-8") -> ReadyForQuery:
        if len(body) != 1 or body not in b"ITE":
            raise _malformed("ReadyForQuery", f"invalid status {bytes(body)!r}")
        return cls(chr(body[0]))

    def encode(self, encoding: str = "utf-8") -> bytes:
        return _READY[self.status]


_FIELD = struct.Struct("!IhIhih")


@attrs.frozen
class FieldDescription:
    """
    One column of a L{RowDescription}.
    """

    name: str
    table_oid: int = 0
    column_attnum: int = 0
    type_oid: int = 25  # text
    type_size: int = -1
    type_modifier: int = -1
    format: int = 0


def _field_tuple(
    fields: Iterable[FieldDescription],
) -> tuple[FieldDescription, ...]:
    return tuple(fields)


@attrs.frozen
class RowDescription(Message):
    """
    The columns of the rows that follow.
    """

    TYPE: ClassVar[int] = BackendType.ROW_DESCRIPTION
    fields: tuple[FieldDescription, ...] = attrs.field(converter=_field_tuple)

    @classmethod
    def decode(cls, body: bytes, encoding: str = "utf-8") -> RowDescription:
        c = _Cursor(body, "RowDescription")
        fields = []
        unpack = _FIELD.unpack_from
        for _ in range(c.uint16()):
            name = c.text(encoding)
            fields.append(FieldDescription(name, *unpack(body, c._advance(18))))
        c.finish()
        return cls(tuple(fields))

    def encode(self, encoding: str = "utf-8") -> bytes:
        parts = [_U16.pack(len(self.fields))]
        pack = _FIELD.pack
        for f in self.fields:
            parts.append(_cstr(f.name, encoding))
            parts.append(
                pack(
                    f.table_oid,
                    f.column_attnum,
                    f.type_oid,
                    f.type_size,
                    f.type_modifier,
                    f.format,
                )
            )
        return encode_message(self.TYPE, b"".join(parts))


def portal_described(body: bytes) -> bytes | None:
    """
    The raw portal name (with its NUL) a Describe body asks about, or None
    if it describes a prepared statement.  For relays that only compare
    names: no decoding, no validation (the server validates).
    """
    return body[1:] if body[:1] == b"P" else None


def portal_executed(body: bytes) -> bytes:
    """The raw portal name (with its NUL) of an Execute body."""
    return body[:-4]


def describe_portal(raw_name: bytes) -> bytes:
    """A whole Describe message for the portal C{raw_name} (with its NUL)."""
    return encode_message(FrontendType.DESCRIBE, b"P" + raw_name)


def data_row_values(body: bytes) -> list[bytes | None]:
    """
    The values of a DataRow body, C{None} for NULL, without building a
    message object (masking reads every row).

    @raise ProtocolViolation: the body is malformed.
    """
    end = len(body)
    if end < 2:
        raise _malformed("DataRow", "message is truncated")
    count = _U16.unpack_from(body)[0]
    pos = 2
    values: list[bytes | None] = []
    append = values.append
    unpack = _I32.unpack_from
    for _ in range(count):
        if pos + 4 > end:
            raise _malformed("DataRow", "message is truncated")
        n = unpack(body, pos)[0]
        pos += 4
        if n < 0:
            if n != -1:
                raise _malformed("DataRow", f"invalid value length {n}")
            append(None)
        else:
            stop = pos + n
            if stop > end:
                raise _malformed("DataRow", "message is truncated")
            append(body[pos:stop])
            pos = stop
    if pos != end:
        raise _malformed("DataRow", "unexpected bytes after the last field")
    return values


@attrs.frozen
class DataRow(Message):
    """
    One result row: raw column values, C{None} for NULL.
    """

    TYPE: ClassVar[int] = BackendType.DATA_ROW
    values: tuple[bytes | None, ...] = attrs.field(converter=_value_tuple)

    @classmethod
    def decode(cls, body: bytes, encoding: str = "utf-8") -> DataRow:
        return cls(tuple(data_row_values(body)))

    def encode(self, encoding: str = "utf-8") -> bytes:
        return encode_message(self.TYPE, _pack_values(self.values))


@attrs.frozen
class CommandComplete(Message):
    """
    A statement finished; C{tag} is e.g. "SELECT 1" or "INSERT 0 3".
    """

    TYPE: ClassVar[int] = BackendType.COMMAND_COMPLETE
    tag: str

    @classmethod
    def decode(cls, body: bytes, encoding: str = "utf-8") -> CommandComplete:
        c = _Cursor(body, "CommandComplete")
        tag = c.text(encoding)
        c.finish()
        return cls(tag)

    def encode(self, encoding: str = "utf-8") -> bytes:
        return encode_message(self.TYPE, _cstr(self.tag, encoding))


@attrs.frozen
class EmptyQueryResponse(_Empty):
    """
    The query string was empty.
    """

    TYPE: ClassVar[int] = BackendType.EMPTY_QUERY_RESPONSE


_FIELD_NAMES = {
    "severity": "S",
    "severity_nonlocalized": "V",
    "sqlstate": "C",
    "message": "M",
    "detail": "D",
    "hint": "H",
    "position": "P",
    "internal_position": "p",
    "internal_query": "q",
    "where": "W",
    "schema_name": "s",
    "table_name": "t",
    "column_name": "c",
    "data_type_name": "d",
    "constraint_name": "n",
    "file": "F",
    "line": "L",
    "routine": "R",
}


class _Fields(Message):
    """
    ErrorResponse and NoticeResponse: (code, value) fields in wire order.
    """

    __slots__ = ()
    fields: tuple[tuple[str, str], ...]

    if TYPE_CHECKING:
        # attrs writes each subclass's __init__
        def __init__(self, fields: Iterable[tuple[str, str]]) -> None: ...

        # one read-only property per field of _FIELD_NAMES (set below)
        severity: str | None
        severity_nonlocalized: str | None
        sqlstate: str | None
        message: str | None
        detail: str | None
        hint: str | None
        position: str | None
        internal_position: str | None
        internal_query: str | None
        where: str | None
        schema_name: str | None
        table_name: str | None
        column_name: str | None
        data_type_name: str | None
        constraint_name: str | None
        file: str | None
        line: str | None
        routine: str | None

    @classmethod
    def build(
        cls,
        severity: str,
        sqlstate: str,
        message: str,
        detail: str | None = None,
        hint: str | None = None,
        **more: str | int | None,
    ) -> Any:
        """
        Build one from its usual fields; C{more} takes the other field
        names (C{position}, C{where}, C{table_name}, ...).  The
        non-localized severity (V) is set to C{severity}.
        """
        fields = [("S", severity), ("V", severity), ("C", sqlstate), ("M", message)]
        if detail is not None:
            fields.append(("D", detail))
        if hint is not None:
            fields.append(("H", hint))
        for name, value in more.items():
            code = _FIELD_NAMES.get(name)
            if code is None:
                raise TypeError(f"unknown error field {name!r}")
            if value is not None:
                fields.append((code, str(value)))
        return cls(tuple(fields))

    def get(self, code: str, default: str | None = None) -> str | None:
        """
        The value of the field with one-letter C{code}.
        """
        for key, value in self.fields:
            if key == code:
                return value
        return default

    @classmethod
    def decode(cls, body: bytes, encoding: str = "utf-8") -> Any:
        c = _Cursor(body, cls.__name__)
        fields = []
        while code := c.byte():
            fields.append((chr(code), c.text(encoding)))
        c.finish()
        return cls(tuple(fields))

    def encode(self, encoding: str = "utf-8") -> bytes:
        parts = []
        for code, value in self.fields:
            if len(code) != 1 or code == "\0":
                raise ValueError(f"invalid field code {code!r}")
            parts.append(code.encode("latin-1"))
            parts.append(_cstr(value, encoding))
        parts.append(b"\0")
        return encode_message(self.TYPE, b"".join(parts))


def _field_property(code: str) -> property:
    def get(self: _Fields) -> str | None:
        return self.get(code)

    return property(get, doc=f"The {code!r} field, or C{{None}}.")


for _name, _code in _FIELD_NAMES.items():
    setattr(_Fields, _name, _field_property(_code))
del _name, _code


def _field_pairs(value: Iterable[tuple[str, str]]) -> tuple[tuple[str, str], ...]:
    return tuple((k, v) for k, v in value)


@attrs.frozen
class ErrorResponse(_Fields):
    """
    An error.  Fields by one-letter code; attributes C{severity},
    C{sqlstate}, C{message}, C{detail}, C{hint}, C{position}, ... read them.
    Build with L{build}.
    """

    TYPE: ClassVar[int] = BackendType.ERROR_RESPONSE
    fields: tuple[tuple[str, str], ...] = attrs.field(converter=_field_pairs)

    @classmethod
    def for_violation(cls, violation: ProtocolViolation) -> ErrorResponse:
        """The FATAL error a server sends for C{violation} before closing."""
        error: ErrorResponse = cls.build("FATAL", violation.sqlstate, violation.message)
        return error


@attrs.frozen
class NoticeResponse(_Fields):
    """
    A notice or warning; same fields as L{ErrorResponse}.
    """

    TYPE: ClassVar[int] = BackendType.NOTICE_RESPONSE
    fields: tuple[tuple[str, str], ...] = attrs.field(converter=_field_pairs)


@attrs.frozen
class NotificationResponse(Message):
    """
    A NOTIFY on C{channel} from backend C{pid}.
    """

    TYPE: ClassVar[int] = BackendType.NOTIFICATION_RESPONSE
    pid: int
    channel: str
    payload: str = ""

    @classmethod
    def decode(cls, body: bytes, encoding: str = "utf-8") -> NotificationResponse:
        c = _Cursor(body, "NotificationResponse")
        pid = c.int32()
        channel = c.text(encoding)
        payload = c.text(encoding)
        c.finish()
        return cls(pid, channel, payload)

    def encode(self, encoding: str = "utf-8") -> bytes:
        return encode_message(
            self.TYPE,
            _I32.pack(self.pid)
            + _cstr(self.channel, encoding)
            + _cstr(self.payload, encoding),
        )


@attrs.frozen
class ParseComplete(_Empty):
    """
    Parse succeeded.
    """

    TYPE: ClassVar[int] = BackendType.PARSE_COMPLETE


@attrs.frozen
class BindComplete(_Empty):
    """
    Bind succeeded.
    """

    TYPE: ClassVar[int] = BackendType.BIND_COMPLETE


@attrs.frozen
class CloseComplete(_Empty):
    """
    Close succeeded.
    """

    TYPE: ClassVar[int] = BackendType.CLOSE_COMPLETE


@attrs.frozen
class NoData(_Empty):
    """
    The described statement or portal returns no rows.
    """

    TYPE: ClassVar[int] = BackendType.NO_DATA


@attrs.frozen
class PortalSuspended(_Empty):
    """
    Execute stopped at its row limit.
    """

    TYPE: ClassVar[int] = BackendType.PORTAL_SUSPENDED


@attrs.frozen
class ParameterDescription(Message):
    """
    The parameter types of a described statement.
    """

    TYPE: ClassVar[int] = BackendType.PARAMETER_DESCRIPTION
    type_oids: tuple[int, ...] = attrs.field(converter=_int_tuple)

    @classmethod
    def decode(cls, body: bytes, encoding: str = "utf-8") -> ParameterDescription:
        c = _Cursor(body, "ParameterDescription")
        oids = c.uint32s(c.uint16())
        c.finish()
        return cls(oids)

    def encode(self, encoding: str = "utf-8") -> bytes:
        n = len(self.type_oids)
        return encode_message(
            self.TYPE, _U16.pack(n) + struct.pack(f"!{n}I", *self.type_oids)
        )


class _CopyResponse(Message):
    """
    CopyIn/Out/BothResponse: overall format (0 text, 1 binary) and one
    format per column.
    """

    __slots__ = ()
    format: int
    column_formats: tuple[int, ...]

    if TYPE_CHECKING:
        # attrs writes each subclass's __init__
        def __init__(self, format: int, column_formats: Iterable[int] = ()) -> None: ...

    @classmethod
    def decode(cls, body: bytes, encoding: str = "utf-8") -> Any:
        c = _Cursor(body, cls.__name__)
        overall = c.byte()
        formats = c.int16s(c.uint16())
        c.finish()
        return cls(overall, formats)

    def encode(self, encoding: str = "utf-8") -> bytes:
        return encode_message(
            self.TYPE, bytes([self.format]) + _pack_int16s(self.column_formats)
        )


@attrs.frozen
class CopyInResponse(_CopyResponse):
    """
    The server awaits COPY FROM STDIN data.
    """

    TYPE: ClassVar[int] = BackendType.COPY_IN_RESPONSE
    format: int = 0
    column_formats: tuple[int, ...] = attrs.field(default=(), converter=_int_tuple)


@attrs.frozen
class CopyOutResponse(_CopyResponse):
    """
    COPY TO STDOUT data follows.
    """

    TYPE: ClassVar[int] = BackendType.COPY_OUT_RESPONSE
    format: int = 0
    column_formats: tuple[int, ...] = attrs.field(default=(), converter=_int_tuple)


@attrs.frozen
class CopyBothResponse(_CopyResponse):
    """
    Bidirectional copy (streaming replication) starts.
    """

    TYPE: ClassVar[int] = BackendType.COPY_BOTH_RESPONSE
    format: int = 0
    column_formats: tuple[int, ...] = attrs.field(default=(), converter=_int_tuple)


@attrs.frozen
class NegotiateProtocolVersion(Message):
    """
    The server supports protocol C{version} at most and did not recognise
    the C{_pq_.*} C{options} named.
    """

    TYPE: ClassVar[int] = BackendType.NEGOTIATE_PROTOCOL_VERSION
    version: int
    options: tuple[str, ...] = attrs.field(default=(), converter=_str_tuple)

    @classmethod
    def decode(cls, body: bytes, encoding: str = "utf-8") -> NegotiateProtocolVersion:
        c = _Cursor(body, "NegotiateProtocolVersion")
        version = c.uint32()
        count = c.int32()
        if count < 0:
            raise _malformed("NegotiateProtocolVersion", f"negative count {count}")
        # Each name takes at least one byte: a huge count fails at the end of
        # the body, not by allocating.
        options = tuple([c.text(encoding) for _ in range(min(count, c.end))])
        c.finish()
        return cls(version, options)

    def encode(self, encoding: str = "utf-8") -> bytes:
        return encode_message(
            self.TYPE,
            _II.pack(self.version, len(self.options))
            + b"".join(_cstr(o, encoding) for o in self.options),
        )


@attrs.frozen
class FunctionCallResponse(Message):
    """
    The result of a L{FunctionCall} (C{None} = NULL).
    """

    TYPE: ClassVar[int] = BackendType.FUNCTION_CALL_RESPONSE
    result: bytes | None

    @classmethod
    def decode(cls, body: bytes, encoding: str = "utf-8") -> FunctionCallResponse:
        c = _Cursor(body, "FunctionCallResponse")
        result = c.value()
        c.finish()
        return cls(result)

    def encode(self, encoding: str = "utf-8") -> bytes:
        result = self.result
        return encode_message(
            self.TYPE, _NULL if result is None else _I32.pack(len(result)) + result
        )
