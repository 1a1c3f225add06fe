"""
Tests for L{gatehouse.policy.masking}: the detectors (Luhn-checked cards, e-mail
addresses, mod-97 IBANs), user patterns, rendering for text, numbers and
JSON, the pre-check, and whole-column rules.
"""

from __future__ import annotations

from hypothesis import assume, given
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from gatehouse.policy.masking import (
    DETECTORS,
    JSON,
    NUMERIC,
    Masker,
    MaskingRule,
    compile_pattern,
)

ALL = Masker([MaskingRule("all", detectors=DETECTORS)])


def luhn(digits: str) -> bool:
    total = 0
    for i, c in enumerate(reversed(digits)):
        d = int(c) * (2 if i % 2 else 1)
        total += d - 9 if d > 9 else d
    return total % 10 == 0


def luhn_complete(prefix: str) -> str:
    """C{prefix} and the check digit that makes it pass Luhn."""
    return next(prefix + c for c in "0123456789" if luhn(prefix + c))


def iban(country: str, bban: str) -> str:
    """An IBAN with correct check digits (for any country code)."""
    moved = bban + country + "00"
    number = int("".join(str(int(c, 36)) for c in moved))
    return f"{country}{98 - number % 97:02d}{bban}"


#: issuer prefixes and the lengths their numbers have (and some without a
#: brand: the detector does not look at prefixes)
BRANDS = [
    ("4", (13, 16, 19)),  # Visa
    ("51", (16,)),
    ("55", (16,)),
    ("2221", (16,)),
    ("2720", (16,)),  # Mastercard
    ("34", (15,)),
    ("37", (15,)),  # American Express
    ("6011", (16, 19)),
    ("65", (16, 19)),  # Discover
    ("3528", (16, 19)),  # JCB
    ("36", (14,)),  # Diners
    ("62", (16, 17, 18, 19)),  # UnionPay
    ("6759", (13, 16, 19)),  # Maestro
    ("", tuple(range(13, 20))),
]


@st.composite
def card_numbers(draw: st.DrawFn) -> str:
    """A Luhn-valid number of a brand's length."""
    prefix, lengths = draw(st.sampled_from(BRANDS))
    length = draw(st.sampled_from(lengths))
    first = "" if prefix else draw(st.sampled_from("123456789"))
    body = draw(
        st.text(
            "0123456789",
            min_size=length - 1 - len(prefix + first),
            max_size=length - 1 - len(prefix + first),
        )
    )
    return luhn_complete(prefix + first + body)


@st.composite
def grouped_number(draw: st.DrawFn, number: str) -> str:
    """C{number} plain, or in groups joined by one space or dash."""
    separator = draw(st.sampled_from(["", " ", "-"]))
    if not separator:
        return number
    sizes = [draw(st.integers(4, len(number)))]
    while sum(sizes) < len(number):
        rest = len(number) - sum(sizes)
        if rest < 6:
            sizes.append(rest)
            break
        sizes.append(draw(st.integers(3, rest - 3)))
    if sizes[-1] < 3:
        return number
    groups, pos = [], 0
    for size in sizes:
        groups.append(number[pos : pos + size])
        pos += size
    return separator.join(groups)


def mask_digits(grouped: str) -> str:
    """What the card detector makes of C{grouped}: digits but the last 4 to *."""
    digits = sum(c.isdigit() for c in grouped)
    out, seen = [], 0
    for c in grouped:
        if c.isdigit():
            seen += 1
            out.append(c if seen > digits - 4 else "*")
        else:
            out.append(c)
    return "".join(out)


#: text around a value that holds nothing to detect (no digits, no @)
PLAIN = st.text(
    alphabet=st.characters(blacklist_categories=("Nd", "Cs"), blacklist_characters="@"),
    max_size=20,
)


