"""
Tests for L{gatehouse.files}.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

from gatehouse.files import FileCache
from gatehouse.protocols.postgres.config import _read_password


class FileCacheTests(SynchronousTestCase):
    """
    L{FileCache} reads a file again exactly when its stat changed.
    """

    def setUp(self) -> None:
        self.path = Path(self.mktemp())
        self.path.write_bytes(b"one")
        self.cache = FileCache(max_bytes=100)
        self.parsed: list[bytes] = []

    def parse(self, data: bytes, path: str) -> str:
        self.parsed.append(data)
        return data.decode() + "@" + os.path.basename(path)

    def test_cached(self) -> None:
        """
        An unchanged file is read and parsed once however often it is
        loaded (a re-read would give a new bytes object, parsed again).
        """
        name = self.path.name
        for _ in range(3):
            self.assertEqual(self.cache.load(str(self.path), self.parse), "one@" + name)
        self.assertEqual(self.parsed, [b"one"])

    def test_rewrittenInPlace(self) -> None:
        """
        A file rewritten in place (same inode, same size) is read again.
        """
        path = str(self.path)
        self.assertEqual(self.cache.read(path), b"one")
        inode = os.stat(path).st_ino
        with open(path, "r+b") as f:
            f.write(b"two")
        self.assertEqual(os.stat(path).st_ino, inode)
        self.assertEqual(self.cache.read(path), b"two")

    def test_rewrittenSameTimes(self) -> None:
        """
        A rewrite that restores the old mtime is still seen (ctime moved).
        """
        path = str(self.path)
        self.cache.read(path)
        before = os.stat(path)
        self.path.write_bytes(b"six")
        os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
        self.assertEqual(self.cache.read(path), b"six")

    def test_replaced(self) -> None:
        """
        A file replaced by rename (how rotation tools write) is read again,
        and parsed again.
        """
        path = str(self.path)
        self.cache.load(path, self.parse)
        new = Path(self.mktemp())
        new.write_bytes(b"rotated")
        os.replace(new, path)
        self.assertEqual(self.cache.load(path, self.parse), "rotated@" + self.path.name)
        self.assertEqual(self.parsed, [b"one", b"rotated"])

    def test_deleted(self) -> None:
        """
        A file deleted after it was read fails the next read: nothing
        stale is served.
        """
        path = str(self.path)
        self.cache.read(path)
        self.path.unlink()
        error = self.assertRaises(FileNotFoundError, self.cache.read, path)
        self.assertEqual(error.filename, path)

    def test_tooLarge(self) -> None:
        """
        A file over the limit is refused with EFBIG; one at it is read.
        """
        path = str(self.path)
        self.path.write_bytes(b"x" * 100)
        self.assertEqual(len(self.cache.read(path)), 100)
        self.path.write_bytes(b"x" * 101)
        error = self.assertRaises(OSError, self.cache.read, path)
        self.assertEqual(error.errno, errno.EFBIG)
        self.assertIn("larger than 100 bytes", str(error))

    def test_parseFailureNotCached(self) -> None:
        """
        A parser's error reaches the caller each time; nothing is cached.
        """
        calls = []

        def bad(data: bytes, path: str) -> str:
            calls.append(data)
            raise ValueError("no")

        for _ in range(2):
            self.assertRaises(ValueError, self.cache.load, str(self.path), bad)
        self.assertEqual(len(calls), 2)

    def test_parsersApart(self) -> None:
        """
        Two parsers of the same file each get their own value.
        """
        path = str(self.path)
        self.assertEqual(self.cache.load(path, lambda d, p: d.upper()), b"ONE")
        self.assertEqual(self.cache.load(path, self.parse), "one@" + self.path.name)


class PasswordFileTests(SynchronousTestCase):
    """
    Upstream passwords come from the shared cache and follow rotation.
    """

    def test_rotation(self) -> None:
        """
        The password is the file's text without its final line ending
        (universal newlines); a rotated file gives the new password.
        """
        path = Path(self.mktemp())
        path.write_bytes(b"s3cret\r\n")
        self.assertEqual(_read_password(str(path), None), "s3cret")
        new = Path(self.mktemp())
        new.write_bytes(b"n3w\rpart\n")
        os.replace(new, path)
        self.assertEqual(_read_password(str(path), None), "n3w\npart")
