"""
kubectl exec, cp and port-forward through the real daemon: WebSocket on
the kubectl versions that use it for exec (1.30 and later), SPDY on 1.27
to 1.29; real processes in the test API server's pods.
"""

from __future__ import annotations

import hashlib
import os
from typing import Any

from twisted.internet.defer import inlineCallbacks

from tests.fixtures.kubeapi import KubeAPIServer
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
        return KubeGateway(directory, api, policy={"opaque": "deny", "rules": []})

    def setUp(self) -> None:
        super().setUp()
        if self.api.get_object("/api/v1/namespaces/shop") is None:
            self.api.create(
                "/api/v1/namespaces",
                {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "shop"}},
            )
        if self.api.get_object("/api/v1/namespaces/shop/pods/web-1") is None:
            self.api.create("/api/v1/namespaces/shop/pods", pod("web-1"))

    @inlineCallbacks
    def test_exec_every_version(self) -> Any:
        """
        exec with stdin piped, stdout, stderr and the exit code, on each
        version: through WebSocket from 1.30, SPDY before.
        """
        data = os.urandom(200_000)
        for version in VERSIONS:
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
