"""
Kubernetes through gatehouse, side by side with ``kubectl proxy`` and a
direct connection, to the same test API server.

One run starts the test API server (``tests/fixtures/kubeapi``: a separate
process, TLS, RBAC, pods running real processes), ``kubectl proxy`` in
front of it (its admin credentials; exec allowed), and the real gatehouse
daemon (``twistd -n gatehouse``: a Kubernetes listener, one target reached
with the fixture's gateway client certificate and impersonation, every
request and stream recorded into signed segments), then measures:

- GET of a pod list (``--pods`` pods in one namespace) with keep-alive
  connections at concurrency 1 and 16: requests per second and the median
  and p99 latency.  The client is ``--processes`` processes of threads
  (``http.client`` over ``ssl``: gatehouse speaks TLS and wants a token;
  kubectl proxy speaks plain HTTP on loopback, as users run it);
- exec stdout throughput: ``kubectl exec POD -- head -c SIZE /dev/zero``
  with stdout to /dev/null, MiB/s from the wall time: directly to the API
  server, through kubectl proxy, through gatehouse.

"gatehouse" is the daemon as deployed (TLS to its clients); "gatehouse
http" a second daemon with the same configuration serving plain HTTP on
loopback (``allow_cleartext``), as kubectl proxy serves: like for like
(GETs only: kubectl sends no bearer token over plain HTTP).

It prints a table with gatehouse's figures as a ratio of kubectl proxy's::

    python bench/kubernetes.py [--seconds 5] [--pods 20] [--size 256M]
                               [--kubectl 1.33] [--repeat 1] [--keep]

The machine may be shared: use ``--repeat 3`` before reading a ratio.
Every process the benchmark starts is stopped by its pid at the end.
This is a benchmark, not a test.
"""

from __future__ import annotations

import argparse
import http.client
import multiprocessing
import os
import shutil
import signal
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # run as a script: make tests/ importable
    sys.path.insert(0, str(REPO))

from gatehouse._pgcluster import free_port  # noqa: E402
from tests.fixtures.kubeapi import KubeAPIServer, kubectl_program  # noqa: E402
from tests.protocols.kubernetes.harness import KubeGateway  # noqa: E402

NAMESPACE = "bench"
RULES = [
    {
        "groups": ["sre"],
        "verbs": ["*"],
        "apiGroups": [""],
        "resources": ["*"],
        "namespaces": [NAMESPACE],
    }
]


def log(message: str = "") -> None:
    print(message, file=sys.stderr, flush=True)


def parse_size(text: str) -> int:
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    text = text.strip().upper()
    if text and text[-1] in units:
        return int(text[:-1]) * units[text[-1]]
    return int(text)


@dataclass
class Endpoint:
    """Where GETs go: host, port, TLS context (None: plain), token, path prefix."""

    name: str
    port: int
    context: ssl.SSLContext | None
    token: str | None
    prefix: str


@dataclass
class Rate:
    rps: float
    median_ms: float
    p99_ms: float
    errors: int


