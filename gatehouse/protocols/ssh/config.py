"""
Options of SSH listeners and targets, validated at load time.

A listener::

    listeners:
      - name: ssh
        protocol: ssh
        port: 2222
        options:
          host_keys: [/etc/gatehouse/ssh_host_ed25519_key]  # ed25519 required
          user_ca_keys: [/etc/gatehouse/ssh_user_ca.pub]  # certificates of these CAs
          authentication_timeout: 30s # accept to logged in and target ready
          connect_timeout: 10s        # the target's TCP connect and SSH login
          max_channels: 32            # open channels per connection
          max_connections: 1000
          max_unauthenticated: 256
          max_unauthenticated_per_address: 32

A target (clients select it by the login name: C{ssh web-1@gw}, or
C{ssh deploy+web-1@gw} to choose one of its upstream accounts)::

    targets:
      - name: web-1
        protocol: ssh
        allow_groups: [sre, agents]
        options:
          host: 10.0.0.5
          port: 22
          host_keys: ["ssh-ed25519 AAAA..."]   # pinned; or known_hosts: FILE
          key: /etc/gatehouse/upstream_ed25519   # the gateway's own key, or:
          # certificate_authority: /etc/gatehouse/target_ca  # a CA the target
          #   trusts (TrustedUserCAKeys): each session logs in with a fresh key
          #   and a certificate for its account, valid certificate_lifetime (5m)
          user: ops                   # default upstream account
          accounts:                   # per group, first match wins
            - groups: [agents]
              user: agent             # an account the target itself limits
            - groups: [sre]
              user: deploy

C{user} is the account of identities no C{accounts} entry matches;
without it, those are refused.  C{ssh ACCOUNT+TARGET@gw} names the
account: the identity must be one it may use (an entry whose groups it
has, or the default when no entry matches it).
"""

from __future__ import annotations

import attrs
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives.serialization import load_ssh_public_key

from gatehouse.config import ConfigSection
from gatehouse.limits import connection_limits
from gatehouse.protocols import LimitedListenerOptions, TargetOptions
from gatehouse.protocols.ssh.certificates import UserCA
from gatehouse.protocols.ssh.hostkeys import (
    HostKeyError,
    PinnedHostKeys,
    load_host_keys,
)
from gatehouse.protocols.ssh.upstream import load_client_key

#: what separates an account from the target in a login name
ACCOUNT_SEPARATOR = "+"


@attrs.frozen
class SSHListenerOptions(LimitedListenerOptions):
    """Options of one SSH listener."""

    host_keys: tuple[str, ...] = ()
    #: files of OpenSSH public keys of the user CAs whose certificates
    #: log clients in (as sshd's TrustedUserCAKeys)
    user_ca_keys: tuple[str, ...] = ()
    #: seconds for the target's TCP connect and SSH login
    connect_timeout: float = 10.0
    #: channels one client connection may have open at once
    max_channels: int = 32

    def authorities(self) -> tuple[bytes, ...]:
        """The trusted user CAs' public key lines (read now)."""
        lines: list[bytes] = []
        for path in self.user_ca_keys:
            with open(path, "rb") as f:
                for line in f.read().splitlines():
                    line = line.strip()
                    if line and not line.startswith(b"#"):
                        lines.append(line)
        return tuple(lines)


@attrs.frozen
class Account:
    """One C{accounts} entry: identities with one of C{groups} log in as C{user}."""

    groups: tuple[str, ...]
    user: str

    def matches(self, groups: tuple[str, ...]) -> bool:
        """Whether an identity with C{groups} may use this entry (C{*}: all)."""
        return "*" in self.groups or bool(set(groups) & set(self.groups))


class AccountRefused(Exception):
    """No upstream account of the target for this identity; says why."""


