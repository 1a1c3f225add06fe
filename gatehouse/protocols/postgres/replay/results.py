"""
Results and COPY data collected for the transcript, shown as psql shows
them (aligned tables, COPY previews).
"""

from __future__ import annotations

from gatehouse.protocols.postgres import codec
from gatehouse.recording.render import (
    FULL_HINT,
    full_replay,
)

from .cells import (
    _NUMERIC_OIDS,
    COPY_PREVIEW_LINES,
    MAX_ROWS,
    MAX_VALUE,
    _binary,
    _clean,
    _hex,
    _pad,
    _shorten,
    _width,
)

# --- results --------------------------------------------------------------


class _Result:
    """The rows of one result set, as many as will be shown, and a count."""

    def __init__(self, fields: tuple[codec.FieldDescription, ...] | None):
        self.fields = fields
        self.rows: list[list[str]] = []
        self.count = 0
        self.malformed = 0
        self.full = full_replay()

    def add(self, row: codec.DataRow | None, encoding: str) -> None:
        """Count a row, and keep it if it is to be shown (None: malformed)."""
        self.count += 1
        if row is None:
            self.malformed += 1
            return
        if len(self.rows) >= MAX_ROWS and not self.full:
            return
        fields = self.fields or ()
        cells = []
        for index, value in enumerate(row.values):
            if value is None:
                cells.append("")
                continue
            if index < len(fields) and fields[index].format == 1:
                decoded = _binary(fields[index].type_oid, value)
                if decoded is None:
                    cells.append(_hex(value))
                    continue
                text = decoded[0]
            else:
                text = value.decode(encoding, "surrogateescape")
            cells.append(_shorten(_clean(text), MAX_VALUE))
        self.rows.append(cells)

    def lines(self) -> list[str]:
        fields = self.fields
        columns = max(
            len(fields) if fields is not None else 0,
            max((len(r) for r in self.rows), default=0),
        )
        names, aligns = [], []
        for i in range(columns):
            if fields is not None and i < len(fields):
                names.append(_clean(fields[i].name))
                numeric = fields[i].type_oid in _NUMERIC_OIDS
                aligns.append("right" if numeric else "left")
            else:
                names.append("?column?")
                aligns.append("left")
        widths = [_width(n) for n in names]
        for row in self.rows:
            for i, cell in enumerate(row):
                widths[i] = max(widths[i], _width(cell))
        out = []
        if columns:
            header = [_pad(n, w, "center") for n, w in zip(names, widths, strict=True)]
            out.append((" " + " | ".join(header)).rstrip())
            out.append("-" + "-+-".join("-" * w for w in widths) + "-")
            for row in self.rows:
                cells = [
                    _pad(row[i] if i < len(row) else "", widths[i], aligns[i])
                    for i in range(columns)
                ]
                out.append((" " + " | ".join(cells)).rstrip())
        else:
            out.append("--")
        hidden = self.count - len(self.rows) - self.malformed
        if hidden > 0:
            s = "" if hidden == 1 else "s"
            out.append(f"… {hidden:,} more row{s} ({FULL_HINT})")
        out.append(f"({self.count} row{'' if self.count == 1 else 's'})")
        return out


class _Copy:
    """Counts COPY data in one direction and keeps its first lines."""

    def __init__(self, direction: str, binary: bool):
        self.direction = direction
        self.binary = binary
        self.messages = 0
        self.size = 0
        self.newlines = 0
        self.head = bytearray()
        self.tail = b""
        self.full = full_replay()

    def add(self, data: bytes) -> None:
        self.messages += 1
        self.size += len(data)
        if self.binary:
            return
        self.newlines += data.count(b"\n")
        self.tail = (self.tail + data)[-4:]
        if self.full:
            self.head += data
        elif self.head.count(b"\n") < COPY_PREVIEW_LINES and len(self.head) < 4096:
            self.head += data[:4096]

    def lines(self, encoding: str) -> list[str]:
        rows = self.messages if self.binary else self.newlines
        if (
            not self.binary
            and self.tail[-3:] == b"\\.\n"
            and self.tail[-4:-3]
            in (
                b"",
                b"\n",
            )
        ):
            rows -= 1  # the old end-of-data marker line
        form = "binary" if self.binary else "text"
        out = [
            f"-- COPY {self.direction} ({rows} row{'' if rows == 1 else 's'} of data,"
            f" {self.size} byte{'' if self.size == 1 else 's'}, {form})"
        ]
        if not self.binary and self.head:
            text = bytes(self.head).decode(encoding, "surrogateescape")
            shown = text.split("\n")
            if shown and shown[-1] == "":
                shown.pop()
            preview = len(shown) if self.full else COPY_PREVIEW_LINES
            for line in shown[:preview]:
                line = _shorten(line.removesuffix("\r"), MAX_VALUE)
                out.append("   " + _clean(line, tabs=True))
            if rows > preview:
                more = rows - preview
                out.append(f"   … {more:,} more rows of data ({FULL_HINT})")
        return out
