"""
Byte layout of gatehouse segment files (see docs/recording-format.md).

Pure functions and value classes: no files, no reactor.  The writer and the
verifier both build on this module, so the layout is defined exactly once.
"""

from __future__ import annotations

import hashlib
import struct
from enum import IntEnum
from typing import Any

import attrs
import zstandard

MAGIC = b"GHSEG\x00\x01\n"
CHAIN_CONTEXT = b"gatehouse/chain/v1\x00"
LINK_CONTEXT = b"gatehouse/link/v1\x00"
SEAL_CONTEXT = b"gatehouse/seal/v1\x00"
CERT_CONTEXT = b"gatehouse/cert/v1\x00"
DELEGATE_CONTEXT = b"gatehouse/delegate/v1\x00"

BLOCK_TAG = 0x42
SEAL_TAG = 0x53
CODEC_STORED = 0
CODEC_ZSTD = 1

MAX_PAYLOAD = 16 * 1024 * 1024
MAX_BLOCK_RAW = 64 * 1024 * 1024
MAX_STATEMENT = 4096
ZERO_LINK = b"\x00" * 32
SIGNATURE_LEN = 64
KEY_LEN = 32

#: payload_len, type, direction, channel, seq, mono
RECORD_HEADER = struct.Struct(">IBBHQQ")
#: tag, codec, count, raw_len, stored_len, chain
BLOCK_HEADER = struct.Struct(">BBIII32s")
_HEADER_PREFIX = struct.Struct(">8sI")
_HEADER_FIXED = struct.Struct(">16sIQQQQ32s")
_SEAL_PREFIX = struct.Struct(">BI")
_U16 = struct.Struct(">H")


class RecordType(IntEnum):
    """What a record holds."""

    META = 1
    DATA = 2
    EVENT = 3
    CLOSE = 4


class Direction(IntEnum):
    """Which way the bytes of a record went."""

    GATEWAY = 0
    CLIENT_TO_GATEWAY = 1
    GATEWAY_TO_CLIENT = 2
    GATEWAY_TO_UPSTREAM = 3
    UPSTREAM_TO_GATEWAY = 4


class FormatError(Exception):
    """
    Bytes that do not follow the recording format.
    """


class Truncated(FormatError):
    """
    The bytes end before a structure that they started is complete.
    """


def sha256(data: bytes) -> bytes:
    """SHA-256 digest of C{data}."""
    return hashlib.sha256(data).digest()


def _str16(value: str) -> bytes:
    raw = value.encode("utf-8")
    if not 1 <= len(raw) <= 255:
        raise ValueError(f"identifier must be 1 to 255 bytes: {value!r}")
    return _U16.pack(len(raw)) + raw


class _Reader:
    """Cursor over bytes that raises L{Truncated} when they run out."""

    def __init__(self, data: bytes, offset: int = 0, what: str = "structure"):
        self.data = data
        self.offset = offset
        self.what = what

    def take(self, n: int) -> bytes:
        end = self.offset + n
        if end > len(self.data):
            raise Truncated(f"{self.what} ends early")
        chunk = self.data[self.offset : end]
        self.offset = end
        return bytes(chunk)

    def unpack(self, st: struct.Struct) -> tuple[Any, ...]:
        return st.unpack(self.take(st.size))

    def str16(self) -> str:
        (n,) = self.unpack(_U16)
        raw = self.take(n)
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise FormatError(f"{self.what}: identifier is not UTF-8")

    def done(self) -> None:
        if self.offset != len(self.data):
            raise FormatError(f"{self.what}: unexpected trailing bytes")


@attrs.frozen
class Record:
    """One framed record as stored in a block."""

    seq: int
    type: int
    direction: int
    channel: int
    mono: int
    payload: bytes

    def to_bytes(self) -> bytes:
        """The record's framing and payload, as hashed into the chain."""
        return (
            RECORD_HEADER.pack(
                len(self.payload),
                self.type,
                self.direction,
                self.channel,
                self.seq,
                self.mono,
            )
            + self.payload
        )


