"""
Revocation statements, seals from the future and the pinned gateway
(issue 11, items 3 and 4; "Revocation statements", "Seals from the future"
and "Which gateway" in docs/recording-format.md).
"""

from __future__ import annotations

import json
import os
import time

import attrs
import yaml
from cryptography.hazmat.primitives import serialization
from twisted.internet.task import Clock

from gatehouse.recording import keys
from gatehouse.recording.format import Direction, RecordType
from gatehouse.recording.recorder import SegmentRecorder, synchronous_executor
from gatehouse.recording.verify import DEFAULT_MAX_SKEW, verify_session
from tests.recording.helpers import (
    MINUTE,
    NS,
    T0,
    FakeClock,
    Rec,
    make_signing,
    session_id_at,
    write_session,
)
from tests.recording.test_cli_keys import CLITestCase

#: The revocation time of most tests: 5 minutes into the second epoch window.
T = T0 + 20 * MINUTE


def _records(n: int, delay: int = MINUTE) -> list[Rec]:
    return [Rec(b"SELECT %d" % i, delay=delay) for i in range(n)]


def _problems(report) -> list[tuple[str | None, str]]:
    return [(f.segment, f.problem) for f in report.findings]


class RevocationBase(CLITestCase):
    """One root, epoch keys of gw-1 (15 min windows from T0), root files."""

    def setUp(self):
        self.base = os.path.abspath(self.mktemp())
        self.recordings = os.path.join(self.base, "recordings")
        os.makedirs(self.base)
        self.signing = make_signing("gw-1", count=8)
        self.root_key = os.path.join(self.base, "root.key")
        self.root_pub = os.path.join(self.base, "root.pub")
        keys.save_root_key(self.signing.root, self.root_key, self.root_pub)

    def session(self, start: int, n: int = 3, **kwargs):
        """A closed session of gw-1 from C{start}, one record a minute."""
        kwargs.setdefault("seal_interval", 2 * MINUTE)
        return write_session(
            self.recordings,
            self.signing,
            _records(n),
            clock=FakeClock(start),
            **kwargs,
        )

    def config(self, gateway: str, revocations: list[str] | None = None) -> str:
        """A gateway configuration for C{gateway} over these recordings."""
        recording = {
            "directory": self.recordings,
            "signing_keys": self.base,
            "root_public_keys": [self.root_pub],
        }
        if revocations is not None:
            recording["revocations"] = revocations
        path = os.path.join(self.base, f"{gateway}.yaml")
        with open(path, "w") as f:
            yaml.safe_dump(
                {
                    "gateway": {"id": gateway},
                    "identity": {
                        "issuers": [
                            {"issuer": "https://idp.example", "audience": "gatehouse"}
                        ]
                    },
                    "recording": recording,
                },
                f,
            )
        return path

    def verify(self, written, *revocations, **kwargs):
        return verify_session(
            written.directory,
            self.signing.anchors,
            revocations=revocations,
            **kwargs,
        )


