"""
A protocol of about a hundred lines on the enforcement core alone: a line
service.  The client's first line is C{AUTH <token> <target>}; each later
line is one command (its first word the kind, the second its object), run
by the target, whose answer comes back on one line.

Identity, the target check, decisions, approvals, masking and recording
all come from the L{Session} and the L{Gate}; the adapter only says what a
line is and what forwarding, refusing and answering mean on its wire.
I/O-free: the tests drive it and read L{LineRelay.to_client}.
"""

from __future__ import annotations

from typing import Any

from twisted.python.failure import Failure
from zope.interface import implementer

from gatehouse.gate import PASS, Gate, IGateDriver, Permit, Proposal, Refusal
from gatehouse.policy import Command, Decision
from gatehouse.recording.format import Direction


class LineService:
    """The target: a key-value store run by lines; C{keys} is its state."""

    def __init__(self, keys: dict[str, str]) -> None:
        self.keys = dict(keys)
        self.ran: list[str] = []

    def run(self, line: str) -> str:
        """Run one command line; its one-line answer."""
        self.ran.append(line)
        verb, _, rest = line.partition(" ")
        name, _, value = rest.partition(" ")
        if verb == "get":
            return f"{name} = {self.keys.get(name, '')}"
        if verb == "set":
            self.keys[name] = value
        elif verb == "drop":
            self.keys.pop(name, None)
        return "OK"


@implementer(IGateDriver)
class LineRelay:
    """One client connection, in memory: the gate's driver for its lines."""

    def __init__(self, hub: Any, service: LineService) -> None:
        self.session = hub.open("lines", "lines-test", "127.0.0.1:40000")
        self.service = service
        self.gate: Gate | None = None
        self.to_client: list[str] = []
        self.paused = False
        self.ended: str | None = None

    def line_received(self, line: str) -> None:
        """The client sent one line (without its newline)."""
        if self.ended is not None:
            return
        if self.gate is None:
            _, _, rest = line.partition(" ")
            token, _, target = rest.partition(" ")
            # The token is never recorded: the session records the outcome.
            self.session.data(Direction.CLIENT_TO_GATEWAY, b"AUTH [REDACTED]\n")
            self.session.authenticate(token, target).addCallbacks(
                self._authenticated, self._refused
            )
            return
        self.session.data(Direction.CLIENT_TO_GATEWAY, line.encode() + b"\n")
        self.gate.receive([line], backlog=len(line))

    def _authenticated(self, identity: object) -> None:
        self.gate = Gate(self.session, self, noun="line", hold_limit=64)
        self._say("OK")

    def _refused(self, failure: Failure) -> None:
        self._say(f"ERR {failure.getErrorMessage()}")
        self.close("authentication failed")

    # -- IGateDriver ---------------------------------------------------------

    def inspect(self, line: str) -> object:
        words = line.split()
        if not words:
            return PASS
        command = Command("lines", words[0], line, objects=tuple(words[1:2]))
        return Proposal((command,), line)

    def admit(self, line: str, permit: Permit) -> object:
        return None

    def forward(self, line: str, permit: Permit | None) -> None:
        if permit is not None:
            self._say(self.service.run(line), masked=True)

    def flush(self) -> None:
        pass

    def refuse(self, line: str, refusal: Refusal) -> None:
        self._say(f"ERR {refusal.message}")

    def held(self, line: str, request: Any, decision: Decision) -> None:
        self._say(f"HELD {request.id}")

    def pause_input(self) -> None:
        self.paused = True

    def resume_input(self) -> None:
        self.paused = False

    def failed(self, failure: Failure) -> None:
        self.close(f"internal error: {failure.getErrorMessage()}")

    # -- the client's side -----------------------------------------------------

    def _say(self, text: str, masked: bool = False) -> None:
        masker = self.session.masker
        if masked and masker is not None:
            text, count = masker.mask_text(text)
            self.session.masked(count)
        self.session.data(Direction.GATEWAY_TO_CLIENT, text.encode() + b"\n")
        self.to_client.append(text)

    def close(self, reason: str) -> None:
        """The connection ends (either side): nothing held goes on."""
        self.ended = reason
        if self.gate is not None:
            self.gate.close()
        self.session.close(reason)
