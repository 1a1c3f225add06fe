"""
SSH requests as policy commands (L{gatehouse.policy.rules.Command}).

An exec request carries one command line that the target's shell will
interpret.  L{classify_exec} reads it with the standard library's C{shlex}
(POSIX rules, shell punctuation) into simple commands and sees through the
usual wrappers (C{sudo}, C{env}, C{sh -c}, C{eval}, C{xargs}, C{find -exec},
C{$(...)}, ...), giving one L{Command} per simple command found; the
session's decision is the strictest of theirs.  This is best effort: the
remote shell, not the gateway, has the last word on what a line means, so
the guarantee is the upstream account a target maps each group to (see
docs/policy.md, "SSH").  The reading leans to the strict side: text that
looks like a command substitution is classified even inside single
quotes (where failing to read it is no refusal: a shell running that
string later is read properly), a quoted C{;} still separates, comments
are read, and here-document bodies are read as commands.

Whatever cannot be read is a command too, never an exception: unbalanced
quotes, lines over L{MAX_LINE} bytes, nesting deeper than L{MAX_DEPTH},
more than L{MAX_COMMANDS} commands or more work than L{_Reader.BUDGET}
give a command of kind C{Unparseable} (flags C{unparsed} and why), which
only the policy's C{unparseable} fallback or a rule naming C{kind:
Unparseable} decides.  A hostile 64 KiB line costs about one pass of the
lexer (a few tenths of a second of CPU).
"""

from __future__ import annotations

import base64
import binascii
import codecs
import posixpath
import re
import shlex
from collections.abc import Callable, Sequence

import attrs

from gatehouse.policy.rules import UNPARSEABLE, Command

__all__ = [
    "COMMAND_FLAGS",
    "COMMAND_KINDS",
    "MAX_COMMANDS",
    "MAX_DEPTH",
    "MAX_LINE",
    "PROTOCOL",
    "SFTP_KINDS",
    "classify_exec",
    "forward_command",
    "normalize_options",
    "sftp_command",
    "shell_command",
    "subsystem_command",
]

PROTOCOL = "ssh"
#: A line longer than this (in bytes, or characters) is not read: one
#: C{Unparseable} command flagged C{too-long}.
MAX_LINE = 64 * 1024
#: Nesting (C{sh -c}, C{$(...)}, C{eval}, ...) deeper than this is not read.
MAX_DEPTH = 8
#: At most this many commands per line; past it, one C{too-many} command.
MAX_COMMANDS = 256
#: Characters of the line kept as the text of an unreadable command.
_TEXT_CAP = 1024

#: SFTP operations, as kinds (the SFTP reader names its commands so).
SFTP_KINDS = frozenset(
    {"read", "write", "remove", "rename", "mkdir", "rmdir", "setstat", "symlink"}
    | {"hardlink", "opendir", "stat", "lstat", "fstat", "realpath", "readlink"}
    | {"open", "extended"}
)
#: Every kind an SSH command may have.
COMMAND_KINDS = frozenset({"exec", "shell", "subsystem", "forward"}) | SFTP_KINDS

#: Facts about an exec command that rules may name (C{flag:}).
COMMAND_FLAGS = frozenset(
    {
        "sudo",  # run through sudo, doas, su, pkexec or runuser
        "shell-c",  # a string run by a shell (sh -c, su -c, watch, ...)
        "eval",  # a string run by eval (or env -S)
        "pipe-to-shell",  # a shell or interpreter fed what a downloader fetched
        "decode-to-shell",  # a shell or interpreter fed decoded text
        "shell-stdin",  # a shell or interpreter reading commands from stdin
        "background",  # run with &
        "redirect-write",  # > or >> to a path
        "redirect-read",  # < from a path
        "substitution",  # found inside $(...), `...`, <(...) or >(...)
        "dynamic-program",  # the program name is computed ($x, globs)
        "env",  # variable assignments before the program (VAR=x, env)
        "xargs",  # run by xargs with arguments from its input
        "find-exec",  # run by find -exec/-execdir/-ok
        "find-delete",  # find ... -delete
        "source",  # . or source of a file
        "scp-sink",  # legacy scp receiving files (scp -t)
        "scp-source",  # legacy scp sending files (scp -f)
        "rsync-server",  # rsync --server (rsync over ssh)
        "rsync-sender",  # rsync --server --sender (files leave the target)
        "nul",  # the line held a NUL byte
        "unparsed",  # could not be read: Unparseable
        "too-long",
        "too-deep",
        "too-many",
        "too-complex",
    }
)

