"""
Signing keys for recordings: the root key, epoch keys and segment keys.

See "Keys and forward security" in docs/recording-format.md.  The root key
certifies epoch keys for consecutive time windows; the daemon uses the epoch
key valid now only to start sessions and erases each epoch key when its
window ends; segments are sealed by keys that exist only in memory.
"""

from __future__ import annotations

import base64
import errno
import json
import os
import re
import stat
import struct
import time
from collections.abc import Iterable, Sequence

import attrs
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from gatehouse.recording.format import (
    Certificate,
    FormatError,
    _Reader,
    _str16,
    sha256,
)

NS = 1_000_000_000
EPOCH_KEY_SUFFIX = ".epochkey"


class KeyFileError(Exception):
    """A key file that cannot be used; the message says which and why."""


def raw_public(key: Ed25519PrivateKey | Ed25519PublicKey) -> bytes:
    """The 32 raw bytes of an Ed25519 public key."""
    if isinstance(key, Ed25519PrivateKey):
        key = key.public_key()
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def key_id(public_raw: bytes) -> bytes:
    """The 16-byte id of a public key."""
    return sha256(public_raw)[:16]


def verify_signature(public_raw: bytes, signature: bytes, message: bytes) -> bool:
    """Whether C{signature} is a valid Ed25519 signature of C{message}."""
    try:
        Ed25519PublicKey.from_public_bytes(public_raw).verify(signature, message)
    except (InvalidSignature, ValueError):
        return False
    return True


# --- root key -------------------------------------------------------------


def generate_root_key() -> Ed25519PrivateKey:
    """A new root key."""
    return Ed25519PrivateKey.generate()


def _write_private(path: str, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def save_root_key(
    key: Ed25519PrivateKey,
    private_path: str,
    public_path: str,
    passphrase: bytes | None = None,
) -> None:
    """
    Write the root key's private half (PKCS#8 PEM, encrypted when a
    passphrase is given, mode 0600, never overwriting) and its public half.
    """
    encryption = (
        serialization.BestAvailableEncryption(passphrase)
        if passphrase
        else serialization.NoEncryption()
    )
    _write_private(
        private_path,
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption
        ),
    )
    with open(public_path, "wb") as f:
        f.write(
            key.public_key().public_bytes(
                serialization.Encoding.PEM,
                serialization.PublicFormat.SubjectPublicKeyInfo,
            )
        )


def load_root_private(path: str, passphrase: bytes | None = None) -> Ed25519PrivateKey:
    """Read a root key written by L{save_root_key}."""
    try:
        with open(path, "rb") as f:
            key = serialization.load_pem_private_key(f.read(), passphrase)
    except OSError as e:
        raise KeyFileError(f"{path}: cannot read root key: {e.strerror}")
    except (ValueError, TypeError) as e:
        raise KeyFileError(f"{path}: not a usable root key: {e}")
    if not isinstance(key, Ed25519PrivateKey):
        raise KeyFileError(f"{path}: root key is not an Ed25519 key")
    return key


def load_public_key(path: str) -> bytes:
    """Read a PEM Ed25519 public key; return its raw bytes."""
    try:
        with open(path, "rb") as f:
            key = serialization.load_pem_public_key(f.read())
    except OSError as e:
        raise KeyFileError(f"{path}: cannot read public key: {e.strerror}")
    except ValueError as e:
        raise KeyFileError(f"{path}: not a PEM public key: {e}")
    if not isinstance(key, Ed25519PublicKey):
        raise KeyFileError(f"{path}: public key is not an Ed25519 key")
    return raw_public(key)


@attrs.frozen
class TrustAnchors:
    """The root public keys a verifier trusts, by root id."""

    roots: dict[bytes, bytes]

    @classmethod
    def from_public_keys(cls, public_raws: Iterable[bytes]) -> TrustAnchors:
        """Build from raw root public keys."""
        return cls({key_id(raw): raw for raw in public_raws})

    @classmethod
    def from_files(cls, paths: Sequence[str]) -> TrustAnchors:
        """Build from PEM files."""
        return cls.from_public_keys(load_public_key(p) for p in paths)

    def check_certificate(self, cert: Certificate) -> str | None:
        """
        Check a certificate's root signature.

        @return: None when it verifies, else the reason it does not.
        """
        root = self.roots.get(cert.root_id)
        if root is None:
            return "certified by a root key that is not trusted"
        if key_id(cert.public_key) != cert.key_id:
            return "certificate key id does not match its key"
        if not verify_signature(root, cert.root_signature, cert.signed_bytes()):
            return "certificate signature does not verify under its root key"
        return None


