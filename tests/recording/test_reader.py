"""
Tests for L{gatehouse.recording.reader}: where sessions live, and reading
their records back exactly as written, stopping quietly at damage.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import uuid

from hypothesis import given
from twisted.trial.unittest import SynchronousTestCase

from gatehouse.recording.format import CODEC_STORED, CODEC_ZSTD, RecordType
from gatehouse.recording.reader import (
    find_session_directory,
    list_segments,
    read_meta,
    read_records,
    session_directory,
)
from gatehouse.recording.verify import verify_session

from .helpers import (
    EXAMPLES,
    T0,
    FakeClock,
    Rec,
    flip_byte,
    make_signing,
    segment_layout,
    session_id_at,
    shapes,
    truncate,
    write_session,
)


class _Base(SynchronousTestCase):
    def tmp(self) -> str:
        path = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, path, True)
        return path


class DirectoryTests(_Base):
    """A session's directory follows from its id."""

    def test_session_directory(self):
        """<root>/<UTC date of the id's time>/<id>."""
        sid = uuid.UUID("018bcfe5-6be8-7000-8000-000000000001")
        self.assertEqual(session_directory("/rec", sid), f"/rec/2023-11-14/{sid}")
        late = session_id_at(T0 + 2 * 3600 * 10**9)
        self.assertEqual(session_directory("/r", late), f"/r/2023-11-15/{late}")

    def test_find(self):
        """Found where the id says, else under any date; None when absent."""
        root = self.tmp()
        written = write_session(root, make_signing(), [b"x"])
        sid = written.session_id
        self.assertEqual(find_session_directory(root, sid), written.directory)
        moved = os.path.join(root, "2001-01-01", str(sid))
        os.makedirs(os.path.dirname(moved))
        os.rename(written.directory, moved)
        self.assertEqual(find_session_directory(root, sid), moved)
        self.assertIsNone(find_session_directory(root, session_id_at(T0)))
        self.assertIsNone(find_session_directory(os.path.join(root, "no"), sid))

    def test_list_segments(self):
        """Only segment files, by index."""
        written = write_session(self.tmp(), make_signing(), [b"a", b"b"], seal_every=1)
        for name in ("notes.txt", "seg-1.ghs", "seg-00000009.ghs.tmp"):
            with open(os.path.join(written.directory, name), "w"):
                pass
        self.assertEqual(
            list_segments(written.directory),
            [(i, f"seg-{i:08d}.ghs") for i in range(len(written.paths))],
        )


class ReadRecordsTests(_Base):
    """read_records gives back exactly what was written."""

    @EXAMPLES
    @given(shapes())
    def test_roundtrip(self, shape):
        """Every field of every record, across segments and blocks."""
        written = write_session(self.tmp(), make_signing(), **shape)
        self.assertEqual(list(read_records(written.directory)), list(written.records))

    def test_codecs_and_segments(self):
        """Compressed and stored blocks, several segments, all channels."""
        recs = [
            Rec(b"SELECT 1;\n" * 300, RecordType.DATA, d % 5, channel=d)
            for d in range(10)
        ] + [Rec(os.urandom(300), channel=7), Rec(b"", RecordType.EVENT)]
        written = write_session(
            self.tmp(), make_signing(), recs, seal_after=[3, 3, 8], block_every=2
        )
        codecs = {
            codec
            for path in written.paths
            for _, _, codec in segment_layout(path).blocks
        }
        self.assertEqual(codecs, {CODEC_STORED, CODEC_ZSTD})
        self.assertEqual(len(written.paths), 4)
        read = list(read_records(written.directory))
        self.assertEqual(read, list(written.records))
        self.assertEqual([r.seq for r in read], list(range(len(recs))))

    def test_unsealed_tail(self):
        """The consistent blocks of an unsealed last segment are read."""
        written = write_session(
            self.tmp(),
            make_signing(),
            [b"a"] * 7,
            seal_every=3,
            close=False,
            block_every=1,
        )
        self.assertEqual(list(read_records(written.directory)), list(written.records))
        layout = segment_layout(written.paths[-1])
        truncate(written.paths[-1], layout.blocks[-1][1] - 1)
        self.assertEqual(
            list(read_records(written.directory)), list(written.records[:-1])
        )

    def test_stops_at_damaged_block(self):
        """A block that does not match its chain ends the records, quietly."""
        written = write_session(
            self.tmp(), make_signing(), [b"r" * 40] * 12, seal_every=4, block_every=2
        )
        _, end, _ = segment_layout(written.paths[1]).blocks[1]
        flip_byte(written.paths[1], end - 3)
        self.assertEqual(
            list(read_records(written.directory)), list(written.records[:6])
        )

    def test_stops_at_gap_and_cut(self):
        """A missing segment, or one cut short, ends the records."""
        written = write_session(self.tmp(), make_signing(), [b"r"] * 9, seal_every=3)
        truncate(written.paths[1], os.path.getsize(written.paths[1]) - 1)
        self.assertEqual(
            list(read_records(written.directory)), list(written.records[:6])
        )
        os.unlink(written.paths[1])
        self.assertEqual(
            list(read_records(written.directory)), list(written.records[:3])
        )

    def test_nothing(self):
        """No directory, no files, garbage: no records and no exception."""
        root = self.tmp()
        self.assertEqual(list(read_records(os.path.join(root, "nope"))), [])
        self.assertEqual(list(read_records(root)), [])
        with open(os.path.join(root, "seg-00000000.ghs"), "wb") as f:
            f.write(b"not a segment at all")
        self.assertEqual(list(read_records(root)), [])

    def test_seal_lookalike_at_end(self):
        """
        An unsealed last block whose last record's payload happens to be a
        seal (a recording of a recording) is still read, not taken for one.
        """
        signing = make_signing()
        other = write_session(self.tmp(), signing, [b"x"])
        seal = open(other.paths[0], "rb").read()[segment_layout(other.paths[0]).seal :]
        written = write_session(
            self.tmp(), signing, [b"cat seg-00000000.ghs", seal], close=False
        )
        self.assertEqual(list(read_records(written.directory)), list(written.records))
        report = verify_session(written.directory, signing.anchors)
        self.assertEqual([f.problem for f in report.findings], ["incomplete"])


class ReadMetaTests(_Base):
    """read_meta returns the first record's metadata."""

    def test_meta(self):
        """The first META record's JSON object."""
        meta = {"protocol": "postgres", "target": "orders"}
        written = write_session(
            self.tmp(),
            make_signing(),
            [Rec(json.dumps(meta).encode(), RecordType.META, 0), b"data"],
            clock=FakeClock(),
        )
        self.assertEqual(read_meta(written.directory), meta)

    def test_no_meta(self):
        """None when the first record is not META, or not a JSON object."""
        signing = make_signing()
        for first in (Rec(b"data"), Rec(b"[1, 2]", RecordType.META), Rec(b"{", 1)):
            written = write_session(self.tmp(), signing, [first])
            self.assertIsNone(read_meta(written.directory))
        self.assertIsNone(read_meta(self.tmp()))
