"""The sending half, driven by hand: fragments, windows, retransmission, ABANDON, epochs."""

import pytest

from mcrelay.protocol.errors import DropReason, LocalProtocolError
from mcrelay.protocol.secure.channel import Channel, Role
from mcrelay.protocol.secure.channel_events import (
    MessageAbandoned,
    MessageAcknowledged,
    MessageFailed,
)
from mcrelay.protocol.secure.frames import MAX_FRAGMENT_BYTES, Abandon, Fragment
from mcrelay.protocol.secure.rtt import MAX_RTO_S
from mcrelay.protocol.secure.sending import (
    ACK_INTERVAL_S,
    MAX_BODY_BYTES,
    MESSAGE_DEADLINE_S,
    QUEUE_LIMIT,
    SLOW_ACK_S,
    QueueFull,
)

from .channel_support import (
    PEER_EPOCH,
    ack,
    client,
    drain,
    events,
    feed,
    fragments,
    relay,
)

BIG = bytes(58 * MAX_FRAGMENT_BYTES)


def test_a_body_goes_out_in_fragments_of_1150_bytes() -> None:
    channel = client()
    body = bytes(range(256)) * 9 + b"end"  # 2,307 bytes: 1,150 + 1,150 + 7
    channel.send(body, 0.0)
    frames = drain(channel, 0.0)
    assert [(f.msg_seq, f.index, f.count) for f in frames if isinstance(f, Fragment)] == [
        (0, 0, 3),
        (0, 1, 3),
        (0, 2, 3),
    ]
    assert b"".join(f.data for f in frames if isinstance(f, Fragment)) == body
    assert [len(f.data) for f in frames if isinstance(f, Fragment)] == [1150, 1150, 7]


def test_an_empty_body_is_one_empty_fragment() -> None:
    channel = client()
    channel.send(b"", 0.0)
    assert drain(channel, 0.0) == [Fragment(0, 0, 1, b"")]


def test_a_body_over_58_fragments_is_the_callers_error() -> None:
    channel = client()
    channel.send(bytes(MAX_BODY_BYTES), 0.0)
    with pytest.raises(LocalProtocolError):
        channel.send(bytes(MAX_BODY_BYTES + 1), 0.0)


def test_small_messages_share_a_data() -> None:
    channel = client()
    for n in range(8):
        channel.send(bytes([1, n]) + bytes(100), 0.0)
    assert len(fragments(channel.frames_to_send(0.0))) == 8


def test_eight_messages_in_flight_as_a_msg_seq_range() -> None:
    channel = client()
    for n in range(20):
        channel.send(bytes([1, n]), 0.0)
    assert fragments(drain(channel, 0.0)) == [(seq, 0) for seq in range(8)]
    assert channel.queued == 12
    # Settling 1..7 opens nothing: msg_seq 8 is not below the oldest unsettled (0) + 8.
    feed(channel, 0.01, *[ack(seq, 1) for seq in range(1, 8)])
    assert fragments(drain(channel, 0.01)) == []
    feed(channel, 0.02, ack(0, 1))
    assert fragments(drain(channel, 0.02)) == [(seq, 0) for seq in range(8, 16)]
    assert channel.statistics().in_flight == 8


def test_sixty_four_fragments_in_flight() -> None:
    channel = client()
    channel.send(BIG, 0.0)
    channel.send(BIG, 0.0)
    assert fragments(drain(channel, 0.0)) == [(0, i) for i in range(58)] + [
        (1, i) for i in range(6)
    ]
    assert channel.statistics().fragments_in_flight == 64
    feed(channel, 0.01, ack(0, 58, set(range(10))))
    assert fragments(drain(channel, 0.01)) == [(1, i) for i in range(6, 16)]


def test_sixty_four_wait_behind_the_window_then_a_refusal() -> None:
    channel = client()
    for n in range(8 + QUEUE_LIMIT):
        channel.send(bytes([1, n]), 0.0)
    assert channel.queued == QUEUE_LIMIT
    assert not channel.can_send
    with pytest.raises(QueueFull):
        channel.send(b"\x01", 0.0)


