"""
The PostgreSQL server's relay of the target's answers: ReadyForQuery
bookkeeping, refusal rewriting and masking.  A mixin of
L{PostgresServerProtocol}.
"""

from __future__ import annotations

from twisted.python.failure import Failure

from gatehouse.gate import HoldReason, Refusal, RefusalKind
from gatehouse.net import send_now
from gatehouse.protocols.postgres import codec
from gatehouse.protocols.postgres.commands import Classified
from gatehouse.protocols.postgres.server._common import (
    _B_COPY_IN,
    _B_DATA_ROW,
    _B_ERROR,
    _B_NO_DATA,
    _B_PARAMETER,
    _B_READY,
    _B_ROWS,
    _CANCELLABLE,
    _G2C,
    _G2U,
    _MASKED_TYPES,
    _MASKER_BODIES,
    _QUERY,
    _U2G,
)
from gatehouse.protocols.postgres.upstream import client_encoding, send_cancel
from gatehouse.recording.interfaces import RecordingFailed


class TargetResults:
    """Phase 4, the target's side: its answers to the client, masked."""

    # -- masking ------------------------------------------------------------

    #: the transaction status of the target's last ReadyForQuery
    _tx_status = b"I"

    def _copy_check(self, classified: Classified, kind: int = _QUERY) -> str | None:
        """Why a COPY to the client cannot be masked, if it cannot."""
        for n, statement in enumerate(classified.statements):
            copy = statement.copy
            if copy is None or not copy.to_client:
                continue
            if copy.format == "binary":
                return (
                    "binary COPY output cannot be masked on this target; "
                    "use FORMAT text or csv"
                )
            if copy.rewrites_values():
                return (
                    "this COPY's DELIMITER, QUOTE or ESCAPE would split values "
                    "that masking must read whole; use the default "
                    "DELIMITER, QUOTE and ESCAPE"
                )
            masker = self.session.masker
            if copy.relation is None and (
                masker.has_column_rules or masker.has_relation_rules
            ):
                return (
                    "COPY (query) TO STDOUT cannot be masked by column; "
                    "use SELECT, or COPY table TO STDOUT"
                )
            if (
                not copy.columns
                and (masker.has_column_rules or masker.has_relation_rules)
                and (
                    kind != _QUERY
                    or n
                    or self._tx_status != b"I"
                    or self._ready_expected > self._ready_seen
                )
            ):
                # Its columns are looked up on the gateway's own connection,
                # which does not see what this session's transaction (or a
                # statement before it) created or changed.
                return (
                    "COPY table TO STDOUT without a column list is masked only "
                    "as a statement of its own, outside a transaction block "
                    "(its columns are looked up outside this session); name "
                    "the columns: COPY table (a, b) TO STDOUT"
                )
        return None

    def _copy_needs_columns(self, classified: Classified) -> bool:
        for statement in classified.statements:
            copy = statement.copy
            if copy is not None and copy.to_client and copy.relation is not None:
                return True
        return False

    def _copy_columns(self, classified: Classified, frame: tuple) -> None:
        """
        Tell the masker which columns the COPY sends, then release the
        held C{frame} (or refuse it).

        The client's session has its own search_path (and temporary
        schema), which the gateway's catalog connection does not share: an
        unqualified name is looked up in every schema, and where tables of
        that name would be masked differently the COPY is refused.
        """
        copy = next(
            s.copy for s in classified.statements if s.copy and s.copy.to_client
        )
        masker = self._masker
        rules = self.session.masker
        if copy.columns or not (rules.has_column_rules or rules.has_relation_rules):
            relation = copy.relation
            names = list(copy.columns) or None
            full = [f"{relation}.{c}" for c in copy.columns] or None
            masker.copy_out(names, copy.format, copy.delimiter, full, copy.header)
            self._gate.settle(frame, None)
            return
        d = self._factory.catalog(self._target).relation_candidates(copy.relation)

        def known(candidates: list) -> str | None:
            def masked(columns: list) -> tuple:
                return tuple(
                    rules.column_masked(c.rsplit(".", 1)[-1], c) for c in columns
                )

            if len({masked(c) for c in candidates}) > 1:
                return (
                    f"COPY {copy.relation} TO STDOUT is ambiguous for masking: "
                    "tables of that name in several schemas are masked "
                    "differently, and the session's search_path decides; "
                    "name the schema (COPY schema.table) or the columns"
                )
            columns = candidates[0] if candidates else []
            masker.copy_out(
                [c.rsplit(".", 1)[-1] for c in columns] or None,
                copy.format,
                copy.delimiter,
                columns or None,
                copy.header,
            )
            return None

        d.addCallback(known)
        d.addCallbacks(
            self._copy_known,
            lambda failure: self._gate.settle(frame, failure),
            callbackArgs=(frame,),
        )

    def _copy_known(self, refusal: str | None, frame: tuple) -> None:
        self._gate.settle(
            frame, None if refusal is None else Refusal(RefusalKind.PROTOCOL, refusal)
        )

    # -- forwarding -----------------------------------------------------------

    def _forward(self, data: bytes) -> None:
        upstream = self._upstream
        if upstream is None or upstream.transport is None or not data:
            return
        self.session.byte_counts[_G2U] += len(data)
        send_now(upstream.transport, data)

    def _upstream_data(self, data: bytes) -> None:
        self.session.byte_counts[_U2G] += len(data)
        if self._closing:
            return
        reader = self._upstream_reader
        try:
            frames = reader.feed(data)
        except codec.ProtocolViolation as e:
            self._fatal(
                "08P01",
                "the target sent a malformed message",
                f"upstream protocol violation: {e.message}",
            )
            return
        if not frames:
            return
        if self._upstream_held is not None:
            self._upstream_held.extend(frames)
            return
        self._deliver_checked(frames)

    def _deliver_checked(self, frames: list) -> None:
        try:
            self._deliver(frames)
        except Exception:
            self._check_failed("result")
            return
        if (
            self._gate.holding is HoldReason.BARRIER
            and self._ready_seen >= self._ready_expected
            and not self._closing
        ):
            # Everything before the held statement has been answered, and
            # the target has said (ParameterStatus) how it reads SQL now.
            self._gate.resume()

    def _check_failed(self, what: str, failure: Failure | None = None) -> None:
        """
        Fail closed on an error while checking a statement or a result (in
        an C{except} block, or given its C{failure}): what was not checked
        never passes, and the session ends saying why.
        """
        self._log.failure(
            "Checking a {what} of session {sid}",
            failure,
            what=what,
            sid=str(self.session.id),
        )
        self._fatal(
            "XX000",
            f"the gateway could not check this {what}; the session is closed",
            f"internal error checking a {what}",
        )

    def _deliver(self, frames: list) -> None:
        """Send complete messages from the target on to the client."""
        reader = self._upstream_reader
        masker = self._masker
        if masker is None and not self._refusals:
            for frame in frames:
                kind = frame[0]
                if kind == _B_READY:
                    self._ready_seen += 1
                elif kind == _B_PARAMETER and not self._parameter(reader.body(frame)):
                    return
                elif kind == _B_COPY_IN:
                    self._copy_in_started()
            self._send_client(reader.take_to(frames[-1][2]))
            return
        describes = self._describes
        out = []
        for index, frame in enumerate(frames):
            kind = frame[0]
            if kind == _B_DATA_ROW and masker is not None:
                # The bulk of a result: only the masker looks at it.
                new_body = masker.message(kind, reader.body(frame))
                if new_body is not None:
                    out.append(reader.take_to(frame[1]))
                    reader.discard_to(frame[2])
                    out.append(codec.encode_message(kind, new_body))
                continue
            replacement = None
            drop = False
            if kind == _B_ERROR and self._refusals:
                replacement = self._refusal_for(reader.body(frame))
            elif kind == _B_PARAMETER:
                if not self._parameter(reader.body(frame)):
                    return
                if masker is not None:
                    masker.encoding = self._encoding
            elif kind == _B_COPY_IN:
                self._copy_in_started()
            if kind == _B_ROWS and masker is not None:
                body = reader.body(frame)
                unknown = masker.describe(body)
                if unknown:
                    unknown = self._factory.catalog(self._target).unknown(unknown)
                    if unknown:
                        out.append(reader.take_to(frame[1]))
                        self._send_client(b"".join(out))
                        self._hold_upstream(frames[index:], unknown)
                        return
                    masker.describe(body, look_up=False)
                renamed = masker.rename(body)
                if renamed is not None:
                    replacement = codec.encode_message(kind, renamed)
            elif masker is not None and kind in _MASKED_TYPES and replacement is None:
                body = reader.body(frame) if kind in _MASKER_BODIES else b""
                new_body = masker.message(kind, body)
                if new_body is not None:
                    replacement = codec.encode_message(kind, new_body)
            if describes and (kind == _B_ROWS or kind == _B_NO_DATA):
                if describes[0] in ("pass", "swallow"):
                    drop = describes.popleft() == "swallow"
            if kind == _B_READY:
                self._ready_seen += 1
                self._tx_status = reader.body(frame)[:1]
                if self._refusals:
                    self._expire_refusals()
                while describes:
                    if describes.popleft() in ("q", "s"):
                        break
                if masker is not None and masker.masked:
                    self.session.masked(masker.masked)
                    masker.masked = 0
            if replacement is not None or drop:
                out.append(reader.take_to(frame[1]))
                reader.discard_to(frame[2])
                if not drop:
                    out.append(replacement)
        end = frames[-1][2]
        if end > reader.consumed:
            out.append(reader.take_to(end))
        if masker is not None and masker.unmaskable:
            # Rows it could not mask were withheld; the result is
            # incomplete, so the session cannot go on as if it were not.
            self._send_client(b"".join(out))
            self._fatal(
                "42501",
                "the gateway could not mask this result; the session is closed",
                "result could not be masked",
            )
            return
        self._send_client(b"".join(out))

    def _copy_in_started(self) -> None:
        """
        The target entered copy-in mode: the Syncs the client sent since
        the statement that started it, up to its CopyDone/CopyFail, will
        get no ReadyForQuery (the barrier counts only answered ones).
        """
        if self._copy_end_syncs is not None:
            ignored = self._copy_end_syncs
        else:
            ignored = self._syncs_since_start
            self._copy_in = True
        self._ready_expected -= ignored
        describes = self._describes
        if describes is not None:
            # the ignored Syncs are the latest ones the masker expects
            i = len(describes) - 1
            while ignored and i >= 0:
                if describes[i] == "s":
                    del describes[i]
                    ignored -= 1
                i -= 1

    def _parameter(self, body: bytes) -> bool:
        """
        Follow a ParameterStatus from the target: how it reads the next
        statement (see L{_reading}).  Always True (the session goes on).
        """
        status = codec.ParameterStatus.decode(body)
        return self._setting(status.name, status.value)

    def _setting(self, name: str, value: str) -> bool:
        if name == "client_encoding":
            python = client_encoding(value)
            self._encoding_safe = python is not None
            if python is not None:
                self._encoding = python
            # else only ASCII texts are read (L{_reading}), in any codec
        elif name == "standard_conforming_strings":
            self._scs_on = value.strip().lower() == "on"
        return True

    def _hold_upstream(self, frames: list, oids: list) -> None:
        """Hold the target's output until the catalog names C{oids}."""
        self._upstream_held = list(frames)
        gate = self._upstream_gate
        gate.pause("catalog")
        d = self._factory.catalog(self._target).lookup_oids(oids)

        def resume(result: object) -> None:
            if self._closing:
                return
            if isinstance(result, Failure):
                # Without column names the masking rules cannot be applied:
                # nothing more of this result may reach the client.
                self._fatal(
                    "58000",
                    "the gateway cannot apply its masking rules now",
                    f"catalog lookup failed: {result.getErrorMessage()}",
                )
                return
            held, self._upstream_held = self._upstream_held, None
            gate.resume("catalog")
            if held:
                self._deliver_checked(held)

        d.addBoth(resume)

    def _refusal_for(self, body: bytes) -> bytes | None:
        for token, (error, _) in self._refusals.items():
            if token in body:
                del self._refusals[token]
                return error
        return None

    def _expire_refusals(self) -> None:
        seen = self._ready_seen
        stale = [t for t, (_, due) in self._refusals.items() if due <= seen]
        for token in stale:
            del self._refusals[token]

    def _send_client(self, data: bytes) -> None:
        if not data:
            return
        try:
            self.session.data(_G2C, data)
        except RecordingFailed:
            return
        send_now(self.transport, data)

    def _upstream_lost(self, reason: Failure) -> None:
        self._upstream = None
        if self._closing:
            return
        if self._client_terminated:
            # The target hung up because the client said goodbye.
            self._abort()
            return
        why = reason.getErrorMessage()
        self._fatal(
            "08006",
            f'the connection to target "{self._target.name}" was lost',
            f"upstream connection lost: {why}",
        )

    def cancel_requested(self, peer: str) -> None:
        """
        A client sent this connection's cancel key.  A statement the
        gateway holds (for approval, for the target's answers, or while it
        is classified) is cancelled here: its approval request is
        cancelled for good, and the client gets 57014 in its place; the
        session goes on.  Whatever the target is still running is
        cancelled there.
        """
        if self._upstream is None or self.session is None or self._closing:
            return
        gate = self._gate
        held = gate.holding if gate.holding in _CANCELLABLE else None
        outstanding = self._ready_seen < self._ready_expected or self._unsynced
        request = gate.request
        self.session.event(
            "cancel-request",
            peer=peer,
            held=held.value if held is not None else None,
            approval=request.id
            if held is HoldReason.APPROVAL and request is not None
            else None,
        )
        if held is not None:
            gate.cancel()
        if outstanding:
            self._cancel_upstream()

    def _cancel_upstream(self) -> None:
        """Ask the target to cancel what this session's backend runs."""
        pid, secret = self._upstream_key
        send_cancel(
            self._factory.reactor, self._target.options, pid, secret
        ).addErrback(
            lambda f: self._log.warn(
                "Cancel to target failed: {why}", why=f.getErrorMessage()
            )
        )
