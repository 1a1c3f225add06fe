"""
Tests for L{gatehouse.recording.verify}: clean recordings pass, every kind
of tampering is found and named, and an attacker who owns the gateway at
time T cannot re-seal what was sealed before T.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
import uuid

import attrs
import yaml
import zstandard
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given
from hypothesis import strategies as st
from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.trial.unittest import SynchronousTestCase

from gatehouse.recording.cli_verify import _Progress
from gatehouse.recording.encoder import SessionEncoder
from gatehouse.recording.format import (
    BLOCK_HEADER,
    CODEC_ZSTD,
    Record,
    segment_filename,
)
from gatehouse.recording.index import SessionIndex, SessionRow
from gatehouse.recording.keys import KeyDirectory, raw_public
from gatehouse.recording.reader import read_records
from gatehouse.recording.verify import (
    PROBLEMS,
    Finding,
    IndexFacts,
    VerifyReport,
    verify_session,
)

from .helpers import (
    EXAMPLES,
    MINUTE,
    NS,
    T0,
    FakeClock,
    Rec,
    WrittenSession,
    build_segment,
    flip_byte,
    make_signing,
    read_segment,
    segment_layout,
    session_id_at,
    shapes,
    truncate,
    write_session,
)
from .test_cli_keys import CLITestCase


def problems(report: VerifyReport) -> set[str]:
    """The classes of a report's findings."""
    return {f.problem for f in report.findings}


class _Base(SynchronousTestCase):
    def tmp(self) -> str:
        path = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, path, True)
        return path

    def record(self, signing=None, **kwargs) -> tuple[WrittenSession, object]:
        signing = signing or make_signing()
        return write_session(self.tmp(), signing, **kwargs), signing

    def assertOnly(self, report: VerifyReport, problem: str, segment=None) -> Finding:
        """Exactly one finding, of this class (and segment)."""
        self.assertEqual(
            len(report.findings), 1, f"expected one {problem}: {report.findings}"
        )
        (finding,) = report.findings
        self.assertEqual(finding.problem, problem, str(finding))
        if segment is not None:
            self.assertEqual(finding.segment, segment, str(finding))
        self.assertEqual(report.exit_code, 3 if problem == "incomplete" else 1)
        return finding


def _is_prefix(read: list[Record], written: tuple[Record, ...]) -> bool:
    return read == list(written[: len(read)])


class CleanTests(_Base):
    """Recordings nobody touched verify."""

    @EXAMPLES
    @given(shapes())
    def test_random_shapes(self, shape):
        """
        Any shape of recording verifies with no findings when closed, and
        with exactly one C{incomplete} finding when not.
        """
        written, signing = self.record(**shape)
        report = verify_session(written.directory, signing.anchors)
        self.assertEqual(report.records, len(written.records))
        self.assertEqual(report.segments, len(written.paths))
        self.assertEqual(report.session_id, str(written.session_id))
        if written.closed:
            self.assertEqual(report.findings, ())
            self.assertTrue(report.complete)
            self.assertEqual(report.exit_code, 0)
            self.assertEqual(report.sealed_records, len(written.records))
        else:
            self.assertOnly(report, "incomplete", os.path.basename(written.paths[-1]))
            self.assertFalse(report.complete)
            self.assertEqual(report.sealed_records, written.sealed_records)
        self.assertEqual(list(read_records(written.directory)), list(written.records))

    def test_index_facts_agree(self):
        """Facts from the index that match the files change nothing."""
        written, signing = self.record(records=[b"a", b"b", b"c"], seal_every=1)
        facts = IndexFacts(
            closed=True,
            segment_count=len(written.paths),
            final_link=written.seals[-1].link,
        )
        report = verify_session(written.directory, signing.anchors, facts)
        self.assertEqual(report.exit_code, 0, report.findings)

    def test_open_session_index_facts(self):
        """An open session whose index knows its seals is only incomplete."""
        written, signing = self.record(
            records=[b"a", b"b", b"c"], seal_every=2, close=False
        )
        facts = IndexFacts(False, len(written.seals), written.seals[-1].link)
        report = verify_session(written.directory, signing.anchors, facts)
        self.assertOnly(report, "incomplete")

    def test_progress(self):
        """Progress is reported in bytes, ending at the total."""
        written, signing = self.record(records=[b"x" * 5000] * 20, seal_every=5)
        calls = []
        verify_session(
            written.directory,
            signing.anchors,
            progress=lambda d, t: calls.append((d, t)),
        )
        total = sum(os.path.getsize(p) for p in written.paths)
        self.assertEqual(calls[-1], (total, total))
        self.assertEqual(calls, sorted(calls))

    def test_zero_filled_tail(self):
        """
        Zero bytes after the last whole block of an unsealed segment are
        what a crash can leave: incomplete, not altered.
        """
        written, signing = self.record(records=[b"a"] * 5, close=False, block_every=2)
        with open(written.paths[-1], "ab") as f:
            f.write(bytes(4096))
        report = verify_session(written.directory, signing.anchors)
        finding = self.assertOnly(report, "incomplete")
        self.assertIn("zeros", finding.detail)

    def test_expected_session_id(self):
        """A directory that holds another session than expected says so once."""
        written, signing = self.record(records=[b"a"], seal_every=1)
        other = uuid.UUID(int=written.session_id.int ^ 1)
        report = verify_session(
            written.directory, signing.anchors, expected_session_id=other
        )
        finding = self.assertOnly(report, "foreign")
        self.assertIsNone(finding.segment)

    def test_empty_directory(self):
        """A directory without segment files is missing everything."""
        signing = make_signing()
        report = verify_session(self.tmp(), signing.anchors)
        self.assertOnly(report, "missing")
        report = verify_session(os.path.join(self.tmp(), "nope"), signing.anchors)
        self.assertOnly(report, "missing")

    def test_exit_codes(self):
        """0 complete and clean, 3 only incomplete, 1 anything else."""

        def report(complete, *classes):
            return VerifyReport(
                None,
                "d",
                tuple(Finding("s", c, "") for c in classes),
                1,
                0,
                0,
                complete,
            )

        self.assertEqual(report(True).exit_code, 0)
        self.assertEqual(report(False, "incomplete").exit_code, 3)
        for problem in PROBLEMS:
            if problem != "incomplete":
                self.assertEqual(report(False, "incomplete", problem).exit_code, 1)
                self.assertEqual(report(True, problem).exit_code, 1)
        self.assertEqual(report(False).exit_code, 3)


