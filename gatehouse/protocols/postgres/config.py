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
"""

from __future__ import annotations

import os

import attrs

from gatehouse.config import ConfigSection

TLS_MODES = ("disable", "require", "verify-full")


@attrs.frozen
class PostgresListenerOptions:
    """Options of one PostgreSQL listener."""

    allow_cleartext: bool = False
    connect_timeout: float = 10.0
    max_message_bytes: int = 1024 * 1024 * 1024
    #: Query/Parse messages longer than this are refused (54000) rather
    #: than classified: classification costs about 0.7 s of CPU per MiB.
    max_statement_bytes: int = 4 * 1024 * 1024
    #: worker processes that classify long statements (per listener)
    classify_workers: int = 2


@attrs.frozen
class UpstreamTLS:
    """How the gateway secures its connection to the target."""

    mode: str = "verify-full"
    ca_file: str | None = None
    server_name: str | None = None


@attrs.frozen
class PostgresTargetOptions:
    """Where a PostgreSQL target is and how the gateway logs in to it."""

    host: str | None
    port: int
    socket_dir: str | None
    database: str | None
    user: str
    password_file: str | None
    password_env: str | None
    tls: UpstreamTLS
    allow_groups: tuple[str, ...]

    def password(self) -> str | None:
        """
        Read the upstream password now (never cached in config values, so
        a rotated file is picked up by the next connection).
        """
        if self.password_file is not None:
            with open(self.password_file, encoding="utf-8") as f:
                return f.read().rstrip("\r\n")
        if self.password_env is not None:
            return os.environ.get(self.password_env)
        return None

    def allows(self, groups: tuple[str, ...]) -> bool:
        """Whether an identity with C{groups} may reach this target."""
        return "*" in self.allow_groups or bool(set(groups) & set(self.allow_groups))


def parse_listener_options(options: ConfigSection) -> PostgresListenerOptions:
    """Validate a PostgreSQL listener's C{options}."""
    return PostgresListenerOptions(
        allow_cleartext=options.boolean("allow_cleartext", False),
        connect_timeout=options.duration("connect_timeout", 10.0),
        max_message_bytes=options.size("max_message_bytes", 1024 * 1024 * 1024),
        max_statement_bytes=options.size("max_statement_bytes", 4 * 1024 * 1024),
        classify_workers=options.integer("classify_workers", 2, minimum=1, maximum=64),
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
    groups = options.strings("allow_groups", required=True)
    return PostgresTargetOptions(
        host=host,
        port=port,
        socket_dir=socket_dir,
        database=options.string("database"),
        user=options.string("user", required=True),
        password_file=password_file,
        password_env=password_env,
        tls=tls,
        allow_groups=tuple(groups or ()),
    )
