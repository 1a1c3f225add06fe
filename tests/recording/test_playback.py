"""
Tests for terminal playback: L{gatehouse.recording.screen.ScreenFilter}
(what a recorded terminal may send to the auditor's) and
L{gatehouse.recording.render.Pacer} (original timing).
"""

from __future__ import annotations

import io
import re

from hypothesis import given
from hypothesis import strategies as st
from twisted.trial.unittest import TestCase

from gatehouse.recording.render import Pacer, TerminalSafe, write_screen
from gatehouse.recording.screen import MAX_STRING, ScreenFilter
from tests.recording.helpers import EXAMPLES

ESC = "\x1b"


def filtered(*chunks: str) -> tuple[str, ScreenFilter]:
    screen = ScreenFilter()
    return "".join(screen.feed(c) for c in chunks), screen


class ScreenFilterTests(TestCase):
    """Drawing passes; what answers, reconfigures or escapes the screen does not."""

    def test_drawing_passes(self) -> None:
        """Text, colours, cursor movement, erasing, scroll regions pass as they are."""
        drawing = (
            "plain text é 世界\r\n\t\b\a"
            "\x1b[1;31mred\x1b[0m\x1b[38;2;1;2;3mrgb\x1b[4:3mcurly\x1b[m"
            "\x1b[H\x1b[10;20H\x1b[2J\x1b[K\x1b[3A\x1b[2C\x1b[5d\x1b[L\x1b[2P"
            "\x1b[1;20r\x1b[s\x1b[u\x1b7\x1b8\x1bM\x1b[?1049h\x1b[?25l\x1b[?2004h"
            "\x1b[?1h\x1b=\x1b(0qqq\x1b(B\x1b[4h\x1b[?7l"
        )
        out, screen = filtered(drawing)
        self.assertEqual(out, drawing)
        self.assertEqual(screen.dropped, 0)

    def test_dangerous_dropped(self) -> None:
        """Reports, titles, the clipboard, DCS/APC/PM/SOS, resets and printing go."""
        for sequence in [
            "\x1b[6n",  # cursor position report: typed into the auditor's shell
            "\x1b[c",  # device attributes
            "\x1b[>c",
            "\x1b[18t",  # window size report
            "\x1b[8;100;100t",  # resize the window
            "\x1b]0;title\x07",
            "\x1b]2;title\x1b\\",
            "\x1b]52;c;ZXZpbA==\x07",  # set the clipboard
            "\x1b]8;;http://evil\x1b\\",  # hyperlink
            '\x1bP$q"p\x1b\\',  # DCS: request status string
            "\x1b_APC payload\x1b\\",
            "\x1b^PM\x1b\\",
            "\x1bXSOS\x1b\\",
            "\x1bc",  # full reset
            "\x1b[5i",  # media copy (printing)
            "\x1b[?1000h",  # mouse tracking
            "\x1b[>4;1m",  # modifyOtherKeys
            "\x1b[2 q",  # cursor shape
            "\x1b[!p",  # soft reset
            "\x1b[?5$p",  # mode report
            "\x1b#8",  # fill the screen with E
            "\x1b[20h",  # newline mode
            "\x1b[3s",
        ]:
            out, screen = filtered("a" + sequence + "b")
            self.assertEqual(out, "ab", repr(sequence))
            self.assertEqual(screen.dropped, 1, repr(sequence))

    def test_controls_escaped(self) -> None:
        """C0 and C1 controls other than the usual ones show as text."""
        out, _ = filtered("a\x0e\x00\x7f\x9b6n\u202eb")
        self.assertEqual(out, "a\\x0e\\x00\\x7f\\x9b6n\\u202eb")

    def test_split_sequences(self) -> None:
        """A sequence cut between chunks is judged whole."""
        self.assertEqual(filtered("a\x1b", "[31", "mb")[0], "a\x1b[31mb")
        self.assertEqual(filtered("a\x1b", "]0;ti", "tle\x1b", "\\b")[0], "ab")
        self.assertEqual(filtered("a\x1b[", "6", "n")[0], "a")

    def test_cut_and_unterminated(self) -> None:
        """
        A control in a sequence cancels it; a string never ended stops
        being swallowed after MAX_STRING characters; an unfinished one at
        the end is dropped.
        """
        self.assertEqual(filtered("\x1b[3\x18x")[0], "\\x18x")
        self.assertEqual(filtered("\x1b[31\x1b[32mx")[0], "\x1b[32mx")
        long = "\x1b]0;" + "t" * (MAX_STRING + 10)
        out, screen = filtered(long)
        self.assertEqual(out, "t" * (len(long) - MAX_STRING - 2))
        screen = ScreenFilter()
        self.assertEqual(screen.feed("ok\x1b[3"), "ok")
        screen.finish()
        self.assertEqual(screen.dropped, 1)

    def test_finish_undoes_modes(self) -> None:
        """finish() resets what the output set, and only that."""
        _, screen = filtered("plain")
        self.assertEqual(screen.finish(), "")
        _, screen = filtered("\x1b[31m\x1b[?1049h\x1b[?25l\x1b[2;5r")
        self.assertEqual(screen.finish(), "\x1b[0m\x1b[r\x1b[?25h\x1b[?1049l")
        self.assertEqual(screen.finish(), "")
        # Every reset passes a fresh filter whole.
        _, screen = filtered(
            "\x1b[1m\x1b[1;2r\x1b[4h\x1b[?1h\x1b=\x1b[?7l\x1b(0\x1b[?2004h"
            "\x1b[?25l\x1b[?1049h"
        )
        reset = screen.finish()
        self.assertEqual(filtered(reset)[0], reset)
        self.assertEqual(reset.count(ESC), 11)

    @EXAMPLES
    @given(
        st.lists(
            st.sampled_from(
                [
                    "x",
                    "é",
                    ESC,
                    "[",
                    "]",
                    "?",
                    "1",
                    ";",
                    "6",
                    "n",
                    "m",
                    "c",
                    "t",
                    "P",
                    "_",
                    "\\",
                    "\x07",
                    "\x9b",
                    "\x9c",
                    "\x18",
                    "\r",
                    "\n",
                ]
            ),
            max_size=60,
        ),
        st.data(),
    )
    def test_never_passes_reports_or_strings(self, parts: list[str], data) -> None:
        """
        Whatever the input and however it is cut, the output holds no
        string sequence, no report request and no raw C1 control, and
        cutting does not change it.
        """
        text = "".join(parts)
        cuts = sorted(data.draw(st.lists(st.integers(0, len(text)), max_size=5)))
        chunks = [
            text[a:b] for a, b in zip([0, *cuts], [*cuts, len(text)], strict=True)
        ]
        whole, _ = filtered(text)
        self.assertEqual(filtered(*chunks)[0], whole)
        self.assertNotRegex(whole, r"\x1b[\]P_^Xc]")
        self.assertIsNone(re.search(r"\x1b\[[0-9;?>]*[nct]", whole), repr(whole))
        self.assertFalse(any(0x80 <= ord(ch) <= 0x9F for ch in whole))

    def test_write_screen(self) -> None:
        """write_screen passes drawing past TerminalSafe; write() still escapes."""
        out = io.StringIO()
        safe = TerminalSafe(out)
        screen = ScreenFilter()
        write_screen(safe, screen, "\x1b[1mbold\x1b]0;t\x07\r\n")
        safe.write("\x1b[1m\r\n")
        write_screen(out, screen, "\x1b[0m\x1b[6n")
        self.assertEqual(out.getvalue(), "\x1b[1mbold\r\n\\x1b[1m\\x0d\n\x1b[0m")