class RevocationTests(RevocationBase):
    """L{verify_session} applies revocation statements."""

    def revoke(self, revoked_from=T, gateway="gw-1", key_ids=(), root=None):
        return keys.make_revocation(
            root or self.signing.root, gateway, revoked_from, T0, key_ids
        )

    def test_statement_round_trip(self):
        """The file form gives back the same statement, signature and all."""
        rev = self.revoke(key_ids=[b"k" * 16])
        back = keys.Revocation.from_json(rev.to_json(), "f")
        self.assertEqual(back, rev)
        self.assertEqual(back.signature, rev.signature)
        self.assertIsNone(keys.check_revocation(self.signing.anchors, back))
        self.assertTrue(rev.statement().startswith(b"gatehouse/revoke/v1\x00"))

    def test_before_revocation_stays_valid(self):
        """
        Sessions started and sealed before T, even one in the window that
        contains T, verify as before: the examiner can still defend them.
        """
        early = self.session(T0 + NS)
        same_window = self.session(T0 + 15 * MINUTE + NS)  # sealed by T0+18m
        for written in (early, same_window):
            report = self.verify(written, self.revoke())
            self.assertEqual(report.findings, ())
            self.assertTrue(report.complete)
            self.assertEqual(report.exit_code, 0)

    def test_key_of_later_window(self):
        """A session rooted in a key whose window starts after T: bad-key."""
        written = self.session(T0 + 31 * MINUTE)
        self.assertEqual(self.verify(written).exit_code, 0)
        report = self.verify(written, self.revoke())
        self.assertEqual(report.exit_code, 1)
        self.assertFalse(report.complete)
        first = report.findings[0]
        self.assertEqual(
            (first.segment, first.problem), ("seg-00000000.ghs", "bad-key")
        )
        self.assertIn("is revoked by the revocation of gateway 'gw-1'", first.detail)
        self.assertIn("2023-11-14T22:33:20Z", first.detail)
        self.assertEqual({p for _, p in _problems(report)}, {"bad-key"})
        self.assertEqual(report.sealed_records, 0)

    def test_seals_after_revocation_time(self):
        """
        A session open at T: its segments sealed before T stay sealed, each
        one sealed at or after T is bad-key.
        """
        written = self.session(T0 + 15 * MINUTE + NS, n=8)
        report = self.verify(written, self.revoke())
        seals = [s.statement.wall_seal for s in written.seals]
        expected = [
            (f"seg-{k:08d}.ghs", "bad-key") for k, w in enumerate(seals) if w >= T
        ]
        self.assertTrue(expected and len(expected) < len(seals), seals)
        self.assertEqual(_problems(report), expected)
        for finding in report.findings:
            self.assertIn("not before the revocation of gateway 'gw-1'", finding.detail)
        before = sum(
            s.statement.record_count for s in written.seals if s.statement.wall_seal < T
        )
        self.assertEqual(report.sealed_records, before)
        self.assertEqual(report.exit_code, 1)

    def test_other_gateway_untouched(self):
        """A revocation of gw-2 says nothing about gw-1's sessions."""
        written = self.session(T0 + 31 * MINUTE)
        report = self.verify(written, self.revoke(gateway="gw-2"))
        self.assertEqual((report.findings, report.exit_code), ((), 0))

    def test_listed_keys_only(self):
        """With key ids, only sessions rooted in those keys are revoked."""
        listed = self.session(T0 + 31 * MINUTE)
        other = self.session(T0 + 46 * MINUTE)
        rev = self.revoke(key_ids=[listed.epoch_key.certificate.key_id])
        self.assertEqual(self.verify(listed, rev).exit_code, 1)
        self.assertIn("bad-key", {p for _, p in _problems(self.verify(listed, rev))})
        self.assertEqual(self.verify(other, rev).findings, ())

    def test_forged_revocation_refused(self):
        """
        A statement by an untrusted root, or with a broken signature, is
        refused with a clear error, never silently ignored.
        """
        path = os.path.join(self.base, "forged.json")
        with open(path, "wb") as f:
            f.write(self.revoke(root=keys.generate_root_key()).to_json())
        e = self.assertRaises(
            keys.KeyFileError, keys.load_revocations, self.signing.anchors, [path]
        )
        self.assertIn("revocation refused", str(e))
        self.assertIn("not a trusted root key", str(e))
        # A genuine statement whose time was moved: the signature breaks.
        genuine = self.revoke()
        moved = attrs.evolve(genuine, revoked_from=T + MINUTE)
        obj = json.loads(genuine.to_json())
        obj["statement"] = json.loads(moved.to_json())["statement"]
        with open(path, "w") as f:
            json.dump(obj, f)
        e = self.assertRaises(
            keys.KeyFileError, keys.load_revocations, self.signing.anchors, [path]
        )
        self.assertIn("signature does not verify", str(e))
        with open(path, "w") as f:
            f.write("{}")
        e = self.assertRaises(
            keys.KeyFileError, keys.load_revocations, self.signing.anchors, [path]
        )
        self.assertIn("not a gatehouse revocation statement", str(e))


