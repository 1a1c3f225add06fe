"""
SSH through gatehouse, side by side with a direct connection to sshd.

One run starts a throwaway OpenSSH server (``tests/fixtures/sshd.py``, a
real ``sshd`` on loopback) and the real gatehouse daemon (``twistd -n
gatehouse`` as a child process, an SSH listener and one SSH target, no
PostgreSQL, recording every byte into signed segments), then measures
each of two things directly against sshd and through gatehouse, one after
the other:

- throughput: ``ssh -c aes128-ctr -m hmac-sha2-256 HOST 'cat > /dev/null'``
  with ``--size`` bytes of random data (a file written once) on its
  standard input; MiB/s from the wall time of the whole ``ssh`` command
  (connection set-up included), and the gatehouse daemon's CPU time.
  Both legs use the same cipher and MAC: the client asks for them, and
  gatehouse's own client towards sshd prefers them (Conch has no
  ``-etm@openssh.com`` MACs nor chacha20-poly1305/AES-GCM, so OpenSSH's
  defaults could not be compared);
- keystroke round trip: ``ssh -tt HOST 'stty raw -echo; echo ready; cat'`` on a
  pseudo-terminal of our own (``tests.fixtures.sshd.PtyClient``), one byte
  written, the time until ``cat`` on the target has echoed it back;
  ``--samples`` bytes, one at a time, after a warm-up; median and p99,
  and the latency gatehouse adds.

It prints a table with gatehouse's throughput as a fraction of direct and
the added latency::

    python bench/ssh.py [--size 1G] [--samples 500] [--repeat 1] [--keep]

``--size`` takes a byte count with an optional K/M/G suffix (binary).
``--repeat N`` measures each cell N times, every other round in reverse
order (so that neither side gains from its place), and shows the median.
The machine may be shared: single runs vary; use ``--repeat 3`` before
reading a ratio.

Every process the benchmark starts is stopped by its pid at the end, also
after an error, Ctrl-C or SIGTERM.  This is a benchmark, not a test.
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import shlex
import shutil
import signal
import statistics
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

from gatehouse._pgcluster import free_port  # noqa: E402
from tests.fixtures.sshd import (  # noqa: E402
    KeyPair,
    PtyClient,
    SSHServer,
    SSHServerError,
    askpass_env,
    generate_key,
    ssh_program,
)
from tests.protocols.postgres.harness import Gateway  # noqa: E402

CIPHER = "aes128-ctr"
MAC = "hmac-sha2-256"
#: the gatehouse target the benchmark logs in to (the login name)
TARGET = "bench"
SYSTEMS = ("direct", "gatehouse")
#: the command whose echo is timed; raw, so that each byte reaches cat
ECHO_COMMAND = "stty raw -echo; echo ready; cat"
WARMUP_KEYS = 20
MIB = 1 << 20


class BenchError(RuntimeError):
    """Something the benchmark needs failed; the message says what."""


def log(message: str = "") -> None:
    print(message, flush=True)


def parse_size(text: str) -> int:
    """C{"1G"} -> 1073741824; K, M, G are binary."""
    found = re.fullmatch(r"\s*(\d+)\s*([KMG]?)i?B?\s*", text, re.I)
    if found is None:
        raise argparse.ArgumentTypeError(f"{text!r} is not a size (like 64M or 1G)")
    number, unit = int(found.group(1)), found.group(2).upper()
    size = number << {"": 0, "K": 10, "M": 20, "G": 30}[unit]
    if size < 1:
        raise argparse.ArgumentTypeError("the size must be positive")
    return size


@dataclass
class Endpoint:
    """How ssh reaches one system."""

    name: str
    #: ssh options up to and including the destination
    args: list[str]
    env: dict[str, str] | None
    #: the proxy's pid (for its CPU time), None for direct
    pid: int | None
    #: what the environment adds, as shown (secrets left out)
    env_shown: str = ""

    def shown(self, argv: list[str]) -> str:
        """C{argv} with this endpoint's environment, printable."""
        return f"{self.env_shown}{shlex.join(argv)}"


