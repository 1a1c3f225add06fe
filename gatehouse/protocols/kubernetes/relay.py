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
from typing import Any

from wsproto.frame_protocol import CloseReason, FrameProtocol, Opcode, ParseFailed
from zope.interface import implementer

from gatehouse.protocols.http.streams import (
    IStreamObserver,
    StreamBytes,
    StreamEvent,
    StreamViolation,
)
from gatehouse.protocols.kubernetes import streams
from gatehouse.protocols.kubernetes.request import KubeRequest
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


class _Direction:
    """One direction's observer, in the relay's terms."""

    def __init__(self, observer: Any, side: str, sub: str) -> None:
        self._observer = observer
        self._side = side
        self._sub = sub

    def farewell(self, reason: str) -> bytes:
        """Nothing to say: SPDY streams are cut without a goodbye."""
        return b""

    def finish(self) -> list[Item]:
        """The connection ended: what the observer still held."""
        found: list[Item] = []
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

    def _item(self, event: object) -> list[Item]:
        if isinstance(event, StreamData):
            if event.kind in ("stdin", "stdout", "stderr"):
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
        return b"".join(o.raw for o in observed), self.items(observed)


@implementer(IStreamObserver)
class WebSocketDirection(_Direction):
    """
    WebSocket frames of one direction, read and written again; each
    complete message's payload is read by L{streams}.

    Frames from the client are masked and written masked again for the
    target; the target's are not.
    """

    def __init__(self, observer: Any, side: str, sub: str) -> None:
        super().__init__(observer, side, sub)
        from_client = side == "client"
        # The parser plays the receiving end, the writer the sending end.
        self._parser = FrameProtocol(client=not from_client, extensions=[])
        self._writer = FrameProtocol(client=from_client, extensions=[])
        self._message = bytearray()
        self.closed = False

    def feed(self, data: bytes) -> tuple[bytes, list[Item]]:
        out = bytearray()
        items: list[Item] = []
        self._parser.receive_bytes(data)
        try:
            for frame in self._parser.received_frames():
                opcode = frame.opcode
                payload: Any = frame.payload
                if opcode is Opcode.CLOSE:
                    code, reason = payload
                    items.append(
                        StreamEvent(
                            "websocket-close",
                            {"from": self._side, "code": int(code), "reason": reason},
                        )
                    )
                    out += self._writer.close(code, reason)
                    self.closed = True
                elif opcode is Opcode.PING:
                    out += self._writer.ping(bytes(payload))
                elif opcode is Opcode.PONG:
                    out += self._writer.pong(bytes(payload))
                elif opcode is Opcode.TEXT:
                    raise StreamViolation("a text message on a binary stream")
                else:
                    data = bytes(payload)
                    self._message += data
                    out += self._writer.send_data(data, frame.message_finished)
                    if frame.message_finished:
                        message = bytes(self._message)
                        self._message.clear()
                        try:
                            observed = self._observer.feed(message)
                        except ProtocolError as e:
                            raise StreamViolation(str(e)) from None
                        items.extend(self.items(observed))
        except ParseFailed as e:
            raise StreamViolation(f"WebSocket: {e}") from None
        return bytes(out), items

    def farewell(self, reason: str) -> bytes:
        """A close with 1002 (protocol error) and C{reason}, cut to fit."""
        if self.closed:
            return b""
        self.closed = True
        text = reason.encode("utf-8")[:120].decode("utf-8", "ignore")
        return bytes(self._writer.close(CloseReason.PROTOCOL_ERROR, text))


def stream_observers(
    request: KubeRequest, headers: Sequence[tuple[bytes, bytes]]
) -> tuple[IStreamObserver, IStreamObserver]:
    """
    The two directions' observers (client to target, target to client)
    for the target's 101 answer C{headers}.

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
    return (
        kind(observer.client, "client", request.subresource),  # type: ignore[return-value]
        kind(observer.server, "target", request.subresource),
    )
