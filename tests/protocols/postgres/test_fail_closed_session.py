"""
More fail-closed branches of the server, driven as in L{test_fail_closed}
(a gateway in this process, real protocol bytes, a hostile target behind
it): a target session that is not what the gateway expects, a target that
breaks the protocol, a second password message, and what a startup packet
asks for that is not passed on.  Each is judged on what the target received
or ran, on the client's bytes, and on the recording.
"""

from __future__ import annotations

import os
import struct

from twisted.internet.defer import inlineCallbacks

from gatehouse.protocols.postgres import codec
from gatehouse.recording.reader import read_records
from tests.protocols.postgres.test_fail_closed import (
    HostileTarget,
    InProcessGatewayTestCase,
    T,
    errors,
    rows,
)


def fatal(
    case: InProcessGatewayTestCase, got: list[tuple[int, bytes]], sqlstate: str
) -> codec.ErrorResponse:
    """The one error among C{got}: a FATAL with C{sqlstate}."""
    [error] = errors(got)
    case.assertEqual((error.severity, error.sqlstate), ("FATAL", sqlstate))
    return error


class UpstreamSessionCheckTests(InProcessGatewayTestCase):
    """
    After its login the target reports how the session reads SQL and who
    it runs as: a session in another role, or with backslashes escaping
    quotes, is not used (08006) and nothing the client sent reaches it.
    """

    @inlineCallbacks
    def refused_session(self, name: str, value: str):
        """A target reporting C{name} = C{value} after the login."""

        class Impostor(HostileTarget):
            def startup(self, conn, message):
                conn.write(
                    codec.AuthenticationOk(),
                    codec.ParameterStatus("server_version", "15.0"),
                    codec.ParameterStatus("client_encoding", "UTF8"),
                    codec.ParameterStatus("standard_conforming_strings", "on"),
                    codec.ParameterStatus("session_authorization", self.user),
                    # the last report of a parameter is the one that holds
                    codec.ParameterStatus(name, value),
                    codec.BackendKeyData(4242, b"\0\0\0\1"),
                    codec.ReadyForQuery("I"),
                )

        target = Impostor()
        yield self.start_gateway([self.target("hostile", target.listen(self))])
        client = self.client()
        got = yield self.in_thread(
            client.refused, self.files.token(), "hostile", b"DELETE FROM accounts"
        )
        error = fatal(self, got, "08006")
        self.assertIn(name, error.message)
        self.assertNotIn(T.READY_FOR_QUERY, [t for t, _ in got])
        self.assertEqual(target.queries, [])
        [conn] = target.connections
        self.assertNotIn(b"DELETE", bytes(conn.received))
        yield self.assert_still_serving()
        row = yield self.session()
        self.assertEqual(
            row.close_reason, f"upstream session check failed: {name} = {value!r}"
        )

    def test_other_session_authorization(self):
        """The session runs as another role than the one the gateway logged in."""
        return self.refused_session("session_authorization", "postgres")

    def test_standard_conforming_strings_off(self):
        """
        Backslashes escape quotes (the gateway asks for on in its startup
        packet, so only a target that ignores it gets here).
        """
        return self.refused_session("standard_conforming_strings", "off")


class UpstreamProtocolViolationTests(InProcessGatewayTestCase):
    """
    A target that sends a malformed message: the session ends (08P01), and
    nothing from the target after the bad header reaches the client.
    """

    @inlineCallbacks
    def test_bad_header_from_target(self):
        class Broken(HostileTarget):
            def query(self, conn, sql):
                conn.write(
                    codec.RowDescription([codec.FieldDescription("x")]),
                    codec.DataRow([b"before"]),
                    # a length word of 2: no message is that short
                    b"D" + struct.pack("!I", 2),
                    codec.DataRow([b"after-violation"]),
                    codec.CommandComplete("SELECT 2"),
                    codec.ReadyForQuery("I"),
                )

        target = Broken()
        yield self.start_gateway([self.target("hostile", target.listen(self))])
        client = self.client()

        def talk():
            client.login(self.files.token(), "hostile")
            return client.query("SELECT x") + client.messages()

        got = yield self.in_thread(talk)
        self.assertTrue(client.closed)
        error = fatal(self, got, "08P01")
        self.assertIn("malformed", error.message)
        self.assertNotIn(b"after-violation", bytes(client.received))
        self.assertNotIn(T.READY_FOR_QUERY, [t for t, _ in got])
        self.assertEqual(target.queries, [b"SELECT x"])
        yield self.assert_still_serving()
        row = yield self.session()
        self.assertTrue(
            row.close_reason.startswith("upstream protocol violation: "),
            row.close_reason,
        )
        self.assertNotIn(b"after-violation", self.to_client(row))


