"""Addresses: the 6- or 18-byte wire form (types 10, 11, 12) and the ``ip:port`` text form."""

import pytest

from mcrelay.protocol.addresses import (
    RELAY_ITSELF,
    Address,
    decode_address_untrusted,
    encode_address,
    format_address,
    parse_address,
)
from mcrelay.protocol.errors import DropReason, LocalProtocolError, RemoteProtocolError


@pytest.mark.parametrize(
    ("address", "wire"),
    [
        (("127.0.0.1", 40001), "7f0000019c41"),
        (("10.1.2.3", 5007), "0a010203138f"),
        (("255.255.255.255", 65535), "ffffffffffff"),
        (RELAY_ITSELF, "000000000000"),
        (("::1", 6000), "00000000000000000000000000000001" + "1770"),
        (("2001:db8::42", 0), "20010db8000000000000000000000042" + "0000"),
        (("::", 1), "00" * 16 + "0001"),
    ],
)
def test_wire_form_round_trips(address: Address, wire: str) -> None:
    assert encode_address(address) == bytes.fromhex(wire)
    assert decode_address_untrusted(bytes.fromhex(wire)) == address


def test_relay_itself_is_zero_address_port_zero() -> None:
    assert RELAY_ITSELF == ("0.0.0.0", 0)
    assert decode_address_untrusted(b"\x00" * 6) == RELAY_ITSELF


def test_ipv6_comes_back_in_compressed_form() -> None:
    wire = encode_address(("2001:0db8:0000:0000:0000:0000:0000:0001", 80))
    assert len(wire) == 18
    assert decode_address_untrusted(wire) == ("2001:db8::1", 80)


@pytest.mark.parametrize("length", [n for n in range(21) if n not in (6, 18)])
def test_other_lengths_are_malformed(length: int) -> None:
    with pytest.raises(RemoteProtocolError) as info:
        decode_address_untrusted(b"\x01" * length)
    assert info.value.reason is DropReason.MALFORMED


@pytest.mark.parametrize(
    "address",
    [("1.2.3.4", -1), ("1.2.3.4", 65536), ("x", 5), ("", 5), ("1.2.3.4.5", 5), ("::1::", 5)],
)
def test_encoding_a_bad_address_is_a_local_error(address: Address) -> None:
    with pytest.raises(LocalProtocolError):
        encode_address(address)


@pytest.mark.parametrize(
    ("address", "text"),
    [
        (("1.2.3.4", 5), "1.2.3.4:5"),
        (RELAY_ITSELF, "0.0.0.0:0"),
        (("10.1.2.3", 65535), "10.1.2.3:65535"),
        (("::1", 5), "[::1]:5"),
        (("2001:db8::1", 5007), "[2001:db8::1]:5007"),
    ],
)
def test_text_form_round_trips(address: Address, text: str) -> None:
    assert format_address(address) == text
    assert parse_address(text) == address


def test_parse_normalises_the_ip() -> None:
    assert parse_address("[2001:0db8::0001]:80") == ("2001:db8::1", 80)


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("x", "not ip:port"),
        ("", "not ip:port"),
        ("1.2.3.4", "not ip:port"),
        (":5", "not ip:port"),
        ("1.2.3.4:70000", "port"),
        ("1.2.3.4:65536", "port"),
        ("1.2.3.4:", "port"),
        ("1.2.3.4:-1", "port"),
        ("1.2.3.4:+5", "port"),
        ("1.2.3.4: 5", "port"),
        ("1.2.3.4:5x", "port"),
        ("1.2.3.4:017301", r"a port has 5 digits at most, not 6 \(write 17301\)"),
        ("1.2.3.4:000000", r"5 digits at most, not 6 \(write 0\)"),
        ("1.2.3.4:0070000", "port must be 0 to 65535"),
        ("::1:5", r"\[addr\]:port"),
        ("1.2.3.4:5:6", r"\[addr\]:port"),
        ("[::1]", r"\[addr\]:port"),
        ("999.1.1.1:5", "not an IP address"),
        ("localhost:5", "not an IP address"),
        ("[]:5", "not an IP address"),
        ("[1.2.3.4:5", "not an IP address"),
    ],
)
def test_parse_refuses_junk_with_a_readable_reason(text: str, says: str) -> None:
    with pytest.raises(ValueError, match=says):
        parse_address(text)


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("1.2.3.4:\u0665", id="arabic-indic five"),
        pytest.param("1.2.3.4:\u00b2", id="superscript two"),
        pytest.param("1.2.3.4:" + "9" * 5000, id="5000 digits"),
    ],
)
def test_parse_refuses_non_ascii_or_huge_ports(text: str) -> None:
    with pytest.raises(ValueError, match="port must be 0 to 65535"):
        parse_address(text)