@st.composite
def ibans(draw: st.DrawFn) -> str:
    """A valid IBAN of a real country, plain or in groups of four."""
    country = draw(st.sampled_from(["DE", "GB", "FR", "NO", "NL", "IT", "CH"]))
    bban = draw(
        st.text("0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ", min_size=11, max_size=30)
    )
    number = iban(country, bban)
    if draw(st.booleans()):
        return " ".join(number[i : i + 4] for i in range(0, len(number), 4))
    return number


class CardTests(SynchronousTestCase):
    """Card numbers: 13-19 Luhn-valid digits, optionally grouped."""

    def test_masked_keeping_last_four(self) -> None:
        for raw, masked in [
            ("4111111111111111", "************1111"),
            ("4111 1111 1111 1111", "**** **** **** 1111"),
            ("5500-0000-0000-0004", "****-****-****-0004"),
            ("378282246310005", "***********0005"),
            ("3782 822463 10005", "**** ****** *0005"),
            ("4222222222222", "*********2222"),
        ]:
            self.assertEqual(ALL.mask_text(f"pay {raw}."), (f"pay {masked}.", 1))

    def test_lengths(self) -> None:
        """13 to 19 digits; 12 or 20 are not cards even when Luhn-valid."""
        for length in (13, 16, 19):
            card = luhn_complete("4" * (length - 1))
            self.assertEqual(ALL.mask_text(card)[1], 1, card)
        for length in (12, 20):
            number = luhn_complete("4" * (length - 1))
            self.assertEqual(ALL.mask_text(number), (number, 0), number)

    def test_luhn_failures(self) -> None:
        for number in ["4111111111111112", "4111 1111 1111 1112", "1234567890123"]:
            self.assertFalse(luhn(number.replace(" ", "")))
            self.assertEqual(ALL.mask_text(number), (number, 0))

    def test_not_inside_longer_runs(self) -> None:
        """A valid card number inside a longer digit run is not a card."""
        card = "4111111111111111"
        for text in [f"9{card}", f"{card}9", f"order 12{card}34", f"x{card}0000y"]:
            self.assertEqual(ALL.mask_text(text), (text, 0), text)

    def test_next_to_other_numbers(self) -> None:
        """Groups around a card are not part of it: an expiry, a prefix."""
        self.assertEqual(
            ALL.mask_text("4111 1111 1111 1111 12/25"),
            ("**** **** **** 1111 12/25", 1),
        )
        self.assertEqual(
            ALL.mask_text("id 2024 4111111111111111 07"),
            ("id 2024 ************1111 07", 1),
        )

    def test_short_groups(self) -> None:
        """Groups of one or two digits do not make a card (lists, dates)."""
        digits = luhn_complete("4" * 15)
        spaced = " ".join(digits[i : i + 2] for i in range(0, 16, 2))
        self.assertEqual(ALL.mask_text(spaced), (spaced, 0))

    def test_double_separators(self) -> None:
        text = "4111  1111  1111  1111"
        self.assertEqual(ALL.mask_text(text), (text, 0))

    def test_several(self) -> None:
        masked, count = ALL.mask_text("4111111111111111,5555555555554444")
        self.assertEqual((masked, count), ("************1111,************4444", 2))

    @given(st.data())
    def test_embedded_card_never_survives(self, data: st.DataObject) -> None:
        """
        Any Luhn-valid number of 13 to 19 digits, with a real brand prefix
        or none, written plain or in groups (first group at least 4 digits,
        the others at least 3) is masked to its last four digits, and the
        text around it is left alone.
        """
        number = data.draw(card_numbers())
        grouped = data.draw(grouped_number(number))
        left, right = data.draw(PLAIN), data.draw(PLAIN)
        masked, count = ALL.mask_text(f"{left} | {grouped} | {right}")
        self.assertEqual(
            (masked, count), (f"{left} | {mask_digits(grouped)} | {right}", 1)
        )

    @given(st.data())
    def test_near_misses_survive(self, data: st.DataObject) -> None:
        """
        Numbers one step from a card are left alone: a wrong check digit,
        one digit too few or too many (even when Luhn-valid), a group of
        two digits, a first group of three.
        """
        number = data.draw(card_numbers())
        kind = data.draw(st.sampled_from(["check", "short", "long", "group", "first"]))
        if kind == "check":
            wrong = data.draw(st.sampled_from(sorted(set("0123456789") - {number[-1]})))
            # plain: in groups, a shorter window could be a card of its own
            text = number[:-1] + wrong
        elif kind == "short":
            text = luhn_complete(number[:11]) if len(number) == 13 else number[:12]
        elif kind == "long":
            text = luhn_complete(number + "0" * (19 - len(number)))
        elif kind == "group":
            # the card split so that one group (not the first) has 1-2 digits
            cut = data.draw(st.integers(len(number) - 2, len(number) - 1))
            sep = data.draw(st.sampled_from(" -"))
            text = number[:cut] + sep + number[cut:]
            assume(not luhn(number[:cut]))  # else the first part is a card
        else:
            sep = data.draw(st.sampled_from(" -"))
            text = number[:3] + sep + number[3:]
            assume(len(number) < 16 or not luhn(number[3:]))
        if kind == "short":
            self.assertEqual(len(text), 12)
        if kind == "long":
            self.assertEqual(len(text), 20)
        left, right = data.draw(PLAIN), data.draw(PLAIN)
        line = f"{left} | {text} | {right}"
        self.assertEqual(ALL.mask_text(line), (line, 0))


