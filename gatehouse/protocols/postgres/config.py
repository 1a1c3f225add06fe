"""
Options of PostgreSQL listeners and targets, validated at load time.

A listener::

    listeners:
      - name: pg
        protocol: postgres
        port: 6432
        tls: {certificate: gw.crt, key: gw.key}
        options:
          allow_cleartext: false      # true only for loopback/testing
          max_statement_bytes: 4MiB   # longer statements are refused (54000)
          classify_workers: 2         # processes classifying long statements
          classify_queue: 256         # statements waiting for them, then 53300
          authentication_timeout: 30s # accept to logged in and target ready
          max_connections: 1000       # all connections of this listener
          max_unauthenticated: 256    # of which not yet authenticated
          max_unauthenticated_per_address: 32   # of those, per client address

A target (clients select it by the database name they connect to)::

    targets:
      - name: orders                  # psql "host=gw dbname=orders"
        protocol: postgres
        options:
          host: db1.internal
          port: 5432
          database: orders            # upstream database (default: name)
          user: gatehouse_orders
          password_file: /etc/gatehouse/orders.pw    # or password_env
          tls: {mode: verify-full, ca_file: /etc/gatehouse/db-ca.pem}
          allow_groups: [dba, ci-agents]
          credentials:                # per group, first match wins
            - groups: [ci-agents]
              user: orders_ro         # a role PostgreSQL itself limits
              password_file: /etc/gatehouse/orders_ro.pw

C{user} and its password are the default login, for identities no
C{credentials} entry matches; without C{user}, those are refused.  The
column catalog used for masking logs in with the default, or with the first
entry when there is none (it only reads C{pg_catalog}).
"""

from __future__ import annotations

import os

import attrs

from gatehouse.config import ConfigSection
from gatehouse.files import files
from gatehouse.limits import connection_limits
from gatehouse.protocols import LimitedListenerOptions, TargetOptions

TLS_MODES = ("disable", "require", "verify-full")


@attrs.frozen
class PostgresListenerOptions(LimitedListenerOptions):
    """Options of one PostgreSQL listener."""

    allow_cleartext: bool = False
    connect_timeout: float = 10.0
    max_message_bytes: int = 1024 * 1024 * 1024
    #: Query/Parse messages longer than this are refused (54000) rather
    #: than classified: classification costs about 0.7 s of CPU per MiB.
    max_statement_bytes: int = 4 * 1024 * 1024
    #: worker processes that classify long statements (per listener)
    classify_workers: int = 2
    #: long statements waiting for or in those workers (per listener); more
    #: are refused (53300) rather than queued
    classify_queue: int = 256


@attrs.frozen
class UpstreamTLS:
    """How the gateway secures its connection to the target."""

    mode: str = "verify-full"
    ca_file: str | None = None
    server_name: str | None = None


def _password_text(data: bytes, path: str) -> str:
    # As a file opened in text mode reads it (universal newlines).
    text = data.decode("utf-8").replace("\r\n", "\n").replace("\r", "\n")
    return text.rstrip("\n")


def _read_password(password_file: str | None, password_env: str | None) -> str | None:
    # Checked at each connection (never kept in config values), so a
    # rotated file is picked up by the next one; read again only when it
    # changed.
    if password_file is not None:
        return files.load(password_file, _password_text)
    if password_env is not None:
        return os.environ.get(password_env)
    return None


@attrs.frozen
class UpstreamCredentials:
    """
    One C{credentials} entry: the upstream role that identities with one of
    C{groups} (C{"*"}: any) log in as.
    """

    groups: tuple[str, ...]
    user: str
    password_file: str | None = None
    password_env: str | None = None

    def matches(self, groups: tuple[str, ...]) -> bool:
        """Whether an identity with C{groups} uses this entry."""
        return "*" in self.groups or bool(set(groups) & set(self.groups))


