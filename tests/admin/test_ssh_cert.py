"""
Tests for C{POST /api/v1/ssh/certificates} (L{gatehouse.admin.ssh_cert},
L{gatehouse.protocols.ssh.issuer}): the admin API served on 127.0.0.1 with a
real L{TokenVerifier}, L{SessionHub} and user CA, called over HTTP with
real JWTs.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import warnings
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed25519, rsa
from twisted.internet.defer import inlineCallbacks
from twisted.internet.testing import MemoryReactorClock
from twisted.logger import globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase, TestCase
from zope.interface.verify import verifyObject

from gatehouse.admin import make_admin_site
from gatehouse.admin.ssh_cert import (
    CertificateEndpoint,
    ICertificateIssuer,
    UnacceptableKey,
)
from gatehouse.config import ConfigError, SSHUserCAConfig, TargetConfig, load_config
from gatehouse.identity import CLIENT_MESSAGE
from gatehouse.protocols.ssh.certificates import (
    CertificateRefused,
    UserCA,
    verify_certificate,
)
from gatehouse.protocols.ssh.issuer import (
    UserCAIssuer,
    fingerprint,
    issuer_from_config,
    load_or_create,
    read_public_key,
)
from gatehouse.service import _restart_needed, build_components
from tests.admin.test_api import NOW, Client, Gateway, listen, token
from tests.fixtures.sshd import ssh_keygen_program
from tests.test_config import ConfigFiles

PATH = "/api/v1/ssh/certificates"
HOUR = 3600.0

#: the ssh targets of the test gateway, and who may reach them
TARGETS = (
    TargetConfig("web-1", "ssh", allow_groups=("dev", "dba")),
    TargetConfig("web-2", "ssh", allow_groups=("dev",)),
    TargetConfig("vault", "ssh", allow_groups=("ops",)),
    TargetConfig("db", "postgres", allow_groups=("*",)),
)


def public_line(key: Any) -> str:
    """The OpenSSH public key line of private C{key}."""
    return (
        key.public_key()
        .public_bytes(
            serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
        )
        .decode("ascii")
    )


def wire(certificate: str) -> bytes:
    """A certificate line's key blob (SSH wire form), as a client offers it."""
    import base64

    return base64.b64decode(certificate.split()[1])


class Events:
    """The gatehouse log events emitted while it observes."""

    def __init__(self, case: TestCase) -> None:
        self.seen: list[dict[str, Any]] = []
        globalLogPublisher.addObserver(self.seen.append)
        case.addCleanup(globalLogPublisher.removeObserver, self.seen.append)

    def named(self, name: str) -> list[dict[str, Any]]:
        return [
            e["gatehouse_fields"] for e in self.seen if e.get("gatehouse_event") == name
        ]


class CertificateAPITestCase(TestCase):
    """
    Serves the admin API of a L{tests.admin.test_api.Gateway} whose hub has
    L{TARGETS}, with a fresh user CA (default lifetime 1h, at most 4h),
    the API itself for the group dba only.
    """

    @inlineCallbacks
    def setUp(self) -> Any:
        self.gateway = Gateway(self.mktemp(), index=False)
        yield self.gateway.start()
        self.addCleanup(self.gateway.stop)
        g = self.gateway
        g.hub.targets = {t.name: t for t in TARGETS}
        self.ca = UserCA.generate()
        self.issuer = UserCAIssuer(self.ca, HOUR, 4 * HOUR)
        self.site = make_admin_site(
            g.broker,
            g.verifier,
            g.metrics,
            g.sessions,
            g.clock,
            groups=frozenset({"dba"}),
            certificates=CertificateEndpoint(self.issuer, g.hub, g.clock),
        )
        self.url = listen(self, self.site)
        self.client = Client(self.url)
        self.key = ed25519.Ed25519PrivateKey.generate()
        self.events = Events(self)

    @inlineCallbacks
    def ask(self, body: object, bearer: str | None = None, who: str = "alice") -> Any:
        """POST C{body} (JSON) as C{who}, or with C{bearer}; the answer, parsed."""
        if bearer is None:
            bearer = self.gateway.tokens[who]
        response, data = yield self.client.call(
            b"POST", PATH, bearer, json.dumps(body).encode()
        )
        return response.code, json.loads(data), response

    def body(self, **fields: Any) -> dict[str, Any]:
        return {"public_key": public_line(self.key), **fields}

    def verify(self, answer: dict[str, Any], principal: str, at: float = NOW) -> Any:
        """verify_certificate with this CA, for C{principal} at C{at}."""
        return verify_certificate(
            wire(answer["certificate"]), [self.ca.public_line()], principal, at
        )

    def assertRefused(
        self, result: tuple[int, dict[str, Any], Any], status: int, code: str
    ) -> str:
        got, body, _ = result
        self.assertEqual((got, body.get("error")), (status, code), body)
        self.assertNotIn("certificate", body)
        self.assertEqual(self.events.named("ssh.certificate"), [])
        message: str = body["message"]
        return message


