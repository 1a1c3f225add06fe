"""
End-to-end: how long a client's close takes through the gateway.

Each client connects through the gateway (TLS to the gateway, TLS to the
target), runs a query and closes; the close must take under L{LIMIT}
seconds (the same client's close straight to PostgreSQL is measured too,
for the message), the gateway's backend must be gone from
C{pg_stat_activity} (queried on the cluster) within L{LIMIT} after it, and
the session's close reason, in the index and in the recording, must be the
client's Terminate.

Clients: psql, psycopg (sync and async), asyncpg, node-postgres (the C{pg}
npm package, installed into a cache directory on first use) and pgjdbc, the
real JDBC driver (its jar from the cache directory, else from Maven
Central, else Debian's C{libpostgresql-jdbc-java}, installed with apt-get
as root), run by a small Java program compiled once per run.  asyncpg,
node-postgres and pgjdbc wait for the server to close after their
Terminate; asyncpg's close took exactly the gateway's 10 s close timeout
before the fix.

The cache directory is C{$GATEHOUSE_TEST_CACHE}, else
C{~/.cache/gatehouse-tests}.
"""

from __future__ import annotations

import asyncio
import atexit
import hashlib
import json
import os
import shutil
import ssl
import subprocess
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path

import asyncpg
import psycopg

from gatehouse._pgcluster import ClusterError, apt_install, clean_env, install_lock
from gatehouse.recording.index import get_session
from tests.protocols.postgres.harness import Gateway
from tests.protocols.postgres.test_e2e import GatewayTestCase
from tests.protocols.postgres.test_policy_e2e import MASKING_CONFIG

#: seconds a close, and the end of its backend, may take at most
LIMIT = 1.0
#: the close reason a client's Terminate leaves in the index and recording
TERMINATED = "client terminated the session"

PGJDBC_VERSION = "42.7.4"
PGJDBC_URL = (
    "https://repo1.maven.org/maven2/org/postgresql/postgresql/"
    f"{PGJDBC_VERSION}/postgresql-{PGJDBC_VERSION}.jar"
)
DEBIAN_PGJDBC = Path("/usr/share/java/postgresql.jar")

NODE_CLIENT = r"""
const { Client } = require('pg');
const fs = require('fs');
(async () => {
  const out = [];
  for (const cfg of JSON.parse(process.argv[process.argv.length - 1])) {
    cfg.ssl = { ca: fs.readFileSync(cfg.ssl), servername: 'localhost' };
    const client = new Client(cfg);
    await client.connect();
    await client.query('select 1 as one');
    const start = process.hrtime.bigint();
    await client.end();
    out.push(Number(process.hrtime.bigint() - start) / 1e9);
  }
  console.log(JSON.stringify(out));
})().catch((e) => { console.error(e); process.exit(1); });
"""

JAVA_CLIENT = r"""
import java.sql.*;
import java.util.Properties;

public class CloseTiming {
    // arguments: (url user password) repeated; prints the close times in s
    public static void main(String[] args) throws Exception {
        StringBuilder out = new StringBuilder("[");
        for (int i = 0; i < args.length; i += 3) {
            Properties props = new Properties();
            props.setProperty("user", args[i + 1]);
            props.setProperty("password", args[i + 2]);
            Connection conn = DriverManager.getConnection(args[i], props);
            try (Statement s = conn.createStatement();
                 ResultSet r = s.executeQuery("select 1")) {
                r.next();
            }
            long start = System.nanoTime();
            conn.close();
            out.append(i == 0 ? "" : ",").append((System.nanoTime() - start) / 1e9);
        }
        System.out.println(out.append("]"));
    }
}
"""


def cache_dir(*parts: str) -> Path:
    """A directory under the tests' download cache, created."""
    root = os.environ.get("GATEHOUSE_TEST_CACHE") or os.path.expanduser(
        "~/.cache/gatehouse-tests"
    )
    path = Path(root, *parts)
    path.mkdir(parents=True, exist_ok=True)
    return path


def _tool(name: str, package: str) -> str:
    """The path of program C{name}, installing Debian C{package} if missing."""
    found = shutil.which(name)
    if found is None:
        apt_install(package)
        found = shutil.which(name)
    if found is None:
        raise ClusterError(f"{name} is missing (Debian package {package})")
    return found


def node_modules() -> Path:
    """A node_modules directory holding the C{pg} package (node-postgres)."""
    _tool("node", "nodejs")
    npm = _tool("npm", "npm")
    directory = cache_dir("node")
    with install_lock("npm-pg"):
        _npm_install_pg(npm, directory)
    return directory / "node_modules"


