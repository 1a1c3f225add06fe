"""
Class 1, parser desync: make PostgreSQL read a statement differently from
the gateway.

Each attack changes how the server reads SQL (standard_conforming_strings
off, a client encoding whose characters swallow a backslash) and, before
the server has said so, sends a statement that the gateway's old reading
takes for one harmless SELECT of string literals while the server's new
reading runs a DROP TABLE (or an UPDATE of every row, or kills a backend)
hidden in it.  Judged on the server: the victim table still there with
every row and column as before, the victim backend alive, the gateway
still serving.
"""

from __future__ import annotations

import socket
import time

import psycopg

from gatehouse.protocols.postgres import codec
from tests.protocols.postgres.attacks.corpus import Attack, add_cases
from tests.protocols.postgres.harness import Gateway
from tests.protocols.postgres.test_e2e import GatewayTestCase, RawClient

POLICY = {
    "policy": {
        "rules": [
            {"name": "no-drop", "kind": ["DropStmt", "TruncateStmt"], "action": "deny"},
            {
                "name": "no-unbounded-writes",
                "kind": ["DeleteStmt", "UpdateStmt"],
                "flag": ["no-where"],
                "action": "deny",
            },
            {
                "name": "no-kill",
                "function": ["pg_terminate_backend", "pg_cancel_backend"],
                "action": "deny",
            },
        ],
        # Permissive on purpose: the attacks must be stopped by the
        # reading, not by a rule against their first step.
        "opaque": "allow",
        "unparseable": "deny",
    }
}

VICTIM = "desync_victim"


def Q(sql: bytes) -> bytes:
    """A simple-protocol Query."""
    return codec.encode_message(b"Q", sql + b"\0")


BIND = codec.encode_message(b"B", b"\0\0" + b"\0\0" + b"\0\0" + b"\0\0")
EXECUTE = codec.encode_message(b"E", b"\0" + b"\0\0\0\0")
SYNC = codec.encode_message(b"S")


def X(sql: bytes) -> bytes:
    """Parse, Bind and Execute of the unnamed statement (no Sync)."""
    return codec.encode_message(b"P", b"\0" + sql + b"\0" + b"\0\0") + BIND + EXECUTE


def hidden(statement: bytes) -> bytes:
    """
    With standard_conforming_strings on (the gateway's reading): two
    string literals.  With it off (the server's): C{statement} runs.
    """
    return b"SELECT 'a\\' AS q, ' ; " + statement + b"; -- '"


def swallowed(char: bytes, statement: bytes) -> bytes:
    """
    Read as UTF-8 or Latin-1: one E'' string (its backslash escapes the
    quote).  Read in an encoding where C{char} (ending in 0x5C) is one
    character: the string ends there and C{statement} runs.
    """
    return b"SELECT E'" + char + b"' ; " + statement + b"; -- '"


def hidden_one(expression: bytes) -> bytes:
    """
    L{hidden} in one statement (the extended protocol takes only one): the
    gateway's reading selects two strings, the server's also computes
    C{expression}.
    """
    return b"SELECT 'a\\' AS q, ' AS x, " + expression + b" AS k --'"


def swallowed_one(char: bytes, expression: bytes) -> bytes:
    """L{swallowed} in one statement."""
    return b"SELECT E'" + char + b"' AS q, " + expression + b" AS k --'"


#: replaced (same length, so messages stay framed) by the victim's pid
PID = b"@@VICTIM@@"
KILL = b"pg_terminate_backend(" + PID + b")"
DROP = b"DROP TABLE " + VICTIM.encode()
WIPE = b"UPDATE " + VICTIM.encode() + b" SET secret = $$pwned$$"
SCS_T = hidden(DROP)
SCS_OFF = b"SET standard_conforming_strings = off"

#: a character ending in a backslash byte, per encoding
SWALLOWERS = {
    "SJIS": "\u4e88".encode("shift_jis"),
    "SHIFT_JIS_2004": "\u4e88".encode("shift_jis_2004"),
    "BIG5": "\u4e48".encode("big5"),
    "GBK": "\u4e57".encode("gbk"),
    "GB18030": "\u4e57".encode("gb18030"),
    "JOHAB": "\u4e6d".encode("johab"),
    # UHC has no backslash trail byte; its trail bytes include letters
    "UHC": "\uac00".encode("cp949"),
}

