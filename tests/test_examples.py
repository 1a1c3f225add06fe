"""
Tests for the configuration files in C{examples/}: every one must load.

The examples name absolute paths on a real gateway (C{/etc/gatehouse/...},
C{/var/lib/gatehouse/...}, C{/run/postgresql}).  Each test copies an
example with those directories moved into a temporary directory, creates
the files it names there (certificates, root public key, JWKS, password
files, ...), and loads it with L{load_config}, so that a typo or a key the
loader does not know fails the suite.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from jwt.algorithms import ECAlgorithm
from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import SynchronousTestCase

from gatehouse._pki import CA, make_ca
from gatehouse.config import ConfigError, GatehouseConfig, load_config
from gatehouse.recording.keys import generate_root_key, save_root_key
from gatehouse.service import makeService

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"

#: The directories examples may name; each moves into the temporary one.
ROOTS = ("/etc/gatehouse", "/var/lib/gatehouse", "/run/postgresql")

_ROOT = re.compile(
    r"(?<![\w./-])(" + "|".join(re.escape(r) for r in ROOTS) + r")(?![\w.-])"
)


def example_files() -> list[Path]:
    """
    Every YAML file under C{examples/}, sorted.
    """
    return sorted(
        p for p in EXAMPLES.rglob("*") if p.suffix in (".yaml", ".yml") and p.is_file()
    )


class ExampleSandbox:
    """
    A temporary directory standing in for a gateway's file system.

    @ivar base: The temporary directory; C{/etc/gatehouse} becomes
        C{base/etc/gatehouse}, and so on.
    """

    def __init__(self, base: str) -> None:
        self.base = Path(base).resolve()
        for root in ROOTS:
            self.moved(root).mkdir(parents=True)
        self._ca: CA | None = None
        self._creators: dict[str, Callable[[Path], None]] = {
            "ca_file": self._ca_certificate,
            "admin_ca_file": self._ca_certificate,
            "jwks_file": self._jwks,
            "hs256_secret_file": self._secret,
            "password_file": self._secret,
            "root_public_keys": self._root_public_key,
            "signing_keys": self._directory,
            "socket_dir": self._directory,
            "index": lambda path: self._directory(path.parent),
            # SSH: the listener's host keys, the gateway's key for its
            # targets and its user CA's key (private, mode 0600), the user
            # CAs it trusts, a target's known_hosts.
            "host_keys": self._ssh_private_key,
            "key": self._ssh_private_key,
            "user_ca_keys": self._ssh_public_key,
            "known_hosts": self._known_hosts,
            # HTTP and Kubernetes targets: the service's token, an injected
            # header's value (client certificates: see _create).
            "token_file": self._secret,
            "file": self._secret,
            # The loader creates the recording directory itself.
            "directory": lambda path: None,
        }

    def moved(self, root: str) -> Path:
        """
        Where the directory C{root} (one of L{ROOTS}) lives in the sandbox.
        """
        return self.base / root.lstrip("/")

    def install(self, example: Path) -> str:
        """
        Copy C{example} into the sandbox with its paths moved, create every
        file it names, and return the copy's path.

        @raise ValueError: if the example names an absolute path outside
            L{ROOTS}, or a path under a key this sandbox cannot fill in.
        """
        text = _ROOT.sub(lambda m: str(self.moved(m.group(1))), example.read_text())
        copy = self.base / example.name
        copy.write_text(text)
        data = yaml.safe_load(text)
        # Policy paths are globs on the targets' files, not the gateway's.
        data.pop("policy", None)
        self._create(data, "")
        return str(copy)

    # Walking the configuration

    def _create(self, value: Any, where: str) -> None:
        """
        Create the files named anywhere in C{value}, found at key path
        C{where}.
        """
        if isinstance(value, dict):
            if isinstance(value.get("certificate"), str):
                self._certificate(value["certificate"], value.get("key"), where)
            if isinstance(value.get("client_certificate"), str):
                self._client_certificate(
                    value["client_certificate"], value.get("client_key"), where
                )
            for key, item in value.items():
                if key in ("client_certificate", "client_key"):
                    continue
                if key in ("certificate", "key") and "certificate" in value:
                    continue
                self._create_at(str(key), item, f"{where}.{key}".lstrip("."))
        elif isinstance(value, list):
            for index, item in enumerate(value):
                self._create(item, f"{where}[{index}]")

    def _create_at(self, key: str, value: Any, where: str) -> None:
        """
        Create what C{key} names if C{value} is a path (or a list of
        paths), else look inside C{value}.
        """
        paths = value if isinstance(value, list) else [value]
        if not all(isinstance(p, str) and p.startswith("/") for p in paths):
            self._create(value, where)
            return
        for path in paths:
            if not Path(path).is_relative_to(self.base):
                raise ValueError(f"{where}: {path} is outside {', '.join(ROOTS)}")
            if key not in self._creators:
                raise ValueError(f"{where}: no file to create for key {key!r}")
            self._creators[key](Path(path))

    # Files

    def ca(self) -> CA:
        """
        The sandbox's CA, created on first use.
        """
        if self._ca is None:
            self._ca = make_ca(self.base / "test-ca", "examples test CA")
        return self._ca

    def _certificate(self, certificate: str, key: Any, where: str) -> None:
        """
        Issue a server certificate from L{ca} into C{certificate} and C{key}.
        """
        if not isinstance(key, str):
            raise ValueError(f"{where}: certificate without key")
        cert_file, key_file = self.ca().issue(
            "gw-1.example.com", directory=self.base / "issued"
        )
        for source, target in ((cert_file, certificate), (key_file, key)):
            Path(target).parent.mkdir(parents=True, exist_ok=True)
            os.replace(source, target)

    def _client_certificate(self, certificate: str, key: Any, where: str) -> None:
        """
        Issue a client certificate from L{ca} into C{certificate} and C{key}.
        """
        if not isinstance(key, str):
            raise ValueError(f"{where}: client_certificate without client_key")
        cert_file, key_file = self.ca().issue_client(
            "gatehouse-gw-1", directory=self.base / "issued"
        )
        for source, target in ((cert_file, certificate), (key_file, key)):
            Path(target).parent.mkdir(parents=True, exist_ok=True)
            os.replace(source, target)

    def _ca_certificate(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(self.ca().cert_path.read_bytes())

    def _jwks(self, path: Path) -> None:
        public = ec.generate_private_key(ec.SECP256R1()).public_key()
        jwk = json.loads(ECAlgorithm.to_jwk(public))
        jwk.update(kid="test-1", use="sig", alg="ES256")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"keys": [jwk]}))

    def _secret(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("x" * 40 + "\n")

    def _root_public_key(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        private = self.base / "offline" / (path.name + ".key")
        private.parent.mkdir(exist_ok=True)
        save_root_key(generate_root_key(), str(private), str(path))

    def _directory(self, path: Path) -> None:
        path.mkdir(parents=True, exist_ok=True)

    def _ssh_private_key(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        key = ed25519.Ed25519PrivateKey.generate()
        path.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.OpenSSH,
                serialization.NoEncryption(),
            )
        )
        path.chmod(0o600)

    def _ssh_public_line(self) -> str:
        public = ed25519.Ed25519PrivateKey.generate().public_key()
        return public.public_bytes(
            serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
        ).decode("ascii")

    def _ssh_public_key(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(self._ssh_public_line() + " example-ca\n")

    def _known_hosts(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"example.internal {self._ssh_public_line()}\n")


class ExamplesTests(SynchronousTestCase):
    """
    Every example configuration loads, and says what it claims to show.
    """

    def load(self, name: str) -> GatehouseConfig:
        """
        Load C{examples/NAME} in a fresh sandbox.
        """
        sandbox = ExampleSandbox(self.mktemp())
        path = sandbox.install(EXAMPLES / name)
        try:
            return load_config(path)
        except ConfigError as e:
            self.fail(f"examples/{name} does not load:\n{e}")

    def test_examplesExist(self) -> None:
        """
        The examples this suite knows about are there (so the other tests
        do not pass vacuously).
        """
        names = {p.name for p in example_files()}
        self.assertTrue({"gatehouse.yaml", "postgres.yaml", "ssh.yaml"} <= names, names)

    def test_everyExampleLoads(self) -> None:
        """
        Every YAML file under C{examples/} loads without a problem, and the
        gateway's service can be built from it.
        """
        failures = []
        for example in example_files():
            name = str(example.relative_to(EXAMPLES))
            sandbox = ExampleSandbox(self.mktemp())
            try:
                config = load_config(sandbox.install(example))
                makeService(config, MemoryReactorClock())
            except (ConfigError, ValueError, OSError) as e:
                failures.append(f"examples/{name}:\n{e}")
        if failures:
            self.fail("\n".join(failures))

    def test_gatehouseExample(self) -> None:
        """
        C{gatehouse.yaml} is a whole deployment: one PostgreSQL listener
        with TLS, two targets, secrets only in files or the environment.
        """
        config = self.load("gatehouse.yaml")
        [listener] = config.listeners
        self.assertEqual(listener.protocol, "postgres")
        self.assertIsNotNone(listener.tls)
        self.assertFalse(listener.options.allow_cleartext)
        self.assertEqual(len(config.targets), 2)
        for target in config.targets:
            options = target.options
            self.assertTrue(options.password_file or options.password_env)
            self.assertEqual(options.tls.mode, "verify-full")
        self.assertTrue(config.recording.directory.endswith("/recordings"))

    def test_postgresExample(self) -> None:
        """
        C{postgres.yaml} shows every TLS mode, a Unix socket target, both
        ways to give a password, and a TLS listener.
        """
        config = self.load("postgres.yaml")
        targets = [t.options for t in config.targets]
        self.assertEqual(
            {t.tls.mode for t in targets}, {"verify-full", "require", "disable"}
        )
        self.assertTrue(any(t.socket_dir for t in targets))
        self.assertTrue(any(t.password_file for t in targets))
        self.assertTrue(any(t.password_env for t in targets))
        self.assertTrue(any(t.tls.server_name for t in targets))
        self.assertIn("*", {g for t in config.targets for g in t.allow_groups})
        self.assertTrue(any(listener.tls for listener in config.listeners))

    def test_sshExample(self) -> None:
        """
        C{ssh.yaml} shows an SSH listener trusting a user CA, a target with
        one account and one with accounts per group, the gateway's user CA
        and a policy with exec, SFTP and forward rules.
        """
        config = self.load("ssh.yaml")
        [listener] = config.listeners
        self.assertEqual(listener.protocol, "ssh")
        self.assertTrue(listener.options.host_keys)
        self.assertTrue(listener.options.user_ca_keys)
        web, db = config.targets
        self.assertEqual((web.protocol, web.options.user), ("ssh", "ops"))
        self.assertTrue(web.options.host_keys)
        self.assertIsNotNone(db.options.known_hosts)
        self.assertEqual(
            [(a.groups, a.user) for a in db.options.accounts],
            [(("agents",), "agent"), (("sre",), "deploy"), (("sre",), "ops")],
        )
        self.assertIsNotNone(config.ssh_user_ca)
        self.assertIsNotNone(config.admin)
        kinds = {
            value
            for rule in config.policy.rules
            for condition in rule.conditions
            if condition.key == "kind"
            for value in condition.values
        } | {k for rule in config.policy.rules for k in rule.kinds}
        self.assertTrue({"shell", "write", "remove", "forward"} <= kinds, kinds)

    def test_kubernetesExample(self) -> None:
        """
        C{kubernetes.yaml} shows a Kubernetes listener and target reached
        with a client certificate and impersonation, a plain HTTP target
        with an injected header, and rules of both.
        """
        config = self.load("kubernetes.yaml")
        kube, http = config.listeners
        self.assertEqual((kube.protocol, http.protocol), ("kubernetes", "http"))
        self.assertIsNotNone(kube.tls)
        prod, billing = config.targets
        self.assertEqual(prod.options.impersonate_group_prefix, "gatehouse:")
        self.assertIsNotNone(prod.options.client_certificate)
        self.assertEqual([h.name for h in billing.options.headers], ["X-Api-Key"])
        self.assertEqual(
            [r.name for r in config.policy.rules][:3],
            ["no-namespace-deletes", "no-kube-system-secrets", "agents-read-only"],
        )

    def test_typoFails(self) -> None:
        """
        The sandbox does not hide mistakes: a misspelt key in an example
        makes it fail to load.
        """
        sandbox = ExampleSandbox(self.mktemp())
        path = Path(sandbox.install(EXAMPLES / "gatehouse.yaml"))
        path.write_text(path.read_text().replace("seal_interval:", "seal_intervall:"))
        error = self.assertRaises(ConfigError, load_config, str(path))
        self.assertIn(
            "recording.seal_intervall: unknown key (did you mean seal_interval?)",
            str(error),
        )
