"""Request targets of the plain http protocol: read once, or refused."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from gatehouse.protocols.http.flavour import RequestHead
from gatehouse.protocols.http.paths import AmbiguousTarget, split_target
from gatehouse.protocols.http.server import (
    bearer_token,
    recorded_headers,
    request_channel,
)


class SplitTargetTests(SynchronousTestCase):
    def test_plain(self) -> None:
        self.assertEqual(
            split_target(b"/a/b%20c?x=1&y=%2F"), ("/a/b c", (("x", "1"), ("y", "/")))
        )

    def test_refused(self) -> None:
        for target in (
            b"a/b",
            b"http://h/a",
            b"/a/%2F/b",
            b"/a%2fb",
            b"/a/%2e%2e/b",
            b"/a/../b",
            b"/a/./b",
            b"/a//b",
            b"/a\\b",
            b"/a%5cb",
            b"/a%00b",
            b"/a%0ab",
            b"/a%ffb",
            b"/a#frag",
            b"/a?x=%00",
        ):
            with self.assertRaises(AmbiguousTarget, msg=target):
                split_target(target)

    @given(st.binary(max_size=64))
    def test_never_raises_otherwise(self, raw: bytes) -> None:
        """Any bytes: a reading with no dot or empty segment, or a refusal."""
        try:
            path, _ = split_target(b"/" + raw)
        except AmbiguousTarget:
            return
        segments = path.split("/")[1:]
        self.assertNotIn("..", segments)
        self.assertNotIn(".", segments)
        self.assertNotIn("", segments[:-1])


class HelpersTests(SynchronousTestCase):
    def test_request_channel_wraps_below_stderr_bit(self) -> None:
        self.assertEqual(request_channel(1), 1)
        self.assertEqual(request_channel(32766), 32766)
        self.assertEqual(request_channel(32767), 1)

    def test_bearer_token(self) -> None:
        def head(*values: bytes) -> RequestHead:
            return RequestHead(
                "GET", b"/", tuple((b"authorization", v) for v in values)
            )

        self.assertEqual(bearer_token(head(b"Bearer abc")), b"abc")
        self.assertEqual(bearer_token(head(b"bearer  abc ")), b"abc")
        self.assertIsNone(bearer_token(head()))
        self.assertIsNone(bearer_token(head(b"Basic abc")))
        self.assertIsNone(bearer_token(head(b"Bearer a", b"Bearer b")))

    def test_recorded_headers_redact_credentials(self) -> None:
        shown = recorded_headers(
            [
                (b"authorization", b"Bearer secret-token"),
                (b"cookie", b"session=secret"),
                (b"accept", b"application/json"),
            ]
        )
        self.assertEqual(
            shown,
            [
                ["authorization", "Bearer [redacted]"],
                ["cookie", "[redacted]"],
                ["accept", "application/json"],
            ],
        )
