"""
Test helpers: write synthetic session recordings synchronously, exactly as
docs/recording-format.md lays them out, and take them apart again.

Typical use::

    signing = make_signing()
    written = write_session(self.mktemp(), signing, [b"hello", b"world"],
                            seal_every=1)
    report = verify_session(written.directory, signing.anchors)
"""

from __future__ import annotations

import hashlib
import os
import random
import uuid
from collections.abc import Iterable, Sequence

import attrs
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import settings
from hypothesis import strategies as st
from twisted.internet.task import Clock

from gatehouse.recording import keys
from gatehouse.recording.encoder import (
    SealedSegment,
    SessionEncoder,
    complete_seal,
    frame_block,
)
from gatehouse.recording.format import (
    BLOCK_HEADER,
    BLOCK_TAG,
    Direction,
    Record,
    RecordType,
    SealStatement,
    SegmentHeader,
    add_block_to_digest,
    encode_block_header,
    encode_seal,
    parse_seal,
    segment_filename,
    sha256,
    split_records,
)
from gatehouse.recording.keys import (
    EpochKey,
    TrustAnchors,
    current_key,
    generate_root_key,
    issue_epoch_keys,
    raw_public,
)
from gatehouse.recording.reader import SegmentScanner, session_directory
from gatehouse.recording.recorder import SegmentRecorder, synchronous_executor

NS = 1_000_000_000
MINUTE = 60 * NS
#: A fixed wall time (2023-11-14T22:13:20Z) that tests start from.
T0 = 1_700_000_000 * NS


class FakeClock:
    """Wall and mono time (ns) that move only when told, together."""

    def __init__(self, wall: int = T0 + NS, mono: int = 0):
        self.wall = wall
        self.mono = mono

    def advance(self, ns: int) -> None:
        """Let C{ns} nanoseconds pass."""
        self.wall += ns
        self.mono += ns


@attrs.frozen
class Signing:
    """A root key, the anchors that trust it, and epoch keys for one gateway."""

    root: Ed25519PrivateKey
    anchors: TrustAnchors
    epoch_keys: tuple[EpochKey, ...]
    gateway_id: str

    def epoch_key_at(self, wall: int) -> EpochKey:
        """The epoch key whose window holds C{wall}."""
        key = current_key(self.epoch_keys, wall)
        if key is None:
            raise ValueError("no epoch key for that time")
        return key


def make_signing(
    gateway_id: str = "gw-test",
    start: int = T0,
    period: int = 15 * MINUTE,
    count: int = 4,
    root: Ed25519PrivateKey | None = None,
) -> Signing:
    """A fresh root key and C{count} epoch keys from C{start} on."""
    root = root or generate_root_key()
    keys = issue_epoch_keys(root, gateway_id, start, period, count)
    return Signing(
        root, TrustAnchors.from_public_keys([raw_public(root)]), tuple(keys), gateway_id
    )


def clock_recorder(
    directory: str, gateway_id: str, clock: Clock, now: float
) -> SegmentRecorder:
    """
    A segment recorder timed by C{clock} (a L{Clock} at C{now}), writing in
    the calling thread, with signing keys valid for 15 minutes around it.
    """
    root = keys.generate_root_key()
    epoch = keys.issue_epoch_keys(
        root, gateway_id, int((now - 10) * 1_000_000_000), 900 * 1_000_000_000, 4
    )
    return SegmentRecorder(
        directory,
        gateway_id,
        lambda wall: keys.current_key(epoch, wall),
        clock,
        synchronous_executor,
        monotonic_ns=lambda: int(clock.seconds() * 1_000_000_000),
    )


def session_id_at(wall: int) -> uuid.UUID:
    """
    A UUIDv7 whose time is C{wall} (ns), unlike L{gatehouse.ids.new_session_id},
    which keeps ids of one process ordered and so drifts under fake clocks.
    """
    ms = wall // 1_000_000
    rand = int.from_bytes(os.urandom(10), "big")
    value = (ms << 80) | (0x7 << 76) | ((rand >> 62) & 0xFFF) << 64
    value |= (0b10 << 62) | (rand & ((1 << 62) - 1))
    return uuid.UUID(int=value)


