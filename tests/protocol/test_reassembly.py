"""Reassembler rules. Time is always passed in as ``now``; there is no clock here."""

import itertools

import pytest

from mcrelay.protocol.addresses import Address
from mcrelay.protocol.errors import DropReason
from mcrelay.protocol.legacy.fragments import MAX_FRAGMENTS, Fragment
from mcrelay.protocol.reassembly import (
    FRAGMENT_OVERHEAD_BYTES,
    MESSAGE_OVERHEAD_BYTES,
    Complete,
    MessageKey,
    Pending,
    Reassembler,
    Rejected,
)

SRC: Address = ("10.0.0.1", 5000)
OTHER: Address = ("10.0.0.2", 5000)
MSG = b"msg1"
KEY = (SRC, MSG)
TIMEOUT = 5.0

INVALID = Rejected(DropReason.INVALID_FRAGMENT)
ENDED = Rejected(DropReason.INVALID_FRAGMENT, ended=True)
DUPLICATE = Rejected(DropReason.DUPLICATE_FRAGMENT)
LATE = Rejected(DropReason.LATE_FRAGMENT)
SOURCE_LIMIT = Rejected(DropReason.SOURCE_LIMIT)
BUFFER_LIMIT = Rejected(DropReason.BUFFER_LIMIT)


def piece(seq: int, size: int = 10) -> bytes:
    return bytes([seq % 256]) * size


def frag(seq: int, total: int, data: bytes | None = None, msg_id: bytes = MSG) -> Fragment:
    return Fragment(msg_id, seq, total, piece(seq) if data is None else data)


def payload(total: int, size: int = 10) -> bytes:
    return b"".join(piece(seq, size) for seq in range(total))


def make(
    *,
    max_fragments: int = MAX_FRAGMENTS,
    max_messages_per_source: int = 8,
    max_total_bytes: int = 4 * 1024 * 1024,
) -> Reassembler:
    return Reassembler(
        timeout_s=TIMEOUT,
        max_fragments=max_fragments,
        max_messages_per_source=max_messages_per_source,
        max_total_bytes=max_total_bytes,
    )


def test_defaults_match_the_spec() -> None:
    r = Reassembler(timeout_s=TIMEOUT)
    assert r.max_fragments == 176
    assert r.max_messages_per_source == 8
    assert r.max_total_bytes == 4 * 1024 * 1024
    assert r.in_flight == 0
    assert r.buffered_bytes == 0


@pytest.mark.parametrize("order", list(itertools.permutations(range(3))))
def test_completes_in_any_order(order: tuple[int, ...]) -> None:
    r = make()
    first, second, third = (r.add(SRC, frag(seq, 3), now=1.0 + i) for i, seq in enumerate(order))
    assert first == Pending(KEY, deadline=6.0, new=True)
    assert second == Pending(KEY, deadline=6.0, new=False)
    assert third == Complete(KEY, payload(3))
    assert r.in_flight == 0
    assert r.buffered_bytes == 0


def test_pieces_are_joined_in_seq_order_whatever_their_sizes() -> None:
    r = make()
    r.add(SRC, frag(2, 3, b"!"), 0.0)
    r.add(SRC, frag(0, 3, b"hello"), 0.0)
    assert r.add(SRC, frag(1, 3, b", world"), 0.0) == Complete(KEY, b"hello, world!")


def test_single_fragment_message_completes_at_once() -> None:
    r = make()
    assert r.add(SRC, frag(0, 1, b"solo"), 2.0) == Complete(KEY, b"solo")
    assert r.in_flight == 0
    assert r.buffered_bytes == 0
    assert r.add(SRC, frag(0, 1, b"solo"), 6.9) == LATE
    assert r.expire(7.1) == []
    assert r.add(SRC, frag(0, 1, b"solo"), 7.1) == Complete(KEY, b"solo")


