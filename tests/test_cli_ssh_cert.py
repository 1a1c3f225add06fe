"""
Tests for C{gatehouse ssh-cert} (L{gatehouse.protocols.ssh.cli_cert}).

The command is a synchronous HTTP client, so it runs in a thread while the
reactor serves a real admin API with a user CA (see
L{tests.admin.test_ssh_cert.CertificateAPITestCase}); what it writes is
read back by OpenSSH's own C{ssh-keygen} and by L{verify_certificate}.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import socket
import stat
import subprocess
import sys
from typing import Any

from cryptography.hazmat.primitives import serialization
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import SynchronousTestCase

from gatehouse import cli
from gatehouse.protocols.ssh.certificates import CertificateRefused, UserCA
from gatehouse.protocols.ssh.issuer import fingerprint
from tests.admin.test_api import NOW
from tests.admin.test_ssh_cert import CertificateAPITestCase
from tests.fixtures.postgres import shared_cluster
from tests.protocols.postgres.harness import Gateway


def _run(argv: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=30)


class SSHCertCommandTests(CertificateAPITestCase):
    """
    C{gatehouse ssh-cert} against the admin API, as alice (dev: web-1 and
    web-2) through C{GATEHOUSE_TOKEN} unless a test says otherwise.
    """

    @inlineCallbacks
    def setUp(self) -> Any:
        yield super().setUp()
        self.environ = {
            name: value
            for name, value in os.environ.items()
            if not name.startswith("GATEHOUSE_")
        }
        self.environ["GATEHOUSE_TOKEN"] = self.gateway.tokens["alice"]
        self.patch(os, "environ", self.environ)
        self.stdout = io.StringIO()
        self.stderr = io.StringIO()
        self.patch(sys, "stdout", self.stdout)
        self.patch(sys, "stderr", self.stderr)
        self.directory = os.path.abspath(self.mktemp())
        os.makedirs(self.directory)
        self.out = os.path.join(self.directory, "id_gatehouse")

    def ssh_cert(self, *argv: str) -> Deferred[int]:
        """Run C{gatehouse ssh-cert --gateway URL --out OUT ARGV...} in a thread."""
        return deferToThread(
            cli.main, ["ssh-cert", "--gateway", self.url, "--out", self.out, *argv]
        )

    def read(self, suffix: str = "") -> str:
        with open(self.out + suffix) as f:
            return f.read()

    @inlineCallbacks
    def test_writes_key_and_certificate(self) -> Any:
        """
        The private key (mode 0600, OpenSSH format), its public line and the
        certificate for it, where C{ssh -i OUT} finds it; the certificate is
        for the targets asked for, for the time asked for, and accepted by
        L{verify_certificate} for a principal it names only.  The ssh line
        and the expiry are printed.
        """
        status = yield self.ssh_cert(
            "--target", "web-2", "--lifetime", "30m", "--ssh-port", "2222"
        )
        out, err = self.stdout.getvalue(), self.stderr.getvalue()
        self.assertEqual((status, err), (0, ""))
        self.assertEqual(stat.S_IMODE(os.stat(self.out).st_mode), 0o600)
        key = serialization.load_ssh_private_key(self.read().encode(), password=None)
        public = key.public_key().public_bytes(
            serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
        )
        self.assertEqual(self.read(".pub").split()[:2], public.decode().split())
        line = self.read("-cert.pub").strip()
        answer = {"certificate": line}
        cert, identity = self.verify(answer, "web-2")
        self.assertEqual(
            cert.public_key().public_bytes(
                serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
            ),
            public,
        )
        self.assertEqual(cert.valid_before, int(NOW + 1800))
        self.assertEqual(identity.subject, "alice")
        e = self.assertRaises(CertificateRefused, self.verify, answer, "web-1")
        self.assertEqual(e.kind, "wrong-principal")
        self.assertIn("certificate valid until 2026-09-21", out)
        self.assertIn("for: web-2", out)
        self.assertIn(f"ssh -i {self.out} -p 2222 web-2@127.0.0.1", out)
        [logged] = self.events.named("ssh.certificate")
        self.assertEqual(logged["fingerprint"], fingerprint(key.public_key()))

    @inlineCallbacks
    def test_ssh_keygen_reads_it(self) -> Any:
        """
        OpenSSH's C{ssh-keygen} reads the certificate (a user certificate of
        this CA, the identity in its key id, the principals) and the private
        key (the public key it derives is the one certified).
        """
        if shutil.which("ssh-keygen") is None:
            self.skipTest("ssh-keygen (OpenSSH) is not installed")
        self.assertEqual((yield self.ssh_cert()), 0, self.stderr.getvalue())
        shown = yield deferToThread(
            _run, ["ssh-keygen", "-L", "-f", self.out + "-cert.pub"]
        )
        self.assertEqual(shown.returncode, 0, shown.stderr)
        lines = [line.strip() for line in shown.stdout.splitlines()]
        self.assertIn("Type: ssh-ed25519-cert-v01@openssh.com user certificate", lines)
        ca_print = fingerprint(self.ca.private_key.public_key())
        self.assertIn(f"Signing CA: ED25519 {ca_print} (using ssh-ed25519)", lines)
        [key_id] = [line for line in lines if line.startswith("Key ID: ")]
        fields = json.loads(key_id[len("Key ID: ") :].strip('"'))
        self.assertEqual(
            (fields["sub"], fields["name"], fields["groups"]),
            ("alice", "Alice", ["dev"]),
        )
        at = lines.index("Principals:")
        self.assertEqual(lines[at + 1 : at + 3], ["web-1", "web-2"])
        self.assertEqual(lines[at + 3], "Critical Options: (none)")
        derived = yield deferToThread(_run, ["ssh-keygen", "-y", "-f", self.out])
        self.assertEqual(derived.returncode, 0, derived.stderr)
        self.assertEqual(derived.stdout.split()[:2], self.read(".pub").split()[:2])

    @inlineCallbacks
    def test_token_file(self) -> Any:
        """C{--token-file} names the token (carol's: vault and web-1)."""
        del self.environ["GATEHOUSE_TOKEN"]
        path = os.path.join(self.directory, "token")
        with open(path, "w") as f:
            f.write(self.gateway.tokens["carol"] + "\n")
        self.assertEqual((yield self.ssh_cert("--token-file", path)), 0)
        self.assertIn("for: vault, web-1", self.stdout.getvalue())
        self.assertEqual(
            self.verify({"certificate": self.read("-cert.pub")}, "vault")[1].subject,
            "carol",
        )

    @inlineCallbacks
    def test_replaces_old_files(self) -> Any:
        """A second run writes a new key over the old one, still mode 0600."""
        for name in ("", ".pub", "-cert.pub"):
            with open(self.out + name, "w") as f:
                f.write("old\n")
        os.chmod(self.out, 0o644)
        self.assertEqual((yield self.ssh_cert()), 0)
        self.assertEqual(stat.S_IMODE(os.stat(self.out).st_mode), 0o600)
        for name in ("", ".pub", "-cert.pub"):
            self.assertNotEqual(self.read(name), "old\n")
        self.assertEqual(
            sorted(os.listdir(self.directory)),
            ["id_gatehouse", "id_gatehouse-cert.pub", "id_gatehouse.pub"],
        )

    def assertFailed(self, status: int, *words: str) -> None:
        """Exit status 1, one line on stderr with C{words}, nothing written."""
        err = self.stderr.getvalue()
        self.assertEqual(status, 1, err)
        self.assertEqual(len(err.splitlines()), 1, err)
        self.assertTrue(err.startswith("gatehouse: ssh-cert: "), err)
        for word in words:
            self.assertIn(word, err)
        self.assertEqual(self.stdout.getvalue(), "")
        self.assertEqual(os.listdir(self.directory), [])

    @inlineCallbacks
    def test_refused_target(self) -> Any:
        """A target alice may not reach: the gateway's message, exit 1."""
        status = yield self.ssh_cert("--target", "web-1", "--target", "vault")
        self.assertFailed(status, "no certificate for 'vault'")

    @inlineCallbacks
    def test_no_token(self) -> Any:
        del self.environ["GATEHOUSE_TOKEN"]
        self.assertFailed((yield self.ssh_cert()), "no token")

    @inlineCallbacks
    def test_bad_token(self) -> Any:
        self.environ["GATEHOUSE_TOKEN"] = "not.a.jwt"
        self.assertFailed((yield self.ssh_cert()), "authentication failed")

    @inlineCallbacks
    def test_bad_lifetime(self) -> Any:
        self.assertFailed((yield self.ssh_cert("--lifetime", "soon")), "--lifetime")
        self.stderr.truncate(0)
        self.stderr.seek(0)
        self.assertFailed((yield self.ssh_cert("--lifetime", "0s")), "--lifetime")

    @inlineCallbacks
    def test_gateway_down(self) -> Any:
        """Nothing listens at the URL: exit 1, saying so."""
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        self.assertFailed((yield self.ssh_cert()), "connection refused")

    @inlineCallbacks
    def test_default_out(self) -> Any:
        """
        Without C{--out}: C{~/.ssh/gatehouse}, C{~/.ssh} made (mode 0700)
        when the account has none.
        """
        home = os.path.join(self.directory, "home")
        os.makedirs(home)
        self.environ["HOME"] = home
        status = yield deferToThread(cli.main, ["ssh-cert", "--gateway", self.url])
        self.assertEqual(status, 0, self.stderr.getvalue())
        self.assertEqual(
            stat.S_IMODE(os.stat(os.path.join(home, ".ssh")).st_mode), 0o700
        )
        self.assertEqual(
            sorted(os.listdir(os.path.join(home, ".ssh"))),
            ["gatehouse", "gatehouse-cert.pub", "gatehouse.pub"],
        )
        self.assertIn(
            "log in with: ssh -i ~/.ssh/gatehouse web-1@127.0.0.1",
            self.stdout.getvalue(),
        )

    @inlineCallbacks
    def test_no_directory(self) -> Any:
        self.out = os.path.join(self.directory, "missing", "id")
        self.assertFailed((yield self.ssh_cert()), "is not a directory")


class DaemonTests(SynchronousTestCase):
    """
    The real daemon (C{twistd -n gatehouse}, in front of the shared
    PostgreSQL; this branch has no SSH listener) with C{ssh_user_ca}: it
    creates the CA key at first start and logs its public line, serves the
    endpoint to C{gatehouse ssh-cert}, and refuses to start with a key
    others may read.
    """

    def gateway(self, key: str | None = None) -> Gateway:
        directory = os.path.abspath(self.mktemp())
        os.makedirs(directory)
        self.key = key or os.path.join(directory, "ssh_user_ca")
        gateway = Gateway(
            directory,
            shared_cluster(),
            admin=True,
            extra_config={"ssh_user_ca": {"key": self.key}},
        )
        self.addCleanup(gateway.stop)
        return gateway

    def test_first_start(self) -> None:
        gateway = self.gateway()
        gateway.start()
        self.assertEqual(stat.S_IMODE(os.stat(self.key).st_mode), 0o600)
        with open(self.key + ".pub") as f:
            public = " ".join(f.read().split()[:2])
        self.assertEqual(UserCA.from_file(self.key).public_line().decode(), public)
        self.assertIn(
            f'ssh.user-ca path={self.key} state=created public_key="{public}"',
            gateway.log(),
        )
        out = os.path.join(gateway.directory, "id")
        command = [sys.executable, "-m", "gatehouse", "ssh-cert", "--gateway"]
        result = subprocess.run(
            [*command, gateway.admin_url, "--out", out],
            capture_output=True,
            text=True,
            timeout=60,
            env={**os.environ, "GATEHOUSE_TOKEN": gateway.token()},
        )
        # The daemon's targets are PostgreSQL ones: nothing to certify.
        self.assertEqual(
            (result.returncode, result.stdout, result.stderr),
            (1, "", "gatehouse: ssh-cert: this identity may reach no SSH target\n"),
        )
        self.assertFalse(os.path.exists(out))
        result = subprocess.run(
            [*command, gateway.admin_url, "--out", out],
            capture_output=True,
            text=True,
            timeout=60,
            env={**os.environ, "GATEHOUSE_TOKEN": "not.a.jwt"},
        )
        self.assertEqual(
            (result.returncode, result.stderr),
            (1, "gatehouse: ssh-cert: authentication failed\n"),
        )
        gateway.stop()
        # Started again, the same CA is loaded, not replaced.
        gateway.start()
        self.assertIn(
            f'ssh.user-ca path={self.key} state=loaded public_key="{public}"',
            gateway.log(),
        )

    def test_loose_key(self) -> None:
        directory = os.path.abspath(self.mktemp())
        os.makedirs(directory)
        key = os.path.join(directory, "ca")
        UserCA.generate().save(key)
        os.chmod(key, 0o644)
        gateway = self.gateway(key)
        error = self.assertRaises(RuntimeError, gateway.start)
        self.assertIn(
            f"{gateway.config_path}: ssh_user_ca.key: {key}: the SSH user CA key "
            "is readable by others (mode 0644; chmod 600 it)\n",
            str(error),
        )
        self.assertNotIn("Traceback", str(error))
