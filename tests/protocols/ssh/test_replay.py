"""
Tests for the SSH replay and asciicast export
(L{gatehouse.protocols.ssh.replay}), over sessions written with the
recording helpers in the layout of SSH-SPEC: SSH channel n on record
channel n + 1, stderr on that | 0x8000, the gateway's events as JSON.
"""

from __future__ import annotations

import io
import json
import os
import re
import sys
import time
from pathlib import Path
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from gatehouse.cli import main
from gatehouse.protocols.ssh.replay import export_asciicast, render_ssh
from gatehouse.protocols.ssh.replay.layout import STDERR_BIT
from gatehouse.protocols.ssh.replay.transcript import MAX_LINES
from gatehouse.recording import cli_sessions
from gatehouse.recording.format import Direction, Record, RecordType
from gatehouse.recording.render import (
    ExportOptions,
    NoExport,
    Pacer,
    exporter_for,
    render,
    renderer_for,
)
from tests.fixtures.sshd import (
    PtyClient,
    asciinema_cat,
    generate_key,
    shared_sshd,
    ssh_program,
)
from tests.recording.helpers import (
    EXAMPLES,
    NS,
    Rec,
    make_signing,
    write_session,
)
from tests.recording.test_cli_keys import CLITestCase

MS = 1_000_000
IN = Direction.CLIENT_TO_GATEWAY
OUT = Direction.GATEWAY_TO_CLIENT


def meta(**fields: Any) -> Rec:
    body = {
        "session_id": "0192f1a0-0000-7000-8000-00000000551a",
        "protocol": "ssh",
        "listener": "ssh",
        "client_address": "127.0.0.1:50022",
        "gateway_id": "gw-test",
        "started": 1_700_000_001.0,
        **fields,
    }
    return Rec(json.dumps(body).encode(), RecordType.META, Direction.GATEWAY, 0)


def event(channel: int, name: str, delay: int = MS, /, **fields: Any) -> Rec:
    """An event on SSH channel C{channel} (-1: the connection)."""
    body = json.dumps({"event": name, **fields}, sort_keys=True).encode()
    return Rec(body, RecordType.EVENT, Direction.GATEWAY, channel + 1, delay)


def request(channel: int, name: str, delay: int = MS, /, **fields: Any) -> Rec:
    return event(channel, "ssh-request", delay, request=name, **fields)


def data(
    channel: int, direction: int, payload: bytes, delay: int = MS, stderr: bool = False
) -> Rec:
    record_channel = (channel + 1) | (STDERR_BIT if stderr else 0)
    return Rec(payload, RecordType.DATA, direction, record_channel, delay)


def close(reason: str = "client closed the connection") -> Rec:
    body = json.dumps({"reason": reason}).encode()
    return Rec(body, RecordType.CLOSE, Direction.GATEWAY, 0)


AUTHENTICATED = event(
    -1,
    "authenticated",
    subject="u-ada",
    name="Ada",
    groups=["sre"],
    target="web-1",
    issuer="https://idp.example",
)

PROMPT = b"\x1b[1;32mada@web-1\x1b[0m:~$ "
#: What the client's terminal was sent, chunk by chunk, with the delay
#: before each chunk (a UTF-8 character is cut between two chunks).
TERMINAL_OUTPUT = [
    (PROMPT, 300 * MS),
    (b"ls\r\nnotes.txt  caf\xc3", 500 * MS),
    (b"\xa9.txt\r\n" + PROMPT, 2 * NS),
    # A hostile target: sets the title, asks for the cursor position
    # (the answer would be typed into the auditor's shell) and the
    # clipboard, resets the terminal.
    (b"\x1b]0;pwned\x07\x1b[6n\x1b]52;c;ZXZpbA==\x1b\\\x1bcsafe\r\n", 10 * NS),
    (b"logout\r\n", 1 * NS),
]


