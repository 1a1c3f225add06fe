"""
The session index: an embedded SQLite database of sessions and of the
commands seen in them, so that an auditor can find a recording by identity,
target, time or command without reading every segment file.

The daemon writes through L{SessionIndex}, which never blocks the reactor:
calls are queued and written in batches, one transaction per batch, by one
dedicated thread (an SQLite connection must stay on the thread that opened
it).  Auditors' tools read with the synchronous functions at the end of this
module (L{query_sessions}, L{get_session}, L{commands_for}, L{facts_for}),
which open the file read-only.

The index is a cache of what the recordings say: the signed segment files
remain the evidence.
"""

from __future__ import annotations

import json
import os
import pathlib
import sqlite3
from collections import deque
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import attrs
from twisted.internet.defer import Deferred, succeed
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.python.threadpool import ThreadPool

if TYPE_CHECKING:
    from gatehouse.recording.verify import IndexFacts

__all__ = [
    "SCHEMA_VERSION",
    "CommandRow",
    "IndexUnavailable",
    "SessionIndex",
    "SessionRow",
    "approvals_for",
    "commands_for",
    "facts_for",
    "get_session",
    "query_sessions",
]

#: The schema version this module writes, kept in C{PRAGMA user_version}.
SCHEMA_VERSION = 2

# _MIGRATIONS[n] upgrades a database from user_version n to n + 1.
_MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (
        """
        CREATE TABLE sessions (
            id TEXT PRIMARY KEY,
            gateway_id TEXT NOT NULL,
            protocol TEXT NOT NULL,
            target TEXT NOT NULL,
            listener TEXT NOT NULL,
            subject TEXT NOT NULL,
            display_name TEXT NOT NULL DEFAULT '',
            issuer TEXT NOT NULL DEFAULT '',
            groups TEXT NOT NULL DEFAULT '[]',
            client_address TEXT NOT NULL DEFAULT '',
            started REAL NOT NULL,
            ended REAL,
            close_reason TEXT,
            segments INTEGER NOT NULL DEFAULT 0,
            last_link BLOB,
            final INTEGER NOT NULL DEFAULT 0,
            records INTEGER NOT NULL DEFAULT 0,
            bytes_from_client INTEGER NOT NULL DEFAULT 0,
            bytes_to_client INTEGER NOT NULL DEFAULT 0,
            bytes_to_upstream INTEGER NOT NULL DEFAULT 0,
            bytes_from_upstream INTEGER NOT NULL DEFAULT 0,
            directory TEXT NOT NULL
        )
        """,
        "CREATE INDEX sessions_started ON sessions (started)",
        "CREATE INDEX sessions_subject ON sessions (subject)",
        "CREATE INDEX sessions_target ON sessions (target, started)",
        # No rowid alias and no uniqueness on (session_id, seq): the
        # statements of one PostgreSQL Query share the record they came in.
        """
        CREATE TABLE commands (
            session_id TEXT NOT NULL,
            seq INTEGER NOT NULL,
            at REAL NOT NULL,
            kind TEXT NOT NULL,
            text TEXT NOT NULL,
            decision TEXT NOT NULL,
            objects TEXT NOT NULL DEFAULT '[]'
        )
        """,
        "CREATE INDEX commands_session ON commands (session_id, seq)",
        "CREATE INDEX commands_kind ON commands (kind COLLATE NOCASE)",
        # Command text is searched by substring, which no B-tree index
        # helps; the per-session scan after the other filters is cheap.
    ),
    (
        "ALTER TABLE sessions ADD COLUMN masked_values INTEGER NOT NULL DEFAULT 0",
        # One row per approval request, rewritten as it changes: its
        # latest state, with every vote (approver, comment) as JSON.
        """
        CREATE TABLE approvals (
            id TEXT PRIMARY KEY,
            session_id TEXT NOT NULL,
            state TEXT NOT NULL,
            rule TEXT NOT NULL,
            requester TEXT NOT NULL,
            created REAL NOT NULL,
            expires REAL NOT NULL,
            reason TEXT,
            request TEXT NOT NULL
        )
        """,
        "CREATE INDEX approvals_session ON approvals (session_id)",
    ),
)

_log = Logger(namespace="gatehouse.recording.index")


# --- values ---------------------------------------------------------------


def _tuple_of_str(value: Sequence[str] | None) -> tuple[str, ...]:
    return tuple(value or ())


