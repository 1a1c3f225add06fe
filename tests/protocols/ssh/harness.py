"""
A real gatehouse daemon with an SSH listener in front of a real sshd, for
end-to-end tests with OpenSSH's own clients.

L{SSHGateway} writes what the gateway needs next to the daemon's files
(its ed25519 host key, its ed25519 upstream key, a user CA key pair),
authorizes the upstream key on the fixture's sshd (every account: root
and the restricted one when root), pins the sshd's host key in each
target, and runs C{twistd -n gatehouse} through
L{tests.protocols.postgres.harness.Gateway} without PostgreSQL.  The
configuration has an admin API and an C{ssh_user_ca} section, so
C{gatehouse ssh-cert} works against it, and the listener trusts that CA
(C{user_ca_keys}).

Clients run as users run them: L{SSHGateway.ssh} (run to the end),
L{SSHGateway.ssh_process} (started, for held or long commands),
L{SSHGateway.terminal} (C{ssh -tt} on a pseudo-terminal, a
L{tests.fixtures.sshd.PtyClient}) and L{SSHGateway.sftp} (C{sftp -b})
start OpenSSH's clients with no user configuration (C{-F /dev/null}), no
agent, a known_hosts file of their own that pins the gateway's host key
(C{StrictHostKeyChecking=yes}), and either a token as the password (read
through C{SSH_ASKPASS}, see L{tests.fixtures.sshd.askpass_env}) or
C{-i KEY} for a certificate (L{SSHGateway.ssh_cert} runs the real
C{gatehouse ssh-cert} to make one).  The login name is TARGET or
ACCOUNT+TARGET.

The recordings are read back with the real CLIs, as subprocesses with
C{--config}: L{SSHGateway.sessions} (C{gatehouse sessions --json}),
L{SSHGateway.export} (JSON lines; C{cli=False} makes the same export
in-process), L{SSHGateway.export_asciicast}, L{SSHGateway.replay} and
L{SSHGateway.verify}.  Each CLI run starts an interpreter (about a second
on a busy machine): use them where the CLI is what a test checks.
L{SSHGateway.wait_sessions} polls the index in-process for the sessions a
client just ran, once they are closed; L{events} picks events from an
export.

L{SSHGatewayTestCase} shares one sshd and one gateway per test class:
started by the class's first test, stopped by pid at exit.  A subclass
says what it needs with L{SSHGatewayTestCase.make_gateway}::

    class MyTests(SSHGatewayTestCase):
        @classmethod
        def make_gateway(cls, directory, sshd):
            return SSHGateway(directory, sshd, policy={...})

        def test_it(self):
            result = self.gateway.ssh("web-1", "id -un")
"""

from __future__ import annotations

import atexit
import os
import shutil
import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

from twisted.trial.unittest import SynchronousTestCase

from gatehouse._pgcluster import free_port
from tests.fixtures.sshd import (
    KeyPair,
    PtyClient,
    SSHServer,
    askpass_env,
    generate_key,
    ssh_program,
)
from tests.gateway_recordings import GatewayRecordings, events
from tests.protocols.postgres.harness import Gateway

__all__ = [
    "DEFAULT_GROUPS",
    "DEFAULT_TARGET",
    "SSHGateway",
    "SSHGatewayTestCase",
    "events",
    "ssh_target",
]

#: the target L{SSHGateway} makes when given none
DEFAULT_TARGET = "web-1"
#: the groups targets allow by default (L{Gateway.token} gives C{dba})
DEFAULT_GROUPS = ("dba", "agents")


def ssh_target(
    name: str = DEFAULT_TARGET,
    *,
    allow_groups: Sequence[str] = DEFAULT_GROUPS,
    **options: object,
) -> dict[str, Any]:
    """
    A target of the configuration, on the fixture's sshd unless
    C{options} say otherwise (C{host}, C{port}, C{host_keys}, C{key} are
    filled in by L{SSHGateway}; C{user} defaults to the sshd's admin
    account, C{user=None} gives none).  C{accounts} entries are
    C{{"groups": [...], "user": ...}}.
    """
    return {
        "name": name,
        "protocol": "ssh",
        "options": {"allow_groups": list(allow_groups), **options},
    }


