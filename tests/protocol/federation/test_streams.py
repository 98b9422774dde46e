"""The receive side's order: gaps counted, replays and older runs refused, restarts taken,
messages, kicks and members only from a verified run."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mcrelay.protocol.errors import DropReason, LocalProtocolError, RemoteProtocolError
from mcrelay.protocol.federation.envelope import ENVELOPE_VERSION, Header, Kind
from mcrelay.protocol.federation.streams import GUARDED, Order, Streams, Verdict


def h(seq: int, kind: Kind = Kind.SNAPSHOT_REQUEST, relay: str = "a", epoch: int = 100) -> Header:
    """An envelope's header; by default of a kind taken from any run (a hello)."""
    return Header(ENVELOPE_VERSION, kind, relay, epoch, seq)


def answer(streams: Streams, seq: int = 1, relay: str = "a", epoch: int = 100) -> Verdict:
    """``relay``'s run answers this receiver's nonce, having sealed nothing before."""
    return streams.check(h(seq, Kind.SNAPSHOT, relay, epoch), {Kind.MSG: 0, Kind.KICK: 0})


def refused(streams: Streams, header: Header, reason: DropReason) -> None:
    with pytest.raises(RemoteProtocolError) as raised:
        streams.check(header)
    assert raised.value.reason is reason


