"""
C{gatehouse keys}: create the root key, issue epoch keys, revoke them,
check coverage.

See "Keys and forward security" in docs/recording-format.md.  The root key
is created once and kept off the gateway; epoch keys are issued ahead of
time into the gateway's signing-key directory, one file per window.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import time
from typing import TYPE_CHECKING

from gatehouse._duration import format_duration, parse_duration
from gatehouse.cli import CommandError, Handler
from gatehouse.recording import keys as _keys
from gatehouse.recording.cli_sessions import parse_time

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

__all__ = ["configure", "plan_windows"]

NS = _keys.NS
ROOT_KEY = "root.key"
ROOT_PUB = "root.pub"
#: More keys than this in one go is a mistake (a period in seconds, say).
MAX_KEYS = 100_000
#: How far ahead `keys issue` covers by default (days): short, because every
#: future key on the gateway is one an intruder could forge with.
DEFAULT_DAYS = 2.0
# The rule for gateway.id in the configuration file.
_GATEWAY_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")


def configure(parser: argparse.ArgumentParser) -> Handler:
    """Set up C{gatehouse keys init|issue|revoke|status}."""
    sub = parser.add_subparsers(dest="keys_command", metavar="ACTION", title="actions")
    sub.required = True

    init = sub.add_parser(
        "init",
        help="create the root key pair",
        description="Create DIR/root.key (private, mode 0600) and DIR/root.pub. "
        "Keep root.key off the gateway; verifiers trust root.pub.",
    )
    init.add_argument("directory", metavar="DIR")
    init.add_argument(
        "--passphrase-env",
        metavar="VAR",
        help="encrypt root.key with the passphrase in this environment variable",
    )
    init.set_defaults(keys_run=_init)

    issue = sub.add_parser(
        "issue",
        help="issue epoch keys for the windows not covered yet",
        description="Issue epoch keys, certified by the root key, for "
        "consecutive windows from now (or from the end of the keys already "
        "in DIR) on.  Never overlaps existing windows, never issues keys "
        "for the past.",
    )
    _signer_arguments(issue)
    issue.add_argument(
        "--out",
        required=True,
        metavar="DIR",
        help="the gateway's signing-key directory",
    )
    issue.add_argument(
        "--period",
        default=15 * 60 * NS,
        type=_period_argument,
        metavar="DURATION",
        help="length of each key's window (default 15m)",
    )
    horizon = issue.add_mutually_exclusive_group()
    horizon.add_argument(
        "--days",
        type=_days_argument,
        default=DEFAULT_DAYS,
        metavar="N",
        help=f"cover this many days from now (default {DEFAULT_DAYS:g}; renew "
        "every few hours: a short horizon limits what an intruder's future "
        "keys can forge)",
    )
    horizon.add_argument(
        "--until",
        type=parse_time,
        metavar="TIME",
        help="cover up to this time (ISO 8601, or relative such as +30d)",
    )
    issue.set_defaults(keys_run=_issue)

    revoke = sub.add_parser(
        "revoke",
        help="write a revocation statement for a gateway's keys",
        description="Write a revocation statement, signed by the root key: "
        "verifiers given it (gatehouse verify --revocation FILE) report as "
        "bad-key every seal the gateway made from TIME on, and every session "
        "rooted in an epoch key whose window starts at or after TIME.  "
        "Sessions sealed before TIME stay valid.  Use it when the gateway (or "
        "its signing-key directory) may have been taken over: TIME is the "
        "earliest moment that may have happened.",
    )
    _signer_arguments(revoke)
    revoke.add_argument(
        "--from",
        dest="revoked_from",
        required=True,
        type=parse_time,
        metavar="TIME",
        help="revoke from this time on (ISO 8601, or relative such as -2h)",
    )
    revoke.add_argument(
        "--key-id",
        action="append",
        default=[],
        type=_key_id_argument,
        metavar="HEX",
        help="revoke only sessions rooted in this epoch key (32 hex digits; "
        "repeatable; default: every key of the gateway)",
    )
    revoke.add_argument(
        "--out",
        metavar="FILE",
        help="write the statement here (never overwriting; default: stdout)",
    )
    revoke.set_defaults(keys_run=_revoke)

    status = sub.add_parser(
        "status",
        help="show the epoch keys' coverage",
        description="Show how far the epoch keys in DIR reach.  Exits 1 when "
        "no key is valid now or the keys run out within --warn.",
    )
    status.add_argument("directory", metavar="DIR")
    status.add_argument(
        "--warn",
        default=24 * 3600 * NS,
        type=_warn_argument,
        metavar="DURATION",
        help="fail when coverage ends sooner than this (default 24h)",
    )
    status.set_defaults(keys_run=_status)
    return _run


def _signer_arguments(parser: argparse.ArgumentParser) -> None:
    """The root key that signs, its passphrase, and the gateway it signs for."""
    parser.add_argument("--root-key", required=True, metavar="FILE")
    parser.add_argument(
        "--passphrase-env",
        metavar="VAR",
        help="the root key's passphrase is in this environment variable",
    )
    parser.add_argument(
        "--gateway-id", required=True, metavar="ID", type=_gateway_id_argument
    )


def _run(args: argparse.Namespace) -> int:
    status: int = args.keys_run(args)
    return status


# --- argument types ---------------------------------------------------------


def _duration_ns(text: str) -> int:
    try:
        return round(parse_duration(text) * NS)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e))


def _period_argument(text: str) -> int:
    value = _duration_ns(text)
    if value < NS:
        raise argparse.ArgumentTypeError(f"{text!r}: the period must be at least 1s")
    return value


def _warn_argument(text: str) -> int:
    return _duration_ns(text)


def _days_argument(text: str) -> float:
    try:
        days = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of days")
    if not 0 < days <= 3660:
        raise argparse.ArgumentTypeError(
            f"{text!r}: days must be above 0, at most 3660"
        )
    return days


def _gateway_id_argument(text: str) -> str:
    if not _GATEWAY_ID.fullmatch(text):
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a gateway id (1 to 64 characters of A-Z a-z 0-9 . _ -)"
        )
    return text


def _key_id_argument(text: str) -> bytes:
    try:
        value = bytes.fromhex(text)
    except ValueError:
        value = b""
    if len(value) != 16:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not an epoch key id (32 hex digits)"
        )
    return value


def _passphrase(variable: str | None) -> bytes | None:
    if variable is None:
        return None
    value = os.environ.get(variable)
    if not value:
        raise CommandError(f"environment variable {variable} is not set or empty")
    return value.encode("utf-8")


def iso(ns: int) -> str:
    """A wall time in nanoseconds as ISO 8601 UTC, to the second."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ns // NS))


