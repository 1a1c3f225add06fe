"""
Tests for L{gatehouse.admin}: the admin API served on 127.0.0.1 with a real
L{ApprovalBroker}, a real L{TokenVerifier} trusting an HS256 issuer and a
real L{SessionHub} (recorder and index on disk), called over HTTP.
"""

from __future__ import annotations

import io
import json
from typing import Any

import jwt
from twisted.internet import reactor
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.protocol import ClientFactory, Protocol
from twisted.internet.ssl import Certificate
from twisted.internet.task import Clock, deferLater
from twisted.trial.unittest import TestCase
from twisted.web.client import (
    Agent,
    BrowserLikePolicyForHTTPS,
    FileBodyProducer,
    readBody,
)
from twisted.web.http_headers import Headers
from zope.interface import implementer
from zope.interface.verify import verifyObject

from gatehouse.admin import (
    MAX_BODY,
    HubSessionDirectory,
    ISessionDirectory,
    make_admin_service,
    make_admin_site,
)
from gatehouse.config import AdminConfig, TargetConfig, TLSConfig
from gatehouse.identity import CLIENT_MESSAGE, Identity, IssuerConfig, TokenVerifier
from gatehouse.metrics import GatewayMetrics
from gatehouse.policy import Command, Decision
from gatehouse.policy.approval import ApprovalBroker
from gatehouse.recording import keys
from gatehouse.recording.index import CommandRow, SessionIndex
from gatehouse.recording.recorder import SegmentRecorder, synchronous_executor
from gatehouse.session import SessionHub
from tests.fixtures.tls import make_ca

NS = 1_000_000_000
NOW = 1_790_000_000.0
ISSUER = "https://idp.example.com/realms/ops"
AUDIENCE = "gatehouse"
SECRET = b"the admin tests' shared HS256 secret, 32+ bytes"
DROP = Command("postgres", "DropStmt", "DROP TABLE users;", ("public.users",))
DELETE = Command(
    "postgres", "DeleteStmt", "DELETE FROM orders\nWHERE true;", ("orders",)
)


def token(
    subject: str,
    groups: tuple[str, ...] = (),
    name: str | None = None,
    secret: bytes = SECRET,
    now: float = NOW,
) -> str:
    """A token from the test issuer."""
    claims = {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": subject,
        "name": name or subject.capitalize(),
        "groups": list(groups),
        "iat": int(now),
        "exp": int(now) + 3600,
    }
    return jwt.encode(claims, secret, algorithm="HS256")


def review(approvers: tuple[str, ...] = ("dba",), approvals: int = 1) -> Decision:
    """A review decision."""
    return Decision(
        "review", "no-drops", approvers=approvers, approvals=approvals, timeout=300
    )


class Gateway:
    """
    The parts of a gateway the admin API reports on, all real, on a
    L{Clock} set to L{NOW}.

    @ivar tokens: a token for each of alice (dev), bob (dba), carol (dba,
        ops) and dave (dev).
    """

    def __init__(self, directory: str, index: bool = True) -> None:
        self.clock = Clock()
        self.clock.advance(NOW)
        self.broker = ApprovalBroker(self.clock)
        self.verifier = TokenVerifier(
            [
                IssuerConfig(
                    ISSUER, (AUDIENCE,), algorithms=("HS256",), hs256_secret=SECRET
                )
            ],
            reactor,
            clock=self.clock,
        )
        self.metrics = GatewayMetrics()
        root = keys.generate_root_key()
        epochKeys = keys.issue_epoch_keys(
            root, "gw-test", int((NOW - 10) * NS), 900 * NS, 8
        )
        self.recorder = SegmentRecorder(
            directory + "/recordings",
            "gw-test",
            lambda wall: keys.current_key(epochKeys, wall),
            self.clock,
            synchronous_executor,
            monotonic_ns=lambda: int(self.clock.seconds() * NS),
        )
        self.index = (
            SessionIndex(directory + "/index.sqlite", reactor) if index else None
        )
        self.hub = SessionHub(
            "gw-test",
            self.recorder,
            self.verifier,
            self.clock,
            self.index,
            broker=self.broker,
            metrics=self.metrics,
            targets=[
                TargetConfig("db", "postgres", allow_groups=("*",)),
                TargetConfig("bastion", "ssh", allow_groups=("*",)),
            ],
        )
        self.broker.observe(self.metrics.approval_event)
        self.sessions = HubSessionDirectory(self.hub, reactor)
        self.groups = {
            "alice": ("dev",),
            "bob": ("dba",),
            "carol": ("dba", "ops"),
            "dave": ("dev",),
        }
        self.tokens = {
            name: token(name, groups) for name, groups in self.groups.items()
        }
        self.alice = None

    def identity(self, name: str) -> Identity:
        """The identity C{name}'s token asserts."""
        return Identity(
            name, name.capitalize(), self.groups[name], ISSUER, int(NOW) + 3600
        )

    @inlineCallbacks
    def start(self) -> Any:
        """Start the index; open a session for alice, who asks for approvals."""
        if self.index is not None:
            yield self.index.start()
        self.session = self.hub.open("postgres", "pg-main", "127.0.0.1:40000")
        self.alice = yield self.session.authenticate(self.tokens["alice"], "db")

    @inlineCallbacks
    def stop(self) -> Any:
        """Close the sessions and the index."""
        yield self.hub.close_all("test over")
        if self.index is not None:
            yield self.index.stop()

    @inlineCallbacks
    def flush(self) -> Any:
        """Wait until every index write reported so far is committed."""
        yield self.index.command_seen(
            CommandRow(
                session_id=str(self.session.id),
                seq=0,
                at=self.clock.seconds(),
                kind="SelectStmt",
                text="SELECT 1",
                decision="allow",
            )
        )

    def request(
        self,
        commands: tuple[Command, ...] = (DROP,),
        decision: Decision | None = None,
    ) -> tuple[Any, Deferred]:
        """Alice asks for approval of C{commands}."""
        return self.session.request_approval(commands, decision or review())