def _text(value: str | None) -> str:
    # Identity and target are unknown until the client authenticates.
    return value or ""


@attrs.frozen(kw_only=True)
class SessionRow:
    """
    One session as the index knows it.

    L{SessionIndex.session_opened} uses the fields up to C{client_address};
    the others are filled in as segments are sealed and when the session
    closes.  Identity and target fields given as None (not known yet when
    the client connects) are stored as empty strings.  Byte counts are per
    direction, as the recording names them.
    """

    id: str
    gateway_id: str
    protocol: str
    listener: str
    started: float
    directory: str
    target: str = attrs.field(default="", converter=_text)
    subject: str = attrs.field(default="", converter=_text)
    display_name: str = attrs.field(default="", converter=_text)
    issuer: str = attrs.field(default="", converter=_text)
    groups: tuple[str, ...] = attrs.field(default=(), converter=_tuple_of_str)
    client_address: str = ""
    ended: float | None = None
    close_reason: str | None = None
    segments: int = 0
    last_link: bytes | None = None
    final: bool = False
    records: int = 0
    bytes_from_client: int = 0
    bytes_to_client: int = 0
    bytes_to_upstream: int = 0
    bytes_from_upstream: int = 0
    masked_values: int = 0

    @property
    def closed(self) -> bool:
        """Whether the session has ended."""
        return self.ended is not None

    @property
    def identity(self) -> str:
        """The display name when there is one, else the subject."""
        return self.display_name or self.subject


@attrs.frozen(kw_only=True)
class CommandRow:
    """
    One command seen in a session: a SQL statement, an SSH exec line, a
    Kubernetes request, and what the policy decided about it.

    @ivar seq: the sequence number of the record that carried the command.
    @ivar at: Unix time, in seconds.
    @ivar objects: what the command touched (tables, resources).
    """

    session_id: str
    seq: int
    at: float
    kind: str
    text: str
    decision: str
    objects: tuple[str, ...] = attrs.field(default=(), converter=_tuple_of_str)


class IndexUnavailable(Exception):
    """The index cannot be read; the message names the file and why."""


# --- writer (daemon side) -------------------------------------------------


@attrs.frozen
class _Write:
    """One queued statement; C{what} names it in log messages."""

    what: str
    sql: str
    params: tuple[Any, ...]
    #: an UPDATE that changes no row means the session is unknown
    expect_row: bool = False


_INSERT_SESSION = """
    INSERT INTO sessions (
        id, gateway_id, protocol, target, listener, subject, display_name,
        issuer, groups, client_address, started, directory
    ) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
"""
# Applied only for a segment the index has not seen yet, so a repeated or
# late report cannot count records twice or move the last link backwards.
_SEAL_SEGMENT = """
    UPDATE sessions SET
        segments = ? + 1, last_link = ?, final = ?, records = records + ?
    WHERE id = ? AND segments <= ?
"""
_IDENTIFY_SESSION = """
    UPDATE sessions SET
        subject = ?, display_name = ?, issuer = ?, groups = ?,
        target = coalesce(?, target)
    WHERE id = ?
"""
_CLOSE_SESSION = """
    UPDATE sessions SET
        ended = ?, close_reason = ?, bytes_from_client = ?, bytes_to_client = ?,
        bytes_to_upstream = ?, bytes_from_upstream = ?, masked_values = ?
    WHERE id = ?
"""
_UPSERT_APPROVAL = """
    INSERT OR REPLACE INTO approvals
        (id, session_id, state, rule, requester, created, expires, reason, request)
    VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
"""
_INSERT_COMMAND = """
    INSERT INTO commands (session_id, seq, at, kind, text, decision, objects)
    VALUES (?, ?, ?, ?, ?, ?, ?)
"""


