"""
The SSH replay: records in, a transcript out.

Terminal channels (a pty with a shell or a command) are played back as
the terminal showed them, through a L{ScreenFilter}, in time when the
replay is paced; other channels are shown as lines: C{$ command}, its
output indented (stderr and stdin marked), C{exit status N}; SFTP as its
file operations; forwards with their byte counts.  The gateway's notes
start at the line's first column with C{--}; nothing a peer sent does.
"""

from __future__ import annotations

import codecs
import contextlib
import json
from collections.abc import Iterable, Iterator
from typing import Any

from gatehouse.protocols.ssh.replay.layout import (
    clean,
    event_of,
    field,
    number,
    ssh_channel,
)
from gatehouse.recording.format import Direction, Record, RecordType
from gatehouse.recording.render import (
    FULL_HINT,
    TextOutput,
    format_wall,
    full_replay,
    render_record,
    replay_pacer,
    write_screen,
)
from gatehouse.recording.screen import ScreenFilter

__all__ = ["MAX_LINES", "render_ssh"]

#: Lines of one stream of a channel (stdout, stderr, stdin) shown.
MAX_LINES = 500
#: Bytes of a binary stream shown as a hex dump.
HEX_BYTES = 256
#: Characters of one output line shown.
MAX_LINE = 2000

_IN = Direction.CLIENT_TO_GATEWAY
_OUT = Direction.GATEWAY_TO_CLIENT
_STREAM_PREFIX = {"stdout": "  ", "stderr": "  [stderr] ", "stdin": "  [stdin] "}


def _looks_binary(data: bytes) -> bool:
    text = data[:4096].decode("utf-8", errors="replace")
    odd = sum(
        1
        for ch in text
        if ch == "\ufffd" or not (ch.isprintable() or ch in "\n\r\t\b\x1b")
    )
    return odd * 10 > len(text)


def _size(count: int) -> str:
    return f"{count:,} byte" + ("" if count == 1 else "s")


class _Stream:
    """One stream of a non-terminal channel, shown as indented lines."""

    def __init__(self, name: str, write: Any):
        self.name = name
        self._prefix = _STREAM_PREFIX[name]
        self._write = write
        self._decoder = codecs.getincrementaldecoder("utf-8")("surrogateescape")
        self._partial = ""
        self._binary: bool | None = None
        self._lines = 0
        self._hidden = 0
        self._head = b""
        self.size = 0

    def feed(self, data: bytes) -> None:
        if not data:
            return
        self.size += len(data)
        if self._binary is None:
            self._binary = _looks_binary(data)
        if self._binary:
            if full_replay():
                self._hex(data, self.size - len(data))
            elif len(self._head) < HEX_BYTES:
                self._head += data[: HEX_BYTES - len(self._head)]
            return
        text = self._partial + self._decoder.decode(data)
        *lines, self._partial = text.split("\n")
        for line in lines:
            self._line(line)
        if len(self._partial) > MAX_LINE and not full_replay():
            self._line(self._partial)
            self._partial = ""

    def _line(self, line: str) -> None:
        if self._lines >= MAX_LINES and not full_replay():
            self._hidden += 1
            return
        self._lines += 1
        line = line.removesuffix("\r")
        shown = clean(line)
        if len(shown) > MAX_LINE and not full_replay():
            shown = f"{shown[:MAX_LINE]}… ({len(shown) - MAX_LINE:,} more; {FULL_HINT})"
        self._write(self._prefix + shown)

    def _hex(self, data: bytes, base: int) -> None:
        for offset in range(0, len(data), 16):
            chunk = data[offset : offset + 16]
            left = " ".join(f"{b:02x}" for b in chunk[:8])
            right = " ".join(f"{b:02x}" for b in chunk[8:])
            ascii_ = "".join(chr(b) if 0x20 <= b < 0x7F else "." for b in chunk)
            columns = f"{left:<23}  {right:<23}"
            self._write(f"{self._prefix}{base + offset:08x}  {columns}  |{ascii_}|")

    def flush(self) -> None:
        """Show a line still waiting for its newline."""
        if self._binary:
            return
        self._partial += self._decoder.decode(b"", final=True)
        if self._partial:
            self._line(self._partial)
            self._partial = ""

    def finish(self) -> None:
        """The stream ended: show what is left and what was cut."""
        self.flush()
        if self._binary:
            self._write(f"{self._prefix}({_size(self.size)} of binary data)")
            if not full_replay():
                self._hex(self._head, 0)
                if self.size > len(self._head):
                    self._write(
                        f"{self._prefix}… {self.size - len(self._head):,} more "
                        f"bytes ({FULL_HINT})"
                    )
        elif self._hidden:
            self._write(f"{self._prefix}… {self._hidden:,} more lines ({FULL_HINT})")


