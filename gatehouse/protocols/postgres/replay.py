"""
Replay a recorded PostgreSQL session as a psql-like transcript.

The recording holds the bytes that crossed, in chunks of arbitrary size:
what the client sent (L{Direction.CLIENT_TO_GATEWAY}) and what it received
(L{Direction.GATEWAY_TO_CLIENT}), possibly the gateway's own startup with
the target (the two upstream directions), and the gateway's events.  Each
direction is reassembled on its own with the sans-IO codec; messages are
rendered as they complete, so the two directions interleave in record
order, which is the order in which they crossed.

The transcript shows statements (C{=> SELECT ...}), extended-protocol
steps (C{=> [prepared stmt "s1"] ...}, C{   bind: $1='42'}), results as
aligned tables, command tags, errors with their SQLSTATE, notices,
notifications, COPY summaries, the time each statement took, and the
gateway's events as C{-- gateway: ...} lines.  Password messages are never
shown, whatever they hold.

Everything printed is escaped: control characters (a terminal escape
sequence in a column value, say) are shown as C{\\x1b}, never written out.
Malformed or truncated streams do not stop the replay: what can be read is
rendered, and the point where a stream stops making sense is noted.

Importing this module registers L{render_postgres} for protocol
C{"postgres"} with L{gatehouse.recording.render}.
"""

from __future__ import annotations

import collections
import contextlib
import json
import struct
import time
import unicodedata
import uuid
from collections.abc import Iterable, Iterator
from typing import Any, NamedTuple, TextIO

import attrs

from gatehouse.protocols.postgres import codec
from gatehouse.recording.format import Direction, Record, RecordType
from gatehouse.recording.render import (
    FULL_HINT,
    escape_char,
    full_output,
    full_replay,
    register_renderer,
    render_record,
)

__all__ = ["MAX_ROWS", "render_postgres"]

#: Rows of a result shown before C{… N more rows}.
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


def _format_wall(seconds: object) -> str | None:
    if not isinstance(seconds, (int, float)) or isinstance(seconds, bool):
        return None
    try:
        whole = int(seconds)
        stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(whole))
    except (OverflowError, ValueError, OSError):
        return None
    return f"{stamp}.{int((seconds - whole) * 1000):03d} UTC"


def _field(value: object) -> str:
    """An event field's value, for a C{-- gateway:} line."""
    if isinstance(value, str):
        return _clean(value)
    if isinstance(value, list):
        return ", ".join(_field(v) for v in value)
    return _clean(json.dumps(value, ensure_ascii=False, default=str))


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


class _Pending:
    """
    A client operation awaiting its answer: its kind (the message's type
    letter), when it was sent and the SQL it runs.  A Describe names what
    it describes (C{"S"} or C{"P"}, and a name); an Execute names its
    portal and statement, and learns the columns of its rows when the
    answer to a Describe sent before it arrives.
    """

    __slots__ = (
        "described",
        "fields",
        "ident",
        "kind",
        "label",
        "portal",
        "start",
        "statement",
        "text",
    )

    def __init__(
        self,
        kind: str,
        start: int,
        text: str | None = None,
        described: tuple[str, str] | None = None,
        fields: tuple[codec.FieldDescription, ...] | None = None,
        portal: str | None = None,
        statement: str | None = None,
        label: str = "",
        ident: int = 0,
    ):
        self.label = label
        self.ident = ident
        self.kind = kind
        self.start = start
        self.text = text
        self.described = described
        self.fields = fields
        self.portal = portal
        self.statement = statement


class _Named(NamedTuple):
    """
    A prepared statement or portal: its SQL, its result columns, its
    parameter types (statement) or the statement it was bound to and its
    parameters as shown (portal).
    """

    text: str | None
    fields: tuple[codec.FieldDescription, ...] | None = None
    statement: str | None = None
    param_types: tuple[int, ...] = ()
    params: str = ""
    result_formats: tuple[int, ...] = ()


# --- stream reassembly ----------------------------------------------------


