"""
End-to-end: OpenSSH's own clients through the real daemon to a real sshd.

C{ssh}, C{sftp} and C{gatehouse ssh-cert} run as users run them against
C{twistd -n gatehouse} with an SSH listener (L{SSHGateway}); the gateway
logs in to a throwaway sshd (L{tests.fixtures.sshd.SSHServer}) with its
own key.  The tests look at what really happened: the upstream account,
files on disk, the sshd's log, and the recordings through the
C{gatehouse sessions}, C{export}, C{replay} and C{verify} CLIs.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import stat
import tempfile
import time
from pathlib import Path

from gatehouse.recording.index import query_sessions
from tests.fixtures.sshd import asciinema_cat
from tests.protocols.ssh.harness import (
    SSHGateway,
    SSHGatewayTestCase,
    events,
    ssh_target,
)

#: a file under /etc the restricted account must not be able to create
FORBIDDEN = "/etc/gh-e2e-forbidden"
#: the prompt the terminal tests set (typed split, so its echo differs)
PROMPT = b"GH-PS> "


class SSHEndToEndTests(SSHGatewayTestCase):
    """
    One sshd and one gateway: target C{web-1} logs in as the sshd's admin
    account (root), except identities of group C{agents}, which get the
    restricted account.
    """

    @classmethod
    def make_gateway(cls, directory, sshd):
        accounts = []
        if sshd.restricted_account is not None:
            accounts = [{"groups": ["agents"], "user": sshd.restricted_account}]
        return SSHGateway(
            directory,
            sshd,
            targets=[ssh_target("web-1", user=sshd.admin_account, accounts=accounts)],
        )

    def setUp(self) -> None:
        super().setUp()
        self.scratch = Path(tempfile.mkdtemp(prefix="gatehouse-ssh-e2e-"))
        # The target's accounts read here.
        self.scratch.chmod(0o755)
        self.addCleanup(shutil.rmtree, self.scratch, ignore_errors=True)

    def ok(self, *args, **kwargs):
        """Run L{SSHGateway.ssh}; it must exit 0."""
        result = self.gateway.ssh(*args, **kwargs)
        self.assertExit(result, 0)
        return result

    def export_events(self, session_id: str, name: str, cli: bool = True) -> list[dict]:
        return events(self.gateway.export(session_id, cli=cli), name)

    # -- identity ------------------------------------------------------------

    def test_token_login(self) -> None:
        """
        A JWT as the password logs in to the target's account; a forged
        one (another subject's claims under alice's signature) is refused
        with the gateway's banner, never reaches the sshd, and the gateway
        keeps serving.
        """
        after = time.time()
        result = self.ok("web-1", "id -un", token=self.gateway.token("tina"))
        self.assertEqual(result.stdout, f"{self.sshd.admin_account}\n".encode())

        good = self.gateway.token("tina").split(".")
        mallory = self.gateway.token("mallory", ("dba",)).split(".")
        forged = ".".join([good[0], mallory[1], good[2]])
        mark = self.sshd.log_size()
        refused = self.gateway.ssh("web-1", "id -un", token=forged)
        self.assertExit(refused, 255)
        self.assertEqual(refused.stdout, b"")
        self.assertIn(b"gatehouse: authentication failed", refused.stderr)
        self.assertIn(b"Permission denied", refused.stderr)
        self.assertNotIn("Accepted publickey", self.sshd.server_log(mark))

        again = self.ok("web-1", "id -un", token=self.gateway.token("tina"))
        self.assertEqual(again.stdout, result.stdout)
        rows = self.gateway.wait_sessions(after, 2, identity="tina")
        self.assertEqual(
            [(r.target, r.upstream_role, r.protocol) for r in rows],
            [("web-1", self.sshd.admin_account, "ssh")] * 2,
        )
        self.assertEqual(
            query_sessions(self.gateway.index_path(), identity="mallory"), []
        )

    def test_certificate_login(self) -> None:
        """
        C{gatehouse ssh-cert} writes a key and a certificate the gateway's
        CA signed; C{ssh -i} logs in with it alone, and the session's
        recording names the identity from the certificate.
        """
        out = self.scratch / "gatehouse"
        token = self.gateway.token("carol", ("dba",))
        made = self.gateway.ssh_cert(out, token=token, targets=["web-1"])
        self.assertEqual(made.returncode, 0, made.stderr)
        self.assertIn("for: web-1", made.stdout)
        self.assertEqual(stat.S_IMODE(out.stat().st_mode), 0o600)
        self.assertTrue(Path(f"{out}-cert.pub").exists())

        after = time.time()
        # No token anywhere: the askpass password is not a token.
        result = self.gateway.ssh("web-1", "id -un", key=out, token="not-a-token")
        self.assertExit(result, 0)
        self.assertEqual(result.stdout, f"{self.sshd.admin_account}\n".encode())
        row = self.gateway.wait_session(after, identity="carol")
        [authenticated] = self.export_events(row.id, "authenticated")
        self.assertEqual(
            (
                authenticated["subject"],
                authenticated["groups"],
                authenticated["target"],
            ),
            ("carol", ["dba"], "web-1"),
        )
        self.assertEqual(authenticated["_channel"], 0)

    def test_accounts(self) -> None:
        """
        An C{agents} identity logs in as the restricted account, may not
        name the admin one (C{root+web-1}), and cannot write /etc.
        """
        restricted = self.sshd.restricted_account
        if restricted is None:
            self.skipTest("the restricted account needs root (sshd runs as a user)")
        agent = self.gateway.token("agent-7", ("agents",))
        result = self.ok("web-1", "id -un", token=agent)
        self.assertEqual(result.stdout, f"{restricted}\n".encode())
        named = self.ok(f"{restricted}+web-1", "id -un", token=agent)
        self.assertEqual(named.stdout, result.stdout)

        mark = self.sshd.log_size()
        admin = self.sshd.admin_account
        after = time.time()
        refused = self.gateway.ssh(f"{admin}+web-1", "id -un", token=agent)
        self.assertExit(refused, 255)
        self.assertEqual(refused.stdout, b"")
        why = (
            f"account {admin!r} of this target is not for your groups "
            f"(yours: {restricted})"
        )
        self.assertIn(f"gatehouse: target 'web-1': {why}".encode(), refused.stderr)
        self.assertNotIn(f"Accepted publickey for {admin} ", self.sshd.server_log(mark))
        # The identity was good: its refusal is recorded.
        row = self.gateway.wait_session(after, identity="agent-7")
        [event] = self.export_events(row.id, "account-refused", cli=False)
        self.assertEqual((event["asked"], event["reason"]), (admin, why))

        if os.path.exists(FORBIDDEN):
            os.unlink(FORBIDDEN)
        self.addCleanup(lambda: os.path.exists(FORBIDDEN) and os.unlink(FORBIDDEN))
        touched = self.gateway.ssh("web-1", f"touch {FORBIDDEN}", token=agent)
        self.assertExit(touched, 1)
        self.assertIn(b"Permission denied", touched.stderr)
        self.assertFalse(os.path.exists(FORBIDDEN))

    # -- exec ----------------------------------------------------------------

    def test_exec_exact(self) -> None:
        """
        1 MiB of binary stdout arrives byte for byte, stdin too, stderr
        apart from stdout; exit statuses pass through, and a command
        killed by a signal ends ssh with 255 and an C{ssh-exit} event
        naming the signal.
        """
        data = os.urandom(1 << 20) + os.urandom(4096)
        source = self.scratch / "random.bin"
        source.write_bytes(data)
        source.chmod(0o644)
        token = self.gateway.token("exec-1")
        after = time.time()
        big = self.ok("web-1", f"head -c 1048576 {source}", token=token)
        self.assertEqual(len(big.stdout), 1 << 20)
        self.assertEqual(
            hashlib.sha256(big.stdout).hexdigest(),
            hashlib.sha256(data[: 1 << 20]).hexdigest(),
        )
        self.assertEqual(big.stderr, b"")
        fed = self.ok("web-1", "sha256sum", token=token, input=data)
        self.assertEqual(
            fed.stdout.split()[0].decode(), hashlib.sha256(data).hexdigest()
        )

        three = self.gateway.ssh("web-1", "echo out; echo err >&2; exit 3", token=token)
        self.assertExit(three, 3)
        self.assertEqual((three.stdout, three.stderr), (b"out\n", b"err\n"))
        zero = self.ok("web-1", "exit 0", token=token)
        self.assertEqual((zero.stdout, zero.stderr), (b"", b""))

        killed = self.gateway.ssh("web-1", "echo before; kill -TERM $$", token=token)
        self.assertExit(killed, 255)
        self.assertEqual(killed.stdout, b"before\n")
        rows = self.gateway.wait_sessions(after, 5, identity="exec-1")
        self.assertEqual(len(rows), 5)
        # The CLI reads the signalled one; the others are read in-process.
        exits = [self.export_events(r.id, "ssh-exit", cli=r is rows[4]) for r in rows]
        self.assertEqual([e[0].get("status") for e in exits[:4]], [0, 0, 3, 0])
        [[signalled]] = exits[4:]
        self.assertEqual(signalled["signal"], "TERM")
        self.assertNotIn("status", signalled)

        # The big session's recording verifies with the real CLI, and
        # holds the very bytes the client got, on the channel's record
        # channel (SSH channel 0 is record channel 1).
        checked = self.gateway.verify(rows[0].id)
        self.assertEqual(checked.returncode, 0, checked.stdout + checked.stderr)
        report = json.loads(checked.stdout)
        self.assertEqual(
            (report["session_id"], report["findings"], report["complete"]),
            (rows[0].id, [], True),
        )
        sent = b"".join(
            base64.b64decode(r["payload"])
            for r in self.gateway.export(rows[0].id, cli=False)
            if r["type"] == "DATA"
            and r["direction"] == "gateway_to_client"
            and r["channel"] == 1
        )
        self.assertEqual(sent, big.stdout)

    # -- terminal ------------------------------------------------------------

    def test_terminal(self) -> None:
        """
        C{ssh -tt} on a pseudo-terminal: typed commands run, a resize
        reaches the remote terminal, Ctrl-C interrupts, C{exit 7} is the
        client's status; replay and the asciicast export show the session
        with its size and its resize.
        """
        after = time.time()
        client = self.gateway.terminal(
            "web-1", token=self.gateway.token("tty-1"), cols=100, rows=30
        )
        self.addCleanup(client.close)
        client.send("PS1='GH-''PS> '\r")
        client.expect(PROMPT)
        client.send("echo marker-$((6*7))\r")
        client.expect(b"marker-42")
        client.expect(PROMPT)
        client.resize(120, 40)
        client.send("stty size\r")
        client.expect(b"40 120")
        client.expect(PROMPT)
        client.send("sleep 30\r")
        client.expect(b"sleep 30")
        time.sleep(0.3)
        pressed = time.monotonic()
        client.send("\x03")
        client.expect(PROMPT, timeout=10)
        self.assertLess(time.monotonic() - pressed, 5)
        client.send("exit 7\r")
        self.assertEqual(client.wait(), 7)

        row = self.gateway.wait_session(after, identity="tty-1")
        self.assertIn("marker-42", self.gateway.replay(row.id))
        cast = self.scratch / "session.cast"
        self.gateway.export_asciicast(row.id, cast)
        lines = cast.read_text().splitlines()
        header = json.loads(lines[0])
        [pty_req] = [
            e
            for e in self.export_events(row.id, "ssh-request", cli=False)
            if e["request"] == "pty-req"
        ]
        self.assertEqual((pty_req["cols"], pty_req["rows"]), (100, 30))
        self.assertEqual((header["width"], header["height"]), (100, 30))
        resizes = [e for e in map(json.loads, lines[1:]) if e[1] == "r"]
        self.assertEqual([e[2] for e in resizes], ["120x40"])
        self.assertIn(b"marker-42", asciinema_cat(cast))

    # -- the index -----------------------------------------------------------

    def test_sessions_index(self) -> None:
        """
        C{gatehouse sessions} finds SSH sessions by identity, target,
        command text (an exec line) and file path (an SFTP upload and
        download, indexed as write and read).
        """
        token = self.gateway.token("idx-1")
        exec_line = "echo index-probe-42"
        probe = self.ok("web-1", exec_line, token=token)
        self.assertEqual(probe.stdout, b"index-probe-42\n")
        local = self.scratch / "upload.bin"
        local.write_bytes(os.urandom(70000))
        remote = self.scratch / "remote" / "uploaded.bin"
        remote.parent.mkdir()
        back = self.scratch / "downloaded.bin"
        moved = self.gateway.sftp(
            f"put {local} {remote}\nget {remote} {back}\n", token=token
        )
        self.assertExit(moved, 0)
        self.assertEqual(remote.read_bytes(), local.read_bytes())
        self.assertEqual(back.read_bytes(), local.read_bytes())
        exec_row, sftp_row = self.gateway.wait_sessions(0, 2, identity="idx-1")

        def ids(**filters: str) -> list[str]:
            return [s["id"] for s in self.gateway.sessions(**filters)]

        def found(**filters: str) -> list[str]:
            # What the CLI asks the index, asked in-process (no interpreter
            # to start) for the cases that add no CLI option.
            rows = query_sessions(self.gateway.index_path(), limit=None, **filters)
            return [r.id for r in rows]

        self.assertEqual(
            sorted(ids(identity="idx-1")), sorted([exec_row.id, sftp_row.id])
        )
        by_target = ids(target="web-1", protocol="ssh")
        self.assertIn(exec_row.id, by_target)
        self.assertIn(sftp_row.id, by_target)
        self.assertEqual(found(target="no-such-target"), [])
        self.assertEqual(found(command="INDEX-probe-4"), [exec_row.id])
        self.assertEqual(ids(command_text=exec_line, kind="exec"), [exec_row.id])
        self.assertEqual(found(command=exec_line, kind="write"), [])
        self.assertEqual(ids(touched=str(remote), kind="write"), [sftp_row.id])
        self.assertEqual(found(touched=str(remote), kind="read"), [sftp_row.id])
        self.assertEqual(found(touched=str(local)), [])

        sftp_events = self.export_events(sftp_row.id, "sftp", cli=False)
        done = {(e["op"], e["path"]): e for e in sftp_events}
        upload = done[("write", str(remote))]
        self.assertEqual(
            (upload["bytes"], upload["sha256"], upload["status"]),
            (70000, hashlib.sha256(local.read_bytes()).hexdigest(), "ok"),
        )
        self.assertEqual(done[("read", str(remote))]["bytes"], 70000)

    def test_exec_line_indexed_as_sent(self) -> None:
        """
        An exec line with substitutions is found by its text as the client
        sent it (the recording holds it so).
        """
        line = "echo sub-probe-$((40+2)) $(echo x)"
        after = time.time()
        result = self.ok("web-1", line, token=self.gateway.token("idx-2"))
        self.assertEqual(result.stdout, b"sub-probe-42 x\n")
        row = self.gateway.wait_session(after, identity="idx-2")
        rows = query_sessions(self.gateway.index_path(), command=line, kind="exec")
        self.assertEqual([r.id for r in rows], [row.id])
