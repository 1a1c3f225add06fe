"""
A property of COPY ... TO STDOUT masking: whatever the rows hold (text
with delimiters, quotes, backslashes, newlines; NULLs; empty strings), in
text or CSV format, with or without a header, every planted card number
(random, Luhn-valid, plain or grouped) and e-mail address is gone from
what the client gets, rows without one pass unchanged, and every row keeps
its fields.

The rows are encoded here as PostgreSQL writes them (one CopyData per row),
independently of the masker's own parser.
"""

from __future__ import annotations

import csv
import io

from hypothesis import event, given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from gatehouse.policy.masking import Masker, MaskingRule
from gatehouse.protocols.postgres import codec
from gatehouse.protocols.postgres.masking import ResponseMasker

T = codec.BackendType

CARDS_AND_MAIL = Masker([MaskingRule("pii", detectors=frozenset({"card", "email"}))])
#: the same, and a column masked whole by its name
WITH_COLUMN = Masker(
    [MaskingRule("pii", detectors=frozenset({"card", "email"}), columns=("secret",))]
)


def luhn_complete(digits: str) -> str:
    """C{digits} and the check digit that makes them pass the Luhn check."""
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2 == 0:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return digits + str((10 - total % 10) % 10)


@st.composite
def cards(draw) -> str:
    """A Luhn-valid card number of 16 digits, plain or in groups of four."""
    first = draw(st.sampled_from("3456"))
    body = draw(st.text("0123456789", min_size=14, max_size=14))
    number = luhn_complete(first + body)
    separator = draw(st.sampled_from(["", " ", "-"]))
    return separator.join(number[i : i + 4] for i in range(0, 16, 4))


EMAILS = st.builds(
    "{}{}@{}.{}".format,
    st.from_regex(r"[a-z][a-z0-9]{0,6}", fullmatch=True),
    st.sampled_from(["", ".x", ".j0hn", "+tag", "_u"]),
    st.from_regex(r"[a-z][a-z0-9]{1,7}(\.[a-z]{2,5})?", fullmatch=True),
    st.sampled_from(["com", "org", "io", "example"]),
)

#: text around planted values: what COPY must escape or quote, no digits
#: and no '@' (a filler is never itself a card or an address)
FILLER = st.text(
    alphabet=st.sampled_from(list("abcXYZ \t\n\r\\\",;|'.é\x01\x0b\x08\x0c")),
    max_size=8,
)


@st.composite
def fields(draw) -> tuple[str | None, list[str]]:
    """A field's value (None: NULL) and the sensitive values planted in it."""
    kind = draw(st.sampled_from(["null", "plain", "planted", "planted", "empty"]))
    if kind == "null":
        return None, []
    if kind == "empty":
        return "", []
    if kind == "plain":
        return draw(FILLER), []
    planted = draw(st.lists(st.one_of(cards(), EMAILS), min_size=1, max_size=2))
    parts = [draw(FILLER)]
    for value in planted:
        parts += [" ", value, " ", draw(FILLER)]
    return "".join(parts), planted


def text_row(values: list[str | None], delimiter: str) -> bytes:
    """One row as COPY ... TO STDOUT (FORMAT text) writes it."""
    escapes = {
        "\\": "\\\\",
        "\n": "\\n",
        "\r": "\\r",
        "\t": "\\t",
        "\b": "\\b",
        "\f": "\\f",
        "\v": "\\v",
        delimiter: "\\" + delimiter,
    }
    out = []
    for value in values:
        if value is None:
            out.append("\\N")
        else:
            out.append("".join(escapes.get(ch, ch) for ch in value))
    return (delimiter.join(out) + "\n").encode()


def csv_row(values: list[str | None], delimiter: str) -> bytes:
    """One row as COPY ... TO STDOUT (FORMAT csv) writes it."""
    out = []
    for value in values:
        if value is None:
            out.append("")
        elif (
            value == ""
            or value == "\\."
            or any(ch in value for ch in (delimiter, '"', "\n", "\r"))
        ):
            out.append('"' + value.replace('"', '""') + '"')
        else:
            out.append(value)
    return (delimiter.join(out) + "\n").encode()


def field_count(line: bytes, fmt: str, delimiter: str) -> int:
    """Fields of one encoded row (read independently of the masker)."""
    text = line.decode()
    if fmt == "csv":
        [record] = list(csv.reader(io.StringIO(text), delimiter=delimiter))
        return len(record)
    count, escaped = 1, False
    for ch in text.removesuffix("\n"):
        if escaped:
            escaped = False
        elif ch == "\\":
            escaped = True
        elif ch == delimiter:
            count += 1
    return count


class CopyMaskingPropertyTests(SynchronousTestCase):
    """COPY OUT rows lose every planted value, and nothing else."""

    def test_planted_values_removed(self):
        reached = []

        @settings(max_examples=200, deadline=None)
        @given(
            st.sampled_from(
                [("text", "\t"), ("text", "|"), ("csv", ","), ("csv", ";")]
            ),
            st.integers(1, 4),
            st.data(),
            st.booleans(),
            st.booleans(),
        )
        def check(format_, width, data, header, by_column):
            fmt, delimiter = format_
            header = header and fmt == "csv"
            names = [f"c{i}" for i in range(width)]
            if by_column:
                names[-1] = "secret"
            table = data.draw(
                st.lists(st.lists(fields(), min_size=width, max_size=width), max_size=6)
            )
            encode = csv_row if fmt == "csv" else text_row
            lines = [encode([v for v, _ in row], delimiter) for row in table]
            if header:
                lines.insert(0, encode(names, delimiter))
            masker = ResponseMasker(WITH_COLUMN if by_column else CARDS_AND_MAIL)
            masker.copy_out(names, fmt, delimiter, None, header)
            response = codec.CopyOutResponse(0, (0,) * width).encode()[5:]
            self.assertIsNone(masker.message(T.COPY_OUT_RESPONSE, response))
            out = []
            for line in lines:
                new = masker.message(T.COPY_DATA, line)
                out.append(line if new is None else new)
            self.assertFalse(masker.unmaskable)
            if header:
                self.assertEqual(out.pop(0), lines.pop(0))
            planted_count = 0
            for row, line, got in zip(table, lines, out, strict=True):
                planted = [p for _, values in row for p in values]
                whole = by_column and row[-1][0] not in (None, "")
                if not planted and not whole:
                    self.assertEqual(got, line)
                    continue
                self.assertEqual(field_count(got, fmt, delimiter), width, (line, got))
                text = got.decode()
                for value in planted:
                    planted_count += 1
                    self.assertNotIn(value, text, (line, got))
                    # nothing that tells it apart: all of a card but its
                    # last four digits, the local part of an address
                    self.assertNotIn(value[:-4], text, (line, got))
                    if "@" in value:
                        self.assertNotIn(value.split("@")[0] + "@", text, (line, got))
            event(f"planted values: {min(planted_count, 4)}+")
            reached.append(planted_count)

        check()
        self.assertGreaterEqual(len(reached), 180)
        self.assertGreaterEqual(sum(1 for n in reached if n), 100)

    def test_cards_are_distinct(self):
        """The card strategy is not a handful of numbers."""
        seen = set()

        @settings(max_examples=200, deadline=None)
        @given(cards())
        def check(card):
            digits = card.replace(" ", "").replace("-", "")
            self.assertEqual(len(digits), 16)
            self.assertEqual(luhn_complete(digits[:15]), digits)
            seen.add(digits)

        check()
        self.assertGreater(len(seen), 100)