class _ClientStream:
    """
    Reassembles what one side sent as a client (the client to the gateway,
    or the gateway to its target): untyped startup packets, then typed
    frontend messages.  Calls C{on_startup(event, size)} (C{size}: bytes
    of a direct TLS ClientHello), C{on_message(type, body)} and
    C{on_broken(reason)}.
    """

    def __init__(self, on_startup: Any, on_message: Any, on_broken: Any):
        self._startup: codec.StartupParser | None = codec.StartupParser()
        self._reader: codec.FrameReader | None = None
        self._on_startup = on_startup
        self._on_message = on_message
        self._on_broken = on_broken
        self.ignored = 0
        self.broken = False

    @property
    def partial(self) -> int:
        """Bytes of an incomplete message or packet at the end."""
        if self.broken:
            return 0
        if self._reader is not None:
            return self._reader.buffered
        if self._startup is not None:
            return self._startup.buffered
        return 0

    def feed(self, data: bytes) -> None:
        if self.broken:
            self.ignored += len(data)
            return
        if self._reader is not None:
            _feed_frames(self, self._reader, data)
            return
        parser = self._startup
        if parser is None:  # after a CancelRequest
            self.fail("bytes after a CancelRequest")
            self.ignored += len(data)
            return
        try:
            parser.receive_data(data)
            while (event := parser.next_event()) is not None:
                if isinstance(event, (codec.SSLRequest, codec.GSSENCRequest)):
                    # The answer is on the other stream; go on reading
                    # what the client sent next (in the clear, or what the
                    # gateway decrypted).
                    parser.refuse_encryption()
                    self._on_startup(event, 0)
                elif isinstance(event, codec.DirectTLS):
                    # The raw ClientHello was recorded before TLS started;
                    # the rest of the handshake never reaches the recorder.
                    self._on_startup(event, len(parser.take_remaining()))
                elif isinstance(event, codec.StartupMessage):
                    self._on_startup(event, 0)
                    rest = parser.take_remaining()
                    self._startup = None
                    self._reader = codec.FrameReader.frontend()
                    if rest:
                        _feed_frames(self, self._reader, rest)
                    return
                else:  # CancelRequest: nothing may follow
                    self._on_startup(event, 0)
                    rest = parser.take_remaining()
                    self._startup = None
                    if rest:
                        self.fail("bytes after a CancelRequest")
                        self.ignored += len(rest)
                    return
        except codec.ProtocolViolation as e:
            self.fail(e.message)
            self.ignored += parser.buffered

    def fail(self, reason: str) -> None:
        if not self.broken:
            self.broken = True
            self._on_broken(reason)


class _ServerStream:
    """
    Reassembles what one side sent as a server: typed backend messages,
    except for the one-byte answer to an SSLRequest or GSSENCRequest.
    """

    def __init__(self, on_answer: Any, on_message: Any, on_broken: Any):
        self._reader = codec.FrameReader.backend()
        self._on_answer = on_answer
        self._on_message = on_message
        self._on_broken = on_broken
        self.awaiting_answer = False
        self.ignored = 0
        self.broken = False

    @property
    def partial(self) -> int:
        """Bytes of an incomplete message at the end."""
        return 0 if self.broken else self._reader.buffered

    def feed(self, data: bytes) -> None:
        if self.broken:
            self.ignored += len(data)
            return
        if self.awaiting_answer and data and not self._reader.buffered:
            self.awaiting_answer = False
            if data[:1] in (b"S", b"N"):
                self._on_answer(data[:1])
                data = data[1:]
        if data:
            _feed_frames(self, self._reader, data)

    def fail(self, reason: str) -> None:
        if not self.broken:
            self.broken = True
            self._on_broken(reason)


def _feed_frames(
    stream: _ClientStream | _ServerStream, reader: codec.FrameReader, data: bytes
) -> None:
    try:
        messages = reader.feed_messages(data)
    except codec.ProtocolViolation as e:
        # The messages framed before the bad header are whole: show them.
        messages = []
        if reader.framed > reader.consumed:
            good = reader.take_to(reader.framed)
            messages = codec.FrameReader().feed_messages(good)
        for type_, body in messages:
            stream._on_message(type_, body)
        stream.fail(e.message)
        stream.ignored += reader.buffered
        return
    for type_, body in messages:
        stream._on_message(type_, body)
        if stream.broken:
            return


# --- the transcript -------------------------------------------------------


