"""
The SFTP version 3 wire format (draft-ietf-secsh-filexfer-02), sans-IO:
L{SFTPPacketReader} splits one direction's byte stream into L{Packet}s,
L{encode} and L{encode_status} make packets.

Fields are decoded as OpenSSH's C{sftp-server} reads them, so that what
the gateway's policy sees is what the server acts on:

  - paths (and extension names) are C strings: a path with a NUL inside
    is refused (the server refuses it too), and one trailing NUL, which
    the server drops, is dropped here (C{"/etc/passwd\\0"} I{is}
    C{/etc/passwd});
  - C{SSH_FXP_SYMLINK} carries the target first and the link second
    (OpenSSH's documented reversal of the draft's order; OpenSSH's
    clients and other clients talking to an OpenSSH server do the same);
  - unknown attribute and open-flag bits are kept but mean nothing (the
    server ignores them).

Every packet keeps C{raw}, its exact bytes (length prefix included), for
forwarding unchanged.
"""

from __future__ import annotations

from typing import Any

import attrs

from gatehouse.protocols.ssh.sftp.messages import (
    _MESSAGES,
    CLIENT_TYPES,
    EXTENSIONS,
    SERVER_TYPES,
    SSH_FXP_INIT,
    SSH_FXP_VERSION,
    Extended,
    Init,
    Message,
    NameEntry,
    Status,
    Version,
)
from gatehouse.protocols.ssh.sftp.wire import (
    _HEADER,
    _U32,
    _U64,
    MAX_PACKET_LENGTH,
    SFTP_VERSION,
    SFTPProtocolError,
    _Cursor,
    _Layout,
    _pairs,
    _string,
)

__all__ = [
    "Packet",
    "SFTPPacketReader",
    "encode",
    "encode_status",
    "extended",
]


def _decode_fields(cursor: _Cursor, layout: _Layout) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for name, kind in layout:
        if kind == "u32":
            values[name] = cursor.u32()
        elif kind == "u64":
            values[name] = cursor.u64()
        elif kind == "string":
            values[name] = cursor.string()
        elif kind == "path":
            values[name] = cursor.cstring()
        elif kind == "attrs":
            values[name] = cursor.attrs()
        elif kind == "text" or (kind == "text?" and cursor.remaining):
            values[name] = cursor.string().decode("utf-8", "replace")
        elif kind == "pairs":
            values[name] = cursor.pairs()
        elif kind == "names":
            count = cursor.u32()
            if count * 12 > cursor.remaining:
                raise cursor.fail(f"{count} names cannot fit")
            values[name] = tuple(
                NameEntry(cursor.string(), cursor.string(), cursor.attrs())
                for _ in range(count)
            )
        elif kind == "rest":
            values[name] = cursor.rest()
    cursor.done()
    return values


def _decode_extension(request: Extended) -> Extended:
    layout = EXTENSIONS.get(request.name)
    if layout is None:
        return request
    cursor = _Cursor(
        request.data, 0, request.name.decode("ascii", "replace") + " request"
    )
    paths, handles, numbers = [], [], []
    attributes = None
    for kind in layout:
        if kind == "path":
            paths.append(cursor.cstring())
        elif kind == "handle":
            handles.append(cursor.string())
        elif kind == "u64":
            numbers.append(cursor.u64())
        elif kind == "attrs":
            attributes = cursor.attrs()
        else:
            cursor.string()
    cursor.done()
    return attrs.evolve(
        request,
        paths=tuple(paths),
        handles=tuple(handles),
        attrs=attributes,
        numbers=tuple(numbers),
    )


def _decode(raw: bytes) -> Message:
    """Decode one whole packet (length prefix included)."""
    cls = _MESSAGES.get(raw[4])
    if cls is None:
        raise SFTPProtocolError(f"unknown packet type {raw[4]}")
    message = cls(**_decode_fields(_Cursor(raw, 5, cls.__name__), cls.LAYOUT))
    if isinstance(message, Extended):
        message = _decode_extension(message)
    return message


# -- packets -----------------------------------------------------------------


@attrs.frozen
class Packet:
    """
    One SFTP packet: its C{type}, C{request_id} (C{None} for INIT and
    VERSION), the decoded C{message}, and C{raw}, its exact bytes with the
    length prefix, to forward unchanged.
    """

    type: int
    request_id: int | None
    message: Message
    raw: bytes = attrs.field(repr=False)

    @classmethod
    def of(cls, message: Message) -> Packet:
        """The packet of a message, encoded."""
        return cls(
            message.TYPE, getattr(message, "request_id", None), message, encode(message)
        )


