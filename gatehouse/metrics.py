"""
Prometheus metrics of a gateway: sessions, authentication failures,
decisions, approvals, masking, recording, signing keys and upstream
connections.

No series has an empty label: a session whose target is not known yet
counts under target C{"unidentified"}, a decision without a rule under
rule C{"default"}, and authentication failures under one of the fixed
L{AUTH_REASONS}.

L{GatewayMetrics} keeps its own L{CollectorRegistry}, so several gateways
(or tests) in one process never share counters; the admin API serves it at
C{/metrics}.
"""

from __future__ import annotations

from collections import Counter as _Tally
from collections.abc import Callable
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily

from gatehouse.recording.interfaces import SEGMENT_UNAVAILABLE, SPACE_EXHAUSTED

__all__ = ["AUTH_REASONS", "OUTCOMES", "UNIDENTIFIED", "GatewayMetrics"]

#: How an approval request can end: the C{outcome} label's values.
OUTCOMES = ("approved", "denied", "expired", "cancelled")

#: Why a token was refused: the C{reason} label's values (see
#: L{gatehouse.identity.failure_kind}).
AUTH_REASONS = (
    "malformed",
    "signature",
    "expired",
    "not_yet_valid",
    "issuer",
    "audience",
    "algorithm",
    "key",
    "claims",
    "lifetime",
    "internal",
    "other",
)

#: The target label of sessions whose target is not known yet.
UNIDENTIFIED = "unidentified"

_APPROVAL_BUCKETS = (1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600, float("inf"))
_SESSION_BUCKETS = (
    0.1, 1, 10, 60, 300, 900, 3600, 4 * 3600, 12 * 3600, 24 * 3600, float("inf")
)  # fmt: skip
_CONNECT_BUCKETS = (
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, float("inf")
)  # fmt: skip


class _RecordedBytes:
    """Collects the recorded byte count when scraped: no cost per chunk."""

    def __init__(self) -> None:
        self.source: Callable[[], int] | None = None

    def collect(self) -> Any:
        family = CounterMetricFamily(
            "gatehouse_recorded_bytes",
            "Bytes of session data recorded (both directions, as recorded).",
        )
        family.add_metric([], self.source() if self.source is not None else 0)
        yield family

    def describe(self) -> Any:
        return self.collect()


