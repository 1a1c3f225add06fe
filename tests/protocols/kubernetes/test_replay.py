"""
Tests for the HTTP/Kubernetes replay (L{gatehouse.protocols.http.replay}),
over hand-built records in the layout of KUBE-SPEC ("Round 2"): channel 0
for the connection, channel c for the c-th request, stderr on c | 0x8000.
"""

from __future__ import annotations

import io
import json
from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from gatehouse.protocols.http.replay import render_http
from gatehouse.protocols.kubernetes.asciicast import export_asciicast
from gatehouse.recording.format import Direction, Record, RecordType
from gatehouse.recording.render import exporter_for, render, renderer_for

MS = 1_000_000
IN = Direction.CLIENT_TO_GATEWAY
OUT = Direction.GATEWAY_TO_CLIENT
#: 2023-11-14 22:13:20 UTC
STARTED = 1_700_000_000.0


class _Builder:
    """Records with increasing seq and mono (1 ms apart unless told)."""

    def __init__(self, protocol: str = "kubernetes"):
        self.records: list[Record] = []
        self.mono = 0
        self._add(
            RecordType.META,
            Direction.GATEWAY,
            0,
            json.dumps(
                {
                    "session_id": "0192f1a0-0000-7000-8000-00000000cafe",
                    "protocol": protocol,
                    "client_address": "127.0.0.1:50000",
                    "started": STARTED,
                }
            ).encode(),
        )

    def _add(self, rtype: int, direction: int, channel: int, payload: bytes) -> None:
        self.mono += MS
        self.records.append(
            Record(len(self.records), rtype, direction, channel, self.mono, payload)
        )

    def event(self, channel: int, name: str, /, **fields: Any) -> _Builder:
        body = json.dumps({"event": name, **fields}).encode()
        self._add(RecordType.EVENT, Direction.GATEWAY, channel, body)
        return self

    def data(self, channel: int, direction: int, payload: bytes) -> _Builder:
        self._add(RecordType.DATA, direction, channel, payload)
        return self

    def wait(self, seconds: float) -> _Builder:
        self.mono += int(seconds * 1_000_000_000)
        return self

    def close(self) -> _Builder:
        body = json.dumps({"reason": "client closed the connection"}).encode()
        self._add(RecordType.CLOSE, Direction.GATEWAY, 0, body)
        return self

    def request(self, channel: int, description: str, **fields: Any) -> _Builder:
        return self.event(
            channel,
            "http-request",
            number=channel,
            method=fields.pop("method", "GET"),
            target=fields.pop("target", "/api/v1/namespaces/shop/pods"),
            description=description,
            **fields,
        )

    def rendered(self) -> str:
        out = io.StringIO()
        render(self.records, out)
        return out.getvalue()


def _session() -> _Builder:
    return _Builder().event(0, "authenticated", name="alice", subject="u-1")


