"""
Deferreds that always end: catalog lookups time out and are cancelled
(their connections closed), and a bug in a callback ends its session
closed.  (A recording that fails mid-session leaving no unhandled error:
test_fail_closed.RecordingFailureTests.)
"""

from __future__ import annotations

from twisted.internet import reactor
from twisted.internet.defer import CancelledError, Deferred, inlineCallbacks
from twisted.internet.task import deferLater
from twisted.trial.unittest import SynchronousTestCase, TestCase

from gatehouse.protocols.postgres.catalog import Catalog, Lookups
from gatehouse.protocols.postgres.config import PostgresTargetOptions, UpstreamTLS
from gatehouse.protocols.postgres.upstream import UpstreamError
from gatehouse.session import Session
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


class CallbackBugTests(InProcessGatewayTestCase):
    """
    An error raised inside a callback of the login chain (a bug) ends the
    session closed (XX000), instead of an unhandled error and a client
    left waiting for ever.
    """

    @inlineCallbacks
    def test_upstream_ready_raises(self):
        armed = [True]
        real = Session.upstream_connected

        def broken(session, seconds):
            if armed:
                armed.clear()
                raise RuntimeError("injected bug")
            return real(session, seconds)

        self.patch(Session, "upstream_connected", broken)
        yield self.start_gateway()
        client = self.client()
        got = yield self.in_thread(client.login, self.files.token())
        got += yield self.in_thread(client.messages)
        self.assertEqual(armed, [])
        self.assertTrue(client.closed)
        [error] = errors(got)
        self.assertEqual((error.severity, error.sqlstate), ("FATAL", "XX000"))
        self.assertIn("internal error in the gateway", error.message)
        yield self.assert_still_serving()
        row = yield self.session()
        self.assertEqual(row.close_reason, "internal error: injected bug")
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
