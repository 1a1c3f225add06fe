"""
The sans-IO side of writing a session recording.

L{SessionEncoder} takes records and turns them into the bytes of segment
files: headers, blocks and seals.  It does no I/O and knows no reactor; the
recorder decides when to cut blocks and seal, and where the bytes go.

Per record it does the minimum: pack 24 bytes of framing and extend the
hash chain.  Everything else (joining, compressing, writing) is per block.

Sealing is split in two.  L{SessionEncoder.seal} decides the seal where the
records are (the reactor thread) and opens the next segment at once;
L{complete_seal} finishes it where the segment's stored (compressed) bytes
are, after its last block is written: it adds their digest, signs, and
makes the link that the next segment's header carries.
"""

from __future__ import annotations

import hashlib
import threading

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
    link_of,
)
from gatehouse.recording.keys import EpochKey, raw_public

_pack_record = RECORD_HEADER.pack
_sha256 = hashlib.sha256
#: Payloads at least this long are hashed with update() rather than copied
#: into one buffer first.
_HASH_COPY_LIMIT = 4096
#: Blocks shorter than this are stored: compressing them does not pay.
_COMPRESS_MIN = 512
#: How much of a large block is compressed first, to see whether the rest
#: is worth it.
_SAMPLE = 64 * 1024
_local = threading.local()


@attrs.frozen
class PendingBlock:
    """
    The records of one block, framed but not yet compressed: their framing
    and payloads in order, not joined (the writer joins them only to
    compress them, and writes them gathered otherwise).
    """

    parts: tuple[bytes, ...]
    size: int
    count: int
    chain: bytes
    last_seq: int

    @property
    def raw(self) -> bytes:
        """The block's records, framed, as one string."""
        return b"".join(self.parts)


@attrs.frozen
class PendingSeal:
    """
    A seal decided by L{SessionEncoder.seal}, for L{complete_seal} to finish
    once the segment's blocks are written.

    @ivar statement: the seal statement, but for C{prev_link} and
        C{blocks_digest}, which are 32 zero bytes here.
    @ivar signer: the segment's signing key.  The encoder has let go of it:
        drop this object once the seal is complete.
    @ivar next_header: the next segment's header, but for C{prev_link} (32
        zero bytes here); None when the seal is final.
    """

    statement: SealStatement
    signer: Ed25519PrivateKey = attrs.field(repr=False)
    next_header: SegmentHeader | None


@attrs.frozen
class SealedSegment:
    """
    A complete seal: its bytes, its statement, its link, and the header of
    the next segment, which carries that link.
    """

    index: int
    statement: SealStatement
    signature: bytes
    seal: bytes
    link: bytes
    next_header: SegmentHeader | None


def complete_seal(
    pending: PendingSeal, blocks_digest: bytes, prev_link: bytes
) -> SealedSegment:
    """
    Finish a seal: fill in the statement's C{prev_link} (the segment
    header's, that is the previous segment's link) and C{blocks_digest}
    (SHA-256 of the segment's stored blocks, header and data, in file
    order), sign it, and link the next segment's header to it.

    Pure and thread-safe: the recorder calls it on the thread that wrote
    the blocks, right after the last one.
    """
    statement = attrs.evolve(
        pending.statement, prev_link=prev_link, blocks_digest=blocks_digest
    )
    statement_bytes = statement.to_bytes()
    signature = pending.signer.sign(statement_bytes)
    link = link_of(statement_bytes)
    next_header = pending.next_header
    if next_header is not None:
        next_header = attrs.evolve(next_header, prev_link=link)
    return SealedSegment(
        statement.segment_index,
        statement,
        signature,
        encode_seal(statement_bytes, signature),
        link,
        next_header,
    )


def frame_block(block: PendingBlock, level: int = 1) -> bytes:
    """
    The bytes of a block: header and data, compressed with zstd when that
    makes it smaller by a tenth or more (see L{frame_block_parts}).
    """
    header, data = frame_block_parts(block, level)
    return header + b"".join(data)


def frame_block_parts(
    block: PendingBlock, level: int = 1
) -> tuple[bytes, tuple[bytes, ...]]:
    """
    A block's header and the pieces of its data, for a gathered write: the
    compressed frame alone when zstd makes the records smaller by a tenth
    or more, else the records' own framing and payloads, never joined.  A
    large block whose first 64 KiB do not compress by a tenth is stored
    without compressing the rest (random or already compressed data, such
    as TLS or images, would cost a full zstd pass and a copy for nothing).

    Thread-safe; zstd releases the GIL, so the recorder calls this from a
    thread.
    """
    size = block.size
    codec, data, stored = CODEC_STORED, block.parts, size
    if size >= _COMPRESS_MIN:
        compress = _compressor(level).compress
        if size < 4 * _SAMPLE or _pays(len(compress(_head(block.parts))), _SAMPLE):
            packed = compress(block.raw)
            if _pays(len(packed), size):
                codec, data, stored = CODEC_ZSTD, (packed,), len(packed)
    header = encode_block_header(codec, block.count, size, stored, block.chain)
    return header, data


