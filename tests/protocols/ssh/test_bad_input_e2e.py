"""
End-to-end: bad input to the SSH listener, through the real daemon, with
raw sockets, the real OpenSSH client and real sshds.  Each case checks
what the client is told, that the gateway goes on serving (a good
C{ssh web-1@gw true} right after), and the close reason: in the
session's recording (CLOSE record and C{session.end} line) once the
credentials checked out, else in the one C{login.refused} log line.
"""

from __future__ import annotations

import json
import os
import re
import socket
import struct
import subprocess
import time
from pathlib import Path

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from twisted.trial import unittest

from gatehouse.identity import Identity
from gatehouse.protocols.ssh.certificates import UserCA
from gatehouse.recording.format import RecordType
from gatehouse.recording.reader import read_records
from tests.fixtures.sshd import KeyPair, SSHServer, generate_key
from tests.protocols.postgres.harness import AUDIENCE, ISSUER
from tests.protocols.ssh._approval_harness import SSHGateway, shared_gateway

#: OpenSSH's exit status for a failed connection or login
SSH_FAILED = 255


def _make() -> SSHGateway:
    return SSHGateway(
        more_sshd={
            "rekeyed": SSHServer(restricted_account=False).start(),
            "dying": SSHServer(restricted_account=False).start(),
            "down": None,
        }
    )


def _read_all(sock: socket.socket, timeout: float = 10) -> tuple[bytes, bool]:
    """Everything the peer sends until it closes (True) or C{timeout} (False)."""
    sock.settimeout(timeout)
    data = b""
    try:
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                return data, True
            data += chunk
    except TimeoutError:
        return data, False
    except ConnectionResetError:
        return data, True


