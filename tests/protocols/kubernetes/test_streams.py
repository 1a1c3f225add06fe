"""
Tests for L{gatehouse.protocols.kubernetes.streams}: the observers of exec,
attach and port-forward over SPDY and WebSocket, on frames and messages
built here and on the traffic of the real kubectl (1.28 speaks SPDY, 1.33
WebSocket) against L{kubectl_peer}.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet import defer, endpoints, protocol, reactor, task
from twisted.trial.unittest import SynchronousTestCase, TestCase

from gatehouse.protocols.kubernetes.spdy import (
    Data,
    Frame,
    GoAway,
    Headers,
    Ping,
    RstStream,
    SpdyFrameReader,
    SpdyFrameWriter,
    SynReply,
    SynStream,
    WindowUpdate,
)
from gatehouse.protocols.kubernetes.streams import (
    ExitStatus,
    ProtocolError,
    Resize,
    ResizeDecoder,
    StreamClosed,
    StreamData,
    StreamEvent,
    StreamObserver,
    StreamOpened,
    exit_status,
    observer_for,
)
from tests.protocols.kubernetes import kubectl_peer
from tests.protocols.kubernetes.test_spdy import split as _split

EXIT_3 = json.dumps(
    {
        "metadata": {},
        "status": "Failure",
        "message": "command terminated with non-zero exit code: exit 3",
        "reason": "NonZeroExitCode",
        "details": {"causes": [{"reason": "ExitCode", "message": "3"}]},
    }
).encode()


def events_of(
    observer: StreamObserver, log: Sequence[tuple[str, bytes]]
) -> list[StreamEvent]:
    """Feed C{log} ((side, data) in order) and the end; return every event."""
    events: list[StreamEvent] = []
    for side, data in log:
        for observed in getattr(observer, side).feed(data):
            events += observed.events
    return events + observer.finish()


class SpdyConversation:
    """Both directions of a SPDY connection, encoded as a log."""

    def __init__(self) -> None:
        self.writers = {"client": SpdyFrameWriter(), "server": SpdyFrameWriter()}
        self.log: list[tuple[str, bytes]] = []

    def send(self, side: str, *frames: Frame) -> SpdyConversation:
        for frame in frames:
            self.log.append((side, self.writers[side].encode(frame)))
        return self

    def open(
        self, stream_id: int, fin: bool = False, **headers: str
    ) -> SpdyConversation:
        self.send("client", SynStream(stream_id, tuple(headers.items()), fin=fin))
        return self.send("server", SynReply(stream_id, ()))


class ExitStatusTests(SynchronousTestCase):
    """L{exit_status} reads the error stream as client-go does."""

    def test_codes(self) -> None:
        self.assertEqual(exit_status(EXIT_3), ExitStatus(3, EXIT_3))
        success = b'{"metadata":{},"status":"Success"}'
        self.assertEqual(exit_status(success), ExitStatus(0, success))
        self.assertEqual(exit_status(b""), ExitStatus(0, b""))
        for failure in [
            b'{"status":"Failure","message":"container not found","reason":"NotFound"}',
            b"not json",
            b"[1]",
            b'{"status":"Failure","reason":"NonZeroExitCode"}',
            EXIT_3.replace(b'"message": "3"', b'"message": "300"'),
            EXIT_3.replace(b'"message": "3"', b'"message": "-3"'),
            EXIT_3.replace(b'"message": "3"', b'"message": 3'),
            b"\xff",
        ]:
            with self.subTest(failure=failure):
                self.assertEqual(exit_status(failure), ExitStatus(None, failure))


class ResizeTests(SynchronousTestCase):
    """L{ResizeDecoder}."""

    def test_sizes(self) -> None:
        stream = b'{"Width":80,"Height":24}\n{"width":100}\n{"Height":7,"Other":"x"}\n'
        for size in (1, 3, len(stream)):
            decoder = ResizeDecoder()
            sizes = []
            for i in range(0, len(stream), size):
                sizes += decoder.feed(stream[i : i + size])
            self.assertEqual(sizes, [Resize(80, 24), Resize(100, 0), Resize(0, 7)])
            self.assertFalse(decoder.pending())

    def test_refused(self) -> None:
        for bad in [
            b"[80, 24]",
            b'{"Width": 70000}',
            b'{"Width": -1}',
            b'{"Width": 1.5}',
            b'{"Width": true}',
            b'{"Width": 1, "width": 2}',
            b"garbage",
            b"\xff\xfe",
            b'{"Width": "' + b"x" * 2000,
        ]:
            with self.subTest(bad=bad):
                self.assertRaises(ProtocolError, ResizeDecoder().feed, bad)

    def test_split_utf8(self) -> None:
        """A character split between chunks waits for its end."""
        data = '{"Width":1,"é":2}'.encode()
        decoder = ResizeDecoder()
        cut = data.index(b"\xc3") + 1
        self.assertEqual(decoder.feed(data[:cut]), [])
        self.assertEqual(decoder.feed(data[cut:]), [Resize(1, 0)])


class SpdyRemoteCommandTests(SynchronousTestCase):
    """remotecommand over SPDY."""

    def conversation(self) -> SpdyConversation:
        c = SpdyConversation()
        c.open(1, streamtype="error").open(3, streamtype="stdin")
        c.open(5, streamtype="stdout").open(7, streamtype="stderr")
        return c.open(9, streamtype="resize")

    def test_exec(self) -> None:
        c = self.conversation()
        c.send("client", Data(9, b'{"Width":80,"Height":24}\n'))
        c.send("client", Data(3, b"ls\n"), Data(3, b"", fin=True))
        c.send("server", Data(5, b"a b\n"), Data(7, b"oops"), Ping(2))
        c.send("server", Data(5, b"", fin=True), Data(7, b"", fin=True))
        c.send("server", Data(1, EXIT_3[:10]), Data(1, EXIT_3[10:], fin=True))
        c.send("client", Data(9, b"", fin=True), GoAway(0))
        events = events_of(observer_for("exec", "spdy", "v4.channel.k8s.io"), c.log)
        kinds = ["error", "stdin", "stdout", "stderr", "resize"]
        self.assertEqual(
            events,
            [StreamOpened(2 * i + 1, kind) for i, kind in enumerate(kinds)]
            + [
                Resize(80, 24),
                StreamData(3, "stdin", b"ls\n"),
                StreamClosed(3, "stdin"),
                StreamData(5, "stdout", b"a b\n"),
                StreamData(7, "stderr", b"oops"),
                StreamClosed(5, "stdout"),
                StreamClosed(7, "stderr"),
                StreamData(1, "error", EXIT_3[:10]),
                StreamData(1, "error", EXIT_3[10:]),
                ExitStatus(3, EXIT_3),
                StreamClosed(1, "error"),
                StreamClosed(9, "resize"),
            ],
        )

    def test_success_and_reset(self) -> None:
        """An error stream closed empty is exit 0; a reset closes a stream."""
        c = SpdyConversation().open(1, fin=True, streamtype="error")
        c.open(3, streamtype="stdout")
        c.send("client", RstStream(3, 5))
        c.send("server", Data(3, b"late"))  # the peer drops it
        c.send("server", Data(1, b"", fin=True), WindowUpdate(0, 10))
        events = events_of(observer_for("attach", "spdy", "v4.channel.k8s.io"), c.log)
        self.assertEqual(
            events,
            [
                StreamOpened(1, "error"),
                StreamOpened(3, "stdout"),
                StreamClosed(3, "stdout"),
                ExitStatus(0, b""),
                StreamClosed(1, "error"),
            ],
        )

    def test_finish(self) -> None:
        """At the end, an error stream with data gives its status."""
        c = SpdyConversation().open(1, streamtype="error").open(3, streamtype="stdin")
        c.send("server", Data(1, EXIT_3))
        events = events_of(observer_for("exec", "spdy", "v4.channel.k8s.io"), c.log)
        self.assertEqual(
            events[-3:],
            [ExitStatus(3, EXIT_3), StreamClosed(1, "error"), StreamClosed(3, "stdin")],
        )

    def test_violations(self) -> None:
        def base() -> SpdyConversation:
            return (
                SpdyConversation()
                .open(1, streamtype="stdin")
                .open(3, streamtype="stdout")
            )

        cases = {
            "server opens": SpdyConversation().send(
                "server", SynStream(2, (("streamtype", "stdout"),))
            ),
            "even id": SpdyConversation().send(
                "client", SynStream(2, (("streamtype", "stdout"),))
            ),
            "id not increasing": base().send(
                "client", SynStream(1, (("streamtype", "stderr"),))
            ),
            "unknown type": SpdyConversation().open(1, streamtype="stdfoo"),
            "no type": SpdyConversation().open(1, port="80"),
            "NUL in type": SpdyConversation().open(1, streamtype="stdin\x00stdout"),
            "duplicate type": base().open(5, streamtype="stdin"),
            "port-forward type": SpdyConversation().open(1, streamtype="data"),
            "server writes stdin": base().send("server", Data(1, b"x")),
            "client writes stdout": base().send("client", Data(3, b"x")),
            "data after fin": base().send(
                "client", Data(1, b"", fin=True), Data(1, b"x")
            ),
            "fin twice": base().send(
                "client", Data(1, b"", fin=True), Data(1, b"", fin=True)
            ),
            "unopened stream": base().send("client", Data(5, b"x")),
            "reply from client": base().send("client", SynReply(1, ())),
            "second reply": base().send("server", SynReply(1, ())),
            "resize not JSON": SpdyConversation()
            .open(1, streamtype="resize")
            .send("client", Data(1, b"[1,2]")),
            "resize cut": SpdyConversation()
            .open(1, streamtype="resize")
            .send("client", Data(1, b'{"Width"', fin=True)),
        }
        for name, conversation in cases.items():
            with self.subTest(name):
                observer = observer_for("exec", "spdy", "v4.channel.k8s.io")
                self.assertRaises(ProtocolError, events_of, observer, conversation.log)

    def test_headers_frame(self) -> None:
        """A HEADERS frame changes nothing the observer reports."""
        c = SpdyConversation().open(1, streamtype="stdin")
        c.send("client", Headers(1, (("streamtype", "stdout"),), fin=True))
        events = events_of(observer_for("exec", "spdy", "v4.channel.k8s.io"), c.log)
        self.assertEqual(events, [StreamOpened(1, "stdin"), StreamClosed(1, "stdin")])


class SpdyPortForwardTests(SynchronousTestCase):
    """portforward over SPDY, and tunneled in WebSocket."""

    def test_connection(self) -> None:
        c = SpdyConversation()
        c.open(1, fin=True, streamtype="error", port="8080", requestid="0")
        c.open(3, streamtype="data", port="8080", requestid="0")
        c.send("client", Data(3, b"GET /"), Data(3, b"", fin=True))
        c.send("server", Data(3, b"200"), Data(3, b"", fin=True))
        c.send("server", Data(1, b"", fin=True))
        events = events_of(
            observer_for("portforward", "spdy", "portforward.k8s.io"), c.log
        )
        self.assertEqual(
            events,
            [
                StreamOpened(1, "port-error", 8080, "0"),
                StreamOpened(3, "data", 8080, "0"),
                StreamData(3, "data", b"GET /"),
                StreamData(3, "data", b"200"),
                StreamClosed(3, "data"),
                StreamClosed(1, "port-error"),
            ],
        )
        # Tunneled: the same bytes in any messages.
        tunneled = observer_for(
            "portforward", "websocket", "SPDY/3.1+portforward.k8s.io"
        )
        split = [(side, bytes([b])) for side, data in c.log for b in data]
        self.assertEqual(events_of(tunneled, split), events)

    def test_request_id_again(self) -> None:
        """Once a connection's streams ended, its request id may come again."""
        pair = {"port": "80", "requestid": "0"}
        c = SpdyConversation().open(1, fin=True, streamtype="error", **pair)
        c.open(3, streamtype="data", **pair)
        c.send("client", Data(3, b"", fin=True))
        c.send("server", Data(3, b"", fin=True), Data(1, b"", fin=True))
        c.open(5, streamtype="data", **pair)
        c.send("client", RstStream(5, 5))
        c.open(7, streamtype="data", **pair)
        events = events_of(
            observer_for("portforward", "spdy", "portforward.k8s.io"), c.log
        )
        opened = [e.stream for e in events if isinstance(e, StreamOpened)]
        self.assertEqual(opened, [1, 3, 5, 7])

    def test_error(self) -> None:
        """The server's message on the error stream is data of kind port-error."""
        c = SpdyConversation()
        c.open(1, fin=True, streamtype="error", port="81", requestid="7")
        c.send("server", Data(1, b"connection refused", fin=True))
        events = events_of(
            observer_for("portforward", "spdy", "portforward.k8s.io"), c.log
        )
        self.assertIn(StreamData(1, "port-error", b"connection refused"), events)

    def test_violations(self) -> None:
        cases = {
            "no port": {"streamtype": "data", "requestid": "0"},
            "port 0": {"streamtype": "data", "port": "0", "requestid": "0"},
            "port 65536": {"streamtype": "data", "port": "65536", "requestid": "0"},
            "port +80": {"streamtype": "data", "port": "+80", "requestid": "0"},
            "port 080": {"streamtype": "data", "port": "080", "requestid": "0"},
            "no request id": {"streamtype": "data", "port": "80"},
            "exec type": {"streamtype": "stdin", "port": "80", "requestid": "0"},
        }
        for name, headers in cases.items():
            with self.subTest(name):
                c = SpdyConversation().open(1, **headers)
                observer = observer_for("portforward", "spdy", "portforward.k8s.io")
                self.assertRaises(ProtocolError, events_of, observer, c.log)
        pair = {"port": "80", "requestid": "0"}
        for name, conversation in {
            "second data stream": SpdyConversation()
            .open(1, streamtype="data", **pair)
            .open(3, streamtype="data", **pair),
            "client writes error": SpdyConversation()
            .open(1, streamtype="error", **pair)
            .send("client", Data(1, b"x")),
        }.items():
            with self.subTest(name):
                observer = observer_for("portforward", "spdy", "portforward.k8s.io")
                self.assertRaises(ProtocolError, events_of, observer, conversation.log)


