"""
TLS from PEM files: the gateway's server certificates and the CA bundles it
trusts for its own outgoing connections.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from cryptography import x509
from OpenSSL import crypto
from twisted.internet import ssl

if TYPE_CHECKING:
    # Public through twisted.internet.ssl's functions, not by name.
    from twisted.internet._sslverify import IOpenSSLTrustRoot

    from gatehouse.config import TLSConfig

__all__ = ["load_certificates", "server_tls_options", "trust_root"]


def load_certificates(pem: bytes, source: str) -> list[ssl.Certificate]:
    """
    Every certificate of a PEM bundle, in file order.

    @param source: names the bundle in the error.
    @raise ValueError: the bundle holds no certificate, or a malformed one.
    """
    try:
        certificates = x509.load_pem_x509_certificates(pem)
    except ValueError as e:
        raise ValueError(f"{source}: no valid PEM certificate ({e})") from None
    return [ssl.Certificate(crypto.X509.from_cryptography(c)) for c in certificates]


def trust_root(pem: bytes, source: str) -> IOpenSSLTrustRoot:
    """
    A trust root made of every certificate in the PEM bundle C{pem}: a
    peer whose chain ends at any of them is trusted.

    @param source: names the bundle in the error.
    @raise ValueError: see L{load_certificates}.
    """
    root: IOpenSSLTrustRoot = ssl.trustRootFromCertificates(
        load_certificates(pem, source)
    )
    return root


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
