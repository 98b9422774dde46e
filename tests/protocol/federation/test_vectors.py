"""docs/federation-vectors.json: each vector decoded to its fields and encoded back to its
bytes, the subkeys derived as the page says, and the file as the script makes it."""

import hashlib
import json
import math
import struct
from pathlib import Path
from typing import Any

import pytest

from mcrelay.protocol.addresses import parse_address
from mcrelay.protocol.errors import RemoteProtocolError
from mcrelay.protocol.federation import vectors
from mcrelay.protocol.federation.bodies import (
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
    decode_body_untrusted,
    encode_body,
)
from mcrelay.protocol.federation.envelope import Header, Kind, Opener, seal_envelope
from mcrelay.protocol.secure.origins import Origin, OriginKind

PATH = Path(__file__).resolve().parents[3] / "docs" / "federation-vectors.json"
VECTORS: dict[str, Any] = json.loads(PATH.read_text(encoding="utf-8"))
KEY = bytes.fromhex(VECTORS["cluster_key_hex"])


def member(fields: dict[str, Any]) -> MemberRecord:
    address = None if fields["address"] is None else parse_address(fields["address"])
    origin = Origin(OriginKind(fields["kind"]), bytes.fromhex(fields["key_id_hex"]), address)
    return MemberRecord(origin, fields["member_id"], fields["connected_at"])


def body(kind: Kind, fields: dict[str, Any]) -> Body:
    """The body a vector's fields describe (read here, apart from the script's writer)."""
    if kind is Kind.MSG:
        return Message(member(fields["origin"]), bytes.fromhex(fields["body_hex"]))
    if kind is Kind.PRESENCE:
        return Presence(
            PresenceEvent(fields["event"]), LeaveReason(fields["reason"]), member(fields["member"])
        )
    if kind is Kind.SNAPSHOT:
        records = tuple(member(m) for m in fields["members"])
        return Snapshot(
            fields["version"],
            fields["part"],
            fields["parts"],
            records,
            bytes.fromhex(fields["nonce_hex"]),
            fields["msg_seq"],
            fields["kick_seq"],
        )
    if kind is Kind.SNAPSHOT_REQUEST:
        return SnapshotRequest(bytes.fromhex(fields["nonce_hex"]), fields["target"])
    if kind is Kind.KICK:
        scope = KickScope(fields["scope"])
        return Kick(fields["target"], fields["member_id"], fields["ban_s"], scope)
    return KickReply(
        fields["request_epoch"],
        fields["request_seq"],
        KickStatus(fields["status"]),
        tuple(fields["removed"]),
        fields["message"],
    )


def header_of(fields: dict[str, Any]) -> Header:
    return Header(**{**fields, "kind": Kind(fields["kind"])})


def envelope_params() -> list[Any]:
    return [pytest.param(v, id=v["name"]) for v in VECTORS["envelopes"]]


def test_the_file_is_what_the_script_makes() -> None:
    assert PATH.read_text(encoding="utf-8") == vectors.render(), (
        "run: python -m mcrelay.protocol.federation.vectors > docs/federation-vectors.json"
    )


def test_every_kind_has_a_vector() -> None:
    assert {v["header"]["kind"] for v in VECTORS["envelopes"]} == set(Kind)


@pytest.mark.parametrize("vector", VECTORS["subkeys"], ids=lambda v: f"{v['kind']}-{v['relay']}")
def test_subkeys_are_keyed_blake2s_of_the_context(vector: dict[str, Any]) -> None:
    name = vector["relay"].encode("ascii")
    data = (
        b"mcrelay federation v1"
        + bytes([vector["kind"], len(name)])
        + name
        + struct.pack("<Q", vector["epoch"])
    )
    assert hashlib.blake2s(data, key=KEY).hexdigest() == vector["subkey_hex"]


@pytest.mark.parametrize("vector", envelope_params())
def test_an_envelope_decodes_to_its_fields(vector: dict[str, Any]) -> None:
    header, plaintext = Opener(KEY).open_untrusted(bytes.fromhex(vector["envelope_hex"]))
    assert header == header_of(vector["header"])
    assert plaintext.hex() == vector["body_hex"]
    decoded = decode_body_untrusted(header.kind, plaintext)
    assert decoded == body(header.kind, vector["body"])
    assert vectors.fields(decoded) == vector["body"]


@pytest.mark.parametrize("vector", envelope_params())
def test_fields_encode_to_the_envelope(vector: dict[str, Any]) -> None:
    header = header_of(vector["header"])
    plaintext = encode_body(body(header.kind, vector["body"]))
    assert plaintext.hex() == vector["body_hex"]
    assert seal_envelope(KEY, header, plaintext).hex() == vector["envelope_hex"]
    envelope = bytes.fromhex(vector["envelope_hex"])
    assert envelope[: len(header.encode())] == header.encode()
    assert len(envelope) == len(header.encode()) + len(plaintext) + 16


def test_a_kick_without_a_ban_is_nan_on_the_wire() -> None:
    (kick,) = [v for v in VECTORS["envelopes"] if v["name"] == "KICK"]
    ban_s, scope = struct.unpack("<dB", bytes.fromhex(kick["body_hex"])[-9:])
    assert math.isnan(ban_s)
    assert scope == 0


@pytest.mark.parametrize("vector", VECTORS["refused"], ids=lambda v: v["name"])
def test_a_refused_envelope_is_dropped_for_its_reason(vector: dict[str, Any]) -> None:
    with pytest.raises(RemoteProtocolError) as raised:
        Opener(KEY).open_untrusted(bytes.fromhex(vector["envelope_hex"]))
    assert raised.value.reason.value == vector["reason"]
