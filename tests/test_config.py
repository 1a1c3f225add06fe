"""
Tests for L{gatehouse.config} and L{gatehouse._duration}.
"""

from __future__ import annotations

import copy
import json
import os
import time
from typing import Any

import attrs
import yaml
from twisted.application.internet import TCPServer
from twisted.application.service import IService
from twisted.internet.protocol import Factory, Protocol
from twisted.trial.unittest import SynchronousTestCase

from gatehouse._duration import parse_duration, parse_size
from gatehouse.config import (
    AdminConfig,
    ConfigError,
    ConfigSection,
    GatehouseConfig,
    GatewayConfig,
    IdentityConfig,
    ListenerConfig,
    Problem,
    RecordingConfig,
    TargetConfig,
    TLSConfig,
    load_config,
)
from gatehouse.identity import IssuerConfig
from gatehouse.policy import Policy
from gatehouse.policy.config import ApprovalConfig
from gatehouse.protocols import (
    ListenerOptions,
    ProtocolAdapterBase,
    TargetOptions,
    get_protocol,
    protocol_names,
    register_protocol,
    unregister_protocol,
)
from gatehouse.recording import keys as gkeys
from tests.fixtures.tls import make_ca


@attrs.frozen
class DummyListenerOptions(ListenerOptions):
    """
    What L{DummyAdapter} makes of a listener's options.
    """

    greeting: str
    timeout: float
    rows: int | None = None


@attrs.frozen
class DummyTargetOptions(TargetOptions):
    """
    What L{DummyAdapter} makes of a target's options.
    """

    host: str


class DummyAdapter(ProtocolAdapterBase):
    """
    A protocol adapter for tests: validates a few options and listens with a
    protocol that does nothing; the rest of L{IProtocolAdapter} is
    L{ProtocolAdapterBase}'s defaults.
    """

    def __init__(self, name: str = "dummy") -> None:
        self.name = name
        self.made: list[tuple[Any, ...]] = []

    def parse_listener_options(self, options: ConfigSection) -> DummyListenerOptions:
        greeting = options.string("greeting", "hello")
        timeout = options.duration("timeout", 5.0)
        limits = options.section("limits")
        rows = limits.integer("rows", minimum=1) if limits is not None else None
        return DummyListenerOptions(greeting=greeting, timeout=timeout, rows=rows)

    def parse_target_options(self, options: ConfigSection) -> DummyTargetOptions:
        return DummyTargetOptions(host=options.string("host", required=True))

    def makeListener(self, listener, targets, session_factory, reactor) -> IService:
        self.made.append((listener, targets, session_factory, reactor))
        return TCPServer(
            listener.port,
            Factory.forProtocol(Protocol),
            interface=listener.address,
            reactor=reactor,
        )


def use_dummy_protocol(case: SynchronousTestCase, name: str = "dummy") -> DummyAdapter:
    """
    Register a L{DummyAdapter} for the duration of test C{case}.
    """
    adapter = DummyAdapter(name)
    register_protocol(adapter)
    case.addCleanup(unregister_protocol, name)
    return adapter


class ConfigFiles:
    """
    A directory holding a valid configuration and every file it names.
    """

    def __init__(self, directory: str) -> None:
        self.directory = os.path.abspath(directory)
        os.makedirs(os.path.join(self.directory, "keys"))
        # Real keys and certificates: check-config and startup check them.
        root = gkeys.generate_root_key()
        gkeys.save_root_key(root, self["root.key"], self["root.pub"])
        gkeys.KeyDirectory(self["keys"]).add(
            gkeys.issue_epoch_keys(
                root, "gw-1", time.time_ns() - 600 * 10**9, 4 * 3600 * 10**9, 8
            )
        )
        self.write("jwks.json", json.dumps({"keys": []}))
        self.write("secret", "s" * 40 + "\n")
        ca = make_ca(os.path.join(self.directory, "ca"))
        self.write("ca.pem", ca.cert_path.read_bytes())
        cert, key = ca.issue("localhost", directory=self.directory)
        os.replace(cert, self["cert.pem"])
        os.replace(key, self["key.pem"])
        self.path = os.path.join(self.directory, "gw.yaml")

    def write(self, name: str, content: str | bytes) -> str:
        """
        Write C{content} to C{name} in the directory and return its path.
        """
        path = os.path.join(self.directory, name)
        with open(path, "wb") as f:
            f.write(content.encode() if isinstance(content, str) else content)
        return path

    def minimal(self) -> dict[str, Any]:
        """
        The smallest valid configuration, as parsed YAML.
        """
        return {
            "gateway": {"id": "gw-1"},
            "identity": {
                "issuers": [
                    {
                        "issuer": "https://idp.example.com/realms/main",
                        "audience": "gatehouse",
                    }
                ]
            },
            "recording": {
                "directory": "recordings",
                "signing_keys": "keys",
                "root_public_keys": ["root.pub"],
            },
        }

    def full(self) -> dict[str, Any]:
        """
        A valid configuration that sets every key.
        """
        data = self.minimal()
        data["identity"] = {
            "max_token_bytes": "8KiB",
            "issuers": [
                {
                    "issuer": "https://idp.example.com/realms/main",
                    "audience": ["gatehouse", "db"],
                    "algorithms": ["RS256", "ES256", "HS256"],
                    "groups_claim": "realm_access.roles",
                    "name_claim": "preferred_username",
                    "leeway": "45s",
                    "discovery_url": "https://idp.example.com/.well-known/x",
                    "jwks_uri": "https://idp.example.com/certs",
                    "jwks_file": "jwks.json",
                    "hs256_secret_file": "secret",
                    "ca_file": "ca.pem",
                    "refresh_min_interval": "2m",
                },
                {"issuer": "https://other.example.com", "audience": "gatehouse"},
            ],
        }
        data["recording"].update(
            {
                "index": "index.db",
                "segment_max_bytes": "8MB",
                "seal_interval": "1m",
                "flush_interval": "250ms",
                "key_warning": "2h",
            }
        )
        data["listeners"] = [
            {
                "name": "pg-main",
                "protocol": "dummy",
                "address": "0.0.0.0",
                "port": 6432,
                "tls": {"certificate": "cert.pem", "key": "key.pem"},
                "options": {"greeting": "hi", "timeout": "10s"},
            },
            {"name": "pg-ephemeral", "protocol": "dummy", "port": 0},
            {"name": "pg-ephemeral-2", "protocol": "dummy", "port": 0},
        ]
        data["targets"] = [
            {
                "name": "orders-db",
                "protocol": "dummy",
                "options": {"host": "db1", "allow_groups": ["dba", "ops"]},
            }
        ]
        data["admin"] = {
            "address": "::1",
            "port": 8443,
            "tls": {"certificate": "cert.pem", "key": "key.pem"},
        }
        return data

    def save(self, data: Any) -> str:
        """
        Write C{data} as the configuration file and return its path.
        """
        return self.write("gw.yaml", yaml.safe_dump(data))

    def __getitem__(self, name: str) -> str:
        return os.path.join(self.directory, name)


