"""
End-to-end file transfers: OpenSSH's sftp and scp through the real daemon
to a real sshd, 100 MiB each way, checked on disk at both ends and in the
recording; legacy scp (C{scp -O}, an exec of C{scp -t}/C{scp -f}) allowed
and refused; SFTP rules (a denied write, a held remove approved through
the admin API, a denied rename) proven on the target's disk; flow control
(a client that stops reading or is stopped, a target command that never
reads) with the daemon's memory measured from /proc.  The transfer tests
print their throughput, through the gateway and straight to sshd.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Callable
from typing import Any, ClassVar

from gatehouse.protocols.ssh.bridge import STDERR_BIT
from gatehouse.recording.format import Direction, RecordType
from gatehouse.recording.index import IndexUnavailable, SessionRow, query_sessions
from gatehouse.recording.reader import read_records
from gatehouse.recording.verify import verify_session
from tests.fixtures.sshd import SSHServer
from tests.protocols.ssh.harness import SSHGateway, SSHGatewayTestCase

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


def ssh_policy(*rules: dict[str, Any], **settings: Any) -> dict[str, Any]:
    """A policy section: C{rules} first, then one allowing every SSH command."""
    allow = {"name": "anything", "protocols": ["ssh"], "action": "allow"}
    return {"opaque": "deny", **settings, "rules": [*rules, allow]}


#: each gateway's resident set size when its first test began
STARTED_RSS: dict[type, int] = {}
#: throughput figures measured by this module's tests, for the report
FIGURES: dict[str, float] = {}


def _figure(name: str, seconds: float, size: int = SIZE) -> None:
    FIGURES[name] = size / MiB / seconds
    print(
        f"\n{name}: {size / MiB:.0f} MiB in {seconds:.2f} s, {FIGURES[name]:.1f} MiB/s"
    )


def events_of(directory: str, name: str) -> list[dict[str, Any]]:
    """The session's events called C{name}, each with its record C{channel}."""
    found = []
    for record in read_records(directory):
        if record.type == RecordType.EVENT:
            event = json.loads(record.payload)
            if event.get("event") == name:
                found.append({**event, "channel": record.channel})
    return found


def resident(pid: int, field: str = "VmRSS") -> int:
    """
    The resident set size of process C{pid} in bytes (C{field} VmHWM: its
    peak so far).
    """
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise AssertionError(f"no {field} for {pid}")


def live_session(gateway: SSHGateway, after: float) -> SessionRow:
    """The session that started after C{after}, while it runs."""
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            rows = query_sessions(gateway.index_path(), limit=None)
        except IndexUnavailable:
            rows = []
        rows = [r for r in rows if r.started >= after]
        if rows:
            return rows[0]
        time.sleep(0.05)
    raise AssertionError(f"no session after {after}:\n{gateway.log()[-3000:]}")


class TransferTestCase(SSHGatewayTestCase):
    """
    A gateway with the class's L{policy} (the configuration's C{policy}
    section), and a scratch directory per test (both ends of every
    transfer are on this machine).
    """

    policy: ClassVar[dict[str, Any]]

    @classmethod
    def make_gateway(cls, directory: str, sshd: SSHServer) -> SSHGateway:
        return SSHGateway(directory, sshd, policy=cls.policy)

    def setUp(self) -> None:
        super().setUp()
        self.scratch = tempfile.mkdtemp(prefix="gatehouse-ssh-files-")
        self.addCleanup(shutil.rmtree, self.scratch, True)

    def assert_ok(self, result: subprocess.CompletedProcess[bytes], what: str) -> None:
        """C{result} exited 0, or the failure shows its stderr and the daemon's log."""
        self.assertEqual(
            result.returncode,
            0,
            f"{what} failed ({result.returncode}):\n"
            f"{result.stderr.decode(errors='replace')[-3000:]}\n"
            f"{self.gateway.log()[-3000:]}",
        )

    def remote(self, path: str) -> str:
        """C{web-1@127.0.0.1:path}, for scp."""
        return f"{self.gateway.destination()}:{path}"

    def scp(
        self, *args: str, legacy: bool = False
    ) -> subprocess.CompletedProcess[bytes]:
        """Run C{scp} (C{-O}: the legacy protocol) with C{args} through the gateway."""
        options = self.gateway.client_options(port_flag="-P")
        return subprocess.run(
            [shutil.which("scp") or "scp", *options, *(["-O"] * legacy), *args],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=300,
            env=self.gateway.client_env(),
        )