class EmailTests(SynchronousTestCase):
    """E-mail addresses."""

    def test_masked(self) -> None:
        for raw, masked in [
            ("alan.turing@bletchley.org", "a***@***.org"),
            ("x+tag@mail.example.co.uk", "x***@***.uk"),
            ("UPPER@EXAMPLE.COM", "U***@***.COM"),
            ("o'brien@example.ie", "o***@***.ie"),
            ("user@example.xn--p1ai", "u***@***.xn--p1ai"),
            ("josé@exämple.de", "j***@***.de"),
        ]:
            self.assertEqual(ALL.mask_text(f"<{raw}>"), (f"<{masked}>", 1), raw)

    def test_not_emails(self) -> None:
        for text in ["a@b", "@example.com", "user@localhost", "a @ b.com", "x@.com"]:
            self.assertEqual(ALL.mask_text(text), (text, 0), text)

    def test_sentence(self) -> None:
        self.assertEqual(
            ALL.mask_text("write to ada@example.com or bob@example.net."),
            ("write to a***@***.com or b***@***.net.", 2),
        )

    @given(st.emails(), st.text(), st.text())
    def test_embedded_email_never_survives(
        self, email: str, left: str, right: str
    ) -> None:
        masked, count = ALL.mask_text(f"{left} {email} {right}")
        self.assertGreaterEqual(count, 1)
        self.assertNotIn(email, masked)


class IbanTests(SynchronousTestCase):
    """IBANs, checked with mod 97."""

    def test_masked(self) -> None:
        for raw, masked in [
            ("DE89 3704 0044 0532 0130 00", "DE** **** **** **** **30 00"),
            ("DE89370400440532013000", "DE****************3000"),
            ("GB82WEST12345698765432", "GB****************5432"),
            ("NO9386011117947", "NO*********7947"),
            ("FR1420041010050500013M02606", "FR*********************2606"),
        ]:
            self.assertEqual(ALL.mask_text(f"iban: {raw}."), (f"iban: {masked}.", 1))

    def test_invalid(self) -> None:
        for text in [
            "GB82WEST12345698765433",  # check digits wrong
            "DE89 3704 0044 0532 0130 01",
            iban("ZZ", "12345678901234"),  # not a country
            "de89370400440532013000",  # lower case
            "XDE89370400440532013000",  # inside a longer word
        ]:
            self.assertEqual(ALL.mask_text(text), (text, 0), text)

    def test_followed_by_words(self) -> None:
        self.assertEqual(
            ALL.mask_text("DE89 3704 0044 0532 0130 00 IS MINE"),
            ("DE** **** **** **** **30 00 IS MINE", 1),
        )

    def test_constructed(self) -> None:
        value = iban("NL", "ABNA0417164300")
        self.assertEqual(value, "NL91ABNA0417164300")
        self.assertEqual(ALL.mask_text(value), ("NL************4300", 1))


