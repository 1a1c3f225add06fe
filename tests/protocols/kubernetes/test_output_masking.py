"""
Value detectors over exec and attach streams (kubernetes/output_masking.py
and the masking directions of kubernetes/relay.py), in memory: what the
client is sent and what is recorded, over WebSocket and SPDY, values split
across messages, held lines released by time and before the exit status.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase
from wsproto.frame_protocol import FrameProtocol

from gatehouse.policy.masking import Masker, MaskingRule
from gatehouse.protocols.http.streams import StreamBytes, StreamEvent
from gatehouse.protocols.kubernetes.output_masking import LineMasker
from gatehouse.protocols.kubernetes.relay import stream_observers
from gatehouse.protocols.kubernetes.request import classify
from gatehouse.protocols.kubernetes.spdy import (
    Data,
    Ping,
    RstStream,
    SpdyFrameReader,
    SpdyFrameWriter,
    SynReply,
    SynStream,
    WindowUpdate,
)

from .test_relay import EXEC, SPDY_101, WS_101, client_frames, server_frames

CARD = "4111 1111 1111 1111"
VALUES = Masker([MaskingRule("m", detectors=frozenset({"card", "email"}))])
FORWARD = classify("POST", b"/api/v1/namespaces/shop/pods/web/portforward?ports=5432")
FORWARD_101 = [
    (b"upgrade", b"SPDY/3.1"),
    (b"x-stream-protocol-version", b"portforward.k8s.io"),
]


def recorded(items: object, stream: str) -> bytes:
    """The recorded bytes of C{stream} among C{items}."""
    return b"".join(
        i.data
        for i in items
        if isinstance(i, StreamBytes) and i.stream == stream  # type: ignore[attr-defined]
    )


def ws_payloads(wire: bytes) -> list[bytes]:
    """The messages a client reads from C{wire} (server frames)."""
    parser = FrameProtocol(client=True, extensions=[])
    parser.receive_bytes(wire)
    return [bytes(f.payload) for f in parser.received_frames()]


class LineMaskerTests(SynchronousTestCase):
    """Line by line, per stream."""

    def test_split_value(self) -> None:
        """A value split over two chunks is masked once its line is whole."""
        masker = LineMasker(VALUES)
        self.assertEqual(masker.feed("out", b"card 4111 1111 "), b"")
        self.assertTrue(masker.holding())
        released = masker.feed("out", b"1111 1111 ok\nnext")
        self.assertNotIn(CARD.encode(), released)
        self.assertIn(b"**** **** ****", released)
        self.assertTrue(released.endswith(b" ok\n"))
        self.assertEqual(masker.masked, 1)
        self.assertEqual(masker.flush(), {"out": b"next"})
        self.assertFalse(masker.holding())

    def test_streams_apart(self) -> None:
        """Two streams' unfinished lines are not joined."""
        masker = LineMasker(VALUES)
        masker.feed("out", b"4111 1111 ")
        masker.feed("err", b"1111 1111\n")
        self.assertEqual(masker.flush(["out"]), {"out": b"4111 1111 "})

    def test_bytes_kept(self) -> None:
        """Text without a value, and bytes that are not UTF-8, go unchanged."""
        masker = LineMasker(VALUES)
        data = b"\xff\xfe binary \x00\n"
        self.assertEqual(masker.feed("out", data), data)
        out = masker.feed("out", b"\xff mail a@b.example \xfe\n")
        self.assertTrue(out.startswith(b"\xff mail ") and out.endswith(b" \xfe\n"))
        self.assertNotIn(b"a@b.example", out)

    def test_limit(self) -> None:
        """
        An unfinished line past the limit is released but for its tail,
        cut where no value crosses: the value comes out masked later.
        """
        masker = LineMasker(VALUES, limit=64)
        self.assertEqual(masker.feed("out", b"x" * 40), b"")
        out = masker.feed("out", b" " + CARD.encode() + b" " + b"y" * 10)
        self.assertEqual(out, b"x" * 39)
        rest = masker.feed("out", b"\n")
        self.assertNotIn(CARD.encode(), out + rest)
        self.assertIn(b"**** **** **** 1111", rest)
        self.assertEqual(len(out + rest), 40 + 1 + len(CARD) + 1 + 10 + 1)

    def test_long_line_value_across_the_limit(self) -> None:
        """A value crossing the 64 KiB mark of a line with no newline is masked."""
        _, target = stream_observers(EXEC, WS_101, VALUES)
        wire = b""
        items: list[object] = []
        for message in (
            b"\x01" + b"x" * 65530 + b" 4111 1111",
            b"\x01 1111 1111 end\n",
        ):
            out, found = target.feed(server_frames(message))
            wire += out
            items += found
        shown = b"".join(p[1:] for p in ws_payloads(wire))
        self.assertNotIn(CARD.encode(), shown)
        self.assertNotIn(CARD.encode(), recorded(items, "stdout"))
        self.assertTrue(shown.endswith(b"1111 end\n"))


