"""The federation envelopes' test vectors, ``docs/federation-vectors.json``.

Deterministic (a fixed cluster key, relay names, epochs and seqs), so the file is this
module's output byte for byte::

    python -m mcrelay.protocol.federation.vectors > docs/federation-vectors.json

Each envelope vector has its header's fields, its body's fields (as :func:`fields`
writes them), the body's plaintext and the sealed envelope, in hex; the subkey
vectors show the derivation; the refused ones, envelopes an opener must drop and why.
"""

import json
import sys
from typing import Any

from mcrelay.protocol.addresses import format_address
from mcrelay.protocol.errors import DropReason
from mcrelay.protocol.federation.bodies import (
    RELAY_MEMBER,
    Body,
    Kick,
    KickReply,
    KickScope,
    KickStatus,
    LeaveReason,
    MemberRecord,
    Message,
    Presence,
    PresenceEvent,
    Snapshot,
    SnapshotRequest,
    encode_body,
)
from mcrelay.protocol.federation.envelope import (
    ENVELOPE_VERSION,
    Header,
    Kind,
    derive_subkey,
    seal_envelope,
)
from mcrelay.protocol.secure.origins import Origin, OriginKind

CLUSTER_KEY = bytes(range(32))
OTHER_KEY = bytes(range(32, 64))
RELAY = "site-a_relay-1"
EPOCH = 1_767_225_600_000_000_000
"""2026-01-01T00:00:00Z in ns: a relay's start time."""
OTHER_RELAY = "lab-2"
OTHER_EPOCH = 1_767_225_601_500_000_000

LEGACY = MemberRecord(
    Origin(OriginKind.LEGACY_CLIENT, bytes(range(0xA0, 0xC0)), ("192.0.2.7", 40001)),
    "192.0.2.7:40001",
    1_767_225_700.25,
)
SECURE = MemberRecord(
    Origin(OriginKind.SECURE_CLIENT, bytes(range(0x40, 0x60)), ("2001:db8::7", 5353)),
    "k:QEFCQ0RFRkdISUpLTE1OT1BRUlNUVVZXWFlaW1xdXl8",
    1_767_225_800.5,
)


def examples() -> list[tuple[str, Header, Body]]:
    """The envelopes of the file: each kind at least once, named."""

    def header(kind: Kind, seq: int, relay: str = RELAY, epoch: int = EPOCH) -> Header:
        return Header(ENVELOPE_VERSION, kind, relay, epoch, seq)

    kick = header(Kind.KICK, 3, OTHER_RELAY, OTHER_EPOCH)
    return [
        ("MSG from a legacy member", header(Kind.MSG, 42), Message(LEGACY, b"hello, lab")),
        ("MSG from the relay itself", header(Kind.MSG, 43), Message(RELAY_MEMBER, b"")),
        (
            "PRESENCE joined",
            header(Kind.PRESENCE, 7),
            Presence(PresenceEvent.JOINED, LeaveReason.NONE, SECURE),
        ),
        (
            "PRESENCE left (timeout)",
            header(Kind.PRESENCE, 8),
            Presence(PresenceEvent.LEFT, LeaveReason.TIMEOUT, LEGACY),
        ),
        (
            "SNAPSHOT of two members",
            header(Kind.SNAPSHOT, 120),
            Snapshot(8, 0, 1, (LEGACY, SECURE), msg_seq=41, kick_seq=2),
        ),
        (
            "SNAPSHOT answering a request",
            header(Kind.SNAPSHOT, 121),
            Snapshot(8, 0, 1, (SECURE,), bytes(range(16)), 41, 2),
        ),
        (
            "SNAPSHOT_REQUEST to every relay",
            header(Kind.SNAPSHOT_REQUEST, 1),
            SnapshotRequest(bytes(range(16))),
        ),
        (
            "SNAPSHOT_REQUEST to one relay",
            header(Kind.SNAPSHOT_REQUEST, 2),
            SnapshotRequest(bytes(range(16, 32)), OTHER_RELAY),
        ),
        ("KICK", kick, Kick(RELAY, LEGACY.member_id, None, KickScope.DEFAULT)),
        (
            "KICK with a host ban",
            header(Kind.KICK, 4, OTHER_RELAY, OTHER_EPOCH),
            Kick(RELAY, LEGACY.member_id, 600.0, KickScope.HOST),
        ),
        (
            "KICK_REPLY to the KICK",
            header(Kind.KICK_REPLY, 2),
            KickReply(kick.epoch, kick.seq, KickStatus.REMOVED, (LEGACY.member_id,), "kicked"),
        ),
    ]


