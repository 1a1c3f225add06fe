"""
The transcript: records in, psql-like lines out (statements, steps of
the extended protocol, results, errors, the gateway's events).
"""

from __future__ import annotations

import collections
import contextlib
import json
from collections.abc import Iterator
from typing import Any, NamedTuple

import attrs

from gatehouse.protocols.postgres import codec
from gatehouse.recording.format import Direction, Record, RecordType
from gatehouse.recording.render import (
    TextOutput,
    render_record,
)

from .cells import (
    _AUTH_NAMES,
    _PASSWORD,
    MAX_HELD_LINES,
    MAX_NAMES,
    MAX_PENDING,
    MAX_SQL,
    MAX_VALUE,
    _binary,
    _clean,
    _field,
    _format_time,
    _format_wall,
    _hex,
    _shorten,
    _sql_literal,
    _width,
)
from .results import (
    _Copy,
    _Result,
)
from .streams import (
    _ClientStream,
    _ServerStream,
)


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


# --- the transcript -------------------------------------------------------


class _Transcript:
    """The state of one replay: streams, results in progress, timing."""

    def __init__(self, out: TextOutput):
        self._out = out
        self._held: list[str] | None = []
        self._last_blank = True
        self._meta: dict[str, Any] = {}
        self._identity: dict[str, Any] | None = None
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
