"""
Tests for L{gatehouse.protocols.kubernetes.spdy}: SPDY/3.1 frames, built by
hand per the draft where the layout matters, checked against bytes captured
from a real kubectl.
"""

from __future__ import annotations

import itertools
import struct
import zlib

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from gatehouse.protocols.kubernetes.spdy import (
    HEADER_DICTIONARY,
    Data,
    Frame,
    GoAway,
    HeaderBlockDecoder,
    HeaderBlockEncoder,
    Headers,
    Ping,
    ProtocolError,
    RstStream,
    Setting,
    Settings,
    SpdyFrameReader,
    SpdyFrameWriter,
    SynReply,
    SynStream,
    WindowUpdate,
)

#: The first frame kubectl 1.28.15 sent after the 101 of
#: C{kubectl exec -i web -- cat} (to a listener of this test suite's author
#: that logged the raw bytes): the SYN_STREAM of the error stream.  Its
#: header block is compressed with the SPDY/3 dictionary (zlib header
#: C{78 f9}: FDICT set, the dictionary's Adler-32 follows).
KUBECTL_SYN_STREAM = bytes.fromhex(
    "800300010000002900000001000000000000"
    "78f9e3c6a7c262606060 04a7b392a2d4c45c6851c29a0a0a6800000000ffff".replace(" ", "")
)


def control(kind: int, flags: int, body: bytes, version: int = 3) -> bytes:
    """A control frame by hand: C bit, version, type, flags, 24-bit length."""
    return struct.pack(">HHI", 0x8000 | version, kind, flags << 24 | len(body)) + body


def data_frame(stream_id: int, flags: int, body: bytes) -> bytes:
    """A data frame by hand."""
    return struct.pack(">II", stream_id, flags << 24 | len(body)) + body


def block(pairs: list[tuple[bytes, bytes]]) -> bytes:
    """An uncompressed header block by hand (32-bit counts and lengths)."""
    out = struct.pack(">I", len(pairs))
    for name, value in pairs:
        out += struct.pack(">I", len(name)) + name + struct.pack(">I", len(value))
        out += value
    return out


def compress(*blocks: bytes) -> list[bytes]:
    """Compress blocks in one context the way spdystream does."""
    z = zlib.compressobj(level=9, zdict=HEADER_DICTIONARY)
    return [z.compress(b) + z.flush(zlib.Z_SYNC_FLUSH) for b in blocks]


def read_all(data: bytes, **kwargs: int) -> list[Frame]:
    return [r.frame for r in SpdyFrameReader(**kwargs).feed(data)]


class DictionaryTests(SynchronousTestCase):
    """The SPDY/3 dictionary."""

    def test_real_kubectl(self) -> None:
        """
        A header block compressed by kubectl decompresses with the
        dictionary (zlib checks the dictionary's Adler-32 against the one
        in the stream header) to the headers client-go sends.
        """
        (read,) = SpdyFrameReader().feed(KUBECTL_SYN_STREAM)
        self.assertEqual(read.raw, KUBECTL_SYN_STREAM)
        self.assertEqual(read.frame, SynStream(1, (("streamtype", "error"),)))
        self.assertEqual(len(HEADER_DICTIONARY), 1423)
        adler = struct.unpack(">I", KUBECTL_SYN_STREAM[20:24])[0]
        self.assertEqual(zlib.adler32(HEADER_DICTIONARY), adler)

    def test_wrong_dictionary(self) -> None:
        """A block compressed with another dictionary is refused."""
        z = zlib.compressobj(level=9, zdict=b"something else")
        compressed = z.compress(block([(b"a", b"b")])) + z.flush(zlib.Z_SYNC_FLUSH)
        frame = control(2, 0, struct.pack(">I", 1) + compressed)
        self.assertRaises(ProtocolError, read_all, frame)


