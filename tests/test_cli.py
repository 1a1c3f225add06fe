"""
Tests for L{gatehouse.cli}.
"""

from __future__ import annotations

import argparse
import io
import os
import subprocess
import sys

from twisted.trial.unittest import SynchronousTestCase

import gatehouse
from gatehouse import cli
from tests.test_config import ConfigFiles

_THIS_MODULE = sys.modules[__name__]
_GATEHOUSE = os.path.join(os.path.dirname(sys.executable), "gatehouse")


class MainTestCase(SynchronousTestCase):
    """
    Runs L{cli.main} in this process with captured output.
    """

    def setUp(self) -> None:
        self.files = ConfigFiles(self.mktemp())
        self.stdout = io.StringIO()
        self.stderr = io.StringIO()
        self.patch(sys, "stdout", self.stdout)
        self.patch(sys, "stderr", self.stderr)

    def main(self, *argv: str) -> int:
        """
        Run C{gatehouse ARGV...} and return its exit status.
        """
        return cli.main(list(argv))


class CheckConfigTests(MainTestCase):
    """
    C{gatehouse check-config FILE}.
    """

    def test_ok(self) -> None:
        """
        A valid file prints C{ok} and exits 0.
        """
        path = self.files.save(self.files.minimal())
        self.assertEqual(self.main("check-config", path), 0)
        self.assertEqual((self.stdout.getvalue(), self.stderr.getvalue()), ("ok\n", ""))

    def test_does_not_create(self) -> None:
        """
        Checking does not create the recording directory.
        """
        path = self.files.save(self.files.minimal())
        self.assertEqual(self.main("check-config", path), 0)
        self.assertFalse(os.path.exists(self.files["recordings"]))

    def test_problems(self) -> None:
        """
        A bad file prints each problem on one line of stderr and exits 1.
        """
        data = self.files.minimal()
        data["gateway"]["idd"] = "gw-2"
        data["recording"]["seal_interval"] = "soon"
        path = self.files.save(data)
        self.assertEqual(self.main("check-config", path), 1)
        self.assertEqual(self.stdout.getvalue(), "")
        self.assertEqual(
            self.stderr.getvalue().splitlines(),
            [
                f"{path}: gateway.idd: unknown key (did you mean id?)",
                f"{path}: recording.seal_interval: 'soon' is not a duration "
                "(examples: 200ms, 30s, 15m, 2h, 1h30m)",
            ],
        )

    def test_missing_file(self) -> None:
        """
        A missing file is one line and exit status 1.
        """
        self.assertEqual(self.main("check-config", "nope.yaml"), 1)
        self.assertEqual(
            self.stderr.getvalue(),
            "nope.yaml: cannot read the configuration file: "
            "No such file or directory\n",
        )

    def test_missing_argument(self) -> None:
        """
        Without a file it is a usage error: exit status 2.
        """
        self.assertEqual(self.main("check-config"), 2)
        self.assertIn(
            "gatehouse check-config: error: the following arguments are required: FILE",
            self.stderr.getvalue(),
        )


