"""
The gateway as an SSH client: one connection to a target per client
connection, logged in with a key only the gateway holds, after the
target's host key matched the one pinned for it.

L{connect} fires with the target's L{UpstreamConnection} (Conch's
connection service, ready for channels), or fails with L{UpstreamFailed}
whose message says what went wrong in words a client may read: the target
is down, presented another host key (named by fingerprint), refused the
gateway's key, or took too long.
"""

from __future__ import annotations

from typing import Any

from twisted.conch.ssh import keys
from twisted.conch.ssh.common import NS, getNS
from twisted.conch.ssh.connection import SSHConnection
from twisted.conch.ssh.transport import SSHClientTransport
from twisted.conch.ssh.userauth import MSG_USERAUTH_REQUEST, SSHUserAuthClient
from twisted.internet import defer
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import HostnameEndpoint
from twisted.internet.error import ConnectError, DNSLookupError, TimeoutError
from twisted.internet.protocol import Factory
from twisted.python.failure import Failure

from gatehouse.files import files
from gatehouse.protocols.ssh.hostkeys import (
    HostKeyMismatch,
    PinnedHostKeys,
)
from gatehouse.protocols.ssh.hostkeys import (
    fingerprint as key_fingerprint,
)
from gatehouse.protocols.ssh.transport import harden, quiet_logger

__all__ = [
    "BridgedConnection",
    "UpstreamConnection",
    "UpstreamFailed",
    "connect",
    "load_client_key",
]


class UpstreamFailed(Exception):
    """
    The gateway could not log in to the target.

    @ivar kind: C{down}, C{host-key}, C{refused}, C{timeout} or C{lost}.
    """

    def __init__(self, message: str, kind: str) -> None:
        super().__init__(message)
        self.kind = kind


def _read_key(data: bytes, path: str) -> keys.Key:
    key: keys.Key = keys.Key.fromString(data)
    if key.isPublic():
        raise ValueError(f"{path} is a public key; give the private key")
    if key.type() == "RSA":
        # Conch signs public key authentication with RSA as ssh-rsa
        # (SHA-1), which OpenSSH 8.8 and later refuse.
        raise ValueError(
            f"{path} is an RSA key: the gateway logs in to targets with an "
            "Ed25519 (or ECDSA) key; make one with ssh-keygen -t ed25519"
        )
    if key.type() not in ("Ed25519", "EC"):
        raise ValueError(f"{path} is not a private key the gateway can use")
    return key


def load_client_key(path: str) -> keys.Key:
    """
    The gateway's private key for a target (read again when the file
    changes, so a rotated key is used by the next connection).
    """
    key: keys.Key = files.load(path, _read_key)
    return key


class BridgedConnection(SSHConnection):
    """
    A connection whose channels are bridged to another connection's: a
    channel whose other side is full (or whose gate holds too much) gives
    its sender no more window until that clears (see L{bridge._Twin}).
    """

    def adjustWindow(self, channel: Any, bytesToAdd: int) -> None:
        if getattr(channel, "withheld", None):
            return
        super().adjustWindow(channel, bytesToAdd)


class UpstreamConnection(BridgedConnection):
    """Conch's connection service to the target; tells L{connect} it is up."""

    _log = quiet_logger()

    def __init__(self, ready: Deferred[UpstreamConnection]) -> None:
        super().__init__()
        self._ready: Deferred[UpstreamConnection] | None = ready
        self.lost: list[Any] = []

    def serviceStarted(self) -> None:
        super().serviceStarted()
        ready, self._ready = self._ready, None
        if ready is not None:
            ready.callback(self)

    def serviceStopped(self) -> None:
        super().serviceStopped()
        for callback in self.lost:
            callback()
        self.lost = []

    def disconnect(self) -> None:
        """Close the target connection (its channels close with it)."""
        if self.transport is not None:
            self.transport.loseConnection()


class _UserAuth(SSHUserAuthClient):
    """Public key authentication with the gateway's key only."""

    preferredOrder = [b"publickey"]
    _log = quiet_logger()

    def __init__(
        self,
        user: bytes,
        key: keys.Key,
        next_service: SSHConnection,
        certificate: bytes | None = None,
    ):
        super().__init__(user, next_service)
        self._key: keys.Key | None = key
        #: an OpenSSH certificate (wire form) for the key, offered instead
        #: of the plain key
        self._certificate = certificate

    def getPublicKey(self) -> keys.Key | None:
        # Offered once: a refusal then ends authentication.
        key, self._key = self._key, None
        if key is None:
            return None
        self._signing = key
        public: keys.Key = key.public()
        return public

    def auth_publickey(self) -> Deferred[bool]:
        if self._certificate is None:
            return super().auth_publickey()
        key, self._key = self._key, None
        if key is None:
            return defer.succeed(False)
        self._signing = key
        self.askForAuth(
            b"publickey",
            b"\x00" + NS(_certificate_type(self._certificate)) + NS(self._certificate),
        )
        return defer.succeed(True)

    def ssh_USERAUTH_PK_OK_publickey(self, packet: bytes) -> None:
        if self._certificate is None:
            return super().ssh_USERAUTH_PK_OK_publickey(packet)  # type: ignore[no-any-return]
        blob = self._certificate
        kind = _certificate_type(blob)
        assert self.transport is not None and self.transport.sessionID is not None
        signed = (
            NS(self.transport.sessionID)
            + bytes((MSG_USERAUTH_REQUEST,))
            + NS(self.user)
            + NS(self.instance.name)
            + NS(b"publickey")
            + b"\x01"
            + NS(kind)
            + NS(blob)
        )
        signature = self._signing.sign(signed)
        self.askForAuth(b"publickey", b"\x01" + NS(kind) + NS(blob) + NS(signature))
        return None

    def getPrivateKey(self) -> Deferred[keys.Key]:
        return defer.succeed(self._signing)

    def getPassword(self, prompt: bytes | None = None) -> None:
        return None

    def ssh_USERAUTH_FAILURE(self, packet: bytes) -> Any:
        if self.lastAuth == b"publickey":
            self.transport.refused = True  # type: ignore[union-attr]
        return super().ssh_USERAUTH_FAILURE(packet)


