"""
Cancel keys: what the PostgreSQL server's connections
share besides the factory.
"""

from __future__ import annotations

import hmac
import os
import struct
from typing import TYPE_CHECKING

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
