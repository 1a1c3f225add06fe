"""
Reading session recordings: where a session's files are, and what is in
them (see docs/recording-format.md).

L{SegmentScanner} walks one segment file block by block and checks what
can be checked without keys (framing, the hash chain, sequence numbers and
times); the verifier builds on it.  L{read_records} is the best-effort view
that replay and export use: every record up to the first damage.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import attrs
import zstandard

from gatehouse.ids import session_time
from gatehouse.recording.format import (
    BLOCK_HEADER,
    BLOCK_TAG,
    HEADER_PREFIX_SIZE,
    MAGIC,
    MAX_HEADER_BODY,
    MAX_SEAL,
    SEAL_TAG,
    ZERO_LINK,
    BlockHeader,
    FormatError,
    Record,
    RecordType,
    SealStatement,
    SegmentHeader,
    add_block_to_digest,
    chain_block_records,
    decode_block,
    find_trailing_seal,
    parse_seal,
    parse_segment_filename,
    seal_length,
    split_records,
)

__all__ = [
    "ScannedBlock",
    "SegmentEnd",
    "SegmentScanner",
    "find_session_directory",
    "list_segments",
    "read_meta",
    "read_records",
    "session_directory",
]

#: How a segment file ended; see L{SegmentEnd}.
SEALED = "sealed"
CLEAN = "clean"
CUT = "cut"
ZEROS = "zeros"
DAMAGED = "damaged"


def session_directory(recordings_root: str, session_id: uuid.UUID) -> str:
    """
    Where a session's segment files live: C{<root>/<YYYY-MM-DD>/<id>}, the
    date being the UTC date of the time in the (UUIDv7) session id.
    """
    day = time.strftime("%Y-%m-%d", time.gmtime(session_time(session_id)))
    return os.path.join(recordings_root, day, str(session_id))


def find_session_directory(recordings_root: str, session_id: uuid.UUID) -> str | None:
    """
    The directory of an existing session under C{recordings_root}: where
    L{session_directory} says, or else any date directory holding it (for
    recordings that were moved).  None when there is none.
    """
    path = session_directory(recordings_root, session_id)
    if os.path.isdir(path):
        return path
    name = str(session_id)
    try:
        days = sorted(os.listdir(recordings_root))
    except OSError:
        return None
    for day in days:
        candidate = os.path.join(recordings_root, day, name)
        if os.path.isdir(candidate):
            return candidate
    return None


def list_segments(directory: str) -> list[tuple[int, str]]:
    """
    The segment files in C{directory}, as (index, file name), by index.
    Other files are ignored.

    @raise OSError: when the directory cannot be listed.
    """
    found = []
    for name in os.listdir(directory):
        index = parse_segment_filename(name)
        if index is not None:
            found.append((index, name))
    found.sort()
    return found


@attrs.frozen
class ScannedBlock:
    """One block whose records are consistent with its chain value."""

    index: int
    first_seq: int
    header: BlockHeader
    raw: bytes


@attrs.frozen
class SegmentEnd:
    """
    How a segment file ended.

    @ivar kind: C{"sealed"} (a seal right after the last block),
        C{"clean"} (no seal; the file ends after the header or a whole
        block), C{"cut"} (it ends inside the header, a block or the seal),
        C{"zeros"} (no seal; only zero bytes follow the last whole block, as
        a crash can leave them), C{"damaged"} (bytes that break the format
        or the chain).
    @ivar detail: what exactly, for people.
    @ivar seal: the statement bytes and signature of a seal that the file
        ends with, when it has one; also for a damaged file, so that the
        seal can still be judged.
    """

    kind: str
    detail: str = ""
    seal: tuple[bytes, bytes] | None = None


class SegmentScanner:
    """
    Reads one segment file: header, then block by block, checking framing,
    the hash chain, C{seq} continuity and C{mono} order.  Keeps at most one
    block in memory.

    After L{blocks} is exhausted, C{end} says how the file ended, and
    C{chain}, C{next_seq}, C{last_mono}, C{records} and L{blocks_digest}
    describe the intact blocks read.

    @ivar header: the parsed header, or None when it could not be read (then
        C{end} says why).
    """

    def __init__(
        self,
        path: str,
        decompressor: zstandard.ZstdDecompressor | None = None,
        on_bytes: Callable[[int], None] | None = None,
    ):
        self.path = path
        self._file = open(path, "rb")
        self._decompressor = decompressor or zstandard.ZstdDecompressor()
        self._on_bytes = on_bytes
        self.size = os.fstat(self._file.fileno()).st_size
        self.header: SegmentHeader | None = None
        self.end: SegmentEnd | None = None
        self.records = 0
        self.blocks_read = 0
        self.offset = 0
        self.chain = b""
        self.next_seq = 0
        self.last_mono = 0
        self._stored = hashlib.sha256()
        self._seal: tuple[bytes, bytes] | None = None
        self._limit = self.size
        self._find_seal()
        self._read_header()

    def close(self) -> None:
        """Close the file."""
        self._file.close()

    def __enter__(self) -> SegmentScanner:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def blocks_digest(self) -> bytes:
        """SHA-256 of the stored bytes (header and data) of the intact blocks."""
        return self._stored.digest()

    def _progress(self, n: int) -> None:
        if self._on_bytes is not None:
            self._on_bytes(n)

    def _finish(self, kind: str, detail: str = "") -> None:
        self.end = SegmentEnd(kind, detail, self._seal)

    def _find_seal(self) -> None:
        # Locate the seal from the end first: then a damaged length field
        # earlier in the file reads as damage, not as the file being cut.
        tail_len = min(self.size, MAX_SEAL)
        self._file.seek(self.size - tail_len)
        tail = self._file.read(tail_len)
        start = find_trailing_seal(tail)
        if start is not None:
            statement, signature, _ = parse_seal(tail, start)
            self._seal = (statement, signature)
            self._limit = self.size - tail_len + start
        self._file.seek(0)

    def _read_header(self) -> None:
        f = self._file
        prefix = f.read(HEADER_PREFIX_SIZE)
        if len(prefix) < HEADER_PREFIX_SIZE:
            return self._cut("the file ends inside the segment header")
        if prefix[:8] != MAGIC:
            return self._finish(DAMAGED, "bad magic: not a gatehouse segment")
        body_len = int.from_bytes(prefix[8:12], "big")
        if body_len > MAX_HEADER_BODY:
            return self._finish(DAMAGED, f"header length {body_len} is implausible")
        if HEADER_PREFIX_SIZE + body_len > self._limit:
            return self._cut("the file ends inside the segment header")
        body = f.read(body_len)
        try:
            self.header, _ = SegmentHeader.parse(prefix + body)
        except FormatError as e:
            return self._finish(DAMAGED, f"segment header is malformed: {e}")
        self.offset = HEADER_PREFIX_SIZE + body_len
        self.chain = self.header.chain_start()
        self.next_seq = self.header.first_seq
        self.last_mono = self.header.mono_start
        self._progress(self.offset)

    def _cut(self, detail: str) -> None:
        if self._seal is not None:
            # The file has its seal: what looks cut was damaged instead.
            self._finish(DAMAGED, detail.replace("the file ends", "bytes end"))
        else:
            self._finish(CUT, detail)

    def _describe(self, index: int, count: int) -> str:
        first = self.next_seq
        if count == 1:
            return f"block {index} (record {first})"
        return f"block {index} (records {first}-{first + count - 1})"

    def blocks(self) -> Iterator[ScannedBlock]:
        """
        Yield the intact blocks in order; stop at the seal, the end of the
        file, or the first damage, setting C{end}.
        """
        if self.header is None:
            return
        f = self._file
        size = BLOCK_HEADER.size
        while True:
            offset = self.offset
            if offset == self._limit:
                if self._seal is not None:
                    self._progress(self.size - offset)
                    return self._finish(SEALED)
                return self._finish(CLEAN)
            head = f.read(min(size, self._limit - offset))
            tag = head[0]
            if tag == SEAL_TAG:
                return self._inner_seal(offset, head)
            if tag != BLOCK_TAG:
                return self._unknown(offset, tag, head)
            index = self.blocks_read
            if len(head) < size:
                return self._cut(f"the file ends inside the header of block {index}")
            try:
                header = BlockHeader.parse(head)
            except FormatError as e:
                return self._finish(DAMAGED, f"block {index} at offset {offset}: {e}")
            what = self._describe(index, header.count)
            stop = offset + size + header.stored_len
            trailing = self._seal
            if stop > self._limit:
                if self._seal is None or stop > self.size:
                    return self._cut(f"the file ends inside {what}")
                # The "seal" at the end may just be record bytes that look
                # like one: try the block without it.
                self._seal = None
                self._limit = self.size
            data = f.read(header.stored_len)
            problem = None
            try:
                raw = decode_block(header, data, self._decompressor)
                chain, mono = chain_block_records(
                    raw, self.chain, self.next_seq, self.last_mono, header.count
                )
            except FormatError as e:
                problem = f"{what}: {e}"
            else:
                if chain != header.chain:
                    problem = f"{what} does not match its chain"
            if problem is not None:
                self._seal = trailing
                return self._finish(DAMAGED, problem)
            block = ScannedBlock(index, self.next_seq, header, raw)
            add_block_to_digest(self._stored, head, data)
            self.chain = chain
            self.last_mono = mono
            self.next_seq += header.count
            self.records += header.count
            self.blocks_read += 1
            self.offset = stop
            self._progress(stop - offset)
            yield block

    def _inner_seal(self, offset: int, head: bytes) -> None:
        """A seal tag where the blocks end, but the file did not end in a seal."""
        assert self.header is not None
        remaining = self.size - offset
        expected = seal_length(self.header.gateway_id)
        if self._seal is None and remaining < expected:
            return self._finish(CUT, "the file ends inside the seal")
        data = head + self._file.read(min(remaining, expected) - len(head))
        try:
            statement, signature, end = parse_seal(data, 0)
        except FormatError as e:
            return self._finish(DAMAGED, f"seal at offset {offset} is malformed: {e}")
        if end != expected:
            return self._finish(DAMAGED, f"seal at offset {offset} has a wrong length")
        self._seal = (statement, signature)
        if remaining > expected:
            extra = remaining - expected
            return self._finish(DAMAGED, f"{extra} bytes follow the seal")
        # Framed right, yet not found from the end: its statement is damaged,
        # which the caller judges.
        self._progress(end)
        return self._finish(SEALED)

    def _unknown(self, offset: int, tag: int, head: bytes) -> None:
        if self._seal is None and self._rest_is_zero(head):
            return self._finish(ZEROS, f"the last {self.size - offset} bytes are zeros")
        return self._finish(
            DAMAGED,
            f"unexpected byte 0x{tag:02x} at offset {offset} (not a block or seal)",
        )

    def _rest_is_zero(self, head: bytes) -> bool:
        if head.count(0) != len(head):
            return False
        while chunk := self._file.read(1 << 20):
            if chunk.count(0) != len(chunk):
                return False
        return True


def read_records(directory: str) -> Iterator[Record]:
    """
    Every record of the session in C{directory}, in order, across segments;
    best effort: stops quietly at the first damage (a gap, a block that
    does not match its chain, a segment without a seal that is followed by
    another, a seal that does not match its segment).  Signatures are not
    checked here; that is L{gatehouse.recording.verify}'s job.
    """
    try:
        segments = list_segments(directory)
    except OSError:
        return
    decompressor = zstandard.ZstdDecompressor()
    prev_link = ZERO_LINK
    next_seq = 0
    session_id = None
    for expected, (index, name) in enumerate(segments):
        if index != expected:
            return
        try:
            scanner = SegmentScanner(os.path.join(directory, name), decompressor)
        except OSError:
            return
        with scanner:
            header = scanner.header
            if (
                header is None
                or header.segment_index != index
                or header.prev_link != prev_link
                or header.first_seq != next_seq
                or session_id not in (None, header.session_id)
            ):
                return
            session_id = header.session_id
            try:
                for block in scanner.blocks():
                    yield from split_records(block.raw)
            except OSError:
                return
            end = scanner.end
            if end is None or end.kind != SEALED or end.seal is None:
                return
            try:
                statement = SealStatement.from_bytes(end.seal[0])
            except FormatError:
                return
            if (
                statement.digest != scanner.chain
                or statement.blocks_digest != scanner.blocks_digest
                or statement.record_count != scanner.records
                or statement.final
            ):
                return
            prev_link = statement.link()
            next_seq = scanner.next_seq


def read_meta(directory: str) -> dict[str, Any] | None:
    """
    The session metadata: the JSON object of the first META record (the
    first record of the session), or None when there is none.
    """
    for record in read_records(directory):
        if record.type != RecordType.META:
            return None
        try:
            meta = json.loads(record.payload)
        except ValueError:
            return None
        return meta if isinstance(meta, dict) else None
    return None
