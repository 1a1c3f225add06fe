"""
The channel bridge: every channel a client opens gets a twin on the
target connection, and everything between the two passes through here,
recorded, in order, under flow control.

- A C{session} channel has one L{Gate}: its requests (C{exec}, C{shell},
  C{subsystem}, C{pty-req}, ...), data and EOF are units, in the order
  the client sent them.  C{exec}, C{shell} and C{subsystem} are commands
  for the policy; a held C{exec} keeps everything after it, and the
  client reads on stderr that it waits and how to approve it.  Refused,
  the program never starts on the target: the reason goes to stderr and
  the channel ends with exit status L{REFUSED_STATUS}.  On an C{sftp}
  subsystem each SFTP request is a unit too (L{gatehouse.protocols.ssh.sftp}).
- A C{direct-tcpip} channel (C{ssh -L}) is one command, the destination,
  decided before the target is asked to connect.
- Remote forwarding, agent forwarding and X11 are refused.

Flow control is end to end: the gateway gives a client channel more
window only as its twin on the other side takes the bytes (see
L{_Twin}); a client that stops reading stops the target, and a
connection's memory stays within about two windows per channel.

Records follow docs/recording-format.md (SSH): channel n is recorded on
record channel C{n + 1}, its stderr with L{STDERR_BIT} set.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from functools import partial
from typing import Any

import attrs
from twisted.conch import error
from twisted.conch.ssh import common, connection
from twisted.conch.ssh.channel import SSHChannel
from twisted.conch.ssh.session import parseRequest_pty_req, parseRequest_window_change
from twisted.internet import defer
from twisted.internet.defer import Deferred
from twisted.internet.threads import deferToThread
from twisted.python.failure import Failure
from zope.interface import implementer

from gatehouse.gate import (
    PASS,
    Gate,
    HoldReason,
    IGateDriver,
    Permit,
    Proposal,
    Refusal,
    RefusalKind,
    Wait,
)
from gatehouse.policy.rules import Decision
from gatehouse.protocols.ssh.commands import (
    classify_exec,
    exec_line,
    forward_command,
    shell_command,
    subsystem_command,
)
from gatehouse.protocols.ssh.config import SSHListenerOptions
from gatehouse.protocols.ssh.transport import quiet_logger
from gatehouse.protocols.ssh.typed import TypedLines
from gatehouse.protocols.ssh.upstream import BridgedConnection, UpstreamConnection
from gatehouse.recording.format import Direction
from gatehouse.recording.interfaces import RecordingFailed
from gatehouse.session import Session

__all__ = ["REFUSED_STATUS", "STDERR_BIT", "GatewayConnection", "record_channel"]

#: set on a record channel for a channel's extended data (stderr)
STDERR_BIT = 0x8000
#: the exit status of a command the gateway kept from the target
REFUSED_STATUS = 126
#: exec lines longer than this are classified in a thread
CLASSIFY_INLINE = 2048
#: each side's window per channel: what may be in flight, and buffered
WINDOW = 1 << 20
MAX_PACKET = 32768
#: environment variables a client may pass (sshd's AcceptEnv applies too)
ENV_ALLOWED = ("LANG", "TERM", "LC_*")
#: requests that start the program of a session channel
STARTS = frozenset({b"shell", b"exec", b"subsystem"})
#: requests that mean a forward the gateway does not offer
REFUSED_REQUESTS = {
    b"x11-req": "X11 forwarding",
    b"auth-agent-req@openssh.com": "agent forwarding",
    b"auth-agent-req": "agent forwarding",
}

_C2G, _G2C = Direction.CLIENT_TO_GATEWAY, Direction.GATEWAY_TO_CLIENT


def record_channel(channel_id: int) -> int:
    """The record channel of the gateway's channel C{channel_id}."""
    return 1 + channel_id % (STDERR_BIT - 2)


def env_allowed(name: str) -> bool:
    """Whether a client may set environment variable C{name}."""
    return name in ("LANG", "TERM") or name.startswith("LC_")


# -- units of a session channel ------------------------------------------


@attrs.define(eq=False)
class Request:
    """A channel request from the client; C{reply} fires with its answer."""

    name: bytes
    data: bytes
    want_reply: bool
    reply: Deferred[bool]
    fields: dict[str, Any]


