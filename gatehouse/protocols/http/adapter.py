"""The C{http} protocol adapter, and the base the C{kubernetes} one shares."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from twisted.application.service import IService
from twisted.cred.checkers import ICredentialsChecker
from twisted.protocols.tls import TLSMemoryBIOFactory
from zope.interface import implementer

from gatehouse.config import ConfigSection, ListenerConfig, TargetConfig
from gatehouse.policy.attributes import PolicyAttributes
from gatehouse.protocols import (
    IProtocolAdapter,
    ListeningService,
    listener_options,
    listening_factory,
)
from gatehouse.protocols.http import config
from gatehouse.protocols.http.flavour import IHTTPFlavour
from gatehouse.protocols.http.plain import POLICY_ATTRIBUTES, PlainHTTP
from gatehouse.protocols.http.server import HTTPGatewayFactory
from gatehouse.tls import server_tls_options

__all__ = ["HTTPAdapter", "HTTPAdapterBase", "adapter"]


def _options(listener: ListenerConfig) -> config.HTTPListenerOptions:
    return listener_options(listener, config.HTTPListenerOptions)


def _factory(service: IService) -> HTTPGatewayFactory:
    return listening_factory(service, HTTPGatewayFactory)


class HTTPAdapterBase:
    """
    What every HTTP protocol's adapter does alike: options, a TLS
    listener of L{HTTPGatewayFactory}, reloads.  A subclass names its
    protocol, its flavour and its policy attributes.
    """

    name = ""
    kubernetes = False

    def flavour(self) -> IHTTPFlavour:
        """The protocol's reading of requests."""
        raise NotImplementedError

    def parse_listener_options(
        self, options: ConfigSection
    ) -> config.HTTPListenerOptions:
        """See L{config.parse_listener_options}."""
        return config.parse_listener_options(options)

    def parse_target_options(self, options: ConfigSection) -> config.HTTPTargetOptions:
        """See L{config.parse_target_options}."""
        return config.parse_target_options(options, kubernetes=self.kubernetes)

    def check_listener(self, listener: ListenerConfig, section: ConfigSection) -> None:
        """A listener speaks TLS unless it allows cleartext (loopback tests)."""
        if listener.tls is None and not _options(listener).allow_cleartext:
            section.problem(
                f"a {self.name} listener needs tls (certificate and key): "
                "clients send their tokens on it",
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
        options = _options(listener)
        factory = HTTPGatewayFactory(
            self.name,
            listener.name,
            options,
            self.flavour(),
            {t.name: t for t in targets},
            session_factory,
            reactor,
        )
        if listener.tls is None:
            return ListeningService(listener.port, factory, listener.address, reactor)
        # HTTP/1.1 only (no h2 by ALPN): kubectl and client-go use it.
        tls = server_tls_options(listener.tls, b"http/1.1")
        service = ListeningService(
            listener.port,
            TLSMemoryBIOFactory(tls, False, factory),
            listener.address,
            reactor,
        )
        # Reloads and drains reach the gateway's factory under the TLS one.
        service.factory = factory
        return service

    def update_listener(
        self,
        service: IService,
        listener: ListenerConfig,
        targets: Sequence[TargetConfig],
    ) -> Callable[[], None]:
        """New requests get the new targets and options."""
        options = _options(listener)
        factory = _factory(service)
        new_targets = {t.name: t for t in targets}

        def apply() -> None:
            factory.options = options
            factory.limits.caps = options.caps
            factory.targets = new_targets

        return apply

    def restart_needed(self, old: ListenerConfig, new: ListenerConfig) -> list[str]:
        """A new certificate needs a new listener."""
        return ["tls"] if old.tls != new.tls else []

    def set_draining(self, service: IService, draining: bool) -> None:
        """Refuse or accept new clients of a listener."""
        _factory(service).draining = draining

    def credentials_checkers(
        self, listener: ListenerConfig, reactor: Any
    ) -> Sequence[ICredentialsChecker]:
        """Bearer tokens only: the core's checker."""
        return ()


@implementer(IProtocolAdapter)
class HTTPAdapter(HTTPAdapterBase):
    """Any HTTP API: method, path and host rules; headers injected upstream."""

    name = "http"

    @property
    def policy_attributes(self) -> PolicyAttributes:
        """Method, path, host."""
        return POLICY_ATTRIBUTES

    def flavour(self) -> IHTTPFlavour:
        """Plain HTTP."""
        return PlainHTTP()


adapter = HTTPAdapter()
