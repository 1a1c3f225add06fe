"""
The sans-IO side of writing a session recording.

L{SessionEncoder} takes records and turns them into the bytes of segment
files: headers, blocks and seals.  It does no I/O and knows no reactor; the
recorder decides when to cut blocks and seal, and where the bytes go.

Per record it does the minimum: pack 24 bytes of framing and extend the
hash chain.  Everything else (joining, compressing, writing) is per block.
"""

from __future__ import annotations

import hashlib

import attrs
import zstandard
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from gatehouse.recording.format import (
    CODEC_STORED,
    CODEC_ZSTD,
    MAX_PAYLOAD,
    RECORD_HEADER,
    ZERO_LINK,
    Delegation,
    SealStatement,
    SegmentHeader,
    encode_block_header,
    encode_seal,
)
from gatehouse.recording.keys import EpochKey, raw_public

_pack_record = RECORD_HEADER.pack
_sha256 = hashlib.sha256
#: Payloads at least this long are hashed with update() rather than copied
#: into one buffer first.
_HASH_COPY_LIMIT = 4096
#: Blocks shorter than this are stored: compressing them does not pay.
_COMPRESS_MIN = 512


@attrs.frozen
class PendingBlock:
    """The records of one block, framed but not yet compressed."""

    raw: bytes
    count: int
    chain: bytes
    last_seq: int


@attrs.frozen
class SealedSegment:
    """What sealing produced: the seal's bytes, and the next segment's header."""

    index: int
    seal: bytes
    statement: SealStatement
    link: bytes
    next_header: SegmentHeader | None


def frame_block(block: PendingBlock, level: int = 1) -> bytes:
    """
    The bytes of a block: header and data, compressed with zstd when that
    makes it smaller by a tenth or more.

    Thread-safe; zstd releases the GIL, so the recorder calls this from a
    thread.
    """
    raw = block.raw
    codec, data = CODEC_STORED, raw
    if len(raw) >= _COMPRESS_MIN:
        packed = zstandard.ZstdCompressor(level=level).compress(raw)
        if len(packed) * 10 < len(raw) * 9:
            codec, data = CODEC_ZSTD, packed
    return encode_block_header(codec, block.count, len(raw), len(data), block.chain) + data


class SessionEncoder:
    """
    Record state of one session: sequence numbers, the hash chain, the open
    segment and its signing key.

    @ivar header: the open segment's header.
    @ivar segment_raw_bytes: raw record bytes in the open segment so far.
    """

    def __init__(
        self,
        session_id: bytes,
        gateway_id: str,
        epoch_key: EpochKey,
        wall_start: int,
        seal_interval: int,
        mono_start: int = 0,
    ):
        self._signer = Ed25519PrivateKey.generate()
        session_key = raw_public(self._signer)
        delegation = Delegation(
            epoch_key.certificate,
            session_key,
            epoch_key.sign(Delegation.message(session_id, wall_start, session_key)),
        )
        self._session_id = session_id
        self._gateway_id = gateway_id
        self._seal_interval = seal_interval
        self._seq = 0
        self._mono = mono_start
        self.closed = False
        self._open(
            SegmentHeader(
                session_id=session_id,
                segment_index=0,
                first_seq=0,
                wall_start=wall_start,
                mono_start=mono_start,
                seal_interval=seal_interval,
                prev_link=ZERO_LINK,
                gateway_id=gateway_id,
                delegation=delegation.to_bytes(),
            )
        )

    def _open(self, header: SegmentHeader) -> None:
        self.header = header
        self._chain = header.chain_start()
        self._parts: list[bytes] = []
        self._count = 0
        self._segment_count = 0
        self.pending_bytes = 0
        self.segment_raw_bytes = 0

    @property
    def next_seq(self) -> int:
        """The sequence number the next record will get."""
        return self._seq

    def add(
        self, rtype: int, direction: int, channel: int, mono: int, payload: bytes
    ) -> int:
        """
        Frame one record into the open block and extend the chain.

        C{mono} is clamped so that times never go backwards.

        @return: the record's sequence number.
        """
        if self.closed:
            raise RuntimeError("session recording is closed")
        if len(payload) > MAX_PAYLOAD:
            seq = -1
            for start in range(0, len(payload), MAX_PAYLOAD):
                seq = self.add(
                    rtype, direction, channel, mono, payload[start : start + MAX_PAYLOAD]
                )
            return seq
        if mono < self._mono:
            mono = self._mono
        else:
            self._mono = mono
        seq = self._seq
        self._seq = seq + 1
        framing = _pack_record(len(payload), rtype, direction, channel, seq, mono)
        if len(payload) < _HASH_COPY_LIMIT:
            self._chain = _sha256(self._chain + framing + payload).digest()
        else:
            h = _sha256(self._chain)
            h.update(framing)
            h.update(payload)
            self._chain = h.digest()
        self._parts.append(framing)
        self._parts.append(payload)
        self._count += 1
        size = 24 + len(payload)
        self.pending_bytes += size
        self.segment_raw_bytes += size
        return seq

    def take_block(self) -> PendingBlock | None:
        """Cut the records added since the last block, if any."""
        if not self._count:
            return None
        block = PendingBlock(b"".join(self._parts), self._count, self._chain, self._seq - 1)
        self._segment_count += self._count
        self._parts = []
        self._count = 0
        self.pending_bytes = 0
        return block

    def seal(self, wall: int, mono: int, final: bool = False) -> SealedSegment:
        """
        Seal the open segment.  Call L{take_block} first: records still in
        the open block are not covered.

        Unless C{final}, the next segment opens at the seal's times and the
        key that signed this seal is dropped.
        """
        if self._count:
            raise RuntimeError("take_block() before seal()")
        if self.closed:
            raise RuntimeError("session recording is closed")
        header = self.header
        mono = self._mono = max(mono, self._mono)
        wall = max(wall, header.wall_start)
        next_signer = None if final else Ed25519PrivateKey.generate()
        statement = SealStatement(
            session_id=self._session_id,
            gateway_id=self._gateway_id,
            segment_index=header.segment_index,
            final=final,
            first_seq=header.first_seq,
            record_count=self._segment_count,
            wall_start=header.wall_start,
            mono_start=header.mono_start,
            wall_seal=wall,
            mono_seal=mono,
            prev_link=header.prev_link,
            digest=self._chain,
            signer=raw_public(self._signer),
            next_signer=raw_public(next_signer) if next_signer else b"\x00" * 32,
        )
        statement_bytes = statement.to_bytes()
        seal = encode_seal(statement_bytes, self._signer.sign(statement_bytes))
        link = statement.link()
        next_header = None
        if final:
            self.closed = True
            self._signer = None
        else:
            self._signer = next_signer
            next_header = SegmentHeader(
                session_id=self._session_id,
                segment_index=header.segment_index + 1,
                first_seq=self._seq,
                wall_start=wall,
                mono_start=mono,
                seal_interval=self._seal_interval,
                prev_link=link,
                gateway_id=self._gateway_id,
            )
            self._open(next_header)
        return SealedSegment(header.segment_index, seal, statement, link, next_header)
