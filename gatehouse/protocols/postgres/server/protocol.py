"""
One PostgreSQL client connection: what psql, pgbench and drivers talk to.

L{PostgresServerProtocol} goes through the phases of L{Phase}:

1. startup: SSLRequest (answered C{S}, then TLS), direct TLS (PostgreSQL 17
   C{sslnegotiation=direct}), GSSENCRequest (refused), CancelRequest
   (forwarded to the target that runs the query), StartupMessage;
2. password: the gateway asks for a cleartext password, which is the
   client's JWT; the session verifies it;
3. connecting: the gateway opens its own session on the target;
4. relay: complete messages pass through both ways and are recorded; the
   client's go through the session's L{Gate}, whose driver this class is.

The phases before the relay are L{LoginPhases} (L{login}), the relay's
two sides L{ClientRelay} (L{relay}) and L{TargetResults} (L{results}); this
module holds the connection's state, how it ends, and its failures.  The
protocol class stays thin: decoding is the codec's, decisions, approvals
and the index the gate's, recording and identity the session's.
"""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING

from twisted.internet.defer import Deferred
from twisted.internet.protocol import Protocol
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from gatehouse.config import DEFAULT_MAX_TOKEN_BYTES, TargetConfig
from gatehouse.gate import Gate, IGateDriver
from gatehouse.limits import Admission
from gatehouse.net import PauseReasons, tune
from gatehouse.protocols.postgres import codec
from gatehouse.protocols.postgres.catalog import Lookups
from gatehouse.protocols.postgres.commands import Classified
from gatehouse.protocols.postgres.server._common import (
    _C2G,
    _G2C,
    _NEXT,
    _PASSWORD_FRAMING,
    _READERS,
    Phase,
)
from gatehouse.protocols.postgres.server.login import LoginPhases
from gatehouse.protocols.postgres.server.relay import ClientRelay
from gatehouse.protocols.postgres.server.results import TargetResults
from gatehouse.recording.interfaces import (
    SPACE_EXHAUSTED,
    RecordingFailed,
    RecordingUnavailable,
)

if TYPE_CHECKING:
    from gatehouse.protocols.postgres.server.factory import PostgresServerFactory