class FutureSealTests(RevocationBase):
    """Seals dated later than the verifier's clock plus the skew."""

    def test_future_seal(self):
        written = self.session(T0 + NS, n=2)
        last = max(s.statement.wall_seal for s in written.seals)
        ok = self.verify(written, clock=lambda: last - DEFAULT_MAX_SKEW)
        self.assertEqual(ok.findings, ())
        report = self.verify(written, clock=lambda: last - DEFAULT_MAX_SKEW - 1)
        self.assertEqual(
            _problems(report), [(f"seg-{len(written.seals) - 1:08d}.ghs", "bad-key")]
        )
        self.assertIn("sealed in the future", report.findings[0].detail)
        self.assertEqual(report.exit_code, 1)
        # A tighter skew, given explicitly.
        report = self.verify(written, clock=lambda: last - 2 * NS, max_skew=NS)
        self.assertIn("sealed in the future", report.findings[0].detail)


class GatewayPinTests(RevocationBase):
    """A session of gw-1 re-sealed by gw-2 (same root) is foreign when pinned."""

    def setUp(self):
        super().setUp()
        self.gw2 = make_signing("gw-2", count=8, root=self.signing.root)
        self.genuine = self.session(T0 + NS)
        # The attacker holds gw-2's keys: it re-records gw-1's session, same
        # id and directory, with the recorder's encoder and gw-2's epoch key.
        for name in os.listdir(self.genuine.directory):
            os.unlink(os.path.join(self.genuine.directory, name))
        self.forged = write_session(
            self.recordings,
            self.gw2,
            [Rec(b"SELECT 'rewritten'", delay=MINUTE)] * 3,
            clock=FakeClock(T0 + NS),
            seal_interval=2 * MINUTE,
            session_id=self.genuine.session_id,
            directory=self.genuine.directory,
        )

    def test_unpinned_is_the_documented_limit(self):
        report = self.verify(self.forged)
        self.assertEqual((report.findings, report.exit_code), ((), 0))

    def test_pinned(self):
        report = self.verify(self.forged, expected_gateway="gw-1")
        self.assertEqual(report.exit_code, 1)
        self.assertEqual(
            _problems(report),
            [(f"seg-{k:08d}.ghs", "foreign") for k in range(len(self.forged.paths))],
        )
        self.assertIn("gateway 'gw-2'", report.findings[0].detail)
        self.assertIn("only gateway 'gw-1'", report.findings[0].detail)
        self.assertEqual(report.sealed_records, 0)
        # The right pin still accepts gw-2's own session.
        self.assertEqual(self.verify(self.forged, expected_gateway="gw-2").findings, ())

    def test_cli(self):
        """--gateway-id, and --config's gateway.id unless --any-gateway."""
        sid = str(self.forged.session_id)
        where = (self.forged.directory, "--root-key", self.root_pub)
        self.assertEqual(self.run_cli("verify", *where)[0], 0)
        code, out, _ = self.run_cli("verify", *where, "--gateway-id", "gw-1")
        self.assertEqual(code, 1)
        self.assertIn("seg-00000000.ghs: foreign: ", out)
        config = self.config("gw-1")
        code, out, _ = self.run_cli("verify", sid, "--config", config)
        self.assertEqual(code, 1)
        self.assertIn("only gateway 'gw-1' may have signed", out)
        code, out, _ = self.run_cli("verify", sid, "--config", config, "--any-gateway")
        self.assertEqual(code, 0, out)
        code, out, _ = self.run_cli("verify", sid, "--config", self.config("gw-2"))
        self.assertEqual(code, 0, out)
        code, _, err = self.run_cli(
            "verify", sid, "--config", config, "--any-gateway", "--gateway-id", "gw-1"
        )
        self.assertEqual(code, 2, err)


