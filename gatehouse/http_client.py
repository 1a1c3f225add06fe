"""
The gateway's one HTTP client, for its own outgoing requests (an IdP's
discovery document and JWKS, approval webhooks, and next the Kubernetes
API).

L{HTTPClient} wraps Twisted's L{Agent} with what each of those needs: a
trust root from a CA file, a bound on the body it buffers, a timeout
covering the whole exchange, cancellation that reports L{CancelledError},
and L{describe_error} to say in one line what went wrong.
"""

from __future__ import annotations

import io
import ipaddress
from collections.abc import Mapping
from typing import Any, cast
from urllib.parse import urlsplit

import attrs
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.interfaces import IDelayedCall, IPushProducer, IReactorTime
from twisted.internet.protocol import Protocol, connectionDone
from twisted.python.failure import Failure
from twisted.web.client import (
    Agent,
    BrowserLikePolicyForHTTPS,
    FileBodyProducer,
    ResponseDone,
)
from twisted.web.http import PotentialDataLoss
from twisted.web.http_headers import Headers
from twisted.web.iweb import IAgent, IPolicyForHTTPS, IResponse

from gatehouse.logs import quiet_agent_pool
from gatehouse.tls import trust_root

__all__ = [
    "HTTPClient",
    "HTTPClientError",
    "HTTPResponse",
    "InvalidURL",
    "RequestTimeout",
    "ResponseTooLarge",
    "check_url",
    "describe_error",
    "trust_policy",
]


class HTTPClientError(Exception):
    """
    A request that produced no usable response; the message says why.
    """


class RequestTimeout(HTTPClientError):
    """
    No complete response arrived in time.
    """


class ResponseTooLarge(HTTPClientError):
    """
    The response body exceeded the limit given for it.
    """


class InvalidURL(ValueError):
    """
    A URL the client refuses to request.
    """


@attrs.frozen
class HTTPResponse:
    """
    A response: its status and its body (only the start of it when the
    request asked for a truncated body).
    """

    code: int
    body: bytes


def describe_error(error: BaseException | Failure) -> str:
    """
    One line saying why a request failed (an exception, or a L{Failure}
    of one), for logs and operators.

    Twisted's client wraps the real causes (refused connection, TLS
    verification failure, ...) into C{ResponseNeverReceived} and friends,
    whose own text says nothing: their C{reasons} are described instead.
    """
    if isinstance(error, Failure):
        if error.value is None:
            return error.getErrorMessage()
        error = error.value
    reasons = getattr(error, "reasons", None)
    if isinstance(reasons, list) and reasons:
        return "; ".join(
            describe_error(r) if isinstance(r, BaseException | Failure) else str(r)
            for r in reasons
        )
    return str(error) or type(error).__name__


