"""
Replay and export recorded SSH sessions.

C{gatehouse replay} shows an SSH session channel by channel (see
L{transcript}): a terminal (a pty with a shell or a command) as the
terminal showed it, in its original time unless told not to wait; an exec
as C{$ command}, its output, stderr marked, and its exit status; SFTP as
its file operations; forwards with their byte counts; the gateway's
decisions and approvals where they happened.  C{gatehouse export --format
asciicast} writes one terminal channel as asciicast v2 (see
L{asciicast}), for asciinema.

Importing this package registers both with L{gatehouse.recording.render}.
"""

from __future__ import annotations

from gatehouse.protocols.ssh.replay.asciicast import export_asciicast
from gatehouse.protocols.ssh.replay.transcript import render_ssh
from gatehouse.recording.render import register_exporter, register_renderer

__all__ = ["export_asciicast", "render_ssh"]

register_renderer("ssh", render_ssh)
register_exporter("ssh", "asciicast", export_asciicast)
