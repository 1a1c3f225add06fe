"""
The recording's view of a relayed exec, attach or port-forward: the
bytes of the switched connection in, whole units to forward and what to
record out (L{gatehouse.protocols.http.streams.IStreamObserver}).

SPDY is relayed frame by frame as it came (L{streams} finds the frames).
WebSocket frames are read (wsproto's frame parser, which checks masking,
opcodes, lengths and UTF-8 of close reasons) and written again, frame by
frame, for the other side: a frame that breaks RFC 6455 never reaches
it.  Each complete message goes to L{streams} for its Kubernetes meaning.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast

from wsproto.frame_protocol import CloseReason, FrameProtocol, Opcode, ParseFailed
from zope.interface import implementer

from gatehouse.protocols.http.streams import (
    IStreamObserver,
    StreamBytes,
    StreamEvent,
    StreamViolation,
)
from gatehouse.protocols.kubernetes import streams
from gatehouse.protocols.kubernetes.output_masking import LineMasker
from gatehouse.protocols.kubernetes.request import KubeRequest
from gatehouse.protocols.kubernetes.spdy import Data, GoAway, SpdyFrameWriter
from gatehouse.protocols.kubernetes.streams import (
    REMOTECOMMAND_PROTOCOLS,
    ExitStatus,
    Observed,
    ProtocolError,
    Resize,
    StreamClosed,
    StreamData,
    StreamObserver,
    StreamOpened,
)

__all__ = ["offered_protocols", "stream_observers"]

Item = StreamBytes | StreamEvent

#: encodes data and GOAWAY frames (stateless: no header block)
_DATA_FRAMES = SpdyFrameWriter()

#: SPDY/3 GOAWAY status: the peer broke the protocol
GOAWAY_PROTOCOL_ERROR = 1

#: the largest data frame written again when output is masked
_MAX_DATA = 64 * 1024


def _ending(events: Sequence[object]) -> set[int] | None:
    """
    The streams whose held output must go before C{events}: all (None)
    before an exit status, a closed stream's own before its close.
    """
    ending: set[int] = set()
    for event in events:
        if isinstance(event, ExitStatus) or (
            isinstance(event, StreamData) and event.kind == "error"
        ):
            return None
        if isinstance(event, StreamClosed):
            ending.add(event.stream)
    return ending


def _keys(masker: LineMasker, streams: set[int] | None) -> list[Any] | None:
    """The held keys of C{streams} (None: all)."""
    if streams is None:
        return None
    return [
        key for key in masker.held_keys() if cast(tuple[int, str], key)[0] in streams
    ]


#: what the gateway can read, per subresource and transport: what the
#: client may offer the target
_SPOKEN = {
    ("exec", "spdy"): ("v4.channel.k8s.io",),
    ("attach", "spdy"): ("v4.channel.k8s.io",),
    ("exec", "websocket"): REMOTECOMMAND_PROTOCOLS,
    ("attach", "websocket"): REMOTECOMMAND_PROTOCOLS,
    ("portforward", "spdy"): (streams.PORTFORWARD_PROTOCOL,),
    ("portforward", "websocket"): (
        streams.SPDY_PORTFORWARD_WEBSOCKET_PROTOCOL,
        "v4.channel.k8s.io",
    ),
}


def _header(headers: Sequence[tuple[bytes, bytes]], name: bytes) -> list[str]:
    values: list[str] = []
    for n, v in headers:
        if n == name:
            values += [p.strip() for p in v.decode("latin-1").split(",") if p.strip()]
    return values


def transport_of(headers: Sequence[tuple[bytes, bytes]]) -> str | None:
    """C{websocket} or C{spdy}, by the C{Upgrade} header; None: neither."""
    upgrade = [u.lower() for u in _header(headers, b"upgrade")]
    if upgrade == ["websocket"]:
        return "websocket"
    if upgrade == ["spdy/3.1"]:
        return "spdy"
    return None


def offered_protocols(
    request: KubeRequest, headers: Sequence[tuple[bytes, bytes]]
) -> tuple[bytes, list[str]] | str:
    """
    The stream protocols of the client's offer that the gateway reads:
    (the header that carries them, the protocols), or why none is left.
    """
    transport = transport_of(headers)
    if transport is None:
        return "an exec, attach or port-forward upgrades to websocket or SPDY/3.1"
    name = (
        b"sec-websocket-protocol"
        if transport == "websocket"
        else (b"x-stream-protocol-version")
    )
    spoken = _SPOKEN.get((request.subresource, transport), ())
    kept = [p for p in _header(headers, name) if p in spoken]
    if not kept:
        return (
            f"none of the stream protocols offered is one gatehouse records "
            f"({', '.join(spoken) or 'none for this request'})"
        )
    return name, kept


#: the stream kinds whose bytes are text the value detectors read
_TEXT = ("stdin", "stdout", "stderr")


class _Direction:
    """
    One direction's observer, in the relay's terms.  With C{values} (the
    session's value detectors, for an exec or attach) its text streams are
    masked: what the target sends before the client sees it (L{_live},
    released after a quiet time by L{flush}), and what either side sent
    before it is recorded (L{_kept}, by whole lines).
    """

    def __init__(self, observer: Any, side: str, sub: str, values: Any = None) -> None:
        self._observer = observer
        self._side = side
        self._sub = sub
        self._live = (
            LineMasker(values) if values is not None and side == "target" else None
        )
        self._kept = LineMasker(values) if values is not None else None
        self._said_goodbye = False

    @property
    def masked(self) -> int:
        """Values masked in what the client was sent."""
        return self._live.masked if self._live is not None else 0

    def farewell(self, reason: str) -> bytes:
        """The protocol's goodbye when the stream is cut (see subclasses)."""
        return b""

    def holding(self) -> bool:
        """Whether output waits (an unfinished line) for L{flush}."""
        return self._live is not None and self._live.holding()

    def flush(self) -> tuple[bytes, list[Item]]:
        """Release the output held for the client: to forward, to record."""
        return self._send_held(), []

    def finish(self) -> list[Item]:
        """
        The connection ended: what the observer still held.  Output still
        held for the client never reached it and goes nowhere now; the
        recording has it, by lines, from when the target sent it.
        """
        if self._live is not None:
            self._live.flush()
        found = self._kept_flush()
        for event in self._observer.finish():
            found.extend(self._item(event))
        return found

    def items(self, observed: Sequence[Observed]) -> list[Item]:
        """The recording's items of what L{streams} read."""
        found: list[Item] = []
        for unit in observed:
            for event in unit.events:
                found.extend(self._item(event))
        return found

    def _wire(self, stream: int, data: bytes, fin: bool = False) -> bytes:
        """C{data} of C{stream} as this transport carries it to the other side."""
        raise NotImplementedError()

    def _framed(self, raw: bytes) -> bytes:
        """A whole unit (a SPDY frame, a message) as it goes to the other side."""
        raise NotImplementedError()

    def _orphan(self, raw: bytes) -> bool:
        """Whether C{raw} carries data of a stream the observer does not know."""
        return False

    def _send_held(self, streams: set[int] | None = None) -> bytes:
        """
        The output held for the client (of C{streams}, or all), as this
        transport carries it.
        """
        wire = b""
        if self._live is not None:
            for key, data in self._live.flush(_keys(self._live, streams)).items():
                stream, _ = cast(tuple[int, str], key)
                wire += self._wire(stream, data)
        return wire

    def _kept_flush(self, streams: set[int] | None = None) -> list[Item]:
        """The recording's held text (of C{streams}, or all), to record now."""
        if self._kept is None:
            return []
        return [
            StreamBytes(cast(tuple[int, str], key)[1], data)
            for key, data in self._kept.flush(_keys(self._kept, streams)).items()
        ]

    def _kept_items(self, key: Any, data: bytes, end: bool = False) -> list[Item]:
        assert self._kept is not None
        kept = self._kept.feed(key, data)
        if end:
            kept += self._kept.flush([key]).get(key, b"")
        return [StreamBytes(key[1], kept)] if kept else []

    def _unit(self, unit: Observed) -> tuple[bytes | None, list[Item]]:
        """
        One whole unit, masking on: the bytes to forward instead of it
        (None: it as it came) and what to record.  The recording gets the
        text as the side sent it, masked by whole lines; the client the
        target's output masked as it goes (L{_live}).
        """
        events = unit.events
        texts = [e for e in events if isinstance(e, StreamData) and e.kind in _TEXT]
        if not texts:
            found: list[Item] = []
            wire = b""
            # An exit status comes after all the output held before it, a
            # stream's close after its own; anything else (a ping, a
            # resize, another stream's close) passes by it.
            ending = _ending(events)
            if ending != set():
                wire = self._send_held(ending)
                found = self._kept_flush(ending)
            for event in events:
                found.extend(self._item(event))
            if self._live is None:
                return None, found
            if not events and self._orphan(unit.raw):
                return wire, found  # unread data: the client never gets it
            return (wire + self._framed(unit.raw) if wire else None), found
        found = []
        wire = b""
        for event in events:
            if not (isinstance(event, StreamData) and event.kind in _TEXT):
                found.extend(self._item(event))
                continue
            key = (event.stream, event.kind)
            end = any(
                isinstance(e, StreamClosed) and e.stream == event.stream for e in events
            )
            if self._live is not None:
                shown = self._live.feed(key, event.data)
                if end:
                    shown += self._live.flush([key]).get(key, b"")
                if shown or end or not event.data:
                    wire += self._wire(event.stream, shown, fin=end)
            found.extend(self._kept_items(key, event.data, end))
        return (wire if self._live is not None else None), found

    def _item(self, event: object) -> list[Item]:
        if isinstance(event, StreamData):
            if event.kind in _TEXT:
                return [StreamBytes(event.kind, event.data)]
            if event.kind == "data":
                return [StreamBytes("data", event.data, key=event.stream)]
            if event.kind == "error" or event.kind == "port-error":
                text = event.data.decode("utf-8", "replace")
                return [
                    StreamEvent(
                        "k8s-stream-error", {"stream": event.stream, "text": text}
                    )
                ]
            return []  # resize: its Resize event says it
        if isinstance(event, StreamOpened):
            fields: dict[str, object] = {"stream": event.stream, "kind": event.kind}
            if event.port is not None:
                fields["port"] = event.port
            if event.request_id is not None:
                fields["request_id"] = event.request_id
            return [StreamEvent("k8s-stream-open", fields)]
        if isinstance(event, StreamClosed):
            return [
                StreamEvent(
                    "k8s-stream-close",
                    {"stream": event.stream, "kind": event.kind, "from": self._side},
                )
            ]
        if isinstance(event, Resize):
            return [
                StreamEvent(
                    "k8s-resize", {"width": event.width, "height": event.height}
                )
            ]
        if isinstance(event, ExitStatus):
            return [
                StreamEvent(
                    "k8s-exit",
                    {
                        "code": event.code,
                        "status": event.status_json.decode("utf-8", "replace"),
                    },
                )
            ]
        return []


@implementer(IStreamObserver)
class SpdyDirection(_Direction):
    """SPDY bytes of one direction: whole frames go on."""

    def feed(self, data: bytes) -> tuple[bytes, list[Item]]:
        try:
            observed = self._observer.feed(data)
        except ProtocolError as e:
            raise StreamViolation(f"SPDY: {e}") from None
        if self._kept is None:
            return b"".join(o.raw for o in observed), self.items(observed)
        out = b""
        found: list[Item] = []
        for unit in observed:
            wire, items = self._unit(unit)
            out += unit.raw if wire is None else wire
            found.extend(items)
        return out, found

    def _wire(self, stream: int, data: bytes, fin: bool = False) -> bytes:
        if len(data) <= _MAX_DATA:
            return _DATA_FRAMES.encode(Data(stream, data, fin))
        pieces = [data[i : i + _MAX_DATA] for i in range(0, len(data), _MAX_DATA)]
        last = len(pieces) - 1
        return b"".join(
            _DATA_FRAMES.encode(Data(stream, piece, fin and i == last))
            for i, piece in enumerate(pieces)
        )

    def _orphan(self, raw: bytes) -> bool:
        return not raw[0] & 0x80  # a data frame (control frames set the bit)

    def farewell(self, reason: str) -> bytes:
        """
        A GOAWAY with status PROTOCOL_ERROR naming the last stream the
        client opened (once).
        """
        if self._said_goodbye:
            return b""
        self._said_goodbye = True
        last = self._observer.last_stream_id
        return _DATA_FRAMES.encode(GoAway(last, GOAWAY_PROTOCOL_ERROR))

    def _framed(self, raw: bytes) -> bytes:
        return raw


@implementer(IStreamObserver)
class WebSocketDirection(_Direction):
    """
    WebSocket frames of one direction, read and written again; each
    complete message's payload is read by L{streams}.

    Frames from the client are masked and written masked again for the
    target; the target's are not.  When the target's output is masked its
    messages go on whole, once read.
    """

    def __init__(self, observer: Any, side: str, sub: str, values: Any = None) -> None:
        super().__init__(observer, side, sub, values)
        from_client = side == "client"
        # The parser plays the receiving end, the writer the sending end.
        self._parser = FrameProtocol(client=not from_client, extensions=[])
        self._writer = FrameProtocol(client=from_client, extensions=[])
        self._message = bytearray()
        self.closed = False

    def feed(self, data: bytes) -> tuple[bytes, list[Item]]:
        out: list[bytes | bytearray] = []
        items: list[Item] = []
        self._parser.receive_bytes(data)
        try:
            for frame in self._parser.received_frames():
                opcode = frame.opcode
                payload: Any = frame.payload
                if opcode is Opcode.CLOSE:
                    code, reason = payload
                    out.append(self._send_held())
                    items.extend(self._kept_flush())
                    items.append(
                        StreamEvent(
                            "websocket-close",
                            {"from": self._side, "code": int(code), "reason": reason},
                        )
                    )
                    out.append(self._writer.close(code, reason))
                    self.closed = True
                elif opcode is Opcode.PING:
                    out.append(self._writer.ping(bytes(payload)))
                elif opcode is Opcode.PONG:
                    out.append(self._writer.pong(bytes(payload)))
                elif opcode is Opcode.TEXT:
                    raise StreamViolation("a text message on a binary stream")
                else:
                    finished = frame.message_finished
                    if self._live is None:
                        out.append(self._writer.send_data(payload, finished))
                    if not finished:
                        self._message += payload
                        continue
                    # Most messages are one frame: no joining then.
                    if self._message:
                        self._message += payload
                        message = bytes(self._message)
                        self._message.clear()
                    else:
                        message = bytes(payload)
                    wire, found = self._read_message(message)
                    out.append(wire)
                    items.extend(found)
        except ParseFailed as e:
            raise StreamViolation(f"WebSocket: {e}") from None
        return b"".join(out), items

    def _read_message(self, message: bytes) -> tuple[bytes, list[Item]]:
        """
        A whole message, read: what to forward now (only when the target's
        output is masked; otherwise its frames went on as they came) and
        what to record.
        """
        try:
            observed = self._observer.feed(message)
        except ProtocolError as e:
            raise StreamViolation(str(e)) from None
        if self._kept is None:
            return b"", self.items(observed)
        out = b""
        items: list[Item] = []
        for unit in observed:
            instead, found = self._unit(unit)
            if self._live is not None:
                out += self._framed(unit.raw) if instead is None else instead
            items.extend(found)
        return out, items

    def _wire(self, stream: int, data: bytes, fin: bool = False) -> bytes:
        return bytes(self._writer.send_data(bytes([stream]) + data, True))

    def _framed(self, raw: bytes) -> bytes:
        return bytes(self._writer.send_data(raw, True))

    def farewell(self, reason: str) -> bytes:
        """A close with 1002 (protocol error) and C{reason}, cut to fit."""
        if self.closed:
            return b""
        self.closed = True
        text = reason.encode("utf-8")[:120].decode("utf-8", "ignore")
        return bytes(self._writer.close(CloseReason.PROTOCOL_ERROR, text))


def stream_observers(
    request: KubeRequest,
    headers: Sequence[tuple[bytes, bytes]],
    values: Any = None,
) -> tuple[IStreamObserver, IStreamObserver]:
    """
    The two directions' observers (client to target, target to client)
    for the target's 101 answer C{headers}; with C{values} (value
    detectors) the text of an exec or attach is masked.

    @raise StreamViolation: the target chose a protocol gatehouse does not
        read (it was not offered).
    """
    transport = transport_of(headers)
    if transport == "websocket":
        chosen = _header(headers, b"sec-websocket-protocol")
    else:
        chosen = _header(headers, b"x-stream-protocol-version")
    ports: list[int] = []
    for value in request.values("ports"):
        for part in value.split(","):
            if part.strip().isdigit():
                ports.append(int(part))
    try:
        observer: StreamObserver = streams.observer_for(
            request.subresource,
            transport or "",
            chosen[0] if chosen else "",
            ports=ports,
        )
    except ValueError as e:
        raise StreamViolation(str(e)) from None
    kind: type[_Direction] = (
        WebSocketDirection if transport == "websocket" else SpdyDirection
    )
    if request.subresource not in ("exec", "attach"):
        values = None  # port-forward carries any protocol's bytes: not text
    return (
        kind(observer.client, "client", request.subresource, values),  # type: ignore[return-value]
        kind(observer.server, "target", request.subresource, values),
    )
