"""
How a client proves who it is: pluggable credentials checkers, the seam
Twisted Conch uses (L{twisted.cred}).

A protocol turns what its client presented into a credentials object (a
L{BearerToken} for a JWT sent as a password or an C{Authorization:
Bearer} header; next, an OpenSSH certificate or public key) and hands it to
L{gatehouse.session.Session.authenticate}.  The hub's L{CredentialCheckers}
finds the checker registered for that kind of credentials; every checker
yields the same L{Identity}.  Credentials no checker accepts are refused
(fail closed).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol

import attrs
from twisted.cred.checkers import ICredentialsChecker
from twisted.cred.credentials import ICredentials
from twisted.cred.error import UnauthorizedLogin
from twisted.internet.defer import Deferred, fail, maybeDeferred
from twisted.python.failure import Failure
from zope.interface import Attribute, implementer
from zope.interface.interface import InterfaceClass

from gatehouse.identity import AuthenticationError, Identity

__all__ = [
    "BearerToken",
    "CredentialCheckers",
    "IBearerToken",
    "JWTChecker",
    "TokenVerifying",
]


class IBearerToken(ICredentials):
    """
    A bearer token (a JWT from the organisation's identity provider), as
    the client presented it.
    """

    token = Attribute(
        "The token (C{bytes}, or C{str} as a text protocol decoded it: the "
        "verifier checks either shape)."
    )


@implementer(IBearerToken)
@attrs.frozen
class BearerToken:
    """A bearer token presented by a client; its repr never shows it."""

    token: str | bytes = attrs.field(repr=False)


class TokenVerifying(Protocol):
    """What L{JWTChecker} needs: L{gatehouse.identity.TokenVerifier}."""

    def verify(self, token: str | bytes) -> Deferred[Identity]:
        """Fires with the L{Identity} the token asserts."""


@implementer(ICredentialsChecker)
class JWTChecker:
    """
    Checks L{IBearerToken} credentials with the gateway's JWT verifier.

    @ivar verifier: a L{gatehouse.identity.TokenVerifier} (or what stands
        in for one, such as the daemon's swappable verifier).
    """

    credentialInterfaces = (IBearerToken,)

    def __init__(self, verifier: TokenVerifying) -> None:
        self.verifier = verifier

    # Twisted types avatar ids as bytes; a gateway's avatar id is the
    # Identity itself (the portal never sees it: CredentialCheckers does).
    def requestAvatarId(  # type: ignore[override]
        self, credentials: IBearerToken
    ) -> Deferred[Identity]:
        """
        @return: Deferred firing with the token's L{Identity}, or failing
            with L{AuthenticationError}.
        """
        return self.verifier.verify(credentials.token)


def _identity(result: object) -> Identity:
    """A checker's answer, if it is an L{Identity} (anything else is refused)."""
    if not isinstance(result, Identity):
        raise AuthenticationError(
            f"internal error: a credentials checker answered {type(result).__name__}",
            kind="internal",
        )
    return result


def _refused(failure: Failure) -> Failure:
    """A Twisted checker's refusal becomes the gateway's own."""
    if failure.check(UnauthorizedLogin) and not failure.check(AuthenticationError):
        return Failure(AuthenticationError(str(failure.value) or "unauthorized"))
    return failure


class CredentialCheckers:
    """
    The registered checkers, by the credentials interface each accepts (as
    L{twisted.cred.portal.Portal} keeps them), first registration first.
    """

    def __init__(self, checkers: Iterable[ICredentialsChecker] = ()) -> None:
        self._checkers: dict[InterfaceClass, ICredentialsChecker] = {}
        for checker in checkers:
            self.register(checker)

    def register(self, checker: ICredentialsChecker) -> None:
        """Use C{checker} for every credentials interface it declares."""
        for interface in checker.credentialInterfaces:
            self._checkers[interface] = checker

    def interfaces(self) -> tuple[InterfaceClass, ...]:
        """The credentials interfaces some checker accepts."""
        return tuple(self._checkers)

    def check(self, credentials: object) -> Deferred[Identity]:
        """
        Check C{credentials} with the checker for their interface.

        @return: Deferred firing with the L{Identity}, or failing with
            L{AuthenticationError}: also when no checker accepts this kind
            of credentials, or a checker answers anything but an Identity.
        """
        for interface, checker in self._checkers.items():
            if interface.providedBy(credentials):
                d = maybeDeferred(checker.requestAvatarId, credentials)
                return d.addCallbacks(_identity, _refused)
        return fail(
            AuthenticationError(
                f"no credentials checker for {type(credentials).__name__}",
                kind="other",
            )
        )
