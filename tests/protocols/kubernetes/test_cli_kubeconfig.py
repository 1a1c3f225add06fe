"""
Tests for C{gatehouse kubeconfig} and C{gatehouse token}
(L{gatehouse.protocols.kubernetes.cli_kubeconfig}): in process for the
arguments and errors, and with the real kubectl (1.27 and 1.33), which reads
the kubeconfig, runs the installed C{gatehouse} script as its credential
plugin and sends the token to a TLS server of this test.
"""

from __future__ import annotations

import base64
import io
import json
import os
import stat
import sys
import time
from pathlib import Path
from typing import Any

import jwt
import yaml
from twisted.internet import reactor, ssl
from twisted.internet.defer import inlineCallbacks
from twisted.internet.utils import getProcessOutputAndValue
from twisted.trial.unittest import SynchronousTestCase, TestCase
from twisted.web import resource, server

from gatehouse import cli
from gatehouse.protocols.kubernetes.cli_kubeconfig import exec_credential
from tests.fixtures.tls import make_ca
from tests.protocols.kubernetes.kubectl_peer import kubectl

#: The gatehouse script installed beside this Python (the venv's).
GATEHOUSE = str(Path(sys.executable).parent / "gatehouse")


def token(expires_in: float = 600, **claims: Any) -> str:
    """A JWT (signed with a key nobody checks here)."""
    if expires_in is not None:
        claims.setdefault("exp", int(time.time() + expires_in))
    return jwt.encode({"sub": "alice", **claims}, "k" * 32, algorithm="HS256")