# --- epoch keys -----------------------------------------------------------


@attrs.frozen
class EpochKey:
    """An epoch key: its certificate and (while it is kept) its private half."""

    certificate: Certificate
    private: Ed25519PrivateKey | None = attrs.field(eq=False, repr=False)

    def sign(self, message: bytes) -> bytes:
        """Sign with the private half."""
        if self.private is None:
            raise KeyFileError("epoch key has no private half")
        return self.private.sign(message)

    def to_json(self) -> bytes:
        """The on-disk form of an epoch key file."""
        if self.private is None:
            raise KeyFileError("epoch key has no private half")
        private = self.private.private_bytes(
            serialization.Encoding.Raw,
            serialization.PrivateFormat.Raw,
            serialization.NoEncryption(),
        )
        return json.dumps(
            {
                "format": "gatehouse-epoch-key-v1",
                "gateway_id": self.certificate.gateway_id,
                "not_before": _iso(self.certificate.not_before),
                "not_after": _iso(self.certificate.not_after),
                "certificate": base64.b64encode(self.certificate.to_bytes()).decode(),
                "private_key": base64.b64encode(private).decode(),
            },
            indent=1,
        ).encode()

    @classmethod
    def from_json(cls, data: bytes, where: str) -> EpochKey:
        """Parse an epoch key file."""
        try:
            obj = json.loads(data)
            if obj.get("format") != "gatehouse-epoch-key-v1":
                raise ValueError("unknown format")
            cert = Certificate.from_bytes(base64.b64decode(obj["certificate"]))
            private = Ed25519PrivateKey.from_private_bytes(
                base64.b64decode(obj["private_key"])
            )
        except (ValueError, KeyError, TypeError, AttributeError, FormatError) as e:
            raise KeyFileError(f"{where}: not a gatehouse epoch key: {e}")
        if raw_public(private) != cert.public_key:
            raise KeyFileError(f"{where}: private key does not match its certificate")
        return cls(cert, private)

    def filename(self) -> str:
        """The key's file name in a signing-key directory."""
        stamp = time.strftime(
            "%Y%m%dT%H%M%SZ", time.gmtime(self.certificate.not_before / NS)
        )
        return f"{stamp}-{self.certificate.key_id.hex()[:12]}{EPOCH_KEY_SUFFIX}"


def _iso(ns: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ns / NS))


def issue_epoch_keys(
    root: Ed25519PrivateKey,
    gateway_id: str,
    start_ns: int,
    period_ns: int,
    count: int,
) -> list[EpochKey]:
    """
    Create C{count} epoch keys for consecutive windows of C{period_ns}
    starting at C{start_ns}, each certified by C{root}.
    """
    root_id = key_id(raw_public(root))
    keys = []
    for i in range(count):
        private = Ed25519PrivateKey.generate()
        public = raw_public(private)
        unsigned = Certificate(
            key_id=key_id(public),
            public_key=public,
            gateway_id=gateway_id,
            not_before=start_ns + i * period_ns,
            not_after=start_ns + (i + 1) * period_ns,
            root_id=root_id,
        )
        cert = attrs.evolve(unsigned, root_signature=root.sign(unsigned.signed_bytes()))
        keys.append(EpochKey(cert, private))
    return keys


#: files larger than this are not read when looking for key material
MAX_KEY_FILE_BYTES = 1 << 20

#: file system calls of reading and erasing key material (a seam for tests)
_open_file = os.open
_unlink = os.unlink

# base64 values, also as JSON encoders that escape '/' write them
_FIELD = re.compile(rb'"(certificate|private_key)"\s*:\s*"((?:[A-Za-z0-9+/=]|\\/)+)"')