@attrs.define(eq=False)
class Data:
    """Bytes the client sent on the channel (C{ext}: extended data type)."""

    payload: bytes
    ext: int | None = None


@attrs.define(eq=False)
class EOF:
    """The client will send no more data on the channel."""


def _describe(name: bytes, data: bytes) -> dict[str, Any]:
    """A channel request's fields, for its C{ssh-request} event."""
    text = name.decode("utf-8", "replace")
    try:
        if name == b"pty-req":
            term, (rows, cols, xp, yp), _modes = parseRequest_pty_req(data)
            return {
                "request": text,
                "term": term.decode("utf-8", "replace"),
                "cols": cols,
                "rows": rows,
                "width_px": xp,
                "height_px": yp,
            }
        if name == b"window-change":
            rows, cols, xp, yp = parseRequest_window_change(data)
            return {
                "request": text,
                "cols": cols,
                "rows": rows,
                "width_px": xp,
                "height_px": yp,
            }
        if name == b"env":
            var, value, _ = common.getNS(data, 2)
            return {
                "request": text,
                "name": var.decode("utf-8", "replace"),
                "value": value.decode("utf-8", "replace"),
            }
        if name in (b"subsystem", b"signal"):
            key = "name" if name == b"subsystem" else "signal"
            return {
                "request": text,
                key: common.getNS(data)[0].decode("utf-8", "replace"),
            }
        if name == b"exec":
            common.getNS(data)
    except (struct.error, ValueError, IndexError) as e:
        return {"request": text, "malformed": str(e)}
    return {"request": text}


# -- the two sides of a channel ------------------------------------------


class _Twin(SSHChannel):
    """
    One side of a bridged channel.  C{peer} is the other side: what this
    side receives is written there.  While the peer cannot take more (its
    window on the far end is full) or the gate holds too much, this side
    gives its sender no more window: bytes in flight stay bounded.
    Requests, EOF and close wait behind data still buffered, as they
    followed it on the wire.
    """

    _log = quiet_logger()

    def __init__(self, **kw: Any) -> None:
        super().__init__(localWindow=WINDOW, localMaxPacket=MAX_PACKET, **kw)
        self.peer: _Twin | None = None
        self.withheld: set[str] = set()
        self._after: list[Callable[[], object]] = []

    # -- flow control ------------------------------------------------------

    def withhold(self, why: str) -> None:
        """Give the sender no more window until L{grant}(C{why})."""
        self.withheld.add(why)

    def grant(self, why: str) -> None:
        """C{why} no longer holds the window back; top it up if nothing does."""
        self.withheld.discard(why)
        if self.withheld or self.localClosed or self.conn is None:
            return
        deficit = self.localWindowSize - self.localWindowLeft
        if deficit > 0:
            self.conn.adjustWindow(self, deficit)

    def stopWriting(self) -> None:
        if self.peer is not None:
            self.peer.withhold("peer")

    def addWindowBytes(self, data: int) -> None:
        super().addWindowBytes(data)
        self._drained()

    def _drained(self) -> None:
        while self._after and not self.buf and not self.extBuf:
            self._after.pop(0)()
        if not self.buf and not self.extBuf and self.peer is not None:
            self.peer.grant("peer")

    def after_data(self, action: Callable[[], object]) -> None:
        """Do C{action} once the data written so far has gone out."""
        if self.buf or self.extBuf or self._after:
            self._after.append(action)
        else:
            action()

    def send_request(self, name: bytes, data: bytes) -> None:
        """Send a request wanting no reply, after the data before it."""

        def send() -> None:
            if not self.localClosed and self.conn is not None:
                self.conn.sendRequest(self, name, data, wantReply=0)

        self.after_data(send)

    def send_eof(self) -> None:
        """Send EOF, after the data before it."""

        def send() -> None:
            if not self.localClosed and self.conn is not None:
                self.conn.sendEOF(self)

        self.after_data(send)

    def close(self) -> None:
        """Close the channel once the data written so far has gone out."""
        if self.conn is not None and not self.localClosed:
            self.after_data(self.loseConnection)