class CommandTests(SynchronousTestCase):
    """The commands in process: what they write, what they refuse."""

    def setUp(self) -> None:
        self.environ = {
            name: value
            for name, value in os.environ.items()
            if not name.startswith("GATEHOUSE_")
        }
        self.patch(os, "environ", self.environ)
        self.stdout = io.StringIO()
        self.stderr = io.StringIO()
        self.patch(sys, "stdout", self.stdout)
        self.patch(sys, "stderr", self.stderr)
        self.directory = Path(self.mktemp())
        self.directory.mkdir()

    def run_cli(self, *argv: str) -> int:
        return cli.main(list(argv))

    def assertFailed(self, status: int, command: str, *words: str) -> None:
        err = self.stderr.getvalue()
        self.assertEqual(status, 1, err)
        self.assertEqual(len(err.splitlines()), 1, err)
        self.assertTrue(err.startswith(f"gatehouse: {command}: "), err)
        for word in words:
            self.assertIn(word, err)
        self.assertEqual(self.stdout.getvalue(), "")

    def test_exec_plugin(self) -> None:
        """
        The default user is the exec plugin, its command an absolute path
        (here: gatehouse on PATH, or the bare name), printed as YAML.
        """
        ca = make_ca(self.directory / "ca")
        status = self.run_cli(
            "kubeconfig",
            "--target",
            "prod",
            "--server",
            "https://gw.example.com:6443/",
            "--ca",
            str(ca.cert_path),
            "--token-file",
            "relative/token",
            "--namespace",
            "shop",
        )
        self.assertEqual((status, self.stderr.getvalue()), (0, ""))
        config = yaml.safe_load(self.stdout.getvalue())
        (cluster,) = config["clusters"]
        self.assertEqual(
            cluster["cluster"]["server"], "https://gw.example.com:6443/targets/prod"
        )
        self.assertEqual(
            base64.b64decode(cluster["cluster"]["certificate-authority-data"]),
            ca.cert_path.read_bytes(),
        )
        (user,) = config["users"]
        plugin = user["user"]["exec"]
        self.assertEqual(
            {k: v for k, v in plugin.items() if k not in ("command", "installHint")},
            {
                "apiVersion": "client.authentication.k8s.io/v1",
                "args": ["token", "--file", os.path.abspath("relative/token")],
                "interactiveMode": "Never",
                "provideClusterInfo": False,
            },
        )
        self.assertTrue(
            plugin["command"] == "gatehouse" or os.path.isabs(plugin["command"])
        )
        (context,) = config["contexts"]
        self.assertEqual(
            context,
            {
                "name": "gatehouse-prod",
                "context": {
                    "cluster": "gatehouse-prod",
                    "user": "gatehouse-prod",
                    "namespace": "shop",
                },
            },
        )
        self.assertEqual(config["current-context"], "gatehouse-prod")

    def test_static_token_file_0600(self) -> None:
        """
        C{--token} writes the token itself; C{--output} replaces a file
        (even one readable by others) with a file of mode 0600.
        """
        out = self.directory / "config"
        out.write_text("old")
        out.chmod(0o644)
        status = self.run_cli(
            "kubeconfig",
            "-t",
            "dev-1",
            "--server",
            "https://127.0.0.1:6443",
            "--token",
            "abc.def.ghi",
            "--output",
            str(out),
            "--context",
            "mine",
        )
        self.assertEqual((status, self.stderr.getvalue()), (0, ""))
        self.assertEqual(stat.S_IMODE(out.stat().st_mode), 0o600)
        config = yaml.safe_load(out.read_text())
        self.assertEqual(config["users"][0]["user"], {"token": "abc.def.ghi"})
        self.assertNotIn("certificate-authority-data", config["clusters"][0]["cluster"])
        self.assertEqual(config["current-context"], "mine")
        self.assertEqual(sorted(os.listdir(self.directory)), ["config"])
        self.assertIn(f"wrote {out}", self.stdout.getvalue())

    def test_kubeconfig_refusals(self) -> None:
        not_pem = self.directory / "not.pem"
        not_pem.write_text("hello")
        base = ["kubeconfig", "--target", "prod", "--server", "https://gw:6443"]
        for argv, words in [
            (
                ["kubeconfig", "--target", "prod", "--server", "http://gw:6443"],
                "https://",
            ),
            (["kubeconfig", "--target", "..", "--server", "https://gw"], "target name"),
            (
                ["kubeconfig", "--target", "a/b", "--server", "https://gw"],
                "target name",
            ),
            ([*base[:-1], "https://gw?x=1"], "host, port and path only"),
            ([*base[:-1], "https://u:p@gw"], "host, port and path only"),
            ([*base, "--namespace", "Shop"], "namespace"),
            ([*base, "--ca", str(not_pem)], "no PEM certificates"),
            ([*base, "--ca", str(self.directory / "missing")], "No such file"),
            ([*base, "--token-env", "A B"], "not a variable name"),
            ([*base, "--token", "two words"], "not a token"),
        ]:
            with self.subTest(argv=argv):
                self.stdout.truncate(0)
                self.stderr.seek(0)
                self.stderr.truncate(0)
                self.assertFailed(self.run_cli(*argv), "kubeconfig", words)
        self.assertEqual(
            self.run_cli(*base, "--token", "a", "--token-file", "f"), 2
        )  # exclusive

    def test_token(self) -> None:
        """An ExecCredential with the token and its exp in RFC 3339."""
        value = token(exp=1893456000)  # 2030-01-01T00:00:00Z
        path = self.directory / "token"
        path.write_text(value + "\n")
        for argv, environ in [
            (["--file", str(path)], {}),
            (["--env", "MY_TOKEN"], {"MY_TOKEN": value}),
            ([], {"GATEHOUSE_TOKEN": value}),
            ([], {"GATEHOUSE_TOKEN_FILE": str(path)}),
        ]:
            with self.subTest(argv=argv, environ=environ):
                self.stdout.seek(0)
                self.stdout.truncate(0)
                self.environ.update(environ)
                self.assertEqual(
                    self.run_cli("token", *argv), 0, self.stderr.getvalue()
                )
                for name in environ:
                    del self.environ[name]
                self.assertEqual(
                    json.loads(self.stdout.getvalue()),
                    {
                        "apiVersion": "client.authentication.k8s.io/v1",
                        "kind": "ExecCredential",
                        "status": {
                            "token": value,
                            "expirationTimestamp": "2030-01-01T00:00:00Z",
                        },
                    },
                )

    def test_token_refusals(self) -> None:
        empty = self.directory / "empty"
        empty.write_text("\n")
        expired = token(expires_in=-5)
        for argv, environ, words in [
            ([], {}, "no token: give --file FILE"),
            (["--env", "NOPE"], {}, "$NOPE is not set"),
            (["--file", str(empty)], {}, "empty"),
            (["--file", str(self.directory / "missing")], {}, "No such file"),
            (["--file", str(self.directory)], {}, "Is a directory"),
            ([], {"GATEHOUSE_TOKEN": "not-a-jwt"}, "not a JWT"),
            ([], {"GATEHOUSE_TOKEN": expired}, "expired at"),
            ([], {"GATEHOUSE_TOKEN": token(exp="soon")}, "not a number"),
            ([], {"GATEHOUSE_TOKEN": token(exp=10**20)}, "out of range"),
        ]:
            with self.subTest(argv=argv, environ=environ):
                self.stderr.seek(0)
                self.stderr.truncate(0)
                self.environ.update(environ)
                status = self.run_cli("token", *argv)
                for name in environ:
                    del self.environ[name]
                self.assertFailed(status, "token", words)

    def test_no_exp(self) -> None:
        """A JWT without exp: no expirationTimestamp (kubectl keeps it)."""
        value = jwt.encode({"sub": "a"}, "k" * 32, algorithm="HS256")
        self.assertEqual(
            exec_credential(value, time.time())["status"], {"token": value}
        )


