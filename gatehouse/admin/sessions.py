"""
What the admin API knows about sessions: the open ones from the session
hub, past ones from the session index.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from twisted.internet.defer import Deferred, fail
from twisted.internet.threads import deferToThreadPool
from zope.interface import Interface, implementer

from gatehouse.ids import session_time
from gatehouse.recording.cli_sessions import iso_time, session_json
from gatehouse.recording.format import Direction

__all__ = [
    "FILTERS",
    "HubSessionDirectory",
    "ISessionDirectory",
    "NoSessionIndex",
    "matches",
]

#: The filters L{ISessionDirectory.query} understands.
FILTERS = ("subject", "name", "target", "protocol")


class NoSessionIndex(Exception):
    """The gateway keeps no session index: only open sessions are known."""


class ISessionDirectory(Interface):
    """
    Finds sessions for the admin API, as JSON-ready dicts.
    """

    def open_sessions() -> list[dict[str, Any]]:
        """The sessions open now, oldest first."""

    def query(filters: Mapping[str, str], limit: int) -> Deferred[list[dict[str, Any]]]:
        """
        Sessions, open or ended, newest first.

        @param filters: any of C{subject}, C{target} and C{protocol}
            (exactly), and C{name} (part of the display name, any case: a
            display name is whatever a token claims, so confirm the
            subject of what it finds).
        @param limit: at most this many.
        @return: fails with L{NoSessionIndex} if past sessions cannot be
            searched, or L{gatehouse.recording.index.IndexUnavailable} if the
            index cannot be read.
        """


def matches(session: Mapping[str, Any], filters: Mapping[str, str]) -> bool:
    """
    Whether a session dict passes C{filters}, as L{ISessionDirectory.query}
    applies them.
    """
    name = filters.get("name")
    if name and name.lower() not in (session.get("display_name") or "").lower():
        return False
    for name in ("subject", "target", "protocol"):
        wanted = filters.get(name)
        if wanted is not None and session.get(name) != wanted:
            return False
    return True


def _open_json(session: Any, gateway_id: str) -> dict[str, Any]:
    identity = session.identity
    started = session_time(session.id)
    counts = session.byte_counts
    return {
        "id": str(session.id),
        "gateway_id": gateway_id,
        "protocol": session.protocol,
        "target": session.target or "",
        "listener": session.listener,
        "subject": identity.subject if identity else "",
        "display_name": identity.name if identity else "",
        "issuer": identity.issuer if identity else "",
        "groups": list(identity.groups) if identity else [],
        "client_address": session.client_address,
        "open": True,
        "started": iso_time(started),
        "started_unix": started,
        "ended": None,
        "ended_unix": None,
        "close_reason": None,
        "bytes_from_client": counts[Direction.CLIENT_TO_GATEWAY],
        "bytes_to_client": counts[Direction.GATEWAY_TO_CLIENT],
        "bytes_to_upstream": counts[Direction.GATEWAY_TO_UPSTREAM],
        "bytes_from_upstream": counts[Direction.UPSTREAM_TO_GATEWAY],
        "masked_values": session.masked_values,
    }


@implementer(ISessionDirectory)
class HubSessionDirectory:
    """
    Sessions of a L{gatehouse.session.SessionHub}: open ones from its
    C{sessions}, past ones from its index, read on a thread (SQLite calls
    block).

    @param hub: the session hub.
    @param reactor: whose thread pool reads the index; the global reactor
        if None.
    """

    def __init__(self, hub: Any, reactor: Any = None) -> None:
        self._hub = hub
        self._reactor = reactor

    def open_sessions(self) -> list[dict[str, Any]]:
        gateway = self._hub.gateway_id
        sessions = [_open_json(s, gateway) for s in list(self._hub.sessions.values())]
        sessions.sort(key=lambda s: (s["started_unix"], s["id"]))
        return sessions

    def query(
        self, filters: Mapping[str, str], limit: int
    ) -> Deferred[list[dict[str, Any]]]:
        from gatehouse.recording.index import query_sessions

        index = self._hub.index
        path = getattr(index, "path", None)
        if path is None:
            return fail(NoSessionIndex("this gateway keeps no session index"))
        reactor = self._reactor
        if reactor is None:
            from twisted.internet import reactor
        d = deferToThreadPool(
            reactor,
            reactor.getThreadPool(),
            query_sessions,
            path,
            identity=filters.get("subject"),
            name=filters.get("name") or None,
            target=filters.get("target"),
            protocol=filters.get("protocol"),
            limit=limit,
        )
        return d.addCallback(lambda rows: [session_json(row) for row in rows])