def test_an_ack_settles_and_reports() -> None:
    channel = client()
    first = channel.send(b"\x01a", 0.0)
    second = channel.send(b"\x01b", 0.0)
    drain(channel, 0.0)
    feed(channel, 0.05, ack(1, 1))
    assert events(channel) == [MessageAcknowledged(second)]
    feed(channel, 0.06, ack(0, 1), ack(0, 1))
    assert events(channel) == [MessageAcknowledged(first)]
    assert channel.next_deadline() is None


def test_missing_fragments_are_sent_again_once_they_had_a_round_trip() -> None:
    channel = client(initial_rtt_s=0.1)
    channel.send(bytes(3 * MAX_FRAGMENT_BYTES), 0.0)
    drain(channel, 0.0)
    feed(channel, 0.05, ack(0, 3, {0}))
    assert drain(channel, 0.05) == []  # 1 and 2 may still be on their way
    feed(channel, 0.2, ack(0, 3, {0, 2}))
    assert fragments(drain(channel, 0.2)) == [(0, 1)]
    assert channel.statistics().retransmissions == 1


def test_a_fragment_an_ack_no_longer_shows_is_sent_again() -> None:
    """The receiver evicted the message: its latest ACK is what it holds."""
    channel = client(initial_rtt_s=0.1)
    channel.send(bytes(3 * MAX_FRAGMENT_BYTES), 0.0)
    drain(channel, 0.0)
    feed(channel, 0.2, ack(0, 3, {0, 1}))
    assert fragments(drain(channel, 0.2)) == [(0, 2)]
    feed(channel, 0.4, ack(0, 3, {2}))
    assert fragments(drain(channel, 0.4)) == [(0, 0), (0, 1)]


def test_the_timeout_sends_the_unacknowledged_fragments_again() -> None:
    channel = client(initial_rtt_s=0.1)  # RTO 0.1 + 4 * 0.05 = 0.3
    channel.send(b"\x01one", 0.0)
    drain(channel, 0.0)
    timeout = channel.next_deadline()
    assert timeout is not None
    assert timeout == pytest.approx(0.3)
    assert drain(channel, 0.29) == []
    assert fragments(drain(channel, timeout)) == [(0, 0)]
    assert channel.rtt.backoff == 1
    timeout = channel.next_deadline()
    assert timeout is not None
    assert timeout == pytest.approx(0.3 + 0.6)
    assert fragments(drain(channel, timeout)) == [(0, 0)]
    assert channel.statistics().timeouts == 2


def test_a_message_of_several_fragments_also_waits_for_the_receivers_report() -> None:
    channel = client(initial_rtt_s=0.1)
    channel.send(bytes(3 * MAX_FRAGMENT_BYTES), 0.0)
    drain(channel, 0.0)
    assert channel.next_deadline() == pytest.approx(0.3 + ACK_INTERVAL_S)
    feed(channel, 0.05, ack(0, 3, {0}))  # progress restarts the timer
    timeout = channel.next_deadline()
    assert timeout is not None
    assert timeout == pytest.approx(0.05 + 0.3 + ACK_INTERVAL_S)
    assert fragments(drain(channel, timeout)) == [(0, 1), (0, 2)]


def test_the_wait_for_the_receivers_report_stays_within_the_pages_cap() -> None:
    """RTO plus 40 ms passed the page's 2 s cap once backed off: 2.04 s (found by review)."""
    channel = client(initial_rtt_s=0.1)
    channel.send(bytes(3 * MAX_FRAGMENT_BYTES), 0.0)
    drain(channel, 0.0)
    now = 0.0
    for _ in range(6):  # 0.3 s doubled past the cap
        timeout = channel.next_deadline()
        assert timeout is not None
        assert timeout - now <= MAX_RTO_S
        now = timeout
        drain(channel, now)
    assert channel.rtt.rto_s == MAX_RTO_S


def test_karn_no_sample_from_a_fragment_sent_twice() -> None:
    channel = client(initial_rtt_s=0.1)
    channel.send(b"\x01", 0.0)
    drain(channel, 0.0)
    timeout = channel.next_deadline()
    assert timeout is not None
    assert fragments(drain(channel, timeout)) == [(0, 0)]  # timed out, sent again
    feed(channel, 0.31, ack(0, 1))
    assert channel.rtt.srtt_s == 0.1
    assert channel.rtt.backoff == 1  # the backed-off timeout holds
    channel.send(b"\x01", 0.4)
    drain(channel, 0.4)
    feed(channel, 0.42, ack(1, 1))
    assert channel.rtt.latest_s == pytest.approx(0.02)
    assert channel.rtt.srtt_s == pytest.approx(0.875 * 0.1 + 0.125 * 0.02)
    assert channel.rtt.backoff == 0


