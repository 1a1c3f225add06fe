"""
Tests for L{gatehouse.gate}: the protocol-neutral enforcement core.

The first tests drive a L{Gate} with a driver that notes every call and a
session stub whose decisions the test sets; the last ones run the line
protocol of L{tests.lineadapter} on a real L{SessionHub} (token verifier,
policy, approval broker, masking, segment recorder on disk) and judge the
target's state, the client's bytes and the recording.
"""

from __future__ import annotations

import json
import os
from typing import Any

import jwt
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer
from zope.interface.verify import verifyObject

from gatehouse.config import TargetConfig
from gatehouse.gate import (
    PASS,
    STOP,
    ForwardRefused,
    Gate,
    HoldReason,
    IGateDriver,
    Permit,
    Proposal,
    Refusal,
    RefusalKind,
    Wait,
)
from gatehouse.identity import Identity, IssuerConfig, TokenVerifier
from gatehouse.policy import Command, Decision, Policy, Rule
from gatehouse.policy.approval import ApprovalBroker
from gatehouse.policy.config import MaskingScope
from gatehouse.policy.masking import MaskingRule
from gatehouse.protocols.postgres.commands import CommandCache
from gatehouse.recording.format import RecordType
from gatehouse.recording.reader import read_records
from gatehouse.session import SessionHub
from tests.lineadapter import LineRelay, LineService
from tests.recording.helpers import clock_recorder

ALLOW = Decision("allow", "default")
DENY = Decision("deny", "no-drop", message="not here")
REVIEW = Decision("review", "ask", approvers=("dba",), timeout=60)


def _command(text: str) -> Command:
    return Command("lines", text.split()[0], text)


def _proposal(text: str, **kw: Any) -> Proposal:
    return Proposal((_command(text),), text, **kw)


class StubSession:
    """Decides as the test says, and notes indexing and approvals."""

    def __init__(self) -> None:
        self.id = "session-1"
        self.closed = False
        self.decisions: dict[str, Decision] = {}
        self.indexed: list[tuple[str, str, tuple[str, ...], str]] = []
        self.events: list[tuple[str, dict[str, Any]]] = []
        self.reported: list[str] = []
        self.verdicts: list[Deferred[Any]] = []
        self.channels: list[int] = []

    def decide(
        self,
        commands: Any,
        shape: Any = None,
        own: Any = None,
        channel: int = 0,
        shown: Any = None,
    ) -> Decision:
        self.channels.append(channel)
        return self.decisions.get(commands[0].text, ALLOW)

    def command_seen(
        self,
        kind: str,
        text: str,
        objects: tuple[str, ...],
        decision: str,
        channel: int = 0,
    ) -> None:
        self.indexed.append((kind, text, objects, decision))
        self.channels.append(channel)

    def event(self, name: str, /, *, channel: int = 0, **fields: Any) -> None:
        self.events.append((name, fields))
        self.channels.append(channel)

    def report_decision(self, decision: Decision, commands: Any) -> None:
        self.reported.append(decision.action)

    def request_approval(
        self, commands: Any, decision: Decision, channel: int = 0
    ) -> Any:
        self.channels.append(channel)
        verdict: Deferred[Any] = Deferred(lambda d: None)
        self.verdicts.append(verdict)
        return _Request(f"req-{len(self.verdicts)}"), verdict


class _Request:
    def __init__(self, id: str) -> None:
        self.id = id


class _Verdict:
    def __init__(self, approved: bool, reason: str = "") -> None:
        self.approved = approved
        self.reason = reason


