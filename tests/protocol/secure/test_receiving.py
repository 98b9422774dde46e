"""The receiving half, driven by hand: order, settling, deadlines, ACKs, back-pressure."""

import math

import pytest

from mcrelay.protocol.errors import DropReason
from mcrelay.protocol.secure.channel import Channel, Role
from mcrelay.protocol.secure.channel_events import MessageDelivered
from mcrelay.protocol.secure.frames import Abandon, Ack, Fragment
from mcrelay.protocol.secure.receiving import (
    ACK_DELAY_S,
    DISCONNECT_HOLD_S,
    MAX_PEER_BYTES,
    RECEIVE_DEADLINE_S,
)
from mcrelay.protocol.secure.sending import ACK_INTERVAL_S

from .channel_support import PEER_EPOCH, ack, acks, client, drain, events, feed, relay, whole


def delivered(channel: Channel) -> list[bytes]:
    return [event.body for event in events(channel) if isinstance(event, MessageDelivered)]


def chat(n: int) -> bytes:
    return bytes([1]) + n.to_bytes(4, "big")


def test_a_message_is_delivered_once_whole() -> None:
    channel = relay()
    body = bytes(range(256)) * 10
    first, second, third = whole(0, body)
    feed(channel, 0.0, third, first, first)
    assert delivered(channel) == []
    feed(channel, 0.01, second, third)
    assert delivered(channel) == [body]
    assert channel.statistics().drops[DropReason.DUPLICATE_FRAGMENT] == 2


def test_delivery_waits_for_every_earlier_message() -> None:
    channel = relay()
    feed(channel, 0.0, *whole(2, chat(2)), *whole(1, chat(1)))
    assert delivered(channel) == []
    assert channel.statistics().held == 2
    feed(channel, 0.01, *whole(0, chat(0)))
    assert delivered(channel) == [chat(0), chat(1), chat(2)]
    assert channel.statistics().held == 0


def test_one_data_starts_at_most_eight_new_messages() -> None:
    """A sender has at most 8 in flight; one DATA of 100 whole messages delivered all
    100 at once, each then admitted by the relay past its bounds (found by review)."""
    channel = relay()
    burst = [fragment for n in range(100) for fragment in whole(n, chat(n))]
    feed(channel, 0.0, *burst)
    assert delivered(channel) == [chat(n) for n in range(8)]
    assert channel.statistics().drops[DropReason.MESSAGE_WINDOW] == 92
    # Not acknowledged: sent again, the next DATA starts the next 8; a fragment of a
    # message already started is no new one.
    big = whole(8, bytes(3000))
    more = [fragment for n in range(9, 17) for fragment in whole(n, chat(n))]
    feed(channel, 0.01, big[0], *more)
    assert delivered(channel) == []  # 9 to 15 wait for 8; 16 is the ninth new one
    assert channel.statistics().drops[DropReason.MESSAGE_WINDOW] == 93
    feed(channel, 0.02, *big[1:], *whole(16, chat(16)))
    assert delivered(channel) == [bytes(3000), *(chat(n) for n in range(9, 17))]


def test_a_fragment_settles_every_message_below_its_msg_seq_minus_seven() -> None:
    channel = relay()
    feed(channel, 0.0, whole(0, bytes(2000))[0])  # msg 0 incomplete
    feed(channel, 0.0, *whole(2, chat(2)))  # msg 2 complete, waiting (1 unseen)
    feed(channel, 0.0, whole(3, bytes(2000))[0])  # msg 3 incomplete
    feed(channel, 0.1, *whole(9, chat(9)))
    # 9 - 7 = 2: messages 0 and 1 are settled; 2 goes out, 3 is held.
    assert delivered(channel) == [chat(2)]
    assert channel.statistics().drops[DropReason.ABANDONED] == 1
    feed(channel, 0.2, whole(3, bytes(2000))[1])
    assert delivered(channel) == [bytes(2000)]
    feed(channel, 0.2, *[frame for seq in range(4, 9) for frame in whole(seq, chat(seq))])
    assert delivered(channel) == [chat(seq) for seq in range(4, 10)]


def test_a_settled_gap_releases_the_complete_message_behind_it() -> None:
    channel = relay()
    feed(channel, 0.0, *whole(3, chat(3)))  # complete, waits for 0..2
    feed(channel, 0.1, whole(10, bytes(2000))[0])  # incomplete: settles 0..2
    assert delivered(channel) == [chat(3)]


