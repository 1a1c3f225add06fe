"""
A session ends when its token does.

Unit tests drive a real L{SessionHub} (segment recorder on disk, approval
broker, token verifier) on a L{Clock}; end-to-end tests run the real daemon
in front of PostgreSQL with tokens valid for two seconds, and a client that
keeps going after that.
"""

from __future__ import annotations

import json
import subprocess
import threading
import time
from typing import Any

import jwt
import psycopg
import yaml
from twisted.internet import reactor
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from gatehouse.config import TargetConfig
from gatehouse.identity import IssuerConfig, TokenVerifier
from gatehouse.policy import Command, Decision
from gatehouse.policy.approval import ApprovalBroker
from gatehouse.recording.format import RecordType
from gatehouse.recording.index import query_sessions
from gatehouse.recording.reader import read_records
from gatehouse.recording.verify import verify_session
from gatehouse.session import SessionHub
from tests.protocols.postgres.harness import Gateway
from tests.protocols.postgres.test_e2e import GatewayTestCase
from tests.recording.helpers import clock_recorder

NS = 1_000_000_000
NOW = 1_790_000_000.0
ISSUER = "https://idp.example.com/realms/ops"
AUDIENCE = "gatehouse"
SECRET = b"the token expiry tests' HS256 secret, 32+ bytes"
EXPIRED_AT = "2026-09-21T14:14:20Z"  # NOW + 60, as the client is told


def _token(lifetime: float, now: float = NOW, **claims: object) -> str:
    payload: dict[str, Any] = {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": "ci-bot",
        "groups": ["agents"],
        "iat": int(now),
        "exp": int(now + lifetime),
    }
    payload.update(claims)
    return jwt.encode(payload, SECRET, algorithm="HS256")


def _events(directory: str) -> list[dict[str, Any]]:
    return [
        json.loads(r.payload)
        for r in read_records(directory)
        if r.type == RecordType.EVENT
    ]


def _close_reason(directory: str) -> str:
    records = list(read_records(directory))
    assert records[-1].type == RecordType.CLOSE
    return json.loads(records[-1].payload)["reason"]


