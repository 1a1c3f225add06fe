"""
Kubernetes API requests through the HTTP listener: read as the API server
reads them (L{request.classify}), answered with C{Status} objects, sent on
as the caller by impersonation, Secret values masked in answers.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from zope.interface import implementer

from gatehouse.identity import Identity
from gatehouse.protocols.http.config import HTTPTargetOptions
from gatehouse.protocols.http.flavour import (
    BodyFilter,
    Described,
    IHTTPFlavour,
    Refused,
    RequestHead,
)
from gatehouse.protocols.kubernetes import relay
from gatehouse.protocols.kubernetes.attributes import commands_for
from gatehouse.protocols.kubernetes.request import AmbiguousRequest, classify
from gatehouse.protocols.kubernetes.status import CONTENT_TYPE, reason_for, status

__all__ = ["KubernetesFlavour", "impersonation_headers"]


def impersonation_headers(identity: Identity, prefix: str) -> list[tuple[bytes, bytes]]:
    """
    C{Impersonate-User} (the identity's name) and one C{Impersonate-Group}
    per group (with C{prefix}): the cluster's RBAC and audit log see the
    person or agent, not the gateway.
    """
    headers = [(b"impersonate-user", identity.name.encode("utf-8"))]
    for group in identity.groups:
        headers.append((b"impersonate-group", (prefix + group).encode("utf-8")))
    return headers


@implementer(IHTTPFlavour)
class KubernetesFlavour:
    """The C{kubernetes} protocol's reading of HTTP requests."""

    protocol = "kubernetes"

    def describe(self, head: RequestHead) -> Described | Refused:
        try:
            request = classify(head.method, head.target)
        except AmbiguousRequest as e:
            return Refused(e.code, reason_for(e.code) or "BadRequest", str(e))
        fields: dict[str, object] = {
            "verb": request.verb,
            "api_verb": request.api_verb,
            "path": request.path,
        }
        for key in ("group", "version", "resource", "subresource", "namespace"):
            value = getattr(request, key)
            if value:
                fields[key] = value
        if request.name:
            fields["name"] = request.name
        if request.dry_run:
            fields["dry_run"] = True
        if request.upgrade and request.command:
            fields["command"] = list(request.command)
        if request.container is not None:
            fields["container"] = request.container
        objects: tuple[str, ...] = ()
        if request.resource_request:
            what = request.qualified_resource
            if request.name:
                what += f"/{request.name}"
            if request.namespace:
                what = f"{request.namespace}/{what}"
            objects = (what,)
        return Described(
            commands_for(request),
            request.describe(),
            fields=fields,
            upgrade=request.upgrade,
            index_kind=request.verb,
            objects=objects,
            detail=request,
        )

    def answer(self, refused: Refused) -> tuple[list[tuple[bytes, bytes]], bytes]:
        body = status(refused.status, refused.reason, refused.message)
        return [(b"content-type", CONTENT_TYPE.encode())], body

    def upstream_headers(
        self, identity: Identity, options: HTTPTargetOptions
    ) -> list[tuple[bytes, bytes]]:
        return impersonation_headers(identity, options.impersonate_group_prefix)

    def response_filter(
        self,
        described: Described,
        status: int,
        headers: Sequence[tuple[bytes, bytes]],
        session: Any,
    ) -> BodyFilter | Refused | None:
        return None

    def stream_observers(
        self, described: Described, headers: Sequence[tuple[bytes, bytes]]
    ) -> tuple[Any, Any] | None:
        """Exec, attach and port-forward are read (SPDY or WebSocket)."""
        return relay.stream_observers(described.detail, headers)

    def upgrade_headers(
        self, described: Described, headers: Sequence[tuple[bytes, bytes]]
    ) -> list[tuple[bytes, bytes]] | Refused:
        """Only the stream protocols gatehouse reads are offered."""
        offered = relay.offered_protocols(described.detail, headers)
        if isinstance(offered, str):
            return Refused(400, "BadRequest", offered)
        name, kept = offered
        out = [(n, v) for n, v in headers if n != name]
        out.append((name, ", ".join(kept).encode("latin-1")))
        return out
