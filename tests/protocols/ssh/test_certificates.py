"""
Tests for L{gatehouse.protocols.ssh.certificates}: minting user
certificates for an identity and accepting only the ones the gateway's CA
signed, for the right principal, inside their validity, from a client that
holds the key.  OpenSSH's own C{ssh-keygen} reads what the CA mints, and
signs with the CA's key file a certificate the checker accepts.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import time

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.hazmat.primitives.serialization import ssh
from twisted.conch.error import ValidPublicKey
from twisted.conch.ssh import keys
from twisted.cred.checkers import ICredentialsChecker
from twisted.cred.credentials import SSHPrivateKey
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from gatehouse.identity import Identity
from gatehouse.protocols.ssh.certificates import (
    BACKDATE,
    CertificateRefused,
    SSHCertificateChecker,
    UserCA,
    key_id,
    verify_certificate,
)

NOW = 1_790_000_000.0
ALICE = Identity(
    "alice", "Alice Example", ("sre", "dba"), "https://idp.test", NOW + 3600
)


def _wire(cert: ssh.SSHCertificate) -> bytes:
    """The certificate's SSH wire form (what a client sends)."""
    return _blob(cert.public_bytes())


def _blob(line: bytes) -> bytes:
    """The key blob of an OpenSSH public key line."""
    return base64.b64decode(line.split()[1])


class MintAndVerifyTests(SynchronousTestCase):
    """What the CA mints verifies, with the identity in it."""

    def setUp(self) -> None:
        self.ca = UserCA.generate()
        self.user = ed25519.Ed25519PrivateKey.generate()
        self.trusted = [self.ca.public_line()]

    def mint(self, **kw: object) -> ssh.SSHCertificate:
        args: dict[str, object] = {
            "principals": ["web-1"],
            "lifetime": 600,
            "now": NOW,
        }
        args.update(kw)
        identity = args.pop("identity", ALICE)
        return self.ca.mint(identity, self.user.public_key(), **args)  # type: ignore[arg-type]

    def test_round_trip(self) -> None:
        cert = self.mint()
        got, identity = verify_certificate(_wire(cert), self.trusted, "web-1", NOW)
        self.assertEqual(
            (identity.subject, identity.name, identity.groups, identity.issuer),
            ("alice", "Alice Example", ("sre", "dba"), "https://idp.test"),
        )
        self.assertEqual(identity.expires_at, NOW + 600)
        self.assertEqual(got.valid_after, int(NOW) - BACKDATE)
        self.assertEqual(got.type, ssh.SSHCertificateType.USER)

    def test_lifetime_capped_by_token(self) -> None:
        """A certificate never outlives the token it was exchanged for."""
        cert = self.mint(lifetime=86400)
        self.assertEqual(cert.valid_before, int(ALICE.expires_at))
        expired = Identity("bob", "Bob", (), "https://idp.test", NOW - 1)
        self.assertRaises(ValueError, self.mint, identity=expired)
        self.assertRaises(ValueError, self.mint, principals=[])

    def refused(self, blob: bytes, principal: str = "web-1", now: float = NOW) -> str:
        error = self.assertRaises(
            CertificateRefused,
            verify_certificate,
            blob,
            self.trusted,
            principal,
            now,
        )
        return error.kind

    def test_refusals(self) -> None:
        """Each way a certificate is not good enough, refused with its kind."""
        good = _wire(self.mint())
        self.assertEqual(self.refused(good, principal="db-1"), "wrong-principal")
        self.assertEqual(self.refused(good, now=NOW + 600), "expired")
        self.assertEqual(self.refused(good, now=NOW - BACKDATE - 1), "not-yet-valid")
        foreign = UserCA.generate().mint(
            ALICE, self.user.public_key(), ["web-1"], 600, NOW
        )
        self.assertEqual(self.refused(_wire(foreign)), "foreign-ca")
        host = (
            ssh.SSHCertificateBuilder()
            .public_key(self.user.public_key())
            .serial(1)
            .type(ssh.SSHCertificateType.HOST)
            .key_id(key_id(ALICE))
            .valid_principals([b"web-1"])
            .valid_after(int(NOW) - 10)
            .valid_before(int(NOW) + 10)
            .sign(self.ca.private_key)
        )
        self.assertEqual(self.refused(_wire(host)), "not-user")
        plain = self.user.public_key().public_bytes(
            serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
        )
        self.assertEqual(self.refused(_blob(plain)), "malformed")
        self.assertEqual(self.refused(b"\x00\x00\x00\x05junk"), "malformed")
        # The signature's last byte flipped: the CA's signature breaks.
        self.assertIn(
            self.refused(good[:-1] + bytes([good[-1] ^ 1])),
            ("bad-signature", "malformed"),
        )

    def test_foreign_key_id(self) -> None:
        """A certificate of this CA whose key id names no identity is refused."""
        cert = (
            ssh.SSHCertificateBuilder()
            .public_key(self.user.public_key())
            .serial(1)
            .type(ssh.SSHCertificateType.USER)
            .key_id(b"alice@laptop")
            .valid_principals([b"web-1"])
            .valid_after(int(NOW) - 10)
            .valid_before(int(NOW) + 10)
            .sign(self.ca.private_key)
        )
        self.assertEqual(self.refused(_wire(cert)), "malformed")
        bad_groups = json.loads(key_id(ALICE))
        bad_groups["groups"] = "dba"
        cert = (
            ssh.SSHCertificateBuilder()
            .public_key(self.user.public_key())
            .serial(1)
            .type(ssh.SSHCertificateType.USER)
            .key_id(json.dumps(bad_groups).encode())
            .valid_principals([b"web-1"])
            .valid_after(int(NOW) - 10)
            .valid_before(int(NOW) + 10)
            .sign(self.ca.private_key)
        )
        self.assertEqual(self.refused(_wire(cert)), "malformed")


