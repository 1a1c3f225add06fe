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

Text that SQLite cannot hold faithfully (bytes that were not valid in the
client's encoding, which the protocol codecs keep as lone surrogates, other
lone surrogates, and NUL, which SQLite's own text functions and its shell
stop at) is stored escaped by L{index_text}, reversibly; the row's
C{escaped} column names the columns that hold escaped text, and
L{unescape_index_text} gives back the exact string.  A write that fails
anyway is retried alone, so it never takes other rows with it; what it
could not write is replaced by a placeholder that names the failure, noted
in the session's C{index_problems}, and reported to the observers of
L{SessionIndex.observe_failures} (the session hub records it in the
session's recording).
"""

from __future__ import annotations

import json
import os
import pathlib
import re
import sqlite3
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import attrs
from twisted.internet.defer import Deferred, succeed
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.python.threadpool import ThreadPool

if TYPE_CHECKING:
    from gatehouse.policy.approval import ApprovalRequest
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
    "index_text",
    "query_sessions",
    "unescape_index_text",
    "write_rows",
]

#: The schema version this module writes, kept in C{PRAGMA user_version}.
SCHEMA_VERSION = 4

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
    (
        # The upstream account (PostgreSQL role, SSH user) the session used.
        "ALTER TABLE sessions ADD COLUMN upstream_role TEXT NOT NULL DEFAULT ''",
        # Comma-separated names of the columns that hold escaped text
        # (see index_text).
        "ALTER TABLE sessions ADD COLUMN escaped TEXT NOT NULL DEFAULT ''",
        "ALTER TABLE commands ADD COLUMN escaped TEXT NOT NULL DEFAULT ''",
        "ALTER TABLE approvals ADD COLUMN escaped TEXT NOT NULL DEFAULT ''",
        # What the index failed to write about the session, one per line.
        "ALTER TABLE sessions ADD COLUMN index_problems TEXT NOT NULL DEFAULT ''",
    ),
    (
        # The channel (SSH channel, HTTP stream) whose record carried the
        # command; every command before channels came was on channel 0.
        "ALTER TABLE commands ADD COLUMN channel INTEGER NOT NULL DEFAULT 0",
    ),
)

_log = Logger(namespace="gatehouse.recording.index")


# --- text SQLite can hold ---------------------------------------------------

_UNSAFE = re.compile("[\\x00\\ud800-\\udfff]")
_ESCAPED = re.compile(r"\\(?:\\|x([0-9a-f]{2})|u(d[89a-f][0-9a-f]{2}))")


def _escape_match(match: re.Match[str]) -> str:
    ch = match.group()
    code = ord(ch)
    if code == 0:
        return "\\x00"
    if 0xDC80 <= code <= 0xDCFF:
        # A byte that was not valid in its encoding (surrogateescape).
        return f"\\x{code - 0xDC00:02x}"
    return f"\\u{code:04x}"


def index_text(value: str) -> tuple[str, bool]:
    """
    C{value} as the index stores it, and whether it had to be escaped.

    Text SQLite holds faithfully is stored as it is.  Text with a NUL or a
    lone surrogate (what C{surrogateescape} makes of a byte that was not
    valid in the client's encoding) is escaped: a backslash becomes
    C{\\\\}, NUL C{\\x00}, the surrogate for an undecodable byte C{\\xHH}
    (the byte itself, 80 to ff), any other lone surrogate C{\\udXXX};
    every other character stays.  L{unescape_index_text} reverses it.
    """
    # isascii and "in" run at memory speed; the search costs ~25 ns a
    # character, 30 ms on the reactor for a 1.3 MB statement.
    if (value.isascii() and "\0" not in value) or _UNSAFE.search(value) is None:
        return value, False
    return _UNSAFE.sub(_escape_match, value.replace("\\", "\\\\")), True


def _unescape_match(match: re.Match[str]) -> str:
    byte, surrogate = match.groups()
    if byte is not None:
        code = int(byte, 16)
        return chr(0xDC00 + code if code >= 0x80 else code)
    if surrogate is not None:
        return chr(int(surrogate, 16))
    return "\\"


def unescape_index_text(value: str) -> str:
    """
    The exact text behind a value L{index_text} escaped; encoding it with
    the client's encoding and C{surrogateescape} gives back the bytes.
    """
    return _ESCAPED.sub(_unescape_match, value)


def _safe(names: Sequence[str], values: Sequence[Any]) -> tuple[list[Any], str]:
    """
    C{values} with every C{str} made storable (L{index_text}), and the
    comma-separated names of those that were escaped.
    """
    out: list[Any] = []
    escaped: list[str] = []
    for name, value in zip(names, values, strict=True):
        if isinstance(value, str):
            value, was = index_text(value)
            if was:
                escaped.append(name)
        out.append(value)
    return out, ",".join(escaped)


def _problem_text(error: str) -> str:
    return index_text(error)[0].replace("\n", " ")


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
    #: the upstream account the session used (a PostgreSQL role), if any
    upstream_role: str = ""
    #: the columns whose text is stored escaped (L{index_text})
    escaped: tuple[str, ...] = attrs.field(default=(), converter=_tuple_of_str)
    #: what the index failed to write about this session, one per line
    index_problems: str = ""

    @property
    def closed(self) -> bool:
        """Whether the session has ended."""
        return self.ended is not None

    @property
    def identity(self) -> str:
        """
        The subject (the stable id), with the display name beside it in
        parentheses when there is one: a name never stands in for the
        subject, since any token may claim any name.
        """
        if self.display_name and self.display_name != self.subject:
            return f"{self.subject} ({self.display_name})"
        return self.subject


@attrs.frozen(kw_only=True)
class CommandRow:
    """
    One command seen in a session: a SQL statement, an SSH exec line, a
    Kubernetes request, and what the policy decided about it.

    @ivar seq: the sequence number of the record that carried the command.
    @ivar channel: the channel of that record (an SSH channel, an HTTP
        stream; 0 for protocols with one stream).
    @ivar at: Unix time, in seconds.
    @ivar objects: what the command touched (tables, resources).
    """

    session_id: str
    seq: int
    at: float
    kind: str
    text: str
    decision: str
    channel: int = 0
    objects: tuple[str, ...] = attrs.field(default=(), converter=_tuple_of_str)
    #: the fields whose text is stored escaped (L{index_text}); set by the
    #: readers
    escaped: tuple[str, ...] = attrs.field(default=(), converter=_tuple_of_str)


class IndexUnavailable(Exception):
    """The index cannot be read; the message names the file and why."""


# --- writer (daemon side) -------------------------------------------------


@attrs.frozen
class _Write:
    """
    One queued statement; C{what} names it in log messages.

    Its C{str} parameters are made storable with L{index_text} when it is
    built (L{_Write.of}); the C{escaped} parameter, when the statement has
    one, receives the names of those that were escaped.
    """

    what: str
    sql: str
    params: tuple[Any, ...] | dict[str, Any]
    #: an UPDATE that changes no row means the session is unknown
    expect_row: bool = False
    #: the session the write is about, to note its failures there
    session_id: str | None = None
    #: makes the statement that stands in for this one if it fails alone
    #: (given the failure), so that the row still exists and says why
    fallback: Callable[[str], _Write] | None = None

    @classmethod
    def of(
        cls,
        what: str,
        sql: str,
        fields: Sequence[tuple[str, Any]],
        **options: Any,
    ) -> _Write:
        """
        A write of C{sql} with the values of C{fields} (name, value) as its
        parameters, in order, and the escaped names where C{sql} has
        C{:escaped} (named parameters) when it names them.
        """
        names = [name for name, _ in fields]
        values, escaped = _safe(names, [value for _, value in fields])
        params = dict(zip(names, values, strict=True))
        params["escaped"] = escaped
        return cls(what, sql, params, **options)


@attrs.frozen
class _Outcome:
    """What became of one write (on the index thread)."""

    committed: bool
    note: str | None = None
    #: why it failed alone, and whether its placeholder was written
    failure: str | None = None
    placeholder: bool = False


_INSERT_SESSION = """
    INSERT INTO sessions (
        id, gateway_id, protocol, target, listener, subject, display_name,
        issuer, groups, client_address, started, directory, escaped
    ) VALUES (
        :id, :gateway_id, :protocol, :target, :listener, :subject,
        :display_name, :issuer, :groups, :client_address, :started,
        :directory, :escaped
    )
"""
# Applied only for a segment the index has not seen yet, so a repeated or
# late report cannot count records twice or move the last link backwards.
_SEAL_SEGMENT = """
    UPDATE sessions SET
        segments = :segment + 1, last_link = :link, final = :final,
        records = records + :records
    WHERE id = :id AND segments <= :segment
"""
# escaped: the names this write escaped are added to the row's list.
_ADD_ESCAPED = "trim(escaped || ',' || :escaped, ',')"
_IDENTIFY_SESSION = f"""
    UPDATE sessions SET
        subject = :subject, display_name = :display_name, issuer = :issuer,
        groups = :groups, target = coalesce(:target, target),
        escaped = {_ADD_ESCAPED}
    WHERE id = :id
"""
_UPSTREAM_ROLE = f"""
    UPDATE sessions SET upstream_role = :upstream_role, escaped = {_ADD_ESCAPED}
    WHERE id = :id
"""
_CLOSE_SESSION = f"""
    UPDATE sessions SET
        ended = :ended, close_reason = :close_reason,
        bytes_from_client = :bytes_from_client,
        bytes_to_client = :bytes_to_client,
        bytes_to_upstream = :bytes_to_upstream,
        bytes_from_upstream = :bytes_from_upstream,
        masked_values = :masked_values, escaped = {_ADD_ESCAPED}
    WHERE id = :id
"""
_NOTE_PROBLEM = """
    UPDATE sessions SET index_problems = index_problems || ? || char(10)
    WHERE id = ?
"""
_UPSERT_APPROVAL = """
    INSERT OR REPLACE INTO approvals
        (id, session_id, state, rule, requester, created, expires, reason,
         request, escaped)
    VALUES (:id, :session_id, :state, :rule, :requester, :created, :expires,
            :reason, :request, :escaped)
"""
_INSERT_COMMAND = """
    INSERT INTO commands
        (session_id, seq, channel, at, kind, text, decision, objects, escaped)
    VALUES (:session_id, :seq, :channel, :at, :kind, :text, :decision, :objects,
            :escaped)
"""
#: the end reason of sessions a gateway left open when it died (kill -9,
#: power loss), set at its next start; their recordings end unsealed
CRASHED = "gateway crashed (found open at restart)"
#: the kind of a command row that stands in for one the index could not write
NOT_INDEXED = "(not indexed)"


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


def _fits(value: object) -> bool:
    """Whether an integer fits SQLite's 64-bit INTEGER."""
    return not isinstance(value, int) or -(2**63) <= value < 2**63


def _apply(conn: sqlite3.Connection, write: _Write) -> str | None:
    cursor = conn.execute(write.sql, write.params)
    if write.expect_row and cursor.rowcount == 0:
        return f"{write.what}: no such session in the index (or already recorded)"
    return None


def _transaction(
    conn: sqlite3.Connection, writes: Sequence[_Write]
) -> list[str | None]:
    conn.execute("BEGIN IMMEDIATE")
    try:
        notes = [_apply(conn, w) for w in writes]
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return notes


def _write_batch(conn: sqlite3.Connection, writes: list[_Write]) -> list[_Outcome]:
    """
    Write C{writes} in one transaction; runs on the index thread.

    If any write fails on its own account, the batch is rolled back and
    every write is tried alone (L{_write_alone}): one bad row never takes
    the others with it.

    @return: per write, what became of it.
    """
    try:
        notes = _transaction(conn, writes)
        return [_Outcome(True, note) for note in notes]
    except sqlite3.OperationalError as e:
        # The database (locked by another writer, full, unreadable), not one
        # write: writing each alone would wait out busy_timeout per write.
        return [_Outcome(False, f"{w.what}: {e}") for w in writes]
    except Exception:
        if len(writes) > 1:
            return [_write_alone(conn, w) for w in writes]
    return [_write_alone(conn, writes[0])]


def _write_alone(conn: sqlite3.Connection, write: _Write) -> _Outcome:
    try:
        (note,) = _transaction(conn, [write])
        return _Outcome(True, note)
    except sqlite3.OperationalError as e:
        return _Outcome(False, f"{write.what}: {e}")
    except Exception as e:
        error = _problem_text(f"{type(e).__name__}: {e}")
    placeholder = False
    if write.fallback is not None:
        try:
            _transaction(conn, [write.fallback(error)])
            placeholder = True
        except Exception as e:
            error += _problem_text(f"; its placeholder failed too: {e}")
    if write.session_id is not None:
        try:
            _transaction(
                conn,
                [
                    _Write(
                        "note",
                        _NOTE_PROBLEM,
                        (_problem_text(f"{write.what}: {error}"), write.session_id),
                    )
                ],
            )
        except Exception:
            pass  # logged and reported by the caller all the same
    return _Outcome(False, f"{write.what}: {error}", error, placeholder)


def _close_orphans(
    conn: sqlite3.Connection, gateway_id: str, before: float, ended: float, reason: str
) -> list[str]:
    """L{SessionIndex.close_orphans} on the index thread."""
    where = "gateway_id = ? AND ended IS NULL AND started < ?"
    conn.execute("BEGIN IMMEDIATE")
    try:
        ids = [
            row[0]
            for row in conn.execute(
                f"SELECT id FROM sessions WHERE {where}", (gateway_id, before)
            )
        ]
        conn.execute(
            f"UPDATE sessions SET ended = ?, close_reason = ? WHERE {where}",
            (ended, reason, gateway_id, before),
        )
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return ids


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
        self._failure_observers: list[Callable[[str, str, str, bool], object]] = []

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

    def close_orphans(
        self, gateway_id: str, before: float, ended: float, reason: str
    ) -> Deferred[list[str]]:
        """
        Mark as ended every session of C{gateway_id} that started before
        C{before} and is still open in the index: at start, those were
        left open by a gateway that died without closing them (C{kill -9},
        power loss).  Their recordings are left as they are: the last
        segment stays unsealed, as verify says.

        Call it after L{start} has fired.

        @return: Deferred firing with the ids of the sessions marked.
        """
        conn = self._conn
        if not self._open or conn is None:
            return succeed([])
        return deferToThreadPool(
            self._reactor,
            self._pool,
            _close_orphans,
            conn,
            gateway_id,
            before,
            ended,
            reason,
        )

    def session_opened(self, row: SessionRow) -> Deferred[bool]:
        """Record a new session (its identity fields; counters start at zero)."""
        fields = [
            ("id", row.id),
            ("gateway_id", row.gateway_id),
            ("protocol", row.protocol),
            ("target", row.target),
            ("listener", row.listener),
            ("subject", row.subject),
            ("display_name", row.display_name),
            ("issuer", row.issuer),
            ("groups", json.dumps(list(row.groups))),
            ("client_address", row.client_address),
            ("started", row.started),
            ("directory", row.directory),
        ]

        def placeholder(error: str) -> _Write:
            # The session must exist for its later reports (and the reader
            # that finds it by its directory): keep what identifies it.
            kept = dict(fields)
            for name in ("target", "subject", "display_name", "issuer"):
                kept[name] = NOT_INDEXED
            kept["groups"] = "[]"
            return _Write.of(
                f"session {row.id} opened", _INSERT_SESSION, [*kept.items()]
            )

        return self._submit(
            _Write.of(
                f"session {row.id} opened",
                _INSERT_SESSION,
                fields,
                session_id=row.id,
                fallback=placeholder,
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
        fields = [
            ("subject", identity.subject or ""),
            ("display_name", identity.name or ""),
            ("issuer", identity.issuer or ""),
            ("groups", json.dumps(list(identity.groups or ()))),
            ("target", target),
            ("id", session_id),
        ]

        def placeholder(error: str) -> _Write:
            kept = dict(fields)
            for name in ("subject", "display_name", "issuer"):
                kept[name] = NOT_INDEXED
            kept["groups"] = "[]"
            kept["target"] = None if target is None else NOT_INDEXED
            return _Write.of("placeholder", _IDENTIFY_SESSION, [*kept.items()])

        return self._submit(
            _Write.of(
                f"session {session_id} identified",
                _IDENTIFY_SESSION,
                fields,
                expect_row=True,
                session_id=session_id,
                fallback=placeholder,
            )
        )

    def session_upstream(self, session_id: str, role: str) -> Deferred[bool]:
        """Record the upstream account (a PostgreSQL role) a session uses."""
        return self._submit(
            _Write.of(
                f"session {session_id} upstream role",
                _UPSTREAM_ROLE,
                [("upstream_role", role), ("id", session_id)],
                expect_row=True,
                session_id=session_id,
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
            _Write.of(
                f"session {session_id} segment {segment_index} sealed",
                _SEAL_SEGMENT,
                [
                    ("segment", segment_index),
                    ("link", bytes(link)),
                    ("final", 1 if final else 0),
                    ("records", records),
                    ("id", session_id),
                ],
                expect_row=True,
                session_id=session_id,
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
        fields = [
            ("ended", ended),
            ("close_reason", reason),
            ("bytes_from_client", bytes_from_client),
            ("bytes_to_client", bytes_to_client),
            ("bytes_to_upstream", bytes_to_upstream),
            ("bytes_from_upstream", bytes_from_upstream),
            ("masked_values", masked_values),
            ("id", session_id),
        ]

        def placeholder(error: str) -> _Write:
            # The end is what matters most (an open session looks alive).
            kept = dict(fields)
            kept["close_reason"] = f"{NOT_INDEXED}: {error}"
            for name, value in fields:
                if name.startswith(("bytes_", "masked")) and not _fits(value):
                    kept[name] = -1
            return _Write.of("placeholder", _CLOSE_SESSION, [*kept.items()])

        return self._submit(
            _Write.of(
                f"session {session_id} closed",
                _CLOSE_SESSION,
                fields,
                expect_row=True,
                session_id=session_id,
                fallback=placeholder,
            )
        )

    def command_seen(self, command: CommandRow) -> Deferred[bool]:
        """Record one command and the decision about it."""
        fields = [
            ("session_id", command.session_id),
            ("seq", command.seq),
            ("channel", command.channel),
            ("at", command.at),
            ("kind", command.kind),
            ("text", command.text),
            ("decision", command.decision),
            ("objects", json.dumps(list(command.objects))),
        ]

        def placeholder(error: str) -> _Write:
            # The row stays, so the session still shows a command here; the
            # recording holds the command itself.
            kept = dict(fields)
            kept["kind"] = NOT_INDEXED
            kept["text"] = f"[the index could not store this command: {error}]"
            kept["objects"] = "[]"
            for name in ("seq", "channel"):
                if not _fits(kept[name]):
                    kept[name] = -1
            return _Write.of("placeholder", _INSERT_COMMAND, [*kept.items()])

        return self._submit(
            _Write.of(
                f"session {command.session_id} command at seq {command.seq}",
                _INSERT_COMMAND,
                fields,
                session_id=command.session_id,
                fallback=placeholder,
            )
        )

    def approval_changed(self, request: ApprovalRequest) -> Deferred[bool]:
        """Record an approval request's latest state and votes."""
        fields = [
            ("id", request.id),
            ("session_id", request.session_id),
            ("state", request.state),
            ("rule", request.rule),
            ("requester", request.requester.subject),
            ("created", request.created),
            ("expires", request.expires),
            ("reason", request.reason),
            ("request", json.dumps(request.as_json(), sort_keys=True)),
        ]

        def placeholder(error: str) -> _Write:
            kept = dict(fields)
            kept["reason"] = f"{NOT_INDEXED}: {error}"
            kept["request"] = json.dumps({"id": request.id, "index_error": error})
            return _Write.of("placeholder", _UPSERT_APPROVAL, [*kept.items()])

        return self._submit(
            _Write.of(
                f"approval {request.id}",
                _UPSERT_APPROVAL,
                fields,
                session_id=request.session_id,
                fallback=placeholder,
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
        conn = self._conn
        if conn is None:
            self._abandon("the index is closed")
            return
        batch: list[tuple[_Write, Deferred[bool]]] = []
        while self._queue and len(batch) < self._max_batch:
            batch.append(self._queue.popleft())
        self._busy = True
        d = deferToThreadPool(
            self._reactor, self._pool, _write_batch, conn, [w for w, _ in batch]
        )
        d.addBoth(self._written, batch)

    def _written(
        self,
        result: list[_Outcome] | Failure,
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
            why = f"index write failed: {result.getErrorMessage()}"
            result = [_Outcome(False, why, why) for _ in batch]
        problems = [outcome.note for outcome in result if outcome.note]
        if problems:
            _log.warn(
                "session index {path}: {count} of {total} writes had problems; "
                "first: {first}",
                path=self.path,
                count=len(problems),
                total=len(batch),
                first=problems[0],
            )
        for (write, d), outcome in zip(batch, result, strict=True):
            if outcome.failure is not None and write.session_id is not None:
                for observer in self._failure_observers:
                    try:
                        observer(
                            write.session_id,
                            write.what,
                            outcome.failure,
                            outcome.placeholder,
                        )
                    except Exception:
                        _log.failure("session index: reporting a failed write")
            d.callback(outcome.committed)
        if self._queue:
            self._flush()
        else:
            self._notify(self._idle)

    def observe_failures(
        self, observer: Callable[[str, str, str, bool], object]
    ) -> None:
        """
        Call C{observer(session_id, what, error, placeholder)} for each
        write that failed on its own account (not for a database that is
        unavailable as a whole): C{what} names the write, C{placeholder}
        says whether a stand-in row naming the failure was written.
        """
        self._failure_observers.append(observer)


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
    values["escaped"] = _names(values["escaped"])
    return SessionRow(**values)


def _names(escaped: str) -> tuple[str, ...]:
    return tuple(sorted({name for name in escaped.split(",") if name}))


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
    name: str | None = None,
) -> list[SessionRow]:
    """
    Find sessions, newest first.

    @param identity: the subject, exactly (the issuer's stable id; a
        display name is whatever the token claims, so it never matches
        here).
    @param name: a substring of the display name (any case).
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
        where.append("s.subject = :identity")
        params["identity"] = index_text(identity)[0]
    if name:
        where.append("instr(lower(s.display_name), :name) > 0")
        params["name"] = index_text(name)[0].lower()
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
        params["command"] = index_text(command)[0].lower()
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
            "SELECT session_id, seq, channel, at, kind, text, decision, objects,"
            " escaped FROM commands WHERE session_id = ? ORDER BY seq, rowid",
            (session_id.lower(),),
        ).fetchall()
    return [
        CommandRow(
            session_id=row["session_id"],
            seq=row["seq"],
            channel=row["channel"],
            at=row["at"],
            kind=row["kind"],
            text=row["text"],
            decision=row["decision"],
            objects=json.loads(row["objects"]),
            escaped=_names(row["escaped"]),
        )
        for row in rows
    ]


def approvals_for(path: str, session_id: str) -> list[dict[str, Any]]:
    """
    The approval requests of one session, oldest first, as recorded
    (L{gatehouse.policy.approval.ApprovalRequest.as_json}).

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
        # A crash is not a close: the recorder never wrote the final seal,
        # and verify must say so (an unsealed end), not that it was cut.
        closed=row.closed and row.close_reason != CRASHED,
        segment_count=row.segments,
        final_link=row.last_link,
    )


def _column(name: str, value: Any) -> Any:
    if name == "groups":
        return json.dumps(list(value))
    return int(value) if name == "final" else value


def write_rows(
    path: str, sessions: Sequence[SessionRow], commands: Sequence[CommandRow]
) -> None:
    """
    Write a new index at C{path} (which must not exist yet) holding
    C{sessions} and C{commands}, in one transaction (for
    L{gatehouse.recording.index_check.rebuild_index}).
    """
    if os.path.exists(path):
        raise FileExistsError(path)
    conn = _open_writer(path)
    try:
        conn.execute("BEGIN IMMEDIATE")
        for row in sessions:
            names = [f.name for f in attrs.fields(SessionRow) if f.name != "escaped"]
            values = [getattr(row, n) for n in names]
            values = [_column(n, v) for n, v in zip(names, values, strict=True)]
            safe, escaped = _safe(names, values)
            params = dict(zip(names, safe, strict=True), escaped=escaped)
            conn.execute(
                f"INSERT INTO sessions ({', '.join(params)})"
                f" VALUES ({', '.join(':' + n for n in params)})",
                params,
            )
        for command in commands:
            names = [
                "session_id",
                "seq",
                "channel",
                "at",
                "kind",
                "text",
                "decision",
                "objects",
            ]
            values = [getattr(command, n) for n in names[:-1]]
            values.append(json.dumps(list(command.objects)))
            safe, escaped = _safe(names, values)
            conn.execute(
                _INSERT_COMMAND, dict(zip(names, safe, strict=True), escaped=escaped)
            )
        conn.execute("COMMIT")
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        conn.close()
