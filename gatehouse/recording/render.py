"""
Turn a session's records into something people and tools can read.

L{render} writes a replay through the renderer registered for the session's
protocol (named by the C{"protocol"} field of its META record), falling back
on L{render_generic}, which shows every record as it is: time, sequence
number, direction, type, and its payload as text, JSON or a hex dump.
L{export_jsonl} writes one JSON object per record for SIEM tools.

A replay may abbreviate (long values, many rows, big payloads), and says so
at each cut, with how much was left out and L{FULL_HINT}; rendered with
C{full=True} (C{gatehouse replay --full}) it shows everything.  Renderers
ask L{full_replay} at each place they would cut.

A renderer that plays a terminal back writes its output with
L{write_screen} (through a L{ScreenFilter<gatehouse.recording.screen>}),
in time when L{replay_pacer} gives it a L{Pacer}.  Protocols may also
register exports in other formats (L{register_exporter}), such as
asciicast for terminal sessions.
"""

from __future__ import annotations

import base64
import contextlib
import contextvars
import itertools
import json
import time
from collections.abc import Callable, Iterable, Iterator
from importlib import import_module
from typing import TYPE_CHECKING, Any, Protocol, TextIO

import attrs

from gatehouse.recording.format import Direction, Record, RecordType

if TYPE_CHECKING:
    from gatehouse.recording.screen import ScreenFilter

__all__ = [
    "FULL_HINT",
    "ExportOptions",
    "Exporter",
    "NoExport",
    "Pacer",
    "Renderer",
    "TerminalSafe",
    "TextOutput",
    "direction_label",
    "export_jsonl",
    "exporter_for",
    "format_offset",
    "format_wall",
    "full_output",
    "full_replay",
    "hex_dump",
    "paced",
    "register_exporter",
    "register_renderer",
    "render",
    "render_generic",
    "render_record",
    "renderer_for",
    "replay_pacer",
    "unregister_renderer",
    "write_screen",
]


class TextOutput(Protocol):
    """
    What renderers write to: a text stream (L{TextIO}) or the
    L{TerminalSafe} that L{render} puts in front of one.
    """

    def write(self, text: str, /) -> int:
        """Write C{text}; return the number of characters written."""
        ...

    def flush(self) -> None:
        """Flush what was written."""
        ...


#: A renderer writes a whole session (its records, META first) to C{out}.
Renderer = Callable[[Iterable[Record], TextOutput], None]

NS = 1_000_000_000
#: Payloads longer than this are cut short in hex dumps.
HEX_LIMIT = 512

_ARROWS = {
    Direction.GATEWAY: "gw",
    Direction.CLIENT_TO_GATEWAY: "client→gw",
    Direction.GATEWAY_TO_CLIENT: "gw→client",
    Direction.GATEWAY_TO_UPSTREAM: "gw→upstream",
    Direction.UPSTREAM_TO_GATEWAY: "upstream→gw",
}
_JSON_TYPES = frozenset({RecordType.META, RecordType.EVENT, RecordType.CLOSE})
# Control characters other than these make a payload look binary.
_TEXT_CONTROLS = frozenset("\n\r\t")

_renderers: dict[str, Renderer] = {}

#: What a replay says at each place it abbreviated.
FULL_HINT = "use --full"
_full: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "gatehouse_full_replay", default=False
)


def full_replay() -> bool:
    """
    Whether the replay being rendered shows everything, unabbreviated
    (C{gatehouse replay --full}); renderers ask at each place they would cut.
    """
    return _full.get()


@contextlib.contextmanager
def full_output(full: bool) -> Iterator[None]:
    """Render with L{full_replay} answering C{full} inside the block."""
    token = _full.set(full)
    try:
        yield
    finally:
        _full.reset(token)


class Pacer:
    """
    Plays records back in their original time: L{wait} sleeps until a
    record is due, C{speed} times faster, with pauses cut to C{idle_limit}
    seconds (of the recording) when it is given.
    """

    def __init__(
        self,
        speed: float = 1.0,
        idle_limit: float | None = None,
        *,
        sleep: Callable[[float], None] = time.sleep,
        monotonic: Callable[[], float] = time.monotonic,
    ):
        if not speed > 0:
            raise ValueError(f"speed must be above 0, not {speed!r}")
        self.speed = speed
        self.idle_limit = idle_limit
        self._sleep = sleep
        self._monotonic = monotonic
        self._last_mono: int | None = None
        self._due = 0.0

    def wait(self, mono: int) -> None:
        """Sleep until the record at C{mono} (ns since the session started) is due."""
        now = self._monotonic()
        if self._last_mono is None:
            self._due = now
        else:
            gap = max(mono - self._last_mono, 0) / NS
            if self.idle_limit is not None:
                gap = min(gap, self.idle_limit)
            self._due += gap / self.speed
        self._last_mono = mono
        if self._due > now:
            self._sleep(self._due - now)


