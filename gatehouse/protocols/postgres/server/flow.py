"""
Cancel keys and pause reasons: what the PostgreSQL server's connections
share besides the factory.
"""

from __future__ import annotations

import hmac
import os
import struct
from typing import TYPE_CHECKING

from twisted.internet.interfaces import IPushProducer
from zope.interface import implementer

if TYPE_CHECKING:
    from gatehouse.protocols.postgres.server.protocol import PostgresServerProtocol


class CancelRegistry:
    """
    Maps the BackendKeyData the gateway gave each client to the target
    backend it stands for, so a client's CancelRequest reaches the right
    query on the right target.
    """

    def __init__(self):
        self._entries: dict[int, tuple[bytes, PostgresServerProtocol]] = {}

    def register(self, protocol: PostgresServerProtocol) -> tuple[int, bytes]:
        """Allocate a (pid, secret) pair for C{protocol}."""
        while True:
            pid = struct.unpack("!I", os.urandom(4))[0] & 0x7FFFFFFF
            if pid and pid not in self._entries:
                break
        secret = os.urandom(4)
        self._entries[pid] = (secret, protocol)
        return pid, secret

    def unregister(self, pid: int) -> None:
        """Forget a key (its connection ended)."""
        self._entries.pop(pid, None)

    def lookup(self, pid: int, secret: bytes) -> PostgresServerProtocol | None:
        """The connection a cancel key belongs to, if the key matches."""
        entry = self._entries.get(pid)
        if entry is None or not hmac.compare_digest(entry[0], secret):
            return None
        return entry[1]


@implementer(IPushProducer)
class _PauseReasons:
    """
    Several parties may pause one transport (the other side's write buffer,
    the recorder's backlog, a pending authentication); it reads again only
    when none of them wants it paused.
    """

    def __init__(self, transport: object, name: str):
        self._transport = transport
        self._name = name
        self._reasons: set[str] = set()

    def reason(self, name: str) -> _Reason:
        return _Reason(self, name)

    def release(self) -> None:
        """Read again whatever paused it (the connection is closing)."""
        if self._reasons:
            self._reasons.clear()
            self._transport.resumeProducing()

    def pause(self, name: str) -> None:
        if not self._reasons:
            self._transport.pauseProducing()
        self._reasons.add(name)

    def resume(self, name: str) -> None:
        if name in self._reasons:
            self._reasons.discard(name)
            if not self._reasons:
                self._transport.resumeProducing()

    def pauseProducing(self) -> None:
        self.pause("peer")

    def resumeProducing(self) -> None:
        self.resume("peer")

    def stopProducing(self) -> None:
        self._transport.stopProducing()


@implementer(IPushProducer)
class _Reason:
    """One party's pause switch on a L{_PauseReasons}."""

    def __init__(self, gate: _PauseReasons, name: str):
        self._gate = gate
        self._name = name

    def pauseProducing(self) -> None:
        self._gate.pause(self._name)

    def resumeProducing(self) -> None:
        self._gate.resume(self._name)

    def stopProducing(self) -> None:
        pass
