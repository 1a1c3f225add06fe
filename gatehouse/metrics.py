"""
Prometheus metrics of a gateway: sessions, decisions, approvals, masking,
recording and upstream errors.

L{GatewayMetrics} keeps its own L{CollectorRegistry}, so several gateways
(or tests) in one process never share counters; the admin API serves it at
C{/metrics}.
"""

from __future__ import annotations

from collections import Counter as _Tally
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    generate_latest,
)

__all__ = ["OUTCOMES", "GatewayMetrics"]

#: How an approval request can end: the C{outcome} label's values.
OUTCOMES = ("approved", "denied", "expired", "cancelled")


class GatewayMetrics:
    """
    The gateway's metrics, all named C{gatehouse_*}.

    Sessions count as open under target C{""} until L{session_identified}
    moves them to their target.

    @ivar registry: the registry the metrics live in.
    """

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
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
            ["protocol", "target", "action"],
            registry=r,
        )
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
        self._open: _Tally[tuple[str, str]] = _Tally()
        self._decision_children: dict[tuple[str, str, str], Any] = {}
        self._pending: set[str] = set()

    def _move(self, key: tuple[str, str], delta: int) -> None:
        self._open[key] += delta
        self._sessionsOpen.labels(*key).set(self._open[key])

    def session_opened(self, protocol: str) -> None:
        """A client connected on C{protocol}; its target is not known yet."""
        self._sessionsTotal.labels(protocol).inc()
        self._move((protocol, ""), 1)

    def session_identified(self, protocol: str, target: str) -> None:
        """An open session's target became known."""
        if self._open[(protocol, "")] > 0:
            self._move((protocol, ""), -1)
        self._move((protocol, target), 1)

    def session_closed(self, protocol: str, target: str | None) -> None:
        """A session ended (C{target} None: before it was identified)."""
        key = (protocol, target or "")
        if self._open[key] <= 0:
            key = (protocol, "")
        if self._open[key] > 0:
            self._move(key, -1)

    def decision(self, protocol: str, target: str, action: str) -> None:
        """The policy decided C{action} about a command."""
        # Called for every statement: keep the labelled children, as
        # labels() costs several times the increment itself.
        key = (protocol, target, action)
        child = self._decision_children.get(key)
        if child is None:
            child = self._decision_children[key] = self._decisions.labels(*key)
        child.inc()

    def approval_event(
        self, event: str, request: object, approval: object = None
    ) -> None:
        """
        Follow the approval broker; pass this to
        L{gatehouse.approval.ApprovalBroker.observe}.
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
        else:
            return
        self._approvalsPending.set(len(self._pending))

    def masked(self, protocol: str, target: str, count: int) -> None:
        """C{count} values were masked in one response."""
        if count > 0:
            self._masked.labels(protocol, target).inc(count)

    def seal(self) -> None:
        """A recording segment was sealed."""
        self._seals.inc()

    def recorder_failure(self) -> None:
        """A session's recording failed."""
        self._recorderFailures.inc()

    def upstream_error(self, protocol: str, target: str) -> None:
        """Connecting to an upstream target failed."""
        self._upstreamErrors.labels(protocol, target).inc()

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
