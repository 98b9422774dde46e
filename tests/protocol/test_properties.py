"""Property tests: round trips, and that untrusted decoders fail only the documented way."""

import ipaddress
import random
from collections.abc import Callable

from cryptography.hazmat.primitives.asymmetric import rsa
from hypothesis import given, settings
from hypothesis import strategies as st

from mcrelay.protocol import legacy
from mcrelay.protocol.addresses import (
    Address,
    decode_address_untrusted,
    encode_address,
    format_address,
    parse_address,
)
from mcrelay.protocol.errors import DropReason, RemoteProtocolError
from mcrelay.protocol.legacy import crypto
from mcrelay.protocol.legacy.events import FragmentReceived
from mcrelay.protocol.legacy.fragments import (
    FRAGMENT_SIZE,
    MAX_FRAGMENTS,
    Fragment,
    decode_fragment_untrusted,
    encode_fragment,
    split_payload,
)
from mcrelay.protocol.legacy.tlv import Tlv, decode_tlvs_untrusted, encode_tlv, encode_tlvs
from mcrelay.protocol.reassembly import Complete, MessageKey, Pending, Reassembler, Rejected
from support import ANY_COUNT

FAST = settings(deadline=None, max_examples=200)
SLOW = settings(deadline=None, max_examples=50)  # anything that may run RSA

u16 = st.integers(0, 0xFFFF)
tlvs = st.builds(Tlv, u16, st.binary(max_size=300))
ports = st.integers(0, 0xFFFF)
ips = st.ip_addresses()
addresses = st.tuples(ips.map(str), ports)
msg_ids = st.binary(min_size=4, max_size=4)

# Datagrams that are often well framed, so decoders get past the framing into the values.
interesting_types = st.sampled_from([0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 0xFFFF])
interesting_values = st.one_of(
    st.binary(max_size=40),
    st.sampled_from([6, 7, 8, 18, 19]).flatmap(lambda n: st.binary(min_size=n, max_size=n)),
)
framed = st.lists(st.builds(encode_tlv, interesting_types, interesting_values), max_size=5).map(
    b"".join
)
datagrams = st.one_of(
    st.binary(max_size=200),
    framed,
    st.tuples(framed, st.integers(1, 5)).map(lambda t: t[0][: -t[1]]),  # cut short
)


# --- round trips ------------------------------------------------------------------------


@FAST
@given(st.lists(tlvs, min_size=1, max_size=8))
def test_tlv_round_trip(items: list[Tlv]) -> None:
    assert decode_tlvs_untrusted(encode_tlvs(items), ANY_COUNT) == items


@FAST
@given(ips, ports)
def test_address_round_trip(ip: ipaddress.IPv4Address | ipaddress.IPv6Address, port: int) -> None:
    address = (str(ip), port)
    wire = encode_address(address)
    assert len(wire) == (6 if ip.version == 4 else 18)
    assert decode_address_untrusted(wire) == address
    assert parse_address(format_address(address)) == address


@FAST
@given(st.one_of(st.binary(min_size=6, max_size=6), st.binary(min_size=18, max_size=18)))
def test_any_address_bytes_round_trip(wire: bytes) -> None:
    assert encode_address(decode_address_untrusted(wire)) == wire


@FAST
@given(msg_ids, u16, u16, st.binary(max_size=FRAGMENT_SIZE + 50))
def test_fragment_round_trip(msg_id: bytes, seq: int, total: int, piece: bytes) -> None:
    fragment = Fragment(msg_id, seq, total, piece)
    datagram = encode_fragment(fragment)
    assert decode_fragment_untrusted(datagram[4:]) == fragment
    assert legacy.decode_client_datagram_untrusted(datagram) == [FragmentReceived(fragment)]


