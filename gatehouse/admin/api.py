"""
The admin HTTP API: approvals, sessions, health and metrics.

Everything under C{/api/} needs C{Authorization: Bearer <JWT>}, verified by
the gateway's L{gatehouse.identity.TokenVerifier}; the identity it names is
the approver.  C{/healthz}, C{/readyz} and C{/metrics} are open, for load balancers and
Prometheus.  Every answer is JSON (but C{/metrics}), errors as
C{{"error": code, "message": text}}:

    GET  /healthz   (and /health): liveness
    GET  /readyz    readiness: 503 and the problems when not ready
    GET  /metrics
    GET  /api/v1/approvals[?state=pending|all|approved|...][&limit=N]
    GET  /api/v1/approvals/ID
    POST /api/v1/approvals/ID/approve   body (optional): {"comment": "..."}
    POST /api/v1/approvals/ID/deny      body (optional): {"comment": "..."}
    GET  /api/v1/sessions[?open=1][&subject=S][&name=N][&target=T][&protocol=P]
                         [&limit=N]
    POST /api/v1/ssh/certificates  body: {"public_key": ..., "principals"?,
                         "lifetime"?}: an SSH certificate for the caller
                         (any authenticated identity; see L{ssh_cert})

Query parameters an endpoint does not take, and parameters given twice,
are refused with 400 (C{"error": "bad-parameter"}, the parameter named in
C{"parameter"}): a filter is never ignored silently.  C{subject} is the
identity's subject, exactly; C{name} a part of its display name, any case.
"""

from __future__ import annotations

import io
import json
import typing
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from twisted.application.service import IService, Service
from twisted.internet import ssl
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.defer import Deferred, fail, maybeDeferred
from twisted.internet.interfaces import IListeningPort, IReactorTime, ITCPTransport
from twisted.internet.protocol import Protocol
from twisted.logger import Logger, LogLevel
from twisted.python.failure import Failure
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request, Site

from gatehouse.admin.sessions import (
    FILTERS,
    ISessionDirectory,
    NoSessionIndex,
    matches,
)
from gatehouse.admin.ssh_cert import CertificateEndpoint, CertificateRequestRefused
from gatehouse.identity import (
    CLIENT_MESSAGE,
    AuthenticationError,
    Identity,
)
from gatehouse.limits import ConnectionCaps, ConnectionLimits
from gatehouse.logs import emit, summary
from gatehouse.policy.approval import STATES, ApprovalBroker, ApprovalError
from gatehouse.tls import server_tls_options

if TYPE_CHECKING:
    from gatehouse.config import AdminConfig
    from gatehouse.metrics import GatewayMetrics

__all__ = [
    "MAX_BODY",
    "AdminService",
    "make_admin_service",
    "make_admin_site",
]

#: The largest request body the API reads, in bytes.
MAX_BODY = 64 * 1024

_DEFAULT_LIMIT = 100
_MAX_LIMIT = 1000
_IDLE_TIMEOUT = 60
#: connections the admin API holds: a few approvers, load balancers and
#: Prometheus need far fewer; an attacker must not use up the process's
#: descriptors (its listeners would refuse everyone).  Per address 16, so
#: a health check from another address takes the place of the oldest
#: connection of the heaviest one (see L{ConnectionLimits}).
ADMIN_CAPS = ConnectionCaps(
    total=96, unauthenticated=64, unauthenticated_per_address=16
)
_JSON = b"application/json"
_CHALLENGE = b'Bearer realm="gatehouse"'

_APPROVAL_ERRORS = {
    "not-found": 404,
    "self-approval": 403,
    "not-an-approver": 403,
    "not-pending": 409,
    "already-approved": 409,
}
_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"", "0", "false", "no", "off"})

_log = Logger(namespace="gatehouse.admin")