def terminal_session(
    output: list[tuple[bytes, int]] = TERMINAL_OUTPUT,
) -> list[Rec]:
    """An interactive session: pty, env, shell, typing, a resize, exit 0."""
    records = [
        meta(),
        AUTHENTICATED,
        event(-1, "upstream-connected", account="ada", host_key="SHA256:abc"),
        event(0, "ssh-channel-open", type="session"),
        request(0, "pty-req", term="xterm-256color", cols=80, rows=24),
        request(0, "env", name="LANG", value="C.UTF-8", accepted=True),
        request(0, "shell"),
    ]
    for i, (chunk, delay) in enumerate(output):
        records.append(data(0, OUT, chunk, delay))
        if i == 0:
            records += [data(0, IN, b"l"), data(0, IN, b"s"), data(0, IN, b"\r")]
        if i == 1:
            records.append(
                request(0, "window-change", cols=100, rows=30, width_px=0, height_px=0)
            )
    records += [
        event(0, "ssh-exit", status=0),
        event(0, "ssh-eof", **{"from": "target"}),
        event(0, "ssh-channel-close", **{"from": "target"}),
        close(),
    ]
    return records


def exec_session() -> list[Rec]:
    """Two execs (one held and approved, one denied), with stdout and stderr."""
    return [
        meta(),
        AUTHENTICATED,
        event(0, "ssh-channel-open", type="session"),
        request(0, "env", name="LD_PRELOAD", value="/tmp/x.so", accepted=False),
        request(0, "exec"),
        data(0, IN, b"systemctl restart nginx && journalctl -n 2"),
        event(0, "decision", action="review", rule="restarts", message="needs a 2nd"),
        event(
            0,
            "approval-requested",
            approval_id="ap-1",
            state="pending",
            rule="restarts",
            approvals_required=1,
            approvers=["oncall"],
            commands=["systemctl restart nginx"],
        ),
        event(
            0,
            "approval-approved",
            approval_id="ap-1",
            state="approved",
            rule="restarts",
            approver="u-bob",
            approver_name="Bob",
            approved=True,
            comment="go",
        ),
        data(0, OUT, b"line one\nline "),
        data(0, OUT, b"two\n-- channel 0: exit status 0\n\x1b[2J"),
        data(0, OUT, b"warning: disk\n", stderr=True),
        event(0, "ssh-exit", status=3),
        event(0, "ssh-channel-close", **{"from": "target"}),
        event(1, "ssh-channel-open", type="session"),
        request(1, "exec"),
        data(1, IN, b"rm -rf /\necho done"),
        event(1, "decision", action="deny", rule="no-rm-root", message="never"),
        event(1, "ssh-exit", status=1),
        event(1, "ssh-channel-close", **{"from": "gateway"}, reason="denied"),
        close(),
    ]


def write(test: CLITestCase, records: list[Rec]) -> tuple[str, str]:
    """Write a session; return (recordings root, session id)."""
    root = os.path.abspath(test.mktemp())
    written = write_session(root, make_signing(), records, seal_every=5)
    return root, str(written.session_id)


def replay(test: CLITestCase, records: list[Rec], *flags: str) -> str:
    root, sid = write(test, records)
    code, out, err = test.run_cli("replay", sid, "--recordings", root, *flags)
    test.assertEqual(code, 0, err)
    if records[-1].type == RecordType.CLOSE:
        test.assertEqual(err, "")
    else:
        test.assertIn("ends before the session's CLOSE record", err)
    return out


class RegistrationTests(CLITestCase):
    """The ssh protocol brings its renderer and asciicast exporter."""

    def test_registered(self) -> None:
        self.assertIs(renderer_for("ssh"), render_ssh)
        self.assertIs(exporter_for("ssh", "asciicast"), export_asciicast)
        self.assertIsNone(exporter_for("postgres", "asciicast"))
        self.assertIsNone(exporter_for(None, "asciicast"))


