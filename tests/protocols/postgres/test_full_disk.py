"""
A full recordings disk, through the real daemon: the recordings directory is
a small tmpfs this test mounts (it must run as root).

What is judged is on disk and on the wire: every byte a client received is
in the recording, the recording verifies as complete with the reason it
ended, other clients are refused while the disk is full and served once
space is freed, and the daemon keeps running.
"""

from __future__ import annotations

import os
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import time

import yaml
from twisted.trial.unittest import SynchronousTestCase

from gatehouse.recording.format import Direction, RecordType
from gatehouse.recording.interfaces import SPACE_EXHAUSTED
from gatehouse.recording.reader import read_records
from gatehouse.recording.verify import verify_session
from tests.fixtures.postgres import shared_cluster
from tests.protocols.postgres.harness import Gateway

MiB = 1024 * 1024
#: A result of about 48 MB that zstd shrinks only about twofold.
BIG = (
    "SELECT (SELECT string_agg(md5(random()::text || g::text || i::text), '') "
    "FROM generate_series(1, 30) AS i) FROM generate_series(1, 50000) AS g"
)
#: About 4 MB: more than one segment (1 MiB) of this test's gateway.
MEDIUM = BIG.replace("50000", "4000")


class RawClient:
    """
    A PostgreSQL client on a plain socket that keeps every byte it
    receives, to be compared with what the gateway recorded.
    """

    def __init__(self, port: int, token: str):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=20)
        self.received = bytearray()
        self._buffer = bytearray()
        self.closed = False
        params = b"user\0alice\0database\0app\0\0"
        body = struct.pack(">I", 196608) + params
        self.sock.sendall(struct.pack(">I", len(body) + 4) + body)
        kind, payload = self.message()
        if kind != b"R" or struct.unpack(">I", payload[:4])[0] != 3:
            raise AssertionError(f"expected a password request, got {kind!r}")
        self.send(b"p", token.encode() + b"\0")
        self.until_ready()

    def send(self, kind: bytes, payload: bytes) -> None:
        self.sock.sendall(kind + struct.pack(">I", len(payload) + 4) + payload)

    def _fill(self) -> bool:
        try:
            chunk = self.sock.recv(1 << 16)
        except ConnectionResetError:
            chunk = b""
        if not chunk:
            self.closed = True
            return False
        self.received += chunk
        self._buffer += chunk
        return True

    def message(self) -> tuple[bytes, bytes] | None:
        """The next message, or None at the end of the stream."""
        while True:
            if len(self._buffer) >= 5:
                (length,) = struct.unpack(">I", self._buffer[1:5])
                if len(self._buffer) >= length + 1:
                    kind = bytes(self._buffer[:1])
                    payload = bytes(self._buffer[5 : length + 1])
                    del self._buffer[: length + 1]
                    return kind, payload
            if not self._fill():
                return None

    def until_ready(self) -> list[tuple[bytes, bytes]]:
        """Messages up to ReadyForQuery or the end; errors among them."""
        errors = []
        while (message := self.message()) is not None:
            kind = message[0]
            if kind == b"E":
                errors.append(message)
            if kind == b"Z":
                break
        return errors

    def query(self, sql: str) -> list[tuple[bytes, bytes]]:
        """Run C{sql}; return the errors it got."""
        self.send(b"Q", sql.encode() + b"\0")
        return self.until_ready()

    def drain(self) -> None:
        """Read until the gateway hangs up."""
        while self._fill():
            pass

    def close(self) -> None:
        self.sock.close()


def _fields(error: bytes) -> dict[str, str]:
    fields = {}
    for part in error.split(b"\0"):
        if part:
            fields[chr(part[0])] = part[1:].decode()
    return fields


