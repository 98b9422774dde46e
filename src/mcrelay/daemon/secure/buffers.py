"""The bound of all secure send buffers together, as the page has it (default 64 MiB).

What counts: each member's relayed copies and the relay's own messages (PRESENCE,
NOTICE) from queued until acknowledged, and its PRESENCE still waiting for room
(:data:`~mcrelay.daemon.secure.presence.WAITING_BYTES` a subject). When more would pass
the bound, the member holding the most is removed first (left, unreachable; or with the
reason it is already leaving for).

Past :data:`CROWDED` no newcomer is let in, and a member holding more than its share
that keeps the relay waiting on its acknowledgements is removed (:meth:`SendBuffers.relieve`).
"""

import math
from collections import deque
from collections.abc import Callable, Collection
from dataclasses import dataclass

from mcrelay.daemon.secure.peers import Peer
from mcrelay.protocol.errors import DropReason

DEFAULT_LIMIT = 64 * 1024 * 1024
CROWDED = 0.75
"""The share of the bound past which no newcomer is let in: each would be told of every
member (its PRESENCE waiting), and every member of it. A mass join of 1,500 secure
members removed hundreds as unreachable to make room; now they join as it drains."""
STALLED_S = 5.0
"""A member that has left its oldest message unacknowledged this long, while the
buffers are crowded and it holds more than its share, is removed (``stalled``). Half
a message's deadline (10 s): the relay has sent it three times by then (its timeout
is 2 s at most), and a client of the page acknowledges within 10 ms. Also the span
over which :meth:`SendBuffers.relieve` judges a member's trend."""
KEPT_WAITING = 0.25
"""The share of :data:`STALLED_S` past which a member over its share whose held bytes
have not gone down over it is removed: the time its window waited on it (its oldest
message out over :data:`~mcrelay.protocol.secure.sending.SLOW_ACK_S`). A member
acknowledging every second keeps it waiting half the time; one acknowledging within
0.66 s, a quarter."""
SWEEP_S = 1.0
"""How often the members are looked at while the buffers are crowded."""


@dataclass(frozen=True, slots=True)
class _Sample:
    """A member at one sweep."""

    at: float
    held: int
    kept_waiting_s: float


