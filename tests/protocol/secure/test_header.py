"""The secure header: the vectors' datagrams are typed by it, and bad headers refused."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mcrelay.protocol.errors import DropReason, RemoteProtocolError
from mcrelay.protocol.secure.header import (
    MIN_DATA_BYTES,
    SIZES,
    DatagramType,
    datagram_type_untrusted,
)

from .conftest import SECURE_VECTORS


@pytest.mark.parametrize("name", SECURE_VECTORS["datagrams"])
def test_vector_datagrams_have_their_types_and_sizes(name: str) -> None:
    datagram = bytes.fromhex(SECURE_VECTORS["datagrams"][name])
    kind = datagram_type_untrusted(datagram)
    assert name.startswith(kind.name)
    assert len(datagram) == SECURE_VECTORS["sizes"][kind.name]


def test_vector_data_datagrams_are_data() -> None:
    for vector in SECURE_VECTORS["data"]:
        assert datagram_type_untrusted(bytes.fromhex(vector["datagram"])) is DatagramType.DATA
    assert SECURE_VECTORS["sizes"]["DATA keep-alive"] == MIN_DATA_BYTES


@pytest.mark.parametrize(
    ("datagram", "reason"),
    [
        pytest.param(b"\x4d\x01\x00", DropReason.MALFORMED, id="cut short"),
        pytest.param(b"\x4d\x05\x01\x00" + bytes(92), DropReason.MALFORMED, id="reserved set"),
        pytest.param(b"\x4d\x07\x00\x00" + bytes(92), DropReason.UNKNOWN_TYPE, id="type 7"),
        pytest.param(b"\x4d\x00\x00\x00", DropReason.UNKNOWN_TYPE, id="type 0"),
        pytest.param(b"\x4d\x01\x00\x00" + bytes(147), DropReason.MALFORMED, id="INIT of 151"),
        pytest.param(b"\x4d\x05\x00\x00" + bytes(93), DropReason.MALFORMED, id="KEY_QUERY of 97"),
        pytest.param(b"\x4d\x04\x00\x00" + bytes(27), DropReason.MALFORMED, id="DATA of 31"),
        pytest.param(b"\x00\x04\x00\x00" + bytes(28), DropReason.MALFORMED, id="not secure"),
    ],
)
def test_bad_headers_are_refused_with_a_reason(datagram: bytes, reason: DropReason) -> None:
    with pytest.raises(RemoteProtocolError) as raised:
        datagram_type_untrusted(datagram)
    assert raised.value.reason is reason


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=200))
def test_any_bytes_are_typed_or_refused(datagram: bytes) -> None:
    try:
        kind = datagram_type_untrusted(datagram)
    except RemoteProtocolError:
        return
    if kind is DatagramType.DATA:
        assert len(datagram) >= MIN_DATA_BYTES
    else:
        assert len(datagram) == SIZES[kind]
