"""
Checks that tell the truth: C{gatehouse check-config} and the daemon's start
refuse what cannot work, one line per problem, exit status 1.
"""

from __future__ import annotations

import datetime
import os
import shutil
import time
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import SynchronousTestCase

from gatehouse._pki import write_key
from gatehouse.config import load_config
from gatehouse.recording import keys as gkeys
from gatehouse.service import build_components
from tests.test_cli import MainTestCase
from tests.test_config import use_dummy_protocol
from tests.test_plugin import assert_plugin_refuses

HOUR = 3600 * 10**9


class CheckConfigTests(MainTestCase):
    """Each case: its one line on stderr, exit status 1."""

    def check(self, data: dict[str, Any], *expected: str) -> None:
        path = self.files.save(data)
        status = self.main("check-config", path)
        self.assertEqual(
            (status, self.stdout.getvalue(), self.stderr.getvalue().splitlines()),
            (1, "", [f"{path}: {line}" for line in expected]),
        )

    def with_admin_tls(self, **tls: str) -> dict[str, Any]:
        data = self.files.minimal()
        data["admin"] = {
            "port": 0,
            "tls": {"certificate": "cert.pem", "key": "key.pem", **tls},
        }
        return data

    def test_ok(self) -> None:
        """The fixture's real certificate, key and signing keys pass."""
        path = self.files.save(self.with_admin_tls())
        self.assertEqual(self.main("check-config", path), 0, self.stderr.getvalue())
        self.assertEqual(self.stdout.getvalue(), "ok\n")

    def test_mismatched_key(self) -> None:
        """A key that is not the certificate's."""
        key = ec.generate_private_key(ec.SECP256R1())
        write_key(key, Path(self.files["other.key"]))
        self.check(
            self.with_admin_tls(key="other.key"),
            f"admin.tls.key: {self.files['other.key']} does not match the "
            f"certificate in {self.files['cert.pem']}",
        )

    def test_bad_certificate_pem(self) -> None:
        """A file that holds no certificate, and a damaged one."""
        self.files.write("none.pem", "not a certificate\n")
        self.check(
            self.with_admin_tls(certificate="none.pem"),
            f"admin.tls.certificate: {self.files['none.pem']} holds no PEM certificate",
        )

    def test_damaged_certificate_pem(self) -> None:
        """A PEM block whose contents are not a certificate."""
        self.files.write(
            "bad.pem",
            "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
        )
        self.check(
            self.with_admin_tls(certificate="bad.pem"),
            f"admin.tls.certificate: {self.files['bad.pem']} is not a valid PEM "
            "certificate: its contents do not parse as X.509",
        )

    def test_bad_key_pem(self) -> None:
        """A key file that holds no key."""
        self.files.write("nokey.pem", "key\n")
        self.check(
            self.with_admin_tls(key="nokey.pem"),
            f"admin.tls.key: {self.files['nokey.pem']} is not a valid PEM private "
            "key (or not a supported type)",
        )

    def test_expired_certificate(self) -> None:
        """A certificate past its end."""
        key = ec.generate_private_key(ec.SECP256R1())
        write_key(key, Path(self.files["old.key"]))
        self.files.write("old.crt", _self_signed(key, days_ago=10, days=5))
        end = datetime.datetime.now(datetime.UTC) - datetime.timedelta(days=5)
        path = self.files.save(
            self.with_admin_tls(certificate="old.crt", key="old.key")
        )
        self.assertEqual(self.main("check-config", path), 1)
        (line,) = self.stderr.getvalue().splitlines()
        self.assertIn(
            f"admin.tls.certificate: {self.files['old.crt']} expired on {end:%Y-%m-%d}",
            line,
        )

    def test_unset_password_env(self) -> None:
        """A target's password_env names a variable this process lacks."""
        os.environ.pop("GATEHOUSE_TEST_UNSET_PW", None)
        data = self.files.minimal()
        data["targets"] = [
            {
                "name": "db",
                "protocol": "postgres",
                "options": {
                    "host": "127.0.0.1",
                    "database": "app",
                    "user": "app",
                    "password_env": "GATEHOUSE_TEST_UNSET_PW",
                    "tls": {"mode": "disable"},
                    "allow_groups": ["dba"],
                },
            }
        ]
        self.check(
            data,
            "targets[0].options.password_env: environment variable "
            "GATEHOUSE_TEST_UNSET_PW is not set",
        )
        os.environ["GATEHOUSE_TEST_UNSET_PW"] = "secret"
        self.addCleanup(os.environ.pop, "GATEHOUSE_TEST_UNSET_PW", None)
        self.stderr.truncate(0)
        self.stderr.seek(0)
        self.assertEqual(self.main("check-config", self.files.save(data)), 0)

    def replace_keys(self, start: int, period: int, count: int) -> None:
        shutil.rmtree(self.files["keys"])
        root = gkeys.load_root_private(self.files["root.key"])
        gkeys.KeyDirectory(self.files["keys"]).add(
            gkeys.issue_epoch_keys(root, "gw-1", start, period, count)
        )

    def test_expired_signing_keys(self) -> None:
        """Keys whose windows all ended: sessions would be refused."""
        self.replace_keys(time.time_ns() - 3 * HOUR, HOUR, 2)
        self.check(
            self.files.minimal(),
            f"recording.signing_keys: no signing key in {self.files['keys']} is "
            "valid now (sessions would be refused); issue keys with "
            "`gatehouse keys issue`",
        )
        # Checking erased nothing.
        self.assertEqual(len(os.listdir(self.files["keys"])), 2)

    def test_future_signing_keys(self) -> None:
        """Keys that start later: said, with when."""
        self.replace_keys(time.time_ns() + 2 * HOUR + 10**9, HOUR, 2)
        path = self.files.save(self.files.minimal())
        self.assertEqual(self.main("check-config", path), 1)
        (line,) = self.stderr.getvalue().splitlines()
        self.assertTrue(
            line.startswith(
                f"{path}: recording.signing_keys: no signing key in "
                f"{self.files['keys']} is valid now (sessions would be refused); "
                "the next one starts at "
            ),
            line,
        )

    def test_signing_keys_run_out_soon(self) -> None:
        """Coverage shorter than recording.key_warning is a warning, exit 0."""
        self.replace_keys(time.time_ns() - 60 * 10**9, HOUR, 2)
        path = self.files.save(self.files.minimal())
        self.assertEqual(self.main("check-config", path), 0)
        self.assertEqual(self.stdout.getvalue(), "ok\n")
        (line,) = self.stderr.getvalue().splitlines()
        self.assertTrue(
            line.startswith(
                f"warning: {path}: recording.signing_keys: signing keys run out in "
            ),
            line,
        )

    def test_admin_routable_without_tls(self) -> None:
        """The admin API on a routable address needs TLS (tokens cross it)."""
        data = self.files.minimal()
        data["admin"] = {"address": "0.0.0.0", "port": 0}
        self.check(
            data,
            "admin.address: 0.0.0.0 is not a loopback address: the admin API "
            "needs tls (certificate and key) to listen there",
        )
        data["admin"]["address"] = "127.0.0.1"
        self.stderr.truncate(0)
        self.stderr.seek(0)
        self.assertEqual(self.main("check-config", self.files.save(data)), 0)