_pacer: contextvars.ContextVar[Pacer | None] = contextvars.ContextVar(
    "gatehouse_replay_pacer", default=None
)


def replay_pacer() -> Pacer | None:
    """
    The L{Pacer} a renderer plays terminal output with, or None to write
    it at once (C{gatehouse replay --no-wait}, or not on a terminal).
    """
    return _pacer.get()


@contextlib.contextmanager
def paced(pacer: Pacer | None) -> Iterator[None]:
    """Render with L{replay_pacer} answering C{pacer} inside the block."""
    token = _pacer.set(pacer)
    try:
        yield
    finally:
        _pacer.reset(token)


# --- the registry ---------------------------------------------------------


def register_renderer(protocol: str, renderer: Renderer) -> None:
    """
    Render sessions of C{protocol} with C{renderer}.

    @raise ValueError: if that protocol already has a renderer.
    """
    if protocol in _renderers:
        raise ValueError(f"protocol {protocol!r} already has a renderer")
    _renderers[protocol] = renderer


def unregister_renderer(protocol: str) -> None:
    """Forget C{protocol}'s renderer (a no-op if it has none)."""
    _renderers.pop(protocol, None)


def renderer_for(protocol: str | None) -> Renderer:
    """
    The renderer for C{protocol}: its own, else L{render_generic}.

    A built-in protocol's renderer lives in
    C{gatehouse.protocols.<protocol>.replay}, imported on first use.
    """
    if protocol is None:
        return render_generic
    if protocol not in _renderers and protocol.isidentifier():
        try:
            import_module(f"gatehouse.protocols.{protocol}.replay")
        except ImportError:
            pass
    return _renderers.get(protocol, render_generic)


def _protocol_of(record: Record) -> str | None:
    if record.type != RecordType.META:
        return None
    meta = _json_payload(record)
    protocol = meta.get("protocol") if isinstance(meta, dict) else None
    return protocol if isinstance(protocol, str) else None


def render(
    records: Iterable[Record],
    out: TextIO,
    protocol: str | None = None,
    *,
    full: bool = False,
    pacer: Pacer | None = None,
) -> None:
    """
    Replay a session as text with the renderer for its protocol.

    @param protocol: the session's protocol; when None, taken from the
        META record that opens C{records}.
    @param full: show every row and every value, unabbreviated.
    @param pacer: play terminal output in time with it (None: at once).
    """
    stream: Iterator[Record] = iter(records)
    if protocol is None:
        first = next(stream, None)
        if first is None:
            return
        protocol = _protocol_of(first)
        stream = itertools.chain([first], stream)
    with full_output(full), paced(pacer):
        renderer_for(protocol)(stream, TerminalSafe(out))


class TerminalSafe:
    """
    A text stream that passes on only printable characters, newlines and
    tabs: anything else (ESC, CR, BS, C1 controls, bidirectional overrides,
    lone surrogates) is written as C{\\xHH}, C{\\uHHHH} or C{\\UHHHHHHHH}.

    L{render} writes every replay through one, so that no renderer, a
    protocol's own included, can let a recorded peer drive the auditor's
    terminal; renderers escape what they show themselves, this is the
    backstop.
    """

    def __init__(self, out: TextOutput):
        self._out = out

    def write(self, text: str) -> int:
        """Write C{text}, escaped where it is not printable."""
        if not text.isprintable():
            text = "".join(
                ch if ch.isprintable() or ch in "\n\t" else escape_char(ch)
                for ch in text
            )
        return self._out.write(text)

    def write_screen(self, screen: ScreenFilter, text: str) -> int:
        """
        Write a recorded terminal's output C{text} through C{screen}: the
        escape sequences that only draw pass, everything else is dropped
        or escaped (see L{gatehouse.recording.screen}).
        """
        return self._out.write(screen.feed(text))

    def flush(self) -> None:
        """Flush the underlying stream."""
        self._out.flush()


def write_screen(out: TextOutput, screen: ScreenFilter, text: str) -> None:
    """
    Write a recorded terminal's output to C{out} as the terminal showed
    it, through C{screen} (on a L{TerminalSafe}, past its escaping).
    """
    if isinstance(out, TerminalSafe):
        out.write_screen(screen, text)
    else:
        out.write(screen.feed(text))


