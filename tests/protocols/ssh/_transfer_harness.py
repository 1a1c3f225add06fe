"""
A real gatehouse daemon with an SSH listener in front of a real sshd, for
the transfer and forward end-to-end tests (OpenSSH's ssh, sftp and scp as
clients).  Temporary: the shared SSH harness (tests/protocols/ssh/harness.py)
replaces it when merged.

L{SSHGatewayTestCase} runs one gateway per test class (started by its
first test, stopped at exit) whose target C{web-1} is the shared sshd
(L{tests.fixtures.sshd.shared_sshd}), reached as root with the gateway's
own key.  Clients log in as C{web-1@127.0.0.1} with a JWT as password
(through C{SSH_ASKPASS}).
"""

from __future__ import annotations

import atexit
import json
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Sequence
from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from gatehouse._pgcluster import free_port
from gatehouse.recording.format import RecordType
from gatehouse.recording.index import IndexUnavailable, SessionRow, query_sessions
from gatehouse.recording.reader import read_records
from tests.fixtures.sshd import (
    SSHServer,
    askpass_env,
    generate_key,
    shared_sshd,
    ssh_program,
)
from tests.protocols.postgres.harness import Gateway

__all__ = ["SSHGateway", "SSHGatewayTestCase", "events_of", "resident"]

TARGET = "web-1"


class SSHGateway:
    """A gateway (L{Gateway}) whose only listener is SSH, in front of C{sshd}."""

    def __init__(
        self,
        directory: str,
        sshd: SSHServer,
        policy: dict[str, Any],
        *,
        admin: bool = False,
        pythonpath: str | None = None,
    ) -> None:
        self.directory = directory
        self.sshd = sshd
        keys = os.path.join(directory, "keys")
        self.host_key = generate_key(os.path.join(keys, "gw_host"))
        self.upstream_key = generate_key(os.path.join(keys, "gw_upstream"))
        for pair in (self.host_key, self.upstream_key):
            pair.private_path.chmod(0o600)
        sshd.authorize(self.upstream_key.public)
        self.known_hosts = os.path.join(directory, "known_hosts")
        port = free_port()
        with open(self.known_hosts, "w") as f:
            f.write(f"[127.0.0.1]:{port} {self.host_key.public}\n")
        self.gateway = Gateway(
            os.path.join(directory, "gw"),
            None,
            listeners=[
                {
                    "name": "ssh",
                    "protocol": "ssh",
                    "address": "127.0.0.1",
                    "port": port,
                    "options": {"host_keys": [str(self.host_key.private_path)]},
                }
            ],
            extra_targets=[
                {
                    "name": TARGET,
                    "protocol": "ssh",
                    "options": {
                        "host": "127.0.0.1",
                        "port": sshd.port,
                        "host_keys": [sshd.host_public_key],
                        "key": str(self.upstream_key.private_path),
                        "user": sshd.admin_account,
                        "allow_groups": ["dba", "agents"],
                    },
                }
            ],
            extra_config=policy,
            admin=admin,
            pythonpath=pythonpath,
        )
        self.port = port
        #: the daemon's resident set size just after it started
        self.started_rss = 0

    # -- clients -------------------------------------------------------------

    def client_options(
        self, port_flag: str = "-p", log_level: str = "ERROR"
    ) -> list[str]:
        """
        OpenSSH options for the gateway: its host key pinned, password only
        (C{log_level} INFO shows a channel's open failure).
        """
        return [
            "-F",
            "/dev/null",
            "-o",
            f"UserKnownHostsFile={self.known_hosts}",
            "-o",
            "GlobalKnownHostsFile=/dev/null",
            "-o",
            "StrictHostKeyChecking=yes",
            "-o",
            "PubkeyAuthentication=no",
            "-o",
            "PreferredAuthentications=password",
            "-o",
            "BatchMode=no",
            "-o",
            "ConnectTimeout=10",
            "-o",
            f"LogLevel={log_level}",
            port_flag,
            str(self.port),
        ]

    def env(self, token: str | None = None) -> dict[str, str]:
        """The client's environment: askpass answers with the token."""
        return askpass_env(
            token if token is not None else self.gateway.token(), self.directory
        )

    def destination(self, target: str = TARGET) -> str:
        """C{target@127.0.0.1}."""
        return f"{target}@127.0.0.1"

    def ssh_argv(self, *args: str, log_level: str = "ERROR") -> list[str]:
        """C{ssh} to the gateway's C{web-1} with C{args} (options, command)."""
        return [ssh_program(), *self.client_options(log_level=log_level), *args]

    def run(
        self, argv: Sequence[str], *, timeout: float = 120, token: str | None = None
    ) -> subprocess.CompletedProcess[bytes]:
        """Run a client program to completion (stdin empty)."""
        return subprocess.run(
            list(argv),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=timeout,
            env=self.env(token),
        )

    def sftp_batch(
        self, commands: str, *, timeout: float = 300, token: str | None = None
    ) -> subprocess.CompletedProcess[bytes]:
        """Run C{sftp -b} with C{commands} through the gateway."""
        batch = tempfile.NamedTemporaryFile(
            "w", dir=self.directory, suffix=".batch", delete=False
        )
        with batch:
            batch.write(commands)
        return self.run(
            [
                shutil.which("sftp") or "sftp",
                *self.client_options("-P"),
                "-b",
                batch.name,
                self.destination(),
            ],
            timeout=timeout,
            token=token,
        )

    def scp(
        self, *args: str, legacy: bool = False, timeout: float = 300
    ) -> subprocess.CompletedProcess[bytes]:
        """Run C{scp} (C{-O}: the legacy protocol) with C{args} through the gateway."""
        return self.run(
            [
                shutil.which("scp") or "scp",
                *self.client_options("-P"),
                *(["-O"] if legacy else []),
                *args,
            ],
            timeout=timeout,
        )

    def remote(self, path: str) -> str:
        """C{web-1@127.0.0.1:path}, for scp."""
        return f"{self.destination()}:{path}"

    # -- recordings ----------------------------------------------------------

    def latest_session(self, after: float, *, wait_closed: bool = True) -> SessionRow:
        """The newest session that started after C{after} (once closed)."""
        index = self.gateway.path("recordings", "index.sqlite3")
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                rows = query_sessions(index, limit=None)
            except IndexUnavailable:
                time.sleep(0.05)
                continue
            rows = sorted(
                (r for r in rows if r.started >= after), key=lambda r: r.started
            )
            if rows and (
                not wait_closed or (rows[-1].ended is not None and rows[-1].final)
            ):
                return rows[-1]
            time.sleep(0.05)
        raise AssertionError(
            f"no closed session after {after}:\n{self.gateway.log()[-3000:]}"
        )


