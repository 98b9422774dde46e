"""Bans by address and by host, the parsers of ban targets and lengths, and the bans
file's text."""

import contextlib
import ipaddress
import re
import time
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mcrelay.core.bans import (
    BANS_FILE_HEADER,
    MAX_BAN_S,
    MAX_BANS,
    MAX_BANS_FILE_BYTES,
    MAX_WALL_TIME,
    Ban,
    BanList,
    BanTarget,
    SavedBan,
    TooManyBans,
    parse_ban_seconds,
    parse_ban_target,
    parse_bans,
    serialize_bans,
)
from mcrelay.protocol.addresses import format_address
from mcrelay.protocol.federation.bodies import MAX_KICK_BAN_S
from mcrelay.protocol.secure.keys import client_id


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
    assert datetime.fromtimestamp(ban.until_wall(0.0, time.time()), UTC).year < 9999
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


@given(st.ip_addresses(v=4), st.integers(0, 65535), st.booleans())
def test_a_ban_target_round_trips_through_its_id(
    ip: ipaddress.IPv4Address, port: int, host: bool
) -> None:
    target = str(ip) if host else (str(ip), port)
    ban = Ban(target, 1.0, 1.0)
    assert ban.scope == ("host" if host else "address")
    assert parse_ban_target(ban.id) == target
    if not host:
        assert ban.id == format_address((str(ip), port))


@given(st.ip_addresses(v=4), st.integers(0, 65535))
def test_a_ban_on_an_ipv4_mapped_address_is_on_the_ipv4_address(
    ip: ipaddress.IPv4Address, port: int
) -> None:
    """The relay is IPv4 only: a ban on ::ffff:10.0.0.7 was kept as such, and matched
    nothing (found by review)."""
    assert parse_ban_target(f"::ffff:{ip}") == str(ip)
    assert parse_ban_target(f"[::ffff:{ip}]") == str(ip)
    assert parse_ban_target(f"[::ffff:{ip}]:{port}") == (str(ip), port)


def unmapped(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    return isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is None


@given(st.ip_addresses(v=6).filter(unmapped), st.integers(0, 65535))
def test_a_ban_on_another_ipv6_address_is_refused(ip: ipaddress.IPv6Address, port: int) -> None:
    for text in (str(ip), f"[{ip}]:{port}"):
        with pytest.raises(ValueError, match="the relay serves IPv4 only"):
            parse_ban_target(text)


@given(st.text(max_size=50))
def test_any_text_is_a_ban_target_or_a_value_error(text: str) -> None:
    try:
        target = parse_ban_target(text)
    except ValueError:
        return
    assert isinstance(target, str) or isinstance(target[1], int)


keys_ids = st.binary(min_size=32, max_size=32).map(client_id)
ban_targets = st.one_of(
    st.ip_addresses(v=4).map(str),
    st.tuples(st.ip_addresses(v=4).map(str), st.integers(0, 65535)),
    keys_ids,
)


@given(
    st.dictionaries(
        ban_targets,
        st.tuples(st.floats(0, MAX_WALL_TIME), st.floats(0.000001, MAX_BAN_S)),
        max_size=20,
    )
)
def test_the_bans_file_gives_back_each_ban_its_end_and_length(
    ends: dict[BanTarget, tuple[float, float]],
) -> None:
    bans = [Ban(target, until, seconds) for target, (until, seconds) in ends.items()]
    saved = parse_bans(serialize_bans(bans, 0.0, 0.0))
    assert saved == [
        SavedBan(target, float(f"{until:.6f}"), float(f"{seconds:.6f}"))
        for target, (until, seconds) in ends.items()
    ]


@given(st.binary(max_size=200))
def test_any_bytes_are_bans_or_a_value_error(data: bytes) -> None:
    with contextlib.suppress(ValueError):
        parse_bans(data)


@given(
    st.lists(
        st.text(st.characters(blacklist_characters="\n", codec="utf-8"), max_size=60),
        max_size=5,
    )
)
def test_any_lines_after_the_header_are_bans_or_a_value_error_naming_one(
    lines: list[str],
) -> None:
    text = "".join(f"{line}\n" for line in [BANS_FILE_HEADER, *lines])
    try:
        saved = parse_bans(text.encode("utf-8"))
    except ValueError as exc:
        message = str(exc)
    else:
        message = ""
    if message:
        assert message.startswith(("line ", "not a bans file"))
        return
    assert len(saved) == len(lines)


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "not a bans file"),
        ("10.0.0.1 100 1\n", "not a bans file"),
        ("mcrelay-bans 2\n", "written by a newer release of mcrelay (its first line is 'mc"),
        ("mcrelay-bans 1.5\n", "not a bans file"),
        ("mcrelay-bans 0\n", "not a bans file"),
        # Said as the header (found by review).
        (f"{BANS_FILE_HEADER}\n10.0.0.1 100 1", "line 2: cut short, with no end of line"),
        (f"{BANS_FILE_HEADER}\n10.0.0.1 100\n", "line 2: not an id, an end and a length"),
        (f"{BANS_FILE_HEADER}\n10.0.0.1 1e9 1\n", "line 2: '1e9' is not a Unix time"),
        (f"{BANS_FILE_HEADER}\n10.0.0.1 999999999999.5 1\n", "line 2: '999999999999.5' is past"),
        (f"{BANS_FILE_HEADER}\n10.0.0.1 100 0\n", "line 2: '0' is not a ban's length"),
        (f"{BANS_FILE_HEADER}\n10.0.0.1 100 99999999\n", "line 2: '99999999' is not a ban's"),
        (f"{BANS_FILE_HEADER}\nnobody 100 1\n", "line 2: 'nobody' is no ban's id"),
        (f"{BANS_FILE_HEADER}\nfe80::1%eth0 100 1\n", "line 2: 'fe80::1%eth0': a ban names no"),
        (f"{BANS_FILE_HEADER}\n10.0.0.1 100 1\n10.0.0.1 200 1\n", "line 3: a second ban on 10"),
        (f"{BANS_FILE_HEADER}\n10.0.0.1 100 1\n\n", "line 3: not an id, an end and a length"),
        (f"{BANS_FILE_HEADER}\n10.0.0.é 100 1\n", "not ASCII"),
    ],
)
def test_a_bans_file_that_is_not_one_is_refused_naming_the_line(text: str, reason: str) -> None:
    with pytest.raises(ValueError, match=re.escape(reason)):
        parse_bans(text.encode("utf-8"))


