"""
SFTP version 3 for the SSH gateway, sans-IO: the wire format (L{codec}:
L{SFTPPacketReader}, L{encode_status}; L{messages}: the packets' classes;
L{wire}: fields, attributes, status codes) and the
session tracker (L{session}: L{SFTPSession}, L{SFTPOperation},
L{FileOperationDone}, L{sftp_command}).
"""

from gatehouse.protocols.ssh.sftp.codec import Packet, SFTPPacketReader, encode_status
from gatehouse.protocols.ssh.sftp.session import (
    SFTP_OPS,
    FileOperationDone,
    SFTPOperation,
    SFTPSession,
    sftp_command,
)
from gatehouse.protocols.ssh.sftp.wire import (
    MAX_PACKET_LENGTH,
    SSH_FX_PERMISSION_DENIED,
    SFTPProtocolError,
)

__all__ = [
    "MAX_PACKET_LENGTH",
    "SFTP_OPS",
    "SSH_FX_PERMISSION_DENIED",
    "FileOperationDone",
    "Packet",
    "SFTPOperation",
    "SFTPPacketReader",
    "SFTPProtocolError",
    "SFTPSession",
    "encode_status",
    "sftp_command",
]