def _end(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.kill()
        process.wait()


class BadInputTests(unittest.TestCase):
    """Each kind of bad input is refused clearly; the gateway keeps serving."""

    def setUp(self) -> None:
        self.gw = shared_gateway(BadInputTests, _make)
        self.mark = self.gw.log_size()

    # -- helpers -----------------------------------------------------------

    def assertServing(self) -> None:
        """Another client still gets through to the healthy target."""
        good = self.gw.ssh("echo still-serving")
        self.assertEqual(good.returncode, 0, good.stderr)
        self.assertEqual(good.stdout, b"still-serving\n")

    def refused_line(self, *needles: str) -> str:
        """The C{login.refused} line since the test began, holding C{needles}."""
        return self.gw.wait_line("login.refused", *needles, since=self.mark)

    def ended(self, target: str, *needles: str) -> str:
        """
        The close reason of the recorded session to C{target} since the
        test began: its C{session.end} line's, which the recording's CLOSE
        record repeats; each of C{needles} is in it.
        """
        line = self.gw.wait_line("session.end", f"target={target}", since=self.mark)
        session_id = re.search(r"session_id=(\S+)", line).group(1)  # type: ignore[union-attr]
        reason = self.close_record(session_id)
        for needle in needles:
            self.assertIn(needle, line)
            self.assertIn(needle, reason)
        return reason

    def close_record(self, session_id: str, timeout: float = 10) -> str:
        """The reason in the CLOSE record of the session C{session_id}."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for directory in self.gw.gateway.recordings():
                if directory.endswith(session_id):
                    closes = [
                        r for r in read_records(directory) if r.type == RecordType.CLOSE
                    ]
                    if closes:
                        return json.loads(closes[-1].payload)["reason"]
            time.sleep(0.1)
        self.fail(f"no CLOSE record for session {session_id}")

    def certificate(self, name: str, ca: UserCA, principal: str, now: float) -> KeyPair:
        """A key with a certificate of C{ca} beside it (C{NAME-cert.pub})."""
        pair = generate_key(self.gw.directory / "certs" / name)
        public = serialization.load_ssh_public_key(pair.public_path.read_bytes())
        identity = Identity("agent-7", "agent-7", ("agents",), ISSUER, None)
        cert = ca.mint(identity, public, [principal], 600, now)  # type: ignore[arg-type]
        Path(f"{pair.private_path}-cert.pub").write_bytes(cert.public_bytes() + b"\n")
        return pair

    def ssh_with(self, pair: KeyPair) -> subprocess.CompletedProcess[bytes]:
        """C{ssh web-1@gw true} logging in with C{pair}'s certificate only."""
        return self.gw.ssh(
            "true",
            password=False,
            options=[
                "-i",
                str(pair.private_path),
                "-o",
                "IdentitiesOnly=yes",
                "-o",
                "BatchMode=yes",
                "-o",
                "PreferredAuthentications=publickey",
                # ssh shows the server's banner from LogLevel INFO up
                "-o",
                "LogLevel=INFO",
            ],
        )

    def ca(self) -> UserCA:
        return UserCA.from_file(str(self.gw.user_ca.private_path))

    # -- before the key exchange -----------------------------------------

    def test_garbage_version_line(self) -> None:
        """A client that does not speak SSH is told so and cut off."""
        with socket.create_connection(("127.0.0.1", self.gw.port), 10) as sock:
            sock.sendall(b"HELLO\r\n")
            reply, closed = _read_all(sock)
        self.assertTrue(reply.startswith(b"SSH-2.0-gatehouse\r\n"), reply[:40])
        self.assertIn(b"Invalid SSH identification string", reply)
        self.assertTrue(closed, "the gateway kept the connection open")
        self.refused_line("garbage instead of an SSH version line")
        self.assertServing()

    def test_packet_length_over_limit(self) -> None:
        """A binary packet claiming 2 GiB: disconnected, nothing buffered."""
        with socket.create_connection(("127.0.0.1", self.gw.port), 10) as sock:
            sock.sendall(b"SSH-2.0-OpenSSH_9.2 gatehouse-test\r\n")
            sock.sendall(struct.pack(">I", 0x7FFFFFFF) + b"\x00" * 12)
            reply, closed = _read_all(sock)
        self.assertIn(b"bad packet length", reply)
        self.assertTrue(closed, "the gateway kept the connection open")
        self.refused_line("bad packet length")
        self.assertServing()

    def test_key_exchange_fails(self) -> None:
        """Algorithms the gateway does not offer: OpenSSH says "no matching"."""
        for option, what in (
            ("KexAlgorithms=diffie-hellman-group1-sha1", "key exchange method"),
            ("Ciphers=3des-cbc", "cipher"),
        ):
            result = self.gw.ssh("true", options=["-o", option, "-o", "LogLevel=INFO"])
            self.assertEqual(result.returncode, SSH_FAILED, result.stderr)
            self.assertIn(f"no matching {what} found".encode(), result.stderr)
        self.refused_line("couldn't match all kex parts")
        self.assertServing()

    # -- credentials ---------------------------------------------------------

    def test_good_certificate(self) -> None:
        """The control: a certificate of the gateway's CA for web-1 logs in."""
        result = self.ssh_with(
            self.certificate("good", self.ca(), "web-1", time.time())
        )
        self.assertEqual(result.returncode, 0, result.stderr)

    def _refused_certificate(self, pair: KeyPair, why: str) -> None:
        result = self.ssh_with(pair)
        self.assertEqual(result.returncode, SSH_FAILED, result.stderr)
        self.assertIn(b"Permission denied", result.stderr)
        self.assertIn(f"gatehouse: certificate refused: {why}".encode(), result.stderr)
        self.refused_line(f"certificate refused: {why}")
        self.assertServing()

    def test_expired_certificate(self) -> None:
        pair = self.certificate("expired", self.ca(), "web-1", time.time() - 7200)
        self._refused_certificate(pair, "certificate expired")

    def test_foreign_certificate(self) -> None:
        pair = self.certificate("foreign", UserCA.generate(), "web-1", time.time())
        self._refused_certificate(
            pair, "certificate signed by a CA this gateway does not trust"
        )

    def test_certificate_for_another_principal(self) -> None:
        pair = self.certificate("other", self.ca(), "web-2", time.time())
        self._refused_certificate(pair, "certificate not valid for principal 'web-1'")

    def _refused_token(self, token: str, kind: str) -> None:
        result = self.gw.ssh("true", token=token, options=["-o", "LogLevel=INFO"])
        self.assertEqual(result.returncode, SSH_FAILED, result.stderr)
        self.assertIn(b"Permission denied", result.stderr)
        self.assertIn(b"gatehouse: authentication failed\r\n", result.stderr)
        # why is for the operators' log only, as on every listener
        self.assertNotIn(b"authentication failed:", result.stderr)
        failure = self.gw.wait_line("auth.failure", f"reason={kind}", since=self.mark)
        self.assertIn("detail=", failure)
        # The one line of the refused login names the same connection.
        session_id = re.search(r"session_id=(\S+)", failure).group(1)  # type: ignore[union-attr]
        self.refused_line(f"session_id={session_id}")
        self.assertServing()

    def test_expired_token(self) -> None:
        self._refused_token(self.gw.token(lifetime=-600), "expired")

    def test_token_with_a_wrong_signature(self) -> None:
        now = int(time.time())
        forged = jwt.encode(
            {
                "iss": ISSUER,
                "aud": AUDIENCE,
                "sub": "agent-7",
                "realm_access": {"roles": ["agents"]},
                "iat": now,
                "exp": now + 600,
            },
            ec.generate_private_key(ec.SECP256R1()),
            algorithm="ES256",
            headers={"kid": "test-key-1"},
        )
        self._refused_token(forged, "signature")

    # -- targets -------------------------------------------------------------

    def test_unknown_target(self) -> None:
        result = self.gw.ssh("true", login="nosuch")
        self.assertEqual(result.returncode, SSH_FAILED, result.stderr)
        self.assertIn(b"gatehouse: unknown target 'nosuch'", result.stderr)
        self.ended("nosuch", "unknown target 'nosuch'")
        self.assertServing()

    def test_host_key_changed(self) -> None:
        """
        The target came back with other host keys: the client is told which
        target and which key (SHA256) the gateway saw, and nothing runs.
        """
        rekeyed = self.gw.more_sshd[0]
        rekeyed.restart(new_host_keys=True)
        fingerprint = subprocess.run(
            ["ssh-keygen", "-l", "-E", "sha256", "-f", "-"],
            input="\n".join(rekeyed.host_public_keys()).encode(),
            capture_output=True,
            check=True,
        ).stdout.decode()
        result = self.gw.ssh("touch /tmp/should-not-exist", login="rekeyed")
        self.assertEqual(result.returncode, SSH_FAILED, result.stderr)
        stderr = result.stderr.decode()
        self.assertIn("target 'rekeyed' presented host key SHA256:", stderr)
        seen = re.search(r"SHA256:[A-Za-z0-9+/]+", stderr).group(0)  # type: ignore[union-attr]
        self.assertIn(seen, fingerprint)  # the key the target has now
        self.assertIn("not a pinned host key", stderr)
        self.ended("rekeyed", "host key", seen)
        self.assertServing()

    def test_target_down(self) -> None:
        result = self.gw.ssh("true", login="down")
        self.assertEqual(result.returncode, SSH_FAILED, result.stderr)
        self.assertIn(
            b"gatehouse: the gateway could not open a session on target 'down'",
            result.stderr,
        )
        self.assertIn(b"Connection refused", result.stderr)
        self.ended("down", "target is down")
        self.assertServing()

    def test_target_dies_mid_transfer(self) -> None:
        """
        The target is killed while it streams to the client: the client
        gets an error and exits within seconds; the recording says why.
        """
        dying = self.gw.more_sshd[1].start()  # again, if another test killed it
        client = subprocess.Popen(
            self.gw.ssh_argv("dying", "cat /dev/zero", options=["-o", "LogLevel=INFO"]),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=self.gw.env(),
        )
        self.addCleanup(_end, client)
        assert client.stdout is not None
        out = client.stdout.fileno()
        received = 0
        while received < 20 << 20:
            chunk = os.read(out, 1 << 20)
            self.assertTrue(chunk, "the transfer ended early")
            received += len(chunk)
        killed = time.monotonic()
        dying.kill()
        while os.read(out, 1 << 20):
            pass
        status = client.wait(30)
        took = time.monotonic() - killed
        stderr = client.stderr.read() if client.stderr else b""
        self.assertEqual(status, SSH_FAILED, stderr)
        self.assertLess(took, 10)
        # The gateway's disconnect message, unless the client's own write
        # (a window adjust) hit the closed socket first: an error either way.
        self.assertRegex(
            stderr, rb"the target closed its connection|Broken pipe|reset by peer"
        )
        self.ended("dying", "the target closed its connection")
        self.assertServing()

    def test_target_dies_during_sftp_put(self) -> None:
        """
        The target is killed while an SFTP upload streams to it: sftp fails
        and exits within seconds; the recording says why.
        """
        dying = self.gw.more_sshd[1].start()
        work = self.gw.directory / "sftp"
        work.mkdir(exist_ok=True)
        work.chmod(0o777)
        source, destination = work / "big", work / "uploaded"
        with source.open("wb") as f:
            f.truncate(1 << 30)  # sparse: 1 GiB to read, none on disk
        batch = work / "batch"
        batch.write_text(f"put {source} {destination}\n")
        argv = self.gw.ssh_argv("dying", None, options=["-o", "BatchMode=no"])
        # sftp takes ssh's options, -P for the port and -b for the batch
        at = argv.index("-p")
        argv[at] = "-P"
        client = subprocess.Popen(
            ["sftp", *argv[1:-1], "-b", str(batch), argv[-1]],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=self.gw.env(),
        )
        self.addCleanup(_end, client)
        deadline = time.monotonic() + 60
        while not destination.exists() or destination.stat().st_size < 10 << 20:
            self.assertIsNone(client.poll(), "sftp ended before the kill")
            self.assertLess(time.monotonic(), deadline, "the upload did not start")
            time.sleep(0.02)
        killed = time.monotonic()
        dying.kill()
        out, err = client.communicate(timeout=30)
        took = time.monotonic() - killed
        self.assertNotEqual(client.returncode, 0, out + err)
        self.assertLess(took, 10)
        self.assertLess(destination.stat().st_size, 1 << 30)
        self.assertRegex(
            err,
            rb"the target closed its connection|Connection closed|Broken pipe"
            rb"|reset by peer",
        )
        self.ended("dying", "the target closed its connection")
        # The upload cut off is recorded as such, with what had crossed.
        line = self.gw.wait_line("session.end", "target=dying", since=self.mark)
        session_id = re.search(r"session_id=(\S+)", line).group(1)  # type: ignore[union-attr]
        (directory,) = [
            d for d in self.gw.gateway.recordings() if d.endswith(session_id)
        ]
        writes = [
            json.loads(r.payload)
            for r in read_records(directory)
            if r.type == RecordType.EVENT and b'"sftp"' in r.payload
        ]
        writes = [w for w in writes if w.get("event") == "sftp" and w["op"] == "write"]
        self.assertEqual(len(writes), 1, writes)
        self.assertNotEqual(writes[0]["status"], "ok")
        self.assertGreater(writes[0]["bytes"], 0)
        self.assertServing()
