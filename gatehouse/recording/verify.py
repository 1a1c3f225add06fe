"""
Verification of session recordings: the algorithm and problem classes of
"Verification" in docs/recording-format.md.

L{verify_session} reads a session directory one segment file at a time and
one block at a time, and returns a L{VerifyReport}: one L{Finding} per
problem, naming the segment file and what exactly is wrong.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Callable, Sequence
from typing import Any

import attrs
import zstandard

from gatehouse.ids import session_time
from gatehouse.recording.format import (
    ZERO_LINK,
    Delegation,
    FormatError,
    RecordType,
    SealStatement,
    SegmentHeader,
    last_record,
    link_of,
    segment_filename,
)
from gatehouse.recording.keys import NS, Revocation, TrustAnchors, verify_signature
from gatehouse.recording.reader import (
    CLEAN,
    CUT,
    DAMAGED,
    SEALED,
    ZEROS,
    SegmentEnd,
    SegmentScanner,
    list_segments,
)

__all__ = [
    "DEFAULT_MAX_SKEW",
    "GRACE",
    "PROBLEMS",
    "Finding",
    "IndexFacts",
    "VerifyReport",
    "verify_session",
]

#: Clock tolerance: how far a seal may come after its segment's
#: C{seal_interval}, and segment 0's start from its session id's time.
GRACE = 60 * NS
#: How far past the verifier's own clock a seal may be dated.
DEFAULT_MAX_SKEW = 5 * 60 * NS

ALTERED = "altered"
TRUNCATED = "truncated"
MISSING = "missing"
REORDERED = "reordered"
FOREIGN = "foreign"
BAD_KEY = "bad-key"
INCOMPLETE = "incomplete"
#: Every problem class, as named in the format specification.
PROBLEMS = (ALTERED, TRUNCATED, MISSING, REORDERED, FOREIGN, BAD_KEY, INCOMPLETE)


@attrs.frozen
class Finding:
    """
    One problem found in a recording.

    @ivar segment: the segment file's name, or None for the session as a
        whole.
    @ivar problem: one of L{PROBLEMS}.
    @ivar detail: what exactly is wrong, for people.
    """

    segment: str | None
    problem: str
    detail: str

    def __str__(self) -> str:
        return f"{self.segment or 'session'}: {self.problem}: {self.detail}"


@attrs.frozen
class IndexFacts:
    """
    What the session index knows about a session, kept apart from its files.

    @ivar closed: whether the recorder reported the session closed (its
        final seal written).
    @ivar segment_count: how many segments the index saw sealed, if known.
    @ivar final_link: the link of the last seal the index saw (the final
        seal's, for a closed session), if known.
    """

    closed: bool
    segment_count: int | None = None
    final_link: bytes | None = None


@attrs.frozen
class VerifyReport:
    """
    The verdict on one session directory.

    @ivar records: records in blocks whose chain is intact.
    @ivar sealed_records: those of them under a seal that verifies (its
        statement and signature), in a segment that is neither foreign nor
        sealed by a bad key.
    @ivar complete: whether the session ends in a final seal that verifies,
        with every segment before it present.
    @ivar close_reason: why the session ended, from its close record (only
        for a complete session: only then is that record known genuine).
    @ivar recording_ended: set when the gateway ended the session because
        it could not go on recording it (its disk was full): the recording
        is still complete, every forwarded byte is in it, and this says
        why it ends there.
    """

    session_id: str | None
    directory: str
    findings: tuple[Finding, ...]
    segments: int
    records: int
    sealed_records: int
    complete: bool
    close_reason: str | None = None
    recording_ended: str | None = None

    @property
    def exit_code(self) -> int:
        """0 when all is well, 3 when the only problem is an unsealed end, else 1."""
        if not self.findings:
            return 0 if self.complete else 3
        if all(f.problem == INCOMPLETE for f in self.findings):
            return 3
        return 1

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready form."""
        return {
            "session_id": self.session_id,
            "directory": self.directory,
            "findings": [attrs.asdict(f) for f in self.findings],
            "segments": self.segments,
            "records": self.records,
            "sealed_records": self.sealed_records,
            "complete": self.complete,
            "close_reason": self.close_reason,
            "recording_ended": self.recording_ended,
            "exit_code": self.exit_code,
        }


def _short(key: bytes) -> str:
    return key.hex()[:16]


def _seconds(ns: int) -> str:
    return f"{ns / NS:.3f}"


def _when(ns: int) -> str:
    seconds, rest = divmod(ns, NS)
    try:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))
    except (OverflowError, ValueError):
        return f"{ns} ns"
    return f"{stamp}.{rest // 1_000_000:03d}Z"


