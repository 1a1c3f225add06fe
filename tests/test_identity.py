"""
Tests for L{gatehouse.identity}.

Key discovery is exercised against a real OIDC provider stand-in: a
twisted.web site on 127.0.0.1 serving a discovery document and a JWKS.  Token
times are checked against a L{task.Clock}, which also drives the verifier's
refresh rate limit and fetch timeouts, while the HTTP traffic itself goes
through the real reactor.
"""

from __future__ import annotations

import base64
import collections
import datetime
import hashlib
import hmac
import ipaddress
import json
from typing import Any

import jwt
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    PublicFormat,
)
from cryptography.x509.oid import NameOID
from hypothesis import given, settings
from hypothesis import strategies as st
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm
from twisted.internet import reactor, ssl, task
from twisted.internet.defer import Deferred, succeed
from twisted.logger import globalLogPublisher
from twisted.protocols.policies import WrappingFactory
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase, TestCase
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Site

from gatehouse.identity import (
    CLIENT_MESSAGE,
    AuthenticationError,
    Identity,
    IssuerConfig,
    TokenVerifier,
)

NOW = 1_700_000_000.0
AUDIENCE = "gatehouse"
SECRET = b"a shared secret of at least 32 bytes!"
STATIC_ISSUER = "https://idp.example.com/realms/ops"
MISSING = object()

RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
RSA_KEY_2 = rsa.generate_private_key(public_exponent=65537, key_size=2048)
IMPOSTOR_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
EC_KEY = ec.generate_private_key(ec.SECP256R1())
ED_KEY = ed25519.Ed25519PrivateKey.generate()


def publicJWK(kid: str, privateKey: Any) -> dict[str, Any]:
    """
    The public JWK of C{privateKey}, as an IdP would publish it.
    """
    public = privateKey.public_key()
    if isinstance(public, rsa.RSAPublicKey):
        jwk = RSAAlgorithm.to_jwk(public, as_dict=True)
    elif isinstance(public, ec.EllipticCurvePublicKey):
        jwk = ECAlgorithm.to_jwk(public, as_dict=True)
    else:
        jwk = OKPAlgorithm.to_jwk(public, as_dict=True)
    return {**jwk, "kid": kid, "use": "sig"}


INITIAL_KEYS = {"rsa-1": RSA_KEY, "ec-1": EC_KEY, "ed-1": ED_KEY}


def b64(data: bytes) -> str:
    """
    Unpadded base64url, as in JWTs.
    """
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def segment(value: object) -> str:
    """
    A JSON value as a token segment.
    """
    return b64(json.dumps(value).encode("utf-8"))


def makeClaims(issuer: str, now: float = NOW, **overrides: object) -> dict:
    """
    Valid claims for C{issuer} at C{now}; an override of C{MISSING} removes
    that claim.
    """
    claims: dict[str, object] = {
        "iss": issuer,
        "aud": AUDIENCE,
        "sub": "u-1234",
        "name": "Alice Example",
        "iat": int(now),
        "exp": int(now) + 300,
    }
    for name, value in overrides.items():
        if value is MISSING:
            claims.pop(name, None)
        else:
            claims[name] = value
    return claims


def signed(
    issuer: str,
    key: Any = RSA_KEY,
    alg: str = "RS256",
    kid: str | None = "rsa-1",
    now: float = NOW,
    **overrides: object,
) -> str:
    """
    A token for C{issuer} signed with C{key}.
    """
    headers = {} if kid is None else {"kid": kid}
    return jwt.encode(
        makeClaims(issuer, now, **overrides), key, algorithm=alg, headers=headers
    )


def hmacToken(issuer: str, secret: bytes, **overrides: object) -> str:
    """
    An HS256 token computed by hand, so any bytes (even a PEM public key,
    which pyjwt refuses) can serve as the secret.
    """
    signingInput = (
        segment({"alg": "HS256", "typ": "JWT"})
        + "."
        + segment(makeClaims(issuer, **overrides))
    )
    mac = hmac.new(secret, signingInput.encode("ascii"), hashlib.sha256).digest()
    return signingInput + "." + b64(mac)


class _JSONResource(Resource):
    isLeaf = True

    def __init__(self, idp: FakeIdP, name: str) -> None:
        super().__init__()
        self._idp = idp
        self._name = name

    def render_GET(self, request: Any) -> bytes | int:
        """
        Count the request, then answer, or never answer if told to hang.
        """
        self._idp.requests[self._name] += 1
        if self._name in self._idp.hang:
            self._idp.hung.callback(None)
            return NOT_DONE_YET
        request.setHeader(b"content-type", b"application/json")
        return json.dumps(self._idp.document(self._name)).encode("utf-8")


class _TrackingFactory(WrappingFactory):
    """
    Remember open connections so a test can wait until all are closed.
    """

    def __init__(self, wrapped: Site) -> None:
        super().__init__(wrapped)
        self._idle: list[Deferred[None]] = []

    def unregisterProtocol(self, p: Any) -> None:
        super().unregisterProtocol(p)
        if not self.protocols:
            idle, self._idle = self._idle, []
            for d in idle:
                d.callback(None)

    def closeAll(self) -> Deferred[None]:
        """
        Abort all open connections and wait until they are gone.
        """
        if not self.protocols:
            return succeed(None)
        d: Deferred[None] = Deferred()
        self._idle.append(d)
        for p in list(self.protocols):
            p.transport.abortConnection()
        return d


