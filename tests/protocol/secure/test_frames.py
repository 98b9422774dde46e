"""Frames inside DATA: the vectors' plaintexts both ways, and the decoder's one failure."""

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mcrelay.protocol.errors import DropReason, LocalProtocolError, RemoteProtocolError
from mcrelay.protocol.secure.frames import (
    ACK_HEADER,
    FRAME_HEADER,
    MAX_FRAGMENTS,
    MAX_FRAMES_PER_DATA,
    Abandon,
    Ack,
    Fragment,
    Frame,
    Frames,
    PathChallenge,
    PathResponse,
    ack_bitmap,
    decode_frames_untrusted,
    encode_frames,
    frame_size,
)

from .conftest import SECURE_VECTORS

DATA_VECTORS: list[dict[str, Any]] = SECURE_VECTORS["data"]


@pytest.mark.parametrize("vector", [pytest.param(v, id=v["name"]) for v in DATA_VECTORS])
def test_vector_plaintexts_decode_and_encode_back(vector: dict[str, Any]) -> None:
    plaintext = bytes.fromhex(vector["plaintext"])
    decoded = decode_frames_untrusted(plaintext)
    assert decoded.unknown == 0
    assert encode_frames(decoded.frames) == plaintext
    assert sum(frame_size(frame) for frame in decoded.frames) == len(plaintext)


def test_vector_frames_mean_what_their_names_say() -> None:
    by_name = {
        v["name"]: decode_frames_untrusted(bytes.fromhex(v["plaintext"])) for v in DATA_VECTORS
    }
    assert by_name["keep-alive (no frames)"] == Frames(())
    assert by_name['CHAT c->r "hello", msg_seq 0'].frames == (Fragment(0, 0, 1, b"\x01hello"),)
    assert by_name["ACK c->r partial: msg_seq 9, count 10, got {0, 3, 9}"].frames == (
        Ack(9, 10, frozenset({0, 3, 9})),
    )
    assert by_name["ABANDON c->r of msg_seq 4"].frames == (Abandon(4),)
    challenge = bytes.fromhex(SECURE_VECTORS["inputs"]["path_challenge"])
    assert by_name["PATH_CHALLENGE r->c"].frames == (PathChallenge(challenge),)
    assert by_name["PATH_RESPONSE c->r"].frames == (PathResponse(challenge),)
    two = by_name["ACK r->c of client msg_seq 0 + CHAT r->c msg_seq 11 in one DATA"].frames
    assert [type(frame) for frame in two] == [Ack, Fragment]


def test_ack_bitmap_layout() -> None:
    assert ack_bitmap(Ack(0, 10, frozenset({0, 3, 9}))) == bytes([0x09, 0x02])
    assert ack_bitmap(Ack(0, 8, frozenset(range(8)))) == b"\xff"
    assert ack_bitmap(Ack(0, 9, frozenset())) == b"\x00\x00"


def test_unknown_frames_are_skipped_and_counted() -> None:
    plaintext = bytes([9, 2, 0, 0xAA, 0xBB]) + encode_frames([Abandon(7)]) + bytes([0xFF, 0, 0])
    assert decode_frames_untrusted(plaintext) == Frames((Abandon(7),), unknown=2)


@pytest.mark.parametrize(
    "plaintext",
    [
        pytest.param(b"\x01", id="header cut short"),
        pytest.param(b"\x05\x04\x00\x01\x00", id="value runs past the end"),
        pytest.param(b"\x01\x07\x00" + bytes(7), id="FRAGMENT header cut short"),
        pytest.param(b"\x01\x08\x00" + bytes(8), id="FRAGMENT index 0 of 0"),
        pytest.param(b"\x01\x08\x00" + bytes(4) + b"\x02\x00\x02\x00", id="FRAGMENT index 2 of 2"),
        pytest.param(b"\x02\x06\x00" + bytes(4) + b"\x09\x00", id="ACK bitmap too short"),
        pytest.param(b"\x02\x09\x00" + bytes(4) + b"\x01\x00" + bytes(3), id="ACK bitmap too long"),
        pytest.param(b"\x03\x07\x00" + bytes(7), id="PATH_CHALLENGE of 7"),
        pytest.param(b"\x04\x09\x00" + bytes(9), id="PATH_RESPONSE of 9"),
        pytest.param(b"\x05\x03\x00" + bytes(3), id="ABANDON of 3"),
        pytest.param(encode_frames([Abandon(1)]) + b"\x05", id="a good frame, then a cut one"),
    ],
)
def test_malformed_plaintexts_are_refused_whole(plaintext: bytes) -> None:
    with pytest.raises(RemoteProtocolError):
        decode_frames_untrusted(plaintext)


@pytest.mark.parametrize(
    "build",
    [
        lambda: Fragment(0, 1, 1, b""),
        lambda: Fragment(-1, 0, 1, b""),
        lambda: Fragment(1 << 32, 0, 1, b""),
        lambda: Ack(0, 2, frozenset({2})),
        lambda: PathChallenge(b"short"),
        lambda: PathResponse(bytes(9)),
        lambda: Abandon(1 << 32),
    ],
)
def test_frames_validate_on_construction(build: Any) -> None:
    with pytest.raises(LocalProtocolError):
        build()