def split_records(raw: bytes) -> list[Record]:
    """
    Split the concatenated records of one block.

    @raise FormatError: when the framing does not add up to C{raw} exactly.
    """
    records = []
    offset = 0
    end = len(raw)
    size = RECORD_HEADER.size
    view = memoryview(raw)
    while offset < end:
        if offset + size > end:
            raise FormatError("record framing cut inside a block")
        length, rtype, direction, channel, seq, mono = RECORD_HEADER.unpack_from(
            raw, offset
        )
        start = offset + size
        offset = start + length
        if offset > end:
            raise FormatError("record longer than its block")
        records.append(
            Record(seq, rtype, direction, channel, mono, bytes(view[start:offset]))
        )
    return records


def last_record(raw: bytes) -> tuple[int, bytes] | None:
    """
    The type and payload of the last record in a block's concatenated
    records, without copying the others; None when the framing does not
    add up.
    """
    offset = 0
    end = len(raw)
    size = RECORD_HEADER.size
    found = None
    while offset + size <= end:
        length, rtype = RECORD_HEADER.unpack_from(raw, offset)[:2]
        start = offset + size
        offset = start + length
        found = (rtype, start, offset)
    if found is None or offset != end:
        return None
    rtype, start, stop = found
    return rtype, bytes(raw[start:stop])


@attrs.frozen
class SegmentHeader:
    """The header that opens each segment file."""

    session_id: bytes
    segment_index: int
    first_seq: int
    wall_start: int
    mono_start: int
    seal_interval: int
    prev_link: bytes
    gateway_id: str
    delegation: bytes = b""

    def to_bytes(self) -> bytes:
        """Serialise, magic included."""
        body = (
            _HEADER_FIXED.pack(
                self.session_id,
                self.segment_index,
                self.first_seq,
                self.wall_start,
                self.mono_start,
                self.seal_interval,
                self.prev_link,
            )
            + _str16(self.gateway_id)
            + _U16.pack(len(self.delegation))
            + self.delegation
        )
        return _HEADER_PREFIX.pack(MAGIC, len(body)) + body

    def chain_start(self) -> bytes:
        """
        C{c0}: the chain value before the segment's first record, over the
        header with C{prev_link} zeroed.  The link is known only once the
        previous seal is signed, on the writer's thread; the seal statement
        binds C{prev_link} instead.
        """
        unlinked = attrs.evolve(self, prev_link=ZERO_LINK)
        return sha256(CHAIN_CONTEXT + unlinked.to_bytes())

    @classmethod
    def parse(cls, data: bytes) -> tuple[SegmentHeader, int]:
        """
        Parse a header at the start of C{data}.

        @return: the header and the offset just past it.
        """
        r = _Reader(data, 0, "segment header")
        magic, body_len = r.unpack(_HEADER_PREFIX)
        if magic != MAGIC:
            raise FormatError("not a gatehouse segment (bad magic)")
        body = _Reader(r.take(body_len), 0, "segment header")
        sid, index, first_seq, wall, mono, interval, prev = body.unpack(_HEADER_FIXED)
        gateway_id = body.str16()
        (dlen,) = body.unpack(_U16)
        delegation = body.take(dlen)
        body.done()
        header = cls(
            sid, index, first_seq, wall, mono, interval, prev, gateway_id, delegation
        )
        return header, r.offset


@attrs.frozen
class SealStatement:
    """The fixed binary statement that a seal signs."""

    session_id: bytes
    gateway_id: str
    segment_index: int
    final: bool
    first_seq: int
    record_count: int
    wall_start: int
    mono_start: int
    wall_seal: int
    mono_seal: int
    prev_link: bytes
    digest: bytes
    blocks_digest: bytes
    signer: bytes
    next_signer: bytes

    _FIXED = struct.Struct(">IBQQQQQQ32s32s32s32s32s")

    def to_bytes(self) -> bytes:
        """Serialise exactly as signed."""
        return (
            SEAL_CONTEXT
            + self.session_id
            + _str16(self.gateway_id)
            + self._FIXED.pack(
                self.segment_index,
                1 if self.final else 0,
                self.first_seq,
                self.record_count,
                self.wall_start,
                self.mono_start,
                self.wall_seal,
                self.mono_seal,
                self.prev_link,
                self.digest,
                self.blocks_digest,
                self.signer,
                self.next_signer,
            )
        )

    @classmethod
    def from_bytes(cls, data: bytes) -> SealStatement:
        """Parse a statement; it must be exactly the bytes given."""
        r = _Reader(data, 0, "seal statement")
        if r.take(len(SEAL_CONTEXT)) != SEAL_CONTEXT:
            raise FormatError("seal statement has a wrong context")
        session_id = r.take(16)
        gateway_id = r.str16()
        fields = list(r.unpack(cls._FIXED))
        r.done()
        if fields[1] not in (0, 1):
            raise FormatError("seal statement final flag is not 0 or 1")
        fields[1] = bool(fields[1])
        return cls(session_id, gateway_id, *fields)

    def link(self) -> bytes:
        """The value the next segment's header carries as C{prev_link}."""
        return link_of(self.to_bytes())


