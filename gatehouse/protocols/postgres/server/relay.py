"""
The PostgreSQL server's relay of client messages: the gate's driver
(what each message is, forwarding and refusing it as PostgreSQL would).
A mixin of L{PostgresServerProtocol}.
"""

from __future__ import annotations

import os
from functools import partial

from twisted.python.failure import Failure

from gatehouse.gate import (
    PASS,
    STOP,
    HoldReason,
    Permit,
    Proposal,
    Refusal,
    RefusalKind,
    Wait,
)
from gatehouse.policy import OPAQUE, Command, Decision
from gatehouse.protocols.postgres import codec
from gatehouse.protocols.postgres.commands import FUNCTION_CALL, Classified
from gatehouse.protocols.postgres.protections import refusal as protection_refusal
from gatehouse.protocols.postgres.server._common import (
    _BARRIER,
    _BIND,
    _C2G,
    _CANCELED,
    _COPY_END,
    _DESCRIBE,
    _EXECUTE,
    _FUNCTION_CALL,
    _PARSE,
    _QUERY,
    _READY_AFTER,
    _SYNC,
    _TERMINATE,
    _WAIT_BARRIER,
    PROTECTION_RULE,
    _own_commands,
)
from gatehouse.recording.interfaces import RecordingFailed


class ClientRelay:
    """Phase 4, the client's side: its messages through the gate."""

    # -- phase 4: relay --------------------------------------------------------

    def _relay_data(self, data: bytes) -> None:
        reader = self._reader
        base = reader.consumed + reader.buffered  # stream offset of data[0]
        try:
            frames = reader.feed(data)
        except codec.ProtocolViolation as e:
            try:
                self._bad_input(data, base, e)
            except RecordingFailed:
                pass
            return
        try:
            self.session.data(_C2G, data)
        except RecordingFailed:
            return
        if frames or self._gate.holding is not None:
            self._gate.receive(frames, reader.buffered)

    # -- the gate's driver: what each client message is ----------------------

    def inspect(self, frame: tuple) -> object:
        """
        What a complete client message is for the gate (L{IGateDriver}):
        a statement to decide, or a message that passes (its bookkeeping
        done here, in the order the target reads them).
        """
        kind = frame[0]
        if kind == _QUERY or kind == _EXECUTE:
            self._syncs_since_start = 0
            self._copy_end_syncs = None
        if kind == _QUERY or kind == _PARSE or kind == _FUNCTION_CALL:
            return self._statement(frame)
        if kind == _BIND or kind == _EXECUTE:
            # Planning and running may call functions (set_config).
            self._unsynced = True
        if kind in _COPY_END:
            if self._copy_in:
                self._copy_in = False
            elif self._copy_end_syncs is None:
                self._copy_end_syncs = self._syncs_since_start
        if kind == _SYNC:
            if not self._copy_in:  # else the target ignores it
                self._sent(kind)
                self._syncs_since_start += 1
            self._unsynced = False
        elif self._describes is not None:
            reader = self._reader
            if kind == _DESCRIBE:
                self._describes.append("pass")
                portal = codec.portal_described(reader.body(frame))
                if portal is not None:
                    self._described = (portal, frame[2])
            elif kind == _EXECUTE:
                # Rows are masked by their own portal's columns (not by
                # whatever was described last): unless the client
                # described this portal just before (libpq always does),
                # the gateway describes it, and keeps the answer.
                portal = codec.portal_executed(reader.body(frame))
                if self._described != (portal, frame[1]):
                    self.flush()
                    self._forward(codec.describe_portal(portal))
                    self._describes.append("swallow")
        if kind == _TERMINATE:
            self._close_reason = "client terminated the session"
            self._client_terminated = True
        return PASS

    def _statement(self, frame: tuple) -> object:
        """A Query, Parse or FunctionCall, for the gate."""
        kind = frame[0]
        body = self._reader.body(frame)
        if kind != _FUNCTION_CALL:
            cap = self._factory.options.max_statement_bytes
            if frame[2] - frame[1] > cap:
                return Refusal(
                    RefusalKind.TOO_LONG,
                    f"statement too long for the gateway to check "
                    f"({frame[2] - frame[1] - 5} bytes, at most {cap})",
                    code="54000",
                )
            reading = self._reading(frame, body)
            if reading is _BARRIER:
                return _WAIT_BARRIER
            if reading is not None:
                return Refusal(RefusalKind.UNREADABLE, reading, code="0A000")
        found = self._classify(frame, body)
        if found is None:
            return STOP
        if type(found) is Wait:
            return found
        text, classified = found
        return Proposal(
            classified.commands,
            text,
            classified.shape,
            None
            if classified.source == text
            else partial(_own_commands, classified, text),
            # Built-in protections first: no policy can allow these.
            self._protection(classified),
            classified,
        )

    def admit(self, frame: tuple, permit: Permit) -> object:
        """An allowed statement: can its results be masked (L{IGateDriver})?"""
        if self._masker is None:
            return None
        classified = permit.detail
        refusal = self._copy_check(classified, frame[0])
        if refusal is not None:
            return Refusal(RefusalKind.PROTOCOL, refusal)
        if self._copy_needs_columns(classified):
            return Wait(
                HoldReason.LOOKUP, partial(self._copy_columns, classified, frame)
            )
        return None

    def forward(self, frame: tuple, permit: Permit | None) -> None:
        """The gate lets C{frame} go: sent at the next L{flush}."""
        if permit is not None:
            self._sent(frame[0])
        self._permitted = frame[2]

    def flush(self) -> None:
        """Send the client's messages the gate let go so far."""
        end = self._permitted
        reader = self._reader
        if end > reader.consumed:
            self._forward(reader.take_to(end))

    def refuse(self, frame: tuple, refusal: Refusal) -> None:
        """The gate keeps C{frame} from the target: answer as PostgreSQL would."""
        self.flush()
        kind = refusal.kind
        if kind is RefusalKind.UNPARSEABLE:
            self._refuse_unparseable(frame, refusal.detail)
        elif kind is RefusalKind.CANCELLED:
            self._refuse(frame, _CANCELED, sqlstate="57014")
        else:
            self._refuse(frame, refusal.message, sqlstate=refusal.code or "42501")

    def held(self, frame: tuple, request: object, decision: Decision) -> None:
        """A statement waits for approval: the client reads a NOTICE."""
        how = self.session.approval_instructions(request)
        self._write(
            codec.NoticeResponse.build(
                "NOTICE",
                "01000",
                f"gatehouse: statement held for approval {request.id} "
                f'(rule "{decision.rule}"); waiting up to '
                f"{int(decision.timeout)}s",
                detail=decision.message,
                hint=how,
            ).encode()
        )

    def pause_input(self) -> None:
        """Too much waits behind a held statement: stop reading the client."""
        self._client_gate.pause("held")

    def resume_input(self) -> None:
        """The hold ended: read the client again."""
        self._client_gate.resume("held")

    def failed(self, failure: Failure) -> None:
        """Checking a held statement raised: end the session (fail closed)."""
        self._check_failed("statement", failure)

    def _reading(self, frame: tuple, body: bytes) -> object:
        """
        Whether the SQL text of a Query or Parse can be read now exactly as
        the target will read it: None if so; L{_BARRIER} if only once the
        target has answered everything sent before it; else why not (the
        statement is refused, the session goes on).

        A text of ASCII bytes without a backslash reads the same in every
        state: standard_conforming_strings only changes what a backslash
        means, and every client encoding PostgreSQL accepts reads bytes
        below 0x80 as ASCII.  It is read at once (pgbench -S pays nothing).
        Any other text is read only in the state the target reported
        (ParameterStatus, which PostgreSQL 14 and later sends just before
        ReadyForQuery) after everything before it ran: a statement, a
        function it calls or a trigger may have changed that state.
        """
        if frame[0] == _PARSE:
            # name and query, NUL-terminated, then binary parameter OIDs
            end = body.find(b"\0", body.find(b"\0") + 1)
            if end >= 0:
                body = body[:end]
        if body.isascii() and b"\\" not in body:
            return None
        if self._unsynced:
            # The target reports what an earlier Bind/Execute of this batch
            # changed only after the batch's Sync, which the client sends
            # after this statement: waiting would deadlock, guessing is
            # unsafe.
            return (
                "gatehouse checks a statement with non-ASCII characters or "
                "backslashes only after the statements before it in the "
                "pipeline have been synced; send Sync before it"
            )
        if self._ready_seen < self._ready_expected:
            return _BARRIER
        if not self._scs_on and b"\\" in body:
            return (
                "gatehouse does not check statements with backslashes while "
                "standard_conforming_strings is off; "
                "SET standard_conforming_strings = on"
            )
        if not self._encoding_safe and not body.isascii():
            return (
                "gatehouse cannot read non-ASCII statements in this client "
                "encoding (its characters can hide ASCII bytes); "
                "SET client_encoding = 'UTF8'"
            )
        return None

    def _sent(self, kind: int) -> None:
        """A message the target answers with ReadyForQuery is on its way."""
        if kind in _READY_AFTER:
            self._ready_expected += 1
            if self._describes is not None:
                self._describes.append("q" if kind == _QUERY else "s")

    def _classify(self, frame: tuple, body: bytes) -> object:
        """
        The text of a Query, Parse or FunctionCall and its commands, read
        in the client's encoding; a L{Wait} while a worker reads a long
        one; None (the session is ended) if the message is malformed.
        """
        kind = frame[0]
        try:
            if kind == _FUNCTION_CALL:
                oid = codec.FunctionCall.decode(body).function_oid
                text = f"fast-path call of function OID {oid}"
                command = Command(
                    "postgres",
                    FUNCTION_CALL,
                    text,
                    flags=frozenset({OPAQUE}),
                    categories=frozenset({"code"}),
                )
                return text, Classified((), (command,), source=text)
            message = (codec.Query if kind == _QUERY else codec.Parse).decode(
                body, self._encoding
            )
        except codec.ProtocolViolation as e:
            self._fatal(e.sqlstate, e.message, f"protocol violation: {e.message}")
            return None
        text = message.sql if kind == _QUERY else message.query
        cache = self._factory.commands
        ready = self._preclassified
        if ready is not None and ready[0] == frame[1]:
            self._preclassified = None
            if ready[1].source == text:
                return text, ready[1]
            # The client encoding changed meanwhile (a pipelined SET): the
            # text PostgreSQL will read is another one; classify that.
        if len(text) > self.INLINE_CLASSIFY_LIMIT:
            found = cache.cached(text)
            if found is not None:
                return text, found
            # Parsing takes milliseconds per few KiB: not on the reactor,
            # nor in its threads (see ClassifierPool).
            return Wait(
                HoldReason.CLASSIFICATION, partial(self._start_classify, frame, text)
            )
        return text, cache.lookup(text)

    def _start_classify(self, frame: tuple, text: str) -> None:
        self._factory.classifier.classify(text).addBoth(self._classified, frame, text)

    def _classified(self, result: object, frame: tuple, text: str) -> None:
        """A long statement was classified in a worker: decide it now."""
        gate = self._gate
        if self._upstream is None or not gate.holds(frame, HoldReason.CLASSIFICATION):
            return  # the client cancelled it, or the session ended
        if isinstance(result, Failure):
            gate.settle(frame, result)
            return
        self._factory.commands.remember(text, result)
        self._preclassified = (frame[1], result)
        gate.resume()

    # -- refusals -----------------------------------------------------------

    def _protection(self, classified: Classified) -> Decision | None:
        """The built-in protections' refusal of these statements, if any."""
        statements = classified.statements
        if not any(statement.sensitive for statement in statements):
            return None  # nearly every statement: no set-up, no allocation
        options = self._target.options
        why = protection_refusal(
            statements, options.upstream_roles(), frozenset(options.settable_roles)
        )
        if why is None:
            return None
        return Decision("deny", PROTECTION_RULE, message=why)

    def _refuse_unparseable(self, frame: tuple, classified: Classified) -> None:
        """Answer text the parser rejects as PostgreSQL would: 42601."""
        statement = classified.statements[0] if classified.statements else None
        if statement is None or statement.error is None:
            self._refuse(frame, "the gateway could not parse this statement")
            return
        self._refuse(
            frame,
            statement.error,
            sqlstate=statement.sqlstate or "42601",
            position=statement.position,
            hint=None,
        )

    def _refuse(
        self,
        frame: tuple,
        message: str,
        sqlstate: str = "42501",
        position: int | None = None,
        hint: str | None = "the statement did not reach the database",
    ) -> None:
        """
        Keep the statement of C{frame} from the target, and have the client
        see an error (C{sqlstate}, 42501 unless said otherwise, with the
        C{position} in the statement if given) exactly where PostgreSQL
        would have sent one.

        The target gets, in its place, a statement that fails to parse and
        names a fresh token; its error is rewritten into the refusal on its
        way back.  So the target itself fails the transaction (or the
        extended-protocol batch up to Sync) just as a refused statement
        would, and the client's replies stay in order.
        """
        token = b"gatehouse_refused_" + os.urandom(6).hex().encode()
        error = codec.ErrorResponse.build(
            "ERROR", sqlstate, message, hint=hint, position=position
        ).encode()
        if frame[0] == _PARSE:
            # Parse keeps its statement name, so later Binds fail as they
            # would after a failed Parse.
            name = codec.Parse.decode(self._reader.body(frame), self._encoding).name
            substitute = codec.Parse(name, token.decode()).encode(self._encoding)
            due = self._ready_expected + 1
        else:
            # A Query, or a FunctionCall: either is answered by an error
            # and ReadyForQuery.
            substitute = codec.Query(token.decode()).encode()
            self._sent(_QUERY)
            due = self._ready_expected
        self._reader.discard_to(frame[2])
        self._refusals[token] = (error, due)
        # The substitute is not recorded as bytes: this event says what
        # the target was sent instead of the refused statement.
        self.session.event(
            "refused-statement",
            token=token.decode(),
            message=message,
            sqlstate=sqlstate,
        )
        self._forward(substitute)