class ConfigTestCase(SynchronousTestCase):
    """
    Shared set-up: a directory of files a configuration can name.
    """

    def setUp(self) -> None:
        self.files = ConfigFiles(self.mktemp())
        self.adapter = use_dummy_protocol(self)

    def problems(self, data: Any, text: str | None = None) -> list[str]:
        """
        Load C{data} (or the raw YAML C{text}), which must fail, and return
        its problem lines without the leading file name.
        """
        path = (
            self.files.save(data) if text is None else self.files.write("gw.yaml", text)
        )
        error = self.assertRaises(ConfigError, load_config, path)
        prefix = path + ": "
        for line in error.lines():
            self.assertTrue(line.startswith(prefix), line)
        return [line[len(prefix) :] for line in error.lines()]

    def assertProblem(self, data: Any, expected: str) -> None:
        """
        Loading C{data} reports exactly one problem: C{expected}.
        """
        self.assertEqual(self.problems(data), [expected])


class LoadValidTests(ConfigTestCase):
    """
    Valid files load into the configuration objects.
    """

    def test_full(self) -> None:
        """
        Every key of a full configuration ends up in its attribute, with
        durations in seconds, sizes in bytes and paths absolute.
        """
        f = self.files
        config = load_config(f.save(f.full()))
        tls = TLSConfig(certificate=f["cert.pem"], key=f["key.pem"])
        self.assertEqual(
            config,
            GatehouseConfig(
                path=f.path,
                gateway=GatewayConfig(id="gw-1"),
                identity=IdentityConfig(
                    max_token_bytes=8192,
                    issuers=(
                        IssuerConfig(
                            issuer="https://idp.example.com/realms/main",
                            audiences=("gatehouse", "db"),
                            algorithms=("RS256", "ES256", "HS256"),
                            groups_claim="realm_access.roles",
                            name_claim="preferred_username",
                            leeway=45.0,
                            discovery_url="https://idp.example.com/.well-known/x",
                            jwks_uri="https://idp.example.com/certs",
                            jwks_file=f["jwks.json"],
                            hs256_secret=b"s" * 40,
                            ca_file=f["ca.pem"],
                            refresh_min_interval=120.0,
                        ),
                        IssuerConfig(
                            issuer="https://other.example.com",
                            audiences=("gatehouse",),
                        ),
                    ),
                ),
                recording=RecordingConfig(
                    directory=f["recordings"],
                    index=f["index.db"],
                    signing_keys=f["keys"],
                    root_public_keys=(f["root.pub"],),
                    segment_max_bytes=8_000_000,
                    seal_interval=60.0,
                    flush_interval=0.25,
                    key_warning=7200.0,
                ),
                listeners=(
                    ListenerConfig(
                        name="pg-main",
                        protocol="dummy",
                        address="0.0.0.0",
                        port=6432,
                        tls=tls,
                        options=DummyListenerOptions(greeting="hi", timeout=10.0),
                    ),
                    ListenerConfig(
                        name="pg-ephemeral",
                        protocol="dummy",
                        address="127.0.0.1",
                        port=0,
                        options=DummyListenerOptions(greeting="hello", timeout=5.0),
                    ),
                    ListenerConfig(
                        name="pg-ephemeral-2",
                        protocol="dummy",
                        address="127.0.0.1",
                        port=0,
                        options=DummyListenerOptions(greeting="hello", timeout=5.0),
                    ),
                ),
                targets=(
                    TargetConfig(
                        name="orders-db",
                        protocol="dummy",
                        options=DummyTargetOptions(host="db1"),
                        allow_groups=("dba", "ops"),
                    ),
                ),
                admin=AdminConfig(address="::1", port=8443, tls=tls),
                policy=Policy(),
                approval=ApprovalConfig(),
            ),
        )

    def test_defaults(self) -> None:
        """
        Optional keys take their defaults.
        """
        f = self.files
        config = load_config(f.save(f.minimal()))
        self.assertEqual(config.identity.max_token_bytes, 16384)
        self.assertEqual(
            config.identity.issuers[0],
            IssuerConfig(
                issuer="https://idp.example.com/realms/main", audiences=("gatehouse",)
            ),
        )
        self.assertEqual(
            config.recording,
            RecordingConfig(
                directory=f["recordings"],
                index=os.path.join(f["recordings"], "index.sqlite3"),
                signing_keys=f["keys"],
                root_public_keys=(f["root.pub"],),
                segment_max_bytes=16 * 1024 * 1024,
                seal_interval=30.0,
                flush_interval=0.2,
                key_warning=86400.0,
            ),
        )
        self.assertEqual((config.listeners, config.targets), ((), ()))
        self.assertIsNone(config.admin)

    def test_default_listener_and_admin(self) -> None:
        """
        Listeners and the admin API listen on 127.0.0.1 unless told
        otherwise; an empty C{admin} mapping gets the default port.
        """
        data = self.files.minimal()
        data["listeners"] = [{"name": "a", "protocol": "dummy", "port": 5}]
        data["admin"] = {}
        config = load_config(self.files.save(data))
        self.assertEqual(config.listeners[0].address, "127.0.0.1")
        self.assertIsNone(config.listeners[0].tls)
        self.assertEqual(config.admin, AdminConfig(address="127.0.0.1", port=8080))

    def test_relative_paths(self) -> None:
        """
        Relative paths are resolved against the configuration file's
        directory, not the working directory; C{..} is normalised.
        """
        f = self.files
        os.mkdir(f["etc"])
        data = f.minimal()
        data["recording"]["signing_keys"] = "../keys"
        data["recording"]["root_public_keys"] = ["../root.pub", f["root.pub"]]
        data["recording"]["directory"] = "rec"
        data["identity"]["issuers"][0]["jwks_file"] = "../jwks.json"
        path = os.path.join(f["etc"], "gw.yaml")
        with open(path, "w") as out:
            yaml.safe_dump(data, out)

        config = load_config(os.path.relpath(path))

        self.assertEqual(config.path, path)
        self.assertEqual(config.recording.signing_keys, f["keys"])
        self.assertEqual(config.recording.root_public_keys, (f["root.pub"],) * 2)
        self.assertEqual(config.recording.directory, os.path.join(f["etc"], "rec"))
        self.assertEqual(config.identity.issuers[0].jwks_file, f["jwks.json"])

    def test_creates_recording_directory(self) -> None:
        """
        A missing recording directory is created, with its parents.
        """
        data = self.files.minimal()
        data["recording"]["directory"] = "var/rec"
        config = load_config(self.files.save(data))
        self.assertTrue(os.path.isdir(config.recording.directory))

    def test_check_without_creating(self) -> None:
        """
        With C{create_directories=False} a missing recording directory is
        accepted if it could be created, but not created.
        """
        data = self.files.minimal()
        data["recording"]["directory"] = "var/rec"
        config = load_config(self.files.save(data), create_directories=False)
        self.assertFalse(os.path.exists(self.files["var"]))
        self.assertEqual(config.recording.directory, self.files["var/rec"])

    def test_secret_newline(self) -> None:
        """
        The HS256 secret is the file's content without its final newline.
        """
        self.files.write("secret", b"k" * 32 + b"\r\n")
        data = self.files.minimal()
        data["identity"]["issuers"][0]["hs256_secret_file"] = "secret"
        config = load_config(self.files.save(data))
        self.assertEqual(config.identity.issuers[0].hs256_secret, b"k" * 32)

    def test_yaml_merge_keys(self) -> None:
        """
        YAML anchors and merge keys work; keys a merge overrides are not
        duplicates.
        """
        text = yaml.safe_dump(self.files.minimal()) + (
            "listeners:\n"
            "  - &base {name: a, protocol: dummy, port: 1}\n"
            "  - <<: *base\n"
            "    name: b\n"
            "    port: 2\n"
        )
        config = load_config(self.files.write("gw.yaml", text))
        self.assertEqual([x.port for x in config.listeners], [1, 2])


