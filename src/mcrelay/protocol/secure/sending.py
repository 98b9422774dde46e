"""The sending half of a secure channel: windows, retransmission, deadlines, ABANDON.

Messages wait in a queue (at most :data:`QUEUE_LIMIT`), enter the window in order
(msg_seq below the oldest unsettled + :data:`MESSAGE_WINDOW`), and go out fragment by
fragment while fewer than :data:`FRAGMENT_WINDOW` are unacknowledged. Each message
has one retransmission timer (RFC 6298, the peer's :class:`RttEstimator`) and a
deadline :data:`MESSAGE_DEADLINE_S` after its first fragment went out. An ACK is the
receiver's state of one message: its missing fragments are sent again once they have
had a round trip to arrive; the full bitmap settles the message.
"""

import math
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field

from mcrelay.protocol.errors import DropReason, LocalProtocolError, ProtocolError
from mcrelay.protocol.secure.channel_events import (
    MessageAbandoned,
    MessageAcknowledged,
    MessageFailed,
    SendEvent,
)
from mcrelay.protocol.secure.frames import (
    ABANDON_VALUE,
    FRAGMENT_HEADER,
    FRAME_HEADER,
    MAX_FRAGMENT_BYTES,
    Abandon,
    Ack,
    Fragment,
)
from mcrelay.protocol.secure.rtt import GRANULARITY_S, MAX_RTO_S, RttEstimator
from mcrelay.protocol.secure.serial import serial_add, serial_diff

MESSAGE_WINDOW = 8
"""Messages in flight per peer, as a msg_seq range from the oldest unsettled."""
FRAGMENT_WINDOW = 64
"""Fragments sent and not yet acknowledged, per peer."""
QUEUE_LIMIT = 64
"""Messages waiting behind the window, per peer."""
MAX_MESSAGE_FRAGMENTS = 58
"""A sender's most fragments per message (the largest CHAT needs 58)."""
MAX_BODY_BYTES = MAX_MESSAGE_FRAGMENTS * MAX_FRAGMENT_BYTES
MESSAGE_DEADLINE_S = 10.0
"""From a message's first transmission to giving it up."""
ABANDON_SENDS = 3
"""ABANDON is not acknowledged: the client sends it this many times, an RTO apart."""
LOSS_DELAY_FACTOR = 9 / 8
"""A fragment an ACK shows missing is sent again once this many SRTTs have passed
since its last transmission (QUIC's time threshold): earlier, it may still be on its way."""
ACK_INTERVAL_S = 0.040
"""A receiver sends the bitmap so far this often while a message is incomplete."""
SLOW_ACK_S = 0.5
"""The oldest message in flight unacknowledged longer than this after it first went
out keeps the window waiting on the peer (:meth:`Sender.kept_waiting_s`): a client of
the page answers within :data:`ACK_INTERVAL_S` and its round trip, and a relay whose
receive queue lags shows its members late by that lag."""
_FRAGMENT_OVERHEAD = FRAME_HEADER.size + FRAGMENT_HEADER.size
ABANDON_FRAME_BYTES = FRAME_HEADER.size + ABANDON_VALUE.size


class QueueFull(ProtocolError):
    """:data:`QUEUE_LIMIT` messages already wait: the caller waits or drops and counts."""


def _bits(mask: int) -> list[int]:
    return [index for index in range(mask.bit_length()) if mask >> index & 1]


@dataclass(slots=True, eq=False)
class _Outgoing:
    message_id: int
    body: bytes
    count: int
    msg_seq: int = 0
    first_sent: float | None = None
    sent: int = 0
    """Fragments 0..sent-1 went out at least once (fragments go out in index order)."""
    sent_at: list[float] = field(default_factory=list)
    """Each sent fragment's last transmission."""
    acked: int = 0
    """Bit i: the latest ACK showed fragment i received."""
    retransmitted: int = 0
    resend: int = 0
    """Bit i: fragment i is to be sent again."""
    rto_at: float | None = None
    armed_at: float = 0.0

    def fragment(self, index: int) -> Fragment:
        start = index * MAX_FRAGMENT_BYTES
        return Fragment(
            self.msg_seq, index, self.count, self.body[start : start + MAX_FRAGMENT_BYTES]
        )

    def size(self, index: int) -> int:
        return _FRAGMENT_OVERHEAD + min(
            MAX_FRAGMENT_BYTES, len(self.body) - index * MAX_FRAGMENT_BYTES
        )

    @property
    def unacked(self) -> int:
        """Sent fragments the peer has not shown it holds."""
        return ((1 << self.sent) - 1) & ~self.acked

    def restart(self, msg_seq: int) -> None:
        """Renumbered towards a new peer epoch: nothing of it has reached that peer."""
        self.msg_seq = msg_seq
        self.sent = self.acked = self.retransmitted = self.resend = 0
        self.sent_at = []
        self.rto_at = None


