"""
The startup phase: untyped packets before the first typed message
(SSLRequest, GSSENCRequest, CancelRequest, StartupMessage), direct TLS
detection (L{StartupParser}) and the server's answer to an encryption
request.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TypeAlias

import attrs

from .backend import (
    NegotiateProtocolVersion,
)
from .core import (
    CANCEL_REQUEST_CODE,
    FEATURE_NOT_SUPPORTED,
    GSSENC_REQUEST_CODE,
    LATEST_PROTOCOL,
    MAX_CANCEL_KEY_LENGTH,
    MAX_STARTUP_PACKET_LENGTH,
    MIN_CANCEL_KEY_LENGTH,
    PROGRAM_LIMIT_EXCEEDED,
    PROTOCOL_3_0,
    PROTOCOL_VIOLATION,
    SSL_REQUEST_CODE,
    TLS_HANDSHAKE_BYTE,
    ProtocolViolation,
    _cstr,
    _malformed,
    _text,
)
from .framing import (
    _I32,
    _II,
    _U32,
)

# -- startup phase -----------------------------------------------------------


@attrs.frozen
class SSLRequest:
    """
    A client asks for TLS.  C{pipelined} is how many bytes the client sent
    after it without waiting for the answer: if the server goes on to start
    TLS, those bytes were not protected and must be refused (the
    CVE-2021-23214 class of attack; L{StartupParser.accept_encryption}
    does).
    """

    pipelined: int = 0

    def encode(self) -> bytes:
        """
        The 8-byte packet, as the gateway sends it upstream.
        """
        return _II.pack(8, SSL_REQUEST_CODE)


@attrs.frozen
class GSSENCRequest:
    """
    A client asks for GSSAPI encryption; C{pipelined} as for L{SSLRequest}.
    """

    pipelined: int = 0

    def encode(self) -> bytes:
        """
        The 8-byte packet.
        """
        return _II.pack(8, GSSENC_REQUEST_CODE)


@attrs.frozen
class CancelRequest:
    """
    A request to cancel the query running in backend C{pid}; C{secret} is
    4 bytes in protocol 3.0 and up to 256 bytes from 3.2 on.
    """

    pid: int
    secret: bytes

    def encode(self) -> bytes:
        """
        The packet, as sent on a fresh connection.
        """
        if not MIN_CANCEL_KEY_LENGTH <= len(self.secret) <= MAX_CANCEL_KEY_LENGTH:
            raise ValueError(f"cancel key of {len(self.secret)} bytes")
        return (
            _II.pack(12 + len(self.secret), CANCEL_REQUEST_CODE)
            + _U32.pack(self.pid & 0xFFFFFFFF)
            + self.secret
        )


@attrs.frozen
class DirectTLS:
    """
    The connection opened with a TLS ClientHello (libpq's
    C{sslnegotiation=direct}, PostgreSQL 17+) instead of a startup packet.
    Nothing was consumed: the server starts TLS at once and feeds it
    L{StartupParser.take_remaining}.
    """


def _pairs(
    value: Mapping[str, str] | Iterable[tuple[str, str]],
) -> tuple[tuple[str, str], ...]:
    items = value.items() if isinstance(value, Mapping) else value
    return tuple((k, v) for k, v in items)


@attrs.frozen
class StartupMessage:
    """
    The client's startup packet: protocol C{version} (major << 16 | minor)
    and its parameters (C{user}, C{database}, C{options}, GUCs and
    C{_pq_.*} protocol options) in the order sent.
    """

    parameters: tuple[tuple[str, str], ...] = attrs.field(default=(), converter=_pairs)
    version: int = PROTOCOL_3_0

    @property
    def major(self) -> int:
        """
        The major protocol version (3).
        """
        return self.version >> 16

    @property
    def minor(self) -> int:
        """
        The minor protocol version (0 by default in libpq up to 18, 2 with
        C{max_protocol_version=3.2}; 9999 when PostgreSQL 19 libpq tests
        negotiation).
        """
        return self.version & 0xFFFF

    def get(self, name: str, default: str | None = None) -> str | None:
        """
        The value of parameter C{name} (the last one, if repeated).
        """
        found = default
        for key, value in self.parameters:
            if key == name:
                found = value
        return found

    def as_dict(self) -> dict[str, str]:
        """
        The parameters as a dict (later duplicates win).
        """
        return dict(self.parameters)

    @property
    def protocol_options(self) -> tuple[str, ...]:
        """
        Names of the C{_pq_.*} protocol extension parameters requested.
        """
        return tuple(k for k, _ in self.parameters if k.startswith("_pq_."))

    def negotiate(
        self,
        latest: int = LATEST_PROTOCOL,
        supported_options: Iterable[str] = (),
    ) -> NegotiateProtocolVersion | None:
        """
        The L{NegotiateProtocolVersion} a server supporting protocol 3.0 up
        to C{latest} and the given C{_pq_.*} options must send in answer,
        or C{None} if the request is fully supported.
        """
        supported = set(supported_options)
        rejected = tuple(n for n in self.protocol_options if n not in supported)
        if self.version > latest or rejected:
            return NegotiateProtocolVersion(min(self.version, latest), rejected)
        return None

    @classmethod
    def decode(
        cls, version: int, body: bytes, encoding: str = "utf-8"
    ) -> StartupMessage:
        """
        Decode the parameter list that follows the version in a protocol 3
        startup packet.
        """
        params = []
        pos = 0
        last = len(body) - 1
        find = body.find
        while True:
            nul = find(b"\0", pos)
            if nul < 0:
                raise _malformed("startup", "missing string terminator")
            if nul == pos:
                if nul != last:
                    raise _malformed("startup", "expected terminator as last byte")
                break
            name = body[pos:nul]
            pos = nul + 1
            nul = find(b"\0", pos)
            if nul < 0:
                raise _malformed("startup", "missing parameter value")
            params.append((_text(name, encoding), _text(body[pos:nul], encoding)))
            pos = nul + 1
        return cls(tuple(params), version)

    def encode(self, encoding: str = "utf-8") -> bytes:
        """
        The packet, as the gateway sends it upstream.
        """
        parts = [_U32.pack(self.version)]
        for name, value in self.parameters:
            if not name:
                raise ValueError("empty startup parameter name")
            parts.append(_cstr(name, encoding))
            parts.append(_cstr(value, encoding))
        parts.append(b"\0")
        body = b"".join(parts)
        if len(body) + 4 > MAX_STARTUP_PACKET_LENGTH:
            raise ValueError("startup packet too long")
        return _U32.pack(len(body) + 4) + body


StartupEvent: TypeAlias = (
    SSLRequest | GSSENCRequest | CancelRequest | StartupMessage | DirectTLS
)


class StartupParser:
    """
    Parse what a client sends before its first typed message.

    Feed bytes with L{receive_data} and call L{next_event} until it returns
    C{None}.  Events are:

     - L{SSLRequest} and L{GSSENCRequest}: nothing more is parsed until the
       server answers through L{accept_encryption} (which refuses bytes
       pipelined in clear) or L{refuse_encryption};
     - L{DirectTLS}: nothing more is parsed until the server hands
       L{take_remaining} (the ClientHello) to TLS; then feed the plaintext;
     - the final L{StartupMessage} or L{CancelRequest}: L{done} becomes
       true and L{take_remaining} holds what followed (for a
       L{FrameReader}).

    @param max_length: the largest packet accepted, length word included.
    @param detect_tls: recognise a direct TLS ClientHello as first bytes.
    @param encoding: codec for the startup parameters.
    """

    def __init__(
        self,
        max_length: int = MAX_STARTUP_PACKET_LENGTH,
        *,
        detect_tls: bool = True,
        encoding: str = "utf-8",
    ):
        self._buf = bytearray()
        self._max_length = max_length
        self._detect_tls = detect_tls
        self._encoding = encoding
        self._tls_pending = False
        self._awaiting_answer = ""  # the request's name while unanswered
        # Requests that may not come again: PostgreSQL takes one SSLRequest
        # and one GSSENCRequest, and neither once encryption is on.
        self._negotiated: set[str] = set()
        self._done = False
        self._error: ProtocolViolation | None = None

    @property
    def done(self) -> bool:
        """
        True once a L{StartupMessage} or L{CancelRequest} was returned.
        """
        return self._done

    @property
    def buffered(self) -> int:
        """
        Bytes received and not consumed by an event.
        """
        return len(self._buf)

    def receive_data(self, data: bytes) -> None:
        """
        Add bytes from the client.
        """
        if self._error is not None:
            raise self._error
        self._buf += data

    def take_remaining(self) -> bytes:
        """
        Remove and return the unconsumed bytes (the ClientHello after
        L{DirectTLS}, or the messages after the startup packet).
        """
        out = bytes(self._buf)
        del self._buf[:]
        self._tls_pending = False
        return out

    def accept_encryption(self) -> bytes:
        """
        Accept the pending L{SSLRequest} or L{GSSENCRequest}: return the
        answer to send (C{b"S"}), then start TLS or GSSAPI and feed the
        decrypted bytes.

        @raise ProtocolViolation: if bytes are already buffered: they were
            sent in clear after the request and must not be read as if they
            had been encrypted.
        """
        request = self._answer()
        self._negotiated.update(("SSLRequest", "GSSENCRequest"))
        if self._buf:
            raise self._fail(
                PROTOCOL_VIOLATION, f"received unencrypted data after {request}"
            )
        return ACCEPT_ENCRYPTION

    def refuse_encryption(self) -> bytes:
        """
        Refuse the pending L{SSLRequest} or L{GSSENCRequest}: return the
        answer to send (C{b"N"}); the client goes on in clear.
        """
        self._negotiated.add(self._answer())
        return REFUSE_ENCRYPTION

    def _answer(self) -> str:
        if self._error is not None:
            raise self._error
        request = self._awaiting_answer
        if not request:
            raise RuntimeError("no encryption request is awaiting an answer")
        self._awaiting_answer = ""
        return request

    def _fail(self, sqlstate: str, message: str) -> ProtocolViolation:
        self._error = ProtocolViolation(sqlstate, message)
        return self._error

    def next_event(self) -> StartupEvent | None:
        """
        Return the next event, or C{None} if more bytes are needed.

        @raise ProtocolViolation: for a malformed or oversized packet or an
            unsupported protocol version.
        """
        if self._error is not None:
            raise self._error
        if self._done or self._tls_pending or self._awaiting_answer:
            return None
        buf = self._buf
        if self._detect_tls:
            if not buf:
                return None
            self._detect_tls = False
            if buf[0] == TLS_HANDSHAKE_BYTE:
                self._tls_pending = True
                self._negotiated.update(("SSLRequest", "GSSENCRequest"))
                return DirectTLS()
        if len(buf) < 4:
            return None
        # Read signed, as PostgreSQL does: a "negative" length is < 8.
        length = _I32.unpack_from(buf)[0]
        if length < 8:
            raise self._fail(
                PROTOCOL_VIOLATION, f"invalid length of startup packet: {length}"
            )
        if length > self._max_length:
            raise self._fail(
                PROGRAM_LIMIT_EXCEEDED,
                f"startup packet too long: {length} bytes,"
                f" at most {self._max_length} allowed",
            )
        if len(buf) < length:
            return None
        code = _U32.unpack_from(buf, 4)[0]
        body = bytes(buf[8:length])
        del buf[:length]
        if code == SSL_REQUEST_CODE or code == GSSENC_REQUEST_CODE:
            kind = SSLRequest if code == SSL_REQUEST_CODE else GSSENCRequest
            if body:
                raise self._fail(
                    PROTOCOL_VIOLATION, f"invalid length of {kind.__name__}: {length}"
                )
            if kind.__name__ in self._negotiated:
                raise self._fail(
                    PROTOCOL_VIOLATION,
                    f"repeated {kind.__name__}: encryption was already negotiated",
                )
            self._awaiting_answer = kind.__name__
            return kind(len(buf))
        if code == CANCEL_REQUEST_CODE:
            key_length = len(body) - 4
            if not MIN_CANCEL_KEY_LENGTH <= key_length <= MAX_CANCEL_KEY_LENGTH:
                raise self._fail(
                    PROTOCOL_VIOLATION, f"invalid length of cancel request: {length}"
                )
            self._done = True
            return CancelRequest(_I32.unpack_from(body)[0], body[4:])
        major, minor = code >> 16, code & 0xFFFF
        if major != 3:
            raise self._fail(
                FEATURE_NOT_SUPPORTED,
                f"unsupported frontend protocol {major}.{minor}: server supports"
                f" 3.0 to 3.{LATEST_PROTOCOL & 0xFFFF}",
            )
        try:
            event = StartupMessage.decode(code, body, self._encoding)
        except ProtocolViolation as e:
            self._error = e
            raise
        self._done = True
        return event


@attrs.frozen
class EncryptionResponse:
    """
    A server's one-byte answer to SSLRequest or GSSENCRequest, as the
    gateway's upstream side reads it.

    @ivar answer: C{"S"} (go ahead), C{"N"} (refused) or C{"E"} (an
        ErrorResponse from a server too old to know the request: treat as
        refused and do not trust its text).
    @ivar trailing: bytes received after the answer; after C{"S"} they
        arrived unencrypted and must be refused (CVE-2021-23222).
    """

    answer: str
    trailing: int = 0

    @property
    def accepted(self) -> bool:
        """
        True if the server will now start the encryption.
        """
        return self.answer == "S"


#: What a server sends to accept or refuse SSLRequest / GSSENCRequest.
ACCEPT_ENCRYPTION = b"S"
REFUSE_ENCRYPTION = b"N"


def decode_encryption_response(data: bytes) -> EncryptionResponse | None:
    """
    Decode the first bytes a server sent after SSLRequest/GSSENCRequest;
    C{None} if C{data} is empty.
    """
    if not data:
        return None
    answer = data[0]
    if answer not in b"SNE":
        raise ProtocolViolation(
            PROTOCOL_VIOLATION,
            f"invalid response to encryption request: {bytes([answer])!r}",
        )
    return EncryptionResponse(chr(answer), len(data) - 1)
