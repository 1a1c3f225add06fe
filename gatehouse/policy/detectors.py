"""
Value detectors: what in a value must be masked, wherever it appears.

Detectors look at the text of a value, not at where it came from (that is
L{gatehouse.policy.masking}'s structural rules: result columns, JSON
members).  A L{ValueDetectors} runs the built-in detectors and the
user-defined patterns of one session's rules.

Detectors, and how they mask:

 - C{card}: 13 to 19 digits, optionally in groups separated by single
   spaces or dashes (every group at least 3 digits, the first at least 4),
   passing the Luhn check, and not part of a longer run of digits.  Digits
   become C{*} except the last four; separators stay
   (C{"**** **** **** 1111"}).
 - C{email}: a practical subset of RFC 5322 (dot-atom local part, host
   names with a letter TLD or an C{xn--} one).  Masked as the first
   character of the local part, C{"***@***."} and the last label of the
   domain (C{"j***@***.com"}).
 - C{iban}: an IBAN country code, two check digits and 11 to 30 upper-case
   letters or digits, optionally grouped by single spaces, passing the
   mod-97 check.  Everything but the country code and the last four
   characters becomes C{*}; spaces stay.

User patterns (custom detectors) replace each (non-empty) match by as many
C{*}.  Where matches overlap, the union is masked as one span of C{*}.

Not detected: IBANs in lower case, e-mail addresses with a quoted local
part or an IP-literal domain, cards written in non-ASCII digits.

Every value of every row goes through L{ValueDetectors.mask} (or the
protocol's own equivalent), so the no-match path is a pre-check that costs
one C{bytes.translate} and a few substring searches: a card needs 13 digits
once spaces and dashes are dropped, an IBAN two capitals then two digits,
an address an C{@}.  L{ValueDetectors.might_match} runs it on raw bytes,
which lets a protocol skip decoding altogether; user patterns cannot be
pre-checked.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

__all__ = [
    "DETECTORS",
    "JSON",
    "NUMERIC",
    "TEXT",
    "ValueDetectors",
    "compile_pattern",
]

#: the built-in detectors a rule may name
DETECTORS = frozenset({"card", "email", "iban"})


def compile_pattern(text: str) -> tuple[re.Pattern[str] | None, str | None]:
    """
    Compile a user-defined masking pattern.

    @return: C{(pattern, None)}, or C{(None, why)} if C{text} is not a
        valid regular expression or matches the empty string (it would
        mask nothing, everywhere).
    """
    try:
        pattern = re.compile(text)
    except (re.error, OverflowError, RecursionError) as e:
        return None, str(e)
    if pattern.fullmatch(""):
        return None, "it matches the empty string"
    return pattern, None


# -- detectors -----------------------------------------------------------------

#: L{Masker.mask} renders with C{*}
TEXT = 0
#: L{Masker.mask} turns digits into C{0}, so that numeric text stays a number
NUMERIC = 1
#: L{Masker.mask} renders JSON text: as L{TEXT}, except that a card number
#: outside a string (a bare number) keeps its last four digits, without
#: leading zeros
JSON = 2
_CARD, _EMAIL, _IBAN, _PATTERN, _MERGED = range(5)

# The pre-check: bytes mapped to classes (digit "d", capital "A", other
# "x") with spaces and dashes dropped.  A card then needs 13 "d" in a row,
# an IBAN "AAdd"; an e-mail address needs an "@".
_CLASSES = bytes(
    ord("d") if 48 <= b <= 57 else ord("A") if 65 <= b <= 90 else ord("x")
    for b in range(256)
)
_CARD_QUICK = b"d" * 13
_IBAN_QUICK = b"AAdd"

_CARD_RUN = re.compile(r"(?<![0-9])[0-9]+(?:[ -][0-9]+)*")
_DIGITS = re.compile(r"[0-9]")
_JSON_STRING = re.compile(r'"(?:[^"\\]|\\.)*"', re.DOTALL)

_ATEXT = r"[\w!#$%&'*+/=?^`{|}~-]"
_LOCAL = re.compile(rf"{_ATEXT}+(?:\.{_ATEXT}+)*\Z")
_DOMAIN = re.compile(
    r"(?:[^\W_](?:[\w-]{0,61}[^\W_])?\.)+(?:[^\W\d_]{2,63}|xn--[a-z0-9-]{1,59})",
    re.IGNORECASE,
)

_IBAN_RE = re.compile(r"(?<![A-Za-z0-9])[A-Z]{2}[0-9]{2}(?: ?[A-Z0-9]){11,30}")
_IBAN_COUNTRIES = frozenset(
    # The SWIFT IBAN registry, and the national (experimental) formats in use.
    "AD AE AL AO AT AZ BA BE BF BG BH BI BJ BR BY CF CG CH CI CM CR CV CY CZ "
    "DE DJ DK DO DZ EE EG ES FI FK FO FR GA GB GE GI GL GQ GR GT GW HN HR HU "
    "IE IL IQ IR IS IT JO KM KW KZ LB LC LI LT LU LV LY MA MC MD ME MG MK ML "
    "MN MR MT MU MZ NE NI NL NO OM PK PL PS PT QA RO RS RU SA SC SD SE SI SK "
    "SM SN SO ST SV TD TG TL TN TR UA VA VG XK YE".split()
)

_LUHN_DOUBLE = (0, 2, 4, 6, 8, 1, 3, 5, 7, 9)


def _luhn(digits: str) -> bool:
    total = 0
    double = False
    for ch in reversed(digits):
        d = ord(ch) - 48
        total += _LUHN_DOUBLE[d] if double else d
        double = not double
    return total % 10 == 0


def _iban_valid(chars: str) -> bool:
    if chars[:2] not in _IBAN_COUNTRIES:
        return False
    moved = chars[4:] + chars[:4]
    return int("".join(str(int(c, 36)) for c in moved)) % 97 == 1


def _card_spans(value: str, spans: list[tuple[int, int, int]]) -> None:
    for run in _CARD_RUN.finditer(value):
        start, end = run.span()
        if end - start < 13:
            continue
        text = run.group()
        if text.isdigit():
            if end - start <= 19 and _luhn(text):
                spans.append((start, end, _CARD))
            continue
        groups: list[tuple[int, int]] = []
        pos = start
        for part in re.split("[ -]", text):
            groups.append((pos, pos + len(part)))
            pos += len(part) + 1
        _card_windows(value, groups, spans)


def _card_windows(
    value: str, groups: list[tuple[int, int]], spans: list[tuple[int, int, int]]
) -> None:
    """Find cards in a run of digit groups, at group boundaries."""
    i = 0
    n = len(groups)
    while i < n:
        found = False
        if groups[i][1] - groups[i][0] >= 4:
            count = 0
            ends = []
            for j in range(i, n):
                size = groups[j][1] - groups[j][0]
                if size < 3 or count + size > 19:
                    break
                count += size
                if count >= 13:
                    ends.append(j)
            for j in reversed(ends):
                start, end = groups[i][0], groups[j][1]
                digits = value[start:end].replace(" ", "").replace("-", "")
                if _luhn(digits):
                    spans.append((start, end, _CARD))
                    i = j + 1
                    found = True
                    break
        if not found:
            i += 1


def _email_spans(value: str, spans: list[tuple[int, int, int]]) -> None:
    at = value.find("@")
    floor = 0
    while at >= 0:
        domain = _DOMAIN.match(value, at + 1, at + 256)
        if domain is not None and at > floor:
            local = _LOCAL.search(value, max(floor, at - 64), at)
            if local is not None:
                spans.append((local.start(), domain.end(), _EMAIL))
                floor = domain.end()
                at = value.find("@", floor)
                continue
        at = value.find("@", at + 1)


def _iban_spans(value: str, spans: list[tuple[int, int, int]]) -> None:
    pos = 0
    search = _IBAN_RE.search
    while True:
        m = search(value, pos)
        if m is None:
            return
        start, end = m.span()
        text = m.group()
        ends = [end]
        if " " in text:
            ends += [start + i for i in range(len(text) - 1, 14, -1) if text[i] == " "]
        for stop in ends:
            if stop < len(value) and (value[stop].isalnum() and value[stop].isascii()):
                continue
            chars = value[start:stop].replace(" ", "")
            if len(chars) >= 15 and _iban_valid(chars):
                spans.append((start, stop, _IBAN))
                pos = stop
                break
        else:
            pos = start + 1


def _render(segment: str, kind: int, mode: int) -> str:
    if kind == _CARD:
        digits = sum(1 for c in segment if "0" <= c <= "9")
        mask = "0" if mode == NUMERIC or mode == JSON else "*"
        out = []
        seen = 0
        for c in segment:
            if "0" <= c <= "9":
                seen += 1
                out.append(c if seen > digits - 4 else mask)
            else:
                out.append(c)
        if mode == JSON:
            # Outside a string, a card is a bare number: no leading zeros.
            return "".join(out).lstrip("0") or "0"
        return "".join(out)
    if mode == NUMERIC:
        return _DIGITS.sub("0", segment)
    if kind == _EMAIL:
        at = segment.rindex("@")
        tld = segment[at + 1 :].rsplit(".", 1)[-1]
        return f"{segment[0]}***@***.{tld}"
    if kind == _IBAN:
        total = len(segment) - segment.count(" ")
        out = []
        seen = 0
        for c in segment:
            if c == " ":
                out.append(c)
                continue
            seen += 1
            out.append(c if seen <= 2 or seen > total - 4 else "*")
        return "".join(out)
    return "*" * len(segment)


class ValueDetectors:
    """
    The built-in detectors and user patterns of one session's rules.

    @ivar scans_values: whether there is anything to look for.
    @ivar has_patterns: whether there are user patterns (which no
        pre-check can rule out).
    """

    def __init__(
        self, detectors: Iterable[str], patterns: Iterable[re.Pattern[str]]
    ) -> None:
        detectors = frozenset(detectors)
        unknown = detectors - DETECTORS
        if unknown:
            raise ValueError(f"unknown detectors {unknown}")
        self._card = "card" in detectors
        self._email = "email" in detectors
        self._iban = "iban" in detectors
        self._patterns = tuple(patterns)
        self._quick = (self._card, self._email, self._iban) != (False,) * 3
        self.scans_values = bool(detectors or self._patterns)
        self.has_patterns = bool(self._patterns)

    def might_match(self, raw: bytes) -> bool:
        """
        Whether the text C{raw} (in any ASCII-compatible encoding) might
        hold something to mask: C{False} means L{mask} would find nothing.
        Always C{True} when user patterns are configured.
        """
        if self._patterns:
            return True
        return self._quick and self.candidates(raw) != 0

    def candidates(self, raw: bytes) -> int:
        """
        Which detectors might find something in C{raw} (or in any part of
        it): a bit set for L{mask}, 0 if none.
        """
        found = 0
        if self._email and b"@" in raw:
            found = 1
        if self._card or self._iban:
            classes = raw.translate(_CLASSES, b" -")
            if self._card and _CARD_QUICK in classes:
                found |= 2
            if self._iban and _IBAN_QUICK in classes:
                found |= 4
        return found

    def mask_text(self, value: str) -> tuple[str, int]:
        """
        Mask every detected occurrence in C{value}.

        @return: the masked text and the number of occurrences masked.
        """
        return self.mask(value, TEXT)

    def mask(
        self,
        value: str,
        mode: int = TEXT,
        keep: str = "",
        candidates: int | None = None,
    ) -> tuple[str, int]:
        """
        Mask every detected occurrence in C{value}, rendered for C{mode}
        (L{TEXT}, L{NUMERIC} or L{JSON}).

        @param keep: characters that pattern matches never replace (the
            structure of text holding several values, such as a COPY row).
        @param candidates: L{candidates} of C{value} or of text holding
            it, if already known.
        @return: the masked text and the number of occurrences masked.
        """
        out, hits = self._mask_once(value, mode, keep, candidates)
        if hits:
            # What was found can hide another match that only shows once
            # the first is masked ("a@b.coma@b.com" reads as one address
            # with the TLD "coma"): mask again until nothing more shows.
            for _ in range(3):
                again, more = self._mask_once(out, mode, keep, None)
                if not more or again == out:
                    break
                out, hits = again, hits + more
            else:
                # Still finding more: the whole value, kept valid for its mode.
                if mode == NUMERIC:
                    out = _DIGITS.sub("0", out)
                elif mode == JSON:
                    out = '"' + "*" * len(out) + '"'
                else:
                    out = "*" * len(out)
        return out, hits

    def _mask_once(
        self, value: str, mode: int, keep: str, candidates: int | None
    ) -> tuple[str, int]:
        spans: list[tuple[int, int, int]] = []
        if self._quick:
            found = (
                self.candidates(value.encode("utf-8", "surrogatepass"))
                if candidates is None
                else candidates
            )
            if found & 4:
                _iban_spans(value, spans)
            if found & 2:
                _card_spans(value, spans)
            if found & 1:
                _email_spans(value, spans)
        for pattern in self._patterns:
            for m in pattern.finditer(value):
                if m.end() > m.start():
                    spans.append((m.start(), m.end(), _PATTERN))
        if not spans:
            return value, 0
        spans.sort(key=lambda s: (s[0], -s[1]))
        merged = [spans[0]]
        for start, end, kind in spans[1:]:
            last_start, last_end, last_kind = merged[-1]
            if start < last_end:
                # Overlapping matches of different kinds (even one inside
                # the other: a pattern inside an address's shown TLD) are
                # masked as one span of "*".
                if end > last_end or kind != last_kind:
                    merged[-1] = (last_start, max(end, last_end), _MERGED)
                continue
            merged.append((start, end, kind))
        strings = None
        out = []
        pos = 0
        for start, end, kind in merged:
            out.append(value[pos:start])
            segment = value[start:end]
            if mode == JSON and kind == _CARD:
                if strings is None:
                    strings = [m.span() for m in _JSON_STRING.finditer(value)]
                if any(a < start and end < b for a, b in strings):
                    out.append(_render(segment, kind, TEXT))
                    pos = end
                    continue
            if keep and kind >= _PATTERN and mode != NUMERIC:
                out.append("".join(c if c in keep else "*" for c in segment))
            else:
                out.append(_render(segment, kind, mode))
            pos = end
        out.append(value[pos:])
        return "".join(out), len(merged)
