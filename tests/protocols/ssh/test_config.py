"""
Tests for L{gatehouse.protocols.ssh.config} through the config loader,
and the login name's parts (L{gatehouse.protocols.ssh.server.parse_login}).
"""

from __future__ import annotations

import os
from typing import Any

import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from twisted.trial.unittest import SynchronousTestCase

from gatehouse.config import ConfigError, load_config
from gatehouse.protocols.ssh.config import Account, AccountRefused, SSHTargetOptions
from gatehouse.protocols.ssh.server import parse_login
from tests.test_config import ConfigFiles


def _write_key(path: str) -> str:
    """An OpenSSH ed25519 private key file (mode 600); returns its public line."""
    key = ed25519.Ed25519PrivateKey.generate()
    with open(path, "wb") as f:
        f.write(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.OpenSSH,
                serialization.NoEncryption(),
            )
        )
    os.chmod(path, 0o600)
    return (
        key.public_key()
        .public_bytes(
            serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
        )
        .decode()
    )


class SSHConfigTests(SynchronousTestCase):
    """An SSH listener needs host keys; a target, pinned host keys and a key."""

    def setUp(self) -> None:
        self.files = ConfigFiles(self.mktemp())
        self.dir = self.files.directory
        self.host_key = os.path.join(self.dir, "host_key")
        self.host_line = _write_key(self.host_key)
        self.client_key = os.path.join(self.dir, "upstream_key")
        _write_key(self.client_key)

    def load(
        self,
        listener: dict[str, Any] | None = None,
        target: dict[str, Any] | None = None,
    ) -> Any:
        data = self.files.minimal()
        data["listeners"] = [
            {
                "name": "ssh",
                "protocol": "ssh",
                "port": 2222,
                "options": {"host_keys": [self.host_key], **(listener or {})},
            }
        ]
        options = {
            "host": "127.0.0.1",
            "host_keys": [self.host_line],
            "key": self.client_key,
            "user": "ops",
            "allow_groups": ["dba"],
            **(target or {}),
        }
        data["targets"] = [{"name": "web-1", "protocol": "ssh", "options": options}]
        return load_config(self.files.write("gw.yaml", yaml.safe_dump(data)))

    def problems(self, **kw: Any) -> list[str]:
        with self.assertRaises(ConfigError) as caught:
            self.load(**kw)
        return caught.exception.lines()

    def test_loads(self) -> None:
        config = self.load()
        listener = config.listeners[0].options
        self.assertEqual(listener.host_keys, (self.host_key,))
        self.assertEqual(listener.max_channels, 32)
        target = config.targets[0].options
        self.assertIsInstance(target, SSHTargetOptions)
        self.assertEqual(
            (target.host, target.port, target.user), ("127.0.0.1", 22, "ops")
        )

    def test_target_must_pin_host_key(self) -> None:
        """No trust on first use: a target without pins is a load error."""
        lines = self.problems(target={"host_keys": None})
        self.assertTrue(
            any("pin the target's host key" in line for line in lines), lines
        )

    def test_bad_pin_named(self) -> None:
        lines = self.problems(target={"host_keys": ["ssh-ed25519 notbase64"]})
        self.assertTrue(any("host_keys" in line for line in lines), lines)

    def test_listener_needs_ed25519_host_key(self) -> None:
        rsa_path = os.path.join(self.dir, "not_a_key")
        with open(rsa_path, "w") as f:
            f.write("junk\n")
        os.chmod(rsa_path, 0o600)
        lines = self.problems(listener={"host_keys": [rsa_path]})
        self.assertTrue(any("host_keys" in line for line in lines), lines)

    def test_user_ca_keys_read(self) -> None:
        ca = os.path.join(self.dir, "ca.pub")
        with open(ca, "w") as f:
            f.write("# the gateway's CA\n" + self.host_line + "\n")
        options = self.load(listener={"user_ca_keys": [ca]}).listeners[0].options
        self.assertEqual(options.authorities(), (self.host_line.encode(),))

    def test_user_ca_keys_not_a_key(self) -> None:
        ca = os.path.join(self.dir, "ca.pub")
        with open(ca, "w") as f:
            f.write("hello world\n")
        lines = self.problems(listener={"user_ca_keys": [ca]})
        self.assertTrue(any("user_ca_keys" in line for line in lines), lines)

    def test_rsa_upstream_key_refused(self) -> None:
        """Conch would sign with SHA-1, which OpenSSH refuses: said at load."""
        from cryptography.hazmat.primitives.asymmetric import rsa

        path = os.path.join(self.dir, "rsa_key")
        with open(path, "wb") as f:
            f.write(
                rsa.generate_private_key(65537, 2048).private_bytes(
                    serialization.Encoding.PEM,
                    serialization.PrivateFormat.OpenSSH,
                    serialization.NoEncryption(),
                )
            )
        lines = self.problems(target={"key": path})
        self.assertTrue(
            any("options.key" in line and "RSA" in line for line in lines), lines
        )

    def test_public_key_as_upstream_key_refused(self) -> None:
        path = os.path.join(self.dir, "pub")
        with open(path, "w") as f:
            f.write(self.host_line + "\n")
        lines = self.problems(target={"key": path})
        self.assertTrue(any("public key" in line for line in lines), lines)

    def test_account_name_without_separator(self) -> None:
        lines = self.problems(target={"user": "a+b"})
        self.assertTrue(any("not an account name" in line for line in lines), lines)

    def test_tls_refused_on_ssh_listener(self) -> None:
        data_lines = []
        try:
            data = self.files.minimal()
            data["listeners"] = [
                {
                    "name": "ssh",
                    "protocol": "ssh",
                    "port": 2222,
                    "tls": {"certificate": self.host_key, "key": self.host_key},
                    "options": {"host_keys": [self.host_key]},
                }
            ]
            load_config(self.files.write("gw.yaml", yaml.safe_dump(data)))
        except ConfigError as e:
            data_lines = e.lines()
        self.assertTrue(any("has no tls" in line for line in data_lines), data_lines)


