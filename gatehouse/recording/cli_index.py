"""
C{gatehouse index check|rebuild}: the session index against the recordings.

C{check} prints one line per fact on which the index and a recording
disagree (C{SESSION: FIELD: index says …, recording says …}) and exits 1
when there is any, 0 when there is none, 2 on a usage error.  C{rebuild}
writes a fresh index from the recordings, to C{--output} or, with
C{--replace}, in place of the configured index (the old one kept as
C{INDEX.bak-TIME}); it refuses to replace an index a process has open.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import TextIO

from gatehouse.cli import CommandError, Handler

__all__ = ["configure", "holders"]

USAGE_ERROR = 2


def configure(parser: argparse.ArgumentParser) -> Handler:
    """Set up C{gatehouse index check|rebuild}."""
    sub = parser.add_subparsers(dest="index_command", metavar="ACTION", title="actions")
    sub.required = True
    check = sub.add_parser(
        "check",
        help="compare the index with the recordings",
        description="Compare every fact the index holds that a recording also "
        "holds (identity, target, listener, client address, upstream role, "
        "times, close reason, counts, commands) with the recording, under seals "
        "that verify.  Exit status: 0 no differences, 1 differences found "
        "(including sessions only one side knows, and recordings that do not "
        "verify), 2 usage error.",
    )
    check.add_argument("sessions", nargs="*", metavar="SESSION_ID")
    check.add_argument("--json", action="store_true", help="print one JSON object")
    check.set_defaults(index_run=_check)
    rebuild = sub.add_parser(
        "rebuild",
        help="build a fresh index from the recordings",
        description="Build a fresh index from the recordings alone (commands "
        "the policy did not allow come from their decision events; allowed "
        "commands are carried over from the old index where they check out "
        "against the recording).  Writes --output PATH, or with --replace "
        "replaces the configured index atomically, keeping the old file as "
        "INDEX.bak-TIME; refuses while a process (the daemon) has it open.",
    )
    rebuild.add_argument("--output", metavar="PATH", help="write the new index here")
    rebuild.add_argument(
        "--replace",
        action="store_true",
        help="replace the configured index (stop the gateway first)",
    )
    rebuild.set_defaults(index_run=_rebuild)
    for p in (check, rebuild):
        p.add_argument("--config", metavar="FILE", help="the gateway's configuration")
        p.add_argument("--index", metavar="FILE", help="the index (default: config)")
        p.add_argument(
            "--recordings", metavar="DIR", help="the recordings (default: config)"
        )
        p.add_argument(
            "--root-key",
            action="append",
            default=[],
            metavar="PEM",
            help="a trusted root public key (default: the configuration's)",
        )
    return run


def run(args: argparse.Namespace, out: TextIO | None = None) -> int:
    """Run C{gatehouse index ACTION}; return the exit status."""
    out = out or sys.stdout
    try:
        status: int = args.index_run(args, out)
        return status
    except CommandError as e:
        sys.stderr.write(f"gatehouse index: {e}\n")
        return USAGE_ERROR


class _Paths:
    def __init__(self, args: argparse.Namespace):
        recording = None
        if args.config is not None:
            from gatehouse.config import ConfigError, load_config

            try:
                recording = load_config(args.config, create_directories=False).recording
            except ConfigError as e:
                raise CommandError("\n".join(e.lines()))
        need = "give {} or --config FILE"
        index: str | None = args.index or (recording.index if recording else None)
        recordings: str | None = args.recordings or (
            recording.directory if recording else None
        )
        keys = args.root_key or (recording.root_public_keys if recording else [])
        if index is None:
            raise CommandError(need.format("--index FILE"))
        if recordings is None:
            raise CommandError(need.format("--recordings DIR"))
        self.index: str = index
        self.recordings: str = recordings
        if not keys:
            raise CommandError("no trusted root keys: give --root-key PEM")
        if not os.path.isdir(self.recordings):
            raise CommandError(f"{self.recordings}: no such recording directory")
        from gatehouse.recording.keys import KeyFileError, TrustAnchors

        try:
            self.anchors = TrustAnchors.from_files(keys)
        except KeyFileError as e:
            raise CommandError(str(e))
        from gatehouse.recording.keys import load_revocations

        try:
            # The configured statements apply as they do for verify.
            self.revocations = load_revocations(
                self.anchors, list(recording.revocations) if recording else []
            )
        except KeyFileError as e:
            raise CommandError(str(e))


def _check(args: argparse.Namespace, out: TextIO) -> int:
    from gatehouse.recording.index import IndexUnavailable
    from gatehouse.recording.index_check import check_index

    paths = _Paths(args)
    try:
        found = check_index(
            paths.index,
            paths.recordings,
            paths.anchors,
            args.sessions,
            revocations=paths.revocations,
        )
    except IndexUnavailable as e:
        raise CommandError(str(e))
    if args.json:
        doc = {
            "differences": [d.as_dict() for d in found],
            "exit_code": int(bool(found)),
        }
        out.write(json.dumps(doc, indent=2) + "\n")
    else:
        for difference in found:
            out.write(f"{difference}\n")
        sessions = len({d.session_id for d in found})
        out.write(
            f"{len(found)} difference(s) in {sessions} session(s)\n"
            if found
            else "index agrees with the recordings\n"
        )
    return 1 if found else 0


def holders(path: str) -> list[int]:
    """
    The ids of processes that have C{path} (or its C{-wal}) open, as far
    as /proc shows (all of them for root, one's own otherwise).
    """
    targets = set()
    for name in (path, path + "-wal"):
        try:
            st = os.stat(name)
        except OSError:
            continue
        targets.add((st.st_dev, st.st_ino))
    found = []
    try:
        pids = [p for p in os.listdir("/proc") if p.isdigit()]
    except OSError:
        return []
    for pid in pids:
        fd_dir = f"/proc/{pid}/fd"
        try:
            fds = os.listdir(fd_dir)
        except OSError:
            continue
        for fd in fds:
            try:
                st = os.stat(os.path.join(fd_dir, fd))
            except OSError:
                continue
            if (st.st_dev, st.st_ino) in targets:
                found.append(int(pid))
                break
    return found


def _checkpoint(path: str) -> None:
    """Fold the old index's write-ahead log into its file, so its backup is whole."""
    import sqlite3

    conn = sqlite3.connect(path)
    try:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        conn.close()


def _refuse_if_open(index: str) -> None:
    busy = holders(index)
    if busy:
        raise CommandError(
            f"{index} is open in process {', '.join(map(str, busy))} "
            "(the gateway?): stop it first, or use --output PATH"
        )


def _rebuild(args: argparse.Namespace, out: TextIO) -> int:
    from gatehouse.recording.index_check import rebuild_index

    if (args.output is None) == (not args.replace):
        raise CommandError("give --output PATH, or --replace")
    paths = _Paths(args)
    old = paths.index if os.path.isfile(paths.index) else None
    if args.replace:
        _refuse_if_open(paths.index)
        output = f"{paths.index}.rebuild-{os.getpid()}"
    else:
        output = str(args.output)
        if os.path.exists(output):
            raise CommandError(f"{output}: already exists")
    for leftover in (output, output + "-wal", output + "-shm"):
        if args.replace and os.path.exists(leftover):
            os.unlink(leftover)
    sessions, commands = rebuild_index(output, paths.recordings, paths.anchors, old)
    if args.replace:
        try:
            # Again: a gateway may have started while the rebuild ran.
            _refuse_if_open(paths.index)
        except CommandError:
            for leftover in (output, output + "-wal", output + "-shm"):
                if os.path.exists(leftover):
                    os.unlink(leftover)
            raise
        if old is not None:
            _checkpoint(old)
            backup = f"{paths.index}.bak-{time.strftime('%Y%m%dT%H%M%S')}"
            os.link(paths.index, backup)
            for suffix in ("-wal", "-shm"):
                if os.path.exists(paths.index + suffix):
                    os.unlink(paths.index + suffix)
            out.write(f"old index kept as {backup}\n")
        os.replace(output, paths.index)
        output = paths.index
    out.write(f"{output}: {sessions} session(s), {commands} command(s)\n")
    return 0
