"""
The gateway's SSH user CA at work: reads (or, on first start, creates) its
key, and certifies the public keys callers of the admin API send
(L{gatehouse.admin.ssh_cert}) for their own identity.
"""

from __future__ import annotations

import base64
import hashlib
import os
import stat
import warnings
from collections.abc import Sequence

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed25519, rsa
from cryptography.hazmat.primitives.serialization import ssh
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from zope.interface import implementer

from gatehouse.admin.ssh_cert import (
    ICertificateIssuer,
    IssuedCertificate,
    UnacceptableKey,
)
from gatehouse.config import SSHUserCAConfig
from gatehouse.identity import Identity
from gatehouse.logs import emit
from gatehouse.protocols.ssh.certificates import UserCA, key_id

__all__ = [
    "MIN_RSA_BITS",
    "UserCAIssuer",
    "fingerprint",
    "issuer_from_config",
    "load_or_create",
    "read_public_key",
]

#: RSA keys shorter than this are not certified
MIN_RSA_BITS = 2048

_log = Logger(namespace="gatehouse.ssh")


def fingerprint(key: ssh.SSHCertPublicKeyTypes) -> str:
    """The key's OpenSSH C{SHA256:...} fingerprint (as C{ssh-keygen -l})."""
    blob = base64.b64decode(
        key.public_bytes(ssh.Encoding.OpenSSH, ssh.PublicFormat.OpenSSH).split()[1]
    )
    digest = base64.b64encode(hashlib.sha256(blob).digest()).rstrip(b"=")
    return "SHA256:" + digest.decode("ascii")


def read_public_key(text: str) -> ssh.SSHCertPublicKeyTypes:
    """
    The user's public key in the OpenSSH line C{text} (type, base64,
    optional comment).

    @raise UnacceptableKey: malformed, a certificate, DSA, or RSA under
        L{MIN_RSA_BITS} bits.
    """
    words = text.strip().split()
    if len(words) < 2:
        raise UnacceptableKey("public_key is not an OpenSSH public key line")
    kind = words[0]
    if kind.endswith("-cert-v01@openssh.com"):
        raise UnacceptableKey("public_key is a certificate: send the plain key")
    if kind == "ssh-dss":
        raise UnacceptableKey("DSA keys are not certified: use ed25519")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            key = ssh.load_ssh_public_key(f"{kind} {words[1]}".encode("ascii"))
    except (ValueError, UnicodeEncodeError, UnsupportedAlgorithm) as e:
        raise UnacceptableKey(f"public_key cannot be read: {e}") from e
    if isinstance(key, dsa.DSAPublicKey):
        raise UnacceptableKey("DSA keys are not certified: use ed25519")
    if isinstance(key, rsa.RSAPublicKey) and key.key_size < MIN_RSA_BITS:
        raise UnacceptableKey(
            f"an RSA key of {key.key_size} bits is too weak "
            f"(at least {MIN_RSA_BITS}; better ed25519)"
        )
    if not isinstance(
        key, ed25519.Ed25519PublicKey | ec.EllipticCurvePublicKey | rsa.RSAPublicKey
    ):
        raise UnacceptableKey(f"{kind} keys are not certified: use ed25519")
    return key


@implementer(ICertificateIssuer)
class UserCAIssuer:
    """
    Certifies users' keys with the gateway's L{UserCA}.

    @ivar default_lifetime: seconds, when the caller asks for none.
    @ivar max_lifetime: the longest lifetime given, in seconds.
    """

    def __init__(
        self, ca: UserCA, default_lifetime: float, max_lifetime: float
    ) -> None:
        self.ca = ca
        self.default_lifetime = default_lifetime
        self.max_lifetime = max_lifetime

    def issue(
        self,
        identity: Identity,
        public_key: str,
        principals: Sequence[str],
        lifetime: float,
        now: float,
    ) -> IssuedCertificate:
        """Certify C{public_key} (see L{ICertificateIssuer.issue})."""
        key = read_public_key(public_key)
        lifetime = min(lifetime, self.max_lifetime)
        cert = self.ca.mint(identity, key, principals, lifetime, now)
        return IssuedCertificate(
            line=cert.public_bytes().decode("ascii"),
            serial=cert.serial,
            key_id=key_id(identity).decode("utf-8"),
            principals=tuple(p.decode("utf-8") for p in cert.valid_principals),
            valid_after=cert.valid_after,
            valid_before=cert.valid_before,
            fingerprint=fingerprint(key),
        )


def load_or_create(path: str) -> UserCA:
    """
    The CA whose key is in C{path}; a new one, written there (mode 0600,
    with C{PATH.pub}), when the file does not exist.  Its public line is
    logged either way, and C{PATH.pub} rewritten when it is missing.

    @raise ValueError: the file is readable by others, or not an OpenSSH
        Ed25519 private key without a passphrase.
    """
    created = False
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        UserCA.generate().save(path)
        created = True
        mode = os.stat(path).st_mode
    if stat.S_IMODE(mode) & 0o077:
        raise ValueError(
            f"{path}: the SSH user CA key is readable by others "
            f"(mode {stat.S_IMODE(mode):04o}; chmod 600 it)"
        )
    try:
        ca = UserCA.from_file(path)
    except (ValueError, TypeError, UnsupportedAlgorithm) as e:
        raise ValueError(f"{path}: not a usable SSH user CA key: {e}") from e
    public = ca.public_line().decode("ascii")
    if not os.path.exists(path + ".pub"):
        with open(path + ".pub", "w", encoding="ascii") as f:
            f.write(public + " gatehouse-user-ca\n")
    emit(
        "ssh.user-ca",
        "SSH user CA {path} ({state}): {public_key} -- trust it with the SSH "
        "listener's user_ca_keys: [{path}.pub]",
        logger=_log,
        path=path,
        state="created" if created else "loaded",
        public_key=public,
        fingerprint=fingerprint(ca.private_key.public_key()),
    )
    return ca


def issuer_from_config(config: SSHUserCAConfig, clock: IReactorTime) -> UserCAIssuer:
    """The issuer the configuration's C{ssh_user_ca} describes."""
    return UserCAIssuer(
        load_or_create(config.key), config.certificate_lifetime, config.max_lifetime
    )