class _Segment:
    """What verification learned about one segment file."""

    def __init__(self, name: str, index: int):
        self.name = name
        self.index = index
        self.header: SegmentHeader | None = None
        self.end = SegmentEnd(CUT)
        self.records = 0
        self.blocks = 0
        #: The seal's statement, once its signature verified under the key
        #: it names.
        self.statement: SealStatement | None = None
        self.link: bytes | None = None
        #: The seal's statement agrees with the header and the records.
        self.matches = False
        self.delegation: Delegation | None = None
        self.findings: list[Finding] = []
        #: the payload of the close record the segment ends with, if any
        self.close: bytes | None = None

    def add(self, problem: str, detail: str) -> None:
        if problem == ALTERED and self.has(ALTERED):
            # Later oddities of an altered segment are part of the same damage.
            return
        self.findings.append(Finding(self.name, problem, detail))

    def has(self, *problems: str) -> bool:
        return any(f.problem in problems for f in self.findings)

    @property
    def genuine(self) -> bool:
        """The seal's signature verifies under the key its statement names."""
        return self.statement is not None

    def intact(self) -> bool:
        return self.header is not None and not self.has(ALTERED)

    def trusted_seal(self) -> bool:
        """Whether the next segment may be judged against this one's seal."""
        return self.genuine and not self.has(FOREIGN, BAD_KEY)

    def describe_end(self) -> str:
        if self.header is None:
            return "the file ends inside the segment header"
        if self.end.kind == CUT:
            return f"{self.end.detail}, before the seal"
        last = self.blocks - 1
        where = "after its header" if last < 0 else f"after block {last}"
        if self.end.kind == ZEROS:
            return f"it ends {where} and {self.end.detail}, without a seal"
        return f"it ends {where}, without a seal"


def _examine(
    path: str,
    name: str,
    index: int,
    anchors: TrustAnchors,
    decompressor: zstandard.ZstdDecompressor,
    on_bytes: Callable[[int], None] | None,
) -> _Segment:
    """Check one segment file on its own: steps 2 to 4, less the neighbours."""
    seg = _Segment(name, index)
    try:
        scanner = SegmentScanner(path, decompressor, on_bytes)
    except OSError as e:
        seg.add(MISSING, f"cannot be read: {e.strerror}")
        return seg
    with scanner:
        last = None
        try:
            for last in scanner.blocks():  # noqa: B007 (the last one is kept)
                pass
        except OSError as e:
            seg.add(MISSING, f"cannot be read: {e.strerror}")
            return seg
        end = seg.end = scanner.end or SegmentEnd(CUT)
        seg.header = header = scanner.header
        seg.records = scanner.records
        seg.blocks = scanner.blocks_read
        if last is not None:
            found = last_record(last.raw)
            if found is not None and found[0] == RecordType.CLOSE:
                seg.close = found[1]
        if end.kind == DAMAGED:
            seg.add(ALTERED, end.detail)
        if header is None:
            return seg
        if header.segment_index == 0:
            _check_origin(seg, header, anchors)
        elif header.delegation:
            seg.add(ALTERED, "carries a delegation, which only segment 0 may")
        if end.seal is not None:
            _check_seal(seg, header, scanner, end.seal)
    return seg


