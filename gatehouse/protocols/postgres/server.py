"""
The gateway as a PostgreSQL server: what psql, pgbench and drivers talk to.

One L{PostgresServerProtocol} per client connection, in phases:

1. startup: SSLRequest (answered C{S}, then TLS), direct TLS (PostgreSQL 17
   C{sslnegotiation=direct}), GSSENCRequest (refused), CancelRequest
   (forwarded to the target that runs the query), StartupMessage;
2. password: the gateway asks for a cleartext password, which is the
   client's JWT; the session verifies it;
3. connecting: the gateway opens its own session on the target;
4. relay: complete messages pass through both ways and are recorded.

The protocol class stays thin: decoding is the codec's, recording, identity
and the index are the session's.
"""

from __future__ import annotations

import hmac
import os
import struct
from collections import deque
from collections.abc import Mapping
from functools import partial

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IPushProducer
from twisted.internet.protocol import Factory, Protocol
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from gatehouse.config import DEFAULT_MAX_TOKEN_BYTES, TargetConfig
from gatehouse.identity import AuthenticationError
from gatehouse.limits import (
    Admission,
    ConnectionLimits,
    fds_needed,
    open_file_limit,
)
from gatehouse.net import send_now, tune
from gatehouse.policy import ERROR, OPAQUE, Command, Decision
from gatehouse.protocols.postgres import codec
from gatehouse.protocols.postgres.catalog import Catalog
from gatehouse.protocols.postgres.classifier import ClassifierPool
from gatehouse.protocols.postgres.commands import (
    FUNCTION_CALL,
    Classified,
    CommandCache,
)
from gatehouse.protocols.postgres.config import (
    PostgresListenerOptions,
    PostgresTargetOptions,
)
from gatehouse.protocols.postgres.protections import refusal as protection_refusal
from gatehouse.protocols.postgres.upstream import (
    StartupRefused,
    UpstreamError,
    UpstreamReady,
    client_encoding,
    connect_upstream,
    send_cancel,
    upstream_parameters,
)
from gatehouse.recording.format import Direction
from gatehouse.recording.interfaces import (
    SPACE_EXHAUSTED,
    RecordingFailed,
    RecordingUnavailable,
)
from gatehouse.session import UNKNOWN_TARGET, TargetAccessDenied

_C2G = Direction.CLIENT_TO_GATEWAY
_G2C = Direction.GATEWAY_TO_CLIENT
_G2U = Direction.GATEWAY_TO_UPSTREAM
_U2G = Direction.UPSTREAM_TO_GATEWAY
_QUERY = codec.FrontendType.QUERY
_PARSE = codec.FrontendType.PARSE
_TERMINATE = codec.FrontendType.TERMINATE
_SYNC = codec.FrontendType.SYNC
_FUNCTION_CALL = codec.FrontendType.FUNCTION_CALL
_DESCRIBE = codec.FrontendType.DESCRIBE
_EXECUTE = codec.FrontendType.EXECUTE
_BIND = codec.FrontendType.BIND
_COPY_END = frozenset({codec.FrontendType.COPY_DONE, codec.FrontendType.COPY_FAIL})
_B_COPY_IN = codec.BackendType.COPY_IN_RESPONSE
#: client messages that PostgreSQL answers with one ReadyForQuery
_READY_AFTER = frozenset({_QUERY, _SYNC, _FUNCTION_CALL})
_B_NO_DATA = codec.BackendType.NO_DATA
_B_PARAMETER = codec.BackendType.PARAMETER_STATUS
_B_ERROR = codec.BackendType.ERROR_RESPONSE
_B_READY = codec.BackendType.READY_FOR_QUERY
_B_ROWS = codec.BackendType.ROW_DESCRIPTION
_B_DATA_ROW = codec.BackendType.DATA_ROW
#: backend messages the response masker reads the body of (RowDescription
#: and DataRow have branches of their own in _deliver): COPY, and every
#: other message that carries values
_MASKER_BODIES = frozenset(
    {
        codec.BackendType.COPY_OUT_RESPONSE,
        codec.BackendType.COPY_DATA,
        codec.BackendType.ERROR_RESPONSE,
        codec.BackendType.NOTICE_RESPONSE,
        codec.BackendType.NOTIFICATION_RESPONSE,
        codec.BackendType.PARAMETER_STATUS,
        codec.BackendType.FUNCTION_CALL_RESPONSE,
    }
)
#: and those it follows by their kind alone (where a result ends)
_MASKED_TYPES = _MASKER_BODIES | {
    codec.BackendType.COPY_DONE,
    codec.BackendType.COMMAND_COMPLETE,
    codec.BackendType.EMPTY_QUERY_RESPONSE,
    codec.BackendType.READY_FOR_QUERY,
}
_PASSWORD = codec.FrontendType.PASSWORD
_REDACTED_PASSWORD = codec.encode_message(_PASSWORD, b"[REDACTED]\0")
#: what the recording holds in place of a password message after login
#: (refused, never forwarded; see L{PostgresServerProtocol._late_password})
_LATE_PASSWORD = b"[password message after authentication: not recorded]"


def _own_commands(classified: Classified, text: str) -> tuple:
    return classified.for_text(text).commands


#: The rule name of the built-in protections' refusals.
PROTECTION_RULE = "built-in-protection"

#: L{PostgresServerProtocol._classify}: the answer comes later
_PENDING = object()
#: L{PostgresServerProtocol._reading}: wait for the target's answers first
_BARRIER = object()
_CANCELED = "canceling statement due to user request"
#: SQLSTATE of a limit exceeded; before authentication PostgreSQL answers
#: an oversized packet with a protocol violation instead
_LIMIT_EXCEEDED = "54000"
#: a password message's bytes around the token: length word and NUL
_PASSWORD_FRAMING = 5


