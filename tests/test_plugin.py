"""
Tests for the twistd plugin (C{twisted/plugins/gatehouse_plugin.py}) and
L{gatehouse.service}.

Several tests run real processes with this environment's interpreter, so they
see the plugin the way an operator's C{twistd} does.
"""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import sys
import sysconfig
from typing import Any

import yaml
from twisted.application.service import IService, IServiceMaker, MultiService
from twisted.internet.testing import MemoryReactorClock
from twisted.plugin import getPlugins
from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase

import gatehouse
from gatehouse import service as service_module
from gatehouse.config import load_config
from gatehouse.recording.interfaces import RecordingUnavailable
from gatehouse.service import Components, build_components, makeService
from gatehouse.session import SessionHub
from tests.test_config import ConfigFiles, use_dummy_protocol

_BIN = os.path.dirname(sys.executable)
_PROJECT = os.path.dirname(os.path.dirname(os.path.abspath(gatehouse.__file__)))

_DISCOVER = """\
import sys
from twisted.application.service import IServiceMaker
from twisted.plugin import getPlugins
found = [p for p in getPlugins(IServiceMaker) if p.tapname == "gatehouse"]
print(len(found))
if found:
    print(sys.modules[type(found[0]).__module__].__file__)
"""


def run(
    args: list[str], cwd: str, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """
    Run C{args} in C{cwd} (never the project directory, so that only
    installed code is found) and capture its output as text.  Without
    C{PYTHONPATH}: trial's parallel workers (C{-j}) get the project
    directory through it, and a child must not.
    """
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return subprocess.run(
        args,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        env=env,
    )


def gatehouse_plugin() -> Any:
    """
    Return the gatehouse service maker as plugin discovery finds it.
    """
    [plugin] = [p for p in getPlugins(IServiceMaker) if p.tapname == "gatehouse"]
    return plugin


def assert_plugin_refuses(
    case: SynchronousTestCase, path: str, expected_stderr: str
) -> None:
    """
    C{twistd gatehouse --config path} refuses to make the service: exit
    status 1 and exactly C{expected_stderr}, no traceback.
    """
    options = gatehouse_plugin().options()
    options.parseOptions(["--config", path])
    stderr = io.StringIO()
    case.patch(sys, "stderr", stderr)
    error = case.assertRaises(SystemExit, gatehouse_plugin().makeService, options)
    case.assertEqual(error.code, 1)
    case.assertEqual(stderr.getvalue(), expected_stderr)


class PluginTests(SynchronousTestCase):
    """
    The plugin in this process.
    """

    def test_discovered(self) -> None:
        """
        Plugin discovery finds exactly one C{gatehouse} service maker.
        """
        plugin = gatehouse_plugin()
        self.assertTrue(IServiceMaker.providedBy(plugin))
        self.assertTrue(plugin.description)

    def test_config_required(self) -> None:
        """
        The options insist on C{--config}.
        """
        options = gatehouse_plugin().options()
        error = self.assertRaises(usage.UsageError, options.parseOptions, [])
        self.assertEqual(str(error), "--config is required")

    def test_config_option(self) -> None:
        """
        C{--config} and C{-c} name the configuration file.
        """
        for args in (["--config", "gw.yaml"], ["-c", "gw.yaml"]):
            options = gatehouse_plugin().options()
            options.parseOptions(args)
            self.assertEqual(options["config"], "gw.yaml")

    def test_make_service(self) -> None:
        """
        A valid configuration becomes a L{MultiService}.
        """
        files = ConfigFiles(self.mktemp())
        options = gatehouse_plugin().options()
        options.parseOptions(["--config", files.save(files.minimal())])
        service = gatehouse_plugin().makeService(options)
        self.assertIsInstance(service, MultiService)

    def test_make_service_bad_config(self) -> None:
        """
        A bad configuration writes its problems to stderr and exits with
        status 1.
        """
        files = ConfigFiles(self.mktemp())
        data = files.minimal()
        data["gateway"]["id"] = "no spaces"
        path = files.save(data)
        assert_plugin_refuses(
            self,
            path,
            f"{path}: gateway.id: 'no spaces' is not valid "
            "(1 to 64 characters of A-Z a-z 0-9 . _ -)\n",
        )


class TwistdTests(SynchronousTestCase):
    """
    The plugin as the real C{twistd} sees it.
    """

    def setUp(self) -> None:
        self.files = ConfigFiles(self.mktemp())
        self.twistd = os.path.join(_BIN, "twistd")

    def test_help_lists_plugin(self) -> None:
        """
        C{twistd --help} lists the gatehouse command.
        """
        result = run([self.twistd, "--help"], self.files.directory)
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertRegex(result.stdout, r"\n\s+gatehouse\s+A Layer-7 access gateway")

    def test_bad_config(self) -> None:
        """
        C{twistd -n gatehouse --config bad.yaml} prints each problem on one
        line of stderr and exits non-zero without a traceback.
        """
        data = self.files.minimal()
        data["recording"]["seal_intervall"] = "30s"
        data["identity"]["issuers"][0]["jwks_file"] = "/x/jwks.json"
        path = self.files.save(data)
        result = run(
            [self.twistd, "-n", "gatehouse", "--config", path], self.files.directory
        )
        self.assertEqual(result.returncode, 1)
        self.assertEqual(
            result.stderr.splitlines(),
            [
                f"{path}: identity.issuers[0].jwks_file: /x/jwks.json does not exist",
                f"{path}: recording.seal_intervall: unknown key "
                "(did you mean seal_interval?)",
            ],
        )
        self.assertNotIn("Traceback", result.stdout + result.stderr)
        self.assertFalse(os.path.exists(self.files["twistd.pid"]))

    def test_missing_config_option(self) -> None:
        """
        Without C{--config}, twistd reports the usage error.
        """
        result = run([self.twistd, "-n", "gatehouse"], self.files.directory)
        self.assertEqual(result.returncode, 1)
        self.assertIn("--config is required", result.stdout + result.stderr)
        self.assertNotIn("Traceback", result.stdout + result.stderr)


class EditableInstallTests(SynchronousTestCase):
    """
    The plugin is found after an editable install in C{compat} mode.
    """

    def test_editable_compat(self) -> None:
        """
        In a fresh virtual environment, discovery does not find the plugin
        before C{pip install -e . --config-settings editable_mode=compat} and
        does afterwards, from the installed source tree.

        The fresh environment borrows this environment's dependencies through
        a C{.pth} line naming a view of our site-packages without gatehouse
        or its plugin file (this environment may have gatehouse installed:
        tox installs the wheel).  A plain path line does not process that
        directory's own C{.pth} files, so an editable install here does not
        leak in either.
        """
        work = os.path.abspath(self.mktemp())
        source = os.path.join(work, "src")
        shutil.copytree(
            _PROJECT,
            source,
            ignore=shutil.ignore_patterns(
                ".git",
                "_trial_temp*",
                "__pycache__",
                "*.egg-info",
                "build",
                "dist",
                ".tox",
                ".hypothesis",
                "dropin.cache",
            ),
        )
        venv = os.path.join(work, "venv")
        subprocess.run(
            [sys.executable, "-m", "venv", "--without-pip", venv], check=True
        )
        python = os.path.join(venv, "bin", "python")
        purelib = run(
            [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            work,
        ).stdout.strip()
        deps = _dependencies_without_gatehouse(
            sysconfig.get_paths()["purelib"], os.path.join(work, "deps")
        )
        with open(os.path.join(purelib, "_gatehouse_test_deps.pth"), "w") as f:
            f.write(deps + "\n")

        before = run([python, "-c", _DISCOVER], work)
        self.assertEqual(before.stdout.split(), ["0"], before.stderr)

        install = run(
            [
                sys.executable,
                "-m",
                "pip",
                "--python",
                python,
                "install",
                "--quiet",
                "--no-deps",
                "--editable",
                source,
                "--config-settings",
                "editable_mode=compat",
            ],
            work,
            timeout=300,
        )
        self.assertEqual(install.returncode, 0, install.stdout + install.stderr)

        after = run([python, "-c", _DISCOVER], work)
        self.assertEqual(
            after.stdout.split(),
            ["1", os.path.join(source, "twisted", "plugins", "gatehouse_plugin.py")],
            after.stderr,
        )


def _dependencies_without_gatehouse(site: str, view: str) -> str:
    """
    Make C{view}, a directory of symlinks to everything in C{site} except
    gatehouse itself and its twistd plugin file.
    """
    os.makedirs(view)
    for name in os.listdir(site):
        if name.startswith(("gatehouse", "__editable__")) or name.endswith(".pth"):
            continue
        if name != "twisted":
            os.symlink(os.path.join(site, name), os.path.join(view, name))
            continue
        twisted_view = os.path.join(view, "twisted")
        os.makedirs(twisted_view)
        for sub in os.listdir(os.path.join(site, "twisted")):
            if sub != "plugins":
                os.symlink(
                    os.path.join(site, "twisted", sub), os.path.join(twisted_view, sub)
                )
                continue
            plugins_view = os.path.join(twisted_view, "plugins")
            os.makedirs(plugins_view)
            for entry in os.listdir(os.path.join(site, "twisted", "plugins")):
                if not entry.startswith("gatehouse") and entry != "dropin.cache":
                    os.symlink(
                        os.path.join(site, "twisted", "plugins", entry),
                        os.path.join(plugins_view, entry),
                    )
    return view


class ServiceTests(SynchronousTestCase):
    """
    Tests for L{gatehouse.service}.
    """

    def setUp(self) -> None:
        self.adapter = use_dummy_protocol(self)
        self.files = ConfigFiles(self.mktemp())
        self.reactor = MemoryReactorClock()

    def load(self, **sections: Any) -> Any:
        """
        Load the minimal configuration with C{sections} added.
        """
        data = self.files.minimal()
        data.update(sections)
        path = self.files.write("gw.yaml", yaml.safe_dump(data))
        return load_config(path)

    def test_listeners(self) -> None:
        """
        Each listener becomes a named child service made by its protocol's
        adapter, given the targets of that protocol and the shared session
        factory; starting the service starts listening.
        """
        use_dummy_protocol(self, "other")
        config = self.load(
            listeners=[
                {"name": "a", "protocol": "dummy", "port": 5432},
                {"name": "b", "protocol": "dummy", "port": 5433},
            ],
            targets=[
                {
                    "name": "t1",
                    "protocol": "dummy",
                    "options": {"host": "h1", "allow_groups": ["*"]},
                },
                {
                    "name": "t2",
                    "protocol": "other",
                    "options": {"host": "h2", "allow_groups": ["*"]},
                },
            ],
        )
        service = makeService(config, self.reactor)
        self.assertEqual(
            [child.name for child in service], ["core", "listener:a", "listener:b"]
        )
        hubs = set()
        for (listener, targets, factory, reactor), expected in zip(
            self.adapter.made, config.listeners, strict=True
        ):
            self.assertEqual(listener, expected)
            self.assertEqual(targets, (config.targets[0],))
            self.assertIsInstance(factory.__self__, SessionHub)
            self.assertEqual(factory.__name__, "open")
            hubs.add(factory.__self__)
            self.assertIs(reactor, self.reactor)
        self.assertEqual(len(hubs), 1, "listeners share one session hub")

        for name in ("listener:a", "listener:b"):
            service.getServiceNamed(name).startService()
            self.addCleanup(service.getServiceNamed(name).stopService)
        self.assertEqual([port for port, *_ in self.reactor.tcpServers], [5432, 5433])

    def test_no_listeners(self) -> None:
        """
        A configuration without listeners makes a service with only the
        core (recorder, keys, index).
        """
        service = makeService(self.load(), self.reactor)
        self.assertEqual([child.name for child in service], ["core"])

    def test_components(self) -> None:
        """
        L{build_components} keeps the configuration and reactor and builds
        one core service; before the signing keys are loaded, a session
        says it cannot be recorded and starting its recording fails closed.
        """
        config = self.load()
        components = build_components(config, self.reactor)
        self.assertIsInstance(components, Components)
        self.assertIs(components.config, config)
        self.assertIs(components.reactor, self.reactor)
        self.assertEqual([s.name for s in components.services], ["core"])
        session = components.session_factory("dummy", "a", "127.0.0.1")
        self.assertEqual(session.recording_problem(), "no signing key is valid now")
        self.assertRaises(RecordingUnavailable, components.hub.start_recording, session)

    def test_background_services_first(self) -> None:
        """
        Background services are added before the listeners, so they start
        first and stop last.
        """
        background = MultiService()
        background.setName("background")
        config = self.load(listeners=[{"name": "a", "protocol": "dummy", "port": 1}])
        self.patch(
            service_module,
            "build_components",
            lambda config, reactor: Components(
                config=config, reactor=reactor, services=(background,)
            ),
        )
        service = makeService(config, self.reactor)
        self.assertEqual(
            [child.name for child in service], ["background", "listener:a"]
        )
        self.assertTrue(all(IService.providedBy(child) for child in service))
