"""
Byte layout of gatehouse segment files (see docs/recording-format.md).

Pure functions and value classes: no files, no reactor.  The writer and the
verifier both build on this module, so the layout is defined exactly once.
"""

from __future__ import annotations

import hashlib
import struct
from enum import IntEnum

import attrs

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

    def unpack(self, st: struct.Struct) -> tuple:
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


def chain_record_bytes(chain: bytes, records: list[Record]) -> bytes:
    """Extend C{chain} over C{records}, as the writer did."""
    for record in records:
        chain = sha256(chain + record.to_bytes())
    return chain


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
        """C{c0}: the chain value before the segment's first record."""
        return sha256(CHAIN_CONTEXT + self.to_bytes())

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
        fixed = body.unpack(_HEADER_FIXED)
        gateway_id = body.str16()
        (dlen,) = body.unpack(_U16)
        delegation = body.take(dlen)
        body.done()
        return cls(*fixed, gateway_id, delegation), r.offset


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
    signer: bytes
    next_signer: bytes

    _FIXED = struct.Struct(">IBQQQQQQ32s32s32s32s")

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
    return _SEAL_PREFIX.pack(SEAL_TAG, len(statement_bytes)) + statement_bytes + signature


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
        return cls(key_id, public_key, gateway_id, not_before, not_after, root_id, signature)


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
        return DELEGATE_CONTEXT + session_id + struct.pack(">Q", wall_start) + session_key

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
