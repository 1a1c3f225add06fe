"""
Run a throwaway local PostgreSQL 15 server: the machine-level parts that
C{gatehouse demo} and the test fixtures (C{tests/fixtures/postgres.py})
share.

PostgreSQL refuses to run as root.  When we are root, C{initdb}, C{pg_ctl}
and the server run as the C{postgres} OS user through C{runuser} (the user
is created if it is missing, and missing PostgreSQL programs are installed
with apt-get); otherwise they run as the current user.

The usual sequence::

    ensure_binaries()
    ensure_os_user()
    initdb(data_dir, cwd=base)
    port, pid = start_server(data_dir, data_dir / "server.log", write_conf, cwd=base)
    ...
    stop_server(data_dir, pid, cwd=base)

A server started by C{pg_ctl} runs in its own session, so it outlives the
process that started it; L{start_watchdog} runs a small sidecar that stops
it (and removes its files) should that process die without cleaning up.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

__all__ = [
    "LOOPBACK",
    "OS_USER",
    "PG_BIN_DIR",
    "PG_MAJOR",
    "PG_PACKAGES",
    "SUPERUSER",
    "ClusterError",
    "apt_install",
    "child_pids",
    "chown_to_owner",
    "clean_env",
    "conninfo",
    "ensure_binaries",
    "ensure_os_user",
    "free_port",
    "initdb",
    "is_root",
    "log_tail",
    "owner_argv",
    "pg_bin",
    "pid_alive",
    "read_pidfile",
    "run_as_owner",
    "sql_literal",
    "start_server",
    "start_watchdog",
    "stop_server",
    "stop_watchdog",
    "wait_gone",
]

PG_MAJOR = "15"
PG_BIN_DIR = Path(f"/usr/lib/postgresql/{PG_MAJOR}/bin")
PG_PACKAGES = (f"postgresql-{PG_MAJOR}", f"postgresql-client-{PG_MAJOR}")
#: The OS user that owns server processes when we run as root.
OS_USER = "postgres"
#: The database superuser that initdb creates.
SUPERUSER = "postgres"
LOOPBACK = "127.0.0.1"

_SERVER_BINS = ("initdb", "pg_ctl", "postgres", "psql")


class ClusterError(RuntimeError):
    """
    A PostgreSQL server could not be provided (missing program, failed
    start); the message says what and why.
    """


# --------------------------------------------------------------------------
# the machine


def is_root() -> bool:
    """
    Whether we run as root (then servers run as the C{postgres} OS user).
    """
    return os.geteuid() == 0


def apt_install(*packages: str, timeout: float = 900.0) -> None:
    """
    Install Debian C{packages} with apt-get (root only) without starting
    services.

    @raise ClusterError: naming the packages, when not root or apt-get fails.
    """
    names = " ".join(packages)
    if not is_root() or shutil.which("apt-get") is None:
        raise ClusterError(
            f"missing Debian package(s) {names}: install them as root "
            f"(apt-get install -y {names})"
        )
    with install_lock("apt"):
        _apt_install(packages, names, timeout)


@contextlib.contextmanager
def install_lock(name: str) -> Iterator[None]:
    """
    Hold a lock shared by every process of this machine that installs
    C{name} (apt, npm, ...): parallel test workers, two demos.  What the
    holder installed is there for the next one, whose install is then a
    quick no-op.
    """
    path = Path(tempfile.gettempdir()) / f"gatehouse-install-{name}.lock"
    with open(path, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _apt_install(packages: tuple[str, ...], names: str, timeout: float) -> None:
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    # Keep package scripts from starting services (a stray system
    # PostgreSQL or pgbouncer would outlive us).
    policy = Path("/usr/sbin/policy-rc.d")
    created_policy = False
    if not policy.exists():
        policy.write_text("#!/bin/sh\nexit 101\n")
        policy.chmod(0o755)
        created_policy = True
    install = ["apt-get", "install", "-y", "--no-install-recommends", *packages]

    def run(argv: list[str]) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            argv, env=env, capture_output=True, text=True, timeout=timeout
        )

    try:
        # Try the package lists we have first; refresh them only if that fails.
        if run(install).returncode != 0:
            for argv in (["apt-get", "update"], install):
                result = run(argv)
                if result.returncode != 0:
                    raise ClusterError(
                        f"{' '.join(argv)} failed ({result.returncode}) installing "
                        f"missing package(s) {names}:\n{result.stderr[-2000:]}"
                    )
    finally:
        if created_policy:
            policy.unlink(missing_ok=True)


def ensure_os_user(name: str = OS_USER) -> None:
    """
    Make sure the OS user that owns server processes exists (root only).
    """
    if not is_root():
        return
    try:
        pwd.getpwnam(name)
        return
    except KeyError:
        pass
    result = subprocess.run(
        [
            "useradd",
            "--system",
            "--user-group",
            "--no-create-home",
            "--home-dir",
            "/nonexistent",
            "--shell",
            "/usr/sbin/nologin",
            name,
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    if result.returncode != 0:
        raise ClusterError(f"useradd {name} failed: {result.stderr.strip()}")


def pg_bin(name: str) -> str:
    """
    The path of a PostgreSQL program (C{psql}, C{pg_ctl}, ...): PostgreSQL
    15's own, else the first on C{PATH}.

    @raise ClusterError: naming the Debian package, when there is none.
    """
    candidate = PG_BIN_DIR / name
    if candidate.is_file() and os.access(candidate, os.X_OK):
        return str(candidate)
    found = shutil.which(name)
    if found is None:
        raise ClusterError(
            f"PostgreSQL program {name!r} not found in {PG_BIN_DIR} or PATH "
            f"(Debian package {PG_PACKAGES[0]})"
        )
    return found


def ensure_binaries(required: Sequence[str] = _SERVER_BINS) -> None:
    """
    Make sure the PostgreSQL 15 programs C{required} exist, installing
    L{PG_PACKAGES} with apt-get when root.

    @raise ClusterError: naming the package, when they cannot be had.
    """
    missing = [n for n in required if not (PG_BIN_DIR / n).is_file()]
    if not missing:
        return
    apt_install(*PG_PACKAGES)
    still = [n for n in required if not (PG_BIN_DIR / n).is_file()]
    if still:
        raise ClusterError(
            f"PostgreSQL programs {still} missing from {PG_BIN_DIR} after installing "
            f"{' '.join(PG_PACKAGES)}"
        )


def owner_argv(argv: Sequence[str]) -> list[str]:
    """
    Prefix C{argv} so that it runs as the server owner (C{runuser} when
    root).
    """
    if is_root():
        return ["runuser", "-u", OS_USER, "--", *argv]
    return list(argv)


def chown_to_owner(path: Path) -> None:
    """
    Give C{path} to the server owner (nothing to do unless root).
    """
    if is_root():
        entry = pwd.getpwnam(OS_USER)
        os.chown(path, entry.pw_uid, entry.pw_gid)


#: ports L{free_port} has handed out in this process
_handed_out: set[int] = set()


def free_port(host: str = LOOPBACK) -> int:
    """
    A TCP port on C{host} that was free a moment ago, and not one this
    process was given before (the kernel can offer the same port twice in
    a row while nobody has bound it yet).
    """
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind((host, 0))
            port: int = s.getsockname()[1]
        if port not in _handed_out:
            _handed_out.add(port)
            return port


def clean_env(**extra: str) -> dict[str, str]:
    """
    C{os.environ} without C{PG*} variables (no stray C{PGPASSFILE}, ...),
    in a UTF-8 locale, plus C{extra}.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env.update(LC_ALL="C.UTF-8", LANG="C.UTF-8")
    env.update(extra)
    return env