class BulkTransferTests(TransferTestCase):
    """100 MiB up and down with sftp and scp, intact at every end and recorded."""

    policy = ssh_policy()

    def setUp(self) -> None:
        super().setUp()
        process = self.gateway.gateway.process
        assert process is not None
        # The class's first test: the daemon has only just started.
        STARTED_RSS.setdefault(type(self), resident(process.pid))

    def sftp_events(self, after: float) -> list[dict[str, Any]]:
        """The C{sftp} events of the session after C{after}, once it verifies."""
        row = self.gateway.wait_session(after)
        report = verify_session(row.directory, self.gateway.gateway.anchors())
        self.assertEqual(report.findings, (), f"recording of {row.id} does not verify")
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

    def files(self) -> tuple[str, str, str, str]:
        """A 100 MiB source file, its SHA-256, and paths for the copies."""
        source = os.path.join(self.scratch, "source.bin")
        digest = make_file(source)
        remote = os.path.join(self.scratch, "remote.bin")
        return source, digest, remote, os.path.join(self.scratch, "fetched.bin")

    def transfer(
        self,
        name: str,
        run: Callable[[], subprocess.CompletedProcess[bytes]],
        copy: str,
        digest: str,
        recorded: tuple[str, str] | None = None,
    ) -> None:
        """
        C{run} a client (timed): it succeeds, C{copy} hashes as C{digest},
        and the session's C{recorded} (op, path) event carries it all.
        """
        after = time.time()
        start = time.monotonic()
        result = run()
        _figure(name, time.monotonic() - start)
        self.assert_ok(result, name)
        self.assertEqual(sha256_of(copy), digest)
        if recorded is None:  # straight to sshd
            return
        op, path = recorded
        self.assert_recorded(self.sftp_events(after), op, path, digest)
        process = self.gateway.gateway.process
        assert process is not None
        peak = resident(process.pid, "VmHWM")
        print(
            f"gateway RSS at start {STARTED_RSS[type(self)] / MiB:.1f} MiB, now"
            f" {resident(process.pid) / MiB:.1f} MiB, peak {peak / MiB:.1f} MiB"
        )
        # Streamed, not buffered: far less than the file at any time.
        self.assertLess(peak - STARTED_RSS[type(self)], 64 * MiB)

    def test_sftp_put_get(self) -> None:
        """
        C{put} then C{get} of 100 MiB: the target's file and the one fetched
        back hash as the original, and the recording's write and read events
        carry the path, the size and that hash.
        """
        source, digest, remote, fetched = self.files()
        put, get = f"put {source} {remote}\n", f"get {remote} {fetched}\n"
        self.transfer(
            "sftp put via gateway",
            lambda: self.gateway.sftp(put, timeout=300),
            remote,
            digest,
            ("write", remote),
        )
        self.transfer(
            "sftp get via gateway",
            lambda: self.gateway.sftp(get, timeout=300),
            fetched,
            digest,
            ("read", remote),
        )

    def test_sftp_direct(self) -> None:
        """
        The same transfers straight to sshd, for comparison (the figures
        printed; only correctness asserted).
        """
        sshd = self.sshd
        source, digest, remote, fetched = self.files()
        batch = os.path.join(self.scratch, "batch")

        def sftp(commands: str) -> subprocess.CompletedProcess[bytes]:
            with open(batch, "w") as f:
                f.write(commands)
            options = sshd.client_args(self.gateway.upstream_key, port_flag="-P")
            return subprocess.run(
                ["sftp", *options, "-b", batch, sshd.destination()],
                stdin=subprocess.DEVNULL,
                capture_output=True,
                timeout=300,
            )

        put, get = f"put {source} {remote}\n", f"get {remote} {fetched}\n"
        self.transfer("sftp put direct", lambda: sftp(put), remote, digest)
        self.transfer("sftp get direct", lambda: sftp(get), fetched, digest)

    def test_scp_both_ways(self) -> None:
        """
        Modern scp (SFTP underneath) up and down: intact, and recorded as
        SFTP write and read.
        """
        source, digest, remote, fetched = self.files()
        self.transfer(
            "scp up via gateway",
            lambda: self.scp(source, self.remote(remote)),
            remote,
            digest,
            ("write", remote),
        )
        self.transfer(
            "scp down via gateway",
            lambda: self.scp(self.remote(remote), fetched),
            fetched,
            digest,
            ("read", remote),
        )


