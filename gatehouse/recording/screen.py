"""
What a recorded terminal may do to the auditor's terminal during a replay.

A terminal replay writes what the client's terminal was sent, escape
sequences included, so that the auditor sees the screen the user saw.
Those bytes came from the target, which may have been hostile: some
sequences make a terminal answer as if typed (device status and
attribute reports, window reports), set the clipboard or the window title
(OSC), talk to the terminal's own programs (DCS, APC, PM, SOS), print, or
reset it.  L{ScreenFilter} passes what draws (text, cursor movement,
erasing, colours, scroll regions, the alternate screen and a few harmless
modes) and drops everything else; control characters it does not pass are
shown escaped, as L{TerminalSafe<gatehouse.recording.render.TerminalSafe>}
shows them.  L{ScreenFilter.finish} undoes the modes it let the recording
set, so the auditor's terminal is left as it was.

It is sans-IO and keeps state across chunks: a sequence cut between two
records is judged whole (and one that never ends is dropped, up to a
bound, then its rest shown as text).
"""

from __future__ import annotations

from gatehouse.recording.render import escape_char

__all__ = ["ScreenFilter"]

ESC = "\x1b"
BEL = "\x07"
_ST_C1 = "\x9c"
#: C0 controls passed as they are: newline, carriage return, tab, backspace, bell.
_PASSED_CONTROLS = frozenset("\n\r\t\b\x07")
#: CSI finals (no private prefix, no intermediates) that only draw.
_DRAWING_FINALS = frozenset("@ABCDEFGHIJKLMPSTXZ`adefgmr")
#: CSI finals passed only without parameters: save and restore the cursor.
_BARE_FINALS = frozenset("su")
#: DEC private modes (CSI ? n h/l) a replay may set: cursor keys, autowrap,
#: cursor blink and visibility, the alternate screen, bracketed paste.
_PRIVATE_MODES = frozenset({"1", "7", "12", "25", "47", "1047", "1048", "1049", "2004"})
#: ANSI modes (CSI n h/l): insert.
_ANSI_MODES = frozenset({"4"})
#: ESC + one character that only draws or moves the cursor.
_SHORT_ESCAPES = frozenset("78=>DEMH")
_CHARSETS = frozenset("B0AU")
_STRING_STARTS = frozenset("]PX^_")
MAX_SEQUENCE = 64
MAX_STRING = 4096

# Parser states.
_GROUND, _ESCAPE, _CSI, _CHARSET, _ESC_INTERMEDIATE, _STRING, _STRING_ESC = range(7)


