"""
kubectl exec, cp and port-forward through the real daemon: WebSocket on
the kubectl versions that use it for exec (1.30 and later), SPDY on 1.27
to 1.29; real processes in the test API server's pods.
"""

from __future__ import annotations

import hashlib
import os
import time
from typing import Any

from twisted.internet.defer import inlineCallbacks

from tests.fixtures.kubeapi import KubeAPIServer
from tests.gateway_recordings import events, stream_bytes
from tests.protocols.kubernetes.harness import KubeGateway, KubeGatewayTestCase

RULES = [
    {
        "groups": ["sre"],
        "verbs": ["*"],
        "apiGroups": [""],
        "resources": ["*"],
        "namespaces": ["shop"],
    },
]

#: every kubectl version, and the way it runs exec by default
VERSIONS = ("1.27", "1.28", "1.29", "1.30", "1.31", "1.32", "1.33")


POLICY = {
    "review": {"approvers": ["approvers"], "timeout": "60s"},
    "rules": [
        {
            "name": "exec-held-pods",
            "protocols": ["kubernetes"],
            "verb": ["exec"],
            "namespace": ["shop"],
            "resource_name": ["held-*"],
            "action": "review",
            "message": "exec into held pods needs a second pair of eyes",
        },
        {
            "name": "exec-quick-pods",
            "protocols": ["kubernetes"],
            "verb": ["exec"],
            "resource_name": ["quick-*"],
            "action": "review",
            "timeout": "2s",
        },
    ],
}


def pod(name: str) -> dict[str, Any]:
    """A pod whose one container sleeps."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": "shop"},
        "spec": {
            "containers": [
                {"name": "app", "image": "busybox", "command": ["sleep", "3600"]}
            ]
        },
    }


class ExecTests(KubeGatewayTestCase):
    """exec on every kubectl version."""

    rules = RULES
    timeout = 300

    @classmethod
    def make(cls, directory: str, api: KubeAPIServer) -> KubeGateway:
        return KubeGateway(directory, api, policy=POLICY)

    def setUp(self) -> None:
        super().setUp()
        self.ensure_namespace("shop")
        for name in ("web-1", "held-1", "quick-1"):
            if self.api.get_object(f"/api/v1/namespaces/shop/pods/{name}") is None:
                self.api.create("/api/v1/namespaces/shop/pods", pod(name))
        self.work = os.path.abspath(self.mktemp())
        os.makedirs(self.work)
        os.chmod(self.work, 0o777)

    def hold(self, pod: str, name: str, version: str = "1.33") -> tuple[Any, dict]:
        """Start C{touch WORK/NAME} in C{pod}; it and its pending request."""
        path = os.path.join(self.work, name)
        d = self.gw.kubectl(
            "exec", "-n", "shop", pod, "--", "touch", path, version=version
        )
        request = self.gw.http.pending(path)
        self.assertFalse(d.called, "kubectl finished while held")
        self.assertFalse(os.path.exists(path), "ran while held")
        return d, request

    @inlineCallbacks
    def test_approved(self) -> Any:
        """
        Held (kubectl waits, nothing runs), approved with the CLI: the
        command runs and kubectl exits 0; on SPDY and WebSocket alike.
        """
        for version in ("1.28", "1.33"):
            d, request = self.hold("held-1", f"approved-{version}", version)
            self.assertEqual(request["commands"][0]["kind"], "exec")
            approved = self.gw.http.approvals(
                "approve", request["id"], "-m", "OPS-1", token=self.gw.http.approver()
            )
            self.assertEqual(approved.returncode, 0, approved.stderr)
            _out, err, code = yield d
            self.assertEqual(code, 0, err)
            self.assertTrue(
                os.path.exists(os.path.join(self.work, f"approved-{version}"))
            )

    @inlineCallbacks
    def test_denied(self) -> Any:
        """Denied by an approver: kubectl prints the Status; nothing ran."""
        d, request = self.hold("held-1", "denied")
        denied = self.gw.http.approvals(
            "deny", request["id"], "-m", "not today", token=self.gw.http.approver()
        )
        self.assertEqual(denied.returncode, 0, denied.stderr)
        _out, err, code = yield d
        self.assertNotEqual(code, 0)
        self.assertIn(b"Error from server (Forbidden)", err)
        self.assertFalse(os.path.exists(os.path.join(self.work, "denied")))

    @inlineCallbacks
    def test_review_times_out(self) -> Any:
        """Nobody decides within the rule's 2 s: refused; nothing ran."""
        path = os.path.join(self.work, "late")
        _out, err, code = yield self.gw.kubectl(
            "exec", "-n", "shop", "quick-1", "--", "touch", path
        )
        self.assertNotEqual(code, 0)
        self.assertIn(b"Error from server (Forbidden)", err)
        self.assertFalse(os.path.exists(path))

    @inlineCallbacks
    def test_exec_every_version(self) -> Any:
        """
        exec with stdin piped, stdout, stderr and the exit code, on each
        version: through WebSocket from 1.30, SPDY before.
        """
        data = os.urandom(200_000)
        for version in VERSIONS:
            started = time.time()
            out, err, code = yield self.gw.kubectl(
                "exec",
                "-i",
                "-n",
                "shop",
                "web-1",
                "--",
                "sh",
                "-c",
                "sha256sum; echo oops >&2; exit 3",
                version=version,
                stdin=data,
            )
            self.assertEqual(code, 3, (version, err))
            self.assertEqual(
                out.split()[0].decode(), hashlib.sha256(data).hexdigest(), version
            )
            self.assertIn(b"oops", err, version)
            self.assertRecorded(started, data, out, version)

    def assertRecorded(
        self, started: float, stdin: bytes, stdout: bytes, version: str
    ) -> None:
        """
        The exec's session recorded stdin, stdout and stderr apart (decoded
        from WebSocket or SPDY), and the exit status.
        """
        sessions = self.gw.http.wait_sessions(started, kind="exec")
        records = self.gw.http.export(str(sessions[-1].id), cli=False)
        [request] = events(records, "http-request")
        channel = request["_channel"]
        [switched] = events(records, "http-response")
        self.assertEqual(switched["status"], 101)
        upgrade = dict(switched["headers"])["upgrade"].lower()
        spdy = version in ("1.27", "1.28", "1.29")
        self.assertEqual(upgrade, "spdy/3.1" if spdy else "websocket", version)

        def stream(ch: int, direction: str) -> bytes:
            return stream_bytes(records, ch, direction)

        self.assertEqual(stream(channel, "client_to_gateway"), stdin, version)
        self.assertEqual(stream(channel, "gateway_to_client"), stdout, version)
        self.assertEqual(
            stream(channel | 0x8000, "gateway_to_client"), b"oops\n", version
        )
        names = [r["json"]["event"] for r in records if r["type"] == "EVENT"]
        exits = events(records, "k8s-exit")
        self.assertEqual(len(exits), 1, names)
        exit_event = exits[0]
        self.assertEqual(exit_event["code"], 3, version)