class _Channel:
    """What the replay knows of one SSH channel."""

    def __init__(self, number: int):
        self.number = number
        self.kind: str | None = None
        self.destination: str | None = None
        self.pty = False
        self.mode: str | None = None  # shell, exec, subsystem
        self.subsystem: str | None = None
        self.command_next = False
        self.screen: ScreenFilter | None = None
        self.decoder = codecs.getincrementaldecoder("utf-8")("replace")
        self.at_line_start = True
        self.streams: dict[str, _Stream] = {}
        self.current: _Stream | None = None
        self.sizes = {_IN: 0, _OUT: 0}
        self.sftp_ops = 0
        self.closed = False

    @property
    def terminal(self) -> bool:
        return self.pty and self.mode in ("shell", "exec")


class _Transcript:
    """The state of one SSH replay."""

    def __init__(self, out: TextOutput):
        self._out = out
        self._channels: dict[int, _Channel] = {}
        self._pacer = replay_pacer()
        self._header_done = False
        self._on_screen: _Channel | None = None

    # -- output ----------------------------------------------------------

    def _line(self, text: str) -> None:
        self._leave_screen()
        self._out.write(text + "\n")

    def _note(self, channel: _Channel | None, text: str) -> None:
        where = "gateway" if channel is None else f"channel {channel.number}"
        self._line(f"-- {where}: {text}")

    def _leave_screen(self) -> None:
        """Back from terminal output to lines: start at the first column."""
        channel = self._on_screen
        if channel is None:
            return
        self._on_screen = None
        if not channel.at_line_start:
            write_screen(self._out, ScreenFilter(), "\r\n")
            channel.at_line_start = True
        self._out.flush()

    def _end_screen(self, channel: _Channel) -> None:
        """The terminal's output ended: undo the modes it set, note what was cut."""
        screen = channel.screen
        if screen is None:
            return
        channel.screen = None
        tail = channel.decoder.decode(b"", True)
        if tail:
            write_screen(self._out, screen, tail)
            channel.at_line_start = tail.endswith("\n")
        reset = screen.finish()
        if reset:
            # Our own sequences, which a fresh filter passes whole.
            write_screen(self._out, ScreenFilter(), reset)
        self._leave_screen()
        if screen.dropped:
            self._note(
                channel,
                f"{screen.dropped:,} terminal control sequence(s) not passed to "
                "your terminal (titles, clipboard, reports...)",
            )

    # -- records -----------------------------------------------------------

    def record(self, record: Record) -> None:
        with self._guard(f"record #{record.seq}"):
            if record.type == RecordType.META:
                self._meta(record)
            elif record.type == RecordType.EVENT:
                self._event(record)
            elif record.type == RecordType.DATA and record.channel:
                self._data(record)
            elif record.type == RecordType.CLOSE:
                self._close(record)
            else:
                self._leave_screen()
                render_record(record, self._out)

    @contextlib.contextmanager
    def _guard(self, what: str) -> Iterator[None]:
        try:
            yield
        except OSError:
            raise  # the output's own trouble (a closed pipe)
        except Exception as e:
            # A replay shows all it can: note what tripped it and go on.
            self._line(
                f"-- (could not render {what}: {clean(type(e).__name__)}: "
                f"{clean(str(e))})"
            )

    def _meta(self, record: Record) -> None:
        if self._header_done:
            return
        self._header_done = True
        try:
            meta = json.loads(record.payload.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            meta = None
        if not isinstance(meta, dict):
            meta = {}
        self._line(f"-- SSH session {field(meta.get('session_id', '(unknown)'))}")
        client = field(meta.get("client_address", "(unknown)"))
        if meta.get("listener"):
            client += f" via listener {field(meta['listener'])}"
        if meta.get("gateway_id"):
            client += f" on gateway {field(meta['gateway_id'])}"
        self._line(f"-- client: {client}")
        started = format_wall(meta.get("started"))
        if started:
            self._line(f"-- started: {started}")

    def _channel(self, record_channel: int) -> _Channel | None:
        number, _ = ssh_channel(record_channel)
        if number < 0:
            return None
        channel = self._channels.get(number)
        if channel is None:
            channel = self._channels[number] = _Channel(number)
        return channel

    def _close(self, record: Record) -> None:
        self._finish_channels()
        try:
            close = json.loads(record.payload.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            close = None
        reason = close.get("reason") if isinstance(close, dict) else None
        self._line(f"-- session closed: {field(reason) if reason else '?'}")

    def finish(self) -> None:
        """The records ran out."""
        with self._guard("the end of the recording"):
            self._finish_channels()

    def restore(self) -> None:
        """Undo the modes the terminal output set so far, and end the line."""
        for channel in self._channels.values():
            if channel.screen is not None:
                reset = channel.screen.finish()
                if reset:
                    write_screen(self._out, ScreenFilter(), reset)
        self._leave_screen()

    def _finish_channels(self) -> None:
        for channel in self._channels.values():
            if not channel.closed:
                self._end_channel(channel)
                self._note(channel, "no close recorded")

    # -- events ----------------------------------------------------------

    def _event(self, record: Record) -> None:
        parsed = event_of(record)
        if parsed is None:
            self._leave_screen()
            render_record(record, self._out)
            return
        name, fields = parsed
        channel = self._channel(record.channel)
        if channel is None:
            self._gateway_event(name, fields)
            return
        handler = _CHANNEL_EVENTS.get(name)
        if handler is not None:
            handler(self, channel, fields)
        elif name == "decision":
            self._decision(channel, fields)
        elif name.startswith("approval-"):
            self._approval(channel, name.removeprefix("approval-"), fields)
        else:
            self._note(channel, _generic(name, fields))

    def _gateway_event(self, name: str, fields: dict[str, Any]) -> None:
        if name == "authenticated":
            subject, who = fields.get("subject"), fields.get("name")
            text = field(who or subject or "?")
            if subject and subject != who:
                text += f" <{field(subject)}>"
            groups = fields.get("groups") or []
            text += f" (groups: {field(groups) if groups else 'none'})"
            if fields.get("target"):
                text += f" to target {field(fields['target'])}"
            self._note(None, f"authenticated {text}")
        elif name == "decision":
            self._decision(None, fields)
        elif name.startswith("approval-"):
            self._approval(None, name.removeprefix("approval-"), fields)
        else:
            self._note(None, _generic(name, fields))

    def _decision(self, channel: _Channel | None, fields: dict[str, Any]) -> None:
        text = f"policy: {field(fields.get('action', '?'))}"
        if fields.get("rule"):
            text += f" (rule {field(fields['rule'])})"
        if fields.get("message"):
            text += f": {field(fields['message'])}"
        self._note(channel, text)

    def _approval(
        self, channel: _Channel | None, what: str, fields: dict[str, Any]
    ) -> None:
        text = f"approval {field(fields.get('approval_id', '?'))} {clean(what)}"
        if what == "requested":
            text = f"held for approval {field(fields.get('approval_id', '?'))}"
            needed = number(fields.get("approvals_required"))
            if needed:
                text += f" ({needed} approval{'s' if needed != 1 else ''} needed"
                if fields.get("rule"):
                    text += f", rule {field(fields['rule'])}"
                text += ")"
        if fields.get("approver"):
            approver = field(fields.get("approver_name") or fields["approver"])
            approved = fields.get("approved")
            verdict = (
                "voted"
                if not isinstance(approved, bool)
                else ("approved" if approved else "denied")
            )
            text += f": {verdict} by {approver}"
        if fields.get("comment"):
            text += f" ({field(fields['comment'])})"
        if fields.get("reason"):
            text += f"; {field(fields['reason'])}"
        if fields.get("state") and what not in ("requested",):
            text += f" [now {field(fields['state'])}]"
        self._note(channel, text)

    def _opened(self, channel: _Channel, fields: dict[str, Any]) -> None:
        channel.kind = str(fields.get("type") or "?")
        text = f"open {clean(channel.kind)}"
        if channel.kind == "direct-tcpip":
            channel.destination = (
                f"{field(fields.get('host'))}:{field(fields.get('port'))}"
            )
            text = f"forward to {channel.destination}"
            if fields.get("originator") is not None:
                text += (
                    f" (from {field(fields.get('originator'))}:"
                    f"{field(fields.get('originator_port'))})"
                )
        self._note(channel, text)

    def _request(self, channel: _Channel, fields: dict[str, Any]) -> None:
        request = fields.get("request")
        if fields.get("refused") is not None:
            self._note(
                channel, f"request {field(request)} refused: {field(fields['refused'])}"
            )
            return
        if request == "pty-req":
            channel.pty = True
            self._note(
                channel,
                f"pty {field(fields.get('term', '?'))} "
                f"{field(fields.get('cols', '?'))}x{field(fields.get('rows', '?'))}",
            )
        elif request == "env":
            verdict = "accepted" if fields.get("accepted") else "refused"
            self._note(
                channel,
                f"env {field(fields.get('name'))}={field(fields.get('value'))} "
                f"({verdict})",
            )
        elif request == "shell":
            channel.mode = "shell"
            self._note(channel, "shell" + (" (terminal)" if channel.pty else ""))
        elif request == "exec":
            channel.mode = "exec"
            channel.command_next = True
        elif request == "subsystem":
            channel.mode = "subsystem"
            channel.subsystem = str(fields.get("name"))
            self._note(channel, f"subsystem {field(fields.get('name'))}")
        elif request == "window-change":
            if not (channel.terminal and self._on_screen is channel):
                self._note(
                    channel,
                    f"window {field(fields.get('cols', '?'))}x"
                    f"{field(fields.get('rows', '?'))}",
                )
        elif request == "signal":
            self._note(channel, f"signal {field(fields.get('signal'))} from client")
        else:
            extra = {k: v for k, v in fields.items() if k != "request"}
            self._note(channel, _generic(f"request {field(request)}", extra))

    def _exit(self, channel: _Channel, fields: dict[str, Any]) -> None:
        self._end_screen(channel)
        self._flush_streams(channel)
        status = number(fields.get("status"))
        if status is not None:
            self._note(channel, f"exit status {status}")
            return
        text = f"killed by signal {field(fields.get('signal', '?'))}"
        if fields.get("core_dumped"):
            text += " (core dumped)"
        if fields.get("message"):
            text += f": {field(fields['message'])}"
        self._note(channel, text)

    def _eof(self, channel: _Channel, fields: dict[str, Any]) -> None:
        if not channel.terminal:
            self._flush_streams(channel)
            self._note(channel, f"end of input from {field(fields.get('from', '?'))}")

    def _closed(self, channel: _Channel, fields: dict[str, Any]) -> None:
        self._end_channel(channel)
        text = f"closed by {field(fields.get('from', '?'))}"
        if fields.get("reason"):
            text += f": {field(fields['reason'])}"
        self._note(channel, text)

    def _sftp(self, channel: _Channel, fields: dict[str, Any]) -> None:
        channel.sftp_ops += 1
        text = f"sftp {field(fields.get('op', '?'))} {field(fields.get('path', '?'))}"
        if fields.get("target_path") is not None:
            text += f" -> {field(fields['target_path'])}"
        size = number(fields.get("bytes"))
        details = []
        if size is not None:
            details.append(_size(size))
        if fields.get("sha256"):
            details.append(f"sha256 {field(fields['sha256'])}")
        if details:
            text += f" ({', '.join(details)})"
        status = fields.get("status", "?")
        text += ": ok" if status == "ok" else f": {field(status)}"
        self._note(channel, text)

    def _end_channel(self, channel: _Channel) -> None:
        if channel.closed:
            return
        channel.closed = True
        self._end_screen(channel)
        for stream in channel.streams.values():
            stream.finish()
        if channel.kind == "direct-tcpip" or channel.subsystem is not None:
            what = (
                f"{channel.sftp_ops} file operation(s), " if channel.subsystem else ""
            )
            self._note(
                channel,
                f"{what}{_size(channel.sizes[_IN])} from client, "
                f"{_size(channel.sizes[_OUT])} to client",
            )

    # -- data --------------------------------------------------------------

    def _data(self, record: Record) -> None:
        channel = self._channel(record.channel)
        direction = record.direction
        if channel is None or direction not in (_IN, _OUT):
            self._leave_screen()
            render_record(record, self._out)
            return
        _, stderr = ssh_channel(record.channel)
        channel.sizes[Direction(direction)] += len(record.payload)
        if direction == _IN and channel.command_next and not stderr:
            channel.command_next = False
            self._command(channel, record.payload)
            return
        if channel.kind == "direct-tcpip" or channel.mode == "subsystem":
            return  # counted; the bytes are another protocol's
        if channel.terminal:
            if direction == _OUT:
                self._screen(channel, record)
            return  # keystrokes: the terminal's echo shows them
        name = "stdin" if direction == _IN else "stderr" if stderr else "stdout"
        stream = channel.streams.get(name)
        if stream is None:
            stream = channel.streams[name] = _Stream(name, self._line)
        if channel.current is not None and channel.current is not stream:
            channel.current.flush()
        channel.current = stream
        stream.feed(record.payload)

    def _command(self, channel: _Channel, payload: bytes) -> None:
        text = payload.decode("utf-8", errors="surrogateescape")
        lines = text.split("\n")
        self._line("$ " + clean(lines[0]))
        for line in lines[1:]:
            self._line("> " + clean(line))

    def _screen(self, channel: _Channel, record: Record) -> None:
        if self._on_screen is not channel:
            self._leave_screen()
            self._on_screen = channel
        if channel.screen is None:
            channel.screen = ScreenFilter()
        pacer = self._pacer
        if pacer is not None:
            self._out.flush()
            pacer.wait(record.mono)
        text = channel.decoder.decode(record.payload)
        if text:
            write_screen(self._out, channel.screen, text)
            channel.at_line_start = text.endswith("\n")
        if pacer is not None:
            self._out.flush()

    def _flush_streams(self, channel: _Channel) -> None:
        for stream in channel.streams.values():
            stream.flush()


def _generic(name: str, fields: dict[str, Any]) -> str:
    parts = [
        f"{clean(str(key))}={field(value)}"
        for key, value in sorted(fields.items())
        if value is not None
    ]
    return " ".join([clean(name), *parts])


_CHANNEL_EVENTS = {
    "ssh-channel-open": _Transcript._opened,
    "ssh-request": _Transcript._request,
    "ssh-exit": _Transcript._exit,
    "ssh-eof": _Transcript._eof,
    "ssh-channel-close": _Transcript._closed,
    "sftp": _Transcript._sftp,
}


def render_ssh(records: Iterable[Record], out: TextOutput) -> None:
    """Write a replay of a recorded SSH session to C{out}."""
    transcript = _Transcript(out)
    try:
        for record in records:
            transcript.record(record)
    except BaseException:
        # Stopped (Ctrl-C in a paced replay, an unreadable recording): do
        # not leave the auditor's terminal in the recorded one's modes.
        transcript.restore()
        raise
    transcript.finish()
    out.flush()