def pid_alive(pid: int) -> bool:
    """
    Whether C{pid} exists and is not a zombie.
    """
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def child_pids(pid: int) -> list[int]:
    """
    The live direct children of C{pid} (read from C{/proc}).
    """
    children = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid and fields[0] != "Z":
            children.append(int(entry.name))
    return children


def wait_gone(pids: Sequence[int], timeout: float) -> bool:
    """
    Wait until none of C{pids} is alive.

    @return: Whether they all went within C{timeout} seconds.
    """
    deadline = time.monotonic() + timeout
    while any(pid_alive(p) for p in pids):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def read_pidfile(path: Path) -> int | None:
    """
    The pid on the first line of C{path} (C{postmaster.pid}, ...), if any.
    """
    try:
        first = path.read_text().split("\n", 1)[0].strip()
    except OSError:
        return None
    return int(first) if first.isdigit() else None


def _quote_conninfo(value: str) -> str:
    if value and all(c.isalnum() or c in "._-/:" for c in value):
        return value
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def conninfo(**params: object) -> str:
    """
    A libpq keyword/value connection string from C{params} (C{None} values
    are left out).
    """
    return " ".join(
        f"{k}={_quote_conninfo(str(v))}" for k, v in params.items() if v is not None
    )


def sql_literal(value: str) -> str:
    """
    C{value} as an SQL string literal.
    """
    return "'" + value.replace("'", "''") + "'"


