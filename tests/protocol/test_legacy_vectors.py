"""The legacy profile's test vectors (``tests/data/legacy-vectors.json``), decoded and re-encoded.

RSA-OAEP is randomized: ciphertexts are checked by decrypting them, and our own
encoders by structure and decryption; everything else must match byte for byte.
"""

import itertools
import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from mcrelay.protocol import legacy
from mcrelay.protocol.addresses import (
    RELAY_ITSELF,
    Address,
    decode_address_untrusted,
    encode_address,
    parse_address,
)
from mcrelay.protocol.errors import DropReason, RemoteProtocolError
from mcrelay.protocol.legacy import crypto
from mcrelay.protocol.legacy.events import (
    ClientBound,
    ClientKey,
    DisconnectRequest,
    FragmentReceived,
    Ignored,
    Keepalive,
    KeyRequest,
    PeerJoined,
    PeerLeft,
    RelayBound,
    RelayedMessage,
)
from mcrelay.protocol.legacy.fragments import Fragment
from mcrelay.protocol.legacy.tlv import TlvType, decode_tlvs_untrusted, encode_tlv
from mcrelay.protocol.reassembly import Complete, Reassembler, Rejected
from support import ANY_COUNT

VECTORS: dict[str, Any] = json.loads(
    (Path(__file__).resolve().parents[1] / "data" / "legacy-vectors.json").read_text("utf-8")
)
TLV_VECTORS: list[dict[str, str]] = VECTORS["tlv"]
MALFORMED_VECTORS: list[dict[str, str]] = VECTORS["malformed_datagrams"]
MESSAGE: dict[str, Any] = VECTORS["message"]

CLIENT_BOUND = {TlvType.SERVER_PUBLIC_KEY, TlvType.RELAYED_MESSAGE, TlvType.SENDER_INFO}
CLIENT_BOUND |= {TlvType.CLIENT_CONNECTED, TlvType.CLIENT_DISCONNECTED}
RELAY_BOUND = {TlvType.FRAGMENT, TlvType.CLIENT_PUBLIC_KEY, TlvType.SERVER_KEY_REQUEST}
RELAY_BOUND |= {TlvType.DISCONNECT, TlvType.KEEPALIVE}


def named(vector: dict[str, str]) -> tuple[TlvType, Address | None]:
    """``"CLIENT_CONNECTED 127.0.0.1:40001"`` -> the type, and the address if the name has one."""
    type_name, _, argument = vector["name"].partition(" ")
    if not argument:
        return TlvType[type_name], None
    return TlvType[type_name], RELAY_ITSELF if argument == "relay itself" else parse_address(
        argument
    )


def tlv_params() -> list[Any]:
    return [pytest.param(v, id=v["name"]) for v in TLV_VECTORS]


def test_the_vector_file_has_every_section() -> None:
    assert {named(v)[0] for v in TLV_VECTORS} == {4, 7, 8, 9, 10, 11, 12}
    assert len(MALFORMED_VECTORS) >= 4
    assert len(MESSAGE["fragment_datagrams_hex"]) == 3


def test_vector_keys_are_2048_bit_rsa(
    relay_key: rsa.RSAPrivateKey, client_key: rsa.RSAPrivateKey
) -> None:
    for key in (relay_key, client_key):
        assert key.key_size == 2048
        assert key.public_key().public_numbers().e == 65537


# --- single TLVs ------------------------------------------------------------------------


@pytest.mark.parametrize("vector", tlv_params())
def test_tlv_vector_decodes(vector: dict[str, str], client_key: rsa.RSAPrivateKey) -> None:
    data = bytes.fromhex(vector["hex"])
    type_, address = named(vector)
    (tlv,) = decode_tlvs_untrusted(data, ANY_COUNT)
    assert tlv.type == type_
    relay_side: list[RelayBound] = legacy.decode_client_datagram_untrusted(data)
    client_side: list[ClientBound] = legacy.decode_relay_datagram_untrusted(data)
    if type_ in RELAY_BOUND:
        assert client_side == [Ignored(type_)]
    else:
        assert relay_side == [Ignored(type_)]
    match type_:
        case TlvType.SERVER_KEY_REQUEST:
            assert relay_side == [KeyRequest()]
        case TlvType.DISCONNECT:
            assert relay_side == [DisconnectRequest()]
        case TlvType.KEEPALIVE:
            assert relay_side == [Keepalive()]
        case TlvType.CLIENT_PUBLIC_KEY:
            assert relay_side == [ClientKey(tlv.value)]
            peer = crypto.wire_public_key_untrusted(tlv.value)
            assert crypto.same_key(peer, client_key.public_key())
        case TlvType.CLIENT_CONNECTED:
            assert address is not None
            assert client_side == [PeerJoined(address)]
        case TlvType.CLIENT_DISCONNECTED:
            assert address is not None
            assert client_side == [PeerLeft(address)]
        case TlvType.SENDER_INFO:
            assert address is not None
            assert decode_address_untrusted(tlv.value) == address
            assert client_side == []  # a sender alone is no event...
            with_message = data + encode_tlv(TlvType.RELAYED_MESSAGE, b"ct")
            assert legacy.decode_relay_datagram_untrusted(with_message) == [
                RelayedMessage(address, b"ct")  # ...it names the sender of what follows.
            ]
        case _:
            pytest.fail(f"no expectation for vector {vector['name']!r}")


