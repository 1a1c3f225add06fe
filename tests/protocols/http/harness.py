"""
A real gatehouse daemon with an HTTP or Kubernetes listener (TLS), for
end-to-end tests with real clients (curl, kubectl).

L{HTTPGateway} writes the configuration with one listener of
C{protocol} (C{http} or C{kubernetes}) and the given targets, runs
C{twistd -n gatehouse} through L{tests.protocols.postgres.harness.Gateway}
without PostgreSQL, and reads the recordings back with the real CLIs
(L{tests.gateway_recordings.GatewayRecordings}).

Its TLS certificate is for C{localhost} and 127.0.0.1, from the CA at
L{HTTPGateway.ca_cert}.  L{HTTPGateway.curl} runs the real curl.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Mapping, Sequence
from typing import Any

import attrs

from gatehouse._pgcluster import free_port
from tests.gateway_recordings import GatewayRecordings
from tests.protocols.postgres.harness import Gateway

__all__ = ["CurlResult", "HTTPGateway"]


@attrs.frozen
class CurlResult:
    """What curl got: the status (0: no answer), headers, body, its stderr."""

    status: int
    headers: dict[str, str]
    body: bytes
    stderr: str
    returncode: int


class HTTPGateway(GatewayRecordings):
    """One daemon with one HTTP-family listener, under C{directory}."""

    def __init__(
        self,
        directory: str,
        *,
        protocol: str = "http",
        targets: Sequence[Mapping[str, Any]],
        policy: Mapping[str, Any] | None = None,
        listener_options: Mapping[str, Any] | None = None,
        extra_config: Mapping[str, Any] | None = None,
        admin: bool = True,
    ) -> None:
        self.directory = os.path.abspath(directory)
        self.port = free_port()
        self.protocol = protocol
        listener: dict[str, Any] = {
            "name": protocol,
            "protocol": protocol,
            "address": "127.0.0.1",
            "port": self.port,
            "options": dict(listener_options or {}),
        }
        self.cleartext = bool(listener["options"].get("allow_cleartext"))
        if not self.cleartext:
            # Gateway issues the daemon's certificate (localhost, 127.0.0.1)
            # there.
            listener["tls"] = {
                "certificate": os.path.join(self.directory, "tls", "localhost.crt"),
                "key": os.path.join(self.directory, "tls", "localhost.key"),
            }
        config: dict[str, Any] = {}
        if policy is not None:
            config["policy"] = dict(policy)
        config.update(extra_config or {})
        self.gateway = Gateway(
            self.directory,
            None,
            listeners=[listener],
            extra_targets=[dict(t) for t in targets],
            extra_config=config,
            admin=admin,
        )
        self.ca_cert = self.gateway.ca_cert

    @property
    def config_path(self) -> str:
        """The daemon's configuration file."""
        return str(self.gateway.config_path)

    @property
    def url(self) -> str:
        """The listener's base URL (http: with C{allow_cleartext})."""
        scheme = "http" if self.cleartext else "https"
        return f"{scheme}://localhost:{self.port}"

    def start(self) -> HTTPGateway:
        """Run the daemon; return once it listens."""
        self.gateway.start()
        return self

    def stop(self) -> None:
        """Stop the daemon by pid."""
        self.gateway.stop()

    def log(self) -> str:
        """The daemon's log so far."""
        return str(self.gateway.log())

    def token(
        self, subject: str = "alice", groups: Sequence[str] = ("dba",), **claims: object
    ) -> str:
        """A token from the test issuer (see L{Gateway.token})."""
        return str(self.gateway.token(subject, tuple(groups), **claims))

    def curl(
        self,
        path: str,
        *,
        token: str | None = "",
        method: str = "GET",
        data: bytes | None = None,
        headers: Sequence[str] = (),
        target: str | None = None,
        timeout: float = 30.0,
        extra: Sequence[str] = (),
    ) -> CurlResult:
        """
        The real curl against the listener: C{path} under
        C{/targets/TARGET} when C{target} is given; C{token} "" means a
        fresh default token, None none.
        """
        if token == "":
            token = self.token()
        url = self.url + (f"/targets/{target}" if target else "") + path
        argv = [
            "curl",
            "-sS",
            "--cacert",
            self.ca_cert,
            "-X",
            method,
            "-D",
            "-",
            "-o",
            self.gateway.path("curl-body"),
            "--max-time",
            str(timeout),
            "--path-as-is",
            *extra,
        ]
        if token is not None:
            argv += ["-H", f"Authorization: Bearer {token}"]
        for header in headers:
            argv += ["-H", header]
        if data is not None:
            argv += ["--data-binary", "@-"]
        argv.append(url)
        if os.path.exists(self.gateway.path("curl-body")):
            os.unlink(self.gateway.path("curl-body"))
        done = subprocess.run(
            argv, input=data, capture_output=True, timeout=timeout + 10
        )
        status = 0
        found: dict[str, str] = {}
        for line in done.stdout.decode("latin-1").splitlines():
            if line.startswith("HTTP/"):
                status = int(line.split()[1])
                found = {}
            elif ":" in line:
                name, _, value = line.partition(":")
                found[name.strip().lower()] = value.strip()
        body = b""
        if os.path.exists(self.gateway.path("curl-body")):
            with open(self.gateway.path("curl-body"), "rb") as f:
                body = f.read()
        return CurlResult(
            status, found, body, done.stderr.decode(errors="replace"), done.returncode
        )