def _open_writer(path: str) -> sqlite3.Connection:
    """Open (creating or upgrading) the index for writing."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=True)
    try:
        conn.execute("PRAGMA busy_timeout = 5000")
        mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if mode.lower() != "wal":
            raise sqlite3.OperationalError(f"cannot switch to WAL mode ({mode})")
        # The index can be rebuilt from the recordings, so losing the last
        # transactions on power loss is an acceptable price for speed.
        conn.execute("PRAGMA synchronous = NORMAL")
        _migrate(conn, path)
    except BaseException:
        conn.close()
        raise
    return conn


def _migrate(conn: sqlite3.Connection, path: str) -> None:
    # IMMEDIATE: two processes opening a new index must not both create it.
    conn.execute("BEGIN IMMEDIATE")
    try:
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise sqlite3.DatabaseError(
                f"{path}: index schema version {version} is newer than this "
                f"gatehouse understands ({SCHEMA_VERSION})"
            )
        for step in range(version, SCHEMA_VERSION):
            for statement in _MIGRATIONS[step]:
                conn.execute(statement)
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


def _apply(conn: sqlite3.Connection, write: _Write) -> str | None:
    cursor = conn.execute(write.sql, write.params)
    if write.expect_row and cursor.rowcount == 0:
        return f"{write.what}: no such session in the index (or already recorded)"
    return None


def _write_batch(
    conn: sqlite3.Connection, writes: list[_Write]
) -> list[tuple[bool, str | None]]:
    """
    Write C{writes} in one transaction; runs on the index thread.

    @return: per write, whether it was committed and a problem to log.
    """
    try:
        conn.execute("BEGIN IMMEDIATE")
        try:
            notes = [_apply(conn, w) for w in writes]
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        return [(True, note) for note in notes]
    except sqlite3.OperationalError as e:
        # The database (locked by another writer, full, unreadable), not one
        # write: writing each alone would wait out busy_timeout per write.
        return [(False, f"{w.what}: {e}") for w in writes]
    except sqlite3.Error as e:
        if len(writes) == 1:
            return [(False, f"{writes[0].what}: {e}")]
    # One bad write must not take the rest of its batch down with it.
    return [r for w in writes for r in _write_batch(conn, [w])]


class SessionIndex:
    """
    The daemon's writer to the session index.

    Every reporting method is fire-and-forget: it queues the write and
    returns at once a C{Deferred} that fires with C{True} once the write is
    committed, or with C{False} when it could not be (the reason is logged).
    It never fails, so callers may drop it.  Writes are committed in the
    order they were reported, in batches of everything queued while the
    previous batch was being written.
    """

    def __init__(
        self,
        path: str,
        reactor: Any,
        *,
        max_batch: int = 1000,
        max_queued: int = 100_000,
    ):
        self.path = path
        self._reactor = reactor
        self._max_batch = max_batch
        self._max_queued = max_queued
        self._pool = ThreadPool(1, 1, name="gatehouse-index")
        self._conn: sqlite3.Connection | None = None
        self._queue: deque[tuple[_Write, Deferred[bool]]] = deque()
        self._starting = False
        self._open = False
        self._stopping = False
        self._stopped = False
        self._started_waiters: list[Deferred[None]] = []
        self._stopped_waiters: list[Deferred[None]] = []
        self._busy = False
        self._scheduled: Any = None
        self._idle: list[Deferred[None]] = []
        self._dropped = 0

    # lifecycle

    def start(self) -> Deferred[None]:
        """Open (creating or upgrading) the index; writes queued so far follow."""
        self._pool.start()
        self._starting = True
        d = deferToThreadPool(self._reactor, self._pool, self._connect)

        def opened(_: object) -> None:
            self._starting = False
            self._open = True
            self._kick()
            self._notify(self._started_waiters)

        def failed(f: Failure) -> Failure:
            self._starting = False
            self._pool.stop()
            self._notify(self._started_waiters)
            return f

        d.addCallbacks(opened, failed)
        return d

    def _connect(self) -> None:
        self._conn = _open_writer(self.path)

    def stop(self) -> Deferred[None]:
        """Refuse new writes, commit every queued one, close the index."""
        if self._stopped:
            return succeed(None)
        waiter: Deferred[None] = Deferred()
        self._stopped_waiters.append(waiter)
        if not self._stopping:
            self._stopping = True
            if self._starting:
                self._started_waiters.append(Deferred())
                self._started_waiters[-1].addCallback(lambda _: self._shut_down())
            else:
                self._shut_down()
        return waiter

    def _shut_down(self) -> None:
        if not self._open:
            self._abandon("the index is not open")
            self._stopped = True
            self._notify(self._stopped_waiters)
            return
        d = self._drained()
        d.addCallback(
            lambda _: deferToThreadPool(self._reactor, self._pool, self._close)
        )

        def closed(result: object) -> None:
            self._open = False
            self._stopped = True
            self._pool.stop()
            if isinstance(result, Failure):
                _log.failure(
                    "session index: closing {path} failed", result, path=self.path
                )
            self._notify(self._stopped_waiters)

        d.addBoth(closed)

    @staticmethod
    def _notify(waiters: list[Deferred[None]]) -> None:
        fired = waiters[:]
        del waiters[:]
        for d in fired:
            d.callback(None)

    def _close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _drained(self) -> Deferred[None]:
        if not self._queue and not self._busy:
            return succeed(None)
        d: Deferred[None] = Deferred()
        self._idle.append(d)
        return d

    def _abandon(self, why: str) -> None:
        queued, self._queue = self._queue, deque()
        if queued:
            _log.error(
                "session index: {count} writes to {path} lost: {why}",
                count=len(queued),
                path=self.path,
                why=why,
            )
        for _, d in queued:
            d.callback(False)

    # reports from the data path

    def session_opened(self, row: SessionRow) -> Deferred[bool]:
        """Record a new session (its identity fields; counters start at zero)."""
        return self._submit(
            _Write(
                f"session {row.id} opened",
                _INSERT_SESSION,
                (
                    row.id,
                    row.gateway_id,
                    row.protocol,
                    row.target,
                    row.listener,
                    row.subject,
                    row.display_name,
                    row.issuer,
                    json.dumps(list(row.groups)),
                    row.client_address,
                    row.started,
                    row.directory,
                ),
            )
        )

    def session_identified(
        self, session_id: str, identity: Any, target: str | None = None
    ) -> Deferred[bool]:
        """
        Record who is speaking in a session, once authenticated.

        @param identity: a L{gatehouse.identity.Identity} (C{subject},
            C{name}, C{issuer}, C{groups}).
        @param target: the target's name, if known by now.
        """
        return self._submit(
            _Write(
                f"session {session_id} identified",
                _IDENTIFY_SESSION,
                (
                    identity.subject or "",
                    identity.name or "",
                    identity.issuer or "",
                    json.dumps(list(identity.groups or ())),
                    target,
                    session_id,
                ),
                expect_row=True,
            )
        )

    def segment_sealed(
        self,
        session_id: str,
        segment_index: int,
        link: bytes,
        final: bool,
        records: int,
    ) -> Deferred[bool]:
        """
        Record that segment C{segment_index} was sealed with C{records}
        records in it and C{link} as its link.
        """
        return self._submit(
            _Write(
                f"session {session_id} segment {segment_index} sealed",
                _SEAL_SEGMENT,
                (
                    segment_index,
                    bytes(link),
                    1 if final else 0,
                    records,
                    session_id,
                    segment_index,
                ),
                expect_row=True,
            )
        )

    def session_closed(
        self,
        session_id: str,
        ended: float,
        reason: str,
        *,
        bytes_from_client: int = 0,
        bytes_to_client: int = 0,
        bytes_to_upstream: int = 0,
        bytes_from_upstream: int = 0,
        masked_values: int = 0,
    ) -> Deferred[bool]:
        """
        Record the end of a session, why it ended, its byte counts and how
        many values were masked.
        """
        return self._submit(
            _Write(
                f"session {session_id} closed",
                _CLOSE_SESSION,
                (
                    ended,
                    reason,
                    bytes_from_client,
                    bytes_to_client,
                    bytes_to_upstream,
                    bytes_from_upstream,
                    masked_values,
                    session_id,
                ),
                expect_row=True,
            )
        )

    def command_seen(self, command: CommandRow) -> Deferred[bool]:
        """Record one command and the decision about it."""
        return self._submit(
            _Write(
                f"session {command.session_id} command at seq {command.seq}",
                _INSERT_COMMAND,
                (
                    command.session_id,
                    command.seq,
                    command.at,
                    command.kind,
                    command.text,
                    command.decision,
                    json.dumps(list(command.objects)),
                ),
            )
        )

    def approval_changed(self, request: object) -> Deferred[bool]:
        """Record an approval request's latest state and votes."""
        return self._submit(
            _Write(
                f"approval {request.id}",
                _UPSERT_APPROVAL,
                (
                    request.id,
                    request.session_id,
                    request.state,
                    request.rule,
                    request.requester.subject,
                    request.created,
                    request.expires,
                    request.reason,
                    json.dumps(request.as_json(), sort_keys=True),
                ),
            )
        )

    # the queue

    def _submit(self, write: _Write) -> Deferred[bool]:
        if self._stopping:
            _log.warn(
                "session index: {what} reported after stop; not written",
                what=write.what,
            )
            return succeed(False)
        if len(self._queue) >= self._max_queued:
            # Bounded memory beats a complete index: the recordings hold
            # everything, and an index can be rebuilt from them.
            self._dropped += 1
            if self._dropped == 1 or self._dropped % 1000 == 0:
                _log.error(
                    "session index: queue full, {count} writes dropped so far "
                    "(latest: {what})",
                    count=self._dropped,
                    what=write.what,
                )
            return succeed(False)
        d: Deferred[bool] = Deferred()
        self._queue.append((write, d))
        self._kick()
        return d

    def _kick(self) -> None:
        if self._open and not self._busy and self._queue and self._scheduled is None:
            # A turn of the reactor lets the reports of one burst share a
            # transaction.
            self._scheduled = self._reactor.callLater(0, self._flush)

    def _flush(self) -> None:
        self._scheduled = None
        if self._busy or not self._queue:
            return
        batch = []
        while self._queue and len(batch) < self._max_batch:
            batch.append(self._queue.popleft())
        self._busy = True
        conn = self._conn
        d = deferToThreadPool(
            self._reactor, self._pool, _write_batch, conn, [w for w, _ in batch]
        )
        d.addBoth(self._written, batch)

    def _written(
        self,
        result: list[tuple[bool, str | None]] | Failure,
        batch: list[tuple[_Write, Deferred[bool]]],
    ) -> None:
        self._busy = False
        if isinstance(result, Failure):
            _log.failure(
                "session index: writing {count} entries to {path} failed",
                result,
                count=len(batch),
                path=self.path,
            )
            result = [(False, None)] * len(batch)
        problems = [note for _, note in result if note]
        if problems:
            _log.warn(
                "session index {path}: {count} of {total} writes had problems; "
                "first: {first}",
                path=self.path,
                count=len(problems),
                total=len(batch),
                first=problems[0],
            )
        for (_, d), (ok, _) in zip(batch, result, strict=True):
            d.callback(ok)
        if self._queue:
            self._flush()
        else:
            self._notify(self._idle)


