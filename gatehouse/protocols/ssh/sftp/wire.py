"""
SFTP version 3 wire basics: limits, status codes, attribute flags, the
field reader, and the C{ATTRS} structure (L{FileAttributes}).
"""

from __future__ import annotations

import struct

import attrs

__all__ = [
    "MAX_HANDLE_LENGTH",
    "MAX_PACKET_LENGTH",
    "NO_ATTRIBUTES",
    "SFTP_VERSION",
    "STATUS_NAMES",
    "FileAttributes",
    "SFTPProtocolError",
]

SFTP_VERSION = 3

#: OpenSSH's limit on a packet's length word (C{SFTP_MAX_MSG_LENGTH}) is
#: 256 KiB; the default here allows a header's worth more.
MAX_PACKET_LENGTH = 256 * 1024 + 1024
#: The draft: "handle strings MUST NOT be longer than 256 bytes".
MAX_HANDLE_LENGTH = 256

# status codes
SSH_FX_OK = 0
SSH_FX_EOF = 1
SSH_FX_NO_SUCH_FILE = 2
SSH_FX_PERMISSION_DENIED = 3
SSH_FX_FAILURE = 4
SSH_FX_BAD_MESSAGE = 5
SSH_FX_NO_CONNECTION = 6
SSH_FX_CONNECTION_LOST = 7
SSH_FX_OP_UNSUPPORTED = 8

#: Status codes as recordings name them.
STATUS_NAMES = {
    SSH_FX_OK: "ok",
    SSH_FX_EOF: "eof",
    SSH_FX_NO_SUCH_FILE: "no such file",
    SSH_FX_PERMISSION_DENIED: "permission denied",
    SSH_FX_FAILURE: "failure",
    SSH_FX_BAD_MESSAGE: "bad message",
    SSH_FX_NO_CONNECTION: "no connection",
    SSH_FX_CONNECTION_LOST: "connection lost",
    SSH_FX_OP_UNSUPPORTED: "operation unsupported",
}

# attribute flags
SSH_FILEXFER_ATTR_SIZE = 0x01
SSH_FILEXFER_ATTR_UIDGID = 0x02
SSH_FILEXFER_ATTR_PERMISSIONS = 0x04
SSH_FILEXFER_ATTR_ACMODTIME = 0x08
SSH_FILEXFER_ATTR_EXTENDED = 0x80000000

_U32 = struct.Struct(">I")
_U64 = struct.Struct(">Q")
_HEADER = struct.Struct(">IB")

_Layout = tuple[tuple[str, str], ...]


class SFTPProtocolError(Exception):
    """Bytes that are not SFTP version 3 as OpenSSH speaks it; the message says why."""


# -- reading and writing fields ----------------------------------------------


class _Cursor:
    """Reads fields from one packet's body; short or bad input raises."""

    __slots__ = ("_data", "_end", "_what", "pos")

    def __init__(self, data: bytes, pos: int, what: str) -> None:
        self._data = data
        self._end = len(data)
        self._what = what
        self.pos = pos

    def fail(self, why: str) -> SFTPProtocolError:
        return SFTPProtocolError(f"malformed {self._what}: {why}")

    @property
    def remaining(self) -> int:
        return self._end - self.pos

    def u32(self) -> int:
        if self.remaining < 4:
            raise self.fail("truncated uint32")
        (value,) = _U32.unpack_from(self._data, self.pos)
        self.pos += 4
        return int(value)

    def u64(self) -> int:
        if self.remaining < 8:
            raise self.fail("truncated uint64")
        (value,) = _U64.unpack_from(self._data, self.pos)
        self.pos += 8
        return int(value)

    def string(self) -> bytes:
        length = self.u32()
        if length > self.remaining:
            raise self.fail(f"string of {length} bytes with {self.remaining} left")
        value = self._data[self.pos : self.pos + length]
        self.pos += length
        return value

    def cstring(self) -> bytes:
        """A string the server reads as a C string (C{sshbuf_get_cstring})."""
        value = self.string()
        nul = value.find(b"\0")
        if nul != -1:
            if nul != len(value) - 1:
                raise self.fail("NUL inside a path or name")
            value = value[:-1]
        return value

    def rest(self) -> bytes:
        value = self._data[self.pos :]
        self.pos = self._end
        return value

    def attrs(self) -> FileAttributes:
        flags = self.u32()
        size = self.u64() if flags & SSH_FILEXFER_ATTR_SIZE else None
        uid = gid = None
        if flags & SSH_FILEXFER_ATTR_UIDGID:
            uid, gid = self.u32(), self.u32()
        permissions = self.u32() if flags & SSH_FILEXFER_ATTR_PERMISSIONS else None
        atime = mtime = None
        if flags & SSH_FILEXFER_ATTR_ACMODTIME:
            atime, mtime = self.u32(), self.u32()
        extended: tuple[tuple[bytes, bytes], ...] = ()
        if flags & SSH_FILEXFER_ATTR_EXTENDED:
            extended = self.pairs(self.u32())
        return FileAttributes(
            flags, size, uid, gid, permissions, atime, mtime, extended
        )

    def pairs(self, count: int | None = None) -> tuple[tuple[bytes, bytes], ...]:
        """C{count} (name, data) string pairs; C{None}: as many as remain."""
        if count is not None and count * 8 > self.remaining:
            raise self.fail(f"{count} extension pairs cannot fit")
        found: list[tuple[bytes, bytes]] = []
        while (self.remaining if count is None else count - len(found)) > 0:
            found.append((self.string(), self.string()))
        return tuple(found)

    def done(self) -> None:
        if self.remaining:
            raise self.fail(f"{self.remaining} unexpected trailing bytes")


