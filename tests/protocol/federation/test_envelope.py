"""Sealing and opening envelopes: headers, seqs, keys, sizes, and any bytes at all."""

from typing import cast

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mcrelay.protocol.errors import DropReason, LocalProtocolError, RemoteProtocolError
from mcrelay.protocol.federation.envelope import (
    ENVELOPE_VERSION,
    MAX_ENVELOPE_BYTES,
    MIN_ENVELOPE_BYTES,
    Header,
    Kind,
    Opener,
    Sealer,
    check_relay_name,
    decode_header_untrusted,
    relay_name_untrusted,
    valid_relay_name,
)

from .strategies import headers, relay_names

KEY = bytes(range(32))
EPOCH = 1_767_225_600_000_000_000
OPENED_OR_REFUSED = {DropReason.BAD_ENVELOPE, DropReason.ENVELOPE_VERSION, DropReason.ENVELOPE_AUTH}


def sealer(relay: str = "relay-a", epoch: int = EPOCH) -> Sealer:
    return Sealer(KEY, relay, epoch)


def test_a_sealed_envelope_opens_to_its_header_and_body() -> None:
    header, envelope = sealer().seal_with_header(Kind.MSG, b"body")
    assert header == Header(ENVELOPE_VERSION, Kind.MSG, "relay-a", EPOCH, 1)
    assert Opener(KEY).open_untrusted(envelope) == (header, b"body")


def test_each_kind_counts_its_own_seq_from_one() -> None:
    s = sealer()
    opener = Opener(KEY)
    seqs = [opener.open_untrusted(s.seal(Kind(kind), b""))[0].seq for kind in (1, 1, 2, 1, 5, 2)]
    assert seqs == [1, 2, 1, 3, 1, 2]
    assert (s.last_seq(Kind.MSG), s.last_seq(Kind.PRESENCE), s.last_seq(Kind.KICK_REPLY)) == (
        3,
        2,
        0,
    )


def test_another_cluster_key_fails_authentication() -> None:
    envelope = sealer().seal(Kind.PRESENCE, b"who")
    with pytest.raises(RemoteProtocolError) as raised:
        Opener(bytes(32)).open_untrusted(envelope)
    assert raised.value.reason is DropReason.ENVELOPE_AUTH


def test_a_header_changed_in_transit_fails_authentication() -> None:
    envelope = sealer().seal(Kind.MSG, b"x")
    for moved in (
        Header(ENVELOPE_VERSION, Kind.MSG, "relay-a", EPOCH, 2),
        Header(ENVELOPE_VERSION, Kind.MSG, "relay-b", EPOCH, 1),
    ):
        tampered = moved.encode() + envelope[len(moved.encode()) :]
        with pytest.raises(RemoteProtocolError) as raised:
            Opener(KEY).open_untrusted(tampered)
        assert raised.value.reason is DropReason.ENVELOPE_AUTH


def test_the_largest_envelope_is_one_mib() -> None:
    s = sealer()
    room = MAX_ENVELOPE_BYTES - (MIN_ENVELOPE_BYTES - 1 + len("relay-a"))
    largest = s.seal(Kind.SNAPSHOT, bytes(room))
    assert len(largest) == MAX_ENVELOPE_BYTES
    assert Opener(KEY).open_untrusted(largest)[1] == bytes(room)
    with pytest.raises(LocalProtocolError):
        s.seal(Kind.SNAPSHOT, bytes(room + 1))
    assert s.last_seq(Kind.SNAPSHOT) == 1, "a refused envelope spends no seq"
    with pytest.raises(RemoteProtocolError) as raised:
        Opener(KEY).open_untrusted(largest + b"\0")
    assert raised.value.reason is DropReason.ENVELOPE_TOO_LARGE


def test_an_unknown_version_is_refused_before_anything_else() -> None:
    for data in (b"\x00", b"\x01" + bytes(100), b"\x03" + bytes(100), b"\xff"):
        with pytest.raises(RemoteProtocolError) as raised:
            Opener(KEY).open_untrusted(data)
        assert raised.value.reason is DropReason.ENVELOPE_VERSION


def test_a_header_with_a_zero_epoch_or_seq_is_malformed() -> None:
    good = Header(ENVELOPE_VERSION, Kind.MSG, "r", 5, 6).encode()
    for bad in (good[:4] + bytes(8) + good[12:], good[:12] + bytes(8)):
        with pytest.raises(RemoteProtocolError) as raised:
            decode_header_untrusted(bad)
        assert raised.value.reason is DropReason.BAD_ENVELOPE