class TargetChannel(_Twin):
    """The target's side of a bridged channel."""

    def __init__(self, name: bytes, client: ClientChannel) -> None:
        super().__init__()
        self.name = name
        self.client = client
        self.peer = client
        self.opened: Deferred[TargetChannel] = Deferred()

    def channelOpen(self, specificData: bytes) -> None:
        self.opened.callback(self)

    def openFailed(self, reason: Exception) -> None:
        self.opened.errback(reason)

    def dataReceived(self, data: bytes) -> None:
        self.client.from_target(data, None)

    def extReceived(self, dataType: int, data: bytes) -> None:
        self.client.from_target(data, dataType)

    def requestReceived(self, requestType: bytes, data: bytes) -> bool:
        return self.client.target_request(requestType, data)

    def eofReceived(self) -> None:
        self.client.target_eof()

    def closeReceived(self) -> None:
        self.client.target_closed()

    def closed(self) -> None:
        self.client.target_gone()


@implementer(IGateDriver)
class ClientChannel(_Twin):
    """
    The client's side of a bridged channel, and the gate's driver for it.
    """

    def __init__(
        self,
        kind: bytes,
        conn: GatewayConnection,
        open_data: bytes,
    ) -> None:
        super().__init__(conn=conn)
        self.name = kind
        self.gateway = conn
        self.session: Session = conn.session
        self.open_data = open_data
        self.target: TargetChannel | None = None
        self.gate: Gate | None = None
        self.rec = 0
        self.started: str | None = None
        self.ended = False
        self.sftp: Any = None
        #: the command lines typed into an interactive shell (for the index)
        self.typed: TypedLines | None = None
        self.queued = 0
        self.counts = [0, 0]

    # -- opening -----------------------------------------------------------

    def attach(self, channel_id: int) -> None:
        """The gateway numbered this channel: its records and gate follow."""
        self.id = channel_id  # type: ignore[assignment]  # Conch types it None
        self.rec = record_channel(channel_id)
        if self.name == b"session":
            self.gate = Gate(
                self.session,
                self,
                noun="command",
                channel=self.rec,
                hold_limit=WINDOW,
            )

    def open_target(self) -> Deferred[TargetChannel]:
        """Open the twin on the target (C{direct-tcpip}: its destination)."""
        twin = TargetChannel(self.name, self)
        self.target = twin
        self.peer = twin
        self.gateway.upstream.openChannel(twin, self.open_data)
        return twin.opened

    # -- client to target ------------------------------------------------

    def _record(self, direction: Direction, payload: bytes, ext: int | None) -> bool:
        try:
            self.session.data(
                direction, payload, self.rec | STDERR_BIT if ext else self.rec
            )
        except RecordingFailed:
            self.gateway.recording_failed()
            return False
        self.counts[0 if direction == _C2G else 1] += len(payload)
        return True

    def dataReceived(self, data: bytes) -> None:
        self._from_client(data, None)

    def extReceived(self, dataType: int, data: bytes) -> None:
        self._from_client(data, dataType)

    def _from_client(self, data: bytes, ext: int | None) -> None:
        if self.ended or not self._record(_C2G, data, ext):
            return
        if self.typed is not None and ext is None:
            for line in self.typed.feed(data):
                if line.text.strip():
                    self.session.command_seen("typed", line.text, channel=self.rec)
        if self.gate is None:
            self._to_target(data, ext)
            return
        if self.sftp is not None and ext is None:
            units = self.sftp.client_units(data)
        else:
            units = [Data(data, ext)]
        self.queued += len(data)
        self.gate.receive(units, self.queued)

    def request(self, name: bytes, data: bytes, want_reply: bool) -> Deferred[bool]:
        """A channel request from the client: recorded, then to the gate."""
        fields = _describe(name, data)
        seq = self.session.event("ssh-request", channel=self.rec, **fields)
        if name == b"shell":
            self.session.anchor(self.rec, seq)
        if name in (b"exec", b"subsystem") and "malformed" not in fields:
            # The command's bytes, as sent: the index points to them.
            self._record(_C2G, common.getNS(data)[0], None)
        if name == b"subsystem" and fields.get("name") == "sftp" and self.sftp is None:
            # What the client sends after this request is SFTP (if the
            # request is refused, the channel ends).
            from gatehouse.protocols.ssh.sftp_channel import SFTPChannel

            self.sftp = SFTPChannel(self)
        reply: Deferred[bool] = Deferred()
        unit = Request(name, data, want_reply, reply, fields)
        if self.gate is None or self.ended:
            reply.callback(False)
        else:
            self.gate.receive([unit], self.queued)
        return reply

    def eofReceived(self) -> None:
        self.session.event("ssh-eof", channel=self.rec, **{"from": "client"})
        if self.gate is not None and not self.ended:
            self.gate.receive([EOF()], self.queued)
        elif self.target is not None:
            self.target.send_eof()

    def closeReceived(self) -> None:
        self.session.event(
            "ssh-channel-close",
            channel=self.rec,
            bytes_from_client=self.counts[0],
            bytes_to_client=self.counts[1],
            **{"from": "client"},
        )
        self._stop_gate()
        self.ended = True
        if self.sftp is not None:
            self.sftp.end("channel closed by the client")
        if self.target is not None:
            self.target.close()
        self.loseConnection()

    def closed(self) -> None:
        self._stop_gate()
        if self.sftp is not None and not self.session.closed:
            # The connection ended under the channel: what was open is
            # recorded as cut off.
            self.sftp.end("connection closed")
        if self.target is not None:
            self.target.close()

    def _stop_gate(self) -> None:
        gate = self.gate
        if gate is not None and not gate.closed:
            gate.cancel()
            gate.close()

    def _to_target(self, data: bytes, ext: int | None) -> None:
        target = self.target
        if target is None or target.localClosed:
            return
        if ext is None:
            target.write(data)
        else:
            target.writeExtended(ext, data)

    # -- the gate's driver ---------------------------------------------------

    def inspect(self, unit: object) -> object:
        if type(unit) is not Request:
            if self.sftp is not None:
                return self.sftp.inspect(unit)
            return PASS
        if unit.name not in STARTS:
            return PASS
        if self.started is not None:
            # One program per session channel (RFC 4254 6.5).
            return Refusal(
                RefusalKind.PROTOCOL,
                f"this channel already runs a {self.started}",
            )
        if unit.name == b"exec":
            if "malformed" in unit.fields:
                return Refusal(RefusalKind.UNPARSEABLE, "malformed exec request")
            line = common.getNS(unit.data)[0]
            text = line.decode("utf-8", "replace")
            commands = unit.fields.pop("_commands", None)
            if commands is None and len(line) > CLASSIFY_INLINE:
                # A long line costs milliseconds to read: off the reactor.
                return Wait(
                    HoldReason.CLASSIFICATION, partial(self._classify, unit, line)
                )
            if commands is None:
                commands = classify_exec(line)
            return Proposal(commands, text, shown=(exec_line(text, commands),))
        if unit.name == b"subsystem":
            name = unit.fields.get("name", "")
            return Proposal((subsystem_command(name),), name)
        return Proposal((shell_command(),), "shell")

    def _classify(self, unit: Request, line: bytes) -> None:
        def done(result: object) -> None:
            gate = self.gate
            if gate is None or not gate.holds(unit, HoldReason.CLASSIFICATION):
                return
            if isinstance(result, Failure):
                gate.settle(unit, result)
                return
            unit.fields["_commands"] = result
            gate.resume()

        deferToThread(classify_exec, line).addBoth(done)

    def admit(self, unit: object, permit: Permit) -> object:
        return None

    def forward(self, unit: object, permit: Permit | None) -> None:
        if self.ended:
            return
        kind = type(unit)
        if kind is Data:
            self.queued -= len(unit.payload)  # type: ignore[attr-defined]
            self._to_target(unit.payload, unit.ext)  # type: ignore[attr-defined]
        elif kind is EOF:
            if self.target is not None:
                self.target.send_eof()
        elif kind is Request:
            self._forward_request(unit)  # type: ignore[arg-type]
        else:
            self.queued -= self.sftp.forward(unit)

    def _forward_request(self, unit: Request) -> None:
        name = unit.name
        refused = REFUSED_REQUESTS.get(name)
        if refused is not None:
            self._stderr(f"gatehouse: {refused} is not allowed through this gateway")
            self.session.event(
                "ssh-request-refused", channel=self.rec, request=name.decode()
            )
            unit.reply.callback(False)
            return
        if name == b"env":
            var = unit.fields.get("name", "")
            if not env_allowed(var):
                self.session.event(
                    "ssh-request-refused",
                    channel=self.rec,
                    request="env",
                    name=var,
                )
                unit.reply.callback(False)
                return
        if name not in (b"pty-req", b"env", b"window-change", b"signal", b"break") and (
            name not in STARTS
        ):
            self.session.event(
                "ssh-request-refused",
                channel=self.rec,
                request=name.decode("utf-8", "replace"),
            )
            unit.reply.callback(False)
            return
        if name in STARTS:
            self.started = name.decode()
            if name == b"shell":
                # Typed lines are recorded and indexed, not decided.
                self.typed = TypedLines()
        target = self.target
        if target is None or target.localClosed:
            unit.reply.callback(False)
            return
        if not unit.want_reply:
            target.send_request(name, unit.data)
            unit.reply.callback(True)
            return

        def send() -> None:
            d = self.gateway.upstream.sendRequest(target, name, unit.data, wantReply=1)
            d.addCallbacks(lambda _: True, lambda _: False).chainDeferred(unit.reply)

        target.after_data(send)

    def refuse(self, unit: object, refusal: Refusal) -> None:
        if type(unit) is Request:
            self._refuse_start(unit, refusal)
        elif self.sftp is not None:
            self.queued -= self.sftp.refuse(unit, refusal)
        else:
            self.queued -= len(getattr(unit, "payload", b""))

    def _refuse_start(self, unit: Request, refusal: Refusal) -> None:
        what = unit.fields.get("request", "request")
        self._stderr(f"gatehouse: {what} refused: {refusal.message}")
        if unit.name not in STARTS:
            unit.reply.callback(False)
            return
        # The client waits for the program: it gets the reason, an exit
        # status, and the end of the channel, and the target ran nothing.
        self.ended = True
        unit.reply.callback(True)
        self.send_request(b"exit-status", struct.pack(">L", REFUSED_STATUS))
        self.session.event(
            "ssh-exit", channel=self.rec, status=REFUSED_STATUS, by="gateway"
        )
        self.send_eof()
        self.close()
        if self.target is not None:
            self.target.close()

    def held(self, unit: object, request: object, decision: Decision) -> None:
        why = decision.message or f"rule {decision.rule}"
        lines = [f"gatehouse: held for approval ({why})"]
        if request is not None:
            lines.append(f"gatehouse: request {request.id}")  # type: ignore[attr-defined]
            how = self.session.approval_instructions(request)  # type: ignore[arg-type]
            if how:
                lines.append(f"gatehouse: {how}")
        for line in lines:
            self._stderr(line)

    def pause_input(self) -> None:
        self.withhold("gate")

    def resume_input(self) -> None:
        self.grant("gate")

    def flush(self) -> None:
        pass

    def failed(self, failure: Failure) -> None:
        self._log.failure(
            "SSH channel of session {sid}", failure, sid=str(self.session.id)
        )
        self.ended = True
        self._stderr("gatehouse: internal error; the channel is closed")
        self.close()
        if self.target is not None:
            self.target.close()

    # -- target to client ------------------------------------------------

    def protocol_error(self, why: str) -> None:
        """The client or the target broke the channel's protocol: end it."""
        self.session.event("ssh-protocol-error", channel=self.rec, reason=why)
        self._stderr(f"gatehouse: {why}; the channel is closed")
        self.ended = True
        self.close()
        if self.target is not None:
            self.target.close()

    def to_target(self, data: bytes) -> None:
        """Send C{data} (already recorded as the client's) to the target."""
        self._to_target(data, None)

    def to_client(self, data: bytes) -> None:
        """Send the client C{data} of the gateway's own (recorded first)."""
        if not self.localClosed and self._record(_G2C, data, None):
            self.write(data)

    def _stderr(self, line: str) -> None:
        """Tell the client something on the channel's stderr (recorded)."""
        if self.localClosed:
            return
        data = (line + "\r\n").encode("utf-8", "replace")
        if self._record(_G2C, data, 1):
            self.writeExtended(1, data)

    def from_target(self, data: bytes, ext: int | None) -> None:
        """Bytes from the target: recorded, then to the client."""
        if self.localClosed:
            return
        if self.sftp is not None and ext is None:
            data = self.sftp.from_target(data)
            if not data:
                return
        if not self._record(_G2C, data, ext):
            return
        if ext is None:
            self.write(data)
        else:
            self.writeExtended(ext, data)

    def target_request(self, name: bytes, data: bytes) -> bool:
        """A request from the target (exit-status, exit-signal, ...)."""
        if name == b"exit-status":
            try:
                status = struct.unpack(">L", data[:4])[0]
            except struct.error:
                return False
            self.session.event("ssh-exit", channel=self.rec, status=status)
        elif name == b"exit-signal":
            try:
                signal, rest = common.getNS(data)
                core = rest[:1] == b"\x01"
                message = common.getNS(rest[1:])[0]
            except (struct.error, ValueError, IndexError):
                return False
            self.session.event(
                "ssh-exit",
                channel=self.rec,
                signal=signal.decode("utf-8", "replace"),
                core_dumped=core,
                message=message.decode("utf-8", "replace"),
            )
        elif name == b"keepalive@openssh.com":
            return False
        else:
            self.session.event(
                "ssh-target-request",
                channel=self.rec,
                request=name.decode("utf-8", "replace"),
            )
        self.send_request(name, data)
        return True

    def target_eof(self) -> None:
        """The target sends no more data on the channel."""
        self.session.event("ssh-eof", channel=self.rec, **{"from": "target"})
        self.send_eof()

    def target_closed(self) -> None:
        """The target closed its side: so does the client's, after the data."""
        if self.sftp is not None:
            self.sftp.end("channel closed by the target")
        self.session.event(
            "ssh-channel-close",
            channel=self.rec,
            bytes_from_client=self.counts[0],
            bytes_to_client=self.counts[1],
            **{"from": "target"},
        )
        self.close()

    def target_gone(self) -> None:
        """Both sides of the target's channel are closed."""
        if not self.localClosed:
            self.close()


