"""
Bad input at the Kubernetes listener, each a test: the client gets a
Status it can read, nothing reaches the cluster (its audit log says so),
the gateway keeps serving, and the recording says what happened.
"""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from twisted.internet import protocol, reactor, ssl
from twisted.internet.defer import inlineCallbacks
from twisted.trial.unittest import TestCase

from gatehouse._pgcluster import free_port
from tests.fixtures.kubeapi import KubeAPIServer, StreamingProcess, kubectl_program
from tests.fixtures.kubeapi.clients import (
    RawWebSocket,
    Terminal,
    alive,
    pod_manifest,
    sleep,
)
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

    def test_bad_tokens(self) -> None:
        """
        A token whose signature does not verify, and one that is not a
        JWT at all: 401 Status each; the cluster saw nothing.
        """
        before = self.audit_count()
        signed, signature = self.gw.token().rsplit(".", 1)
        flipped = "A" if signature[10] != "A" else "B"
        forged = f"{signed}.{signature[:10]}{flipped}{signature[11:]}"
        for token in (forged, "not-a-jwt"):
            result = self.gw.curl("/api/v1/namespaces/shop/pods", token=token)
            self.assertStatus(result, 401, "Unauthorized")
        self.assertEqual(self.audit_count(), before)
        self.assertServing()

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


@inlineCallbacks
def wait_for(check: Any, what: str, seconds: float = 15) -> Any:
    """Poll C{check} (the reactor running) until true, or fail naming C{what}."""
    deadline = time.monotonic() + seconds
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        yield sleep(0.05)


def _abort(client: RawWebSocket) -> None:
    """Cut a test's client if it is still connected (a failed test)."""
    if client.transport is not None and not client.done.called:
        client.transport.abortConnection()


def rsv1_frame(payload: bytes) -> bytes:
    """
    A masked binary frame with RSV1 set, which no agreed extension allows:
    a frame violation (RFC 6455, 5.2) carrying C{payload}.
    """
    assert len(payload) < 1 << 16
    if len(payload) < 126:
        length = bytes([0x80 | len(payload)])
    else:
        length = bytes([0x80 | 126]) + len(payload).to_bytes(2, "big")
    mask = os.urandom(4)
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return bytes([0x80 | 0x40 | 0x2]) + length + mask + masked


def shell_pod() -> dict[str, Any]:
    """Pod C{web} in C{shop}: one container that sleeps."""
    return pod_manifest("web", {"name": "app", "command": ["sleep", "infinity"]})


class StreamViolationTests(KubeGatewayTestCase):
    """A client that breaks the WebSocket framing of an exec."""

    rules = RULES
    timeout = 120

    def setUp(self) -> None:
        super().setUp()
        self.ensure_namespace("shop")
        if self.api.get_object("/api/v1/namespaces/shop/pods/web") is None:
            self.api.create("/api/v1/namespaces/shop/pods", shell_pod())
        self.work = os.path.abspath(self.mktemp())
        os.makedirs(self.work)
        os.chmod(self.work, 0o777)

    @inlineCallbacks
    def websocket(self, query: str) -> Any:
        """A WebSocket exec in shop/web through the gateway, as alice; open."""
        address = urlsplit(self.gw.http.url)
        trust = ssl.Certificate.loadPEM(Path(self.gw.http.ca_cert).read_bytes())
        options = ssl.optionsForClientTLS(address.hostname or "", trustRoot=trust)
        target = f"/targets/prod/api/v1/namespaces/shop/pods/web/exec?{query}"
        token = self.gw.token().encode()
        client = RawWebSocket(
            target,
            ["v5.channel.k8s.io"],
            [],
            headers=[(b"authorization", b"Bearer " + token)],
        )
        yield protocol.ClientCreator(reactor, lambda: client).connectSSL(
            "127.0.0.1", address.port, options
        )
        accepted = yield client.opened
        self.addCleanup(client.done.addTimeout, 30, reactor)
        self.addCleanup(_abort, client)
        self.assertTrue(accepted, client.body)
        return client

    @inlineCallbacks
    def test_websocket_frame_violation(self) -> Any:
        """
        A frame with a reserved bit set, carrying a command for the shell:
        the client gets a close 1002, the command never runs, the shell in
        the pod is gone, the recording says the client broke the protocol,
        and the gateway goes on serving.
        """
        started = time.time()
        client = yield self.websocket(
            "command=sh&stdin=true&stdout=true&stderr=true&container=app"
        )
        pid_file = os.path.join(self.work, "pid")
        good = os.path.join(self.work, "good")
        bad = os.path.join(self.work, "bad")
        client.send_message(f"\x00echo $$ > {pid_file}; touch {good}\n".encode())
        yield wait_for(lambda: os.path.exists(good), "the first command")
        shell = int(Path(pid_file).read_text())
        self.assertTrue(alive(shell))
        assert client.transport is not None
        # (longer than 125 bytes: the 16-bit length form)
        command = f"\x00touch {bad}{' ' * 130}\n"
        client.transport.write(rsv1_frame(command.encode()))
        yield client.done.addTimeout(30, reactor)
        self.assertEqual(client.close_code, 1002)
        yield wait_for(lambda: not alive(shell), "the shell to end")
        self.assertFalse(os.path.exists(bad))

        session = self.gw.http.wait_session(started, kind="exec")
        records = self.gw.http.export(str(session.id), cli=False)
        [cut] = events(records, "http-stream-cut")
        self.assertIn("the client broke the stream's protocol", cut["reason"])
        [end] = events(records, "http-end")
        self.assertIn("the client broke the stream's protocol", end["error"])
        self.assertServing()

    def assertServing(self) -> None:
        result = self.gw.curl("/api/v1/namespaces/shop/configmaps")
        self.assertEqual(result.status, 200, result)


