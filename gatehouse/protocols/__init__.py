"""
Protocol adapters: how gatehouse learns to speak a wire protocol.

Each protocol (PostgreSQL, SSH, HTTP, ...) provides one L{IProtocolAdapter}.
The configuration loader asks the adapter named by a listener's or target's
C{protocol} key to validate that entry's C{options}, and the service builder
asks it for a listening service.  Adapters are found by name in a process-wide
registry: built-in ones are imported on first use, and an application that
embeds gatehouse adds its own with L{register_protocol}.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from importlib import import_module
from typing import TYPE_CHECKING, Any, TypeVar

import attrs
from twisted.application.internet import TCPServer
from zope.interface import Attribute, Interface, implementer
from zope.interface.verify import verifyObject

from gatehouse.limits import ConnectionCaps
from gatehouse.policy.attributes import PolicyAttributes

if TYPE_CHECKING:
    from twisted.application.service import IService
    from twisted.cred.checkers import ICredentialsChecker

    from gatehouse.config import ConfigSection, ListenerConfig, TargetConfig

__all__ = [
    "IProtocolAdapter",
    "LimitedListenerOptions",
    "ListenerOptions",
    "ListeningService",
    "ProtocolAdapterBase",
    "TargetOptions",
    "get_protocol",
    "listener_options",
    "listening_factory",
    "protocol_names",
    "register_protocol",
    "unregister_protocol",
]


@attrs.frozen
class ListenerOptions:
    """
    Base of a protocol's listener options (what
    L{IProtocolAdapter.parse_listener_options} returns): the core reads
    nothing from them; the protocol's own attrs subclass adds its fields.
    """


@attrs.frozen
class LimitedListenerOptions(ListenerOptions):
    """
    Listener options with the core's connection limits
    (L{gatehouse.limits.connection_limits} parses them): a protocol's
    listener options class extends it.
    """

    #: seconds from accept until the client is authenticated and its
    #: target session ready; not reset by bytes the client trickles in
    authentication_timeout: float = 30.0
    #: connections of this listener in any state
    max_connections: int = 1000
    #: of which not yet authenticated
    max_unauthenticated: int = 256
    #: of those, per client address
    max_unauthenticated_per_address: int = 32

    @property
    def caps(self) -> ConnectionCaps:
        """The listener's connection caps."""
        return ConnectionCaps(
            self.max_connections,
            self.max_unauthenticated,
            self.max_unauthenticated_per_address,
        )


@attrs.frozen
class TargetOptions:
    """
    Base of a protocol's target options (what
    L{IProtocolAdapter.parse_target_options} returns), with what the core
    asks of them; a protocol's attrs subclass adds its fields and
    overrides these where it has something to say.
    """

    def group_problems(self, known: frozenset[str]) -> list[tuple[str, str]]:
        """
        (key, message) for each identity group the options name that is
        not in C{known} (the groups C{policy.groups} declares).
        """
        return []

    def access_problems(self, allow_groups: tuple[str, ...]) -> list[tuple[str, str]]:
        """
        (key, message) for each identity group the options name that
        C{allow_groups} (the target's, which the core reads and enforces)
        does not admit: such an entry could never be used.
        """
        return []

    def environment_problems(self) -> list[tuple[str, str]]:
        """
        (key, message) for each environment variable the options name that
        this process lacks (checked at start, reload and C{check-config}).
        """
        return []

    def describe_logins(self) -> list[str]:
        """
        How identities log in to the target where that differs by group,
        one line per rule (C{gatehouse check-config} prints them); empty
        when there is nothing to say.
        """
        return []


