"""
PostgreSQL through gatehouse, side by side with a direct connection and pgbouncer.

One run starts a throwaway PostgreSQL 15 cluster, pgbouncer (session
pooling) and the real gatehouse daemon (``twistd -n gatehouse`` as a child
process, recording every byte into signed segments), loads pgbench's tables
once (``pgbench -i -s SCALE``, directly), then runs ``pgbench -S`` (one
primary-key SELECT per transaction) for each query mode and client count
against each of the three, one after the other, and prints a table: TPS,
average latency, gatehouse's TPS relative to direct and to pgbouncer, the
latency gatehouse adds per query, and the CPU the proxy used (in all, and
per transaction: steadier than TPS on a shared machine).

    python bench/postgres.py [--seconds 10] [--modes simple,extended,prepared]
                             [--clients 1,8] [--scale 10] [--tls] [--upstream-tls]
                             [--compare-source DIR] [--profile] [--profile-dir DIR]

Besides those three, every run has a row for the bare Twisted relay of
``bench/relay_ceiling.py`` (bytes copied both ways, nothing parsed or
recorded; TLS, if any, is end to end between pgbench and PostgreSQL), and
every gatehouse row says its CPU per transaction as a multiple of that
relay's: the cost of what gatehouse does beyond moving bytes (the goal is
1.5x).  ``--compare-source DIR`` adds a row "gh-compare": the same daemon
and configuration run from another source checkout (``DIR/.venv/bin/python``
if there is one, else this interpreter, with ``PYTHONPATH=DIR``), so
"before" and "after" a change are rows of one run on one cluster.

Transport, by default the same for all three (apples to apples): no TLS
between pgbench and direct/pgbouncer/gatehouse (gatehouse's listener has
TLS but allows cleartext, which is meant for loopback) and none between the
proxies and PostgreSQL (gatehouse uses a target with ``tls: {mode:
disable}``).  ``--tls`` makes every client connection TLS
(``sslmode=require``: PostgreSQL's own TLS, pgbouncer's
``client_tls_*`` with a certificate from the test CA, gatehouse's listener
without cleartext).  ``--upstream-tls`` also makes pgbouncer and gatehouse
reach PostgreSQL over verify-full TLS, as a real deployment would.

``pgbench -j``: one thread per client up to the number of CPUs this process
may use (``-j 1`` for 1 client, ``-j 2`` for 8 clients on a 2-core
machine); ``--jobs`` overrides.  pgbench, the PostgreSQL backends and the
proxy share those cores, so at 8 clients every row is CPU-bound and the
ratios compare CPU cost per query.

``--repeat N`` measures every cell N times, every other round in reverse
order (so that no system gains from its place), and shows the median.
The machine is shared: single runs vary by 10-20 %; use ``--repeat 3``
or more before reading a ratio.

``--profile`` attaches ``py-spy record`` (``pip install py-spy``) to each
gatehouse daemon (without and with policy) during an extra, unmeasured
run at the largest client count of each mode, writes the samples
(collapsed stacks, one function per frame) and the top functions to
``--profile-dir`` and prints the top 25 by own time.

Every process the benchmark starts is stopped by its pid at the end, also
after an error, Ctrl-C or SIGTERM.  This is a benchmark, not a test.
"""

from __future__ import annotations

import argparse
import collections
import os
import platform
import re
import shlex
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # run as a script: make tests/ importable
    sys.path.insert(0, str(REPO))

import twisted  # noqa: E402

from tests.fixtures.pgbouncer import PgBouncer, pgbouncer_bin  # noqa: E402
from tests.fixtures.postgres import (  # noqa: E402
    PostgresCluster,
    chown_to_owner,
    clean_env,
    is_root,
    pid_alive,
)
from tests.protocols.postgres.harness import Gateway  # noqa: E402

