"""
End-to-end: an SSH exec held for approval, through the real daemon, with
the real OpenSSH client (the JWT as its password) and a real sshd.

The reviewed program is C{touch} (and C{cat}): what it did is judged on
the target's disk (the file exists or not) and by the client's exit
status, not by the gateway's messages alone.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time

from twisted.trial import unittest

from gatehouse.recording.format import RecordType
from gatehouse.recording.reader import read_records
from tests.protocols.ssh._approval_harness import Background, SSHGateway, shared_gateway

#: the exit status of an exec the gateway kept from the target
REFUSED = 126

POLICY = {
    "review": {"approvers": ["approvers"], "timeout": "60s"},
    "rules": [
        {
            "name": "touch-quick",
            "protocols": ["ssh"],
            "program": ["touch"],
            "arg": ["*/quick-*"],
            "action": "review",
            "timeout": "2s",
        },
        {
            "name": "touch-two",
            "protocols": ["ssh"],
            "program": ["touch"],
            "arg": ["*/two-*"],
            "action": "review",
            "approvals": 2,
        },
        {
            "name": "touch-review",
            "protocols": ["ssh"],
            "program": ["touch", "cat"],
            "action": "review",
            "message": "touching needs a second pair of eyes",
        },
    ],
}


class _HeldCase(unittest.TestCase):
    """Helpers for tests that hold an exec on a gateway (C{self.gw})."""

    gw: SSHGateway
    work: str

    def events(self, session_id: str) -> list[dict]:
        """The EVENT records of the session C{session_id}."""
        for directory in self.gw.gateway.recordings():
            if directory.endswith(session_id):
                return [
                    json.loads(r.payload)
                    for r in read_records(directory)
                    if r.type == RecordType.EVENT
                ]
        self.fail(f"no recording of {session_id}")

    def decided(self, session_id: str, timeout: float = 10) -> dict:
        """The recording's C{approval-decided} event of the session."""
        deadline = time.monotonic() + timeout
        while True:
            events = self.events(session_id)
            found = [e for e in events if e["event"] == "approval-decided"]
            if found or time.monotonic() > deadline:
                self.assertEqual(len(found), 1, events)
                return found[0]
            time.sleep(0.1)

    def path(self, name: str) -> str:
        return os.path.join(self.work, name)

    def hold(
        self, name: str, token: str | None = None, extra: str = ""
    ) -> tuple[Background, dict]:
        """Run C{touch PATH} through the gateway; return it and its pending request."""
        client = self.gw.popen(f"touch {self.path(name)}{extra}", token=token)
        self.addCleanup(client.kill)
        request = self.gw.pending(self.path(name))
        return client, request

    def assertHeld(self, client: Background, request: dict, name: str) -> None:
        """The client waits, was told why and how, and nothing ran."""
        stderr = client.wait_stderr(b"approvals approve").decode()
        self.assertIn("gatehouse: held for approval", stderr)
        self.assertIn(f"gatehouse: request {request['id']}", stderr)
        self.assertIn("gatehouse approvals approve", stderr)
        time.sleep(0.5)
        self.assertFalse(client.done, "the client finished while held")
        self.assertFalse(os.path.exists(self.path(name)), "ran while held")


