"""Options of HTTP and Kubernetes listeners and targets, checked at load."""

from __future__ import annotations

from typing import Any

import yaml
from twisted.trial.unittest import SynchronousTestCase

from gatehouse.config import ConfigError, load_config
from gatehouse.protocols.http.config import HTTPListenerOptions, HTTPTargetOptions
from tests.test_config import ConfigFiles


class HTTPConfigTests(SynchronousTestCase):
    """What a listener and a target must say, and what is refused."""

    def setUp(self) -> None:
        self.files = ConfigFiles(self.mktemp())

    def load(
        self,
        protocol: str = "kubernetes",
        listener: dict[str, Any] | None = None,
        target: dict[str, Any] | None = None,
        tls: bool = True,
    ) -> Any:
        data = self.files.minimal()
        entry: dict[str, Any] = {
            "name": "kube",
            "protocol": protocol,
            "port": 6443,
            "options": dict(listener or {}),
        }
        if tls:
            entry["tls"] = {
                "certificate": self.files["cert.pem"],
                "key": self.files["key.pem"],
            }
        data["listeners"] = [entry]
        options = {
            "url": "https://127.0.0.1:6443",
            "ca_file": self.files["ca.pem"],
            "allow_groups": ["dba"],
            **(target or {}),
        }
        options = {k: v for k, v in options.items() if v is not None}
        data["targets"] = [{"name": "prod", "protocol": protocol, "options": options}]
        return load_config(self.files.write("gw.yaml", yaml.safe_dump(data)))

    def problems(self, **kw: Any) -> list[str]:
        with self.assertRaises(ConfigError) as caught:
            self.load(**kw)
        return caught.exception.lines()

    def test_loads(self) -> None:
        config = self.load(
            listener={"target": "prod", "record_body_bytes": "64KiB"},
            target={"impersonate_group_prefix": "gh:"},
        )
        listener = config.listeners[0].options
        self.assertIsInstance(listener, HTTPListenerOptions)
        self.assertEqual((listener.target, listener.record_body_bytes), ("prod", 65536))
        self.assertEqual(listener.max_header_bytes, 16384)
        target = config.targets[0].options
        self.assertIsInstance(target, HTTPTargetOptions)
        self.assertEqual(target.impersonate_group_prefix, "gh:")

    def test_listener_needs_tls(self) -> None:
        lines = self.problems(tls=False)
        self.assertTrue(any("needs tls" in line for line in lines), lines)
        config = self.load(tls=False, listener={"allow_cleartext": True})
        self.assertTrue(config.listeners[0].options.allow_cleartext)

    def test_bad_ca_file(self) -> None:
        junk = self.files.write("junk.pem", "not a certificate\n")
        lines = self.problems(target={"ca_file": junk})
        self.assertTrue(any("ca_file" in line for line in lines), lines)

    def test_client_certificate_needs_key(self) -> None:
        lines = self.problems(target={"client_certificate": self.files["cert.pem"]})
        self.assertTrue(any("client_key" in line for line in lines), lines)

    def test_client_certificate_loads(self) -> None:
        config = self.load(
            target={
                "client_certificate": self.files["cert.pem"],
                "client_key": self.files["key.pem"],
            }
        )
        self.assertIsNotNone(config.targets[0].options.client_certificate)

    def test_url_required(self) -> None:
        lines = self.problems(target={"url": None})
        self.assertTrue(any("url" in line for line in lines), lines)

    def test_http_headers(self) -> None:
        """An http target injects headers from files; some names are the gateway's."""
        secret = self.files["secret"]
        config = self.load(
            protocol="http", target={"headers": [{"name": "X-Api-Key", "file": secret}]}
        )
        self.assertEqual(
            [(h.name, h.file) for h in config.targets[0].options.headers],
            [("X-Api-Key", secret)],
        )
        lines = self.problems(
            protocol="http", target={"headers": [{"name": "Host", "file": secret}]}
        )
        self.assertTrue(any("set by the gateway" in line for line in lines), lines)

    def test_kubernetes_has_no_headers(self) -> None:
        secret = self.files["secret"]
        lines = self.problems(target={"headers": [{"name": "X", "file": secret}]})
        self.assertTrue(any("headers" in line for line in lines), lines)
