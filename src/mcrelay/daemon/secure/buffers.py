"""The bound of all secure send buffers together, as the page has it (default 64 MiB).

What counts: each member's relayed copies and the relay's own messages (PRESENCE,
NOTICE) from queued until acknowledged, and its PRESENCE still waiting for room
(:data:`~mcrelay.daemon.secure.presence.WAITING_BYTES` a subject). When more would pass
the bound, the member holding the most is removed first (left, unreachable; or with the
reason it is already leaving for).
"""

from collections.abc import Callable, Collection

from mcrelay.core.members import Departure
from mcrelay.daemon.secure.peers import Peer

DEFAULT_LIMIT = 64 * 1024 * 1024
CROWDED = 0.75
"""The share of the bound past which no newcomer is let in: each would be told of every
member (its PRESENCE waiting), and every member of it. A mass join of 1,500 secure
members removed hundreds as unreachable to make room; now they join as it drains."""


class SendBuffers:
    def __init__(self, remove: Callable[[Peer, Departure], None]) -> None:
        """``remove``: take a member out of the roster (its session closes)."""
        self._remove = remove
        self.total = 0
        self.limit = DEFAULT_LIMIT

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
            self._remove(heaviest, heaviest.leaving or Departure.UNREACHABLE)
            if not heaviest.closed:  # not in the roster: nothing more to free this way
                break
        return keeping is None or not keeping.closed
