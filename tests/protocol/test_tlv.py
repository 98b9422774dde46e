"""TLV framing (``!HH`` type and length, then the value), and nothing about meanings."""

import pytest

from mcrelay.protocol.errors import DropReason, LocalProtocolError, RemoteProtocolError
from mcrelay.protocol.legacy.tlv import (
    MAX_TLV_VALUE_BYTES,
    TLV_HEADER,
    Tlv,
    TlvType,
    decode_tlvs_untrusted,
    encode_tlv,
    encode_tlvs,
)
from support import ANY_COUNT


def test_type_numbers_match_the_spec() -> None:
    assert {t.name: t.value for t in TlvType} == {
        "FRAGMENT": 1,
        "ENCRYPTED_BLOCK": 3,
        "CLIENT_PUBLIC_KEY": 4,
        "SERVER_PUBLIC_KEY": 5,
        "RELAYED_MESSAGE": 6,
        "SERVER_KEY_REQUEST": 7,
        "DISCONNECT": 8,
        "KEEPALIVE": 9,
        "SENDER_INFO": 10,
        "CLIENT_CONNECTED": 11,
        "CLIENT_DISCONNECTED": 12,
    }


def test_header_is_two_big_endian_u16() -> None:
    assert TLV_HEADER.size == 4
    assert encode_tlv(0x0102, b"abc") == b"\x01\x02\x00\x03abc"
    assert encode_tlv(TlvType.KEEPALIVE) == b"\x00\x09\x00\x00"


def test_encode_tlvs_concatenates() -> None:
    tlvs = [Tlv(9, b""), Tlv(0xFFFF, b"xyz"), Tlv(0, b"\x00")]
    assert (
        encode_tlvs(tlvs) == b"\x00\x09\x00\x00" + b"\xff\xff\x00\x03xyz" + b"\x00\x00\x00\x01\x00"
    )
    assert encode_tlvs([]) == b""


def test_decode_back_to_back() -> None:
    data = encode_tlv(7) + encode_tlv(4, b"pem") + encode_tlv(0x1234, b"\x00" * 10)
    assert decode_tlvs_untrusted(data, ANY_COUNT) == [
        Tlv(7, b""),
        Tlv(4, b"pem"),
        Tlv(0x1234, b"\x00" * 10),
    ]


def test_largest_value_round_trips() -> None:
    value = bytes(range(256)) * 255 + b"\x01" * 255
    assert len(value) == MAX_TLV_VALUE_BYTES
    data = encode_tlv(6, value)
    assert data[:4] == b"\x00\x06\xff\xff"
    assert decode_tlvs_untrusted(data, ANY_COUNT) == [Tlv(6, value)]


def test_empty_input_is_malformed() -> None:
    with pytest.raises(RemoteProtocolError) as info:
        decode_tlvs_untrusted(b"", ANY_COUNT)
    assert info.value.reason is DropReason.MALFORMED


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(b"\x00", id="1-byte header"),
        pytest.param(b"\x00\x09\x00", id="3-byte header"),
        pytest.param(b"\x00\x09\x00\x01", id="value missing"),
        pytest.param(b"\x00\x09\x00\x05abcd", id="value one byte short"),
        pytest.param(b"\x00\x09\xff\xff", id="length 65535, nothing follows"),
        pytest.param(encode_tlv(9) + b"\x00", id="trailing byte"),
        pytest.param(encode_tlv(9) + b"\x00\x09\x00", id="trailing cut header"),
        pytest.param(encode_tlv(9) + b"\x00\x0a\x00\x06\x7f\x00", id="second TLV truncated"),
    ],
)
def test_cut_input_is_malformed(data: bytes) -> None:
    with pytest.raises(RemoteProtocolError) as info:
        decode_tlvs_untrusted(data, ANY_COUNT)
    assert info.value.reason is DropReason.MALFORMED


@pytest.mark.parametrize("type_", [-1, 0x10000])
def test_type_out_of_range_is_a_local_error(type_: int) -> None:
    with pytest.raises(LocalProtocolError):
        Tlv(type_, b"")
    with pytest.raises(LocalProtocolError):
        encode_tlv(type_)


def test_value_over_65535_bytes_is_a_local_error() -> None:
    with pytest.raises(LocalProtocolError):
        encode_tlv(6, b"\x00" * (MAX_TLV_VALUE_BYTES + 1))