class Sender:
    """Messages towards one peer, from ``send`` to acknowledged, abandoned or failed."""

    def __init__(
        self,
        rtt: RttEstimator,
        *,
        abandons: bool,
        sticky_acks: bool = False,
        emit: Callable[[SendEvent], None],
        drops: Counter[DropReason],
    ) -> None:
        self.rtt = rtt
        self.abandons = abandons
        """True for a client (ABANDON at the deadline), False for the relay (fail)."""
        self.sticky_acks = sticky_acks
        """The relay's: a fragment a client showed received stays so (a client never
        evicts); the client's peer, the relay, may evict under its total bound."""
        self._emit = emit
        self._drops = drops
        self._queue: deque[_Outgoing] = deque()
        self._flight: dict[int, _Outgoing] = {}
        """Admitted and unsettled, by msg_seq, in msg_seq order."""
        self._next_seq = 0
        self._next_id = 0
        self._abandon_at: dict[int, tuple[float, int]] = {}
        """msg_seq -> (when the next ABANDON is due, how many remain)."""
        self._last_backoff_at = float("-inf")
        self._unacked = 0
        """Fragments sent and not shown received, over the messages in flight."""
        self.filled = False
        """The last :meth:`frames` left due frames out for want of room."""
        self._kept_waiting_s = 0.0
        """Up to :attr:`_head_since`: see :meth:`kept_waiting_s`."""
        self._head_since = -math.inf
        """When the oldest message in flight became the oldest (its predecessor settled)."""
        self.messages_sent = 0
        self.fragments_sent = 0
        self.retransmissions = 0
        self.timeouts = 0

    @property
    def queued(self) -> int:
        """Messages waiting behind the window."""
        return len(self._queue)

    @property
    def in_flight(self) -> int:
        return len(self._flight)

    @property
    def abandons_owed(self) -> bool:
        """An ABANDON has yet to go out one of its 3 times."""
        return bool(self._abandon_at)

    @property
    def fragments_in_flight(self) -> int:
        return self._unacked

    @property
    def oldest_sent(self) -> float | None:
        """When the oldest message in flight first went out (None: none is out). The
        window moves past it only once the peer acknowledges it: how long the peer has
        kept us waiting, whatever the time it spent queued here."""
        oldest = next(iter(self._flight.values()), None)
        return None if oldest is None else oldest.first_sent

    def kept_waiting_s(self, now: float) -> float:
        """Seconds in all, up to ``now``, during which the oldest message in flight had
        been out more than :data:`SLOW_ACK_S` (the window waited on the peer). Summed as
        each oldest settles, so that reading it once a second misses none of it: a peer
        that acknowledges each window just before it is looked at is seen too."""
        return self._kept_waiting_s + self._head_waiting_s(now)

    def _head_waiting_s(self, now: float) -> float:
        sent = self.oldest_sent
        if sent is None:
            return 0.0
        return max(0.0, now - max(self._head_since, sent + SLOW_ACK_S))

    def send(self, body: bytes, *, bounded: bool = True) -> int:
        """Queue ``body``; its message id (for the events that settle it). ``bounded``:
        refuse it past :data:`QUEUE_LIMIT` (unbounded, the caller bounds the queue)."""
        if len(body) > MAX_BODY_BYTES:
            raise LocalProtocolError(f"a message of {len(body)} bytes is over {MAX_BODY_BYTES}")
        if bounded and len(self._queue) >= QUEUE_LIMIT:
            raise QueueFull(f"{QUEUE_LIMIT} messages already wait behind the window")
        count = max(1, -(-len(body) // MAX_FRAGMENT_BYTES))
        message_id = self._next_id
        self._next_id += 1
        self._queue.append(_Outgoing(message_id, body, count))
        self._admit()
        return message_id

    def _admit(self) -> None:
        while self._queue and (
            not self._flight
            or serial_diff(self._next_seq, next(iter(self._flight))) < MESSAGE_WINDOW
        ):
            outgoing = self._queue.popleft()
            outgoing.msg_seq = self._next_seq
            self._flight[outgoing.msg_seq] = outgoing
            self._next_seq = serial_add(self._next_seq, 1)

    def on_ack(self, ack: Ack, now: float) -> None:
        outgoing = self._flight.get(ack.msg_seq)
        if outgoing is None:
            return  # settled already: a duplicate or a re-ACK
        if ack.count != outgoing.count:
            self._drops[DropReason.INVALID_ACK] += 1
            return
        received = ack.mask & ((1 << outgoing.sent) - 1)
        if self.sticky_acks and outgoing.acked & ~received:
            # A client never evicts (8 of the largest messages fit its buffer): an ACK
            # taking back what it showed is a lie meant to make us resend; ignored.
            self._drops[DropReason.INVALID_ACK] += 1
            received |= outgoing.acked
        newly = received & ~outgoing.acked
        if self.rtt.backoff and newly & ~outgoing.retransmitted:
            # An unambiguous answer within the timeout: the path works, stop doubling.
            self.rtt.backoff = 0
        whole = (1 << outgoing.count) - 1
        if received == whole:
            # Karn: a sample only when no fragment this ACK settles was sent twice, from
            # the newest of them (its ACK waited at most ACK_DELAY_S: the message completed).
            if newly and not newly & outgoing.retransmitted:
                times = outgoing.sent_at
                newest = max(times) if newly == whole else max(times[i] for i in _bits(newly))
                self.rtt.sample(now - newest)
            self._settle(outgoing, now)
            self._emit(MessageAcknowledged(outgoing.message_id))
            return
        # The latest ACK is the receiver's state: a fragment it showed before and no
        # longer shows was dropped there (evicted), and is sent again.
        before = outgoing.unacked.bit_count()
        outgoing.acked = received
        self._unacked += outgoing.unacked.bit_count() - before
        outgoing.resend &= ~received
        if not outgoing.unacked:
            outgoing.rto_at = None
        elif newly:
            self._arm(outgoing, now)
        if not newly:
            return  # no progress: no fragment is shown lost by it (the timer resends)
        # QUIC's rule: a fragment is lost when one sent after it arrived and it has had
        # the time threshold to arrive too. An ACK that shows nothing new triggers no
        # resend: else a peer could make us resend the whole flight at every ACK.
        newest = max(outgoing.sent_at[index] for index in _bits(newly))
        rtt = max(self.rtt.srtt_s or 0.0, self.rtt.latest_s or 0.0)
        loss_delay = max(LOSS_DELAY_FACTOR * rtt, GRANULARITY_S)
        for index in _bits(outgoing.unacked):
            sent_at = outgoing.sent_at[index]
            if sent_at <= newest and sent_at + loss_delay <= now:
                outgoing.resend |= 1 << index

    def _arm(self, outgoing: _Outgoing, now: float) -> None:
        # The receiver reports an incomplete message only every ACK_INTERVAL_S: a
        # message of several fragments waits for that report too (QUIC's max_ack_delay),
        # within the page's cap.
        wait = self.rtt.rto_s
        if outgoing.count > 1:
            wait = min(wait + ACK_INTERVAL_S, MAX_RTO_S)
        outgoing.rto_at = now + wait
        outgoing.armed_at = now

    def _settle(self, outgoing: _Outgoing, now: float) -> None:
        if outgoing is next(iter(self._flight.values())):
            self._kept_waiting_s += self._head_waiting_s(now)
            self._head_since = now
        self._unacked -= outgoing.unacked.bit_count()
        del self._flight[outgoing.msg_seq]
        self._admit()

    def poll(self, now: float) -> None:
        """Act on the deadlines and retransmission timers that have passed."""
        for outgoing in list(self._flight.values()):
            if outgoing.first_sent is not None and outgoing.first_sent + MESSAGE_DEADLINE_S <= now:
                self._give_up(outgoing, now)
            elif outgoing.rto_at is not None and outgoing.rto_at <= now:
                self.timeouts += 1
                outgoing.resend |= outgoing.unacked
                # One doubling per round of timeouts: the timers of a burst, armed
                # before the last doubling, expire together and double once.
                if outgoing.armed_at >= self._last_backoff_at:
                    self.rtt.back_off()
                    self._last_backoff_at = now
                self._arm(outgoing, now)

    def _give_up(self, outgoing: _Outgoing, now: float) -> None:
        self._settle(outgoing, now)
        if self.abandons:
            self._drops[DropReason.ABANDONED] += 1
            self._abandon_at[outgoing.msg_seq] = (now, ABANDON_SENDS)
            self._emit(MessageAbandoned(outgoing.message_id))
        else:
            self._drops[DropReason.UNREACHABLE] += 1
            self._emit(MessageFailed(outgoing.message_id, DropReason.UNREACHABLE))

    def has_ready(self, now: float) -> bool:
        """Is a frame due now (an ABANDON, a fragment to resend, one allowed to go out)?"""
        if self._abandon_at and any(due <= now for due, _ in self._abandon_at.values()):
            return True
        room = self._unacked < FRAGMENT_WINDOW
        for outgoing in self._flight.values():
            if outgoing.resend or (room and outgoing.sent < outgoing.count):
                return True
        return False

    def next_deadline(self) -> float | None:
        earliest = math.inf
        for due, _ in self._abandon_at.values():
            earliest = min(earliest, due)
        for outgoing in self._flight.values():
            if outgoing.rto_at is not None and outgoing.rto_at < earliest:
                earliest = outgoing.rto_at
            if outgoing.first_sent is not None:
                earliest = min(earliest, outgoing.first_sent + MESSAGE_DEADLINE_S)
        return None if earliest == math.inf else earliest

    def frames(self, now: float, room: int) -> list[Abandon | Fragment]:
        """Frames due now that fit in ``room`` bytes: ABANDONs, resent, then new fragments."""
        out: list[Abandon | Fragment] = []
        self.filled = True  # until every due frame fitted (the returns below are for room)
        left_out = False
        for msg_seq, (due, left) in list(self._abandon_at.items()):
            left_out = left_out or (due <= now and room < ABANDON_FRAME_BYTES)
            if due <= now and room >= ABANDON_FRAME_BYTES:
                out.append(Abandon(msg_seq))
                room -= ABANDON_FRAME_BYTES
                if left > 1:
                    self._abandon_at[msg_seq] = (now + self.rtt.rto_s, left - 1)
                else:
                    del self._abandon_at[msg_seq]
        for outgoing in self._flight.values():
            if not outgoing.resend:
                continue
            for index in _bits(outgoing.resend):
                if outgoing.size(index) > room:
                    return out
                room -= outgoing.size(index)
                out.append(outgoing.fragment(index))
                outgoing.resend &= ~(1 << index)
                outgoing.retransmitted |= 1 << index
                outgoing.sent_at[index] = now
                self.retransmissions += 1
                if outgoing.rto_at is None:
                    self._arm(outgoing, now)
        budget = FRAGMENT_WINDOW - self._unacked
        for outgoing in self._flight.values():
            while outgoing.sent < outgoing.count and budget > 0:
                size = outgoing.size(outgoing.sent)
                if size > room:
                    return out
                room -= size
                budget -= 1
                out.append(outgoing.fragment(outgoing.sent))
                outgoing.sent_at.append(now)
                outgoing.sent += 1
                self._unacked += 1
                self.fragments_sent += 1
                if outgoing.first_sent is None:
                    outgoing.first_sent = now
                    self.messages_sent += 1
                if outgoing.rto_at is None:
                    self._arm(outgoing, now)
        self.filled = left_out
        return out

    def renumber(self) -> None:
        """A new relay epoch (client side): the unsettled messages again from msg_seq 0,
        in their order, keeping their first-transmission times; no ABANDON is owed."""
        flight = list(self._flight.values())
        self._flight = {}
        for msg_seq, outgoing in enumerate(flight):
            outgoing.restart(msg_seq)
            self._flight[msg_seq] = outgoing
        self._next_seq = len(flight)
        self._unacked = 0
        self._abandon_at.clear()
        self._admit()

    def clear(self) -> None:
        """The channel ends: let go of every message and its body at once (whoever closed
        it counted them lost)."""
        self._flight.clear()
        self._queue.clear()
        self._abandon_at.clear()

    def discard(self) -> None:
        """A new client epoch (relay side): every message towards the old session fails."""
        for outgoing in [*self._flight.values(), *self._queue]:
            self._drops[DropReason.REPLACED] += 1
            self._emit(MessageFailed(outgoing.message_id, DropReason.REPLACED))
        self._flight.clear()
        self._queue.clear()
        self._next_seq = 0
        self._unacked = 0
        self._abandon_at.clear()