_SHELLS = frozenset(
    {"sh", "bash", "zsh", "dash", "ksh", "mksh", "ash", "yash", "posh"}
    | {"csh", "tcsh", "fish", "rbash", "ksh93", "busybox-sh"}
)
_INTERPRETERS = frozenset(
    {"python", "python2", "python3", "perl", "ruby", "node", "nodejs", "php"}
    | {"lua", "tclsh", "pwsh"}
)
_DOWNLOADERS = frozenset(
    {"curl", "wget", "fetch", "nc", "ncat", "netcat", "socat", "aria2c"}
    | {"lynx", "links", "w3m", "http", "https", "tftp", "ftp"}
)
_DECODERS = frozenset({"base64", "base32", "basenc", "uudecode", "rev", "tr"})
_RESERVED = frozenset(
    {"!", "{", "}", "if", "then", "else", "elif", "fi", "do", "done", "while"}
    | {"until", "coproc", "[[", "]]"}
)
_ASSIGNMENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\[[^]]*\])?\+?=")
_OPERATORS = (
    "<<<", "<<-", "&>>", "&&", "||", ";;", "|&", ">>", "<<", ">&", "<&",
    "&>", ">|", "<>", "(", ")", ";", "&", "|", "<", ">", "\n",
)  # fmt: skip
_OPERATOR = re.compile("|".join(map(re.escape, _OPERATORS)))
_PUNCTUATION = "();<>|&\n"
_PUNCTUATION_SET = frozenset(_PUNCTUATION)
#: Operators read in one string before giving up (too-many).
_MAX_SEPARATORS = 4 * MAX_COMMANDS
assert _MAX_SEPARATORS >= _TEXT_CAP
_POSITIONAL = re.compile(r"\$\{?([0-9@*])\}?")
_VARIABLE = re.compile(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)\}?")
_DECLARE = frozenset({"export", "declare", "typeset", "local", "readonly"})
_CONTINUATION = re.compile(r"(?<!\\)((?:\\\\)*)\\\n")
_SEPARATORS = frozenset({";", "&", "&&", "||", "|", "|&", "\n", "(", ")", ";;"})
_WRITES = frozenset({">", ">>", ">|", "&>", "&>>", "<>", ">&"})
#: Stands for a substitution's value in the text around it.
_PLACEHOLDER = "$__S{}__"
_SUBSTITUTED = "$__S"
_PLACEHOLDERS = re.compile(r"\$__S\d+__")
#: What makes a word the shell computes: expansions, globs, braces.
_DYNAMIC = re.compile(r"[$`*?]|\[.*\]|\{.*\}")
#: Printed text that may stand in for a substitution's value as it is.
_PLAIN = re.compile(r"[\w ./=:,+@%-]*")


def _command(
    text: str,
    flags: frozenset[str] = frozenset(),
    *,
    kind: str = "exec",
    objects: tuple[str, ...] = (),
    extra: tuple[tuple[str, tuple[str, ...]], ...] = (),
) -> Command:
    return Command(PROTOCOL, kind, text, objects=objects, flags=flags, extra=extra)


def _unreadable(text: str, *why: str) -> Command:
    """A command of kind Unparseable (the policy's fallback decides it)."""
    return Command(
        PROTOCOL,
        UNPARSEABLE,
        text[:_TEXT_CAP],
        kinds=frozenset({UNPARSEABLE, "exec"}),
        flags=frozenset({"unparsed", *why}),
    )


def shell_command() -> Command:
    """An interactive shell request (kind C{shell})."""
    return _command("shell", kind="shell")


def subsystem_command(name: str) -> Command:
    """A subsystem request (kind C{subsystem}, text the name)."""
    return _command(name, kind="subsystem", extra=(("subsystem", (name,)),))


def forward_command(host: str, port: int) -> Command:
    """A direct-tcpip request (kind C{forward}, object C{host:port})."""
    destination = f"{host}:{port}"
    return _command(destination, kind="forward", objects=(destination,))


def sftp_command(op: str, path: str, target_path: str | None = None) -> Command:
    """An SFTP operation (kind the operation, objects every path)."""
    objects = (path,) if target_path is None else (path, target_path)
    return _command(path, kind=op, objects=objects)


def normalize_options(args: Sequence[str]) -> tuple[str, ...]:
    """
    The options among C{args}, one per option: C{-rf} is C{-r} and C{-f},
    C{--force=yes} is C{--force}; none after C{--}.
    """
    found: list[str] = []
    for arg in args:
        if arg == "--":
            break
        if arg.startswith("--"):
            found.append(arg.split("=", 1)[0])
        elif arg.startswith("-") and len(arg) > 1:
            found.extend(f"-{letter}" for letter in arg[1:])
    return tuple(dict.fromkeys(found))


# -- reading a line -------------------------------------------------------


def _decode(line: str | bytes) -> str:
    if isinstance(line, bytes):
        return line.decode("utf-8", "replace")
    return line


def _substitutions(text: str) -> tuple[str, list[tuple[str, bool]]]:
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
            placeholder = _PLACEHOLDER.format(len(inner) - 1)
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


def _tokens(text: str) -> tuple[list[str], bool]:
    """The shell tokens of C{text}, and whether all of it could be read."""
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
                if separators > _MAX_SEPARATORS:
                    raise _TooMany()
    except ValueError:
        return tokens, False
    return tokens, True


class _TooMany(Exception):
    """More operators than L{MAX_COMMANDS} commands need."""


def _operators(token: str) -> list[str]:
    """A run of punctuation split into shell operators, longest first."""
    return _OPERATOR.findall(token)


@attrs.define
class _Simple:
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


def _simple_commands(tokens: list[str]) -> list[_Simple]:
    found: list[_Simple] = []
    current = _Simple()
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
                current = _Simple(piped=piped)
            else:
                # "2>f": the digits are the descriptor, not a word
                if current.words and current.words[-1].isdigit():
                    current.words.pop()
                pending = op
    if current.words or current.writes or current.reads:
        found.append(current)
    return found


# -- seeing through wrappers ----------------------------------------------


@attrs.frozen
class _Context:
    """What a command inherits from the commands that run it."""

    flags: frozenset[str] = frozenset()
    user: str | None = None
    wrappers: tuple[str, ...] = ()


