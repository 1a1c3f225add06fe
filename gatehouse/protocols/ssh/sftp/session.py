"""
The SFTP session tracker, sans-IO: what each client request means for the
policy (L{SFTPOperation}, L{sftp_command}) and what each completed file
operation was (L{FileOperationDone}).

The channel bridge feeds it every client packet it forwards upstream
(L{SFTPSession.sent}), every one it answers itself
(L{SFTPSession.refused}) and every server packet (L{SFTPSession.received}),
in order.  Handles map to the path and operation of the OPEN (or OPENDIR)
that made them: the decision to read or write a file is taken at open,
and READ, WRITE and READDIR on the handle continue it (L{SFTPOperation.covered}).

Bytes of a handle are counted and hashed (SHA-256) in the order the
gateway sees them: writes as the client sends them, reads as the server's
DATA replies arrive.  OpenSSH's sftp pipelines requests, so a hash in
offset order would need the data kept; instead L{FileOperationDone.sequential}
says whether every chunk started where the one before ended (then the hash
is that of the file's bytes from L{FileOperationDone.offset} on).  A short
read answered out of order, or a client writing out of order, makes it
false.  Reads through a handle opened for writing (and writes through one
opened for reading, which the server refuses) are not counted.  No data is
kept, and the requests outstanding and the handles open are capped.
"""

from __future__ import annotations

import hashlib
import posixpath
from collections.abc import Mapping

import attrs

from gatehouse.policy.rules import Command
from gatehouse.protocols.ssh.sftp.codec import Packet
from gatehouse.protocols.ssh.sftp.messages import (
    Attrs,
    Close,
    Data,
    Extended,
    ExtendedReply,
    Fsetstat,
    Fstat,
    Handle,
    Init,
    Lstat,
    Message,
    Mkdir,
    Name,
    Open,
    Opendir,
    Read,
    Readdir,
    Readlink,
    Realpath,
    Remove,
    Rename,
    Rmdir,
    Setstat,
    Stat,
    Status,
    Symlink,
    Version,
    Write,
)
from gatehouse.protocols.ssh.sftp.wire import (
    MAX_HANDLE_LENGTH,
    SSH_FX_EOF,
    SFTPProtocolError,
)

__all__ = [
    "EXTENSION_OPS",
    "MAX_HANDLES",
    "MAX_HELD",
    "MAX_OUTSTANDING",
    "SFTP_OPS",
    "FileOperationDone",
    "SFTPOperation",
    "SFTPSession",
    "sftp_command",
]

#: OpenSSH's sftp keeps 64 requests in flight by default (C{-R}).
MAX_OUTSTANDING = 1024
MAX_HANDLES = 4096
#: Bytes of paths and handles held for outstanding requests and open handles.
MAX_HELD = 4 * 1024 * 1024

_PATH_OPS: dict[type[Message], str] = {
    Lstat: "stat",
    Stat: "stat",
    Setstat: "setstat",
    Opendir: "opendir",
    Remove: "remove",
    Mkdir: "mkdir",
    Rmdir: "rmdir",
    Realpath: "realpath",
    Readlink: "readlink",
}
_HANDLE_OPS: dict[type[Message], str] = {
    Read: "read",
    Write: "write",
    Fstat: "stat",
    Fsetstat: "setstat",
    Readdir: "opendir",
}
_PATH_REQUESTS = (
    Lstat,
    Stat,
    Setstat,
    Opendir,
    Remove,
    Mkdir,
    Rmdir,
    Realpath,
    Readlink,
)
_HANDLE_REQUESTS = (Read, Write, Fstat, Fsetstat, Readdir)
#: The operation each known extension is (others: C{"extended"}).
EXTENSION_OPS: dict[bytes, str] = {
    b"posix-rename@openssh.com": "rename",
    b"hardlink@openssh.com": "hardlink",
    b"statvfs@openssh.com": "statvfs",
    b"fstatvfs@openssh.com": "statvfs",
    b"fsync@openssh.com": "fsync",
    b"lsetstat@openssh.com": "setstat",
    b"limits@openssh.com": "limits",
    b"expand-path@openssh.com": "realpath",
    b"copy-data": "copy-data",
    b"home-directory": "home-directory",
    b"users-groups-by-id@openssh.com": "users-groups-by-id",
}
#: Every operation name (the policy's C{kind}s for SFTP).
SFTP_OPS = frozenset(
    {"read", "write", "symlink", "rename", "extended"}
    | set(_PATH_OPS.values())
    | set(_HANDLE_OPS.values())
    | set(EXTENSION_OPS.values())
)

