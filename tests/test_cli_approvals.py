"""
Tests for C{gatehouse approvals} (L{gatehouse.cli_approvals}).

The command is a synchronous HTTP client, so it runs in a thread while the
reactor serves a real admin API (see L{tests.admin.test_api.Gateway}).
"""

from __future__ import annotations

import io
import json
import os
import sys
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import TestCase
from twisted.web.resource import Resource
from twisted.web.server import Site
from twisted.web.static import Data

from gatehouse import cli
from gatehouse.admin import make_admin_service, make_admin_site
from gatehouse.config import AdminConfig, TLSConfig
from gatehouse.policy import Command
from tests.admin.test_api import DELETE, DROP, Gateway, listen, review
from tests.fixtures.tls import make_ca


class _Page(Resource):
    isLeaf = True

    def render_GET(self, request: object) -> bytes:
        return b"<html>hello</html>"


class _HangUp(Protocol):
    def connectionMade(self) -> None:
        self.transport.loseConnection()


class ApprovalsCommandTestCase(TestCase):
    """
    Runs C{gatehouse approvals ...} against a gateway's admin API, as bob
    (an approver) unless the environment says otherwise.
    """

    @inlineCallbacks
    def setUp(self) -> Any:
        self.gateway = Gateway(self.mktemp(), index=False)
        yield self.gateway.start()
        self.addCleanup(self.gateway.stop)
        g = self.gateway
        self.site = make_admin_site(
            g.broker, g.verifier, g.metrics, g.sessions, g.clock
        )
        self.url = listen(self, self.site)
        self.environ = {
            name: value
            for name, value in os.environ.items()
            if not name.startswith("GATEHOUSE_")
        }
        self.environ["GATEHOUSE_ADMIN_URL"] = self.url
        self.environ["GATEHOUSE_TOKEN"] = g.tokens["bob"]
        self.patch(os, "environ", self.environ)
        self.stdout = io.StringIO()
        self.stderr = io.StringIO()
        self.patch(sys, "stdout", self.stdout)
        self.patch(sys, "stderr", self.stderr)

    def approvals(self, *argv: str) -> Deferred[int]:
        """Run C{gatehouse approvals ARGV...} in a thread."""
        return deferToThread(cli.main, ["approvals", *argv])

    def output(self) -> tuple[str, str]:
        return self.stdout.getvalue(), self.stderr.getvalue()

    def serve_tls(self) -> tuple[Any, Any, Any]:
        """
        The admin API over TLS with a certificate of a private CA.

        @return: the CA, the certificate and key files, and the service.
        """
        ca = make_ca(self.mktemp())
        certificate, key = ca.issue("admin")
        config = AdminConfig("127.0.0.1", 0, TLSConfig(str(certificate), str(key)))
        service = make_admin_service(config, self.site, reactor)
        service.startService()
        self.addCleanup(service.stopService)
        return ca, (certificate, key), service