class FakeIdP:
    """
    An OpenID provider stand-in serving discovery and a rotatable JWKS.
    """

    def __init__(self) -> None:
        self.keys = {kid: publicJWK(kid, key) for kid, key in INITIAL_KEYS.items()}
        self.requests: collections.Counter[str] = collections.Counter()
        self.hang: set[str] = set()
        self.hung: Deferred[None] = Deferred()
        self.discoveryIssuer: str | None = None
        self.jwksURI: str | None = None
        self.padding = 0
        # Keycloak-style: the issuer URL has a path, discovery lives below it.
        root = Resource()
        realms = Resource()
        realm = Resource()
        wellKnown = Resource()
        root.putChild(b"realms", realms)
        realms.putChild(b"ops", realm)
        realm.putChild(b".well-known", wellKnown)
        wellKnown.putChild(b"openid-configuration", _JSONResource(self, "discovery"))
        realm.putChild(b"jwks", _JSONResource(self, "jwks"))
        self.factory = _TrackingFactory(Site(root))
        self._port: Any = None
        self.issuer = ""

    def document(self, name: str) -> object:
        """
        The current discovery document or JWKS.
        """
        if name == "discovery":
            return {
                "issuer": self.discoveryIssuer or self.issuer,
                "jwks_uri": self.jwksURI or self.issuer + "/jwks",
            }
        return {"keys": list(self.keys.values()), "padding": "x" * self.padding}

    def rotate(self, kid: str, privateKey: Any, withdraw: str) -> None:
        """
        Publish a new key and withdraw an old one.
        """
        self.keys[kid] = publicJWK(kid, privateKey)
        del self.keys[withdraw]

    def start(self, testCase: TestCase, port: int = 0, tls: Any = None) -> str:
        """
        Listen on 127.0.0.1 until the end of C{testCase}.

        @return: the issuer URL.
        """
        if tls is None:
            self._port = reactor.listenTCP(port, self.factory, interface="127.0.0.1")
            scheme = "http"
        else:
            self._port = reactor.listenSSL(
                port, self.factory, tls, interface="127.0.0.1"
            )
            scheme = "https"
        self.port = self._port.getHost().port
        self.issuer = f"{scheme}://127.0.0.1:{self.port}/realms/ops"
        testCase.addCleanup(self.stop)
        return self.issuer

    async def stop(self) -> None:
        """
        Stop listening and wait until every connection is closed.
        """
        if self._port is not None:
            port, self._port = self._port, None
            await port.stopListening()
        await self.factory.closeAll()