@implementer(IGateDriver)
class NotingDriver:
    """A driver whose units are strings: C{"x ..."} a command, else PASS."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, object]] = []
        self.forwarded: list[str] = []
        self.refused: list[tuple[str, Refusal]] = []
        self.waits: dict[str, object] = {}
        self.admits: dict[str, object] = {}
        self.failures: list[Failure] = []

    def inspect(self, unit: str) -> object:
        if unit in self.waits:
            return self.waits.pop(unit)
        return _proposal(unit) if unit.startswith("x") else PASS

    def admit(self, unit: str, permit: Permit) -> object:
        return self.admits.pop(unit, None)

    def forward(self, unit: str, permit: Permit | None) -> None:
        if unit.startswith("x"):
            assert permit is not None and permit.covers(unit)
        self.forwarded.append(unit)

    def flush(self) -> None:
        self.calls.append(("flush", None))

    def refuse(self, unit: str, refusal: Refusal) -> None:
        self.refused.append((unit, refusal))

    def held(self, unit: str, request: Any, decision: Decision) -> None:
        self.calls.append(("held", request.id))

    def pause_input(self) -> None:
        self.calls.append(("pause", None))

    def resume_input(self) -> None:
        self.calls.append(("resume", None))

    def failed(self, failure: Failure) -> None:
        self.failures.append(failure)


class GateTests(SynchronousTestCase):
    """Decisions, holds, forwarding and refusals, in order."""

    def setUp(self) -> None:
        self.session = StubSession()
        self.driver = NotingDriver()
        self.gate = Gate(self.session, self.driver, noun="line", hold_limit=100)

    def test_driver_interface(self) -> None:
        """The stub driver, like every driver, provides IGateDriver."""
        self.assertTrue(verifyObject(IGateDriver, self.driver))

    def test_allowed_in_order(self) -> None:
        self.gate.receive(["a", "x 1", "b", "x 2"])
        self.assertEqual(self.driver.forwarded, ["a", "x 1", "b", "x 2"])
        self.assertEqual(self.driver.calls, [("flush", None)])

    def test_denied(self) -> None:
        """A denied unit is refused with the rule's message; the rest go on."""
        self.session.decisions["x drop"] = DENY
        self.gate.receive(["a", "x drop", "x 2"])
        self.assertEqual(self.driver.forwarded, ["a", "x 2"])
        [(unit, refusal)] = self.driver.refused
        self.assertEqual(unit, "x drop")
        self.assertEqual(refusal.kind, RefusalKind.POLICY)
        self.assertEqual(
            refusal.message, 'line refused by gatehouse policy rule "no-drop": not here'
        )

    def test_unparseable(self) -> None:
        self.session.decisions["x ?"] = Decision("error", "unparseable")
        self.gate.receive(["x ?"])
        self.assertEqual(self.driver.forwarded, [])
        self.assertEqual(self.driver.refused[0][1].kind, RefusalKind.UNPARSEABLE)

    def test_driver_verdict_only_stricter(self) -> None:
        """
        A driver's own deny wins over the policy's allow, and is recorded;
        its allow does not win over the policy's deny.
        """
        protect = Decision("deny", "built-in", message="protected")
        self.driver.waits["x role"] = _proposal("x role", verdict=protect)
        self.driver.waits["x drop"] = _proposal("x drop", verdict=ALLOW)
        self.session.decisions["x drop"] = DENY
        self.gate.receive(["x role", "x drop"])
        self.assertEqual(self.driver.forwarded, [])
        self.assertEqual(
            [(u, r.kind, r.message) for u, r in self.driver.refused],
            [
                ("x role", RefusalKind.PROTECTION, "protected"),
                (
                    "x drop",
                    RefusalKind.POLICY,
                    'line refused by gatehouse policy rule "no-drop": not here',
                ),
            ],
        )
        self.assertEqual(self.session.events[0][0], "decision")
        self.assertEqual(self.session.events[0][1]["rule"], "built-in")
        self.assertEqual(self.session.reported, ["deny"])

    def test_review_holds_what_follows(self) -> None:
        """
        A unit held for approval, and everything the client sends after
        it, waits; approved, it goes, then the rest in order.
        """
        self.session.decisions["x alter"] = REVIEW
        self.gate.receive(["a", "x alter", "b"])
        self.gate.receive(["x 3"])
        self.assertEqual(self.driver.forwarded, ["a"])
        self.assertIs(self.gate.holding, HoldReason.APPROVAL)
        self.assertEqual(self.gate.request.id, "req-1")
        self.assertIn(("held", "req-1"), self.driver.calls)
        self.session.verdicts[0].callback(_Verdict(True))
        self.assertEqual(self.driver.forwarded, ["a", "x alter", "b", "x 3"])
        self.assertIsNone(self.gate.holding)

    def test_approved_then_admitted(self) -> None:
        """
        An approved unit is admitted as an allowed one is: the driver may
        still refuse it (a result it cannot mask), or look something up
        before it goes.  Either way what followed it waits its turn.
        """
        self.session.decisions["x copy"] = REVIEW
        self.session.decisions["x lookup"] = REVIEW
        self.driver.admits["x copy"] = Refusal(RefusalKind.PROTOCOL, "unmaskable")
        self.driver.admits["x lookup"] = Wait(HoldReason.LOOKUP)
        self.gate.receive(["x copy", "a", "x lookup", "b"])
        self.session.verdicts[0].callback(_Verdict(True))
        self.assertEqual(self.driver.forwarded, ["a"])
        self.assertEqual([u for u, _ in self.driver.refused], ["x copy"])
        self.session.verdicts[1].callback(_Verdict(True))
        self.assertIs(self.gate.holding, HoldReason.LOOKUP)
        self.assertEqual(self.driver.forwarded, ["a"])
        self.gate.settle("x lookup", None)
        self.assertEqual(self.driver.forwarded, ["a", "x lookup", "b"])

    def test_review_denied(self) -> None:
        self.session.decisions["x alter"] = REVIEW
        self.gate.receive(["x alter", "b"])
        self.session.verdicts[0].callback(_Verdict(False, "expired"))
        self.assertEqual(self.driver.forwarded, ["b"])
        [(_, refusal)] = self.driver.refused
        self.assertEqual(refusal.kind, RefusalKind.NOT_APPROVED)
        self.assertEqual(refusal.message, 'line not approved (rule "ask"): expired')

    def test_cancel_approval(self) -> None:
        self.session.decisions["x alter"] = REVIEW
        self.gate.receive(["x alter", "b"])
        self.assertIs(self.gate.cancel(), HoldReason.APPROVAL)
        self.assertEqual(self.driver.forwarded, ["b"])
        self.assertEqual(self.driver.refused[0][1].kind, RefusalKind.CANCELLED)

    def test_backlog_pauses_reading(self) -> None:
        self.session.decisions["x alter"] = REVIEW
        self.gate.receive(["x alter"], backlog=10)
        self.assertNotIn(("pause", None), self.driver.calls)
        self.gate.receive(["b"], backlog=101)
        self.assertIn(("pause", None), self.driver.calls)
        self.session.verdicts[0].callback(_Verdict(True))
        self.assertEqual(self.driver.calls[-2:], [("resume", None), ("flush", None)])

    def test_barrier_then_decided(self) -> None:
        """A driver's wait ends by inspecting the unit again."""
        started: list[str] = []
        self.driver.waits["x 1"] = Wait(HoldReason.BARRIER, lambda: started.append(1))
        self.gate.receive(["x 1", "b"])
        self.assertEqual((started, self.driver.forwarded), ([1], []))
        self.assertTrue(self.gate.holds("x 1", HoldReason.BARRIER))
        self.gate.resume()
        self.assertEqual(self.driver.forwarded, ["x 1", "b"])

    def test_lookup_after_allow(self) -> None:
        """An allowed unit waits for the driver's lookup, then goes."""
        self.driver.admits["x copy"] = Wait(HoldReason.LOOKUP)
        self.gate.receive(["x copy", "b"])
        self.assertEqual(self.driver.forwarded, [])
        self.gate.settle("x copy", None)
        self.assertEqual(self.driver.forwarded, ["x copy", "b"])

    def test_channel(self) -> None:
        """
        A gate for one stream of a connection (an SSH channel) decides,
        indexes, records and asks for approval on that channel.
        """
        gate = Gate(self.session, self.driver, channel=3)
        self.session.decisions["x alter"] = REVIEW
        protect = Decision("deny", "built-in", message="protected")
        self.driver.waits["x role"] = _proposal("x role", verdict=protect)
        gate.receive(["x 1", "x role", "x alter"])
        # decide and index x 1; record and index x role; decide, index
        # and ask about x alter
        self.assertEqual(len(self.session.channels), 7)
        self.assertEqual(set(self.session.channels), {3})

    def test_stop(self) -> None:
        self.driver.waits["x bad"] = STOP
        self.gate.receive(["a", "x bad", "b"])
        self.assertEqual(self.driver.forwarded, ["a"])
        self.assertTrue(self.gate.closed)

    def test_shapes_indexed_once(self) -> None:
        """
        Each allowed shape is indexed once (moved from the PostgreSQL
        server's StatementIndexer tests); new shapes always are.
        """
        cache = CommandCache()
        for aid in range(3000):
            self.driver.waits[f"x{aid}"] = self._sql(
                cache, f"select abalance from accounts where aid = {aid}"
            )
            self.gate.receive([f"x{aid}"])
        self.assertEqual(
            self.session.indexed,
            [
                (
                    "SelectStmt",
                    "select abalance from accounts where aid = 0",
                    ("accounts",),
                    "allow",
                )
            ],
        )

    def test_refusals_always_indexed(self) -> None:
        cache = CommandCache()
        self.session.decisions["DROP TABLE t"] = DENY
        for n in range(3):
            self.driver.waits[f"x{n}"] = self._sql(cache, "DROP TABLE t")
            self.gate.receive([f"x{n}"])
        self.assertEqual(
            self.session.indexed, [("DropStmt", "DROP TABLE t", ("t",), "deny")] * 3
        )

    def test_new_shape_after_many_texts(self) -> None:
        """A DROP after thousands of distinct texts is still indexed."""
        cache = CommandCache()
        for aid in range(9000):
            self.driver.waits["x"] = self._sql(
                cache, f"select 1 from t where id = {aid}"
            )
            self.gate.receive(["x"])
        self.driver.waits["x"] = self._sql(cache, "DROP TABLE t")
        self.gate.receive(["x"])
        self.assertEqual(
            self.session.indexed[-1], ("DropStmt", "DROP TABLE t", ("t",), "allow")
        )

    def _sql(self, cache: CommandCache, sql: str) -> Proposal:
        classified = cache.classify(sql)
        return Proposal(classified.commands, sql, classified.shape)