class _Recorder(resource.Resource):
    """Answers any GET with a version; records the path and Authorization."""

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[tuple[bytes, bytes | None]] = []

    def render_GET(self, request: server.Request) -> bytes:
        self.seen.append((request.path, request.getHeader(b"authorization")))
        request.setHeader(b"content-type", b"application/json")
        return json.dumps(
            {"major": "1", "minor": "30", "gitVersion": "v1.30.0"}
        ).encode()


class RealKubectlTests(TestCase):
    """The real kubectl reads the kubeconfig and sends the token."""

    timeout = 60

    def setUp(self) -> None:
        self.directory = Path(self.mktemp())
        self.directory.mkdir()
        self.ca = make_ca(self.directory / "ca")
        cert, key = self.ca.issue("gateway", sans=("127.0.0.1",))
        options = ssl.PrivateCertificate.loadPEM(
            key.read_bytes() + cert.read_bytes()
        ).options()
        self.recorder = _Recorder()
        port = reactor.listenSSL(  # type: ignore[attr-defined]
            0, server.Site(self.recorder), options, interface="127.0.0.1"
        )
        self.addCleanup(port.stopListening)
        self.server = f"https://127.0.0.1:{port.getHost().port}"
        # kubectl and the plugin get no gatehouse on PATH: the kubeconfig
        # names the script by its absolute path.
        self.env = {"HOME": str(self.directory), "PATH": "/usr/bin:/bin"}

    def program(self, version: str) -> str:
        found = kubectl(version)
        if found is None:
            self.fail(f"kubectl.{version} is not installed")
        return found

    @inlineCallbacks
    def write_kubeconfig(self, *argv: str) -> Any:
        """Run the installed gatehouse script to write a kubeconfig."""
        if not os.path.exists(GATEHOUSE):
            self.fail(f"{GATEHOUSE} is not installed")
        path = self.directory / "kubeconfig"
        _out, err, code = yield getProcessOutputAndValue(
            GATEHOUSE,
            [
                "kubeconfig",
                "--target",
                "prod",
                "--server",
                self.server,
                "--ca",
                str(self.ca.cert_path),
                "--output",
                str(path),
                *argv,
            ],
            env={"PATH": "/usr/bin:/bin"},
        )
        self.assertEqual(code, 0, err)
        return path

    @inlineCallbacks
    def kubectl_version(
        self, version: str, path: Path, env: dict[str, str], raw: bool = False
    ) -> Any:
        """
        C{kubectl version} (or C{kubectl get --raw /version}); return
        (output, errors, status).
        """
        command = ["get", "--raw", "/version"] if raw else ["version", "-o", "json"]
        result = yield getProcessOutputAndValue(
            self.program(version),
            ["--kubeconfig", str(path), *command],
            env={**self.env, **env},
        )
        return result

    @inlineCallbacks
    def test_config_view(self) -> Any:
        """kubectl 1.27 and 1.33 read the kubeconfig as written."""
        path = yield self.write_kubeconfig("--token-env", "MY_TOKEN", "-n", "shop")
        written = yaml.safe_load(path.read_text())
        self.assertEqual(written["users"][0]["user"]["exec"]["command"], GATEHOUSE)
        for version in ("1.27", "1.33"):
            out, err, code = yield getProcessOutputAndValue(
                self.program(version),
                ["config", "view", "--raw", "-o", "json", "--kubeconfig", str(path)],
                env=self.env,
            )
            self.assertEqual(code, 0, err)
            seen = json.loads(out)
            self.assertEqual(
                seen["clusters"][0]["cluster"]["server"], self.server + "/targets/prod"
            )
            self.assertEqual(
                base64.b64decode(
                    seen["clusters"][0]["cluster"]["certificate-authority-data"]
                ),
                self.ca.cert_path.read_bytes(),
            )
            plugin = seen["users"][0]["user"]["exec"]
            self.assertEqual(
                (plugin["command"], plugin["args"], plugin["interactiveMode"]),
                (GATEHOUSE, ["token", "--env", "MY_TOKEN"], "Never"),
            )
            self.assertEqual(seen["contexts"][0]["context"]["namespace"], "shop")

    @inlineCallbacks
    def test_exec_plugin(self) -> Any:
        """
        kubectl runs C{gatehouse token} (file, variable, default variable)
        and sends its token to the target's path on the gateway.
        """
        value = token()
        token_file = self.directory / "token"
        token_file.write_text(value + "\n")
        cases = [
            ("1.27", ("--token-file", str(token_file)), {}),
            ("1.33", ("--token-env", "MY_TOKEN"), {"MY_TOKEN": value}),
            ("1.33", (), {"GATEHOUSE_TOKEN": value}),
        ]
        for version, argv, env in cases:
            path = yield self.write_kubeconfig(*argv)
            self.recorder.seen.clear()
            out, err, code = yield self.kubectl_version(version, path, env)
            self.assertEqual(code, 0, err)
            self.assertEqual(json.loads(out)["serverVersion"]["gitVersion"], "v1.30.0")
            self.assertEqual(
                self.recorder.seen,
                [(b"/targets/prod/version", b"Bearer " + value.encode())],
            )

    @inlineCallbacks
    def test_static_token(self) -> Any:
        """The static variant: the token in the kubeconfig is sent."""
        path = yield self.write_kubeconfig("--token", "static-token")
        _out, err, code = yield self.kubectl_version("1.33", path, {})
        self.assertEqual(code, 0, err)
        self.assertEqual(
            self.recorder.seen, [(b"/targets/prod/version", b"Bearer static-token")]
        )

    @inlineCallbacks
    def test_raw_path(self) -> Any:
        """
        C{kubectl get --raw PATH} sends the token too, but to PATH as given:
        kubectl (1.27 and 1.33) drops the server URL's path there, so the
        target must be in PATH (C{--raw /targets/prod/version}).
        """
        value = token()
        path = yield self.write_kubeconfig()
        for version in ("1.27", "1.33"):
            self.recorder.seen.clear()
            out, err, code = yield self.kubectl_version(
                version, path, {"GATEHOUSE_TOKEN": value}, raw=True
            )
            self.assertEqual(code, 0, err)
            self.assertEqual(json.loads(out)["gitVersion"], "v1.30.0")
            self.assertEqual(
                self.recorder.seen, [(b"/version", b"Bearer " + value.encode())]
            )

    @inlineCallbacks
    def test_expired_token(self) -> Any:
        """An expired token: the plugin fails, kubectl sends nothing."""
        path = yield self.write_kubeconfig()
        _out, err, code = yield self.kubectl_version(
            "1.33", path, {"GATEHOUSE_TOKEN": token(expires_in=-60)}
        )
        self.assertNotEqual(code, 0)
        self.assertIn(b"the token expired at", err)
        self.assertEqual(self.recorder.seen, [])
