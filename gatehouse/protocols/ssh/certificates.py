"""
OpenSSH user certificates for gatehouse identities.

The gateway's user CA mints short-lived certificates for an identity it
has verified (a JWT exchanged by C{gatehouse ssh-cert}): the identity
travels in the key id, the principals name what the holder may log in as.
The SSH listener accepts a certificate only when this CA signed it, it is
a user certificate inside its validity, it names the principal asked for,
and the client proved it holds the certified key
(L{SSHCertificateChecker}).  The certificate format and signatures are
L{cryptography}'s; nothing here parses or signs by hand.
"""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Iterable, Sequence

import attrs
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from cryptography.hazmat.primitives.serialization import ssh
from twisted.conch.error import ValidPublicKey
from twisted.conch.ssh import keys
from twisted.cred.checkers import ICredentialsChecker
from twisted.cred.credentials import ISSHPrivateKey
from twisted.internet.defer import Deferred, fail, succeed
from zope.interface import implementer

from gatehouse.identity import AuthenticationError, Identity

#: seconds a certificate is valid before it was minted (clock skew)
BACKDATE = 60
#: the key id's format marker (a certificate minted by something else
#: carries an id gatehouse does not read as an identity)
KEY_ID_FORMAT = "gatehouse/1"


class CertificateRefused(AuthenticationError):
    """A certificate the gateway does not accept; C{kind} says why."""


def _public_bytes(key: ssh.SSHCertPublicKeyTypes) -> bytes:
    return key.public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    )


@attrs.frozen
class UserCA:
    """
    The gateway's user certificate authority: an Ed25519 key.

    @ivar private_key: signs the certificates.
    """

    private_key: ed25519.Ed25519PrivateKey

    @classmethod
    def generate(cls) -> UserCA:
        """A new CA key."""
        return cls(ed25519.Ed25519PrivateKey.generate())

    @classmethod
    def from_file(cls, path: str) -> UserCA:
        """Read the CA key from an OpenSSH private key file."""
        with open(path, "rb") as f:
            return cls.from_bytes(f.read(), path)

    @classmethod
    def from_bytes(cls, data: bytes, path: str) -> UserCA:
        """The CA key from the contents of an OpenSSH private key file."""
        key = serialization.load_ssh_private_key(data, password=None)
        if not isinstance(key, ed25519.Ed25519PrivateKey):
            raise ValueError(f"{path}: the user CA key must be Ed25519")
        return cls(key)

    def save(self, path: str) -> None:
        """Write the CA key (mode 0600) and its public line to C{path}.pub."""
        data = self.private_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.OpenSSH,
            serialization.NoEncryption(),
        )
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        with open(path + ".pub", "wb") as f:
            f.write(self.public_line() + b" gatehouse-user-ca\n")

    def public_line(self) -> bytes:
        """The CA's public key as an OpenSSH line (for C{TrustedUserCAKeys})."""
        return _public_bytes(self.private_key.public_key())

    def mint(
        self,
        identity: Identity,
        public_key: ssh.SSHCertPublicKeyTypes,
        principals: Sequence[str],
        lifetime: float,
        now: float,
        serial: int | None = None,
    ) -> ssh.SSHCertificate:
        """
        A user certificate for C{public_key}, naming C{identity} in its key
        id, valid from a minute before C{now} for C{lifetime} seconds (never
        past the token's expiry), for C{principals}.
        """
        if not principals:
            raise ValueError("a certificate needs at least one principal")
        until = now + lifetime
        if identity.expires_at is not None:
            until = min(until, identity.expires_at)
        if until <= now:
            raise ValueError("the identity's token has expired")
        builder = (
            ssh.SSHCertificateBuilder()
            .public_key(public_key)
            .serial(
                serial
                if serial is not None
                else int.from_bytes(os.urandom(8), "big") >> 1
            )
            .type(ssh.SSHCertificateType.USER)
            .key_id(key_id(identity))
            .valid_principals([p.encode() for p in principals])
            .valid_after(int(now) - BACKDATE)
            .valid_before(int(until))
            .add_extension(b"permit-pty", b"")
            .add_extension(b"permit-port-forwarding", b"")
        )
        return builder.sign(self.private_key)


def mint_login(
    ca: UserCA,
    principal: str,
    key_identity: str,
    lifetime: float,
    now: float,
) -> tuple[ed25519.Ed25519PrivateKey, ssh.SSHCertificate]:
    """
    A fresh key and a certificate for it, for the gateway to log in to a
    target as C{principal} (a target trusts the CA with sshd's
    C{TrustedUserCAKeys}); C{key_identity} (the session) is the key id
    the target's log shows.
    """
    key = ed25519.Ed25519PrivateKey.generate()
    cert = (
        ssh.SSHCertificateBuilder()
        .public_key(key.public_key())
        .serial(int.from_bytes(os.urandom(8), "big") >> 1)
        .type(ssh.SSHCertificateType.USER)
        .key_id(key_identity.encode())
        .valid_principals([principal.encode()])
        .valid_after(int(now) - BACKDATE)
        .valid_before(int(now + lifetime))
        .add_extension(b"permit-pty", b"")
        .add_extension(b"permit-port-forwarding", b"")
        .sign(ca.private_key)
    )
    return key, cert


def key_id(identity: Identity) -> bytes:
    """The key id that carries C{identity} in a certificate."""
    return json.dumps(
        {
            "format": KEY_ID_FORMAT,
            "sub": identity.subject,
            "name": identity.name,
            "iss": identity.issuer,
            "groups": list(identity.groups),
        },
        separators=(",", ":"),
        sort_keys=True,
    ).encode()