@implementer(IGateDriver)
class PostgresServerProtocol(LoginPhases, ClientRelay, TargetResults, Protocol):
    """One client connection; see the module docstring for its phases."""

    _log = Logger()
    #: seconds a closing client gets to finish its side of the close (read
    #: the last error; answer TLS close_notify).  PostgreSQL closes at once;
    #: a client that holds on keeps a descriptor, a cap place and an
    #: unsealed session, so this is short.
    CLOSE_TIMEOUT = 1.0
    #: seconds the target gets to close its side once the session ends
    #: (after Terminate); then the connection is cut
    UPSTREAM_CLOSE_TIMEOUT = 0.5
    #: bytes a client may send while a statement of it is held before its
    #: reading pauses (reading goes on below it, so a hang-up is noticed)
    HOLD_LIMIT = 1 << 20
    #: bytes a client may send after its password before its session is
    #: ready; its reading pauses above that (reading goes on below it, so
    #: a hang-up during authentication or the target's login is noticed)
    PENDING_LIMIT = 64 * 1024
    #: statements longer than this (characters) are classified in a
    #: thread, the client's input held meanwhile (8 KiB parse in ~3 ms)
    INLINE_CLASSIFY_LIMIT = 8 * 1024

    def __init__(self, factory: PostgresServerFactory):
        self._factory = factory
        #: catalog lookups in flight, cancelled when the client goes away
        self._lookups = Lookups()
        self._abort_call = None
        self._client_terminated = False
        #: messages the client sent before its session was ready
        self._pending_frames: list = []
        self._chunk = b""
        self._chunk_recorded = True
        self.session = None
        self._pending_records: list[bytes] = []
        self._startup = codec.StartupParser(detect_tls=factory.tls is not None)
        # Until the session knows the token limit (at the StartupMessage).
        self._reader = codec.FrameReader.frontend(
            DEFAULT_MAX_TOKEN_BYTES + _PASSWORD_FRAMING
        )
        #: this connection's place in the listener's caps (None: uncounted)
        self._admission: Admission | None = None
        #: the authentication timeout, then the hard close of a refusal
        self._login_timer = None
        self._direct_tls = False
        self._tls = False
        self._target: TargetConfig | None = None
        #: the role this session logs in as upstream (credentials per group)
        self._upstream_user: str | None = None
        self._startup_message: codec.StartupMessage | None = None
        self._upstream = None
        self._upstream_gate: PauseReasons | None = None
        #: the target session being opened (cancelled if the client leaves)
        self._connecting: Deferred | None = None
        self._cancel_key: tuple[int, bytes] | None = None
        self._closing = False
        self._close_reason = "client disconnected"
        self._client_gate: PauseReasons | None = None
        #: decides, holds, forwards and refuses the client's statements
        self._gate: Gate | None = None
        #: where the messages the gate let go end in the client's stream
        self._permitted = 0
        self._upstream_reader = codec.FrameReader.backend()
        # Set while the target's output is held (a catalog lookup).
        self._upstream_held: list | None = None
        self._masker = None
        # Refused statements are replaced upstream by a syntax error that
        # names a token; that error is rewritten into the refusal.  token ->
        # (ErrorResponse bytes, ReadyForQuery count that ends its chance).
        self._refusals: dict[bytes, tuple[bytes, int]] = {}
        self._ready_expected = 0
        self._ready_seen = 0
        # With masking, what each RowDescription/NoData from the target
        # answers, in order: "q" a Query (its results), "pass" a client's
        # Describe, "swallow" the gateway's own Describe before an Execute,
        # "s" a Sync or FunctionCall.  None: not tracked (no masking).
        self._describes: deque[str] | None = None
        #: the portal the client described last, and where that message
        #: ended in its stream (an Execute starting there needs no Describe)
        self._described: tuple[bytes, int] | None = None
        #: a held statement's classification, made in a thread: (where the
        #: message starts in the client's stream, classification)
        self._preclassified: tuple[int, Classified] | None = None
        self._encoding = "utf-8"
        # How the target reads SQL text now (its last ParameterStatus):
        # backslashes are plain characters only with standard_conforming_
        # strings on; bytes >= 0x80 are read as we decode them only in a
        # client encoding without ASCII trail bytes.  See L{_reading}.
        self._scs_on = True
        self._encoding_safe = True
        # A Bind or Execute went to the target since the last Sync: it may
        # have run code that changed the reading, and the target will not
        # say so before that Sync (see L{_reading}).
        self._unsynced = False
        # PostgreSQL ignores a Sync in copy-in mode (libpq sends one right
        # after an extended-protocol COPY FROM STDIN, and one more after
        # CopyDone): such Syncs get no ReadyForQuery.  Syncs forwarded since
        # the last Query/Execute, the same count when the client ended a
        # copy (None: not yet), and whether the target is in copy-in mode.
        self._syncs_since_start = 0
        self._copy_end_syncs: int | None = None
        self._copy_in = False
        self._passthrough: tuple[tuple[str, str], ...] = ()
        self._read = self._startup_data

    # -- phases --------------------------------------------------------------

    #: where the connection is (see L{Phase}); each phase reads the client
    #: with its own method (L{_READERS})
    phase = Phase.STARTUP

    def dataReceived(self, data: bytes) -> None:
        self._read(data)

    def _enter(self, phase: Phase) -> None:
        """Go to C{phase}, which must follow the current one."""
        if phase not in _NEXT[self.phase]:
            raise RuntimeError(f"no way from phase {self.phase} to {phase}")
        self.phase = phase
        self._read = getattr(self, _READERS[phase])

    # -- connection ----------------------------------------------------------

    def connectionMade(self) -> None:
        self._factory.connections.add(self)
        peer = self.transport.getPeer()
        self._peer = f"{getattr(peer, 'host', peer)}:{getattr(peer, 'port', '')}"
        self._client_gate = PauseReasons(self.transport, "client")
        tune(self.transport)
        self._login_timer = self._factory.reactor.callLater(
            self._factory.options.authentication_timeout, self._login_timeout
        )

    def _login_timeout(self) -> None:
        """
        The client did not log in in time (the total from accept; bytes
        trickled in do not extend it): tell it if it reads, then close
        (cut off after L{CLOSE_TIMEOUT}, as after every FATAL).  A client
        already refused that has not let go of its connection is cut off
        now.
        """
        self._login_timer = None
        if self._closing:
            self.transport.abortConnection()
            return
        if not self._open_session():
            return
        timeout = self._factory.options.authentication_timeout
        self._fatal(
            "08P01",
            f"authentication timeout: not logged in within {timeout:g} s",
            "authentication timeout",
        )

    def _evicted(self) -> None:
        """
        The listener's pre-auth cap is full and this connection, the oldest
        of the address holding most, gave its place to a client from a
        lighter address: refuse it (53300); it is cut off after
        L{CLOSE_TIMEOUT}, as every FATAL is.
        """
        if self._closing or not self._open_session():
            self.transport.abortConnection()
            return
        self._fatal(
            "53300",
            "too many connections",
            "too many connections: evicted for a client from another address"
            " (the listener holds its maximum of unauthenticated connections)",
        )

    def _release_limits(self) -> None:
        """The connection is gone: stop its timer, leave the caps."""
        if self._login_timer is not None and self._login_timer.active():
            self._login_timer.cancel()
        self._login_timer = None
        if self._admission is not None:
            self._admission.release()

    def _open_session(self) -> bool:
        """Open the session (lazily: a CancelRequest connection gets none)."""
        if self.session is not None:
            return True
        try:
            self.session = self._factory.session_factory(
                "postgres", self._factory.listener_name, self._peer
            )
        except RecordingUnavailable as e:
            self._refuse_unrecordable(str(e))
            return False
        self.session.on_failure(self._recording_failed)
        self.session.on_terminate(self._terminated)
        self.session.registerProducer(self._client_gate.reason("recorder"))
        for chunk in self._pending_records:
            self.session.data(_C2G, chunk)
        self._pending_records = []
        return True

    def connectionLost(self, reason: Failure) -> None:
        self._factory.connections.discard(self)
        self._release_limits()
        self._closing = True
        if self._gate is not None:
            self._gate.close()
        if self._abort_call is not None and self._abort_call.active():
            self._abort_call.cancel()
        if self._cancel_key is not None:
            self._factory.cancels.unregister(self._cancel_key[0])
        self._lookups.cancel_all()
        self._close_upstream()
        if self.session is not None:
            # Session.close logs a failure to seal (a recording that failed
            # mid-session); unconsumed it was an "Unhandled error".
            self.session.close(self._close_reason).addErrback(lambda failure: None)

    def _close_upstream(self) -> None:
        """
        End the target session: every way a session ends comes here.  A
        connection still being opened is abandoned; an open one is told
        Terminate and closed within L{UPSTREAM_CLOSE_TIMEOUT} (see
        L{UpstreamProtocol.terminate}).  A statement still running there is
        cancelled first: PostgreSQL notices a closed socket only when it
        next reads or writes, so a long query would keep its backend.
        """
        connecting, self._connecting = self._connecting, None
        if connecting is not None:
            connecting.cancel()
        upstream, self._upstream = self._upstream, None
        if upstream is None:
            return
        if self._upstream_gate is not None:
            self._upstream_gate.release()
        busy = self._ready_seen < self._ready_expected or self._unsynced
        if busy and not self._client_terminated and not self._copy_in:
            self._cancel_upstream()
        upstream.terminate(
            self._factory.reactor,
            self.UPSTREAM_CLOSE_TIMEOUT,
            said=self._client_terminated,
            copy_in=self._copy_in,
        )

    def _abort(self) -> None:
        """
        Hang up after what was written is flushed, and end the target
        session.  Reading resumes so a TLS close can complete; a peer that
        never finishes it is cut off.  The target's output stops being the
        client transport's producer: Twisted does not close a transport (a
        TLS one never sends its close_notify) while one is registered.
        """
        self._closing = True
        self._enter(Phase.CLOSING)
        if self._gate is not None:
            self._gate.close()
        if self._client_gate is not None:
            self._client_gate.release()
        # Nothing more from the target reaches a closing client.
        self._close_upstream()
        # In this order: loseConnection flushes Twisted's TLS write
        # aggregation, unregisterProducer then lets the close go out after
        # it (the other way round, close_notify overtakes the last error).
        self.transport.loseConnection()
        self.transport.unregisterProducer()
        if self._abort_call is None:
            self._abort_call = self._factory.reactor.callLater(
                self.CLOSE_TIMEOUT, self.transport.abortConnection
            )

    def _ignore(self, data: bytes) -> None:
        pass

    def _write(self, data: bytes) -> None:
        """Write gateway-made bytes to the client, recorded."""
        if self.session is not None:
            try:
                self.session.data(_G2C, data)
            except RecordingFailed:
                return
        self.transport.write(data)

    def _write_error(
        self,
        sqlstate: str,
        message: str,
        severity: str = "FATAL",
        detail: str | None = None,
        hint: str | None = None,
    ) -> None:
        self._write(
            codec.ErrorResponse.build(
                severity, sqlstate, message, detail, hint
            ).encode()
        )

    def _fatal(
        self, sqlstate: str, message: str, reason: str, **kw: str | None
    ) -> None:
        """Send a FATAL error, record why, and hang up."""
        self._close_reason = reason
        if self.session is not None:
            self.session.event("refused", sqlstate=sqlstate, reason=reason)
        self._write_error(sqlstate, message, "FATAL", **kw)
        self._abort()

    # -- failure and shutdown ------------------------------------------------

    def _recording_failed(self, reason: str) -> None:
        if self._closing:
            return
        self._close_reason = reason
        self._closing = True
        if reason.startswith(SPACE_EXHAUSTED):
            error = codec.ErrorResponse.build(
                "FATAL",
                "53100",
                "the gateway's recording disk is full; the "
                "session is closed (what was sent so far is recorded)",
            ).encode()
        else:
            error = codec.ErrorResponse.build(
                "FATAL", "58030", "the gateway cannot record this session; it is closed"
            ).encode()
        try:
            # An exhausted recording keeps room for this; a failed one is
            # gone, and the error is sent unrecorded, on purpose.
            self.session.data(_G2C, error)
        except RecordingFailed:
            pass
        self.transport.write(error)
        self._abort()

    def _terminated(self, reason: str) -> Deferred | None:
        if self._closing:
            return None
        # What the target still runs is cancelled there by _close_upstream
        # (through _fatal); a statement held here never runs.  The session
        # may say why it ends (its token expired).
        message = self.session.end_message or "the gateway is shutting down"
        self._fatal("57P01", message, reason)
        return None