class SSHGateway(GatewayRecordings):
    """
    One gatehouse daemon with an SSH listener, whose targets are accounts
    on C{sshd} (an L{SSHServer}; started here unless it runs).

    @ivar sshd: the target server.
    @ivar gateway: the daemon (L{Gateway}; C{gateway.port} is the SSH port).
    @ivar port: the SSH listener's port.
    @ivar host_key: the gateway's host key pair.
    @ivar upstream_key: the key the gateway logs in to targets with.
    @ivar user_ca: the user CA key pair (C{ssh_user_ca.key}; the listener's
        C{user_ca_keys} is its C{.pub}).
    @ivar known_hosts: the clients' known_hosts file (the gateway's host
        key for C{[127.0.0.1]:PORT}).
    """

    host = "127.0.0.1"

    def __init__(
        self,
        directory: str,
        sshd: SSHServer,
        *,
        targets: Sequence[Mapping[str, Any]] | None = None,
        policy: Mapping[str, Any] | None = None,
        listener_options: Mapping[str, Any] | None = None,
        extra_config: Mapping[str, Any] | None = None,
        admin: bool = True,
    ) -> None:
        """
        Write the keys and the configuration under C{directory}; start
        C{sshd} if it is not running (the daemon starts in L{start}).

        @param targets: L{ssh_target} dicts (default: one, L{DEFAULT_TARGET},
            as the sshd's admin account).
        @param policy: the configuration's C{policy} section (none: every
            command is allowed).  One without approvers must set
            C{"opaque": "deny"} (or name review approvers).
        @param listener_options: more options of the SSH listener.
        @param extra_config: more top-level sections of the configuration.
        """
        self.directory = os.path.abspath(directory)
        self.sshd = sshd.start()
        keys = Path(self.directory) / "keys"
        keys.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.host_key = self._key(keys / "gateway_host_ed25519")
        self.upstream_key = self._key(keys / "gateway_upstream_ed25519")
        self.user_ca = self._key(keys / "ssh_user_ca")
        self.sshd.authorize(self.upstream_key.public)
        self.port = free_port()
        self.targets = [
            self._complete(t)
            for t in (targets if targets is not None else [ssh_target()])
        ]
        listener = {
            "name": "ssh",
            "protocol": "ssh",
            "address": self.host,
            "port": self.port,
            "options": {
                "host_keys": [str(self.host_key.private_path)],
                "user_ca_keys": [str(self.user_ca.public_path)],
                **(listener_options or {}),
            },
        }
        config: dict[str, Any] = {
            "ssh_user_ca": {"key": str(self.user_ca.private_path)}
        }
        if policy is not None:
            config["policy"] = dict(policy)
        config.update(extra_config or {})
        self.gateway = Gateway(
            self.directory,
            None,
            listeners=[listener],
            extra_targets=self.targets,
            extra_config=config,
            admin=admin,
        )
        client = Path(self.directory) / "client"
        client.mkdir(exist_ok=True, mode=0o700)
        self.client_directory = client
        self.known_hosts = client / "known_hosts"
        line = " ".join(self.host_key.public.split()[:2])
        self.known_hosts.write_text(f"[{self.host}]:{self.port} {line}\n")

    @staticmethod
    def _key(path: Path) -> KeyPair:
        pair = generate_key(path, "ed25519")
        # ssh-keygen writes 0600 already; the gateway refuses looser keys.
        path.chmod(0o600)
        return pair

    def _complete(self, target: Mapping[str, Any]) -> dict[str, Any]:
        options = dict(target.get("options") or {})
        options.setdefault("host", self.sshd.host)
        options.setdefault("port", self.sshd.port)
        if "known_hosts" not in options:
            options.setdefault("host_keys", self.sshd.host_public_keys())
        options.setdefault("key", str(self.upstream_key.private_path))
        if "user" not in options:
            options["user"] = self.sshd.admin_account
        elif options["user"] is None:
            del options["user"]  # no default account: accounts entries only
        return {**target, "protocol": "ssh", "options": options}

    # -- process -------------------------------------------------------------

    @property
    def config_path(self) -> str:
        """The daemon's configuration file (for C{--config})."""
        return self.gateway.config_path

    @property
    def admin_url(self) -> str:
        """The admin API's URL (C{gatehouse ssh-cert --gateway})."""
        return self.gateway.admin_url

    def start(self) -> SSHGateway:
        """Run the daemon; return once its SSH listener accepts connections."""
        self.gateway.start()
        return self

    def stop(self) -> None:
        """Stop the daemon by pid (the sshd is the caller's)."""
        self.gateway.stop()

    def log(self) -> str:
        """The daemon's log so far."""
        return self.gateway.log()

    def token(
        self, subject: str = "alice", groups: Sequence[str] = ("dba",), **claims: object
    ) -> str:
        """A token from the test issuer (see L{Gateway.token})."""
        return self.gateway.token(subject, tuple(groups), **claims)

    # -- clients -------------------------------------------------------------

    def client_options(
        self, key: Path | str | None = None, *, port_flag: str = "-p"
    ) -> list[str]:
        """
        OpenSSH options for a client of the gateway: no user config, no
        agent, the gateway's host key pinned, then either password
        authentication only (C{key} None: the token through askpass; one
        prompt) or C{-i key} only (its C{-cert.pub} beside it is offered).
        Add C{login@127.0.0.1} and the command.
        """
        args = [
            "-F",
            "/dev/null",
            "-o",
            f"UserKnownHostsFile={self.known_hosts}",
            "-o",
            "GlobalKnownHostsFile=/dev/null",
            "-o",
            "StrictHostKeyChecking=yes",
            "-o",
            "IdentityAgent=none",
            "-o",
            "ConnectTimeout=10",
            # INFO (the default): ssh prints the gateway's banner lines.
            "-o",
            "LogLevel=INFO",
            "-o",
            "KbdInteractiveAuthentication=no",
        ]
        if key is None:
            args += [
                "-o",
                "PreferredAuthentications=password",
                "-o",
                "PubkeyAuthentication=no",
                "-o",
                "NumberOfPasswordPrompts=1",
                # sftp -b implies BatchMode=yes, which turns askpass off.
                "-o",
                "BatchMode=no",
            ]
        else:
            args += [
                "-o",
                "PreferredAuthentications=publickey",
                "-o",
                "PasswordAuthentication=no",
                "-o",
                "IdentitiesOnly=yes",
                "-o",
                "BatchMode=yes",
                "-i",
                str(key),
            ]
        return [*args, port_flag, str(self.port)]

    def destination(self, login: str = DEFAULT_TARGET) -> str:
        """C{login@127.0.0.1}: C{login} is TARGET or ACCOUNT+TARGET."""
        return f"{login}@{self.host}"

    def client_env(self, token: str | None = None) -> dict[str, str]:
        """
        The environment for a client: C{token} (default: a fresh one for
        alice) is the password ssh reads through askpass.
        """
        return askpass_env(
            self.token() if token is None else token, self.client_directory
        )

    def ssh_argv(
        self,
        login: str = DEFAULT_TARGET,
        command: str | None = None,
        *,
        key: Path | str | None = None,
        tty: bool = False,
        options: Sequence[str] = (),
    ) -> list[str]:
        """The argv of C{ssh} to the gateway (C{-tt} with C{tty})."""
        argv = [ssh_program(), *self.client_options(key), *options]
        if tty:
            argv.append("-tt")
        argv.append(self.destination(login))
        if command is not None:
            argv.append(command)
        return argv

    def ssh(
        self,
        login: str = DEFAULT_TARGET,
        command: str | None = None,
        *,
        token: str | None = None,
        key: Path | str | None = None,
        input: bytes | None = None,
        options: Sequence[str] = (),
        timeout: float = 30.0,
    ) -> subprocess.CompletedProcess[bytes]:
        """
        Run C{ssh login@gw command}: with C{key}, a certificate login,
        else the token (default: alice's) as the password.  stdin is
        C{input}, or empty.
        """
        return subprocess.run(
            self.ssh_argv(login, command, key=key, options=options),
            input=input if input is not None else b"",
            capture_output=True,
            timeout=timeout,
            env=self.client_env(token),
        )

    def ssh_process(
        self,
        login: str = DEFAULT_TARGET,
        command: str | None = None,
        *,
        token: str | None = None,
        key: Path | str | None = None,
        options: Sequence[str] = (),
    ) -> subprocess.Popen[bytes]:
        """
        Start C{ssh login@gw command} and return at once (stdin, stdout
        and stderr are pipes): for a command held for approval, or one the
        test stops.  The caller reaps it (C{communicate}, or C{kill} by pid).
        """
        return subprocess.Popen(
            self.ssh_argv(login, command, key=key, options=options),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=self.client_env(token),
        )

    def terminal(
        self,
        login: str = DEFAULT_TARGET,
        command: str | None = None,
        *,
        token: str | None = None,
        cols: int = 80,
        rows: int = 24,
    ) -> PtyClient:
        """
        C{ssh -tt login@gw [command]} on a pseudo-terminal of C{cols} x
        C{rows} (a L{PtyClient}: type, expect, resize); close it when done.
        """
        return PtyClient(
            self.ssh_argv(login, command, tty=True),
            cols=cols,
            rows=rows,
            env=self.client_env(token),
        )

    def sftp(
        self,
        batch: str,
        login: str = DEFAULT_TARGET,
        *,
        token: str | None = None,
        key: Path | str | None = None,
        timeout: float = 60.0,
    ) -> subprocess.CompletedProcess[bytes]:
        """Run C{sftp -b FILE} with the commands in C{batch}."""
        handle, path = tempfile.mkstemp(
            prefix="batch-", dir=self.client_directory, text=True
        )
        with os.fdopen(handle, "w") as f:
            f.write(batch)
        sftp = shutil.which("sftp") or "sftp"
        argv = [
            sftp,
            *self.client_options(key, port_flag="-P"),
            "-b",
            path,
            self.destination(login),
        ]
        try:
            return subprocess.run(
                argv,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                timeout=timeout,
                env=self.client_env(token),
            )
        finally:
            os.unlink(path)

    def ssh_cert(
        self,
        out: Path | str,
        *,
        token: str | None = None,
        targets: Sequence[str] = (),
        timeout: float = 60.0,
    ) -> subprocess.CompletedProcess[str]:
        """
        Run the real C{gatehouse ssh-cert} against the admin API: a new
        key at C{out} with C{out.pub} and C{out-cert.pub}.
        """
        argv = ["ssh-cert", "--gateway", self.admin_url, "--out", str(out)]
        for target in targets:
            argv += ["--target", target]
        env = {k: v for k, v in os.environ.items() if not k.startswith("GATEHOUSE_")}
        env["GATEHOUSE_TOKEN"] = self.token() if token is None else token
        return self.cli(*argv, config=False, env=env, timeout=timeout)


