"""
Globally unique, time-ordered session ids in the UUIDv7 layout (RFC 9562).

Gateways create ids without coordinating: 48 bits of Unix milliseconds,
then a 12-bit counter that keeps ids from one process ordered within a
millisecond, then 62 random bits.

Order is kept across small steps of the clock (within a millisecond, or a
clock stepped back a little); a clock stepped back further than
L{MAX_BACKSTEP_MS} starts again from its own time, because the id must name
when the session started: the verifier holds segment 0's wall start to the
id's time within a minute.
"""

from __future__ import annotations

import os
import threading
import time
import uuid

_lock = threading.Lock()
_last_ms = -1
_counter = 0

#: how far back (ms) the clock may step and ids still continue the old order
MAX_BACKSTEP_MS = 1000


def new_session_id(now: float | None = None) -> uuid.UUID:
    """
    A new UUIDv7.

    @param now: Unix time in seconds (for tests with a fake clock); the
        system clock when omitted.
    """
    global _last_ms, _counter
    ms = int((time.time() if now is None else now) * 1000)
    with _lock:
        if _last_ms - MAX_BACKSTEP_MS < ms <= _last_ms:
            # Clock did not advance (or went back): stay ordered by counting.
            _counter += 1
            if _counter > 0xFFF:
                _last_ms += 1
                _counter = 0
            ms = _last_ms
        else:
            _last_ms = ms
            _counter = 0
        counter = _counter
    rand = int.from_bytes(os.urandom(8), "big") & ((1 << 62) - 1)
    value = (ms & ((1 << 48) - 1)) << 80
    value |= 0x7 << 76
    value |= counter << 64
    value |= 0b10 << 62
    value |= rand
    return uuid.UUID(int=value)


def session_time(session_id: uuid.UUID) -> float:
    """The Unix time, in seconds, embedded in a UUIDv7."""
    return (session_id.int >> 80) / 1000.0


def is_session_id(text: str) -> bool:
    """Whether C{text} is the canonical form of a UUIDv7."""
    try:
        value = uuid.UUID(text)
    except ValueError:
        return False
    return value.version == 7 and str(value) == text.lower()
