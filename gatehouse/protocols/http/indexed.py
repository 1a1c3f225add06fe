"""
The commands an HTTP session's recording shows its client sent, as the
gateway indexes them: for C{gatehouse index rebuild} and C{index check}
(L{gatehouse.recording.index_check}).  Each C{http-request} event is one
request, read again as the listener read it (its flavour's C{describe}).
"""

from __future__ import annotations

import json
from collections.abc import Iterable

from gatehouse.protocols.http.flavour import IHTTPFlavour, Refused, RequestHead
from gatehouse.recording.format import Record, RecordType

__all__ = ["recorded_commands", "requests_of"]

Found = tuple[int, str, str, tuple[str, ...], str | None]


def requests_of(records: Iterable[Record], flavour: IHTTPFlavour) -> list[Found]:
    """
    Each request's commands, in order: (seq of its C{http-request} event,
    kind, text, objects, the text again: the key an allowed command is
    indexed once by).
    """
    found: list[Found] = []
    for record in records:
        if record.type != RecordType.EVENT:
            continue
        try:
            event = json.loads(record.payload)
        except ValueError:
            continue
        if not isinstance(event, dict) or event.get("event") != "http-request":
            continue
        method, target = event.get("method"), event.get("target")
        if not isinstance(method, str) or not isinstance(target, str):
            continue
        headers = tuple(
            (str(n).encode("latin-1"), str(v).encode("latin-1"))
            for n, v in event.get("headers") or ()
        )
        described = flavour.describe(
            RequestHead(method, target.encode("latin-1"), headers)
        )
        if isinstance(described, Refused):
            continue
        for c in described.commands:
            found.append((record.seq, c.kind, c.text, tuple(c.objects), c.text))
    return found


def recorded_commands(records: Iterable[Record]) -> list[Found]:
    """The plain http protocol's requests (see L{requests_of})."""
    from gatehouse.protocols.http.plain import PlainHTTP

    return requests_of(records, PlainHTTP())
