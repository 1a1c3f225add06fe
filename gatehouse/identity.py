"""
Verification of OpenID Connect bearer tokens (JWTs).

A client proves who it is with a JWT issued by the organisation's OIDC
provider.  L{TokenVerifier} picks the configured issuer named by the token's
C{iss} claim, finds the signing key in that issuer's JWKS (discovered through
C{/.well-known/openid-configuration}, fetched with Twisted's HTTP client and
cached), lets pyjwt check the signature, and then checks the claims against
the injected clock.  The result is an L{Identity}; any failure is an
L{AuthenticationError} whose reason is meant for operators only.
"""

from __future__ import annotations

import ipaddress
import json
import math
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from typing import Any, cast
from urllib.parse import urlsplit

import attrs
import jwt
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from jwt.algorithms import get_default_algorithms
from twisted.internet import ssl
from twisted.internet.defer import Deferred, gatherResults, maybeDeferred, succeed
from twisted.internet.interfaces import IPushProducer, IReactorTime
from twisted.internet.protocol import Protocol, connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.client import Agent, BrowserLikePolicyForHTTPS, ResponseDone
from twisted.web.http import PotentialDataLoss
from twisted.web.http_headers import Headers
from twisted.web.iweb import IAgent, IPolicyForHTTPS, IResponse

from gatehouse.logs import quiet_agent_pool

__all__ = [
    "CLIENT_MESSAGE",
    "DEFAULT_MAX_TOKEN_LIFETIME",
    "AuthenticationError",
    "Identity",
    "IssuerConfig",
    "TokenVerifier",
]

CLIENT_MESSAGE = "authentication failed"
"""The only thing a client may ever be told about a rejected token."""

DEFAULT_MAX_TOKEN_LIFETIME = 24 * 3600.0
"""Tokens valid for longer than this (seconds) are refused by default."""

_HMAC_ALGORITHMS = frozenset({"HS256", "HS384", "HS512"})
_RSA_ALGORITHMS = frozenset({"RS256", "RS384", "RS512", "PS256", "PS384", "PS512"})
_EC_ALGORITHMS = {
    "P-256": frozenset({"ES256"}),
    "P-384": frozenset({"ES384"}),
    "P-521": frozenset({"ES512"}),
    "secp256k1": frozenset({"ES256K"}),
}
_OKP_CURVES = frozenset({"Ed25519", "Ed448"})

# A discovery document or JWKS is a few KiB; refuse to buffer more than this.
_MAX_DOCUMENT_BYTES = 1024 * 1024


def _strings(value: str | Sequence[str]) -> tuple[str, ...]:
    if isinstance(value, str):
        return (value,)
    return tuple(value)


def _secret(value: bytes | str | None) -> bytes | None:
    if isinstance(value, str):
        return value.encode("utf-8")
    return value


@attrs.frozen
class IssuerConfig:
    """
    One trusted token issuer.

    A token's C{alg} must be one of C{algorithms}.  HS256/HS384/HS512 may
    only be listed together with C{hs256_secret}, and are verified with that
    secret alone; keys found in a JWKS are only ever used for the asymmetric
    algorithms matching their key type, never for HMAC.
    """

    issuer: str
    audiences: tuple[str, ...] = attrs.field(converter=_strings)
    algorithms: tuple[str, ...] = attrs.field(
        default=("RS256", "ES256", "PS256", "EdDSA"), converter=_strings
    )
    groups_claim: str = "groups"
    name_claim: str = "name"
    leeway: float = 30.0
    discovery_url: str | None = None
    jwks_uri: str | None = None
    jwks_file: str | None = None
    hs256_secret: bytes | None = attrs.field(default=None, converter=_secret)
    ca_file: str | None = None
    refresh_min_interval: float = 60.0


@attrs.frozen
class Identity:
    """
    Who a verified token says the client is.

    @ivar expires_at: the token's C{exp}.
    @ivar valid_until: when this gateway stops accepting the token:
        C{exp} plus the issuer's leeway (sessions that end with their
        token end then); None if unknown.
    """

    subject: str
    name: str
    groups: tuple[str, ...]
    issuer: str
    expires_at: float | None
    valid_until: float | None = None


