"""The relay's admission before a session, driven with explicit times."""

from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mcrelay.protocol.addresses import Address
from mcrelay.protocol.errors import DropReason
from mcrelay.protocol.secure.admission import (
    Admit,
    CookieSecrets,
    HandshakeGate,
    Reply,
    Silence,
    SourceIpLimiter,
    TimestampTable,
)
from mcrelay.protocol.secure.cookies import make_cookie
from mcrelay.protocol.secure.handshake import Initiator, tai64n
from mcrelay.protocol.secure.header import SIZES, DatagramType
from mcrelay.protocol.secure.keys import KeyPair

from .handshake_vectors import (
    CLIENT,
    CLIENT_ADDRESS,
    COOKIE,
    COOKIE_NONCE,
    COOKIE_SECRET,
    DATAGRAMS,
    INIT,
    INIT_WITH_MAC2,
    RELAY,
    RELAY_EPHEMERAL,
    initiator,
    responder,
)

OTHER_ADDRESS: Address = ("127.0.0.1", 40001)


def vector_random(size: int) -> bytes:
    """The vectors' cookie secret and COOKIE nonce, by the size asked for."""
    return {32: COOKIE_SECRET, 24: COOKIE_NONCE}[size]


def counting_random() -> Callable[[int], bytes]:
    draws = iter(range(1, 1000))
    return lambda size: bytes([next(draws)]) * size


def gate(**options: bool) -> HandshakeGate:
    return HandshakeGate(RELAY.public, random_bytes=vector_random, **options)


def init_at(cookie: bytes | None = None, wall_clock_ns: int = 1) -> bytes:
    return Initiator(
        CLIENT,
        RELAY.public,
        ephemeral_private=RELAY_EPHEMERAL,
        sender_index=1,
        timestamp=tai64n(wall_clock_ns),
        epoch=1,
        cookie=cookie,
    ).datagram


def test_not_under_load_an_init_is_admitted() -> None:
    assert gate().screen_init(INIT, CLIENT_ADDRESS, 0.0, waiting=0) == Admit()


def test_a_wrong_mac1_is_silence_and_not_load() -> None:
    screen = gate()
    wrong = INIT[:120] + bytes(16) + INIT[136:]
    for step in range(500):
        assert screen.screen_init(wrong, CLIENT_ADDRESS, step / 1000, 0) == Silence(
            DropReason.BAD_MAC1
        )
    assert not screen.under_load(0.5)


@pytest.mark.parametrize(
    ("datagram", "reason"),
    [
        (b"", DropReason.MALFORMED),
        (INIT[:151], DropReason.MALFORMED),
        (DATAGRAMS["KEY_QUERY"], DropReason.MALFORMED),
        (b"\x4d\x09\x00\x00", DropReason.UNKNOWN_TYPE),
    ],
)
def test_not_an_init_is_silence(datagram: bytes, reason: DropReason) -> None:
    assert gate().screen_init(datagram, CLIENT_ADDRESS, 0.0, 0) == Silence(reason)


def test_vector_cookie_reply_from_the_gate() -> None:
    """Under load, the vector INIT from the vector address earns the vector COOKIE, and
    the vector INIT with mac2 is admitted."""
    screen = gate(cookies_always=True)
    assert screen.screen_init(INIT, CLIENT_ADDRESS, 0.0, 0) == Reply(
        COOKIE, DropReason.COOKIE_REQUIRED
    )
    assert screen.screen_init(INIT_WITH_MAC2, CLIENT_ADDRESS, 0.0, 0) == Admit()
    elsewhere = screen.screen_init(INIT_WITH_MAC2, OTHER_ADDRESS, 0.0, 0)
    assert isinstance(elsewhere, Reply)
    assert elsewhere.reason is DropReason.COOKIE_REQUIRED
    assert elsewhere.datagram != COOKIE  # another address, another cookie