SCS_SETTERS = {
    "set": SCS_OFF,
    "set_to": b"SET standard_conforming_strings TO off",
    "set_session_false": b"SET SESSION standard_conforming_strings = 'false'",
    "set_zero": b"set STANDARD_CONFORMING_STRINGS = 0",
    "set_config": b"SELECT set_config('standard_conforming_strings', 'off', false)",
    "set_config_qualified": (
        b"SELECT pg_catalog.set_config('standard_conforming_strings', 'no', false)"
    ),
    "pg_settings": (
        b"UPDATE pg_settings SET setting = 'off' "
        b"WHERE name = 'standard_conforming_strings'"
    ),
    "do_block": (
        b"DO $$BEGIN PERFORM set_config('standard_conforming_strings', 'off', "
        b"false); END$$"
    ),
    "user_function": b"SELECT desync_flip()",
    "trigger": b"INSERT INTO desync_trig VALUES (1)",
    "multi_statement": b"SELECT 1; SET standard_conforming_strings = off; SELECT 2",
    "prepare_execute": (
        b"PREPARE flip AS SELECT set_config('standard_conforming_strings', "
        b"'off', false); EXECUTE flip"
    ),
}


def wire(*messages: bytes, ready: int, latin1: bool = False) -> tuple:
    """
    Raw messages sent in one write; C{ready}: ReadyForQuery expected.
    C{latin1}: the session first sets (and waits for) client_encoding
    LATIN1, so that the gateway's old reading decodes every byte.
    """
    return ("wire", b"".join(messages), ready, latin1)


