"""
Sans-IO codec for the PostgreSQL frontend/backend protocol, version 3.

Bytes go in, events come out; message objects turn into bytes.  Nothing here
touches a socket, a reactor or a Deferred.  There are three layers:

 - L{StartupParser}: the untyped, length-prefixed packets a client sends
   before its first typed message (SSLRequest, GSSENCRequest, CancelRequest,
   StartupMessage) and detection of a direct TLS ClientHello.

 - L{FrameReader}: the hot path.  It only reads the 5-byte message headers
   and reports complete messages as C{(type, start, end)} offsets into the
   byte stream, so a relay can forward any number of complete messages with
   one L{FrameReader.take_to} (one slice, often no copy at all) without
   building an object per message.

 - Typed messages: frozen attrs classes with C{decode(body)} and C{encode()},
   decoded on demand (L{decode_frontend}, L{decode_backend}) only for the
   messages the gateway has to look into.

Text: strings are bytes on the wire, in the client's C{client_encoding}
(usually UTF-8).  Every decoder and encoder takes an C{encoding} (a Python
codec name, default UTF-8; L{python_encoding} maps PostgreSQL names) and
uses the C{surrogateescape} error handler.  That choice makes decoding
total and lossless: bytes that are not valid in the encoding become lone
surrogates (U+DC80..U+DCFF) that cannot match any ordinary text a policy
looks for, and encoding the C{str} again gives back exactly the bytes that
crossed.  A latin-1 fallback would also be total, but it silently turns
invalid input into plausible-looking different characters.  The raw bytes
stay available as the frame body (L{FrameReader.body}).

Malformed input raises L{ProtocolViolation}, whose SQLSTATE is 08P01
(protocol_violation), 54000 (program_limit_exceeded) for a length over the
limit, or 0A000 (feature_not_supported) for an unsupported protocol version.
Readers keep raising the same error once they have raised it.

The package's modules, by job: C{core} (constants, type codes, limits,
L{ProtocolViolation}, client encodings), C{framing} (L{FrameReader},
L{encode_message}), C{message} (the typed messages' base), C{startup}
(L{StartupParser} and the startup packets), C{frontend} and C{backend}
(the typed messages of each side); the decoders by type byte are here.
Every name is importable from C{gatehouse.protocols.postgres.codec}.
"""

# The package re-exports every name of the module it replaced.
# ruff: noqa: F401

from __future__ import annotations

from collections.abc import Callable

from .backend import (
    _AUTHENTICATION,
    _FIELD,
    _FIELD_NAMES,
    _READY,
    AuthenticationCleartextPassword,
    AuthenticationGSS,
    AuthenticationGSSContinue,
    AuthenticationKerberosV5,
    AuthenticationMD5Password,
    AuthenticationOk,
    AuthenticationSASL,
    AuthenticationSASLContinue,
    AuthenticationSASLFinal,
    AuthenticationSSPI,
    BackendKeyData,
    BindComplete,
    CloseComplete,
    CommandComplete,
    CopyBothResponse,
    CopyInResponse,
    CopyOutResponse,
    DataRow,
    EmptyQueryResponse,
    ErrorResponse,
    FieldDescription,
    FunctionCallResponse,
    NegotiateProtocolVersion,
    NoData,
    NoticeResponse,
    NotificationResponse,
    ParameterDescription,
    ParameterStatus,
    ParseComplete,
    PortalSuspended,
    ReadyForQuery,
    RowDescription,
    _Authentication,
    _AuthenticationData,
    _check_salt,
    _CopyResponse,
    _field_pairs,
    _field_property,
    _Fields,
    data_row_values,
    describe_portal,
    portal_described,
    portal_executed,
)
from .core import (
    _PG_ENCODINGS,
    BACKEND_LIMITS,
    BACKEND_SMALL_MESSAGE_LIMIT,
    CANCEL_REQUEST_CODE,
    FEATURE_NOT_SUPPORTED,
    FRONTEND_LIMITS,
    GSSENC_REQUEST_CODE,
    LATEST_PROTOCOL,
    MAX_AUTH_TOKEN_LENGTH,
    MAX_CANCEL_KEY_LENGTH,
    MAX_MESSAGE_LENGTH,
    MAX_STARTUP_PACKET_LENGTH,
    MIN_CANCEL_KEY_LENGTH,
    PROGRAM_LIMIT_EXCEEDED,
    PROTOCOL_3_0,
    PROTOCOL_3_2,
    PROTOCOL_VIOLATION,
    RELAY_LIMITS,
    SMALL_MESSAGE_LIMIT,
    SSL_REQUEST_CODE,
    TLS_HANDSHAKE_BYTE,
    BackendType,
    FrontendType,
    ProtocolViolation,
    _cstr,
    _limit_table,
    _malformed,
    _text,
    python_encoding,
)
from .framing import (
    _HEADER,
    _I16,
    _I32,
    _II,
    _NULL,
    _U16,
    _U32,
    Frame,
    FrameReader,
    encode_message,
)
from .frontend import (
    AuthResponse,
    Bind,
    Close,
    CopyData,
    CopyDone,
    CopyFail,
    Describe,
    Execute,
    Flush,
    FunctionCall,
    GSSResponse,
    Parse,
    PasswordMessage,
    Query,
    SASLInitialResponse,
    SASLResponse,
    Sync,
    Terminate,
    _KindName,
)
from .message import (
    Message,
    _Cursor,
    _Empty,
    _kind,
    _pack_int16s,
    _pack_values,
)
from .startup import (
    ACCEPT_ENCRYPTION,
    REFUSE_ENCRYPTION,
    CancelRequest,
    DirectTLS,
    EncryptionResponse,
    GSSENCRequest,
    SSLRequest,
    StartupEvent,
    StartupMessage,
    StartupParser,
    _pairs,
    decode_encryption_response,
)