class ListTests(ApprovalsCommandTestCase):
    """
    C{gatehouse approvals list}.
    """

    @inlineCallbacks
    def test_empty(self) -> Any:
        self.assertEqual((yield self.approvals("list")), 0)
        self.assertEqual(self.output(), ("no pending approvals\n", ""))

    @inlineCallbacks
    def test_table(self) -> Any:
        """
        Pending requests as an aligned table: id, age, time left,
        requester, target, statement (first line, truncated) and votes.
        """
        first, _ = self.gateway.request()
        self.gateway.clock.advance(90)
        long = Command("postgres", "DeleteStmt", "DELETE FROM t " + "x" * 80)
        second, _ = self.gateway.request((long, DROP), review(approvals=2))
        self.assertEqual((yield self.approvals("list")), 0)
        out, err = self.output()
        self.assertEqual(err, "")
        lines = out.splitlines()
        self.assertEqual(
            lines[0].split(),
            ["ID", "AGE", "EXPIRES", "IN", "REQUESTER", "TARGET", "STATEMENT", "VOTES"],
        )
        expected = f"{first.id} 1m30s 3m30s Alice (alice) db DROP TABLE users; 0/1"
        self.assertEqual(lines[1].split(), expected.split())
        self.assertTrue(lines[2].startswith(second.id))
        self.assertIn("DELETE FROM t xxx", lines[2])
        self.assertIn("… (+1 more)", lines[2])
        self.assertTrue(lines[2].endswith("0/2"))
        self.assertEqual(lines[0].index("VOTES"), lines[1].index("0/1"))
        self.assertEqual(len(lines), 3)

    @inlineCallbacks
    def test_all(self) -> Any:
        """
        C{--all} adds decided requests and a state column.
        """
        self.gateway.request()
        second, _ = self.gateway.request()
        self.assertEqual((yield self.approvals("deny", second.id)), 0)
        self.stdout.truncate(0)
        self.stdout.seek(0)
        self.assertEqual((yield self.approvals("list", "--all")), 0)
        lines = self.stdout.getvalue().splitlines()
        self.assertIn("STATE", lines[0].split())
        self.assertEqual([line.split()[3] for line in lines[1:]], ["pending", "denied"])

    @inlineCallbacks
    def test_json(self) -> Any:
        """
        C{--json} prints what the API said.
        """
        request, _ = self.gateway.request()
        self.assertEqual((yield self.approvals("--json", "list")), 0)
        answer = json.loads(self.stdout.getvalue())
        self.assertEqual(answer["approvals"], [request.as_json()])


class ShowTests(ApprovalsCommandTestCase):
    """
    C{gatehouse approvals show ID}.
    """

    @inlineCallbacks
    def test_show(self) -> Any:
        """
        Everything about a request, with full statements and votes.
        """
        request, _ = self.gateway.request((DROP, DELETE), review(approvals=2))
        self.gateway.clock.advance(30)
        self.gateway.broker.approve(
            request.id, self.gateway.identity("carol"), "fine by me"
        )
        code = yield self.approvals("show", request.id)
        self.assertEqual(code, 0, self.stderr.getvalue())
        out, err = self.output()
        self.assertEqual(err, "")
        self.assertIn(f"id:         {request.id}\n", out)
        self.assertIn("state:      pending\n", out)
        self.assertIn("requester:  Alice (alice)\n", out)
        self.assertIn("target:     db\n", out)
        self.assertIn("approvers:  dba\n", out)
        self.assertIn("approvals:  1 of 2 needed\n", out)
        self.assertIn("(in 4m30s)", out)
        self.assertIn("  [1] DropStmt on public.users\n      DROP TABLE users;\n", out)
        self.assertIn(
            "  [2] DeleteStmt on orders\n      DELETE FROM orders\n      WHERE true;\n",
            out,
        )
        self.assertIn("  approved by Carol (carol) at ", out)
        self.assertIn(": fine by me\n", out)

    @inlineCallbacks
    def test_control_characters_escaped(self) -> Any:
        """
        A statement that tries to rewrite the approver's terminal (CR to
        overwrite the line, ANSI escapes, a C1 CSI, a right-to-left
        override) is shown escaped, in list and show alike.
        """
        sneaky = Command(
            "postgres", "DropStmt", "DROP TABLE users;\r\x1b[2KSELECT 1;\x9b0m\u202e"
        )
        request, _ = self.gateway.request((sneaky,))
        code = yield self.approvals("show", request.id)
        self.assertEqual(code, 0, self.stderr.getvalue())
        self.assertEqual((yield self.approvals("list")), 0)
        out, err = self.output()
        self.assertEqual(err, "")
        self.assertEqual([ch for ch in out if not ch.isprintable() and ch != "\n"], [])
        # show splits the statement into lines (CR ends one), list joins them.
        self.assertIn(
            "      DROP TABLE users;\n      \\x1b[2KSELECT 1;\\x9b0m\\u202e\n", out
        )
        self.assertIn("DROP TABLE users; \\x1b[2KSELECT 1;\\x9b0m\\u202e  0/1", out)

    @inlineCallbacks
    def test_unknown(self) -> Any:
        """
        An unknown id: the server's message, exit status 1.
        """
        self.assertEqual((yield self.approvals("show", "apr-nothere")), 1)
        self.assertEqual(
            self.output(),
            ("", "gatehouse: approvals: there is no approval request apr-nothere\n"),
        )

    @inlineCallbacks
    def test_odd_id(self) -> Any:
        """
        An id is quoted into the URL.
        """
        self.assertEqual((yield self.approvals("show", "../../health")), 1)
        self.assertIn(
            "there is no approval request ../../health", self.stderr.getvalue()
        )