def test_a_burst_that_times_out_together_backs_off_once() -> None:
    channel = client(initial_rtt_s=0.1)
    for n in range(8):
        channel.send(bytes([1, n]), 0.0)
    drain(channel, 0.0)
    assert len(fragments(drain(channel, 0.31))) == 8
    assert channel.rtt.backoff == 1
    assert len(fragments(drain(channel, 0.92))) == 8
    assert channel.rtt.backoff == 2


def test_an_ack_of_the_wrong_count_is_counted_and_ignored() -> None:
    channel = client()
    channel.send(b"\x01", 0.0)
    drain(channel, 0.0)
    feed(channel, 0.01, ack(0, 2))
    assert events(channel) == []
    assert channel.statistics().drops[DropReason.INVALID_ACK] == 1


def test_the_client_abandons_at_the_deadline_three_times() -> None:
    channel = client(initial_rtt_s=0.1)
    message = channel.send(b"\x01lost", 0.0)
    channel.send(b"\x01next", 0.0)
    drain(channel, 0.0)
    feed(channel, 1.0, ack(1, 1))
    events(channel)
    now = 0.0
    while (deadline := channel.next_deadline()) is not None and deadline < MESSAGE_DEADLINE_S:
        now = deadline
        assert fragments(drain(channel, now)) == [(0, 0)]
    assert channel.next_deadline() == MESSAGE_DEADLINE_S
    assert drain(channel, MESSAGE_DEADLINE_S) == [Abandon(0)]
    assert events(channel) == [MessageAbandoned(message)]
    assert channel.statistics().drops[DropReason.ABANDONED] == 1
    rto = channel.rtt.rto_s
    assert channel.next_deadline() == pytest.approx(MESSAGE_DEADLINE_S + rto)
    assert drain(channel, MESSAGE_DEADLINE_S + rto) == [Abandon(0)]
    assert drain(channel, MESSAGE_DEADLINE_S + 2 * rto) == [Abandon(0)]
    assert channel.next_deadline() is None


def test_time_queued_behind_the_window_does_not_count() -> None:
    channel = client(initial_rtt_s=0.1)
    for n in range(9):
        channel.send(bytes([1, n]), 0.0)
    drain(channel, 0.0)
    feed(channel, 0.01, *[ack(seq, 1) for seq in range(1, 8)])
    feed(channel, 5.0, ack(0, 1))
    assert fragments(drain(channel, 5.0)) == [(8, 0)]
    events(channel)
    assert channel.next_deadline() is not None
    drain(channel, 14.9)
    assert events(channel) == []
    drain(channel, 15.0)
    assert [type(event) for event in events(channel)] == [MessageAbandoned]


def test_the_relay_fails_a_message_at_its_deadline_and_sends_no_abandon() -> None:
    channel = relay()
    message = channel.send(b"\x02presence", 0.0)
    drain(channel, 0.0)
    frames = drain(channel, MESSAGE_DEADLINE_S)
    assert not any(isinstance(frame, Abandon) for frame in frames)
    assert events(channel) == [MessageFailed(message, DropReason.UNREACHABLE)]
    assert channel.statistics().drops[DropReason.UNREACHABLE] == 1
    assert channel.next_deadline() is None


def test_a_new_relay_epoch_renumbers_the_unacknowledged_from_zero() -> None:
    channel = client(initial_rtt_s=0.1)
    first = channel.send(b"\x01a", 0.0)
    channel.send(b"\x01b", 0.0)
    drain(channel, 0.0)
    third = channel.send(b"\x01c", 1.0)
    drain(channel, 1.0)
    feed(channel, 1.1, ack(1, 1))
    events(channel)
    channel.set_peer_epoch(PEER_EPOCH + 1, 2.0)
    frames = drain(channel, 2.0)
    assert [(f.msg_seq, f.data) for f in frames if isinstance(f, Fragment)] == [
        (0, b"\x01a"),
        (1, b"\x01c"),
    ]
    # An ACK under the old epoch acknowledges nothing of the new numbering.
    channel.receive([ack(0, 1)], 2.01, epoch=PEER_EPOCH)
    assert events(channel) == []
    assert channel.statistics().drops[DropReason.STALE_EPOCH] == 1
    channel.receive([ack(1, 1)], 2.02, epoch=PEER_EPOCH + 1)
    assert events(channel) == [MessageAcknowledged(third)]
    # The renumbered message keeps its first transmission (at 0.0): its deadline is 10 s.
    drain(channel, MESSAGE_DEADLINE_S)
    assert events(channel) == [MessageAbandoned(first)]


