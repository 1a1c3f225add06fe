"""
Tests for L{gatehouse.recording.render}: generic replay, the renderer
registry and JSONL export.
"""

from __future__ import annotations

import base64
import io
import json

from twisted.trial.unittest import TestCase

from gatehouse.recording.format import Direction, Record, RecordType
from gatehouse.recording.render import (
    export_jsonl,
    format_offset,
    hex_dump,
    register_renderer,
    render,
    render_generic,
    render_record,
    renderer_for,
    unregister_renderer,
)

SID = "0192f1a0-0000-7000-8000-000000000001"


def meta(protocol: str = "postgres", **fields: object) -> Record:
    """A META record naming C{protocol}."""
    body = {"session_id": SID, "protocol": protocol, **fields}
    return Record(
        0, RecordType.META, Direction.GATEWAY, 0, 0, json.dumps(body).encode()
    )


def data(
    seq: int,
    payload: bytes,
    direction: int = Direction.CLIENT_TO_GATEWAY,
    mono: int = 1_000,
    channel: int = 0,
) -> Record:
    """A DATA record."""
    return Record(seq, RecordType.DATA, direction, channel, mono, payload)


def rendered(*records: Record) -> str:
    out = io.StringIO()
    render_generic(records, out)
    return out.getvalue()


class GenericTests(TestCase):
    """Every record, readable."""

    def test_offset(self):
        """Mono time is shown as seconds since the start, to the microsecond."""
        self.assertEqual(format_offset(0), "+0.000000s")
        self.assertEqual(format_offset(1_234_567), "+0.001234s")
        self.assertEqual(format_offset(62_500_000_000), "+62.500000s")

    def test_text(self):
        """
        Printable UTF-8 is shown as text under a heading with time, seq,
        direction and size; CRLF ends lines, other controls are escaped.
        """
        out = rendered(data(7, b"SELECT 1;\r\nh\xc3\xa9\x1b[0m\n", mono=1_234_567))
        self.assertEqual(
            out,
            "+0.001234s  #7  client→gw  DATA  19 bytes\n"
            "    SELECT 1;\n"
            "    hé\\x1b[0m\n",
        )

    def test_directions_and_channel(self):
        """Each direction has its arrow; a non-zero channel is shown."""
        out = rendered(
            data(1, b"a", Direction.CLIENT_TO_GATEWAY),
            data(2, b"b", Direction.GATEWAY_TO_CLIENT),
            data(3, b"c", Direction.GATEWAY_TO_UPSTREAM, channel=3),
            data(4, b"d", Direction.UPSTREAM_TO_GATEWAY),
            data(5, b"e", 9),
        )
        headings = [line.split("  ")[2:4] for line in out.splitlines()[::2]]
        self.assertEqual(
            headings,
            [
                ["client→gw", "DATA"],
                ["gw→client", "DATA"],
                ["gw→upstream", "ch3"],
                ["upstream→gw", "DATA"],
                ["direction 9", "DATA"],
            ],
        )
        self.assertIn("  1 byte\n", out)

    def test_binary(self):
        """A binary payload is shown as a hex dump with offsets and ASCII."""
        payload = b"Q\x00\x00\x00\x0dSELECT 1;\x00" + bytes(range(16))
        out = rendered(data(1, payload))
        self.assertEqual(
            out.splitlines()[1:],
            [
                "    00000000  51 00 00 00 0d 53 45 4c  45 43 54 20 31 3b 00 00"
                "  |Q....SELECT 1;..|",
                "    00000010  01 02 03 04 05 06 07 08  09 0a 0b 0c 0d 0e 0f"
                "     |...............|",
            ],
        )

    def test_hex_cap(self):
        """Hex dumps stop at the cap and say how much was left out."""
        lines = hex_dump(bytes(1000), limit=64)
        self.assertEqual(len(lines), 5)
        self.assertEqual(lines[-1], "… 936 more bytes (use --full)")
        out = io.StringIO()
        render_record(data(1, bytes(600)), out)
        self.assertIn("… 88 more bytes (use --full)", out.getvalue())

    def test_json_records(self):
        """META, EVENT and CLOSE show their JSON on one line."""
        event = {"event": "decision", "decision": "deny", "text": "DROP TABLE x"}
        out = rendered(
            meta(),
            Record(1, RecordType.EVENT, 0, 0, 5_000_000, json.dumps(event).encode()),
            Record(2, RecordType.CLOSE, 0, 0, 9_000_000_000, b'{"reason": "eof"}'),
        )
        self.assertEqual(
            out.splitlines(),
            [
                f'+0.000000s  #0  gw  META  {{"session_id": "{SID}", '
                '"protocol": "postgres"}',
                '+0.005000s  #1  gw  EVENT  {"event": "decision", "decision": '
                '"deny", "text": "DROP TABLE x"}',
                '+9.000000s  #2  gw  CLOSE  {"reason": "eof"}',
            ],
        )

    def test_bad_json(self):
        """An EVENT that is not JSON is shown like data, and says so."""
        out = rendered(Record(1, RecordType.EVENT, 0, 0, 0, b"\xff\xfe"))
        self.assertIn("EVENT  (not JSON)  2 bytes", out)
        self.assertIn("00000000  ff fe", out)

    def test_empty_and_unknown_type(self):
        """An empty payload has no body; unknown types are named by number."""
        out = rendered(data(1, b""), Record(2, 77, 0, 0, 0, b"x"))
        self.assertEqual(
            out,
            "+0.000001s  #1  client→gw  DATA  0 bytes\n"
            "+0.000000s  #2  gw  type 77  1 byte\n"
            "    x\n",
        )


