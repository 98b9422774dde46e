"""FRAGMENT (type 1) values: ``msg_id(4) seq(u16) total(u16) piece``, and cutting payloads."""

import struct

import pytest

from mcrelay.protocol.errors import DropReason, LocalProtocolError, RemoteProtocolError
from mcrelay.protocol.legacy.fragments import (
    FRAGMENT_HEADER,
    FRAGMENT_SIZE,
    MAX_FRAGMENTS,
    MSG_ID_BYTES,
    Fragment,
    decode_fragment_untrusted,
    encode_fragment,
    split_payload,
)
from mcrelay.protocol.legacy.tlv import Tlv, TlvType, decode_tlvs_untrusted
from support import ANY_COUNT

MSG_ID = bytes.fromhex("a1b2c3d4")


def test_constants_match_the_spec() -> None:
    assert FRAGMENT_HEADER.size == 8
    assert MSG_ID_BYTES == 4
    assert FRAGMENT_SIZE == 256
    assert MAX_FRAGMENTS == 176


def test_decode_reads_the_header_in_network_order() -> None:
    value = MSG_ID + struct.pack("!HH", 0x0102, 0x0304) + b"piece"
    assert decode_fragment_untrusted(value) == Fragment(MSG_ID, 0x0102, 0x0304, b"piece")


def test_header_alone_is_a_fragment_with_an_empty_piece() -> None:
    assert decode_fragment_untrusted(MSG_ID + b"\x00\x00\x00\x01") == Fragment(MSG_ID, 0, 1, b"")


@pytest.mark.parametrize("length", range(8))
def test_value_shorter_than_the_header_is_malformed(length: int) -> None:
    with pytest.raises(RemoteProtocolError) as info:
        decode_fragment_untrusted(b"\x01" * length)
    assert info.value.reason is DropReason.MALFORMED


def test_decode_leaves_seq_and_total_rules_to_the_reassembler() -> None:
    value = MSG_ID + struct.pack("!HH", 0xFFFF, 0) + b"x"
    assert decode_fragment_untrusted(value) == Fragment(MSG_ID, 0xFFFF, 0, b"x")


def test_encode_is_one_fragment_tlv() -> None:
    data = encode_fragment(Fragment(MSG_ID, 2, 3, b"abc"))
    assert data == bytes.fromhex("0001000b" + "a1b2c3d4" + "0002" + "0003") + b"abc"
    assert decode_tlvs_untrusted(data, ANY_COUNT) == [Tlv(TlvType.FRAGMENT, data[4:])]
    assert decode_fragment_untrusted(data[4:]) == Fragment(MSG_ID, 2, 3, b"abc")


@pytest.mark.parametrize("msg_id", [b"", b"abc", b"abcde"])
def test_msg_id_must_be_four_bytes(msg_id: bytes) -> None:
    with pytest.raises(LocalProtocolError):
        Fragment(msg_id, 0, 1, b"")


@pytest.mark.parametrize(("seq", "total"), [(-1, 1), (0x10000, 1), (0, -1), (0, 0x10000)])
def test_seq_and_total_must_fit_in_16_bits(seq: int, total: int) -> None:
    with pytest.raises(LocalProtocolError):
        Fragment(MSG_ID, seq, total, b"")


@pytest.mark.parametrize(
    ("length", "pieces"),
    [
        (0, [0]),
        (1, [1]),
        (256, [256]),
        (257, [256, 1]),
        (512, [256, 256]),
        (520, [256, 256, 8]),
        (MAX_FRAGMENTS * 256, [256] * MAX_FRAGMENTS),
    ],
)
def test_split_payload(length: int, pieces: list[int]) -> None:
    payload = bytes(i % 251 for i in range(length))
    fragments = split_payload(payload, MSG_ID)
    assert [len(f.piece) for f in fragments] == pieces
    assert [f.seq for f in fragments] == list(range(len(pieces)))
    assert {f.total for f in fragments} == {len(pieces)}
    assert {f.msg_id for f in fragments} == {MSG_ID}
    assert b"".join(f.piece for f in fragments) == payload


def test_split_payload_with_another_size() -> None:
    fragments = split_payload(b"abcdefg", MSG_ID, size=3)
    assert [f.piece for f in fragments] == [b"abc", b"def", b"g"]


def test_split_payload_over_176_fragments_is_a_local_error() -> None:
    with pytest.raises(LocalProtocolError):
        split_payload(b"\x00" * (MAX_FRAGMENTS * 256 + 1), MSG_ID)
