"""Noise: every cacophony vector of noise-vectors.json, both ways, and bad input refused."""

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mcrelay.protocol.errors import DropReason, LocalProtocolError, RemoteProtocolError
from mcrelay.protocol.secure.noise import (
    PATTERNS,
    CipherState,
    HandshakeState,
    SymmetricState,
    public_key,
)

from .conftest import NOISE_VECTORS

VECTORS: list[dict[str, Any]] = NOISE_VECTORS["vectors"]
IK = "Noise_IK_25519_ChaChaPoly_BLAKE2s"
LOW_ORDER_POINT = bytes(32)


def pair(vector: dict[str, Any]) -> tuple[HandshakeState, HandshakeState]:
    name = vector["protocol_name"]
    initiator = HandshakeState(
        name,
        initiator=True,
        prologue=bytes.fromhex(vector["init_prologue"]),
        s=bytes.fromhex(vector["init_static"]),
        e=bytes.fromhex(vector["init_ephemeral"]),
        rs=bytes.fromhex(vector["init_remote_static"]),
    )
    responder = HandshakeState(
        name,
        initiator=False,
        prologue=bytes.fromhex(vector["resp_prologue"]),
        s=bytes.fromhex(vector["resp_static"]),
        e=bytes.fromhex(vector["resp_ephemeral"]),
    )
    return initiator, responder


@pytest.mark.parametrize("vector", [pytest.param(v, id=v["protocol_name"]) for v in VECTORS])
def test_cacophony_vector(vector: dict[str, Any]) -> None:
    """Handshake messages in turn, then transport messages alternating after Split."""
    initiator, responder = pair(vector)
    handshake_length = len(PATTERNS[vector["protocol_name"].split("_")[1]].messages)
    messages = vector["messages"]
    writer, reader = initiator, responder
    for message in messages[:handshake_length]:
        payload, ciphertext = (
            bytes.fromhex(message["payload"]),
            bytes.fromhex(message["ciphertext"]),
        )
        assert writer.write_message(payload) == ciphertext
        assert reader.read_message_untrusted(ciphertext) == payload
        writer, reader = reader, writer
    assert initiator.finished
    assert responder.finished
    assert initiator.handshake_hash == bytes.fromhex(vector["handshake_hash"])
    assert responder.handshake_hash == initiator.handshake_hash
    assert responder.rs == public_key(bytes.fromhex(vector["init_static"]))
    initiator_send, initiator_receive = initiator.split()
    responder_receive, responder_send = responder.split()
    assert (initiator_send.key, initiator_receive.key) == (
        responder_receive.key,
        responder_send.key,
    )
    for number, message in enumerate(messages[handshake_length:], start=handshake_length):
        payload, ciphertext = (
            bytes.fromhex(message["payload"]),
            bytes.fromhex(message["ciphertext"]),
        )
        by_initiator = number % 2 == 0
        sender = initiator_send if by_initiator else responder_send
        receiver = responder_receive if by_initiator else initiator_receive
        assert sender.encrypt_with_ad(b"", payload) == ciphertext
        assert receiver.decrypt_with_ad_untrusted(b"", ciphertext) == payload


def test_the_vectors_cover_ik_and_xk() -> None:
    names = {vector["protocol_name"] for vector in VECTORS}
    assert {IK, "Noise_XK_25519_ChaChaPoly_BLAKE2s"} <= names


def ik_message_one() -> tuple[HandshakeState, bytes]:
    initiator, responder = pair(next(v for v in VECTORS if v["protocol_name"] == IK))
    return responder, initiator.write_message(b"payload")


@pytest.mark.parametrize("position", range(0, 32 + 48 + 7 + 16, 5))
def test_a_flipped_byte_fails_the_handshake(position: int) -> None:
    responder, message = ik_message_one()
    tampered = bytearray(message)
    tampered[position] ^= 0x01
    with pytest.raises(RemoteProtocolError) as raised:
        responder.read_message_untrusted(bytes(tampered))
    assert raised.value.reason is DropReason.HANDSHAKE_FAILED


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200))
def test_any_first_message_is_read_or_refused(message: bytes) -> None:
    responder, _ = ik_message_one()
    try:
        responder.read_message_untrusted(message)
    except RemoteProtocolError as error:
        reason = error.reason
    else:
        return
    assert reason is DropReason.HANDSHAKE_FAILED


def test_a_low_order_ephemeral_is_refused() -> None:
    responder, message = ik_message_one()
    with pytest.raises(RemoteProtocolError, match="low order"):
        responder.read_message_untrusted(LOW_ORDER_POINT + message[32:])


def test_a_low_order_pinned_key_is_our_error() -> None:
    pinned_badly = HandshakeState(
        IK, initiator=True, prologue=b"", s=bytes(32), e=bytes(32), rs=LOW_ORDER_POINT
    )
    with pytest.raises(LocalProtocolError, match="low order"):
        pinned_badly.write_message(b"")


def test_misuse_is_a_local_error() -> None:
    with pytest.raises(LocalProtocolError, match="pattern"):
        HandshakeState("Noise_NN_25519_ChaChaPoly_BLAKE2s", initiator=True, prologue=b"", e=b"")
    with pytest.raises(LocalProtocolError, match="speaks"):
        HandshakeState("Noise_IK_448_ChaChaPoly_BLAKE2s", initiator=True, prologue=b"", e=b"")
    with pytest.raises(LocalProtocolError, match="hash"):
        SymmetricState("Noise_IK_25519_ChaChaPoly_MD5")
    with pytest.raises(LocalProtocolError, match="known before"):
        HandshakeState(IK, initiator=True, prologue=b"", e=bytes(32))
    responder, message = ik_message_one()
    with pytest.raises(LocalProtocolError, match="before the handshake is finished"):
        responder.split()
    with pytest.raises(LocalProtocolError, match="turn to write"):
        responder.write_message(b"")
    initiator, _ = pair(next(v for v in VECTORS if v["protocol_name"] == IK))
    with pytest.raises(LocalProtocolError, match="turn to read"):
        initiator.read_message_untrusted(message)
    responder.read_message_untrusted(message)
    responder.write_message(b"")
    with pytest.raises(LocalProtocolError, match="already finished"):
        responder.write_message(b"")


def test_a_failed_decryption_does_not_use_up_the_nonce() -> None:
    sender, receiver = CipherState(bytes(32)), CipherState(bytes(32))
    sealed = sender.encrypt_with_ad(b"ad", b"text")
    with pytest.raises(RemoteProtocolError):
        receiver.decrypt_with_ad_untrusted(b"other ad", sealed)
    assert receiver.decrypt_with_ad_untrusted(b"ad", sealed) == b"text"
    assert receiver.nonce == 1
