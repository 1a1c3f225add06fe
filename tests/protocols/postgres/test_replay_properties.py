"""
Properties of the PostgreSQL replay: whatever a recording holds (noise
records of every kind between the streams, streams cut into any chunks,
bytes flipped, dropped or cut off), rendering it never raises and never
trips over its own code ("could not render"), never writes a control
character, and never loses what it could read: every statement and result
row of the intact part of the streams is in the transcript, in order.

Each property counts the examples that reached its assertions, and the
test asserts they did (a property that filters everything away fails).
"""

from __future__ import annotations

import io
import json
import string

import attrs
from hypothesis import event, given, settings
from hypothesis import strategies as st

from gatehouse.protocols.postgres import codec as c
from gatehouse.recording.format import Direction, Record, RecordType
from gatehouse.recording.render import render
from tests.protocols.postgres.test_replay import (
    BACKEND_SAMPLES,
    FRONTEND_SAMPLES,
    Recording,
    ReplayTestCase,
)

#: statement text and values that are shown as they are (no escaping)
PLAIN = string.ascii_letters + string.digits + " ,.()*=_-"

_STATEMENT = st.text(PLAIN, min_size=1, max_size=30).map(lambda s: f"SELECT {s}x")
_VALUE = st.text(PLAIN.replace(" ", ""), min_size=1, max_size=12)

#: one exchange: a statement and the rows of its one-column result
_EXCHANGE = st.tuples(_STATEMENT, st.lists(_VALUE, max_size=4))

#: records that are not part of the two client streams (noise)
_NOISE = st.one_of(
    # an unknown record type, any direction, any payload
    st.tuples(st.integers(5, 255), st.integers(0, 255), st.binary(max_size=30)),
    # events with any payload: not JSON, JSON that is no object, odd fields
    st.tuples(
        st.just(RecordType.EVENT),
        st.integers(0, 255),
        st.one_of(
            st.binary(max_size=30),
            st.sampled_from([b"[]", b"null", b'{"event": 5}', b'{"event": "x"}']),
            st.dictionaries(
                st.text(max_size=5), st.one_of(st.text(max_size=5), st.none())
            ).map(lambda d: json.dumps({"event": "noise", **d}).encode()),
        ),
    ),
    # a second META (ignored), garbage there
    st.tuples(st.just(RecordType.META), st.just(0), st.binary(max_size=30)),
    # the gateway's own startup with the target, and directions unknown
    st.tuples(
        st.just(RecordType.DATA),
        st.sampled_from(
            [Direction.GATEWAY_TO_UPSTREAM, Direction.UPSTREAM_TO_GATEWAY, 7, 200]
        ),
        st.binary(max_size=40),
    ),
)


def exchanges_recording(
    exchanges: list, size: int, noise: list, positions: list
) -> list[Record]:
    """
    A logged-in session running C{exchanges}, both streams cut into
    C{size}-byte DATA records, with C{noise} records inserted at
    C{positions} (indices into the stream records, modulo their count).
    """
    rec = Recording(split=False).login()
    for n, (sql, values) in enumerate(exchanges):
        mono = (10 + n) * 1_000_000
        query = c.Query(sql).encode()
        answer = b"".join(
            m.encode()
            for m in [
                c.RowDescription([c.FieldDescription("v")]),
                *(c.DataRow([v.encode()]) for v in values),
                c.CommandComplete(f"SELECT {len(values)}"),
                c.ReadyForQuery("I"),
            ]
        )
        for i in range(0, len(query), size):
            rec.data(Direction.CLIENT_TO_GATEWAY, query[i : i + size], mono)
        for i in range(0, len(answer), size):
            rec.data(Direction.GATEWAY_TO_CLIENT, answer[i : i + size], mono)
    records = list(rec.records)
    for (type_, direction, payload), at in zip(noise, positions, strict=False):
        where = 1 + at % len(records)  # never before the META
        records.insert(where, Record(0, type_, direction, 0, 0, payload))
    return [attrs.evolve(r, seq=seq) for seq, r in enumerate(records)]


def transcript(records: list[Record]) -> str:
    """The transcript as C{gatehouse replay} writes it (through L{render})."""
    out = io.StringIO()
    render(records, out)
    return out.getvalue()


def shown_in_order(text: str, lines: list[str]) -> bool:
    """Whether every one of C{lines} is a line of C{text}, in this order."""
    at = 0
    rendered = text.split("\n")
    for line in lines:
        try:
            at = rendered.index(line, at) + 1
        except ValueError:
            return False
    return True


def expected_lines(exchanges: list) -> list[str]:
    """The lines each statement and its rows must show."""
    lines = []
    for sql, values in exchanges:
        lines.append(f"=> {sql}")
        lines += [f" {v}" for v in values]
        lines.append(f"({len(values)} row{'' if len(values) == 1 else 's'})")
    return lines


def assert_sound(case: ReplayTestCase, text: str) -> None:
    """No internal error noted, nothing unprintable written."""
    case.assertNotIn("could not render", text)
    case.assertTrue(all(ch.isprintable() or ch in "\n\t" for ch in text), text)


