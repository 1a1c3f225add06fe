"""
The C{gatehouse} command: C{gatehouse SUBCOMMAND [options]}.

Subcommands are listed in L{SUBCOMMANDS} by name and import path, and only
the module of the subcommand being run is imported, so C{gatehouse --help}
stays fast however many there are.  A subcommand's module provides a setup
function that adds its arguments to its parser and returns the function that
runs it::

    def configure(parser: argparse.ArgumentParser) -> Handler:
        parser.add_argument("directory")
        return run

    def run(args: argparse.Namespace) -> int:
        ...

A handler returns the exit status.  It reports a user's mistake by raising
L{CommandError} (or L{gatehouse.config.ConfigError}, or an L{OSError} about a
file): that prints clean lines on stderr and exits with status 1, never a
traceback.
"""

from __future__ import annotations

import argparse
import io
import os
import sys
from collections.abc import Callable, Sequence
from importlib import import_module

import attrs

__all__ = ["SUBCOMMANDS", "CommandError", "Handler", "Subcommand", "main"]

Handler = Callable[[argparse.Namespace], int]

_PROG = "gatehouse"


class CommandError(Exception):
    """
    The user asked for something that cannot be done; the message says why.
    """


@attrs.frozen
class Subcommand:
    """
    One C{gatehouse} subcommand, imported only when it runs.

    @ivar name: What the user types.
    @ivar help: One line for C{gatehouse --help}.
    @ivar target: C{"package.module:function"}; the function takes the
        subcommand's C{argparse.ArgumentParser}, adds its arguments and
        returns its L{Handler}.
    """

    name: str
    help: str
    target: str

    def configure(self, parser: argparse.ArgumentParser) -> Handler:
        """
        Import the subcommand and let it set up C{parser}.
        """
        module, _, function = self.target.partition(":")
        handler: Handler = getattr(import_module(module), function)(parser)
        return handler


SUBCOMMANDS: tuple[Subcommand, ...] = (
    Subcommand(
        "check-config",
        "check a configuration file and report every problem in it",
        "gatehouse.cli:configure_check_config",
    ),
    Subcommand("version", "show the version", "gatehouse.cli:configure_version"),
    # Each of these becomes available by uncommenting its line:
    Subcommand(
        "keys",
        "manage recording signing keys",
        "gatehouse.recording.cli_keys:configure",
    ),
    Subcommand(
        "verify", "verify recorded sessions", "gatehouse.recording.cli_verify:configure"
    ),
    Subcommand(
        "index",
        "check the session index against the recordings, or rebuild it",
        "gatehouse.recording.cli_index:configure",
    ),
    Subcommand(
        "sessions",
        "search recorded sessions",
        "gatehouse.recording.cli_sessions:configure_sessions",
    ),
    Subcommand(
        "replay",
        "replay a recorded session",
        "gatehouse.recording.cli_sessions:configure_replay",
    ),
    Subcommand(
        "export",
        "export a recorded session as JSON lines",
        "gatehouse.recording.cli_sessions:configure_export",
    ),
    Subcommand(
        "approvals", "approve or deny commands", "gatehouse.cli_approvals:configure"
    ),
    Subcommand(
        "ssh-cert",
        "exchange your token for a short-lived SSH certificate",
        "gatehouse.protocols.ssh.cli_cert:configure",
    ),
    Subcommand(
        "kubeconfig",
        "write a kubeconfig for kubectl through the gateway",
        "gatehouse.protocols.kubernetes.cli_kubeconfig:configure_kubeconfig",
    ),
    Subcommand(
        "token",
        "print your token as a kubectl ExecCredential (credential plugin)",
        "gatehouse.protocols.kubernetes.cli_kubeconfig:configure_token",
    ),
    Subcommand(
        "demo",
        "run a gateway in front of a throwaway PostgreSQL, ready for psql",
        "gatehouse.demo:configure",
    ),
)


def configure_check_config(parser: argparse.ArgumentParser) -> Handler:
    """
    Set up C{gatehouse check-config FILE}.
    """
    parser.add_argument("file", metavar="FILE", help="the configuration file")
    return _check_config


