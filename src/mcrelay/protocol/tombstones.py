"""Tombstones: the keys whose message ended, refused until their deadline, and as what.

A completed key's tombstone is what keeps a duplicated datagram from being delivered
twice (the page). They are bounded in all; past the bound the source holding the
most forgets its oldest, so a source that ends keys by the thousand (a datagram of
5,458 invalid first fragments leaves as many) forgets its own, never another's: 13
such datagrams flushed the 65,536 oldest-first, and a network duplicate of another
member's message was delivered twice (found by review). A source loses a tombstone
early only while no source holds more than it does.
"""

from collections import OrderedDict

from mcrelay.protocol.addresses import Address
from mcrelay.protocol.errors import DropReason

MessageKey = tuple[Address, bytes]
Tombstone = tuple[float, DropReason]
"""Until when a key's fragments are refused, and as what."""


class Tombstones:
    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._all: OrderedDict[MessageKey, Tombstone] = OrderedDict()  # oldest buried first
        self._of: dict[Address, OrderedDict[MessageKey, None]] = {}  # each source's, oldest first
        # The sources by how many tombstones they hold, and the most any holds: so the
        # heaviest is found without looking at every source.
        self._holding: dict[int, OrderedDict[Address, None]] = {}
        self._most = 0

    def __len__(self) -> int:
        return len(self._all)

    def get(self, key: MessageKey) -> Tombstone | None:
        return self._all.get(key)

    def holding(self, source: Address) -> int:
        """How many tombstones ``source`` holds."""
        return len(self._of.get(source, ()))

    def bury(self, key: MessageKey, deadline: float, reason: DropReason) -> None:
        """Refuse ``key`` until ``deadline`` as ``reason``; past the bound, the source
        holding the most forgets its oldest."""
        tombstone = (deadline, reason)
        if key in self._all:  # buried again: its old place was the front
            self._all.move_to_end(key)
            self._all[key] = tombstone
            self._of[key[0]].move_to_end(key)
            return
        self._all[key] = tombstone
        source = key[0]
        mine = self._of.get(source)
        if mine is None:
            mine = self._of[source] = OrderedDict()
        mine[key] = None
        self._recount(source, len(mine) - 1, len(mine))
        if len(self._all) > self.limit:
            heaviest = next(iter(self._holding[self._most]))
            self.forget(next(iter(self._of[heaviest])))

    def forget(self, key: MessageKey) -> None:
        del self._all[key]
        source = key[0]
        mine = self._of[source]
        del mine[key]
        if not mine:
            del self._of[source]
        self._recount(source, len(mine) + 1, len(mine))

    def forget_ended(self, now: float) -> None:
        """Forget the tombstones at the front whose deadline has passed (they leave in
        the order they were buried; one with a later deadline before them keeps them a
        while, and :meth:`get`'s caller compares the deadline)."""
        while self._all:
            key, (deadline, _) = next(iter(self._all.items()))
            if deadline > now:
                break
            self.forget(key)

    def _recount(self, source: Address, before: int, after: int) -> None:
        """``source`` held ``before`` tombstones, and holds ``after`` (one more or one
        fewer) now."""
        holding = self._holding
        if before:
            group = holding[before]
            del group[source]
            if not group:
                del holding[before]
        if after:
            heavier = holding.get(after)
            if heavier is None:
                heavier = holding[after] = OrderedDict()
            heavier[source] = None
        if after > self._most or self._most not in holding:
            self._most = after  # more than any, or one fewer than the most, held alone
