"""
How fast can a Python relay be here?  The ceiling under bench/postgres.py.

One run starts a throwaway PostgreSQL 15 cluster and pgbouncer (session
pooling), and two relays that only copy bytes, parsing and recording
nothing: one on a bare ``select.epoll`` loop, one on Twisted's reactor
(``gatehouse.net.send_now`` writes, as gatehouse relays).  It then runs
``pgbench -S`` at 8 clients in simple and prepared mode against each of the
four, ``--repeat`` rounds (every other one in reverse order), and prints the
median TPS, each relay's CPU per transaction and its ratio to pgbouncer.

    python bench/relay_ceiling.py [--seconds 8] [--repeat 3] [--clients 8]

A relay is a child process (``python bench/relay_ceiling.py --relay KIND
PORT UPSTREAM_PORT``), stopped by its pid at the end.  This is a
benchmark, not a test.
"""

from __future__ import annotations

import argparse
import select
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

RELAYS = ("epoll", "twisted")


def epoll_relay(port: int, upstream: int) -> None:
    """Copy bytes both ways on a bare epoll loop, one upstream per client."""
    listener = socket.create_server(("127.0.0.1", port), backlog=128)
    listener.setblocking(False)
    poller = select.epoll()
    poller.register(listener.fileno(), select.EPOLLIN)
    sockets: dict[int, socket.socket] = {}
    peers: dict[int, socket.socket] = {}
    while True:
        for fd, _ in poller.poll():
            if fd == listener.fileno():
                client, _ = listener.accept()
                server = socket.create_connection(("127.0.0.1", upstream))
                for s in (client, server):
                    s.setblocking(False)
                    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                    sockets[s.fileno()] = s
                    poller.register(s.fileno(), select.EPOLLIN)
                peers[client.fileno()] = server
                peers[server.fileno()] = client
                continue
            sock = sockets[fd]
            try:
                data = sock.recv(65536)
            except BlockingIOError:
                continue
            except OSError:
                data = b""
            peer = peers.get(fd)
            if not data or peer is None:
                for s in (sock, peer):
                    if s is not None and s.fileno() in sockets:
                        poller.unregister(s.fileno())
                        del sockets[s.fileno()]
                        peers.pop(s.fileno(), None)
                        s.close()
                continue
            peer.setblocking(True)
            peer.sendall(data)
            peer.setblocking(False)


def twisted_relay(port: int, upstream: int) -> None:
    """Copy bytes both ways on Twisted's reactor, writing as gatehouse does."""
    from twisted.internet import protocol, reactor

    from gatehouse.net import send_now, tune

    class Upstream(protocol.Protocol):
        def __init__(self, client: Client):
            self.client = client

        def connectionMade(self) -> None:
            tune(self.transport)
            self.client.upstream_ready(self)

        def dataReceived(self, data: bytes) -> None:
            send_now(self.client.transport, data)

        def connectionLost(self, reason: object) -> None:
            self.client.transport.loseConnection()

    class Client(protocol.Protocol):
        upstream: Upstream | None = None

        def connectionMade(self) -> None:
            tune(self.transport)
            self.transport.pauseProducing()
            protocol.ClientCreator(reactor, Upstream, self).connectTCP(
                "127.0.0.1", upstream
            )

        def upstream_ready(self, upstream: Upstream) -> None:
            self.upstream = upstream
            self.transport.resumeProducing()

        def dataReceived(self, data: bytes) -> None:
            send_now(self.upstream.transport, data)

        def connectionLost(self, reason: object) -> None:
            if self.upstream is not None:
                self.upstream.transport.loseConnection()

    factory = protocol.Factory.forProtocol(Client)
    reactor.listenTCP(port, factory, interface="127.0.0.1")
    reactor.run()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--relay"]:
        kind, port, upstream = argv[1], int(argv[2]), int(argv[3])
        (epoll_relay if kind == "epoll" else twisted_relay)(port, upstream)
        return 0
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=int, default=8)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--clients", type=int, default=8)
    args = parser.parse_args(argv)

    import bench.postgres as pg
    from tests.fixtures.postgres import PostgresCluster

    settings = pg.parse_args(["--seconds", str(args.seconds)])
    cluster = PostgresCluster(extra_conf=pg.PG_CONF)
    relays: list[subprocess.Popen] = []
    bouncer = None
    try:
        cluster.start()
        bouncer = pg.TLSBouncer(cluster, tls_files=None, upstream_tls=False)
        bouncer.start()
        password = cluster.passwords[pg.ROLE]

        def endpoint(name: str, port: int, pid: int | None) -> pg.Endpoint:
            return pg.Endpoint(
                name, port, pg.ROLE, pg.DATABASE, "disable", password, "pw", pid
            )

        endpoints = [
            endpoint("direct", cluster.port, None),
            endpoint("pgbouncer", bouncer.port, bouncer.pid),
        ]
        for kind in RELAYS:
            port = free_port()
            relay = subprocess.Popen(
                [
                    sys.executable,
                    __file__,
                    "--relay",
                    kind,
                    str(port),
                    str(cluster.port),
                ]
            )
            relays.append(relay)
            endpoints.append(endpoint(kind, port, relay.pid))
        deadline = time.monotonic() + 20
        for e in endpoints[2:]:
            while True:
                try:
                    socket.create_connection(("127.0.0.1", e.port), 0.2).close()
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.05)
        pg.run_pgbench(endpoints[0], ["-i", "-s", "10", "-q"], 900, "init")
        results: dict[tuple[str, str], list[pg.Result]] = {}
        for mode in ("simple", "prepared"):
            for round_ in range(args.repeat):
                order = endpoints if round_ % 2 == 0 else endpoints[::-1]
                for e in order:
                    r = pg.measure(e, mode, args.clients, settings)
                    results.setdefault((mode, e.name), []).append(r)
                    pg.log(f"  -> {r.tps:,.0f} TPS {r.cpu_text()}")
        pg.log(
            f"\npgbench -S -c {args.clients}, {args.seconds} s per run, median of "
            f"{args.repeat}; relays parse and record nothing\n"
        )
        for mode in ("simple", "prepared"):
            bouncer_tps = statistics.median(r.tps for r in results[(mode, "pgbouncer")])
            for e in endpoints:
                runs = sorted(results[(mode, e.name)], key=lambda r: r.tps)
                mid = runs[len(runs) // 2]
                pg.log(
                    f"{mode:<9}{e.name:<10}{mid.tps:>10,.0f} TPS "
                    f"{mid.cpu_text():>28}  x{mid.tps / bouncer_tps:.2f} of pgbouncer"
                )
    finally:
        for relay in relays:
            pg.stop_process(relay)
        if bouncer is not None:
            bouncer.stop()
        cluster.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
