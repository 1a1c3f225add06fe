"""
The gate: what every protocol's relay shares between reading its client
and forwarding to the target.

One L{Gate} per stream of commands (a PostgreSQL connection, an SSH
channel, a stream of HTTP requests).  The protocol reads its client into
units (messages, lines, requests) and feeds them to the gate in order.
The gate asks the protocol's L{IGateDriver} what each unit is, decides the
commands with the session's policy, indexes them, holds a unit for an
approval (or for the driver's own wait), and tells the driver to forward
or to refuse each unit.  Held input stays in the gate's queue, in order,
and the client's reading pauses when too much waits behind a hold.

The gate is the one way a unit gets a L{Permit}: a unit the driver names
as carrying commands is forwarded only after an allow decision or an
approval, and a unit the driver waits on (a barrier, a classification in a
worker) can afterwards only be decided again or refused.  There is no call
that forwards a held unit without a decision.

No I/O and no reactor here: the driver does the protocol's side, the
L{Session} records, decides and asks for approvals.
"""

from __future__ import annotations

import enum
from collections import deque
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Protocol

import attrs
from twisted.internet.defer import CancelledError, Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import Interface

from gatehouse.policy.rules import ERROR, Command, Decision

if TYPE_CHECKING:
    from gatehouse.session import Session


class HoldReason(enum.Enum):
    """Why the gate holds a unit (and everything the client sent after it)."""

    #: approvers are asked; the unit goes on only if they approve
    APPROVAL = "approval"
    #: the driver reads the unit's commands off the reactor (a worker)
    CLASSIFICATION = "classification"
    #: the driver can read the unit only once the target has answered
    #: everything before it
    BARRIER = "barrier"
    #: the unit is allowed; the driver looks something up (a catalog)
    #: before it may go
    LOOKUP = "lookup"


class RefusalKind(enum.Enum):
    """Why a unit was kept from the target."""

    #: a deny rule of the policy
    POLICY = "policy"
    #: the driver's own verdict (built-in protections)
    PROTECTION = "protection"
    #: the command could not be parsed (the protocol's own syntax error)
    UNPARSEABLE = "unparseable"
    #: approvers denied it, or the request expired
    NOT_APPROVED = "not-approved"
    #: the client cancelled it while it was held
    CANCELLED = "cancelled"
    #: the gateway could not check it (an error while it was held)
    UNCHECKED = "unchecked"
    #: it cannot be read now as the target would read it
    UNREADABLE = "unreadable"
    #: larger than the gateway checks
    TOO_LONG = "too-long"
    #: the driver refused it for a reason of its protocol (masking)
    PROTOCOL = "protocol"


@attrs.frozen
class Refusal:
    """
    A unit kept from the target, and what the client is told.

    @ivar code: the protocol's error code for it (a SQLSTATE), when the
        one who refused chose one; else the driver picks by C{kind}.
    @ivar decision: the decision that refused it, if one did.
    @ivar detail: the driver's own data about the unit (L{Proposal.detail}).
    """

    kind: RefusalKind
    message: str
    code: str | None = None
    decision: Decision | None = None
    detail: object = None


# Not frozen: one is built per statement on the relay's hot path, and a
# frozen attrs class costs three times as much to build (0.8 against 2.6
# microseconds here).  Nothing changes one after it is built.
@attrs.define
class Proposal:
    """
    A unit carries commands: the gate decides them.

    @ivar commands: what the policy decides.
    @ivar text: the client's text of the unit (its key in the index when
        C{shape} is None).
    @ivar shape: the protocol's key for texts that differ only in constants
        (see L{gatehouse.policy.SessionPolicy.decide_all}).
    @ivar own: when C{commands} were read from another text of C{shape}:
        gives the client's own commands (what is recorded and indexed).
    @ivar verdict: the driver's own decision (built-in protections), used
        in place of the policy's unless it is C{allow}: a driver can make a
        decision stricter, never looser.
    @ivar detail: anything the driver wants back with a refusal.
    @ivar shown: the commands as the recording, the index and approvers
        show them, when that is not how the policy reads them (an SSH
        exec line is decided as the simple commands it runs, shown as
        the line the client sent).
    """

    commands: Sequence[Command]
    text: str
    shape: str | None = None
    own: Callable[[], Sequence[Command]] | None = None
    verdict: Decision | None = None
    detail: object = None
    shown: Sequence[Command] | None = None

    def client_commands(self) -> Sequence[Command]:
        """The commands as the client sent them (as shown, see C{shown})."""
        if self.shown is not None:
            return self.shown
        return self.own() if self.own is not None else self.commands


