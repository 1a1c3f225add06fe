"""
The SFTP version 3 packets as attrs classes: each declares its packet type
and its fields' wire layout, which L{gatehouse.protocols.ssh.sftp.codec}
reads and writes.
"""

from __future__ import annotations

from typing import ClassVar

import attrs

from gatehouse.protocols.ssh.sftp.wire import (
    NO_ATTRIBUTES,
    SSH_FX_OK,
    STATUS_NAMES,
    FileAttributes,
    _Layout,
)

__all__ = [
    "CLIENT_TYPES",
    "EXTENSIONS",
    "SERVER_TYPES",
    "Attrs",
    "Close",
    "Data",
    "Extended",
    "ExtendedReply",
    "Fsetstat",
    "Fstat",
    "Handle",
    "Init",
    "Lstat",
    "Message",
    "Mkdir",
    "Name",
    "NameEntry",
    "Open",
    "Opendir",
    "Read",
    "Readdir",
    "Readlink",
    "Realpath",
    "Remove",
    "Rename",
    "Rmdir",
    "Setstat",
    "Stat",
    "Status",
    "Symlink",
    "Version",
    "Write",
]

# packet types
SSH_FXP_INIT = 1
SSH_FXP_VERSION = 2
SSH_FXP_OPEN = 3
SSH_FXP_CLOSE = 4
SSH_FXP_READ = 5
SSH_FXP_WRITE = 6
SSH_FXP_LSTAT = 7
SSH_FXP_FSTAT = 8
SSH_FXP_SETSTAT = 9
SSH_FXP_FSETSTAT = 10
SSH_FXP_OPENDIR = 11
SSH_FXP_READDIR = 12
SSH_FXP_REMOVE = 13
SSH_FXP_MKDIR = 14
SSH_FXP_RMDIR = 15
SSH_FXP_REALPATH = 16
SSH_FXP_STAT = 17
SSH_FXP_RENAME = 18
SSH_FXP_READLINK = 19
SSH_FXP_SYMLINK = 20
SSH_FXP_STATUS = 101
SSH_FXP_HANDLE = 102
SSH_FXP_DATA = 103
SSH_FXP_NAME = 104
SSH_FXP_ATTRS = 105
SSH_FXP_EXTENDED = 200
SSH_FXP_EXTENDED_REPLY = 201

# open flags (pflags)
SSH_FXF_READ = 0x01
SSH_FXF_WRITE = 0x02
SSH_FXF_APPEND = 0x04
SSH_FXF_CREAT = 0x08
SSH_FXF_TRUNC = 0x10
SSH_FXF_EXCL = 0x20


# -- messages ------------------------------------------------------------------
#
# Each message declares its packet type and its fields' wire layout, in
# order; one generic decoder and encoder read them.  Field kinds: u32,
# u64, string (binary), path (a C string: see the module docstring),
# attrs, text (a UTF-8 string), text? (one the sender may leave out),
# pairs (extension pairs to the end), names (a counted NAME list), rest.


class Message:
    """A decoded SFTP packet body (see the subclasses)."""

    TYPE: ClassVar[int]
    LAYOUT: ClassVar[_Layout]


@attrs.frozen
class Init(Message):
    """C{SSH_FXP_INIT}: the client's version and extensions."""

    TYPE = SSH_FXP_INIT
    LAYOUT = (("version", "u32"), ("extensions", "pairs"))
    version: int
    extensions: tuple[tuple[bytes, bytes], ...] = ()


@attrs.frozen
class Version(Message):
    """
    C{SSH_FXP_VERSION}: the server's version and extensions (OpenSSH's
    C{posix-rename@openssh.com}, ...).
    """

    TYPE = SSH_FXP_VERSION
    LAYOUT = (("version", "u32"), ("extensions", "pairs"))
    version: int
    extensions: tuple[tuple[bytes, bytes], ...] = ()