class TerminalReplayTests(CLITestCase):
    """A pty session plays back as the terminal showed it."""

    def test_terminal_output(self) -> None:
        """The output reaches the terminal with its drawing sequences, in order."""
        out = replay(self, terminal_session(), "--no-wait")
        self.assertIn("-- SSH session 0192f1a0-0000-7000-8000-00000000551a\n", out)
        self.assertIn(
            "-- client: 127.0.0.1:50022 via listener ssh on gateway gw-test", out
        )
        self.assertIn(
            '-- gateway: authenticated Ada <u-ada> (groups: ["sre"]) to target web-1\n',
            out,
        )
        self.assertIn(
            "-- gateway: upstream-connected account=ada host_key=SHA256:abc", out
        )
        self.assertIn("-- channel 0: pty xterm-256color 80x24\n", out)
        self.assertIn("-- channel 0: env LANG=C.UTF-8 (accepted)\n", out)
        self.assertIn("-- channel 0: shell (terminal)\n", out)
        shown = (
            PROMPT.decode()
            + "ls\r\nnotes.txt  café.txt\r\n"
            + PROMPT.decode()
            + "safe\r\nlogout\r\n"
        )
        self.assertIn("-- channel 0: shell (terminal)\n" + shown, out)
        # Keystrokes are not shown twice: the echo shows them.
        self.assertEqual(out.count("ls\r\n"), 1)
        self.assertNotIn("window", out)  # a resize is the player's business
        self.assertIn(
            "-- channel 0: 4 terminal control sequence(s) not passed to your terminal",
            out,
        )
        self.assertNotIn("pwned", out)
        self.assertNotIn("ZXZpbA", out)
        self.assertNotIn("\x1b[6n", out)
        self.assertNotIn("\x1bc", out)
        # The colours the prompt set are reset before the notes.
        self.assertTrue(
            out.endswith(
                "logout\r\n\x1b[0m"
                "-- channel 0: 4 terminal control sequence(s) not passed to your "
                "terminal (titles, clipboard, reports...)\n"
                "-- channel 0: exit status 0\n"
                "-- channel 0: closed by target\n"
                "-- session closed: client closed the connection\n"
            ),
            out[-300:],
        )

    def test_unfinished_line_and_modes(self) -> None:
        """
        Output that ends mid-line, in the alternate screen with the cursor
        hidden, is followed by the resets and a new line.
        """
        output = [(b"\x1b[?1049h\x1b[?25l\x1b[Htop - 10:00", 10 * MS)]
        out = replay(self, terminal_session(output), "--no-wait")
        self.assertIn(
            "-- channel 0: shell (terminal)\n"
            "\x1b[?1049h\x1b[?25l\x1b[Htop - 10:00\x1b[?25h\x1b[?1049l\r\n"
            "-- channel 0: exit status 0\n",
            out,
        )

    def test_interrupted(self) -> None:
        """Stopped mid-playback (Ctrl-C), the terminal's modes are undone."""
        output = [(b"\x1b[?1049h\x1b[31mred", MS), (b"more", NS)]
        records = [
            Record(i, r.type, r.direction, r.channel, i * MS, r.payload)
            for i, r in enumerate(terminal_session(output))
        ]

        def sleep(seconds: float) -> None:
            raise KeyboardInterrupt

        out = io.StringIO()
        with self.assertRaises(KeyboardInterrupt):
            render(records, out, pacer=Pacer(sleep=sleep, monotonic=lambda: 0.0))
        self.assertTrue(
            out.getvalue().endswith("\x1b[?1049h\x1b[31mred\x1b[0m\x1b[?1049l\r\n"),
            repr(out.getvalue()[-80:]),
        )

    def test_timing(self) -> None:
        """With a pacer, each chunk waits its recorded delay, over the speed."""
        waits: list[float] = []
        clock = [0.0]

        def sleep(seconds: float) -> None:
            waits.append(round(seconds, 6))
            clock[0] += seconds

        root, sid = write(self, terminal_session())
        from gatehouse.recording.reader import read_records

        directory = os.path.join(root, os.listdir(root)[0], sid)
        records = list(read_records(directory))
        render(
            records,
            io.StringIO(),
            pacer=Pacer(2.0, sleep=sleep, monotonic=lambda: clock[0]),
        )
        # The delays before chunks 2..5, halved; the keystrokes and the
        # resize (1 ms each) between them count too.
        self.assertEqual(waits, [(0.5 + 0.003) / 2, (2 + 0.001) / 2, 10 / 2, 1 / 2])
        waits.clear()
        render(
            records,
            io.StringIO(),
            pacer=Pacer(1.0, 1.5, sleep=sleep, monotonic=lambda: clock[0]),
        )
        self.assertEqual(waits, [0.503, 1.5, 1.5, 1.0])

    def test_cli_paces_on_a_terminal(self) -> None:
        """replay waits when stdout is a terminal or --speed is given, not otherwise."""
        made: list[tuple[float, float | None]] = []

        class Recorded(Pacer):
            def __init__(self, speed: float = 1.0, idle: float | None = None) -> None:
                made.append((speed, idle))
                super().__init__(speed, idle, sleep=lambda s: None)

        self.patch(cli_sessions, "Pacer", Recorded)
        root, sid = write(self, terminal_session())
        self.run_cli("replay", sid, "--recordings", root)
        self.assertEqual(made, [])  # not a terminal: at once
        self.run_cli("replay", sid, "--recordings", root, "--speed", "4")
        self.assertEqual(made, [(4.0, None)])

        class Terminal(io.StringIO):
            def isatty(self) -> bool:
                return True

        made.clear()
        terminal = Terminal()
        self.patch(sys, "stdout", terminal)
        self.patch(sys, "stderr", io.StringIO())
        argv = ["replay", sid, "--recordings", root]
        self.assertEqual(main(argv), 0)
        self.assertEqual(main([*argv, "--idle-limit", "2"]), 0)
        self.assertEqual(main([*argv, "--no-wait"]), 0)
        self.assertEqual(made, [(1.0, None), (1.0, 2.0)])
        self.assertEqual(terminal.getvalue().count("logout\r\n"), 3)

    def test_speed_arguments(self) -> None:
        """--speed takes a number above 0; --no-wait and --speed exclude each other."""
        root, sid = write(self, terminal_session())
        for bad in ("0", "-1", "fast", "inf", "nan"):
            code, _, err = self.run_cli(
                "replay", sid, "--recordings", root, "--speed", bad
            )
            self.assertEqual(code, 2, bad)
            self.assertIn("not a number above 0", err)
        code, _, _ = self.run_cli(
            "replay", sid, "--recordings", root, "--speed", "2", "--no-wait"
        )
        self.assertEqual(code, 2)


