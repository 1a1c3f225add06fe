"""
A real gatehouse daemon with an SSH listener in front of a real sshd, for
the approval and bad-input end-to-end tests (to be folded into the shared
SSH harness).

L{SSHGateway} generates the gateway's host key, its upstream key and a
user CA, starts an L{SSHServer} that trusts the upstream key, and runs
the daemon (L{Gateway} without PostgreSQL) with one SSH listener and a
target C{web-1} on that sshd.  Clients are the real OpenSSH C{ssh},
reading the JWT as their password through askpass.
"""

from __future__ import annotations

import atexit
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from gatehouse._pgcluster import free_port
from tests.fixtures.sshd import KeyPair, SSHServer, askpass_env, generate_key
from tests.gateway_recordings import GatewayRecordings
from tests.protocols.postgres.harness import Gateway

__all__ = ["Background", "SSHGateway", "shared_gateway", "write_certificate"]


_shared: dict[object, SSHGateway] = {}


@atexit.register
def _stop_shared() -> None:
    for gateway in _shared.values():
        gateway.stop()


def shared_gateway(key: object, make: Callable[[], SSHGateway]) -> SSHGateway:
    """One gateway per C{key} (a test class), started on first use, stopped at exit."""
    if key not in _shared:
        _shared[key] = make()
    return _shared[key]


class SSHGateway(GatewayRecordings):
    """
    The daemon, its sshd and the keys, under a fresh directory.

    @ivar port: the SSH listener's port.
    @ivar sshd: the target's sshd (the one behind C{web-1}).
    """

    def __init__(
        self,
        *,
        policy: dict | None = None,
        extra_targets: Sequence[dict] = (),
        more_sshd: Mapping[str, SSHServer | None] | None = None,
        extra_config: dict | None = None,
        listener_options: dict | None = None,
    ) -> None:
        self.directory = Path(tempfile.mkdtemp(prefix="gatehouse-ssh-e2e-"))
        self.keys = self.directory / "keys"
        self.host_key = generate_key(self.keys / "gw_host")
        self.upstream_key = generate_key(self.keys / "gw_upstream")
        self.user_ca = generate_key(self.keys / "user_ca")
        self.sshd = SSHServer(authorized_keys=[self.upstream_key.public]).start()
        self.more_sshd = [s for s in (more_sshd or {}).values() if s is not None]
        more = []
        for name, server in (more_sshd or {}).items():
            if server is not None:
                server.authorize(self.upstream_key.public)
            more.append(self.target(name, server))
        self.port = free_port()
        config = dict(extra_config or {})
        if policy is not None:
            config["policy"] = policy
        self.gateway = Gateway(
            str(self.directory / "gw"),
            None,
            listeners=[
                {
                    "name": "ssh",
                    "protocol": "ssh",
                    "address": "127.0.0.1",
                    "port": self.port,
                    "options": {
                        "host_keys": [str(self.host_key.private_path)],
                        "user_ca_keys": [str(self.user_ca.public_path)],
                        **(listener_options or {}),
                    },
                }
            ],
            extra_targets=[self.target("web-1", self.sshd), *more, *extra_targets],
            extra_config=config,
            admin=True,
        )
        self.gateway.start()
        self._wait_admin()

    def _wait_admin(self, timeout: float = 20) -> None:
        """Wait for the admin API's port (the daemon opens it after the SSH one)."""
        assert self.gateway.admin_port is not None
        deadline = time.monotonic() + timeout
        while True:
            try:
                socket.create_connection(
                    ("127.0.0.1", self.gateway.admin_port), 1
                ).close()
                return
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def target(self, name: str, sshd: SSHServer | None, **options: object) -> dict:
        """A target entry for C{sshd} (None: a closed port) with the gateway's key."""
        base: dict = {
            "host": "127.0.0.1",
            "port": sshd.port if sshd is not None else free_port(),
            "host_keys": sshd.host_public_keys() if sshd is not None else [],
            "key": str(self.upstream_key.private_path),
            "user": sshd.admin_account if sshd is not None else "root",
            "allow_groups": ["dba", "agents"],
        }
        if sshd is None:
            base["host_keys"] = [self.upstream_key.public]  # any pin: never reached
        base.update(options)
        return {"name": name, "protocol": "ssh", "options": base}

    def stop(self) -> None:
        """Stop the daemon and the sshd; remove the files."""
        try:
            self.gateway.stop()
        finally:
            for server in (self.sshd, *self.more_sshd):
                server.stop()
            shutil.rmtree(self.directory, ignore_errors=True)

    # -- identities ------------------------------------------------------

    def token(
        self, subject: str = "agent-7", *groups: str, lifetime: float = 600
    ) -> str:
        """A token for C{subject} in C{agents} and C{groups}."""
        return self.gateway.token(
            subject=subject, groups=("agents", *groups), lifetime=lifetime
        )

    def ssh_argv(
        self,
        login: str,
        command: str | None,
        *,
        options: Sequence[str] = (),
        password: bool = True,
    ) -> list[str]:
        """
        An C{ssh} command line to the gateway as C{login}; C{options} come
        first, so they win over the defaults (ssh keeps the first value).
        """
        argv = [
            "ssh",
            *options,
            "-F",
            "/dev/null",
            "-p",
            str(self.port),
            "-o",
            "StrictHostKeyChecking=no",
            "-o",
            f"UserKnownHostsFile={self.directory / 'known_hosts'}",
            "-o",
            "GlobalKnownHostsFile=/dev/null",
            "-o",
            "ConnectTimeout=10",
            "-o",
            "LogLevel=ERROR",
        ]
        if password:
            argv += [
                "-o",
                "PubkeyAuthentication=no",
                "-o",
                "PreferredAuthentications=password",
                "-o",
                "NumberOfPasswordPrompts=1",
            ]
        argv.append(f"{login}@127.0.0.1")
        if command is not None:
            argv.append(command)
        return argv

    def env(self, token: str | None = None) -> dict[str, str]:
        """The environment that answers ssh's password prompt with C{token}."""
        return askpass_env(
            token if token is not None else self.token(), self.directory / "askpass"
        )

    def ssh(
        self,
        command: str,
        *,
        login: str = "web-1",
        token: str | None = None,
        input: bytes | None = None,
        options: Sequence[str] = (),
        password: bool = True,
        timeout: float = 60,
    ) -> subprocess.CompletedProcess[bytes]:
        """Run C{command} through the gateway with real C{ssh}."""
        return subprocess.run(
            self.ssh_argv(login, command, options=options, password=password),
            input=input,
            stdin=None if input is not None else subprocess.DEVNULL,
            capture_output=True,
            env=self.env(token),
            timeout=timeout,
        )

    def popen(
        self,
        command: str,
        *,
        login: str = "web-1",
        token: str | None = None,
        input: bytes | None = None,
    ) -> Background:
        """Start C{command} through the gateway in the background."""
        return Background(
            self.ssh_argv(login, command), self.env(token), self.directory, input
        )

    # -- what the gateway logged -------------------------------------------

    def wait_line(self, *needles: str, since: int = 0, timeout: float = 15) -> str:
        """The first line of the daemon's log from C{since} holding all C{needles}."""
        deadline = time.monotonic() + timeout
        while True:
            text = self.gateway.log()[since:]
            for line in text.splitlines():
                if all(n in line for n in needles):
                    return line
            if time.monotonic() > deadline:
                raise AssertionError(f"no line with {needles!r}:\n{text[-3000:]}")
            time.sleep(0.1)

    def log_size(self) -> int:
        """A mark in the daemon's log for L{wait_line}."""
        return len(self.gateway.log())