def _preauth_sqlstate(error: codec.ProtocolViolation) -> str:
    return "08P01" if error.sqlstate == _LIMIT_EXCEEDED else error.sqlstate


class StatementIndexer:
    """
    Indexes each distinct statement of a session once: statements that
    differ only in constants (pgbench's random keys) share a shape,
    so the index holds shapes, not every execution.  Statements the policy
    did not simply allow are indexed every time, with the decision.  The
    statements themselves are in the recording.
    """

    #: statement shapes indexed per session at most
    MAX_DISTINCT = 10_000

    def __init__(self, session: object):
        self._session = session
        self._seen: set[str] = set()

    def saw(self, sql: str, classified: Classified, decision: Decision) -> None:
        """A client sent C{sql} (a Query, or a Parse) and it was decided."""
        action = decision.action
        if action == "allow":
            key = classified.shape or sql
            seen = self._seen
            if key in seen or len(seen) >= self.MAX_DISTINCT:
                return
            seen.add(key)
        command_seen = self._session.command_seen
        for command in classified.for_text(sql).commands:
            command_seen(command.kind, command.text, command.objects, action)


class CancelRegistry:
    """
    Maps the BackendKeyData the gateway gave each client to the target
    backend it stands for, so a client's CancelRequest reaches the right
    query on the right target.
    """

    def __init__(self):
        self._entries: dict[int, tuple[bytes, PostgresServerProtocol]] = {}

    def register(self, protocol: PostgresServerProtocol) -> tuple[int, bytes]:
        """Allocate a (pid, secret) pair for C{protocol}."""
        while True:
            pid = struct.unpack("!I", os.urandom(4))[0] & 0x7FFFFFFF
            if pid and pid not in self._entries:
                break
        secret = os.urandom(4)
        self._entries[pid] = (secret, protocol)
        return pid, secret

    def unregister(self, pid: int) -> None:
        """Forget a key (its connection ended)."""
        self._entries.pop(pid, None)

    def lookup(self, pid: int, secret: bytes) -> PostgresServerProtocol | None:
        """The connection a cancel key belongs to, if the key matches."""
        entry = self._entries.get(pid)
        if entry is None or not hmac.compare_digest(entry[0], secret):
            return None
        return entry[1]


@implementer(IPushProducer)
class _PauseReasons:
    """
    Several parties may pause one transport (the other side's write buffer,
    the recorder's backlog, a pending authentication); it reads again only
    when none of them wants it paused.
    """

    def __init__(self, transport: object, name: str):
        self._transport = transport
        self._name = name
        self._reasons: set[str] = set()

    def reason(self, name: str) -> _Reason:
        return _Reason(self, name)

    def release(self) -> None:
        """Read again whatever paused it (the connection is closing)."""
        if self._reasons:
            self._reasons.clear()
            self._transport.resumeProducing()

    def pause(self, name: str) -> None:
        if not self._reasons:
            self._transport.pauseProducing()
        self._reasons.add(name)

    def resume(self, name: str) -> None:
        if name in self._reasons:
            self._reasons.discard(name)
            if not self._reasons:
                self._transport.resumeProducing()

    def pauseProducing(self) -> None:
        self.pause("peer")

    def resumeProducing(self) -> None:
        self.resume("peer")

    def stopProducing(self) -> None:
        self._transport.stopProducing()


@implementer(IPushProducer)
class _Reason:
    """One party's pause switch on a L{_PauseReasons}."""

    def __init__(self, gate: _PauseReasons, name: str):
        self._gate = gate
        self._name = name

    def pauseProducing(self) -> None:
        self._gate.pause(self._name)

    def resumeProducing(self) -> None:
        self._gate.resume(self._name)

    def stopProducing(self) -> None:
        pass


class PostgresServerFactory(Factory):
    """
    Builds a L{PostgresServerProtocol} per client of one listener, within
    the listener's connection caps.

    @param tls: server TLS options (ALPN C{postgresql}), or None.
    """

    noisy = False

    def __init__(
        self,
        listener_name: str,
        options: PostgresListenerOptions,
        targets: Mapping[str, TargetConfig],
        session_factory: object,
        reactor: object,
        tls: object | None,
        cancels: CancelRegistry,
    ):
        self.listener_name = listener_name
        self.options = options
        self.targets = targets
        self.session_factory = session_factory
        self.reactor = reactor
        self.tls = tls
        self.cancels = cancels
        self.commands = CommandCache()
        #: worker processes for long statements (see L{ClassifierPool})
        self.classifier = ClassifierPool(reactor, options.classify_workers)
        self.catalogs: dict[str, Catalog] = {}
        self.connections: set[PostgresServerProtocol] = set()
        #: connections counted against the listener's caps
        self.limits = ConnectionLimits(options.caps)
        #: refused connections waiting for their client to read why
        self.refusing = 0
        #: set while the gateway drains (SIGTERM): new clients are refused
        self.draining = False

    _log = Logger()

    def startFactory(self) -> None:
        """Warn if the process may run out of descriptors below the caps."""
        needed = fds_needed(self.options.max_connections)
        soft = open_file_limit()
        if soft is not None and soft < needed:
            self._log.warn(
                "Listener {listener}: max_connections {max} needs about"
                " {needed} open files, the process may open {soft}: raise"
                " the limit (LimitNOFILE=) or lower max_connections",
                listener=self.listener_name,
                max=self.options.max_connections,
                needed=needed,
                soft=soft,
            )

    def catalog(self, target: TargetConfig) -> Catalog:
        """The column catalog of C{target}, shared by its sessions."""
        catalog = self.catalogs.get(target.name)
        if catalog is None:
            catalog = self.catalogs[target.name] = Catalog(
                self.reactor,
                target.options,
                target.name,
                self.options.connect_timeout,
            )
        return catalog

    def buildProtocol(self, addr: object) -> Protocol:
        """
        A protocol for a new client, or a L{TooManyConnections} answer if
        the listener is over one of its caps (counted per source address).
        """
        admission = self.limits.admit(getattr(addr, "host", None) or "local")
        if isinstance(admission, str):
            refusal = TooManyConnections(self, admission)
            refusal.factory = self
            return refusal
        protocol = PostgresServerProtocol(self)
        protocol.factory = self
        protocol._admission = admission
        admission.on_evict = protocol._evicted
        return protocol


