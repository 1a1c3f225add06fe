"""
Names the result columns of a target: which table and column a
RowDescription's (table OID, attribute number) stand for, and which
columns a C{COPY table TO STDOUT} sends.  Masking rules written as
C{schema.table.column} need both; the wire protocol gives neither by name.

Lookups run on a short-lived connection of the gateway's own (never on a
client's session, whose transaction state is the client's), and their
answers are cached for a while: table OIDs do not change under a name
unless the table is dropped and made again.  That connection does not
share a session's search_path, temporary schema or open transaction: a
COPY's table is looked up in every schema (L{Catalog.relation_candidates}).
"""

from __future__ import annotations

from collections.abc import Generator, Iterable, Sequence
from typing import Any

from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.python.failure import Failure

from gatehouse.protocols.postgres import codec
from gatehouse.protocols.postgres.config import PostgresTargetOptions
from gatehouse.protocols.postgres.upstream import (
    UpstreamError,
    UpstreamProtocol,
    UpstreamReady,
    connect_upstream,
)

_Row = tuple[bytes | None, ...]

__all__ = ["Catalog", "Lookups"]

_ROW = codec.BackendType.DATA_ROW
_ERROR = codec.BackendType.ERROR_RESPONSE
_READY = codec.BackendType.READY_FOR_QUERY
_COLUMNS_OF_OIDS = (
    "SELECT a.attrelid, n.nspname, c.relname, a.attnum, a.attname"
    " FROM pg_catalog.pg_attribute a"
    " JOIN pg_catalog.pg_class c ON c.oid = a.attrelid"
    " JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace"
    " WHERE a.attrelid = ANY('{%s}'::pg_catalog.oid[])"
    " AND a.attnum > 0 AND NOT a.attisdropped"
)
#: the relations a COPY may name by C{relname}, in every schema
_COLUMNS_OF_NAME = (
    "SELECT a.attrelid, n.nspname, c.relname, a.attnum, a.attname"
    " FROM pg_catalog.pg_attribute a"
    " JOIN pg_catalog.pg_class c ON c.oid = a.attrelid"
    " JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace"
    " WHERE c.relname = %s AND c.relkind IN ('r', 'p', 'v', 'm', 'f')%s"
    " AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attrelid, a.attnum"
)


def _literal(text: str) -> str:
    """A standard-conforming SQL string literal."""
    return "'" + text.replace("'", "''") + "'"


class _QueryRunner:
    """Collects the rows of one simple query on an upstream connection."""

    def __init__(self, upstream: UpstreamProtocol):
        self.upstream = upstream
        self.reader = codec.FrameReader.backend()
        self.rows: list[_Row] = []
        self.error: str | None = None
        self.done: Deferred[list[_Row]] = Deferred()
        upstream.on_data = self.data
        upstream.on_lost = self.lost

    def run(self, sql: str) -> Deferred[list[_Row]]:
        assert self.upstream.transport is not None
        self.upstream.transport.write(codec.Query(sql).encode())
        return self.done

    def data(self, data: bytes) -> None:
        for kind, body in self.reader.feed_messages(data):
            if kind == _ROW:
                self.rows.append(codec.DataRow.decode(body).values)
            elif kind == _ERROR:
                self.error = codec.ErrorResponse.decode(body).message
            elif kind == _READY and not self.done.called:
                if self.error is not None:
                    self.done.errback(UpstreamError(f"catalog query: {self.error}"))
                else:
                    self.done.callback(self.rows)

    def lost(self, reason: object) -> None:
        if not self.done.called:
            self.done.errback(UpstreamError("catalog connection lost"))


