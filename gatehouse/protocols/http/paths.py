"""
Request targets read once, as the target will read them, or refused.

A rule on a path must match the path the target serves, so a target
whose spelling a server could read two ways (an encoded C{/}, a dot
segment, a doubled slash, a backslash, a control character) is refused
rather than guessed: the client gets a 400 and nothing reaches the target.
"""

from __future__ import annotations

import re
from urllib.parse import parse_qsl, unquote_to_bytes

__all__ = ["AmbiguousTarget", "split_target"]

#: what a percent-escape may not encode: a server decoding before routing
#: (or not) would see another path
_FORBIDDEN_ESCAPES = re.compile(rb"%(2[fF]|5[cC]|00|2[eE])")
_VALID = re.compile(rb"[!$&'()*+,;=:@/%A-Za-z0-9._~-]*")


class AmbiguousTarget(ValueError):
    """A request target the gateway will not guess about; says why."""


def split_target(target: bytes) -> tuple[str, tuple[tuple[str, str], ...]]:
    """
    The decoded path and query pairs of an origin-form request target.

    @raise AmbiguousTarget: it is not one, or could be read two ways.
    """
    if not target.startswith(b"/"):
        raise AmbiguousTarget("the request target must be a path (origin form)")
    raw_path, _, raw_query = target.partition(b"?")
    if b"#" in target:
        raise AmbiguousTarget("a request target has no fragment")
    if not _VALID.fullmatch(raw_path):
        raise AmbiguousTarget("the path has characters that must be escaped")
    if _FORBIDDEN_ESCAPES.search(raw_path):
        raise AmbiguousTarget("the path encodes '/', '\\\\', '.' or NUL")
    try:
        path = unquote_to_bytes(raw_path).decode("utf-8")
    except UnicodeDecodeError:
        raise AmbiguousTarget("the path is not UTF-8") from None
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in path):
        raise AmbiguousTarget("the path has control characters")
    segments = path.split("/")[1:]
    if "" in segments[:-1]:
        raise AmbiguousTarget("the path has an empty segment ('//')")
    if any(s in (".", "..") for s in segments):
        raise AmbiguousTarget("the path has a dot segment")
    try:
        text = raw_query.decode("ascii")
        query = parse_qsl(
            text, keep_blank_values=True, strict_parsing=False, errors="strict"
        )
    except (UnicodeDecodeError, ValueError):
        raise AmbiguousTarget("the query is not valid") from None
    if any(
        ord(c) < 0x20 or ord(c) == 0x7F for pair in query for part in pair for c in part
    ):
        raise AmbiguousTarget("the query has control characters")
    return path, tuple(query)
