"""
Tests for L{gatehouse.protocols.postgres.codec}: framing at every split,
startup-phase parsing and its attacks, typed decoding and encoding of every
message, and fuzzing that only ever yields events or L{ProtocolViolation}.
"""

from __future__ import annotations

import itertools
import struct
import tracemalloc

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from gatehouse.protocols.postgres import codec
from gatehouse.protocols.postgres.codec import (
    BACKEND_LIMITS,
    FRONTEND_LIMITS,
    LATEST_PROTOCOL,
    MAX_MESSAGE_LENGTH,
    MAX_STARTUP_PACKET_LENGTH,
    PROTOCOL_3_0,
    PROTOCOL_3_2,
    AuthenticationCleartextPassword,
    AuthenticationGSS,
    AuthenticationGSSContinue,
    AuthenticationKerberosV5,
    AuthenticationMD5Password,
    AuthenticationOk,
    AuthenticationSASL,
    AuthenticationSASLContinue,
    AuthenticationSASLFinal,
    AuthenticationSSPI,
    AuthResponse,
    BackendKeyData,
    BackendType,
    Bind,
    BindComplete,
    CancelRequest,
    Close,
    CloseComplete,
    CommandComplete,
    CopyBothResponse,
    CopyData,
    CopyDone,
    CopyFail,
    CopyInResponse,
    CopyOutResponse,
    DataRow,
    Describe,
    DirectTLS,
    EmptyQueryResponse,
    EncryptionResponse,
    ErrorResponse,
    Execute,
    FieldDescription,
    Flush,
    FrameReader,
    FrontendType,
    FunctionCall,
    FunctionCallResponse,
    GSSENCRequest,
    GSSResponse,
    NegotiateProtocolVersion,
    NoData,
    NoticeResponse,
    NotificationResponse,
    ParameterDescription,
    ParameterStatus,
    Parse,
    ParseComplete,
    PasswordMessage,
    PortalSuspended,
    ProtocolViolation,
    Query,
    ReadyForQuery,
    RowDescription,
    SASLInitialResponse,
    SASLResponse,
    SSLRequest,
    StartupMessage,
    StartupParser,
    Sync,
    Terminate,
    decode_backend,
    decode_encryption_response,
    decode_frontend,
    encode_message,
    python_encoding,
)

FUZZ = settings(deadline=None, max_examples=150)
#: for properties whose every example has the case they are about
FUZZ_CASE = settings(deadline=None, max_examples=60)


def frame(letter: bytes, body: bytes = b"") -> bytes:
    return letter + struct.pack("!I", len(body) + 4) + body


def startup_packet(code: int, body: bytes = b"") -> bytes:
    return struct.pack("!II", len(body) + 8, code) + body


# What psql sends for "SELECT 1" and what a PostgreSQL server answers,
# written out byte by byte from the protocol documentation.
PSQL_QUERY = b"Q\x00\x00\x00\x0dSELECT 1\x00"
SERVER_ANSWER = (
    b"T\x00\x00\x00\x21\x00\x01?column?\x00"
    b"\x00\x00\x00\x00\x00\x00\x00\x00\x00\x17\x00\x04\xff\xff\xff\xff\x00\x00"
    b"D\x00\x00\x00\x0b\x00\x01\x00\x00\x00\x011"
    b"C\x00\x00\x00\x0dSELECT 1\x00"
    b"Z\x00\x00\x00\x05I"
)
# pgbench -M extended, one SELECT: Parse/Bind/Describe/Execute/Sync.
EXTENDED = (
    b"P\x00\x00\x00\x15\x00SELECT $1\x00\x00\x01\x00\x00\x00\x17"
    b"B\x00\x00\x00\x14\x00\x00\x00\x01\x00\x00\x00\x01\x00\x00\x00\x0242\x00\x00"
    b"D\x00\x00\x00\x06P\x00"
    b"E\x00\x00\x00\x09\x00\x00\x00\x00\x00"
    b"S\x00\x00\x00\x04"
)
STREAM = EXTENDED + PSQL_QUERY + frame(b"d", b"x" * 300) + frame(b"c") + EXTENDED


# Message types and length limits, from the protocol documentation
# ("Message Formats") and PostgreSQL's and libpq's limits: the length word
# counts itself, so 4 is the least; small messages (Sync, Execute, ...) at
# most 10000 from a client and 30000 from a server; password-family
# messages at most 65535; everything else at most 0x3FFFFFFE.
_BIG = 0x3FFFFFFE
FRAMING = {
    "frontend": (
        b"QPBFdpEDCSHXcf",
        {
            **dict.fromkeys(b"QPBFd", _BIG),
            ord("p"): 65535,
            **dict.fromkeys(b"EDCSHXcf", 10000),
        },
    ),
    "backend": (
        b"RSCTDEGHWNAtvVdKZ123nsIc",
        {
            **dict.fromkeys(b"RSCTDEGHWNAtvVd", _BIG),
            **dict.fromkeys(b"KZ123nsIc", 30000),
        },
    ),
    "any": (bytes(range(256)), dict.fromkeys(range(256), _BIG)),
}


def model_frames(stream: bytes, limits: dict) -> tuple[list, tuple | None]:
    """
    The frames of C{stream} as C{(type, start, end)}, and the position and
    SQLSTATE of the first bad header (None if none is complete).
    """
    frames = []
    pos = 0
    while pos + 5 <= len(stream):
        t = stream[pos]
        (length,) = struct.unpack("!I", stream[pos + 1 : pos + 5])
        limit = limits.get(t, 0)
        if length < 4 or length > limit:
            too_long = limit and 4 <= length < 2**31
            return frames, (pos, "54000" if too_long else "08P01")
        if pos + 1 + length > len(stream):
            break
        frames.append((t, pos, pos + 1 + length))
        pos += 1 + length
    return frames, None


#: what a fuzzed stream holds between its valid frames: nothing, random
#: bytes, or one of the headers the reader must refuse
GARBAGE = {
    "nothing": None,
    "noise": None,
    "short length": "08P01",
    "negative length": "08P01",
    "over limit": "54000",
    "unknown type": "08P01",
}


def garbage(kind: str, case: str) -> st.SearchStrategy[bytes | None]:
    """Bytes of C{case} (a key of L{GARBAGE}) for a stream of C{kind}."""
    types, limits = FRAMING[kind]
    if case == "nothing":
        return st.none()
    if case == "noise":
        return st.binary(min_size=1, max_size=12)
    headers: st.SearchStrategy[tuple[int, int]]
    if case == "short length":
        headers = st.tuples(st.sampled_from(types), st.integers(0, 3))
    elif case == "negative length":
        headers = st.tuples(st.sampled_from(types), st.integers(2**31, 2**32 - 1))
    elif case == "over limit":
        headers = st.sampled_from(types).map(lambda t: (t, limits[t] + 1))
    else:
        unknown = sorted(set(range(256)) - set(types))
        headers = st.tuples(st.sampled_from(unknown), st.integers(4, 100))
    return headers.map(lambda h: bytes([h[0]]) + struct.pack("!I", h[1]))


def frames_of(reader: FrameReader, chunks: list[bytes]) -> tuple[list, bytes]:
    """
    Feed C{chunks}, taking everything framed after each; return the frames
    and the bytes taken.
    """
    frames = []
    out = []
    for chunk in chunks:
        new = reader.feed(chunk)
        frames.extend((t, s, e, reader.message((t, s, e))) for t, s, e in new)
        if new:
            out.append(reader.take_to(new[-1][2]))
    return frames, b"".join(out)


