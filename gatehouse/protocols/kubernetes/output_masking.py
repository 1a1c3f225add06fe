"""
The value detectors of masking rules (cards, e-mail, patterns) over the
text streams of an exec or attach, sans-IO.

A value can arrive split over several messages (a pipe's chunks, a
terminal's echo one key at a time), so text is masked a line at a time:
L{LineMasker} holds each stream's unfinished line until its newline
comes, the stream ends, it grows past a limit, or the holder asks for it
(L{LineMasker.flush}).  The relay uses two: one for what the client is
sent, flushed after a short quiet time so that prompts and echo still
show at once, and one for what is recorded, which waits for whole lines
so that a value typed a key at a time is masked in the recording too.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable
from typing import Any

__all__ = ["LineMasker"]

#: an unfinished line longer than this is released but for its tail
MAX_HELD = 64 * 1024

#: characters of a long line held back, so that a value crossing the
#: release is seen whole with what follows (longer than any value a
#: detector finds)
OVERLAP = 4096


class LineMasker:
    """
    Masks text streams (keyed by the caller: a channel, a SPDY stream)
    line by line with C{values} (an object with C{mask_text(str) ->
    (str, count)}); C{masked} counts the values masked.

    Bytes are read as UTF-8 with undecodable bytes kept as they are, and
    text without a detected value is released byte for byte unchanged.
    """

    def __init__(self, values: Any, limit: int = MAX_HELD) -> None:
        self._values = values
        self._limit = limit
        self._held: dict[Hashable, bytes] = {}
        self.masked = 0

    def feed(self, key: Hashable, data: bytes) -> bytes:
        """The next bytes of stream C{key}: what can be released now, masked."""
        buffer = self._held.pop(key, b"") + data
        end = buffer.rfind(b"\n")
        if end < 0:
            if len(buffer) <= self._limit:
                if buffer:
                    self._held[key] = buffer
                return b""
            return self._release_long(key, buffer)
        lines, rest = buffer[: end + 1], buffer[end + 1 :]
        if rest:
            self._held[key] = rest
        return self._mask(lines)

    def holding(self) -> bool:
        """Whether an unfinished line waits."""
        return bool(self._held)

    def held_keys(self) -> list[Hashable]:
        """The streams with an unfinished line."""
        return list(self._held)

    def flush(self, keys: Iterable[Hashable] | None = None) -> dict[Hashable, bytes]:
        """Release what is held (of C{keys}, or of every stream), masked."""
        released = {}
        for each in list(self._held) if keys is None else keys:
            held = self._held.pop(each, b"")
            if held:
                released[each] = self._mask(held)
        return released

    def _release_long(self, key: Hashable, buffer: bytes) -> bytes:
        """
        An unfinished line past the limit: release all but its last
        L{OVERLAP} characters, cut where no value crosses the cut (masking
        the part alone gives what masking the whole gives there), and hold
        the rest with what comes next.
        """
        text = buffer.decode("utf-8", "surrogateescape")
        whole, _ = self._values.mask_text(text)
        overlap = min(OVERLAP, self._limit // 4)
        cut = len(text) - overlap
        while overlap and cut >= len(text) // 2:
            head, count = self._values.mask_text(text[:cut])
            if whole.startswith(head):
                self._held[key] = text[cut:].encode("utf-8", "surrogateescape")
                self.masked += count
                return head.encode("utf-8", "surrogateescape")
            cut -= overlap
        return self._mask(buffer)

    def _mask(self, data: bytes) -> bytes:
        text = data.decode("utf-8", "surrogateescape")
        masked, count = self._values.mask_text(text)
        if not count:
            return data
        self.masked += count
        return masked.encode("utf-8", "surrogateescape")