# -- the connection ------------------------------------------------------


class GatewayConnection(BridgedConnection):
    """
    The client's connection service: channels are opened on the target
    before the client hears they are open, and bridged.
    """

    _log = quiet_logger()

    def __init__(
        self,
        session: Session,
        upstream: UpstreamConnection,
        options: SSHListenerOptions,
    ) -> None:
        super().__init__()
        self.session = session
        self.upstream = upstream
        self.options = options
        self._want_reply = False

    def recording_failed(self) -> None:
        """Nothing may cross unrecorded: the connection ends now."""
        wire: Any = self.transport.transport if self.transport is not None else None
        if wire is not None:
            wire.abortConnection()

    # -- channels --------------------------------------------------------

    def ssh_CHANNEL_OPEN(self, packet: bytes) -> None:
        kind, rest = common.getNS(packet)
        sender, window, max_packet = struct.unpack(">3L", rest[:12])
        data = rest[12:]

        def failure(code: int, why: str) -> None:
            self.session.event(
                "ssh-channel-refused", type=kind.decode("utf-8", "replace"), reason=why
            )
            if self.transport is None:
                return
            self.transport.sendPacket(
                connection.MSG_CHANNEL_OPEN_FAILURE,
                struct.pack(">2L", sender, code)
                + common.NS(why.encode())
                + common.NS(b""),
            )

        if kind not in (b"session", b"direct-tcpip"):
            what = {
                b"x11": "X11 forwarding",
                b"auth-agent@openssh.com": "agent forwarding",
                b"forwarded-tcpip": "remote forwarding",
            }.get(kind, f"channel type {kind.decode('utf-8', 'replace')!r}")
            failure(
                connection.OPEN_ADMINISTRATIVELY_PROHIBITED,
                f"gatehouse: {what} is not allowed through this gateway",
            )
            return
        if len(self.channels) >= self.options.max_channels:
            failure(
                connection.OPEN_RESOURCE_SHORTAGE,
                f"gatehouse: at most {self.options.max_channels} channels"
                " per connection",
            )
            return
        channel = ClientChannel(kind, self, data)
        channel.remoteWindowLeft = window
        channel.remoteMaxPacket = max_packet
        local = self.localChannelID
        self.localChannelID += 1
        channel.attach(local)
        fields: dict[str, Any] = {"type": kind.decode()}
        if kind == b"direct-tcpip":
            try:
                host, port, orig, orig_port = _direct_tcpip(data)
            except (struct.error, ValueError, IndexError):
                failure(connection.OPEN_CONNECT_FAILED, "gatehouse: malformed request")
                return
            fields.update(
                host=host,
                port=port,
                destination=f"{host}:{port}",
                originator=orig,
                originator_port=orig_port,
            )
        seq = self.session.event("ssh-channel-open", channel=channel.rec, **fields)
        self.session.anchor(channel.rec, seq)
        if kind == b"direct-tcpip":
            d = self._forward_decision(channel, f"{fields['host']}:{fields['port']}")
        else:
            d = defer.succeed(None)
        d.addCallback(lambda _: channel.open_target())

        def opened(_: object) -> None:
            if self.transport is None:
                return
            self.channels[local] = channel
            self.channelsToRemoteChannel[channel] = sender
            self.localToRemoteChannel[local] = sender
            self.transport.sendPacket(
                connection.MSG_CHANNEL_OPEN_CONFIRMATION,
                struct.pack(
                    ">4L",
                    sender,
                    local,
                    channel.localWindowSize,
                    channel.localMaxPacket,
                ),
            )
            channel.channelOpen(b"")

        def refused(reason: Failure) -> None:
            if reason.check(error.ConchError):
                desc, code = reason.value.args[0], reason.value.args[1]  # type: ignore[union-attr]
                if isinstance(desc, int):
                    desc, code = code, desc
                why = (
                    desc.decode("utf-8", "replace")
                    if isinstance(desc, bytes)
                    else str(desc)
                )
                failure(code, why)
            else:
                self._log.failure("opening a channel", reason)
                failure(connection.OPEN_CONNECT_FAILED, "gatehouse: internal error")

        d.addCallbacks(opened, refused)

    def _forward_decision(
        self, channel: ClientChannel, destination: str
    ) -> Deferred[None]:
        """Decide a C{direct-tcpip} destination (as one unit through a gate)."""
        result: Deferred[None] = Deferred()
        gate = Gate(
            self.session,
            _ForwardDriver(result, channel),
            noun="forward",
            channel=channel.rec,
        )
        gate.receive([destination])
        return result

    def ssh_CHANNEL_REQUEST(self, packet: bytes) -> Any:
        local = struct.unpack(">L", packet[:4])[0]
        name, rest = common.getNS(packet[4:])
        channel = self.channels.get(local)
        if channel is None:
            return None
        want = rest[:1] == b"\x01"
        d = channel.request(name, rest[1:], want)
        if want:
            d.addCallback(self._cbChannelRequest, local)
            d.addErrback(self._ebChannelRequest, local)
        return d

    def gotGlobalRequest(self, requestType: bytes, data: bytes) -> int:
        name = requestType.decode("utf-8", "replace")
        if requestType not in (
            b"keepalive@openssh.com",
            b"no-more-sessions@openssh.com",
        ):
            self.session.event("ssh-global-refused", request=name)
        return 0

    def serviceStopped(self) -> None:
        super().serviceStopped()
        self.upstream.disconnect()


