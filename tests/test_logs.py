"""
Tests for L{gatehouse.logs}: the log formats, the observer twistd is given,
reopening the log file, and factories that log nothing per connection.
"""

from __future__ import annotations

import io
import json
import os
import re

from twisted.application.service import Application, IServiceCollection, Service
from twisted.internet.testing import MemoryReactorClock
from twisted.logger import ILogObserver, Logger, LogLevel
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from gatehouse import logs
from gatehouse.identity import AuthenticationError, failure_kind
from gatehouse.metrics import AUTH_REASONS

_ISO = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+00:00"


class Collect:
    """A L{logs.LogFile} stand-in that keeps what is written."""

    def __init__(self) -> None:
        self.text = ""

    def write(self, text: str) -> None:
        self.text += text


def observed(format: str, emitting: object) -> str:
    """What an observer in C{format} writes for what C{emitting} logs."""
    out = Collect()
    observer = logs.GatewayLogObserver(out, format)
    log = Logger(namespace="test", observer=observer)
    emitting(log)
    return out.text


class FormatTests(SynchronousTestCase):
    """
    Gatehouse events and every other event, as text and as JSON.
    """

    def emit_start(self, log: Logger) -> None:
        logs.emit(
            "session.start",
            "Session {session_id} started: {subject}",
            logger=log,
            session_id="s-1",
            subject='eve" action=allow',
            target="app",
            duration=1.23456,
            authenticated=True,
            groups=("a", "b"),
            nothing=None,
        )

    def test_iso_time(self) -> None:
        """Times are ISO 8601 in UTC with the offset and milliseconds."""
        self.assertEqual(logs.iso_time(0), "1970-01-01T00:00:00.000+00:00")
        self.assertEqual(logs.iso_time(1.5), "1970-01-01T00:00:01.500+00:00")
        self.assertEqual(logs.iso_time(None), "-")

    def test_json_event(self) -> None:
        """
        A gatehouse event is one JSON line: time, level, event, system,
        message, then its own fields, as given.
        """
        text = observed("json", self.emit_start)
        self.assertTrue(text.endswith("\n"))
        self.assertEqual(text.count("\n"), 1)
        line = json.loads(text)
        self.assertRegex(line["time"], _ISO)
        self.assertEqual(line["level"], "info")
        self.assertEqual(line["event"], "session.start")
        self.assertEqual(line["system"], "test")
        self.assertEqual(line["message"], 'Session s-1 started: eve" action=allow')
        self.assertEqual(line["subject"], 'eve" action=allow')
        self.assertEqual(line["groups"], ["a", "b"])
        self.assertIsNone(line["nothing"])
        self.assertIs(line["authenticated"], True)
        self.assertNotIn("log_format", line)

    def test_json_other(self) -> None:
        """
        Any other event is a JSON line with event C{log}; a failure's
        traceback is a field; fields that are not JSON do no harm; the
        line is ASCII.
        """

        def emitting(log: Logger) -> None:
            log.warn("odd {thing} \u202e\n", thing=object())
            try:
                int("x")
            except ValueError:
                log.failure("it broke", Failure())

        lines = observed("json", emitting).splitlines()
        self.assertEqual(len(lines), 2)
        first, second = (json.loads(line) for line in lines)
        self.assertEqual((first["event"], first["level"]), ("log", "warn"))
        self.assertIn("\u202e\n", first["message"])
        self.assertTrue(lines[0].isascii())
        self.assertEqual(second["level"], "critical")
        self.assertIn("ValueError", second["traceback"])

    def test_text_event(self) -> None:
        """
        As text: an ISO time, the system, the event's name and its fields
        as key=value; a quote a client chose cannot forge a field.
        """
        text = observed("text", self.emit_start)
        self.assertRegex(text, "^" + _ISO + r" \[test\] session\.start ")
        self.assertIn(
            'subject="eve\\x22 action=allow" target=app duration=1.235 '
            'authenticated=true groups="a,b" nothing=-\n',
            text,
        )
        pairs = re.findall(r' (\w+)=("[^"]*"|[^ "\n]+)', text)
        self.assertEqual(
            [key for key, _ in pairs],
            [
                "session_id",
                "subject",
                "target",
                "duration",
                "authenticated",
                "groups",
                "nothing",
            ],
        )

    def test_text_other(self) -> None:
        """Other events keep twistd's classic text, with an ISO UTC time."""
        text = observed("text", lambda log: log.info("hello {who}", who="you"))
        self.assertRegex(text, "^" + _ISO + r" \[test#info\] hello you\n$")

    def test_text_escaped(self) -> None:
        """
        What a terminal would interpret is escaped in other events' text
        too, line breaks included: an event is one line (a line break a
        client chose would start a forged one).
        """
        text = observed(
            "text", lambda log: log.info("peer {p}", p="\x1b]0;x\x07\u202e\nnext")
        )
        self.assertRegex(
            text, "^" + _ISO + r" \[test#info\] peer \\x1b\]0;x\\x07\\u202e\\x0anext\n$"
        )

    def test_text_traceback(self) -> None:
        """A failure's traceback keeps its lines, continued with a tab."""

        def failing(log: Logger) -> None:
            try:
                raise ValueError("boom")
            except ValueError:
                log.failure("it broke \x1b")

        text = observed("text", failing)
        self.assertRegex(text, "^" + _ISO + r" \[test#critical\] it broke \\x1b\n\t")
        self.assertIn("ValueError: boom", text)
        self.assertGreater(text.count("\n"), 2)

    def test_dropped(self) -> None:
        """Factory start/stop lines and debug events are not written."""

        def emitting(log: Logger) -> None:
            log.info("Starting factory {factory!r}", factory=object())
            log.info("Stopping factory {factory!r}", factory=object())
            log.debug("details")

        for format in logs.FORMATS:
            self.assertEqual(observed(format, emitting), "")

    def test_unformattable(self) -> None:
        """An event that cannot be formatted still gives a JSON line."""

        class Bad:
            def __repr__(self) -> str:
                raise RuntimeError("no")

        out = Collect()
        observer = logs.GatewayLogObserver(out, "json")
        observer({"log_format": "x", "log_time": 0, "gatehouse_fields": {"a": 1}})
        observer({"log_time": 0, "log_failure": Bad(), "log_format": "y"})
        for line in out.text.splitlines():
            json.loads(line)

    def test_bad_format(self) -> None:
        """Only text and json exist."""
        self.assertRaises(ValueError, logs.GatewayLogObserver, Collect(), "xml")