def test_abandon_skips_a_message_and_settles_below_minus_seven() -> None:
    channel = relay()
    feed(channel, 0.0, whole(0, bytes(2000))[0], *whole(1, chat(1)))
    feed(channel, 0.1, Abandon(0))
    assert delivered(channel) == [chat(1)]
    feed(channel, 0.2, whole(0, bytes(2000))[1])
    assert channel.statistics().drops[DropReason.LATE_FRAGMENT] == 1
    feed(channel, 0.3, *whole(3, chat(3)), Abandon(12))  # settles 2..4, marks 12
    assert delivered(channel) == [chat(3)]
    feed(channel, 0.4, *[frame for seq in range(5, 12) for frame in whole(seq, chat(seq))])
    feed(channel, 0.4, *whole(13, chat(13)))
    assert delivered(channel) == [chat(seq) for seq in (*range(5, 12), 13)]


def test_an_abandoned_complete_message_is_not_delivered() -> None:
    """The sender gave it up (its ACK was lost): it reports it not sent, so it is not."""
    channel = relay()
    feed(channel, 0.0, *whole(1, chat(1)))
    feed(channel, 0.1, Abandon(1), *whole(0, chat(0)))
    assert delivered(channel) == [chat(0)]
    assert acks(drain(channel, 0.1 + ACK_DELAY_S)) == [ack(0, 1)]


def test_a_partial_message_is_given_up_after_ten_seconds() -> None:
    channel = relay()
    feed(channel, 1.0, whole(0, bytes(2000))[0], *whole(1, chat(1)))
    drain(channel, 1.0)
    channel.poll(1.0 + RECEIVE_DEADLINE_S - 0.001)
    assert delivered(channel) == []
    channel.poll(1.0 + RECEIVE_DEADLINE_S)
    assert delivered(channel) == [chat(1)]
    assert channel.statistics().drops[DropReason.REASSEMBLY_TIMEOUT] == 1


def test_a_message_waiting_on_an_unseen_one_goes_at_its_deadline() -> None:
    """Every earlier message started before it: the sender gave them up by then."""
    channel = relay()
    feed(channel, 1.0, *whole(2, chat(2)))
    drain(channel, 1.0 + ACK_DELAY_S)
    assert channel.next_deadline() == 1.0 + RECEIVE_DEADLINE_S
    channel.poll(1.0 + RECEIVE_DEADLINE_S)
    assert delivered(channel) == [chat(2)]
    assert channel.next_deadline() is None


def test_the_full_ack_waits_up_to_ten_ms() -> None:
    channel = relay()
    feed(channel, 0.0, *whole(0, chat(0)))
    assert drain(channel, ACK_DELAY_S - 0.001) == []
    assert channel.next_deadline() == ACK_DELAY_S
    assert drain(channel, ACK_DELAY_S) == [ack(0, 1)]


def test_the_full_ack_rides_with_frames_going_out() -> None:
    channel = relay()
    feed(channel, 0.0, *whole(0, chat(0)))
    channel.send(b"\x01reply", 0.002)
    assert drain(channel, 0.002) == [ack(0, 1), Fragment(0, 0, 1, b"\x01reply")]


def test_a_disconnect_is_acked_at_once() -> None:
    channel = relay()
    feed(channel, 0.0, Fragment(0, 0, 1, b"\x04"))
    assert drain(channel, 0.0) == [ack(0, 1)]


def test_acks_go_at_once_when_the_senders_window_is_half_used() -> None:
    channel = relay()
    feed(channel, 0.0, *whole(0, chat(0)), *whole(1, chat(1)), *whole(2, chat(2)))
    assert drain(channel, 0.0) == []
    feed(channel, 0.0, *whole(3, chat(3)))
    assert sorted(acks(drain(channel, 0.0)), key=lambda a: a.msg_seq) == [
        ack(seq, 1) for seq in range(4)
    ]
    big = whole(4, bytes(40 * 1150))  # 32 fragments unacknowledged: half the fragment window
    feed(channel, 0.001, *big[:31])
    assert drain(channel, 0.001) == []
    feed(channel, 0.001, *big[31:])
    assert drain(channel, 0.001) == [ack(4, 40)]


def test_the_bitmap_so_far_every_40_ms_while_incomplete() -> None:
    channel = relay()
    first, _, third = whole(0, bytes(3000))
    feed(channel, 0.0, first, third)
    assert drain(channel, ACK_INTERVAL_S - 0.001) == []
    assert drain(channel, ACK_INTERVAL_S) == [ack(0, 3, {0, 2})]
    assert drain(channel, 2 * ACK_INTERVAL_S - 0.001) == []
    assert drain(channel, 2 * ACK_INTERVAL_S) == [ack(0, 3, {0, 2})]