@attrs.frozen
class _Found:
    """One command found, with what the line-wide checks need."""

    command: Command
    fed: bool = False  # a shell or interpreter given text from the line
    fetches: bool = False  # a downloader
    decodes: bool = False  # a decoder
    saves: tuple[str, ...] = ()  # files a downloader or decoder writes
    runs: tuple[str, ...] = ()  # files it runs as code (scripts, ./x)


class _Reader:
    """
    Classifies one line: the commands found, bounded in number and in
    work (characters read, across every nesting level).
    """

    #: Characters (and a charge per string) read before giving up: about
    #: a third of a second of CPU.
    BUDGET = MAX_LINE + MAX_LINE // 2
    #: The charge for each string read (a lexer's set-up).
    PER_STRING = 64

    def __init__(self) -> None:
        self.found: list[_Found] = []
        self.full = False
        self.budget = self.BUDGET
        #: how many substitutions in single quotes are being read
        self.quoted = 0
        #: variables the line set to plain words (IFS: its default)
        self.variables: dict[str, str | None] = {"IFS": " "}
        #: files the line wrote literal text to, by name (None: unknown)
        self.files: dict[str, str | None] = {}

    def charge(self, cost: int, text: str) -> bool:
        """Spend C{cost} of the budget; False (and a command) once it is spent."""
        self.budget -= cost
        if self.budget >= 0:
            return True
        if not self.full:
            self.add(_Found(_unreadable(text, "too-complex")))
            self.full = True
        return False

    def add(self, found: _Found) -> None:
        if self.full:
            return
        if len(self.found) >= MAX_COMMANDS:
            self.full = True
            text = found.command.text
            self.found.append(_Found(_unreadable(text, "too-many")))
            return
        self.found.append(found)

    def text(self, text: str, depth: int, context: _Context) -> None:
        """
        Classify a line (or a string a shell will run).  Inside a
        substitution in single quotes (L{quoted}) a string that cannot be
        read is not a command: it is read only to be strict, in the
        quoting of a string a shell may run later, where it is read
        properly.
        """
        if self.full or not self.charge(len(text) + self.PER_STRING, text):
            return
        if depth > MAX_DEPTH:
            self.add(_Found(_unreadable(text, "too-deep")))
            return
        flat, inner = _substitutions(text)
        # placeholders lengthen what the lexer reads
        if not self.charge(max(0, len(flat) - len(text)), text):
            return
        printed: dict[str, str] = {}
        for k, (held, single) in enumerate(inner):
            self.quoted += single
            self.text(held, depth + 1, _Context(context.flags | {"substitution"}))
            self.quoted -= single
            # $(echo rm) is rm: a literal printed stands for its value
            value = _printed_by(held)
            if value is not None and _PLAIN.fullmatch(value):
                printed[_PLACEHOLDER.format(k)] = value
        if printed:
            flat = _PLACEHOLDERS.sub(lambda m: printed.get(m[0], m[0]), flat)
        try:
            tokens, complete = _tokens(flat)
        except _TooMany:
            self.add(_Found(_unreadable(text, "too-many")))
            self.full = True
            return
        if not complete and not self.quoted:
            self.add(_Found(_unreadable(text)))
        simples = _simple_commands(tokens)
        for simple in simples:
            self.simple(simple, depth, context)
        self.feeds(simples, depth)

    def feeds(self, simples: Sequence[_Simple], depth: int) -> None:
        """
        Text that C{echo}/C{printf} of literal words pipes into a shell,
        directly or through C{base64 -d} (C{echo cm0gLXJm | base64 -d |
        sh}): classified as what the shell will run.
        """
        for k, simple in enumerate(simples):
            if self.full:
                return
            text = _printed(simple.words)
            program = posixpath.basename(simple.words[0]) if simple.words else ""
            if text is None and simple.herestrings and program in ("base64", "base32"):
                if _decoding(simple.words[1:]):
                    text = _decoded(simple.herestrings[0], program)
            if text is None:
                continue
            for after in simples[k + 1 :]:
                if not after.piped or not after.words:
                    break
                program = posixpath.basename(after.words[0])
                if program in ("base64", "base32") and _decoding(after.words[1:]):
                    decoded = _decoded(text, program)
                    if decoded is None:
                        break
                    text = decoded
                    continue
                if program in ("at", "batch") or (
                    program in _SHELLS and _script(after.words[1:]) is None
                ):
                    self.text(text, depth + 1, _Context(frozenset({"shell-stdin"})))
                break

    def simple(self, simple: _Simple, depth: int, context: _Context) -> None:
        if self.full:
            return
        words = [w for word in simple.words for w in _braces(word)]
        words = self.expand(words)
        flags = set(context.flags)
        if simple.background:
            flags.add("background")
        if simple.writes:
            flags.add("redirect-write")
        if simple.reads:
            flags.add("redirect-read")
        objects = tuple(simple.writes + simple.reads)
        # bash reads and writes network sockets as /dev/tcp/host/port
        fetches = any(p.startswith(("/dev/tcp/", "/dev/udp/")) for p in objects)
        self.words(
            words,
            0,
            depth,
            _Context(frozenset(flags), context.user, context.wrappers),
            simple,
            objects,
            fetches,
        )

    def expand(self, words: list[str]) -> list[str]:
        """
        Variables the line set to plain words, expanded (C{r=rm; $r -rf
        /}), and split as unquoted expansions are; a standalone assignment
        is remembered.  Others stay as they are (C{dynamic-program}).
        """
        start = 1 if words and words[0] in _DECLARE else 0
        if all(_ASSIGNMENT.match(w) for w in words[start:]):
            for word in words[start:]:
                name, _, value = word.partition("=")
                name = name.rstrip("+").split("[")[0]
                # set twice (if/else branches?): the value is not known
                known = self.variables.get(name, value) == value
                if known and _PLAIN.fullmatch(value) and "=" not in word[: len(name)]:
                    self.variables[name] = value
                else:
                    self.variables[name] = None
            return words
        expanded: list[str] = []
        for word in words:
            names = _VARIABLE.findall(word)
            if not names or any(self.variables.get(n) is None for n in names):
                expanded.append(word)
                continue
            value = _VARIABLE.sub(lambda m: self.variables[m[1]] or "", word)
            expanded.extend(value.split() or [""])
        return expanded

    def words(
        self,
        words: Sequence[str],
        start: int,
        depth: int,
        context: _Context,
        simple: _Simple,
        objects: tuple[str, ...] = (),
        fetches: bool = False,
    ) -> None:
        """Classify C{words[start:]}, unwrapping wrappers."""
        flags = set(context.flags)
        user = context.user
        wrappers = list(context.wrappers)
        i = start
        while i < len(words):
            word = words[i]
            if word in _RESERVED:
                i += 1
                continue
            if word == "function":  # function name { ...; }
                i += 2
                continue
            if _ASSIGNMENT.match(word):
                flags.add("env")
                i += 1
                continue
            program = posixpath.basename(word) or word
            unwrap = _WRAPPERS.get(program)
            if unwrap is None and _is_dynamic(word):
                unwrap = _shell  # $SHELL -c '...': read the string anyway
            if unwrap is None:
                break
            step = unwrap(words, i)
            if step.flags:
                flags |= step.flags
            if step.user is not None:
                user = step.user
            if step.string is not None:
                # the wrapper runs a string: it is a command, and so is
                # the string
                here = _Context(frozenset(flags), user, tuple(wrappers))
                fed = _computed(step.string)
                self._emit(words, i, here, simple, objects, fetches, fed=fed)
                inner = _Context(
                    frozenset(flags | step.string_flags), user, (*wrappers, program)
                )
                self.text(step.string, depth + 1, inner)
                return
            if step.next is None or step.next >= len(words):
                break  # the wrapper alone is the program (sudo -s, nohup)
            wrappers.append(program)
            i = step.next
        if i >= len(words):
            if objects:  # a bare redirection: "> /etc/passwd"
                here = _Context(frozenset(flags), user, tuple(wrappers))
                self._emit(["true"], 0, here, simple, objects, fetches, bare=True)
            return
        here = _Context(frozenset(flags), user, tuple(wrappers))
        self._program(words, i, depth, here, simple, objects, fetches)

    def _program(
        self,
        words: Sequence[str],
        i: int,
        depth: int,
        context: _Context,
        simple: _Simple,
        objects: tuple[str, ...],
        fetches: bool,
    ) -> None:
        program = posixpath.basename(words[i]) or words[i]
        args = words[i + 1 :]
        flags = set(context.flags)
        fed = False
        decodes = False
        runs: list[str] = [words[i]] if "/" in words[i] else []
        if program in ("at", "batch"):
            flags.add("shell-stdin")  # commands from its input, run later
            fed = simple.fed
        code = _code(args) if program in _INTERPRETERS else None
        if code is not None:
            # python -c CODE, perl -e CODE, ...: the code is in the line;
            # it is the line's output only where a substitution stands
            fed = _SUBSTITUTED in code
        elif program in _SHELLS or program in _INTERPRETERS:
            script = _script(args) if program in _SHELLS else _first_operand(args)
            if script is not None:
                runs.append(script)
            if script is None or script in ("-", "/dev/stdin"):
                flags.add("shell-stdin")
                fed = simple.fed
                if program in _SHELLS:
                    for string in simple.herestrings:
                        inner = _Context(
                            frozenset(flags), context.user, context.wrappers
                        )
                        self.text(string, depth + 1, inner)
            elif _computed(script):
                flags.add("shell-stdin")
                fed = True
        elif program in ("source", "."):
            flags.add("source")
            fed = any(_computed(a) for a in args)
            runs.extend(args[:1])
        elif program in _DOWNLOADERS:
            fetches = True
        elif program in _DECODERS:
            decodes = program in ("uudecode", "rev", "tr") or _decoding(args)
        elif program in ("xxd", "openssl"):
            decodes = "-r" in args or "-d" in args or "-base64" in args
        elif program == "find":
            self._find(words, i, depth, context, simple)
            if "-delete" in args:
                flags.add("find-delete")
        elif program == "scp":
            objects += self._scp(args, flags)
        elif program == "rsync" and "--server" in args:
            flags.add("rsync-server")
            if "--sender" in args:
                flags.add("rsync-sender")
            operands = [a for a in args if not a.startswith("-")]
            objects += tuple(operands[1:])
        if _is_dynamic(words[i]):
            flags.add("dynamic-program")
        self.scripts(words[i:], simple, runs, depth, context)
        saves = _saves(program, args, simple.writes) if fetches or decodes else []
        here = _Context(frozenset(flags), context.user, context.wrappers)
        self._emit(
            words,
            i,
            here,
            simple,
            objects,
            fetches,
            fed=fed,
            decodes=decodes,
            saves=tuple(saves),
            runs=tuple(runs),
        )

    def scripts(
        self,
        argv: Sequence[str],
        simple: _Simple,
        runs: Sequence[str],
        depth: int,
        context: _Context,
    ) -> None:
        """
        Files the line writes with C{echo}/C{printf} of literals, and runs
        later (C{echo 'rm -rf /' > x; sh x}): what they hold is classified
        where they run.  Files are known by name.
        """
        printed = _printed(argv) if simple.writes else None
        for path in simple.writes:
            name = posixpath.basename(path)
            held = self.files.get(name, "")
            # unknown stays unknown (None); literals add up (> and >>)
            self.files[name] = (
                None if printed is None or held is None else (f"{held}\n{printed}")
            )
        for path in runs:
            content = self.files.get(posixpath.basename(path))
            if content:
                inner = _Context(context.flags | {"shell-c"}, context.user)
                self.text(content, depth + 1, inner)

    def _find(
        self,
        words: Sequence[str],
        i: int,
        depth: int,
        context: _Context,
        simple: _Simple,
    ) -> None:
        """The commands of C{find ... -exec cmd ... ;} (or C{+})."""
        j = i + 1
        while j < len(words):
            if words[j] in ("-exec", "-execdir", "-ok", "-okdir"):
                end = j + 1
                while end < len(words) and words[end] not in (";", "+"):
                    end += 1
                inner = list(words[j + 1 : end])
                if inner:
                    flags = context.flags | {"find-exec"}
                    here = _Context(flags, context.user, (*context.wrappers, "find"))
                    self.words(inner, 0, depth + 1, here, _Simple(words=inner))
                j = end
            j += 1

    @staticmethod
    def _scp(args: Sequence[str], flags: set[str]) -> tuple[str, ...]:
        options = normalize_options(args)
        if "-t" in options:
            flags.add("scp-sink")
        if "-f" in options:
            flags.add("scp-source")
        if not flags & {"scp-sink", "scp-source"}:
            return ()
        operands = []
        after = False
        for arg in args:
            if after or not arg.startswith("-"):
                operands.append(arg)
            elif arg == "--":
                after = True
        return tuple(operands)

    def _emit(
        self,
        words: Sequence[str],
        i: int,
        context: _Context,
        simple: _Simple,
        objects: tuple[str, ...],
        fetches: bool,
        *,
        fed: bool = False,
        decodes: bool = False,
        bare: bool = False,
        saves: tuple[str, ...] = (),
        runs: tuple[str, ...] = (),
    ) -> None:
        argv = tuple(words[i:])
        program = posixpath.basename(argv[0]) or argv[0]
        extra: list[tuple[str, tuple[str, ...]]] = [
            ("program", (program,)),
            ("argv", argv),
            ("args", argv[1:]),
            ("option", _options(program, argv[1:])),
        ]
        if context.user is not None:
            extra.append(("user", (context.user,)))
        if context.wrappers:
            extra.append(("wrapper", tuple(dict.fromkeys(context.wrappers))))
        text = shlex.join(simple.words) if not bare else ""
        for path in simple.writes:
            text += f" > {shlex.quote(path)}"
        for path in simple.reads:
            text += f" < {shlex.quote(path)}"
        command = _command(
            text.strip(),
            context.flags,
            objects=tuple(dict.fromkeys(objects)),
            extra=tuple(extra),
        )
        self.add(_Found(command, fed, fetches, decodes, saves, runs))


