"""
Known-answer vectors for the recording format, written by hand from
docs/recording-format.md: every structure (header, record, block, seal
statement and seal, link, epoch certificate, delegation, revocation
statement and its file) is spelled out here field by field from the spec's
tables, with fixed keys and inputs, using only byte literals,
C{int.to_bytes}, C{hashlib} (the spec's C{H}) and Ed25519 from
C{cryptography} (deterministic signatures).  Nothing here is
produced by gatehouse's own encoders.  The zstd block is a frame written
by hand from RFC 8878 (one raw block), which the reader and verifier must
accept; the encoder's own zstd output is not pinned (it is a compressor's).

The vectors are then checked both ways: gatehouse's encoder (driven with the
same fixed keys) must produce exactly these bytes, and gatehouse's reader
and verifier must accept a session written from them alone, with exactly
the records put in.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import uuid

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from twisted.trial.unittest import SynchronousTestCase

from gatehouse.recording import encoder as encoder_module
from gatehouse.recording.encoder import (
    RecordChain,
    SessionEncoder,
    complete_seal,
    frame_block,
)
from gatehouse.recording.format import (
    Certificate,
    Delegation,
    Record,
    SealStatement,
    SegmentHeader,
    parse_seal,
)
from gatehouse.recording.keys import (
    EpochKey,
    KeyFileError,
    TrustAnchors,
    load_revocations,
    make_revocation,
)
from gatehouse.recording.reader import read_records
from gatehouse.recording.verify import verify_session


def u8(v: int) -> bytes:
    return v.to_bytes(1, "big")


def u16(v: int) -> bytes:
    return v.to_bytes(2, "big")


def u32(v: int) -> bytes:
    return v.to_bytes(4, "big")


def u64(v: int) -> bytes:
    return v.to_bytes(8, "big")


def str16(s: str) -> bytes:
    raw = s.encode("utf-8")
    return u16(len(raw)) + raw


def H(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def key(seed: int) -> Ed25519PrivateKey:
    return Ed25519PrivateKey.from_private_bytes(bytes([seed]) * 32)


def public(k: Ed25519PrivateKey) -> bytes:
    return k.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


NS = 1_000_000_000
ROOT, EPOCH, SEG0, SEG1 = key(1), key(2), key(3), key(4)
ROOT_PUB, EPOCH_PUB, SEG0_PUB, SEG1_PUB = map(public, (ROOT, EPOCH, SEG0, SEG1))
#: UUIDv7: unix ms 1_700_000_000_000 = 0x018bcfe56800, version 7, variant 10
SESSION_UUID = uuid.UUID("018bcfe5-6800-7000-8000-000000000001")
SESSION_ID = bytes.fromhex("018bcfe5680070008000000000000001")
GATEWAY = "gw-kat"
WALL0 = 1_700_000_000 * NS + 5_000_000
NOT_BEFORE = 1_700_000_000 * NS - 60 * NS
NOT_AFTER = NOT_BEFORE + 15 * 60 * NS
SEAL_INTERVAL = 60 * NS
WALL_SEAL0, MONO_SEAL0 = WALL0 + 2 * NS, 2 * NS
WALL_SEAL1, MONO_SEAL1 = WALL0 + 3 * NS, 3 * NS

# -- epoch certificate and delegation ("Keys and forward security") --------

CERT_SIGNED = (
    b"gatehouse/cert/v1\x00"  # context, 18 bytes
    + H(EPOCH_PUB)[:16]  # key_id
    + EPOCH_PUB  # public_key
    + b"\x00\x06gw-kat"  # gateway_id, str16
    + u64(NOT_BEFORE)
    + u64(NOT_AFTER)
    + H(ROOT_PUB)[:16]  # root_id
)
CERT = CERT_SIGNED + ROOT.sign(CERT_SIGNED)
DELEGATION = (
    u16(len(CERT))
    + CERT
    + SEG0_PUB
    + EPOCH.sign(b"gatehouse/delegate/v1\x00" + SESSION_ID + u64(WALL0) + SEG0_PUB)
)


# -- segment 0 ---------------------------------------------------------------


def header(index: int, first_seq: int, wall: int, mono: int, prev: bytes, d: bytes):
    body = (
        SESSION_ID
        + u32(index)
        + u64(first_seq)
        + u64(wall)
        + u64(mono)
        + u64(SEAL_INTERVAL)
        + prev
        + str16(GATEWAY)
        + u16(len(d))
        + d
    )
    return b"GHSEG\x00\x01\n" + u32(len(body)) + body


def record(rtype: int, direction: int, seq: int, mono: int, payload: bytes) -> bytes:
    # payload_len u32, type u8, direction u8, channel u16, seq u64, mono u64
    return (
        u32(len(payload))
        + u8(rtype)
        + u8(direction)
        + u16(0)
        + u64(seq)
        + u64(mono)
        + payload
    )


META = json.dumps({"identity": "kat", "protocol": "postgres"}).encode()
CLOSE = b'{"reason": "client closed"}'
RECORDS = [
    # (type, direction, seq, mono, payload)
    (1, 0, 0, 0, META),
    (2, 1, 1, 1 * NS, b"Q\x00\x00\x00\x0dSELECT 1\x00"),
    (2, 2, 2, MONO_SEAL0 + 1, b"Z\x00\x00\x00\x05I"),
    (4, 0, 3, MONO_SEAL0 + 2, CLOSE),
]
REC = [record(*r) for r in RECORDS]

HEADER0 = header(0, 0, WALL0, 0, bytes(32), DELEGATION)
C0 = H(b"gatehouse/chain/v1\x00" + HEADER0)  # prev_link is zero already
C2 = H(H(C0 + REC[0]) + REC[1])
BLOCK0_HEAD = (
    b"\x42"  # tag B
    + b"\x00"  # codec: stored
    + u32(2)  # count
    + u32(len(REC[0] + REC[1]))  # raw_len
    + u32(len(REC[0] + REC[1]))  # stored_len
    + C2  # chain after the block's last record
)
BLOCK0 = BLOCK0_HEAD + REC[0] + REC[1]
STATEMENT0 = (
    b"gatehouse/seal/v1\x00"
    + SESSION_ID
    + str16(GATEWAY)
    + u32(0)  # segment_index
    + u8(0)  # final
    + u64(0)  # first_seq
    + u64(2)  # record_count
    + u64(WALL0)
    + u64(0)  # mono_start
    + u64(WALL_SEAL0)
    + u64(MONO_SEAL0)
    + bytes(32)  # prev_link
    + C2  # digest
    + H(BLOCK0_HEAD)  # blocks_digest: a stored block's header only
    + SEG0_PUB  # signer
    + SEG1_PUB  # next_signer
)
SEAL0 = b"\x53" + u32(len(STATEMENT0)) + STATEMENT0 + SEG0.sign(STATEMENT0)
LINK0 = H(b"gatehouse/link/v1\x00" + STATEMENT0)
SEGMENT0 = HEADER0 + BLOCK0 + SEAL0

# -- segment 1: opened at segment 0's seal, carries its link -----------------

HEADER1 = header(1, 2, WALL_SEAL0, MONO_SEAL0, LINK0, b"")
C0_1 = H(
    b"gatehouse/chain/v1\x00" + header(1, 2, WALL_SEAL0, MONO_SEAL0, bytes(32), b"")
)
C4 = H(H(C0_1 + REC[2]) + REC[3])
BLOCK1_HEAD = (
    b"\x42\x00" + u32(2) + u32(len(REC[2] + REC[3])) + u32(len(REC[2] + REC[3])) + C4
)
BLOCK1 = BLOCK1_HEAD + REC[2] + REC[3]


def statement1(blocks_digest: bytes) -> bytes:
    """Segment 1's (final) seal statement."""
    return (
        b"gatehouse/seal/v1\x00"
        + SESSION_ID
        + str16(GATEWAY)
        + u32(1)
        + u8(1)  # final
        + u64(2)
        + u64(2)
        + u64(WALL_SEAL0)
        + u64(MONO_SEAL0)
        + u64(WALL_SEAL1)
        + u64(MONO_SEAL1)
        + LINK0
        + C4
        + blocks_digest
        + SEG1_PUB
        + bytes(32)  # next_signer: zeros when final
    )


