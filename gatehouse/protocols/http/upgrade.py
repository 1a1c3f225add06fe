"""
Requests that switch protocols (Kubernetes exec, attach and port-forward
over WebSocket or SPDY): the request goes to the target on a connection
of its own (an C{Agent} cannot hand a connection over), and once the
target answers 101 both connections carry the stream, relayed as it
comes, with flow control both ways.

The relay forwards the bytes it is given; the listener decodes them
first (L{IStreamObserver}) to record the stream's meaning and to cut a
stream that breaks its protocol before the bad bytes go on.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import h11
from twisted.internet import endpoints
from twisted.internet.defer import Deferred
from twisted.internet.protocol import Protocol, connectionDone
from twisted.python.failure import Failure

from gatehouse.net import tune
from gatehouse.protocols.http.upstream import Upstream

__all__ = ["UpgradeFailed", "UpstreamStream", "open_stream"]


class UpgradeFailed(Exception):
    """The target's connection failed before it answered."""


class UpstreamStream(Protocol):
    """
    The target's side of an upgrade request: it sends the request head,
    reads the answer head (C{answered} fires with the h11 event), then
    either the answer's body (not switched: C{on_body}, C{on_end}) or the
    switched stream's bytes (C{on_data}).
    """

    transport: Any

    def __init__(
        self, method: bytes, target: bytes, headers: Sequence[tuple[bytes, bytes]]
    ) -> None:
        self._h11 = h11.Connection(h11.CLIENT, max_incomplete_event_size=65536)
        self._head = h11.Request(method=method, target=target, headers=list(headers))
        self.answered: Deferred[h11.Response | h11.InformationalResponse] = Deferred()
        self.switched = False
        self.on_data: Callable[[bytes], None] = lambda data: None
        self.on_body: Callable[[bytes], None] = lambda data: None
        self.on_end: Callable[[], None] = lambda: None
        self.on_lost: Callable[[Failure], None] = lambda reason: None
        self._answer: object = None

    def connectionMade(self) -> None:
        tune(self.transport)
        self.transport.write(self._h11.send(self._head))
        self.transport.write(self._h11.send(h11.EndOfMessage()))

    def dataReceived(self, data: bytes) -> None:
        if self.switched:
            self.on_data(data)
            return
        self._h11.receive_data(data)
        try:
            self._read()
        except h11.RemoteProtocolError as e:
            self._fail(UpgradeFailed(f"the target's answer is not valid HTTP: {e}"))

    def _read(self) -> None:
        while True:
            event = self._h11.next_event()
            if event is h11.NEED_DATA:
                return
            if isinstance(event, h11.InformationalResponse):
                if event.status_code != 101:
                    continue  # 100 Continue and the like
                self.switched = True
                self._answered(event)
                rest, _ = self._h11.trailing_data
                if rest:
                    self.on_data(bytes(rest))
                return
            if event is h11.PAUSED:
                return
            if isinstance(event, h11.Response):
                self._answered(event)
            elif isinstance(event, h11.Data):
                self.on_body(bytes(event.data))
            elif isinstance(event, h11.EndOfMessage):
                self.on_end()
                self.transport.loseConnection()
                return
            elif isinstance(event, h11.ConnectionClosed):
                return

    def _answered(self, event: h11.Response | h11.InformationalResponse) -> None:
        self._answer = event
        d, self.answered = self.answered, Deferred()
        d.callback(event)

    def _fail(self, error: Exception) -> None:
        if self._answer is None:
            d, self.answered = self.answered, Deferred()
            d.errback(Failure(error))
        self.transport.abortConnection()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        if self._answer is None:
            d, self.answered = self.answered, Deferred()
            d.errback(
                Failure(
                    UpgradeFailed(f"the target closed before answering: {reason.value}")
                )
            )
            return
        if not self.switched:
            try:
                self._h11.receive_data(b"")
                self._read()
            except h11.RemoteProtocolError:
                pass
        self.on_lost(reason)


def open_stream(
    reactor: Any,
    upstream: Upstream,
    method: bytes,
    target: bytes,
    headers: Sequence[tuple[bytes, bytes]],
) -> Deferred[UpstreamStream]:
    """
    Connect to C{upstream} (its TLS, its connect timeout) and send an
    upgrade request; fires with the connected L{UpstreamStream} (wait on
    its C{answered}).
    """
    protocol = UpstreamStream(method, upstream.prefix + target, headers)
    d: Deferred[UpstreamStream] = endpoints.connectProtocol(upstream.endpoint, protocol)
    return d
