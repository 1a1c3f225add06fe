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
from typing import TYPE_CHECKING, Any

from zope.interface import Attribute, Interface
from zope.interface.verify import verifyObject

if TYPE_CHECKING:
    from twisted.application.service import IService

    from gatehouse.config import ConfigSection, ListenerConfig, TargetConfig

__all__ = [
    "IProtocolAdapter",
    "get_protocol",
    "protocol_names",
    "register_protocol",
    "unregister_protocol",
]


class IProtocolAdapter(Interface):
    """
    Everything gatehouse needs to know about one wire protocol.

    Option parsing reports problems through the L{ConfigSection} it is given,
    so they carry the full key path (C{listeners[0].options.tls_mode}) and
    land in the same list as every other problem in the file.  Parsing should
    carry on after a problem so that all of them are reported at once; its
    return value is discarded when any problem was reported.

    An adapter may also define C{check_listener(listener, section)}, called
    with the parsed L{ListenerConfig} and its section, for rules that span
    the listener's own keys and its options.

    An adapter may also say what policy rules can name, so that a rule
    naming something its commands never carry is a load-time error (with
    a did-you-mean): C{command_kinds} (the C{kind:} key), C{command_flags}
    (C{flag:}) and C{command_categories} (C{category:}), each a
    C{frozenset[str]}.  An adapter without one of them accepts any word
    for that key.
    """

    name = Attribute(
        "The protocol's name as written in the configuration (C{str}), "
        "for example C{'postgres'}."
    )

    def parse_listener_options(options: ConfigSection) -> object:
        """
        Validate a listener's C{options} mapping.

        @param options: The C{options} mapping of one listener (empty if the
            key was absent).  Keys the adapter does not read through it are
            reported as unknown.

        @return: An immutable value; it becomes L{ListenerConfig.options}.
        """

    def parse_target_options(options: ConfigSection) -> object:
        """
        Validate a target's C{options} mapping.

        @param options: As for L{parse_listener_options}.

        @return: An immutable value; it becomes L{TargetConfig.options}.
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


# Built-in adapters, imported on first use so that loading the registry stays
# cheap: protocol name -> "module:attribute".
_BUILTIN: dict[str, str] = {
    "postgres": "gatehouse.protocols.postgres.adapter:adapter",
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