class WebSocketRemoteCommandTests(SynchronousTestCase):
    """remotecommand over WebSocket channels."""

    def test_v5(self) -> None:
        log = [
            ("client", b"\x04" + b'{"Width":80,"Height":24}'),
            ("client", b"\x00ls\n"),
            ("client", b""),
            ("client", b"\xff\x00"),
            ("server", b"\x01a\n"),
            ("server", b"\x02"),
            ("server", b"\x03" + EXIT_3),
        ]
        events = events_of(observer_for("exec", "websocket", "v5.channel.k8s.io"), log)
        self.assertEqual(
            events,
            [
                StreamOpened(4, "resize"),
                Resize(80, 24),
                StreamOpened(0, "stdin"),
                StreamData(0, "stdin", b"ls\n"),
                StreamClosed(0, "stdin"),
                StreamOpened(1, "stdout"),
                StreamData(1, "stdout", b"a\n"),
                StreamOpened(2, "stderr"),
                StreamOpened(3, "error"),
                StreamData(3, "error", EXIT_3),
                StreamClosed(4, "resize"),
                StreamClosed(1, "stdout"),
                StreamClosed(2, "stderr"),
                ExitStatus(3, EXIT_3),
                StreamClosed(3, "error"),
            ],
        )

    def test_violations(self) -> None:
        for protocol_, log in [
            ("v4.channel.k8s.io", [("client", b"\xff\x00")]),  # no close in v4
            ("v5.channel.k8s.io", [("client", b"\xff")]),
            ("v5.channel.k8s.io", [("client", b"\xff\x00\x00")]),
            ("v5.channel.k8s.io", [("client", b"\xff\x09")]),
            ("v5.channel.k8s.io", [("server", b"\xff\x01")]),  # kubectl drops it
            ("v5.channel.k8s.io", [("client", b"\xff\x00"), ("client", b"\x00x")]),
            ("v5.channel.k8s.io", [("client", b"\xff\x00"), ("client", b"\xff\x00")]),
            ("v4.channel.k8s.io", [("client", b"\x01x")]),
            ("v4.channel.k8s.io", [("server", b"\x00x")]),
            ("v4.channel.k8s.io", [("server", b"\x04x")]),
            ("v4.channel.k8s.io", [("client", b"\x05x")]),
            ("v4.channel.k8s.io", [("client", b"\x04[]")]),
            ("v4.channel.k8s.io", [("server", b"\x03" + b"x" * 70_000)]),
        ]:
            with self.subTest(protocol=protocol_, log=log):
                observer = observer_for("exec", "websocket", protocol_)
                self.assertRaises(ProtocolError, events_of, observer, log)