# --- generic rendering ----------------------------------------------------


def format_offset(mono: int) -> str:
    """Time since the session started, as C{+1.234567s}."""
    return f"+{mono // NS}.{mono % NS // 1000:06d}s"


def format_wall(seconds: object) -> str | None:
    """Unix seconds as C{YYYY-MM-DD HH:MM:SS.mmm UTC}; None if not a time."""
    if not isinstance(seconds, (int, float)) or isinstance(seconds, bool):
        return None
    try:
        whole = int(seconds)
        stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(whole))
    except (OverflowError, ValueError, OSError):
        return None
    return f"{stamp}.{int((seconds - whole) * 1000):03d} UTC"


def direction_label(direction: int) -> str:
    """The direction as an arrow between names, such as C{client→gw}."""
    try:
        return _ARROWS[Direction(direction)]
    except ValueError:
        return f"direction {direction}"


def _type_name(rtype: int) -> str:
    try:
        return RecordType(rtype).name
    except ValueError:
        return f"type {rtype}"


def _direction_name(direction: int) -> str:
    try:
        return Direction(direction).name.lower()
    except ValueError:
        return str(direction)


def _json_payload(record: Record) -> Any:
    """The payload parsed as JSON, or None when it is not JSON."""
    try:
        return json.loads(record.payload.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return None


def _as_text(payload: bytes) -> str | None:
    """The payload as text when it is mostly printable UTF-8, else None."""
    text = payload.decode("utf-8", errors="replace")
    odd = sum(
        1
        for ch in text
        if ch == "\ufffd" or not (ch.isprintable() or ch in _TEXT_CONTROLS)
    )
    if odd * 10 > len(text):
        return None
    return text


def escape_char(ch: str) -> str:
    """
    One character as C{\\xHH}, C{\\uHHHH} or C{\\UHHHHHHHH}, for showing
    what is not printable; a lone surrogate that stands for a byte not
    valid in its encoding (C{surrogateescape}) as that byte, C{\\xHH}.
    """
    code = ord(ch)
    if 0xDC80 <= code <= 0xDCFF:
        return f"\\x{code - 0xDC00:02x}"  # an undecodable byte
    if code < 0x100:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


def _escape(line: str) -> str:
    if line.isprintable():
        return line
    return "".join(
        ch if ch.isprintable() or ch == "\t" else escape_char(ch) for ch in line
    )


def _text_lines(text: str) -> list[str]:
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return [_escape(line.removesuffix("\r")) for line in lines]


def hex_dump(payload: bytes, limit: int = HEX_LIMIT) -> list[str]:
    """
    Lines of C{offset  hex  |ascii|}, 16 bytes each, at most C{limit}
    bytes (all of them in a L{full_replay}), then C{… N more bytes (use
    --full)} when there were more.
    """
    if full_replay():
        limit = len(payload)
    lines = []
    shown = payload[:limit]
    for offset in range(0, len(shown), 16):
        chunk = shown[offset : offset + 16]
        left = " ".join(f"{b:02x}" for b in chunk[:8])
        right = " ".join(f"{b:02x}" for b in chunk[8:])
        ascii_ = "".join(chr(b) if 0x20 <= b < 0x7F else "." for b in chunk)
        lines.append(f"{offset:08x}  {left:<23}  {right:<23}  |{ascii_}|")
    if len(payload) > limit:
        lines.append(f"… {len(payload) - limit:,} more bytes ({FULL_HINT})")
    return lines


def render_record(record: Record, out: TextOutput, hex_limit: int = HEX_LIMIT) -> None:
    """
    Write one record the generic way: a heading line, then its payload.

    Protocol renderers call this for the records they do not understand.
    """
    heading = [
        format_offset(record.mono),
        f"#{record.seq}",
        direction_label(record.direction),
    ]
    if record.channel:
        heading.append(f"ch{record.channel}")
    heading.append(_type_name(record.type))
    payload = record.payload
    if record.type in _JSON_TYPES:
        parsed = _json_payload(record)
        if parsed is not None or payload.strip() == b"null":
            # JSON escapes C0 controls but not C1 or format characters.
            heading.append(_escape(json.dumps(parsed, ensure_ascii=False)))
            out.write("  ".join(heading) + "\n")
            return
        heading.append("(not JSON)")
    heading.append(f"{len(payload)} byte" + ("" if len(payload) == 1 else "s"))
    out.write("  ".join(heading) + "\n")
    if not payload:
        return
    text = _as_text(payload)
    body = _text_lines(text) if text is not None else hex_dump(payload, hex_limit)
    for line in body:
        out.write("    " + line + "\n")


def render_generic(records: Iterable[Record], out: TextOutput) -> None:
    """Write every record of a session, the generic way."""
    for record in records:
        render_record(record, out)


# --- export ---------------------------------------------------------------


@attrs.frozen
class ExportOptions:
    """
    What an export needs besides the records: the session's id, the wall
    time (ns) of mono time 0, the channel to export (the protocol's own
    numbering; None: the exporter picks), and whether to include what the
    client typed.
    """

    session_id: str | None = None
    wall_start_ns: int | None = None
    channel: int | None = None
    input: bool = False


#: An exporter writes a session (its records, META first) to a text
#: stream in its format, and returns how many items (events) it wrote.
Exporter = Callable[[Iterable[Record], TextIO, ExportOptions], int]


class NoExport(ValueError):
    """The session has nothing the format can hold (no terminal, say)."""


_exporters: dict[tuple[str, str], Exporter] = {}


def register_exporter(protocol: str, format: str, exporter: Exporter) -> None:
    """
    Export sessions of C{protocol} in C{format} (C{"asciicast"}, ...) with
    C{exporter}.

    @raise ValueError: if that protocol already has one for that format.
    """
    if (protocol, format) in _exporters:
        raise ValueError(f"protocol {protocol!r} already has a {format} exporter")
    _exporters[protocol, format] = exporter


def exporter_for(protocol: str | None, format: str) -> Exporter | None:
    """
    The exporter of C{protocol} for C{format}, or None; like
    L{renderer_for}, a built-in protocol's comes with its replay module.
    """
    if protocol is None:
        return None
    renderer_for(protocol)  # imports the protocol's replay module
    return _exporters.get((protocol, format))


def _iso(wall_ns: int) -> str:
    seconds, rest = divmod(wall_ns, NS)
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))
    return f"{stamp}.{rest // 1000:06d}Z"


