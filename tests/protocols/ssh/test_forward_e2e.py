"""
End-to-end port forwarding: OpenSSH's C{ssh -L} and C{ssh -R} through the
real daemon to a real sshd, with a loopback echo service as the
destination.  A forward the policy allows carries data both ways and is
recorded (the channel's open, its byte counts at close); one it does not
allow never reaches the service; remote forwarding is always refused.
"""

from __future__ import annotations

import atexit
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from typing import ClassVar

from gatehouse._pgcluster import free_port
from tests.fixtures.sshd import SSHServer
from tests.protocols.ssh.harness import SSHGateway, SSHGatewayTestCase
from tests.protocols.ssh.test_transfers_e2e import events_of

#: A TCP echo service: listens on a free loopback port (printed first),
#: appends a line to the log file (its first argument) per connection.
ECHO_SERVICE = r"""
import socket, sys, threading
log = sys.argv[1]
server = socket.socket()
server.bind(("127.0.0.1", 0))
server.listen(16)
print(server.getsockname()[1], flush=True)

def serve(conn):
    with conn:
        while data := conn.recv(65536):
            conn.sendall(data)

while True:
    conn, _ = server.accept()
    with open(log, "a") as f:
        f.write("accepted\n")
    threading.Thread(target=serve, args=(conn,), daemon=True).start()
"""


class EchoService:
    """The echo service in a child process, stopped by pid."""

    def __init__(self, directory: str) -> None:
        self.log = os.path.join(directory, f"echo-{id(self)}.log")
        open(self.log, "w").close()
        self.process = subprocess.Popen(
            [sys.executable, "-c", ECHO_SERVICE, self.log],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
        )
        assert self.process.stdout is not None
        self.port = int(self.process.stdout.readline())

    def connections(self) -> int:
        """How many connections the service accepted."""
        with open(self.log) as f:
            return f.read().count("accepted")

    def stop(self) -> None:
        """Stop the service by its pid."""
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(10)
        if self.process.stdout is not None:
            self.process.stdout.close()