class FrameLayoutTests(SynchronousTestCase):
    """Frames built by hand per the draft decode as expected, and encode back."""

    def assertRoundTrip(self, raw: bytes, expected: Frame) -> None:
        (read,) = SpdyFrameReader().feed(raw)
        self.assertEqual(read.frame, expected)
        self.assertEqual(read.raw, raw)
        self.assertEqual(SpdyFrameWriter().encode(expected), raw)

    def test_syn_stream(self) -> None:
        (headers,) = compress(block([(b"streamtype", b"data"), (b"port", b"80")]))
        raw = control(1, 0x03, struct.pack(">IIBB", 5, 3, 2 << 5, 0) + headers)
        self.assertRoundTrip(
            raw,
            SynStream(
                5,
                (("streamtype", "data"), ("port", "80")),
                associated_to=3,
                priority=2,
                fin=True,
                unidirectional=True,
            ),
        )

    def test_syn_reply_and_headers(self) -> None:
        first, second = compress(block([(b"a", b"1")]), block([(b"b", b"2\x003")]))
        raw = control(2, 1, struct.pack(">I", 7) + first)
        raw += control(8, 0, struct.pack(">I", 7) + second)
        frames = read_all(raw)
        self.assertEqual(
            frames,
            [SynReply(7, (("a", "1"),), fin=True), Headers(7, (("b", "2\x003"),))],
        )
        self.assertEqual(frames[1].header("b"), "2\x003")  # type: ignore[union-attr]
        writer = SpdyFrameWriter()
        self.assertEqual(b"".join(writer.encode(f) for f in frames), raw)

    def test_small_frames(self) -> None:
        cases: list[tuple[bytes, Frame]] = [
            (control(3, 0, struct.pack(">II", 9, 5)), RstStream(9, 5)),
            (control(6, 0, struct.pack(">I", 1)), Ping(1)),
            (control(7, 0, struct.pack(">II", 11, 0)), GoAway(11, 0)),
            (control(9, 0, struct.pack(">II", 0, 65536)), WindowUpdate(0, 65536)),
            (
                control(4, 1, struct.pack(">IIIII", 2, 0x01000004, 100, 7, 65536)),
                Settings((Setting(4, 100, 1), Setting(7, 65536)), clear=True),
            ),
            (data_frame(3, 1, b"hello"), Data(3, b"hello", fin=True)),
            (data_frame(3, 0, b""), Data(3, b"")),
        ]
        for raw, frame in cases:
            self.assertRoundTrip(raw, frame)


