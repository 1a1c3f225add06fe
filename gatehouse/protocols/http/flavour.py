"""
What differs between the HTTP protocols the gateway speaks (plain C{http},
C{kubernetes}): how a request is read as commands, how the gateway's own
answers look, what the target is told about the caller, and what is
masked in answers.  The listener (L{gatehouse.protocols.http.server}) is
the same for all of them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import attrs
from zope.interface import Attribute, Interface

from gatehouse.identity import Identity
from gatehouse.policy.rules import Command
from gatehouse.protocols.http.config import HTTPTargetOptions

__all__ = [
    "BodyFilter",
    "Described",
    "IHTTPFlavour",
    "Refused",
    "RequestHead",
]


@attrs.frozen
class RequestHead:
    """
    A client's request as the listener read it.

    @ivar target: the request target with the C{/targets/NAME} prefix
        taken off (origin form: path and query), as sent.
    @ivar headers: (lower-case name, value) pairs, in order.
    """

    method: str
    target: bytes
    headers: tuple[tuple[bytes, bytes], ...]

    def values(self, name: bytes) -> list[bytes]:
        """Every value of header C{name} (lower case)."""
        return [v for n, v in self.headers if n == name]


@attrs.frozen
class Described:
    """
    A request read as the target will read it.

    @ivar commands: what the policy decides.
    @ivar text: one line for people (the index, approvers, replay).
    @ivar fields: what the recording's C{http-request} event says of it
        beyond the method and path (Kubernetes: verb, resource, ...).
    @ivar upgrade: the request asks to switch protocols (exec, attach,
        port-forward): its stream follows the answer.
    @ivar index_kind: the index row's kind (the verb).
    @ivar objects: what it touches, for the index.
    """

    commands: Sequence[Command]
    text: str
    fields: Mapping[str, object] = attrs.field(factory=dict)
    upgrade: bool = False
    index_kind: str = "request"
    objects: tuple[str, ...] = ()
    detail: Any = None


@attrs.frozen
class Refused:
    """
    The gateway answers the request itself: a status, a reason word and
    a message (the flavour renders them).
    """

    status: int
    reason: str
    message: str


class BodyFilter(Interface):
    """
    Rewrites a response body as it streams (masking): chunks in, chunks
    out.  Raises L{ValueError} when it cannot go on (fail closed: the
    response is cut).
    """

    masked = Attribute("values masked so far")

    def feed(data: bytes) -> bytes:
        """More of the body; what may go on to the client now."""

    def end() -> bytes:
        """The body is complete; the rest to send."""


class IHTTPFlavour(Interface):
    """One HTTP protocol's reading of requests and answers."""

    protocol = Attribute("the protocol's name (the recording's, the policy's)")

    def describe(head: RequestHead) -> Described | Refused:
        """Read a request, or refuse it (ambiguous, malformed)."""

    def answer(refused: Refused) -> tuple[list[tuple[bytes, bytes]], bytes]:
        """The headers and body of the gateway's own answer."""

    def upstream_headers(
        identity: Identity, options: HTTPTargetOptions
    ) -> list[tuple[bytes, bytes]]:
        """What the target is told about the caller (impersonation)."""

    def response_filter(
        described: Described,
        status: int,
        headers: Sequence[tuple[bytes, bytes]],
        session: Any,
    ) -> BodyFilter | Refused | None:
        """
        A filter for this response's body when something in it must be
        masked for this session, None when it goes as it is, or a
        refusal when it must be masked and cannot be.
        """

    def stream_observers(
        described: Described, headers: Sequence[tuple[bytes, bytes]], session: Any
    ) -> tuple[Any, Any] | None:
        """
        Decoders (L{gatehouse.protocols.http.streams.IStreamObserver}) of
        a switched stream's two directions (client to target, target to
        client), given the target's 101 headers and the session (whose
        masking may apply to the stream); None: record it raw.
        """

    def adjust_headers(
        described: Described,
        session: Any,
        headers: Sequence[tuple[bytes, bytes]],
    ) -> list[tuple[bytes, bytes]] | Refused:
        """
        The client's headers as the target gets them (before the gateway
        adds its own): for an upgrade, the stream protocols offered cut to
        those the gateway reads; for an answer that will be masked, only
        what the gateway can mask asked for.  A refusal when nothing
        acceptable is left.
        """

    def request_body_filter(
        described: Described,
        headers: Sequence[tuple[bytes, bytes]],
        session: Any,
    ) -> BodyFilter | None:
        """
        A filter for what the recording keeps of this request's body
        (Secret values written), or None.  The target gets the body as
        sent; a filter that fails has the rest of the body withheld from
        the recording (and the recording says so).
        """
