"""
The plain C{http} protocol end to end: the real daemon, curl, and a real
HTTP service (L{tests.fixtures.httpd}) that logs what reached it.
"""

from __future__ import annotations

import atexit
import base64
import hashlib
import json
import os
import shutil
import socket
import ssl
import subprocess
import tempfile
import time

from twisted.trial.unittest import SynchronousTestCase

from tests.fixtures.httpd import HTTPService
from tests.gateway_recordings import events
from tests.protocols.http.harness import HTTPGateway

POLICY = {
    "review": {"approvers": ["approvers"], "timeout": "60s"},
    "rules": [
        {
            "name": "deploys-reviewed",
            "protocols": ["http"],
            "method": ["post"],
            "path": ["/deploy/*"],
            "action": "review",
        },
        {
            "name": "no-admin-deletes",
            "protocols": ["http"],
            "method": ["delete"],
            "path": ["/admin/*"],
            "action": "deny",
            "message": "deleting admin objects is not for this gateway",
        },
    ],
}


class PlainHTTPTests(SynchronousTestCase):
    """One gateway and one service for the class."""

    gw: HTTPGateway
    service: HTTPService

    def setUp(self) -> None:
        if "gw" not in PlainHTTPTests.__dict__:
            try:
                PlainHTTPTests._start()
            except BaseException:
                PlainHTTPTests._stop()
                raise

    @classmethod
    def _start(cls) -> None:
        cls.directory = tempfile.mkdtemp(prefix="gatehouse-http-")
        cls.service = HTTPService(cls.directory)
        cls.service.start()
        secret = os.path.join(cls.directory, "api-key")
        with open(secret, "w") as f:
            f.write("s3cret-upstream-key\n")
        cls.gw = HTTPGateway(
            os.path.join(cls.directory, "gw"),
            targets=[
                {
                    "name": "admin",
                    "protocol": "http",
                    "options": {
                        "allow_groups": ["dba"],
                        "url": cls.service.url,
                        "headers": [{"name": "X-Api-Key", "file": secret}],
                    },
                }
            ],
            policy=POLICY,
            listener_options={"target": "admin", "record_body_bytes": "64KiB"},
        )
        atexit.register(cls._stop)
        cls.gw.start()

    @classmethod
    def _stop(cls) -> None:
        try:
            if "gw" in cls.__dict__:
                cls.gw.stop()
                del cls.gw
        finally:
            cls.service.stop()
            if not os.environ.get("GATEHOUSE_TEST_KEEP"):
                shutil.rmtree(cls.directory, ignore_errors=True)

    def seen_since(self, count: int) -> list[dict]:
        return self.service.seen()[count:]

    def test_get(self) -> None:
        """
        A GET reaches the service with the gateway's key and without the
        client's token; the answer comes back; the recording has both.
        """
        before = len(self.service.seen())
        started = time.time()
        token = self.gw.token()
        result = self.gw.curl("/things?x=1", token=token, target="admin")
        self.assertEqual(result.status, 200, result)
        seen = self.seen_since(before)
        self.assertEqual(len(seen), 1)
        headers = dict(seen[0]["headers"])
        self.assertEqual(headers["x-api-key"], "s3cret-upstream-key")
        self.assertNotIn("authorization", headers)
        self.assertEqual(seen[0]["path"], "/things?x=1")
        self.assertEqual(json.loads(result.body)["path"], "/things?x=1")
        session = self.gw.wait_session(started)
        records = self.gw.export(str(session.id), cli=False)
        request = events(records, "http-request")
        self.assertEqual(request[0]["method"], "GET")
        self.assertEqual(request[0]["target"], "/things?x=1")
        self.assertIn(["authorization", "Bearer [redacted]"], request[0]["headers"])
        response = events(records, "http-response")
        self.assertEqual(response[0]["status"], 200)
        raw = b"".join(
            base64.b64decode(r["payload"])
            for r in records
            if r["type"] == "DATA" and r["direction"] == "gateway_to_client"
        )
        self.assertIn(b"/things?x=1", raw)
        dump = json.dumps(records)
        self.assertNotIn(token, dump)
        self.assertNotIn("s3cret-upstream-key", dump)

    def test_no_token(self) -> None:
        """No token: 401, and nothing reaches the service."""
        before = len(self.service.seen())
        result = self.gw.curl("/things", token=None)
        self.assertEqual(result.status, 401)
        self.assertEqual(self.seen_since(before), [])

    def test_bad_token(self) -> None:
        """A forged token: 401, and nothing reaches the service."""
        before = len(self.service.seen())
        result = self.gw.curl("/things", token=self.gw.token()[:-4] + "AAAA")
        self.assertEqual(result.status, 401)
        self.assertEqual(self.seen_since(before), [])

    def test_denied(self) -> None:
        """A deny rule: 403 naming the rule's message; the service saw nothing."""
        before = len(self.service.seen())
        result = self.gw.curl("/admin/users/7", method="DELETE")
        self.assertEqual(result.status, 403, result)
        self.assertIn(b"deleting admin objects", result.body)
        self.assertEqual(self.seen_since(before), [])
        # Other spellings of the same path: refused (400) or denied (403).
        for path in (
            "/admin//users/7",
            "/admin/./users/7",
            "/x/../admin/users/7",
            "/%61dmin/users/7",
            "/admin%2Fusers/7",
        ):
            result = self.gw.curl(path, method="DELETE")
            self.assertIn(result.status, (400, 403), (path, result))
        self.assertEqual(self.seen_since(before), [])

    def test_post_body(self) -> None:
        """A request body streams to the service intact."""
        before = len(self.service.seen())
        body = os.urandom(300_000)
        result = self.gw.curl("/upload", method="POST", data=body)
        self.assertEqual(result.status, 200, result)
        seen = self.seen_since(before)
        self.assertEqual(seen[0]["body_sha256"], hashlib.sha256(body).hexdigest())

    def test_big_and_streamed(self) -> None:
        """A large answer and a chunked stream come through whole."""
        result = self.gw.curl("/big?bytes=5000000")
        self.assertEqual(result.status, 200)
        self.assertEqual(len(result.body), 5_000_000)
        result = self.gw.curl("/stream?lines=50")
        self.assertEqual(result.status, 200)
        self.assertEqual(result.body.count(b"\n"), 50)

    def test_slow_client_backpressure(self) -> None:
        """
        A client that reads slowly stalls the service's answer instead of
        filling the gateway's memory: its RSS stays within a few MiB while
        a 200 MB answer trickles out.
        """
        process = self.gw.gateway.process
        assert process is not None
        url = self.gw.url + "/big?bytes=200000000"
        slow = subprocess.Popen(
            [
                "curl",
                "-sS",
                "--cacert",
                self.gw.ca_cert,
                "--limit-rate",
                "2M",
                "-H",
                f"Authorization: Bearer {self.gw.token()}",
                "-o",
                "/dev/null",
                url,
            ]
        )
        self.addCleanup(slow.wait)
        self.addCleanup(slow.kill)
        time.sleep(1.0)
        start = rss(process.pid)
        peak = start
        for _ in range(20):
            time.sleep(0.15)
            peak = max(peak, rss(process.pid))
        self.assertIsNone(slow.poll(), "curl finished: it was not slowed")
        self.assertLess(peak - start, 16 << 20, (start, peak))

    def test_token_changed_closes(self) -> None:
        """
        A second token on a connection (another identity, or a renewed
        token): the connection closes unanswered, nothing reaches the
        service, and the recording says why.
        """
        before = len(self.service.seen())
        started = time.time()
        context = ssl.create_default_context(cafile=self.gw.ca_cert)
        with socket.create_connection(("127.0.0.1", self.gw.port)) as raw:
            with context.wrap_socket(raw, server_hostname="localhost") as tls:
                first = self.gw.token("alice")
                tls.sendall(
                    b"GET /one HTTP/1.1\r\nHost: x\r\n"
                    b"Authorization: Bearer " + first.encode() + b"\r\n\r\n"
                )
                answer = tls.recv(65536)
                self.assertTrue(answer.startswith(b"HTTP/1.1 200"), answer)
                while b"/one" not in answer:
                    answer += tls.recv(65536)
                second = self.gw.token("mallory")
                tls.sendall(
                    b"DELETE /two HTTP/1.1\r\nHost: x\r\n"
                    b"Authorization: Bearer " + second.encode() + b"\r\n\r\n"
                )
                self.assertEqual(tls.recv(65536), b"")
        self.assertEqual([r["path"] for r in self.seen_since(before)], ["/one"])
        session = self.gw.wait_session(started)
        records = self.gw.export(str(session.id), cli=False)
        self.assertEqual(len(events(records, "http-token-changed")), 1)
        self.assertEqual(len(events(records, "http-request")), 1)

    def test_review(self) -> None:
        """
        A reviewed request waits (the service sees nothing) until an
        approver approves it with the CLI; then it goes through.
        """
        before = len(self.service.seen())
        client = subprocess.Popen(
            [
                "curl",
                "-sS",
                "--cacert",
                self.gw.ca_cert,
                "-X",
                "POST",
                "-H",
                f"Authorization: Bearer {self.gw.token()}",
                "--data-binary",
                "v42",
                "-o",
                "-",
                "-w",
                "%{http_code}",
                self.gw.url + "/deploy/web?version=42",
            ],
            stdout=subprocess.PIPE,
        )
        self.addCleanup(client.kill)
        request = self.gw.pending("/deploy/web")
        time.sleep(0.3)
        self.assertIsNone(client.poll(), "curl finished while held")
        self.assertEqual(self.seen_since(before), [])
        approved = self.gw.approvals(
            "approve", request["id"], "-m", "CHG-7", token=self.gw.approver()
        )
        self.assertEqual(approved.returncode, 0, approved.stderr)
        out, _ = client.communicate(timeout=30)
        self.assertTrue(out.endswith(b"200"), out)
        [seen] = self.seen_since(before)
        self.assertEqual((seen["method"], seen["body_bytes"]), ("POST", 3))


def rss(pid: int) -> int:
    """A process's resident set size in bytes."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")
