"""
The commands an SSH session's recording shows its client sent, as the
gateway indexes them: for C{gatehouse index rebuild}
(L{gatehouse.recording.index_check}).  Read from the records the bridge
writes (docs/recording-format.md, SSH): the exec line and subsystem name
recorded after their request, a shell request, a forward's destination,
and each SFTP request that is not a chunk of a transfer its open decided.
"""

from __future__ import annotations

import json
from collections.abc import Iterable

from gatehouse.protocols.ssh.commands import (
    classify_exec,
    exec_line,
    forward_command,
    shell_command,
    subsystem_command,
)
from gatehouse.protocols.ssh.sftp import (
    SFTPPacketReader,
    SFTPProtocolError,
    SFTPSession,
)
from gatehouse.recording.format import Direction, Record, RecordType

__all__ = ["recorded_commands"]

Found = tuple[int, str, str, tuple[str, ...], str | None]


class _SFTP:
    """One SFTP channel's two streams, read as the bridge reads them."""

    def __init__(self) -> None:
        self.client = SFTPPacketReader("client")
        self.server = SFTPPacketReader("server")
        self.session = SFTPSession()
        self.broken = False

    def from_client(self, seq: int, payload: bytes, found: list[Found]) -> None:
        try:
            for packet in self.client.feed(payload):
                operation = self.session.operation(packet)
                if operation is not None and not operation.covered:
                    c = operation.command()
                    key = f"{operation.op} {c.text}"
                    found.append((seq, c.kind, c.text, tuple(c.objects), key))
                self.session.sent(packet)
        except SFTPProtocolError:
            self.broken = True

    def from_server(self, payload: bytes) -> None:
        try:
            packets = self.server.feed(payload)
        except SFTPProtocolError:
            self.broken = True
            return
        for packet in packets:
            try:
                self.session.received(packet)
            except SFTPProtocolError:
                continue


def recorded_commands(records: Iterable[Record]) -> list[Found]:
    """
    Each command the client sent, in order: (seq of the record it points
    to, kind, text, objects, shape: the key the gateway indexes an
    allowed command once by).
    """
    found: list[Found] = []
    #: channel -> the request whose bytes the next client record holds
    awaiting: dict[int, str] = {}
    sftp: dict[int, _SFTP] = {}
    for record in records:
        channel = record.channel
        if record.type == RecordType.EVENT:
            try:
                event = json.loads(record.payload)
            except ValueError:
                continue
            if not isinstance(event, dict):
                continue
            name = event.get("event")
            if name == "ssh-request":
                request = event.get("request")
                if request in ("exec", "subsystem") and "malformed" not in event:
                    awaiting[channel] = request
                elif request == "shell":
                    c = shell_command()
                    found.append((record.seq, c.kind, c.text, c.objects, c.text))
            elif name == "ssh-channel-open" and event.get("type") == "direct-tcpip":
                try:
                    c = forward_command(str(event["host"]), int(event["port"]))
                except (KeyError, TypeError, ValueError):
                    continue
                found.append((record.seq, c.kind, c.text, c.objects, c.text))
            continue
        if record.type != RecordType.DATA:
            continue
        if record.direction == Direction.GATEWAY_TO_CLIENT and channel in sftp:
            sftp[channel].from_server(record.payload)
            continue
        if record.direction != Direction.CLIENT_TO_GATEWAY:
            continue
        request = awaiting.pop(channel, None)
        if request == "exec":
            line = record.payload.decode("utf-8", "replace")
            c = exec_line(line, classify_exec(record.payload))
            found.append((record.seq, c.kind, c.text, tuple(c.objects), line))
        elif request == "subsystem":
            name = record.payload.decode("utf-8", "replace")
            c = subsystem_command(name)
            found.append((record.seq, c.kind, c.text, c.objects, name))
            if name == "sftp":
                sftp[channel] = _SFTP()
        elif channel in sftp and not sftp[channel].broken:
            sftp[channel].from_client(record.seq, record.payload, found)
    return found
