"""
L{ResponseMasker}: one session's result masking (see
L{gatehouse.protocols.postgres.masking}).
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Sequence

import attrs

from gatehouse.policy.masking import JSON, NUMERIC, TEXT, Masker
from gatehouse.protocols.postgres import codec
from gatehouse.protocols.postgres.masking.binary import (
    _I32,
    _I64,
    _MAX_DEPTH,
    _MULTIRANGES,
    _NUMERIC_HEAD,
    _RANGES,
    _SHORT_NUMBER,
    _U32,
    _U64,
    _BadBinary,
    _numeric_binary,
    _numeric_text,
    _pack_elements,
    _parse_array,
    _parse_record,
    _parse_values,
)
from gatehouse.protocols.postgres.masking.columns import (
    _BINARY_OPAQUE,
    _FIRST_NORMAL_OID,
    _JSON_ARRAYS,
    _JSON_STRING,
    _JSONB_STRING,
    _JSONB_VERSION,
    _KEEP,
    _NULL,
    _RECORD_TYPES,
    _SCAN_BINARY,
    _SCAN_JSON,
    _SCAN_JSONB,
    _SCAN_NULL,
    _SCAN_NUMERIC,
    _SCAN_TEXT,
    _SHORT_INTEGERS,
    _STRUCTURE,
    _TEXT_TYPES,
    _WHOLE,
    _ZEROS,
    _actions,
)
from gatehouse.protocols.postgres.masking.copyformats import (
    _BadCSV,
    _Copy,
    _csv_quote,
    _csv_records,
    _escape,
    _text_fields,
    _unescape,
)
from gatehouse.protocols.postgres.masking.errors import (
    _FIELD_CODES_KEPT,
    _FIELD_CODES_STRICT,
    _QUOTING_CLASSES,
    _QUOTING_STATES,
    _withhold_quoted,
)

__all__ = ["ResponseMasker"]

#: what the catalog names each result column (None: no table, or unknown)
_Relations = tuple[str | None, ...]
#: what copy_out announced: columns, format, delimiter, relation columns, header
_Announced = tuple[
    Sequence[str | None] | None, str, str, Sequence[str | None] | None, bool
]
#: a result's plan: actions, column count as a DataRow starts, some column
#: masked whole, some column scanned (2: a binary one), the type OIDs
_Plan = tuple[tuple[int, ...], bytes, bool, int | bool, tuple[int, ...]]

_B = codec.BackendType
_ROW = _B.DATA_ROW
_ROWS = _B.ROW_DESCRIPTION
_COPY_DATA = _B.COPY_DATA
_COPY_OUT = _B.COPY_OUT_RESPONSE
_END_OF_COPY = frozenset({_B.COPY_DONE, _B.COMMAND_COMPLETE})
_END_OF_RESULT = frozenset(
    {
        _B.COMMAND_COMPLETE,
        _B.EMPTY_QUERY_RESPONSE,
        _B.ERROR_RESPONSE,
        _B.READY_FOR_QUERY,
    }
)


_U16_PACK = struct.Struct("!H").pack
#: distinct result descriptions (and plans) a session's masker remembers
_CACHED_RESULTS = 256


_ERROR = _B.ERROR_RESPONSE
_NOTICE = _B.NOTICE_RESPONSE
_NOTIFICATION = _B.NOTIFICATION_RESPONSE
_FUNCTION_RESULT = _B.FUNCTION_CALL_RESPONSE
_VALUE_MESSAGES = frozenset(
    {_ERROR, _NOTICE, _NOTIFICATION, _B.PARAMETER_STATUS, _FUNCTION_RESULT}
)


class ResponseMasker:
    """
    Rewrites one session's results.

    @param masker: the session's masking rules.
    @param resolve: C{resolve(table_oid, attnum)} names a result column
        C{schema.table.column}, or returns None if it cannot (yet); needed
        when C{masker} has column or relation rules (a column-name rule
        then matches the source column's name too, so an alias does not
        hide it).  A column that comes from a table and cannot be named is
        masked whole when there are such rules (fail closed): call
        L{unresolved} first.
    @param encoding: the Python codec of the client encoding; it must be
        ASCII-compatible, as every PostgreSQL client encoding is.

    @ivar masked: values masked so far (the caller may reset it).
    @ivar unmaskable: set when a COPY's rows could not be masked: binary
        COPY, or rows whose columns are not known while column rules apply
        (withheld, both: empty CopyData).  The caller
        should end the COPY with an error.
    """

    def __init__(
        self,
        masker: Masker,
        resolve: Callable[[int, int], str | None] | None = None,
        encoding: str = "utf-8",
    ):
        self._masker = masker
        self._resolve = resolve
        self._encoding = encoding
        self._by_columns = masker.has_column_rules or masker.has_relation_rules
        self._patterns = masker.has_patterns
        #: per-column actions of the current result, or None
        self._plan: tuple[int, ...] | None = None
        #: the column count of the plan, as a DataRow starts
        self._plan_count = b""
        #: the plan masks some column whole
        self._plan_whole = False
        #: the plan scans some column (2: a binary one, not pre-checked)
        self._plan_scan: int | bool = False
        #: the type OIDs of the plan's columns
        self._plan_types: tuple[int, ...] = ()
        #: the binary value being read was read by its bytes, not its type
        self._guessed = False
        self._copy: _Copy | None = None
        self._announced: _Announced | None = None
        #: RowDescription body -> its fields (results repeat their columns)
        self._descriptions: dict[bytes, tuple[codec.FieldDescription, ...]] = {}
        #: (RowDescription body, names resolved) -> plan, count, whole, scan
        self._plans: dict[tuple[bytes, _Relations], _Plan] = {}
        #: RowDescription body -> its names masked (and how many), or None
        self._renamed: dict[bytes, tuple[bytes, int] | None] = {}
        self.masked = 0
        self.unmaskable = False

    @property
    def encoding(self) -> str:
        """The Python codec of the client encoding."""
        return self._encoding

    @encoding.setter
    def encoding(self, value: str) -> None:
        self._encoding = value

    # -- what the caller tells -------------------------------------------------

    def unresolved(self, body: bytes) -> tuple[int, ...]:
        """
        The table OIDs of a RowDescription body whose columns C{resolve}
        cannot name yet, so that the caller can look them up before
        passing the RowDescription to L{message}.
        """
        if self._resolve is None or not self._by_columns:
            return ()
        fields = self._fields(body)
        return self._missing(fields, self._relations(fields))

    def describe(self, body: bytes, look_up: bool = True) -> tuple[int, ...]:
        """
        Follow a RowDescription: L{message} and L{unresolved} in one.

        @param look_up: return the table OIDs C{resolve} cannot name yet,
            if any, without taking the description (the caller looks them
            up and calls again); if False, columns that stay unnamed are
            masked whole.
        @return: the OIDs to look up first, or C{()} once described.
        """
        fields = self._fields(body)
        relations: _Relations = ()
        if self._by_columns and self._resolve is not None:
            relations = self._relations(fields)
            if look_up and self._resolve is not None and None in relations:
                missing = self._missing(fields, relations)
                if missing:
                    return missing
        self._take_plan(body, fields, relations)
        return ()

    def rename(self, body: bytes) -> bytes | None:
        """
        A RowDescription body with the detectors applied to its column
        names (a name can carry a value: a view made by dynamic SQL names
        its column after one), or None if no name holds anything.
        """
        if not self._masker.scans_values:
            return None
        try:
            cached = self._renamed[body]
        except KeyError:
            if len(self._renamed) >= _CACHED_RESULTS:
                self._renamed.clear()
            cached = self._renamed[body] = self._rename(body)
        if cached is not None:
            self.masked += cached[1]
            return cached[0]
        return None

    def _rename(self, body: bytes) -> tuple[bytes, int] | None:
        fields = self._fields(body)
        names = [self._scan_text(f.name.encode(self._encoding)) for f in fields]
        if not any(n is not None for n in names):
            return None
        renamed = [
            f if n is None else attrs.evolve(f, name=n.decode(self._encoding))
            for f, n in zip(fields, names, strict=True)
        ]
        new = codec.RowDescription(renamed).encode(self._encoding)[5:]
        return new, sum(n is not None for n in names)

    @staticmethod
    def _missing(
        fields: tuple[codec.FieldDescription, ...], relations: _Relations
    ) -> tuple[int, ...]:
        missing = {
            f.table_oid
            for f, relation in zip(fields, relations, strict=True)
            if relation is None and f.table_oid and f.column_attnum > 0
        }
        return tuple(sorted(missing))

    def _relations(self, fields: tuple[codec.FieldDescription, ...]) -> _Relations:
        """What the catalog names each column (None: no table, or unknown)."""
        resolve = self._resolve
        if resolve is None:
            return (None,) * len(fields)
        return tuple(
            [
                resolve(f.table_oid, f.column_attnum)
                if f.table_oid and f.column_attnum > 0
                else None
                for f in fields
            ]
        )

    def _fields(self, body: bytes) -> tuple[codec.FieldDescription, ...]:
        fields = self._descriptions.get(body)
        if fields is None:
            if len(self._descriptions) >= _CACHED_RESULTS:
                self._descriptions.clear()
            fields = codec.RowDescription.decode(body, self._encoding).fields
            self._descriptions[body] = fields
        return fields

    def copy_out(
        self,
        columns: Sequence[str | None] | None,
        fmt: str = "text",
        delimiter: str = "\t",
        relation_columns: Sequence[str | None] | None = None,
        header: bool = False,
    ) -> None:
        """
        Announce the next C{COPY ... TO STDOUT}.

        @param columns: the names of the columns it sends, in order, or
            None if unknown.
        @param fmt: C{"text"}, C{"csv"} or C{"binary"}.
        @param delimiter: the field delimiter.
        @param relation_columns: their C{schema.table.column} names (or
            C{table.column} when the schema is not known); with relation
            rules, a column named None here is masked whole.
        @param header: the first row holds the column names (C{HEADER}).
        """
        self._announced = (columns, fmt, delimiter, relation_columns, header)

    # -- messages ----------------------------------------------------------------

    def message(self, type_: int, body: bytes) -> bytes | None:
        """
        Follow one backend message, and mask it if needed.

        @param type_: the message's type byte.
        @param body: the message without type byte and length word.
        @return: the body to send instead, or None to send it unchanged.
        @raise codec.ProtocolViolation: if a message this reads is malformed.
        """
        if type_ == _ROW:
            if self._plan is None:
                if self._by_columns:
                    return self._row(body)
            elif self._plan_whole or body[:2] != self._plan_count:
                return self._row(body)
            elif not self._plan_scan:
                return None
            elif self._plan_scan == 2:
                return self._row(body)
            if not self._masker.might_match(body):
                return None
            return self._row(body)
        if type_ == _COPY_DATA:
            copy = self._copy
            if copy is None:
                return None
            return self._copy_data(copy, body)
        if type_ in _VALUE_MESSAGES:
            new = self._value_message(type_, body)
            if type_ == _ERROR:
                self._end_result(type_)
            return new
        if type_ == _ROWS:
            self.describe(body, look_up=False)
        elif type_ == _COPY_OUT:
            self._start_copy(body)
        elif type_ in _END_OF_RESULT:
            self._end_result(type_)
        elif type_ in _END_OF_COPY:
            self._copy = None
        return None

    def _end_result(self, type_: int) -> None:
        self._plan = None
        self._plan_whole = self._plan_scan = False
        self._copy = None
        if type_ != _B.COMMAND_COMPLETE:
            self._announced = None

    # -- messages that carry values besides rows ---------------------------------

    def _value_message(self, type_: int, body: bytes) -> bytes | None:
        """
        Mask an ErrorResponse, NoticeResponse, NotificationResponse,
        ParameterStatus or FunctionCallResponse.
        """
        if type_ == _ERROR or type_ == _NOTICE:
            return self._error_fields(body)
        masker = self._masker
        if type_ == _FUNCTION_RESULT:
            values, _ = _parse_values(body, 0, 1)
            if values[0] is None or not self._fast_path_hit(values[0]):
                return None
            # Its format (text or binary) is the client's choice and its
            # type unknown here: withheld rather than rewritten.
            self.masked += 1
            return b"\xff\xff\xff\xff"
        if not masker.scans_values or not masker.might_match(body):
            return None
        start = 4 if type_ == _NOTIFICATION else 0
        parts = body[start:].split(b"\0")
        if len(parts) != 3 or parts[2]:
            raise codec.ProtocolViolation(
                codec.PROTOCOL_VIOLATION, f"malformed message {chr(type_)!r}"
            )
        changed = 0
        for i in (0, 1):
            new = self._scan_text(parts[i])
            if new is not None:
                parts[i] = new
                changed += 1
        if not changed:
            return None
        self.masked += changed
        return body[:start] + b"\0".join(parts)

    def _fast_path_hit(self, raw: bytes) -> bool:
        """
        Whether a fast-path function result may show a detected value:
        read as text, and as each binary form that could hide one (int8,
        numeric, arrays, records), since neither its format nor its type
        is known here.
        """
        masker = self._masker
        if not masker.scans_values:
            return False
        if masker.might_match(raw):
            if masker.mask(raw.decode(self._encoding, "surrogateescape"))[1]:
                return True
        for type_oid in (20, 1700, _FIRST_NORMAL_OID):
            try:
                if self._binary(type_oid, raw, 0) is not raw:
                    return True
            except (_BadBinary, struct.error, ValueError, OverflowError):
                continue
        return False

    def _scan_text(self, raw: bytes) -> bytes | None:
        """Detectors on one string of a message; None if nothing found."""
        if not self._masker.might_match(raw):
            return None
        text = raw.decode(self._encoding, "surrogateescape")
        masked, hits = self._masker.mask(text)
        if not hits or masked == text:
            return None
        return masked.encode(self._encoding, "surrogateescape")

    def _error_fields(self, body: bytes) -> bytes | None:
        """
        Mask the fields of an ErrorResponse or NoticeResponse: detectors
        on every field that may carry a value; and, where column rules
        apply, the values PostgreSQL itself quotes in errors of the
        classes that print them (L{_QUOTING_STATES}), masked whole.
        """
        if not body.endswith(b"\0"):
            raise codec.ProtocolViolation(
                codec.PROTOCOL_VIOLATION, "malformed error or notice"
            )
        fields = body[:-1].split(b"\0")
        if fields and fields[-1] == b"":
            fields.pop()
        else:
            raise codec.ProtocolViolation(
                codec.PROTOCOL_VIOLATION, "malformed error or notice"
            )
        strict = False
        state = b""
        if self._by_columns:
            for field in fields:
                if field[:1] == b"C":
                    state = field[1:]
                    strict = state[:2] in _QUOTING_CLASSES or state in _QUOTING_STATES
                    break
            # SQL that a function built and ran (EXECUTE, query_to_xml):
            # any error in it (syntax, an unknown column) may quote a value
            strict = strict or any(f[:1] == b"q" for f in fields)
        masker = self._masker
        scans = masker.scans_values
        if not strict and (not scans or not masker.might_match(body)):
            return None
        changed = 0
        for i, field in enumerate(fields):
            code = field[:1]
            if code in _FIELD_CODES_KEPT or not code:
                continue
            value = field[1:]
            new = None
            if (
                strict
                and code in _FIELD_CODES_STRICT
                and (
                    # integrity violations name objects in the message and
                    # print the values in DETAIL only
                    state[:2] != b"23" or code not in (b"M", b"H")
                )
            ):
                text = value.decode(self._encoding, "surrogateescape")
                masked = _withhold_quoted(code, text)
                if masked != text:
                    new = masked.encode(self._encoding, "surrogateescape")
                    value = new
            if scans:
                scanned = self._scan_text(value)
                if scanned is not None:
                    new = scanned
            if new is not None:
                fields[i] = code + new
                changed += 1
        if not changed:
            return None
        self.masked += changed
        return b"\0".join(fields) + b"\0\0"

    # -- rows --------------------------------------------------------------------

    def _take_plan(
        self,
        body: bytes,
        fields: tuple[codec.FieldDescription, ...],
        relations: _Relations,
    ) -> None:
        # The plan depends on the columns and on what the catalog says
        # they are (which may change when it is looked up again).
        key = (body, relations)
        found = self._plans.get(key)
        if found is None:
            if len(self._plans) >= _CACHED_RESULTS:
                self._plans.clear()
            found = self._plans[key] = self._plan_for(fields, relations)
        (
            self._plan,
            self._plan_count,
            self._plan_whole,
            self._plan_scan,
            self._plan_types,
        ) = found

    def _plan_for(
        self, fields: tuple[codec.FieldDescription, ...], relations: _Relations
    ) -> _Plan:
        masker = self._masker
        scans = masker.scans_values
        patterns = masker.has_patterns
        by_columns = self._by_columns
        plan = []
        for i, f in enumerate(fields):
            scan, whole = _actions(f.type_oid, f.format)
            relation = relations[i] if relations else None
            if relations and f.table_oid and f.column_attnum > 0 and relation is None:
                plan.append(whole)  # from a table the catalog cannot name
                continue
            if masker.column_masked(f.name, relation):
                plan.append(whole)
            elif by_columns and (
                f.type_oid in _JSON_ARRAYS
                or (
                    relation is None
                    and (f.type_oid in _RECORD_TYPES or f.type_oid >= _FIRST_NORMAL_OID)
                )
            ):
                # A row as one value (SELECT t FROM t, row(t.*)), or a
                # computed value of a type defined in the database, which
                # may be a composite: its fields have no names here, so
                # column rules cannot be applied to them (fail closed).
                plan.append(_NULL)
            elif not scans or (
                # at most 10 digits: no card, address or IBAN fits
                f.type_oid in _SHORT_INTEGERS and f.format == 0 and not patterns
            ):
                plan.append(_KEEP)
            else:
                plan.append(scan)
        return (
            tuple(plan),
            _U16_PACK(len(plan)),
            any(a >= _WHOLE for a in plan),
            # 2: a binary value must be decoded to be scanned, JSON read
            # for keys under column rules: no pre-check on the row
            2
            if _SCAN_BINARY in plan
            or (by_columns and (_SCAN_JSON in plan or _SCAN_JSONB in plan))
            else any(_KEEP < a < _WHOLE for a in plan),
            tuple(f.type_oid for f in fields),
        )

    def _row(self, body: bytes) -> bytes | None:
        values = codec.data_row_values(body)
        plan = self._plan
        if plan is None or len(plan) != len(values):
            if self._by_columns:
                plan = (_NULL,) * len(values)
            elif self._masker.scans_values:
                plan = (_SCAN_TEXT,) * len(values)
            else:
                return None
        masker = self._masker
        found = masker.candidates(body) if masker.scans_values else 0
        scan = found != 0 or masker.has_patterns
        changed = 0
        value_of = self._value
        types = self._plan_types
        by_columns = self._by_columns
        for i, action in enumerate(plan):
            raw = values[i]
            if action == _KEEP or raw is None:
                continue
            if action == _SCAN_BINARY:
                new = self._binary_value(types[i], raw)
            elif (
                action < _WHOLE
                and not scan
                and not (by_columns and (action == _SCAN_JSON or action == _SCAN_JSONB))
            ):
                continue
            else:
                new = value_of(action, raw, found)
            if new is not raw:
                values[i] = new
                changed += 1
        if not changed:
            return None
        self.masked += changed
        return codec._pack_values(values)

    def _value(self, action: int, raw: bytes, found: int | None) -> bytes | None:
        """The masked value (None: NULL), or C{raw} itself if unchanged."""
        if action >= _WHOLE:
            if action == _NULL:
                return None
            if action == _ZEROS:
                new = Masker.zero_digits(raw)
                return raw if new == raw else new
            if action == _JSONB_STRING:
                if raw[:1] != _JSONB_VERSION:
                    return None
                length = len(raw[1:].decode(self._encoding, "surrogateescape"))
                return _JSONB_VERSION + b'"' + b"*" * length + b'"'
            length = len(raw.decode(self._encoding, "surrogateescape"))
            if action == _JSON_STRING:
                return b'"' + b"*" * length + b'"'
            return b"*" * length if length else raw
        payload = raw
        if action == _SCAN_JSONB:
            if raw[:1] != _JSONB_VERSION:
                return None  # a version this does not read: withheld
            payload = raw[1:]
        text = payload.decode(self._encoding, "surrogateescape")
        keyed = 0
        if self._by_columns and (action == _SCAN_JSON or action == _SCAN_JSONB):
            # to_json(t), json_agg(t): members named after masked columns
            keyed_text, keyed = self._masker.mask_json_keys(text)
            if keyed_text is None:
                return None
            if keyed:
                text = keyed_text
                found = None
        if action == _SCAN_NUMERIC:
            mode = NUMERIC
        elif action == _SCAN_JSON or action == _SCAN_JSONB:
            mode = JSON
        else:
            mode = TEXT
        masked, hits = self._masker.mask(text, mode, "", found)
        if keyed:
            hits += keyed
        elif not hits or masked == text:
            return raw
        if action == _SCAN_NULL:
            return None
        new = masked.encode(self._encoding, "surrogateescape")
        return _JSONB_VERSION + new if action == _SCAN_JSONB else new

    # -- binary values -----------------------------------------------------------

    def _binary_value(self, type_oid: int, raw: bytes) -> bytes | None:
        """
        Mask a binary value of a type whose binary form is not its text:
        decoded (int8, numeric, arrays, records, ranges), masked, encoded
        again.  A value that does not decode as its type says, or that
        still shows a detected value when read as text, becomes NULL.
        """
        self._guessed = False
        try:
            new = self._binary(type_oid, raw, 0)
        except (_BadBinary, struct.error, ValueError, OverflowError):
            return None
        if new is None:
            return None
        check = new if new is not raw else raw
        # Read by its bytes rather than by a type it is known to have:
        # checked once more as text.
        if self._guessed and self._masker.might_match(check):
            text = check.decode(self._encoding, "surrogateescape")
            if self._masker.mask(text)[1]:
                return None
        return new

    def _binary(self, type_oid: int, raw: bytes, depth: int) -> bytes | None:
        if depth > _MAX_DEPTH:
            raise _BadBinary("nested too deep")
        if type_oid in _TEXT_TYPES or type_oid == 114:
            return self._value(_SCAN_JSON if type_oid == 114 else _SCAN_TEXT, raw, None)
        if type_oid == 3802:
            return self._value(_SCAN_JSONB, raw, None)
        if type_oid in _BINARY_OPAQUE:
            return raw
        if type_oid == 20 or type_oid == 5069:
            if len(raw) != 8:
                raise _BadBinary("int8")
            number = (_I64 if type_oid == 20 else _U64).unpack(raw)[0]
            if -_SHORT_NUMBER < number < _SHORT_NUMBER and not self._patterns:
                return raw  # under 13 digits: no card fits
            text = str(number)
            masked, hits = self._masker.mask(text, NUMERIC)
            if not hits or masked == text:
                return raw
            if type_oid == 5069:
                return None
            return _I64.pack(int(masked))
        if type_oid == 1700:
            if len(raw) >= 8 and not self._patterns:
                ndigits, weight, _, dscale = _NUMERIC_HEAD.unpack_from(raw)
                if 4 * (weight + 1) + dscale < 13 and len(raw) == 8 + 2 * ndigits:
                    return raw  # fewer than 13 digits in all: no card fits
            decoded = _numeric_text(raw)
            if decoded is None:
                return raw
            text, dscale = decoded
            masked, hits = self._masker.mask(text, NUMERIC)
            if not hits or masked == text:
                return raw
            return _numeric_binary(masked, dscale)
        if type_oid in _RANGES:
            return self._range(_RANGES[type_oid], raw, depth)
        if type_oid in _MULTIRANGES:
            if len(raw) < 4:
                raise _BadBinary("multirange")
            values, pos = _parse_values(raw, 4, _I32.unpack_from(raw)[0])
            if pos != len(raw) or None in values:
                raise _BadBinary("multirange")
            elem = _RANGES[_MULTIRANGES[type_oid]]
            # (no None: refused above)
            ranges = [self._range(elem, v, depth) for v in values if v is not None]
            if all(a is b for a, b in zip(ranges, values, strict=True)):
                return raw
            if None in ranges:
                return None
            return raw[:4] + _pack_elements(ranges)
        if type_oid == 17:
            self._guessed = True  # bytea: checked as text by the caller
            return raw
        # Arrays and records name their element types in the value; any
        # other type (one defined in the database: an enum, citext, a
        # composite, an array of them) is read as an array, a record, or
        # else text -- whichever its bytes are.
        if type_oid >= _FIRST_NORMAL_OID:
            self._guessed = True
        try:
            elem, dims, values = _parse_array(raw)
        except _BadBinary:
            pass
        else:
            new = [v if v is None else self._binary(elem, v, depth + 1) for v in values]
            if all(a is b for a, b in zip(new, values, strict=True)):
                return raw
            head = raw[: 12 + 8 * len(dims)]
            if None in new and head[7] == 0:
                head = head[:7] + b"\x01" + head[8:]
            return head + _pack_elements(new)
        try:
            fields = _parse_record(raw)
        except _BadBinary:
            if type_oid < _FIRST_NORMAL_OID and type_oid not in _RECORD_TYPES:
                self._guessed = True
                return raw  # a built-in type of its own format: checked as text
            if type_oid in _RECORD_TYPES:
                raise
            return self._value(_SCAN_TEXT, raw, None)
        new = [v if v is None else self._binary(oid, v, depth + 1) for oid, v in fields]
        if all(a is b for a, (_, b) in zip(new, fields, strict=True)):
            return raw
        out = [raw[:4]]
        for (oid, _), value in zip(fields, new, strict=True):
            out.append(_U32.pack(oid))
            out.append(_pack_elements([value]))
        return b"".join(out)

    def _range(self, elem: int, raw: bytes, depth: int) -> bytes | None:
        if not raw:
            raise _BadBinary("range")
        flags = raw[0]
        bounds = 0 if flags & 0x01 else (not flags & 0x08) + (not flags & 0x10)
        values, pos = _parse_values(raw, 1, bounds)
        if pos != len(raw) or None in values:
            raise _BadBinary("range")
        # (no None: refused above)
        new = [self._binary(elem, v, depth + 1) for v in values if v is not None]
        if all(a is b for a, b in zip(new, values, strict=True)):
            return raw
        if None in new:
            return None
        return raw[:1] + _pack_elements(new)

    # -- COPY --------------------------------------------------------------------

    def _start_copy(self, body: bytes) -> None:
        response = codec.CopyOutResponse.decode(body)
        announced, self._announced = self._announced, None
        if response.format != 0:
            # Binary rows cannot be read for masking: they are withheld
            # (the server checks COPY statements first; this is a target
            # that answered otherwise than it was asked).
            self.unmaskable = True
            count = len(response.column_formats)
            self._copy = _Copy(None, "\t", count, frozenset(), False, True)
            return
        count = len(response.column_formats)
        masker = self._masker
        fmt = None
        delimiter = "\t"
        header = False
        whole: frozenset[int] = frozenset()
        known = not self._by_columns
        if announced is not None:
            names, fmt, delimiter, relations, header = announced
            fmt = "csv" if fmt == "csv" else "text"
            header = bool(header)
            if self._by_columns and (names is not None or relations is not None):
                names = list(names) if names is not None else [None] * count
                relations = list(relations) if relations is not None else [None] * count
                if len(names) == count and len(relations) == count:
                    known = True
                    by_relation = masker.has_relation_rules
                    # A column that cannot be named is masked (fail closed).
                    whole = frozenset(
                        i
                        for i in range(count)
                        if (by_relation and relations[i] is None)
                        or masker.column_masked(names[i], relations[i])
                    )
        self._copy = _Copy(fmt, delimiter, count, whole, header, not known)

    def _copy_data(self, copy: _Copy, body: bytes) -> bytes | None:
        masker = self._masker
        if copy.blocked:
            self.unmaskable = True
            return b"" if body else None
        if not copy.whole and not masker.might_match(body):
            copy.header = False
            return None
        text = body.decode(self._encoding, "surrogateescape")
        if copy.header:
            # the column names: no column is masked whole here, but a name
            # can be made from a value (a column named by dynamic SQL)
            copy.header = False
            out = self._scan_raw(text)
            return (
                None if out is None else out.encode(self._encoding, "surrogateescape")
            )
        if copy.format == "csv":
            try:
                out = self._csv(text, copy)
            except _BadCSV:
                if copy.whole:
                    self.unmaskable = True
                    return b""
                out = self._scan_raw(text)
        elif copy.format == "text":
            out = self._text(text, copy)
        else:
            out = self._scan_raw(text)
        if out is None:
            return None
        return out.encode(self._encoding, "surrogateescape")

    def _scan_raw(self, text: str) -> str | None:
        """Mask a COPY row of unknown format, keeping its structure."""
        masked, hits = self._masker.mask(text, TEXT, _STRUCTURE)
        if not hits or masked == text:
            return None
        self.masked += hits
        return masked

    def _text(self, text: str, copy: _Copy) -> str | None:
        lines = text.split("\n")
        tail = lines.pop()
        out = []
        changed = withheld = 0
        delimiter = copy.delimiter
        whole = copy.whole
        masker = self._masker
        for n, line in enumerate([*lines, tail] if tail else lines):
            newline = "\n" if n < len(lines) else ""
            fields = _text_fields(line, delimiter)
            if whole and len(fields) != copy.columns:
                withheld += 1
                continue
            dirty = False
            for i, field in enumerate(fields):
                if field == "\\N":
                    continue
                if i in whole:
                    length = len(_unescape(field))
                    if length:
                        fields[i] = "*" * length
                        changed += 1
                        dirty = True
                    continue
                value = _unescape(field)
                masked, hits = masker.mask(value)
                if hits and masked != value:
                    fields[i] = _escape(masked, delimiter)
                    changed += 1
                    dirty = True
            out.append((delimiter.join(fields) if dirty else line) + newline)
        if withheld:
            self.unmaskable = True
        elif not changed:
            return None
        self.masked += changed
        return "".join(out)

    def _csv(self, text: str, copy: _Copy) -> str | None:
        records = _csv_records(text, copy.delimiter, copy.field_end)
        changed = withheld = 0
        whole = copy.whole
        masker = self._masker
        out = []
        for fields in records:
            if whole and len(fields) != copy.columns:
                withheld += 1
                continue
            row = []
            for i, (raw, value) in enumerate(fields):
                if value is None:
                    row.append(raw)
                elif i in whole:
                    row.append(_csv_quote("*" * len(value)) if value else raw)
                    changed += bool(value)
                else:
                    masked, hits = masker.mask(value)
                    if hits and masked != value:
                        row.append(_csv_quote(masked))
                        changed += 1
                    else:
                        row.append(raw)
            out.append(copy.delimiter.join(row))
        if withheld:
            self.unmaskable = True
            if not out:
                return ""
        elif not changed:
            return None
        self.masked += changed
        return "\n".join(out) + ("\n" if text.endswith("\n") else "")
