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
from typing import Any, cast
from typing import Protocol as TypingProtocol

import attrs
import scramp
from twisted.internet import ssl
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import (
    TCP4ClientEndpoint,
    TCP6ClientEndpoint,
    UNIXClientEndpoint,
)
from twisted.internet.error import ConnectError, TimeoutError
from twisted.internet.interfaces import (
    IDelayedCall,
    IReactorTime,
    IStreamClientEndpoint,
)
from twisted.internet.protocol import Protocol, connectionDone
from twisted.python.failure import Failure

from gatehouse.files import files
from gatehouse.logs import connect_quietly
from gatehouse.protocols.postgres import codec
from gatehouse.protocols.postgres.config import PostgresTargetOptions
from gatehouse.tls import trust_root

_R = codec.BackendType.AUTHENTICATION
_ERROR = codec.BackendType.ERROR_RESPONSE

#: Settings a client may give at startup (in its StartupMessage or as
#: C{-c name=value} in C{options}), by PostgreSQL's case-insensitive name:
#: how results look and how long things may take.  Nothing that changes
#: who the session is (role, session_authorization), how SQL text is read
#: (standard_conforming_strings, except on) or where code comes from
#: (search_path is allowed: it is the client's own schema choice, and the
#: target role's privileges bound it).
STARTUP_SETTINGS = frozenset(
    {
        "application_name",
        "client_encoding",
        "datestyle",
        "timezone",
        "intervalstyle",
        "extra_float_digits",
        "search_path",
        "bytea_output",
        "lc_monetary",
        "lc_numeric",
        "lc_time",
        "statement_timeout",
        "lock_timeout",
        "idle_in_transaction_session_timeout",
        "idle_session_timeout",
        "default_transaction_isolation",
        "default_transaction_read_only",
        "default_transaction_deferrable",
        "standard_conforming_strings",
        "geqo",
        "jit",
        "work_mem",
        "enable_seqscan",
        "plan_cache_mode",
    }
)
#: Startup parameters that are not settings, handled by the gateway.
_NOT_FORWARDED = frozenset({"user", "database", "replication"})

#: Client encodings PostgreSQL accepts whose multibyte characters never
#: hold a byte below 0x80, by PostgreSQL's cleaned name (lower case, only
#: letters and digits; its aliases included), with the Python codec that
#: reads them as the server does.
SAFE_ENCODINGS = {
    "utf8": "utf-8",
    "unicode": "utf-8",
    # no conversion: the server checks the bytes against its own (ASCII
    # safe) encoding; undecodable bytes stay as surrogates
    "sqlascii": "utf-8",
    **{
        f"latin{i}": f"iso8859-{n}"
        for i, n in zip(range(1, 11), (1, 2, 3, 4, 9, 10, 13, 14, 15, 16), strict=True)
    },
    **{
        f"iso8859{n}": f"iso8859-{n}"
        for n in (1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 13, 14, 15, 16)
    },
    "iso885951988": "iso8859-5",
    "iso885961987": "iso8859-6",
    "iso885971987": "iso8859-7",
    "iso885981988": "iso8859-8",
    **{
        f"win{n}": f"cp{n}"
        for n in (866, 874, 1250, 1251, 1252, 1253, 1254, 1255, 1256, 1257, 1258)
    },
    "win": "cp1251",
    "alt": "cp866",
    "koi8": "koi8-r",
    "koi8r": "koi8-r",
    "koi8u": "koi8-u",
    "eucjp": "euc_jp",
    "euckr": "euc_kr",
    "euccn": "gb2312",
    "eucjis2004": "euc_jis_2004",
    "tcvn": "cp1258",
    "tcvn5712": "cp1258",
    "vscii": "cp1258",
    "abc": "cp1258",
}
#: Client encodings whose multibyte characters can hold an ASCII byte (a
#: backslash, a quote, a digit): the gateway cannot read SQL in them as
#: PostgreSQL does, so it refuses them at startup and, set later, refuses
#: every statement with a byte >= 0x80 while they are in effect.
UNSAFE_ENCODINGS = frozenset(
    {
        "sjis",
        "shiftjis",
        "mskanji",
        "win932",
        "shiftjis2004",
        "big5",
        "win950",
        "gbk",
        "win936",
        "cp936",
        "uhc",
        "win949",
        "gb18030",
        "johab",
    }
)