SYSTEMS = ("direct", "pgbouncer", "relay", "gatehouse", "gh+policy")
#: "relay": bench/relay_ceiling.py's bare Twisted relay, the floor under
#: gatehouse's CPU per transaction.
RELAY = "relay"
#: "gh-compare": gatehouse from the checkout given by --compare-source.
COMPARE = "gh-compare"
#: gatehouse's CPU per transaction at most this multiple of the relay's
GOAL_RELAY_RATIO = 1.5
#: "gh+policy": a second gatehouse, the same but with a guardrail set and
#: masking rules that apply to pgbench's identity.
POLICY_CONFIG = {
    "policy": {
        "review": {"approvers": ["dba"], "timeout": "5m"},
        "rules": [
            # The shape of examples/gatehouse.yaml: categories, flags, a
            # schema rule and a function rule, all tried for every statement.
            {"name": "no-destructive", "category": ["destructive"], "action": "deny"},
            {
                "name": "no-unbounded-writes",
                "category": ["write"],
                "flag": ["no-where"],
                "action": "deny",
            },
            {"name": "no-copy-program", "flag": ["copy-program"], "action": "deny"},
            {"name": "no-server-files", "flag": ["server-file"], "action": "deny"},
            {"name": "no-kill", "function": ["pg_terminate_backend"], "action": "deny"},
            {
                "name": "audit-readonly",
                "schema": ["audit"],
                "category": ["write"],
                "action": "deny",
            },
            {"name": "review-ddl", "category": ["ddl"], "action": "review"},
        ],
    },
    "masking": [
        {
            "name": "pii",
            "detect": ["card", "email", "iban"],
            "columns": ["*password*", "ssn"],
            "relation_columns": ["public.pgbench_accounts.filler"],
        }
    ],
}
GOAL_POLICY_RATIO = 0.90  # gh+policy TPS >= 0.90 x gatehouse (recording only)
MODES = ("simple", "extended", "prepared")
#: The gatehouse target the benchmark adds (upstream TLS per --upstream-tls).
BENCH_TARGET = "bench"
DATABASE = "app"
ROLE = "gw_scram"

#: Goals printed next to the numbers.
GOAL_TPS_CLIENTS = 8
GOAL_TPS_RATIO = 0.85  # gatehouse TPS >= 0.85 x pgbouncer TPS at 8 clients
GOAL_LATENCY_CLIENTS = 1
GOAL_ADDED_US = 60.0  # gatehouse avg latency - direct avg latency, 1 client

#: postgresql.conf overrides: the fixture logs every statement and
#: connection, which would dominate a read-only benchmark; pgbench -s 10
#: (~160 MB) fits in shared_buffers.
PG_CONF = {
    "log_statement": "'none'",
    "log_connections": "off",
    "log_disconnections": "off",
    "shared_buffers": "256MB",
}


class BenchError(RuntimeError):
    """Something the benchmark needs failed; the message says what."""


def log(message: str) -> None:
    print(message, flush=True)


# --------------------------------------------------------------------------
# the three systems


class TLSBouncer(PgBouncer):
    """
    pgbouncer with optional client-side TLS (a certificate issued by the
    cluster's test CA) and optional verify-full TLS to PostgreSQL.
    """

    def __init__(
        self,
        cluster: PostgresCluster,
        *,
        tls_files: tuple[Path, Path] | None,
        upstream_tls: bool,
    ) -> None:
        super().__init__(cluster, user=ROLE, dbname=DATABASE)
        self.tls_files = tls_files
        self.upstream_tls = upstream_tls

    def _config(self) -> str:
        lines = [super()._config()]
        if self.tls_files is not None:
            cert, key = self.tls_files
            lines += [
                "client_tls_sslmode = require",
                f"client_tls_cert_file = {cert}",
                f"client_tls_key_file = {key}",
            ]
        if self.upstream_tls:
            lines += [
                "server_tls_sslmode = verify-full",
                f"server_tls_ca_file = {self.cluster.ca_cert_path}",
            ]
        return "\n".join(lines) + "\n"


@dataclass
class Endpoint:
    """How pgbench reaches one system."""

    name: str
    port: int
    user: str
    dbname: str
    sslmode: str
    password: object  # str, or a callable minting a fresh token
    password_label: str  # how the password is shown in printed commands
    pid: int | None  # the proxy's pid (for its CPU time), None for direct

    def secret(self) -> str:
        return self.password() if callable(self.password) else self.password


def bench_target(gateway_dir: Path, cluster: PostgresCluster, upstream_tls: bool):
    """The gatehouse target pgbench connects to (database name = target name)."""
    tls = (
        {"mode": "verify-full", "ca_file": str(cluster.ca_cert_path)}
        if upstream_tls
        else {"mode": "disable"}
    )
    return {
        "name": BENCH_TARGET,
        "protocol": "postgres",
        "options": {
            "host": "127.0.0.1",
            "port": cluster.port,
            "database": DATABASE,
            "user": ROLE,
            # written by Gateway for every role it knows
            "password_file": str(gateway_dir / f"{ROLE}.pw"),
            "tls": tls,
            "allow_groups": ["dba"],
        },
    }


# --------------------------------------------------------------------------
# pgbench