class TooManyConnections(Protocol):
    """
    Answers a connection over a cap of its listener with FATAL 53300 and
    closes it: no session, nothing recorded, one log line.  The client gets
    up to L{LINGER} seconds to read the error (its own bytes are read and
    dropped meanwhile, so no reset destroys the answer); past
    L{MAX_LINGERING} such connections at once, they are closed at once.
    """

    LINGER = 1.0
    MAX_LINGERING = 64

    def __init__(self, factory: PostgresServerFactory, why: str):
        self._factory = factory
        self._why = why
        self._timer = None
        self._lingering = False

    def connectionMade(self) -> None:
        factory = self._factory
        peer = self.transport.getPeer()
        address = f"{getattr(peer, 'host', peer)}:{getattr(peer, 'port', '')}"
        try:
            session = factory.session_factory(
                "postgres", factory.listener_name, address
            )
        except RecordingUnavailable:
            session = None
        if session is not None:
            session.close(f"too many connections: {self._why}")
        self.transport.write(
            codec.ErrorResponse.build(
                "FATAL", "53300", "too many connections", self._why
            ).encode()
        )
        if factory.refusing >= self.MAX_LINGERING:
            self.transport.loseConnection()
            return
        factory.refusing += 1
        self._lingering = True
        self.transport.loseWriteConnection()
        self._timer = factory.reactor.callLater(
            self.LINGER, self.transport.abortConnection
        )

    def dataReceived(self, data: bytes) -> None:
        pass

    def connectionLost(self, reason: Failure) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        if self._lingering:
            self._lingering = False
            self._factory.refusing -= 1


