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

from twisted.internet import tcp
from twisted.internet.interfaces import ITCPTransport, ITransport

__all__ = ["send_now", "tune"]


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