class ViolationTests(SynchronousTestCase):
    """Every violation raises ProtocolError, and the reader stays failed."""

    def assertRefused(self, raw: bytes, **kwargs: int) -> None:
        reader = SpdyFrameReader(**kwargs)
        self.assertRaises(ProtocolError, reader.feed, raw)
        self.assertRaises(ProtocolError, reader.feed, data_frame(1, 0, b"x"))

    def test_violations(self) -> None:
        good = compress(block([(b"a", b"b")]))[0]
        syn = struct.pack(">IIBB", 1, 0, 0, 0)
        for raw in [
            control(1, 0, syn + good, version=2),
            control(2, 0, struct.pack(">I", 1) + good, version=4),
            control(5, 0, b""),  # NOOP of SPDY/2
            control(10, 0, b"\0" * 8),  # CREDENTIAL: not spoken by spdystream
            control(1, 0, struct.pack(">IIBB", 0, 0, 0, 0) + good),  # stream 0
            control(1, 0, struct.pack(">IIBB", 0x80000001, 0, 0, 0) + good),
            control(1, 0, struct.pack(">IIBB", 1, 0, 1, 0) + good),  # unused bits
            control(1, 0x04, syn + good),  # unknown flag
            control(1, 0, syn[:9]),
            control(1, 0, syn + b""),  # no header block
            control(1, 0, syn + b"garbage"),
            control(2, 0, struct.pack(">I", 0) + good),
            control(2, 2, struct.pack(">I", 1) + good),
            control(8, 0, b"\0\0"),
            control(3, 0, struct.pack(">II", 0, 1)),
            control(3, 0, struct.pack(">II", 1, 0)),  # status 0
            control(3, 0, struct.pack(">III", 1, 1, 1)),
            control(6, 0, struct.pack(">I", 0)),
            control(6, 1, struct.pack(">I", 1)),
            control(6, 0, struct.pack(">H", 1)),
            control(7, 0, struct.pack(">I", 1)),
            control(9, 0, struct.pack(">II", 1, 0)),  # delta 0
            control(9, 0, struct.pack(">II", 1, 0x80000000)),
            control(4, 0, struct.pack(">I", 2) + b"\0" * 8),
            control(4, 2, struct.pack(">I", 0)),
            data_frame(0, 0, b"x"),
            data_frame(1, 2, b"x"),
        ]:
            with self.subTest(raw=raw):
                self.assertRefused(raw)

    def test_length_cap(self) -> None:
        """A frame above the cap is refused on its 8-byte header alone."""
        header = struct.pack(">II", 1, 1025)
        self.assertRefused(header, max_frame_length=1024)
        reader = SpdyFrameReader(max_frame_length=1024)
        self.assertEqual(
            reader.feed(data_frame(1, 0, b"x" * 1024))[0].raw[8:], b"x" * 1024
        )

    def test_bad_header_blocks(self) -> None:
        """Header blocks that are not exactly one valid block."""
        for uncompressed in [
            block([(b"A", b"b")]),  # upper case
            block([(b"a", b"1"), (b"a", b"2")]),  # duplicate
            block([(b"", b"1")]),  # empty name
            block([(b"host", b"x")]),  # not allowed in a SYN_STREAM
            block([(b"connection", b"close")]),
            block([(b"a", b"b")]) + b"\0",  # trailing bytes
            block([(b"a", b"b")])[:-1],  # truncated
            struct.pack(">I", 1000),  # count beyond the bytes
        ]:
            with self.subTest(block=uncompressed):
                (compressed,) = compress(uncompressed)
                raw = control(1, 0, struct.pack(">IIBB", 1, 0, 0, 0) + compressed)
                self.assertRefused(raw)

    def test_header_block_cap(self) -> None:
        """A header block decompressing above the cap is refused (no bomb)."""
        (compressed,) = compress(block([(b"a", b"x" * 100_000)]))
        self.assertLess(len(compressed), 1024)
        raw = control(2, 0, struct.pack(">I", 1) + compressed)
        self.assertRefused(raw, max_header_block=65536)
        self.assertEqual(len(read_all(raw, max_header_block=200_000)), 1)

    def test_ended_compression_stream(self) -> None:
        """A zlib stream that ends (Z_FINISH) cannot carry later blocks."""
        z = zlib.compressobj(level=9, zdict=HEADER_DICTIONARY)
        compressed = z.compress(block([(b"a", b"b")])) + z.flush()
        self.assertRefused(control(2, 0, struct.pack(">I", 1) + compressed))

    def test_host_in_reply(self) -> None:
        """C{host} is refused in a SYN_STREAM but allowed in a SYN_REPLY."""
        (compressed,) = compress(block([(b"host", b"x")]))
        frames = read_all(control(2, 0, struct.pack(">I", 1) + compressed))
        self.assertEqual(frames, [SynReply(1, (("host", "x"),))])

    def test_writer_refuses(self) -> None:
        """The writer refuses what the reader would."""
        writer = SpdyFrameWriter()
        for frame in [
            Data(0, b""),
            SynStream(2**31, ()),
            SynReply(1, (("A", "b"),)),
            SynStream(1, (("host", "x"),)),
            RstStream(1, 0),
            Ping(0),
            WindowUpdate(0, 0),
            SynStream(1, (), priority=8),
        ]:
            with self.subTest(frame=frame):
                self.assertRaises(ProtocolError, writer.encode, frame)

    def test_decoder_context(self) -> None:
        """The decoder keeps its context across blocks and fails for good."""
        encoder = HeaderBlockEncoder()
        decoder = HeaderBlockDecoder()
        first = encoder.encode((("streamtype", "stdout"),))
        second = encoder.encode((("streamtype", "stdout"),))
        self.assertLess(len(second), len(first))
        self.assertEqual(decoder.decode(first), (("streamtype", "stdout"),))
        self.assertEqual(decoder.decode(second), (("streamtype", "stdout"),))
        # Out of order: the second block alone is meaningless.
        self.assertRaises(ProtocolError, HeaderBlockDecoder().decode, second)
        broken = HeaderBlockDecoder()
        self.assertRaises(ProtocolError, broken.decode, b"junk")
        self.assertRaises(ProtocolError, broken.decode, first)