msg_seqs = st.integers(0, 0xFFFFFFFF)


@st.composite
def acks(draw: st.DrawFn) -> Ack:
    """Of a message a peer can have (past MAX_FRAGMENTS the bits are not read)."""
    count = draw(st.integers(1, MAX_FRAGMENTS))
    return Ack(draw(msg_seqs), count, frozenset(draw(st.sets(st.integers(0, count - 1)))))


@st.composite
def fragments(draw: st.DrawFn) -> Fragment:
    count = draw(st.integers(1, 0xFFFF))
    index = draw(st.integers(0, count - 1))
    return Fragment(draw(msg_seqs), index, count, draw(st.binary(max_size=1150)))


frames = st.one_of(
    fragments(),
    acks(),
    st.binary(min_size=8, max_size=8).map(PathChallenge),
    st.binary(min_size=8, max_size=8).map(PathResponse),
    msg_seqs.map(Abandon),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(frames, max_size=6))
def test_frames_round_trip(sequence: list[Frame]) -> None:
    plaintext = encode_frames(sequence)
    assert decode_frames_untrusted(plaintext) == Frames(tuple(sequence))
    assert sum(frame_size(frame) for frame in sequence) == len(plaintext)


@settings(max_examples=1000, deadline=None)
@given(st.binary(max_size=1300))
def test_any_plaintext_decodes_or_raises_the_one_error(plaintext: bytes) -> None:
    try:
        decoded = decode_frames_untrusted(plaintext)
    except RemoteProtocolError:
        return
    assert decode_frames_untrusted(encode_frames(decoded.frames)).frames == decoded.frames


def acks_of_any_count() -> st.SearchStrategy[tuple[int, bytes]]:
    """A count up to 65,535 and a bitmap of its size, any bits set (past the count too)."""
    return st.integers(0, 0xFFFF).flatmap(
        lambda count: st.tuples(
            st.just(count), st.binary(min_size=(count + 7) // 8, max_size=(count + 7) // 8)
        )
    )


@settings(max_examples=60, deadline=None)
@given(acks_of_any_count())
def test_an_ack_of_any_count_decodes_to_its_bits_alone(ack: tuple[int, bytes]) -> None:
    """Whatever the bits past the count, the ACK holds exactly the indexes whose bit is
    set, and its mask and bitmap say the same. An ACK of more fragments than any
    message has (64) can be of no message: its bits are not read (walking 65,535 of
    them cost 6.7 ms a frame, 54 ms a 64 KB DATA of them; found by review), and the
    sender counts it ``invalid_ack`` as any ACK of the wrong count."""
    count, bitmap = ack
    value = ACK_HEADER.pack(7, count) + bitmap
    decoded = decode_frames_untrusted(FRAME_HEADER.pack(2, len(value)) + value).frames
    expected = frozenset(i for i in range(count) if bitmap[i // 8] & (1 << (i % 8)))
    if count > MAX_FRAGMENTS:
        assert decoded == (Ack(7, count, frozenset()),)
        return
    assert decoded == (Ack(7, count, expected),)
    within = int.from_bytes(bitmap, "little") & ((1 << count) - 1)
    assert decoded[0].mask == within
    assert ack_bitmap(decoded[0]) == within.to_bytes(len(bitmap), "little")


def test_a_data_of_the_pages_size_may_hold_as_many_frames_as_fit() -> None:
    """The page skips unknown frame types: a DATA of 1,200 bytes of them, plus a fragment,
    is read whole (a cap of 256 dropped it: found by review)."""
    fragment = encode_frames([Fragment(0, 0, 1, b"\x01hi")])
    unknown = FRAME_HEADER.pack(0x7F, 0) * ((1200 - len(fragment)) // FRAME_HEADER.size)
    decoded = decode_frames_untrusted(fragment + unknown)
    assert decoded.frames == (Fragment(0, 0, 1, b"\x01hi"),)
    assert decoded.unknown == len(unknown) // FRAME_HEADER.size


def test_a_data_of_more_frames_than_any_peer_sends_is_refused_whole() -> None:
    """A 64 KB DATA of 6,540 small ACKs (or 21,000 empty frames of an unknown type) cost
    the relay 12 ms (4 ms) for one AEAD seal of the sender's (found by review): past
    MAX_FRAMES_PER_DATA it is dropped whole as soon as that many are read."""
    ack = encode_frames([Ack(1, 8, frozenset())])
    assert len(decode_frames_untrusted(ack * MAX_FRAMES_PER_DATA).frames) == MAX_FRAMES_PER_DATA
    for plaintext in (ack * (MAX_FRAMES_PER_DATA + 1), FRAME_HEADER.pack(99, 0) * 21_000):
        with pytest.raises(RemoteProtocolError) as info:
            decode_frames_untrusted(plaintext)
        assert info.value.reason is DropReason.TOO_MANY_FRAMES
