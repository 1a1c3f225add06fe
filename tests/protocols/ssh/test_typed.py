"""
Lines typed into an interactive shell (L{gatehouse.protocols.ssh.typed}).
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from gatehouse.protocols.ssh.typed import MAX_ESCAPE, TypedLine, TypedLines


def typed(*chunks: bytes) -> list[TypedLine]:
    """The lines the chunks complete, fed one after the other."""
    lines = TypedLines()
    return [line for chunk in chunks for line in lines.feed(chunk)]


def texts(*chunks: bytes) -> list[str]:
    return [line.text for line in typed(*chunks)]


class EditingTests(SynchronousTestCase):
    """The line editor's common keys."""

    def test_enter(self) -> None:
        self.assertEqual(typed(b"ls -la\r"), [TypedLine("ls -la")])
        self.assertEqual(texts(b"a\rb\nc\r\n\r\n"), ["a", "b", "c"])
        self.assertEqual(texts(b"l", b"s", b"\r"), ["ls"])

    def test_unfinished(self) -> None:
        lines = TypedLines()
        self.assertEqual(lines.feed(b"rm -rf /tm"), [])
        self.assertEqual(lines.end(), TypedLine("rm -rf /tm", exact=False))
        self.assertIsNone(lines.end())

    def test_backspace_and_kills(self) -> None:
        self.assertEqual(texts(b"lss\x7f\r", b"cat\x08\x08t\r"), ["ls", "ct"])
        self.assertEqual(texts(b"rm -rf /\x15ls\r"), ["ls"])
        self.assertEqual(texts(b"echo foo bar  \x17\x17baz\r"), ["echo baz"])
        self.assertEqual(texts(b"echo abc\x01\x06\x06\x0b\r"), ["ec"])

    def test_ctrl_c_discards(self) -> None:
        self.assertEqual(texts(b"rm -rf /\x03ls\r"), ["ls"])

    def test_cursor_keys(self) -> None:
        # "-rf " inserted before the "/", then Home and End
        self.assertEqual(texts(b"rm /\x1b[D-rf \x1b[H#\x1b[F!\r"), ["#rm -rf /!"])
        self.assertEqual(texts(b"abc\x1bOD\x1bOD\x1b[3~\r"), ["ac"])
        self.assertEqual(texts(b"abc\x02\x02\x04\r"), ["ac"])

    def test_utf8_across_chunks(self) -> None:
        data = "echo é\r".encode()
        self.assertEqual(texts(data[:6], data[6:]), ["echo é"])
        self.assertEqual(texts(b"a\xffb\r"), ["a\ufffdb"])


class InexactTests(SynchronousTestCase):
    """What the gateway cannot know marks the line inexact, not wrong."""

    def test_history_and_completion(self) -> None:
        for keys in (b"\x1b[A\r", b"cat /etc/pa\t\r", b"\x12rm\r", b"x\x10\r"):
            [line] = typed(keys)
            self.assertFalse(line.exact, keys)
        self.assertTrue(typed(b"ls\r")[0].exact)
        self.assertEqual(typed(b"\x1b[A\r"), [TypedLine("", exact=False)])
        # the next line starts exact again
        self.assertEqual(
            [x.exact for x in typed(b"\x1b[Als\r", b"ls\r")], [False, True]
        )

    def test_alt_keys_and_unknown(self) -> None:
        self.assertFalse(typed(b"ls\x1bb -l\r")[0].exact)
        self.assertFalse(typed(b"ls\x1b[15~\r")[0].exact)
        self.assertTrue(typed(b"ls\x1b[I\x1b[O\r")[0].exact)

    def test_bracketed_paste(self) -> None:
        """The markers go; what was pasted is text, each line a line."""
        lines = typed(b"\x1b[200~rm -rf /tmp/x\nls\x1b[201~\r")
        self.assertEqual(lines, [TypedLine("rm -rf /tmp/x"), TypedLine("ls")])
        # inside a paste, DEL is pasted bytes, not a key; after it, a key
        self.assertEqual(texts(b"\x1b[200~a\x7fb\x1b[201~\x7f\r"), ["a"])

    def test_line_cap(self) -> None:
        lines = TypedLines(max_line=10)
        [line] = lines.feed(b"x" * 100 + b"\r")
        self.assertEqual((line.text, line.exact), ("x" * 10, False))

    def test_escape_cap(self) -> None:
        lines = TypedLines()
        lines.feed(b"ls\x1b[" + b"1;" * 100)
        self.assertLessEqual(lines.pending, 2 + MAX_ESCAPE)
        lines.feed(b"1;" * 100)
        self.assertEqual(lines.pending, 2)
        [line] = lines.feed(b"\r")
        self.assertFalse(line.exact)


class PropertyTests(SynchronousTestCase):
    """Any bytes, in any chunks."""

    @settings(max_examples=300, deadline=None)
    @given(st.lists(st.binary(max_size=200), max_size=20))
    def test_never_raises_and_bounded(self, chunks: list[bytes]) -> None:
        lines = TypedLines(max_line=64)
        for chunk in chunks:
            for line in lines.feed(chunk):
                self.assertLessEqual(len(line.text), 64)
                self.assertNotIn("\r", line.text)
                self.assertNotIn("\n", line.text)
            self.assertLessEqual(lines.pending, 64 + MAX_ESCAPE)
        lines.end()
        self.assertEqual(lines.pending, 0)

    @settings(max_examples=100, deadline=None)
    @given(
        st.text(
            st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=50
        ).filter(lambda s: s.strip()),
        st.integers(min_value=1, max_value=7),
    )
    def test_plain_typing_in_any_chunks(self, text: str, size: int) -> None:
        """Printable text typed in chunks of any size is the line."""
        data = text.encode() + b"\r"
        chunks = [data[i : i + size] for i in range(0, len(data), size)]
        self.assertEqual(typed(*chunks), [TypedLine(text)])