def _check_origin(seg: _Segment, header: SegmentHeader, anchors: TrustAnchors) -> None:
    """Segment 0: where the session starts, and who handed it its first key."""
    if header.prev_link != ZERO_LINK:
        seg.add(ALTERED, "segment 0 has a prev_link")
    if header.first_seq != 0:
        seg.add(ALTERED, f"segment 0 starts at seq {header.first_seq}, not 0")
    id_ns = round(session_time(uuid.UUID(bytes=header.session_id)) * 1000) * 1_000_000
    if abs(header.wall_start - id_ns) > GRACE:
        seg.add(
            ALTERED,
            f"wall_start is {_seconds(header.wall_start - id_ns)} s away from "
            "the time in the session id",
        )
    if not header.delegation:
        seg.add(ALTERED, "segment 0 carries no delegation")
        return
    try:
        delegation = Delegation.from_bytes(header.delegation)
    except FormatError as e:
        seg.add(ALTERED, f"delegation is malformed: {e}")
        return
    cert = delegation.certificate
    problem = anchors.check_certificate(cert)
    if problem is not None:
        seg.add(BAD_KEY, f"epoch key {cert.key_id.hex()}: {problem}")
    elif cert.gateway_id != header.gateway_id:
        seg.add(
            BAD_KEY,
            f"epoch key {cert.key_id.hex()} was issued for gateway "
            f"{cert.gateway_id!r}, not {header.gateway_id!r}",
        )
    elif not cert.valid_at(header.wall_start):
        seg.add(
            BAD_KEY,
            f"epoch key {cert.key_id.hex()} is valid for wall times "
            f"{_when(cert.not_before)} to {_when(cert.not_after)}, "
            f"but the session started at {_when(header.wall_start)}",
        )
    elif not verify_signature(
        cert.public_key,
        delegation.signature,
        Delegation.message(
            header.session_id, header.wall_start, delegation.session_key
        ),
    ):
        seg.add(BAD_KEY, "the delegation is not signed by the certified epoch key")
    else:
        seg.delegation = delegation


def _check_seal(
    seg: _Segment,
    header: SegmentHeader,
    scanner: SegmentScanner,
    seal: tuple[bytes, bytes],
) -> None:
    """Step 4: the seal against the header and records, and its signature."""
    statement_bytes, signature = seal
    try:
        st = SealStatement.from_bytes(statement_bytes)
    except FormatError as e:
        seg.add(ALTERED, f"seal statement is malformed: {e}")
        return
    if not verify_signature(st.signer, signature, statement_bytes):
        seg.add(ALTERED, "seal signature does not verify")
        return
    seg.statement = st
    seg.link = link_of(statement_bytes)
    wrong = [
        name
        for name, stated, actual in (
            ("session_id", st.session_id, header.session_id),
            ("gateway_id", st.gateway_id, header.gateway_id),
            ("segment_index", st.segment_index, header.segment_index),
            ("first_seq", st.first_seq, header.first_seq),
            ("wall_start", st.wall_start, header.wall_start),
            ("mono_start", st.mono_start, header.mono_start),
            ("prev_link", st.prev_link, header.prev_link),
        )
        if stated != actual
    ]
    if wrong:
        wrong = [f"{', '.join(wrong)} differ from the header"]
    if seg.end.kind == SEALED:
        if st.record_count != scanner.records:
            wrong.append(
                f"record_count is {st.record_count}, "
                f"the segment holds {scanner.records}"
            )
        elif st.digest != scanner.chain:
            wrong.append("digest differs from the chain of its records")
        elif st.blocks_digest != scanner.blocks_digest:
            wrong.append(
                "blocks_digest differs from the stored blocks (their records "
                "are as sealed; their stored bytes are not)"
            )
        if st.mono_seal < scanner.last_mono:
            wrong.append(f"mono_seal {st.mono_seal} is before its last record's mono")
    if st.mono_seal < header.mono_start:
        wrong.append("mono_seal is before mono_start")
    if wrong:
        seg.add(ALTERED, "seal statement does not match: " + "; ".join(wrong))
        return
    if seg.end.kind != SEALED:
        return
    seg.matches = True
    latest = header.wall_start + header.seal_interval + GRACE
    if not header.wall_start <= st.wall_seal <= latest:
        seg.add(
            BAD_KEY,
            f"sealed at {_when(st.wall_seal)}, outside the segment's window "
            f"{_when(header.wall_start)} to {_when(latest)}",
        )
    elif seg.delegation is not None and st.signer != seg.delegation.session_key:
        seg.add(
            BAD_KEY,
            f"sealed by key {_short(st.signer)}, but the delegation hands the "
            f"session to key {_short(seg.delegation.session_key)}",
        )