class WebSocketPortForwardTests(SynchronousTestCase):
    """portforward over WebSocket channels (v4): port announcements."""

    def test_two_ports(self) -> None:
        log = [
            ("server", b"\x00\x50\x00"),
            ("server", b"\x01\x50\x00"),
            ("server", b"\x02\xbb\x01"),
            ("server", b"\x03\xbb\x01"),
            ("client", b"\x00GET"),
            ("server", b"\x00200"),
            ("server", b"\x03refused"),
        ]
        observer = observer_for(
            "portforward", "websocket", "v4.channel.k8s.io", ports=[80, 443]
        )
        self.assertEqual(
            events_of(observer, log),
            [
                StreamOpened(0, "data", 80),
                StreamOpened(1, "port-error", 80),
                StreamOpened(2, "data", 443),
                StreamOpened(3, "port-error", 443),
                StreamData(0, "data", b"GET"),
                StreamData(0, "data", b"200"),
                StreamData(3, "port-error", b"refused"),
                StreamClosed(0, "data"),
                StreamClosed(1, "port-error"),
                StreamClosed(2, "data"),
                StreamClosed(3, "port-error"),
            ],
        )

    def test_violations(self) -> None:
        for log in [
            [("server", b"\x00\x51\x00")],  # another port
            [("server", b"\x00\x50")],
            [("server", b"\x04\x50\x00")],  # no third port
            [("client", b"\x01x")],  # the error channel is the server's
        ]:
            with self.subTest(log=log):
                observer = observer_for(
                    "portforward", "websocket", "v4.channel.k8s.io", ports=[80, 443]
                )
                self.assertRaises(ProtocolError, events_of, observer, log)
        self.assertRaises(
            ValueError, observer_for, "portforward", "websocket", "v4.channel.k8s.io"
        )


