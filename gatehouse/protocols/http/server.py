"""
The HTTP listener: HTTP/1.1 clients in (kubectl, curl, client libraries),
one L{Session} per connection, one decision per request, the target's
answer streamed back.

h11 reads and writes the client's HTTP (sans-IO; it refuses the framing
ambiguities request smuggling lives on: two lengths, a bad chunk, an
oversized head); this protocol is the driver between it, the session's
gate, and the target's L{Upstream}.  Requests on one connection are
answered in order, one at a time (no pipelining: the next request is read
once the answer to the previous one is complete).

Every request is a stream of its own in the recording (channel
C{1 + (n - 1) mod 32766} for the n-th request of the connection): the
C{http-request} event, the request body (direction 1), the decision,
C{http-response}, the response body as it went to the client (direction
2, masked), C{http-end}; see docs/recording-format.md, "HTTP sessions".
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping, Sequence
from http import HTTPStatus
from typing import Any

import h11
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IPushProducer
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.client import ResponseDone, ResponseFailed
from twisted.web.http import PotentialDataLoss
from twisted.web.http_headers import Headers
from twisted.web.iweb import IResponse
from zope.interface import implementer

from gatehouse.config import TargetConfig
from gatehouse.gate import Gate, IGateDriver, Permit, Proposal, Refusal, RefusalKind
from gatehouse.identity import AuthenticationError
from gatehouse.limits import Admission, ConnectionLimits
from gatehouse.net import PauseReasons, tune
from gatehouse.policy.rules import Decision
from gatehouse.protocols.http.config import (
    TARGET_PREFIX,
    HTTPListenerOptions,
    HTTPTargetOptions,
)
from gatehouse.protocols.http.flavour import (
    BodyFilter,
    Described,
    IHTTPFlavour,
    Refused,
    RequestHead,
)
from gatehouse.protocols.http.streams import StreamRelay
from gatehouse.protocols.http.upgrade import UpstreamStream, open_stream
from gatehouse.protocols.http.upstream import StreamingBody, Upstream
from gatehouse.recording.format import Direction
from gatehouse.recording.interfaces import RecordingFailed, RecordingUnavailable
from gatehouse.session import Session, TargetAccessDenied

__all__ = ["HTTPGatewayFactory", "HTTPGatewayProtocol", "request_channel"]

#: channels of requests wrap below the stderr bit other protocols use
_CHANNELS = 32766

#: headers that belong to one connection, not to the request (RFC 9110 7.6.1)
_HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
    }
)
#: the client's credentials for the gateway, never sent on nor recorded
_CREDENTIALS = frozenset({b"authorization", b"proxy-authorization"})
#: recorded as present, without their value
_REDACTED = frozenset({b"authorization", b"proxy-authorization", b"cookie"})


def _phrase(status: int) -> bytes:
    """The reason phrase of a status the gateway answers with."""
    try:
        return HTTPStatus(status).phrase.encode("ascii")
    except ValueError:
        return b""


def request_channel(number: int) -> int:
    """The recording channel of a connection's C{number}-th request (1-based)."""
    return 1 + (number - 1) % _CHANNELS


def _connection_tokens(headers: Sequence[tuple[bytes, bytes]]) -> set[bytes]:
    tokens: set[bytes] = set()
    for name, value in headers:
        if name == b"connection":
            tokens.update(t.strip().lower() for t in value.split(b","))
    return tokens


def recorded_headers(headers: Sequence[tuple[bytes, bytes]]) -> list[list[str]]:
    """Headers as the recording shows them: credentials redacted."""
    shown = []
    for name, value in headers:
        text = value.decode("latin-1")
        if name in _REDACTED:
            scheme = text.split(" ", 1)[0] if name != b"cookie" else ""
            text = f"{scheme} [redacted]".strip()
        shown.append([name.decode("latin-1"), text])
    return shown


def bearer_token(head: RequestHead) -> bytes | None:
    """The bearer token of the C{Authorization} header, if exactly one."""
    values = head.values(b"authorization")
    if len(values) != 1:
        return None
    scheme, _, token = values[0].partition(b" ")
    if scheme.lower() != b"bearer" or not token.strip():
        return None
    return token.strip()


@implementer(IGateDriver)
class Exchange:
    """
    One request and its answer: the gate's unit and driver (a gate per
    request, on the request's channel).
    """

    def __init__(
        self,
        protocol: HTTPGatewayProtocol,
        number: int,
        head: RequestHead,
        described: Described,
        length: int | None,
    ) -> None:
        self.protocol = protocol
        self.number = number
        self.channel = request_channel(number)
        self.head = head
        self.described = described
        self.length = length
        self.body: StreamingBody | None = None
        #: whether the client's body is complete (EndOfMessage read)
        self.request_complete = False
        self.body_in = 0
        self.body_out = 0
        self.recorded_in = 0
        self.recorded_out = 0
        self.capped = False
        self.status: int | None = None
        self.started = protocol.clock.seconds()
        self.finished = False
        self.gate: Gate | None = None
        self.response_transport: Any = None
        self.filter: BodyFilter | None = None
        #: what the recording keeps of the request body goes through it
        self.record_filter: BodyFilter | None = None
        #: the rest of the request body was withheld from the recording
        self.withheld = False

    # -- IGateDriver -------------------------------------------------------

    def inspect(self, unit: object) -> object:
        d = self.described
        return Proposal(d.commands, d.text, detail=d.detail)

    def admit(self, unit: object, permit: Permit) -> object:
        return None

    def forward(self, unit: object, permit: Permit | None) -> None:
        if permit is not None:
            self.protocol.forward(self)

    def flush(self) -> None:
        pass

    def refuse(self, unit: object, refusal: Refusal) -> None:
        self.protocol.refuse(self, refusal)

    def held(self, unit: object, request: Any, decision: Decision) -> None:
        self.protocol.held(self, request)

    def pause_input(self) -> None:
        pass

    def resume_input(self) -> None:
        pass

    def failed(self, failure: Failure) -> None:
        self.protocol.internal_error(self, failure)


