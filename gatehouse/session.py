"""
The Session hub: the one object each protocol handler talks to.

A protocol creates a L{Session} through L{SessionHub.open} when a client
connects, reports every chunk that crosses with L{Session.data}, asks
L{Session.authenticate} to check the client's token, and ends with
L{Session.close}.  The session records, indexes and (later) applies policy;
the protocol never reaches the recorder, index or verifier itself.

Nothing is written to disk before the client's token is verified: until
then the session's records wait in memory (bounded: see
L{PendingRecording}), and a login refused before that point is an event
(a log line and a metric), not a recording or an index row.
"""

from __future__ import annotations

import datetime
import json
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, cast

from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IDelayedCall, IPushProducer, IReactorTime
from twisted.logger import Logger, LogLevel
from twisted.python.failure import Failure

import gatehouse
from gatehouse import logs
from gatehouse.config import DEFAULT_MAX_TOKEN_BYTES, TargetConfig
from gatehouse.credentials import BearerToken, CredentialCheckers, JWTChecker
from gatehouse.identity import AuthenticationError, Identity, TokenVerifier
from gatehouse.ids import new_session_id
from gatehouse.policy import Command, Decision, Policy, SessionPolicy
from gatehouse.policy.approval import Approval, ApprovalBroker, ApprovalRequest, Verdict
from gatehouse.recording.format import Direction, RecordType
from gatehouse.recording.index import CommandRow, SessionIndex, SessionRow
from gatehouse.recording.interfaces import (
    IRecorder,
    ISessionRecording,
    RecordingFailed,
    SealInfo,
)

if TYPE_CHECKING:
    from gatehouse.metrics import GatewayMetrics
    from gatehouse.policy.config import MaskingScope
    from gatehouse.policy.masking import Masker

_DATA = RecordType.DATA
_EVENT = RecordType.EVENT
_NO_POLICY = Decision("deny", "unauthenticated", message="not authenticated")

#: L{TargetAccessDenied.kind}: no target of the session's protocol has the name
UNKNOWN_TARGET = "unknown-target"
#: L{TargetAccessDenied.kind}: the identity's groups may not reach the target
TARGET_DENIED = "target-denied"


class TargetAccessDenied(AuthenticationError):
    """
    The token was good, but its identity may not reach the target it
    asked for: the core's decision, made before any policy applies, so a
    protocol that forgets to check access still cannot fail open.

    @ivar kind: L{UNKNOWN_TARGET} or L{TARGET_DENIED}.
    @ivar target: the target name the client asked for (None: none).
    @ivar subject: the identity's subject.
    """

    def __init__(self, reason: str, kind: str, target: str | None, subject: str):
        super().__init__(reason, kind)
        self.target = target
        self.subject = subject


class PendingRecording:
    """
    What a session records before it has something worth recording (an
    authenticated identity): records kept in memory, in order, written to
    the real recording by L{SessionHub.start_recording}, or dropped with
    the session if its login is refused.

    Protocols bound what a client may send before authentication; this
    bound is the backstop (L{RecordingFailed} past C{limit} bytes).

    @ivar meta: the recording's META fields, taken at accept.
    """

    directory: str | None = None
    #: bytes held at most (payloads, and L{OVERHEAD} per record)
    LIMIT = 1 << 20
    OVERHEAD = 64

    def __init__(self, meta: dict[str, Any], limit: int = LIMIT):
        self.meta = meta
        #: [type, direction, channel, payload] per record held
        self.records: list[list[Any]] = []
        self.producers: list[IPushProducer] = []
        self.failure_waiters: list[Deferred[str]] = []
        self._limit = limit
        self._held = 0

    def record(self, rtype: int, direction: int, channel: int, payload: bytes) -> int:
        """
        Hold a record; its number here is not its number in the file.  Data
        in the same direction as the record before joins it (a client that
        trickles its startup packet byte by byte costs bytes, not records).
        """
        records = self.records
        last = records[-1] if records else None
        if (
            rtype == _DATA
            and last is not None
            and last[0] == _DATA
            and last[1] == direction
            and last[2] == channel
        ):
            self._held += len(payload)
            self._check()
            if type(last[3]) is not bytearray:
                last[3] = bytearray(last[3])
            last[3] += payload
        else:
            self._held += len(payload) + self.OVERHEAD
            self._check()
            records.append([rtype, direction, channel, payload])
        return len(records)

    def _check(self) -> None:
        if self._held > self._limit:
            raise RecordingFailed(
                f"more than {self._limit} bytes before authentication"
            )

    def registerProducer(self, producer: IPushProducer) -> None:
        """Kept for the real recording (nothing is written before)."""
        self.producers.append(producer)

    def notifyFailure(self) -> Deferred[str]:
        """Fires if the real recording fails, once there is one."""
        d: Deferred[str] = Deferred()
        self.failure_waiters.append(d)
        return d

    def close(self, reason: str) -> Deferred[None]:
        """Drop what was held: the session ends unrecorded."""
        self.records = []
        return succeed(None)


