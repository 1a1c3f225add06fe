"""
Tests for L{gatehouse.policy.approval}.

The broker runs against a L{task.Clock}.  Webhook deliveries go through the
real reactor to a twisted.web site on 127.0.0.1, with short backoffs.
"""

from __future__ import annotations

import json
import re
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock, deferLater
from twisted.logger import formatEvent, globalLogPublisher
from twisted.protocols.policies import WrappingFactory
from twisted.trial.unittest import SynchronousTestCase, TestCase
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Site
from zope.interface.verify import verifyObject

from gatehouse.identity import Identity
from gatehouse.policy import Command, Decision
from gatehouse.policy.approval import (
    Approval,
    ApprovalBroker,
    ApprovalError,
    ApprovalRequest,
    IApprovalNotifier,
    LogNotifier,
    Verdict,
    WebhookNotifier,
    instructions,
    slackMessage,
)

NOW = 1_700_000_000.0
ISSUER = "https://idp.example.com/realms/ops"
ALICE = Identity("alice", "Alice", ("dev", "dba"), ISSUER, None)
BOB = Identity("bob", "Bob", ("dba",), ISSUER, None)
CAROL = Identity("carol", "Carol", ("sre", "dba"), ISSUER, None)
MALLORY = Identity("mallory", "Mallory", ("dev",), ISSUER, None)
DROP = Command("postgres", "DropStmt", "DROP TABLE accounts", ("public.accounts",))
ID = re.compile(r"apr-[a-z2-7]{12}")


def review(
    approvers: tuple[str, ...] = ("dba",), approvals: int = 1, timeout: float = 300.0
) -> Decision:
    return Decision(
        "review", "no-drops", approvers=approvers, approvals=approvals, timeout=timeout
    )


def captureLog(testCase: Any) -> list[dict]:
    events: list[dict] = []
    globalLogPublisher.addObserver(events.append)
    testCase.addCleanup(globalLogPublisher.removeObserver, events.append)
    return events


def messages(events: list[dict]) -> list[str]:
    return [formatEvent(event) for event in events]


class Asked:
    """
    A request made through a broker, and the verdicts its Deferred gave.
    """

    def __init__(self, broker: ApprovalBroker, decision: Decision, **kw: Any) -> None:
        arguments = dict(
            session_id="session-1",
            protocol="postgres",
            target="db1",
            requester=ALICE,
            commands=[DROP],
            decision=decision,
        )
        arguments.update(kw)
        self.request, self.deferred = broker.request(**arguments)
        self.id = self.request.id
        self.verdicts: list[Verdict] = []
        self.deferred.addCallback(self.verdicts.append)


