"""
Constants, message type codes, length limits, L{ProtocolViolation} and
client encodings of the PostgreSQL codec.
"""

from __future__ import annotations

from collections.abc import Mapping

# -- constants ---------------------------------------------------------------

PROTOCOL_3_0 = 3 << 16  # 196608
PROTOCOL_3_2 = (3 << 16) | 2  # 196610: variable-length cancel keys (PG 18)
#: The newest protocol version whose layout this codec knows.
LATEST_PROTOCOL = PROTOCOL_3_2

SSL_REQUEST_CODE = 80877103  # 1234.5679
GSSENC_REQUEST_CODE = 80877104  # 1234.5680
CANCEL_REQUEST_CODE = 80877102  # 1234.5678

#: PostgreSQL's MAX_STARTUP_PACKET_LENGTH, length word included.
MAX_STARTUP_PACKET_LENGTH = 10000
#: PostgreSQL's PQ_LARGE_MESSAGE_LIMIT (MaxAllocSize - 1, just under 1 GiB):
#: the largest length word accepted by default.
MAX_MESSAGE_LENGTH = 0x3FFFFFFF - 1
#: PostgreSQL's PQ_SMALL_MESSAGE_LIMIT, for frontend messages that are
#: always short (Sync, Execute, Describe, ...).
SMALL_MESSAGE_LIMIT = 10000
#: PostgreSQL's PG_MAX_AUTH_TOKEN_LENGTH, for the 'p' message family.
MAX_AUTH_TOKEN_LENGTH = 65535
#: libpq's limit for backend messages that are always short.
BACKEND_SMALL_MESSAGE_LIMIT = 30000
MIN_CANCEL_KEY_LENGTH = 4
MAX_CANCEL_KEY_LENGTH = 256
#: First byte of a TLS handshake record: a direct-TLS ClientHello.
TLS_HANDSHAKE_BYTE = 0x16

PROTOCOL_VIOLATION = "08P01"
PROGRAM_LIMIT_EXCEEDED = "54000"
FEATURE_NOT_SUPPORTED = "0A000"


class FrontendType:
    """
    Type bytes of frontend messages after startup, as C{int} (as
    L{FrameReader} reports them).
    """

    BIND = 0x42  # B
    CLOSE = 0x43  # C
    COPY_DATA = 0x64  # d
    COPY_DONE = 0x63  # c
    COPY_FAIL = 0x66  # f
    DESCRIBE = 0x44  # D
    EXECUTE = 0x45  # E
    FLUSH = 0x48  # H
    FUNCTION_CALL = 0x46  # F
    PARSE = 0x50  # P
    PASSWORD = 0x70  # p: PasswordMessage, SASL*Response, GSSResponse
    QUERY = 0x51  # Q
    SYNC = 0x53  # S
    TERMINATE = 0x58  # X


class BackendType:
    """
    Type bytes of backend messages, as C{int}.
    """

    AUTHENTICATION = 0x52  # R
    BACKEND_KEY_DATA = 0x4B  # K
    BIND_COMPLETE = 0x32  # 2
    CLOSE_COMPLETE = 0x33  # 3
    COMMAND_COMPLETE = 0x43  # C
    COPY_BOTH_RESPONSE = 0x57  # W
    COPY_DATA = 0x64  # d
    COPY_DONE = 0x63  # c
    COPY_IN_RESPONSE = 0x47  # G
    COPY_OUT_RESPONSE = 0x48  # H
    DATA_ROW = 0x44  # D
    EMPTY_QUERY_RESPONSE = 0x49  # I
    ERROR_RESPONSE = 0x45  # E
    FUNCTION_CALL_RESPONSE = 0x56  # V
    NEGOTIATE_PROTOCOL_VERSION = 0x76  # v
    NO_DATA = 0x6E  # n
    NOTICE_RESPONSE = 0x4E  # N
    NOTIFICATION_RESPONSE = 0x41  # A
    PARAMETER_DESCRIPTION = 0x74  # t
    PARAMETER_STATUS = 0x53  # S
    PARSE_COMPLETE = 0x31  # 1
    PORTAL_SUSPENDED = 0x73  # s
    READY_FOR_QUERY = 0x5A  # Z
    ROW_DESCRIPTION = 0x54  # T


def _limit_table(limits: Mapping[str, int]) -> tuple[int, ...]:
    table = [0] * 256
    for letters, limit in limits.items():
        for letter in letters:
            table[ord(letter)] = limit
    return tuple(table)


