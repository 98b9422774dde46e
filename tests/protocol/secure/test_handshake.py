"""INIT and RESPONSE: the vectors byte for byte both ways, tampering, any bytes."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mcrelay.protocol.errors import DropReason, LocalProtocolError, RemoteProtocolError
from mcrelay.protocol.secure.cookies import add_macs, mac, mac1_key
from mcrelay.protocol.secure.handshake import (
    INIT_PAYLOAD,
    RESPONSE_PAYLOAD,
    Initiator,
    Responder,
    fresh_index,
    tai64n,
)
from mcrelay.protocol.secure.header import SIZES, DatagramType
from mcrelay.protocol.secure.keys import KeyPair

from .handshake_vectors import (
    CLIENT,
    CLIENT_EPHEMERAL,
    CLIENT_EPOCH,
    CLIENT_INDEX,
    INIT,
    INIT_WITH_MAC2,
    PUBLIC,
    RELAY,
    RELAY_EPHEMERAL,
    RELAY_EPOCH,
    RELAY_INDEX,
    RESPONSE,
    STEPS,
    TIMESTAMP,
    initiator,
    responder,
)


def respond_to(datagram: bytes) -> bytes:
    received = responder().read_init_untrusted(datagram)
    return received.respond(
        ephemeral_private=RELAY_EPHEMERAL, sender_index=RELAY_INDEX, epoch=RELAY_EPOCH
    ).datagram


def test_vector_public_keys() -> None:
    assert CLIENT.public.hex() == PUBLIC["client_static"]
    assert RELAY.public.hex() == PUBLIC["relay_static"]
    assert KeyPair.from_private(CLIENT_EPHEMERAL).public.hex() == PUBLIC["client_ephemeral"]
    assert KeyPair.from_private(RELAY_EPHEMERAL).public.hex() == PUBLIC["relay_ephemeral"]


def test_vector_payloads_and_mac1_keys() -> None:
    assert INIT_PAYLOAD.pack(TIMESTAMP, CLIENT_EPOCH) == STEPS["init_payload"]
    assert RESPONSE_PAYLOAD.pack(RELAY_EPOCH) == STEPS["response_payload"]
    assert mac1_key(RELAY.public) == STEPS["mac1_key_init"]
    assert mac1_key(CLIENT.public) == STEPS["mac1_key_response"]


def test_vector_timestamp_is_tai64n_of_its_time() -> None:
    """1,800,000,000.123456789 s after the Unix epoch, labelled as WireGuard does."""
    assert tai64n(1_800_000_000_123_456_789) == TIMESTAMP
    assert tai64n(0) == bytes.fromhex("400000000000000a00000000")
    with pytest.raises(LocalProtocolError):
        tai64n(-1)


@settings(max_examples=300, deadline=None)
@given(st.integers(0, 2**61), st.integers(0, 2**61))
def test_timestamps_compare_as_bytes_like_their_times(a: int, b: int) -> None:
    assert (tai64n(a) < tai64n(b)) == (a < b)


def test_vector_init_is_made_byte_for_byte() -> None:
    made = initiator()
    assert made.datagram == INIT
    assert made.mac1 == STEPS["init_mac1"]
    assert len(INIT) == SIZES[DatagramType.INIT]


def test_vector_init_with_mac2() -> None:
    made = initiator(cookie=STEPS["cookie"])
    assert made.datagram == INIT_WITH_MAC2
    assert made.datagram[-16:] == STEPS["init_mac2"]
    assert mac(STEPS["cookie"], INIT_WITH_MAC2[:-16]) == STEPS["init_mac2"]


@pytest.mark.parametrize("datagram", [INIT, INIT_WITH_MAC2], ids=["INIT", "INIT with mac2"])
def test_vector_init_is_read_back(datagram: bytes) -> None:
    received = responder().read_init_untrusted(datagram)
    assert received.client_static == CLIENT.public
    assert received.sender_index == CLIENT_INDEX
    assert received.timestamp == TIMESTAMP
    assert received.epoch == CLIENT_EPOCH


def test_vector_response_and_relay_keys() -> None:
    received = responder().read_init_untrusted(INIT)
    response = received.respond(
        ephemeral_private=RELAY_EPHEMERAL, sender_index=RELAY_INDEX, epoch=RELAY_EPOCH
    )
    assert response.datagram == RESPONSE
    assert response.datagram[-32:-16] == STEPS["response_mac1"]
    assert response.keys.send == STEPS["transport_relay_send"]
    assert response.keys.receive == STEPS["transport_client_send"]
    assert (response.keys.local_index, response.keys.remote_index) == (RELAY_INDEX, CLIENT_INDEX)
    assert response.keys.handshake_hash == STEPS["handshake_hash"]
    assert "send" not in repr(response.keys)


def test_vector_response_read_by_the_client() -> None:
    established = initiator().read_response_untrusted(RESPONSE)
    assert established.relay_epoch == RELAY_EPOCH
    assert established.keys.send == STEPS["transport_client_send"]
    assert established.keys.receive == STEPS["transport_relay_send"]
    assert (established.keys.local_index, established.keys.remote_index) == (
        CLIENT_INDEX,
        RELAY_INDEX,
    )
    assert established.keys.handshake_hash == STEPS["handshake_hash"]


def test_a_handshake_with_fresh_keys_agrees() -> None:
    client, relay = KeyPair.generate(), KeyPair.generate()
    attempt = Initiator(
        client,
        relay.public,
        ephemeral_private=KeyPair.generate().private,
        sender_index=fresh_index(()),
        timestamp=tai64n(1),
        epoch=7,
    )
    received = Responder(relay).read_init_untrusted(attempt.datagram)
    assert received.client_static == client.public
    response = received.respond(
        ephemeral_private=KeyPair.generate().private, sender_index=9, epoch=8
    )
    established = attempt.read_response_untrusted(response.datagram)
    assert established.keys.send == response.keys.receive
    assert established.keys.receive == response.keys.send
    assert established.keys.send != established.keys.receive
    assert established.relay_epoch == 8


def test_fresh_index_skips_indexes_in_use() -> None:
    draws = iter([b"\x01\x00\x00\x00", b"\x02\x00\x00\x00"])
    assert fresh_index({1}, lambda _: next(draws)) == 2


def reason_of_init(datagram: bytes) -> DropReason | None:
    try:
        responder().read_init_untrusted(datagram)
    except RemoteProtocolError as error:
        return error.reason
    return None


def flipped(datagram: bytes, position: int) -> bytes:
    tampered = bytearray(datagram)
    tampered[position] ^= 0x80
    return bytes(tampered)


@pytest.mark.parametrize("position", range(4, 136))
def test_an_init_with_any_byte_flipped_before_mac2_is_silenced(position: int) -> None:
    assert reason_of_init(flipped(INIT, position)) is DropReason.BAD_MAC1


@pytest.mark.parametrize("position", range(4))
def test_an_init_with_a_flipped_header_is_malformed(position: int) -> None:
    assert reason_of_init(flipped(INIT, position)) in {
        DropReason.MALFORMED,
        DropReason.UNKNOWN_TYPE,
    }


@pytest.mark.parametrize("position", range(8, 120))
def test_an_init_tampered_under_a_fresh_mac1_fails_noise(position: int) -> None:
    """Who knows the relay's public key can make mac1; Noise still refuses the INIT."""
    body = flipped(INIT, position)[:120]
    assert reason_of_init(add_macs(body, mac1_key(RELAY.public), None)) is (
        DropReason.HANDSHAKE_FAILED
    )


