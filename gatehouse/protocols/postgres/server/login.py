"""
The PostgreSQL server's phases before the relay: startup (SSLRequest,
TLS, StartupMessage), the password (the client's JWT) and connecting to
the target.  A mixin of L{PostgresServerProtocol}.
"""

from __future__ import annotations

from collections import deque

from twisted.python.failure import Failure

from gatehouse.gate import Gate
from gatehouse.identity import AuthenticationError
from gatehouse.net import PauseReasons, tune
from gatehouse.protocols.postgres import codec
from gatehouse.protocols.postgres.config import PostgresTargetOptions
from gatehouse.protocols.postgres.server._common import (
    _C2G,
    _LATE_PASSWORD,
    _PASSWORD,
    _PASSWORD_FRAMING,
    _REDACTED_PASSWORD,
    _TERMINATE,
    Phase,
    _preauth_sqlstate,
)
from gatehouse.protocols.postgres.upstream import (
    StartupRefused,
    UpstreamError,
    UpstreamReady,
    client_encoding,
    connect_upstream,
    upstream_parameters,
)
from gatehouse.recording.interfaces import SPACE_EXHAUSTED, RecordingUnavailable
from gatehouse.session import UNKNOWN_TARGET, TargetAccessDenied


class LoginPhases:
    """Phases 1 to 3 of a client connection (see L{Phase})."""

    # -- phase 1: startup ------------------------------------------------------

    def _startup_data(self, data: bytes) -> None:
        self._chunk = data
        self._chunk_recorded = False
        try:
            self._startup.receive_data(data)
            self._startup_events()
        except codec.ProtocolViolation as e:
            if self._open_session():
                self._record_chunk()
                self._fatal(
                    _preauth_sqlstate(e), e.message, f"protocol violation: {e.message}"
                )
        self._record_chunk()

    def _record_chunk(self, tail: int = 0) -> None:
        """
        Record the chunk being read, once, before the gateway answers it;
        its last C{tail} bytes belong to the next phase, which records them
        itself (a password must be redacted first).
        """
        if self._chunk_recorded:
            return
        self._chunk_recorded = True
        part = self._chunk[: len(self._chunk) - tail] if tail else self._chunk
        if not part:
            return
        if self.session is None:
            self._pending_records.append(part)
        else:
            self.session.data(_C2G, part)

    def _startup_events(self) -> None:
        while not self._closing:
            event = self._startup.next_event()
            if event is None:
                return
            if isinstance(event, codec.CancelRequest):
                self._cancel(event)
                return
            if not self._open_session():
                return
            if not isinstance(event, codec.StartupMessage):
                self._record_chunk()
            if isinstance(event, codec.SSLRequest):
                self._ssl_request()
            elif isinstance(event, codec.GSSENCRequest):
                self._write(self._startup.refuse_encryption())
            elif isinstance(event, codec.DirectTLS):
                self._start_direct_tls()
                return
            elif isinstance(event, codec.StartupMessage):
                self._startup_message_received(event)
                return

    def _refuse_unrecordable(self, problem: str) -> None:
        """No session can be recorded now (no signing key, a full disk)."""
        self._log.error("Refusing a PostgreSQL client: {why}", why=problem)
        full = problem.startswith(SPACE_EXHAUSTED)
        self._fatal(
            "57P03",
            "the gateway cannot record sessions now",
            f"recording unavailable: {problem}",
            detail="Its recording disk is full." if full else None,
        )

    def _ssl_request(self) -> None:
        if self._factory.tls is None:
            self._write(self._startup.refuse_encryption())
            return
        answer = self._startup.accept_encryption()  # refuses pipelined bytes
        self._write(answer)
        self.transport.startTLS(self._factory.tls)
        self._tls = True
        self.session.event("tls", negotiation="postgres")

    def _start_direct_tls(self) -> None:
        hello = self._startup.take_remaining()
        self.transport.startTLS(self._factory.tls)
        self._tls = self._direct_tls = True
        self.session.event("tls", negotiation="direct")
        # The ClientHello was read before we knew it was TLS: hand it to the
        # TLS layer that now sits between the socket and this protocol.
        self.transport.protocol.dataReceived(hello)

    def _cancel(self, event: codec.CancelRequest) -> None:
        self._abort()
        owner = self._factory.cancels.lookup(event.pid, event.secret)
        if owner is None:
            self._log.info(
                "Ignoring a CancelRequest with an unknown key from {peer}",
                peer=self._peer,
            )
            return
        owner.cancel_requested(self._peer)

    def _startup_message_received(self, message: codec.StartupMessage) -> None:
        if self._factory.draining:
            # As PostgreSQL does in a smart shutdown: after TLS, so that
            # clients that insist on TLS see the error too.
            self._fatal("57P03", "the gateway is shutting down", "gateway draining")
            return
        problem = self.session.recording_problem()
        if problem is not None:
            self._refuse_unrecordable(problem)
            return
        if self._direct_tls:
            # The TLS layer startTLS put between the socket and this
            # protocol says what ALPN agreed (INegotiated).
            alpn = self.transport.protocol.negotiatedProtocol
            if alpn != b"postgresql":
                self._fatal(
                    "08P01",
                    'direct TLS connections must use ALPN protocol "postgresql"',
                    "direct TLS without ALPN postgresql",
                )
                return
        if not self._tls and not self._factory.options.allow_cleartext:
            self._fatal(
                "28000",
                "this gateway accepts only TLS connections",
                "client did not use TLS",
                hint="connect with sslmode=require (or verify-full)",
            )
            return
        if message.get("replication") not in (None, "false", "0", "off", "no"):
            self._fatal(
                "0A000",
                "replication connections are not supported through the gateway",
                "replication connection refused",
            )
            return
        try:
            self._passthrough = upstream_parameters(message.parameters)
        except StartupRefused as e:
            self._fatal(
                e.sqlstate,
                e.message,
                f"startup parameter refused: {e.message}",
                hint=e.hint,
            )
            return
        if message.minor != 0 or message.protocol_options:
            negotiation = message.negotiate(latest=codec.PROTOCOL_3_0)
            if negotiation is not None:
                self._write(negotiation.encode())
        self._startup_message = message
        # The password message holds a token: bounded by the token limit,
        # not by max_message_bytes (nothing larger is buffered).
        self._reader = codec.FrameReader.frontend(
            self.session.max_token_bytes + _PASSWORD_FRAMING
        )
        self.session.event(
            "startup",
            user=message.get("user"),
            database=message.get("database"),
            application_name=message.get("application_name"),
        )
        leftover = self._startup.take_remaining()
        self._record_chunk(tail=len(leftover))
        self._enter(Phase.PASSWORD)
        self._write(codec.AuthenticationCleartextPassword().encode())
        if leftover:
            self._password_frames(leftover)

    # -- phase 2: password (the client's JWT) ---------------------------------

    def _password_data(self, data: bytes) -> None:
        self._password_frames(data)

    def _password_frames(self, data: bytes) -> None:
        """
        Read the password message.  It is recorded redacted once complete;
        whatever the client sent after it in the same read is recorded and
        held for the relay, so nothing reaches the target unrecorded.
        """
        reader = self._reader
        base = reader.consumed + reader.buffered  # stream offset of data[0]
        try:
            frames = reader.feed(data)
        except codec.ProtocolViolation as e:
            self.session.data(_C2G, b"[unparseable bytes in the password phase]")
            self._fatal(
                _preauth_sqlstate(e), e.message, f"protocol violation: {e.message}"
            )
            return
        if not frames:
            return
        kind, _, end = frames[0]
        if kind != _PASSWORD:
            # What it sent instead, recorded message by message: a password
            # message among them is redacted too.
            for frame in frames:
                if frame[0] == _PASSWORD:
                    reader.discard_to(frame[2])
                    self.session.data(_C2G, _REDACTED_PASSWORD)
                else:
                    self.session.data(_C2G, reader.take_to(frame[2]))
            if kind == _TERMINATE:
                self._close_reason = "client ended the session before authenticating"
                self._abort()
            else:
                self._fatal(
                    "08P01", "expected a password message", "no password message"
                )
            return
        body = reader.body(frames[0])
        self.session.data(_C2G, _REDACTED_PASSWORD)
        # Start a fresh reader past the password: its bytes are gone.  It
        # refuses any further password message (see _late_password).
        self._reader = codec.FrameReader.frontend(
            self._factory.options.max_message_bytes, passwords=False
        )
        try:
            token = codec.PasswordMessage.decode(body).password
        except codec.ProtocolViolation as e:
            self._fatal(e.sqlstate, e.message, f"protocol violation: {e.message}")
            return
        self._enter(Phase.CONNECTING)
        tail = data[end - base :]
        if tail:
            self._waiting_data(tail)
        target_name = self._startup_message.get(
            "database"
        ) or self._startup_message.get("user")
        self.session.authenticate(token, target_name).addCallbacks(
            self._authenticated, self._not_authenticated
        ).addErrback(self._chain_failed)

    def _waiting_data(self, data: bytes) -> None:
        """
        Bytes sent before the session is ready (pipelined, or in flight when
        reading paused): recorded now, held for the relay in order.
        """
        reader = self._reader
        base = reader.consumed + reader.buffered  # stream offset of data[0]
        try:
            frames = reader.feed(data)
        except codec.ProtocolViolation as e:
            self._bad_input(data, base, e)
            return
        self.session.data(_C2G, data)
        self._pending_frames.extend(frames)
        if reader.buffered > self.PENDING_LIMIT:
            self._client_gate.pause("authentication")

    def _bad_input(self, data: bytes, base: int, error: codec.ProtocolViolation):
        """
        The client's reader refused a message header in C{data} (which
        starts at stream offset C{base}): record what came before it and
        end the session.  A password message after authentication is
        neither recorded nor forwarded (L{_late_password}).
        """
        bad = self._reader.framed - base  # where the refused message starts
        if error.message_type == _PASSWORD:
            if bad > 0:
                self.session.data(_C2G, data[:bad])
            self._late_password()
            return
        self.session.data(_C2G, data)
        self._fatal(
            error.sqlstate, error.message, f"protocol violation: {error.message}"
        )

    def _late_password(self) -> None:
        """
        A second password message (or a SASL response) after the one that
        authenticated: the gateway asked for nothing, and its content is
        likely a secret.  It is kept out of the recording and off the
        target, and the session ends (a client that sends one is broken or
        probing; PostgreSQL itself answers 08P01 and closes).
        """
        self.session.data(_C2G, _LATE_PASSWORD)
        self._fatal(
            "08P01",
            "unexpected password message: the session is already authenticated",
            "password message after authentication (not recorded)",
        )

    def _not_authenticated(self, failure: Failure) -> None:
        if self._closing:
            return
        if failure.check(RecordingUnavailable):
            self._refuse_unrecordable(str(failure.value))
            return
        if failure.check(TargetAccessDenied):
            self._target_refused(failure.value)
            return
        if not failure.check(AuthenticationError):
            self._log.failure(
                "Authenticating session {sid}", failure, sid=str(self.session.id)
            )
        self._fatal(
            "28P01",
            "authentication failed",
            f"authentication failed: {failure.value}",
            hint="the password must be a valid access token (JWT) for this gateway",
        )

    def _target_refused(self, refusal: TargetAccessDenied) -> None:
        """The core refused the target: say so as PostgreSQL would."""
        if self._admission is not None:
            self._admission.authenticated()
        name = refusal.target
        if refusal.kind == UNKNOWN_TARGET:
            self._fatal(
                "3D000",
                f'no target named "{name}" on this gateway',
                refusal.reason,
                hint="the database name selects the target",
            )
            return
        self._fatal(
            "28000",
            f'"{refusal.subject}" may not reach target "{name}"',
            refusal.reason,
        )

    def _authenticated(self, identity: object) -> None:
        if self._closing:
            return
        if self._admission is not None:
            self._admission.authenticated()
        target_name = self.session.target
        target = self._factory.targets.get(target_name)
        if target is None:
            self._fatal(
                "3D000",
                f'no target named "{target_name}" on this gateway',
                f"unknown target {target_name!r}",
                hint="the database name selects the target",
            )
            return
        options: PostgresTargetOptions = target.options
        # The upstream role this identity's groups map to (credentials per
        # group, first match), so PostgreSQL's own privileges apply too.
        login = options.login_for(tuple(identity.groups))
        if login is None:
            self._fatal(
                "28000",
                f'"{identity.subject}" may not reach target "{target_name}"',
                f"no upstream credentials for the groups of {identity.subject!r}"
                f" on target {target_name!r}",
                hint="the target maps no upstream role to any of your groups",
            )
            return
        via, options = login
        self._upstream_user = options.user
        self.session.upstream_login(options.user, via)
        self._target = target
        self._gate = Gate(
            self.session, self, noun="statement", hold_limit=self.HOLD_LIMIT
        )
        if self.session.masker is not None:
            from gatehouse.protocols.postgres.masking import ResponseMasker

            rules = self.session.masker
            resolve = None
            if rules.has_relation_rules or rules.has_column_rules:
                # Name rules match the column a result column comes from
                # too (an alias does not hide it): the catalog names it.
                resolve = self._factory.catalog(target).column
            self._masker = ResponseMasker(rules, resolve, self._encoding)
            self._describes = deque()
        self._connect_started = self._factory.reactor.seconds()
        d = self._connecting = connect_upstream(
            self._factory.reactor,
            options,
            target_name,
            self._passthrough,
            self._factory.options.connect_timeout,
        )
        d.addCallbacks(self._upstream_ready, self._upstream_failed)
        d.addErrback(self._chain_failed)

    # -- phase 3: connecting -------------------------------------------------

    def _upstream_failed(self, failure: Failure) -> None:
        self._connecting = None
        if self._closing:
            return
        if not failure.check(UpstreamError):
            self._log.failure(
                "Connecting session {sid}", failure, sid=str(self.session.id)
            )
            failure = Failure(
                UpstreamError(f"internal error: {failure.getErrorMessage()}")
            )
        error = failure.value
        self.session.upstream_failed(error.reason)
        self._log.warn(
            "Target {target} unavailable for session {sid}: {why}",
            target=self._target.name,
            sid=str(self.session.id),
            why=error.reason,
        )
        self._fatal(
            error.sqlstate,
            f'the gateway could not open a session on target "{self._target.name}"',
            f"upstream failed: {error.reason}",
            detail="the target is unavailable or refused the gateway's credentials",
        )

    def _upstream_ready(self, ready: UpstreamReady) -> None:
        upstream = ready.protocol
        self._connecting = None
        if self._closing:
            upstream.terminate(self._factory.reactor, self.UPSTREAM_CLOSE_TIMEOUT)
            return
        self._upstream = upstream
        self._upstream_key = (ready.backend_pid, ready.backend_secret)
        self.session.upstream_connected(
            self._factory.reactor.seconds() - self._connect_started
        )
        self.session.event(
            "upstream-connected",
            target=self._target.name,
            auth=ready.auth_method,
            tls=ready.tls,
            backend_pid=ready.backend_pid,
            server_version=dict(ready.parameters).get("server_version"),
        )
        pid, secret = self._factory.cancels.register(self)
        self._cancel_key = (pid, secret)
        greeting = [codec.AuthenticationOk().encode()]
        greeting += [codec.ParameterStatus(k, v).encode() for k, v in ready.parameters]
        greeting.append(codec.BackendKeyData(pid, secret).encode())
        self._write(b"".join(greeting))
        # The server's ReadyForQuery (and anything after it) goes verbatim.
        tune(upstream.transport)
        upstream.on_data = self._upstream_data
        upstream.on_lost = self._upstream_lost
        upstream_gate = self._upstream_gate = PauseReasons(
            upstream.transport, "upstream"
        )
        self.session.registerProducer(upstream_gate.reason("recorder"))
        upstream.transport.registerProducer(self._client_gate, True)
        self.transport.registerProducer(upstream_gate, True)
        self._send_upstream_ready(ready)

    def _send_upstream_ready(self, ready: UpstreamReady) -> None:
        reported = dict(ready.parameters)
        expected = {
            "session_authorization": self._upstream_user,
            "standard_conforming_strings": "on",
        }
        for name, value in expected.items():
            if reported.get(name) != value:
                self._fatal(
                    "08006",
                    f'the session on target "{self._target.name}" is not what '
                    f"the gateway expects ({name} is {reported.get(name)!r}, "
                    f"not {value!r})",
                    f"upstream session check failed: {name} = {reported.get(name)!r}",
                )
                return
        if client_encoding(reported.get("client_encoding", "UTF8")) is None:
            self._fatal(
                "08006",
                f'target "{self._target.name}" uses client_encoding '
                f"{reported.get('client_encoding')!r}, which the gateway "
                "cannot read",
                "unsafe upstream client_encoding",
                hint="set client_encoding to UTF8",
            )
            return
        for name, value in ready.parameters:
            self._setting(name, value)
        self._write(codec.ReadyForQuery("I").encode())
        if ready.leftover:
            self._upstream_data(ready.leftover)
        self._enter(Phase.RELAY)
        if self._login_timer is not None and self._login_timer.active():
            self._login_timer.cancel()
        self._login_timer = None
        self._client_gate.resume("authentication")
        held, self._pending_frames = self._pending_frames, []
        self._gate.receive(held, self._reader.buffered)