@attrs.frozen
class PostgresTargetOptions(TargetOptions):
    """
    Where a PostgreSQL target is and how the gateway logs in to it.

    C{user}, C{password_file} and C{password_env} are the login used for a
    session (after L{login_for} chose it) or the default one; C{credentials}
    maps identity groups to other upstream roles, first match wins.
    """

    host: str | None
    port: int
    socket_dir: str | None
    database: str | None
    user: str | None
    password_file: str | None
    password_env: str | None
    tls: UpstreamTLS
    credentials: tuple[UpstreamCredentials, ...] = ()
    #: roles a client may SET ROLE / SET SESSION AUTHORIZATION to (the
    #: gateway's built-in protections refuse any other)
    settable_roles: tuple[str, ...] = ()

    def password(self) -> str | None:
        """
        Read the upstream password now (never cached in config values, so
        a rotated file is picked up by the next connection).
        """
        return _read_password(self.password_file, self.password_env)

    def login_for(
        self, groups: tuple[str, ...]
    ) -> tuple[str, PostgresTargetOptions] | None:
        """
        The login for an identity with C{groups}: the first C{credentials}
        entry that matches, else the default C{user}; None when neither
        applies (the identity must be refused).

        @return: what was chosen (C{"credentials[N]"} or C{"default"}) and
            these options with that login, C{credentials} emptied.
        """
        for n, entry in enumerate(self.credentials):
            if entry.matches(groups):
                return f"credentials[{n}]", attrs.evolve(
                    self,
                    user=entry.user,
                    password_file=entry.password_file,
                    password_env=entry.password_env,
                    credentials=(),
                )
        if self.user is None:
            return None
        return "default", attrs.evolve(self, credentials=())

    def upstream_roles(self) -> frozenset[str]:
        """Every role the gateway logs in as on this target."""
        roles = {entry.user for entry in self.credentials}
        if self.user is not None:
            roles.add(self.user)
        return frozenset(roles)

    def default_login(self) -> PostgresTargetOptions:
        """
        The login of the gateway's own connections (the column catalog):
        the default C{user}, or the first C{credentials} entry without one.
        """
        if self.user is not None or not self.credentials:
            return attrs.evolve(self, credentials=())
        entry = self.credentials[0]
        return attrs.evolve(
            self,
            user=entry.user,
            password_file=entry.password_file,
            password_env=entry.password_env,
            credentials=(),
        )

    def group_problems(self, known: frozenset[str]) -> list[tuple[str, str]]:
        """
        (key, message) for each C{credentials} group not in C{known} (the
        groups C{policy.groups} declares).
        """
        problems = []
        for n, entry in enumerate(self.credentials):
            for i, group in enumerate(entry.groups):
                if group != "*" and group not in known:
                    problems.append(
                        (
                            f"credentials[{n}].groups[{i}]",
                            f"unknown group {group!r}; policy.groups lists the "
                            "known ones",
                        )
                    )
        return problems

    def access_problems(self, allow_groups: tuple[str, ...]) -> list[tuple[str, str]]:
        """
        (key, message) for each C{credentials} group the target's
        C{allow_groups} does not admit (a typo: the entry is never used).
        """
        if "*" in allow_groups:
            return []
        return [
            (
                f"credentials[{n}].groups[{i}]",
                f"group {group!r} may not reach this target (allow_groups)",
            )
            for n, entry in enumerate(self.credentials)
            for i, group in enumerate(entry.groups)
            if group != "*" and group not in allow_groups
        ]

    def environment_problems(self) -> list[tuple[str, str]]:
        """
        (key, message) for each C{password_env} (the target's, or one of its
        C{credentials}) naming a variable that is unset or empty here.
        """
        problems = []
        sources = [("", self.password_env)] + [
            (f"credentials[{i}].", entry.password_env)
            for i, entry in enumerate(self.credentials)
        ]
        for prefix, name in sources:
            if name is not None and not os.environ.get(name):
                state = "empty" if name in os.environ else "not set"
                problems.append(
                    (
                        f"{prefix}password_env",
                        f"environment variable {name} is {state}",
                    )
                )
        return problems

    def describe_logins(self) -> list[str]:
        """
        How identities log in to the target, one line per rule; empty
        without C{credentials} (everyone logs in as C{user}).
        """
        if not self.credentials:
            return []
        lines = [
            f"groups {', '.join(e.groups)} -> role {e.user}" for e in self.credentials
        ]
        if self.user is not None:
            lines.append(f"{'others' if lines else 'everyone'} -> role {self.user}")
        else:
            lines.append("others -> refused (no default user)")
        return lines


