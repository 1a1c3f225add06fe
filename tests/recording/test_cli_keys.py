"""
Tests for C{gatehouse keys init|issue|status} (L{gatehouse.recording.cli_keys})
and the coverage arithmetic behind them.
"""

from __future__ import annotations

import io
import itertools
import os
import stat
import sys
import time

from twisted.trial.unittest import TestCase

from gatehouse.cli import main
from gatehouse.recording import keys
from gatehouse.recording.cli_keys import plan_windows

NS = keys.NS
HOUR = 3600 * NS
DAY = 24 * HOUR
PASSPHRASE_VAR = "GATEHOUSE_TEST_ROOT_PASSPHRASE"


class CLITestCase(TestCase):
    """Runs C{gatehouse} in-process and captures what it prints."""

    def run_cli(self, *argv: str) -> tuple[int, str, str]:
        out, err = io.StringIO(), io.StringIO()
        self.patch(sys, "stdout", out)
        self.patch(sys, "stderr", err)
        code = main(list(argv))
        return code, out.getvalue(), err.getvalue()

    def assertFails(self, code: int, expected: int, err: str, *fragments: str):
        """Exit status C{expected} with exactly one line on stderr."""
        self.assertEqual(code, expected, err)
        self.assertEqual(err.count("\n"), 1, err)
        self.assertNotIn("Traceback", err)
        for fragment in fragments:
            self.assertIn(fragment, err)


class KeysTestCase(CLITestCase):
    """A root key made with C{keys init}, and an empty signing-key directory."""

    def setUp(self):
        self.base = os.path.abspath(self.mktemp())
        self.root_dir = os.path.join(self.base, "root")
        self.out = os.path.join(self.base, "signing")
        code, _, err = self.run_cli("keys", "init", self.root_dir)
        self.assertEqual(code, 0, err)
        self.root_key = os.path.join(self.root_dir, "root.key")
        self.root = keys.load_root_private(self.root_key)

    def issue(self, *extra: str) -> tuple[int, str, str]:
        return self.run_cli(
            "keys",
            "issue",
            "--root-key",
            self.root_key,
            "--gateway-id",
            "gw-1",
            "--out",
            self.out,
            *extra,
        )

    def windows(self) -> list[tuple[int, int]]:
        loaded, problems = keys.KeyDirectory(self.out).load()
        self.assertEqual(problems, [])
        return [(k.certificate.not_before, k.certificate.not_after) for k in loaded]

    def assertContiguous(self, windows: list[tuple[int, int]]) -> None:
        """Each window starts where the one before it ends."""
        for (_, end), (start, _) in itertools.pairwise(windows):
            self.assertEqual(end, start)


class InitTests(CLITestCase):
    """C{gatehouse keys init DIR}."""

    def test_creates_pair(self):
        """root.key (mode 0600, loadable) and root.pub that matches it."""
        directory = os.path.join(os.path.abspath(self.mktemp()), "new")
        code, out, err = self.run_cli("keys", "init", directory)
        self.assertEqual((code, err), (0, ""))
        private = os.path.join(directory, "root.key")
        self.assertEqual(stat.S_IMODE(os.stat(private).st_mode), 0o600)
        root = keys.load_root_private(private)
        public = keys.load_public_key(os.path.join(directory, "root.pub"))
        self.assertEqual(public, keys.raw_public(root))
        self.assertIn(keys.key_id(public).hex(), out)
        self.assertIn("NOT encrypted", out)

    def test_encrypted(self):
        """With --passphrase-env the private key needs that passphrase."""
        self.patch(os, "environ", {**os.environ, PASSPHRASE_VAR: "correct horse"})
        directory = self.mktemp()
        code, out, err = self.run_cli(
            "keys", "init", directory, "--passphrase-env", PASSPHRASE_VAR
        )
        self.assertEqual(code, 0, err)
        private = os.path.join(directory, "root.key")
        self.assertRaises(keys.KeyFileError, keys.load_root_private, private)
        keys.load_root_private(private, b"correct horse")
        self.assertIn(f"${PASSPHRASE_VAR}", out)

    def test_passphrase_variable_unset(self):
        """A named but unset variable is an error, and nothing is written."""
        self.patch(os, "environ", {k: v for k, v in os.environ.items()})
        os.environ.pop(PASSPHRASE_VAR, None)
        directory = self.mktemp()
        code, _, err = self.run_cli(
            "keys", "init", directory, "--passphrase-env", PASSPHRASE_VAR
        )
        self.assertFails(code, 1, err, PASSPHRASE_VAR)
        self.assertFalse(os.path.exists(directory))

    def test_refuses_overwrite(self):
        """An existing root key (or public key) is never replaced."""
        directory = self.mktemp()
        self.assertEqual(self.run_cli("keys", "init", directory)[0], 0)
        with open(os.path.join(directory, "root.key"), "rb") as f:
            before = f.read()
        code, _, err = self.run_cli("keys", "init", directory)
        self.assertFails(code, 1, err, "already exists")
        with open(os.path.join(directory, "root.key"), "rb") as f:
            self.assertEqual(f.read(), before)
        os.unlink(os.path.join(directory, "root.key"))
        code, _, err = self.run_cli("keys", "init", directory)
        self.assertFails(code, 1, err, "root.pub already exists")