def test_largest_total_is_accepted() -> None:
    r = make()
    assert r.add(SRC, frag(175, 176), 0.0) == Pending(KEY, TIMEOUT, new=True)


@pytest.mark.parametrize(
    ("seq", "total"),
    [
        pytest.param(3, 3, id="seq == total"),
        pytest.param(9, 3, id="seq > total"),
        pytest.param(0, 0, id="total 0"),
        pytest.param(0, 177, id="total 177"),
        pytest.param(0, 0xFFFF, id="total 65535"),
    ],
)
def test_an_invalid_first_fragment_invalidates_its_key_until_its_deadline(
    seq: int, total: int
) -> None:
    """The page: it "invalidates that message"; a valid message under the same key right
    after was relayed (conformance review)."""
    r = make()
    assert r.add(SRC, frag(seq, total), 1.0) == INVALID
    assert r.in_flight == 0
    assert r.buffered_bytes == 0
    assert r.add(SRC, frag(0, 1), 1.1) == LATE
    assert r.add(SRC, frag(0, 2), 5.99) == LATE
    assert r.add(SRC, frag(0, 2, msg_id=b"othr"), 1.1) == Pending(
        (SRC, b"othr"), 1.1 + TIMEOUT, new=True
    )
    assert r.expire(6.0) == []
    assert r.add(SRC, frag(0, 2), 6.0) == Pending(KEY, 6.0 + TIMEOUT, new=True)


def test_max_fragments_is_configurable() -> None:
    r = make(max_fragments=4)
    assert r.add(SRC, frag(0, 5, msg_id=b"five"), 0.0) == INVALID
    assert r.add(SRC, frag(0, 4, msg_id=b"four"), 0.0) == Pending((SRC, b"four"), TIMEOUT, new=True)


@pytest.mark.parametrize(
    "bad",
    [
        pytest.param(frag(3, 3), id="seq == total"),
        pytest.param(frag(0, 0), id="total 0"),
        pytest.param(frag(0, 177), id="total 177"),
        pytest.param(frag(2, 4), id="total differs from the first fragment"),
        pytest.param(frag(0, 3, b"other bytes"), id="repeated seq, different bytes"),
    ],
)
def test_invalid_fragment_ends_the_pending_message(bad: Fragment) -> None:
    r = make()
    assert r.add(SRC, frag(0, 3), 0.0) == Pending(KEY, TIMEOUT, new=True)
    assert r.add(SRC, frag(1, 3), 1.0) == Pending(KEY, TIMEOUT, new=False)
    assert r.add(SRC, bad, 2.0) == ENDED
    assert r.in_flight == 0
    assert r.buffered_bytes == 0
    # The key is now ignored until its deadline (first fragment + timeout)...
    assert r.add(SRC, frag(2, 3), 3.0) == LATE
    assert r.add(SRC, frag(0, 3), 4.9) == LATE
    assert r.add(SRC, bad, 4.9) == LATE
    assert r.expire(4.9) == []
    # ...after which it can start afresh.
    assert r.expire(5.1) == []
    assert r.add(SRC, frag(0, 3), 5.1) == Pending(KEY, 5.1 + TIMEOUT, new=True)


def test_identical_repeats_are_duplicates_and_the_message_still_completes() -> None:
    r = make()
    assert r.add(SRC, frag(0, 3), 0.0) == Pending(KEY, TIMEOUT, new=True)
    buffered = r.buffered_bytes
    assert r.add(SRC, frag(0, 3), 0.1) == DUPLICATE
    assert r.buffered_bytes == buffered
    assert r.add(SRC, frag(2, 3), 0.2) == Pending(KEY, TIMEOUT, new=False)
    assert r.add(SRC, frag(2, 3), 0.3) == DUPLICATE
    assert r.add(SRC, frag(0, 3), 0.4) == DUPLICATE
    assert r.in_flight == 1
    assert r.add(SRC, frag(1, 3), 0.5) == Complete(KEY, payload(3))