class FileProblemTests(ConfigTestCase):
    """
    Problems with the file as a whole.
    """

    def test_missing(self) -> None:
        """
        A missing file is one problem naming the file.
        """
        path = self.files["nope.yaml"]
        error = self.assertRaises(ConfigError, load_config, path)
        self.assertEqual(
            error.lines(),
            [f"{path}: cannot read the configuration file: No such file or directory"],
        )

    def test_directory(self) -> None:
        """
        A directory is not a configuration file.
        """
        error = self.assertRaises(ConfigError, load_config, self.files["keys"])
        self.assertEqual(
            error.lines(),
            [
                f"{self.files['keys']}: cannot read the configuration file: "
                "Is a directory"
            ],
        )

    def test_unparseable(self) -> None:
        """
        A YAML syntax error is reported with its line and column.
        """
        self.assertEqual(
            self.problems(None, text="gateway:\n  id: gw-1\n  a: b: c\n"),
            ["line 3, column 7: invalid YAML: mapping values are not allowed here"],
        )

    def test_unclosed(self) -> None:
        """
        A YAML error with context says what the parser was doing.
        """
        self.assertEqual(
            self.problems(None, text="listeners: [1, 2\n"),
            [
                "line 2, column 1: invalid YAML: while parsing a flow sequence "
                "expected ',' or ']', but got '<stream end>'"
            ],
        )

    def test_not_utf8(self) -> None:
        """
        Bytes that are not UTF-8 are a problem, not a traceback.
        """
        self.assertEqual(
            self.problems(None, text=b"gateway: \xff\n"),  # type: ignore[arg-type]
            ["invalid YAML: invalid start byte at byte 9"],
        )

    def test_duplicate_key(self) -> None:
        """
        A key given twice in one mapping is refused rather than silently
        keeping the last value.
        """
        self.assertEqual(
            self.problems(None, text="gateway:\n  id: a\n  id: b\n"),
            ["line 3, column 3: invalid YAML: duplicate key 'id' (first at line 2)"],
        )

    def test_empty(self) -> None:
        """
        An empty file is one problem.
        """
        self.assertEqual(self.problems(None, text="# nothing\n"), ["the file is empty"])

    def test_not_mapping(self) -> None:
        """
        The top level must be a mapping.
        """
        self.assertEqual(
            self.problems(["gateway"]),
            ["expected a mapping at the top level, got a list"],
        )