__all__ = [
    "ACCEPT_ENCRYPTION",
    "BACKEND_LIMITS",
    "BACKEND_SMALL_MESSAGE_LIMIT",
    "CANCEL_REQUEST_CODE",
    "FEATURE_NOT_SUPPORTED",
    "FRONTEND_LIMITS",
    "GSSENC_REQUEST_CODE",
    "LATEST_PROTOCOL",
    "MAX_AUTH_TOKEN_LENGTH",
    "MAX_CANCEL_KEY_LENGTH",
    "MAX_MESSAGE_LENGTH",
    "MAX_STARTUP_PACKET_LENGTH",
    "MIN_CANCEL_KEY_LENGTH",
    "PROGRAM_LIMIT_EXCEEDED",
    "PROTOCOL_3_0",
    "PROTOCOL_3_2",
    "PROTOCOL_VIOLATION",
    "REFUSE_ENCRYPTION",
    "RELAY_LIMITS",
    "SMALL_MESSAGE_LIMIT",
    "SSL_REQUEST_CODE",
    "TLS_HANDSHAKE_BYTE",
    "AuthResponse",
    "AuthenticationCleartextPassword",
    "AuthenticationGSS",
    "AuthenticationGSSContinue",
    "AuthenticationKerberosV5",
    "AuthenticationMD5Password",
    "AuthenticationOk",
    "AuthenticationSASL",
    "AuthenticationSASLContinue",
    "AuthenticationSASLFinal",
    "AuthenticationSSPI",
    "BackendKeyData",
    "BackendType",
    "Bind",
    "BindComplete",
    "CancelRequest",
    "Close",
    "CloseComplete",
    "CommandComplete",
    "CopyBothResponse",
    "CopyData",
    "CopyDone",
    "CopyFail",
    "CopyInResponse",
    "CopyOutResponse",
    "DataRow",
    "Describe",
    "DirectTLS",
    "EmptyQueryResponse",
    "EncryptionResponse",
    "ErrorResponse",
    "Execute",
    "FieldDescription",
    "Flush",
    "Frame",
    "FrameReader",
    "FrontendType",
    "FunctionCall",
    "FunctionCallResponse",
    "GSSENCRequest",
    "GSSResponse",
    "Message",
    "NegotiateProtocolVersion",
    "NoData",
    "NoticeResponse",
    "NotificationResponse",
    "ParameterDescription",
    "ParameterStatus",
    "Parse",
    "ParseComplete",
    "PasswordMessage",
    "PortalSuspended",
    "ProtocolViolation",
    "Query",
    "ReadyForQuery",
    "RowDescription",
    "SASLInitialResponse",
    "SASLResponse",
    "SSLRequest",
    "StartupEvent",
    "StartupMessage",
    "StartupParser",
    "Sync",
    "Terminate",
    "decode_backend",
    "decode_encryption_response",
    "decode_frontend",
    "describe_portal",
    "encode_message",
    "portal_described",
    "portal_executed",
    "python_encoding",
]

# -- dispatch ----------------------------------------------------------------

_FRONTEND: dict[int, Callable[[bytes, str], Message]] = {
    k.TYPE: k.decode
    for k in (
        Query,
        Parse,
        Bind,
        Execute,
        Describe,
        Close,
        Sync,
        Flush,
        Terminate,
        CopyData,
        CopyDone,
        CopyFail,
        FunctionCall,
        AuthResponse,
    )
}

_BACKEND: dict[int, Callable[[bytes, str], Message]] = {
    k.TYPE: k.decode
    for k in (
        _Authentication,
        ParameterStatus,
        BackendKeyData,
        ReadyForQuery,
        RowDescription,
        DataRow,
        CommandComplete,
        EmptyQueryResponse,
        ErrorResponse,
        NoticeResponse,
        NotificationResponse,
        ParseComplete,
        BindComplete,
        CloseComplete,
        NoData,
        PortalSuspended,
        ParameterDescription,
        CopyInResponse,
        CopyOutResponse,
        CopyBothResponse,
        CopyData,
        CopyDone,
        NegotiateProtocolVersion,
        FunctionCallResponse,
    )
}


def decode_frontend(type_: int, body: bytes, encoding: str = "utf-8") -> Message:
    """
    Decode a frontend message body by type byte.  A 'p' message comes back
    as L{AuthResponse}: its meaning depends on the authentication state.

    @raise ProtocolViolation: for an unknown type or a malformed body.
    """
    decode = _FRONTEND.get(type_)
    if decode is None:
        raise ProtocolViolation(
            PROTOCOL_VIOLATION, f"invalid frontend message type {type_}"
        )
    return decode(body, encoding)


def decode_backend(type_: int, body: bytes, encoding: str = "utf-8") -> Message:
    """
    Decode a backend message body by type byte.

    @raise ProtocolViolation: for an unknown type or a malformed body.
    """
    decode = _BACKEND.get(type_)
    if decode is None:
        raise ProtocolViolation(
            PROTOCOL_VIOLATION, f"invalid backend message type {type_}"
        )
    return decode(body, encoding)
