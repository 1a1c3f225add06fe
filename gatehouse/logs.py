"""
The gateway's log: one line per event that matters to whoever is paged or
watches for attacks, as text or as JSON.

Gatehouse's own events (L{emit}) carry a stable machine name (C{event}:
C{session.start}, C{session.end}, C{auth.failure}, C{decision}) and stable
fields (C{session_id}, C{subject}, C{target}, C{client_address}, ...).
L{GatewayLogObserver} writes every log event of the process, Twisted's
included, either as classic text lines with ISO 8601 UTC times, or as one
JSON object per line; factories' "Starting factory" chatter is dropped.

twistd chooses its log observer from the application's L{ILogObserver}
component; L{observe_for_twistd} sets one up from twistd's own options
(C{--logfile}, C{--nodaemon}, C{--syslog}, C{--logger}) so that
C{twistd -n gatehouse --log-format json --config F} and C{--logfile} both
work.  L{reopen} reopens the file the log goes to (logrotate's SIGHUP).
"""

from __future__ import annotations

import json
import os
import sys
import threading
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import IO, Any

from twisted.internet.protocol import Factory
from twisted.logger import (
    ILogObserver,
    Logger,
    LogLevel,
    formatEvent,
    formatEventAsClassicLogText,
)
from twisted.python.components import Componentized
from zope.interface import implementer

__all__ = [
    "FORMATS",
    "GatewayLogObserver",
    "LogFile",
    "QuietFactory",
    "emit",
    "iso_time",
    "observe_for_twistd",
    "quiet_agent_pool",
    "reopen",
    "summary",
]

#: the values of C{--log-format}
FORMATS = ("text", "json")

#: the longest text (a command, a reason) a log line carries, in characters
MAX_TEXT = 200

#: log formats of events nobody needs: one pair per outgoing connection
_NOISE = frozenset({"Starting factory {factory!r}", "Stopping factory {factory!r}"})

_log = Logger(namespace="gatehouse")
_DEBUG = LogLevel.debug


def iso_time(when: float | None) -> str:
    """C{when} (seconds since the epoch) as ISO 8601 in UTC, with offset."""
    if when is None:
        return "-"
    return datetime.fromtimestamp(when, UTC).isoformat(timespec="milliseconds")


def _printable(ch: str) -> str:
    from gatehouse.recording.render import escape_char

    return ch if ch.isprintable() else escape_char(ch)


def summary(text: str, limit: int = MAX_TEXT) -> str:
    """
    C{text} made safe for a log line: what a terminal would interpret
    (control and format characters, line breaks) escaped, and cut to
    C{limit} characters with C{"..."} at the end.
    """
    cut = len(text) > limit
    if cut:
        text = text[:limit]
    if not text.isprintable():
        # Escapes are longer than what they stand for: whole ones only.
        parts, size = [], 0
        for ch in text:
            part = _printable(ch)
            if size + len(part) > limit:
                cut = True
                break
            parts.append(part)
            size += len(part)
        text = "".join(parts)
    return text + "..." if cut else text


def _kv_value(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(round(value, 3)) if isinstance(value, float) else str(value)
    if isinstance(value, (list, tuple)):
        value = ",".join(str(v) for v in value)
    text = summary(str(value))
    if text and all(ch.isalnum() or ch in "._:/@+-" for ch in text):
        return text
    # A quote inside is written as an escape (as summary writes what is
    # not printable), so the first quote after the opening one closes the
    # value: nothing a client chose can forge another field.
    return '"' + text.replace('"', "\\x22") + '"'


def emit(
    event: str,
    message: str,
    level: LogLevel = LogLevel.info,
    logger: Logger | None = None,
    **fields: Any,
) -> None:
    """
    Log a gatehouse event: C{event} is its stable machine name,
    C{message} a human sentence (a L{formatEvent} format over C{fields}),
    C{fields} its stable, JSON-serialisable fields (strings already bounded
    with L{summary} where a client chose them).
    """
    (logger or _log).emit(
        level, message, gatehouse_event=event, gatehouse_fields=fields, **fields
    )


def _json_safe(value: object) -> object:
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): _json_safe(v) for k, v in value.items()}
    return str(value)