CASES = [
    # -- standard_conforming_strings, every spelling, pipelined ----------
    *(
        Attack(
            f"scs_{name}_pipelined",
            wire(Q(setter), Q(SCS_T), ready=2),
            note=f"{setter!r} then a statement read differently",
        )
        for name, setter in SCS_SETTERS.items()
    ),
    *(
        Attack(
            f"scs_{name}_extended_one_batch",
            wire(X(setter), X(hidden_one(KILL)), SYNC, ready=1),
            note="the extended protocol, one batch: no ParameterStatus before Sync",
        )
        for name in ("set", "set_config", "user_function", "trigger")
        for setter in (SCS_SETTERS[name],)
    ),
    *(
        Attack(
            f"scs_{name}_extended_synced",
            wire(X(setter), SYNC, X(hidden_one(KILL)), SYNC, ready=2),
            note="the extended protocol, a Sync each, pipelined",
        )
        for name in ("set", "set_config", "pg_settings")
        for setter in (SCS_SETTERS[name],)
    ),
    Attack(
        "scs_simple_then_extended",
        wire(Q(SCS_OFF), X(hidden_one(KILL)), SYNC, ready=2),
    ),
    Attack(
        "scs_extended_then_simple",
        wire(X(SCS_OFF), SYNC, Q(SCS_T), ready=2),
    ),
    Attack(
        "scs_set_local_in_transaction",
        wire(
            Q(b"BEGIN"),
            Q(b"SET LOCAL standard_conforming_strings = off"),
            Q(SCS_T),
            Q(b"COMMIT"),
            ready=4,
        ),
        note="SET LOCAL inside BEGIN",
    ),
    Attack(
        "scs_set_local_one_query",
        wire(
            Q(b"BEGIN; SET LOCAL standard_conforming_strings = off"),
            Q(SCS_T),
            Q(b"COMMIT"),
            ready=3,
        ),
    ),
    Attack(
        "scs_update_every_row",
        wire(Q(SCS_OFF), Q(hidden(WIPE)), ready=2),
        note="a hidden UPDATE without WHERE",
    ),
    Attack(
        "scs_dollar_quote",
        wire(Q(SCS_OFF), Q(b"SELECT $q$\\$q$, " + SCS_T[len(b"SELECT ") :]), ready=2),
        note="dollar quotes are not escaped: the text still has backslashes",
    ),
    Attack(
        "scs_u_and_string",
        wire(Q(SCS_OFF), Q(b"SELECT U&'\\0041', " + SCS_T[len(b"SELECT ") :]), ready=2),
    ),
    Attack(
        "scs_comment_backslash",
        wire(Q(SCS_OFF), Q(b"SELECT /* \\' */ " + SCS_T[len(b"SELECT ") :]), ready=2),
    ),
    Attack(
        "scs_line_comment_backslash",
        wire(Q(SCS_OFF), Q(b"-- \\\n" + SCS_T), ready=2),
    ),
    Attack(
        "scs_off_later_statement",
        wire(Q(SCS_OFF), Q(b"SELECT 1"), Q(b"SELECT 2"), Q(SCS_T), ready=4),
        note="the reading change several statements before",
    ),
    Attack(
        "scs_kill_backend",
        ("kill", "scs"),
        note="hidden pg_terminate_backend of another session",
    ),
    Attack("scs_psycopg_pipeline", ("pipeline", [SCS_OFF, hidden_one(KILL)])),
    Attack(
        "scs_psycopg_pipeline_set_config",
        ("pipeline", [SCS_SETTERS["set_config"], hidden_one(KILL)]),
    ),
    Attack(
        "scs_psycopg_pipeline_function",
        ("pipeline", [SCS_SETTERS["user_function"], hidden_one(KILL)]),
    ),
    Attack("scs_psql_script", ("psql", [SCS_OFF, SCS_T])),
    # -- client encodings whose characters swallow a backslash -----------
    *(
        Attack(
            f"encoding_{name.lower()}_pipelined",
            wire(
                Q(b"SET client_encoding TO '" + name.encode() + b"'"),
                Q(swallowed(char, DROP)),
                ready=2,
                latin1=True,
            ),
            note=f"{name}: 0x5C as a trail byte",
        )
        for name, char in SWALLOWERS.items()
    ),
    Attack(
        "encoding_set_names",
        wire(
            Q(b"SET NAMES 'SJIS'"),
            Q(swallowed(SWALLOWERS["SJIS"], DROP)),
            ready=2,
            latin1=True,
        ),
    ),
    Attack(
        "encoding_set_config",
        wire(
            Q(b"SELECT set_config('client_encoding', 'BIG5', false)"),
            Q(swallowed(SWALLOWERS["BIG5"], WIPE)),
            ready=2,
            latin1=True,
        ),
    ),
    Attack(
        "encoding_extended_one_batch",
        wire(
            X(b"SET client_encoding TO 'GBK'"),
            X(swallowed_one(SWALLOWERS["GBK"], KILL)),
            SYNC,
            ready=1,
            latin1=True,
        ),
    ),
    Attack(
        "encoding_extended_synced",
        wire(
            X(b"SET client_encoding TO 'SJIS'"),
            SYNC,
            X(swallowed_one(SWALLOWERS["SJIS"], KILL)),
            SYNC,
            ready=2,
            latin1=True,
        ),
    ),
    Attack(
        "encoding_kill_backend",
        ("kill", "encoding"),
    ),
    Attack(
        "encoding_psycopg_pipeline",
        (
            "pipeline",
            [
                b"SET client_encoding TO 'LATIN1'",
                b"SET client_encoding TO 'SJIS'",
                swallowed_one(SWALLOWERS["SJIS"], KILL),
            ],
        ),
    ),
    # -- the reading at startup and from role/database defaults -----------
    Attack(
        "startup_client_encoding_sjis",
        ("startup", {"client_encoding": "SJIS"}),
    ),
    Attack(
        "startup_client_encoding_alias",
        ("startup", {"client_encoding": "Shift_JIS"}),
    ),
    Attack(
        "startup_options_encoding",
        ("startup", {"options": "-c client_encoding=BIG5"}),
    ),
    Attack(
        "startup_options_scs_off",
        ("startup", {"options": "-c standard_conforming_strings=off"}),
    ),
    Attack(
        "startup_scs_off",
        ("startup", {"standard_conforming_strings": "off"}),
    ),
    Attack("startup_role", ("startup", {"role": "postgres"})),
    Attack(
        "startup_options_session_authorization",
        ("startup", {"options": "--session_authorization=postgres"}),
    ),
    Attack(
        "startup_options_escaped_space",
        (
            "startup",
            {"options": "-c application_name=a\\ -c\\ role=postgres -c role=x"},
        ),
    ),
    Attack(
        "alter_role_scs_off",
        ("role_default", "standard_conforming_strings", "off"),
        note="ALTER ROLE ... SET must not lock sessions out nor change reading",
    ),
    Attack(
        "alter_database_scs_off",
        ("database_default", "standard_conforming_strings", "off"),
    ),
    Attack(
        "alter_role_client_encoding",
        ("role_default", "client_encoding", "SJIS"),
    ),
    # -- what must keep working -----------------------------------------
    Attack(
        "works_non_ascii_after_pipelined",
        wire(Q(b"SELECT 1"), Q("SELECT 'ünïcode-ok'".encode()), ready=2),
        expect="ünïcode-ok".encode(),
    ),
    Attack(
        "works_latin1_after_set",
        wire(
            Q(b"SET client_encoding TO 'LATIN1'"),
            Q("SELECT 'été-latin'".encode("latin-1")),
            ready=2,
        ),
        expect="été-latin".encode("latin-1"),
    ),
    Attack(
        "works_ascii_while_scs_off",
        # Spelled directly, SET standard_conforming_strings = off is a
        # built-in protection's refusal; a user function still flips it.
        wire(Q(SCS_SETTERS["user_function"]), Q(b"SELECT 'plain-ascii-ok'"), ready=2),
        expect=b"plain-ascii-ok",
    ),
    Attack(
        "works_backslash_after_scs_back_on",
        wire(
            Q(SCS_SETTERS["user_function"]),
            Q(b"SET standard_conforming_strings = on"),
            Q(b"SELECT 'back\\slash-ok'"),
            ready=3,
        ),
        expect=b"back\\slash-ok",
    ),
    Attack(
        "works_extended_synced_non_ascii",
        wire(X(b"SELECT 1"), SYNC, X("SELECT 'ext-ünï'".encode()), SYNC, ready=2),
        expect="ext-ünï".encode(),
    ),
]


