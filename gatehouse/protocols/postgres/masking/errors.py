"""
Masking the fields of errors and notices, which quote values.
"""

from __future__ import annotations

import re

#: fields that never carry a value: severity, SQLSTATE, positions, the
#: server's source file, line and routine
_FIELD_CODES_KEPT = frozenset({b"S", b"V", b"C", b"P", b"p", b"F", b"L", b"R"})
#: fields that carry quoted values in the errors of L{_QUOTING_CLASSES}
_FIELD_CODES_STRICT = frozenset({b"M", b"D", b"H", b"W", b"q"})
#: SQLSTATE classes whose messages quote values: data exceptions (an
#: invalid cast prints the value) and integrity violations (DETAIL prints
#: the key or the failing row)
_QUOTING_CLASSES = frozenset({b"22", b"23"})
#: SQLSTATEs of failed name lookups, which quote the name looked up -- a
#: value when a query casts one (C{ssn::regclass}, C{current_setting(x)},
#: C{pg_read_file(x)})
_QUOTING_STATES = frozenset(
    {b"42P01", b"42704", b"42883", b"3F000", b"3D000", b"42602", b"58P01"}
)
_WITHHELD = "***"
#: the quotation marks of PostgreSQL's messages in every language it is
#: translated to (lc_messages of the server or of the gateway's role)
_QUOTES = re.compile(
    '["\u00ab\u00bb\u2018\u2019\u201a\u201c\u201d\u201e\u300c\u300d\u300e\u300f]'
)
_KEY_DETAIL = re.compile(
    r'(Key \((?:[^")]|"[^"]*")*\)=\().*?(\) (?:already exists|is not present in table'
    r' "[^"]*"|is still referenced from table "[^"]*")\.)\Z',
    re.DOTALL,
)


def _withhold_quoted(code: bytes, text: str) -> str:
    """
    Mask the values in one field of an error that quotes them, keeping the
    message's shape: in the message and hint, everything from the first
    double quote to the last; DETAIL's C{Key (...)=(...)} and C{Failing
    row contains (...)} values; and every other DETAIL, CONTEXT line and
    internal query whole.
    """
    if code == b"M" or code == b"H":
        quotes = _QUOTES.finditer(text)
        first = next(quotes, None)
        if first is None:
            return text
        last = first
        for last in quotes:  # noqa: B007 -- the last one is wanted
            pass
        if last is first:
            return text[: first.end()] + _WITHHELD
        return text[: first.end()] + _WITHHELD + text[last.start() :]
    if code == b"D":
        m = _KEY_DETAIL.match(text)
        if m is not None:
            return m.group(1) + _WITHHELD + m.group(2)
        if text.startswith("Failing row contains ("):
            return "Failing row contains (" + _WITHHELD + ")."
        return _WITHHELD
    if code == b"W":
        # PL/pgSQL's own context lines name a function and a line; every
        # other line (SQL statement "...", JSON data, COPY ... column x:
        # "...") may quote a value.
        return "\n".join(
            line
            if line.startswith("PL/pgSQL function ") and '"' not in line
            else _WITHHELD
            for line in text.split("\n")
        )
    return _WITHHELD
