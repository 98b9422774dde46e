"""Channels fed arbitrary frames, sends and times: never a crash, always within bounds,
and what is delivered goes out once, in msg_seq order, per peer epoch."""

from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from mcrelay.protocol.secure.budget import ReceiveBudget
from mcrelay.protocol.secure.channel import Channel, ChannelFrame, Role
from mcrelay.protocol.secure.channel_events import MessageDelivered
from mcrelay.protocol.secure.frames import (
    MAX_PLAINTEXT_BYTES,
    Abandon,
    Ack,
    Fragment,
    encode_frames,
)
from mcrelay.protocol.secure.receiving import (
    HELD_MESSAGES,
    MAX_PEER_BYTES,
    MAX_PENDING_ACKS,
)
from mcrelay.protocol.secure.sending import FRAGMENT_WINDOW, MESSAGE_WINDOW, QUEUE_LIMIT

PEERS = 3
NEAR_SEQS = st.integers(0, 24) | st.integers(0, 3000)
"""msg_seqs that never wrap, so that delivery order is plain integer order; mostly
close together, so that messages wait for each other."""
ANY_SEQS = st.integers(0, 0xFFFFFFFF)
SIZES = st.sampled_from([0, 1, 7, 1150, 1200, 60_000])
TIMES = st.floats(0.0, 12.0, allow_nan=False)


def piece(msg_seq: int, index: int, size: int) -> bytes:
    """Fragment bytes that name their message, so a delivered body says which it was."""
    return msg_seq.to_bytes(4, "big") + index.to_bytes(2, "big") + bytes(size)