class FlipTests(_Base):
    """A flipped byte anywhere is found."""

    def _flip(self, data, shape):
        written, signing = self.record(**shape)
        file_index = data.draw(st.integers(0, len(written.paths) - 1))
        path = written.paths[file_index]
        size = os.path.getsize(path)
        offset = data.draw(st.integers(0, size - 1))
        flip_byte(path, offset, data.draw(st.integers(1, 255)))
        report = verify_session(written.directory, signing.anchors)
        read = list(read_records(written.directory))
        self.assertTrue(_is_prefix(read, written.records))
        return written, report, file_index

    def assertTampered(self, report: VerifyReport, segment: str | None = None, at=""):
        """A finding other than C{incomplete} (for C{segment}), and exit 1."""
        self.assertTrue(
            any(
                f.problem != "incomplete" and segment in (None, f.segment)
                for f in report.findings
            ),
            f"flip {at}went unnoticed: {report.findings}",
        )
        self.assertEqual(report.exit_code, 1)

    @EXAMPLES
    @given(st.data(), shapes(close=True))
    def test_closed_session(self, data, shape):
        """In a closed session every flip is tampering, wherever it is."""
        _, report, _ = self._flip(data, shape)
        self.assertTampered(report)

    @EXAMPLES
    @given(st.data(), shapes(close=False))
    def test_open_session(self, data, shape):
        """
        In a session that is not closed, a flip in a sealed segment is
        tampering; one in the unsealed last segment is found at least as an
        unsealed end (a block that does not match its chain is reported as
        altered, but a damaged length can pass for a crash's cut block), and
        never yields records other than those written.
        """
        written, report, file_index = self._flip(data, shape)
        self.assertNotEqual(report.exit_code, 0)
        if file_index < len(written.paths) - 1:
            self.assertTampered(report)

    def test_prev_link(self):
        """
        C{c0} leaves C{prev_link} out, yet a flip there is one C{altered}
        finding: in a sealed segment (its statement carries the link) and in
        the unsealed last segment of an open session (the previous seal's
        link).
        """
        written, signing = self.record(records=[b"a"] * 4, seal_every=2, close=False)
        self.assertEqual(len(written.paths), 3)
        # After magic, body_len, session_id, segment_index, first_seq,
        # wall_start, mono_start and seal_interval.
        at = 8 + 4 + 16 + 4 + 4 * 8
        with open(written.paths[1], "rb") as f:
            self.assertEqual(f.read()[at : at + 32], written.seals[0].link)
        for path in written.paths:
            name = os.path.basename(path)
            for offset in (at, at + 13, at + 31):
                flip_byte(path, offset, 0x40)
                report = verify_session(written.directory, signing.anchors)
                (finding,) = [f for f in report.findings if f.problem != "incomplete"]
                self.assertEqual((finding.segment, finding.problem), (name, "altered"))
                self.assertIn("prev_link", finding.detail)
                flip_byte(path, offset, 0x40)

    def test_zstd_frame_bits(self):
        """
        Every bit of a zstd block's frame header flipped, then a sample of
        the bytes after it, and every flip near the frame's ends that still
        decodes to the very same records (a larger window size, padding bits
        of table descriptions), one at a time, in a sealed middle segment
        and in the final one: each is one C{altered} finding for that
        segment.  Only the seal's C{blocks_digest} catches the flips that
        change no record.
        """
        written, signing = self.record(
            # Over 512 KiB in one block: its frame has a window descriptor.
            records=[
                b"%06d|alice|2026-11-22 10:00:00|ok\n" % i * 20 for i in range(800)
            ]
            + [b"%06d|bob|ok\n" % i * 5 for i in range(10)],
            block_every=1000,
            seal_after=[799],
        )
        self.assertEqual(len(written.paths), 2)
        windowed = 0
        unchanged = 0
        for path in written.paths:
            name = os.path.basename(path)
            for start, end, codec in segment_layout(path).blocks:
                self.assertEqual(codec, CODEC_ZSTD)
                frame_start = start + BLOCK_HEADER.size
                with open(path, "rb") as f:
                    f.seek(frame_start)
                    frame = f.read(end - frame_start)
                # Single_Segment_flag clear: a window descriptor follows.
                windowed += not frame[4] & 0x20
                flips, same = _frame_flips(frame, frame_start)
                unchanged += len(same)
                for offset, xor in flips + same:
                    flip_byte(path, offset, xor)
                    report = verify_session(written.directory, signing.anchors)
                    at = f"of {xor:#04x} at {name}:{offset} "
                    self.assertTampered(report, name, at)
                    finding = self.assertOnly(report, "altered", name)
                    if (offset, xor) in same:
                        self.assertIn("blocks_digest differs", finding.detail)
                    flip_byte(path, offset, xor)
            clean = verify_session(written.directory, signing.anchors)
            self.assertEqual(clean.exit_code, 0)
        self.assertEqual(windowed, 1)
        self.assertGreater(unchanged, 0)


