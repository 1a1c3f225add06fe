"""
The gateway's side of the connection to a PostgreSQL target.

L{connect_upstream} opens the connection (TCP or Unix socket), negotiates
TLS when the target asks for it (verifying the server's certificate with
service-identity against the configured CA), sends the startup packet, and
authenticates with SCRAM-SHA-256, MD5, cleartext or trust, whichever the
server asks for, with credentials only the gateway holds.  When the server
says ReadyForQuery the Deferred fires with an L{UpstreamReady}; from then on
the protocol only relays bytes.

Nothing of the password exchange is recorded.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable

import attrs
import scramp
from twisted.internet import ssl
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import (
    TCP4ClientEndpoint,
    TCP6ClientEndpoint,
    UNIXClientEndpoint,
    connectProtocol,
)
from twisted.internet.error import ConnectError, TimeoutError
from twisted.internet.protocol import Protocol
from twisted.python.failure import Failure

from gatehouse.protocols.postgres import codec
from gatehouse.protocols.postgres.config import PostgresTargetOptions

_R = codec.BackendType.AUTHENTICATION
_ERROR = codec.BackendType.ERROR_RESPONSE


class UpstreamError(Exception):
    """
    The gateway could not open a usable session on the target.

    @ivar reason: what happened, for operators and the recording.
    @ivar sqlstate: the SQLSTATE the client is told.
    """

    def __init__(self, reason: str, sqlstate: str = "08006"):
        super().__init__(reason)
        self.reason = reason
        self.sqlstate = sqlstate


@attrs.frozen
class UpstreamReady:
    """A target session that has authenticated and is ready for queries."""

    protocol: UpstreamProtocol
    parameters: tuple[tuple[str, str], ...]
    backend_pid: int
    backend_secret: bytes
    auth_method: str
    tls: bool
    leftover: bytes


def _md5_password(user: str, password: str, salt: bytes) -> bytes:
    inner = hashlib.md5((password + user).encode()).hexdigest().encode()
    return b"md5" + hashlib.md5(inner + salt).hexdigest().encode()


class UpstreamProtocol(Protocol):
    """
    One connection to a target, from startup to the end of the session.

    Until L{ready} fires it runs the startup conversation itself; then every
    byte from the server goes to C{on_data}, and the end of the connection
    to C{on_lost}.
    """

    def __init__(
        self,
        options: PostgresTargetOptions,
        startup: codec.StartupMessage,
        tls_options: object | None,
    ):
        self._options = options
        self._startup = startup
        self._tls_options = tls_options
        self.ready: Deferred = Deferred()
        self.on_data: Callable[[bytes], object] | None = None
        self.on_lost: Callable[[Failure], object] | None = None
        self._reader = codec.FrameReader.backend()
        self._awaiting_tls_answer = False
        self._tls = False
        self._scram: scramp.ScramClient | None = None
        self._scram_verified = False
        self._auth_method = "trust"
        self._parameters: list[tuple[str, str]] = []
        self._key: tuple[int, bytes] | None = None
        self._done = False

    # -- startup -----------------------------------------------------------

    def connectionMade(self) -> None:
        if self._tls_options is not None:
            self._awaiting_tls_answer = True
            self.transport.write(codec.SSLRequest().encode())
        else:
            self.transport.write(self._startup.encode())

    def dataReceived(self, data: bytes) -> None:
        if self._done:
            self.on_data(data)
            return
        try:
            if self._awaiting_tls_answer:
                self._tls_answer(data)
                return
            for t, body in self._reader.feed_messages(data):
                self._message(t, body)
                if self._done:
                    break
        except UpstreamError as e:
            self._fail(e)
        except codec.ProtocolViolation as e:
            self._fail(UpstreamError(f"target broke the protocol: {e}"))

    def _tls_answer(self, data: bytes) -> None:
        answer = codec.decode_encryption_response(data)
        if not answer.accepted:
            raise UpstreamError("target refused TLS, which its configuration requires")
        if answer.trailing:
            # Bytes after 'S' arrived in clear: a MITM injection (CVE-2021-23222).
            raise UpstreamError("target sent unencrypted bytes after accepting TLS")
        self._awaiting_tls_answer = False
        self._tls = True
        self.transport.startTLS(self._tls_options)
        self.transport.write(self._startup.encode())

    def _message(self, t: int, body: bytes) -> None:
        if t == _R:
            self._authentication(codec.decode_backend(t, body))
        elif t == _ERROR:
            error = codec.ErrorResponse.decode(body)
            sqlstate = error.sqlstate or ""
            raise UpstreamError(
                f"target refused the session: {sqlstate} {error.message or ''}".strip(),
                "08004" if sqlstate.startswith("28") else "08006",
            )
        elif t == codec.BackendType.PARAMETER_STATUS:
            status = codec.ParameterStatus.decode(body)
            self._parameters.append((status.name, status.value))
        elif t == codec.BackendType.BACKEND_KEY_DATA:
            key = codec.BackendKeyData.decode(body)
            self._key = (key.pid, key.secret)
        elif t == codec.BackendType.NEGOTIATE_PROTOCOL_VERSION:
            pass  # we asked for 3.0 with no options: nothing to reconcile
        elif t == codec.BackendType.NOTICE_RESPONSE:
            pass
        elif t == codec.BackendType.READY_FOR_QUERY:
            self._ready()
        else:
            raise UpstreamError(f"unexpected message {bytes([t])!r} during startup")

    def _authentication(self, message: object) -> None:
        options = self._options
        if isinstance(message, codec.AuthenticationOk):
            if self._scram is not None and not self._scram_verified:
                raise UpstreamError("target skipped SCRAM server verification")
            return
        password = options.password()
        if isinstance(message, codec.AuthenticationCleartextPassword):
            self._need(password)
            self._auth_method = "password"
            self._send(codec.PasswordMessage(password).encode())
        elif isinstance(message, codec.AuthenticationMD5Password):
            self._need(password)
            self._auth_method = "md5"
            self._send(
                codec.PasswordMessage(
                    _md5_password(options.user, password, message.salt).decode()
                ).encode()
            )
        elif isinstance(message, codec.AuthenticationSASL):
            self._need(password)
            if "SCRAM-SHA-256" not in message.mechanisms:
                raise UpstreamError(
                    f"target offers no supported SASL mechanism: {message.mechanisms}"
                )
            self._auth_method = "scram-sha-256"
            self._scram = scramp.ScramClient(["SCRAM-SHA-256"], options.user, password)
            first = self._scram.get_client_first().encode()
            self._send(codec.SASLInitialResponse("SCRAM-SHA-256", first).encode())
        elif isinstance(message, codec.AuthenticationSASLContinue):
            if self._scram is None:
                raise UpstreamError("target sent SASLContinue out of turn")
            try:
                self._scram.set_server_first(message.data.decode())
                final = self._scram.get_client_final().encode()
            except scramp.ScramException as e:
                raise UpstreamError(f"SCRAM exchange failed: {e}")
            self._send(codec.SASLResponse(final).encode())
        elif isinstance(message, codec.AuthenticationSASLFinal):
            if self._scram is None:
                raise UpstreamError("target sent SASLFinal out of turn")
            try:
                self._scram.set_server_final(message.data.decode())
            except scramp.ScramException as e:
                raise UpstreamError(f"target failed SCRAM server verification: {e}")
            self._scram_verified = True
        else:
            raise UpstreamError(
                f"target asks for an unsupported authentication method "
                f"({type(message).__name__})"
            )

    def _need(self, password: str | None) -> None:
        if password is None:
            raise UpstreamError(
                "target asks for a password but none is configured for it", "08004"
            )

    def _send(self, data: bytes) -> None:
        self.transport.write(data)

    def _ready(self) -> None:
        self._done = True
        pid, secret = self._key or (0, b"")
        leftover = b""
        if self._reader.buffered:
            leftover = self._reader.take_to(self._reader.framed)
        d, self.ready = self.ready, None
        d.callback(
            UpstreamReady(
                self,
                tuple(self._parameters),
                pid,
                secret,
                self._auth_method,
                self._tls,
                leftover,
            )
        )

    def _fail(self, error: UpstreamError) -> None:
        self._done = True
        d, self.ready = self.ready, None
        if self.transport is not None:
            self.transport.abortConnection()
        if d is not None:
            d.errback(error)

    def connectionLost(self, reason: Failure) -> None:
        if self.ready is not None:
            d, self.ready = self.ready, None
            d.errback(
                UpstreamError(
                    f"target closed the connection during startup: "
                    f"{reason.getErrorMessage()}"
                )
            )
        elif self.on_lost is not None:
            self.on_lost(reason)


def _tls_options(options: PostgresTargetOptions) -> object | None:
    tls = options.tls
    if tls.mode == "disable":
        return None
    if tls.mode == "require":
        return ssl.CertificateOptions(method=None, verify=False)
    with open(tls.ca_file, "rb") as f:
        roots = ssl.Certificate.loadPEM(f.read())
    return ssl.optionsForClientTLS(tls.server_name or options.host, trustRoot=roots)


def _endpoint(
    reactor: object, options: PostgresTargetOptions, timeout: float
) -> object:
    if options.socket_dir is not None:
        path = f"{options.socket_dir}/.s.PGSQL.{options.port}"
        return UNIXClientEndpoint(reactor, path, timeout=timeout)
    if ":" in (options.host or ""):
        return TCP6ClientEndpoint(reactor, options.host, options.port, timeout=timeout)
    return TCP4ClientEndpoint(reactor, options.host, options.port, timeout=timeout)


def connect_upstream(
    reactor: object,
    options: PostgresTargetOptions,
    target_name: str,
    client_parameters: tuple[tuple[str, str], ...],
    timeout: float,
) -> Deferred:
    """
    Open an authenticated session on a target.

    @param client_parameters: the client's startup parameters other than
        user and database, passed through (application_name, options,
        client_encoding, ...).
    @return: Deferred firing with L{UpstreamReady}, or failing with
        L{UpstreamError}.
    """
    if options.credentials:
        # Not chosen for a session (login_for empties credentials): the
        # gateway's own connection (the catalog) uses the default login.
        options = options.default_login()
    parameters = (
        ("user", options.user),
        ("database", options.database or target_name),
        *client_parameters,
    )
    startup = codec.StartupMessage(parameters)
    try:
        tls_options = _tls_options(options)
    except OSError as e:
        return _failed(UpstreamError(f"cannot read the target's CA file: {e}"))
    protocol = UpstreamProtocol(options, startup, tls_options)
    connecting = connectProtocol(_endpoint(reactor, options, timeout), protocol)

    def not_connected(failure: Failure) -> Failure:
        failure.trap(ConnectError, TimeoutError, OSError)
        raise UpstreamError(f"cannot connect to target: {failure.getErrorMessage()}")

    timer = reactor.callLater(
        timeout,
        lambda: (
            protocol._fail(
                UpstreamError(f"target did not complete startup within {timeout:g} s")
            )
            if protocol.ready is not None
            else None
        ),
    )

    def stop_timer(result: object) -> object:
        if timer.active():
            timer.cancel()
        return result

    connecting.addErrback(not_connected)
    connecting.addCallback(lambda _: protocol.ready)
    return connecting.addBoth(stop_timer)


def _failed(error: Exception) -> Deferred:
    d = Deferred()
    d.errback(error)
    return d


def send_cancel(
    reactor: object, options: PostgresTargetOptions, pid: int, secret: bytes
) -> Deferred:
    """
    Ask a target to cancel the query running in backend C{pid}, on a new
    connection, as libpq does.
    """

    class _Cancel(Protocol):
        def connectionMade(self) -> None:
            self.transport.write(codec.CancelRequest(pid, secret).encode())
            self.transport.loseConnection()

    d = connectProtocol(_endpoint(reactor, options, 10.0), _Cancel())
    return d