class IssueTests(KeysTestCase):
    """C{gatehouse keys issue}."""

    def test_issue(self):
        """
        Keys cover now to at least --days ahead in contiguous windows of
        --period, each certified by the root for the gateway, mode 0600.
        """
        before = time.time_ns()
        code, out, err = self.issue("--period", "1h", "--days", "1")
        after = time.time_ns()
        self.assertEqual(code, 0, err)
        windows = self.windows()
        self.assertIn(len(windows), (24, 25))
        self.assertIn(f"issued {len(windows)} epoch keys", out)
        self.assertContiguous(windows)
        self.assertTrue(all(end - start == HOUR for start, end in windows))
        self.assertEqual(windows[0][0] % HOUR, 0)
        self.assertLessEqual(windows[0][0], before)
        self.assertGreater(windows[0][1], after)
        self.assertGreaterEqual(windows[-1][1], before + DAY)
        self.assertLess(windows[-1][1], after + DAY + HOUR)

        anchors = keys.TrustAnchors.from_public_keys([keys.raw_public(self.root)])
        loaded, _ = keys.KeyDirectory(self.out).load()
        for key in loaded:
            self.assertIsNone(anchors.check_certificate(key.certificate))
            self.assertEqual(key.certificate.gateway_id, "gw-1")
        for name in os.listdir(self.out):
            mode = os.stat(os.path.join(self.out, name)).st_mode
            self.assertEqual(stat.S_IMODE(mode), 0o600)

    def test_default_horizon(self):
        """
        Without --days or --until, keys cover 2 days ahead (was 7: every
        future key on the gateway is one an intruder could forge with).
        """
        before = time.time_ns()
        code, _, err = self.issue("--period", "1h")
        after = time.time_ns()
        self.assertEqual(code, 0, err)
        windows = self.windows()
        self.assertContiguous(windows)
        self.assertGreaterEqual(windows[-1][1], before + 2 * DAY)
        self.assertLess(windows[-1][1], after + 2 * DAY + HOUR)

    def test_renew_twice(self):
        """
        Renewing continues from the end of the coverage without overlap;
        renewing what is covered already issues nothing.
        """
        self.assertEqual(self.issue("--period", "1h", "--days", "1")[0], 0)
        first = self.windows()
        code, out, err = self.issue("--period", "1h", "--days", "2")
        self.assertEqual(code, 0, err)
        second = self.windows()
        self.assertEqual(second[: len(first)], first)
        self.assertEqual(second[len(first)][0], first[-1][1])
        self.assertContiguous(second)
        self.assertGreaterEqual(second[-1][1], time.time_ns() + 2 * DAY - HOUR)

        code, out, err = self.issue("--period", "1h", "--days", "2")
        self.assertEqual((code, err), (0, ""))
        self.assertIn("no keys issued", out)
        self.assertEqual(self.windows(), second)

    def test_until(self):
        """--until sets the end of the coverage instead of --days."""
        until = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(time.time() + 5 * 3600))
        code, _, err = self.issue("--period", "30m", "--until", until)
        self.assertEqual(code, 0, err)
        windows = self.windows()
        self.assertIn(len(windows), (10, 11, 12))
        end = windows[-1][1]
        target = round(time.time() + 5 * 3600) * NS
        self.assertGreaterEqual(end, target - 2 * NS)
        self.assertLess(end, target + 1800 * NS)

    def test_keeps_clear_of_existing_windows(self):
        """
        A key already issued for a later, unaligned window is left alone:
        the new window before it is cut short and coverage resumes after it.
        """
        start = time.time_ns() + 5 * HOUR + 17 * 60 * NS
        keys.KeyDirectory(self.out).add(
            keys.issue_epoch_keys(self.root, "gw-1", start, HOUR, 1)
        )
        code, _, err = self.issue("--period", "1h", "--days", "1")
        self.assertEqual(code, 0, err)
        windows = self.windows()
        self.assertIn((start, start + HOUR), windows)
        self.assertContiguous(windows)
        before = windows[windows.index((start, start + HOUR)) - 1]
        self.assertEqual(before[1], start)
        self.assertLess(before[1] - before[0], HOUR)

    def test_never_the_past(self):
        """An end in the past is refused; expired keys do not count."""
        code, _, err = self.issue("--until", "2020-01-01")
        self.assertFails(code, 1, err, "in the past")
        old = time.time_ns() - 3 * HOUR
        keys.KeyDirectory(self.out).add(
            keys.issue_epoch_keys(self.root, "gw-1", old, HOUR, 1)
        )
        code, _, err = self.issue("--period", "1h", "--days", "1")
        self.assertEqual(code, 0, err)
        windows = self.windows()
        self.assertEqual(windows[0], (old, old + HOUR))
        self.assertGreater(windows[1][1], time.time_ns())
        self.assertGreater(windows[1][0], old + HOUR)

    def test_encrypted_root(self):
        """An encrypted root key needs --passphrase-env."""
        self.patch(os, "environ", {**os.environ, PASSPHRASE_VAR: "s3cret"})
        root_dir = self.mktemp()
        self.run_cli("keys", "init", root_dir, "--passphrase-env", PASSPHRASE_VAR)
        self.root_key = os.path.join(root_dir, "root.key")
        code, _, err = self.issue("--days", "0.1")
        self.assertFails(code, 1, err, "root.key")
        self.assertFalse(os.path.exists(self.out))
        code, _, err = self.issue("--days", "0.1", "--passphrase-env", PASSPHRASE_VAR)
        self.assertEqual(code, 0, err)
        self.assertTrue(self.windows())

    def test_other_gateway(self):
        """Keys for another gateway in the directory stop the issue."""
        keys.KeyDirectory(self.out).add(
            keys.issue_epoch_keys(self.root, "gw-2", time.time_ns(), HOUR, 1)
        )
        code, _, err = self.issue("--days", "1")
        self.assertFails(code, 1, err, "gw-2")

    def test_unreadable_key_file(self):
        """A key file that cannot be read stops the issue (it might overlap)."""
        os.makedirs(self.out)
        with open(os.path.join(self.out, "broken.epochkey"), "w") as f:
            f.write("{")
        code, _, err = self.issue("--days", "1")
        self.assertFails(code, 1, err, "broken.epochkey")

    def test_usage_errors(self):
        """Bad arguments are usage errors (exit 2)."""
        for extra in (
            ["--period", "0s"],
            ["--period", "soon"],
            ["--days", "-1"],
            ["--days", "1", "--until", "2030-01-01"],
            ["--until", "tomorrow"],
        ):
            code, _, err = self.issue(*extra)
            self.assertEqual(code, 2, extra)
            self.assertNotIn("Traceback", err)
        code, _, err = self.run_cli(
            "keys",
            "issue",
            "--root-key",
            self.root_key,
            "--gateway-id",
            "a b",
            "--out",
            self.out,
        )
        self.assertEqual(code, 2)
        self.assertFalse(os.path.exists(self.out))


