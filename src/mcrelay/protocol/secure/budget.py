"""The reassembly bytes that every channel of one relay shares (16 MiB by default).

Each receiver charges its buffered fragments here. When a charge would pass the
total, the peer holding the most bytes loses its oldest partial message (counted by
that peer's channel), so no peer can block the others; when no partial message can
go, the charge is refused. A channel that ends gives its bytes back (``close``).

The bytes of partial messages are counted apart from those of complete ones (which
wait for an earlier message, and cannot be evicted): a charge that evicting every
partial message could not make room for is refused at once, and the peers to evict
from are taken from a heap of those holding partial bytes. (Looked for among every
peer at each step, a refused charge cost the square of their number: with 1,000
members holding complete messages, 32 ms a fragment, 3.5 s for one DATA.)
"""

import heapq
import itertools
from typing import Protocol

MAX_TOTAL_BYTES = 16 * 1024 * 1024


class Holder(Protocol):
    def evict_oldest_partial(self, keep: int | None) -> bool:
        """Drop the oldest partial message but msg_seq ``keep``, releasing its bytes;
        False when there is none."""
        ...


class ReceiveBudget:
    def __init__(self, max_bytes: int = MAX_TOTAL_BYTES) -> None:
        self.max_bytes = max_bytes
        self.backpressure = False
        """Set by the relay for every channel at once: no new message is started (see
        :attr:`Channel.backpressure <mcrelay.protocol.secure.channel.Channel.backpressure>`)."""
        self.total = 0
        self._held: dict[Holder, int] = {}
        self._partial: dict[Holder, int] = {}
        """Of ``_held``, the bytes of partial messages (those that can be evicted)."""
        self._partial_total = 0
        self._order = itertools.count()

    def held(self, holder: Holder) -> int:
        return self._held.get(holder, 0)

    def reserve(self, holder: Holder, charge: int, keep: int) -> bool:
        """Charge ``holder`` for a fragment of its partial message ``keep``, evicting
        others' partial messages (most bytes first) while the total would pass the bound."""
        if self.total + charge > self.max_bytes and not self._make_room(holder, charge, keep):
            return False
        self.total += charge
        self._held[holder] = self._held.get(holder, 0) + charge
        self._partial[holder] = self._partial.get(holder, 0) + charge
        self._partial_total += charge
        return True

    def _make_room(self, holder: Holder, charge: int, keep: int) -> bool:
        if self.total - self._partial_total + charge > self.max_bytes:
            return False  # evicting every partial message would not do
        # The peer holding the most goes first, and again while it still does.
        heap = [(-self._held[other], next(self._order), other) for other in self._partial]
        heapq.heapify(heap)
        while self.total + charge > self.max_bytes:
            if not heap:
                return False
            _, _, victim = heapq.heappop(heap)
            evicted = victim.evict_oldest_partial(keep if victim is holder else None)
            if evicted and self._partial.get(victim):  # it may still hold the most
                heapq.heappush(heap, (-self._held[victim], next(self._order), victim))
        return True

    def completed(self, holder: Holder, charge: int) -> None:
        """``charge`` of ``holder``'s bytes are now a complete message's (not evictable)."""
        self._take_partial(holder, charge)

    def release(self, holder: Holder, charge: int, *, complete: bool = False) -> None:
        """``charge`` bytes given back: a complete message's, or a partial one's."""
        if not charge:
            return
        self.total -= charge
        left = self._held[holder] - charge
        if left:
            self._held[holder] = left
        else:
            del self._held[holder]
        if not complete:
            self._take_partial(holder, charge)

    def _take_partial(self, holder: Holder, charge: int) -> None:
        self._partial_total -= charge
        left = self._partial[holder] - charge
        if left:
            self._partial[holder] = left
        else:
            del self._partial[holder]