class DesyncTests(GatewayTestCase):
    """The corpus of class 1, judged on the server's state."""

    def make_gateway(self, base: str) -> Gateway:
        return Gateway(base, self.cluster, extra_config=POLICY)

    def setUp(self) -> None:
        super().setUp()
        self.direct(
            f"drop table if exists {VICTIM}; "
            f"create table {VICTIM} (id int primary key, secret text, note text); "
            f"insert into {VICTIM} select i, 's' || i, 'n' || i "
            "from generate_series(1, 5) i; "
            f"alter table {VICTIM} owner to gw_scram; "
            "drop table if exists desync_trig; "
            "create table desync_trig (x int); "
            "alter table desync_trig owner to gw_scram; "
            "create or replace function desync_flip_trigger() returns trigger "
            "language plpgsql as $$ begin "
            "perform set_config('standard_conforming_strings', 'off', false); "
            "return new; end $$; "
            "create trigger flip before insert on desync_trig "
            "for each row execute function desync_flip_trigger(); "
            "create or replace function desync_flip() returns text "
            "language sql as "
            "$$ select set_config('standard_conforming_strings', 'off', false) $$"
        )
        self.before = self.victim_rows()

    def agent(self) -> str:
        return self.gateway.token(subject="agent-desync", groups=("agents",))

    def victim_rows(self) -> str:
        return self.direct(f"select * from {VICTIM} order by id")

    def assert_intact(self, attack: Attack) -> None:
        self.assertEqual(
            self.direct(f"select to_regclass('{VICTIM}') is not null"),
            "t",
            f"{VICTIM} dropped by {attack.name}",
        )
        self.assertEqual(
            self.victim_rows(), self.before, f"rows changed: {attack.name}"
        )
        self.assert_still_serving()

    # -- delivery ------------------------------------------------------------

    def send_wire(self, data: bytes, ready: int, client=None) -> bytes:
        """Send raw messages in one write; read up to C{ready} ReadyForQuery."""
        own = client is None
        if own:
            client = RawClient(self.gateway.port, self.gateway.ca_cert)
            client.login(self.agent())
        try:
            client.send(data)
            reader = codec.FrameReader.backend()
            got = b""
            seen = 0
            client.sock.settimeout(10)
            while seen < ready:
                try:
                    chunk = client.sock.recv(65536)
                except TimeoutError:
                    self.fail(f"no answer after {seen} ReadyForQuery: {got[-500:]!r}")
                if not chunk:
                    break
                got += chunk
                seen += sum(
                    1
                    for kind, _ in reader.feed_messages(chunk)
                    if kind == codec.BackendType.READY_FOR_QUERY
                )
            return got
        finally:
            if own:
                client.close()

    def run_attack(self, attack: Attack) -> None:
        kind = attack.payload[0]
        with psycopg.connect(self.cluster.dsn(), autocommit=True) as victim:
            self.pid = b"%010d" % victim.info.backend_pid
            getattr(self, f"deliver_{kind}")(attack, *attack.payload[1:])
            time.sleep(0.1)
            self.assertEqual(
                victim.execute("SELECT 'alive'").fetchone(),
                ("alive",),
                f"victim backend killed by {attack.name}",
            )
        self.assert_intact(attack)

    def deliver_wire(
        self, attack: Attack, data: bytes, ready: int, latin1: bool
    ) -> None:
        data = data.replace(PID, self.pid)
        client = RawClient(self.gateway.port, self.gateway.ca_cert)
        try:
            client.login(self.agent())
            if latin1:
                self.send_wire(Q(b"SET client_encoding TO 'LATIN1'"), 1, client)
            got = self.send_wire(data, ready, client)
        finally:
            client.close()
        if attack.expect is not None:
            self.assertIn(attack.expect, got)
            kinds = [k for k, _ in codec.FrameReader.backend().feed_messages(got)]
            self.assertNotIn(codec.BackendType.ERROR_RESPONSE, kinds)

    def deliver_pipeline(self, attack: Attack, statements: list) -> None:
        with psycopg.connect(
            self.gateway.conninfo(), password=self.agent(), autocommit=True
        ) as conn:
            try:
                with conn.pipeline():
                    for sql in statements:
                        conn.execute(sql.replace(PID, self.pid))
            except psycopg.Error:
                pass
            self.assertEqual(conn.execute("SELECT 1").fetchone(), (1,))

    def deliver_psql(self, attack: Attack, statements: list) -> None:
        script = "".join(s.decode() + ";\n" for s in statements)
        self.gateway.psql(
            token=self.agent(), args=("-v", "ON_ERROR_STOP=0"), stdin=script
        )

    def deliver_kill(self, attack: Attack, how: str) -> None:
        kill = b"SELECT " + KILL
        if how == "scs":
            data = Q(SCS_OFF) + Q(hidden(kill))
        else:
            data = Q(b"SET client_encoding TO 'SJIS'") + Q(
                swallowed(SWALLOWERS["SJIS"], kill)
            )
        self.deliver_wire(attack, data, 2, how != "scs")

    def deliver_startup(self, attack: Attack, parameters: dict) -> None:
        client = RawClient(self.gateway.port, self.gateway.ca_cert)
        try:
            client.send(
                codec.StartupMessage(
                    {"user": "alice", "database": "app", **parameters}
                ).encode()
            )
            got = client.read_all()
        finally:
            client.close()
        error = codec.ErrorResponse.decode(
            next(
                body
                for kind, body in codec.FrameReader.backend().feed_messages(got)
                if kind == codec.BackendType.ERROR_RESPONSE
            )
        )
        self.assertEqual((error.severity, error.sqlstate), ("FATAL", "0A000"))
        # refused before the password: no session reached the target
        self.assertNotIn(b"R\0\0\0\x08\0\0\0\x03", got)

    def _with_default(self, scope: str, name: str, value: str, attack: Attack):
        self.direct(f"ALTER {scope} SET {name} = '{value}'")
        try:
            if name == "standard_conforming_strings":
                # The session works, reads backslashes as the gateway does,
                # and the text runs as the harmless SELECT it is.
                got = self.send_wire(Q(SCS_T), 1)
                self.assertIn(b"a\\", got)
                out = self.psql_ok(
                    "SHOW standard_conforming_strings", token=self.agent()
                )
                self.assertIn("on", out)
            else:
                client = RawClient(self.gateway.port, self.gateway.ca_cert)
                try:
                    client.send(
                        codec.StartupMessage(
                            {"user": "alice", "database": "app"}
                        ).encode()
                    )
                    client.expect(b"R")
                    client.send(codec.PasswordMessage(self.agent()).encode())
                    client.send(Q(swallowed(SWALLOWERS["SJIS"], DROP)))
                    got = client.read_all()
                finally:
                    client.close()
                # refused at login, before the pipelined statement
                self.assertIn(b"client_encoding", got)
                self.assertNotIn(b"DROP TABLE", got)
        finally:
            self.direct(f"ALTER {scope} RESET {name}")

    def deliver_role_default(self, attack: Attack, name: str, value: str) -> None:
        self._with_default("ROLE gw_scram", name, value, attack)

    def deliver_database_default(self, attack: Attack, name: str, value: str) -> None:
        self._with_default("DATABASE app", name, value, attack)