class _Transcript:
    """The state of one replay: streams, results in progress, timing."""

    def __init__(self, out: TextIO):
        self._out = out
        self._held: list[str] | None = []
        self._last_blank = True
        self._meta: dict = {}
        self._identity: dict | None = None
        self._target: str | None = None
        self._encoding = "utf-8"
        self._client = _ClientStream(
            self._client_startup, self._client_message, self._client_broken
        )
        self._server = _ServerStream(
            self._encryption_answer, self._server_message, self._server_broken
        )
        self._up_client = _ClientStream(
            self._upstream_startup, self._upstream_request, self._upstream_broken
        )
        self._up_server = _ServerStream(
            self._upstream_answer, self._upstream_response, self._upstream_broken
        )
        self._mono = 0
        self._client_started = False
        self._ended = False
        # ParameterStatus values of the startup, shown as one line; None
        # once the first ReadyForQuery has come.
        self._params: list[tuple[str, str]] | None = []
        self._result: _Result | None = None
        self._copy_in: _Copy | None = None
        self._copy_out: _Copy | None = None
        self._pending: collections.deque[_Pending] = collections.deque()
        self._statements: collections.OrderedDict[str, _Named] = (
            collections.OrderedDict()
        )
        self._portals: collections.OrderedDict[str, _Named] = collections.OrderedDict()
        # The prepared statement whose text the last "=>" line showed.
        self._shown_statement: str | None = None
        # Statements (Query, Execute, FunctionCall) are numbered; results
        # that do not follow their statement (pipelining) are labelled.
        self._idents = 0
        self._announced = 0
        self._shown_since_push = False

    # -- output ----------------------------------------------------------

    def _line(self, text: str) -> None:
        held = self._held
        if held is not None:
            held.append(text)
            if len(held) >= MAX_HELD_LINES:
                self._header()
        else:
            self._out.write(text + "\n")
        self._last_blank = text == ""

    def _blank(self) -> None:
        if not self._last_blank:
            self._line("")

    def _header(self) -> None:
        """Write the header, then the lines held back for it."""
        held, self._held = self._held, None
        if held is None:
            return
        meta = self._meta
        write = self._out.write
        write(f"-- PostgreSQL session {_field(meta.get('session_id', '(unknown)'))}\n")
        identity = self._identity
        if identity is None:
            write("-- identity: (not authenticated)\n")
        else:
            name = identity.get("name") or identity.get("subject") or "?"
            subject = identity.get("subject")
            who = _field(name)
            if subject and subject != name:
                who += f" <{_field(subject)}>"
            groups = identity.get("groups") or []
            who += f" (groups: {_field(groups) if groups else 'none'}"
            if identity.get("issuer"):
                who += f"; issuer {_field(identity['issuer'])}"
            write(f"-- identity: {who})\n")
        write(f"-- target: {_field(self._target) if self._target else '(none)'}\n")
        client = _field(meta.get("client_address", "(unknown)"))
        if meta.get("listener"):
            client += f" via listener {_field(meta['listener'])}"
        if meta.get("gateway_id"):
            client += f" on gateway {_field(meta['gateway_id'])}"
        write(f"-- client: {client}\n")
        started = _format_wall(meta.get("started"))
        if started:
            write(f"-- started: {started}\n")
        write("\n")
        for text in held:
            write(text + "\n")

    # -- records -----------------------------------------------------------

    def record(self, record: Record) -> None:
        """Render one record."""
        self._mono = record.mono
        with self._guard(f"record #{record.seq}"):
            if record.type == RecordType.DATA:
                self._data(record)
            elif record.type == RecordType.EVENT:
                self._event(record)
            elif record.type == RecordType.META:
                meta = _json(record.payload)
                if isinstance(meta, dict) and not self._meta:
                    self._meta = meta
            elif record.type == RecordType.CLOSE:
                self._close(record)
            else:
                self._generic(record)

    @contextlib.contextmanager
    def _guard(self, what: str) -> Iterator[None]:
        try:
            yield
        except OSError:
            raise  # the output's own trouble (a closed pipe)
        except Exception as e:
            # A replay must show all it can: what trips the renderer is
            # noted, and the replay goes on.
            self._line(
                f"-- (could not render {what}:"
                f" {_clean(type(e).__name__)}: {_clean(str(e))})"
            )

    def _generic(self, record: Record) -> None:
        self._header()
        render_record(record, self._out)
        self._last_blank = False

    def _data(self, record: Record) -> None:
        direction = record.direction
        if direction == Direction.CLIENT_TO_GATEWAY:
            self._client.feed(record.payload)
        elif direction == Direction.GATEWAY_TO_CLIENT:
            self._server.feed(record.payload)
        elif direction == Direction.GATEWAY_TO_UPSTREAM:
            self._up_client.feed(record.payload)
        elif direction == Direction.UPSTREAM_TO_GATEWAY:
            self._up_server.feed(record.payload)
        else:
            self._generic(record)

    def _event(self, record: Record) -> None:
        event = _json(record.payload)
        if not isinstance(event, dict) or not isinstance(event.get("event"), str):
            self._generic(record)
            return
        fields = dict(event)
        name = fields.pop("event")
        if name == "authenticated":
            self._identity = fields
            if fields.get("target"):
                self._target = str(fields["target"])
            # The subject is the identity; a name is only what the token
            # claims, so it is never shown instead of the subject.
            subject = fields.get("subject")
            name = fields.get("name")
            who = _field(name or subject or "?")
            if subject and subject != name:
                who += f" <{_field(subject)}>"
            groups = fields.get("groups") or []
            text = f"-- gateway: authenticated {who}"
            text += f" (groups: {_field(groups) if groups else 'none'})"
            if fields.get("target"):
                text += f" target={_field(fields['target'])}"
            self._line(text)
            self._header()
            return
        if name == "authentication-failed":
            reason = _field(fields.get("reason"))
            self._line(f"-- gateway: authentication failed: {reason}")
            self._header()
            return
        if name == "startup" and self._client_started:
            return  # the startup packet itself was shown
        if name == "tls":
            how = _field(fields.get("negotiation"))
            self._line(f"-- gateway: TLS started ({how} negotiation)")
            return
        if name == "target" and fields.get("target"):
            self._target = str(fields["target"])
        parts = [
            f"{_clean(str(key))}={_field(value)}"
            for key, value in sorted(fields.items())
            if value is not None
        ]
        self._line(" ".join(["-- gateway:", _clean(name), *parts]))
        if name in ("upstream-connected", "refused"):
            self._header()

    def _close(self, record: Record) -> None:
        self._end_of_streams()
        close = _json(record.payload)
        reason = close.get("reason") if isinstance(close, dict) else None
        self._blank()
        self._line(f"-- session closed: {_field(reason if reason else '?')}")
        self._header()

    def finish(self) -> None:
        """The records ran out: say what was left incomplete."""
        with self._guard("the end of the recording"):
            self._end_of_streams()
        self._header()

    def _end_of_streams(self) -> None:
        if self._ended:
            return
        self._ended = True
        self._flush_result("-- (no completion recorded for this result)")
        self._flush_copies()
        for stream, who in ((self._client, "client"), (self._server, "server")):
            if stream.partial:
                self._line(
                    f"-- ({who} stream ends inside a message: {stream.partial} bytes)"
                )
            if stream.ignored:
                self._line(f"-- ({stream.ignored} {who} bytes not shown)")
                stream.ignored = 0

    # -- what the client sent ----------------------------------------------

    def _client_startup(self, event: object, size: int) -> None:
        if isinstance(event, codec.SSLRequest):
            self._line("-- client: SSLRequest")
            self._server.awaiting_answer = True
        elif isinstance(event, codec.GSSENCRequest):
            self._line("-- client: GSSENCRequest")
            self._server.awaiting_answer = True
        elif isinstance(event, codec.DirectTLS):
            self._line(f"-- client: direct TLS (ClientHello, {size} bytes)")
        elif isinstance(event, codec.CancelRequest):
            self._line(f"-- client: CancelRequest for backend {event.pid}")
        elif isinstance(event, codec.StartupMessage):
            self._client_started = True
            params = event.as_dict()
            encoding = params.get("client_encoding")
            if encoding:
                self._encoding = codec.python_encoding(encoding)
            first = ("user", "database", "application_name")
            shown = [f"{key}={_clean(params[key])}" for key in first if key in params]
            shown += [
                f"{_clean(key)}={_clean(value)}"
                for key, value in event.parameters
                if key not in first
            ]
            version = f"{event.major}.{event.minor}"
            self._line(f"-- startup (protocol {version}): {' '.join(shown)}")

    def _client_broken(self, reason: str) -> None:
        self._line(f"-- (unparseable client bytes from here: {_clean(reason)})")

    def _client_message(self, type_: int, body: bytes) -> None:
        if type_ == _PASSWORD:
            # Never decoded: whatever it holds is a secret.
            self._line("-- client: [password redacted]")
            return
        try:
            message = codec.decode_frontend(type_, body, self._encoding)
        except codec.ProtocolViolation as e:
            self._line(
                f"-- (malformed {_type_name(type_)} message from client:"
                f" {_clean(e.message)})"
            )
            return
        handler = _CLIENT_HANDLERS.get(type(message))
        if handler is not None:
            with self._guard(f"a {type(message).__name__} message"):
                handler(self, message)

    def _statement(self, text: str) -> None:
        self._header()
        self._flush_result("-- (result cut short by the next statement)")
        self._blank()
        lines = _shorten(text, MAX_SQL).split("\n")
        self._line("=> " + _clean(lines[0].removesuffix("\r"), tabs=True))
        for line in lines[1:]:
            self._line("-> " + _clean(line.removesuffix("\r"), tabs=True))

    def _push(self, kind: str, text: str | None = None, **more: Any) -> None:
        if kind in "QEF":
            self._idents += 1
            more["ident"] = self._idents
            self._shown_since_push = False
        pending = self._pending
        pending.append(_Pending(kind, self._mono, text, **more))
        if len(pending) > MAX_PENDING:
            pending.popleft()

    def _on_query(self, message: codec.Query) -> None:
        self._statement(message.sql)
        self._shown_statement = None
        self._push("Q", message.sql, label=_label(message.sql))

    def _on_parse(self, message: codec.Parse) -> None:
        self._statement(f"{_prepared(message.name)} {message.query}")
        named = _Named(message.query, param_types=message.param_types)
        _remember(self._statements, message.name, named)
        self._shown_statement = message.name
        self._push("P", message.query)

    def _on_bind(self, message: codec.Bind) -> None:
        statement = self._statements.get(message.statement) or _Named(None)
        if message.statement != self._shown_statement:
            text = statement.text if statement.text is not None else "(not seen)"
            self._statement(f"{_prepared(message.statement)} {text}")
            self._shown_statement = message.statement
        params = _params_text(
            message.param_formats,
            message.params,
            self._encoding,
            statement.param_types,
        )
        _remember(
            self._portals,
            message.portal,
            _Named(
                statement.text,
                statement.fields,
                message.statement,
                params=params,
                result_formats=message.result_formats,
            ),
        )
        line = "   bind"
        if message.portal:
            line += f' portal "{_clean(message.portal)}"'
        self._line(f"{line}: {params or '(no parameters)'}")
        self._push("B", statement.text)

    def _on_execute(self, message: codec.Execute) -> None:
        if message.portal or message.max_rows:
            line = "   execute"
            if message.portal:
                line += f' portal "{_clean(message.portal)}"'
            if message.max_rows:
                line += f" (at most {message.max_rows} rows)"
            self._line(line)
        portal = self._portals.get(message.portal) or _Named(None)
        label = f"{_prepared(portal.statement or '')} {_label(portal.text or '?')}"
        if portal.params:
            label += f" ({_shorten(portal.params, 80)})"
        self._push(
            "E",
            portal.text,
            fields=_with_formats(portal.fields, portal.result_formats),
            portal=message.portal,
            statement=portal.statement,
            label=label,
        )

    def _on_describe(self, message: codec.Describe) -> None:
        self._push("D", described=(message.kind, message.name))

    def _on_close(self, message: codec.Close) -> None:
        names = self._statements if message.kind == "S" else self._portals
        names.pop(message.name, None)
        if message.kind == "S" and message.name == self._shown_statement:
            self._shown_statement = None
        self._push("C")

    def _on_sync(self, message: codec.Sync) -> None:
        self._push("S")

    def _on_terminate(self, message: codec.Terminate) -> None:
        self._blank()
        self._line("-- client: Terminate")

    def _on_function_call(self, message: codec.FunctionCall) -> None:
        args = _params_text(message.arg_formats, message.args, self._encoding)
        call = f"[function call oid {message.function_oid}]"
        self._statement(f"{call} ({args})")
        self._shown_statement = None
        self._push("F", label=call)

    def _on_copy_data(self, message: codec.CopyData) -> None:
        if self._copy_in is None:
            self._copy_in = _Copy("FROM STDIN", binary=False)
        self._copy_in.add(message.data)

    def _on_copy_done(self, message: codec.CopyDone) -> None:
        self._flush_copies(out=False)

    def _on_copy_fail(self, message: codec.CopyFail) -> None:
        self._flush_copies(out=False)
        self._line(f"-- client aborts COPY: {_clean(message.message)}")

    # -- what the client received ------------------------------------------

    def _encryption_answer(self, answer: bytes) -> None:
        # An accepted request shows as the gateway's "tls" event.
        if answer == b"N":
            self._line("-- gateway: encryption refused; the client goes on in clear")

    def _server_broken(self, reason: str) -> None:
        self._line(f"-- (unparseable server bytes from here: {_clean(reason)})")

    def _server_message(self, type_: int, body: bytes) -> None:
        try:
            message = codec.decode_backend(type_, body, self._encoding)
        except codec.ProtocolViolation as e:
            if type_ == codec.BackendType.DATA_ROW and self._result is not None:
                self._result.add(None, self._encoding)
            self._line(
                f"-- (malformed {_type_name(type_)} message from server:"
                f" {_clean(e.message)})"
            )
            return
        kind = type(message)
        handler = _SERVER_HANDLERS.get(kind)
        if handler is not None:
            with self._guard(f"a {kind.__name__} message"):
                handler(self, message)
        elif kind in _AUTH_NAMES:
            self._line(f"-- server: {_AUTH_NAMES[kind]}")

    def _answered(self, kind: str) -> _Pending | None:
        """Take the operation at the head if it is of C{kind}."""
        pending = self._pending
        if pending and pending[0].kind == kind:
            return pending.popleft()
        return None

    def _elapsed(self) -> str | None:
        """
        The time since the operation now answered started.  An Execute is
        done; in a simple Query, the next statement starts now.
        """
        pending = self._pending
        while pending and pending[0].kind in "PBDC":
            pending.popleft()  # their answers went missing
        if not pending or pending[0].kind not in "QEF":
            return None
        head = pending[0]
        elapsed = self._mono - head.start
        if head.kind == "E":
            pending.popleft()
        else:
            head.start = self._mono
        return _format_time(max(elapsed, 0))

    def _current(self) -> _Pending | None:
        """The statement being answered: a Query, Execute or FunctionCall."""
        for entry in self._pending:
            if entry.kind in "QEF":
                return entry
            if entry.kind not in "PBDC":
                break
        return None

    def _execute_fields(self) -> tuple[codec.FieldDescription, ...] | None:
        """The columns of the Execute being answered, if described."""
        entry = self._current()
        return entry.fields if entry is not None and entry.kind == "E" else None

    def _announce(self) -> None:
        """
        Name the statement a result belongs to, unless it is the one shown
        just above (pipelined statements are all shown before any result).
        """
        entry = self._current()
        if entry is None:
            return
        follows = entry.ident == self._idents and not self._shown_since_push
        if not follows and entry.ident != self._announced:
            self._line(f"-- result of: {_clean(entry.label, tabs=True)}")
        self._announced = entry.ident
        self._shown_since_push = True

    def _flush_result(self, note: str | None = None, suspended: bool = False) -> None:
        result, self._result = self._result, None
        if result is None:
            return
        for text in result.lines():
            self._line(text)
        if suspended:
            self._line("-- (portal suspended: more rows available)")
        elif note is not None:
            self._line(note)

    def _flush_copies(self, out: bool = True) -> None:
        copies = [self._copy_in]
        self._copy_in = None
        if out:
            copies.append(self._copy_out)
            self._copy_out = None
        for copy in copies:
            if copy is not None:
                for text in copy.lines(self._encoding):
                    self._line(text)

    def _describe_answer(
        self, fields: tuple[codec.FieldDescription, ...] | None
    ) -> bool:
        """
        Keep the columns a Describe asked for, for the statement or portal
        and for the Executes of it already sent; False if no Describe was
        waiting.
        """
        describe = self._answered("D")
        if describe is None:
            return False
        if describe.described is None:
            return True
        kind, name = describe.described
        names = self._statements if kind == "S" else self._portals
        named = names.get(name)
        if named is not None:
            names[name] = named._replace(fields=fields)
        for entry in self._pending:
            if entry.kind != "E":
                continue
            if kind == "P" and entry.portal == name:
                # Only the next Execute: a later Bind may reuse the name.
                entry.fields = fields
                break
            if kind == "S" and entry.statement == name and entry.fields is None:
                # A statement's columns are described as text; the Bind
                # chose their formats.
                portal = self._portals.get(entry.portal or "")
                formats = portal.result_formats if portal is not None else ()
                entry.fields = _with_formats(fields, formats)
        return True

    def _on_parameter_description(self, message: codec.ParameterDescription) -> None:
        pending = self._pending
        if not pending or pending[0].kind != "D" or pending[0].described is None:
            return
        kind, name = pending[0].described
        named = self._statements.get(name) if kind == "S" else None
        if named is not None:
            declared = named.param_types
            types = tuple(
                declared[i] if i < len(declared) and declared[i] else oid
                for i, oid in enumerate(message.type_oids)
            )
            self._statements[name] = named._replace(param_types=types)

    def _on_row_description(self, message: codec.RowDescription) -> None:
        if self._describe_answer(message.fields):
            return
        self._flush_result("-- (result cut short)")
        self._result = _Result(message.fields)

    def _on_no_data(self, message: codec.NoData) -> None:
        self._describe_answer(None)

    def _on_parse_complete(self, message: codec.ParseComplete) -> None:
        self._answered("P")

    def _on_bind_complete(self, message: codec.BindComplete) -> None:
        self._answered("B")

    def _on_close_complete(self, message: codec.CloseComplete) -> None:
        self._answered("C")

    def _on_data_row(self, message: codec.DataRow) -> None:
        if self._result is None:
            self._result = _Result(self._execute_fields())
        self._result.add(message, self._encoding)

    def _complete(self, tag: str | None, suspended: bool = False) -> None:
        self._announce()
        if self._result is None:
            fields = self._execute_fields()
            if fields is not None:
                # An Execute that returned no rows: psql still shows the
                # column headings.
                self._result = _Result(fields)
        self._flush_result(suspended=suspended)
        self._flush_copies()
        if tag is not None:
            self._line(tag)
        elapsed = self._elapsed()
        if elapsed:
            self._line(elapsed)

    def _on_command_complete(self, message: codec.CommandComplete) -> None:
        self._complete(_clean(message.tag))

    def _on_empty_query(self, message: codec.EmptyQueryResponse) -> None:
        self._complete("-- (empty query)")

    def _on_portal_suspended(self, message: codec.PortalSuspended) -> None:
        self._complete(None, suspended=True)

    def _on_error(self, message: codec.ErrorResponse) -> None:
        self._announce()
        if self._result is not None and self._result.count == 0:
            self._result = None  # like psql: only the error
        self._flush_result("-- (result cut short by the error)")
        self._flush_copies()
        severity = message.severity or message.severity_nonlocalized or "ERROR"
        line = f"{_clean(severity)}:  "
        if message.sqlstate:
            line += f"{_clean(message.sqlstate)}: "
        self._line(line + _clean(message.message or ""))
        pending = self._pending
        head = pending[0] if pending and pending[0].kind != "S" else None
        self._position(message.position, head.text if head is not None else None)
        self._details(message)
        if head is not None:
            self._line(_format_time(max(self._mono - head.start, 0)))
        if (message.severity_nonlocalized or severity) in ("FATAL", "PANIC"):
            pending.clear()  # the session ends
        elif head is None:
            return  # the gateway's own error, outside any statement
        elif head.kind in "QF":
            head.start = self._mono
        else:
            # The server skips the rest of an extended-protocol batch, up
            # to its Sync.
            while pending and pending[0].kind != "S":
                pending.popleft()

    def _position(self, position: str | None, sql: str | None) -> None:
        """psql's C{LINE n:} with a caret under the error's position."""
        if not position or sql is None or not position.isdigit():
            return
        offset = int(position) - 1
        if not 0 <= offset <= len(sql):
            return
        start = sql.rfind("\n", 0, offset) + 1
        end = sql.find("\n", offset)
        line = sql[start : end if end >= 0 else len(sql)].removesuffix("\r")
        if len(line) > MAX_VALUE:
            return
        prefix = f"LINE {sql.count(chr(10), 0, offset) + 1}: "
        self._line(prefix + _clean(line))
        self._line(" " * (len(prefix) + _width(_clean(sql[start:offset]))) + "^")

    def _details(self, message: codec.ErrorResponse | codec.NoticeResponse) -> None:
        for label, value in (
            ("DETAIL", message.detail),
            ("HINT", message.hint),
            ("CONTEXT", message.where),
        ):
            if value:
                first, *more = value.split("\n")
                self._line(f"{label}:  {_clean(first)}")
                for text in more:
                    self._line(_clean(text))

    def _on_notice(self, message: codec.NoticeResponse) -> None:
        severity = message.severity or message.severity_nonlocalized or "NOTICE"
        self._line(f"{_clean(severity)}:  {_clean(message.message or '')}")
        self._details(message)

    def _on_notification(self, message: codec.NotificationResponse) -> None:
        text = f'Asynchronous notification "{_clean(message.channel)}"'
        if message.payload:
            text += f' with payload "{_clean(message.payload)}"'
        self._line(f"{text} received from server process with PID {message.pid}.")

    def _on_parameter_status(self, message: codec.ParameterStatus) -> None:
        if message.name == "client_encoding":
            self._encoding = codec.python_encoding(message.value)
        if self._params is not None:
            self._params.append((message.name, message.value))
        else:
            name, value = _clean(message.name), _clean(message.value)
            self._line(f"-- server parameter: {name}={value}")

    def _on_ready(self, message: codec.ReadyForQuery) -> None:
        params, self._params = self._params, None
        if params:
            shown = ", ".join(f"{_clean(k)}={_clean(v)}" for k, v in params)
            self._line(f"-- server parameters: {shown}")
        self._flush_result("-- (no completion recorded for this result)")
        self._flush_copies()
        pending = self._pending
        while pending:
            if pending.popleft().kind in "QSF":
                break

    def _on_copy_response(self, message: Any) -> None:
        self._flush_copies()
        binary = message.format == 1
        if isinstance(message, codec.CopyInResponse):
            self._copy_in = _Copy("FROM STDIN", binary)
        elif isinstance(message, codec.CopyOutResponse):
            self._copy_out = _Copy("TO STDOUT", binary)
        else:
            self._copy_in = _Copy("BOTH, client data", binary)
            self._copy_out = _Copy("BOTH, server data", binary)

    def _on_server_copy_data(self, message: codec.CopyData) -> None:
        if self._copy_out is None:
            self._copy_out = _Copy("TO STDOUT", binary=False)
        self._copy_out.add(message.data)

    def _on_server_copy_done(self, message: codec.CopyDone) -> None:
        copy, self._copy_out = self._copy_out, None
        if copy is not None:
            for text in copy.lines(self._encoding):
                self._line(text)

    def _on_negotiate(self, message: codec.NegotiateProtocolVersion) -> None:
        version = f"{message.version >> 16}.{message.version & 0xFFFF}"
        text = f"-- server: protocol {version}"
        if message.options:
            text += f" (unsupported options: {_field(list(message.options))})"
        self._line(text)

    def _on_function_result(self, message: codec.FunctionCallResponse) -> None:
        value = message.result
        self._line(f"function result: {'NULL' if value is None else _hex(value)}")
        elapsed = self._elapsed()
        if elapsed:
            self._line(elapsed)

    def _on_quiet(self, message: object) -> None:
        pass

    # -- the gateway's own session with the target -------------------------

    def _upstream_startup(self, event: object, size: int) -> None:
        if isinstance(event, codec.StartupMessage):
            params = event.as_dict()
            shown = "".join(
                f" {key}={_clean(params[key])}"
                for key in ("user", "database", "application_name")
                if key in params
            )
            self._line(f"-- gateway→upstream: startup{shown}")
            return
        self._line(f"-- gateway→upstream: {type(event).__name__}")
        if isinstance(event, (codec.SSLRequest, codec.GSSENCRequest)):
            self._up_server.awaiting_answer = True

    def _upstream_answer(self, answer: bytes) -> None:
        verdict = "accepted" if answer == b"S" else "refused"
        self._line(f"-- upstream: encryption {verdict}")

    def _upstream_request(self, type_: int, body: bytes) -> None:
        # The gateway's credentials for the target must never show.
        if type_ == _PASSWORD:
            self._line("-- gateway→upstream: [password redacted]")
        elif type_ == codec.FrontendType.TERMINATE:
            self._line("-- gateway→upstream: Terminate")

    def _upstream_response(self, type_: int, body: bytes) -> None:
        # Only how the gateway's login went; nothing carrying authentication
        # data (salts, SASL messages) is shown.
        if type_ == codec.BackendType.AUTHENTICATION:
            try:
                message = codec.decode_backend(type_, body)
            except codec.ProtocolViolation:
                return
            name = _AUTH_NAMES.get(type(message))
            if name is not None:
                self._line(f"-- upstream: {name}")
        elif type_ in _UPSTREAM_FIELDS:
            try:
                fields = codec.decode_backend(type_, body, self._encoding)
            except codec.ProtocolViolation:
                return
            assert isinstance(fields, (codec.ErrorResponse, codec.NoticeResponse))
            self._line(
                f"-- upstream: {_clean(fields.severity or '?')}:"
                f"  {_clean(fields.sqlstate or '')}: {_clean(fields.message or '')}"
            )
        elif type_ == codec.BackendType.READY_FOR_QUERY:
            self._line("-- upstream: ready for queries")

    def _upstream_broken(self, reason: str) -> None:
        self._line(f"-- (unparseable upstream bytes from here: {_clean(reason)})")


