"""
The gateway as a PostgreSQL server: what psql, pgbench and drivers talk to.

One L{PostgresServerProtocol} per client connection (L{protocol}), in the
phases of L{Phase}: the login phases (L{login}), then the relay, whose
client side is the gate's driver (L{relay}) and whose target side
delivers and masks the answers (L{results}).  The listener is
L{PostgresServerFactory} (L{factory}).
"""

from gatehouse.protocols.postgres.server._common import PROTECTION_RULE
from gatehouse.protocols.postgres.server.factory import (
    PostgresServerFactory,
    TooManyConnections,
)
from gatehouse.protocols.postgres.server.flow import CancelRegistry
from gatehouse.protocols.postgres.server.protocol import Phase, PostgresServerProtocol

__all__ = [
    "PROTECTION_RULE",
    "CancelRegistry",
    "Phase",
    "PostgresServerFactory",
    "PostgresServerProtocol",
    "TooManyConnections",
]
