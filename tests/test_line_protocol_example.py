"""
The embedded custom protocol in examples/line_protocol.py, run for real: a
gateway built from a config in this process, a line service upstream, a
client that authenticates with a JWT.
"""

from __future__ import annotations

import importlib.util
import os
import socket
import time

import jwt
import yaml
from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import TestCase

from gatehouse._pgcluster import free_port
from gatehouse.config import load_config
from gatehouse.protocols import register_protocol, unregister_protocol
from gatehouse.recording import keys
from gatehouse.recording.index import commands_for, query_sessions
from gatehouse.recording.reader import read_records
from gatehouse.recording.verify import verify_session
from gatehouse.service import makeService

_EXAMPLE = os.path.join(
    os.path.dirname(__file__), os.pardir, "examples", "line_protocol.py"
)
SECRET = b"a-shared-secret-of-at-least-32-bytes!!"


def _load_example():
    spec = importlib.util.spec_from_file_location("line_protocol_example", _EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class Upper(Protocol):
    """The line service: answers each line in upper case; keeps what it read."""

    def dataReceived(self, data: bytes) -> None:
        self.factory.received.append(data)
        self.transport.write(data.upper())


class LineProtocolExampleTests(TestCase):
    """
    A custom protocol gets identity, decisions, recording and the index
    from the core; a line the policy denies never reaches the target.
    """

    @inlineCallbacks
    def test_relay_recorded(self):
        base = os.path.abspath(self.mktemp())
        os.makedirs(base)
        register_protocol(_load_example().LineAdapter())
        self.addCleanup(unregister_protocol, "lines")

        received: list[bytes] = []
        service_factory = Factory.forProtocol(Upper)
        service_factory.received = received
        upstream = reactor.listenTCP(0, service_factory, interface="127.0.0.1")
        self.addCleanup(upstream.stopListening)
        root = keys.generate_root_key()
        keys.save_root_key(root, f"{base}/root.key", f"{base}/root.pub")
        now = time.time_ns()
        keys.KeyDirectory(f"{base}/signing").add(
            keys.issue_epoch_keys(root, "gw-lines", now - 10**9, 3600 * 10**9, 2)
        )
        with open(f"{base}/secret", "wb") as f:
            f.write(SECRET)
        port = free_port()
        config = {
            "gateway": {"id": "gw-lines"},
            "identity": {
                "issuers": [
                    {
                        "issuer": "https://idp.test",
                        "audience": "gatehouse",
                        "algorithms": ["HS256"],
                        "hs256_secret_file": f"{base}/secret",
                    }
                ]
            },
            "recording": {
                "directory": f"{base}/recordings",
                "signing_keys": f"{base}/signing",
                "root_public_keys": [f"{base}/root.pub"],
            },
            "policy": {
                "opaque": "deny",
                "rules": [
                    {
                        "name": "no-drop",
                        "protocols": ["lines"],
                        "text": "^drop ",
                        "action": "deny",
                    }
                ],
            },
            "listeners": [
                {
                    "name": "lines",
                    "protocol": "lines",
                    "port": port,
                    "options": {"target": "inventory"},
                }
            ],
            "targets": [
                {
                    "name": "inventory",
                    "protocol": "lines",
                    "options": {
                        "host": "127.0.0.1",
                        "port": upstream.getHost().port,
                        "allow_groups": ["ops"],
                    },
                }
            ],
        }
        with open(f"{base}/gw.yaml", "w") as f:
            yaml.safe_dump(config, f)
        service = makeService(load_config(f"{base}/gw.yaml"), reactor)
        yield service.startService()
        token = jwt.encode(
            {
                "iss": "https://idp.test",
                "aud": "gatehouse",
                "sub": "olga",
                "groups": ["ops"],
                "exp": int(time.time()) + 300,
            },
            SECRET,
            algorithm="HS256",
        )

        def client() -> bytes:
            with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
                # AUTH and the first line in one packet: the line must wait.
                s.sendall(
                    b"AUTH " + token.encode() + b"\ncount widgets\n"
                    b"drop widgets\nlist gears\n"
                )
                got = b""
                while got.count(b"\n") < 4:
                    chunk = s.recv(4096)
                    if not chunk:
                        break
                    got += chunk
                return got

        answer = yield deferToThread(client)
        # The refusal is the gateway's own answer: it may overtake the
        # target's answer to the line before it.
        self.assertEqual(
            sorted(answer.splitlines()),
            sorted(
                [
                    b"OK",
                    b"COUNT WIDGETS",
                    b'ERR line refused by gatehouse policy rule "no-drop"',
                    b"LIST GEARS",
                ]
            ),
        )
        self.assertEqual(b"".join(received), b"count widgets\nlist gears\n")
        yield service.stopService()

        index = f"{base}/recordings/index.sqlite3"
        (row,) = query_sessions(index)
        self.assertEqual(
            (row.subject, row.protocol, row.target), ("olga", "lines", "inventory")
        )
        self.assertEqual(
            [(c.text, c.decision) for c in commands_for(index, row.id)],
            [
                ("count widgets", "allow"),
                ("drop widgets", "deny"),
                ("list gears", "allow"),
            ],
        )
        report = verify_session(
            row.directory, keys.TrustAnchors.from_files([f"{base}/root.pub"])
        )
        self.assertEqual((report.findings, report.exit_code), ((), 0))
        blob = b"".join(r.payload for r in read_records(row.directory))
        self.assertIn(b"COUNT WIDGETS", blob)
        self.assertNotIn(token.encode(), blob)