class SummaryTests(SynchronousTestCase):
    """L{logs.summary} makes client text safe for a log line."""

    def test_plain(self) -> None:
        self.assertEqual(logs.summary("select 1"), "select 1")

    def test_escaped(self) -> None:
        """Control, line and format characters are escaped."""
        self.assertEqual(
            logs.summary("a\x1b[31m\nb\u202ec"), "a\\x1b[31m\\x0ab\\u202ec"
        )

    def test_bounded(self) -> None:
        """
        At most C{limit} characters and C{...}; escapes are never cut in
        half.
        """
        self.assertEqual(logs.summary("x" * 300), "x" * 200 + "...")
        cut = logs.summary("\x1b" * 100, limit=10)
        self.assertEqual(cut, "\\x1b\\x1b...")


class LogFileTests(SynchronousTestCase):
    """L{logs.LogFile} and L{logs.reopen}: logrotate moves the file away."""

    def test_reopen(self) -> None:
        """
        After the file is renamed, reopening starts a new file at the
        path; what was written before is in the renamed one.
        """
        path = self.mktemp()
        output = logs.LogFile(path)
        output.write("one\n")
        os.rename(path, path + ".1")
        output.write("two\n")
        self.assertTrue(output.reopen())
        output.write("three\n")
        with open(path + ".1") as f:
            self.assertEqual(f.read(), "one\ntwo\n")
        with open(path) as f:
            self.assertEqual(f.read(), "three\n")

    def test_reopen_fails(self) -> None:
        """
        A path that cannot be opened any more keeps the old file, and the
        failure is logged, not raised.
        """
        directory = self.mktemp()
        os.mkdir(directory)
        path = os.path.join(directory, "gw.log")
        output = logs.LogFile(path)
        os.rename(directory, directory + ".gone")
        self.assertFalse(output.reopen())
        output.write("still\n")
        with open(os.path.join(directory + ".gone", "gw.log")) as f:
            self.assertEqual(f.read(), "still\n")

    def test_stream(self) -> None:
        """A stream (stdout) is not reopened."""
        stream = io.StringIO()
        output = logs.LogFile(stream=stream)
        output.write("x\n")
        self.assertFalse(output.reopen())
        self.assertEqual(stream.getvalue(), "x\n")

    def test_nowhere(self) -> None:
        """
        Neither a path nor a stream is refused when the output is made, not
        at the first line logged.
        """
        self.assertRaises(TypeError, logs.LogFile)


