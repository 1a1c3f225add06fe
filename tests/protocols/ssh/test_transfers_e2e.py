"""
End-to-end file transfers: OpenSSH's sftp and scp through the real daemon
to a real sshd, 100 MiB each way, checked on disk at both ends and in the
recording; legacy scp (C{scp -O}, an exec of C{scp -t}/C{scp -f}) allowed
and refused; SFTP rules (a denied write, a held remove approved through
the admin API, a denied rename) proven on the target's disk.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import time
from typing import Any

from tests.protocols.ssh._transfer_harness import SSHGatewayTestCase, events_of

SIZE = 100 << 20
MiB = 1 << 20


def make_file(path: str, size: int = SIZE) -> str:
    """Write C{size} random bytes to C{path}; their SHA-256."""
    digest = hashlib.sha256()
    with open(path, "wb") as f:
        left = size
        while left:
            chunk = os.urandom(min(left, 4 * MiB))
            digest.update(chunk)
            f.write(chunk)
            left -= len(chunk)
    return digest.hexdigest()


def sha256_of(path: str) -> str:
    """The SHA-256 of the file at C{path}."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(4 * MiB):
            digest.update(chunk)
    return digest.hexdigest()


#: throughput figures measured by this module's tests, for the report
FIGURES: dict[str, float] = {}


def _figure(name: str, seconds: float, size: int = SIZE) -> None:
    FIGURES[name] = size / MiB / seconds
    print(
        f"\n{name}: {size / MiB:.0f} MiB in {seconds:.2f} s, {FIGURES[name]:.1f} MiB/s"
    )


class BulkTransferTests(SSHGatewayTestCase):
    """100 MiB up and down with sftp and scp, intact at every end and recorded."""

    policy = {
        "policy": {
            "opaque": "deny",
            "rules": [{"name": "anything", "protocols": ["ssh"], "action": "allow"}],
        }
    }

    def sftp_events(self, after: float) -> list[dict[str, Any]]:
        row = self.gw.latest_session(after)
        return events_of(row.directory, "sftp")

    def assert_recorded(
        self, events: list[dict[str, Any]], op: str, path: str, digest: str
    ) -> None:
        """One C{op} event for C{path}: all the bytes, and their hash."""
        mine = [e for e in events if e.get("op") == op and e.get("path") == path]
        self.assertEqual(len(mine), 1, f"{op} {path} in {json.dumps(events)}")
        event = mine[0]
        self.assertEqual(event["status"], "ok")
        self.assertEqual(event["bytes"], SIZE)
        self.assertTrue(event["sequential"], event)
        self.assertEqual(event["sha256"], digest)

    def test_sftp_put_get(self) -> None:
        """
        C{put} then C{get} of 100 MiB: the target's file and the one fetched
        back hash as the original, and the recording's write and read events
        carry the path, the size and that hash.
        """
        source = os.path.join(self.scratch, "source.bin")
        digest = make_file(source)
        remote = os.path.join(self.scratch, "remote.bin")
        fetched = os.path.join(self.scratch, "fetched.bin")

        after = time.time()
        start = time.monotonic()
        result = self.gw.sftp_batch(f"put {source} {remote}\n")
        _figure("sftp put via gateway", time.monotonic() - start)
        self.assert_ok(result, "sftp put")
        self.assertEqual(sha256_of(remote), digest)
        events = self.sftp_events(after)
        self.assert_recorded(events, "write", remote, digest)

        after = time.time()
        start = time.monotonic()
        result = self.gw.sftp_batch(f"get {remote} {fetched}\n")
        _figure("sftp get via gateway", time.monotonic() - start)
        self.assert_ok(result, "sftp get")
        self.assertEqual(sha256_of(fetched), digest)
        self.assert_recorded(self.sftp_events(after), "read", remote, digest)

    def test_sftp_direct(self) -> None:
        """
        The same transfers straight to sshd, for comparison (the figures
        printed; only correctness asserted).
        """
        sshd = self.gw.sshd
        key = self.gw.upstream_key
        source = os.path.join(self.scratch, "source.bin")
        digest = make_file(source)
        remote = os.path.join(self.scratch, "remote.bin")
        fetched = os.path.join(self.scratch, "fetched.bin")
        batch = os.path.join(self.scratch, "batch")
        for name, commands, check in (
            ("sftp put direct", f"put {source} {remote}\n", remote),
            ("sftp get direct", f"get {remote} {fetched}\n", fetched),
        ):
            with open(batch, "w") as f:
                f.write(commands)
            start = time.monotonic()
            result = subprocess.run(
                [
                    "sftp",
                    *sshd.client_args(key, port_flag="-P"),
                    "-b",
                    batch,
                    sshd.destination(),
                ],
                stdin=subprocess.DEVNULL,
                capture_output=True,
                timeout=300,
            )
            _figure(name, time.monotonic() - start)
            self.assert_ok(result, name)
            self.assertEqual(sha256_of(check), digest)

    def test_scp_both_ways(self) -> None:
        """
        Modern scp (SFTP underneath) up and down: intact, and recorded as
        SFTP write and read.
        """
        source = os.path.join(self.scratch, "source.bin")
        digest = make_file(source)
        remote = os.path.join(self.scratch, "remote-scp.bin")
        fetched = os.path.join(self.scratch, "fetched-scp.bin")

        after = time.time()
        start = time.monotonic()
        result = self.gw.scp(source, self.gw.remote(remote))
        _figure("scp up via gateway", time.monotonic() - start)
        self.assert_ok(result, "scp up")
        self.assertEqual(sha256_of(remote), digest)
        self.assert_recorded(self.sftp_events(after), "write", remote, digest)

        after = time.time()
        start = time.monotonic()
        result = self.gw.scp(self.gw.remote(remote), fetched)
        _figure("scp down via gateway", time.monotonic() - start)
        self.assert_ok(result, "scp down")
        self.assertEqual(sha256_of(fetched), digest)
        self.assert_recorded(self.sftp_events(after), "read", remote, digest)
