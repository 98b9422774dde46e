"""The receive side's order: gaps counted, replays and older runs refused, restarts taken."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mcrelay.protocol.errors import DropReason, LocalProtocolError, RemoteProtocolError
from mcrelay.protocol.federation.envelope import Header, Kind
from mcrelay.protocol.federation.streams import Order, Streams, Verdict


def h(seq: int, kind: Kind = Kind.MSG, relay: str = "a", epoch: int = 100) -> Header:
    return Header(1, kind, relay, epoch, seq)


def refused(streams: Streams, header: Header, reason: DropReason) -> None:
    with pytest.raises(RemoteProtocolError) as raised:
        streams.check(header)
    assert raised.value.reason is reason


def test_a_relay_first_heard_is_taken_at_any_seq() -> None:
    streams = Streams()
    assert streams.check(h(57)) == Verdict(Order.NEW_RELAY)
    assert streams.check(h(58)) == Verdict(Order.NEXT)
    assert streams.check(h(12, Kind.PRESENCE)) == Verdict(Order.NEXT), (
        "its earlier ones were not ours"
    )
    assert streams.epoch("a") == 100


def test_a_gap_counts_the_envelopes_skipped() -> None:
    streams = Streams()
    streams.check(h(1))
    assert streams.check(h(5)) == Verdict(Order.GAP, 3)
    assert streams.check(h(6)) == Verdict(Order.NEXT)


def test_duplicates_and_replays_are_refused_and_change_nothing() -> None:
    streams = Streams()
    for seq in (1, 2, 3):
        streams.check(h(seq))
    refused(streams, h(3), DropReason.ENVELOPE_REPLAY)
    refused(streams, h(1), DropReason.ENVELOPE_REPLAY)
    assert streams.check(h(4)) == Verdict(Order.NEXT)


def test_kinds_and_relays_are_separate_streams() -> None:
    streams = Streams()
    streams.check(h(5))
    streams.check(h(5, relay="b"))
    assert streams.check(h(6, Kind.PRESENCE)) == Verdict(Order.NEXT)
    assert streams.check(h(6)) == Verdict(Order.NEXT)
    assert streams.check(h(6, relay="b")) == Verdict(Order.NEXT)


def test_a_restart_is_taken_and_its_older_run_is_stale() -> None:
    streams = Streams()
    streams.check(h(40))
    streams.check(h(9, Kind.PRESENCE))
    assert streams.check(h(1, epoch=200)) == Verdict(Order.RESTART, 0)
    assert streams.epoch("a") == 200
    refused(streams, h(41), DropReason.ENVELOPE_STALE)
    refused(streams, h(10, Kind.PRESENCE), DropReason.ENVELOPE_STALE)
    assert streams.check(h(2, epoch=200)) == Verdict(Order.NEXT)
    # Heard from its start: a kind's first envelope above 1 counts what was missed.
    assert streams.check(h(3, Kind.PRESENCE, epoch=200)) == Verdict(Order.GAP, 2)


def test_a_restart_whose_first_envelopes_were_lost_counts_them() -> None:
    streams = Streams()
    streams.check(h(40))
    assert streams.check(h(4, epoch=200)) == Verdict(Order.RESTART, 3)


def test_memory_is_bounded_and_the_least_recently_heard_goes_first() -> None:
    streams = Streams(max_relays=3)
    for relay in "abc":
        streams.check(h(1, relay=relay, epoch=100))
    streams.check(h(2, relay="a", epoch=100))  # a is heard again: b is now the oldest
    streams.check(h(1, relay="d", epoch=100))
    assert len(streams) == 3
    assert streams.epoch("b") is None
    assert streams.epoch("a") == 100
    # A refused envelope refreshes nothing; a forgotten name is heard as new.
    assert streams.check(h(1, relay="b", epoch=50)) == Verdict(Order.NEW_RELAY)
    with pytest.raises(LocalProtocolError):
        Streams(max_relays=0)


@given(
    st.lists(
        st.tuples(
            st.sampled_from("ab"),
            st.sampled_from([Kind.MSG, Kind.PRESENCE]),
            st.integers(1, 3),
            st.integers(1, 8),
        ),
        max_size=60,
    )
)
def test_nothing_is_taken_twice_and_every_stream_only_moves_forward(
    sequence: list[tuple[str, Kind, int, int]],
) -> None:
    streams = Streams()
    newest: dict[str, int] = {}
    taken: dict[tuple[str, int, Kind], int] = {}
    for relay, kind, epoch, seq in sequence:
        try:
            verdict = streams.check(h(seq, kind, relay, epoch))
        except RemoteProtocolError as exc:
            reason = exc.reason
            stale = epoch < newest.get(relay, 0)
            assert reason is (DropReason.ENVELOPE_STALE if stale else DropReason.ENVELOPE_REPLAY)
            continue
        assert epoch >= newest.get(relay, 0)
        assert seq > taken.get((relay, epoch, kind), 0)
        if epoch > newest.get(relay, epoch):
            assert verdict.order is Order.RESTART
        newest[relay] = epoch
        taken[relay, epoch, kind] = seq
        assert verdict.skipped >= 0
