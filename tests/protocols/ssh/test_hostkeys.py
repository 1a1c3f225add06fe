"""
Tests for L{gatehouse.protocols.ssh.hostkeys}, with keys and known_hosts
files made by OpenSSH's own ssh-keygen.
"""

from __future__ import annotations

import base64
import os
import subprocess

from twisted.conch.ssh import keys
from twisted.trial.unittest import SynchronousTestCase

from gatehouse.protocols.ssh.hostkeys import (
    HostKeyError,
    HostKeyMismatch,
    PinnedHostKeys,
    fingerprint,
    load_host_keys,
)


def _keygen(path: str, kind: str, bits: str | None = None) -> str:
    args = ["ssh-keygen", "-q", "-t", kind, "-N", "", "-f", path]
    if bits:
        args += ["-b", bits]
    subprocess.run(args, check=True)
    return path


def _blob(pub_path: str) -> bytes:
    with open(pub_path, "rb") as f:
        return base64.b64decode(f.read().split()[1])


class LoadHostKeysTests(SynchronousTestCase):
    """The gateway's own host keys."""

    def setUp(self) -> None:
        self.dir = self.mktemp()
        os.makedirs(self.dir)

    def key(self, name: str, kind: str, bits: str | None = None) -> str:
        return _keygen(os.path.join(self.dir, name), kind, bits)

    def test_ed25519_and_rsa(self) -> None:
        found = load_host_keys(
            [self.key("ed", "ed25519"), self.key("rsa", "rsa", "3072")]
        )
        self.assertEqual(sorted(found), [b"ssh-ed25519", b"ssh-rsa"])
        self.assertFalse(found[b"ssh-ed25519"].isPublic())

    def refused(self, paths: list[str]) -> str:
        return str(self.assertRaises(HostKeyError, load_host_keys, paths))

    def test_refusals(self) -> None:
        """Each way a host key set is unusable, refused with a reason."""
        ed = self.key("ed", "ed25519")
        self.assertIn("ssh-ed25519 host key is required", self.refused([]))
        rsa = self.key("rsa", "rsa", "3072")
        self.assertIn("required", self.refused([rsa]))
        self.assertIn("a second ssh-ed25519", self.refused([ed, ed]))
        self.assertIn("No such file", self.refused([ed + ".missing"]))
        os.chmod(ed + ".pub", 0o600)
        self.assertIn("a public key", self.refused([ed + ".pub"]))
        ecdsa = self.key("ecdsa", "ecdsa")
        self.assertIn("not offered", self.refused([ed, ecdsa]))
        small = self.key("small", "rsa", "1024")
        self.assertIn("2048 bits", self.refused([ed, small]))
        os.chmod(ed, 0o640)
        self.assertIn("chmod 600", self.refused([ed]))
        junk = os.path.join(self.dir, "junk")
        with open(junk, "wb") as f:
            f.write(b"not a key\n")
        os.chmod(junk, 0o600)
        self.assertIn("not a private key", self.refused([junk]))


class PinnedHostKeysTests(SynchronousTestCase):
    """A target's key is pinned: no trust on first use."""

    def setUp(self) -> None:
        self.dir = self.mktemp()
        os.makedirs(self.dir)
        self.good = _keygen(os.path.join(self.dir, "good"), "ed25519") + ".pub"
        self.other = _keygen(os.path.join(self.dir, "other"), "ed25519") + ".pub"
        with open(self.good) as f:
            self.line = f.read().strip()

    def known_hosts(self, host: str, hashed: bool) -> str:
        path = os.path.join(self.dir, "known_hosts")
        with open(path, "w") as f:
            f.write(f"{host} {' '.join(self.line.split()[:2])}\n")
        if hashed:
            subprocess.run(["ssh-keygen", "-q", "-H", "-f", path], check=True)
        return path

    def test_pinned_line(self) -> None:
        pins = PinnedHostKeys("web-1", [self.line])
        key = pins.verify("127.0.0.1", 2222, _blob(self.good))
        self.assertEqual(key, keys.Key.fromString(_blob(self.good)))
        error = self.assertRaises(
            HostKeyMismatch, pins.verify, "127.0.0.1", 2222, _blob(self.other)
        )
        self.assertEqual(error.target, "web-1")
        other = keys.Key.fromString(_blob(self.other))
        self.assertEqual(error.seen, fingerprint(other))
        self.assertIn("web-1", str(error))
        self.assertIn(fingerprint(other), str(error))

    def test_fingerprint_as_openssh(self) -> None:
        """The fingerprint is the one ssh-keygen -l prints."""
        out = subprocess.run(
            ["ssh-keygen", "-l", "-E", "sha256", "-f", self.good],
            capture_output=True,
            check=True,
        ).stdout.decode()
        key = keys.Key.fromString(_blob(self.good))
        self.assertEqual(out.split()[1], fingerprint(key))

    def test_known_hosts(self) -> None:
        """Plain and hashed known_hosts entries, with a port, both pin."""
        for hashed in (False, True):
            path = self.known_hosts("[127.0.0.1]:2222", hashed)
            pins = PinnedHostKeys("web-1", known_hosts=path)
            pins.verify("127.0.0.1", 2222, _blob(self.good))
            error = self.assertRaises(
                HostKeyMismatch, pins.verify, "127.0.0.1", 2222, _blob(self.other)
            )
            self.assertIn("another key", str(error))
            error = self.assertRaises(
                HostKeyMismatch, pins.verify, "127.0.0.2", 2222, _blob(self.good)
            )
            self.assertIn("no key for [127.0.0.2]:2222", str(error))

    def test_nothing_pinned(self) -> None:
        """No trust on first use: a target must pin something."""
        error = self.assertRaises(HostKeyError, PinnedHostKeys, "web-1")
        self.assertIn("never trusts a key on first use", str(error))
        self.assertRaises(HostKeyError, PinnedHostKeys, "web-1", ["ssh-ed25519 !!"])
        self.assertRaises(
            HostKeyError, PinnedHostKeys, "web-1", known_hosts="/nonexistent"
        )

    def test_garbage_blob(self) -> None:
        pins = PinnedHostKeys("web-1", [self.line])
        error = self.assertRaises(
            HostKeyMismatch, pins.verify, "127.0.0.1", 22, b"\x00\x00\x00\x03abc"
        )
        self.assertEqual(error.seen, "(unreadable)")
