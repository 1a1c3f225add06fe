"""
C{gatehouse replay} of real Kubernetes sessions: kubectl through the
daemon, then the real CLI's timeline.
"""

from __future__ import annotations

import time
from typing import Any

from twisted.internet.defer import inlineCallbacks

from tests.fixtures.kubeapi import KubeAPIServer
from tests.protocols.kubernetes.harness import KubeGateway, KubeGatewayTestCase
from tests.protocols.kubernetes.test_exec_e2e import RULES, pod

POLICY = {
    "opaque": "deny",
    "rules": [
        {
            "name": "keep-pods",
            "protocols": ["kubernetes"],
            "verb": ["delete"],
            "resource": ["pods"],
            "action": "deny",
            "message": "pods stay",
        },
    ],
}


class ReplayTests(KubeGatewayTestCase):
    """The replay of a get, a denied delete and an exec."""

    rules = RULES
    timeout = 180

    @classmethod
    def make(cls, directory: str, api: KubeAPIServer) -> KubeGateway:
        return KubeGateway(directory, api, policy=POLICY)

    def setUp(self) -> None:
        super().setUp()
        if self.api.get_object("/api/v1/namespaces/shop") is None:
            self.api.create(
                "/api/v1/namespaces",
                {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "shop"}},
            )
        if self.api.get_object("/api/v1/namespaces/shop/pods/web-1") is None:
            self.api.create("/api/v1/namespaces/shop/pods", pod("web-1"))

    def replay_of(self, started: float, **filters: Any) -> str:
        [session] = self.gw.http.wait_sessions(started, **filters)[-1:]
        return self.gw.http.replay(str(session.id))

    @inlineCallbacks
    def test_get(self) -> Any:
        """A list: its line with status and the items counted."""
        started = time.time()
        _out, err, code = yield self.gw.kubectl("get", "pods", "-n", "shop")
        self.assertEqual(code, 0, err)
        text = self.replay_of(started)
        self.assertRegex(
            text, r"\n\d\d:\d\d:\d\d alice list pods -n shop → 200, 1 item \("
        )

    @inlineCallbacks
    def test_denied_delete(self) -> Any:
        """A denied delete: refused with the rule's message."""
        started = time.time()
        _out, _err, code = yield self.gw.kubectl("delete", "pod", "web-1", "-n", "shop")
        self.assertNotEqual(code, 0)
        text = self.replay_of(started)
        self.assertIn(
            " alice delete pods/web-1 -n shop → 403 refused: pods stay"
            " (rule keep-pods)\n",
            text,
        )

    @inlineCallbacks
    def test_exec(self) -> Any:
        """A non-tty exec: stdout, stderr marked, the exit status."""
        started = time.time()
        _out, err, code = yield self.gw.kubectl(
            "exec",
            "-n",
            "shop",
            "web-1",
            "--",
            "sh",
            "-c",
            "echo hello; echo oops >&2; exit 3",
        )
        self.assertEqual(code, 3, err)
        text = self.replay_of(started, kind="exec")
        self.assertIn("  hello\n", text)
        self.assertIn("  [stderr] oops\n", text)
        self.assertIn("  exit status 3\n", text)