class StartupTests(SynchronousTestCase):
    """The daemon's start refuses the same files (twistd plugin)."""

    def test_mismatched_listener_key(self) -> None:
        """
        A listener whose key is not its certificate's never starts (it would
        accept connections and drop each in the TLS handshake).
        """

        MainTestCase.setUp(self)  # type: ignore[arg-type]
        use_dummy_protocol(self)
        key = ec.generate_private_key(ec.SECP256R1())
        write_key(key, Path(self.files["other.key"]))
        data = self.files.minimal()
        data["listeners"] = [
            {
                "name": "a",
                "protocol": "dummy",
                "port": 0,
                "tls": {"certificate": "cert.pem", "key": "other.key"},
            }
        ]
        path = self.files.save(data)
        assert_plugin_refuses(
            self,
            path,
            f"{path}: listeners[0].tls.key: {self.files['other.key']} does not "
            f"match the certificate in {self.files['cert.pem']}\n",
        )


class ReadinessTests(SynchronousTestCase):
    """What C{/readyz} reports, from the gateway's parts."""

    def setUp(self) -> None:
        MainTestCase.setUp(self)  # type: ignore[arg-type]
        self.reactor = MemoryReactorClock()
        self.reactor.advance(time.time())

    def core(self) -> Any:
        config = load_config(self.files.save(self.files.minimal()))
        core = build_components(config, self.reactor).core
        core.keyring.load_now()
        return core

    def test_ready(self) -> None:
        """Valid keys, no drain: nothing to report."""
        self.assertEqual(self.core().readiness_problems(), [])

    def test_no_signing_key(self) -> None:
        """No key valid now: not ready."""
        shutil.rmtree(self.files["keys"])
        os.makedirs(self.files["keys"])
        self.assertEqual(
            self.core().readiness_problems(), ["no signing key is valid now"]
        )

    def test_draining(self) -> None:
        """While draining: not ready."""
        core = self.core()
        core.draining = True
        self.assertEqual(core.readiness_problems(), ["the gateway is shutting down"])

    def test_recording_directory_not_writable(self) -> None:
        """A recording directory the gateway cannot write to: not ready."""
        core = self.core()
        # The fallback for a recorder that does not report for itself (a
        # recorder that does: test_recorder_problems).
        self.patch(core.hub, "recorder", object())
        os.makedirs(self.files["recordings"], exist_ok=True)
        os.chmod(self.files["recordings"], 0o500)
        self.addCleanup(os.chmod, self.files["recordings"], 0o700)
        if os.access(self.files["recordings"], os.W_OK):
            # root may write anyway: make it not a directory instead.
            os.chmod(self.files["recordings"], 0o700)
            os.rmdir(self.files["recordings"])
            self.files.write("recordings", "a file\n")
        self.assertEqual(
            core.readiness_problems(),
            [f"the recording directory {self.files['recordings']} is not writable"],
        )

    def test_recorder_problems(self) -> None:
        """The recorder's own problems (a3's readiness_problems) are listed."""
        core = self.core()
        # Set on the instance: a3's SegmentRecorder.readiness_problems, or
        # a stand-in where that branch is not merged yet.
        core.hub.recorder.readiness_problems = lambda: [
            "recording directory is not writable"
        ]
        self.assertEqual(
            core.readiness_problems(), ["recording directory is not writable"]
        )


def _self_signed(key: Any, days_ago: int, days: int) -> bytes:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "old")])
    start = datetime.datetime.now(datetime.UTC) - datetime.timedelta(days=days_ago)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + datetime.timedelta(days=days))
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM)


class RestartNeededTests(SynchronousTestCase):
    """What a reload cannot apply is named, one line each."""

    def setUp(self) -> None:
        MainTestCase.setUp(self)  # type: ignore[arg-type]

    def test_recorder_and_classifier_settings(self) -> None:
        """
        The recorder's space settings and a listener's classifier workers
        are fixed when they start: changing them needs a restart, and the
        reload says so instead of pretending.
        """
        import attrs

        from gatehouse.service import _restart_needed

        old = load_config(self.files.save(self.files.minimal()))
        self.assertEqual(_restart_needed(old, old), [])
        new = attrs.evolve(
            old,
            recording=attrs.evolve(
                old.recording,
                reserve_bytes=old.recording.reserve_bytes + 1,
                preallocate=not old.recording.preallocate,
            ),
        )
        self.assertEqual(
            _restart_needed(old, new),
            ["recording.reserve_bytes", "recording.preallocate"],
        )