class FrameReaderTests(SynchronousTestCase):
    """
    L{FrameReader} reports the same frames however the stream is split,
    never allocates by a length word, and refuses bad headers.
    """

    def expected(self) -> list:
        frames, out = frames_of(FrameReader.frontend(), [STREAM])
        self.assertEqual(out, STREAM)
        return frames

    def test_whole_stream(self) -> None:
        """
        One chunk of many messages yields every frame with absolute offsets.
        """
        frames = self.expected()
        self.assertEqual(
            bytes(t for t, *_ in frames), b"PBDES" + b"Q" + b"dc" + b"PBDES"
        )
        self.assertEqual(frames[0][1], 0)
        self.assertEqual(frames[-1][2], len(STREAM))
        for (_, _, end, _), (_, start, _, _) in itertools.pairwise(frames):
            self.assertEqual(end, start)
        self.assertEqual(b"".join(f[3] for f in frames), STREAM)

    def test_every_split(self) -> None:
        """
        Splitting the stream in two at every offset changes nothing.
        """
        expected = self.expected()
        for cut in range(len(STREAM) + 1):
            frames, out = frames_of(
                FrameReader.frontend(), [STREAM[:cut], STREAM[cut:]]
            )
            self.assertEqual(frames, expected, cut)
            self.assertEqual(out, STREAM)

    def test_one_byte_chunks(self) -> None:
        """
        A stream fed one byte at a time yields the same frames.
        """
        chunks = [STREAM[i : i + 1] for i in range(len(STREAM))]
        frames, out = frames_of(FrameReader.frontend(), chunks)
        self.assertEqual(frames, self.expected())
        self.assertEqual(out, STREAM)

    @FUZZ
    @given(st.lists(st.integers(0, len(STREAM)), max_size=12))
    def test_random_splits(self, cuts: list[int]) -> None:
        """
        Any chunking yields the same frames and the same bytes.
        """
        cuts = sorted(cuts)
        bounds = [0, *cuts, len(STREAM)]
        chunks = [STREAM[a:b] for a, b in itertools.pairwise(bounds)]
        frames, out = frames_of(FrameReader.frontend(), chunks)
        self.assertEqual(frames, self.expected())
        self.assertEqual(out, STREAM)

    def test_zero_copy(self) -> None:
        """
        A chunk of whole messages taken whole comes back as the same object.
        """
        reader = FrameReader.backend()
        frames = reader.feed(SERVER_ANSWER)
        self.assertEqual([f[0] for f in frames], list(b"TDCZ"))
        self.assertIs(reader.take_to(frames[-1][2]), SERVER_ANSWER)
        self.assertEqual(reader.buffered, 0)
        frames = reader.feed(SERVER_ANSWER)
        self.assertEqual(frames[0][1], len(SERVER_ANSWER))
        self.assertIs(reader.take_to(frames[-1][2]), SERVER_ANSWER)

    def test_partial_take_and_more_data(self) -> None:
        """
        Holding back a message (a query awaiting approval) and feeding more
        keeps offsets absolute and bodies readable.
        """
        reader = FrameReader.frontend()
        stream = EXTENDED + PSQL_QUERY
        frames = reader.feed(stream)
        query = frames[-1]
        self.assertEqual(reader.take_to(query[1]), EXTENDED)
        self.assertEqual(reader.consumed, len(EXTENDED))
        self.assertEqual(reader.body(query), b"SELECT 1\x00")
        more = reader.feed(frame(b"S") + b"X\x00")
        self.assertEqual(more, [(ord("S"), len(stream), len(stream) + 5)])
        self.assertEqual(reader.framed, len(stream) + 5)
        self.assertEqual(reader.buffered, len(PSQL_QUERY) + 5 + 2)
        self.assertEqual(reader.message(query), PSQL_QUERY)
        reader.discard_to(query[2])
        self.assertEqual(reader.take_to(more[0][2]), frame(b"S"))
        x_start = more[0][2]
        self.assertEqual(
            reader.feed(b"\x00\x00\x04"), [(ord("X"), x_start, x_start + 5)]
        )
        self.assertRaises(ValueError, reader.body, query)

    def test_mutable_input_copied(self) -> None:
        """
        A bytearray or memoryview fed in is copied, so the caller may reuse
        its buffer; a wrong-sized limit table is refused.
        """
        data = bytearray(PSQL_QUERY)
        reader = FrameReader.frontend()
        [query] = reader.feed(memoryview(data))
        data[5:] = b"X" * len(data[5:])
        self.assertEqual(reader.take_to(query[2]), PSQL_QUERY)
        self.assertRaises(ValueError, FrameReader, [0] * 255)

    def test_take_bounds(self) -> None:
        """
        take_to and discard_to refuse offsets outside the framed, unconsumed
        range: a partial message is never handed out.
        """
        reader = FrameReader.frontend()
        reader.feed(PSQL_QUERY + PSQL_QUERY[:3])
        self.assertRaises(ValueError, reader.take_to, len(PSQL_QUERY) + 1)
        self.assertRaises(ValueError, reader.discard_to, len(PSQL_QUERY) + 3)
        self.assertEqual(reader.take_to(4), PSQL_QUERY[:4])
        self.assertRaises(ValueError, reader.take_to, 3)
        self.assertRaises(ValueError, reader.body, (81, 0, len(PSQL_QUERY)))
        self.assertEqual(reader.take_to(len(PSQL_QUERY)), PSQL_QUERY[4:])
        self.assertEqual(reader.buffered, 3)
        self.assertEqual(reader.feed(PSQL_QUERY[3:]), [(81, 14, 28)])
        self.assertEqual(reader.take_to(28), PSQL_QUERY)

    def test_large_message_in_chunks(self) -> None:
        """
        A 1 MiB CopyData arriving in 4 KiB chunks is framed once complete.
        """
        payload = bytes(range(256)) * 4096
        message = frame(b"d", payload)
        reader = FrameReader.frontend()
        got = []
        for i in range(0, len(message), 4096):
            got.extend(reader.feed(message[i : i + 4096]))
        self.assertEqual(got, [(ord("d"), 0, len(message))])
        self.assertEqual(reader.body(got[0]), payload)

    def test_feed_messages(self) -> None:
        """
        feed_messages returns (type, body) pairs and consumes them.
        """
        reader = FrameReader.backend()
        self.assertEqual(reader.feed_messages(SERVER_ANSWER[:10]), [])
        pairs = reader.feed_messages(SERVER_ANSWER[10:])
        self.assertEqual([t for t, _ in pairs], list(b"TDCZ"))
        self.assertEqual(pairs[-1][1], b"I")
        self.assertEqual(reader.buffered, 0)

    def assertViolation(self, reader: FrameReader, data: bytes, sqlstate: str):
        error = self.assertRaises(ProtocolViolation, reader.feed, data)
        self.assertEqual(error.sqlstate, sqlstate)
        # Sticky: the reader never resumes after a violation.
        self.assertIs(self.assertRaises(ProtocolViolation, reader.feed, b""), error)
        return error

    def test_short_length(self) -> None:
        """
        A length word under 4 is a protocol violation.
        """
        for length in range(4):
            data = b"Q" + struct.pack("!I", length)
            self.assertViolation(FrameReader.frontend(), data, "08P01")

    def test_negative_length(self) -> None:
        """
        A length word that is negative as a signed int32 is a protocol
        violation, whatever the limit.
        """
        for length in (0xFFFFFFFF, 0x80000000, 0xFFFFFFFC):
            data = b"d" + struct.pack("!I", length)
            error = self.assertViolation(
                FrameReader(max_length=0xFFFFFFFF), data, "08P01"
            )
            self.assertIn(
                str(struct.unpack("!i", struct.pack("!I", length))[0]), error.message
            )

    def test_too_long(self) -> None:
        """
        A length over the limit is refused as soon as the header is in,
        with 54000.
        """
        data = b"d" + struct.pack("!I", MAX_MESSAGE_LENGTH + 1)
        self.assertViolation(FrameReader.frontend(), data, "54000")
        data = b"Q" + struct.pack("!I", 1001)
        self.assertViolation(FrameReader.frontend(max_length=1000), data, "54000")
        self.assertEqual(
            FrameReader(max_length=1000).feed(frame(b"Q", b"x" * 995)), [(81, 0, 1000)]
        )

    def test_small_types(self) -> None:
        """
        Frontend messages that are always short get PostgreSQL's 10000-byte
        limit; 'p' gets the 65535-byte auth token limit.
        """
        self.assertViolation(
            FrameReader.frontend(), b"S" + struct.pack("!I", 10001), "54000"
        )
        self.assertViolation(
            FrameReader.frontend(), b"p" + struct.pack("!I", 65536), "54000"
        )
        reader = FrameReader.frontend()
        self.assertEqual(reader.feed(b"p" + struct.pack("!I", 65535)), [])
        self.assertEqual(FRONTEND_LIMITS[ord("Q")], MAX_MESSAGE_LENGTH)
        self.assertEqual(BACKEND_LIMITS[ord("Z")], 30000)

    def test_unknown_type(self) -> None:
        """
        A type byte not allowed in the direction is refused.
        """
        error = self.assertViolation(FrameReader.frontend(), frame(b"Z", b"I"), "08P01")
        self.assertIn("invalid message type", error.message)
        self.assertViolation(FrameReader.backend(), frame(b"Q", b"x\x00"), "08P01")
        self.assertEqual(FrameReader().feed(frame(b"\x00")), [(0, 0, 5)])

    def test_no_allocation_by_length(self) -> None:
        """
        A header announcing an almost 1 GiB message (allowed) buffers only
        what arrived.
        """
        reader = FrameReader.frontend()
        tracemalloc.start()
        try:
            self.assertEqual(
                reader.feed(b"d" + struct.pack("!I", MAX_MESSAGE_LENGTH)), []
            )
            self.assertEqual(reader.feed(b"x" * 1000), [])
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        self.assertLess(peak, 64 * 1024)
        self.assertEqual(reader.buffered, 1005)
        self.assertEqual(reader.framed, 0)

    KINDS = st.sampled_from(["frontend", "backend", "any"])

    def fuzz(self, kind: str, case: str, data: st.DataObject) -> None:
        """
        Valid frames, then C{case} of L{GARBAGE}, then more frames, split at
        random points: the reader yields exactly the frames a model of the
        protocol's framing finds (type byte, int32 length counting itself,
        per-type limits from the protocol documentation), with the bytes
        taken equal to the stream, and a ProtocolViolation exactly at the
        first bad header.
        """
        types, limits = FRAMING[kind]
        letter = st.sampled_from(types)
        frame_ = st.tuples(letter, st.binary(max_size=40)).map(
            lambda f: frame(bytes([f[0]]), f[1])
        )
        # the longest message a type may have, for types with small limits
        full = st.sampled_from([t for t in types if limits[t] <= 65535] or types).map(
            lambda t: frame(bytes([t]), bytes(min(limits[t], 65535) - 4))
        )
        frame_ = frame_ | full if kind != "any" else frame_
        before = data.draw(st.lists(frame_, max_size=6))
        junk = data.draw(garbage(kind, case))
        after = data.draw(st.lists(frame_, max_size=3))
        stream = b"".join([*before, junk or b"", *after])
        cuts = data.draw(st.lists(st.integers(0, len(stream)), max_size=8))
        bounds = [0, *sorted(cuts), len(stream)]
        chunks = [stream[a:b] for a, b in itertools.pairwise(bounds)]

        expected, bad = model_frames(stream, limits)
        # the model agrees with how the stream was built
        starts = list(itertools.accumulate(len(f) for f in before))
        self.assertEqual([e for _, _, e in expected[: len(before)]], starts)
        if junk is None:
            self.assertEqual(len(expected), len(before) + len(after))
            self.assertIsNone(bad)
        elif GARBAGE[case] is not None:
            # the first bad header is the one planted, refused as it should be
            self.assertEqual(bad, (sum(map(len, before)), GARBAGE[case]))

        reader = {
            "frontend": FrameReader.frontend,
            "backend": FrameReader.backend,
            "any": FrameReader,
        }[kind]()
        got: list = []
        taken = []
        fed = 0
        for chunk in chunks:
            try:
                new = reader.feed(chunk)
            except ProtocolViolation as e:
                self.assertIsNotNone(bad)
                position, sqlstate = bad
                # raised by the chunk that completed the bad header; frames
                # completed in that same chunk are not reported
                self.assertTrue(fed < position + 5 <= fed + len(chunk))
                self.assertEqual(e.sqlstate, sqlstate)
                self.assertEqual(e.message_type, stream[position])
                self.assertEqual(reader.framed, position)
                self.assertEqual(got, [f for f in expected if f[2] <= fed])
                self.assertRaises(ProtocolViolation, reader.feed, b"")
                break
            fed += len(chunk)
            for t, start, end in new:
                self.assertEqual(reader.message((t, start, end))[0], t)
            got.extend(new)
            if new:
                taken.append(reader.take_to(new[-1][2]))
        else:
            self.assertTrue(bad is None or bad[0] + 5 > len(stream))
            self.assertEqual(got, expected)
        self.assertEqual(b"".join(taken), stream[: got[-1][2] if got else 0])

    @FUZZ
    @given(KINDS, st.sampled_from(["nothing", "noise"]), st.data())
    def test_fuzz(self, kind: str, case: str, data: st.DataObject) -> None:
        """Valid frames, with random bytes among them or not."""
        self.fuzz(kind, case, data)

    # One property per kind of bad header, so that every example plants one
    # (drawn among all kinds, some went unseen for whole runs).

    @FUZZ_CASE
    @given(KINDS, st.data())
    def test_fuzz_short_length(self, kind: str, data: st.DataObject) -> None:
        """A length word under 4 (it counts itself)."""
        self.fuzz(kind, "short length", data)

    @FUZZ_CASE
    @given(KINDS, st.data())
    def test_fuzz_negative_length(self, kind: str, data: st.DataObject) -> None:
        """A length word with its sign bit set."""
        self.fuzz(kind, "negative length", data)

    @FUZZ_CASE
    @given(KINDS, st.data())
    def test_fuzz_over_limit(self, kind: str, data: st.DataObject) -> None:
        """A length one over the type's limit."""
        self.fuzz(kind, "over limit", data)

    @FUZZ_CASE
    @given(st.sampled_from(["frontend", "backend"]), st.data())
    def test_fuzz_unknown_type(self, kind: str, data: st.DataObject) -> None:
        """A type byte the direction does not have (any byte is a type for 'any')."""
        self.fuzz(kind, "unknown type", data)

    def test_encode_message(self) -> None:
        """
        encode_message frames a body under an int or one-byte type.
        """
        self.assertEqual(encode_message(b"Z", b"I"), b"Z\x00\x00\x00\x05I")
        self.assertEqual(encode_message(ord("S")), b"S\x00\x00\x00\x04")
        self.assertRaises(ValueError, encode_message, b"ZZ", b"")