class IssueTests(CertificateAPITestCase):
    """Certificates for the caller's own identity."""

    @inlineCallbacks
    def test_default_principals(self) -> Any:
        """
        Without principals: every SSH target the identity may reach (not
        the PostgreSQL one, not those of other groups), for the default
        lifetime; alice is in none of the admin API's groups and still
        gets hers.  The certificate is this CA's, for alice's key, her
        identity in the key id, and it is logged.
        """
        code, answer, _ = yield self.ask(self.body())
        self.assertEqual(code, 200, answer)
        self.assertEqual(answer["principals"], ["web-1", "web-2"])
        self.assertEqual(answer["valid_before"], int(NOW + HOUR))
        self.assertEqual(answer["valid_after"], int(NOW) - 60)
        cert, identity = self.verify(answer, "web-2")
        self.assertEqual(
            cert.public_key().public_bytes(
                serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
            ),
            public_line(self.key).encode(),
        )
        self.assertEqual(
            (identity.subject, identity.name, identity.groups),
            ("alice", "Alice", ("dev",)),
        )
        self.assertEqual(json.loads(answer["key_id"])["sub"], "alice")
        self.assertEqual(cert.key_id.decode(), answer["key_id"])
        self.assertEqual(str(cert.serial), answer["serial"])
        [logged] = self.events.named("ssh.certificate")
        self.assertEqual(logged["serial"], answer["serial"])
        self.assertEqual(logged["subject"], "alice")
        self.assertEqual(logged["principals"], ["web-1", "web-2"])
        self.assertEqual(logged["valid_before"], answer["valid_before"])
        self.assertEqual(logged["valid_after"], answer["valid_after"])
        self.assertEqual(logged["fingerprint"], fingerprint(self.key.public_key()))
        self.assertEqual(logged["client_address"], "127.0.0.1")

    @inlineCallbacks
    def test_other_identity(self) -> Any:
        """Carol (dba, ops) gets web-1 and vault: her groups decide."""
        code, answer, _ = yield self.ask(self.body(), who="carol")
        self.assertEqual((code, answer["principals"]), (200, ["vault", "web-1"]))
        self.assertEqual(self.verify(answer, "vault")[1].subject, "carol")

    @inlineCallbacks
    def test_chosen_principals(self) -> Any:
        """
        Principals asked for are the certificate's (repeats once); the
        certificate is refused for a principal it does not name.
        """
        code, answer, _ = yield self.ask(self.body(principals=["web-2", "web-2"]))
        self.assertEqual((code, answer["principals"]), (200, ["web-2"]))
        self.verify(answer, "web-2")
        e = self.assertRaises(CertificateRefused, self.verify, answer, "web-1")
        self.assertEqual(e.kind, "wrong-principal")

    @inlineCallbacks
    def test_lifetime(self) -> Any:
        """
        A lifetime asked for is given; a longer one than the maximum is
        cut to it, and the token's expiry cuts it further.
        """
        code, answer, _ = yield self.ask(self.body(lifetime="30m"))
        self.assertEqual((code, answer["valid_before"]), (200, int(NOW + 1800)))
        self.assertRaises(CertificateRefused, self.verify, answer, "web-1", NOW + 1800)
        code, answer, _ = yield self.ask(self.body(lifetime="10h"))
        # Alice's token expires after an hour, before the 4h maximum.
        self.assertEqual((code, answer["valid_before"]), (200, int(NOW + HOUR)))
        self.issuer.max_lifetime = 600.0
        code, answer, _ = yield self.ask(self.body(lifetime="10h"))
        self.assertEqual((code, answer["valid_before"]), (200, int(NOW + 600)))

    @inlineCallbacks
    def test_key_types(self) -> Any:
        """ECDSA and RSA of 2048 bits and more are certified too."""
        for key in (
            ec.generate_private_key(ec.SECP256R1()),
            rsa.generate_private_key(65537, 2048),
        ):
            code, answer, _ = yield self.ask({"public_key": public_line(key)})
            self.assertEqual(code, 200, answer)
            self.verify(answer, "web-1")

    @inlineCallbacks
    def test_comment_and_trailing_slash(self) -> Any:
        """A key line with a comment is read; C{PATH/} is the same endpoint."""
        line = public_line(self.key) + " alice@laptop"
        response, data = yield self.client.call(
            b"POST",
            PATH + "/",
            self.gateway.tokens["alice"],
            json.dumps({"public_key": line}).encode(),
        )
        self.assertEqual(response.code, 200, data)


