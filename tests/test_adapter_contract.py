"""
The extension contract: everything the core calls on a protocol adapter is
in L{IProtocolAdapter}, the adapters shipped and shown provide all of it,
and the registry refuses an adapter that lacks any of it.
"""

from __future__ import annotations

import importlib.util
import os
from typing import Any

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer
from zope.interface.exceptions import Invalid
from zope.interface.verify import verifyObject

from gatehouse.config import ListenerConfig, TargetConfig
from gatehouse.policy.attributes import PolicyAttributes
from gatehouse.protocols import (
    IProtocolAdapter,
    ListenerOptions,
    ProtocolAdapterBase,
    TargetOptions,
    get_protocol,
    protocol_names,
    register_protocol,
    unregister_protocol,
)
from gatehouse.protocols.postgres.config import (
    PostgresListenerOptions,
    PostgresTargetOptions,
    UpstreamCredentials,
    UpstreamTLS,
)

_EXAMPLE = os.path.join(
    os.path.dirname(__file__), os.pardir, "examples", "line_protocol.py"
)

#: every name the interface declares: what the core may call
CONTRACT = frozenset(
    {
        "name",
        "policy_attributes",
        "parse_listener_options",
        "parse_target_options",
        "check_listener",
        "makeListener",
        "update_listener",
        "restart_needed",
        "set_draining",
        "credentials_checkers",
    }
)


