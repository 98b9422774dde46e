"""Envelope bodies: round trips, every bound, and any bytes raising only bad_envelope."""

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mcrelay.protocol.errors import DropReason, LocalProtocolError, RemoteProtocolError
from mcrelay.protocol.federation.bodies import (
    MAX_FEDERATED_MESSAGE_BYTES,
    MAX_SNAPSHOT_MEMBERS,
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
    decode_body_untrusted,
    encode_body,
    encode_member,
    split_snapshot,
)
from mcrelay.protocol.federation.envelope import MAX_ENVELOPE_BYTES, Kind, Opener, Sealer
from mcrelay.protocol.secure.origins import RELAY_ORIGIN, Origin, OriginKind

from .strategies import bodies

LEGACY = Origin(OriginKind.LEGACY_CLIENT, bytes(32), ("192.0.2.1", 4000))
MEMBER = MemberRecord(LEGACY, "192.0.2.1:4000", 1.5)


def refused(kind: Kind, data: bytes) -> None:
    with pytest.raises(RemoteProtocolError) as raised:
        decode_body_untrusted(kind, data)
    assert raised.value.reason is DropReason.BAD_ENVELOPE


@given(bodies)
def test_bodies_round_trip(body: Body) -> None:
    assert decode_body_untrusted(body.KIND, encode_body(body)) == body


@given(bodies, st.data())
def test_a_cut_body_or_a_byte_more_is_refused(body: Body, data: st.DataObject) -> None:
    encoded = encode_body(body)
    if isinstance(body, Message):  # its text is the rest: a byte more is a byte more of it
        assert decode_body_untrusted(Kind.MSG, encoded + b"!") == Message(
            body.origin, body.body + b"!"
        )
        encoded = encoded[: len(encoded) - len(body.body)]
    else:
        refused(body.KIND, encoded + b"\0")
    if encoded:
        refused(body.KIND, encoded[: data.draw(st.integers(0, len(encoded) - 1))])


@given(st.sampled_from(Kind), st.binary(max_size=300))
def test_any_bytes_decode_or_raise_bad_envelope(kind: Kind, data: bytes) -> None:
    try:
        body = decode_body_untrusted(kind, data)
    except RemoteProtocolError as exc:
        reason = exc.reason
    else:
        assert decode_body_untrusted(kind, encode_body(body)) == body
        return
    assert reason is DropReason.BAD_ENVELOPE


@pytest.mark.parametrize(
    "make",
    [
        lambda: MemberRecord(LEGACY, "", 0.0),
        lambda: MemberRecord(LEGACY, "x" * 256, 0.0),
        lambda: MemberRecord(LEGACY, "\ud800", 0.0),
        lambda: MemberRecord(LEGACY, "a", float("nan")),
        lambda: MemberRecord(LEGACY, "a", -1.0),
        lambda: MemberRecord(RELAY_ORIGIN, "relay", 5.0),
        lambda: MemberRecord(RELAY_ORIGIN, "other", 0.0),
        lambda: Message(MEMBER, bytes(MAX_FEDERATED_MESSAGE_BYTES + 1)),
        lambda: Presence(PresenceEvent.LEFT, LeaveReason.NONE, MEMBER),
        lambda: Presence(PresenceEvent.JOINED, LeaveReason.KICK, MEMBER),
        lambda: Snapshot(0, 1, 1, ()),
        lambda: Snapshot(0, 0, 0, ()),
        lambda: Snapshot(-1, 0, 1, ()),
        lambda: Snapshot(0, 0, 1, (MEMBER,) * (MAX_SNAPSHOT_MEMBERS + 1)),
        lambda: Kick("no such", "a", None, KickScope.DEFAULT),
        lambda: Kick("r", "a", 0.0, KickScope.HOST),
        lambda: Kick("r", "a", float("inf"), KickScope.HOST),
        lambda: Kick("r", "a", -5.0, KickScope.HOST),
        # Over a year (the API's bound): 1e300 s made /v1/bans answer 500 (found by review).
        lambda: Kick("r", "a", 365 * 24 * 3600.0 + 1, KickScope.HOST),
        lambda: Kick("r", "a", 1e300, KickScope.HOST),
        lambda: KickReply(0, 1, KickStatus.REMOVED, (), ""),
        lambda: KickReply(1, 1, KickStatus.REMOVED, ("",), ""),
        lambda: KickReply(1, 1, KickStatus.REFUSED, (), "x" * 65536),
    ],
)
def test_bodies_validate_on_construction(make: object) -> None:
    with pytest.raises(LocalProtocolError):
        make()  # type: ignore[operator]