def _clean(name: str) -> str:
    """An encoding or setting name as PostgreSQL compares it."""
    return "".join(c for c in name.lower() if c.isalnum())


def client_encoding(name: str) -> str | None:
    """
    The Python codec that reads text in PostgreSQL client encoding
    C{name} exactly as the server does, or None if the gateway cannot
    (an encoding with ASCII trail bytes, or one Python has no codec for:
    EUC_TW, MULE_INTERNAL).
    """
    return SAFE_ENCODINGS.get(_clean(name))


class StartupRefused(Exception):
    """
    A client's startup parameters ask for something the gateway does not
    pass to a target.
    """

    sqlstate = "0A000"

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint


def _check_setting(name: str, value: str, where: str) -> None:
    key = name.lower()
    if key not in STARTUP_SETTINGS:
        raise StartupRefused(
            f"gatehouse does not pass the startup setting {name!r} {where}to "
            "the target",
            hint="allowed: " + ", ".join(sorted(STARTUP_SETTINGS)),
        )
    if key == "standard_conforming_strings" and value.strip().lower() != "on":
        raise StartupRefused(
            "gatehouse requires standard_conforming_strings = on",
            hint="leave standard_conforming_strings at its default",
        )
    if key == "client_encoding" and client_encoding(value) is None:
        known = _clean(value) in UNSAFE_ENCODINGS
        raise StartupRefused(
            f"gatehouse does not accept client_encoding {value!r}"
            + (
                ": its multibyte characters can hold ASCII bytes, so the "
                "gateway could not read SQL as PostgreSQL does"
                if known
                else ""
            ),
            hint="use UTF8 (or a single-byte or EUC encoding)",
        )


def _options_settings(options: str) -> list[tuple[str, str]]:
    """
    The C{-c name=value} (or C{--name=value}) settings of a startup
    C{options} string, split as PostgreSQL splits it (whitespace, with a
    backslash escaping the next character).  Anything else is refused.
    """
    words: list[str] = []
    word: list[str] = []
    escaped = False
    started = False
    for char in options:
        if escaped:
            word.append(char)
            escaped = False
        elif char == "\\":
            escaped = started = True
        elif char.isspace():
            if started:
                words.append("".join(word))
                word, started = [], False
        else:
            word.append(char)
            started = True
    if escaped:
        raise StartupRefused("startup options end in a lone backslash")
    if started:
        words.append("".join(word))
    settings = []
    i = 0
    while i < len(words):
        given = words[i]
        if given == "-c" and i + 1 < len(words):
            setting = words[i + 1]
            i += 2
        elif given.startswith("-c") and len(given) > 2:
            setting = given[2:]
            i += 1
        elif given.startswith("--") and "=" in given:
            setting = given[2:]
            i += 1
        else:
            raise StartupRefused(
                f"gatehouse passes only -c name=value settings in startup "
                f"options, not {given!r}"
            )
        name, sep, value = setting.partition("=")
        if not sep:
            raise StartupRefused(f"startup option {setting!r} has no value")
        settings.append((name.replace("-", "_"), value))
    return settings


def upstream_parameters(
    parameters: tuple[tuple[str, str], ...],
) -> tuple[tuple[str, str], ...]:
    """
    The client's startup parameters that may go to the target (everything
    but user, database and replication, which the gateway handles), each
    checked against L{STARTUP_SETTINGS}.

    @raise StartupRefused: a parameter (or an C{options} setting) is not
        allowed, or asks for a client encoding the gateway cannot read.
    """
    passed = []
    for name, value in parameters:
        if name in _NOT_FORWARDED or name.startswith("_pq_."):
            continue
        if name == "options":
            for setting, setting_value in _options_settings(value):
                _check_setting(setting, setting_value, "in options ")
        else:
            _check_setting(name, value, "")
        passed.append((name, value))
    return tuple(passed)


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


class _Connection(TypingProtocol):
    """
    What the endpoints of L{connect_upstream} connect an L{UpstreamProtocol}
    to: a TCP or UNIX transport, which can start TLS and is a producer and
    a consumer.
    """

    def write(self, data: bytes) -> None: ...
    def loseConnection(self) -> None: ...
    def abortConnection(self) -> None: ...
    def startTLS(self, contextFactory: Any) -> None: ...
    def unregisterProducer(self) -> None: ...
    def resumeProducing(self) -> None: ...


