"""
End-to-end: the log lines and metrics a SOC reads, from a real daemon
(C{twistd -n gatehouse --log-format json}) in front of a real PostgreSQL,
with real clients; and the byte counts in the session index.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import urllib.request
from datetime import datetime

from prometheus_client.parser import text_string_to_metric_families

from gatehouse.metrics import AUTH_REASONS
from gatehouse.protocols.postgres import codec
from tests.protocols.postgres.harness import Gateway
from tests.protocols.postgres.test_e2e import GatewayTestCase, RawClient

POLICY = {
    "policy": {
        "review": {"approvers": ["approvers"], "timeout": "60s"},
        "rules": [
            {"name": "dba-anything", "groups": ["dba"], "action": "allow"},
            {
                "name": "logs-no-drop",
                "kind": ["DropStmt"],
                "action": "deny",
                "message": "agents may not drop tables",
            },
            {
                "name": "logs-truncate-review",
                "kind": ["TruncateStmt"],
                "action": "review",
                "timeout": "1s",
            },
        ],
    }
}

_ISO = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+00:00$")


def _table(test: GatewayTestCase, name: str) -> None:
    test.direct(
        f"drop table if exists {name}; create table {name} (id int); "
        f"alter table {name} owner to gw_scram"
    )


class JSONLogTests(GatewayTestCase):
    """
    With C{--log-format json}, every line of the daemon's log file is one
    JSON object; gatehouse's own events carry stable names and fields.
    """

    def make_gateway(self, base: str) -> Gateway:
        return Gateway(
            base,
            self.cluster,
            allow_cleartext=True,
            admin=True,
            extra_config=POLICY,
            plugin_args=("--log-format", "json"),
        )

    def lines(self) -> list[dict]:
        """Every line of the log, parsed (each must be JSON)."""
        parsed = []
        for line in self.gateway.log().splitlines():
            try:
                parsed.append(json.loads(line))
            except ValueError:
                self.fail(f"log line is not JSON: {line!r}")
        return parsed

    def wait_for(self, timeout: float = 15, **fields: object) -> list[dict]:
        """The log lines with all of C{fields}, once there is one."""
        deadline = time.monotonic() + timeout
        while True:
            found = [
                line
                for line in self.lines()
                if all(line.get(k) == v for k, v in fields.items())
            ]
            if found or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        if not found:
            self.fail(f"no log line with {fields}:\n{self.gateway.log()[-3000:]}")
        return found

    def agent(self, subject: str) -> str:
        return self.gateway.token(subject=subject, groups=("agents",))

    def test_every_line_json(self) -> None:
        """
        Twisted's own lines are JSON too (event C{log}), with an ISO 8601
        UTC time; there is no "Starting factory" line, though the gateway
        opened client connections (upstream, and the catalog).
        """
        self.psql_ok("select 1")
        lines = self.lines()
        self.assertTrue(any("starting up" in line["message"] for line in lines))
        for line in lines:
            self.assertTrue(
                {"time", "level", "event", "message", "system"} <= set(line), line
            )
            self.assertRegex(line["time"], _ISO)
            datetime.fromisoformat(line["time"])
        self.assertNotIn("Starting factory", self.gateway.log())
        self.assertNotIn("Stopping factory", self.gateway.log())

    def test_session_start_end_bytes(self) -> None:
        """
        A session has one start and one end line with who, where, from
        where, why it ended, how long, and the bytes each way; the same
        counts are in the index (C{gatehouse sessions --json}), and they
        are what the client sent and received.
        """
        client = RawClient(self.gateway.port)
        ready = codec.ReadyForQuery("I").encode()

        def until(suffix: bytes, got: bytes = b"") -> bytes:
            while not got.endswith(suffix):
                chunk = client.sock.recv(65536)
                self.assertTrue(chunk, got[-200:])
                got += chunk
            return got

        sent = codec.StartupMessage({"user": "alice", "database": "app"}).encode()
        client.send(sent)
        received = until(codec.AuthenticationCleartextPassword().encode())
        token = self.gateway.token(subject="log-bytes", groups=("dba",))
        password = codec.PasswordMessage(token).encode()
        client.send(password)
        sent += password
        received = until(ready, received)
        query = codec.Query("select repeat('x', 100000)").encode()
        client.send(query)
        sent += query
        answer = until(ready)
        self.assertGreater(len(answer), 100000)
        received += answer
        terminate = codec.encode_message(codec.FrontendType.TERMINATE, b"")
        client.send(terminate)
        sent += terminate
        received += client.read_all()
        client.close()

        [end] = self.wait_for(event="session.end", subject="log-bytes")
        [start] = self.wait_for(event="session.start", subject="log-bytes")
        self.assertEqual(start["session_id"], end["session_id"])
        for line in (start, end):
            self.assertEqual(line["target"], "app")
            self.assertEqual(line["protocol"], "postgres")
            self.assertTrue(line["client_address"].startswith("127.0.0.1:"))
        self.assertEqual(start["level"], "info")
        self.assertEqual(end["reason"], "client terminated the session")
        self.assertTrue(end["authenticated"])
        self.assertGreater(end["duration"], 0)
        self.assertLess(end["duration"], 60)
        # Counted as recorded: the password message (the token) in its
        # redacted form.
        redacted = codec.encode_message(codec.FrontendType.PASSWORD, b"[REDACTED]\0")
        self.assertEqual(
            end["bytes_from_client"], len(sent) - len(password) + len(redacted)
        )
        self.assertEqual(end["bytes_to_client"], len(received))
        # The target's answer crossed verbatim; the gateway made the rest
        # (its password request and greeting).
        self.assertGreater(end["bytes_from_upstream"], 100000)
        made = end["bytes_to_client"] - end["bytes_from_upstream"]
        self.assertGreater(made, 0)
        self.assertLess(made, 2000)
        # The query (and Terminate) went on; the startup and token did not.
        self.assertGreaterEqual(end["bytes_to_upstream"], len(query))
        self.assertLessEqual(end["bytes_to_upstream"], len(query) + len(terminate))
        self.assertNotIn(token, self.gateway.log())

        listed = subprocess.run(
            [
                sys.executable,
                "-m",
                "gatehouse",
                "sessions",
                "--config",
                self.gateway.config_path,
                "--json",
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
        self.assertEqual(listed.returncode, 0, listed.stderr)
        [row] = [r for r in json.loads(listed.stdout) if r["id"] == end["session_id"]]
        for key in (
            "bytes_from_client",
            "bytes_to_client",
            "bytes_to_upstream",
            "bytes_from_upstream",
        ):
            self.assertEqual(row[key], end[key], key)

    def test_auth_failure(self) -> None:
        """
        A refused token is one C{auth.failure} line with the client's
        address and a reason of the fixed set; the token is never logged.
        """
        expired = self.gateway.token(subject="log-expired", lifetime=-120)
        result = self.gateway.psql("select 1", token=expired, sslmode="disable")
        self.assertNotEqual(result.returncode, 0)
        [line] = self.wait_for(event="auth.failure", reason="expired")
        self.assertEqual(line["level"], "warn")
        self.assertTrue(line["client_address"].startswith("127.0.0.1:"))
        self.assertIn("expired", line["detail"])
        # Nothing worth recording: the connection's end is a login.refused
        # event (no session.end, no recording), tied by the session id.
        [end] = self.wait_for(event="login.refused", session_id=line["session_id"])
        self.assertEqual(end["kind"], "authentication_failed")
        self.assertEqual(end["client_address"], line["client_address"])
        log = self.gateway.log()
        self.assertNotIn(expired, log)
        self.assertNotIn(expired.rsplit(".", 1)[1], log)

        garbage = "not-a-token-" + "z" * 40
        self.gateway.psql("select 1", token=garbage, sslmode="disable")
        self.wait_for(event="auth.failure", reason="malformed")
        self.assertNotIn(garbage, self.gateway.log())

    def test_decisions(self) -> None:
        """
        A deny and a review decision are one C{decision} line each, with
        session, subject, target, action, rule and the statement (escaped
        and bounded); the table is still there.
        """
        _table(self, "logs_keep_t")
        long_comment = "\x1b[31m" + "y" * 1000
        drop = f"drop table logs_keep_t /* {long_comment} */"
        refused = self.gateway.psql(drop, token=self.agent("log-denied"))
        self.assertNotEqual(refused.returncode, 0)
        self.assertIn("agents may not drop tables", refused.stderr)
        held = self.gateway.psql("truncate logs_keep_t", token=self.agent("log-held"))
        self.assertNotEqual(held.returncode, 0)
        self.assertEqual(
            self.direct("select to_regclass('public.logs_keep_t') is not null"), "t"
        )

        [deny] = self.wait_for(event="decision", subject="log-denied")
        self.assertEqual(
            (deny["action"], deny["rule"], deny["target"], deny["level"]),
            ("deny", "logs-no-drop", "app", "warn"),
        )
        self.assertEqual(deny["command_kind"], "DropStmt")
        self.assertTrue(deny["command"].startswith("drop table logs_keep_t /* "))
        self.assertIn("\\x1b[31m", deny["command"])
        self.assertNotIn("\x1b", deny["command"])
        self.assertLessEqual(len(deny["command"]), 203)
        self.assertTrue(deny["command"].endswith("..."))
        [start] = self.wait_for(event="session.start", subject="log-denied")
        self.assertEqual(deny["session_id"], start["session_id"])
        self.assertNotIn("\x1b", self.gateway.log())

        [review] = self.wait_for(event="decision", subject="log-held")
        self.assertEqual(
            (review["action"], review["rule"], review["command"]),
            ("review", "logs-truncate-review", "truncate logs_keep_t"),
        )
        [asked] = self.wait_for(
            event="approval.requested", session_id=review["session_id"]
        )
        self.assertEqual(asked["rule"], "logs-truncate-review")
        self.assertIn("gatehouse approvals approve", asked["instructions"])
        [expired] = self.wait_for(
            event="approval.decided", session_id=review["session_id"]
        )
        self.assertEqual(expired["approval_id"], asked["approval_id"])
        self.assertEqual((expired["state"], expired["voters"]), ("expired", []))
        self.assertGreaterEqual(expired["waited"], 1)
        self.assertLess(expired["waited"], 10)

    def test_metrics(self) -> None:
        """
        The admin API's /metrics, after a deny and a refused token, holds
        them by reason and rule, the histograms, the key coverage and the
        recorded bytes, in valid Prometheus text with no empty label.
        """
        _table(self, "logs_metrics_t")
        self.gateway.psql("drop table logs_metrics_t", token=self.agent("log-m"))
        bad = self.gateway.token(subject="log-m2", lifetime=-120)
        self.gateway.psql("select 1", token=bad, sslmode="disable")
        self.wait_for(event="session.end", subject="log-m")

        with urllib.request.urlopen(self.gateway.admin_url + "/metrics") as answer:
            body = answer.read().decode("utf-8")
        samples = {}
        for family in text_string_to_metric_families(body):
            for sample in family.samples:
                for label, value in sample.labels.items():
                    self.assertNotEqual(value, "", f"{sample.name} {label}")
                samples[(sample.name, tuple(sorted(sample.labels.items())))] = (
                    sample.value
                )

        def value(name: str, **labels: str) -> float:
            return samples.get((name, tuple(sorted(labels.items()))), 0)

        self.assertGreaterEqual(
            value("gatehouse_auth_failures_total", reason="expired"), 1
        )
        self.assertEqual(
            {
                dict(labels)["reason"]
                for name, labels in samples
                if name == "gatehouse_auth_failures_total"
            },
            set(AUTH_REASONS),
        )
        self.assertGreaterEqual(
            value(
                "gatehouse_decisions_total",
                protocol="postgres",
                target="app",
                action="deny",
                rule="logs-no-drop",
            ),
            1,
        )
        self.assertGreaterEqual(
            value("gatehouse_session_duration_seconds_count", protocol="postgres"), 2
        )
        self.assertGreaterEqual(
            value(
                "gatehouse_upstream_connect_seconds_count",
                protocol="postgres",
                target="app",
            ),
            1,
        )
        coverage = value("gatehouse_signing_key_coverage_seconds")
        # The harness issues four one-hour keys from a minute ago.
        self.assertGreater(coverage, 4 * 3600 - 600)
        self.assertLessEqual(coverage, 4 * 3600 - 60)
        self.assertGreater(value("gatehouse_recorded_bytes_total"), 0)


class TextLogTests(GatewayTestCase):
    """
    The default text format: ISO 8601 UTC times, C{event key=value} lines,
    no "Starting factory".
    """

    def test_text_lines(self) -> None:
        """
        Each line starts with an ISO 8601 UTC time; a session has its
        start and end lines with key=value fields.
        """
        self.psql_ok("select 1", token=self.gateway.token(subject="log-text"))
        deadline = time.monotonic() + 15
        while "session.end" not in self.gateway.log() and time.monotonic() < deadline:
            time.sleep(0.05)
        log = self.gateway.log()
        stamp = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+00:00 \[")
        lines = [line for line in log.splitlines() if line.strip()]
        starts = [line for line in lines if stamp.match(line)]
        # Lines that do not start with a time continue a traceback.
        self.assertGreater(len(starts), 3)
        self.assertTrue(all(stamp.match(line) for line in lines[:3]), lines[:3])
        self.assertNotIn("Starting factory", log)
        self.assertNotIn("Stopping factory", log)
        [start] = [line for line in lines if " session.start " in line]
        self.assertIn("subject=log-text", start)
        self.assertIn("target=app", start)
        self.assertRegex(start, r"client_address=127\.0\.0\.1:\d+")
        [end] = [line for line in lines if " session.end " in line]
        self.assertIn('reason="client terminated the session"', end)
        self.assertRegex(end, r"bytes_from_upstream=[1-9]\d*")
        self.assertRegex(end, r"bytes_to_upstream=[1-9]\d*")
        self.assertTrue(os.path.exists(self.gateway.log_path))
