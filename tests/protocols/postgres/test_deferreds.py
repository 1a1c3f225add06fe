"""
Deferreds that always end: catalog lookups time out and are cancelled
(their connections closed), and a recording that fails mid-session leaves
no unhandled error behind when its session closes.
"""

from __future__ import annotations

import errno
import gc

from twisted.internet import reactor
from twisted.internet.defer import CancelledError, Deferred, fail, inlineCallbacks
from twisted.internet.task import deferLater
from twisted.trial.unittest import SynchronousTestCase, TestCase

import gatehouse.service
from gatehouse.protocols.postgres.catalog import Catalog, Lookups
from gatehouse.protocols.postgres.config import PostgresTargetOptions, UpstreamTLS
from gatehouse.protocols.postgres.upstream import UpstreamError
from gatehouse.recording.interfaces import RecordingFailed
from tests.protocols.postgres.test_fail_closed import (
    FakeTarget,
    HostileTarget,
    InProcessGatewayTestCase,
    errors,
)


class _Silent(HostileTarget):
    """Logs the gateway in, then never answers a query."""

    def __init__(self) -> None:
        super().__init__()
        self.asked: Deferred[None] = Deferred()

    def query(self, conn: FakeTarget, sql: str) -> None:
        if not self.asked.called:
            self.asked.callback(None)


class CatalogTests(TestCase):
    """
    L{Catalog} lookups against a target that never answers.
    """

    def catalog(self, target: HostileTarget, timeout: float) -> Catalog:
        options = PostgresTargetOptions(
            host="127.0.0.1",
            port=target.listen(self),
            socket_dir=None,
            database="app",
            user=target.user,
            password_file=None,
            password_env=None,
            tls=UpstreamTLS("disable"),
            allow_groups=("*",),
        )
        return Catalog(reactor, options, "app", connect_timeout=timeout)

    @inlineCallbacks
    def closed(self, target: HostileTarget):
        """Wait until the target's connection is gone."""
        for _ in range(200):
            if not any(c.transport.connected for c in target.connections):
                return
            yield deferLater(reactor, 0.01, lambda: None)
        self.fail("the catalog's connection is still open")

    @inlineCallbacks
    def test_query_timeout(self):
        """
        A query the target never answers fails the lookup after the
        timeout, and its connection is closed.
        """
        target = _Silent()
        lookup = self.catalog(target, 0.2).lookup_oids([16384])
        yield target.asked
        error = yield self.assertFailure(lookup, UpstreamError)
        self.assertIn("catalog query: no answer within 0.2 s", str(error))
        yield self.closed(target)

    @inlineCallbacks
    def test_cancelled(self):
        """
        Cancelling a lookup (its client went away) ends it at once and
        closes its connection.
        """
        target = _Silent()
        lookups = Lookups()
        lookup = lookups.track(self.catalog(target, 30).relation_candidates("t"))
        yield target.asked
        lookups.cancel_all()
        yield self.assertFailure(lookup, CancelledError)
        yield self.closed(target)


class LookupsTests(SynchronousTestCase):
    """
    L{Lookups} forgets lookups that ended and cancels the others.
    """

    def test_cancel_pending_only(self):
        lookups = Lookups()
        done: Deferred[int] = Deferred()
        pending: Deferred[int] = Deferred()
        lookups.track(done)
        lookups.track(pending)
        done.callback(1)
        lookups.cancel_all()
        self.assertEqual(self.successResultOf(done), 1)
        self.failureResultOf(pending, CancelledError)


class RecordingFailureCloseTests(InProcessGatewayTestCase):
    """
    A recording whose writes fail mid-session: the session ends with
    58030 and its failed close is consumed, not left as an "Unhandled
    error in Deferred".
    """

    @inlineCallbacks
    def test_no_unhandled_error(self):
        armed = []
        real = gatehouse.service.thread_executor

        def failing_executor(reactor_, pool):
            run = real(reactor_, pool)

            def submit(fn, *args):
                if armed and getattr(fn, "__name__", "") == "write_block":
                    armed.clear()
                    return fail(OSError(errno.EIO, "Input/output error (injected)"))
                return run(fn, *args)

            return submit

        self.patch(gatehouse.service, "thread_executor", failing_executor)
        yield self.start_gateway()
        client = self.client()
        yield self.in_thread(client.login, self.files.token())
        armed.append(True)

        def talk():
            return client.query("SELECT pg_sleep(1)") + client.messages()

        got = yield self.in_thread(talk)
        self.assertEqual(armed, [])
        [error] = errors(got)
        self.assertEqual((error.severity, error.sqlstate), ("FATAL", "58030"))
        yield self.session(sealed=False)
        self.flushLoggedErrors(OSError)
        gc.collect()
        self.assertEqual(self.flushLoggedErrors(RecordingFailed), [])
