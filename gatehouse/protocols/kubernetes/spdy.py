"""
SPDY/3.1 framing, sans-IO, as client-go speaks it (C{github.com/moby/spdystream}).

Kubernetes runs exec, attach and port-forward over SPDY/3.1 after an HTTP
upgrade: each logical stream (stdin, stdout, one port's data, ...) is a SPDY
stream opened by C{SYN_STREAM} whose compressed header block names what it
carries.  This module reads and writes the frames:

- L{SpdyFrameReader} takes one direction's bytes in any chunks and returns
  whole frames, each with its exact bytes (L{ReadFrame}) so that a relay can
  forward whole frames only and a passive observer can decode a connection
  without altering it;
- L{SpdyFrameWriter} encodes frames for one direction;
- L{HeaderBlockEncoder} and L{HeaderBlockDecoder} hold the zlib context of
  one direction (the SPDY/3 dictionary, a sync flush after every block).

Everything the peer of a real client would refuse, and everything that two
readers could understand differently, raises L{ProtocolError}; a reader that
raised stays failed.  The rules are those of the SPDY/3.1 draft as
spdystream enforces them, plus: unknown control frames, unknown flags,
reserved bits and a header block that does not decompress to exactly one
block are refused rather than skipped.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Iterator

import attrs

__all__ = [
    "DEFAULT_MAX_FRAME_LENGTH",
    "DEFAULT_MAX_HEADER_BLOCK",
    "FLAG_CLEAR_SETTINGS",
    "HEADER_DICTIONARY",
    "MAX_STREAM_ID",
    "SPDY_VERSION",
    "Data",
    "Frame",
    "GoAway",
    "HeaderBlockDecoder",
    "HeaderBlockEncoder",
    "HeaderList",
    "Headers",
    "Ping",
    "ProtocolError",
    "ReadFrame",
    "RstStream",
    "Setting",
    "Settings",
    "SpdyFrameReader",
    "SpdyFrameWriter",
    "SynReply",
    "SynStream",
    "WindowUpdate",
    "header_value",
]

SPDY_VERSION = 3
#: Stream ids, ping ids and window deltas are 31-bit numbers.
MAX_STREAM_ID = 0x7FFFFFFF
#: The largest length a frame's 24-bit length field can carry.
_MAX_LENGTH_FIELD = 0xFFFFFF
#: client-go copies with 32 KiB buffers; a frame well above that is refused.
DEFAULT_MAX_FRAME_LENGTH = 1 << 20
#: The largest decompressed header block accepted (Kubernetes sends a few
#: short headers per stream).
DEFAULT_MAX_HEADER_BLOCK = 64 * 1024

# control frame types
_SYN_STREAM = 1
_SYN_REPLY = 2
_RST_STREAM = 3
_SETTINGS = 4
_PING = 6
_GOAWAY = 7
_HEADERS = 8
_WINDOW_UPDATE = 9

FLAG_FIN = 0x01
FLAG_UNIDIRECTIONAL = 0x02
FLAG_CLEAR_SETTINGS = 0x01

# Headers a SYN_STREAM (request) or SYN_REPLY (response) must not carry
# (spdystream's invalidReqHeaders / invalidRespHeaders).
_INVALID_RESPONSE_HEADERS = frozenset(
    {"connection", "keep-alive", "proxy-connection", "transfer-encoding"}
)
_INVALID_REQUEST_HEADERS = _INVALID_RESPONSE_HEADERS | {"host"}


def _dictionary() -> bytes:
    # The zlib dictionary of SPDY/3 (draft 3, section 2.6.10.1): header
    # names and common values, each with a 32-bit length, then a run of
    # common strings.
    words = (
        "options head post put delete trace accept accept-charset"
        " accept-encoding accept-language accept-ranges age allow"
        " authorization cache-control connection content-base"
        " content-encoding content-language content-length content-location"
        " content-md5 content-range content-type date etag expect expires"
        " from host if-match if-modified-since if-none-match if-range"
        " if-unmodified-since last-modified location max-forwards pragma"
        " proxy-authenticate proxy-authorization range referer retry-after"
        " server te trailer transfer-encoding upgrade user-agent vary via"
        " warning www-authenticate method get status"
    ).split()
    words += ["200 OK", "version", "HTTP/1.1", "url", "public", "set-cookie"]
    words += ["keep-alive", "origin"]
    head = b"".join(struct.pack(">I", len(w)) + w.encode("ascii") for w in words)
    tail = (
        "100101201202205206300302303304305306307402405406407408409410411412"
        "413414415416417502504505203 Non-Authoritative Information"
        "204 No Content301 Moved Permanently400 Bad Request401 Unauthorized"
        "403 Forbidden404 Not Found500 Internal Server Error"
        "501 Not Implemented503 Service Unavailable"
        "Jan Feb Mar Apr May Jun Jul Aug Sept Oct Nov Dec 00:00:00"
        " Mon, Tue, Wed, Thu, Fri, Sat, Sun, GMT"
        "chunked,text/html,image/png,image/jpg,image/gif,application/xml,"
        "application/xhtml+xml,text/plain,text/javascript,public"
        "privatemax-age=gzip,deflate,sdchcharset=utf-8charset=iso-8859-1,"
        "utf-,*,enq=0."
    )
    return head + tail.encode("ascii")


#: The SPDY/3 header compression dictionary (1423 bytes).
HEADER_DICTIONARY = _dictionary()


class ProtocolError(Exception):
    """
    Bytes or a frame that are not SPDY/3.1 as client-go speaks it; the
    message says why.
    """


#: A header block: (name, value) pairs in order, names lower case and
#: unique.  Text is the bytes read as latin-1 (lossless); a value may hold
#: several values separated by NUL, as SPDY allows.
HeaderList = tuple[tuple[str, str], ...]


def header_value(headers: HeaderList, name: str) -> str | None:
    """
    Return the value of header C{name} in C{headers}, or C{None}.
    """
    for key, value in headers:
        if key == name:
            return value
    return None


class _HasHeaders:
    headers: HeaderList

    def header(self, name: str) -> str | None:
        """The value of header C{name}, or C{None}."""
        return header_value(self.headers, name)


@attrs.frozen
class SynStream(_HasHeaders):
    """C{SYN_STREAM}: a stream opens; its headers say what it carries."""

    stream_id: int
    headers: HeaderList
    associated_to: int = 0
    priority: int = 0
    slot: int = 0
    fin: bool = False
    unidirectional: bool = False


@attrs.frozen
class SynReply(_HasHeaders):
    """C{SYN_REPLY}: the receiver of a C{SYN_STREAM} accepts the stream."""

    stream_id: int
    headers: HeaderList
    fin: bool = False


@attrs.frozen
class Headers(_HasHeaders):
    """C{HEADERS}: more headers for an open stream."""

    stream_id: int
    headers: HeaderList
    fin: bool = False


@attrs.frozen
class RstStream:
    """C{RST_STREAM}: a stream ends abnormally; C{status} says why (never 0)."""

    stream_id: int
    status: int


@attrs.frozen
class Setting:
    """One entry of a C{SETTINGS} frame (24-bit id, 8-bit flags)."""

    id: int
    value: int
    flags: int = 0


@attrs.frozen
class Settings:
    """C{SETTINGS}: connection parameters."""

    settings: tuple[Setting, ...] = ()
    clear: bool = False


@attrs.frozen
class Ping:
    """C{PING}, echoed by the peer (id never 0)."""

    id: int


@attrs.frozen
class GoAway:
    """C{GOAWAY}: the sender stops accepting streams."""

    last_good_stream_id: int
    status: int = 0


@attrs.frozen
class WindowUpdate:
    """C{WINDOW_UPDATE}: flow control credit (stream 0: the whole session)."""

    stream_id: int
    delta: int


@attrs.frozen
class Data:
    """A data frame: bytes of one stream; C{fin} half-closes it."""

    stream_id: int
    data: bytes
    fin: bool = False


Frame = (
    SynStream
    | SynReply
    | Headers
    | RstStream
    | Settings
    | Ping
    | GoAway
    | WindowUpdate
    | Data
)


@attrs.frozen
class ReadFrame:
    """A frame read by L{SpdyFrameReader} and the exact bytes it came in."""

    frame: Frame
    raw: bytes


# -- header blocks ------------------------------------------------------------

_U32 = struct.Struct(">I")


def _encode_block(headers: HeaderList) -> bytes:
    _check_headers(headers)
    parts = [_U32.pack(len(headers))]
    for name, value in headers:
        raw_name = name.encode("latin-1")
        raw_value = value.encode("latin-1")
        parts += [_U32.pack(len(raw_name)), raw_name, _U32.pack(len(raw_value))]
        parts.append(raw_value)
    return b"".join(parts)


def _parse_block(block: bytes) -> HeaderList:
    pos = 0

    def take(count: int) -> bytes:
        nonlocal pos
        if count > len(block) - pos:
            raise ProtocolError("header block is truncated")
        pos += count
        return block[pos - count : pos]

    (count,) = _U32.unpack(take(4))
    # Each pair takes at least 8 bytes: a count above that is a lie.
    if count > (len(block) - 4) // 8:
        raise ProtocolError(f"header block claims {count} headers")
    pairs = []
    for _ in range(count):
        (length,) = _U32.unpack(take(4))
        name = take(length).decode("latin-1")
        (length,) = _U32.unpack(take(4))
        pairs.append((name, take(length).decode("latin-1")))
    if pos != len(block):
        raise ProtocolError("header block has bytes after its last header")
    headers = tuple(pairs)
    _check_headers(headers)
    return headers


def _check_headers(headers: HeaderList) -> None:
    seen = set()
    for name, _value in headers:
        if not name:
            raise ProtocolError("empty header name")
        if name != name.lower() or "\x00" in name:
            raise ProtocolError(f"header name {name!r} is not lower case")
        if name in seen:
            raise ProtocolError(f"header {name!r} appears twice")
        seen.add(name)


class HeaderBlockEncoder:
    """
    Compresses the header blocks of one direction of a connection: one zlib
    stream with the SPDY/3 dictionary, flushed after every block.
    """

    def __init__(self) -> None:
        self._zlib = zlib.compressobj(level=9, zdict=HEADER_DICTIONARY)

    def encode(self, headers: HeaderList) -> bytes:
        """
        Return the compressed block for C{headers}.
        """
        block = _encode_block(headers)
        return self._zlib.compress(block) + self._zlib.flush(zlib.Z_SYNC_FLUSH)


class HeaderBlockDecoder:
    """
    Decompresses the header blocks of one direction of a connection, in
    order; each compressed block must hold exactly one header block.
    """

    def __init__(self, max_size: int = DEFAULT_MAX_HEADER_BLOCK) -> None:
        self._zlib = zlib.decompressobj(zdict=HEADER_DICTIONARY)
        self._max_size = max_size
        self._failed = False

    def decode(self, compressed: bytes) -> HeaderList:
        """
        Return the headers of the next block; L{ProtocolError} if it is not one.
        """
        if self._failed:
            raise ProtocolError("the header compression context is broken")
        self._failed = True
        try:
            block = self._zlib.decompress(compressed, self._max_size + 1)
        except zlib.error as e:
            raise ProtocolError(f"header block does not decompress: {e}") from None
        if len(block) > self._max_size or self._zlib.unconsumed_tail:
            raise ProtocolError(f"header block above {self._max_size} bytes")
        if self._zlib.eof:
            raise ProtocolError("header compression stream ended")
        headers = _parse_block(block)
        self._failed = False
        return headers


# -- frames -------------------------------------------------------------------

_CONTROL = struct.Struct(">HHI")
_DATA = struct.Struct(">II")
_U32x2 = struct.Struct(">II")
_SYN = struct.Struct(">IIBB")


def _check_id(value: int, what: str, *, zero: bool = False) -> None:
    if not (0 if zero else 1) <= value <= MAX_STREAM_ID:
        raise ProtocolError(f"{what} {value} out of range")


def _check_frame(frame: Frame) -> None:
    """Raise L{ProtocolError} if C{frame} breaks a rule of SPDY/3.1."""
    if isinstance(frame, (SynStream, SynReply, Headers)):
        _check_id(frame.stream_id, "stream id")
        if isinstance(frame, SynStream):
            _check_id(frame.associated_to, "associated stream id", zero=True)
            if not 0 <= frame.priority <= 7 or not 0 <= frame.slot <= 255:
                raise ProtocolError("bad priority or slot")
            invalid = _INVALID_REQUEST_HEADERS
        elif isinstance(frame, SynReply):
            invalid = _INVALID_RESPONSE_HEADERS
        else:
            # spdystream: even ids were opened by the server (a request's
            # rules), odd ones by the client.
            invalid = (
                _INVALID_REQUEST_HEADERS
                if frame.stream_id % 2 == 0
                else _INVALID_RESPONSE_HEADERS
            )
        for name, _value in frame.headers:
            if name in invalid:
                raise ProtocolError(f"header {name!r} is not allowed in SPDY")
        _check_headers(frame.headers)
    elif isinstance(frame, RstStream):
        _check_id(frame.stream_id, "stream id")
        if not 1 <= frame.status <= 0xFFFFFFFF:
            raise ProtocolError(f"RST_STREAM status {frame.status}")
    elif isinstance(frame, Settings):
        for setting in frame.settings:
            if not (0 <= setting.id <= 0xFFFFFF and 0 <= setting.flags <= 0xFF):
                raise ProtocolError("bad setting id or flags")
            if not 0 <= setting.value <= 0xFFFFFFFF:
                raise ProtocolError("bad setting value")
        if 4 + 8 * len(frame.settings) > _MAX_LENGTH_FIELD:
            raise ProtocolError("too many settings")
    elif isinstance(frame, Ping):
        _check_id(frame.id, "ping id")
    elif isinstance(frame, GoAway):
        _check_id(frame.last_good_stream_id, "last good stream id", zero=True)
        if not 0 <= frame.status <= 0xFFFFFFFF:
            raise ProtocolError(f"GOAWAY status {frame.status}")
    elif isinstance(frame, WindowUpdate):
        _check_id(frame.stream_id, "stream id", zero=True)
        _check_id(frame.delta, "window delta")
    else:
        _check_id(frame.stream_id, "stream id")
        if len(frame.data) > _MAX_LENGTH_FIELD:
            raise ProtocolError("data frame too long")


class SpdyFrameReader:
    """
    Reads the frames of one direction of a SPDY/3.1 connection: L{feed}
    takes bytes in any chunks and returns the frames they complete.

    @param max_frame_length: A frame whose length field is larger raises
        L{ProtocolError} as soon as its 8-byte header has arrived.
    @param max_header_block: The decompressed size allowed for one header block.
    """

    def __init__(
        self,
        *,
        max_frame_length: int = DEFAULT_MAX_FRAME_LENGTH,
        max_header_block: int = DEFAULT_MAX_HEADER_BLOCK,
    ) -> None:
        self._buffer = bytearray()
        self._max = min(max_frame_length, _MAX_LENGTH_FIELD)
        self._headers = HeaderBlockDecoder(max_header_block)
        self._failed: str | None = None

    @property
    def buffered(self) -> int:
        """How many bytes of an incomplete frame are held."""
        return len(self._buffer)

    def feed(self, data: bytes) -> list[ReadFrame]:
        """
        Take the next bytes; return the frames completed, in order.

        @raise ProtocolError: The bytes so far are not SPDY/3.1; every
            later call raises too.
        """
        if self._failed is not None:
            raise ProtocolError(self._failed)
        self._buffer += data
        try:
            return list(self._frames())
        except ProtocolError as e:
            self._failed = str(e)
            raise

    def _frames(self) -> Iterator[ReadFrame]:
        buffer = self._buffer
        while len(buffer) >= 8:
            first, second = _U32x2.unpack_from(buffer)
            length = second & 0xFFFFFF
            if length > self._max:
                raise ProtocolError(f"frame of {length} bytes (limit {self._max})")
            if len(buffer) < 8 + length:
                return
            raw = bytes(buffer[: 8 + length])
            del buffer[: 8 + length]
            flags = second >> 24
            if first & 0x80000000:
                frame = self._control(first, flags, raw[8:])
            else:
                if flags & ~FLAG_FIN:
                    raise ProtocolError(f"data frame flags {flags:#x}")
                frame = Data(first, raw[8:], bool(flags & FLAG_FIN))
            _check_frame(frame)
            yield ReadFrame(frame, raw)

    def _control(self, first: int, flags: int, body: bytes) -> Frame:
        version = (first >> 16) & 0x7FFF
        kind = first & 0xFFFF
        if version != SPDY_VERSION:
            raise ProtocolError(f"SPDY version {version}")
        allowed = {
            _SYN_STREAM: FLAG_FIN | FLAG_UNIDIRECTIONAL,
            _SYN_REPLY: FLAG_FIN,
            _HEADERS: FLAG_FIN,
            _SETTINGS: FLAG_CLEAR_SETTINGS,
        }.get(kind, 0)
        if flags & ~allowed:
            raise ProtocolError(f"control frame {kind} flags {flags:#x}")
        fin = bool(flags & FLAG_FIN)
        if kind == _SYN_STREAM:
            if len(body) < 10:
                raise ProtocolError("SYN_STREAM too short")
            stream_id, associated, priority, slot = _SYN.unpack_from(body)
            _reserved(stream_id, associated)
            if priority & 0x1F:
                raise ProtocolError("SYN_STREAM unused bits set")
            headers = self._headers.decode(body[10:])
            return SynStream(
                stream_id,
                headers,
                associated,
                priority >> 5,
                slot,
                fin,
                bool(flags & FLAG_UNIDIRECTIONAL),
            )
        if kind in (_SYN_REPLY, _HEADERS):
            if len(body) < 4:
                raise ProtocolError(f"control frame {kind} too short")
            (stream_id,) = _U32.unpack_from(body)
            _reserved(stream_id)
            headers = self._headers.decode(body[4:])
            if kind == _SYN_REPLY:
                return SynReply(stream_id, headers, fin)
            return Headers(stream_id, headers, fin)
        if kind == _SETTINGS:
            if len(body) < 4:
                raise ProtocolError("SETTINGS too short")
            (count,) = _U32.unpack_from(body)
            if len(body) != 4 + 8 * count:
                raise ProtocolError("SETTINGS length does not match its count")
            settings = []
            for offset in range(4, len(body), 8):
                flags_id, value = _U32x2.unpack_from(body, offset)
                settings.append(Setting(flags_id & 0xFFFFFF, value, flags_id >> 24))
            return Settings(tuple(settings), bool(flags & FLAG_CLEAR_SETTINGS))
        if kind == _PING:
            if len(body) != 4:
                raise ProtocolError("PING length is not 4")
            return Ping(_U32.unpack(body)[0])
        if kind in (_RST_STREAM, _GOAWAY, _WINDOW_UPDATE):
            if len(body) != 8:
                raise ProtocolError(f"control frame {kind} length is not 8")
            a, b = _U32x2.unpack(body)
            if kind == _RST_STREAM:
                _reserved(a)
                return RstStream(a, b)
            _reserved(a)
            if kind == _GOAWAY:
                return GoAway(a, b)
            _reserved(b)
            return WindowUpdate(a, b)
        raise ProtocolError(f"unknown control frame type {kind}")


def _reserved(*words: int) -> None:
    for word in words:
        if word & 0x80000000:
            raise ProtocolError("reserved bit set")


class SpdyFrameWriter:
    """
    Encodes the frames of one direction of a SPDY/3.1 connection (its own
    header compression context).
    """

    def __init__(self) -> None:
        self._headers = HeaderBlockEncoder()

    def encode(self, frame: Frame) -> bytes:
        """
        Return the bytes of C{frame}; L{ProtocolError} if it breaks a rule.
        """
        _check_frame(frame)
        if isinstance(frame, Data):
            flags = FLAG_FIN if frame.fin else 0
            return _DATA.pack(frame.stream_id, flags << 24 | len(frame.data)) + (
                frame.data
            )
        if isinstance(frame, SynStream):
            flags = (FLAG_FIN if frame.fin else 0) | (
                FLAG_UNIDIRECTIONAL if frame.unidirectional else 0
            )
            body = _SYN.pack(
                frame.stream_id, frame.associated_to, frame.priority << 5, frame.slot
            ) + self._headers.encode(frame.headers)
            return _control(_SYN_STREAM, flags, body)
        if isinstance(frame, (SynReply, Headers)):
            kind = _SYN_REPLY if isinstance(frame, SynReply) else _HEADERS
            body = _U32.pack(frame.stream_id) + self._headers.encode(frame.headers)
            return _control(kind, FLAG_FIN if frame.fin else 0, body)
        if isinstance(frame, RstStream):
            return _control(_RST_STREAM, 0, _U32x2.pack(frame.stream_id, frame.status))
        if isinstance(frame, Settings):
            body = _U32.pack(len(frame.settings)) + b"".join(
                _U32x2.pack(s.flags << 24 | s.id, s.value) for s in frame.settings
            )
            flags = FLAG_CLEAR_SETTINGS if frame.clear else 0
            return _control(_SETTINGS, flags, body)
        if isinstance(frame, Ping):
            return _control(_PING, 0, _U32.pack(frame.id))
        if isinstance(frame, GoAway):
            body = _U32x2.pack(frame.last_good_stream_id, frame.status)
            return _control(_GOAWAY, 0, body)
        return _control(_WINDOW_UPDATE, 0, _U32x2.pack(frame.stream_id, frame.delta))


def _control(kind: int, flags: int, body: bytes) -> bytes:
    if len(body) > _MAX_LENGTH_FIELD:
        raise ProtocolError("control frame too long")
    return _CONTROL.pack(0x8000 | SPDY_VERSION, kind, flags << 24 | len(body)) + body