def _worker(
    endpoint: Endpoint, path: str, threads: int, seconds: float, queue: object
) -> None:
    """One client process: C{threads} keep-alive connections for C{seconds}."""
    latencies: list[float] = []
    errors = [0]
    lock = threading.Lock()
    deadline = time.monotonic() + seconds

    def run() -> None:
        def connect() -> http.client.HTTPConnection:
            if endpoint.context is None:
                return http.client.HTTPConnection(
                    "127.0.0.1", endpoint.port, timeout=30
                )
            return http.client.HTTPSConnection(
                "localhost", endpoint.port, context=endpoint.context, timeout=30
            )

        headers = {"Accept": "application/json"}
        if endpoint.token:
            headers["Authorization"] = f"Bearer {endpoint.token}"
        conn = connect()
        mine: list[float] = []
        while time.monotonic() < deadline:
            start = time.perf_counter()
            try:
                conn.request("GET", endpoint.prefix + path, headers=headers)
                response = conn.getresponse()
                response.read()
                if response.status != 200:
                    raise RuntimeError(response.status)
            except Exception:
                with lock:
                    errors[0] += 1
                conn.close()
                conn = connect()
                continue
            mine.append(time.perf_counter() - start)
        conn.close()
        with lock:
            latencies.extend(mine)

    workers = [threading.Thread(target=run) for _ in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    queue.put((latencies, errors[0]))  # type: ignore[attr-defined]


def measure_rate(
    endpoint: Endpoint, path: str, concurrency: int, seconds: float, processes: int
) -> Rate:
    """Requests per second and latency at C{concurrency} connections."""
    processes = max(1, min(processes, concurrency))
    queue: multiprocessing.Queue = multiprocessing.Queue()
    shares = [
        concurrency // processes + (i < concurrency % processes)
        for i in range(processes)
    ]
    started = time.monotonic()
    procs = [
        multiprocessing.Process(
            target=_worker, args=(endpoint, path, n, seconds, queue)
        )
        for n in shares
    ]
    for p in procs:
        p.start()
    latencies: list[float] = []
    errors = 0
    for _ in procs:
        got, failed = queue.get()
        latencies.extend(got)
        errors += failed
    for p in procs:
        p.join()
    elapsed = time.monotonic() - started
    latencies.sort()
    if not latencies:
        return Rate(0.0, 0.0, 0.0, errors)
    return Rate(
        len(latencies) / elapsed,
        statistics.median(latencies) * 1000,
        latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] * 1000,
        errors,
    )


def exec_throughput(kubectl: str, args: list[str], env: dict, size: int) -> float:
    """MiB/s of an exec's stdout (wall time of the whole kubectl)."""
    start = time.monotonic()
    done = subprocess.run(
        [
            kubectl,
            *args,
            "exec",
            "-n",
            NAMESPACE,
            "pod-0",
            "--",
            "head",
            "-c",
            str(size),
            "/dev/zero",
        ],
        capture_output=True,
        env=env,
        timeout=600,
    )
    elapsed = time.monotonic() - start
    if done.returncode != 0 or len(done.stdout) != size:
        raise RuntimeError(
            f"exec failed ({done.returncode}, {len(done.stdout)} bytes): "
            f"{done.stderr.decode()[-500:]}"
        )
    return size / elapsed / (1 << 20)