class ReplayPropertyTests(ReplayTestCase):
    """The replay of damaged and noisy recordings."""

    def test_noise_loses_nothing(self):
        """
        Records of any other kind between the streams' records (unknown
        types and directions, broken events, a second META, the target's
        streams) do not hide a statement or a row.
        """
        reached = []

        @settings(max_examples=150, deadline=None)
        @given(
            st.lists(_EXCHANGE, min_size=1, max_size=5),
            st.integers(1, 23),
            st.lists(_NOISE, max_size=12),
            st.lists(st.integers(0, 10_000), min_size=12, max_size=12),
        )
        def check(exchanges, size, noise, positions):
            records = exchanges_recording(exchanges, size, noise, positions)
            text = transcript(records)
            assert_sound(self, text)
            self.assertTrue(
                shown_in_order(text, expected_lines(exchanges)),
                f"{expected_lines(exchanges)}\n---\n{text}",
            )
            event(f"noise records: {min(len(noise), 3)}+")
            reached.append(len(noise))

        check()
        self.assertGreaterEqual(len(reached), 100)
        self.assertTrue(any(reached), "no example had noise")

    def test_damage_keeps_what_came_before(self):
        """
        A client stream damaged at some byte (flipped, dropped, or the
        recording cut off there): every statement that ended before that
        byte is still shown, in order, and the replay ends cleanly.
        """
        reached = []

        @settings(max_examples=150, deadline=None)
        @given(
            st.lists(_EXCHANGE, min_size=1, max_size=5),
            st.integers(1, 23),
            st.integers(0, 10_000),
            st.sampled_from(["flip", "drop", "cut"]),
            st.integers(1, 255),
        )
        def check(exchanges, size, offset, how, xor):
            records = exchanges_recording(exchanges, size, [], [])
            stream = b"".join(
                r.payload
                for r in records
                if r.type == RecordType.DATA
                and r.direction == Direction.CLIENT_TO_GATEWAY
            )
            offset %= len(stream)
            seen = 0
            damaged = []
            for r in records:
                if not (
                    r.type == RecordType.DATA
                    and r.direction == Direction.CLIENT_TO_GATEWAY
                ):
                    damaged.append(r)
                    continue
                start, seen = seen, seen + len(r.payload)
                if how == "cut" and start >= offset:
                    break
                if start <= offset < seen:
                    data = bytearray(r.payload)
                    at = offset - start
                    if how == "flip":
                        data[at] ^= xor
                    else:
                        del data[at:]
                    r = attrs.evolve(r, payload=bytes(data))
                    if how == "cut":
                        damaged.append(r)
                        break
                damaged.append(r)
            text = transcript(damaged)
            assert_sound(self, text)
            # statements wholly before the damage, with their SQL only: the
            # answers that follow a damaged statement may be shown as its
            login = len(
                b"".join(
                    r.payload
                    for r in Recording(split=False).login().records
                    if r.type == RecordType.DATA
                    and r.direction == Direction.CLIENT_TO_GATEWAY
                )
            )
            end, intact = login, []
            for sql, _values in exchanges:
                end += len(c.Query(sql).encode())
                if end > offset:
                    break
                intact.append(f"=> {sql}")
            self.assertTrue(shown_in_order(text, intact), f"{intact}\n---\n{text}")
            event(f"{how}: {min(len(intact), 3)}+ intact statements")
            reached.append(len(intact))

        check()
        self.assertGreaterEqual(len(reached), 100)
        self.assertTrue(any(reached), "no example kept a statement")

    def test_any_messages_any_records(self):
        """
        Well-formed messages of both sides in any order, split across
        records of any type and direction: the replay never raises, never
        notes an internal error, and writes only printable text.
        """
        reached = []
        samples = FRONTEND_SAMPLES + BACKEND_SAMPLES

        @settings(max_examples=150, deadline=None)
        @given(
            st.lists(
                st.tuples(
                    st.integers(0, len(samples) - 1),
                    st.sampled_from(
                        [
                            (RecordType.DATA, Direction.CLIENT_TO_GATEWAY),
                            (RecordType.DATA, Direction.GATEWAY_TO_CLIENT),
                            (RecordType.DATA, Direction.GATEWAY_TO_UPSTREAM),
                            (RecordType.DATA, Direction.UPSTREAM_TO_GATEWAY),
                            (RecordType.EVENT, Direction.GATEWAY),
                            (RecordType.CLOSE, Direction.GATEWAY),
                            (RecordType.META, Direction.GATEWAY),
                        ]
                    ),
                    st.integers(0, 64),
                ),
                max_size=40,
            )
        )
        def check(steps):
            rec = Recording(split=False)
            rec.client(c.StartupMessage({"user": "u"}).encode())
            records = list(rec.records)
            for index, (type_, direction), cut in steps:
                sample = samples[index]
                data = sample if isinstance(sample, bytes) else sample.encode()
                piece = data[:cut] if cut else data
                if type_ != RecordType.DATA and b"hunter2" in piece:
                    # a password message is data; events and the rest are
                    # the gateway's own, shown as they are
                    continue
                records.append(Record(len(records), type_, direction, 0, 0, piece))
            text = transcript(records)
            assert_sound(self, text)
            self.assertNotIn("hunter2", text)
            reached.append(len(steps))

        check()
        self.assertGreaterEqual(len(reached), 100)
