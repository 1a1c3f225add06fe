"""
Each direction of a recording reassembled into messages with the codec,
whatever the chunks it was recorded in.
"""

from __future__ import annotations

from typing import Any

from gatehouse.protocols.postgres import codec

# --- stream reassembly ----------------------------------------------------


class _ClientStream:
    """
    Reassembles what one side sent as a client (the client to the gateway,
    or the gateway to its target): untyped startup packets, then typed
    frontend messages.  Calls C{on_startup(event, size)} (C{size}: bytes
    of a direct TLS ClientHello), C{on_message(type, body)} and
    C{on_broken(reason)}.
    """

    def __init__(self, on_startup: Any, on_message: Any, on_broken: Any):
        self._startup: codec.StartupParser | None = codec.StartupParser()
        self._reader: codec.FrameReader | None = None
        self._on_startup = on_startup
        self._on_message = on_message
        self._on_broken = on_broken
        self.ignored = 0
        self.broken = False

    @property
    def partial(self) -> int:
        """Bytes of an incomplete message or packet at the end."""
        if self.broken:
            return 0
        if self._reader is not None:
            return self._reader.buffered
        if self._startup is not None:
            return self._startup.buffered
        return 0

    def feed(self, data: bytes) -> None:
        if self.broken:
            self.ignored += len(data)
            return
        if self._reader is not None:
            _feed_frames(self, self._reader, data)
            return
        parser = self._startup
        if parser is None:  # after a CancelRequest
            self.fail("bytes after a CancelRequest")
            self.ignored += len(data)
            return
        try:
            parser.receive_data(data)
            while (event := parser.next_event()) is not None:
                if isinstance(event, (codec.SSLRequest, codec.GSSENCRequest)):
                    # The answer is on the other stream; go on reading
                    # what the client sent next (in the clear, or what the
                    # gateway decrypted).
                    parser.refuse_encryption()
                    self._on_startup(event, 0)
                elif isinstance(event, codec.DirectTLS):
                    # The raw ClientHello was recorded before TLS started;
                    # the rest of the handshake never reaches the recorder.
                    self._on_startup(event, len(parser.take_remaining()))
                elif isinstance(event, codec.StartupMessage):
                    self._on_startup(event, 0)
                    rest = parser.take_remaining()
                    self._startup = None
                    self._reader = codec.FrameReader.frontend()
                    if rest:
                        _feed_frames(self, self._reader, rest)
                    return
                else:  # CancelRequest: nothing may follow
                    self._on_startup(event, 0)
                    rest = parser.take_remaining()
                    self._startup = None
                    if rest:
                        self.fail("bytes after a CancelRequest")
                        self.ignored += len(rest)
                    return
        except codec.ProtocolViolation as e:
            self.fail(e.message)
            self.ignored += parser.buffered

    def fail(self, reason: str) -> None:
        if not self.broken:
            self.broken = True
            self._on_broken(reason)


class _ServerStream:
    """
    Reassembles what one side sent as a server: typed backend messages,
    except for the one-byte answer to an SSLRequest or GSSENCRequest.
    """

    def __init__(self, on_answer: Any, on_message: Any, on_broken: Any):
        self._reader = codec.FrameReader.backend()
        self._on_answer = on_answer
        self._on_message = on_message
        self._on_broken = on_broken
        self.awaiting_answer = False
        self.ignored = 0
        self.broken = False

    @property
    def partial(self) -> int:
        """Bytes of an incomplete message at the end."""
        return 0 if self.broken else self._reader.buffered

    def feed(self, data: bytes) -> None:
        if self.broken:
            self.ignored += len(data)
            return
        if self.awaiting_answer and data and not self._reader.buffered:
            self.awaiting_answer = False
            if data[:1] in (b"S", b"N"):
                self._on_answer(data[:1])
                data = data[1:]
        if data:
            _feed_frames(self, self._reader, data)

    def fail(self, reason: str) -> None:
        if not self.broken:
            self.broken = True
            self._on_broken(reason)


def _feed_frames(
    stream: _ClientStream | _ServerStream, reader: codec.FrameReader, data: bytes
) -> None:
    try:
        messages = reader.feed_messages(data)
    except codec.ProtocolViolation as e:
        # The messages framed before the bad header are whole: show them.
        messages = []
        if reader.framed > reader.consumed:
            good = reader.take_to(reader.framed)
            messages = codec.FrameReader().feed_messages(good)
        for type_, body in messages:
            stream._on_message(type_, body)
        stream.fail(e.message)
        stream.ignored += reader.buffered
        return
    for type_, body in messages:
        stream._on_message(type_, body)
        if stream.broken:
            return