class _Problem(Exception):
    """
    A request that is answered with an error.

    @ivar status: the HTTP status.
    @ivar code: the C{error} field.
    @ivar message: the C{message} field, fit for the client.
    """

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        headers: Mapping[bytes, bytes] | None = None,
        fields: Mapping[str, object] | None = None,
    ) -> None:
        super().__init__(status, code, message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = dict(headers or {})
        #: more members of the JSON answer
        self.fields = dict(fields or {})


def _body(value: object) -> bytes:
    return json.dumps(value, ensure_ascii=False).encode("utf-8")


def _prepare(
    request: Request,
    status: int,
    content_type: bytes = _JSON,
    headers: Mapping[bytes, bytes] | None = None,
) -> None:
    request.setResponseCode(status)
    request.setHeader(b"content-type", content_type)
    request.setHeader(b"cache-control", b"no-store")
    request.setHeader(b"x-content-type-options", b"nosniff")
    for name, value in (headers or {}).items():
        request.setHeader(name, value)


def _answer(request: Request, status: int, value: object) -> bytes:
    """Set up a JSON answer; return its body, for a synchronous C{render}."""
    _prepare(request, status)
    return _body(value)


def _problem(request: Request, problem: _Problem) -> bytes:
    _prepare(request, problem.status, headers=problem.headers)
    return _body({**problem.fields, "error": problem.code, "message": problem.message})


def _methods(request: Request, *allowed: bytes) -> None:
    """
    @raise _Problem: 405, if C{request}'s method is none of C{allowed}
        (C{HEAD} goes with C{GET}).
    """
    if b"GET" in allowed:
        allowed = (*allowed, b"HEAD")
    if request.method not in allowed:
        raise _Problem(
            405,
            "method-not-allowed",
            f"{request.method.decode('ascii', 'replace')} is not allowed here",
            {b"allow": b", ".join(allowed)},
        )


def _parameters(request: Request, *allowed: str) -> None:
    """
    @raise _Problem: 400, naming the first query parameter of C{request}
        that is not one of C{allowed}, or that is given more than once.
    """
    for raw, values in (request.args or {}).items():
        name = raw.decode("utf-8", "replace")
        shown = name if len(name) <= 64 else name[:64] + "..."
        if name not in allowed:
            takes = ", ".join(allowed) if allowed else "no parameters"
            raise _Problem(
                400,
                "bad-parameter",
                f"unknown query parameter {shown!r} (this endpoint takes {takes})",
                fields={"parameter": shown},
            )
        if len(values) > 1:
            raise _Problem(
                400,
                "bad-parameter",
                f"query parameter {shown!r} is given {len(values)} times",
                fields={"parameter": shown},
            )


def _argument(request: Request, name: str) -> str | None:
    values = (request.args or {}).get(name.encode("ascii"))
    if not values:
        return None
    first: bytes = values[0]
    try:
        return first.decode("utf-8")
    except UnicodeDecodeError:
        raise _Problem(400, "bad-request", f"{name} is not UTF-8")


def _limit(request: Request) -> int:
    text = _argument(request, "limit")
    if text is None:
        return _DEFAULT_LIMIT
    try:
        limit = int(text)
    except ValueError:
        limit = 0
    if limit < 1:
        raise _Problem(
            400, "bad-request", f"limit must be a positive count, not {text!r}"
        )
    return min(limit, _MAX_LIMIT)


def _flag(request: Request, name: str) -> bool:
    text = (_argument(request, name) or "").lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise _Problem(400, "bad-request", f"{name} must be 1 or 0, not {text!r}")


def _jsonBody(request: Request) -> dict[str, Any]:
    if getattr(request, "bodyTooLarge", False):
        raise _Problem(413, "body-too-large", f"the body exceeds {MAX_BODY} bytes")
    content = request.content
    if content is None:
        return {}
    content.seek(0)
    data = content.read(MAX_BODY + 1)
    if len(data) > MAX_BODY:
        raise _Problem(413, "body-too-large", f"the body exceeds {MAX_BODY} bytes")
    if not data.strip():
        return {}
    try:
        value = json.loads(data)
    except (ValueError, RecursionError):
        raise _Problem(400, "bad-json", "the body is not valid JSON")
    if not isinstance(value, dict):
        raise _Problem(400, "bad-json", "the body must be a JSON object")
    return value


class _AdminRequest(Request):
    """
    A request whose body is kept in memory, and only up to L{MAX_BODY}
    bytes: a larger one is marked C{bodyTooLarge} and answered with 413.
    """

    bodyTooLarge = False
    #: the body so far; also C{content}, where Twisted reads it
    _body: io.BytesIO

    def gotLength(self, length: int | None) -> None:
        self.content = self._body = io.BytesIO()

    def handleContentChunk(self, data: bytes) -> None:
        if self.bodyTooLarge:
            return
        if self._body.tell() + len(data) > MAX_BODY:
            self.bodyTooLarge = True
            self.content = self._body = io.BytesIO()
            return
        self._body.write(data)


class _Exchange:
    """
    Answers one request later, unless its client has gone by then.
    """

    def __init__(self, request: Request) -> None:
        self.request = request
        self.gone = False
        request.notifyFinish().addErrback(self._lost)

    def _lost(self, failure: Failure) -> None:
        self.gone = True

    def send(self, status: int, value: object) -> None:
        if self.gone:
            return
        body = _answer(self.request, status, value)
        self._finish(body)

    def fail(self, failure: Failure) -> None:
        if isinstance(failure.value, _Problem):
            problem = failure.value
        else:
            _log.failure(
                "Admin API error on {method} {path}",
                failure,
                method=self.request.method.decode("ascii", "replace"),
                path=self.request.path.decode("ascii", "replace"),
            )
            problem = _Problem(500, "internal-error", "internal error")
        if self.gone:
            return
        self._finish(_problem(self.request, problem))

    def _finish(self, body: bytes) -> None:
        self.request.setHeader(b"content-length", b"%d" % (len(body),))
        self.request.write(body)
        self.request.finish()


class _Admin:
    """What the resources share: the gateway's parts they report on."""

    def __init__(
        self,
        broker: ApprovalBroker | None,
        verifier: TokenVerifying,
        metrics: GatewayMetrics | None,
        sessions: ISessionDirectory,
        clock: IReactorTime,
        groups: frozenset[str] = frozenset({"*"}),
        readiness: Callable[[], list[str]] | None = None,
        certificates: CertificateEndpoint | None = None,
    ) -> None:
        self.broker = broker
        self.certificates = certificates
        self.readiness = readiness
        self.verifier = verifier
        self.metrics = metrics
        self.sessions = sessions
        self.clock = clock
        self.groups = groups

    def may_use(self, identity: Identity) -> bool:
        """Whether C{identity} may use the API at all (votes are the broker's)."""
        groups = self.groups
        return "*" in groups or not groups.isdisjoint(identity.groups)


class _JSONResource(Resource):
    """A leaf that answers synchronously, errors as JSON."""

    isLeaf = True

    def __init__(self, admin: _Admin) -> None:
        super().__init__()
        self._admin = admin

    def render(self, request: Request) -> bytes:
        try:
            if any(request.postpath or ()):
                raise _Problem(404, "not-found", "no such resource")
            return self.answer(request)
        except _Problem as problem:
            return _problem(request, problem)
        except Exception:
            _log.failure("Admin API error on {path}", path=request.path)
            return _problem(request, _Problem(500, "internal-error", "internal error"))

    def answer(self, request: Request) -> bytes:
        raise NotImplementedError()


class _NotFound(_JSONResource):
    def answer(self, request: Request) -> bytes:
        raise _Problem(404, "not-found", "no such resource")


class _Health(_JSONResource):
    """Liveness (C{/healthz}, C{/health}): the process answers."""

    def answer(self, request: Request) -> bytes:
        _methods(request, b"GET")
        broker = self._admin.broker
        return _answer(
            request,
            200,
            {
                "status": "ok",
                "sessions_open": len(self._admin.sessions.open_sessions()),
                "approvals_pending": 0 if broker is None else len(broker.pending()),
            },
        )


class _Ready(_JSONResource):
    """
    Readiness (C{/readyz}): 200 when new sessions can start, else 503 with
    the problems (no signing key, recording directory, disk reserve,
    draining).
    """

    def answer(self, request: Request) -> bytes:
        _methods(request, b"GET")
        readiness = self._admin.readiness
        problems = [] if readiness is None else list(readiness())
        if problems:
            return _answer(request, 503, {"status": "not ready", "problems": problems})
        return _answer(request, 200, {"status": "ready", "problems": []})


class _Metrics(_JSONResource):
    def answer(self, request: Request) -> bytes:
        _methods(request, b"GET")
        metrics = self._admin.metrics
        if metrics is None:
            raise _Problem(404, "not-found", "this gateway keeps no metrics")
        body, contentType = metrics.render()
        _prepare(request, 200, contentType.encode("ascii"))
        return body


def _bearer(request: Request) -> bytes | None:
    header = request.getHeader(b"authorization")
    if header is None:
        return None
    scheme, _, token = header.strip().partition(b" ")
    if scheme.lower() != b"bearer" or not token.strip():
        return None
    return token.strip()


def _unauthorized(message: str) -> _Problem:
    return _Problem(401, "unauthorized", message, {b"www-authenticate": _CHALLENGE})


class _API(Resource):
    """
    Everything under C{/api/}: authenticates, then routes on the rest of
    the path.
    """

    isLeaf = True

    def __init__(self, admin: _Admin) -> None:
        super().__init__()
        self._admin = admin

    def render(self, request: Request) -> Any:
        exchange = _Exchange(request)
        d = self._authenticate(request)
        d.addCallback(lambda identity: self._route(request, identity))
        d.addCallbacks(lambda answer: exchange.send(*answer), exchange.fail)
        d.addErrback(
            lambda f: _log.failure(
                "Admin API: cannot answer {path}", f, path=request.path
            )
        )
        return NOT_DONE_YET

    def _authenticate(self, request: Request) -> Deferred[Identity]:
        peer = request.getClientAddress()
        where = getattr(peer, "host", str(peer))
        token = _bearer(request)
        if token is None:
            _log.info(
                "Admin API: no bearer token from {peer} for {path}",
                peer=where,
                path=request.path.decode("ascii", "replace"),
            )
            return fail(
                _unauthorized("authentication required (Authorization: Bearer)")
            )

        def rejected(failure: Failure) -> Failure:
            error = failure.value
            if not isinstance(error, AuthenticationError):
                return failure
            kind = getattr(error, "kind", "other")
            emit(
                "auth.failure",
                "Admin API: rejected the token from {client_address}: {detail}",
                LogLevel.warn,
                logger=_log,
                protocol="admin",
                client_address=where,
                reason=kind,
                detail=summary(error.reason),
            )
            if self._admin.metrics is not None:
                self._admin.metrics.auth_failure(kind)
            return Failure(_unauthorized(CLIENT_MESSAGE))

        return maybeDeferred(self._admin.verifier.verify, token).addErrback(rejected)

    def _route(self, request: Request, identity: Identity) -> Any:
        if request.postpath in (
            [b"v1", b"ssh", b"certificates"],
            [b"v1", b"ssh", b"certificates", b""],
        ):
            # Anyone may have a certificate for their own identity (it
            # names only targets the identity may reach): no admin group.
            _methods(request, b"POST")
            _parameters(request)
            return self._certificate(request, identity)
        if not self._admin.may_use(identity):
            _log.warn(
                "Admin API: {subject} is in none of the admin groups",
                subject=identity.subject,
            )
            raise _Problem(
                403,
                "forbidden",
                "this identity may not use the admin API (it needs one of the "
                f"groups {', '.join(sorted(self._admin.groups))})",
            )
        try:
            path = [segment.decode("utf-8") for segment in request.postpath or ()]
        except UnicodeDecodeError:
            raise _Problem(404, "not-found", "no such resource")
        if path and path[-1] == "":
            path.pop()
        match path:
            case ["v1", "approvals"]:
                _methods(request, b"GET")
                _parameters(request, "state", "limit")
                return self._approvals(request)
            case ["v1", "approvals", requestID]:
                _methods(request, b"GET")
                _parameters(request)
                return self._approval(requestID)
            case ["v1", "approvals", requestID, ("approve" | "deny") as action]:
                _methods(request, b"POST")
                _parameters(request)
                return self._vote(request, identity, requestID, action)
            case ["v1", "sessions"]:
                _methods(request, b"GET")
                _parameters(request, "open", *FILTERS, "limit")
                return self._sessions(request)
        raise _Problem(404, "not-found", "no such resource")

    def _certificate(self, request: Request, identity: Identity) -> tuple[int, object]:
        endpoint = self._admin.certificates
        if endpoint is None:
            raise _Problem(404, "not-found", "this gateway has no SSH user CA")
        peer = request.getClientAddress()
        try:
            answer = endpoint.answer(
                identity, _jsonBody(request), getattr(peer, "host", str(peer))
            )
        except CertificateRequestRefused as e:
            raise _Problem(e.status, e.code, e.message)
        return 200, answer

    def _approvals(self, request: Request) -> tuple[int, object]:
        state = _argument(request, "state") or "pending"
        limit = _limit(request)
        broker = self._admin.broker
        if state not in ("all", *STATES):
            raise _Problem(
                400,
                "bad-request",
                f"state must be all or one of {', '.join(STATES)}, not {state!r}",
            )
        if broker is None:
            found = []
        elif state == "pending":
            found = broker.pending()[:limit]
        elif state == "all":
            found = (broker.pending() + broker.recent(limit))[:limit]
        else:
            found = [r for r in broker.recent(_MAX_LIMIT) if r.state == state][:limit]
        return 200, {
            "approvals": [r.as_json() for r in found],
            "now": self._admin.clock.seconds(),
        }

    def _approval(self, requestID: str) -> tuple[int, object]:
        broker = self._admin.broker
        found = None if broker is None else broker.get(requestID)
        if found is None:
            raise _Problem(
                404, "not-found", f"there is no approval request {requestID}"
            )
        return 200, {"approval": found.as_json(), "now": self._admin.clock.seconds()}

    def _vote(
        self, request: Request, identity: Identity, requestID: str, action: str
    ) -> tuple[int, object]:
        comment = _jsonBody(request).get("comment", "")
        if not isinstance(comment, str):
            raise _Problem(400, "bad-request", "comment must be a string")
        broker = self._admin.broker
        if broker is None:
            raise _Problem(
                404, "not-found", f"there is no approval request {requestID}"
            )
        vote = broker.approve if action == "approve" else broker.deny
        try:
            result = vote(requestID, identity, comment)
        except ApprovalError as e:
            _log.info(
                "Admin API: {subject} may not {action} {id}: {message}",
                subject=identity.subject,
                action=action,
                id=requestID,
                message=e.message,
            )
            raise _Problem(_APPROVAL_ERRORS.get(e.code, 409), e.code, e.message)
        _log.info(
            "Admin API: {subject} ({name}) voted to {action} {id}, now {state}",
            subject=identity.subject,
            name=identity.name,
            action=action,
            id=requestID,
            state=result.state,
        )
        return 200, {"approval": result.as_json(), "now": self._admin.clock.seconds()}

    def _sessions(self, request: Request) -> Any:
        openOnly = _flag(request, "open")
        limit = _limit(request)
        filters = {}
        for name in FILTERS:
            value = _argument(request, name)
            if value == "":
                raise _Problem(
                    400,
                    "bad-parameter",
                    f"query parameter {name!r} must not be empty",
                    fields={"parameter": name},
                )
            if value is not None:
                filters[name] = value
        directory = self._admin.sessions
        if openOnly:
            found = [s for s in directory.open_sessions() if matches(s, filters)]
            found.reverse()
            return 200, {"sessions": found[:limit]}

        def unavailable(failure: Failure) -> Failure:
            from gatehouse.recording.index import IndexUnavailable

            if failure.check(NoSessionIndex):
                raise _Problem(
                    503,
                    "no-index",
                    "this gateway keeps no session index; ask for open=1",
                )
            if failure.check(IndexUnavailable):
                _log.error(
                    "Admin API: cannot read the session index: {why}",
                    why=failure.getErrorMessage(),
                )
                raise _Problem(
                    503, "index-unavailable", "the session index cannot be read"
                )
            return failure

        d = maybeDeferred(directory.query, filters, limit)
        d.addCallbacks(lambda rows: (200, {"sessions": rows}), unavailable)
        return d


class _Root(Resource):
    def __init__(self, admin: _Admin) -> None:
        super().__init__()
        self._notFound = _NotFound(admin)
        health = _Health(admin)
        self.putChild(b"health", health)
        self.putChild(b"healthz", health)
        self.putChild(b"readyz", _Ready(admin))
        self.putChild(b"metrics", _Metrics(admin))
        self.putChild(b"api", _API(admin))

    def getChild(self, path: bytes, request: Request) -> Resource:
        return self._notFound

    def render(self, request: Request) -> bytes:
        return self._notFound.render(request)


class TokenVerifying(typing.Protocol):
    """
    What the admin API asks of the verifier of callers' tokens: a
    L{gatehouse.identity.TokenVerifier}, or the one a reload swaps underneath
    (L{gatehouse.service.SwappableVerifier}).
    """

    def verify(self, token: str | bytes) -> Deferred[Identity]:
        """The identity C{token} proves; fails with L{AuthenticationError}."""
        ...


def make_admin_site(
    broker: ApprovalBroker | None,
    verifier: TokenVerifying,
    metrics: GatewayMetrics | None,
    sessions: ISessionDirectory,
    clock: IReactorTime,
    groups: frozenset[str] = frozenset({"*"}),
    readiness: Callable[[], list[str]] | None = None,
    certificates: CertificateEndpoint | None = None,
) -> Site:
    """
    The admin API as a L{Site}.

    @param broker: the L{gatehouse.policy.approval.ApprovalBroker}, or None when
        the gateway has none (no approvals are ever listed).
    @param verifier: verifies callers' bearer tokens (a
        L{gatehouse.identity.TokenVerifier}).
    @param metrics: the L{gatehouse.metrics.GatewayMetrics} served at
        C{/metrics}, or None.
    @param sessions: where sessions are found.
    @param clock: times idle connections out, and says what time it is
        (C{"now"} in answers about approvals).
    @param groups: identities need one of these groups to use C{/api/}
        (C{"*"}: every authenticated identity; empty: nobody).
    @param readiness: returns why the gateway is not ready (C{/readyz}).
    @param certificates: answers C{/api/v1/ssh/certificates} (None: the
        gateway has no SSH user CA).
    """
    admin = _Admin(
        broker, verifier, metrics, sessions, clock, groups, readiness, certificates
    )
    site = _CappedSite(
        _Root(admin),
        requestFactory=_AdminRequest,
        timeout=_IDLE_TIMEOUT,
        reactor=clock,
    )
    site.displayTracebacks = False
    site.noisy = False
    site.admin = admin  # a reload updates its groups
    return site


class _Refused(Protocol):
    """A connection over the admin API's caps: closed at once."""

    # The admin API listens on TCP, with or without TLS.
    transport: ITCPTransport

    def connectionMade(self) -> None:
        self.transport.abortConnection()


class _CappedSite(Site):
    """
    A L{Site} that holds at most L{ADMIN_CAPS} connections: Twisted's idle
    timeout alone never ends a request whose bytes come one at a time.
    """

    #: what the resources share; a reload updates its groups
    admin: _Admin

    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.limits = ConnectionLimits(ADMIN_CAPS)

    def buildProtocol(self, addr: Any) -> Any:
        admission = self.limits.admit(getattr(addr, "host", None) or "local")
        if isinstance(admission, str):
            refused = _Refused()
            refused.factory = self
            return refused
        channel = super().buildProtocol(addr)

        def evict() -> None:
            # Site builds a wrapper; the HTTPChannel inside holds the transport.
            inner = getattr(channel, "_channel", channel)
            transport = getattr(inner, "transport", None)
            if transport is not None:
                transport.abortConnection()

        admission.on_evict = evict
        lost = channel.connectionLost

        def connectionLost(reason: Failure) -> None:
            admission.release()
            lost(reason)

        channel.connectionLost = connectionLost
        return channel


class AdminService(Service):
    """
    Listens for the admin API while running.

    @ivar port: the listening port, while running.
    """

    def __init__(
        self,
        site: Site,
        reactor: Any,
        address: str,
        port: int,
        tls: ssl.CertificateOptions | None = None,
    ) -> None:
        self.name = "admin"
        self._site = site
        self._reactor = reactor
        self._address = address
        self._portNumber = port
        self._tls = tls
        self.port: IListeningPort | None = None

    @property
    def url(self) -> str | None:
        """Where the API listens, while running."""
        if self.port is None:
            return None
        host = self.port.getHost()
        if not isinstance(host, IPv4Address | IPv6Address):
            return None
        address = f"[{host.host}]" if ":" in host.host else host.host
        scheme = "http" if self._tls is None else "https"
        return f"{scheme}://{address}:{host.port}"

    def startService(self) -> None:
        if self._tls is None:
            self.port = self._reactor.listenTCP(
                self._portNumber, self._site, interface=self._address
            )
        else:
            self.port = self._reactor.listenSSL(
                self._portNumber, self._site, self._tls, interface=self._address
            )
        super().startService()
        _log.info("Admin API listening on {url}", url=self.url)

    def stopService(self) -> Deferred[None] | None:
        super().stopService()
        port, self.port = self.port, None
        if port is None:
            return None
        return port.stopListening()


def make_admin_service(admin_config: AdminConfig, site: Site, reactor: Any) -> IService:
    """
    A service listening for C{site} on the configured address and port
    (0: any free port; see L{AdminService.port}), with TLS when
    C{admin_config.tls} names a certificate and key.
    """
    tls = (
        None
        if admin_config.tls is None
        else server_tls_options(admin_config.tls, b"http/1.1")
    )
    return AdminService(site, reactor, admin_config.address, admin_config.port, tls)