def test_a_relay_first_heard_is_taken_at_any_seq() -> None:
    streams = Streams()
    assert streams.check(h(57)) == Verdict(Order.NEW_RELAY)
    assert streams.check(h(58)) == Verdict(Order.NEXT)
    assert streams.check(h(12, Kind.KICK_REPLY)) == Verdict(Order.NEXT), (
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
    assert streams.check(h(6, Kind.KICK_REPLY)) == Verdict(Order.NEXT)
    assert streams.check(h(6)) == Verdict(Order.NEXT)
    assert streams.check(h(6, relay="b")) == Verdict(Order.NEXT)


def test_a_restart_is_taken_and_its_older_run_is_stale() -> None:
    streams = Streams()
    answer(streams)
    streams.check(h(40, Kind.PRESENCE))
    streams.check(h(9, Kind.KICK_REPLY))
    assert streams.check(h(1, Kind.PRESENCE, epoch=200)) == Verdict(Order.RESTART, 0)
    assert streams.epoch("a") == 200
    refused(streams, h(41, Kind.PRESENCE), DropReason.ENVELOPE_STALE)
    refused(streams, h(10, Kind.KICK_REPLY), DropReason.ENVELOPE_STALE)
    assert streams.check(h(2, Kind.PRESENCE, epoch=200)) == Verdict(Order.NEXT)
    # Heard from its start: a kind's first envelope above 1 counts what was missed.
    assert streams.check(h(3, Kind.SNAPSHOT, epoch=200)) == Verdict(Order.GAP, 2)


def test_a_restart_whose_first_envelopes_were_lost_counts_them() -> None:
    streams = Streams()
    answer(streams)
    assert streams.check(h(4, Kind.MSG, epoch=200)) == Verdict(Order.RESTART, 3)


def test_memory_is_bounded_and_the_least_recently_heard_goes_first() -> None:
    streams = Streams(max_relays=3)
    for relay in "abc":
        streams.check(h(1, relay=relay, epoch=100))
    streams.check(h(2, relay="a", epoch=100))  # a is heard again: b is now the oldest
    refused(streams, h(1, relay="b"), DropReason.ENVELOPE_REPLAY)  # refreshes nothing
    streams.check(h(1, relay="d", epoch=100))
    assert len(streams) == 3
    assert streams.epoch("b") is None
    assert streams.epoch("a") == 100
    # A forgotten name is heard as new.
    assert streams.check(h(1, relay="b", epoch=50)) == Verdict(Order.NEW_RELAY)
    assert streams.epoch("c") is None
    with pytest.raises(LocalProtocolError):
        Streams(max_relays=0)


def test_a_forgotten_run_is_verified_again() -> None:
    streams = Streams(max_relays=1)
    answer(streams)
    streams.check(h(1, relay="b"))
    refused(streams, h(1, Kind.MSG), DropReason.ENVELOPE_UNVERIFIED)


@given(
    st.lists(
        st.tuples(
            st.sampled_from("ab"),
            st.sampled_from(list(Kind)),
            st.integers(1, 3),
            st.integers(1, 8),
            st.booleans(),
        ),
        max_size=60,
    )
)
def test_nothing_is_taken_twice_and_every_stream_only_moves_forward(
    sequence: list[tuple[str, Kind, int, int, bool]],
) -> None:
    """And a guarded kind only from a run that answered, or a new run of one."""
    streams = Streams()
    newest: dict[str, int] = {}
    trusted: dict[str, bool] = {}
    taken: dict[tuple[str, int, Kind], int] = {}
    for relay, kind, epoch, seq, answers in sequence:
        answered = {Kind.MSG: 0, Kind.KICK: 0} if answers and kind is Kind.SNAPSHOT else None
        was_trusted = trusted.get(relay, False)
        try:
            verdict = streams.check(h(seq, kind, relay, epoch), answered)
        except RemoteProtocolError as exc:
            reason = exc.reason
            if epoch < newest.get(relay, 0):
                assert reason is DropReason.ENVELOPE_STALE
            elif reason is DropReason.ENVELOPE_UNVERIFIED:
                assert kind in GUARDED
                assert not was_trusted
                assert answered is None
            else:
                assert reason is DropReason.ENVELOPE_REPLAY
                assert seq <= taken.get((relay, epoch, kind), seq)
            continue
        assert epoch >= newest.get(relay, 0)
        assert seq > taken.get((relay, epoch, kind), 0)
        assert kind not in GUARDED or was_trusted or answered is not None
        if epoch > newest.get(relay, epoch):
            assert verdict.order is Order.RESTART
        newest[relay] = epoch
        trusted[relay] = was_trusted or answered is not None
        taken[relay, epoch, kind] = seq
        assert verdict.skipped >= 0
        assert streams.verified(relay) is trusted[relay]


def test_messages_kicks_and_members_wait_for_a_verified_run() -> None:
    """A relay that had just restarted took a recorded stream of messages and kicks
    again, whole (found by review), and recorded snapshots and presences misstated its
    members: they are taken only from a run that answered a nonce, and messages and
    kicks only above the seqs it had sealed by then."""
    streams = Streams()
    refused(streams, h(1, Kind.MSG), DropReason.ENVELOPE_UNVERIFIED)
    refused(streams, h(6, Kind.SNAPSHOT), DropReason.ENVELOPE_UNVERIFIED)
    refused(streams, h(3, Kind.PRESENCE), DropReason.ENVELOPE_UNVERIFIED)
    assert streams.epoch("a") is None  # nothing remembered of it
    assert streams.check(h(2)) == Verdict(Order.NEW_RELAY)  # its hello is answered
    for seq in (1, 29, 30):  # recorded before the answer, replayed: refused
        refused(streams, h(seq, Kind.MSG), DropReason.ENVELOPE_UNVERIFIED)
    refused(streams, h(2, Kind.KICK), DropReason.ENVELOPE_UNVERIFIED)
    sealed = {Kind.MSG: 30, Kind.KICK: 2}
    refused(streams, h(7, Kind.SNAPSHOT, epoch=99), DropReason.ENVELOPE_STALE)  # another run's
    assert not streams.verified("a")
    assert streams.check(h(7, Kind.SNAPSHOT), sealed) == Verdict(Order.NEXT)
    assert streams.verified("a")
    for seq in (1, 29, 30):
        refused(streams, h(seq, Kind.MSG), DropReason.ENVELOPE_REPLAY)
    refused(streams, h(2, Kind.KICK), DropReason.ENVELOPE_REPLAY)
    refused(streams, h(6, Kind.SNAPSHOT), DropReason.ENVELOPE_REPLAY)
    assert streams.check(h(31, Kind.MSG)) == Verdict(Order.NEXT)
    assert streams.check(h(3, Kind.KICK)) == Verdict(Order.NEXT)
    assert streams.check(h(3, Kind.PRESENCE)) == Verdict(Order.NEXT)  # the first heard
    # Asked again (its bus reconnected): a verified run's streams go on, gaps counted.
    assert streams.check(h(8, Kind.SNAPSHOT), {Kind.MSG: 40, Kind.KICK: 3}) == Verdict(Order.NEXT)
    assert streams.check(h(41, Kind.MSG)) == Verdict(Order.GAP, 9)


def test_a_new_run_of_a_verified_run_is_taken_from_its_start() -> None:
    """The older run answered after this receiver started, so the newer began later:
    nothing of it can be a recording from before. A relay that restarted lost its
    first round trip of messages at every other relay (found by review)."""
    streams = Streams()
    assert answer(streams) == Verdict(Order.NEW_RELAY)
    assert streams.check(h(1, Kind.MSG, epoch=200)) == Verdict(Order.RESTART, 0)
    refused(streams, h(1, Kind.MSG, epoch=200), DropReason.ENVELOPE_REPLAY)
    refused(streams, h(32, Kind.MSG), DropReason.ENVELOPE_STALE)
    assert streams.check(h(1, Kind.PRESENCE, epoch=200)) == Verdict(Order.NEXT)
    assert streams.check(h(2, Kind.MSG, epoch=300)) == Verdict(Order.RESTART, 1)


def test_a_new_run_of_a_run_never_verified_waits_for_its_answer() -> None:
    streams = Streams()
    streams.check(h(1))
    assert streams.check(h(1, epoch=200)) == Verdict(Order.RESTART, 0)
    refused(streams, h(1, Kind.MSG, epoch=200), DropReason.ENVELOPE_UNVERIFIED)
    assert answer(streams, 2, epoch=200) == Verdict(Order.NEXT)
    assert streams.check(h(1, Kind.MSG, epoch=200)) == Verdict(Order.NEXT)
    assert answer(streams, 1, epoch=300) == Verdict(Order.RESTART, 0)
