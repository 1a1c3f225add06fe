"""
The core, not the protocol, decides who may reach a target: a protocol
that never checks access still gets no session on a target its client may
not reach (L{SessionHub.access_refusal}, L{TargetAccessDenied}).

In memory: a real L{SessionHub} and L{TokenVerifier} on a L{Clock}, with a
recorder that keeps its records in lists.
"""

from __future__ import annotations

import json
from typing import Any

import jwt
import yaml
from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from gatehouse.config import ConfigError, TargetConfig, load_config
from gatehouse.identity import AuthenticationError, IssuerConfig, TokenVerifier
from gatehouse.policy import Command
from gatehouse.recording.format import Direction, RecordType
from gatehouse.session import (
    TARGET_DENIED,
    UNKNOWN_TARGET,
    SessionHub,
    TargetAccessDenied,
)
from tests.test_config import ConfigFiles, use_dummy_protocol

NOW = 1_790_000_000.0
ISSUER = "https://idp.example.com/realms/access"
AUDIENCE = "gatehouse"
SECRET = b"the session access tests' HS256 secret, 32+ bytes"


def token(subject: str = "alice", groups: tuple[str, ...] = ("dev",)) -> str:
    """A valid token for C{subject} with C{groups}."""
    payload = {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": subject,
        "groups": list(groups),
        "iat": int(NOW),
        "exp": int(NOW + 600),
    }
    return jwt.encode(payload, SECRET, algorithm="HS256")


def verifier(clock: Clock) -> TokenVerifier:
    """A verifier of L{token}'s tokens."""
    issuer = IssuerConfig(
        ISSUER, (AUDIENCE,), algorithms=("HS256",), hs256_secret=SECRET
    )
    return TokenVerifier([issuer], clock, clock=clock)


class MemoryRecording:
    """One session's records, in a list."""

    directory = "/memory"

    def __init__(self, meta: dict[str, Any]) -> None:
        self.meta = meta
        self.records: list[tuple[int, int, int, bytes]] = []
        self.closed: str | None = None

    def record(self, rtype: int, direction: int, channel: int, payload: bytes) -> int:
        self.records.append((rtype, direction, channel, bytes(payload)))
        return len(self.records) - 1

    def events(self) -> list[dict[str, Any]]:
        """The EVENT records, decoded."""
        return [json.loads(r[3]) for r in self.records if r[0] == RecordType.EVENT]

    def registerProducer(self, producer: object) -> None:
        pass

    def notifyFailure(self) -> Deferred[str]:
        return Deferred()

    def close(self, reason: str) -> Deferred[None]:
        self.closed = reason
        return succeed(None)


class MemoryRecorder:
    """Opens L{MemoryRecording}s and keeps them."""

    def __init__(self) -> None:
        self.opened: list[MemoryRecording] = []

    def open(self, session_id: object, meta: dict[str, Any]) -> MemoryRecording:
        recording = MemoryRecording(meta)
        self.opened.append(recording)
        return recording


def memory_hub(
    clock: Clock | None = None, **kwargs: Any
) -> tuple[SessionHub, MemoryRecorder, Clock]:
    """A hub on C{clock} (a new one at L{NOW}), recording in memory."""
    if clock is None:
        clock = Clock()
        clock.advance(NOW)
    recorder = MemoryRecorder()
    hub = SessionHub("gw-a", recorder, verifier(clock), clock, **kwargs)
    return hub, recorder, clock


class CarelessAdapter:
    """
    A protocol handler that asks the session to authenticate and then
    forwards everything, never checking access itself.
    """

    def __init__(self, hub: SessionHub, protocol: str = "lines") -> None:
        self.session = hub.open(protocol, "l1", "10.0.0.9:4000")
        self.forwarded: list[bytes] = []
        self.refused: list[AuthenticationError] = []

    def login(self, jwt_token: str, target: str | None) -> None:
        self.session.data(Direction.CLIENT_TO_GATEWAY, b"AUTH [REDACTED]\n")
        d = self.session.authenticate(jwt_token, target)
        d.addCallbacks(lambda identity: self.relay(b"rm -rf /\n"), self.refuse)

    def refuse(self, failure: Any) -> None:
        failure.trap(AuthenticationError)
        self.refused.append(failure.value)

    def relay(self, line: bytes) -> None:
        self.session.data(Direction.CLIENT_TO_GATEWAY, line)
        self.forwarded.append(line)


TARGETS = (
    TargetConfig("inventory", "lines", allow_groups=("ops",)),
    TargetConfig("anyone", "lines", allow_groups=("*",)),
    TargetConfig("orders", "postgres", allow_groups=("*",)),
)