PSQL_STARTUP = (
    b"\x00\x00\x00\x4d\x00\x03\x00\x00"
    b"user\x00alice\x00database\x00shop\x00application_name\x00psql\x00"
    b"client_encoding\x00UTF8\x00\x00"
)
TLS_CLIENT_HELLO = b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\xaa" * 32


def events(parser: StartupParser, data: bytes = b"") -> list:
    parser.receive_data(data)
    out = []
    while (event := parser.next_event()) is not None:
        out.append(event)
    return out


class StartupParserTests(SynchronousTestCase):
    """
    L{StartupParser} parses the untyped startup packets and reports what
    the server side must refuse.
    """

    def assertViolation(self, data: bytes, sqlstate: str, **kwargs) -> str:
        parser = StartupParser(**kwargs)
        error = self.assertRaises(ProtocolViolation, events, parser, data)
        self.assertEqual(error.sqlstate, sqlstate)
        self.assertIs(self.assertRaises(ProtocolViolation, parser.next_event), error)
        return error.message

    def test_startup_message(self) -> None:
        """
        A protocol 3.0 StartupMessage as psql sends it.
        """
        self.assertEqual(len(PSQL_STARTUP), 0x4D)
        parser = StartupParser()
        [event] = events(parser, PSQL_STARTUP + PSQL_QUERY)
        self.assertEqual(event.version, PROTOCOL_3_0)
        self.assertEqual((event.major, event.minor), (3, 0))
        self.assertEqual(
            event.as_dict(),
            {
                "user": "alice",
                "database": "shop",
                "application_name": "psql",
                "client_encoding": "UTF8",
            },
        )
        self.assertEqual(event.get("user"), "alice")
        self.assertIsNone(event.get("options"))
        self.assertTrue(parser.done)
        self.assertIsNone(parser.next_event())
        self.assertEqual(parser.take_remaining(), PSQL_QUERY)
        self.assertEqual(event.encode(), PSQL_STARTUP)
        self.assertIsNone(event.negotiate())

    def test_byte_at_a_time(self) -> None:
        """
        The packet may arrive one byte at a time.
        """
        parser = StartupParser()
        seen = []
        for i in range(len(PSQL_STARTUP)):
            seen.extend(events(parser, PSQL_STARTUP[i : i + 1]))
        self.assertEqual([e.get("database") for e in seen], ["shop"])

    def test_protocol_3_2(self) -> None:
        """
        libpq 18 with max_protocol_version=3.2 (or latest) asks for 3.2; the
        version is reported and needs no negotiation.
        """
        packet = StartupMessage({"user": "u"}, PROTOCOL_3_2).encode()
        self.assertEqual(packet[4:8], b"\x00\x03\x00\x02")
        [event] = events(StartupParser(), packet)
        self.assertEqual(event.minor, 2)
        self.assertIsNone(event.negotiate())
        self.assertEqual(
            event.negotiate(latest=PROTOCOL_3_0),
            NegotiateProtocolVersion(PROTOCOL_3_0, ()),
        )

    def test_newer_minor_and_options(self) -> None:
        """
        A newer minor version (3.9999, as PostgreSQL 19 libpq sends to test
        negotiation) and unknown _pq_ options are answered with
        NegotiateProtocolVersion.
        """
        message = StartupMessage(
            [("user", "u"), ("_pq_.test", "1"), ("_pq_.ok", "x")],
            (3 << 16) | 9999,
        )
        [event] = events(StartupParser(), message.encode())
        self.assertEqual(event, message)
        self.assertEqual(event.protocol_options, ("_pq_.test", "_pq_.ok"))
        self.assertEqual(
            event.negotiate(supported_options=["_pq_.ok"]),
            NegotiateProtocolVersion(LATEST_PROTOCOL, ["_pq_.test"]),
        )

    def test_unsupported_major(self) -> None:
        """
        Protocol 2.0 or 4.0 is refused with 0A000, naming the version.
        """
        for major in (2, 4):
            message = self.assertViolation(
                startup_packet(major << 16, b"user\x00u\x00\x00"), "0A000"
            )
            self.assertIn(f"unsupported frontend protocol {major}.0", message)

    def test_bad_layout(self) -> None:
        """
        Parameters must be NUL-terminated pairs followed by one final NUL.
        """
        for body in (
            b"",
            b"user\x00u\x00",
            b"user\x00u",
            b"user",
            b"user\x00u\x00\x00\x00",
            b"\x00user\x00u\x00",
        ):
            self.assertViolation(startup_packet(PROTOCOL_3_0, body), "08P01")

    def test_short_length(self) -> None:
        """
        A length under 8 (or negative) is refused with 08P01 as soon as the
        length word is in.
        """
        for length in (0, 4, 7, -1, -(2**31)):
            message = self.assertViolation(struct.pack("!i", length), "08P01")
            self.assertIn("invalid length of startup packet", message)

    def test_oversize(self) -> None:
        """
        A packet over 10000 bytes is refused with 54000 before its body
        arrives; the limit is configurable.
        """
        self.assertViolation(
            struct.pack("!II", MAX_STARTUP_PACKET_LENGTH + 1, PROTOCOL_3_0), "54000"
        )
        self.assertViolation(struct.pack("!I", 0x7FFFFFFF), "54000")
        self.assertViolation(PSQL_STARTUP, "54000", max_length=50)
        body = b"user\x00" + b"u" * (MAX_STARTUP_PACKET_LENGTH - 15) + b"\x00\x00"
        packet = startup_packet(PROTOCOL_3_0, body)
        self.assertEqual(len(packet), MAX_STARTUP_PACKET_LENGTH)
        self.assertEqual(len(events(StartupParser(), packet)), 1)

    def test_ssl_request(self) -> None:
        """
        SSLRequest alone: nothing pipelined, encryption may begin; then the
        StartupMessage arrives decrypted through the same parser.
        """
        parser = StartupParser()
        self.assertEqual(
            events(parser, b"\x00\x00\x00\x08\x04\xd2\x16\x2f"), [SSLRequest(0)]
        )
        self.assertEqual(parser.accept_encryption(), b"S")
        [event] = events(parser, PSQL_STARTUP)
        self.assertEqual(event.get("user"), "alice")
        self.assertRaises(RuntimeError, parser.accept_encryption)

    def test_ssl_request_pipelined(self) -> None:
        """
        Bytes sent right after SSLRequest, before the answer, are reported,
        not parsed before the answer, and refused when encryption is
        accepted (CVE-2021-23214).
        """
        parser = StartupParser()
        [event] = events(parser, SSLRequest().encode() + PSQL_STARTUP)
        self.assertEqual(event, SSLRequest(pipelined=len(PSQL_STARTUP)))
        self.assertEqual(parser.buffered, len(PSQL_STARTUP))
        self.assertEqual(events(parser, b"more"), [])
        error = self.assertRaises(ProtocolViolation, parser.accept_encryption)
        self.assertEqual(error.sqlstate, "08P01")
        self.assertRaises(ProtocolViolation, parser.next_event)

    def test_ssl_refused_then_startup(self) -> None:
        """
        After answering 'N' the server reads the next packet in clear, even
        one that was pipelined.
        """
        parser = StartupParser()
        self.assertEqual(events(parser, SSLRequest().encode()), [SSLRequest()])
        self.assertEqual(parser.refuse_encryption(), b"N")
        self.assertEqual(events(parser, GSSENCRequest().encode()), [GSSENCRequest()])
        self.assertEqual(events(parser, PSQL_STARTUP), [])
        self.assertEqual(parser.refuse_encryption(), b"N")
        self.assertRaises(RuntimeError, parser.refuse_encryption)
        [event] = events(parser)
        self.assertEqual(event.get("database"), "shop")

    def test_repeated_encryption_requests(self) -> None:
        """
        One SSLRequest and one GSSENCRequest at most, and neither once
        encryption was accepted (as PostgreSQL's ProcessStartupPacket).
        """
        for first, answer, second in (
            (SSLRequest(), "refuse", SSLRequest()),
            (GSSENCRequest(), "refuse", GSSENCRequest()),
            (SSLRequest(), "accept", SSLRequest()),
            (SSLRequest(), "accept", GSSENCRequest()),
        ):
            parser = StartupParser()
            self.assertEqual(events(parser, first.encode()), [first])
            getattr(parser, f"{answer}_encryption")()
            error = self.assertRaises(
                ProtocolViolation, events, parser, second.encode()
            )
            self.assertEqual(error.sqlstate, "08P01")
            self.assertEqual(
                error.message,
                f"repeated {type(second).__name__}: encryption was already negotiated",
            )

    def test_encryption_request_after_direct_tls(self) -> None:
        parser = StartupParser(detect_tls=True)
        self.assertEqual(events(parser, b"\x16\x03\x01"), [DirectTLS()])
        parser.take_remaining()
        error = self.assertRaises(
            ProtocolViolation, events, parser, SSLRequest().encode()
        )
        self.assertIn("repeated SSLRequest", error.message)

    def test_gssenc_request(self) -> None:
        """
        GSSENCRequest is recognised, with pipelined bytes counted.
        """
        data = b"\x00\x00\x00\x08\x04\xd2\x16\x30" + b"abc"
        parser = StartupParser()
        self.assertEqual(events(parser, data), [GSSENCRequest(pipelined=3)])
        error = self.assertRaises(ProtocolViolation, parser.accept_encryption)
        self.assertEqual(error.message, "received unencrypted data after GSSENCRequest")

    def test_encryption_request_length(self) -> None:
        """
        SSLRequest and GSSENCRequest are exactly 8 bytes.
        """
        for code in (80877103, 80877104):
            self.assertViolation(startup_packet(code, b"\x00" * 4), "08P01")

    def test_cancel_request(self) -> None:
        """
        CancelRequest with the 4-byte key of protocol 3.0 and the longer
        keys of 3.2 (up to 256 bytes).
        """
        packet = b"\x00\x00\x00\x10\x04\xd2\x16\x2e\x00\x00\x30\x39\xde\xad\xbe\xef"
        parser = StartupParser()
        [event] = events(parser, packet)
        self.assertEqual(event, CancelRequest(12345, b"\xde\xad\xbe\xef"))
        self.assertTrue(parser.done)
        self.assertEqual(event.encode(), packet)
        for size in (32, 256):
            secret = bytes(range(size % 256)) if size < 256 else b"k" * 256
            request = CancelRequest(7, secret)
            self.assertEqual(events(StartupParser(), request.encode()), [request])

    def test_cancel_key_length(self) -> None:
        """
        A cancel key under 4 or over 256 bytes is refused.
        """
        for size in (0, 3, 257):
            body = struct.pack("!I", 1) + b"k" * size
            self.assertViolation(startup_packet(80877102, body), "08P01")
            self.assertRaises(ValueError, CancelRequest(1, b"k" * size).encode)

    def test_direct_tls(self) -> None:
        """
        A TLS ClientHello as first bytes (sslnegotiation=direct) is reported
        without consuming anything; after the hand-off the decrypted
        StartupMessage is parsed.
        """
        parser = StartupParser()
        self.assertEqual(events(parser, TLS_CLIENT_HELLO[:1]), [DirectTLS()])
        self.assertEqual(events(parser, TLS_CLIENT_HELLO[1:]), [])
        self.assertEqual(parser.buffered, len(TLS_CLIENT_HELLO))
        self.assertEqual(parser.take_remaining(), TLS_CLIENT_HELLO)
        [event] = events(parser, PSQL_STARTUP)
        self.assertEqual(event.get("user"), "alice")

    def test_direct_tls_only_first(self) -> None:
        """
        0x16 is a ClientHello only as the connection's first byte, and only
        when detection is on; elsewhere it reads as a huge length.
        """
        parser = StartupParser()
        self.assertEqual(events(parser, SSLRequest().encode()), [SSLRequest()])
        parser.refuse_encryption()
        error = self.assertRaises(ProtocolViolation, events, parser, TLS_CLIENT_HELLO)
        self.assertEqual(error.sqlstate, "54000")
        self.assertViolation(TLS_CLIENT_HELLO, "54000", detect_tls=False)

    def test_encoding(self) -> None:
        """
        Parameters that are not UTF-8 decode losslessly (surrogateescape) or
        with the encoding given.
        """
        packet = startup_packet(PROTOCOL_3_0, b"user\x00J\xf6rg\x00\x00")
        [event] = events(StartupParser(), packet)
        self.assertEqual(event.get("user"), "J\udcf6rg")
        self.assertEqual(event.encode(), packet)
        [event] = events(StartupParser(encoding="latin-1"), packet)
        self.assertEqual(event.get("user"), "Jörg")

    @FUZZ
    @given(st.data())
    def test_fuzz(self, data: st.DataObject) -> None:
        """
        An optional encryption request, then a startup packet or a cancel
        request (written from the protocol documentation), then random
        bytes, split at random points: the parser reports exactly those
        packets and hands over exactly the bytes that followed.
        """
        request = data.draw(st.sampled_from([None, 80877103, 80877104]))
        if data.draw(st.booleans()):
            params = data.draw(
                st.dictionaries(
                    st.text("abcdefghij_", min_size=1, max_size=8),
                    st.text(
                        st.characters(blacklist_characters="\0", codec="utf-8"),
                        max_size=10,
                    ),
                    max_size=4,
                )
            )
            params = {"user": "u", **params}
            payload = b"".join(
                k.encode() + b"\0" + v.encode() + b"\0" for k, v in params.items()
            )
            final = startup_packet(196608, payload + b"\0")
            final_type = StartupMessage
        else:
            key = data.draw(st.binary(min_size=4, max_size=256))
            final = startup_packet(80877102, b"\0\0\0\x07" + key)
            final_type = CancelRequest
        tail = data.draw(st.binary(max_size=30))
        packets = [*([startup_packet(request)] if request else []), final]
        stream = b"".join([*packets, tail])
        cuts = data.draw(st.lists(st.integers(0, len(stream)), max_size=6))
        bounds = [0, *sorted(cuts), len(stream)]

        parser = StartupParser()
        got = []
        fed = 0
        for a, b in itertools.pairwise(bounds):
            if parser.done:
                break
            fed = b
            new = events(parser, stream[a:b])
            while new:
                got.extend(new)
                if isinstance(new[-1], (SSLRequest, GSSENCRequest)):
                    parser.refuse_encryption()
                new = events(parser)
        rest = parser.take_remaining() + stream[fed:]
        kinds = {None: [], 80877103: [SSLRequest], 80877104: [GSSENCRequest]}[request]
        self.assertEqual([type(e) for e in got], [*kinds, final_type])
        self.assertEqual([e.encode() for e in got], packets)
        self.assertTrue(parser.done)
        self.assertEqual(rest, tail)


