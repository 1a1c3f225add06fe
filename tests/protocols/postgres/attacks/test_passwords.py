"""
Class 10, secrets in the recording: password messages (type C{p}: also
SASL and GSS responses) other than the one that authenticates.

A client sends a second password message in the packet of the first, or
one after login, alone, pipelined with queries, split across writes.
Judged on the evidence: the secret (and the client's token) appears in no
byte of the recording files, in no decoded record, in no line of
C{gatehouse export}; PostgreSQL never saw it (its log, pg_stat_activity);
the gateway ended the session with 08P01 and keeps serving others.
"""

from __future__ import annotations

import base64
import json
import os
import struct
import subprocess
import sys
import time

from gatehouse.protocols.postgres import codec
from gatehouse.recording.reader import read_records
from tests.protocols.postgres.attacks.corpus import Attack, add_cases
from tests.protocols.postgres.test_e2e import GatewayTestCase, RawClient

SECRET = b"s3cr3t-Hunter2-gatehouse-fake-credential"


def P(payload: bytes) -> bytes:
    """A password-type message with a raw body."""
    return codec.encode_message(b"p", payload)


def Q(sql: bytes) -> bytes:
    return codec.encode_message(b"Q", sql + b"\0")


CLEAR = P(SECRET + b"\0")
SASL_INITIAL = P(
    b"SCRAM-SHA-256\0" + struct.pack("!i", len(SECRET) + 9) + b"n,,n=x,r=" + SECRET
)
SASL_RESPONSE = P(b"c=biws,r=" + SECRET + b",p=" + SECRET)
GSS = P(SECRET)

#: (how the secret is sent) -- "with_login": appended to the packet that
#: carries the authenticating password; "after": after login, in the
#: given writes (a list of byte strings, sent one by one)
CASES = [
    Attack("second_in_login_packet", ("with_login", [CLEAR])),
    Attack(
        "second_in_startup_packet",
        ("with_startup", [CLEAR]),
        note="startup, password and a second password in one write",
    ),
    Attack("second_then_query_in_login", ("with_login", [CLEAR + Q(b"SELECT 1")])),
    Attack("query_then_second_in_login", ("with_login", [Q(b"SELECT 1") + CLEAR])),
    Attack("sasl_initial_in_login_packet", ("with_login", [SASL_INITIAL])),
    Attack("after_login_cleartext", ("after", [CLEAR])),
    Attack("after_login_sasl_initial", ("after", [SASL_INITIAL])),
    Attack("after_login_sasl_response", ("after", [SASL_RESPONSE])),
    Attack("after_login_gss", ("after", [GSS])),
    Attack("after_login_behind_query", ("after", [Q(b"SELECT 1") + CLEAR])),
    Attack("after_login_before_query", ("after", [CLEAR + Q(b"SELECT 1")])),
    Attack(
        "after_login_split_header",
        ("after", [CLEAR[:1], CLEAR[1:]]),
        note="the type byte alone, then the rest",
    ),
    Attack("after_login_split_body", ("after", [CLEAR[:9], CLEAR[9:]])),
    Attack("after_login_two", ("after", [CLEAR + CLEAR])),
    Attack(
        "after_login_in_extended_batch",
        (
            "after",
            [
                codec.encode_message(b"P", b"\0SELECT 1\0\0\0")
                + CLEAR
                + codec.encode_message(b"S")
            ],
        ),
    ),
    Attack(
        "after_login_while_held",
        ("after", [Q(b"SELECT pg_sleep(0.5)") + Q("SELECT 'é'".encode()) + CLEAR]),
        note="behind a statement held at the barrier",
    ),
    Attack("after_login_token_again", ("after_token", [])),
    Attack(
        "query_instead_of_password_then_password",
        ("instead", [Q(b"SELECT 1") + CLEAR]),
        note="not a password first: the password behind it is redacted too",
    ),
]


class PasswordTests(GatewayTestCase):
    """The corpus of class 10."""

    def setUp(self) -> None:
        super().setUp()
        self.token = self.gateway.token()

    def run_attack(self, attack: Attack) -> None:
        how, writes = attack.payload
        start = time.time()
        mark = self.log_mark()
        log_mark = self.cluster.log_size()
        client = RawClient(self.gateway.port, self.gateway.ca_cert)
        startup = codec.StartupMessage({"user": "alice", "database": "app"}).encode()
        password = codec.PasswordMessage(self.token).encode()
        try:
            if how == "with_startup":
                client.send(startup + password + b"".join(writes))
            elif how == "with_login":
                client.send(startup)
                client.expect(b"R")
                client.send(password + b"".join(writes))
            elif how == "instead":
                client.send(startup)
                client.expect(b"R")
                client.send(b"".join(writes))
            else:
                client.login(self.token)
                if how == "after_token":
                    writes = [password]
                for data in writes:
                    client.send(data)
                    time.sleep(0.05)
            got = client.read_all()
        finally:
            client.close()
        self.assertIn(b"08P01", got, f"no protocol error for {attack.name}")
        secrets = [SECRET, self.token.encode()]
        if how == "instead":
            # Refused before the token was verified: an event, no recording.
            log = self.assert_login_event(mark, "no password message")
            for secret in secrets:
                self.assertNotIn(secret.decode(), log, "the log has the secret")
        else:
            row = self.latest_session(start)
            self.assert_not_recorded(row, secrets)
            self.assert_not_exported(row, secrets)
        server = self.cluster.server_log(log_mark)
        activity = self.direct("select string_agg(query, ' ') from pg_stat_activity")
        for secret in secrets:
            self.assertNotIn(secret.decode(), server, "the target saw the secret")
            self.assertNotIn(secret.decode(), activity)
        self.assert_still_serving()

    def assert_not_recorded(self, row: object, secrets: list) -> None:
        for name in os.listdir(row.directory):
            with open(os.path.join(row.directory, name), "rb") as f:
                raw = f.read()
            for secret in secrets:
                self.assertNotIn(secret, raw, f"secret in {name}")
        for record in read_records(row.directory):
            for secret in secrets:
                self.assertNotIn(secret, record.payload, "secret in a record")

    def assert_not_exported(self, row: object, secrets: list) -> None:
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "gatehouse.cli",
                "export",
                str(row.id),
                "--recordings",
                self.gateway.path("recordings"),
            ],
            capture_output=True,
            timeout=60,
        )
        self.assertEqual(result.returncode, 0, result.stderr)
        lines = result.stdout.splitlines()
        self.assertTrue(lines)
        for line in lines:
            obj = json.loads(line)
            payload = base64.b64decode(obj.get("payload", ""))
            for secret in secrets:
                self.assertNotIn(secret, line)
                self.assertNotIn(secret, payload)


add_cases(PasswordTests, CASES)
