"""
Tests for L{gatehouse.credentials}: identity through pluggable checkers,
JWT now (L{JWTChecker}), other credentials next, one L{Identity} for all.
"""

from __future__ import annotations

from typing import Any

import attrs
from twisted.cred.checkers import ICredentialsChecker
from twisted.cred.credentials import ICredentials, UsernamePassword
from twisted.cred.error import UnauthorizedLogin
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import Attribute, implementer
from zope.interface.verify import verifyObject

from gatehouse.config import TargetConfig
from gatehouse.credentials import (
    BearerToken,
    CredentialCheckers,
    IBearerToken,
    JWTChecker,
)
from gatehouse.identity import AuthenticationError, Identity
from tests.test_session_access import NOW, memory_hub, token, verifier


class IPublicKey(ICredentials):
    """A second kind of credentials, as SSH will bring."""

    blob = Attribute("the key")


@implementer(IPublicKey)
@attrs.frozen
class PublicKey:
    blob: bytes


@implementer(ICredentialsChecker)
class KeyChecker:
    """Knows one key, whose holder is bob."""

    credentialInterfaces = (IPublicKey,)

    def __init__(self) -> None:
        self.seen: list[object] = []

    def requestAvatarId(self, credentials: IPublicKey) -> Deferred[Identity]:
        self.seen.append(credentials)
        if credentials.blob != b"bob's key":
            return fail(UnauthorizedLogin("unknown key"))
        return succeed(Identity("bob", "Bob", ("ops",), "ssh-ca", None))


class CheckersTests(SynchronousTestCase):
    """L{CredentialCheckers} dispatches by credentials interface."""

    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(NOW)
        self.keys = KeyChecker()
        self.checkers = CredentialCheckers(
            [JWTChecker(verifier(self.clock)), self.keys]
        )

    def test_interfaces(self) -> None:
        verifyObject(ICredentialsChecker, self.keys)
        verifyObject(ICredentialsChecker, JWTChecker(verifier(self.clock)))
        verifyObject(IBearerToken, BearerToken(b"x"))
        self.assertEqual(self.checkers.interfaces(), (IBearerToken, IPublicKey))

    def test_jwt(self) -> None:
        """A bearer token goes to the JWT checker, which gives its identity."""
        identity = self.successResultOf(
            self.checkers.check(BearerToken(token("alice", ("dev",))))
        )
        self.assertEqual((identity.subject, identity.groups), ("alice", ("dev",)))
        self.assertEqual(self.keys.seen, [])

    def test_jwt_bytes(self) -> None:
        identity = self.successResultOf(
            self.checkers.check(BearerToken(token("alice").encode()))
        )
        self.assertEqual(identity.subject, "alice")

    def test_jwt_refused(self) -> None:
        """The verifier's own reason and kind come through unchanged."""
        failure = self.failureResultOf(
            self.checkers.check(BearerToken("a.b.c")), AuthenticationError
        )
        direct = self.failureResultOf(verifier(self.clock).verify("a.b.c"))
        self.assertEqual(str(failure.value), str(direct.value))
        self.assertEqual(failure.value.kind, direct.value.kind)

    def test_dispatch(self) -> None:
        """A public key goes to the key checker (the second interface)."""
        identity = self.successResultOf(self.checkers.check(PublicKey(b"bob's key")))
        self.assertEqual(identity.subject, "bob")
        self.assertEqual(self.keys.seen, [PublicKey(b"bob's key")])

    def test_unauthorized_login(self) -> None:
        """A Twisted checker's UnauthorizedLogin is an AuthenticationError."""
        failure = self.failureResultOf(
            self.checkers.check(PublicKey(b"eve's key")), AuthenticationError
        )
        self.assertEqual(str(failure.value), "unknown key")

    def test_unknown_interface(self) -> None:
        """Credentials no checker accepts are refused."""
        failure = self.failureResultOf(
            self.checkers.check(UsernamePassword(b"alice", b"secret")),
            AuthenticationError,
        )
        self.assertIn("no credentials checker", str(failure.value))
        self.failureResultOf(
            CredentialCheckers().check(BearerToken(token())), AuthenticationError
        )

    def test_not_an_identity(self) -> None:
        """A checker that answers anything but an Identity is refused."""

        @implementer(ICredentialsChecker)
        class Sloppy:
            credentialInterfaces = (IPublicKey,)

            def requestAvatarId(self, credentials: Any) -> Deferred[object]:
                return succeed(b"bob")

        failure = self.failureResultOf(
            CredentialCheckers([Sloppy()]).check(PublicKey(b"k")), AuthenticationError
        )
        self.assertEqual(failure.value.kind, "internal")

    def test_raising_checker(self) -> None:
        """A checker that raises fails the Deferred, never the caller."""

        @implementer(ICredentialsChecker)
        class Broken:
            credentialInterfaces = (IPublicKey,)

            def requestAvatarId(self, credentials: Any) -> Deferred[object]:
                raise UnauthorizedLogin("no")

        self.failureResultOf(
            CredentialCheckers([Broken()]).check(PublicKey(b"k")), AuthenticationError
        )

    def test_repr_hides_token(self) -> None:
        self.assertNotIn("secret-token", repr(BearerToken("secret-token")))


class SessionCredentialsTests(SynchronousTestCase):
    """L{Session.authenticate} takes credentials objects, or a token."""

    def setUp(self) -> None:
        self.hub, self.recorder, _ = memory_hub(
            targets=[TargetConfig("box", "ssh", allow_groups=("ops",))]
        )
        self.hub.checkers.register(KeyChecker())

    def test_default_checkers(self) -> None:
        """A hub made with a verifier checks JWTs, and nothing else."""
        hub, _, _ = memory_hub()
        self.assertEqual(hub.checkers.interfaces(), (IBearerToken,))

    def test_token(self) -> None:
        """A token (str or bytes) is a bearer token, as before."""
        for presented in (token("alice", ("ops",)), token("al", ("ops",)).encode()):
            session = self.hub.open("ssh", "s", "10.0.0.1:2")
            identity = self.successResultOf(session.authenticate(presented, "box"))
            self.assertIs(session.identity, identity)

    def test_credentials(self) -> None:
        session = self.hub.open("ssh", "s", "10.0.0.1:2")
        identity = self.successResultOf(
            session.authenticate(PublicKey(b"bob's key"), "box")
        )
        self.assertEqual(identity.subject, "bob")
        self.assertEqual(session.identity, identity)
        (recording,) = self.recorder.opened
        self.assertEqual(recording.events()[0]["subject"], "bob")

    def test_refused_credentials(self) -> None:
        """Refused credentials leave no recording, and no identity."""
        session = self.hub.open("ssh", "s", "10.0.0.1:2")
        self.failureResultOf(
            session.authenticate(PublicKey(b"eve's key"), "box"), AuthenticationError
        )
        self.failureResultOf(
            session.authenticate(UsernamePassword(b"a", b"b"), "box"),
            AuthenticationError,
        )
        self.assertIsNone(session.identity)
        self.assertEqual(self.recorder.opened, [])