@pytest.mark.parametrize("vector", tlv_params())
def test_tlv_vector_encodes(vector: dict[str, str], client_key: rsa.RSAPrivateKey) -> None:
    data = bytes.fromhex(vector["hex"])
    type_, address = named(vector)
    if address is not None:
        assert encode_address(address) == data[4:]
    match type_:
        case TlvType.SERVER_KEY_REQUEST:
            assert legacy.key_request() == data
        case TlvType.DISCONNECT:
            assert legacy.disconnect() == data
        case TlvType.KEEPALIVE:
            assert legacy.keepalive() == data
        case TlvType.CLIENT_PUBLIC_KEY:
            assert legacy.client_key(client_key.public_key()) == data
        case TlvType.CLIENT_CONNECTED:
            assert address is not None
            assert legacy.peer_joined(address) == data
        case TlvType.CLIENT_DISCONNECTED:
            assert address is not None
            assert legacy.peer_left(address) == data
        case TlvType.SENDER_INFO:
            assert address is not None
            # Our SENDER_INFO is the start of every relayed datagram.
            relayed = legacy.relayed_message(client_key.public_key(), address, b"")
            assert relayed[: len(data)] == data
        case _:
            pytest.fail(f"no expectation for vector {vector['name']!r}")


# --- malformed datagrams ------------------------------------------------------------


def outcome(decode: Callable[[bytes], Sequence[object]], data: bytes) -> list[object] | DropReason:
    """The events a decoder returns, or the reason it refused the datagram."""
    try:
        return list(decode(data))
    except RemoteProtocolError as exc:
        return exc.reason


@pytest.mark.parametrize("vector", [pytest.param(v, id=v["why"]) for v in MALFORMED_VECTORS])
def test_malformed_vector_is_refused(vector: dict[str, str]) -> None:
    data = bytes.fromhex(vector["hex"])
    relay_side = outcome(legacy.decode_client_datagram_untrusted, data)
    client_side = outcome(legacy.decode_relay_datagram_untrusted, data)
    try:
        tlvs = decode_tlvs_untrusted(data, ANY_COUNT)
    except RemoteProtocolError:
        # Broken framing: malformed whichever side reads it.
        assert (relay_side, client_side) == (DropReason.MALFORMED, DropReason.MALFORMED)
        return
    # Framing is fine, a value is not: malformed for the side the types are meant for,
    # and merely wrong-direction (ignored) for the other side.
    types = {tlv.type for tlv in tlvs}
    ignored = [Ignored(tlv.type) for tlv in tlvs]
    if types <= CLIENT_BOUND:
        assert (relay_side, client_side) == (ignored, DropReason.MALFORMED)
    elif types <= RELAY_BOUND:
        assert (relay_side, client_side) == (DropReason.MALFORMED, ignored)
    else:
        pytest.fail(f"cannot tell which side {vector['why']!r} is malformed for")


def test_bad_client_connected_is_ignored_by_the_relay() -> None:
    (vector,) = [v for v in MALFORMED_VECTORS if "CLIENT_CONNECTED" in v["why"]]
    data = bytes.fromhex(vector["hex"])
    assert legacy.decode_client_datagram_untrusted(data) == [Ignored(11)]
    with pytest.raises(RemoteProtocolError):
        legacy.decode_relay_datagram_untrusted(data)


# --- the message --------------------------------------------------------------------


PLAINTEXT: bytes = MESSAGE["plaintext_utf8"].encode("utf-8")
MSG_ID = bytes.fromhex(MESSAGE["msg_id_hex"])
DATAGRAMS = [bytes.fromhex(h) for h in MESSAGE["fragment_datagrams_hex"]]
SENDER: Address = parse_address(MESSAGE["relayed_sender"])
SOURCE: Address = ("127.0.0.1", 40001)