class SessionExpiryTests(SynchronousTestCase):
    """
    L{Session} ends itself through L{Session.terminate} once the gateway
    stops accepting its token (C{exp} plus leeway), timed by the hub's
    clock.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(NOW)
        self.make_hub()

    def make_hub(self, leeway: float = 0.0, exempt: tuple[str, ...] = ()) -> None:
        recorder = clock_recorder(self.mktemp(), "gw-t", self.clock, NOW)
        verifier = TokenVerifier(
            [
                IssuerConfig(
                    ISSUER,
                    (AUDIENCE,),
                    algorithms=("HS256",),
                    hs256_secret=SECRET,
                    leeway=leeway,
                )
            ],
            reactor,
            clock=self.clock,
        )
        self.broker = ApprovalBroker(self.clock)
        self.hub = SessionHub(
            "gw-t",
            recorder,
            verifier,
            self.clock,
            broker=self.broker,
            token_expiry_exempt=exempt,
            targets=[
                TargetConfig(name, "postgres", allow_groups=("*",))
                for name in ("shop", "humans")
            ],
        )

    def session(self, token: str, target: str = "shop") -> Any:
        """An authenticated session, its terminations noted in C{.ended}."""
        session = self.hub.open("postgres", "pg", "127.0.0.1:5000")
        session.ended = []
        session.on_terminate(session.ended.append)
        self.successResultOf(session.authenticate(token, target))
        return session

    def test_ends_at_expiry(self) -> None:
        """
        Not a moment before its token expires, the session is terminated:
        the protocol is told, the client's message names the time, and the
        recording holds the event and the reason, and is sealed.
        """
        session = self.session(_token(60))
        self.clock.advance(59.9)
        self.assertEqual((session.ended, session.closed), ([], False))
        self.clock.advance(0.1)
        reason = f"token expired at {EXPIRED_AT}"
        self.assertEqual(session.ended, [reason])
        self.assertTrue(session.closed)
        self.assertEqual(
            session.end_message,
            f"the session's token expired at {EXPIRED_AT}; "
            "reconnect with a fresh token",
        )
        directory = session.recording.directory
        expired = [e for e in _events(directory) if e["event"] == "token-expired"]
        self.assertEqual(
            expired,
            [
                {
                    "event": "token-expired",
                    "expires_at": NOW + 60,
                    "valid_until": NOW + 60,
                }
            ],
        )
        self.assertEqual(_close_reason(directory), reason)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_leeway(self) -> None:
        """
        The session lasts as long as the gateway accepts its token: C{exp}
        plus the issuer's leeway.  A token accepted within the leeway after
        its C{exp} ends the session at once, not a leeway later.
        """
        self.make_hub(leeway=30)
        session = self.session(_token(60))
        self.clock.advance(89)
        self.assertEqual(session.ended, [])
        self.clock.advance(1)
        self.assertEqual(session.ended, [f"token expired at {EXPIRED_AT}"])

        late = self.session(_token(-10, now=self.clock.seconds()))
        self.assertEqual(late.ended, [])
        self.clock.advance(20)
        self.assertEqual(len(late.ended), 1)

    def test_exempt_target(self) -> None:
        """
        On a target with C{end_session_at_token_expiry: false} the session
        outlives its token; on others it does not.
        """
        self.make_hub(exempt=("humans",))
        kept = self.session(_token(60), target="humans")
        ended = self.session(_token(60), target="shop")
        self.clock.advance(3600)
        self.assertEqual((kept.ended, kept.closed), ([], False))
        self.assertEqual(len(ended.ended), 1)
        self.successResultOf(kept.close("client disconnected"))

    def test_closed_first(self) -> None:
        """
        A session that ends first leaves no timer behind.
        """
        session = self.session(_token(60))

        def timers() -> list[object]:
            return [c for c in self.clock.getDelayedCalls() if c.getTime() == NOW + 60]

        self.assertEqual(len(timers()), 1)
        self.successResultOf(session.close("client disconnected"))
        self.assertEqual(timers(), [])
        self.clock.advance(120)
        self.assertEqual(session.ended, [])

    def test_held_approval(self) -> None:
        """
        A statement held for approval when the token expires never runs:
        its request is cancelled (approvers can no longer approve it), and
        the recording says why.
        """
        session = self.session(_token(60))
        command = Command("postgres", "DropStmt", "DROP TABLE t", ("t",))
        decision = Decision(
            "review", "schema", approvers=("dba",), approvals=1, timeout=300
        )
        request, verdict = session.request_approval((command,), decision)
        self.assertNoResult(verdict)
        self.clock.advance(60)
        outcome = self.successResultOf(verdict)
        self.assertFalse(outcome.approved)
        state = self.broker.get(request.id)
        self.assertEqual(
            (state.state, state.reason),
            ("cancelled", f"session ended: token expired at {EXPIRED_AT}"),
        )
        events = [e["event"] for e in _events(session.recording.directory)]
        self.assertEqual(events[-2:], ["token-expired", "approval-decided"], events)


def _backends(test: GatewayTestCase, application: str) -> int:
    return int(
        test.direct(
            "select count(*) from pg_stat_activity "
            f"where application_name = '{application}'"
        )
    )


class ExpiryEndToEndTests(GatewayTestCase):
    """
    The real daemon ends a session when its token expires, cancels what
    the target runs for it and closes its backend; tokens granted for
    longer than C{identity.max_token_lifetime} never log in.
    """

    LIFETIME = 2

    def make_gateway(self, base: str) -> Gateway:
        gateway = Gateway(
            base,
            self.cluster,
            extra_targets=[
                {
                    "name": "app_keep",
                    "protocol": "postgres",
                    "end_session_at_token_expiry": False,
                    "options": {
                        "host": "127.0.0.1",
                        "port": self.cluster.port,
                        "database": "app",
                        "user": "gw_md5",
                        "password_file": f"{base}/gw_md5.pw",
                        "tls": {"mode": "disable"},
                        "allow_groups": ["agents"],
                    },
                }
            ],
            extra_config={
                "policy": {
                    "review": {"approvers": ["dba"], "timeout": "60s"},
                    "rules": [
                        {
                            "name": "drops-wait",
                            "kind": ["DropStmt"],
                            "action": "review",
                        }
                    ],
                }
            },
        )
        with open(gateway.config_path) as f:
            config = yaml.safe_load(f)
        # No leeway: the session ends at the token's exp, so tests wait
        # seconds, not half a minute.
        config["identity"]["issuers"][0]["leeway"] = "0s"
        config["identity"]["max_token_lifetime"] = "1h"
        with open(gateway.config_path, "w") as f:
            yaml.safe_dump(config, f)
        return gateway

    def token(self, lifetime: float, **claims: object) -> str:
        return self.gateway.token(
            subject="ci-bot", groups=("agents",), lifetime=lifetime, **claims
        )

    def session_row(self, application: str) -> Any:
        """The session whose startup named C{application}, once closed."""
        index = self.gateway.path("recordings", "index.sqlite3")
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            for row in query_sessions(index, limit=None):
                if row.ended is None or not row.final:
                    continue
                started = [
                    e
                    for e in _events(row.directory)
                    if e["event"] == "startup"
                    and e.get("application_name") == application
                ]
                if started:
                    return row
            time.sleep(0.1)
        self.fail(f"no closed session for {application}:\n{self.gateway.log()}")

    def wait_backends(self, application: str, count: int, within: float) -> float:
        """Seconds until C{count} backends serve C{application}."""
        start = time.monotonic()
        while _backends(self, application) != count:
            if time.monotonic() - start > within:
                self.fail(
                    f"{_backends(self, application)} backends for {application}"
                    f" after {within}s, not {count}"
                )
            time.sleep(0.05)
        return time.monotonic() - start

    def test_idle_session(self) -> None:
        """
        psycopg runs a query; once the token expires, its next query fails
        with the gateway's FATAL (57P01, naming the expiry), the backend is
        gone from pg_stat_activity, and the index and the verified
        recording say the token expired.  Another client is still served.
        """
        application = "expiry-idle"
        with psycopg.connect(
            self.gateway.conninfo(user="ci-bot", application_name=application),
            password=self.token(self.LIFETIME),
            autocommit=True,
        ) as conn:
            self.assertEqual(conn.execute("select 41 + 1").fetchone(), (42,))
            self.assertEqual(_backends(self, application), 1)
            time.sleep(self.LIFETIME + 0.5)
            with self.assertRaises(psycopg.OperationalError) as raised:
                conn.execute("select 1")
        message = str(raised.exception)
        self.assertIn("the session's token expired at ", message)
        self.assertIn("reconnect with a fresh token", message)
        self.assertEqual(raised.exception.sqlstate, "57P01")
        self.wait_backends(application, 0, within=1.0)
        row = self.session_row(application)
        self.assertRegex(
            row.close_reason,
            r"^token expired at \d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$",
        )
        report = verify_session(row.directory, self.gateway.anchors())
        self.assertEqual((report.findings, report.exit_code), ((), 0))
        self.assertIn("token-expired", [e["event"] for e in _events(row.directory)])
        self.assert_still_serving()

    def test_running_statement(self) -> None:
        """
        A statement still running when the token expires is cancelled on
        the target and the session closed: psql gets the FATAL within a
        moment of the expiry, not when pg_sleep(30) would end, and the
        backend is gone.
        """
        application = "expiry-running"
        result: list[subprocess.CompletedProcess] = []
        start = time.monotonic()
        runner = threading.Thread(
            target=lambda: result.append(
                self.gateway.psql(
                    "select pg_sleep(30)",
                    token=self.token(self.LIFETIME),
                    user="ci-bot",
                    application_name=application,
                    timeout=40,
                )
            ),
            daemon=True,
        )
        runner.start()
        self.wait_backends(application, 1, within=self.LIFETIME)
        runner.join(15)
        self.assertTrue(result, "psql still runs")
        took = time.monotonic() - start
        self.assertLess(took, self.LIFETIME + 3)
        psql = result[0]
        self.assertNotEqual(psql.returncode, 0)
        self.assertIn("the session's token expired at ", psql.stderr)
        self.wait_backends(application, 0, within=1.0)
        row = self.session_row(application)
        self.assertTrue(row.close_reason.startswith("token expired at "))

    def test_held_statement(self) -> None:
        """
        A statement held for approval when the token expires never runs:
        the client gets the FATAL, the table is still there, and the
        recording says the request was cancelled because the session
        ended.
        """
        application = "expiry-held"
        self.direct(
            "drop table if exists expiry_held; create table expiry_held (id int);"
            " alter table expiry_held owner to gw_scram"
        )
        psql = self.gateway.psql(
            "DROP TABLE expiry_held",
            token=self.token(self.LIFETIME),
            user="ci-bot",
            application_name=application,
            timeout=30,
        )
        self.assertNotEqual(psql.returncode, 0)
        self.assertIn("statement held for approval", psql.stderr)
        self.assertIn("the session's token expired at ", psql.stderr)
        self.assertEqual(
            self.direct("select to_regclass('public.expiry_held') is not null"), "t"
        )
        self.wait_backends(application, 0, within=1.0)
        row = self.session_row(application)
        decided = [
            e for e in _events(row.directory) if e["event"] == "approval-decided"
        ]
        self.assertEqual(len(decided), 1, decided)
        self.assertEqual(decided[0]["state"], "cancelled")
        self.assertTrue(
            decided[0]["reason"].startswith("session ended: token expired at ")
        )

    def test_target_keeps_session(self) -> None:
        """
        A target with C{end_session_at_token_expiry: false} lets a session
        outlive its token.
        """
        with psycopg.connect(
            self.gateway.conninfo("app_keep", user="ci-bot"),
            password=self.token(self.LIFETIME),
            autocommit=True,
        ) as conn:
            time.sleep(self.LIFETIME + 0.5)
            self.assertEqual(conn.execute("select 7").fetchone(), (7,))

    def test_lifetime_over_maximum(self) -> None:
        """
        With C{max_token_lifetime: 1h}, a token valid for two hours, or
        for ten years, or for two hours without C{iat}, is refused at
        login with 28P01, and the log says why; an hour's token logs in.
        """
        now = int(time.time())
        for token in (
            self.token(7200),
            self.token(10 * 365 * 86400),
            self.token(7200, iat=None),
        ):
            refused = self.gateway.psql("select 1", token=token, user="ci-bot")
            self.assertNotEqual(refused.returncode, 0)
            self.assertIn("authentication failed", refused.stderr)
        log = self.gateway.log()
        self.assertIn("exceeds the maximum of 3600s", log)
        self.assertIn("(exp - now) exceeds", log)
        accepted = self.gateway.psql(
            "select 'ok'", token=self.token(3600, iat=now), user="ci-bot"
        )
        self.assertEqual(accepted.returncode, 0, accepted.stderr)