class UndecidedNeverForwardedTests(SynchronousTestCase):
    """
    Forwarding a command the gate did not decide is impossible: no permit
    can be made outside it, a held unit cannot be let go without one, and
    every way a decision can end other than allow or approval refuses.
    """

    def setUp(self) -> None:
        self.session = StubSession()
        self.driver = NotingDriver()
        self.gate = Gate(self.session, self.driver, noun="line")

    def test_no_forged_permit(self) -> None:
        self.assertRaises(ForwardRefused, Permit, "x drop", ALLOW, None)
        self.assertRaises(ForwardRefused, Permit, "x drop", ALLOW, None, object())

    def test_wait_cannot_be_settled_forward(self) -> None:
        """A unit held without a decision can only be decided or refused."""
        for reason in (HoldReason.BARRIER, HoldReason.CLASSIFICATION):
            gate = Gate(self.session, self.driver)
            self.driver.waits["x 1"] = Wait(reason)
            gate.receive(["x 1"])
            self.assertRaises(ForwardRefused, gate.settle, "x 1", None)
            self.assertRaises(ForwardRefused, gate.settle, "x other", None)
        self.assertEqual(self.driver.forwarded, [])

    def test_approval_and_lookup_are_not_the_drivers(self) -> None:
        """A driver cannot put a unit on hold as if it were being approved."""
        for reason in (HoldReason.APPROVAL, HoldReason.LOOKUP):
            self.driver.waits["x 1"] = Wait(reason)
            self.assertRaises(ForwardRefused, self.gate.receive, ["x 1"])
        self.assertEqual(self.driver.forwarded, [])

    def test_unknown_answers_refused(self) -> None:
        """A driver that answers nonsense forwards nothing."""
        for answer in (None, True, "x 1", ALLOW, (_command("x 1"),)):
            self.driver.waits["x 1"] = answer
            self.assertRaises(ForwardRefused, self.gate.receive, ["x 1"])
        self.driver.admits["x 2"] = "yes"
        self.assertRaises(ForwardRefused, self.gate.receive, ["x 2"])
        self.assertEqual(self.driver.forwarded, [])

    def test_every_other_ending_refuses(self) -> None:
        """
        Deny, unparseable, not approved, approval failed, cancelled while
        held, a wait cancelled, a closed gate: the unit never goes.
        """
        self.session.decisions.update(
            {"x deny": DENY, "x err": Decision("error", "unparseable")}
        )
        self.gate.receive(["x deny", "x err"])
        for ending in ("no", "failed", "cancel"):
            self.session.decisions["x " + ending] = REVIEW
            self.gate.receive(["x " + ending])
            verdict = self.session.verdicts[-1]
            if ending == "no":
                verdict.callback(_Verdict(False, "denied"))
            elif ending == "failed":
                verdict.errback(Failure(RuntimeError("broker broke")))
            else:
                self.gate.cancel()
        self.driver.waits["x wait"] = Wait(HoldReason.CLASSIFICATION)
        self.gate.receive(["x wait"])
        self.gate.cancel()
        self.driver.waits["x failed-check"] = Wait(HoldReason.CLASSIFICATION)
        self.gate.receive(["x failed-check"])
        self.gate.settle("x failed-check", Failure(RuntimeError("worker died")))
        self.session.decisions["x closed"] = REVIEW
        self.gate.receive(["x closed"])
        self.gate.close()
        self.session.verdicts[-1].callback(_Verdict(True))
        self.gate.receive(["x after"])
        self.assertEqual(self.driver.forwarded, [])
        self.assertEqual(
            [r.kind for _, r in self.driver.refused],
            [
                RefusalKind.POLICY,
                RefusalKind.UNPARSEABLE,
                RefusalKind.NOT_APPROVED,
                RefusalKind.UNCHECKED,
                RefusalKind.CANCELLED,
                RefusalKind.CANCELLED,
                RefusalKind.UNCHECKED,
            ],
        )
        self.flushLoggedErrors(RuntimeError)

    def test_error_after_approval_fails_closed(self) -> None:
        """An error admitting an approved unit ends the session, unforwarded."""
        self.session.decisions["x alter"] = REVIEW
        self.gate.receive(["x alter", "b"])

        def broken(unit: str, permit: Permit) -> object:
            raise RuntimeError("admission broke")

        self.driver.admit = broken  # type: ignore[method-assign]
        self.session.verdicts[0].callback(_Verdict(True))
        self.assertEqual(self.driver.forwarded, [])
        self.assertTrue(self.gate.closed)
        [failure] = self.driver.failures
        self.assertTrue(failure.check(RuntimeError))

    def test_error_resuming_fails_closed(self) -> None:
        """An error checking a unit after its hold ends the session."""
        self.driver.waits["x 1"] = Wait(HoldReason.BARRIER)
        self.gate.receive(["x 1", "b"])

        def broken(unit: str) -> object:
            raise RuntimeError("checker broke")

        self.driver.inspect = broken  # type: ignore[method-assign]
        self.gate.resume()
        self.assertEqual(self.driver.forwarded, [])
        self.assertTrue(self.gate.closed)
        [failure] = self.driver.failures
        self.assertTrue(failure.check(RuntimeError))


