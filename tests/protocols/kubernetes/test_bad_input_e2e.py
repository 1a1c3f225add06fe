"""
Bad input at the Kubernetes listener, each a test: the client gets a
Status it can read, nothing reaches the cluster (its audit log says so),
the gateway keeps serving, and the recording says what happened.
"""

from __future__ import annotations

import json
import time
from typing import Any

from twisted.internet.defer import inlineCallbacks

from gatehouse._pgcluster import free_port
from tests.fixtures.kubeapi import KubeAPIServer
from tests.gateway_recordings import events
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

LIMITS = {"max_header_bytes": "8KiB", "max_body_bytes": "1MiB"}


class BadInputTests(KubeGatewayTestCase):
    """One gateway (small limits) in front of one API server."""

    rules = RULES
    timeout = 120

    @classmethod
    def make(cls, directory: str, api: KubeAPIServer) -> KubeGateway:
        return KubeGateway(
            directory,
            api,
            policy={"opaque": "deny", "rules": []},
            listener_options=LIMITS,
        )

    def setUp(self) -> None:
        super().setUp()
        self.ensure_namespace("shop")

    def audit_count(self) -> int:
        return len(
            [e for e in self.api.audit() if e["user"]["username"] != "kubernetes-admin"]
        )

    def assertStatus(self, result: Any, code: int, reason: str) -> dict:
        self.assertEqual(result.status, code, result)
        status = json.loads(result.body)
        self.assertEqual(
            (status["kind"], status["code"], status["reason"]), ("Status", code, reason)
        )
        return status

    def assertServing(self) -> None:
        result = self.gw.curl("/api/v1/namespaces/shop/configmaps")
        self.assertEqual(result.status, 200, result)

    def test_expired_token(self) -> None:
        before = self.audit_count()
        token = self.gw.http.gateway.token("alice", ("sre",), lifetime=-120)
        result = self.gw.curl("/api/v1/namespaces/shop/pods", token=token)
        self.assertStatus(result, 401, "Unauthorized")
        self.assertEqual(self.audit_count(), before)
        self.assertServing()

    @inlineCallbacks
    def test_client_impersonation(self) -> Any:
        """
        kubectl --as sends Impersonate-User: refused (403), recorded, and
        the cluster never sees it; curl with Impersonate-Group too.
        """
        before = self.audit_count()
        started = time.time()
        _out, err, code = yield self.gw.kubectl(
            "get", "pods", "-n", "shop", "--as", "system:admin"
        )
        # kubectl's discovery words any 403 of /api as "unknown"; curl
        # shows the Status gatehouse sent.
        self.assertNotEqual(code, 0)
        self.assertIn(b"Error from server (Forbidden)", err)
        curl_started = time.time()
        result = self.gw.curl(
            "/api/v1/namespaces/shop/pods",
            headers=["Impersonate-Group: system:masters"],
        )
        status = self.assertStatus(result, 403, "Forbidden")
        self.assertIn(
            "impersonation is not allowed through gatehouse", status["message"]
        )
        self.assertEqual(self.audit_count(), before)
        kubectl_sessions = [
            s for s in self.gw.http.wait_sessions(started) if s.started < curl_started
        ]
        curl_session = self.gw.http.wait_session(curl_started)
        for session, headers in [
            *((s, [["impersonate-user", "system:admin"]]) for s in kubectl_sessions),
            (curl_session, [["impersonate-group", "system:masters"]]),
        ]:
            refused = events(
                self.gw.http.export(str(session.id), cli=False),
                "http-impersonation-refused",
            )
            self.assertEqual([e["headers"] for e in refused], [headers])
        self.assertServing()

    def test_malformed_paths(self) -> None:
        """Ambiguous spellings: 400 Status; nothing reaches the cluster."""
        before = self.audit_count()
        for path in (
            "/api/v1/namespaces/shop/pods/../secrets",
            "/api/v1/namespaces/shop//pods",
            "/api/v1/namespaces/shop/pods%2Fx",
            "/api/v1/namespaces/shop/pods/",
            "/api/v1/namespaces/shop/pods?watch=yes",
        ):
            result = self.gw.curl(path)
            self.assertStatus(result, 400, "BadRequest")
        self.assertEqual(self.audit_count(), before)
        self.assertServing()

    def test_oversized_header(self) -> None:
        """A head over max_header_bytes: 431 Status; the cluster saw nothing."""
        before = self.audit_count()
        result = self.gw.curl(
            "/api/v1/namespaces/shop/pods",
            headers=["X-Big: " + "a" * 9000],
        )
        self.assertEqual(result.status, 431, result)
        self.assertEqual(self.audit_count(), before)
        self.assertServing()

    def test_oversized_body(self) -> None:
        """A body over max_body_bytes: 413 Status; nothing created."""
        body = json.dumps(
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {"name": "huge", "namespace": "shop"},
                "data": {"x": "a" * (2 << 20)},
            }
        ).encode()
        result = self.gw.curl(
            "/api/v1/namespaces/shop/configmaps",
            method="POST",
            data=body,
            headers=["Content-Type: application/json"],
        )
        self.assertStatus(result, 413, "RequestEntityTooLarge")
        self.assertIsNone(
            self.api.get_object("/api/v1/namespaces/shop/configmaps/huge")
        )
        # Chunked, without a length: cut when it passes the limit.
        result = self.gw.curl(
            "/api/v1/namespaces/shop/configmaps",
            method="POST",
            data=body,
            headers=["Content-Type: application/json", "Transfer-Encoding: chunked"],
        )
        self.assertIn(result.status, (0, 413), result)
        self.assertIsNone(
            self.api.get_object("/api/v1/namespaces/shop/configmaps/huge")
        )
        self.assertServing()


class UpstreamDownTests(KubeGatewayTestCase):
    """A target whose API server is not there."""

    rules = RULES
    timeout = 60

    @classmethod
    def make(cls, directory: str, api: KubeAPIServer) -> KubeGateway:
        return KubeGateway(
            directory,
            api,
            policy={"opaque": "deny", "rules": []},
            target_options={
                "url": f"https://127.0.0.1:{free_port()}",
                "connect_timeout": "3s",
            },
        )

    @inlineCallbacks
    def test_down(self) -> Any:
        """kubectl gets a 503 Status naming the target; the gateway says why."""
        _out, err, code = yield self.gw.kubectl("get", "pods", "-n", "shop")
        # kubectl's discovery shows its own words for a 503; curl shows ours.
        self.assertNotEqual(code, 0)
        self.assertIn(b"Error from server (ServiceUnavailable)", err)
        result = self.gw.curl("/version")
        self.assertEqual(result.status, 503)
        status = json.loads(result.body)
        self.assertEqual(status["reason"], "ServiceUnavailable")
        self.assertIn("gatehouse could not reach target 'prod'", status["message"])