@pytest.mark.parametrize(
    "late",
    [
        pytest.param(frag(0, 3), id="same fragment"),
        pytest.param(frag(2, 3), id="last fragment again"),
        pytest.param(frag(0, 3, b"changed"), id="different bytes"),
        pytest.param(frag(0, 1), id="different total"),
        pytest.param(frag(7, 3), id="invalid numbers"),
    ],
)
def test_fragments_after_completion_are_late_until_the_deadline(late: Fragment) -> None:
    r = make()
    r.add(SRC, frag(0, 3), 0.0)
    r.add(SRC, frag(1, 3), 0.5)
    assert r.add(SRC, frag(2, 3), 1.0) == Complete(KEY, payload(3))
    for now in (1.0, 2.0, 4.99):
        assert r.add(SRC, late, now) == LATE
    assert r.in_flight == 0
    assert r.buffered_bytes == 0
    assert r.expire(5.01) == []
    assert r.add(SRC, frag(0, 3), 5.01) == Pending(KEY, 5.01 + TIMEOUT, new=True)


def test_a_complete_message_is_never_delivered_twice() -> None:
    r = make()
    outcomes = [r.add(SRC, frag(seq, 2), 0.1 * i) for i, seq in enumerate([0, 1, 0, 1, 1, 0])]
    assert [o for o in outcomes if isinstance(o, Complete)] == [Complete(KEY, payload(2))]


def test_the_deadline_never_moves() -> None:
    r = make()
    assert r.add(SRC, frag(0, 3), 0.0) == Pending(KEY, 5.0, new=True)
    assert r.add(SRC, frag(1, 3), 4.0) == Pending(KEY, 5.0, new=False)
    assert r.add(SRC, frag(1, 3), 4.5) == DUPLICATE
    assert r.expire(4.99) == []
    assert r.in_flight == 1
    assert r.expire(5.01) == [KEY]
    assert r.in_flight == 0
    assert r.buffered_bytes == 0
    # A timed-out key is not remembered: the old pieces are gone and it starts afresh.
    assert r.add(SRC, frag(2, 3), 5.5) == Pending(KEY, 10.5, new=True)
    assert r.add(SRC, frag(0, 3), 5.6) == Pending(KEY, 10.5, new=False)
    assert r.add(SRC, frag(1, 3), 5.7) == Complete(KEY, payload(3))


def test_expire_returns_timed_out_keys_and_frees_their_bytes() -> None:
    r = make()
    r.add(SRC, frag(0, 2, msg_id=b"aaaa"), 0.0)
    r.add(OTHER, frag(0, 3, msg_id=b"bbbb"), 1.0)
    r.add(SRC, frag(1, 4, msg_id=b"cccc"), 2.0)
    r.add(OTHER, frag(0, 2, msg_id=b"done"), 2.5)
    assert r.add(OTHER, frag(1, 2, msg_id=b"done"), 2.6) == Complete((OTHER, b"done"), payload(2))
    r.add(SRC, frag(0, 2, msg_id=b"dead"), 2.7)
    assert r.add(SRC, frag(0, 3, msg_id=b"dead"), 2.8) == ENDED
    assert r.in_flight == 3
    assert r.buffered_bytes > 0
    assert r.expire(4.0) == []
    assert r.expire(5.5) == [(SRC, b"aaaa")]
    assert r.in_flight == 2
    assert r.expire(8.0) == [(OTHER, b"bbbb"), (SRC, b"cccc")]
    assert r.in_flight == 0
    assert r.buffered_bytes == 0
    assert r.expire(100.0) == []


def test_with_expire_called_first_a_fragment_past_the_deadline_starts_afresh() -> None:
    # The relay calls expire(now) before add(now); add() alone does not drop old messages.
    r = make()
    r.add(SRC, frag(0, 2), 0.0)
    assert r.expire(6.0) == [KEY]
    assert r.add(SRC, frag(1, 2), 6.0) == Pending(KEY, 11.0, new=True)