class RecorderResealTests(RevocationBase):
    """
    The same attack with the daemon's own recorder: an intruder holding
    gw-2 runs a L{SegmentRecorder} as gw-2 and re-records gw-1's session
    under its id, in its directory.
    """

    def record(self, gateway: str, signing, payloads: list[bytes]) -> str:
        clock = Clock()
        clock.advance(T0 / NS + 60)
        recorder = SegmentRecorder(
            self.recordings,
            gateway,
            lambda wall: keys.current_key(signing.epoch_keys, wall),
            clock,
            synchronous_executor,
            monotonic_ns=lambda: int(clock.seconds() * NS),
            seal_interval=30.0,
        )
        recording = recorder.open(self.session_id, {"protocol": "test"})
        for payload in payloads:
            recording.record(RecordType.DATA, Direction.CLIENT_TO_GATEWAY, 0, payload)
            clock.advance(20)
        self.successResultOf(recording.close("client quit"))
        return recording.directory

    def test_reseal(self):
        self.session_id = session_id_at(T0 + 60 * NS)
        directory = self.record("gw-1", self.signing, [b"SELECT secret FROM t"])
        pinned = verify_session(
            directory, self.signing.anchors, expected_gateway="gw-1"
        )
        self.assertEqual((pinned.findings, pinned.exit_code), ((), 0))
        for name in os.listdir(directory):
            os.unlink(os.path.join(directory, name))
        gw2 = make_signing("gw-2", count=8, root=self.signing.root)
        forged = self.record("gw-2", gw2, [b"SELECT 1"])
        self.assertEqual(forged, directory)

        # The documented limit: unpinned, the rewrite verifies.
        report = verify_session(directory, self.signing.anchors)
        self.assertEqual((report.findings, report.exit_code), ((), 0))
        report = verify_session(
            directory, self.signing.anchors, expected_gateway="gw-1"
        )
        self.assertEqual(report.exit_code, 1)
        self.assertEqual({p for _, p in _problems(report)}, {"foreign"})
        self.assertEqual(report.sealed_records, 0)
        code, out, _ = self.run_cli(
            "verify", str(self.session_id), "--config", self.config("gw-1")
        )
        self.assertEqual(code, 1, out)
        self.assertIn("seg-00000000.ghs: foreign: was written and sealed by", out)