def makeTLS() -> tuple[bytes, Any]:
    """
    A throwaway CA and a server certificate for 127.0.0.1 it signed.

    @return: the CA certificate (PEM) and server TLS options.
    """
    now = datetime.datetime.now(datetime.UTC)
    validity = (now - datetime.timedelta(hours=1), now + datetime.timedelta(hours=1))

    def certificate(subject, issuer, publicKey, signer, extensions):
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
            .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)]))
            .public_key(publicKey)
            .serial_number(x509.random_serial_number())
            .not_valid_before(validity[0])
            .not_valid_after(validity[1])
        )
        for extension, critical in extensions:
            builder = builder.add_extension(extension, critical=critical)
        return builder.sign(signer, hashes.SHA256())

    caKey = ec.generate_private_key(ec.SECP256R1())
    caCert = certificate(
        "gatehouse test CA",
        "gatehouse test CA",
        caKey.public_key(),
        caKey,
        [(x509.BasicConstraints(ca=True, path_length=None), True)],
    )
    serverKey = ec.generate_private_key(ec.SECP256R1())
    serverCert = certificate(
        "127.0.0.1",
        "gatehouse test CA",
        serverKey.public_key(),
        caKey,
        [
            (
                x509.SubjectAlternativeName(
                    [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
                ),
                False,
            ),
        ],
    )
    serverPEM = serverKey.private_bytes(
        Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()
    ) + serverCert.public_bytes(Encoding.PEM)
    options = ssl.PrivateCertificate.loadPEM(serverPEM).options()
    return caCert.public_bytes(Encoding.PEM), options


class ValueTests(SynchronousTestCase):
    """
    Tests for the value classes and configuration checks.
    """

    def test_authenticationError(self) -> None:
        """
        The operator reason is C{str()} of the exception; the client message
        is a fixed constant.
        """
        error = AuthenticationError("token expired at 5")
        self.assertEqual(str(error), "token expired at 5")
        self.assertEqual(error.reason, "token expired at 5")
        self.assertEqual(AuthenticationError.CLIENT_MESSAGE, CLIENT_MESSAGE)
        self.assertEqual(CLIENT_MESSAGE, "authentication failed")

    def test_issuerConfigDefaults(self) -> None:
        """
        L{IssuerConfig} has the documented defaults, and a single audience
        string is not split into characters.
        """
        config = IssuerConfig(issuer=STATIC_ISSUER, audiences="gatehouse")
        self.assertEqual(config.audiences, ("gatehouse",))
        self.assertEqual(config.algorithms, ("RS256", "ES256", "PS256", "EdDSA"))
        self.assertEqual(
            (config.groups_claim, config.name_claim, config.leeway),
            ("groups", "name", 30.0),
        )
        self.assertEqual(config.refresh_min_interval, 60.0)
        self.assertIsNone(config.hs256_secret)

    def test_rejectsNoneAlgorithm(self) -> None:
        """
        C{none} cannot even be configured.
        """
        config = IssuerConfig(STATIC_ISSUER, (AUDIENCE,), algorithms=("none",))
        self.assertRaises(ValueError, TokenVerifier, [config], task.Clock())

    def test_rejectsHMACWithoutSecret(self) -> None:
        """
        Listing an HS* algorithm without a shared secret is a configuration
        error.
        """
        config = IssuerConfig(STATIC_ISSUER, (AUDIENCE,), algorithms=("HS256",))
        self.assertRaises(ValueError, TokenVerifier, [config], task.Clock())

    def test_rejectsDuplicateIssuer(self) -> None:
        """
        Each issuer may be configured once.
        """
        config = IssuerConfig(STATIC_ISSUER, (AUDIENCE,))
        self.assertRaises(ValueError, TokenVerifier, [config, config], task.Clock())


class VerifierMixin:
    """
    Build verifiers and assert on their results, synchronously (static
    JWKS) or through the real reactor (HTTP discovery).
    """

    issuer: str
    clock: task.Clock

    def makeVerifier(self, **config: Any) -> TokenVerifier:
        """
        A verifier for C{self.issuer}, with C{config} for L{IssuerConfig}.
        """
        raise NotImplementedError()

    def assertRejected(
        self, token: str | bytes, fragment: str, verifier: TokenVerifier | None = None
    ) -> Deferred[None] | None:
        """
        Assert that the token is rejected with a reason containing C{fragment}.
        """
        raise NotImplementedError()


class AttackMatrixMixin(VerifierMixin):
    """
    Every one of these tokens must be rejected.
    """

    def test_algNone(self):
        """
        An unsigned token (C{alg: none}) is rejected.
        """
        token = (
            segment({"alg": "none", "typ": "JWT"})
            + "."
            + segment(makeClaims(self.issuer))
            + "."
        )
        return self.assertRejected(token, "alg 'none'")

    def test_hs256WithPublicKeyAsSecret(self):
        """
        The classic key-confusion attack: HS256 with the issuer's RSA public
        key (PEM) as the HMAC secret.
        """
        pem = RSA_KEY.public_key().public_bytes(
            Encoding.PEM, PublicFormat.SubjectPublicKeyInfo
        )
        return self.assertRejected(
            hmacToken(self.issuer, pem), "no shared secret is configured"
        )

    def test_hs256WithPublicKeyAsSecretWhenSecretConfigured(self):
        """
        Even where HS256 is allowed, only the configured secret verifies.
        """
        pem = RSA_KEY.public_key().public_bytes(
            Encoding.PEM, PublicFormat.SubjectPublicKeyInfo
        )
        verifier = self.makeVerifier(algorithms=("RS256", "HS256"), hs256_secret=SECRET)
        return self.assertRejected(
            hmacToken(self.issuer, pem), "signature verification failed", verifier
        )

    def test_expired(self):
        """
        A token that expired longer ago than the leeway is rejected.
        """
        return self.assertRejected(
            signed(self.issuer, exp=int(NOW) - 31), "token expired"
        )

    def test_notYetValid(self):
        """
        A token whose C{nbf} is further ahead than the leeway is rejected.
        """
        return self.assertRejected(
            signed(self.issuer, nbf=int(NOW) + 60), "not valid before"
        )

    def test_issuedInTheFuture(self):
        """
        A token issued further in the future than the leeway is rejected.
        """
        return self.assertRejected(
            signed(self.issuer, iat=int(NOW) + 60), "issued in the future"
        )

    def test_wrongIssuer(self):
        """
        A token from an issuer that is not configured is rejected, even when
        signed with a trusted key.
        """
        return self.assertRejected(
            signed(self.issuer, iss=self.issuer + "/evil"), "is not configured"
        )

    def test_wrongAudience(self):
        """
        A token for another audience is rejected.
        """
        return self.assertRejected(
            signed(self.issuer, aud=["kubernetes", "grafana"]), "audience"
        )

    def test_unknownKid(self):
        """
        A token naming a key the issuer does not publish is rejected.
        """
        return self.assertRejected(
            signed(self.issuer, kid="ghost"), "unknown key id 'ghost'"
        )

    def test_keyTypeMismatch(self):
        """
        A token whose C{alg} does not fit the type of the key it names is
        rejected.
        """
        return self.assertRejected(
            signed(self.issuer, key=EC_KEY, alg="ES256", kid="rsa-1"),
            "cannot be used with ES256",
        )

    def test_payloadAltered(self):
        """
        Changing the payload after signing breaks the signature.
        """
        header, _, signature = signed(self.issuer).split(".")
        forged = makeClaims(self.issuer, sub="admin", groups=["admins"])
        return self.assertRejected(
            f"{header}.{segment(forged)}.{signature}", "signature verification failed"
        )

    def test_unpublishedKeyWithPublishedKid(self):
        """
        A valid signature by a key the issuer does not publish is rejected,
        even under the key id of a published key.
        """
        return self.assertRejected(
            signed(self.issuer, key=IMPOSTOR_KEY, kid="rsa-1"),
            "signature verification failed",
        )

    def test_oversized(self):
        """
        A validly signed token over 16 KiB is rejected.
        """
        token = signed(self.issuer, filler="x" * 16384)
        return self.assertRejected(token, "longer than 16384")

    def test_oversizedGarbageNotParsed(self):
        """
        The length is checked before anything is parsed.
        """
        return self.assertRejected("." * 20000, "longer than 16384")

    def test_notThreeParts(self):
        """
        A token must have exactly three dot-separated parts.
        """
        header, payload, _ = signed(self.issuer).split(".")
        return self.assertRejected(f"{header}.{payload}", "2 dot-separated parts")

    def test_fourParts(self):
        """
        Four parts are as wrong as two.
        """
        return self.assertRejected(signed(self.issuer) + ".e30", "4 dot-separated")

    def test_badBase64(self):
        """
        A header that is not base64url is rejected.
        """
        _, payload, signature = signed(self.issuer).split(".")
        return self.assertRejected(f"ey!!.{payload}.{signature}", "malformed token")

    def test_headerNotJSON(self):
        """
        A header that decodes to something other than a JSON object is
        rejected.
        """
        _, payload, signature = signed(self.issuer).split(".")
        return self.assertRejected(
            f"{b64(b'{not json')}.{payload}.{signature}", "Invalid header string"
        )

    def test_payloadNotJSON(self):
        """
        A payload that is not JSON is rejected.
        """
        header, _, signature = signed(self.issuer).split(".")
        return self.assertRejected(
            f"{header}.{b64(b'not json')}.{signature}", "malformed token"
        )

    def test_algorithmNotAllowed(self):
        """
        A correctly signed token whose algorithm the issuer does not allow is
        rejected.
        """
        verifier = self.makeVerifier(algorithms=("RS256", "ES256"))
        return self.assertRejected(
            signed(self.issuer, alg="PS256"), "'PS256' is not allowed", verifier
        )

    def test_missingExp(self):
        """
        C{exp} is required.
        """
        return self.assertRejected(signed(self.issuer, exp=MISSING), "'exp'")

    def test_expNotFinite(self):
        """
        An infinite C{exp} is not a time.
        """
        return self.assertRejected(
            signed(self.issuer, exp=float("inf")), "'exp' claim is not a number"
        )

    def test_missingSub(self):
        """
        C{sub} is required.
        """
        return self.assertRejected(signed(self.issuer, sub=MISSING), "'sub'")

    def test_missingAud(self):
        """
        C{aud} is required.
        """
        return self.assertRejected(signed(self.issuer, aud=MISSING), "'aud'")

    def test_missingIss(self):
        """
        C{iss} is required.
        """
        return self.assertRejected(signed(self.issuer, iss=MISSING), "'iss'")

    def test_groupsWrongType(self):
        """
        A groups claim that is neither a list of strings nor a string is
        rejected rather than silently ignored.
        """
        return self.assertRejected(
            signed(self.issuer, groups={"admins": True}),
            "groups claim is not a list or string",
        )


class StaticVerifierMixin(VerifierMixin):
    """
    Verifiers with a static JWKS file: no network, results are synchronous.
    """

    def setUp(self) -> None:
        self.issuer = STATIC_ISSUER
        self.clock = task.Clock()
        self.clock.advance(NOW)
        self.jwksFile = self.mktemp()
        with open(self.jwksFile, "w") as f:
            json.dump(
                {"keys": [publicJWK(kid, key) for kid, key in INITIAL_KEYS.items()]},
                f,
            )
        self.verifier = self.makeVerifier()

    def makeVerifier(self, **config: Any) -> TokenVerifier:
        issuerConfig = IssuerConfig(
            issuer=self.issuer,
            audiences=(AUDIENCE, "other-gateway"),
            jwks_file=self.jwksFile,
            **config,
        )
        return TokenVerifier([issuerConfig], self.clock)

    def verified(self, token: str | bytes, verifier: TokenVerifier | None = None):
        """
        The L{Identity} from a token that must be accepted.
        """
        return self.successResultOf((verifier or self.verifier).verify(token))

    def assertRejected(self, token, fragment, verifier=None):
        failure = self.failureResultOf(
            (verifier or self.verifier).verify(token), AuthenticationError
        )
        self.assertIn(fragment, failure.value.reason)
        return None


class StaticAttackTests(AttackMatrixMixin, StaticVerifierMixin, SynchronousTestCase):
    """
    The attack matrix against a verifier with a static JWKS.
    """


class StaticTests(StaticVerifierMixin, SynchronousTestCase):
    """
    Claims handling, with a static JWKS.
    """

    def test_identity(self) -> None:
        """
        A valid token yields subject, name, groups, issuer and expiry.
        """
        identity = self.verified(signed(self.issuer, groups=["dev", "ops"]))
        self.assertEqual(
            identity,
            Identity(
                subject="u-1234",
                name="Alice Example",
                groups=("dev", "ops"),
                issuer=self.issuer,
                expires_at=NOW + 300,
                valid_until=NOW + 300 + 30,
            ),
        )

    def test_bytesToken(self) -> None:
        """
        Tokens may be given as bytes.
        """
        identity = self.verified(signed(self.issuer).encode("ascii"))
        self.assertEqual(identity.subject, "u-1234")

    def test_nonASCIIToken(self) -> None:
        """
        A token with non-ASCII characters is malformed.
        """
        self.assertRejected(signed(self.issuer) + "\N{SNOWMAN}", "not ASCII")

    def test_audienceList(self) -> None:
        """
        An C{aud} list containing any configured audience is accepted.
        """
        identity = self.verified(signed(self.issuer, aud=["grafana", "other-gateway"]))
        self.assertEqual(identity.subject, "u-1234")

    def test_leeway(self) -> None:
        """
        Times within the leeway are tolerated.
        """
        token = signed(
            self.issuer,
            exp=int(NOW) - 29,
            nbf=int(NOW) + 29,
            iat=int(NOW) + 29,
        )
        self.assertEqual(self.verified(token).expires_at, NOW - 29)

    def test_expiresWithClock(self) -> None:
        """
        Time is the injected clock's: the same token stops being valid once
        the clock passes C{exp} plus leeway.
        """
        token = signed(self.issuer)
        self.verified(token)
        self.clock.advance(330)
        self.assertRejected(token, "token expired")

    def test_noKid(self) -> None:
        """
        A token without C{kid} is verified with the published keys that fit
        its algorithm.
        """
        self.assertEqual(
            self.verified(signed(self.issuer, key=EC_KEY, alg="ES256", kid=None)).name,
            "Alice Example",
        )

    def test_groupsFromNestedList(self) -> None:
        """
        Groups come from a dotted claim path such as C{realm_access.roles}.
        """
        verifier = self.makeVerifier(groups_claim="realm_access.roles")
        token = signed(self.issuer, realm_access={"roles": ["db-admin", "k8s-view"]})
        self.assertEqual(
            self.verified(token, verifier).groups, ("db-admin", "k8s-view")
        )

    def test_groupsFromSpaceSeparatedString(self) -> None:
        """
        A space-separated string claim is split into groups.
        """
        verifier = self.makeVerifier(groups_claim="scope")
        token = signed(self.issuer, scope="openid  db:read db:write")
        self.assertEqual(
            self.verified(token, verifier).groups, ("openid", "db:read", "db:write")
        )

    def test_groupsClaimWithDots(self) -> None:
        """
        A claim whose own name contains dots is found as is.
        """
        verifier = self.makeVerifier(groups_claim="https://example.com/groups")
        token = signed(self.issuer, **{"https://example.com/groups": ["sre"]})
        self.assertEqual(self.verified(token, verifier).groups, ("sre",))

    def test_groupsMissing(self) -> None:
        """
        Without the groups claim the identity has no groups.
        """
        verifier = self.makeVerifier(groups_claim="realm_access.roles")
        token = signed(self.issuer, realm_access={"other": 1})
        self.assertEqual(self.verified(token, verifier).groups, ())

    def test_groupsListWithNonString(self) -> None:
        """
        A groups list containing something other than strings is rejected.
        """
        self.assertRejected(
            signed(self.issuer, groups=["dev", 7]), "groups claim is not a list"
        )

    def test_nameClaim(self) -> None:
        """
        The display name comes from the configured claim.
        """
        verifier = self.makeVerifier(name_claim="profile.display")
        token = signed(self.issuer, profile={"display": "Alice (SRE)"})
        self.assertEqual(self.verified(token, verifier).name, "Alice (SRE)")

    def test_nameFallsBackToPreferredUsername(self) -> None:
        """
        Without the name claim, C{preferred_username} is the display name.
        """
        token = signed(self.issuer, name=MISSING, preferred_username="alice")
        self.assertEqual(self.verified(token).name, "alice")

    def test_nameFallsBackToSubject(self) -> None:
        """
        Without name and preferred_username, the subject is the display name.
        """
        token = signed(self.issuer, name=MISSING)
        self.assertEqual(self.verified(token).name, "u-1234")

    def test_hs256WithSecret(self) -> None:
        """
        HS256 is accepted for an issuer configured with a shared secret.
        """
        verifier = self.makeVerifier(algorithms=("HS256",), hs256_secret=SECRET)
        token = signed(self.issuer, key=SECRET, alg="HS256", kid=None)
        self.assertEqual(self.verified(token, verifier).subject, "u-1234")

    def test_hs256WrongSecret(self) -> None:
        """
        HS256 signed with another secret is rejected.
        """
        verifier = self.makeVerifier(algorithms=("HS256",), hs256_secret=SECRET)
        token = signed(self.issuer, key=SECRET + b"!", alg="HS256", kid=None)
        self.assertRejected(token, "signature verification failed", verifier)

    def test_hmacKeyInJWKSIgnored(self) -> None:
        """
        A symmetric key published in a JWKS is never used.
        """
        with open(self.jwksFile, "w") as f:
            json.dump({"keys": [{"kty": "oct", "kid": "k", "k": b64(SECRET)}]}, f)
        verifier = self.makeVerifier(algorithms=("HS256",), hs256_secret=b"x" * 32)
        token = signed(self.issuer, key=SECRET, alg="HS256", kid="k")
        self.assertRejected(token, "signature verification failed", verifier)

    def test_unreadableJWKSFile(self) -> None:
        """
        A missing JWKS file leaves the issuer without keys, and says why.
        """
        self.jwksFile = self.mktemp()
        self.assertRejected(
            signed(self.issuer), "cannot read JWKS file", self.makeVerifier()
        )

    def test_reasonLoggedWithoutToken(self) -> None:
        """
        A rejection logs the reason for operators, but never the token.
        """
        events: list[dict] = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        token = signed(self.issuer, exp=int(NOW) - 100)
        self.assertRejected(token, "token expired")
        text = repr(events)
        self.assertIn("token expired", text)
        for part in token.split("."):
            self.assertNotIn(part, text)


_B64_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)
_headers = st.fixed_dictionaries(
    {"alg": st.sampled_from(["RS256", "ES256", "EdDSA", "HS256", "none"]) | _json},
    optional={
        "kid": st.sampled_from(["rsa-1", "ec-1", "ed-1", "nope"]) | _json,
        "typ": _json,
        "crit": _json,
        "b64": _json,
    },
)
_claims = st.fixed_dictionaries(
    {
        "iss": st.just(STATIC_ISSUER) | _json,
        "aud": st.just(AUDIENCE) | st.lists(st.just(AUDIENCE) | _json) | _json,
        "exp": st.integers(int(NOW) - 60, int(NOW) + 60) | _json,
        "sub": st.text(max_size=10) | _json,
    },
    optional={
        "nbf": st.integers(int(NOW) - 60, int(NOW) + 60) | _json,
        "iat": st.integers(int(NOW) - 60, int(NOW) + 60) | _json,
        "groups": st.lists(st.text(max_size=8)) | st.text() | _json,
        "name": _json,
        "preferred_username": _json,
    },
)
_plausibleClaims = st.fixed_dictionaries(
    {
        "iss": st.just(STATIC_ISSUER),
        "aud": st.just(AUDIENCE) | st.lists(st.just(AUDIENCE) | st.text(), min_size=1),
        "exp": st.integers(int(NOW) - 60, int(NOW) + 600),
        "sub": st.text(max_size=10),
    },
    optional={
        "nbf": st.integers(int(NOW) - 60, int(NOW) + 60) | _json,
        "iat": st.integers(int(NOW) - 60, int(NOW) + 60) | _json,
        "groups": st.lists(st.text(max_size=8)) | st.text() | _json,
        "name": st.text() | _json,
        "preferred_username": st.text() | _json,
    },
)
_forged = st.builds(
    lambda header, payload, signature: ".".join(
        [segment(header), segment(payload), b64(signature)]
    ),
    _headers | _json,
    _claims | _json,
    st.binary(max_size=300),
)
_garbage = (
    st.binary(max_size=300)
    | st.text(max_size=300)
    | st.lists(st.text(_B64_ALPHABET + "=.!", max_size=40), min_size=1, max_size=5).map(
        ".".join
    )
    | _forged
)


