"""
The gateway as an SSH server (Conch): one L{GatewayTransport} per client
connection, a L{Session} from accept to close, and the login.

The login name selects the target (C{ssh web-1@gw}) and optionally the
upstream account (C{ssh deploy+web-1@gw}).  Two ways to say who one is:
the JWT as the password, or an OpenSSH user certificate the gateway's CA
signed (C{gatehouse ssh-cert}).  Both go to L{Session.authenticate}: the
core checks the credentials and whether the identity may reach the
target.  The gateway then logs in to the target itself
(L{gatehouse.protocols.ssh.upstream}) before it tells the client it is
in, so a target that is down or shows another host key is a clear
message at login, recorded, never a half-open session.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from typing import Any

from twisted.conch import error
from twisted.conch.ssh import keys, transport, userauth
from twisted.conch.ssh.common import NS, getNS
from twisted.conch.ssh.factory import SSHFactory
from twisted.cred.credentials import SSHPrivateKey
from twisted.cred.error import UnauthorizedLogin
from twisted.internet import defer
from twisted.internet.defer import Deferred
from twisted.python.failure import Failure

from gatehouse.config import TargetConfig
from gatehouse.credentials import BearerToken
from gatehouse.files import files
from gatehouse.identity import AuthenticationError, Identity
from gatehouse.limits import Admission, ConnectionLimits
from gatehouse.protocols.ssh.certificates import (
    CertificateRefused,
    UserCA,
    mint_login,
    verify_certificate,
)
from gatehouse.protocols.ssh.config import (
    ACCOUNT_SEPARATOR,
    AccountRefused,
    SSHListenerOptions,
    SSHTargetOptions,
)
from gatehouse.protocols.ssh.transport import harden, quiet_logger
from gatehouse.protocols.ssh.upstream import (
    UpstreamConnection,
    UpstreamFailed,
    connect,
    load_client_key,
)
from gatehouse.recording.interfaces import RecordingUnavailable
from gatehouse.session import Session, TargetAccessDenied

__all__ = ["GatewayTransport", "GatewayUserAuth", "SSHGatewayFactory", "parse_login"]

#: how this gateway names itself in its version line
VERSION = b"SSH-2.0-gatehouse"
#: OpenSSH certificate key types a client may log in with
CERTIFICATE_TYPES = frozenset(
    {
        b"ssh-ed25519-cert-v01@openssh.com",
        b"ecdsa-sha2-nistp256-cert-v01@openssh.com",
        b"ecdsa-sha2-nistp384-cert-v01@openssh.com",
        b"ecdsa-sha2-nistp521-cert-v01@openssh.com",
        b"rsa-sha2-256-cert-v01@openssh.com",
        b"rsa-sha2-512-cert-v01@openssh.com",
    }
)


def parse_login(user: bytes) -> tuple[str, str | None]:
    """
    The target and the account asked for in a login name
    (C{web-1}, C{deploy+web-1}).

    @raise ValueError: not UTF-8, or an empty part.
    """
    text = user.decode("utf-8")
    account, sep, target = text.rpartition(ACCOUNT_SEPARATOR)
    if not target or (sep and not account):
        raise ValueError(f"{text!r} is not TARGET or ACCOUNT+TARGET")
    return target, (account if sep else None)


def _target_options(target: TargetConfig) -> SSHTargetOptions:
    options = target.options
    if not isinstance(options, SSHTargetOptions):
        raise TypeError(f"target {target.name!r} is not an ssh target")
    return options


class GatewayUserAuth(userauth.SSHUserAuthServer):
    """
    The login: a JWT as the password, or a certificate of the gateway's
    user CA; then the target check, the account, and the target login.
    """

    _log = quiet_logger()

    transport: GatewayTransport

    def serviceStarted(self) -> None:
        self.authenticatedWith = []
        self.loginAttempts = 0
        self.user = None
        self.nextService = None
        self._busy = False
        methods = [b"publickey"] if self.transport.factory.authorities else []
        if self.transport.isEncrypted("in"):
            methods.append(b"password")
        self.supportedAuthentications = methods
        # The transport's authentication_timeout bounds the login (Conch's
        # serviceStopped reads this: no timer of its own).
        self._cancelLoginTimeout = None  # type: ignore[assignment]

    def ssh_USERAUTH_REQUEST(self, packet: bytes) -> Any:
        if self._busy:
            # RFC 4252: one request at a time; a second one is refused.
            self.transport.sendPacket(
                userauth.MSG_USERAUTH_FAILURE,
                NS(b",".join(self.supportedAuthentications)) + b"\x00",
            )
            return None
        return super().ssh_USERAUTH_REQUEST(packet)

    def tryAuth(self, kind: bytes, user: bytes, data: bytes) -> Deferred[Any]:
        if kind not in self.supportedAuthentications or kind == b"none":
            return defer.fail(error.ConchError("method not offered"))
        try:
            self._target, self._asked = parse_login(user)
        except (ValueError, UnicodeDecodeError) as e:
            self.banner(f"gatehouse: log in as TARGET or ACCOUNT+TARGET ({e})")
            return defer.fail(UnauthorizedLogin(str(e)))
        return super().tryAuth(kind, user, data)

    def banner(self, text: str) -> None:
        """Show the client a line during login (OpenSSH prints it)."""
        self.transport.sendPacket(
            userauth.MSG_USERAUTH_BANNER, NS(text.encode() + b"\r\n") + NS(b"")
        )

    # -- methods ---------------------------------------------------------

    def auth_password(self, packet: bytes) -> Deferred[Any]:
        password = getNS(packet[1:])[0]
        if len(password) > self.transport.session.max_token_bytes:
            return defer.fail(UnauthorizedLogin("password longer than any token"))
        return self._login(BearerToken(password))

    def auth_publickey(self, packet: bytes) -> Deferred[Any]:
        has_signature = packet[0:1] != b"\x00"
        algorithm, blob, rest = getNS(packet[1:], 2)
        if algorithm not in CERTIFICATE_TYPES:
            return defer.fail(
                UnauthorizedLogin(
                    "only certificates of the gateway's user CA are accepted"
                )
            )
        # This listener's own CAs first (the hub's checker trusts those of
        # every listener), then, signed, the hub's check with the signature.
        try:
            verify_certificate(
                blob,
                self.transport.factory.authorities,
                self._target,
                self.transport.factory.reactor.seconds(),
            )
        except CertificateRefused as e:
            self.banner(f"gatehouse: certificate refused: {e}")
            self.transport.login_refusal = f"certificate refused: {e}"
            self.transport.session.event(
                "certificate-refused", kind=e.kind, reason=str(e)
            )
            return defer.fail(UnauthorizedLogin(str(e)))
        if not has_signature:
            # OpenSSH asks whether a key would do before it signs.
            self.transport.sendPacket(userauth.MSG_USERAUTH_PK_OK, packet[1:])
            return defer.fail(error.IgnoreAuthentication())
        signature = getNS(rest)[0]
        signed = (
            NS(self.transport.sessionID or b"")
            + bytes((userauth.MSG_USERAUTH_REQUEST,))
            + NS(self.user or b"")
            + NS(self.nextService or b"")
            + NS(b"publickey")
            + b"\x01"
            + NS(algorithm)
            + NS(blob)
        )
        # The principal is the target: a certificate names the targets
        # it may reach.
        credentials = SSHPrivateKey(
            self._target.encode(), algorithm, blob, signed, signature
        )
        return self._login(credentials)

    # -- after the credentials -----------------------------------------

    def _login(self, credentials: object) -> Deferred[Any]:
        self._busy = True
        t = self.transport
        d = t.session.authenticate(credentials, self._target)
        d.addCallback(self._identified)

        def done(result: object) -> object:
            self._busy = False
            return result

        return d.addBoth(done).addErrback(self._refused)

    def _identified(self, identity: Identity) -> Deferred[Any]:
        t = self.transport
        t.identified()
        target: TargetConfig = t.factory.targets[self._target]
        options = _target_options(target)
        try:
            account = options.account_for(tuple(identity.groups), self._asked)
        except AccountRefused as e:
            t.session.event("account-refused", asked=self._asked, reason=str(e))
            t.fatal(f"gatehouse: target {self._target!r}: {e}")
            return defer.fail(error.IgnoreAuthentication())
        return t.connect_upstream(target, account).addCallback(
            lambda upstream: (None, upstream, lambda: None)
        )

    def _refused(self, failure: Failure) -> Failure:
        t = self.transport
        if failure.check(error.IgnoreAuthentication, error.ConchError):
            return failure
        if failure.check(RecordingUnavailable):
            t.fatal(f"gatehouse: {failure.getErrorMessage()}")
            return Failure(error.IgnoreAuthentication())
        if failure.check(TargetAccessDenied):
            t.identified()
            t.fatal(f"gatehouse: {failure.value}")
            return Failure(error.IgnoreAuthentication())
        if failure.check(UpstreamFailed):
            t.fatal(
                f"gatehouse: the gateway could not open a session on target "
                f"{self._target!r}: {failure.getErrorMessage()}"
            )
            return Failure(error.IgnoreAuthentication())
        if failure.check(AuthenticationError):
            # The reason is for operators (the auth.failure line), as on
            # every listener: the client only learns that it failed.
            self.banner(f"gatehouse: {AuthenticationError.CLIENT_MESSAGE}")
            return Failure(UnauthorizedLogin(str(failure.value)))
        self._log.failure("SSH login", failure)
        t.fatal("gatehouse: internal error during login")
        return Failure(error.IgnoreAuthentication())


class GatewayTransport(transport.SSHServerTransport):
    """
    One client connection: its L{Session} from accept to close, the
    login's deadline, the target connection, and what ends it.
    """

    _log = quiet_logger()
    ourVersionString = VERSION

    factory: SSHGatewayFactory
    session: Session

    def __init__(self) -> None:
        self.upstream: UpstreamConnection | None = None
        self.close_reason: str | None = None
        #: why the last login attempt was refused (the end's reason if the
        #: client then leaves without logging in)
        self.login_refusal: str | None = None
        self._admission: Admission | None = None
        self._timer: Any = None
        self._ended = False

    @property
    def _wire(self) -> Any:
        """The TCP transport under the SSH transport."""
        return self.transport

    # -- accept ---------------------------------------------------------

    def connectionMade(self) -> None:
        f = self.factory
        peer = self._wire.getPeer()
        self.peer = f"{getattr(peer, 'host', peer)}:{getattr(peer, 'port', '')}"
        admitted = f.limits.admit(self.peer)
        if isinstance(admitted, str):
            self._wire.write(f"gatehouse: {admitted}\r\n".encode())
            self._wire.loseConnection()
            self._ended = True
            return
        self._admission = admitted
        if f.draining:
            self._wire.write(b"gatehouse: the gateway is shutting down\r\n")
            self._wire.loseConnection()
            self._ended = True
            return
        admitted.on_evict = lambda: self.fatal(
            "gatehouse: too many connections (evicted for a client from "
            "another address)"
        )
        try:
            self.session = f.session_factory("ssh", f.listener_name, self.peer)
        except RecordingUnavailable as e:
            self._wire.write(f"gatehouse: {e}\r\n".encode())
            self._wire.loseConnection()
            self._ended = True
            return
        self.session.on_failure(self._recording_failed)
        self.session.on_terminate(self._terminated)
        self.session.registerProducer(self._wire)
        f.connections.add(self)
        timeout = f.options.authentication_timeout
        self._timer = f.reactor.callLater(timeout, self._login_too_long, timeout)
        super().connectionMade()

    def identified(self) -> None:
        """The client proved who it is: it leaves the pre-auth count."""
        self.login_refusal = None
        if self._admission is not None:
            self._admission.authenticated()

    def _login_too_long(self, timeout: float) -> None:
        self._timer = None
        self.fatal(
            f"gatehouse: authentication timeout: not logged in within {timeout:g} s"
        )

    def connect_upstream(
        self, target: TargetConfig, account: str
    ) -> Deferred[UpstreamConnection]:
        """Log in to C{target} as C{account} (the session records how)."""
        options = _target_options(target)
        f = self.factory
        session = self.session
        session.upstream_login(account, "ssh")
        started = f.reactor.seconds()
        certificate = None
        try:
            pinned = options.pinned(target.name)
            if options.certificate_authority is not None:
                key, certificate = self._certificate_login(options, account)
            else:
                key = load_client_key(options.key)
        except Exception as e:
            return defer.fail(
                UpstreamFailed(f"gateway key or pins unusable: {e}", "config")
            )

        def up(upstream: UpstreamConnection) -> UpstreamConnection:
            if self._ended:
                upstream.disconnect()
                raise error.IgnoreAuthentication()
            self.upstream = upstream
            upstream.lost.append(self._upstream_lost)
            session.upstream_connected(f.reactor.seconds() - started)
            session.event(
                "upstream-connected",
                target=target.name,
                account=account,
                host_key=upstream.transport.host_key_fingerprint,  # type: ignore[union-attr]
            )
            if self._timer is not None and self._timer.active():
                self._timer.cancel()
            self._timer = None
            return upstream

        def failed(failure: Failure) -> Failure:
            why = failure.value
            if isinstance(why, UpstreamFailed):
                session.upstream_failed(str(why))
                session.event("upstream-failed", kind=why.kind, reason=str(why))
            return failure

        return connect(
            f.reactor,
            options.host,
            options.port,
            account,
            key,
            pinned,
            f.options.connect_timeout,
            certificate,
        ).addCallbacks(up, failed)

    def _certificate_login(
        self, options: SSHTargetOptions, account: str
    ) -> tuple[keys.Key, bytes]:
        """A fresh key and its certificate for C{account}, naming the session."""
        assert options.certificate_authority is not None
        # Read again only when the file changes (not per session).
        ca: UserCA = files.load(options.certificate_authority, UserCA.from_bytes)
        identity = self.session.identity
        private, cert = mint_login(
            ca,
            account,
            f"gatehouse session {self.session.id}"
            + (f" for {identity.subject}" if identity is not None else ""),
            options.certificate_lifetime,
            self.factory.reactor.seconds(),
        )
        blob = base64.b64decode(cert.public_bytes().split()[1])
        self.session.event(
            "upstream-certificate",
            serial=str(cert.serial),
            principal=account,
            valid_before=cert.valid_before,
        )
        return keys.Key(private), blob

    # -- bad input and endings ---------------------------------------------

    def dataReceived(self, data: bytes) -> None:
        if not self.gotVersion and not self._ended:
            # RFC 4253 4.2: a client sends its version line first.
            line, nl, _ = (self.buf + data).partition(b"\n")
            if (nl or len(line) >= 4) and not line.startswith(b"SSH-"[: len(line)]):
                self._wire.write(b"Invalid SSH identification string.\r\n")
                self._end("garbage instead of an SSH version line")
                self._wire.loseConnection()
                return
        super().dataReceived(data)

    def sendDisconnect(self, reason: int, desc: bytes) -> None:
        self._end(f"disconnected: {desc.decode('utf-8', 'replace')}")
        super().sendDisconnect(reason, desc)

    def receiveError(self, reasonCode: int, description: bytes) -> None:
        self._end(
            f"client disconnected: {description.decode('utf-8', 'replace')}"
            if description
            else "client disconnected"
        )

    def fatal(self, message: str) -> None:
        """End the connection with C{message} for the client (it prints it)."""
        if self._ended:
            return
        self.sendDisconnect(
            transport.DISCONNECT_SERVICE_NOT_AVAILABLE, message.encode()
        )

    def _end(self, reason: str) -> None:
        if self.close_reason is None:
            self.close_reason = reason
        if not self._ended:
            self._ended = True
            if getattr(self, "session", None) is not None:
                self.session.event("ssh-disconnect", reason=reason)

    def _recording_failed(self, reason: str) -> None:
        self._end(f"recording failed: {reason}")
        if self.transport is not None:
            self._wire.abortConnection()

    def _terminated(self, reason: str) -> None:
        self.sendDisconnect(
            transport.DISCONNECT_BY_APPLICATION,
            f"gatehouse: {self.session.end_message or reason}".encode(),
        )

    def _upstream_lost(self) -> None:
        if not self._ended:
            self.fatal("gatehouse: the target closed its connection")

    def connectionLost(self, reason: Failure | None = None) -> None:
        super().connectionLost(reason)
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        if self._admission is not None:
            self._admission.release()
        self.factory.connections.discard(self)
        if self.upstream is not None:
            self.upstream.lost.clear()
            self.upstream.disconnect()
        session = getattr(self, "session", None)
        if session is not None:
            why = (
                self.close_reason
                or self.login_refusal
                or "client closed the connection"
            )
            session.close(why).addErrback(lambda failure: None)


class SSHGatewayFactory(SSHFactory):
    """
    Builds a L{GatewayTransport} per client of one SSH listener.

    @ivar authorities: OpenSSH public key lines of the user CAs whose
        certificates the listener accepts (empty: passwords only).
    """

    protocol = GatewayTransport
    noisy = False
    _log = quiet_logger()

    def __init__(
        self,
        listener_name: str,
        options: SSHListenerOptions,
        host_keys: Mapping[bytes, keys.Key],
        targets: Mapping[str, TargetConfig],
        session_factory: Any,
        reactor: Any,
        authorities: tuple[bytes, ...] = (),
    ) -> None:
        self.listener_name = listener_name
        self.options = options
        self.privateKeys = dict(host_keys)
        self.publicKeys = {name: key.public() for name, key in host_keys.items()}
        self.targets = targets
        self.session_factory = session_factory
        self.reactor = reactor
        self.authorities = authorities
        self.limits = ConnectionLimits(options.caps)
        self.connections: set[GatewayTransport] = set()
        self.draining = False

    def getPrimes(self) -> None:
        return None

    def buildProtocol(self, addr: Any) -> GatewayTransport:
        t = super().buildProtocol(addr)
        harden(t)
        assert isinstance(t, GatewayTransport)
        return t

    def getService(self, transport: Any, service: bytes) -> Any:
        if service == b"ssh-userauth" and not transport.isEncrypted("both"):
            return None
        if service == b"ssh-userauth":
            return GatewayUserAuth
        if service == b"ssh-connection" and transport.upstream is not None:
            from gatehouse.protocols.ssh.bridge import GatewayConnection

            return lambda: GatewayConnection(
                transport.session, transport.upstream, self.options
            )
        return None
