"""
Framing: L{encode_message} and L{FrameReader}, the relay's hot path
(complete messages as stream offsets, no object per message).
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from typing import TypeAlias

from .core import (
    BACKEND_LIMITS,
    FRONTEND_LIMITS,
    MAX_MESSAGE_LENGTH,
    PROGRAM_LIMIT_EXCEEDED,
    PROTOCOL_VIOLATION,
    RELAY_LIMITS,
    ProtocolViolation,
)

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
        if isinstance(buf, bytes):
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
        elif isinstance(buf, bytes):
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