class IProtocolAdapter(Interface):
    """
    Everything gatehouse needs to know about one wire protocol, and all
    the core ever calls on it: the registry checks it with C{verifyObject}.

    Option parsing reports problems through the L{ConfigSection} it is given,
    so they carry the full key path (C{listeners[0].options.tls_mode}) and
    land in the same list as every other problem in the file.  Parsing should
    carry on after a problem so that all of them are reported at once; its
    return value is discarded when any problem was reported.
    """

    name = Attribute(
        "The protocol's name as written in the configuration (C{str}), "
        "for example C{'postgres'}."
    )

    policy_attributes = Attribute(
        "What policy rules can say about this protocol's commands "
        "(L{gatehouse.policy.attributes.PolicyAttributes}): each rule key, "
        "the L{Command} field it reads, how it matches and, for closed "
        "sets, the words it may name.  A rule key no protocol in a rule's "
        "scope declares is a load-time error."
    )

    def parse_listener_options(options: ConfigSection) -> ListenerOptions:
        """
        Validate a listener's C{options} mapping.

        @param options: The C{options} mapping of one listener (empty if the
            key was absent).  Keys the adapter does not read through it are
            reported as unknown.

        @return: An immutable value; it becomes L{ListenerConfig.options}.
        """

    def parse_target_options(options: ConfigSection) -> TargetOptions:
        """
        Validate a target's C{options} mapping.

        @param options: As for L{parse_listener_options}.

        @return: An immutable value; it becomes L{TargetConfig.options}.
        """

    def check_listener(listener: ListenerConfig, section: ConfigSection) -> None:
        """
        Check rules that span a listener's own keys and its options (for
        example "TLS, or cleartext explicitly allowed"); report problems
        through C{section}.  Called once its options parsed.
        """

    def makeListener(
        listener: ListenerConfig,
        targets: Sequence[TargetConfig],
        session_factory: Callable[..., Any],
        reactor: Any,
    ) -> IService:
        """
        Create the service that accepts client connections for C{listener}.

        @param listener: The listener's configuration.
        @param targets: Every configured target of this protocol.
        @param session_factory: Opens a session for an accepted connection;
            the listener never talks to recording, policy or approval
            directly.
        @param reactor: The reactor to listen and connect with.

        @return: A service that listens when started and stops listening
            when stopped.
        """

    def update_listener(
        service: IService,
        listener: ListenerConfig,
        targets: Sequence[TargetConfig],
    ) -> Callable[[], None] | None:
        """
        Prepare a reloaded configuration for a listener made by
        L{makeListener} at the same address and port.

        @return: A function that applies it (new connections get the new
            configuration, open ones keep theirs), or None when this
            protocol cannot change a running listener (a restart applies
            the new configuration).

        @raise Exception: The new configuration cannot be used (for example
            its TLS files do not load); nothing has changed.
        """

    def restart_needed(old: ListenerConfig, new: ListenerConfig) -> Sequence[str]:
        """
        What changed in a listener's options that L{update_listener}
        cannot apply to a running listener (a restart is needed), for
        example C{["classify_workers"]}; empty when nothing.
        """

    def set_draining(service: IService, draining: bool) -> None:
        """
        Refuse (C{draining}) or accept new clients of a listener made by
        L{makeListener}, with the protocol's own "shutting down" error;
        open sessions carry on.
        """

    def credentials_checkers(
        listener: ListenerConfig, reactor: Any
    ) -> Sequence[ICredentialsChecker]:
        """
        Checkers for the credentials this listener's clients present
        besides bearer tokens (an SSH user certificate); the session hub
        registers them (L{gatehouse.credentials.CredentialCheckers}), so
        L{gatehouse.session.Session.authenticate} accepts them.
        """


@implementer(IProtocolAdapter)
class ProtocolAdapterBase:
    """
    Defaults for the parts of L{IProtocolAdapter} a simple protocol does
    not need; a subclass sets C{name} and writes L{makeListener}, and
    overrides the rest as its protocol needs:

      - no listener or target options (any key is reported as unknown);
      - no policy attributes: a rule that names a condition (C{kind:},
        C{object:}, ...) cannot apply to it, only rules on scope alone do;
      - no cross-key listener checks;
      - a reload cannot change a running listener (a restart is needed);
      - draining does not refuse new clients early: they are cut off with
        every other session when the grace period ends.
    """

    name: str
    policy_attributes: PolicyAttributes = PolicyAttributes()

    def parse_listener_options(self, options: ConfigSection) -> ListenerOptions:
        """No options: every key in C{options} is unknown."""
        return ListenerOptions()

    def parse_target_options(self, options: ConfigSection) -> TargetOptions:
        """No options: every key in C{options} is unknown."""
        return TargetOptions()

    def check_listener(self, listener: ListenerConfig, section: ConfigSection) -> None:
        """Nothing spans the listener's keys and its (absent) options."""

    def makeListener(
        self,
        listener: ListenerConfig,
        targets: Sequence[TargetConfig],
        session_factory: Callable[..., Any],
        reactor: Any,
    ) -> IService:
        """A subclass must say how its protocol listens."""
        raise NotImplementedError(f"{type(self).__name__}.makeListener")

    def update_listener(
        self,
        service: IService,
        listener: ListenerConfig,
        targets: Sequence[TargetConfig],
    ) -> Callable[[], None] | None:
        """A running listener keeps its configuration: restart to change it."""
        return None

    def restart_needed(self, old: ListenerConfig, new: ListenerConfig) -> Sequence[str]:
        """Nothing beyond what L{update_listener} already refuses."""
        return ()

    def set_draining(self, service: IService, draining: bool) -> None:
        """New clients are not refused early (see the class docstring)."""

    def credentials_checkers(
        self, listener: ListenerConfig, reactor: Any
    ) -> Sequence[ICredentialsChecker]:
        """Bearer tokens only."""
        return ()