class Channels(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.budget = ReceiveBudget(max_bytes=1_000_000)
        self.epochs = [1] * PEERS
        self.channels = [self.new_channel(peer) for peer in range(PEERS)]
        self.delivered: list[list[int]] = [[] for _ in range(PEERS)]
        self.now = 0.0

    def new_channel(self, peer: int) -> Channel:
        role = Role.CLIENT if peer == 0 else Role.RELAY
        return Channel(role, peer_epoch=self.epochs[peer], budget=self.budget)

    def feed(self, peer: int, *frames: ChannelFrame) -> None:
        self.channels[peer].receive(frames, self.now, epoch=self.epochs[peer])
        self.collect(peer)

    def collect(self, peer: int) -> None:
        while (event := self.channels[peer].next_event()) is not None:
            if isinstance(event, MessageDelivered):
                self.delivered[peer].append(int.from_bytes(event.body[:4], "big"))

    @rule(
        peer=st.integers(0, PEERS - 1),
        msg_seq=NEAR_SEQS,
        index=st.integers(0, 70),
        count=st.integers(1, 70),
        size=SIZES,
    )
    def fragment(self, peer: int, msg_seq: int, index: int, count: int, size: int) -> None:
        index %= count
        self.feed(peer, Fragment(msg_seq, index, count, piece(msg_seq, index, size)))

    @rule(peer=st.integers(0, PEERS - 1), msg_seq=NEAR_SEQS, count=st.integers(1, 8))
    def whole_message(self, peer: int, msg_seq: int, count: int) -> None:
        self.feed(
            peer, *[Fragment(msg_seq, i, count, piece(msg_seq, i, 1150)) for i in range(count)]
        )

    @rule(peer=st.integers(0, PEERS - 1), msg_seq=NEAR_SEQS)
    def abandon(self, peer: int, msg_seq: int) -> None:
        self.feed(peer, Abandon(msg_seq))

    @rule(
        peer=st.integers(0, PEERS - 1),
        msg_seq=st.integers(0, 80),
        count=st.integers(0, 70),
        bits=st.integers(0, (1 << 70) - 1),
    )
    def ack(self, peer: int, msg_seq: int, count: int, bits: int) -> None:
        received = frozenset(i for i in range(count) if bits >> i & 1)
        self.feed(peer, Ack(msg_seq, count, received))

    @rule(peer=st.integers(0, PEERS - 1), size=SIZES)
    def send(self, peer: int, size: int) -> None:
        channel = self.channels[peer]
        if channel.can_send:
            channel.send(bytes([1]) + bytes(size), self.now)

    @rule(seconds=TIMES)
    def wait(self, seconds: float) -> None:
        self.now += seconds

    @rule(peer=st.integers(0, PEERS - 1))
    def flush(self, peer: int) -> None:
        channel = self.channels[peer]
        for _ in range(200):
            frames = channel.frames_to_send(self.now)
            if not frames:
                break
            assert len(encode_frames(frames)) <= MAX_PLAINTEXT_BYTES
        self.collect(peer)
        deadline = channel.next_deadline()
        assert deadline is None or deadline > self.now or channel.frames_to_send(self.now)

    @rule(peer=st.integers(0, PEERS - 1), on=st.booleans())
    def backpressure(self, peer: int, on: bool) -> None:
        self.channels[peer].backpressure = on

    @rule(peer=st.integers(0, PEERS - 1))
    def new_epoch(self, peer: int) -> None:
        self.epochs[peer] += 1
        self.channels[peer].set_peer_epoch(self.epochs[peer], self.now)
        self.collect(peer)  # delivered at deadlines passed on the way, under the old epoch
        self.delivered[peer].append(-1)  # order starts again

    @rule(peer=st.integers(0, PEERS - 1))
    def replace(self, peer: int) -> None:
        self.collect(peer)
        self.channels[peer].close()
        self.channels[peer] = self.new_channel(peer)
        self.delivered[peer].append(-1)

    @invariant()
    def bounded(self) -> None:
        total = 0
        for channel in self.channels:
            stats = channel.statistics()
            assert stats.held <= HELD_MESSAGES
            assert stats.held_bytes <= MAX_PEER_BYTES
            assert stats.acks_pending <= MAX_PENDING_ACKS + HELD_MESSAGES
            assert stats.in_flight <= MESSAGE_WINDOW
            assert stats.fragments_in_flight <= FRAGMENT_WINDOW
            assert stats.queued <= QUEUE_LIMIT
            total += stats.held_bytes
        assert self.budget.total == total <= self.budget.max_bytes

    @invariant()
    def once_and_in_order(self) -> None:
        for seqs in self.delivered:
            run = seqs[len(seqs) - 1 - seqs[::-1].index(-1) + 1 :] if -1 in seqs else seqs
            assert run == sorted(set(run))


Channels.TestCase.settings = settings(max_examples=150, stateful_step_count=60, deadline=None)
TestChannels = Channels.TestCase


class TightBudget(Channels):
    """The same, with a shared budget so small that evictions and refusals happen, and
    its accounting checked against what the receivers really hold: the bytes of each,
    and of its partial messages (the ones that can be evicted)."""

    def __init__(self) -> None:
        super().__init__()
        self.budget.max_bytes = 6_000

    @invariant()
    def accounted(self) -> None:
        held: dict[object, int] = {}
        partial: dict[object, int] = {}
        for channel in self.channels:
            receiver = channel._receiver
            messages = receiver._held.values()
            if total := sum(incoming.charged for incoming in messages):
                held[receiver] = total
            if part := sum(incoming.charged for incoming in messages if incoming.partial):
                partial[receiver] = part
        assert self.budget._held == held
        assert self.budget._partial == partial
        assert self.budget._partial_total == sum(partial.values())


TightBudget.TestCase.settings = settings(max_examples=150, stateful_step_count=60, deadline=None)
TestTightBudget = TightBudget.TestCase


FRAMES = st.one_of(
    st.builds(
        lambda seq, count, index, data: Fragment(seq, index % count, count, data),
        ANY_SEQS,
        st.integers(1, 0xFFFF),
        st.integers(0, 0xFFFF),
        st.binary(max_size=64),
    ),
    st.builds(
        lambda seq, count, bits: Ack(
            seq, count, frozenset(i for i in range(count) if bits >> i & 1)
        ),
        ANY_SEQS,
        st.integers(0, 200),
        st.integers(0, (1 << 200) - 1),
    ),
    st.builds(Abandon, ANY_SEQS),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(TIMES, st.lists(FRAMES, max_size=6)), max_size=30))
def test_any_frames_at_any_msg_seq(batches: list[tuple[float, list[ChannelFrame]]]) -> None:
    channel = Channel(Role.RELAY, peer_epoch=1)
    channel.send(b"\x02" + bytes(3000), 0.0)
    now = 0.0
    for seconds, frames in batches:
        now += seconds
        channel.receive(frames, now, epoch=1)
        while channel.frames_to_send(now):
            pass
        while channel.next_event() is not None:
            pass
        stats = channel.statistics()
        assert stats.held <= HELD_MESSAGES
        assert stats.held_bytes <= MAX_PEER_BYTES
        assert stats.acks_pending <= MAX_PENDING_ACKS + HELD_MESSAGES