def test_a_fragment_of_a_completed_message_is_acked_again_within_1024() -> None:
    channel = relay()
    now = 0.0
    for seq in range(1100):
        feed(channel, now, *whole(seq, chat(seq)))
        drain(channel, now)
        now += 0.001
    assert len(delivered(channel)) == 1100
    feed(channel, now, *whole(1099 - 1023, chat(0)))
    assert drain(channel, now + ACK_DELAY_S) == [ack(1099 - 1023, 1)]
    feed(channel, now, *whole(1099 - 1024, chat(0)))
    assert drain(channel, now + ACK_DELAY_S) == []
    drops = channel.statistics().drops
    assert drops[DropReason.DUPLICATE_FRAGMENT] == 1
    assert drops[DropReason.LATE_FRAGMENT] == 1


def test_a_delivered_message_is_acked_again_as_it_completed_whatever_count_is_claimed() -> None:
    """A fragment of delivered message 1 (3 fragments) claiming 5 got an ACK of 5, all
    acknowledged: a receiver acknowledged fragments it never had (found by review)."""
    channel = relay()
    feed(channel, 0.0, *whole(0, chat(0)), *whole(1, bytes(3000)))
    assert len(delivered(channel)) == 2
    drain(channel, ACK_DELAY_S)
    for claimed in (5, 3, 1):
        feed(channel, 0.5, Fragment(1, 0, claimed, b"x"))
        assert drain(channel, 0.5 + ACK_DELAY_S) == [ack(1, 3)]
    feed(channel, 0.6, Fragment(0, 0, 2, b"x"))  # one of one fragment, claimed as of 2
    assert drain(channel, 0.6 + ACK_DELAY_S) == [ack(0, 1)]
    assert channel.statistics().drops == {DropReason.DUPLICATE_FRAGMENT: 4}


def test_a_fragment_of_a_waiting_completed_message_is_acked_again() -> None:
    channel = relay()
    feed(channel, 0.0, *whole(1, chat(1)))
    drain(channel, ACK_DELAY_S)
    feed(channel, 0.5, *whole(1, chat(1)))
    assert drain(channel, 0.5 + ACK_DELAY_S) == [ack(1, 1)]


def test_backpressure_drops_new_messages_but_not_started_ones_or_disconnect() -> None:
    channel = relay()
    feed(channel, 0.0, whole(0, bytes(2000))[0])
    channel.backpressure = True
    feed(channel, 0.1, whole(0, bytes(2000))[1], *whole(1, chat(1)))
    feed(channel, 0.1, Fragment(2, 0, 2, b"\x04"), Fragment(2, 1, 2, b""))
    assert delivered(channel) == [bytes(2000)]
    assert channel.statistics().drops[DropReason.BACKPRESSURE] == 3
    assert acks(drain(channel, 0.1 + ACK_DELAY_S)) == [ack(0, 2)]
    feed(channel, 0.2, Fragment(1, 0, 1, b"\x04"))  # a whole DISCONNECT goes through
    assert delivered(channel) == [b"\x04"]
    assert drain(channel, 0.2) == [ack(1, 1)]
    channel.backpressure = False
    feed(channel, 0.3, *whole(2, chat(2)))
    assert delivered(channel) == [chat(2)]


def test_backpressure_lets_acks_and_our_own_messages_through() -> None:
    channel = client()
    channel.backpressure = True
    channel.send(b"\x01mine", 0.0)
    assert drain(channel, 0.0) == [Fragment(0, 0, 1, b"\x01mine")]
    feed(channel, 0.01, ack(0, 1))
    assert channel.statistics().in_flight == 0


def test_frames_of_another_epoch_are_dropped_and_a_new_epoch_starts_afresh() -> None:
    channel = client()
    channel.receive(whole(0, chat(0)), 0.0, epoch=PEER_EPOCH + 1)
    assert delivered(channel) == []
    assert channel.statistics().drops[DropReason.STALE_EPOCH] == 1
    feed(channel, 0.0, whole(1, bytes(2000))[0], *whole(0, chat(0)))
    assert delivered(channel) == [chat(0)]
    channel.set_peer_epoch(PEER_EPOCH + 1, 0.1)
    assert drain(channel, 0.1) == []  # the old epoch's pending ACK is gone with it
    assert channel.statistics().drops[DropReason.STALE_EPOCH] == 2
    assert channel.statistics().held == 0
    feed(channel, 0.2, *whole(0, chat(100)))
    assert delivered(channel) == [chat(100)]


