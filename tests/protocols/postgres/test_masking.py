"""
Tests for L{gatehouse.protocols.postgres.masking}: DataRow and CopyData
rewriting keeps messages well-formed and values valid for their types,
and fails closed when it cannot tell what a value is.
"""

from __future__ import annotations

import csv
import io
import json
import struct

from hypothesis import given
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from gatehouse.policy.masking import DETECTORS, Masker, MaskingRule
from gatehouse.protocols.postgres import codec
from gatehouse.protocols.postgres.masking import ResponseMasker

T = codec.BackendType
F = codec.FieldDescription

DETECT = Masker([MaskingRule("detect", detectors=DETECTORS)])
RULES = Masker(
    [
        MaskingRule(
            "pii",
            detectors=frozenset({"card", "email"}),
            columns=("ssn", "*secret*"),
            relation_columns=("people.note",),
        )
    ]
)
#: RULES without relation rules (which need every column's table name)
NAMES = Masker(
    [
        MaskingRule(
            "pii",
            detectors=frozenset({"card", "email"}),
            columns=("ssn", "*secret*"),
        )
    ]
)
COLUMNS_ONLY = Masker([MaskingRule("cols", columns=("ssn",))])
CATALOG = {
    (5000, 1): "public.people.name",
    (5000, 2): "public.people.note",
    (5000, 3): "public.people.contact",
}


def body(message: bytes) -> bytes:
    return message[5:]


def describe(masker: ResponseMasker, *fields: codec.FieldDescription) -> None:
    result = masker.message(
        T.ROW_DESCRIPTION, body(codec.RowDescription(fields).encode())
    )
    assert result is None


def row(masker: ResponseMasker, *values: bytes | None) -> tuple[tuple, bool]:
    """Feed a DataRow: its values as the client gets them, and if unchanged."""
    raw = body(codec.DataRow(values).encode())
    new = masker.message(T.DATA_ROW, raw)
    return codec.DataRow.decode(raw if new is None else new).values, new is None


def end(masker: ResponseMasker, message: codec.Message) -> None:
    encoded = message.encode()
    assert masker.message(encoded[0], body(encoded)) is None


