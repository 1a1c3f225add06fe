"""
Sans-IO codec for the PostgreSQL frontend/backend protocol, version 3.

Bytes go in, events come out; message objects turn into bytes.  Nothing here
touches a socket, a reactor or a Deferred.  There are three layers:

 - L{StartupParser}: the untyped, length-prefixed packets a client sends
   before its first typed message (SSLRequest, GSSENCRequest, CancelRequest,
   StartupMessage) and detection of a direct TLS ClientHello.

 - L{FrameReader}: the hot path.  It only reads the 5-byte message headers
   and reports complete messages as C{(type, start, end)} offsets into the
   byte stream, so a relay can forward any number of complete messages with
   one L{FrameReader.take_to} (one slice, often no copy at all) without
   building an object per message.

 - Typed messages: frozen attrs classes with C{decode(body)} and C{encode()},
   decoded on demand (L{decode_frontend}, L{decode_backend}) only for the
   messages the gateway has to look into.

Text: strings are bytes on the wire, in the client's C{client_encoding}
(usually UTF-8).  Every decoder and encoder takes an C{encoding} (a Python
codec name, default UTF-8; L{python_encoding} maps PostgreSQL names) and
uses the C{surrogateescape} error handler.  That choice makes decoding
total and lossless: bytes that are not valid in the encoding become lone
surrogates (U+DC80..U+DCFF) that cannot match any ordinary text a policy
looks for, and encoding the C{str} again gives back exactly the bytes that
crossed.  A latin-1 fallback would also be total, but it silently turns
invalid input into plausible-looking different characters.  The raw bytes
stay available as the frame body (L{FrameReader.body}).

Malformed input raises L{ProtocolViolation}, whose SQLSTATE is 08P01
(protocol_violation), 54000 (program_limit_exceeded) for a length over the
limit, or 0A000 (feature_not_supported) for an unsupported protocol version.
Readers keep raising the same error once they have raised it.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, ClassVar, TypeAlias

import attrs

__all__ = [
    "ACCEPT_ENCRYPTION",
    "BACKEND_LIMITS",
    "BACKEND_SMALL_MESSAGE_LIMIT",
    "CANCEL_REQUEST_CODE",
    "FEATURE_NOT_SUPPORTED",
    "FRONTEND_LIMITS",
    "GSSENC_REQUEST_CODE",
    "LATEST_PROTOCOL",
    "MAX_AUTH_TOKEN_LENGTH",
    "MAX_CANCEL_KEY_LENGTH",
    "MAX_MESSAGE_LENGTH",
    "MAX_STARTUP_PACKET_LENGTH",
    "MIN_CANCEL_KEY_LENGTH",
    "PROGRAM_LIMIT_EXCEEDED",
    "PROTOCOL_3_0",
    "PROTOCOL_3_2",
    "PROTOCOL_VIOLATION",
    "REFUSE_ENCRYPTION",
    "RELAY_LIMITS",
    "SMALL_MESSAGE_LIMIT",
    "SSL_REQUEST_CODE",
    "TLS_HANDSHAKE_BYTE",
    "AuthResponse",
    "AuthenticationCleartextPassword",
    "AuthenticationGSS",
    "AuthenticationGSSContinue",
    "AuthenticationKerberosV5",
    "AuthenticationMD5Password",
    "AuthenticationOk",
    "AuthenticationSASL",
    "AuthenticationSASLContinue",
    "AuthenticationSASLFinal",
    "AuthenticationSSPI",
    "BackendKeyData",
    "BackendType",
    "Bind",
    "BindComplete",
    "CancelRequest",
    "Close",
    "CloseComplete",
    "CommandComplete",
    "CopyBothResponse",
    "CopyData",
    "CopyDone",
    "CopyFail",
    "CopyInResponse",
    "CopyOutResponse",
    "DataRow",
    "Describe",
    "DirectTLS",
    "EmptyQueryResponse",
    "EncryptionResponse",
    "ErrorResponse",
    "Execute",
    "FieldDescription",
    "Flush",
    "Frame",
    "FrameReader",
    "FrontendType",
    "FunctionCall",
    "FunctionCallResponse",
    "GSSENCRequest",
    "GSSResponse",
    "Message",
    "NegotiateProtocolVersion",
    "NoData",
    "NoticeResponse",
    "NotificationResponse",
    "ParameterDescription",
    "ParameterStatus",
    "Parse",
    "ParseComplete",
    "PasswordMessage",
    "PortalSuspended",
    "ProtocolViolation",
    "Query",
    "ReadyForQuery",
    "RowDescription",
    "SASLInitialResponse",
    "SASLResponse",
    "SSLRequest",
    "StartupEvent",
    "StartupMessage",
    "StartupParser",
    "Sync",
    "Terminate",
    "decode_backend",
    "decode_encryption_response",
    "decode_frontend",
    "describe_portal",
    "encode_message",
    "portal_described",
    "portal_executed",
    "python_encoding",
]

# -- constants ---------------------------------------------------------------

PROTOCOL_3_0 = 3 << 16  # 196608
PROTOCOL_3_2 = (3 << 16) | 2  # 196610: variable-length cancel keys (PG 18)
#: The newest protocol version whose layout this codec knows.
LATEST_PROTOCOL = PROTOCOL_3_2

SSL_REQUEST_CODE = 80877103  # 1234.5679
GSSENC_REQUEST_CODE = 80877104  # 1234.5680
CANCEL_REQUEST_CODE = 80877102  # 1234.5678

#: PostgreSQL's MAX_STARTUP_PACKET_LENGTH, length word included.
MAX_STARTUP_PACKET_LENGTH = 10000
#: PostgreSQL's PQ_LARGE_MESSAGE_LIMIT (MaxAllocSize - 1, just under 1 GiB):
#: the largest length word accepted by default.
MAX_MESSAGE_LENGTH = 0x3FFFFFFF - 1
#: PostgreSQL's PQ_SMALL_MESSAGE_LIMIT, for frontend messages that are
#: always short (Sync, Execute, Describe, ...).
SMALL_MESSAGE_LIMIT = 10000
#: PostgreSQL's PG_MAX_AUTH_TOKEN_LENGTH, for the 'p' message family.
MAX_AUTH_TOKEN_LENGTH = 65535
#: libpq's limit for backend messages that are always short.
BACKEND_SMALL_MESSAGE_LIMIT = 30000
MIN_CANCEL_KEY_LENGTH = 4
MAX_CANCEL_KEY_LENGTH = 256
#: First byte of a TLS handshake record: a direct-TLS ClientHello.
TLS_HANDSHAKE_BYTE = 0x16

PROTOCOL_VIOLATION = "08P01"
PROGRAM_LIMIT_EXCEEDED = "54000"
FEATURE_NOT_SUPPORTED = "0A000"


class FrontendType:
    """
    Type bytes of frontend messages after startup, as C{int} (as
    L{FrameReader} reports them).
    """

    BIND = 0x42  # B
    CLOSE = 0x43  # C
    COPY_DATA = 0x64  # d
    COPY_DONE = 0x63  # c
    COPY_FAIL = 0x66  # f
    DESCRIBE = 0x44  # D
    EXECUTE = 0x45  # E
    FLUSH = 0x48  # H
    FUNCTION_CALL = 0x46  # F
    PARSE = 0x50  # P
    PASSWORD = 0x70  # p: PasswordMessage, SASL*Response, GSSResponse
    QUERY = 0x51  # Q
    SYNC = 0x53  # S
    TERMINATE = 0x58  # X


class BackendType:
    """
    Type bytes of backend messages, as C{int}.
    """

    AUTHENTICATION = 0x52  # R
    BACKEND_KEY_DATA = 0x4B  # K
    BIND_COMPLETE = 0x32  # 2
    CLOSE_COMPLETE = 0x33  # 3
    COMMAND_COMPLETE = 0x43  # C
    COPY_BOTH_RESPONSE = 0x57  # W
    COPY_DATA = 0x64  # d
    COPY_DONE = 0x63  # c
    COPY_IN_RESPONSE = 0x47  # G
    COPY_OUT_RESPONSE = 0x48  # H
    DATA_ROW = 0x44  # D
    EMPTY_QUERY_RESPONSE = 0x49  # I
    ERROR_RESPONSE = 0x45  # E
    FUNCTION_CALL_RESPONSE = 0x56  # V
    NEGOTIATE_PROTOCOL_VERSION = 0x76  # v
    NO_DATA = 0x6E  # n
    NOTICE_RESPONSE = 0x4E  # N
    NOTIFICATION_RESPONSE = 0x41  # A
    PARAMETER_DESCRIPTION = 0x74  # t
    PARAMETER_STATUS = 0x53  # S
    PARSE_COMPLETE = 0x31  # 1
    PORTAL_SUSPENDED = 0x73  # s
    READY_FOR_QUERY = 0x5A  # Z
    ROW_DESCRIPTION = 0x54  # T


def _limit_table(limits: Mapping[str, int]) -> tuple[int, ...]:
    table = [0] * 256
    for letters, limit in limits.items():
        for letter in letters:
            table[ord(letter)] = limit
    return tuple(table)


#: Per-type limits on the length word of frontend messages, indexed by type
#: byte (0 = type not allowed), the same as PostgreSQL's backend applies.
FRONTEND_LIMITS = _limit_table(
    {
        "QPBFd": MAX_MESSAGE_LENGTH,
        "p": MAX_AUTH_TOKEN_LENGTH,
        "EDCSHXcf": SMALL_MESSAGE_LIMIT,
    }
)
#: The same after authentication: a password message (type C{p}: also
#: SASL and GSS responses) is refused from its header on, before any of
#: its body is buffered, so a secret sent late is never read into a frame.
RELAY_LIMITS = tuple(0 if t == ord("p") else v for t, v in enumerate(FRONTEND_LIMITS))
#: Per-type limits for backend messages: small for the fixed-size ones.
BACKEND_LIMITS = _limit_table(
    {
        "RSCTDEGHWNAtvVd": MAX_MESSAGE_LENGTH,
        "KZ123nsIc": BACKEND_SMALL_MESSAGE_LIMIT,
    }
)


class ProtocolViolation(Exception):
    """
    The peer sent something malformed or forbidden; the connection cannot
    continue.

    @ivar sqlstate: the SQLSTATE to report (08P01, 54000 or 0A000).
    @ivar message: a description fit for the client and the log.
    @ivar message_type: the type byte of the offending message, when a
        L{FrameReader} refused its header (else None).
    """

    message_type: int | None = None

    def __init__(self, sqlstate: str, message: str):
        super().__init__(sqlstate, message)
        self.sqlstate = sqlstate
        self.message = message

    def __str__(self) -> str:
        return f"{self.message} (SQLSTATE {self.sqlstate})"

    def to_error_response(self) -> ErrorResponse:
        """
        Return the FATAL L{ErrorResponse} a server sends before closing.
        """
        return ErrorResponse.build("FATAL", self.sqlstate, self.message)


def _malformed(what: str, why: str) -> ProtocolViolation:
    return ProtocolViolation(PROTOCOL_VIOLATION, f"invalid {what} message: {why}")


# -- text --------------------------------------------------------------------

_PG_ENCODINGS = {
    "UTF8": "utf-8",
    "UNICODE": "utf-8",
    "SQL_ASCII": "utf-8",  # no conversion on the server: bytes as they are
    "LATIN1": "latin-1",
    "LATIN2": "iso8859-2",
    "LATIN3": "iso8859-3",
    "LATIN4": "iso8859-4",
    "LATIN5": "iso8859-9",
    "LATIN6": "iso8859-10",
    "LATIN7": "iso8859-13",
    "LATIN8": "iso8859-14",
    "LATIN9": "iso8859-15",
    "LATIN10": "iso8859-16",
    "ISO_8859_5": "iso8859-5",
    "ISO_8859_6": "iso8859-6",
    "ISO_8859_7": "iso8859-7",
    "ISO_8859_8": "iso8859-8",
    "WIN866": "cp866",
    "WIN874": "cp874",
    "WIN1250": "cp1250",
    "WIN1251": "cp1251",
    "WIN1252": "cp1252",
    "WIN1253": "cp1253",
    "WIN1254": "cp1254",
    "WIN1255": "cp1255",
    "WIN1256": "cp1256",
    "WIN1257": "cp1257",
    "WIN1258": "cp1258",
    "KOI8R": "koi8-r",
    "KOI8U": "koi8-u",
    "EUC_JP": "euc_jp",
    "EUC_KR": "euc_kr",
    "EUC_CN": "gb2312",
    "SJIS": "shift_jis",
    "SHIFT_JIS_2004": "shift_jis_2004",
    "EUC_JIS_2004": "euc_jis_2004",
    "BIG5": "big5",
    "GBK": "gbk",
    "GB18030": "gb18030",
    "UHC": "cp949",
    "JOHAB": "johab",
}


def python_encoding(pg_name: str) -> str:
    """
    Map a PostgreSQL encoding name (as in C{client_encoding}) to a Python
    codec name; unknown names map to C{"utf-8"}.
    """
    key = pg_name.strip().upper().replace("-", "_")
    return _PG_ENCODINGS.get(key, _PG_ENCODINGS.get(key.replace("_", ""), "utf-8"))


def _text(raw: bytes, encoding: str) -> str:
    return raw.decode(encoding, "surrogateescape")


def _cstr(value: str, encoding: str) -> bytes:
    raw = value.encode(encoding, "surrogateescape")
    if b"\0" in raw:
        # A NUL would end the string early and let the rest be read as
        # further fields: refuse rather than truncate.
        raise ValueError("NUL byte in a protocol string")
    return raw + b"\0"


# -- framing -----------------------------------------------------------------

_HEADER = struct.Struct("!BI")
_I16 = struct.Struct("!h")
_U16 = struct.Struct("!H")
_I32 = struct.Struct("!i")
_U32 = struct.Struct("!I")
_II = struct.Struct("!II")
_NULL = b"\xff\xff\xff\xff"

#: A complete message in a L{FrameReader}'s stream: C{(type, start, end)},
#: absolute stream offsets of the type byte and of the byte after the message.
Frame: TypeAlias = tuple[int, int, int]


def encode_message(type_: int | bytes, body: bytes = b"") -> bytes:
    """
    Frame C{body} as one typed message: type byte, length word, body.
    """
    if isinstance(type_, bytes):
        if len(type_) != 1:
            raise ValueError(f"message type must be one byte, not {type_!r}")
        type_ = type_[0]
    if len(body) > 0x7FFFFFFF - 4:
        raise ValueError("message body too long")
    return _HEADER.pack(type_, len(body) + 4) + body


class FrameReader:
    """
    Split a stream of typed messages into frames, reading only headers.

    Feed bytes with L{feed}; it returns the messages that became complete as
    C{(type, start, end)} tuples of absolute stream offsets (0 is the first
    byte ever fed).  Complete messages stay buffered until L{take_to} hands
    them out (for forwarding) or L{discard_to} drops them; L{body} and
    L{message} copy out one message for decoding.  A relay's hot path::

        frames = reader.feed(data)
        if frames:
            transport.write(reader.take_to(frames[-1][2]))

    When a chunk holds only whole messages and is taken whole, the very
    C{bytes} object fed in is returned: no copy.  Nothing is allocated
    according to a length word before its bytes have arrived.

    @param limits: 256 per-type limits on the length word (which counts
        itself but not the type byte); 0 rejects the type.  Default: every
        type allowed up to C{max_length}.  See L{FRONTEND_LIMITS} and
        L{BACKEND_LIMITS}, or use L{frontend} and L{backend}.
    @param max_length: an overall cap on the length word, applied on top
        (never above 2**31 - 1: the length word is a signed int32).
    """

    __slots__ = ("_base", "_buf", "_error", "_limits", "_need", "_off", "_scan")

    def __init__(
        self,
        limits: Sequence[int] | None = None,
        max_length: int = MAX_MESSAGE_LENGTH,
    ):
        if limits is None:
            limits = (max_length,) * 256
        elif len(limits) != 256:
            raise ValueError("limits must have 256 entries")
        # Capped at 2**31 - 1 so that a length word negative as int32 is
        # always refused.
        cap = min(max_length, 0x7FFFFFFF)
        self._limits = tuple(min(limit, cap) for limit in limits)
        # The window of unconsumed bytes is _buf[_off:]; _buf[0] sits at
        # absolute offset _base; _buf[_scan:] is not yet framed, and _need
        # bytes from _scan complete the next header or message.
        self._buf: bytes | bytearray = b""
        self._base = 0
        self._off = 0
        self._scan = 0
        self._need = 5
        self._error: ProtocolViolation | None = None

    @classmethod
    def frontend(
        cls, max_length: int = MAX_MESSAGE_LENGTH, passwords: bool = True
    ) -> FrameReader:
        """
        A reader for what a client sends after startup (the server side);
        with C{passwords=False} (after authentication) a password message
        is a protocol violation (see L{RELAY_LIMITS}).
        """
        return cls(FRONTEND_LIMITS if passwords else RELAY_LIMITS, max_length)

    @classmethod
    def backend(cls, max_length: int = MAX_MESSAGE_LENGTH) -> FrameReader:
        """
        A reader for what a server sends (the upstream side).
        """
        return cls(BACKEND_LIMITS, max_length)

    @property
    def consumed(self) -> int:
        """
        Absolute offset of the first byte not yet taken or discarded.
        """
        return self._base + self._off

    @property
    def framed(self) -> int:
        """
        Absolute offset just after the last complete message.
        """
        return self._base + self._scan

    @property
    def buffered(self) -> int:
        """
        Bytes held: complete messages not yet taken plus any partial one.
        """
        return len(self._buf) - self._off

    def feed(self, data: bytes) -> list[Frame]:
        """
        Add C{data}; return the messages it completed, in order.

        @raise ProtocolViolation: for an unknown type or a bad length word.
        """
        if self._error is not None:
            raise self._error
        buf = self._buf
        if buf:
            if type(buf) is bytes:
                # The previous chunk was kept without copying; now bytes
                # accumulate, so move the window into a growable buffer.
                off = self._off
                buf = self._buf = bytearray(memoryview(buf)[off:])
                self._base += off
                self._scan -= off
                self._off = 0
            buf += data
        elif type(data) is bytes:
            buf = self._buf = data
        else:
            buf = self._buf = bytes(data)
        pos = self._scan
        n = len(buf)
        if n - pos < self._need:
            return []
        frames: list[Frame] = []
        append = frames.append
        limits = self._limits
        base = self._base
        unpack = _HEADER.unpack_from
        while pos + 5 <= n:
            t, length = unpack(buf, pos)
            if length > limits[t] or length < 4:
                self._scan = pos
                raise self._fail(t, length)
            end = pos + 1 + length
            if end > n:
                self._scan = pos
                self._need = end - pos
                return frames
            append((t, base + pos, base + end))
            pos = end
        self._scan = pos
        self._need = 5
        return frames

    def _fail(self, t: int, length: int) -> ProtocolViolation:
        limit = self._limits[t]
        if limit == 0:
            error = ProtocolViolation(
                PROTOCOL_VIOLATION, f"invalid message type {bytes([t])!r}"
            )
        elif length < 4 or length > 0x7FFFFFFF:
            error = ProtocolViolation(
                PROTOCOL_VIOLATION,
                f"invalid message length {_I32.unpack(_U32.pack(length))[0]}"
                f" for message type {bytes([t])!r}",
            )
        else:
            error = ProtocolViolation(
                PROGRAM_LIMIT_EXCEEDED,
                f"message of type {bytes([t])!r} too long: {length} bytes,"
                f" at most {limit} allowed",
            )
        error.message_type = t
        self._error = error
        return error

    def _check(self, end: int) -> int:
        stop = end - self._base
        if not self._off <= stop <= self._scan:
            raise ValueError(
                f"offset {end} is outside the framed, unconsumed range"
                f" [{self.consumed}, {self.framed}]"
            )
        return stop

    def take_to(self, end: int) -> bytes:
        """
        Remove and return the bytes from L{consumed} up to absolute offset
        C{end}, which must not lie past L{framed} (normally C{end} is a
        frame's end).
        """
        stop = self._check(end)
        buf = self._buf
        off = self._off
        if stop == len(buf):
            if off == 0 and type(buf) is bytes:
                out = buf
            else:
                out = bytes(memoryview(buf)[off:])
            self._buf = b""
            self._base = end
            self._off = self._scan = 0
            return out
        if type(buf) is bytes:
            out = buf[off:stop]
            self._off = stop
        else:
            out = bytes(memoryview(buf)[:stop])
            del buf[:stop]  # O(1): CPython moves the bytearray's start
            self._base = end
            self._scan -= stop
        return out

    def discard_to(self, end: int) -> None:
        """
        Drop the bytes from L{consumed} up to absolute offset C{end}.
        """
        stop = self._check(end)
        buf = self._buf
        if stop == len(buf):
            self._buf = b""
            self._base = end
            self._off = self._scan = 0
        elif type(buf) is bytes:
            self._off = stop
        else:
            del buf[:stop]
            self._base = end
            self._scan -= stop

    def body(self, frame: Frame) -> bytes:
        """
        Return a copy of the body of C{frame}, which must not have been
        taken or discarded yet.
        """
        _, start, end = frame
        start += 5 - self._base
        stop = end - self._base
        if start - 5 < self._off or stop > self._scan:
            raise ValueError("frame is no longer (or not yet) buffered")
        buf = self._buf
        if type(buf) is bytes:
            return buf[start:stop]
        return bytes(memoryview(buf)[start:stop])

    def message(self, frame: Frame) -> bytes:
        """
        Return a copy of the whole message of C{frame} (header included).
        """
        _, start, end = frame
        start -= self._base
        stop = end - self._base
        if start < self._off or stop > self._scan:
            raise ValueError("frame is no longer (or not yet) buffered")
        buf = self._buf
        if type(buf) is bytes:
            return buf[start:stop]
        return bytes(memoryview(buf)[start:stop])

    def feed_messages(self, data: bytes) -> list[tuple[int, bytes]]:
        """
        Convenience for non-relaying code: L{feed}, then take every complete
        message out as C{(type, body)}.
        """
        frames = self.feed(data)
        if not frames:
            return []
        chunk = self.take_to(frames[-1][2])
        first = frames[0][1]
        return [(t, chunk[s - first + 5 : e - first]) for t, s, e in frames]


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
        return _I16.unpack_from(self.body, self._advance(2))[0]

    def uint16(self) -> int:
        return _U16.unpack_from(self.body, self._advance(2))[0]

    def int32(self) -> int:
        return _I32.unpack_from(self.body, self._advance(4))[0]

    def uint32(self) -> int:
        return _U32.unpack_from(self.body, self._advance(4))[0]

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


# -- startup phase -----------------------------------------------------------


@attrs.frozen
class SSLRequest:
    """
    A client asks for TLS.  C{pipelined} is how many bytes the client sent
    after it without waiting for the answer: if the server goes on to start
    TLS, those bytes were not protected and must be refused (the
    CVE-2021-23214 class of attack; L{StartupParser.accept_encryption}
    does).
    """

    pipelined: int = 0

    def encode(self) -> bytes:
        """
        The 8-byte packet, as the gateway sends it upstream.
        """
        return _II.pack(8, SSL_REQUEST_CODE)


@attrs.frozen
class GSSENCRequest:
    """
    A client asks for GSSAPI encryption; C{pipelined} as for L{SSLRequest}.
    """

    pipelined: int = 0

    def encode(self) -> bytes:
        """
        The 8-byte packet.
        """
        return _II.pack(8, GSSENC_REQUEST_CODE)


@attrs.frozen
class CancelRequest:
    """
    A request to cancel the query running in backend C{pid}; C{secret} is
    4 bytes in protocol 3.0 and up to 256 bytes from 3.2 on.
    """

    pid: int
    secret: bytes

    def encode(self) -> bytes:
        """
        The packet, as sent on a fresh connection.
        """
        if not MIN_CANCEL_KEY_LENGTH <= len(self.secret) <= MAX_CANCEL_KEY_LENGTH:
            raise ValueError(f"cancel key of {len(self.secret)} bytes")
        return (
            _II.pack(12 + len(self.secret), CANCEL_REQUEST_CODE)
            + _U32.pack(self.pid & 0xFFFFFFFF)
            + self.secret
        )


@attrs.frozen
class DirectTLS:
    """
    The connection opened with a TLS ClientHello (libpq's
    C{sslnegotiation=direct}, PostgreSQL 17+) instead of a startup packet.
    Nothing was consumed: the server starts TLS at once and feeds it
    L{StartupParser.take_remaining}.
    """


def _pairs(value: Mapping[str, str] | Iterable[tuple[str, str]]) -> tuple:
    items = value.items() if isinstance(value, Mapping) else value
    return tuple((k, v) for k, v in items)


@attrs.frozen
class StartupMessage:
    """
    The client's startup packet: protocol C{version} (major << 16 | minor)
    and its parameters (C{user}, C{database}, C{options}, GUCs and
    C{_pq_.*} protocol options) in the order sent.
    """

    parameters: tuple[tuple[str, str], ...] = attrs.field(default=(), converter=_pairs)
    version: int = PROTOCOL_3_0

    @property
    def major(self) -> int:
        """
        The major protocol version (3).
        """
        return self.version >> 16

    @property
    def minor(self) -> int:
        """
        The minor protocol version (0 by default in libpq up to 18, 2 with
        C{max_protocol_version=3.2}; 9999 when PostgreSQL 19 libpq tests
        negotiation).
        """
        return self.version & 0xFFFF

    def get(self, name: str, default: str | None = None) -> str | None:
        """
        The value of parameter C{name} (the last one, if repeated).
        """
        found = default
        for key, value in self.parameters:
            if key == name:
                found = value
        return found

    def as_dict(self) -> dict[str, str]:
        """
        The parameters as a dict (later duplicates win).
        """
        return dict(self.parameters)

    @property
    def protocol_options(self) -> tuple[str, ...]:
        """
        Names of the C{_pq_.*} protocol extension parameters requested.
        """
        return tuple(k for k, _ in self.parameters if k.startswith("_pq_."))

    def negotiate(
        self,
        latest: int = LATEST_PROTOCOL,
        supported_options: Iterable[str] = (),
    ) -> NegotiateProtocolVersion | None:
        """
        The L{NegotiateProtocolVersion} a server supporting protocol 3.0 up
        to C{latest} and the given C{_pq_.*} options must send in answer,
        or C{None} if the request is fully supported.
        """
        supported = set(supported_options)
        rejected = tuple(n for n in self.protocol_options if n not in supported)
        if self.version > latest or rejected:
            return NegotiateProtocolVersion(min(self.version, latest), rejected)
        return None

    @classmethod
    def decode(
        cls, version: int, body: bytes, encoding: str = "utf-8"
    ) -> StartupMessage:
        """
        Decode the parameter list that follows the version in a protocol 3
        startup packet.
        """
        params = []
        pos = 0
        last = len(body) - 1
        find = body.find
        while True:
            nul = find(b"\0", pos)
            if nul < 0:
                raise _malformed("startup", "missing string terminator")
            if nul == pos:
                if nul != last:
                    raise _malformed("startup", "expected terminator as last byte")
                break
            name = body[pos:nul]
            pos = nul + 1
            nul = find(b"\0", pos)
            if nul < 0:
                raise _malformed("startup", "missing parameter value")
            params.append((_text(name, encoding), _text(body[pos:nul], encoding)))
            pos = nul + 1
        return cls(tuple(params), version)

    def encode(self, encoding: str = "utf-8") -> bytes:
        """
        The packet, as the gateway sends it upstream.
        """
        parts = [_U32.pack(self.version)]
        for name, value in self.parameters:
            if not name:
                raise ValueError("empty startup parameter name")
            parts.append(_cstr(name, encoding))
            parts.append(_cstr(value, encoding))
        parts.append(b"\0")
        body = b"".join(parts)
        if len(body) + 4 > MAX_STARTUP_PACKET_LENGTH:
            raise ValueError("startup packet too long")
        return _U32.pack(len(body) + 4) + body


StartupEvent: TypeAlias = (
    SSLRequest | GSSENCRequest | CancelRequest | StartupMessage | DirectTLS
)


class StartupParser:
    """
    Parse what a client sends before its first typed message.

    Feed bytes with L{receive_data} and call L{next_event} until it returns
    C{None}.  Events are:

     - L{SSLRequest} and L{GSSENCRequest}: nothing more is parsed until the
       server answers through L{accept_encryption} (which refuses bytes
       pipelined in clear) or L{refuse_encryption};
     - L{DirectTLS}: nothing more is parsed until the server hands
       L{take_remaining} (the ClientHello) to TLS; then feed the plaintext;
     - the final L{StartupMessage} or L{CancelRequest}: L{done} becomes
       true and L{take_remaining} holds what followed (for a
       L{FrameReader}).

    @param max_length: the largest packet accepted, length word included.
    @param detect_tls: recognise a direct TLS ClientHello as first bytes.
    @param encoding: codec for the startup parameters.
    """

    def __init__(
        self,
        max_length: int = MAX_STARTUP_PACKET_LENGTH,
        *,
        detect_tls: bool = True,
        encoding: str = "utf-8",
    ):
        self._buf = bytearray()
        self._max_length = max_length
        self._detect_tls = detect_tls
        self._encoding = encoding
        self._tls_pending = False
        self._awaiting_answer = ""  # the request's name while unanswered
        # Requests that may not come again: PostgreSQL takes one SSLRequest
        # and one GSSENCRequest, and neither once encryption is on.
        self._negotiated: set[str] = set()
        self._done = False
        self._error: ProtocolViolation | None = None

    @property
    def done(self) -> bool:
        """
        True once a L{StartupMessage} or L{CancelRequest} was returned.
        """
        return self._done

    @property
    def buffered(self) -> int:
        """
        Bytes received and not consumed by an event.
        """
        return len(self._buf)

    def receive_data(self, data: bytes) -> None:
        """
        Add bytes from the client.
        """
        if self._error is not None:
            raise self._error
        self._buf += data

    def take_remaining(self) -> bytes:
        """
        Remove and return the unconsumed bytes (the ClientHello after
        L{DirectTLS}, or the messages after the startup packet).
        """
        out = bytes(self._buf)
        del self._buf[:]
        self._tls_pending = False
        return out

    def accept_encryption(self) -> bytes:
        """
        Accept the pending L{SSLRequest} or L{GSSENCRequest}: return the
        answer to send (C{b"S"}), then start TLS or GSSAPI and feed the
        decrypted bytes.

        @raise ProtocolViolation: if bytes are already buffered: they were
            sent in clear after the request and must not be read as if they
            had been encrypted.
        """
        request = self._answer()
        self._negotiated.update(("SSLRequest", "GSSENCRequest"))
        if self._buf:
            raise self._fail(
                PROTOCOL_VIOLATION, f"received unencrypted data after {request}"
            )
        return ACCEPT_ENCRYPTION

    def refuse_encryption(self) -> bytes:
        """
        Refuse the pending L{SSLRequest} or L{GSSENCRequest}: return the
        answer to send (C{b"N"}); the client goes on in clear.
        """
        self._negotiated.add(self._answer())
        return REFUSE_ENCRYPTION

    def _answer(self) -> str:
        if self._error is not None:
            raise self._error
        request = self._awaiting_answer
        if not request:
            raise RuntimeError("no encryption request is awaiting an answer")
        self._awaiting_answer = ""
        return request

    def _fail(self, sqlstate: str, message: str) -> ProtocolViolation:
        self._error = ProtocolViolation(sqlstate, message)
        return self._error

    def next_event(self) -> StartupEvent | None:
        """
        Return the next event, or C{None} if more bytes are needed.

        @raise ProtocolViolation: for a malformed or oversized packet or an
            unsupported protocol version.
        """
        if self._error is not None:
            raise self._error
        if self._done or self._tls_pending or self._awaiting_answer:
            return None
        buf = self._buf
        if self._detect_tls:
            if not buf:
                return None
            self._detect_tls = False
            if buf[0] == TLS_HANDSHAKE_BYTE:
                self._tls_pending = True
                self._negotiated.update(("SSLRequest", "GSSENCRequest"))
                return DirectTLS()
        if len(buf) < 4:
            return None
        # Read signed, as PostgreSQL does: a "negative" length is < 8.
        length = _I32.unpack_from(buf)[0]
        if length < 8:
            raise self._fail(
                PROTOCOL_VIOLATION, f"invalid length of startup packet: {length}"
            )
        if length > self._max_length:
            raise self._fail(
                PROGRAM_LIMIT_EXCEEDED,
                f"startup packet too long: {length} bytes,"
                f" at most {self._max_length} allowed",
            )
        if len(buf) < length:
            return None
        code = _U32.unpack_from(buf, 4)[0]
        body = bytes(buf[8:length])
        del buf[:length]
        if code == SSL_REQUEST_CODE or code == GSSENC_REQUEST_CODE:
            kind = SSLRequest if code == SSL_REQUEST_CODE else GSSENCRequest
            if body:
                raise self._fail(
                    PROTOCOL_VIOLATION, f"invalid length of {kind.__name__}: {length}"
                )
            if kind.__name__ in self._negotiated:
                raise self._fail(
                    PROTOCOL_VIOLATION,
                    f"repeated {kind.__name__}: encryption was already negotiated",
                )
            self._awaiting_answer = kind.__name__
            return kind(len(buf))
        if code == CANCEL_REQUEST_CODE:
            key_length = len(body) - 4
            if not MIN_CANCEL_KEY_LENGTH <= key_length <= MAX_CANCEL_KEY_LENGTH:
                raise self._fail(
                    PROTOCOL_VIOLATION, f"invalid length of cancel request: {length}"
                )
            self._done = True
            return CancelRequest(_I32.unpack_from(body)[0], body[4:])
        major, minor = code >> 16, code & 0xFFFF
        if major != 3:
            raise self._fail(
                FEATURE_NOT_SUPPORTED,
                f"unsupported frontend protocol {major}.{minor}: server supports"
                f" 3.0 to 3.{LATEST_PROTOCOL & 0xFFFF}",
            )
        try:
            event = StartupMessage.decode(code, body, self._encoding)
        except ProtocolViolation as e:
            self._error = e
            raise
        self._done = True
        return event


@attrs.frozen
class EncryptionResponse:
    """
    A server's one-byte answer to SSLRequest or GSSENCRequest, as the
    gateway's upstream side reads it.

    @ivar answer: C{"S"} (go ahead), C{"N"} (refused) or C{"E"} (an
        ErrorResponse from a server too old to know the request: treat as
        refused and do not trust its text).
    @ivar trailing: bytes received after the answer; after C{"S"} they
        arrived unencrypted and must be refused (CVE-2021-23222).
    """

    answer: str
    trailing: int = 0

    @property
    def accepted(self) -> bool:
        """
        True if the server will now start the encryption.
        """
        return self.answer == "S"


#: What a server sends to accept or refuse SSLRequest / GSSENCRequest.
ACCEPT_ENCRYPTION = b"S"
REFUSE_ENCRYPTION = b"N"


def decode_encryption_response(data: bytes) -> EncryptionResponse | None:
    """
    Decode the first bytes a server sent after SSLRequest/GSSENCRequest;
    C{None} if C{data} is empty.
    """
    if not data:
        return None
    answer = data[0]
    if answer not in b"SNE":
        raise ProtocolViolation(
            PROTOCOL_VIOLATION,
            f"invalid response to encryption request: {bytes([answer])!r}",
        )
    return EncryptionResponse(chr(answer), len(data) - 1)


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
    param_types: tuple[int, ...] = attrs.field(default=(), converter=tuple)

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
    param_formats: tuple[int, ...] = attrs.field(default=(), converter=tuple)
    params: tuple[bytes | None, ...] = attrs.field(default=(), converter=tuple)
    result_formats: tuple[int, ...] = attrs.field(default=(), converter=tuple)

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
    arg_formats: tuple[int, ...] = attrs.field(default=(), converter=tuple)
    args: tuple[bytes | None, ...] = attrs.field(default=(), converter=tuple)
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
    mechanisms: tuple[str, ...] = attrs.field(converter=tuple)

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


@attrs.frozen
class RowDescription(Message):
    """
    The columns of the rows that follow.
    """

    TYPE: ClassVar[int] = BackendType.ROW_DESCRIPTION
    fields: tuple[FieldDescription, ...] = attrs.field(converter=tuple)

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
    values: tuple[bytes | None, ...] = attrs.field(converter=tuple)

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


def _field_pairs(value: Iterable[tuple[str, str]]) -> tuple:
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
    type_oids: tuple[int, ...] = attrs.field(converter=tuple)

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
    column_formats: tuple[int, ...] = attrs.field(default=(), converter=tuple)


@attrs.frozen
class CopyOutResponse(_CopyResponse):
    """
    COPY TO STDOUT data follows.
    """

    TYPE: ClassVar[int] = BackendType.COPY_OUT_RESPONSE
    format: int = 0
    column_formats: tuple[int, ...] = attrs.field(default=(), converter=tuple)


@attrs.frozen
class CopyBothResponse(_CopyResponse):
    """
    Bidirectional copy (streaming replication) starts.
    """

    TYPE: ClassVar[int] = BackendType.COPY_BOTH_RESPONSE
    format: int = 0
    column_formats: tuple[int, ...] = attrs.field(default=(), converter=tuple)


@attrs.frozen
class NegotiateProtocolVersion(Message):
    """
    The server supports protocol C{version} at most and did not recognise
    the C{_pq_.*} C{options} named.
    """

    TYPE: ClassVar[int] = BackendType.NEGOTIATE_PROTOCOL_VERSION
    version: int
    options: tuple[str, ...] = attrs.field(default=(), converter=tuple)

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


# -- dispatch ----------------------------------------------------------------

_FRONTEND: dict[int, Any] = {
    k.TYPE: k.decode
    for k in (
        Query,
        Parse,
        Bind,
        Execute,
        Describe,
        Close,
        Sync,
        Flush,
        Terminate,
        CopyData,
        CopyDone,
        CopyFail,
        FunctionCall,
        AuthResponse,
    )
}

_BACKEND: dict[int, Any] = {
    k.TYPE: k.decode
    for k in (
        _Authentication,
        ParameterStatus,
        BackendKeyData,
        ReadyForQuery,
        RowDescription,
        DataRow,
        CommandComplete,
        EmptyQueryResponse,
        ErrorResponse,
        NoticeResponse,
        NotificationResponse,
        ParseComplete,
        BindComplete,
        CloseComplete,
        NoData,
        PortalSuspended,
        ParameterDescription,
        CopyInResponse,
        CopyOutResponse,
        CopyBothResponse,
        CopyData,
        CopyDone,
        NegotiateProtocolVersion,
        FunctionCallResponse,
    )
}


def decode_frontend(type_: int, body: bytes, encoding: str = "utf-8") -> Message:
    """
    Decode a frontend message body by type byte.  A 'p' message comes back
    as L{AuthResponse}: its meaning depends on the authentication state.

    @raise ProtocolViolation: for an unknown type or a malformed body.
    """
    decode = _FRONTEND.get(type_)
    if decode is None:
        raise ProtocolViolation(
            PROTOCOL_VIOLATION, f"invalid frontend message type {type_}"
        )
    return decode(body, encoding)


def decode_backend(type_: int, body: bytes, encoding: str = "utf-8") -> Message:
    """
    Decode a backend message body by type byte.

    @raise ProtocolViolation: for an unknown type or a malformed body.
    """
    decode = _BACKEND.get(type_)
    if decode is None:
        raise ProtocolViolation(
            PROTOCOL_VIOLATION, f"invalid backend message type {type_}"
        )
    return decode(body, encoding)