class AuthenticationError(Exception):
    """
    A token was rejected.

    C{reason} (also C{str()} of the exception) explains why, for operators'
    logs; clients must only ever be shown L{CLIENT_MESSAGE}.

    C{kind} is one of a small fixed set (L{gatehouse.metrics.AUTH_REASONS})
    for metrics and alerting; by default it is read from C{reason}.
    """

    CLIENT_MESSAGE = CLIENT_MESSAGE

    def __init__(self, reason: str, kind: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.kind = kind if kind is not None else failure_kind(reason)

    def __str__(self) -> str:
        return self.reason


#: reason text -> kind, first match wins (see L{failure_kind})
_KINDS = (
    ("internal error", "internal"),
    ("malformed", "malformed"),
    ("token longer", "malformed"),
    ("token is ", "malformed"),
    ("signature", "signature"),
    ("expired", "expired"),
    ("not valid before", "not_yet_valid"),
    ("issued in the future", "not_yet_valid"),
    ("lifetime", "lifetime"),
    ("audience", "audience"),
    ("alg", "algorithm"),
    ("unsigned token", "algorithm"),
    ("key", "key"),
    ("issuer", "issuer"),
    ("'iss'", "issuer"),
    ("claim", "claims"),
)


def failure_kind(reason: str) -> str:
    """
    The kind of a token refusal, from its reason text: one of
    L{gatehouse.metrics.AUTH_REASONS} (C{"other"} when none fits).
    """
    lowered = reason.lower()
    for needle, kind in _KINDS:
        if needle in lowered:
            return kind
    return "other"


class _FetchError(Exception):
    """
    Signing keys could not be loaded; the message names what and why.
    """


@attrs.frozen(eq=False)
class _SigningKey:
    """
    One usable key from a JWKS: its C{kid} and a pyjwt key per algorithm
    that the key type allows (and the JWK's own C{alg}, if any, permits).
    """

    kid: str | None
    byAlgorithm: Mapping[str, jwt.PyJWK]


def _short(value: object, limit: int = 80) -> str:
    """
    Render an attacker-controlled value for a log line, bounded in length.
    """
    text = repr(value)
    if len(text) > limit:
        text = text[:limit] + "..."
    return text


def _keyAlgorithms(jwk: Mapping[str, Any]) -> frozenset[str]:
    kty = jwk.get("kty")
    if kty == "RSA":
        algorithms = _RSA_ALGORITHMS
    elif kty == "EC":
        algorithms = _EC_ALGORITHMS.get(str(jwk.get("crv")), frozenset())
    elif kty == "OKP" and jwk.get("crv") in _OKP_CURVES:
        algorithms = frozenset({"EdDSA"})
    else:
        # Symmetric ("oct") keys from a JWKS are never trusted: HMAC is only
        # accepted with the secret configured for the issuer.
        return frozenset()
    declared = jwk.get("alg")
    if declared is None:
        return algorithms
    if not isinstance(declared, str):
        return frozenset()
    return algorithms & {declared}


def _parseJWKS(document: object, source: str) -> list[_SigningKey]:
    if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
        raise _FetchError(f"{source}: not a JWKS (no 'keys' list)")
    keys = []
    for jwk in document["keys"]:
        if not isinstance(jwk, dict) or jwk.get("use", "sig") != "sig":
            continue
        kid = jwk.get("kid")
        if kid is not None and not isinstance(kid, str):
            continue
        byAlgorithm = {}
        for algorithm in _keyAlgorithms(jwk):
            try:
                byAlgorithm[algorithm] = jwt.PyJWK(jwk, algorithm)
            except Exception:
                # A malformed or unsupported entry must not spoil the others.
                continue
        if byAlgorithm:
            keys.append(_SigningKey(kid, byAlgorithm))
    if not keys:
        raise _FetchError(f"{source}: JWKS contains no usable signing keys")
    return keys


def _parseJSON(data: bytes, source: str) -> object:
    try:
        return json.loads(data)
    except (ValueError, RecursionError) as e:
        raise _FetchError(f"{source}: not valid JSON ({e})")


def _loadJWKSFile(path: str) -> list[_SigningKey]:
    # A static JWKS is a small local file; reading it inline is acceptable.
    try:
        with open(path, "rb") as f:
            data = f.read(_MAX_DOCUMENT_BYTES + 1)
    except OSError as e:
        raise _FetchError(f"cannot read JWKS file {path}: {e.strerror}")
    if len(data) > _MAX_DOCUMENT_BYTES:
        raise _FetchError(f"JWKS file {path} is larger than {_MAX_DOCUMENT_BYTES}")
    return _parseJWKS(_parseJSON(data, path), path)


def _isLoopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _checkURL(url: str) -> bytes:
    """
    Refuse URLs that would fetch keys without TLS from a non-loopback host.

    @return: the URL as bytes, for L{IAgent.request}.
    """
    try:
        parts = urlsplit(url)
        host = parts.hostname
        encoded = url.encode("ascii")
    except (ValueError, UnicodeEncodeError):
        raise _FetchError(f"invalid URL {_short(url)}")
    if host and (
        parts.scheme == "https" or (parts.scheme == "http" and _isLoopback(host))
    ):
        return encoded
    raise _FetchError(
        f"refusing to fetch {_short(url)}: https is required "
        "(plain http only for loopback hosts)"
    )


def _trustPolicy(caFile: str) -> IPolicyForHTTPS:
    """
    An HTTPS policy that trusts exactly the CA certificates in C{caFile}.
    """
    with open(caFile, "rb") as f:
        pem = f.read()
    certificates = [
        ssl.Certificate.loadPEM(certificate.public_bytes(Encoding.PEM))
        for certificate in x509.load_pem_x509_certificates(pem)
    ]
    return BrowserLikePolicyForHTTPS(
        trustRoot=ssl.trustRootFromCertificates(certificates)
    )


class _BoundedBody(Protocol):
    """
    Collect a response body, giving up once it exceeds a size limit.
    """

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._chunks: list[bytes] = []
        self._size = 0
        self.finished: Deferred[bytes] = Deferred(lambda d: self._abort())

    def _abort(self) -> None:
        # The transport of a response body is a producer (an HTTP client
        # connection): stopping it drops the connection.
        transport = cast("IPushProducer | None", self.transport)
        if transport is not None:
            transport.stopProducing()

    def dataReceived(self, data: bytes) -> None:
        if self.finished.called:
            return
        self._size += len(data)
        if self._size > self._limit:
            self._abort()
            self.finished.errback(
                _FetchError(f"response larger than {self._limit} bytes")
            )
            return
        self._chunks.append(data)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        if self.finished.called:
            return
        # PotentialDataLoss: a body delimited by the connection closing.
        if reason.check(ResponseDone, PotentialDataLoss):
            self.finished.callback(b"".join(self._chunks))
        else:
            self.finished.errback(reason)


def _describe(error: BaseException) -> str:
    reasons = getattr(error, "reasons", None)
    if isinstance(reasons, list) and reasons:
        return "; ".join(
            r.getErrorMessage() if isinstance(r, Failure) else str(r) for r in reasons
        )
    return str(error) or type(error).__name__


class _IssuerKeys:
    """
    The cached signing keys of one issuer and the logic deciding when to
    fetch them again.

    At most one fetch runs at a time (callers arriving meanwhile wait for
    it), fetches start at most once per C{refresh_min_interval}, and a failed
    fetch leaves the previously cached keys in place.
    """

    log = Logger()

    def __init__(
        self,
        config: IssuerConfig,
        fetch: Callable[[], Deferred[list[_SigningKey]]],
        clock: IReactorTime,
        maxAge: float,
    ) -> None:
        self.config = config
        self._fetch = fetch
        self._clock = clock
        self._maxAge = maxAge
        self.keys: list[_SigningKey] | None = None
        self.lastError: str | None = None
        self._fetchedAt = 0.0
        self._lastAttempt: float | None = None
        self._waiting: list[Deferred[list[_SigningKey] | None]] | None = None

    def current(self) -> Deferred[list[_SigningKey] | None]:
        """
        The cached keys, loading them first if there are none yet or they
        are older than the maximum age.
        """
        if self.keys is None or self._clock.seconds() - self._fetchedAt >= self._maxAge:
            return self.refresh()
        return succeed(self.keys)

    def refresh(self) -> Deferred[list[_SigningKey] | None]:
        """
        Fetch the keys again unless that was tried too recently; fires with
        whatever keys are cached afterwards (never fails).
        """
        if self._waiting is not None:
            waiter: Deferred[list[_SigningKey] | None] = Deferred()
            self._waiting.append(waiter)
            return waiter
        now = self._clock.seconds()
        if (
            self._lastAttempt is not None
            and now - self._lastAttempt < self.config.refresh_min_interval
        ):
            return succeed(self.keys)
        self._lastAttempt = now
        waiter = Deferred()
        self._waiting = [waiter]
        fetching = maybeDeferred(self._fetch)
        fetching.addCallbacks(self._fetched, self._failed)
        fetching.addBoth(self._release)
        return waiter

    def _fetched(self, keys: list[_SigningKey]) -> None:
        self.keys = keys
        self._fetchedAt = self._clock.seconds()
        self.lastError = None
        self.log.info(
            "Loaded {count} signing key(s) for issuer {issuer}",
            count=len(keys),
            issuer=self.config.issuer,
        )

    def _failed(self, failure: Failure) -> None:
        self.lastError = _describe(cast(BaseException, failure.value))
        self.log.warn(
            "Could not load signing keys for issuer {issuer}: {error}"
            " (keeping {cached} cached key(s))",
            issuer=self.config.issuer,
            error=self.lastError,
            cached=len(self.keys or ()),
        )

    def _release(self, result: Failure | None) -> None:
        if isinstance(result, Failure):
            self.log.failure("Bug while storing signing keys", result)
        waiting, self._waiting = self._waiting, None
        for waiter in waiting or ():
            waiter.callback(self.keys)


def _pyjwtReason(error: jwt.PyJWTError) -> str:
    message = str(error)
    if len(message) > 160 or not message.isprintable():
        # pyjwt quotes bits of the token in some messages.
        message = _short(message, 160)
    if isinstance(error, jwt.InvalidSignatureError):
        return "signature verification failed"
    if isinstance(error, jwt.MissingRequiredClaimError):
        return f"token has no {error.claim!r} claim"
    if isinstance(error, jwt.InvalidAudienceError):
        return f"audience not accepted: {message}"
    if isinstance(error, jwt.InvalidIssuerError):
        return f"issuer not accepted: {message}"
    if isinstance(error, jwt.InvalidAlgorithmError):
        return f"algorithm not accepted: {message}"
    if isinstance(error, jwt.InvalidKeyError):
        return f"unusable key: {message}"
    if isinstance(error, jwt.DecodeError):
        return f"malformed token: {message}"
    return f"invalid token: {message}"


def _numericDate(claims: Mapping[str, Any], name: str) -> float:
    value = claims[name]
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not math.isfinite(value)
    ):
        raise AuthenticationError(f"{name!r} claim is not a number")
    return float(value)


