"""
Tests for C{gatehouse sessions}, C{gatehouse replay} and C{gatehouse export}
(L{gatehouse.recording.cli_sessions}), over a real index and real segment
files.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import time
import uuid

import yaml
from twisted.internet import reactor
from twisted.internet.defer import gatherResults, inlineCallbacks

from gatehouse.recording.cli_sessions import parse_time
from gatehouse.recording.format import Direction, RecordType
from gatehouse.recording.index import CommandRow, SessionIndex, SessionRow
from gatehouse.recording.render import register_renderer, unregister_renderer
from tests.recording.helpers import Rec, make_signing, write_session
from tests.recording.test_cli_keys import CLITestCase

NOW = time.time()
ADA = "0192f1a0-0000-7000-8000-0000000000a1"
BOB = "0192f1a0-0000-7000-8000-0000000000b2"
CI = "0192f1a0-0000-7000-8000-0000000000c3"


class ParseTimeTests(CLITestCase):
    """The times C{--since} and C{--until} accept."""

    def test_iso(self):
        """ISO 8601 dates and times, UTC unless they say otherwise."""
        self.assertEqual(parse_time("2026-11-22"), 1795305600.0)
        self.assertEqual(parse_time("2026-11-22T10:00"), 1795341600.0)
        self.assertEqual(parse_time("2026-11-22T10:00:00Z"), 1795341600.0)
        self.assertEqual(parse_time("2026-11-22T12:00+02:00"), 1795341600.0)

    def test_relative(self):
        """-2h, -30m, -7d, +1d and now are relative to the present."""
        for text, offset in [
            ("-2h", -7200),
            ("-30m", -1800),
            ("-7d", -7 * 86400),
            ("+1d", 86400),
            ("-1h30m", -5400),
            ("now", 0),
        ]:
            self.assertApproximates(parse_time(text), time.time() + offset, 5)

    def test_bad(self):
        """Anything else is a usage error with examples."""
        for text in ("yesterday", "2026-13-01", ""):
            e = self.assertRaises(argparse.ArgumentTypeError, parse_time, text)
            self.assertIn(f"{text!r} is not a time (examples:", str(e))
        e = self.assertRaises(argparse.ArgumentTypeError, parse_time, "-2x")
        self.assertIn("'2x' is not a duration", str(e))


class SessionsTests(CLITestCase):
    """C{gatehouse sessions} over an index filled by the daemon's writer."""

    @inlineCallbacks
    def setUp(self):
        # Relative filters (--since -3h) are read against the real clock
        # when the test runs, so the fixture's times must be fresh too.
        global NOW
        NOW = time.time()
        directory = os.path.abspath(self.mktemp())
        os.makedirs(directory)
        self.index = os.path.join(directory, "index.sqlite3")
        idx = SessionIndex(self.index, reactor)
        yield idx.start()

        def row(sid, **fields):
            values = {
                "id": sid,
                "gateway_id": "gw-1",
                "listener": "main",
                "directory": "/rec/" + sid,
                "client_address": "10.0.0.1:5000",
            }
            values.update(fields)
            return SessionRow(**values)

        results = yield gatherResults(
            [
                idx.session_opened(
                    row(
                        ADA,
                        protocol="postgres",
                        target="orders-db",
                        subject="u-ada",
                        display_name="Ada Lovelace",
                        started=NOW - 5 * 3600,
                    )
                ),
                idx.command_seen(
                    CommandRow(
                        session_id=ADA,
                        seq=4,
                        at=NOW - 5 * 3600 + 3,
                        kind="DeleteStmt",
                        text="DELETE FROM public.users WHERE id = 7",
                        decision="review",
                        objects=("public.users",),
                    )
                ),
                idx.segment_sealed(ADA, 0, b"a" * 32, False, 10),
                idx.segment_sealed(ADA, 1, b"b" * 32, True, 2),
                idx.session_closed(ADA, NOW - 5 * 3600 + 3725, "client-exit"),
                idx.session_opened(
                    row(
                        BOB,
                        protocol="ssh",
                        target="bastion",
                        subject="u-bob",
                        display_name="Bob",
                        started=NOW - 3600,
                    )
                ),
                idx.command_seen(
                    CommandRow(
                        session_id=BOB,
                        seq=9,
                        at=NOW - 3500,
                        kind="exec",
                        text="systemctl restart nginx",
                        decision="allow",
                    )
                ),
                idx.session_opened(
                    row(
                        CI,
                        protocol="postgres",
                        target="orders-db",
                        subject="svc-ci",
                        started=NOW - 3 * 3600,
                    )
                ),
                idx.command_seen(
                    CommandRow(
                        session_id=CI,
                        seq=2,
                        at=NOW - 3 * 3600 + 1,
                        kind="SelectStmt",
                        text="SELECT * FROM orders",
                        decision="allow",
                        objects=("public.orders",),
                    )
                ),
                idx.session_closed(CI, NOW - 3 * 3600 + 12.5, "eof"),
            ]
        )
        self.assertEqual(set(results), {True})
        yield idx.stop()

    def listed(self, *filters: str) -> list[str]:
        code, out, err = self.run_cli("sessions", "--index", self.index, *filters)
        self.assertEqual((code, err), (0, ""))
        return [line.split()[0] for line in out.splitlines()[1:]]

    def test_table(self):
        """
        One line per session, newest first: id, start (UTC), duration,
        subject and display name side by side, target, upstream role,
        protocol, segments, status.
        """
        code, out, err = self.run_cli("sessions", "--index", self.index)
        self.assertEqual((code, err), (0, ""))
        lines = out.splitlines()
        self.assertEqual(
            lines[0].split(),
            "ID STARTED (UTC) DURATION SUBJECT NAME TARGET ROLE PROTOCOL "
            "SEGMENTS STATUS".split(),
        )
        self.assertEqual([line.split()[0] for line in lines[1:]], [BOB, CI, ADA])
        started = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(NOW - 5 * 3600))
        ada = lines[3]
        self.assertIn(started, ada)
        for cell in ("1h02m05s", "u-ada", "Ada Lovelace", "orders-db", "postgres"):
            self.assertIn(cell, ada)
        self.assertEqual(ada.split()[-3:], ["2", "closed", "(client-exit)"])
        self.assertIn("12.5s", lines[2])
        self.assertIn(" svc-ci ", lines[2])
        self.assertEqual(lines[1].split()[-2:], ["0", "open"])

    def test_filters(self):
        """Each filter narrows the list."""
        self.assertEqual(self.listed("--identity", "u-ada"), [ADA])
        self.assertEqual(self.listed("--identity", "u-ad"), [])
        self.assertEqual(self.listed("--identity", "Ada Lovelace"), [])
        self.assertEqual(self.listed("--name", "lovelace"), [ADA])
        self.assertEqual(self.listed("--target", "orders-db"), [CI, ADA])
        self.assertEqual(self.listed("--protocol", "ssh"), [BOB])
        self.assertEqual(self.listed("--command", "restart"), [BOB])
        self.assertEqual(self.listed("--kind", "deletestmt"), [ADA])
        self.assertEqual(self.listed("--touched", "orders"), [CI])
        self.assertEqual(
            self.listed("--touched", "users", "--kind", "DeleteStmt"), [ADA]
        )
        self.assertEqual(self.listed("--limit", "1"), [BOB])
        self.assertEqual(self.listed("--limit", "0"), [BOB, CI, ADA])

    def test_time_filters(self):
        """--since and --until take ISO 8601 and relative times."""
        self.assertEqual(self.listed("--since", "-2h"), [BOB])
        self.assertEqual(self.listed("--since=-3h"), [BOB, CI])
        self.assertEqual(self.listed("--until", "-2h"), [CI, ADA])
        since = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(NOW - 3 * 3600 - 300))
        self.assertEqual(self.listed("--since", since, "--until", "-90m"), [CI])

    def test_nothing_matches(self):
        """No match is not an error."""
        code, out, _ = self.run_cli(
            "sessions", "--index", self.index, "--identity", "nobody"
        )
        self.assertEqual((code, out), (0, "no matching sessions\n"))

    def test_json(self):
        """--json prints every field, times as ISO 8601 and Unix seconds."""
        code, out, err = self.run_cli(
            "sessions", "--index", self.index, "--json", "--protocol", "postgres"
        )
        self.assertEqual((code, err), (0, ""))
        sessions = json.loads(out)
        self.assertEqual([s["id"] for s in sessions], [CI, ADA])
        ada = sessions[1]
        self.assertEqual(ada["display_name"], "Ada Lovelace")
        self.assertEqual(ada["segments"], 2)
        self.assertEqual(ada["records"], 12)
        self.assertEqual(ada["last_link"], (b"b" * 32).hex())
        self.assertTrue(ada["final"])
        self.assertEqual(ada["started_unix"], NOW - 5 * 3600)
        self.assertTrue(ada["started"].endswith("Z"))
        self.assertEqual(ada["close_reason"], "client-exit")

    def test_config(self):
        """--config finds the index the configuration names (or implies)."""
        base = os.path.abspath(self.mktemp())
        os.makedirs(os.path.join(base, "keys"))
        with open(os.path.join(base, "root.pub"), "w") as f:
            f.write("placeholder\n")
        config = {
            "gateway": {"id": "gw-1"},
            "identity": {
                "issuers": [{"issuer": "https://idp.example", "audience": "gatehouse"}]
            },
            "recording": {
                "directory": "recordings",
                "index": self.index,
                "signing_keys": "keys",
                "root_public_keys": ["root.pub"],
            },
        }
        path = os.path.join(base, "gw.yaml")
        with open(path, "w") as f:
            yaml.safe_dump(config, f)
        code, out, err = self.run_cli("sessions", "--config", path, "--protocol", "ssh")
        self.assertEqual((code, err), (0, ""))
        self.assertIn(BOB, out)
        self.assertFalse(os.path.exists(os.path.join(base, "recordings")))

    def test_errors(self):
        """A missing index fails in one line; bad arguments are usage errors."""
        missing = os.path.abspath(self.mktemp())
        code, _, err = self.run_cli("sessions", "--index", missing)
        self.assertFails(code, 1, err, missing, "no such index")
        code, _, err = self.run_cli(
            "sessions", "--index", self.index, "--since", "soon"
        )
        self.assertEqual(code, 2)
        self.assertIn("not a time", err)
        self.assertEqual(self.run_cli("sessions")[0], 2)
        self.assertEqual(
            self.run_cli("sessions", "--index", self.index, "--limit", "-3")[0], 2
        )