def _frame_flips(
    frame: bytes, start: int
) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
    """
    Flips (offset in the file, xor) of a zstd frame that starts at offset
    C{start} of a file: every bit of its header and 64 or so of its other
    bytes; and, apart, every flip within 64 bytes of the frame's ends after
    its header that decodes to the same bytes.
    """
    raw = zstandard.ZstdDecompressor().decompress(frame)
    header_len = zstandard.frame_header_size(frame)
    flips = [(start + i, 1 << bit) for i in range(header_len) for bit in range(8)]
    body = range(header_len, len(frame))
    sample = body[:: max(1, len(body) // 64)]
    flips += [(start + i, 0x01 if i % 2 else 0x80) for i in sample]
    same = []
    for i in sorted({*body[:64], *body[-64:]}):
        for bit in range(8):
            damaged = bytearray(frame)
            damaged[i] ^= 1 << bit
            try:
                if zstandard.ZstdDecompressor().decompress(bytes(damaged)) == raw:
                    same.append((start + i, 1 << bit))
            except zstandard.ZstdError:
                pass
    return flips, same


class TruncateTests(_Base):
    """A segment cut short is found."""

    @EXAMPLES
    @given(st.data(), shapes(min_records=1, close=True))
    def test_sealed_middle_segment(self, data, shape):
        """A sealed segment followed by others, cut anywhere: truncated."""
        shape["seal_after"] = [*shape["seal_after"], 0]
        written, signing = self.record(**shape)
        k = data.draw(st.integers(0, len(written.paths) - 2))
        path = written.paths[k]
        truncate(path, data.draw(st.integers(0, os.path.getsize(path) - 1)))
        report = verify_session(written.directory, signing.anchors)
        self.assertOnly(report, "truncated", os.path.basename(path))

    @EXAMPLES
    @given(st.data(), shapes(close=True))
    def test_last_segment_of_closed_session(self, data, shape):
        """
        The final segment cut anywhere: truncated when the index says the
        session closed; without an index it looks like a crash: incomplete.
        """
        written, signing = self.record(**shape)
        path = written.paths[-1]
        truncate(path, data.draw(st.integers(0, os.path.getsize(path) - 1)))
        name = os.path.basename(path)
        report = verify_session(written.directory, signing.anchors, IndexFacts(True))
        self.assertOnly(report, "truncated", name)
        report = verify_session(written.directory, signing.anchors)
        self.assertOnly(report, "incomplete", name)

    def test_inside_block_detail(self):
        """The finding says where the file ends."""
        written, signing = self.record(records=[b"x" * 100] * 10, seal_every=5)
        layout = segment_layout(written.paths[0])
        _, end, _ = layout.blocks[0]
        truncate(written.paths[0], end - 10)
        report = verify_session(written.directory, signing.anchors)
        finding = self.assertOnly(report, "truncated", "seg-00000000.ghs")
        self.assertIn("block 0 (records 0-4)", finding.detail)


class MissingTests(_Base):
    """Segments that are gone are found."""

    @EXAMPLES
    @given(st.data(), shapes(min_records=2, close=True))
    def test_middle_segment_deleted(self, data, shape):
        """Any segment but the last deleted: missing, that one only."""
        shape["seal_after"] = [*shape["seal_after"], 0]
        written, signing = self.record(**shape)
        k = data.draw(st.integers(0, len(written.paths) - 2))
        os.unlink(written.paths[k])
        report = verify_session(written.directory, signing.anchors)
        finding = self.assertOnly(report, "missing", segment_filename(k))
        self.assertIn(f"segment {k} is not in the directory", finding.detail)

    @EXAMPLES
    @given(st.data(), shapes(min_records=1, close=True))
    def test_tail_deleted_from_closed_session(self, data, shape):
        """
        The last segments of a closed session deleted: missing, by the
        index's word; without an index, only incomplete can be said.
        """
        shape["seal_after"] = [*shape["seal_after"], 0]
        written, signing = self.record(**shape)
        k = data.draw(st.integers(1, len(written.paths) - 1))
        for path in written.paths[k:]:
            os.unlink(path)
        count = data.draw(st.sampled_from([None, len(written.paths)]))
        facts = IndexFacts(True, count)
        report = verify_session(written.directory, signing.anchors, facts)
        self.assertOnly(report, "missing", segment_filename(k))
        report = verify_session(written.directory, signing.anchors)
        self.assertOnly(report, "incomplete", segment_filename(k - 1))

    def test_missing_does_not_hide_altered(self):
        """A missing middle segment and an altered later one: both reported."""
        written, signing = self.record(
            records=[b"r" * 50] * 40, seal_every=8, block_every=4
        )
        os.unlink(written.paths[1])
        _, end, _ = segment_layout(written.paths[3]).blocks[1]
        flip_byte(written.paths[3], end - 1)
        report = verify_session(written.directory, signing.anchors)
        self.assertEqual(
            [(f.segment, f.problem) for f in report.findings],
            [("seg-00000001.ghs", "missing"), ("seg-00000003.ghs", "altered")],
        )
        self.assertIn(
            "block 1 (records 28-31) does not match its chain", str(report.findings[1])
        )

    def test_index_counts_more_segments(self):
        """The index saw more seals than there are files: missing."""
        written, signing = self.record(records=[b"a", b"b"], seal_every=1, close=False)
        facts = IndexFacts(False, len(written.paths) + 2)
        report = verify_session(written.directory, signing.anchors, facts)
        self.assertEqual(problems(report), {"truncated", "missing"})


class ReorderTests(_Base):
    """Segments in the wrong place are found."""

    @EXAMPLES
    @given(st.data(), shapes(min_records=1, close=True))
    def test_swap(self, data, shape):
        """Two segment files swapped: one reordered finding."""
        shape["seal_after"] = [*shape["seal_after"], 0]
        written, signing = self.record(**shape)
        a, b = sorted(
            data.draw(
                st.lists(
                    st.integers(0, len(written.paths) - 1),
                    min_size=2,
                    max_size=2,
                    unique=True,
                )
            )
        )
        pa, pb = written.paths[a], written.paths[b]
        os.rename(pa, pa + ".tmp")
        os.rename(pb, pa)
        os.rename(pa + ".tmp", pb)
        report = verify_session(written.directory, signing.anchors)
        finding = self.assertOnly(report, "reordered", os.path.basename(pa))
        self.assertIn("swapped", finding.detail)

    def test_copied_over(self):
        """A segment of the session copied over another: reordered, and missing."""
        written, signing = self.record(records=[b"a"] * 6, seal_every=1)
        shutil.copy(written.paths[4], written.paths[2])
        report = verify_session(written.directory, signing.anchors)
        self.assertEqual(
            [(f.segment, f.problem) for f in report.findings],
            [("seg-00000002.ghs", "missing"), ("seg-00000002.ghs", "reordered")],
        )


class ForeignTests(_Base):
    """Segments from elsewhere are found."""

    @EXAMPLES
    @given(st.data(), shapes(close=True), shapes(close=True))
    def test_from_another_session(self, data, shape, other_shape):
        """A segment of another session (same gateway) copied in: foreign."""
        signing = make_signing()
        written = write_session(self.tmp(), signing, **shape)
        other = write_session(self.tmp(), signing, **other_shape)
        k = data.draw(st.integers(0, len(written.paths) - 1))
        source = data.draw(st.sampled_from(other.paths))
        shutil.copy(source, written.paths[k])
        report = verify_session(written.directory, signing.anchors)
        if len(written.paths) == 1:
            # Nothing of the session is left: the directory holds another,
            # which is then judged as found (it may lack its end, say).
            finding = report.findings[0]
            self.assertEqual((finding.segment, finding.problem), (None, "foreign"))
            self.assertIn("the segments belong to session", finding.detail)
            self.assertEqual(report.exit_code, 1)
        else:
            self.assertOnly(report, "foreign", segment_filename(k))

    @EXAMPLES
    @given(st.data(), shapes(min_records=1, close=True))
    def test_from_another_gateway(self, data, shape):
        """
        The same session id recorded by another gateway (its own keys, the
        same root): its segment copied in is foreign.
        """
        shape["seal_after"] = [*shape["seal_after"], 0]
        signing = make_signing()
        elsewhere = make_signing("gw-elsewhere", root=signing.root)
        written = write_session(self.tmp(), signing, **shape)
        other = write_session(
            self.tmp(), elsewhere, **shape, session_id=written.session_id
        )
        count = min(len(written.paths), len(other.paths))
        k = data.draw(st.integers(0, count - 1))
        shutil.copy(other.paths[k], written.paths[k])
        report = verify_session(written.directory, signing.anchors)
        if count > 2 or k > 0:
            finding = self.assertOnly(report, "foreign", segment_filename(k))
        else:
            # One segment each: segment 0's gateway is taken for the session's.
            finding = self.assertOnly(report, "foreign", segment_filename(1))
        self.assertIn("gw-elsewhere", finding.detail)


class BadKeyTests(_Base):
    """Seals by keys that were not valid for them are found."""

    def test_epoch_window_misses_start(self):
        """An epoch certificate whose window does not hold the session start."""
        signing = make_signing()
        written = write_session(
            self.tmp(), signing, [b"a", b"b"], epoch_key=signing.epoch_keys[2]
        )
        report = verify_session(written.directory, signing.anchors)
        finding = self.assertOnly(report, "bad-key", "seg-00000000.ghs")
        self.assertIn("but the session started at", finding.detail)

    def test_untrusted_root(self):
        """A certificate from a root the verifier does not trust."""
        written, _ = self.record(records=[b"a"], seal_every=1)
        report = verify_session(written.directory, make_signing().anchors)
        finding = self.assertOnly(report, "bad-key", "seg-00000000.ghs")
        self.assertIn("not trusted", finding.detail)

    def test_certificate_for_other_gateway(self):
        """A certificate issued for another gateway."""
        signing = make_signing()
        elsewhere = make_signing("gw-elsewhere", root=signing.root)
        written = write_session(
            self.tmp(), signing, [b"a"], epoch_key=elsewhere.epoch_keys[0]
        )
        report = verify_session(written.directory, signing.anchors)
        finding = self.assertOnly(report, "bad-key", "seg-00000000.ghs")
        self.assertIn("gw-elsewhere", finding.detail)

    @EXAMPLES
    @given(st.data(), shapes(min_records=1, close=True))
    def test_seal_by_uncommitted_key(self, data, shape):
        """
        A segment re-sealed, contents unchanged, by a key other than the one
        committed to (by the previous seal, or segment 0's delegation).
        """
        written, signing = self.record(**shape)
        k = data.draw(st.integers(0, len(written.paths) - 1))
        contents = read_segment(written.paths[k])
        forged, _ = build_segment(
            contents.header,
            contents.records,
            Ed25519PrivateKey.generate(),
            statement=contents.statement,
        )
        with open(written.paths[k], "wb") as f:
            f.write(forged)
        report = verify_session(written.directory, signing.anchors)
        finding = self.assertOnly(report, "bad-key", segment_filename(k))
        self.assertIn("sealed by key", finding.detail)

    def test_seal_too_late(self):
        """A seal made long after its segment's seal interval ran out."""
        written, signing = self.record(
            records=[Rec(b"a", delay=10 * MINUTE)], heartbeat=False
        )
        report = verify_session(written.directory, signing.anchors)
        finding = self.assertOnly(report, "bad-key", "seg-00000000.ghs")
        self.assertIn("outside the segment's window", finding.detail)


class AppendTests(_Base):
    """Bytes after a seal are found."""

    @EXAMPLES
    @given(st.data(), shapes(close=True))
    def test_bytes_after_seal(self, data, shape):
        """Anything appended to a sealed segment: altered."""
        written, signing = self.record(**shape)
        k = data.draw(st.integers(0, len(written.paths) - 1))
        extra = data.draw(st.binary(min_size=1, max_size=300))
        with open(written.paths[k], "ab") as f:
            f.write(extra)
        report = verify_session(written.directory, signing.anchors)
        self.assertOnly(report, "altered", segment_filename(k))


class IndexTests(_Base):
    """What the index remembers is held against the files."""

    def test_final_link_differs(self):
        """A final seal other than the one the index saw: altered."""
        written, signing = self.record(records=[b"a"], seal_every=1)
        facts = IndexFacts(True, len(written.paths), b"\x01" * 32)
        report = verify_session(written.directory, signing.anchors, facts)
        self.assertOnly(report, "altered", segment_filename(len(written.paths) - 1))

    def test_unsealed_but_index_saw_seal(self):
        """A last segment without a seal that the index saw sealed: truncated."""
        written, signing = self.record(records=[b"a"] * 4, seal_every=2)
        layout = segment_layout(written.paths[-1])
        truncate(written.paths[-1], layout.seal)
        report = verify_session(
            written.directory, signing.anchors, IndexFacts(False, len(written.paths))
        )
        self.assertOnly(report, "truncated", segment_filename(len(written.paths) - 1))


# --- forward security -----------------------------------------------------


class ForwardSecurityTests(_Base):
    """
    The attacker owns the gateway at time T: it has the disk (the epoch key
    files not yet erased) and the memory (the open segment's signing key).
    Every forgery of what was sealed before T is found.
    """

    PERIOD = 10 * MINUTE

    def setUp(self):
        self.root = self.tmp()
        self.signing = make_signing(period=self.PERIOD, count=6)
        keys = KeyDirectory(os.path.join(self.root, "keys"))
        keys.add(self.signing.epoch_keys)
        self.clock = FakeClock(T0 + MINUTE)
        # Over four epochs, sealed at least every four minutes; still open at T.
        self.written = write_session(
            self.root,
            self.signing,
            [Rec(b"statement %d" % i, delay=MINUTE) for i in range(35)],
            clock=self.clock,
            seal_interval=4 * MINUTE,
            close=False,
        )
        self.T = self.clock.wall
        keys.erase_expired(self.T)
        remaining, problems = keys.load()
        self.assertEqual(problems, [])
        # What the attacker holds: epoch keys whose windows have not ended,
        # and the open segment's key from the recorder's memory.
        self.epoch_keys = remaining
        self.segment_key = self.written.encoder._signer
        self.attacker_keys = [k.private for k in remaining] + [self.segment_key]
        self.assertEqual(len(remaining), 3)
        self.assertTrue(all(k.certificate.not_after > self.T for k in remaining))
        self.assertGreater(len(self.written.seals), 6)
        baseline = verify_session(self.written.directory, self.signing.anchors)
        self.assertOnly(baseline, "incomplete")

    def verify(self) -> VerifyReport:
        return verify_session(self.written.directory, self.signing.anchors)

    def save(self):
        originals = {}
        for path in self.written.paths:
            with open(path, "rb") as f:
                originals[path] = f.read()

        def restore():
            for name in os.listdir(self.written.directory):
                os.unlink(os.path.join(self.written.directory, name))
            for path, data in originals.items():
                with open(path, "wb") as f:
                    f.write(data)

        return restore

    def altered_records(self, contents):
        records = list(contents.records)
        first = records[0]
        records[0] = attrs.evolve(first, payload=b"DROP TABLE audit_log")
        return records

    def assertDetected(self, report, segment):
        self.assertTrue(
            any(
                f.segment == segment and f.problem != "incomplete"
                for f in report.findings
            ),
            f"forgery of {segment} not detected: {report.findings}",
        )
        self.assertEqual(report.exit_code, 1)

    def test_reseal_one_segment(self):
        """
        Alter a segment sealed before T and re-seal it with each key the
        attacker has, naming that key as signer or keeping the old name.
        """
        restore = self.save()
        for k in (0, 1, len(self.written.seals) - 1):
            path = self.written.paths[k]
            contents = read_segment(path)
            for key in self.attacker_keys:
                for keep_signer in (False, True):
                    changes = (
                        {"signer": contents.statement.signer} if keep_signer else {}
                    )
                    forged, _ = build_segment(
                        contents.header,
                        self.altered_records(contents),
                        key,
                        statement=contents.statement,
                        **changes,
                    )
                    with open(path, "wb") as f:
                        f.write(forged)
                    self.assertDetected(self.verify(), os.path.basename(path))
                    restore()

    def test_reseal_from_segment_onwards(self):
        """
        Alter segment k and re-seal it and every later sealed segment, each
        seal committing to the attacker's next key and the last one to the
        open segment's key, re-linking the open segment's header too.
        """
        restore = self.save()
        seals = self.written.seals
        for k in (1, len(seals) - 2):
            for first_key in self.attacker_keys:
                prev_link = None
                next_key = first_key
                for j in range(k, len(seals)):
                    contents = read_segment(self.written.paths[j])
                    header = contents.header
                    if prev_link is not None:
                        header = attrs.evolve(header, prev_link=prev_link)
                    key = first_key if j == k else next_key
                    last = j == len(seals) - 1
                    next_key = Ed25519PrivateKey.generate()
                    forged, statement = build_segment(
                        header,
                        self.altered_records(contents) if j == k else contents.records,
                        key,
                        statement=contents.statement,
                        next_signer=raw_public(self.segment_key if last else next_key),
                    )
                    with open(self.written.paths[j], "wb") as f:
                        f.write(forged)
                    prev_link = statement.link()
                open_path = self.written.paths[len(seals)]
                contents = read_segment(open_path)
                forged, _ = build_segment(
                    attrs.evolve(contents.header, prev_link=prev_link),
                    contents.records,
                    None,
                )
                with open(open_path, "wb") as f:
                    f.write(forged)
                self.assertDetected(self.verify(), segment_filename(k))
                restore()

    def test_reroot_with_current_epoch_key(self):
        """
        Re-record the whole session, altered, under a new delegation signed
        by each epoch key the attacker has: dated at the real start (no such
        key was valid then) or at T (too far from the session id's time).
        """
        for key in self.epoch_keys:
            for start in (T0 + MINUTE, self.T):
                for name in os.listdir(self.written.directory):
                    os.unlink(os.path.join(self.written.directory, name))
                forged = write_session(
                    self.root,
                    self.signing,
                    [Rec(b"nothing to see %d" % i, delay=MINUTE) for i in range(35)],
                    clock=FakeClock(start),
                    seal_interval=4 * MINUTE,
                    session_id=self.written.session_id,
                    epoch_key=key,
                    directory=self.written.directory,
                )
                report = self.verify()
                self.assertDetected(report, "seg-00000000.ghs")
                # At T the delegation's date is far from the session id's.
                expected = "altered" if start == self.T else "bad-key"
                self.assertEqual(report.findings[0].problem, expected, report.findings)
                self.assertEqual(forged.session_id, self.written.session_id)

    def test_reseal_with_open_segment_key(self):
        """
        The open segment's key is committed by the last seal as the *next*
        signer: it cannot stand in for the key that made that seal.
        """
        k = len(self.written.seals) - 1
        contents = read_segment(self.written.paths[k])
        forged, _ = build_segment(
            contents.header,
            self.altered_records(contents),
            self.segment_key,
            statement=contents.statement,
        )
        with open(self.written.paths[k], "wb") as f:
            f.write(forged)
        report = self.verify()
        self.assertDetected(report, segment_filename(k))
        self.assertEqual(report.findings[0].problem, "bad-key")

    def test_window_of_current_epoch(self):
        """
        The documented limit: a session that started in the epoch running
        at T can be re-rooted with that epoch's key, and only an index entry
        kept off the host (its final link) shows it.
        """
        clock = FakeClock(self.T - 30 * NS)
        session = write_session(
            self.root, self.signing, [b"rm -rf /srv"], clock=clock, seal_every=1
        )
        facts = IndexFacts(True, len(session.paths), session.seals[-1].link)
        for path in session.paths:
            os.unlink(path)
        write_session(
            self.root,
            self.signing,
            [b"ls"],
            clock=FakeClock(self.T - 30 * NS),
            seal_every=1,
            session_id=session.session_id,
            epoch_key=self.epoch_keys[0],
        )
        self.assertEqual(
            verify_session(session.directory, self.signing.anchors).exit_code, 0
        )
        report = verify_session(session.directory, self.signing.anchors, facts)
        self.assertOnly(report, "altered")


class EncoderAssumptionTests(SynchronousTestCase):
    """What the verifier relies on in the encoder's output."""

    def test_final_seal_next_signer(self):
        """A final seal commits to no next key (32 zero bytes)."""
        signing = make_signing()
        encoder = SessionEncoder(
            b"\x01" * 16, "gw", signing.epoch_keys[0], T0 + NS, MINUTE
        )
        sealed = encoder.seal(T0 + 2 * NS, 0, final=True)
        self.assertEqual(sealed.statement.next_signer, bytes(32))


# --- gatehouse verify -----------------------------------------------------


class CLITests(CLITestCase):
    """C{gatehouse verify}, in-process through L{gatehouse.cli.main}."""

    def setUp(self):
        self.base = os.path.abspath(self.mktemp())
        self.recordings = os.path.join(self.base, "recordings")
        self.signing = make_signing()
        self.root_pub = os.path.join(self.base, "root.pub")
        os.makedirs(self.base)
        with open(self.root_pub, "wb") as f:
            f.write(
                self.signing.root.public_key().public_bytes(
                    serialization.Encoding.PEM,
                    serialization.PublicFormat.SubjectPublicKeyInfo,
                )
            )

    def record(self, **kwargs) -> WrittenSession:
        kwargs.setdefault("records", [b"SELECT 1", b"DROP TABLE t"])
        return write_session(self.recordings, self.signing, **kwargs)

    def verify(self, *argv: str) -> tuple[int, str, str]:
        return self.run_cli("verify", *argv)

    def test_clean(self):
        """A complete, intact session: exit 0 and a summary line."""
        written = self.record(seal_every=1)
        code, out, err = self.verify(written.directory, "--root-key", self.root_pub)
        self.assertEqual((code, err), (0, ""))
        self.assertEqual(
            out,
            f"session {written.session_id}: OK: complete and intact "
            "(3 segments, 2 records, 2 sealed)\n",
        )

    def test_incomplete(self):
        """An unsealed end only: exit 3, the finding, then the summary."""
        written = self.record(close=False)
        code, out, _ = self.verify(written.directory, "--root-key", self.root_pub)
        self.assertEqual(code, 3)
        lines = out.splitlines()
        self.assertEqual(len(lines), 2)
        self.assertTrue(lines[0].startswith("seg-00000000.ghs: incomplete: "))
        self.assertIn("INCOMPLETE", lines[1])

    def test_tampered(self):
        """Anything else found: exit 1, one line per finding."""
        written = self.record(seal_every=1)
        flip_byte(written.paths[1], os.path.getsize(written.paths[1]) - 100)
        os.unlink(written.paths[0])
        code, out, _ = self.verify(written.directory, "--root-key", self.root_pub)
        self.assertEqual(code, 1)
        lines = out.splitlines()
        self.assertEqual(
            [line.split(":")[:2] for line in lines[:-1]],
            [["seg-00000000.ghs", " missing"], ["seg-00000001.ghs", " altered"]],
        )
        self.assertIn("FAILED: 2 problems found", lines[-1])

    def test_json(self):
        """--json prints one object with the findings, counts and verdict."""
        written = self.record(close=False)
        code, out, _ = self.verify(
            "--json", written.directory, "--root-key", self.root_pub
        )
        result = json.loads(out)
        self.assertEqual(code, 3)
        self.assertEqual(result["exit_code"], 3)
        self.assertEqual(result["session_id"], str(written.session_id))
        self.assertEqual(result["records"], 2)
        self.assertEqual(result["sealed_records"], 0)
        self.assertFalse(result["complete"])
        self.assertEqual(
            [(f["segment"], f["problem"]) for f in result["findings"]],
            [("seg-00000000.ghs", "incomplete")],
        )

    def test_emptied_directory(self):
        """A session's directory with every segment deleted is a verdict: 1."""
        written = self.record()
        for path in written.paths:
            os.unlink(path)
        code, out, _ = self.verify(written.directory, "--root-key", self.root_pub)
        self.assertEqual(code, 1)
        self.assertIn("session: missing: no segment files", out)

    def test_session_id(self):
        """A session id is looked up under --recordings."""
        written = self.record()
        code, out, err = self.verify(
            str(written.session_id),
            "--recordings",
            self.recordings,
            "--root-key",
            self.root_pub,
        )
        self.assertEqual((code, err), (0, ""), out)

    def test_config(self):
        """The recordings, root keys and index come from --config."""
        written = self.record(close=True)
        config = {
            "gateway": {"id": "gw-test"},
            "identity": {
                "issuers": [{"issuer": "https://idp.example", "audience": "gatehouse"}]
            },
            "recording": {
                "directory": "recordings",
                "signing_keys": ".",
                "root_public_keys": ["root.pub"],
            },
        }
        path = os.path.join(self.base, "gw.yaml")
        with open(path, "w") as f:
            yaml.safe_dump(config, f)
        code, out, err = self.verify(str(written.session_id), "--config", path)
        self.assertEqual((code, err), (0, ""), out)
        # An untrusted root on the command line overrides the configuration's.
        other = os.path.join(self.base, "other.pub")
        with open(other, "wb") as f:
            f.write(
                make_signing()
                .root.public_key()
                .public_bytes(
                    serialization.Encoding.PEM,
                    serialization.PublicFormat.SubjectPublicKeyInfo,
                )
            )
        code, out, _ = self.verify(
            str(written.session_id), "--config", path, "--root-key", other
        )
        self.assertEqual(code, 1)
        self.assertIn("bad-key", out)

    @inlineCallbacks
    def test_index(self):
        """
        With the index saying the session closed, a lost final segment is
        missing (exit 1), not merely incomplete (exit 3).
        """
        written = self.record(seal_every=1)
        index = os.path.join(self.base, "index.sqlite3")
        idx = SessionIndex(index, reactor)
        yield idx.start()
        sid = str(written.session_id)
        yield idx.session_opened(
            SessionRow(
                id=sid,
                gateway_id="gw-test",
                protocol="test",
                listener="main",
                started=T0 / NS,
                directory=written.directory,
            )
        )
        for sealed in written.seals:
            yield idx.segment_sealed(
                sid, sealed.index, sealed.link, sealed.statement.final, 1
            )
        yield idx.session_closed(sid, T0 / NS + 5, "done")
        yield idx.stop()
        os.unlink(written.paths[-1])
        args = (written.directory, "--root-key", self.root_pub)
        self.assertEqual(self.verify(*args)[0], 3)
        code, out, _ = self.verify(*args, "--index", index)
        self.assertEqual(code, 1)
        self.assertIn("seg-00000002.ghs: missing: ", out)

    def test_usage_errors(self):
        """Exit 2 with one clean line: unknown paths and ids, no keys."""
        written = self.record()
        key = ("--root-key", self.root_pub)
        for argv, fragment in [
            (("/no/such/dir", *key), "neither a session directory nor a session id"),
            (("not-an-id", *key), "neither a session directory"),
            (
                (str(session_id_at(T0)), "--recordings", self.recordings, *key),
                "no recording of session",
            ),
            (
                (str(written.session_id), "--recordings", "/no/such", *key),
                "no such recording directory",
            ),
            ((str(written.session_id), *key), "give --recordings DIR, or --config"),
            ((written.directory,), "give --root-key PEM, or --config"),
            ((written.directory, "--root-key", "/no/key.pem"), "/no/key.pem"),
            ((written.directory, *key, "--index", "/no/index"), "no such index"),
            ((written.directory, "--config", "/no/gw.yaml"), "/no/gw.yaml"),
            ((self.recordings, *key), "not a session directory"),
        ]:
            code, out, err = self.verify(*argv)
            self.assertFails(code, 2, err, fragment)
            self.assertEqual(out, "")

    def test_progress_on_terminal(self):
        """A progress bar goes to stderr when it is a terminal, then is erased."""
        written = self.record(records=[b"x" * 1000] * 50, seal_every=5)
        lines = []
        now = [0.0]

        def clock():
            now[0] += 0.3
            return now[0]

        class Terminal(io.StringIO):
            def isatty(self):
                return True

        progress = _Progress(Terminal(), clock)
        verify_session(written.directory, self.signing.anchors, progress=progress)
        progress.clear()
        lines = progress.stream.getvalue()
        self.assertIn("verifying [", lines)
        self.assertIn("100%", lines)
        self.assertTrue(lines.endswith("\r\x1b[K"))

    def test_subprocess(self):
        """The real command: python -m gatehouse.cli verify."""
        written = self.record(close=False)
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "gatehouse.cli",
                "verify",
                "--json",
                written.directory,
                "--root-key",
                self.root_pub,
            ],
            capture_output=True,
            text=True,
            cwd=os.path.dirname(os.path.dirname(os.path.dirname(__file__))),
        )
        self.assertEqual(result.returncode, 3, result.stderr)
        self.assertEqual(json.loads(result.stdout)["exit_code"], 3)


