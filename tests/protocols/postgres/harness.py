"""
A real gatehouse daemon in front of a real PostgreSQL, for end-to-end tests.

L{Gateway} writes a configuration (signing keys, a test CA and the
gateway's certificate, an ES256 issuer with a static JWKS, one target per
upstream authentication method), runs C{twistd -n gatehouse} as a child
process, and mints tokens.  Clients (psql, pgbench, psycopg) connect to it
exactly as users would.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time

import jwt
import yaml
from cryptography.hazmat.primitives.asymmetric import ec

from gatehouse._pgcluster import clean_env, free_port
from gatehouse.recording import keys as gkeys
from tests.fixtures.postgres import PostgresCluster
from tests.fixtures.tls import make_ca

ISSUER = "https://idp.gatehouse.test/realms/test"
AUDIENCE = "gatehouse"
GATEWAY_ID = "gw-e2e"


class Gateway:
    """
    One daemon process and everything it needs, under C{directory}.

    @ivar port: the PostgreSQL listener's port (TLS, plus cleartext allowed
        only when C{allow_cleartext}).
    """

    def __init__(
        self,
        directory: str,
        cluster: PostgresCluster | None,
        *,
        listeners: list[dict] | None = None,
        allow_cleartext: bool = False,
        seal_interval: str = "30s",
        extra_targets: list[dict] | None = None,
        extra_config: dict | None = None,
        admin: bool = False,
        plugin_args: tuple[str, ...] = (),
        listener_options: dict | None = None,
        python: str | None = None,
        pythonpath: str | None = None,
    ):
        self.directory = os.path.abspath(directory)
        self.cluster = cluster
        self.allow_cleartext = allow_cleartext
        self.seal_interval = seal_interval
        self.extra_targets = extra_targets or []
        self.extra_config = extra_config or {}
        #: listeners of other protocols (with a cluster of None: the only
        #: ones; the first one's port is L{port})
        self.extra_listeners = listeners or []
        #: more options of C{twistd gatehouse} (e.g. C{--log-format json})
        self.plugin_args = tuple(plugin_args)
        self.listener_options = listener_options or {}
        #: the interpreter that runs the daemon, and a source checkout to
        #: run it from (PYTHONPATH) instead of this one (bench/postgres.py
        #: compares two checkouts)
        self.python = python or sys.executable
        self.pythonpath = pythonpath
        self.admin_port = free_port() if admin else None
        self.process: subprocess.Popen | None = None
        self.port = (
            free_port() if cluster is not None else self.extra_listeners[0]["port"]
        )
        self._signing_key = ec.generate_private_key(ec.SECP256R1())
        os.makedirs(self.directory, exist_ok=True)
        self._write_files()

    # -- setup ---------------------------------------------------------------

    def path(self, *parts: str) -> str:
        """A path under the gateway's directory."""
        return os.path.join(self.directory, *parts)

    def _write_files(self) -> None:
        root = gkeys.generate_root_key()
        self.root_public = self.path("root.pub")
        gkeys.save_root_key(root, self.path("root.key"), self.root_public)
        now = time.time_ns()
        epoch = gkeys.issue_epoch_keys(
            root, GATEWAY_ID, now - 60 * 10**9, 3600 * 10**9, 4
        )
        gkeys.KeyDirectory(self.path("signing")).add(epoch)

        self.ca = make_ca(self.path("ca"))
        self.ca_cert = str(self.ca.cert_path)
        cert, key = (
            str(p) for p in self.ca.issue("localhost", directory=self.path("tls"))
        )

        jwk = json.loads(
            jwt.algorithms.ECAlgorithm.to_jwk(self._signing_key.public_key())
        )
        jwk.update(kid="test-key-1", use="sig", alg="ES256")
        with open(self.path("jwks.json"), "w") as f:
            json.dump({"keys": [jwk]}, f)

        for role in ("gw_scram", "gw_md5", "gw_clear"):
            if self.cluster is None:
                break
            with open(self.path(f"{role}.pw"), "w") as f:
                f.write(self.cluster.passwords[role] + "\n")

        def target(name: str, role: str, **options: object) -> dict:
            assert self.cluster is not None
            base = {
                "host": "127.0.0.1",
                "port": self.cluster.port,
                "database": "app",
                "user": role,
                "tls": {
                    "mode": "verify-full",
                    "ca_file": str(self.cluster.ca_cert_path),
                },
                "allow_groups": ["dba", "agents"],
            }
            if os.path.exists(self.path(f"{role}.pw")):
                base["password_file"] = self.path(f"{role}.pw")
            base.update(options)
            return {"name": name, "protocol": "postgres", "options": base}

        pg_targets = (
            [
                target("app", "gw_scram"),
                target("app_md5", "gw_md5", tls={"mode": "disable"}),
                target("app_clear", "gw_clear", tls={"mode": "disable"}),
                target("app_trust", "gw_trust", tls={"mode": "disable"}),
                target("ops_only", "gw_scram", allow_groups=["ops"]),
            ]
            if self.cluster is not None
            else []
        )
        config = {
            # Tests that stop the daemon with sessions open wait this long.
            "gateway": {"id": GATEWAY_ID, "shutdown_grace": "1s"},
            "identity": {
                "issuers": [
                    {
                        "issuer": ISSUER,
                        "audience": AUDIENCE,
                        "algorithms": ["ES256"],
                        "jwks_file": self.path("jwks.json"),
                        "groups_claim": "realm_access.roles",
                        "name_claim": "preferred_username",
                    }
                ]
            },
            "recording": {
                "directory": self.path("recordings"),
                "signing_keys": self.path("signing"),
                "root_public_keys": [self.root_public],
                "seal_interval": self.seal_interval,
            },
            "listeners": [
                *self.extra_listeners,
                {
                    "name": "pg",
                    "protocol": "postgres",
                    "address": "127.0.0.1",
                    "port": self.port,
                    "tls": {"certificate": cert, "key": key},
                    "options": {
                        "allow_cleartext": self.allow_cleartext,
                        **self.listener_options,
                    },
                },
            ],
            "targets": [*pg_targets, *self.extra_targets],
        }
        if self.cluster is None:
            config["listeners"] = self.extra_listeners
        if self.admin_port is not None:
            config["admin"] = {"address": "127.0.0.1", "port": self.admin_port}
        config.update(self.extra_config)
        self.config_path = self.path("gatehouse.yaml")
        with open(self.config_path, "w") as f:
            yaml.safe_dump(config, f)

    def token(
        self,
        subject: str = "alice",
        groups: tuple[str, ...] = ("dba",),
        lifetime: float = 600,
        **claims: object,
    ) -> str:
        """A token from the test issuer; a claim given as None is left out."""
        now = int(time.time())
        payload = {
            "iss": ISSUER,
            "aud": AUDIENCE,
            "sub": subject,
            "preferred_username": subject,
            "realm_access": {"roles": list(groups)},
            "iat": now,
            "exp": now + int(lifetime),
        }
        payload.update(claims)
        payload = {k: v for k, v in payload.items() if v is not None}
        return jwt.encode(
            payload, self._signing_key, algorithm="ES256", headers={"kid": "test-key-1"}
        )

    # -- process ---------------------------------------------------------------

    def start(self, timeout: float = 30.0) -> None:
        """Run the daemon; return once it accepts connections."""
        self.log_path = self.path("twistd.log")
        env = None
        if self.pythonpath is not None:
            env = dict(os.environ, PYTHONPATH=self.pythonpath)
        self.process = subprocess.Popen(
            [
                self.python,
                "-c",
                "from twisted.scripts.twistd import run; run()",
                "-n",
                "--pidfile=",
                f"--logfile={self.log_path}",
                "gatehouse",
                "--config",
                self.config_path,
                *self.plugin_args,
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=self.directory,
            env=env,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                _, err = self.process.communicate()
                raise RuntimeError(
                    f"gatehouse exited with {self.process.returncode}:\n"
                    f"{err.decode()}\n{self.log()}"
                )
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(
            f"gatehouse did not listen within {timeout} s:\n{self.log()}"
        )

    def stop(self, timeout: float = 20.0) -> int | None:
        """Stop the daemon by its pid (SIGTERM, then SIGKILL)."""
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return None if process is None else process.returncode
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        process.stdout.close()
        process.stderr.close()
        return process.returncode

    @property
    def admin_url(self) -> str:
        """The admin API's URL."""
        return f"http://127.0.0.1:{self.admin_port}"

    def log(self) -> str:
        """The daemon's log so far."""
        try:
            with open(self.log_path, encoding="utf-8", errors="replace") as f:
                return f.read()
        except (OSError, AttributeError):
            return ""

    # -- clients ---------------------------------------------------------------

    def conninfo(
        self, target: str = "app", sslmode: str = "verify-full", **kw: str
    ) -> str:
        """A libpq connection string to the gateway."""
        params = {
            "host": "localhost",
            "port": str(self.port),
            "dbname": target,
            "user": "alice",
            "sslmode": sslmode,
            "sslrootcert": self.ca_cert,
            "connect_timeout": "10",
        }
        params.update(kw)
        return " ".join(f"{k}={v}" for k, v in params.items())

    def psql(
        self,
        sql: str | None = None,
        *,
        token: str | None = None,
        target: str = "app",
        args: tuple[str, ...] = (),
        stdin: str | None = None,
        timeout: float = 60,
        sslmode: str = "verify-full",
        **conninfo: str,
    ) -> subprocess.CompletedProcess:
        """Run psql through the gateway (the token is the password)."""
        env = clean_env(PGPASSWORD=token if token is not None else self.token())
        command = [
            self.cluster.bin("psql"),
            "-X",
            "-v",
            "ON_ERROR_STOP=1",
            *args,
        ]
        if sql is not None:
            command += ["-c", sql]
        command.append(self.conninfo(target, sslmode, **conninfo))
        return subprocess.run(
            command,
            input=stdin,
            capture_output=True,
            text=True,
            env=env,
            timeout=timeout,
        )

    def recordings(self) -> list[str]:
        """Session directories recorded so far, oldest first."""
        root = self.path("recordings")
        found = []
        for day in sorted(os.listdir(root)) if os.path.isdir(root) else []:
            day_dir = os.path.join(root, day)
            if os.path.isdir(day_dir):
                found += [os.path.join(day_dir, s) for s in sorted(os.listdir(day_dir))]
        return found

    def anchors(self) -> gkeys.TrustAnchors:
        """The trust anchors that verify this gateway's recordings."""
        return gkeys.TrustAnchors.from_files([self.root_public])