class OpenSSHInteropTests(SynchronousTestCase):
    """OpenSSH's ssh-keygen and the CA agree on the format."""

    def setUp(self) -> None:
        self.dir = self.mktemp()
        os.makedirs(self.dir)
        self.ca = UserCA.generate()
        self.ca.save(os.path.join(self.dir, "ca"))

    def test_ssh_keygen_reads_minted(self) -> None:
        user = ed25519.Ed25519PrivateKey.generate()
        cert = self.ca.mint(
            ALICE, user.public_key(), ["web-1", "deploy+web-1"], 600, NOW
        )
        path = os.path.join(self.dir, "id-cert.pub")
        with open(path, "wb") as f:
            f.write(cert.public_bytes() + b"\n")
        out = subprocess.run(
            ["ssh-keygen", "-L", "-f", path], capture_output=True, check=True
        ).stdout.decode()
        self.assertIn("user certificate", out)
        self.assertIn("web-1", out)
        self.assertIn("deploy+web-1", out)
        self.assertIn('"sub":"alice"', out)
        with open(os.path.join(self.dir, "ca.pub"), "rb") as f:
            self.assertEqual(f.read().split()[:2], self.ca.public_line().split())

    def test_ssh_keygen_signed_accepted(self) -> None:
        """A certificate ssh-keygen signs with the CA's key file verifies."""
        user = os.path.join(self.dir, "user")
        subprocess.run(
            ["ssh-keygen", "-q", "-t", "ecdsa", "-N", "", "-f", user], check=True
        )
        subprocess.run(
            [
                "ssh-keygen",
                "-q",
                "-s",
                os.path.join(self.dir, "ca"),
                "-I",
                key_id(ALICE).decode(),
                "-n",
                "web-1",
                "-V",
                "-5m:+5m",
                user + ".pub",
            ],
            check=True,
            capture_output=True,
        )
        with open(user + "-cert.pub", "rb") as f:
            blob = _blob(f.read())
        _, identity = verify_certificate(
            blob, [self.ca.public_line()], "web-1", time.time()
        )
        self.assertEqual(identity.subject, "alice")


class CheckerTests(SynchronousTestCase):
    """The credentials checker wants the certificate and the key's signature."""

    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(NOW)
        self.ca = UserCA.generate()
        self.user = ec.generate_private_key(ec.SECP256R1())
        cert = self.ca.mint(ALICE, self.user.public_key(), ["web-1"], 600, NOW)
        self.blob = _wire(cert)
        self.checker = SSHCertificateChecker([self.ca.public_line()], self.clock)

    def creds(
        self, signature: bytes | None, username: bytes = b"web-1"
    ) -> SSHPrivateKey:
        data = b"session id and userauth request"
        return SSHPrivateKey(
            username,
            b"ecdsa-sha2-nistp256-cert-v01@openssh.com",
            self.blob,
            data,
            signature,
        )

    def test_interface(self) -> None:
        self.assertTrue(verifyObject(ICredentialsChecker, self.checker))

    def test_signed(self) -> None:
        signature = keys.Key(self.user).sign(b"session id and userauth request")
        identity = self.successResultOf(
            self.checker.requestAvatarId(self.creds(signature))
        )
        self.assertEqual(identity.subject, "alice")

    def test_asks_for_signature(self) -> None:
        self.failureResultOf(
            self.checker.requestAvatarId(self.creds(None)), ValidPublicKey
        )

    def test_wrong_key_signature(self) -> None:
        other = ec.generate_private_key(ec.SECP256R1())
        signature = keys.Key(other).sign(b"session id and userauth request")
        failure = self.failureResultOf(
            self.checker.requestAvatarId(self.creds(signature)), CertificateRefused
        )
        self.assertEqual(failure.value.kind, "bad-signature")
        failure = self.failureResultOf(
            self.checker.requestAvatarId(self.creds(b"\x00\x00\x00\x01x")),
            CertificateRefused,
        )
        self.assertEqual(failure.value.kind, "bad-signature")

    def test_other_principal(self) -> None:
        signature = keys.Key(self.user).sign(b"session id and userauth request")
        failure = self.failureResultOf(
            self.checker.requestAvatarId(self.creds(signature, b"db-1")),
            CertificateRefused,
        )
        self.assertEqual(failure.value.kind, "wrong-principal")

    def test_expires_with_clock(self) -> None:
        signature = keys.Key(self.user).sign(b"session id and userauth request")
        self.clock.advance(600)
        failure = self.failureResultOf(
            self.checker.requestAvatarId(self.creds(signature)), CertificateRefused
        )
        self.assertEqual(failure.value.kind, "expired")
