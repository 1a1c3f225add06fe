"""
Shell syntax for the exec classifier (L{gatehouse.protocols.ssh.commands}):
a command line as simple commands, read with the standard library's
C{shlex} (POSIX rules, shell punctuation), with the substitutions it holds
set apart.  Internal to the SSH package.
"""

from __future__ import annotations

import re
import shlex

import attrs

__all__ = [
    "MAX_OPERATORS",
    "PLACEHOLDER",
    "PLACEHOLDERS",
    "PLAIN",
    "SUBSTITUTED",
    "Simple",
    "TooMany",
    "braces",
    "lex",
    "simple_commands",
    "substitutions",
]

_OPERATORS = (
    "<<<", "<<-", "&>>", "&&", "||", ";;", "|&", ">>", "<<", ">&", "<&",
    "&>", ">|", "<>", "(", ")", ";", "&", "|", "<", ">", "\n",
)  # fmt: skip
_OPERATOR = re.compile("|".join(map(re.escape, _OPERATORS)))
_PUNCTUATION = "();<>|&\n"
_PUNCTUATION_SET = frozenset(_PUNCTUATION)
#: Operators read in one string before giving up (L{TooMany}).
MAX_OPERATORS = 1024
_CONTINUATION = re.compile(r"(?<!\\)((?:\\\\)*)\\\n")
_SEPARATORS = frozenset({";", "&", "&&", "||", "|", "|&", "\n", "(", ")", ";;"})
_WRITES = frozenset({">", ">>", ">|", "&>", "&>>", "<>", ">&"})
#: Stands for a substitution's value in the text around it.
PLACEHOLDER = "$__S{}__"
SUBSTITUTED = "$__S"
PLACEHOLDERS = re.compile(r"\$__S\d+__")
#: Printed text that may stand in for a substitution's value as it is.
PLAIN = re.compile(r"[\w ./=:,+@%-]*")


def substitutions(text: str) -> tuple[str, list[tuple[str, bool]]]:
    """
    The text with every top-level C{$(...)}, C{`...`}, C{<(...)} and
    C{>(...)} replaced by a placeholder, and what they held.  One inside
    single quotes is not run by the shell: it stays in the text (a shell
    that runs the string later finds it), but what it holds is classified
    too, to be strict.  Parentheses are counted without regard to quotes;
    an unbalanced one runs to the end of the text.
    """
    out: list[str] = []
    inner: list[tuple[str, bool]] = []  # what it holds, inside single quotes
    single = double = False
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if single:
            single = c != "'"
        elif c == "\\":
            out.append(text[i : i + 2])
            i += 2
            continue
        elif c == "'" and not double:
            single = True
        elif c == '"':
            double = not double
        if c == "`" or (c in "$<>" and text.startswith("(", i + 1)):
            if c == "`":
                end = text.find("`", i + 1)
                end = n if end < 0 else end
                held, after = text[i + 1 : end], end + 1
            else:
                depth, j = 1, i + 2
                while j < n and depth:
                    if text[j] == "(":
                        depth += 1
                    elif text[j] == ")":
                        depth -= 1
                    j += 1
                held, after = text[i + 2 : j - 1 if depth == 0 else n], j
            inner.append((held, single))
            placeholder = PLACEHOLDER.format(len(inner) - 1)
            if single:
                out.append(text[i:after])
                # still inside the quotes unless the span closed them
                single = text[i + 1 : after].count("'") % 2 == 0
            elif c in "<>":
                out.append(f" {placeholder}")  # a word, not a redirection
            else:
                out.append(placeholder)
            i = after
            continue
        out.append(c)
        i += 1
    return "".join(out), inner


def lex(text: str) -> tuple[list[str], bool]:
    """
    The shell tokens of C{text}, and whether all of it could be read
    (unbalanced quotes: the tokens before them, and False).

    @raise TooMany: more than L{MAX_OPERATORS} operators.
    """
    # a backslash-newline joins lines before the shell reads words (r\
    # m is rm); an escaped backslash before a newline does not
    text = _CONTINUATION.sub(r"\1", text)
    lexer = shlex.shlex(text, posix=True, punctuation_chars=_PUNCTUATION)
    lexer.whitespace = " \t\r"
    lexer.whitespace_split = True
    lexer.commenters = ""
    tokens: list[str] = []
    separators = 0
    try:
        for token in lexer:
            tokens.append(token)
            if token[:1] in _PUNCTUATION_SET:
                separators += 1
                if separators > MAX_OPERATORS:
                    raise TooMany()
    except ValueError:
        return tokens, False
    return tokens, True


class TooMany(Exception):
    """More than L{MAX_OPERATORS} operators: more commands than are read."""


def _operators(token: str) -> list[str]:
    """A run of punctuation split into shell operators, longest first."""
    return _OPERATOR.findall(token)


@attrs.define
class Simple:
    """One simple command of a line, and how its input and output go."""

    words: list[str] = attrs.field(factory=list)
    piped: bool = False
    background: bool = False
    writes: list[str] = attrs.field(factory=list)
    reads: list[str] = attrs.field(factory=list)
    herestrings: list[str] = attrs.field(factory=list)
    heredoc: bool = False

    @property
    def fed(self) -> bool:
        """Its standard input comes from within the line."""
        return self.piped or self.heredoc or bool(self.herestrings)


def simple_commands(tokens: list[str]) -> list[Simple]:
    """The simple commands of a line's tokens, with their redirections."""
    found: list[Simple] = []
    current = Simple()
    pending: str | None = None  # a redirection waiting for its word
    for token in tokens:
        ops = _operators(token) if set(token) <= _PUNCTUATION_SET else None
        if ops is None:
            if pending is None:
                current.words.append(token)
            elif pending in ("<<<",):
                current.herestrings.append(token)
            elif pending in ("<<", "<<-"):
                current.heredoc = True
            elif pending in _WRITES:
                if token != "/dev/null" and not (
                    pending == ">&" and (token.isdigit() or token == "-")
                ):
                    current.writes.append(token)
            elif pending == "<":
                current.reads.append(token)
            pending = None
            continue
        for op in ops:
            if op in _SEPARATORS:
                pending = None
                piped = op in ("|", "|&")
                if not (current.words or current.writes or current.reads):
                    current.piped = piped
                    continue
                found.append(current)
                if op == "&":
                    current.background = True
                current = Simple(piped=piped)
            else:
                # "2>f": the digits are the descriptor, not a word
                if current.words and current.words[-1].isdigit():
                    current.words.pop()
                pending = op
    if current.words or current.writes or current.reads:
        found.append(current)
    return found


_BRACES = re.compile(r"([^{}]*)\{([^{}]*,[^{}]*)\}([^{}]*)")


def braces(word: str) -> list[str]:
    """Bash's brace expansion of one C{pre{a,b}post} group: {rm,-rf,/}."""
    match = _BRACES.fullmatch(word)
    if match is None:
        return [word]
    pre, inside, post = match.groups()
    return [f"{pre}{part}{post}" for part in inside.split(",")]
