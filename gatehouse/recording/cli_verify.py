"""
C{gatehouse verify PATH|SESSION_ID}: verify a recorded session.

Prints one line per finding (C{segment: class: detail}) and a summary, or
with C{--json} one JSON object.  Exits 0 when the session is complete and
every check passes, 3 when its only problem is an unsealed end (not
tampering), 1 when anything else was found (including a session the
index knows whose recording is gone: C{missing}; and an index row whose
identity or target contradicts the recording: C{index-mismatch}), and 2
when it was asked something it cannot do (an unknown path, a session
neither the recordings nor the index know, no trusted keys).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, TextIO

from gatehouse.cli import Handler

if TYPE_CHECKING:
    # Imported where used: `gatehouse verify --help` stays quick.
    from gatehouse.config import GatehouseConfig, RecordingConfig
    from gatehouse.recording.index import IndexFacts
    from gatehouse.recording.keys import Revocation, TrustAnchors
    from gatehouse.recording.verify import VerifyReport

__all__ = ["add_arguments", "configure", "run"]

USAGE_ERROR = 2
#: Show progress only for runs longer than this (seconds).
_PROGRESS_AFTER = 0.5
_PROGRESS_EVERY = 0.1


class _UsageError(Exception):
    """What was asked cannot be done; exit 2 with this message."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add C{gatehouse verify}'s arguments to C{parser}."""
    parser.description = (
        "Verify a recorded session: every segment's hash chain, seal and "
        "signing key, and that no segment is missing, cut short, out of "
        "order or from elsewhere.  Exit status: 0 complete and intact (also "
        "when the gateway ended the session because it could not record "
        "more: the reason is shown), "
        "3 only an unsealed end (still recording, or the gateway stopped), "
        "1 problems found (also: the index knows the session but its recording "
        "is gone; the index's identity or target contradicts the recording), "
        "2 usage error."
    )
    parser.add_argument(
        "target",
        metavar="PATH|SESSION_ID",
        help="a session's directory, or a session id to look up in the recordings",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--config", metavar="FILE", help="the gateway's configuration")
    parser.add_argument(
        "--root-key",
        action="append",
        default=[],
        metavar="PEM",
        help="a trusted root public key (repeatable; default: the configuration's "
        "recording.root_public_keys)",
    )
    parser.add_argument(
        "--recordings",
        metavar="DIR",
        help="the recording directory (default: the configuration's)",
    )
    parser.add_argument(
        "--index",
        metavar="FILE",
        help="the session index, for what it knows about the session "
        "(default: the configuration's)",
    )
    add_key_arguments(parser)


def add_key_arguments(parser: argparse.ArgumentParser) -> None:
    """C{--revocation}, C{--max-skew}, C{--gateway-id} and C{--any-gateway}."""
    parser.add_argument(
        "--revocation",
        action="append",
        default=[],
        metavar="FILE",
        help="a revocation statement (gatehouse keys revoke) to apply "
        "(repeatable; also the configuration's recording.revocations); one "
        "not signed by a trusted root is refused",
    )
    parser.add_argument(
        "--max-skew",
        default="5m",
        type=_skew_argument,
        metavar="DURATION",
        help="seals dated later than this past the local clock are bad-key "
        "(default 5m)",
    )
    pin = parser.add_mutually_exclusive_group()
    pin.add_argument(
        "--gateway-id",
        metavar="ID",
        help="only this gateway may have signed; seals by any other are "
        "foreign (default with --config: its gateway.id)",
    )
    pin.add_argument(
        "--any-gateway",
        action="store_true",
        help="accept seals by any gateway under a trusted root, even with --config",
    )


def _skew_argument(text: str) -> int:
    from gatehouse._duration import parse_duration

    try:
        return round(parse_duration(text) * 1_000_000_000)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e))


def configure(parser: argparse.ArgumentParser) -> Handler:
    """Set up C{gatehouse verify} (for L{gatehouse.cli}'s registry)."""
    add_arguments(parser)
    return run


def run(args: argparse.Namespace, out: TextIO | None = None) -> int:
    """Run C{gatehouse verify}; return the exit status."""
    out = out or sys.stdout
    try:
        return _run(args, out)
    except (_UsageError, _NoRecording) as e:
        sys.stderr.write(f"gatehouse verify: {e}\n")
        return USAGE_ERROR


def _run(args: argparse.Namespace, out: TextIO) -> int:
    from gatehouse.recording.verify import verify_session

    config = _Config(args.config)
    try:
        directory, session_id = _locate(args.target, args.recordings, config)
    except _NoRecording as gone:
        return _vanished(gone, args, config, out)
    anchors = _anchors(args.root_key, config)
    facts = _facts(args.index, config, directory, session_id)
    revocations = _revocations(anchors, [*args.revocation, *config.revocations()])
    gateway = _pinned_gateway(args, config)
    progress = _Progress(sys.stderr) if _is_tty(sys.stderr) else None
    try:
        report = verify_session(
            directory,
            anchors,
            facts,
            expected_session_id=session_id,
            progress=progress,
            revocations=revocations,
            expected_gateway=gateway,
            clock=time.time_ns,
            max_skew=args.max_skew,
        )
    finally:
        if progress is not None:
            progress.clear()
    if facts is not None and report.exit_code in (0, 3):
        report = _compare_with_index(report, anchors, args.index, config)
    return _show(report, args, out)