class ScreenFilter:
    """
    Filters one terminal's output for replay on the auditor's terminal.

    @ivar dropped: how many sequences were left out.
    """

    def __init__(self) -> None:
        self.dropped = 0
        self._state = _GROUND
        self._pending: list[str] = []
        self._string_length = 0
        # What passed that changes the terminal's state, to undo at the end.
        self._set: set[str] = set()

    def feed(self, text: str) -> str:
        """The part of C{text} to write to the auditor's terminal."""
        out: list[str] = []
        for ch in text:
            self._char(ch, out)
        return "".join(out)

    def finish(self) -> str:
        """
        The end of the output: drop an unfinished sequence; return what
        resets the modes the output set (colours, scroll region, insert
        mode, cursor keys, keypad, autowrap, character set, bracketed
        paste, cursor visibility, the alternate screen).
        """
        if self._state != _GROUND:
            self._drop()
        undo = {
            "sgr": "\x1b[0m",
            "region": "\x1b[r",
            "insert": "\x1b[4l",
            "cursor-keys": "\x1b[?1l",
            "keypad": "\x1b>",
            "nowrap": "\x1b[?7h",
            "charset": "\x1b(B\x1b)B",
            "paste": "\x1b[?2004l",
            "hidden": "\x1b[?25h",
            "alternate": "\x1b[?1049l",
        }
        reset = "".join(seq for name, seq in undo.items() if name in self._set)
        self._set.clear()
        return reset

    # -- the state machine ------------------------------------------------

    def _drop(self) -> None:
        self.dropped += 1
        self._pending.clear()
        self._state = _GROUND

    def _pass(self, out: list[str]) -> None:
        out.append("".join(self._pending))
        self._pending.clear()
        self._state = _GROUND

    def _char(self, ch: str, out: list[str]) -> None:
        state = self._state
        if state == _GROUND:
            self._ground(ch, out)
        elif state == _STRING or state == _STRING_ESC:
            self._string(ch, out)
        elif ch == ESC:
            self._drop()  # a new sequence cuts the old one short
            self._ground(ch, out)
        elif ord(ch) < 0x20 or ch == "\x7f":
            # A control inside a sequence cancels it (CAN, SUB) or is
            # one we do not mix in: drop the sequence, treat the control.
            self._drop()
            self._ground(ch, out)
        elif state == _ESCAPE:
            self._escape(ch, out)
        elif state == _CSI:
            self._csi(ch, out)
        elif state == _CHARSET:
            self._pending.append(ch)
            if ch in _CHARSETS:
                if ch != "B":
                    self._set.add("charset")
                self._pass(out)
            else:
                self._drop()
        else:  # _ESC_INTERMEDIATE: ESC # 8, ESC % G, ...: not passed
            if 0x20 <= ord(ch) <= 0x2F and len(self._pending) < MAX_SEQUENCE:
                self._pending.append(ch)
            else:
                self._drop()

    def _ground(self, ch: str, out: list[str]) -> None:
        if ch == ESC:
            self._pending = [ch]
            self._state = _ESCAPE
        elif ch.isprintable() or ch in _PASSED_CONTROLS:
            out.append(ch)
        else:
            out.append(escape_char(ch))

    def _escape(self, ch: str, out: list[str]) -> None:
        self._pending.append(ch)
        if ch == "[":
            self._state = _CSI
        elif ch in _STRING_STARTS:
            self._pending.clear()
            self._string_length = 0
            self._state = _STRING
        elif ch in "()*+":
            self._state = _CHARSET
        elif ch in _SHORT_ESCAPES:
            if ch == "=":
                self._set.add("keypad")
            self._pass(out)
        elif 0x20 <= ord(ch) <= 0x2F:
            self._state = _ESC_INTERMEDIATE
        else:  # RIS (ESC c) and the rest
            self._drop()

    def _csi(self, ch: str, out: list[str]) -> None:
        pending = self._pending
        pending.append(ch)
        code = ord(ch)
        if 0x20 <= code <= 0x3F:
            if len(pending) > MAX_SEQUENCE:
                self._drop()
            return
        if not 0x40 <= code <= 0x7E:
            self._drop()
            return
        body = "".join(pending[2:-1])
        if self._allowed(body, ch):
            self._pass(out)
        else:
            self._drop()

    def _allowed(self, body: str, final: str) -> bool:
        """Whether C{CSI body final} only draws (and note what it sets)."""
        private = body[:1] == "?"
        params = body[1:] if private else body
        if any(not (c.isdigit() or c in ";:") for c in params):
            return False  # intermediates, or another private marker
        if private:
            if final in "JK":
                return True  # selective erase
            if final not in "hl":
                return False
            modes = params.split(";")
            if not all(m in _PRIVATE_MODES for m in modes):
                return False
            if final == "h":
                for mode in modes:
                    if mode in ("47", "1047", "1049"):
                        self._set.add("alternate")
                    elif mode == "1":
                        self._set.add("cursor-keys")
                    elif mode == "2004":
                        self._set.add("paste")
            else:
                if "25" in modes:
                    self._set.add("hidden")
                if "7" in modes:
                    self._set.add("nowrap")
            return True
        if final in "hl":
            modes = params.split(";")
            if not all(m in _ANSI_MODES for m in modes):
                return False
            if final == "h":
                self._set.add("insert")
            return True
        if final in _BARE_FINALS:
            return params == ""
        if final not in _DRAWING_FINALS:
            return False
        if final == "m":
            self._set.add("sgr")
        elif final == "r":
            self._set.add("region")
        return True

    def _string(self, ch: str, out: list[str]) -> None:
        """Inside OSC, DCS, SOS, PM or APC: swallow up to BEL or ST."""
        self._string_length += 1
        if self._state == _STRING_ESC:
            if ch == "\\":
                self._drop()  # ESC \ ends the string, which is dropped
                return
            self._drop()
            self._ground(ESC, out)
            self._char(ch, out)
            return
        if ch == BEL or ch == _ST_C1:
            self._drop()
        elif ch == ESC:
            self._state = _STRING_ESC
        elif self._string_length > MAX_STRING:
            # Never ended: stop swallowing; what follows is shown as text.
            self._drop()
            self._ground(ch, out)