# --------------------------------------------------------------------------
# the cleanup sidecar

# Polls its parent and, once that is gone, signals the server whose pid is
# in PIDFILE, then removes BASE_DIR.  SIGTERM makes it leave quietly.
_WATCHDOG = r"""
import os, shutil, signal, sys, time
parent, base, pidfile = int(sys.argv[1]), sys.argv[2], sys.argv[3]
signum = int(sys.argv[4])
signal.signal(signal.SIGTERM, lambda *a: os._exit(0))
signal.signal(signal.SIGINT, signal.SIG_IGN)
while os.getppid() == parent:
    time.sleep(0.5)
def pid():
    try:
        first = open(pidfile).readline().strip()
        return int(first) if first.isdigit() else None
    except OSError:
        return None
def alive(p):
    try:
        return open("/proc/%d/stat" % p).read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False
p = pid()
if p:
    for sig, wait in ((signum, 10.0), (signal.SIGKILL, 5.0)):
        try:
            os.kill(p, sig)
        except ProcessLookupError:
            break
        end = time.monotonic() + wait
        while time.monotonic() < end and alive(p):
            time.sleep(0.1)
shutil.rmtree(base, ignore_errors=True)
"""


def start_watchdog(
    base_dir: Path, pidfile: Path, signum: int
) -> subprocess.Popen[bytes]:
    """
    Start the cleanup sidecar for a server living in C{base_dir}: should
    this process die without stopping the server, the sidecar sends
    C{signum} (then SIGKILL) to the pid in C{pidfile} and removes
    C{base_dir}.  Stop it with L{stop_watchdog} after cleaning up.
    """
    return subprocess.Popen(
        [
            sys.executable,
            "-c",
            _WATCHDOG,
            str(os.getpid()),
            str(base_dir),
            str(pidfile),
            str(int(signum)),
        ],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )


def stop_watchdog(proc: subprocess.Popen[bytes] | None) -> None:
    """
    Stop a sidecar started by L{start_watchdog} (by its pid) and reap it.
    """
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=5)


# --------------------------------------------------------------------------
# the server


def log_tail(path: Path, lines: int = 30) -> str:
    """
    The last C{lines} of the server log at C{path}, headed for an error
    message, or C{""} when there is none.
    """
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    return "\n--- server.log (tail) ---\n" + "\n".join(text.splitlines()[-lines:])


def run_as_owner(
    argv: Sequence[str],
    what: str,
    *,
    cwd: Path,
    timeout: float,
    log_path: Path | None = None,
) -> subprocess.CompletedProcess[str]:
    """
    Run C{argv} as the server owner, in its own session, without C{PG*}
    variables.

    @param cwd: A directory the server owner may enter.
    @param log_path: A server log whose tail goes into the error message.
    @raise ClusterError: naming C{what}, when it exits non-zero.
    """
    result = subprocess.run(
        owner_argv(argv),
        cwd=cwd,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
        start_new_session=True,
    )
    if result.returncode != 0:
        tail = log_tail(log_path) if log_path is not None else ""
        raise ClusterError(
            f"{what} failed ({result.returncode}):\n{result.stdout}{result.stderr}"
            f"{tail}"
        )
    return result