@attrs.frozen
class KeyCopy:
    """
    One file in a signing-key directory that holds an epoch key's private
    half, whatever its name (the key file itself, a backup, an editor's
    copy).

    @ivar whole: whether the file is a complete epoch key file (else the
        key was found inside other content, e.g. an editor's swap file).
    @ivar identity: C{(st_dev, st_ino, st_ctime_ns)} when read; erasure
        refuses a file that was replaced or changed since (the next reading
        decides about it afresh).
    """

    path: str
    key: EpochKey
    whole: bool = True
    identity: tuple[int, int, int] | None = None


@attrs.frozen
class KeyScan:
    """
    What a signing-key directory holds, by content.

    @ivar copies: every file holding key material, by path.
    @ivar problems: files named C{*.epochkey} that cannot be used, one line
        each (as L{KeyDirectory.load} always reported).
    @ivar unknown: every other file that is not key material, one line
        each, naming it and why.
    """

    copies: tuple[KeyCopy, ...] = ()
    problems: tuple[str, ...] = ()
    unknown: tuple[str, ...] = ()

    def keys(self) -> list[EpochKey]:
        """One key per key id (the first copy found), sorted by start."""
        seen: dict[bytes, EpochKey] = {}
        for copy in self.copies:
            seen.setdefault(copy.key.certificate.key_id, copy.key)
        return sorted(seen.values(), key=lambda k: k.certificate.not_before)

    def leftovers(self) -> list[KeyCopy]:
        """Copies not under their key's own file name (backups, editors' files)."""
        return [
            c
            for c in self.copies
            if not c.whole or os.path.basename(c.path) != c.key.filename()
        ]

    def expired(self, wall_ns: int) -> list[KeyCopy]:
        """The copies of keys whose window ended at or before C{wall_ns}."""
        return [c for c in self.copies if c.key.certificate.not_after <= wall_ns]


def find_key_material(
    data: bytes, where: str, known: Sequence[Certificate] = ()
) -> tuple[list[EpochKey], bool]:
    """
    The epoch keys held in C{data}: a whole key file, or failing that every
    pair of C{certificate} and matching C{private_key} fields found inside
    other content (an editor's swap file, a concatenation of key files),
    and every C{private_key} field matching one of the C{known}
    certificates (a certificate is public: the private half alone is the
    key).

    @return: the keys and whether C{data} is a whole key file.
    @raise KeyFileError: when C{data} holds no (matching) key.
    """
    try:
        return [EpochKey.from_json(data, where)], True
    except KeyFileError as e:
        first = e
    certs, privates = [], []
    for m in _FIELD.finditer(data):
        try:
            raw = base64.b64decode(m.group(2).replace(b"\\/", b"/"))
            if m.group(1) == b"certificate":
                certs.append(Certificate.from_bytes(raw))
            else:
                privates.append(Ed25519PrivateKey.from_private_bytes(raw))
        except (ValueError, FormatError):
            continue
    found: dict[bytes, EpochKey] = {}
    for private in privates:
        public = raw_public(private)
        for cert in [*certs, *known]:
            if cert.public_key == public:
                found.setdefault(cert.key_id, EpochKey(cert, private))
    if not found:
        raise first
    return list(found.values()), False


def _identity(st: os.stat_result) -> tuple[int, int, int]:
    return (st.st_dev, st.st_ino, st.st_ctime_ns)


def _erase(copy: KeyCopy, zeroed: dict[tuple[int, int], int]) -> None:
    """
    Overwrite a file holding key material with zeros, sync it, and unlink
    it; refuse (OSError) when the file at that path is no longer the one
    that was read, or is not a regular file.  C{zeroed} maps the inodes
    this run overwrote to their change time since: another name of one
    (a hard link) is only unlinked.
    """
    fd = _open_file(copy.path, os.O_RDWR | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0))
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise OSError(errno.EINVAL, "not a regular file", copy.path)
        inode = (st.st_dev, st.st_ino)
        if zeroed.get(inode) == st.st_ctime_ns:
            pass  # this run zeroed it under another name, and nothing since
        elif copy.identity is not None and _identity(st) != copy.identity:
            raise OSError(errno.ESTALE, "replaced since it was read", copy.path)
        else:
            os.write(fd, b"\x00" * st.st_size)
            os.fsync(fd)
        _unlink(copy.path)
        zeroed[inode] = os.fstat(fd).st_ctime_ns
    finally:
        os.close(fd)