class _ResponseBody(Protocol):
    """Delivers the target's response body to the client, pausable."""

    def __init__(self, protocol: HTTPGatewayProtocol, exchange: Exchange) -> None:
        self._protocol = protocol
        self._exchange = exchange

    def connectionMade(self) -> None:
        self._exchange.response_transport = self.transport
        self._protocol.response_started(self._exchange)

    def dataReceived(self, data: bytes) -> None:
        self._protocol.response_data(self._exchange, data)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self._exchange.response_transport = None
        if reason.check(ResponseDone, PotentialDataLoss):
            self._protocol.response_end(self._exchange)
        else:
            self._protocol.response_broken(self._exchange, reason)


@implementer(IPushProducer)
class _BothWays:
    """Pauses the client's reading and the target's answer together."""

    def __init__(self, protocol: HTTPGatewayProtocol) -> None:
        self._protocol = protocol

    def pauseProducing(self) -> None:
        self._protocol.pause_all("recorder", True)

    def resumeProducing(self) -> None:
        self._protocol.pause_all("recorder", False)

    def stopProducing(self) -> None:
        pass


@implementer(IPushProducer)
class HTTPGatewayProtocol(Protocol):
    """
    One client connection of an HTTP or Kubernetes listener.  It is the
    producer the client's transport pauses when the client reads slowly:
    the target's answer then stops being read.
    """

    _log = Logger()
    transport: Any

    def __init__(self, factory: HTTPGatewayFactory) -> None:
        self.factory = factory
        self.clock = factory.reactor
        self.session: Session | None = None
        self.peer = ""
        self.target: TargetConfig | None = None
        self._h11 = h11.Connection(
            h11.SERVER, max_incomplete_event_size=factory.options.max_header_bytes
        )
        self._token_digest: bytes | None = None
        self._identity_pending: Deferred[Any] | None = None
        self._admission: Admission | None = None
        self._requests = 0
        self._exchange: Exchange | None = None
        self._pauses: PauseReasons | None = None
        self._output_paused = False
        self._ended = False
        self._timer: Any = None
        self._close_reason: str | None = None
        #: reading h11's events waits for an authentication
        self._waiting = False
        #: whether this protocol is the transport's producer
        self._registered = False
        #: the switched stream, once the target answered 101
        self._relay: StreamRelay | None = None
        self._stream: UpstreamStream | None = None

    # -- accept -------------------------------------------------------------

    def connectionMade(self) -> None:
        f = self.factory
        tune(self.transport)
        peer = self.transport.getPeer()
        self.peer = f"{getattr(peer, 'host', peer)}:{getattr(peer, 'port', '')}"
        self._pauses = PauseReasons(self.transport, "client")
        admitted = f.limits.admit(self.peer)
        if isinstance(admitted, str) or f.draining:
            why = admitted if isinstance(admitted, str) else "the gateway is draining"
            self._answer_and_close(Refused(503, "ServiceUnavailable", why))
            return
        self._admission = admitted
        admitted.on_evict = lambda: self.abort("evicted: too many connections")
        try:
            self.session = f.session_factory(
                f.protocol_name, f.listener_name, self.peer
            )
        except RecordingUnavailable as e:
            self._answer_and_close(Refused(503, "ServiceUnavailable", str(e)))
            return
        self.session.on_failure(self._recording_failed)
        self.session.on_terminate(self._terminated)
        self.session.registerProducer(_BothWays(self))
        self.transport.registerProducer(self, True)
        self._registered = True
        f.connections.add(self)
        timeout = f.options.authentication_timeout
        self._timer = self.clock.callLater(timeout, self._timed_out, "authentication")

    def _timed_out(self, what: str) -> None:
        self._timer = None
        if self._exchange is None:
            self._close_reason = f"{what} timeout"
            self._lose()

    def _restart_idle_timer(self) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = self.clock.callLater(
            self.factory.options.idle_timeout, self._timed_out, "idle"
        )

    # -- reading the client ---------------------------------------------

    def dataReceived(self, data: bytes) -> None:
        if self._relay is not None:
            self._relay.from_client(data)
            return
        if self._ended:
            return
        try:
            self._h11.receive_data(data)
        except h11.RemoteProtocolError as e:  # pragma: no cover - h11 defers
            self._protocol_error(e)
            return
        self._read_events()

    def _read_events(self) -> None:
        while not self._ended and not self._waiting:
            try:
                event = self._h11.next_event()
            except h11.RemoteProtocolError as e:
                self._protocol_error(e)
                return
            if event is h11.NEED_DATA or event is h11.PAUSED:
                return
            if isinstance(event, h11.Request):
                self._request(event)
            elif isinstance(event, h11.Data):
                self._request_body(bytes(event.data))
            elif isinstance(event, h11.EndOfMessage):
                self._request_end()
            elif isinstance(event, h11.ConnectionClosed):
                return

    def _protocol_error(self, error: h11.RemoteProtocolError) -> None:
        status = error.error_status_hint
        message = str(error) or "malformed HTTP request"
        if status == 431:
            reason = "RequestHeaderFieldsTooLarge"
            message = (
                "the request's headers are larger than the gateway reads "
                f"({self.factory.options.max_header_bytes} bytes)"
            )
        else:
            reason = "BadRequest"
            message = f"malformed HTTP request: {message}"
        if self.session is not None:
            self.session.event("http-protocol-error", status=status, reason=message)
        exchange = self._exchange
        if exchange is not None and exchange.status is not None:
            self.abort(message)
            return
        self._answer_and_close(Refused(status, reason, message))

    def _request(self, event: h11.Request) -> None:
        self._requests += 1
        number = self._requests
        if self._timer is not None and self._timer.active() and self.authenticated:
            self._timer.cancel()
            self._timer = None
        headers = tuple((bytes(n), bytes(v)) for n, v in event.headers)
        raw = bytes(event.target)
        size = len(raw) + sum(len(n) + len(v) + 4 for n, v in headers)
        if size > self.factory.options.max_header_bytes:
            # h11 bounds a head still arriving; one that came whole is
            # measured here.
            self._protocol_error(
                h11.RemoteProtocolError("head too large", error_status_hint=431)
            )
            return
        name, target = self._target_of(raw)
        method = event.method.decode("ascii", "replace")
        head = RequestHead(method, target, headers)
        if name is None:
            self._reply(
                number,
                head,
                Refused(
                    404,
                    "NotFound",
                    "no target: use https://GATEWAY/targets/NAME as the server",
                ),
                close=True,
            )
            return
        if self.target is not None and name != self.target.name:
            self._reply(
                number,
                head,
                Refused(
                    400,
                    "BadRequest",
                    f"this connection is for target {self.target.name!r}, "
                    "open another for another target",
                ),
                close=True,
            )
            return
        token = bearer_token(head)
        if token is None:
            self._reply(
                number,
                head,
                Refused(401, "Unauthorized", "a bearer token is required"),
                close=True,
            )
            return
        digest = hashlib.sha256(token).digest()
        if self._token_digest is None:
            self._pause("authentication", True)
            self._waiting = True
            self._authenticate(number, head, name, token, digest, event)
            return
        if not hmac.compare_digest(digest, self._token_digest):
            # A connection is one session: one identity, one token.  A
            # client whose credential plugin renewed its token sends the
            # new one on a connection it reuses: close it unanswered, and
            # Go's HTTP client (kubectl, client-go) sends the request again
            # on a new connection, a new session.
            assert self.session is not None
            self.session.event("http-token-changed", channel=request_channel(number))
            self._close_reason = "the client sent another token: new session"
            self._ended = True
            self._lose()
            return
        self._start(number, head, event)

    @property
    def authenticated(self) -> bool:
        """Whether the connection's identity is known."""
        return self._token_digest is not None

    def _target_of(self, raw: bytes) -> tuple[str | None, bytes]:
        """(target name, request target without the prefix)."""
        prefix = TARGET_PREFIX.encode()
        if raw.startswith(prefix):
            rest = raw[len(prefix) :]
            end = min(
                (i for i in (rest.find(b"/"), rest.find(b"?")) if i >= 0),
                default=len(rest),
            )
            name = rest[:end].decode("utf-8", "replace")
            target = rest[end:]
            if not target.startswith(b"/"):
                target = b"/" + target
            return name, target
        return self.factory.options.target, raw

    def _authenticate(
        self,
        number: int,
        head: RequestHead,
        name: str,
        token: bytes,
        digest: bytes,
        event: h11.Request,
    ) -> None:
        session = self.session
        assert session is not None
        d = session.authenticate(token, name)

        def ok(identity: object) -> None:
            self._pause("authentication", False)
            self._waiting = False
            if self._ended:
                return
            self._token_digest = digest
            self.target = self.factory.targets.get(name)
            if self._admission is not None:
                self._admission.authenticated()
            if self._timer is not None and self._timer.active():
                self._timer.cancel()
            self._timer = None
            self._start(number, head, event)
            self._read_events()

        def refused(failure: Failure) -> None:
            self._pause("authentication", False)
            self._waiting = False
            if self._ended:
                return
            if failure.check(TargetAccessDenied):
                answer = Refused(
                    403, "Forbidden", f"you may not use target {name!r} (gatehouse)"
                )
            elif failure.check(AuthenticationError):
                message = AuthenticationError.CLIENT_MESSAGE
                answer = Refused(401, "Unauthorized", message)
            elif failure.check(RecordingUnavailable):
                answer = Refused(503, "ServiceUnavailable", failure.getErrorMessage())
            else:
                self._log.failure("Authenticating {peer}", failure, peer=self.peer)
                message = "the gateway failed to log you in"
                answer = Refused(500, "InternalError", message)
            self._reply(number, head, answer, close=True)

        d.addCallbacks(ok, refused)

    def _start(self, number: int, head: RequestHead, event: h11.Request) -> None:
        """An authenticated request: describe it, record it, decide it."""
        session = self.session
        assert session is not None
        flavour = self.factory.flavour
        if any(n.startswith(b"impersonate-") for n, _ in head.headers):
            session.event(
                "http-impersonation-refused",
                channel=request_channel(number),
                method=head.method,
                target=head.target.decode("latin-1"),
                headers=recorded_headers(
                    [(n, v) for n, v in head.headers if n.startswith(b"impersonate-")]
                ),
            )
            self._reply(
                number,
                head,
                Refused(
                    403,
                    "Forbidden",
                    "impersonation is not allowed through gatehouse: it acts as "
                    "you, and the cluster sees you",
                ),
                close=True,
            )
            return
        length = self._content_length(head)
        if length is not None and length > self.factory.options.max_body_bytes:
            self._reply(
                number,
                head,
                Refused(
                    413,
                    "RequestEntityTooLarge",
                    f"the request body ({length} bytes) is larger than the "
                    f"gateway takes ({self.factory.options.max_body_bytes})",
                ),
                close=True,
            )
            return
        described = flavour.describe(head)
        if isinstance(described, Refused):
            self._reply(number, head, described, close=True)
            return
        exchange = Exchange(self, number, head, described, length)
        self._exchange = exchange
        seq = session.event(
            "http-request",
            channel=exchange.channel,
            number=number,
            method=head.method,
            target=head.target.decode("latin-1"),
            headers=recorded_headers(head.headers),
            description=described.text,
            **described.fields,
        )
        session.anchor(exchange.channel, seq)
        has_body = (length is not None and length > 0) or bool(
            head.values(b"transfer-encoding")
        )
        if has_body:
            exchange.body = StreamingBody(
                length, lambda pause: self._pause("body", pause)
            )
            exchange.record_filter = flavour.request_body_filter(
                described, head.headers, session
            )
        else:
            exchange.request_complete = True
        gate = exchange.gate = Gate(
            session, exchange, noun="request", channel=exchange.channel
        )
        gate.receive([exchange])

    def _content_length(self, head: RequestHead) -> int | None:
        values = head.values(b"content-length")
        return int(values[0]) if values else None

    def _request_body(self, data: bytes) -> None:
        exchange = self._exchange
        if exchange is None or exchange.finished:
            return
        exchange.body_in += len(data)
        if exchange.body_in > self.factory.options.max_body_bytes:
            self._record_and_cut(
                exchange,
                f"the request body is larger than the gateway takes "
                f"({self.factory.options.max_body_bytes} bytes)",
                Refused(413, "RequestEntityTooLarge", "request body too large"),
            )
            return
        self._record_request(exchange, data)
        if exchange.body is not None:
            exchange.body.write(data)

    def _request_end(self) -> None:
        exchange = self._exchange
        if exchange is None:
            return
        exchange.request_complete = True
        if exchange.record_filter is not None:
            self._record_request(exchange, b"", end=True)
        if exchange.body is not None:
            exchange.body.finish()
        if exchange.finished:
            self._next_cycle()

    def _record_request(
        self, exchange: Exchange, data: bytes, *, end: bool = False
    ) -> None:
        """Record request body bytes, through the flavour's filter if any."""
        if exchange.withheld:
            assert self.session is not None
            self.session.byte_counts[Direction.CLIENT_TO_GATEWAY] += len(data)
            return
        filter_ = exchange.record_filter
        if filter_ is None:
            self._record(exchange, Direction.CLIENT_TO_GATEWAY, data)
            return
        try:
            kept = filter_.end() if end else filter_.feed(data)
        except ValueError as e:
            # What cannot be masked is not recorded; the recording says so.
            exchange.record_filter = None
            exchange.withheld = True
            assert self.session is not None
            self.session.event(
                "http-body-withheld",
                channel=exchange.channel,
                direction=int(Direction.CLIENT_TO_GATEWAY),
                reason=str(e),
            )
            return
        if end and filter_.masked:
            assert self.session is not None
            self.session.masked(filter_.masked)
        self._record(exchange, Direction.CLIENT_TO_GATEWAY, kept)

    def _record(self, exchange: Exchange, direction: Direction, data: bytes) -> None:
        """Record body bytes up to the cap (the rest counted)."""
        session = self.session
        assert session is not None
        cap = self.factory.options.record_body_bytes
        if direction == Direction.CLIENT_TO_GATEWAY:
            room = cap - exchange.recorded_in
        else:
            room = cap - exchange.recorded_out
        part = data if room >= len(data) else data[: max(room, 0)]
        if len(part) < len(data) and not exchange.capped:
            exchange.capped = True
            session.event(
                "http-body-capped",
                channel=exchange.channel,
                direction=int(direction),
                cap=cap,
            )
        if part:
            session.data(direction, part, exchange.channel)
            if direction == Direction.CLIENT_TO_GATEWAY:
                exchange.recorded_in += len(part)
            else:
                exchange.recorded_out += len(part)
        elif data:
            # What was not recorded still counts as crossing.
            session.byte_counts[direction] += len(data)

    # -- the gate's outcomes ----------------------------------------------

    def forward(self, exchange: Exchange) -> None:
        """The request is allowed: send it to the target."""
        if self._ended:
            return
        upstream = self.factory.upstream(self.target)
        adjusted = self.factory.flavour.adjust_headers(
            exchange.described, self.session, exchange.head.headers
        )
        if isinstance(adjusted, Refused):
            self._reply_exchange(exchange, adjusted)
            return
        client_headers: Sequence[tuple[bytes, bytes]] = adjusted
        headers = self._upstream_headers(exchange, upstream, client_headers)
        if headers is None:
            return
        if self._h11.they_are_waiting_for_100_continue:
            self._send(h11.InformationalResponse(status_code=100, headers=[]))
        method = exchange.head.method.encode("ascii")
        if exchange.described.upgrade:
            d = open_stream(self.clock, upstream, method, exchange.head.target, headers)
            d.addCallbacks(
                lambda stream: self._stream_connected(exchange, stream),
                lambda failure: self._upstream_failed(exchange, failure),
            )
            return
        agent_headers = Headers()
        for name, value in headers:
            agent_headers.addRawHeader(name, value)
        d = upstream.agent.request(
            method, upstream.url(exchange.head.target), agent_headers, exchange.body
        )
        d.addCallbacks(
            lambda response: self._response(exchange, response),
            lambda failure: self._upstream_failed(exchange, failure),
        )

    def _upstream_headers(
        self,
        exchange: Exchange,
        upstream: Upstream,
        client_headers: Sequence[tuple[bytes, bytes]],
    ) -> list[tuple[bytes, bytes]] | None:
        """
        The request's headers as the target gets them: the connection's
        own headers, the client's credentials and Host replaced by the
        gateway's; what says who the caller is added.  None: the
        gateway's credentials cannot be read (the client is answered).
        """
        session = self.session
        assert session is not None and session.identity is not None
        upgrade = exchange.described.upgrade
        tokens = _connection_tokens(client_headers)
        headers: list[tuple[bytes, bytes]] = [(b"host", upstream.host_header)]
        for name, value in client_headers:
            if upgrade and name in (b"connection", b"upgrade"):
                headers.append((name, value))
                continue
            if (
                name in _HOP_BY_HOP
                or name in tokens
                or name in _CREDENTIALS
                or name == b"host"
                # The gateway answers 100-continue itself.
                or name == b"expect"
                or (name == b"content-length" and not upgrade)
            ):
                continue
            headers.append((name, value))
        try:
            credentials = upstream.credentials()
        except (OSError, ValueError) as e:
            session.event("upstream-failed", kind="config", reason=str(e))
            self._reply_exchange(
                exchange,
                Refused(
                    503,
                    "ServiceUnavailable",
                    "the gateway cannot read its credentials for this target",
                ),
            )
            return None
        replaced = {name.lower() for name, _ in credentials}
        headers = [(n, v) for n, v in headers if n not in replaced]
        headers += credentials
        headers += self.factory.flavour.upstream_headers(
            session.identity, upstream.options
        )
        headers.append((b"x-forwarded-for", self.peer.rsplit(":", 1)[0].encode()))
        return headers

    # -- switched streams (exec, attach, port-forward) -------------------

    def allocate_channel(self) -> int:
        """A recording channel of its own (a port-forward connection)."""
        self._requests += 1
        return request_channel(self._requests)

    def _stream_connected(self, exchange: Exchange, stream: UpstreamStream) -> None:
        if self._ended:
            stream.transport.abortConnection()
            return
        exchange.response_transport = stream.transport
        self._stream = stream
        stream.answered.addCallbacks(
            lambda answer: self._stream_answered(exchange, stream, answer),
            lambda failure: self._upstream_failed(exchange, failure),
        )

    def _stream_answered(
        self,
        exchange: Exchange,
        stream: UpstreamStream,
        answer: h11.Response | h11.InformationalResponse,
    ) -> None:
        session = self.session
        if self._ended or session is None:
            stream.transport.abortConnection()
            return
        status = answer.status_code
        headers = [(bytes(n).lower(), bytes(v)) for n, v in answer.headers]
        exchange.status = status
        if status != 101:
            # Not switched (RBAC refused, no such pod): an ordinary answer.
            tokens = _connection_tokens(headers)
            passed = [
                (n, v) for n, v in headers if n not in _HOP_BY_HOP and n not in tokens
            ]
            session.event(
                "http-response",
                channel=exchange.channel,
                status=status,
                headers=recorded_headers(passed),
            )
            self._send(
                h11.Response(status_code=status, headers=passed, reason=answer.reason)
            )
            stream.on_body = lambda data: self._deliver(exchange, data)
            stream.on_end = lambda: self._stream_answer_end(exchange)
            stream.on_lost = lambda reason: self._stream_answer_lost(exchange)
            return
        session.event(
            "http-response",
            channel=exchange.channel,
            status=status,
            headers=recorded_headers(headers),
        )
        self._send(h11.InformationalResponse(status_code=101, headers=headers))
        relay = self._relay = StreamRelay(self, exchange, stream, headers)
        if not relay.start():
            return
        stream.on_data = relay.from_target
        stream.on_lost = relay.target_lost
        assert self._pauses is not None
        stream.transport.registerProducer(self._pauses.reason("target"), True)
        early, _ = self._h11.trailing_data
        if early:
            relay.from_client(bytes(early))
        if self._output_paused:
            stream.transport.pauseProducing()

    def _stream_answer_end(self, exchange: Exchange) -> None:
        if self._ended:
            return
        exchange.response_transport = None
        self._send(h11.EndOfMessage())
        self._finish(exchange)

    def _stream_answer_lost(self, exchange: Exchange) -> None:
        exchange.response_transport = None
        if not exchange.finished and not self._ended:
            self._cut(exchange, "the target's answer broke off")

    def stream_ended(self, exchange: Exchange, reason: str) -> None:
        """A switched stream is over (either side closed it)."""
        self._relay = None
        exchange.response_transport = None
        if reason == "closed":
            self._end_event(exchange, closed_by="target")
        else:
            self._end_event(exchange, reason)
        if self._exchange is exchange:
            self._exchange = None
        if exchange.gate is not None:
            exchange.gate.close()
        self._close_reason = self._close_reason or f"stream {reason}"
        self._ended = True
        self._lose()

    def refuse(self, exchange: Exchange, refusal: Refusal) -> None:
        """The gate refused the request: answer it ourselves."""
        if refusal.kind in (RefusalKind.POLICY, RefusalKind.NOT_APPROVED):
            status, reason = 403, "Forbidden"
        elif refusal.kind == RefusalKind.UNCHECKED:
            status, reason = 503, "ServiceUnavailable"
        else:
            status, reason = 403, "Forbidden"
        self._reply_exchange(exchange, Refused(status, reason, refusal.message))

    def held(self, exchange: Exchange, request: Any) -> None:
        """The request waits for approvers: the client simply waits."""
        self._log.info(
            "Session {id}: request {n} held for approval ({request})",
            id=str(self.session.id) if self.session else "",
            n=exchange.number,
            request=getattr(request, "id", request),
        )

    def internal_error(self, exchange: Exchange, failure: Failure) -> None:
        """The gate failed: answer 500 (nothing went to the target)."""
        self._log.failure("Deciding a request", failure)
        self._reply_exchange(
            exchange, Refused(500, "InternalError", "the gateway failed to decide")
        )

    # -- the target's answer ----------------------------------------------

    def _response(self, exchange: Exchange, response: IResponse) -> None:
        session = self.session
        if self._ended or session is None:
            response.deliverBody(_Discard())
            return
        status = response.code
        headers: list[tuple[bytes, bytes]] = []
        for name, values in response.headers.getAllRawHeaders():
            for value in values:
                headers.append((name.lower(), value))
        tokens = _connection_tokens(headers)
        passed = [
            (n, v) for n, v in headers if n not in _HOP_BY_HOP and n not in tokens
        ]
        filter_ = self.factory.flavour.response_filter(
            exchange.described, status, passed, session
        )
        if isinstance(filter_, Refused):
            response.deliverBody(_Discard())
            self._reply_exchange(exchange, filter_)
            return
        if filter_ is not None:
            passed = [(n, v) for n, v in passed if n != b"content-length"]
        elif isinstance(response.length, int):
            # Twisted keeps the length apart from the headers.
            passed.append((b"content-length", str(response.length).encode()))
        exchange.filter = filter_
        exchange.status = status
        session.event(
            "http-response",
            channel=exchange.channel,
            status=status,
            headers=recorded_headers(passed),
        )
        try:
            self._send(
                h11.Response(
                    status_code=status,
                    headers=passed,
                    reason=response.phrase or b"",
                )
            )
        except h11.LocalProtocolError as e:
            self.abort(f"the target's answer is not valid HTTP: {e}")
            return
        response.deliverBody(_ResponseBody(self, exchange))

    def response_started(self, exchange: Exchange) -> None:
        """The body protocol is connected: honour a pause already asked."""
        if self._output_paused and exchange.response_transport is not None:
            exchange.response_transport.pauseProducing()

    def response_data(self, exchange: Exchange, data: bytes) -> None:
        """More of the target's body: mask, record, send."""
        if self._ended:
            return
        if exchange.filter is not None:
            try:
                data = exchange.filter.feed(data)
            except ValueError as e:
                self._cut(exchange, f"the answer could not be masked: {e}")
                return
        self._deliver(exchange, data)

    def _deliver(self, exchange: Exchange, data: bytes) -> None:
        if not data:
            return
        exchange.body_out += len(data)
        try:
            self._record(exchange, Direction.GATEWAY_TO_CLIENT, data)
        except RecordingFailed:
            self.abort("recording failed")
            return
        self._send(h11.Data(data=data))

    def response_end(self, exchange: Exchange) -> None:
        """The target's body is complete."""
        if self._ended:
            return
        if exchange.filter is not None:
            try:
                rest = exchange.filter.end()
            except ValueError as e:
                self._cut(exchange, f"the answer could not be masked: {e}")
                return
            self._deliver(exchange, rest)
            if self.session is not None and exchange.filter.masked:
                self.session.masked(exchange.filter.masked)
        self._send(h11.EndOfMessage())
        self._finish(exchange)

    def response_broken(self, exchange: Exchange, reason: Failure) -> None:
        """The target's answer broke off midway: the client's does too."""
        why = reason.value
        if isinstance(why, ResponseFailed):
            why = why.reasons[0].value if why.reasons else why
        self._cut(exchange, f"the target's answer broke off: {why}")

    def _cut(self, exchange: Exchange, reason: str) -> None:
        if self.session is not None:
            self.session.event(
                "http-response-cut", channel=exchange.channel, reason=reason
            )
        self._end_event(exchange, reason)
        self.abort(reason)

    def _upstream_failed(self, exchange: Exchange, failure: Failure) -> None:
        session = self.session
        why = failure.value
        reasons = getattr(why, "reasons", None)
        if reasons:
            # ResponseFailed, RequestGenerationFailed, ...: the first cause
            why = reasons[0].value
        reason = f"{type(why).__name__}: {why}"
        if session is not None:
            session.event("upstream-failed", channel=exchange.channel, reason=reason)
            session.upstream_failed(reason)
        target = self.target.name if self.target is not None else "?"
        self._reply_exchange(
            exchange,
            Refused(
                503,
                "ServiceUnavailable",
                f"gatehouse could not reach target {target!r}: {why}",
            ),
        )

    # -- answering ----------------------------------------------------------

    def _reply(
        self, number: int, head: RequestHead, answer: Refused, *, close: bool
    ) -> None:
        """Answer a request that never became an exchange (refused before)."""
        session = self.session
        channel = request_channel(number)
        if session is not None and session.recorded:
            session.event(
                "http-refused",
                channel=channel,
                number=number,
                method=head.method,
                target=head.target.decode("latin-1"),
                status=answer.status,
                message=answer.message,
            )
        self._answer_and_close(answer, head_only=head.method == "HEAD")

    def _reply_exchange(self, exchange: Exchange, answer: Refused) -> None:
        """The gateway's own answer to an exchange."""
        session = self.session
        if self._ended:
            return
        headers, body = self.factory.flavour.answer(answer)
        exchange.status = answer.status
        close = not exchange.request_complete
        if close:
            headers = [*headers, (b"connection", b"close")]
        if session is not None:
            session.event(
                "http-response",
                channel=exchange.channel,
                status=answer.status,
                headers=recorded_headers(headers),
                by="gateway",
            )
        self._send(
            h11.Response(
                status_code=answer.status,
                headers=[*headers, (b"content-length", str(len(body)).encode())],
                reason=_phrase(answer.status),
            )
        )
        if exchange.head.method != "HEAD":  # a HEAD answer has no body
            self._deliver(exchange, body)
        self._send(h11.EndOfMessage())
        if exchange.body is not None:
            exchange.body.stopProducing()
        self._finish(exchange)
        if close:
            self._close_reason = answer.message
            self._lose()

    def _answer_and_close(self, answer: Refused, *, head_only: bool = False) -> None:
        """
        Answer outside any exchange, then close the connection (without
        the body when the request was a HEAD).
        """
        if self._ended:
            return
        headers, body = self.factory.flavour.answer(answer)
        headers = [
            *headers,
            (b"content-length", str(len(body)).encode()),
            (b"connection", b"close"),
        ]
        try:
            if self._h11.our_state in (h11.IDLE, h11.SEND_RESPONSE):
                self._send(
                    h11.Response(
                        status_code=answer.status,
                        headers=headers,
                        reason=_phrase(answer.status),
                    )
                )
                if not head_only:
                    self._send(h11.Data(data=body))
                self._send(h11.EndOfMessage())
            elif self._h11.our_state is h11.SEND_BODY:
                self._h11 = h11.Connection(h11.SERVER)
        except h11.LocalProtocolError:
            # h11 refuses to answer some broken requests (no Host on
            # HTTP/1.1 and the like): write the answer by hand.
            self.transport.write(
                b"HTTP/1.1 %d %s\r\n" % (answer.status, answer.reason.encode())
                + b"".join(n + b": " + v + b"\r\n" for n, v in headers)
                + b"\r\n"
                + (b"" if head_only else body)
            )
        self._close_reason = self._close_reason or answer.message
        self._ended = True
        self._lose()

    def _send(self, event: Any) -> None:
        data = self._h11.send(event)
        if data:
            self.transport.write(data)

    def _end_event(
        self,
        exchange: Exchange,
        error: str | None = None,
        *,
        closed_by: str | None = None,
    ) -> None:
        if exchange.finished:
            return
        exchange.finished = True
        session = self.session
        if session is None:
            return
        fields: dict[str, object] = {
            "status": exchange.status,
            "bytes_in": exchange.body_in,
            "bytes_out": exchange.body_out,
            "seconds": round(self.clock.seconds() - exchange.started, 6),
        }
        if exchange.capped:
            fields["recorded_in"] = exchange.recorded_in
            fields["recorded_out"] = exchange.recorded_out
        if error is not None:
            fields["error"] = error
        if closed_by is not None:
            fields["closed_by"] = closed_by
        if exchange.filter is not None and exchange.filter.masked:
            fields["masked"] = exchange.filter.masked
        try:
            session.event("http-end", channel=exchange.channel, **fields)
        except RecordingFailed:
            pass

    def _finish(self, exchange: Exchange) -> None:
        """The answer is complete: ready for the next request."""
        self._end_event(exchange)
        if exchange.gate is not None:
            exchange.gate.close()
        if self._exchange is exchange:
            self._exchange = None
        if exchange.request_complete:
            self._next_cycle()

    def _next_cycle(self) -> None:
        if self._ended or self._exchange is not None:
            return
        if h11.MUST_CLOSE in (self._h11.our_state, self._h11.their_state):
            self._close_reason = "the client asked to close"
            self._lose()
            return
        try:
            self._h11.start_next_cycle()
        except h11.LocalProtocolError:
            self._lose()
            return
        self._restart_idle_timer()
        self._read_events()

    # -- flow control ---------------------------------------------------------

    def _pause(self, reason: str, pause: bool) -> None:
        if self._pauses is None:
            return
        if pause:
            self._pauses.pause(reason)
        else:
            self._pauses.resume(reason)

    def pause_all(self, reason: str, pause: bool) -> None:
        """Pause (or resume) reading both the client and the target."""
        self._pause(reason, pause)
        self._output(pause)

    def _output(self, pause: bool) -> None:
        self._output_paused = pause
        exchange = self._exchange
        if exchange is not None and exchange.response_transport is not None:
            if pause:
                exchange.response_transport.pauseProducing()
            else:
                exchange.response_transport.resumeProducing()

    @property
    def output_paused(self) -> bool:
        """Whether the client is not reading (what it is sent waits)."""
        return self._output_paused

    def pauseProducing(self) -> None:
        """The client reads slowly: stop reading the target's answer."""
        self._output(True)

    def resumeProducing(self) -> None:
        self._output(False)

    def stopProducing(self) -> None:
        # The client's connection is going (connectionLost follows).
        exchange = self._exchange
        if exchange is not None and exchange.response_transport is not None:
            exchange.response_transport.stopProducing()

    # -- endings --------------------------------------------------------------

    def _record_and_cut(self, exchange: Exchange, reason: str, answer: Refused) -> None:
        if self.session is not None:
            self.session.event(
                "http-request-cut", channel=exchange.channel, reason=reason
            )
        if exchange.status is None and exchange.response_transport is None:
            exchange.finished = False
            self._reply_exchange(exchange, answer)
        else:
            self._end_event(exchange, reason)
            self.abort(reason)

    def _recording_failed(self, reason: str) -> None:
        self.abort(f"recording failed: {reason}")

    def _terminated(self, reason: str) -> None:
        message = (
            self.session.end_message if self.session is not None else None
        ) or reason
        if self._exchange is None or self._exchange.status is None:
            if self._exchange is not None:
                self._reply_exchange(
                    self._exchange, Refused(503, "ServiceUnavailable", message)
                )
            self._close_reason = message
            self._ended = True
            self._lose()
        else:
            self.abort(message)

    def _lose(self) -> None:
        """
        Close the client's connection once what is written has gone.  The
        TLS transport closes only once no producer is registered on it.
        """
        if self._registered:
            self._registered = False
            self.transport.unregisterProducer()
        self.transport.loseConnection()

    def abort(self, reason: str) -> None:
        """End the connection now (mid-answer: the client sees it cut)."""
        self._close_reason = self._close_reason or reason
        self._ended = True
        exchange = self._exchange
        if exchange is not None and exchange.response_transport is not None:
            exchange.response_transport.stopProducing()
        self.transport.abortConnection()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self._ended = True
        streaming = self._relay is not None
        if self._relay is not None:
            self._relay.client_lost()
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        if self._admission is not None:
            self._admission.release()
        self.factory.connections.discard(self)
        exchange = self._exchange
        if exchange is not None:
            if exchange.gate is not None:
                exchange.gate.close()
            if exchange.response_transport is not None:
                exchange.response_transport.stopProducing()
            if exchange.body is not None:
                exchange.body.stopProducing()
            if streaming:
                # Closing a switched stream is how a client ends it.
                self._end_event(exchange, closed_by="client")
            else:
                self._end_event(exchange, "the client closed the connection")
        if self.session is not None:
            why = self._close_reason or "client closed the connection"
            self.session.close(why).addErrback(lambda failure: None)