class MainTests(MainTestCase):
    """
    The command as a whole.
    """

    def test_version(self) -> None:
        """
        C{gatehouse version} prints the version.
        """
        self.assertEqual(self.main("version"), 0)
        self.assertTrue(
            self.stdout.getvalue().startswith(f"gatehouse {gatehouse.__version__} (")
        )

    def test_help(self) -> None:
        """
        C{--help} lists the subcommands and exits 0.
        """
        self.assertEqual(self.main("--help"), 0)
        for subcommand in cli.SUBCOMMANDS:
            self.assertIn(subcommand.name, self.stdout.getvalue())

    def test_no_subcommand(self) -> None:
        """
        A subcommand is required.
        """
        self.assertEqual(self.main(), 2)
        self.assertIn("required: COMMAND", self.stderr.getvalue())

    def test_unknown_subcommand(self) -> None:
        """
        An unknown subcommand is a usage error.
        """
        self.assertEqual(self.main("frobnicate"), 2)
        self.assertIn("invalid choice: 'frobnicate'", self.stderr.getvalue())

    def test_lazy(self) -> None:
        """
        Only the subcommand that runs is imported and set up.
        """
        configured = []

        def configure(parser: argparse.ArgumentParser) -> cli.Handler:
            configured.append(parser.prog)
            return lambda args: 0

        broken = cli.Subcommand("broken", "never imported", "no.such.module:configure")
        self.patch(
            cli,
            "SUBCOMMANDS",
            (
                broken,
                cli.Subcommand("fine", "imported", f"{__name__}:configure"),
            ),
        )
        self.patch(_THIS_MODULE, "configure", configure)
        self.assertEqual(self.main("--help"), 0)
        self.assertIn("broken", self.stdout.getvalue())
        self.assertEqual(self.main("fine"), 0)
        self.assertEqual(configured, ["gatehouse fine"])

    def test_command_error(self) -> None:
        """
        A L{cli.CommandError} is one line on stderr and exit status 1.
        """

        def configure(parser: argparse.ArgumentParser) -> cli.Handler:
            def fail(args: argparse.Namespace) -> int:
                raise cli.CommandError("no such session: 42")

            return fail

        self.patch(
            cli, "SUBCOMMANDS", (cli.Subcommand("x", "x", f"{__name__}:configure"),)
        )
        self.patch(_THIS_MODULE, "configure", configure)
        self.assertEqual(self.main("x"), 1)
        self.assertEqual(self.stderr.getvalue(), "gatehouse: x: no such session: 42\n")

    def test_os_error(self) -> None:
        """
        An L{OSError} about a file is one line on stderr and exit status 1.
        """

        def configure(parser: argparse.ArgumentParser) -> cli.Handler:
            def fail(args: argparse.Namespace) -> int:
                open(self.files["missing"])
                return 0

            return fail

        self.patch(
            cli, "SUBCOMMANDS", (cli.Subcommand("x", "x", f"{__name__}:configure"),)
        )
        self.patch(_THIS_MODULE, "configure", configure)
        self.assertEqual(self.main("x"), 1)
        self.assertEqual(
            self.stderr.getvalue(),
            f"gatehouse: x: {self.files['missing']}: No such file or directory\n",
        )


def configure(parser: argparse.ArgumentParser) -> cli.Handler:
    """
    Replaced by tests that register a subcommand in this module.
    """
    raise NotImplementedError()


class ScriptTests(SynchronousTestCase):
    """
    The installed C{gatehouse} script, in a real process.
    """

    def setUp(self) -> None:
        self.files = ConfigFiles(self.mktemp())

    def run_script(self, *args: str) -> subprocess.CompletedProcess[str]:
        """
        Run the installed C{gatehouse} script.
        """
        return subprocess.run(
            [_GATEHOUSE, *args],
            cwd=self.files.directory,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    def test_ok(self) -> None:
        """
        A valid file: C{ok}, exit status 0.
        """
        result = self.run_script("check-config", self.files.save(self.files.minimal()))
        self.assertEqual((result.returncode, result.stdout), (0, "ok\n"))

    def test_bad(self) -> None:
        """
        A bad file: one line per problem, exit status 1, no traceback.
        """
        data = self.files.minimal()
        data["admin"] = {"port": "http"}
        self.files.save(data)
        result = self.run_script("check-config", "gw.yaml")
        self.assertEqual(result.returncode, 1)
        self.assertEqual(
            result.stderr,
            "gw.yaml: admin.port: expected an integer, got a string ('http')\n",
        )
        self.assertNotIn("Traceback", result.stdout + result.stderr)

    def test_usage(self) -> None:
        """
        A usage error exits 2 without a traceback.
        """
        result = self.run_script("check-config", "a", "b")
        self.assertEqual(result.returncode, 2)
        self.assertIn("unrecognized arguments: b", result.stderr)
        self.assertNotIn("Traceback", result.stderr)

    def test_python_m_gatehouse(self) -> None:
        """
        C{python -m gatehouse} is the same command, for when the console
        script is not on PATH.
        """
        result = subprocess.run(
            [sys.executable, "-m", "gatehouse", "version"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertIn(f"gatehouse {gatehouse.__version__}", result.stdout)