# --- readers (auditor side) -----------------------------------------------


@contextmanager
def _reader(path: str) -> Iterator[sqlite3.Connection]:
    if not os.path.isfile(path):
        raise IndexUnavailable(f"{path}: no such index file")
    uri = pathlib.Path(path).absolute().as_uri() + "?mode=ro"
    try:
        conn = sqlite3.connect(uri, uri=True)
    except sqlite3.Error as e:
        raise IndexUnavailable(f"{path}: cannot open the index: {e}")
    try:
        conn.row_factory = sqlite3.Row
        conn.execute("PRAGMA busy_timeout = 5000")
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version == 0:
            raise IndexUnavailable(f"{path}: not a gatehouse session index")
        if version != SCHEMA_VERSION:
            raise IndexUnavailable(
                f"{path}: index schema version {version}, this gatehouse reads "
                f"version {SCHEMA_VERSION} (start the gateway once to upgrade it)"
            )
        yield conn
    except sqlite3.Error as e:
        raise IndexUnavailable(f"{path}: cannot read the index: {e}")
    finally:
        conn.close()


def _session_from_row(row: sqlite3.Row) -> SessionRow:
    values = dict(row)
    values["groups"] = json.loads(values["groups"])
    values["final"] = bool(values["final"])
    if values["last_link"] is not None:
        values["last_link"] = bytes(values["last_link"])
    return SessionRow(**values)