class ExecReplayTests(CLITestCase):
    """Exec channels replay as command, output, stderr and exit status."""

    def test_exec_transcript(self) -> None:
        out = replay(self, exec_session())
        expected = [
            "-- channel 0: open session",
            "-- channel 0: env LD_PRELOAD=/tmp/x.so (refused)",
            "$ systemctl restart nginx && journalctl -n 2",
            "-- channel 0: policy: review (rule restarts): needs a 2nd",
            "-- channel 0: held for approval ap-1 (1 approval needed, rule restarts)",
            "-- channel 0: approval ap-1 approved: approved by Bob (go) [now approved]",
            "  line one",
            "  line two",
            "  -- channel 0: exit status 0",
            "  \\x1b[2J",
            "  [stderr] warning: disk",
            "-- channel 0: exit status 3",
            "-- channel 0: closed by target",
            "-- channel 1: open session",
            "$ rm -rf /",
            "> echo done",
            "-- channel 1: policy: deny (rule no-rm-root): never",
            "-- channel 1: exit status 1",
            "-- channel 1: closed by gateway: denied",
            "-- session closed: client closed the connection",
        ]
        lines = out.splitlines()
        self.assertEqual(lines[4:], expected, out)
        self.assertNotIn("\x1b", out)

    def test_long_and_binary_output(self) -> None:
        """Long output is cut (and --full shows it all); binary is summarised."""
        body = b"".join(b"row %d\n" % i for i in range(MAX_LINES + 20))
        records = [
            meta(),
            event(0, "ssh-channel-open", type="session"),
            request(0, "exec"),
            data(0, IN, b"seq"),
            data(0, OUT, body),
            data(0, OUT, bytes(range(256)) * 4, stderr=True),
            data(0, IN, b"stdin text\n"),
            event(0, "ssh-exit", status=0),
            event(0, "ssh-channel-close", **{"from": "client"}),
        ]
        out = replay(self, records)
        self.assertIn(f"  row {MAX_LINES - 1}\n", out)
        self.assertNotIn(f"  row {MAX_LINES}\n", out)
        self.assertIn("  … 20 more lines (use --full)\n", out)
        self.assertIn("  [stderr] (1,024 bytes of binary data)\n", out)
        self.assertIn("  [stderr] 00000000  00 01 02 03", out)
        self.assertIn("  [stderr] … 768 more bytes (use --full)\n", out)
        self.assertIn("  [stdin] stdin text\n", out)
        full = replay(self, records, "--full")
        self.assertIn(f"  row {MAX_LINES + 19}\n", full)
        self.assertIn("  [stderr] 000003f0  f0 f1", full)
        self.assertNotIn("more bytes", full)