class DataRowTests(SynchronousTestCase):
    """Result rows: detectors, column rules, relation rules."""

    def test_text_columns(self) -> None:
        masker = ResponseMasker(
            RULES, CATALOG.get and (lambda t, a: CATALOG.get((t, a)))
        )
        describe(
            masker,
            F("name", 5000, 1),
            F("contact", 5000, 3),
            F("n", 5000, 2),
            F("ssn"),
            F("my_secret_x"),
        )
        values, unchanged = row(
            masker, b"Ada", b"ada@example.com", b"secret", b"123-45-6789", None
        )
        self.assertEqual(
            values,
            (b"Ada", b"a***@***.com", b"******", b"***********", None),
        )
        self.assertFalse(unchanged)
        self.assertEqual(masker.masked, 3)
        values, unchanged = row(masker, b"Bob", b"none", b"", None, b"x")
        self.assertEqual(values, (b"Bob", b"none", b"", None, b"*"))
        self.assertEqual(masker.masked, 4)

    def test_unchanged_is_none(self) -> None:
        masker = ResponseMasker(DETECT)
        describe(masker, F("id", type_oid=23), F("name"), F("at", type_oid=1184))
        for values in [
            (b"1", b"plain", b"2024-01-15 10:20:30.123456+00"),
            (b"12345678901234", b"call 555 1234", None),
            (None, b"a@b", b"x"),
        ]:
            self.assertEqual(row(masker, *values), (values, True))
        self.assertEqual(masker.masked, 0)

    def test_binary_text_types(self) -> None:
        """Binary text, varchar, bpchar and name are text on the wire."""
        masker = ResponseMasker(RULES)
        describe(
            masker,
            F("a", type_oid=1043, format=1),
            F("b", type_oid=25, format=1),
            F("ssn", type_oid=1042, format=1),
        )
        values, _ = row(masker, b"card 4111-1111-1111-1111", b"x@example.org", b"12 ")
        self.assertEqual(values, (b"card ****-****-****-1111", b"x***@***.org", b"***"))

    def test_json(self) -> None:
        """JSON stays JSON: bare card numbers, column rules."""
        masker = ResponseMasker(RULES)
        describe(
            masker,
            F("doc", type_oid=3802, format=1),
            F("doc", type_oid=114),
            F("secret_doc", type_oid=3802, format=1),
            F("secret_doc", type_oid=114),
        )
        doc = b'{"card": 4111111111111111, "who": "ann@example.com"}'
        values, _ = row(masker, b"\x01" + doc, doc, b"\x01" + doc, doc)
        self.assertEqual(values[0][:1], b"\x01")
        self.assertEqual(
            json.loads(values[0][1:]), {"card": 1111, "who": "a***@***.com"}
        )
        self.assertEqual(values[1], values[0][1:])
        self.assertEqual(values[2], b'\x01"' + b"*" * len(doc) + b'"')
        self.assertEqual(json.loads(values[3]), "*" * len(doc))

    def test_jsonb_unknown_version(self) -> None:
        masker = ResponseMasker(RULES)
        describe(
            masker, F("doc", type_oid=3802, format=1), F("secret", 0, 0, 3802, format=1)
        )
        values, _ = row(masker, b"\x02a@example.com", b"\x02{}")
        # a version it cannot read is withheld, not passed unscanned
        self.assertEqual(values, (None, None))

    def test_numeric_text(self) -> None:
        """Numbers in text format stay numbers."""
        masker = ResponseMasker(RULES)
        describe(
            masker,
            F("card", type_oid=20),
            F("ssn", type_oid=1700),
            F("secret_ids", type_oid=1007),
            F("amount", type_oid=1700),
        )
        values, _ = row(masker, b"4111111111111111", b"-12.50", b"{1,23}", b"12.5")
        self.assertEqual(values, (b"0000000000001111", b"-00.00", b"{0,00}", b"12.5"))
        self.assertEqual(masker.masked, 3)

    def test_short_integers_not_scanned(self) -> None:
        """
        int2, int4 and oid (at most 10 digits) hold nothing a detector
        finds, so their rows pass untouched; a whole-column rule still
        zeroes them, and a user pattern still scans them.
        """
        masker = ResponseMasker(RULES)
        describe(masker, F("n", type_oid=23), F("ssn", type_oid=23))
        self.assertEqual(masker._plan_scan, False)
        values, _ = row(masker, b"2147483647", b"123456789")
        self.assertEqual(values, (b"2147483647", b"000000000"))
        patterned = ResponseMasker(
            Masker([MaskingRule("ids", patterns=(("id", r"\b4242\b"),))])
        )
        describe(patterned, F("n", type_oid=23))
        values, _ = row(patterned, b"4242")
        self.assertNotEqual(values, (b"4242",))

    def test_binary_non_text(self) -> None:
        """
        Binary values of other types: NULL under a rule; bytea holding a
        detected value in its bytes is withheld (its binary form is the
        value itself); a small int8 passes.
        """
        masker = ResponseMasker(RULES)
        describe(
            masker,
            F("ssn", type_oid=23, format=1),
            F("raw", type_oid=17, format=1),
            F("n", type_oid=20, format=1),
        )
        values, _ = row(
            masker, b"\x00\x00\x00\x07", b"4111111111111111", struct.pack("!q", 7)
        )
        self.assertEqual(values, (None, None, struct.pack("!q", 7)))

    def test_other_types_in_text(self) -> None:
        masker = ResponseMasker(RULES)
        describe(
            masker,
            F("raw", type_oid=17),
            F("tags", type_oid=1009),
            F("rec", type_oid=2249),
            F("ci", type_oid=16500),
            F("secret_flag", type_oid=16),
        )
        values, _ = row(
            masker,
            b"\\x34313131313131313131313131313131",
            b'{"x y",ann@example.com}',
            b"(1,ann@example.com)",
            b"Ann@Example.com",
            b"t",
        )
        self.assertEqual(
            values,
            (
                b"\\x34313131313131313131313131313131",
                b'{"x y",a***@***.com}',
                None,  # a record: fields without names, under column rules
                None,  # a computed value of a database type (a composite?)
                None,
            ),
        )

    def test_records_in_text_detectors_only(self) -> None:
        """Without column rules, records and database types are scanned."""
        masker = ResponseMasker(DETECT)
        describe(masker, F("rec", type_oid=2249), F("ci", type_oid=16500))
        values, _ = row(masker, b'(1,ann@example.com,"x y")', b"Ann@Example.com")
        self.assertEqual(values, (b'(1,a***@***.com,"x y")', b"A***@***.com"))

    def test_not_utf8(self) -> None:
        """Bytes that are not UTF-8 survive masking unchanged."""
        masker = ResponseMasker(DETECT)
        describe(masker, F("t"))
        values, _ = row(masker, b"\xff\xfe a@b.com \xc3")
        self.assertEqual(values, (b"\xff\xfe a***@***.com \xc3",))

    def test_latin1(self) -> None:
        masker = ResponseMasker(DETECT, encoding="latin-1")
        describe(masker, F("t"))
        values, _ = row(masker, "José a@b.com".encode("latin-1"))
        self.assertEqual(values, ("José a***@***.com".encode("latin-1"),))

    def test_malformed(self) -> None:
        masker = ResponseMasker(RULES)
        describe(masker, F("ssn"))
        for bad in [b"\x00\x01\x00\x00\x00\x09abc", b"\x00\x01\x00\x00", b"\x00"]:
            self.assertRaises(codec.ProtocolViolation, masker.message, T.DATA_ROW, bad)
        self.assertRaises(
            codec.ProtocolViolation,
            masker.message,
            T.DATA_ROW,
            b"\x00\x01\x00\x00\x00\x01ab",
        )


