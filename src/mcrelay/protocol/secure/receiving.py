"""The receiving half of a secure channel: reassembly, in-order delivery, ACKs.

Messages are held by msg_seq from ``next_seq`` (the first not yet delivered or given
up) to at most ``next_seq + 7``: a fragment or ABANDON with msg_seq ``s`` settles
every message below ``s - 7``, so no more than :data:`HELD_MESSAGES` are ever held. A
completed message waits until every earlier one is delivered or given up. A message
is given up when the sender abandons it, or when it, or a later message, has been
held for :data:`RECEIVE_DEADLINE_S`: the sender started every earlier message before
that one, so its own deadline for them has passed. A complete DISCONNECT waits in
order too, but for :data:`DISCONNECT_HOLD_S` at most: its sender closes by then, so
what is still incomplete before it is given up (``abandoned``) and it is delivered.

ACKs: the full bitmap when a message completes, after up to :data:`ACK_DELAY_S` to
ride with other frames, at once for a DISCONNECT or when half the sender's window
waits on us (4 completed messages, or 32 fragments, not yet acknowledged); the bitmap so far every :data:`ACK_INTERVAL_S` while a message is incomplete;
the full bitmap again for a fragment of a message completed within the last
:data:`REACK_WINDOW` msg_seqs.
"""

import math
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from mcrelay.protocol.errors import DropReason
from mcrelay.protocol.secure.budget import ReceiveBudget
from mcrelay.protocol.secure.channel_events import MessageDelivered
from mcrelay.protocol.secure.completed import CompletedWindow
from mcrelay.protocol.secure.frames import (
    ACK_HEADER,
    FRAME_HEADER,
    MAX_FRAGMENTS,
    Abandon,
    Ack,
    Fragment,
)
from mcrelay.protocol.secure.sending import ACK_INTERVAL_S, FRAGMENT_WINDOW, MESSAGE_WINDOW
from mcrelay.protocol.secure.serial import serial_add, serial_diff

RECEIVE_DEADLINE_S = 10.0
"""From a message's first fragment to giving it up."""
ACK_DELAY_S = 0.010
"""The longest a completed message's ACK waits to ride with other frames."""
DISCONNECT_HOLD_S = 1.0
"""From a DISCONNECT's completion, the longest it waits for the messages before it.
Its sender closes once it is acknowledged (at once here), or at most 1 s after
sending it, which was before it completed here: whatever it sent until it closed
has arrived by then, if its datagrams take alike long to come. Not for ever (a
leave would become a timeout), not at once (a message whose last fragment was
still on its way was lost: found by review)."""
HELD_MESSAGES = MESSAGE_WINDOW
MAX_PEER_BYTES = 576 * 1024
"""Bytes held per peer: 8 of the largest messages fit, with the charges below."""
FRAGMENT_OVERHEAD_BYTES = 64
"""Charged per buffered fragment on top of its bytes, so that empty fragments cost."""
MESSAGE_OVERHEAD_BYTES = 1024
"""Charged per held message (8 x (1,024 + 58 x (1,150 + 64)) = 571,488 <= 576 KiB)."""
MAX_PENDING_ACKS = 64
"""Full ACKs waiting to go out; past this a re-ACK is skipped (the sender asks again)."""
DISCONNECT_KIND = 4


def ack_frame_bytes(count: int) -> int:
    return FRAME_HEADER.size + ACK_HEADER.size + (count + 7) // 8


_DISCONNECT = bytes([DISCONNECT_KIND])


def _whole_disconnect(fragment: Fragment) -> bool:
    return fragment.count == 1 and fragment.data[:1] == _DISCONNECT


@dataclass(slots=True, eq=False)
class _Incoming:
    count: int
    deadline: float
    ack_at: float
    pieces: dict[int, bytes] = field(default_factory=dict)
    charged: int = 0
    body: bytes | None = None
    """Set when complete: the message waits for the earlier ones."""
    given_up: bool = False
    """Abandoned or timed out: skipped in order, its fragments ignored."""

    @property
    def partial(self) -> bool:
        return self.body is None and not self.given_up