class TimelineTests(SynchronousTestCase):
    """Requests as one line each, with their outcome."""

    def test_registered(self) -> None:
        """Both protocols replay through the timeline."""
        self.assertIs(renderer_for("http"), render_http)
        self.assertIs(renderer_for("kubernetes"), render_http)
        self.assertIs(exporter_for("kubernetes", "asciicast"), export_asciicast)

    def test_list(self) -> None:
        """A list: time, who, what, status, items counted, size and time."""
        body = json.dumps({"kind": "PodList", "items": [{}, {}, {}]}).encode()
        text = (
            _session()
            .wait(3 * 60 + 11)
            .request(1, "list pods -n shop", verb="list", resource="pods")
            .event(1, "decision", action="allow")
            .event(1, "http-response", status=200, headers=[])
            .data(1, OUT, body)
            .event(1, "http-end", status=200, bytes_in=0, bytes_out=3100, seconds=0.014)
            .close()
            .rendered()
        )
        self.assertIn("-- authenticated alice", text)
        self.assertIn(
            "22:16:31 alice list pods -n shop → 200, 3 items (3.1 kB, 14 ms)", text
        )
        self.assertIn("-- session closed: client closed the connection", text)

    def test_table_rows_and_incomplete(self) -> None:
        """Table rows are counted; a body that is not whole JSON is not."""
        text = (
            _session()
            .request(1, "list pods")
            .event(1, "http-response", status=200)
            .data(1, OUT, json.dumps({"kind": "Table", "rows": [{}]}).encode())
            .event(1, "http-end", status=200, bytes_out=20, seconds=0.001)
            .request(2, "list secrets")
            .event(2, "http-response", status=200)
            .data(2, OUT, b'{"items": [{}, ')
            .event(
                2,
                "http-end",
                status=200,
                bytes_out=99999,
                seconds=0.002,
                recorded_out=15,
            )
            .rendered()
        )
        self.assertIn("alice list pods → 200, 1 item (20 B, 1 ms)", text)
        self.assertIn("alice list secrets → 200 (100.0 kB, 2 ms)", text)

    def test_denied(self) -> None:
        """A policy denial shows as refused with its message."""
        text = (
            _session()
            .request(1, "delete pod web -n shop", method="DELETE")
            .event(1, "decision", action="deny", message="no deletes in shop")
            .event(1, "http-response", status=403, by="gateway")
            .event(1, "http-end", status=403, bytes_out=200, seconds=0.001)
            .rendered()
        )
        self.assertIn(
            "alice delete pod web -n shop → 403 refused: no deletes in shop", text
        )

    def test_refused_before_exchange(self) -> None:
        """A request refused before it became an exchange has its own line."""
        text = (
            _session()
            .event(
                1,
                "http-refused",
                number=1,
                method="GET",
                target="/api",
                status=401,
                message="no token",
            )
            .rendered()
        )
        self.assertIn("alice GET /api → 401 refused: no token", text)

    def test_approval(self) -> None:
        """Approvals show under their request, where they happened."""
        text = (
            _session()
            .request(1, "delete pod web")
            .event(1, "approval-requested", approval_id="ap-1")
            .event(1, "approval-granted", approval_id="ap-1", approver="bob")
            .event(1, "http-response", status=200)
            .event(1, "http-end", status=200, bytes_out=10, seconds=2.5)
            .rendered()
        )
        lines = text.splitlines()
        head = next(i for i, line in enumerate(lines) if "delete pod web" in line)
        self.assertEqual(lines[head + 1], "  -- approval ap-1 requested")
        self.assertEqual(lines[head + 2], "  -- approval ap-1 granted by bob")
        self.assertIn("delete pod web → 200 (10 B, 2500 ms)", text)

    def test_watch(self) -> None:
        """A watch streams, then each event on its line."""
        events = b"".join(
            json.dumps({"type": kind, "object": {"metadata": {"name": name}}}).encode()
            + b"\n"
            for kind, name in [("ADDED", "x"), ("MODIFIED", "x"), ("DELETED", "y")]
        )
        text = (
            _session()
            .request(1, "watch configmaps", verb="watch", resource="configmaps")
            .event(1, "http-response", status=200)
            .data(1, OUT, events[:30])
            .data(1, OUT, events[30:])
            .event(1, "http-end", status=200, bytes_out=len(events), seconds=5)
            .rendered()
        )
        self.assertIn(
            "alice watch configmaps → 200, streaming\n"
            "  ADDED configmaps/x\n"
            "  MODIFIED configmaps/x\n"
            "  DELETED configmaps/y\n",
            text,
        )

    def test_exec(self) -> None:
        """An exec shows its streams, stderr and stdin marked, and exit status."""
        text = (
            _session()
            .request(1, "exec web -n shop -- sh", verb="create", subresource="exec")
            .event(1, "http-response", status=101)
            .event(1, "k8s-stream-open", stream=1, kind="stdout")
            .data(1, IN, b"echo hi\n")
            .data(1, OUT, b"hi\n")
            .data(1 | 0x8000, OUT, b"oops\n")
            .event(1, "k8s-resize", width=80, height=24)
            .event(
                1,
                "k8s-stream-error",
                stream=3,
                text=json.dumps({"kind": "Status", "message": "exit code 3"}),
            )
            .event(1, "websocket-close", code=1000, reason="", **{"from": "target"})
            .event(1, "k8s-exit", code=3, status="{}")
            .event(1, "http-end", status=101, bytes_out=0, seconds=1)
            .rendered()
        )
        self.assertIn("alice exec web -n shop -- sh\n", text)
        self.assertIn("  [stdin] echo hi\n", text)
        self.assertIn("  hi\n", text)
        self.assertIn("  [stderr] oops\n", text)
        self.assertIn("  -- resize 80x24\n", text)
        self.assertIn("  -- error stream: exit code 3\n", text)
        self.assertIn("  -- websocket closed by target (1000)\n", text)
        self.assertIn("  exit status 3\n", text)

    def test_port_forward(self) -> None:
        """Port-forward connections with their byte counts."""
        text = (
            _session()
            .request(1, "port-forward web 8080")
            .event(1, "http-response", status=101)
            .event(1, "k8s-stream", stream="data", key="8080#1", recorded_on=40000)
            .data(40000, IN, b"GET / HTTP/1.1\r\n\r\n")
            .data(40000, OUT, b"x" * 1234)
            .event(1, "http-end", status=101, seconds=1)
            .rendered()
        )
        self.assertIn("  port-forward 8080#1: 18 bytes in, 1,234 bytes out", text)

    def test_plain_http(self) -> None:
        """Plain HTTP requests show their method and target."""
        text = (
            _Builder("http")
            .event(0, "authenticated", name="alice")
            .event(1, "http-request", number=1, method="POST", target="/v1/things")
            .event(1, "http-response", status=201)
            .event(1, "http-end", status=201, bytes_out=2, seconds=0.003)
            .rendered()
        )
        self.assertIn("-- http session", text)
        self.assertIn("alice POST /v1/things → 201 (2 B, 3 ms)", text)

    def test_peer_text_escaped(self) -> None:
        """Nothing a peer sent reaches the terminal as a control sequence."""
        text = (
            _session()
            .request(1, "get pod \x1b]0;pwned\x07", target="/\x1b[2J")
            .event(1, "http-response", status=101)
            .data(1, OUT, b"\x1b]52;c;ZXZpbA==\x07out\n")
            .data(1 | 0x8000, OUT, b"\x9b31m\n")
            .event(1, "http-end", status=101, seconds=1)
            .event(
                1,
                "http-refused",
                number=9,
                method="G\x1bET",
                target="/",
                status=403,
                message="\x1b[31mno",
            )
            .rendered()
        )
        self.assertNotIn("\x1b", text)
        self.assertNotIn("\x9b", text)
        self.assertNotIn("\x07", text)

    def test_no_end(self) -> None:
        """A request without an end says so."""
        text = _session().request(1, "get pod web").rendered()
        self.assertIn("alice get pod web\n  -- no end recorded", text)

    def test_impersonation_refused(self) -> None:
        """A refused impersonation shows as its request's refusal."""
        text = (
            _session()
            .event(
                1,
                "http-impersonation-refused",
                method="GET",
                target="/api/v1/secrets",
                headers=[["impersonate-user", "admin"]],
            )
            .event(
                1,
                "http-refused",
                number=1,
                method="GET",
                target="/api/v1/secrets",
                status=403,
                message="impersonation is not allowed",
            )
            .rendered()
        )
        self.assertIn(
            '-- impersonation refused (headers [["impersonate-user", "admin"]])\n'
            "22:13:20 alice GET /api/v1/secrets → 403 refused: "
            "impersonation is not allowed\n",
            text,
        )

    def test_bad_records_go_on(self) -> None:
        """A record that cannot be shown is noted; the replay goes on."""
        builder = _session().request(1, "get pod web")
        builder.event(1, "http-end", status=200, seconds="soon", bytes_out=[])
        builder.data(1, OUT, b"\xff\x00").event(1, "k8s-exit", code=None)
        text = builder.request(2, "get pod db").rendered()
        self.assertIn("alice get pod web → 200 (?)", text)
        self.assertIn("alice get pod db\n  -- no end recorded", text)