class Background:
    """
    A client running in the background; its stdout and stderr go to files
    that can be read while it runs.
    """

    _count = 0

    def __init__(
        self,
        argv: list[str],
        env: dict[str, str],
        directory: Path,
        input: bytes | None = None,
    ) -> None:
        Background._count += 1
        base = directory / f"client-{Background._count}"
        self.stdout_path = base.with_suffix(".out")
        self.stderr_path = base.with_suffix(".err")
        with self.stdout_path.open("wb") as out, self.stderr_path.open("wb") as err:
            self.process = subprocess.Popen(
                argv,
                stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                env=env,
            )
        if input is not None:
            assert self.process.stdin is not None
            self.process.stdin.write(input)
            self.process.stdin.close()

    @property
    def stdout(self) -> bytes:
        """What the client printed so far."""
        return self.stdout_path.read_bytes()

    @property
    def stderr(self) -> bytes:
        """What the client printed on stderr so far."""
        return self.stderr_path.read_bytes()

    @property
    def done(self) -> bool:
        """True once the client exited."""
        return self.process.poll() is not None

    def wait_stderr(self, needle: bytes, timeout: float = 20) -> bytes:
        """Stderr once it holds C{needle}."""
        deadline = time.monotonic() + timeout
        while needle not in self.stderr:
            if time.monotonic() > deadline:
                raise AssertionError(f"stderr lacks {needle!r}: {self.stderr!r}")
            time.sleep(0.05)
        return self.stderr

    def wait(self, timeout: float = 60) -> int:
        """The exit status (killing the client after C{timeout})."""
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise AssertionError(
                f"client still running after {timeout}s: {self.stderr!r}"
            ) from None

    def kill(self) -> None:
        """End the client if it still runs."""
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


def write_certificate(
    directory: Path, name: str, ca: KeyPair, principals: str, validity: str
) -> KeyPair:
    """A new key with an OpenSSH certificate of C{ca} beside it (C{-cert.pub})."""
    pair = generate_key(directory / name)
    subprocess.run(
        [
            "ssh-keygen",
            "-q",
            "-s",
            str(ca.private_path),
            "-I",
            f"test-{name}",
            "-n",
            principals,
            "-V",
            validity,
            str(pair.public_path),
        ],
        check=True,
        capture_output=True,
        timeout=30,
    )
    return pair