class ReplayExportTests(CLITestCase):
    """C{gatehouse replay} and C{gatehouse export} over written segment files."""

    def setUp(self):
        self.root = os.path.abspath(self.mktemp())
        self.signing = make_signing()
        self.meta = {"protocol": "testproto", "target": "orders-db", "user": "ada"}
        records = [
            Rec(json.dumps(self.meta).encode(), RecordType.META, Direction.GATEWAY),
            Rec(b"SELECT 1;\n"),
            Rec(b"\x00\x01\x02binary\xff" * 3, direction=Direction.UPSTREAM_TO_GATEWAY),
            Rec(b'{"event": "decision", "decision": "allow"}', RecordType.EVENT, 0),
            Rec(b"ok\n", direction=Direction.GATEWAY_TO_CLIENT, channel=2),
            Rec(b'{"reason": "client-exit"}', RecordType.CLOSE, Direction.GATEWAY),
        ]
        self.written = write_session(self.root, self.signing, records, seal_every=2)
        self.sid = str(self.written.session_id)

    def test_replay(self):
        """Every record, rendered in order, across segments."""
        code, out, err = self.run_cli("replay", self.sid, "--recordings", self.root)
        self.assertEqual((code, err), (0, ""))
        lines = out.splitlines()
        self.assertIn("gw  META  ", lines[0])
        self.assertIn('"protocol": "testproto"', lines[0])
        self.assertIn("#1  client→gw  DATA  10 bytes", lines[1])
        self.assertEqual(lines[2], "    SELECT 1;")
        self.assertIn("#2  upstream→gw  DATA  30 bytes", lines[3])
        self.assertTrue(lines[4].startswith("    00000000  00 01 02 62"), lines[4])
        self.assertIn('EVENT  {"event": "decision"', out)
        self.assertIn("#4  gw→client  ch2  DATA  3 bytes", out)
        self.assertIn('CLOSE  {"reason": "client-exit"}', lines[-1])
        self.assertGreater(len(self.written.paths), 2)

    def test_replay_uses_protocol_renderer(self):
        """The renderer registered for the session's protocol is used."""

        def renderer(records, out):
            out.write(f"{sum(1 for _ in records)} testproto records\n")

        register_renderer("testproto", renderer)
        self.addCleanup(unregister_renderer, "testproto")
        code, out, _ = self.run_cli("replay", self.sid, "--recordings", self.root)
        self.assertEqual((code, out), (0, "6 testproto records\n"))

    def test_replay_unclosed(self):
        """A recording without its CLOSE record replays, with a note."""
        written = write_session(
            self.root, self.signing, [b"one", b"two"], close=False, seal_every=1
        )
        code, out, err = self.run_cli(
            "replay", str(written.session_id), "--recordings", self.root
        )
        self.assertEqual(code, 0)
        self.assertIn("one", out)
        self.assertIn("two", out)
        self.assertEqual(err.count("\n"), 1)
        self.assertIn("CLOSE", err)

    def test_export_stdout(self):
        """JSONL on stdout: payloads round-trip, times are absolute."""
        code, out, err = self.run_cli("export", self.sid, "--recordings", self.root)
        self.assertEqual((code, err), (0, ""))
        objects = [json.loads(line) for line in out.splitlines()]
        self.assertEqual(
            [base64.b64decode(o["payload"]) for o in objects],
            [r.payload for r in self.written.records],
        )
        self.assertEqual({o["session_id"] for o in objects}, {self.sid})
        self.assertEqual(objects[0]["json"], self.meta)
        # The helpers' clock starts at 22:13:21 and moves 1 ms per record.
        self.assertEqual(objects[0]["time"], "2023-11-14T22:13:21.001000Z")
        self.assertEqual(objects[0]["type"], "META")
        self.assertEqual(objects[4]["channel"], 2)

    def test_export_file(self):
        """-o writes the file (and nothing else) and says how many records."""
        target = os.path.join(self.root, "out.jsonl")
        code, out, err = self.run_cli(
            "export",
            self.sid,
            "--recordings",
            self.root,
            "--format",
            "jsonl",
            "-o",
            target,
        )
        self.assertEqual((code, out), (0, ""))
        self.assertIn("6 records written", err)
        with open(target) as f:
            self.assertEqual(len(f.read().splitlines()), 6)
        self.assertFalse(os.path.exists(target + ".partial"))

    def test_not_found(self):
        """An unknown session or directory fails in one line."""
        other = str(uuid.UUID("0192f1a0-0000-7000-8000-0000000000ff"))
        for command in ("replay", "export"):
            code, _, err = self.run_cli(command, other, "--recordings", self.root)
            self.assertFails(code, 1, err, other)
            missing = os.path.join(self.root, "nope")
            code, _, err = self.run_cli(command, self.sid, "--recordings", missing)
            self.assertFails(code, 1, err, "no such recording directory")

    def test_bad_session_id(self):
        """Something that is not a session id is a usage error."""
        code, _, err = self.run_cli("replay", "not-an-id", "--recordings", self.root)
        self.assertEqual(code, 2)
        self.assertIn("not a session id", err)
        code, _, _ = self.run_cli(
            "export", self.sid, "--recordings", self.root, "--format", "csv"
        )
        self.assertEqual(code, 2)