def test_messages_are_keyed_by_source_and_msg_id() -> None:
    r = make()
    a, b, c = (SRC, MSG), (OTHER, MSG), (SRC, b"msg2")
    assert r.add(SRC, frag(0, 2, b"a0"), 0.0) == Pending(a, TIMEOUT, new=True)
    assert r.add(OTHER, frag(0, 2, b"b0"), 0.0) == Pending(b, TIMEOUT, new=True)
    assert r.add(SRC, frag(0, 2, b"c0", msg_id=b"msg2"), 0.0) == Pending(c, TIMEOUT, new=True)
    assert r.in_flight == 3
    assert r.add(OTHER, frag(1, 2, b"b1"), 0.1) == Complete(b, b"b0b1")
    assert r.add(SRC, frag(1, 2, b"c1", msg_id=b"msg2"), 0.1) == Complete(c, b"c0c1")
    assert r.add(SRC, frag(1, 2, b"a1"), 0.1) == Complete(a, b"a0a1")


def test_in_flight_counts_pending_messages() -> None:
    r = make()
    for i, msg_id in enumerate([b"m000", b"m001", b"m002"]):
        r.add(SRC, frag(0, 2, msg_id=msg_id), 0.0)
        assert r.in_flight == i + 1
    r.add(SRC, frag(1, 2, msg_id=b"m000"), 0.1)
    assert r.in_flight == 2
    r.add(SRC, frag(0, 0, msg_id=b"m001"), 0.2)
    assert r.in_flight == 1
    r.add(SRC, frag(0, 1, msg_id=b"solo"), 0.3)
    assert r.in_flight == 1
    r.expire(TIMEOUT)
    assert r.in_flight == 0


def test_per_source_limit_rejects_new_messages_only() -> None:
    r = make(max_messages_per_source=2)
    assert isinstance(r.add(SRC, frag(0, 2, msg_id=b"aaaa"), 0.0), Pending)
    assert isinstance(r.add(SRC, frag(0, 2, msg_id=b"bbbb"), 0.0), Pending)
    assert r.add(SRC, frag(0, 2, msg_id=b"cccc"), 0.1) == SOURCE_LIMIT
    assert r.in_flight == 2
    # Another source is not affected.
    assert isinstance(r.add(OTHER, frag(0, 2, msg_id=b"cccc"), 0.2), Pending)
    # Nothing was evicted: the pending messages still complete...
    assert r.add(SRC, frag(1, 2, msg_id=b"aaaa"), 0.3) == Complete((SRC, b"aaaa"), payload(2))
    # ...and the freed slot takes a new message.
    assert isinstance(r.add(SRC, frag(0, 2, msg_id=b"cccc"), 0.4), Pending)
    assert r.add(SRC, frag(0, 2, msg_id=b"dddd"), 0.5) == SOURCE_LIMIT
    assert r.add(SRC, frag(1, 2, msg_id=b"bbbb"), 0.6) == Complete((SRC, b"bbbb"), payload(2))
    assert r.add(SRC, frag(1, 2, msg_id=b"cccc"), 0.7) == Complete((SRC, b"cccc"), payload(2))
    assert r.add(OTHER, frag(1, 2, msg_id=b"cccc"), 0.8) == Complete((OTHER, b"cccc"), payload(2))
    assert r.buffered_bytes == 0


FIRST_COST = MESSAGE_OVERHEAD_BYTES + FRAGMENT_OVERHEAD_BYTES + 100
NEXT_COST = FRAGMENT_OVERHEAD_BYTES + 100