def link_of(statement_bytes: bytes) -> bytes:
    """The link of a segment whose seal statement is C{statement_bytes}."""
    return sha256(LINK_CONTEXT + statement_bytes)


def encode_seal(statement_bytes: bytes, signature: bytes) -> bytes:
    """Frame a seal."""
    if len(signature) != SIGNATURE_LEN:
        raise ValueError("Ed25519 signatures are 64 bytes")
    prefix = _SEAL_PREFIX.pack(SEAL_TAG, len(statement_bytes))
    return prefix + statement_bytes + signature


def parse_seal(data: bytes, offset: int) -> tuple[bytes, bytes, int]:
    """
    Parse a seal starting at C{offset} (its tag included).

    @return: statement bytes, signature, offset past the seal.
    """
    r = _Reader(data, offset, "seal")
    tag, length = r.unpack(_SEAL_PREFIX)
    if tag != SEAL_TAG:
        raise FormatError("not a seal")
    if length > MAX_STATEMENT:
        raise FormatError("seal statement is implausibly long")
    statement = r.take(length)
    signature = r.take(SIGNATURE_LEN)
    return statement, signature, r.offset


def add_block_to_digest(
    digest: hashlib._Hash, block_header: bytes, data: bytes
) -> None:
    """
    Extend a segment's running C{blocks_digest} (a hashlib object) over one
    block: its header, and its data when compressed.  A stored block's data
    is its records, which the chain binds already.
    """
    digest.update(block_header)
    if block_header[1] == CODEC_ZSTD:
        digest.update(data)


def encode_block_header(
    codec: int, count: int, raw_len: int, stored_len: int, chain: bytes
) -> bytes:
    """The 46 bytes that precede a block's data."""
    return BLOCK_HEADER.pack(BLOCK_TAG, codec, count, raw_len, stored_len, chain)


@attrs.frozen
class Certificate:
    """A root key's statement that an epoch key may start sessions."""

    key_id: bytes
    public_key: bytes
    gateway_id: str
    not_before: int
    not_after: int
    root_id: bytes
    root_signature: bytes = b""

    _TIMES = struct.Struct(">QQ")

    def signed_bytes(self) -> bytes:
        """Everything the root signature covers."""
        return (
            CERT_CONTEXT
            + self.key_id
            + self.public_key
            + _str16(self.gateway_id)
            + self._TIMES.pack(self.not_before, self.not_after)
            + self.root_id
        )

    def to_bytes(self) -> bytes:
        """Serialise, signature included."""
        return self.signed_bytes() + self.root_signature

    def valid_at(self, wall_ns: int) -> bool:
        """Whether C{wall_ns} lies in the certificate's window."""
        return self.not_before <= wall_ns < self.not_after

    @classmethod
    def from_bytes(cls, data: bytes) -> Certificate:
        """Parse a certificate; it must be exactly the bytes given."""
        r = _Reader(data, 0, "certificate")
        if r.take(len(CERT_CONTEXT)) != CERT_CONTEXT:
            raise FormatError("certificate has a wrong context")
        key_id = r.take(16)
        public_key = r.take(KEY_LEN)
        gateway_id = r.str16()
        not_before, not_after = r.unpack(cls._TIMES)
        root_id = r.take(16)
        signature = r.take(SIGNATURE_LEN)
        r.done()
        return cls(
            key_id, public_key, gateway_id, not_before, not_after, root_id, signature
        )


