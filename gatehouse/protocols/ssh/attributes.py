"""
What policy rules can say about SSH commands: the attributes the C{ssh}
adapter declares (L{gatehouse.policy.attributes}).

Exec commands (L{gatehouse.protocols.ssh.commands.classify_exec}) carry
the program (basename), its words, its options one by one (C{-rf} is
C{-r} and C{-f}), the user C{sudo} and its kin run it as, and facts as
flags.  SFTP operations and port forwards carry what they touch as
objects: paths, and C{host:port}.  C{path:} and C{destination:} both
match objects (globs, C{*} crossing C{/}); limit a broad one with
C{kind:}.
"""

from __future__ import annotations

from gatehouse.policy.attributes import (
    ALL,
    ANY,
    GLOB,
    REGEX,
    PolicyAttribute,
    PolicyAttributes,
)
from gatehouse.protocols.ssh.commands import COMMAND_FLAGS, COMMAND_KINDS

__all__ = ["POLICY_ATTRIBUTES"]

POLICY_ATTRIBUTES = PolicyAttributes(
    (
        PolicyAttribute(
            "kind",
            ANY,
            "kinds",
            COMMAND_KINDS,
            doc="exec, shell, subsystem, forward, or the SFTP operation",
        ),
        PolicyAttribute(
            "flag",
            ALL,
            "flags",
            COMMAND_FLAGS,
            doc="facts about an exec command (sudo, pipe-to-shell, ...), all of them",
        ),
        PolicyAttribute(
            "program",
            GLOB,
            "program",
            doc="the program an exec command runs (basename, wrappers seen through)",
        ),
        PolicyAttribute(
            "arg",
            GLOB,
            "args",
            aliases=("args",),
            doc="any argument of the program (globs over each word)",
        ),
        PolicyAttribute(
            "option",
            ANY,
            "option",
            aliases=("options",),
            doc="any of these options (-rf counts as -r and -f; --x=y as --x)",
        ),
        PolicyAttribute(
            "user",
            GLOB,
            "user",
            doc="the user sudo, doas, su or runuser runs the program as",
        ),
        PolicyAttribute(
            "wrapper",
            GLOB,
            "wrapper",
            doc="programs that ran it (sudo, nohup, xargs, sh, find, ...)",
        ),
        PolicyAttribute(
            "path",
            GLOB,
            "objects",
            doc="SFTP paths, paths an exec command redirects to or from, scp paths",
        ),
        PolicyAttribute(
            "destination",
            GLOB,
            "objects",
            doc="host:port of a port forward",
        ),
        PolicyAttribute(
            "subsystem",
            GLOB,
            "subsystem",
            doc="the subsystem requested (sftp)",
        ),
        PolicyAttribute(
            "text",
            REGEX,
            "normalized",
            doc="a regular expression searched in the command's text",
        ),
    )
)