def cpu_seconds(pid: int | None) -> float | None:
    """User plus system CPU time of a process."""
    if pid is None:
        return None
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass
class Throughput:
    system: str
    seconds: float
    size: int
    #: the proxy's CPU seconds for the transfer
    cpu: float | None

    @property
    def mib_s(self) -> float:
        return self.size / MIB / self.seconds


@dataclass
class Latency:
    system: str
    #: seconds, one per keystroke
    samples: list[float]

    def median_us(self) -> float:
        return statistics.median(self.samples) * 1e6

    def p99_us(self) -> float:
        ordered = sorted(self.samples)
        return ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))] * 1e6


def throughput(endpoint: Endpoint, data: Path, size: int) -> Throughput:
    """Send C{data} to C{cat > /dev/null} on the target; time it."""
    argv = [
        ssh_program(),
        "-c",
        CIPHER,
        "-m",
        MAC,
        *endpoint.args,
        "cat > /dev/null",
    ]
    log(f"$ {endpoint.shown(argv)} < {data}")
    before = cpu_seconds(endpoint.pid)
    with data.open("rb") as stdin:
        began = time.monotonic()
        result = subprocess.run(
            argv,
            stdin=stdin,
            capture_output=True,
            env=endpoint.env,
            timeout=3600,
        )
        seconds = time.monotonic() - began
    after = cpu_seconds(endpoint.pid)
    if result.returncode != 0:
        raise BenchError(
            f"ssh to {endpoint.name} exited {result.returncode}: "
            f"{result.stderr.decode(errors='replace').strip()}"
        )
    cpu = after - before if before is not None and after is not None else None
    return Throughput(endpoint.name, seconds, size, cpu)


def keystrokes(endpoint: Endpoint, samples: int) -> Latency:
    """Type C{samples} bytes into C{cat} under C{ssh -tt}; time each echo."""
    argv = [ssh_program(), "-tt", *endpoint.args, ECHO_COMMAND]
    log(f"$ {endpoint.shown(argv)}   (on a pty)")
    client = PtyClient(argv, env=endpoint.env)
    try:
        # Nothing is typed before the terminal is raw (or its own echo
        # would answer).
        try:
            client.expect(b"ready", timeout=30)
        except SSHServerError as e:
            raise BenchError(f"{endpoint.name}: {e}") from None
        drain(client)
        taken = []
        alphabet = b"abcdefghijklmnopqrstuvwxyz"
        for n in range(WARMUP_KEYS + samples):
            key = alphabet[n % len(alphabet) : n % len(alphabet) + 1]
            before = len(client.chunks)
            sent = time.monotonic()
            client.send(key)
            client.expect(key, timeout=10)
            echoed = client.chunks[before:]
            if b"".join(chunk for _, chunk in echoed) != key:
                raise BenchError(f"{endpoint.name}: sent {key!r}, got {echoed!r}")
            if n >= WARMUP_KEYS:
                taken.append(echoed[-1][0] - sent)
        return Latency(endpoint.name, taken)
    finally:
        client.close()


def drain(client: PtyClient, quiet: float = 0.5) -> None:
    """Read what the terminal is sent until it is quiet; expect nothing of it."""
    try:
        client.expect(b"\0never sent\0", timeout=quiet)
    except SSHServerError:
        pass
    client.expect(re.compile(rb"[\s\S]*\Z"), timeout=1)