def wait_listening(port: int, process: subprocess.Popen[bytes], timeout: float = 20):
    """
    Wait until something listens on loopback C{port} (while C{process}
    runs), without connecting to it: a connection would be forwarded.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"ssh exited ({process.returncode}) before listening")
        probe = socket.socket()
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return
        finally:
            probe.close()
        time.sleep(0.05)
    raise AssertionError(f"nothing listens on {port} after {timeout}s")


def round_trip(port: int, payload: bytes, timeout: float = 30) -> bytes:
    """Send C{payload} to loopback C{port}, half-close; everything read back."""
    with socket.create_connection(("127.0.0.1", port), timeout) as sock:
        sender = threading.Thread(
            target=lambda: (sock.sendall(payload), sock.shutdown(socket.SHUT_WR))
        )
        sender.start()
        got = bytearray()
        while chunk := sock.recv(65536):
            got += chunk
        sender.join(timeout)
    return bytes(got)


class ForwardTests(SSHGatewayTestCase):
    """C{ssh -N -L} through the gateway, with C{ssh -R} refused."""

    allowed: ClassVar[EchoService]

    @classmethod
    def make_gateway(cls, directory: str, sshd: SSHServer) -> SSHGateway:
        cls.allowed = EchoService(tempfile.gettempdir())
        _services.append(cls.allowed)
        policy = {
            "opaque": "deny",
            "rules": [
                {
                    "name": "echo-only",
                    "protocols": ["ssh"],
                    "kind": ["forward"],
                    "destination": [f"127.0.0.1:{cls.allowed.port}"],
                    "action": "allow",
                },
                # Catch-all rules never open forwards: the policy's
                # forwards fallback (deny) decides every other one.
                {"name": "anything", "protocols": ["ssh"], "action": "allow"},
            ],
        }
        return SSHGateway(directory, sshd, policy=policy)

    def setUp(self) -> None:
        super().setUp()
        self.scratch = tempfile.mkdtemp(prefix="gatehouse-ssh-forward-")
        self.addCleanup(shutil.rmtree, self.scratch, True)

    def forward(self, service_port: int) -> tuple[subprocess.Popen[bytes], int]:
        """C{ssh -N -L} from a free local port to C{service_port}; (ssh, port)."""
        local = free_port()
        # LogLevel INFO (the harness's): ssh prints a channel's open failure.
        client = subprocess.Popen(
            self.gateway.ssh_argv(
                options=[
                    "-N",
                    "-o",
                    "ExitOnForwardFailure=yes",
                    "-L",
                    f"127.0.0.1:{local}:127.0.0.1:{service_port}",
                ]
            ),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env=self.gateway.client_env(),
        )
        self.addCleanup(_end, client)
        wait_listening(local, client)
        return client, local

    def test_allowed(self) -> None:
        """
        1 MiB through an allowed forward comes back intact; the recording
        has the channel's open and both byte counts at its close.
        """
        after = time.time()
        client, local = self.forward(self.allowed.port)
        before = self.allowed.connections()
        payload = os.urandom(1 << 20)
        self.assertEqual(round_trip(local, payload), payload)
        self.assertEqual(self.allowed.connections(), before + 1)
        _end(client)

        directory = self.gateway.wait_session(after).directory
        opens = [
            e
            for e in events_of(directory, "ssh-channel-open")
            if e["type"] == "direct-tcpip"
        ]
        self.assertEqual(len(opens), 1, opens)
        (opened,) = opens
        self.assertEqual(
            (opened["host"], opened["port"]), ("127.0.0.1", self.allowed.port)
        )
        closes = [
            e
            for e in events_of(directory, "ssh-channel-close")
            if e["channel"] == opened["channel"]
        ]
        # Each side's close is recorded, with the counts so far: all of it.
        self.assertEqual(
            sorted(
                (c["from"], c["bytes_from_client"], c["bytes_to_client"])
                for c in closes
            ),
            [
                ("client", len(payload), len(payload)),
                ("target", len(payload), len(payload)),
            ],
            closes,
        )

    def test_denied(self) -> None:
        """
        A destination no rule naming forwards allows (the catch-all allow
        rule does not count): ssh reports the refusal, the local connection
        ends, and the service never hears of it.
        """
        other = EchoService(self.scratch)
        self.addCleanup(other.stop)
        after = time.time()
        client, local = self.forward(other.port)
        with socket.create_connection(("127.0.0.1", local), 10) as sock:
            sock.settimeout(10)
            try:
                sock.sendall(b"hello?")
                got = sock.recv(100)
            except ConnectionResetError:
                got = b""
        self.assertEqual(got, b"")
        time.sleep(0.5)
        self.assertEqual(other.connections(), 0)
        _, stderr = _end(client)
        text = stderr.decode(errors="replace")
        self.assertIn("open failed: administratively prohibited: gatehouse:", text)
        self.assertIn("no policy rule allows this forward", text)
        directory = self.gateway.wait_session(after).directory
        (decision,) = events_of(directory, "decision")
        self.assertEqual((decision["action"], decision["rule"]), ("deny", "forwards"))
        self.assertEqual(
            decision["commands"][0]["text"], f"127.0.0.1:{other.port}", decision
        )

    def test_remote_forward_refused(self) -> None:
        """C{ssh -R} fails: ssh says so, and exits with ExitOnForwardFailure."""
        after = time.time()
        result = self.gateway.ssh(
            options=[
                "-N",
                "-o",
                "ExitOnForwardFailure=yes",
                "-R",
                f"127.0.0.1:0:127.0.0.1:{self.allowed.port}",
            ]
        )
        self.assertNotEqual(result.returncode, 0)
        self.assertIn(b"remote port forwarding failed", result.stderr)
        directory = self.gateway.wait_session(after).directory
        refused = [e["request"] for e in events_of(directory, "ssh-global-refused")]
        self.assertIn("tcpip-forward", refused)


_services: list[EchoService] = []


def _end(client: subprocess.Popen[bytes]) -> tuple[bytes, bytes]:
    """Stop an ssh client by its pid; what it wrote."""
    if client.poll() is None:
        client.send_signal(signal.SIGTERM)
    try:
        out, err = client.communicate(timeout=10)
    except subprocess.TimeoutExpired:
        client.kill()
        out, err = client.communicate()
    return out or b"", err or b""


@atexit.register
def _stop_services() -> None:
    for service in _services:
        service.stop()
