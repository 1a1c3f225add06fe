"""
Tests for L{gatehouse.http_client}, against real twisted.web servers on
127.0.0.1 (plain and TLS) through the real reactor.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.task import Clock
from twisted.protocols.policies import WrappingFactory
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase, TestCase
from twisted.web.client import ResponseNeverReceived
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request, Site

from gatehouse.http_client import (
    HTTPClient,
    InvalidURL,
    RequestTimeout,
    ResponseTooLarge,
    check_url,
    describe_error,
)
from tests.test_approval import Server
from tests.test_tls import ca_bundle


class _Echo(Resource):
    """
    Answers with a body of C{size} bytes and remembers each request; with
    C{hang}, never answers.
    """

    isLeaf = True

    def __init__(self, size: int = 5, hang: bool = False) -> None:
        super().__init__()
        self.size = size
        self.hang = hang
        self.requests: list[tuple[bytes, dict[bytes, list[bytes]], bytes]] = []
        self.received: Deferred[None] = Deferred()
        self.gone: Deferred[None] = Deferred()

    def render(self, request: Request) -> bytes | int:
        assert request.content is not None and request.method is not None
        headers = dict(request.requestHeaders.getAllRawHeaders())
        self.requests.append((request.method, headers, request.content.read()))
        if not self.received.called:
            self.received.callback(None)
        if self.hang:
            request.notifyFinish().addBoth(lambda _: self.gone.callback(None))
            return NOT_DONE_YET
        request.setResponseCode(201)
        return (b"0123456789" * (self.size // 10 + 1))[: self.size]


class _Server(Server):
    """
    Serve a resource on 127.0.0.1 (with TLS if C{tls} is given) until the
    end of a test, then close every connection.
    """

    def __init__(self, testCase: TestCase, resource: Resource, tls: Any = None) -> None:
        self.factory = WrappingFactory(Site(resource))
        if tls is None:
            self.port = reactor.listenTCP(0, self.factory, interface="127.0.0.1")
            scheme = "http"
        else:
            self.port = reactor.listenSSL(0, self.factory, tls, interface="127.0.0.1")
            scheme = "https"
        self.url = f"{scheme}://127.0.0.1:{self.port.getHost().port}/x"
        testCase.addCleanup(self.stop)


class HTTPClientTests(TestCase):
    """
    L{HTTPClient.request} against a loopback server.
    """

    async def test_plain(self) -> None:
        """
        A request reaches the server with its method, headers (over the
        C{User-Agent} default) and body; the status and body come back.
        """
        echo = _Echo()
        server = _Server(self, echo)
        client = HTTPClient(reactor)
        response = await client.request(
            b"POST",
            check_url(server.url),
            headers={"content-type": "application/json", "x-token": "t"},
            body=b'{"a": 1}',
            timeout=10,
            max_body=100,
        )
        self.assertEqual((response.code, response.body), (201, b"01234"))
        [(method, headers, body)] = echo.requests
        self.assertEqual(method, b"POST")
        self.assertEqual(body, b'{"a": 1}')
        self.assertEqual(headers[b"User-Agent"], [b"gatehouse"])
        self.assertEqual(headers[b"Content-Type"], [b"application/json"])
        self.assertEqual(headers[b"X-Token"], [b"t"])

    async def test_userAgentOverridden(self) -> None:
        """
        A C{User-Agent} given with the request replaces the default.
        """
        echo = _Echo()
        server = _Server(self, echo)
        await HTTPClient(reactor).request(
            b"GET",
            check_url(server.url),
            headers={"User-Agent": "other"},
            timeout=10,
            max_body=100,
        )
        self.assertEqual(echo.requests[0][1][b"User-Agent"], [b"other"])

    async def test_tlsBundleTrustsEveryCA(self) -> None:
        """
        With C{ca_file} a bundle of two CAs, a server whose certificate the
        second one signed is trusted.
        """
        bundle, _, options = ca_bundle(Path(self.mktemp()))
        server = _Server(self, _Echo(), tls=options)
        client = HTTPClient(reactor, ca_file=str(bundle))
        response = await client.request(
            b"GET", check_url(server.url), timeout=10, max_body=100
        )
        self.assertEqual(response.code, 201)

    async def test_tlsUntrusted(self) -> None:
        """
        A server certificate no CA of C{ca_file} signed fails the request
        before anything is sent, and the description says why.
        """
        _, other, options = ca_bundle(Path(self.mktemp()))
        echo = _Echo()
        server = _Server(self, echo, tls=options)
        client = HTTPClient(reactor, ca_file=str(other))
        error = await self.assertFailure(
            client.request(b"GET", check_url(server.url), timeout=10, max_body=100),
            ResponseNeverReceived,
        )
        self.assertIn("certificate verify failed", describe_error(error))
        self.assertEqual(echo.requests, [])

    async def test_bodyLimit(self) -> None:
        """
        A body over C{max_body} fails the request, saying so.
        """
        server = _Server(self, _Echo(size=100_000))
        error = await self.assertFailure(
            HTTPClient(reactor).request(
                b"GET", check_url(server.url), timeout=10, max_body=1000
            ),
            ResponseTooLarge,
        )
        self.assertEqual(describe_error(error), "response larger than 1000 bytes")

    async def test_bodyAtLimit(self) -> None:
        """
        A body of exactly C{max_body} bytes is accepted whole.
        """
        server = _Server(self, _Echo(size=1000))
        response = await HTTPClient(reactor).request(
            b"GET", check_url(server.url), timeout=10, max_body=1000
        )
        self.assertEqual(len(response.body), 1000)

    async def test_bodyTruncated(self) -> None:
        """
        With C{truncate}, the start of a longer body is kept.
        """
        server = _Server(self, _Echo(size=100_000))
        response = await HTTPClient(reactor).request(
            b"GET", check_url(server.url), timeout=10, max_body=12, truncate=True
        )
        self.assertEqual((response.code, response.body), (201, b"012345678901"))

    async def test_timeout(self) -> None:
        """
        A server that never answers fails the request with
        L{RequestTimeout} after C{timeout} seconds of the client's clock,
        and the connection is closed.
        """
        echo = _Echo(hang=True)
        server = _Server(self, echo)
        clock = Clock()
        requesting = HTTPClient(reactor, clock=clock).request(
            b"GET", check_url(server.url), timeout=2.5, max_body=100
        )
        await echo.received
        clock.advance(2.4)
        self.assertFalse(requesting.called)
        clock.advance(0.1)
        error = await self.assertFailure(requesting, RequestTimeout)
        self.assertEqual(describe_error(error), "no response in 2.5s")
        await echo.gone
        self.assertEqual(clock.getDelayedCalls(), [])

    async def test_cancel(self) -> None:
        """
        Cancelling a request fails it with L{CancelledError} (not with the
        Agent's own failure) and closes the connection.
        """
        echo = _Echo(hang=True)
        server = _Server(self, echo)
        clock = Clock()
        requesting = HTTPClient(reactor, clock=clock).request(
            b"GET", check_url(server.url), timeout=10, max_body=100
        )
        await echo.received
        requesting.cancel()
        await self.assertFailure(requesting, CancelledError)
        await echo.gone
        self.assertEqual(clock.getDelayedCalls(), [])

    async def test_refused(self) -> None:
        """
        A refused connection is described as such.
        """
        port = reactor.listenTCP(0, Site(_Echo()), interface="127.0.0.1")
        url = f"http://127.0.0.1:{port.getHost().port}/"
        await port.stopListening()
        clock = Clock()
        error = await self.assertFailure(
            HTTPClient(reactor, clock=clock).request(
                b"GET", check_url(url), timeout=10, max_body=100
            ),
            ConnectionRefusedError,
        )
        self.assertIn("refused", describe_error(error).lower())
        self.assertEqual(clock.getDelayedCalls(), [])


class DescribeErrorTests(SynchronousTestCase):
    """
    L{describe_error}.
    """

    def test_reasons(self) -> None:
        """
        Wrapped causes are described, nested ones too, in order.
        """
        inner = ResponseNeverReceived([Failure(ValueError("bad handshake"))])
        error = ResponseNeverReceived([Failure(inner), Failure(OSError("gone"))])
        self.assertEqual(describe_error(error), "bad handshake; gone")

    def test_emptyMessage(self) -> None:
        """
        An exception without a message is named by its type.
        """
        self.assertEqual(describe_error(CancelledError()), "CancelledError")
        self.assertEqual(describe_error(ValueError("x")), "x")

    def test_failure(self) -> None:
        """
        A L{Failure} is described by its exception.
        """
        wrapped = ResponseNeverReceived([Failure(ValueError("bad handshake"))])
        self.assertEqual(describe_error(Failure(wrapped)), "bad handshake")


class CheckURLTests(SynchronousTestCase):
    """
    L{check_url}.
    """

    def test_accepted(self) -> None:
        """
        http(s) URLs with a host are returned as bytes.
        """
        for url in ["https://idp.example.com/x", "http://hooks.example.com/"]:
            self.assertEqual(check_url(url), url.encode("ascii"))
        for url in ["http://127.0.0.1:8080/jwks", "http://localhost/", "http://[::1]/"]:
            self.assertEqual(check_url(url, require_tls=True), url.encode("ascii"))

    def test_refused(self) -> None:
        """
        Other schemes, URLs without a host and non-ASCII URLs are refused;
        with C{require_tls}, plain http to a non-loopback host too.
        """
        for url in ["ftp://example.com/", "hooks.example.com/x", "https:///x"]:
            self.assertRaises(InvalidURL, check_url, url)
        error = self.assertRaises(InvalidURL, check_url, "https://ex\u00e4mple.com/")
        self.assertEqual(str(error), "invalid URL 'https://exämple.com/'")
        error = self.assertRaises(
            InvalidURL, check_url, "http://192.0.2.1/jwks", require_tls=True
        )
        self.assertEqual(
            str(error),
            "refusing to fetch 'http://192.0.2.1/jwks': https is required "
            "(plain http only for loopback hosts)",
        )
        self.assertIsInstance(error, ValueError)

    def test_bounded(self) -> None:
        """
        A long URL is shown cut short in the error.
        """
        error = self.assertRaises(InvalidURL, check_url, "ftp://" + "a" * 500)
        self.assertLess(len(str(error)), 150)