@attrs.frozen
class Rec:
    """A record to write; C{delay} is how long before it the clock moves."""

    payload: bytes = b""
    type: int = RecordType.DATA
    direction: int = Direction.CLIENT_TO_GATEWAY
    channel: int = 0
    delay: int = 1_000_000


@attrs.frozen
class WrittenSession:
    """
    What L{write_session} wrote.

    @ivar records: every record as stored (seq and mono filled in).
    @ivar paths: the segment files, in order.
    @ivar seals: what each seal produced, in order.
    @ivar sealed_records: how many records seals cover.
    @ivar encoder: the session's encoder; still open (with the open
        segment's signing key) unless C{closed}.
    """

    directory: str
    session_id: uuid.UUID
    records: tuple[Record, ...]
    paths: tuple[str, ...]
    seals: tuple[SealedSegment, ...]
    sealed_records: int
    closed: bool
    encoder: SessionEncoder
    epoch_key: EpochKey
    seal_interval: int


def write_session(
    root: str,
    signing: Signing,
    records: Sequence[Rec | bytes],
    *,
    seal_every: int | None = None,
    seal_after: Iterable[int] = (),
    block_every: int = 16,
    block_after: Iterable[int] = (),
    close: bool = True,
    clock: FakeClock | None = None,
    session_id: uuid.UUID | None = None,
    seal_interval: int = 5 * MINUTE,
    epoch_key: EpochKey | None = None,
    gateway_id: str | None = None,
    heartbeat: bool = True,
    directory: str | None = None,
) -> WrittenSession:
    """
    Record a session into C{<root>/<YYYY-MM-DD>/<session-id>/}, as the
    recorder would: each seal is completed over the stored bytes of its
    segment's blocks, the next segment's header is written as soon as a seal
    is, records after the last seal of an unclosed session are left in
    unsealed blocks.

    @param records: L{Rec}s, or bytes for client-to-gateway DATA records.
    @param seal_every: seal after every this many records.
    @param seal_after: seal after the records with these (0-based) indices;
        an index given twice leaves an empty (heartbeat) segment.
    @param block_every: cut a block after every this many records.
    @param block_after: also cut a block after these indices.
    @param close: end with a final seal; otherwise leave the end unsealed.
    @param heartbeat: seal whenever C{seal_interval} passes, as the recorder
        does, so that every seal is in its window.
    @param directory: write here instead of the directory the id implies.
    """
    clock = clock or FakeClock()
    gateway_id = gateway_id or signing.gateway_id
    session_id = session_id or session_id_at(clock.wall)
    epoch_key = epoch_key or signing.epoch_key_at(clock.wall)
    directory = directory or session_directory(root, session_id)
    os.makedirs(directory, exist_ok=True)
    encoder = SessionEncoder(
        session_id.bytes, gateway_id, epoch_key, clock.wall, seal_interval, clock.mono
    )
    seal_points: dict[int, int] = {}
    for i in seal_after:
        seal_points[i] = seal_points.get(i, 0) + 1
    if seal_every:
        for i in range(seal_every - 1, len(records), seal_every):
            seal_points[i] = seal_points.get(i, 0) + 1
    cuts = set(block_after)
    paths: list[str] = []
    seals: list[SealedSegment] = []
    written: list[Record] = []
    state = {"file": None, "stored": None, "prev_link": None}

    def open_segment(header: SegmentHeader) -> None:
        path = os.path.join(directory, segment_filename(header.segment_index))
        paths.append(path)
        state["file"] = open(path, "wb")
        state["file"].write(header.to_bytes())
        state["stored"] = hashlib.sha256()
        state["prev_link"] = header.prev_link

    def flush_block() -> None:
        block = encoder.take_block()
        if block is not None:
            data = frame_block(block)
            state["file"].write(data)
            size = BLOCK_HEADER.size
            add_block_to_digest(state["stored"], data[:size], data[size:])

    def seal(wall: int, mono: int, final: bool) -> None:
        flush_block()
        pending = encoder.seal(wall, mono, final=final)
        sealed = complete_seal(pending, state["stored"].digest(), state["prev_link"])
        state["file"].write(sealed.seal)
        state["file"].close()
        seals.append(sealed)
        if sealed.next_header is not None:
            open_segment(sealed.next_header)

    open_segment(encoder.header)
    for i, rec in enumerate(records):
        if isinstance(rec, bytes):
            rec = Rec(rec)
        clock.advance(rec.delay)
        while heartbeat and clock.wall > encoder.header.wall_start + seal_interval:
            header = encoder.header
            seal(
                header.wall_start + seal_interval,
                header.mono_start + seal_interval,
                final=False,
            )
        seq = encoder.add(rec.type, rec.direction, rec.channel, clock.mono, rec.payload)
        written.append(
            Record(seq, rec.type, rec.direction, rec.channel, clock.mono, rec.payload)
        )
        if encoder.pending_bytes and ((i + 1) % block_every == 0 or i in cuts):
            flush_block()
        for _ in range(seal_points.get(i, 0)):
            seal(clock.wall, clock.mono, final=False)
    if close:
        seal(clock.wall, clock.mono, final=True)
    else:
        flush_block()
        state["file"].close()
    sealed_records = sum(s.statement.record_count for s in seals)
    return WrittenSession(
        directory=directory,
        session_id=session_id,
        records=tuple(written),
        paths=tuple(paths),
        seals=tuple(seals),
        sealed_records=sealed_records,
        closed=close,
        encoder=encoder,
        epoch_key=epoch_key,
        seal_interval=seal_interval,
    )