@attrs.frozen
class Wait:
    """
    The driver cannot say yet: hold the unit for C{reason}, then call
    C{start} (which begins the work that ends the hold; it may end it at
    once).
    """

    reason: HoldReason
    start: Callable[[], object] | None = None


class _Marker:
    def __init__(self, name: str) -> None:
        self._name = name

    def __repr__(self) -> str:
        return self._name


#: L{IGateDriver.inspect}: the unit carries no command (a protocol's
#: framing, a Sync, a window change); it is forwarded in its turn
PASS: Any = _Marker("PASS")
#: L{IGateDriver.inspect}: the driver ended the session (a malformed unit)
STOP: Any = _Marker("STOP")

_PERMIT_KEY = object()


class ForwardRefused(Exception):
    """Something asked to forward a unit that the gate did not permit."""


class Permit:
    """
    Leave to forward one unit, given by a L{Gate} for a decision that
    allowed it (or an approval).  Nothing else makes one.
    """

    __slots__ = ("decision", "detail", "unit")

    def __init__(
        self, unit: object, decision: Decision, detail: object, key: object = None
    ) -> None:
        """
        @param detail: the driver's L{Proposal.detail} of the unit.
        """
        if key is not _PERMIT_KEY:
            raise ForwardRefused("only a gate gives permits")
        self.unit = unit
        self.decision = decision
        self.detail = detail

    def covers(self, unit: object) -> bool:
        """Whether this permit is for C{unit}."""
        return unit is self.unit


class IGateDriver(Interface):
    """
    A protocol's side of its L{Gate}: what units are, and what forwarding
    and refusing them means on its wire.
    """

    def inspect(unit: object) -> object:
        """
        What C{unit} is: L{PASS} (no command), a L{Proposal} (commands to
        decide), a L{Wait}, a L{Refusal} (the driver refuses it itself),
        or L{STOP}.  Called again for a held unit when its hold ends
        without a decision (L{Gate.resume}).
        """

    def admit(unit: object, permit: Permit) -> object:
        """
        The policy allowed C{unit}: None to forward it, a L{Refusal}, or a
        L{Wait} for L{HoldReason.LOOKUP} (then L{Gate.settle}).
        """

    def forward(unit: object, permit: Permit | None) -> None:
        """
        Send C{unit} on to the target (now, or at the next L{flush}).
        C{permit} is None only for a unit L{inspect} called L{PASS}.
        """

    def flush() -> None:
        """Send what was forwarded and not yet sent (the gate stops here)."""

    def refuse(unit: object, refusal: Refusal) -> None:
        """Keep C{unit} from the target and answer the client with C{refusal}."""

    def held(unit: object, request: object, decision: Decision) -> None:
        """C{unit} waits for approval request C{request}: tell the client."""

    def pause_input() -> None:
        """Stop reading the client: too much waits behind a hold."""

    def resume_input() -> None:
        """Read the client again (after L{pause_input})."""

    def failed(failure: Failure) -> None:
        """
        Checking a held unit raised: the session must end, fail closed
        (nothing of the unit or after it was forwarded).
        """


class _Driver(Protocol):
    def inspect(self, unit: Any) -> object: ...
    def admit(self, unit: Any, permit: Permit) -> object: ...
    def forward(self, unit: Any, permit: Permit | None) -> None: ...
    def flush(self) -> None: ...
    def refuse(self, unit: Any, refusal: Refusal) -> None: ...
    def held(self, unit: Any, request: Any, decision: Decision) -> None: ...
    def pause_input(self) -> None: ...
    def resume_input(self) -> None: ...
    def failed(self, failure: Failure) -> None: ...