def _claimAtPath(claims: Mapping[str, Any], path: str) -> object:
    # Claim names may themselves contain dots (e.g. "https://example/groups").
    if path in claims:
        return claims[path]
    value: object = claims
    for part in path.split("."):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return value


def _groups(claims: Mapping[str, Any], path: str) -> tuple[str, ...]:
    value = _claimAtPath(claims, path)
    if value is None:
        return ()
    if isinstance(value, str):
        return tuple(value.split())
    if isinstance(value, list) and all(isinstance(g, str) for g in value):
        return tuple(value)
    raise AuthenticationError("groups claim is not a list or string")


def _displayName(claims: Mapping[str, Any], nameClaim: str, subject: str) -> str:
    preferred = claims.get("preferred_username")
    for candidate in (_claimAtPath(claims, nameClaim), preferred):
        if isinstance(candidate, str) and candidate:
            return candidate
    return subject


# Only the signature, algorithm, issuer, audience and required claims are left
# to pyjwt: its time checks use the wall clock, so they are redone against the
# injected clock in TokenVerifier._checkTimes.
_DECODE_OPTIONS: Any = {
    "verify_signature": True,
    "verify_exp": False,
    "verify_nbf": False,
    "verify_iat": False,
    "verify_iss": True,
    "verify_aud": True,
    "verify_sub": True,
    "verify_jti": True,
    "require": ["exp", "iss", "aud", "sub"],
    "strict_aud": False,
    "enforce_minimum_key_length": True,
}
_UNVERIFIED_OPTIONS: Any = {"verify_signature": False}


