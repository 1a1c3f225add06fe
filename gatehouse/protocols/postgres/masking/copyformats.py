"""
The rows of a C{COPY ... TO STDOUT} in text and CSV format, split into
fields and written back, and the state of the COPY under way.
"""

from __future__ import annotations

import re

# -- COPY text format ----------------------------------------------------------

_UNESCAPE = re.compile(r"\\(.)", re.DOTALL)
_UNESCAPES = {"b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v"}
_ESCAPES = {"\\": "\\\\", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r"}
_ESCAPES.update({"\t": "\\t", "\v": "\\v"})


def _unescape(field: str) -> str:
    if "\\" not in field:
        return field
    return _UNESCAPE.sub(lambda m: _UNESCAPES.get(m.group(1), m.group(1)), field)


def _escape(value: str, delimiter: str) -> str:
    out = []
    for c in value:
        if c in _ESCAPES:
            out.append(_ESCAPES[c])
        elif c == delimiter:
            out.append("\\" + c)
        else:
            out.append(c)
    return "".join(out)


def _text_fields(line: str, delimiter: str) -> list[str]:
    """Split a COPY text row on the delimiters that are not escaped."""
    fields: list[str] = []
    for part in line.split(delimiter):
        if fields:
            last = fields[-1]
            if (len(last) - len(last.rstrip("\\"))) % 2:
                fields[-1] = last + delimiter + part
                continue
        fields.append(part)
    return fields


# -- COPY CSV format -------------------------------------------------------------


class _BadCSV(Exception):
    pass


def _csv_records(
    text: str, delimiter: str, field_end: re.Pattern[str]
) -> list[list[tuple[str, str | None]]]:
    """
    Split CSV text into records of C{(raw, value)} fields: C{raw} as it
    was sent, C{value} unquoted (None for NULL: an unquoted empty field).
    """
    records = []
    fields: list[tuple[str, str | None]] = []
    pos = 0
    n = len(text)
    while pos < n:
        start = pos
        if text[pos] == '"':
            parts = []
            j = pos + 1
            while True:
                k = text.find('"', j)
                if k < 0:
                    raise _BadCSV("unterminated quoted field")
                parts.append(text[j:k])
                if text.startswith('"', k + 1):
                    parts.append('"')
                    j = k + 2
                    continue
                pos = k + 1
                break
            value: str | None = "".join(parts)
        else:
            m = field_end.search(text, pos)
            pos = m.start() if m is not None else n
            value = text[start:pos] or None
        fields.append((text[start:pos], value))
        if pos == n:
            break
        c = text[pos]
        pos += 1
        if c == "\n":
            records.append(fields)
            fields = []
        elif c != delimiter:
            raise _BadCSV("garbage after a quoted field")
        elif pos == n:
            fields.append(("", None))
    if fields:
        records.append(fields)
    return records


def _csv_quote(value: str) -> str:
    return '"' + value.replace('"', '""') + '"'


class _Copy:
    """The COPY ... TO STDOUT under way."""

    __slots__ = (
        "blocked",
        "columns",
        "delimiter",
        "field_end",
        "format",
        "header",
        "whole",
    )

    def __init__(
        self,
        format: str | None,
        delimiter: str,
        columns: int,
        whole: frozenset[int],
        header: bool,
        blocked: bool,
    ):
        #: "text", "csv", or None (not announced: rows scanned as they are)
        self.format = format
        self.delimiter = delimiter
        self.field_end = re.compile(f"[{re.escape(delimiter)}\n]")
        self.columns = columns
        #: positions of columns masked whole
        self.whole = whole
        #: the next row is the CSV header
        self.header = header
        #: rows are withheld (column rules, columns unknown)
        self.blocked = blocked