def test_bad_fragment_numbers_are_counted() -> None:
    channel = relay()
    feed(channel, 0.0, Fragment(0, 0, 65, b"x"))
    feed(channel, 0.0, Fragment(1, 0, 2, b"x"), Fragment(1, 1, 3, b"x"))
    assert channel.statistics().drops[DropReason.INVALID_FRAGMENT] == 2
    assert channel.statistics().held == 1


def test_a_peer_holds_at_most_576_kib() -> None:
    """Plaintext over 1,200 bytes is accepted, so a fragment may be large; bytes bound it."""
    channel = relay()
    piece = bytes(60_000)
    feed(channel, 0.0, *[Fragment(0, index, 64, piece) for index in range(12)])
    stats = channel.statistics()
    assert stats.held_bytes <= MAX_PEER_BYTES
    assert stats.drops[DropReason.BUFFER_LIMIT] == 3


def test_the_full_bitmap_ack_is_what_frames_say() -> None:
    channel = relay()
    feed(channel, 0.0, Fragment(0, 0, 1, b"\x01"))
    (frame,) = drain(channel, ACK_DELAY_S)
    assert isinstance(frame, Ack)
    assert frame.complete


@pytest.mark.parametrize("role", list(Role))
def test_both_roles_receive_alike(role: Role) -> None:
    channel = Channel(role, peer_epoch=1)
    channel.receive(whole(0, chat(0)), 0.0, epoch=1)
    assert delivered(channel) == [chat(0)]


def test_a_disconnect_waits_in_order_for_an_earlier_message_still_arriving() -> None:
    """The page: a completed message waits until every earlier one is delivered or
    abandoned. A complete DISCONNECT overtook message 0, whose last fragment came 50 ms
    later: message 0 was counted abandoned, never delivered (found by review)."""
    channel = relay()
    first, second = whole(0, bytes(2000))
    feed(channel, 0.0, first)
    feed(channel, 0.01, Fragment(1, 0, 1, b"\x04"))
    assert drain(channel, 0.01) == [ack(1, 1)]  # acknowledged at once all the same
    assert delivered(channel) == []
    feed(channel, 0.06, second)
    assert delivered(channel) == [bytes(2000), b"\x04"]
    assert channel.statistics().drops == {}


def test_a_disconnect_waits_a_second_at_most_then_what_is_missing_is_abandoned() -> None:
    # Its client closes once the DISCONNECT is acknowledged: a CHAT refused under
    # back-pressure never comes again, and a DISCONNECT held behind it for good made
    # the leave a timeout (found in review).
    channel = relay()
    feed(channel, 0.0, *whole(0, chat(0)))
    channel.backpressure = True
    feed(channel, 0.1, *whole(1, chat(1)))  # refused: not started
    first, second = whole(2, bytes(2000))
    feed(channel, 0.1, first)  # refused as well
    channel.backpressure = False
    feed(channel, 0.2, *whole(3, chat(3)))  # complete, waiting behind 1 and 2
    feed(channel, 0.3, Fragment(4, 0, 1, b"\x04"))
    assert delivered(channel) == [chat(0)]
    channel.poll(0.3 + DISCONNECT_HOLD_S - 0.001)
    assert delivered(channel) == []
    channel.poll(0.3 + DISCONNECT_HOLD_S)
    assert delivered(channel) == [chat(3), b"\x04"]
    assert channel.statistics().drops == {DropReason.BACKPRESSURE: 2}  # counted once
    feed(channel, 1.4, second)  # too late: settled
    assert delivered(channel) == []


def test_a_disconnect_gives_up_what_is_incomplete_before_it_as_abandoned() -> None:
    channel = relay()
    feed(channel, 0.0, whole(0, bytes(2000))[0], *whole(1, chat(1)))
    feed(channel, 0.5, Fragment(2, 0, 1, b"\x04"))
    now, out = 0.5, list[bytes]()
    while not out:  # woken when it says (the bitmap of message 0 every 40 ms meanwhile)
        drain(channel, now)
        now = channel.next_deadline() or math.inf
        channel.poll(now)
        out = delivered(channel)
    assert now == pytest.approx(0.5 + DISCONNECT_HOLD_S)
    assert out == [chat(1), b"\x04"]
    assert channel.statistics().drops == {DropReason.ABANDONED: 1}


def test_a_disconnect_next_in_order_is_delivered_at_once() -> None:
    channel = relay()
    feed(channel, 0.0, *whole(0, chat(0)), Fragment(1, 0, 1, b"\x04"))
    assert delivered(channel) == [chat(0), b"\x04"]