class PostgresServerProtocol(Protocol):
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
        self._abort_call = None
        self._client_terminated = False
        self._held_frames: list = []
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
        self._upstream_gate: _PauseReasons | None = None
        #: the target session being opened (cancelled if the client leaves)
        self._connecting: Deferred | None = None
        self._cancel_key: tuple[int, bytes] | None = None
        self._closing = False
        self._close_reason = "client disconnected"
        self._client_gate: _PauseReasons | None = None
        self._statements: StatementIndexer | None = None
        self._upstream_reader = codec.FrameReader.backend()
        # Set while the client's input is held (an approval, a catalog
        # lookup): its frames wait in _held_frames.
        self._waiting: str | None = None
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
        # The verdict of the statement held for approval (cancelled by a
        # CancelRequest), and whether the held statement was cancelled.
        self._verdict: Deferred | None = None
        self._verdict_request = None
        self._hold_cancelled = False
        self._passthrough: tuple[tuple[str, str], ...] = ()
        self.dataReceived = self._startup_data

    # -- connection ----------------------------------------------------------

    def connectionMade(self) -> None:
        self._factory.connections.add(self)
        peer = self.transport.getPeer()
        self._peer = f"{getattr(peer, 'host', peer)}:{getattr(peer, 'port', '')}"
        self._client_gate = _PauseReasons(self.transport, "client")
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
        if self._abort_call is not None and self._abort_call.active():
            self._abort_call.cancel()
        if self._cancel_key is not None:
            self._factory.cancels.unregister(self._cancel_key[0])
        self._close_upstream()
        if self.session is not None:
            self.session.close(self._close_reason)

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
        self.dataReceived = self._ignore
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
        self.dataReceived = self._password_data
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
        self.dataReceived = self._waiting_data
        tail = data[end - base :]
        if tail:
            self._waiting_data(tail)
        target_name = self._startup_message.get(
            "database"
        ) or self._startup_message.get("user")
        self.session.authenticate(token, target_name).addCallbacks(
            self._authenticated, self._not_authenticated
        )

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
        self._held_frames.extend(frames)
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
        self._statements = StatementIndexer(self.session)
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
        upstream_gate = self._upstream_gate = _PauseReasons(
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
        self.dataReceived = self._relay_data
        if self._login_timer is not None and self._login_timer.active():
            self._login_timer.cancel()
        self._login_timer = None
        self._client_gate.resume("authentication")
        held, self._held_frames = self._held_frames, []
        self._relay_frames(held)

    # -- phase 4: relay --------------------------------------------------------

    def _relay_data(self, data: bytes) -> None:
        reader = self._reader
        base = reader.consumed + reader.buffered  # stream offset of data[0]
        try:
            frames = reader.feed(data)
        except codec.ProtocolViolation as e:
            try:
                self._bad_input(data, base, e)
            except RecordingFailed:
                pass
            return
        try:
            self.session.data(_C2G, data)
        except RecordingFailed:
            return
        if frames:
            self._relay_frames(frames)
        if self._waiting is not None and self._reader.buffered > self.HOLD_LIMIT:
            self._client_gate.pause("held")

    def _relay_frames(self, frames: list) -> None:
        """
        Decide the statements among complete messages, then forward what
        may go.  A statement held for review (or a lookup) stops the relay
        there: it and everything after it wait in L{_held_frames}.
        """
        if not frames:
            return
        if self._waiting is not None:
            self._held_frames.extend(frames)
            return
        reader = self._reader
        cap = self._factory.options.max_statement_bytes
        for index, frame in enumerate(frames):
            kind = frame[0]
            if kind == _QUERY or kind == _EXECUTE:
                self._syncs_since_start = 0
                self._copy_end_syncs = None
            if kind == _QUERY or kind == _PARSE or kind == _FUNCTION_CALL:
                body = reader.body(frame)
                if kind != _FUNCTION_CALL:
                    if frame[2] - frame[1] > cap:
                        self._forward(reader.take_to(frame[1]))
                        self._too_long(frame, cap)
                        continue
                    reading = self._reading(frame, body)
                    if reading is _BARRIER:
                        self._forward(reader.take_to(frame[1]))
                        self._hold(frames, index, "barrier")
                        return
                    if reading is not None:
                        self._forward(reader.take_to(frame[1]))
                        self._refuse(frame, reading, sqlstate="0A000")
                        continue
                found = self._classify(frame, body)
                if found is None:
                    return
                if found is _PENDING:
                    self._forward(reader.take_to(frame[1]))
                    self._hold(frames, index, "classification")
                    return
                text, classified = found
                # Built-in protections first: no policy can allow these.
                decision = self._protection(classified, text)
                if decision is None:
                    # Possibly classified from another text of its shape:
                    # the client's own text is bound only where it is read.
                    decision = self.session.decide(
                        classified.commands,
                        classified.shape,
                        None
                        if classified.source == text
                        else partial(_own_commands, classified, text),
                    )
                self._statements.saw(text, classified, decision)
                if decision.action == "allow":
                    if self._masker is not None:
                        refusal = self._copy_check(classified, kind)
                        if refusal is not None:
                            self._forward(reader.take_to(frame[1]))
                            self._refuse(frame, refusal)
                            continue
                        if self._copy_needs_columns(classified):
                            self._forward(reader.take_to(frame[1]))
                            self._hold(frames, index, "catalog")
                            self._copy_columns(classified, frame)
                            return
                    self._sent(kind)
                    continue
                self._forward(reader.take_to(frame[1]))
                if decision.action == "deny":
                    self._refuse(frame, self._refusal_text(decision))
                    continue
                if decision.action == ERROR:
                    self._refuse_unparseable(frame, classified)
                    continue
                self._review(frames, index, classified.for_text(text), decision)
                return
            if kind == _BIND or kind == _EXECUTE:
                # Planning and running may call functions (set_config).
                self._unsynced = True
            if kind in _COPY_END:
                if self._copy_in:
                    self._copy_in = False
                elif self._copy_end_syncs is None:
                    self._copy_end_syncs = self._syncs_since_start
            if kind == _SYNC:
                if not self._copy_in:  # else the target ignores it
                    self._sent(kind)
                    self._syncs_since_start += 1
                self._unsynced = False
            elif self._describes is not None:
                if kind == _DESCRIBE:
                    self._describes.append("pass")
                    portal = codec.portal_described(reader.body(frame))
                    if portal is not None:
                        self._described = (portal, frame[2])
                elif kind == _EXECUTE:
                    # Rows are masked by their own portal's columns (not by
                    # whatever was described last): unless the client
                    # described this portal just before (libpq always does),
                    # the gateway describes it, and keeps the answer.
                    portal = codec.portal_executed(reader.body(frame))
                    if self._described != (portal, frame[1]):
                        self._forward(reader.take_to(frame[1]))
                        self._forward(codec.describe_portal(portal))
                        self._describes.append("swallow")
            if kind == _TERMINATE:
                self._close_reason = "client terminated the session"
                self._client_terminated = True
        end = frames[-1][2]
        if end > reader.consumed:
            self._forward(reader.take_to(end))

    def _reading(self, frame: tuple, body: bytes) -> object:
        """
        Whether the SQL text of a Query or Parse can be read now exactly as
        the target will read it: None if so; L{_BARRIER} if only once the
        target has answered everything sent before it; else why not (the
        statement is refused, the session goes on).

        A text of ASCII bytes without a backslash reads the same in every
        state: standard_conforming_strings only changes what a backslash
        means, and every client encoding PostgreSQL accepts reads bytes
        below 0x80 as ASCII.  It is read at once (pgbench -S pays nothing).
        Any other text is read only in the state the target reported
        (ParameterStatus, which PostgreSQL 14 and later sends just before
        ReadyForQuery) after everything before it ran: a statement, a
        function it calls or a trigger may have changed that state.
        """
        if frame[0] == _PARSE:
            # name and query, NUL-terminated, then binary parameter OIDs
            end = body.find(b"\0", body.find(b"\0") + 1)
            if end >= 0:
                body = body[:end]
        if body.isascii() and b"\\" not in body:
            return None
        if self._unsynced:
            # The target reports what an earlier Bind/Execute of this batch
            # changed only after the batch's Sync, which the client sends
            # after this statement: waiting would deadlock, guessing is
            # unsafe.
            return (
                "gatehouse checks a statement with non-ASCII characters or "
                "backslashes only after the statements before it in the "
                "pipeline have been synced; send Sync before it"
            )
        if self._ready_seen < self._ready_expected:
            return _BARRIER
        if not self._scs_on and b"\\" in body:
            return (
                "gatehouse does not check statements with backslashes while "
                "standard_conforming_strings is off; "
                "SET standard_conforming_strings = on"
            )
        if not self._encoding_safe and not body.isascii():
            return (
                "gatehouse cannot read non-ASCII statements in this client "
                "encoding (its characters can hide ASCII bytes); "
                "SET client_encoding = 'UTF8'"
            )
        return None

    def _too_long(self, frame: tuple, cap: int) -> None:
        self._refuse(
            frame,
            f"statement too long for the gateway to check "
            f"({frame[2] - frame[1] - 5} bytes, at most {cap})",
            sqlstate="54000",
        )

    def _sent(self, kind: int) -> None:
        """A message the target answers with ReadyForQuery is on its way."""
        if kind in _READY_AFTER:
            self._ready_expected += 1
            if self._describes is not None:
                self._describes.append("q" if kind == _QUERY else "s")

    def _classify(self, frame: tuple, body: bytes) -> tuple[str, Classified] | None:
        """
        The text of a Query, Parse or FunctionCall and its commands, read
        in the client's encoding; None (the session is ended) if the
        message is malformed.
        """
        kind = frame[0]
        try:
            if kind == _FUNCTION_CALL:
                oid = codec.FunctionCall.decode(body).function_oid
                text = f"fast-path call of function OID {oid}"
                command = Command(
                    "postgres",
                    FUNCTION_CALL,
                    text,
                    flags=frozenset({OPAQUE}),
                    categories=frozenset({"code"}),
                )
                return text, Classified((), (command,), source=text)
            message = (codec.Query if kind == _QUERY else codec.Parse).decode(
                body, self._encoding
            )
        except codec.ProtocolViolation as e:
            self._fatal(e.sqlstate, e.message, f"protocol violation: {e.message}")
            return None
        text = message.sql if kind == _QUERY else message.query
        cache = self._factory.commands
        ready = self._preclassified
        if ready is not None and ready[0] == frame[1]:
            self._preclassified = None
            if ready[1].source == text:
                return text, ready[1]
            # The client encoding changed meanwhile (a pipelined SET): the
            # text PostgreSQL will read is another one; classify that.
        if len(text) > self.INLINE_CLASSIFY_LIMIT:
            found = cache.cached(text)
            if found is not None:
                return text, found
            # Parsing takes milliseconds per few KiB: not on the reactor,
            # nor in its threads (see ClassifierPool).
            self._factory.classifier.classify(text).addBoth(
                self._classified, frame, text
            )
            return _PENDING
        return text, cache.lookup(text)

    def _classified(self, result: object, frame: tuple, text: str) -> None:
        """A long statement was classified in a worker: decide it now."""
        if not self._holding(frame, "classification"):
            return  # the client cancelled it, or the session ended
        if isinstance(result, Failure):
            self._release(result, frame, "the gateway could not check this statement")
            return
        self._factory.commands.remember(text, result)
        self._preclassified = (frame[1], result)
        self._resume_held()

    def _holding(self, frame: tuple, why: str) -> bool:
        """Whether the relay still holds C{frame} for C{why}."""
        return (
            not self._closing
            and not self.session.closed
            and self._upstream is not None
            and self._waiting == why
            and bool(self._held_frames)
            and self._held_frames[0] is frame
        )

    def _resume_held(self) -> None:
        """Relay the held frames again, from the first (decided anew)."""
        self._waiting = None
        held, self._held_frames = self._held_frames, []
        self._client_gate.resume("held")
        try:
            self._relay_frames(held)
        except Exception:
            self._check_failed("statement")

    def _hold(self, frames: list, index: int, why: str) -> None:
        """
        Stop relaying at C{frames[index]} until L{_release}.  The client is
        still read (up to L{HOLD_LIMIT}), so that a client hanging up while
        it waits ends its session and its approval request.
        """
        self._waiting = why
        self._held_frames = list(frames[index:])

    def _release(
        self,
        result: object,
        frame: tuple,
        refusal: str | None,
        sqlstate: str = "42501",
    ) -> None:
        """
        The hold on C{frame} ends: forward it (or refuse it with
        C{refusal} and C{sqlstate}), then relay what the client sent
        meanwhile.
        """
        if isinstance(result, Failure):
            self._log.failure(
                "Holding a statement of session {sid}",
                result,
                sid=str(self.session.id),
            )
            refusal = refusal or "the gateway could not check this statement"
        if self._closing or self.session.closed or self._upstream is None:
            return
        self._waiting = None
        held, self._held_frames = self._held_frames, []
        assert held and held[0] is frame
        if refusal is not None:
            self._refuse(frame, refusal, sqlstate=sqlstate)
        else:
            self._sent(frame[0])
            self._forward(self._reader.take_to(frame[2]))
        self._client_gate.resume("held")
        self._relay_frames(held[1:])

    # -- refusals -----------------------------------------------------------

    def _protection(self, classified: Classified, text: str) -> Decision | None:
        """The built-in protections' refusal of these statements, if any."""
        statements = classified.statements
        if not any(statement.sensitive for statement in statements):
            return None  # nearly every statement: no set-up, no allocation
        options = self._target.options
        why = protection_refusal(
            statements, options.upstream_roles(), frozenset(options.settable_roles)
        )
        if why is None:
            return None
        decision = Decision("deny", PROTECTION_RULE, message=why)
        commands = classified.for_text(text).commands
        self.session.event(
            "decision",
            action="deny",
            rule=PROTECTION_RULE,
            message=why,
            commands=[c.as_json() for c in commands],
        )
        self.session.report_decision(decision, commands)
        return decision

    def _refuse_unparseable(self, frame: tuple, classified: Classified) -> None:
        """Answer text the parser rejects as PostgreSQL would: 42601."""
        statement = classified.statements[0] if classified.statements else None
        if statement is None or statement.error is None:
            self._refuse(frame, "the gateway could not parse this statement")
            return
        self._refuse(
            frame,
            statement.error,
            sqlstate=statement.sqlstate or "42601",
            position=statement.position,
            hint=None,
        )

    def _refusal_text(self, decision: Decision) -> str:
        if decision.rule == PROTECTION_RULE:
            return decision.message or ""
        why = f": {decision.message}" if decision.message else ""
        return f'statement refused by gatehouse policy rule "{decision.rule}"{why}'

    def _refuse(
        self,
        frame: tuple,
        message: str,
        sqlstate: str = "42501",
        position: int | None = None,
        hint: str | None = "the statement did not reach the database",
    ) -> None:
        """
        Keep the statement of C{frame} from the target, and have the client
        see an error (C{sqlstate}, 42501 unless said otherwise, with the
        C{position} in the statement if given) exactly where PostgreSQL
        would have sent one.

        The target gets, in its place, a statement that fails to parse and
        names a fresh token; its error is rewritten into the refusal on its
        way back.  So the target itself fails the transaction (or the
        extended-protocol batch up to Sync) just as a refused statement
        would, and the client's replies stay in order.
        """
        token = b"gatehouse_refused_" + os.urandom(6).hex().encode()
        error = codec.ErrorResponse.build(
            "ERROR", sqlstate, message, hint=hint, position=position
        ).encode()
        if frame[0] == _PARSE:
            # Parse keeps its statement name, so later Binds fail as they
            # would after a failed Parse.
            name = codec.Parse.decode(self._reader.body(frame), self._encoding).name
            substitute = codec.Parse(name, token.decode()).encode(self._encoding)
            due = self._ready_expected + 1
        else:
            # A Query, or a FunctionCall: either is answered by an error
            # and ReadyForQuery.
            substitute = codec.Query(token.decode()).encode()
            self._sent(_QUERY)
            due = self._ready_expected
        self._reader.discard_to(frame[2])
        self._refusals[token] = (error, due)
        # The substitute is not recorded as bytes: this event says what
        # the target was sent instead of the refused statement.
        self.session.event(
            "refused-statement",
            token=token.decode(),
            message=message,
            sqlstate=sqlstate,
        )
        self._forward(substitute)

    def _review(
        self, frames: list, index: int, classified: Classified, decision: Decision
    ) -> None:
        frame = frames[index]
        self._hold(frames, index, "approval")
        request, verdict = self.session.request_approval(classified.commands, decision)
        if request is not None:
            how = self.session.approval_instructions(request)
            self._write(
                codec.NoticeResponse.build(
                    "NOTICE",
                    "01000",
                    f"gatehouse: statement held for approval {request.id} "
                    f'(rule "{decision.rule}"); waiting up to '
                    f"{int(decision.timeout)}s",
                    detail=decision.message,
                    hint=how,
                ).encode()
            )

        def decided(result: object) -> None:
            self._verdict = None
            if self._hold_cancelled:
                # The client cancelled it (CancelRequest): the broker marked
                # the request cancelled, so it can never be approved.
                self._hold_cancelled = False
                self._release(None, frame, _CANCELED, sqlstate="57014")
                return
            if isinstance(result, Failure):
                self._release(result, frame, None)
                return
            if result.approved:
                self._release(None, frame, None)
            else:
                self._release(
                    None,
                    frame,
                    f'statement not approved (rule "{decision.rule}"): {result.reason}',
                )

        self._verdict = verdict
        self._verdict_request = request
        verdict.addBoth(decided)

    # -- masking ------------------------------------------------------------

    #: the transaction status of the target's last ReadyForQuery
    _tx_status = b"I"

    def _copy_check(self, classified: Classified, kind: int = _QUERY) -> str | None:
        """Why a COPY to the client cannot be masked, if it cannot."""
        for n, statement in enumerate(classified.statements):
            copy = statement.copy
            if copy is None or not copy.to_client:
                continue
            if copy.format == "binary":
                return (
                    "binary COPY output cannot be masked on this target; "
                    "use FORMAT text or csv"
                )
            if copy.rewrites_values():
                return (
                    "this COPY's DELIMITER, QUOTE or ESCAPE would split values "
                    "that masking must read whole; use the default "
                    "DELIMITER, QUOTE and ESCAPE"
                )
            masker = self.session.masker
            if copy.relation is None and (
                masker.has_column_rules or masker.has_relation_rules
            ):
                return (
                    "COPY (query) TO STDOUT cannot be masked by column; "
                    "use SELECT, or COPY table TO STDOUT"
                )
            if (
                not copy.columns
                and (masker.has_column_rules or masker.has_relation_rules)
                and (
                    kind != _QUERY
                    or n
                    or self._tx_status != b"I"
                    or self._ready_expected > self._ready_seen
                )
            ):
                # Its columns are looked up on the gateway's own connection,
                # which does not see what this session's transaction (or a
                # statement before it) created or changed.
                return (
                    "COPY table TO STDOUT without a column list is masked only "
                    "as a statement of its own, outside a transaction block "
                    "(its columns are looked up outside this session); name "
                    "the columns: COPY table (a, b) TO STDOUT"
                )
        return None

    def _copy_needs_columns(self, classified: Classified) -> bool:
        for statement in classified.statements:
            copy = statement.copy
            if copy is not None and copy.to_client and copy.relation is not None:
                return True
        return False

    def _copy_columns(self, classified: Classified, frame: tuple) -> None:
        """
        Tell the masker which columns the COPY sends, then release the
        held C{frame} (or refuse it).

        The client's session has its own search_path (and temporary
        schema), which the gateway's catalog connection does not share: an
        unqualified name is looked up in every schema, and where tables of
        that name would be masked differently the COPY is refused.
        """
        copy = next(
            s.copy for s in classified.statements if s.copy and s.copy.to_client
        )
        masker = self._masker
        rules = self.session.masker
        if copy.columns or not (rules.has_column_rules or rules.has_relation_rules):
            relation = copy.relation
            names = list(copy.columns) or None
            full = [f"{relation}.{c}" for c in copy.columns] or None
            masker.copy_out(names, copy.format, copy.delimiter, full, copy.header)
            self._release(None, frame, None)
            return
        d = self._factory.catalog(self._target).relation_candidates(copy.relation)

        def known(candidates: list) -> str | None:
            def masked(columns: list) -> tuple:
                return tuple(
                    rules.column_masked(c.rsplit(".", 1)[-1], c) for c in columns
                )

            if len({masked(c) for c in candidates}) > 1:
                return (
                    f"COPY {copy.relation} TO STDOUT is ambiguous for masking: "
                    "tables of that name in several schemas are masked "
                    "differently, and the session's search_path decides; "
                    "name the schema (COPY schema.table) or the columns"
                )
            columns = candidates[0] if candidates else []
            masker.copy_out(
                [c.rsplit(".", 1)[-1] for c in columns] or None,
                copy.format,
                copy.delimiter,
                columns or None,
                copy.header,
            )
            return None

        d.addCallback(known)
        d.addCallbacks(
            lambda refusal: self._release(None, frame, refusal),
            lambda failure: self._release(failure, frame, None),
        )

    # -- forwarding -----------------------------------------------------------

    def _forward(self, data: bytes) -> None:
        upstream = self._upstream
        if upstream is None or upstream.transport is None or not data:
            return
        self.session.byte_counts[_G2U] += len(data)
        send_now(upstream.transport, data)

    def _upstream_data(self, data: bytes) -> None:
        self.session.byte_counts[_U2G] += len(data)
        if self._closing:
            return
        reader = self._upstream_reader
        try:
            frames = reader.feed(data)
        except codec.ProtocolViolation as e:
            self._fatal(
                "08P01",
                "the target sent a malformed message",
                f"upstream protocol violation: {e.message}",
            )
            return
        if not frames:
            return
        if self._upstream_held is not None:
            self._upstream_held.extend(frames)
            return
        self._deliver_checked(frames)

    def _deliver_checked(self, frames: list) -> None:
        try:
            self._deliver(frames)
        except Exception:
            self._check_failed("result")
            return
        if (
            self._waiting == "barrier"
            and self._ready_seen >= self._ready_expected
            and not self._closing
        ):
            # Everything before the held statement has been answered, and
            # the target has said (ParameterStatus) how it reads SQL now.
            self._resume_held()

    def _check_failed(self, what: str) -> None:
        """
        Fail closed on an error while checking a statement or a result (in
        an C{except} block): what was not checked never passes, and the
        session ends saying why.
        """
        self._log.failure(
            "Checking a {what} of session {sid}", what=what, sid=str(self.session.id)
        )
        self._fatal(
            "XX000",
            f"the gateway could not check this {what}; the session is closed",
            f"internal error checking a {what}",
        )

    def _deliver(self, frames: list) -> None:
        """Send complete messages from the target on to the client."""
        reader = self._upstream_reader
        masker = self._masker
        if masker is None and not self._refusals:
            for frame in frames:
                kind = frame[0]
                if kind == _B_READY:
                    self._ready_seen += 1
                elif kind == _B_PARAMETER and not self._parameter(reader.body(frame)):
                    return
                elif kind == _B_COPY_IN:
                    self._copy_in_started()
            self._send_client(reader.take_to(frames[-1][2]))
            return
        describes = self._describes
        out = []
        for index, frame in enumerate(frames):
            kind = frame[0]
            if kind == _B_DATA_ROW and masker is not None:
                # The bulk of a result: only the masker looks at it.
                new_body = masker.message(kind, reader.body(frame))
                if new_body is not None:
                    out.append(reader.take_to(frame[1]))
                    reader.discard_to(frame[2])
                    out.append(codec.encode_message(kind, new_body))
                continue
            replacement = None
            drop = False
            if kind == _B_ERROR and self._refusals:
                replacement = self._refusal_for(reader.body(frame))
            elif kind == _B_PARAMETER:
                if not self._parameter(reader.body(frame)):
                    return
                if masker is not None:
                    masker.encoding = self._encoding
            elif kind == _B_COPY_IN:
                self._copy_in_started()
            if kind == _B_ROWS and masker is not None:
                body = reader.body(frame)
                unknown = masker.describe(body)
                if unknown:
                    unknown = self._factory.catalog(self._target).unknown(unknown)
                    if unknown:
                        out.append(reader.take_to(frame[1]))
                        self._send_client(b"".join(out))
                        self._hold_upstream(frames[index:], unknown)
                        return
                    masker.describe(body, look_up=False)
                renamed = masker.rename(body)
                if renamed is not None:
                    replacement = codec.encode_message(kind, renamed)
            elif masker is not None and kind in _MASKED_TYPES and replacement is None:
                body = reader.body(frame) if kind in _MASKER_BODIES else b""
                new_body = masker.message(kind, body)
                if new_body is not None:
                    replacement = codec.encode_message(kind, new_body)
            if describes and (kind == _B_ROWS or kind == _B_NO_DATA):
                if describes[0] in ("pass", "swallow"):
                    drop = describes.popleft() == "swallow"
            if kind == _B_READY:
                self._ready_seen += 1
                self._tx_status = reader.body(frame)[:1]
                if self._refusals:
                    self._expire_refusals()
                while describes:
                    if describes.popleft() in ("q", "s"):
                        break
                if masker is not None and masker.masked:
                    self.session.masked(masker.masked)
                    masker.masked = 0
            if replacement is not None or drop:
                out.append(reader.take_to(frame[1]))
                reader.discard_to(frame[2])
                if not drop:
                    out.append(replacement)
        end = frames[-1][2]
        if end > reader.consumed:
            out.append(reader.take_to(end))
        if masker is not None and masker.unmaskable:
            # Rows it could not mask were withheld; the result is
            # incomplete, so the session cannot go on as if it were not.
            self._send_client(b"".join(out))
            self._fatal(
                "42501",
                "the gateway could not mask this result; the session is closed",
                "result could not be masked",
            )
            return
        self._send_client(b"".join(out))

    def _copy_in_started(self) -> None:
        """
        The target entered copy-in mode: the Syncs the client sent since
        the statement that started it, up to its CopyDone/CopyFail, will
        get no ReadyForQuery (the barrier counts only answered ones).
        """
        if self._copy_end_syncs is not None:
            ignored = self._copy_end_syncs
        else:
            ignored = self._syncs_since_start
            self._copy_in = True
        self._ready_expected -= ignored
        describes = self._describes
        if describes is not None:
            # the ignored Syncs are the latest ones the masker expects
            i = len(describes) - 1
            while ignored and i >= 0:
                if describes[i] == "s":
                    del describes[i]
                    ignored -= 1
                i -= 1

    def _parameter(self, body: bytes) -> bool:
        """
        Follow a ParameterStatus from the target: how it reads the next
        statement (see L{_reading}).  Always True (the session goes on).
        """
        status = codec.ParameterStatus.decode(body)
        return self._setting(status.name, status.value)

    def _setting(self, name: str, value: str) -> bool:
        if name == "client_encoding":
            python = client_encoding(value)
            self._encoding_safe = python is not None
            if python is not None:
                self._encoding = python
            # else only ASCII texts are read (L{_reading}), in any codec
        elif name == "standard_conforming_strings":
            self._scs_on = value.strip().lower() == "on"
        return True

    def _hold_upstream(self, frames: list, oids: list) -> None:
        """Hold the target's output until the catalog names C{oids}."""
        self._upstream_held = list(frames)
        gate = self._upstream_gate
        gate.pause("catalog")
        d = self._factory.catalog(self._target).lookup_oids(oids)

        def resume(result: object) -> None:
            if self._closing:
                return
            if isinstance(result, Failure):
                # Without column names the masking rules cannot be applied:
                # nothing more of this result may reach the client.
                self._fatal(
                    "58000",
                    "the gateway cannot apply its masking rules now",
                    f"catalog lookup failed: {result.getErrorMessage()}",
                )
                return
            held, self._upstream_held = self._upstream_held, None
            gate.resume("catalog")
            if held:
                self._deliver_checked(held)

        d.addBoth(resume)

    def _refusal_for(self, body: bytes) -> bytes | None:
        for token, (error, _) in self._refusals.items():
            if token in body:
                del self._refusals[token]
                return error
        return None

    def _expire_refusals(self) -> None:
        seen = self._ready_seen
        stale = [t for t, (_, due) in self._refusals.items() if due <= seen]
        for token in stale:
            del self._refusals[token]

    def _send_client(self, data: bytes) -> None:
        if not data:
            return
        try:
            self.session.data(_G2C, data)
        except RecordingFailed:
            return
        send_now(self.transport, data)

    def _upstream_lost(self, reason: Failure) -> None:
        self._upstream = None
        if self._closing:
            return
        if self._client_terminated:
            # The target hung up because the client said goodbye.
            self._abort()
            return
        why = reason.getErrorMessage()
        self._fatal(
            "08006",
            f'the connection to target "{self._target.name}" was lost',
            f"upstream connection lost: {why}",
        )

    def cancel_requested(self, peer: str) -> None:
        """
        A client sent this connection's cancel key.  A statement the
        gateway holds (for approval, for the target's answers, or while it
        is classified) is cancelled here: its approval request is
        cancelled for good, and the client gets 57014 in its place; the
        session goes on.  Whatever the target is still running is
        cancelled there.
        """
        if self._upstream is None or self.session is None or self._closing:
            return
        held = self._waiting if self._held_frames else None
        if held not in ("approval", "barrier", "classification"):
            held = None
        outstanding = self._ready_seen < self._ready_expected or self._unsynced
        request = self._verdict_request
        self.session.event(
            "cancel-request",
            peer=peer,
            held=held,
            approval=request.id if held == "approval" and request else None,
        )
        if held == "approval":
            if self._verdict is not None:
                self._hold_cancelled = True
                self._verdict.cancel()
        elif held is not None:
            self._release(None, self._held_frames[0], _CANCELED, sqlstate="57014")
        if outstanding:
            self._cancel_upstream()

    def _cancel_upstream(self) -> None:
        """Ask the target to cancel what this session's backend runs."""
        pid, secret = self._upstream_key
        send_cancel(
            self._factory.reactor, self._target.options, pid, secret
        ).addErrback(
            lambda f: self._log.warn(
                "Cancel to target failed: {why}", why=f.getErrorMessage()
            )
        )

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
