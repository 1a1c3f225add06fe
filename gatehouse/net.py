"""
Transport helpers for relaying with low latency.

Twisted's C{transport.write} never sends at once: it queues the bytes,
registers the socket for writability and sends on the next reactor turn,
then unregisters.  For a relay answering small request/response messages
that round trip (two epoll_ctl calls and a loop turn per message) was most
of the reactor's time (bench/postgres.py --profile).  L{send_now} sends
straight away when nothing is queued, and leaves everything else (partial
sends, errors, TLS, closing transports) to Twisted.

This is the one place that reaches into Twisted's private state
(C{tcp.Connection}'s write buffers); tests/test_net.py pins what it relies
on against the installed Twisted.
"""

from __future__ import annotations

from typing import Any

from twisted.internet import tcp
from twisted.internet.interfaces import IPushProducer, ITCPTransport, ITransport
from zope.interface import implementer

__all__ = ["PauseReasons", "Reason", "send_now", "tune"]


def tune(transport: ITransport) -> None:
    """
    Set TCP_NODELAY on a TCP transport: a relay must not hold small
    messages back waiting for ACKs (PostgreSQL and pgbouncer set it too).
    """
    if ITCPTransport.providedBy(transport):
        try:
            transport.setTcpNoDelay(True)
        except OSError:
            pass


def send_now(transport: ITransport, data: bytes) -> None:
    """
    Write C{data} to C{transport}, sending it immediately when the
    transport is a plain TCP connection (a L{tcp.Connection} without TLS)
    with nothing queued; otherwise, or for what the socket did not take,
    C{transport.write}.
    """
    if (
        isinstance(transport, tcp.Connection)
        and not transport.TLS
        and not transport.dataBuffer
        and not transport._tempDataBuffer
        and transport.connected
        and not transport.disconnecting
    ):
        try:
            sent = transport.socket.send(data)
        except (BlockingIOError, InterruptedError):
            sent = 0
        except OSError:
            # Let Twisted notice and report the broken connection its way.
            sent = 0
        if sent == len(data):
            return
        data = data[sent:]
    transport.write(data)


@implementer(IPushProducer)
class PauseReasons:
    """
    Several parties may pause one transport (the other side's write buffer,
    the recorder's backlog, a pending authentication); it reads again only
    when none of them wants it paused.
    """

    def __init__(self, transport: Any, name: str):
        self._transport = transport
        self._name = name
        self._reasons: set[str] = set()

    def reason(self, name: str) -> Reason:
        """A pause switch on this transport for one party, C{name}."""
        return Reason(self, name)

    def release(self) -> None:
        """Read again whatever paused it (the connection is closing)."""
        if self._reasons:
            self._reasons.clear()
            self._transport.resumeProducing()

    def pause(self, name: str) -> None:
        """C{name} wants the transport paused."""
        if not self._reasons:
            self._transport.pauseProducing()
        self._reasons.add(name)

    def resume(self, name: str) -> None:
        """C{name} no longer does: read again if nobody else does."""
        if name in self._reasons:
            self._reasons.discard(name)
            if not self._reasons:
                self._transport.resumeProducing()

    def pauseProducing(self) -> None:
        self.pause("peer")

    def resumeProducing(self) -> None:
        self.resume("peer")

    def stopProducing(self) -> None:
        self._transport.stopProducing()


@implementer(IPushProducer)
class Reason:
    """One party's pause switch on a L{PauseReasons}."""

    def __init__(self, gate: PauseReasons, name: str):
        self._gate = gate
        self._name = name

    def pauseProducing(self) -> None:
        self._gate.pause(self._name)

    def resumeProducing(self) -> None:
        self._gate.resume(self._name)

    def stopProducing(self) -> None:
        pass