class VoteTests(ApprovalsCommandTestCase):
    """
    C{gatehouse approvals approve|deny ID [-m COMMENT]}.
    """

    @inlineCallbacks
    def test_approve(self) -> Any:
        request, verdict = self.gateway.request()
        self.assertEqual((yield self.approvals("approve", request.id, "-m", "go")), 0)
        self.assertEqual(self.output(), (f"{request.id}: approved\n", ""))
        result = yield verdict
        self.assertTrue(result.approved)
        self.assertEqual(result.request.votes[0].comment, "go")

    @inlineCallbacks
    def test_partial(self) -> Any:
        """
        When more approvals are needed, says how many are in.
        """
        request, verdict = self.gateway.request(decision=review(approvals=2))
        self.assertEqual((yield self.approvals("approve", request.id)), 0)
        self.assertEqual(
            self.output(), (f"{request.id}: 1 of 2 approvals recorded\n", "")
        )
        self.assertNoResult(verdict)

    @inlineCallbacks
    def test_deny(self) -> Any:
        request, verdict = self.gateway.request()
        argv = ("deny", request.id, "--comment", "not today")
        self.assertEqual((yield self.approvals(*argv)), 0)
        self.assertEqual(self.output(), (f"{request.id}: denied\n", ""))
        result = yield verdict
        self.assertFalse(result.approved)
        self.assertIn("not today", result.reason)

    @inlineCallbacks
    def test_options_after_action(self) -> Any:
        """
        Connection options may follow the action, as the instructions the
        gateway gives waiting clients have them.
        """
        del self.environ["GATEHOUSE_ADMIN_URL"]
        request, _ = self.gateway.request()
        argv = ("approve", "--url", self.url, "--json", request.id)
        self.assertEqual((yield self.approvals(*argv)), 0)
        answer = json.loads(self.stdout.getvalue())
        self.assertEqual(answer["approval"]["state"], "approved")

    @inlineCallbacks
    def test_self_approval(self) -> Any:
        """
        A refusal: the server's message on stderr, exit status 1.
        """
        request, verdict = self.gateway.request(decision=review(approvers=("*",)))
        self.environ["GATEHOUSE_TOKEN"] = self.gateway.tokens["alice"]
        self.assertEqual((yield self.approvals("approve", request.id)), 1)
        self.assertEqual(
            self.output(),
            ("", "gatehouse: approvals: you cannot approve or deny your own request\n"),
        )
        self.assertNoResult(verdict)

    @inlineCallbacks
    def test_not_pending(self) -> Any:
        request, _ = self.gateway.request()
        self.assertEqual((yield self.approvals("deny", request.id)), 0)
        self.assertEqual((yield self.approvals("approve", request.id)), 1)
        self.assertIn(
            f"approval request {request.id} is denied", self.stderr.getvalue()
        )