_UPSTREAM_FIELDS = (codec.BackendType.ERROR_RESPONSE, codec.BackendType.NOTICE_RESPONSE)


def _with_formats(
    fields: tuple[codec.FieldDescription, ...] | None, formats: tuple[int, ...]
) -> tuple[codec.FieldDescription, ...] | None:
    """C{fields} in the result formats a Bind asked for."""
    if fields is None:
        return None
    out = []
    for index, field in enumerate(fields):
        if len(formats) == 1:
            fmt = formats[0]
        else:
            fmt = formats[index] if index < len(formats) else 0
        out.append(field if field.format == fmt else attrs.evolve(field, format=fmt))
    return tuple(out)


def _label(sql: str) -> str:
    """A statement's text on one line, cut short, to name it."""
    return _shorten(" ".join(sql.split()), 100)


def _prepared(name: str) -> str:
    return f'[prepared stmt "{_clean(name)}"]' if name else "[prepared stmt]"


def _params_text(
    formats: tuple[int, ...],
    values: tuple[bytes | None, ...],
    encoding: str,
    types: tuple[int, ...] = (),
) -> str:
    """
    C{$1='42', $2=NULL, $3=7, $4=\\x00ff}: text values quoted; binary
    values of common types (by C{types}) decoded, others as hex.
    """
    parts = []
    for index, value in enumerate(values):
        if len(formats) == 1:
            fmt = formats[0]
        else:
            fmt = formats[index] if index < len(formats) else 0
        if value is None:
            shown = "NULL"
        elif fmt == 1:
            oid = types[index] if index < len(types) else 0
            decoded = _binary(oid, value)
            if decoded is None:
                shown = _hex(value)
            elif decoded[1]:
                shown = _sql_literal(decoded[0])
            else:
                shown = decoded[0]
        else:
            shown = _sql_literal(value.decode(encoding, "surrogateescape"))
        parts.append(f"${index + 1}={shown}")
    return ", ".join(parts)