class PacerTests(TestCase):
    """The pacer sleeps the recorded gaps, over the speed, capped by the idle limit."""

    def play(
        self, pacer_args: dict, monos: list[int], work: float = 0.0
    ) -> list[float]:
        clock = [100.0]
        sleeps: list[float] = []

        def sleep(seconds: float) -> None:
            sleeps.append(round(seconds, 9))
            clock[0] += seconds

        pacer = Pacer(sleep=sleep, monotonic=lambda: clock[0], **pacer_args)
        for mono in monos:
            pacer.wait(mono)
            clock[0] += work  # time spent writing
        return sleeps

    def test_gaps(self) -> None:
        s = 1_000_000_000
        self.assertEqual(self.play({}, [5 * s, 6 * s, 8 * s]), [1.0, 2.0])
        self.assertEqual(self.play({"speed": 4}, [0, s, 3 * s]), [0.25, 0.5])
        self.assertEqual(
            self.play({"idle_limit": 0.5}, [0, s, s + s // 10]), [0.5, 0.1]
        )
        # Time spent writing counts: the pacer does not drift.
        self.assertEqual(self.play({}, [0, s, 2 * s], work=0.25), [0.75, 0.75])
        # Out-of-order times do not sleep backwards.
        self.assertEqual(self.play({}, [2 * s, s, 2 * s]), [1.0])

    def test_bad_speed(self) -> None:
        for speed in (0, -1.0, float("nan")):
            self.assertRaises(ValueError, Pacer, speed)
