"""
Host keys: the gateway's own (what SSH clients verify) and its targets'
(what the gateway verifies before it logs in upstream).

The gateway's keys come from files, as sshd's do: an Ed25519 key is
required, RSA may be added (Conch signs with it as rsa-sha2-256/512), and
a private key anyone but its owner can read is refused.  A target's key is
pinned in the configuration, as OpenSSH public key lines or a known_hosts
file (hashed entries too, read by Conch); there is no trust on first use,
and a mismatch names the target and the fingerprint seen.
"""

from __future__ import annotations

import binascii
import os
import stat
import struct
from collections.abc import Iterable, Sequence

from twisted.conch.client.knownhosts import KnownHostsFile
from twisted.conch.error import HostKeyChanged
from twisted.conch.ssh import keys
from twisted.python.filepath import FilePath

#: what Conch raises for bytes that are not a key (a short blob: struct.error)
_UNREADABLE = (
    keys.BadKeyError,
    keys.EncryptedKeyError,
    ValueError,
    struct.error,
    binascii.Error,
)


class HostKeyError(Exception):
    """A host key file the gateway cannot use; the message says why."""


class HostKeyMismatch(Exception):
    """
    A target presented a host key its configuration does not pin.

    @ivar target: the target's name.
    @ivar seen: the SHA256 fingerprint of the key it presented.
    """

    def __init__(self, target: str, seen: str, why: str) -> None:
        self.target = target
        self.seen = seen
        super().__init__(f"target {target!r} presented host key {seen}: {why}")


def fingerprint(key: keys.Key) -> str:
    """A key's SHA256 fingerprint as OpenSSH prints it (C{SHA256:...})."""
    digest: str = key.fingerprint(keys.FingerprintFormats.SHA256_BASE64)
    return "SHA256:" + digest.rstrip("=")


def load_host_keys(paths: Sequence[str]) -> dict[bytes, keys.Key]:
    """
    The gateway's host keys, by SSH key type, as Conch's factory wants
    them (C{getPrivateKeys}).

    @raise HostKeyError: a file is missing, unreadable, readable by others,
        not a private key, of a type not offered, a type repeated, or no
        Ed25519 key is among them.
    """
    found: dict[bytes, keys.Key] = {}
    for path in paths:
        try:
            mode = os.stat(path).st_mode
            with open(path, "rb") as f:
                data = f.read()
        except OSError as e:
            raise HostKeyError(f"{path}: {e.strerror}") from e
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise HostKeyError(
                f"{path}: a private host key must not be accessible by group or "
                f"others (mode {stat.S_IMODE(mode):04o}; chmod 600)"
            )
        try:
            key = keys.Key.fromString(data)
        except _UNREADABLE as e:
            raise HostKeyError(f"{path}: not a private key this gateway reads: {e}")
        if key.isPublic():
            raise HostKeyError(f"{path}: a public key; the host key must be private")
        kind = key.sshType()
        if kind not in (b"ssh-ed25519", b"ssh-rsa"):
            raise HostKeyError(
                f"{path}: {kind.decode()} host keys are not offered; "
                "use ssh-ed25519 (and ssh-rsa if old clients need it)"
            )
        if kind in found:
            raise HostKeyError(f"{path}: a second {kind.decode()} host key")
        if kind == b"ssh-rsa" and key.size() < 2048:
            raise HostKeyError(f"{path}: RSA host keys need 2048 bits or more")
        found[kind] = key
    if b"ssh-ed25519" not in found:
        raise HostKeyError("an ssh-ed25519 host key is required")
    return found


class PinnedHostKeys:
    """
    The host keys one target may present: public key lines from the
    configuration, and the entries of a known_hosts file for its address.
    """

    def __init__(
        self,
        target: str,
        lines: Iterable[str] = (),
        known_hosts: str | None = None,
    ) -> None:
        """
        @raise HostKeyError: a line is not a public key, the known_hosts
            file cannot be read, or nothing is pinned at all.
        """
        self.target = target
        self._keys: list[keys.Key] = []
        for line in lines:
            try:
                self._keys.append(keys.Key.fromString(line.encode()))
            except _UNREADABLE as e:
                raise HostKeyError(
                    f"target {target!r}: host key {line[:40]!r} is not an "
                    f"OpenSSH public key line: {e}"
                ) from e
        self._known: KnownHostsFile | None = None
        if known_hosts is not None:
            if not os.path.isfile(known_hosts):
                raise HostKeyError(f"target {target!r}: no file {known_hosts}")
            self._known = KnownHostsFile.fromPath(FilePath(known_hosts))
        if not self._keys and self._known is None:
            raise HostKeyError(
                f"target {target!r}: pin its host key (host_keys or known_hosts); "
                "the gateway never trusts a key on first use"
            )

    def algorithms(self) -> list[bytes]:
        """
        The host key algorithms of the pinned lines (a client asks for
        these first: a target with several keys then shows a pinned one).
        """
        out: list[bytes] = []
        for key in self._keys:
            kind = key.sshType()
            names = [b"rsa-sha2-512", b"rsa-sha2-256"] if kind == b"ssh-rsa" else [kind]
            out.extend(n for n in names if n not in out)
        return out

    def verify(self, host: str, port: int, blob: bytes) -> keys.Key:
        """
        Accept the key blob C{blob} the target at C{host}:C{port} presented.

        @raise HostKeyMismatch: it is not one pinned for this target.
        """
        try:
            key: keys.Key = keys.Key.fromString(blob)
        except _UNREADABLE as e:
            raise HostKeyMismatch(self.target, "(unreadable)", str(e)) from e
        seen = fingerprint(key)
        if any(key == pinned for pinned in self._keys):
            return key
        if self._known is not None:
            name = host if port == 22 else f"[{host}]:{port}"
            try:
                if self._known.hasHostKey(name.encode(), key):
                    return key
            except HostKeyChanged:
                raise HostKeyMismatch(
                    self.target,
                    seen,
                    f"known_hosts holds another key for {name}",
                ) from None
            if not self._keys:
                raise HostKeyMismatch(
                    self.target, seen, f"known_hosts has no key for {name}"
                )
        raise HostKeyMismatch(self.target, seen, "not a pinned host key")