class GatewayMetrics:
    """
    The gateway's metrics, all named C{gatehouse_*}.

    Sessions count as open under target L{UNIDENTIFIED} until
    L{session_identified} moves them to their target.

    @ivar registry: the registry the metrics live in.
    @param clock: times approval waits (C{seconds()}); None: they are not
        observed.
    """

    def __init__(
        self, registry: CollectorRegistry | None = None, clock: Any = None
    ) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        self._clock = clock
        r = self.registry
        self._sessionsOpen = Gauge(
            "gatehouse_sessions_open",
            "Client sessions open now.",
            ["protocol", "target"],
            registry=r,
        )
        self._sessionsTotal = Counter(
            "gatehouse_sessions_total",
            "Client sessions opened.",
            ["protocol"],
            registry=r,
        )
        self._decisions = Counter(
            "gatehouse_decisions_total",
            "Policy decisions on client commands.",
            ["protocol", "target", "action", "rule"],
            registry=r,
        )
        self._authFailures = Counter(
            "gatehouse_auth_failures_total",
            "Clients refused because their token was not accepted, by reason.",
            ["reason"],
            registry=r,
        )
        self._approvalWait = Histogram(
            "gatehouse_approval_wait_seconds",
            "How long approval requests waited for their outcome.",
            ["outcome"],
            buckets=_APPROVAL_BUCKETS,
            registry=r,
        )
        self._sessionDuration = Histogram(
            "gatehouse_session_duration_seconds",
            "How long client sessions lasted, from accept to close.",
            ["protocol"],
            buckets=_SESSION_BUCKETS,
            registry=r,
        )
        self._connectLatency = Histogram(
            "gatehouse_upstream_connect_seconds",
            "Time to open an authenticated session on a target.",
            ["protocol", "target"],
            buckets=_CONNECT_BUCKETS,
            registry=r,
        )
        self._keyCoverage = Gauge(
            "gatehouse_signing_key_coverage_seconds",
            "Seconds until the loaded signing keys stop covering new"
            " recordings (0: none covers now).",
            registry=r,
        )
        self._recorded = _RecordedBytes()
        r.register(self._recorded)
        self._approvalsPending = Gauge(
            "gatehouse_approvals_pending",
            "Approval requests waiting for a decision.",
            registry=r,
        )
        self._approvalsDecided = Counter(
            "gatehouse_approvals_decided_total",
            "Approval requests that ended, by outcome.",
            ["outcome"],
            registry=r,
        )
        self._masked = Counter(
            "gatehouse_masked_values_total",
            "Values masked before they reached the client.",
            ["protocol", "target"],
            registry=r,
        )
        self._seals = Counter(
            "gatehouse_recorder_seals_total",
            "Recording segments sealed.",
            registry=r,
        )
        self._recorderFailures = Counter(
            "gatehouse_recorder_failures_total",
            "Session recordings that failed.",
            registry=r,
        )
        self._recordingsExhausted = Counter(
            "gatehouse_recordings_exhausted_total",
            "Sessions ended because their recording ran out of disk space"
            " (sealed cleanly; also counted in gatehouse_recorder_failures_total).",
            registry=r,
        )
        self._upstreamErrors = Counter(
            "gatehouse_upstream_connect_errors_total",
            "Failed connections to upstream targets.",
            ["protocol", "target"],
            registry=r,
        )
        self._loginsRefused = Counter(
            "gatehouse_logins_refused_total",
            "Clients refused before they authenticated, by reason.",
            ["protocol", "reason"],
            registry=r,
        )
        for outcome in OUTCOMES:
            self._approvalsDecided.labels(outcome)
            self._approvalWait.labels(outcome)
        for reason in AUTH_REASONS:
            self._authFailures.labels(reason)
        self._open: _Tally[tuple[str, str]] = _Tally()
        #: the configured target names (None: any name is a label); a
        #: session naming another counts under L{UNIDENTIFIED}, so a client
        #: cannot add a series per name it makes up
        self.targets: frozenset[str] | None = None
        self._decision_children: dict[tuple[str, str, str, str], Any] = {}
        # Request ids, read off whatever request object the broker passes.
        self._pending: set[object] = set()

    def _move(self, key: tuple[str, str], delta: int) -> None:
        self._open[key] += delta
        self._sessionsOpen.labels(*key).set(self._open[key])

    def session_opened(self, protocol: str) -> None:
        """A client connected on C{protocol}; its target is not known yet."""
        self._sessionsTotal.labels(protocol).inc()
        self._move((protocol, UNIDENTIFIED), 1)

    def _target(self, target: str | None) -> str:
        """The label for C{target}: a configured one, or L{UNIDENTIFIED}."""
        if not target or (self.targets is not None and target not in self.targets):
            return UNIDENTIFIED
        return target

    def session_identified(self, protocol: str, target: str) -> None:
        """An open session's target became known."""
        label = self._target(target)
        if label == UNIDENTIFIED:
            return
        if self._open[(protocol, UNIDENTIFIED)] > 0:
            self._move((protocol, UNIDENTIFIED), -1)
        self._move((protocol, label), 1)

    def session_closed(
        self, protocol: str, target: str | None, duration: float | None = None
    ) -> None:
        """
        A session ended (C{target} None: before it was identified), after
        C{duration} seconds if known.
        """
        # Counted under its name (a reload may have removed it since), or
        # not identified.
        key = (protocol, target or UNIDENTIFIED)
        if self._open[key] <= 0:
            key = (protocol, UNIDENTIFIED)
        if self._open[key] > 0:
            self._move(key, -1)
        if duration is not None:
            self._sessionDuration.labels(protocol).observe(max(0.0, duration))

    def auth_failure(self, reason: str) -> None:
        """A token was refused for C{reason}, one of L{AUTH_REASONS}."""
        self._authFailures.labels(reason if reason in AUTH_REASONS else "other").inc()

    def upstream_connected(self, protocol: str, target: str, seconds: float) -> None:
        """The gateway's session on C{target} was ready after C{seconds}."""
        self._connectLatency.labels(protocol, target or UNIDENTIFIED).observe(
            max(0.0, seconds)
        )

    def watch_signing_keys(self, seconds_left: Callable[[], float]) -> None:
        """Report C{seconds_left()} (of key coverage) at every scrape."""
        self._keyCoverage.set_function(lambda: max(0.0, seconds_left()))

    def watch_recorded_bytes(self, total: Callable[[], int]) -> None:
        """Report C{total()} (bytes recorded so far) at every scrape."""
        self._recorded.source = total

    def decision(
        self, protocol: str, target: str, action: str, rule: str | None = None
    ) -> None:
        """The policy decided C{action} about a command, by C{rule}."""
        # Called for every statement: keep the labelled children, as
        # labels() costs several times the increment itself.
        key = (protocol, target or UNIDENTIFIED, action, rule or "default")
        child = self._decision_children.get(key)
        if child is None:
            child = self._decision_children[key] = self._decisions.labels(*key)
        child.inc()

    def approval_event(
        self, event: str, request: object, approval: object = None
    ) -> None:
        """
        Follow the approval broker; pass this to
        L{gatehouse.policy.approval.ApprovalBroker.observe}.
        """
        requestID = getattr(request, "id", None)
        if event == "requested":
            self._pending.add(requestID)
        elif event == "decided":
            if requestID in self._pending:
                self._pending.discard(requestID)
            state = getattr(request, "state", "")
            if state in OUTCOMES:
                self._approvalsDecided.labels(state).inc()
                created = getattr(request, "created", None)
                if self._clock is not None and created is not None:
                    waited = max(0.0, self._clock.seconds() - created)
                    self._approvalWait.labels(state).observe(waited)
        else:
            return
        self._approvalsPending.set(len(self._pending))

    def masked(self, protocol: str, target: str, count: int) -> None:
        """C{count} values were masked in one response."""
        if count > 0:
            self._masked.labels(protocol, target or UNIDENTIFIED).inc(count)

    def seal(self) -> None:
        """A recording segment was sealed."""
        self._seals.inc()

    def recorder_failure(self, reason: str = "") -> None:
        """A session's recording failed (or, by C{reason}, ran out of space)."""
        self._recorderFailures.inc()
        if reason.startswith((SPACE_EXHAUSTED, SEGMENT_UNAVAILABLE)):
            self._recordingsExhausted.inc()

    def upstream_error(self, protocol: str, target: str) -> None:
        """Connecting to an upstream target failed."""
        self._upstreamErrors.labels(protocol, target or UNIDENTIFIED).inc()

    def login_refused(self, protocol: str, reason: str) -> None:
        """
        A client was refused before it authenticated (C{reason}: a fixed
        slug such as C{authentication_failed}, C{authentication_timeout},
        C{too_many_connections}, C{protocol_violation}).
        """
        self._loginsRefused.labels(protocol, reason).inc()

    def render(self) -> tuple[bytes, str]:
        """
        The metrics in Prometheus' text format.

        @return: the body and its content type.
        """
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
