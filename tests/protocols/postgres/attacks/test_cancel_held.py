"""
Class 6, approval and cancel: a CancelRequest for a statement the gateway
holds (for approval, at the barrier, while it is classified).

The client gets 57014 in the statement's place and its session goes on;
the approval request is cancelled and can never be approved afterwards;
the statement never ran (judged on the server: the table still there, the
row not inserted).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time

from gatehouse.protocols.postgres import codec
from gatehouse.recording.format import RecordType
from gatehouse.recording.reader import read_records
from tests.protocols.postgres.attacks.corpus import Attack, add_cases
from tests.protocols.postgres.harness import Gateway, clean_env
from tests.protocols.postgres.test_e2e import GatewayTestCase, RawClient, error_of

POLICY = {
    "policy": {
        "review": {"approvers": ["approvers"], "timeout": "60s"},
        "rules": [
            {"name": "drop-review", "kind": ["DropStmt"], "action": "review"},
            {
                "name": "delete-review",
                "kind": ["DeleteStmt"],
                "action": "review",
            },
        ],
    }
}

TABLE = "cancel_victim"
READY = codec.BackendType.READY_FOR_QUERY


def Q(sql: str) -> bytes:
    return codec.Query(sql).encode()


def X(sql: str) -> bytes:
    return (
        codec.encode_message(b"P", b"\0" + sql.encode() + b"\0\0\0")
        + codec.encode_message(b"B", b"\0\0\0\0\0\0\0\0")
        + codec.encode_message(b"E", b"\0\0\0\0\0")
        + codec.encode_message(b"S")
    )


#: payload: (what is held, how it is sent, what the held statement is)
CASES = [
    Attack("approval_drop_simple", ("approval", Q(f"DROP TABLE {TABLE}"), 1)),
    Attack(
        "approval_delete_simple",
        ("approval", Q(f"DELETE FROM {TABLE} WHERE id = 1"), 1),
    ),
    Attack("approval_drop_extended", ("approval", X(f"DROP TABLE {TABLE}"), 1)),
    Attack(
        "approval_in_transaction",
        ("approval", Q("BEGIN") + Q(f"DROP TABLE {TABLE}"), 2),
        note="held inside a transaction block; the block then fails",
    ),
    Attack(
        "approval_pipelined_behind",
        ("approval", Q(f"DROP TABLE {TABLE}") + Q("SELECT 'behind'"), 2),
        note="what the client pipelined behind the held statement still runs",
    ),
    Attack(
        "barrier_insert",
        (
            "barrier",
            Q("SELECT pg_sleep(3)") + Q(f"INSERT INTO {TABLE} VALUES (99, 'é-held')"),
        ),
        note="held at the barrier behind a running statement",
    ),
    Attack(
        "classification_insert",
        (
            "classification",
            Q(
                f"INSERT INTO {TABLE} SELECT 98, 'long' WHERE 1 IN ("
                + ",".join(str(i) for i in range(300_000))
                + ")"
            ),
        ),
        note="held while a long statement is classified",
    ),
    Attack("wrong_key", ("wrong_key", Q(f"DROP TABLE {TABLE}"))),
    Attack("psql_sigint", ("psql", f"DROP TABLE {TABLE}")),
    Attack(
        "cancel_then_next_approved", ("next", Q(f"DELETE FROM {TABLE} WHERE id = 2"))
    ),
]


class CancelHeldTests(GatewayTestCase):
    """The corpus of class 6."""

    def make_gateway(self, base: str) -> Gateway:
        return Gateway(base, self.cluster, extra_config=POLICY, admin=True)

    def setUp(self) -> None:
        super().setUp()
        self.direct(
            f"drop table if exists {TABLE}; "
            f"create table {TABLE} (id int primary key, v text); "
            f"insert into {TABLE} select i, 'v' || i from generate_series(1, 5) i; "
            f"alter table {TABLE} owner to gw_scram"
        )
        self.before = self.rows()

    def rows(self) -> str:
        return self.direct(f"select * from {TABLE} order by id")

    def agent(self) -> str:
        return self.gateway.token(subject="agent-cancel", groups=("agents",))

    def approver(self) -> str:
        return self.gateway.token(subject="bob", groups=("approvers",))

    def cli(self, *args: str) -> subprocess.CompletedProcess:
        env = dict(os.environ)
        env["GATEHOUSE_TOKEN"] = self.approver()
        env["GATEHOUSE_ADMIN_URL"] = self.gateway.admin_url
        return subprocess.run(
            [sys.executable, "-m", "gatehouse", "approvals", *args],
            capture_output=True,
            text=True,
            env=env,
            timeout=30,
        )

    def pending(self, timeout: float = 20) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            listed = self.cli("list", "--json")
            for request in json.loads(listed.stdout)["approvals"]:
                texts = " ".join(c["text"] for c in request["commands"])
                if TABLE in texts and request["state"] == "pending":
                    return request
            time.sleep(0.1)
        self.fail("no pending approval")

    def assert_not_approvable(self, request: dict) -> None:
        approved = self.cli("approve", request["id"], "-m", "too late")
        self.assertNotEqual(approved.returncode, 0, approved.stdout)
        self.assertIn("cancelled", approved.stderr + approved.stdout)
        shown = self.cli("show", request["id"], "--json")
        self.assertEqual(json.loads(shown.stdout)["approval"]["state"], "cancelled")

    def assert_intact(self) -> None:
        self.assertEqual(self.direct(f"select to_regclass('{TABLE}') is not null"), "t")
        self.assertEqual(self.rows(), self.before)
        self.assert_still_serving()

    # -- helpers -------------------------------------------------------------

    def login(self) -> tuple[RawClient, int, bytes]:
        client = RawClient(self.gateway.port, self.gateway.ca_cert)
        got = client.login(self.agent())
        for kind, body in codec.FrameReader.backend().feed_messages(got):
            if kind == codec.BackendType.BACKEND_KEY_DATA:
                key = codec.BackendKeyData.decode(body)
                return client, key.pid, key.secret
        raise AssertionError("no BackendKeyData")

    def cancel(self, pid: int, secret: bytes) -> None:
        with socket.create_connection(("127.0.0.1", self.gateway.port)) as s:
            s.sendall(codec.CancelRequest(pid, secret).encode())
            s.recv(10)

    def read_ready(self, client: RawClient, count: int) -> bytes:
        reader = codec.FrameReader.backend()
        got, seen = b"", 0
        client.sock.settimeout(20)
        while seen < count:
            chunk = client.sock.recv(65536)
            if not chunk:
                break
            got += chunk
            seen += sum(1 for k, _ in reader.feed_messages(chunk) if k == READY)
        return got

    def cancel_events(self, start: float) -> list:
        row = self.latest_session(start)
        return [
            e
            for e in (
                json.loads(r.payload)
                for r in read_records(row.directory)
                if r.type == RecordType.EVENT
            )
            if e.get("event") == "cancel-request"
        ]

    # -- the runner ------------------------------------------------------------

    def run_attack(self, attack: Attack) -> None:
        getattr(self, f"try_{attack.payload[0]}")(*attack.payload[1:])
        self.assert_intact()

    def try_approval(self, data: bytes, ready: int) -> None:
        start = time.time()
        client, pid, secret = self.login()
        try:
            client.send(data)
            request = self.pending()
            self.cancel(pid, secret)
            got = self.read_ready(client, ready)
            self.assertEqual(error_of(got).sqlstate, "57014")
            self.assertIn(b"canceling statement due to user request", got)
            if b"behind" in data:
                self.assertIn(b"behind", got)
            client.send(Q("ROLLBACK") + Q("SELECT 'after-cancel'"))
            self.assertIn(b"after-cancel", self.read_ready(client, 2))
            self.assert_not_approvable(request)
        finally:
            client.close()
        events = self.cancel_events(start)
        self.assertEqual([e["held"] for e in events], ["approval"])
        self.assertEqual(events[0]["approval"], request["id"])

    def try_barrier(self, data: bytes) -> None:
        client, pid, secret = self.login()
        try:
            client.send(data)
            time.sleep(0.5)
            self.cancel(pid, secret)
            got = self.read_ready(client, 2)
            self.assertEqual(got.count(b"57014"), 2, got)
            client.send(Q("SELECT 'after-cancel'"))
            self.assertIn(b"after-cancel", self.read_ready(client, 1))
        finally:
            client.close()

    def try_classification(self, data: bytes) -> None:
        client, pid, secret = self.login()
        try:
            client.send(data)
            time.sleep(0.2)
            self.cancel(pid, secret)
            got = self.read_ready(client, 1)
            self.assertEqual(error_of(got).sqlstate, "57014")
            client.send(Q("SELECT 'after-cancel'"))
            self.assertIn(b"after-cancel", self.read_ready(client, 1))
        finally:
            client.close()

    def try_wrong_key(self, data: bytes) -> None:
        client, pid, secret = self.login()
        try:
            client.send(data)
            request = self.pending()
            self.cancel(pid, bytes(b ^ 0xFF for b in secret))
            self.cancel(pid ^ 1, secret)
            time.sleep(0.5)
            shown = self.cli("show", request["id"], "--json")
            self.assertEqual(json.loads(shown.stdout)["approval"]["state"], "pending")
            denied = self.cli("deny", request["id"], "-m", "no")
            self.assertEqual(denied.returncode, 0, denied.stderr)
            self.assertEqual(error_of(self.read_ready(client, 1)).sqlstate, "42501")
        finally:
            client.close()

    def try_psql(self, sql: str) -> None:
        env = clean_env(PGPASSWORD=self.agent())
        process = subprocess.Popen(
            [
                self.cluster.bin("psql"),
                "-X",
                "-v",
                "VERBOSITY=verbose",
                "-c",
                sql,
                self.gateway.conninfo(),
            ],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            request = self.pending()
            process.send_signal(signal.SIGINT)
            _, err = process.communicate(timeout=30)
        finally:
            if process.poll() is None:
                process.kill()
        self.assertIn("57014", err)
        self.assertIn("canceling statement due to user request", err)
        self.assert_not_approvable(request)

    def try_next(self, data: bytes) -> None:
        client, pid, secret = self.login()
        try:
            client.send(data)
            first = self.pending()
            self.cancel(pid, secret)
            self.assertEqual(error_of(self.read_ready(client, 1)).sqlstate, "57014")
            self.assert_not_approvable(first)
            client.send(Q(f"DELETE FROM {TABLE} WHERE id = 1000"))
            second = self.pending()
            self.assertNotEqual(first["id"], second["id"])
            approved = self.cli("approve", second["id"], "-m", "ok")
            self.assertEqual(approved.returncode, 0, approved.stderr)
            self.assertIn(b"DELETE 0", self.read_ready(client, 1))
        finally:
            client.close()


add_cases(CancelHeldTests, CASES)
