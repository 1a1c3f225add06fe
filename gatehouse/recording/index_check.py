"""
The session index checked against, and rebuilt from, the recordings.

The index is derived data: every fact it holds that a recording also holds
(identity, target, listener, client address, upstream role, times, close
reason, counts, commands) must agree with the recording, and only what the
recording says under a seal that verifies counts.  L{check_index} names
each disagreement per session and field; L{rebuild_index} writes a fresh
index from the recordings.
"""

from __future__ import annotations

import bisect
import json
import os
import sqlite3
from collections.abc import Iterable, Sequence
from typing import Any

import attrs

from gatehouse.recording.format import Direction, Record, RecordType
from gatehouse.recording.index import (
    CRASHED,
    CommandRow,
    IndexUnavailable,
    SessionRow,
    approvals_for,
    commands_for,
    get_session,
    query_sessions,
    unescape_index_text,
)
from gatehouse.recording.keys import Revocation, TrustAnchors
from gatehouse.recording.reader import SegmentScanner, list_segments, read_records
from gatehouse.recording.recorder import MAX_CLOSE_REASON
from gatehouse.recording.verify import VerifyReport, verify_session

__all__ = [
    "COMMAND_FIELDS",
    "SESSION_FIELDS",
    "Difference",
    "Recorded",
    "check_index",
    "check_session",
    "read_recorded",
    "rebuild_index",
    "recording_directories",
]

#: The index's time of a command or an end may trail the record it
#: stands for (the index hears after the write is durable) by this many
#: seconds, and lead it by L{EARLY_SLACK}.
LATE_SLACK = 10.0
EARLY_SLACK = 1.0

#: The session fields L{check_session} compares.
SESSION_FIELDS = (
    "gateway_id",
    "protocol",
    "listener",
    "client_address",
    "started",
    "subject",
    "display_name",
    "issuer",
    "groups",
    "target",
    "upstream_role",
    "ended",
    "close_reason",
    "segments",
    "records",
    "final",
    "bytes_from_client",
    "bytes_to_client",
)
#: Session fields the recording does not hold (the gateway's own bytes to
#: and from the target include its login, which is never recorded):
#: L{rebuild_index} carries them over from the old index, unchecked.
UNCHECKED = ("masked_values", "bytes_to_upstream", "bytes_from_upstream")
#: The command fields L{check_session} compares.
COMMAND_FIELDS = ("seq", "channel", "at", "kind", "text", "decision", "objects")

# The client's directions only: the gateway's own exchange with the target
# (its login, with credentials) is counted but not recorded.
_BYTES = {
    "bytes_from_client": Direction.CLIENT_TO_GATEWAY,
    "bytes_to_client": Direction.GATEWAY_TO_CLIENT,
}


