"""
Small files the gateway reads at every login (upstream passwords, CA
bundles), cached until they change.

A login must see a rotated password or CA bundle, so every use checks the
file; but reading and parsing it on the reactor for every connection costs
a read, a decode and (for a CA bundle) certificate parsing each time.
L{FileCache} costs one C{stat} per use while the file is unchanged, and
bounds what a re-read may cost by refusing files larger than its limit.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable
from typing import TypeVar, cast

import attrs

__all__ = ["DEFAULT_MAX_BYTES", "FileCache", "files"]

T = TypeVar("T")

DEFAULT_MAX_BYTES = 1024 * 1024
"""Files larger than this are refused: a password or a CA bundle is a few KiB."""


@attrs.frozen
class _Stamp:
    """What says a file is still the one read: any change means re-read."""

    device: int
    inode: int
    size: int
    mtime_ns: int
    ctime_ns: int

    @classmethod
    def of(cls, st: os.stat_result) -> _Stamp:
        return cls(st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


class FileCache:
    """
    File contents (and values parsed from them) keyed by path, re-read
    only when the file's stat (device, inode, size, mtime, ctime) changes.

    Used from the reactor thread.  It holds one entry per path and parser
    asked for: the paths come from the configuration, so it stays small.

    @param max_bytes: larger files are refused.
    """

    def __init__(self, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        self._maxBytes = max_bytes
        self._contents: dict[str, tuple[_Stamp, bytes]] = {}
        self._parsed: dict[tuple[str, Callable[..., object]], tuple[bytes, object]] = {}

    def read(self, path: str) -> bytes:
        """
        The content of the file at C{path}, read again only if it changed.

        @raise OSError: the file cannot be read (also when it was deleted
            after an earlier read: nothing stale is served), or it is larger
            than the limit (C{EFBIG}).
        """
        stamp = _Stamp.of(os.stat(path))
        cached = self._contents.get(path)
        if cached is not None and cached[0] == stamp:
            return cached[1]
        with open(path, "rb") as f:
            # The stamp of what is read, not of what was stat'ed before: a
            # file replaced in between is read again next time.
            stamp = _Stamp.of(os.fstat(f.fileno()))
            data = f.read(self._maxBytes + 1)
        if len(data) > self._maxBytes:
            raise OSError(
                errno.EFBIG, f"larger than {self._maxBytes} bytes", os.fspath(path)
            )
        self._contents[path] = (stamp, data)
        return data

    def load(self, path: str, parse: Callable[[bytes, str], T]) -> T:
        """
        C{parse(content, path)} for the file at C{path}, parsed again only
        when its content changed.

        @param parse: a function of the content and the path (for errors);
            give the same function object each time (a module-level
            function), as it is part of the cache key.
        @raise OSError: see L{read}.
        @raise Exception: whatever C{parse} raises (nothing is cached then).
        """
        data = self.read(path)
        key = (path, parse)
        cached = self._parsed.get(key)
        if cached is not None and cached[0] is data:
            # Same bytes object: the content was not read again.
            return cast(T, cached[1])
        value = parse(data, path)
        self._parsed[key] = (data, value)
        return value


files = FileCache()
"""The gateway's shared cache."""
