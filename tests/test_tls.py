"""
Tests for L{gatehouse.tls}: CA bundles trust every certificate they hold,
for the gateway's connections to PostgreSQL targets too.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from twisted.internet import reactor, ssl
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint, wrapClientTLS
from twisted.internet.protocol import Factory, Protocol
from twisted.trial.unittest import SynchronousTestCase, TestCase

from gatehouse._pki import make_ca
from gatehouse.protocols.postgres.config import PostgresTargetOptions, UpstreamTLS
from gatehouse.protocols.postgres.upstream import _tls_options
from gatehouse.tls import load_certificates


def ca_bundle(directory: Path) -> tuple[Path, Path, Any]:
    """
    A bundle of two CAs, an unrelated CA and server TLS options for
    127.0.0.1 signed by the bundle's second CA.
    """
    first = make_ca(directory / "first", "first test CA")
    second = make_ca(directory / "second", "second test CA")
    other = make_ca(directory / "other", "unrelated test CA")
    certPath, keyPath = second.issue("server", sans=("127.0.0.1",))
    bundle = directory / "bundle.pem"
    bundle.write_bytes(first.cert_path.read_bytes() + second.cert_path.read_bytes())
    server = ssl.PrivateCertificate.loadPEM(
        keyPath.read_bytes() + certPath.read_bytes()
    ).options()
    return bundle, other.cert_path, server


class LoadCertificatesTests(SynchronousTestCase):
    """
    L{load_certificates}.
    """

    def test_all(self) -> None:
        """
        Every certificate of a bundle is loaded, in file order.
        """
        bundle, _, _ = ca_bundle(Path(self.mktemp()))
        loaded = load_certificates(bundle.read_bytes(), str(bundle))
        self.assertEqual(
            [c.getSubject().commonName for c in loaded],
            [b"first test CA", b"second test CA"],
        )

    def test_none(self) -> None:
        """
        A file without a certificate is refused, naming the file.
        """
        error = self.assertRaises(
            ValueError, load_certificates, b"not a certificate", "ca.pem"
        )
        self.assertTrue(str(error).startswith("ca.pem: no valid PEM certificate"))


class _Hello(Protocol):
    def connectionMade(self) -> None:
        self.transport.write(b"hello")


class _Receive(Protocol):
    def __init__(self) -> None:
        self.received: Deferred[bytes] = Deferred()
        self.lost: Deferred[None] = Deferred()

    def dataReceived(self, data: bytes) -> None:
        if not self.received.called:
            self.received.callback(data)
        self.transport.loseConnection()

    def connectionLost(self, reason: object) -> None:
        if not self.received.called:
            self.received.errback(reason)
        self.lost.callback(None)


class UpstreamBundleTests(TestCase):
    """
    The options the gateway connects to a target with (verify-full) trust
    every CA of the target's C{ca_file}.
    """

    def options(self, caFile: Path) -> PostgresTargetOptions:
        return PostgresTargetOptions(
            host="127.0.0.1",
            port=5432,
            socket_dir=None,
            database=None,
            user="gw",
            password_file=None,
            password_env=None,
            tls=UpstreamTLS("verify-full", str(caFile)),
        )

    async def exchange(self, server: Any, caFile: Path) -> bytes:
        port = reactor.listenSSL(
            0, Factory.forProtocol(_Hello), server, interface="127.0.0.1"
        )
        self.addCleanup(port.stopListening)
        endpoint = wrapClientTLS(
            _tls_options(self.options(caFile)),
            TCP4ClientEndpoint(reactor, "127.0.0.1", port.getHost().port),
        )
        client = _Receive()
        await endpoint.connect(Factory.forProtocol(lambda: client))
        try:
            return await client.received
        finally:
            await client.lost

    async def test_secondCATrusted(self) -> None:
        """
        A target whose certificate the bundle's second CA signed is
        trusted.
        """
        bundle, _, server = ca_bundle(Path(self.mktemp()))
        self.assertEqual(await self.exchange(server, bundle), b"hello")

    async def test_otherCARefused(self) -> None:
        """
        A target signed by no CA of C{ca_file} is refused.
        """
        _, other, server = ca_bundle(Path(self.mktemp()))
        error = await self.assertFailure(
            Deferred.fromCoroutine(self.exchange(server, other)), Exception
        )
        self.assertIn("certificate verify failed", str(error))
