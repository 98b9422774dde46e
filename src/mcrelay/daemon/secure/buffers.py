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
from collections.abc import Callable, Collection

from mcrelay.core.members import Departure
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
is 2 s at most), and a client of the page acknowledges within 10 ms. Members that
acknowledged every 8 s, within every deadline, kept the buffers crowded, and every
newcomer out, for as long as registrations went on (found by review)."""
SWEEP_S = 1.0
"""How often the members are looked at while the buffers are crowded."""


class SendBuffers:
    def __init__(self, remove: Callable[[Peer, Departure, DropReason], None]) -> None:
        """``remove``: take a member out of the roster (its session closes), counted as
        the reason given."""
        self._remove = remove
        self.total = 0
        self.limit = DEFAULT_LIMIT
        self._swept_at = -math.inf

    def hold(self, peer: Peer, change: int) -> bool:
        """``change`` more bytes held for ``peer`` (fewer, when negative); whether the
        buffers are now past their bound."""
        peer.copy_bytes += change
        self.total += change
        return self.total > self.limit

    def crowded(self) -> bool:
        return self.total > CROWDED * self.limit

    def release(self, peer: Peer) -> None:
        """``peer``'s session closed: nothing is held for it any more."""
        self.total -= peer.copy_bytes
        peer.copy_bytes = 0

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
            self._remove(
                heaviest, heaviest.leaving or Departure.UNREACHABLE, DropReason.UNREACHABLE
            )
            if not heaviest.closed:  # not in the roster: nothing more to free this way
                break
        return keeping is None or not keeping.closed

    def next_sweep(self) -> float:
        """When :meth:`relieve` next looks at the members (inf: not while uncrowded)."""
        return self._swept_at + SWEEP_S if self.crowded() else math.inf

    def relieve(self, peers: Collection[Peer], now: float) -> None:
        """While crowded (once a :data:`SWEEP_S`), remove the members holding more than
        their share, the crowded mark split evenly among all, whose oldest message has
        waited :data:`STALLED_S` for their acknowledgement: the most held first, until
        the buffers are no longer crowded (left, unreachable).

        Why not the age of what waits: in a mass join it measures the relay, not the
        member (1,500 members joining are 2.25 million PRESENCE, which the relay took
        about 100 s to hand over; a deadline of 10 s on what waits removed 1,435 of
        them). Why a share: with the buffers past the mark some member is over it,
        and one that holds little is not what keeps newcomers out."""
        if now < self._swept_at + SWEEP_S or not self.crowded():
            return
        self._swept_at = now
        late = now - STALLED_S
        stalled = [
            peer
            for peer in peers
            if peer.member is not None
            and (sent := peer.session.channel.oldest_sent) is not None
            and sent <= late
        ]
        stalled.sort(key=lambda peer: peer.copy_bytes, reverse=True)
        for peer in stalled:
            if not self.crowded() or peer.copy_bytes <= CROWDED * self.limit / len(peers):
                return
            self._remove(peer, peer.leaving or Departure.UNREACHABLE, DropReason.STALLED)
