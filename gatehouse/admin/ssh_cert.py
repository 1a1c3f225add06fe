"""
C{POST /api/v1/ssh/certificates}: a short-lived OpenSSH user certificate
for the caller's own identity, signed by the gateway's SSH user CA.

The caller proves who it is with its bearer token (as for every C{/api/}
endpoint) and sends its public key::

    {"public_key": "ssh-ed25519 AAAA...",
     "principals": ["web-1"],        # optional: SSH targets to log in to
     "lifetime": "30m"}              # optional

Principals are target names (C{ssh web-1@gw}, C{ssh deploy+web-1@gw}):
without C{principals}, every SSH target the identity may reach; a target
it may not reach is refused (403), by the core's own access check
(L{gatehouse.session.SessionHub.access_refusal}).  The lifetime is the
configured default when absent, shortened to the configured maximum, and
never past the token's expiry.  Every certificate issued is logged
(C{ssh.certificate}: serial, subject, principals, validity, key).

The HTTP side lives here; the key checks and the signing are the SSH
package's (an L{ICertificateIssuer}, found by name as protocol adapters
are: the core never imports a protocol).
"""

from __future__ import annotations

import typing
from collections.abc import Mapping, Sequence
from importlib import import_module
from typing import TYPE_CHECKING, Any

import attrs
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from zope.interface import Attribute, Interface

from gatehouse._duration import parse_duration
from gatehouse.identity import Identity
from gatehouse.logs import emit, iso_time, summary

if TYPE_CHECKING:
    from gatehouse.config import SSHUserCAConfig, TargetConfig

__all__ = [
    "ISSUER_FACTORY",
    "CertificateEndpoint",
    "CertificateRequestRefused",
    "ICertificateIssuer",
    "IssuedCertificate",
    "UnacceptableKey",
    "make_issuer",
]

#: what builds the issuer from the configuration ("module:function")
ISSUER_FACTORY = "gatehouse.protocols.ssh.issuer:issuer_from_config"
#: the protocol whose targets the principals name
PROTOCOL = "ssh"
#: at most this many principals in one request
MAX_PRINCIPALS = 256
#: the longest public key line read (an RSA 16384-bit key is ~2.8 KiB)
MAX_PUBLIC_KEY = 8192

_BODY_KEYS = ("public_key", "principals", "lifetime")
_log = Logger(namespace="gatehouse.admin")


class UnacceptableKey(ValueError):
    """A public key the CA does not certify; the message says why."""


@attrs.frozen
class IssuedCertificate:
    """
    A certificate an L{ICertificateIssuer} signed.

    @ivar line: the OpenSSH certificate line (what C{KEY-cert.pub} holds).
    @ivar key_id: the certificate's key id (the identity, as JSON).
    @ivar fingerprint: the certified key's C{SHA256:...} fingerprint.
    """

    line: str
    serial: int
    key_id: str
    principals: tuple[str, ...]
    valid_after: int
    valid_before: int
    fingerprint: str


class ICertificateIssuer(Interface):
    """Signs SSH user certificates for verified identities."""

    default_lifetime = Attribute("Seconds, when the caller asks for none.")
    max_lifetime = Attribute("The longest lifetime given, in seconds.")

    def issue(
        identity: Identity,
        public_key: str,
        principals: Sequence[str],
        lifetime: float,
        now: float,
    ) -> IssuedCertificate:
        """
        Certify C{public_key} (an OpenSSH public key line) for C{identity}
        and C{principals}, valid for C{lifetime} seconds from C{now} but
        never past the identity's token expiry.

        @raise UnacceptableKey: the key is malformed, or too weak.
        """


