"""
The SFTP codec and tracker against OpenSSH's own C{sftp-server} (Debian
package openssh-sftp-server), run as a subprocess speaking on its stdin and
stdout: the test plays the client with packets it encodes, passes every
packet both ways through L{SFTPPacketReader} and L{SFTPSession} as the
gateway's bridge does, and checks the records against the files on disk.
"""

from __future__ import annotations

import hashlib
import json
import os
import select
import struct
import subprocess
import sys

from twisted.trial.unittest import SynchronousTestCase

from gatehouse.protocols.ssh.sftp import (
    FileOperationDone,
    SFTPPacketReader,
    SFTPProtocolError,
    SFTPSession,
)
from gatehouse.protocols.ssh.sftp.codec import encode, extended
from gatehouse.protocols.ssh.sftp.messages import (
    Attrs,
    Close,
    Data,
    ExtendedReply,
    Handle,
    Init,
    Message,
    Mkdir,
    Name,
    Open,
    Opendir,
    Read,
    Readdir,
    Readlink,
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
from gatehouse.protocols.ssh.sftp.wire import FileAttributes
from tests.fixtures.sshd import (
    SFTP_SERVER,
    sftp_program,
    sftp_server_program,
)

TIMEOUT = 10.0
CHUNK = 32768


def _string(value: bytes) -> bytes:
    return struct.pack(">I", len(value)) + value


class _Bridge:
    """
    The client side of a subprocess sftp-server, with every packet going
    through the codec and the tracker as in the gateway.
    """

    def __init__(self, directory: str) -> None:
        self.process = subprocess.Popen(
            [SFTP_SERVER],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            cwd=directory,
        )
        self.client = SFTPPacketReader("client")
        self.server = SFTPPacketReader("server")
        self.session = SFTPSession()
        self.done: list[FileOperationDone] = []
        self._id = 0

    def next_id(self) -> int:
        self._id += 1
        return self._id

    def send(self, *messages: Message) -> None:
        assert self.process.stdin is not None
        for message in messages:
            (packet,) = self.client.feed(encode(message))
            self.session.sent(packet)
            self.process.stdin.write(packet.raw)
        self.process.stdin.flush()

    def replies(self, count: int) -> list[Message]:
        assert self.process.stdout is not None
        fd = self.process.stdout.fileno()
        found: list[Message] = []
        while len(found) < count:
            ready, _, _ = select.select([fd], [], [], TIMEOUT)
            if not ready:
                raise AssertionError(
                    f"sftp-server gave {len(found)} of {count} replies"
                )
            data = os.read(fd, 65536)
            if not data:
                raise AssertionError("sftp-server closed its output")
            for packet in self.server.feed(data):
                self.done.extend(self.session.received(packet))
                found.append(packet.message)
        return found

    def call(self, message: Message) -> Message:
        self.send(message)
        (reply,) = self.replies(1)
        return reply

    def stop(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.close()
        try:
            self.process.wait(TIMEOUT)
        finally:
            if self.process.poll() is None:
                self.process.kill()
                self.process.wait()
            if self.process.stdout is not None:
                self.process.stdout.close()


class SFTPServerTests(SynchronousTestCase):
    """A session against the real sftp-server, in a temporary directory."""

    def setUp(self) -> None:
        sftp_server_program()
        self.directory = os.path.realpath(self.mktemp())
        os.makedirs(self.directory)
        self.bridge = _Bridge(self.directory)
        self.addCleanup(self.bridge.stop)
        self.bridge.send(Init(3))
        (version,) = self.bridge.replies(1)
        self.assertIsInstance(version, Version)

    def path(self, name: str) -> str:
        return os.path.join(self.directory, name)

    def upload(self, name: str, content: bytes) -> FileOperationDone:
        """Open, pipelined writes, close: the write record."""
        bridge = self.bridge
        rid = bridge.next_id()
        reply = bridge.call(Open(rid, self.path(name).encode(), 0x1A))
        assert isinstance(reply, Handle)
        handle = reply.handle
        chunks = [
            Write(bridge.next_id(), handle, offset, content[offset : offset + CHUNK])
            for offset in range(0, len(content), CHUNK)
        ]
        bridge.send(*chunks)
        for status in bridge.replies(len(chunks)):
            assert isinstance(status, Status)
            self.assertEqual((status.code, status.message), (0, "Success"))
        before = len(bridge.done)
        bridge.call(Close(bridge.next_id(), handle))
        (done,) = bridge.done[before:]
        return done

    def download(self, name: str) -> tuple[bytes, FileOperationDone]:
        """Open, pipelined reads past the end, close: the bytes and the read record."""
        bridge = self.bridge
        reply = bridge.call(Open(bridge.next_id(), self.path(name).encode(), 0x1))
        assert isinstance(reply, Handle)
        handle = reply.handle
        received = []
        offset = 0
        while True:
            reads = [
                Read(bridge.next_id(), handle, offset + n * CHUNK, CHUNK)
                for n in range(4)
            ]
            bridge.send(*reads)
            replies = bridge.replies(len(reads))
            received.extend(r.data for r in replies if isinstance(r, Data))
            offset += 4 * CHUNK
            statuses = [r for r in replies if isinstance(r, Status)]
            if statuses:
                # past the end: EOF, nothing else
                self.assertEqual({r.code for r in statuses}, {1})
                break
        before = len(self.bridge.done)
        bridge.call(Close(bridge.next_id(), handle))
        (done,) = bridge.done[before:]
        return b"".join(received), done

    def test_version(self) -> None:
        """The server's extensions are OpenSSH's, which the tracker names."""
        extensions = self.bridge.session.extensions
        for name in (
            b"posix-rename@openssh.com",
            b"hardlink@openssh.com",
            b"fsync@openssh.com",
            b"statvfs@openssh.com",
        ):
            self.assertIn(name, extensions)
        self.assertEqual(self.bridge.session.server_version, 3)

    def test_put_get(self) -> None:
        """
        A file put and got back: each record's size and SHA-256 are those
        of the file on disk.
        """
        content = os.urandom(5 * CHUNK + 1234)
        written = self.upload("up.bin", content)
        with open(self.path("up.bin"), "rb") as f:
            on_disk = f.read()
        self.assertEqual(on_disk, content)

        def whole_file(op: str) -> FileOperationDone:
            return FileOperationDone(
                op,
                self.path("up.bin"),
                bytes=len(on_disk),
                sha256=hashlib.sha256(on_disk).hexdigest(),
                sequential=True,
                offset=0,
            )

        self.assertEqual(written, whole_file("write"))
        got, read = self.download("up.bin")
        self.assertEqual(got, on_disk)
        self.assertEqual(read, whole_file("read"))
        self.assertEqual(self.bridge.session.outstanding, 0)

    def test_file_operations(self) -> None:
        """
        rename, posix-rename, hardlink, symlink (OpenSSH's order: the link
        made is where the tracker says), mkdir, setstat, listing, removal:
        what the records say is what happened on disk.
        """
        bridge = self.bridge
        self.upload("a", b"hello")
        del bridge.done[:]
        a, b, c, link, hard, d = (
            self.path(n) for n in ("a", "b", "c", "link", "hard", "d")
        )

        def ok(message: Message) -> None:
            reply = bridge.call(message)
            self.assertIsInstance(reply, (Status, Attrs, Name, Handle, ExtendedReply))
            if isinstance(reply, Status):
                self.assertEqual(reply.code, 0, reply)

        ok(Rename(bridge.next_id(), a.encode(), b.encode()))
        self.assertTrue(os.path.exists(b))
        ok(
            extended(
                bridge.next_id(),
                b"posix-rename@openssh.com",
                _string(b.encode()) + _string(c.encode()),
            )
        )
        self.assertTrue(os.path.exists(c) and not os.path.exists(b))
        ok(
            extended(
                bridge.next_id(),
                b"hardlink@openssh.com",
                _string(c.encode()) + _string(hard.encode()),
            )
        )
        self.assertEqual(os.stat(hard).st_ino, os.stat(c).st_ino)
        ok(Symlink(bridge.next_id(), c.encode(), link.encode()))
        self.assertEqual(os.readlink(link), c)
        reply = bridge.call(Readlink(bridge.next_id(), link.encode()))
        assert isinstance(reply, Name)
        self.assertEqual(reply.entries[0].filename, c.encode())
        ok(Stat(bridge.next_id(), c.encode()))
        ok(Setstat(bridge.next_id(), c.encode(), FileAttributes.of(permissions=0o600)))
        self.assertEqual(os.stat(c).st_mode & 0o777, 0o600)
        ok(Mkdir(bridge.next_id(), d.encode(), FileAttributes()))
        self.assertTrue(os.path.isdir(d))
        ok(extended(bridge.next_id(), b"limits@openssh.com"))
        ok(extended(bridge.next_id(), b"statvfs@openssh.com", _string(d.encode())))
        reply = bridge.call(Opendir(bridge.next_id(), self.directory.encode()))
        assert isinstance(reply, Handle)
        names: list[bytes] = []
        while True:
            listing = bridge.call(Readdir(bridge.next_id(), reply.handle))
            if isinstance(listing, Status):
                self.assertEqual(listing.code, 1)
                break
            assert isinstance(listing, Name)
            names.extend(e.filename for e in listing.entries)
        self.assertEqual(sorted(names), [b".", b"..", b"c", b"d", b"hard", b"link"])
        ok(Close(bridge.next_id(), reply.handle))
        # A trailing NUL: the server drops it, and so does the codec.
        ok(Remove(bridge.next_id(), link.encode() + b"\0"))
        self.assertFalse(os.path.lexists(link))
        ok(Remove(bridge.next_id(), hard.encode()))
        ok(Rmdir(bridge.next_id(), d.encode()))
        missing = bridge.call(Remove(bridge.next_id(), hard.encode()))
        assert isinstance(missing, Status)
        self.assertEqual(missing.code, 2)
        self.assertEqual(
            [(r.op, r.path, r.target_path, r.status) for r in bridge.done],
            [
                ("rename", a, b, "ok"),
                ("rename", b, c, "ok"),
                ("hardlink", hard, c, "ok"),
                ("symlink", link, c, "ok"),
                ("readlink", link, None, "ok"),
                ("stat", c, None, "ok"),
                ("setstat", c, None, "ok"),
                ("mkdir", d, None, "ok"),
                ("limits", "", None, "ok"),
                ("statvfs", d, None, "ok"),
                ("opendir", self.directory, None, "ok"),
                ("remove", link, None, "ok"),
                ("remove", hard, None, "ok"),
                ("rmdir", d, None, "ok"),
                ("remove", hard, None, "no such file: No such file"),
            ],
        )
        self.assertEqual(self.bridge.session.outstanding, 0)

    def test_copy_data(self) -> None:
        """copy-data copies server-side: the destination's record says so."""
        bridge = self.bridge
        self.upload("src", b"0123456789")
        source = bridge.call(Open(bridge.next_id(), self.path("src").encode(), 0x1))
        target = bridge.call(Open(bridge.next_id(), self.path("dst").encode(), 0x1A))
        assert isinstance(source, Handle) and isinstance(target, Handle)
        del bridge.done[:]
        data = (
            _string(source.handle)
            + struct.pack(">QQ", 0, 0)
            + _string(target.handle)
            + struct.pack(">Q", 0)
        )
        reply = bridge.call(extended(bridge.next_id(), b"copy-data", data))
        self.assertEqual(getattr(reply, "code", None), 0)
        bridge.call(Close(bridge.next_id(), target.handle))
        bridge.call(Close(bridge.next_id(), source.handle))
        with open(self.path("dst"), "rb") as f:
            self.assertEqual(f.read(), b"0123456789")
        copy, written, read = bridge.done
        self.assertEqual(
            copy, FileOperationDone("copy-data", self.path("src"), self.path("dst"))
        )
        self.assertEqual(
            (written.op, written.bytes, written.copied), ("write", 0, True)
        )
        self.assertEqual((read.op, read.bytes, read.copied), ("read", 0, False))


class SFTPServerNulTests(SynchronousTestCase):
    """What the codec refuses, the server refuses too."""

    def test_inner_nul(self) -> None:
        """
        A path with a NUL inside: the codec raises, and sftp-server gives up
        on the session (it cannot parse it either).
        """
        sftp_server_program()
        directory = self.mktemp()
        os.makedirs(directory)
        bridge = _Bridge(directory)
        self.addCleanup(bridge.stop)
        bridge.send(Init(3))
        bridge.replies(1)
        raw = encode(Remove(1, b"x\0y"))
        self.assertRaises(SFTPProtocolError, bridge.client.feed, raw)
        assert bridge.process.stdin is not None
        bridge.process.stdin.write(raw)
        bridge.process.stdin.flush()
        with self.assertRaises(AssertionError) as e:
            bridge.replies(1)
        self.assertEqual(str(e.exception), "sftp-server closed its output")


PROXY = os.path.join(os.path.dirname(os.path.abspath(__file__)), "sftp_proxy.py")


class OpenSSHClientTests(SynchronousTestCase):
    """
    OpenSSH's own sftp client, in batch mode, through the codec and the
    tracker (L{sftp_proxy}, run by C{sftp -D}) to the real sftp-server.
    """

    def setUp(self) -> None:
        sftp_server_program()
        self.sftp_client = sftp_program()
        base = os.path.realpath(self.mktemp())
        self.local = os.path.join(base, "local")
        self.remote = os.path.join(base, "remote")
        os.makedirs(self.local)
        os.makedirs(self.remote)
        self.log = os.path.join(base, "log")
        self.batch = os.path.join(base, "batch")

    def sftp(
        self, commands: str, refuse: tuple[str, ...] = ()
    ) -> tuple[subprocess.CompletedProcess[bytes], list[dict[str, object]]]:
        with open(self.batch, "w") as f:
            f.write(commands)
        proxy = f"{sys.executable} {PROXY} {self.log} {self.remote}"
        if refuse:
            proxy += " --refuse " + " ".join(refuse)
        result = subprocess.run(
            [self.sftp_client, "-b", self.batch, "-D", proxy],
            cwd=self.local,
            capture_output=True,
            timeout=60,
            check=False,
        )
        with open(self.log) as f:
            records = [json.loads(line) for line in f]
        return result, records

    def test_session(self) -> None:
        """
        put, get, rename, ln -s, ls, mkdir, rmdir, chmod, a refused rm:
        the records match the disk, the refused removal left the file.
        """
        content = os.urandom(2**20 + 7)
        with open(os.path.join(self.local, "data.bin"), "wb") as f:
            f.write(content)
        digest = hashlib.sha256(content).hexdigest()
        result, records = self.sftp(
            "put data.bin up.bin\n"
            "get up.bin back.bin\n"
            "rename up.bin moved.bin\n"
            "ln -s moved.bin sl\n"
            "ls -l\n"
            "mkdir dir\n"
            "rmdir dir\n"
            "chmod 600 moved.bin\n"
            "-rm moved.bin\n",
            refuse=("remove",),
        )
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertNotIn("error", [next(iter(r)) for r in records])
        with open(os.path.join(self.local, "back.bin"), "rb") as f:
            self.assertEqual(f.read(), content)
        moved = os.path.join(self.remote, "moved.bin")
        with open(moved, "rb") as f:
            self.assertEqual(f.read(), content)
        self.assertEqual(os.readlink(os.path.join(self.remote, "sl")), "moved.bin")
        self.assertEqual(os.stat(moved).st_mode & 0o777, 0o600)
        up = os.path.join(self.remote, "up.bin")
        transfers = [r for r in records if r["op"] in ("read", "write")]
        self.assertEqual(
            transfers,
            [
                {
                    "op": "write",
                    "path": up,
                    "bytes": len(content),
                    "sha256": digest,
                    "status": "ok",
                    "sequential": True,
                    "offset": 0,
                },
                {
                    "op": "read",
                    "path": up,
                    "bytes": len(content),
                    "sha256": digest,
                    "status": "ok",
                    "sequential": True,
                    "offset": 0,
                },
            ],
        )
        ops = [(r["op"], r["path"], r.get("target_path"), r["status"]) for r in records]
        for expected in [
            ("rename", up, moved, "ok"),
            ("symlink", os.path.join(self.remote, "sl"), "moved.bin", "ok"),
            ("opendir", self.remote, None, "ok"),
            ("mkdir", os.path.join(self.remote, "dir"), None, "ok"),
            ("rmdir", os.path.join(self.remote, "dir"), None, "ok"),
            ("setstat", moved, None, "ok"),
            ("remove", moved, None, "permission denied: no remove"),
        ]:
            self.assertIn(expected, ops)
        self.assertIn(b"Permission denied", result.stderr + result.stdout)

    def test_refused_write(self) -> None:
        """A put refused at open leaves the target's file untouched."""
        with open(os.path.join(self.remote, "keep.txt"), "wb") as f:
            f.write(b"original")
        with open(os.path.join(self.local, "new.txt"), "wb") as f:
            f.write(b"replacement")
        result, records = self.sftp("put new.txt keep.txt\n", refuse=("write",))
        self.assertNotEqual(result.returncode, 0)
        with open(os.path.join(self.remote, "keep.txt"), "rb") as f:
            self.assertEqual(f.read(), b"original")
        self.assertIn(
            {
                "op": "write",
                "path": os.path.join(self.remote, "keep.txt"),
                "status": "permission denied: no write",
            },
            records,
        )