class KeyProblemTests(ConfigTestCase):
    """
    Problems with individual keys, each reported as one exact line.
    """

    def setUp(self) -> None:
        super().setUp()
        self.data = self.files.minimal()

    def test_file_name_in_line(self) -> None:
        """
        Each line starts with the file name as it was given.
        """
        self.data["gateway"]["idd"] = 1
        path = self.files.save(self.data)
        error = self.assertRaises(ConfigError, load_config, path)
        self.assertEqual(
            error.lines(), [f"{path}: gateway.idd: unknown key (did you mean id?)"]
        )
        self.assertEqual(
            error.problems,
            (Problem(path, "gateway.idd", "unknown key (did you mean id?)"),),
        )
        self.assertEqual(str(error), error.lines()[0])

    def test_unknown_key_suggestion(self) -> None:
        """
        An unknown key close to a known one gets a suggestion.
        """
        self.data["recording"]["seal_intervall"] = "30s"
        self.assertProblem(
            self.data,
            "recording.seal_intervall: unknown key (did you mean seal_interval?)",
        )

    def test_unknown_key(self) -> None:
        """
        An unknown key unlike any known one is just unknown.
        """
        self.data["colour"] = "blue"
        self.assertProblem(self.data, "colour: unknown key")

    def test_unknown_nested_key(self) -> None:
        """
        Unknown keys inside list items carry the item's index.
        """
        self.data["identity"]["issuers"][0]["audiences"] = "x"
        self.assertProblem(
            self.data,
            "identity.issuers[0].audiences: unknown key (did you mean audience?)",
        )

    def test_wrong_type(self) -> None:
        """
        A value of the wrong type names what was expected and what was found.
        """
        self.data["listeners"] = [{"name": "a", "protocol": "dummy", "port": "6432"}]
        self.assertProblem(
            self.data, "listeners[0].port: expected an integer, got a string ('6432')"
        )

    def test_boolean_is_not_integer(self) -> None:
        """
        C{true} is not a port number, although Python thinks it is 1.
        """
        self.data["listeners"] = [{"name": "a", "protocol": "dummy", "port": True}]
        self.assertProblem(
            self.data, "listeners[0].port: expected an integer, got a boolean (true)"
        )

    def test_section_wrong_type(self) -> None:
        """
        A section that is not a mapping is reported once.
        """
        self.data["recording"] = ["directory"]
        self.assertProblem(self.data, "recording: expected a mapping, got a list")

    def test_list_item_wrong_type(self) -> None:
        """
        A list item that is not a mapping is reported with its index.
        """
        self.data["listeners"] = ["pg-main"]
        self.assertProblem(
            self.data, "listeners[0]: expected a mapping, got a string ('pg-main')"
        )

    def test_missing_required_key(self) -> None:
        """
        A required key that is absent is reported by its full path.
        """
        del self.data["gateway"]["id"]
        self.assertProblem(self.data, "gateway.id: required key is missing")

    def test_null_required_key(self) -> None:
        """
        A required key with no value is reported as such.
        """
        self.data["gateway"]["id"] = None
        self.assertProblem(self.data, "gateway.id: a value is required")

    def test_missing_required_section(self) -> None:
        """
        A missing section is one problem, not one per key inside it.
        """
        del self.data["recording"]
        self.assertProblem(self.data, "recording: required key is missing")

    def test_bad_gateway_id(self) -> None:
        """
        The gateway id is limited to a safe alphabet.
        """
        self.data["gateway"]["id"] = "gw/1"
        self.assertProblem(
            self.data,
            "gateway.id: 'gw/1' is not valid (1 to 64 characters of A-Z a-z 0-9 . _ -)",
        )

    def test_bad_duration(self) -> None:
        """
        An unparseable duration shows examples.
        """
        self.data["recording"]["seal_interval"] = "30 secs"
        self.assertProblem(
            self.data,
            "recording.seal_interval: '30 secs' is not a duration "
            "(examples: 200ms, 30s, 15m, 2h, 1h30m)",
        )

    def test_duration_without_unit(self) -> None:
        """
        A bare number is not a duration: the unit would be a guess.
        """
        self.data["recording"]["flush_interval"] = 200
        self.assertProblem(
            self.data,
            "recording.flush_interval: 200 needs a unit, for example 200s or 200ms "
            "(units: ms, s, m, h, d)",
        )

    def test_duration_wrong_type(self) -> None:
        """
        A duration is text (or zero), not a list.
        """
        self.data["recording"]["seal_interval"] = ["30s"]
        self.assertProblem(
            self.data, "recording.seal_interval: expected a duration, got a list"
        )

    def test_size_wrong_type(self) -> None:
        """
        A size is text or a whole number, not a fraction.
        """
        self.data["recording"]["segment_max_bytes"] = 1.5
        self.assertProblem(
            self.data,
            "recording.segment_max_bytes: expected a size, got a number (1.5)",
        )

    def test_zero_duration(self) -> None:
        """
        Intervals that must be positive refuse zero.
        """
        self.data["recording"]["seal_interval"] = 0
        self.assertProblem(self.data, "recording.seal_interval: must be more than 0")

    def test_leeway_maximum(self) -> None:
        """
        The clock-skew leeway is at most five minutes.
        """
        self.data["identity"]["issuers"][0]["leeway"] = "301s"
        self.assertProblem(
            self.data,
            "identity.issuers[0].leeway: 301s is more than the maximum of 5m",
        )

    def test_bad_size(self) -> None:
        """
        An unknown size unit lists the known ones.
        """
        self.data["recording"]["segment_max_bytes"] = "16MiBs"
        self.assertProblem(
            self.data,
            "recording.segment_max_bytes: '16MiBs' has an unknown unit 'MiBs' "
            "(units: B, kB, MB, GB, TB, KiB, MiB, GiB, TiB)",
        )

    def test_zero_size(self) -> None:
        """
        A segment cannot be empty.
        """
        self.data["recording"]["segment_max_bytes"] = 0
        self.assertProblem(
            self.data,
            "recording.segment_max_bytes: 0 bytes is less than the minimum of 1 byte",
        )

    def test_no_issuers(self) -> None:
        """
        At least one issuer must be trusted.
        """
        self.data["identity"]["issuers"] = []
        self.assertProblem(
            self.data, "identity.issuers: at least one issuer is required"
        )

    def test_duplicate_issuer(self) -> None:
        """
        An issuer can only be configured once.
        """
        issuers = self.data["identity"]["issuers"]
        issuers.append(copy.deepcopy(issuers[0]))
        self.assertProblem(
            self.data,
            "identity.issuers[1].issuer: https://idp.example.com/realms/main is "
            "already configured by identity.issuers[0]",
        )

    def test_issuer_not_url(self) -> None:
        """
        The issuer is an http(s) URL.
        """
        self.data["identity"]["issuers"][0]["issuer"] = "idp.example.com"
        self.assertProblem(
            self.data,
            "identity.issuers[0].issuer: 'idp.example.com' is not an http:// or "
            "https:// URL",
        )

    def test_empty_audience(self) -> None:
        """
        An empty audience list would accept no token at all.
        """
        self.data["identity"]["issuers"][0]["audience"] = []
        self.assertProblem(self.data, "identity.issuers[0].audience: must not be empty")

    def test_audience_item_type(self) -> None:
        """
        Audiences are strings; a bad item is reported by its index.
        """
        self.data["identity"]["issuers"][0]["audience"] = ["a", 7]
        self.assertProblem(
            self.data,
            "identity.issuers[0].audience[1]: expected a string, got an integer (7)",
        )

    def test_algorithms(self) -> None:
        """
        C{none} is never allowed, unknown algorithms get a suggestion and HS*
        needs a shared secret.
        """
        self.data["identity"]["issuers"][0]["algorithms"] = ["RS265", "none", "HS256"]
        self.assertEqual(
            self.problems(self.data),
            [
                "identity.issuers[0].algorithms[0]: unknown algorithm 'RS265' "
                "(did you mean RS256?)",
                "identity.issuers[0].algorithms[1]: 'none' is never allowed",
                "identity.issuers[0].algorithms[2]: HS256 needs hs256_secret_file",
            ],
        )

    def test_jwks_file_missing(self) -> None:
        """
        A JWKS file that does not exist is reported by its resolved path.
        """
        self.data["identity"]["issuers"][0]["jwks_file"] = "/x/jwks.json"
        self.assertProblem(
            self.data, "identity.issuers[0].jwks_file: /x/jwks.json does not exist"
        )

    def test_jwks_file_not_json(self) -> None:
        """
        A JWKS file must be JSON.
        """
        self.files.write("jwks.json", "{")
        self.data["identity"]["issuers"][0]["jwks_file"] = "jwks.json"
        self.assertProblem(
            self.data,
            f"identity.issuers[0].jwks_file: {self.files['jwks.json']} is not valid "
            "JSON: Expecting property name enclosed in double quotes: "
            "line 1 column 2 (char 1)",
        )

    def test_jwks_file_without_keys(self) -> None:
        """
        A JWKS file must have a C{keys} list.
        """
        self.files.write("jwks.json", '{"kid": "x"}')
        self.data["identity"]["issuers"][0]["jwks_file"] = "jwks.json"
        self.assertProblem(
            self.data,
            f'identity.issuers[0].jwks_file: {self.files["jwks.json"]} has no "keys" '
            "list",
        )

    def test_short_secret(self) -> None:
        """
        An HS256 secret shorter than 32 bytes is refused.
        """
        self.files.write("secret", "x" * 31 + "\n")
        self.data["identity"]["issuers"][0]["hs256_secret_file"] = "secret"
        self.assertProblem(
            self.data,
            f"identity.issuers[0].hs256_secret_file: {self.files['secret']} holds 31 "
            "bytes; an HS256 secret needs at least 32",
        )

    def test_ca_file_is_directory(self) -> None:
        """
        A path that must name a file cannot name a directory.
        """
        self.data["identity"]["issuers"][0]["ca_file"] = "keys"
        self.assertProblem(
            self.data,
            f"identity.issuers[0].ca_file: {self.files['keys']} is not a file",
        )

    def test_signing_keys_not_directory(self) -> None:
        """
        The signing key directory must exist and be a directory.
        """
        self.data["recording"]["signing_keys"] = "root.pub"
        self.assertProblem(
            self.data,
            f"recording.signing_keys: {self.files['root.pub']} is not a directory",
        )

    def test_root_public_key_missing(self) -> None:
        """
        Each root public key must exist; the bad one is named by index.
        """
        self.data["recording"]["root_public_keys"] = ["root.pub", "old.pub"]
        self.assertProblem(
            self.data,
            f"recording.root_public_keys[1]: {self.files['old.pub']} does not exist",
        )

    def test_no_root_public_keys(self) -> None:
        """
        Recordings cannot be verified without a root public key.
        """
        self.data["recording"]["root_public_keys"] = []
        self.assertProblem(self.data, "recording.root_public_keys: must not be empty")

    def test_recording_directory_is_file(self) -> None:
        """
        The recording directory cannot be a file.
        """
        self.data["recording"]["directory"] = "root.pub"
        self.assertProblem(
            self.data,
            f"recording.directory: {self.files['root.pub']} is not a directory",
        )

    def test_recording_directory_uncreatable(self) -> None:
        """
        A recording directory below a file cannot be created.
        """
        self.data["recording"]["directory"] = "root.pub/rec/x"
        self.assertProblem(
            self.data,
            f"recording.directory: {self.files['root.pub/rec/x']} cannot be "
            f"created: {self.files['root.pub']} is not a directory",
        )

    def test_no_directory_for_bad_config(self) -> None:
        """
        Nothing is created for a configuration that has problems.
        """
        self.data["recording"]["directory"] = "var/rec"
        self.data["gateway"]["id"] = ""
        self.assertProblem(self.data, "gateway.id: must not be empty")
        self.assertFalse(os.path.exists(self.files["var"]))

    def test_index_parent_missing(self) -> None:
        """
        The index file's directory must exist.
        """
        self.data["recording"]["index"] = "db/index.sqlite3"
        self.assertProblem(
            self.data, f"recording.index: {self.files['db']} does not exist"
        )

    def test_tls_files(self) -> None:
        """
        TLS certificate and key must both be given and exist.
        """
        self.data["listeners"] = [
            {"name": "a", "protocol": "dummy", "port": 1, "tls": {"key": "nokey.pem"}}
        ]
        self.assertEqual(
            self.problems(self.data),
            [
                "listeners[0].tls.certificate: required key is missing",
                f"listeners[0].tls.key: {self.files['nokey.pem']} does not exist",
            ],
        )

    def test_bad_address(self) -> None:
        """
        Listeners listen on IP addresses.
        """
        self.data["admin"] = {"address": "localhost"}
        self.assertProblem(self.data, "admin.address: 'localhost' is not an IP address")

    def test_port_range(self) -> None:
        """
        Ports are between 0 and 65535.
        """
        self.data["admin"] = {"port": 65536}
        self.assertProblem(self.data, "admin.port: 65536 is not between 0 and 65535")