def signedWithRSA(claims: object) -> str:
    """
    Sign any JSON value as a token payload with the published RSA key
    (pyjwt's own encode refuses some of the odd claims we want to try).
    """
    signingInput = segment({"alg": "RS256", "kid": "rsa-1"}) + "." + segment(claims)
    signature = RSAAlgorithm(RSAAlgorithm.SHA256).sign(
        signingInput.encode("ascii"), RSA_KEY
    )
    return signingInput + "." + b64(signature)


class LifetimeTests(StaticVerifierMixin, SynchronousTestCase):
    """
    Tokens valid for longer than C{max_token_lifetime} are refused: their
    lifetime is C{exp - iat}, measured from now when C{iat} is absent or
    in the future.
    """

    def test_defaultIsADay(self) -> None:
        """
        By default a day's token is accepted and a longer one is not; a
        token valid for ten years is refused, whatever its C{iat} says.
        """
        day = 24 * 3600
        self.verified(signed(self.issuer, exp=int(NOW) + day))
        self.assertRejected(
            signed(self.issuer, exp=int(NOW) + day + 1),
            f"token lifetime {day + 1}s (exp - iat) exceeds the maximum of {day}s",
        )
        decade = 10 * 365 * day
        self.assertRejected(
            signed(self.issuer, exp=int(NOW) + decade, iat=MISSING),
            f"token lifetime {decade}s (exp - now) exceeds the maximum",
        )
        self.assertRejected(
            signed(self.issuer, exp=int(NOW) + decade, iat=int(NOW) + 20),
            f"token lifetime {decade}s (exp - now)",
        )

    def test_issuedLongAgo(self) -> None:
        """
        A token the issuer made valid for too long is refused even when
        little of it is left: the lifetime counts from C{iat}.
        """
        verifier = TokenVerifier(
            [IssuerConfig(self.issuer, (AUDIENCE,), jwks_file=self.jwksFile)],
            self.clock,
            max_token_lifetime=600,
        )
        self.assertRejected(
            signed(self.issuer, iat=int(NOW) - 3000, exp=int(NOW) + 60),
            "token lifetime 3060s (exp - iat) exceeds the maximum of 600s",
            verifier,
        )
        identity = self.verified(
            signed(self.issuer, iat=int(NOW) - 540, exp=int(NOW) + 60), verifier
        )
        self.assertEqual(identity.expires_at, NOW + 60)

    def test_noIat(self) -> None:
        """
        Without C{iat}, what is left of the token counts.
        """
        verifier = TokenVerifier(
            [IssuerConfig(self.issuer, (AUDIENCE,), jwks_file=self.jwksFile)],
            self.clock,
            max_token_lifetime=600,
        )
        self.verified(signed(self.issuer, iat=MISSING, exp=int(NOW) + 600), verifier)
        self.assertRejected(
            signed(self.issuer, iat=MISSING, exp=int(NOW) + 601),
            "token lifetime 601s (exp - now)",
            verifier,
        )

    def test_noLimit(self) -> None:
        """
        C{max_token_lifetime=None} accepts any lifetime.
        """
        verifier = TokenVerifier(
            [IssuerConfig(self.issuer, (AUDIENCE,), jwks_file=self.jwksFile)],
            self.clock,
            max_token_lifetime=None,
        )
        identity = self.verified(
            signed(self.issuer, exp=int(NOW) + 10 * 365 * 86400), verifier
        )
        self.assertEqual(identity.subject, "u-1234")

    def test_validUntil(self) -> None:
        """
        The identity says until when the gateway accepts its token: C{exp}
        plus the issuer's leeway.
        """
        verifier = self.makeVerifier(leeway=5)
        identity = self.verified(signed(self.issuer), verifier)
        self.assertEqual(
            (identity.expires_at, identity.valid_until), (NOW + 300, NOW + 305)
        )