def _level(event: Mapping[str, Any]) -> str:
    return getattr(event.get("log_level"), "name", "info")


def _system(event: Mapping[str, Any]) -> str:
    return str(event.get("log_system") or event.get("log_namespace") or "-")


def format_json(event: Mapping[str, Any]) -> str:
    """One log event as one line of JSON (see docs for the fields)."""
    record: dict[str, Any] = {
        "time": iso_time(event.get("log_time")),
        "level": _level(event),
        "event": event.get("gatehouse_event") or "log",
        "system": _system(event),
        "message": formatEvent(dict(event)),
    }
    fields = event.get("gatehouse_fields")
    if isinstance(fields, Mapping):
        for key, value in fields.items():
            if key not in record:
                record[key] = _json_safe(value)
    failure = event.get("log_failure")
    if failure is not None:
        try:
            record["traceback"] = failure.getTraceback()
        except Exception:
            record["traceback"] = repr(failure)
    return json.dumps(record, ensure_ascii=True, default=str) + "\n"


def format_text(event: Mapping[str, Any]) -> str | None:
    """
    One log event as classic twistd text with an ISO 8601 UTC time; a
    gatehouse event as its name and C{key=value} fields.
    """
    fields = event.get("gatehouse_fields")
    if isinstance(fields, Mapping):
        pairs = " ".join(f"{k}={_kv_value(v)}" for k, v in fields.items())
        return (
            f"{iso_time(event.get('log_time'))} [{_system(event)}] "
            f"{event.get('gatehouse_event')} {pairs}\n"
        )
    text = formatEventAsClassicLogText(dict(event), formatTime=iso_time)
    if text is None or text.isprintable():
        return text
    if event.get("log_failure") is None:
        # One line: a line break in the message may come from a client (a
        # target's error quoting a setting it sent) and would start what
        # reads as a log line of its own; twistd's continuation tab goes.
        body = text[:-1] if text.endswith("\n") else text
        body = body.replace("\n\t", "\n")
        return "".join(_printable(ch) for ch in body) + "\n"
    # A traceback keeps its line breaks, continued as twistd indents them;
    # what a terminal would interpret does not stay.
    return "".join(ch if ch in "\n\t" else _printable(ch) for ch in text)


class LogFile:
    """
    Where log lines go: a file (reopened by L{reopen}, for logrotate) or a
    stream such as stdout.  Writes are serialised: threads log too.
    """

    def __init__(self, path: str | None = None, stream: IO[str] | None = None):
        self.path = os.path.abspath(path) if path is not None else None
        self._lock = threading.Lock()
        if self.path is not None:
            self._stream = self._open(self.path)
        elif stream is not None:
            self._stream = stream
        else:
            raise TypeError("LogFile needs a path or a stream")

    @staticmethod
    def _open(path: str) -> IO[str]:
        return open(path, "a", encoding="utf-8", errors="replace")

    def write(self, text: str) -> None:
        """Write C{text} (whole lines) and flush it."""
        with self._lock:
            self._stream.write(text)
            self._stream.flush()

    def reopen(self) -> bool:
        """
        Open the file again at its path (after a rotation moved it away).

        @return: whether there was a file to reopen; a failure to open the
            new one keeps the old one, and is logged.
        """
        if self.path is None:
            return False
        with self._lock:
            try:
                fresh = self._open(self.path)
            except OSError as e:
                problem = e
            else:
                old, self._stream = self._stream, fresh
                old.close()
                return True
        _log.error("Cannot reopen the log file: {why}", why=problem)
        return False