class Client:
    """Calls a site over HTTP."""

    def __init__(self, url: str, agent: Agent | None = None) -> None:
        self.url = url
        self.agent = agent or Agent(reactor)

    @inlineCallbacks
    def call(
        self,
        method: bytes,
        path: str,
        bearer: str | None = None,
        body: bytes | None = None,
        headers: dict[bytes, bytes] | None = None,
    ) -> Any:
        """
        @return: Deferred firing with the response and its body.
        """
        sent = Headers()
        if bearer is not None:
            sent.addRawHeader(b"authorization", b"Bearer " + bearer.encode("ascii"))
        for name, value in (headers or {}).items():
            sent.addRawHeader(name, value)
        producer = None if body is None else FileBodyProducer(io.BytesIO(body))
        response = yield self.agent.request(
            method, (self.url + path).encode("ascii"), sent, producer
        )
        data = yield readBody(response)
        return response, data


def listen(case: TestCase, site: Any) -> str:
    """Serve C{site} on 127.0.0.1 for the test; return its URL."""
    port = reactor.listenTCP(0, site, interface="127.0.0.1")
    case.addCleanup(port.stopListening)
    return f"http://127.0.0.1:{port.getHost().port}"


class AdminAPITestCase(TestCase):
    """Serves the admin API of a L{Gateway} for each test."""

    index = True

    @inlineCallbacks
    def setUp(self) -> Any:
        self.gateway = Gateway(self.mktemp(), index=self.index)
        yield self.gateway.start()
        self.addCleanup(self.gateway.stop)
        g = self.gateway
        self.site = make_admin_site(
            g.broker, g.verifier, g.metrics, g.sessions, g.clock
        )
        self.url = listen(self, self.site)
        self.client = Client(self.url)

    @inlineCallbacks
    def call(
        self,
        method: bytes,
        path: str,
        who: str | None = "bob",
        body: bytes | None = None,
        **kwargs: Any,
    ) -> Any:
        """
        Call the API as C{who}.

        @return: Deferred firing with the response and its JSON (or bytes).
        """
        bearer = None if who is None else self.gateway.tokens[who]
        response, data = yield self.client.call(method, path, bearer, body, **kwargs)
        contentType = response.headers.getRawHeaders(b"content-type", [b""])[0]
        if contentType == b"application/json":
            return response, json.loads(data)
        return response, data

    def assertError(self, result: tuple[Any, Any], status: int, code: str) -> None:
        response, body = result
        self.assertEqual(
            (response.code, body["error"]), (status, code), f"unexpected answer {body}"
        )
        self.assertIsInstance(body["message"], str)