class FuzzTests(StaticVerifierMixin, SynchronousTestCase):
    """
    Whatever arrives, the verifier answers with an L{Identity} or an
    L{AuthenticationError}, and nothing else.
    """

    def outcome(self, token: str | bytes) -> Identity | Failure:
        """
        The L{Identity} or L{AuthenticationError} failure for C{token}.
        """
        results: list[Identity | Failure] = []
        self.verifier.verify(token).addBoth(results.append)
        [result] = results
        if isinstance(result, Failure):
            result.trap(AuthenticationError)
        return result

    @settings(max_examples=500, deadline=None, database=None)
    @given(_garbage)
    def test_garbage(self, token: str | bytes) -> None:
        """
        Garbage and forged tokens are rejected with L{AuthenticationError}.
        """
        self.assertIsInstance(self.outcome(token), Failure)

    @settings(max_examples=200, deadline=None, database=None)
    @given(_plausibleClaims | _claims | _json)
    def test_signedClaims(self, claims: object) -> None:
        """
        Correctly signed tokens with arbitrary claims yield a well-formed
        L{Identity} or an L{AuthenticationError}.
        """
        result = self.outcome(signedWithRSA(claims))
        if isinstance(result, Identity):
            self.assertIsInstance(result.subject, str)
            self.assertTrue(result.subject)
            self.assertIsInstance(result.name, str)
            for group in result.groups:
                self.assertIsInstance(group, str)

    @settings(max_examples=200, deadline=None, database=None)
    @given(st.data())
    def test_mutatedToken(self, data: st.DataObject) -> None:
        """
        A valid token with one character replaced is rejected (unless the
        replacement changed nothing).
        """
        token = signed(self.issuer)
        index = data.draw(st.integers(0, len(token) - 1))
        character = data.draw(st.characters())
        mutated = token[:index] + character + token[index + 1 :]
        result = self.outcome(mutated)
        self.assertIsInstance(result, Identity if mutated == token else Failure)


