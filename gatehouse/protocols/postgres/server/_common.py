"""Constants, helpers and the phases the PostgreSQL server's modules share."""

from __future__ import annotations

import enum

from gatehouse.gate import HoldReason, Wait
from gatehouse.protocols.postgres import codec
from gatehouse.protocols.postgres.commands import Classified
from gatehouse.recording.format import Direction

_C2G = Direction.CLIENT_TO_GATEWAY
_G2C = Direction.GATEWAY_TO_CLIENT
_G2U = Direction.GATEWAY_TO_UPSTREAM
_U2G = Direction.UPSTREAM_TO_GATEWAY
_QUERY = codec.FrontendType.QUERY
_PARSE = codec.FrontendType.PARSE
_TERMINATE = codec.FrontendType.TERMINATE
_SYNC = codec.FrontendType.SYNC
_FUNCTION_CALL = codec.FrontendType.FUNCTION_CALL
_DESCRIBE = codec.FrontendType.DESCRIBE
_EXECUTE = codec.FrontendType.EXECUTE
_BIND = codec.FrontendType.BIND
_COPY_END = frozenset({codec.FrontendType.COPY_DONE, codec.FrontendType.COPY_FAIL})
_B_COPY_IN = codec.BackendType.COPY_IN_RESPONSE
#: client messages that PostgreSQL answers with one ReadyForQuery
_READY_AFTER = frozenset({_QUERY, _SYNC, _FUNCTION_CALL})
_B_NO_DATA = codec.BackendType.NO_DATA
_B_PARAMETER = codec.BackendType.PARAMETER_STATUS
_B_ERROR = codec.BackendType.ERROR_RESPONSE
_B_READY = codec.BackendType.READY_FOR_QUERY
_B_ROWS = codec.BackendType.ROW_DESCRIPTION
_B_DATA_ROW = codec.BackendType.DATA_ROW
#: backend messages the response masker reads the body of (RowDescription
#: and DataRow have branches of their own in _deliver): COPY, and every
#: other message that carries values
_MASKER_BODIES = frozenset(
    {
        codec.BackendType.COPY_OUT_RESPONSE,
        codec.BackendType.COPY_DATA,
        codec.BackendType.ERROR_RESPONSE,
        codec.BackendType.NOTICE_RESPONSE,
        codec.BackendType.NOTIFICATION_RESPONSE,
        codec.BackendType.PARAMETER_STATUS,
        codec.BackendType.FUNCTION_CALL_RESPONSE,
    }
)
#: and those it follows by their kind alone (where a result ends)
_MASKED_TYPES = _MASKER_BODIES | {
    codec.BackendType.COPY_DONE,
    codec.BackendType.COMMAND_COMPLETE,
    codec.BackendType.EMPTY_QUERY_RESPONSE,
    codec.BackendType.READY_FOR_QUERY,
}
_PASSWORD = codec.FrontendType.PASSWORD
_REDACTED_PASSWORD = codec.encode_message(_PASSWORD, b"[REDACTED]\0")
#: what the recording holds in place of a password message after login
#: (refused, never forwarded; see L{PostgresServerProtocol._late_password})
_LATE_PASSWORD = b"[password message after authentication: not recorded]"


def _own_commands(classified: Classified, text: str) -> tuple:
    return classified.for_text(text).commands


#: The rule name of the built-in protections' refusals.
PROTECTION_RULE = "built-in-protection"

#: L{PostgresServerProtocol._reading}: wait for the target's answers first
_BARRIER = object()
_WAIT_BARRIER = Wait(HoldReason.BARRIER)
_CANCELED = "canceling statement due to user request"
#: what a CancelRequest ends of a held statement (a catalog lookup goes on)
_CANCELLABLE = frozenset(
    {HoldReason.APPROVAL, HoldReason.BARRIER, HoldReason.CLASSIFICATION}
)
#: SQLSTATE of a limit exceeded; before authentication PostgreSQL answers
#: an oversized packet with a protocol violation instead
_LIMIT_EXCEEDED = "54000"
#: a password message's bytes around the token: length word and NUL
_PASSWORD_FRAMING = 5


def _preauth_sqlstate(error: codec.ProtocolViolation) -> str:
    return "08P01" if error.sqlstate == _LIMIT_EXCEEDED else error.sqlstate


class Phase(enum.Enum):
    """The phases of a client connection, in order (see the module docstring)."""

    #: SSLRequest, TLS, GSSENCRequest, CancelRequest, StartupMessage
    STARTUP = "startup"
    #: the password message (the client's JWT)
    PASSWORD = "password"
    #: the token is verified and the target session opened; what the client
    #: sends meanwhile is recorded and held
    CONNECTING = "connecting"
    #: messages go through the gate both ways
    RELAY = "relay"
    #: the session is ending: the client's bytes are ignored
    CLOSING = "closing"


#: the phases each phase may go to
_NEXT = {
    Phase.STARTUP: frozenset({Phase.PASSWORD, Phase.CLOSING}),
    Phase.PASSWORD: frozenset({Phase.CONNECTING, Phase.CLOSING}),
    Phase.CONNECTING: frozenset({Phase.RELAY, Phase.CLOSING}),
    Phase.RELAY: frozenset({Phase.CLOSING}),
    Phase.CLOSING: frozenset({Phase.CLOSING}),
}
#: the method that reads the client in each phase
_READERS = {
    Phase.STARTUP: "_startup_data",
    Phase.PASSWORD: "_password_data",
    Phase.CONNECTING: "_waiting_data",
    Phase.RELAY: "_relay_data",
    Phase.CLOSING: "_ignore",
}