@attrs.frozen
class Open(Message):
    """C{SSH_FXP_OPEN}: open a file; C{pflags} decoded by the properties."""

    TYPE = SSH_FXP_OPEN
    LAYOUT = (
        ("request_id", "u32"),
        ("path", "path"),
        ("pflags", "u32"),
        ("attrs", "attrs"),
    )
    request_id: int
    path: bytes
    pflags: int
    attrs: FileAttributes = NO_ATTRIBUTES

    @property
    def read(self) -> bool:
        return bool(self.pflags & SSH_FXF_READ)

    @property
    def write(self) -> bool:
        return bool(self.pflags & SSH_FXF_WRITE)

    @property
    def append(self) -> bool:
        return bool(self.pflags & SSH_FXF_APPEND)

    @property
    def creat(self) -> bool:
        return bool(self.pflags & SSH_FXF_CREAT)

    @property
    def trunc(self) -> bool:
        return bool(self.pflags & SSH_FXF_TRUNC)

    @property
    def excl(self) -> bool:
        return bool(self.pflags & SSH_FXF_EXCL)

    @property
    def modifies(self) -> bool:
        """
        The open may change the file: write, append, create, truncate (a
        read-only open with C{O_TRUNC} truncates on Linux) or exclusive
        create.
        """
        return bool(
            self.pflags
            & (
                SSH_FXF_WRITE
                | SSH_FXF_APPEND
                | SSH_FXF_CREAT
                | SSH_FXF_TRUNC
                | SSH_FXF_EXCL
            )
        )


@attrs.frozen
class Close(Message):
    """C{SSH_FXP_CLOSE}."""

    TYPE = SSH_FXP_CLOSE
    LAYOUT = (("request_id", "u32"), ("handle", "string"))
    request_id: int
    handle: bytes


@attrs.frozen
class Read(Message):
    """C{SSH_FXP_READ}: up to C{length} bytes at C{offset}."""

    TYPE = SSH_FXP_READ
    LAYOUT = (
        ("request_id", "u32"),
        ("handle", "string"),
        ("offset", "u64"),
        ("length", "u32"),
    )
    request_id: int
    handle: bytes
    offset: int
    length: int


@attrs.frozen
class Write(Message):
    """C{SSH_FXP_WRITE}: C{data} at C{offset}."""

    TYPE = SSH_FXP_WRITE
    LAYOUT = (
        ("request_id", "u32"),
        ("handle", "string"),
        ("offset", "u64"),
        ("data", "string"),
    )
    request_id: int
    handle: bytes
    offset: int
    data: bytes = attrs.field(repr=lambda data: f"<{len(data)} bytes>")


_PATH_REQUEST: _Layout = (("request_id", "u32"), ("path", "path"))
_HANDLE_REQUEST: _Layout = (("request_id", "u32"), ("handle", "string"))
_PATH_ATTRS_REQUEST: _Layout = (
    ("request_id", "u32"),
    ("path", "path"),
    ("attrs", "attrs"),
)


@attrs.frozen
class Lstat(Message):
    """C{SSH_FXP_LSTAT} (does not follow symbolic links)."""

    TYPE = SSH_FXP_LSTAT
    LAYOUT = _PATH_REQUEST
    request_id: int
    path: bytes


@attrs.frozen
class Fstat(Message):
    """C{SSH_FXP_FSTAT}."""

    TYPE = SSH_FXP_FSTAT
    LAYOUT = _HANDLE_REQUEST
    request_id: int
    handle: bytes


@attrs.frozen
class Stat(Message):
    """C{SSH_FXP_STAT}."""

    TYPE = SSH_FXP_STAT
    LAYOUT = _PATH_REQUEST
    request_id: int
    path: bytes


@attrs.frozen
class Setstat(Message):
    """C{SSH_FXP_SETSTAT}."""

    TYPE = SSH_FXP_SETSTAT
    LAYOUT = _PATH_ATTRS_REQUEST
    request_id: int
    path: bytes
    attrs: FileAttributes