class StatusTests(KeysTestCase):
    """C{gatehouse keys status}."""

    def status(self, *extra: str) -> tuple[int, str, str]:
        return self.run_cli("keys", "status", self.out, *extra)

    def test_covered(self):
        """Enough coverage: exit 0, with the count and the end shown."""
        self.issue("--period", "1h", "--days", "2")
        count = len(self.windows())
        code, out, err = self.status()
        self.assertEqual((code, err), (0, ""))
        self.assertIn(f"{count} epoch keys for gateway gw-1", out)
        self.assertIn("gaps:          none", out)
        end = time.strftime(
            "%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.windows()[-1][1] // NS)
        )
        self.assertIn(f"covered until: {end}", out)

    def test_runs_out_soon(self):
        """Coverage that ends within --warn: exit 1."""
        self.issue("--period", "1h", "--days", "2")
        code, out, err = self.status("--warn", "3d")
        self.assertFails(code, 1, err, "run out")
        self.assertIn("covered until", out)

    def test_no_key_now(self):
        """No key valid now: exit 1, whatever --warn says."""
        os.makedirs(self.out)
        code, out, err = self.status("--warn", "0s")
        self.assertFails(code, 1, err, "no epoch key is valid now")
        self.assertIn("valid now:     none", out)

    def test_gap_and_expired(self):
        """Gaps after now and expired keys still on disk are reported."""
        now = time.time_ns()
        directory = keys.KeyDirectory(self.out)
        directory.add(keys.issue_epoch_keys(self.root, "gw-1", now - 3 * HOUR, HOUR, 1))
        directory.add(keys.issue_epoch_keys(self.root, "gw-1", now - HOUR, DAY, 2))
        directory.add(keys.issue_epoch_keys(self.root, "gw-1", now + 3 * DAY, HOUR, 1))
        code, out, err = self.status("--warn", "1h")
        self.assertEqual((code, err), (0, ""))
        gap_start = time.strftime(
            "%Y-%m-%dT%H:%M:%SZ", time.gmtime((now - HOUR + 2 * DAY) // NS)
        )
        self.assertIn(f"gap:           {gap_start}", out)
        self.assertIn("(1d1h)", out)
        self.assertIn("expired keys not yet erased: 1", out)
        self.assertIn("last key ends", out)

    def test_missing_directory(self):
        """A directory that does not exist: one line, exit 1."""
        code, _, err = self.status()
        self.assertFails(code, 1, err, "no such directory")


class CoverageTests(TestCase):
    """The arithmetic: keys.uncovered and cli_keys.plan_windows."""

    def setUp(self):
        self.root = keys.generate_root_key()

    def keys_for(self, *windows: tuple[int, int]) -> list[keys.EpochKey]:
        return [
            keys.issue_epoch_keys(self.root, "gw", start, end - start, 1)[0]
            for start, end in windows
        ]

    def test_uncovered(self):
        """The holes in [start, end), whatever order the keys come in."""
        existing = self.keys_for((30, 40), (10, 20), (15, 25), (50, 60))
        self.assertEqual(
            keys.uncovered(existing, 0, 100), [(0, 10), (25, 30), (40, 50), (60, 100)]
        )
        self.assertEqual(keys.uncovered(existing, 12, 35), [(25, 30)])
        self.assertEqual(keys.uncovered(existing, 31, 39), [])
        self.assertEqual(keys.uncovered([], 5, 9), [(5, 9)])

    def test_plan_from_scratch(self):
        """No keys: aligned windows from the one holding now."""
        self.assertEqual(
            plan_windows([], now_ns=125, end_ns=330, period_ns=100),
            [(100, 200), (200, 300), (300, 400)],
        )

    def test_plan_continues(self):
        """Keys valid now: new windows start where they end, unaligned."""
        existing = self.keys_for((90, 155))
        self.assertEqual(
            plan_windows(existing, now_ns=125, end_ns=330, period_ns=100),
            [(155, 255), (255, 355)],
        )
        self.assertEqual(plan_windows(existing, 125, 150, 100), [])

    def test_plan_skips_past_and_clips(self):
        """
        Windows over by now are dropped; windows that would run into an
        existing one stop where it starts.
        """
        existing = self.keys_for((110, 120), (250, 300))
        self.assertEqual(
            plan_windows(existing, now_ns=125, end_ns=420, period_ns=100),
            [(120, 220), (220, 250), (300, 400), (400, 500)],
        )