def test_a_client_gets_in_under_load_with_the_cookie_it_was_sent() -> None:
    screen = HandshakeGate(RELAY.public, cookies_always=True, random_bytes=counting_random())
    first = initiator()
    answer = screen.screen_init(first.datagram, OTHER_ADDRESS, 5.0, 0)
    assert isinstance(answer, Reply)
    assert answer.reason is DropReason.COOKIE_REQUIRED
    cookie = first.read_cookie_untrusted(answer.datagram)
    fresh = init_at(cookie, wall_clock_ns=2)
    assert screen.screen_init(fresh, OTHER_ADDRESS, 5.1, 0) == Admit()
    assert responder().read_init_untrusted(fresh).client_static == CLIENT.public


def test_more_than_200_inits_in_a_second_is_load_and_it_lingers_a_second() -> None:
    screen = gate()
    times = [step * 0.001 for step in range(201)]  # 0.000 ... 0.200
    verdicts = [screen.screen_init(INIT, CLIENT_ADDRESS, now, 0) for now in times]
    assert verdicts[:200] == [Admit()] * 200
    assert verdicts[200] == Reply(COOKIE, DropReason.COOKIE_REQUIRED)
    # At 1.1 s the trailing second holds 100 of them (+ this one): under load only
    # because it lingers for a second after 0.200.
    assert isinstance(screen.screen_init(INIT, CLIENT_ADDRESS, 1.1, 0), Reply)
    assert screen.under_load(1.199)
    assert not screen.under_load(1.2)
    assert screen.screen_init(INIT, CLIENT_ADDRESS, 1.3, 0) == Admit()


def test_more_than_64_waiting_is_load() -> None:
    screen = gate()
    assert screen.screen_init(INIT, CLIENT_ADDRESS, 0.0, waiting=64) == Admit()
    assert isinstance(screen.screen_init(INIT, CLIENT_ADDRESS, 0.0, waiting=65), Reply)
    assert isinstance(screen.screen_init(INIT, CLIENT_ADDRESS, 0.9, waiting=0), Reply)
    assert screen.screen_init(INIT, CLIENT_ADDRESS, 1.0, waiting=0) == Admit()


@pytest.mark.parametrize("position", range(152))
def test_under_load_an_init_with_any_byte_flipped_is_not_admitted(position: int) -> None:
    """Before mac2 a flip breaks mac1 (silence) or the type; in mac2, it earns a COOKIE."""
    tampered = bytearray(INIT_WITH_MAC2)
    tampered[position] ^= 0x01
    verdict = gate(cookies_always=True).screen_init(bytes(tampered), CLIENT_ADDRESS, 0.0, 0)
    if position < 4:
        assert isinstance(verdict, Silence)
    elif position < 136:
        assert verdict == Silence(DropReason.BAD_MAC1)
    else:
        assert isinstance(verdict, Reply)
        assert verdict.reason is DropReason.COOKIE_REQUIRED


def test_cookies_always_can_be_switched() -> None:
    screen = gate(cookies_always=True)
    assert isinstance(screen.screen_init(INIT, CLIENT_ADDRESS, 0.0, 0), Reply)
    screen.cookies_always = False
    assert screen.screen_init(INIT, CLIENT_ADDRESS, 0.0, 0) == Admit()


def test_under_load_a_valid_mac2_is_limited_per_ip() -> None:
    screen = gate(cookies_always=True)
    verdicts = [screen.screen_init(INIT_WITH_MAC2, CLIENT_ADDRESS, 10.0, 0) for _ in range(6)]
    assert verdicts == [Admit()] * 5 + [Silence(DropReason.RATE_LIMITED)]
    assert screen.screen_init(INIT_WITH_MAC2, CLIENT_ADDRESS, 10.049, 0) == Silence(
        DropReason.RATE_LIMITED
    )
    assert screen.screen_init(INIT_WITH_MAC2, CLIENT_ADDRESS, 10.05, 0) == Admit()
    other_ip: Address = ("127.0.0.2", 40000)
    with_mac2 = init_at(make_cookie(COOKIE_SECRET, other_ip))
    assert screen.screen_init(with_mac2, other_ip, 10.05, 0) == Admit()


