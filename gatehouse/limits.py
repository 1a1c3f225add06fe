"""
Limits that keep the daemon serving under load or attack: the process's
open-file limit, and how many connections a listener holds and in what
state (see L{ConnectionLimits}).

Nothing here does I/O but L{raise_open_file_limit}, which the daemon calls
once at start.
"""

from __future__ import annotations

import resource
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import attrs
from twisted.logger import Logger

if TYPE_CHECKING:
    from gatehouse.config import ConfigSection

_log = Logger()

#: where Linux caps RLIMIT_NOFILE when the hard limit is "unlimited"
_NR_OPEN = "/proc/sys/fs/nr_open"


def raise_open_file_limit() -> tuple[int, int]:
    """
    Raise the soft C{RLIMIT_NOFILE} to the hard limit and log one line with
    the old and new values (each client connection costs a file descriptor,
    its upstream one more, a recording one or two).

    @return: the soft limit before and after (equal if it could not move).
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = hard
    if hard == resource.RLIM_INFINITY:
        try:
            with open(_NR_OPEN) as f:
                wanted = int(f.read())
        except (OSError, ValueError):
            wanted = max(soft, 1 << 20)
    new = soft
    if soft != resource.RLIM_INFINITY and wanted > soft:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
            new = wanted
        except (OSError, ValueError) as e:
            _log.warn(
                "Open file limit (RLIMIT_NOFILE) stays at {old} (hard {hard}):"
                " raising it failed: {why}",
                old=soft,
                hard=hard,
                why=e,
            )
            return soft, soft
    _log.info(
        "Open file limit (RLIMIT_NOFILE): soft {old} -> {new} (hard {hard})",
        old=soft,
        new=new,
        hard=hard,
    )
    return soft, new


def open_file_limit() -> int | None:
    """The soft C{RLIMIT_NOFILE} now (None: unlimited)."""
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    return None if soft == resource.RLIM_INFINITY else soft


def fds_needed(connections: int) -> int:
    """
    Descriptors a listener full of logged-in sessions may hold: the
    client's, the target's and a recording file each, plus some for the
    daemon itself.
    """
    return 3 * connections + 64


@attrs.frozen
class ConnectionCaps:
    """
    How many client connections one listener holds at most.

    @ivar total: connections in any state.
    @ivar unauthenticated: connections whose client has not yet proved who
        it is (startup, TLS handshake, password, token verification).
    @ivar unauthenticated_per_address: such connections from one source
        address.
    """

    total: int = 1000
    unauthenticated: int = 256
    unauthenticated_per_address: int = 32


class Admission:
    """
    One admitted connection's place in a L{ConnectionLimits}: call
    L{authenticated} when its client proved who it is, L{release} when it
    closes (both idempotent).

    @ivar on_evict: called (once, with no arguments) when the limits take
        this connection's pre-auth place for a client from a lighter
        address (see L{ConnectionLimits.admit}): its owner closes it.
    """

    __slots__ = ("_address", "_limits", "_preauth", "_released", "on_evict")

    def __init__(self, limits: ConnectionLimits, address: str):
        self._limits = limits
        self._address = address
        self._preauth = True
        self._released = False
        self.on_evict: Callable[[], None] | None = None

    @property
    def address(self) -> str:
        """The source address it counts against."""
        return self._address

    def authenticated(self) -> None:
        """The client authenticated: it no longer counts as pre-auth."""
        if self._preauth and not self._released:
            self._preauth = False
            self._limits._leave_preauth(self)

    def release(self) -> None:
        """The connection closed."""
        if self._released:
            return
        if self._preauth:
            self._preauth = False
            self._limits._leave_preauth(self)
        self._released = True
        self._limits.total -= 1

    def _evict(self) -> None:
        self._preauth = False
        self._limits._leave_preauth(self)
        if self.on_evict is not None:
            self.on_evict()


class ConnectionLimits:
    """
    Counts a listener's connections against its L{ConnectionCaps}
    (sans-IO: the listener asks L{admit} for each accepted socket).

    A full pre-auth cap is not a lock-out: a client from an address that
    holds at least two fewer pre-auth connections than the heaviest
    address takes the place of that address's oldest one (which is
    evicted, see L{Admission.on_evict}).  An attacker spread over a few
    addresses thus cannot keep everyone else from logging in; one spread
    over as many addresses as the cap is refused like anyone else.

    @ivar total: connections admitted and not released.
    @ivar unauthenticated: of those, not yet authenticated.
    """

    def __init__(self, caps: ConnectionCaps):
        self.caps = caps
        self.total = 0
        self.unauthenticated = 0
        # per address, its pre-auth admissions, oldest first
        self._per_address: dict[str, dict[Admission, None]] = {}

    def unauthenticated_from(self, address: str) -> int:
        """Pre-auth connections from C{address} now."""
        return len(self._per_address.get(address, ()))

    def admit(self, address: str) -> Admission | str:
        """
        Count a new connection from C{address} in, or say which cap it is
        over (then it is not counted).

        @return: an L{Admission}, or the reason to refuse the connection.
        """
        caps = self.caps
        if self.total >= caps.total:
            return f"listener holds its maximum of {caps.total} connections"
        own = self.unauthenticated_from(address)
        if own >= caps.unauthenticated_per_address:
            return (
                f"{address} holds its maximum of "
                f"{caps.unauthenticated_per_address} unauthenticated connections"
            )
        if self.unauthenticated >= caps.unauthenticated:
            heaviest = max(self._per_address.values(), key=len, default={})
            if len(heaviest) <= own + 1:
                return (
                    f"listener holds its maximum of {caps.unauthenticated}"
                    " unauthenticated connections"
                )
            next(iter(heaviest))._evict()
        self.total += 1
        self.unauthenticated += 1
        admission = Admission(self, address)
        self._per_address.setdefault(address, {})[admission] = None
        return admission

    def _leave_preauth(self, admission: Admission) -> None:
        self.unauthenticated -= 1
        held = self._per_address[admission.address]
        del held[admission]
        if not held:
            del self._per_address[admission.address]


def connection_limits(options: ConfigSection) -> dict[str, Any]:
    """
    A listener's connection limits from its C{options} (the keyword
    arguments of its options class), checked together.
    """
    timeout = options.duration(
        "authentication_timeout", 30.0, positive=True, maximum=600.0
    )
    total = options.integer("max_connections", 1000, minimum=1, maximum=1_000_000)
    preauth = options.integer(
        "max_unauthenticated", min(256, total), minimum=1, maximum=1_000_000
    )
    per_address = options.integer(
        "max_unauthenticated_per_address",
        min(32, preauth),
        minimum=1,
        maximum=1_000_000,
    )
    if preauth > total:
        options.problem(
            f"{preauth} is more than max_connections ({total})", "max_unauthenticated"
        )
        preauth = total
    if per_address > preauth:
        options.problem(
            f"{per_address} is more than max_unauthenticated ({preauth})",
            "max_unauthenticated_per_address",
        )
        per_address = preauth
    return {
        "authentication_timeout": timeout,
        "max_connections": total,
        "max_unauthenticated": preauth,
        "max_unauthenticated_per_address": per_address,
    }
