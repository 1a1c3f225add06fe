"""
The algorithms the gateway speaks, on both of its SSH sides: the key
exchanges, ciphers and MACs Conch offers minus the weak ones (SHA-1 key
exchange, CBC modes, 3DES, HMAC-SHA1/MD5, DSA and SHA-1 RSA signatures).
"""

from __future__ import annotations

from collections.abc import Iterable

from twisted.conch.ssh.transport import SSHTransportBase
from twisted.logger import (
    FilteringLogObserver,
    Logger,
    LogLevel,
    LogLevelFilterPredicate,
    globalLogPublisher,
)

#: preferred first
KEY_EXCHANGES = (
    b"mlkem768x25519-sha256",
    b"curve25519-sha256",
    b"curve25519-sha256@libssh.org",
    b"ecdh-sha2-nistp256",
    b"ecdh-sha2-nistp384",
    b"ecdh-sha2-nistp521",
    b"diffie-hellman-group-exchange-sha256",
)
CIPHERS = (b"aes128-ctr", b"aes192-ctr", b"aes256-ctr")
MACS = (b"hmac-sha2-256", b"hmac-sha2-512")
PUBLIC_KEYS = (
    b"ssh-ed25519",
    b"ecdsa-sha2-nistp256",
    b"ecdsa-sha2-nistp384",
    b"ecdsa-sha2-nistp521",
    b"rsa-sha2-512",
    b"rsa-sha2-256",
)


def _kept(offered: Iterable[bytes], allowed: Iterable[bytes]) -> list[bytes]:
    have = set(offered)
    return [name for name in allowed if name in have]


def harden(transport: SSHTransportBase, prefer: Iterable[bytes] = ()) -> None:
    """
    Limit C{transport} (before its connection starts) to the strong
    algorithms Conch offers; C{prefer}: host key algorithms to ask for
    first (a client asks for the kinds of key pinned for its target).
    """
    transport.supportedKeyExchanges = _kept(
        transport.supportedKeyExchanges, KEY_EXCHANGES
    )
    transport.supportedCiphers = _kept(transport.supportedCiphers, CIPHERS)
    transport.supportedMACs = _kept(transport.supportedMACs, MACS)
    first = [p for p in prefer if p in PUBLIC_KEYS]
    rest = [p for p in PUBLIC_KEYS if p not in first]
    transport.supportedPublicKeys = _kept(transport.supportedPublicKeys, first + rest)


def quiet_logger() -> Logger:
    """
    A logger for the gateway's Conch classes: Conch logs every channel
    open and close and every disconnect at info, once per connection or
    channel; the gateway's own log lines say what matters.  Warnings and
    failures still go out.
    """
    return Logger(
        observer=FilteringLogObserver(
            globalLogPublisher, [LogLevelFilterPredicate(LogLevel.warn)]
        )
    )
