"""
The seams of the recording layer.

A protocol never talks to a recorder directly: it talks to its
L{gatehouse.session.Session}, which holds an L{ISessionRecording} made by
the configured L{IRecorder}.  Recorders can therefore be swapped, or several
combined, without touching protocol code.
"""

from __future__ import annotations

import uuid
from typing import Any

import attrs
from twisted.internet.interfaces import IPushProducer
from zope.interface import Attribute, Interface

#: How the reason starts when a recording ended because its disk is full.
SPACE_EXHAUSTED = "recording space exhausted"
#: How the reason starts when the next segment file could not be created
#: for another reason than space.
SEGMENT_UNAVAILABLE = "recording segment unavailable"


class RecordingFailed(Exception):
    """
    The recording can no longer accept records (for example the disk is
    full).  The session must stop forwarding: nothing may cross unrecorded.
    """


class RecordingUnavailable(Exception):
    """
    A recording cannot be started (for example no signing key is valid
    now).  The session must be refused.
    """


@attrs.frozen
class SealInfo:
    """What a seal covered, reported once the seal is durable on disk."""

    session_id: str
    segment_index: int
    link: bytes
    final: bool
    first_seq: int
    record_count: int
    wall_seal: int


class ISessionRecording(Interface):
    """The recording of one session."""

    session_id = Attribute("The session id, canonical UUID string.")
    directory = Attribute("Where the segment files are written.")
    failed = Attribute("True once the recording has failed; see notifyFailure.")

    def record(rtype: int, direction: int, channel: int, payload: bytes) -> int:
        """
        Append one record; cheap enough for every chunk on the data path.

        @return: the record's sequence number.
        @raise RecordingFailed: when the recording has failed.
        """

    def seal() -> object:
        """
        Seal what was recorded so far.

        @return: Deferred firing with L{SealInfo} once the seal is durable.
        """

    def close(reason: str) -> object:
        """
        Record the close reason and write the final seal.

        @return: Deferred firing with the final L{SealInfo} once durable.
        """

    def notifyFailure() -> object:
        """
        @return: Deferred that fires with the failure's reason (a string)
            if the recording fails; it never fires otherwise.
        """

    def registerProducer(producer: IPushProducer) -> None:
        """
        Pause C{producer} (typically the client's
        transport) while records are waiting to be written, so memory stays
        bounded when the disk is slower than the network.
        """

    def unregisterProducer(producer: IPushProducer) -> None:
        """Stop pausing C{producer}."""


class IRecorder(Interface):
    """Makes the recording of each session."""

    def open(session_id: uuid.UUID, meta: dict[str, Any]) -> ISessionRecording:
        """
        Start recording a session.  C{meta} becomes the META record.

        @raise RecordingUnavailable: when the session must be refused.
        """
