"""
The gateway's configuration: a YAML file turned into frozen attrs objects.

L{load_config} reads the whole file before it gives up, so one run reports
every problem, each as one line naming the file, the key and what is wrong::

    gw.yaml: listeners[1].port: 6432 is already used by listeners[0] (pg-main)
    gw.yaml: recording.seal_intervall: unknown key (did you mean seal_interval?)

Protocol adapters validate their own C{options} through the same machinery:
they receive a L{ConfigSection} that knows its key path and where problems go.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

import attrs
import yaml

from gatehouse._duration import parse_duration, parse_size
from gatehouse._suggest import suggest as _suggest
from gatehouse.policy import config as policy_config
from gatehouse.protocols import (
    ListenerOptions,
    TargetOptions,
    get_protocol,
    protocol_names,
)

if TYPE_CHECKING:
    from gatehouse.identity import IssuerConfig
    from gatehouse.policy.config import ApprovalConfig, MaskingScope
    from gatehouse.policy.rules import Policy

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
    "TLSConfig",
    "TargetConfig",
    "environment_problems",
    "load_config",
    "signing_key_problems",
    "tls_problems",
]

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

_NAME = re.compile(r"[A-Za-z0-9._-]{1,64}")
_NAME_RULE = "1 to 64 characters of A-Z a-z 0-9 . _ -"
_MIN_HS256_SECRET = 32


# Values


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


# Problems


@attrs.frozen
class Problem:
    """
    One thing wrong with a configuration file.

    @ivar filename: The file, as the user named it.
    @ivar location: A key path such as C{listeners[0].port}, a position such
        as C{line 3, column 5}, or C{""} for the file as a whole.
    @ivar message: What is wrong, as one line.
    """

    filename: str
    location: str
    message: str

    def __str__(self) -> str:
        if self.location:
            return f"{self.filename}: {self.location}: {self.message}"
        return f"{self.filename}: {self.message}"


class ConfigError(Exception):
    """
    A configuration file could not be loaded.

    @ivar problems: Everything found wrong with it, at least one.
    """

    def __init__(self, problems: Iterable[Problem]) -> None:
        self.problems = tuple(problems)
        super().__init__(*self.problems)

    def lines(self) -> list[str]:
        """
        Return one line of text per problem, without line endings.
        """
        return [str(problem) for problem in self.problems]

    def __str__(self) -> str:
        return "\n".join(self.lines())


class _Problems:
    """
    The problems found so far in one file.
    """

    def __init__(self, filename: str) -> None:
        self.filename = filename
        self.found: list[Problem] = []

    def add(self, location: str, message: str) -> None:
        self.found.append(Problem(self.filename, location, message))


# Reading sections

_T = TypeVar("_T")
_MISSING: Any = object()


def _describe(value: object) -> str:
    """
    Name the type of a YAML value for an error message, with short values.
    """
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"a boolean ({str(value).lower()})"
    if isinstance(value, int):
        return f"an integer ({value})"
    if isinstance(value, float):
        return f"a number ({value})"
    if isinstance(value, str):
        shown = value if len(value) <= 40 else value[:37] + "..."
        return f"a string ({shown!r})"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return f"a {type(value).__name__} ({value})"


def _format_duration(seconds: float) -> str:
    """
    Write C{seconds} the way a user would, for messages: C{5m}, C{200ms}.
    """
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    if seconds < 1:
        return f"{seconds * 1000:g}ms"
    return f"{seconds:g}s"


def _format_size(size: int) -> str:
    """
    Write C{size} bytes the way a user would, for messages: C{16MiB}.
    """
    for unit, scale in (("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
        if size >= scale and size % scale == 0:
            return f"{size // scale}{unit}"
    return "1 byte" if size == 1 else f"{size} bytes"


class ConfigSection:
    """
    One mapping of the configuration file, with its key path.

    Every reader method takes a key, records it as known, and returns the
    checked value; when the value is wrong it reports a problem against the
    key's full path and returns the default instead.  L{finish} reports every
    key that no reader asked for as unknown, with a suggestion, here and in
    every nested section read from this one.

    @ivar path: This mapping's key path, for example C{listeners[0].options};
        C{""} for the top level.
    @ivar raw: The mapping as YAML parsed it.
    @ivar base_directory: Relative paths are resolved against this.
    """

    def __init__(
        self,
        raw: Mapping[Any, Any],
        path: str,
        problems: _Problems,
        base_directory: str,
    ) -> None:
        self.raw = raw
        self.path = path
        self.base_directory = base_directory
        self._problems = problems
        self._known: list[str] = []
        self._children: list[ConfigSection] = []
        self._finished = False

    # Reporting

    def key_path(self, key: str | None = None) -> str:
        """
        Return the full path of C{key} in this section, or of the section.
        """
        if key is None:
            return self.path
        return f"{self.path}.{key}" if self.path else key

    def problem(self, message: str, key: str | None = None) -> None:
        """
        Report that this section (or its C{key}) is wrong.
        """
        self._problems.add(self.key_path(key), message)

    @property
    def problem_count(self) -> int:
        """
        How many problems the whole file has so far.
        """
        return len(self._problems.found)

    def finish(self) -> None:
        """
        Report every key that was present but never read, here and in nested
        sections.  Idempotent.
        """
        if self._finished:
            return
        self._finished = True
        for key in self.raw:
            if key not in self._known:
                hint = _suggest(key, self._known) if isinstance(key, str) else ""
                self.problem(f"unknown key{hint}", str(key))
        for child in self._children:
            child.finish()

    # Generic access

    def get(self, key: str, *, required: bool = False) -> Any:
        """
        Return the raw value of C{key}, or C{None} if it is absent or null.

        @param required: Report a problem if the value is absent or null.
        """
        if key not in self._known:
            self._known.append(key)
        if key not in self.raw:
            if required:
                self.problem("required key is missing", key)
            return None
        value = self.raw[key]
        if value is None and required:
            self.problem("a value is required", key)
        return value

    def _typed(
        self,
        key: str,
        kind: type | tuple[type, ...],
        noun: str,
        default: Any,
        required: bool,
    ) -> Any:
        value = self.get(key, required=required)
        if value is None:
            return default
        kinds = kind if isinstance(kind, tuple) else (kind,)
        # YAML's true/false are Python bools, and bool is a subclass of int.
        wrong_bool = isinstance(value, bool) and bool not in kinds
        if wrong_bool or not isinstance(value, kinds):
            self.problem(f"expected {noun}, got {_describe(value)}", key)
            return default
        return value

    def _converted(
        self,
        key: str,
        kind: tuple[type, ...],
        noun: str,
        convert: Callable[[Any], _T],
        default: Any,
        required: bool,
    ) -> Any:
        value = self._typed(key, kind, noun, _MISSING, required)
        if value is _MISSING:
            return default
        try:
            return convert(value)
        except ValueError as e:
            self.problem(str(e), key)
            return default

    # Scalars

    def string(
        self,
        key: str,
        default: str | None = None,
        *,
        required: bool = False,
        pattern: re.Pattern[str] | None = None,
        rule: str = "",
    ) -> Any:
        """
        Read a non-empty string.

        @param pattern: If given, the whole string must match it; C{rule}
            describes it in the message.
        """
        value = self._typed(key, str, "a string", _MISSING, required)
        if value is _MISSING:
            return default
        if not value:
            self.problem("must not be empty", key)
            return default
        if pattern is not None and not pattern.fullmatch(value):
            self.problem(f"{value!r} is not valid ({rule})", key)
            return default
        return value

    def strings(
        self,
        key: str,
        default: tuple[str, ...] = (),
        *,
        required: bool = False,
        single: bool = False,
    ) -> tuple[str, ...]:
        """
        Read a non-empty list of non-empty strings.

        @param single: Also accept one string on its own.
        """
        value = self.get(key, required=required)
        if value is None:
            return default
        if single and isinstance(value, str):
            value = [value]
        noun = "a string or a list of strings" if single else "a list of strings"
        if not isinstance(value, list):
            self.problem(f"expected {noun}, got {_describe(value)}", key)
            return default
        if not value:
            self.problem("must not be empty", key)
            return default
        result = []
        ok = True
        for index, item in enumerate(value):
            where = f"{key}[{index}]"
            if not isinstance(item, str):
                self.problem(f"expected a string, got {_describe(item)}", where)
                ok = False
            elif not item:
                self.problem("must not be empty", where)
                ok = False
            else:
                result.append(item)
        return tuple(result) if ok else default

    def integer(
        self,
        key: str,
        default: int | None = None,
        *,
        required: bool = False,
        minimum: int | None = None,
        maximum: int | None = None,
    ) -> Any:
        """
        Read an integer, optionally within C{minimum} and C{maximum}.
        """
        value = self._typed(key, int, "an integer", _MISSING, required)
        if value is _MISSING:
            return default
        if (minimum is not None and value < minimum) or (
            maximum is not None and value > maximum
        ):
            if maximum is None:
                self.problem(f"{value} is less than {minimum}", key)
            elif minimum is None:
                self.problem(f"{value} is more than {maximum}", key)
            else:
                self.problem(f"{value} is not between {minimum} and {maximum}", key)
            return default
        return value

    def boolean(self, key: str, default: bool = False) -> bool:
        """
        Read C{true} or C{false}.
        """
        return self._typed(key, bool, "true or false", default, False)

    def duration(
        self,
        key: str,
        default: float | None = None,
        *,
        required: bool = False,
        positive: bool = False,
        maximum: float | None = None,
    ) -> Any:
        """
        Read a duration such as C{30s} and return it in seconds.

        @param positive: Refuse zero.
        """
        value = self._converted(
            key, (str, int, float), "a duration", parse_duration, _MISSING, required
        )
        if value is _MISSING:
            return default
        if positive and value <= 0:
            self.problem("must be more than 0", key)
            return default
        if maximum is not None and value > maximum:
            self.problem(
                f"{_format_duration(value)} is more than the maximum of "
                f"{_format_duration(maximum)}",
                key,
            )
            return default
        return value

    def size(
        self,
        key: str,
        default: int | None = None,
        *,
        required: bool = False,
        minimum: int = 0,
    ) -> Any:
        """
        Read a size such as C{16MiB} or C{4096} and return it in bytes.
        """
        value = self._converted(
            key, (str, int), "a size", parse_size, _MISSING, required
        )
        if value is _MISSING:
            return default
        if value < minimum:
            self.problem(
                f"{_format_size(value)} is less than the minimum of "
                f"{_format_size(minimum)}",
                key,
            )
            return default
        return value

    def url(self, key: str, *, required: bool = False) -> str | None:
        """
        Read an C{http://} or C{https://} URL.
        """
        value = self.string(key, required=required)
        if value is not None and not re.match(r"https?://[^/?#\s]+", value):
            self.problem(f"{value!r} is not an http:// or https:// URL", key)
            return None
        return value

    def address(self, key: str, default: str) -> str:
        """
        Read an IPv4 or IPv6 address to listen on.
        """
        value = self.string(key, default)
        try:
            ipaddress.ip_address(value)
        except ValueError:
            self.problem(f"{value!r} is not an IP address", key)
            return default
        return value

    # Paths

    def file_path(self, key: str, *, required: bool = False) -> str | None:
        """
        Read a path, resolved against L{base_directory}; nothing is checked.
        """
        value = self.string(key, required=required)
        if value is None:
            return None
        return self.resolve(value)

    def resolve(self, value: str) -> str:
        """
        Make a path from the configuration absolute.
        """
        return os.path.normpath(
            os.path.join(self.base_directory, os.path.expanduser(value))
        )

    def readable_file(self, key: str, *, required: bool = False) -> str | None:
        """
        Read the path of a file that must exist and be readable.
        """
        path = self.file_path(key, required=required)
        if path is None:
            return None
        message = _check_readable_file(path)
        if message is not None:
            self.problem(message, key)
            return None
        return path

    def readable_files(self, key: str, *, required: bool = False) -> tuple[str, ...]:
        """
        Read a non-empty list of paths of files that must exist and be readable.
        """
        paths = []
        ok = True
        for index, value in enumerate(self.strings(key, required=required)):
            path = self.resolve(value)
            message = _check_readable_file(path)
            if message is not None:
                self.problem(message, f"{key}[{index}]")
                ok = False
            paths.append(path)
        return tuple(paths) if ok else ()

    def existing_directory(self, key: str, *, required: bool = False) -> str | None:
        """
        Read the path of a directory that must exist.
        """
        path = self.file_path(key, required=required)
        if path is None:
            return None
        if not os.path.exists(path):
            self.problem(f"{path} does not exist", key)
            return None
        if not os.path.isdir(path):
            self.problem(f"{path} is not a directory", key)
            return None
        return path

    # Nested structure

    def section(self, key: str, *, required: bool = False) -> ConfigSection | None:
        """
        Read a nested mapping; C{None} if it is absent or wrong.
        """
        value = self._typed(key, dict, "a mapping", None, required)
        if value is None:
            return None
        return self._child(value, self.key_path(key))

    def sections(self, key: str, *, required: bool = False) -> list[ConfigSection]:
        """
        Read a list of mappings, one L{ConfigSection} per usable item.
        """
        items = self._typed(key, list, "a list", [], required)
        result = []
        for index, item in enumerate(items):
            where = f"{self.key_path(key)}[{index}]"
            if isinstance(item, dict):
                result.append(self._child(item, where))
            else:
                self._problems.add(where, f"expected a mapping, got {_describe(item)}")
        return result

    def _child(self, raw: Mapping[Any, Any], path: str) -> ConfigSection:
        child = ConfigSection(raw, path, self._problems, self.base_directory)
        self._children.append(child)
        return child


def _check_readable_file(path: str) -> str | None:
    """
    Return what is wrong with C{path} as a file to read, or C{None}.
    """
    if not os.path.exists(path):
        return f"{path} does not exist"
    if not os.path.isfile(path):
        return f"{path} is not a file"
    try:
        with open(path, "rb"):
            pass
    except OSError as e:
        return f"{path} cannot be read: {e.strerror}"
    return None


# YAML


class _Loader(yaml.SafeLoader):
    """
    A safe loader that refuses duplicate keys instead of keeping the last.
    """

    def construct_mapping(self, node: Any, deep: bool = False) -> Any:
        if isinstance(node, yaml.MappingNode):
            seen: dict[tuple[str, str], Any] = {}
            for key_node, _ in node.value:
                if not isinstance(key_node, yaml.ScalarNode):
                    continue
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                identity = (key_node.tag, key_node.value)
                if identity in seen:
                    raise yaml.constructor.ConstructorError(
                        None,
                        None,
                        f"duplicate key {key_node.value!r} "
                        f"(first at line {seen[identity].line + 1})",
                        key_node.start_mark,
                    )
                seen[identity] = key_node.start_mark
        return super().construct_mapping(node, deep=deep)


def _read_yaml(path: str, problems: _Problems) -> Any:
    """
    Read and parse C{path}; on failure report it and return C{_MISSING}.
    """
    try:
        with open(path, "rb") as f:
            text = f.read()
    except OSError as e:
        problems.add("", f"cannot read the configuration file: {e.strerror}")
        return _MISSING
    try:
        return yaml.load(text, Loader=_Loader)  # _Loader is a SafeLoader
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        what = " ".join(filter(None, [e.context, e.problem]))
        problems.add(where, "invalid YAML: " + " ".join(what.split()))
    except yaml.reader.ReaderError as e:
        problems.add("", f"invalid YAML: {e.reason} at byte {e.position}")
    except yaml.YAMLError as e:
        problems.add("", "invalid YAML: " + " ".join(str(e).split()))
    return _MISSING


# Sections of the file


def load_config(path: str, *, create_directories: bool = True) -> GatehouseConfig:
    """
    Read, validate and return the configuration in the YAML file C{path}.

    Relative paths inside the file are resolved against the file's directory.

    @param create_directories: Create the recording directory if it is
        missing and nothing else is wrong.  When false, only check that it
        could be created.

    @raise ConfigError: listing every problem found.
    """
    problems = _Problems(path)
    data = _read_yaml(path, problems)
    if data is _MISSING:
        raise ConfigError(problems.found)
    if data is None:
        problems.add("", "the file is empty")
        raise ConfigError(problems.found)
    if not isinstance(data, dict):
        problems.add("", f"expected a mapping at the top level, got {_describe(data)}")
        raise ConfigError(problems.found)

    absolute = os.path.abspath(path)
    root = ConfigSection(data, "", problems, os.path.dirname(absolute))
    gateway = _parse_gateway(root.section("gateway", required=True))
    identity = _parse_identity(root.section("identity", required=True))
    recording = _parse_recording(root.section("recording", required=True))
    listeners = _parse_listeners(root.sections("listeners"))
    target_sections: list[ConfigSection | None] = []
    targets = _parse_targets(root.sections("targets"), target_sections)
    admin_section = root.section("admin")
    admin = _parse_admin(admin_section) if admin_section is not None else None
    _check_ports(listeners, admin, problems)
    policy = policy_config.parse_policy(root.section("policy"), targets)
    _check_target_groups(targets, target_sections, getattr(policy, "groups", None))
    masking = policy_config.parse_masking(
        root.sections("masking"), targets, policy.groups
    )
    approval = policy_config.parse_approval(root.section("approval"))
    root.finish()

    if not problems.found and create_directories:
        # Only a configuration that will be used changes anything on disk.
        assert recording is not None
        try:
            os.makedirs(recording.directory, mode=0o700, exist_ok=True)
        except OSError as e:
            problems.add(
                "recording.directory",
                f"{recording.directory} cannot be created: {e.strerror}",
            )
    if problems.found:
        raise ConfigError(problems.found)
    assert gateway is not None and identity is not None and recording is not None
    return GatehouseConfig(
        path=absolute,
        gateway=gateway,
        identity=identity,
        recording=recording,
        listeners=tuple(listener for listener, _ in listeners),
        targets=targets,
        admin=admin,
        policy=policy,
        masking=masking,
        approval=approval,
    )


def load_admin_access(path: str) -> AdminAccess:
    """
    Read where the admin API of the gateway configured in C{path} listens,
    and what verifies its certificate, from the C{admin} and C{approval}
    sections alone: an approver who may read the configuration need not
    be able to read the gateway's secrets.

    @raise ConfigError: listing every problem found.
    """
    problems = _Problems(path)
    data = _read_yaml(path, problems)
    if data is not _MISSING and not isinstance(data, dict):
        problems.add("", f"expected a mapping at the top level, got {_describe(data)}")
    if problems.found:
        raise ConfigError(problems.found)
    root = ConfigSection(data, "", problems, os.path.dirname(os.path.abspath(path)))
    admin = root.section("admin")
    approval = root.section("approval")
    url = ca_file = None
    if approval is not None:
        url = approval.url("admin_url")
        ca_file = approval.readable_file("admin_ca_file")
    tls = None if admin is None else admin.section("tls")
    if url is None and admin is None:
        problems.add("admin", "no admin API is configured here")
    elif url is None:
        assert admin is not None
        address = ipaddress.ip_address(admin.address("address", "127.0.0.1"))
        port = admin.integer("port", 8080, minimum=0, maximum=65535)
        if port == 0:
            admin.problem(
                "0 (a free port) cannot be reached from here: set a port, "
                "or approval.admin_url",
                "port",
            )
        if address.is_unspecified:
            address = ipaddress.ip_address(
                "::1" if address.version == 6 else "127.0.0.1"
            )
        host = f"[{address}]" if address.version == 6 else str(address)
        url = f"{'http' if tls is None else 'https'}://{host}:{port}"
    if ca_file is None and tls is not None and url.startswith("https:"):
        ca_file = tls.readable_file("certificate", required=True)
    if problems.found:
        raise ConfigError(problems.found)
    assert url is not None
    return AdminAccess(url=url, ca_file=ca_file)


def _parse_gateway(section: ConfigSection | None) -> GatewayConfig | None:
    if section is None:
        return None
    gateway_id = section.string("id", required=True, pattern=_NAME, rule=_NAME_RULE)
    grace = section.duration("shutdown_grace", DEFAULT_SHUTDOWN_GRACE)
    section.finish()
    return GatewayConfig(id=gateway_id, shutdown_grace=grace)


def _parse_identity(section: ConfigSection | None) -> IdentityConfig | None:
    if section is None:
        return None
    max_token_bytes = section.size(
        "max_token_bytes", DEFAULT_MAX_TOKEN_BYTES, minimum=1
    )
    max_token_lifetime = section.duration(
        "max_token_lifetime",
        DEFAULT_MAX_TOKEN_LIFETIME,
        positive=True,
        maximum=MAX_TOKEN_LIFETIME,
    )
    issuer_sections = section.sections("issuers", required=True)
    if "issuers" in section.raw and section.raw["issuers"] == []:
        section.problem("at least one issuer is required", "issuers")
    issuers = []
    first_by_url: dict[str, str] = {}
    for issuer_section in issuer_sections:
        issuer = _parse_issuer(issuer_section)
        url = issuer_section.raw.get("issuer")
        if isinstance(url, str):
            if url in first_by_url:
                issuer_section.problem(
                    f"{url} is already configured by {first_by_url[url]}", "issuer"
                )
            else:
                first_by_url[url] = issuer_section.path
        if issuer is not None:
            issuers.append(issuer)
    section.finish()
    return IdentityConfig(
        issuers=tuple(issuers),
        max_token_bytes=max_token_bytes,
        max_token_lifetime=max_token_lifetime,
    )


def _parse_issuer(section: ConfigSection) -> IssuerConfig | None:
    from jwt.algorithms import get_default_algorithms

    from gatehouse.identity import IssuerConfig

    known_algorithms = sorted(set(get_default_algorithms()) - {"none"})
    before = section.problem_count
    fields: dict[str, Any] = {
        "issuer": section.url("issuer", required=True),
        "audiences": section.strings("audience", required=True, single=True),
    }
    algorithms = section.strings("algorithms")
    for index, algorithm in enumerate(algorithms):
        where = f"algorithms[{index}]"
        if algorithm.lower() == "none":
            section.problem("'none' is never allowed", where)
        elif algorithm not in known_algorithms:
            hint = _suggest(algorithm, known_algorithms)
            section.problem(f"unknown algorithm {algorithm!r}{hint}", where)
        elif algorithm.startswith("HS") and "hs256_secret_file" not in section.raw:
            section.problem(f"{algorithm} needs hs256_secret_file", where)
    for name in ("groups_claim", "name_claim"):
        claim = section.string(name)
        if claim is not None:
            fields[name] = claim
    leeway = section.duration("leeway", maximum=MAX_LEEWAY)
    if leeway is not None:
        fields["leeway"] = leeway
    for name in ("discovery_url", "jwks_uri"):
        fields[name] = section.url(name)
    fields["jwks_file"] = _jwks_file(section)
    fields["hs256_secret"] = _hs256_secret(section)
    fields["ca_file"] = section.readable_file("ca_file")
    refresh = section.duration("refresh_min_interval")
    if refresh is not None:
        fields["refresh_min_interval"] = refresh

    if algorithms:
        fields["algorithms"] = algorithms
    section.finish()

    if section.problem_count > before:
        return None
    try:
        return IssuerConfig(**fields)
    except (TypeError, ValueError) as e:
        section.problem(" ".join(str(e).split()))
        return None


def _jwks_file(section: ConfigSection) -> str | None:
    path = section.readable_file("jwks_file")
    if path is None:
        return None
    try:
        with open(path, "rb") as f:
            document = json.load(f)
    except ValueError as e:
        section.problem(f"{path} is not valid JSON: {e}", "jwks_file")
        return None
    if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
        section.problem(f'{path} has no "keys" list', "jwks_file")
        return None
    return path


def _hs256_secret(section: ConfigSection) -> bytes | None:
    path = section.readable_file("hs256_secret_file")
    if path is None:
        return None
    with open(path, "rb") as f:
        # Files written with echo or an editor end with a newline that is not
        # part of the secret.
        secret = f.read().rstrip(b"\r\n")
    if len(secret) < _MIN_HS256_SECRET:
        section.problem(
            f"{path} holds {len(secret)} bytes; "
            f"an HS256 secret needs at least {_MIN_HS256_SECRET}",
            "hs256_secret_file",
        )
        return None
    return secret


def _parse_recording(section: ConfigSection | None) -> RecordingConfig | None:
    if section is None:
        return None
    directory = section.file_path("directory", required=True)
    if directory is not None:
        message = _check_directory(directory)
        if message is not None:
            section.problem(message, "directory")
    index = section.file_path("index")
    if index is not None:
        message = _check_index(index)
        if message is not None:
            section.problem(message, "index")
    elif directory is not None:
        index = os.path.join(directory, "index.sqlite3")
    signing_keys = section.existing_directory("signing_keys", required=True)
    root_public_keys = section.readable_files("root_public_keys", required=True)
    segment_max_bytes = section.size(
        "segment_max_bytes", DEFAULT_SEGMENT_MAX_BYTES, minimum=1
    )
    seal_interval = section.duration(
        "seal_interval", DEFAULT_SEAL_INTERVAL, positive=True
    )
    flush_interval = section.duration(
        "flush_interval", DEFAULT_FLUSH_INTERVAL, positive=True
    )
    key_warning = section.duration("key_warning", DEFAULT_KEY_WARNING)
    reserve_bytes = section.size("reserve_bytes", DEFAULT_RESERVE_BYTES)
    preallocate = section.boolean("preallocate", True)
    revocations = section.readable_files("revocations")
    _check_revocations(section, root_public_keys, revocations)
    section.finish()
    return RecordingConfig(
        directory=directory,
        index=index,
        signing_keys=signing_keys,
        root_public_keys=root_public_keys,
        segment_max_bytes=segment_max_bytes,
        seal_interval=seal_interval,
        flush_interval=flush_interval,
        key_warning=key_warning,
        reserve_bytes=reserve_bytes,
        preallocate=preallocate,
        revocations=revocations,
    )


def _check_revocations(
    section: ConfigSection, root_public_keys: tuple[str, ...], paths: tuple[str, ...]
) -> None:
    """Each revocation statement must be signed by one of the trusted roots."""
    if not paths or not root_public_keys:
        return
    from gatehouse.recording.keys import KeyFileError, TrustAnchors, load_revocations

    try:
        anchors = TrustAnchors.from_files(root_public_keys)
    except KeyFileError:
        return  # reported by whoever reads root_public_keys
    for index, path in enumerate(paths):
        try:
            load_revocations(anchors, [path])
        except KeyFileError as e:
            section.problem(str(e), f"revocations[{index}]")


def _check_directory(path: str) -> str | None:
    """
    Check that C{path} is, or could be created as, a writable directory.

    @return: What is wrong, or C{None}.
    """
    if os.path.exists(path):
        if not os.path.isdir(path):
            return f"{path} is not a directory"
        if not os.access(path, os.W_OK | os.X_OK):
            return f"{path} is not writable"
        return None
    ancestor = os.path.dirname(path)
    while not os.path.exists(ancestor):
        ancestor = os.path.dirname(ancestor)
    if not os.path.isdir(ancestor):
        return f"{path} cannot be created: {ancestor} is not a directory"
    if not os.access(ancestor, os.W_OK | os.X_OK):
        return f"{path} cannot be created: {ancestor} is not writable"
    return None


def _check_index(path: str) -> str | None:
    """
    Return what is wrong with C{path} as the recording index, or C{None}.
    """
    if os.path.isdir(path):
        return f"{path} is a directory"
    parent = os.path.dirname(path)
    if not os.path.isdir(parent):
        return f"{parent} does not exist"
    return None


def _parse_tls(section: ConfigSection | None) -> TLSConfig | None:
    if section is None:
        return None
    certificate = section.readable_file("certificate", required=True)
    key = section.readable_file("key", required=True)
    section.finish()
    if certificate is not None and key is not None:
        for where, message in tls_problems(certificate, key):
            section.problem(message, where)
    return TLSConfig(certificate=certificate, key=key)


def tls_problems(certificate: str, key: str) -> list[tuple[str, str]]:
    """
    Check a PEM certificate chain and private key the way the TLS server
    will use them: both parse, the key is not encrypted, the first
    certificate (the leaf) is for that key, and it is valid now.

    @return: (key, message) per problem; C{key} is C{certificate} or C{key}.
    """
    from cryptography import x509
    from cryptography.exceptions import UnsupportedAlgorithm
    from cryptography.hazmat.primitives import serialization

    problems: list[tuple[str, str]] = []
    with open(certificate, "rb") as f:
        pem = f.read()
    leaf = None
    if b"-----BEGIN CERTIFICATE-----" not in pem:
        problems.append(("certificate", f"{certificate} holds no PEM certificate"))
    else:
        try:
            leaf = x509.load_pem_x509_certificates(pem)[0]
        except ValueError:
            problems.append(
                (
                    "certificate",
                    f"{certificate} is not a valid PEM certificate: its contents "
                    "do not parse as X.509",
                )
            )
    with open(key, "rb") as f:
        key_pem = f.read()
    private = None
    try:
        private = serialization.load_pem_private_key(key_pem, password=None)
    except TypeError:
        problems.append(
            ("key", f"{key} is encrypted; the gateway needs it unencrypted")
        )
    except (ValueError, UnsupportedAlgorithm):
        problems.append(
            ("key", f"{key} is not a valid PEM private key (or not a supported type)")
        )
    if leaf is None:
        return problems
    import datetime

    now = datetime.datetime.now(datetime.UTC)
    if leaf.not_valid_after_utc <= now:
        problems.append(
            (
                "certificate",
                f"{certificate} expired on "
                f"{leaf.not_valid_after_utc:%Y-%m-%d %H:%M:%S} UTC",
            )
        )
    elif leaf.not_valid_before_utc > now:
        problems.append(
            (
                "certificate",
                f"{certificate} is not valid before "
                f"{leaf.not_valid_before_utc:%Y-%m-%d %H:%M:%S} UTC",
            )
        )
    if private is not None:
        spki = serialization.PublicFormat.SubjectPublicKeyInfo
        der = serialization.Encoding.DER
        leaf_public = leaf.public_key().public_bytes(der, spki)
        if leaf_public != private.public_key().public_bytes(der, spki):
            problems.append(
                ("key", f"{key} does not match the certificate in {certificate}")
            )
    return problems


def _parse_protocol(section: ConfigSection) -> tuple[str | None, Any]:
    """
    Read C{protocol}; return it and its adapter, or C{None} for both.
    """
    name = section.string("protocol", required=True)
    if name is None:
        return None, None
    try:
        return name, get_protocol(name)
    except KeyError:
        known = protocol_names()
        hint = _suggest(name, known)
        if not hint:
            hint = (
                f" (known: {', '.join(known)})"
                if known
                else " (no protocols are available)"
            )
        section.problem(f"unknown protocol {name!r}{hint}", "protocol")
        return None, None


def _options(section: ConfigSection, adapter: Any) -> ConfigSection | None:
    """
    Read C{options}; C{None} if there is no adapter to make sense of them.
    """
    if adapter is None:
        section.get("options")
        return None
    options = section.section("options")
    if options is None:
        return section._child({}, section.key_path("options"))
    return options


class _Names:
    """
    Reads the C{name} of each item of a list, reporting duplicates.
    """

    def __init__(self) -> None:
        self._first: dict[str, str] = {}

    def read(self, section: ConfigSection) -> str | None:
        name = section.string("name", required=True, pattern=_NAME, rule=_NAME_RULE)
        if name is not None:
            if name in self._first:
                section.problem(
                    f"{name} is already used by {self._first[name]}", "name"
                )
            else:
                self._first[name] = section.path
        return name


def _parse_listeners(
    sections: Sequence[ConfigSection],
) -> list[tuple[ListenerConfig, ConfigSection]]:
    listeners = []
    names = _Names()
    for section in sections:
        name = names.read(section)
        protocol, adapter = _parse_protocol(section)
        address = section.address("address", "127.0.0.1")
        port = section.integer("port", required=True, minimum=0, maximum=65535)
        tls = _parse_tls(section.section("tls"))
        options_section = _options(section, adapter)
        options = None
        if options_section is not None:
            options = adapter.parse_listener_options(options_section)
            options_section.finish()
        section.finish()
        listener = ListenerConfig(
            name=name,
            protocol=protocol,
            address=address,
            port=port,
            tls=tls,
            options=options,
        )
        # Rules that span the listener's own keys and its options (e.g.
        # "TLS, or cleartext explicitly allowed").
        if options is not None:
            adapter.check_listener(listener, section)
        listeners.append((listener, section))
    return listeners


def _parse_targets(
    sections: Sequence[ConfigSection],
    options_sections: list[ConfigSection | None] | None = None,
) -> tuple[TargetConfig, ...]:
    targets = []
    names = _Names()
    for section in sections:
        name = names.read(section)
        protocol, adapter = _parse_protocol(section)
        end_at_expiry = section.boolean("end_session_at_token_expiry", True)
        options_section = _options(section, adapter)
        options = None
        allow_groups: tuple[str, ...] = ()
        if options_section is not None:
            options = adapter.parse_target_options(options_section)
            # Who may reach a target is the core's to decide, for every
            # protocol: an adapter that forgets to check cannot fail open.
            allow_groups = options_section.strings("allow_groups", required=True)
            if options is not None and allow_groups:
                for key, message in options.access_problems(allow_groups):
                    options_section.problem(message, key)
            options_section.finish()
        section.finish()
        targets.append(
            TargetConfig(
                name=name,
                protocol=protocol,
                options=options,
                end_session_at_token_expiry=end_at_expiry,
                allow_groups=allow_groups,
            )
        )
        if options_sections is not None:
            options_sections.append(options_section)
    return tuple(targets)


def _check_target_groups(
    targets: Sequence[TargetConfig],
    options_sections: Sequence[ConfigSection | None],
    groups: frozenset[str] | None,
) -> None:
    """
    When C{policy.groups} declares the known groups, report the groups a
    target's options name that it does not (L{TargetOptions.group_problems}).
    """
    if groups is None:
        return
    for target, section in zip(targets, options_sections, strict=True):
        if target.options is None or section is None:
            continue
        for key, message in target.options.group_problems(groups):
            section.problem(message, key)


def _parse_admin(section: ConfigSection) -> AdminConfig:
    address = section.address("address", "127.0.0.1")
    port = section.integer("port", 8080, minimum=0, maximum=65535)
    tls = _parse_tls(section.section("tls"))
    groups = section.strings("groups", single=True)
    section.finish()
    if tls is None and "tls" not in section.raw and not _is_loopback(address):
        # Bearer tokens of approvers cross this socket.
        section.problem(
            f"{address} is not a loopback address: the admin API needs tls "
            "(certificate and key) to listen there",
            "address",
        )
    return AdminConfig(address=address, port=port, tls=tls, groups=groups)


def _is_loopback(address: str) -> bool:
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False


def _overlaps(first: str, second: str) -> bool:
    """
    Whether listening on both addresses at once (same port) would conflict.

    A wildcard address takes the port on every address of its family, and on
    Linux the IPv6 wildcard takes the IPv4 addresses too.
    """
    a, b = ipaddress.ip_address(first), ipaddress.ip_address(second)
    if a == b:
        return True
    for wildcard, other in ((a, b), (b, a)):
        if wildcard.is_unspecified:
            if wildcard.version == other.version or wildcard.version == 6:
                return True
    return False


def _check_ports(
    listeners: Sequence[tuple[ListenerConfig, ConfigSection]],
    admin: AdminConfig | None,
    problems: _Problems,
) -> None:
    """
    Report every listener (and the admin API) whose port is already taken.
    """
    endpoints: list[tuple[str, int, str, str]] = [
        (
            listener.address,
            listener.port,
            section.key_path("port"),
            f"{section.path} ({listener.name})" if listener.name else section.path,
        )
        for listener, section in listeners
    ]
    if admin is not None:
        endpoints.append((admin.address, admin.port, "admin.port", "admin"))
    taken: list[tuple[str, int, str]] = []
    for address, port, where, label in endpoints:
        # Port 0 asks the kernel for a fresh port each time: never a clash.
        if port is None or port == 0:
            continue
        for other_address, other_port, other_label in taken:
            if other_port == port and _overlaps(address, other_address):
                problems.add(where, f"{port} is already used by {other_label}")
                break
        else:
            taken.append((address, port, label))


# Checks of the environment the configuration runs in


def environment_problems(config: GatehouseConfig) -> list[Problem]:
    """
    Report every environment variable a target's options name that is not
    set in this process (L{TargetOptions.environment_problems}: a
    PostgreSQL target's C{password_env}).

    Separate from L{load_config}: the answer depends on the process
    environment, so C{gatehouse check-config} and the daemon (start and
    reload) ask it of their own environment.
    """
    problems = []
    for n, target in enumerate(config.targets):
        if target.options is None:
            continue
        for key, message in target.options.environment_problems():
            problems.append(
                Problem(config.path, f"targets[{n}].options.{key}", message)
            )
    return problems


def signing_key_problems(
    config: GatehouseConfig, now: float
) -> tuple[list[Problem], list[Problem]]:
    """
    Check that the signing keys (C{recording.signing_keys}) can sign now and
    for how long: no key valid at C{now} is an error (sessions would be
    refused), and coverage ending within C{recording.key_warning} is a
    warning.  Nothing is written (expired keys are not erased).

    @return: (errors, warnings).
    """
    from gatehouse.recording.keys import NS, KeyDirectory, covered_until

    recording = config.recording
    where = "recording.signing_keys"
    keys, read_problems = KeyDirectory(recording.signing_keys).load()
    errors = [Problem(config.path, where, p) for p in read_problems]
    now_ns = int(now * NS)
    mine = []
    for key in keys:
        if key.certificate.gateway_id != config.gateway.id:
            errors.append(
                Problem(
                    config.path,
                    where,
                    f"key {key.filename()} was issued for gateway "
                    f"{key.certificate.gateway_id!r}, not {config.gateway.id!r}",
                )
            )
        elif key.certificate.not_after > now_ns:
            mine.append(key)
    end = covered_until(mine, now_ns)
    warnings = []
    if end <= now_ns:
        later = [k for k in mine if k.certificate.not_before > now_ns]
        detail = (
            "the next one starts at "
            + time.strftime(
                "%Y-%m-%d %H:%M:%S UTC",
                time.gmtime(later[0].certificate.not_before // NS),
            )
            if later
            else "issue keys with `gatehouse keys issue`"
        )
        errors.append(
            Problem(
                config.path,
                where,
                f"no signing key in {recording.signing_keys} is valid now "
                f"(sessions would be refused); {detail}",
            )
        )
    elif (left := (end - now_ns) / NS) < recording.key_warning:
        warnings.append(
            Problem(
                config.path,
                where,
                f"signing keys run out in {_format_duration(round(left))}; "
                "issue more with `gatehouse keys issue`",
            )
        )
    return errors, warnings
