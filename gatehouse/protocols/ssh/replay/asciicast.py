"""
Export one terminal channel of an SSH session as asciicast v2
(https://docs.asciinema.org/manual/asciicast/v2/), for asciinema.

The header takes the terminal's size and C{TERM} from the channel's
pty-req (and a later window-change before the terminal starts), its
timestamp from the wall time the terminal started; C{"o"} events are the
bytes the client was sent on the channel (stdout and stderr, as a pty
merges them), C{"r"} events the window changes, and with
L{ExportOptions.input} C{"i"} events what the client typed (left out by
default: typed passwords are not echoed, so a player would not show
them).  Times are seconds since the terminal started.  Bytes that are not
UTF-8 become U+FFFD, as asciicast holds text.
"""

from __future__ import annotations

import codecs
import json
from collections.abc import Iterable
from typing import Any, TextIO

from gatehouse.protocols.ssh.replay.layout import event_of, number, ssh_channel
from gatehouse.recording.format import Direction, Record, RecordType
from gatehouse.recording.render import ExportOptions, NoExport

__all__ = ["export_asciicast"]

NS = 1_000_000_000
DEFAULT_SIZE = (80, 24)


class _Terminal:
    """A session channel that may become the exported terminal."""

    def __init__(self, number: int):
        self.number = number
        self.pty: dict[str, Any] | None = None
        self.size = DEFAULT_SIZE
        self.started: int | None = None  # mono of its shell or exec request
        self.command_next = False
        self.command: str | None = None
        self.decoders = {
            stderr: codecs.getincrementaldecoder("utf-8")("replace")
            for stderr in (False, True)
        }
        self.input = codecs.getincrementaldecoder("utf-8")("replace")


def _size(fields: dict[str, Any], default: tuple[int, int]) -> tuple[int, int]:
    cols, rows = number(fields.get("cols")), number(fields.get("rows"))
    if cols is None or rows is None or cols <= 0 or rows <= 0:
        return default
    return cols, rows


def _line(item: object) -> str:
    # ASCII only: no character in the file can split a line for any reader.
    return json.dumps(item, ensure_ascii=True) + "\n"


class _Export:
    def __init__(self, out: TextIO, options: ExportOptions):
        self.out = out
        self.options = options
        self.terminals: dict[int, _Terminal] = {}
        self.chosen: _Terminal | None = None
        self.header_written = False
        self.done = False
        self.events = 0

    def record(self, record: Record) -> None:
        number_, stderr = ssh_channel(record.channel)
        if number_ < 0 or self.done:
            return
        if self.chosen is not None and number_ != self.chosen.number:
            return
        terminal = self.terminals.get(number_)
        if terminal is None:
            terminal = self.terminals[number_] = _Terminal(number_)
        if record.type == RecordType.EVENT:
            self._event(terminal, record)
        elif record.type == RecordType.DATA:
            self._data(terminal, record, stderr)

    def _event(self, terminal: _Terminal, record: Record) -> None:
        parsed = event_of(record)
        if parsed is None:
            return
        name, fields = parsed
        if name == "ssh-channel-close" and terminal is self.chosen:
            self._flush(terminal, record.mono)
            self.done = True
            return
        if name != "ssh-request" or fields.get("refused") is not None:
            return
        request = fields.get("request")
        if request == "pty-req":
            terminal.pty = fields
            terminal.size = _size(fields, DEFAULT_SIZE)
        elif request == "window-change":
            size = _size(fields, terminal.size)
            if terminal is self.chosen and self.header_written:
                self._emit(record.mono, "r", f"{size[0]}x{size[1]}")
            terminal.size = size
        elif request in ("shell", "exec") and self.chosen is None:
            wanted = self.options.channel
            if terminal.pty is None:
                if wanted == terminal.number:
                    raise NoExport(
                        f"channel {wanted} has no terminal (no pty-req); "
                        "gatehouse replay shows it"
                    )
                return
            if wanted is not None and wanted != terminal.number:
                return
            self.chosen = terminal
            terminal.started = record.mono
            terminal.command_next = request == "exec"
            if request == "shell":
                self._header(terminal)

    def _data(self, terminal: _Terminal, record: Record, stderr: bool) -> None:
        if terminal is not self.chosen:
            return
        if record.direction == Direction.CLIENT_TO_GATEWAY:
            if terminal.command_next and not stderr:
                terminal.command_next = False
                terminal.command = record.payload.decode("utf-8", errors="replace")
                self._header(terminal)
            elif self.options.input and not stderr:
                self._header(terminal)
                text = terminal.input.decode(record.payload)
                if text:
                    self._emit(record.mono, "i", text)
        elif record.direction == Direction.GATEWAY_TO_CLIENT:
            self._header(terminal)
            text = terminal.decoders[stderr].decode(record.payload)
            if text:
                self._emit(record.mono, "o", text)

    def _header(self, terminal: _Terminal) -> None:
        if self.header_written:
            return
        self.header_written = True
        terminal.command_next = False
        pty = terminal.pty or {}
        header: dict[str, Any] = {
            "version": 2,
            "width": terminal.size[0],
            "height": terminal.size[1],
        }
        wall = self.options.wall_start_ns
        if wall is not None and terminal.started is not None:
            header["timestamp"] = (wall + terminal.started) // NS
        if terminal.command is not None:
            header["command"] = terminal.command
        title = f"gatehouse SSH session {self.options.session_id or '?'}"
        header["title"] = f"{title}, channel {terminal.number}"
        if isinstance(pty.get("term"), str):
            header["env"] = {"TERM": pty["term"]}
        self.out.write(_line(header))

    def _emit(self, mono: int, kind: str, text: str) -> None:
        started = self.chosen.started if self.chosen is not None else None
        seconds = max(mono - (started or 0), 0) / NS
        self.out.write(_line([round(seconds, 6), kind, text]))
        self.events += 1

    def _flush(self, terminal: _Terminal, mono: int) -> None:
        if not self.header_written:
            self._header(terminal)
        for decoder in terminal.decoders.values():
            text = decoder.decode(b"", final=True)
            if text:
                self._emit(mono, "o", text)

    def finish(self, last_mono: int) -> None:
        if self.chosen is None:
            if self.options.channel is not None:
                raise NoExport(
                    f"no terminal on channel {self.options.channel} in this session"
                )
            raise NoExport(
                "no terminal (pty with a shell or command) in this session; "
                "gatehouse replay shows its channels"
            )
        if not self.done:
            self._flush(self.chosen, last_mono)


def export_asciicast(
    records: Iterable[Record], out: TextIO, options: ExportOptions
) -> int:
    """
    Write the session's first terminal channel (or C{options.channel}) as
    asciicast v2; return the number of events written.

    @raise NoExport: when the session has no such terminal (nothing is
        written then).
    """
    export = _Export(out, options)
    last = 0
    for record in records:
        last = record.mono
        export.record(record)
    export.finish(last)
    return export.events