def _head(parts: tuple[bytes, ...]) -> bytes:
    """The first L{_SAMPLE} bytes of the joined C{parts}."""
    taken, length = [], 0
    for part in parts:
        taken.append(part)
        length += len(part)
        if length >= _SAMPLE:
            break
    return b"".join(taken)[:_SAMPLE]


def _pays(packed: int, raw: int) -> bool:
    """Whether compressing C{raw} bytes to C{packed} saves a tenth."""
    return packed * 10 < raw * 9


def _compressor(level: int) -> zstandard.ZstdCompressor:
    """This thread's zstd compressor for C{level} (they are not shared
    between threads, and making one per block costs a tenth of a pass)."""
    cache = getattr(_local, "compressors", None)
    if cache is None:
        cache = _local.compressors = {}
    compressor = cache.get(level)
    if compressor is None:
        compressor = cache[level] = zstandard.ZstdCompressor(level=level)
    return compressor


def _extend(chain: bytes, framing: bytes, payload: bytes) -> bytes:
    """The chain value after one record (its framing and payload)."""
    if len(payload) < _HASH_COPY_LIMIT:
        return _sha256(chain + framing + payload).digest()
    h = _sha256(chain)
    h.update(framing)
    h.update(payload)
    return h.digest()


class RecordChain:
    """
    The hash chain of a session's records, extended where its blocks are
    written, for a L{SessionEncoder} made with C{chain_in_writer}: each
    block and seal must pass through it in the order the encoder made them.

    Thread-safe as the writer uses it: one thread at a time.
    """

    def __init__(self, header: SegmentHeader) -> None:
        self._value = header.chain_start()

    def block(self, block: PendingBlock) -> PendingBlock:
        """C{block} with its chain value (after its last record)."""
        chain = self._value
        parts = block.parts
        for i in range(0, len(parts), 2):
            chain = _extend(chain, parts[i], parts[i + 1])
        self._value = chain
        return attrs.evolve(block, chain=chain)

    def seal(self, pending: PendingSeal) -> PendingSeal:
        """C{pending} with its digest; the next segment's chain begins."""
        statement = attrs.evolve(pending.statement, digest=self._value)
        if pending.next_header is not None:
            self._value = pending.next_header.chain_start()
        return attrs.evolve(pending, statement=statement)


class SessionEncoder:
    """
    Record state of one session: sequence numbers, the hash chain, the open
    segment and its signing key.

    @ivar header: the open segment's header.  After segment 0 its
        C{prev_link} is 32 zero bytes: the link is made by L{complete_seal},
        and the chain does not depend on it.
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
        chain_in_writer: bool = False,
    ) -> None:
        # Hashing every record costs the caller's thread (the reactor's)
        # about a tenth of a stream's time: with chain_in_writer the blocks
        # and seals leave here without it, and a RecordChain on the
        # writer's thread fills it in, in the same order.
        self._chain_in_writer = chain_in_writer
        # None once the final seal took the last key: nothing signs after.
        self._signer: Ed25519PrivateKey | None = Ed25519PrivateKey.generate()
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
                chunk = payload[start : start + MAX_PAYLOAD]
                seq = self.add(rtype, direction, channel, mono, chunk)
            return seq
        if mono < self._mono:
            mono = self._mono
        else:
            self._mono = mono
        seq = self._seq
        self._seq = seq + 1
        framing = _pack_record(len(payload), rtype, direction, channel, seq, mono)
        if not self._chain_in_writer:
            self._chain = _extend(self._chain, framing, payload)
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
        block = PendingBlock(
            tuple(self._parts),
            self.pending_bytes,
            self._count,
            ZERO_LINK if self._chain_in_writer else self._chain,
            self._seq - 1,
        )
        self._segment_count += self._count
        self._parts = []
        self._count = 0
        self.pending_bytes = 0
        return block

    def seal(self, wall: int, mono: int, final: bool = False) -> PendingSeal:
        """
        Decide the seal of the open segment; L{complete_seal} finishes it.
        Call L{take_block} first: records still in the open block are not
        covered.

        The key that signs this seal passes to the returned L{PendingSeal}.
        Unless C{final}, the next segment opens at the seal's times, and
        records may be added to it at once.
        """
        if self._count:
            raise RuntimeError("take_block() before seal()")
        signer = self._signer
        if self.closed or signer is None:
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
            digest=ZERO_LINK if self._chain_in_writer else self._chain,
            blocks_digest=ZERO_LINK,
            signer=raw_public(signer),
            next_signer=raw_public(next_signer) if next_signer else ZERO_LINK,
        )
        self._signer = next_signer
        next_header = None
        if final:
            self.closed = True
        else:
            next_header = SegmentHeader(
                session_id=self._session_id,
                segment_index=header.segment_index + 1,
                first_seq=self._seq,
                wall_start=wall,
                mono_start=mono,
                seal_interval=self._seal_interval,
                prev_link=ZERO_LINK,
                gateway_id=self._gateway_id,
            )
            self._open(next_header)
        return PendingSeal(statement, signer, next_header)