class ObserverForTests(SynchronousTestCase):
    """L{observer_for} refuses what it does not speak."""

    def test_refused(self) -> None:
        for args in [
            ("exec", "spdy", "v3.channel.k8s.io"),
            ("exec", "spdy", "v5.channel.k8s.io"),
            ("exec", "websocket", "channel.k8s.io"),
            ("exec", "websocket", "base64.channel.k8s.io"),
            ("exec", "websocket", "v4.base64.channel.k8s.io"),
            ("exec", "h2c", "v4.channel.k8s.io"),
            ("portforward", "spdy", "v4.channel.k8s.io"),
            ("portforward", "websocket", "portforward.k8s.io"),
            ("proxy", "spdy", "portforward.k8s.io"),
        ]:
            with self.subTest(args=args):
                self.assertRaises(ValueError, observer_for, *args)


# -- properties -----------------------------------------------------------------


_PAYLOADS = st.binary(max_size=30)


@st.composite
def _spdy_exec(draw: st.DrawFn) -> list[tuple[str, bytes]]:
    """A valid SPDY exec conversation with random data and order of writes."""
    c = SpdyConversation()
    kinds = draw(st.permutations(["error", "stdin", "stdout", "stderr"]))
    ids = {}
    for i, kind in enumerate(kinds):
        ids[kind] = 2 * i + 1
        c.open(2 * i + 1, streamtype=kind)
    for _ in range(draw(st.integers(0, 6))):
        kind = draw(st.sampled_from(["stdin", "stdout", "stderr", "error"]))
        side = "client" if kind == "stdin" else "server"
        c.send(side, Data(ids[kind], draw(_PAYLOADS)))
    c.send("client", Data(ids["stdin"], b"", fin=True))
    c.send("server", Data(ids["error"], draw(st.sampled_from([b"", EXIT_3])), fin=True))
    return c.log


