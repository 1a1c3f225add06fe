"""
The session index checked against the recordings of the real daemon:
an edited index is caught by C{gatehouse index check} and replaced by
C{gatehouse index rebuild}, from the recordings alone.
"""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import time

from gatehouse.recording.index import commands_for, get_session, query_sessions
from tests.protocols.postgres.test_e2e import GatewayTestCase


class IndexCheckE2ETests(GatewayTestCase):
    """Sessions recorded by psql through the daemon, then the index edited."""

    def gatehouse(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "gatehouse", *args],
            capture_output=True,
            text=True,
            timeout=60,
        )

    def test_edited_index_caught_and_rebuilt(self) -> None:
        gw = self.gateway
        config = ("--config", gw.config_path)
        started = time.time()
        self.psql_ok("select 41 + 1 as answer", token=gw.token(subject="alice"))
        alice = self.latest_session(started)
        started = time.time()
        self.psql_ok("select 'b' as who", token=gw.token(subject="bob"))
        bob = self.latest_session(started)
        index = gw.path("recordings", "index.sqlite3")
        self.assertEqual((alice.subject, bob.subject), ("alice", "bob"))

        result = self.gatehouse("index", "check", *config)
        self.assertEqual(result.returncode, 0, result.stdout + result.stderr)
        truth = [
            (c.seq, c.kind, c.text, c.decision, c.objects)
            for c in commands_for(index, alice.id)
        ]
        self.assertEqual([t[2] for t in truth], ["select 41 + 1 as answer"])

        conn = sqlite3.connect(index)
        try:
            conn.execute(
                "UPDATE sessions SET subject = 'bob' WHERE id = ?", (alice.id,)
            )
            changed = conn.execute(
                "UPDATE commands SET text = 'select 0' WHERE session_id = ?"
                " AND text = 'select 41 + 1 as answer'",
                (alice.id,),
            ).rowcount
            conn.commit()
        finally:
            conn.close()
        self.assertEqual(changed, 1)
        listed = self.gatehouse("sessions", *config, "--identity", "alice")
        self.assertNotIn(alice.id, listed.stdout)

        result = self.gatehouse("index", "check", *config)
        self.assertEqual(result.returncode, 1, result.stderr)
        lines = result.stdout.splitlines()
        self.assertIn(
            f"{alice.id}: subject: index says 'bob', recording says 'alice'", lines
        )
        self.assertIn(
            f"{alice.id}: commands[0].text: index says 'select 0', "
            "recording says (not sent by the client)",
            lines,
        )
        self.assertEqual(len(lines), 3, result.stdout)  # two, and the summary
        verify = self.gatehouse("verify", alice.id, *config)
        self.assertEqual(verify.returncode, 1, verify.stdout)
        self.assertIn("session: index-mismatch: the index's subject", verify.stdout)

        # The daemon has the index open: no replacing it under its feet.
        refused = self.gatehouse("index", "rebuild", "--replace", *config)
        self.assertEqual(refused.returncode, 2)
        self.assertIn(f"is open in process {gw.process.pid}", refused.stderr)

        gw.stop()
        rebuilt = self.gatehouse("index", "rebuild", "--replace", *config)
        self.assertEqual(rebuilt.returncode, 0, rebuilt.stderr)
        self.assertIn("old index kept as", rebuilt.stdout)
        result = self.gatehouse("index", "check", *config)
        self.assertEqual(result.returncode, 0, result.stdout + result.stderr)
        listed = self.gatehouse("sessions", *config, "--identity", "alice")
        self.assertEqual(listed.returncode, 0, listed.stderr)
        self.assertIn(alice.id, listed.stdout)
        self.assertNotIn(bob.id, listed.stdout)
        self.assertEqual(get_session(index, alice.id).subject, "alice")
        self.assertEqual(
            [r.id for r in query_sessions(index, command="select 41 + 1")], [alice.id]
        )
        self.assertEqual(
            [
                (c.seq, c.kind, c.text, c.decision, c.objects)
                for c in commands_for(index, alice.id)
            ],
            truth,
        )
        verify = self.gatehouse("verify", alice.id, *config)
        self.assertEqual(verify.returncode, 0, verify.stdout)
