"""
Loading a configuration file: the YAML, then each section of it.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, TypeVar, cast

import yaml

from gatehouse._suggest import suggest as _suggest
from gatehouse.config.checks import tls_problems
from gatehouse.config.section import (
    _MISSING,
    ConfigError,
    ConfigSection,
    _check_readable_file,
    _describe,
    _Problems,
)
from gatehouse.config.values import (
    DEFAULT_FLUSH_INTERVAL,
    DEFAULT_KEY_WARNING,
    DEFAULT_MAX_TOKEN_BYTES,
    DEFAULT_MAX_TOKEN_LIFETIME,
    DEFAULT_RESERVE_BYTES,
    DEFAULT_SEAL_INTERVAL,
    DEFAULT_SEGMENT_MAX_BYTES,
    DEFAULT_SHUTDOWN_GRACE,
    DEFAULT_SSH_CERTIFICATE_LIFETIME,
    DEFAULT_SSH_CERTIFICATE_MAX_LIFETIME,
    MAX_LEEWAY,
    MAX_TOKEN_LIFETIME,
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
from gatehouse.policy import config as policy_config
from gatehouse.protocols import get_protocol, protocol_names

if TYPE_CHECKING:
    from gatehouse.identity import IssuerConfig
    from gatehouse.protocols import IProtocolAdapter

_NAME = re.compile(r"[A-Za-z0-9._-]{1,64}")
_NAME_RULE = "1 to 64 characters of A-Z a-z 0-9 . _ -"
_MIN_HS256_SECRET = 32

_T = TypeVar("_T")


def _reported(value: _T | None) -> _T:
    """
    A required value; None only once its problem is reported, and then the
    value built from it is never returned (L{load_config} raises
    L{ConfigError}): parsing carries on to report every problem at once.
    """
    return cast(_T, value)


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
    ca_section = root.section("ssh_user_ca")
    ssh_user_ca = None if ca_section is None else _parse_ssh_user_ca(ca_section)
    if ca_section is not None and admin_section is None:
        problems.add(
            "ssh_user_ca",
            "needs the admin API (an admin section): certificates are issued there",
        )
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
        ssh_user_ca=ssh_user_ca,
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
    if (
        ca_file is None
        and tls is not None
        and url is not None
        and url.startswith("https:")
    ):
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
    return GatewayConfig(id=_reported(gateway_id), shutdown_grace=grace)


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
        directory=_reported(directory),
        index=_reported(index),
        signing_keys=_reported(signing_keys),
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


def _parse_ssh_user_ca(section: ConfigSection) -> SSHUserCAConfig | None:
    key = section.file_path("key", required=True)
    if key is not None:
        # A missing key is created at start, where its directory allows.
        parent = os.path.dirname(key)
        if os.path.exists(key):
            message = _check_readable_file(key)
        elif not os.path.isdir(parent):
            message = f"{key} does not exist and {parent} is not a directory"
        elif not os.access(parent, os.W_OK | os.X_OK):
            message = f"{key} does not exist and cannot be created in {parent}"
        else:
            message = None
        if message is not None:
            section.problem(message, "key")
    lifetime = section.duration(
        "certificate_lifetime", DEFAULT_SSH_CERTIFICATE_LIFETIME, positive=True
    )
    longest = section.duration(
        "max_lifetime", DEFAULT_SSH_CERTIFICATE_MAX_LIFETIME, positive=True
    )
    if lifetime > longest:
        section.problem(
            "is longer than max_lifetime (certificates are never valid for longer)",
            "certificate_lifetime",
        )
    section.finish()
    if key is None:
        return None
    return SSHUserCAConfig(key=key, certificate_lifetime=lifetime, max_lifetime=longest)


def _parse_tls(section: ConfigSection | None) -> TLSConfig | None:
    if section is None:
        return None
    certificate = section.readable_file("certificate", required=True)
    key = section.readable_file("key", required=True)
    section.finish()
    if certificate is not None and key is not None:
        for where, message in tls_problems(certificate, key):
            section.problem(message, where)
    return TLSConfig(certificate=_reported(certificate), key=_reported(key))


def _parse_protocol(
    section: ConfigSection,
) -> tuple[str | None, IProtocolAdapter | None]:
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


def _options(
    section: ConfigSection, adapter: IProtocolAdapter | None
) -> ConfigSection | None:
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
        if adapter is not None and options_section is not None:
            options = adapter.parse_listener_options(options_section)
            options_section.finish()
        section.finish()
        listener = ListenerConfig(
            name=_reported(name),
            protocol=_reported(protocol),
            address=address,
            port=_reported(port),
            tls=tls,
            options=options,
        )
        # Rules that span the listener's own keys and its options (e.g.
        # "TLS, or cleartext explicitly allowed").
        if adapter is not None and options is not None:
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
        if adapter is not None and options_section is not None:
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
                name=_reported(name),
                protocol=_reported(protocol),
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