_BRACES = re.compile(r"([^{}]*)\{([^{}]*,[^{}]*)\}([^{}]*)")


def _braces(word: str) -> list[str]:
    """Bash's brace expansion of one C{pre{a,b}post} group: {rm,-rf,/}."""
    match = _BRACES.fullmatch(word)
    if match is None:
        return [word]
    pre, inside, post = match.groups()
    return [f"{pre}{part}{post}" for part in inside.split(",")]


def _options(program: str, args: Sequence[str]) -> tuple[str, ...]:
    if program == "find":  # find's options are words of their own: -delete
        return tuple(dict.fromkeys(a for a in args if a.startswith("-")))
    return normalize_options(args)


def _decoding(args: Sequence[str]) -> bool:
    options = normalize_options(args)
    return bool({"-d", "-D", "--decode"} & set(options))


def _is_dynamic(word: str) -> bool:
    return bool(_DYNAMIC.search(word)) or word.startswith("/dev/fd/")


def _computed(word: str) -> bool:
    """
    Whether shell code or a script path comes from an expansion (C{$x},
    a substitution, a process substitution's C{/dev/fd/N}).
    """
    return "$" in word or "`" in word or word.startswith("/dev/fd/")


def _code(args: Sequence[str]) -> str | None:
    """
    The code an interpreter is given as an argument (C{-c}, C{-e}, C{-E},
    C{-r}, C{--eval}, option clusters such as C{-ne}), or None.
    """
    for k, arg in enumerate(args):
        if arg == "--" or not arg.startswith("-"):
            return None
        if arg.startswith("--"):
            name, eq, value = arg.partition("=")
            if name in ("--eval", "--print", "--command"):
                return value if eq else (args[k + 1] if k + 1 < len(args) else "")
            continue
        if arg[-1] in "ceEr" and arg[1:2] != "-":
            return args[k + 1] if k + 1 < len(args) else ""
    return None