@attrs.frozen
class Difference:
    """
    One fact on which the index and a recording disagree.

    @ivar session_id: the session.
    @ivar field: the index's field (C{subject}, C{commands[3].text}), or
        C{recording} / C{index} when one side has no such session at all.
    """

    session_id: str
    field: str
    index: Any
    recording: Any

    def __str__(self) -> str:
        return (
            f"{self.session_id}: {self.field}: index says {_show(self.index)}, "
            f"recording says {_show(self.recording)}"
        )

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready form."""
        return {
            "session_id": self.session_id,
            "field": self.field,
            "index": _jsonable(self.index),
            "recording": _jsonable(self.recording),
        }


def _show(value: Any) -> str:
    if isinstance(value, str) and value.startswith("(") and value.endswith(")"):
        return value  # a description, not a value
    return repr(_jsonable(value))


def _jsonable(value: Any) -> Any:
    if isinstance(value, tuple):
        return list(value)
    if isinstance(value, bytes):
        return value.hex()
    return value


@attrs.frozen
class Recorded:
    """
    What a session's recording says, from its records under seals that
    verify (L{read_recorded}).
    """

    report: VerifyReport
    #: the records, the payloads of data records other than the client's
    #: dropped (their lengths are in C{data_bytes})
    records: tuple[Record, ...]
    #: the first segment header's (wall ns, mono ns): the session's clocks
    clocks: tuple[int, int] | None = None
    #: bytes of data records by direction
    data_bytes: dict[int, int] = attrs.field(factory=dict)
    #: everything the client sent, and (seq, end offset) per client record
    client: bytes = b""
    client_ends: tuple[tuple[int, int], ...] = ()

    def _events(self, name: str) -> list[tuple[Record, dict[str, Any]]]:
        out = []
        for record in self.records:
            if record.type != RecordType.EVENT:
                continue
            event = _json(record.payload)
            if event is not None and event.get("event") == name:
                out.append((record, event))
        return out

    @property
    def meta(self) -> dict[str, Any]:
        """The META record's fields ({} without one)."""
        if self.records and self.records[0].type == RecordType.META:
            return _json(self.records[0].payload) or {}
        return {}

    @property
    def authenticated(self) -> dict[str, Any] | None:
        """The C{authenticated} event's fields, if the client authenticated."""
        found = self._events("authenticated")
        return found[0][1] if found else None

    @property
    def close(self) -> tuple[Record, dict[str, Any]] | None:
        """The CLOSE record and its fields, if the session closed."""
        for record in reversed(self.records):
            if record.type == RecordType.CLOSE:
                return record, _json(record.payload) or {}
        return None

    def wall(self, record: Record) -> float | None:
        """The Unix time C{record} was written, by the segment header's clocks."""
        if self.clocks is None:
            return None
        wall, mono = self.clocks
        return (wall + record.mono - mono) / 1e9

    def expected(self) -> dict[str, Any]:
        """
        The session fields the recording determines, by name; a field it
        does not determine is absent.
        """
        meta = self.meta
        out: dict[str, Any] = {}
        for name in ("gateway_id", "protocol", "listener", "client_address"):
            if isinstance(meta.get(name), str):
                out[name] = meta[name]
        if isinstance(meta.get("started"), (int, float)):
            out["started"] = float(meta["started"])
        auth = self.authenticated
        report = self.report
        # A fact absent from the sealed records is known to be absent only
        # when the session is complete; a crash may have left it unsealed.
        if auth is not None or report.complete:
            out["subject"] = _str(auth, "subject")
            out["display_name"] = _str(auth, "name")
            out["issuer"] = _str(auth, "issuer")
            groups = auth.get("groups") if auth else None
            out["groups"] = tuple(groups) if isinstance(groups, list) else ()
        if auth is not None and isinstance(auth.get("target"), str):
            out["target"] = auth["target"]
        roles = self._events("upstream-login")
        if roles or report.complete:
            out["upstream_role"] = str(roles[-1][1].get("role", "")) if roles else ""
        if report.complete:
            close = self.close
            if close is not None:
                out["close_reason"] = str(close[1].get("reason", ""))
                out["ended"] = self.wall(close[0])
            out["segments"] = report.segments
            out["records"] = report.records
            out["final"] = True
            if auth is not None and auth.get("recorded") is True:
                for name, direction in _BYTES.items():
                    out[name] = self.data_bytes.get(direction, 0)
        return out

    def decisions(self) -> list[tuple[Record, dict[str, Any]]]:
        """The C{decision} events."""
        return self._events("decision")

    def sent(self, text: str, up_to_seq: int) -> bool:
        """Whether the client sent C{text} in records up to C{up_to_seq}."""
        n = bisect.bisect_right(self.client_ends, (up_to_seq, len(self.client)))
        end = self.client_ends[n - 1][1] if n else 0
        for encoding in ("utf-8", "latin-1"):
            try:
                needle = text.encode(encoding, "surrogateescape")
            except UnicodeEncodeError:
                continue
            if self.client.find(needle, 0, end) != -1:
                return True
        return False