class EncryptionResponseTests(SynchronousTestCase):
    """
    The one-byte answer the upstream sends to SSLRequest/GSSENCRequest.
    """

    def test_answers(self) -> None:
        """
        'S', 'N' and 'E' are decoded; trailing bytes are counted.
        """
        self.assertIsNone(decode_encryption_response(b""))
        self.assertEqual(decode_encryption_response(b"S"), EncryptionResponse("S", 0))
        self.assertTrue(decode_encryption_response(b"S").accepted)
        self.assertEqual(decode_encryption_response(b"S\x16\x03").trailing, 2)
        self.assertFalse(decode_encryption_response(b"N").accepted)
        error = decode_encryption_response(b"E\x00\x00\x00\x10")
        self.assertEqual((error.answer, error.accepted), ("E", False))

    def test_garbage(self) -> None:
        """
        Anything else is a protocol violation.
        """
        self.assertRaises(ProtocolViolation, decode_encryption_response, b"R")


FRONTEND_MESSAGES = [
    Query("SELECT 1"),
    Query(""),
    Parse("s1", "SELECT $1, $2", [23, 4294967295]),
    Parse("", "BEGIN"),
    Bind("p1", "s1", [1], [b"\x00\x00\x00\x01", None], [1, 0]),
    Bind("", "", [], [], []),
    Execute("p1", 100),
    Execute(),
    Describe("S", "s1"),
    Describe("P"),
    Close("S", "s1"),
    Close("P", "p"),
    Sync(),
    Flush(),
    Terminate(),
    CopyData(b"1\tabc\n"),
    CopyDone(),
    CopyFail("client gave up"),
    FunctionCall(1598, [0], [b"42", None], 1),
    AuthResponse(b"secret\x00"),
]