def _show(report: VerifyReport, args: argparse.Namespace, out: TextIO) -> int:
    if args.json:
        out.write(json.dumps(report.as_dict(), indent=2) + "\n")
    else:
        for finding in report.findings:
            out.write(f"{finding}\n")
        out.write(_summary(report) + "\n")
    return report.exit_code


#: The finding class for an index row that contradicts its recording.
INDEX_MISMATCH = "index-mismatch"
#: The facts verify compares with the index row (the identity and target).
_COMPARED = ("subject", "display_name", "issuer", "groups", "target")


def _index_path(index: str | None, config: _Config) -> str | None:
    if index is not None:
        return index
    if config.path is None:
        return None
    return config.recording("--index FILE").index


def _compare_with_index(
    report: VerifyReport, anchors: TrustAnchors, index: str | None, config: _Config
) -> VerifyReport:
    """
    C{report} with an C{index-mismatch} finding for each of the identity
    and target facts on which the index row and the recording (its
    authenticated records) disagree.
    """
    import attrs

    from gatehouse.recording.index import IndexUnavailable, get_session
    from gatehouse.recording.index_check import check_session, read_recorded
    from gatehouse.recording.verify import Finding

    path = _index_path(index, config)
    if path is None or report.session_id is None:
        return report
    try:
        row = get_session(path, report.session_id)
    except IndexUnavailable:
        return report
    if row is None:
        return report
    recorded = read_recorded(report.directory, anchors)
    found = [
        Finding(None, INDEX_MISMATCH, f"the index's {str(d).split(': ', 1)[1]}")
        for d in check_session(row, (), recorded)
        if d.field in _COMPARED
    ]
    if not found:
        return report
    return attrs.evolve(report, findings=report.findings + tuple(found))


class _NoRecording(Exception):
    """A session id with no recording directory under the recordings root."""

    def __init__(self, session_id: uuid.UUID, root: str):
        super().__init__(f"no recording of session {session_id} in {root}")
        self.session_id = session_id
        self.root = root


def _vanished(
    gone: _NoRecording, args: argparse.Namespace, config: _Config, out: TextIO
) -> int:
    """
    Exit 1 with a C{missing} finding when the index knows the session (its
    recording existed and is gone); a usage error (2) when nothing does.
    """
    from gatehouse.recording.index import IndexUnavailable, get_session
    from gatehouse.recording.verify import MISSING, Finding, VerifyReport

    path = _index_path(args.index, config)
    row = None
    if path is not None and os.path.isfile(path):
        try:
            row = get_session(path, str(gone.session_id))
        except IndexUnavailable as e:
            sys.stderr.write(f"gatehouse verify: {e}\n")
    if row is None:
        raise _UsageError(str(gone))
    finding = Finding(
        None,
        MISSING,
        f"the index knows session {gone.session_id} (recorded in "
        f"{row.directory}), but there is no recording of it in {gone.root}",
    )
    report = VerifyReport(
        str(gone.session_id), row.directory, (finding,), 0, 0, 0, False
    )
    return _show(report, args, out)


def _is_tty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


class _Config:
    """The configuration file, loaded only if something is needed from it."""

    def __init__(self, path: str | None):
        self.path = path
        self._config: GatehouseConfig | None = None

    def recording(self, what: str) -> RecordingConfig:
        if self.path is None:
            raise _UsageError(f"give {what}, or --config FILE")
        return self._load(self.path).recording

    def revocations(self) -> tuple[str, ...]:
        """The configured recording.revocations (none without a configuration)."""
        if self.path is None:
            return ()
        return self._load(self.path).recording.revocations

    def gateway_id(self) -> str | None:
        """The configured gateway.id, or None without a configuration."""
        return None if self.path is None else self._load(self.path).gateway.id

    def _load(self, path: str) -> GatehouseConfig:
        if self._config is None:
            from gatehouse.config import ConfigError, load_config

            try:
                self._config = load_config(path, create_directories=False)
            except ConfigError as e:
                raise _UsageError("\n".join(e.lines()))
        return self._config


def _parse_session_id(text: str) -> uuid.UUID | None:
    from gatehouse.ids import is_session_id

    return uuid.UUID(text) if is_session_id(text.lower()) else None