def test_the_largest_message_fits_and_one_more_byte_does_not() -> None:
    largest = encode_member(MEMBER) + bytes(MAX_FEDERATED_MESSAGE_BYTES)
    assert decode_body_untrusted(Kind.MSG, largest) == Message(
        MEMBER, bytes(MAX_FEDERATED_MESSAGE_BYTES)
    )
    refused(Kind.MSG, largest + b"\0")


def test_wire_values_out_of_bounds_are_refused() -> None:
    member = encode_member(MEMBER)
    refused(Kind.PRESENCE, b"\x02\x00" + member)  # left without a reason
    refused(Kind.PRESENCE, b"\x04\x00" + member)  # unknown event
    refused(Kind.PRESENCE, b"\x02\x07" + member)  # unknown reason
    refused(Kind.SNAPSHOT, struct.pack("<QHHH", 0, 1, 1, 0))  # part 1 of 1
    refused(Kind.SNAPSHOT, struct.pack("<QHHH", 0, 0, 1, 1001) + member * 1001)
    kick = encode_body(Kick("r", "a", None, KickScope.DEFAULT))
    refused(Kind.KICK, kick[:-1] + b"\x04")  # unknown scope
    refused(Kind.KICK, kick[:-9] + struct.pack("<dB", float("inf"), 0))
    refused(Kind.KICK, b"\x01*" + kick[2:])  # a bad relay name
    refused(Kind.KICK, kick[:2] + b"\x00" + kick[4:])  # an empty member id
    reply = encode_body(KickReply(1, 2, KickStatus.NOT_FOUND, (), "no"))
    refused(Kind.KICK_REPLY, reply[:16] + b"\x03" + reply[17:])  # unknown status
    refused(Kind.KICK_REPLY, reply[:-2] + b"\xff\xfe")  # not UTF-8
    refused(Kind.SNAPSHOT_REQUEST, b"\0")
    no_id = member[: 1 + 32 + 1 + 6] + b"\x00" + member[-8:]
    refused(Kind.MSG, no_id)
    with_address = b"\x00" + bytes(32) + b"\x06" + bytes(6) + b"\x05relay" + bytes(8)
    refused(Kind.MSG, with_address)
    far_future = member[:-8] + struct.pack("<d", 1e12)  # ms sent as seconds, say
    refused(Kind.MSG, far_future)
    refused(Kind.PRESENCE, b"\x01\x00" + encode_member(RELAY_MEMBER))  # the relay joined?
    refused(Kind.SNAPSHOT, struct.pack("<QHHH", 0, 0, 1, 1) + encode_member(RELAY_MEMBER))


def test_a_ban_of_nan_is_no_ban() -> None:
    kick = Kick("r", "a", None, KickScope.KEY)
    assert encode_body(kick)[-9:-1] == struct.pack("<d", float("nan"))
    other_nan = encode_body(kick)[:-9] + bytes.fromhex("01000000 0000f0ff") + b"\x03"
    assert decode_body_untrusted(Kind.KICK, other_nan) == kick


def test_the_relay_itself_is_a_member_record() -> None:
    encoded = encode_member(RELAY_MEMBER)
    assert encoded == b"\x00" + bytes(32) + b"\x00" + b"\x05relay" + bytes(8)
    assert decode_body_untrusted(Kind.MSG, encoded + b"hi") == Message(RELAY_MEMBER, b"hi")


@pytest.mark.parametrize(
    ("count", "sizes"), [(0, [0]), (1000, [1000]), (1001, [1000, 1]), (2500, [1000, 1000, 500])]
)
def test_snapshots_split_into_parts_of_at_most_1000(count: int, sizes: list[int]) -> None:
    members = [MemberRecord(LEGACY, f"m{n}", 1.0) for n in range(count)]
    parts = split_snapshot(9, members)
    assert [len(p.members) for p in parts] == sizes
    assert [(p.version, p.part, p.parts) for p in parts] == [
        (9, n, len(sizes)) for n in range(len(sizes))
    ]
    assert [m for p in parts for m in p.members] == members


def test_the_largest_snapshot_part_fits_in_an_envelope() -> None:
    widest = MemberRecord(
        Origin(OriginKind.SECURE_CLIENT, bytes(32), ("2001:db8::1", 1)), "é" * 127 + "x", 1.0
    )
    (part,) = split_snapshot(1, [widest] * MAX_SNAPSHOT_MEMBERS)
    plaintext = encode_body(part)
    envelope = Sealer(bytes(32), "r" * 64, 1).seal(Kind.SNAPSHOT, plaintext)
    assert len(envelope) <= MAX_ENVELOPE_BYTES
    _, opened = Opener(bytes(32)).open_untrusted(envelope)
    assert decode_body_untrusted(Kind.SNAPSHOT, opened) == part