BACKEND_MESSAGES = [
    AuthenticationOk(),
    AuthenticationKerberosV5(),
    AuthenticationCleartextPassword(),
    AuthenticationMD5Password(b"\x01\x02\x03\x04"),
    AuthenticationGSS(),
    AuthenticationGSSContinue(b"token"),
    AuthenticationSSPI(),
    AuthenticationSASL(["SCRAM-SHA-256-PLUS", "SCRAM-SHA-256"]),
    AuthenticationSASLContinue(b"r=abc,s=c2FsdA==,i=4096"),
    AuthenticationSASLFinal(b"v=xyz"),
    ParameterStatus("server_version", "17.2"),
    BackendKeyData(4242, b"\x01\x02\x03\x04"),
    BackendKeyData(4242, bytes(32)),
    ReadyForQuery("I"),
    ReadyForQuery("T"),
    ReadyForQuery("E"),
    RowDescription(
        [
            FieldDescription("id", 16384, 1, 23, 4, -1, 0),
            FieldDescription("name", 16384, 2, 1043, -1, 68, 1),
        ]
    ),
    RowDescription([]),
    DataRow([b"1", None, b"", b"\x00\xff"]),
    DataRow([]),
    CommandComplete("INSERT 0 1"),
    EmptyQueryResponse(),
    ErrorResponse.build("ERROR", "42P01", 'relation "x" does not exist', position=15),
    NoticeResponse.build("WARNING", "01000", "careful", detail="d", hint="h"),
    NotificationResponse(99, "jobs", "payload"),
    ParseComplete(),
    BindComplete(),
    CloseComplete(),
    NoData(),
    PortalSuspended(),
    ParameterDescription([23, 25]),
    CopyInResponse(0, [0, 0]),
    CopyOutResponse(1, [1]),
    CopyBothResponse(0, []),
    CopyData(b"row"),
    CopyDone(),
    NegotiateProtocolVersion(PROTOCOL_3_0, ["_pq_.x", "_pq_.y"]),
    FunctionCallResponse(b"43"),
    FunctionCallResponse(None),
]