class ApprovalBrokerTests(SynchronousTestCase):
    """
    Requests, votes, timeouts and observers.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(NOW)
        self.notified: list[ApprovalRequest] = []
        self.broker = ApprovalBroker(self.clock, [self])
        self.events: list[tuple[str, ApprovalRequest, Approval | None]] = []
        self.broker.observe(lambda *event: self.events.append(event))

    def notify(self, request: ApprovalRequest) -> None:
        self.notified.append(request)

    def ask(self, **kw: Any) -> Asked:
        return Asked(self.broker, review(**kw))

    def test_request(self) -> None:
        """
        A request starts pending, with an unguessable typeable id, and is
        announced to the notifiers.
        """
        asked = self.ask(approvals=2, timeout=60)
        request = asked.request
        self.assertRegex(request.id, ID.pattern + "$")
        self.assertEqual(
            (request.state, request.created, request.expires),
            ("pending", NOW, NOW + 60),
        )
        self.assertEqual(request.commands, (DROP,))
        self.assertEqual(request.approvers, ("dba",))
        self.assertEqual(request.approvals_required, 2)
        self.assertEqual((request.session_id, request.target), ("session-1", "db1"))
        self.assertEqual(request.requester, ALICE)
        self.assertEqual(request.rule, "no-drops")
        self.assertEqual(self.broker.pending(), [request])
        self.assertIs(self.broker.get(request.id), request)
        self.assertEqual(self.notified, [request])
        self.assertEqual(asked.verdicts, [])

    def test_idsDiffer(self) -> None:
        """
        Every request gets its own id.
        """
        ids = {self.ask().id for _ in range(200)}
        self.assertEqual(len(ids), 200)

    def test_pendingOldestFirst(self) -> None:
        """
        L{ApprovalBroker.pending} lists requests oldest first.
        """
        first = self.ask()
        self.clock.advance(1)
        second = self.ask()
        self.assertEqual([r.id for r in self.broker.pending()], [first.id, second.id])

    def test_approveOne(self) -> None:
        """
        One approval from a member of an approver group is enough when one
        is required: the Deferred fires with an approving verdict and the
        timeout is cancelled.
        """
        asked = self.ask()
        self.clock.advance(5)
        final = self.broker.approve(asked.id, BOB, "looks fine")
        self.assertEqual(final.state, "approved")
        self.assertEqual(final.reason, "approved by Bob")
        self.assertEqual(
            final.votes,
            (Approval("bob", "Bob", "looks fine", NOW + 5, True, ISSUER),),
        )
        self.assertEqual(asked.verdicts, [Verdict(True, "approved by Bob", final)])
        self.assertEqual(self.broker.pending(), [])
        self.assertEqual(self.broker.recent(), [final])
        self.assertEqual(self.broker.get(asked.id), final)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_approveTwo(self) -> None:
        """
        When two approvals are required, the first keeps the request
        pending, the same approver cannot approve again, and a second
        approver approves it.
        """
        asked = self.ask(approvals=2)
        partial = self.broker.approve(asked.id, BOB)
        self.assertEqual(partial.state, "pending")
        self.assertEqual(len(partial.votes), 1)
        self.assertEqual(self.broker.get(asked.id), partial)
        self.assertEqual(asked.verdicts, [])
        error = self.assertRaises(ApprovalError, self.broker.approve, asked.id, BOB)
        self.assertEqual(error.code, "already-approved")
        self.assertEqual(len(self.broker.get(asked.id).votes), 1)
        final = self.broker.approve(asked.id, CAROL)
        self.assertEqual(final.state, "approved")
        self.assertEqual([v.subject for v in final.votes], ["bob", "carol"])
        self.assertEqual(asked.verdicts[0].approved, True)
        self.assertEqual(asked.verdicts[0].reason, "approved by Bob, Carol")

    def test_approversAreSubjectAndIssuer(self) -> None:
        """
        The same subject from another issuer is another person: neither the
        requester nor an approver who already voted.
        """
        asked = self.ask(approvals=2)
        self.broker.approve(
            asked.id, Identity("alice", "Alice", ("dba",), "other", None)
        )
        final = self.broker.approve(
            asked.id, Identity("alice", "A2", ("dba",), "x", None)
        )
        self.assertEqual(final.state, "approved")

    def test_deny(self) -> None:
        """
        One eligible approver's deny ends the request, even after other
        approvals, and the reason carries the comment.
        """
        asked = self.ask(approvals=2)
        self.broker.approve(asked.id, BOB)
        final = self.broker.deny(asked.id, CAROL, "not during business hours")
        self.assertEqual(final.state, "denied")
        self.assertEqual(final.reason, "denied by Carol: not during business hours")
        self.assertEqual([v.approved for v in final.votes], [True, False])
        self.assertEqual(
            asked.verdicts,
            [Verdict(False, "denied by Carol: not during business hours", final)],
        )
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_denyWithoutComment(self) -> None:
        """
        A deny without a comment names the denier.
        """
        asked = self.ask()
        self.assertEqual(self.broker.deny(asked.id, BOB).reason, "denied by Bob")

    def test_timeout(self) -> None:
        """
        A request nobody decides expires at its timeout, denied.
        """
        asked = self.ask()
        self.clock.advance(299.9)
        self.assertEqual(asked.verdicts, [])
        self.clock.advance(0.1)
        [verdict] = asked.verdicts
        self.assertFalse(verdict.approved)
        self.assertEqual(verdict.reason, "timed out after 5m")
        self.assertEqual(verdict.request.state, "expired")
        self.assertEqual(self.broker.pending(), [])
        self.assertEqual(self.broker.recent(), [verdict.request])

    def test_timeoutReason(self) -> None:
        """
        The timeout is written the way configuration files write durations.
        """
        for timeout, text in [(90, "1m30s"), (3600, "1h"), (2.5, "2.5s")]:
            asked = self.ask(timeout=timeout)
            self.clock.advance(timeout)
            self.assertEqual(asked.verdicts[0].reason, f"timed out after {text}")

    def test_selfApproval(self) -> None:
        """
        The requester can neither approve nor deny their own request, even
        as a member of an approver group.
        """
        asked = self.ask(approvers=("*",))
        for method in (self.broker.approve, self.broker.deny):
            error = self.assertRaises(ApprovalError, method, asked.id, ALICE)
            self.assertEqual(error.code, "self-approval")
        self.assertEqual(self.broker.get(asked.id).votes, ())

    def test_notAnApprover(self) -> None:
        """
        Someone outside every approver group can neither approve nor deny.
        """
        asked = self.ask(approvers=("dba", "sre"))
        for method in (self.broker.approve, self.broker.deny):
            error = self.assertRaises(ApprovalError, method, asked.id, MALLORY)
            self.assertEqual(error.code, "not-an-approver")
            self.assertIn("dba, sre", error.message)
        self.assertEqual(self.broker.get(asked.id).state, "pending")

    def test_anyone(self) -> None:
        """
        C{"*"} lets any identity but the requester decide.
        """
        asked = self.ask(approvers=("*",))
        nobody = Identity("nobody", "Nobody", (), ISSUER, None)
        self.assertEqual(self.broker.approve(asked.id, nobody).state, "approved")

    def test_notFound(self) -> None:
        """
        An unknown id is C{not-found}.
        """
        for method in (self.broker.approve, self.broker.deny):
            error = self.assertRaises(ApprovalError, method, "apr-aaaaaaaaaaaa", BOB)
            self.assertEqual(error.code, "not-found")
            self.assertEqual(
                str(error), "there is no approval request apr-aaaaaaaaaaaa"
            )

    def test_notPending(self) -> None:
        """
        A decided request cannot be approved or denied again.
        """
        asked = self.ask()
        self.broker.deny(asked.id, BOB)
        for method in (self.broker.approve, self.broker.deny):
            error = self.assertRaises(ApprovalError, method, asked.id, CAROL)
            self.assertEqual(error.code, "not-pending")
            self.assertIn("denied", error.message)

    def test_cancel(self) -> None:
        """
        Cancelling (the session went away) ends the request with the reason
        given; cancelling again, or an unknown id, does nothing.
        """
        asked = self.ask()
        self.broker.cancel(asked.id, "session ended")
        [verdict] = asked.verdicts
        self.assertEqual((verdict.approved, verdict.reason), (False, "session ended"))
        self.assertEqual(verdict.request.state, "cancelled")
        self.broker.cancel(asked.id, "again")
        self.broker.cancel("apr-aaaaaaaaaaaa", "unknown")
        self.assertEqual(len(asked.verdicts), 1)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_cancelDeferred(self) -> None:
        """
        Cancelling the Deferred cancels the request.
        """
        asked = self.ask()
        asked.deferred.cancel()
        self.assertEqual(self.broker.get(asked.id).state, "cancelled")
        self.assertEqual(asked.verdicts[0].approved, False)

    def test_denyAll(self) -> None:
        """
        L{ApprovalBroker.deny_all} denies every pending request.
        """
        first, second = self.ask(), self.ask()
        decided = self.ask()
        self.broker.approve(decided.id, BOB)
        self.broker.deny_all("gateway stopping")
        for asked in (first, second):
            [verdict] = asked.verdicts
            self.assertEqual(
                (verdict.approved, verdict.reason, verdict.request.state),
                (False, "gateway stopping", "denied"),
            )
        self.assertEqual(decided.verdicts[0].approved, True)
        self.assertEqual(self.broker.pending(), [])
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_events(self) -> None:
        """
        Observers see every event in order: a vote that decides the request
        comes with the request in its final state, then C{"decided"}.
        """
        asked = self.ask(approvals=2)
        self.broker.approve(asked.id, BOB)
        self.broker.approve(asked.id, CAROL)
        other = self.ask()
        self.broker.deny(other.id, BOB, "no")
        expired = self.ask()
        self.clock.advance(300)
        summary = [
            (event, request.id, request.state, vote and (vote.subject, vote.approved))
            for event, request, vote in self.events
        ]
        self.assertEqual(
            summary,
            [
                ("requested", asked.id, "pending", None),
                ("approved", asked.id, "pending", ("bob", True)),
                ("approved", asked.id, "approved", ("carol", True)),
                ("decided", asked.id, "approved", None),
                ("requested", other.id, "pending", None),
                ("denied", other.id, "denied", ("bob", False)),
                ("decided", other.id, "denied", None),
                ("requested", expired.id, "pending", None),
                ("decided", expired.id, "expired", None),
            ],
        )

    def test_observerFails(self) -> None:
        """
        An observer that raises is logged and does not stop the others, the
        broker or the verdict.
        """
        broker = ApprovalBroker(self.clock)
        seen: list[str] = []

        def broken(event: str, request: ApprovalRequest, vote: object) -> None:
            raise ZeroDivisionError(event)

        broker.observe(broken)
        broker.observe(lambda event, request, vote: seen.append(event))
        asked = Asked(broker, review())
        broker.approve(asked.id, BOB)
        self.assertEqual(seen, ["requested", "approved", "decided"])
        self.assertEqual(asked.verdicts[0].approved, True)
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 3)

    def test_notifierFails(self) -> None:
        """
        A notifier that raises is logged; the request stands.
        """

        class Broken:
            def notify(self, request: ApprovalRequest) -> None:
                raise ZeroDivisionError()

        broker = ApprovalBroker(self.clock, [Broken(), self])
        asked = Asked(broker, review())
        self.assertEqual(self.notified, [asked.request])
        self.assertEqual(broker.pending(), [asked.request])
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 1)

    def test_firesOnce(self) -> None:
        """
        Whatever happens after the decision, the Deferred fired once.
        """
        asked = self.ask()
        self.broker.approve(asked.id, BOB)
        self.broker.cancel(asked.id, "late")
        self.broker.deny_all("gateway stopping")
        self.clock.advance(1000)
        self.assertEqual(len(asked.verdicts), 1)
        self.assertEqual(asked.verdicts[0].approved, True)
        self.assertEqual([e for e, _, _ in self.events].count("decided"), 1)

    def test_observerDecidesReentrantly(self) -> None:
        """
        An observer may decide the request it is told about; the Deferred
        still fires once and the decided request is not announced.
        """
        broker = ApprovalBroker(self.clock, [self])

        def stop(event: str, request: ApprovalRequest, vote: object) -> None:
            broker.cancel(request.id, "stop")

        broker.observe(stop)
        asked = Asked(broker, review())
        self.assertEqual(asked.request.state, "cancelled")
        self.assertEqual(len(asked.verdicts), 1)
        self.assertEqual(self.notified, [])

    def test_recentBounded(self) -> None:
        """
        Only the most recent decided requests are kept, newest first.
        """
        broker = ApprovalBroker(self.clock, recent_limit=3)
        ids = []
        for _ in range(5):
            asked = Asked(broker, review())
            broker.cancel(asked.id, "gone")
            ids.append(asked.id)
        self.assertEqual([r.id for r in broker.recent()], ids[:1:-1])
        self.assertEqual([r.id for r in broker.recent(limit=2)], ids[:2:-1])
        self.assertIsNone(broker.get(ids[0]))
        self.assertRaises(ApprovalError, broker.approve, ids[0], BOB)

    def test_instructions(self) -> None:
        """
        Instructions say how to approve and deny, with the admin URL when
        the broker knows it.
        """
        asked = self.ask()
        self.assertEqual(
            self.broker.instructions(asked.request),
            f"approve with: gatehouse approvals approve {asked.id} "
            f"(or deny with: gatehouse approvals deny {asked.id})",
        )
        broker = ApprovalBroker(self.clock, admin_url="https://gw:9443")
        self.assertEqual(
            broker.instructions(asked.request),
            f"approve with: gatehouse approvals approve --url https://gw:9443 "
            f"{asked.id} (or deny with: gatehouse approvals deny --url "
            f"https://gw:9443 {asked.id})",
        )

    def test_asJSON(self) -> None:
        """
        L{ApprovalRequest.as_json} is JSON-ready and complete.
        """
        asked = self.ask()
        final = self.broker.approve(asked.id, BOB, "ok")
        data = json.loads(json.dumps(final.as_json()))
        self.assertEqual(
            data,
            {
                "id": asked.id,
                "session_id": "session-1",
                "protocol": "postgres",
                "target": "db1",
                "requester": {
                    "subject": "alice",
                    "name": "Alice",
                    "groups": ["dev", "dba"],
                    "issuer": ISSUER,
                },
                "commands": [
                    {
                        "kind": "DropStmt",
                        "text": "DROP TABLE accounts",
                        "objects": ["public.accounts"],
                    }
                ],
                "rule": "no-drops",
                "approvers": ["dba"],
                "approvals_required": 1,
                "created": NOW,
                "expires": NOW + 300,
                "state": "approved",
                "votes": [
                    {
                        "subject": "bob",
                        "name": "Bob",
                        "issuer": ISSUER,
                        "comment": "ok",
                        "at": NOW,
                        "approved": True,
                    }
                ],
                "reason": "approved by Bob",
            },
        )


def sampleRequest(commands: tuple[Command, ...] = (DROP,)) -> ApprovalRequest:
    return ApprovalRequest(
        id="apr-abcdefgh2345",
        session_id="session-1",
        protocol="postgres",
        target="db1",
        requester=ALICE,
        commands=commands,
        rule="no-drops",
        approvers=("dba",),
        approvals_required=1,
        created=NOW,
        expires=NOW + 300,
        state="pending",
    )


def texts(message: dict) -> str:
    """Every text in a Slack message, joined."""
    found: list[str] = []

    def walk(value: object) -> None:
        if isinstance(value, dict):
            for key, item in value.items():
                if key == "text" and isinstance(item, str):
                    found.append(item)
                else:
                    walk(item)
        elif isinstance(value, list):
            for item in value:
                walk(item)

    walk(message)
    return "\n".join(found)


class SlackMessageTests(SynchronousTestCase):
    """
    The webhook body.
    """

    def test_shape(self) -> None:
        """
        The message has a fallback C{text} and C{blocks} naming everything
        an approver needs.
        """
        message = slackMessage(sampleRequest(), "https://gw:9443")
        self.assertIsInstance(message["text"], str)
        self.assertIn("apr-abcdefgh2345", message["text"])
        for block in message["blocks"]:
            self.assertIn(block["type"], ("header", "section", "context"))
        everything = texts(message)
        for needle in [
            "apr-abcdefgh2345",
            "Alice (alice)",
            "db1",
            "postgres",
            "no-drops",
            "DROP TABLE accounts",
            "2023-11-14 22:18:20 UTC (in 5m)",
            "gatehouse approvals approve --url https://gw:9443 apr-abcdefgh2345",
            "gatehouse approvals deny --url https://gw:9443 apr-abcdefgh2345",
        ]:
            self.assertIn(needle, everything)

    def test_escaped(self) -> None:
        """
        Slack's control characters in statements are escaped.
        """
        command = Command("postgres", "SelectStmt", "SELECT 1 < 2 & <!channel>")
        everything = texts(slackMessage(sampleRequest((command,))))
        self.assertIn("SELECT 1 &lt; 2 &amp; &lt;!channel&gt;", everything)
        self.assertNotIn("<!channel>", everything)

    def test_truncated(self) -> None:
        """
        Long statements are cut short, and only the first five statements
        are shown.
        """
        commands = tuple(
            Command("postgres", "InsertStmt", f"INSERT {i} " + "x" * 5000)
            for i in range(7)
        )
        message = slackMessage(sampleRequest(commands))
        statements = [
            block["text"]["text"]
            for block in message["blocks"]
            if block["type"] == "section" and block["text"]["text"].startswith("```")
        ]
        self.assertEqual(len(statements), 5)
        for statement in statements:
            self.assertLessEqual(len(statement), 1006)
            self.assertTrue(statement.endswith("…```"))
        self.assertIn("and 2 more", texts(message))
        self.assertLess(len(json.dumps(message)), 12000)


class LogNotifierTests(SynchronousTestCase):
    """
    L{LogNotifier} logs.
    """

    def test_logs(self) -> None:
        """
        The log line names the request and says how to decide it.
        """
        events = captureLog(self)
        notifier = LogNotifier("https://gw:9443")
        self.assertTrue(verifyObject(IApprovalNotifier, notifier))
        notifier.notify(sampleRequest())
        [line] = [m for m in messages(events) if "apr-abcdefgh2345" in m]
        self.assertIn("Alice (alice)", line)
        self.assertIn("DROP TABLE accounts", line)
        self.assertIn(
            instructions(sampleRequest(), "https://gw:9443"),
            line,
        )


class Hook(Resource):
    """
    A webhook receiver that records POSTs and answers with the status codes
    it is given, then 200.
    """

    isLeaf = True

    def __init__(self, codes: tuple[int, ...] = (), hang: bool = False) -> None:
        super().__init__()
        self.codes = list(codes)
        self.hang = hang
        self.posts: list[tuple[Any, bytes]] = []
        self.received: Deferred[None] = Deferred()

    def render_POST(self, request: Any) -> Any:
        self.posts.append((request.requestHeaders, request.content.read()))
        if not self.received.called:
            self.received.callback(None)
        if self.hang:
            request.notifyFinish().addErrback(lambda _: None)
            return NOT_DONE_YET
        code = self.codes.pop(0) if self.codes else 200
        request.setResponseCode(code)
        return b"ok" if code == 200 else b"try again later"


class Server:
    """
    Serve a resource on 127.0.0.1 until the end of a test.
    """

    def __init__(self, testCase: TestCase, resource: Resource) -> None:
        self.factory = WrappingFactory(Site(resource))
        self.port = reactor.listenTCP(0, self.factory, interface="127.0.0.1")
        self.url = f"http://127.0.0.1:{self.port.getHost().port}/hooks/approvals"
        testCase.addCleanup(self.stop)

    async def stop(self) -> None:
        await self.port.stopListening()
        for protocol in list(self.factory.protocols):
            protocol.transport.abortConnection()
        for _ in range(1000):
            if not self.factory.protocols:
                break
            await deferLater(reactor, 0.001)


class WebhookNotifierTests(TestCase):
    """
    L{WebhookNotifier} against a real HTTP server.
    """

    def notifier(self, url: str, **kw: Any) -> WebhookNotifier:
        arguments: dict[str, Any] = dict(backoff=0.01, max_backoff=0.02, timeout=5)
        arguments.update(kw)
        notifier = WebhookNotifier(reactor, url, **arguments)
        self.addCleanup(notifier.stop)
        return notifier

    async def test_retries(self) -> None:
        """
        Server errors are retried with exponential backoff until the
        message is delivered: a Slack-compatible JSON body with the
        request's details and how to decide it.
        """
        events = captureLog(self)
        hook = Hook((500, 503, 200))
        server = Server(self, hook)
        notifier = self.notifier(
            server.url,
            retries=3,
            headers={"Authorization": "Bearer s3cret"},
            admin_url="https://gw:9443",
        )
        self.assertTrue(verifyObject(IApprovalNotifier, notifier))
        delivered = await notifier.deliver(sampleRequest())
        self.assertTrue(delivered)
        self.assertEqual(len(hook.posts), 3)
        retries = [e["delay"] for e in events if "Retrying" in e.get("log_format", "")]
        self.assertEqual(retries, [0.01, 0.02])
        headers, body = hook.posts[-1]
        self.assertEqual(headers.getRawHeaders("content-type"), ["application/json"])
        self.assertEqual(headers.getRawHeaders("authorization"), ["Bearer s3cret"])
        message = json.loads(body)
        self.assertEqual(message, slackMessage(sampleRequest(), "https://gw:9443"))
        everything = texts(message)
        for needle in [
            "apr-abcdefgh2345",
            "alice",
            "db1",
            "DROP TABLE accounts",
            "gatehouse approvals approve --url https://gw:9443 apr-abcdefgh2345",
        ]:
            self.assertIn(needle, everything)
        self.assertFalse(
            [
                formatEvent(e)
                for e in events
                if e.get("log_namespace", "").startswith("gatehouse.")
                and "/hooks/approvals" in formatEvent(e)
            ],
            "the webhook URL (a secret) was logged",
        )

    async def test_tooManyRequests(self) -> None:
        """
        429 is retried.
        """
        hook = Hook((429,))
        server = Server(self, hook)
        self.assertTrue(await self.notifier(server.url).deliver(sampleRequest()))
        self.assertEqual(len(hook.posts), 2)

    async def test_clientError(self) -> None:
        """
        Other 4xx statuses are not retried.
        """
        events = captureLog(self)
        hook = Hook((400,))
        server = Server(self, hook)
        self.assertFalse(await self.notifier(server.url).deliver(sampleRequest()))
        self.assertEqual(len(hook.posts), 1)
        self.assertTrue(
            [m for m in messages(events) if "HTTP status 400: try again later" in m]
        )

    async def test_refused(self) -> None:
        """
        A webhook that refuses connections is tried C{retries} more times,
        then given up with a log line.
        """
        events = captureLog(self)
        port = reactor.listenTCP(0, Site(Hook()), interface="127.0.0.1")
        url = f"http://127.0.0.1:{port.getHost().port}/"
        await port.stopListening()
        self.assertFalse(await self.notifier(url, retries=2).deliver(sampleRequest()))
        lines = messages(events)
        failures = [m for m in lines if "failed (attempt" in m]
        self.assertEqual(len(failures), 3)
        self.assertIn("refused", failures[0].lower())
        self.assertTrue([m for m in lines if "Gave up" in m and "apr-" in m])

    async def test_timeout(self) -> None:
        """
        An attempt that gets no response in time is abandoned and retried.
        """
        events = captureLog(self)
        hook = Hook(hang=True)
        server = Server(self, hook)
        notifier = self.notifier(server.url, retries=1, timeout=0.05)
        self.assertFalse(await notifier.deliver(sampleRequest()))
        self.assertEqual(len(hook.posts), 2)
        self.assertTrue([m for m in messages(events) if "no response in 0.05s" in m])

    async def test_notify(self) -> None:
        """
        L{WebhookNotifier.notify} returns at once; the POST follows.
        """
        hook = Hook()
        server = Server(self, hook)
        notifier = self.notifier(server.url)
        self.assertIsNone(notifier.notify(sampleRequest()))
        self.assertEqual(hook.posts, [])
        await hook.received
        self.assertEqual(len(hook.posts), 1)

    async def test_stop(self) -> None:
        """
        L{WebhookNotifier.stop} abandons deliveries in progress, whether
        waiting for a response or to retry.
        """
        hook = Hook(hang=True)
        server = Server(self, hook)
        notifier = self.notifier(server.url, backoff=60, max_backoff=60)
        hanging = notifier.deliver(sampleRequest())
        await hook.received
        port = reactor.listenTCP(0, Site(Hook()), interface="127.0.0.1")
        url = f"http://127.0.0.1:{port.getHost().port}/"
        await port.stopListening()
        waiting = self.notifier(url, backoff=60, max_backoff=60)
        retrying = waiting.deliver(sampleRequest())
        for _ in range(1000):
            if reactor.getDelayedCalls() and any(
                call.getTime() - reactor.seconds() > 30
                for call in reactor.getDelayedCalls()
            ):
                break
            await deferLater(reactor, 0.001)
        notifier.stop()
        waiting.stop()
        self.assertFalse(await hanging)
        self.assertFalse(await retrying)

    def test_delay(self) -> None:
        """
        The wait doubles from C{backoff} up to C{max_backoff}.
        """
        notifier = WebhookNotifier(
            Clock(), "https://hooks.example.com/x", agent=object(), backoff=1
        )
        self.assertEqual(
            [notifier.delay(n) for n in range(1, 9)], [1, 2, 4, 8, 16, 32, 60, 60]
        )

    def test_badURL(self) -> None:
        """
        Only http(s) URLs with a host are accepted.
        """
        for url in ["ftp://example.com/", "hooks.example.com/x", "https:///x"]:
            self.assertRaises(ValueError, WebhookNotifier, Clock(), url, object())