#: The replies each request may get (an extension's: any).
_REPLIES: dict[type[Message], tuple[type[Message], ...]] = {
    Open: (Handle, Status),
    Opendir: (Handle, Status),
    Read: (Data, Status),
    Readdir: (Name, Status),
    Stat: (Attrs, Status),
    Lstat: (Attrs, Status),
    Fstat: (Attrs, Status),
    Realpath: (Name, Status),
    Readlink: (Name, Status),
    Extended: (Status, Handle, Data, Name, Attrs, ExtendedReply),
}
# Requests whose outcome goes into their handle's record, not a record each.
_FOLDED = (Read, Write, Readdir)


def _text(path: bytes) -> str:
    """A path as the policy sees it (bytes not UTF-8 as lone surrogates)."""
    return path.decode("utf-8", "surrogateescape")


@attrs.frozen
class SFTPOperation:
    """
    What a client request asks, for the policy.

    @ivar op: the operation (L{SFTP_OPS}): C{"read"} or C{"write"} for an
        OPEN (C{"write"} when it may change the file: write, append,
        create, truncate, exclusive), and for READ and WRITE; C{"stat"},
        C{"setstat"}, C{"opendir"} (also READDIR), C{"remove"},
        C{"rename"}, ...; an extension's from L{EXTENSION_OPS}.
    @ivar paths: the paths, the subject first: rename and copy-data
        (from, to); symlink and hardlink (the link made, what it points
        at).  On a handle: the path it was opened with (none for a handle
        the gateway never saw opened).
    @ivar handle: the handle the request works on, if any.
    @ivar covered: the request continues its handle's open, which was
        decided as this same operation on this path; the bridge need not
        ask the policy again (nor hold each chunk of a transfer).
    @ivar extension: an EXTENDED request's name.
    """

    op: str
    paths: tuple[str, ...]
    request_id: int
    handle: bytes | None = None
    covered: bool = False
    extension: str | None = None

    @property
    def path(self) -> str:
        """The subject path (empty: none)."""
        return self.paths[0] if self.paths else ""

    def command(self) -> Command:
        """The policy's view: see L{sftp_command}."""
        return sftp_command(self)


def sftp_command(operation: SFTPOperation) -> Command:
    """
    The L{Command} of an SFTP operation: protocol C{"ssh"}, kind the
    operation, text its first path (an extension without one: its name),
    objects all its paths.
    """
    paths = tuple(policy_path(p) for p in operation.paths)
    return Command(
        protocol="ssh",
        kind=operation.op,
        text=paths[0] if paths else (operation.extension or ""),
        objects=paths,
    )


def policy_path(path: str) -> str:
    """
    C{path} as rules see it: C{.}, C{..} and repeated slashes resolved as
    a path reads (C{/srv/in/../../etc/x} is C{/etc/x}), so a glob on a
    directory is not stepped around.  Symbolic links on the target are
    not seen: the upstream account is what holds against them.
    """
    if not path:
        return path
    normal = posixpath.normpath(path)
    if normal.startswith("//"):
        normal = "/" + normal.lstrip("/")
    return normal


@attrs.frozen
class FileOperationDone:
    """
    A completed file operation, for the recording's C{"sftp"} event.

    @ivar bytes: for a read or write handle: the bytes transferred.
    @ivar sha256: their SHA-256 (hex), in the order they passed.
    @ivar status: C{"ok"}, or what went wrong (the server's status, the
        gateway's refusal, the channel's end).
    @ivar sequential: each chunk started where the one before ended.
    @ivar offset: where the first chunk started.
    @ivar copied: the server also copied data into the file (C{copy-data})
        that the gateway did not see: C{bytes} and C{sha256} miss it.
    """

    op: str
    path: str
    target_path: str | None = None
    bytes: int | None = None
    sha256: str | None = None
    status: str = "ok"
    sequential: bool | None = None
    offset: int | None = None
    copied: bool = False

    def as_event(self) -> dict[str, object]:
        """The C{"sftp"} event's fields (those that apply)."""
        event = attrs.asdict(self, filter=lambda _, value: value is not None)
        if not self.copied:
            del event["copied"]
        return event


class _Handle:
    """An open handle's record."""

    __slots__ = (
        "copied",
        "count",
        "error",
        "hasher",
        "next",
        "offset",
        "op",
        "path",
        "sequential",
    )

    def __init__(self, op: str, path: str) -> None:
        self.op = op
        self.path = path
        self.hasher = hashlib.sha256() if op in ("read", "write") else None
        self.count = 0
        self.offset: int | None = None
        self.next = 0
        self.sequential = True
        self.error: str | None = None
        self.copied = False

    def chunk(self, offset: int, data: bytes) -> None:
        if self.hasher is None:
            return
        if self.offset is None:
            self.offset = offset
        elif offset != self.next:
            self.sequential = False
        self.next = offset + len(data)
        self.hasher.update(data)
        self.count += len(data)

    def fail(self, status: str) -> None:
        if self.error is None:
            self.error = status

    def done(self, status: str) -> FileOperationDone:
        if self.hasher is None:
            return FileOperationDone(self.op, self.path, status=status)
        return FileOperationDone(
            self.op,
            self.path,
            bytes=self.count,
            sha256=self.hasher.hexdigest(),
            status=status,
            sequential=self.sequential,
            offset=self.offset if self.offset is not None else 0,
            copied=self.copied,
        )