class RelationTests(SynchronousTestCase):
    """Rules on C{schema.table.column} need the catalog."""

    def setUp(self) -> None:
        self.catalog: dict[tuple[int, int], str] = {}
        self.masker = ResponseMasker(RULES, lambda t, a: self.catalog.get((t, a)))
        self.description = body(
            codec.RowDescription(
                [F("a", 5000, 2), F("b", 6000, 1), F("c", 0, 0), F("d", 5000, -1)]
            ).encode()
        )

    def test_unresolved(self) -> None:
        self.assertEqual(self.masker.unresolved(self.description), (5000, 6000))
        self.catalog[(5000, 2)] = "public.people.note"
        self.assertEqual(self.masker.unresolved(self.description), (6000,))
        self.catalog[(6000, 1)] = "public.other.note"
        self.assertEqual(self.masker.unresolved(self.description), ())
        self.masker.message(T.ROW_DESCRIPTION, self.description)
        values, _ = row(self.masker, b"n1", b"n2", b"n3", b"(0,1)")
        self.assertEqual(values, (b"**", b"n2", b"n3", b"(0,1)"))

    def test_describe(self) -> None:
        """
        describe() asks for the unknown tables first and takes nothing;
        once they are known it takes the description; told not to look
        up, it masks what stays unnamed.
        """
        self.assertEqual(self.masker.describe(self.description), (5000, 6000))
        self.catalog[(5000, 2)] = "public.people.note"
        self.catalog[(6000, 1)] = "public.other.note"
        self.assertEqual(self.masker.describe(self.description), ())
        values, _ = row(self.masker, b"n1", b"n2", b"n3", b"(0,1)")
        self.assertEqual(values, (b"**", b"n2", b"n3", b"(0,1)"))
        del self.catalog[(6000, 1)]
        self.assertEqual(self.masker.describe(self.description, look_up=False), ())
        values, _ = row(self.masker, b"n1", b"n2", b"n3", b"(0,1)")
        self.assertEqual(values, (b"**", b"**", b"n3", b"(0,1)"))

    def test_unresolvable_fails_closed(self) -> None:
        """A table column that cannot be named is masked whole."""
        self.masker.message(T.ROW_DESCRIPTION, self.description)
        values, _ = row(self.masker, b"n1", b"n2", b"n3", b"(0,1)")
        self.assertEqual(values, (b"**", b"**", b"n3", b"(0,1)"))

    def test_column_rules_follow_the_source(self) -> None:
        """
        A column-name rule also matches the column a result column comes
        from, so an alias does not hide it: column rules need the catalog
        too, and a table column it cannot name is masked (fail closed).
        """
        masker = ResponseMasker(COLUMNS_ONLY, lambda t, a: self.catalog.get((t, a)))
        self.assertEqual(masker.unresolved(self.description), (5000, 6000))
        self.catalog[(5000, 2)] = "public.people.ssn"
        self.catalog[(6000, 1)] = "public.other.name"
        self.assertEqual(masker.describe(self.description), ())
        values, _ = row(masker, b"123", b"n2", b"n3", b"n4")
        self.assertEqual(values, (b"***", b"n2", b"n3", b"n4"))
        del self.catalog[(6000, 1)]
        masker.describe(self.description, look_up=False)
        values, _ = row(masker, b"123", b"n2", b"n3", b"n4")
        self.assertEqual(values, (b"***", b"**", b"n3", b"n4"))

    def test_without_resolver(self) -> None:
        """Without a catalog, name rules match the result's labels only."""
        masker = ResponseMasker(COLUMNS_ONLY)
        self.assertEqual(masker.unresolved(self.description), ())
        masker.message(T.ROW_DESCRIPTION, self.description)
        self.assertEqual(row(masker, b"1", b"2", b"3", b"4")[1], True)


class ResultStateTests(SynchronousTestCase):
    """What the masker knows between results."""

    def test_rows_without_description(self) -> None:
        """A prepared statement run without Describe: no column shown blind."""
        masker = ResponseMasker(RULES)
        self.assertEqual(row(masker, b"Ada", b"7", None), ((None, None, None), False))
        self.assertEqual(masker.masked, 2)

    def test_rows_without_description_detectors_only(self) -> None:
        masker = ResponseMasker(DETECT)
        self.assertEqual(
            row(masker, b"Ada", b"a@b.co"), ((b"Ada", b"a***@***.co"), False)
        )
        self.assertEqual(row(masker, b"Ada", b"7"), ((b"Ada", b"7"), True))

    def test_column_count_mismatch(self) -> None:
        masker = ResponseMasker(COLUMNS_ONLY)
        describe(masker, F("name"), F("age"))
        self.assertEqual(row(masker, b"Ada", b"7"), ((b"Ada", b"7"), True))
        self.assertEqual(row(masker, b"Ada", b"7", b"x"), ((None, None, None), False))

    def test_reset(self) -> None:
        for message in [
            codec.CommandComplete("SELECT 1"),
            codec.ReadyForQuery("I"),
            codec.ErrorResponse.build("ERROR", "57014", "canceled"),
            codec.EmptyQueryResponse(),
        ]:
            masker = ResponseMasker(COLUMNS_ONLY)
            describe(masker, F("name"))
            self.assertEqual(row(masker, b"Ada"), ((b"Ada",), True))
            end(masker, message)
            self.assertEqual(row(masker, b"Ada"), ((None,), False), message)

    def test_other_messages_untouched(self) -> None:
        masker = ResponseMasker(RULES)
        for message in [
            codec.NoticeResponse.build("NOTICE", "00000", "nothing here"),
            codec.ParameterStatus("application_name", "psql"),
            codec.CopyData(b"4111111111111111\n"),
            codec.NotificationResponse(1, "chan", "hello"),
        ]:
            encoded = message.encode()
            self.assertIsNone(masker.message(encoded[0], body(encoded)))
        self.assertIsNone(masker.message(ord("?"), b"\x00\x01"))


# -- property: any row stays a well-formed DataRow ------------------------------

TYPES = st.sampled_from(
    [
        *[(25, 0), (25, 1), (1043, 1), (20, 0), (20, 1), (1700, 0), (114, 0)],
        *[(3802, 1), (3802, 0), (17, 0), (17, 1), (1009, 0), (2249, 0)],
        *[(16500, 0), (16500, 1), (1184, 0), (23, 1)],
    ]
)
#: values every scanning masker here must find when they stand alone
PLANTED = [b"4111111111111111", b"4111 1111 1111 1111", b"ann@example.com"]
#: binary values of these are never rewritten, only NULLed
OPAQUE_BINARY = frozenset({(17, 1), (23, 1)})
SENSITIVE = st.sampled_from(
    [
        *[b"4111111111111111", b"4111 1111 1111 1111", b"ann@example.com"],
        *[b"DE89370400440532013000", b"\x01", b"\xff", b'"', b"\\", b"{"],
        *[b"-12.5", b"ssn 123-45-6789"],
    ]
)
VALUES = st.one_of(
    st.none(),
    st.binary(max_size=30),
    st.lists(st.one_of(SENSITIVE, st.binary(max_size=5)), max_size=4).map(b"".join),
)
MASKERS = st.sampled_from(
    [
        DETECT,
        RULES,
        COLUMNS_ONLY,
        Masker(
            [
                MaskingRule(
                    "p",
                    detectors=DETECTORS,
                    patterns=(("ssn", r"\d{3}-\d{2}-\d{4}"), ("any", r"[^\x00-\x7f]+")),
                    columns=("c1", "c4"),
                )
            ]
        ),
    ]
)