#: Text a hostile client or token chooses: terminal escapes (CSI in 7-bit
#: and 8-bit form, OSC), carriage return and backspace to overwrite a line,
#: newlines to forge lines, a bidirectional override, undecodable bytes
#: (surrogateescape), a NUL, and a backslash spelling a fake escape.
NASTY = (
    "\x1b[2J\x1b[1;1H",
    "ok\rEVIL",
    "ab\b\bxy",
    "line1\nFAKE 0192f1a0 row",
    "\x9b31m\x1b]0;title\x07",
    "\u202eevil\u2028",
    "bad\udcffbyte\x00nul",
    "\\x1b[31m fake",
)


def _raw_controls(text: str) -> list[str]:
    """Characters in C{text} that are neither printable nor a newline."""
    return [ch for ch in text if not ch.isprintable() and ch != "\n"]


class HostileSessionsTests(CLITestCase):
    """
    C{gatehouse sessions} with hostile identities, targets and reasons:
    the subject is always shown, --identity matches only the subject, and
    nothing printed can drive the auditor's terminal.
    """

    ADA = "0192f1a0-0000-7000-8000-0000000001a1"
    SPOOF = "0192f1a0-0000-7000-8000-0000000001b2"

    @inlineCallbacks
    def setUp(self):
        directory = os.path.abspath(self.mktemp())
        os.makedirs(directory)
        self.index = os.path.join(directory, "index.sqlite3")
        idx = SessionIndex(self.index, reactor)
        yield idx.start()
        now = time.time()

        def row(sid, **fields):
            values = {
                "id": sid,
                "gateway_id": "gw-1",
                "listener": "main",
                "protocol": "postgres",
                "directory": "/rec/" + sid,
                "started": now,
            }
            values.update(fields)
            return SessionRow(**values)

        ds = [
            idx.session_opened(
                row(self.ADA, subject="u-ada", display_name="Ada", target="db")
            ),
            # A token whose name claim is another identity's subject.
            idx.session_opened(
                row(self.SPOOF, subject="u-mallory", display_name="u-ada", target="db")
            ),
        ]
        self.nasty_ids = []
        for n, value in enumerate(NASTY):
            sid = f"0192f1a0-0000-7000-8000-0000000002{n:02x}"
            self.nasty_ids.append(sid)
            ds += [
                idx.session_opened(
                    row(
                        sid,
                        subject=f"u-{n}{value}",
                        display_name=value,
                        target=value,
                        started=now + n + 1,
                    )
                ),
                idx.session_upstream(sid, value),
                idx.session_closed(sid, now + 100, value),
            ]
        results = yield gatherResults(ds)
        self.assertEqual(set(results), {True})
        yield idx.stop()

    def sessions(self, *args: str) -> str:
        code, out, err = self.run_cli("sessions", "--index", self.index, *args)
        self.assertEqual((code, err), (0, ""))
        return out

    def test_subject_always_shown(self):
        """
        A display name equal to another identity's subject never stands in
        for the spoofer's own subject, and --identity finds only the real
        one; --name finds both (it searches claims).
        """
        out = self.sessions("--limit", "0")
        (spoof,) = [line for line in out.splitlines() if line.startswith(self.SPOOF)]
        self.assertEqual(spoof.split()[4:6], ["u-mallory", "u-ada"])
        ids = [
            line.split()[0]
            for line in self.sessions("--identity", "u-ada").splitlines()[1:]
        ]
        self.assertEqual(ids, [self.ADA])
        ids = [
            line.split()[0]
            for line in self.sessions("--name", "u-ada").splitlines()[1:]
        ]
        self.assertEqual(ids, [self.SPOOF])

    def test_table_escapes(self):
        """
        One line per session whatever the values hold, no raw control
        character anywhere, and each value readable in escaped form.
        """
        out = self.sessions("--limit", "0")
        self.assertEqual(_raw_controls(out), [])
        lines = out.splitlines()
        self.assertEqual(len(lines), 1 + 2 + len(NASTY))
        self.assertIn("\\x1b[2J\\x1b[1;1H", out)
        self.assertIn("ok\\x0dEVIL", out)
        self.assertIn("ab\\x08\\x08xy", out)
        self.assertIn("line1\\x0aFAKE", out)
        self.assertIn("\\x9b31m\\x1b]0;title\\x07", out)
        self.assertIn("\\u202eevil\\u2028", out)
        self.assertIn("bad\\xffbyte\\x00nul", out)
        # A backslash the client typed is doubled, so it cannot fake one.
        self.assertIn("\\\\x1b[31m", out)
        for sid in self.nasty_ids:
            self.assertEqual(sum(line.startswith(sid) for line in lines), 1)

    def test_identity_exact_with_hostile_subject(self):
        """--identity takes a hostile subject as it is, exactly."""
        for n, value in enumerate(NASTY):
            out = self.sessions("--identity", f"u-{n}{value}")
            self.assertEqual(
                [line.split()[0] for line in out.splitlines()[1:]],
                [self.nasty_ids[n]],
            )

    def test_json_exact(self):
        """--json is plain ASCII JSON; values are the index's (escaped) text."""
        out = self.sessions("--json", "--limit", "0")
        self.assertTrue(out.isascii())
        self.assertEqual(_raw_controls(out), [])
        by_id = {s["id"]: s for s in json.loads(out)}
        for sid, value in zip(self.nasty_ids, NASTY, strict=True):
            got = by_id[sid]
            if "target" in got["escaped"]:
                from gatehouse.recording.index import unescape_index_text

                self.assertEqual(unescape_index_text(got["target"]), value)
            else:
                self.assertEqual(got["target"], value)
            self.assertIn(got["upstream_role"], (value, got["target"]))