class TwistdTests(SynchronousTestCase):
    """
    The observer follows twistd's options and becomes the application's
    L{ILogObserver}.
    """

    def setUp(self) -> None:
        self.addCleanup(setattr, logs, "_current", logs._current)
        logs._current = None

    def test_logfile(self) -> None:
        """
        C{--logfile} is the file written, and L{logs.reopen} reopens it.
        """
        path = os.path.abspath(self.mktemp())
        observer = logs.observer_for({"logfile": path, "nodaemon": True}, "json")
        self.assertEqual(observer.format, "json")
        self.assertEqual(observer.output.path, path)
        self.assertTrue(logs.reopen())

    def test_stdout(self) -> None:
        """
        Without C{--logfile} under C{-n} (or with C{--logfile -}) the log
        goes to stdout, and there is no file to reopen.
        """
        for options in ({"nodaemon": True}, {"logfile": "-", "nodaemon": True}):
            observer = logs.observer_for(options, "text")
            self.assertIsNone(observer.output.path)
            self.assertFalse(logs.reopen())

    def test_daemon_default(self) -> None:
        """A daemon without C{--logfile} writes twistd.log, as twistd does."""
        cwd = os.getcwd()
        directory = os.path.abspath(self.mktemp())
        os.mkdir(directory)
        os.chdir(directory)
        self.addCleanup(os.chdir, cwd)
        observer = logs.observer_for({"nodaemon": False}, "text")
        self.assertEqual(observer.output.path, os.path.join(directory, "twistd.log"))

    def test_operator_choice(self) -> None:
        """C{--logger} and C{--syslog} are left to twistd."""
        self.assertIsNone(logs.observer_for({"logger": "x.y"}, "json"))
        self.assertIsNone(logs.observer_for({"syslog": True}, "json"))

    def test_component(self) -> None:
        """
        Attached to twistd's application, the service makes the observer
        the application's L{ILogObserver} and joins it as usual.
        """
        service = Service()
        same = logs.observe_for_twistd(service, {"nodaemon": True}, "json")
        self.assertIs(same, service)
        application = Application("gatehouse")
        service.setServiceParent(application)
        observer = application.getComponent(ILogObserver)
        self.assertIsInstance(observer, logs.GatewayLogObserver)
        self.assertEqual(observer.format, "json")
        self.assertIn(service, list(IServiceCollection(application)))

    def test_not_twistd(self) -> None:
        """Without twistd's options nothing changes."""
        service = Service()
        self.assertIs(logs.observe_for_twistd(service, None, "json"), service)
        self.assertNotIn("setServiceParent", vars(service))

    def test_plugin_option(self) -> None:
        """C{twistd gatehouse --log-format} takes text or json only."""
        from twisted.python import usage

        from tests.test_plugin import gatehouse_plugin

        Options = gatehouse_plugin().options

        options = Options()
        options.parseOptions(["--config", "x.yaml", "--log-format", "json"])
        self.assertEqual(options["log-format"], "json")
        options = Options()
        options.parseOptions(["--config", "x.yaml"])
        self.assertEqual(options["log-format"], "text")
        self.assertRaises(
            usage.UsageError,
            Options().parseOptions,
            ["--config", "x.yaml", "--log-format", "xml"],
        )


class QuietTests(SynchronousTestCase):
    """Factories that would log a pair of lines per connection do not."""

    def test_connect_quietly(self) -> None:
        """The one-protocol client factory is not noisy."""
        self.assertFalse(logs.QuietFactory(object()).noisy)

    def test_agent_pool(self) -> None:
        """The HTTP client pool builds quiet factories."""
        pool = logs.quiet_agent_pool(MemoryReactorClock())
        self.assertFalse(pool._factory(None, None).noisy)

    def test_gateway_factories(self) -> None:
        """The PostgreSQL listener's and the admin API's factories."""
        from gatehouse.admin.api import make_admin_site
        from gatehouse.protocols.postgres.server import PostgresServerFactory

        self.assertFalse(PostgresServerFactory.noisy)
        site = make_admin_site(None, None, None, None, MemoryReactorClock())
        self.assertFalse(site.noisy)


class FailureKindTests(SynchronousTestCase):
    """Token refusals map to a small fixed set of reasons."""

    def test_kinds(self) -> None:
        cases = {
            "malformed token: 2 dot-separated parts instead of 3": "malformed",
            "token longer than 16384 bytes": "malformed",
            "signature verification failed (ES256, key id 'k', issuer 'i')": (
                "signature"
            ),
            "token expired at 5 (now 9, leeway 30s)": "expired",
            "token not valid before 99 (now 9, leeway 30s)": "not_yet_valid",
            "token issued in the future at 99 (now 9, leeway 30s)": "not_yet_valid",
            "audience not accepted: x": "audience",
            "unsigned token (alg 'none') is never accepted": "algorithm",
            "algorithm 'HS512' is not allowed for issuer 'i'": "algorithm",
            "unknown key id 'x' for ES256 (issuer 'i')": "key",
            "issuer 'evil' is not configured": "issuer",
            "token has no 'iss' claim": "issuer",
            "'sub' claim is empty": "claims",
            "internal error verifying token": "internal",
            "something new": "other",
        }
        for reason, kind in cases.items():
            self.assertEqual(failure_kind(reason), kind, reason)
            self.assertIn(kind, AUTH_REASONS)
        self.assertEqual(AuthenticationError("token expired at 1").kind, "expired")
        self.assertEqual(AuthenticationError("x", kind="lifetime").kind, "lifetime")


class LevelTests(SynchronousTestCase):
    """Levels are written by name."""

    def test_levels(self) -> None:
        def emitting(log: Logger) -> None:
            for level in (LogLevel.info, LogLevel.warn, LogLevel.error):
                log.emit(level, "x")

        lines = observed("json", emitting).splitlines()
        levels = [json.loads(line)["level"] for line in lines]
        self.assertEqual(levels, ["info", "warn", "error"])
