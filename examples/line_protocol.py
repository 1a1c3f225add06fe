"""
An embedded custom protocol: a line-based TCP service behind gatehouse.

This is how an application adds a protocol of its own.  The adapter
validates its options through the same config machinery as the built-in
protocols, and its connection handler talks only to the core: the
L{Session} authenticates the client's token, records every chunk both
ways and closes with a reason; the L{Gate} decides each line with the
policy, indexes it, holds it for approval, and forwards or refuses it.
The handler only says what a line is (L{LineClient.inspect}) and what
forwarding and refusing mean on its wire: it has no way to send a line to
the target that the gate did not permit.

The wire protocol: the client's first line is C{AUTH <jwt>}; every later
line is one command (its first word the kind), relayed to the target and
its answer relayed back.  A refused line is answered C{ERR <why>}; a line
held for approval C{HELD <request id>}.

Run it in a gateway of your own::

    from gatehouse.protocols import register_protocol
    from examples.line_protocol import LineAdapter
    register_protocol(LineAdapter())
    # then load_config(...) + gatehouse.service.makeService(config)

with a config such as::

    listeners:
      - {name: lines, protocol: lines, port: 7000, options: {target: inventory}}
    targets:
      - name: inventory
        protocol: lines
        options: {host: 127.0.0.1, port: 7001, allow_groups: [ops]}
    policy:
      rules:
        - {name: no-drop, protocols: [lines], text: "^drop ", action: deny}
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import attrs
from twisted.application.internet import TCPServer
from twisted.application.service import IService
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.protocol import Factory, Protocol
from twisted.protocols.basic import LineReceiver
from twisted.python.failure import Failure
from zope.interface import implementer

from gatehouse.config import ConfigSection, ListenerConfig, TargetConfig
from gatehouse.gate import PASS, Gate, IGateDriver, Permit, Proposal, Refusal
from gatehouse.policy import Command, Decision
from gatehouse.policy.attributes import REGEX, PolicyAttribute, PolicyAttributes
from gatehouse.protocols import (
    IProtocolAdapter,
    ListenerOptions,
    ProtocolAdapterBase,
    TargetOptions,
)
from gatehouse.recording.format import Direction


@attrs.frozen
class LineTarget(TargetOptions):
    """
    Where a line service is.  Who may reach it (C{allow_groups}) is the
    core's: L{Session.authenticate} refuses anyone else.
    """

    host: str
    port: int


@attrs.frozen
class LineListener(ListenerOptions):
    """A line listener's options: the target its clients reach."""

    target: str


class _Upstream(Protocol):
    """The gateway's connection to the line service."""

    def __init__(self, client: LineClient):
        self.client = client

    def dataReceived(self, data: bytes) -> None:
        if self.client is not None:
            self.client.from_upstream(data)

    def connectionLost(self, reason: Failure) -> None:
        # client is None once the client side has gone first.
        if self.client is not None:
            self.client.upstream_lost()


