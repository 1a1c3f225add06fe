"""
Long statements are classified in worker processes, never in the gateway's
own process.

Why processes and not threads: most of a long statement's classification
is one C{json.loads} of libpg_query's parse tree (about 7 MB of JSON for a
1 MiB IN-list), a single call that holds the GIL for its whole run.  In a
thread it stalls the reactor, and so every other session, for as long as
it runs (0.6 s for 1 MiB, 2 s for 4 MiB, measured).  A worker process
costs the reactor only the pickled text going out and the classification
coming back.

A thread does not do: the 1.3 MB statement of the reactor-latency test
took 1.6 s in a worker process with the reactor never more than 23 ms
late, and 2.2 s in a thread with the reactor stalled for 1.1 s (measured
on 2 loaded cores).  The normalised text a C{text:} rule searches (a
parse and a deparse: 0.8 s for that statement, inline on the reactor
until then) is computed in the worker too when the session's policy
reads text.

The pool is bounded (C{workers} processes) and so is its queue: each
session has at most one statement in it at a time (the session's input
is held meanwhile), and beyond C{queue} statements waiting or running a
new one is refused at once (L{ClassifierBusy}, SQLSTATE 53300) rather
than left to wait behind the others.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import multiprocessing
import os
import signal
from collections.abc import Callable
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any, Protocol

import attrs
from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure

from gatehouse.protocols.postgres.commands import Classified, classify_text, normalize

__all__ = ["BUSY_SQLSTATE", "ClassifierBusy", "ClassifierPool", "normalized"]


class _Reactor(Protocol):
    """What the pool uses of the reactor."""

    def addSystemEventTrigger(
        self, phase: str, eventType: str, callable: Callable[[], object]
    ) -> object: ...

    def callFromThread(self, callable: Callable[..., object], *args: Any) -> None: ...

    def callLater(
        self, delay: float, callable: Callable[..., object], *args: Any
    ) -> object: ...


#: SQLSTATE of a statement refused because the classifier queue is full
#: (too_many_connections: the gateway's capacity, not the statement, is
#: the problem; the client may try again)
BUSY_SQLSTATE = "53300"


class ClassifierBusy(Exception):
    """
    The classifier's queue is full: the statement is refused unchecked.
    """


def normalized(classified: Classified) -> bool:
    """
    Whether every command of C{classified} carries its normalised text
    (so a C{text:} rule reads it without parsing on the reactor).
    """
    return all(command.normalized for command in classified.commands)


def classify_in_worker(text: str, with_normalized: bool) -> Classified:
    """
    What a worker runs: L{classify_text}, and with C{with_normalized} the
    normalised text of each command (see L{normalized}).
    """
    classified = classify_text(text)
    if not with_normalized:
        return classified
    commands = tuple(
        command
        if command.normalized
        else attrs.evolve(command, normalized=normalize(command.text))
        for command in classified.commands
    )
    return attrs.evolve(classified, commands=commands)


class ClassifierPool:
    """
    A bounded pool of worker processes that classify statement texts.

    @param reactor: the reactor results are delivered in.
    @param workers: worker processes at most (started on first use).
    @param queue: statements waiting or being classified at most; more
        are refused with L{ClassifierBusy}.
    """

    _log = Logger()

    def __init__(self, reactor: _Reactor, workers: int = 2, queue: int = 256):
        self._reactor = reactor
        self._workers = max(1, workers)
        #: statements waiting or running at most (a reload may change it)
        self.queue = max(1, queue)
        #: statements submitted whose result has not been delivered
        self.pending = 0
        self._executor: ProcessPoolExecutor | None = None
        self._stopped = False
        reactor.addSystemEventTrigger("before", "shutdown", self.stop)

    def classify(self, text: str, normalized: bool = False) -> Deferred[Classified]:
        """
        Classify C{text} in a worker (with C{normalized}, computing each
        command's normalised text there too).

        @return: fires in the reactor thread, never before this returns
            (the caller holds the statement first); fails with
            L{ClassifierBusy} when the queue is full, or with the worker's
            error.
        """
        d: Deferred[Classified] = Deferred()
        if self._stopped:
            return self._later(d, RuntimeError("the classifier pool is stopped"))
        if self.pending >= self.queue:
            return self._later(
                d,
                ClassifierBusy(
                    f"too many statements waiting to be checked ({self.queue});"
                    " try again"
                ),
            )
        try:
            future = self._pool().submit(classify_in_worker, text, normalized)
        except (BrokenProcessPool, RuntimeError) as e:
            self._executor = None
            return self._later(d, e)
        self.pending += 1
        call = self._reactor.callFromThread

        def done(future: Future[Classified]) -> None:
            try:
                result = future.result()
            except BrokenProcessPool as e:
                # A worker died (killed, out of memory): start afresh next
                # time; this statement fails closed.
                call(self._broken, d, e)
                return
            except BaseException as e:
                call(self._deliver, d, Failure(e))
                return
            call(self._deliver, d, result)

        future.add_done_callback(done)
        return d

    def _later(self, d: Deferred[Classified], error: Exception) -> Deferred[Classified]:
        self._reactor.callLater(0, d.errback, Failure(error))
        return d

    def _deliver(self, d: Deferred[Classified], result: Classified | Failure) -> None:
        self.pending -= 1
        if isinstance(result, Failure):
            d.errback(result)
        else:
            d.callback(result)

    def _broken(self, d: Deferred[Classified], error: Exception) -> None:
        self._log.error("A statement classifier process died: {why}", why=error)
        executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=False, cancel_futures=True)
        self._deliver(d, Failure(error))

    def _pool(self) -> ProcessPoolExecutor:
        if self._executor is None:
            # spawn: a fresh interpreter, not a fork of a threaded reactor.
            self._executor = ProcessPoolExecutor(
                self._workers,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=_die_with_parent,
                initargs=(os.getpid(),),
            )
        return self._executor

    def stop(self) -> None:
        """Stop the workers (the gateway is stopping)."""
        self._stopped = True
        executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=False, cancel_futures=True)


#: prctl(2) option: the signal a process gets when its parent dies (Linux)
_PR_SET_PDEATHSIG = 1


def _die_with_parent(parent: int) -> None:
    """
    In a worker: die when the gateway does, even by C{kill -9} (which runs
    none of its shutdown): a worker left behind would hold memory for ever.
    """
    name = ctypes.util.find_library("c")
    if name is not None:
        try:
            ctypes.CDLL(name, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
        except (AttributeError, OSError):
            pass
    # The gateway may have died before prctl took effect.
    if os.getppid() != parent:
        os._exit(0)
