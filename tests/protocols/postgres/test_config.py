"""
Tests for L{gatehouse.protocols.postgres.config} through the config loader.
"""

from __future__ import annotations

from typing import Any

import yaml
from twisted.trial.unittest import SynchronousTestCase

from gatehouse.config import ConfigError, load_config
from tests.test_config import ConfigFiles


class PostgresListenerConfigTests(SynchronousTestCase):
    """A PostgreSQL listener takes tokens as passwords: TLS or explicit cleartext."""

    def setUp(self) -> None:
        self.files = ConfigFiles(self.mktemp())

    def load(self, listener: dict[str, Any]) -> Any:
        data = self.files.minimal()
        data["listeners"] = [
            {"name": "pg", "protocol": "postgres", "port": 6432, **listener}
        ]
        return load_config(self.files.write("gw.yaml", yaml.safe_dump(data)))

    def test_no_tls_refused_at_load(self) -> None:
        with self.assertRaises(ConfigError) as caught:
            self.load({})
        (line,) = caught.exception.lines()
        self.assertTrue(
            line.endswith(
                "gw.yaml: listeners[0].tls: a postgres listener needs tls (certificate"
                " and key), or options.allow_cleartext: true to accept tokens in"
                " cleartext"
            ),
            line,
        )

    def test_cleartext_allowed_explicitly(self) -> None:
        config = self.load({"options": {"allow_cleartext": True}})
        self.assertTrue(config.listeners[0].options.allow_cleartext)

    def test_statement_cap_and_workers(self) -> None:
        """max_statement_bytes and classify_workers: defaults and sizes."""
        options = self.load({"options": {"allow_cleartext": True}}).listeners[0].options
        self.assertEqual(options.max_statement_bytes, 4 * 1024 * 1024)
        self.assertEqual(options.classify_workers, 2)
        options = (
            self.load(
                {
                    "options": {
                        "allow_cleartext": True,
                        "max_statement_bytes": "64KiB",
                        "classify_workers": 1,
                    }
                }
            )
            .listeners[0]
            .options
        )
        self.assertEqual(options.max_statement_bytes, 64 * 1024)
        self.assertEqual(options.classify_workers, 1)
        with self.assertRaises(ConfigError):
            self.load({"options": {"allow_cleartext": True, "classify_workers": 0}})