def _locate(
    target: str, recordings: str | None, config: _Config
) -> tuple[str, uuid.UUID | None]:
    """The session directory, and the session id when one was given."""
    from gatehouse.recording.reader import find_session_directory, list_segments

    if os.path.isdir(target):
        named = _parse_session_id(os.path.basename(os.path.normpath(target)))
        if named is None and not list_segments(target):
            # Not a session's directory (the recordings root, say); one named
            # by a session id but emptied is a verdict, not a usage error.
            raise _UsageError(f"{target}: not a session directory (no seg-*.ghs files)")
        return target, None
    session_id = _parse_session_id(target)
    if session_id is None:
        raise _UsageError(f"{target}: neither a session directory nor a session id")
    root = recordings or config.recording("--recordings DIR").directory
    if not os.path.isdir(root):
        raise _UsageError(f"{root}: no such recording directory")
    directory = find_session_directory(root, session_id)
    if directory is None:
        raise _NoRecording(session_id, root)
    return directory, session_id


def _anchors(root_keys: list[str], config: _Config) -> TrustAnchors:
    from gatehouse.recording.keys import KeyFileError, TrustAnchors

    paths = root_keys or config.recording("--root-key PEM").root_public_keys
    if not paths:
        raise _UsageError("no trusted root keys: give --root-key PEM")
    try:
        return TrustAnchors.from_files(paths)
    except KeyFileError as e:
        raise _UsageError(str(e))


def _revocations(anchors: TrustAnchors, paths: list[str]) -> list[Revocation]:
    from gatehouse.recording.keys import KeyFileError, load_revocations

    try:
        return load_revocations(anchors, paths)
    except KeyFileError as e:
        raise _UsageError(str(e))


def _pinned_gateway(args: argparse.Namespace, config: _Config) -> str | None:
    """The gateway that should have signed: given, else the configuration's."""
    if args.any_gateway:
        return None
    if args.gateway_id is not None:
        given: str = args.gateway_id
        return given
    return config.gateway_id()


def _session_id_of(directory: str) -> uuid.UUID | None:
    """The session id a directory is named by, or else its first segment's."""
    from gatehouse.recording.reader import SegmentScanner, list_segments

    name = _parse_session_id(os.path.basename(os.path.normpath(directory)))
    if name is not None:
        return name
    try:
        segments = list_segments(directory)
        if segments:
            path = os.path.join(directory, segments[0][1])
            with SegmentScanner(path) as scanner:
                if scanner.header is not None:
                    return uuid.UUID(bytes=scanner.header.session_id)
    except OSError:
        pass
    return None


def _facts(
    index: str | None, config: _Config, directory: str, session_id: uuid.UUID | None
) -> IndexFacts | None:
    """What the index knows about the session; None when it is not known."""
    explicit = index is not None
    if index is None:
        if config.path is None:
            return None
        index = config.recording("--index FILE").index
        if not os.path.exists(index):
            return None
    elif not os.path.isfile(index):
        raise _UsageError(f"{index}: no such index file")
    from gatehouse.recording.index import IndexUnavailable, facts_for

    session_id = session_id or _session_id_of(directory)
    if session_id is None:
        return None
    try:
        return facts_for(index, str(session_id))
    except IndexUnavailable as e:
        if explicit:
            raise _UsageError(str(e))
        sys.stderr.write(f"gatehouse verify: {e}; verifying without the index\n")
        return None


def _summary(report: VerifyReport) -> str:
    who = f"session {report.session_id}" if report.session_id else report.directory
    counts = (
        f"{report.segments} segment{'s' if report.segments != 1 else ''}, "
        f"{report.records} records, {report.sealed_records} sealed"
    )
    code = report.exit_code
    if code == 0:
        if report.recording_ended:
            return (
                f"{who}: OK: complete and intact ({counts}); the gateway ended "
                f"the session because it could not record more: "
                f"{report.recording_ended}"
            )
        return f"{who}: OK: complete and intact ({counts})"
    if code == 3:
        return (
            f"{who}: INCOMPLETE: intact as far as it goes, but without its final "
            f"seal ({counts})"
        )
    n = sum(1 for f in report.findings if f.problem != "incomplete")
    return f"{who}: FAILED: {n} problem{'s' if n != 1 else ''} found ({counts})"


class _Progress:
    """A one-line progress bar on a terminal, for runs that take a while."""

    def __init__(
        self, stream: TextIO, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.stream = stream
        self.clock = clock
        self.started = clock()
        self.last = 0.0
        self.shown = False

    def __call__(self, done: int, total: int) -> None:
        now = self.clock()
        if now - self.started < _PROGRESS_AFTER or now - self.last < _PROGRESS_EVERY:
            return
        self.last = now
        fraction = done / total if total else 1.0
        width = 30
        filled = int(fraction * width)
        self.stream.write(
            f"\rverifying [{'#' * filled}{'.' * (width - filled)}] "
            f"{fraction:4.0%} {done / 1e6:,.0f}/{total / 1e6:,.0f} MB"
        )
        self.stream.flush()
        self.shown = True

    def clear(self) -> None:
        if self.shown:
            self.stream.write("\r\x1b[K")
            self.stream.flush()
