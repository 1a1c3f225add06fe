"""
Kubernetes Status bodies (L{gatehouse.protocols.kubernetes.status}).
"""

from __future__ import annotations

import json

from twisted.trial.unittest import SynchronousTestCase

from gatehouse.protocols.kubernetes.status import (
    CONTENT_TYPE,
    reason_for,
    status,
)


class StatusTests(SynchronousTestCase):
    def test_as_the_api_server_writes_it(self) -> None:
        """
        Byte for byte what kube-apiserver sends for an RBAC refusal (field
        order, compact, final newline).
        """
        body = status(
            403,
            "Forbidden",
            'pods "x" is forbidden: User "alice" cannot delete resource "pods" '
            'in API group "" in the namespace "shop"',
            details={"name": "x", "kind": "pods"},
        )
        self.assertEqual(
            body,
            b'{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure",'
            b'"message":"pods \\"x\\" is forbidden: User \\"alice\\" cannot delete '
            b'resource \\"pods\\" in API group \\"\\" in the namespace \\"shop\\"",'
            b'"reason":"Forbidden","details":{"name":"x","kind":"pods"},"code":403}\n',
        )
        self.assertEqual(CONTENT_TYPE, "application/json")

    def test_reasons(self) -> None:
        """The reasons the spec names, as metav1.StatusReason spells them."""
        for code, reason in [
            (400, "BadRequest"),
            (401, "Unauthorized"),
            (403, "Forbidden"),
            (404, "NotFound"),
            (405, "MethodNotAllowed"),
            (413, "RequestEntityTooLarge"),
            (431, "BadRequest"),
            (500, "InternalError"),
            (502, "ServiceUnavailable"),
            (503, "ServiceUnavailable"),
            (504, "Timeout"),
        ]:
            self.assertEqual(reason_for(code), reason, code)
            decoded = json.loads(status(code, reason_for(code), "m"))
            self.assertEqual(
                decoded,
                {
                    "kind": "Status",
                    "apiVersion": "v1",
                    "metadata": {},
                    "status": "Failure",
                    "message": "m",
                    "reason": reason,
                    "code": code,
                },
            )
        self.assertEqual(reason_for(418), "")

    def test_go_escapes(self) -> None:
        """<, > and & are escaped as Go's encoder does; other text is UTF-8."""
        body = status(400, "BadRequest", "a<b>&c é \u2028")
        self.assertIn(b'"a\\u003cb\\u003e\\u0026c \xc3\xa9 \\u2028"', body)
        self.assertEqual(json.loads(body)["message"], "a<b>&c é \u2028")

    def test_empty_fields_omitted(self) -> None:
        """message and reason are omitted when empty (omitempty in Go)."""
        self.assertEqual(
            status(500, "", ""),
            b'{"kind":"Status","apiVersion":"v1","metadata":{},'
            b'"status":"Failure","code":500}\n',
        )