def _json_line(obj: object) -> str:
    """
    C{obj} as one line of JSON with nothing a terminal or a line splitter
    acts on: C{json} escapes C0 controls, and this the rest of what is not
    printable (C1 controls, U+2028 and U+2029, bidirectional overrides),
    which can only occur inside strings, so the value is unchanged.
    """
    line = json.dumps(obj, ensure_ascii=False)
    if line.isprintable():
        return line
    return "".join(ch if ch.isprintable() else _json_escape(ch) for ch in line)


def _json_escape(ch: str) -> str:
    code = ord(ch)
    if code < 0x10000:
        return f"\\u{code:04x}"
    code -= 0x10000
    return f"\\u{0xD800 + (code >> 10):04x}\\u{0xDC00 + (code & 0x3FF):04x}"


def export_jsonl(
    records: Iterable[Record],
    out: TextIO,
    *,
    session_id: str | None = None,
    wall_start_ns: int | None = None,
) -> int:
    """
    Write one JSON object per record, one per line.

    Each object has C{session_id}, C{seq}, C{type} and C{direction} (as
    names), C{channel}, C{mono_ns}, C{t} (seconds since the session
    started), C{size} and C{payload} (base64, exact); C{text} when the
    payload is valid UTF-8; C{json} (the parsed object) for META, EVENT
    and CLOSE records; and C{time} (ISO 8601, UTC) when C{wall_start_ns},
    the wall time of mono time 0, is given.

    @param session_id: the session's id; taken from the META record's
        C{session_id} when None.

    @return: the number of records written.
    """
    count = 0
    for record in records:
        parsed = _json_payload(record) if record.type in _JSON_TYPES else None
        if (
            session_id is None
            and record.type == RecordType.META
            and isinstance(parsed, dict)
            and isinstance(parsed.get("session_id"), str)
        ):
            session_id = parsed["session_id"]
        obj: dict[str, Any] = {
            "session_id": session_id,
            "seq": record.seq,
            "type": _type_name(record.type),
            "direction": _direction_name(record.direction),
            "channel": record.channel,
            "mono_ns": record.mono,
            "t": record.mono / NS,
        }
        if wall_start_ns is not None:
            obj["time"] = _iso(wall_start_ns + record.mono)
        obj["size"] = len(record.payload)
        obj["payload"] = base64.b64encode(record.payload).decode("ascii")
        try:
            obj["text"] = record.payload.decode("utf-8")
        except UnicodeDecodeError:
            pass
        if parsed is not None:
            obj["json"] = parsed
        out.write(_json_line(obj) + "\n")
        count += 1
    return count