class SFTPPacketReader:
    """
    Split one direction of an SFTP channel into L{Packet}s.

    C{sender} is C{"client"} or C{"server"}: a packet type the other side
    sends is refused, as are a first packet that is not INIT (VERSION for
    a server), a second one, a server version other than 3 and a client
    version below 3.  Lengths above C{max_length} are refused as soon as
    the length word arrives: at most C{4 + max_length} bytes are ever
    buffered between calls.  After an error the reader stays failed.
    """

    __slots__ = ("_buf", "_error", "_max", "_need", "_started", "_types", "sender")

    def __init__(self, sender: str, max_length: int = MAX_PACKET_LENGTH) -> None:
        if sender not in ("client", "server"):
            raise ValueError(f"sender must be 'client' or 'server', not {sender!r}")
        self.sender = sender
        self._types = CLIENT_TYPES if sender == "client" else SERVER_TYPES
        self._max = max_length
        self._buf = bytearray()
        self._need = 4
        self._started = False
        self._error: SFTPProtocolError | None = None

    @property
    def buffered(self) -> int:
        """Bytes held for a packet not yet complete."""
        return len(self._buf)

    def feed(self, data: bytes) -> list[Packet]:
        """The packets C{data} completes, in order; raises L{SFTPProtocolError}."""
        if self._error is not None:
            raise self._error
        try:
            return self._feed(data)
        except SFTPProtocolError as e:
            self._error = e
            self._buf = bytearray()
            raise

    def _feed(self, data: bytes) -> list[Packet]:
        packets = []
        pos, end = 0, len(data)
        buf = self._buf
        while pos < end:
            if not buf and end - pos >= 4:
                # Nothing pending: read the length word in place, and take
                # a whole packet straight from data when it is there.
                self._need = self._length(data, pos) + 4
                if end - pos >= self._need:
                    packets.append(self._packet(data[pos : pos + self._need]))
                    pos += self._need
                    self._need = 4
                    continue
            take = min(self._need - len(buf), end - pos)
            buf += data[pos : pos + take]
            pos += take
            if len(buf) == 4 and self._need == 4:
                self._need = self._length(buf, 0) + 4
            if len(buf) == self._need and self._need > 4:
                packets.append(self._packet(bytes(buf)))
                buf.clear()
                self._need = 4
        return packets

    def _length(self, data: bytes | bytearray, pos: int) -> int:
        (length,) = _U32.unpack_from(data, pos)
        if length > self._max:
            raise SFTPProtocolError(
                f"{self.sender} packet of {length} bytes is over the limit"
                f" of {self._max}"
            )
        if length == 0:
            raise SFTPProtocolError(f"empty {self.sender} packet (no type)")
        return int(length)

    def _packet(self, raw: bytes) -> Packet:
        type_ = raw[4]
        if type_ not in self._types:
            raise SFTPProtocolError(
                f"packet type {type_} is not one a {self.sender} sends"
            )
        first = SSH_FXP_INIT if self.sender == "client" else SSH_FXP_VERSION
        if (type_ == first) == self._started:
            what = "INIT" if first == SSH_FXP_INIT else "VERSION"
            raise SFTPProtocolError(
                f"{self.sender} sent a second {what}"
                if self._started
                else f"{self.sender} sent packet type {type_} before {what}"
            )
        self._started = True
        message = _decode(raw)
        if isinstance(message, Version) and message.version != SFTP_VERSION:
            raise SFTPProtocolError(
                f"server speaks SFTP version {message.version}, not 3"
            )
        if isinstance(message, Init) and message.version < SFTP_VERSION:
            raise SFTPProtocolError(
                f"client speaks SFTP version {message.version}, not 3"
            )
        return Packet(type_, getattr(message, "request_id", None), message, raw)


# -- encoding ------------------------------------------------------------------


def _encode_fields(message: Message) -> bytes:
    out = []
    for name, kind in message.LAYOUT:
        value = getattr(message, name)
        if kind in ("u32",):
            out.append(_U32.pack(value))
        elif kind == "u64":
            out.append(_U64.pack(value))
        elif kind in ("string", "path"):
            out.append(_string(value))
        elif kind in ("text", "text?"):
            out.append(_string(value.encode("utf-8")))
        elif kind == "attrs":
            out.append(value.encode())
        elif kind == "pairs":
            out.append(_pairs(value))
        elif kind == "names":
            out.append(_U32.pack(len(value)))
            out.extend(
                _string(e.filename) + _string(e.longname) + e.attrs.encode()
                for e in value
            )
        elif kind == "rest":
            out.append(value)
    return b"".join(out)


def encode(message: Message) -> bytes:
    """
    The whole packet of C{message}, length prefix included.  An
    L{Extended} request is encoded from C{name} and C{data} (its decoded
    fields are derived from them).
    """
    body = _encode_fields(message)
    return _HEADER.pack(len(body) + 1, message.TYPE) + body


def encode_status(
    request_id: int, code: int, message: str, language: str = ""
) -> bytes:
    """
    An C{SSH_FXP_STATUS} packet: how the gateway answers a request it
    refuses itself (C{SSH_FX_PERMISSION_DENIED} and the policy's message).
    """
    return encode(Status(request_id, code, message, language))


def extended(request_id: int, name: bytes, data: bytes = b"") -> Extended:
    """An L{Extended} request with its data decoded as the reader would."""
    return _decode_extension(Extended(request_id, name, data))