class IndexComparisonTests(CLITestCase):
    """
    C{gatehouse verify} holds the index row against the recording: the
    identity and target it shows must be the recording's, and a session
    the index knows whose recording is gone is C{missing} (exit 1).
    """

    def setUp(self):
        from tests.recording.test_index_check import World

        self.world = World(os.path.abspath(self.mktemp()))

    def verify(self, session_id: str, *more: str) -> tuple[int, str, str]:
        w = self.world
        return self.run_cli(
            "verify",
            session_id,
            "--recordings",
            w.recordings,
            "--root-key",
            w.root_pub,
            *more,
        )

    def test_agrees(self):
        """An unedited index: exit 0."""
        code, out, err = self.verify(self.world.alice, "--index", self.world.index)
        self.assertEqual((code, err), (0, ""), out)

    def test_identity_and_target_edited(self):
        """Alice's session made Bob's on another target: two index-mismatch findings."""
        from tests.recording.test_index_check import edit

        w = self.world
        edit(
            w.index,
            "UPDATE sessions SET subject = 'bob', target = 'crm' WHERE id = ?",
            w.alice,
        )
        code, out, _ = self.verify(w.alice, "--index", w.index)
        self.assertEqual(code, 1, out)
        lines = out.splitlines()
        self.assertEqual(
            lines[:-1],
            [
                "session: index-mismatch: the index's subject: index says 'bob', "
                "recording says 'alice'",
                "session: index-mismatch: the index's target: index says 'crm', "
                "recording says 'shop'",
            ],
        )
        self.assertIn("FAILED: 2 problems found", lines[-1])
        code, out, _ = self.verify(w.alice, "--index", w.index, "--json")
        self.assertEqual(
            [f["problem"] for f in json.loads(out)["findings"]],
            ["index-mismatch", "index-mismatch"],
        )
        # Without the index, the recording alone is intact.
        self.assertEqual(self.verify(w.alice)[0], 0)

    def test_vanished_recording(self):
        """
        The index knows the session, its directory is gone: exit 1, class
        missing; when nothing knows the session it stays a usage error (2).
        """
        import shutil

        from gatehouse.recording.index import get_session

        w = self.world
        directory = get_session(w.index, w.bob).directory
        shutil.rmtree(directory)
        code, out, err = self.verify(w.bob, "--index", w.index)
        self.assertEqual((code, err), (1, ""))
        lines = out.splitlines()
        self.assertTrue(
            lines[0].startswith(
                f"session: missing: the index knows session {w.bob} (recorded in "
            ),
            lines[0],
        )
        self.assertIn("FAILED: 1 problem found", lines[1])
        code, out, _ = self.verify(w.bob, "--index", w.index, "--json")
        self.assertEqual(json.loads(out)["findings"][0]["problem"], "missing")
        self.assertEqual(json.loads(out)["exit_code"], 1)
        code, out, err = self.verify(w.bob)
        self.assertEqual((code, out), (2, ""))
        self.assertIn("no recording of session", err)