#: Per-type limits on the length word of frontend messages, indexed by type
#: byte (0 = type not allowed), the same as PostgreSQL's backend applies.
FRONTEND_LIMITS = _limit_table(
    {
        "QPBFd": MAX_MESSAGE_LENGTH,
        "p": MAX_AUTH_TOKEN_LENGTH,
        "EDCSHXcf": SMALL_MESSAGE_LIMIT,
    }
)
#: The same after authentication: a password message (type C{p}: also
#: SASL and GSS responses) is refused from its header on, before any of
#: its body is buffered, so a secret sent late is never read into a frame.
RELAY_LIMITS = tuple(0 if t == ord("p") else v for t, v in enumerate(FRONTEND_LIMITS))
#: Per-type limits for backend messages: small for the fixed-size ones.
BACKEND_LIMITS = _limit_table(
    {
        "RSCTDEGHWNAtvVd": MAX_MESSAGE_LENGTH,
        "KZ123nsIc": BACKEND_SMALL_MESSAGE_LIMIT,
    }
)


class ProtocolViolation(Exception):
    """
    The peer sent something malformed or forbidden; the connection cannot
    continue.

    @ivar sqlstate: the SQLSTATE to report (08P01, 54000 or 0A000).
    @ivar message: a description fit for the client and the log.
    @ivar message_type: the type byte of the offending message, when a
        L{FrameReader} refused its header (else None).
    """

    message_type: int | None = None

    def __init__(self, sqlstate: str, message: str):
        super().__init__(sqlstate, message)
        self.sqlstate = sqlstate
        self.message = message

    def __str__(self) -> str:
        return f"{self.message} (SQLSTATE {self.sqlstate})"


def _malformed(what: str, why: str) -> ProtocolViolation:
    return ProtocolViolation(PROTOCOL_VIOLATION, f"invalid {what} message: {why}")


# -- text --------------------------------------------------------------------

_PG_ENCODINGS = {
    "UTF8": "utf-8",
    "UNICODE": "utf-8",
    "SQL_ASCII": "utf-8",  # no conversion on the server: bytes as they are
    "LATIN1": "latin-1",
    "LATIN2": "iso8859-2",
    "LATIN3": "iso8859-3",
    "LATIN4": "iso8859-4",
    "LATIN5": "iso8859-9",
    "LATIN6": "iso8859-10",
    "LATIN7": "iso8859-13",
    "LATIN8": "iso8859-14",
    "LATIN9": "iso8859-15",
    "LATIN10": "iso8859-16",
    "ISO_8859_5": "iso8859-5",
    "ISO_8859_6": "iso8859-6",
    "ISO_8859_7": "iso8859-7",
    "ISO_8859_8": "iso8859-8",
    "WIN866": "cp866",
    "WIN874": "cp874",
    "WIN1250": "cp1250",
    "WIN1251": "cp1251",
    "WIN1252": "cp1252",
    "WIN1253": "cp1253",
    "WIN1254": "cp1254",
    "WIN1255": "cp1255",
    "WIN1256": "cp1256",
    "WIN1257": "cp1257",
    "WIN1258": "cp1258",
    "KOI8R": "koi8-r",
    "KOI8U": "koi8-u",
    "EUC_JP": "euc_jp",
    "EUC_KR": "euc_kr",
    "EUC_CN": "gb2312",
    "SJIS": "shift_jis",
    "SHIFT_JIS_2004": "shift_jis_2004",
    "EUC_JIS_2004": "euc_jis_2004",
    "BIG5": "big5",
    "GBK": "gbk",
    "GB18030": "gb18030",
    "UHC": "cp949",
    "JOHAB": "johab",
}


def python_encoding(pg_name: str) -> str:
    """
    Map a PostgreSQL encoding name (as in C{client_encoding}) to a Python
    codec name; unknown names map to C{"utf-8"}.
    """
    key = pg_name.strip().upper().replace("-", "_")
    return _PG_ENCODINGS.get(key, _PG_ENCODINGS.get(key.replace("_", ""), "utf-8"))


def _text(raw: bytes, encoding: str) -> str:
    return raw.decode(encoding, "surrogateescape")


def _cstr(value: str, encoding: str) -> bytes:
    raw = value.encode(encoding, "surrogateescape")
    if b"\0" in raw:
        # A NUL would end the string early and let the rest be read as
        # further fields: refuse rather than truncate.
        raise ValueError("NUL byte in a protocol string")
    return raw + b"\0"