class WellFormedTests(SynchronousTestCase):
    """Whatever the values, the client gets a well-formed DataRow."""

    @given(
        MASKERS,
        st.lists(st.tuples(TYPES, VALUES), max_size=8),
        st.booleans(),
        st.data(),
    )
    def test_round_trip(
        self, rules: Masker, columns: list, described: bool, data: st.DataObject
    ) -> None:
        # One text column always holds a card or an address on its own, so a
        # masker that scans values must change the row (the property cannot
        # pass with masking switched off).
        planted = data.draw(st.sampled_from(PLANTED))
        at = data.draw(st.integers(0, len(columns)))
        columns = [*columns[:at], ((25, 0), planted), *columns[at:]]
        masker = ResponseMasker(rules, lambda t, a: f"public.t.c{a}")
        if described:
            describe(
                masker,
                *[
                    F(f"c{i}", 7000 if i % 2 else 0, i, oid, format=fmt)
                    for i, ((oid, fmt), _) in enumerate(columns)
                ],
            )
        values = [value for _, value in columns]
        raw = body(codec.DataRow(values).encode())
        new = masker.message(T.DATA_ROW, raw)
        if rules is not COLUMNS_ONLY:
            self.assertIsNotNone(new)
        if new is None:
            return
        self.assertNotEqual(new, raw)
        out = codec.DataRow.decode(new).values
        self.assertEqual(len(out), len(values))
        if rules is not COLUMNS_ONLY:
            self.assertNotIn(planted, out[at] or b"")
        for (kind, before), after in zip(columns, out, strict=True):
            if before is None:
                self.assertIsNone(after)
            elif kind in OPAQUE_BINARY and described:
                self.assertIn(after, (before, None))
            elif kind == (20, 1) and described and after not in (before, None):
                # rewritten only when decoded: a valid int8 again
                self.assertEqual((len(before), len(after)), (8, 8))


# -- COPY ---------------------------------------------------------------------------


def copy_response(columns: int, fmt: int = 0) -> bytes:
    return body(codec.CopyOutResponse(fmt, (fmt,) * columns).encode())


