"""
What every end-to-end harness of a daemon offers for its approvals and
recordings: the admin API and C{gatehouse approvals} as approvers use
them (L{GatewayRecordings.pending}, L{GatewayRecordings.approvals}); the
real CLIs (C{gatehouse sessions}, C{export}, C{replay}, C{verify}) run as
subprocesses with the daemon's C{--config}, an in-process export, and a
wait for sessions to be closed and final in the index.

A harness class mixes in L{GatewayRecordings} and has C{gateway} (a
L{tests.protocols.postgres.harness.Gateway}), C{config_path} and
C{log()}.
"""

from __future__ import annotations

import base64
import io
import json
import os
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from gatehouse.recording.index import IndexUnavailable, SessionRow, query_sessions
from gatehouse.recording.reader import find_session_directory, read_records
from gatehouse.recording.render import export_jsonl

__all__ = ["GatewayRecordings", "events"]


def events(records: Sequence[Mapping[str, Any]], name: str) -> list[dict[str, Any]]:
    """
    The EVENT records called C{name} of an export (L{GatewayRecordings.export}),
    each as its parsed JSON with the record's C{channel} added under
    C{"_channel"}.
    """
    found = []
    for record in records:
        body = record.get("json")
        if record["type"] == "EVENT" and isinstance(body, dict):
            if body.get("event") == name:
                found.append({**body, "_channel": record["channel"]})
    return found


def stream_bytes(
    records: Sequence[Mapping[str, Any]], channel: int, direction: str
) -> bytes:
    """
    The bytes an export recorded on C{channel} in C{direction}
    (C{"client_to_gateway"} or C{"gateway_to_client"}), in order.
    """
    return b"".join(
        base64.b64decode(r["payload"])
        for r in records
        if r["type"] == "DATA"
        and r["channel"] == channel
        and r["direction"] == direction
    )