@dataclass
class Result:
    system: str
    mode: str
    clients: int
    tps: float
    latency_us: float
    #: the proxy's (user, system) CPU seconds per wall second (1.0 = one core)
    cpu: tuple[float, float] | None

    def cpu_per_tx(self) -> float | None:
        """The proxy's CPU microseconds per transaction."""
        if self.cpu is None or not self.tps:
            return None
        return 1e6 * sum(self.cpu) / self.tps

    def cpu_text(self) -> str:
        if self.cpu is None:
            return ""
        user, system = self.cpu
        per_tx = self.cpu_per_tx() or 0.0
        return (
            f"{100 * (user + system):.0f}% (sys {100 * system:.0f}%) {per_tx:.0f} µs/tx"
        )


def pgbench_command(
    endpoint: Endpoint, args: list[str]
) -> tuple[list[str], dict[str, str], str]:
    """argv, environment and a printable form of one pgbench invocation."""
    argv = [
        PostgresCluster.bin("pgbench"),
        "-h",
        "127.0.0.1",
        "-p",
        str(endpoint.port),
        "-U",
        endpoint.user,
        *args,
        endpoint.dbname,
    ]
    env = clean_env(
        PGSSLMODE=endpoint.sslmode,
        PGCONNECT_TIMEOUT="10",
        PGPASSWORD=endpoint.secret(),
    )
    shown = (
        f"PGSSLMODE={endpoint.sslmode} PGPASSWORD=<{endpoint.password_label}> "
        + shlex.join(argv)
    )
    return argv, env, shown


def cpu_seconds(pid: int | None) -> tuple[float, float] | None:
    """User and system CPU time of a process (all its threads)."""
    if pid is None or not pid_alive(pid):
        return None
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    tick = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / tick, int(fields[12]) / tick


def run_pgbench(
    endpoint: Endpoint, args: list[str], timeout: float, what: str
) -> tuple[str, tuple[float, float] | None]:
    """Run pgbench; return its output and the proxy's CPU use during the run."""
    argv, env, shown = pgbench_command(endpoint, args)
    log(f"$ {shown}")
    cpu_before = cpu_seconds(endpoint.pid)
    began = time.monotonic()
    result = subprocess.run(
        argv, env=env, capture_output=True, text=True, timeout=timeout
    )
    wall = time.monotonic() - began
    cpu_after = cpu_seconds(endpoint.pid)
    output = result.stdout + result.stderr
    if result.returncode != 0:
        raise BenchError(
            f"pgbench against {endpoint.name} ({what}) exited {result.returncode}:\n"
            f"{output.strip()}"
        )
    cpu = None
    if cpu_before is not None and cpu_after is not None:
        cpu = (
            (cpu_after[0] - cpu_before[0]) / wall,
            (cpu_after[1] - cpu_before[1]) / wall,
        )
    return output, cpu


def parse_pgbench(output: str, endpoint: str) -> tuple[float, float]:
    """TPS (without connection time) and average latency in µs."""
    tps = re.search(r"^tps = ([\d.]+) \(without initial conn", output, re.M)
    latency = re.search(r"^latency average = ([\d.]+) ms", output, re.M)
    failed = re.search(r"^number of failed transactions: (\d+)", output, re.M)
    if tps is None or latency is None:
        raise BenchError(f"cannot read pgbench's output for {endpoint}:\n{output}")
    if failed is not None and int(failed.group(1)):
        raise BenchError(f"{failed.group(1)} failed transactions via {endpoint}")
    return float(tps.group(1)), float(latency.group(1)) * 1000.0


def jobs_for(clients: int, override: int | None) -> int:
    """pgbench threads: one per client, at most one per usable CPU."""
    if override is not None:
        return min(clients, override)
    return max(1, min(clients, len(os.sched_getaffinity(0))))


def measure(
    endpoint: Endpoint, mode: str, clients: int, args: argparse.Namespace
) -> Result:
    run_args = [
        "-n",  # tables were vacuumed by -i; no VACUUM through the proxies
        "-S",
        "-M",
        mode,
        "-c",
        str(clients),
        "-j",
        str(jobs_for(clients, args.jobs)),
        "-T",
        str(args.seconds),
    ]
    if args.rate:
        run_args += ["-R", str(args.rate)]
    output, cpu = run_pgbench(
        endpoint, run_args, args.seconds + 120, f"{mode}, {clients} clients"
    )
    tps, latency = parse_pgbench(output, endpoint.name)
    return Result(endpoint.name, mode, clients, tps, latency, cpu)


# --------------------------------------------------------------------------
# profiling


def start_profiler(pid: int, output: Path, seconds: int) -> subprocess.Popen:
    """py-spy sampling the gatehouse daemon (all threads) for ``seconds``."""
    pyspy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not os.access(pyspy, os.X_OK):
        raise BenchError("--profile needs py-spy: pip install py-spy")
    argv = [
        pyspy,
        "record",
        "--pid",
        str(pid),
        "--duration",
        str(seconds),
        "--rate",
        "200",
        "--function",  # aggregate by function, not by line
        "--idle",  # see WAITING
        "--format",
        "raw",
        "--output",
        str(output),
    ]
    log(f"$ {shlex.join(argv)}")
    return subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )


_FRAME = re.compile(r"^(?P<function>.*) \((?P<file>.*?)(?::(?P<line>\d+))?\)$")


def short_path(path: str) -> str:
    for prefix in (str(REPO) + "/", "/site-packages/", "/lib/python3"):
        if prefix in path:
            return path.split(prefix, 1)[1]
    return path


#: Leaf frames where a thread waits rather than works: the reactor in
#: epoll_wait, thread pool workers on their queue.  py-spy's own idle
#: detection misses the latter, so the profile samples idle threads too
#: (--idle) and this leaves them out of the table.
WAITING = ("EPollReactor.doPoll", "Condition.wait", "Event.wait")


def _frame_name(frame: str) -> str:
    m = _FRAME.match(frame)
    if m is None:
        return frame
    return f"{m['function']} ({short_path(m['file'])}:{m['line'] or '?'})"


def top_functions(collapsed: Path, count: int = 25) -> str:
    """
    The ``count`` functions with the most own samples while working, and
    how busy the reactor thread and the worker threads were.
    """
    own: collections.Counter[str] = collections.Counter()
    total: collections.Counter[str] = collections.Counter()
    threads: collections.Counter[tuple[str, bool]] = collections.Counter()
    for line in collapsed.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        if not stack or not n.isdigit():
            continue
        frames = [_frame_name(f) for f in stack.split(";")]
        kind = "reactor" if any("mainLoop" in f for f in frames) else "workers"
        waiting = frames[-1].split(" (", 1)[0] in WAITING
        threads[kind, waiting] += int(n)
        if waiting:
            continue
        own[frames[-1]] += int(n)
        for name in set(frames):
            total[name] += int(n)
    busy = sum(own.values())
    if not busy:
        return "(no busy samples: was the daemon under load?)"
    rows = []
    for kind, label in (("reactor", "reactor thread"), ("workers", "other threads")):
        working, idle = threads[kind, False], threads[kind, True]
        if working + idle:
            rows.append(
                f"{label}: "
                f"{working} samples working, {idle} waiting "
                f"({100 * working / (working + idle):.0f}% busy)"
            )
    rows.append(f"{'own %':>6} {'total %':>7}  function (file:first line)")
    for name, n in own.most_common(count):
        own_pct, total_pct = 100 * n / busy, 100 * total[name] / busy
        rows.append(f"{own_pct:6.1f} {total_pct:7.1f}  {name}")
    rows.append(
        f"(% of {busy} working samples, all threads; a C call such as "
        "socket.send counts as its Python caller's own time)"
    )
    return "\n".join(rows)


def profile(
    gatehouse: Endpoint, mode: str, clients: int, args: argparse.Namespace
) -> None:
    assert gatehouse.pid is not None
    name = gatehouse.name.replace("+", "-")
    out = Path(args.profile_dir) / f"{name}-{mode}-c{clients}.collapsed"
    out.parent.mkdir(parents=True, exist_ok=True)
    log(f"\nprofiling {gatehouse.name}, {mode}, {clients} clients (not a measured run)")
    profiler = start_profiler(gatehouse.pid, out, args.seconds)
    _children.append(profiler)
    try:
        time.sleep(0.5)  # let py-spy attach before the load starts
        result = measure(gatehouse, mode, clients, args)
        text, _ = profiler.communicate(timeout=args.seconds + 60)
    finally:
        stop_process(profiler)
    if not out.exists():
        raise BenchError(f"py-spy wrote no profile:\n{text}")
    table = top_functions(out)
    out.with_suffix(".top.txt").write_text(table + "\n")
    log(
        f"profiled run: {result.tps:,.0f} TPS (slowed by sampling)\n"
        f"samples: {out}\ntop 25 by own time ({out.with_suffix('.top.txt')}):\n"
        f"{table}"
    )


# --------------------------------------------------------------------------
# reporting