class CopyTests(SynchronousTestCase):
    """COPY ... TO STDOUT rows, text and CSV."""

    def copy(
        self,
        lines: list[bytes],
        fmt: str = "text",
        names: list | None = None,
        rules: Masker = NAMES,
        delimiter: str | None = None,
        relations: list | None = None,
        header: bool = False,
        columns: int = 3,
        announce: bool = True,
    ) -> tuple[list[bytes], ResponseMasker]:
        masker = ResponseMasker(rules)
        if announce:
            masker.copy_out(
                names,
                fmt,
                delimiter or ("," if fmt == "csv" else "\t"),
                relations,
                header,
            )
        self.assertIsNone(masker.message(T.COPY_OUT_RESPONSE, copy_response(columns)))
        out = []
        for line in lines:
            new = masker.message(T.COPY_DATA, line)
            out.append(line if new is None else new)
        end(masker, codec.CopyDone())
        self.assertIsNone(masker.message(T.COPY_DATA, b"4111111111111111\n"))
        end(masker, codec.CommandComplete(f"COPY {len(lines)}"))
        return out, masker

    def test_text(self) -> None:
        out, masker = self.copy(
            [
                b"Ada\tx-123\tada@example.com\n",
                b"Bob\t\\N\tnone\n",
                b"Cy\t\t\\tcy@example.com\\\\\n",
            ],
            names=["name", "ssn", "contact"],
        )
        self.assertEqual(
            out,
            [
                b"Ada\t*****\ta***@***.com\n",
                b"Bob\t\\N\tnone\n",
                b"Cy\t\t\\tc***@***.com\\\\\n",
            ],
        )
        self.assertEqual(masker.masked, 3)
        self.assertFalse(masker.unmaskable)

    def test_text_escapes_in_masked_columns(self) -> None:
        """A whole-masked field has as many C{*} as its value has characters."""
        out, _ = self.copy([b"a\\tb\\\\c\tx\ty\n"], names=["ssn", "b", "c"])
        self.assertEqual(out, [b"*****\tx\ty\n"])

    def test_text_delimiter(self) -> None:
        out, _ = self.copy(
            [b"a\\|b|ann@example.com|4111 1111 1111 1111\n"],
            names=["ssn", "b", "c"],
            delimiter="|",
        )
        self.assertEqual(out, [b"***|a***@***.com|**** **** **** 1111\n"])

    def test_text_masked_value_is_escaped(self) -> None:
        rules = Masker([MaskingRule("p", patterns=(("p", r"k=\S+"),))])
        out, _ = self.copy([b"k=a\\\\b\tx\n"], rules=rules, columns=2)
        self.assertEqual(out, [b"*****\tx\n"])
        rules = Masker([MaskingRule("p", patterns=(("p", r"tab"),))])
        out, _ = self.copy([b"\\ttab\tx\n"], rules=rules, columns=2)
        self.assertEqual(out, [b"\\t***\tx\n"])

    def test_relation_columns(self) -> None:
        """Relation rules by position; a column without a name is masked."""
        out, _ = self.copy(
            [b"Ada\tprivate\tx\n"],
            rules=RULES,
            names=["name", "note", "other"],
            relations=["public.people.name", "public.people.note", None],
        )
        self.assertEqual(out, [b"Ada\t*******\t*\n"])
        out, _ = self.copy(
            [b"Ada\tprivate\n"],
            rules=RULES,
            names=["name", "note"],
            relations=None,
            columns=2,
        )
        self.assertEqual(out, [b"***\t*******\n"])
        out, _ = self.copy(
            [b"Ada\tprivate\n"],
            rules=RULES,
            names=["name", "note"],
            relations=["people.name", "people.note"],
            columns=2,
        )
        self.assertEqual(out, [b"Ada\t*******\n"])

    def test_csv(self) -> None:
        out, masker = self.copy(
            [
                b"name,ssn,contact\n",
                b'Ada,"12,3","x y, ada@example.com"\n',
                b'"Bob ""B""",,""\n',
                b'"multi\nline ann@example.com",1,x\n',
            ],
            fmt="csv",
            names=["name", "ssn", "contact"],
            header=True,
        )
        self.assertEqual(
            out,
            [
                b"name,ssn,contact\n",
                b'Ada,"****","x y, a***@***.com"\n',
                b'"Bob ""B""",,""\n',
                b'"multi\nline a***@***.com","*",x\n',
            ],
        )
        for line in out:
            self.assertEqual(len(next(csv.reader(io.StringIO(line.decode())))), 3)
        self.assertEqual(masker.masked, 4)

    def test_header_scanned(self) -> None:
        """
        The header row is scanned too: a column can be named by a value
        (red team: CREATE TABLE ... AS SELECT 1 AS <card> by dynamic SQL).
        """
        rules = Masker([MaskingRule("p", detectors=frozenset({"card", "email"}))])
        out, masker = self.copy(
            [b'"4111111111111111",ada@example.com\n', b"1,2\n"],
            "csv",
            rules=rules,
            header=True,
            columns=2,
        )
        self.assertEqual(out, [b'"************1111",a***@***.com\n', b"1,2\n"])
        self.assertEqual(masker.masked, 2)
        out, _ = self.copy(
            [b"plain\tnames\n", b"x\t4111111111111111\n"],
            rules=rules,
            header=True,
            columns=2,
        )
        self.assertEqual(out, [b"plain\tnames\n", b"x\t************1111\n"])

    def test_csv_quotes_in_masked_value(self) -> None:
        rules = Masker([MaskingRule("p", detectors=frozenset({"email"}))])
        out, _ = self.copy(
            [b'"say ""hi"" to bo@example.com",2\n'], "csv", rules=rules, columns=2
        )
        self.assertEqual(out, [b'"say ""hi"" to b***@***.com",2\n'])

    def test_csv_unparseable_row(self) -> None:
        """CSV this cannot split (custom QUOTE): withheld under column rules."""
        out, masker = self.copy(
            [b"'a,b',ann@example.com\n"], "csv", names=["ssn", "b"], columns=2
        )
        self.assertEqual(out, [b""])
        self.assertTrue(masker.unmaskable)
        out, masker = self.copy(
            [b'"a"x,ann@example.com\n'], "csv", rules=DETECT, columns=2
        )
        self.assertEqual(out, [b'"a"x,a***@***.com\n'])
        self.assertFalse(masker.unmaskable)

    def test_field_count_mismatch(self) -> None:
        out, masker = self.copy([b"a\tb\n", b"a\tb\tc\n"], names=["x", "ssn", "z"])
        self.assertEqual(out, [b"", b"a\t*\tc\n"])
        self.assertTrue(masker.unmaskable)

    def test_binary(self) -> None:
        masker = ResponseMasker(RULES)
        masker.copy_out(["ssn"], "binary")
        masker.message(T.COPY_OUT_RESPONSE, copy_response(1, 1))
        self.assertTrue(masker.unmaskable)
        self.assertEqual(masker.message(T.COPY_DATA, b"PGCOPY\n\xff\r\n\x00"), b"")

    def test_not_announced(self) -> None:
        """Without column rules the row is scanned as it is, structure kept."""
        rules = Masker(
            [MaskingRule("p", detectors=DETECTORS, patterns=(("p", r"a\tb"),))]
        )
        out, masker = self.copy(
            [
                b"x\tann@example.com\t4111111111111111\n",
                b"a\tb\n",
                b'"GB82WEST12345698765432",x\n',
            ],
            rules=rules,
            announce=False,
        )
        self.assertEqual(
            out,
            [
                b"x\ta***@***.com\t************1111\n",
                b"*\t*\n",
                b'"GB****************5432",x\n',
            ],
        )
        self.assertFalse(masker.unmaskable)

    def test_not_announced_with_column_rules(self) -> None:
        """Column rules and unknown columns: rows withheld, flagged."""
        out, masker = self.copy([b"x\ty\tz\n"], announce=False)
        self.assertEqual(out, [b""])
        self.assertTrue(masker.unmaskable)
        out, masker = self.copy([b"x\ty\n"], names=["a", "b"])
        self.assertEqual(out, [b""])
        self.assertTrue(masker.unmaskable)

    def test_announcement_dropped_after_query(self) -> None:
        masker = ResponseMasker(RULES)
        masker.copy_out(["ssn"], "text")
        end(masker, codec.ReadyForQuery("I"))
        masker.message(T.COPY_OUT_RESPONSE, copy_response(1))
        self.assertEqual(masker.message(T.COPY_DATA, b"x\n"), b"")

    def test_announcement_survives_earlier_statement(self) -> None:
        masker = ResponseMasker(RULES)
        masker.copy_out(["ssn"], "text")
        end(masker, codec.CommandComplete("SELECT 1"))
        masker.message(T.COPY_OUT_RESPONSE, copy_response(1))
        self.assertEqual(masker.message(T.COPY_DATA, b"x\n"), b"*\n")

    @given(
        st.sampled_from(["text", "csv"]),
        st.lists(st.one_of(st.binary(max_size=20), SENSITIVE), max_size=6).map(
            b"".join
        ),
    )
    def test_any_copy_data(self, fmt: str, data: bytes) -> None:
        """Arbitrary CopyData never breaks the masker."""
        for rules in (RULES, DETECT):
            masker = ResponseMasker(rules)
            masker.copy_out(["ssn", "b"], fmt, "," if fmt == "csv" else "\t")
            masker.message(T.COPY_OUT_RESPONSE, copy_response(2))
            new = masker.message(T.COPY_DATA, data)
            self.assertTrue(new is None or isinstance(new, bytes))