def test_at_the_total_limit_the_heaviest_source_loses_its_oldest_message() -> None:
    r = make(max_total_bytes=3 * FIRST_COST + 2 * NEXT_COST)
    older, newer = (SRC, b"old1"), (SRC, b"new1")
    assert isinstance(r.add(SRC, frag(0, 3, piece(0, 100), msg_id=b"old1"), 0.0), Pending)
    assert isinstance(r.add(OTHER, frag(0, 2, piece(0, 100)), 0.0), Pending)
    assert isinstance(r.add(SRC, frag(0, 3, piece(0, 100), msg_id=b"new1"), 0.0), Pending)
    assert isinstance(r.add(SRC, frag(1, 3, piece(1, 100), msg_id=b"new1"), 0.0), Pending)
    assert r.bytes_per_source() == {SRC: 2 * FIRST_COST + NEXT_COST, OTHER: FIRST_COST}
    third = ("10.0.0.3", 5000)
    started = r.add(third, frag(0, 2, piece(0, 100)), 0.1)
    assert started == Pending(
        (third, MSG), 0.1 + TIMEOUT, new=True, dropped=((older, DropReason.REASSEMBLY_EVICTED),)
    )
    assert r.bytes_per_source() == {
        SRC: FIRST_COST + NEXT_COST,
        OTHER: FIRST_COST,
        third: FIRST_COST,
    }
    # The evicted message is over: its later fragments are late, as after an invalid one.
    assert r.add(SRC, frag(1, 3, piece(1, 100), msg_id=b"old1"), 0.2) == LATE
    # The others still complete.
    assert r.add(OTHER, frag(1, 2, piece(1, 100)), 0.2) == Complete((OTHER, MSG), payload(2, 100))
    done = r.add(SRC, frag(2, 3, piece(2, 100), msg_id=b"new1"), 0.2)
    assert done == Complete(newer, payload(3, 100))
    assert r.add(third, frag(1, 2, piece(1, 100)), 0.3) == Complete((third, MSG), payload(2, 100))
    assert r.buffered_bytes == 0
    assert r.bytes_per_source() == {}


def test_many_light_sources_cannot_starve_a_well_behaved_one() -> None:
    """150 sources each hold 8 never-completing messages (the cap is full); a sender of
    two-fragment messages still gets every message through."""
    r = make(max_total_bytes=4 * 1024 * 1024)
    delivered = 0
    for round_ in range(20):
        now = round_ * 0.25
        for attacker in range(150):
            source = (f"10.9.{attacker // 100}.{attacker % 100}", 4000)
            for msg in range(8):
                msg_id = bytes([round_, msg, 0, 0])
                r.add(source, frag(0, 2, piece(0, 8), msg_id=msg_id), now)
        r.expire(now)
        msg_id = bytes([round_, 0xFF, 0, 0])
        assert isinstance(r.add(SRC, frag(0, 2, piece(0, 200), msg_id=msg_id), now), Pending)
        delivered += isinstance(r.add(SRC, frag(1, 2, piece(1, 200), msg_id=msg_id), now), Complete)
        assert r.buffered_bytes <= r.max_total_bytes
    assert delivered == 20


def test_total_limit_rejects_a_next_fragment_without_ending_the_message() -> None:
    limit = FIRST_COST + NEXT_COST
    r = make(max_total_bytes=limit)
    assert isinstance(r.add(SRC, frag(0, 3, piece(0, 100)), 0.0), Pending)
    assert isinstance(r.add(SRC, frag(1, 3, piece(1, 100)), 0.0), Pending)
    assert r.buffered_bytes == limit
    assert r.add(SRC, frag(2, 3, piece(2, 100)), 0.1) == BUFFER_LIMIT
    assert r.buffered_bytes == limit
    assert r.in_flight == 1
    assert r.add(SRC, frag(1, 3, piece(1, 100)), 0.2) == DUPLICATE
    assert r.expire(TIMEOUT) == [KEY]
    assert r.buffered_bytes == 0