@pytest.mark.parametrize(
    "fields",
    [
        pytest.param((1, 1, "r", 1, 1), id="version"),
        pytest.param((2, 7, "r", 1, 1), id="kind"),
        pytest.param((2, 1, "", 1, 1), id="empty name"),
        pytest.param((2, 1, "r" * 65, 1, 1), id="long name"),
        pytest.param((2, 1, "r.s", 1, 1), id="dot"),
        pytest.param((2, 1, "r", 0, 1), id="zero epoch"),
        pytest.param((2, 1, "r", 1, 0), id="zero seq"),
        pytest.param((2, 1, "r", 1 << 64, 1), id="epoch past u64"),
    ],
)
def test_a_header_validates_on_construction(fields: tuple[int, int, str, int, int]) -> None:
    version, kind, relay, epoch, seq = fields
    with pytest.raises(LocalProtocolError):
        Header(version, cast(Kind, kind), relay, epoch, seq)


def test_relay_names() -> None:
    assert valid_relay_name("a")
    assert valid_relay_name("A-z_09" * 10 + "abcd")
    for bad in ("", "a" * 65, "a b", "é", "a\n", "a.b", "a*"):
        assert not valid_relay_name(bad)
        with pytest.raises(LocalProtocolError):
            check_relay_name(bad)
    for raw in (b"\xff", b"a\x00", "é".encode()):
        with pytest.raises(RemoteProtocolError) as raised:
            relay_name_untrusted(raw)
        assert raised.value.reason is DropReason.BAD_ENVELOPE


def test_a_sealer_refuses_bad_settings() -> None:
    with pytest.raises(LocalProtocolError):
        Sealer(bytes(31), "r", 1)
    with pytest.raises(LocalProtocolError):
        Sealer(KEY, "r r", 1)
    with pytest.raises(LocalProtocolError):
        Sealer(KEY, "r", 0)
    with pytest.raises(LocalProtocolError):
        Opener(bytes(33))


def test_the_opener_keeps_a_bounded_number_of_subkeys() -> None:
    opener = Opener(KEY, max_subkeys=2)
    envelopes = [Sealer(KEY, f"relay-{n}", EPOCH).seal(Kind.MSG, b"m") for n in range(3)]
    for envelope in envelopes * 2:
        opener.open_untrusted(envelope)
        assert opener.subkeys_cached() <= 2
    assert opener.subkeys_cached() == 2


@given(headers)
def test_headers_round_trip(header: Header) -> None:
    assert decode_header_untrusted(header.encode() + b"rest") == header


@given(relay_names, st.sampled_from(Kind), st.binary(max_size=200))
def test_envelopes_round_trip(relay: str, kind: Kind, body: bytes) -> None:
    header, envelope = Sealer(KEY, relay, EPOCH).seal_with_header(kind, body)
    assert Opener(KEY).open_untrusted(envelope) == (header, body)


@given(st.binary(max_size=200))
def test_any_bytes_raise_only_remote_errors(data: bytes) -> None:
    with pytest.raises(RemoteProtocolError) as raised:
        Opener(KEY).open_untrusted(data)
    assert raised.value.reason in OPENED_OR_REFUSED


@given(st.binary(max_size=40), st.data())
def test_a_cut_envelope_is_refused(body: bytes, data: st.DataObject) -> None:
    envelope = sealer().seal(Kind.MSG, body)
    cut = data.draw(st.integers(0, len(envelope) - 1))
    with pytest.raises(RemoteProtocolError) as raised:
        Opener(KEY).open_untrusted(envelope[:cut])
    assert raised.value.reason in OPENED_OR_REFUSED


@given(st.binary(max_size=40), st.data())
def test_any_flipped_bit_is_refused(body: bytes, data: st.DataObject) -> None:
    envelope = bytearray(sealer().seal(Kind.KICK, body))
    bit = data.draw(st.integers(0, 8 * len(envelope) - 1))
    envelope[bit // 8] ^= 1 << (bit % 8)
    with pytest.raises(RemoteProtocolError) as raised:
        Opener(KEY).open_untrusted(bytes(envelope))
    assert raised.value.reason in OPENED_OR_REFUSED