def test_a_bans_file_holds_as_many_bans_as_the_list_and_no_more() -> None:
    bans = [
        Ban((str(ipaddress.IPv4Address(n)), 65535), MAX_WALL_TIME, MAX_BAN_S)
        for n in range(MAX_BANS)
    ]
    data = serialize_bans(bans, 0.0, 0.0)
    assert len(parse_bans(data)) == MAX_BANS
    with pytest.raises(ValueError, match=f"more than {MAX_BANS} bans"):
        parse_bans(data + b"10.0.0.1 100 1\n")
    # A line that keeps no more (one folded onto a ban there, an IPv6 one dropped) was
    # counted as one more, and the whole file refused (found by review).
    extra = b"[::ffff:0.0.0.1]:65535 100.000000 1.000000\n[::1]:5007 100.000000 1.000000\n"
    assert len(parse_bans(data + extra)) == MAX_BANS


def test_a_file_of_the_longest_lines_an_earlier_version_wrote_is_read() -> None:
    """Its IPv6 bans never matched (the relay is IPv4 only): they are dropped, and the
    file is no reason not to start."""
    bans = [
        Ban((str(ipaddress.IPv6Address(n << 96)), 65535), MAX_WALL_TIME, MAX_BAN_S)
        for n in range(MAX_BANS)
    ]
    data = serialize_bans(bans, 0.0, 0.0)
    assert len(data) <= MAX_BANS_FILE_BYTES
    kept = b"10.0.0.1 100.000000 1.000000\n::ffff:10.0.0.1 100.000000 1.000000\n"
    assert parse_bans(data) == []
    assert parse_bans(data[: len(BANS_FILE_HEADER) + 1] + kept) == [SavedBan("10.0.0.1", 100, 1)]


def test_a_ban_on_an_ipv4_mapped_address_in_the_file_is_on_the_ipv4_one() -> None:
    """The API takes ``::ffff:10.0.0.7`` as 10.0.0.7; a file's line of it was dropped in
    silence (found by review). Folded onto a ban of the same target, the later end holds;
    the same target written twice is still an error."""
    data = (
        f"{BANS_FILE_HEADER}\n"
        "::ffff:10.0.0.7 100.000000 1.000000\n"
        "[::ffff:10.0.0.8]:5007 100.000000 1.000000\n"
        "10.0.0.9 100.000000 1.000000\n"
        "::ffff:10.0.0.9 200.000000 2.000000\n"
        "[::1]:5007 100.000000 1.000000\n"
    ).encode("ascii")
    assert parse_bans(data) == [
        SavedBan("10.0.0.7", 100, 1),
        SavedBan(("10.0.0.8", 5007), 100, 1),
        SavedBan("10.0.0.9", 200, 2),
    ]
    with pytest.raises(ValueError, match=r"line 3: a second ban on ::ffff:10\.0\.0\.7"):
        parse_bans(data[: data.index(b"[")] + b"::ffff:10.0.0.7 100.000000 1.000000\n")


