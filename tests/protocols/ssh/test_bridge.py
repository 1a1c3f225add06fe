"""
Tests for L{gatehouse.protocols.ssh.bridge} in memory: flow control and
ordering between the two sides of a channel, channel request fields,
record channels.  The end-to-end tests run it against OpenSSH.
"""

from __future__ import annotations

import struct
from typing import Any

from twisted.conch.ssh import common
from twisted.trial.unittest import SynchronousTestCase

from gatehouse.protocols.ssh import bridge


class _Conn:
    """What a channel calls on its connection, written down."""

    def __init__(self) -> None:
        self.sent: list[tuple[Any, ...]] = []
        self.granted: list[int] = []

    def sendData(self, channel: Any, data: bytes) -> None:
        self.sent.append(("data", data))

    def sendExtendedData(self, channel: Any, kind: int, data: bytes) -> None:
        self.sent.append(("ext", kind, data))

    def sendRequest(self, channel: Any, name: bytes, data: bytes, wantReply: int = 0):
        self.sent.append(("request", name))

    def sendEOF(self, channel: Any) -> None:
        self.sent.append(("eof",))

    def sendClose(self, channel: Any) -> None:
        self.sent.append(("close",))
        channel.localClosed = True

    def adjustWindow(self, channel: Any, n: int) -> None:
        # As GatewayConnection.adjustWindow: nothing while withheld.
        if channel.withheld:
            return
        self.granted.append(n)
        channel.localWindowLeft += n


def _pair() -> tuple[bridge._Twin, bridge._Twin, _Conn]:
    """A sender's side and the receiving peer it writes to."""
    conn = _Conn()
    sender, peer = bridge._Twin(conn=conn), bridge._Twin(conn=conn)
    sender.peer, peer.peer = peer, sender
    peer.remoteWindowLeft = 10
    peer.remoteMaxPacket = 4
    return sender, peer, conn


class FlowControlTests(SynchronousTestCase):
    """A full far side holds back the near side's window; order is kept."""

    def test_full_peer_withholds_window(self) -> None:
        sender, peer, conn = _pair()
        sender.localWindowLeft -= 25  # the sender's client sent 25 bytes
        peer.write(b"x" * 25)
        self.assertEqual(sum(len(s[1]) for s in conn.sent if s[0] == "data"), 10)
        self.assertEqual(peer.buf, b"x" * 15)
        self.assertEqual(sender.withheld, {"peer"})
        sender.grant("gate")  # another reason ending does not lift "peer"
        self.assertEqual(conn.granted, [])

    def test_drained_peer_grants(self) -> None:
        sender, peer, conn = _pair()
        sender.localWindowLeft -= 25
        peer.write(b"x" * 25)
        peer.addWindowBytes(100)
        self.assertEqual(peer.buf, b"")
        self.assertEqual(sender.withheld, set())
        self.assertEqual(conn.granted, [25])
        self.assertEqual(sender.localWindowLeft, sender.localWindowSize)

    def test_control_waits_behind_data(self) -> None:
        """A request, EOF and close go out after the data buffered before them."""
        _sender, peer, conn = _pair()
        peer.write(b"y" * 12)
        peer.send_request(b"exit-status", struct.pack(">L", 0))
        peer.send_eof()
        peer.close()
        self.assertNotIn(("eof",), conn.sent)
        peer.addWindowBytes(10)
        kinds = [s[0] for s in conn.sent]
        self.assertEqual(kinds[-3:], ["request", "eof", "close"])
        self.assertEqual(b"".join(s[1] for s in conn.sent if s[0] == "data"), b"y" * 12)

    def test_gate_and_peer_reasons(self) -> None:
        sender, _peer, conn = _pair()
        sender.localWindowLeft -= 5
        sender.withhold("gate")
        sender.grant("peer")
        self.assertEqual(conn.granted, [])
        sender.grant("gate")
        self.assertEqual(conn.granted, [5])


class RequestFieldTests(SynchronousTestCase):
    """What a channel request's event says."""

    def test_pty_req(self) -> None:
        data = (
            common.NS(b"xterm-256color")
            + struct.pack(">4L", 100, 30, 800, 600)
            + common.NS(b"")
        )
        fields = bridge._describe(b"pty-req", data)
        self.assertEqual(
            fields,
            {
                "request": "pty-req",
                "term": "xterm-256color",
                "cols": 100,
                "rows": 30,
                "width_px": 800,
                "height_px": 600,
            },
        )

    def test_window_change_env_signal(self) -> None:
        fields = bridge._describe(b"window-change", struct.pack(">4L", 120, 40, 0, 0))
        self.assertEqual((fields["cols"], fields["rows"]), (120, 40))
        fields = bridge._describe(b"env", common.NS(b"LANG") + common.NS(b"C.UTF-8"))
        self.assertEqual((fields["name"], fields["value"]), ("LANG", "C.UTF-8"))
        self.assertEqual(
            bridge._describe(b"signal", common.NS(b"INT"))["signal"], "INT"
        )

    def test_malformed(self) -> None:
        for name in (b"pty-req", b"env", b"exec", b"subsystem", b"window-change"):
            with self.subTest(name=name):
                self.assertIn("malformed", bridge._describe(name, b"\x00\x00"))

    def test_env_allow_list(self) -> None:
        for name in ("LANG", "TERM", "LC_ALL", "LC_CTYPE"):
            self.assertTrue(bridge.env_allowed(name), name)
        for name in ("LD_PRELOAD", "PATH", "BASH_ENV", "lang", "LCX"):
            self.assertFalse(bridge.env_allowed(name), name)

    def test_record_channels(self) -> None:
        """Channel n is recorded on n + 1, never on 0 or with the stderr bit."""
        seen = {bridge.record_channel(n) for n in range(0, 3 * bridge.STDERR_BIT)}
        self.assertNotIn(0, seen)
        self.assertTrue(all(0 < c < bridge.STDERR_BIT for c in seen))
        self.assertEqual(bridge.record_channel(0), 1)


class _Transport:
    def __init__(self) -> None:
        self.packets: list[tuple[int, bytes]] = []

    def sendPacket(self, kind: int, payload: bytes) -> None:
        self.packets.append((kind, payload))


class BridgedConnectionTests(SynchronousTestCase):
    """Both connections of a bridge give no window while a channel withholds it."""

    def test_withheld_window_not_sent(self) -> None:
        from twisted.conch.ssh.connection import MSG_CHANNEL_WINDOW_ADJUST

        from gatehouse.protocols.ssh.upstream import BridgedConnection

        conn = BridgedConnection()
        conn.transport = _Transport()  # type: ignore[assignment]
        channel = bridge._Twin(conn=conn)
        conn.channelsToRemoteChannel[channel] = 5
        channel.localWindowLeft = 0
        channel.withhold("peer")
        conn.adjustWindow(channel, 100)
        self.assertEqual(conn.transport.packets, [])  # type: ignore[union-attr]
        channel.grant("peer")
        self.assertEqual(
            conn.transport.packets,  # type: ignore[union-attr]
            [
                (
                    MSG_CHANNEL_WINDOW_ADJUST,
                    struct.pack(">2L", 5, channel.localWindowSize),
                )
            ],
        )
