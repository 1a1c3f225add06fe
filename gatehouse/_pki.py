"""A small private PKI built with ``cryptography``, for demos and tests.

``make_ca(directory)`` creates a self-signed CA (``load_ca`` reads it back);
``CA.issue()`` signs server certificates (SANs as DNS names or IP addresses,
EKU serverAuth) and ``CA.issue_client()`` client certificates (EKU
clientAuth).  Keys are ECDSA P-256, written as unencrypted PKCS#8 PEM with
mode 0600; pass ``owner="postgres"`` when a server such as PostgreSQL, which
refuses group- or world-readable keys and keys it does not own, has to read
the key.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import pwd
import re
import shutil
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = ["CA", "load_ca", "make_ca", "write_key"]

_VALIDITY = datetime.timedelta(days=30)
_BACKDATE = datetime.timedelta(minutes=5)


def _chown(path: Path, owner: str | None) -> None:
    """Give ``path`` to ``owner`` (user and its primary group); root only."""
    if owner is None or os.geteuid() != 0:
        return
    shutil.chown(path, user=owner, group=pwd.getpwnam(owner).pw_gid)


def write_key(
    key: ec.EllipticCurvePrivateKey, path: Path, owner: str | None = None
) -> None:
    """Write ``key`` as PKCS#8 PEM to ``path`` with mode 0600 (created so)."""
    data = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.chmod(path, 0o600)
    _chown(path, owner)


def _write_cert(cert: x509.Certificate, path: Path, owner: str | None) -> None:
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    os.chmod(path, 0o644)
    _chown(path, owner)


def _general_name(san: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(san))
    except ValueError:
        return x509.DNSName(san)


def _file_stem(common_name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "_", common_name) or "cert"


@dataclass
class CA:
    """A certificate authority: its PEM files and in-memory cert and key."""

    cert_path: Path
    key_path: Path
    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey

    def issue(
        self,
        common_name: str,
        sans: Iterable[str] = ("localhost", "127.0.0.1"),
        directory: str | os.PathLike[str] | None = None,
        owner: str | None = None,
        validity: datetime.timedelta = _VALIDITY,
    ) -> tuple[Path, Path]:
        """Issue a server certificate; return ``(cert_path, key_path)``.

        ``sans`` entries that parse as IP addresses become iPAddress SANs, the
        rest dNSName SANs.  Files go to ``directory`` (default: the CA's) as
        ``<common_name>.crt``/``.key``; ``owner`` (root only) chowns both.
        The certificate is valid from a few minutes ago for ``validity``.
        """
        return self._issue(
            common_name,
            list(sans),
            ExtendedKeyUsageOID.SERVER_AUTH,
            Path(directory) if directory is not None else self.cert_path.parent,
            owner,
            validity,
        )

    def issue_client(
        self,
        common_name: str,
        directory: str | os.PathLike[str] | None = None,
        owner: str | None = None,
    ) -> tuple[Path, Path]:
        """Issue a client certificate (EKU clientAuth) for ``common_name``."""
        return self._issue(
            common_name,
            [],
            ExtendedKeyUsageOID.CLIENT_AUTH,
            Path(directory) if directory is not None else self.cert_path.parent,
            owner,
            _VALIDITY,
        )

    def _issue(
        self,
        common_name: str,
        sans: list[str],
        eku: x509.ObjectIdentifier,
        directory: Path,
        owner: str | None,
        validity: datetime.timedelta,
    ) -> tuple[Path, Path]:
        directory.mkdir(parents=True, exist_ok=True)
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        builder = (
            x509.CertificateBuilder()
            .subject_name(
                x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
            )
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - _BACKDATE)
            .not_valid_after(now + validity)
            .add_extension(
                x509.BasicConstraints(ca=False, path_length=None), critical=True
            )
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=False,
                    crl_sign=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.ExtendedKeyUsage([eku]), critical=False)
            .add_extension(
                x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                critical=False,
            )
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(
                    self.key.public_key()
                ),
                critical=False,
            )
        )
        if sans:
            builder = builder.add_extension(
                x509.SubjectAlternativeName([_general_name(s) for s in sans]),
                critical=False,
            )
        cert = builder.sign(self.key, hashes.SHA256())
        stem = _file_stem(common_name)
        cert_path, key_path = directory / f"{stem}.crt", directory / f"{stem}.key"
        _write_cert(cert, cert_path, owner)
        write_key(key, key_path, owner)
        return cert_path, key_path


def make_ca(
    tmpdir: str | os.PathLike[str],
    common_name: str = "gatehouse test CA",
    validity: datetime.timedelta = _VALIDITY,
) -> CA:
    """Create a self-signed CA in ``tmpdir``: ``ca.crt`` (0644), ``ca.key`` (0600).

    The CA is valid from a few minutes ago for ``validity``.
    """
    directory = Path(tmpdir)
    directory.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _BACKDATE)
        .not_valid_after(now + validity)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False
        )
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "ca.crt", directory / "ca.key"
    _write_cert(cert, cert_path, None)
    write_key(key, key_path)
    return CA(cert_path=cert_path, key_path=key_path, cert=cert, key=key)


def load_ca(directory: str | os.PathLike[str]) -> CA:
    """Read back a CA written by ``make_ca`` into ``directory``.

    Raises ``OSError`` when a file is missing and ``ValueError`` when one
    does not hold what ``make_ca`` writes.
    """
    base = Path(directory)
    cert_path, key_path = base / "ca.crt", base / "ca.key"
    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    key = serialization.load_pem_private_key(key_path.read_bytes(), None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ValueError(f"{key_path} does not hold an ECDSA key")
    if cert.public_key() != key.public_key():
        raise ValueError(f"{key_path} does not belong to {cert_path}")
    return CA(cert_path=cert_path, key_path=key_path, cert=cert, key=key)