class ApprovalTests(_HeldCase):
    """An exec under review waits in the live session until people decide."""

    def setUp(self) -> None:
        self.gw = shared_gateway(ApprovalTests, lambda: SSHGateway(policy=POLICY))
        self.work = tempfile.mkdtemp(prefix="gatehouse-ssh-approval-")
        os.chmod(self.work, 0o777)
        self.addCleanup(shutil.rmtree, self.work, True)

    def test_approved(self) -> None:
        """
        Held: the client reads why and how to approve, nothing ran; approved
        with the CLI: the command runs, its output reaches the client, exit 0.
        The recording holds the request and the vote.
        """
        client, request = self.hold("approved", extra="; echo touched")
        self.assertEqual(request["commands"][0]["kind"], "exec")
        self.assertHeld(client, request, "approved")
        shown = self.gw.approvals("show", request["id"], token=self.gw.approver())
        self.assertEqual(shown.returncode, 0, shown.stderr)
        self.assertIn(f"touch {self.path('approved')}", shown.stdout)
        approved = self.gw.approvals(
            "approve", request["id"], "-m", "OPS-1", token=self.gw.approver()
        )
        self.assertEqual(approved.returncode, 0, approved.stderr)
        self.assertEqual(client.wait(), 0, client.stderr)
        self.assertEqual(client.stdout, b"touched\n")
        self.assertTrue(os.path.exists(self.path("approved")))

        decided = self.decided(request["session_id"])
        self.assertEqual(decided["state"], "approved")
        events = self.events(request["session_id"])
        names = [e["event"] for e in events]
        self.assertIn("approval-requested", names)
        vote = next(e for e in events if e["event"] == "approval-approved")
        self.assertEqual((vote["approver"], vote["comment"]), ("bob", "OPS-1"))

    def test_denied(self) -> None:
        """Denied: nothing ran, exit status 126, the denier's reason on stderr."""
        client, request = self.hold("denied")
        self.assertHeld(client, request, "denied")
        denied = self.gw.approvals(
            "deny", request["id"], "-m", "not today", token=self.gw.approver()
        )
        self.assertEqual(denied.returncode, 0, denied.stderr)
        self.assertEqual(client.wait(), REFUSED, client.stderr)
        self.assertIn(b"not today", client.stderr)
        time.sleep(0.3)
        self.assertFalse(os.path.exists(self.path("denied")))
        self.assertEqual(self.decided(request["session_id"])["state"], "denied")

    def test_timed_out(self) -> None:
        """Nobody decides within the rule's timeout: refused, with that reason."""
        client, request = self.hold("quick-1")
        self.assertEqual(request["rule"], "touch-quick")
        self.assertEqual(client.wait(30), REFUSED, client.stderr)
        self.assertIn(b"timed out", client.stderr)
        self.assertFalse(os.path.exists(self.path("quick-1")))
        self.assertEqual(self.decided(request["session_id"])["state"], "expired")

    def test_self_approval_refused(self) -> None:
        """The requester, even an approver, cannot approve their own request."""
        own = self.gw.token("dave", "approvers")
        client, request = self.hold("self", token=own)
        refused = self.gw.approvals("approve", request["id"], token=own)
        self.assertEqual(refused.returncode, 1, refused.stdout)
        self.assertIn("own", refused.stderr)
        self.assertHeld(client, request, "self")
        self.assertEqual(self.gw.pending(self.path("self"))["id"], request["id"])
        self.gw.approvals("deny", request["id"], token=self.gw.approver())
        self.assertEqual(client.wait(), REFUSED)
        self.assertFalse(os.path.exists(self.path("self")))

    def test_outside_group_refused(self) -> None:
        """Someone outside the rule's approver groups cannot approve."""
        client, request = self.hold("group")
        refused = self.gw.approvals(
            "approve", request["id"], token=self.gw.token("mallory", "ops")
        )
        self.assertEqual(refused.returncode, 1, refused.stdout)
        self.assertIn("approvers", refused.stderr)
        self.assertHeld(client, request, "group")
        self.gw.approvals("deny", request["id"], token=self.gw.approver())
        self.assertEqual(client.wait(), REFUSED)
        self.assertFalse(os.path.exists(self.path("group")))

    def test_two_approvals(self) -> None:
        """Two votes needed: after one (and a repeat) it waits; after two it runs."""
        client, request = self.hold("two-1")
        self.assertEqual(request["approvals_required"], 2)
        first = self.gw.approvals("approve", request["id"], token=self.gw.approver())
        self.assertEqual(first.returncode, 0, first.stderr)
        again = self.gw.approvals("approve", request["id"], token=self.gw.approver())
        self.assertEqual(again.returncode, 1, again.stdout)
        self.assertHeld(client, request, "two-1")
        second = self.gw.approvals(
            "approve", request["id"], token=self.gw.approver("carol")
        )
        self.assertEqual(second.returncode, 0, second.stderr)
        self.assertEqual(client.wait(), 0, client.stderr)
        self.assertTrue(os.path.exists(self.path("two-1")))

    def test_client_gone_while_held(self) -> None:
        """
        A client that hangs up while its exec waits: the request is
        cancelled for good (a late approval fails) and nothing runs.
        """
        client, request = self.hold("gone")
        self.assertHeld(client, request, "gone")
        client.kill()
        self.assertEqual(self.decided(request["session_id"])["state"], "cancelled")
        late = self.gw.approvals("approve", request["id"], token=self.gw.approver())
        self.assertEqual(late.returncode, 1, late.stdout)
        self.assertIn("cancelled", late.stderr)
        time.sleep(0.3)
        self.assertFalse(os.path.exists(self.path("gone")))

    def test_stdin_after_approval(self) -> None:
        """
        What the client sends while its exec waits reaches the program once
        it is approved (C{echo data | ssh web-1@gw 'cat > x'}).
        """
        target = self.path("stdin")
        client = self.gw.popen(f"cat > {target}", input=b"data\n")
        self.addCleanup(client.kill)
        request = self.gw.pending(target)
        self.assertHeld(client, request, "stdin")
        approved = self.gw.approvals("approve", request["id"], token=self.gw.approver())
        self.assertEqual(approved.returncode, 0, approved.stderr)
        self.assertEqual(client.wait(), 0, client.stderr)
        with open(target, "rb") as f:
            self.assertEqual(f.read(), b"data\n")

    def test_api_approval(self) -> None:
        """The admin API (POST with the approver's token) approves as the CLI does."""
        client, request = self.hold("api")
        self.assertHeld(client, request, "api")
        answer = self.gw.admin(
            "POST",
            f"/api/v1/approvals/{request['id']}/approve",
            {"comment": "via the API"},
        )
        self.assertEqual(answer["approval"]["state"], "approved")
        self.assertEqual(client.wait(), 0, client.stderr)
        self.assertTrue(os.path.exists(self.path("api")))


class GatewayStopTests(_HeldCase):
    """Stopping the daemon while an exec waits: it never runs."""

    def setUp(self) -> None:
        self.gw = SSHGateway(policy=POLICY)
        self.addCleanup(self.gw.stop)
        self.work = tempfile.mkdtemp(prefix="gatehouse-ssh-approval-stop-")
        os.chmod(self.work, 0o777)
        self.addCleanup(shutil.rmtree, self.work, True)

    def test_stop_while_held(self) -> None:
        client, request = self.hold("stopped")
        self.assertHeld(client, request, "stopped")
        self.gw.gateway.stop()
        status = client.wait(30)
        self.assertEqual(status, 255, client.stderr)  # ssh: disconnected
        self.assertIn(b"gatehouse: gateway stopping", client.stderr)
        time.sleep(0.5)
        self.assertFalse(os.path.exists(self.path("stopped")))
        # The recording: the request ended unapproved, the session with the reason.
        events = self.events(request["session_id"])
        self.assertNotEqual(self.decided(request["session_id"])["state"], "approved")
        exits = [e for e in events if e["event"] == "ssh-exit"]
        # only the gateway's own refusal: the target never started a program
        self.assertEqual(
            [(e.get("by"), e.get("status")) for e in exits], [("gateway", REFUSED)]
        )
        self.assertIn("gateway stopping", self.gw.gateway.log())
        self.gw.sshd.stop()  # and nothing waits in the target to run it later