class CoreAccessTests(SynchronousTestCase):
    """The hub refuses what the adapter forgot to check."""

    def setUp(self) -> None:
        self.hub, self.recorder, self.clock = memory_hub(targets=TARGETS)

    def login(self, target: str | None, groups: tuple[str, ...] = ("dev",)) -> Any:
        adapter = CarelessAdapter(self.hub)
        adapter.login(token(groups=groups), target)
        return adapter

    def assertRefused(self, adapter: CarelessAdapter, kind: str) -> TargetAccessDenied:
        """Nothing forwarded, a L{TargetAccessDenied} of C{kind}, no policy."""
        self.assertEqual(adapter.forwarded, [])
        (refusal,) = adapter.refused
        self.assertIsInstance(refusal, TargetAccessDenied)
        assert isinstance(refusal, TargetAccessDenied)
        self.assertEqual(refusal.kind, kind)
        self.assertEqual(refusal.subject, "alice")
        self.assertIsNone(adapter.session.policy)
        return refusal

    def test_not_allowed(self) -> None:
        """An identity outside the target's groups is refused."""
        adapter = self.login("inventory")
        refusal = self.assertRefused(adapter, TARGET_DENIED)
        self.assertEqual(refusal.target, "inventory")
        self.assertEqual(str(refusal), "identity not allowed for target 'inventory'")

    def test_unknown(self) -> None:
        """A target the gateway does not have is refused."""
        refusal = self.assertRefused(self.login("nowhere"), UNKNOWN_TARGET)
        self.assertEqual(str(refusal), "unknown target 'nowhere'")

    def test_no_target(self) -> None:
        """No target named: nothing to reach (fail closed)."""
        self.assertRefused(self.login(None), UNKNOWN_TARGET)

    def test_other_protocol(self) -> None:
        """A target of another protocol is no target of this session's."""
        self.assertRefused(self.login("orders"), UNKNOWN_TARGET)

    def test_no_targets(self) -> None:
        """A hub given no targets lets nobody reach anything."""
        self.hub, _, _ = memory_hub()
        self.assertRefused(self.login("anyone", ("ops",)), UNKNOWN_TARGET)

    def test_refusal_recorded(self) -> None:
        """
        The token was good: the session is recorded, with the refusal as
        an event after the authentication, and can decide nothing.
        """
        adapter = self.login("inventory")
        (recording,) = self.recorder.opened
        events = recording.events()
        self.assertEqual(
            [e["event"] for e in events], ["authenticated", "target-refused"]
        )
        self.assertEqual(
            events[1],
            {
                "event": "target-refused",
                "kind": TARGET_DENIED,
                "target": "inventory",
                "reason": "identity not allowed for target 'inventory'",
            },
        )
        decision = adapter.session.decide([Command("lines", "line", "ls")])
        self.assertEqual(decision.action, "deny")

    def test_allowed(self) -> None:
        """A member of an allowed group, or anyone on "*", gets through."""
        for target, groups in (("inventory", ("ops",)), ("anyone", ())):
            adapter = self.login(target, groups)
            self.assertEqual(adapter.refused, [])
            self.assertEqual(adapter.forwarded, [b"rm -rf /\n"])
            self.assertIsNotNone(adapter.session.policy)
            self.assertEqual(adapter.session.target, target)

    def test_reload(self) -> None:
        """The hub's targets are replaced by a reload: its next logins see them."""
        self.hub.targets = {}
        self.assertRefused(self.login("inventory"), UNKNOWN_TARGET)
        self.hub.targets = {
            "inventory": TargetConfig("inventory", "lines", allow_groups=("dev",))
        }
        self.assertEqual(self.login("inventory").forwarded, [b"rm -rf /\n"])


class AllowGroupsConfigTests(SynchronousTestCase):
    """
    C{allow_groups} is read by the core from every target's options, for
    any protocol, and is required.
    """

    def setUp(self) -> None:
        self.files = ConfigFiles(self.mktemp())
        use_dummy_protocol(self)

    def load(self, options: dict[str, Any]) -> Any:
        data = self.files.minimal()
        data["targets"] = [{"name": "t", "protocol": "dummy", "options": options}]
        return load_config(self.files.write("gw.yaml", yaml.safe_dump(data)))

    def problems(self, options: dict[str, Any]) -> list[str]:
        with self.assertRaises(ConfigError) as caught:
            self.load(options)
        return [line.split("gw.yaml: ", 1)[1] for line in caught.exception.lines()]

    def test_read_for_any_protocol(self) -> None:
        config = self.load({"host": "h", "allow_groups": ["ops", "dba"]})
        (target,) = config.targets
        self.assertEqual(target.allow_groups, ("ops", "dba"))
        self.assertTrue(target.allows(("dba", "x")))
        self.assertFalse(target.allows(("dev",)))
        self.assertFalse(target.allows(()))

    def test_required(self) -> None:
        self.assertEqual(
            self.problems({"host": "h"}),
            ["targets[0].options.allow_groups: required key is missing"],
        )

    def test_misspelt(self) -> None:
        self.assertEqual(
            sorted(self.problems({"host": "h", "allow_group": ["ops"]})),
            [
                "targets[0].options.allow_group: unknown key"
                " (did you mean allow_groups?)",
                "targets[0].options.allow_groups: required key is missing",
            ],
        )

    def test_wrong_type(self) -> None:
        self.assertEqual(
            self.problems({"host": "h", "allow_groups": "ops"}),
            [
                "targets[0].options.allow_groups: expected a list of strings,"
                " got a string ('ops')"
            ],
        )

    def test_star(self) -> None:
        (target,) = self.load({"host": "h", "allow_groups": ["*"]}).targets
        self.assertTrue(target.allows(()))