def _first_operand(args: Sequence[str]) -> str | None:
    for arg in args:
        if arg == "--" or not arg.startswith("-"):
            return arg if arg != "--" else None
    return None


def _script(args: Sequence[str]) -> str | None:
    """A shell's script operand (None: it reads stdin), options skipped."""
    i = 0
    while i < len(args):
        arg = args[i]
        if arg == "--":
            return args[i + 1] if i + 1 < len(args) else None
        if arg in ("-o", "+o", "-O", "+O", "--rcfile", "--init-file"):
            i += 2
            continue
        if arg.startswith(("-", "+")):
            if "s" in arg[1:] and not arg.startswith("--"):
                return None  # -s: commands from stdin
            i += 1
            continue
        return arg
    return None


# -- wrappers ---------------------------------------------------------------


@attrs.frozen
class _Step:
    """
    What a wrapper at C{words[i]} does: the index of the command it runs
    (C{next}), or a string it runs through a shell (C{string}).
    """

    next: int | None = None
    string: str | None = None
    string_flags: frozenset[str] = frozenset()
    flags: frozenset[str] = frozenset()
    user: str | None = None


def _skip_options(
    words: Sequence[str],
    i: int,
    takes_value: frozenset[str] = frozenset(),
    long_takes_value: frozenset[str] = frozenset(),
) -> tuple[int, dict[str, str]]:
    """
    Skip the options after the wrapper at C{words[i]}: the index of the
    first operand and the options' values (by option, C{-u} or C{--user}).
    """
    values: dict[str, str] = {}
    j = i + 1
    while j < len(words):
        word = words[j]
        if word == "--":
            return j + 1, values
        if word.startswith("--") and len(word) > 2:
            name, eq, value = word.partition("=")
            if name in long_takes_value and not eq:
                values[name] = words[j + 1] if j + 1 < len(words) else ""
                j += 2
                continue
            values[name] = value
            j += 1
            continue
        if word.startswith("-") and len(word) > 1:
            j += 1
            for k, letter in enumerate(word[1:], start=1):
                option = f"-{letter}"
                values.setdefault(option, "")
                if option in takes_value:
                    rest = word[k + 1 :]
                    if rest:
                        values[option] = rest
                    elif j < len(words):
                        values[option] = words[j]
                        j += 1
                    break
            continue
        return j, values
    return j, values