STATEMENT1 = statement1(H(BLOCK1_HEAD))
SEAL1 = b"\x53" + u32(len(STATEMENT1)) + STATEMENT1 + SEG1.sign(STATEMENT1)
SEGMENT1 = HEADER1 + BLOCK1 + SEAL1

# -- the same segment 1 with its block as zstd (codec 1) ---------------------
# One zstd frame (RFC 8878) written by hand: magic, a frame header
# descriptor with only Single_Segment set (so a 1-byte content size, no
# dictionary id, no checksum, reserved bits clear), then one last raw
# block: 3 bytes little-endian, Last_Block 1, Block_Type 0 (raw), size.
RAW1 = REC[2] + REC[3]
FRAME1 = (
    b"\x28\xb5\x2f\xfd"
    + b"\x20"
    + u8(len(RAW1))
    + (1 | len(RAW1) << 3).to_bytes(3, "little")
    + RAW1
)
BLOCK1Z_HEAD = b"\x42\x01" + u32(2) + u32(len(RAW1)) + u32(len(FRAME1)) + C4
# a compressed block's data is hashed into blocks_digest too
STATEMENT1Z = statement1(H(BLOCK1Z_HEAD + FRAME1))
SEAL1Z = b"\x53" + u32(len(STATEMENT1Z)) + STATEMENT1Z + SEG1.sign(STATEMENT1Z)
SEGMENT1Z = HEADER1 + BLOCK1Z_HEAD + FRAME1 + SEAL1Z