class CertificateRequestRefused(Exception):
    """A request answered with an error (HTTP C{status}, C{code}, C{message})."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(status, code, message)
        self.status = status
        self.code = code
        self.message = message


class TargetAccess(typing.Protocol):
    """What the endpoint asks of the session hub: targets, and who may reach them."""

    targets: Mapping[str, TargetConfig]

    def access_refusal(
        self, protocol: str, identity: Identity, target: str | None
    ) -> Exception | None:
        """Why C{identity} may not reach C{target}, or None."""
        ...


def _bad(message: str) -> CertificateRequestRefused:
    return CertificateRequestRefused(400, "bad-request", message)


class CertificateEndpoint:
    """
    Answers certificate requests: checks the body, decides the principals
    and lifetime, has the issuer sign, logs what was issued.
    """

    def __init__(
        self, issuer: ICertificateIssuer, access: TargetAccess, clock: IReactorTime
    ) -> None:
        self.issuer = issuer
        self._access = access
        self._clock = clock

    def answer(
        self, identity: Identity, body: Mapping[str, Any], client: str
    ) -> dict[str, object]:
        """
        The JSON answer to C{identity}'s request C{body} from C{client}.

        @raise CertificateRequestRefused: why not.
        """
        for key in body:
            if key not in _BODY_KEYS:
                raise _bad(
                    f"unknown member {summary(str(key), 64)!r} "
                    f"(the body takes {', '.join(_BODY_KEYS)})"
                )
        public_key = body.get("public_key")
        if not isinstance(public_key, str) or not public_key.strip():
            raise _bad("public_key (an OpenSSH public key line) is required")
        if len(public_key) > MAX_PUBLIC_KEY:
            raise _bad(f"public_key is longer than {MAX_PUBLIC_KEY} characters")
        now = self._clock.seconds()
        if identity.expires_at is not None and identity.expires_at <= now:
            raise CertificateRequestRefused(
                401, "unauthorized", "the token has expired"
            )
        principals = self._principals(identity, body.get("principals"))
        lifetime = min(self._lifetime(body.get("lifetime")), self.issuer.max_lifetime)
        try:
            issued = self.issuer.issue(identity, public_key, principals, lifetime, now)
        except UnacceptableKey as e:
            raise CertificateRequestRefused(400, "bad-public-key", str(e))
        emit(
            "ssh.certificate",
            "SSH certificate {serial} issued to {subject} ({name}) for "
            "{principals_text}, valid until {valid_until}, key {fingerprint}",
            logger=_log,
            serial=str(issued.serial),
            subject=identity.subject,
            name=summary(identity.name),
            issuer=identity.issuer,
            groups=list(identity.groups),
            principals=list(issued.principals),
            principals_text=", ".join(issued.principals),
            valid_after=issued.valid_after,
            valid_before=issued.valid_before,
            valid_until=iso_time(issued.valid_before),
            fingerprint=issued.fingerprint,
            client_address=client,
        )
        return {
            "certificate": issued.line,
            "serial": str(issued.serial),
            "key_id": issued.key_id,
            "principals": list(issued.principals),
            "valid_after": issued.valid_after,
            "valid_before": issued.valid_before,
        }

    def _principals(self, identity: Identity, given: object) -> tuple[str, ...]:
        access = self._access
        if given is None:
            reachable = tuple(
                sorted(
                    name
                    for name, target in access.targets.items()
                    if target.protocol == PROTOCOL
                    and access.access_refusal(PROTOCOL, identity, name) is None
                )
            )
            if not reachable:
                raise CertificateRequestRefused(
                    403, "forbidden", "this identity may reach no SSH target"
                )
            return reachable
        if (
            not isinstance(given, list)
            or not given
            or not all(isinstance(p, str) and p for p in given)
        ):
            raise _bad("principals must be a non-empty list of target names")
        if len(given) > MAX_PRINCIPALS:
            raise _bad(f"at most {MAX_PRINCIPALS} principals")
        for name in given:
            refusal = access.access_refusal(PROTOCOL, identity, name)
            if refusal is not None:
                raise CertificateRequestRefused(
                    403,
                    "forbidden",
                    f"no certificate for {summary(name, 64)!r}: "
                    f"{getattr(refusal, 'reason', refusal)}",
                )
        return tuple(dict.fromkeys(given))

    def _lifetime(self, given: object) -> float:
        if given is None:
            return float(self.issuer.default_lifetime)
        if not isinstance(given, str):
            raise _bad('lifetime must be a duration such as "30m"')
        try:
            lifetime = parse_duration(given)
        except ValueError as e:
            raise _bad(f"lifetime: {e}")
        if lifetime <= 0:
            raise _bad("lifetime must be more than 0")
        return lifetime


def make_issuer(config: SSHUserCAConfig, clock: IReactorTime) -> ICertificateIssuer:
    """
    The issuer for C{config} (the SSH package's, by name): reads the CA
    key, creating it when it is missing.

    @raise ValueError: the key cannot be used; the message says why.
    """
    module, _, function = ISSUER_FACTORY.partition(":")
    factory = getattr(import_module(module), function)
    issuer: ICertificateIssuer = factory(config, clock)
    return issuer
