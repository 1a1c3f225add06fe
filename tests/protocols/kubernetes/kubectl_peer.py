"""
A minimal Kubernetes API server for running the real kubectl against the
stream codecs: discovery, one pod, and exec and port-forward over SPDY and
WebSocket, answered with L{gatehouse.protocols.kubernetes.spdy} and wsproto.
It records what each side sent after the upgrade, so tests can feed the
observers of L{gatehouse.protocols.kubernetes.streams} with real traffic.

Exec echoes stdin to stdout and ends with exit code L{EXIT_CODE}; each
port-forward connection echoes its data.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import struct
import termios
from collections.abc import Iterable
from pathlib import Path

import attrs
from twisted.internet import defer, protocol
from twisted.internet.interfaces import IReactorProcess, IReactorTCP
from wsproto import ConnectionType, WSConnection
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Message,
    Request,
)

from gatehouse.protocols.kubernetes.spdy import (
    Data,
    GoAway,
    Ping,
    SpdyFrameReader,
    SpdyFrameWriter,
    SynReply,
    SynStream,
)

EXIT_CODE = 3

_POD = {
    "kind": "Pod",
    "apiVersion": "v1",
    "metadata": {"name": "web", "namespace": "default"},
    "spec": {"containers": [{"name": "c", "image": "x"}]},
    "status": {"phase": "Running"},
}
_DISCOVERY = {
    "/api": {"kind": "APIVersions", "versions": ["v1"]},
    "/apis": {"kind": "APIGroupList", "apiVersion": "v1", "groups": []},
    "/api/v1": {
        "kind": "APIResourceList",
        "groupVersion": "v1",
        "resources": [
            {
                "name": "pods",
                "singularName": "pod",
                "namespaced": True,
                "kind": "Pod",
                "verbs": ["get", "list"],
            }
        ],
    },
}
_EXIT_STATUS = json.dumps(
    {
        "metadata": {},
        "status": "Failure",
        "message": f"command terminated with non-zero exit code: exit {EXIT_CODE}",
        "reason": "NonZeroExitCode",
        "details": {"causes": [{"reason": "ExitCode", "message": str(EXIT_CODE)}]},
    }
).encode()


def kubectl(version: str) -> str | None:
    """
    The path of C{kubectl.<version>} (installed beside the target of
    C{/usr/bin/kubectl}), or C{None}.
    """
    found = shutil.which(f"kubectl.{version}")
    if found:
        return found
    main = shutil.which("kubectl")
    if main is None:
        return None
    beside = Path(os.path.realpath(main)).parent / f"kubectl.{version}"
    return str(beside) if beside.exists() else None


def kubeconfig(path: Path, server: str) -> Path:
    """Write a kubeconfig for C{server} (any token) and return its path."""
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "c", "cluster": {"server": server}}],
        "users": [{"name": "u", "user": {"token": "t"}}],
        "contexts": [
            {
                "name": "x",
                "context": {"cluster": "c", "user": "u", "namespace": "default"},
            }
        ],
        "current-context": "x",
    }
    path.write_text(json.dumps(config))
    return path


@attrs.define
class Upgraded:
    """One upgraded connection: its kind, protocol and what each side sent."""

    subresource: str
    transport: str
    protocol: str = ""
    #: (side, what it sent) in the order the peer read and wrote it: bytes
    #: for SPDY, a binary message's payload for WebSocket.
    log: list[tuple[str, bytes]] = attrs.Factory(list)
    done: defer.Deferred[None] = attrs.Factory(defer.Deferred)


class _Peer(protocol.Protocol):
    factory: KubeletPeer

    def __init__(self) -> None:
        self._buffer = b""
        self._mode = "http"
        self._ws: WSConnection | None = None
        self._upgraded: Upgraded | None = None
        self._spdy_in = SpdyFrameReader()
        self._spdy_out = SpdyFrameWriter()
        self._streams: dict[int, str] = {}
        self._payload = b""

    def dataReceived(self, data: bytes) -> None:
        if self._mode == "spdy":
            self._spdy(data)
        elif self._mode == "websocket":
            self._websocket(data)
        else:
            self._buffer += data
            self._http()

    def connectionLost(self, reason: object = None) -> None:
        if self._upgraded is not None and not self._upgraded.done.called:
            self._upgraded.done.callback(None)

    # plain HTTP

    def _http(self) -> None:
        while b"\r\n\r\n" in self._buffer:
            head, _, rest = self._buffer.partition(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            _method, target, _version = lines[0].split(" ")
            headers = {}
            for line in lines[1:]:
                name, _, value = line.partition(":")
                headers.setdefault(name.strip().lower(), []).append(value.strip())
            path = target.split("?")[0]
            upgrade = headers.get("upgrade", [""])[0].lower()
            if upgrade:
                subresource = path.rsplit("/", 1)[-1]
                self._buffer = b""
                if upgrade == "websocket":
                    self._start_websocket(subresource, head + b"\r\n\r\n" + rest)
                else:
                    self._start_spdy(subresource, headers, rest)
                return
            self._buffer = rest
            body = json.dumps(_DISCOVERY.get(path, _POD)).encode()
            self.transport.write(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                b"Content-Length: %d\r\n\r\n" % len(body) + body
            )

    # SPDY

    def _start_spdy(
        self, subresource: str, headers: dict[str, list[str]], rest: bytes
    ) -> None:
        offered = [
            p.strip()
            for value in headers.get("x-stream-protocol-version", [])
            for p in value.split(",")
        ]
        chosen = "portforward.k8s.io" if subresource == "portforward" else ""
        if not chosen:
            chosen = "v4.channel.k8s.io" if "v4.channel.k8s.io" in offered else ""
        self._upgraded = Upgraded(subresource, "spdy", chosen)
        self.factory.upgraded.append(self._upgraded)
        self._mode = "spdy"
        self.transport.write(
            b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\n"
            b"Upgrade: SPDY/3.1\r\nX-Stream-Protocol-Version: "
            + chosen.encode()
            + b"\r\n\r\n"
        )
        if rest:
            self._spdy(rest)

    def _send_spdy(self, *frames: object) -> None:
        data = b"".join(self._spdy_out.encode(f) for f in frames)  # type: ignore[arg-type]
        assert self._upgraded is not None
        if self._upgraded.transport == "spdy":
            self._upgraded.log.append(("server", data))
            self.transport.write(data)
        else:
            self._send_ws(data)

    def _spdy(self, data: bytes) -> None:
        assert self._upgraded is not None
        if self._upgraded.transport == "spdy":
            self._upgraded.log.append(("client", data))
        for read in self._spdy_in.feed(data):
            frame = read.frame
            if isinstance(frame, SynStream):
                self._streams[frame.stream_id] = frame.header("streamtype") or ""
                self._send_spdy(SynReply(frame.stream_id, ()))
            elif isinstance(frame, Ping):
                self._send_spdy(frame)
            elif isinstance(frame, Data):
                self._spdy_data(frame)

    def _spdy_data(self, frame: Data) -> None:
        kind = self._streams.get(frame.stream_id)
        if kind == "data":  # port-forward: echo, close when the client does
            if frame.data:
                self._send_spdy(Data(frame.stream_id, frame.data))
            if frame.fin:
                self._send_spdy(Data(frame.stream_id, b"", fin=True))
        elif kind == "stdin":
            ids = {kind: sid for sid, kind in self._streams.items()}
            if frame.data:
                self._send_spdy(Data(ids["stdout"], frame.data))
            # With a terminal there is no end of input: Ctrl-D ends it.
            if frame.fin or b"\x04" in frame.data:
                self._send_spdy(
                    Data(ids["stdout"], b"", fin=True),
                    Data(ids["error"], _EXIT_STATUS, fin=True),
                    GoAway(0),
                )
                self.transport.loseConnection()

    # WebSocket

    def _start_websocket(self, subresource: str, data: bytes) -> None:
        self._upgraded = Upgraded(subresource, "websocket")
        self.factory.upgraded.append(self._upgraded)
        self._mode = "websocket"
        self._ws = WSConnection(ConnectionType.SERVER)
        self._websocket(data)

    def _send_ws(self, payload: bytes) -> None:
        assert self._ws is not None and self._upgraded is not None
        self._upgraded.log.append(("server", payload))
        self.transport.write(self._ws.send(Message(data=payload)))

    def _websocket(self, data: bytes) -> None:
        assert self._ws is not None and self._upgraded is not None
        self._ws.receive_data(data)
        for event in self._ws.events():
            if isinstance(event, Request):
                offered = event.subprotocols
                for chosen in (
                    "SPDY/3.1+portforward.k8s.io",
                    "v5.channel.k8s.io",
                    "v4.channel.k8s.io",
                ):
                    if chosen in offered:
                        break
                self._upgraded.protocol = chosen
                self.transport.write(
                    self._ws.send(AcceptConnection(subprotocol=chosen))
                )
            elif isinstance(event, BytesMessage):
                self._payload += bytes(event.data)
                if event.message_finished:
                    payload, self._payload = self._payload, b""
                    self._ws_message(payload)
            elif isinstance(event, CloseConnection):
                if self._ws.state.name == "REMOTE_CLOSING":
                    self.transport.write(self._ws.send(event.response()))
                self.transport.loseConnection()

    def _ws_message(self, payload: bytes) -> None:
        assert self._upgraded is not None
        self._upgraded.log.append(("client", payload))
        if self._upgraded.protocol.startswith("SPDY/3.1"):
            self._spdy(payload)
            return
        if payload[:1] == b"\x00" and len(payload) > 1:
            self._send_ws(b"\x01" + payload[1:])
        # v5: stdin closed; with a terminal, Ctrl-D.
        ctrl_d = payload[:1] == b"\x00" and b"\x04" in payload
        if payload == b"\xff\x00" or ctrl_d:
            self._send_ws(b"\x03" + _EXIT_STATUS)
            assert self._ws is not None
            self.transport.write(self._ws.send(CloseConnection(code=1000)))


class KubeletPeer(protocol.Factory):
    """The factory of the minimal API server; C{upgraded} grows per upgrade."""

    protocol = _Peer

    def __init__(self) -> None:
        self.upgraded: list[Upgraded] = []


class RunProcess(protocol.ProcessProtocol):
    """Runs a program, writes C{stdin} and closes it, collects its output."""

    def __init__(self, stdin: bytes = b"", close: bool = True) -> None:
        self.stdin = stdin
        self.close = close
        self.out = b""
        self.err = b""
        self.ended: defer.Deferred[int] = defer.Deferred()
        self.lines: list[defer.Deferred[bytes]] = []

    def connectionMade(self) -> None:
        assert self.transport is not None
        if self.stdin:
            self.transport.write(self.stdin)
        if self.close:
            self.transport.closeStdin()

    def outReceived(self, data: bytes) -> None:
        self.out += data
        waiting, self.lines = self.lines, []
        for d in waiting:
            d.callback(self.out)

    def errReceived(self, data: bytes) -> None:
        self.err += data

    def processEnded(self, reason: object) -> None:
        code = getattr(getattr(reason, "value", None), "exitCode", None)
        self.ended.callback(code if code is not None else -1)

    def output(self) -> defer.Deferred[bytes]:
        """Fires with the output so far when more arrives."""
        d: defer.Deferred[bytes] = defer.Deferred()
        self.lines.append(d)
        return d


def run(
    reactor: IReactorProcess,
    program: str,
    args: Iterable[str],
    stdin: bytes = b"",
    *,
    pty: bool = False,
) -> RunProcess:
    """
    Start C{program} with C{args} (on a terminal if C{pty}); return its
    L{RunProcess}.
    """
    process = RunProcess(stdin, close=not pty)
    reactor.spawnProcess(
        process,
        program,
        [program, *args],
        env={"HOME": os.environ.get("HOME", "/tmp"), "PATH": os.environ["PATH"]},
        usePTY=pty,
    )
    return process


def set_terminal_size(process: RunProcess, columns: int, rows: int) -> None:
    """
    Set the size of the terminal C{process} runs on (the kernel signals it
    with SIGWINCH).
    """
    assert process.transport is not None
    fd = process.transport.fileno()  # type: ignore[attr-defined]
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, columns, 0, 0))


def listen(reactor: IReactorTCP) -> tuple[KubeletPeer, int, object]:
    """Listen on a free loopback port; return the factory, port and listener."""
    factory = KubeletPeer()
    port = reactor.listenTCP(0, factory, interface="127.0.0.1")
    return factory, port.getHost().port, port