# --- hypothesis ---------------------------------------------------------------

#: GATEHOUSE_EXAMPLES=2000 for a longer hunt.
EXAMPLES = settings(
    max_examples=int(os.environ.get("GATEHOUSE_EXAMPLES", "40")),
    deadline=None,
    database=None,
)


def _payload(size: int, kind: str, seed: int) -> bytes:
    rng = random.Random(seed)
    if kind == "random":
        return rng.randbytes(size)
    if kind == "text":
        words = [b"SELECT", b"id", b"FROM", b"users", b"WHERE", b"42", b"\n", b"ok"]
        out = bytearray()
        while len(out) < size:
            out += rng.choice(words) + b" "
        return bytes(out[:size])
    return bytes(size)


@st.composite
def session_records(draw, min_size: int = 0, max_size: int = 24) -> list[Rec]:
    """Records of random shape: sizes from 0 to past 64 KiB, every type."""
    size = st.one_of(
        st.just(0),
        st.integers(1, 200),
        st.integers(200, 6000),
        st.sampled_from([65536, 70000]),
    )
    spec = st.tuples(
        size,
        st.sampled_from(["random", "text", "zeros"]),
        st.integers(0, 2**32),
        st.sampled_from(list(RecordType)),
        st.sampled_from(list(Direction)),
        st.one_of(st.just(0), st.integers(0, 0xFFFF)),
        st.one_of(st.just(0), st.integers(0, NS), st.integers(0, 7 * MINUTE)),
    )
    out = []
    for n, kind, seed, rtype, direction, channel, delay in draw(
        st.lists(spec, min_size=min_size, max_size=max_size)
    ):
        out.append(Rec(_payload(n, kind, seed), rtype, direction, channel, delay))
    return out


@st.composite
def shapes(draw, min_records: int = 0, close: bool | None = None) -> dict:
    """
    Keyword arguments for L{write_session} for a random recording: its
    records, seal points, block cuts, and whether it closes.
    """
    recs = draw(session_records(min_size=min_records))
    n = len(recs)
    index = st.integers(0, max(n - 1, 0))
    return {
        "records": recs,
        "seal_after": draw(st.lists(index, max_size=6)) if n else [],
        "block_every": draw(st.integers(1, 8)),
        "block_after": draw(st.sets(index, max_size=4)) if n else set(),
        "close": draw(st.booleans()) if close is None else close,
    }


# --- taking segment files apart, and forging them ---------------------------


@attrs.frozen
class Layout:
    """Where the parts of a segment file are (byte offsets)."""

    size: int
    header_end: int
    #: (start, end, codec) of every block
    blocks: tuple[tuple[int, int, int], ...]
    #: where the seal starts, or None
    seal: int | None