class RevokeCLITests(RevocationBase):
    """C{gatehouse keys revoke} and C{gatehouse verify --revocation}."""

    def revoke(self, *extra: str) -> tuple[int, str, str]:
        return self.run_cli(
            "keys",
            "revoke",
            "--root-key",
            self.root_key,
            "--gateway-id",
            "gw-1",
            "--from",
            "2023-11-14T22:33:20Z",
            *extra,
        )

    def test_revoke_and_verify(self):
        early = self.session(T0 + NS)
        late = self.session(T0 + 31 * MINUTE)
        path = os.path.join(self.base, "revoked.json")
        before = time.time_ns()
        code, out, err = self.revoke("--out", path)
        self.assertEqual((code, err), (0, ""))
        self.assertIn(f"wrote {path}", out)
        with open(path, "rb") as f:
            rev = keys.Revocation.from_json(f.read(), path)
        self.assertEqual((rev.gateway_id, rev.revoked_from), ("gw-1", T))
        self.assertEqual(rev.root_id, keys.key_id(keys.raw_public(self.signing.root)))
        self.assertGreaterEqual(rev.issued_at, before)
        self.assertEqual(rev.key_ids, ())
        # Never overwritten.
        code, _, err = self.revoke("--out", path)
        self.assertFails(code, 1, err, "already exists")

        key = ("--root-key", self.root_pub)
        self.assertEqual(self.run_cli("verify", late.directory, *key)[0], 0)
        code, out, _ = self.run_cli(
            "verify", late.directory, *key, "--revocation", path
        )
        self.assertEqual(code, 1)
        self.assertIn("seg-00000000.ghs: bad-key: epoch key ", out)
        self.assertIn("revoked by the revocation of gateway 'gw-1' from", out)
        self.assertIn(path, out)
        code, out, _ = self.run_cli(
            "verify", early.directory, *key, "--revocation", path
        )
        self.assertEqual(code, 0, out)

    def test_stdout_and_key_ids(self):
        key_id = self.signing.epoch_keys[2].certificate.key_id.hex()
        code, out, err = self.revoke("--key-id", key_id)
        self.assertEqual((code, err), (0, ""))
        rev = keys.Revocation.from_json(out.encode(), "stdout")
        self.assertEqual(rev.key_ids, (bytes.fromhex(key_id),))
        code, _, err = self.revoke("--key-id", "abc")
        self.assertEqual(code, 2)
        self.assertIn("not an epoch key id", err)

    def test_forged_revocation_cli(self):
        """A revocation by another root: exit 2, one clear line."""
        other = keys.generate_root_key()
        other_key = os.path.join(self.base, "other.key")
        with open(other_key, "wb") as f:
            f.write(
                other.private_bytes(
                    serialization.Encoding.PEM,
                    serialization.PrivateFormat.PKCS8,
                    serialization.NoEncryption(),
                )
            )
        path = os.path.join(self.base, "forged.json")
        code, _, err = self.run_cli(
            "keys", "revoke", "--root-key", other_key, "--gateway-id", "gw-1",
            "--from", "2023-11-14T22:33:20Z", "--out", path,
        )  # fmt: skip
        self.assertEqual(code, 0, err)
        written = self.session(T0 + NS)
        code, out, err = self.run_cli(
            "verify", written.directory, "--root-key", self.root_pub,
            "--revocation", path,
        )  # fmt: skip
        self.assertFails(code, 2, err, path, "revocation refused", "not a trusted root")
        self.assertEqual(out, "")

    def test_future_seal_cli(self):
        """A seal dated an hour ahead of the real clock: bad-key, exit 1."""
        now = time.time_ns()
        signing = make_signing(
            "gw-1", start=now - MINUTE, count=8, root=self.signing.root
        )
        written = write_session(
            self.recordings, signing, _records(2), clock=FakeClock(now + 3600 * NS)
        )
        key = (written.directory, "--root-key", self.root_pub)
        code, out, _ = self.run_cli("verify", *key)
        self.assertEqual(code, 1)
        self.assertIn("bad-key: sealed in the future", out)
        code, out, _ = self.run_cli("verify", *key, "--max-skew", "2h")
        self.assertEqual(code, 0, out)

    def test_configured_revocations(self):
        """
        recording.revocations: verify --config applies them; check-config
        refuses one not signed by a trusted root, naming the key.
        """
        os.makedirs(self.recordings)
        late = self.session(T0 + 31 * MINUTE)
        path = os.path.join(self.base, "revoked.json")
        self.assertEqual(self.revoke("--out", path)[0], 0)
        config = self.config("gw-1", [path])
        code, out, _ = self.run_cli("verify", str(late.session_id), "--config", config)
        self.assertEqual(code, 1)
        self.assertIn("seg-00000000.ghs: bad-key: ", out)
        self.assertIn(path, out)

        forged = keys.make_revocation(keys.generate_root_key(), "gw-1", T, T0)
        with open(path, "wb") as f:
            f.write(forged.to_json())
        code, out, err = self.run_cli("check-config", config)
        self.assertEqual(code, 1, out + err)
        self.assertIn("recording.revocations[0]", out + err)
        self.assertIn("not a trusted root key", out + err)
        code, out, err = self.run_cli(
            "verify", str(late.session_id), "--config", config
        )
        self.assertEqual(code, 2, out)
        self.assertIn("not a trusted root key", err)
