"""
Tests for L{gatehouse.protocols.postgres.config} through the config loader.
"""

from __future__ import annotations

from typing import Any

import yaml
from twisted.trial.unittest import SynchronousTestCase

from gatehouse.config import ConfigError, load_config
from gatehouse.limits import ConnectionCaps
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

    def test_classify_queue(self) -> None:
        """classify_queue: 256 by default, at least 1."""
        options = self.load({"options": {"allow_cleartext": True}}).listeners[0].options
        self.assertEqual(options.classify_queue, 256)
        config = self.load({"options": {"allow_cleartext": True, "classify_queue": 4}})
        self.assertEqual(config.listeners[0].options.classify_queue, 4)
        with self.assertRaises(ConfigError):
            self.load({"options": {"allow_cleartext": True, "classify_queue": 0}})


class PreauthLimitsConfigTests(SynchronousTestCase):
    """The login timeout and connection caps of a PostgreSQL listener."""

    def setUp(self) -> None:
        self.files = ConfigFiles(self.mktemp())

    def load(self, options: dict[str, Any]) -> Any:
        data = self.files.minimal()
        data["listeners"] = [
            {
                "name": "pg",
                "protocol": "postgres",
                "port": 6432,
                "options": {"allow_cleartext": True, **options},
            }
        ]
        return load_config(self.files.write("gw.yaml", yaml.safe_dump(data)))

    def test_defaults(self) -> None:
        options = self.load({}).listeners[0].options
        self.assertEqual(
            (
                options.authentication_timeout,
                options.max_connections,
                options.max_unauthenticated,
                options.max_unauthenticated_per_address,
            ),
            (30.0, 1000, 256, 32),
        )

    def test_small_total_lowers_defaults(self) -> None:
        """Unset caps never exceed the cap above them."""
        options = self.load({"max_connections": 10}).listeners[0].options
        self.assertEqual(options.caps, ConnectionCaps(10, 10, 10))

    def test_problems(self) -> None:
        """One line per problem, naming the key."""
        with self.assertRaises(ConfigError) as caught:
            self.load(
                {
                    "authentication_timeout": "0s",
                    "max_connections": 100,
                    "max_unauthenticated": 200,
                    "max_unauthenticated_per_address": 0,
                }
            )
        lines = [line.split("gw.yaml: ", 1)[1] for line in caught.exception.lines()]
        prefix = "listeners[0].options."
        self.assertEqual(
            sorted(lines),
            [
                f"{prefix}authentication_timeout: must be more than 0",
                f"{prefix}max_unauthenticated: 200 is more than max_connections (100)",
                f"{prefix}max_unauthenticated_per_address: 0 is not between 1 and"
                " 1000000",
            ],
        )