class PatternTests(SynchronousTestCase):
    """User-defined patterns."""

    def test_masked_same_length(self) -> None:
        masker = Masker([MaskingRule("ssn", patterns=(("ssn", r"\d{3}-\d{2}-\d{4}"),))])
        self.assertEqual(
            masker.mask_text("ssn 123-45-6789, 987-65-4321"),
            ("ssn ***********, ***********", 2),
        )
        self.assertTrue(masker.scans_values)
        self.assertTrue(masker.might_match(b"anything"))

    def test_compile_pattern(self) -> None:
        pattern, error = compile_pattern(r"tok_[a-z0-9]{8}")
        self.assertIsNone(error)
        self.assertTrue(pattern.search("x tok_abcd1234"))
        self.assertEqual(compile_pattern("(")[0], None)
        self.assertIn("missing", compile_pattern("(")[1])
        self.assertEqual(compile_pattern("a*"), (None, "it matches the empty string"))

    def test_invalid_pattern_in_rule(self) -> None:
        self.assertRaises(
            ValueError, Masker, [MaskingRule("bad", patterns=(("p", "("),))]
        )
        self.assertRaises(
            ValueError, Masker, [MaskingRule("bad", detectors=frozenset({"phone"}))]
        )

    def test_overlap_with_detector(self) -> None:
        """Overlapping matches are masked once, as one span."""
        masker = Masker(
            [
                MaskingRule(
                    "both",
                    detectors=frozenset({"card"}),
                    patterns=(("tail", r"1111 end"),),
                )
            ]
        )
        masked, count = masker.mask_text("4111 1111 1111 1111 end")
        self.assertEqual((masked, count), ("*" * 23, 1))

    def test_keep(self) -> None:
        """Characters to keep survive a pattern's mask."""
        masker = Masker([MaskingRule("p", patterns=(("p", r"a,b"),))])
        self.assertEqual(masker.mask("xa,by", keep=","), ("x*,*y", 1))


class RenderingTests(SynchronousTestCase):
    """The same detections rendered for numbers and for JSON."""

    def test_numeric(self) -> None:
        self.assertEqual(ALL.mask("4111111111111111", NUMERIC), ("0000000000001111", 1))
        self.assertEqual(
            ALL.mask("-4111111111111111.50", NUMERIC), ("-0000000000001111.50", 1)
        )

    def test_json(self) -> None:
        text = '{"n": 4111111111111111, "s": "4111 1111 1111 1111", "e": "a@b.io"}'
        self.assertEqual(
            ALL.mask(text, JSON),
            ('{"n": 1111, "s": "**** **** **** 1111", "e": "a***@***.io"}', 3),
        )
        self.assertEqual(ALL.mask("[5555555555590000]", JSON)[0], "[0]")

    def test_mask_whole(self) -> None:
        self.assertEqual(Masker.mask_whole("sécret"), "******")
        self.assertEqual(Masker.mask_whole(""), "")
        self.assertEqual(Masker.zero_digits(b"-12.50e3"), b"-00.00e0")