class RefusalTests(CertificateAPITestCase):
    """What is refused, with which status, and that nothing is issued."""

    @inlineCallbacks
    def test_no_token(self) -> Any:
        """No token, a bad one, an expired one: 401, the generic message."""
        response, data = yield self.client.call(
            b"POST", PATH, None, json.dumps(self.body()).encode()
        )
        self.assertEqual(
            (response.code, json.loads(data)["error"]), (401, "unauthorized")
        )
        forged = token("alice", ("dev",), secret=b"another secret of 32 bytes or more")
        expired = token("alice", ("dev",), now=NOW - 7200)
        for bad in (forged, expired, "not.a.jwt"):
            result = yield self.ask(self.body(), bearer=bad)
            message = self.assertRefused(result, 401, "unauthorized")
            self.assertEqual(message, CLIENT_MESSAGE)
            self.assertEqual(
                result[2].headers.getRawHeaders(b"www-authenticate"),
                [b'Bearer realm="gatehouse"'],
            )

    @inlineCallbacks
    def test_target_not_allowed(self) -> Any:
        """
        A target the identity may not reach, or that is not an SSH target,
        or does not exist: 403 naming it; none of the others is issued.
        """
        for principals, name in (
            (["web-1", "vault"], "vault"),
            (["db"], "db"),
            (["nowhere"], "nowhere"),
        ):
            result = yield self.ask(self.body(principals=principals))
            message = self.assertRefused(result, 403, "forbidden")
            self.assertIn(repr(name), message)

    @inlineCallbacks
    def test_no_target_at_all(self) -> Any:
        """An identity that may reach no SSH target gets nothing: 403."""
        self.gateway.hub.targets = {"db": TARGETS[3]}
        message = self.assertRefused((yield self.ask(self.body())), 403, "forbidden")
        self.assertIn("no SSH target", message)

    @inlineCallbacks
    def test_bad_keys(self) -> Any:
        """
        Malformed keys, a certificate instead of a key, DSA and RSA under
        2048 bits: 400 bad-public-key, saying why.
        """
        cert = self.issuer.issue(
            self.gateway.identity("alice"), public_line(self.key), ["web-1"], 60, NOW
        )
        with warnings.catch_warnings():
            # cryptography deprecates SSH DSA keys: the very reason to refuse them
            warnings.simplefilter("ignore")
            dsa_line = (
                "ssh-dss " + public_line(dsa.generate_private_key(1024)).split()[1]
            )
        cases = [
            ("ssh-ed25519", "not an OpenSSH public key line"),
            ("ssh-ed25519 AAAAnot-base64!!", "cannot be read"),
            (
                "ssh-ed25519 "
                + public_line(rsa.generate_private_key(65537, 2048)).split()[1],
                "cannot be read",
            ),
            (cert.line, "a certificate"),
            (dsa_line, "DSA"),
            (public_line(rsa.generate_private_key(65537, 1024)), "1024 bits"),
        ]
        for line, why in cases:
            result = yield self.ask({"public_key": line})
            message = self.assertRefused(result, 400, "bad-public-key")
            self.assertIn(why, message)

    @inlineCallbacks
    def test_bad_bodies(self) -> Any:
        """Missing or mistyped members, unknown ones, bad lifetimes: 400."""
        cases: list[tuple[object, str]] = [
            ({}, "public_key"),
            ({"public_key": 7}, "public_key"),
            ({"public_key": "x" * 9000}, "longer"),
            (self.body(principals="web-1"), "principals"),
            (self.body(principals=[]), "principals"),
            (self.body(principals=[""]), "principals"),
            (self.body(lifetime=60), "lifetime"),
            (self.body(lifetime="soon"), "lifetime"),
            (self.body(lifetime="0s"), "lifetime"),
            (self.body(valid_before=1), "valid_before"),
        ]
        for body, why in cases:
            message = self.assertRefused((yield self.ask(body)), 400, "bad-request")
            self.assertIn(why, message)
        result = yield self.ask(["not", "an", "object"])
        self.assertRefused(result, 400, "bad-json")

    @inlineCallbacks
    def test_method_and_parameters(self) -> Any:
        """GET is 405; a query parameter is refused, never ignored."""
        response, data = yield self.client.call(
            b"GET", PATH, self.gateway.tokens["alice"]
        )
        self.assertEqual(
            (response.code, json.loads(data)["error"]), (405, "method-not-allowed")
        )
        response, data = yield self.client.call(
            b"POST",
            PATH + "?lifetime=10h",
            self.gateway.tokens["alice"],
            json.dumps(self.body()).encode(),
        )
        self.assertEqual(
            (response.code, json.loads(data)["error"]), (400, "bad-parameter")
        )

    @inlineCallbacks
    def test_no_ca(self) -> Any:
        """A gateway without a user CA: 404, saying so."""
        g = self.gateway
        site = make_admin_site(g.broker, g.verifier, g.metrics, g.sessions, g.clock)
        response, data = yield Client(listen(self, site)).call(
            b"POST", PATH, g.tokens["alice"], json.dumps(self.body()).encode()
        )
        self.assertEqual(response.code, 404)
        self.assertIn("no SSH user CA", json.loads(data)["message"])

    def test_other_endpoints_keep_the_groups(self) -> Any:
        """Alice (not dba) still may not list approvals."""
        d = self.client.call(b"GET", "/api/v1/approvals", self.gateway.tokens["alice"])
        d.addCallback(lambda r: self.assertEqual(r[0].code, 403))
        return d