add_cases(DesyncTests, CASES)


class ParameterStatusTimingTests(GatewayTestCase):
    """
    The fact the extended-protocol rule rests on, checked on the server
    itself (no gateway): PostgreSQL reports a changed setting only just
    before ReadyForQuery, so a SET run by an Execute is not visible before
    the batch's Sync, not even after a Flush.
    """

    def test_parameter_status_only_at_sync(self) -> None:
        sock = socket.create_connection((self.cluster.host, self.cluster.port), 10)
        reader = codec.FrameReader.backend()

        def read_until(kind: int) -> list:
            kinds: list = []
            while kind not in kinds:
                chunk = sock.recv(65536)
                self.assertTrue(chunk, f"closed; saw {kinds}")
                kinds += [k for k, _ in reader.feed_messages(chunk)]
            return kinds

        try:
            sock.sendall(
                codec.StartupMessage({"user": "gw_trust", "database": "app"}).encode()
            )
            read_until(codec.BackendType.READY_FOR_QUERY)
            sock.sendall(X(SCS_OFF) + codec.encode_message(b"H"))  # Flush
            before_sync = read_until(codec.BackendType.COMMAND_COMPLETE)
            time.sleep(0.3)
            sock.setblocking(False)
            try:
                chunk = sock.recv(65536)
                before_sync += [k for k, _ in reader.feed_messages(chunk)]
            except BlockingIOError:
                pass
            sock.setblocking(True)
            self.assertNotIn(codec.BackendType.PARAMETER_STATUS, before_sync)
            sock.sendall(SYNC)
            after_sync = read_until(codec.BackendType.READY_FOR_QUERY)
            self.assertEqual(
                after_sync[-2:],
                [codec.BackendType.PARAMETER_STATUS, codec.BackendType.READY_FOR_QUERY],
            )
        finally:
            sock.close()


