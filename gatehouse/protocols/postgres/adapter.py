"""
The C{postgres} protocol adapter: configuration and listening service.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from OpenSSL import crypto
from twisted.application.internet import TCPServer
from twisted.application.service import IService
from twisted.internet import ssl
from zope.interface import implementer

from gatehouse.config import ConfigSection, ListenerConfig, TargetConfig, TLSConfig
from gatehouse.protocols import IProtocolAdapter
from gatehouse.protocols.postgres import config
from gatehouse.protocols.postgres.server import CancelRegistry, PostgresServerFactory


def server_tls_options(tls: TLSConfig) -> ssl.CertificateOptions:
    """
    Server TLS options from PEM files: the certificate file may carry the
    chain after the leaf.  ALPN offers C{postgresql}, as PostgreSQL 17
    requires for direct TLS.
    """
    with open(tls.certificate, "rb") as f:
        pem = f.read()
    with open(tls.key, "rb") as f:
        key = ssl.KeyPair.load(f.read(), crypto.FILETYPE_PEM)
    blocks = [
        b"-----BEGIN CERTIFICATE-----" + part
        for part in pem.split(b"-----BEGIN CERTIFICATE-----")[1:]
    ]
    leaf, *chain = [ssl.Certificate.loadPEM(b) for b in blocks]
    return ssl.CertificateOptions(
        privateKey=key.original,
        certificate=leaf.original,
        extraCertChain=[c.original for c in chain],
        acceptableProtocols=[b"postgresql"],
        raiseMinimumTo=ssl.TLSVersion.TLSv1_2,
    )


@implementer(IProtocolAdapter)
class PostgresAdapter:
    """PostgreSQL clients in, PostgreSQL targets out."""

    name = "postgres"

    def __init__(self) -> None:
        # One registry for the whole gateway: a cancel may arrive on any
        # listener.
        self.cancels = CancelRegistry()

    def parse_listener_options(self, options: ConfigSection) -> object:
        """See L{IProtocolAdapter.parse_listener_options}."""
        return config.parse_listener_options(options)

    def parse_target_options(self, options: ConfigSection) -> object:
        """See L{IProtocolAdapter.parse_target_options}."""
        return config.parse_target_options(options)

    def check_listener(self, listener: ListenerConfig, section: ConfigSection) -> None:
        """
        A PostgreSQL listener takes passwords (tokens): it needs TLS, unless
        cleartext is explicitly allowed (loopback tests).
        """
        if listener.tls is None and not listener.options.allow_cleartext:
            section.problem(
                "a postgres listener needs tls (certificate and key), or "
                "options.allow_cleartext: true to accept tokens in cleartext",
                "tls",
            )

    def makeListener(
        self,
        listener: ListenerConfig,
        targets: Sequence[TargetConfig],
        session_factory: Callable[..., Any],
        reactor: Any,
    ) -> IService:
        """See L{IProtocolAdapter.makeListener}."""
        tls = server_tls_options(listener.tls) if listener.tls is not None else None
        factory = PostgresServerFactory(
            listener.name,
            listener.options or config.PostgresListenerOptions(),
            {t.name: t for t in targets},
            session_factory,
            reactor,
            tls,
            self.cancels,
        )
        service = TCPServer(
            listener.port, factory, interface=listener.address, reactor=reactor
        )
        service.factory = factory
        return service


adapter = PostgresAdapter()
