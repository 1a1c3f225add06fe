"""
Server-side TLS from the configuration's PEM files.
"""

from __future__ import annotations

from OpenSSL import crypto
from twisted.internet import ssl

from gatehouse.config import TLSConfig

__all__ = ["server_tls_options"]


def server_tls_options(tls: TLSConfig, alpn: bytes) -> ssl.CertificateOptions:
    """
    Server TLS options from PEM files: the certificate file may carry the
    chain after the leaf.  ALPN offers C{alpn} (PostgreSQL 17 requires
    C{postgresql} for direct TLS); TLS 1.2 at least.

    @raise ValueError: the certificate file holds no certificate.
    """
    with open(tls.certificate, "rb") as f:
        pem = f.read()
    with open(tls.key, "rb") as f:
        key = ssl.KeyPair.load(f.read(), crypto.FILETYPE_PEM)
    marker = b"-----BEGIN CERTIFICATE-----"
    blocks = [marker + part for part in pem.split(marker)[1:]]
    if not blocks:
        raise ValueError(f"{tls.certificate}: no PEM certificate")
    leaf, *chain = [ssl.Certificate.loadPEM(block) for block in blocks]
    return ssl.CertificateOptions(
        privateKey=key.original,
        certificate=leaf.original,
        extraCertChain=[c.original for c in chain],
        acceptableProtocols=[alpn],
        raiseMinimumTo=ssl.TLSVersion.TLSv1_2,
    )