class WebSocketOutputTests(SynchronousTestCase):
    """remotecommand over WebSocket with detectors."""

    def test_output_masked_both_ways(self) -> None:
        """
        The client is sent stdout without the value; the recording neither;
        a held unfinished line goes out on flush, and before the exit status.
        """
        _, target = stream_observers(EXEC, WS_101, VALUES)
        out, items = target.feed(server_frames(b"\x01card " + CARD[:10].encode()))
        self.assertEqual((out, recorded(items, "stdout")), (b"", b""))
        self.assertTrue(target.holding())
        out, items = target.feed(server_frames(b"\x01" + CARD[10:].encode() + b"\n$ "))
        [message] = ws_payloads(out)
        self.assertEqual(message[:1], b"\x01")
        self.assertNotIn(CARD.encode(), message)
        self.assertIn(b"**** **** ****", message)
        self.assertIn(b"card ", message)
        self.assertEqual(recorded(items, "stdout"), message[1:])
        # The prompt waits; flushed (the relay's timer), it goes out.
        out, items = target.flush()
        self.assertEqual(ws_payloads(out), [b"\x01$ "])
        self.assertEqual(target.masked, 1)
        # Held output goes before the exit status.
        target.feed(server_frames(b"\x01bye " + CARD.encode()))
        out, items = target.feed(server_frames(b'\x03{"status":"Success"}'))
        payloads = ws_payloads(out)
        self.assertEqual([p[:1] for p in payloads], [b"\x01", b"\x03"])
        self.assertNotIn(CARD.encode(), payloads[0])
        names = [i.name if isinstance(i, StreamEvent) else i.stream for i in items]
        self.assertEqual(names[0], "stdout")
        self.assertIn("k8s-stream-error", names)

    def test_typed_value_masked_in_recording(self) -> None:
        """
        A value typed a key at a time reaches the target as typed and is
        masked in the recording, whose lines wait for their newline.
        """
        client, _ = stream_observers(EXEC, WS_101, VALUES)
        kept = b""
        for key in (CARD + "\r").encode():
            out, items = client.feed(client_frames(b"\x00" + bytes([key])))
            self.assertTrue(out)  # forwarded at once
            kept += recorded(items, "stdin")
        kept += recorded(client.finish(), "stdin")
        self.assertEqual(len(kept), len(CARD) + 1)
        self.assertNotIn(CARD.encode(), kept)

    def test_other_units_pass_held_output(self) -> None:
        """
        A ping, a resize, an empty message or another stream's empty data
        between two halves of a line does not release the first half: the
        value stays masked for the client and the recording.
        """
        client, target = stream_observers(EXEC, WS_101, VALUES)
        out = b""
        items: list[object] = []
        for message in (b"\x01card 4111 1111", b"\x02", b"\x01 1111 1111\n"):
            wire, found = target.feed(server_frames(message))
            out += wire
            items += found
        shown = b"".join(p[1:] for p in ws_payloads(out) if p[:1] == b"\x01")
        self.assertNotIn(CARD.encode(), shown)
        self.assertNotIn(CARD.encode(), recorded(items, "stdout"))
        # Typed a key at a time with a resize in the middle: the recording
        # of stdin waits for the line.
        kept = b""
        for i, key in enumerate(CARD.encode() + b"\r"):
            _, found = client.feed(client_frames(b"\x00" + bytes([key])))
            kept += recorded(found, "stdin")
            if i == 7:
                _, found = client.feed(client_frames(b'\x04{"Width":80,"Height":24}'))
                kept += recorded(found, "stdin")
        kept += recorded(client.finish(), "stdin")
        self.assertNotIn(CARD.encode(), kept)

    def test_recording_by_whole_lines(self) -> None:
        """
        A value the quiet time split for the client is whole, and masked,
        in the recording: it keeps the target's text by lines.
        """
        _, target = stream_observers(EXEC, WS_101, VALUES)
        target.feed(server_frames(b"\x01mail bob"))
        target.flush()  # the relay's timer
        _, items = target.feed(
            server_frames(b"@example.com ok\n"[0:0] + b"\x01@example.com ok\n")
        )
        kept = recorded(items, "stdout")
        self.assertTrue(kept.startswith(b"mail ") and kept.endswith(b" ok\n"), kept)
        self.assertNotIn(b"bob", kept)

    def test_no_detectors(self) -> None:
        """Without detectors frames go on as they come (no holding)."""
        _, target = stream_observers(EXEC, WS_101)
        out, _ = target.feed(server_frames(b"\x01" + CARD.encode()))
        self.assertEqual(ws_payloads(out), [b"\x01" + CARD.encode()])
        self.assertFalse(target.holding())


