"""The reassembly bytes that every channel of one relay shares (16 MiB by default).

Each receiver charges its buffered fragments here. When a charge would pass the
total, the peer holding the most bytes loses its oldest partial message (counted by
that peer's channel), so no peer can block the others; when no partial message can
go, the charge is refused. A channel that ends gives its bytes back (``close``).
"""

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

    def held(self, holder: Holder) -> int:
        return self._held.get(holder, 0)

    def reserve(self, holder: Holder, charge: int, keep: int) -> bool:
        """Charge ``holder`` for a fragment of its message ``keep``, evicting others'
        partial messages (most bytes first) while the total would pass the bound."""
        spent: set[Holder] = set()
        while self.total + charge > self.max_bytes:
            candidates = [other for other in self._held if other not in spent]
            if not candidates:
                return False
            victim = max(candidates, key=self._held.__getitem__)
            if not victim.evict_oldest_partial(keep if victim is holder else None):
                spent.add(victim)
        self.total += charge
        self._held[holder] = self._held.get(holder, 0) + charge
        return True

    def release(self, holder: Holder, charge: int) -> None:
        if not charge:
            return
        self.total -= charge
        left = self._held[holder] - charge
        if left:
            self._held[holder] = left
        else:
            del self._held[holder]