@attrs.frozen
class Erasure:
    """
    The outcome of erasing expired key material.

    @ivar erased: paths erased (or already gone).
    @ivar failed: C{(path, why)} for each file that could not be erased.
    """

    erased: tuple[str, ...] = ()
    failed: tuple[tuple[str, str], ...] = ()

    def lines(self) -> list[str]:
        """One line per failure, naming the file and why."""
        return [f"{path}: cannot erase: {why}" for path, why in self.failed]


def erase_copies(copies: Iterable[KeyCopy], directory: str) -> Erasure:
    """
    Erase each copy; one failure never stops the others.  A file that is
    already gone counts as erased.
    """
    erased, failed = [], []
    zeroed: dict[tuple[int, int], int] = {}
    for copy in copies:
        try:
            _erase(copy, zeroed)
        except FileNotFoundError:
            erased.append(copy.path)
        except OSError as e:
            failed.append((copy.path, e.strerror or str(e)))
        except Exception as e:  # one failure must not stop the others
            failed.append((copy.path, repr(e)))
        else:
            erased.append(copy.path)
    if erased:
        try:
            _fsync_dir(directory)
        except OSError as e:
            failed.append((directory, f"cannot sync the directory: {e.strerror}"))
    return Erasure(tuple(erased), tuple(failed))


class KeyDirectory:
    """
    The gateway's signing-key directory: one file per epoch key.

    Key material is recognised by content, not name: any regular file that
    holds an epoch key (a backup, an editor's copy, a file without an
    extension) counts, so that every copy is erased when its window ends.

    Synchronous file operations; the daemon calls them from a thread.
    """

    def __init__(self, path: str):
        self.path = path

    def scan(self) -> KeyScan:
        """Read every file of the directory; see L{KeyScan}."""
        try:
            names = sorted(os.listdir(self.path))
        except OSError as e:
            return KeyScan(
                problems=(f"{self.path}: cannot list signing keys: {e.strerror}",)
            )
        copies: list[KeyCopy] = []
        problems: list[str] = []
        unknown: list[str] = []
        for name in names:
            self._scan_one(name, copies, problems, unknown)
        if copies and (problems or unknown):
            # Files with a private key alone, of a key found elsewhere.
            known = [c.key.certificate for c in copies]
            problems, unknown = [], []
            for name in names:
                if not any(os.path.basename(c.path) == name for c in copies):
                    self._scan_one(name, copies, problems, unknown, known)
        return KeyScan(tuple(copies), tuple(problems), tuple(unknown))

    def _scan_one(
        self,
        name: str,
        copies: list[KeyCopy],
        problems: list[str],
        unknown: list[str],
        known: Sequence[Certificate] = (),
    ) -> None:
        full = os.path.join(self.path, name)
        named = name.endswith(EPOCH_KEY_SUFFIX)
        try:
            copies.extend(self._read(full, known))
        except FileNotFoundError:
            return  # gone since it was listed
        except OSError as e:
            (problems if named else unknown).append(
                f"{full}: cannot read: {e.strerror or e}"
            )
        except KeyFileError as e:
            (problems if named else unknown).append(str(e))
        except Exception as e:  # one odd file must not stop the others
            (problems if named else unknown).append(f"{full}: unusable: {e!r}")

    @staticmethod
    def _read(full: str, known: Sequence[Certificate] = ()) -> list[KeyCopy]:
        st = os.lstat(full)
        if stat.S_ISLNK(st.st_mode):
            raise KeyFileError(
                f"{full}: a symbolic link (key files must be regular files in "
                "the directory, which the daemon can erase); not used"
            )
        if stat.S_ISDIR(st.st_mode):
            raise KeyFileError(f"{full}: a directory; ignored")
        if not stat.S_ISREG(st.st_mode):
            raise KeyFileError(f"{full}: not a regular file; ignored")
        if st.st_size > MAX_KEY_FILE_BYTES:
            raise KeyFileError(f"{full}: too large to be a key file; not read")
        # O_NONBLOCK: a file swapped for a FIFO since the lstat must not
        # block the open (nor the read); it is refused below.
        flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK
        fd = _open_file(full, flags | getattr(os, "O_CLOEXEC", 0))
        with os.fdopen(fd, "rb") as f:
            st = os.fstat(f.fileno())
            if not stat.S_ISREG(st.st_mode):
                raise KeyFileError(f"{full}: not a regular file; ignored")
            data = f.read(MAX_KEY_FILE_BYTES + 1)
        found, whole = find_key_material(data, full, known)
        return [KeyCopy(full, key, whole, _identity(st)) for key in found]

    def load(self) -> tuple[list[EpochKey], list[str]]:
        """
        Read every epoch key, whatever its file's name.

        @return: the keys (one per key id), sorted by start, and one problem
            line per C{*.epochkey} file that could not be used.
        """
        scan = self.scan()
        return scan.keys(), list(scan.problems)

    def add(self, keys: Iterable[EpochKey]) -> list[str]:
        """Write epoch keys (mode 0600); return the paths written."""
        os.makedirs(self.path, mode=0o700, exist_ok=True)
        written = []
        for key in keys:
            full = os.path.join(self.path, key.filename())
            tmp = full + ".tmp"
            _write_private(tmp, key.to_json())
            os.replace(tmp, full)
            written.append(full)
        _fsync_dir(self.path)
        return written

    def erase_expired(self, wall_ns: int) -> Erasure:
        """
        Erase every copy of every epoch key whose window ended at or before
        C{wall_ns}.
        """
        return erase_copies(self.scan().expired(wall_ns), self.path)

    def load_unexpired(self, wall_ns: int) -> tuple[KeyScan, Erasure]:
        """
        L{scan}, erasing (as L{erase_expired}) the copies of keys whose
        window ended at or before C{wall_ns}.
        """
        scan = self.scan()
        return scan, erase_copies(scan.expired(wall_ns), self.path)


