"""DATA datagrams: every vector opened and sealed back, and any change to one refused."""

from typing import Any

import pytest
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from hypothesis import given, settings
from hypothesis import strategies as st

from mcrelay.protocol.errors import DropReason, LocalProtocolError, RemoteProtocolError
from mcrelay.protocol.secure.data import DataHeader, TransportKey, peek_data_untrusted
from mcrelay.protocol.secure.frames import MAX_PLAINTEXT_BYTES
from mcrelay.protocol.secure.header import MIN_DATA_BYTES
from mcrelay.protocol.secure.replay import REJECT_AFTER_MESSAGES

from .conftest import SECURE_VECTORS

DATA_VECTORS: list[dict[str, Any]] = SECURE_VECTORS["data"]
INTERMEDIATE = SECURE_VECTORS["intermediate"]
KEYS = {
    "c->r": TransportKey(bytes.fromhex(INTERMEDIATE["transport_client_send (Split first)"])),
    "r->c": TransportKey(bytes.fromhex(INTERMEDIATE["transport_relay_send (Split second)"])),
}
OTHER_DIRECTION = {"c->r": "r->c", "r->c": "c->r"}
VECTOR_PARAMS = [
    pytest.param(v, id=f"{v['direction']} {v['counter']} {v['name']}") for v in DATA_VECTORS
]


@pytest.mark.parametrize("vector", VECTOR_PARAMS)
def test_vector_opens_to_its_fields(vector: dict[str, Any]) -> None:
    datagram = bytes.fromhex(vector["datagram"])
    assert len(datagram) == vector["length"]
    opened = KEYS[vector["direction"]].open_untrusted(datagram)
    assert opened.receiver_index == vector["receiver_index"]
    assert opened.counter == vector["counter"]
    assert opened.plaintext == bytes.fromhex(vector["plaintext"])
    assert peek_data_untrusted(datagram) == DataHeader(vector["receiver_index"], vector["counter"])


@pytest.mark.parametrize("vector", VECTOR_PARAMS)
def test_vector_seals_to_its_datagram(vector: dict[str, Any]) -> None:
    sealed = KEYS[vector["direction"]].seal(
        vector["receiver_index"], vector["counter"], bytes.fromhex(vector["plaintext"])
    )
    assert sealed == bytes.fromhex(vector["datagram"])


def test_vector_receiver_indexes_are_the_handshake_indexes() -> None:
    inputs = SECURE_VECTORS["inputs"]
    for vector in DATA_VECTORS:
        chosen_by_receiver = "relay_index" if vector["direction"] == "c->r" else "client_index"
        assert vector["receiver_index"] == inputs[chosen_by_receiver]


@pytest.mark.parametrize("vector", VECTOR_PARAMS)
def test_the_other_directions_key_opens_nothing(vector: dict[str, Any]) -> None:
    with pytest.raises(RemoteProtocolError) as refused:
        KEYS[OTHER_DIRECTION[vector["direction"]]].open_untrusted(bytes.fromhex(vector["datagram"]))
    assert refused.value.reason is DropReason.DECRYPT_FAILED


def refusal(key: TransportKey, datagram: bytes) -> DropReason | None:
    try:
        key.open_untrusted(datagram)
    except RemoteProtocolError as refused:
        return refused.reason
    return None


