"""
An C{sftp} subsystem channel in the bridge: the client's bytes become SFTP
requests, each a unit for the channel's gate (decided by the policy
unless it continues a transfer its open already decided); the target's
replies complete file operations, each recorded as an C{sftp} event with
its path, size and SHA-256 and indexed.  A refused request is answered by
the gateway (permission denied, with the reason) and never reaches the
target.  Bytes that are not SFTP end the channel.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from gatehouse.gate import PASS, Proposal, Refusal
from gatehouse.protocols.ssh.sftp import (
    SSH_FX_PERMISSION_DENIED,
    FileOperationDone,
    Packet,
    SFTPPacketReader,
    SFTPProtocolError,
    SFTPSession,
    encode_status,
)

if TYPE_CHECKING:
    from gatehouse.protocols.ssh.bridge import ClientChannel

__all__ = ["SFTPChannel"]


class SFTPChannel:
    """The SFTP side of one L{ClientChannel}."""

    def __init__(self, channel: ClientChannel) -> None:
        self.channel = channel
        self.session = SFTPSession()
        self._from_client = SFTPPacketReader("client")
        self._from_server = SFTPPacketReader("server")
        self.broken: str | None = None

    def _broken(self, why: str) -> None:
        if self.broken is None:
            self.broken = why
            self.channel.protocol_error(f"SFTP: {why}")

    # -- client to target ------------------------------------------------

    def client_units(self, data: bytes) -> list[Packet]:
        """The complete SFTP requests in C{data} (the gate's units)."""
        if self.broken is not None:
            return []
        try:
            return self._from_client.feed(data)
        except SFTPProtocolError as e:
            self._broken(str(e))
            return []

    def inspect(self, unit: object) -> object:
        """A request the policy decides, or one that passes (INIT, a chunk)."""
        if type(unit) is not Packet:
            return PASS
        try:
            operation = self.session.operation(unit)
        except SFTPProtocolError as e:
            self._broken(str(e))
            return PASS
        if operation is None or operation.covered:
            return PASS
        command = operation.command()
        # The index keeps one row per distinct allowed key: the operation
        # and its path (a stat and a write of one file are two rows).
        return Proposal((command,), f"{operation.op} {command.text}")

    def forward(self, unit: object) -> int:
        """Send a request on; returns the bytes it held in the gate."""
        assert type(unit) is Packet
        if self.broken is not None:
            return len(unit.raw)
        try:
            self.session.sent(unit)
        except SFTPProtocolError as e:
            self._broken(str(e))
            return len(unit.raw)
        self.channel.to_target(unit.raw)
        return len(unit.raw)

    def refuse(self, unit: object, refusal: Refusal) -> int:
        """Answer a refused request: permission denied, with the reason."""
        if type(unit) is not Packet:
            return 0
        message = refusal.message
        done = self.session.refused(unit, message)
        if done is not None:
            self._done(done)
        if unit.request_id is not None:
            self.channel.to_client(
                encode_status(
                    unit.request_id, SSH_FX_PERMISSION_DENIED, f"gatehouse: {message}"
                )
            )
        return len(unit.raw)

    # -- target to client --------------------------------------------------

    def from_target(self, data: bytes) -> bytes:
        """The server's replies, tracked; passed on as they are."""
        if self.broken is not None:
            return data
        try:
            for packet in self._from_server.feed(data):
                for done in self.session.received(packet):
                    self._done(done)
        except SFTPProtocolError as e:
            self._broken(f"the target: {e}")
        return data

    def end(self, reason: str) -> None:
        """The channel ends: what was still open is recorded as such."""
        for done in self.session.end(reason):
            self._done(done)

    def _done(self, done: FileOperationDone) -> None:
        channel = self.channel
        channel.session.event("sftp", channel=channel.rec, **done.as_event())