class AccountTests(SynchronousTestCase):
    """Which upstream account an identity gets (first match wins)."""

    options = SSHTargetOptions(
        host="h",
        user="ops",
        accounts=(Account(("agents",), "agent"), Account(("sre",), "deploy")),
    )

    def test_by_group(self) -> None:
        self.assertEqual(self.options.account_for(("agents",), None), "agent")
        self.assertEqual(self.options.account_for(("sre", "agents"), None), "agent")
        self.assertEqual(self.options.account_for(("sre",), None), "deploy")
        self.assertEqual(self.options.account_for(("other",), None), "ops")

    def test_asked(self) -> None:
        self.assertEqual(self.options.account_for(("sre",), "deploy"), "deploy")
        self.assertEqual(self.options.account_for(("other",), "ops"), "ops")
        error = self.assertRaises(
            AccountRefused, self.options.account_for, ("agents",), "deploy"
        )
        self.assertIn("deploy", str(error))

    def test_mapped_may_not_name_default(self) -> None:
        """
        An identity an entry maps (agents to a restricted account) may not
        name the default account instead: the mapping is the enforcement.
        """
        for groups, asked in ((("agents",), "ops"), (("sre",), "ops")):
            error = self.assertRaises(
                AccountRefused, self.options.account_for, groups, asked
            )
            self.assertIn("'ops' of this target is not for your groups", str(error))

    def test_no_default(self) -> None:
        options = SSHTargetOptions(host="h", accounts=(Account(("sre",), "deploy"),))
        self.assertRaises(AccountRefused, options.account_for, ("agents",), None)


class LoginNameTests(SynchronousTestCase):
    """C{TARGET} or C{ACCOUNT+TARGET}."""

    def test_forms(self) -> None:
        self.assertEqual(parse_login(b"web-1"), ("web-1", None))
        self.assertEqual(parse_login(b"deploy+web-1"), ("web-1", "deploy"))
        self.assertEqual(parse_login(b"a+b+web-1"), ("web-1", "a+b"))

    def test_refused(self) -> None:
        for bad in (b"", b"deploy+", b"+web-1", b"\xff\xfe"):
            with self.subTest(bad=bad):
                self.assertRaises((ValueError, UnicodeDecodeError), parse_login, bad)
