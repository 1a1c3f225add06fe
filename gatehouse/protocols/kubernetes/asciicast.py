"""
Export the terminal of a Kubernetes exec or attach (C{kubectl exec -it})
as asciicast v2 (https://docs.asciinema.org/manual/asciicast/v2/).

The terminal is the first exec or attach with C{tty=true} in the session
(or the request on C{ExportOptions.channel}).  Its size is the first
C{k8s-resize} kubectl sends (later ones are C{"r"} events), its timestamp
the wall time the stream opened (the 101 answer); C{"o"} events are the
stdout bytes the client was sent (a terminal merges stderr into it), and
with C{ExportOptions.input} C{"i"} events what the client typed.  Times
are seconds since the stream opened.
"""

from __future__ import annotations

import codecs
import json
from collections.abc import Iterable
from typing import Any, TextIO

from gatehouse.recording.format import Direction, Record, RecordType
from gatehouse.recording.render import ExportOptions, NoExport

__all__ = ["export_asciicast"]

NS = 1_000_000_000
DEFAULT_SIZE = (80, 24)


def _line(item: object) -> str:
    return json.dumps(item, ensure_ascii=True) + "\n"


def _event(record: Record) -> dict[str, Any] | None:
    try:
        parsed = json.loads(record.payload)
    except ValueError:
        return None
    return parsed if isinstance(parsed, dict) else None


def export_asciicast(
    records: Iterable[Record], out: TextIO, options: ExportOptions
) -> int:
    """
    Write the session's first terminal stream (or the one on
    C{options.channel}) as asciicast v2; return the number of events.

    @raise NoExport: the session has no such terminal.
    """
    chosen: int | None = None
    description = ""
    started: int | None = None
    size: tuple[int, int] | None = None
    pending: list[tuple[int, str, str]] = []
    header_written = False
    events = 0
    output = codecs.getincrementaldecoder("utf-8")("replace")
    typed = codecs.getincrementaldecoder("utf-8")("replace")

    def emit(mono: int, kind: str, text: str) -> None:
        nonlocal events
        seconds = max(mono - (started or 0), 0) / NS
        out.write(_line([round(seconds, 6), kind, text]))
        events += 1

    def header() -> None:
        nonlocal header_written
        if header_written:
            return
        header_written = True
        width, height = size or DEFAULT_SIZE
        head: dict[str, Any] = {"version": 2, "width": width, "height": height}
        if options.wall_start_ns is not None and started is not None:
            head["timestamp"] = (options.wall_start_ns + started) // NS
        head["command"] = description
        head["title"] = (
            f"gatehouse Kubernetes session {options.session_id or '?'}, "
            f"request channel {chosen}"
        )
        out.write(_line(head))
        for item in pending:
            emit(*item)
        pending.clear()

    def later(mono: int, kind: str, text: str) -> None:
        if header_written:
            emit(mono, kind, text)
        else:
            pending.append((mono, kind, text))

    last = 0
    for record in records:
        last = record.mono
        channel = record.channel
        if record.type == RecordType.EVENT:
            fields = _event(record)
            if fields is None:
                continue
            name = fields.get("event")
            if chosen is None:
                if name == "http-request" and fields.get("tty") is True:
                    wanted = options.channel
                    if wanted is None or wanted == channel:
                        chosen = channel
                        description = str(fields.get("description", ""))
                continue
            if channel != chosen:
                continue
            if name == "http-response" and started is None:
                if fields.get("status") != 101:
                    chosen, description = None, ""  # refused: no terminal
                    continue
                started = record.mono
            elif name == "k8s-resize":
                width, height = fields.get("width"), fields.get("height")
                if isinstance(width, int) and isinstance(height, int):
                    if size is None and not header_written:
                        size = (width, height)
                    else:
                        later(record.mono, "r", f"{width}x{height}")
            elif name == "http-end":
                break
        elif record.type == RecordType.DATA and channel == chosen:
            if started is None:
                continue
            if record.direction == Direction.GATEWAY_TO_CLIENT:
                text = output.decode(record.payload)
                if text:
                    header()
                    emit(record.mono, "o", text)
            elif record.direction == Direction.CLIENT_TO_GATEWAY and options.input:
                text = typed.decode(record.payload)
                if text:
                    later(record.mono, "i", text)
    if chosen is None or started is None:
        where = f" on channel {options.channel}" if options.channel else ""
        raise NoExport(
            f"no terminal (exec or attach with a tty){where} in this session; "
            "gatehouse replay shows its requests"
        )
    header()
    rest = output.decode(b"", final=True)
    if rest:
        emit(last, "o", rest)
    return events