def _check_config(args: argparse.Namespace) -> int:
    import time

    from gatehouse.config import (
        ConfigError,
        environment_problems,
        load_config,
        signing_key_problems,
    )

    # Checking must not change anything on disk.
    config = load_config(args.file, create_directories=False)
    # What depends on this process's environment and the clock: the
    # daemon runs the same checks at start and on reload.
    errors, warnings = signing_key_problems(config, time.time())
    errors = environment_problems(config) + errors
    if errors:
        raise ConfigError(errors)
    for warning in warnings:
        sys.stderr.write(f"warning: {warning}\n")
    print("ok")
    for target in config.targets:
        # Which upstream account each group logs in as, where that differs
        # by group (PostgreSQL targets with credentials per group).
        logins = target.options.describe_logins() if target.options else []
        if logins:
            print(f"target {target.name}: " + "; ".join(logins))
    return 0


def configure_version(parser: argparse.ArgumentParser) -> Handler:
    """
    Set up C{gatehouse version}.
    """
    return _version


def _version(args: argparse.Namespace) -> int:
    import platform

    from twisted.copyright import version as twisted_version

    from gatehouse import __version__

    print(
        f"gatehouse {__version__} "
        f"(Twisted {twisted_version}, Python {platform.python_version()})"
    )
    return 0


def _chosen(argv: Sequence[str]) -> str | None:
    """
    Return the subcommand named in C{argv}: the first argument that is not
    an option (the top-level parser has no options that take a value).
    """
    for argument in argv:
        if argument == "--":
            return None
        if not argument.startswith("-"):
            return argument
    return None


def _parser(chosen: str | None) -> tuple[argparse.ArgumentParser, dict[str, Handler]]:
    """
    Build the argument parser, importing only the subcommand C{chosen}.
    """
    parser = argparse.ArgumentParser(
        prog=_PROG,
        description="Layer-7 access gateway: configuration, keys and recordings. "
        "Run the gateway itself with: twistd -n gatehouse --config FILE",
    )
    subparsers = parser.add_subparsers(
        dest="command", metavar="COMMAND", title="commands"
    )
    subparsers.required = True
    handlers: dict[str, Handler] = {}
    for subcommand in SUBCOMMANDS:
        subparser = subparsers.add_parser(
            subcommand.name, help=subcommand.help, description=subcommand.help
        )
        if subcommand.name == chosen:
            handlers[subcommand.name] = subcommand.configure(subparser)
    return parser, handlers


def _error(message: str) -> None:
    sys.stderr.write(f"{_PROG}: {message}\n")


def _reader_closed() -> int:
    """
    The reader of our output went away (C{gatehouse sessions | head}): not
    an error, and the interpreter must not complain when it flushes stdout
    at exit.
    """
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError, io.UnsupportedOperation):
        pass
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """
    Run the C{gatehouse} command with C{argv} (default: C{sys.argv[1:]}).

    @return: The exit status: 0 for success, 1 for failure, 2 for a usage
        error.
    """
    from gatehouse.config import ConfigError

    if argv is None:
        argv = sys.argv[1:]
    parser, handlers = _parser(_chosen(argv))
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:
        # argparse has already printed the help or the usage error.
        return e.code if isinstance(e.code, int) else 2
    try:
        return handlers[args.command](args)
    except ConfigError as e:
        for line in e.lines():
            sys.stderr.write(line + "\n")
        return 1
    except CommandError as e:
        _error(f"{args.command}: {e}")
        return 1
    except BrokenPipeError:
        return _reader_closed()
    except OSError as e:
        # A file named on the command line is missing, unreadable, ...
        where = f"{e.filename}: " if e.filename else ""
        _error(f"{args.command}: {where}{e.strerror or e}")
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    # "python -m gatehouse.cli" runs this file as __main__, a second copy of
    # the module: run the real one, whose CommandError subcommands raise.
    from gatehouse.cli import main as _main

    sys.exit(_main())
