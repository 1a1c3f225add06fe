"""
The daemon's view of its signing-key directory.

L{KeyRing} keeps the epoch keys in memory, erases each one (file and
reference) when its window ends, and warns well before the keys run out.
With no valid key, L{KeyRing.current} returns None and the recorder refuses
new sessions: recording fails closed.
"""

from __future__ import annotations

from twisted.application.service import Service
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from gatehouse.recording.keys import (
    NS,
    EpochKey,
    KeyDirectory,
    covered_until,
    current_key,
)
from gatehouse.recording.recorder import Executor


class KeyRing(Service):
    """
    Epoch keys for one gateway, refreshed from their directory.

    @param warn_before: seconds; warn when the keys run out sooner.
    @param check_interval: seconds between re-reads of the directory (new
        keys issued by C{gatehouse keys issue} are picked up then).
    """

    log = Logger()
    #: seconds between repeated "keys run out soon" warnings
    WARN_EVERY = 3600.0

    def __init__(
        self,
        directory: str,
        gateway_id: str,
        clock: IReactorTime,
        executor: Executor,
        warn_before: float = 24 * 3600.0,
        check_interval: float = 30.0,
    ):
        self._directory = KeyDirectory(directory)
        self._gateway_id = gateway_id
        self._clock = clock
        self._executor = executor
        self._warn_before = warn_before
        self._check_interval = check_interval
        self._keys: list[EpochKey] = []
        self._loop: LoopingCall | None = None
        self._warned_none = False
        self._problems: set[str] = set()
        self._last_warning = -(1 << 62)

    def load_now(self) -> list[str]:
        """
        Read the directory synchronously (at startup, before serving).

        @return: problems found, one line each.
        """
        keys, problems = self._directory.load_unexpired(self._now())
        self._accept(keys, problems)
        return problems

    def use_directory(self, directory: str, warn_before: float) -> list[str]:
        """
        Read keys from C{directory} from now on (a configuration reload),
        synchronously, as L{load_now}.

        @return: problems found, one line each.
        """
        self._directory = KeyDirectory(directory)
        self._warn_before = warn_before
        return self.load_now()

    def _now(self) -> int:
        return int(self._clock.seconds() * NS)

    def _accept(self, keys: list[EpochKey], problems: list[str]) -> None:
        now = self._now()
        usable = []
        for key in keys:
            if key.certificate.gateway_id != self._gateway_id:
                problems.append(
                    f"{self._directory.path}: key {key.filename()} was issued for "
                    f"gateway {key.certificate.gateway_id!r}, not {self._gateway_id!r}"
                )
            elif key.certificate.not_after > now:
                usable.append(key)
        # Each problem is logged when it appears, not at every refresh.
        for problem in problems:
            if problem not in self._problems:
                self.log.error("Signing key problem: {problem}", problem=problem)
        self._problems = set(problems)
        self._keys = usable
        self._report(now)

    def _report(self, now: int) -> None:
        end = covered_until(self._keys, now)
        if end <= now:
            if not self._warned_none:
                self.log.critical(
                    "No signing key is valid now in {dir}: new sessions are refused "
                    "until keys are issued (gatehouse keys issue)",
                    dir=self._directory.path,
                )
            self._warned_none = True
            return
        self._warned_none = False
        left = (end - now) / NS
        if (
            left < self._warn_before
            and now - self._last_warning >= self.WARN_EVERY * NS
        ):
            self._last_warning = now
            self.log.warn(
                "Signing keys in {dir} run out in {hours:.1f} h: issue more with "
                "`gatehouse keys issue`",
                dir=self._directory.path,
                hours=left / 3600,
            )

    def current(self, wall_ns: int) -> EpochKey | None:
        """The epoch key valid at C{wall_ns}, if any."""
        # Drop expired keys from memory as soon as we notice them.
        if self._keys and self._keys[0].certificate.not_after <= wall_ns:
            self._keys = [k for k in self._keys if k.certificate.not_after > wall_ns]
        return current_key(self._keys, wall_ns)

    def covered_until(self) -> int:
        """Wall ns until which a key will be valid without a gap."""
        return covered_until(self._keys, self._now())

    @inlineCallbacks
    def refresh(self) -> Deferred:
        """Erase expired keys and re-read the directory, off the reactor."""
        now = self._now()
        try:
            keys, problems = yield self._executor(self._directory.load_unexpired, now)
        except Exception as e:
            self.log.error("Cannot refresh signing keys: {e}", e=e)
            return
        self._accept(keys, problems)

    def startService(self) -> None:
        """Check the keys periodically."""
        super().startService()
        self._loop = LoopingCall(self.refresh)
        self._loop.clock = self._clock
        self._loop.start(self._check_interval, now=False)

    def stopService(self) -> None:
        """Stop checking."""
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        return super().stopService()