class GatewayRecordings:
    """The recordings of a harness's daemon, read as auditors read them."""

    gateway: Any
    config_path: str

    def log(self) -> str:
        """The daemon's log so far."""
        raise NotImplementedError

    def cli(
        self,
        *args: str,
        config: bool = True,
        env: Mapping[str, str] | None = None,
        timeout: float = 60.0,
    ) -> subprocess.CompletedProcess[str]:
        """Run C{gatehouse ARGS} (with C{--config} of this daemon)."""
        argv = [sys.executable, "-m", "gatehouse", *args]
        if config:
            argv += ["--config", self.config_path]
        return subprocess.run(
            argv,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
            env=None if env is None else dict(env),
        )

    def _cli_ok(self, *args: str) -> str:
        result = self.cli(*args)
        if result.returncode != 0:
            raise AssertionError(
                f"gatehouse {' '.join(args)} exited {result.returncode}:\n"
                f"{result.stderr}{result.stdout[-2000:]}"
            )
        return result.stdout

    def sessions(self, **filters: str) -> list[dict[str, Any]]:
        """
        C{gatehouse sessions --json} with C{filters} as its options
        (C{identity="alice"}, C{target=...}, C{command_text=...} for
        C{--command}, C{kind=...}, C{touched=...}, C{protocol=...}).
        """
        args = ["sessions", "--json", "--limit", "0"]
        for name, value in filters.items():
            option = "command" if name == "command_text" else name
            args += [f"--{option}", value]
        parsed: list[dict[str, Any]] = json.loads(self._cli_ok(*args))
        return parsed

    def export(self, session_id: str, *, cli: bool = True) -> list[dict[str, Any]]:
        """
        C{gatehouse export SESSION}: every record, parsed from its JSON
        line.  With C{cli} false, the same export made in this process
        (no interpreter to start: for tests that read many sessions).
        """
        if cli:
            text = self._cli_ok("export", session_id)
        else:
            directory = find_session_directory(
                self.gateway.path("recordings"), uuid.UUID(session_id)
            )
            if directory is None:
                raise AssertionError(f"no recording of session {session_id}")
            out = io.StringIO()
            export_jsonl(read_records(directory), out, session_id=session_id)
            text = out.getvalue()
        return [json.loads(line) for line in text.splitlines() if line]

    def export_asciicast(self, session_id: str, out: Path | str, *more: str) -> None:
        """C{gatehouse export SESSION --format asciicast -o OUT MORE...}."""
        self._cli_ok(
            "export", session_id, "--format", "asciicast", "-o", str(out), *more
        )

    def replay(self, session_id: str, *more: str) -> str:
        """C{gatehouse replay SESSION --no-wait MORE...}: the transcript."""
        return self._cli_ok("replay", session_id, "--no-wait", *more)

    def verify(self, session_id: str) -> subprocess.CompletedProcess[str]:
        """C{gatehouse verify SESSION --json} (exit status 0: intact)."""
        return self.cli("verify", session_id, "--json")

    def index_path(self) -> str:
        """The session index file."""
        return self.gateway.path("recordings", "index.sqlite3")

    def wait_sessions(
        self,
        after: float,
        count: int = 1,
        *,
        timeout: float = 15.0,
        **filters: Any,
    ) -> list[SessionRow]:
        """
        The sessions that started at or after C{after} (Unix time, taken
        before the client ran) and match C{filters} (as
        L{query_sessions}'s), oldest first, once at least C{count} of them
        are closed and final in the index.
        """
        deadline = time.monotonic() + timeout
        rows: list[SessionRow] = []
        while time.monotonic() < deadline:
            try:
                rows = query_sessions(self.index_path(), limit=None, **filters)
            except IndexUnavailable:  # the daemon may still be creating it
                rows = []
            rows = sorted(
                (r for r in rows if r.started >= after), key=lambda r: r.started
            )
            done = [r for r in rows if r.ended is not None and r.final]
            if len(done) >= count:
                return done
            time.sleep(0.05)
        raise AssertionError(
            f"{count} closed session(s) after {after} not in the index within "
            f"{timeout}s (found {[(r.id, r.ended, r.final) for r in rows]}):\n"
            + self.log()[-3000:]
        )

    def wait_session(self, after: float, **filters: Any) -> SessionRow:
        """The one session since C{after} (see L{wait_sessions}), once closed."""
        rows = self.wait_sessions(after, **filters)
        if len(rows) != 1:
            raise AssertionError(f"expected one session, got {[r.id for r in rows]}")
        return rows[0]

    # -- approvals -----------------------------------------------------------

    def approver(self, subject: str = "bob") -> str:
        """A token of someone in the C{approvers} group."""
        return self.gateway.token(subject=subject, groups=("approvers",))

    # -- clients -----------------------------------------------------------

    def approvals(self, *args: str, token: str) -> subprocess.CompletedProcess[str]:
        """Run C{gatehouse approvals ARGS} against the admin API as C{token}."""
        env = dict(os.environ)
        env["GATEHOUSE_TOKEN"] = token
        env["GATEHOUSE_ADMIN_URL"] = self.gateway.admin_url
        return subprocess.run(
            [sys.executable, "-m", "gatehouse", "approvals", *args],
            capture_output=True,
            text=True,
            env=env,
            timeout=30,
        )

    def pending(self, text: str, timeout: float = 20) -> dict:
        """The pending approval request whose command names C{text}."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            # the admin API straight away: a CLI run per poll is slow
            listed = self.admin("GET", "/api/v1/approvals?state=pending")
            for request in listed["approvals"]:
                texts = " ".join(c["text"] for c in request["commands"])
                if text in texts and request["state"] == "pending":
                    return request
            time.sleep(0.1)
        raise AssertionError(
            f"no pending approval for {text!r}:\n{self.gateway.log()[-3000:]}"
        )

    def admin(
        self, method: str, path: str, body: dict | None = None, token: str | None = None
    ) -> dict:
        """Call the admin API as C{token} (default: an approver); its JSON answer."""
        request = urllib.request.Request(
            self.gateway.admin_url + path,
            data=None if body is None else json.dumps(body).encode(),
            headers={
                "Authorization": f"Bearer {token or self.approver()}",
                "Content-Type": "application/json",
            },
            method=method,
        )
        with urllib.request.urlopen(request, timeout=20) as answer:
            result: dict = json.loads(answer.read())
            return result
