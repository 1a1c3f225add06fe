"""The recording's view of relayed streams (kubernetes/relay.py), in memory."""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase
from wsproto.frame_protocol import CloseReason, FrameProtocol

from gatehouse.protocols.http.streams import StreamBytes, StreamEvent, StreamViolation
from gatehouse.protocols.kubernetes.relay import offered_protocols, stream_observers
from gatehouse.protocols.kubernetes.request import classify
from gatehouse.protocols.kubernetes.spdy import (
    GoAway,
    SpdyFrameReader,
    SpdyFrameWriter,
    SynStream,
)

EXEC = classify(
    "GET",
    b"/api/v1/namespaces/shop/pods/web/exec?command=sh&stdin=true&stdout=true",
)
WS_101 = [(b"upgrade", b"websocket"), (b"sec-websocket-protocol", b"v5.channel.k8s.io")]
SPDY_101 = [
    (b"upgrade", b"SPDY/3.1"),
    (b"x-stream-protocol-version", b"v4.channel.k8s.io"),
]


def client_frames(*payloads: bytes) -> bytes:
    """Binary messages as a client writes them (masked)."""
    writer = FrameProtocol(client=True, extensions=[])
    return b"".join(writer.send_data(p, True) for p in payloads)


def server_frames(*payloads: bytes) -> bytes:
    writer = FrameProtocol(client=False, extensions=[])
    return b"".join(writer.send_data(p, True) for p in payloads)


class WebSocketTests(SynchronousTestCase):
    def test_stdin_and_stdout(self) -> None:
        """Channel 0 from the client is stdin; 1 and 2 from the pod are out and err."""
        from_client, from_target = stream_observers(EXEC, WS_101)
        wire = client_frames(b"\x00echo hi\n")
        out, items = from_client.feed(wire[:3])
        self.assertEqual((out, list(items)), (b"", []))
        out, items = from_client.feed(wire[3:])
        self.assertEqual(
            [i for i in items if isinstance(i, StreamBytes)],
            [StreamBytes("stdin", b"echo hi\n")],
        )
        # Written again for the target: a masked frame with the same payload.
        parser = FrameProtocol(client=False, extensions=[])
        parser.receive_bytes(out)
        [frame] = list(parser.received_frames())
        self.assertEqual(bytes(frame.payload), b"\x00echo hi\n")
        out, items = from_target.feed(server_frames(b"\x01hi\n", b"\x02oops\n"))
        self.assertEqual(
            [i for i in items if isinstance(i, StreamBytes)],
            [StreamBytes("stdout", b"hi\n"), StreamBytes("stderr", b"oops\n")],
        )

    def test_exit_status(self) -> None:
        _, from_target = stream_observers(EXEC, WS_101)
        status = (
            b'{"metadata":{},"status":"Failure","reason":"NonZeroExitCode",'
            b'"details":{"causes":[{"reason":"ExitCode","message":"3"}]}}'
        )
        _, items = from_target.feed(server_frames(b"\x03" + status))
        closing = list(from_target.finish())
        exits = [
            i
            for i in [*items, *closing]
            if isinstance(i, StreamEvent) and i.name == "k8s-exit"
        ]
        self.assertEqual([e.fields["code"] for e in exits], [3])

    def test_unmasked_client_frame_cut(self) -> None:
        """A client frame without a mask breaks RFC 6455: the stream is cut."""
        from_client, _ = stream_observers(EXEC, WS_101)
        with self.assertRaises(StreamViolation):
            from_client.feed(server_frames(b"\x00rm -rf /\n"))

    def test_text_message_cut(self) -> None:
        from_client, _ = stream_observers(EXEC, WS_101)
        writer = FrameProtocol(client=True, extensions=[])
        with self.assertRaises(StreamViolation):
            from_client.feed(writer.send_data("\x00ls", True))

    def test_close_recorded(self) -> None:
        from_client, _ = stream_observers(EXEC, WS_101)
        writer = FrameProtocol(client=True, extensions=[])
        out, items = from_client.feed(writer.close(CloseReason.NORMAL_CLOSURE, "bye"))
        self.assertTrue(out)
        self.assertEqual(
            [i for i in items if isinstance(i, StreamEvent)],
            [
                StreamEvent(
                    "websocket-close", {"from": "client", "code": 1000, "reason": "bye"}
                )
            ],
        )


class OfferTests(SynchronousTestCase):
    def test_only_read_protocols_offered(self) -> None:
        headers = [
            (b"upgrade", b"websocket"),
            (b"sec-websocket-protocol", b"v5.channel.k8s.io, base64.channel.k8s.io"),
        ]
        self.assertEqual(
            offered_protocols(EXEC, headers),
            (b"sec-websocket-protocol", ["v5.channel.k8s.io"]),
        )
        spdy = [
            (b"upgrade", b"SPDY/3.1"),
            (b"x-stream-protocol-version", b"v5.channel.k8s.io"),
            (b"x-stream-protocol-version", b"v4.channel.k8s.io"),
            (b"x-stream-protocol-version", b"v3.channel.k8s.io"),
        ]
        self.assertEqual(
            offered_protocols(EXEC, spdy),
            (b"x-stream-protocol-version", ["v4.channel.k8s.io"]),
        )

    def test_nothing_readable_refused(self) -> None:
        headers = [
            (b"upgrade", b"websocket"),
            (b"sec-websocket-protocol", b"v3.channel.k8s.io"),
        ]
        self.assertIsInstance(offered_protocols(EXEC, headers), str)
        self.assertIsInstance(offered_protocols(EXEC, [(b"upgrade", b"h2c")]), str)


class SpdyFarewellTests(SynchronousTestCase):
    def test_goaway_after_violation(self) -> None:
        """
        A SPDY stream cut for a violation says GOAWAY (PROTOCOL_ERROR,
        naming the last stream the client opened) to each side, once.
        """
        from_client, from_target = stream_observers(EXEC, SPDY_101)
        to_target, to_client = SpdyFrameWriter(), SpdyFrameWriter()
        for stream_id, kind in ((1, "error"), (3, "stdout")):
            from_client.feed(
                to_target.encode(SynStream(stream_id, (("streamtype", kind),)))
            )
        with self.assertRaises(StreamViolation):
            from_target.feed(to_client.encode(SynStream(2, (("streamtype", "x"),))))
        for direction in (from_target, from_client):
            [read] = SpdyFrameReader().feed(direction.farewell("broken"))
            self.assertEqual(read.frame, GoAway(3, 1))
            self.assertEqual(direction.farewell("again"), b"")