@pytest.mark.parametrize("vector", VECTOR_PARAMS)
def test_every_flipped_bit_is_refused(vector: dict[str, Any]) -> None:
    datagram = bytes.fromhex(vector["datagram"])
    key = KEYS[vector["direction"]]
    for bit in range(len(datagram) * 8):
        tampered = bytearray(datagram)
        tampered[bit // 8] ^= 1 << (bit % 8)
        # The magic, type and reserved field are checked before the AEAD: malformed.
        expected = DropReason.MALFORMED if bit < 32 else DropReason.DECRYPT_FAILED
        assert refusal(key, bytes(tampered)) is expected, bit


@pytest.mark.parametrize("vector", VECTOR_PARAMS)
def test_cut_or_lengthened_datagrams_are_refused(vector: dict[str, Any]) -> None:
    datagram = bytes.fromhex(vector["datagram"])
    key = KEYS[vector["direction"]]
    for size in range(len(datagram)):
        expected = DropReason.MALFORMED if size < MIN_DATA_BYTES else DropReason.DECRYPT_FAILED
        assert refusal(key, datagram[:size]) is expected, size
    assert refusal(key, datagram + b"\x00") is DropReason.DECRYPT_FAILED


@pytest.mark.parametrize(
    ("header", "why"),
    [
        (bytes.fromhex("4c040000"), "not the secure magic"),
        (bytes.fromhex("4d010000"), "an INIT's type"),
        (bytes.fromhex("4d040100"), "reserved field set"),
    ],
)
def test_peek_refuses_what_is_not_a_data(header: bytes, why: str) -> None:
    with pytest.raises(RemoteProtocolError) as refused:
        peek_data_untrusted(header + bytes(MIN_DATA_BYTES - 4))
    assert refused.value.reason is DropReason.MALFORMED, why


def test_seal_refuses_what_the_wire_cannot_carry() -> None:
    key = KEYS["c->r"]
    assert len(key.seal(0, 0, bytes(MAX_PLAINTEXT_BYTES))) == 1232
    with pytest.raises(LocalProtocolError):
        key.seal(0, 0, bytes(MAX_PLAINTEXT_BYTES + 1))
    key.seal(0, REJECT_AFTER_MESSAGES - 1, b"")
    with pytest.raises(LocalProtocolError):
        key.seal(0, REJECT_AFTER_MESSAGES, b"")
    with pytest.raises(LocalProtocolError):
        key.seal(0, -1, b"")
    with pytest.raises(LocalProtocolError):
        key.seal(1 << 32, 0, b"")
    with pytest.raises(LocalProtocolError):
        TransportKey(bytes(31))


def test_a_receiver_accepts_plaintext_over_1200_bytes() -> None:
    # secure-wire.md, Messages: "plaintext over 1,200 bytes is accepted".
    key = KEYS["r->c"]
    big = key.seal(7, 3, bytes(MAX_PLAINTEXT_BYTES))
    header, sealed = big[:16], big[16:]
    raw = ChaCha20Poly1305(bytes.fromhex(INTERMEDIATE["transport_relay_send (Split second)"]))
    nonce = bytes(4) + (3).to_bytes(8, "little")
    assert raw.decrypt(nonce, sealed, header) == bytes(MAX_PLAINTEXT_BYTES)
    larger = header + raw.encrypt(nonce, bytes(1400), header)
    assert key.open_untrusted(larger).plaintext == bytes(1400)


@settings(max_examples=200, deadline=None)
@given(
    key=st.binary(min_size=32, max_size=32),
    receiver_index=st.integers(0, 0xFFFFFFFF),
    counter=st.integers(0, REJECT_AFTER_MESSAGES - 1),
    plaintext=st.binary(max_size=MAX_PLAINTEXT_BYTES),
)
def test_sealed_data_opens_to_what_was_sealed(
    key: bytes, receiver_index: int, counter: int, plaintext: bytes
) -> None:
    transport = TransportKey(key)
    datagram = transport.seal(receiver_index, counter, plaintext)
    assert len(datagram) == MIN_DATA_BYTES + len(plaintext)
    assert peek_data_untrusted(datagram) == DataHeader(receiver_index, counter)
    opened = transport.open_untrusted(datagram)
    assert (opened.receiver_index, opened.counter, opened.plaintext) == (
        receiver_index,
        counter,
        plaintext,
    )


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=200) | st.binary(min_size=12, max_size=200).map(b"M\x04\0\0".__add__))
def test_any_bytes_are_peeked_or_refused_and_never_opened(datagram: bytes) -> None:
    reason: DropReason | None = None
    try:
        header = peek_data_untrusted(datagram)
    except RemoteProtocolError as refused:
        reason = refused.reason
    else:
        assert datagram[:4] == b"M\x04\0\0"
        assert header == DataHeader(
            int.from_bytes(datagram[4:8], "little"), int.from_bytes(datagram[8:16], "little")
        )
    assert reason in (None, DropReason.MALFORMED)
    assert refusal(KEYS["c->r"], datagram) in (DropReason.MALFORMED, DropReason.DECRYPT_FAILED)