def query_sessions(
    path: str,
    *,
    identity: str | None = None,
    target: str | None = None,
    protocol: str | None = None,
    since: float | None = None,
    until: float | None = None,
    command: str | None = None,
    kind: str | None = None,
    touched: str | None = None,
    limit: int | None = 100,
) -> list[SessionRow]:
    """
    Find sessions, newest first.

    @param identity: a substring of the subject or display name (any case).
    @param target: the target's name, exactly.
    @param protocol: the protocol's name, exactly.
    @param since: Unix time; sessions still running at or after it.
    @param until: Unix time; sessions that started before it.
    @param command: a substring of a command's text (any case).
    @param kind: a command kind such as C{DeleteStmt} (any case).
    @param touched: an object a command touched: C{users} matches both
        C{users} and C{public.users}.
    @param limit: at most this many sessions; None for all.

    C{command}, C{kind} and C{touched} must all hold for one and the same
    command of the session.

    @raise IndexUnavailable: when the index cannot be read.
    """
    where: list[str] = []
    params: dict[str, Any] = {}
    if identity:
        where.append(
            "(instr(lower(s.subject), :identity) > 0"
            " OR instr(lower(s.display_name), :identity) > 0)"
        )
        params["identity"] = identity.lower()
    if target is not None:
        where.append("s.target = :target")
        params["target"] = target
    if protocol is not None:
        where.append("s.protocol = :protocol")
        params["protocol"] = protocol
    if since is not None:
        where.append("(s.ended IS NULL OR s.ended >= :since)")
        params["since"] = since
    if until is not None:
        where.append("s.started < :until")
        params["until"] = until
    per_command: list[str] = []
    if command:
        per_command.append("instr(lower(c.text), :command) > 0")
        params["command"] = command.lower()
    if kind:
        per_command.append("c.kind = :kind COLLATE NOCASE")
        params["kind"] = kind
    if touched:
        per_command.append(
            "EXISTS (SELECT 1 FROM json_each(c.objects) AS o"
            " WHERE lower(o.value) = :touched"
            " OR substr(lower(o.value), -:touched_len) = :touched_suffix)"
        )
        params["touched"] = touched.lower()
        params["touched_len"] = len(touched) + 1
        params["touched_suffix"] = "." + touched.lower()
    if per_command:
        where.append(
            "EXISTS (SELECT 1 FROM commands AS c WHERE c.session_id = s.id AND "
            + " AND ".join(per_command)
            + ")"
        )
    sql = "SELECT s.* FROM sessions AS s"
    if where:
        sql += " WHERE " + " AND ".join(where)
    sql += " ORDER BY s.started DESC, s.id DESC"
    if limit is not None:
        sql += " LIMIT :limit"
        params["limit"] = limit
    with _reader(path) as conn:
        return [_session_from_row(row) for row in conn.execute(sql, params)]