class PrecheckTests(SynchronousTestCase):
    """The cheap test that rules out most values."""

    def test_might_match(self) -> None:
        self.assertFalse(ALL.might_match(b"plain text, 2024-01-15 10:20:30"))
        self.assertFalse(ALL.might_match(b"123456789012"))
        self.assertTrue(ALL.might_match(b"1234567890123"))
        self.assertTrue(ALL.might_match(b"4111 1111-1111 1111"))
        self.assertTrue(ALL.might_match(b"a@b"))
        self.assertTrue(ALL.might_match(b"xx DE89 yy"))
        email = Masker([MaskingRule("e", detectors=frozenset({"email"}))])
        self.assertFalse(email.might_match(b"4111111111111111 DE89"))
        self.assertFalse(Masker([MaskingRule("c", columns=("x",))]).might_match(b"@"))

    def test_unchanged_is_same_object(self) -> None:
        text = "nothing to see"
        self.assertIs(ALL.mask_text(text)[0], text)

    @given(st.data())
    def test_precheck_is_a_superset(self, data: st.DataObject) -> None:
        """
        Whenever a detector finds something, the pre-check said so: text
        with a card, an address or an IBAN planted in it (which the
        detectors must find) passes the pre-check of every masker that has
        the detector.
        """
        kind = data.draw(st.sampled_from(["card", "email", "iban"]))
        if kind == "card":
            value = data.draw(card_numbers().flatmap(grouped_number))
        elif kind == "email":
            value = data.draw(st.emails())
        else:
            value = data.draw(ibans())
        left, right = data.draw(st.text()), data.draw(st.text())
        text = f"{left} {value} {right}"
        raw = text.encode("utf-8", "surrogatepass")
        _, count = ALL.mask_text(text)
        self.assertGreaterEqual(count, 1)
        self.assertTrue(ALL.might_match(raw))
        alone = Masker([MaskingRule("one", detectors=frozenset({kind}))])
        self.assertGreaterEqual(alone.mask_text(text)[1], 1)
        self.assertTrue(alone.might_match(raw))

    @given(st.text())
    def test_surrogates(self, text: str) -> None:
        """Text decoded with surrogateescape is masked, never rejected."""
        raw = text.encode("utf-8", "surrogatepass") + b"\xff a@b.com"
        masked, count = ALL.mask_text(raw.decode("utf-8", "surrogateescape"))
        self.assertGreaterEqual(count, 1)
        masked.encode("utf-8", "surrogateescape")


class ColumnRuleTests(SynchronousTestCase):
    """Whole-column rules by name and by table column."""

    masker = Masker(
        [
            MaskingRule(
                "cols",
                columns=("*password*", "SSN"),
                relation_columns=("customers.secret", "audit.*.who"),
            ),
            MaskingRule("more", relation_columns=("hr.salaries.amount",)),
        ]
    )

    def test_flags(self) -> None:
        self.assertTrue(self.masker.active)
        self.assertFalse(self.masker.scans_values)
        self.assertTrue(self.masker.has_column_rules)
        self.assertTrue(self.masker.has_relation_rules)
        empty = Masker([])
        self.assertEqual(
            (empty.active, empty.scans_values, empty.has_relation_rules),
            (False, False, False),
        )

    def test_column_names(self) -> None:
        masked = self.masker.column_masked
        self.assertTrue(masked("user_password_hash", None))
        self.assertTrue(masked("PASSWORD", None))
        self.assertTrue(masked("ssn", None))
        self.assertFalse(masked("ssn_count_x", None))
        self.assertFalse(masked("name", None))
        self.assertFalse(masked(None, None))

    def test_relation_columns(self) -> None:
        masked = self.masker.column_masked
        self.assertTrue(masked("x", "public.customers.secret"))
        self.assertTrue(masked("x", "sales.Customers.SECRET"))
        self.assertTrue(masked("x", "audit.log.who"))
        self.assertTrue(masked("x", "hr.salaries.amount"))
        self.assertFalse(masked("x", "public.salaries.amount"))
        self.assertFalse(masked("x", "public.other.secret"))
        self.assertFalse(masked("x", "public.customers.secret_hint"))

    def test_alias_does_not_hide_a_column(self) -> None:
        """A column-name rule also matches the table column's own name."""
        self.assertTrue(self.masker.column_masked("p", "public.users.ssn"))

    def test_schema_unknown(self) -> None:
        """C{table.column} (as a client wrote it) matches any schema's rule."""
        masked = self.masker.column_masked
        self.assertTrue(masked(None, "customers.secret"))
        self.assertTrue(masked(None, "salaries.amount"))
        self.assertFalse(masked(None, "customers.name"))

    def test_database_qualified(self) -> None:
        self.assertTrue(self.masker.column_masked(None, "db.hr.salaries.amount"))
