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

The pool is bounded (C{workers} processes); each session has at most one
statement in it at a time (the session's input is held meanwhile), so one
client cannot queue more than one statement's work.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import multiprocessing
import os
import signal
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure

from gatehouse.protocols.postgres.commands import Classified, classify_text

__all__ = ["ClassifierPool"]


class ClassifierPool:
    """
    A bounded pool of worker processes that classify statement texts.

    @param reactor: the reactor results are delivered in.
    @param workers: worker processes at most (started on first use).
    """

    _log = Logger()

    def __init__(self, reactor: object, workers: int = 2):
        self._reactor = reactor
        self._workers = max(1, workers)
        self._executor: ProcessPoolExecutor | None = None
        self._stopped = False
        reactor.addSystemEventTrigger("before", "shutdown", self.stop)

    def classify(self, text: str) -> Deferred[Classified]:
        """Classify C{text} in a worker; fires in the reactor thread."""
        d: Deferred[Classified] = Deferred()
        if self._stopped:
            d.errback(RuntimeError("the classifier pool is stopped"))
            return d
        try:
            future = self._pool().submit(classify_text, text)
        except (BrokenProcessPool, RuntimeError) as e:
            self._executor = None
            d.errback(e)
            return d
        call = self._reactor.callFromThread

        def done(future: object) -> None:
            try:
                result = future.result()
            except BrokenProcessPool as e:
                # A worker died (killed, out of memory): start afresh next
                # time; this statement fails closed.
                call(self._broken, d, e)
                return
            except BaseException as e:
                call(d.errback, Failure(e))
                return
            call(d.callback, result)

        future.add_done_callback(done)
        return d

    def _broken(self, d: Deferred, error: Exception) -> None:
        self._log.error("A statement classifier process died: {why}", why=error)
        executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=False, cancel_futures=True)
        d.errback(error)

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
            ctypes.CDLL(name, use_errno=True).prctl(
                _PR_SET_PDEATHSIG, signal.SIGKILL
            )
        except (AttributeError, OSError):
            pass
    # The gateway may have died before prctl took effect.
    if os.getppid() != parent:
        os._exit(0)
