"""
The C{gatehouse} plugin for twistd: C{twistd -n gatehouse --config gw.yaml}.

This module is imported whenever any program looks for Twisted plugins, so it
imports nothing from gatehouse until a service is actually made.
"""

from __future__ import annotations

import sys

from twisted.application.service import IService, IServiceMaker
from twisted.plugin import IPlugin
from twisted.python import usage
from zope.interface import implementer


class Options(usage.Options):
    """
    Command-line options of C{twistd gatehouse}.
    """

    optParameters = [
        ["config", "c", None, "The gateway's configuration file (YAML).", str],
        [
            "log-format",
            None,
            "text",
            "How log lines are written: text (ISO 8601 UTC times) or json "
            "(one object per line).",
            str,
        ],
    ]

    def postOptions(self) -> None:
        """
        Insist on a configuration file.
        """
        if not self["config"]:
            raise usage.UsageError("--config is required")
        if self["log-format"] not in ("text", "json"):
            raise usage.UsageError("--log-format must be text or json")


@implementer(IServiceMaker, IPlugin)
class GatehouseServiceMaker:
    """
    Makes the gateway's service from its configuration file.
    """

    tapname = "gatehouse"
    description = "A Layer-7 access gateway that records every session."
    options = Options

    def makeService(self, options: Options) -> IService:
        """
        Load C{options["config"]} and build the gateway from it.

        A bad configuration is the operator's error, not the program's: its
        problems are written to stderr, one per line, and the process exits
        with status 1 instead of showing a traceback.  twistd calls this
        before it starts logging or daemonizes, so stderr is still the
        operator's terminal.

        Unset C{password_env} variables are such errors too.  Signing keys
        that cover nothing now are not (keys issued later are picked up):
        they are logged, and C{/readyz} says not ready.
        """
        from twisted.internet import reactor

        from gatehouse.config import ConfigError, environment_problems, load_config
        from gatehouse.logs import observe_for_twistd
        from gatehouse.service import makeService

        try:
            config = load_config(options["config"])
            problems = environment_problems(config)
            if problems:
                raise ConfigError(problems)
            # Building may find more (the SSH user CA's key).
            service = makeService(config, reactor, drain=True, signals=True)
        except ConfigError as e:
            for line in e.lines():
                sys.stderr.write(line + "\n")
            sys.stderr.flush()
            raise SystemExit(1)
        # Logging as the operator chose (--log-format, and twistd's own
        # --logfile and friends: options.parent, when run by twistd).
        # SIGHUP reloads, SIGTERM/SIGINT drain (see install_signal_handlers).
        return observe_for_twistd(
            service,
            getattr(options, "parent", None),
            options["log-format"],
        )


gatehouse = GatehouseServiceMaker()