def _bounded(value: str, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_url(url: str, *, require_tls: bool = False) -> bytes:
    """
    Check that C{url} is an http(s) URL with a host.

    @param require_tls: refuse plain http, except to a loopback host.
    @return: the URL as bytes, for L{IAgent.request}.
    @raise InvalidURL: otherwise; the message shows the URL bounded in
        length.
    """
    try:
        parts = urlsplit(url)
        host = parts.hostname
        encoded = url.encode("ascii")
    except (ValueError, UnicodeEncodeError):
        raise InvalidURL(f"invalid URL {_bounded(url)}") from None
    if host and parts.scheme == "https":
        return encoded
    if host and parts.scheme == "http":
        if not require_tls or _is_loopback(host):
            return encoded
    if require_tls:
        raise InvalidURL(
            f"refusing to fetch {_bounded(url)}: https is required "
            "(plain http only for loopback hosts)"
        )
    raise InvalidURL(f"{_bounded(url)} is not an http(s) URL with a host")


def trust_policy(ca_file: str | None = None) -> IPolicyForHTTPS:
    """
    An HTTPS policy that trusts exactly the CA certificates in the PEM
    file C{ca_file} (all of them), or the system's trust store if None.

    The file is read now: call this when the configuration is loaded.

    @raise OSError: the file cannot be read.
    @raise ValueError: it holds no valid certificate.
    """
    if ca_file is None:
        return BrowserLikePolicyForHTTPS()
    with open(ca_file, "rb") as f:
        pem = f.read()
    return BrowserLikePolicyForHTTPS(trustRoot=trust_root(pem, ca_file))


class _Body(Protocol):
    """
    Collect a response body up to C{limit} bytes: beyond it, either fail
    (and stop reading) or keep the start and drop the rest.
    """

    def __init__(self, limit: int, truncate: bool) -> None:
        self._limit = limit
        self._truncate = truncate
        self._chunks: list[bytes] = []
        self._size = 0
        self.finished: Deferred[bytes] = Deferred(lambda d: self._stop())

    def _stop(self) -> None:
        # IResponse.deliverBody connects the protocol to an IPushProducer.
        if self.transport is not None:
            cast(IPushProducer, self.transport).stopProducing()

    def dataReceived(self, data: bytes) -> None:
        if self.finished.called:
            return
        room = self._limit - self._size
        self._size += len(data)
        if len(data) <= room:
            self._chunks.append(data)
        elif self._truncate:
            if room > 0:
                self._chunks.append(data[:room])
        else:
            self._stop()
            self.finished.errback(
                ResponseTooLarge(f"response larger than {self._limit} bytes")
            )

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        if self.finished.called:
            return
        # PotentialDataLoss: a body delimited by the connection closing.  A
        # truncated body is informational: its start is enough even if the
        # rest never came.
        if self._truncate or reason.check(ResponseDone, PotentialDataLoss):
            self.finished.callback(b"".join(self._chunks))
        else:
            self.finished.errback(reason)


class HTTPClient:
    """
    Make HTTP requests with bounded bodies, timeouts and cancellation.

    @param reactor: connects (unless C{agent} is given) and, unless
        C{clock} is given, times requests out.
    @param ca_file: trust exactly the CAs in this PEM file for https,
        instead of the system's trust store (read now).
    @param agent: the L{IAgent} to send requests with, instead of one built
        from C{reactor} (C{ca_file} is then ignored).
    @param clock: schedules timeouts.
    @param user_agent: the C{User-Agent} header of every request.
    """

    def __init__(
        self,
        reactor: Any,
        *,
        ca_file: str | None = None,
        agent: IAgent | None = None,
        clock: IReactorTime | None = None,
        user_agent: str = "gatehouse",
    ) -> None:
        if agent is None:
            agent = Agent(
                reactor,
                contextFactory=trust_policy(ca_file),
                pool=quiet_agent_pool(reactor),
            )
        self._agent = agent
        self._clock: IReactorTime = reactor if clock is None else clock
        self._userAgent = user_agent

    def request(
        self,
        method: bytes,
        url: bytes,
        *,
        timeout: float,
        max_body: int,
        truncate: bool = False,
        headers: Mapping[str, str] | None = None,
        body: bytes | None = None,
    ) -> Deferred[HTTPResponse]:
        """
        Send one request and read its response.

        @param url: checked by L{check_url} beforehand.
        @param timeout: seconds for the whole exchange, body included;
            then the request fails with L{RequestTimeout}.
        @param max_body: the most body bytes kept.
        @param truncate: keep the first C{max_body} bytes of a longer body
            (and tolerate a body cut short); otherwise a longer body fails
            the request with L{ResponseTooLarge}.
        @param headers: request headers, over the C{User-Agent} default.
        @return: fires with the L{HTTPResponse}; fails with
            L{CancelledError} when cancelled, with L{RequestTimeout}, or
            with whatever Twisted's client failed with (see
            L{describe_error}).
        """
        sent = Headers({b"user-agent": [self._userAgent.encode("ascii")]})
        for name, value in (headers or {}).items():
            sent.setRawHeaders(name, [value])
        producer = None if body is None else FileBodyProducer(io.BytesIO(body))
        requested = self._agent.request(method, url, sent, producer)

        def read(response: IResponse) -> Deferred[HTTPResponse]:
            collector = _Body(max_body, truncate)
            response.deliverBody(collector)
            return collector.finished.addCallback(
                lambda data: HTTPResponse(response.code, data)
            )

        attempt = requested.addCallback(read)
        timer: IDelayedCall | None = None

        def stopTimer() -> None:
            if timer is not None and timer.active():
                timer.cancel()

        def end(error: Exception) -> None:
            # The caller hears about the timeout or the cancellation, not
            # about the failure cancelling the Agent's request produces
            # (ResponseNeverReceived, ConnectingCancelledError, ...).
            stopTimer()
            if not outer.called:
                outer.errback(Failure(error))
            attempt.cancel()

        outer: Deferred[HTTPResponse] = Deferred(lambda d: end(CancelledError()))

        def settle(result: HTTPResponse | Failure) -> None:
            stopTimer()
            if outer.called:
                return
            if isinstance(result, Failure):
                outer.errback(result)
            else:
                outer.callback(result)

        attempt.addBoth(settle)
        if not attempt.called:
            timer = self._clock.callLater(
                timeout, end, RequestTimeout(f"no response in {timeout}s")
            )
        return outer