def test_mac2_is_not_the_responders_business() -> None:
    """Whether mac2 matters is the admission's (under load) decision, not Noise's."""
    assert reason_of_init(flipped(INIT_WITH_MAC2, 140)) is None


def reason_of_response(attempt: Initiator, datagram: bytes) -> DropReason | None:
    try:
        attempt.read_response_untrusted(datagram)
    except RemoteProtocolError as error:
        return error.reason
    return None


@pytest.mark.parametrize("position", range(96))
def test_a_response_with_any_byte_flipped_is_refused(position: int) -> None:
    attempt = initiator()
    assert reason_of_response(attempt, flipped(RESPONSE, position)) is not None
    assert attempt.read_response_untrusted(RESPONSE).relay_epoch == RELAY_EPOCH


@pytest.mark.parametrize("position", range(12, 64))
def test_a_response_tampered_under_a_fresh_mac1_fails_noise(position: int) -> None:
    """mac1 of a RESPONSE needs only the client's public key; Noise refuses the forgery
    and the genuine RESPONSE after it is still read."""
    attempt = initiator()
    forged = add_macs(flipped(RESPONSE, position)[:64], mac1_key(CLIENT.public), None)
    assert reason_of_response(attempt, forged) is DropReason.HANDSHAKE_FAILED
    assert attempt.read_response_untrusted(RESPONSE).relay_epoch == RELAY_EPOCH


