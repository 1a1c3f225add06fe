"""The asciicast export of a Kubernetes terminal exec, on hand-built records."""

from __future__ import annotations

import io
import json

from twisted.trial.unittest import SynchronousTestCase

from gatehouse.protocols.kubernetes.asciicast import export_asciicast
from gatehouse.recording.format import Direction, Record, RecordType
from gatehouse.recording.render import ExportOptions, NoExport

NS = 1_000_000_000


class _Records:
    def __init__(self) -> None:
        self.records: list[Record] = []

    def event(self, channel: int, mono: float, **fields: object) -> None:
        self.records.append(
            Record(
                len(self.records),
                RecordType.EVENT,
                0,
                channel,
                int(mono * NS),
                json.dumps(fields).encode(),
            )
        )

    def data(
        self, channel: int, mono: float, direction: Direction, payload: bytes
    ) -> None:
        self.records.append(
            Record(
                len(self.records),
                RecordType.DATA,
                direction,
                channel,
                int(mono * NS),
                payload,
            )
        )


def session(tty: bool = True) -> list[Record]:
    r = _Records()
    r.event(1, 1.0, event="http-request", description="list pods -n shop")
    r.event(1, 1.1, event="http-response", status=200)
    r.event(
        2,
        2.0,
        event="http-request",
        description="exec shop/web: sh",
        **({"tty": True} if tty else {}),
    )
    r.event(2, 2.5, event="http-response", status=101)
    r.event(2, 2.6, event="k8s-resize", width=100, height=30)
    r.data(2, 2.7, Direction.GATEWAY_TO_CLIENT, b"$ ")
    r.data(2, 3.0, Direction.CLIENT_TO_GATEWAY, b"ls\r")
    r.data(2, 3.1, Direction.GATEWAY_TO_CLIENT, b"ls\r\nfile\r\n$ \xc3")
    r.event(2, 3.5, event="k8s-resize", width=120, height=40)
    r.data(2, 3.6, Direction.GATEWAY_TO_CLIENT, b"\xa9")
    r.event(2, 4.0, event="k8s-exit", code=0)
    r.event(2, 4.1, event="http-end", status=101)
    return r.records


class AsciicastTests(SynchronousTestCase):
    def export(self, records: list[Record], **options: object) -> list[object]:
        out = io.StringIO()
        export_asciicast(records, out, ExportOptions(session_id="s1", **options))  # type: ignore[arg-type]
        return [json.loads(line) for line in out.getvalue().splitlines()]

    def test_terminal(self) -> None:
        header, *events = self.export(session(), wall_start_ns=1_000 * NS)
        self.assertEqual((header["width"], header["height"]), (100, 30))
        self.assertEqual(header["command"], "exec shop/web: sh")
        self.assertEqual(header["timestamp"], 1002)
        self.assertEqual(
            events,
            [
                [0.2, "o", "$ "],
                [0.6, "o", "ls\r\nfile\r\n$ "],
                [1.0, "r", "120x40"],
                [1.1, "o", "\u00e9"],
            ],
        )

    def test_input(self) -> None:
        _, *events = self.export(session(), input=True)
        self.assertIn([0.5, "i", "ls\r"], events)

    def test_no_terminal(self) -> None:
        with self.assertRaises(NoExport):
            self.export(session(tty=False))
        with self.assertRaises(NoExport):
            self.export(session(), channel=1)