# -- a revocation statement ("Revocation statements") -----------------------


def revocation(revoked_from: int, key_ids: bytes = b"", count: int = 0) -> bytes:
    """A statement revoking gw-kat from C{revoked_from}, issued at WALL_SEAL1."""
    return (
        b"gatehouse/revoke/v1\x00"  # context, 20 bytes
        + H(ROOT_PUB)[:16]  # root_id
        + b"\x00\x06gw-kat"  # gateway_id, str16
        + u64(revoked_from)
        + u64(WALL_SEAL1)  # issued_at
        + u16(count)  # key_count
        + key_ids
    )


def revocation_file(statement: bytes, signer: Ed25519PrivateKey = ROOT) -> bytes:
    """The on-disk form: only format, statement and signature are read."""
    return json.dumps(
        {
            "format": "gatehouse-revocation-v1",
            "statement": base64.b64encode(statement).decode(),
            "signature": base64.b64encode(signer.sign(statement)).decode(),
        }
    ).encode()


#: from segment 1's seal on, for the epoch key that rooted the session
REVOKE_AT_SEAL1 = revocation(WALL_SEAL1, H(EPOCH_PUB)[:16], 1)


def write_session(root: str, segment1: bytes = SEGMENT1) -> str:
    """The hand-written session under C{root}; its directory."""
    # <recordings>/<YYYY-MM-DD>/<session-id>/seg-NNNNNNNN.ghs (UTC date
    # of the id's time: 2023-11-14T22:13:20Z)
    directory = os.path.join(root, "2023-11-14", str(SESSION_UUID))
    os.makedirs(directory)
    for index, data in enumerate((SEGMENT0, segment1)):
        with open(os.path.join(directory, f"seg-{index:08d}.ghs"), "wb") as f:
            f.write(data)
    return directory


class _FixedKeys:
    """Stands in for Ed25519PrivateKey in the encoder: known segment keys."""

    def __init__(self, *keys: Ed25519PrivateKey):
        self._keys = list(keys)

    def generate(self) -> Ed25519PrivateKey:
        return self._keys.pop(0)


