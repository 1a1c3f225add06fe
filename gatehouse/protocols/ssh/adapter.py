"""The SSH protocol adapter: its options, its listener, its credentials."""

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
from gatehouse.protocols.ssh import config
from gatehouse.protocols.ssh.certificates import SSHCertificateChecker
from gatehouse.protocols.ssh.hostkeys import HostKeyError, load_host_keys
from gatehouse.protocols.ssh.server import SSHGatewayFactory


def _options(listener: ListenerConfig) -> config.SSHListenerOptions:
    return listener_options(listener, config.SSHListenerOptions)


def _factory(service: IService) -> SSHGatewayFactory:
    return listening_factory(service, SSHGatewayFactory)


@implementer(IProtocolAdapter)
class SSHAdapter:
    """OpenSSH clients in (ssh, scp, sftp), SSH servers out."""

    name = "ssh"

    def __init__(self) -> None:
        self._certificates: SSHCertificateChecker | None = None

    @property
    def policy_attributes(self) -> PolicyAttributes:
        """What rules can say about exec lines, file operations, forwards."""
        from gatehouse.protocols.ssh.attributes import POLICY_ATTRIBUTES

        return POLICY_ATTRIBUTES

    def parse_listener_options(
        self, options: ConfigSection
    ) -> config.SSHListenerOptions:
        """See L{config.parse_listener_options}."""
        return config.parse_listener_options(options)

    def parse_target_options(self, options: ConfigSection) -> config.SSHTargetOptions:
        """See L{config.parse_target_options}."""
        return config.parse_target_options(options)

    def check_listener(self, listener: ListenerConfig, section: ConfigSection) -> None:
        """SSH brings its own encryption: a listener has no C{tls}."""
        if listener.tls is not None:
            section.problem("an ssh listener has no tls (SSH encrypts itself)", "tls")

    def makeListener(
        self,
        listener: ListenerConfig,
        targets: Sequence[TargetConfig],
        session_factory: Callable[..., Any],
        reactor: Any,
    ) -> IService:
        """See L{IProtocolAdapter.makeListener}."""
        options = _options(listener)
        factory = SSHGatewayFactory(
            listener.name,
            options,
            load_host_keys(options.host_keys),
            {t.name: t for t in targets},
            session_factory,
            reactor,
            options.authorities(),
        )
        return ListeningService(listener.port, factory, listener.address, reactor)

    def update_listener(
        self,
        service: IService,
        listener: ListenerConfig,
        targets: Sequence[TargetConfig],
    ) -> Callable[[], None]:
        """New connections get the new targets, options and host keys."""
        options = _options(listener)
        keys = load_host_keys(options.host_keys)
        authorities = options.authorities()
        factory = _factory(service)
        new_targets = {t.name: t for t in targets}

        def apply() -> None:
            factory.options = options
            factory.limits.caps = options.caps
            factory.privateKeys = dict(keys)
            factory.publicKeys = {n: k.public() for n, k in keys.items()}
            factory.authorities = authorities
            factory.targets = new_targets

        return apply

    def restart_needed(self, old: ListenerConfig, new: ListenerConfig) -> list[str]:
        """Everything applies to a running listener."""
        return []

    def set_draining(self, service: IService, draining: bool) -> None:
        """Refuse or accept new clients of a listener."""
        _factory(service).draining = draining

    def credentials_checkers(
        self, listener: ListenerConfig, reactor: Any
    ) -> Sequence[ICredentialsChecker]:
        """User certificates of the CAs the listener trusts."""
        authorities = _options(listener).authorities()
        if not authorities:
            return ()
        # One checker for every listener: the hub keeps one per kind of
        # credentials.  Each listener checks its own CAs first.
        if self._certificates is None:
            self._certificates = SSHCertificateChecker(authorities, reactor)
        else:
            self._certificates.trust(authorities)
        return (self._certificates,)


__all__ = ["HostKeyError", "SSHAdapter", "adapter"]

adapter = SSHAdapter()