# -- messages that carry values besides rows --------------------------------------

CARD = "4111111111111111"


def masked_message(masker: ResponseMasker, message: codec.Message) -> codec.Message:
    """Feed a message; what the client gets instead (decoded)."""
    encoded = message.encode()
    new = masker.message(encoded[0], body(encoded))
    if new is None:
        return message
    return type(message).decode(new)


class ValueMessageTests(SynchronousTestCase):
    """Errors, notices, notifications, parameter reports, fast-path results."""

    def test_error_fields_scanned(self) -> None:
        error = codec.ErrorResponse.build(
            "ERROR",
            "P0001",
            f"card {CARD}",
            detail="mail ann@example.com",
            hint=f"hint {CARD}",
            where=f"PL/pgSQL function inline_code_block line 1 at RAISE {CARD}",
            internal_query=f"select '{CARD}'",
        )
        got = masked_message(ResponseMasker(DETECT), error)
        self.assertEqual(got.sqlstate, "P0001")
        self.assertEqual(got.message, "card ************1111")
        self.assertEqual(got.detail, "mail a***@***.com")
        for value in got.fields:
            self.assertNotIn(CARD, value[1])

    def test_notice_notification_parameter(self) -> None:
        masker = ResponseMasker(DETECT)
        notice = masked_message(
            masker, codec.NoticeResponse.build("NOTICE", "00000", f"x {CARD}")
        )
        self.assertEqual(notice.message, "x ************1111")
        note = masked_message(
            masker, codec.NotificationResponse(7, "ann@example.com", f"p {CARD}")
        )
        self.assertEqual(
            (note.pid, note.channel, note.payload),
            (7, "a***@***.com", "p ************1111"),
        )
        status = masked_message(masker, codec.ParameterStatus("application_name", CARD))
        self.assertEqual(
            status, codec.ParameterStatus("application_name", "************1111")
        )
        self.assertEqual(masker.masked, 4)

    def test_function_call_result_withheld(self) -> None:
        masker = ResponseMasker(DETECT)
        got = masked_message(masker, codec.FunctionCallResponse(CARD.encode()))
        self.assertIsNone(got.result)
        same = masked_message(masker, codec.FunctionCallResponse(b"42"))
        self.assertEqual(same.result, b"42")
        # binary results: their type is unknown, every hiding form is tried
        for raw in (struct.pack("!q", int(CARD)), numeric_binary(CARD)):
            got = masked_message(masker, codec.FunctionCallResponse(raw))
            self.assertIsNone(got.result)
        small = struct.pack("!q", 7)
        got = masked_message(masker, codec.FunctionCallResponse(small))
        self.assertEqual(got.result, small)

    def test_column_rules_withhold_quoted_values(self) -> None:
        """Errors of the classes that quote values, under column rules."""
        masker = ResponseMasker(COLUMNS_ONLY)
        cases = [
            (
                "22P02",
                'invalid input syntax for type integer: "123-45-6789"',
                None,
                'invalid input syntax for type integer: "***"',
                None,
            ),
            (
                "23505",
                'duplicate key value violates unique constraint "t_pkey"',
                "Key (ssn)=(123-45-6789) already exists.",
                'duplicate key value violates unique constraint "t_pkey"',
                "Key (ssn)=(***) already exists.",
            ),
            (
                "23502",
                'null value in column "x" of relation "t" violates not-null',
                "Failing row contains (1, 123-45-6789, null).",
                'null value in column "x" of relation "t" violates not-null',
                "Failing row contains (***).",
            ),
            (
                "23503",
                "insert or update violates foreign key",
                'Key (ssn)=(1)) is not present in table "p".',
                "insert or update violates foreign key",
                'Key (ssn)=(***) is not present in table "p".',
            ),
            (
                "42P01",
                'relation "123-45-6789" does not exist',
                None,
                'relation "***" does not exist',
                None,
            ),
            ("22012", "division by zero", None, "division by zero", None),
        ]
        for state, message, detail, want_message, want_detail in cases:
            got = masked_message(
                masker,
                codec.ErrorResponse.build("ERROR", state, message, detail, position=8),
            )
            self.assertEqual(
                (got.sqlstate, got.message, got.detail, got.position),
                (state, want_message, want_detail, "8"),
            )

    def test_context_and_internal_query(self) -> None:
        masker = ResponseMasker(COLUMNS_ONLY)
        got = masked_message(
            masker,
            codec.ErrorResponse.build(
                "ERROR",
                "42601",
                'syntax error at or near "6789"',
                where="PL/pgSQL function inline_code_block line 3 at EXECUTE\n"
                'SQL statement "select 123-45-6789 x"',
                internal_query="select 123-45-6789 x",
            ),
        )
        self.assertEqual(got.message, 'syntax error at or near "***"')
        self.assertEqual(
            got.where, "PL/pgSQL function inline_code_block line 3 at EXECUTE\n***"
        )
        self.assertEqual(got.internal_query, "***")
        # The client's own syntax error (no internal query) is left alone.
        mine = codec.ErrorResponse.build("ERROR", "42601", 'syntax error at "selec"')
        self.assertEqual(masked_message(masker, mine), mine)

    def test_malformed_value_messages(self) -> None:
        """
        A malformed message that carries values is a protocol violation
        (08P01), whichever check refuses it.
        """
        masker = ResponseMasker(DETECT)
        card = CARD.encode()
        for type_, body in [
            # no NUL after the value
            (T.PARAMETER_STATUS, b"application_name\0" + card),
            # bytes after the payload's NUL
            (T.NOTIFICATION_RESPONSE, b"\0\0\0\x07chan\0" + card + b"\0extra"),
            # no terminator at all
            (T.NOTICE_RESPONSE, b"M" + card),
            # a field, but not the empty one that ends the list
            (T.ERROR_RESPONSE, b"M" + card + b"\0"),
        ]:
            with self.assertRaises(codec.ProtocolViolation) as caught:
                masker.message(type_, body)
            self.assertEqual(caught.exception.sqlstate, codec.PROTOCOL_VIOLATION)

    def test_error_ends_result(self) -> None:
        masker = ResponseMasker(COLUMNS_ONLY)
        describe(masker, F("name"))
        masked_message(masker, codec.ErrorResponse.build("ERROR", "57014", "x"))
        self.assertEqual(row(masker, b"Ada"), ((None,), False))