class MessageTests(SynchronousTestCase):
    """
    Typed messages decode known bytes and survive encode then decode.
    """

    def test_frontend_round_trip(self) -> None:
        """
        Every frontend message decodes back to itself.
        """
        reader = FrameReader.frontend()
        for message in FRONTEND_MESSAGES:
            data = message.encode()
            [(t, body)] = reader.feed_messages(data)
            self.assertEqual(t, message.TYPE)
            self.assertEqual(decode_frontend(t, body), message)

    def test_backend_round_trip(self) -> None:
        """
        Every backend message decodes back to itself.
        """
        reader = FrameReader.backend()
        for message in BACKEND_MESSAGES:
            [(t, body)] = reader.feed_messages(message.encode())
            self.assertEqual(decode_backend(t, body), message)

    def test_auth_responses(self) -> None:
        """
        'p' bodies decode according to the authentication in progress.
        """
        messages = [
            (PasswordMessage, PasswordMessage("eyJhbGciOi.payload.sig")),
            (SASLInitialResponse, SASLInitialResponse("SCRAM-SHA-256", b"n,,n=,r=x")),
            (SASLInitialResponse, SASLInitialResponse("SCRAM-SHA-256", None)),
            (SASLResponse, SASLResponse(b"c=biws,r=x,p=y")),
            (GSSResponse, GSSResponse(b"\x60\x82token")),
        ]
        for kind, message in messages:
            data = message.encode()
            self.assertEqual(data[:1], b"p")
            generic = decode_frontend(data[0], data[5:])
            self.assertEqual(generic, AuthResponse(data[5:]))
            self.assertEqual(kind.decode(generic.data), message)
        self.assertEqual(
            PasswordMessage("secret").encode(), b"p\x00\x00\x00\x0bsecret\x00"
        )
        self.assertNotIn("secret", repr(PasswordMessage("secret")))
        self.assertEqual(
            SASLInitialResponse("SCRAM-SHA-256", b"n,,").encode(),
            b"p\x00\x00\x00\x19SCRAM-SHA-256\x00\x00\x00\x00\x03n,,",
        )

    def test_known_frontend_bytes(self) -> None:
        """
        Hand-made captures of psql and pgbench decode as expected.
        """
        self.assertEqual(
            decode_frontend(PSQL_QUERY[0], PSQL_QUERY[5:]), Query("SELECT 1")
        )
        pairs = FrameReader.frontend().feed_messages(EXTENDED)
        decoded = [decode_frontend(t, b) for t, b in pairs]
        self.assertEqual(
            decoded,
            [
                Parse("", "SELECT $1", [23]),
                Bind("", "", [0], [b"42"], []),
                Describe("P", ""),
                Execute("", 0),
                Sync(),
            ],
        )
        self.assertEqual(b"".join(m.encode() for m in decoded), EXTENDED)

    def test_known_backend_bytes(self) -> None:
        """
        A server's answer to SELECT 1, an authentication exchange and an
        error decode as expected.
        """
        pairs = FrameReader.backend().feed_messages(SERVER_ANSWER)
        decoded = [decode_backend(t, b) for t, b in pairs]
        self.assertEqual(
            decoded,
            [
                RowDescription([FieldDescription("?column?", 0, 0, 23, 4, -1, 0)]),
                DataRow([b"1"]),
                CommandComplete("SELECT 1"),
                ReadyForQuery("I"),
            ],
        )
        self.assertEqual(b"".join(m.encode() for m in decoded), SERVER_ANSWER)
        known = {
            b"R\x00\x00\x00\x08\x00\x00\x00\x00": AuthenticationOk(),
            b"R\x00\x00\x00\x08\x00\x00\x00\x03": AuthenticationCleartextPassword(),
            b"R\x00\x00\x00\x0c\x00\x00\x00\x05abcd": AuthenticationMD5Password(
                b"abcd"
            ),
            b"R\x00\x00\x00\x17\x00\x00\x00\x0aSCRAM-SHA-256\x00\x00": (
                AuthenticationSASL(["SCRAM-SHA-256"])
            ),
            b"S\x00\x00\x00\x19client_encoding\x00UTF8\x00": ParameterStatus(
                "client_encoding", "UTF8"
            ),
            b"K\x00\x00\x00\x0c\x00\x00\x30\x39\xde\xad\xbe\xef": BackendKeyData(
                12345, b"\xde\xad\xbe\xef"
            ),
            b"v\x00\x00\x00\x0c\x00\x03\x00\x00\x00\x00\x00\x00": (
                NegotiateProtocolVersion(PROTOCOL_3_0, [])
            ),
        }
        for data, message in known.items():
            self.assertEqual(decode_backend(data[0], data[5:]), message)
            self.assertEqual(message.encode(), data)

    def test_error_fields(self) -> None:
        """
        ErrorResponse fields read by name; unknown codes are kept.
        """
        body = (
            b"SFATAL\x00VFATAL\x00C28P01\x00"
            b'Mpassword authentication failed for user "x"\x00'
            b"Fauth.c\x00L326\x00Rauth_failed\x00Zfuture\x00\x00"
        )
        error = decode_backend(BackendType.ERROR_RESPONSE, body)
        self.assertIsInstance(error, ErrorResponse)
        self.assertEqual(error.severity, "FATAL")
        self.assertEqual(error.severity_nonlocalized, "FATAL")
        self.assertEqual(error.sqlstate, "28P01")
        self.assertEqual(error.message, 'password authentication failed for user "x"')
        self.assertEqual(
            (error.file, error.line, error.routine), ("auth.c", "326", "auth_failed")
        )
        self.assertIsNone(error.hint)
        self.assertEqual(error.get("Z"), "future")
        self.assertEqual(error.encode()[5:], body)

    def test_error_build(self) -> None:
        """
        build() fills S, V, C, M and the optional fields in order.
        """
        error = ErrorResponse.build(
            "ERROR",
            "42501",
            "denied by policy",
            detail="rule 3",
            hint="ask",
            table_name="t",
        )
        self.assertEqual(
            error.fields,
            (
                ("S", "ERROR"),
                ("V", "ERROR"),
                ("C", "42501"),
                ("M", "denied by policy"),
                ("D", "rule 3"),
                ("H", "ask"),
                ("t", "t"),
            ),
        )
        self.assertRaises(TypeError, ErrorResponse.build, "ERROR", "x", "y", bogus=1)

    def test_error_field_declarations(self) -> None:
        """
        The field properties declared for type checkers on the errors' and
        notices' base are exactly the ones set from the field names.
        """
        import ast
        import inspect

        from gatehouse.protocols.postgres.codec import backend

        tree = ast.parse(inspect.getsource(backend._Fields))
        declared = {
            node.target.id
            for node in ast.walk(tree)
            if isinstance(node, ast.AnnAssign)
            and isinstance(node.target, ast.Name)
            and node.target.id != "fields"
        }
        self.assertEqual(declared, set(backend._FIELD_NAMES))
        for name in declared:
            self.assertIsInstance(getattr(backend._Fields, name), property)
        violation = ProtocolViolation("08P01", "bad")
        self.assertEqual(
            ErrorResponse.for_violation(violation),
            ErrorResponse.build("FATAL", "08P01", "bad"),
        )
        self.assertIn("08P01", str(violation))

    def test_nul_refused(self) -> None:
        """
        Encoders refuse a NUL inside a string instead of truncating it (which
        would let the rest be read as further fields).
        """
        for message in (
            Query("SELECT 1\x00; DROP TABLE x"),
            ErrorResponse.build("ERROR", "XX000", "a\x00Mforged"),
            ParameterStatus("a\x00", "b"),
            StartupMessage({"user": "a\x00database"}),
            PasswordMessage("pw\x00"),
        ):
            self.assertRaises(ValueError, message.encode)

    def test_text_encoding(self) -> None:
        """
        Non-UTF-8 bytes survive decode and encode exactly; another client
        encoding can be named.
        """
        raw = b"SELECT '\xe9t\xe9'\x00"
        query = decode_frontend(FrontendType.QUERY, raw)
        self.assertEqual(query.sql, "SELECT '\udce9t\udce9'")
        self.assertEqual(query.encode()[5:], raw)
        latin = decode_frontend(FrontendType.QUERY, raw, python_encoding("LATIN1"))
        self.assertEqual(latin.sql, "SELECT 'été'")
        self.assertEqual(latin.encode("latin-1")[5:], raw)
        self.assertEqual(python_encoding("UTF8"), "utf-8")
        self.assertEqual(python_encoding("utf-8"), "utf-8")
        self.assertEqual(python_encoding("WIN1252"), "cp1252")
        self.assertEqual(python_encoding("MULE_INTERNAL"), "utf-8")

    def test_value_checks(self) -> None:
        """
        Constructors check what the wire cannot carry.
        """
        self.assertRaises(ValueError, Describe, "X", "")
        self.assertRaises(ValueError, ReadyForQuery, "IT")
        self.assertRaises(ValueError, AuthenticationMD5Password, b"abc")
        self.assertRaises(ValueError, BackendKeyData(1, b"abc").encode)
        self.assertRaises(ValueError, AuthenticationSASL([""]).encode)
        self.assertRaises(ValueError, StartupMessage({"": "x"}).encode)
        self.assertRaises(
            ValueError, StartupMessage({"user": "u" * MAX_STARTUP_PACKET_LENGTH}).encode
        )

    def assertMalformed(self, decode, body: bytes) -> None:
        error = self.assertRaises(ProtocolViolation, decode, body)
        self.assertEqual(error.sqlstate, "08P01")

    def test_malformed_frontend(self) -> None:
        """
        Truncated fields, missing terminators, counts beyond the body,
        trailing bytes and bad kinds are protocol violations.
        """
        cases = {
            Query: [b"", b"SELECT 1", b"SELECT\x001\x00"],
            Parse: [
                b"\x00SELECT 1\x00",
                b"\x00SELECT\x00\x00\x02\x00\x00\x00\x17",
                b"\x00x\x00\x00\x00!",
            ],
            Bind: [
                b"\x00\x00\x00\x00\x00\x01\x00\x00\x00\x05ab",
                b"\x00\x00\x00\x00\x00\x01\xff\xff\xff\xfe\x00\x00",
                b"\x00\x00\x00\x02\x00\x00\x00\x00\x00\x01\x00\x00\x00\x00\x00\x00",
                b"\x00\x00\x00\x00\x00\x00",
            ],
            Execute: [b"\x00", b"p\x00\x00\x00\x00\x00\x00"],
            Describe: [b"X\x00", b"S", b""],
            Close: [b"Pname"],
            Sync: [b"x"],
            CopyFail: [b"no terminator"],
            FunctionCall: [b"\x00\x00\x00\x01\x00\x02\x00\x00\x00\x00\x00\x01"],
            PasswordMessage: [b"pw", b"pw\x00x"],
            SASLInitialResponse: [b"SCRAM\x00\x00\x00\x00\x09abc", b"SCRAM\x00"],
        }
        for kind, bodies in cases.items():
            for body in bodies:
                self.assertMalformed(kind.decode, body)
        self.assertRaises(ProtocolViolation, decode_frontend, ord("Z"), b"I")

    def test_malformed_backend(self) -> None:
        """
        The same for backend messages, including unknown subtypes.
        """
        cases = {
            BackendType.AUTHENTICATION: [
                b"",
                b"\x00\x00\x00\x06",
                b"\x00\x00\x00\x00\x00",
                b"\x00\x00\x00\x05abc",
                b"\x00\x00\x00\x0aSCRAM\x00",
            ],
            BackendType.PARAMETER_STATUS: [b"a\x00", b"a\x00b\x00c"],
            BackendType.BACKEND_KEY_DATA: [
                b"\x00\x00\x00\x01abc",
                b"\x00\x00",
                b"\x00\x00\x00\x01" + b"k" * 257,
            ],
            BackendType.READY_FOR_QUERY: [b"", b"X", b"II"],
            BackendType.ROW_DESCRIPTION: [b"\x00\x01a\x00\x00\x00", b"\x00\x02"],
            BackendType.DATA_ROW: [
                b"\x00",
                b"\x00\x01\x00\x00",
                b"\x00\x01\x00\x00\x00\x05abc",
                b"\x00\x01\xff\xff\xff\xfe",
                b"\x00\x00x",
                b"\xff\xff",
            ],
            BackendType.ERROR_RESPONSE: [b"SERROR\x00", b"SERROR", b"\x00x"],
            BackendType.NOTIFICATION_RESPONSE: [b"\x00\x00\x00\x01c\x00"],
            BackendType.PARAMETER_DESCRIPTION: [b"\x00\x02\x00\x00\x00\x17"],
            BackendType.COPY_IN_RESPONSE: [b"\x00\x00\x01"],
            BackendType.NEGOTIATE_PROTOCOL_VERSION: [
                b"\x00\x03\x00\x00\xff\xff\xff\xff",
                b"\x00\x03\x00\x00\x7f\xff\xff\xffa\x00",
            ],
            BackendType.FUNCTION_CALL_RESPONSE: [b"\x00\x00\x00\x02a"],
            BackendType.PARSE_COMPLETE: [b"\x00"],
        }
        for t, bodies in cases.items():
            for body in bodies:
                self.assertMalformed(lambda b, t=t: decode_backend(t, b), body)
        self.assertRaises(ProtocolViolation, decode_backend, ord("Q"), b"x\x00")
        self.assertMalformed(AuthenticationOk.decode, b"\x00\x00\x00\x03")

    @FUZZ
    @given(
        st.booleans(),
        st.sampled_from(sorted(set(b"QPBEDCSHXpdcfFRKZTIN123nstGWvVA"))),
        st.binary(max_size=48),
    )
    def test_fuzz_decoders(self, frontend: bool, t: int, body: bytes) -> None:
        """
        Random bodies decode to a message or raise ProtocolViolation.
        """
        decode = decode_frontend if frontend else decode_backend
        decoders = [decode]
        if frontend and t == ord("p"):
            decoders = [
                PasswordMessage.decode,
                SASLInitialResponse.decode,
                SASLResponse.decode,
                GSSResponse.decode,
            ]
        for decoder in decoders:
            try:
                message = decoder(t, body) if decoder is decode else decoder(body)
            except ProtocolViolation as e:
                self.assertEqual(e.sqlstate, "08P01")
            else:
                # What decodes re-encodes to the same bytes.
                self.assertEqual(message.encode()[5:], body)

    @FUZZ
    @given(st.lists(st.none() | st.binary(max_size=20), max_size=20))
    def test_data_row_values(self, values: list) -> None:
        """
        DataRow carries any values, NULLs included, unchanged.
        """
        row = DataRow(values)
        data = row.encode()
        self.assertEqual(decode_backend(data[0], data[5:]), row)

    @FUZZ
    @given(
        st.text(max_size=10).filter(lambda s: "\x00" not in s),
        st.lists(st.none() | st.binary(max_size=10), max_size=5),
    )
    def test_bind_values(self, name: str, params: list) -> None:
        """
        Bind carries any names and parameter values unchanged.
        """
        bind = Bind(name, name, [1] if params else [], params, [0])
        data = bind.encode()
        self.assertEqual(decode_frontend(data[0], data[5:]), bind)