def _npm_install_pg(npm: str, directory: Path) -> None:
    if not (directory / "node_modules" / "pg" / "package.json").exists():
        result = subprocess.run(
            [npm, "install", "--no-audit", "--no-fund", "--prefix", directory, "pg@8"],
            capture_output=True,
            text=True,
            timeout=300,
        )
        if result.returncode != 0:
            raise ClusterError(f"npm install pg failed:\n{result.stderr[-2000:]}")


def pgjdbc_jar() -> Path:
    """
    The pgjdbc driver's jar: cached, else from Maven Central (checked
    against its published SHA-1), else Debian's package.
    """
    _tool("java", "default-jdk-headless")
    with install_lock("pgjdbc"):
        return _pgjdbc_jar()


def _pgjdbc_jar() -> Path:
    cached = cache_dir("jdbc") / f"postgresql-{PGJDBC_VERSION}.jar"
    if cached.exists():
        return cached
    try:
        with urllib.request.urlopen(PGJDBC_URL, timeout=20) as response:
            jar = response.read()
        with urllib.request.urlopen(PGJDBC_URL + ".sha1", timeout=20) as response:
            sha1 = response.read().decode().split()[0]
    except OSError:
        pass  # unreachable: Debian's package below
    else:
        if hashlib.sha1(jar).hexdigest() != sha1:
            raise ClusterError(f"{PGJDBC_URL} does not match its SHA-1")
        partial = cached.with_suffix(".part")
        partial.write_bytes(jar)
        partial.rename(cached)
        return cached
    if not DEBIAN_PGJDBC.exists():
        apt_install("libpostgresql-jdbc-java")
    return DEBIAN_PGJDBC


_compiled: list[Path] = []


def java_client(jar: Path) -> Path:
    """The directory of the compiled JDBC client (compiled once per run)."""
    if not _compiled:
        directory = Path(tempfile.mkdtemp(prefix="gatehouse-jdbc-"))
        atexit.register(shutil.rmtree, directory, True)
        (directory / "CloseTiming.java").write_text(JAVA_CLIENT)
        javac = _tool("javac", "default-jdk-headless")
        result = subprocess.run(
            [javac, "-cp", str(jar), "-d", str(directory), "CloseTiming.java"],
            cwd=directory,
            capture_output=True,
            text=True,
            timeout=120,
        )
        if result.returncode != 0:
            raise ClusterError(f"javac failed:\n{result.stderr[-2000:]}")
        _compiled.append(directory)
    return _compiled[0]