# -- binary values ---------------------------------------------------------------


def numeric_binary(text: str) -> bytes:
    """PostgreSQL's binary numeric for decimal C{text} (reference encoder)."""
    from gatehouse.protocols.postgres.masking import _numeric_binary

    dscale = len(text.partition(".")[2])
    return _numeric_binary(text, dscale)


def array_binary(elem: int, values: list, dims: list | None = None) -> bytes:
    dims = dims or [(len(values), 1)]
    flags = int(any(v is None for v in values))
    out = struct.pack("!iiI", len(dims), flags, elem)
    for size, lower in dims:
        out += struct.pack("!ii", size, lower)
    for v in values:
        out += b"\xff\xff\xff\xff" if v is None else struct.pack("!i", len(v)) + v
    return out


def record_binary(fields: list) -> bytes:
    out = struct.pack("!i", len(fields))
    for oid, v in fields:
        out += struct.pack("!I", oid)
        out += b"\xff\xff\xff\xff" if v is None else struct.pack("!i", len(v)) + v
    return out


class BinaryTests(SynchronousTestCase):
    """Binary values are decoded, masked and encoded again, validly."""

    def one(self, type_oid: int, raw: bytes, rules: Masker = DETECT) -> bytes | None:
        masker = ResponseMasker(rules)
        describe(masker, F("v", type_oid=type_oid, format=1))
        return row(masker, raw)[0][0]

    def test_numeric_round_trip(self) -> None:
        from gatehouse.protocols.postgres.masking import _numeric_text

        for text in [
            "0",
            "1",
            "-1",
            "10000",
            "12345.678",
            "0.0001",
            "-0.50",
            "4111111111111111",
            "99999999.99990000",
            "1e0".replace("e0", ""),
        ]:
            raw = numeric_binary(text)
            self.assertEqual(_numeric_text(raw)[0], text)

    def test_int8_and_numeric_cards(self) -> None:
        got = self.one(20, struct.pack("!q", int(CARD)))
        self.assertEqual(struct.unpack("!q", got)[0], 1111)
        got = self.one(1700, numeric_binary(CARD))
        self.assertEqual(got, numeric_binary("1111"))
        got = self.one(1700, numeric_binary(CARD + ".50"))
        self.assertEqual(got, numeric_binary("0000000000001111.50".lstrip("0")))
        self.assertEqual(self.one(20, struct.pack("!q", 12)), struct.pack("!q", 12))
        nan = struct.pack("!hhHh", 0, 0, 0xC000, 0)
        self.assertEqual(self.one(1700, nan), nan)

    def test_arrays(self) -> None:
        got = self.one(1009, array_binary(25, [b"ann@example.com", None, b"x"]))
        self.assertEqual(got, array_binary(25, [b"a***@***.com", None, b"x"]))
        nested = array_binary(20, [struct.pack("!q", int(CARD))] * 4, [(2, 1), (2, 1)])
        got = self.one(1016, nested)
        self.assertEqual(
            got, array_binary(20, [struct.pack("!q", 1111)] * 4, [(2, 1), (2, 1)])
        )
        got = self.one(1231, array_binary(1700, [numeric_binary(CARD)]))
        self.assertEqual(got, array_binary(1700, [numeric_binary("1111")]))

    def test_records(self) -> None:
        inner = array_binary(25, [b"ann@example.com"])
        rec = record_binary(
            [(23, b"\0\0\0\1"), (1009, inner), (20, struct.pack("!q", int(CARD)))]
        )
        got = self.one(2249, rec)
        self.assertEqual(
            got,
            record_binary(
                [
                    (23, b"\0\0\0\1"),
                    (1009, array_binary(25, [b"a***@***.com"])),
                    (20, struct.pack("!q", 1111)),
                ]
            ),
        )
        # A composite type of the database: read as a record.
        self.assertEqual(self.one(16500, rec), got)
        # An enum or citext of the database: read as text.
        self.assertEqual(self.one(16501, b"ann@example.com"), b"a***@***.com")

    def test_ranges(self) -> None:
        card = struct.pack("!q", int(CARD))
        rng = b"\x02" + struct.pack("!i", 8) + card + struct.pack("!i", 8) + card
        got = self.one(3926, rng)
        small = struct.pack("!q", 1111)
        self.assertEqual(
            got, b"\x02" + struct.pack("!i", 8) + small + struct.pack("!i", 8) + small
        )
        multi = struct.pack("!i", 1) + struct.pack("!i", len(rng)) + rng
        self.assertEqual(
            self.one(4536, multi),
            struct.pack("!i", 1) + struct.pack("!i", len(got)) + got,
        )

    def test_malformed_is_null(self) -> None:
        self.assertIsNone(self.one(20, b"\x01\x02"))
        self.assertIsNone(self.one(1700, b"\x00\x05\x00"))
        self.assertIsNone(self.one(2249, b"\x00\x00\x00\x05"))

    def test_undecodable_showing_value_is_null(self) -> None:
        """A built-in type of its own binary format showing a card: NULL."""
        self.assertIsNone(self.one(3614, b"\0\0\0\x01" + CARD.encode() + b"\0\0\0"))
        self.assertEqual(self.one(3614, b"\0\0\0\x01abc\0\0\0"), b"\0\0\0\x01abc\0\0\0")

    def test_column_rule_on_binary(self) -> None:
        masker = ResponseMasker(COLUMNS_ONLY)
        describe(
            masker, F("ssn", type_oid=1700, format=1), F("n", type_oid=1700, format=1)
        )
        values, _ = row(masker, numeric_binary("123456789"), numeric_binary(CARD))
        # No detectors here: the other column passes as it is.
        self.assertEqual(values, (None, numeric_binary(CARD)))

    @given(st.decimals(allow_nan=False, allow_infinity=False, places=4))
    def test_numeric_any(self, value: object) -> None:
        from gatehouse.protocols.postgres.masking import _numeric_text

        text = f"{value:f}"
        if text.startswith("-") and not text.strip("-0."):
            text = text.lstrip("-")
        raw = numeric_binary(text)
        self.assertEqual(_numeric_text(raw)[0], text)