def _identity(cert: ssh.SSHCertificate) -> Identity:
    try:
        fields = json.loads(cert.key_id)
        if not isinstance(fields, dict) or fields.get("format") != KEY_ID_FORMAT:
            raise ValueError("not a gatehouse key id")
        groups = fields["groups"]
        if not isinstance(groups, list) or not all(isinstance(g, str) for g in groups):
            raise ValueError("groups must be a list of strings")
        subject, name, issuer = fields["sub"], fields["name"], fields["iss"]
        if not all(isinstance(v, str) and v for v in (subject, name, issuer)):
            raise ValueError("sub, name and iss must be strings")
    except (ValueError, KeyError, UnicodeDecodeError) as e:
        raise CertificateRefused(
            f"certificate key id does not name an identity: {e}", "malformed"
        ) from e
    return Identity(
        subject,
        name,
        tuple(groups),
        issuer,
        float(cert.valid_before),
        float(cert.valid_before),
    )


def verify_certificate(
    blob: bytes,
    authorities: Iterable[bytes],
    principal: str,
    now: float,
) -> tuple[ssh.SSHCertificate, Identity]:
    """
    Accept the certificate C{blob} (its SSH wire form) for C{principal} at
    C{now} if one of C{authorities} (OpenSSH public key lines) signed it.

    @raise CertificateRefused: why not (C{kind}: C{malformed},
        C{not-user}, C{foreign-ca}, C{bad-signature}, C{not-yet-valid},
        C{expired}, C{wrong-principal}).
    """
    try:
        cert = ssh.load_ssh_public_identity(_line(blob))
    except (ValueError, ssh.UnsupportedAlgorithm) as e:
        raise CertificateRefused(f"unreadable certificate: {e}", "malformed") from e
    if not isinstance(cert, ssh.SSHCertificate):
        raise CertificateRefused("a plain key, not a certificate", "malformed")
    if cert.type != ssh.SSHCertificateType.USER:
        raise CertificateRefused("a host certificate, not a user one", "not-user")
    signer = _public_bytes(cert.signature_key())
    if not any(signer == _line_key(line) for line in authorities):
        raise CertificateRefused(
            "certificate signed by a CA this gateway does not trust", "foreign-ca"
        )
    try:
        cert.verify_cert_signature()
    except InvalidSignature as e:
        raise CertificateRefused(
            "certificate signature does not verify", "bad-signature"
        ) from e
    if now < cert.valid_after:
        raise CertificateRefused("certificate not valid yet", "not-yet-valid")
    if now >= cert.valid_before:
        raise CertificateRefused("certificate expired", "expired")
    if principal.encode() not in cert.valid_principals:
        raise CertificateRefused(
            f"certificate not valid for principal {principal!r}", "wrong-principal"
        )
    return cert, _identity(cert)


def _line(blob: bytes) -> bytes:
    """The OpenSSH public key line of a key blob in SSH wire form."""
    if len(blob) < 4:
        raise ValueError("truncated key blob")
    size = int.from_bytes(blob[:4], "big")
    name = blob[4 : 4 + size]
    if len(name) != size or not name or b" " in name:
        raise ValueError("bad key type in key blob")
    return name + b" " + base64.b64encode(blob)


def _line_key(line: bytes) -> bytes:
    """The key part (type and base64) of an OpenSSH public key line."""
    return b" ".join(line.split()[:2])


@implementer(ICredentialsChecker)
class SSHCertificateChecker:
    """
    Identity from an OpenSSH user certificate the gateway's CA signed,
    offered in public key authentication (Conch's L{ISSHPrivateKey}): the
    certificate is checked, then the signature that proves the client
    holds its key.  The identity is the certificate's, bound to the
    principal the client logs in as.
    """

    credentialInterfaces = (ISSHPrivateKey,)

    def __init__(self, authorities: Sequence[bytes], clock: object) -> None:
        """
        @param authorities: OpenSSH public key lines of the CAs trusted.
        @param clock: has C{seconds()} (the reactor).
        """
        self._authorities = tuple(authorities)
        self._clock = clock

    def trust(self, authorities: Sequence[bytes]) -> None:
        """Also accept certificates of C{authorities} (another listener's)."""
        self._authorities += tuple(a for a in authorities if a not in self._authorities)

    # Twisted types avatar ids as bytes; a gateway's is the Identity (as
    # gatehouse.credentials.JWTChecker's).
    def requestAvatarId(  # type: ignore[override]
        self, credentials: object
    ) -> Deferred[Identity]:
        """Check the certificate and the signature; fire with the Identity."""
        try:
            return succeed(self._check(credentials))
        except (CertificateRefused, ValidPublicKey) as e:
            return fail(e)

    def _check(self, credentials: object) -> Identity:
        username = credentials.username  # type: ignore[attr-defined]
        principal = (
            username.decode("utf-8", "replace")
            if isinstance(username, bytes)
            else username
        )
        cert, identity = verify_certificate(
            credentials.blob,  # type: ignore[attr-defined]
            self._authorities,
            principal,
            self._clock.seconds(),  # type: ignore[attr-defined]
        )
        signature = credentials.signature  # type: ignore[attr-defined]
        if not signature:
            # Conch asks the client to sign, then calls again.
            raise ValidPublicKey()
        key = keys.Key(cert.public_key())
        try:
            good = key.verify(signature, credentials.sigData)  # type: ignore[attr-defined]
        except Exception as e:  # a malformed signature is a bad one
            raise CertificateRefused(
                "the client's signature does not verify", "bad-signature"
            ) from e
        if not good:
            raise CertificateRefused(
                "the client's signature does not verify", "bad-signature"
            )
        return identity