@st.composite
def _spdy_port_forward(draw: st.DrawFn) -> list[tuple[str, bytes]]:
    """A valid SPDY port-forward conversation: connections that interleave."""
    c = SpdyConversation()
    open_: list[int] = []
    next_id = 1
    for _ in range(draw(st.integers(0, 12))):
        step = draw(st.sampled_from(["open", "data", "close", "reset"]))
        if step == "open" or not open_:
            request = str(next_id)
            c.open(next_id, fin=True, streamtype="error", port="80", requestid=request)
            c.open(next_id + 2, streamtype="data", port="80", requestid=request)
            open_.append(next_id + 2)
            next_id += 4
            continue
        stream = draw(st.sampled_from(open_))
        if step == "data":
            side = draw(st.sampled_from(["client", "server"]))
            c.send(side, Data(stream, draw(_PAYLOADS)))
        else:
            open_.remove(stream)
            if step == "reset":
                c.send("client", RstStream(stream, 5))
            else:
                c.send("client", Data(stream, b"", fin=True))
                c.send("server", Data(stream, b"", fin=True))
    return c.log


def _decode_data(raw: bytes) -> Data | None:
    """The data frame C{raw} is, if it is one (no header block needed)."""
    if raw[0] & 0x80:
        return None
    (read,) = SpdyFrameReader().feed(raw)
    assert isinstance(read.frame, Data)
    return read.frame