class JSONKeyTests(SynchronousTestCase):
    """Under column rules, JSON members named after masked columns."""

    def test_to_json_of_a_row(self) -> None:
        masker = ResponseMasker(RULES)
        describe(masker, F("j", type_oid=114), F("b", type_oid=3802, format=1))
        doc = b'{"id": 1, "ssn": "123-45-6789", "x": [{"NOTE": 2.50}], "k": null}'
        values, _ = row(masker, doc, b"\x01" + doc)
        want = {"id": 1, "ssn": "***", "x": [{"NOTE": "***"}], "k": None}
        self.assertEqual(json.loads(values[0]), want)
        self.assertEqual(json.loads(values[1][1:]), want)
        self.assertNotIn(b"123-45-6789", values[0])

    def test_untouched_and_invalid(self) -> None:
        masker = ResponseMasker(RULES)
        describe(masker, F("j", type_oid=114))
        self.assertEqual(row(masker, b'{"id": 1.000}'), ((b'{"id": 1.000}',), True))
        self.assertEqual(row(masker, b'{"ssn": 1'), ((None,), False))


class DescriptionTests(SynchronousTestCase):
    """Column names carry values too (a view named by dynamic SQL)."""

    def test_rename(self) -> None:
        masker = ResponseMasker(DETECT)
        plain = body(codec.RowDescription([F("id"), F("name")]).encode())
        self.assertIsNone(masker.rename(plain))
        named = body(codec.RowDescription([F("id"), F(CARD, type_oid=23)]).encode())
        new = codec.RowDescription.decode(masker.rename(named))
        self.assertEqual(
            new, codec.RowDescription([F("id"), F("************1111", type_oid=23)])
        )
        self.assertIsNone(ResponseMasker(COLUMNS_ONLY).rename(named))

    def test_localized_quotes(self) -> None:
        masker = ResponseMasker(COLUMNS_ONLY)
        got = masked_message(
            masker,
            codec.ErrorResponse.build(
                "ERROR",
                "22P02",
                "ungültige Eingabesyntax für Typ integer: »123-45-6789«",
                "Schlüssel (ssn)=(123-45-6789) existiert bereits.",
            ),
        )
        self.assertEqual(got.message, "ungültige Eingabesyntax für Typ integer: »***«")
        self.assertEqual(got.detail, "***")


FIELD_TEXT = st.lists(
    st.one_of(
        st.sampled_from([CARD, "ann@example.com", '"', "»", "Key (", ")=(", "\n"]),
        st.text(
            alphabet=st.characters(
                blacklist_characters="\0", blacklist_categories=("Cs",)
            ),
            max_size=8,
        ),
    ),
    max_size=5,
).map("".join)


class ErrorWellFormedTests(SynchronousTestCase):
    """Whatever the fields, an error stays a well-formed error."""

    @given(
        MASKERS,
        st.sampled_from(["22P02", "23505", "42P01", "42601", "P0001", "00000"]),
        st.lists(st.tuples(st.sampled_from("MDHWqtnRsd"), FIELD_TEXT), max_size=6),
        st.sampled_from("MDHW"),
        st.sampled_from(PLANTED),
    )
    def test_round_trip(
        self, rules: Masker, state: str, fields: list, code: str, planted: bytes
    ) -> None:
        # A field that holds a card or an address between spaces: checked
        # against the planted text, not against Masker.mask (which would
        # agree with a masker that masks nothing).
        text = planted.decode()
        fields = [*fields, (code, f"value {text} here")]
        error = codec.ErrorResponse((("S", "ERROR"), ("C", state), ("P", "3"), *fields))
        got = masked_message(ResponseMasker(rules), error)
        if rules is not COLUMNS_ONLY:
            self.assertNotIn(text, got.fields[-1][1])
        self.assertEqual([c for c, _ in got.fields], [c for c, _ in error.fields])
        self.assertEqual((got.sqlstate, got.position), (state, "3"))
        for (code, value), (_, before) in zip(got.fields, error.fields, strict=True):
            if code in "SCPR":
                # severity, SQLSTATE, position, routine: never a value
                self.assertEqual(value, before)
            elif rules.scans_values:
                self.assertEqual(rules.mask(value)[1], 0, (before, value))