class _Discard(Protocol):
    """Reads and drops a response body the client will not get."""

    def dataReceived(self, data: bytes) -> None:
        pass


class HTTPGatewayFactory(Factory):
    """Builds an L{HTTPGatewayProtocol} per client of one listener."""

    noisy = False

    def __init__(
        self,
        protocol: str,
        listener_name: str,
        options: HTTPListenerOptions,
        flavour: IHTTPFlavour,
        targets: Mapping[str, TargetConfig],
        session_factory: Any,
        reactor: Any,
    ) -> None:
        self.protocol_name = protocol
        self.listener_name = listener_name
        self.options = options
        self.flavour = flavour
        self.targets = dict(targets)
        self.session_factory = session_factory
        self.reactor = reactor
        self.limits = ConnectionLimits(options.caps)
        self.connections: set[HTTPGatewayProtocol] = set()
        self.draining = False
        self._upstreams: dict[str, tuple[HTTPTargetOptions, Upstream]] = {}

    def buildProtocol(self, addr: Any) -> HTTPGatewayProtocol:
        return HTTPGatewayProtocol(self)

    def upstream(self, target: TargetConfig | None) -> Upstream:
        """The target's client (one pool per target and options)."""
        assert target is not None
        options = target.options
        assert isinstance(options, HTTPTargetOptions)
        cached = self._upstreams.get(target.name)
        if cached is None or cached[0] != options:
            if cached is not None:
                cached[1].close()
            cached = (options, Upstream(self.reactor, options))
            self._upstreams[target.name] = cached
        return cached[1]

    def stopFactory(self) -> None:
        for _, upstream in self._upstreams.values():
            upstream.close()
        self._upstreams.clear()
