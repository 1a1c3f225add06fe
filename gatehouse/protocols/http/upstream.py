"""
The gateway as the client of an HTTP target: one L{Upstream} per target,
an C{Agent} on a pool of persistent connections over verified TLS, with
the gateway's own credentials (a client certificate, a bearer token from
a file, injected headers).

Bodies stream both ways: the request body is an L{IBodyProducer} the
client's connection feeds (L{StreamingBody}), and the response body is
delivered to a protocol whose transport pauses the target's connection
when the client reads slowly.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from twisted.internet import endpoints
from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IConsumer, IPushProducer
from twisted.web.client import Agent, HTTPConnectionPool
from twisted.web.iweb import UNKNOWN_LENGTH, IAgentEndpointFactory, IBodyProducer
from zope.interface import implementer

from gatehouse.files import files
from gatehouse.protocols.http.config import HTTPTargetOptions
from gatehouse.protocols.http.tls_policy import UpstreamPolicy

__all__ = ["StreamingBody", "Upstream"]


def _read_token(data: bytes, path: str) -> bytes:
    token = data.strip()
    if not token or b"\n" in token or b"\r" in token:
        raise ValueError(f"{path}: not one line of token")
    return token


def _read_header_value(data: bytes, path: str) -> bytes:
    value = data.strip()
    if b"\n" in value or b"\r" in value or b"\0" in value:
        raise ValueError(f"{path}: a header value is one line")
    return value


class Upstream:
    """
    Requests to one target.

    @ivar base: the target URL's scheme, host and port (bytes), to which
        the client's path is appended; C{prefix} is the URL's own path.
    """

    def __init__(self, reactor: Any, options: HTTPTargetOptions) -> None:
        self.options = options
        url = urlsplit(options.url)
        self.https = url.scheme == "https"
        self.host = url.hostname or ""
        self.port = url.port or (443 if self.https else 80)
        self.prefix = url.path.rstrip("/").encode()
        self.base = f"{url.scheme}://{url.netloc}".encode()
        default_port = 443 if self.https else 80
        self.host_header = (
            url.netloc.rsplit("@", 1)[-1]
            if url.port not in (None, default_port)
            else self.host
        ).encode()
        self.reactor = reactor
        self.tls = UpstreamPolicy(options) if self.https else None
        endpoint: Any = endpoints.HostnameEndpoint(
            reactor, self.host, self.port, timeout=options.connect_timeout
        )
        if self.tls is not None:
            endpoint = endpoints.wrapClientTLS(
                self.tls.creatorForNetloc(self.host.encode(), self.port), endpoint
            )
        #: how a new connection to the target is made (TLS, timeout)
        self.endpoint = endpoint
        self.pool = HTTPConnectionPool(reactor, persistent=True)
        self.pool.maxPersistentPerHost = 32
        self.pool.retryAutomatically = False
        # Every request goes to the one target: one endpoint, built once
        # (an Agent would build one per request).
        self.agent = Agent.usingEndpointFactory(
            reactor, _OneEndpoint(endpoint), pool=self.pool
        )

    def credentials(self) -> list[tuple[bytes, bytes]]:
        """
        The headers carrying the gateway's own credentials, read now
        (a rotated token file is read again).

        @raise OSError, ValueError: a file cannot be read or is malformed.
        """
        headers: list[tuple[bytes, bytes]] = []
        if self.options.token_file is not None:
            token = files.load(self.options.token_file, _read_token)
            headers.append((b"authorization", b"Bearer " + token))
        for injected in self.options.headers:
            value = files.load(injected.file, _read_header_value)
            headers.append((injected.name.encode("ascii"), value))
        return headers

    def url(self, target: bytes) -> bytes:
        """The URL of the client's request target (origin form) upstream."""
        return self.base + self.prefix + target

    def close(self) -> Deferred[Any]:
        """Close the pooled connections."""
        d: Deferred[Any] = self.pool.closeCachedConnections()
        return d


@implementer(IAgentEndpointFactory)
class _OneEndpoint:
    """The endpoint of every URI: the target's."""

    def __init__(self, endpoint: Any) -> None:
        self._endpoint = endpoint

    def endpointForURI(self, uri: Any) -> Any:
        return self._endpoint


@implementer(IBodyProducer)
class StreamingBody:
    """
    A request body the client's connection writes as it arrives: the
    target's connection pulls it through L{IBodyProducer}, and pausing it
    pauses the client's reading.

    @param length: the body's length, if the client said it.
    @param pause: pause or resume reading the client (True: pause).
    """

    def __init__(self, length: int | None, pause: Callable[[bool], None]) -> None:
        self.length: Any = UNKNOWN_LENGTH if length is None else length
        self._pause = pause
        self._consumer: IConsumer | None = None
        self._done: Deferred[None] | None = None
        self._pending: list[bytes] = []
        self._ended = False
        self._paused = False

    def startProducing(self, consumer: IConsumer) -> Deferred[None]:
        self._consumer = consumer
        self._done = Deferred()
        for chunk in self._pending:
            consumer.write(chunk)
        self._pending = []
        if self._ended:
            done, self._done = self._done, None
            done.callback(None)
            return succeed(None)
        if self._paused:
            self._pause(False)
            self._paused = False
        return self._done

    def write(self, data: bytes) -> None:
        """The client sent more of the body."""
        if self._consumer is None:
            self._pending.append(data)
            if not self._paused:
                self._paused = True
                self._pause(True)
        else:
            self._consumer.write(data)

    def finish(self) -> None:
        """The client's body is complete."""
        self._ended = True
        if self._done is not None:
            done, self._done = self._done, None
            done.callback(None)

    def pauseProducing(self) -> None:
        self._pause(True)

    def resumeProducing(self) -> None:
        self._pause(False)

    def stopProducing(self) -> None:
        self._ended = True
        self._done = None


def is_push_producer(transport: object) -> bool:
    """Whether C{transport} can be paused (an C{IPushProducer})."""
    return IPushProducer.providedBy(transport)