def _remember(
    names: collections.OrderedDict[str, _Named], name: str, value: _Named
) -> None:
    names[name] = value
    names.move_to_end(name)
    if len(names) > MAX_NAMES:
        names.popitem(last=False)


def _json(payload: bytes) -> Any:
    try:
        return json.loads(payload.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return None


def _type_name(type_: int) -> str:
    return repr(bytes([type_]))


_CLIENT_HANDLERS: dict[type, Any] = {
    codec.Query: _Transcript._on_query,
    codec.Parse: _Transcript._on_parse,
    codec.Bind: _Transcript._on_bind,
    codec.Execute: _Transcript._on_execute,
    codec.Describe: _Transcript._on_describe,
    codec.Close: _Transcript._on_close,
    codec.Sync: _Transcript._on_sync,
    codec.Terminate: _Transcript._on_terminate,
    codec.FunctionCall: _Transcript._on_function_call,
    codec.CopyData: _Transcript._on_copy_data,
    codec.CopyDone: _Transcript._on_copy_done,
    codec.CopyFail: _Transcript._on_copy_fail,
}

_SERVER_HANDLERS: dict[type, Any] = {
    codec.RowDescription: _Transcript._on_row_description,
    codec.DataRow: _Transcript._on_data_row,
    codec.CommandComplete: _Transcript._on_command_complete,
    codec.EmptyQueryResponse: _Transcript._on_empty_query,
    codec.PortalSuspended: _Transcript._on_portal_suspended,
    codec.ErrorResponse: _Transcript._on_error,
    codec.NoticeResponse: _Transcript._on_notice,
    codec.NotificationResponse: _Transcript._on_notification,
    codec.ParameterStatus: _Transcript._on_parameter_status,
    codec.ReadyForQuery: _Transcript._on_ready,
    codec.CopyInResponse: _Transcript._on_copy_response,
    codec.CopyOutResponse: _Transcript._on_copy_response,
    codec.CopyBothResponse: _Transcript._on_copy_response,
    codec.CopyData: _Transcript._on_server_copy_data,
    codec.CopyDone: _Transcript._on_server_copy_done,
    codec.NegotiateProtocolVersion: _Transcript._on_negotiate,
    codec.FunctionCallResponse: _Transcript._on_function_result,
    codec.ParseComplete: _Transcript._on_parse_complete,
    codec.BindComplete: _Transcript._on_bind_complete,
    codec.CloseComplete: _Transcript._on_close_complete,
    codec.NoData: _Transcript._on_no_data,
    codec.BackendKeyData: _Transcript._on_quiet,
    codec.ParameterDescription: _Transcript._on_parameter_description,
}


def render_postgres(
    records: Iterable[Record], out: TextIO, *, full: bool | None = None
) -> None:
    """
    Write a recorded PostgreSQL session to C{out} as a psql-like
    transcript (see the module docstring).  A damaged or truncated
    recording is rendered as far as it can be; only C{out}'s own errors
    propagate.

    @param full: show every row and value whole; None: as L{render} was
        asked (L{full_replay}).
    """
    with full_output(full_replay() if full is None else full):
        transcript = _Transcript(out)
        for record in records:
            transcript.record(record)
        transcript.finish()


register_renderer("postgres", render_postgres)
