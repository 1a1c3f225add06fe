"""
The C{postgres} protocol adapter: configuration and listening service.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from twisted.application.service import IService
from twisted.cred.checkers import ICredentialsChecker
from zope.interface import implementer

from gatehouse.config import ConfigSection, ListenerConfig, TargetConfig
from gatehouse.policy.attributes import PolicyAttributes
from gatehouse.protocols import (
    IProtocolAdapter,
    ListeningService,
    listener_options,
    listening_factory,
)
from gatehouse.protocols.postgres import config
from gatehouse.protocols.postgres.server import CancelRegistry, PostgresServerFactory
from gatehouse.tls import server_tls_options


def _options(listener: ListenerConfig) -> config.PostgresListenerOptions:
    return listener_options(listener, config.PostgresListenerOptions)


def _factory(service: IService) -> PostgresServerFactory:
    return listening_factory(service, PostgresServerFactory)


@implementer(IProtocolAdapter)
class PostgresAdapter:
    """PostgreSQL clients in, PostgreSQL targets out."""

    name = "postgres"

    @property
    def policy_attributes(self) -> PolicyAttributes:
        """What policy rules can say about statements (kind, object, ...)."""
        # Imported on use: it loads the SQL parser.
        from gatehouse.protocols.postgres.attributes import POLICY_ATTRIBUTES

        return POLICY_ATTRIBUTES

    def __init__(self) -> None:
        # One registry for the whole gateway: a cancel may arrive on any
        # listener.
        self.cancels = CancelRegistry()

    def parse_listener_options(
        self, options: ConfigSection
    ) -> config.PostgresListenerOptions:
        """See L{IProtocolAdapter.parse_listener_options}."""
        return config.parse_listener_options(options)

    def parse_target_options(
        self, options: ConfigSection
    ) -> config.PostgresTargetOptions:
        """See L{IProtocolAdapter.parse_target_options}."""
        return config.parse_target_options(options)

    def check_listener(self, listener: ListenerConfig, section: ConfigSection) -> None:
        """
        A PostgreSQL listener takes passwords (tokens): it needs TLS, unless
        cleartext is explicitly allowed (loopback tests).
        """
        if listener.tls is None and not _options(listener).allow_cleartext:
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
        tls = (
            server_tls_options(listener.tls, b"postgresql")
            if listener.tls is not None
            else None
        )
        factory = PostgresServerFactory(
            listener.name,
            _options(listener),
            {t.name: t for t in targets},
            session_factory,
            reactor,
            tls,
            self.cancels,
        )
        return ListeningService(listener.port, factory, listener.address, reactor)

    def update_listener(
        self,
        service: IService,
        listener: ListenerConfig,
        targets: Sequence[TargetConfig],
    ) -> Callable[[], None]:
        """
        Prepare a reloaded configuration for a listener made by
        L{makeListener} (same address and port); the returned function
        applies it: new connections get the new targets, options and TLS
        certificate, open connections keep theirs.

        @raise Exception: the new TLS files cannot be loaded (nothing changes).
        """
        tls = (
            server_tls_options(listener.tls, b"postgresql")
            if listener.tls is not None
            else None
        )
        options = _options(listener)
        new_targets = {t.name: t for t in targets}
        factory = _factory(service)

        def apply() -> None:
            factory.tls = tls
            factory.options = options
            # New caps count the connections open now too.
            factory.limits.caps = options.caps
            factory.classifier.queue = options.classify_queue
            # A catalog caches what one target's connection settings reach.
            for name in list(factory.catalogs):
                if factory.targets.get(name) != new_targets.get(name):
                    del factory.catalogs[name]
            factory.targets = new_targets

        return apply

    def restart_needed(self, old: ListenerConfig, new: ListenerConfig) -> list[str]:
        """The classifier's worker processes start with the listener."""
        before, after = _options(old), _options(new)
        if before.classify_workers != after.classify_workers:
            return ["classify_workers"]
        return []

    def set_draining(self, service: IService, draining: bool) -> None:
        """Refuse (57P03) or accept new clients of a listener."""
        _factory(service).draining = draining

    def credentials_checkers(
        self, listener: ListenerConfig, reactor: Any
    ) -> Sequence[ICredentialsChecker]:
        """Tokens (as passwords) only."""
        return ()


adapter = PostgresAdapter()