def _apply_limits(
    segs: Sequence[_Segment],
    revocations: Sequence[Revocation],
    now_ns: int | None,
    max_skew: int,
) -> None:
    """
    Seals from the future and revocation statements (see "Seals from the
    future" and "Revocation statements" in docs/recording-format.md).
    """
    origin = next(
        (
            s.delegation.certificate
            for s in segs
            if s.header is not None
            and s.header.segment_index == 0
            and s.delegation is not None
            and not s.has(ALTERED)
        ),
        None,
    )
    for s in segs:
        if s.header is None or s.has(ALTERED, BAD_KEY):
            continue
        st = s.statement
        sealed = st.wall_seal if s.matches and st is not None else None
        # An unsealed segment 0 still has a signed time: its start, which
        # the delegation signs (a crash's leftover must not hide a key used
        # before its time or after a revocation as "incomplete").
        started = s.header.wall_start if s.delegation is not None else None
        when, verb = (sealed, "sealed") if sealed is not None else (started, "started")
        if when is not None and now_ns is not None and when > now_ns + max_skew:
            s.add(
                BAD_KEY,
                f"{verb} in the future: at {_when(when)}, later than this "
                f"verifier's clock ({_when(now_ns)}) plus {_seconds(max_skew)} s",
            )
            continue
        for rev in revocations:
            if rev.gateway_id != s.header.gateway_id:
                continue
            if rev.key_ids and (origin is None or origin.key_id not in rev.key_ids):
                continue
            cert = s.delegation.certificate if s.delegation is not None else None
            if cert is not None and cert.not_before >= rev.revoked_from:
                s.add(
                    BAD_KEY,
                    f"epoch key {cert.key_id.hex()} (window from "
                    f"{_when(cert.not_before)}) is revoked by {rev.describe()}",
                )
                break
            if when is not None and when >= rev.revoked_from:
                s.add(
                    BAD_KEY,
                    f"{verb} at {_when(when)}, not before {rev.describe()}",
                )
                break


def _uuid_named(directory: str) -> uuid.UUID | None:
    name = os.path.basename(os.path.normpath(directory))
    try:
        value = uuid.UUID(name)
    except ValueError:
        return None
    return value if str(value) == name.lower() else None


def _records(first: int, count: int) -> str:
    if count == 1:
        return f"record {first} is"
    return f"records {first}-{first + count - 1} are"


def _span(first: int, last: int) -> str:
    if first == last:
        return f"segment {first} is"
    return f"segments {first}-{last} are"