def _certificate_type(blob: bytes) -> bytes:
    """The key type named at the start of a certificate's wire form."""
    return getNS(blob)[0]


class _Transport(SSHClientTransport):
    """Checks the target's host key against the pins, then logs in."""

    factory: _UpstreamFactory
    _log = quiet_logger()

    def __init__(self) -> None:
        self.refused = False
        self.mismatch: HostKeyMismatch | None = None
        self.disconnected: bytes | None = None
        #: the SHA256 fingerprint of the host key the target showed
        self.host_key_fingerprint: str | None = None

    def verifyHostKey(self, hostKey: bytes, fingerprint: bytes) -> Deferred[bool]:
        f = self.factory
        try:
            key = f.pinned.verify(f.host, f.port, hostKey)
            self.host_key_fingerprint = key_fingerprint(key)
        except HostKeyMismatch as e:
            self.mismatch = e
            return defer.fail(e)
        return defer.succeed(True)

    def connectionSecure(self) -> None:
        f = self.factory
        self.requestService(
            _UserAuth(
                f.user.encode(), f.key, UpstreamConnection(f.ready), f.certificate
            )
        )

    def receiveError(self, reasonCode: int, description: bytes) -> None:
        self.disconnected = description
        super().receiveError(reasonCode, description)

    def connectionLost(self, reason: Failure | None = None) -> None:
        super().connectionLost(reason)
        f = self.factory
        if f.ready.called:
            return
        if self.mismatch is not None:
            failure = UpstreamFailed(str(self.mismatch), "host-key")
        elif self.refused:
            failure = UpstreamFailed(
                f"target refused the gateway's key for account {f.user!r}", "refused"
            )
        else:
            said = (self.disconnected or b"").decode("utf-8", "replace")
            failure = UpstreamFailed(
                "target closed the connection during login"
                + (f": {said}" if said else ""),
                "lost",
            )
        f.ready.errback(failure)


class _UpstreamFactory(Factory):
    protocol = _Transport  # type: ignore[assignment]
    noisy = False

    def __init__(
        self,
        host: str,
        port: int,
        user: str,
        key: keys.Key,
        pinned: PinnedHostKeys,
        certificate: bytes | None = None,
    ) -> None:
        self.host, self.port, self.user, self.key = host, port, user, key
        self.pinned = pinned
        self.certificate = certificate
        self.ready: Deferred[UpstreamConnection] = Deferred()

    def buildProtocol(self, addr: object) -> _Transport:  # type: ignore[override]
        transport = _Transport()
        transport.factory = self
        harden(transport, self.pinned.algorithms())
        return transport


def connect(
    reactor: Any,
    host: str,
    port: int,
    user: str,
    key: keys.Key,
    pinned: PinnedHostKeys,
    timeout: float,
    certificate: bytes | None = None,
) -> Deferred[UpstreamConnection]:
    """
    Log in to the SSH server at C{host}:C{port} as C{user} with C{key},
    if it presents a host key in C{pinned}; give up after C{timeout}
    seconds.  With C{certificate} (an OpenSSH certificate for C{key}, in
    wire form), the certificate is offered instead of the plain key.

    @return: Deferred firing with the L{UpstreamConnection}, or failing
        with L{UpstreamFailed}.
    """
    factory = _UpstreamFactory(host, port, user, key, pinned, certificate)
    endpoint = HostnameEndpoint(reactor, host, port, timeout=timeout)
    connected = endpoint.connect(factory)
    state: dict[str, Any] = {}

    def up(transport: _Transport) -> None:
        state["transport"] = transport

    def down(failure: Failure) -> None:
        if factory.ready.called:
            return
        why = failure.getErrorMessage()
        if failure.check(DNSLookupError):
            why = f"cannot resolve {host}"
        elif failure.check(ConnectError, TimeoutError):
            why = f"cannot connect to {host}:{port}: {why}"
        factory.ready.errback(UpstreamFailed(f"target is down ({why})", "down"))

    connected.addCallbacks(up, down)

    def too_long() -> None:
        if factory.ready.called:
            return
        transport = state.get("transport")
        if transport is not None and transport.transport is not None:
            transport.transport.abortConnection()
        else:
            connected.cancel()
        if not factory.ready.called:
            factory.ready.errback(
                UpstreamFailed(
                    f"target {host}:{port} did not complete the login in {timeout:g} s",
                    "timeout",
                )
            )

    timer = reactor.callLater(timeout, too_long)

    def stop_timer(result: object) -> object:
        if timer.active():
            timer.cancel()
        return result

    return factory.ready.addBoth(stop_timer)
