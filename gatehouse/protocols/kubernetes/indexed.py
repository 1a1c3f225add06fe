"""
The commands a Kubernetes session's recording shows its client sent (see
L{gatehouse.protocols.http.indexed}): each request read again as the API
server reads it.
"""

from __future__ import annotations

from collections.abc import Iterable

from gatehouse.protocols.http.indexed import Found, requests_of
from gatehouse.recording.format import Record

__all__ = ["recorded_commands"]


def recorded_commands(records: Iterable[Record]) -> list[Found]:
    """Each request's commands, in order."""
    from gatehouse.protocols.kubernetes.flavour import KubernetesFlavour

    return requests_of(records, KubernetesFlavour())