def _json(payload: bytes) -> dict[str, Any] | None:
    try:
        value = json.loads(payload)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def _str(fields: dict[str, Any] | None, name: str) -> str:
    value = fields.get(name) if fields else None
    return value if isinstance(value, str) else ""


def read_recorded(
    directory: str,
    anchors: TrustAnchors,
    gateway: str | None = None,
    revocations: Sequence[Revocation] = (),
) -> Recorded:
    """
    Verify the session in C{directory} (signed by C{gateway}, if given,
    under C{revocations}) and read its records; only the records under
    seals that verify are kept (none when the recording has problems other
    than an unsealed end).
    """
    report = verify_session(
        directory, anchors, expected_gateway=gateway, revocations=revocations
    )
    if report.exit_code not in (0, 3):
        return Recorded(report, ())
    records: list[Record] = []
    data_bytes: dict[int, int] = {}
    client: list[bytes] = []
    ends: list[tuple[int, int]] = []
    size = 0
    for r in read_records(directory):
        if r.seq >= report.sealed_records:
            break
        if r.type == RecordType.DATA:
            data_bytes[r.direction] = data_bytes.get(r.direction, 0) + len(r.payload)
            if r.direction == Direction.CLIENT_TO_GATEWAY:
                client.append(r.payload)
                size += len(r.payload)
                ends.append((r.seq, size))
            else:
                r = attrs.evolve(r, payload=b"")
        records.append(r)
    return Recorded(
        report,
        tuple(records),
        _clocks(directory) if records else None,
        data_bytes,
        b"".join(client),
        tuple(ends),
    )


def _clocks(directory: str) -> tuple[int, int] | None:
    segments = list_segments(directory)
    if not segments:
        return None
    with SegmentScanner(os.path.join(directory, segments[0][1])) as scanner:
        header = scanner.header
    return None if header is None else (header.wall_start, header.mono_start)


def recording_directories(root: str) -> dict[str, str]:
    """Every session directory under C{root}, by session id."""
    from gatehouse.ids import is_session_id

    found: dict[str, str] = {}
    for dirpath, dirnames, _files in os.walk(root):
        for name in list(dirnames):
            if is_session_id(name.lower()):
                path = os.path.join(dirpath, name)
                if list_segments(path):
                    found[name.lower()] = path
                dirnames.remove(name)
    return found


def _unescaped(row: Any, name: str) -> Any:
    value = getattr(row, name)
    if isinstance(value, str) and name in row.escaped:
        return unescape_index_text(value)
    if name == "groups" and "groups" in row.escaped:
        return tuple(unescape_index_text(g) for g in value)
    return value


def _time_differs(indexed: float | None, recorded: float) -> bool:
    return indexed is None or not (
        recorded - EARLY_SLACK <= indexed <= recorded + LATE_SLACK
    )


def check_session(
    row: SessionRow,
    commands: Sequence[CommandRow],
    recorded: Recorded,
    approvals: Sequence[dict[str, Any]] = (),
) -> list[Difference]:
    """
    Where the index's C{row}, C{commands} and C{approvals} (as
    L{approvals_for} gives them) and the recording disagree.
    """
    sid = row.id
    report = recorded.report
    if report.exit_code not in (0, 3):
        return [
            Difference(
                sid,
                "recording",
                "(a session)",
                f"(does not verify: {len(report.findings)} problem(s); "
                f"run gatehouse verify {sid})",
            )
        ]
    out: list[Difference] = []
    expected = recorded.expected()
    for name in SESSION_FIELDS:
        if name not in expected:
            continue
        want, have = expected[name], _unescaped(row, name)
        if name == "ended":
            if want is not None and _time_differs(have, want):
                out.append(Difference(sid, name, have, want))
            continue
        if name == "close_reason" and isinstance(have, str):
            have = have[:MAX_CLOSE_REASON]
        if have != want:
            out.append(Difference(sid, name, have, want))
    if "close_reason" not in expected and row.close_reason not in (None, CRASHED):
        # The index says it closed; the recording holds no close.
        out.append(Difference(sid, "close_reason", row.close_reason, None))
    out.extend(_check_commands(sid, commands, recorded))
    out.extend(_check_approvals(sid, approvals, recorded))
    return out