def test_not_under_load_there_is_no_per_ip_limit() -> None:
    screen = gate()
    verdicts = [screen.screen_init(INIT, CLIENT_ADDRESS, step / 1000, 0) for step in range(150)]
    assert verdicts == [Admit()] * 150


def test_the_per_ip_table_forgets_full_buckets_and_is_capped() -> None:
    limiter = SourceIpLimiter(max_ips=3)
    assert all(limiter.allow(ip, 0.0) for ip in ("10.0.0.1", "10.0.0.2", "10.0.0.3"))
    assert len(limiter) == 3
    assert not limiter.allow("10.0.0.4", 0.1)
    assert limiter.allow("10.0.0.1", 0.1)
    assert limiter.allow("10.0.0.4", 0.25)  # 10.0.0.2 and .3 are full again: forgotten
    assert len(limiter) == 2


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 9), st.integers(0, 50)), max_size=200))
def test_a_bucket_never_allows_more_than_its_rate(draws: list[tuple[int, int]]) -> None:
    """Over any run, an IP gets at most burst + rate x elapsed admissions."""
    limiter = SourceIpLimiter(max_ips=4)
    now = 0.0
    allowed: dict[str, int] = {}
    for ip_number, step_ms in draws:
        now += step_ms / 1000
        ip = f"10.0.0.{ip_number}"
        if limiter.allow(ip, now):
            allowed[ip] = allowed.get(ip, 0) + 1
        assert len(limiter) <= 4
    assert all(count <= 5 + 20 * now + 1e-9 for count in allowed.values())


def test_cookie_secrets_turn_every_120_s_keeping_the_one_before() -> None:
    secrets = CookieSecrets(counting_random())
    with_mac2 = init_at(make_cookie(b"\x01" * 32, CLIENT_ADDRESS))
    assert secrets.mac2_valid(with_mac2, CLIENT_ADDRESS, 0.0)
    assert secrets.mac2_valid(with_mac2, CLIENT_ADDRESS, 119.9)
    assert secrets.mac2_valid(with_mac2, CLIENT_ADDRESS, 239.9)
    assert not secrets.mac2_valid(with_mac2, CLIENT_ADDRESS, 240.0)
    assert not secrets.mac2_valid(with_mac2, OTHER_ADDRESS, 0.0)


def test_after_a_quiet_spell_no_old_secret_is_kept() -> None:
    secrets = CookieSecrets(counting_random())
    first = secrets.cookie(CLIENT_ADDRESS, 0.0)
    assert secrets.cookie(CLIENT_ADDRESS, 130.0) != first
    with_first = init_at(first)
    assert secrets.mac2_valid(with_first, CLIENT_ADDRESS, 200.0)
    quiet = CookieSecrets(counting_random())
    assert quiet.cookie(CLIENT_ADDRESS, 0.0) == first
    assert not quiet.mac2_valid(with_first, CLIENT_ADDRESS, 500.0)


def test_a_replayed_init_is_refused() -> None:
    table = TimestampTable()
    received = responder().read_init_untrusted(INIT)
    assert table.advance(received.client_static, received.timestamp) is None
    replayed = responder().read_init_untrusted(INIT)
    assert table.advance(replayed.client_static, replayed.timestamp) is (DropReason.STALE_TIMESTAMP)
    assert table.advance(CLIENT.public, tai64n(1_700_000_000 * 10**9)) is (
        DropReason.STALE_TIMESTAMP
    )
    assert table.advance(CLIENT.public, tai64n(1_800_000_000_123_456_790)) is None


def test_the_timestamp_table_forgets_the_least_recently_used_unheld_key() -> None:
    held = {b"member"}
    table = TimestampTable(member_limit=2, unconfirmed_cap=1, held=held.__contains__)
    assert table.capacity == 3
    for key in (b"member", b"a", b"b"):
        assert table.advance(key, tai64n(1)) is None
    assert table.advance(b"a", tai64n(2)) is None  # b is now the least recently used
    assert table.advance(b"c", tai64n(1)) is None
    assert len(table) == 3
    assert table.advance(b"b", tai64n(1)) is None  # forgotten: accepted as new
    assert table.advance(b"member", tai64n(1)) is DropReason.STALE_TIMESTAMP