def initdb(data_dir: Path, *, cwd: Path, timeout: float = 120.0) -> None:
    """
    Create a cluster in C{data_dir} (which must not exist yet, inside a
    directory the server owner may write): UTF-8, C locale, superuser
    L{SUPERUSER} trusted until C{pg_hba.conf} says otherwise, no fsync.
    """
    run_as_owner(
        [
            pg_bin("initdb"),
            "-D",
            str(data_dir),
            "-U",
            SUPERUSER,
            "--auth=trust",
            "--encoding=UTF8",
            "--locale=C",
            "--no-sync",
            "--no-instructions",
        ],
        "initdb",
        cwd=cwd,
        timeout=timeout,
    )


def start_server(
    data_dir: Path,
    log_path: Path,
    configure: Callable[[int], None],
    *,
    cwd: Path,
    port: int | None = None,
    attempts: int = 3,
) -> tuple[int, int]:
    """
    Start the server of C{data_dir} with C{pg_ctl} and wait until it
    accepts connections.

    @param configure: Called with the port before each try; writes the
        server's configuration (which must set C{port} to it).
    @param port: The port to use; by default a free one, tried again with
        another one (up to C{attempts} times) when something else took it
        in the meantime.
    @return: C{(port, pid)} of the running postmaster.
    @raise ClusterError: with the tail of the server log, when it does not
        start.
    """
    if port is not None:
        attempts = 1
    for attempt in range(attempts):
        chosen = port if port is not None else free_port()
        configure(chosen)
        try:
            mark = log_path.stat().st_size
        except OSError:
            mark = 0
        try:
            run_as_owner(
                [
                    pg_bin("pg_ctl"),
                    "start",
                    "-D",
                    str(data_dir),
                    "-l",
                    str(log_path),
                    "-w",
                    "-t",
                    "60",
                ],
                "pg_ctl start",
                cwd=cwd,
                timeout=90,
                log_path=log_path,
            )
            break
        except ClusterError:
            try:
                with log_path.open("rb") as f:
                    f.seek(mark)
                    port_taken = b"could not bind" in f.read()
            except OSError:
                port_taken = False
            if not port_taken or attempt == attempts - 1:
                raise
    pid = read_pidfile(data_dir / "postmaster.pid")
    if pid is None:
        raise ClusterError(
            "server started but postmaster.pid has no pid" + log_tail(log_path)
        )
    return chosen, pid


def stop_server(data_dir: Path, pid: int | None, *, cwd: Path) -> None:
    """
    Stop the server of C{data_dir} whose postmaster is C{pid}: C{pg_ctl
    stop -m fast}, then SIGKILL for the postmaster and its children should
    that fail.

    @raise ClusterError: when processes survive SIGKILL.
    """
    if pid is None or not pid_alive(pid):
        return
    pids = [pid, *child_pids(pid)]
    try:
        result = subprocess.run(
            owner_argv(
                [
                    pg_bin("pg_ctl"),
                    "stop",
                    "-D",
                    str(data_dir),
                    "-m",
                    "fast",
                    "-w",
                    "-t",
                    "30",
                ]
            ),
            cwd=cwd,
            env=clean_env(),
            capture_output=True,
            text=True,
            timeout=45,
            start_new_session=True,
        )
        stopped = result.returncode == 0
    except (subprocess.TimeoutExpired, OSError, ClusterError):
        stopped = False
    if not stopped or not wait_gone(pids, 10):
        for each in pids:  # the postmaster first, then its children
            if pid_alive(each):
                try:
                    os.kill(each, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        if not wait_gone(pids, 10):
            raise ClusterError(f"PostgreSQL processes {pids} survived SIGKILL")