class SftpAndForwardReplayTests(CLITestCase):
    """SFTP channels list their file operations; forwards their byte counts."""

    def test_sftp_and_forward(self) -> None:
        digest = "ab" * 32
        records = [
            meta(),
            event(0, "ssh-channel-open", type="session"),
            request(0, "subsystem", name="sftp"),
            data(0, IN, b"\x00\x00\x00\x05\x01\x00\x00\x00\x03"),
            data(0, OUT, b"\x00\x00\x00\x05\x02\x00\x00\x00\x03"),
            event(
                0,
                "sftp",
                op="write",
                path="/srv/app.tar",
                bytes=1048576,
                sha256=digest,
                status="ok",
            ),
            event(0, "decision", action="deny", rule="no-etc", message="read-only"),
            event(
                0,
                "sftp",
                op="write",
                path="/etc/passwd",
                bytes=0,
                status="permission denied by gatehouse policy",
            ),
            event(
                0, "sftp", op="rename", path="/srv/a", target_path="/srv/b", status="ok"
            ),
            event(0, "ssh-channel-close", **{"from": "client"}),
            event(
                1,
                "ssh-channel-open",
                type="direct-tcpip",
                host="db.internal",
                port=5432,
                originator="127.0.0.1",
                originator_port=40000,
            ),
            data(1, IN, b"x" * 100),
            data(1, OUT, b"y" * 250),
            event(1, "ssh-channel-close", **{"from": "target"}),
            close(),
        ]
        out = replay(self, records)
        self.assertIn(
            "-- channel 0: subsystem sftp\n"
            f"-- channel 0: sftp write /srv/app.tar (1,048,576 bytes, sha256 {digest})"
            ": ok\n"
            "-- channel 0: policy: deny (rule no-etc): read-only\n"
            "-- channel 0: sftp write /etc/passwd (0 bytes): permission denied by "
            "gatehouse policy\n"
            "-- channel 0: sftp rename /srv/a -> /srv/b: ok\n"
            "-- channel 0: 3 file operation(s), 9 bytes from client, 9 bytes to "
            "client\n"
            "-- channel 0: closed by client\n"
            "-- channel 1: forward to db.internal:5432 (from 127.0.0.1:40000)\n"
            "-- channel 1: 100 bytes from client, 250 bytes to client\n"
            "-- channel 1: closed by target\n",
            out,
        )
        self.assertNotIn("xxx", out)

    def test_damaged_records(self) -> None:
        """What the renderer cannot read is shown the generic way, escaped."""
        records = [
            meta(),
            Rec(b"not json \x1b[31m", RecordType.EVENT, Direction.GATEWAY, 1),
            Rec(b"connection bytes", RecordType.DATA, Direction.GATEWAY, 0),
            event(0, "ssh-request", request=["odd"]),
            event(0, "ssh-exit", status="x", signal="KILL"),
        ]
        out = replay(self, records)
        self.assertIn("ch1  EVENT  (not JSON)  14 bytes", out)
        self.assertIn("\\x1b[31m", out)
        self.assertIn("connection bytes", out)
        self.assertIn('-- channel 0: request ["odd"]\n', out)
        self.assertIn("-- channel 0: killed by signal KILL\n", out)
        self.assertIn("-- channel 0: no close recorded\n", out)
        self.assertNotIn("\x1b", out)


def export_cast(
    test: CLITestCase, records: list[Rec], *flags: str
) -> tuple[dict[str, Any], list[Any], Path]:
    """Export a session with gatehouse export --format asciicast -o FILE."""
    root, sid = write(test, records)
    target = Path(root) / "session.cast"
    code, out, err = test.run_cli(
        "export",
        sid,
        "--recordings",
        root,
        "--format",
        "asciicast",
        "-o",
        str(target),
        *flags,
    )
    test.assertEqual((code, out), (0, ""), err)
    lines = target.read_text().splitlines()
    test.assertTrue(all(line.isascii() for line in lines))
    header, *events = (json.loads(line) for line in lines)
    test.assertIn(f"{len(events)} asciicast events written", err)
    return header, events, target


