"""
TLS to an HTTP target: its CA (or the system's roots), the name its
certificate must carry, HTTP/1.1 by ALPN, the gateway's client
certificate.  Apart from the target client so that the configuration can
check the files at load time without importing it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from OpenSSL import crypto
from twisted.internet import ssl
from twisted.web.iweb import IPolicyForHTTPS
from zope.interface import implementer

from gatehouse.tls import trust_root

if TYPE_CHECKING:
    from gatehouse.protocols.http.config import HTTPTargetOptions

__all__ = ["UpstreamPolicy"]


@implementer(IPolicyForHTTPS)
class UpstreamPolicy:
    """
    TLS to one target: its CA (or the system's roots), the name its
    certificate must carry, HTTP/1.1 by ALPN, and the gateway's client
    certificate when it has one.
    """

    def __init__(self, options: HTTPTargetOptions) -> None:
        self._options = options
        self._trust: Any = None
        if options.ca is not None:
            with open(options.ca, "rb") as f:
                self._trust = trust_root(f.read(), options.ca)
        self._creators: dict[tuple[bytes, int], Any] = {}
        self._client: ssl.PrivateCertificate | None = None
        if options.client_certificate and options.client_key:
            with open(options.client_certificate, "rb") as f:
                cert = f.read()
            with open(options.client_key, "rb") as f:
                key = f.read()
            self._client = ssl.PrivateCertificate.load(
                cert, ssl.KeyPair.load(key, crypto.FILETYPE_PEM), crypto.FILETYPE_PEM
            )

    def creatorForNetloc(self, hostname: bytes, port: int) -> Any:
        # An Agent asks for every request, pooled connection or not; the
        # options (certificates, ciphers) are the same each time.
        key = (hostname, port)
        creator = self._creators.get(key)
        if creator is None:
            creator = self._creators[key] = self._creator(hostname)
        return creator

    def _creator(self, hostname: bytes) -> Any:
        name = self._options.server_name or hostname.decode("ascii")
        return ssl.optionsForClientTLS(
            name,
            trustRoot=self._trust,
            clientCertificate=self._client,
            acceptableProtocols=[b"http/1.1"],
        )