class _Verification:
    """State of one run of L{verify_session}, after every file was examined."""

    def __init__(
        self,
        directory: str,
        segs: list[_Segment],
        facts: IndexFacts | None,
        expected: uuid.UUID | None,
        gateway: str | None = None,
    ):
        self.expected_gateway = gateway
        self.directory = directory
        self.segs = segs
        self.facts = facts
        self.expected = expected
        self.session: list[Finding] = []
        self.placed: list[tuple[int, Finding]] = []
        self.slots: dict[int, _Segment] = {}
        self.session_id: bytes | None = None

    def run(self) -> bool:
        """Steps 1, 2 (neighbours) and 5; return whether the session is complete."""
        self._identify()
        self._place()
        last = self._cut_after_final()
        self._gaps(last)
        self._links()
        complete = self._tail(last)
        self._index_link(last)
        return complete

    def _identify(self) -> None:
        """Which session and gateway the directory is about; flag strangers."""
        headers = [s.header for s in self.segs if s.header is not None]
        sid = self.expected.bytes if self.expected else None
        if sid is None:
            named = _uuid_named(self.directory)
            sid = named.bytes if named else None
        if sid is None and headers:
            firsts = [h for h in headers if h.segment_index == 0] or headers
            sid = firsts[0].session_id
        held = {h.session_id for h in headers}
        if sid is not None and len(held) == 1 and sid not in held:
            # The whole directory is another session: one finding, not one per file.
            (other,) = held
            self.session.append(
                Finding(
                    None,
                    FOREIGN,
                    f"the segments belong to session {uuid.UUID(bytes=other)}, "
                    f"not {uuid.UUID(bytes=sid)}",
                )
            )
            sid = other
        self.session_id = sid
        # The gateway most of the session's segments name; segment 0's on a tie.
        votes: dict[str, int] = {}
        for s in sorted(self.segs, key=lambda s: s.index):
            if s.header is not None and s.header.session_id == sid:
                votes[s.header.gateway_id] = votes.get(s.header.gateway_id, 0) + 1
        gateway = max(votes, key=votes.__getitem__) if votes else None
        pinned = self.expected_gateway
        if pinned is not None:
            gateway = pinned
        for s in self.segs:
            h = s.header
            if h is None:
                continue
            if h.session_id != sid:
                s.add(FOREIGN, f"belongs to session {uuid.UUID(bytes=h.session_id)}")
            elif pinned is not None and h.gateway_id != pinned:
                s.add(
                    FOREIGN,
                    f"was written and sealed by gateway {h.gateway_id!r}, but "
                    f"only gateway {pinned!r} may have signed this session",
                )
            elif h.gateway_id != gateway:
                s.add(
                    FOREIGN,
                    f"was written by gateway {h.gateway_id!r}, "
                    f"the session by {gateway!r}",
                )

    def _place(self) -> None:
        """Put each file at the position its header claims (reordered files)."""
        moved: list[tuple[_Segment, int]] = []
        for s in self.segs:
            claim = s.header.segment_index if s.header is not None else s.index
            if s.intact() and not s.has(FOREIGN) and claim != s.index:
                moved.append((s, claim))
            else:
                self.slots[s.index] = s
        by_name = {s.index: (s, claim) for s, claim in moved}
        for s, claim in moved:
            other, other_claim = by_name.get(claim, (None, None))
            if claim in self.slots:
                s.add(
                    REORDERED,
                    f"holds segment {claim}, which {segment_filename(claim)} holds",
                )
                continue
            self.slots[claim] = s
            if other is not None and other_claim == s.index:
                if s.index < claim:
                    s.add(
                        REORDERED,
                        f"{s.name} and {other.name} are swapped: "
                        "each holds the other's segment",
                    )
            else:
                s.add(REORDERED, f"holds segment {claim} (by its header)")

    def _cut_after_final(self) -> int | None:
        """Drop files after a final seal; return the last position that counts."""
        for k in sorted(self.slots):
            s = self.slots[k]
            if s.statement is not None and s.statement.final and s.trusted_seal():
                after = sorted(j for j in self.slots if j > k)
                if after:
                    first = self.slots[after[0]]
                    detail = f"follows the final segment {k}"
                    if len(after) > 1:
                        detail += f" ({len(after) - 1} more files after it)"
                    self.placed.append((after[0], Finding(first.name, ALTERED, detail)))
                    for j in after:
                        del self.slots[j]
                return k
        return max(self.slots) if self.slots else None

    def _gaps(self, last: int | None) -> None:
        if last is None:
            return
        k = 0
        while k <= last:
            if k in self.slots:
                k += 1
                continue
            start = k
            while k not in self.slots:
                k += 1
            self.placed.append(
                (
                    start,
                    Finding(
                        segment_filename(start),
                        MISSING,
                        f"{_span(start, k - 1)} not in the directory",
                    ),
                )
            )

    def _links(self) -> None:
        """Step 2 and 4 against the predecessor: link, signer, seq and times."""
        links = {s.link: s.name for s in self.slots.values() if s.genuine}
        for k in sorted(self.slots):
            s = self.slots[k]
            p = self.slots.get(k - 1)
            if k == 0 or p is None or s.findings or s.header is None:
                continue
            if not p.trusted_seal() or p.statement is None:
                continue
            h, pst = s.header, p.statement
            if h.prev_link != p.link:
                other = links.get(h.prev_link)
                if other is not None:
                    s.add(
                        REORDERED,
                        f"its prev_link is the link of {other}, not of {p.name}",
                    )
                else:
                    s.add(ALTERED, f"its prev_link does not match the seal of {p.name}")
                continue
            if h.first_seq != pst.first_seq + pst.record_count:
                s.add(
                    ALTERED,
                    f"starts at seq {h.first_seq}, but {p.name} ends before "
                    f"seq {pst.first_seq + pst.record_count}",
                )
            elif h.wall_start != pst.wall_seal or h.mono_start != pst.mono_seal:
                s.add(ALTERED, f"does not start when {p.name} was sealed")
            elif s.statement is not None and s.statement.signer != pst.next_signer:
                s.add(
                    BAD_KEY,
                    f"sealed by key {_short(s.statement.signer)}, but {p.name} "
                    f"committed to key {_short(pst.next_signer)}",
                )

    def _tail(self, last: int | None) -> bool:
        """Step 5, and segments that end without their seal."""
        facts = self.facts
        closed = facts is not None and facts.closed
        count = facts.segment_count if facts is not None else None
        if last is None:
            self.session.append(Finding(None, MISSING, "no segment files"))
            return False
        for k in sorted(self.slots):
            s = self.slots[k]
            if s.end.kind not in (CUT, CLEAN, ZEROS) or s.has(ALTERED, MISSING):
                continue
            if k != last or closed or (count is not None and k < count):
                s.add(TRUNCATED, s.describe_end())
            elif not s.findings:
                unsealed = ""
                if s.records and s.header is not None:
                    records = _records(s.header.first_seq, s.records)
                    unsealed = f"; {records} intact but unsealed"
                s.add(
                    INCOMPLETE,
                    f"{s.describe_end()} (the session is not known to have closed)"
                    + unsealed,
                )
        tail = self.slots[last]
        st = tail.statement if tail.genuine else None
        final = st is not None and st.final
        missing_from = None
        reasons = []
        if count is not None and count > last + 1:
            missing_from = last + 1
            reasons.append(f"the index records {count} segments")
        if st is not None and not final and closed:
            missing_from = last + 1
            reasons.append(
                f"the session closed, but the seal of {tail.name} is not final"
            )
        if missing_from is not None:
            end = count - 1 if count is not None and count > last + 1 else None
            what = (
                f"{_span(missing_from, end)} missing"
                if end is not None
                else f"the segments after {tail.name} are missing"
            )
            self.placed.append(
                (
                    missing_from,
                    Finding(
                        segment_filename(missing_from),
                        MISSING,
                        f"{what} ({'; '.join(reasons)})",
                    ),
                )
            )
        elif st is not None and not final and not tail.findings:
            tail.add(
                INCOMPLETE,
                "the last seal is not final: the session is still recording, or "
                "its gateway stopped before closing it",
            )
        trusted = tail.trusted_seal() and tail.matches
        return final and trusted and all(k in self.slots for k in range(last + 1))

    def _index_link(self, last: int | None) -> None:
        facts = self.facts
        if facts is None or facts.final_link is None or last is None:
            return
        if facts.segment_count is not None:
            target = facts.segment_count - 1
        elif facts.closed:
            target = last
        else:
            return
        s = self.slots.get(target)
        if (
            s is not None
            and s.genuine
            and not s.findings
            and s.link != facts.final_link
        ):
            s.add(ALTERED, "its seal is not the one the index recorded")

    def findings(self) -> tuple[Finding, ...]:
        """Every finding: the session's first, then by position in the session."""
        position = {id(s): k for k, s in self.slots.items()}
        placed = list(self.placed)
        seen = {id(f) for _, f in placed}
        for s in self.segs:
            kept = s.findings
            if s.has(ALTERED):
                # A segment's other oddities are part of its alteration.
                kept = [f for f in kept if f.problem in (ALTERED, MISSING)]
            k = position.get(id(s), s.index)
            placed.extend((k, f) for f in kept if id(f) not in seen)
        placed.sort(key=lambda item: item[0])
        return (*self.session, *(f for _, f in placed))