def parse_listener_options(options: ConfigSection) -> PostgresListenerOptions:
    """Validate a PostgreSQL listener's C{options}."""
    return PostgresListenerOptions(
        allow_cleartext=options.boolean("allow_cleartext", False),
        connect_timeout=options.duration("connect_timeout", 10.0),
        max_message_bytes=options.size("max_message_bytes", 1024 * 1024 * 1024),
        max_statement_bytes=options.size("max_statement_bytes", 4 * 1024 * 1024),
        classify_workers=options.integer("classify_workers", 2, minimum=1, maximum=64),
        classify_queue=options.integer(
            "classify_queue", 256, minimum=1, maximum=1_000_000
        ),
        **connection_limits(options),
    )


def parse_target_options(options: ConfigSection) -> PostgresTargetOptions:
    """Validate a PostgreSQL target's C{options}."""
    host = options.string("host")
    socket_dir = options.existing_directory("socket_dir")
    if (host is None) == (socket_dir is None):
        options.problem("give exactly one of host and socket_dir")
    port = options.integer("port", 5432, minimum=1, maximum=65535)
    password_file = options.readable_file("password_file")
    password_env = options.string("password_env")
    if password_file is not None and password_env is not None:
        options.problem("give at most one of password_file and password_env")
    tls_section = options.section("tls")
    tls = UpstreamTLS(mode="disable" if socket_dir else "verify-full")
    if tls_section is not None:
        mode = tls_section.string("mode", "verify-full")
        if mode not in TLS_MODES:
            tls_section.problem(
                f"{mode!r} is not one of {', '.join(TLS_MODES)}", "mode"
            )
        ca_file = tls_section.readable_file("ca_file")
        if mode == "verify-full" and ca_file is None:
            tls_section.problem("verify-full needs ca_file", "ca_file")
        tls = UpstreamTLS(mode, ca_file, tls_section.string("server_name"))
        tls_section.finish()
    elif socket_dir is None:
        options.problem(
            "tls is required for a TCP target (use {mode: disable} to connect "
            "without TLS on a trusted network)",
            "tls",
        )
    credentials = _parse_credentials(options)
    user = options.string("user", required=not credentials)
    if user is None and (password_file or password_env):
        options.problem(
            "a password without user: give user (the default login) or drop it",
            "password_file" if password_file else "password_env",
        )
    return PostgresTargetOptions(
        host=host,
        port=port,
        socket_dir=socket_dir,
        database=options.string("database"),
        user=user,
        password_file=password_file,
        password_env=password_env,
        tls=tls,
        credentials=credentials,
        settable_roles=tuple(options.strings("settable_roles") or ()),
    )


def _parse_credentials(options: ConfigSection) -> tuple[UpstreamCredentials, ...]:
    """
    Read C{credentials}: a list of {groups, user, password_file or
    password_env}.  An entry that an earlier one hides (all its groups
    matched before it, or after a C{"*"} entry) is a mistake (and so is a
    group that may not reach the target at all: see
    L{PostgresTargetOptions.access_problems}).
    """
    if "credentials" in options.raw and not options.raw["credentials"]:
        options.get("credentials")
        options.problem(
            "must not be empty (omit it to log everyone in as user)", "credentials"
        )
        return ()
    entries = []
    seen: dict[str, int] = {}
    catch_all: int | None = None
    for n, section in enumerate(options.sections("credentials")):
        groups = section.strings("groups", required=True, single=True)
        user = section.string("user", required=True)
        password_file = section.readable_file("password_file")
        password_env = section.string("password_env")
        if password_file is not None and password_env is not None:
            section.problem("give at most one of password_file and password_env")
        elif password_file is None and password_env is None:
            if "password_file" not in section.raw:
                section.problem(
                    "missing password source: give password_file or password_env"
                )
        section.finish()
        if catch_all is not None:
            section.problem(
                f"never used: credentials[{catch_all}] matches every group first"
            )
        elif groups and all(g in seen for g in groups):
            earlier = sorted({seen[g] for g in groups})
            section.problem(
                "never used: its groups are matched first by "
                + ", ".join(f"credentials[{i}]" for i in earlier),
                "groups",
            )
        for group in groups:
            if group == "*":
                catch_all = n if catch_all is None else catch_all
            seen.setdefault(group, n)
        if groups and user is not None:
            entries.append(
                UpstreamCredentials(tuple(groups), user, password_file, password_env)
            )
    return tuple(entries)
