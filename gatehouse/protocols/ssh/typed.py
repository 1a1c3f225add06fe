"""
Lines typed into an interactive SSH shell, from the client's keystrokes.

In a PTY session the gateway sees keystrokes, not the shell's parse: what
the shell runs depends on its line editor, history, completion and the
program in the foreground.  L{TypedLines} replays the common line-editing
keys (backspace, Ctrl-U, Ctrl-W, Ctrl-K, Ctrl-A/E, left/right arrows,
Delete, Ctrl-C) over the client's bytes and gives each line submitted with
Enter.  A line whose text the gateway cannot know (history recall, tab
completion, reverse search, an unknown escape sequence, a line past the
cap) is marked inexact.  Best effort, for the session index only: typed
input is recorded and indexed, never blocked (docs/policy.md, "SSH").

Sans-IO: bytes in, lines out; no clock, no transport.
"""

from __future__ import annotations

import codecs

import attrs

__all__ = ["MAX_ESCAPE", "MAX_TYPED_LINE", "TypedLine", "TypedLines"]

#: Characters kept of one line; past it, the line is inexact.
MAX_TYPED_LINE = 4096
#: An escape sequence longer than this is abandoned (and the line inexact).
MAX_ESCAPE = 32

_ESC = "\x1b"
_PASTE_START = "[200~"
_PASTE_END = "[201~"
# CSI / SS3 finals the line editor acts on; others make the line inexact.
_LEFT = frozenset({"[D", "OD"})
_RIGHT = frozenset({"[C", "OC"})
_HOME = frozenset({"[H", "OH", "[1~", "[7~"})
_END = frozenset({"[F", "OF", "[4~", "[8~"})
_DELETE = "[3~"
#: Sequences that change nothing in the line (focus, insert key).
_HARMLESS = frozenset({"[I", "[O", "[2~"})


@attrs.frozen
class TypedLine:
    """
    One line submitted with Enter.

    @ivar text: the line as the keystrokes edited it.
    @ivar exact: False when the shell may have run something else
        (history, completion, search, an unknown key, truncation).
    """

    text: str
    exact: bool = True


class TypedLines:
    """
    Keystrokes in (L{feed}), submitted lines out.  Memory is bounded by
    C{max_line} characters of line and L{MAX_ESCAPE} of escape sequence.
    """

    def __init__(self, max_line: int = MAX_TYPED_LINE) -> None:
        self.max_line = max_line
        self._decoder = codecs.getincrementaldecoder("utf-8")("replace")
        self._line: list[str] = []
        self._cursor = 0
        self._exact = True
        self._escape: str | None = None  # the sequence after ESC, while in one
        self._paste = False
        self._skipping = False

    def feed(self, data: bytes) -> list[TypedLine]:
        """The lines C{data} completes (none while a line is being typed)."""
        done: list[TypedLine] = []
        for char in self._decoder.decode(data):
            if self._escape is not None:
                self._escape_char(char)
            elif char == _ESC:
                self._escape = ""
            elif char in "\r\n":
                self._submit(done)
            elif self._skipping and " " <= char <= "\x7e":
                # the rest of an over-long escape sequence
                self._skipping = not ("\x40" <= char <= "\x7e")
            elif self._paste:
                self._skipping = False
                if char == "\t" or " " <= char != "\x7f":
                    self._insert(char)
            else:
                self._skipping = False
                self._key(char)
        return done

    def end(self) -> TypedLine | None:
        """The line being typed when the session ended, if any (inexact)."""
        text = "".join(self._line)
        self._reset()
        return TypedLine(text, exact=False) if text.strip() else None

    @property
    def pending(self) -> int:
        """Characters held: the line being typed and any escape sequence."""
        return len(self._line) + len(self._escape or "")

    # -- editing -----------------------------------------------------------

    def _reset(self) -> None:
        self._line = []
        self._cursor = 0
        self._exact = True

    def _submit(self, done: list[TypedLine]) -> None:
        text = "".join(self._line)
        # an empty inexact line ran something: a recalled history line
        if text.strip() or not self._exact:
            done.append(TypedLine(text, self._exact))
        self._reset()

    def _insert(self, char: str) -> None:
        if len(self._line) >= self.max_line:
            self._exact = False
            return
        self._line.insert(self._cursor, char)
        self._cursor += 1

    def _key(self, char: str) -> None:
        if char >= " " and char != "\x7f":
            self._insert(char)
        elif char in "\x7f\x08":  # backspace
            if self._cursor:
                self._cursor -= 1
                del self._line[self._cursor]
        elif char == "\x15":  # Ctrl-U: kill to the start
            del self._line[: self._cursor]
            self._cursor = 0
        elif char == "\x0b":  # Ctrl-K: kill to the end
            del self._line[self._cursor :]
        elif char == "\x17":  # Ctrl-W: kill the word before the cursor
            start = self._cursor
            while start and self._line[start - 1] == " ":
                start -= 1
            while start and self._line[start - 1] != " ":
                start -= 1
            del self._line[start : self._cursor]
            self._cursor = start
        elif char == "\x03":  # Ctrl-C: the line is discarded
            self._reset()
        elif char == "\x01":  # Ctrl-A
            self._cursor = 0
        elif char == "\x05":  # Ctrl-E
            self._cursor = len(self._line)
        elif char == "\x02":  # Ctrl-B
            self._cursor = max(0, self._cursor - 1)
        elif char == "\x06":  # Ctrl-F
            self._cursor = min(len(self._line), self._cursor + 1)
        elif char == "\x04":  # Ctrl-D: delete under the cursor (EOF if empty)
            if self._cursor < len(self._line):
                del self._line[self._cursor]
        elif char in "\x0c\x07\x00":  # clear screen, bell, NUL
            pass
        else:  # Tab (completion), Ctrl-R (search), Ctrl-P/N (history), ...
            self._exact = False

    def _escape_char(self, char: str) -> None:
        sequence = (self._escape or "") + char
        if len(sequence) > MAX_ESCAPE:
            self._escape = None
            self._exact = False
            self._skipping = True
            return
        if len(sequence) == 1 and char not in "[O":
            # ESC and one key: Alt-something (Alt-B, Alt-., ...)
            self._escape = None
            self._exact = False
            return
        final = len(sequence) >= 2 and (sequence[0] == "O" or "\x40" <= char <= "\x7e")
        if not final:
            self._escape = sequence
            return
        self._escape = None
        self._sequence(sequence)

    def _sequence(self, sequence: str) -> None:
        if sequence == _PASTE_START:
            self._paste = True
        elif sequence == _PASTE_END:
            self._paste = False
        elif sequence in _LEFT:
            self._cursor = max(0, self._cursor - 1)
        elif sequence in _RIGHT:
            self._cursor = min(len(self._line), self._cursor + 1)
        elif sequence in _HOME:
            self._cursor = 0
        elif sequence in _END:
            self._cursor = len(self._line)
        elif sequence == _DELETE:
            if self._cursor < len(self._line):
                del self._line[self._cursor]
        elif sequence not in _HARMLESS:
            self._exact = False  # up/down (history), function keys, ...