class PropertyTests(SynchronousTestCase):
    """Hypothesis: any split gives the same events; any bytes only ProtocolError."""

    @settings(max_examples=150)
    @given(log=_spdy_exec(), cuts=st.lists(st.integers(0, 10**6), max_size=8))
    def test_any_split(self, log: list[tuple[str, bytes]], cuts: list[int]) -> None:
        whole = events_of(observer_for("exec", "spdy", "v4.channel.k8s.io"), log)
        split = [(side, part) for side, data in log for part in _split(data, cuts)]
        again = events_of(observer_for("exec", "spdy", "v4.channel.k8s.io"), split)
        self.assertEqual(again, whole)
        self.assertIsInstance(whole[-1], StreamClosed)

    @settings(max_examples=150)
    @given(
        log=_spdy_port_forward(),
        cuts=st.lists(st.integers(0, 10**6), max_size=8),
        tunneled=st.booleans(),
    )
    def test_any_split_port_forward(
        self, log: list[tuple[str, bytes]], cuts: list[int], tunneled: bool
    ) -> None:
        """Port-forward, over SPDY or tunneled in messages: any split."""
        args = (
            ("websocket", "SPDY/3.1+portforward.k8s.io")
            if tunneled
            else ("spdy", "portforward.k8s.io")
        )
        whole = events_of(observer_for("portforward", *args), log)
        split = [(side, part) for side, data in log for part in _split(data, cuts)]
        self.assertEqual(events_of(observer_for("portforward", *args), split), whole)
        data = b"".join(
            bytes(f.data)
            for side, raw in log
            for f in [_decode_data(raw)]
            if f is not None
        )
        self.assertEqual(
            b"".join(e.data for e in whole if isinstance(e, StreamData)), data
        )

    @settings(max_examples=300)
    @given(
        choice=st.sampled_from(
            [
                ("exec", "spdy", "v4.channel.k8s.io"),
                ("portforward", "spdy", "portforward.k8s.io"),
                ("portforward", "websocket", "SPDY/3.1+portforward.k8s.io"),
                ("exec", "websocket", "v4.channel.k8s.io"),
                ("attach", "websocket", "v5.channel.k8s.io"),
                ("portforward", "websocket", "v4.channel.k8s.io"),
            ]
        ),
        log=st.lists(
            st.tuples(st.sampled_from(["client", "server"]), st.binary(max_size=40)),
            max_size=12,
        ),
        prefix=st.booleans(),
    )
    def test_random_input(
        self,
        choice: tuple[str, str, str],
        log: list[tuple[str, bytes]],
        prefix: bool,
    ) -> None:
        """Random bytes or messages, after a valid opening or not."""
        observer = observer_for(*choice, ports=[80])
        start: list[tuple[str, bytes]] = []
        if prefix and choice[1:] == ("spdy", "v4.channel.k8s.io"):
            start = SpdyConversation().open(1, streamtype="stdin").log
        try:
            events_of(observer, start + log)
        except ProtocolError:
            pass

    @settings(max_examples=200)
    @given(
        messages=st.lists(
            st.tuples(
                st.sampled_from(["client", "server"]),
                st.sampled_from([0, 1, 2, 3, 4, 255]),
                st.binary(max_size=6),
            ),
            max_size=12,
        )
    )
    def test_channel_messages(self, messages: list[tuple[str, int, bytes]]) -> None:
        """Channel messages with plausible channels: events or ProtocolError."""
        log = [(side, bytes([ch]) + body) for side, ch, body in messages]
        try:
            events_of(observer_for("exec", "websocket", "v5.channel.k8s.io"), log)
        except ProtocolError:
            pass