class OpenEndpointTests(AdminAPITestCase):
    """
    C{/health} and C{/metrics} need no token; unknown paths are 404.
    """

    @inlineCallbacks
    def test_health(self) -> Any:
        """
        C{/health} counts open sessions and pending approvals.
        """
        self.gateway.request()
        response, body = yield self.call(b"GET", "/health", who=None)
        self.assertEqual(response.code, 200)
        self.assertEqual(
            response.headers.getRawHeaders(b"content-type"), [b"application/json"]
        )
        self.assertEqual(
            body, {"status": "ok", "sessions_open": 1, "approvals_pending": 1}
        )

    @inlineCallbacks
    def test_metrics(self) -> Any:
        """
        C{/metrics} serves the gateway's metrics in Prometheus' format.
        """
        self.gateway.request()
        response, body = yield self.call(b"GET", "/metrics", who=None)
        self.assertEqual(response.code, 200)
        contentType = response.headers.getRawHeaders(b"content-type")[0]
        self.assertTrue(contentType.startswith(b"text/plain"), contentType)
        lines = body.splitlines()
        self.assertIn(b"gatehouse_approvals_pending 1.0", lines)
        self.assertIn(
            b'gatehouse_sessions_open{protocol="postgres",target="db"} 1.0', lines
        )

    @inlineCallbacks
    def test_no_metrics(self) -> Any:
        """
        Without metrics, C{/metrics} is 404.
        """
        g = self.gateway
        site = make_admin_site(g.broker, g.verifier, None, g.sessions, g.clock)
        response, data = yield Client(listen(self, site)).call(b"GET", "/metrics")
        self.assertEqual(response.code, 404)
        self.assertEqual(json.loads(data)["error"], "not-found")

    @inlineCallbacks
    def test_unknown(self) -> Any:
        """
        Unknown paths outside C{/api/} are JSON 404s.
        """
        for path in ("/", "/nope", "/health/more", "/apix"):
            self.assertError(
                (yield self.call(b"GET", path, who=None)), 404, "not-found"
            )

    @inlineCallbacks
    def test_method(self) -> Any:
        """
        Other methods than GET are 405, naming the allowed ones.
        """
        result = yield self.call(b"POST", "/health", who=None, body=b"")
        self.assertError(result, 405, "method-not-allowed")
        self.assertEqual(result[0].headers.getRawHeaders(b"allow"), [b"GET, HEAD"])
        result = yield self.call(b"DELETE", "/metrics", who=None)
        self.assertError(result, 405, "method-not-allowed")


class AuthenticationTests(AdminAPITestCase):
    """
    Everything under C{/api/} needs a valid bearer token; what is wrong
    with a token is never told.
    """

    def assertUnauthorized(self, result: tuple[Any, Any]) -> None:
        self.assertError(result, 401, "unauthorized")
        self.assertEqual(
            result[0].headers.getRawHeaders(b"www-authenticate"),
            [b'Bearer realm="gatehouse"'],
        )

    @inlineCallbacks
    def test_missing(self) -> Any:
        """
        No token: 401, with a challenge; also for paths that do not exist.
        """
        for path in ("/api/v1/approvals", "/api/v1/sessions", "/api/v1/nope", "/api"):
            self.assertUnauthorized((yield self.call(b"GET", path, who=None)))
        self.assertUnauthorized(
            (yield self.call(b"POST", "/api/v1/approvals/x/approve", who=None))
        )

    @inlineCallbacks
    def test_not_bearer(self) -> Any:
        """
        Another scheme, or an empty token, is 401.
        """
        for value in (b"Basic Ym9iOnNlY3JldA==", b"Bearer", b"Bearer   "):
            result = yield self.call(
                b"GET",
                "/api/v1/approvals",
                who=None,
                headers={b"authorization": value},
            )
            self.assertUnauthorized(result)

    @inlineCallbacks
    def test_invalid(self) -> Any:
        """
        A token the verifier rejects (wrong signature, expired) is 401 with
        the generic message only; the reason is logged.
        """
        forged = token("bob", ("dba",), secret=b"another secret of 32 bytes or more")
        expired = token("bob", ("dba",), now=NOW - 7200)
        for bad in (forged, expired, "not.a.jwt"):
            result = yield self.client.call(b"GET", "/api/v1/approvals", bad)
            response, data = result
            body = json.loads(data)
            self.assertUnauthorized((response, body))
            self.assertEqual(body["message"], CLIENT_MESSAGE)
        self.assertEqual(self.gateway.broker.pending(), [])

    @inlineCallbacks
    def test_unknown_path(self) -> Any:
        """
        Authenticated, an unknown path is 404 and a known one with the
        wrong method 405.
        """
        for path in ("/api/v1/nope", "/api/v2/approvals", "/api", "/api/v1"):
            self.assertError((yield self.call(b"GET", path)), 404, "not-found")
        result = yield self.call(b"DELETE", "/api/v1/approvals")
        self.assertError(result, 405, "method-not-allowed")
        result = yield self.call(b"GET", "/api/v1/approvals/apr-x/approve")
        self.assertError(result, 405, "method-not-allowed")
        self.assertEqual(result[0].headers.getRawHeaders(b"allow"), [b"POST"])
        result = yield self.call(b"POST", "/api/v1/approvals/apr-x", body=b"")
        self.assertError(result, 405, "method-not-allowed")