def _write(path: str, content: bytes, mtime: float = 1_600_000_000) -> None:
    """Write C{content} at C{path} with an old, known modification time."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(content)
    os.utime(path, (mtime, mtime))


class LegacySCPTests(TransferTestCase):
    """
    C{scp -O}: the client runs C{scp -t} (upload) or C{scp -f} (download)
    on the target, an exec the policy decides like any other.
    """

    policy = ssh_policy(
        {
            "name": "no-scp-upload-here",
            "protocols": ["ssh"],
            "program": ["scp"],
            "flag": ["scp-sink"],
            "path": ["*/incoming/*"],
            "action": "deny",
            "message": "no uploads to incoming",
        }
    )

    def test_allowed(self) -> None:
        """Up and down through C{scp -t}/C{scp -f}: intact, and the exec recorded."""
        source = os.path.join(self.scratch, "source.bin")
        digest = make_file(source, 8 * MiB)
        remote = os.path.join(self.scratch, "remote.bin")
        fetched = os.path.join(self.scratch, "fetched.bin")
        after = time.time()
        self.assert_ok(self.scp(source, self.remote(remote), legacy=True), "up")
        self.assertEqual(sha256_of(remote), digest)
        row = self.gateway.wait_session(after)
        execs = [
            e for e in events_of(row.directory, "ssh-request") if e["request"] == "exec"
        ]
        self.assertEqual(len(execs), 1, execs)
        self.assertEqual(events_of(row.directory, "sftp"), [])

        self.assert_ok(self.scp(self.remote(remote), fetched, legacy=True), "down")
        self.assertEqual(sha256_of(fetched), digest)

    def test_upload_refused(self) -> None:
        """
        An upload the rule denies: the client fails with the reason, the
        target has no file (and its existing file there is untouched).
        """
        source = os.path.join(self.scratch, "source.bin")
        make_file(source, MiB)
        incoming = os.path.join(self.scratch, "incoming")
        _write(os.path.join(incoming, "kept"), b"original")
        for name in ("new.bin", "kept"):
            remote = os.path.join(incoming, name)
            result = self.scp(source, self.remote(remote), legacy=True)
            self.assertNotEqual(result.returncode, 0)
            stderr = result.stderr.decode(errors="replace")
            self.assertIn("no uploads to incoming", stderr)
        self.assertEqual(os.listdir(incoming), ["kept"])
        self.assertEqual(open(os.path.join(incoming, "kept"), "rb").read(), b"original")
        self.assertEqual(
            os.stat(os.path.join(incoming, "kept")).st_mtime, 1_600_000_000
        )

        # Downloads from there are not uploads: allowed.
        fetched = os.path.join(self.scratch, "fetched")
        result = self.scp(
            self.remote(os.path.join(incoming, "kept")), fetched, legacy=True
        )
        self.assert_ok(result, "scp -O down")
        self.assertEqual(open(fetched, "rb").read(), b"original")


APPROVER_GROUP = "approvers"


class SFTPRuleTests(TransferTestCase):
    """SFTP operations decided one by one, proven on the target's disk."""

    policy = ssh_policy(
        {
            "name": "locked-read-only",
            "protocols": ["ssh"],
            "kind": ["write"],
            "path": ["*/locked/*"],
            "action": "deny",
            "message": "locked is read-only",
        },
        {
            "name": "removal-reviewed",
            "protocols": ["ssh"],
            "kind": ["remove"],
            "path": ["*/reviewed/*"],
            "action": "review",
            "message": "removing needs a second pair of eyes",
        },
        {
            "name": "no-renames",
            "protocols": ["ssh"],
            "kind": ["rename"],
            "path": ["*/fixed/*"],
            "action": "deny",
            "message": "names are fixed here",
        },
        review={"approvers": [APPROVER_GROUP], "timeout": "60s"},
    )

    def test_write_denied(self) -> None:
        """
        A C{put} into the locked directory fails (Permission denied) and
        leaves the file there as it was; writes elsewhere in the same
        session work before and after.
        """
        source = os.path.join(self.scratch, "source.bin")
        digest = make_file(source, 2 * MiB)
        kept = os.path.join(self.scratch, "locked", "kept")
        _write(kept, b"original")
        first = os.path.join(self.scratch, "open", "first")
        second = os.path.join(self.scratch, "open", "second")
        os.makedirs(os.path.dirname(first))
        after = time.time()
        result = self.gateway.sftp(
            f"put {source} {first}\n-put {source} {kept}\nput {source} {second}\n"
        )
        stderr = result.stderr.decode(errors="replace")
        self.assertIn("Permission denied", stderr)
        self.assertEqual(open(kept, "rb").read(), b"original")
        self.assertEqual(os.stat(kept).st_mtime, 1_600_000_000)
        self.assertEqual(os.listdir(os.path.dirname(kept)), ["kept"])
        self.assertEqual(sha256_of(first), digest)
        self.assertEqual(sha256_of(second), digest)

        writes = events_of(self.gateway.wait_session(after).directory, "sftp")
        by_path = {e["path"]: e for e in writes if e["op"] == "write"}
        self.assertEqual(by_path[first]["status"], "ok")
        self.assertEqual(by_path[second]["sha256"], digest)
        self.assertIn("locked is read-only", by_path[kept]["status"])

    def test_rename_denied(self) -> None:
        """A denied rename leaves both names as they were."""
        fixed = os.path.join(self.scratch, "fixed")
        old, new = os.path.join(fixed, "old"), os.path.join(fixed, "new")
        _write(old, b"old content")
        _write(new, b"new content")
        result = self.gateway.sftp(f"rename {old} {new}\n")
        self.assertNotEqual(result.returncode, 0)
        self.assertIn("Permission denied", result.stderr.decode(errors="replace"))
        self.assertEqual(open(old, "rb").read(), b"old content")
        self.assertEqual(open(new, "rb").read(), b"new content")
        self.assertEqual(sorted(os.listdir(fixed)), ["new", "old"])

    # -- approval ------------------------------------------------------------

    def api(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        """Call the admin API as an approver (bob); the decoded answer."""
        token = self.gateway.token(subject="bob", groups=(APPROVER_GROUP,))
        request = urllib.request.Request(
            self.gateway.admin_url + path,
            method=method,
            data=None if body is None else json.dumps(body).encode(),
            headers={
                "Authorization": f"Bearer {token}",
                "Content-Type": "application/json",
            },
        )
        with urllib.request.urlopen(request, timeout=10) as answer:
            return json.load(answer)

    def pending_for(self, path: str, timeout: float = 20) -> dict[str, Any]:
        """The pending approval whose command names C{path}."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for request in self.api("GET", "/api/v1/approvals")["approvals"]:
                if any(path in c["text"] for c in request["commands"]):
                    return request
            time.sleep(0.1)
        self.fail(f"no pending approval for {path}:\n{self.gateway.log()[-3000:]}")

    def test_remove_held_then_approved(self) -> None:
        """
        C{rm} under the reviewed directory waits; the file stays until an
        approver approves through the admin API, then it is gone.
        """
        victim = os.path.join(self.scratch, "reviewed", "victim")
        _write(victim, b"doomed")
        batch = os.path.join(self.scratch, "batch")
        with open(batch, "w") as f:
            f.write(f"rm {victim}\n")
        after = time.time()
        client = subprocess.Popen(
            [
                "sftp",
                *self.gateway.client_options(port_flag="-P"),
                "-b",
                batch,
                self.gateway.destination(),
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=self.gateway.client_env(),
        )
        try:
            request = self.pending_for(victim)
            self.assertEqual(request["state"], "pending")
            time.sleep(0.5)
            self.assertIsNone(client.poll(), "sftp finished before the approval")
            self.assertTrue(os.path.exists(victim), "removed before the approval")
            answer = self.api(
                "POST", f"/api/v1/approvals/{request['id']}/approve", {"comment": "ok"}
            )
            self.assertEqual(answer["approval"]["state"], "approved", answer)
            _, stderr = client.communicate(timeout=30)
        finally:
            if client.poll() is None:
                client.kill()
                client.communicate()
        self.assertEqual(client.returncode, 0, stderr.decode(errors="replace"))
        self.assertIn(b"held for approval", stderr)
        self.assertFalse(os.path.exists(victim))
        directory = self.gateway.wait_session(after).directory
        removed = [e for e in events_of(directory, "sftp") if e["op"] == "remove"]
        self.assertEqual([(e["path"], e["status"]) for e in removed], [(victim, "ok")])
        (vote,) = events_of(directory, "approval-approved")
        self.assertEqual((vote["approver"], vote["comment"]), ("bob", "ok"))


def recorded_data(
    directory: str, direction: Direction = Direction.GATEWAY_TO_CLIENT
) -> int:
    """
    The bytes the recording holds in C{direction} on channels' main data
    (to the client: stdout; from it: stdin and the exec line).
    """
    return sum(
        len(r.payload)
        for r in read_records(directory)
        if r.type == RecordType.DATA
        and r.direction == direction
        and r.channel < STDERR_BIT
    )


class FlowControlTests(TransferTestCase):
    """
    A side that stops taking data stops the other; the gateway's memory
    stays flat.
    """

    policy = BulkTransferTests.policy

    def stalled(
        self,
        client: subprocess.Popen[bytes],
        after: float,
        direction: Direction,
        since: int = 0,
    ) -> SessionRow:
        """
        Once C{client}'s session stalls, the bytes recorded in C{direction}
        stop growing (a few MiB more than C{since} at most: what was in
        flight) and the gateway's RSS stays within 64 MiB of its idle
        baseline (taken first).
        """
        process = self.gateway.gateway.process
        assert process is not None
        row = live_session(self.gateway, after)
        time.sleep(4)
        first = recorded_data(row.directory, direction), resident(process.pid)
        time.sleep(2)
        second = recorded_data(row.directory, direction), resident(process.pid)
        print(
            f"\nidle RSS {self.baseline / MiB:.1f} MiB; stalled: RSS "
            f"{first[1] / MiB:.1f} then {second[1] / MiB:.1f} MiB, recorded "
            f"{first[0]} then {second[0]} bytes"
        )
        self.assertLess(max(first[1], second[1]) - self.baseline, 64 * MiB)
        self.assertEqual(first[0], second[0], "the data kept flowing")
        # What is in flight: the windows and the pipes, a few MiB.
        self.assertLess(second[0] - since, 16 * MiB)
        self.assertIsNone(client.poll())
        return row

    def setUp(self) -> None:
        super().setUp()
        process = self.gateway.gateway.process
        assert process is not None
        # Warm up (modules loaded on a first session), then the baseline.
        self.assert_ok(self.gateway.ssh(command="true"), "true")
        self.baseline = resident(process.pid)

    def test_reader_stops(self) -> None:
        """
        C{cat /dev/urandom} to a client whose stdout nobody reads stalls;
        reading again lets the data flow again.
        """
        after = time.time()
        client = subprocess.Popen(
            self.gateway.ssh_argv(command="cat /dev/urandom"),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env=self.gateway.client_env(),
        )
        try:
            assert client.stdout is not None
            row = self.stalled(client, after, Direction.GATEWAY_TO_CLIENT)
            # The reader comes back: the data flows again.
            got = 0
            while got < 32 * MiB:
                got += len(client.stdout.read1(1 << 20))
            deadline = time.monotonic() + 10
            while recorded_data(row.directory) < got:
                self.assertLess(time.monotonic(), deadline, "not recorded")
                time.sleep(0.1)
        finally:
            client.kill()
            client.communicate()

    def test_client_stopped(self) -> None:
        """The same with the ssh client stopped (SIGSTOP), then continued."""
        after = time.time()
        client = subprocess.Popen(
            self.gateway.ssh_argv(command="cat /dev/urandom"),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=self.gateway.client_env(),
        )
        try:
            row = live_session(self.gateway, after)
            time.sleep(0.5)  # logged in, the data flowing
            client.send_signal(signal.SIGSTOP)
            # What it read before it stopped, recorded (the flush interval
            # is 0.2 s): the bound on what followed is the other tests'.
            time.sleep(1)
            before = recorded_data(row.directory)
            row = self.stalled(client, after, Direction.GATEWAY_TO_CLIENT, before)
            stalled = recorded_data(row.directory)
            client.send_signal(signal.SIGCONT)
            deadline = time.monotonic() + 10
            while recorded_data(row.directory) < stalled + 32 * MiB:
                self.assertLess(time.monotonic(), deadline, "no flow after SIGCONT")
                time.sleep(0.1)
        finally:
            client.send_signal(signal.SIGCONT)
            client.kill()
            client.communicate()

    def test_target_stops_reading(self) -> None:
        """
        A client sending as fast as it can to a command that never reads
        its stdin (C{sleep}): the client is stalled, not buffered for.
        (sshd leaves the sleep running when the connection ends: it is
        short.)
        """
        after = time.time()
        with open("/dev/zero", "rb") as zeros:
            client = subprocess.Popen(
                self.gateway.ssh_argv(command="sleep 20"),
                stdin=zeros,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                env=self.gateway.client_env(),
            )
        try:
            self.stalled(client, after, Direction.CLIENT_TO_GATEWAY)
        finally:
            client.kill()
            client.communicate()