class ListenerProblemTests(ConfigTestCase):
    """
    Problems with listeners, targets and protocols.
    """

    def setUp(self) -> None:
        super().setUp()
        self.data = self.files.minimal()

    def listener(self, name: str, port: int, **extra: Any) -> dict[str, Any]:
        """
        A listener entry for the dummy protocol.
        """
        return {"name": name, "protocol": "dummy", "port": port, **extra}

    def test_duplicate_port(self) -> None:
        """
        Two listeners on the same address and port clash; the line names the
        first one.
        """
        self.data["listeners"] = [
            self.listener("pg-main", 6432),
            self.listener("pg-other", 6432),
        ]
        self.assertProblem(
            self.data,
            "listeners[1].port: 6432 is already used by listeners[0] (pg-main)",
        )

    def test_same_port_other_address(self) -> None:
        """
        The same port on two different addresses does not clash.
        """
        self.data["listeners"] = [
            self.listener("a", 6432, address="127.0.0.1"),
            self.listener("b", 6432, address="127.0.0.2"),
            self.listener("c", 6432, address="::1"),
        ]
        config = load_config(self.files.save(self.data))
        self.assertEqual(len(config.listeners), 3)

    def test_wildcard_address(self) -> None:
        """
        A wildcard address takes the port on every address.
        """
        self.data["listeners"] = [
            self.listener("a", 6432, address="127.0.0.1"),
            self.listener("b", 6432, address="0.0.0.0"),
            self.listener("c", 7000, address="::"),
            self.listener("d", 7000, address="10.0.0.1"),
        ]
        self.assertEqual(
            self.problems(self.data),
            [
                "listeners[1].port: 6432 is already used by listeners[0] (a)",
                "listeners[3].port: 7000 is already used by listeners[2] (c)",
            ],
        )

    def test_admin_port(self) -> None:
        """
        The admin API cannot take a listener's port.
        """
        self.data["listeners"] = [self.listener("pg-main", 8080)]
        self.data["admin"] = {"port": 8080}
        self.assertProblem(
            self.data, "admin.port: 8080 is already used by listeners[0] (pg-main)"
        )

    def test_port_zero(self) -> None:
        """
        Port 0 (any free port) is never a duplicate.
        """
        self.data["listeners"] = [self.listener("a", 0), self.listener("b", 0)]
        self.data["admin"] = {"port": 0}
        config = load_config(self.files.save(self.data))
        self.assertEqual([x.port for x in config.listeners], [0, 0])

    def test_duplicate_listener_name(self) -> None:
        """
        Listener names are unique.
        """
        self.data["listeners"] = [self.listener("pg", 1), self.listener("pg", 2)]
        self.assertProblem(
            self.data, "listeners[1].name: pg is already used by listeners[0]"
        )

    def test_duplicate_target_name(self) -> None:
        """
        Target names are unique (but may equal a listener's name).
        """
        target = {
            "name": "db",
            "protocol": "dummy",
            "options": {"host": "h", "allow_groups": ["*"]},
        }
        self.data["listeners"] = [self.listener("db", 1)]
        self.data["targets"] = [target, target]
        self.assertProblem(
            self.data, "targets[1].name: db is already used by targets[0]"
        )

    def test_unknown_protocol(self) -> None:
        """
        A protocol name that is not registered is reported with a
        suggestion; its options are not examined.
        """
        self.data["listeners"] = [
            {"name": "a", "protocol": "dumy", "port": 1, "options": {"x": 1}}
        ]
        self.assertProblem(
            self.data,
            "listeners[0].protocol: unknown protocol 'dumy' (did you mean dummy?)",
        )

    def test_unknown_protocol_lists_known(self) -> None:
        """
        Without a close match, the known protocols are listed.
        """
        use_dummy_protocol(self, "other")
        self.data["targets"] = [{"name": "a", "protocol": "zzz"}]
        known = ", ".join(protocol_names())
        self.assertIn("dummy, http, kubernetes, other", known)
        self.assertProblem(
            self.data,
            f"targets[0].protocol: unknown protocol 'zzz' (known: {known})",
        )

    def test_adapter_nested_options(self) -> None:
        """
        Sections an adapter opens inside its options are checked for unknown
        keys too, without the adapter asking.
        """
        self.data["listeners"] = [
            self.listener("a", 1, options={"limits": {"rows": 0, "colums": 2}})
        ]
        self.assertEqual(
            self.problems(self.data),
            [
                "listeners[0].options.limits.rows: 0 is less than 1",
                "listeners[0].options.limits.colums: unknown key",
            ],
        )

    def test_adapter_problems(self) -> None:
        """
        Problems an adapter finds in its options carry the full key path, and
        option keys it never read are unknown.
        """
        self.data["listeners"] = [
            self.listener("a", 1, options={"greeting": 5, "timeot": "1s"})
        ]
        self.data["targets"] = [
            {"name": "t", "protocol": "dummy", "options": {"allow_groups": ["*"]}}
        ]
        self.assertEqual(
            self.problems(self.data),
            [
                "listeners[0].options.greeting: expected a string, got an integer (5)",
                "listeners[0].options.timeot: unknown key (did you mean timeout?)",
                "targets[0].options.host: required key is missing",
            ],
        )


