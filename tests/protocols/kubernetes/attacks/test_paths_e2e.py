"""
The path and method spellings of L{test_paths} sent as raw HTTP through
the real daemon to the test API server, which would allow every one of
them (alice's group may do anything in the cluster): the gateway's policy
is the only guard.  Judged on the API server's state, not on the
gateway's answers: its audit log has no request of alice's for any caught
or refused spelling, the namespace C{prod} and the Secret are still
there, and the Secret's value never reaches the client.
"""

from __future__ import annotations

import base64
import os
import socket
import ssl
from typing import Any
from urllib.parse import urlsplit

import yaml

from tests.fixtures.kubeapi import KubeAPIServer
from tests.protocols.kubernetes.harness import TARGET, KubeGateway, KubeGatewayTestCase

from ..policy import POLICY
from .test_paths import CAUGHT, HARMLESS, REFUSED

#: alice (group sre) may do anything at the API server
RULES = [
    {"groups": ["sre"], "verbs": ["*"], "apiGroups": ["*"], "resources": ["*"]},
]

SECRET_VALUE = base64.b16encode(os.urandom(16)).decode()


def gateway_policy() -> dict[str, Any]:
    """L{POLICY}, with the exec review a denial (nobody waits on approvers)."""
    policy: dict[str, Any] = yaml.safe_load(POLICY)
    for rule in policy["rules"]:
        if rule["name"] == "prod-exec":
            rule["action"] = "deny"
    return policy


def routed(target: bytes) -> bytes:
    """C{target} under the gateway's C{/targets/prod} (other forms as they are)."""
    prefix = f"/targets/{TARGET}".encode()
    if target.startswith(b"/"):
        return prefix + target
    for scheme in (b"http://", b"https://"):
        if target.startswith(scheme):
            host, _, rest = target[len(scheme) :].partition(b"/")
            return scheme + host + prefix + b"/" + rest
    return target


class PathSpellingsThroughTheGatewayTests(KubeGatewayTestCase):
    """Every spelling, raw, through the daemon."""

    rules = RULES
    timeout = 300

    @classmethod
    def make(cls, directory: str, api: KubeAPIServer) -> KubeGateway:
        return KubeGateway(directory, api, policy=gateway_policy())

    def setUp(self) -> None:
        super().setUp()
        for name in ("prod", "kube-system", "shop"):
            self.ensure_namespace(name)
        for name in ("web-7", "a.b"):
            if self.api.get_object(f"/api/v1/namespaces/prod/pods/{name}") is None:
                self.api.create(
                    "/api/v1/namespaces/prod/pods",
                    {
                        "apiVersion": "v1",
                        "kind": "Pod",
                        "metadata": {"name": name},
                        "spec": {
                            "containers": [
                                {
                                    "name": "app",
                                    "image": "busybox",
                                    "command": ["sleep", "3600"],
                                }
                            ]
                        },
                    },
                )
        path = "/api/v1/namespaces/kube-system/secrets"
        if self.api.get_object(f"{path}/admin-token") is None:
            self.api.create(
                path,
                {
                    "apiVersion": "v1",
                    "kind": "Secret",
                    "metadata": {"name": "admin-token"},
                    "stringData": {"token": SECRET_VALUE},
                },
            )
        self.token = self.gw.token("alice", ("sre",))

    def send(self, method: str, target: bytes) -> bytes:
        """One raw request through the gateway; everything it answered."""
        address = urlsplit(self.gw.http.url)
        context = ssl.create_default_context(cafile=self.gw.http.ca_cert)
        head = (
            method.encode("latin-1")
            + b" "
            + routed(target)
            + b" HTTP/1.1\r\nHost: localhost\r\n"
            + b"Authorization: Bearer "
            + self.token.encode()
            + b"\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        )
        raw = socket.create_connection(("127.0.0.1", address.port), timeout=10)
        with context.wrap_socket(raw, server_hostname="localhost") as conn:
            conn.sendall(head)
            answer = b""
            while True:
                try:
                    chunk = conn.recv(65536)
                except (ssl.SSLError, ConnectionError):
                    break
                except TimeoutError:
                    raise AssertionError(f"no end to {method} {target!r}: {answer!r}")
                if not chunk:
                    break
                answer += chunk
        return answer

    def alices_requests(self) -> list[dict[str, Any]]:
        """What reached the API server as alice (impersonated), by its audit log."""
        return [
            e
            for e in self.api.audit()
            if e.get("impersonatedUser", {}).get("username") == "alice"
        ]

    def assertIntact(self, answers: list[bytes]) -> None:
        """The cluster's state: what the spellings aimed at is still there."""
        self.assertIsNotNone(self.api.get_object("/api/v1/namespaces/prod"))
        secret = self.api.get_object(
            "/api/v1/namespaces/kube-system/secrets/admin-token"
        )
        self.assertIsNotNone(secret)
        encoded = base64.b64encode(SECRET_VALUE.encode())
        for answer in answers:
            self.assertNotIn(SECRET_VALUE.encode(), answer)
            self.assertNotIn(encoded, answer)

    def test_control(self) -> None:
        """
        The judge can see: the plain reading of the same namespace reaches
        the API server (one audit entry), answered 200.
        """
        before = len(self.alices_requests())
        answer = self.send("GET", b"/api/v1/namespaces/prod")
        self.assertTrue(answer.startswith(b"HTTP/1.1 200"), answer[:200])
        self.assertEqual(len(self.alices_requests()), before + 1)

    def test_caught(self) -> None:
        """Each caught spelling: nothing reached the API server."""
        before = self.alices_requests()
        answers = []
        for method, target, rule in CAUGHT:
            answer = self.send(method, target)
            answers.append(answer)
            self.assertEqual(self.alices_requests(), before, (method, target, rule))
            self.assertTrue(answer.startswith(b"HTTP/1.1 403"), (target, answer[:300]))
        self.assertIntact(answers)

    def test_refused(self) -> None:
        """Each ambiguous spelling: nothing reached the API server."""
        before = self.alices_requests()
        answers = []
        for method, target, why in REFUSED:
            answer = self.send(method, target)
            answers.append(answer)
            self.assertEqual(self.alices_requests(), before, (method, target, why))
            self.assertRegex(
                answer[:12], rb"^HTTP/1.1 4\d\d$", (method, target, answer[:300])
            )
        self.assertIntact(answers)

    def test_harmless(self) -> None:
        """
        Spellings the API server reads as something harmless reach it and
        do only that: the namespace is still there.
        """
        answers = []
        for method, target, verb, _resource in HARMLESS:
            before = len(self.alices_requests())
            answers.append(self.send(method, target))
            after = self.alices_requests()
            self.assertEqual(len(after), before + 1, (method, target))
            self.assertEqual(after[-1]["verb"], verb, (method, target))
        self.assertIntact(answers)