class TokenVerifier:
    """
    Verify JWTs from a set of trusted OIDC issuers.

    @param issuers: the trusted issuers; their C{issuer} values must differ.
    @param reactor: used to build the HTTP client, and as the clock unless
        C{clock} is given.
    @param agent: an L{IAgent} to fetch discovery documents and JWKS with,
        instead of one built from C{reactor} (C{ca_file} is then ignored).
    @param max_token_bytes: longer tokens are rejected before any parsing.
    @param clock: the time source for C{exp}/C{nbf}/C{iat}, the refresh rate
        limit and fetch timeouts.
    @param key_max_age: cached keys older than this many seconds are fetched
        again (rate-limited) before use, so keys the IdP withdrew stop being
        accepted; if that fetch fails the cached keys stay in use.
    @param fetch_timeout: seconds allowed for each HTTP request.
    @param max_token_lifetime: tokens valid for longer than this many
        seconds are refused: C{exp - iat}, or C{exp} minus now when the
        token has no C{iat} (or one in the future); None for no limit.
    """

    log = Logger()

    def __init__(
        self,
        issuers: Sequence[IssuerConfig],
        reactor: IReactorTime,
        *,
        agent: IAgent | None = None,
        max_token_bytes: int = 16384,
        clock: IReactorTime | None = None,
        key_max_age: float = 3600.0,
        fetch_timeout: float = 10.0,
        max_token_lifetime: float | None = DEFAULT_MAX_TOKEN_LIFETIME,
    ) -> None:
        self._clock = reactor if clock is None else clock
        self._maxLifetime = max_token_lifetime
        self._maxTokenBytes = max_token_bytes
        #: longer tokens are refused; protocols bound the password message by it
        self.max_token_bytes = max_token_bytes
        self._fetchTimeout = fetch_timeout
        self._jwt = jwt.PyJWT()
        self._issuers: dict[str, _IssuerKeys] = {}
        self._agents: dict[str, IAgent] = {}
        known = set(get_default_algorithms()) - {"none"}
        for config in issuers:
            if config.issuer in self._issuers:
                raise ValueError(f"issuer {config.issuer!r} is configured twice")
            algorithms = set(config.algorithms)
            if algorithms - known:
                raise ValueError(
                    f"issuer {config.issuer!r}: unsupported algorithms"
                    f" {sorted(algorithms - known)}"
                )
            if config.hs256_secret is None and algorithms & _HMAC_ALGORITHMS:
                raise ValueError(
                    f"issuer {config.issuer!r}: HS* algorithms need hs256_secret"
                )
            if config.jwks_file is None:
                if agent is not None:
                    self._agents[config.issuer] = agent
                else:
                    policy = (
                        BrowserLikePolicyForHTTPS()
                        if config.ca_file is None
                        else _trustPolicy(config.ca_file)
                    )
                    self._agents[config.issuer] = Agent(
                        cast(Any, reactor),
                        contextFactory=policy,
                        pool=quiet_agent_pool(reactor),
                    )
            self._issuers[config.issuer] = _IssuerKeys(
                config,
                partial(self._fetchKeys, config),
                self._clock,
                key_max_age,
            )

    def prefetch(self) -> Deferred[None]:
        """
        Load the signing keys of every issuer that uses asymmetric keys.

        Failures are logged, not reported: the returned L{Deferred} always
        succeeds, and keys are fetched again on demand.
        """
        loading = [
            state.refresh()
            for state in self._issuers.values()
            if set(state.config.algorithms) - _HMAC_ALGORITHMS
        ]
        return gatherResults(loading).addCallback(lambda ignored: None)

    def verify(self, token: str | bytes) -> Deferred[Identity]:
        """
        Verify C{token} completely.

        @return: a L{Deferred} firing with the L{Identity} the token asserts,
            or failing with L{AuthenticationError}.
        """
        verifying = Deferred.fromCoroutine(self._verify(token))
        verifying.addErrback(self._rejected)
        return verifying

    def _rejected(self, failure: Failure) -> Failure:
        if not failure.check(AuthenticationError):
            self.log.failure("Unexpected error while verifying a token", failure)
            failure = Failure(AuthenticationError("internal error verifying token"))
        # Who presented it is known to the caller, which logs the refusal.
        self.log.debug("Token rejected: {reason}", reason=str(failure.value))
        return failure

    async def _verify(self, token: str | bytes) -> Identity:
        raw = self._checkShape(token)
        try:
            unverified = self._jwt.decode_complete(raw, options=_UNVERIFIED_OPTIONS)
        except jwt.PyJWTError as e:
            raise AuthenticationError(_pyjwtReason(e))
        header, claims = unverified["header"], unverified["payload"]

        algorithm = header.get("alg")
        if not isinstance(algorithm, str) or not algorithm:
            raise AuthenticationError("token header has no 'alg'")
        if algorithm.lower() == "none":
            raise AuthenticationError("unsigned token (alg 'none') is never accepted")
        issuer = claims.get("iss")
        if not isinstance(issuer, str):
            raise AuthenticationError("token has no 'iss' claim")
        state = self._issuers.get(issuer)
        if state is None:
            raise AuthenticationError(f"issuer {_short(issuer)} is not configured")
        config = state.config

        if algorithm in _HMAC_ALGORITHMS and config.hs256_secret is None:
            raise AuthenticationError(
                f"{algorithm} is not accepted for issuer {issuer!r}: "
                "no shared secret is configured"
            )
        if algorithm not in config.algorithms:
            raise AuthenticationError(
                f"algorithm {_short(algorithm)} is not allowed for issuer {issuer!r}"
            )
        keys: Sequence[jwt.PyJWK | bytes]
        if algorithm in _HMAC_ALGORITHMS:
            keys = [cast(bytes, config.hs256_secret)]
        else:
            keys = await self._findKeys(state, header.get("kid"), algorithm)

        claims = self._decode(raw, keys, algorithm, config, header.get("kid"))
        self._checkTimes(claims, config.leeway)
        subject = claims["sub"]
        if not subject:
            raise AuthenticationError("'sub' claim is empty")
        expires = _numericDate(claims, "exp")
        return Identity(
            subject=subject,
            name=_displayName(claims, config.name_claim, subject),
            groups=_groups(claims, config.groups_claim),
            issuer=issuer,
            expires_at=expires,
            valid_until=expires + config.leeway,
        )

    def _checkShape(self, token: object) -> bytes:
        """
        Cheap checks done before anything parses the token.
        """
        if isinstance(token, str):
            if len(token) > self._maxTokenBytes:
                raise AuthenticationError(
                    f"token longer than {self._maxTokenBytes} bytes"
                )
            try:
                raw = token.encode("ascii")
            except UnicodeEncodeError:
                raise AuthenticationError("malformed token: not ASCII")
        elif isinstance(token, bytes):
            raw = token
        else:
            raise AuthenticationError(
                f"token is {type(token).__name__}, not str or bytes"
            )
        if len(raw) > self._maxTokenBytes:
            raise AuthenticationError(
                f"token is {len(raw)} bytes, longer than {self._maxTokenBytes}"
            )
        parts = raw.count(b".") + 1
        if parts != 3:
            raise AuthenticationError(
                f"malformed token: {parts} dot-separated parts instead of 3"
            )
        return raw

    async def _findKeys(
        self, state: _IssuerKeys, kid: str | None, algorithm: str
    ) -> list[jwt.PyJWK]:
        def matching(keys: list[_SigningKey] | None) -> list[jwt.PyJWK]:
            return [
                key.byAlgorithm[algorithm]
                for key in keys or ()
                if algorithm in key.byAlgorithm and (kid is None or key.kid == kid)
            ]

        found = matching(await state.current())
        if not found:
            # Perhaps the IdP rotated its keys; refresh() is rate-limited so
            # tokens with made-up key ids cannot make us hammer the IdP.
            found = matching(await state.refresh())
        if found:
            return found
        issuer = state.config.issuer
        if state.keys is None:
            raise AuthenticationError(
                f"no signing keys available for issuer {issuer!r}: {state.lastError}"
            )
        if kid is None:
            raise AuthenticationError(
                f"issuer {issuer!r} publishes no key for {algorithm}"
            )
        if any(key.kid == kid for key in state.keys):
            raise AuthenticationError(
                f"key {_short(kid)} of issuer {issuer!r}"
                f" cannot be used with {algorithm}"
            )
        raise AuthenticationError(
            f"unknown key id {_short(kid)} for {algorithm} (issuer {issuer!r})"
        )

    def _decode(
        self,
        raw: bytes,
        keys: Sequence[jwt.PyJWK | bytes],
        algorithm: str,
        config: IssuerConfig,
        kid: str | None,
    ) -> dict[str, Any]:
        """
        Let pyjwt check the signature (trying each candidate key), the
        issuer, the audience and the presence of the required claims.
        """
        failure: jwt.PyJWTError | None = None
        for key in keys:
            try:
                decoded = self._jwt.decode_complete(
                    raw,
                    key=key,
                    algorithms=[algorithm],
                    options=_DECODE_OPTIONS,
                    audience=list(config.audiences),
                    issuer=config.issuer,
                )
            except jwt.InvalidSignatureError as e:
                failure = e
                continue
            except jwt.PyJWTError as e:
                raise AuthenticationError(_pyjwtReason(e))
            return cast(dict[str, Any], decoded["payload"])
        assert failure is not None
        raise AuthenticationError(
            f"{_pyjwtReason(failure)} ({algorithm}, key id {_short(kid)},"
            f" issuer {config.issuer!r})"
        )

    def _checkTimes(self, claims: Mapping[str, Any], leeway: float) -> None:
        now = self._clock.seconds()
        expires = _numericDate(claims, "exp")
        if now >= expires + leeway:
            raise AuthenticationError(
                f"token expired at {expires:.0f} (now {now:.0f}, leeway {leeway}s)"
            )
        if "nbf" in claims:
            notBefore = _numericDate(claims, "nbf")
            if notBefore > now + leeway:
                raise AuthenticationError(
                    f"token not valid before {notBefore:.0f} "
                    f"(now {now:.0f}, leeway {leeway}s)"
                )
        issuedAt = now
        if "iat" in claims:
            issuedAt = _numericDate(claims, "iat")
            if issuedAt > now + leeway:
                raise AuthenticationError(
                    f"token issued in the future at {issuedAt:.0f} "
                    f"(now {now:.0f}, leeway {leeway}s)"
                )
        # The lifetime the issuer granted (exp - iat), and never less than
        # what is left of it: a token without iat, or with one slightly in
        # the future, is measured from now.
        lifetime = expires - min(issuedAt, now)
        limit = self._maxLifetime
        if limit is not None and lifetime > limit:
            fromIat = "iat" in claims and issuedAt <= now
            measured = "exp - iat" if fromIat else "exp - now"
            raise AuthenticationError(
                f"token lifetime {lifetime:.0f}s ({measured}) exceeds the"
                f" maximum of {limit:.0f}s (identity.max_token_lifetime)"
            )

    def _fetchKeys(self, config: IssuerConfig) -> Deferred[list[_SigningKey]]:
        if config.jwks_file is not None:
            return maybeDeferred(_loadJWKSFile, config.jwks_file)
        return Deferred.fromCoroutine(self._fetchRemoteKeys(config))

    async def _fetchRemoteKeys(self, config: IssuerConfig) -> list[_SigningKey]:
        agent = self._agents[config.issuer]
        jwksURI = config.jwks_uri
        if jwksURI is None:
            discoveryURL = config.discovery_url or (
                config.issuer.rstrip("/") + "/.well-known/openid-configuration"
            )
            discovery = await self._getJSON(agent, discoveryURL)
            if not isinstance(discovery, dict):
                raise _FetchError(f"{discoveryURL}: not a JSON object")
            if discovery.get("issuer") != config.issuer:
                raise _FetchError(
                    f"{discoveryURL}: names issuer {_short(discovery.get('issuer'))}"
                    f" instead of {config.issuer!r}"
                )
            jwksURI = discovery.get("jwks_uri")
            if not isinstance(jwksURI, str):
                raise _FetchError(f"{discoveryURL}: no 'jwks_uri'")
        return _parseJWKS(await self._getJSON(agent, jwksURI), jwksURI)

    async def _getJSON(self, agent: IAgent, url: str) -> object:
        request: Deferred[Any] = agent.request(
            b"GET",
            _checkURL(url),
            Headers({b"accept": [b"application/json"], b"user-agent": [b"gatehouse"]}),
        )
        request.addCallback(self._readResponse)
        # Cancelling a request in flight fails it with ResponseNeverReceived
        # rather than CancelledError, so say what happened explicitly.
        request.addTimeout(
            self._fetchTimeout,
            self._clock,
            onTimeoutCancel=lambda result, timeout: Failure(
                _FetchError(f"no response in {timeout}s")
            ),
        )
        try:
            code, body = await request
        except Exception as e:
            raise _FetchError(f"GET {url}: {_describe(e)}")
        if code != 200:
            raise _FetchError(f"GET {url}: HTTP status {code}")
        return _parseJSON(body, url)

    @staticmethod
    def _readResponse(response: IResponse) -> Deferred[tuple[int, bytes]]:
        collector = _BoundedBody(_MAX_DOCUMENT_BYTES)
        response.deliverBody(collector)
        return collector.finished.addCallback(lambda body: (response.code, body))