@attrs.frozen
class _Pending:
    """An outstanding request: what its reply completes (no data kept)."""

    type: type[Message]
    operation: SFTPOperation | None
    handle: bytes | None = None
    offset: int = 0

    @property
    def size(self) -> int:
        """
        The bytes of paths and handles it holds (a request on a handle
        shares its path with the handle's record).
        """
        operation = self.operation
        if operation is None or operation.handle is not None:
            return len(self.handle or b"")
        return sum(map(len, operation.paths)) + len(self.handle or b"")


class SFTPSession:
    """
    Tracks one SFTP channel: handles, outstanding requests, and the
    operations they complete.  Raises L{SFTPProtocolError} for a reply to
    no outstanding request, a reply of the wrong type, a request id reused
    while outstanding, a handle the server hands out twice or too long,
    and beyond C{max_outstanding} requests, C{max_handles} handles or
    C{max_held} bytes of paths and handles held for them (a path is up to
    a packet long; the server's own limit is C{PATH_MAX}, 4096).
    """

    def __init__(
        self,
        max_outstanding: int = MAX_OUTSTANDING,
        max_handles: int = MAX_HANDLES,
        max_held: int = MAX_HELD,
    ) -> None:
        self._max_outstanding = max_outstanding
        self._max_handles = max_handles
        self._max_held = max_held
        self._held = 0
        self._pending: dict[int, _Pending] = {}
        self._handles: dict[bytes, _Handle] = {}
        self.client_version: int | None = None
        self.server_version: int | None = None
        #: The server's extensions (name -> data) from its VERSION.
        self.extensions: Mapping[bytes, bytes] = {}

    @property
    def outstanding(self) -> int:
        """Requests sent upstream and not yet answered."""
        return len(self._pending)

    def handle(self, handle: bytes) -> tuple[str, str] | None:
        """An open handle's (path, operation), or C{None}."""
        found = self._handles.get(handle)
        return (found.path, found.op) if found is not None else None

    def operation(self, packet: Packet) -> SFTPOperation | None:
        """
        What a client packet asks, for the policy; C{None} for INIT and
        CLOSE, which need no decision.
        """
        m = packet.message
        rid = packet.request_id
        if rid is None or isinstance(m, (Init, Close)):
            return None
        if isinstance(m, Open):
            return SFTPOperation(
                "write" if m.modifies else "read", (_text(m.path),), rid
            )
        if isinstance(m, _PATH_REQUESTS):
            return SFTPOperation(_PATH_OPS[type(m)], (_text(m.path),), rid)
        if isinstance(m, _HANDLE_REQUESTS):
            return self._on_handle(_HANDLE_OPS[type(m)], rid, m.handle)
        if isinstance(m, Rename):
            return SFTPOperation("rename", (_text(m.oldpath), _text(m.newpath)), rid)
        if isinstance(m, Symlink):
            return SFTPOperation("symlink", (_text(m.link), _text(m.target)), rid)
        if isinstance(m, Extended):
            return self._extended(m, rid)
        raise SFTPProtocolError(f"{type(m).__name__} is not a client request")

    def _on_handle(
        self, op: str, rid: int, handle: bytes, extension: str | None = None
    ) -> SFTPOperation:
        found = self._handles.get(handle)
        if found is None:
            return SFTPOperation(op, (), rid, handle, extension=extension)
        covered = op == found.op and extension is None
        return SFTPOperation(op, (found.path,), rid, handle, covered, extension)

    def _extended(self, m: Extended, rid: int) -> SFTPOperation:
        name = _text(m.name)
        op = EXTENSION_OPS.get(m.name, "extended")
        if m.name == b"copy-data":
            source, target = (self._handles.get(h) for h in m.handles)
            paths = (source.path if source else "", target.path if target else "")
            return SFTPOperation(op, paths, rid, m.handles[1], extension=name)
        if m.name == b"hardlink@openssh.com":
            old, new = m.paths
            return SFTPOperation(op, (_text(new), _text(old)), rid, extension=name)
        if m.handles:
            return self._on_handle(op, rid, m.handles[0], name)
        return SFTPOperation(op, tuple(_text(p) for p in m.paths), rid, extension=name)

    def sent(self, packet: Packet) -> None:
        """A client packet went upstream."""
        m = packet.message
        if isinstance(m, Init):
            self.client_version = m.version
            return
        rid = packet.request_id
        if rid is None:
            raise SFTPProtocolError(f"{type(m).__name__} is not a client request")
        if rid in self._pending:
            raise SFTPProtocolError(f"request id {rid} reused while outstanding")
        if len(self._pending) >= self._max_outstanding:
            raise SFTPProtocolError(
                f"more than {self._max_outstanding} requests outstanding"
            )
        handle = getattr(m, "handle", None)
        offset = getattr(m, "offset", 0)
        pending = _Pending(type(m), self.operation(packet), handle, offset)
        self._hold(pending.size)
        self._pending[rid] = pending
        if isinstance(m, Write):
            found = self._handles.get(m.handle)
            if found is not None and found.op == "write":
                found.chunk(m.offset, m.data)

    def refused(self, packet: Packet, message: str) -> FileOperationDone | None:
        """
        The bridge answered a client request itself (permission denied,
        C{message}): the record of the refused operation, or C{None} when
        it goes into its handle's record (a refused chunk of a transfer).
        """
        operation = self.operation(packet)
        if operation is None:
            return None
        status = f"permission denied: {message}"
        found = (
            self._handles.get(operation.handle)
            if operation.handle is not None
            else None
        )
        if found is not None and isinstance(packet.message, _FOLDED):
            found.fail(status)
            return None
        return _done(operation, status)

    def received(self, packet: Packet) -> list[FileOperationDone]:
        """A server packet arrived: the operations it completes."""
        m = packet.message
        if isinstance(m, Version):
            self.server_version = m.version
            self.extensions = dict(m.extensions)
            return []
        rid = packet.request_id
        pending = self._pending.pop(rid, None) if rid is not None else None
        if pending is None:
            raise SFTPProtocolError(
                f"server answered request {rid}, which is not outstanding"
            )
        self._held -= pending.size
        expected = _REPLIES.get(pending.type, (Status,))
        if not isinstance(m, expected):
            raise SFTPProtocolError(
                f"server answered {pending.type.__name__} {rid} with {type(m).__name__}"
            )
        status = m.describe() if isinstance(m, Status) else "ok"
        operation = pending.operation
        if pending.type is Close:
            closed = self._handles.pop(pending.handle or b"", None)
            if closed is None:
                return []
            self._held -= len(closed.path) + len(pending.handle or b"")
            if status == "ok" and closed.error is not None:
                status = closed.error
            return [closed.done(status)]
        if pending.type in _FOLDED:
            found = self._handles.get(pending.handle or b"")
            if found is None:
                return []
            if isinstance(m, Data):
                if pending.type is Read and found.op == "read":
                    found.chunk(pending.offset, m.data)
            elif isinstance(m, Status) and m.code not in (0, SSH_FX_EOF):
                found.fail(status)
            return []
        if operation is None:
            return []
        if isinstance(m, Handle):
            if pending.type in (Open, Opendir):
                self._open(m.handle, operation)
                return []
        if (
            isinstance(m, Status)
            and m.ok
            and operation.extension == "copy-data"
            and operation.handle in self._handles
        ):
            self._handles[operation.handle].copied = True
        return [_done(operation, status)]

    def _open(self, handle: bytes, operation: SFTPOperation) -> None:
        if len(handle) > MAX_HANDLE_LENGTH:
            raise SFTPProtocolError(f"server handle of {len(handle)} bytes (over 256)")
        if handle in self._handles:
            raise SFTPProtocolError(f"server handed out handle {handle!r} while open")
        if len(self._handles) >= self._max_handles:
            raise SFTPProtocolError(f"more than {self._max_handles} handles open")
        self._hold(len(operation.path) + len(handle))
        self._handles[handle] = _Handle(operation.op, operation.path)

    def _hold(self, size: int) -> None:
        if self._held + size > self._max_held:
            raise SFTPProtocolError(
                f"more than {self._max_held} bytes of paths outstanding or open"
            )
        self._held += size

    def end(self, reason: str) -> list[FileOperationDone]:
        """
        The channel ended (C{reason}): records for the handles still open
        and the requests never answered.
        """
        done = [h.done(reason) for h in self._handles.values()]
        done.extend(
            _done(p.operation, reason)
            for p in self._pending.values()
            if p.operation is not None and p.type not in _FOLDED
        )
        self._handles.clear()
        self._pending.clear()
        self._held = 0
        return done


def _done(operation: SFTPOperation, status: str) -> FileOperationDone:
    target = operation.paths[1] if len(operation.paths) > 1 else None
    return FileOperationDone(operation.op, operation.path, target, status=status)