class TokenTests(ApprovalsCommandTestCase):
    """
    Where the token comes from.
    """

    @inlineCallbacks
    def test_none(self) -> Any:
        """
        No token anywhere: an error naming every way to give one.
        """
        del self.environ["GATEHOUSE_TOKEN"]
        self.assertEqual((yield self.approvals("list")), 1)
        err = self.stderr.getvalue()
        for name in ("--token-file", "GATEHOUSE_TOKEN", "GATEHOUSE_TOKEN_FILE"):
            self.assertIn(name, err)

    @inlineCallbacks
    def test_files(self) -> Any:
        """
        C{--token-file} wins over the environment; C{GATEHOUSE_TOKEN_FILE}
        is read when C{GATEHOUSE_TOKEN} is not set.
        """
        request, _ = self.gateway.request(decision=review(approvals=2))
        carol = self.mktemp()
        with open(carol, "w") as f:
            f.write(self.gateway.tokens["carol"] + "\n")
        self.assertEqual(
            (yield self.approvals("approve", "--token-file", carol, request.id)), 0
        )
        del self.environ["GATEHOUSE_TOKEN"]
        bob = self.mktemp()
        with open(bob, "w") as f:
            f.write(self.gateway.tokens["bob"])
        self.environ["GATEHOUSE_TOKEN_FILE"] = bob
        self.assertEqual((yield self.approvals("approve", request.id)), 0)
        voters = [v.subject for v in self.gateway.broker.get(request.id).votes]
        self.assertEqual(voters, ["carol", "bob"])

    @inlineCallbacks
    def test_missing_file(self) -> Any:
        missing = self.mktemp()
        self.assertEqual((yield self.approvals("list", "--token-file", missing)), 1)
        self.assertIn(missing, self.stderr.getvalue())

    @inlineCallbacks
    def test_rejected(self) -> Any:
        """
        A token the gateway rejects: its generic message.
        """
        self.environ["GATEHOUSE_TOKEN"] = "not-a-token"
        self.assertEqual((yield self.approvals("list")), 1)
        self.assertEqual(
            self.stderr.getvalue(), "gatehouse: approvals: authentication failed\n"
        )

    @inlineCallbacks
    def test_not_ascii(self) -> Any:
        self.environ["GATEHOUSE_TOKEN"] = "tøken"
        self.assertEqual((yield self.approvals("list")), 1)
        self.assertIn("GATEHOUSE_TOKEN: not a token", self.stderr.getvalue())


class ConnectionTests(ApprovalsCommandTestCase):
    """
    Problems reaching the admin API.
    """

    @inlineCallbacks
    def test_refused(self) -> Any:
        """
        Nothing listening: a message naming the URL.
        """
        port = reactor.listenTCP(
            0, Factory.forProtocol(Protocol), interface="127.0.0.1"
        )
        url = f"http://127.0.0.1:{port.getHost().port}"
        yield port.stopListening()
        self.assertEqual((yield self.approvals("list", "--url", url)), 1)
        self.assertEqual(
            self.stderr.getvalue(),
            f"gatehouse: approvals: cannot reach the admin API at {url}: connection "
            "refused (is the gateway running, with admin enabled?)\n",
        )

    @inlineCallbacks
    def test_hang_up(self) -> Any:
        """
        A server that closes the connection without answering.
        """
        url = listen(self, Factory.forProtocol(_HangUp))
        self.assertEqual((yield self.approvals("list", "--url", url)), 1)
        self.assertIn(f"cannot reach the admin API at {url}: ", self.stderr.getvalue())

    @inlineCallbacks
    def test_not_the_api(self) -> Any:
        """
        Some other web server: its HTTP error, or an answer that is not the
        API's.
        """
        url = listen(self, Site(Data(b"<html>hello</html>", "text/html")))
        self.assertEqual((yield self.approvals("list", "--url", url)), 1)
        self.assertEqual(
            self.stderr.getvalue(),
            f"gatehouse: approvals: {url} answered HTTP 404 Not Found "
            "(is it a gatehouse admin API?)\n",
        )
        url = listen(self, Site(_Page()))
        self.assertEqual((yield self.approvals("list", "--url", url)), 1)
        self.assertIn(
            f"{url} did not answer like a gatehouse admin API", self.stderr.getvalue()
        )

    @inlineCallbacks
    def test_bad_url(self) -> Any:
        self.assertEqual((yield self.approvals("list", "--url", "ftp://x")), 1)
        self.assertIn("is not an http:// or https:// URL", self.stderr.getvalue())

    @inlineCallbacks
    def test_usage(self) -> Any:
        """
        Usage errors exit with status 2.
        """
        self.assertEqual((yield self.approvals()), 2)
        self.assertEqual((yield self.approvals("approve")), 2)
        self.assertEqual((yield self.approvals("list", "extra")), 2)

    @inlineCallbacks
    def test_https(self) -> Any:
        """
        Over https, C{--ca-file} names the CA to trust; without it the
        server's certificate is not trusted.
        """
        ca, _, service = self.serve_tls()
        request, _ = self.gateway.request()
        argv = ("--url", service.url, "--ca-file", str(ca.cert_path), "list")
        self.assertEqual((yield self.approvals(*argv)), 0)
        self.assertIn(request.id, self.stdout.getvalue())
        self.assertEqual((yield self.approvals("--url", service.url, "list")), 1)
        self.assertIn("TLS certificate not trusted", self.stderr.getvalue())