# -- the real kubectl -----------------------------------------------------------


class _Echo(protocol.Protocol):
    """Sends a line through a forwarded port and waits for its echo."""

    def __init__(self, line: bytes) -> None:
        self.line = line
        self.received = b""
        self.done: defer.Deferred[bytes] = defer.Deferred()

    def connectionMade(self) -> None:
        self.transport.write(self.line)

    def dataReceived(self, data: bytes) -> None:
        self.received += data
        if self.received == self.line:
            self.transport.loseConnection()

    def connectionLost(self, reason: object = None) -> None:
        self.done.callback(self.received)


class RealKubectlTests(TestCase):
    """
    The real kubectl against L{kubectl_peer}; the observers read what
    crossed, in the order it crossed.
    """

    timeout = 60

    def setUp(self) -> None:
        self.peer, port, listener = kubectl_peer.listen(reactor)  # type: ignore[arg-type]
        self.addCleanup(listener.stopListening)  # type: ignore[attr-defined]
        self.config = kubectl_peer.kubeconfig(
            Path(self.mktemp() + ".json"), f"http://127.0.0.1:{port}"
        )

    def kubectl(self, version: str) -> str:
        program = kubectl_peer.kubectl(version)
        if program is None:
            self.fail(f"kubectl.{version} is not installed")
        return program

    def observe(self) -> tuple[kubectl_peer.Upgraded, list[StreamEvent]]:
        (upgraded,) = self.peer.upgraded
        observer = observer_for(
            upgraded.subresource, upgraded.transport, upgraded.protocol
        )
        return upgraded, events_of(observer, upgraded.log)

    @defer.inlineCallbacks
    def exec_(self, version: str, transport: str, protocol_: str) -> defer.Generator:
        process = kubectl_peer.run(
            reactor,  # type: ignore[arg-type]
            self.kubectl(version),
            ["--kubeconfig", str(self.config), "exec", "-i", "web", "--", "cat"],
            b"hello\n",
        )
        code = yield process.ended
        self.assertEqual((code, process.out), (kubectl_peer.EXIT_CODE, b"hello\n"))
        self.assertIn(b"command terminated with exit code 3", process.err)
        upgraded, events = self.observe()
        self.assertEqual(
            (upgraded.transport, upgraded.protocol), (transport, protocol_)
        )
        self.assertEqual(
            [e.kind for e in events if isinstance(e, StreamOpened)].count("stdin"), 1
        )
        data = [(e.kind, e.data) for e in events if isinstance(e, StreamData)]
        self.assertEqual(
            data,
            [("stdin", b"hello\n"), ("stdout", b"hello\n"), ("error", EXIT_3)],
        )
        self.assertIn(ExitStatus(3, EXIT_3), events)
        closed = {e.kind for e in events if isinstance(e, StreamClosed)}
        opened = {e.kind for e in events if isinstance(e, StreamOpened)}
        self.assertEqual(closed, opened)

    def test_exec_spdy(self) -> defer.Deferred[None]:
        """kubectl 1.28 runs exec over SPDY."""
        return self.exec_("1.28", "spdy", "v4.channel.k8s.io")

    def test_exec_websocket(self) -> defer.Deferred[None]:
        """kubectl 1.33 runs exec over WebSocket, v5."""
        return self.exec_("1.33", "websocket", "v5.channel.k8s.io")

    @defer.inlineCallbacks
    def terminal(self, version: str) -> defer.Generator:
        process = kubectl_peer.run(
            reactor,  # type: ignore[arg-type]
            self.kubectl(version),
            ["--kubeconfig", str(self.config), "exec", "-it", "web", "--", "cat"],
            pty=True,
        )
        kubectl_peer.set_terminal_size(process, 100, 30)
        while not self.peer.upgraded:
            yield task.deferLater(reactor, 0.1, lambda: None)
        yield task.deferLater(reactor, 1, lambda: None)
        kubectl_peer.set_terminal_size(process, 120, 40)
        yield task.deferLater(reactor, 1, lambda: None)
        process.transport.write(b"hi\x04")  # type: ignore[union-attr]
        code = yield process.ended
        self.assertEqual(code, kubectl_peer.EXIT_CODE)
        _upgraded, events = self.observe()
        resizes = [e for e in events if isinstance(e, Resize)]
        self.assertEqual(resizes, [Resize(100, 30), Resize(120, 40)])
        self.assertIn(
            StreamData(0 if version == "1.33" else 3, "stdin", b"hi\x04"), events
        )
        self.assertIn(ExitStatus(3, EXIT_3), events)

    def test_terminal_spdy(self) -> defer.Deferred[None]:
        """kubectl 1.28 on a terminal: resize stream over SPDY."""
        return self.terminal("1.28")

    def test_terminal_websocket(self) -> defer.Deferred[None]:
        """kubectl 1.33 on a terminal: resize channel over WebSocket."""
        return self.terminal("1.33")

    @defer.inlineCallbacks
    def port_forward(
        self, version: str, transport: str, protocol_: str
    ) -> defer.Generator:
        process = kubectl_peer.run(
            reactor,  # type: ignore[arg-type]
            self.kubectl(version),
            ["--kubeconfig", str(self.config), "port-forward", "web", ":8080"],
        )
        while b"Forwarding from 127.0.0.1:" not in process.out:
            yield process.output()
        match = re.search(rb"127\.0\.0\.1:(\d+)", process.out)
        assert match is not None
        endpoint = endpoints.TCP4ClientEndpoint(reactor, "127.0.0.1", int(match[1]))
        for line in (b"first\n", b"second\n"):
            echo = yield endpoints.connectProtocol(endpoint, _Echo(line))
            received = yield echo.done
            self.assertEqual(received, line)
        process.transport.signalProcess("TERM")  # type: ignore[union-attr]
        yield process.ended
        upgraded, events = self.observe()
        self.assertEqual(
            (upgraded.transport, upgraded.protocol), (transport, protocol_)
        )
        opened = [e for e in events if isinstance(e, StreamOpened)]
        self.assertEqual(
            [(e.kind, e.port, e.request_id) for e in opened],
            [
                ("port-error", 8080, "0"),
                ("data", 8080, "0"),
                ("port-error", 8080, "1"),
                ("data", 8080, "1"),
            ],
        )
        data = [e.data for e in events if isinstance(e, StreamData)]
        self.assertEqual(data, [b"first\n"] * 2 + [b"second\n"] * 2)

    def test_port_forward_spdy(self) -> defer.Deferred[None]:
        """kubectl 1.28 forwards ports over SPDY."""
        return self.port_forward("1.28", "spdy", "portforward.k8s.io")

    def test_port_forward_tunneled(self) -> defer.Deferred[None]:
        """kubectl 1.33 forwards ports over SPDY tunneled in WebSocket."""
        return self.port_forward("1.33", "websocket", "SPDY/3.1+portforward.k8s.io")