class HTTPVerifierMixin(VerifierMixin):
    """
    Verifiers that discover their keys from a L{FakeIdP} over HTTP.
    """

    def setUp(self) -> None:
        self.clock = task.Clock()
        self.clock.advance(NOW)
        self.idp = FakeIdP()
        self.issuer = self.idp.start(self)
        self.verifier = self.makeVerifier()

    def makeVerifier(self, **config: Any) -> TokenVerifier:
        config.setdefault("issuer", self.issuer)
        issuerConfig = IssuerConfig(audiences=(AUDIENCE,), **config)
        return TokenVerifier([issuerConfig], reactor, clock=self.clock)

    def assertRejected(self, token, fragment, verifier=None):
        d = self.assertFailure(
            (verifier or self.verifier).verify(token), AuthenticationError
        )
        d.addCallback(lambda error: self.assertIn(fragment, error.reason))
        return d

    async def rejectedReason(
        self, token: str, verifier: TokenVerifier | None = None
    ) -> str:
        """
        The operator reason for rejecting a token that must be rejected.
        """
        error = await self.assertFailure(
            (verifier or self.verifier).verify(token), AuthenticationError
        )
        return error.reason

    def now(self, **overrides: object) -> str:
        """
        An RS256 token issued at the clock's current time.
        """
        overrides.setdefault("now", self.clock.seconds())
        return signed(self.issuer, **overrides)