class CredentialsConfigTests(SynchronousTestCase):
    """
    C{credentials}: per-group upstream roles, first match wins; mistakes
    are reported against their key paths at load time.
    """

    def setUp(self) -> None:
        self.files = ConfigFiles(self.mktemp())
        self.ro_pw = self.files.write("ro.pw", "ro-secret\n")
        self.admin_pw = self.files.write("admin.pw", "admin-secret\n")

    def load(self, options: dict[str, Any], policy: dict | None = None) -> Any:
        data = self.files.minimal()
        base = {
            "socket_dir": self.files.directory,
            "allow_groups": ["agents", "dba", "ops"],
        }
        base.update(options)
        data["targets"] = [{"name": "db", "protocol": "postgres", "options": base}]
        if policy is not None:
            data["policy"] = policy
        return load_config(self.files.write("gw.yaml", yaml.safe_dump(data)))

    def problems(self, options: dict[str, Any], policy: dict | None = None) -> list:
        with self.assertRaises(ConfigError) as caught:
            self.load(options, policy)
        return [line.split("gw.yaml: ", 1)[1] for line in caught.exception.lines()]

    def entries(self) -> list[dict]:
        return [
            {"groups": ["agents"], "user": "agent_ro", "password_file": self.ro_pw},
            {"groups": ["dba"], "user": "gw_admin", "password_env": "GW_ADMIN_PW"},
        ]

    def test_first_match_wins(self) -> None:
        """
        The first entry with one of the identity's groups gives the role;
        others get the default user; the catalog uses the default.
        """
        config = self.load(
            {
                "user": "gw_default",
                "password_file": self.admin_pw,
                "credentials": self.entries(),
            }
        )
        options = config.targets[0].options
        via, login = options.login_for(("agents", "dba"))
        self.assertEqual(
            (via, login.user, login.password()),
            ("credentials[0]", "agent_ro", "ro-secret"),
        )
        self.assertEqual(login.credentials, ())
        via, login = options.login_for(("dba",))
        self.assertEqual(
            (via, login.user, login.password_env),
            ("credentials[1]", "gw_admin", "GW_ADMIN_PW"),
        )
        via, login = options.login_for(("ops",))
        self.assertEqual(
            (via, login.user, login.password()),
            ("default", "gw_default", "admin-secret"),
        )
        self.assertEqual(options.default_login().user, "gw_default")
        self.assertEqual(
            options.describe_logins(),
            [
                "groups agents -> role agent_ro",
                "groups dba -> role gw_admin",
                "others -> role gw_default",
            ],
        )

    def test_no_default_refuses_others(self) -> None:
        """Without user, an identity no entry matches has no login."""
        options = self.load({"credentials": self.entries()}).targets[0].options
        self.assertIsNone(options.user)
        self.assertIsNone(options.login_for(("ops",)))
        self.assertEqual(options.login_for(("dba",))[1].user, "gw_admin")
        self.assertEqual(options.default_login().user, "agent_ro")
        self.assertEqual(
            options.describe_logins()[-1], "others -> refused (no default user)"
        )

    def test_without_credentials_unchanged(self) -> None:
        """A target without credentials logs everyone in as user."""
        options = self.load({"user": "gw"}).targets[0].options
        self.assertEqual(options.login_for(("anyone",))[0], "default")
        self.assertEqual(options.login_for(("anyone",))[1].user, "gw")

    def test_user_required_without_credentials(self) -> None:
        """Without credentials, user stays required."""
        self.assertEqual(
            self.problems({}), ["targets[0].options.user: required key is missing"]
        )

    def test_missing_password_source(self) -> None:
        """An entry without password_file or password_env is an error."""
        entries = self.entries()
        del entries[0]["password_file"]
        self.assertEqual(
            self.problems({"user": "gw", "credentials": entries}),
            [
                "targets[0].options.credentials[0]: missing password source: "
                "give password_file or password_env"
            ],
        )

    def test_both_password_sources(self) -> None:
        """An entry with both password sources is an error."""
        entries = self.entries()
        entries[0]["password_env"] = "X"
        self.assertEqual(
            self.problems({"user": "gw", "credentials": entries}),
            [
                "targets[0].options.credentials[0]: "
                "give at most one of password_file and password_env"
            ],
        )

    def test_missing_password_file(self) -> None:
        """A password_file that does not exist is reported at its key."""
        entries = self.entries()
        entries[0]["password_file"] = "nope.pw"
        (problem,) = self.problems({"user": "gw", "credentials": entries})
        self.assertTrue(
            problem.startswith("targets[0].options.credentials[0].password_file: "),
            problem,
        )
        self.assertIn("does not exist", problem)

    def test_duplicate_entries(self) -> None:
        """An entry whose groups all matched earlier can never be used."""
        again = {"groups": ["dba", "agents"], "user": "x", "password_env": "X"}
        entries = [*self.entries(), again]
        self.assertEqual(
            self.problems({"user": "gw", "credentials": entries}),
            [
                "targets[0].options.credentials[2].groups: never used: its groups are "
                "matched first by credentials[0], credentials[1]"
            ],
        )

    def test_after_catch_all(self) -> None:
        """Entries after a "*" entry can never be used."""
        entries = [{"groups": ["*"], "user": "x", "password_env": "X"}, *self.entries()]
        problems = self.problems({"user": "gw", "credentials": entries})
        self.assertEqual(
            problems,
            [
                "targets[0].options.credentials[1]: never used: "
                "credentials[0] matches every group first",
                "targets[0].options.credentials[2]: never used: "
                "credentials[0] matches every group first",
            ],
        )

    def test_group_not_allowed(self) -> None:
        """A group allow_groups does not admit is a mistake (a typo)."""
        entries = self.entries()
        entries[0]["groups"] = ["agnets"]
        self.assertEqual(
            self.problems({"user": "gw", "credentials": entries}),
            [
                "targets[0].options.credentials[0].groups[0]: "
                "group 'agnets' may not reach this target (allow_groups)"
            ],
        )

    def test_unknown_group_with_policy_groups(self) -> None:
        """With policy.groups declared, every credentials group must be in it."""
        policy = {"groups": ["agents", "ops"], "unparseable": "deny", "opaque": "deny"}
        self.assertEqual(
            self.problems({"user": "gw", "credentials": self.entries()}, policy),
            [
                "targets[0].options.credentials[1].groups[0]: unknown group 'dba'; "
                "policy.groups lists the known ones"
            ],
        )
        policy = {"groups": ["agents", "dba"], "unparseable": "deny", "opaque": "deny"}
        self.load({"user": "gw", "credentials": self.entries()}, policy)

    def test_entry_keys(self) -> None:
        """Unknown and missing keys of an entry are reported by path."""
        entries = [{"groups": [], "usr": "x", "password_env": "X"}]
        problems = self.problems({"user": "gw", "credentials": entries})
        self.assertEqual(
            sorted(problems),
            [
                "targets[0].options.credentials[0].groups: must not be empty",
                "targets[0].options.credentials[0].user: required key is missing",
                "targets[0].options.credentials[0].usr: "
                "unknown key (did you mean user?)",
            ],
        )

    def test_empty_list(self) -> None:
        """An empty credentials list is an error."""
        self.assertEqual(
            self.problems({"user": "gw", "credentials": []}),
            [
                "targets[0].options.credentials: "
                "must not be empty (omit it to log everyone in as user)"
            ],
        )

    def test_password_without_user(self) -> None:
        """A top-level password without user has nothing to log in as."""
        self.assertEqual(
            self.problems(
                {"password_file": self.admin_pw, "credentials": self.entries()}
            ),
            [
                "targets[0].options.password_file: a password without user: give user "
                "(the default login) or drop it"
            ],
        )


class CredentialsExampleTests(SynchronousTestCase):
    """examples/postgres.yaml shows credentials per group."""

    def test_example(self) -> None:
        """The orders target maps agents and dba to their roles."""
        from tests.test_examples import EXAMPLES, ExampleSandbox

        sandbox = ExampleSandbox(self.mktemp())
        config = load_config(sandbox.install(EXAMPLES / "postgres.yaml"))
        (orders,) = [t.options for t in config.targets if t.name == "orders"]
        self.assertEqual(orders.login_for(("agents",))[1].user, "orders_agent_ro")
        self.assertEqual(orders.login_for(("dba",))[1].user, "gatehouse_orders_admin")
        self.assertEqual(orders.login_for(("order-service",))[0], "default")
        self.assertEqual(
            orders.login_for(("order-service",))[1].user, "gatehouse_orders"
        )