def _utc(seconds: float) -> str:
    """C{seconds} since the epoch as ISO 8601 UTC, to the second."""
    moment = datetime.datetime.fromtimestamp(seconds, datetime.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


class Session:
    """
    One client connection through the gateway, from accept to close.

    @ivar id: the session id (UUIDv7).
    @ivar identity: who is speaking, once authenticated.
    @ivar target: the target name, once chosen.
    """

    _log = Logger()

    def __init__(
        self,
        hub: SessionHub,
        session_id: uuid.UUID,
        protocol: str,
        listener: str,
        client_address: str,
        recording: ISessionRecording | PendingRecording,
    ):
        self._hub = hub
        self.id = session_id
        self.protocol = protocol
        self.listener = listener
        self.client_address = client_address
        self.recording = recording
        #: whether the session is being recorded on disk (see
        #: L{SessionHub.start_recording}); False while its login is pending
        self.recorded = not isinstance(recording, PendingRecording)
        self.identity: Identity | None = None
        self.target: str | None = None
        self.closed = False
        self._close_result: Deferred[object] | None = None
        #: bytes per Direction value (the protocol counts the upstream
        #: directions itself: those bytes are not recorded)
        self.byte_counts = [0, 0, 0, 0, 0]
        #: bytes of data recorded (for metrics)
        self.recorded_bytes = 0
        #: when the session started (clock seconds)
        self.started = hub.clock.seconds()
        #: sequence number of the last DATA record, by channel
        self._last_seq: dict[int, int] = {}
        self._record = recording.record
        self._terminators: list[Callable[[str], object]] = []
        #: the rules that apply to this session, once authenticated
        self.policy: SessionPolicy | None = None
        #: the masking rules that apply, once authenticated (None: none)
        self.masker: Masker | None = None
        #: whether data is recorded (policy scopes may turn it off)
        self.records_data = True
        self.masked_values = 0
        #: the upstream account the session logs in as, once chosen
        self.upstream_role: str | None = None
        self._approvals: dict[str, Deferred[Verdict]] = {}
        #: the channel of each approval request not on channel 0
        self._approval_channels: dict[str, int] = {}
        self._requesting_channel = 0
        #: what the client is told when the gateway ends the session
        #: itself (None: the protocol's shutdown message)
        self.end_message: str | None = None
        self._token_timer: IDelayedCall | None = None

    @property
    def clock(self) -> IReactorTime:
        """The clock everything in this session is timed by."""
        return self._hub.clock

    @property
    def max_token_bytes(self) -> int:
        """The longest token the verifier reads (bounds a password message)."""
        return getattr(self._hub.verifier, "max_token_bytes", DEFAULT_MAX_TOKEN_BYTES)

    def data(self, direction: Direction, payload: bytes, channel: int = 0) -> None:
        """
        Record bytes that crossed the gateway.  Call it for every chunk,
        before forwarding it.

        @raise gatehouse.recording.interfaces.RecordingFailed: the recording
            broke; the caller must stop forwarding and close.
        """
        self.byte_counts[direction] += len(payload)
        if self.records_data:
            self._last_seq[channel] = self._record(_DATA, direction, channel, payload)
            self.recorded_bytes += len(payload)

    @property
    def last_seq(self) -> int:
        """The sequence number of channel 0's last DATA record (-1: none)."""
        return self.last_seq_of(0)

    def last_seq_of(self, channel: int) -> int:
        """
        The sequence number of C{channel}'s last DATA record (-1: none),
        or of the request event anchored after it (L{event}): the record
        a command on that channel points to.
        """
        return self._last_seq.get(channel, -1)

    def event(self, name: str, /, *, channel: int = 0, **fields: object) -> int:
        """
        Record a gateway event (decision, error, notice) as JSON, on
        C{channel} when it concerns one (an SSH channel, an HTTP stream).

        @return: its sequence number (for L{anchor}).
        """
        fields["event"] = name
        seq: int = self._record(
            _EVENT,
            0,
            channel,
            json.dumps(fields, sort_keys=True, default=str).encode(),
        )
        return seq

    def anchor(self, channel: int, seq: int) -> None:
        """
        The event C{seq} is a request that carries a command but no bytes
        of the client's stream (an SSH C{shell} request, a forward's
        destination): commands indexed next on C{channel} point to it
        (see docs/recording-format.md, the index).
        """
        self._last_seq[channel] = seq

    def authenticate(
        self, credentials: object, target: str | None = None
    ) -> Deferred[Identity]:
        """
        Check the client's credentials and bind the identity to this
        session, if it may reach C{target} (see L{SessionHub.access_refusal}).

        @param credentials: what the client presented: credentials for one
            of the hub's checkers (L{gatehouse.credentials}), or a token
            (C{str} or C{bytes}: a L{BearerToken}).

        The outcome is recorded; the credentials never are.  A refused target is
        recorded too (a C{target-refused} event): the token was good.

        @return: Deferred firing with the L{Identity}, or failing with
            L{AuthenticationError} (whose reason is for operators only):
            L{TargetAccessDenied} when the identity may not reach C{target}.
        """
        if isinstance(credentials, (str, bytes)):
            credentials = BearerToken(credentials)
        d = self._hub.checkers.check(credentials)

        def ok(identity: Identity) -> Identity:
            self.identity = identity
            if target is not None:
                self.target = target
            refusal = self._hub.access_refusal(self.protocol, identity, target)
            if refusal is None:
                self._hub.apply_policy(self)
            # A refused session is recorded too (its token was good): with
            # no policy, it can decide nothing but deny.
            self._hub.start_recording(self)
            self.event(
                "authenticated",
                subject=identity.subject,
                name=identity.name,
                issuer=identity.issuer,
                groups=list(identity.groups),
                target=self.target,
                recorded=self.records_data,
                masking=self.masker is not None,
            )
            self._hub.identified(self)
            logs.emit(
                "session.start",
                "Session {session_id} started: {subject} to {target}"
                " from {client_address}",
                logger=self._log,
                session_id=str(self.id),
                protocol=self.protocol,
                listener=self.listener,
                subject=logs.summary(identity.subject),
                target=logs.summary(self.target or ""),
                client_address=self.client_address,
            )
            if refusal is not None:
                self.event(
                    "target-refused",
                    kind=refusal.kind,
                    target=target,
                    reason=refusal.reason,
                )
                raise refusal
            self._watch_token()
            return identity

        def failed(failure: Failure) -> Failure:
            failure.trap(AuthenticationError)
            self.event("authentication-failed", reason=str(failure.value))
            kind = getattr(failure.value, "kind", "other")
            logs.emit(
                "auth.failure",
                "Authentication failed for {client_address}: {reason}",
                LogLevel.warn,
                logger=self._log,
                session_id=str(self.id),
                protocol=self.protocol,
                client_address=self.client_address,
                reason=kind,
                detail=logs.summary(str(failure.value)),
            )
            metrics = self._hub.metrics
            if metrics is not None:
                metrics.auth_failure(kind)
            return failure

        return d.addCallbacks(ok, failed)

    def command_seen(
        self,
        kind: str,
        text: str,
        objects: tuple[str, ...] = (),
        decision: str = "allow",
        channel: int = 0,
    ) -> None:
        """
        Index a command (SQL statement, exec line, API request) so auditors
        can find the session by it.  Its bytes are already recorded, on
        C{channel}: the row points to that channel's last data record.
        """
        index = self._hub.index
        if index is None:
            return
        index.command_seen(
            CommandRow(
                session_id=str(self.id),
                seq=self.last_seq_of(channel),
                channel=channel,
                at=self._hub.clock.seconds(),
                kind=kind,
                text=text,
                decision=decision,
                objects=objects,
            )
        )

    def decide(
        self,
        commands: Sequence[Command],
        shape: str | None = None,
        own: Callable[[], Sequence[Command]] | None = None,
        channel: int = 0,
        shown: Sequence[Command] | None = None,
    ) -> Decision:
        """
        The policy's decision for commands the client sent together (the
        strictest of theirs).  Anything but allow is recorded.  Fails
        closed: no policy (not authenticated) means deny.

        @param shape: the protocol's key for texts that differ only in
            constants (see L{SessionPolicy.decide_all}).
        @param own: when C{commands} were classified from another text of
            C{shape}, gives the client's own commands: they are decided
            when the policy reads text, and are what the recording shows.
        @param channel: the channel the commands came on; their decision
            event is recorded there.
        @param shown: the commands as the recording shows them, when the
            policy reads others (L{gatehouse.gate.Proposal.shown}).
        """
        policy = self.policy
        if policy is None:
            return _NO_POLICY
        if own is not None and policy.reads_text:
            commands, own = own(), None
        decision = policy.decide_all(commands, shape)
        if decision.action != "allow":
            if shown is not None:
                commands = shown
            elif own is not None:
                commands = own()
            self.event(
                "decision",
                channel=channel,
                action=decision.action,
                rule=decision.rule,
                message=decision.message,
                commands=[c.as_json() for c in commands],
            )
        self.report_decision(decision, commands)
        return decision

    def report_decision(self, decision: Decision, commands: Sequence[Command]) -> None:
        """
        Count a decision, and log it unless it is C{allow}; its event is
        the caller's to record (L{decide} does).
        """
        metrics = self._hub.metrics
        if metrics is not None:
            metrics.decision(
                self.protocol, self.target or "", decision.action, decision.rule
            )
        if decision.action == "allow":
            return
        first = commands[0] if commands else None
        logs.emit(
            "decision",
            "Session {session_id}: {action} by rule {rule} for {subject}"
            " on {target}: {command}",
            LogLevel.info if decision.action == "review" else LogLevel.warn,
            logger=self._log,
            session_id=str(self.id),
            subject=logs.summary(self.identity.subject if self.identity else ""),
            target=logs.summary(self.target or ""),
            client_address=self.client_address,
            action=decision.action,
            rule=decision.rule or "default",
            command_kind=first.kind if first is not None else None,
            command=logs.summary(first.text) if first is not None else None,
            commands=len(commands),
        )

    def request_approval(
        self, commands: Sequence[Command], decision: Decision, channel: int = 0
    ) -> tuple[ApprovalRequest | None, Deferred[Verdict]]:
        """
        Ask approvers about commands held for review (that came on
        C{channel}: the approval's events are recorded there).

        @return: the request (its C{id} for the client) and a Deferred
            firing with the broker's verdict.  With no broker the verdict
            is an immediate denial.
        """
        broker = self._hub.broker
        if broker is None or self.identity is None or not decision.approvers:
            why = (
                "no approvals on this gateway"
                if broker is None
                else "nobody may approve it: the policy names no approvers"
            )
            return None, succeed(Verdict(approved=False, reason=why, request=None))
        # The broker reports the request (its "requested" event) before
        # it returns it: that event finds the channel here.
        self._requesting_channel = channel
        try:
            request, d = broker.request(
                str(self.id),
                self.protocol,
                self.target or "",
                self.identity,
                tuple(commands),
                decision,
            )
        finally:
            self._requesting_channel = 0
        if channel:
            self._approval_channels[request.id] = channel
        self._approvals[request.id] = d

        def done(verdict: Verdict) -> Verdict:
            self._approvals.pop(request.id, None)
            return verdict

        d.addBoth(done)
        return request, d

    def approval_channel(self, request_id: str) -> int:
        """The channel whose command the approval request C{request_id} holds."""
        return self._approval_channels.get(request_id, self._requesting_channel)

    def approval_instructions(self, request: ApprovalRequest) -> str:
        """How approvers act on C{request}, for the waiting client."""
        broker = self._hub.broker
        return broker.instructions(request) if broker is not None else ""

    def upstream_login(self, role: str, via: str) -> None:
        """
        The gateway logs in to the target as C{role} (an upstream account
        such as a PostgreSQL role), chosen by C{via} (which credentials
        entry matched, or C{"default"}): recorded and indexed.
        """
        self.upstream_role = role
        self.event("upstream-login", role=role, credentials=via)
        index = self._hub.index
        if index is not None:
            index.session_upstream(str(self.id), role)

    def upstream_connected(self, seconds: float) -> None:
        """The gateway's session on the target was ready after C{seconds}."""
        metrics = self._hub.metrics
        if metrics is not None:
            metrics.upstream_connected(self.protocol, self.target or "", seconds)

    def upstream_failed(self, reason: str) -> None:
        """The gateway could not open its connection to the target."""
        self.event("upstream-failed", reason=reason)
        metrics = self._hub.metrics
        if metrics is not None:
            metrics.upstream_error(self.protocol, self.target or "")

    def masked(self, count: int) -> None:
        """C{count} more values were masked before reaching the client."""
        self.masked_values += count
        metrics = self._hub.metrics
        if metrics is not None:
            metrics.masked(self.protocol, self.target or "", count)

    def recording_problem(self) -> str | None:
        """See L{SessionHub.recording_problem}."""
        return self._hub.recording_problem()

    def on_terminate(self, callback: Callable[[str], object]) -> None:
        """
        Call C{callback(reason)} when the gateway ends the session itself
        (shutdown); the protocol tells its client and disconnects.
        """
        self._terminators.append(callback)

    def _watch_token(self) -> None:
        """
        End the session when the gateway stops accepting its token, unless
        its target lets sessions outlive their tokens.
        """
        until = self.identity.valid_until if self.identity is not None else None
        if until is None or not self._hub.ends_at_token_expiry(self.target):
            return
        delay = max(0.0, until - self.clock.seconds())
        self._token_timer = self.clock.callLater(delay, self._token_expired)

    def _token_expired(self) -> None:
        self._token_timer = None
        if self.closed:
            return
        identity = self.identity
        if identity is None or identity.valid_until is None:
            return
        expires = identity.expires_at
        when = _utc(expires if expires is not None else identity.valid_until)
        self.end_message = (
            f"the session's token expired at {when}; reconnect with a fresh token"
        )
        self.event(
            "token-expired", expires_at=expires, valid_until=identity.valid_until
        )
        self._log.info(
            "Session {id} of {subject}: token expired at {when}; ending it",
            id=str(self.id),
            subject=identity.subject,
            when=when,
        )
        # A close without a final seal is logged by close() itself.
        self.terminate(f"token expired at {when}").addErrback(lambda failure: None)

    def terminate(self, reason: str) -> Deferred[object]:
        """End the session from the gateway's side; see L{on_terminate}."""
        if self.closed:
            return self.close(reason)
        for callback in self._terminators:
            try:
                callback(reason)
            except Exception:
                self._log.failure("Terminating session {id}", id=str(self.id))
        return self.close(reason)

    def registerProducer(self, producer: IPushProducer) -> None:
        """
        Pause C{producer} (a transport, or one reason on it) while the
        recording's write backlog is high: memory stays bounded when the
        disk is slower than the network.
        """
        self.recording.registerProducer(producer)

    def on_failure(self, callback: Callable[[str], object]) -> None:
        """
        Call C{callback(reason)} if the recording fails.  Protocols abort
        the connection then: nothing may cross unrecorded.
        """
        _deferred(self.recording.notifyFailure()).addCallback(callback)

    def close(self, reason: str) -> Deferred[object]:
        """
        End the session: record the reason and seal the recording.

        Safe to call more than once; later calls return the first result.

        @return: Deferred firing with the final L{SealInfo} when durable.
        """
        if self._close_result is not None:
            return self._close_result
        if self._token_timer is not None and self._token_timer.active():
            self._token_timer.cancel()
        self._token_timer = None
        # Cancelled while the session is still open, so the recording
        # holds how each of its approval requests ended.
        broker = self._hub.broker
        if broker is not None:
            for request_id in list(self._approvals):
                broker.cancel(request_id, f"session ended: {reason}")
        self.closed = True
        d = _deferred(self.recording.close(reason))
        self._close_result = Deferred()

        def done(result: object) -> object:
            self._hub.session_closed(self, reason)
            if isinstance(result, Failure):
                self._log.warn(
                    "Session {id} closed without a final seal: {why}",
                    id=str(self.id),
                    why=result.getErrorMessage(),
                )
            return result

        d.addBoth(done).chainDeferred(self._close_result)
        return self._close_result

    def _start_recording(self, recording: ISessionRecording) -> None:
        """
        Move from the L{PendingRecording} to C{recording}: what was held
        is recorded first, in order (data only if the policy records it).
        """
        pending = self.recording
        assert isinstance(pending, PendingRecording)
        for rtype, direction, channel, payload in pending.records:
            if rtype == _DATA and not self.records_data:
                continue
            seq = recording.record(rtype, direction, channel, bytes(payload))
            if rtype == _DATA:
                self._last_seq[channel] = seq
        pending.records = []
        self.recording = recording
        self._record = recording.record
        self.recorded = True
        for producer in pending.producers:
            recording.registerProducer(producer)
        for waiter in pending.failure_waiters:
            _deferred(recording.notifyFailure()).chainDeferred(waiter)


def _deferred(result: object) -> Deferred[Any]:
    """
    What an L{ISessionRecording} method returns: its interface says
    C{object}, its documentation a L{Deferred}.
    """
    return cast("Deferred[Any]", result)


#: how sessions end that the client chose to end before logging in
_QUIET_ENDS = frozenset(
    {"client disconnected", "client ended the session before authenticating"}
)


def refusal_kind(reason: str) -> str:
    """
    The metric label for a refusal reason: its fixed part (before any
    C{":"}, which the gateway's reasons put before the details), as a
    slug such as C{authentication_timeout} or C{too_many_connections}.
    """
    head = reason.split(":", 1)[0].strip().lower()
    slug = "".join(c if c.isalnum() else "_" for c in head).strip("_")
    return slug[:64] or "unknown"


class SessionHub:
    """
    Makes sessions and keeps the index in step with them.

    @param index: the session index (L{gatehouse.recording.index.SessionIndex}),
        or None to run without one.
    @param targets: the targets sessions may reach: L{Session.authenticate}
        refuses any other (none given: every target is unknown).
    @param checkers: the credentials checkers L{Session.authenticate} asks;
        by default one L{JWTChecker} of C{verifier}.
    """

    _log = Logger()

    def __init__(
        self,
        gateway_id: str,
        recorder: IRecorder,
        verifier: TokenVerifier,
        clock: IReactorTime,
        index: SessionIndex | None = None,
        *,
        policy: Policy | None = None,
        masking: Sequence[MaskingScope] = (),
        broker: ApprovalBroker | None = None,
        metrics: GatewayMetrics | None = None,
        token_expiry_exempt: Iterable[str] = (),
        targets: Iterable[TargetConfig] = (),
        checkers: CredentialCheckers | None = None,
    ):
        self.gateway_id = gateway_id
        self.recorder = recorder
        self.verifier = verifier
        #: how identities are established (by default: JWTs, by C{verifier})
        self.checkers = (
            checkers
            if checkers is not None
            else CredentialCheckers([JWTChecker(verifier)])
        )
        self.clock = clock
        self.index = index
        self.policy = policy if policy is not None else Policy()
        self.masking = tuple(masking)
        self.broker = broker
        self.metrics = metrics
        self.sessions: dict[str, Session] = {}
        #: bytes recorded by sessions that ended
        self.recorded_bytes_closed = 0
        if metrics is not None and hasattr(metrics, "watch_recorded_bytes"):
            metrics.watch_recorded_bytes(self.recorded_bytes)
        #: targets whose sessions outlive their tokens (the targets'
        #: end_session_at_token_expiry: false)
        self.token_expiry_exempt = frozenset(token_expiry_exempt)
        #: the targets sessions may reach, by name (a reload replaces it)
        self.targets: Mapping[str, TargetConfig] = {t.name: t for t in targets}
        observe = getattr(recorder, "observe_seals", None)
        if observe is not None and index is not None:
            observe(self._sealed)
        observe_failures = getattr(index, "observe_failures", None)
        if observe_failures is not None:
            observe_failures(self._index_failed)
        if broker is not None:
            broker.observe(self._approval_event)

    def access_refusal(
        self, protocol: str, identity: Identity, target: str | None
    ) -> TargetAccessDenied | None:
        """
        Why C{identity} may not reach C{target} over C{protocol} (no such
        target of that protocol, or none of its groups is allowed), or
        None when it may.  Fails closed: no target, no access.
        """
        config = self.targets.get(target) if target is not None else None
        if config is None or config.protocol != protocol:
            return TargetAccessDenied(
                f"unknown target {target!r}", UNKNOWN_TARGET, target, identity.subject
            )
        if not config.allows(identity.groups):
            return TargetAccessDenied(
                f"identity not allowed for target {target!r}",
                TARGET_DENIED,
                target,
                identity.subject,
            )
        return None

    def ends_at_token_expiry(self, target: str | None) -> bool:
        """Whether sessions on C{target} end when their token expires."""
        return target not in self.token_expiry_exempt

    def apply_policy(self, session: Session) -> None:
        """Resolve the rules, masking and recording scope of a session."""
        groups = session.identity.groups if session.identity is not None else ()
        target = session.target or ""
        session.policy = self.policy.for_session(groups, target, session.protocol)
        session.records_data = self.policy.records(groups, target, session.protocol)
        rules = [
            s.rule for s in self.masking if s.applies(groups, target, session.protocol)
        ]
        if rules:
            from gatehouse.policy.masking import Masker

            session.masker = Masker(rules)

    def _approval_event(
        self, event: str, request: ApprovalRequest, vote: Approval | None
    ) -> None:
        session = self.sessions.get(request.session_id)
        fields: dict[str, object] = {
            "approval_id": request.id,
            "state": request.state,
            "rule": request.rule,
        }
        if event == "requested":
            fields.update(
                approvers=list(request.approvers),
                approvals_required=request.approvals_required,
                expires=request.expires,
                commands=[c.text for c in request.commands],
            )
        if vote is not None:
            fields.update(
                approver=vote.subject,
                approver_name=vote.name,
                approved=vote.approved,
                comment=vote.comment,
            )
        if request.reason:
            fields["reason"] = request.reason
        if session is not None and not session.closed:
            try:
                session.event(
                    f"approval-{event}",
                    channel=session.approval_channel(request.id),
                    **fields,
                )
            except Exception:
                self._log.failure("Recording approval {id}", id=request.id)
        if self.index is not None:
            self.index.approval_changed(request)

    def _index_failed(
        self, session_id: str, what: str, error: str, placeholder: bool
    ) -> None:
        """
        The index could not store something about a session: say so in
        that session's recording (the evidence), if it is still open.
        """
        session = self.sessions.get(session_id)
        if session is None or session.closed:
            self._log.warn(
                "Index entry lost for closed session {id}: {what}: {error}",
                id=session_id,
                what=what,
                error=error,
            )
            return
        try:
            session.event(
                "index-write-failed",
                what=what,
                error=error,
                placeholder=placeholder,
            )
        except Exception:
            self._log.failure("Recording an index failure of {id}", id=session_id)

    def open(self, protocol: str, listener: str, client_address: str) -> Session:
        """
        Start a session for a new client connection.  Nothing is written
        yet: see L{start_recording}, which refuses the session if it cannot
        be recorded; a protocol may ask L{recording_problem} earlier.
        """
        session_id = new_session_id(self.clock.seconds())
        meta = {
            "session_id": str(session_id),
            "gateway_id": self.gateway_id,
            "gateway_version": gatehouse.__version__,
            "protocol": protocol,
            "listener": listener,
            "client_address": client_address,
            "started": self.clock.seconds(),
        }
        session = Session(
            self,
            session_id,
            protocol,
            listener,
            client_address,
            PendingRecording(meta),
        )
        self.sessions[str(session_id)] = session
        return session

    def recording_problem(self) -> str | None:
        """
        Why a new session could not be recorded now (no valid signing key,
        recording disk below its reserve), or None.  A protocol asks before
        it spends anything on a client (once the client can read the
        answer, e.g. after TLS); L{start_recording} refuses anyway.
        """
        open_problem = getattr(self.recorder, "open_problem", None)
        return open_problem() if open_problem is not None else None

    def start_recording(self, session: Session) -> None:
        """
        The session has something worth recording (its client's token was
        verified): open its recording and index row, and record what it
        held since the connection was accepted.

        @raise gatehouse.recording.interfaces.RecordingUnavailable: no
            recording may start now (no valid signing key).
        """
        if session.recorded:
            return
        pending = session.recording
        assert isinstance(pending, PendingRecording)
        meta = pending.meta
        session._start_recording(self.recorder.open(session.id, meta))
        if self.metrics is not None:
            self.metrics.session_opened(session.protocol)
        if self.index is not None:
            self.index.session_opened(self._row(session, meta["started"]))

    def refused(
        self,
        protocol: str,
        listener: str,
        client_address: str,
        reason: str,
        session_id: str | None = None,
    ) -> None:
        """
        A client was refused before its session had anything worth
        recording (no verified token): one log line and one count by
        reason, nothing on disk.  C{session_id} (never indexed) ties the
        line to the connection's C{auth.failure} line, if any.
        """
        quiet = reason in _QUIET_ENDS
        logs.emit(
            "login.refused",
            "Client {client_address} on {listener} left before logging in: {reason}"
            if quiet
            else "Login refused from {client_address} on {listener}: {reason}",
            LogLevel.info if quiet else LogLevel.warn,
            logger=self._log,
            session_id=session_id,
            client_address=client_address,
            listener=listener,
            protocol=protocol,
            reason=logs.summary(reason),
            kind=refusal_kind(reason),
        )
        if self.metrics is not None:
            self.metrics.login_refused(protocol, refusal_kind(reason))

    def _row(self, session: Session, started: float) -> SessionRow:
        identity = session.identity
        return SessionRow(
            id=str(session.id),
            gateway_id=self.gateway_id,
            protocol=session.protocol,
            target=session.target,
            listener=session.listener,
            subject=identity.subject if identity else None,
            display_name=identity.name if identity else None,
            issuer=identity.issuer if identity else None,
            groups=tuple(identity.groups) if identity else (),
            client_address=session.client_address,
            started=started,
            directory=session.recording.directory or "",
        )

    def identified(self, session: Session) -> None:
        """The session learnt who is speaking: update the index."""
        if self.metrics is not None:
            self.metrics.session_identified(session.protocol, session.target or "")
        if self.index is not None:
            self.index.session_identified(
                str(session.id), session.identity, session.target
            )

    def _sealed(self, info: SealInfo) -> None:
        if self.index is None:
            return
        self.index.segment_sealed(
            info.session_id,
            info.segment_index,
            info.link,
            info.final,
            info.record_count,
        )

    def recorded_bytes(self) -> int:
        """Bytes of data recorded so far, by open and ended sessions."""
        live = sum(s.recorded_bytes for s in self.sessions.values())
        return self.recorded_bytes_closed + live

    def session_closed(self, session: Session, reason: str) -> None:
        """Forget a closed session, index and log its end."""
        self.sessions.pop(str(session.id), None)
        if not session.recorded:
            self.refused(
                session.protocol,
                session.listener,
                session.client_address,
                reason,
                session_id=str(session.id),
            )
            return
        self.recorded_bytes_closed += session.recorded_bytes
        duration = self.clock.seconds() - session.started
        if self.metrics is not None:
            self.metrics.session_closed(session.protocol, session.target, duration)
        counts = session.byte_counts
        identity = session.identity
        logs.emit(
            "session.end",
            "Session {session_id} ended after {duration} s: {reason}",
            logger=self._log,
            session_id=str(session.id),
            protocol=session.protocol,
            listener=session.listener,
            subject=logs.summary(identity.subject) if identity else None,
            target=logs.summary(session.target) if session.target else None,
            client_address=session.client_address,
            authenticated=identity is not None,
            reason=logs.summary(reason),
            duration=round(duration, 3),
            bytes_from_client=counts[Direction.CLIENT_TO_GATEWAY],
            bytes_to_client=counts[Direction.GATEWAY_TO_CLIENT],
            bytes_to_upstream=counts[Direction.GATEWAY_TO_UPSTREAM],
            bytes_from_upstream=counts[Direction.UPSTREAM_TO_GATEWAY],
        )
        if self.index is not None:
            counts = session.byte_counts
            self.index.session_closed(
                str(session.id),
                ended=self.clock.seconds(),
                reason=reason,
                bytes_from_client=counts[Direction.CLIENT_TO_GATEWAY],
                bytes_to_client=counts[Direction.GATEWAY_TO_CLIENT],
                bytes_to_upstream=counts[Direction.GATEWAY_TO_UPSTREAM],
                bytes_from_upstream=counts[Direction.UPSTREAM_TO_GATEWAY],
                masked_values=session.masked_values,
            )

    def close_all(self, reason: str) -> Deferred:
        """Close every open session (daemon shutdown)."""
        from twisted.internet.defer import DeferredList

        ds = [s.terminate(reason) for s in list(self.sessions.values())]
        if not ds:
            return succeed(None)
        return DeferredList(ds, consumeErrors=True)