class HTTPAttackTests(AttackMatrixMixin, HTTPVerifierMixin, TestCase):
    """
    The attack matrix against a verifier that discovers keys over HTTP.
    """


class DiscoveryTests(HTTPVerifierMixin, TestCase):
    """
    Key discovery, caching and rotation against a real HTTP IdP.
    """

    async def test_rs256(self) -> None:
        """
        An RS256 token is verified with a key found through discovery.
        """
        identity = await self.verifier.verify(self.now())
        self.assertEqual((identity.subject, identity.issuer), ("u-1234", self.issuer))
        self.assertEqual(self.idp.requests, {"discovery": 1, "jwks": 1})

    async def test_es256(self) -> None:
        """
        ES256 tokens are verified with the published P-256 key.
        """
        identity = await self.verifier.verify(
            self.now(key=EC_KEY, alg="ES256", kid="ec-1")
        )
        self.assertEqual(identity.subject, "u-1234")

    async def test_eddsa(self) -> None:
        """
        EdDSA tokens are verified with the published Ed25519 key.
        """
        identity = await self.verifier.verify(
            self.now(key=ED_KEY, alg="EdDSA", kid="ed-1")
        )
        self.assertEqual(identity.subject, "u-1234")

    async def test_ps256(self) -> None:
        """
        An RSA key also verifies PS256 when the issuer allows it.
        """
        identity = await self.verifier.verify(self.now(alg="PS256"))
        self.assertEqual(identity.subject, "u-1234")

    async def test_keysCached(self) -> None:
        """
        Keys are fetched once and reused.
        """
        for kid, key, alg in [("rsa-1", RSA_KEY, "RS256"), ("ec-1", EC_KEY, "ES256")]:
            await self.verifier.verify(self.now(key=key, alg=alg, kid=kid))
        self.assertEqual(self.idp.requests, {"discovery": 1, "jwks": 1})

    async def test_concurrentVerificationsShareOneFetch(self) -> None:
        """
        Verifications waiting for the same keys share one request.
        """
        results = await Deferred.fromCoroutine(self._both())
        self.assertEqual([i.subject for i in results], ["u-1234", "u-1234"])
        self.assertEqual(self.idp.requests, {"discovery": 1, "jwks": 1})

    async def _both(self) -> list[Identity]:
        first = self.verifier.verify(self.now())
        second = self.verifier.verify(self.now(key=ED_KEY, alg="EdDSA", kid="ed-1"))
        return [await first, await second]

    async def test_prefetch(self) -> None:
        """
        L{TokenVerifier.prefetch} loads the keys ahead of the first token.
        """
        await self.verifier.prefetch()
        self.assertEqual(self.idp.requests["jwks"], 1)
        await self.verifier.verify(self.now())
        self.assertEqual(self.idp.requests["jwks"], 1)

    async def test_prefetchFailureNotFatal(self) -> None:
        """
        L{TokenVerifier.prefetch} succeeds even if the IdP is down.
        """
        await self.idp.stop()
        self.assertIsNone(await self.verifier.prefetch())

    async def test_rotation(self) -> None:
        """
        After the IdP rotates its keys, a token signed with the new key makes
        the verifier fetch the JWKS again and accept it; the withdrawn key is
        no longer trusted.
        """
        await self.verifier.verify(self.now())
        self.idp.rotate("rsa-2", RSA_KEY_2, withdraw="rsa-1")
        self.clock.advance(61)
        identity = await self.verifier.verify(self.now(key=RSA_KEY_2, kid="rsa-2"))
        self.assertEqual(identity.subject, "u-1234")
        self.assertEqual(self.idp.requests["jwks"], 2)
        reason = await self.rejectedReason(self.now())
        self.assertIn("unknown key id 'rsa-1'", reason)

    async def test_unknownKidRefetchRateLimited(self) -> None:
        """
        Tokens with unknown key ids cause at most one refetch per
        C{refresh_min_interval}.
        """
        await self.verifier.verify(self.now())
        self.assertEqual(self.idp.requests["jwks"], 1)
        self.clock.advance(61)
        await self.rejectedReason(self.now(kid="ghost-1"))
        await self.rejectedReason(self.now(kid="ghost-2"))
        self.assertEqual(self.idp.requests["jwks"], 2)
        self.clock.advance(59)
        await self.rejectedReason(self.now(kid="ghost-3"))
        self.assertEqual(self.idp.requests["jwks"], 2)
        self.clock.advance(2)
        await self.rejectedReason(self.now(kid="ghost-4"))
        self.assertEqual(self.idp.requests["jwks"], 3)

    async def test_idpDown(self) -> None:
        """
        With the IdP unreachable, tokens are rejected with the reason; once
        it is back (and the refresh interval has passed) verification works.
        """
        await self.idp.stop()
        reason = await self.rejectedReason(self.now())
        self.assertIn("no signing keys available", reason)
        self.assertIn("refused", reason)
        self.idp.start(self, port=self.idp.port)
        self.clock.advance(61)
        identity = await self.verifier.verify(self.now())
        self.assertEqual(identity.subject, "u-1234")

    async def test_failedRefreshKeepsKeys(self) -> None:
        """
        If refreshing stale keys fails, the cached keys stay in use.
        """
        await self.verifier.verify(self.now())
        await self.idp.stop()
        self.clock.advance(3601)
        identity = await self.verifier.verify(self.now())
        self.assertEqual(identity.subject, "u-1234")

    async def test_staleKeysRefreshed(self) -> None:
        """
        Keys older than C{key_max_age} are fetched again before use, so a
        withdrawn key stops being accepted.
        """
        await self.verifier.verify(self.now())
        self.idp.rotate("rsa-2", RSA_KEY_2, withdraw="rsa-1")
        self.clock.advance(3601)
        reason = await self.rejectedReason(self.now())
        self.assertIn("unknown key id 'rsa-1'", reason)
        self.assertEqual(self.idp.requests["jwks"], 2)

    async def test_timeout(self) -> None:
        """
        A fetch that gets no answer gives up after the fetch timeout.
        """
        self.idp.hang.add("discovery")
        verifying = self.verifier.verify(self.now())
        await self.idp.hung
        self.clock.advance(10)
        error = await self.assertFailure(verifying, AuthenticationError)
        self.assertIn("no response in 10.0s", error.reason)

    async def test_jwksURIConfigured(self) -> None:
        """
        With C{jwks_uri} configured, discovery is skipped.
        """
        verifier = self.makeVerifier(jwks_uri=self.issuer + "/jwks")
        await verifier.verify(self.now())
        self.assertEqual(self.idp.requests, {"jwks": 1})

    async def test_discoveryURLConfigured(self) -> None:
        """
        C{discovery_url} overrides the well-known location under the issuer.
        """
        verifier = self.makeVerifier(
            discovery_url=self.issuer + "/nowhere/openid-configuration"
        )
        reason = await self.rejectedReason(self.now(), verifier)
        self.assertIn("/nowhere/openid-configuration: HTTP status 404", reason)

    async def test_discoveryIssuerMismatch(self) -> None:
        """
        A discovery document for another issuer is not trusted.
        """
        self.idp.discoveryIssuer = "https://elsewhere.example.com"
        reason = await self.rejectedReason(self.now())
        self.assertIn("names issuer 'https://elsewhere.example.com'", reason)
        self.assertEqual(self.idp.requests["jwks"], 0)

    async def test_plainHTTPRefused(self) -> None:
        """
        Keys are never fetched over plain http from a non-loopback host,
        whether configured or discovered.
        """
        verifier = self.makeVerifier(jwks_uri="http://idp.example.com/jwks")
        reason = await self.rejectedReason(self.now(), verifier)
        self.assertIn("https is required", reason)
        self.idp.jwksURI = "http://192.0.2.1/jwks"
        reason = await self.rejectedReason(self.now())
        self.assertIn("https is required", reason)

    async def test_documentTooLarge(self) -> None:
        """
        An oversized JWKS is not buffered.
        """
        self.idp.padding = 2 * 1024 * 1024
        reason = await self.rejectedReason(self.now())
        self.assertIn("larger than", reason)