class SendBuffers:
    def __init__(self, remove: Callable[[Peer, DropReason], None]) -> None:
        """``remove``: take a member out of the roster (its session closes), counted as
        the reason given."""
        self._remove = remove
        self.total = 0
        self.limit = DEFAULT_LIMIT
        self._swept_at = -math.inf
        self._samples: dict[Peer, deque[_Sample]] = {}
        """Each member's sweeps over the last :data:`STALLED_S` (and the one before)."""

    def hold(self, peer: Peer, change: int) -> bool:
        """``change`` more bytes held for ``peer`` (fewer, when negative); whether the
        buffers are now past their bound."""
        peer.copy_bytes += change
        self.total += change
        return self.total > self.limit

    def crowded(self) -> bool:
        return self.total > CROWDED * self.limit

    def release(self, peer: Peer) -> None:
        """``peer``'s session closed: nothing is held for it any more, nor its sweeps
        (kept otherwise, with the peer, until the buffers next crowd)."""
        self.total -= peer.copy_bytes
        peer.copy_bytes = 0
        self._samples.pop(peer, None)

    def keep_within(
        self, peers: Collection[Peer], size: int = 0, keeping: Peer | None = None
    ) -> bool:
        """Remove the members holding the most while ``size`` more would pass the bound;
        whether ``keeping`` (when given) is still there. ``peers``: the profile's own
        view, read again after each removal, never copied (this runs for every copy)."""
        while self.total + size > self.limit:
            heaviest = max(peers, key=lambda peer: peer.copy_bytes, default=None)
            if heaviest is None or heaviest.member is None or not heaviest.copy_bytes:
                break
            self._remove(heaviest, DropReason.UNREACHABLE)
            if not heaviest.closed:  # not in the roster: nothing more to free this way
                break
        return keeping is None or not keeping.closed

    def next_sweep(self) -> float:
        """When :meth:`relieve` next looks at the members (inf: not while uncrowded)."""
        return self._swept_at + SWEEP_S if self.crowded() else math.inf

    def relieve(self, peers: Collection[Peer], now: float) -> None:
        """While crowded (once a :data:`SWEEP_S`), remove the members holding more than
        their share, the crowded mark split evenly among all, that keep newcomers out:
        the most held first, until the buffers are no longer crowded (left,
        unreachable). A member is removed when its oldest message has waited
        :data:`STALLED_S` for its acknowledgement, or when over the last
        :data:`STALLED_S` of crowding its held bytes have not gone down and it kept its
        window waiting (:meth:`Channel.kept_waiting_s`) more than :data:`KEPT_WAITING`
        of that time.

        Why not the age of what waits: in a mass join it measures the relay, not the
        member (1,500 members joining are 2.25 million PRESENCE, which the relay took
        about 100 s to hand over; a deadline of 10 s on what waits removed 1,435 of
        them). Why a share: with the buffers past the mark some member is over it,
        and one that holds little is not what keeps newcomers out.

        Why the trend: a threshold on how late a member acknowledges alone is dodged
        by acknowledging just within it (a window of 8 messages every 4 s kept a
        newcomer out 28 s, found by review), as legacy registrations, spoofable, add
        a PRESENCE to every member's queue as fast as it drains. An honest member's
        queue is long because the relay is slow: its window is seldom full of
        unacknowledged messages (it answers within 10 to 100 ms), and while crowded
        no newcomer adds to it, so it shrinks. A slow acknowledger's queue stays or
        grows because it is slow. So a member is removed for lateness only while its
        queue does not shrink. What dodges remain, and their cost: acknowledging
        each window within 0.66 s drains 12 messages a second or more, which legacy
        registrations must match for the lockout to last (within the default rates,
        and spoofable); acknowledging within 5 s while the held bytes go down,
        however little, over every 5 s keeps newcomers out until the queues are
        drained (each at most two PRESENCE a subject), and needs registrations at
        nearly the rate drained to last. What it costs honest members: one on a path
        slower than 0.66 s is removed while it holds more than its share and
        registrations add more than it drains."""
        if now < self._swept_at + SWEEP_S or not self.crowded():
            return
        if now - self._swept_at > 2 * SWEEP_S:  # crowded anew: each trend starts again
            self._samples = {}
        self._swept_at = now
        samples: dict[Peer, deque[_Sample]] = {}
        stalled = []
        for peer in peers:
            if peer.member is None:
                continue
            channel = peer.session.channel
            record = self._samples.get(peer, deque())
            record.append(_Sample(now, peer.copy_bytes, channel.kept_waiting_s(now)))
            while len(record) > 1 and record[1].at <= now - STALLED_S:
                record.popleft()
            samples[peer] = record
            if self._stalled(peer, record[0], now):
                stalled.append(peer)
        self._samples = samples
        stalled.sort(key=lambda peer: peer.copy_bytes, reverse=True)
        for peer in stalled:
            if not self.crowded() or peer.copy_bytes <= CROWDED * self.limit / len(peers):
                return
            self._remove(peer, DropReason.STALLED)

    @staticmethod
    def _stalled(peer: Peer, then: _Sample, now: float) -> bool:
        """Has ``peer`` kept its oldest message :data:`STALLED_S`, or kept the relay
        waiting without its held bytes going down since ``then``?"""
        channel = peer.session.channel
        sent = channel.oldest_sent
        if sent is not None and sent <= now - STALLED_S:
            return True
        span = now - then.at
        return (
            span >= STALLED_S
            and peer.copy_bytes >= then.held
            and channel.kept_waiting_s(now) - then.kept_waiting_s > KEPT_WAITING * span
        )