@attrs.frozen
class Fsetstat(Message):
    """C{SSH_FXP_FSETSTAT}."""

    TYPE = SSH_FXP_FSETSTAT
    LAYOUT = (("request_id", "u32"), ("handle", "string"), ("attrs", "attrs"))
    request_id: int
    handle: bytes
    attrs: FileAttributes


@attrs.frozen
class Opendir(Message):
    """C{SSH_FXP_OPENDIR}."""

    TYPE = SSH_FXP_OPENDIR
    LAYOUT = _PATH_REQUEST
    request_id: int
    path: bytes


@attrs.frozen
class Readdir(Message):
    """C{SSH_FXP_READDIR}."""

    TYPE = SSH_FXP_READDIR
    LAYOUT = _HANDLE_REQUEST
    request_id: int
    handle: bytes


@attrs.frozen
class Remove(Message):
    """C{SSH_FXP_REMOVE}."""

    TYPE = SSH_FXP_REMOVE
    LAYOUT = _PATH_REQUEST
    request_id: int
    path: bytes


@attrs.frozen
class Mkdir(Message):
    """C{SSH_FXP_MKDIR}."""

    TYPE = SSH_FXP_MKDIR
    LAYOUT = _PATH_ATTRS_REQUEST
    request_id: int
    path: bytes
    attrs: FileAttributes = NO_ATTRIBUTES


@attrs.frozen
class Rmdir(Message):
    """C{SSH_FXP_RMDIR}."""

    TYPE = SSH_FXP_RMDIR
    LAYOUT = _PATH_REQUEST
    request_id: int
    path: bytes


@attrs.frozen
class Realpath(Message):
    """C{SSH_FXP_REALPATH}."""

    TYPE = SSH_FXP_REALPATH
    LAYOUT = _PATH_REQUEST
    request_id: int
    path: bytes


@attrs.frozen
class Rename(Message):
    """C{SSH_FXP_RENAME}: C{oldpath} to C{newpath}."""

    TYPE = SSH_FXP_RENAME
    LAYOUT = (("request_id", "u32"), ("oldpath", "path"), ("newpath", "path"))
    request_id: int
    oldpath: bytes
    newpath: bytes


@attrs.frozen
class Readlink(Message):
    """C{SSH_FXP_READLINK}."""

    TYPE = SSH_FXP_READLINK
    LAYOUT = _PATH_REQUEST
    request_id: int
    path: bytes


@attrs.frozen
class Symlink(Message):
    """
    C{SSH_FXP_SYMLINK}: create C{link} pointing at C{target}.  On the wire
    in OpenSSH's order: the target first, then the link (the draft has
    them the other way round).
    """

    TYPE = SSH_FXP_SYMLINK
    LAYOUT = (("request_id", "u32"), ("target", "path"), ("link", "path"))
    request_id: int
    target: bytes
    link: bytes


@attrs.frozen
class Extended(Message):
    """
    C{SSH_FXP_EXTENDED}: request C{name} with its C{data}.  For the
    extensions in L{EXTENSIONS} the data is also decoded: C{paths} (for
    C{posix-rename@openssh.com} and C{hardlink@openssh.com}: old, new;
    C{home-directory}: the user name), C{handles} (C{copy-data}: from,
    to), C{attrs} (C{lsetstat@openssh.com}) and C{numbers}
    (C{copy-data}: read offset, read length, write offset).
    """

    TYPE = SSH_FXP_EXTENDED
    LAYOUT = (("request_id", "u32"), ("name", "path"), ("data", "rest"))
    request_id: int
    name: bytes
    data: bytes = b""
    paths: tuple[bytes, ...] = ()
    handles: tuple[bytes, ...] = ()
    attrs: FileAttributes | None = None
    numbers: tuple[int, ...] = ()