def _md5_password(user: str, password: str, salt: bytes) -> bytes:
    inner = hashlib.md5((password + user).encode()).hexdigest().encode()
    return b"md5" + hashlib.md5(inner + salt).hexdigest().encode()


class UpstreamProtocol(Protocol):
    """
    One connection to a target, from startup to the end of the session.

    Until L{ready} fires it runs the startup conversation itself; then every
    byte from the server goes to C{on_data}, and the end of the connection
    to C{on_lost}, until its owner ends it with L{terminate}.  Cancelling
    L{ready} aborts the connection.
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
        self.ready: Deferred[UpstreamReady] | None = Deferred(self._cancel_startup)
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
        self._ending = False
        self._closer: IDelayedCall | None = None

    def _connection(self) -> _Connection:
        """The transport, as the endpoints of L{connect_upstream} make it."""
        if self.transport is None:
            raise RuntimeError("not connected")
        return cast(_Connection, self.transport)

    # -- startup -----------------------------------------------------------

    def connectionMade(self) -> None:
        if self._tls_options is not None:
            self._awaiting_tls_answer = True
            self._connection().write(codec.SSLRequest().encode())
        else:
            self._connection().write(self._startup.encode())

    def dataReceived(self, data: bytes) -> None:
        if self._done:
            if self.on_data is not None:
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
        if answer is None:
            return
        if not answer.accepted:
            raise UpstreamError("target refused TLS, which its configuration requires")
        if answer.trailing:
            # Bytes after 'S' arrived in clear: a MITM injection (CVE-2021-23222).
            raise UpstreamError("target sent unencrypted bytes after accepting TLS")
        self._awaiting_tls_answer = False
        self._tls = True
        self._connection().startTLS(self._tls_options)
        self._connection().write(self._startup.encode())

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
            password = self._need(password)
            self._auth_method = "password"
            self._send(codec.PasswordMessage(password).encode())
        elif isinstance(message, codec.AuthenticationMD5Password):
            password = self._need(password)
            self._auth_method = "md5"
            self._send(
                codec.PasswordMessage(
                    _md5_password(self._user(), password, message.salt).decode()
                ).encode()
            )
        elif isinstance(message, codec.AuthenticationSASL):
            password = self._need(password)
            if "SCRAM-SHA-256" not in message.mechanisms:
                raise UpstreamError(
                    f"target offers no supported SASL mechanism: {message.mechanisms}"
                )
            self._auth_method = "scram-sha-256"
            self._scram = scramp.ScramClient(["SCRAM-SHA-256"], self._user(), password)
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

    def _need(self, password: str | None) -> str:
        if password is None:
            raise UpstreamError(
                "target asks for a password but none is configured for it", "08004"
            )
        return password

    def _user(self) -> str:
        user = self._options.user
        if user is None:
            raise UpstreamError("no user to log in to the target as", "08004")
        return user

    def _send(self, data: bytes) -> None:
        self._connection().write(data)

    def _ready(self) -> None:
        self._done = True
        pid, secret = self._key or (0, b"")
        leftover = b""
        if self._reader.buffered:
            leftover = self._reader.take_to(self._reader.framed)
        d, self.ready = self.ready, None
        if d is None:
            return
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
            self._connection().abortConnection()
        if d is not None:
            d.errback(error)

    def _cancel_startup(self, ready: Deferred[UpstreamReady]) -> None:
        """
        The owner gave up on this session before it was ready (its client
        left): abort the connection, whatever phase it is in (a TLS close
        cannot complete before the handshake has).
        """
        self._done = True
        self.ready = None
        if self.transport is not None:
            self._connection().abortConnection()

    def terminate(
        self,
        reactor: IReactorTime,
        grace: float,
        *,
        said: bool = False,
        copy_in: bool = False,
    ) -> None:
        """
        End the session on the target now, and close the connection within
        C{grace} seconds whatever state it is in; C{on_data} and C{on_lost}
        are not called any more.

        The target is told the protocol's way (CopyFail first if it waits
        for COPY data, then Terminate; nothing if the client's own
        Terminate already went, C{said}), then the connection is closed.
        Twisted closes a connection only once no producer is registered on
        it: a TLS transport sends its close_notify only then
        (C{TLSMemoryBIOProtocol.loseConnection}), a plain one whose
        producer is paused resumes the producer instead of closing
        (C{FileDescriptor.doWrite}), so the producer is unregistered.
        Reading resumes, so the target's own close is seen.  A target that does
        not close by then (it is sending a long result and does not read,
        or never answers the TLS close) is cut off.
        """
        self.on_data = None
        self.on_lost = None
        if self.transport is None or self._ending:
            return
        transport = self._connection()
        self._ending = self._done = True
        if not said:
            goodbye = codec.Terminate().encode()
            if copy_in:
                goodbye = codec.CopyFail("the client left").encode() + goodbye
            transport.write(goodbye)
        # loseConnection first: it flushes Twisted's TLS write aggregation,
        # which unregisterProducer (that starts the TLS close) does not.
        transport.loseConnection()
        transport.unregisterProducer()
        transport.resumeProducing()
        self._closer = reactor.callLater(grace, transport.abortConnection)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        closer, self._closer = self._closer, None
        if closer is not None and closer.active():
            closer.cancel()
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
    name = tls.server_name or options.host
    if tls.ca_file is None or name is None:
        # the configuration refuses verify-full without them
        raise UpstreamError("verify-full needs ca_file and a host or server_name")
    # Every certificate of the bundle is trusted; read again only when the
    # file changed.
    roots = files.load(tls.ca_file, trust_root)
    return ssl.optionsForClientTLS(name, trustRoot=roots)


def _endpoint(
    reactor: Any, options: PostgresTargetOptions, timeout: float
) -> IStreamClientEndpoint:
    if options.socket_dir is not None:
        path = f"{options.socket_dir}/.s.PGSQL.{options.port}"
        return UNIXClientEndpoint(reactor, path, timeout=timeout)
    host = options.host
    if host is None:
        # the configuration refuses a target without either
        raise UpstreamError("the target has neither host nor socket_dir")
    if ":" in host:
        return TCP6ClientEndpoint(reactor, host, options.port, timeout=timeout)
    return TCP4ClientEndpoint(reactor, host, options.port, timeout=timeout)


def connect_upstream(
    reactor: Any,
    options: PostgresTargetOptions,
    target_name: str,
    client_parameters: tuple[tuple[str, str], ...],
    timeout: float,
) -> Deferred[UpstreamReady]:
    """
    Open an authenticated session on a target.

    @param client_parameters: the client's startup parameters other than
        user and database, checked by L{upstream_parameters}
        (application_name, options, client_encoding, ...).
    @return: Deferred firing with L{UpstreamReady}, or failing with
        L{UpstreamError}.
    """
    if options.credentials:
        # Not chosen for a session (login_for empties credentials): the
        # gateway's own connection (the catalog) uses the default login.
        options = options.default_login()
    # standard_conforming_strings=on comes last, so that no role or
    # database default (ALTER ROLE ... SET) can turn it off: a setting from
    # the startup packet outranks those.
    user = options.user
    if user is None:
        return _failed(UpstreamError("no user to log in to the target as", "08004"))
    parameters = (
        ("user", user),
        ("database", options.database or target_name),
        *(
            (k, v)
            for k, v in client_parameters
            if k.lower() != "standard_conforming_strings"
        ),
        ("standard_conforming_strings", "on"),
    )
    startup = codec.StartupMessage(parameters)
    try:
        tls_options = _tls_options(options)
    except (OSError, ValueError) as e:
        return _failed(UpstreamError(f"cannot read the target's CA file: {e}"))
    protocol = UpstreamProtocol(options, startup, tls_options)
    connecting = connect_quietly(_endpoint(reactor, options, timeout), protocol)

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
    ready: Deferred[UpstreamReady] = connecting.addBoth(stop_timer)
    return ready


def _failed(error: Exception) -> Deferred[UpstreamReady]:
    d: Deferred[UpstreamReady] = Deferred()
    d.errback(error)
    return d


def send_cancel(
    reactor: Any, options: PostgresTargetOptions, pid: int, secret: bytes
) -> Deferred[Protocol]:
    """
    Ask a target to cancel the query running in backend C{pid}, on a new
    connection, as libpq does.
    """

    class _Cancel(Protocol):
        def connectionMade(self) -> None:
            if self.transport is not None:
                self.transport.write(codec.CancelRequest(pid, secret).encode())
                self.transport.loseConnection()

    d: Deferred[Protocol] = connect_quietly(
        _endpoint(reactor, options, 10.0), _Cancel()
    )
    return d
