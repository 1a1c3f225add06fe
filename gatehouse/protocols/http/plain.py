"""
The plain C{http} protocol: any HTTP API (an internal admin service),
read as method, path and host.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from zope.interface import implementer

from gatehouse.identity import Identity
from gatehouse.policy.attributes import (
    ANY,
    GLOB,
    REGEX,
    PolicyAttribute,
    PolicyAttributes,
)
from gatehouse.policy.rules import Command
from gatehouse.protocols.http.config import HTTPTargetOptions
from gatehouse.protocols.http.flavour import (
    BodyFilter,
    Described,
    IHTTPFlavour,
    Refused,
    RequestHead,
)
from gatehouse.protocols.http.paths import AmbiguousTarget, split_target

__all__ = ["POLICY_ATTRIBUTES", "PlainHTTP"]

#: methods a plain HTTP target is sent (others are refused: CONNECT, TRACE)
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})

POLICY_ATTRIBUTES = PolicyAttributes(
    (
        PolicyAttribute(
            "method",
            ANY,
            "kinds",
            frozenset(m.lower() for m in METHODS),
            aliases=("methods",),
            doc="the request's method (get, post, ...)",
        ),
        PolicyAttribute(
            "path",
            GLOB,
            "objects",
            aliases=("paths",),
            doc="the request's path, decoded (globs, * crossing /)",
        ),
        PolicyAttribute(
            "host",
            GLOB,
            "host",
            doc="the Host the client asked for",
        ),
        PolicyAttribute(
            "text",
            REGEX,
            "normalized",
            doc="a regular expression searched in 'METHOD /path?query'",
        ),
    )
)


def render_error(refused: Refused) -> tuple[list[tuple[bytes, bytes]], bytes]:
    """The gateway's own answer as a small JSON object."""
    body = json.dumps(
        {"status": refused.status, "reason": refused.reason, "message": refused.message}
    ).encode()
    return [(b"content-type", b"application/json")], body


@implementer(IHTTPFlavour)
class PlainHTTP:
    """Requests as method and path; no impersonation; no masking."""

    protocol = "http"

    def describe(self, head: RequestHead) -> Described | Refused:
        if head.method not in METHODS:
            return Refused(405, "MethodNotAllowed", f"method {head.method} is refused")
        try:
            path, query = split_target(head.target)
        except AmbiguousTarget as e:
            return Refused(400, "BadRequest", f"ambiguous request target: {e}")
        host = (head.values(b"host") or [b""])[0].decode("latin-1")
        method = head.method.lower()
        text = f"{head.method} {head.target.decode('latin-1')}"
        command = Command(
            "http",
            method,
            text,
            objects=(path,),
            normalized=text,
            extra=(("host", (host,)),),
        )
        return Described(
            (command,),
            text,
            fields={"path": path, "query": [list(p) for p in query]},
            index_kind=method,
            objects=(path,),
        )

    def answer(self, refused: Refused) -> tuple[list[tuple[bytes, bytes]], bytes]:
        return render_error(refused)

    def upstream_headers(
        self, identity: Identity, options: HTTPTargetOptions
    ) -> list[tuple[bytes, bytes]]:
        return []

    def response_filter(
        self,
        described: Described,
        status: int,
        headers: Sequence[tuple[bytes, bytes]],
        session: Any,
    ) -> BodyFilter | Refused | None:
        return None

    def stream_observers(
        self,
        described: Described,
        headers: Sequence[tuple[bytes, bytes]],
        session: Any,
    ) -> tuple[Any, Any] | None:
        return None

    def adjust_headers(
        self,
        described: Described,
        session: Any,
        headers: Sequence[tuple[bytes, bytes]],
    ) -> list[tuple[bytes, bytes]] | Refused:
        return list(headers)

    def request_body_filter(
        self,
        described: Described,
        headers: Sequence[tuple[bytes, bytes]],
        session: Any,
    ) -> BodyFilter | None:
        return None
