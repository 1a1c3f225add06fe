"""
Wrappers the exec classifier (L{gatehouse.protocols.ssh.commands}) sees
through: C{sudo}, C{env}, C{sh -c}, C{nohup}, ... (L{WRAPPERS}), and how
shells and interpreters take their code.  Internal to the SSH package.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Callable, Sequence

import attrs

from gatehouse.protocols.ssh.shellwords import PLAIN

__all__ = [
    "SHELLS",
    "WRAPPERS",
    "Step",
    "first_operand",
    "interpreter_code",
    "script_operand",
    "shell_c",
]

SHELLS = frozenset(
    {"sh", "bash", "zsh", "dash", "ksh", "mksh", "ash", "yash", "posh"}
    | {"csh", "tcsh", "fish", "rbash", "ksh93", "busybox-sh"}
)
_POSITIONAL = re.compile(r"\$\{?([0-9@*])\}?")


def interpreter_code(args: Sequence[str]) -> str | None:
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


def first_operand(args: Sequence[str]) -> str | None:
    for arg in args:
        if arg == "--" or not arg.startswith("-"):
            return arg if arg != "--" else None
    return None


def script_operand(args: Sequence[str]) -> str | None:
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
class Step:
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
) -> Callable[[Sequence[str], int], Step]:
    """A wrapper that runs the command after its options (and C{operands})."""
    short = frozenset(f"-{c}" for c in takes_value)
    long = frozenset(long_takes_value.split())

    def unwrap(words: Sequence[str], i: int) -> Step:
        j, _ = _skip_options(words, i, short, long)
        return Step(next=j + operands)

    return unwrap


def _sudo(words: Sequence[str], i: int) -> Step:
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
        return Step(
            string=shlex.join(words[j:]),
            string_flags=frozenset({"shell-c"}),
            flags=flags,
            user=user,
        )
    if shell:
        flags |= {"shell-stdin"}
    return Step(next=j, flags=flags, user=user)


def _doas(words: Sequence[str], i: int) -> Step:
    j, values = _skip_options(words, i, frozenset({"-u", "-C"}))
    return Step(next=j, flags=frozenset({"sudo"}), user=values.get("-u") or "root")


def _su(words: Sequence[str], i: int) -> Step:
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
                return Step(next=j + 1, flags=frozenset({"sudo"}), user=user)
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
                return Step(next=j, flags=frozenset({"sudo"}), user=user)
            operands.append(word)
        j += 1
    user = user or (operands[0] if operands else "root")
    flags = frozenset({"sudo"})
    if string:
        return Step(
            string=string, string_flags=frozenset({"shell-c"}), flags=flags, user=user
        )
    return Step(flags=flags | {"shell-stdin"}, user=user)


def _pkexec(words: Sequence[str], i: int) -> Step:
    j, values = _skip_options(words, i, long_takes_value=frozenset({"--user"}))
    return Step(next=j, flags=frozenset({"sudo"}), user=values.get("--user") or "root")


def shell_c(words: Sequence[str], i: int) -> Step:
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
        return Step(string=string, string_flags=frozenset({"shell-c"}))
    return Step()


def _positional(string: str, args: Sequence[str]) -> str:
    """
    C{sh -c 'eval "$1"' _ 'rm -rf /'}: the string with C{$0}..C{$9},
    C{$@} and C{$*} replaced by the arguments given, where they are plain
    words (others stay: a computed program).
    """
    if not args or not all(PLAIN.fullmatch(a) for a in args):
        return string

    def value(match: re.Match[str]) -> str:
        name = match[1]
        if name in "@*":
            return " ".join(args[1:])
        index = int(name)
        return args[index] if index < len(args) else ""

    return _POSITIONAL.sub(value, string)


def _eval(words: Sequence[str], i: int) -> Step:
    return Step(string=" ".join(words[i + 1 :]), string_flags=frozenset({"eval"}))


def _env(words: Sequence[str], i: int) -> Step:
    j, values = _skip_options(
        words,
        i,
        frozenset({"-u", "-C", "-S"}),
        frozenset({"--unset", "--chdir", "--split-string"}),
    )
    string = values.get("-S") or values.get("--split-string")
    if string:
        rest = shlex.join(words[j:])
        return Step(string=f"{string} {rest}", string_flags=frozenset({"eval"}))
    return Step(next=j)


def _watch(words: Sequence[str], i: int) -> Step:
    j, _ = _skip_options(
        words, i, frozenset({"-n", "-d", "-q"}), frozenset({"--interval"})
    )
    return Step(string=" ".join(words[j:]), string_flags=frozenset({"shell-c"}))


def _flock(words: Sequence[str], i: int) -> Step:
    # flock [options] file -c string, or flock [options] file command ...
    for k in range(i + 1, len(words) - 1):
        if words[k] in ("-c", "--command"):
            return Step(string=words[k + 1], string_flags=frozenset({"shell-c"}))
    j, _ = _skip_options(words, i, frozenset({"-w", "-E"}), frozenset({"--wait"}))
    return Step(next=j + 1)


def _command_builtin(words: Sequence[str], i: int) -> Step:
    j, values = _skip_options(words, i)
    if "-v" in values or "-V" in values:
        return Step()  # a lookup, not a run
    return Step(next=j)


def _xargs(words: Sequence[str], i: int) -> Step:
    j, _ = _skip_options(
        words,
        i,
        frozenset("-" + c for c in "IiLlnPsdEea"),
        frozenset(
            {"--max-args", "--max-procs", "--delimiter", "--arg-file", "--max-chars"}
            | {"--eof", "--replace", "--max-lines", "--process-slot-var"}
        ),
    )
    return Step(next=j, flags=frozenset({"xargs"}))


def _timeout(words: Sequence[str], i: int) -> Step:
    j, _ = _skip_options(words, i, frozenset({"-s", "-k"}), frozenset({"--signal"}))
    return Step(next=j + 1)  # the duration


def _script_wrapper(words: Sequence[str], i: int) -> Step:
    """C{script -qc 'string' [file]}: the string runs in a shell."""
    for k in range(i + 1, len(words) - 1):
        word = words[k]
        if word == "--command" or (
            word.startswith("-") and not word.startswith("--") and word.endswith("c")
        ):
            return Step(string=words[k + 1], string_flags=frozenset({"shell-c"}))
        if word.startswith("--command="):
            return Step(string=word[10:], string_flags=frozenset({"shell-c"}))
    return Step()


def _sg(words: Sequence[str], i: int) -> Step:
    """C{sg group -c 'string'} or C{sg group command ...}."""
    if i + 3 < len(words) + 1 and words[i + 2 : i + 3] == ["-c"]:
        if i + 3 < len(words):
            return Step(string=words[i + 3], string_flags=frozenset({"shell-c"}))
    if i + 2 < len(words):
        return Step(
            string=" ".join(words[i + 2 :]), string_flags=frozenset({"shell-c"})
        )
    return Step()


def _sudoedit(words: Sequence[str], i: int) -> Step:
    return Step(flags=frozenset({"sudo"}))


WRAPPERS: dict[str, Callable[[Sequence[str], int], Step]] = {
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
for _name in SHELLS:
    WRAPPERS[_name] = shell_c