def test_first_fragment_that_does_not_fit_buffers_nothing() -> None:
    r = make(max_total_bytes=FIRST_COST - 1)
    assert r.add(SRC, frag(0, 2, piece(0, 100)), 0.0) == BUFFER_LIMIT
    assert r.in_flight == 0
    assert r.buffered_bytes == 0
    assert isinstance(r.add(SRC, frag(0, 2, piece(0, 99)), 0.0), Pending)


def test_buffered_bytes_never_pass_the_total_limit_under_a_flood() -> None:
    limit = 100_000
    r = make(max_total_bytes=limit)
    reasons: set[DropReason] = set()
    for i in range(600):
        source = (f"10.0.{i // 100}.{i % 100}", 5000)
        for msg in range(3):
            fragment = frag(0, 176, piece(msg, 256), msg_id=bytes([msg]) * 4)
            outcome = r.add(source, fragment, i * 0.001)
            if isinstance(outcome, Rejected):
                reasons.add(outcome.reason)
            assert 0 < r.buffered_bytes <= limit
    # Each new message made room by evicting the oldest of the heaviest holder.
    assert reasons == {DropReason.LATE_FRAGMENT} or not reasons
    assert r.expire(10.0) != []
    assert r.buffered_bytes == 0
    assert r.in_flight == 0


def test_a_tombstone_ends_at_its_own_deadline_whatever_the_completion_order() -> None:
    r = make()
    a, b = b"aaaa", b"bbbb"
    assert r.add(SRC, frag(0, 2, msg_id=a), 0.0) == Pending((SRC, a), 5.0, new=True)
    # b completes first but its deadline (7.0) is later than a's (5.0).
    assert r.add(SRC, frag(0, 1, msg_id=b), 2.0) == Complete((SRC, b), piece(0))
    assert r.add(SRC, frag(1, 2, msg_id=a), 3.0) == Complete((SRC, a), payload(2))
    assert r.add(SRC, frag(0, 2, msg_id=a), 4.0) == LATE
    assert r.expire(6.0) == []
    # a's deadline has passed: a may start afresh (b is still remembered).
    assert r.add(SRC, frag(0, 1, msg_id=b), 6.0) == LATE
    assert r.add(SRC, frag(0, 2, msg_id=a), 6.0) == Pending((SRC, a), 11.0, new=True)


def test_a_piece_over_256_bytes_is_invalid() -> None:
    r = make()
    big = Fragment(MSG, 0, 1, b"x" * 257)
    assert r.add(SRC, big, 0.0) == Rejected(DropReason.INVALID_FRAGMENT)
    assert r.add(SRC, Fragment(MSG, 0, 1, b"x" * 256), 0.0) == LATE
    assert isinstance(r.add(SRC, Fragment(b"msg2", 0, 1, b"x" * 256), 0.0), Complete)


def test_a_shorter_timeout_expires_newer_messages_first_and_moves_no_deadline() -> None:
    # A reload may shorten the timeout: a message started after it has an earlier
    # deadline than the older ones, and must still expire on time.
    reassembler = make()
    reassembler.add(SRC, frag(0, 2, msg_id=b"old1"), 0.0)
    reassembler.timeout_s = 1.0
    reassembler.add(SRC, frag(0, 2, msg_id=b"new1"), 1.0)
    assert reassembler.expire(1.99) == []
    assert reassembler.expire(2.0) == [(SRC, b"new1")]
    assert reassembler.expire(TIMEOUT - 0.01) == []
    assert reassembler.expire(TIMEOUT) == [(SRC, b"old1")]
    assert (reassembler.in_flight, reassembler.buffered_bytes) == (0, 0)


def test_a_refused_message_stays_refused_until_its_deadline() -> None:
    """A relay with no room refuses the first fragment it sees of a message; a later one
    must not start the message without it (it would hold a slot to no end)."""
    r = make()
    assert r.starts(KEY, 0.0)
    r.refuse(KEY, 0.0)
    assert not r.starts(KEY, 1.0)
    assert r.add(SRC, frag(1, 2), 1.0) == Rejected(DropReason.OVERLOADED)
    assert r.in_flight == 0
    assert r.starts(KEY, TIMEOUT)
    assert isinstance(r.add(SRC, frag(0, 2), TIMEOUT), Pending)