def get_session(path: str, session_id: str) -> SessionRow | None:
    """
    One session by id, or None if the index does not know it.

    @raise IndexUnavailable: when the index cannot be read.
    """
    with _reader(path) as conn:
        row = conn.execute(
            "SELECT * FROM sessions WHERE id = ?", (session_id.lower(),)
        ).fetchone()
    return None if row is None else _session_from_row(row)


def commands_for(path: str, session_id: str) -> list[CommandRow]:
    """
    The commands of one session, in the order they were seen.

    @raise IndexUnavailable: when the index cannot be read.
    """
    with _reader(path) as conn:
        rows = conn.execute(
            "SELECT session_id, seq, at, kind, text, decision, objects"
            " FROM commands WHERE session_id = ? ORDER BY seq, rowid",
            (session_id.lower(),),
        ).fetchall()
    return [
        CommandRow(
            session_id=row["session_id"],
            seq=row["seq"],
            at=row["at"],
            kind=row["kind"],
            text=row["text"],
            decision=row["decision"],
            objects=json.loads(row["objects"]),
        )
        for row in rows
    ]


def approvals_for(path: str, session_id: str) -> list[dict]:
    """
    The approval requests of one session, oldest first, as recorded
    (L{gatehouse.approval.ApprovalRequest.as_json}).

    @raise IndexUnavailable: when the index cannot be read.
    """
    with _reader(path) as conn:
        rows = conn.execute(
            "SELECT request FROM approvals WHERE session_id = ? ORDER BY created",
            (session_id.lower(),),
        ).fetchall()
    return [json.loads(row["request"]) for row in rows]


def facts_for(path: str, session_id: str) -> IndexFacts | None:
    """
    What the index knows that a verifier needs (see "Verification" in
    docs/recording-format.md), or None if it does not know the session:
    whether it closed, how many segments were sealed, and the link of the
    last of them (the final seal's once there is one).

    @raise IndexUnavailable: when the index cannot be read.
    """
    from gatehouse.recording.verify import IndexFacts

    row = get_session(path, session_id)
    if row is None:
        return None
    # The index hears of a seal only after it is durable, so the files
    # always hold at least what these facts claim.
    return IndexFacts(
        closed=row.closed,
        segment_count=row.segments,
        final_link=row.last_link,
    )