@attrs.frozen
class Delegation:
    """An epoch key's hand-over of one session to its first segment key."""

    certificate: Certificate
    session_key: bytes
    signature: bytes

    def to_bytes(self) -> bytes:
        """Serialise as carried in segment 0's header."""
        cert = self.certificate.to_bytes()
        return _U16.pack(len(cert)) + cert + self.session_key + self.signature

    @staticmethod
    def message(session_id: bytes, wall_start: int, session_key: bytes) -> bytes:
        """What the epoch key signs."""
        when = struct.pack(">Q", wall_start)
        return DELEGATE_CONTEXT + session_id + when + session_key

    @classmethod
    def from_bytes(cls, data: bytes) -> Delegation:
        """Parse a delegation; it must be exactly the bytes given."""
        r = _Reader(data, 0, "delegation")
        (n,) = r.unpack(_U16)
        cert = Certificate.from_bytes(r.take(n))
        session_key = r.take(KEY_LEN)
        signature = r.take(SIGNATURE_LEN)
        r.done()
        return cls(cert, session_key, signature)


def segment_filename(index: int) -> str:
    """The file name of segment C{index}."""
    return f"seg-{index:08d}.ghs"


def parse_segment_filename(name: str) -> int | None:
    """The index in a segment file name, or None if it is not one."""
    if len(name) == 16 and name.startswith("seg-") and name.endswith(".ghs"):
        digits = name[4:12]
        if digits.isdigit():
            return int(digits)
    return None


# --- reading blocks and seals ---------------------------------------------

_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
#: Frame header descriptor bits that must be clear: the unused bit (which
#: decoders ignore), the reserved bit and the dictionary id flags.
_ZSTD_FHD_MUST_BE_CLEAR = 0x10 | 0x08 | 0x03
#: Largest header body: fixed fields, a 255-byte gateway id, a full delegation.
MAX_HEADER_BODY = _HEADER_FIXED.size + 2 + 255 + 2 + 0xFFFF
HEADER_PREFIX_SIZE = _HEADER_PREFIX.size
#: Seal framing and statement, less the gateway id's bytes.
_SEAL_BASE = _SEAL_PREFIX.size + len(SEAL_CONTEXT) + 16 + 2 + SIGNATURE_LEN
_SEAL_OVERHEAD = _SEAL_PREFIX.size + SIGNATURE_LEN
#: The longest a seal can be (255-byte gateway id).
MAX_SEAL = _SEAL_BASE + SealStatement._FIXED.size + 255


@attrs.frozen
class BlockHeader:
    """The fixed fields in front of a block's data."""

    codec: int
    count: int
    raw_len: int
    stored_len: int
    chain: bytes

    @classmethod
    def parse(cls, data: bytes, offset: int = 0) -> BlockHeader:
        """
        Parse and sanity-check the block header at C{offset}.

        @raise Truncated: when C{data} ends inside the header.
        @raise FormatError: when the header cannot be a valid block's.
        """
        if len(data) - offset < BLOCK_HEADER.size:
            raise Truncated("block header ends early")
        tag, codec, count, raw_len, stored_len, chain = BLOCK_HEADER.unpack_from(
            data, offset
        )
        if tag != BLOCK_TAG:
            raise FormatError(f"not a block (tag 0x{tag:02x})")
        if codec not in (CODEC_STORED, CODEC_ZSTD):
            raise FormatError(f"block has unknown codec {codec}")
        if count == 0:
            raise FormatError("block holds no records")
        if raw_len > MAX_BLOCK_RAW:
            raise FormatError(f"block raw length {raw_len} exceeds the limit")
        if raw_len < count * RECORD_HEADER.size:
            raise FormatError(
                f"block raw length {raw_len} is too short for {count} records"
            )
        if codec == CODEC_STORED and stored_len != raw_len:
            raise FormatError("stored block's stored and raw lengths differ")
        return cls(codec, count, raw_len, stored_len, chain)


