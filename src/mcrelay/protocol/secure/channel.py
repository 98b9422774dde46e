"""A secure channel: the reliable, in-order, exactly-once messages between one client
and the relay, seen from one side (secure-wire.md, "Messages").

Sans-I/O and told the time, like aioquic's ``QuicConnection``: the caller feeds it
the frames of each authenticated DATA (:meth:`Channel.receive`), queues bodies
(:meth:`Channel.send`), asks for the frames of the next DATA
(:meth:`Channel.frames_to_send`, several frames packed into one plaintext), reads
events (:meth:`Channel.next_event`) and wakes it at :meth:`Channel.next_deadline`.
It never encrypts and knows no addresses: the session puts its frames into DATA.

Bodies are opaque bytes; only a first byte of 4 (DISCONNECT) matters here, for the
immediate ACK and the back-pressure exception. Whether a body is too large or of an
unknown kind is the caller's decision once it is delivered: every completed message
is acknowledged, so dropping it then is the page's "ACKed, dropped and counted".
"""

from collections import Counter, deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import Enum
from types import MappingProxyType

from mcrelay.protocol.errors import DropReason
from mcrelay.protocol.secure.budget import ReceiveBudget
from mcrelay.protocol.secure.channel_events import Event
from mcrelay.protocol.secure.frames import MAX_PLAINTEXT_BYTES, Abandon, Ack, Fragment, frame_size
from mcrelay.protocol.secure.receiving import Receiver
from mcrelay.protocol.secure.rtt import RttEstimator
from mcrelay.protocol.secure.sending import QUEUE_LIMIT, Sender

ChannelFrame = Fragment | Ack | Abandon


class Role(Enum):
    """Which side the channel is: they differ at a deadline and at a new peer epoch."""

    CLIENT = "client"
    """At a message's deadline, ABANDON (3 times); at a new relay epoch, renumber."""
    RELAY = "relay"
    """At a message's deadline, fail it (the member is unreachable); at a new client
    epoch, fail what was towards the old session (it is replaced)."""


@dataclass(frozen=True, slots=True)
class ChannelStatistics:
    srtt_s: float | None
    latest_rtt_s: float | None
    rto_s: float
    messages_sent: int
    """Messages whose first fragment went out."""
    messages_delivered: int
    fragments_sent: int
    """First transmissions."""
    retransmissions: int
    """Fragments sent again (after an ACK showed them missing, or a timeout)."""
    timeouts: int
    acks_sent: int
    in_flight: int
    fragments_in_flight: int
    queued: int
    held: int
    held_bytes: int
    acks_pending: int
    drops: Mapping[DropReason, int]