@implementer(ILogObserver)
class GatewayLogObserver:
    """
    Writes each log event to a L{LogFile} as text or JSON (C{format});
    debug events and factories' start/stop chatter are left out.
    """

    def __init__(self, output: LogFile, format: str = "text"):
        if format not in FORMATS:
            raise ValueError(f"log format must be one of {FORMATS}: {format!r}")
        self.output = output
        self.format = format
        self._format = format_json if format == "json" else format_text

    def __call__(self, event: Mapping[str, Any]) -> None:
        if event.get("log_format") in _NOISE or event.get("log_level") is _DEBUG:
            return
        try:
            line = self._format(event)
        except Exception as e:
            # A log line never takes the daemon down; it says what broke.
            line = format_json(
                {
                    "log_time": event.get("log_time"),
                    "log_level": LogLevel.error,
                    "log_format": "Unformattable log event: {why}",
                    "why": repr(e),
                }
            )
        if line:
            self.output.write(line)


#: the log file of this process, once L{observe_for_twistd} opened one
_current: LogFile | None = None


def reopen() -> bool:
    """
    Reopen the log file the gateway writes to, if it writes to one (not
    stdout, syslog or a C{--logger} of the operator's).

    @return: whether a file was reopened.
    """
    return _current.reopen() if _current is not None else False


def observer_for(twistd_options: Mapping[str, Any], format: str) -> Any:
    """
    The observer twistd would use with C{twistd_options}, but writing
    C{format}; None where the operator chose something else (C{--logger},
    C{--syslog}): twistd then does what they asked.
    """
    global _current
    if twistd_options.get("logger") or twistd_options.get("syslog"):
        return None
    path = twistd_options.get("logfile") or None
    nodaemon = bool(twistd_options.get("nodaemon"))
    if path == "-" or (path is None and nodaemon):
        if not nodaemon:
            sys.exit("Daemons cannot log to stdout, exiting!")
        output = LogFile(stream=sys.stdout)
    else:
        output = LogFile(path or "twistd.log")
        _current = output
    return GatewayLogObserver(output, format)


def observe_for_twistd(
    service: Any, twistd_options: Mapping[str, Any] | None, format: str
) -> Any:
    """
    Make twistd log through L{GatewayLogObserver} once C{service} joins
    the application twistd builds around it.

    twistd reads the application's L{ILogObserver} component to choose its
    observer, but a plugin's C{makeService} never sees that application;
    the component is set when the service is attached to it.

    @param twistd_options: twistd's own options (C{--logfile}, ...), or
        None outside twistd (nothing is done then).
    @return: C{service}.
    """
    if twistd_options is None:
        return service
    observer = observer_for(twistd_options, format)
    if observer is None:
        return service
    attach = service.setServiceParent

    def setServiceParent(parent: Any) -> Any:
        if isinstance(parent, Componentized):
            if parent.getComponent(ILogObserver, None) is None:
                parent.setComponent(ILogObserver, observer)
        return attach(parent)

    service.setServiceParent = setServiceParent
    return service


class QuietFactory(Factory):
    """
    A client factory for one protocol instance (as C{connectProtocol}
    makes), without a "Starting factory" log line per connection.
    """

    noisy = False

    def __init__(self, protocol: Any):
        self._protocol = protocol

    def buildProtocol(self, addr: Any) -> Any:
        return self._protocol


def connect_quietly(endpoint: Any, protocol: Any) -> Any:
    """C{connectProtocol}, quietly: see L{QuietFactory}."""
    return endpoint.connect(QuietFactory(protocol))


def quiet_agent_pool(reactor: Any, persistent: bool = False) -> Any:
    """
    An L{HTTPConnectionPool} for a C{twisted.web.client.Agent} whose
    connections log nothing when they open and close.
    """
    from twisted.web.client import HTTPConnectionPool, _HTTP11ClientFactory

    class _QuietHTTP11ClientFactory(_HTTP11ClientFactory):
        noisy = False

    pool = HTTPConnectionPool(reactor, persistent=persistent)
    pool._factory = _QuietHTTP11ClientFactory
    return pool