def median_by(results: list, key) -> object:
    ordered = sorted(results, key=key)
    return ordered[(len(ordered) - 1) // 2]


def versions() -> list[str]:
    ssh_version = subprocess.run(
        [ssh_program(), "-V"], capture_output=True, text=True
    ).stderr.strip()
    return [
        f"python {platform.python_version()}, twisted {twisted.__version__}, "
        f"{ssh_version}, {len(os.sched_getaffinity(0))} CPUs usable, "
        f"{platform.machine()} {platform.release()}"
    ]


def table(
    flows: dict[str, list[Throughput]],
    echoes: dict[str, list[Latency]],
    args: argparse.Namespace,
) -> str:
    rounds = f", median of {args.repeat} rounds" if args.repeat > 1 else ""
    rows = [
        f"(a) {args.size / MIB:,.0f} MiB of random data into 'cat > /dev/null', "
        f"ssh -c {CIPHER} -m {MAC}{rounds}",
        "",
        f"{'system':<11}{'seconds':>9}{'MiB/s':>10}{'proxy CPU':>13}{'vs direct':>11}",
    ]
    direct = median_by(flows["direct"], lambda r: r.mib_s)
    for system in SYSTEMS:
        r = median_by(flows[system], lambda r: r.mib_s)
        cpu = f"{r.cpu:.1f} s" if r.cpu is not None else ""
        ratio = f"{r.mib_s / direct.mib_s:.2f}" if system != "direct" else ""
        rows.append(
            f"{system:<11}{r.seconds:>9.2f}{r.mib_s:>10.1f}{cpu:>13}{ratio:>11}"
        )
    rows += [
        "",
        f"(b) keystroke round trip, ssh -tt '{ECHO_COMMAND}', {args.samples} "
        f"bytes one at a time{rounds}",
        "",
        f"{'system':<11}{'median µs':>11}{'p99 µs':>10}{'added median':>15}"
        f"{'added p99':>12}",
    ]
    direct_echo = median_by(echoes["direct"], Latency.median_us)
    for system in SYSTEMS:
        r = median_by(echoes[system], Latency.median_us)
        added = added99 = ""
        if system != "direct":
            added = f"{r.median_us() - direct_echo.median_us():,.0f}"
            added99 = f"{r.p99_us() - direct_echo.p99_us():,.0f}"
        rows.append(
            f"{system:<11}{r.median_us():>11,.0f}{r.p99_us():>10,.0f}"
            f"{added:>15}{added99:>12}"
        )
    rows += [
        "",
        "gatehouse: the client's SSH connection ends at the gateway, which "
        "decrypts, records (signed segments) and encrypts again towards sshd "
        f"(its client also negotiates {CIPHER} + {MAC}); direct is one "
        "OpenSSH connection.  Conch lacks the -etm@openssh.com MACs, "
        "chacha20-poly1305 and AES-GCM, so both sides use CTR + HMAC.",
    ]
    return "\n".join(rows)


# --------------------------------------------------------------------------
# main


def _terminated(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=(__doc__ or "").strip().split("\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--size",
        type=parse_size,
        default=parse_size("1G"),
        help="bytes sent per throughput run (K/M/G suffixes; default 1G)",
    )
    parser.add_argument(
        "--samples", type=int, default=500, help="keystrokes timed per run"
    )
    parser.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="rounds of both systems (every other one in reverse order); "
        "the table shows the median run",
    )
    parser.add_argument(
        "--keep",
        action="store_true",
        help="keep the working directory (gatehouse config, log, recordings)",
    )
    args = parser.parse_args(argv)
    if args.samples < 1 or args.repeat < 1:
        parser.error("--samples and --repeat must be at least 1")
    return args


def start_gateway(
    workdir: Path, server: SSHServer, stack: list
) -> tuple[Gateway, KeyPair]:
    """The daemon with an SSH listener and one target (sshd, as its admin)."""
    keys = workdir / "keys"
    host_key = generate_key(keys / "gateway_host_ed25519", comment="gatehouse-bench")
    upstream = generate_key(keys / "upstream_ed25519", comment="gatehouse-bench")
    server.authorize(upstream.public, server.admin_account)
    listener = {
        "name": "ssh",
        "protocol": "ssh",
        "address": "127.0.0.1",
        "port": free_port(),
        "options": {"host_keys": [str(host_key.private_path)]},
    }
    target = {
        "name": TARGET,
        "protocol": "ssh",
        "options": {
            "host": server.host,
            "port": server.port,
            "host_keys": server.host_public_keys(),
            "key": str(upstream.private_path),
            "user": server.admin_account,
            "allow_groups": ["dba"],
        },
    }
    gateway = Gateway(
        str(workdir / "gatehouse"), None, listeners=[listener], extra_targets=[target]
    )
    stack.append(gateway.stop)
    gateway.start()
    return gateway, host_key


def run(args: argparse.Namespace, workdir: Path, stack: list) -> None:
    """Start everything (pushing a stopper per process onto C{stack}) and run."""
    log("\n".join(versions()))
    server = SSHServer(restricted_account=False)
    stack.append(server.stop)
    server.start()
    log(f"sshd on port {server.port}, pid {server.pid}")
    client_key = generate_key(workdir / "keys" / "client_ed25519")
    server.authorize(client_key.public, server.admin_account)

    gateway, host_key = start_gateway(workdir, server, stack)
    assert gateway.process is not None
    log(
        f"gatehouse on port {gateway.port}, pid {gateway.process.pid}, "
        f"config {gateway.config_path}, recordings under {gateway.path('recordings')}"
    )
    known_hosts = workdir / "gateway_known_hosts"
    host_line = " ".join(host_key.public.split()[:2])
    known_hosts.write_text(f"[127.0.0.1]:{gateway.port} {host_line}\n")
    via_gateway = [
        "-F",
        "/dev/null",
        "-o",
        f"UserKnownHostsFile={known_hosts}",
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
        "LogLevel=ERROR",
        "-p",
        str(gateway.port),
        f"{TARGET}@127.0.0.1",
    ]
    direct = [*server.client_args(client_key), server.destination()]
    endpoints = {
        "direct": Endpoint("direct", direct, None, None),
        "gatehouse": Endpoint(
            "gatehouse",
            via_gateway,
            askpass_env(gateway.token(lifetime=3600), workdir),
            gateway.process.pid,
            "SSH_ASKPASS=<prints a JWT> SSH_ASKPASS_REQUIRE=force ",
        ),
    }

    data = workdir / "random.bin"
    log(f"\nwriting {args.size:,} random bytes to {data}")
    with data.open("wb") as f:
        left = args.size
        while left:
            chunk = os.urandom(min(left, 16 * MIB))
            f.write(chunk)
            left -= len(chunk)

    log("\nchecking both work (not measured):")
    for endpoint in endpoints.values():
        throughput(endpoint, data if args.size <= 16 * MIB else _head(data), 0)

    flows: dict[str, list[Throughput]] = {s: [] for s in SYSTEMS}
    echoes: dict[str, list[Latency]] = {s: [] for s in SYSTEMS}
    log("\nmeasured runs:")
    for round_ in range(args.repeat):
        order = SYSTEMS if round_ % 2 == 0 else SYSTEMS[::-1]
        for system in order:
            r = throughput(endpoints[system], data, args.size)
            flows[system].append(r)
            cpu = f", gatehouse CPU {r.cpu:.1f} s" if r.cpu is not None else ""
            log(f"  -> {r.mib_s:.1f} MiB/s ({r.seconds:.2f} s{cpu})")
        for system in order:
            e = keystrokes(endpoints[system], args.samples)
            echoes[system].append(e)
            log(f"  -> median {e.median_us():,.0f} µs, p99 {e.p99_us():,.0f} µs")

    log("\n" + table(flows, echoes, args))
    sessions = gateway.recordings()
    where = gateway.path("recordings")
    log(f"\ngatehouse recorded {len(sessions)} sessions under {where}")
    text = gateway.log()
    if "Traceback" in text:
        first = text.index("Traceback")
        log(
            f"\nnote: the gatehouse log has {text.count('Traceback')} tracebacks, "
            f"the first:\n{text[first : first + 2500].strip()}"
        )


def _head(data: Path) -> Path:
    """The first 16 MiB of C{data}, for the unmeasured check."""
    head = data.with_name("head.bin")
    with data.open("rb") as source:
        head.write_bytes(source.read(16 * MIB))
    return head


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _terminated)
    workdir = Path(tempfile.mkdtemp(prefix="gatehouse-bench-ssh-"))
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
        for stop in reversed(stack):  # gatehouse, sshd
            try:
                stop()
            except Exception as e:
                log(f"cleanup: {stop.__qualname__}: {e}")
        log_path = workdir / "gatehouse" / "twistd.log"
        if status and log_path.exists():
            log(f"\n--- gatehouse log (tail) ---\n{log_path.read_text()[-3000:]}")
        for name in ("random.bin", "head.bin"):
            (workdir / name).unlink(missing_ok=True)
        if args.keep:
            log(f"kept {workdir} (config, logs, recordings)")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    return status


if __name__ == "__main__":
    sys.exit(main())