def verify_session(
    directory: str,
    anchors: TrustAnchors,
    facts: IndexFacts | None = None,
    expected_session_id: uuid.UUID | None = None,
    progress: Callable[[int, int], None] | None = None,
    *,
    revocations: Sequence[Revocation] = (),
    expected_gateway: str | None = None,
    clock: Callable[[], int] | None = time.time_ns,
    max_skew: int = DEFAULT_MAX_SKEW,
) -> VerifyReport:
    """
    Verify the session recorded in C{directory}.

    @param anchors: the trusted root public keys.
    @param revocations: revocation statements to apply, each already
        checked against C{anchors} (L{gatehouse.recording.keys.load_revocations}).
    @param expected_gateway: the gateway that should have signed; segments
        of any other are C{foreign}.
    @param clock: the verifier's wall clock (ns); seals dated later than it
        plus C{max_skew} are C{bad-key}.  None skips that check.
    @param facts: what the session index knows about the session, if any.
    @param expected_session_id: the session the directory should hold (by
        default the directory's name, if it is a session id).
    @param progress: called with (bytes done, bytes in all) as blocks are
        read.
    """
    try:
        listed = list_segments(directory)
    except OSError as e:
        finding = Finding(None, MISSING, f"cannot list {directory}: {e.strerror}")
        return VerifyReport(
            str(expected_session_id) if expected_session_id else None,
            directory,
            (finding,),
            0,
            0,
            0,
            False,
        )
    paths = [os.path.join(directory, name) for _, name in listed]
    on_bytes = None
    if progress is not None:
        total = 0
        for path in paths:
            try:
                total += os.path.getsize(path)
            except OSError:
                pass
        done = 0

        def on_bytes(n: int) -> None:
            nonlocal done
            done += n
            progress(done, total)

    decompressor = zstandard.ZstdDecompressor()
    segs = [
        _examine(path, name, index, anchors, decompressor, on_bytes)
        for (index, name), path in zip(listed, paths, strict=True)
    ]
    _apply_limits(segs, revocations, clock() if clock else None, max_skew)
    run = _Verification(directory, segs, facts, expected_session_id, expected_gateway)
    complete = run.run()
    sid = run.session_id
    close_reason = recording_ended = None
    if complete:
        close_reason, recording_ended = _close_reason(run.slots[max(run.slots)])
    return VerifyReport(
        session_id=str(uuid.UUID(bytes=sid)) if sid is not None else None,
        directory=directory,
        findings=run.findings(),
        segments=len(segs),
        records=sum(s.records for s in segs),
        sealed_records=sum(
            s.records
            for s in segs
            if s.genuine and s.matches and not s.has(FOREIGN, BAD_KEY)
        ),
        complete=complete,
        close_reason=close_reason,
        recording_ended=recording_ended,
    )


def _close_reason(final: _Segment) -> tuple[str | None, str | None]:
    """The reasons in the close record that ends the final segment."""
    if final.close is None:
        return None, None
    try:
        close = json.loads(final.close)
    except ValueError:
        return None, None
    if not isinstance(close, dict):
        return None, None
    reason, ended = close.get("reason"), close.get("recording_ended")
    return (
        reason if isinstance(reason, str) else None,
        ended if isinstance(ended, str) else None,
    )