class ListeningService(TCPServer):
    """
    A listener's service (what L{IProtocolAdapter.makeListener} returns
    for a TCP protocol): it keeps its factory, which a reload or a drain
    changes (L{listening_factory}).
    """

    def __init__(self, port: int, factory: Any, interface: str, reactor: Any) -> None:
        super().__init__(port, factory, interface=interface, reactor=reactor)
        self.factory = factory


_F = TypeVar("_F")
_O = TypeVar("_O", bound=ListenerOptions)


def listening_factory(service: object, kind: type[_F]) -> _F:
    """
    The factory of a L{ListeningService}, if it is a C{kind}.

    @raise TypeError: C{service} is another protocol's, or not a listener.
    """
    factory = getattr(service, "factory", None)
    if not isinstance(service, ListeningService) or not isinstance(factory, kind):
        raise TypeError(f"not a {kind.__name__} listener: {service!r}")
    return factory


def listener_options(listener: ListenerConfig, kind: type[_O]) -> _O:
    """
    A listener's options as its adapter parsed them (C{kind}'s defaults
    when it has none).

    @raise TypeError: they are another protocol's.
    """
    options = listener.options
    if options is None:
        return kind()
    if not isinstance(options, kind):
        raise TypeError(f"not {kind.__name__}: {options!r}")
    return options


# Built-in adapters, imported on first use so that loading the registry stays
# cheap: protocol name -> "module:attribute".
_BUILTIN: dict[str, str] = {
    "postgres": "gatehouse.protocols.postgres.adapter:adapter",
    "ssh": "gatehouse.protocols.ssh.adapter:adapter",
    "http": "gatehouse.protocols.http.adapter:adapter",
    "kubernetes": "gatehouse.protocols.kubernetes.adapter:adapter",
}

_registry: dict[str, IProtocolAdapter] = {}


def register_protocol(adapter: IProtocolAdapter) -> None:
    """
    Make C{adapter} available under C{adapter.name}.

    @raise ValueError: if another adapter already has that name.
    @raise zope.interface.exceptions.Invalid: if C{adapter} does not provide
        L{IProtocolAdapter}.
    """
    verifyObject(IProtocolAdapter, adapter)
    name = adapter.name
    if name in _registry or name in _BUILTIN:
        raise ValueError(f"protocol {name!r} is already registered")
    _registry[name] = adapter


def unregister_protocol(name: str) -> None:
    """
    Forget the adapter registered under C{name} (a no-op if there is none).
    """
    _registry.pop(name, None)


def get_protocol(name: str) -> IProtocolAdapter:
    """
    Return the adapter for protocol C{name}.

    @raise KeyError: if no such protocol is known.
    """
    adapter = _registry.get(name)
    if adapter is None:
        target = _BUILTIN.get(name)
        if target is None:
            raise KeyError(name)
        module, _, attribute = target.partition(":")
        adapter = getattr(import_module(module), attribute)
        _registry[name] = adapter
    return adapter


def protocol_names() -> tuple[str, ...]:
    """
    Return the names of all known protocols, sorted.
    """
    return tuple(sorted(_registry.keys() | _BUILTIN.keys()))
