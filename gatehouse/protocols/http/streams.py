"""
A switched stream (after 101) relayed between the client and the target,
and recorded as it crosses.

Each direction goes through an L{IStreamObserver} before it is
forwarded: the observer decodes what it can (WebSocket frames, SPDY
frames, the Kubernetes stream channels inside them) and says what to
record; a stream that breaks its protocol is cut there, before the bad
bytes go on.  Without a decoder for the stream's protocol the bytes are
recorded as they are (L{RawObserver}).

Recording: a stream's bytes go on its request's channel C{c}: what the
client sent (stdin, or the raw bytes) in direction 1, what it was sent
(stdout, or the raw bytes) in direction 2, stderr on C{c | 0x8000};
other streams (port-forward connections) get channels of their own,
announced by a C{k8s-stream} event on C{c}; what is not bytes (an exit
status, a resize) is an event.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import attrs
from twisted.internet.error import ConnectionDone
from zope.interface import Interface, implementer

from gatehouse.recording.format import Direction
from gatehouse.recording.interfaces import RecordingFailed

if TYPE_CHECKING:
    from gatehouse.protocols.http.server import Exchange, HTTPGatewayProtocol
    from gatehouse.protocols.http.upgrade import UpstreamStream

__all__ = [
    "STDERR_BIT",
    "IStreamObserver",
    "RawObserver",
    "StreamBytes",
    "StreamEvent",
    "StreamRelay",
    "StreamViolation",
]

#: the channel bit of a stream's stderr (as SSH's extended data)
STDERR_BIT = 0x8000

#: how long output held for masking (an unfinished line) waits for more
HOLD_SECONDS = 0.05

#: how long a side has to read the protocol's goodbye of a cut stream
FAREWELL_SECONDS = 3.0


class StreamViolation(Exception):
    """The stream broke its protocol; says how."""


@attrs.frozen
class StreamBytes:
    """
    Bytes of one stream inside the connection.

    @ivar stream: C{"stdin"}, C{"stdout"}, C{"stderr"}, C{"raw"}, or a
        name of the observer's for other streams (a port-forward
        connection: its key in C{key}).
    @ivar key: tells apart several streams of one name (None: the only).
    """

    stream: str
    data: bytes
    key: object = None


@attrs.frozen
class StreamEvent:
    """Something that is not bytes (an exit status, a resize, a close)."""

    name: str
    fields: dict[str, object] = attrs.field(factory=dict)


class IStreamObserver(Interface):
    """Decodes one direction of a switched stream, for the recording."""

    def feed(data: bytes) -> tuple[bytes, Sequence[StreamBytes | StreamEvent]]:
        """
        The next bytes of this direction: the bytes to forward now (whole
        units of the stream's protocol; the rest waits for more), and what
        to record.

        @raise StreamViolation: they break the stream's protocol (the
            stream is cut; they are not forwarded).
        """

    def finish() -> Sequence[StreamBytes | StreamEvent]:
        """The stream ended: what is left to record (an exit status)."""

    def holding() -> bool:
        """Whether bytes wait (masking holds an unfinished line) for L{flush}."""

    def flush() -> tuple[bytes, Sequence[StreamBytes | StreamEvent]]:
        """Release what waits: the bytes to forward, and what to record."""

    def farewell(reason: str) -> bytes:
        """
        The bytes that end the stream by its protocol, for the side this
        direction's bytes go to, when the stream is cut for C{reason} (a
        WebSocket close 1002); empty where the protocol has none.
        """


@implementer(IStreamObserver)
class RawObserver:
    """A stream the gateway does not decode: its bytes, recorded as they are."""

    def feed(self, data: bytes) -> tuple[bytes, Sequence[StreamBytes | StreamEvent]]:
        return data, [StreamBytes("raw", data)]

    def finish(self) -> Sequence[StreamBytes | StreamEvent]:
        return []

    def holding(self) -> bool:
        return False

    def flush(self) -> tuple[bytes, Sequence[StreamBytes | StreamEvent]]:
        return b"", []

    def farewell(self, reason: str) -> bytes:
        return b""


class StreamRelay:
    """
    Relays and records one switched stream, from the 101 answer until
    either side closes.
    """

    def __init__(
        self,
        protocol: HTTPGatewayProtocol,
        exchange: Exchange,
        stream: UpstreamStream,
        headers: Sequence[tuple[bytes, bytes]],
    ) -> None:
        self._protocol = protocol
        self._exchange = exchange
        self._stream = stream
        self._channels: dict[object, int] = {}
        self._ended = False
        try:
            observers = protocol.factory.flavour.stream_observers(
                exchange.described, headers, protocol.session
            )
        except StreamViolation as e:
            observers = None
            self.refused: str | None = str(e)
        else:
            self.refused = None
        pair: tuple[Any, Any] = observers or (RawObserver(), RawObserver())
        self._from_client, self._from_target = pair
        self.bytes_in = 0
        self.bytes_out = 0
        self._release_call: Any = None

    def start(self) -> bool:
        """Begin; False if the stream cannot be read (it was cut)."""
        if self.refused is not None:
            self._cut(f"the target chose a stream protocol: {self.refused}")
            return False
        return True

    def from_client(self, data: bytes) -> None:
        """The client sent C{data}: record it, then forward it."""
        if self._ended:
            return
        out = self._observe(self._from_client, Direction.CLIENT_TO_GATEWAY, data)
        if out is None:
            return
        self.bytes_in += len(data)
        self._exchange.body_in += len(data)
        if out:
            self._stream.transport.write(out)

    def from_target(self, data: bytes) -> None:
        """The target sent C{data}: record it, then forward it."""
        if self._ended:
            return
        out = self._observe(self._from_target, Direction.GATEWAY_TO_CLIENT, data)
        if out is None:
            return
        self.bytes_out += len(data)
        self._exchange.body_out += len(data)
        if out:
            self._protocol.transport.write(out)
        if self._from_target.holding():
            # Held output goes after a quiet time: every new chunk from the
            # target starts it again (bulk output is released by lines).
            if self._release_call is None:
                self._release_call = self._protocol.clock.callLater(
                    HOLD_SECONDS, self._release_held
                )
            else:
                self._release_call.reset(HOLD_SECONDS)

    def _release_held(self, last: bool = False) -> None:
        """
        Output held for masking has waited long enough: send it on (unless
        the client is not reading: then the target is held back, not
        quiet, and the wait starts again).
        """
        self._release_call = None
        if self._ended:
            return
        if not last and self._protocol.output_paused:
            self._release_call = self._protocol.clock.callLater(
                HOLD_SECONDS, self._release_held
            )
            return
        session = self._protocol.session
        assert session is not None
        try:
            out, found = self._from_target.flush()
            self._record_items(session, Direction.GATEWAY_TO_CLIENT, found)
        except RecordingFailed:
            self._cut("recording failed")
            return
        if out:
            self._protocol.transport.write(out)

    def _observe(
        self, observer: Any, direction: Direction, data: bytes
    ) -> bytes | None:
        """What to forward (None: the stream was cut)."""
        session = self._protocol.session
        assert session is not None
        try:
            out, found = observer.feed(data)
            self._record_items(session, direction, found)
        except StreamViolation as e:
            side = "client" if direction == Direction.CLIENT_TO_GATEWAY else "target"
            self._cut(f"the {side} broke the stream's protocol: {e}")
            return None
        except RecordingFailed:
            self._cut("recording failed")
            return None
        return bytes(out)

    def _record_items(
        self,
        session: Any,
        direction: Direction,
        found: Sequence[StreamBytes | StreamEvent],
    ) -> None:
        channel = self._exchange.channel
        for item in found:
            if isinstance(item, StreamEvent):
                session.event(item.name, channel=channel, **item.fields)
                continue
            target = self._channel_of(item)
            if item.stream == "stderr":
                target |= STDERR_BIT
            session.data(direction, item.data, target)

    def _channel_of(self, item: StreamBytes) -> int:
        if item.key is None:
            return self._exchange.channel
        channel = self._channels.get(item.key)
        if channel is None:
            channel = self._channels[item.key] = self._protocol.allocate_channel()
            session = self._protocol.session
            assert session is not None
            session.event(
                "k8s-stream",
                channel=self._exchange.channel,
                stream=item.stream,
                key=str(item.key),
                recorded_on=channel,
            )
        return channel

    def _cut(self, reason: str) -> None:
        session = self._protocol.session
        if session is not None:
            try:
                session.event(
                    "http-stream-cut", channel=self._exchange.channel, reason=reason
                )
            except RecordingFailed:
                pass
        # The goodbyes go out before the client's connection is closed.
        ends = [
            (self._protocol.transport, self._from_target.farewell(reason)),
            (self._stream.transport, self._from_client.farewell(reason)),
        ]
        for transport, farewell in ends:
            if farewell:
                transport.write(farewell)
        self._end(reason)
        for transport, farewell in ends:
            if not farewell:
                transport.abortConnection()
                continue
            # A side that does not read its goodbye within seconds is cut
            # (aborting a closed connection does nothing).
            transport.loseConnection()
            self._protocol.clock.callLater(FAREWELL_SECONDS, transport.abortConnection)

    def _end(self, reason: str) -> None:
        if self._ended:
            return
        self._ended = True
        self._stop_release()
        self._finish()
        self._protocol.stream_ended(self._exchange, reason)

    def target_lost(self, reason: Any) -> None:
        """
        The target closed the stream: so does the client's connection.  A
        connection lost without the TLS goodbye (the target died) is
        recorded as an error.
        """
        if not self._ended:
            # What masking held is the target's last word: it goes on.
            self._stop_release()
            self._release_held(last=True)
        if reason is None or reason.check(ConnectionDone):
            self._end("closed")
        else:
            self._end(f"the target's connection was lost: {reason.value}")

    def _stop_release(self) -> None:
        if self._release_call is not None and self._release_call.active():
            self._release_call.cancel()
        self._release_call = None

    def client_lost(self) -> None:
        """The client went: close the target's side."""
        if not self._ended:
            self._ended = True
            self._stop_release()
            self._finish()
            self._stream.transport.loseConnection()

    def _finish(self) -> None:
        """Record what the observers still hold (an exit status)."""
        session = self._protocol.session
        if session is None or session.closed:
            return
        try:
            for observer, direction in (
                (self._from_client, Direction.CLIENT_TO_GATEWAY),
                (self._from_target, Direction.GATEWAY_TO_CLIENT),
            ):
                self._record_items(session, direction, observer.finish())
            masked = getattr(self._from_target, "masked", 0)
            if masked:
                session.masked(masked)
        except RecordingFailed:
            pass