class TokenLifetimeConfigTests(ConfigTestCase):
    """
    C{identity.max_token_lifetime} and the targets'
    C{end_session_at_token_expiry}.
    """

    def setUp(self) -> None:
        super().setUp()
        self.data = self.files.minimal()

    def test_defaults(self) -> None:
        """
        Tokens may be valid for a day; sessions end with their token.
        """
        self.data["targets"] = [
            {
                "name": "db",
                "protocol": "dummy",
                "options": {"host": "h", "allow_groups": ["*"]},
            }
        ]
        config = load_config(self.files.save(self.data))
        self.assertEqual(config.identity.max_token_lifetime, 86400.0)
        self.assertIs(config.targets[0].end_session_at_token_expiry, True)

    def test_set(self) -> None:
        """
        Both keys are read.
        """
        self.data["identity"]["max_token_lifetime"] = "2h"
        self.data["targets"] = [
            {
                "name": "db",
                "protocol": "dummy",
                "options": {"host": "h", "allow_groups": ["*"]},
                "end_session_at_token_expiry": False,
            }
        ]
        config = load_config(self.files.save(self.data))
        self.assertEqual(config.identity.max_token_lifetime, 7200.0)
        self.assertIs(config.targets[0].end_session_at_token_expiry, False)

    def test_bad_values(self) -> None:
        """
        A lifetime must be positive and at most a year; the target's
        choice is true or false.
        """
        self.data["identity"]["max_token_lifetime"] = 0
        self.data["targets"] = [
            {
                "name": "db",
                "protocol": "dummy",
                "options": {"host": "h", "allow_groups": ["*"]},
                "end_session_at_token_expiry": "yes",
            }
        ]
        self.assertEqual(
            self.problems(self.data),
            [
                "identity.max_token_lifetime: must be more than 0",
                "targets[0].end_session_at_token_expiry: expected true or false,"
                " got a string ('yes')",
            ],
        )
        self.data = self.files.minimal()
        self.data["identity"]["max_token_lifetime"] = "366d"
        self.assertProblem(
            self.data,
            "identity.max_token_lifetime: 366d is more than the maximum of 365d",
        )


