"""
A real gatehouse daemon with a C{kubernetes} listener in front of the test
API server (L{tests.fixtures.kubeapi.KubeAPIServer}), for end-to-end tests
with the real kubectl binaries.

L{KubeGateway} runs the daemon (L{tests.protocols.http.harness.HTTPGateway})
with one target, C{prod}, reached with the fixture's gateway client
certificate (or its service-account token), writes kubeconfigs for the
gateway (L{KubeGateway.kubeconfig}: the server is
C{https://localhost:PORT/targets/prod}, the user a static token), and
runs kubectl through it (L{KubeGateway.kubectl}, a Deferred of
C{(out, err, code)}).
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

from twisted.internet.defer import Deferred
from twisted.trial.unittest import TestCase

from tests.fixtures.kubeapi import KubeAPIServer
from tests.protocols.http.harness import HTTPGateway

__all__ = ["TARGET", "KubeGateway", "KubeGatewayTestCase"]

TARGET = "prod"


class KubeGateway:
    """The daemon in front of C{api}, under C{directory}."""

    def __init__(
        self,
        directory: str,
        api: KubeAPIServer,
        *,
        policy: Mapping[str, Any] | None = None,
        masking: Sequence[Mapping[str, Any]] | None = None,
        listener_options: Mapping[str, Any] | None = None,
        target_options: Mapping[str, Any] | None = None,
        allow_groups: Sequence[str] = ("dba", "sre", "agents", "approvers"),
        use_token: bool = False,
    ) -> None:
        self.directory = os.path.abspath(directory)
        self.api = api
        cert, key = api.gateway_cert
        options: dict[str, Any] = {
            "allow_groups": list(allow_groups),
            "url": api.url,
            "ca_file": str(api.ca_path),
        }
        if use_token:
            options["token_file"] = str(api.gateway_token_path)
        else:
            options["client_certificate"] = str(cert)
            options["client_key"] = str(key)
        options.update(target_options or {})
        self.http = HTTPGateway(
            self.directory,
            protocol="kubernetes",
            targets=[{"name": TARGET, "protocol": "kubernetes", "options": options}],
            policy=policy,
            listener_options=listener_options,
            extra_config={"masking": [dict(m) for m in masking]} if masking else None,
        )
        self.kubeconfigs = Path(self.directory) / "kubeconfigs"
        self.kubeconfigs.mkdir(exist_ok=True)

    @property
    def url(self) -> str:
        """The server URL of the target through the gateway."""
        return f"{self.http.url}/targets/{TARGET}"

    def start(self) -> KubeGateway:
        """Run the daemon."""
        self.http.start()
        return self

    def stop(self) -> None:
        """Stop the daemon by pid."""
        self.http.stop()

    def token(self, subject: str = "alice", groups: Sequence[str] = ("sre",)) -> str:
        """A token of the test issuer."""
        return self.http.token(subject, groups)

    def kubeconfig(
        self,
        subject: str = "alice",
        groups: Sequence[str] = ("sre",),
        *,
        token: str | None = None,
        namespace: str = "default",
    ) -> Path:
        """A kubeconfig for the gateway with a static token."""
        token = token if token is not None else self.token(subject, groups)
        path = (
            self.kubeconfigs
            / f"{subject}-{'-'.join(groups)}-{len(os.listdir(self.kubeconfigs))}"
        )
        return self.api.write_kubeconfig(
            path,
            token=token,
            server=self.url,
            ca_path=Path(self.http.ca_cert),
            namespace=namespace,
        )

    def curl(self, path: str, *, token: str | None = "", **options: Any) -> Any:
        """curl C{path} of the target through the gateway (as alice, sre)."""
        if token == "":
            token = self.token()
        return self.http.curl(path, token=token, target=TARGET, **options)

    def kubectl(
        self,
        *args: str,
        version: str = "1.33",
        subject: str = "alice",
        groups: Sequence[str] = ("sre",),
        kubeconfig: Path | None = None,
        stdin: bytes | None = None,
        env: Mapping[str, str] | None = None,
    ) -> Deferred[tuple[bytes, bytes, int]]:
        """kubectl.VERSION ARGS through the gateway as C{subject}."""
        config = kubeconfig or self.kubeconfig(subject, groups)
        d: Deferred[tuple[bytes, bytes, int]] = self.api.kubectl(
            version, *args, kubeconfig=config, stdin=stdin, env=env
        )
        return d


class KubeGatewayTestCase(TestCase):
    """
    Tests against one API server and one gateway shared by the class,
    started by its first test, stopped by pid when the test process ends.
    A subclass gives the API server's RBAC rules and the gateway's
    configuration by overriding L{make}.
    """

    gw: KubeGateway
    api: KubeAPIServer
    rules: ClassVar[list[dict[str, Any]]] = []

    @classmethod
    def make(cls, directory: str, api: KubeAPIServer) -> KubeGateway:
        """The class's gateway."""
        return KubeGateway(directory, api)

    def setUp(self) -> None:
        cls = type(self)
        if "gw" not in cls.__dict__:
            directory = tempfile.mkdtemp(prefix="gatehouse-kube-")
            api = KubeAPIServer(rules=cls.rules).start()
            try:
                gw = cls.make(os.path.join(directory, "gw"), api).start()
            except BaseException:
                api.stop()
                shutil.rmtree(directory, ignore_errors=True)
                raise
            cls.api, cls.gw = api, gw

            def stop() -> None:
                try:
                    gw.stop()
                finally:
                    api.stop()
                    if not os.environ.get("GATEHOUSE_TEST_KEEP"):
                        shutil.rmtree(directory, ignore_errors=True)

            atexit.register(stop)

    def ensure_namespace(self, name: str) -> None:
        """Create namespace C{name} on the API server (as admin) if missing."""
        if self.api.get_object(f"/api/v1/namespaces/{name}") is None:
            self.api.create(
                "/api/v1/namespaces",
                {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}},
            )
