"""
The statements a PostgreSQL session's recording shows its client sent, as
the gateway indexes them: for C{gatehouse index rebuild}
(L{gatehouse.recording.index_check}).
"""

from __future__ import annotations

from collections.abc import Iterable

from gatehouse.protocols.postgres import codec
from gatehouse.protocols.postgres.commands import classify_text
from gatehouse.protocols.postgres.replay import _ClientStream
from gatehouse.recording.format import Direction, Record, RecordType

__all__ = ["recorded_commands"]


def recorded_commands(
    records: Iterable[Record],
) -> list[tuple[int, str, str, tuple[str, ...], str | None]]:
    """
    Each statement of each Query and Parse the client sent, in order:
    (seq of the record that completed its message, kind, text, objects,
    shape).  The shape (None for a text that has none) lets the caller
    index each allowed shape once, as the gateway does.
    """
    found: list[tuple[int, str, str, tuple[str, ...], str | None]] = []
    encoding = "utf-8"
    seq = 0

    def startup(event: object, size: int) -> None:
        nonlocal encoding
        if isinstance(event, codec.StartupMessage):
            client_encoding = event.as_dict().get("client_encoding")
            if client_encoding:
                try:
                    encoding = codec.python_encoding(client_encoding)
                except Exception:
                    pass

    def message(type_: int, body: bytes) -> None:
        if type_ == codec.FrontendType.PASSWORD:
            return
        try:
            decoded = codec.decode_frontend(type_, body, encoding)
        except codec.ProtocolViolation:
            return
        if isinstance(decoded, codec.Query):
            sql = decoded.sql
        elif isinstance(decoded, codec.Parse):
            sql = decoded.query
        else:
            return
        classified = classify_text(sql)
        for command in classified.commands:
            found.append(
                (
                    seq,
                    command.kind,
                    command.text,
                    tuple(command.objects),
                    classified.shape or sql,
                )
            )

    stream = _ClientStream(startup, message, lambda reason: None)
    for record in records:
        if (
            record.type == RecordType.DATA
            and record.direction == Direction.CLIENT_TO_GATEWAY
        ):
            seq = record.seq
            stream.feed(record.payload)
    return found