def test_a_table_full_of_held_keys_refuses_new_keys() -> None:
    table = TimestampTable(member_limit=1, unconfirmed_cap=1, held=lambda key: True)
    assert table.advance(b"a", tai64n(1)) is None
    assert table.advance(b"b", tai64n(1)) is None
    assert table.advance(b"c", tai64n(1)) is DropReason.REGISTRY_FULL
    assert table.advance(b"a", tai64n(2)) is None


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 7), st.integers(0, 5)), max_size=100))
def test_held_keys_are_never_forgotten(steps: list[tuple[int, int]]) -> None:
    held = {b"k0", b"k1"}
    table = TimestampTable(member_limit=2, unconfirmed_cap=1, held=held.__contains__)
    greatest: dict[bytes, int] = {}
    for key_number, time in steps:
        key = f"k{key_number}".encode()
        if table.advance(key, tai64n(time)) is None:
            greatest[key] = max(greatest.get(key, time), time)
        assert len(table) <= 3
    for key in held & set(greatest):
        assert table.advance(key, tai64n(greatest[key])) is DropReason.STALE_TIMESTAMP


def test_key_queries_are_answered_100_per_second_in_total() -> None:
    screen = gate()
    query, info = DATAGRAMS["KEY_QUERY"], DATAGRAMS["KEY_INFO"]
    answers = [screen.answer_key_query(query, 3.0 + step / 1000) for step in range(101)]
    assert answers[:100] == [Reply(info)] * 100
    assert answers[100] == Silence(DropReason.KEY_QUERY_LIMIT)
    assert screen.answer_key_query(query, 3.999) == Silence(DropReason.KEY_QUERY_LIMIT)
    assert screen.answer_key_query(query, 4.0) == Reply(info)


def test_a_bad_key_query_is_silence() -> None:
    assert gate().answer_key_query(INIT, 0.0) == Silence(DropReason.MALFORMED)


def test_every_answer_before_a_session_is_smaller_than_what_it_answers() -> None:
    screen = gate(cookies_always=True)
    cookie_reply = screen.screen_init(INIT, CLIENT_ADDRESS, 0.0, 0)
    key_info = screen.answer_key_query(DATAGRAMS["KEY_QUERY"], 0.0)
    response = (
        responder()
        .read_init_untrusted(INIT)
        .respond(ephemeral_private=RELAY_EPHEMERAL, sender_index=2, epoch=3)
    )
    assert isinstance(cookie_reply, Reply)
    assert isinstance(key_info, Reply)
    assert len(cookie_reply.datagram) == SIZES[DatagramType.COOKIE] == 64
    assert len(key_info.datagram) == SIZES[DatagramType.KEY_INFO] == 52
    assert len(response.datagram) == SIZES[DatagramType.RESPONSE] == 96
    assert len(cookie_reply.datagram) < len(INIT) == 152
    assert len(key_info.datagram) < len(DATAGRAMS["KEY_QUERY"]) == 96
    assert len(response.datagram) < len(INIT)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200), st.booleans())
def test_any_bytes_into_the_gate(datagram: bytes, always: bool) -> None:
    screen = gate(cookies_always=always)
    verdict = screen.screen_init(datagram, CLIENT_ADDRESS, 0.0, 0)
    assert isinstance(verdict, Silence)
    answer = screen.answer_key_query(datagram, 0.0)
    assert isinstance(answer, Silence) or len(answer.datagram) < len(datagram)


def test_an_other_client_key_is_admitted_and_read() -> None:
    other = KeyPair.generate()
    datagram = Initiator(
        other,
        RELAY.public,
        ephemeral_private=KeyPair.generate().private,
        sender_index=5,
        timestamp=tai64n(5),
        epoch=5,
    ).datagram
    assert gate().screen_init(datagram, OTHER_ADDRESS, 0.0, 0) == Admit()
    assert responder().read_init_untrusted(datagram).client_static == other.public
