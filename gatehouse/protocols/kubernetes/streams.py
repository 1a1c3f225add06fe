"""
The Kubernetes stream protocols, sans-IO, for a gateway that records a
relayed exec, attach or port-forward without altering it.

After the HTTP upgrade of C{pods/exec}, C{pods/attach} or
C{pods/portforward} the two ends speak one of:

- remotecommand over SPDY/3.1 (C{X-Stream-Protocol-Version:
  v4.channel.k8s.io}): one SPDY stream per C{streamtype} header (error,
  stdin, stdout, stderr, resize);
- remotecommand over WebSocket (subprotocol C{v4.channel.k8s.io} or
  C{v5.channel.k8s.io}): every binary message is one channel byte (0 stdin,
  1 stdout, 2 stderr, 3 error, 4 resize) and its payload; v5 adds the
  message C{255, channel} with which the client closes a channel (stdin);
- portforward over SPDY (C{portforward.k8s.io}): per forwarded connection a
  C{streamtype: error} and a C{streamtype: data} stream, with C{port} and
  C{requestid} headers; kubectl 1.31 and later tunnel the same SPDY bytes in
  WebSocket binary messages (subprotocol C{SPDY/3.1+portforward.k8s.io});
- portforward over WebSocket channels (C{v4.channel.k8s.io}, the ports in the
  C{ports} query): channels 2i (data) and 2i+1 (error) for the i-th port, each
  announced by the server with the port as 2 bytes, little endian.

L{observer_for} picks the observer for a negotiated protocol.  An observer
(L{StreamObserver}) has one L{DirectionObserver} per direction, C{client}
and C{server}; their C{feed} takes what that direction sent (bytes for SPDY,
one message's payload for WebSocket) and returns the whole units completed
(L{Observed}: the exact bytes of a SPDY frame or a message, and the events
it means), so a relay can forward whole units after looking at their events.
The events (L{StreamOpened}, L{StreamData}, L{StreamClosed}, L{Resize},
L{ExitStatus}) are the same whatever the transport.

Everything a Kubernetes peer would refuse or ignore as a protocol error
raises L{ProtocolError} (fail closed: the gateway ends the connection).
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence

import attrs

from gatehouse.protocols.kubernetes.spdy import (
    Data,
    Headers,
    ProtocolError,
    RstStream,
    SpdyFrameReader,
    SynReply,
    SynStream,
)

__all__ = [
    "PORTFORWARD_PROTOCOL",
    "REMOTECOMMAND_PROTOCOLS",
    "SPDY_PORTFORWARD_WEBSOCKET_PROTOCOL",
    "DirectionObserver",
    "ExitStatus",
    "Observed",
    "ProtocolError",
    "Resize",
    "ResizeDecoder",
    "StreamClosed",
    "StreamData",
    "StreamEvent",
    "StreamObserver",
    "StreamOpened",
    "exit_status",
    "observer_for",
]

#: What remotecommand (exec, attach) may negotiate; older versions carry
#: errors as plain text and are not spoken here.
REMOTECOMMAND_PROTOCOLS = ("v4.channel.k8s.io", "v5.channel.k8s.io")
#: The SPDY protocol of port-forward (C{X-Stream-Protocol-Version}).
PORTFORWARD_PROTOCOL = "portforward.k8s.io"
#: The WebSocket subprotocol of SPDY tunneled in WebSocket (kubectl >= 1.31).
SPDY_PORTFORWARD_WEBSOCKET_PROTOCOL = "SPDY/3.1+" + PORTFORWARD_PROTOCOL

#: remotecommand channels by number (WebSocket).
_CHANNELS = {0: "stdin", 1: "stdout", 2: "stderr", 3: "error", 4: "resize"}
#: Which side writes a stream of each kind.
_WRITERS = {
    "stdin": frozenset({"client"}),
    "resize": frozenset({"client"}),
    "stdout": frozenset({"server"}),
    "stderr": frozenset({"server"}),
    "error": frozenset({"server"}),
    "data": frozenset({"client", "server"}),
    "port-error": frozenset({"server"}),
}
_V5_CLOSE = 255
#: The largest Status on an error stream, and the largest resize message,
#: kept in memory.
MAX_STATUS = 64 * 1024
MAX_RESIZE = 1024
_PORT = re.compile(r"[1-9][0-9]{0,4}\Z")


# -- events -------------------------------------------------------------------


@attrs.frozen
class StreamOpened:
    """
    A stream (SPDY stream id, or WebSocket channel) of C{kind} starts:
    stdin, stdout, stderr, error, resize, data or port-error.  Port-forward
    streams carry the C{port} (and over SPDY the C{request_id} that pairs a
    connection's data and error streams).
    """

    stream: int
    kind: str
    port: int | None = None
    request_id: str | None = None


@attrs.frozen
class StreamData:
    """Bytes that crossed on a stream (in the direction of the observer)."""

    stream: int
    kind: str
    data: bytes


@attrs.frozen
class StreamClosed:
    """A stream ended: its writer(s) closed it, or it was reset."""

    stream: int
    kind: str


@attrs.frozen
class Resize:
    """The client's terminal size changed."""

    width: int
    height: int


@attrs.frozen
class ExitStatus:
    """
    The error stream ended: C{code} is the command's exit status as kubectl
    reads it (0 for success), or C{None} when the Status is an error
    without one (kubectl then exits 1 with the message).
    """

    code: int | None
    status_json: bytes


StreamEvent = StreamOpened | StreamData | StreamClosed | Resize | ExitStatus


@attrs.frozen
class Observed:
    """One whole SPDY frame or WebSocket message, and what it means."""

    raw: bytes
    events: tuple[StreamEvent, ...]


# -- error and resize payloads ----------------------------------------------


def exit_status(status_json: bytes) -> ExitStatus:
    """
    Read the error stream of remotecommand v4/v5 the way client-go does:
    empty or C{Success} is exit code 0; C{Failure} with reason
    C{NonZeroExitCode} carries the code in the C{ExitCode} cause (0-255);
    anything else is an error without a code.
    """
    if not status_json:
        return ExitStatus(0, status_json)
    try:
        status = json.loads(status_json)
    except (ValueError, UnicodeDecodeError):
        return ExitStatus(None, status_json)
    if not isinstance(status, dict):
        return ExitStatus(None, status_json)
    if status.get("status") == "Success":
        return ExitStatus(0, status_json)
    details = status.get("details")
    if status.get("reason") == "NonZeroExitCode" and isinstance(details, dict):
        causes = details.get("causes")
        for cause in causes if isinstance(causes, list) else ():
            if isinstance(cause, dict) and cause.get("reason") == "ExitCode":
                message = cause.get("message")
                if isinstance(message, str) and re.fullmatch(r"[0-9]{1,3}", message):
                    code = int(message)
                    return ExitStatus(code if code <= 255 else None, status_json)
                break
    return ExitStatus(None, status_json)


class ResizeDecoder:
    """
    Reads the resize stream: JSON objects C{{"Width": w, "Height": h}}, one
    after another (client-go writes them with a JSON encoder), fed in any
    chunks.  Field names match case-insensitively and missing ones are 0,
    as Go's JSON decoder reads them; sizes are 16-bit.
    """

    def __init__(self) -> None:
        self._buffer = ""
        self._undecoded = b""
        self._decoder = json.JSONDecoder()

    def feed(self, data: bytes) -> list[Resize]:
        """Take the next bytes; return the sizes they complete."""
        text = self._undecoded + data
        try:
            chunk = text.decode("utf-8")
            self._undecoded = b""
        except UnicodeDecodeError as e:
            if e.reason != "unexpected end of data":
                raise ProtocolError("resize stream is not UTF-8") from None
            chunk = text[: e.start].decode("utf-8")
            self._undecoded = text[e.start :]
        self._buffer += chunk
        sizes = []
        while True:
            stripped = self._buffer.lstrip(" \t\r\n")
            if not stripped:
                self._buffer = ""
                break
            try:
                value, end = self._decoder.raw_decode(stripped)
            except ValueError:
                # Incomplete, or broken: only a bounded amount may wait.
                if len(stripped) > MAX_RESIZE or stripped[0] != "{":
                    raise ProtocolError("resize stream is not JSON objects") from None
                self._buffer = stripped
                break
            self._buffer = stripped[end:]
            sizes.append(_resize(value))
        return sizes

    def pending(self) -> bool:
        """Whether part of a message is held."""
        return bool(self._buffer.strip() or self._undecoded)


def _resize(value: object) -> Resize:
    if not isinstance(value, dict):
        raise ProtocolError("resize message is not an object")
    found: dict[str, int] = {}
    for key, size in value.items():
        name = key.lower()
        if name not in ("width", "height"):
            continue
        if name in found:
            raise ProtocolError(f"resize message names {name} twice")
        if type(size) is not int or not 0 <= size <= 0xFFFF:
            raise ProtocolError(f"resize {name} {size!r}")
        found[name] = size
    return Resize(found.get("width", 0), found.get("height", 0))


# -- observers ----------------------------------------------------------------


@attrs.define
class _Stream:
    """What an observer knows of one stream."""

    id: int
    kind: str
    closed: set[str] = attrs.Factory(set)
    ended: bool = False
    replied: bool = False
    error: bytearray = attrs.Factory(bytearray)
    resize: ResizeDecoder | None = None
    request_id: str | None = None


class StreamObserver:
    """
    Observes one upgraded connection: C{client} and C{server} are the
    L{DirectionObserver}s of the bytes or messages each side sent.
    """

    def __init__(self) -> None:
        self.client = DirectionObserver(self, "client")
        self.server = DirectionObserver(self, "server")
        self._streams: dict[int, _Stream] = {}
        self._finished = False

    #: the highest stream id the client opened (SPDY only)
    last_stream_id = 0

    def _feed(self, side: str, data: bytes) -> list[Observed]:
        raise NotImplementedError()

    def finish(self) -> list[StreamEvent]:
        """
        The connection ended: the events of streams left open (the exit
        status of an error stream that had data, then a close per stream).
        """
        if self._finished:
            return []
        self._finished = True
        events: list[StreamEvent] = []
        for stream in list(self._streams.values()):
            if stream.kind == "error" and stream.error and not stream.ended:
                events.append(exit_status(bytes(stream.error)))
                stream.error.clear()
            events += self._end(stream)
        return events

    # shared by the transports

    def _open(
        self,
        stream_id: int,
        kind: str,
        port: int | None = None,
        request_id: str | None = None,
    ) -> StreamOpened:
        stream = _Stream(stream_id, kind, request_id=request_id)
        if kind == "resize":
            stream.resize = ResizeDecoder()
        self._streams[stream_id] = stream
        return StreamOpened(stream_id, kind, port, request_id)

    def _data(self, side: str, stream: _Stream, data: bytes) -> list[StreamEvent]:
        if not data:
            return []
        if side not in _WRITERS[stream.kind]:
            raise ProtocolError(f"the {side} wrote on the {stream.kind} stream")
        if side in stream.closed or stream.ended:
            raise ProtocolError(f"data on the closed {stream.kind} stream")
        events: list[StreamEvent] = []
        if stream.resize is not None:
            events += stream.resize.feed(data)
            return events
        if stream.kind == "error":
            if len(stream.error) + len(data) > MAX_STATUS:
                raise ProtocolError("error stream above its limit")
            stream.error += data
        events.append(StreamData(stream.id, stream.kind, data))
        return events

    def _close(self, side: str, stream: _Stream) -> list[StreamEvent]:
        """C{side} half-closed C{stream}."""
        stream.closed.add(side)
        if stream.ended or not _WRITERS[stream.kind] <= stream.closed:
            return []
        events: list[StreamEvent] = []
        if stream.kind == "error":
            events.append(exit_status(bytes(stream.error)))
            stream.error.clear()
        if stream.resize is not None and stream.resize.pending():
            raise ProtocolError("resize stream ends inside a message")
        return events + self._end(stream)

    def _end(self, stream: _Stream) -> list[StreamEvent]:
        if stream.ended:
            return []
        stream.ended = True
        return [StreamClosed(stream.id, stream.kind)]


class DirectionObserver:
    """
    What one side of an observed connection sent; C{side} is C{"client"} or
    C{"server"}.
    """

    def __init__(self, connection: StreamObserver, side: str) -> None:
        self._connection = connection
        self.side = side

    def feed(self, data: bytes) -> list[Observed]:
        """
        Take the next bytes (SPDY) or the payload of the next binary message
        (WebSocket); return the whole frames or messages completed and
        their events.

        @raise ProtocolError: Not the protocol; the connection must end.
        """
        return self._connection._feed(self.side, data)

    def finish(self) -> list[StreamEvent]:
        """The connection ended (either direction may say so)."""
        return self._connection.finish()

    @property
    def last_stream_id(self) -> int:
        """The highest stream id the client opened (SPDY; 0 otherwise)."""
        return self._connection.last_stream_id


class _SpdyObserver(StreamObserver):
    """remotecommand or portforward over SPDY (also tunneled in WebSocket)."""

    def __init__(self, portforward: bool, **reader: int) -> None:
        super().__init__()
        self._portforward = portforward
        self._readers = {
            "client": SpdyFrameReader(**reader),
            "server": SpdyFrameReader(**reader),
        }
        self.last_stream_id = 0
        self._kinds: set[object] = set()

    def _feed(self, side: str, data: bytes) -> list[Observed]:
        out = []
        for read in self._readers[side].feed(data):
            out.append(Observed(read.raw, tuple(self._frame(side, read.frame))))
        return out

    def _frame(self, side: str, frame: object) -> list[StreamEvent]:
        if isinstance(frame, SynStream):
            return self._syn_stream(side, frame)
        if not isinstance(frame, (SynReply, Headers, Data, RstStream)):
            return []  # SETTINGS, PING, GOAWAY, WINDOW_UPDATE: no stream events
        stream = self._streams.get(frame.stream_id)
        if stream is None:
            if frame.stream_id > self.last_stream_id:
                raise ProtocolError(f"frame for unopened stream {frame.stream_id}")
            # A stream already gone: its peer drops the frame too.
            return []
        if isinstance(frame, RstStream):
            self._forget(stream)
            return self._end(stream)
        events: list[StreamEvent] = []
        if isinstance(frame, SynReply):
            if side != "server" or stream.replied:
                raise ProtocolError(f"unexpected SYN_REPLY for stream {stream.id}")
            stream.replied = True
        elif isinstance(frame, Data):
            events += self._data(side, stream, frame.data)
        if frame.fin:
            if side in stream.closed:
                raise ProtocolError(f"stream {stream.id} closed twice")
            events += self._close(side, stream)
            if stream.closed >= {"client", "server"}:
                self._forget(stream)
        return events

    def _forget(self, stream: _Stream) -> None:
        """A stream is over on both sides (or reset)."""
        del self._streams[stream.id]
        if self._portforward:
            # The kubelet forgets a request's streams when they end: its
            # id may come again, and a long port-forward holds no memory
            # of the connections that ended.
            self._kinds.discard((stream.request_id, stream.kind))

    def _syn_stream(self, side: str, frame: SynStream) -> list[StreamEvent]:
        # Kubernetes servers never open streams; clients open odd ids, each
        # above the last.
        if side != "client" or frame.stream_id % 2 == 0:
            raise ProtocolError(f"the {side} opened stream {frame.stream_id}")
        if frame.stream_id <= self.last_stream_id:
            raise ProtocolError(f"stream id {frame.stream_id} reused or decreasing")
        self.last_stream_id = frame.stream_id
        kind = _header(frame, "streamtype")
        port = request_id = None
        if self._portforward:
            if kind not in ("data", "error"):
                raise ProtocolError(f"port-forward stream type {kind!r}")
            kind = "port-error" if kind == "error" else kind
            port_text = _header(frame, "port")
            if not _PORT.match(port_text) or int(port_text) > 0xFFFF:
                raise ProtocolError(f"port {port_text!r}")
            port = int(port_text)
            request_id = _header(frame, "requestid")
            key: object = (request_id, kind)
        else:
            if kind not in ("error", "stdin", "stdout", "stderr", "resize"):
                raise ProtocolError(f"remotecommand stream type {kind!r}")
            key = kind
        if key in self._kinds:
            raise ProtocolError(f"second {kind} stream")
        self._kinds.add(key)
        events: list[StreamEvent] = [
            self._open(frame.stream_id, kind, port, request_id)
        ]
        if frame.fin:
            events += self._close("client", self._streams[frame.stream_id])
        return events


def _header(frame: SynStream, name: str) -> str:
    value = frame.header(name)
    if value is None or "\x00" in value:
        raise ProtocolError(f"stream {frame.stream_id}: bad or missing {name!r}")
    return value


class _WebSocketRemoteCommand(StreamObserver):
    """remotecommand over WebSocket channels, v4 or v5."""

    def __init__(self, v5: bool) -> None:
        super().__init__()
        self._v5 = v5

    def _feed(self, side: str, data: bytes) -> list[Observed]:
        return [Observed(data, tuple(self._message(side, data)))]

    def _message(self, side: str, message: bytes) -> list[StreamEvent]:
        if not message:
            return []  # ignored by both ends
        channel, payload = message[0], message[1:]
        closing = self._v5 and channel == _V5_CLOSE
        if closing and side == "server":
            # kubectl discards it ("Unknown stream id 255"): servers do not
            # send it.
            raise ProtocolError("close signal from the server")
        if closing:
            if len(payload) != 1:
                raise ProtocolError("v5 close signal is not 2 bytes")
            channel = payload[0]
        kind = _CHANNELS.get(channel)
        if kind is None:
            raise ProtocolError(f"channel {channel}")
        if side not in _WRITERS[kind]:
            raise ProtocolError(f"the {side} wrote on the {kind} channel")
        events: list[StreamEvent] = []
        stream = self._streams.get(channel)
        if stream is None:
            events.append(self._open(channel, kind))
            stream = self._streams[channel]
        if closing:
            if side in stream.closed:
                raise ProtocolError(f"the {kind} channel closed twice")
            return events + self._close(side, stream)
        return events + self._data(side, stream, payload)


class _WebSocketPortForward(StreamObserver):
    """portforward over WebSocket channels (v4): 2 channels per port."""

    def __init__(self, ports: Sequence[int]) -> None:
        super().__init__()
        if not ports or not all(1 <= p <= 0xFFFF for p in ports):
            raise ValueError("port-forward over WebSocket needs ports 1-65535")
        self._ports = tuple(ports)
        self._announced: set[int] = set()

    def _feed(self, side: str, data: bytes) -> list[Observed]:
        return [Observed(data, tuple(self._message(side, data)))]

    def _message(self, side: str, message: bytes) -> list[StreamEvent]:
        if not message:
            return []
        channel, payload = message[0], message[1:]
        if channel >= 2 * len(self._ports):
            raise ProtocolError(f"channel {channel}")
        port = self._ports[channel // 2]
        kind = "port-error" if channel % 2 else "data"
        events: list[StreamEvent] = []
        stream = self._streams.get(channel)
        if stream is None:
            events.append(self._open(channel, kind, port))
            stream = self._streams[channel]
        if side == "server" and channel not in self._announced:
            # The server's first message on a channel names its port.
            if payload != port.to_bytes(2, "little"):
                raise ProtocolError(f"channel {channel} does not start with its port")
            self._announced.add(channel)
            return events
        return events + self._data(side, stream, payload)


def observer_for(
    subresource: str,
    transport: str,
    protocol: str,
    *,
    ports: Sequence[int] = (),
    max_frame_length: int | None = None,
) -> StreamObserver:
    """
    Return the observer of an upgraded connection.

    @param subresource: C{exec}, C{attach} or C{portforward}.
    @param transport: C{spdy} or C{websocket} (the C{Upgrade} header).
    @param protocol: The negotiated protocol: the server's
        C{X-Stream-Protocol-Version} (SPDY) or C{Sec-WebSocket-Protocol}.
    @param ports: The C{ports} query of a WebSocket port-forward.
    @raise ValueError: Not a protocol spoken here (the gateway refuses it).
    """
    reader = {} if max_frame_length is None else {"max_frame_length": max_frame_length}
    if subresource in ("exec", "attach"):
        if protocol not in REMOTECOMMAND_PROTOCOLS:
            raise ValueError(f"remotecommand protocol {protocol!r} is not supported")
        if transport == "spdy":
            if protocol != REMOTECOMMAND_PROTOCOLS[0]:
                raise ValueError(f"{protocol} is not spoken over SPDY")
            return _SpdyObserver(False, **reader)
        if transport == "websocket":
            return _WebSocketRemoteCommand(protocol == "v5.channel.k8s.io")
    elif subresource == "portforward":
        if transport == "spdy" and protocol == PORTFORWARD_PROTOCOL:
            return _SpdyObserver(True, **reader)
        if transport == "websocket":
            if protocol == SPDY_PORTFORWARD_WEBSOCKET_PROTOCOL:
                return _SpdyObserver(True, **reader)
            if protocol == REMOTECOMMAND_PROTOCOLS[0]:
                return _WebSocketPortForward(ports)
    raise ValueError(
        f"{subresource} over {transport} with {protocol!r} is not supported"
    )