class ConfigTests(ApprovalsCommandTestCase):
    """
    C{--config FILE} (or C{GATEHOUSE_CONFIG}) reads the admin API's URL and
    what verifies its certificate from the gateway's configuration, so the
    command a held client is shown works as shown with a private CA.
    """

    def setUp(self) -> Any:
        d = super().setUp()
        del self.environ["GATEHOUSE_ADMIN_URL"]
        return d

    def config_file(self, **sections: Any) -> str:
        """
        A gateway configuration with C{sections}; the rest of it names
        files the approver cannot read, which must not matter.
        """
        data = {
            "gateway": {"id": "gw-1"},
            "identity": {
                "issuers": [
                    {
                        "issuer": "https://idp.example.com",
                        "audience": "gatehouse",
                        "hs256_secret_file": "/nonexistent/secret",
                    }
                ]
            },
            "recording": {"directory": "/nonexistent/recordings"},
            **sections,
        }
        path = self.mktemp()
        with open(path, "w") as f:
            json.dump(data, f)  # JSON is YAML
        return path

    @inlineCallbacks
    def test_admin_listener(self) -> Any:
        """
        Without C{approval.admin_url}, the admin listener's address is
        used, and its own certificate is trusted (pinned).
        """
        _, (certificate, key), service = self.serve_tls()
        port = service.port.getHost().port
        path = self.config_file(
            admin={
                "address": "0.0.0.0",
                "port": port,
                "tls": {
                    "certificate": os.path.abspath(certificate),
                    "key": os.path.abspath(key),
                },
            }
        )
        request, _ = self.gateway.request()
        code = yield self.approvals("--config", path, "list")
        self.assertEqual(code, 0, self.stderr.getvalue())
        self.assertIn(request.id, self.stdout.getvalue())
        # After the action, as in the command a held client is shown.
        code = yield self.approvals("approve", "--config", path, request.id)
        self.assertEqual(code, 0, self.stderr.getvalue())
        self.assertEqual(self.gateway.broker.get(request.id).state, "approved")

    @inlineCallbacks
    def test_approval_section(self) -> Any:
        """
        C{approval.admin_url} and C{approval.admin_ca_file} win over the
        admin listener (which need not be reachable from here).
        """
        ca, _, service = self.serve_tls()
        path = self.config_file(
            admin={"address": "10.9.9.9", "port": 1},
            approval={
                "admin_url": service.url.replace("127.0.0.1", "localhost"),
                "admin_ca_file": os.path.abspath(ca.cert_path),
            },
        )
        self.environ["GATEHOUSE_CONFIG"] = path
        request, _ = self.gateway.request()
        code = yield self.approvals("show", request.id)
        self.assertEqual(code, 0, self.stderr.getvalue())
        self.assertIn("DROP TABLE users;", self.stdout.getvalue())

    @inlineCallbacks
    def test_environment(self) -> Any:
        """
        C{GATEHOUSE_ADMIN_URL} and C{GATEHOUSE_ADMIN_CA} need no
        configuration file; C{--url} and C{--ca-file} win over them.
        """
        ca, _, service = self.serve_tls()
        self.environ["GATEHOUSE_ADMIN_URL"] = service.url
        self.environ["GATEHOUSE_ADMIN_CA"] = str(ca.cert_path)
        request, _ = self.gateway.request()
        self.assertEqual((yield self.approvals("list")), 0)
        self.assertIn(request.id, self.stdout.getvalue())
        other = make_ca(self.mktemp())
        code = yield self.approvals("list", "--ca-file", str(other.cert_path))
        self.assertEqual(code, 1)
        self.assertIn("TLS certificate not trusted", self.stderr.getvalue())

    @inlineCallbacks
    def test_problems(self) -> Any:
        """
        A configuration that does not say where the admin API is: one line
        per problem, naming the file and the key.
        """
        path = self.config_file()
        self.assertEqual((yield self.approvals("--config", path, "list")), 1)
        self.assertEqual(
            self.stderr.getvalue(),
            f"gatehouse: approvals: {path}: admin: no admin API is configured here\n",
        )
        self.stderr.truncate(0)
        self.stderr.seek(0)
        path = self.config_file(
            admin={"port": 0}, approval={"admin_ca_file": "/nonexistent/ca.pem"}
        )
        self.assertEqual((yield self.approvals("--config", path, "list")), 1)
        self.assertEqual(
            self.stderr.getvalue().splitlines(),
            [
                f"gatehouse: approvals: {path}: approval.admin_ca_file:"
                " /nonexistent/ca.pem does not exist",
                f"{path}: admin.port: 0 (a free port) cannot be reached from"
                " here: set a port, or approval.admin_url",
            ],
        )