class AdminGroupTests(AdminAPITestCase):
    """
    With admin groups configured, identities outside them get 403, even
    with a valid token; C{/health} stays open.
    """

    @inlineCallbacks
    def test_outside_groups(self) -> Any:
        g = self.gateway
        site = make_admin_site(
            g.broker,
            g.verifier,
            None,
            g.sessions,
            g.clock,
            groups=frozenset({"approvers"}),
        )
        client = Client(listen(self, site))
        response, data = yield client.call(
            b"GET", "/api/v1/approvals", token("mallory", ("agents",))
        )
        self.assertEqual(response.code, 403)
        self.assertEqual(json.loads(data)["error"], "forbidden")
        self.assertIn("approvers", json.loads(data)["message"])
        response, _ = yield client.call(
            b"GET", "/api/v1/approvals", token("bob", ("approvers",))
        )
        self.assertEqual(response.code, 200)
        response, _ = yield client.call(b"GET", "/health")
        self.assertEqual(response.code, 200)


class ApprovalTests(AdminAPITestCase):
    """
    C{/api/v1/approvals}: list, show, approve, deny.
    """

    @inlineCallbacks
    def test_list(self) -> Any:
        """
        Pending requests are listed, oldest first, as the broker describes
        them; C{state=all} adds decided ones, C{state=STATE} filters.
        """
        first, _ = self.gateway.request()
        self.gateway.clock.advance(5)
        second, _ = self.gateway.request((DELETE,))
        self.gateway.clock.advance(5)
        third, _ = self.gateway.request()
        self.gateway.broker.deny(third.id, self.gateway.identity("bob"))
        response, body = yield self.call(b"GET", "/api/v1/approvals")
        self.assertEqual(response.code, 200)
        self.assertEqual([a["id"] for a in body["approvals"]], [first.id, second.id])
        self.assertEqual(
            body["approvals"][0], self.gateway.broker.get(first.id).as_json()
        )
        self.assertEqual(body["now"], NOW + 10)
        _, body = yield self.call(b"GET", "/api/v1/approvals?state=all")
        self.assertEqual(
            [a["id"] for a in body["approvals"]], [first.id, second.id, third.id]
        )
        _, body = yield self.call(b"GET", "/api/v1/approvals?state=denied")
        self.assertEqual([a["id"] for a in body["approvals"]], [third.id])
        _, body = yield self.call(b"GET", "/api/v1/approvals?state=all&limit=1")
        self.assertEqual([a["id"] for a in body["approvals"]], [first.id])
        self.assertError(
            (yield self.call(b"GET", "/api/v1/approvals?state=maybe")),
            400,
            "bad-request",
        )
        self.assertError(
            (yield self.call(b"GET", "/api/v1/approvals?limit=-1")), 400, "bad-request"
        )

    @inlineCallbacks
    def test_show(self) -> Any:
        """
        One request by id; an unknown id is 404.
        """
        request, _ = self.gateway.request((DROP, DELETE))
        response, body = yield self.call(b"GET", f"/api/v1/approvals/{request.id}")
        self.assertEqual(response.code, 200)
        self.assertEqual(body["approval"], request.as_json())
        self.assertEqual(
            [c["text"] for c in body["approval"]["commands"]], [DROP.text, DELETE.text]
        )
        self.assertEqual(body["approval"]["requester"]["subject"], "alice")
        result = yield self.call(b"GET", "/api/v1/approvals/apr-aaaaaaaaaaaa")
        self.assertError(result, 404, "not-found")

    @inlineCallbacks
    def test_approve(self) -> Any:
        """
        An approver's approval, with a comment, approves the request: the
        held command's verdict fires.
        """
        request, verdict = self.gateway.request()
        response, body = yield self.call(
            b"POST",
            f"/api/v1/approvals/{request.id}/approve",
            body=json.dumps({"comment": "looks fine"}).encode(),
        )
        self.assertEqual(response.code, 200)
        approval = body["approval"]
        self.assertEqual(approval["state"], "approved")
        self.assertEqual(
            [(v["subject"], v["comment"], v["approved"]) for v in approval["votes"]],
            [("bob", "looks fine", True)],
        )
        result = self.successResultOf(verdict)
        self.assertTrue(result.approved)
        self.assertEqual(self.gateway.broker.pending(), [])

    @inlineCallbacks
    def test_approve_without_body(self) -> Any:
        """
        The body is optional.
        """
        request, _ = self.gateway.request()
        response, body = yield self.call(
            b"POST", f"/api/v1/approvals/{request.id}/approve"
        )
        self.assertEqual((response.code, body["approval"]["state"]), (200, "approved"))
        self.assertEqual(body["approval"]["votes"][0]["comment"], "")

    @inlineCallbacks
    def test_deny(self) -> Any:
        """
        An approver's denial denies the request, with their comment.
        """
        request, verdict = self.gateway.request()
        response, body = yield self.call(
            b"POST",
            f"/api/v1/approvals/{request.id}/deny",
            who="carol",
            body=b'{"comment": "not on a Friday"}',
        )
        self.assertEqual(response.code, 200)
        self.assertEqual(body["approval"]["state"], "denied")
        self.assertIn("not on a Friday", body["approval"]["reason"])
        result = self.successResultOf(verdict)
        self.assertFalse(result.approved)

    @inlineCallbacks
    def test_two_approvals(self) -> Any:
        """
        With two approvals needed, the first leaves the request pending; the
        same approver again is 409; a second approver approves it.
        """
        request, verdict = self.gateway.request(decision=review(approvals=2))
        path = f"/api/v1/approvals/{request.id}/approve"
        response, body = yield self.call(b"POST", path)
        self.assertEqual((response.code, body["approval"]["state"]), (200, "pending"))
        self.assertEqual(len(body["approval"]["votes"]), 1)
        self.assertNoResult(verdict)
        self.assertError((yield self.call(b"POST", path)), 409, "already-approved")
        response, body = yield self.call(b"POST", path, who="carol")
        self.assertEqual((response.code, body["approval"]["state"]), (200, "approved"))
        self.assertTrue(self.successResultOf(verdict).approved)

    @inlineCallbacks
    def test_self_approval(self) -> Any:
        """
        The requester may not decide their own request, even in an approver
        group.
        """
        request, verdict = self.gateway.request(decision=review(approvers=("*",)))
        for action in ("approve", "deny"):
            result = yield self.call(
                b"POST", f"/api/v1/approvals/{request.id}/{action}", who="alice"
            )
            self.assertError(result, 403, "self-approval")
        self.assertNoResult(verdict)

    @inlineCallbacks
    def test_not_an_approver(self) -> Any:
        """
        Someone outside the approver groups is 403.
        """
        request, verdict = self.gateway.request()
        result = yield self.call(
            b"POST", f"/api/v1/approvals/{request.id}/approve", who="dave"
        )
        self.assertError(result, 403, "not-an-approver")
        self.assertNoResult(verdict)

    @inlineCallbacks
    def test_not_found(self) -> Any:
        """
        Voting on an unknown request is 404.
        """
        result = yield self.call(b"POST", "/api/v1/approvals/apr-unknown/deny")
        self.assertError(result, 404, "not-found")

    @inlineCallbacks
    def test_not_pending(self) -> Any:
        """
        Voting on a decided (or expired) request is 409.
        """
        request, _ = self.gateway.request()
        yield self.call(b"POST", f"/api/v1/approvals/{request.id}/deny")
        result = yield self.call(
            b"POST", f"/api/v1/approvals/{request.id}/approve", who="carol"
        )
        self.assertError(result, 409, "not-pending")
        expiring, verdict = self.gateway.request()
        self.gateway.clock.advance(301)
        self.assertEqual(self.successResultOf(verdict).request.state, "expired")
        result = yield self.call(b"POST", f"/api/v1/approvals/{expiring.id}/approve")
        self.assertError(result, 409, "not-pending")

    @inlineCallbacks
    def test_bad_body(self) -> Any:
        """
        A body that is not a JSON object, or a comment that is not a
        string, is 400; nothing is decided.
        """
        request, verdict = self.gateway.request()
        path = f"/api/v1/approvals/{request.id}/approve"
        for body, code in (
            (b"{", "bad-json"),
            (b"\xff\xfe", "bad-json"),
            (b"[1, 2]", "bad-json"),
            (b'"yes"', "bad-json"),
            (b'{"comment": 5}', "bad-request"),
        ):
            self.assertError((yield self.call(b"POST", path, body=body)), 400, code)
        self.assertNoResult(verdict)

    @inlineCallbacks
    def test_body_too_large(self) -> Any:
        """
        A body over L{MAX_BODY} bytes is 413, however it is sent.
        """
        request, verdict = self.gateway.request()
        path = f"/api/v1/approvals/{request.id}/approve"
        comment = "x" * MAX_BODY
        body = json.dumps({"comment": comment}).encode()
        self.assertError(
            (yield self.call(b"POST", path, body=body)), 413, "body-too-large"
        )
        self.assertNoResult(verdict)
        fits = json.dumps({"comment": "y" * (MAX_BODY - 20)}).encode()
        self.assertLessEqual(len(fits), MAX_BODY)
        response, _ = yield self.call(b"POST", path, body=fits)
        self.assertEqual(response.code, 200)

    @inlineCallbacks
    def test_no_broker(self) -> Any:
        """
        A gateway without approvals lists none and knows no request.
        """
        g = self.gateway
        site = make_admin_site(None, g.verifier, g.metrics, g.sessions, g.clock)
        client = Client(listen(self, site))
        response, data = yield client.call(b"GET", "/api/v1/approvals", g.tokens["bob"])
        self.assertEqual(json.loads(data)["approvals"], [])
        response, data = yield client.call(
            b"POST", "/api/v1/approvals/apr-x/approve", g.tokens["bob"]
        )
        self.assertEqual(response.code, 404)
        response, data = yield client.call(b"GET", "/health")
        self.assertEqual(json.loads(data)["approvals_pending"], 0)


