"""
Tests for L{gatehouse.net}: what L{send_now} relies on in the installed
Twisted (private attributes of C{tcp.Connection}), and that it sends at
once only where that is safe.
"""

from __future__ import annotations

import socket

from twisted.internet import reactor, tcp
from twisted.internet.defer import Deferred
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase, TestCase

from gatehouse.net import send_now, tune


class _Server(Protocol):
    connected: Deferred[_Server]

    def connectionMade(self) -> None:
        self.factory.connected.callback(self)  # type: ignore[attr-defined]


class SendNowTests(TestCase):
    """
    L{send_now} on a real loopback TCP connection.
    """

    async def connect(self) -> tuple[_Server, socket.socket]:
        factory = Factory.forProtocol(_Server)
        factory.connected = Deferred()  # type: ignore[attr-defined]
        port = reactor.listenTCP(0, factory, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        peer = socket.create_connection(("127.0.0.1", port.getHost().port))
        peer.settimeout(5)
        self.addCleanup(peer.close)
        server = await factory.connected  # type: ignore[attr-defined]
        self.addCleanup(server.transport.abortConnection)
        return server, peer

    async def test_assumptions(self) -> None:
        """
        A server-side TCP transport is a C{tcp.Connection} with the
        attributes L{send_now} reads, of the types it expects, and an
        empty write queue when idle.  If Twisted changes them, this fails
        before the relay misbehaves.
        """
        server, _ = await self.connect()
        transport = server.transport
        self.assertIsInstance(transport, tcp.Connection)
        self.assertIsInstance(transport.socket, socket.socket)
        self.assertIs(transport.TLS, False)
        self.assertEqual(transport.dataBuffer, b"")
        self.assertEqual(transport._tempDataBuffer, [])
        self.assertTrue(transport.connected)
        self.assertFalse(transport.disconnecting)
        # What write() does: queue, to be sent on a later reactor turn.
        transport.write(b"queued")
        self.assertEqual(transport._tempDataBuffer, [b"queued"])

    async def test_sent_at_once(self) -> None:
        """
        With nothing queued the bytes go to the socket before send_now
        returns: nothing is left in Twisted's buffers, and the peer reads
        them without the reactor running.
        """
        server, peer = await self.connect()
        send_now(server.transport, b"hello")
        self.assertEqual(server.transport._tempDataBuffer, [])
        self.assertEqual(server.transport.dataBuffer, b"")
        self.assertEqual(peer.recv(100), b"hello")

    async def test_order_kept(self) -> None:
        """
        Behind bytes already queued, send_now queues too: the peer gets
        everything in order.
        """
        server, peer = await self.connect()
        server.transport.write(b"first,")
        send_now(server.transport, b"second")
        self.assertEqual(server.transport._tempDataBuffer, [b"first,", b"second"])
        received = b""
        while len(received) < len(b"first,second"):
            await Deferred.fromCoroutine(_turn())
            try:
                received += peer.recv(100, socket.MSG_DONTWAIT)
            except BlockingIOError:
                pass
        self.assertEqual(received, b"first,second")

    async def test_tune(self) -> None:
        """
        L{tune} sets TCP_NODELAY on a TCP transport.
        """
        server, _ = await self.connect()
        sock = server.transport.socket
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 0)
        tune(server.transport)
        self.assertTrue(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))

    async def test_tls_left_to_twisted(self) -> None:
        """
        A connection that started TLS is written through Twisted.
        """
        server, _ = await self.connect()
        transport = server.transport
        self.patch(transport, "TLS", True)
        written: list[bytes] = []
        self.patch(transport, "write", written.append)
        send_now(transport, b"secret")
        self.assertEqual(written, [b"secret"])


async def _turn() -> None:
    d: Deferred[None] = Deferred()
    reactor.callLater(0.001, d.callback, None)
    await d


class OtherTransportTests(SynchronousTestCase):
    """
    Transports that are not a plain C{tcp.Connection}.
    """

    def test_written(self) -> None:
        """
        Anything else (a TLS wrapper, a test transport) gets C{write}.
        """
        transport = StringTransport()
        send_now(transport, b"abc")
        self.assertEqual(transport.value(), b"abc")

    def test_tune_without_tcp(self) -> None:
        """
        L{tune} leaves transports without TCP options alone.
        """
        tune(StringTransport())
