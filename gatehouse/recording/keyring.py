"""
The daemon's view of its signing-key directory.

L{KeyRing} keeps the epoch keys in memory, erases each one (every file
holding it, and the reference) at the very end of its window, on a timer
set from the directory's last reading, and warns well before the keys run
out.  A file that cannot be erased is logged and reported (L{KeyRing.problems})
and never keeps the others from being erased.
With no valid key, L{KeyRing.current} returns None and the recorder refuses
new sessions: recording fails closed.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

import attrs
from twisted.application.service import Service
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from gatehouse.recording.keys import (
    NS,
    EpochKey,
    Erasure,
    KeyDirectory,
    KeyScan,
    covered_until,
    current_key,
    erase_copies,
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
        self._unknown: set[str] = set()
        #: files holding expired key material that could not be erased
        self._erase_failures: dict[str, str] = {}
        #: the last reading of the directory
        self._scan = KeyScan()
        self._scanned_at = 0
        self._erasure: IDelayedCall | None = None
        self._last_warning = -(1 << 62)

    def load_now(self) -> list[str]:
        """
        Read the directory synchronously (at startup, before serving),
        erasing the key material whose window has ended.

        @return: problems found, one line each.
        """
        now = self._now()
        try:
            scan, erasure = self._directory.load_unexpired(now)
        except Exception as e:  # the daemon serves on; no key means refusals
            self.log.failure("Reading signing keys")
            scan, erasure = (
                KeyScan(problems=(f"cannot read signing keys: {e!r}",)),
                Erasure(),
            )
        return self._accept(scan, erasure, now)

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

    def _accept(self, scan: KeyScan, erasure: Erasure, now: int) -> list[str]:
        problems = list(scan.problems)
        usable = []
        for key in scan.keys():
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
        for line in scan.unknown:
            if line not in self._unknown:
                self.log.warn(
                    "Not key material (or unreadable), left alone in the "
                    "signing-key directory: {line}",
                    line=line,
                )
        self._unknown = set(scan.unknown)
        erased = set(erasure.erased)
        self._scan = attrs.evolve(
            scan, copies=tuple(c for c in scan.copies if c.path not in erased)
        )
        # A full reading says which leftovers are still there.
        present = {c.path for c in scan.copies}
        self._erase_failures = {
            p: line for p, line in self._erase_failures.items() if p in present
        }
        self._note_erasure(erasure)
        self._keys = usable
        self._report(now)
        self._scanned_at = now
        self._schedule(now)
        return problems + erasure.lines()

    def _note_erasure(self, erasure: Erasure) -> None:
        for path in erasure.erased:
            self._erase_failures.pop(path, None)
            self.log.info("Erased expired signing key material: {path}", path=path)
        for (path, _), line in zip(erasure.failed, erasure.lines(), strict=True):
            if self._erase_failures.get(path) != line:
                self.log.error(
                    "Expired signing key material left on disk: {line}", line=line
                )
            self._erase_failures[path] = line

    def problems(self) -> list[str]:
        """
        Files holding expired key material that could not be erased (forward
        security is lost for those windows until they are removed); empty
        when the directory is clean.
        """
        return [
            f"expired signing key material could not be erased: {line}"
            for line in self._erase_failures.values()
        ]

    def _schedule(self, now: int) -> None:
        """
        Set the timer for the next end of a window after C{now} (when the
        directory was read) among the keys on disk; at once if that end has
        passed since.
        """
        if self._erasure is not None and self._erasure.active():
            self._erasure.cancel()
        self._erasure = None
        if not self.running:
            return
        ends = [c.key.certificate.not_after for c in self._scan.copies]
        ends += [k.certificate.not_after for k in self._keys]
        future = [end for end in ends if end > now]
        if not future:
            return
        deadline = min(future)
        self._erasure = self._clock.callLater(
            max(0, deadline - self._now()) / NS, self._window_ended, deadline
        )

    @inlineCallbacks
    def _window_ended(self, deadline: int) -> Generator[Deferred[Any], Any, None]:
        """
        Erase, off the reactor, every copy known of the keys whose window
        ends at C{deadline}; then re-read the directory for any others.
        """
        self._erasure = None
        # The reactor's float clock may sit a few hundred ns short of the
        # deadline it fired for; the deadline is what counts.
        now = max(self._now(), deadline)
        self._keys = [k for k in self._keys if k.certificate.not_after > now]
        due = self._scan.expired(now)
        if due:
            try:
                erasure = yield self._executor(erase_copies, due, self._directory.path)
            except Exception as e:
                self.log.error("Cannot erase signing keys: {e}", e=e)
            else:
                self._note_erasure(erasure)
        yield self.refresh(now)

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
    def refresh(self, at: int | None = None) -> Generator[Deferred[Any], Any, None]:
        """
        Re-read the directory and erase expired key material, off the
        reactor; set the erasure timer again from what was read.

        @param at: the wall ns to erase up to (default: now).
        """
        now = self._now() if at is None else max(at, self._now())
        try:
            scan, erasure = yield self._executor(self._directory.load_unexpired, now)
        except Exception as e:
            self.log.error("Cannot refresh signing keys: {e}", e=e)
            return
        self._accept(scan, erasure, now)

    def startService(self) -> None:
        """Check the keys periodically."""
        super().startService()
        self._loop = LoopingCall(self.refresh)
        self._loop.clock = self._clock
        self._loop.start(self._check_interval, now=False)
        self._schedule(self._scanned_at)

    def stopService(self) -> None:
        """Stop checking and erasing."""
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        if self._erasure is not None and self._erasure.active():
            self._erasure.cancel()
        self._erasure = None
        super().stopService()
