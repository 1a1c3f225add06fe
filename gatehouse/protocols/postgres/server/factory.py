"""The PostgreSQL listener: one factory per listener, and its refusals."""

from __future__ import annotations

from collections.abc import Mapping

from twisted.internet.protocol import Factory, Protocol
from twisted.logger import Logger
from twisted.python.failure import Failure

from gatehouse.config import TargetConfig
from gatehouse.limits import ConnectionLimits, fds_needed, open_file_limit
from gatehouse.protocols.postgres import codec
from gatehouse.protocols.postgres.catalog import Catalog
from gatehouse.protocols.postgres.classifier import ClassifierPool
from gatehouse.protocols.postgres.commands import CommandCache
from gatehouse.protocols.postgres.config import PostgresListenerOptions
from gatehouse.protocols.postgres.server.flow import CancelRegistry
from gatehouse.protocols.postgres.server.protocol import PostgresServerProtocol
from gatehouse.recording.interfaces import RecordingUnavailable


class PostgresServerFactory(Factory):
    """
    Builds a L{PostgresServerProtocol} per client of one listener, within
    the listener's connection caps.

    @param tls: server TLS options (ALPN C{postgresql}), or None.
    """

    noisy = False

    def __init__(
        self,
        listener_name: str,
        options: PostgresListenerOptions,
        targets: Mapping[str, TargetConfig],
        session_factory: object,
        reactor: object,
        tls: object | None,
        cancels: CancelRegistry,
    ):
        self.listener_name = listener_name
        self.options = options
        self.targets = targets
        self.session_factory = session_factory
        self.reactor = reactor
        self.tls = tls
        self.cancels = cancels
        self.commands = CommandCache()
        #: worker processes for long statements (see L{ClassifierPool})
        self.classifier = ClassifierPool(reactor, options.classify_workers)
        self.catalogs: dict[str, Catalog] = {}
        self.connections: set[PostgresServerProtocol] = set()
        #: connections counted against the listener's caps
        self.limits = ConnectionLimits(options.caps)
        #: refused connections waiting for their client to read why
        self.refusing = 0
        #: set while the gateway drains (SIGTERM): new clients are refused
        self.draining = False

    _log = Logger()

    def startFactory(self) -> None:
        """Warn if the process may run out of descriptors below the caps."""
        needed = fds_needed(self.options.max_connections)
        soft = open_file_limit()
        if soft is not None and soft < needed:
            self._log.warn(
                "Listener {listener}: max_connections {max} needs about"
                " {needed} open files, the process may open {soft}: raise"
                " the limit (LimitNOFILE=) or lower max_connections",
                listener=self.listener_name,
                max=self.options.max_connections,
                needed=needed,
                soft=soft,
            )

    def catalog(self, target: TargetConfig) -> Catalog:
        """The column catalog of C{target}, shared by its sessions."""
        catalog = self.catalogs.get(target.name)
        if catalog is None:
            catalog = self.catalogs[target.name] = Catalog(
                self.reactor,
                target.options,
                target.name,
                self.options.connect_timeout,
            )
        return catalog

    def buildProtocol(self, addr: object) -> Protocol:
        """
        A protocol for a new client, or a L{TooManyConnections} answer if
        the listener is over one of its caps (counted per source address).
        """
        admission = self.limits.admit(getattr(addr, "host", None) or "local")
        if isinstance(admission, str):
            refusal = TooManyConnections(self, admission)
            refusal.factory = self
            return refusal
        protocol = PostgresServerProtocol(self)
        protocol.factory = self
        protocol._admission = admission
        admission.on_evict = protocol._evicted
        return protocol


class TooManyConnections(Protocol):
    """
    Answers a connection over a cap of its listener with FATAL 53300 and
    closes it: no session, nothing recorded, one log line.  The client gets
    up to L{LINGER} seconds to read the error (its own bytes are read and
    dropped meanwhile, so no reset destroys the answer); past
    L{MAX_LINGERING} such connections at once, they are closed at once.
    """

    LINGER = 1.0
    MAX_LINGERING = 64

    def __init__(self, factory: PostgresServerFactory, why: str):
        self._factory = factory
        self._why = why
        self._timer = None
        self._lingering = False

    def connectionMade(self) -> None:
        factory = self._factory
        peer = self.transport.getPeer()
        address = f"{getattr(peer, 'host', peer)}:{getattr(peer, 'port', '')}"
        try:
            session = factory.session_factory(
                "postgres", factory.listener_name, address
            )
        except RecordingUnavailable:
            session = None
        if session is not None:
            session.close(f"too many connections: {self._why}")
        self.transport.write(
            codec.ErrorResponse.build(
                "FATAL", "53300", "too many connections", self._why
            ).encode()
        )
        if factory.refusing >= self.MAX_LINGERING:
            self.transport.loseConnection()
            return
        factory.refusing += 1
        self._lingering = True
        self.transport.loseWriteConnection()
        self._timer = factory.reactor.callLater(
            self.LINGER, self.transport.abortConnection
        )

    def dataReceived(self, data: bytes) -> None:
        pass

    def connectionLost(self, reason: Failure) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        if self._lingering:
            self._lingering = False
            self._factory.refusing -= 1
