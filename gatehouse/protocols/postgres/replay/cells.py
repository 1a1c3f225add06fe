"""
How the replay shows things: its limits, and values, cells, times and
literals escaped and cut to size.
"""

from __future__ import annotations

import json
import struct
import unicodedata
import uuid

from gatehouse.protocols.postgres import codec
from gatehouse.recording.render import (
    FULL_HINT,
    escape_char,
    format_wall,
    full_replay,
)

MAX_ROWS = 100
#: Characters of a table cell or parameter shown before cutting it short.
MAX_VALUE = 200
#: Characters of a statement's text shown before cutting it short.
MAX_SQL = 20_000
#: Lines of COPY data shown.
COPY_PREVIEW_LINES = 5
#: Prepared statements and portals remembered (by name) per session.
MAX_NAMES = 10_000
#: Client operations awaiting their answer that are kept for timing.
MAX_PENDING = 10_000
#: Lines held back until the header (which names the identity) is known.
MAX_HELD_LINES = 500

_MS = 1_000_000
# Type OIDs psql right-aligns: int2/4/8, oid, xid, cid, float4/8, money,
# numeric.
_NUMERIC_OIDS = frozenset({20, 21, 23, 26, 28, 29, 700, 701, 790, 1700})
_PASSWORD = codec.FrontendType.PASSWORD

_AUTH_NAMES = {
    codec.AuthenticationOk: "authentication ok",
    codec.AuthenticationKerberosV5: "authentication request: Kerberos V5",
    codec.AuthenticationCleartextPassword: "authentication request: password",
    codec.AuthenticationMD5Password: "authentication request: MD5 password",
    codec.AuthenticationGSS: "authentication request: GSSAPI",
    codec.AuthenticationGSSContinue: "authentication: GSSAPI continues",
    codec.AuthenticationSSPI: "authentication request: SSPI",
    codec.AuthenticationSASL: "authentication request: SASL",
    codec.AuthenticationSASLContinue: "authentication: SASL challenge",
    codec.AuthenticationSASLFinal: "authentication: SASL outcome",
}


# --- text helpers ---------------------------------------------------------


def _clean(text: str, tabs: bool = False) -> str:
    """
    C{text} with every non-printable character escaped (tabs too, unless
    C{tabs}): nothing the recorded peer chose can drive the reader's
    terminal.
    """
    if text.isprintable():
        return text
    return "".join(
        ch if ch.isprintable() or (tabs and ch == "\t") else escape_char(ch)
        for ch in text
    )


def _shorten(text: str, limit: int) -> str:
    """C{text}, cut at C{limit} characters (not in a full replay), saying so."""
    if len(text) <= limit or full_replay():
        return text
    return f"{text[:limit]}… ({len(text) - limit:,} more characters; {FULL_HINT})"


def _width(text: str) -> int:
    """Columns C{text} takes on a terminal (wide East Asian characters: 2)."""
    if text.isascii():
        return len(text)
    width = 0
    for ch in text:
        if unicodedata.combining(ch):
            continue
        width += 2 if unicodedata.east_asian_width(ch) in "WF" else 1
    return width


def _pad(text: str, width: int, align: str) -> str:
    room = width - _width(text)
    if room <= 0:
        return text
    if align == "right":
        return " " * room + text
    if align == "center":
        left = room // 2
        return " " * left + text + " " * (room - left)
    return text + " " * room


def _hex(value: bytes, limit: int = MAX_VALUE // 2) -> str:
    """C{value} as C{\\x…} hex, cut at C{limit} bytes (not in a full replay)."""
    if len(value) <= limit or full_replay():
        return "\\x" + value.hex()
    more = len(value) - limit
    return f"\\x{value[:limit].hex()}… ({more:,} more bytes; {FULL_HINT})"


_TEXT_OIDS = frozenset({18, 19, 25, 1042, 1043})  # char, name, text, bpchar, varchar
_INT_OIDS = {21: 2, 23: 4, 20: 8}


def _binary(oid: int, value: bytes) -> tuple[str, bool] | None:
    """
    A binary-format value of a common type as text, and whether it is
    text-like (to be quoted as a parameter); C{None} if not decoded.
    """
    size = len(value)
    if _INT_OIDS.get(oid) == size:
        return str(int.from_bytes(value, "big", signed=True)), False
    if oid == 26 and size == 4:  # oid
        return str(int.from_bytes(value, "big")), False
    if oid == 16 and size == 1:  # bool
        return ("t" if value[0] else "f"), False
    if oid == 700 and size == 4:
        return repr(struct.unpack("!f", value)[0]), False
    if oid == 701 and size == 8:
        return repr(struct.unpack("!d", value)[0]), False
    if oid == 2950 and size == 16:
        return str(uuid.UUID(bytes=value)), False
    if oid in _TEXT_OIDS:
        return value.decode("utf-8", "surrogateescape"), True
    return None


def _sql_literal(text: str) -> str:
    text = _shorten(_clean(text), MAX_VALUE)
    return "'" + text.replace("'", "''") + "'"


def _format_time(ns: int) -> str:
    """Elapsed time the way psql's C{\\timing} prints it."""
    ms = ns / _MS
    out = f"Time: {ms:.3f} ms"
    if ms >= 1000:
        seconds = ms / 1000
        minutes, seconds = divmod(seconds, 60)
        hours, minutes = divmod(int(minutes), 60)
        if hours:
            out += f" ({hours:02d}:{minutes:02d}:{seconds:06.3f})"
        else:
            out += f" ({minutes:02d}:{seconds:06.3f})"
    return out


_format_wall = format_wall


def _field(value: object) -> str:
    """An event field's value, for a C{-- gateway:} line."""
    if isinstance(value, str):
        return _clean(value)
    if isinstance(value, list):
        return ", ".join(_field(v) for v in value)
    return _clean(json.dumps(value, ensure_ascii=False, default=str))
