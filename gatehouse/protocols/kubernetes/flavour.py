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
from gatehouse.protocols.kubernetes.masking import (
    SecretMasker,
    is_json_media,
    needs_secret_masking,
)
from gatehouse.protocols.kubernetes.request import (
    AmbiguousRequest,
    KubeRequest,
    classify,
)
from gatehouse.protocols.kubernetes.status import CONTENT_TYPE, reason_for, status

__all__ = ["KubernetesFlavour", "impersonation_headers"]


def _header(headers: Sequence[tuple[bytes, bytes]], name: bytes) -> str | None:
    for n, v in headers:
        if n == name:
            return v.decode("latin-1")
    return None


def _masks_secrets(session: Any, request: object) -> bool:
    """Whether this session masks Secret values in this request's bodies."""
    masker = getattr(session, "masker", None)
    return (
        masker is not None
        and masker.masks_secrets
        and isinstance(request, KubeRequest)
        and needs_secret_masking(request)
    )


def _value_masker(session: Any, request: object) -> Any:
    """
    The session's value detectors (cards, e-mail, patterns) when they
    apply to this request's answer (a resource request without a stream),
    else None.
    """
    masker = getattr(session, "masker", None)
    if (
        masker is None
        or not masker.scans_values
        or not isinstance(request, KubeRequest)
        or not request.resource_request
        or request.upgrade
    ):
        return None
    return masker


@implementer(BodyFilter)
class _TextLines:
    """A text body (pod logs) masked line by line with the value detectors."""

    def __init__(self, values: Any, limit: int = 1 << 20) -> None:
        self._values = values
        self._limit = limit
        self._buffer = b""
        self.masked = 0

    def _mask(self, lines: bytes) -> bytes:
        text, count = self._values.mask_text(lines.decode("utf-8", "replace"))
        self.masked += count
        return text.encode("utf-8") if count else lines

    def feed(self, data: bytes) -> bytes:
        self._buffer += data
        end = self._buffer.rfind(b"\n")
        if end < 0:
            if len(self._buffer) > self._limit:
                raise ValueError(f"a line over {self._limit} bytes")
            return b""
        lines, self._buffer = self._buffer[: end + 1], self._buffer[end + 1 :]
        return self._mask(lines)

    def end(self) -> bytes:
        rest, self._buffer = self._buffer, b""
        return self._mask(rest) if rest else b""


@implementer(BodyFilter)
class _Filter:
    """A L{SecretMasker} as the listener's body filter."""

    def __init__(self, masker: SecretMasker) -> None:
        self._masker = masker

    @property
    def masked(self) -> int:
        return self._masker.masked

    def feed(self, data: bytes) -> bytes:
        return self._masker.feed(data)

    def end(self) -> bytes:
        return self._masker.end()


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
        if request.upgrade and request.flag("tty"):
            fields["tty"] = True
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
        """
        Secret values masked for the identities the masking rules say
        (C{secrets: true}), in objects, lists, tables and watch events; a
        body that must be masked and cannot be (not JSON) is refused.
        """
        request = described.detail
        secrets = _masks_secrets(session, request)
        values = _value_masker(session, request)
        if not secrets and values is None:
            return None
        content_type = _header(headers, b"content-type")
        encoding = _header(headers, b"content-encoding")
        if encoding not in (None, "identity"):
            return Refused(
                500, "InternalError", "gatehouse cannot mask a compressed answer"
            )
        if status >= 400 and not is_json_media(content_type):
            return None  # an error without values (a plain-text Status)
        if not secrets and request.verb == "log":
            return _TextLines(values)
        if not is_json_media(content_type):
            return Refused(
                406,
                "NotAcceptable",
                "gatehouse masks values in answers for you and reads JSON only: "
                "ask for application/json",
            )
        return _Filter(SecretMasker(request, content_type, values=values))

    def adjust_headers(
        self,
        described: Described,
        session: Any,
        headers: Sequence[tuple[bytes, bytes]],
    ) -> list[tuple[bytes, bytes]] | Refused:
        """
        Upgrades offer only the stream protocols gatehouse reads; an answer
        to be masked is asked for as uncompressed JSON.
        """
        request = described.detail
        out = list(headers)
        if described.upgrade:
            offered = relay.offered_protocols(request, headers)
            if isinstance(offered, str):
                return Refused(400, "BadRequest", offered)
            name, kept = offered
            out = [(n, v) for n, v in out if n != name]
            out.append((name, ", ".join(kept).encode("latin-1")))
        if _masks_secrets(session, request) or (
            _value_masker(session, request) is not None and request.verb != "log"
        ):
            accept = [
                part.strip()
                for n, v in out
                if n == b"accept"
                for part in v.decode("latin-1").split(",")
                if is_json_media(part.split(";as=")[0].strip() or None)
                or part.strip().startswith("application/json")
            ]
            out = [(n, v) for n, v in out if n not in (b"accept", b"accept-encoding")]
            out.append((b"accept", ",".join(accept or ["application/json"]).encode()))
        return out

    def request_body_filter(
        self,
        described: Described,
        headers: Sequence[tuple[bytes, bytes]],
        session: Any,
    ) -> BodyFilter | None:
        """Secret values a client writes are masked in the recording."""
        request = described.detail
        if not _masks_secrets(session, request):
            return None
        return _Filter(SecretMasker(request, _header(headers, b"content-type")))

    def stream_observers(
        self,
        described: Described,
        headers: Sequence[tuple[bytes, bytes]],
        session: Any,
    ) -> tuple[Any, Any] | None:
        """
        Exec, attach and port-forward are read (SPDY or WebSocket); the
        text of an exec or attach is masked with the session's value
        detectors when its masking rules have any.
        """
        masker = getattr(session, "masker", None)
        values = masker if masker is not None and masker.scans_values else None
        return relay.stream_observers(described.detail, headers, values)