def current_key(keys: Sequence[EpochKey], wall_ns: int) -> EpochKey | None:
    """The key whose window holds C{wall_ns}, if any."""
    for key in keys:
        if key.certificate.valid_at(wall_ns):
            return key
    return None


def covered_until(keys: Sequence[EpochKey], wall_ns: int) -> int:
    """
    The end of the unbroken run of windows that starts at C{wall_ns}; equal
    to C{wall_ns} itself when no key is valid now.
    """
    end = wall_ns
    for key in sorted(keys, key=lambda k: k.certificate.not_before):
        cert = key.certificate
        if cert.not_before <= end < cert.not_after:
            end = cert.not_after
    return end


def uncovered(
    keys: Sequence[EpochKey], start_ns: int, end_ns: int
) -> list[tuple[int, int]]:
    """
    The parts of C{[start_ns, end_ns)} that no key's window covers, in
    order, as C{(start, end)} pairs with C{end} exclusive.
    """
    gaps = []
    at = start_ns
    for key in sorted(keys, key=lambda k: k.certificate.not_before):
        cert = key.certificate
        if at >= end_ns:
            break
        if cert.not_after <= at:
            continue
        if cert.not_before > at:
            gaps.append((at, min(cert.not_before, end_ns)))
        at = max(at, cert.not_after)
    if at < end_ns:
        gaps.append((at, end_ns))
    return gaps


def _fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# --- revocation -------------------------------------------------------------

REVOCATION_CONTEXT = b"gatehouse/revoke/v1\x00"
REVOCATION_FORMAT = "gatehouse-revocation-v1"
_REVOCATION_TIMES = struct.Struct(">QQH")