@attrs.frozen
class SSHTargetOptions(TargetOptions):
    """Where an SSH target is, how its host key is pinned, how to log in."""

    host: str
    port: int = 22
    host_keys: tuple[str, ...] = ()
    known_hosts: str | None = None
    key: str = ""
    #: an Ed25519 CA key file the target trusts: per session, a fresh key
    #: and a certificate for the account replace C{key}
    certificate_authority: str | None = None
    certificate_lifetime: float = 300.0
    user: str | None = None
    accounts: tuple[Account, ...] = ()

    def pinned(self, target: str) -> PinnedHostKeys:
        """The host keys this target may present."""
        return PinnedHostKeys(target, self.host_keys, self.known_hosts)

    def account_for(self, groups: tuple[str, ...], asked: str | None) -> str:
        """
        The upstream account for an identity with C{groups}, which asked
        for C{asked} (None: the one its groups give).

        @raise AccountRefused: it may use no account, or not C{asked}.
        """
        usable = [a.user for a in self.accounts if a.matches(groups)]
        # The default is for identities no entry maps: one whose groups
        # map it to a restricted account must not name the default.
        if self.user is not None and not usable:
            usable.append(self.user)
        if asked is None:
            if not usable:
                raise AccountRefused(
                    "no upstream account of this target is for your groups"
                )
            return usable[0]
        if asked not in usable:
            raise AccountRefused(
                f"account {asked!r} of this target is not for your groups"
                + (f" (yours: {', '.join(dict.fromkeys(usable))})" if usable else "")
            )
        return asked

    def group_problems(self, known: frozenset[str]) -> list[tuple[str, str]]:
        """See L{TargetOptions.group_problems}."""
        return [
            (f"accounts[{i}].groups", f"unknown group {g!r}")
            for i, entry in enumerate(self.accounts)
            for g in entry.groups
            if g != "*" and g not in known
        ]

    def access_problems(self, allow_groups: tuple[str, ...]) -> list[tuple[str, str]]:
        """See L{TargetOptions.access_problems}."""
        return [
            (
                f"accounts[{i}].groups",
                f"group {g!r} is not in the target's allow_groups",
            )
            for i, entry in enumerate(self.accounts)
            for g in entry.groups
            if g != "*" and "*" not in allow_groups and g not in allow_groups
        ]

    def describe_logins(self) -> list[str]:
        """See L{TargetOptions.describe_logins}."""
        lines = [
            f"groups {', '.join(a.groups)} -> account {a.user}" for a in self.accounts
        ]
        if self.user is not None:
            lines.append(f"{'others' if lines else 'everyone'} -> account {self.user}")
        return lines


def parse_listener_options(options: ConfigSection) -> SSHListenerOptions:
    """Validate an SSH listener's C{options}."""
    host_keys = options.readable_files("host_keys", required=True)
    if host_keys:
        try:
            load_host_keys(host_keys)
        except HostKeyError as e:
            options.problem(str(e), "host_keys")
    parsed = SSHListenerOptions(
        host_keys=host_keys,
        user_ca_keys=options.readable_files("user_ca_keys"),
        connect_timeout=options.duration("connect_timeout", 10.0, positive=True),
        max_channels=options.integer("max_channels", 32, minimum=1, maximum=1024),
        **connection_limits(options),
    )
    try:
        authorities = parsed.authorities()
    except OSError as e:
        options.problem(str(e), "user_ca_keys")
    else:
        for line in authorities:
            try:
                load_ssh_public_key(line)
            except (ValueError, UnsupportedAlgorithm) as e:
                options.problem(
                    f"{line[:40]!r} is not an OpenSSH public key: {e}", "user_ca_keys"
                )
    return parsed


def parse_target_options(options: ConfigSection) -> SSHTargetOptions:
    """Validate an SSH target's C{options}."""
    host = options.string("host", required=True) or ""
    port = options.integer("port", 22, minimum=1, maximum=65535)
    host_keys = tuple(options.strings("host_keys") or ())
    known_hosts = options.readable_file("known_hosts")
    authority = options.readable_file("certificate_authority")
    key = options.readable_file("key", required=authority is None) or ""
    if key:
        try:
            load_client_key(key)
        except Exception as e:  # Conch raises several kinds for junk
            options.problem(str(e) or "not a private key", "key")
    lifetime = options.duration(
        "certificate_lifetime", 300.0, positive=True, maximum=86400.0
    )
    if authority is not None:
        try:
            UserCA.from_file(authority)
        except (OSError, ValueError) as e:
            options.problem(str(e), "certificate_authority")
    accounts = []
    for entry in options.sections("accounts"):
        groups = tuple(entry.strings("groups", required=True) or ())
        name = entry.string("user", required=True) or ""
        _check_account(entry, name)
        accounts.append(Account(groups, name))
        entry.finish()
    user = options.string("user", required=not accounts)
    if user is not None:
        _check_account(options, user, "user")
    parsed = SSHTargetOptions(
        host=host,
        port=port,
        host_keys=host_keys,
        known_hosts=known_hosts,
        key=key,
        certificate_authority=authority,
        certificate_lifetime=lifetime,
        user=user,
        accounts=tuple(accounts),
    )
    if host_keys or known_hosts:
        try:
            parsed.pinned("(this target)")
        except HostKeyError as e:
            options.problem(str(e), "host_keys")
    else:
        options.problem(
            "pin the target's host key (host_keys or known_hosts): the "
            "gateway never trusts a key on first use",
            "host_keys",
        )
    return parsed


def _check_account(section: ConfigSection, user: str, key: str = "user") -> None:
    if ACCOUNT_SEPARATOR in user or not user.strip():
        section.problem(
            f"{user!r} is not an account name (no {ACCOUNT_SEPARATOR!r})", key
        )
