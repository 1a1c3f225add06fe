"""
What idle unauthenticated connections cost the gateway, and what they cost
a well-behaved client.

One run starts a throwaway PostgreSQL 15 cluster and the real gatehouse
daemon (caps raised above the held count, a long login timeout), then:

1. reads the daemon's VmRSS (/proc/PID/status) and open descriptors
   (/proc/PID/fd), opens N idle TCP connections that send nothing (each
   confirmed accepted by the daemon through the descriptor count), reads
   both again: the cost per idle pre-auth connection;
2. times a well-behaved client's connect + ``select 1`` + close (psycopg,
   TLS verify-full, a fresh connection each time) R times with the N
   connections held, and R times with none: median and p95 of each.

    python bench/preauth.py [--connections 500] [--rounds 30] [--tls-idle]

``--tls-idle`` makes every held connection finish a TLS handshake first
(SSLRequest, then TLS) before it goes idle.

Every process the benchmark starts is stopped by its pid at the end.
This is a benchmark, not a test.
"""

from __future__ import annotations

import argparse
import shutil
import socket
import ssl
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # run as a script: make tests/ importable
    sys.path.insert(0, str(REPO))

import psycopg  # noqa: E402

from gatehouse.protocols.postgres import codec  # noqa: E402
from tests.fixtures.postgres import PostgresCluster  # noqa: E402
from tests.protocols.postgres.harness import Gateway  # noqa: E402


def status(pid: int) -> tuple[int, int]:
    """The process's VmRSS (KiB) and open descriptors."""
    rss = 0
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1])
    return rss, len(list(Path(f"/proc/{pid}/fd").iterdir()))


def client_round(gateway: Gateway, token: str) -> float:
    """Seconds for connect + select 1 + close."""
    start = time.perf_counter()
    with psycopg.connect(gateway.conninfo(password=token)) as conn:
        conn.execute("select 1").fetchone()
    return time.perf_counter() - start


def timings(gateway: Gateway, rounds: int) -> tuple[float, float]:
    """Median and p95 (ms) of L{client_round}."""
    token = gateway.token()
    client_round(gateway, token)  # warm up (JWKS, catalog, caches)
    samples = sorted(client_round(gateway, token) * 1000 for _ in range(rounds))
    return statistics.median(samples), samples[int(0.95 * (len(samples) - 1))]


def hold(gateway: Gateway, count: int, tls: bool) -> list[socket.socket]:
    """C{count} idle connections, from 127.0.0.2 up (per-address caps)."""
    held = []
    ctx = ssl.create_default_context(cafile=gateway.ca_cert) if tls else None
    for n in range(count):
        sock = socket.socket()
        sock.bind((f"127.0.{2 + n // 200}.{2 + n % 200}", 0))
        sock.connect(("127.0.0.1", gateway.port))
        if ctx is not None:
            sock.sendall(codec.SSLRequest().encode())
            assert sock.recv(1) == b"S"
            sock = ctx.wrap_socket(sock, server_hostname="localhost")
        held.append(sock)
    return held


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--connections", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--tls-idle", action="store_true")
    args = parser.parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="gatehouse-bench-preauth-"))
    cluster = PostgresCluster()
    gateway = None
    held: list[socket.socket] = []
    try:
        cluster.start()
        gateway = Gateway(
            str(workdir / "gw"),
            cluster,
            listener_options={
                "authentication_timeout": "600s",
                "max_connections": args.connections + 100,
                "max_unauthenticated": args.connections + 50,
                "max_unauthenticated_per_address": 32,
            },
        )
        gateway.start()
        pid = gateway.process.pid
        idle_ms = timings(gateway, args.rounds)
        time.sleep(0.5)
        rss0, fds0 = status(pid)
        held = hold(gateway, args.connections, args.tls_idle)
        deadline = time.monotonic() + 30
        while status(pid)[1] < fds0 + args.connections:
            if time.monotonic() > deadline:
                raise RuntimeError("the daemon did not accept every connection")
            time.sleep(0.05)
        time.sleep(0.5)
        rss1, fds1 = status(pid)
        busy_ms = timings(gateway, args.rounds)
        n = args.connections
        kind = "TLS-handshaken" if args.tls_idle else "TCP"
        print(f"idle pre-auth connections held: {n} ({kind})")
        print(
            f"daemon VmRSS: {rss0} KiB -> {rss1} KiB:"
            f" {(rss1 - rss0) / n:.1f} KiB per connection"
        )
        print(
            f"daemon open fds: {fds0} -> {fds1}: {(fds1 - fds0) / n:.2f} per connection"
        )
        print(
            f"psycopg connect+select 1+close, {args.rounds} rounds:"
            f" median {idle_ms[0]:.1f} ms, p95 {idle_ms[1]:.1f} ms with none held;"
            f" median {busy_ms[0]:.1f} ms, p95 {busy_ms[1]:.1f} ms with {n} held"
        )
    finally:
        for sock in held:
            sock.close()
        if gateway is not None:
            gateway.stop()
        cluster.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