def versions(args: argparse.Namespace) -> list[str]:
    def first_line(argv: list[str]) -> str:
        try:
            out = subprocess.run(argv, capture_output=True, text=True, timeout=30)
            return (out.stdout or out.stderr).strip().splitlines()[0]
        except (OSError, IndexError, subprocess.SubprocessError) as e:
            return f"? ({e})"

    cpu = "?"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    rev = first_line(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"])
    dirty = subprocess.run(
        ["git", "-C", str(REPO), "status", "--porcelain", "--", "gatehouse"],
        capture_output=True,
        text=True,
    ).stdout.strip()
    lines = [
        f"machine: nproc {os.cpu_count()} (usable {len(os.sched_getaffinity(0))}), "
        f"{cpu}, {platform.system()} {platform.release()}",
        f"gatehouse: {rev}{' + uncommitted changes' if dirty else ''}; "
        f"python {platform.python_version()}, Twisted {twisted.__version__}, "
        f"{ssl.OPENSSL_VERSION}",
        f"{first_line([PostgresCluster.bin('postgres'), '--version'])}; "
        f"{first_line([PostgresCluster.bin('pgbench'), '--version'])}; "
        f"{first_line([pgbouncer_bin(), '--version'])}",
    ]
    if args.compare_source:
        found = subprocess.run(
            ["git", "-C", args.compare_source, "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
        )
        other = found.stdout.strip() if found.returncode == 0 else "(no git)"
        lines.append(
            f"gh-compare: gatehouse from {args.compare_source} at {other}, "
            f"run by {compare_python(args.compare_source)}"
        )
    if args.profile:
        pyspy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
        lines.append(f"profiler: {first_line([pyspy, '--version'])}")
    return lines


def compare_python(source: str) -> str:
    """The interpreter that runs the gatehouse of another checkout."""
    venv = Path(source) / ".venv" / "bin" / "python"
    return str(venv) if venv.exists() else sys.executable


def start_relay(cluster: PostgresCluster) -> tuple[subprocess.Popen, int]:
    """bench/relay_ceiling.py's Twisted relay in front of C{cluster}."""
    import bench.relay_ceiling as ceiling

    port = ceiling.free_port()
    relay = subprocess.Popen(
        [
            sys.executable,
            str(REPO / "bench" / "relay_ceiling.py"),
            "--relay",
            "twisted",
            str(port),
            str(cluster.port),
        ]
    )
    deadline = time.monotonic() + 20
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return relay, port
        except OSError:
            if relay.poll() is not None or time.monotonic() > deadline:
                stop_process(relay)
                raise BenchError(f"the relay did not listen on {port}") from None
            time.sleep(0.05)


def goal(met: bool) -> str:
    return "met" if met else "NOT MET"


def median_runs(results: list[Result]) -> dict[tuple[str, int, str], Result]:
    """The run with the median TPS of each (mode, clients, system)."""
    groups: dict[tuple[str, int, str], list[Result]] = collections.defaultdict(list)
    for r in results:
        groups[r.mode, r.clients, r.system].append(r)
    return {
        key: sorted(runs, key=lambda r: r.tps)[(len(runs) - 1) // 2]
        for key, runs in groups.items()
    }


def relay_multiple(r: Result, relay: Result | None) -> float | None:
    """C{r}'s CPU per transaction as a multiple of the bare relay's."""
    if r.system == RELAY or relay is None:
        return None
    mine, floor = r.cpu_per_tx(), relay.cpu_per_tx()
    if mine is None or not floor:
        return None
    return mine / floor


def summary(results: list[Result], args: argparse.Namespace) -> str:
    """
    Per cell: gatehouse's CPU per transaction as a multiple of the relay's,
    and of the compared checkout's (the change's cost, < 1: cheaper).
    """
    by_key = median_runs(results)
    rows = []
    for mode in args.modes:
        for clients in args.clients:
            gh = by_key.get((mode, clients, "gatehouse"))
            relay = by_key.get((mode, clients, RELAY))
            if gh is None or gh.cpu_per_tx() is None:
                continue
            parts = []
            multiple = relay_multiple(gh, relay)
            if multiple is not None:
                parts.append(
                    f"{gh.cpu_per_tx():.0f} µs/tx = {multiple:.2f} x the bare "
                    f"Twisted relay ({relay.cpu_per_tx():.0f} µs/tx; goal "
                    f"{GOAL_RELAY_RATIO} x)"
                )
            other = by_key.get((mode, clients, COMPARE))
            if other is not None and other.cpu_per_tx():
                before = relay_multiple(other, relay)
                parts.append(
                    f"{gh.cpu_per_tx() / other.cpu_per_tx():.2f} x gh-compare "
                    f"({other.cpu_per_tx():.0f} µs/tx"
                    + (f" = {before:.2f} x relay" if before is not None else "")
                    + ")"
                )
            if parts:
                rows.append(f"{mode} {clients} clients: gatehouse " + "; ".join(parts))
    return "\n".join(rows)


def table(results: list[Result], args: argparse.Namespace) -> str:
    by_key = median_runs(results)
    header = (
        f"{'mode':<9}{'clients':>7} {'-j':>3}  {'system':<10}{'TPS':>10}"
        f"{'avg lat µs':>11}{'+µs vs direct':>14}{'proxy CPU':>27}"
        f"{'gh/direct':>10}{'gh/pgb':>8}  goal"
    )
    rows = [header, "-" * len(header)]
    for mode in args.modes:
        for clients in args.clients:
            direct = by_key.get((mode, clients, "direct"))
            bouncer = by_key.get((mode, clients, "pgbouncer"))
            relay = by_key.get((mode, clients, RELAY))
            for system in args.systems:
                r = by_key.get((mode, clients, system))
                if r is None:
                    continue
                added = (
                    f"{r.latency_us - direct.latency_us:+.0f}"
                    if direct is not None and system != "direct"
                    else ""
                )
                cpu = r.cpu_text()
                ratios = note = ""
                plain = by_key.get((mode, clients, "gatehouse"))
                if args.rate:
                    pass  # a fixed rate: the goals (TPS ratios) do not apply
                elif system == "gh+policy" and plain is not None:
                    vs_plain = r.tps / plain.tps
                    note = (
                        f"{vs_plain:.2f} x gatehouse without policy; >= "
                        f"{GOAL_POLICY_RATIO}: {goal(vs_plain >= GOAL_POLICY_RATIO)}"
                    )
                if system == "gatehouse" and direct and bouncer and not args.rate:
                    vs_direct = r.tps / direct.tps
                    vs_bouncer = r.tps / bouncer.tps
                    ratios = f"{vs_direct:10.2f}{vs_bouncer:8.2f}"
                    notes = []
                    if clients == GOAL_TPS_CLIENTS:
                        notes.append(
                            f"TPS >= {GOAL_TPS_RATIO} x pgbouncer: "
                            f"{goal(vs_bouncer >= GOAL_TPS_RATIO)}"
                        )
                    if clients == GOAL_LATENCY_CLIENTS:
                        delta = r.latency_us - direct.latency_us
                        notes.append(
                            f"added < {GOAL_ADDED_US:.0f} µs: "
                            f"{goal(delta < GOAL_ADDED_US)}"
                        )
                    note = "; ".join(notes)
                multiple = relay_multiple(r, relay)
                if multiple is not None and system not in ("direct", "pgbouncer"):
                    note = "; ".join(
                        n
                        for n in (
                            f"CPU/tx {multiple:.2f} x relay"
                            + (
                                f" (<= {GOAL_RELAY_RATIO}: "
                                f"{goal(multiple <= GOAL_RELAY_RATIO)})"
                                if system == "gatehouse"
                                else ""
                            ),
                            note,
                        )
                        if n
                    )
                rows.append(
                    f"{mode:<9}{clients:>7} {jobs_for(clients, args.jobs):>3}  "
                    f"{system:<10}{r.tps:>10,.0f}{r.latency_us:>11,.0f}"
                    f"{added:>14}{cpu:>27}{ratios:<18}  {note}".rstrip()
                )
            rows.append("")
    return "\n".join(rows).rstrip()


# --------------------------------------------------------------------------
# process bookkeeping

_children: list[subprocess.Popen] = []


def stop_process(process: subprocess.Popen) -> None:
    """Stop one child by its pid (SIGTERM, then SIGKILL) and reap it."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _terminated(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


# --------------------------------------------------------------------------
# main


def csv_list(kind: type, allowed: tuple[str, ...] | None = None):
    def parse(text: str) -> list:
        values = [kind(v) for v in text.split(",") if v.strip()]
        if not values:
            raise argparse.ArgumentTypeError("give at least one value")
        for v in values:
            if allowed is not None and v not in allowed:
                raise argparse.ArgumentTypeError(
                    f"{v!r} is not one of {', '.join(allowed)}"
                )
            if kind is int and v < 1:
                raise argparse.ArgumentTypeError("client counts must be >= 1")
        return values

    return parse


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.strip().split("\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--seconds", type=int, default=10, help="per run (pgbench -T)")
    parser.add_argument(
        "--modes",
        type=csv_list(str, MODES),
        default=["simple"],
        help="pgbench -M values, comma separated (default simple)",
    )
    parser.add_argument(
        "--clients", type=csv_list(int), default=[1, 8], help="default 1,8"
    )
    parser.add_argument("--scale", type=int, default=10, help="pgbench -i -s")
    parser.add_argument(
        "--jobs", type=int, default=None, help="max pgbench -j (default: CPUs)"
    )
    parser.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="rounds of every system per cell (every other one in reverse "
        "order); the table shows the median run",
    )
    parser.add_argument(
        "--warmup", type=int, default=2, help="seconds of unmeasured load first"
    )
    parser.add_argument(
        "--rate",
        type=int,
        default=None,
        help="pgbench -R: a fixed rate (transactions per second), so that "
        "the proxies' CPU per transaction compares at equal load",
    )
    parser.add_argument(
        "--tls", action="store_true", help="sslmode=require for all three"
    )
    parser.add_argument(
        "--upstream-tls",
        action="store_true",
        help="pgbouncer and gatehouse reach PostgreSQL over verify-full TLS",
    )
    parser.add_argument(
        "--compare-source",
        metavar="DIR",
        default=None,
        help="also run gatehouse from this source checkout (row gh-compare): "
        "DIR/.venv/bin/python if it exists, with PYTHONPATH=DIR",
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="py-spy both gatehouse daemons during an extra run each at the "
        "largest client count",
    )
    parser.add_argument(
        "--profile-dir",
        default=os.path.join(tempfile.gettempdir(), "gatehouse-bench-profile"),
        help="where profiles go (default %(default)s)",
    )
    parser.add_argument(
        "--keep",
        action="store_true",
        help="keep the working directory (gatehouse config, log, recordings)",
    )
    return parser.parse_args(argv)


def run(args: argparse.Namespace, workdir: Path, stack: list) -> None:
    """Start everything (pushing a stopper per process onto ``stack``) and run."""
    log("\n".join(versions(args)))
    sslmode = "require" if args.tls else "disable"
    log(
        f"transport: client side {'TLS (sslmode=require)' if args.tls else 'no TLS'}; "
        f"proxies to PostgreSQL {'verify-full TLS' if args.upstream_tls else 'no TLS'}"
    )

    began = time.monotonic()
    cluster = PostgresCluster(extra_conf=PG_CONF)
    stack.append(cluster.stop)
    cluster.start()
    log(f"PostgreSQL on port {cluster.port}, pid {cluster.pid}")

    tls_files = None
    if args.tls:
        tls_dir = workdir / "pgbouncer-tls"
        tls_dir.mkdir()
        chown_to_owner(tls_dir)
        assert cluster.ca is not None
        tls_files = cluster.ca.issue(
            "localhost", directory=tls_dir, owner="postgres" if is_root() else None
        )
    bouncer = TLSBouncer(cluster, tls_files=tls_files, upstream_tls=args.upstream_tls)
    stack.append(bouncer.stop)
    bouncer.start()
    log(f"pgbouncer on port {bouncer.port}, pid {bouncer.pid}")

    args.systems = SYSTEMS + ((COMPARE,) if args.compare_source else ())
    relay, relay_port = start_relay(cluster)
    stack.append(lambda: stop_process(relay))
    log(f"bare Twisted relay on port {relay_port}, pid {relay.pid}")

    gateway_dir = workdir / "gatehouse"
    gateway = Gateway(
        str(gateway_dir),
        cluster,
        allow_cleartext=not args.tls,
        extra_targets=[bench_target(gateway_dir, cluster, args.upstream_tls)],
    )
    stack.append(gateway.stop)
    gateway.start()
    assert gateway.process is not None
    policy_dir = workdir / "gatehouse-policy"
    policed = Gateway(
        str(policy_dir),
        cluster,
        allow_cleartext=not args.tls,
        extra_targets=[bench_target(policy_dir, cluster, args.upstream_tls)],
        extra_config=POLICY_CONFIG,
    )
    stack.append(policed.stop)
    policed.start()
    assert policed.process is not None
    log(f"gatehouse with policy and masking on port {policed.port}")
    compared = None
    if args.compare_source:
        compare_dir = workdir / "gatehouse-compare"
        compared = Gateway(
            str(compare_dir),
            cluster,
            allow_cleartext=not args.tls,
            extra_targets=[bench_target(compare_dir, cluster, args.upstream_tls)],
            python=compare_python(args.compare_source),
            pythonpath=str(Path(args.compare_source).resolve()),
        )
        stack.append(compared.stop)
        compared.start()
        assert compared.process is not None
        log(
            f"gatehouse from {args.compare_source} on port {compared.port}, "
            f"pid {compared.process.pid}"
        )
    log(
        f"gatehouse on port {gateway.port}, pid {gateway.process.pid}, "
        f"config {gateway.config_path}, recordings under {gateway.path('recordings')}"
    )

    password = cluster.passwords[ROLE]
    endpoints = {
        "direct": Endpoint(
            "direct",
            cluster.port,
            ROLE,
            DATABASE,
            sslmode,
            password,
            f"{ROLE}'s password",
            None,
        ),
        "pgbouncer": Endpoint(
            "pgbouncer",
            bouncer.port,
            ROLE,
            DATABASE,
            sslmode,
            password,
            f"{ROLE}'s password",
            bouncer.pid,
        ),
        RELAY: Endpoint(
            RELAY,
            relay_port,
            ROLE,
            DATABASE,
            sslmode,
            password,
            f"{ROLE}'s password",
            relay.pid,
        ),
        "gatehouse": Endpoint(
            "gatehouse",
            gateway.port,
            "alice",
            BENCH_TARGET,
            sslmode,
            lambda: gateway.token(lifetime=3600),
            "a fresh JWT for alice",
            gateway.process.pid,
        ),
        "gh+policy": Endpoint(
            "gh+policy",
            policed.port,
            "alice",
            BENCH_TARGET,
            sslmode,
            lambda: policed.token(lifetime=3600),
            "a fresh JWT for alice",
            policed.process.pid,
        ),
    }
    if compared is not None:
        endpoints[COMPARE] = Endpoint(
            COMPARE,
            compared.port,
            "alice",
            BENCH_TARGET,
            sslmode,
            lambda: compared.token(lifetime=3600),
            "a fresh JWT for alice",
            compared.process.pid,
        )

    log(f"\ninitialising (scale {args.scale}), directly:")
    run_pgbench(endpoints["direct"], ["-i", "-s", str(args.scale), "-q"], 900, "init")
    for endpoint in endpoints.values():  # fail early, with the error
        run_pgbench(endpoint, ["-n", "-S", "-t", "10"], 60, "check")
    if args.warmup:
        log("\nwarming up (not measured):")
        for endpoint in endpoints.values():
            run_pgbench(
                endpoint,
                [
                    "-n",
                    "-S",
                    "-c",
                    "2",
                    "-j",
                    str(jobs_for(2, args.jobs)),
                    "-T",
                    str(args.warmup),
                ],
                args.warmup + 60,
                "warm-up",
            )
    log(f"ready after {time.monotonic() - began:.0f} s\n\nmeasured runs:")

    results = []
    for mode in args.modes:
        for clients in args.clients:
            for round_ in range(args.repeat):
                # Every other round runs the systems in reverse, so that
                # none gains from its place (caches, a neighbour's flush).
                systems = args.systems
                for system in systems if round_ % 2 == 0 else systems[::-1]:
                    r = measure(endpoints[system], mode, clients, args)
                    results.append(r)
                    cpu = f", proxy CPU {r.cpu_text()}" if r.cpu else ""
                    log(f"  -> {r.tps:,.0f} TPS, {r.latency_us:,.0f} µs{cpu}")

    log(
        f"\npgbench -S, {args.seconds} s per run"
        f"{f', median of {args.repeat} rounds' if args.repeat > 1 else ''}, "
        f"scale {args.scale}, "
        f"client side {'TLS' if args.tls else 'no TLS'}, upstream "
        f"{'TLS' if args.upstream_tls else 'no TLS'}, gatehouse recording on; "
        "proxy CPU = proxy process CPU time / wall time (100% = one core), "
        "and per transaction\n"
    )
    log(table(results, args))
    text = summary(results, args)
    if text:
        log("\n" + text)

    if args.profile:
        for mode in args.modes:
            for system in ("gatehouse", "gh+policy"):
                profile(endpoints[system], mode, max(args.clients), args)

    text = gateway.log()
    if "Traceback" in text:
        first = text.index("Traceback")
        excerpt = text[max(0, text.rfind("\n", 0, first - 200)) : first + 2500]
        log(
            f"\nnote: the gatehouse log has {text.count('Traceback')} tracebacks, "
            f"the first:\n{excerpt.strip()}"
        )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _terminated)
    workdir = Path(tempfile.mkdtemp(prefix="gatehouse-bench-pg-"))
    os.chmod(workdir, 0o755)  # pgbouncer (the postgres user) reads files here
    stack: list = []
    status = 0
    try:
        run(args, workdir, stack)
    except KeyboardInterrupt:
        log("\ninterrupted")
        status = 130
    except BenchError as e:
        log(f"\nerror: {e}")
        status = 1
    except Exception:
        traceback.print_exc()
        status = 1
    finally:
        # Finish cleaning up even if Ctrl-C is pressed again.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        for process in _children:
            stop_process(process)
        for stop in reversed(stack):  # gatehouse, pgbouncer, PostgreSQL
            try:
                stop()
            except Exception as e:
                log(f"cleanup: {stop.__qualname__}: {e}")
        if status and (workdir / "gatehouse" / "twistd.log").exists():
            tail = (workdir / "gatehouse" / "twistd.log").read_text()[-3000:]
            log(f"\n--- gatehouse log (tail) ---\n{tail}")
        if args.keep:
            log(f"kept {workdir} (config, logs, recordings)")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    return status


if __name__ == "__main__":
    sys.exit(main())
