"""
C{gatehouse sessions}, C{gatehouse replay} and C{gatehouse export}: find
recorded sessions in the index, replay one as text (terminals in their
original time), export one as JSONL (or in a protocol's own format, such
as asciicast for SSH terminals).

Replay and export read the segment files as they are; they do not verify
them (C{gatehouse verify} does).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
import uuid
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from typing import Any, TextIO

from gatehouse._duration import parse_duration
from gatehouse.cli import CommandError, Handler
from gatehouse.ids import is_session_id
from gatehouse.recording.format import (
    FormatError,
    Record,
    RecordType,
    SegmentHeader,
    segment_filename,
)
from gatehouse.recording.index import IndexUnavailable, SessionRow, query_sessions
from gatehouse.recording.render import (
    ExportOptions,
    NoExport,
    Pacer,
    escape_char,
    export_jsonl,
    exporter_for,
    render,
)

__all__ = [
    "accept_relative_times",
    "configure_export",
    "configure_replay",
    "configure_sessions",
    "parse_time",
    "terminal_text",
]

_RELATIVE = re.compile(r"([+-])\s*(.+)")
_NEGATIVE_ARGUMENT = re.compile(
    r"^-(?:\d+(?:\.\d+)?(?:ms|s|m|h|d))+$|^-\d+$|^-\d*\.\d+$"
)


def accept_relative_times(parser: argparse.ArgumentParser) -> None:
    """
    Let C{parser} take C{-2h} as an option's value.

    argparse takes any argument that starts with C{-} for an option unless
    it looks like a negative number; this widens "number" to durations.
    """
    parser._negative_number_matcher = _NEGATIVE_ARGUMENT


def parse_time(text: str) -> float:
    """
    Parse a time given on the command line into Unix seconds.

    Accepts ISO 8601 (C{2026-11-22T10:00}, C{2026-11-22}, with an optional
    offset; UTC when it has none), C{now}, and times relative to now such
    as C{-2h}, C{-30m}, C{-7d} or C{+30d}.

    @raise argparse.ArgumentTypeError: with a message fit for the user.
    """
    value = text.strip()
    if value.lower() == "now":
        return time.time()
    relative = _RELATIVE.fullmatch(value)
    if relative is not None:
        sign, duration = relative.groups()
        try:
            seconds = parse_duration(duration)
        except ValueError as e:
            raise argparse.ArgumentTypeError(str(e))
        return time.time() + (seconds if sign == "+" else -seconds)
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a time (examples: 2026-11-22T10:00, 2026-11-22, "
            "-2h, -30m, -7d)"
        )
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.timestamp()


def _session_id_argument(text: str) -> str:
    if not is_session_id(text.lower()):
        raise argparse.ArgumentTypeError(f"{text!r} is not a session id (a UUIDv7)")
    return text.lower()


def _limit_argument(text: str) -> int:
    try:
        limit = int(text)
    except ValueError:
        limit = -1
    if limit < 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a count (0 for no limit)")
    return limit


def _load_recording_config(path: str) -> Any:
    from gatehouse.config import load_config

    # Looking at recordings must not create anything.
    return load_config(path, create_directories=False).recording


# --- sessions -------------------------------------------------------------


def configure_sessions(parser: argparse.ArgumentParser) -> Handler:
    """Set up C{gatehouse sessions}."""
    parser.description = (
        "List recorded sessions from the session index, newest first.  "
        "Filters combine; --command, --kind and --touched must match one "
        "and the same command."
    )
    accept_relative_times(parser)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--config", metavar="FILE", help="the gateway's configuration")
    source.add_argument("--index", metavar="FILE", help="the session index itself")
    parser.add_argument(
        "--identity",
        metavar="SUBJECT",
        help="the identity's subject (its stable id), exactly",
    )
    parser.add_argument(
        "--name",
        metavar="TEXT",
        help="part of the display name (any case; names are whatever a token "
        "claims, so confirm the SUBJECT column)",
    )
    parser.add_argument("--target", metavar="NAME", help="the target's name")
    parser.add_argument("--protocol", metavar="NAME", help="postgres, ssh, http, ...")
    parser.add_argument(
        "--since",
        type=parse_time,
        metavar="TIME",
        help="sessions still running at or after TIME (ISO 8601 or -2h, -7d, ...)",
    )
    parser.add_argument(
        "--until", type=parse_time, metavar="TIME", help="sessions started before TIME"
    )
    # dest: the top-level parser keeps the subcommand's name in "command".
    parser.add_argument(
        "--command",
        dest="command_text",
        metavar="TEXT",
        help="part of a command's text",
    )
    parser.add_argument(
        "--kind", metavar="KIND", help="a command kind (DeleteStmt, exec)"
    )
    parser.add_argument(
        "--touched",
        metavar="OBJECT",
        help="a table or object a command touched (users matches public.users)",
    )
    parser.add_argument(
        "--limit",
        type=_limit_argument,
        default=100,
        metavar="N",
        help="at most N sessions (default 100, 0 for all)",
    )
    parser.add_argument("--json", action="store_true", help="print JSON")
    return _sessions


def _sessions(args: argparse.Namespace) -> int:
    path = args.index or _load_recording_config(args.config).index
    try:
        rows = query_sessions(
            path,
            identity=args.identity,
            name=args.name,
            target=args.target,
            protocol=args.protocol,
            since=args.since,
            until=args.until,
            command=args.command_text,
            kind=args.kind,
            touched=args.touched,
            limit=args.limit or None,
        )
    except IndexUnavailable as e:
        raise CommandError(str(e))
    if args.json:
        json.dump([session_json(row) for row in rows], sys.stdout, indent=1)
        sys.stdout.write("\n")
    else:
        _session_table(rows, sys.stdout)
    return 0


def _utc(seconds: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(seconds))


def iso_time(seconds: float | None) -> str | None:
    """Unix seconds as ISO 8601 UTC (C{...Z}); None stays None."""
    if seconds is None:
        return None
    return datetime.fromtimestamp(seconds, UTC).isoformat().replace("+00:00", "Z")


def _duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f}s"
    whole = int(seconds)
    days, rest = divmod(whole, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d{hours:02d}h{minutes:02d}m"
    if hours:
        return f"{hours}h{minutes:02d}m{secs:02d}s"
    return f"{minutes}m{secs:02d}s"


def _status(row: SessionRow) -> str:
    if not row.closed:
        return "open"
    if row.close_reason:
        return f"closed ({row.close_reason})"
    return "closed"


def terminal_text(text: str, escaped: bool = False) -> str:
    """
    C{text} safe to print on a terminal: every character that is not
    printable (control characters such as ESC, CR, BS and newline, C1
    controls, bidirectional overrides, line separators) is shown as
    C{\\xHH}, C{\\uHHHH} or C{\\UHHHHHHHH}.

    Backslashes are doubled, so a client cannot fake an escape: C{\\x1b}
    on screen is the character ESC, and C{\\\\x1b} the four characters
    it looks like.

    @param escaped: C{text} is already in the index's escaped form
        (L{gatehouse.recording.index.index_text}), whose backslashes are
        doubled and whose C{\\xHH} (HH 80 to ff) are bytes that were not
        valid in the client's encoding.
    """
    if not escaped and text.isprintable() and "\\" not in text:
        return text
    if not escaped:
        text = text.replace("\\", "\\\\")
    return "".join(ch if ch.isprintable() else escape_char(ch) for ch in text)


def _cell(row: SessionRow, field: str) -> str:
    value = getattr(row, field) or ""
    return terminal_text(value, field in row.escaped) if value else "-"


def _session_table(rows: list[SessionRow], out: TextIO) -> None:
    if not rows:
        out.write("no matching sessions\n")
        return
    header: tuple[str, ...]
    header = ("ID", "STARTED (UTC)", "DURATION", "SUBJECT", "NAME", "TARGET")
    header += ("ROLE", "PROTOCOL", "SEGMENTS", "STATUS")
    table = [header]
    for row in rows:
        status = _status(row)
        reason_escaped = "close_reason" in row.escaped
        table.append(
            (
                row.id,
                _utc(row.started),
                "-" if row.ended is None else _duration(row.ended - row.started),
                _cell(row, "subject"),
                _cell(row, "display_name"),
                _cell(row, "target"),
                _cell(row, "upstream_role"),
                terminal_text(row.protocol, "protocol" in row.escaped),
                str(row.segments),
                terminal_text(status, reason_escaped)
                + (" [index problems]" if row.index_problems else ""),
            )
        )
    widths = [max(len(line[i]) for line in table) for i in range(len(header))]
    for line in table:
        cells = [cell.ljust(width) for cell, width in zip(line, widths, strict=True)]
        out.write("  ".join(cells).rstrip() + "\n")


def session_json(row: SessionRow) -> dict[str, Any]:
    """A session row as JSON (C{gatehouse sessions --json}, the admin API)."""
    return {
        "id": row.id,
        "gateway_id": row.gateway_id,
        "protocol": row.protocol,
        "target": row.target,
        "listener": row.listener,
        "subject": row.subject,
        "display_name": row.display_name,
        "issuer": row.issuer,
        "groups": list(row.groups),
        "client_address": row.client_address,
        "started": iso_time(row.started),
        "started_unix": row.started,
        "ended": iso_time(row.ended),
        "ended_unix": row.ended,
        "close_reason": row.close_reason,
        "segments": row.segments,
        "final": row.final,
        "last_link": None if row.last_link is None else row.last_link.hex(),
        "records": row.records,
        "bytes_from_client": row.bytes_from_client,
        "bytes_to_client": row.bytes_to_client,
        "bytes_to_upstream": row.bytes_to_upstream,
        "bytes_from_upstream": row.bytes_from_upstream,
        "masked_values": row.masked_values,
        "upstream_role": row.upstream_role,
        "escaped": list(row.escaped),
        "index_problems": row.index_problems,
        "open": row.ended is None,
        "directory": row.directory,
    }


# --- replay and export ----------------------------------------------------


def _add_session_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("session_id", metavar="SESSION_ID", type=_session_id_argument)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--config", metavar="FILE", help="the gateway's configuration")
    source.add_argument(
        "--recordings", metavar="DIR", help="the recording directory itself"
    )


def _session_directory(args: argparse.Namespace) -> str:
    from gatehouse.recording.reader import find_session_directory

    root = args.recordings or _load_recording_config(args.config).directory
    if not os.path.isdir(root):
        raise CommandError(f"{root}: no such recording directory")
    directory = find_session_directory(root, uuid.UUID(args.session_id))
    if directory is None:
        raise CommandError(f"no recording of session {args.session_id} in {root}")
    return directory


def _unreadable(directory: str, e: Exception) -> CommandError:
    if isinstance(e, OSError):
        why = f"{e.filename or directory}: {e.strerror}"
    else:
        why = f"{directory}: {e}"
    return CommandError(f"{why} (gatehouse verify tells what is wrong)")


class _Watch:
    """Passes records through, remembering the type of the last one."""

    def __init__(self, records: Iterable[Record]):
        self._records = records
        self.last: int | None = None

    def __iter__(self) -> Iterator[Record]:
        for record in self._records:
            self.last = record.type
            yield record


def _note_end(watch: _Watch, session_id: str) -> None:
    # The reader stops quietly at damage or at an unsealed tail; say so.
    if watch.last is None:
        sys.stderr.write(f"note: no readable records in session {session_id}\n")
    elif watch.last != RecordType.CLOSE:
        sys.stderr.write(
            "note: the recording ends before the session's CLOSE record (still "
            "recording, cut short or damaged; gatehouse verify tells which)\n"
        )


def configure_replay(parser: argparse.ArgumentParser) -> Handler:
    """Set up C{gatehouse replay}."""
    parser.description = (
        "Show a recorded session as text, with the renderer for its protocol. "
        "Replay does not verify the recording: run gatehouse verify for that."
    )
    _add_session_arguments(parser)
    parser.add_argument(
        "--full",
        action="store_true",
        help="show every row and every value whole (by default long results "
        "and values are abbreviated, and each cut says how much it left out)",
    )
    pace = parser.add_mutually_exclusive_group()
    pace.add_argument(
        "--speed",
        type=_speed_argument,
        metavar="X",
        help="play terminal output X times faster than it was recorded (by "
        "default in its original time when the output is a terminal, at once "
        "otherwise)",
    )
    pace.add_argument(
        "--no-wait",
        action="store_true",
        help="print terminal output at once, without its original timing",
    )
    parser.add_argument(
        "--idle-limit",
        type=_speed_argument,
        metavar="SECONDS",
        help="cut pauses in terminal output to at most SECONDS",
    )
    return _replay


def _speed_argument(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r} is not a number above 0")
    return value


def _pacer(args: argparse.Namespace) -> Pacer | None:
    if args.no_wait or (args.speed is None and not sys.stdout.isatty()):
        return None
    return Pacer(args.speed or 1.0, args.idle_limit)


def _replay(args: argparse.Namespace) -> int:
    from gatehouse.recording.reader import read_meta, read_records

    directory = _session_directory(args)
    try:
        meta = read_meta(directory) or {}
        protocol = meta.get("protocol")
        watch = _Watch(read_records(directory))
        render(
            watch,
            sys.stdout,
            protocol if isinstance(protocol, str) else None,
            full=args.full,
            pacer=_pacer(args),
        )
        sys.stdout.flush()
    except BrokenPipeError:
        raise  # not an unreadable recording: gatehouse.cli.main handles it
    except (FormatError, OSError) as e:
        sys.stdout.flush()
        raise _unreadable(directory, e)
    _note_end(watch, args.session_id)
    return 0


def configure_export(parser: argparse.ArgumentParser) -> Handler:
    """Set up C{gatehouse export}."""
    parser.description = (
        "Export every record of a session, one JSON object per line, for "
        "SIEM tools; or, with --format asciicast, a terminal of an SSH session "
        "as asciicast v2 for asciinema.  Export does not verify the recording."
    )
    _add_session_arguments(parser)
    parser.add_argument(
        "--format",
        choices=["jsonl", "asciicast"],
        default="jsonl",
        help="jsonl (the default): every record; asciicast: one terminal",
    )
    parser.add_argument(
        "--channel",
        type=int,
        metavar="N",
        help="asciicast: the terminal of SSH channel N (default: the first)",
    )
    parser.add_argument(
        "--stdin",
        action="store_true",
        help='asciicast: include what the client typed as input ("i") events; '
        "typed passwords included",
    )
    parser.add_argument(
        "-o", "--output", metavar="FILE", help="write to FILE instead of stdout"
    )
    return _export


def wall_start_ns(directory: str) -> int | None:
    """
    The wall time, in nanoseconds, of mono time 0 of the session in
    C{directory}, from segment 0's header; None when it cannot be read.
    """
    try:
        with open(os.path.join(directory, segment_filename(0)), "rb") as f:
            data = f.read(64 * 1024)
        header, _ = SegmentHeader.parse(data)
    except (OSError, FormatError):
        return None
    return header.wall_start - header.mono_start


def _export(args: argparse.Namespace) -> int:
    from gatehouse.recording.reader import read_meta, read_records

    directory = _session_directory(args)
    options = ExportOptions(
        args.session_id, wall_start_ns(directory), args.channel, args.stdin
    )
    if args.format == "jsonl":

        def export(records: Iterable[Record], out: TextIO) -> int:
            return export_jsonl(
                records,
                out,
                session_id=options.session_id,
                wall_start_ns=options.wall_start_ns,
            )

    else:
        try:
            protocol = (read_meta(directory) or {}).get("protocol")
        except (FormatError, OSError) as e:
            raise _unreadable(directory, e)
        exporter = exporter_for(
            protocol if isinstance(protocol, str) else None, args.format
        )
        if exporter is None:
            raise CommandError(
                f"sessions of protocol {protocol!r} have no {args.format} export"
            )

        def export(records: Iterable[Record], out: TextIO) -> int:
            try:
                return exporter(records, out, options)
            except NoExport as e:
                raise CommandError(f"session {args.session_id}: {e}")

    watch = _Watch(read_records(directory))
    if args.output is None:
        try:
            export(watch, sys.stdout)
            sys.stdout.flush()
        except BrokenPipeError:
            raise  # not an unreadable recording: gatehouse.cli.main handles it
        except (FormatError, OSError) as e:
            sys.stdout.flush()
            raise _unreadable(directory, e)
        _note_end(watch, args.session_id)
        return 0
    partial = args.output + ".partial"
    try:
        with open(partial, "w", encoding="utf-8", newline="\n") as out:
            try:
                count = export(watch, out)
            except (FormatError, OSError) as e:
                raise _unreadable(directory, e)
        os.replace(partial, args.output)
    except OSError as e:
        raise CommandError(f"{e.filename or args.output}: {e.strerror}")
    finally:
        if os.path.exists(partial):
            os.unlink(partial)
    what = "records" if args.format == "jsonl" else f"{args.format} events"
    sys.stderr.write(f"{count} {what} written to {args.output}\n")
    _note_end(watch, args.session_id)
    return 0