@implementer(IGateDriver)
class LineClient(LineReceiver):
    """
    One client: authenticate through the session, then every line through
    the gate (this class is the gate's driver).
    """

    delimiter = b"\n"

    def __init__(self, factory: LineFactory):
        self.factory = factory
        self.session = None
        self.upstream = None
        self.gate: Gate | None = None
        self.reason = "client disconnected"

    def connectionMade(self) -> None:
        peer = self.transport.getPeer()
        self.session = self.factory.session_factory(
            "lines", self.factory.listener, f"{peer.host}:{peer.port}"
        )
        self.session.on_failure(lambda why: self.transport.abortConnection())
        self.session.on_terminate(lambda why: self.transport.loseConnection())

    def lineReceived(self, line: bytes) -> None:
        if self.upstream is None:
            self._authenticate(line)
            return
        # Record before anything else: nothing reaches the target unrecorded.
        self.session.data(Direction.CLIENT_TO_GATEWAY, line + b"\n")
        self.gate.receive([line], backlog=len(line))

    def _authenticate(self, line: bytes) -> None:
        verb, _, token = line.partition(b" ")
        # The token is never recorded; the session records the outcome.
        self.session.data(Direction.CLIENT_TO_GATEWAY, verb + b" [REDACTED]\n")
        if verb != b"AUTH":
            self._refuse("expected AUTH <token>", "no AUTH line")
            return
        # LineReceiver holds back lines already buffered while paused, so a
        # line pipelined after AUTH waits for the session to be ready.
        self.pauseProducing()
        target_name = self.factory.options.target
        d = self.session.authenticate(token.decode("ascii", "replace"), target_name)
        d.addCallbacks(
            self._authenticated,
            lambda f: self._refuse(
                "authentication failed", f"authentication failed: {f.value}"
            ),
        )

    def _authenticated(self, identity: Any) -> None:
        target = self.factory.targets[self.factory.options.target]
        endpoint = TCP4ClientEndpoint(self.factory.reactor, target.host, target.port)
        connectProtocol(endpoint, _Upstream(self)).addCallbacks(
            self._connected, lambda f: self._refuse("target unavailable", str(f.value))
        )

    def _connected(self, upstream: _Upstream) -> None:
        self.upstream = upstream
        self.gate = Gate(self.session, self, noun="line")
        self._say(b"OK\n")
        self.resumeProducing()

    # -- IGateDriver: what a line is, and what forwarding it means -----------

    def inspect(self, line: bytes) -> object:
        """A non-empty line is one command, its first word the kind."""
        text = line.decode("utf-8", "replace")
        words = text.split()
        if not words:
            return PASS
        command = Command("lines", words[0], text, normalized=text.lower())
        return Proposal((command,), text)

    def admit(self, line: bytes, permit: Permit) -> object:
        return None

    def forward(self, line: bytes, permit: Permit | None) -> None:
        self.upstream.transport.write(line + b"\n")

    def flush(self) -> None:
        pass

    def refuse(self, line: bytes, refusal: Refusal) -> None:
        self._say(f"ERR {refusal.message}\n".encode())

    def held(self, line: bytes, request: Any, decision: Decision) -> None:
        self._say(f"HELD {request.id}\n".encode())

    def pause_input(self) -> None:
        self.pauseProducing()

    def resume_input(self) -> None:
        self.resumeProducing()

    def failed(self, failure: Failure) -> None:
        self._refuse("internal error", f"internal error: {failure.getErrorMessage()}")

    # -- answers -------------------------------------------------------------

    def from_upstream(self, data: bytes) -> None:
        self.session.data(Direction.GATEWAY_TO_CLIENT, data)
        self.transport.write(data)

    def upstream_lost(self) -> None:
        self.reason = "target closed the connection"
        self.transport.loseConnection()

    def _say(self, data: bytes) -> None:
        self.session.data(Direction.GATEWAY_TO_CLIENT, data)
        self.transport.write(data)

    def _refuse(self, message: str, reason: str) -> None:
        self.reason = reason
        self._say(f"ERR {message}\n".encode())
        self.transport.loseConnection()

    def connectionLost(self, reason: Failure) -> None:
        if self.gate is not None:
            self.gate.close()
        if self.upstream is not None and self.upstream.transport is not None:
            self.upstream.client = None
            self.upstream.transport.loseConnection()
        if self.session is not None:
            self.session.close(self.reason)


class LineFactory(Factory):
    """Makes a L{LineClient} per connection of one listener."""

    def __init__(self, listener, options, targets, session_factory, reactor):
        self.listener = listener
        self.options = options
        self.targets = targets
        self.session_factory = session_factory
        self.reactor = reactor

    def buildProtocol(self, addr: object) -> LineClient:
        return LineClient(self)


@implementer(IProtocolAdapter)
class LineAdapter(ProtocolAdapterBase):
    """
    The C{lines} protocol: register it with L{register_protocol}.

    L{ProtocolAdapterBase} supplies the rest of L{IProtocolAdapter}: a
    reload needs a restart to change a running listener, and a drain
    does not refuse new clients early.
    """

    name = "lines"
    #: policy rules may match a line's text (C{text:}, a regular expression)
    policy_attributes = PolicyAttributes(
        (PolicyAttribute("text", REGEX, "normalized", doc="the line"),)
    )

    def parse_listener_options(self, options: ConfigSection) -> LineListener:
        """A listener names the target its clients reach."""
        return LineListener(target=options.string("target", required=True))

    def parse_target_options(self, options: ConfigSection) -> LineTarget:
        """A target is a host and a port (the core reads C{allow_groups})."""
        return LineTarget(
            host=options.string("host", required=True),
            port=options.integer("port", required=True, minimum=1, maximum=65535),
        )

    def makeListener(
        self,
        listener: ListenerConfig,
        targets: Sequence[TargetConfig],
        session_factory: Callable[..., Any],
        reactor: Any,
    ) -> IService:
        """Listen for line clients."""
        factory = LineFactory(
            listener.name,
            listener.options,
            {t.name: t.options for t in targets},
            session_factory,
            reactor,
        )
        service = TCPServer(
            listener.port, factory, interface=listener.address, reactor=reactor
        )
        service.factory = factory
        return service