def test_restored_bans_keep_their_end_and_those_that_ended_are_dropped() -> None:
    bans = BanList()
    saved = [SavedBan("10.0.0.1", 1_000.0 + 600, 900), SavedBan(("10.0.0.2", 1), 1_000.0, 60)]
    assert bans.restore(saved, now=50.0, wall_now=1_000.0) == 1
    (ban,) = bans.active(50.0)
    assert (ban.target, ban.until, ban.seconds) == ("10.0.0.1", 650.0, 900)
    assert ban.until_wall(50.0, 1_000.0) == 1_600.0


def test_a_ban_is_written_with_its_end_on_the_wall_clock_of_the_write() -> None:
    """Its Unix end was kept from when it began (or was restored): once a clock behind
    was set right, the file got an end already past, and the next restart dropped a
    ban with a day left (found by review)."""
    bans = BanList()
    behind = 1_000.0 - 2 * 86_400
    bans.restore([SavedBan("10.9.9.1", 1_000.0 + 86_400, 86_400)], now=0.0, wall_now=behind)
    bans.ban("10.9.9.3", 600.0, now=0.0)
    data = serialize_bans(bans.active(3.0), now=3.0, wall_now=1_003.0)  # the clock set right
    later = BanList()
    assert later.restore(parse_bans(data), now=0.0, wall_now=1_010.0) == 2
    assert {ban.id: ban.until for ban in later.active(0.0)} == {
        "10.9.9.1": 86_400 - 10,
        "10.9.9.3": 600 - 10,
    }


def test_a_wall_clock_behind_at_the_start_stretches_no_ban() -> None:
    """A host booting 30 days behind (before its time is set) made a ban of 600 s last
    30 days from then, a monotonic deadline nothing shortened (found by review)."""
    bans = BanList()
    behind = 1_000.0 - 30 * 86_400
    bans.restore([SavedBan("10.0.0.3", 1_000.0 + 600, 600)], now=50.0, wall_now=behind)
    (ban,) = bans.active(50.0)
    assert ban.until == 50.0 + 600


def test_the_list_says_when_its_bans_change_and_not_when_one_ends() -> None:
    changes: list[int] = []
    bans = BanList(on_change=lambda: changes.append(len(bans)))
    bans.ban("10.0.0.1", 10, now=0.0)
    bans.ban("10.0.0.1", 20, now=0.0)  # replaced
    bans.ban(("10.0.0.2", 1), 5, now=0.0)
    assert changes == [1, 1, 2]
    assert [ban.id for ban in bans.active(6.0)] == ["10.0.0.1"]  # the other ended
    assert bans.lift(("10.0.0.2", 1), 6.0) is None  # it ended: nothing to say
    assert changes == [1, 1, 2]
    assert bans.lift("10.0.0.1", 6.0) is not None
    assert changes == [1, 1, 2, 0]
    bans.restore([SavedBan("10.0.0.3", 100.0, 100.0)], now=0.0, wall_now=0.0)
    assert changes == [1, 1, 2, 0]  # what the file already holds


def test_a_full_list_refuses_a_new_ban_and_takes_back_room_from_ended_ones() -> None:
    bans = BanList()
    for n in range(MAX_BANS - 1):
        bans.ban((f"10.0.{n // 256}.{n % 256}", 1), 10 if n else 1, now=0.0)
    with pytest.raises(TooManyBans):
        bans.check_room(["10.1.0.1", "10.1.0.2"], now=0.0)  # both or neither
    bans.ban("10.1.0.1", 10, now=0.0)
    bans.ban("10.1.0.1", 20, now=0.0)  # a ban replaced takes no room
    with pytest.raises(TooManyBans, match="lift some first"):
        bans.ban("10.1.0.2", 10, now=0.0)
    bans.ban("10.1.0.2", 10, now=2.0)  # the first one ended
    assert len(bans) == MAX_BANS