def _check_approvals(
    sid: str, approvals: Sequence[dict[str, Any]], recorded: Recorded
) -> list[Difference]:
    """
    Each indexed approval request must be one the session recorded
    (C{approval-requested}: written while the session is open, as the
    request is made), for the same rule.  Its later state and votes may
    come after the session closed, which the recording cannot show.
    """
    requested = {
        str(event.get("approval_id")): event
        for _, event in recorded._events("approval-requested")
    }
    out = []
    for approval in approvals:
        aid = str(approval.get("id"))
        event = requested.get(aid)
        if event is None:
            if recorded.report.complete:
                out.append(
                    Difference(
                        sid, f"approvals[{aid}]", "(a request)", "(none recorded)"
                    )
                )
        elif "rule" in approval and approval["rule"] != event.get("rule"):
            out.append(
                Difference(
                    sid, f"approvals[{aid}].rule", approval["rule"], event.get("rule")
                )
            )
    return out


def _check_commands(
    sid: str,
    commands: Sequence[CommandRow],
    recorded: Recorded,
    whole: bool = True,
    parsed: dict[tuple[int, str], set[tuple[str, tuple[str, ...]]]] | None = None,
) -> list[Difference]:
    """
    Where C{commands} and the recording disagree; with C{whole} (they are
    all the session's indexed commands), also each recorded command not
    simply allowed that no row stands for.  C{parsed}: L{_parsed}'s, when
    already at hand.
    """
    if parsed is None:
        parsed = _parsed(recorded)
    texts_at: dict[int, list[str]] = {}
    for seq, text in parsed:
        texts_at.setdefault(seq, []).append(text)
    out: list[Difference] = []
    by_seq = {r.seq: r for r in recorded.records}
    decisions = recorded.decisions()
    data_seqs = _data_seqs(recorded)
    # The recorded commands not simply allowed that some index row stands
    # for, by identity: each of the others is a row the index lacks.
    indexed: set[int] = set()
    for i, command in enumerate(commands):
        where = f"commands[{i}]"
        record = by_seq.get(command.seq)
        anchored = record is not None and _anchors(record)
        if record is None or (record.type != RecordType.DATA and not anchored):
            out.append(
                Difference(sid, f"{where}.seq", command.seq, "(no data record there)")
            )
            continue
        if record.channel != command.channel:
            out.append(
                Difference(sid, f"{where}.channel", command.channel, record.channel)
            )
        text = _unescaped(command, "text")
        # An empty text "occurs" in anything the client sent.
        if anchored:
            if not text or text not in _event_texts(record):
                out.append(
                    Difference(sid, f"{where}.text", text, "(not in the request)")
                )
        elif not text or not recorded.sent(text, command.seq):
            out.append(
                Difference(sid, f"{where}.text", text, "(not sent by the client)")
            )
        elif (command.seq, text) not in parsed and command.seq in texts_at:
            # The protocol's reader shows what that record completed.
            there = " or ".join(sorted(texts_at[command.seq]))
            out.append(Difference(sid, f"{where}.text", text, there))
        wall = recorded.wall(record)
        if wall is not None and _time_differs(command.at, wall):
            out.append(Difference(sid, f"{where}.at", command.at, wall))
        named = _decided(command.seq, record.channel, text, decisions, data_seqs)
        recorded_action = named[0][0].get("action") if named else "allow"
        if command.decision == recorded_action:
            indexed.update(id(c) for _, c in named)
        if command.decision != recorded_action:
            out.append(
                Difference(sid, f"{where}.decision", command.decision, recorded_action)
            )
        if not named and (command.seq, text) in parsed:
            # Allowed: the protocol's reader of the recorded statement
            # gives its kind and objects.
            facts = parsed[(command.seq, text)]
            objects = tuple(_unescaped(command, "objects"))
            if (command.kind, objects) not in facts:
                if command.kind not in {k for k, _ in facts}:
                    want = " or ".join(sorted({k for k, _ in facts}))
                    out.append(Difference(sid, f"{where}.kind", command.kind, want))
                else:
                    want = " or ".join(
                        repr(o) for k, o in sorted(facts) if k == command.kind
                    )
                    out.append(Difference(sid, f"{where}.objects", objects, want))
        if named:
            c = named[0][1]
            if command.kind != c.get("kind"):
                out.append(
                    Difference(sid, f"{where}.kind", command.kind, c.get("kind"))
                )
            objects = tuple(_unescaped(command, "objects"))
            if objects != tuple(c.get("objects", ())):
                out.append(
                    Difference(
                        sid, f"{where}.objects", objects, tuple(c.get("objects", ()))
                    )
                )
    for rec, event in decisions if whole else ():
        action = event.get("action")
        for c in event.get("commands", ()):
            if isinstance(c, dict) and action != "allow" and id(c) not in indexed:
                out.append(
                    Difference(
                        sid,
                        "commands",
                        "(no row)",
                        f"{action} of {c.get('text')!r} (decision at seq {rec.seq})",
                    )
                )
    return out


