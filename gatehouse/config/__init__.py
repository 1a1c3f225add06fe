"""
The gateway's configuration: a YAML file turned into frozen attrs objects.

L{load_config} reads the whole file before it gives up, so one run reports
every problem, each as one line naming the file, the key and what is wrong::

    gw.yaml: listeners[1].port: 6432 is already used by listeners[0] (pg-main)
    gw.yaml: recording.seal_intervall: unknown key (did you mean seal_interval?)

Protocol adapters validate their own C{options} through the same machinery:
they receive a L{ConfigSection} that knows its key path and where problems go.

The modules: C{values} (the frozen objects and defaults), C{section}
(L{ConfigSection} and the problems it reports), C{load} (the file, section
by section) and C{checks} (TLS files, the environment, signing keys).
"""

from __future__ import annotations

from gatehouse.config.checks import (
    environment_problems,
    signing_key_problems,
    tls_problems,
)
from gatehouse.config.load import load_admin_access, load_config
from gatehouse.config.section import ConfigError, ConfigSection, Problem
from gatehouse.config.section import _Problems as _Problems
from gatehouse.config.values import (
    DEFAULT_FLUSH_INTERVAL,
    DEFAULT_KEY_WARNING,
    DEFAULT_MAX_TOKEN_BYTES,
    DEFAULT_MAX_TOKEN_LIFETIME,
    DEFAULT_SEAL_INTERVAL,
    DEFAULT_SEGMENT_MAX_BYTES,
    DEFAULT_SHUTDOWN_GRACE,
    AdminAccess,
    AdminConfig,
    GatehouseConfig,
    GatewayConfig,
    IdentityConfig,
    ListenerConfig,
    RecordingConfig,
    SSHUserCAConfig,
    TargetConfig,
    TLSConfig,
)
from gatehouse.config.values import DEFAULT_RESERVE_BYTES as DEFAULT_RESERVE_BYTES
from gatehouse.config.values import MAX_LEEWAY as MAX_LEEWAY
from gatehouse.config.values import MAX_TOKEN_LIFETIME as MAX_TOKEN_LIFETIME

__all__ = [
    "DEFAULT_FLUSH_INTERVAL",
    "DEFAULT_KEY_WARNING",
    "DEFAULT_MAX_TOKEN_BYTES",
    "DEFAULT_MAX_TOKEN_LIFETIME",
    "DEFAULT_SEAL_INTERVAL",
    "DEFAULT_SEGMENT_MAX_BYTES",
    "DEFAULT_SHUTDOWN_GRACE",
    "AdminAccess",
    "AdminConfig",
    "ConfigError",
    "ConfigSection",
    "GatehouseConfig",
    "GatewayConfig",
    "IdentityConfig",
    "ListenerConfig",
    "Problem",
    "RecordingConfig",
    "SSHUserCAConfig",
    "TLSConfig",
    "TargetConfig",
    "environment_problems",
    "load_admin_access",
    "load_config",
    "signing_key_problems",
    "tls_problems",
]