class LatePasswordTests(InProcessGatewayTestCase):
    """
    A second password message after the login: likely a secret, so it
    reaches neither the target nor the recording, and the session ends
    (08P01) before what the client sent after it runs.
    """

    @inlineCallbacks
    def test_password_after_login(self):
        target = HostileTarget()
        yield self.start_gateway([self.target("hostile", target.listen(self))])
        client = self.client()
        secret = b"second-secret-" + os.urandom(8).hex().encode()

        def talk():
            client.login(self.files.token(), "hostile")
            client.send(
                codec.encode_message(b"p", secret + b"\0")
                + codec.Query("SELECT 'after-password'").encode()
            )
            return client.messages()

        got = yield self.in_thread(talk)
        self.assertTrue(client.closed)
        fatal(self, got, "08P01")
        self.assertEqual(rows(got), [])
        self.assertEqual(target.queries, [])
        [conn] = target.connections
        self.assertNotIn(secret, bytes(conn.received))
        self.assertNotIn(b"after-password", bytes(conn.received))
        yield self.assert_still_serving()
        row = yield self.session()
        recorded = b"".join(r.payload for r in read_records(row.directory))
        self.assertNotIn(secret, recorded)
        self.assertEqual(
            row.close_reason, "password message after authentication (not recorded)"
        )
        self.assert_verifies(row)


class StartupRefusalTests(InProcessGatewayTestCase):
    """
    What a client's startup packet asks for that the gateway does not pass
    on is refused at startup (0A000), before any target is contacted: a
    replication connection (a WAL stream, commands the policy does not
    read), or startup parameters that change the role or how SQL is read.
    """

    @inlineCallbacks
    def refused_at_startup(self, parameters: dict[str, str], why: str):
        target = HostileTarget()
        yield self.start_gateway([self.target("hostile", target.listen(self))])
        client = self.client()

        def talk():
            client.send(
                codec.StartupMessage(
                    {"user": "alice", "database": "hostile", **parameters}
                ).encode()
            )
            got = client.messages(until=T.AUTHENTICATION)
            if got and got[-1][0] == T.AUTHENTICATION:
                # not refused: log in, and send what must not run
                client.send(
                    codec.PasswordMessage(self.files.token()).encode()
                    + codec.Query("DELETE FROM accounts").encode()
                )
            return got + client.messages()

        got = yield self.in_thread(talk)
        self.assertTrue(client.closed)
        error = fatal(self, got, "0A000")
        self.assertIn(why, error.message)
        self.assertEqual([t for t, _ in got], [T.ERROR_RESPONSE])
        self.assertEqual(target.connections, [])
        yield self.assert_still_serving()

    def test_replication_refused(self):
        return self.refused_at_startup({"replication": "database"}, "replication")

    def test_role_in_options_refused(self):
        return self.refused_at_startup({"options": "-c role=postgres"}, "role")

    def test_standard_conforming_strings_off_refused(self):
        return self.refused_at_startup(
            {"standard_conforming_strings": "off"}, "standard_conforming_strings"
        )


class UpstreamLoginChoiceTests(InProcessGatewayTestCase):
    """
    A target that maps upstream roles to groups only (no default user):
    an identity allowed on the target but in none of those groups is
    refused (28000) and the target is never contacted.
    """

    @inlineCallbacks
    def test_no_upstream_credentials(self):
        target = HostileTarget()
        password_file = os.path.abspath(self.mktemp())
        with open(password_file, "w") as f:
            f.write("not-for-dba\n")
        options = self.target(
            "hostile",
            target.listen(self),
            allow_groups=["dba", "agents"],
            credentials=[
                {
                    "groups": ["agents"],
                    "user": "gw_trust",
                    "password_file": password_file,
                }
            ],
        )
        del options["options"]["user"]
        yield self.start_gateway([options])
        client = self.client()
        got = yield self.in_thread(
            client.refused, self.files.token(), "hostile", b"DELETE FROM accounts"
        )
        fatal(self, got, "28000")
        self.assertNotIn(T.READY_FOR_QUERY, [t for t, _ in got])
        self.assertEqual(target.connections, [])
        yield self.assert_still_serving()
        row = yield self.session()
        self.assertEqual(
            row.close_reason,
            "no upstream credentials for the groups of 'alice' on target 'hostile'",
        )