class FullDiskTests(SynchronousTestCase):
    """
    One gateway per test, its recordings on an 8 MiB tmpfs, its segments
    1 MiB, its reserve 1 MiB (the index is kept elsewhere).
    """

    def setUp(self) -> None:
        if os.geteuid() != 0:
            self.fail("these tests mount a tmpfs: run them as root")
        self.cluster = shared_cluster()
        base = tempfile.mkdtemp(prefix="gatehouse-full-disk-")
        self.addCleanup(shutil.rmtree, base, True)
        self.recordings = os.path.join(base, "recordings")
        os.makedirs(self.recordings)
        subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", self.recordings],
            check=True,
        )
        self.addCleanup(self._unmount)
        gateway = self.gateway = Gateway(base, self.cluster, allow_cleartext=True)
        with open(gateway.config_path) as f:
            config = yaml.safe_load(f)
        config["recording"].update(
            index=os.path.join(base, "index.sqlite3"),
            segment_max_bytes="1MiB",
            reserve_bytes="1MiB",
        )
        with open(gateway.config_path, "w") as f:
            yaml.safe_dump(config, f)
        gateway.start()
        self.addCleanup(gateway.stop)

    def _unmount(self) -> None:
        subprocess.run(["umount", "-l", self.recordings], check=False)

    # -- helpers -----------------------------------------------------------

    def sessions(self) -> set[str]:
        return set(self.gateway.recordings())

    def only_new(self, before: set[str]) -> str:
        new = self.sessions() - before
        self.assertEqual(len(new), 1, new)
        return new.pop()

    def sealed(self, directory: str) -> object:
        """The verify report of C{directory}, once it is complete."""
        deadline = time.monotonic() + 15
        while True:
            report = verify_session(directory, self.gateway.anchors())
            if report.complete or time.monotonic() > deadline:
                return report
            time.sleep(0.05)

    def recorded_to_client(self, directory: str) -> bytes:
        return b"".join(
            r.payload
            for r in read_records(directory)
            if r.type == RecordType.DATA and r.direction == Direction.GATEWAY_TO_CLIENT
        )

    def assert_complete_for_space(self, directory: str) -> None:
        report = self.sealed(directory)
        self.assertEqual(report.findings, ())
        self.assertTrue(report.complete)
        self.assertEqual(report.exit_code, 0)
        self.assertTrue(
            report.recording_ended.startswith(SPACE_EXHAUSTED),
            report.recording_ended,
        )
        verify = subprocess.run(
            [
                sys.executable,
                "-m",
                "gatehouse",
                "verify",
                directory,
                "--root-key",
                self.gateway.root_public,
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
        self.assertEqual(verify.returncode, 0, verify.stdout + verify.stderr)
        self.assertIn("OK: complete and intact", verify.stdout)
        self.assertIn(SPACE_EXHAUSTED, verify.stdout)
        self.assertNotIn("truncated", verify.stdout)

    def assert_ended_for_space(self, client: RawClient, errors: list) -> None:
        client.drain()
        self.assertTrue(client.closed)
        self.assertEqual(len(errors), 1, errors)
        fields = _fields(errors[0][1])
        self.assertEqual((fields["S"], fields["C"]), ("FATAL", "53100"), fields)

    def assert_refused_then_served(self, directory: str) -> None:
        """While the disk is full others are refused; once freed, served."""
        free = _free(self.recordings)
        filler = os.path.join(self.recordings, "filler-2")
        if free > 512 * 1024:
            # Leave less than a new session needs, whatever the session left.
            with open(filler, "wb") as f:
                os.posix_fallocate(f.fileno(), 0, free - 512 * 1024)
        before = self.sessions()
        # The refusal comes after TLS is negotiated (at the startup
        # message), so a client that insists on TLS is shown its text too.
        for sslmode in ("require", "disable"):
            refused = self.gateway.psql("SELECT 1", sslmode=sslmode)
            self.assertNotEqual(refused.returncode, 0)
            self.assertIn("cannot record sessions now", refused.stderr)
            self.assertIn("recording disk is full", refused.stderr)
        self.assertEqual(self.sessions(), before, "a refused session was recorded")
        self.assertIsNone(self.gateway.process.poll(), "the daemon died")
        # The operator moves the evidence away and frees the disk.
        archive = tempfile.mkdtemp(prefix="gatehouse-archive-")
        self.addCleanup(shutil.rmtree, archive, True)
        shutil.move(directory, archive)
        for name in ("filler", "filler-2"):
            if os.path.exists(os.path.join(self.recordings, name)):
                os.unlink(os.path.join(self.recordings, name))
        before = self.sessions()
        served = self.gateway.psql("SELECT 'served again'")
        self.assertEqual(
            served.returncode, 0, served.stderr + self.gateway.log()[-2000:]
        )
        self.assertIn("served again", served.stdout)
        report = self.sealed(self.only_new(before))
        self.assertEqual((report.findings, report.exit_code), ((), 0))
        self.assertIsNone(report.recording_ended)

    # -- tests -------------------------------------------------------------

    def test_stream_fills_disk(self):
        """
        A client streams a result larger than the disk: the session ends
        with FATAL 53100 when no new segment fits, every byte the client
        got is in the recording, and the recording verifies as complete,
        ended for want of space.
        """
        before = self.sessions()
        client = RawClient(self.gateway.port, self.gateway.token())
        self.addCleanup(client.close)
        errors = client.query(BIG)
        self.assert_ended_for_space(client, errors)
        self.assertGreater(len(client.received), 4 * MiB)
        self.assertLess(len(client.received), 40 * MiB, "the disk never filled")
        directory = self.only_new(before)
        self.assert_complete_for_space(directory)
        recorded = self.recorded_to_client(directory)
        self.assertEqual(len(recorded), len(client.received))
        self.assertTrue(recorded == bytes(client.received))
        self.assert_refused_then_served(directory)

    def test_filled_from_outside_while_idle(self):
        """
        The disk fills from outside while a session is idle: its next small
        query is still served and recorded (its segment's space was
        reserved), and a larger one ends it cleanly.
        """
        before = self.sessions()
        client = RawClient(self.gateway.port, self.gateway.token())
        self.addCleanup(client.close)
        self.assertEqual(client.query("SELECT 1"), [])
        with open(os.path.join(self.recordings, "filler"), "wb") as f:
            os.posix_fallocate(f.fileno(), 0, _free(self.recordings))
        self.assertEqual(_free(self.recordings), 0)
        self.assertEqual(client.query("SELECT repeat('y', 1000)"), [])
        errors = client.query(MEDIUM)
        self.assert_ended_for_space(client, errors)
        directory = self.only_new(before)
        self.assert_complete_for_space(directory)
        self.assertEqual(self.recorded_to_client(directory), bytes(client.received))
        self.assertIn(b"y" * 1000, self.recorded_to_client(directory))
        self.assert_refused_then_served(directory)


def _free(path: str) -> int:
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize
