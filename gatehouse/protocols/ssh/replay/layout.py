"""
How an SSH session is laid out in its recording (see SSH-SPEC, and
docs/recording-format.md): which record channel holds which SSH channel,
and the gateway's events, read defensively.
"""

from __future__ import annotations

import json
from typing import Any

from gatehouse.recording.format import Record, RecordType
from gatehouse.recording.render import escape_char

__all__ = [
    "STDERR_BIT",
    "clean",
    "event_of",
    "field",
    "number",
    "ssh_channel",
]

#: Extended data (stderr) of record channel c is recorded on c | STDERR_BIT.
STDERR_BIT = 0x8000


def ssh_channel(record_channel: int) -> tuple[int, bool]:
    """
    The gateway-side SSH channel id a record channel holds (record channel
    c is SSH channel c - 1; 0 is the connection, -1 here), and whether the
    record is that channel's extended data (stderr).
    """
    return (record_channel & ~STDERR_BIT) - 1, bool(record_channel & STDERR_BIT)


def event_of(record: Record) -> tuple[str, dict[str, Any]] | None:
    """An EVENT record's name and other fields, or None when it is not one."""
    if record.type != RecordType.EVENT:
        return None
    try:
        event = json.loads(record.payload.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return None
    if not isinstance(event, dict) or not isinstance(event.get("event"), str):
        return None
    fields = dict(event)
    return fields.pop("event"), fields


def clean(text: str) -> str:
    """C{text} with every non-printable character escaped."""
    if text.isprintable():
        return text
    return "".join(ch if ch.isprintable() else escape_char(ch) for ch in text)


def field(value: object) -> str:
    """An event field's value as shown: strings escaped, the rest as JSON."""
    if isinstance(value, str):
        return clean(value)
    return clean(json.dumps(value, ensure_ascii=False, sort_keys=True, default=str))


def number(value: object) -> int | None:
    """An integer field (not a bool), or None."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    return None