class UpstreamDropsTests(TestCase):
    """
    The API server dies (SIGKILL: no goodbye, no TLS close) while a watch
    or an exec is open through the gateway; each test has an API server
    and a gateway of its own.
    """

    timeout = 120

    def setUp(self) -> None:
        self.api = KubeAPIServer(rules=RULES).start()
        self.addCleanup(self.api.stop)
        self.gw = KubeGateway(os.path.abspath(self.mktemp()), self.api).start()
        self.addCleanup(self.gw.stop)
        self.api.create(
            "/api/v1/namespaces",
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "shop"}},
        )
        self.api.create("/api/v1/namespaces/shop/pods", shell_pod())

    def kill_api(self) -> None:
        """Kill the API server process outright."""
        assert self.api.pid is not None
        os.kill(self.api.pid, signal.SIGKILL)

    @inlineCallbacks
    def test_watch_dropped(self) -> Any:
        """
        kubectl get -w: the watch's answer is cut (not ended as if
        complete) and kubectl exits; the recording says the target's
        answer broke off; the gateway answers the next request with a 503
        Status naming the target.
        """
        started = time.time()
        watcher = self.api.kubectl_stream(
            "1.33",
            "get",
            "configmaps",
            "-n",
            "shop",
            "-w",
            kubeconfig=self.gw.kubeconfig(),
        )
        # The watch is open at the API server (its audit log says it began)
        # before the object it should carry is made.
        yield wait_for(
            lambda: any(
                e["verb"] == "watch"
                and e.get("impersonatedUser", {}).get("username") == "alice"
                for e in self.api.audit()
            ),
            "the watch to reach the API server",
        )
        self.api.create(
            "/api/v1/namespaces/shop/configmaps",
            {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "seen"}},
        )
        yield watcher.wait_for(rb"seen")
        # curl watching too: it tells a cut answer from an ended one.
        curl = StreamingProcess()
        url = f"{self.gw.url}/api/v1/namespaces/shop/configmaps?watch=true"
        argv = ["curl", "-sSN", "--cacert", self.gw.http.ca_cert]
        argv += ["-H", f"Authorization: Bearer {self.gw.token()}", url]
        reactor.spawnProcess(curl, "curl", argv, env=dict(os.environ))
        yield curl.wait_for(rb'"name": ?"seen"')
        self.kill_api()
        # client-go takes an unexpected end of a watch for its end: kubectl
        # exits (0) with what it saw; the recording says what happened.
        yield watcher.ended.addTimeout(60, reactor)
        self.assertIn(b"seen", watcher.out)
        code = yield curl.ended.addTimeout(60, reactor)
        # The gateway resets the client's connection: a cut, not an end.
        self.assertEqual(code, 56, curl.err)
        self.assertIn(b"Connection reset by peer", curl.err)
        sessions = self.gw.http.wait_sessions(started, kind="watch")
        cuts = [
            e
            for s in sessions
            for e in events(self.gw.http.export(str(s.id), cli=False), "http-end")
            if e.get("error")
        ]
        self.assertTrue(cuts, sessions)
        self.assertIn("the target's answer broke off", cuts[0]["error"])
        result = self.gw.curl("/version")
        self.assertEqual(result.status, 503, result)
        self.assertIn(
            "gatehouse could not reach target 'prod'",
            json.loads(result.body)["message"],
        )

    @inlineCallbacks
    def test_exec_dropped(self) -> Any:
        """
        kubectl exec with a command running: kubectl ends with an error, not
        an exit code of the command; the recording has no exit status and
        says the target went away.
        """
        started = time.time()
        output = Terminal()
        env, argv = self.api.kubectl_env(
            "1.33",
            ["exec", "-n", "shop", "web", "--", "sh", "-c", "echo started; sleep 600"],
            self.gw.kubeconfig(),
            None,
        )
        program = kubectl_program("1.33")
        reactor.spawnProcess(output, program, [program, *argv], env=env)
        yield output.expect(rb"started\n")
        self.kill_api()
        code = yield output.ended.addTimeout(60, reactor)
        self.assertNotEqual(code, 0, output.output)
        session = self.gw.http.wait_session(started, kind="exec")
        records = self.gw.http.export(str(session.id), cli=False)
        self.assertEqual(events(records, "k8s-exit"), [])
        [end] = events(records, "http-end")
        self.assertIn("the target's connection was lost", end.get("error", ""), end)