def _string(value: bytes) -> bytes:
    return _U32.pack(len(value)) + value


def _pairs(pairs: tuple[tuple[bytes, bytes], ...]) -> bytes:
    return b"".join(_string(name) + _string(data) for name, data in pairs)


# -- attributes ----------------------------------------------------------------


@attrs.frozen
class FileAttributes:
    """
    An C{ATTRS} structure: the fields present are those C{flags} names
    (unknown flag bits are kept; they carry no field in version 3).
    """

    flags: int = 0
    size: int | None = None
    uid: int | None = None
    gid: int | None = None
    permissions: int | None = None
    atime: int | None = None
    mtime: int | None = None
    extended: tuple[tuple[bytes, bytes], ...] = ()

    @classmethod
    def of(
        cls,
        size: int | None = None,
        uid_gid: tuple[int, int] | None = None,
        permissions: int | None = None,
        times: tuple[int, int] | None = None,
        extended: tuple[tuple[bytes, bytes], ...] = (),
    ) -> FileAttributes:
        """Attributes with the flags of the fields given."""
        flags = (
            (SSH_FILEXFER_ATTR_SIZE if size is not None else 0)
            | (SSH_FILEXFER_ATTR_UIDGID if uid_gid is not None else 0)
            | (SSH_FILEXFER_ATTR_PERMISSIONS if permissions is not None else 0)
            | (SSH_FILEXFER_ATTR_ACMODTIME if times is not None else 0)
            | (SSH_FILEXFER_ATTR_EXTENDED if extended else 0)
        )
        uid, gid = uid_gid if uid_gid is not None else (None, None)
        atime, mtime = times if times is not None else (None, None)
        return cls(flags, size, uid, gid, permissions, atime, mtime, extended)

    def encode(self) -> bytes:
        """The wire form."""
        out = [_U32.pack(self.flags)]
        if self.flags & SSH_FILEXFER_ATTR_SIZE:
            out.append(_U64.pack(self.size or 0))
        if self.flags & SSH_FILEXFER_ATTR_UIDGID:
            out.append(_U32.pack(self.uid or 0) + _U32.pack(self.gid or 0))
        if self.flags & SSH_FILEXFER_ATTR_PERMISSIONS:
            out.append(_U32.pack(self.permissions or 0))
        if self.flags & SSH_FILEXFER_ATTR_ACMODTIME:
            out.append(_U32.pack(self.atime or 0) + _U32.pack(self.mtime or 0))
        if self.flags & SSH_FILEXFER_ATTR_EXTENDED:
            out.append(_U32.pack(len(self.extended)) + _pairs(self.extended))
        return b"".join(out)


#: Attributes with no field (flags 0).
NO_ATTRIBUTES = FileAttributes()
