"""
The values a configuration file becomes: frozen attrs objects, and the
defaults they start from.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

import attrs

if TYPE_CHECKING:
    from gatehouse.identity import IssuerConfig
    from gatehouse.policy.config import ApprovalConfig, MaskingScope
    from gatehouse.policy.rules import Policy
    from gatehouse.protocols import ListenerOptions, TargetOptions


DEFAULT_MAX_TOKEN_BYTES = 16384
#: tokens valid for longer are refused (seconds); as in gatehouse.identity
DEFAULT_MAX_TOKEN_LIFETIME = 24 * 3600.0
DEFAULT_SEGMENT_MAX_BYTES = 16 * 1024 * 1024
DEFAULT_SEAL_INTERVAL = 30.0
DEFAULT_FLUSH_INTERVAL = 0.2
DEFAULT_KEY_WARNING = 24 * 3600.0
DEFAULT_SHUTDOWN_GRACE = 30.0
#: Free space below which new sessions are refused (open ones may use it).
DEFAULT_RESERVE_BYTES = 256 * 1024 * 1024
MAX_LEEWAY = 300.0
#: the longest identity.max_token_lifetime a configuration may set
MAX_TOKEN_LIFETIME = 365 * 86400.0
#: SSH user certificates: the lifetime given when a caller names none, and
#: the longest a caller may ask for (seconds)
DEFAULT_SSH_CERTIFICATE_LIFETIME = 3600.0
DEFAULT_SSH_CERTIFICATE_MAX_LIFETIME = 12 * 3600.0


@attrs.frozen
class TLSConfig:
    """
    A certificate chain and private key to serve TLS with (PEM files).
    """

    certificate: str
    key: str


@attrs.frozen
class GatewayConfig:
    """
    Who this gateway is.

    @ivar id: Names this gateway in every recording seal it signs.
    @ivar shutdown_grace: Seconds open sessions get to finish after SIGTERM
        before they are closed.
    """

    id: str
    shutdown_grace: float = DEFAULT_SHUTDOWN_GRACE


@attrs.frozen
class IdentityConfig:
    """
    How clients prove who they are.

    @ivar issuers: The trusted token issuers, in configuration order.
    @ivar max_token_bytes: Longer tokens are refused before they are parsed.
    @ivar max_token_lifetime: Tokens valid for longer (seconds, C{exp - iat})
        are refused.
    """

    issuers: tuple[IssuerConfig, ...]
    max_token_bytes: int = DEFAULT_MAX_TOKEN_BYTES
    max_token_lifetime: float = DEFAULT_MAX_TOKEN_LIFETIME


@attrs.frozen
class RecordingConfig:
    """
    Where and how session recordings are written.

    Durations are in seconds, sizes in bytes, paths absolute.
    """

    directory: str
    index: str
    signing_keys: str
    root_public_keys: tuple[str, ...]
    segment_max_bytes: int = DEFAULT_SEGMENT_MAX_BYTES
    seal_interval: float = DEFAULT_SEAL_INTERVAL
    flush_interval: float = DEFAULT_FLUSH_INTERVAL
    key_warning: float = DEFAULT_KEY_WARNING
    reserve_bytes: int = DEFAULT_RESERVE_BYTES
    preallocate: bool = True
    #: revocation statements (gatehouse keys revoke) gatehouse verify applies
    revocations: tuple[str, ...] = ()


@attrs.frozen
class ListenerConfig:
    """
    One address where clients of one protocol connect.

    @ivar options: What the protocol adapter's C{parse_listener_options}
        returned for this listener.
    """

    name: str
    protocol: str
    address: str
    port: int
    tls: TLSConfig | None = None
    options: ListenerOptions | None = None


@attrs.frozen
class TargetConfig:
    """
    One upstream system that clients reach through the gateway.

    @ivar options: What the protocol adapter's C{parse_target_options}
        returned for this target.
    @ivar end_session_at_token_expiry: Whether the gateway ends each
        session on this target when the client's token expires.
    @ivar allow_groups: The identity groups that may reach this target
        (C{"*"}: every authenticated identity); read by the core from
        C{options.allow_groups} for every protocol.  Empty admits nobody.
    """

    name: str
    protocol: str
    options: TargetOptions | None = None
    end_session_at_token_expiry: bool = True
    allow_groups: tuple[str, ...] = ()

    def allows(self, groups: Iterable[str]) -> bool:
        """Whether an identity with C{groups} may reach this target."""
        allowed = self.allow_groups
        return "*" in allowed or not set(allowed).isdisjoint(groups)


@attrs.frozen
class AdminConfig:
    """
    Where the admin HTTP API listens.
    """

    address: str = "127.0.0.1"
    port: int = 8080
    tls: TLSConfig | None = None
    #: identities need one of these groups to use the API (empty: the
    #: policy's approver groups)
    groups: tuple[str, ...] = ()


@attrs.frozen
class SSHUserCAConfig:
    """
    The gateway's SSH user CA (C{ssh_user_ca}): the key that signs the
    short-lived certificates the admin API gives for a token.

    @ivar key: the CA's OpenSSH Ed25519 private key file; created (mode
        0600, with C{KEY.pub}) when the gateway starts and it is missing.
    @ivar certificate_lifetime: seconds a certificate is valid when the
        caller asks for no lifetime.
    @ivar max_lifetime: the longest lifetime a caller may ask for (longer
        requests are shortened to it; a certificate never outlives the
        token it was given for).
    """

    key: str
    certificate_lifetime: float = DEFAULT_SSH_CERTIFICATE_LIFETIME
    max_lifetime: float = DEFAULT_SSH_CERTIFICATE_MAX_LIFETIME

    @property
    def public_key_file(self) -> str:
        """The CA's public line, for the SSH listener's C{user_ca_keys}."""
        return self.key + ".pub"


@attrs.frozen
class AdminAccess:
    """
    How a client of the admin API (C{gatehouse approvals --config}) reaches
    the API a configuration file describes.

    @ivar url: C{approval.admin_url}, else the admin listener's address
        (its loopback address when it listens on every address).
    @ivar ca_file: what verifies an https C{url}: C{approval.admin_ca_file},
        else the admin listener's own certificate file (pinned); None to
        use the system's CA certificates.
    """

    url: str
    ca_file: str | None = None


@attrs.frozen
class GatehouseConfig:
    """
    A whole, validated configuration file.

    @ivar path: The absolute path of the file it was read from.
    """

    path: str
    gateway: GatewayConfig
    identity: IdentityConfig
    recording: RecordingConfig
    listeners: tuple[ListenerConfig, ...] = ()
    targets: tuple[TargetConfig, ...] = ()
    admin: AdminConfig | None = None
    policy: Policy | None = None
    masking: tuple[MaskingScope, ...] = ()
    approval: ApprovalConfig | None = None
    ssh_user_ca: SSHUserCAConfig | None = None