class ManyProblemsTests(ConfigTestCase):
    """
    All problems in a file are reported together.
    """

    def test_many(self) -> None:
        """
        One load reports every problem, in the order of the file's sections.
        """
        data = self.files.minimal()
        data["gateway"]["id"] = ""
        data["identity"]["issuers"][0]["leeway"] = "1h"
        data["identity"]["max_token_bytes"] = "lots"
        del data["recording"]["signing_keys"]
        data["recording"]["seal_intervall"] = "30s"
        data["listeners"] = [
            {"name": "pg-main", "protocol": "dummy", "port": 6432},
            {"name": "pg-main", "protocol": "dummy", "port": 6432},
        ]
        data["extra"] = True
        self.assertEqual(
            self.problems(data),
            [
                "gateway.id: must not be empty",
                "identity.max_token_bytes: 'lots' is not a size "
                "(examples: 4096, 512KiB, 16MiB, 8MB)",
                "identity.issuers[0].leeway: 1h is more than the maximum of 5m",
                "recording.signing_keys: required key is missing",
                "recording.seal_intervall: unknown key (did you mean seal_interval?)",
                "listeners[1].name: pg-main is already used by listeners[0]",
                "listeners[1].port: 6432 is already used by listeners[0] (pg-main)",
                "extra: unknown key",
            ],
        )