def _data_seqs(recorded: Recorded) -> dict[int, list[int]]:
    """The sequence numbers of the DATA records, by channel, in order."""
    out: dict[int, list[int]] = {}
    for r in recorded.records:
        if r.type == RecordType.DATA:
            out.setdefault(r.channel, []).append(r.seq)
    return out


#: events a command may point to: requests that carry a command but no
#: bytes of the client's stream (see docs/recording-format.md, the index)
ANCHOR_EVENTS = frozenset({"ssh-request", "ssh-channel-open", "http-request"})


def _anchors(record: Record) -> bool:
    """Whether C{record} is a request event commands may point to."""
    if record.type != RecordType.EVENT:
        return False
    event = _json(record.payload)
    return event is not None and event.get("event") in ANCHOR_EVENTS


def _event_texts(record: Record) -> set[str]:
    """The string values of an event record."""
    event = _json(record.payload) or {}
    return {str(v) for k, v in event.items() if k != "event" and isinstance(v, str)}


def _decided(
    seq: int,
    channel: int,
    text: str,
    decisions: list[tuple[Record, dict[str, Any]]],
    data_seqs: dict[int, list[int]],
) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """
    The decision events (and their command) that name C{text} for the
    data record C{seq} on C{channel}: a decision other than allow is
    recorded on the command's channel right after the data record that
    carried the command, before that channel's next one.
    """
    on_channel = data_seqs.get(channel, [])
    n = bisect.bisect_right(on_channel, seq)
    limit = on_channel[n] if n < len(on_channel) else float("inf")
    return [
        (event, c)
        for rec, event in decisions
        if rec.channel == channel and seq < rec.seq < limit
        for c in event.get("commands", ())
        if isinstance(c, dict) and c.get("text") == text
    ]


