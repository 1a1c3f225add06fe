"""
What policy rules can say about plain HTTP requests: the attributes the
C{http} adapter declares (L{gatehouse.policy.attributes}), and the policy
L{Command} of one request (L{commands_for}).

  - C{method}: the request method, uppercase (C{GET}, C{DELETE}, ...).
  - C{path}: globs over the request's path as the upstream reads it
    (decoded and checked by the adapter's classifier; no query), C{*}
    crossing C{/} (C{/admin/*} is everything under C{/admin/}).  The key
    means what it means for SSH (globs over the objects touched), so one
    unscoped rule may name both.
  - C{host}: globs over the host the client asked for (lowercase, without
    the port).
  - C{text}: a regular expression searched in C{"METHOD path"}.
"""

from __future__ import annotations

from gatehouse.policy.attributes import (
    ANY,
    GLOB,
    REGEX,
    PolicyAttribute,
    PolicyAttributes,
)
from gatehouse.policy.rules import Command

__all__ = ["METHODS", "POLICY_ATTRIBUTES", "PROTOCOL", "commands_for"]

PROTOCOL = "http"
#: The methods a rule may name (RFC 9110 and PATCH).
METHODS = frozenset(
    {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "CONNECT"}
)

POLICY_ATTRIBUTES = PolicyAttributes(
    (
        PolicyAttribute(
            "method", ANY, "kinds", METHODS, doc="the request method (GET, POST, ...)"
        ),
        PolicyAttribute(
            "path", GLOB, "objects", doc="the request path (globs, * crossing /)"
        ),
        PolicyAttribute("host", GLOB, "host", doc="the host asked for (no port)"),
        PolicyAttribute(
            "text",
            REGEX,
            "normalized",
            doc='a regular expression searched in "METHOD path"',
        ),
    )
)


def commands_for(method: str, path: str, host: str) -> tuple[Command, ...]:
    """
    The policy command of one HTTP request: kind = the method, objects =
    the path, C{host} as an extra.
    """
    return (
        Command(
            PROTOCOL,
            method,
            f"{method} {path}",
            objects=(path,),
            extra=(("host", (host.lower(),)),),
        ),
    )