class ApproveOptionsTests(TestCase):
    """
    L{approve_options}: what the command shown to a held client says.
    """

    def config(self, admin: Any = None, **approval: Any) -> Any:
        from gatehouse.config import GatehouseConfig
        from gatehouse.policy.config import ApprovalConfig

        return GatehouseConfig(
            path="/etc/gate house/gw.yaml",
            gateway=None,
            identity=None,
            recording=None,
            admin=admin,
            approval=ApprovalConfig(**approval),
        )

    def test_options(self) -> None:
        from gatehouse.cli_approvals import approve_options
        from gatehouse.policy.approval import instructions

        admin = AdminConfig()
        self.assertEqual(
            approve_options(self.config(admin)),
            ("--config", "/etc/gate house/gw.yaml"),
        )
        self.assertEqual(
            approve_options(self.config(admin, admin_url="https://gw:8443")),
            ("--url", "https://gw:8443"),
        )
        self.assertEqual(
            approve_options(
                self.config(admin_url="https://gw:8443", admin_ca_file="/etc/ca.pem")
            ),
            ("--url", "https://gw:8443", "--ca-file", "/etc/ca.pem"),
        )
        self.assertEqual(approve_options(self.config()), ())
        request = self.gateway_request()
        self.assertEqual(
            instructions(request, options=approve_options(self.config(admin))),
            "approve with: gatehouse approvals approve --config "
            f"'/etc/gate house/gw.yaml' {request.id} (or deny with: gatehouse "
            f"approvals deny --config '/etc/gate house/gw.yaml' {request.id})",
        )

    def gateway_request(self) -> Any:
        from twisted.internet.task import Clock

        from gatehouse.identity import Identity
        from gatehouse.policy.approval import ApprovalBroker

        alice = Identity("alice", "Alice", ("dev",), "https://idp", None)
        broker = ApprovalBroker(Clock())
        request, _ = broker.request("s-1", "postgres", "db", alice, (DROP,), review())
        return request