class Channel:
    """One side of a client<->relay pair: the messages both ways under the peer's epoch."""

    def __init__(
        self,
        role: Role,
        *,
        peer_epoch: int,
        initial_rtt_s: float | None = None,
        budget: ReceiveBudget | None = None,
    ) -> None:
        """``initial_rtt_s``: the handshake's round trip, the first RTT sample when known.
        ``budget``: the reassembly bytes shared with the relay's other channels (a
        channel of its own when None)."""
        self.role = role
        self.peer_epoch = peer_epoch
        self.rtt = RttEstimator(initial_rtt_s)
        self._events: deque[Event] = deque()
        self._drops: Counter[DropReason] = Counter()
        self._reported: Counter[DropReason] = Counter()
        self._reported_total = 0
        self._sender = Sender(
            self.rtt,
            abandons=role is Role.CLIENT,
            sticky_acks=role is Role.RELAY,
            emit=self._events.append,
            drops=self._drops,
        )
        self._receiver = Receiver(
            budget if budget is not None else ReceiveBudget(),
            emit=self._events.append,
            drops=self._drops,
        )
        self._now = float("-inf")
        self.more_to_send = False
        """The last :meth:`frames_to_send` left due frames for another DATA."""

    @property
    def backpressure(self) -> bool:
        """While set, a fragment of a message not started is dropped unacknowledged and
        counted (``backpressure``), unless it is a whole DISCONNECT."""
        return self._receiver.backpressure

    @backpressure.setter
    def backpressure(self, on: bool) -> None:
        self._receiver.backpressure = on

    @property
    def refused(self) -> int:
        """Fragments of new messages dropped under :attr:`backpressure` so far."""
        return self._drops[DropReason.BACKPRESSURE]

    @property
    def refusals_outstanding(self) -> bool:
        """A message refused under :attr:`backpressure` is neither delivered nor given up
        yet (the peer's epoch changed meanwhile: none is)."""
        return self._receiver.refusals_outstanding

    @property
    def given_up(self) -> int:
        """The peer's messages given up so far: abandoned, or past their deadline."""
        return self._receiver.given_up

    @property
    def queued(self) -> int:
        """Messages waiting behind the window (the relay's back-pressure looks at this)."""
        return self._sender.queued

    @property
    def abandons_owed(self) -> bool:
        """An ABANDON has yet to go out one of its 3 times (the client's)."""
        return self._sender.abandons_owed

    @property
    def oldest_sent(self) -> float | None:
        """When the oldest message not yet acknowledged first went out (None: none is
        out); the relay's send buffers look at it while crowded."""
        return self._sender.oldest_sent

    def kept_waiting_s(self, now: float) -> float:
        """Seconds in all that the oldest message not yet acknowledged had been out more
        than :data:`~mcrelay.protocol.secure.sending.SLOW_ACK_S`: how long the peer kept
        the window waiting (the relay's send buffers look at it while crowded)."""
        return self._sender.kept_waiting_s(now)

    @property
    def can_send(self) -> bool:
        return self._sender.queued < QUEUE_LIMIT

    def send(self, body: bytes, now: float, *, bounded: bool = True) -> int:
        """Queue a message body; its id, named again by the event that settles it.

        Raises :class:`~mcrelay.protocol.secure.sending.QueueFull` when
        :data:`~mcrelay.protocol.secure.sending.QUEUE_LIMIT` messages already wait,
        unless ``bounded`` is false: the relay bounds its queues itself (its own
        messages, one PRESENCE per member for a newcomer, are not held to 64).
        """
        self.poll(now)
        return self._sender.send(body, bounded=bounded)

    def receive(self, frames: Iterable[ChannelFrame], now: float, *, epoch: int) -> None:
        """Act on the channel's frames of one authenticated DATA, sent under the peer's
        ``epoch`` (frames of an earlier epoch are dropped: ``stale_epoch``)."""
        self.poll(now)
        self._receiver.datagram_begins()
        for frame in frames:
            if epoch != self.peer_epoch:
                self._drops[DropReason.STALE_EPOCH] += 1
            elif type(frame) is Fragment:  # by exact type: no isinstance, no class pattern
                self._receiver.on_fragment(frame, now)
            elif type(frame) is Ack:
                self._sender.on_ack(frame, now)
            elif type(frame) is Abandon:
                self._receiver.on_abandon(frame, now)

    def set_peer_epoch(self, epoch: int, now: float) -> None:
        """The peer's epoch as of its first authenticated DATA under a new handshake.

        A new one resets the receive state and numbers our messages from 0 again: the
        client sends its unacknowledged ones again, renumbered in order; the relay
        fails what it had for the old session (``replaced``).
        """
        self.poll(now)
        if epoch == self.peer_epoch:
            return
        self.peer_epoch = epoch
        self._receiver.reset(DropReason.STALE_EPOCH)
        if self.role is Role.CLIENT:
            self._sender.renumber()
        else:
            self._sender.discard()

    def poll(self, now: float) -> None:
        """Act on every timer that has passed (the other methods do this first). Once
        per time told: a timer set meanwhile is set after that time, never at it."""
        if now <= self._now:
            return
        self._now = now
        self._sender.poll(now)
        self._receiver.poll(now)

    def frames_to_send(self, now: float, room: int = MAX_PLAINTEXT_BYTES) -> list[ChannelFrame]:
        """The frames of the next DATA, at most ``room`` plaintext bytes; [] when nothing
        is due. ACKs not yet due ride along with anything that is. Call until []."""
        self.poll(now)
        self.more_to_send = False
        if not (self._receiver.acks_due(now) or self._sender.has_ready(now)):
            return []
        acks = self._receiver.ack_frames(now, room)
        room -= sum(frame_size(ack) for ack in acks)
        frames: list[ChannelFrame] = [*acks, *self._sender.frames(now, room)]
        self.more_to_send = self._receiver.filled or self._sender.filled
        return frames

    def next_event(self) -> Event | None:
        return self._events.popleft() if self._events else None

    def next_deadline(self) -> float | None:
        """When :meth:`frames_to_send` or :meth:`poll` next has work (None: idle); the
        last time given when frames are ready now."""
        if self._sender.has_ready(self._now):
            return self._now
        sender, receiver = self._sender.next_deadline(), self._receiver.next_deadline()
        if sender is None or receiver is None:
            return receiver if sender is None else sender
        return min(sender, receiver)

    def statistics(self) -> ChannelStatistics:
        return ChannelStatistics(
            srtt_s=self.rtt.srtt_s,
            latest_rtt_s=self.rtt.latest_s,
            rto_s=self.rtt.rto_s,
            messages_sent=self._sender.messages_sent,
            messages_delivered=self._receiver.delivered,
            fragments_sent=self._sender.fragments_sent,
            retransmissions=self._sender.retransmissions,
            timeouts=self._sender.timeouts,
            acks_sent=self._receiver.acks_sent,
            in_flight=self._sender.in_flight,
            fragments_in_flight=self._sender.fragments_in_flight,
            queued=self._sender.queued,
            held=self._receiver.held,
            held_bytes=self._receiver.held_bytes,
            acks_pending=self._receiver.acks_pending,
            drops=MappingProxyType(dict(self._drops)),
        )

    def take_drops(self) -> Counter[DropReason]:
        """The drops counted since the last call (:meth:`statistics` keeps the totals)."""
        if self._drops.total() == self._reported_total:  # counts only grow
            return Counter()
        fresh = self._drops - self._reported
        self._reported.update(fresh)
        self._reported_total = self._reported.total()
        return fresh

    def close(self) -> None:
        """The channel ends (its member is gone): give its bytes back to the shared budget,
        and let go of what it was sending."""
        self._receiver.reset(None)
        self._sender.clear()