class SpdyOutputTests(SynchronousTestCase):
    """remotecommand over SPDY with detectors."""

    def setUp(self) -> None:
        self.client, self.target = stream_observers(EXEC, SPDY_101, VALUES)
        self.to_target = SpdyFrameWriter()
        self.to_client = SpdyFrameWriter()
        self.read = SpdyFrameReader()
        for stream_id, kind in ((1, "error"), (3, "stdout")):
            frame = SynStream(stream_id, (("streamtype", kind),))
            self.client.feed(self.to_target.encode(frame))
            self.target.feed(self.to_client.encode(SynReply(stream_id, ())))

    def frames(self, wire: bytes) -> list[object]:
        return [f.frame for f in self.read.feed(wire)]

    def test_output_masked(self) -> None:
        """Data frames are written again with the value masked; FIN kept."""
        out, items = self.target.feed(
            self.to_client.encode(Data(3, b"card " + CARD.encode()[:7]))
        )
        self.assertEqual(out, b"")
        out, items = self.target.feed(
            self.to_client.encode(Data(3, CARD.encode()[7:] + b"\nend", fin=True))
        )
        [frame] = self.frames(out)
        assert isinstance(frame, Data)
        self.assertEqual((frame.stream_id, frame.fin), (3, True))
        self.assertNotIn(CARD.encode(), frame.data)
        self.assertIn(b"**** **** ****", frame.data)
        self.assertTrue(frame.data.startswith(b"card ") and frame.data.endswith(b"end"))
        self.assertEqual(recorded(items, "stdout"), frame.data)

    def test_pings_pass_held_output(self) -> None:
        """Control frames between two halves of a line do not release it."""
        for between in (Ping(2), WindowUpdate(0, 65536)):
            self.setUp()
            out = b""
            items: list[object] = []
            frames = (Data(3, b"card 4111 1111"), between, Data(3, b" 1111 1111\n"))
            for frame in frames:
                wire, found = self.target.feed(self.to_client.encode(frame))
                out += wire
                items += found
            shown = b"".join(f.data for f in self.frames(out) if isinstance(f, Data))
            self.assertNotIn(CARD.encode(), shown, between)
            self.assertIn(b"**** **** **** 1111", shown, between)
            self.assertNotIn(CARD.encode(), recorded(items, "stdout"), between)

    def test_other_stream_closing_passes_held_output(self) -> None:
        """
        The target closing another stream (its side of stdin) between two
        halves of a stdout line does not release the first half.
        """
        self.client.feed(
            self.to_target.encode(SynStream(5, (("streamtype", "stdin"),)))
        )
        self.target.feed(self.to_client.encode(SynReply(5, ())))
        out = b""
        for frame in (
            Data(3, b"card 4111 1111"),
            Data(5, b"", fin=True),
            Data(3, b" 1111 1111\n"),
        ):
            wire, _ = self.target.feed(self.to_client.encode(frame))
            out += wire
        shown = b"".join(f.data for f in self.frames(out) if isinstance(f, Data))
        self.assertNotIn(CARD.encode(), shown)

    def test_unread_data_dropped(self) -> None:
        """Data of a stream the client reset does not reach the client."""
        self.client.feed(self.to_target.encode(RstStream(3, 5)))
        out, _ = self.target.feed(
            self.to_client.encode(Data(3, b"card " + CARD.encode() + b"\n"))
        )
        self.assertNotIn(CARD.encode(), out)

    def test_big_frames_split(self) -> None:
        """Held text and a frame of the maximum size go on as frames a reader takes."""
        self.target.feed(self.to_client.encode(Data(3, b"y" * 60000)))
        out, _ = self.target.feed(
            self.to_client.encode(Data(3, b"z" * ((1 << 20) - 1) + b"\n"))
        )
        frames = self.frames(out)
        self.assertGreater(len(frames), 1)
        self.assertEqual(
            sum(len(f.data) for f in frames if isinstance(f, Data)),
            60000 + (1 << 20),
        )

    def test_flush(self) -> None:
        self.target.feed(self.to_client.encode(Data(3, b"prompt> ")))
        out, _ = self.target.flush()
        [frame] = self.frames(out)
        self.assertEqual(frame, Data(3, b"prompt> "))


class PortForwardTests(SynchronousTestCase):
    def test_not_masked(self) -> None:
        """Port-forward carries any protocol: its bytes are not touched."""
        _, target = stream_observers(FORWARD, FORWARD_101, VALUES)
        self.assertFalse(target.holding())
        self.assertEqual(target.masked, 0)  # type: ignore[attr-defined]