class AsciicastTests(CLITestCase):
    """export --format asciicast writes asciicast v2 that asciinema plays."""

    def test_header_and_events(self) -> None:
        header, events, _ = export_cast(self, terminal_session())
        self.assertEqual(header["version"], 2)
        self.assertEqual((header["width"], header["height"]), (80, 24))
        self.assertEqual(header["env"], {"TERM": "xterm-256color"})
        # helpers' wall clock: 1_700_000_001 s at mono 0, 1 ms per record
        self.assertEqual(header["timestamp"], 1_700_000_001)
        self.assertNotIn("command", header)
        kinds = [kind for _, kind, _ in events]
        self.assertEqual(kinds, ["o", "o", "r", "o", "o", "o"])
        self.assertEqual(events[2][2], "100x30")
        times = [t for t, _, _ in events]
        self.assertEqual(times, sorted(times))
        self.assertAlmostEqual(times[0], 0.3, places=6)
        self.assertAlmostEqual(times[-1] - times[-2], 1.0, places=6)
        text = "".join(data for _, kind, data in events if kind == "o")
        self.assertEqual(text, b"".join(c for c, _ in TERMINAL_OUTPUT).decode())

    def test_input_on_request(self) -> None:
        _, events, _ = export_cast(self, terminal_session(), "--stdin")
        self.assertEqual([d for _, k, d in events if k == "i"], ["l", "s", "\r"])

    def test_asciinema_plays_it(self) -> None:
        """The real asciinema cat prints exactly the bytes the terminal was sent."""
        _, _, target = export_cast(self, terminal_session(), "--stdin")
        self.assertEqual(
            asciinema_cat(target), b"".join(chunk for chunk, _ in TERMINAL_OUTPUT)
        )

    def test_exec_with_pty_and_channel(self) -> None:
        """A command run in a pty exports with its command; --channel picks one."""
        records = [
            meta(),
            event(0, "ssh-channel-open", type="session"),
            request(0, "exec"),
            data(0, IN, b"uptime"),
            data(0, OUT, b"no pty here\n"),
            event(1, "ssh-channel-open", type="session"),
            request(1, "pty-req", term="vt100", cols=132, rows=50),
            request(1, "exec"),
            data(1, IN, b"top -b -n 1"),
            data(1, OUT, b"top output\r\n"),
            data(1, OUT, b"oops\r\n", stderr=True),
            event(1, "ssh-channel-close", **{"from": "target"}),
            data(1, OUT, b"after close\r\n"),
            event(2, "ssh-channel-open", type="session"),
            request(2, "pty-req", term="xterm", cols=80, rows=24),
            request(2, "shell"),
            data(2, OUT, b"second terminal\r\n"),
        ]
        header, events, target = export_cast(self, records)
        self.assertEqual(header["command"], "top -b -n 1")
        self.assertEqual((header["width"], header["height"]), (132, 50))
        self.assertEqual([d for _, _, d in events], ["top output\r\n", "oops\r\n"])
        self.assertEqual(asciinema_cat(target), b"top output\r\noops\r\n")
        header, events, _ = export_cast(self, records, "--channel", "2")
        self.assertEqual([d for _, _, d in events], ["second terminal\r\n"])
        root, sid = write(self, records)
        code, out, err = self.run_cli(
            "export",
            sid,
            "--recordings",
            root,
            "--format",
            "asciicast",
            "--channel",
            "0",
        )
        self.assertFails(code, 1, err, "channel 0 has no terminal")
        self.assertEqual(out, "")

    def test_no_terminal(self) -> None:
        """A session without a terminal fails in one line and writes no file."""
        root, sid = write(self, exec_session())
        target = os.path.join(root, "x.cast")
        code, _, err = self.run_cli(
            "export", sid, "--recordings", root, "--format", "asciicast", "-o", target
        )
        self.assertFails(code, 1, err, "no terminal")
        self.assertFalse(os.path.exists(target))
        self.assertFalse(os.path.exists(target + ".partial"))

    def test_other_protocols(self) -> None:
        """Other protocols have no asciicast export; JSONL stays the default."""
        records = [meta(protocol="postgres"), Rec(b"SELECT 1;")]
        root, sid = write(self, records)
        code, _, err = self.run_cli(
            "export", sid, "--recordings", root, "--format", "asciicast"
        )
        self.assertFails(code, 1, err, "'postgres' have no asciicast export")
        code, out, _ = self.run_cli("export", sid, "--recordings", root)
        self.assertEqual(code, 0)
        self.assertEqual(json.loads(out.splitlines()[1])["text"], "SELECT 1;")

    def test_exporter_directly(self) -> None:
        """export_asciicast raises NoExport, writing nothing, when there is no pty."""
        out = io.StringIO()
        with self.assertRaises(NoExport):
            export_asciicast([], out, ExportOptions())
        self.assertEqual(out.getvalue(), "")