STARTUP_PACKETS = [
    SSLRequest().encode(),
    GSSENCRequest().encode(),
    CancelRequest(1, b"abcd").encode(),
    CancelRequest(1, bytes(32)).encode(),
    PSQL_STARTUP,
    StartupMessage({"user": "u", "_pq_.x": "1"}, PROTOCOL_3_2).encode(),
]
ALL_MESSAGES = [(True, m.encode()) for m in FRONTEND_MESSAGES] + [
    (False, m.encode()) for m in BACKEND_MESSAGES
]


def mutate(data: bytes, position: int, value: int, cut: int) -> bytes:
    """
    Overwrite one byte of C{data} and drop its last C{cut} bytes.
    """
    if data:
        position %= len(data)
        data = data[:position] + bytes([value]) + data[position + 1 :]
    return data[: max(0, len(data) - cut)]


class MutationFuzzTests(SynchronousTestCase):
    """
    Valid traffic with one byte changed and its tail cut: the codec yields
    events or L{ProtocolViolation}, nothing else, and what decodes
    re-encodes to the same bytes.
    """

    @FUZZ
    @given(
        st.lists(st.sampled_from(range(len(FRONTEND_MESSAGES))), max_size=8),
        st.integers(0, 10**6),
        st.integers(0, 255),
        st.lists(st.integers(0, 300), max_size=6),
    )
    def test_frames(self, picks, position, value, cuts) -> None:
        """
        A frontend stream with one byte changed, split anywhere.
        """
        stream = b"".join(FRONTEND_MESSAGES[i].encode() for i in picks)
        stream = mutate(stream, position, value, 0)
        bounds = [0, *sorted(c for c in cuts if c < len(stream)), len(stream)]
        reader = FrameReader.frontend()
        try:
            frames, out = frames_of(
                reader, [stream[a:b] for a, b in itertools.pairwise(bounds)]
            )
        except ProtocolViolation as e:
            self.assertIn(e.sqlstate, ("08P01", "54000"))
        else:
            self.assertEqual(out, stream[: len(out)])
            for t, _, _, message in frames:
                try:
                    decoded = decode_frontend(t, message[5:])
                except ProtocolViolation as e:
                    self.assertEqual(e.sqlstate, "08P01")
                else:
                    self.assertEqual(decoded.encode(), message)

    @FUZZ
    @given(
        st.lists(st.sampled_from(range(len(STARTUP_PACKETS))), min_size=1, max_size=3),
        st.integers(0, 10**6),
        st.integers(0, 255),
        st.integers(0, 3),
        st.booleans(),
    )
    def test_startup(self, picks, position, value, cut, accept) -> None:
        """
        A startup exchange with one byte changed.
        """
        stream = b"".join(STARTUP_PACKETS[i] for i in picks)
        stream = mutate(stream, position, value, cut)
        parser = StartupParser()
        try:
            for event in events(parser, stream):
                if isinstance(event, (SSLRequest, GSSENCRequest)):
                    if accept:
                        parser.accept_encryption()
                    else:
                        parser.refuse_encryption()
                    events(parser)
        except ProtocolViolation as e:
            self.assertIn(e.sqlstate, ("08P01", "54000", "0A000"))

    @FUZZ
    @given(
        st.sampled_from(range(len(ALL_MESSAGES))),
        st.integers(0, 10**6),
        st.integers(0, 255),
        st.integers(0, 3),
    )
    def test_decoders(self, pick, position, value, cut) -> None:
        """
        One message body with one byte changed and its tail cut.
        """
        frontend, data = ALL_MESSAGES[pick]
        body = mutate(data[5:], position, value, cut)
        decode = decode_frontend if frontend else decode_backend
        try:
            message = decode(data[0], body)
        except ProtocolViolation as e:
            self.assertEqual(e.sqlstate, "08P01")
        else:
            self.assertEqual(message.encode()[5:], body)


class PortalNameTests(SynchronousTestCase):
    """Raw portal names for relays that only compare them."""

    def test_described_and_executed(self) -> None:
        describe = codec.Describe("P", "p1").encode()[5:]
        execute = codec.Execute("p1", 10).encode()[5:]
        self.assertEqual(codec.portal_described(describe), b"p1\0")
        self.assertEqual(codec.portal_executed(execute), b"p1\0")
        self.assertIsNone(
            codec.portal_described(codec.Describe("S", "p1").encode()[5:])
        )
        self.assertEqual(
            codec.describe_portal(b"p1\0"), codec.Describe("P", "p1").encode()
        )
        self.assertEqual(codec.describe_portal(b"\0"), codec.Describe("P", "").encode())