@attrs.frozen
class Revocation:
    """
    A revocation statement: from C{revoked_from} on, nothing gateway
    C{gateway_id} signs is trusted (only sessions rooted in C{key_ids}, when
    any are listed).  See "Revocation statements" in
    docs/recording-format.md.
    """

    root_id: bytes
    gateway_id: str
    revoked_from: int
    issued_at: int
    key_ids: tuple[bytes, ...] = ()
    signature: bytes = attrs.field(default=b"", eq=False, repr=False)
    #: where it was read from, for messages
    source: str = attrs.field(default="", eq=False)

    def statement(self) -> bytes:
        """The signed bytes."""
        return (
            REVOCATION_CONTEXT
            + self.root_id
            + _str16(self.gateway_id)
            + _REVOCATION_TIMES.pack(
                self.revoked_from, self.issued_at, len(self.key_ids)
            )
            + b"".join(self.key_ids)
        )

    @classmethod
    def from_statement(cls, data: bytes, signature: bytes, source: str) -> Revocation:
        """Parse a statement (not yet checked against any root)."""
        r = _Reader(data, 0, "revocation statement")
        if r.take(len(REVOCATION_CONTEXT)) != REVOCATION_CONTEXT:
            raise FormatError("revocation statement has a wrong context")
        root_id = r.take(16)
        gateway_id = r.str16()
        revoked_from, issued_at, count = r.unpack(_REVOCATION_TIMES)
        key_ids = tuple(r.take(16) for _ in range(count))
        r.done()
        return cls(
            root_id, gateway_id, revoked_from, issued_at, key_ids, signature, source
        )

    def to_json(self) -> bytes:
        """The on-disk form: the statement and signature, and a readable copy."""
        return (
            json.dumps(
                {
                    "format": REVOCATION_FORMAT,
                    "gateway_id": self.gateway_id,
                    "revoked_from": _iso(self.revoked_from),
                    "issued_at": _iso(self.issued_at),
                    "key_ids": [k.hex() for k in self.key_ids],
                    "root_id": self.root_id.hex(),
                    "statement": base64.b64encode(self.statement()).decode(),
                    "signature": base64.b64encode(self.signature).decode(),
                },
                indent=1,
            ).encode()
            + b"\n"
        )

    @classmethod
    def from_json(cls, data: bytes, where: str) -> Revocation:
        """Parse a revocation file (only its statement and signature count)."""
        try:
            obj = json.loads(data)
            if not isinstance(obj, dict) or obj.get("format") != REVOCATION_FORMAT:
                raise ValueError(f"format is not {REVOCATION_FORMAT}")
            statement = base64.b64decode(obj["statement"], validate=True)
            signature = base64.b64decode(obj["signature"], validate=True)
            return cls.from_statement(statement, signature, where)
        except (ValueError, KeyError, TypeError, FormatError) as e:
            raise KeyFileError(f"{where}: not a gatehouse revocation statement: {e}")

    def describe(self) -> str:
        """How findings name this statement."""
        keys = (
            f" (keys {', '.join(k.hex()[:12] for k in self.key_ids)})"
            if self.key_ids
            else ""
        )
        where = f" in {self.source}" if self.source else ""
        return (
            f"the revocation of gateway {self.gateway_id!r}{keys} from "
            f"{_iso(self.revoked_from)}{where}"
        )


def make_revocation(
    root: Ed25519PrivateKey,
    gateway_id: str,
    revoked_from: int,
    issued_at: int,
    key_ids: Sequence[bytes] = (),
) -> Revocation:
    """A revocation statement signed by C{root}."""
    unsigned = Revocation(
        key_id(raw_public(root)), gateway_id, revoked_from, issued_at, tuple(key_ids)
    )
    return attrs.evolve(unsigned, signature=root.sign(unsigned.statement()))


def check_revocation(anchors: TrustAnchors, revocation: Revocation) -> str | None:
    """
    Check a revocation's root signature.

    @return: None when it verifies under a trusted root, else why not.
    """
    root = anchors.roots.get(revocation.root_id)
    if root is None:
        return (
            f"signed by root {revocation.root_id.hex()}, which is not a trusted "
            "root key"
        )
    if not verify_signature(root, revocation.signature, revocation.statement()):
        return "its signature does not verify under its root key"
    return None


def load_revocations(anchors: TrustAnchors, paths: Sequence[str]) -> list[Revocation]:
    """
    Read revocation files and check each against the trusted roots.

    @raise KeyFileError: for a file that cannot be read or parsed, or whose
        statement is not signed by a trusted root: a revocation the verifier
        was given is never silently ignored.
    """
    found = []
    for path in paths:
        try:
            with open(path, "rb") as f:
                data = f.read()
        except OSError as e:
            raise KeyFileError(f"{path}: cannot read revocation: {e.strerror}")
        revocation = Revocation.from_json(data, path)
        problem = check_revocation(anchors, revocation)
        if problem is not None:
            raise KeyFileError(f"{path}: revocation refused: {problem}")
        found.append(revocation)
    return found