def span(ns: int) -> str:
    """A length of time in nanoseconds, shortly: C{6d23h}, C{15m}, C{42s}."""
    return format_duration(max(0, ns // NS))


# --- init -----------------------------------------------------------------


def _init(args: argparse.Namespace) -> int:
    passphrase = _passphrase(args.passphrase_env)
    directory = args.directory
    private_path = os.path.join(directory, ROOT_KEY)
    public_path = os.path.join(directory, ROOT_PUB)
    for path in (private_path, public_path):
        if os.path.lexists(path):
            raise CommandError(f"{path} already exists; refusing to overwrite it")
    try:
        os.makedirs(directory, mode=0o700, exist_ok=True)
        key = _keys.generate_root_key()
        _keys.save_root_key(key, private_path, public_path, passphrase)
    except FileExistsError:
        raise CommandError(f"{private_path} already exists; refusing to overwrite it")
    except OSError as e:
        raise CommandError(f"{e.filename or directory}: {e.strerror}")
    root_id = _keys.key_id(_keys.raw_public(key)).hex()
    protection = (
        f"encrypted with the passphrase in ${args.passphrase_env}"
        if passphrase
        else "NOT encrypted"
    )
    out = sys.stdout
    out.write(f"root key:   {private_path} ({protection})\n")
    out.write(f"public key: {public_path} (root id {root_id})\n")
    out.write(
        "Keep root.key off the gateway; list root.pub in "
        "recording.root_public_keys wherever recordings are verified.\n"
    )
    return 0


# --- issue ----------------------------------------------------------------


def plan_windows(
    existing: list[_keys.EpochKey], now_ns: int, end_ns: int, period_ns: int
) -> list[tuple[int, int]]:
    """
    The windows to issue keys for so that C{[now_ns, end_ns)} is covered.

    Coverage starts at the end of the existing keys' run or, where no key
    is valid, at C{now_ns} rounded down to the period.  Windows last one
    period; one that would run into an existing window ends where that
    window starts.  Windows that are over by C{now_ns} are left out.
    """
    starts = sorted(k.certificate.not_before for k in existing)
    windows = []
    aligned = now_ns - now_ns % period_ns
    for gap_start, gap_end in _keys.uncovered(existing, aligned, end_ns):
        at = gap_start
        while at < gap_end:
            stop = at + period_ns
            for start in starts:
                if at < start < stop:
                    stop = start
                    break
            if stop > now_ns:
                windows.append((at, stop))
            at = stop
    return windows


def _issue(args: argparse.Namespace) -> int:
    passphrase = _passphrase(args.passphrase_env)
    now = time.time_ns()
    if args.until is not None:
        end = round(args.until * NS)
        if end <= now:
            raise CommandError(f"--until {iso(end)} is in the past")
    else:
        end = now + round(args.days * 86400 * NS)
    directory = _keys.KeyDirectory(args.out)
    existing: list[_keys.EpochKey] = []
    if os.path.exists(args.out):
        if not os.path.isdir(args.out):
            raise CommandError(f"{args.out} is not a directory")
        existing, problems = directory.load()
        if problems:
            more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
            raise CommandError(
                f"{problems[0]}{more}; fix or remove it before issuing keys, "
                "so that new windows cannot overlap it"
            )
    others = sorted({k.certificate.gateway_id for k in existing} - {args.gateway_id})
    if others:
        raise CommandError(
            f"{args.out} holds keys for gateway {others[0]}, not {args.gateway_id}"
        )
    windows = plan_windows(existing, now, end, args.period)
    if len(windows) > MAX_KEYS:
        raise CommandError(
            f"that would issue {len(windows)} keys; use a longer --period or a "
            "nearer end"
        )
    if not windows:
        sys.stdout.write(
            f"{args.out} already covers gateway {args.gateway_id} until "
            f"{iso(_keys.covered_until(existing, now))}; no keys issued\n"
        )
        return 0
    root = _root_key(args.root_key, passphrase)
    issued = [
        key
        for start, stop in windows
        for key in _keys.issue_epoch_keys(root, args.gateway_id, start, stop - start, 1)
    ]
    try:
        directory.add(issued)
    except OSError as e:
        raise CommandError(f"{e.filename or args.out}: {e.strerror}")
    covered = _keys.covered_until(existing + issued, now)
    sys.stdout.write(
        f"issued {len(issued)} epoch keys for gateway {args.gateway_id} into "
        f"{args.out}: {iso(windows[0][0])} to {iso(windows[-1][1])}\n"
        f"covered until {iso(covered)} ({span(covered - now)} from now)\n"
    )
    return 0


def _root_key(path: str, passphrase: bytes | None) -> Ed25519PrivateKey:
    try:
        return _keys.load_root_private(path, passphrase)
    except _keys.KeyFileError as e:
        raise CommandError(str(e))


# --- revoke ---------------------------------------------------------------


def _revoke(args: argparse.Namespace) -> int:
    passphrase = _passphrase(args.passphrase_env)
    root = _root_key(args.root_key, passphrase)
    revocation = _keys.make_revocation(
        root,
        args.gateway_id,
        round(args.revoked_from * NS),
        time.time_ns(),
        args.key_id,
    )
    data = revocation.to_json()
    if args.out is None:
        sys.stdout.write(data.decode())
        return 0
    try:
        fd = os.open(args.out, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
    except FileExistsError:
        raise CommandError(f"{args.out} already exists; refusing to overwrite it")
    except OSError as e:
        raise CommandError(f"{args.out}: {e.strerror}")
    sys.stdout.write(
        f"wrote {args.out}: {revocation.describe()}; give it to every verifier "
        "(gatehouse verify --revocation FILE)\n"
    )
    return 0


# --- status ---------------------------------------------------------------


def _status(args: argparse.Namespace) -> int:
    path = args.directory
    if not os.path.isdir(path):
        raise CommandError(f"{path}: no such directory")
    scan = _keys.KeyDirectory(path).scan()
    keys = scan.keys()
    for problem in scan.problems + scan.unknown:
        sys.stderr.write(f"warning: {problem}\n")
    now = time.time_ns()
    current = _keys.current_key(keys, now)
    covered = _keys.covered_until(keys, now)
    future = [k for k in keys if k.certificate.not_after > now]
    expired = len(keys) - len(future)
    last = max((k.certificate.not_after for k in future), default=now)
    gaps = [g for g in _keys.uncovered(future, now, last) if g[0] > now]
    gateways = sorted({k.certificate.gateway_id for k in keys})

    out = sys.stdout
    out.write(f"{path}: {len(keys)} epoch keys")
    if gateways:
        out.write(f" for gateway {', '.join(gateways)}")
    out.write("\n")
    if current is None:
        out.write("  valid now:     none\n")
    else:
        cert = current.certificate
        out.write(
            f"  valid now:     key {cert.key_id.hex()[:12]} "
            f"({iso(cert.not_before)} to {iso(cert.not_after)})\n"
        )
    out.write(f"  covered until: {iso(covered)} ({span(covered - now)} from now)\n")
    if gaps:
        for start, stop in gaps:
            out.write(
                f"  gap:           {iso(start)} to {iso(stop)} ({span(stop - start)})\n"
            )
    else:
        out.write("  gaps:          none\n")
    if future and last != covered:
        out.write(f"  last key ends: {iso(last)}\n")
    if expired:
        out.write(f"  expired keys not yet erased: {expired}\n")
    for copy in scan.leftovers():
        cert = copy.key.certificate
        state = "expired" if cert.not_after <= now else f"until {iso(cert.not_after)}"
        out.write(
            f"  leftover copy: {copy.path} (key {cert.key_id.hex()[:12]}, {state})\n"
        )
    out.flush()

    if current is None:
        raise CommandError(
            "no epoch key is valid now: the gateway cannot start sessions "
            "(run gatehouse keys issue)"
        )
    if covered - now < args.warn:
        raise CommandError(
            f"the keys run out in {span(covered - now)}, within {span(args.warn)} "
            "(run gatehouse keys issue)"
        )
    return 0