def decode_block(
    header: BlockHeader,
    data: bytes,
    decompressor: zstandard.ZstdDecompressor | None = None,
) -> bytes:
    """
    The concatenated records of a block from its stored C{data}.

    A zstd block must be exactly one frame that states its content size,
    equal to C{raw_len}, with no dictionary and its unused and reserved
    header bits clear.

    @param decompressor: a C{zstandard.ZstdDecompressor} to reuse (they are
        not thread-safe: one per thread).
    @raise FormatError: when the data does not decode to C{raw_len} bytes.
    """
    if header.codec == CODEC_STORED:
        return data
    if len(data) < 6 or data[:4] != _ZSTD_MAGIC:
        raise FormatError("block data is not a zstd frame")
    if data[4] & _ZSTD_FHD_MUST_BE_CLEAR:
        raise FormatError("zstd frame header has unexpected flags")
    try:
        size = zstandard.frame_content_size(data)
    except zstandard.ZstdError:
        raise FormatError("zstd frame header is damaged")
    if size != header.raw_len:
        # Checked before decompressing: a damaged size must not make us
        # allocate it.
        raise FormatError(
            f"zstd frame states {size} bytes, its block says {header.raw_len}"
        )
    if decompressor is None:
        decompressor = zstandard.ZstdDecompressor()
    try:
        raw = decompressor.decompress(
            data, max_output_size=header.raw_len, allow_extra_data=False
        )
    except zstandard.ZstdError as e:
        raise FormatError(f"zstd data does not decompress: {e}")
    if len(raw) != header.raw_len:
        raise FormatError("zstd data decompresses to the wrong length")
    return raw


class RecordError(FormatError):
    """
    Records that break the framing, sequence or time rules.

    @ivar position: the index, within its block, of the first bad record.
    """

    def __init__(self, message: str, position: int):
        super().__init__(message)
        self.position = position


def chain_block_records(
    raw: bytes, chain: bytes, seq: int, mono: int, count: int
) -> tuple[bytes, int]:
    """
    Check the records of one block and extend the hash chain over them,
    without building L{Record} objects (this is the verifier's hot loop).

    The records must be exactly C{count}, framed to fill C{raw}, numbered
    from C{seq} on, with C{mono} times that never go below C{mono} and
    never decrease, and payloads of at most L{MAX_PAYLOAD}.

    @return: the chain after the last record, and that record's C{mono}.
    @raise RecordError: naming the first record that breaks a rule.
    """
    unpack = RECORD_HEADER.unpack_from
    size = RECORD_HEADER.size
    new = hashlib.sha256
    view = memoryview(raw)
    end = len(raw)
    offset = 0
    n = 0
    while offset < end:
        if offset + size > end:
            raise RecordError("record framing cut inside the block", n)
        length, _type, _direction, _channel, rseq, rmono = unpack(raw, offset)
        stop = offset + size + length
        if stop > end:
            raise RecordError(f"record {seq} is longer than its block", n)
        if rseq != seq:
            raise RecordError(f"record {n} has seq {rseq}, expected {seq}", n)
        if rmono < mono:
            raise RecordError(f"record {seq} goes back in time (mono {rmono})", n)
        if length > MAX_PAYLOAD:
            raise RecordError(f"record {seq} payload exceeds the limit", n)
        if length < 4096:
            chain = new(chain + raw[offset:stop]).digest()
        else:
            h = new(chain)
            h.update(view[offset:stop])
            chain = h.digest()
        mono = rmono
        seq += 1
        offset = stop
        n += 1
    if n != count:
        raise RecordError(f"block holds {n} records, its header says {count}", n)
    return chain, mono


def seal_length(gateway_id: str) -> int:
    """The exact length of a seal for a session of C{gateway_id}."""
    return _SEAL_BASE + SealStatement._FIXED.size + len(gateway_id.encode("utf-8"))


def find_trailing_seal(tail: bytes) -> int | None:
    """
    Find a seal that ends exactly at the end of C{tail} (the last
    L{MAX_SEAL} or fewer bytes of a file), without knowing the gateway id.

    @return: the seal's offset within C{tail}, or None when the bytes do not
        end in something framed like a seal.
    """
    fixed = SealStatement._FIXED.size
    for id_len in range(1, 256):
        length = _SEAL_BASE + fixed + id_len
        start = len(tail) - length
        if start < 0:
            break
        tag, statement_len = _SEAL_PREFIX.unpack_from(tail, start)
        if tag != SEAL_TAG or statement_len + _SEAL_OVERHEAD != length:
            continue
        at = start + _SEAL_PREFIX.size
        if tail[at : at + len(SEAL_CONTEXT)] != SEAL_CONTEXT:
            continue
        (n,) = _U16.unpack_from(tail, at + len(SEAL_CONTEXT) + 16)
        if n == id_len:
            return start
    return None
