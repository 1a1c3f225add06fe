"""
kubectl through the real daemon to the test API server: reads, writes,
watches, logs; the caller impersonated upstream; the cluster's RBAC and
gatehouse's rules both enforced, judged on the API server's state and
its audit log.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from twisted.internet.defer import inlineCallbacks

from tests.fixtures.kubeapi import KubeAPIServer
from tests.protocols.kubernetes.harness import KubeGateway, KubeGatewayTestCase

RULES = [
    {
        "groups": ["sre"],
        "verbs": ["*"],
        "apiGroups": ["", "apps"],
        "resources": ["*"],
        "namespaces": ["shop", "default"],
    },
    {
        "groups": ["sre"],
        "verbs": ["get", "list", "watch"],
        "apiGroups": [""],
        "resources": ["namespaces"],
    },
    {
        "groups": ["agents"],
        "verbs": ["get", "list", "watch"],
        "apiGroups": ["", "apps"],
        "resources": ["pods", "pods/log", "configmaps", "deployments"],
        "namespaces": ["shop"],
    },
]

POLICY = {
    "opaque": "deny",
    "rules": [
        {
            "name": "no-namespace-deletes",
            "protocols": ["kubernetes"],
            "verb": ["delete", "deletecollection"],
            "resource": ["namespaces"],
            "action": "deny",
            "message": "namespaces are deleted by the platform team",
        },
        {
            "name": "agents-read-only",
            "protocols": ["kubernetes"],
            "groups": ["agents"],
            "verb": ["create", "update", "patch", "delete", "deletecollection"],
            "action": "deny",
        },
    ],
}

CONFIGMAP = {
    "apiVersion": "v1",
    "kind": "ConfigMap",
    "metadata": {"name": "settings", "namespace": "shop"},
    "data": {"color": "blue"},
}


class KubectlTests(KubeGatewayTestCase):
    """kubectl 1.33 (and the oldest, 1.27) through the gateway."""

    rules = RULES
    timeout = 120

    @classmethod
    def make(cls, directory: str, api: KubeAPIServer) -> KubeGateway:
        return KubeGateway(directory, api, policy=POLICY)

    def setUp(self) -> None:
        super().setUp()
        self.ensure_namespace("shop")

    @inlineCallbacks
    def test_get_impersonated(self) -> Any:
        """
        kubectl get through the gateway: the answer is the cluster's, and
        the cluster saw the caller (impersonated), not the gateway.
        """
        self.api.create(
            "/api/v1/namespaces/shop/configmaps",
            {**CONFIGMAP, "metadata": {"name": "seen", "namespace": "shop"}},
        )
        for version in ("1.27", "1.33"):
            out, err, code = yield self.gw.kubectl(
                "get", "configmaps", "-n", "shop", "-o", "json", version=version
            )
            self.assertEqual(code, 0, err)
            names = [i["metadata"]["name"] for i in json.loads(out)["items"]]
            self.assertIn("seen", names)
        audit = [
            e
            for e in self.api.audit()
            if e.get("requestURI", "").startswith("/api/v1/namespaces/shop/configmaps")
            and e["user"]["username"] != "kubernetes-admin"
        ]
        # Every request through the gateway reached the cluster as the
        # gateway impersonating someone (other tests' callers too); alice's
        # with her group.
        self.assertTrue(audit)
        for event in audit:
            self.assertEqual(event["user"]["username"], "gatehouse-gateway")
            self.assertIn("impersonatedUser", event)
        alice = [e for e in audit if e["impersonatedUser"]["username"] == "alice"]
        self.assertTrue(alice)
        for event in alice:
            self.assertIn("sre", event["impersonatedUser"]["groups"])

    @inlineCallbacks
    def test_apply_and_delete(self) -> Any:
        """
        apply -f creates then changes; delete deletes; state on the server;
        gatehouse sessions finds the delete.
        """
        started = time.time()
        manifest = self.mktemp()
        with open(manifest, "w") as f:
            json.dump(
                {**CONFIGMAP, "metadata": {"name": "applied", "namespace": "shop"}}, f
            )
        _out, err, code = yield self.gw.kubectl("apply", "-f", manifest)
        self.assertEqual(code, 0, err)
        obj = self.api.get_object("/api/v1/namespaces/shop/configmaps/applied")
        self.assertEqual(obj["data"], {"color": "blue"})
        with open(manifest, "w") as f:
            json.dump(
                {
                    **CONFIGMAP,
                    "metadata": {"name": "applied", "namespace": "shop"},
                    "data": {"color": "green"},
                },
                f,
            )
        _out, err, code = yield self.gw.kubectl("apply", "-f", manifest)
        self.assertEqual(code, 0, err)
        obj = self.api.get_object("/api/v1/namespaces/shop/configmaps/applied")
        self.assertEqual(obj["data"], {"color": "green"})
        _out, err, code = yield self.gw.kubectl(
            "delete", "configmap", "applied", "-n", "shop"
        )
        self.assertEqual(code, 0, err)
        self.assertIsNone(
            self.api.get_object("/api/v1/namespaces/shop/configmaps/applied")
        )
        # The index finds the session by verb, object, resource and namespace.
        deleted = self.gw.http.wait_sessions(started, kind="delete")
        for touched in ("configmaps/applied", "configmaps", "namespaces/shop"):
            found = self.gw.http.sessions(
                protocol="kubernetes", kind="delete", touched=touched
            )
            self.assertIn(str(deleted[-1].id), [f["id"] for f in found], touched)
        # The recording verifies, and the index agrees with the recordings.
        verified = self.gw.http.verify(str(deleted[-1].id))
        self.assertEqual(verified.returncode, 0, verified.stdout + verified.stderr)
        checked = self.gw.http.cli("index", "check")
        self.assertEqual(checked.returncode, 0, checked.stdout + checked.stderr)

    @inlineCallbacks
    def test_cluster_rbac_refusal(self) -> Any:
        """The cluster's own refusal reaches kubectl as the cluster wrote it."""
        _out, err, code = yield self.gw.kubectl(
            "get", "configmaps", "-n", "kube-system", subject="bob", groups=("agents",)
        )
        self.assertNotEqual(code, 0)
        self.assertIn(
            b'configmaps is forbidden: User "bob" cannot list resource "configmaps" '
            b'in API group "" in the namespace "kube-system"',
            err,
        )

    @inlineCallbacks
    def test_gatehouse_denies(self) -> Any:
        """
        A gatehouse rule refuses before the cluster: the namespace is still
        there, and kubectl prints the rule's Status message.
        """
        self.ensure_namespace("doomed")
        _out, err, code = yield self.gw.kubectl("delete", "namespace", "doomed")
        self.assertNotEqual(code, 0)
        self.assertIn(b"Error from server (Forbidden)", err)
        self.assertIn(b"no-namespace-deletes", err)
        self.assertIn(b"namespaces are deleted by the platform team", err)
        self.assertIsNotNone(self.api.get_object("/api/v1/namespaces/doomed"))
        # An agent may read but not write.
        self.api.create(
            "/api/v1/namespaces/shop/configmaps",
            {**CONFIGMAP, "metadata": {"name": "kept", "namespace": "shop"}},
        )
        _out, err, code = yield self.gw.kubectl(
            "delete",
            "configmap",
            "kept",
            "-n",
            "shop",
            subject="bob",
            groups=("agents",),
        )
        self.assertNotEqual(code, 0)
        self.assertIn(b"agents-read-only", err)
        self.assertIsNotNone(
            self.api.get_object("/api/v1/namespaces/shop/configmaps/kept")
        )

    @inlineCallbacks
    def test_no_token(self) -> Any:
        """No token: kubectl says it must log in; the cluster saw nothing."""
        config = self.gw.kubeconfig(token="")
        before = len(self.api.audit())
        _out, _err, code = yield self.gw.kubectl(
            "get", "pods", "-n", "shop", kubeconfig=config, stdin=b""
        )
        # kubectl answers a 401 without credentials by asking for a user
        # name (stdin is empty here: EOF).
        self.assertNotEqual(code, 0)
        self.assertEqual(len(self.api.audit()), before)
        result = self.gw.http.curl(
            "/api/v1/namespaces/shop/pods", token=None, target="prod"
        )
        self.assertEqual(result.status, 401)
        status = json.loads(result.body)
        self.assertEqual((status["kind"], status["reason"]), ("Status", "Unauthorized"))
        result = self.gw.http.curl(
            "/api/v1/namespaces/shop/pods",
            token=self.gw.token()[:-6] + "AAAAAA",
            target="prod",
        )
        self.assertEqual(result.status, 401)
        self.assertEqual(len(self.api.audit()), before)

    @inlineCallbacks
    def test_watch(self) -> Any:
        """
        kubectl get -w: the list, then a change made meanwhile arrives as it
        happens; the recording has the watch event as it streamed.
        """
        self.api.create(
            "/api/v1/namespaces/shop/configmaps",
            {**CONFIGMAP, "metadata": {"name": "w-before", "namespace": "shop"}},
        )
        started = time.time()
        watch = self.api.kubectl_stream(
            "1.33",
            "get",
            "configmaps",
            "-n",
            "shop",
            "-w",
            "-o",
            "name",
            kubeconfig=self.gw.kubeconfig(),
        )
        self.addCleanup(watch.stop)
        yield watch.wait_for(rb"configmap/w-before")
        self.api.create(
            "/api/v1/namespaces/shop/configmaps",
            {**CONFIGMAP, "metadata": {"name": "w-after", "namespace": "shop"}},
        )
        yield watch.wait_for(rb"configmap/w-after")
        yield watch.stop()
        sessions = self.gw.http.wait_sessions(started)
        streamed = b"".join(
            base64.b64decode(r["payload"])
            for s in sessions
            for r in self.gw.http.export(str(s.id), cli=False)
            if r["type"] == "DATA" and r["direction"] == "gateway_to_client"
        )
        self.assertIn(b'"type":"ADDED"', streamed.replace(b" ", b""))
        self.assertIn(b"w-after", streamed)

    @inlineCallbacks
    def test_logs_follow(self) -> Any:
        """kubectl logs -f: lines arrive as the pod's process writes them."""
        self.api.create(
            "/api/v1/namespaces/shop/pods",
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": "ticker", "namespace": "shop"},
                "spec": {
                    "containers": [
                        {
                            "name": "app",
                            "image": "busybox",
                            "command": [
                                "sh",
                                "-c",
                                "i=0; while true; do echo tick $i; i=$((i+1));"
                                " sleep 0.2; done",
                            ],
                        }
                    ]
                },
            },
        )
        follow = self.api.kubectl_stream(
            "1.27",
            "logs",
            "-f",
            "-n",
            "shop",
            "ticker",
            kubeconfig=self.gw.kubeconfig(),
        )
        self.addCleanup(follow.stop)
        yield follow.wait_for(rb"tick 1\n")
        first = len(follow.out)
        yield follow.wait_for(rb"tick 6\n")
        self.assertGreater(len(follow.out), first)
        yield follow.stop()

    @inlineCallbacks
    def test_describe_every_version(self) -> Any:
        """kubectl describe (a pod, with its events) on every version."""
        if self.api.get_object("/api/v1/namespaces/shop/pods/described") is None:
            self.api.create(
                "/api/v1/namespaces/shop/pods",
                {
                    "apiVersion": "v1",
                    "kind": "Pod",
                    "metadata": {"name": "described", "namespace": "shop"},
                    "spec": {
                        "containers": [
                            {
                                "name": "app",
                                "image": "busybox",
                                "command": ["sleep", "600"],
                            }
                        ]
                    },
                },
            )
        for version in ("1.27", "1.28", "1.29", "1.30", "1.31", "1.32", "1.33"):
            out, err, code = yield self.gw.kubectl(
                "describe", "pod", "described", "-n", "shop", version=version
            )
            self.assertEqual(code, 0, (version, err))
            self.assertIn(b"Name:", out, version)
            self.assertIn(b"described", out, version)
            self.assertIn(b"Events:", out, version)

    @inlineCallbacks
    def test_gatehouse_kubeconfig(self) -> Any:
        """
        The kubeconfig `gatehouse kubeconfig` writes works with plain kubectl
        (1.27 and 1.33): the exec plugin `gatehouse token` reads the token
        file, the cluster sees the caller; a static-token kubeconfig too; an
        expired token in the file fails cleanly and nothing reaches the
        cluster.
        """
        self.api.create(
            "/api/v1/namespaces/shop/configmaps",
            {**CONFIGMAP, "metadata": {"name": "via-plugin", "namespace": "shop"}},
        )
        directory = os.path.abspath(self.mktemp())
        os.makedirs(directory)
        token_file = os.path.join(directory, "token")
        with open(token_file, "w") as f:
            f.write(self.gw.token("dora", ("sre",)) + "\n")
        # kubectl finds `gatehouse` beside this Python (the plugin command).
        env = {"PATH": os.path.dirname(sys.executable) + ":" + os.environ["PATH"]}

        def write(name: str, *how: str) -> str:
            out = os.path.join(directory, name)
            done = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "gatehouse",
                    "kubeconfig",
                    "--target",
                    "prod",
                    "--server",
                    self.gw.http.url,
                    "--ca",
                    self.gw.http.ca_cert,
                    "--namespace",
                    "shop",
                    "--output",
                    out,
                    *how,
                ],
                capture_output=True,
                text=True,
                timeout=60,
                env={**os.environ, **env},
            )
            self.assertEqual(done.returncode, 0, done.stderr)
            return out

        plugin = write("plugin", "--token-file", token_file)
        static = write("static", "--token", self.gw.token("erin", ("sre",)))
        for version in ("1.27", "1.33"):
            for config in (plugin, static):
                out, err, code = yield self.gw.kubectl(
                    "get",
                    "configmaps",
                    "-o",
                    "name",
                    version=version,
                    kubeconfig=Path(config),
                    env=env,
                )
                self.assertEqual(code, 0, (version, config, err))
                self.assertIn(b"configmap/via-plugin", out)
        users = {
            e["impersonatedUser"]["username"]
            for e in self.api.audit()
            if e.get("impersonatedUser")
        }
        self.assertTrue({"dora", "erin"} <= users, users)
        with open(token_file, "w") as f:
            f.write(self.gw.http.gateway.token("dora", ("sre",), lifetime=-300) + "\n")
        before = len(self.api.audit())
        _out, err, code = yield self.gw.kubectl(
            "get",
            "configmaps",
            version="1.33",
            kubeconfig=Path(plugin),
            env=env,
            stdin=b"",
        )
        self.assertNotEqual(code, 0)
        self.assertIn(b"expired", err)
        self.assertEqual(len(self.api.audit()), before)