class SessionTests(AdminAPITestCase):
    """
    C{/api/v1/sessions}: open sessions from the hub, others from the index.
    """

    @inlineCallbacks
    def setUp(self) -> Any:
        yield super().setUp()
        g = self.gateway
        self.clock = g.clock
        g.clock.advance(1)
        self.anonymous = g.hub.open("postgres", "pg-main", "127.0.0.1:40001")
        g.clock.advance(1)
        self.bob = g.hub.open("ssh", "ssh-main", "127.0.0.1:40002")
        yield self.bob.authenticate(g.tokens["bob"], "bastion")
        g.clock.advance(1)
        self.ended = g.hub.open("postgres", "pg-main", "127.0.0.1:40003")
        yield self.ended.authenticate(g.tokens["carol"], "db")
        yield self.ended.close("client quit")

    def ids(self, body: dict[str, Any]) -> list[str]:
        return [s["id"] for s in body["sessions"]]

    def test_interface(self) -> None:
        """
        L{HubSessionDirectory} provides L{ISessionDirectory}.
        """
        self.assertTrue(verifyObject(ISessionDirectory, self.gateway.sessions))

    @inlineCallbacks
    def test_open(self) -> Any:
        """
        C{open=1} lists the open sessions, newest first, with identity,
        target and byte counts; filters apply.
        """
        g = self.gateway
        response, body = yield self.call(b"GET", "/api/v1/sessions?open=1")
        self.assertEqual(response.code, 200)
        self.assertEqual(
            self.ids(body),
            [str(self.bob.id), str(self.anonymous.id), str(g.session.id)],
        )
        bob = body["sessions"][0]
        self.assertEqual(
            {k: bob[k] for k in ("protocol", "target", "subject", "display_name")},
            {
                "protocol": "ssh",
                "target": "bastion",
                "subject": "bob",
                "display_name": "Bob",
            },
        )
        self.assertEqual(bob["groups"], ["dba"])
        self.assertTrue(bob["open"])
        self.assertEqual(bob["client_address"], "127.0.0.1:40002")
        self.assertEqual(body["sessions"][1]["subject"], "")
        _, body = yield self.call(b"GET", "/api/v1/sessions?open=1&protocol=postgres")
        self.assertEqual(self.ids(body), [str(self.anonymous.id), str(g.session.id)])
        # The subject exactly; a part of the display name with name=.
        _, body = yield self.call(b"GET", "/api/v1/sessions?open=1&subject=ALI")
        self.assertEqual(self.ids(body), [])
        _, body = yield self.call(b"GET", "/api/v1/sessions?open=1&subject=alic")
        self.assertEqual(self.ids(body), [])
        _, body = yield self.call(b"GET", "/api/v1/sessions?open=1&subject=alice")
        self.assertEqual(self.ids(body), [str(g.session.id)])
        _, body = yield self.call(b"GET", "/api/v1/sessions?open=1&name=ALI")
        self.assertEqual(self.ids(body), [str(g.session.id)])
        _, body = yield self.call(b"GET", "/api/v1/sessions?open=1&target=bastion")
        self.assertEqual(self.ids(body), [str(self.bob.id)])
        _, body = yield self.call(b"GET", "/api/v1/sessions?open=1&limit=1")
        self.assertEqual(self.ids(body), [str(self.bob.id)])

    @inlineCallbacks
    def test_index(self) -> Any:
        """
        Without C{open=1} the index is searched: ended sessions too, newest
        first.  A session whose client has not authenticated yet has no
        index row (nothing is written before a token is verified).
        """
        yield self.gateway.flush()
        response, body = yield self.call(b"GET", "/api/v1/sessions")
        self.assertEqual(response.code, 200)
        self.assertEqual(
            self.ids(body),
            [
                str(self.ended.id),
                str(self.bob.id),
                str(self.gateway.session.id),
            ],
        )
        ended = body["sessions"][0]
        self.assertFalse(ended["open"])
        self.assertEqual(
            (ended["subject"], ended["target"], ended["close_reason"]),
            ("carol", "db", "client quit"),
        )
        _, body = yield self.call(b"GET", "/api/v1/sessions?subject=carol&target=db")
        self.assertEqual(self.ids(body), [str(self.ended.id)])
        _, body = yield self.call(b"GET", "/api/v1/sessions?subject=caro")
        self.assertEqual(self.ids(body), [])
        _, body = yield self.call(b"GET", "/api/v1/sessions?name=AROL")
        self.assertEqual(self.ids(body), [str(self.ended.id)])
        _, body = yield self.call(b"GET", "/api/v1/sessions?protocol=ssh")
        self.assertEqual(self.ids(body), [str(self.bob.id)])
        _, body = yield self.call(b"GET", "/api/v1/sessions?limit=2")
        self.assertEqual(self.ids(body), [str(self.ended.id), str(self.bob.id)])

    @inlineCallbacks
    def test_bad_arguments(self) -> Any:
        """
        A limit that is not a positive count, or an C{open} that is not a
        flag, is 400.
        """
        for query in ("limit=0", "limit=ten", "open=perhaps"):
            result = yield self.call(b"GET", f"/api/v1/sessions?{query}")
            self.assertError(result, 400, "bad-request")

    @inlineCallbacks
    def test_unknown_parameters(self) -> Any:
        """
        A parameter an endpoint does not take is refused with 400 naming
        it, never ignored: C{?identity=dave} does not list everyone's
        sessions.  So is a parameter given twice, or an empty filter.
        """
        g = self.gateway
        request, _ = g.request()
        cases = [
            (b"GET", "/api/v1/sessions?identity=dave", "identity"),
            (b"GET", "/api/v1/sessions?open=1&identity=dave", "identity"),
            (b"GET", "/api/v1/sessions?subject=a&subject=b", "subject"),
            (b"GET", "/api/v1/sessions?open=1&subject=", "subject"),
            (b"GET", "/api/v1/sessions?name=", "name"),
            (b"GET", "/api/v1/approvals?subject=alice", "subject"),
            (b"GET", "/api/v1/approvals?state=all&state=pending", "state"),
            (b"GET", f"/api/v1/approvals/{request.id}?verbose=1", "verbose"),
            (b"POST", f"/api/v1/approvals/{request.id}/deny?force=1", "force"),
            (b"POST", f"/api/v1/approvals/{request.id}/approve?as=carol", "as"),
        ]
        for method, path, parameter in cases:
            result = yield self.call(method, path)
            self.assertError(result, 400, "bad-parameter")
            body = result[1]
            self.assertEqual(body["parameter"], parameter, path)
            self.assertIn(repr(parameter), body["message"])
        _, body = yield self.call(b"GET", "/api/v1/sessions?identity=dave")
        self.assertEqual(
            body["message"],
            "unknown query parameter 'identity' (this endpoint takes open,"
            " subject, name, target, protocol, limit)",
        )
        # Nothing was voted.
        self.assertEqual(g.broker.get(request.id).state, "pending")
        self.assertEqual(g.broker.get(request.id).votes, ())

    @inlineCallbacks
    def test_index_unreadable(self) -> Any:
        """
        An index that cannot be read is 503, without its path.
        """
        self.gateway.index.path = self.mktemp()
        response, body = yield self.call(b"GET", "/api/v1/sessions")
        self.assertError((response, body), 503, "index-unavailable")
        self.assertNotIn(self.gateway.index.path, body["message"])
        self.flushLoggedErrors()