class IssuerTests(SynchronousTestCase):
    """The SSH package's side: reading keys, the CA's key file."""

    def test_interface(self) -> None:
        verifyObject(ICertificateIssuer, UserCAIssuer(UserCA.generate(), 1.0, 2.0))

    def test_read_public_key(self) -> None:
        key = ed25519.Ed25519PrivateKey.generate()
        self.assertEqual(
            read_public_key(public_line(key) + " comment").public_bytes(
                serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
            ),
            public_line(key).encode(),
        )
        self.assertRaises(UnacceptableKey, read_public_key, "")
        self.assertRaises(UnacceptableKey, read_public_key, "ssh-ed25519 é")

    def test_create(self) -> None:
        """
        A missing key is created, mode 0600, with its public line beside
        it; read again, it is the same CA.
        """
        path = os.path.join(self.mktemp(), "ca")
        os.makedirs(os.path.dirname(path))
        created = load_or_create(path)
        self.assertEqual(stat.S_IMODE(os.stat(path).st_mode), 0o600)
        with open(path + ".pub", "rb") as f:
            self.assertEqual(f.read().split()[:2], created.public_line().split())
        os.unlink(path + ".pub")
        again = issuer_from_config(SSHUserCAConfig(path, 60.0, 120.0), None)  # type: ignore[arg-type]
        self.assertEqual(again.ca.public_line(), created.public_line())
        self.assertEqual((again.default_lifetime, again.max_lifetime), (60.0, 120.0))
        self.assertTrue(os.path.exists(path + ".pub"))

    def test_refused_files(self) -> None:
        """A key others may read, or not an Ed25519 OpenSSH key: ValueError."""
        directory = self.mktemp()
        os.makedirs(directory)
        loose = os.path.join(directory, "loose")
        UserCA.generate().save(loose)
        os.chmod(loose, 0o640)
        self.assertIn(
            "readable by others",
            str(self.assertRaises(ValueError, load_or_create, loose)),
        )
        other = os.path.join(directory, "rsa")
        fd = os.open(other, os.O_WRONLY | os.O_CREAT, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(
                rsa.generate_private_key(65537, 2048).private_bytes(
                    serialization.Encoding.PEM,
                    serialization.PrivateFormat.OpenSSH,
                    serialization.NoEncryption(),
                )
            )
        self.assertIn(
            "Ed25519", str(self.assertRaises(ValueError, load_or_create, other))
        )

    def test_ssh_keygen_key(self) -> None:
        """
        A key made by OpenSSH's C{ssh-keygen -t ed25519 -N ''} (as
        operations.md says) is read; one with a passphrase is refused.
        """
        keygen = ssh_keygen_program()
        directory = self.mktemp()
        os.makedirs(directory)
        path = os.path.join(directory, "ca")
        for passphrase in ("", "secret"):
            subprocess.run(
                [keygen, "-q", "-t", "ed25519", "-N", passphrase, "-f", path],
                check=True,
                timeout=30,
            )
            if passphrase:
                error = self.assertRaises(ValueError, load_or_create, path)
                self.assertIn("not a usable SSH user CA key", str(error))
            else:
                with open(path + ".pub") as f:
                    line = f.read().split()[:2]
                self.assertEqual(
                    load_or_create(path).public_line().decode().split(), line
                )
                os.unlink(path)
                os.unlink(path + ".pub")


class ConfigTests(SynchronousTestCase):
    """The C{ssh_user_ca} section, and the gateway built from it."""

    def setUp(self) -> None:
        self.files = ConfigFiles(self.mktemp())
        os.makedirs(self.files["ssh"])

    def config(self, section: object, admin: bool = True) -> dict[str, Any]:
        data = self.files.minimal()
        data["ssh_user_ca"] = section
        if admin:
            data["admin"] = {"port": 0}
        return data

    def problems(self, data: dict[str, Any]) -> list[str]:
        path = self.files.save(data)
        error = self.assertRaises(ConfigError, load_config, path)
        return [line[len(path) + 2 :] for line in error.lines()]

    def test_values(self) -> None:
        """The key's path is made absolute; lifetimes have defaults."""
        config = load_config(self.files.save(self.config({"key": "ssh/ca"})))
        self.assertEqual(config.ssh_user_ca, SSHUserCAConfig(self.files["ssh/ca"]))
        self.assertEqual(
            (config.ssh_user_ca.certificate_lifetime, config.ssh_user_ca.max_lifetime),
            (HOUR, 12 * HOUR),
        )
        self.assertEqual(config.ssh_user_ca.public_key_file, self.files["ssh/ca.pub"])
        section = {"key": "ssh/ca", "certificate_lifetime": "5m", "max_lifetime": "2h"}
        config = load_config(self.files.save(self.config(section)))
        self.assertEqual(
            config.ssh_user_ca, SSHUserCAConfig(self.files["ssh/ca"], 300.0, 7200.0)
        )
        self.assertIsNone(
            load_config(self.files.save(self.files.minimal())).ssh_user_ca
        )
        self.assertFalse(
            os.path.exists(self.files["ssh/ca"]), "loading creates nothing"
        )

    def test_problems(self) -> None:
        """Each mistake is one line naming the key."""
        cases = [
            ({}, "ssh_user_ca.key: required key is missing"),
            (
                {"key": "nowhere/ca"},
                f"ssh_user_ca.key: {self.files['nowhere/ca']} does not exist and "
                f"{self.files['nowhere']} is not a directory",
            ),
            (
                {"key": "ssh"},
                f"ssh_user_ca.key: {self.files['ssh']} is not a file",
            ),
            (
                {"key": "ssh/ca", "certificate_lifetime": "2h", "max_lifetime": "1h"},
                "ssh_user_ca.certificate_lifetime: is longer than max_lifetime "
                "(certificates are never valid for longer)",
            ),
            (
                {"key": "ssh/ca", "max_lifetime": "0s"},
                "ssh_user_ca.max_lifetime: must be more than 0",
            ),
            (
                {"key": "ssh/ca", "lifetime": "1h"},
                "ssh_user_ca.lifetime: unknown key (did you mean max_lifetime?)",
            ),
        ]
        for section, expected in cases:
            self.assertEqual(self.problems(self.config(section)), [expected])
        self.assertEqual(
            self.problems(self.config({"key": "ssh/ca"}, admin=False)),
            [
                "ssh_user_ca: needs the admin API (an admin section): "
                "certificates are issued there"
            ],
        )

    def test_gateway_creates_the_key(self) -> None:
        """
        Building the gateway creates the missing key (mode 0600) and serves
        the endpoint with it; a restart keeps it; a change needs a restart.
        """
        config = load_config(self.files.save(self.config({"key": "ssh/ca"})))
        components = build_components(config, MemoryReactorClock())
        self.assertEqual(stat.S_IMODE(os.stat(self.files["ssh/ca"]).st_mode), 0o600)
        endpoint = components.admin_site.admin.certificates
        self.assertIsInstance(endpoint, CertificateEndpoint)
        ca = UserCA.from_file(self.files["ssh/ca"])
        self.assertEqual(endpoint.issuer.ca.public_line(), ca.public_line())
        again = build_components(config, MemoryReactorClock())
        self.assertEqual(
            again.admin_site.admin.certificates.issuer.ca.public_line(),
            ca.public_line(),
        )
        other = load_config(self.files.save(self.config({"key": "ssh/ca2"})))
        self.assertIn("ssh_user_ca", _restart_needed(config, other))
        self.assertNotIn("ssh_user_ca", _restart_needed(config, config))
        without = load_config(self.files.save(self.files.minimal() | {"admin": {}}))
        self.assertIsNone(
            build_components(
                without, MemoryReactorClock()
            ).admin_site.admin.certificates
        )

    def test_gateway_refuses_a_loose_key(self) -> None:
        """A key others may read stops the start: a configuration problem."""
        UserCA.generate().save(self.files["ssh/ca"])
        os.chmod(self.files["ssh/ca"], 0o644)
        config = load_config(self.files.save(self.config({"key": "ssh/ca"})))
        error = self.assertRaises(
            ConfigError, build_components, config, MemoryReactorClock()
        )
        [line] = error.lines()
        self.assertTrue(
            line.startswith(f"{config.path}: ssh_user_ca.key: {self.files['ssh/ca']}"),
            line,
        )
        self.assertIn("readable by others", line)