class IndexProblemsTests(CLITestCase):
    """A session the index could not fully store is marked in the table."""

    @inlineCallbacks
    def test_marked(self):
        """The STATUS column says [index problems]; --json gives them."""
        directory = os.path.abspath(self.mktemp())
        os.makedirs(directory)
        path = os.path.join(directory, "index.sqlite3")
        idx = SessionIndex(path, reactor)
        yield idx.start()
        sid = "0192f1a0-0000-7000-8000-0000000003a1"
        row = SessionRow(
            id=sid,
            gateway_id="gw-1",
            protocol="postgres",
            listener="main",
            started=time.time(),
            directory="/rec/" + sid,
            subject="u-1",
        )
        results = yield gatherResults(
            [
                idx.session_opened(row),
                idx.command_seen(
                    CommandRow(
                        session_id=sid,
                        seq=2**70,
                        at=time.time(),
                        kind="SelectStmt",
                        text="select 1",
                        decision="allow",
                    )
                ),
            ]
        )
        self.assertEqual(results, [True, False])
        yield idx.stop()
        code, out, err = self.run_cli("sessions", "--index", path)
        self.assertEqual((code, err), (0, ""))
        self.assertTrue(out.splitlines()[1].endswith("open [index problems]"), out)
        code, out, err = self.run_cli("sessions", "--index", path, "--json")
        (session,) = json.loads(out)
        self.assertIn("OverflowError", session["index_problems"])