def test_a_new_client_epoch_fails_what_the_relay_had_for_the_old_session() -> None:
    channel = relay()
    sent = [channel.send(bytes([2, n]), 0.0) for n in range(10)]
    drain(channel, 0.0)
    channel.set_peer_epoch(PEER_EPOCH + 1, 0.5)
    assert events(channel) == [MessageFailed(m, DropReason.REPLACED) for m in sent]
    assert channel.statistics().drops[DropReason.REPLACED] == 10
    channel.send(b"\x02roster", 0.6)
    assert drain(channel, 0.6) == [Fragment(0, 0, 1, b"\x02roster")]


def test_the_same_epoch_again_changes_nothing() -> None:
    channel = client()
    channel.send(b"\x01a", 0.0)
    drain(channel, 0.0)
    channel.set_peer_epoch(PEER_EPOCH, 0.1)
    assert drain(channel, 0.1) == []
    assert channel.role is Role.CLIENT


def test_idle_has_no_deadline() -> None:
    channel = client()
    assert channel.next_deadline() is None
    channel.send(b"\x01", 0.0)
    assert channel.next_deadline() == 0.0  # ready to send now


def test_the_oldest_sent_is_the_first_transmission_of_the_oldest_unacknowledged() -> None:
    channel = relay()
    assert oldest_sent(channel) is None
    for n in range(9):  # the ninth waits behind the window
        channel.send(bytes([2, n]), 0.0)
    assert oldest_sent(channel) is None  # queued, not yet out
    drain(channel, 1.0)
    feed(channel, 2.0, *[ack(seq, 1) for seq in range(1, 8)])
    drain(channel, 2.0)
    assert oldest_sent(channel) == 1.0  # msg_seq 0, resent since: the window waits on it
    feed(channel, 3.0, ack(0, 1))
    drain(channel, 3.0)
    assert oldest_sent(channel) == 3.0  # the ninth, out once the window moved
    feed(channel, 3.5, ack(8, 1))
    assert oldest_sent(channel) is None


def test_the_window_kept_waiting_is_the_oldests_time_out_past_half_a_second() -> None:
    """Summed as each oldest settles: a peer acknowledging just before the relay looks
    is seen as well; a message is counted only while it is the oldest."""
    assert SLOW_ACK_S == 0.5
    channel = relay()
    for n in range(9):
        channel.send(bytes([2, n]), 0.0)
    assert channel.kept_waiting_s(5.0) == 0.0  # queued, not yet out: the relay waits on itself
    drain(channel, 1.0)  # 0..7 out at 1.0; the ninth waits behind the window
    assert channel.kept_waiting_s(1.5) == 0.0
    assert channel.kept_waiting_s(2.0) == 0.5
    feed(channel, 2.0, *[ack(seq, 1) for seq in range(2, 8)])
    assert channel.kept_waiting_s(2.0) == 0.5  # msg_seq 0 still holds the window
    feed(channel, 3.0, ack(0, 1))
    assert channel.kept_waiting_s(3.0) == 1.5
    assert channel.kept_waiting_s(3.25) == 1.75  # msg_seq 1, the oldest since 3.0
    feed(channel, 3.25, ack(1, 1))
    drain(channel, 3.25)  # the ninth goes out
    assert channel.kept_waiting_s(3.7) == 1.75
    feed(channel, 4.0, ack(8, 1))
    assert channel.kept_waiting_s(10.0) == 2.0


def oldest_sent(channel: Channel) -> float | None:
    """Read anew each time (mypy keeps a property narrowed between calls)."""
    return channel.oldest_sent