def load_example() -> Any:
    """examples/line_protocol.py as a module."""
    spec = importlib.util.spec_from_file_location("line_protocol_contract", _EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class _Complete:
    """Every part of the interface, written out (no base class)."""

    name = "contract-complete"
    policy_attributes = PolicyAttributes()

    def parse_listener_options(self, options):
        return ListenerOptions()

    def parse_target_options(self, options):
        return TargetOptions()

    def check_listener(self, listener, section):
        pass

    def makeListener(self, listener, targets, session_factory, reactor):
        raise NotImplementedError

    def update_listener(self, service, listener, targets):
        return None

    def restart_needed(self, old, new):
        return ()

    def set_draining(self, service, draining):
        pass

    def credentials_checkers(self, listener, reactor):
        return ()


class ContractTests(SynchronousTestCase):
    """L{IProtocolAdapter} and the adapters that provide it."""

    def test_interface_is_the_whole_contract(self) -> None:
        """The interface names exactly what the core calls."""
        self.assertEqual(set(IProtocolAdapter.names()), CONTRACT)

    def test_postgres_adapter(self) -> None:
        """The built-in PostgreSQL adapter provides the whole interface."""
        adapter = get_protocol("postgres")
        self.assertTrue(verifyObject(IProtocolAdapter, adapter))
        self.assertIsInstance(adapter.policy_attributes, PolicyAttributes)
        self.assertEqual(
            set(adapter.policy_attributes.keys),
            {"kind", "category", "flag", "object", "relation", "schema"}
            | {"function", "text"},
        )

    def test_example_adapter(self) -> None:
        """The example custom protocol provides the whole interface."""
        adapter = load_example().LineAdapter()
        self.assertTrue(verifyObject(IProtocolAdapter, adapter))
        register_protocol(adapter)
        self.addCleanup(unregister_protocol, adapter.name)
        self.assertIn(adapter.name, protocol_names())

    def test_complete_without_base(self) -> None:
        """An adapter written out in full, without the base class, registers."""
        # implementer() changes the class it decorates: decorate a subclass.
        adapter = implementer(IProtocolAdapter)(type("Complete", (_Complete,), {}))()
        register_protocol(adapter)
        self.addCleanup(unregister_protocol, adapter.name)
        self.assertIs(get_protocol(adapter.name), adapter)

    def test_missing_method_refused(self) -> None:
        """
        An adapter lacking any one part of the interface is refused at
        registration, and stays unknown.
        """
        for missing in sorted(CONTRACT - {"name"}):
            body = {
                key: value
                for key, value in vars(_Complete).items()
                if not key.startswith("__") and key != missing
            }
            body["name"] = f"contract-no-{missing.replace('_', '-')}"
            cls = implementer(IProtocolAdapter)(type("Partial", (), body))
            with self.subTest(missing=missing):
                error = self.assertRaises(Invalid, register_protocol, cls())
                self.assertIn(missing, str(error))
                self.assertNotIn(body["name"], protocol_names())

    def test_undeclared_refused(self) -> None:
        """An object that does not declare the interface is refused."""

        class Undeclared(_Complete):
            name = "contract-undeclared"

        self.assertRaises(Invalid, register_protocol, Undeclared())
        self.assertNotIn("contract-undeclared", protocol_names())

    def test_base_defaults(self) -> None:
        """
        L{ProtocolAdapterBase} gives the documented defaults: no options, no
        attributes, reload needs a restart, draining refuses nobody early;
        only makeListener must be written.
        """

        class Minimal(ProtocolAdapterBase):
            name = "contract-minimal"

        adapter = Minimal()
        self.assertTrue(verifyObject(IProtocolAdapter, adapter))
        listener = ListenerConfig("l", "contract-minimal", "127.0.0.1", 1)
        self.assertEqual(adapter.policy_attributes, PolicyAttributes())
        self.assertIsNone(adapter.update_listener(object(), listener, ()))
        self.assertEqual(tuple(adapter.restart_needed(listener, listener)), ())
        self.assertIsNone(adapter.set_draining(object(), True))
        self.assertRaises(
            NotImplementedError, adapter.makeListener, listener, (), None, Clock()
        )


class TypedOptionsTests(SynchronousTestCase):
    """Option values are typed; the core asks them what it needs."""

    def test_postgres_options_types(self) -> None:
        """PostgreSQL's option values are the core's option types."""
        self.assertIsInstance(PostgresListenerOptions(), ListenerOptions)
        self.assertTrue(issubclass(PostgresTargetOptions, TargetOptions))

    def target(self, **kwargs: Any) -> PostgresTargetOptions:
        fields: dict[str, Any] = {
            "host": "db",
            "port": 5432,
            "socket_dir": None,
            "database": None,
            "user": "gw",
            "password_file": None,
            "password_env": None,
            "tls": UpstreamTLS(),
        }
        fields.update(kwargs)
        return PostgresTargetOptions(**fields)

    def test_environment_problems(self) -> None:
        """
        A PostgreSQL target reports its unset password variables (its own,
        and its credentials'), with their keys under options.
        """
        os.environ.pop("GATEHOUSE_TEST_UNSET_PW", None)
        os.environ["GATEHOUSE_TEST_EMPTY_PW"] = ""
        self.addCleanup(os.environ.pop, "GATEHOUSE_TEST_EMPTY_PW", None)
        options = self.target(
            password_env="GATEHOUSE_TEST_UNSET_PW",
            credentials=(
                UpstreamCredentials(("dba",), "dba", password_env="PATH"),
                UpstreamCredentials(
                    ("ops",), "ops", password_env="GATEHOUSE_TEST_EMPTY_PW"
                ),
            ),
        )
        self.assertEqual(
            options.environment_problems(),
            [
                (
                    "password_env",
                    "environment variable GATEHOUSE_TEST_UNSET_PW is not set",
                ),
                (
                    "credentials[1].password_env",
                    "environment variable GATEHOUSE_TEST_EMPTY_PW is empty",
                ),
            ],
        )

    def test_describe_logins_only_when_by_group(self) -> None:
        """Without credentials there is nothing to describe."""
        self.assertEqual(self.target().describe_logins(), [])
        options = self.target(credentials=(UpstreamCredentials(("dba",), "dba"),))
        self.assertEqual(
            options.describe_logins(), ["groups dba -> role dba", "others -> role gw"]
        )

    def test_restart_needed(self) -> None:
        """The PostgreSQL listener needs a restart for classify_workers only."""
        adapter = get_protocol("postgres")

        def listener(**options: Any) -> ListenerConfig:
            return ListenerConfig(
                "pg",
                "postgres",
                "127.0.0.1",
                1,
                None,
                PostgresListenerOptions(**options),
            )

        self.assertEqual(adapter.restart_needed(listener(), listener()), [])
        self.assertEqual(
            adapter.restart_needed(listener(), listener(max_connections=5)), []
        )
        self.assertEqual(
            adapter.restart_needed(listener(), listener(classify_workers=4)),
            ["classify_workers"],
        )

    def test_base_target_options(self) -> None:
        """The base target options have nothing to report."""
        options = TargetOptions()
        self.assertEqual(
            (
                options.group_problems(frozenset()),
                options.environment_problems(),
                options.describe_logins(),
            ),
            ([], [], []),
        )
        TargetConfig("t", "x", options)


class ServiceAsksTheAdapterTests(SynchronousTestCase):
    """The service's reload asks the adapter what needs a restart."""

    def test_restart_needed_on_reload(self) -> None:
        import attrs

        from gatehouse.config import load_config
        from gatehouse.service import _restart_needed
        from tests.test_config import ConfigFiles

        files = ConfigFiles(self.mktemp())
        base = load_config(files.save(files.minimal()))

        def workers(count: int) -> Any:
            options = PostgresListenerOptions(classify_workers=count)
            listener = ListenerConfig("pg", "postgres", "127.0.0.1", 0, None, options)
            return attrs.evolve(base, listeners=(listener,))

        self.assertEqual(_restart_needed(workers(2), workers(2)), [])
        self.assertEqual(
            _restart_needed(workers(2), workers(3)), ["listener pg: classify_workers"]
        )