class TLSDiscoveryTests(TestCase):
    """
    Key discovery over https.
    """

    def setUp(self) -> None:
        self.clock = task.Clock()
        self.clock.advance(NOW)
        caPEM, serverOptions = makeTLS()
        self.caFile = self.mktemp()
        with open(self.caFile, "wb") as f:
            f.write(caPEM)
        self.idp = FakeIdP()
        self.issuer = self.idp.start(self, tls=serverOptions)

    def verifierWith(self, **config: Any) -> TokenVerifier:
        """
        A verifier for the https IdP.
        """
        issuerConfig = IssuerConfig(self.issuer, (AUDIENCE,), **config)
        return TokenVerifier([issuerConfig], reactor, clock=self.clock)

    async def test_caFileTrusted(self) -> None:
        """
        With C{ca_file}, the IdP's certificate is verified against that CA.
        """
        identity = await self.verifierWith(ca_file=self.caFile).verify(
            signed(self.issuer)
        )
        self.assertEqual(identity.subject, "u-1234")

    async def test_untrustedCertificate(self) -> None:
        """
        Without C{ca_file} the test CA is not trusted and no keys are loaded.
        """
        error = await self.assertFailure(
            self.verifierWith().verify(signed(self.issuer)), AuthenticationError
        )
        self.assertIn("no signing keys available", error.reason)
        self.assertEqual(self.idp.requests["discovery"], 0)