class RegistryTests(TestCase):
    """Protocols plug their own renderers in."""

    def setUp(self):
        self.seen = []

        def renderer(records, out):
            records = list(records)
            self.seen.append(records)
            out.write(f"custom {len(records)}\n")

        register_renderer("testproto", renderer)
        self.addCleanup(unregister_renderer, "testproto")
        self.renderer = renderer

    def test_dispatch_on_meta(self):
        """render() picks the renderer from the META record's protocol."""
        out = io.StringIO()
        records = [meta("testproto"), data(1, b"x")]
        render(iter(records), out)
        self.assertEqual(out.getvalue(), "custom 2\n")
        self.assertEqual(self.seen, [records])

    def test_fallback(self):
        """Unknown protocols, and sessions without META, render generically."""
        out = io.StringIO()
        render([meta("other"), data(1, b"x")], out)
        self.assertIn("client→gw  DATA", out.getvalue())
        out = io.StringIO()
        render([data(1, b"x")], out)
        self.assertIn("client→gw  DATA", out.getvalue())
        self.assertIs(renderer_for(None), render_generic)
        self.assertIs(renderer_for("nope"), render_generic)

    def test_explicit_protocol(self):
        """A protocol given to render() wins over the records."""
        out = io.StringIO()
        render([meta("other")], out, protocol="testproto")
        self.assertEqual(out.getvalue(), "custom 1\n")

    def test_empty(self):
        """Nothing to render writes nothing."""
        out = io.StringIO()
        render([], out)
        self.assertEqual(out.getvalue(), "")

    def test_duplicate(self):
        """A protocol has one renderer."""
        self.assertRaises(ValueError, register_renderer, "testproto", self.renderer)
        self.assertIs(renderer_for("testproto"), self.renderer)


class ExportTests(TestCase):
    """One JSON object per record, for SIEM tools."""

    def export(self, records, **options):
        out = io.StringIO()
        count = export_jsonl(records, out, **options)
        lines = out.getvalue().splitlines()
        self.assertEqual(count, len(lines))
        return [json.loads(line) for line in lines]

    def test_round_trip(self):
        """Payloads come back byte for byte; fields are named, not numbered."""
        records = [
            meta("ssh", user="ada"),
            data(1, b"ls\n", mono=1_500_000_000),
            data(2, bytes(range(256)), Direction.UPSTREAM_TO_GATEWAY, 2_000_000, 2),
            Record(3, RecordType.CLOSE, 0, 0, 3_000_000_000, b'{"reason":"eof"}'),
        ]
        objects = self.export(records)
        for record, obj in zip(records, objects, strict=True):
            self.assertEqual(base64.b64decode(obj["payload"]), record.payload)
            self.assertEqual(obj["seq"], record.seq)
            self.assertEqual(obj["mono_ns"], record.mono)
            self.assertEqual(obj["size"], len(record.payload))
            self.assertEqual(obj["session_id"], SID)
        self.assertEqual(
            [(o["type"], o["direction"], o["channel"]) for o in objects],
            [
                ("META", "gateway", 0),
                ("DATA", "client_to_gateway", 0),
                ("DATA", "upstream_to_gateway", 2),
                ("CLOSE", "gateway", 0),
            ],
        )
        self.assertEqual(objects[1]["t"], 1.5)
        self.assertEqual(objects[1]["text"], "ls\n")
        self.assertNotIn("text", objects[2])
        self.assertEqual(objects[0]["json"]["user"], "ada")
        self.assertEqual(objects[3]["json"], {"reason": "eof"})
        self.assertNotIn("json", objects[1])
        self.assertNotIn("time", objects[0])

    def test_session_id_and_time(self):
        """A given session id wins; a wall start adds ISO 8601 UTC times."""
        objects = self.export(
            [meta(), data(1, b"x", mono=1_234_567)],
            session_id="given",
            wall_start_ns=1_700_000_000 * 1_000_000_000,
        )
        self.assertEqual([o["session_id"] for o in objects], ["given", "given"])
        self.assertEqual(objects[1]["time"], "2023-11-14T22:13:20.001234Z")

    def test_no_meta(self):
        """Without META or a given id, the session id is null."""
        self.assertIsNone(self.export([data(1, b"x")])[0]["session_id"])
