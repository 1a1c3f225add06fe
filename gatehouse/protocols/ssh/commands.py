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
from collections.abc import Sequence

import attrs

from gatehouse.policy.rules import UNPARSEABLE, Command
from gatehouse.protocols.ssh.sftp import SFTP_OPS
from gatehouse.protocols.ssh.shellwords import (
    PLACEHOLDER,
    PLACEHOLDERS,
    PLAIN,
    SUBSTITUTED,
    Simple,
    TooMany,
    braces,
    lex,
    simple_commands,
    substitutions,
)
from gatehouse.protocols.ssh.wrappers import (
    SHELLS,
    WRAPPERS,
    first_operand,
    interpreter_code,
    script_operand,
    shell_c,
)

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
#: The SFTP operations (the tracker's names: the kinds it gives commands).
SFTP_KINDS = frozenset(SFTP_OPS)
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
_VARIABLE = re.compile(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)\}?")
_DECLARE = frozenset({"export", "declare", "typeset", "local", "readonly"})
#: What makes a word the shell computes: expansions, globs, braces.
_DYNAMIC = re.compile(r"[$`*?]|\[.*\]|\{.*\}")


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


def exec_line(line: str, commands: Sequence[Command]) -> Command:
    """
    An exec request as the recording, the index and approvers show it: the
    line as the client sent it, with what its commands run and touch (the
    policy decides the commands themselves).
    """
    programs = tuple(dict.fromkeys(p for c in commands for p in c.values("program")))
    objects = tuple(dict.fromkeys(o for c in commands for o in c.objects))
    flags = frozenset(f for c in commands for f in c.flags)
    return Command(
        PROTOCOL,
        "exec",
        line[:_TEXT_CAP],
        objects=objects,
        flags=flags,
        extra=(("program", programs),),
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
        flat, inner = substitutions(text)
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
            if value is not None and PLAIN.fullmatch(value):
                printed[PLACEHOLDER.format(k)] = value
        if printed:
            flat = PLACEHOLDERS.sub(lambda m: printed.get(m[0], m[0]), flat)
        try:
            tokens, complete = lex(flat)
        except TooMany:
            self.add(_Found(_unreadable(text, "too-many")))
            self.full = True
            return
        if not complete and not self.quoted:
            self.add(_Found(_unreadable(text)))
        simples = simple_commands(tokens)
        for simple in simples:
            self.simple(simple, depth, context)
        self.feeds(simples, depth)

    def feeds(self, simples: Sequence[Simple], depth: int) -> None:
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
                    program in SHELLS and script_operand(after.words[1:]) is None
                ):
                    self.text(text, depth + 1, _Context(frozenset({"shell-stdin"})))
                break

    def simple(self, simple: Simple, depth: int, context: _Context) -> None:
        if self.full:
            return
        words = [w for word in simple.words for w in braces(word)]
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
                if known and PLAIN.fullmatch(value) and "=" not in word[: len(name)]:
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
        simple: Simple,
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
            unwrap = WRAPPERS.get(program)
            if unwrap is None and _is_dynamic(word):
                unwrap = shell_c  # $SHELL -c '...': read the string anyway
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
        simple: Simple,
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
        code = interpreter_code(args) if program in _INTERPRETERS else None
        if code is not None:
            # python -c CODE, perl -e CODE, ...: the code is in the line;
            # it is the line's output only where a substitution stands
            fed = SUBSTITUTED in code
        elif program in SHELLS or program in _INTERPRETERS:
            script = script_operand(args) if program in SHELLS else first_operand(args)
            if script is not None:
                runs.append(script)
            if script is None or script in ("-", "/dev/stdin"):
                flags.add("shell-stdin")
                fed = simple.fed
                if program in SHELLS:
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
        simple: Simple,
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
        simple: Simple,
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
                    self.words(inner, 0, depth + 1, here, Simple(words=inner))
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
        simple: Simple,
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


def _printed_by(text: str) -> str | None:
    """What C{text} prints if it is one C{echo}/C{printf} of literals."""
    if len(text) > _TEXT_CAP or not text.lstrip().startswith(("echo", "printf")):
        return None
    try:
        tokens, complete = lex(text)
    except TooMany:
        return None
    simples = simple_commands(tokens) if complete else []
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
