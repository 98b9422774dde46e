"""Cookies, COOKIE, KEY_QUERY and KEY_INFO: the vectors both ways, tampering, any bytes."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mcrelay.protocol.addresses import encode_address
from mcrelay.protocol.errors import DropReason, LocalProtocolError, RemoteProtocolError
from mcrelay.protocol.secure.cookies import (
    CookieSeal,
    cookie_key,
    encode_cookie_reply,
    make_cookie,
    open_cookie_reply_untrusted,
)
from mcrelay.protocol.secure.header import SIZES, DatagramType
from mcrelay.protocol.secure.keyquery import (
    KEY_INFO,
    KEY_QUERY,
    KeyQuery,
    decode_key_info_untrusted,
    decode_key_query_untrusted,
    encode_key_info,
    encode_key_query,
    key_info_tag,
)

from .conftest import SECURE_VECTORS
from .handshake_vectors import (
    CLIENT_ADDRESS,
    CLIENT_INDEX,
    COOKIE,
    COOKIE_NONCE,
    COOKIE_SECRET,
    DATAGRAMS,
    KEY_QUERY_NONCE,
    RELAY,
    STEPS,
    initiator,
)

QUERY = DATAGRAMS["KEY_QUERY"]
INFO = DATAGRAMS["KEY_INFO"]


def test_vector_cookie() -> None:
    assert encode_address(CLIENT_ADDRESS) == STEPS["cookie_address_bytes"]
    assert make_cookie(COOKIE_SECRET, CLIENT_ADDRESS) == STEPS["cookie"]


def test_vector_cookie_seal() -> None:
    assert cookie_key(RELAY.public) == STEPS["cookie_key"]
    seal = CookieSeal.of(STEPS["cookie_key"], COOKIE_NONCE)
    assert seal.subkey == STEPS["cookie_subkey"]
    assert seal.aead_nonce == STEPS["cookie_aead_nonce"]


def test_vector_cookie_reply_both_ways() -> None:
    made = encode_cookie_reply(
        CLIENT_INDEX,
        STEPS["cookie"],
        nonce=COOKIE_NONCE,
        cookie_key=cookie_key(RELAY.public),
        init_mac1=STEPS["init_mac1"],
    )
    assert made == COOKIE
    assert len(made) == SIZES[DatagramType.COOKIE] < SIZES[DatagramType.INIT]
    assert initiator().read_cookie_untrusted(COOKIE) == STEPS["cookie"]


def test_the_cookie_binds_the_init_it_answers() -> None:
    with pytest.raises(RemoteProtocolError) as raised:
        open_cookie_reply_untrusted(
            COOKIE, cookie_key=cookie_key(RELAY.public), init_mac1=bytes(16)
        )
    assert raised.value.reason is DropReason.DECRYPT_FAILED


def reason_of_cookie(datagram: bytes) -> DropReason | None:
    try:
        initiator().read_cookie_untrusted(datagram)
    except RemoteProtocolError as error:
        return error.reason
    return None


@pytest.mark.parametrize("position", range(64))
def test_a_cookie_reply_with_any_byte_flipped_is_refused(position: int) -> None:
    tampered = bytearray(COOKIE)
    tampered[position] ^= 0x04
    expected = {
        range(0, 4): {DropReason.MALFORMED, DropReason.UNKNOWN_TYPE},
        range(4, 8): {DropReason.UNKNOWN_INDEX},
        range(8, 64): {DropReason.DECRYPT_FAILED},
    }
    reasons = next(reasons for span, reasons in expected.items() if position in span)
    assert reason_of_cookie(bytes(tampered)) in reasons


@settings(max_examples=300, deadline=None)
@given(st.binary(min_size=56, max_size=56))
def test_any_cookie_reply_for_our_index(rest: bytes) -> None:
    datagram = bytes.fromhex("4d030000") + CLIENT_INDEX.to_bytes(4, "little") + rest
    assert reason_of_cookie(datagram) is DropReason.DECRYPT_FAILED


def test_cookie_misuse_is_local() -> None:
    with pytest.raises(LocalProtocolError, match="secret"):
        make_cookie(bytes(31), CLIENT_ADDRESS)
    with pytest.raises(LocalProtocolError, match="nonce"):
        CookieSeal.of(bytes(32), bytes(23))
    with pytest.raises(LocalProtocolError, match="16 bytes"):
        encode_cookie_reply(1, bytes(15), nonce=COOKIE_NONCE, cookie_key=bytes(32), init_mac1=b"")


def test_an_ipv6_source_has_its_own_cookie() -> None:
    assert make_cookie(COOKIE_SECRET, ("::1", 40000)) != make_cookie(COOKIE_SECRET, CLIENT_ADDRESS)
    assert make_cookie(COOKIE_SECRET, ("127.0.0.1", 40001)) != STEPS["cookie"]


def test_vector_key_query_both_ways() -> None:
    assert encode_key_query(KEY_QUERY_NONCE) == QUERY
    assert decode_key_query_untrusted(QUERY) == KEY_QUERY_NONCE
    assert KEY_QUERY.size == SIZES[DatagramType.KEY_QUERY]


def test_the_key_query_padding_is_not_checked() -> None:
    padded = QUERY[:20] + b"\xff" * 76
    assert decode_key_query_untrusted(padded) == KEY_QUERY_NONCE


def test_vector_key_info_both_ways() -> None:
    assert key_info_tag(KEY_QUERY_NONCE, RELAY.public) == STEPS["key_info_tag"]
    assert encode_key_info(RELAY.public, KEY_QUERY_NONCE) == INFO
    assert decode_key_info_untrusted(INFO, KEY_QUERY_NONCE) == RELAY.public
    assert KEY_INFO.size == SIZES[DatagramType.KEY_INFO] < SIZES[DatagramType.KEY_QUERY]


@pytest.mark.parametrize("position", range(52))
def test_a_key_info_with_any_byte_flipped_is_refused(position: int) -> None:
    tampered = bytearray(INFO)
    tampered[position] ^= 0x10
    with pytest.raises(RemoteProtocolError) as raised:
        decode_key_info_untrusted(bytes(tampered), KEY_QUERY_NONCE)
    if position >= 4:
        assert raised.value.reason is DropReason.NOT_FROM_RELAY


def test_a_key_info_for_another_query_is_refused() -> None:
    with pytest.raises(RemoteProtocolError, match="our query"):
        decode_key_info_untrusted(INFO, bytes(16))


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=120))
def test_any_bytes_into_the_decoders(datagram: bytes) -> None:
    decoders = (
        decode_key_query_untrusted,
        lambda d: decode_key_info_untrusted(d, bytes(16)),
        lambda d: open_cookie_reply_untrusted(d, cookie_key=bytes(32), init_mac1=bytes(16)),
    )
    for decode in decoders:
        try:
            decode(datagram)
        except RemoteProtocolError:
            continue


def test_a_key_query_refuses_two_different_answers() -> None:
    query = KeyQuery(KEY_QUERY_NONCE)

    def state() -> tuple[bytes | None, bool]:
        return query.key, query.conflict

    assert query.datagram == QUERY
    assert state() == (None, False)
    assert query.read_answer_untrusted(INFO) == RELAY.public
    assert query.read_answer_untrusted(INFO) == RELAY.public
    assert state() == (RELAY.public, False)
    other = bytes(range(32))
    assert query.read_answer_untrusted(encode_key_info(other, KEY_QUERY_NONCE)) == other
    assert state() == (None, True)
    with pytest.raises(RemoteProtocolError):
        query.read_answer_untrusted(encode_key_info(other, bytes(16)))
    assert state() == (None, True)


def test_key_query_misuse_is_local() -> None:
    with pytest.raises(LocalProtocolError):
        encode_key_query(bytes(15))
    with pytest.raises(LocalProtocolError):
        encode_key_info(bytes(31), KEY_QUERY_NONCE)


def test_every_datagram_vector_is_covered() -> None:
    """The datagrams these tests and test_handshake reproduce are all there are."""
    assert set(SECURE_VECTORS["datagrams"]) == {
        "INIT",
        "INIT with mac2 (same body, cookie above)",
        "RESPONSE",
        "COOKIE (for the INIT above)",
        "KEY_QUERY",
        "KEY_INFO",
    }