@FAST
@given(
    st.integers(0, MAX_FRAGMENTS * FRAGMENT_SIZE),
    st.integers(0, 2**32),
    msg_ids,
    st.randoms(use_true_random=False),
)
def test_split_and_reassemble_in_any_order_with_duplicates(
    length: int, seed: int, msg_id: bytes, rnd: random.Random
) -> None:
    payload = random.Random(seed).randbytes(length)  # cheaper than drawing 45 KB
    fragments = split_payload(payload, msg_id)
    assert len(fragments) == max(1, -(-length // FRAGMENT_SIZE))
    order = list(range(len(fragments)))
    order += rnd.choices(order, k=rnd.randint(0, 5))
    rnd.shuffle(order)
    reassembler = Reassembler(timeout_s=5.0)
    source: Address = ("10.0.0.1", 1)
    seen: set[int] = set()
    completions = 0
    for seq in order:
        outcome = reassembler.add(source, fragments[seq], now=0.0)
        if len(seen) == len(fragments):
            assert outcome == Rejected(DropReason.LATE_FRAGMENT)
        elif seq in seen:
            assert outcome == Rejected(DropReason.DUPLICATE_FRAGMENT)
        elif len(seen) + 1 == len(fragments):
            assert outcome == Complete((source, msg_id), payload)
            completions += 1
        else:
            assert outcome == Pending((source, msg_id), 5.0, new=not seen)
        seen.add(seq)
        assert 0 <= reassembler.buffered_bytes <= reassembler.max_total_bytes
    assert completions == 1
    assert reassembler.in_flight == 0
    assert reassembler.buffered_bytes == 0


# --- untrusted input fails only with RemoteProtocolError -----------------------------


def reason_of(call: Callable[[], object]) -> DropReason | None:
    """``None`` if the call returns, the drop reason if it raises ``RemoteProtocolError``.

    Any other exception propagates, and fails the test.
    """
    try:
        call()
    except RemoteProtocolError as exc:
        return exc.reason
    return None


@FAST
@given(datagrams)
def test_tlv_decoder_on_any_bytes(data: bytes) -> None:
    reason = reason_of(lambda: decode_tlvs_untrusted(data, ANY_COUNT))
    assert reason in {None, DropReason.MALFORMED}
    if reason is None:
        assert encode_tlvs(decode_tlvs_untrusted(data, ANY_COUNT)) == data


@FAST
@given(datagrams)
def test_client_datagram_decoder_on_any_bytes(data: bytes) -> None:
    reason = reason_of(lambda: legacy.decode_client_datagram_untrusted(data))
    assert reason in {None, DropReason.MALFORMED}


def lone_fragments() -> st.SearchStrategy[bytes]:
    fragments = st.builds(Fragment, msg_ids, u16, u16, st.binary(max_size=FRAGMENT_SIZE))
    return fragments.map(encode_fragment)


@FAST
@given(st.one_of(datagrams, lone_fragments(), lone_fragments().map(lambda d: d + b"\0\x09\0\0")))
def test_a_lone_fragment_is_seen_without_decoding_exactly_when_decoding_finds_one(
    data: bytes,
) -> None:
    try:
        events = legacy.decode_client_datagram_untrusted(data)
    except RemoteProtocolError:
        events = []
    alone = [event.fragment.msg_id for event in events if isinstance(event, FragmentReceived)]
    lone = alone if len(events) == 1 else []
    assert legacy.lone_fragment_msg_id(data) == (lone[0] if lone else None)


@FAST
@given(datagrams)
def test_relay_datagram_decoder_on_any_bytes(data: bytes) -> None:
    reason = reason_of(lambda: legacy.decode_relay_datagram_untrusted(data))
    assert reason in {None, DropReason.MALFORMED}


@FAST
@given(st.binary(max_size=40))
def test_address_decoder_on_any_bytes(data: bytes) -> None:
    reason = reason_of(lambda: decode_address_untrusted(data))
    assert reason is (None if len(data) in (6, 18) else DropReason.MALFORMED)


@FAST
@given(st.binary(max_size=40))
def test_fragment_decoder_on_any_bytes(data: bytes) -> None:
    reason = reason_of(lambda: decode_fragment_untrusted(data))
    assert reason is (None if len(data) >= 8 else DropReason.MALFORMED)
    if reason is None:
        assert encode_fragment(decode_fragment_untrusted(data))[4:] == data


address_like_text = st.one_of(
    st.text(max_size=60),
    st.text(alphabet="0123456789abcdefABCDEF.:[]%-+ \u0665\u00b2", max_size=60),
    st.tuples(addresses, st.text(max_size=3)).map(lambda t: format_address(t[0]) + t[1]),
)


@FAST
@given(address_like_text)
def test_parse_address_on_any_text(text: str) -> None:
    try:
        address = parse_address(text)
    except ValueError:
        return
    assert parse_address(format_address(address)) == address


@FAST
@given(
    st.one_of(
        st.binary(max_size=600),
        st.binary(max_size=300).map(
            lambda b: b"-----BEGIN PUBLIC KEY-----\n" + b + b"\n-----END PUBLIC KEY-----\n"
        ),
    )
)
def test_public_key_loader_on_any_bytes(data: bytes) -> None:
    assert reason_of(lambda: crypto.load_public_key_untrusted(data)) in {None, DropReason.BAD_KEY}
    assert reason_of(lambda: crypto.wire_public_key_untrusted(data)) in {None, DropReason.BAD_KEY}


# --- the reassembler under random traffic --------------------------------------------

SOURCES: list[Address] = [("10.0.0.1", 1), ("10.0.0.2", 2), ("10.0.0.3", 3)]
TIMEOUT = 5.0
operations = st.lists(
    st.tuples(
        st.integers(0, 9),  # 0: expire, else: add
        st.sampled_from(SOURCES),
        st.sampled_from([b"aaaa", b"bbbb", b"cccc"]),
        st.integers(0, 5),  # seq
        st.integers(0, 6),  # total (max_fragments is 5)
        st.sampled_from([b"", b"x", b"y" * 100, b"z" * 300]),
        st.sampled_from([0.0, 0.0, 0.5, 1.0, 2.5, 5.0, 6.0]),  # time step
    ),
    max_size=60,
)


TIMED_OUT, EVICTED = DropReason.REASSEMBLY_TIMEOUT, DropReason.REASSEMBLY_EVICTED


@FAST
@given(operations)
def test_reassembler_under_random_traffic(
    ops: list[tuple[int, Address, bytes, int, int, bytes, float]],
) -> None:
    reassembler = Reassembler(
        timeout_s=TIMEOUT, max_fragments=5, max_messages_per_source=2, max_total_bytes=3 * 4700
    )
    now = 0.0
    open_deadline: dict[MessageKey, float] = {}  # deadline of the pending message of a key
    completed_until: dict[MessageKey, float] = {}  # deadline of the last completion of a key
    for kind, source, msg_id, seq, total, piece, step in ops:
        now += step
        key = (source, msg_id)
        if kind == 0:
            for expired in reassembler.expire(now):
                assert open_deadline.pop(expired) <= now
            assert all(deadline > now for deadline in open_deadline.values())
        else:
            holdings = reassembler.bytes_per_source()
            outcome = reassembler.add(source, Fragment(msg_id, seq, total, piece), now)
            timed_out = [k for k, reason in outcome.dropped if reason is TIMED_OUT]
            evicted = [k for k, reason in outcome.dropped if reason is EVICTED]
            assert len(timed_out) + len(evicted) == len(outcome.dropped)
            for gone in timed_out:
                # What passed its deadline went first, the fragment's own message too.
                assert open_deadline.pop(gone) <= now
            assert all(deadline > now for deadline in open_deadline.values())
            if evicted and not timed_out:
                # Room is made at the expense of the heaviest holder first.
                assert holdings[evicted[0][0]] == max(holdings.values())
            for gone in evicted:
                # Never the fragment's own message; what was evicted was pending and ends now.
                assert gone != key
                del open_deadline[gone]
            if isinstance(outcome, Pending):
                assert outcome.key == key
                if outcome.new:
                    assert outcome.deadline == now + TIMEOUT
                    open_deadline[key] = outcome.deadline
                else:
                    assert outcome.deadline == open_deadline[key]
            elif isinstance(outcome, Complete):
                assert outcome.key == key
                assert now >= completed_until.get(key, now), "completed twice before the deadline"
                completed_until[key] = open_deadline.pop(key, now + TIMEOUT)
            elif outcome.ended:
                del open_deadline[key]
        assert 0 <= reassembler.buffered_bytes <= reassembler.max_total_bytes
        assert reassembler.in_flight == len(open_deadline)
    reassembler.expire(now + TIMEOUT)
    assert reassembler.in_flight == 0
    assert reassembler.buffered_bytes == 0


# --- RSA: few examples --------------------------------------------------------------

ciphertext_like = st.binary(min_size=256, max_size=256)
payloads = st.one_of(
    st.binary(max_size=600),
    st.lists(
        st.builds(
            encode_tlv,
            st.sampled_from([3, 3, 3, 6]),
            st.one_of(ciphertext_like, st.binary(max_size=300)),
        ),
        min_size=1,
        max_size=3,
    ).map(b"".join),
)


@SLOW
@given(payloads)
def test_payload_decryption_on_any_bytes(relay_key: rsa.RSAPrivateKey, payload: bytes) -> None:
    reason = reason_of(lambda: legacy.decrypt_payload_untrusted(relay_key, payload))
    assert reason in {None, DropReason.BAD_PAYLOAD, DropReason.DECRYPT_FAILED}


@SLOW
@given(
    st.one_of(
        st.binary(max_size=600), st.lists(ciphertext_like, min_size=1, max_size=2).map(b"".join)
    )
)
def test_concatenated_decryption_on_any_bytes(relay_key: rsa.RSAPrivateKey, value: bytes) -> None:
    reason = reason_of(lambda: crypto.decrypt_concatenated_untrusted(relay_key, value))
    assert reason in {None, DropReason.DECRYPT_FAILED}