def _plain(
    takes_value: str = "", long_takes_value: str = "", operands: int = 0
) -> Callable[[Sequence[str], int], _Step]:
    """A wrapper that runs the command after its options (and C{operands})."""
    short = frozenset(f"-{c}" for c in takes_value)
    long = frozenset(long_takes_value.split())

    def unwrap(words: Sequence[str], i: int) -> _Step:
        j, _ = _skip_options(words, i, short, long)
        return _Step(next=j + operands)

    return unwrap


def _sudo(words: Sequence[str], i: int) -> _Step:
    j, values = _skip_options(
        words,
        i,
        frozenset({"-u", "-g", "-h", "-p", "-C", "-D", "-r", "-t", "-T", "-U"}),
        frozenset({"--user", "--group", "--host", "--prompt", "--chdir"}),
    )
    user = values.get("-u") or values.get("--user") or "root"
    flags = frozenset({"sudo"})
    shell = {"-s", "-i", "--shell", "--login"} & values.keys()
    if shell and j < len(words):
        # sudo -s cmd: the target user's shell runs "cmd" as a string
        return _Step(
            string=shlex.join(words[j:]),
            string_flags=frozenset({"shell-c"}),
            flags=flags,
            user=user,
        )
    if shell:
        flags |= {"shell-stdin"}
    return _Step(next=j, flags=flags, user=user)


def _doas(words: Sequence[str], i: int) -> _Step:
    j, values = _skip_options(words, i, frozenset({"-u", "-C"}))
    return _Step(next=j, flags=frozenset({"sudo"}), user=values.get("-u") or "root")


def _su(words: Sequence[str], i: int) -> _Step:
    """
    C{su [options] [-] [user] [-c string]} (options may follow the user),
    and C{runuser}, which also takes C{-u user -- command ...}.
    """
    string = None
    operands: list[str] = []
    user = None
    j = i + 1
    while j < len(words):
        word = words[j]
        if word == "--":
            if words[i] == "runuser" and user is not None:
                return _Step(next=j + 1, flags=frozenset({"sudo"}), user=user)
            operands.extend(words[j + 1 :])
            break
        name, eq, value = word.partition("=")
        if word.startswith("--") and name in ("--command", "--user", "--shell"):
            if not eq:
                value = words[j + 1] if j + 1 < len(words) else ""
                j += 1
            if name == "--command":
                string = value
            elif name == "--user":
                user = value
        elif word.startswith("-") and len(word) > 1 and not word.startswith("--"):
            for k, letter in enumerate(word[1:], start=1):
                if letter in "csgGuCw":
                    value = word[k + 1 :]
                    if not value and j + 1 < len(words):
                        value = words[j + 1]
                        j += 1
                    if letter in "cC":
                        string = value
                    elif letter == "u":
                        user = value
                    break
        elif word != "-" and not word.startswith("--"):
            if words[i] == "runuser" and user is not None:
                return _Step(next=j, flags=frozenset({"sudo"}), user=user)
            operands.append(word)
        j += 1
    user = user or (operands[0] if operands else "root")
    flags = frozenset({"sudo"})
    if string:
        return _Step(
            string=string, string_flags=frozenset({"shell-c"}), flags=flags, user=user
        )
    return _Step(flags=flags | {"shell-stdin"}, user=user)