@attrs.frozen
class Status(Message):
    """C{SSH_FXP_STATUS}: C{code} (L{STATUS_NAMES}) and a message."""

    TYPE = SSH_FXP_STATUS
    LAYOUT = (
        ("request_id", "u32"),
        ("code", "u32"),
        ("message", "text?"),
        ("language", "text?"),
    )
    request_id: int
    code: int
    message: str = ""
    language: str = ""

    @property
    def ok(self) -> bool:
        return self.code == SSH_FX_OK

    def describe(self) -> str:
        """C{"ok"}, or the code's name and the server's message."""
        if self.code == SSH_FX_OK:
            return "ok"
        name = STATUS_NAMES.get(self.code, f"status {self.code}")
        return f"{name}: {self.message}" if self.message else name


@attrs.frozen
class Handle(Message):
    """C{SSH_FXP_HANDLE}."""

    TYPE = SSH_FXP_HANDLE
    LAYOUT = (("request_id", "u32"), ("handle", "string"))
    request_id: int
    handle: bytes


@attrs.frozen
class Data(Message):
    """C{SSH_FXP_DATA}."""

    TYPE = SSH_FXP_DATA
    LAYOUT = (("request_id", "u32"), ("data", "string"))
    request_id: int
    data: bytes = attrs.field(repr=lambda data: f"<{len(data)} bytes>")


@attrs.frozen
class NameEntry:
    """One entry of an C{SSH_FXP_NAME} reply."""

    filename: bytes
    longname: bytes
    attrs: FileAttributes = NO_ATTRIBUTES


@attrs.frozen
class Name(Message):
    """C{SSH_FXP_NAME}: directory entries, or a resolved path."""

    TYPE = SSH_FXP_NAME
    LAYOUT = (("request_id", "u32"), ("entries", "names"))
    request_id: int
    entries: tuple[NameEntry, ...] = ()


@attrs.frozen
class Attrs(Message):
    """C{SSH_FXP_ATTRS}."""

    TYPE = SSH_FXP_ATTRS
    LAYOUT = (("request_id", "u32"), ("attrs", "attrs"))
    request_id: int
    attrs: FileAttributes


@attrs.frozen
class ExtendedReply(Message):
    """C{SSH_FXP_EXTENDED_REPLY}: an extension's answer, undecoded."""

    TYPE = SSH_FXP_EXTENDED_REPLY
    LAYOUT = (("request_id", "u32"), ("data", "rest"))
    request_id: int
    data: bytes = b""


_CLIENT_MESSAGES: tuple[type[Message], ...] = (
    Init, Open, Close, Read, Write, Lstat, Fstat, Setstat, Fsetstat, Opendir, Readdir,
    Remove, Mkdir, Rmdir, Realpath, Stat, Rename, Readlink, Symlink, Extended,
)  # fmt: skip
_SERVER_MESSAGES: tuple[type[Message], ...] = (
    Version, Status, Handle, Data, Name, Attrs, ExtendedReply,
)  # fmt: skip
#: Packet types each side may send.
CLIENT_TYPES = frozenset(m.TYPE for m in _CLIENT_MESSAGES)
SERVER_TYPES = frozenset(m.TYPE for m in _SERVER_MESSAGES)
_MESSAGES = {m.TYPE: m for m in _CLIENT_MESSAGES + _SERVER_MESSAGES}

#: Extensions whose request data is decoded into L{Extended}'s fields:
#: name -> layout of the data (OpenSSH's PROTOCOL file, sftp-server.c).
#: Others keep their data undecoded.
EXTENSIONS: dict[bytes, tuple[str, ...]] = {
    b"posix-rename@openssh.com": ("path", "path"),
    b"hardlink@openssh.com": ("path", "path"),
    b"statvfs@openssh.com": ("path",),
    b"fstatvfs@openssh.com": ("handle",),
    b"fsync@openssh.com": ("handle",),
    b"lsetstat@openssh.com": ("path", "attrs"),
    b"limits@openssh.com": (),
    b"expand-path@openssh.com": ("path",),
    b"copy-data": ("handle", "u64", "u64", "handle", "u64"),
    b"home-directory": ("path",),
    b"users-groups-by-id@openssh.com": ("string", "string"),
}
