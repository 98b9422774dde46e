"""Bans by address and by host, and the parsers of ban targets and lengths."""

import ipaddress
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mcrelay.core.bans import MAX_BAN_S, Ban, BanList, parse_ban_seconds, parse_ban_target
from mcrelay.protocol.addresses import format_address
from mcrelay.protocol.federation.bodies import MAX_KICK_BAN_S


def test_a_host_ban_covers_every_port_and_an_address_ban_one() -> None:
    bans = BanList()
    bans.ban("10.0.0.1", 60, now=0.0)
    bans.ban(("10.0.0.2", 4000), 60, now=0.0)
    assert bans.is_banned(("10.0.0.1", 1), 1.0)
    assert bans.is_banned(("10.0.0.1", 65535), 1.0)
    assert bans.is_banned(("10.0.0.2", 4000), 1.0)
    assert not bans.is_banned(("10.0.0.2", 4001), 1.0)
    assert not bans.is_banned(("10.0.0.1", 1), 60.0)
    assert [ban.scope for ban in bans.active(1.0)] == ["address"]


def test_a_ban_lasts_a_year_at_most_whoever_asks() -> None:
    """A federated KICK of 1e300 s made the ban's date overflow, and /v1/bans answer
    500 for good (found by review)."""
    bans = BanList()
    ban = bans.ban("10.0.0.1", 1e300, now=0.0)
    assert ban.until == MAX_BAN_S
    assert datetime.fromtimestamp(ban.until_wall, UTC).year < 9999
    assert MAX_BAN_S == MAX_KICK_BAN_S


@pytest.mark.parametrize(
    ("text", "seconds"), [("600", 600.0), ("0.5", 0.5), ("31536000", MAX_BAN_S), ("007", 7.0)]
)
def test_ban_lengths_are_plain_decimal_seconds(text: str, seconds: float) -> None:
    assert parse_ban_seconds(text) == seconds


@given(st.text(max_size=20))
def test_a_ban_length_is_plain_ascii_decimal_or_refused(text: str) -> None:
    try:
        seconds = parse_ban_seconds(text)
    except ValueError as exc:
        message = str(exc)
    else:
        message = ""
    if message:
        assert repr(text) in message
        return
    assert text.isascii()
    assert set(text) <= set("0123456789.")
    assert 0 < seconds <= MAX_BAN_S


@given(st.ip_addresses(), st.integers(0, 65535), st.booleans())
def test_a_ban_target_round_trips_through_its_id(
    ip: ipaddress.IPv4Address | ipaddress.IPv6Address, port: int, host: bool
) -> None:
    target = str(ip) if host else (str(ip), port)
    ban = Ban(target, 1.0, 1.0)
    assert ban.scope == ("host" if host else "address")
    assert parse_ban_target(ban.id) == target
    if not host:
        assert ban.id == format_address((str(ip), port))


@given(st.text(max_size=50))
def test_any_text_is_a_ban_target_or_a_value_error(text: str) -> None:
    try:
        target = parse_ban_target(text)
    except ValueError:
        return
    assert isinstance(target, str) or isinstance(target[1], int)