class NoIndexTests(AdminAPITestCase):
    """
    A gateway without a session index only knows its open sessions.
    """

    index = False

    @inlineCallbacks
    def test_no_index(self) -> Any:
        result = yield self.call(b"GET", "/api/v1/sessions")
        self.assertError(result, 503, "no-index")
        _, body = yield self.call(b"GET", "/api/v1/sessions?open=yes")
        self.assertEqual(
            [s["id"] for s in body["sessions"]], [str(self.gateway.session.id)]
        )


@implementer(ISessionDirectory)
class SlowDirectory:
    """Sessions that take until the test says so to find."""

    def __init__(self) -> None:
        self.queries: list[Deferred] = []

    def open_sessions(self) -> list[dict[str, Any]]:
        return []

    def query(self, filters: Any, limit: int) -> Deferred:
        d: Deferred = Deferred()
        self.queries.append(d)
        return d


class _Hangup(Protocol):
    def connectionMade(self) -> None:
        self.factory.connected.callback(self)

    def connectionLost(self, reason: Any = None) -> None:
        self.factory.lost.callback(None)


class DisconnectTests(TestCase):
    """
    A client that goes away before its answer is ready causes no error.
    """

    @inlineCallbacks
    def test_disconnect(self) -> Any:
        gateway = Gateway(self.mktemp(), index=False)
        directory = SlowDirectory()
        site = make_admin_site(
            gateway.broker, gateway.verifier, gateway.metrics, directory, gateway.clock
        )
        url = listen(self, site)
        factory = ClientFactory.forProtocol(_Hangup)
        factory.connected = Deferred()
        factory.lost = Deferred()
        reactor.connectTCP("127.0.0.1", int(url.rsplit(":", 1)[1]), factory)
        client = yield factory.connected
        client.transport.write(
            b"GET /api/v1/sessions HTTP/1.1\r\nHost: x\r\n"
            b"Authorization: Bearer " + gateway.tokens["bob"].encode() + b"\r\n\r\n"
        )
        while not directory.queries:
            yield deferLater(reactor, 0.01)
        client.transport.loseConnection()
        yield factory.lost
        yield deferLater(reactor, 0.05)
        directory.queries[0].callback([{"id": "late"}])
        yield deferLater(reactor, 0)