NOW = 1_790_000_000.0
NS = 1_000_000_000
ISSUER = "https://idp.example.com/realms/ops"
SECRET = b"the gate tests' HS256 secret, 32 bytes or more"
CARD = "4111 1111 1111 1111"


def _token(subject: str, groups: list[str]) -> str:
    claims = {
        "iss": ISSUER,
        "aud": "gatehouse",
        "sub": subject,
        "groups": groups,
        "iat": int(NOW),
        "exp": int(NOW + 600),
    }
    return jwt.encode(claims, SECRET, algorithm="HS256")


class LineAdapterTests(SynchronousTestCase):
    """
    The line protocol of L{tests.lineadapter} gets identity, decisions,
    approvals, masking and recording from the core alone: judged on the
    target's keys, what the client read and what the recording holds.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(NOW)
        self.directory = self.mktemp()
        recorder = clock_recorder(self.directory, "gw-g", self.clock, NOW)
        verifier = TokenVerifier(
            [
                IssuerConfig(
                    ISSUER, ("gatehouse",), algorithms=("HS256",), hs256_secret=SECRET
                )
            ],
            reactor,
            clock=self.clock,
        )
        self.broker = ApprovalBroker(self.clock)
        policy = Policy(
            rules=(
                Rule(name="no-drop", action="deny", kinds=frozenset({"drop"})),
                Rule(
                    name="ask-set",
                    action="review",
                    kinds=frozenset({"set"}),
                    approvers=("dba",),
                ),
            )
        )
        masking = [MaskingScope(MaskingRule("cards", detectors=frozenset({"card"})))]
        self.hub = SessionHub(
            "gw-g",
            recorder,
            verifier,
            self.clock,
            policy=policy,
            masking=masking,
            broker=self.broker,
            targets=[TargetConfig("kv", "lines", allow_groups=("agents",))],
        )
        self.service = LineService({"alice": f"card {CARD}", "plan": "basic"})

    def connect(self, token: str | None = None) -> LineRelay:
        relay = LineRelay(self.hub, self.service)
        relay.line_received(f"AUTH {token or _token('ci-bot', ['agents'])} kv")
        return relay

    def recorded(self, relay: LineRelay) -> bytes:
        records = read_records(relay.session.recording.directory)
        return b"".join(r.payload for r in records)

    def events(self, relay: LineRelay) -> list[dict[str, Any]]:
        return [
            json.loads(r.payload)
            for r in read_records(relay.session.recording.directory)
            if r.type == RecordType.EVENT
        ]

    def test_bad_token(self) -> None:
        """A bad token: refused, nothing reaches the target, token not recorded."""
        relay = self.connect("not-a-token")
        relay.line_received("drop plan")
        self.assertEqual(self.service.ran, [])
        self.assertTrue(relay.to_client[0].startswith("ERR "))
        # A refused login leaves nothing on disk (only a log line).
        self.assertIsNone(relay.session.recording.directory)
        self.assertFalse(os.path.exists(self.directory) and os.listdir(self.directory))

    def test_target_refused(self) -> None:
        """
        An identity the target does not admit, or a target that does not
        exist: the core refuses the login, the adapter never checks.
        """
        for line in (
            f"AUTH {_token('eve', ['dev'])} kv",
            f"AUTH {_token('ci-bot', ['agents'])} nowhere",
        ):
            relay = LineRelay(self.hub, self.service)
            relay.line_received(line)
            relay.line_received("get plan")
            self.assertIsNone(relay.gate)
            self.assertEqual(self.service.ran, [])
            self.assertTrue(relay.to_client[0].startswith("ERR "), relay.to_client)

    def test_unauthenticated_gate_forwards_nothing(self) -> None:
        """A gate on a session never authenticated decides deny: fail closed."""
        relay = LineRelay(self.hub, self.service)
        relay.gate = Gate(relay.session, relay, noun="line")
        relay.line_received("get plan")
        self.assertEqual(self.service.ran, [])
        self.assertIn("not authenticated", relay.to_client[0])
        relay.close("done")

    def test_deny(self) -> None:
        relay = self.connect()
        relay.line_received("drop plan")
        relay.line_received("get plan")
        relay.close("done")
        self.assertEqual(self.service.keys["plan"], "basic")
        self.assertEqual(self.service.ran, ["get plan"])
        self.assertEqual(
            relay.to_client,
            [
                "OK",
                'ERR line refused by gatehouse policy rule "no-drop"',
                "plan = basic",
            ],
        )
        [decision] = [e for e in self.events(relay) if e["event"] == "decision"]
        self.assertEqual((decision["action"], decision["rule"]), ("deny", "no-drop"))

    def test_approval(self) -> None:
        """
        A held line waits, and so do the lines after it; approved by a DBA
        it runs, then they do.  A line denied by the approver never runs.
        """
        relay = self.connect()
        relay.line_received("set plan gold")
        relay.line_received("get plan")
        self.assertEqual(self.service.ran, [])
        self.assertTrue(relay.to_client[-1].startswith("HELD "))
        [request] = self.broker.pending()
        bob = Identity("bob", "Bob", ("dba",), ISSUER, None)
        self.broker.approve(request.id, bob)
        self.assertEqual(self.service.ran, ["set plan gold", "get plan"])
        relay.line_received("set plan free")
        [request] = self.broker.pending()
        self.broker.deny(request.id, bob, "no")
        relay.close("done")
        self.assertEqual(self.service.keys["plan"], "gold")
        self.assertTrue(
            relay.to_client[-1].startswith('ERR line not approved (rule "ask-set")')
        )

    def test_masking(self) -> None:
        """A card number in an answer reaches neither the client nor the recording."""
        relay = self.connect()
        relay.line_received("get alice")
        relay.close("done")
        self.assertEqual(self.service.ran, ["get alice"])
        self.assertNotIn(CARD, "\n".join(relay.to_client))
        self.assertIn("alice = card ", relay.to_client[-1])
        self.assertNotIn(CARD.encode(), self.recorded(relay))
        self.assertNotIn(CARD.replace(" ", "").encode(), self.recorded(relay))

    def test_recorded(self) -> None:
        """Both directions are recorded, the token redacted; the session sealed."""
        relay = self.connect()
        relay.line_received("get plan")
        relay.close("done")
        records = list(read_records(relay.session.recording.directory))
        data = b"".join(r.payload for r in records if r.type == RecordType.DATA)
        self.assertEqual(data, b"AUTH [REDACTED]\nOK\nget plan\nplan = basic\n")
        self.assertEqual(records[-1].type, RecordType.CLOSE)