class CloseTimingTests(GatewayTestCase):
    """Each client's close through the gateway is as quick as direct."""

    def setUp(self) -> None:
        super().setUp()
        self.monitor = psycopg.connect(self.cluster.socket_dsn(), autocommit=True)
        self.addCleanup(self.monitor.close)

    def app_name(self) -> str:
        return f"close-{uuid.uuid4().hex[:12]}"

    def direct_password(self) -> str:
        return self.cluster.passwords["gw_scram"]

    def check(self, start: float, app: str, through: float, direct: float) -> None:
        """
        The gateway close took C{through} s (C{direct} s straight to the
        cluster): quick; its backend is gone; the session ended by the
        client's Terminate, as the index and the recording say.
        """
        ended = time.monotonic()
        self.assertLess(
            through,
            LIMIT,
            f"close through the gateway took {through:.3f} s (direct: {direct:.3f} s)",
        )
        self.assertLess(through, direct + 0.5)
        while rows := self.monitor.execute(
            "select pid, state from pg_stat_activity where application_name = %s",
            (app,),
        ).fetchall():
            if time.monotonic() - ended > LIMIT:
                self.fail(f"backend of {app} still there after close: {rows}")
            time.sleep(0.01)
        row = self.latest_session(start)
        self.assertEqual(self.close_reason(row), TERMINATED)
        index = self.gateway.path("recordings", "index.sqlite3")
        self.assertEqual(get_session(index, row.id).close_reason, TERMINATED)
        self.transcript(row)  # the recording verifies

    # -- libpq ---------------------------------------------------------------

    def psql_close(self, conninfo: str, password: str) -> float:
        """An interactive psql runs a query; then its input ends: how long
        until it has exited."""
        psql = subprocess.Popen(
            [self.cluster.bin("psql"), "-X", "-q", "-A", "-t", conninfo],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=clean_env(PGPASSWORD=password),
        )
        try:
            psql.stdin.write(b"select 'up';\n")
            psql.stdin.flush()
            self.assertEqual(psql.stdout.readline().strip(), b"up")
            started = time.monotonic()
            psql.stdin.close()
            psql.wait(30)
            took = time.monotonic() - started
        finally:
            if psql.poll() is None:
                psql.kill()
                psql.wait()
            for pipe in (psql.stdin, psql.stdout, psql.stderr):
                pipe.close()
        self.assertEqual(psql.returncode, 0)
        return took

    def test_psql(self) -> None:
        app = self.app_name()
        direct = self.psql_close(
            self.cluster.dsn(sslmode="verify-full", application_name="direct"),
            self.direct_password(),
        )
        start = time.time()
        through = self.psql_close(
            self.gateway.conninfo(application_name=app), self.gateway.token()
        )
        self.check(start, app, through, direct)

    def psycopg_close(self, conninfo: str) -> float:
        conn = psycopg.connect(conninfo)
        conn.execute("select 1").fetchone()
        started = time.monotonic()
        conn.close()
        return time.monotonic() - started

    def test_psycopg(self) -> None:
        app = self.app_name()
        direct = self.psycopg_close(self.cluster.dsn(sslmode="verify-full"))
        start = time.time()
        through = self.psycopg_close(
            self.gateway.conninfo(application_name=app, password=self.gateway.token())
        )
        self.check(start, app, through, direct)

    def test_psycopg_async(self) -> None:
        async def close(conninfo: str) -> float:
            conn = await psycopg.AsyncConnection.connect(conninfo)
            await (await conn.execute("select 1")).fetchone()
            started = time.monotonic()
            await conn.close()
            return time.monotonic() - started

        app = self.app_name()
        direct = asyncio.run(close(self.cluster.dsn(sslmode="verify-full")))
        start = time.time()
        through = asyncio.run(
            close(
                self.gateway.conninfo(
                    application_name=app, password=self.gateway.token()
                )
            )
        )
        self.check(start, app, through, direct)

    # -- drivers of their own ------------------------------------------------

    def test_asyncpg(self) -> None:
        async def close(port: int, user: str, password: str, app: str, ca) -> float:
            conn = await asyncpg.connect(
                host="127.0.0.1",
                port=port,
                user=user,
                password=password,
                database="app",
                ssl=ssl.create_default_context(cafile=str(ca)),
                server_settings={"application_name": app},
            )
            await conn.fetchval("select 1")
            started = time.monotonic()
            await conn.close()
            return time.monotonic() - started

        app = self.app_name()
        direct = asyncio.run(
            close(
                self.cluster.port,
                "gw_scram",
                self.direct_password(),
                "direct",
                self.cluster.ca_cert_path,
            )
        )
        start = time.time()
        through = asyncio.run(
            close(
                self.gateway.port,
                "alice",
                self.gateway.token(),
                app,
                self.gateway.ca_cert,
            )
        )
        self.check(start, app, through, direct)

    def test_node_postgres(self) -> None:
        modules = node_modules()
        app = self.app_name()
        common = {"host": "127.0.0.1", "database": "app"}
        configs = [
            {
                **common,
                "port": self.cluster.port,
                "user": "gw_scram",
                "password": self.direct_password(),
                "application_name": "direct",
                "ssl": str(self.cluster.ca_cert_path),
            },
            {
                **common,
                "port": self.gateway.port,
                "user": "alice",
                "password": self.gateway.token(),
                "application_name": app,
                "ssl": self.gateway.ca_cert,
            },
        ]
        start = time.time()
        result = subprocess.run(
            ["node", "-e", NODE_CLIENT, json.dumps(configs)],
            capture_output=True,
            text=True,
            timeout=60,
            env=dict(clean_env(), NODE_PATH=str(modules)),
        )
        self.assertEqual(result.returncode, 0, result.stderr)
        direct, through = json.loads(result.stdout)
        self.check(start, app, through, direct)

    def test_jdbc(self) -> None:
        jar = pgjdbc_jar()
        classes = java_client(jar)
        app = self.app_name()

        def url(port: int, ca: str, name: str) -> str:
            return (
                f"jdbc:postgresql://localhost:{port}/app?sslmode=verify-full"
                f"&sslrootcert={ca}&ApplicationName={name}"
            )

        start = time.time()
        result = subprocess.run(
            [
                "java",
                "-cp",
                f"{jar}{os.pathsep}{classes}",
                "CloseTiming",
                url(self.cluster.port, str(self.cluster.ca_cert_path), "direct"),
                "gw_scram",
                self.direct_password(),
                url(self.gateway.port, self.gateway.ca_cert, app),
                "alice",
                self.gateway.token(),
            ],
            capture_output=True,
            text=True,
            timeout=120,
            env=clean_env(),
        )
        self.assertEqual(result.returncode, 0, result.stderr)
        direct, through = json.loads(result.stdout)
        self.check(start, app, through, direct)


class MaskedCloseTimingTests(CloseTimingTests):
    """
    The same with masking on, where the relay once missed the client's
    Terminate (and recorded "upstream connection lost").
    """

    def make_gateway(self, base: str) -> Gateway:
        return Gateway(base, self.cluster, extra_config=MASKING_CONFIG)