class RealTerminalTests(CLITestCase):
    """
    Real terminal output (OpenSSH's ssh -tt to a real sshd, on a pseudo-
    terminal: bash's prompts, bracketed paste, a resize, Ctrl-C), laid
    out as the gateway records a shell channel, replays and exports whole.
    """

    def test_real_shell(self) -> None:
        server = shared_sshd()
        key = generate_key(Path(self.mktemp()) / "id")
        server.authorize(key.public)
        client = PtyClient(
            [ssh_program(), "-tt", *server.client_args(key), server.destination()],
            cols=80,
            rows=24,
        )
        self.addCleanup(client.close)
        started = time.monotonic()
        typed: list[tuple[float, bytes]] = []
        resized_at = 0.0

        def send(text: str) -> None:
            typed.append((time.monotonic(), text.encode()))
            client.send(text)

        client.expect(re.compile(rb"[#$] "))
        send("echo gate$((6*7))house\r")
        client.expect(b"gate42house")
        client.expect(re.compile(rb"[#$] "))
        resized_at = time.monotonic()
        client.resize(100, 30)
        time.sleep(0.2)
        send("stty size; echo sleeping; sleep 60\r")
        client.expect(b"30 100")
        client.expect(re.compile(rb"[\r\n]sleeping"))
        time.sleep(0.3)  # for sleep to start: Ctrl-C before it is a race
        send("\x03")
        client.expect(re.compile(rb"[#$] "))
        send("exit 0\r")
        self.assertEqual(client.wait(), 0)

        def at(moment: float) -> int:
            return int((moment - started) * NS)

        timeline: list[tuple[int, Rec]] = [
            (at(when), data(0, OUT, chunk, 0)) for when, chunk in client.chunks
        ]
        timeline += [(at(when), data(0, IN, keys, 0)) for when, keys in typed]
        timeline.append(
            (at(resized_at), request(0, "window-change", 0, cols=100, rows=30))
        )
        timeline.sort(key=lambda item: item[0])
        records = [
            meta(),
            event(0, "ssh-channel-open", type="session"),
            request(0, "pty-req", term="xterm", cols=80, rows=24),
            request(0, "shell"),
        ]
        last = 0
        for mono, rec in timeline:
            records.append(
                Rec(
                    rec.payload,
                    rec.type,
                    rec.direction,
                    rec.channel,
                    max(mono - last, 0),
                )
            )
            last = max(mono, last)
        records += [
            event(0, "ssh-exit", status=0),
            event(0, "ssh-channel-close", **{"from": "target"}),
            close(),
        ]
        _, events, target = export_cast(self, records)
        self.assertEqual(asciinema_cat(target), client.output)
        kinds = [k for _, k, _ in events]
        self.assertEqual([d for _, k, d in events if k == "r"], ["100x30"])
        texts = [d if k == "o" else "" for _, k, d in events]
        greeted = next(i for i, t in enumerate(texts) if "gate42house" in t)
        sized = next(i for i, t in enumerate(texts) if "30 100" in t)
        self.assertTrue(greeted < kinds.index("r") < sized, kinds)

        out = replay(self, records, "--no-wait")
        self.assertIn("gate42house\r\n", out)
        self.assertIn("30 100\r\n", out)
        self.assertIn("^C", out)
        self.assertIn("logout\r\n", out)
        self.assertIn("-- channel 0: exit status 0\n", out)