def fragments_of(datagrams: list[bytes]) -> list[Fragment]:
    fragments = []
    for datagram in datagrams:
        (event,) = legacy.decode_client_datagram_untrusted(datagram)
        assert isinstance(event, FragmentReceived)
        fragments.append(event.fragment)
    return fragments


def reassemble(fragments: list[Fragment]) -> bytes:
    """Feed every fragment; exactly one must complete the message."""
    reassembler = Reassembler(timeout_s=5.0)
    payloads = []
    for i, fragment in enumerate(fragments):
        outcome = reassembler.add(SOURCE, fragment, now=i * 0.01)
        if isinstance(outcome, Complete):
            assert outcome.key == (SOURCE, MSG_ID)
            payloads.append(outcome.payload)
        elif isinstance(outcome, Rejected):
            assert outcome.reason in {DropReason.DUPLICATE_FRAGMENT, DropReason.LATE_FRAGMENT}
    assert len(payloads) == 1
    assert reassembler.in_flight == 0
    assert reassembler.buffered_bytes == 0
    return payloads[0]


def test_message_fragments_parse() -> None:
    fragments = fragments_of(DATAGRAMS)
    assert [(f.msg_id, f.seq, f.total) for f in fragments] == [(MSG_ID, s, 3) for s in range(3)]
    assert [len(f.piece) for f in fragments] == [256, 256, 8]


def test_message_reassembles_and_decrypts(relay_key: rsa.RSAPrivateKey) -> None:
    payload = reassemble(fragments_of(DATAGRAMS))
    assert len(payload) == 2 * (4 + 256)
    assert legacy.decrypt_payload_untrusted(relay_key, payload) == PLAINTEXT


@pytest.mark.parametrize("order", list(itertools.permutations(range(3))))
def test_message_reassembles_out_of_order_with_duplicates(
    order: tuple[int, int, int], relay_key: rsa.RSAPrivateKey
) -> None:
    first, second, third = order
    fragments = fragments_of(DATAGRAMS)
    shuffled = [first, first, second, first, third, second, third, third]
    payload = reassemble([fragments[i] for i in shuffled])
    assert payload == b"".join(f.piece for f in fragments)
    assert legacy.decrypt_payload_untrusted(relay_key, payload) == PLAINTEXT


def test_relayed_datagram_decodes_and_decrypts(client_key: rsa.RSAPrivateKey) -> None:
    data = bytes.fromhex(MESSAGE["relayed_datagram_hex"])
    assert SENDER == ("127.0.0.1", 40001)
    (event,) = legacy.decode_relay_datagram_untrusted(data)
    assert isinstance(event, RelayedMessage)
    assert event.sender == SENDER
    assert crypto.decrypt_concatenated_untrusted(client_key, event.ciphertext) == PLAINTEXT
    assert legacy.relayed_size(client_key.public_key(), SENDER, len(PLAINTEXT)) == len(data)


def test_our_relayed_datagram_has_the_vector_structure(client_key: rsa.RSAPrivateKey) -> None:
    vector = bytes.fromhex(MESSAGE["relayed_datagram_hex"])
    ours = legacy.relayed_message(client_key.public_key(), SENDER, PLAINTEXT)
    assert len(ours) == len(vector)
    assert ours[:14] == vector[:14]  # SENDER_INFO TLV and the RELAYED_MESSAGE header
    (event,) = legacy.decode_relay_datagram_untrusted(ours)
    assert isinstance(event, RelayedMessage)
    assert crypto.decrypt_concatenated_untrusted(client_key, event.ciphertext) == PLAINTEXT


def test_our_message_datagrams_have_the_vector_structure(relay_key: rsa.RSAPrivateKey) -> None:
    ours = legacy.message_datagrams(relay_key.public_key(), PLAINTEXT, MSG_ID)
    assert [len(d) for d in ours] == [len(d) for d in DATAGRAMS]
    # TLV header + msg_id + seq + total are deterministic; only the ciphertext differs.
    assert [d[:12] for d in ours] == [d[:12] for d in DATAGRAMS]
    payload = reassemble(fragments_of(ours))
    assert [(t.type, len(t.value)) for t in decode_tlvs_untrusted(payload, ANY_COUNT)] == [
        (3, 256)
    ] * 2
    assert legacy.decrypt_payload_untrusted(relay_key, payload) == PLAINTEXT