class ProtocolRegistryTests(SynchronousTestCase):
    """
    Tests for the protocol adapter registry.
    """

    def test_register(self) -> None:
        """
        A registered adapter is found by name until it is unregistered.
        """
        adapter = use_dummy_protocol(self, "test-registry")
        self.assertIs(get_protocol("test-registry"), adapter)
        self.assertIn("test-registry", protocol_names())
        unregister_protocol("test-registry")
        self.assertRaises(KeyError, get_protocol, "test-registry")
        self.assertNotIn("test-registry", protocol_names())

    def test_register_twice(self) -> None:
        """
        A name can only be registered once.
        """
        use_dummy_protocol(self, "test-twice")
        self.assertRaises(ValueError, register_protocol, DummyAdapter("test-twice"))

    def test_register_checks_interface(self) -> None:
        """
        Only objects providing L{IProtocolAdapter} can be registered.
        """
        from zope.interface.exceptions import Invalid

        self.assertRaises(Invalid, register_protocol, object())


class DurationTests(SynchronousTestCase):
    """
    Tests for L{parse_duration} and L{parse_size}.
    """

    def test_durations(self) -> None:
        """
        Durations with units become seconds.
        """
        for text, seconds in [
            ("200ms", 0.2),
            ("30s", 30.0),
            ("15m", 900.0),
            ("2h", 7200.0),
            ("1d", 86400.0),
            ("1h30m", 5400.0),
            ("1.5s", 1.5),
            (" 5 s ", 5.0),
            (0, 0.0),
            ("0s", 0.0),
        ]:
            self.assertEqual(parse_duration(text), seconds, text)

    def test_bad_durations(self) -> None:
        """
        Text that is not a duration raises L{ValueError}.
        """
        for value in ["", "s", "30", "-5s", "5x", "5 sec", 5, 1.5, True, ["1s"]]:
            self.assertRaises(ValueError, parse_duration, value)

    def test_sizes(self) -> None:
        """
        Sizes with decimal or binary units become bytes.
        """
        for text, size in [
            (4096, 4096),
            ("4096", 4096),
            ("512B", 512),
            ("8kB", 8000),
            ("8MB", 8_000_000),
            ("1GB", 10**9),
            ("16KiB", 16384),
            ("16MiB", 16 * 1024**2),
            ("1gib", 1024**3),
            ("1.5KiB", 1536),
            ("2TiB", 2 * 1024**4),
        ]:
            self.assertEqual(parse_size(text), size, text)

    def test_bad_sizes(self) -> None:
        """
        Text that is not a whole number of bytes raises L{ValueError}.
        """
        for value in ["", "MB", "1.5B", "-1", -1, "5 bits", 1.5, True]:
            self.assertRaises(ValueError, parse_size, value)


class RecordingSpaceConfigTests(ConfigTestCase):
    """
    C{recording.reserve_bytes} and C{recording.preallocate}.
    """

    def test_defaults(self) -> None:
        """A 256 MiB reserve, and preallocated segments."""
        config = load_config(self.files.save(self.files.minimal()))
        self.assertEqual(config.recording.reserve_bytes, 256 * 1024 * 1024)
        self.assertTrue(config.recording.preallocate)

    def test_set(self) -> None:
        """Both keys are read."""
        data = self.files.minimal()
        data["recording"].update(reserve_bytes="2GiB", preallocate=False)
        config = load_config(self.files.save(data))
        self.assertEqual(config.recording.reserve_bytes, 2 * 1024**3)
        self.assertFalse(config.recording.preallocate)

    def test_bad_values(self) -> None:
        """Each bad value is one problem line."""
        data = self.files.minimal()
        data["recording"].update(reserve_bytes="lots", preallocate="yes")
        problems = self.problems(data)
        self.assertEqual(len(problems), 2, problems)
        self.assertTrue(problems[0].startswith("recording.reserve_bytes: "), problems)
        self.assertTrue(problems[1].startswith("recording.preallocate: "), problems)