def _pkexec(words: Sequence[str], i: int) -> _Step:
    j, values = _skip_options(words, i, long_takes_value=frozenset({"--user"}))
    return _Step(next=j, flags=frozenset({"sudo"}), user=values.get("--user") or "root")


def _shell(words: Sequence[str], i: int) -> _Step:
    """C{sh -c 'string'}: the string; otherwise the shell is the program."""
    j = i + 1
    command = False
    while j < len(words):
        word = words[j]
        if word in ("-o", "+o", "-O", "+O", "--rcfile", "--init-file"):
            j += 2
            continue
        if word == "--":
            j += 1
            break
        if word.startswith(("-", "+")) and len(word) > 1:
            if not word.startswith("--") and "c" in word[1:]:
                command = True
            j += 1
            continue
        break
    if command and j < len(words):
        string = _positional(words[j], words[j + 1 :])
        return _Step(string=string, string_flags=frozenset({"shell-c"}))
    return _Step()


def _positional(string: str, args: Sequence[str]) -> str:
    """
    C{sh -c 'eval "$1"' _ 'rm -rf /'}: the string with C{$0}..C{$9},
    C{$@} and C{$*} replaced by the arguments given, where they are plain
    words (others stay: a computed program).
    """
    if not args or not all(_PLAIN.fullmatch(a) for a in args):
        return string

    def value(match: re.Match[str]) -> str:
        name = match[1]
        if name in "@*":
            return " ".join(args[1:])
        index = int(name)
        return args[index] if index < len(args) else ""

    return _POSITIONAL.sub(value, string)


def _eval(words: Sequence[str], i: int) -> _Step:
    return _Step(string=" ".join(words[i + 1 :]), string_flags=frozenset({"eval"}))


def _env(words: Sequence[str], i: int) -> _Step:
    j, values = _skip_options(
        words,
        i,
        frozenset({"-u", "-C", "-S"}),
        frozenset({"--unset", "--chdir", "--split-string"}),
    )
    string = values.get("-S") or values.get("--split-string")
    if string:
        rest = shlex.join(words[j:])
        return _Step(string=f"{string} {rest}", string_flags=frozenset({"eval"}))
    return _Step(next=j)


def _watch(words: Sequence[str], i: int) -> _Step:
    j, _ = _skip_options(
        words, i, frozenset({"-n", "-d", "-q"}), frozenset({"--interval"})
    )
    return _Step(string=" ".join(words[j:]), string_flags=frozenset({"shell-c"}))


def _flock(words: Sequence[str], i: int) -> _Step:
    # flock [options] file -c string, or flock [options] file command ...
    for k in range(i + 1, len(words) - 1):
        if words[k] in ("-c", "--command"):
            return _Step(string=words[k + 1], string_flags=frozenset({"shell-c"}))
    j, _ = _skip_options(words, i, frozenset({"-w", "-E"}), frozenset({"--wait"}))
    return _Step(next=j + 1)


def _command_builtin(words: Sequence[str], i: int) -> _Step:
    j, values = _skip_options(words, i)
    if "-v" in values or "-V" in values:
        return _Step()  # a lookup, not a run
    return _Step(next=j)


def _xargs(words: Sequence[str], i: int) -> _Step:
    j, _ = _skip_options(
        words,
        i,
        frozenset("-" + c for c in "IiLlnPsdEea"),
        frozenset(
            {"--max-args", "--max-procs", "--delimiter", "--arg-file", "--max-chars"}
            | {"--eof", "--replace", "--max-lines", "--process-slot-var"}
        ),
    )
    return _Step(next=j, flags=frozenset({"xargs"}))


def _timeout(words: Sequence[str], i: int) -> _Step:
    j, _ = _skip_options(words, i, frozenset({"-s", "-k"}), frozenset({"--signal"}))
    return _Step(next=j + 1)  # the duration


def _script_wrapper(words: Sequence[str], i: int) -> _Step:
    """C{script -qc 'string' [file]}: the string runs in a shell."""
    for k in range(i + 1, len(words) - 1):
        word = words[k]
        if word == "--command" or (
            word.startswith("-") and not word.startswith("--") and word.endswith("c")
        ):
            return _Step(string=words[k + 1], string_flags=frozenset({"shell-c"}))
        if word.startswith("--command="):
            return _Step(string=word[10:], string_flags=frozenset({"shell-c"}))
    return _Step()


def _sg(words: Sequence[str], i: int) -> _Step:
    """C{sg group -c 'string'} or C{sg group command ...}."""
    if i + 3 < len(words) + 1 and words[i + 2 : i + 3] == ["-c"]:
        if i + 3 < len(words):
            return _Step(string=words[i + 3], string_flags=frozenset({"shell-c"}))
    if i + 2 < len(words):
        return _Step(
            string=" ".join(words[i + 2 :]), string_flags=frozenset({"shell-c"})
        )
    return _Step()


def _sudoedit(words: Sequence[str], i: int) -> _Step:
    return _Step(flags=frozenset({"sudo"}))