class Gate:
    """
    Decides, holds, forwards and refuses one stream's units in order; see
    the module docstring.

    @ivar holding: why the first queued unit is held (None: nothing is).
    @ivar request: the approval request of the unit held for approval.
    """

    _log = Logger()
    #: command shapes indexed per gate at most (see L{_index})
    MAX_DISTINCT = 10_000

    def __init__(
        self,
        session: Session,
        driver: _Driver,
        *,
        noun: str = "command",
        channel: int = 0,
        hold_limit: int = 1 << 20,
    ) -> None:
        """
        @param noun: what the protocol calls a unit with commands, in the
            messages a client reads (C{"statement"}).
        @param channel: the session channel this stream's records carry.
        @param hold_limit: backlog (the driver's measure, bytes) above
            which the client's reading pauses while a unit is held.
        """
        self._session = session
        self._driver = driver
        self.noun = noun
        self.channel = channel
        self.hold_limit = hold_limit
        self.holding: HoldReason | None = None
        self.request: object = None
        self.closed = False
        self._queue: deque[Any] = deque()
        self._permit: Permit | None = None
        self._verdict: Deferred[Any] | None = None
        self._cancelled = False
        self._paused = False
        self._seen: set[str] = set()

    # -- feeding ---------------------------------------------------------

    def receive(self, units: Sequence[Any], backlog: int = 0) -> None:
        """
        The client sent C{units} (complete, in order).  C{backlog} is how
        much of the client's input waits unforwarded, in the driver's
        measure: above L{hold_limit} while a unit is held, reading pauses.
        """
        if self.closed:
            return
        if self.holding is not None:
            self._queue.extend(units)
        elif units:
            self._run(units, 0)
        if self.holding is not None and backlog > self.hold_limit and not self._paused:
            self._paused = True
            self._driver.pause_input()

    def holds(self, unit: object, reason: HoldReason) -> bool:
        """Whether the gate still holds C{unit} for C{reason}."""
        return (
            not self.closed
            and not self._session.closed
            and self.holding is reason
            and bool(self._queue)
            and self._queue[0] is unit
        )

    def resume(self) -> None:
        """
        A L{Wait} for a barrier or a classification is over: inspect the
        held unit again (and go on with what followed it).
        """
        if self.closed or self.holding not in (
            HoldReason.BARRIER,
            HoldReason.CLASSIFICATION,
        ):
            return
        self._end_hold()
        units = list(self._queue)
        self._queue.clear()
        self._guard(lambda: self._run(units, 0))

    def settle(self, unit: object, outcome: Refusal | Failure | None) -> None:
        """
        End the hold on C{unit}: refuse it (a L{Refusal}; a L{Failure} is
        the gateway's own error: refused as unchecked), or, with None,
        forward it under the permit its decision gave.  A unit held
        without a permit (a barrier, a classification) cannot be
        forwarded this way: L{ForwardRefused}.
        """
        if self.closed or self._session.closed or self.holding is None:
            # The stream ended: a lookup cancelled with it is no error.
            return
        if isinstance(outcome, Failure):
            self._log.failure(
                "Holding a {noun} of session {sid}",
                outcome,
                noun=self.noun,
                sid=str(self._session.id),
            )
            outcome = Refusal(
                RefusalKind.UNCHECKED, f"the gateway could not check this {self.noun}"
            )
        if not self._queue or self._queue[0] is not unit:
            raise ForwardRefused(f"{unit!r} is not the unit held")
        permit = self._permit
        if outcome is None and (permit is None or not permit.covers(unit)):
            raise ForwardRefused(f"{unit!r} was never permitted")
        self._end_hold()
        self._queue.popleft()
        if outcome is None:
            assert permit is not None
            self._driver.forward(unit, permit)
        else:
            self._driver.refuse(unit, outcome)
        units = list(self._queue)
        self._queue.clear()
        self._guard(lambda: self._run(units, 0))

    def cancel(self) -> HoldReason | None:
        """
        The client cancels what is held: an approval request is withdrawn
        for good, a barrier or a classification ends; the unit is refused
        (L{RefusalKind.CANCELLED}).  A lookup goes on.

        @return: the hold cancelled, if any.
        """
        holding = self.holding
        if holding is HoldReason.APPROVAL:
            if self._verdict is not None:
                self._cancelled = True
                self._verdict.cancel()
            return holding
        if holding in (HoldReason.BARRIER, HoldReason.CLASSIFICATION):
            self.settle(self._queue[0], self._cancellation())
            return holding
        return None

    def close(self) -> None:
        """The stream ended: nothing held goes anywhere."""
        self.closed = True
        self._queue.clear()
        self._permit = None

    # -- the relay -------------------------------------------------------

    def _run(self, units: Sequence[Any], i: int) -> None:
        driver = self._driver
        inspect = driver.inspect
        forward = driver.forward
        n = len(units)
        while i < n and not self.closed:
            unit = units[i]
            found = inspect(unit)
            if found is PASS:
                forward(unit, None)
                i += 1
                continue
            if type(found) is Proposal:
                start = self._decide(unit, found)
            else:
                start = self._step(unit, found)
            if start is None:
                i += 1
                continue
            # Held: the unit and everything after it wait, in order.
            self._queue.extend(units[i:])
            driver.flush()
            start()
            return
        if not self.closed:
            driver.flush()

    def _step(self, unit: Any, found: object) -> Callable[[], object] | None:
        """Act on what the driver found; a hold's start if the unit waits."""
        if type(found) is Refusal:
            self._driver.refuse(unit, found)
            return None
        if type(found) is Wait:
            if found.reason is HoldReason.APPROVAL or found.reason is HoldReason.LOOKUP:
                # Those holds belong to a decision; a driver cannot start one.
                raise ForwardRefused(f"a driver cannot wait for {found.reason}")
            self.holding = found.reason
            return found.start or _nothing
        if found is STOP:
            self.close()
            return None
        raise ForwardRefused(f"the driver said {found!r} about {unit!r}")

    def _decide(self, unit: Any, proposal: Proposal) -> Callable[[], object] | None:
        decision = proposal.verdict
        if decision is not None and decision.action != "allow":
            self._driver_decided(decision, proposal)
        else:
            decision = self._session.decide(
                proposal.commands,
                proposal.shape,
                proposal.own,
                self.channel,
                proposal.shown,
            )
        self._index(proposal, decision)
        action = decision.action
        if action == "allow":
            return self._admit(
                unit, Permit(unit, decision, proposal.detail, _PERMIT_KEY)
            )
        if action == "review":
            self.holding = HoldReason.APPROVAL
            return lambda: self._ask(unit, proposal, decision)
        self._driver.refuse(unit, self._refusal(decision, proposal))
        return None

    def _admit(self, unit: Any, permit: Permit) -> Callable[[], object] | None:
        found = self._driver.admit(unit, permit)
        if found is None:
            self._driver.forward(unit, permit)
            return None
        if type(found) is Refusal:
            self._driver.refuse(unit, found)
            return None
        if type(found) is Wait and found.reason is HoldReason.LOOKUP:
            self.holding = HoldReason.LOOKUP
            self._permit = permit
            return found.start or _nothing
        raise ForwardRefused(f"the driver admitted {unit!r} with {found!r}")

    def _refusal(self, decision: Decision, proposal: Proposal) -> Refusal:
        action = decision.action
        if action == ERROR:
            return Refusal(
                RefusalKind.UNPARSEABLE,
                decision.message or f"the gateway could not parse this {self.noun}",
                decision=decision,
                detail=proposal.detail,
            )
        if proposal.verdict is decision:
            return Refusal(
                RefusalKind.PROTECTION,
                decision.message or "",
                decision=decision,
                detail=proposal.detail,
            )
        why = f": {decision.message}" if decision.message else ""
        return Refusal(
            RefusalKind.POLICY,
            f'{self.noun} refused by gatehouse policy rule "{decision.rule}"{why}',
            decision=decision,
            detail=proposal.detail,
        )

    def _driver_decided(self, decision: Decision, proposal: Proposal) -> None:
        """Record and count a decision the driver made itself."""
        commands = proposal.client_commands()
        self._session.event(
            "decision",
            channel=self.channel,
            action=decision.action,
            rule=decision.rule,
            message=decision.message,
            commands=[c.as_json() for c in commands],
        )
        self._session.report_decision(decision, commands)

    def _index(self, proposal: Proposal, decision: Decision) -> None:
        """
        Index each distinct allowed command shape once (pgbench's random
        keys share one), and every command not simply allowed, with its
        decision.  The commands themselves are in the recording.
        """
        action = decision.action
        if action == "allow":
            key = proposal.shape or proposal.text
            seen = self._seen
            if key in seen or len(seen) >= self.MAX_DISTINCT:
                return
            seen.add(key)
        command_seen = self._session.command_seen
        channel = self.channel
        for command in proposal.client_commands():
            command_seen(command.kind, command.text, command.objects, action, channel)

    # -- approvals -------------------------------------------------------

    def _ask(self, unit: Any, proposal: Proposal, decision: Decision) -> None:
        request, verdict = self._session.request_approval(
            proposal.client_commands(), decision, self.channel
        )
        self.request = request
        if request is not None:
            self._driver.held(unit, request, decision)
        self._verdict = verdict
        verdict.addBoth(self._decided, unit, proposal, decision)
        # An error deciding on the verdict ends the stream closed.
        verdict.addErrback(self._failed)

    def _decided(
        self, result: object, unit: Any, proposal: Proposal, decision: Decision
    ) -> None:
        self._verdict = None
        outcome: Refusal | Failure
        if self._cancelled:
            # The broker marked the request cancelled: it can never be
            # approved.
            self._cancelled = False
            outcome = self._cancellation()
        elif isinstance(result, Failure):
            outcome = self._cancellation() if result.check(CancelledError) else result
        elif getattr(result, "approved", False) is True:
            permit = Permit(unit, decision, proposal.detail, _PERMIT_KEY)
            self._guard(lambda: self._approved(unit, permit))
            return
        else:
            outcome = Refusal(
                RefusalKind.NOT_APPROVED,
                f'{self.noun} not approved (rule "{decision.rule}"): '
                f"{getattr(result, 'reason', result)}",
                decision=decision,
            )
        self._guard(lambda: self.settle(unit, outcome))

    def _approved(self, unit: Any, permit: Permit) -> None:
        """
        Approvers let the held C{unit} go: it is admitted as an allowed
        unit is (the driver may still refuse it, or look something up),
        then what the client sent after it goes on.
        """
        if self.closed or self._session.closed:
            return
        if not self._queue or self._queue[0] is not unit:
            raise ForwardRefused(f"{unit!r} is not the unit held")
        self._end_hold()
        units = list(self._queue)  # the approved unit first
        self._queue.clear()
        start = self._admit(unit, permit)
        if start is not None:
            self._queue.extend(units)
            self._driver.flush()
            start()
            return
        self._run(units, 1)

    def _guard(self, step: Callable[[], object]) -> None:
        """Run C{step} from a callback: an error ends the session closed."""
        try:
            step()
        except Exception:
            self._failed(Failure())

    def _failed(self, failure: Failure) -> None:
        """Checking a held unit raised: nothing more passes; the driver ends it."""
        self.close()
        self._driver.failed(failure)

    def _cancellation(self) -> Refusal:
        return Refusal(RefusalKind.CANCELLED, f"{self.noun} cancelled by the client")

    def _end_hold(self) -> None:
        self.holding = None
        self.request = None
        self._permit = None
        if self._paused:
            self._paused = False
            self._driver.resume_input()


def _nothing() -> None:
    return None
