"""The reassembly bytes that every channel of one relay shares (16 MiB by default).

Each receiver charges its buffered fragments here. When a charge would pass the
total, the peer holding the most bytes loses its oldest partial message (counted by
that peer's channel), so no peer can block the others; when no partial message can
go, the charge is refused. A channel that ends gives its bytes back (``close``).

The bytes of partial messages are counted apart from those of complete ones (which
wait for an earlier message, and cannot be evicted): a charge that evicting every
partial message but the one it is for could not make room for is refused at once,
evicting nothing, and the peer to evict from is looked for among those holding
partial bytes only. (Looked for among every
peer, each asked in turn, a refused charge cost the square of their number: with
1,000 members holding complete messages, 32 ms a fragment, 3.5 s for one DATA.)

The peer holding the most is found in a heap of (bytes, peer) entries, one pushed at
each change of a peer's bytes while the budget is over half full (below, the heap is
made anew at the next eviction), those out of date skipped and dropped when they come
up, and the heap made anew when they are most of it: a scan of every holder for each
eviction cost 85 us a fragment with 4,096 holders, 4.7 ms for one DATA of fragments
(``bench/budget_cost.py``).
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
        self._heaviest: list[tuple[int, int, Holder]] = []
        """(-bytes held, order, holder): a heap with the holder of partial bytes that
        holds the most on top, once entries out of date are dropped (see
        :meth:`_heaviest_partial`)."""
        self._order = itertools.count()
        """Ties go to the earlier entry; holders are never compared."""
        self._stale = False
        """Changes went unnoted (the budget was at most half full): made anew first."""

    def held(self, holder: Holder) -> int:
        return self._held.get(holder, 0)

    def reserve(self, holder: Holder, charge: int, keep: int, kept: int = 0) -> bool:
        """Charge ``holder`` for a fragment of its partial message ``keep`` (``kept``: the
        bytes it holds already), evicting others' partial messages (most bytes first)
        while the total would pass the bound."""
        if self.total + charge > self.max_bytes and not self._make_room(holder, charge, keep, kept):
            return False
        self.total += charge
        self._held[holder] = self._held.get(holder, 0) + charge
        self._partial[holder] = self._partial.get(holder, 0) + charge
        self._partial_total += charge
        self._note(holder)
        return True

    def _note(self, holder: Holder) -> None:
        """``holder``'s bytes changed: its entry, if it holds partial bytes."""
        # No eviction near (no cost per fragment then), or the heap mostly out of date:
        # made anew at the next eviction.
        if self.total <= self.max_bytes // 2 or len(self._heaviest) > 2 * len(self._partial) + 64:
            self._stale = True
        elif holder in self._partial:
            heapq.heappush(self._heaviest, (-self._held[holder], next(self._order), holder))

    def _heaviest_partial(self) -> Holder | None:
        """The holder of partial bytes that holds the most bytes."""
        heap, partial, held = self._heaviest, self._partial, self._held
        if self._stale:
            heap[:] = [(-held[h], next(self._order), h) for h in partial]
            heapq.heapify(heap)
            self._stale = False
        while heap:
            negative, _, holder = heap[0]
            if holder in partial and held[holder] == -negative:
                return holder
            heapq.heappop(heap)
        return None

    def _make_room(self, holder: Holder, charge: int, keep: int, kept: int) -> bool:
        if self.total - (self._partial_total - kept) + charge > self.max_bytes:
            return False  # evicting every partial message but ``keep`` would not do
        partial = self._partial
        # A holder whose partial bytes are all ``keep``'s has nothing to give: out of
        # the search (it was found so by a scan of its own, then every scan skipped it,
        # doubling the cost of each eviction; found by review).
        own = partial.pop(holder, None) if partial.get(holder, 0) <= kept else None
        try:
            while self.total + charge > self.max_bytes:
                victim = self._heaviest_partial()
                if victim is None:
                    return False
                if victim.evict_oldest_partial(keep if victim is holder else None):
                    continue
                if victim is holder and own is None:
                    # Its other partial messages have gone, ``keep``'s bytes are left:
                    # out of the search too, and on to the others (the charge was
                    # refused while they held partial bytes: found by review).
                    own = partial.pop(holder)
                    continue
                return False  # one that gives none (counts gone wrong): refused
        finally:
            if own is not None:
                partial[holder] = own
                self._note(holder)  # its entries were dropped while it was out
        return True

    def completed(self, holder: Holder, charge: int) -> None:
        """``charge`` of ``holder``'s bytes are now a complete message's (not evictable)."""
        self._take_partial(holder, charge)

    def release(self, holder: Holder, charge: int, *, complete: bool = False) -> None:
        """``charge`` bytes given back: a complete message's, or a partial one's."""
        if not charge:
            return
        self.total -= charge
        _subtract(self._held, holder, charge)
        if not complete:
            self._take_partial(holder, charge)
        self._note(holder)

    def _take_partial(self, holder: Holder, charge: int) -> None:
        self._partial_total -= charge
        _subtract(self._partial, holder, charge)


def _subtract(table: dict[Holder, int], holder: Holder, charge: int) -> None:
    """Take ``charge`` off ``holder``'s entry, which goes at 0 (the table lists holders)."""
    left = table[holder] - charge
    if left:
        table[holder] = left
    else:
        del table[holder]