class KnownAnswerTests(SynchronousTestCase):
    """The encoder writes, and the reader and verifier read, these bytes."""

    def test_pinned_literals(self) -> None:
        """A few fields as literal bytes, so the helpers above are pinned too."""
        self.assertEqual(
            REC[1][:24],
            bytes.fromhex("0000000e020100000000000000000001000000003b9aca00"),
        )
        self.assertEqual(HEADER1[:12], b"GHSEG\x00\x01\n" + bytes.fromhex("0000005e"))
        self.assertEqual(len(HEADER1), 12 + 16 + 4 + 8 * 4 + 32 + 2 + 6 + 2)
        self.assertEqual(len(BLOCK0_HEAD), 46)
        self.assertEqual(len(CERT), 18 + 16 + 32 + 8 + 16 + 16 + 64)

    def test_encoder(self) -> None:
        """SessionEncoder, frame_block and complete_seal write these bytes."""
        self.patch(encoder_module, "Ed25519PrivateKey", _FixedKeys(SEG0, SEG1))
        epoch = EpochKey(Certificate.from_bytes(CERT), EPOCH)
        enc = SessionEncoder(SESSION_ID, GATEWAY, epoch, WALL0, SEAL_INTERVAL)
        self.assertEqual(enc.header.to_bytes(), HEADER0)
        self.assertEqual(enc.header.chain_start(), C0)
        for rtype, direction, _, mono, payload in RECORDS[:2]:
            enc.add(rtype, direction, 0, mono, payload)
        block = frame_block(enc.take_block())
        self.assertEqual(block, BLOCK0)
        pending = enc.seal(WALL_SEAL0, MONO_SEAL0)
        sealed = complete_seal(pending, H(BLOCK0_HEAD), bytes(32))
        self.assertEqual(sealed.seal, SEAL0)
        self.assertEqual(sealed.link, LINK0)
        self.assertEqual(sealed.next_header.to_bytes(), HEADER1)
        self.assertEqual(sealed.next_header.chain_start(), C0_1)
        for rtype, direction, _, mono, payload in RECORDS[2:]:
            enc.add(rtype, direction, 0, mono, payload)
        self.assertEqual(frame_block(enc.take_block()), BLOCK1)
        final = complete_seal(
            enc.seal(WALL_SEAL1, MONO_SEAL1, final=True), H(BLOCK1_HEAD), LINK0
        )
        self.assertEqual(final.seal, SEAL1)
        self.assertIsNone(final.next_header)

    def test_encoder_chain_in_writer(self) -> None:
        """
        With the chain left to the writer (C{chain_in_writer}, as the
        recorder runs it), blocks and seals passed through a RecordChain in
        order are the same bytes; without it their chain is zeros.
        """
        self.patch(encoder_module, "Ed25519PrivateKey", _FixedKeys(SEG0, SEG1))
        epoch = EpochKey(Certificate.from_bytes(CERT), EPOCH)
        enc = SessionEncoder(
            SESSION_ID, GATEWAY, epoch, WALL0, SEAL_INTERVAL, chain_in_writer=True
        )
        chain = RecordChain(enc.header)
        for rtype, direction, _, mono, payload in RECORDS[:2]:
            enc.add(rtype, direction, 0, mono, payload)
        pending_block = enc.take_block()
        self.assertEqual(pending_block.chain, bytes(32))
        self.assertEqual(frame_block(chain.block(pending_block)), BLOCK0)
        pending = enc.seal(WALL_SEAL0, MONO_SEAL0)
        self.assertEqual(pending.statement.digest, bytes(32))
        sealed = complete_seal(chain.seal(pending), H(BLOCK0_HEAD), bytes(32))
        self.assertEqual(sealed.seal, SEAL0)
        for rtype, direction, _, mono, payload in RECORDS[2:]:
            enc.add(rtype, direction, 0, mono, payload)
        self.assertEqual(frame_block(chain.block(enc.take_block())), BLOCK1)
        final = complete_seal(
            chain.seal(enc.seal(WALL_SEAL1, MONO_SEAL1, final=True)),
            H(BLOCK1_HEAD),
            LINK0,
        )
        self.assertEqual(final.seal, SEAL1)

    def test_structures(self) -> None:
        """Each structure's own encoder and parser agree with the vectors."""
        cert = Certificate.from_bytes(CERT)
        self.assertEqual(
            (cert.key_id, cert.public_key, cert.gateway_id, cert.not_before),
            (H(EPOCH_PUB)[:16], EPOCH_PUB, GATEWAY, NOT_BEFORE),
        )
        self.assertEqual((cert.not_after, cert.root_id), (NOT_AFTER, H(ROOT_PUB)[:16]))
        self.assertEqual(cert.to_bytes(), CERT)
        delegation = Delegation.from_bytes(DELEGATION)
        self.assertEqual(delegation.session_key, SEG0_PUB)
        self.assertEqual(delegation.to_bytes(), DELEGATION)
        self.assertEqual(
            Delegation.message(SESSION_ID, WALL0, SEG0_PUB),
            b"gatehouse/delegate/v1\x00" + SESSION_ID + u64(WALL0) + SEG0_PUB,
        )
        head, end = SegmentHeader.parse(SEGMENT1)
        self.assertEqual(end, len(HEADER1))
        self.assertEqual(
            head,
            SegmentHeader(
                SESSION_ID, 1, 2, WALL_SEAL0, MONO_SEAL0, SEAL_INTERVAL, LINK0, GATEWAY
            ),
        )
        self.assertEqual(head.to_bytes(), HEADER1)
        self.assertEqual(Record(1, 2, 1, 0, 1 * NS, RECORDS[1][4]).to_bytes(), REC[1])
        statement, signature, end = parse_seal(SEGMENT0, len(HEADER0) + len(BLOCK0))
        self.assertEqual((statement, end), (STATEMENT0, len(SEGMENT0)))
        self.assertEqual(signature, SEAL0[-64:])
        parsed = SealStatement.from_bytes(STATEMENT1)
        self.assertEqual(
            (parsed.segment_index, parsed.final, parsed.first_seq, parsed.record_count),
            (1, True, 2, 2),
        )
        self.assertEqual(
            (parsed.prev_link, parsed.digest, parsed.signer), (LINK0, C4, SEG1_PUB)
        )
        self.assertEqual(parsed.to_bytes(), STATEMENT1)
        self.assertEqual(SealStatement.from_bytes(STATEMENT0).link(), LINK0)

    def write(self, segment1: bytes = SEGMENT1) -> str:
        return write_session(self.mktemp(), segment1)

    def test_reader(self) -> None:
        """read_records returns exactly the records written by hand."""
        got = list(read_records(self.write()))
        self.assertEqual(
            got, [Record(seq, t, d, 0, mono, p) for t, d, seq, mono, p in RECORDS]
        )

    def test_verifier(self) -> None:
        """The hand-written session verifies complete, every record sealed."""
        report = verify_session(
            self.write(),
            TrustAnchors.from_public_keys([ROOT_PUB]),
            expected_session_id=SESSION_UUID,
            expected_gateway=GATEWAY,
            clock=lambda: WALL_SEAL1 + NS,
        )
        self.assertEqual(report.findings, ())
        self.assertEqual(
            (report.segments, report.records, report.sealed_records, report.complete),
            (2, 4, 4, True),
        )
        self.assertEqual(report.close_reason, "client closed")
        self.assertEqual(report.exit_code, 0)

    def test_zstd_block(self) -> None:
        """A zstd block (a hand-written raw-block frame) reads and verifies."""
        directory = self.write(SEGMENT1Z)
        got = list(read_records(directory))
        self.assertEqual(
            got, [Record(seq, t, d, 0, mono, p) for t, d, seq, mono, p in RECORDS]
        )
        report = verify_session(
            directory,
            TrustAnchors.from_public_keys([ROOT_PUB]),
            clock=lambda: WALL_SEAL1 + NS,
        )
        self.assertEqual(report.findings, ())
        self.assertEqual((report.sealed_records, report.complete), (4, True))

    def test_verifier_without_the_root(self) -> None:
        """Control: the same bytes under another root are not trusted."""
        report = verify_session(
            self.write(),
            TrustAnchors.from_public_keys([public(key(9))]),
            clock=lambda: WALL_SEAL1 + NS,
        )
        self.assertEqual(
            [(f.segment, f.problem) for f in report.findings],
            [("seg-00000000.ghs", "bad-key")],
        )
        self.assertEqual(report.exit_code, 1)