class HostileReplayTests(CLITestCase):
    """C{gatehouse replay} never writes a recorded peer's control characters."""

    def test_generic_replay_escapes(self):
        """
        Events, data and the META record holding terminal escapes, C1
        controls and bidi overrides replay escaped; export keeps them exact.
        """
        root = os.path.abspath(self.mktemp())
        meta = {"protocol": "nosuchproto", "target": "\x9b2J\u202e"}
        records = [
            Rec(json.dumps(meta, ensure_ascii=False).encode(), RecordType.META, 0),
            Rec(b"SELECT '\x1b[2J\rgone\b';\n"),
            Rec(
                json.dumps(
                    {"event": "x", "v": "\x9b31m\u2028"}, ensure_ascii=False
                ).encode(),
                RecordType.EVENT,
                0,
            ),
            Rec(b'{"reason": "eof"}', RecordType.CLOSE, Direction.GATEWAY),
        ]
        written = write_session(root, make_signing(), records)
        sid = str(written.session_id)
        code, out, err = self.run_cli("replay", sid, "--recordings", root)
        self.assertEqual((code, err), (0, ""))
        self.assertEqual(_raw_controls(out), [])
        self.assertIn("\\x9b2J\\u202e", out)
        self.assertIn("\\x1b[2J\\x0dgone\\x08", out)
        code, out, err = self.run_cli("export", sid, "--recordings", root)
        self.assertEqual((code, err), (0, ""))
        self.assertEqual(_raw_controls(out), [])
        objects = [json.loads(line) for line in out.splitlines()]
        self.assertEqual(len(objects), len(written.records))
        self.assertEqual(objects[2]["json"]["v"], "\x9b31m\u2028")
        self.assertEqual(objects[0]["json"], meta)
        self.assertEqual(objects[1]["text"], "SELECT '\x1b[2J\rgone\b';\n")