_HOSTILE = st.sampled_from(
    [
        b"\x1b]0;title\x07",
        b"\x1b]52;c;ZXZpbA==\x1b\\",
        b"\x1b[6n",
        b"\x1bP+q\x1b\\",
        b"\xc2\x9b6n",
        b"\x1b",
        b"]",
        b"ok\r\n",
        b"\xff\xfe",
        b"\xe2\x80\xae",
    ]
)
_EVENTS = st.sampled_from(
    [
        ("ssh-channel-open", {"type": "session"}),
        ("ssh-channel-open", {"type": "direct-tcpip", "host": "\x1b]0;x\x07"}),
        ("ssh-request", {"request": "pty-req", "term": "xterm", "cols": 80}),
        ("ssh-request", {"request": "shell"}),
        ("ssh-request", {"request": "exec"}),
        ("ssh-request", {"request": "subsystem", "name": "sftp"}),
        ("ssh-request", {"request": "window-change", "cols": "x", "rows": None}),
        ("ssh-request", {"request": "env", "name": "\x1b[6n", "value": ["x"]}),
        ("ssh-exit", {"status": 1}),
        ("ssh-exit", {"signal": "\x1b]0;t\x07"}),
        ("ssh-eof", {"from": "client"}),
        ("ssh-channel-close", {"from": "target", "reason": "\x9b6n"}),
        ("sftp", {"op": "write", "path": "/\x1b]0;t\x07", "bytes": "many"}),
        ("decision", {"action": "deny", "rule": None, "message": {"a": 1}}),
        ("approval-requested", {"approval_id": 7, "approvals_required": True}),
        ("approval-approved", {"approver": "\u202eb", "approved": "yes"}),
    ]
)


_SETUPS = {
    "none": [],
    "shell": ["pty-req", "shell"],
    "pty-exec": ["pty-req", "exec"],
    "exec": ["exec"],
    "sftp": ["subsystem"],
}


def _records(draw: Any) -> list[Record]:
    out = [Record(0, RecordType.META, 0, 0, 0, meta().payload)]
    for channel in range(3):
        setup = _SETUPS[draw(st.sampled_from(sorted(_SETUPS)))]
        for name in ["open", *setup] if setup else []:
            if name == "open":
                body = {"event": "ssh-channel-open", "type": "session"}
            else:
                body = {"event": "ssh-request", "request": name, "name": "sftp"}
            out.append(
                Record(
                    len(out),
                    RecordType.EVENT,
                    0,
                    channel + 1,
                    0,
                    json.dumps(body).encode(),
                )
            )
    steps = draw(
        st.lists(
            st.tuples(
                st.integers(0, 2),
                st.booleans(),
                st.one_of(_EVENTS, st.lists(_HOSTILE, min_size=1, max_size=4)),
                st.sampled_from([IN, OUT]),
                st.booleans(),
            ),
            max_size=30,
        )
    )
    for seq, (channel, stderr, what, direction, whole) in enumerate(steps, 1):
        record_channel = (channel + 1) | (STDERR_BIT if stderr else 0)
        if isinstance(what, tuple):
            name, fields = what
            payload = json.dumps({"event": name, **fields}).encode()
            if not whole:
                payload = payload[: len(payload) // 2]
            out.append(Record(seq, RecordType.EVENT, 0, channel + 1, seq * MS, payload))
        else:
            out.append(
                Record(
                    seq,
                    RecordType.DATA,
                    direction,
                    record_channel,
                    seq * MS,
                    b"".join(what),
                )
            )
    return out


class HostileRecordingTests(CLITestCase):
    """Whatever the records hold, the replay finishes and drives no terminal."""

    @EXAMPLES
    @given(st.data())
    def test_no_terminal_control(self, data: Any) -> None:
        records = _records(data.draw)
        out = io.StringIO()
        render(records, out)
        text = out.getvalue()
        self.assertNotRegex(text, r"\x1b[\]P_^Xc]")
        self.assertNotIn("\x1b[6n", text)
        self.assertFalse(any(0x80 <= ord(ch) <= 0x9F for ch in text), repr(text))
        self.assertNotIn("\u202e", text)
        self.assertNotIn("could not render", text)
        cast = io.StringIO()
        try:
            export_asciicast(records, cast, ExportOptions())
        except NoExport:
            self.assertEqual(cast.getvalue(), "")
        else:
            for line in cast.getvalue().splitlines():
                json.loads(line)
