"""
The HTTP replay: a recorded HTTP or Kubernetes session as a timeline of
requests.

One line per request: its wall time, who sent it, what it was (the
recorded description, or method and target) and, after an arrow, how it
ended: status, items counted from a complete JSON list, size and time; a
refusal with its message.  A watch is followed by its events, an exec or
attach (101) by its streams (stderr and stdin marked) and exit status, a
port-forward by its connections' byte counts.  The gateway's notes start
with C{--}; every text from a peer is escaped.  Importing this module
registers it for C{http} sessions.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from gatehouse.protocols.ssh.replay.layout import (
    STDERR_BIT,
    clean,
    event_of,
    field,
    number,
)
from gatehouse.protocols.ssh.replay.transcript import _generic, _Stream
from gatehouse.recording.format import Direction, Record, RecordType
from gatehouse.recording.render import (
    TextOutput,
    format_wall,
    register_renderer,
    render_record,
)

__all__ = ["render_http"]

NS = 1_000_000_000
#: Response bytes kept per request to count its items.
BODY_LIMIT = 16 * 1024 * 1024
_REFUSAL_EVENTS = ("http-refused", "http-impersonation-refused")


def _size(count: int) -> str:
    if count < 1000:
        return f"{count} B"
    if count < 1_000_000:
        return f"{count / 1000:.1f} kB"
    return f"{count / 1_000_000:.1f} MB"


def _items(body: bytes) -> int | None:
    """How many items a complete JSON list (or Table) response holds."""
    try:
        parsed = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return None
    if not isinstance(parsed, dict):
        return None
    for key in ("items", "rows"):
        if isinstance(parsed.get(key), list):
            return len(parsed[key])
    return None


class _Request:
    """What the replay knows of one request (one record channel)."""

    def __init__(self, fields: dict[str, Any], when: str, who: str):
        self.fields = fields
        self.when = when
        self.who = who
        self.status: int | None = None
        self.body = b""
        self.denied: str | None = None
        self.shown = False
        self.ended = False
        self.streaming = False
        self.switched = False
        self.partial = b""
        self.streams: dict[str, _Stream] = {}
        self.forwards: dict[int, list[Any]] = {}

    @property
    def what(self) -> str:
        description = self.fields.get("description")
        if isinstance(description, str) and description:
            return clean(description)
        method, target = self.fields.get("method", "?"), self.fields.get("target", "?")
        return f"{field(method)} {field(target)}"

    @property
    def watch(self) -> bool:
        return "watch" in (self.fields.get("verb"), self.fields.get("api_verb"))


class _Timeline:
    """The state of one HTTP replay."""

    def __init__(self, out: TextOutput):
        self._out = out
        self._started: float | None = None
        self._who = "?"
        self._requests: dict[int, _Request] = {}
        self._forwards: dict[int, tuple[_Request, list[Any]]] = {}
        self._header_done = False

    def _line(self, text: str) -> None:
        self._out.write(text + "\n")

    def _when(self, record: Record) -> str:
        if self._started is None:
            return f"+{record.mono / NS:.3f}s"
        wall = format_wall(self._started + record.mono / NS)
        return wall[11:19] if wall else "?"

    @contextlib.contextmanager
    def _guard(self, what: str) -> Iterator[None]:
        try:
            yield
        except OSError:
            raise
        except Exception as e:
            self._line(
                f"-- (could not render {what}: {clean(type(e).__name__)}: "
                f"{clean(str(e))})"
            )

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
                render_record(record, self._out)

    def _close(self, record: Record) -> None:
        self.finish()
        try:
            close = json.loads(record.payload.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            close = None
        reason = close.get("reason") if isinstance(close, dict) else None
        self._line(f"-- session closed: {field(reason) if reason else '?'}")

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
        started = meta.get("started")
        if isinstance(started, (int, float)) and not isinstance(started, bool):
            self._started = float(started)
        protocol = field(meta.get("protocol", "http"))
        self._line(
            f"-- {protocol} session {field(meta.get('session_id', '(unknown)'))}"
        )
        client = field(meta.get("client_address", "(unknown)"))
        if meta.get("listener"):
            client += f" via listener {field(meta['listener'])}"
        self._line(f"-- client: {client}")
        wall = format_wall(meta.get("started"))
        if wall:
            self._line(f"-- started: {wall}")

    # -- events ----------------------------------------------------------

    def _event(self, record: Record) -> None:
        parsed = event_of(record)
        if parsed is None:
            render_record(record, self._out)
            return
        name, fields = parsed
        channel = record.channel & ~STDERR_BIT
        if name == "authenticated":
            self._who = field(fields.get("name") or fields.get("subject") or "?")
            self._line(f"-- authenticated {self._who}")
            return
        if name in _REFUSAL_EVENTS:
            self._refused(record, name, fields)
            return
        if name == "http-request":
            self._finish(self._requests.pop(channel, None))
            self._requests[channel] = _Request(fields, self._when(record), self._who)
            return
        request = self._requests.get(channel)
        if request is None:
            self._line(f"-- {_generic(name, fields)}")
            return
        handler = _EVENTS.get(name)
        if handler is not None:
            handler(self, request, fields)
        elif name == "decision":
            self._decision(request, fields)
        elif name.startswith("approval-"):
            self._approval(request, name.removeprefix("approval-"), fields)
        else:
            self._note(request, _generic(name, fields))

    def _head(self, request: _Request, outcome: str | None = None) -> None:
        text = f"{request.when} {request.who} {request.what}"
        if outcome is not None:
            text += f" → {outcome}"
        self._line(text)
        request.shown = True

    def _note(self, request: _Request, text: str) -> None:
        if not request.shown:
            self._head(request)
        self._line(f"  -- {text}")

    def _refused(self, record: Record, name: str, fields: dict[str, Any]) -> None:
        channel = record.channel & ~STDERR_BIT
        request = self._requests.get(channel)
        if request is not None and number(fields.get("number")) == number(
            request.fields.get("number")
        ):
            request.denied = field(fields.get("message") or "refused")
            return
        if name == "http-impersonation-refused":
            # The http-refused that follows it is the request's line.
            headers = field(fields.get("headers") or [])
            self._line(f"-- impersonation refused (headers {headers})")
            return
        status = number(fields.get("status")) or 403
        what = f"{field(fields.get('method', '?'))} {field(fields.get('target', '?'))}"
        message = field(fields.get("message") or "")
        self._line(
            f"{self._when(record)} {self._who} {what} → {status} refused: {message}"
        )

    def _decision(self, request: _Request, fields: dict[str, Any]) -> None:
        if fields.get("action") == "deny":
            request.denied = field(fields.get("message") or "denied by policy")
            if fields.get("rule"):
                request.denied += f" (rule {field(fields['rule'])})"
            return
        if fields.get("action") not in (None, "allow"):
            text = f"policy: {field(fields.get('action'))}"
            if fields.get("rule"):
                text += f" (rule {field(fields['rule'])})"
            self._note(request, text)

    def _approval(self, request: _Request, what: str, fields: dict[str, Any]) -> None:
        text = f"approval {field(fields.get('approval_id', '?'))} {clean(what)}"
        if fields.get("approver"):
            text += f" by {field(fields.get('approver_name') or fields['approver'])}"
        if fields.get("reason"):
            text += f"; {field(fields['reason'])}"
        self._note(request, text)

    def _response(self, request: _Request, fields: dict[str, Any]) -> None:
        request.status = number(fields.get("status"))
        if request.status == 101:
            request.switched = True
            self._head(request)
        elif request.watch and request.status == 200:
            request.streaming = True
            self._head(request, "200, streaming")

    def _end(self, request: _Request, fields: dict[str, Any]) -> None:
        status = number(fields.get("status")) or request.status
        if request.switched or request.streaming:
            self._end_streams(request)
            extra = f", error {field(fields['error'])}" if fields.get("error") else ""
            self._line(f"  -- ended ({_timing(fields)}{extra})")
        elif request.denied is not None:
            self._head(request, f"{status or 403} refused: {request.denied}")
        else:
            outcome = str(status) if status is not None else "?"
            items = _items(request.body) if status == 200 else None
            if items is not None:
                outcome += f", {items} item" + ("" if items == 1 else "s")
            outcome += f" ({_timing(fields)})"
            if fields.get("error"):
                outcome += f", error: {field(fields['error'])}"
            self._head(request, outcome)
        request.ended = True

    def _exit(self, request: _Request, fields: dict[str, Any]) -> None:
        self._end_streams(request)
        code = number(fields.get("code"))
        self._line(f"  exit status {code if code is not None else '?'}")

    def _resize(self, request: _Request, fields: dict[str, Any]) -> None:
        self._line(
            f"  -- resize {field(fields.get('width'))}x{field(fields.get('height'))}"
        )

    def _stream_error(self, request: _Request, fields: dict[str, Any]) -> None:
        text = fields.get("text")
        try:
            status = json.loads(text) if isinstance(text, str) else None
        except ValueError:
            status = None
        if isinstance(status, dict) and status.get("message"):
            text = status["message"]
        self._note(request, f"error stream: {field(text or '')}")

    def _websocket_close(self, request: _Request, fields: dict[str, Any]) -> None:
        text = f"websocket closed by {field(fields.get('from', '?'))}"
        text += f" ({field(fields.get('code', '?'))}"
        text += f": {field(fields['reason'])})" if fields.get("reason") else ")"
        self._note(request, text)

    def _forward(self, request: _Request, fields: dict[str, Any]) -> None:
        on = number(fields.get("recorded_on"))
        if on is None:
            self._note(request, _generic("k8s-stream", fields))
            return
        counts = [fields.get("key"), 0, 0]
        request.forwards[on] = counts
        self._forwards[on] = (request, counts)

    # -- data ------------------------------------------------------------

    def _data(self, record: Record) -> None:
        forward = self._forwards.get(record.channel)
        if forward is not None:
            side = 1 if record.direction == Direction.CLIENT_TO_GATEWAY else 2
            forward[1][side] += len(record.payload)
            return
        request = self._requests.get(record.channel & ~STDERR_BIT)
        if request is None:
            render_record(record, self._out)
            return
        inbound = record.direction == Direction.CLIENT_TO_GATEWAY
        if request.switched:
            if record.channel & STDERR_BIT:
                name = "stderr"
            else:
                name = "stdin" if inbound else "stdout"
            stream = request.streams.get(name)
            if stream is None:
                stream = request.streams[name] = _Stream(name, self._line)
            stream.feed(record.payload)
        elif inbound:
            return  # the request body: not part of the timeline
        elif request.streaming:
            self._watch(request, record.payload)
        elif len(request.body) < BODY_LIMIT:
            request.body += record.payload

    def _watch(self, request: _Request, data: bytes) -> None:
        *lines, request.partial = (request.partial + data).split(b"\n")
        for line in lines:
            if line.strip():
                self._line(f"  {_watch_event(request, line)}")

    def _end_streams(self, request: _Request) -> None:
        for stream in request.streams.values():
            stream.finish()
        request.streams.clear()
        if request.partial.strip():
            self._line(f"  {_watch_event(request, request.partial)}")
        request.partial = b""
        for on, (key, sent, received) in list(request.forwards.items()):
            self._line(
                f"  port-forward {field(key)}: {sent:,} bytes in, "
                f"{received:,} bytes out"
            )
            del request.forwards[on]
            self._forwards.pop(on, None)

    def _finish(self, request: _Request | None) -> None:
        if request is None or request.ended:
            return
        if request.switched or request.streaming:
            self._end_streams(request)
        if request.denied is not None:
            self._head(request, f"refused: {request.denied}")
        else:
            self._note(request, "no end recorded")

    def finish(self) -> None:
        """The records ran out (or the session closed)."""
        with self._guard("the end of the recording"):
            for request in self._requests.values():
                self._finish(request)
            self._requests.clear()


def _timing(fields: dict[str, Any]) -> str:
    parts = []
    size = number(fields.get("bytes_out"))
    if size is not None:
        parts.append(_size(size))
    seconds = fields.get("seconds")
    if isinstance(seconds, (int, float)) and not isinstance(seconds, bool):
        parts.append(f"{round(seconds * 1000)} ms")
    return ", ".join(parts) or "?"


def _watch_event(request: _Request, line: bytes) -> str:
    try:
        event = json.loads(line.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        event = None
    if not isinstance(event, dict):
        return f"(not a watch event: {clean(line.decode('utf-8', 'replace')[:200])})"
    obj = event.get("object")
    meta = obj.get("metadata") if isinstance(obj, dict) else None
    name = meta.get("name") if isinstance(meta, dict) else None
    resource = request.fields.get("resource") or (
        obj.get("kind") if isinstance(obj, dict) else None
    )
    return (
        f"{field(event.get('type', '?'))} {field(resource or '?')}/{field(name or '?')}"
    )


_EVENTS: dict[str, Callable[[_Timeline, _Request, dict[str, Any]], None]] = {
    "http-response": _Timeline._response,
    "http-end": _Timeline._end,
    "k8s-exit": _Timeline._exit,
    "k8s-resize": _Timeline._resize,
    "k8s-stream": _Timeline._forward,
    "k8s-stream-error": _Timeline._stream_error,
    "websocket-close": _Timeline._websocket_close,
    # Which streams opened shows in the streams themselves.
    "k8s-stream-open": lambda timeline, request, fields: None,
    "k8s-stream-close": lambda timeline, request, fields: None,
}


def render_http(records: Iterable[Record], out: TextOutput) -> None:
    """Write a recorded HTTP or Kubernetes session as a request timeline."""
    timeline = _Timeline(out)
    for record in records:
        timeline.record(record)
    timeline.finish()
    out.flush()


register_renderer("http", render_http)