class ServiceTests(TestCase):
    """
    L{make_admin_service} listens on the configured address and port, with
    TLS when configured.
    """

    def site(self) -> Any:
        gateway = Gateway(self.mktemp(), index=False)
        return make_admin_site(
            gateway.broker,
            gateway.verifier,
            gateway.metrics,
            gateway.sessions,
            gateway.clock,
        )

    @inlineCallbacks
    def test_tcp(self) -> Any:
        """
        Port 0 picks a free port; stopping stops listening.
        """
        service = make_admin_service(AdminConfig("127.0.0.1", 0), self.site(), reactor)
        self.assertEqual(service.name, "admin")
        service.startService()
        self.addCleanup(service.stopService)
        url = service.url
        self.assertTrue(url.startswith("http://127.0.0.1:"), url)
        _, data = yield Client(url).call(b"GET", "/health")
        self.assertEqual(json.loads(data)["status"], "ok")
        yield service.stopService()
        self.assertIsNone(service.url)

    @inlineCallbacks
    def test_tls(self) -> Any:
        """
        With C{tls}, the API is served over TLS with the configured
        certificate.
        """
        ca = make_ca(self.mktemp())
        certificate, key = ca.issue("admin")
        config = AdminConfig("127.0.0.1", 0, TLSConfig(str(certificate), str(key)))
        service = make_admin_service(config, self.site(), reactor)
        service.startService()
        self.addCleanup(service.stopService)
        self.assertTrue(service.url.startswith("https://127.0.0.1:"), service.url)
        trust = Certificate.loadPEM(ca.cert_path.read_bytes())
        agent = Agent(reactor, BrowserLikePolicyForHTTPS(trustRoot=trust))
        _, data = yield Client(service.url, agent).call(b"GET", "/health")
        self.assertEqual(json.loads(data)["status"], "ok")