def events_of(directory: str, name: str | None = None) -> list[dict[str, Any]]:
    """The session's events (named C{name}), with their record channel."""
    found = []
    for record in read_records(directory):
        if record.type != RecordType.EVENT:
            continue
        event = json.loads(record.payload)
        event.setdefault("channel", record.channel)
        if name is None or event.get("event") == name:
            found.append(event)
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


_gateways: dict[type, SSHGateway] = {}


@atexit.register
def _stop_gateways() -> None:
    for each in _gateways.values():
        each.gateway.stop()
        shutil.rmtree(each.directory, ignore_errors=True)


class SSHGatewayTestCase(SynchronousTestCase):
    """
    One L{SSHGateway} per test class (started by its first test, stopped
    at exit) in front of the shared sshd, with the class's L{policy}.
    """

    policy: dict[str, Any] = {"policy": {"opaque": "deny", "rules": []}}
    admin = False
    gw: SSHGateway

    def setUp(self) -> None:
        cls = type(self)
        if cls not in _gateways:
            base = tempfile.mkdtemp(prefix=f"gatehouse-ssh-{cls.__name__}-")
            each = SSHGateway(base, shared_sshd(), self.make_policy(), admin=self.admin)
            each.gateway.start()
            assert each.gateway.process is not None
            each.started_rss = resident(each.gateway.process.pid)
            _gateways[cls] = each
        self.gw = _gateways[cls]
        self.scratch = tempfile.mkdtemp(prefix="gatehouse-ssh-files-")
        self.addCleanup(shutil.rmtree, self.scratch, True)

    def make_policy(self) -> dict[str, Any]:
        """The configuration's policy section (by default L{policy})."""
        return self.policy

    def assert_ok(self, result: subprocess.CompletedProcess[bytes], what: str) -> None:
        """C{result} exited 0, or the failure shows its stderr and the daemon's log."""
        self.assertEqual(
            result.returncode,
            0,
            f"{what} failed ({result.returncode}):\n"
            f"{result.stderr.decode(errors='replace')[-3000:]}\n"
            f"{self.gw.gateway.log()[-3000:]}",
        )