def test_clear_drops_every_partial_message_and_frees_its_bytes() -> None:
    r = Reassembler(timeout_s=TIMEOUT)
    r.add(SRC, Fragment(MSG, 0, 2, b"a" * 10), now=0.0)
    r.add(OTHER, Fragment(MSG, 0, 3, b"b" * 10), now=0.0)
    assert sorted(r.clear()) == sorted([KEY, (OTHER, MSG)])
    assert (r.in_flight, r.buffered_bytes, r.bytes_per_source()) == (0, 0, {})
    assert r.expire(now=TIMEOUT + 1) == []


def test_a_key_whose_message_is_past_its_deadline_starts_afresh() -> None:
    """Found in review: starts() said no for a partial past its deadline that add()
    would expire and start again, so the caller's admission check was skipped."""
    r = Reassembler(timeout_s=TIMEOUT)
    r.add(SRC, Fragment(MSG, 0, 2, b"a"), now=0.0)
    assert not r.starts(KEY, now=TIMEOUT - 0.1)
    assert r.starts(KEY, now=TIMEOUT)
    assert isinstance(r.add(SRC, Fragment(MSG, 1, 2, b"b"), now=TIMEOUT), Pending)


def test_a_refusal_lasts_until_its_deadline_and_no_longer() -> None:
    reassembler = Reassembler(timeout_s=5.0)
    key: MessageKey = (("10.0.0.1", 1), b"\x00\x00\x00\x01")
    assert reassembler.ended(key, 0.0) is None
    reassembler.refuse(key, 0.0)
    assert reassembler.ended(key, 4.9) is DropReason.OVERLOADED
    assert not reassembler.starts(key, 4.9)
    assert reassembler.ended(key, 5.0) is None  # the deadline itself is past
    assert reassembler.starts(key, 5.0)


def test_a_key_refused_again_is_forgotten_after_the_keys_refused_before_it() -> None:
    """Found in review: a key buried again kept its first place, at the front, so at
    the cap its live refusal was forgotten first while older ones stayed."""
    reassembler = Reassembler(timeout_s=5.0, max_tombstones=2)
    first, second, third = ((("10.0.0.1", 1), bytes([0, 0, 0, n])) for n in range(3))
    reassembler.refuse(first, 0.0)  # until 5.0
    reassembler.refuse(second, 1.0)  # until 6.0
    reassembler.refuse(first, 5.5)  # ended at 5.0, refused afresh: until 10.5
    reassembler.refuse(third, 5.6)  # over the cap: the oldest goes
    assert reassembler.ended(first, 5.7) is DropReason.OVERLOADED
    assert reassembler.ended(second, 5.7) is None


def test_a_large_message_grows_past_many_light_holders() -> None:
    """Once the honest sender held the most, its own message was the only one it could
    evict, and eviction stopped there: 130 sources holding 8 lone first fragments each
    (12-byte datagrams) kept any message over about 17 KB from completing (found by
    review). The next heaviest source pays instead, as in the secure profile's budget."""
    r = make()
    for attacker in range(130):
        source = (f"10.9.{attacker // 100}.{attacker % 100}", 4000)
        for msg in range(8):
            r.add(source, frag(0, 176, b"", msg_id=bytes([msg, 0, 0, 0])), 0.0)
    assert r.buffered_bytes > r.max_total_bytes - MESSAGE_OVERHEAD_BYTES
    outcomes = [r.add(SRC, frag(seq, 176, piece(seq, 256)), 0.1) for seq in range(176)]
    assert outcomes[-1] == Complete(KEY, payload(176, 256))
    assert not [outcome for outcome in outcomes if isinstance(outcome, Rejected)]