def member_fields(member: MemberRecord) -> dict[str, Any]:
    address = member.origin.address
    return {
        "kind": int(member.origin.kind),
        "key_id_hex": member.origin.id.hex(),
        "address": None if address is None else format_address(address),
        "member_id": member.member_id,
        "connected_at": member.connected_at,
    }


def fields(body: Body) -> dict[str, Any]:
    """A body's fields as JSON values (bytes in hex, enums as their numbers)."""
    if isinstance(body, Message):
        return {"origin": member_fields(body.origin), "body_hex": body.body.hex()}
    if isinstance(body, Presence):
        return {
            "event": int(body.event),
            "reason": int(body.reason),
            "member": member_fields(body.member),
        }
    if isinstance(body, Snapshot):
        return {
            "version": body.version,
            "part": body.part,
            "parts": body.parts,
            "members": [member_fields(member) for member in body.members],
            "nonce_hex": body.nonce.hex(),
            "msg_seq": body.msg_seq,
            "kick_seq": body.kick_seq,
        }
    if isinstance(body, SnapshotRequest):
        return {"nonce_hex": body.nonce.hex(), "target": body.target}
    if isinstance(body, Kick):
        return {
            "target": body.target,
            "member_id": body.member_id,
            "ban_s": body.ban_s,
            "scope": int(body.scope),
        }
    return {
        "request_epoch": body.request_epoch,
        "request_seq": body.request_seq,
        "status": int(body.status),
        "removed": list(body.removed),
        "message": body.message,
    }


def header_fields(header: Header) -> dict[str, Any]:
    return {
        "version": header.version,
        "kind": int(header.kind),
        "relay": header.relay,
        "epoch": header.epoch,
        "seq": header.seq,
    }


def vectors() -> dict[str, Any]:
    envelopes: list[dict[str, Any]] = []
    for name, header, body in examples():
        plaintext = encode_body(body)
        envelopes.append(
            {
                "name": name,
                "header": header_fields(header),
                "body": fields(body),
                "body_hex": plaintext.hex(),
                "envelope_hex": seal_envelope(CLUSTER_KEY, header, plaintext).hex(),
            }
        )
    subkeys = [
        {
            "kind": int(kind),
            "relay": relay,
            "epoch": epoch,
            "subkey_hex": derive_subkey(CLUSTER_KEY, kind, relay, epoch).hex(),
        }
        for kind, relay, epoch in [
            (Kind.MSG, RELAY, EPOCH),
            (Kind.PRESENCE, RELAY, EPOCH),
            (Kind.MSG, RELAY, EPOCH + 1),
            (Kind.KICK, OTHER_RELAY, OTHER_EPOCH),
        ]
    ]
    return {
        "description": (
            "mcrelay federation envelopes, version 1 (docs/federation.md, Envelopes). "
            "Made by: python -m mcrelay.protocol.federation.vectors"
        ),
        "cluster_key_hex": CLUSTER_KEY.hex(),
        "subkeys": subkeys,
        "envelopes": envelopes,
        "refused": refused(bytes.fromhex(envelopes[0]["envelope_hex"])),
    }


def refused(valid: bytes) -> list[dict[str, str]]:
    """Envelopes made from a valid one (``valid``), which an opener drops, with the reason."""
    header = examples()[0][1]
    flipped = bytearray(valid)
    flipped[-1] ^= 0x01
    cases = [
        ("another cluster's key", seal_envelope(OTHER_KEY, header, b"x"), DropReason.ENVELOPE_AUTH),
        ("the tag's last bit flipped", bytes(flipped), DropReason.ENVELOPE_AUTH),
        ("version 1", b"\x01" + valid[1:], DropReason.ENVELOPE_VERSION),
        ("cut inside the tag", valid[: len(header.encode()) + 15], DropReason.BAD_ENVELOPE),
        ("unknown kind 7", valid[:1] + b"\x07" + valid[2:], DropReason.BAD_ENVELOPE),
        ("an empty relay name", valid[:2] + b"\x00" + valid[3:], DropReason.BAD_ENVELOPE),
    ]
    return [
        {"name": name, "envelope_hex": data.hex(), "reason": reason.value}
        for name, data, reason in cases
    ]


def render() -> str:
    return json.dumps(vectors(), indent=2) + "\n"


if __name__ == "__main__":
    sys.stdout.write(render())