def test_response_refusals_name_their_reason() -> None:
    attempt = initiator()
    assert reason_of_response(attempt, flipped(RESPONSE, 8)) is DropReason.UNKNOWN_INDEX
    assert reason_of_response(attempt, flipped(RESPONSE, 70)) is DropReason.BAD_MAC1
    assert reason_of_response(attempt, flipped(RESPONSE, 90)) is DropReason.MALFORMED
    assert reason_of_response(attempt, INIT) is DropReason.MALFORMED
    attempt.read_response_untrusted(RESPONSE)
    assert reason_of_response(attempt, RESPONSE) is DropReason.UNKNOWN_INDEX


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=200))
def test_any_bytes_into_the_responder(datagram: bytes) -> None:
    try:
        responder().read_init_untrusted(datagram)
    except RemoteProtocolError:
        return


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 2**32 - 1), st.binary(min_size=112, max_size=112))
def test_any_noise_message_under_a_good_mac1(index: int, message: bytes) -> None:
    """Past mac1, a body not made by the key's holder fails Noise, and nothing else."""
    body = bytes.fromhex("4d010000") + index.to_bytes(4, "little") + message
    forged = add_macs(body, mac1_key(RELAY.public), None)
    assert reason_of_init(forged) is DropReason.HANDSHAKE_FAILED


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=200))
def test_any_bytes_into_the_initiator(datagram: bytes) -> None:
    attempt = initiator()
    for read in (attempt.read_response_untrusted, attempt.read_cookie_untrusted):
        try:
            read(datagram)
        except RemoteProtocolError:
            continue


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 2**32 - 1), st.binary(min_size=52, max_size=52))
def test_any_response_body_under_a_good_mac1(relay_index: int, message: bytes) -> None:
    body = (
        bytes.fromhex("4d020000")
        + relay_index.to_bytes(4, "little")
        + CLIENT_INDEX.to_bytes(4, "little")
        + message
    )
    forged = add_macs(body, mac1_key(CLIENT.public), None)
    assert reason_of_response(initiator(), forged) is DropReason.HANDSHAKE_FAILED


def test_misuse_is_a_local_error() -> None:
    def make(**changes: object) -> None:
        arguments: dict[str, object] = {
            "ephemeral_private": CLIENT_EPHEMERAL,
            "sender_index": CLIENT_INDEX,
            "timestamp": TIMESTAMP,
            "epoch": CLIENT_EPOCH,
        }
        Initiator(CLIENT, RELAY.public, **(arguments | changes))  # type: ignore[arg-type]

    with pytest.raises(LocalProtocolError, match="sender_index"):
        make(sender_index=2**32)
    with pytest.raises(LocalProtocolError, match="epoch"):
        make(epoch=-1)
    with pytest.raises(LocalProtocolError, match="12 bytes"):
        make(timestamp=b"")
    with pytest.raises(LocalProtocolError, match="relay key"):
        Initiator(
            CLIENT,
            RELAY.public[:31],
            ephemeral_private=CLIENT_EPHEMERAL,
            sender_index=1,
            timestamp=TIMESTAMP,
            epoch=1,
        )
    received = responder().read_init_untrusted(INIT)
    with pytest.raises(LocalProtocolError, match="sender_index"):
        received.respond(ephemeral_private=RELAY_EPHEMERAL, sender_index=-1, epoch=0)
    received.respond(ephemeral_private=RELAY_EPHEMERAL, sender_index=1, epoch=0)
    with pytest.raises(LocalProtocolError, match="finished"):
        received.respond(ephemeral_private=RELAY_EPHEMERAL, sender_index=1, epoch=0)


def test_amplification_of_the_handshake() -> None:
    """The relay's answers before a session are smaller than what they answer."""
    assert len(respond_to(INIT)) < len(INIT)
    assert SIZES[DatagramType.RESPONSE] < SIZES[DatagramType.INIT]