# ----------------------------------------------------------------------------
# one sshd and one gateway per test class

_running: dict[type, tuple[SSHServer, SSHGateway]] = {}


@atexit.register
def stop_all() -> None:
    """Stop every class's gateway and sshd (by pid) and remove their files."""
    while _running:
        _, (sshd, gateway) = _running.popitem()
        try:
            gateway.stop()
        finally:
            sshd.stop()
            shutil.rmtree(gateway.directory, ignore_errors=True)


class SSHGatewayTestCase(SynchronousTestCase):
    """
    Tests against one sshd and one gateway shared by the whole class,
    started by its first test and stopped (by pid) when the test process
    exits.  Override L{make_gateway} (and L{make_sshd}) to configure them.

    @ivar gateway: the class's L{SSHGateway}, running.
    @ivar sshd: its target server.
    """

    gateway: SSHGateway
    sshd: SSHServer
    #: timeouts of the clients these tests run (seconds)
    timeout: ClassVar[float] = 30.0

    @classmethod
    def make_sshd(cls) -> SSHServer:
        """The class's target server (not started)."""
        return SSHServer()

    @classmethod
    def make_gateway(cls, directory: str, sshd: SSHServer) -> SSHGateway:
        """The class's gateway, under C{directory}, in front of C{sshd}."""
        return SSHGateway(directory, sshd)

    def setUp(self) -> None:
        cls = type(self)
        if cls not in _running:
            sshd = cls.make_sshd()
            directory = tempfile.mkdtemp(prefix=f"gatehouse-ssh-{cls.__name__}-")
            try:
                gateway = cls.make_gateway(directory, sshd).start()
            except BaseException:
                sshd.stop()
                shutil.rmtree(directory, ignore_errors=True)
                raise
            _running[cls] = (sshd, gateway)
        self.sshd, self.gateway = _running[cls]

    def assertExit(
        self, result: subprocess.CompletedProcess[bytes], status: int
    ) -> None:
        """C{result} exited with C{status}; else fail showing both logs."""
        if result.returncode != status:
            self.fail(
                f"exit status {result.returncode}, not {status}\n"
                f"stdout: {result.stdout[-2000:]!r}\n"
                f"stderr: {result.stderr[-2000:]!r}\n"
                f"gateway log:\n{self.gateway.log()[-3000:]}"
            )