def start_proxy(
    api: KubeAPIServer, kubectl: str, workdir: Path
) -> tuple[subprocess.Popen, int]:
    port = free_port()
    proc = subprocess.Popen(
        [
            kubectl,
            "proxy",
            f"--port={port}",
            "--address=127.0.0.1",
            "--reject-paths=^$",
            "--accept-hosts=.*",
            "--kubeconfig",
            str(api.admin_kubeconfig),
        ],
        stdout=subprocess.DEVNULL,
        stderr=open(workdir / "proxy.log", "w"),
        env={**os.environ, "HOME": str(workdir)},
    )
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return proc, port
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise RuntimeError("kubectl proxy did not start")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--pods", type=int, default=20)
    parser.add_argument("--size", type=parse_size, default=parse_size("256M"))
    parser.add_argument("--kubectl", default="1.33")
    parser.add_argument("--processes", type=int, default=4)
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--keep", action="store_true")
    args = parser.parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="gatehouse-bench-kube-"))
    kubectl = kubectl_program(args.kubectl)
    stack: list = []

    def stop(*_: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    try:
        log("starting the test API server, kubectl proxy and gatehouse ...")
        api = KubeAPIServer(rules=RULES).start()
        stack.append(api.stop)
        api.create(
            "/api/v1/namespaces",
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}},
        )
        for i in range(args.pods):
            api.create(
                f"/api/v1/namespaces/{NAMESPACE}/pods",
                {
                    "apiVersion": "v1",
                    "kind": "Pod",
                    "metadata": {
                        "name": f"pod-{i}",
                        "namespace": NAMESPACE,
                        "labels": {"app": "bench"},
                    },
                    "spec": {
                        "containers": [
                            {
                                "name": "app",
                                "image": "busybox",
                                "command": ["sleep", "3600"],
                            }
                        ]
                    },
                },
            )
        proxy, proxy_port = start_proxy(api, kubectl, workdir)
        stack.append(lambda: (proxy.terminate(), proxy.wait(10)))
        gw = KubeGateway(
            str(workdir / "gw"), api, policy={"opaque": "deny", "rules": []}
        )
        gw.start()
        stack.append(gw.stop)
        # The same daemon's configuration over plain HTTP, as kubectl proxy
        # serves: the cost of gatehouse without the client's TLS.
        plain = KubeGateway(
            str(workdir / "gw-plain"),
            api,
            policy={"opaque": "deny", "rules": []},
            listener_options={"allow_cleartext": True},
        )
        plain.start()
        stack.append(plain.stop)
        token = gw.token("alice", ("sre",))
        context = ssl.create_default_context(cafile=gw.http.ca_cert)
        direct_context = ssl.create_default_context(cafile=str(api.ca_path))
        cert, key = api.admin_cert
        direct_context.load_cert_chain(str(cert), str(key))
        endpoints = [
            Endpoint("direct", api.port, direct_context, None, ""),
            Endpoint("kubectl proxy", proxy_port, None, None, ""),
            Endpoint("gatehouse", gw.http.port, context, token, "/targets/prod"),
            Endpoint(
                "gatehouse http",
                plain.http.port,
                None,
                plain.token("alice", ("sre",)),
                "/targets/prod",
            ),
        ]
        path = f"/api/v1/namespaces/{NAMESPACE}/pods"
        rates: dict[tuple[str, int], list[Rate]] = {}
        for round_ in range(args.repeat):
            order = endpoints if round_ % 2 == 0 else list(reversed(endpoints))
            for concurrency in (1, 16):
                for endpoint in order:
                    rate = measure_rate(
                        endpoint, path, concurrency, args.seconds, args.processes
                    )
                    log(
                        f"  {endpoint.name:14} c={concurrency:<3} "
                        f"{rate.rps:8.1f} req/s "
                        f"median {rate.median_ms:6.2f} ms p99 {rate.p99_ms:6.2f} ms"
                        + (f" errors {rate.errors}" if rate.errors else "")
                    )
                    rates.setdefault((endpoint.name, concurrency), []).append(rate)
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(workdir)}
        configs = {
            "direct": ["--kubeconfig", str(api.admin_kubeconfig)],
            "kubectl proxy": [
                "--kubeconfig",
                "/dev/null",
                "--server",
                f"http://127.0.0.1:{proxy_port}",
            ],
            "gatehouse": ["--kubeconfig", str(gw.kubeconfig("alice", ("sre",)))],
            # (no "gatehouse http": kubectl sends no bearer token over http)
        }
        throughputs: dict[str, list[float]] = {}
        for round_ in range(args.repeat):
            names = list(configs) if round_ % 2 == 0 else list(reversed(configs))
            for name in names:
                mib = exec_throughput(kubectl, configs[name], env, args.size)
                log(f"  exec {name:14} {mib:8.1f} MiB/s")
                throughputs.setdefault(name, []).append(mib)

        def med(values: list[float]) -> float:
            return statistics.median(values)

        print()
        print(
            f"GET {path} ({args.pods} pods), {args.seconds:g} s per cell, "
            f"median of {args.repeat}; kubectl {args.kubectl}"
        )
        print(
            f"{'':16}{'c':>4}{'req/s':>10}{'median ms':>11}{'p99 ms':>9}"
            f"{'vs proxy':>10}"
        )
        for concurrency in (1, 16):
            base = med([r.rps for r in rates[("kubectl proxy", concurrency)]])
            for endpoint in endpoints:
                got = rates[(endpoint.name, concurrency)]
                rps = med([r.rps for r in got])
                print(
                    f"{endpoint.name:16}{concurrency:>4}{rps:>10.1f}"
                    f"{med([r.median_ms for r in got]):>11.2f}"
                    f"{med([r.p99_ms for r in got]):>9.2f}"
                    f"{rps / base:>10.2f}"
                )
        print()
        print(f"exec stdout, {args.size >> 20} MiB (head -c ... /dev/zero)")
        base = med(throughputs["kubectl proxy"])
        for name, values in throughputs.items():
            print(
                f"{name:16}{med(values):>10.1f} MiB/s{med(values) / base:>8.2f}x proxy"
            )
        return 0
    except KeyboardInterrupt:
        return 130
    finally:
        for stop_one in reversed(stack):
            try:
                stop_one()
            except Exception as e:
                log(f"stopping: {e}")
        if args.keep:
            log(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
