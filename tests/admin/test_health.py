"""
Liveness and readiness of the admin API: C{/healthz} (and its alias
C{/health}) and C{/readyz}.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import inlineCallbacks

from gatehouse.admin import make_admin_site
from tests.admin.test_api import AdminAPITestCase, Client, listen


class HealthTests(AdminAPITestCase):
    """C{/healthz} says the process answers; C{/readyz} whether it serves."""

    def serve(self, readiness: Any) -> None:
        g = self.gateway
        site = make_admin_site(
            g.broker, g.verifier, g.metrics, g.sessions, g.clock, readiness=readiness
        )
        self.client = Client(listen(self, site))

    @inlineCallbacks
    def test_healthz(self) -> Any:
        """C{/healthz} and C{/health} give the same answer, with no token."""
        for path in ("/healthz", "/health"):
            response, body = yield self.call(b"GET", path, who=None)
            self.assertEqual(response.code, 200)
            self.assertEqual(
                body, {"status": "ok", "sessions_open": 1, "approvals_pending": 0}
            )

    @inlineCallbacks
    def test_healthz_when_not_ready(self) -> Any:
        """Liveness stays 200 while readiness fails: do not restart for it."""
        self.serve(lambda: ["no signing key is valid now"])
        response, body = yield self.call(b"GET", "/healthz", who=None)
        self.assertEqual((response.code, body["status"]), (200, "ok"))

    @inlineCallbacks
    def test_ready(self) -> Any:
        """No problem: 200."""
        self.serve(lambda: [])
        response, body = yield self.call(b"GET", "/readyz", who=None)
        self.assertEqual(response.code, 200)
        self.assertEqual(body, {"status": "ready", "problems": []})

    @inlineCallbacks
    def test_not_ready(self) -> Any:
        """Problems: 503 and the list, asked anew on every request."""
        problems: list[str] = ["no signing key is valid now"]
        self.serve(lambda: list(problems))
        response, body = yield self.call(b"GET", "/readyz", who=None)
        self.assertEqual(response.code, 503)
        self.assertEqual(
            response.headers.getRawHeaders(b"content-type"), [b"application/json"]
        )
        self.assertEqual(
            body,
            {"status": "not ready", "problems": ["no signing key is valid now"]},
        )
        problems.append("the gateway is shutting down")
        response, body = yield self.call(b"GET", "/readyz", who=None)
        self.assertEqual(len(body["problems"]), 2)
        problems.clear()
        response, body = yield self.call(b"GET", "/readyz", who=None)
        self.assertEqual(response.code, 200)

    @inlineCallbacks
    def test_readyz_method(self) -> Any:
        """Only GET."""
        self.serve(lambda: [])
        result = yield self.call(b"POST", "/readyz", who=None, body=b"")
        self.assertError(result, 405, "method-not-allowed")
