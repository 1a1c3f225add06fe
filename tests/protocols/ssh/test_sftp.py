"""
Tests for L{gatehouse.protocols.ssh.sftp}: the SFTP version 3 codec
(packets built by hand per draft-ietf-secsh-filexfer-02 and OpenSSH's
PROTOCOL file) and the session tracker.
"""

from __future__ import annotations

import hashlib
import itertools
import struct

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from gatehouse.policy.rules import Command
from gatehouse.protocols.ssh.sftp import (
    MAX_PACKET_LENGTH,
    SFTP_OPS,
    SSH_FX_PERMISSION_DENIED,
    FileOperationDone,
    Packet,
    SFTPOperation,
    SFTPPacketReader,
    SFTPProtocolError,
    SFTPSession,
    encode_status,
    sftp_command,
)
from gatehouse.protocols.ssh.sftp.codec import encode, extended
from gatehouse.protocols.ssh.sftp.messages import (
    CLIENT_TYPES,
    SERVER_TYPES,
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
    NameEntry,
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
from gatehouse.protocols.ssh.sftp.wire import FileAttributes


def u32(n: int) -> bytes:
    return struct.pack(">I", n)


def u64(n: int) -> bytes:
    return struct.pack(">Q", n)


def string(b: bytes) -> bytes:
    return u32(len(b)) + b


def frame(type_: int, body: bytes) -> bytes:
    """A packet by hand: uint32 length, byte type, body."""
    return u32(len(body) + 1) + bytes([type_]) + body


INIT = frame(1, u32(3))
VERSION = frame(
    2,
    u32(3) + string(b"posix-rename@openssh.com") + string(b"1"),
)


def client_reader() -> SFTPPacketReader:
    reader = SFTPPacketReader("client")
    reader.feed(INIT)
    return reader


def server_reader() -> SFTPPacketReader:
    reader = SFTPPacketReader("server")
    reader.feed(VERSION)
    return reader


def one(reader: SFTPPacketReader, data: bytes) -> Message:
    (packet,) = reader.feed(data)
    return packet.message


class KnownAnswerTests(SynchronousTestCase):
    """Packets laid out by hand decode to the fields the draft names."""

    def test_init_and_version(self) -> None:
        """INIT and VERSION carry the version and extension pairs."""
        reader = SFTPPacketReader("client")
        (packet,) = reader.feed(
            frame(1, u32(3) + string(b"ext@example.com") + string(b"data"))
        )
        self.assertEqual(packet.type, 1)
        self.assertIsNone(packet.request_id)
        self.assertEqual(packet.message, Init(3, ((b"ext@example.com", b"data"),)))
        reader = SFTPPacketReader("server")
        (packet,) = reader.feed(VERSION)
        self.assertEqual(
            packet.message, Version(3, ((b"posix-rename@openssh.com", b"1"),))
        )
        self.assertEqual(packet.raw, VERSION)

    def test_open(self) -> None:
        """
        OPEN: id, filename, pflags (read/write/append/creat/trunc/excl),
        ATTRS (here permissions only).
        """
        raw = frame(3, u32(7) + string(b"/tmp/f") + u32(0x1A) + u32(0x4) + u32(0o644))
        (packet,) = client_reader().feed(raw)
        self.assertEqual(packet.request_id, 7)
        self.assertEqual(packet.raw, raw)
        message = packet.message
        self.assertEqual(
            message, Open(7, b"/tmp/f", 0x1A, FileAttributes.of(permissions=0o644))
        )
        assert isinstance(message, Open)
        self.assertEqual(
            (
                message.read,
                message.write,
                message.append,
                message.creat,
                message.trunc,
                message.excl,
            ),
            (False, True, False, True, True, False),
        )
        self.assertTrue(message.modifies)
        self.assertFalse(Open(1, b"f", 0x1).modifies)
        for flag in (0x2, 0x4, 0x8, 0x10, 0x20):
            self.assertTrue(Open(1, b"f", 0x1 | flag).modifies, flag)

    def test_all_attributes(self) -> None:
        """
        ATTRS: flags, size, uid and gid, permissions, atime and mtime,
        extended count and pairs, in that order.
        """
        body = (
            u32(9)
            + string(b"/x")
            + u32(0x8000000F)
            + u64(2**40)
            + u32(1000)
            + u32(100)
            + u32(0o100600)
            + u32(1)
            + u32(2)
            + u32(1)
            + string(b"t")
            + string(b"d")
        )
        self.assertEqual(
            one(client_reader(), frame(9, body)),
            Setstat(
                9,
                b"/x",
                FileAttributes(
                    0x8000000F, 2**40, 1000, 100, 0o100600, 1, 2, ((b"t", b"d"),)
                ),
            ),
        )

    def test_requests(self) -> None:
        """The other requests, field by field."""
        reader = client_reader()
        h = string(b"H1")
        cases = [
            (frame(4, u32(1) + h), Close(1, b"H1")),
            (frame(5, u32(2) + h + u64(65536) + u32(32768)),
             Read(2, b"H1", 65536, 32768)),
            (frame(6, u32(3) + h + u64(5) + string(b"abc")),
             Write(3, b"H1", 5, b"abc")),
            (frame(7, u32(4) + string(b"p")), Lstat(4, b"p")),
            (frame(8, u32(5) + h), Fstat(5, b"H1")),
            (frame(10, u32(6) + h + u32(0)), Fsetstat(6, b"H1", FileAttributes())),
            (frame(11, u32(7) + string(b"/d")), Opendir(7, b"/d")),
            (frame(12, u32(8) + h), Readdir(8, b"H1")),
            (frame(13, u32(9) + string(b"/r")), Remove(9, b"/r")),
            (frame(14, u32(10) + string(b"/m") + u32(0)), Mkdir(10, b"/m")),
            (frame(15, u32(11) + string(b"/m")), Rmdir(11, b"/m")),
            (frame(16, u32(12) + string(b".")), Realpath(12, b".")),
            (frame(17, u32(13) + string(b"/s")), Stat(13, b"/s")),
            (frame(18, u32(14) + string(b"/a") + string(b"/b")),
             Rename(14, b"/a", b"/b")),
            (frame(19, u32(15) + string(b"/l")), Readlink(15, b"/l")),
        ]  # fmt: skip
        for raw, expected in cases:
            (packet,) = reader.feed(raw)
            self.assertEqual(packet.message, expected)
            self.assertEqual(packet.request_id, Packet.of(expected).request_id)
            self.assertEqual(packet.raw, raw)
            self.assertEqual(encode(expected), raw)

    def test_symlink_openssh_order(self) -> None:
        """
        OpenSSH's SYMLINK sends the target first, then the link path (the
        draft's order reversed; OpenSSH PROTOCOL section 4.1).
        """
        raw = frame(20, u32(3) + string(b"/etc/target") + string(b"/tmp/link"))
        message = one(client_reader(), raw)
        self.assertEqual(message, Symlink(3, b"/etc/target", b"/tmp/link"))
        assert isinstance(message, Symlink)
        self.assertEqual(message.link, b"/tmp/link")
        self.assertEqual(message.target, b"/etc/target")

    def test_extended(self) -> None:
        """
        EXTENDED keeps the name and data; OpenSSH's path and handle
        extensions are decoded, others kept as data.
        """
        reader = client_reader()
        rename = frame(
            200,
            u32(1)
            + string(b"posix-rename@openssh.com")
            + string(b"/old")
            + string(b"/new"),
        )
        message = one(reader, rename)
        assert isinstance(message, Extended)
        self.assertEqual(message.name, b"posix-rename@openssh.com")
        self.assertEqual(message.data, string(b"/old") + string(b"/new"))
        self.assertEqual(message.paths, (b"/old", b"/new"))
        link = one(
            reader,
            frame(
                200,
                u32(2)
                + string(b"hardlink@openssh.com")
                + string(b"/a")
                + string(b"/b"),
            ),
        )
        assert isinstance(link, Extended)
        self.assertEqual(link.paths, (b"/a", b"/b"))
        copy = one(
            reader,
            frame(
                200,
                u32(3)
                + string(b"copy-data")
                + string(b"R")
                + u64(0)
                + u64(10)
                + string(b"W")
                + u64(4),
            ),
        )
        assert isinstance(copy, Extended)
        self.assertEqual((copy.handles, copy.numbers), ((b"R", b"W"), (0, 10, 4)))
        lsetstat = one(
            reader,
            frame(
                200, u32(4) + string(b"lsetstat@openssh.com") + string(b"/p") + u32(0)
            ),
        )
        assert isinstance(lsetstat, Extended)
        self.assertEqual((lsetstat.paths, lsetstat.attrs), ((b"/p",), FileAttributes()))
        self.assertEqual(
            one(reader, frame(200, u32(5) + string(b"limits@openssh.com"))),
            Extended(5, b"limits@openssh.com"),
        )
        other = one(reader, frame(200, u32(6) + string(b"x@example.com") + b"\x00\x01"))
        self.assertEqual(other, Extended(6, b"x@example.com", b"\x00\x01"))

    def test_responses(self) -> None:
        """STATUS, HANDLE, DATA, NAME, ATTRS and EXTENDED_REPLY."""
        reader = server_reader()
        cases = [
            (
                frame(101, u32(1) + u32(2) + string(b"No such file") + string(b"")),
                Status(1, 2, "No such file"),
            ),
            (frame(102, u32(2) + string(b"\x00\x00\x00\x01")), Handle(2, b"\0\0\0\1")),
            (frame(103, u32(3) + string(b"hello")), Data(3, b"hello")),
            (
                frame(
                    104,
                    u32(4)
                    + u32(2)
                    + string(b"a")
                    + string(b"-rw-r--r-- a")
                    + u32(1)
                    + u64(5)
                    + string(b"b")
                    + string(b"b")
                    + u32(0),
                ),
                Name(
                    4,
                    (
                        NameEntry(b"a", b"-rw-r--r-- a", FileAttributes.of(size=5)),
                        NameEntry(b"b", b"b"),
                    ),
                ),
            ),
            (frame(105, u32(5) + u32(1) + u64(7)), Attrs(5, FileAttributes.of(size=7))),
            (frame(201, u32(6) + u64(1) + u64(2)), ExtendedReply(6, u64(1) + u64(2))),
        ]
        for raw, expected in cases:
            (packet,) = reader.feed(raw)
            self.assertEqual(packet.message, expected)
            self.assertEqual(packet.raw, raw)
            self.assertEqual(encode(expected), raw)

    def test_status_without_message(self) -> None:
        """A STATUS without message and language tag (older servers) decodes."""
        self.assertEqual(
            one(server_reader(), frame(101, u32(1) + u32(0))), Status(1, 0)
        )

    def test_encode_status(self) -> None:
        """
        The gateway's refusal: STATUS with SSH_FX_PERMISSION_DENIED (3),
        the message, and an empty language tag.
        """
        raw = encode_status(42, SSH_FX_PERMISSION_DENIED, "denied by policy")
        self.assertEqual(
            raw,
            frame(101, u32(42) + u32(3) + string(b"denied by policy") + string(b"")),
        )
        message = one(server_reader(), raw)
        assert isinstance(message, Status)
        self.assertEqual(message.describe(), "permission denied: denied by policy")


class CStringTests(SynchronousTestCase):
    """Paths are read as OpenSSH's sftp-server reads them: C strings."""

    def test_trailing_nul_dropped(self) -> None:
        """
        One trailing NUL, which the server drops, is dropped: the path the
        policy sees is the one the server opens.
        """
        message = one(client_reader(), frame(13, u32(1) + string(b"/etc/passwd\0")))
        self.assertEqual(message, Remove(1, b"/etc/passwd"))
        self.assertEqual(
            one(
                client_reader(),
                frame(
                    200,
                    u32(1)
                    + string(b"hardlink@openssh.com\0")
                    + string(b"/a")
                    + string(b"/b\0"),
                ),
            ).paths,  # type: ignore[attr-defined]
            (b"/a", b"/b"),
        )

    def test_inner_nul_refused(self) -> None:
        """A NUL inside a path is refused (so does the server)."""
        for path in (b"/etc/passwd\0.txt", b"/a\0\0", b"\0/a"):
            reader = client_reader()
            with self.assertRaises(SFTPProtocolError) as e:
                reader.feed(frame(13, u32(1) + string(path)))
            self.assertIn("NUL", str(e.exception))


class ReaderErrorTests(SynchronousTestCase):
    """What the reader refuses, with a clear SFTPProtocolError."""

    def assertRefused(self, reader: SFTPPacketReader, data: bytes, why: str) -> None:
        with self.assertRaises(SFTPProtocolError) as e:
            reader.feed(data)
        self.assertIn(why, str(e.exception))
        # The reader stays failed.
        self.assertRaises(SFTPProtocolError, reader.feed, INIT)
        self.assertEqual(reader.buffered, 0)

    def test_length_over_limit(self) -> None:
        """A length over the limit is refused as soon as its word arrives."""
        self.assertEqual(MAX_PACKET_LENGTH, 256 * 1024 + 1024)
        reader = client_reader()
        reader.feed(u32(MAX_PACKET_LENGTH))
        self.assertEqual(reader.buffered, 4)
        self.assertRefused(
            client_reader(), u32(MAX_PACKET_LENGTH + 1), "over the limit"
        )
        self.assertRefused(
            SFTPPacketReader("server", max_length=100),
            u32(101),
            "over the limit of 100",
        )
        self.assertRefused(client_reader(), u32(2**32 - 1), "over the limit")

    def test_empty_packet(self) -> None:
        """A zero length has no type."""
        self.assertRefused(client_reader(), u32(0), "empty")

    def test_wrong_direction(self) -> None:
        """A client does not send replies, a server does not send requests."""
        self.assertRefused(
            client_reader(), frame(101, u32(1) + u32(0)), "not one a client sends"
        )
        self.assertRefused(
            server_reader(), frame(13, u32(1) + string(b"/")), "not one a server sends"
        )
        self.assertRefused(client_reader(), frame(21, u32(1)), "packet type 21")

    def test_init_first_and_once(self) -> None:
        """INIT (VERSION) comes first and once."""
        self.assertRefused(
            SFTPPacketReader("client"), frame(13, u32(1) + string(b"/")), "before INIT"
        )
        self.assertRefused(client_reader(), INIT, "second INIT")
        self.assertRefused(
            SFTPPacketReader("server"), frame(101, u32(1) + u32(0)), "before VERSION"
        )
        self.assertRefused(server_reader(), VERSION, "second VERSION")

    def test_versions(self) -> None:
        """Only version 3 is spoken: a server's other version, a client's older one."""
        self.assertRefused(SFTPPacketReader("server"), frame(2, u32(4)), "version 4")
        self.assertRefused(SFTPPacketReader("client"), frame(1, u32(2)), "version 2")
        # A client offering more is answered 3 by the server.
        self.assertEqual(one(SFTPPacketReader("client"), frame(1, u32(6))), Init(6))

    def test_malformed(self) -> None:
        """Short fields, lengths beyond the packet, trailing bytes."""
        cases = [
            (frame(13, u32(1)), "truncated uint32"),
            (frame(13, u32(1) + u32(10) + b"abc"), "string of 10 bytes"),
            (frame(13, u32(1) + string(b"/") + b"x"), "trailing"),
            (frame(5, u32(1) + string(b"h") + u64(0)), "truncated uint32"),
            (frame(3, u32(1) + string(b"/") + u32(1) + u32(1)), "truncated uint64"),
            (
                frame(9, u32(1) + string(b"/") + u32(0x80000000) + u32(1000)),
                "cannot fit",
            ),
            (
                frame(
                    200, u32(1) + string(b"posix-rename@openssh.com") + string(b"/a")
                ),
                "posix-rename@openssh.com request",
            ),
        ]
        for raw, why in cases:
            self.assertRefused(client_reader(), raw, why)
        self.assertRefused(
            server_reader(), frame(104, u32(1) + u32(1000) + string(b"a")), "cannot fit"
        )
        self.assertRefused(server_reader(), frame(102, b"\0\0"), "truncated uint32")


def stream() -> list[tuple[bytes, Message]]:
    """A client stream: INIT then one request of each kind."""
    messages: list[Message] = [
        Init(3, ((b"x", b"y"),)),
        Open(1, b"/f", 0x1A, FileAttributes.of(permissions=0o600)),
        Write(2, b"H", 0, b"data" * 100),
        Read(3, b"H", 0, 32768),
        Close(4, b"H"),
        Symlink(5, b"t", b"l"),
        extended(6, b"posix-rename@openssh.com", string(b"/a") + string(b"/b")),
    ]
    return [(encode(m), m) for m in messages]


class SplitTests(SynchronousTestCase):
    """A stream split anywhere parses to the same packets."""

    def test_every_boundary(self) -> None:
        """Two parts, cut at every byte."""
        pieces = stream()
        data = b"".join(raw for raw, _ in pieces)
        expected = [m for _, m in pieces]
        for cut in range(len(data) + 1):
            reader = SFTPPacketReader("client")
            packets = reader.feed(data[:cut]) + reader.feed(data[cut:])
            self.assertEqual([p.message for p in packets], expected, cut)
            self.assertEqual([p.raw for p in packets], [raw for raw, _ in pieces])
            self.assertEqual(reader.buffered, 0)

    def test_byte_by_byte(self) -> None:
        """One byte at a time; what is buffered never exceeds the packet."""
        pieces = stream()
        reader = SFTPPacketReader("client")
        packets = []
        for byte in b"".join(raw for raw, _ in pieces):
            packets.extend(reader.feed(bytes([byte])))
            self.assertLessEqual(reader.buffered, 4 + 404 + 30)
        self.assertEqual([p.message for p in packets], [m for _, m in pieces])


# -- hypothesis ----------------------------------------------------------------

_ids = st.integers(0, 2**32 - 1)
_paths = st.binary(max_size=40).filter(lambda p: b"\0" not in p)
_handles = st.binary(max_size=16)
_u32s = st.integers(0, 2**32 - 1)
_pairs = st.lists(
    st.tuples(st.binary(max_size=10), st.binary(max_size=10)), max_size=3
).map(tuple)
_attrs = st.builds(
    FileAttributes.of,
    size=st.none() | st.integers(0, 2**64 - 1),
    uid_gid=st.none() | st.tuples(_u32s, _u32s),
    permissions=st.none() | _u32s,
    times=st.none() | st.tuples(_u32s, _u32s),
    extended=_pairs,
)


def _strategies(
    ids: st.SearchStrategy[int], handles: st.SearchStrategy[bytes]
) -> tuple[st.SearchStrategy[Message], st.SearchStrategy[Message]]:
    """Strategies for requests and responses with these ids and handles."""
    known_extensions = st.one_of(
        st.tuples(_paths, _paths).map(
            lambda p: (b"posix-rename@openssh.com", string(p[0]) + string(p[1]))
        ),
        st.tuples(_paths, _paths).map(
            lambda p: (b"hardlink@openssh.com", string(p[0]) + string(p[1]))
        ),
        _paths.map(lambda p: (b"statvfs@openssh.com", string(p))),
        handles.map(lambda h: (b"fsync@openssh.com", string(h))),
        st.just((b"limits@openssh.com", b"")),
        st.tuples(handles, handles).map(
            lambda h: (
                b"copy-data",
                string(h[0]) + u64(0) + u64(9) + string(h[1]) + u64(3),
            )
        ),
        st.tuples(
            st.sampled_from([b"x@example.com", b"check-file"]), st.binary(max_size=20)
        ),
    )
    requests = st.one_of(
        st.builds(Open, ids, _paths, _u32s, _attrs),
        st.builds(Close, ids, handles),
        st.builds(Read, ids, handles, st.integers(0, 2**64 - 1), _u32s),
        st.builds(
            Write, ids, handles, st.integers(0, 2**64 - 1), st.binary(max_size=200)
        ),
        st.builds(Lstat, ids, _paths),
        st.builds(Fstat, ids, handles),
        st.builds(Stat, ids, _paths),
        st.builds(Setstat, ids, _paths, _attrs),
        st.builds(Fsetstat, ids, handles, _attrs),
        st.builds(Opendir, ids, _paths),
        st.builds(Readdir, ids, handles),
        st.builds(Remove, ids, _paths),
        st.builds(Mkdir, ids, _paths, _attrs),
        st.builds(Rmdir, ids, _paths),
        st.builds(Realpath, ids, _paths),
        st.builds(Rename, ids, _paths, _paths),
        st.builds(Readlink, ids, _paths),
        st.builds(Symlink, ids, _paths, _paths),
        st.builds(lambda i, e: extended(i, *e), ids, known_extensions),
    )
    responses = st.one_of(
        st.builds(
            Status, ids, st.integers(0, 8), st.text(max_size=20), st.text(max_size=5)
        ),
        st.builds(Handle, ids, handles),
        st.builds(Data, ids, st.binary(max_size=200)),
        st.builds(
            Name,
            ids,
            st.lists(
                st.builds(
                    NameEntry, st.binary(max_size=10), st.binary(max_size=10), _attrs
                ),
                max_size=3,
            ).map(tuple),
        ),
        st.builds(Attrs, ids, _attrs),
        st.builds(ExtendedReply, ids, st.binary(max_size=30)),
    )

    return requests, responses


REQUESTS, RESPONSES = _strategies(_ids, _handles)
#: Few ids and handles: requests and replies that meet.
_MEETING = _strategies(st.integers(0, 3), st.sampled_from([b"A", b"B"]))


def _split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    bounds = [0, *points, len(data)]
    return [data[a:b] for a, b in itertools.pairwise(bounds)]


class PropertyTests(SynchronousTestCase):
    """Hypothesis: any valid packets, any split; any bytes."""

    @settings(max_examples=200)
    @given(
        requests=st.lists(REQUESTS, max_size=12),
        responses=st.lists(RESPONSES, max_size=12),
        cuts=st.lists(st.integers(0, 10**6), max_size=10),
    )
    def test_split_streams(
        self, requests: list[Message], responses: list[Message], cuts: list[int]
    ) -> None:
        """Any valid packets, split anywhere, parse back to themselves."""
        for sender, first, messages in (
            ("client", Init(3), requests),
            ("server", Version(3), responses),
        ):
            all_messages = [first, *messages]
            data = b"".join(encode(m) for m in all_messages)
            reader = SFTPPacketReader(sender)
            packets = []
            for chunk in _split(data, cuts):
                packets.extend(reader.feed(chunk))
            self.assertEqual([p.message for p in packets], all_messages)
            self.assertEqual(b"".join(p.raw for p in packets), data)
            self.assertEqual(
                [p.request_id for p in packets],
                [getattr(m, "request_id", None) for m in all_messages],
            )
            self.assertEqual(reader.buffered, 0)

    @settings(max_examples=300)
    @given(
        sender=st.sampled_from(["client", "server"]),
        chunks=st.lists(st.binary(max_size=80), max_size=12),
        max_length=st.sampled_from([16, 64, MAX_PACKET_LENGTH]),
    )
    def test_random_bytes(
        self, sender: str, chunks: list[bytes], max_length: int
    ) -> None:
        """
        Random bytes (after a valid first packet, or not) raise nothing but
        SFTPProtocolError, and never leave more than a packet's limit
        buffered.
        """
        for prefix in (b"", INIT if sender == "client" else VERSION):
            reader = SFTPPacketReader(sender, max_length=max_length)
            try:
                reader.feed(prefix)
                for chunk in chunks:
                    reader.feed(chunk)
                    self.assertLessEqual(reader.buffered, 4 + max_length)
            except SFTPProtocolError:
                self.assertEqual(reader.buffered, 0)

    @settings(max_examples=300)
    @given(
        sender=st.sampled_from(["client", "server"]),
        frames=st.lists(
            st.tuples(st.integers(0, 255), st.binary(max_size=60)), max_size=8
        ),
    )
    def test_random_bodies(self, sender: str, frames: list[tuple[int, bytes]]) -> None:
        """
        Well-framed packets of any type with random bodies decode or
        raise SFTPProtocolError; nothing else.
        """
        types = sorted(CLIENT_TYPES if sender == "client" else SERVER_TYPES)
        reader = SFTPPacketReader(sender)
        reader.feed(INIT if sender == "client" else VERSION)
        data = b"".join(
            frame(types[t % len(types)] if t < 200 else t, body) for t, body in frames
        )
        try:
            for packet in reader.feed(data):
                self.assertEqual(encode(packet.message)[4], packet.type)
        except SFTPProtocolError:
            pass

    @settings(max_examples=300)
    @given(
        steps=st.lists(st.tuples(st.booleans(), _MEETING[0], _MEETING[1]), max_size=30)
    )
    def test_tracker_any_order(
        self, steps: list[tuple[bool, Message, Message]]
    ) -> None:
        """
        Requests and replies in any order: the tracker raises nothing but
        SFTPProtocolError, and its count of the bytes it holds stays
        true.
        """
        session = open_session(max_outstanding=3, max_handles=2)
        for client_side, request, reply in steps:
            try:
                if client_side:
                    session.operation(Packet.of(request))
                    session.sent(Packet.of(request))
                else:
                    for done in session.received(Packet.of(reply)):
                        self.assertIn(done.op, SFTP_OPS)
            except SFTPProtocolError:
                pass
            # what it counts as held is what it holds
            self.assertEqual(
                session._held,
                sum(p.size for p in session._pending.values())
                + sum(len(h) + len(r.path) for h, r in session._handles.items()),
            )
        session.end("end")
        self.assertEqual((session.outstanding, session._held), (0, 0))

    @settings(max_examples=200)
    @given(
        chunks=st.lists(st.binary(max_size=300), max_size=20),
        order=st.randoms(use_true_random=False),
        shuffle=st.booleans(),
    )
    def test_tracker_hash(
        self, chunks: list[bytes], order: object, shuffle: bool
    ) -> None:
        """
        The tracker's sha256 of a write handle is hashlib's over the
        writes in the order sent; sequential says whether each started
        where the one before ended.
        """
        offsets = []
        position = 0
        for chunk in chunks:
            offsets.append(position)
            position += len(chunk)
        writes = list(zip(offsets, chunks, strict=True))
        if shuffle:
            order.shuffle(writes)  # type: ignore[attr-defined]
        session = open_session()
        self.assertEqual(exchange(session, Open(1, b"/up", 0x1A), Handle(1, b"H")), [])
        for n, (offset, chunk) in enumerate(writes):
            session.sent(Packet.of(Write(100 + n, b"H", offset, chunk)))
        for n in range(len(writes)):
            self.assertEqual(session.received(Packet.of(Status(100 + n, 0))), [])
        (done,) = exchange(session, Close(2, b"H"), Status(2, 0))
        sent = b"".join(chunk for _, chunk in writes)
        sequential = all(
            writes[i][0] + len(writes[i][1]) == writes[i + 1][0]
            for i in range(len(writes) - 1)
        )
        self.assertEqual(
            done,
            FileOperationDone(
                "write",
                "/up",
                bytes=len(sent),
                sha256=hashlib.sha256(sent).hexdigest(),
                sequential=sequential,
                offset=writes[0][0] if writes else 0,
            ),
        )
        if not shuffle:
            self.assertTrue(done.sequential)
        self.assertEqual(session.outstanding, 0)


# -- the session tracker -------------------------------------------------------


def open_session(**kwargs: int) -> SFTPSession:
    session = SFTPSession(**kwargs)
    session.sent(Packet.of(Init(3)))
    session.received(Packet.of(Version(3, ((b"posix-rename@openssh.com", b"1"),))))
    return session


def exchange(
    session: SFTPSession, request: Message, reply: Message
) -> list[FileOperationDone]:
    session.sent(Packet.of(request))
    return session.received(Packet.of(reply))


def op(session: SFTPSession, request: Message) -> SFTPOperation | None:
    return session.operation(Packet.of(request))


class OperationTests(SynchronousTestCase):
    """The policy's view of each request."""

    def test_versions_and_extensions(self) -> None:
        """INIT and VERSION are noted; they need no decision."""
        session = open_session()
        self.assertEqual((session.client_version, session.server_version), (3, 3))
        self.assertEqual(dict(session.extensions), {b"posix-rename@openssh.com": b"1"})
        self.assertIsNone(op(session, Init(3)))

    def test_open(self) -> None:
        """An open that may change the file is a write, else a read."""
        session = open_session()
        self.assertEqual(
            op(session, Open(1, b"/etc/passwd", 0x1)),
            SFTPOperation("read", ("/etc/passwd",), 1),
        )
        for flags in (0x2, 0x3, 0x4, 0x8, 0x9, 0x10, 0x11, 0x20, 0x1A):
            operation = op(session, Open(2, b"/etc/x", flags))
            assert operation is not None
            self.assertEqual(operation.op, "write", flags)

    def test_path_operations(self) -> None:
        """Path requests: the operation, the path(s), the subject first."""
        session = open_session()
        cases = [
            (Lstat(1, b"/a"), "stat", ("/a",)),
            (Stat(1, b"/a"), "stat", ("/a",)),
            (Setstat(1, b"/a", FileAttributes()), "setstat", ("/a",)),
            (Opendir(1, b"/d"), "opendir", ("/d",)),
            (Remove(1, b"/a"), "remove", ("/a",)),
            (Mkdir(1, b"/d"), "mkdir", ("/d",)),
            (Rmdir(1, b"/d"), "rmdir", ("/d",)),
            (Realpath(1, b"."), "realpath", (".",)),
            (Readlink(1, b"/l"), "readlink", ("/l",)),
            (Rename(1, b"/a", b"/b"), "rename", ("/a", "/b")),
            (
                Symlink(1, b"/etc/shadow", b"/tmp/l"),
                "symlink",
                ("/tmp/l", "/etc/shadow"),
            ),
        ]
        for request, name, paths in cases:
            self.assertEqual(op(session, request), SFTPOperation(name, paths, 1))
            self.assertIn(name, SFTP_OPS)

    def test_extensions(self) -> None:
        """OpenSSH's extensions are named and classified."""
        session = open_session()
        exchange(session, Open(1, b"/w", 0x1A), Handle(1, b"W"))
        exchange(session, Open(2, b"/r", 0x1), Handle(2, b"R"))

        def ext(name: bytes, data: bytes = b"") -> SFTPOperation | None:
            return op(session, extended(9, name, data))

        two = string(b"/a") + string(b"/b")
        self.assertEqual(
            ext(b"posix-rename@openssh.com", two),
            SFTPOperation(
                "rename", ("/a", "/b"), 9, extension="posix-rename@openssh.com"
            ),
        )
        self.assertEqual(
            ext(b"hardlink@openssh.com", two),
            SFTPOperation(
                "hardlink", ("/b", "/a"), 9, extension="hardlink@openssh.com"
            ),
        )
        self.assertEqual(
            ext(b"statvfs@openssh.com", string(b"/")),
            SFTPOperation("statvfs", ("/",), 9, extension="statvfs@openssh.com"),
        )
        self.assertEqual(
            ext(b"fsync@openssh.com", string(b"W")),
            SFTPOperation("fsync", ("/w",), 9, b"W", extension="fsync@openssh.com"),
        )
        self.assertEqual(
            ext(b"fstatvfs@openssh.com", string(b"R")),
            SFTPOperation(
                "statvfs", ("/r",), 9, b"R", extension="fstatvfs@openssh.com"
            ),
        )
        self.assertEqual(
            ext(b"lsetstat@openssh.com", string(b"/l") + u32(0)),
            SFTPOperation("setstat", ("/l",), 9, extension="lsetstat@openssh.com"),
        )
        self.assertEqual(
            ext(b"limits@openssh.com"),
            SFTPOperation("limits", (), 9, extension="limits@openssh.com"),
        )
        self.assertEqual(
            ext(b"expand-path@openssh.com", string(b"~/x")),
            SFTPOperation("realpath", ("~/x",), 9, extension="expand-path@openssh.com"),
        )
        self.assertEqual(
            ext(b"copy-data", string(b"R") + u64(0) + u64(0) + string(b"W") + u64(0)),
            SFTPOperation("copy-data", ("/r", "/w"), 9, b"W", extension="copy-data"),
        )
        self.assertEqual(
            ext(b"home-directory", string(b"root")),
            SFTPOperation("home-directory", ("root",), 9, extension="home-directory"),
        )
        self.assertEqual(
            ext(b"users-groups-by-id@openssh.com", string(u32(0)) + string(b"")),
            SFTPOperation(
                "users-groups-by-id", (), 9, extension="users-groups-by-id@openssh.com"
            ),
        )
        self.assertEqual(
            ext(b"x@example.com", b"junk"),
            SFTPOperation("extended", (), 9, extension="x@example.com"),
        )

    def test_handles(self) -> None:
        """
        Requests on a handle resolve to the path opened; those that
        continue the open's own operation are covered by its decision.
        """
        session = open_session()
        self.assertEqual(exchange(session, Open(1, b"/up", 0x1A), Handle(1, b"W")), [])
        self.assertEqual(exchange(session, Open(2, b"/down", 0x1), Handle(2, b"R")), [])
        self.assertEqual(exchange(session, Opendir(3, b"/d"), Handle(3, b"D")), [])
        self.assertEqual(session.handle(b"W"), ("/up", "write"))
        self.assertEqual(session.handle(b"D"), ("/d", "opendir"))
        self.assertIsNone(session.handle(b"nope"))
        cases = [
            (Write(4, b"W", 0, b"x"), SFTPOperation("write", ("/up",), 4, b"W", True)),
            (Read(4, b"R", 0, 10), SFTPOperation("read", ("/down",), 4, b"R", True)),
            (Readdir(4, b"D"), SFTPOperation("opendir", ("/d",), 4, b"D", True)),
            # not what the open decided: asked again
            (Read(4, b"W", 0, 10), SFTPOperation("read", ("/up",), 4, b"W", False)),
            (
                Write(4, b"R", 0, b"x"),
                SFTPOperation("write", ("/down",), 4, b"R", False),
            ),
            (Fstat(4, b"R"), SFTPOperation("stat", ("/down",), 4, b"R")),
            (
                Fsetstat(4, b"W", FileAttributes()),
                SFTPOperation("setstat", ("/up",), 4, b"W"),
            ),
            # a handle never seen opened: no path
            (Write(4, b"X", 0, b"x"), SFTPOperation("write", (), 4, b"X")),
        ]
        for request, expected in cases:
            self.assertEqual(op(session, request), expected)
        self.assertIsNone(op(session, Close(4, b"W")))

    def test_command(self) -> None:
        """The policy's Command: protocol ssh, kind the op, text the first path."""
        self.assertEqual(
            sftp_command(SFTPOperation("rename", ("/a", "/b"), 1)),
            Command(protocol="ssh", kind="rename", text="/a", objects=("/a", "/b")),
        )
        operation = SFTPOperation("write", ("/etc/x",), 1)
        self.assertEqual(operation.command(), sftp_command(operation))
        self.assertEqual(
            SFTPOperation("limits", (), 1, extension="limits@openssh.com").command(),
            Command(protocol="ssh", kind="limits", text="limits@openssh.com"),
        )
        self.assertEqual(
            SFTPOperation("write", (), 1, b"X").command(),
            Command(protocol="ssh", kind="write", text=""),
        )

    def test_non_utf8_path(self) -> None:
        """Bytes not UTF-8 stay, as lone surrogates (the project's convention)."""
        operation = op(open_session(), Remove(1, b"/tmp/\xff"))
        assert operation is not None
        self.assertEqual(operation.path, "/tmp/\udcff")
        self.assertEqual(
            operation.path.encode("utf-8", "surrogateescape"), b"/tmp/\xff"
        )


class CompletionTests(SynchronousTestCase):
    """FileOperationDone records, when operations complete."""

    def test_path_operations(self) -> None:
        """A path operation completes with its reply."""
        session = open_session()
        self.assertEqual(
            exchange(session, Remove(1, b"/a"), Status(1, 0)),
            [FileOperationDone("remove", "/a")],
        )
        self.assertEqual(
            exchange(session, Rename(2, b"/a", b"/b"), Status(2, 4, "Failure")),
            [FileOperationDone("rename", "/a", "/b", status="failure: Failure")],
        )
        self.assertEqual(
            exchange(session, Symlink(3, b"/t", b"/l"), Status(3, 0)),
            [FileOperationDone("symlink", "/l", "/t")],
        )
        self.assertEqual(
            exchange(session, Stat(4, b"/a"), Attrs(4, FileAttributes.of(size=1))),
            [FileOperationDone("stat", "/a")],
        )
        self.assertEqual(
            exchange(
                session, Realpath(5, b"."), Name(5, (NameEntry(b"/home/u", b""),))
            ),
            [FileOperationDone("realpath", ".")],
        )
        self.assertEqual(
            exchange(session, Mkdir(6, b"/d"), Status(6, 3, "Permission denied")),
            [
                FileOperationDone(
                    "mkdir", "/d", status="permission denied: Permission denied"
                )
            ],
        )
        self.assertEqual(
            exchange(
                session,
                extended(7, b"posix-rename@openssh.com", string(b"/x") + string(b"/y")),
                Status(7, 0),
            ),
            [FileOperationDone("rename", "/x", "/y")],
        )
        self.assertEqual(
            exchange(
                session,
                extended(8, b"limits@openssh.com"),
                ExtendedReply(8, u64(1) * 4),
            ),
            [FileOperationDone("limits", "")],
        )
        self.assertEqual(session.outstanding, 0)

    def test_failed_open(self) -> None:
        """An open the server refuses completes then."""
        session = open_session()
        self.assertEqual(
            exchange(
                session, Open(1, b"/etc/shadow", 0x1), Status(1, 3, "Permission denied")
            ),
            [
                FileOperationDone(
                    "read", "/etc/shadow", status="permission denied: Permission denied"
                )
            ],
        )

    def test_read_handle(self) -> None:
        """Reads pipelined, answered in order, EOF, close: one record."""
        session = open_session()
        exchange(session, Open(1, b"/f", 0x1), Handle(1, b"R"))
        for n in range(3):
            session.sent(Packet.of(Read(10 + n, b"R", n * 4, 4)))
        self.assertEqual(session.outstanding, 3)
        for reply in (Data(10, b"abcd"), Data(11, b"ef"), Status(12, 1, "EOF")):
            self.assertEqual(session.received(Packet.of(reply)), [])
        (done,) = exchange(session, Close(2, b"R"), Status(2, 0))
        self.assertEqual(
            done,
            FileOperationDone(
                "read",
                "/f",
                bytes=6,
                sha256=hashlib.sha256(b"abcdef").hexdigest(),
                sequential=True,
                offset=0,
            ),
        )
        self.assertIsNone(session.handle(b"R"))
        self.assertEqual(
            done.as_event(),
            {
                "op": "read",
                "path": "/f",
                "bytes": 6,
                "sha256": hashlib.sha256(b"abcdef").hexdigest(),
                "status": "ok",
                "sequential": True,
                "offset": 0,
            },
        )

    def test_short_read_out_of_order(self) -> None:
        """A short read then the next chunk: hashed as it came, not sequential."""
        session = open_session()
        exchange(session, Open(1, b"/f", 0x1), Handle(1, b"R"))
        session.sent(Packet.of(Read(10, b"R", 0, 4)))
        session.sent(Packet.of(Read(11, b"R", 4, 4)))
        session.received(Packet.of(Data(10, b"ab")))
        session.received(Packet.of(Data(11, b"efgh")))
        session.sent(Packet.of(Read(12, b"R", 2, 2)))
        session.received(Packet.of(Data(12, b"cd")))
        (done,) = exchange(session, Close(2, b"R"), Status(2, 0))
        self.assertEqual(done.sha256, hashlib.sha256(b"abefghcd").hexdigest())
        self.assertEqual((done.bytes, done.sequential), (8, False))

    def test_write_error_and_close(self) -> None:
        """A failed write marks the handle's record; a failed close says so."""
        session = open_session()
        exchange(session, Open(1, b"/f", 0x1A), Handle(1, b"W"))
        exchange(session, Write(2, b"W", 0, b"abc"), Status(2, 4, "No space left"))
        exchange(session, Write(3, b"W", 3, b"d"), Status(3, 4, "later"))
        (done,) = exchange(session, Close(4, b"W"), Status(4, 0))
        self.assertEqual(done.status, "failure: No space left")
        self.assertEqual(done.bytes, 4)
        exchange(session, Open(5, b"/g", 0x1A), Handle(5, b"W"))
        (done,) = exchange(session, Close(6, b"W"), Status(6, 4, "close failed"))
        self.assertEqual(done.status, "failure: close failed")
        self.assertEqual(done.sha256, hashlib.sha256(b"").hexdigest())

    def test_opendir(self) -> None:
        """A directory listing is one opendir record, at close."""
        session = open_session()
        exchange(session, Opendir(1, b"/d"), Handle(1, b"D"))
        self.assertEqual(
            exchange(session, Readdir(2, b"D"), Name(2, (NameEntry(b"a", b"a"),))), []
        )
        self.assertEqual(exchange(session, Readdir(3, b"D"), Status(3, 1)), [])
        self.assertEqual(
            exchange(session, Close(4, b"D"), Status(4, 0)),
            [FileOperationDone("opendir", "/d")],
        )
        self.assertEqual(
            FileOperationDone("opendir", "/d").as_event(),
            {"op": "opendir", "path": "/d", "status": "ok"},
        )

    def test_handle_operations(self) -> None:
        """fstat, fsetstat and fsync on a handle are records of their own."""
        session = open_session()
        exchange(session, Open(1, b"/f", 0x1A), Handle(1, b"W"))
        self.assertEqual(
            exchange(session, Fstat(2, b"W"), Attrs(2, FileAttributes())),
            [FileOperationDone("stat", "/f")],
        )
        self.assertEqual(
            exchange(
                session, extended(3, b"fsync@openssh.com", string(b"W")), Status(3, 0)
            ),
            [FileOperationDone("fsync", "/f")],
        )

    def test_copy_data(self) -> None:
        """
        copy-data: a record (from, to); the destination's record says it
        had data the gateway did not see.
        """
        session = open_session()
        exchange(session, Open(1, b"/src", 0x1), Handle(1, b"R"))
        exchange(session, Open(2, b"/dst", 0x1A), Handle(2, b"W"))
        request = extended(
            3, b"copy-data", string(b"R") + u64(0) + u64(0) + string(b"W") + u64(0)
        )
        self.assertEqual(
            exchange(session, request, Status(3, 0)),
            [FileOperationDone("copy-data", "/src", "/dst")],
        )
        (done,) = exchange(session, Close(4, b"W"), Status(4, 0))
        self.assertTrue(done.copied)
        self.assertTrue(done.as_event()["copied"])

    def test_refused(self) -> None:
        """
        A request the bridge answers itself: a record of the refusal, or,
        for a chunk of a transfer, the handle's record says so.
        """
        session = open_session()
        self.assertEqual(
            session.refused(Packet.of(Remove(1, b"/etc/x")), "no removals"),
            FileOperationDone(
                "remove", "/etc/x", status="permission denied: no removals"
            ),
        )
        self.assertEqual(session.outstanding, 0)
        exchange(session, Open(2, b"/f", 0x1A), Handle(2, b"W"))
        self.assertIsNone(
            session.refused(Packet.of(Write(3, b"W", 0, b"x")), "held too long")
        )
        (done,) = exchange(session, Close(4, b"W"), Status(4, 0))
        self.assertEqual(done.status, "permission denied: held too long")
        self.assertEqual(done.bytes, 0)
        self.assertIsNone(session.refused(Packet.of(Close(5, b"W")), "no"))
        # The refusal the bridge sends back reads as a reply.
        message = one(
            server_reader(), encode_status(1, SSH_FX_PERMISSION_DENIED, "no removals")
        )
        self.assertEqual(message, Status(1, 3, "no removals"))

    def test_end(self) -> None:
        """The channel ends: open handles and unanswered requests are recorded."""
        session = open_session()
        exchange(session, Open(1, b"/f", 0x1A), Handle(1, b"W"))
        session.sent(Packet.of(Write(2, b"W", 0, b"abc")))
        session.sent(Packet.of(Remove(3, b"/g")))
        done = session.end("channel closed")
        self.assertEqual(
            done,
            [
                FileOperationDone(
                    "write",
                    "/f",
                    bytes=3,
                    sha256=hashlib.sha256(b"abc").hexdigest(),
                    status="channel closed",
                    sequential=True,
                    offset=0,
                ),
                FileOperationDone("remove", "/g", status="channel closed"),
            ],
        )
        self.assertEqual((session.outstanding, session.end("again")), (0, []))


class SessionErrorTests(SynchronousTestCase):
    """What the tracker refuses (the bridge closes the channel)."""

    def test_reply_to_nothing(self) -> None:
        session = open_session()
        with self.assertRaises(SFTPProtocolError) as e:
            session.received(Packet.of(Status(5, 0)))
        self.assertIn("not outstanding", str(e.exception))

    def test_wrong_reply_type(self) -> None:
        session = open_session()
        session.sent(Packet.of(Remove(1, b"/a")))
        with self.assertRaises(SFTPProtocolError) as e:
            session.received(Packet.of(Handle(1, b"H")))
        self.assertIn("answered Remove 1 with Handle", str(e.exception))

    def test_reused_id(self) -> None:
        session = open_session()
        session.sent(Packet.of(Remove(1, b"/a")))
        with self.assertRaises(SFTPProtocolError) as e:
            session.sent(Packet.of(Stat(1, b"/a")))
        self.assertIn("reused", str(e.exception))

    def test_outstanding_cap(self) -> None:
        session = open_session(max_outstanding=64)
        for n in range(64):
            session.sent(Packet.of(Read(n, b"H", 0, 1)))
        with self.assertRaises(SFTPProtocolError) as e:
            session.sent(Packet.of(Read(64, b"H", 0, 1)))
        self.assertIn("more than 64 requests", str(e.exception))

    def test_handles(self) -> None:
        session = open_session(max_handles=2)
        with self.assertRaises(SFTPProtocolError) as e:
            exchange(session, Open(1, b"/a", 1), Handle(1, b"x" * 257))
        self.assertIn("over 256", str(e.exception))
        exchange(session, Open(2, b"/a", 1), Handle(2, b"A"))
        with self.assertRaises(SFTPProtocolError) as e:
            exchange(session, Open(3, b"/b", 1), Handle(3, b"A"))
        self.assertIn("while open", str(e.exception))
        exchange(session, Open(4, b"/b", 1), Handle(4, b"B"))
        with self.assertRaises(SFTPProtocolError) as e:
            exchange(session, Open(5, b"/c", 1), Handle(5, b"C"))
        self.assertIn("more than 2 handles", str(e.exception))

    def test_held_bytes(self) -> None:
        """
        Paths held for outstanding requests and open handles are capped,
        and released when answered or closed.
        """
        session = open_session(max_held=100)
        long = b"/" + b"x" * 59
        session.sent(Packet.of(Remove(1, long)))
        with self.assertRaises(SFTPProtocolError) as e:
            session.sent(Packet.of(Remove(2, long)))
        self.assertIn("more than 100 bytes of paths", str(e.exception))
        session.received(Packet.of(Status(1, 0)))
        exchange(session, Open(3, long, 1), Handle(3, b"H"))
        session.sent(Packet.of(Remove(4, b"/" + b"y" * 38)))
        with self.assertRaises(SFTPProtocolError):
            session.sent(Packet.of(Remove(5, b"/z")))
        session.received(Packet.of(Status(4, 0)))
        exchange(session, Close(6, b"H"), Status(6, 0))
        session.sent(Packet.of(Rename(7, long, b"/" + b"y" * 39)))
        # Requests on a handle share its path: only the handle counts.
        session = open_session(max_held=100)
        exchange(session, Open(1, long, 1), Handle(1, b"H"))
        for n in range(30):
            session.sent(Packet.of(Read(10 + n, b"H", 0, 1)))