def check_index(
    index: str,
    recordings: str,
    anchors: TrustAnchors,
    sessions: Iterable[str] = (),
    revocations: Sequence[Revocation] = (),
) -> list[Difference]:
    """
    Compare the index at C{index} with the recordings under C{recordings}:
    every disagreement, and sessions only one side knows.  C{sessions}
    limits the check to those session ids.

    @raise IndexUnavailable: when the index cannot be read.
    """
    wanted = {s.lower() for s in sessions}
    rows = {r.id: r for r in query_sessions(index, limit=None)}
    directories = recording_directories(recordings) if os.path.isdir(recordings) else {}
    if wanted:
        rows = {k: v for k, v in rows.items() if k in wanted}
        directories = {k: v for k, v in directories.items() if k in wanted}
    out: list[Difference] = [
        Difference(sid, "session", "(no such session)", "(no recording)")
        for sid in sorted(wanted - rows.keys() - directories.keys())
    ]
    for sid in sorted(rows.keys() | directories.keys()):
        row, directory = rows.get(sid), directories.get(sid)
        if row is None:
            out.append(Difference(sid, "index", "(no such session)", "(a recording)"))
            continue
        if directory is None:
            out.append(Difference(sid, "recording", "(a session)", "(no recording)"))
            continue
        out.extend(
            check_session(
                row,
                commands_for(index, sid),
                # Pinned to the gateway the row names: another gateway's
                # re-seal of the session is foreign, not an agreement.
                read_recorded(directory, anchors, row.gateway_id or None, revocations),
                _approvals(index, sid),
            )
        )
    return out


def _approvals(index: str, sid: str) -> list[dict[str, Any]]:
    try:
        return approvals_for(index, sid)
    except (sqlite3.Error, IndexUnavailable):
        return []  # an index from before the approvals table
    except ValueError:
        return [{"id": "(a request that is not JSON)"}]


def rebuild_index(
    output: str,
    recordings: str,
    anchors: TrustAnchors,
    old_index: str | None = None,
) -> tuple[int, int]:
    """
    Write a fresh index at C{output} (which must not exist) from the
    recordings under C{recordings}: each session's row from its recording;
    its commands as the protocol's reader finds them in what the client
    sent (PostgreSQL's: each statement of each Query and Parse), its
    non-allowed commands from its C{decision} events, and, when
    C{old_index} is given, the old index's allowed commands that check out
    against the recording.

    @return: (sessions, commands) written.
    """
    from gatehouse.recording.index import write_rows

    rows: list[SessionRow] = []
    commands: list[CommandRow] = []
    for sid, directory in sorted(recording_directories(recordings).items()):
        recorded = read_recorded(directory, anchors)
        if not recorded.records:
            continue
        row = _row_from(sid, directory, recorded)
        if old_index is not None:
            # Counts the recording does not hold: carried over unchecked.
            try:
                was = get_session(old_index, sid)
            except IndexUnavailable:
                was = None
            if was is not None:
                row = attrs.evolve(
                    row, **{name: getattr(was, name) for name in UNCHECKED}
                )
        rows.append(row)
        mine = _protocol_commands(sid, row.protocol, recorded)
        mine += _recorded_commands(sid, recorded)
        if old_index is not None:
            try:
                old = commands_for(old_index, sid)
            except IndexUnavailable:
                old = []
            parsed = _parsed(recorded)
            for command in old:
                if command.decision == "allow" and not _check_commands(
                    sid, [command], recorded, whole=False, parsed=parsed
                ):
                    mine.append(attrs.evolve(command, text=_unescaped(command, "text")))
        unique = {(c.seq, c.text, c.decision): c for c in reversed(mine)}
        commands.extend(sorted(unique.values(), key=lambda c: c.seq))
    write_rows(output, rows, commands)
    return len(rows), len(commands)


def _row_from(sid: str, directory: str, recorded: Recorded) -> SessionRow:
    fields = recorded.expected()
    close = recorded.close
    if not recorded.report.complete:
        # Still open, or left open by a crash: as the daemon leaves it.
        fields.pop("final", None)
        fields["segments"] = sum(1 for _ in list_segments(directory)) - (
            0 if recorded.report.exit_code == 0 else 1
        )
        fields["records"] = len(recorded.records)
    elif close is None:
        fields["ended"] = None
    fields.setdefault("started", 0.0)
    fields["last_link"] = _last_link(directory)
    return SessionRow(
        id=sid,
        gateway_id=fields.pop("gateway_id", ""),
        protocol=fields.pop("protocol", ""),
        listener=fields.pop("listener", ""),
        started=fields.pop("started"),
        directory=directory,
        **fields,
    )