class CopyThenBarrierTests(GatewayTestCase):
    """
    libpq sends a Sync right after an extended-protocol COPY FROM STDIN and
    another after CopyDone; PostgreSQL ignores the first.  The barrier must
    not wait for its ReadyForQuery forever: a non-ASCII statement after
    such a COPY still runs.
    """

    def test_extended_copy_then_non_ascii(self) -> None:
        self.direct(
            "drop table if exists desync_copy; create table desync_copy (v text); "
            "alter table desync_copy owner to gw_scram"
        )
        with psycopg.connect(
            self.gateway.conninfo(),
            password=self.gateway.token(),
            autocommit=True,
        ) as conn:
            with conn.cursor() as cursor:
                with cursor.copy(
                    "COPY desync_copy (v) FROM STDIN WHERE v <> %s", ["skip"]
                ) as copy:
                    copy.write_row(["é-copied"])
                    copy.write_row(["skip"])
                cursor.execute("SELECT 'ünïcode-after-copy'")
                self.assertEqual(cursor.fetchone(), ("ünïcode-after-copy",))
                with cursor.copy("COPY desync_copy (v) FROM STDIN") as copy:
                    copy.write_row(["plain"])
                cursor.execute("SELECT 'ünïcode-after-simple-copy'")
                self.assertEqual(cursor.fetchone(), ("ünïcode-after-simple-copy",))
        self.assertEqual(
            self.direct("select string_agg(v, ',' order by v) from desync_copy"),
            "plain,é-copied",
        )

    def test_raw_extended_copy_as_libpq_sends_it(self) -> None:
        """Parse/Bind/Execute/Sync, CopyData, CopyDone, Sync: as libpq does."""
        self.direct(
            "drop table if exists desync_copy2; create table desync_copy2 (v text); "
            "alter table desync_copy2 owner to gw_scram"
        )
        client = RawClient(self.gateway.port, self.gateway.ca_cert)
        try:
            client.login(self.gateway.token())
            client.send(X(b"COPY desync_copy2 (v) FROM STDIN") + SYNC)
            reader = codec.FrameReader.backend()
            client.sock.settimeout(10)
            kinds: list = []
            while codec.BackendType.COPY_IN_RESPONSE not in kinds:
                kinds += [k for k, _ in reader.feed_messages(client.sock.recv(65536))]
            client.send(
                codec.encode_message(b"d", "é-raw\n".encode())
                + codec.encode_message(b"c")
                + SYNC
            )
            kinds = []
            while codec.BackendType.READY_FOR_QUERY not in kinds:
                kinds += [k for k, _ in reader.feed_messages(client.sock.recv(65536))]
            client.send(Q("SELECT 'ünïcode-after-raw-copy'".encode()))
            got = b""
            while codec.ReadyForQuery("I").encode() not in got:
                chunk = client.sock.recv(65536)
                self.assertTrue(chunk)
                got += chunk
            self.assertIn("ünïcode-after-raw-copy".encode(), got)
        finally:
            client.close()
        self.assertEqual(self.direct("select v from desync_copy2"), "é-raw")
