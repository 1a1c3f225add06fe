"""
The streaming subresources through the real daemon, with the real kubectl
binaries: ``exec -it`` on a terminal of its own (resize, exit code), ``cp``
both ways (tar over exec), ``port-forward`` carrying real bytes, ``attach``;
SPDY and WebSocket each on the versions that use them.  Each is judged on
what reached the pod and the client, and on the recording.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from twisted.internet import protocol, reactor
from twisted.internet.defer import inlineCallbacks

from tests.fixtures.kubeapi import kubectl_program
from tests.fixtures.kubeapi.clients import (
    TERMINAL_SCRIPT,
    DigestListener,
    PortForwarder,
    SendingClient,
    Terminal,
    exec_transport,
    forward_transport,
    listen,
    pod_manifest,
    set_terminal_size,
    terminal_session,
)
from tests.gateway_recordings import events, stream_bytes
from tests.protocols.kubernetes.harness import KubeGatewayTestCase

NS = "shop"

RULES = [
    {
        "groups": ["sre"],
        "verbs": ["*"],
        "apiGroups": [""],
        "resources": ["*"],
        "namespaces": [NS],
    },
]

VERSIONS = ("1.27", "1.28", "1.29", "1.30", "1.31", "1.32", "1.33")


class StreamsTests(KubeGatewayTestCase):
    """exec -it, cp, port-forward and attach through the gateway."""

    rules = RULES
    timeout = 600

    def setUp(self) -> None:
        super().setUp()
        self.ensure_namespace(NS)
        pods = f"/api/v1/namespaces/{NS}/pods"
        if self.api.get_object(f"{pods}/web") is None:
            self.api.create(
                pods,
                pod_manifest("web", {"name": "app", "command": ["sleep", "infinity"]}),
            )
            self.wait_running("web")
        self.config = self.gw.kubeconfig("alice", ("sre",), namespace=NS)

    def wait_running(self, name: str) -> None:
        """Wait (blocking: the API server is another process) for a pod to run."""
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            pod = self.api.get_object(f"/api/v1/namespaces/{NS}/pods/{name}")
            if pod is not None and pod.get("status", {}).get("phase") == "Running":
                return
            time.sleep(0.1)
        raise AssertionError(f"pod {name} is not running")

    def spawn(
        self,
        proto: protocol.ProcessProtocol,
        version: str,
        *args: str,
        extra: Mapping[str, str] | None = None,
        pty: Any = False,
    ) -> Any:
        """Start kubectl VERSION ARGS through the gateway as alice; the process."""
        env, argv = self.api.kubectl_env(version, args, self.config, extra)
        program = kubectl_program(version)
        return reactor.spawnProcess(
            proto, program, [program, *argv], env=env, usePTY=pty
        )

    def on_terminal(self, version: str, *args: str) -> Any:
        """
        kubectl ARGS on a terminal of 100 x 40 of its own: (the terminal,
        the process, the terminal's leader fd).
        """
        leader, follower = os.openpty()
        set_terminal_size(leader, 100, 40)
        terminal = Terminal()
        process = self.spawn(
            terminal, version, *args, pty=(leader, follower, os.ttyname(follower))
        )
        return terminal, process, leader

    def session_records(self, started: float, kind: str) -> list[dict[str, Any]]:
        """The records of the last session since C{started} with a C{kind} command."""
        sessions = self.gw.http.wait_sessions(started, kind=kind)
        return self.gw.http.export(str(sessions[-1].id), cli=False)

    def upgrade_of(self, records: Sequence[Mapping[str, Any]]) -> str:
        """How the stream was carried: C{spdy/3.1} or C{websocket}."""
        [switched] = [r for r in events(records, "http-response") if r["status"] == 101]
        return str(dict(switched["headers"])["upgrade"]).lower()

    @inlineCallbacks
    def test_exec_terminal(self) -> Any:
        """
        C{kubectl exec -it} from a terminal, every version: the command gets
        a terminal of the client's size, what is typed, a resize; the exit
        code comes back; the recording has the typed and shown bytes, both
        sizes and the exit code.
        """
        for version in VERSIONS:
            started = time.time()
            terminal, process, leader = self.on_terminal(
                version,
                "exec",
                "-it",
                "web",
                "--",
                "sh",
                "-c",
                TERMINAL_SCRIPT,
            )
            code = yield terminal_session(terminal, process, leader)
            self.assertEqual(code, 5, (version, terminal.output))
            self.assertIn(
                b"command terminated with exit code 5", terminal.output, version
            )

            records = self.session_records(started, "exec")
            expected = "spdy/3.1" if version <= "1.29" else "websocket"
            self.assertEqual(self.upgrade_of(records), expected, version)
            [request] = events(records, "http-request")
            self.assertIs(request.get("tty"), True, version)
            channel = request["_channel"]
            self.assertIn(
                b"hello\r", stream_bytes(records, channel, "client_to_gateway")
            )
            shown = stream_bytes(records, channel, "gateway_to_client")
            for line in (b"size 40 100", b"got hello", b"size 50 120"):
                self.assertIn(line, shown, version)
            sizes = [(e["width"], e["height"]) for e in events(records, "k8s-resize")]
            self.assertEqual(sizes[0], (100, 40), version)
            self.assertIn((120, 50), sizes, version)
            self.assertEqual(
                [e["code"] for e in events(records, "k8s-exit")], [5], version
            )

    @inlineCallbacks
    def test_cp_both_ways(self) -> Any:
        """
        C{kubectl cp} (tar over exec) copies a directory into the pod and
        back through the gateway, every version, bytes intact; the tar
        stream is in the recording.
        """
        pod_dir = self.api.state_dir / "pods" / f"{NS}_web" / "app"
        for version in VERSIONS:
            local = Path(self.mktemp())
            (local / "sub").mkdir(parents=True)
            files = {
                "a.bin": os.urandom(300_000),
                "sub/b.txt": f"kubectl {version}\n".encode(),
            }
            for name, data in files.items():
                (local / name).write_bytes(data)
            dest = f"copy-{version}"
            started = time.time()
            _, err, code = yield self.gw.kubectl(
                "cp", str(local), f"{NS}/web:{dest}", version=version
            )
            self.assertEqual(code, 0, (version, err))
            for name, data in files.items():
                self.assertEqual(
                    (pod_dir / dest / name).read_bytes(), data, (version, name)
                )
            # cp runs two execs, each its own connection: test -d, then tar.
            [(records, request)] = [
                (records, request)
                for session in self.gw.http.wait_sessions(started, 2, kind="exec")
                for records in [self.gw.http.export(str(session.id), cli=False)]
                for request in events(records, "http-request")
                if request["command"][0] == "tar"
            ]
            uploaded = stream_bytes(records, request["_channel"], "client_to_gateway")
            # tar pads to 512-byte blocks: the file is in there whole.
            self.assertIn(files["a.bin"], uploaded, version)

            back = Path(self.mktemp())
            _, err, code = yield self.gw.kubectl(
                "cp", f"{NS}/web:{dest}", str(back), version=version
            )
            self.assertEqual(code, 0, (version, err))
            for name, data in files.items():
                self.assertEqual((back / name).read_bytes(), data, (version, name))

    @inlineCallbacks
    def test_port_forward(self) -> Any:
        """
        C{kubectl port-forward} through the gateway carries each
        connection's bytes both ways to a real listener, end of stream
        included: SPDY up to 1.30, WebSocket (SPDY tunnelled) after, and
        1.30 told to use WebSocket; what went each way is recorded on the
        connection's own channel.
        """
        listening, target = listen(DigestListener)
        self.addCleanup(listening.stopListening)
        cases: list[tuple[str, dict[str, str] | None, str]] = [
            (v, None, forward_transport(v)) for v in ("1.27", "1.30", "1.31", "1.33")
        ]
        cases.append(
            (
                "1.30",
                {"KUBECTL_PORT_FORWARD_WEBSOCKETS": "true"},
                "websocket SPDY/3.1+portforward.k8s.io",
            )
        )
        for version, extra, transport in cases:
            started = time.time()
            sent = yield self.forward(version, target, extra)
            records = self.session_records(started, "portforward")
            expected = "websocket" if transport.startswith("websocket") else "spdy/3.1"
            self.assertEqual(self.upgrade_of(records), expected, (version, extra))
            opened = events(records, "k8s-stream")
            channels = [e["recorded_on"] for e in opened]
            uploaded = {stream_bytes(records, c, "client_to_gateway") for c in channels}
            answered = {stream_bytes(records, c, "gateway_to_client") for c in channels}
            for payload in sent:
                self.assertIn(payload, uploaded, (version, len(payload)))
                answer = f"{len(payload)} {hashlib.sha256(payload).hexdigest()}"
                self.assertIn(answer.encode(), answered, (version, len(payload)))

    @inlineCallbacks
    def forward(
        self, version: str, target: int, extra: Mapping[str, str] | None
    ) -> Any:
        """port-forward to C{target}, three connections through it: their payloads."""
        forwarder = PortForwarder()
        process = self.spawn(
            forwarder, version, "port-forward", "pod/web", f":{target}", extra=extra
        )
        sent = []
        try:
            port = yield forwarder.port
            for size in (1, 70_000, 1_000_000):
                payload = os.urandom(size)
                client = SendingClient(payload)
                yield protocol.ClientCreator(reactor, lambda c=client: c).connectTCP(
                    "127.0.0.1", port
                )
                answer = yield client.done.addTimeout(60, reactor)
                expected = f"{size} {hashlib.sha256(payload).hexdigest()}".encode()
                self.assertEqual(answer, expected, (version, size, forwarder.err))
                sent.append(payload)
        finally:
            process.signalProcess("TERM")
            yield forwarder.ended
        return sent

    @inlineCallbacks
    def test_attach(self) -> Any:
        """
        C{kubectl attach -i} through the gateway joins the container's main
        process: its input arrives, its output and exit code come back, on
        SPDY and on WebSocket; recorded as an attach.
        """
        pods = f"/api/v1/namespaces/{NS}/pods"
        for version in ("1.29", "1.33"):
            name = f"attach-{version.replace('.', '-')}"
            script = 'echo ready; read l; echo "main: $l"; echo oops >&2; exit 4'
            self.api.create(
                pods,
                pod_manifest(
                    name,
                    {"name": "main", "stdin": True, "command": ["sh", "-c", script]},
                    never=True,
                ),
            )
            self.wait_running(name)
            started = time.time()
            out, err, code = yield self.gw.kubectl(
                "attach", "-i", "-n", NS, name, version=version, stdin=b"hello\n"
            )
            self.assertEqual((out, code), (b"main: hello\n", 4), (version, err))
            self.assertIn(b"oops\n", err, version)
            records = self.session_records(started, "attach")
            self.assertEqual(
                self.upgrade_of(records),
                exec_transport(version).split()[0].replace("spdy", "spdy/3.1"),
            )
            [request] = events(records, "http-request")
            channel = request["_channel"]
            self.assertEqual(
                stream_bytes(records, channel, "client_to_gateway"), b"hello\n"
            )
            self.assertIn(
                b"main: hello\n", stream_bytes(records, channel, "gateway_to_client")
            )
            self.assertEqual([e["code"] for e in events(records, "k8s-exit")], [4])
