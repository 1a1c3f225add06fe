"""
Kubernetes C{Status} objects: the body of every error the API server
sends, and of every refusal gatehouse sends in its place (kubectl prints
C{message} as-is).

The bytes are what kube-apiserver writes: compact JSON in the field order
of Go's C{metav1.Status} (kind, apiVersion, metadata, status, message,
reason, details, code), C{<}, C{>} and C{&} escaped as Go's encoder does,
and a final newline.
"""

from __future__ import annotations

import json
from collections.abc import Mapping

__all__ = ["CONTENT_TYPE", "REASONS", "go_json_string", "reason_for", "status"]

#: The content type of a Status body.
CONTENT_TYPE = "application/json"

#: The reason kube-apiserver gives each status code (metav1.StatusReason).
#: 431 has none of its own there; 502 is what an unreachable backend
#: (an aggregated API, a proxy) gets: ServiceUnavailable.
REASONS: Mapping[int, str] = {
    400: "BadRequest",
    401: "Unauthorized",
    403: "Forbidden",
    404: "NotFound",
    405: "MethodNotAllowed",
    406: "NotAcceptable",
    409: "Conflict",
    410: "Expired",
    413: "RequestEntityTooLarge",
    415: "UnsupportedMediaType",
    422: "Invalid",
    429: "TooManyRequests",
    431: "BadRequest",
    500: "InternalError",
    502: "ServiceUnavailable",
    503: "ServiceUnavailable",
    504: "Timeout",
}

# Go's encoding/json escapes these even inside strings (HTML safety).
_GO_ESCAPES = str.maketrans(
    {
        "<": "\\u003c",
        ">": "\\u003e",
        "&": "\\u0026",
        "\u2028": "\\u2028",
        "\u2029": "\\u2029",
    }
)


def go_json_string(text: str) -> str:
    """C{text} as a JSON string, escaped as Go's encoding/json does."""
    return json.dumps(text, ensure_ascii=False).translate(_GO_ESCAPES)


def reason_for(code: int) -> str:
    """The reason kube-apiserver gives C{code} (C{""}: unknown)."""
    return REASONS.get(code, "")


def status(
    code: int,
    reason: str,
    message: str,
    *,
    details: Mapping[str, object] | None = None,
) -> bytes:
    """
    A failure Status, as bytes of JSON (content type L{CONTENT_TYPE}).

    @param code: the HTTP status code it goes with.
    @param reason: a C{metav1.StatusReason} (L{reason_for} gives the usual).
    @param message: the text kubectl shows.
    @param details: C{name}, C{group}, C{kind}, C{causes}, ... if any.
    """
    body: dict[str, object] = {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
    }
    if message:
        body["message"] = message
    if reason:
        body["reason"] = reason
    if details:
        body["details"] = dict(details)
    body["code"] = code
    text = json.dumps(body, ensure_ascii=False, separators=(",", ":"))
    return (text.translate(_GO_ESCAPES) + "\n").encode("utf-8")
