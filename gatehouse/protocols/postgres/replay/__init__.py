"""
Replay a recorded PostgreSQL session as a psql-like transcript.

The recording holds the bytes that crossed, in chunks of arbitrary size:
what the client sent (L{Direction.CLIENT_TO_GATEWAY}) and what it received
(L{Direction.GATEWAY_TO_CLIENT}), possibly the gateway's own startup with
the target (the two upstream directions), and the gateway's events.  Each
direction is reassembled on its own with the sans-IO codec; messages are
rendered as they complete, so the two directions interleave in record
order, which is the order in which they crossed.

The transcript shows statements (C{=> SELECT ...}), extended-protocol
steps (C{=> [prepared stmt "s1"] ...}, C{   bind: $1='42'}), results as
aligned tables, command tags, errors with their SQLSTATE, notices,
notifications, COPY summaries, the time each statement took, and the
gateway's events as C{-- gateway: ...} lines.  Password messages are never
shown, whatever they hold.

Everything printed is escaped: control characters (a terminal escape
sequence in a column value, say) are shown as C{\\x1b}, never written out.
Malformed or truncated streams do not stop the replay: what can be read is
rendered, and the point where a stream stops making sense is noted.

Importing this module registers L{render_postgres} for protocol
C{"postgres"} with L{gatehouse.recording.render}.

The package's modules, by job: C{cells} (limits; values, cells and times
as shown), C{results} (result tables and COPY previews), C{streams} (each
direction reassembled into messages), C{transcript} (records in, lines
out).  Every name is importable from
C{gatehouse.protocols.postgres.replay}.
"""

# The package re-exports every name of the module it replaced.
# ruff: noqa: F401

from __future__ import annotations

from collections.abc import Iterable

from gatehouse.recording.format import Record
from gatehouse.recording.render import (
    TextOutput,
    full_output,
    full_replay,
    register_renderer,
)

from .cells import (
    _AUTH_NAMES,
    _INT_OIDS,
    _MS,
    _NUMERIC_OIDS,
    _PASSWORD,
    _TEXT_OIDS,
    COPY_PREVIEW_LINES,
    MAX_HELD_LINES,
    MAX_NAMES,
    MAX_PENDING,
    MAX_ROWS,
    MAX_SQL,
    MAX_VALUE,
    _binary,
    _clean,
    _field,
    _format_time,
    _format_wall,
    _hex,
    _pad,
    _shorten,
    _sql_literal,
    _width,
)
from .results import (
    _Copy,
    _Result,
)
from .streams import (
    _ClientStream,
    _feed_frames,
    _ServerStream,
)
from .transcript import (
    _CLIENT_HANDLERS,
    _SERVER_HANDLERS,
    _UPSTREAM_FIELDS,
    _json,
    _label,
    _Named,
    _params_text,
    _Pending,
    _prepared,
    _remember,
    _Transcript,
    _type_name,
    _with_formats,
)

__all__ = ["MAX_ROWS", "render_postgres"]


def render_postgres(
    records: Iterable[Record], out: TextOutput, *, full: bool | None = None
) -> None:
    """
    Write a recorded PostgreSQL session to C{out} as a psql-like
    transcript (see the module docstring).  A damaged or truncated
    recording is rendered as far as it can be; only C{out}'s own errors
    propagate.

    @param full: show every row and value whole; None: as L{render} was
        asked (L{full_replay}).
    """
    with full_output(full_replay() if full is None else full):
        transcript = _Transcript(out)
        for record in records:
            transcript.record(record)
        transcript.finish()


register_renderer("postgres", render_postgres)