def _last_link(directory: str) -> bytes | None:
    """The link of the last segment that ends in a seal, as the daemon indexes it."""
    from gatehouse.recording.format import FormatError, SealStatement
    from gatehouse.recording.reader import SEALED

    for _index, name in reversed(list_segments(directory)):
        with SegmentScanner(os.path.join(directory, name)) as scanner:
            for _block in scanner.blocks():
                pass
            end = scanner.end
        if end is not None and end.kind == SEALED and end.seal is not None:
            try:
                return SealStatement.from_bytes(end.seal[0]).link()
            except FormatError:
                return None
    return None


def _reader(protocol: Any) -> Any:
    """The protocol's C{indexed} module, or None if it has none."""
    from importlib import import_module

    if not isinstance(protocol, str) or not protocol.isidentifier():
        return None
    try:
        return import_module(f"gatehouse.protocols.{protocol}.indexed")
    except ImportError:
        return None


def _parsed(
    recorded: Recorded,
) -> dict[tuple[int, str], set[tuple[str, tuple[str, ...]]]]:
    """
    The (kind, objects) of each statement the protocol's reader finds in
    what the client sent (the protocol as the META record names it), by
    (seq, text).
    """
    module = _reader(recorded.meta.get("protocol"))
    out: dict[tuple[int, str], set[tuple[str, tuple[str, ...]]]] = {}
    if module is not None:
        for seq, kind, text, objects, _ in module.recorded_commands(recorded.records):
            out.setdefault((seq, text), set()).add((kind, tuple(objects)))
    return out


def _protocol_commands(sid: str, protocol: str, recorded: Recorded) -> list[CommandRow]:
    """
    The commands the protocol's own reader finds in what the client sent
    (C{gatehouse.protocols.PROTOCOL.indexed.recorded_commands}, if the
    protocol has one), decided as the recording says, each allowed shape
    once, as the gateway indexes them.
    """
    module = _reader(protocol)
    if module is None:
        return []
    by_seq = {r.seq: r for r in recorded.records}
    decisions = recorded.decisions()
    data_seqs = _data_seqs(recorded)
    seen: set[str] = set()
    out = []
    for seq, kind, text, objects, shape in module.recorded_commands(recorded.records):
        channel = by_seq[seq].channel
        named = _decided(seq, channel, text, decisions, data_seqs)
        action = str(named[0][0].get("action", "")) if named else "allow"
        if action == "allow":
            if shape in seen:
                continue
            seen.add(shape)
        out.append(
            CommandRow(
                session_id=sid,
                seq=seq,
                channel=channel,
                at=recorded.wall(by_seq[seq]) or 0.0,
                kind=kind,
                text=text,
                decision=action,
                objects=objects,
            )
        )
    return out


def _recorded_commands(sid: str, recorded: Recorded) -> list[CommandRow]:
    by_seq = {r.seq: r for r in recorded.records}
    data_seqs = _data_seqs(recorded)
    out = []
    for record, event in recorded.decisions():
        # The command came on the decision's channel, in its last data
        # record before the decision.
        on_channel = data_seqs.get(record.channel, [])
        n = bisect.bisect_left(on_channel, record.seq)
        if not n:
            continue
        carrier = by_seq[on_channel[n - 1]]
        for c in event.get("commands", ()):
            if not isinstance(c, dict) or not isinstance(c.get("text"), str):
                continue
            out.append(
                CommandRow(
                    session_id=sid,
                    seq=carrier.seq,
                    channel=carrier.channel,
                    at=recorded.wall(record) or 0.0,
                    kind=str(c.get("kind", "")),
                    text=c["text"],
                    decision=str(event.get("action", "")),
                    objects=tuple(str(o) for o in c.get("objects", ())),
                )
            )
    return out