def _direct_tcpip(data: bytes) -> tuple[str, int, str, int]:
    host, rest = common.getNS(data)
    (port,) = struct.unpack(">L", rest[:4])
    orig, rest = common.getNS(rest[4:])
    (orig_port,) = struct.unpack(">L", rest[:4])
    return host.decode("utf-8"), port, orig.decode("utf-8"), orig_port


@implementer(IGateDriver)
class _ForwardDriver:
    """The gate's driver for one forward: its one unit is the destination."""

    def __init__(self, result: Deferred[None], channel: ClientChannel) -> None:
        self.result = result
        self.channel = channel

    def inspect(self, unit: object) -> object:
        assert isinstance(unit, str)
        host, _, port = unit.rpartition(":")
        return Proposal((forward_command(host, int(port)),), unit)

    def admit(self, unit: object, permit: Permit) -> object:
        return None

    def forward(self, unit: object, permit: Permit | None) -> None:
        self.result.callback(None)

    def refuse(self, unit: object, refusal: Refusal) -> None:
        self.result.errback(
            error.ConchError(
                f"gatehouse: forwarding to {unit} refused: {refusal.message}",
                connection.OPEN_ADMINISTRATIVELY_PROHIBITED,
            )
        )

    def held(self, unit: object, request: object, decision: Decision) -> None:
        pass

    def flush(self) -> None:
        pass

    def pause_input(self) -> None:
        pass

    def resume_input(self) -> None:
        pass

    def failed(self, failure: Failure) -> None:
        if not self.result.called:
            self.result.errback(failure)