def segment_layout(path: str) -> Layout:
    """The layout of an undamaged segment file."""
    with open(path, "rb") as f:
        data = f.read()
    _, offset = SegmentHeader.parse(data)
    header_end = offset
    blocks = []
    seal = None
    while offset < len(data):
        if data[offset] == BLOCK_TAG:
            _, codec, _, _, stored_len, _ = BLOCK_HEADER.unpack_from(data, offset)
            end = offset + BLOCK_HEADER.size + stored_len
            blocks.append((offset, end, codec))
            offset = end
        else:
            seal = offset
            _, _, offset = parse_seal(data, offset)
    return Layout(len(data), header_end, tuple(blocks), seal)


@attrs.frozen
class SegmentContents:
    """A segment file taken apart."""

    header: SegmentHeader
    records: tuple[Record, ...]
    statement: SealStatement | None
    signature: bytes | None


def read_segment(path: str) -> SegmentContents:
    """Take an undamaged segment file apart."""
    with SegmentScanner(path) as scanner:
        records = [r for block in scanner.blocks() for r in split_records(block.raw)]
        header, end = scanner.header, scanner.end
    statement = signature = None
    if end.seal is not None:
        statement = SealStatement.from_bytes(end.seal[0])
        signature = end.seal[1]
    return SegmentContents(header, tuple(records), statement, signature)


def _blocks_digest(block: bytes) -> bytes:
    digest = hashlib.sha256()
    if block:  # an empty segment has no block
        size = BLOCK_HEADER.size
        add_block_to_digest(digest, block[:size], block[size:])
    return digest.digest()


def build_segment(
    header: SegmentHeader,
    records: Sequence[Record],
    key: Ed25519PrivateKey | None,
    *,
    statement: SealStatement | None = None,
    **changes,
) -> tuple[bytes, SealStatement | None]:
    """
    The bytes of a segment file, built with format.py as a forger would:
    C{header}, one stored block of C{records} chained from the header, and
    (unless C{key} is None) a seal signed by C{key}.

    The statement is C{statement} (or one derived from C{header}) with its
    record count, digests and signer recomputed, then C{changes} applied.
    """
    chain = header.chain_start()
    raw = b""
    for record in records:
        framed = record.to_bytes()
        raw += framed
        chain = sha256(chain + framed)
    block = b""
    if records:
        block = encode_block_header(0, len(records), len(raw), len(raw), chain) + raw
    out = header.to_bytes() + block
    if key is None:
        return out, None
    base = statement or SealStatement(
        session_id=header.session_id,
        gateway_id=header.gateway_id,
        segment_index=header.segment_index,
        final=False,
        first_seq=header.first_seq,
        record_count=0,
        wall_start=header.wall_start,
        mono_start=header.mono_start,
        wall_seal=header.wall_start,
        mono_seal=max([header.mono_start, *(r.mono for r in records)]),
        prev_link=header.prev_link,
        digest=b"",
        blocks_digest=b"",
        signer=b"",
        next_signer=b"\x00" * 32,
    )
    st = attrs.evolve(
        base,
        session_id=header.session_id,
        gateway_id=header.gateway_id,
        segment_index=header.segment_index,
        first_seq=header.first_seq,
        wall_start=header.wall_start,
        mono_start=header.mono_start,
        prev_link=header.prev_link,
        record_count=len(records),
        digest=chain,
        blocks_digest=_blocks_digest(block),
        signer=raw_public(key),
    )
    st = attrs.evolve(st, **changes)
    statement_bytes = st.to_bytes()
    return out + encode_seal(statement_bytes, key.sign(statement_bytes)), st


def flip_byte(path: str, offset: int, xor: int = 0x01) -> None:
    """XOR the byte at C{offset} of a file with C{xor}."""
    with open(path, "r+b") as f:
        f.seek(offset)
        byte = f.read(1)[0]
        f.seek(offset)
        f.write(bytes([byte ^ xor]))


def truncate(path: str, size: int) -> None:
    """Cut a file to C{size} bytes."""
    os.truncate(path, size)
