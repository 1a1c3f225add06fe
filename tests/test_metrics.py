"""
Tests for L{gatehouse.metrics}.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from gatehouse.identity import Identity
from gatehouse.metrics import AUTH_REASONS, GatewayMetrics
from gatehouse.policy import Command, Decision
from gatehouse.policy.approval import ApprovalBroker
from gatehouse.recording.interfaces import SEGMENT_UNAVAILABLE, SPACE_EXHAUSTED

ALICE = Identity("alice", "Alice", ("dev",), "https://idp", None)
BOB = Identity("bob", "Bob", ("dba",), "https://idp", None)
DROP = Command("postgres", "DropStmt", "DROP TABLE t", ("t",))
REVIEW = Decision("review", "drops", approvers=("dba",), timeout=60)


class GatewayMetricsTests(SynchronousTestCase):
    """
    L{GatewayMetrics} counts into its own registry.
    """

    def setUp(self) -> None:
        self.metrics = GatewayMetrics()

    def value(self, name: str, **labels: str) -> float | None:
        return self.metrics.registry.get_sample_value(name, labels)

    def test_own_registry(self) -> None:
        """
        Each instance has its own registry, so two never collide; a given
        registry is used.
        """
        other = GatewayMetrics()
        self.metrics.seal()
        self.assertEqual(self.value("gatehouse_recorder_seals_total"), 1)
        self.assertEqual(
            other.registry.get_sample_value("gatehouse_recorder_seals_total"), 0
        )
        registry = CollectorRegistry()
        self.assertIs(GatewayMetrics(registry).registry, registry)

    def test_sessions(self) -> None:
        """
        A session counts as open under target C{"unidentified"} until
        identified (no series has an empty label), then
        under its target, until closed.
        """
        m = self.metrics
        m.session_opened("postgres")
        m.session_opened("postgres")
        self.assertEqual(self.value("gatehouse_sessions_total", protocol="postgres"), 2)
        self.assertEqual(
            self.value(
                "gatehouse_sessions_open", protocol="postgres", target="unidentified"
            ),
            2,
        )
        m.session_identified("postgres", "db")
        self.assertEqual(
            self.value(
                "gatehouse_sessions_open", protocol="postgres", target="unidentified"
            ),
            1,
        )
        self.assertEqual(
            self.value("gatehouse_sessions_open", protocol="postgres", target="db"), 1
        )
        m.session_closed("postgres", None)
        m.session_closed("postgres", "db")
        self.assertEqual(
            self.value(
                "gatehouse_sessions_open", protocol="postgres", target="unidentified"
            ),
            0,
        )
        self.assertEqual(
            self.value("gatehouse_sessions_open", protocol="postgres", target="db"), 0
        )

    def test_closed_unidentified_with_target(self) -> None:
        """
        A session closed with a target it was never identified with leaves
        the unidentified count, and no gauge goes below zero.
        """
        m = self.metrics
        m.session_opened("ssh")
        m.session_closed("ssh", "host")
        m.session_closed("ssh", "host")
        self.assertEqual(
            self.value(
                "gatehouse_sessions_open", protocol="ssh", target="unidentified"
            ),
            0,
        )
        self.assertIsNone(
            self.value("gatehouse_sessions_open", protocol="ssh", target="host")
        )

    def test_unknown_target_names(self) -> None:
        """
        With the configured targets known, a session naming another counts
        as unidentified: no series for the name, and its close is counted
        back.  A target removed by a reload while its session is open is
        still counted back under its own name.
        """
        m = self.metrics
        m.targets = frozenset({"db"})
        m.session_opened("postgres")
        m.session_identified("postgres", "made-up")
        m.session_closed("postgres", "made-up")
        m.session_opened("postgres")
        m.session_identified("postgres", "db")
        m.targets = frozenset()
        m.session_closed("postgres", "db")
        rendered = m.render()[0].decode()
        self.assertNotIn("made-up", rendered)
        for target in ("unidentified", "db"):
            self.assertEqual(
                self.value(
                    "gatehouse_sessions_open", protocol="postgres", target=target
                ),
                0,
            )

    def test_counters(self) -> None:
        """
        Decisions, masked values, seals, recorder failures and upstream
        errors are counted with their labels.
        """
        m = self.metrics
        m.decision("postgres", "db", "allow", "default")
        m.decision("postgres", "db", "allow", "")
        m.decision("postgres", "db", "deny", "no-drops")
        m.masked("postgres", "db", 3)
        m.masked("postgres", "db", 0)
        m.seal()
        m.seal()
        m.recorder_failure()
        m.upstream_error("postgres", "db")
        self.assertEqual(
            self.value(
                "gatehouse_decisions_total",
                protocol="postgres",
                target="db",
                action="allow",
                rule="default",
            ),
            2,
        )
        self.assertEqual(
            self.value(
                "gatehouse_decisions_total",
                protocol="postgres",
                target="db",
                action="deny",
                rule="no-drops",
            ),
            1,
        )
        self.assertEqual(
            self.value(
                "gatehouse_masked_values_total", protocol="postgres", target="db"
            ),
            3,
        )
        self.assertEqual(self.value("gatehouse_recorder_seals_total"), 2)
        self.assertEqual(self.value("gatehouse_recorder_failures_total"), 1)
        self.assertEqual(
            self.value(
                "gatehouse_upstream_connect_errors_total",
                protocol="postgres",
                target="db",
            ),
            1,
        )

    def test_approvals(self) -> None:
        """
        Plugged into a broker, the metrics follow pending requests and count
        how they end.
        """
        clock = Clock()
        broker = ApprovalBroker(clock)
        broker.observe(self.metrics.approval_event)
        for outcome in ("approved", "denied", "expired", "cancelled"):
            self.assertEqual(
                self.value("gatehouse_approvals_decided_total", outcome=outcome), 0
            )
        first, _ = broker.request("s1", "postgres", "db", ALICE, [DROP], REVIEW)
        second, _ = broker.request("s1", "postgres", "db", ALICE, [DROP], REVIEW)
        third, _ = broker.request("s2", "postgres", "db", ALICE, [DROP], REVIEW)
        broker.request("s2", "postgres", "db", ALICE, [DROP], REVIEW)
        self.assertEqual(self.value("gatehouse_approvals_pending"), 4)
        broker.approve(first.id, BOB)
        broker.deny(second.id, BOB)
        broker.cancel(third.id, "session ended")
        self.assertEqual(self.value("gatehouse_approvals_pending"), 1)
        clock.advance(61)
        self.assertEqual(self.value("gatehouse_approvals_pending"), 0)
        for outcome in ("approved", "denied", "expired", "cancelled"):
            self.assertEqual(
                self.value("gatehouse_approvals_decided_total", outcome=outcome), 1
            )

    def test_render(self) -> None:
        """
        L{GatewayMetrics.render} gives Prometheus' text format and its
        content type.
        """
        self.metrics.session_opened("postgres")
        body, contentType = self.metrics.render()
        self.assertIn("text/plain", contentType)
        self.assertIsInstance(body, bytes)
        families = {
            f.name: f for f in text_string_to_metric_families(body.decode("utf-8"))
        }
        for name in (
            "gatehouse_sessions_open",
            "gatehouse_sessions",
            "gatehouse_decisions",
            "gatehouse_approvals_pending",
            "gatehouse_approvals_decided",
            "gatehouse_masked_values",
            "gatehouse_recorder_seals",
            "gatehouse_recorder_failures",
            "gatehouse_upstream_connect_errors",
        ):
            self.assertIn(name, families)
        self.assertIn(
            b'gatehouse_sessions_total{protocol="postgres"} 1.0', body.splitlines()
        )


class NewMetricsTests(SynchronousTestCase):
    """
    Authentication failures, decisions by rule, approval waits, session
    durations, key coverage, recorded bytes and connect latency; no series
    with an empty label.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(1000)
        self.metrics = GatewayMetrics(clock=self.clock)

    def value(self, name: str, **labels: str) -> float | None:
        return self.metrics.registry.get_sample_value(name, labels)

    def samples(self) -> list:
        body, _ = self.metrics.render()
        return [
            sample
            for family in text_string_to_metric_families(body.decode("utf-8"))
            for sample in family.samples
        ]

    def test_recordings_exhausted(self) -> None:
        """
        A recording ended for want of space counts as a failure and as
        exhausted; any other failure only as a failure.
        """
        self.metrics.recorder_failure("disk I/O error")
        self.metrics.recorder_failure(f"{SPACE_EXHAUSTED}: no space for segment 3")
        self.metrics.recorder_failure(f"{SEGMENT_UNAVAILABLE}: EIO")
        self.assertEqual(self.value("gatehouse_recorder_failures_total"), 3)
        self.assertEqual(self.value("gatehouse_recordings_exhausted_total"), 2)

    def test_auth_failures(self) -> None:
        """
        Every reason of the fixed set is there from the start (at 0); a
        reason outside it counts as C{other}.
        """
        for reason in AUTH_REASONS:
            self.assertEqual(
                self.value("gatehouse_auth_failures_total", reason=reason), 0
            )
        self.metrics.auth_failure("expired")
        self.metrics.auth_failure("made up by someone")
        self.assertEqual(
            self.value("gatehouse_auth_failures_total", reason="expired"), 1
        )
        self.assertEqual(self.value("gatehouse_auth_failures_total", reason="other"), 1)
        reasons = {
            s.labels["reason"]
            for s in self.samples()
            if s.name == "gatehouse_auth_failures_total"
        }
        self.assertEqual(reasons, set(AUTH_REASONS))

    def test_histograms(self) -> None:
        """
        Session durations, upstream connect latency and approval waits are
        histograms.
        """
        m = self.metrics
        m.session_opened("postgres")
        m.session_closed("postgres", None, 12.5)
        m.upstream_connected("postgres", "db", 0.02)
        broker = ApprovalBroker(self.clock)
        broker.observe(m.approval_event)
        request, _ = broker.request("s1", "postgres", "db", ALICE, [DROP], REVIEW)
        self.clock.advance(7)
        broker.approve(request.id, BOB)
        self.assertEqual(
            self.value("gatehouse_session_duration_seconds_sum", protocol="postgres"),
            12.5,
        )
        self.assertEqual(
            self.value(
                "gatehouse_session_duration_seconds_bucket",
                protocol="postgres",
                le="10.0",
            ),
            0,
        )
        self.assertEqual(
            self.value(
                "gatehouse_upstream_connect_seconds_count",
                protocol="postgres",
                target="db",
            ),
            1,
        )
        self.assertEqual(
            self.value("gatehouse_approval_wait_seconds_sum", outcome="approved"), 7
        )
        self.assertEqual(
            self.value(
                "gatehouse_approval_wait_seconds_bucket", outcome="approved", le="5.0"
            ),
            0,
        )

    def test_watched(self) -> None:
        """
        Key coverage and recorded bytes are read at each scrape; coverage
        never goes below 0.
        """
        left = [3600.0]
        recorded = [0]
        self.metrics.watch_signing_keys(lambda: left[0])
        self.metrics.watch_recorded_bytes(lambda: recorded[0])
        self.assertEqual(self.value("gatehouse_signing_key_coverage_seconds"), 3600)
        left[0] = -5
        recorded[0] = 4096
        self.assertEqual(self.value("gatehouse_signing_key_coverage_seconds"), 0)
        self.assertEqual(self.value("gatehouse_recorded_bytes_total"), 4096)

    def test_no_empty_labels(self) -> None:
        """
        Sessions without a target, decisions without a rule, masking and
        upstream errors of an unidentified session: no label is empty.
        """
        m = self.metrics
        m.session_opened("postgres")
        m.session_identified("postgres", "")
        m.session_closed("postgres", None)
        m.decision("postgres", "", "deny", None)
        m.masked("postgres", "", 2)
        m.upstream_error("postgres", "")
        m.upstream_connected("postgres", "", 0.1)
        samples = self.samples()
        self.assertTrue(samples)
        for sample in samples:
            for label, value in sample.labels.items():
                self.assertNotEqual(value, "", f"{sample.name} {label}")
        self.assertEqual(
            self.value(
                "gatehouse_decisions_total",
                protocol="postgres",
                target="unidentified",
                action="deny",
                rule="default",
            ),
            1,
        )