_names = st.text(
    alphabet="abcdefghijklmnopqrstuvwxyz-0123456789", min_size=1, max_size=12
)
_header_lists = st.dictionaries(
    _names.filter(
        lambda n: (
            n
            not in {
                "connection",
                "host",
                "keep-alive",
                "proxy-connection",
                "transfer-encoding",
            }
        )
    ),
    st.text(alphabet=st.characters(max_codepoint=255), max_size=20),
    max_size=5,
).map(lambda d: tuple(d.items()))
_ids = st.integers(1, 2**31 - 1)
FRAMES = st.one_of(
    st.builds(
        SynStream,
        _ids,
        _header_lists,
        st.integers(0, 2**31 - 1),
        st.integers(0, 7),
        st.integers(0, 255),
        st.booleans(),
        st.booleans(),
    ),
    st.builds(SynReply, _ids, _header_lists, st.booleans()),
    st.builds(Headers, _ids, _header_lists, st.booleans()),
    st.builds(RstStream, _ids, st.integers(1, 2**32 - 1)),
    st.builds(
        Settings,
        st.lists(
            st.builds(
                Setting,
                st.integers(0, 2**24 - 1),
                st.integers(0, 2**32 - 1),
                st.integers(0, 255),
            ),
            max_size=3,
        ).map(tuple),
        st.booleans(),
    ),
    st.builds(Ping, _ids),
    st.builds(GoAway, st.integers(0, 2**31 - 1), st.integers(0, 2**32 - 1)),
    st.builds(WindowUpdate, st.integers(0, 2**31 - 1), _ids),
    st.builds(Data, _ids, st.binary(max_size=50), st.booleans()),
)


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    """C{data} cut at the positions C{cuts} (modulo its length)."""
    points = sorted({c % (len(data) + 1) for c in cuts})
    bounds = [0, *points, len(data)]
    return [data[a:b] for a, b in itertools.pairwise(bounds)]


class PropertyTests(SynchronousTestCase):
    """Hypothesis: encode then decode, any split; any bytes."""

    @settings(max_examples=300)
    @given(
        frames=st.lists(FRAMES, max_size=10),
        cuts=st.lists(st.integers(0, 10**6), max_size=10),
    )
    def test_round_trip_any_split(self, frames: list[Frame], cuts: list[int]) -> None:
        """Encoded frames, split anywhere, read back to themselves and their bytes."""
        writer = SpdyFrameWriter()
        encoded = [writer.encode(f) for f in frames]
        reader = SpdyFrameReader()
        read = []
        for chunk in split(b"".join(encoded), cuts):
            read.extend(reader.feed(chunk))
        self.assertEqual([r.frame for r in read], frames)
        self.assertEqual([r.raw for r in read], encoded)
        self.assertEqual(reader.buffered, 0)

    @settings(max_examples=300)
    @given(
        chunks=st.lists(st.binary(max_size=80), max_size=12),
        prefix=st.booleans(),
        max_length=st.sampled_from([16, 1024, 1 << 20]),
    )
    def test_random_bytes(
        self, chunks: list[bytes], prefix: bool, max_length: int
    ) -> None:
        """
        Random bytes (after a real frame, or not) raise nothing but
        ProtocolError and never hold more than a frame's worth.
        """
        reader = SpdyFrameReader(max_frame_length=max_length)
        try:
            if prefix:
                reader.feed(KUBECTL_SYN_STREAM)
            for chunk in chunks:
                reader.feed(chunk)
                self.assertLess(reader.buffered, 8 + max_length)
        except ProtocolError:
            pass

    @settings(max_examples=300)
    @given(
        headers=st.lists(
            st.tuples(
                st.sampled_from([1, 2, 8]), st.integers(0, 3), st.binary(max_size=40)
            ),
            max_size=6,
        )
    )
    def test_random_control_bodies(self, headers: list[tuple[int, int, bytes]]) -> None:
        """Well-framed control frames with random bodies: frames or ProtocolError."""
        raw = b"".join(control(kind, flags, body) for kind, flags, body in headers)
        try:
            read_all(raw)
        except ProtocolError:
            pass

    @settings(max_examples=200)
    @given(
        frames=st.lists(FRAMES, min_size=1, max_size=6),
        index=st.integers(0, 10**6),
        value=st.integers(0, 255),
    )
    def test_mutations(self, frames: list[Frame], index: int, value: int) -> None:
        """One byte changed in valid frames: frames or ProtocolError, nothing else."""
        writer = SpdyFrameWriter()
        data = bytearray(b"".join(writer.encode(f) for f in frames))
        data[index % len(data)] = value
        try:
            read_all(bytes(data))
        except ProtocolError:
            pass