class Catalog:
    """
    Column names of one target, looked up on demand and cached.

    A lookup fails with L{UpstreamError} when connecting, or the query,
    takes longer than C{connect_timeout} (each); cancelling it closes its
    connection.

    @param ttl: seconds an answer is trusted.
    """

    def __init__(
        self,
        reactor: Any,
        options: PostgresTargetOptions,
        target_name: str,
        connect_timeout: float = 10.0,
        ttl: float = 300.0,
    ):
        self._reactor = reactor
        self._options = options
        self._target = target_name
        self._timeout = connect_timeout
        self._ttl = ttl
        #: (table OID, attnum) -> schema.table.column
        self._columns: dict[tuple[int, int], str] = {}
        #: table OID -> when its columns were learnt
        self._known_oids: dict[int, float] = {}

    def column(self, table_oid: int, attnum: int) -> str | None:
        """
        The C{schema.table.column} name, if known and not older than the
        TTL (a renamed table or column is looked up again).
        """
        learnt = self._known_oids.get(table_oid)
        if learnt is None or self._reactor.seconds() - learnt > self._ttl:
            return None
        return self._columns.get((table_oid, attnum))

    def unknown(self, oids: Iterable[int]) -> list[int]:
        """Which of C{oids} need a lookup (never seen, or seen too long ago)."""
        now = self._reactor.seconds()
        return sorted(
            {o for o in oids if now - self._known_oids.get(o, -1e18) > self._ttl}
        )

    def lookup_oids(self, oids: Iterable[int]) -> Deferred[list[_Row]]:
        """Learn the columns of the tables C{oids}."""
        numbers = [int(o) for o in oids]
        return self._query(_COLUMNS_OF_OIDS % ",".join(map(str, numbers)), numbers)

    @inlineCallbacks
    def relation_candidates(
        self, relation: str
    ) -> Generator[Deferred[Any], Any, list[list[str]]]:
        """
        Every table C{relation} may stand for, whatever the search_path:
        for C{schema.table} the one table; for an unqualified name, the
        tables of that name in every schema (the client's session may
        have its own search_path and temporary schema, which the gateway's
        connection does not share).

        @param relation: the name as the parser read it (case kept),
            C{table}, C{schema.table} or C{database.schema.table}.
        @return: a list of candidates, each the C{schema.table.column}
            names of its columns in table order.
        """
        parts = relation.split(".")
        schema = ""
        if len(parts) >= 2:
            schema = " AND n.nspname = " + _literal(parts[-2])
        rows = yield self._query(_COLUMNS_OF_NAME % (_literal(parts[-1]), schema), ())
        assert isinstance(rows, list)
        tables: dict[bytes | None, list[str]] = {}
        for row in rows:
            tables.setdefault(row[0], []).append(self._learn(row))
        return list(tables.values())

    @inlineCallbacks
    def _query(
        self, sql: str, oids: Sequence[int]
    ) -> Generator[Deferred[Any], Any, list[_Row]]:
        ready = yield connect_upstream(
            self._reactor,
            self._options,
            self._target,
            (("application_name", "gatehouse catalog"),),
            self._timeout,
        )
        assert isinstance(ready, UpstreamReady)
        timeout = self._timeout
        try:
            running = _QueryRunner(ready.protocol).run(sql)
            running.addTimeout(
                timeout,
                self._reactor,
                onTimeoutCancel=lambda result, _: Failure(
                    UpstreamError(f"catalog query: no answer within {timeout:g} s")
                ),
            )
            rows: list[_Row] = yield running
        finally:
            ready.protocol.on_lost = None
            transport = ready.protocol.transport
            if transport is not None:
                transport.write(codec.Terminate().encode())
                transport.loseConnection()
        now = self._reactor.seconds()
        for oid in oids:
            self._known_oids[oid] = now
        for row in rows:
            self._learn(row)
        return rows

    def _learn(self, row: _Row) -> str:
        oid, schema, table, attnum, name = (v.decode() if v else "" for v in row)
        full = f"{schema}.{table}.{name}"
        self._columns[(int(oid), int(attnum))] = full
        self._known_oids[int(oid)] = self._reactor.seconds()
        return full


class Lookups:
    """
    The catalog lookups one client connection waits for: cancelled (their
    connections closed) when it goes away, rather than left to finish for
    nobody.
    """

    def __init__(self) -> None:
        self._pending: set[Deferred[Any]] = set()

    def track(self, lookup: Deferred[Any]) -> Deferred[Any]:
        """Remember C{lookup} until it ends; returns it."""
        self._pending.add(lookup)

        def ended(result: object) -> object:
            self._pending.discard(lookup)
            return result

        lookup.addBoth(ended)
        return lookup

    def cancel_all(self) -> None:
        """Cancel every lookup still running."""
        for lookup in list(self._pending):
            lookup.cancel()