class RevocationKnownAnswerTests(SynchronousTestCase):
    """
    Revocation statements written by hand: gatehouse signs these bytes,
    reads these files, and applies them to the hand-written session as the
    spec says (at or after C{revoked_from}; only to the keys listed).
    """

    def apply(
        self, statement: bytes, signer: Ed25519PrivateKey = ROOT
    ) -> list[tuple[str | None, str]]:
        path = self.mktemp()
        with open(path, "wb") as f:
            f.write(revocation_file(statement, signer))
        anchors = TrustAnchors.from_public_keys([ROOT_PUB])
        revocations = load_revocations(anchors, [path])
        report = verify_session(
            write_session(self.mktemp()),
            anchors,
            revocations=revocations,
            clock=lambda: WALL_SEAL1 + NS,
        )
        return [(f.segment, f.problem) for f in report.findings]

    def test_pinned_literals(self) -> None:
        self.assertEqual(
            REVOKE_AT_SEAL1[:20] + REVOKE_AT_SEAL1[36:44],
            b"gatehouse/revoke/v1\x00" + bytes.fromhex("0006") + b"gw-kat",
        )
        self.assertEqual(len(REVOKE_AT_SEAL1), 20 + 16 + 8 + 8 + 8 + 2 + 16)
        self.assertEqual(REVOKE_AT_SEAL1[-18:-16], b"\x00\x01")

    def test_signed(self) -> None:
        """make_revocation signs exactly the hand-written statement."""
        made = make_revocation(
            ROOT, GATEWAY, WALL_SEAL1, WALL_SEAL1, [H(EPOCH_PUB)[:16]]
        )
        self.assertEqual(made.statement(), REVOKE_AT_SEAL1)
        self.assertEqual(made.signature, ROOT.sign(REVOKE_AT_SEAL1))
        written = json.loads(made.to_json())
        self.assertEqual(written["format"], "gatehouse-revocation-v1")
        self.assertEqual(base64.b64decode(written["statement"]), REVOKE_AT_SEAL1)
        self.assertEqual(
            base64.b64decode(written["signature"]), ROOT.sign(REVOKE_AT_SEAL1)
        )

    def test_read(self) -> None:
        """A hand-written file reads as the statement it holds."""
        path = self.mktemp()
        with open(path, "wb") as f:
            f.write(revocation_file(REVOKE_AT_SEAL1))
        [read] = load_revocations(TrustAnchors.from_public_keys([ROOT_PUB]), [path])
        self.assertEqual(
            (read.root_id, read.gateway_id, read.revoked_from, read.issued_at),
            (H(ROOT_PUB)[:16], GATEWAY, WALL_SEAL1, WALL_SEAL1),
        )
        self.assertEqual(read.key_ids, (H(EPOCH_PUB)[:16],))
        self.assertEqual(read.signature, ROOT.sign(REVOKE_AT_SEAL1))

    def test_applied_from_revoked_from(self) -> None:
        """Segment 1, sealed at revoked_from exactly, is bad-key; segment 0 not."""
        self.assertEqual(self.apply(REVOKE_AT_SEAL1), [("seg-00000001.ghs", "bad-key")])

    def test_every_key_of_the_gateway(self) -> None:
        """key_count 0: every key; a window starting at revoked_from is bad-key."""
        self.assertEqual(
            self.apply(revocation(NOT_BEFORE)),
            [("seg-00000000.ghs", "bad-key"), ("seg-00000001.ghs", "bad-key")],
        )

    def test_not_applied(self) -> None:
        """Controls: revoked after the last seal; revoking another key only."""
        self.assertEqual(self.apply(revocation(WALL_SEAL1 + 1)), [])
        other = revocation(NOT_BEFORE, H(SEG0_PUB)[:16], 1)
        self.assertEqual(self.apply(other), [])

    def test_forged(self) -> None:
        """The same statement signed by another key is refused, not ignored."""
        with self.assertRaises(KeyFileError):
            self.apply(REVOKE_AT_SEAL1, signer=key(9))