class Receiver:
    """The peer's messages under its current epoch, towards in-order delivery."""

    def __init__(
        self,
        budget: ReceiveBudget,
        *,
        emit: Callable[[MessageDelivered], None],
        drops: Counter[DropReason],
    ) -> None:
        self.budget = budget
        self.backpressure = False
        self.filled = False
        """The last :meth:`ack_frames` left ACKs out for want of room."""
        """Set by the caller: fragments of messages not started are dropped (but a DISCONNECT)."""
        self._emit = emit
        self._drops = drops
        self._next_seq = 0
        self._held: dict[int, _Incoming] = {}
        self._completed = CompletedWindow()
        self._acks: dict[int, tuple[float, int]] = {}
        """Full ACKs to send: msg_seq -> (due, count)."""
        self._started = 0
        """Messages started by the DATA being read (:meth:`datagram_begins`)."""
        self.delivered = 0
        self.given_up = 0
        """Messages given up: abandoned by the sender, past their deadline, or passed over
        (a message 8 or more after them came)."""
        self.acks_sent = 0
        self._refused: int | None = None
        """The latest msg_seq refused under back-pressure (the peer sends it again)."""

    @property
    def held(self) -> int:
        return len(self._held)

    @property
    def held_bytes(self) -> int:
        return self.budget.held(self)

    @property
    def refusals_outstanding(self) -> bool:
        """A message refused under back-pressure is neither delivered nor given up yet
        (messages go in order: once one after it is, it is too)."""
        refused = self._refused
        if refused is None:
            return False
        if serial_diff(refused, self._next_seq) < 0:
            # Forgotten once passed: half the sequence space later it would read as ahead
            # again (found by review). The client asks at every DATA.
            self._refused = None
            return False
        return True

    @property
    def acks_pending(self) -> int:
        """Full ACKs waiting to go out."""
        return len(self._acks)

    def datagram_begins(self) -> None:
        """The frames of another DATA follow: it may start at most :data:`HELD_MESSAGES`
        new messages, as many as a sender has in flight. (Without the bound one DATA of
        100 one-fragment messages delivered all 100 at once, each admitted by the relay
        past its pipeline's bounds, since the channel had acknowledged it.)"""
        self._started = 0

    def on_fragment(self, fragment: Fragment, now: float) -> None:
        msg_seq = fragment.msg_seq
        if fragment.count > MAX_FRAGMENTS:
            self._drops[DropReason.INVALID_FRAGMENT] += 1
            return
        ahead = serial_diff(msg_seq, self._next_seq)
        if ahead < 0:
            count = self._completed.count(msg_seq)
            if count is not None:  # ACKed as it completed, whatever count this one claims
                self._drops[DropReason.DUPLICATE_FRAGMENT] += 1
                self._schedule_ack(msg_seq, count, now, reack=True)
            else:
                self._drops[DropReason.LATE_FRAGMENT] += 1
            return
        incoming = self._held.get(msg_seq)
        charge = FRAGMENT_OVERHEAD_BYTES + len(fragment.data)
        if incoming is None:
            if (self.backpressure or self.budget.backpressure) and not _whole_disconnect(fragment):
                self._drops[DropReason.BACKPRESSURE] += 1
                if self._refused is None or serial_diff(msg_seq, self._refused) > 0:
                    self._refused = msg_seq
                return
            if self._started >= HELD_MESSAGES:  # not acknowledged: sent again, if honest
                self._drops[DropReason.MESSAGE_WINDOW] += 1
                return
            self._started += 1
            if ahead == 0 and fragment.count == 1 and not _whole_disconnect(fragment):
                self._deliver_at_once(msg_seq, fragment.data, now)
                return
            if ahead >= HELD_MESSAGES:
                self._settle_below(serial_add(msg_seq, 1 - HELD_MESSAGES), DropReason.ABANDONED)
            incoming = _Incoming(fragment.count, now + RECEIVE_DEADLINE_S, now + ACK_INTERVAL_S)
            charge += MESSAGE_OVERHEAD_BYTES
        elif incoming.given_up:
            self._drops[DropReason.LATE_FRAGMENT] += 1
            return
        elif incoming.body is not None:
            self._drops[DropReason.DUPLICATE_FRAGMENT] += 1
            self._schedule_ack(msg_seq, incoming.count, now, reack=True)
            return
        if fragment.count != incoming.count:
            self._drops[DropReason.INVALID_FRAGMENT] += 1
            return
        if fragment.index in incoming.pieces:
            self._drops[DropReason.DUPLICATE_FRAGMENT] += 1
            return
        if self.held_bytes + charge > MAX_PEER_BYTES or not self.budget.reserve(
            self, charge, msg_seq, incoming.charged
        ):
            self._drops[DropReason.BUFFER_LIMIT] += 1
            return
        incoming.pieces[fragment.index] = fragment.data
        incoming.charged += charge
        self._held[msg_seq] = incoming
        if len(incoming.pieces) == incoming.count:
            self._complete(msg_seq, incoming, now)

    def _deliver_at_once(self, msg_seq: int, body: bytes, now: float) -> None:
        """A message of one fragment, next in order: complete and delivered as it comes,
        never held (most messages: what _complete and _deliver do, without the hold)."""
        self._completed.add(msg_seq, 1)
        self._schedule_ack(msg_seq, 1, now)
        self.delivered += 1
        self._emit(MessageDelivered(body))
        self._next_seq = serial_add(msg_seq, 1)
        if self._held:
            self._deliver()  # what completed behind it

    def _complete(self, msg_seq: int, incoming: _Incoming, now: float) -> None:
        body = b"".join(incoming.pieces[index] for index in range(incoming.count))
        incoming.pieces = {}
        incoming.body = body
        self.budget.completed(self, incoming.charged)
        self._completed.add(msg_seq, incoming.count)
        disconnect = body[:1] == _DISCONNECT
        self._schedule_ack(msg_seq, incoming.count, now, at_once=disconnect)
        if disconnect:
            incoming.deadline = min(incoming.deadline, now + DISCONNECT_HOLD_S)
        self._deliver()

    def on_abandon(self, abandon: Abandon, now: float) -> None:
        msg_seq = abandon.msg_seq
        ahead = serial_diff(msg_seq, self._next_seq)
        if ahead < 0:
            return
        incoming = self._held.get(msg_seq)
        if incoming is None:
            self._drops[DropReason.ABANDONED] += 1
            self.given_up += 1
            self._held[msg_seq] = _Incoming(0, now, now, given_up=True)
        elif not incoming.given_up:
            self._give_up(msg_seq, incoming, DropReason.ABANDONED)
        if ahead >= HELD_MESSAGES:
            self._settle_below(serial_add(msg_seq, 1 - HELD_MESSAGES), DropReason.ABANDONED)
        self._deliver()

    def poll(self, now: float) -> None:
        """Give up the messages held past their deadline, and every one below them (below
        a DISCONNECT held its time, as ``abandoned``: its sender left without them)."""
        expired = [
            msg_seq
            for msg_seq, incoming in self._held.items()
            if not incoming.given_up and incoming.deadline <= now
        ]
        if not expired:
            return
        last = max(expired, key=lambda msg_seq: serial_diff(msg_seq, self._next_seq))
        body = self._held[last].body
        leaving = body is not None and body[:1] == _DISCONNECT
        self._settle_below(last, DropReason.ABANDONED if leaving else DropReason.REASSEMBLY_TIMEOUT)
        incoming = self._held.get(last)
        if incoming is not None and incoming.partial:
            self._give_up(last, incoming, DropReason.REASSEMBLY_TIMEOUT)
            self._deliver()

    def _give_up(self, msg_seq: int, incoming: _Incoming, reason: DropReason) -> None:
        self._drops[reason] += 1
        self.given_up += 1
        self.budget.release(self, incoming.charged, complete=incoming.body is not None)
        self._completed.discard(msg_seq)
        self._acks.pop(msg_seq, None)
        incoming.charged = 0
        incoming.pieces = {}
        incoming.body = None
        incoming.given_up = True

    def _settle_below(self, limit: int, reason: DropReason) -> None:
        """Every message before ``limit`` is settled: deliver the complete ones in order,
        give up the others, and deliver what then no longer waits."""
        below = [msg_seq for msg_seq in self._held if serial_diff(msg_seq, limit) < 0]
        for msg_seq in sorted(below, key=lambda seq: serial_diff(seq, self._next_seq)):
            incoming = self._held.pop(msg_seq)
            self.budget.release(self, incoming.charged, complete=incoming.body is not None)
            if incoming.body is not None:
                self.delivered += 1
                self._emit(MessageDelivered(incoming.body))
            elif not incoming.given_up:
                self._drops[reason] += 1
                self.given_up += 1
        if serial_diff(limit, self._next_seq) > 0:
            self.given_up += serial_diff(limit, self._next_seq) - len(below)  # never came
            self._next_seq = limit
        self._deliver()

    def _deliver(self) -> None:
        while (incoming := self._held.get(self._next_seq)) is not None and not incoming.partial:
            del self._held[self._next_seq]
            self.budget.release(self, incoming.charged, complete=True)
            if incoming.body is not None:
                self.delivered += 1
                self._emit(MessageDelivered(incoming.body))
            self._next_seq = serial_add(self._next_seq, 1)

    def _schedule_ack(
        self, msg_seq: int, count: int, now: float, *, at_once: bool = False, reack: bool = False
    ) -> None:
        pending = self._acks.get(msg_seq)
        if pending is None and reack and len(self._acks) >= MAX_PENDING_ACKS:
            return
        at_once = at_once or self._window_half_used(count)
        due = now if at_once else now + ACK_DELAY_S
        self._acks[msg_seq] = (min(due, pending[0]) if pending else due, count)

    def _window_half_used(self, count: int) -> bool:
        """Is half the sender's window waiting on us: 4 completed messages not yet
        acknowledged, or 32 fragments held unacknowledged? Then the ACKs go at once."""
        if len(self._acks) + 1 >= MESSAGE_WINDOW // 2:
            return True
        held = sum(len(incoming.pieces) for incoming in self._held.values())
        return count + held >= FRAGMENT_WINDOW // 2

    def acks_due(self, now: float) -> bool:
        for due, _ in self._acks.values():
            if due <= now:
                return True
        held = self._held.values()
        return any(incoming.ack_at <= now and incoming.partial for incoming in held)

    def ack_frames(self, now: float, room: int) -> list[Ack]:
        """Every pending full ACK (due or riding along), then the due bitmaps so far."""
        out: list[Ack] = []
        self.filled = False
        for msg_seq, (_, count) in sorted(self._acks.items(), key=lambda item: item[1][0]):
            if ack_frame_bytes(count) > room:
                self.filled = True
                break
            room -= ack_frame_bytes(count)
            out.append(Ack(msg_seq, count, frozenset(range(count))))
            del self._acks[msg_seq]
        for msg_seq, incoming in self._held.items():
            if incoming.partial and incoming.ack_at <= now:
                if ack_frame_bytes(incoming.count) > room:
                    self.filled = True
                    break
                room -= ack_frame_bytes(incoming.count)
                out.append(Ack(msg_seq, incoming.count, frozenset(incoming.pieces)))
                incoming.ack_at = now + ACK_INTERVAL_S
        self.acks_sent += len(out)
        return out

    def next_deadline(self) -> float | None:
        earliest = math.inf
        for due, _ in self._acks.values():
            earliest = min(earliest, due)
        for incoming in self._held.values():
            if not incoming.given_up:
                earliest = min(earliest, incoming.deadline)
            if incoming.partial:
                earliest = min(earliest, incoming.ack_at)
        return None if earliest == math.inf else earliest

    def evict_oldest_partial(self, keep: int | None) -> bool:
        """The shared budget is full and this peer holds the most: its oldest partial
        message (but ``keep``) goes, forgotten (the sender's retransmission restarts it)."""
        partials = [
            (incoming.deadline, msg_seq)
            for msg_seq, incoming in self._held.items()
            if incoming.partial and msg_seq != keep
        ]
        if not partials:
            return False
        msg_seq = min(partials)[1]
        self.budget.release(self, self._held.pop(msg_seq).charged)
        self._drops[DropReason.REASSEMBLY_EVICTED] += 1
        return True

    def reset(self, reason: DropReason | None) -> None:
        """A new peer epoch (or the end): what was held is dropped, counted as ``reason``."""
        for incoming in self._held.values():
            self.budget.release(self, incoming.charged, complete=incoming.body is not None)
            if reason is not None and not incoming.given_up:
                self._drops[reason] += 1
        self._held.clear()
        self._acks.clear()
        self._next_seq = 0
        self._refused = None
        self._completed = CompletedWindow()