_WRAPPERS: dict[str, Callable[[Sequence[str], int], _Step]] = {
    "sudo": _sudo,
    "doas": _doas,
    "su": _su,
    "runuser": _su,
    "pkexec": _pkexec,
    "env": _env,
    "eval": _eval,
    "watch": _watch,
    "flock": _flock,
    "command": _command_builtin,
    "builtin": _plain(),
    "exec": _plain("a"),
    "nohup": _plain(),
    "time": _plain("fo"),
    "nice": _plain("n", "--adjustment"),
    "ionice": _plain("cnp", "--class --classdata --pid"),
    "stdbuf": _plain("ioe", "--input --output --error"),
    "chrt": _plain("", "", operands=1),
    "taskset": _plain("", "", operands=1),
    "setsid": _plain(),
    "unbuffer": _plain(),
    "chroot": _plain("", "--userspec --groups", operands=1),
    "timeout": _timeout,
    "xargs": _xargs,
    "busybox": _plain(),
    "toybox": _plain(),
    "strace": _plain("eoOpPsSuE"),
    "ltrace": _plain("eoOpPsSuE"),
    "unshare": _plain(),
    "setpriv": _plain(),
    "fakeroot": _plain(),
    "ssh-agent": _plain("aEt"),
    "dbus-run-session": _plain(),
    "nsenter": _plain("tSG"),
    "systemd-run": _plain("pEMu", "--unit --property --setenv --machine --uid --gid"),
    "screen": _plain("STcephsLt"),
    "parallel": _plain("jJSnNLlsdIEa", "--jobs --sshlogin --delimiter --arg-file"),
    "script": _script_wrapper,
    "sg": _sg,
    "sudoedit": _sudoedit,
}
for _name in _SHELLS:
    _WRAPPERS[_name] = _shell


def _printed_by(text: str) -> str | None:
    """What C{text} prints if it is one C{echo}/C{printf} of literals."""
    if len(text) > _TEXT_CAP or not text.lstrip().startswith(("echo", "printf")):
        return None
    # _TEXT_CAP characters hold at most _MAX_SEPARATORS operators: no _TooMany
    tokens, complete = _tokens(text)
    simples = _simple_commands(tokens) if complete else []
    return _printed(simples[0].words) if len(simples) == 1 else None


def _printed(words: Sequence[str]) -> str | None:
    """
    The text C{echo} or C{printf} of literal words prints (escapes such as
    C{\\x72} decoded), or None if C{words} is not such a command.
    """
    if not words or posixpath.basename(words[0]) not in ("echo", "printf"):
        return None
    args = [a for a in words[1:] if not (a.startswith("-") and len(a) == 2)]
    if any(_is_dynamic(a) for a in args):
        return None
    text = " ".join(args)
    if "\\" in text and text.isascii():
        try:
            text = codecs.decode(text, "unicode_escape")
        except UnicodeDecodeError:
            return None
    return text


def _decoded(text: str, how: str) -> str | None:
    """C{text} decoded as C{how} (base64 or base32) says, if it is such."""
    decode = base64.b64decode if how == "base64" else base64.b32decode
    try:
        raw = decode("".join(text.split()))
    except (binascii.Error, ValueError):
        return None
    return raw.decode("utf-8", "replace")


def _line_flags(found: list[_Found]) -> list[Command]:
    """
    Flag shells fed by a downloader or a decoder anywhere in the line, and
    files run that a downloader or decoder of the line wrote.
    """
    fetched = any(f.fetches for f in found)
    decoded = any(f.decodes for f in found)
    downloads = {posixpath.basename(p) for f in found if f.fetches for p in f.saves}
    decodings = {posixpath.basename(p) for f in found if f.decodes for p in f.saves}
    commands = []
    for f in found:
        command = f.command
        extra = set()
        if f.fed and fetched:
            extra.add("pipe-to-shell")
        if f.fed and decoded:
            extra.add("decode-to-shell")
        runs = {posixpath.basename(p) for p in f.runs}
        if runs & downloads:
            extra.add("pipe-to-shell")
        if runs & decodings:
            extra.add("decode-to-shell")
        if extra:
            command = attrs.evolve(command, flags=command.flags | extra)
        commands.append(command)
    return commands


def _saves(program: str, args: Sequence[str], writes: Sequence[str]) -> list[str]:
    """The files a downloader writes: redirections, -o/-O, wget's default."""
    saved = list(writes)
    for k, arg in enumerate(args):
        name, eq, value = arg.partition("=")
        if name in ("-o", "-O", "--output", "--output-document") and k + 1 < len(args):
            saved.append(value if eq else args[k + 1])
        elif arg.startswith(("-o", "-O")) and len(arg) > 2:
            saved.append(arg[2:])
        elif "://" in arg:
            saved.append(posixpath.basename(arg.split("?", 1)[0]))
    return [p for p in saved if p and p != "-"]


def classify_exec(line: str | bytes) -> tuple[Command, ...]:
    """
    The policy commands of an exec request's command line: one per simple
    command found, at any depth (see the module docstring).  Never
    raises; what cannot be read is an C{Unparseable} command.
    """
    if len(line) > MAX_LINE:
        text = _decode(line[:_TEXT_CAP])
        return (_unreadable(text, "too-long"),)
    text = _decode(line)
    context = _Context()
    if "\0" in text:
        # sshd runs the line up to the NUL; another server might run all
        # of it: read both
        text = text.replace("\0", "\n")
        context = _Context(frozenset({"nul"}))
    reader = _Reader()
    try:
        reader.text(text, 0, context)
    except RecursionError:
        return (_unreadable(text, "too-deep"),)
    commands = _line_flags(reader.found)
    if not commands:
        return (_command(text.strip()),)
    return tuple(dict.fromkeys(commands))
