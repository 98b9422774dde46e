"""Reassembly of fragmented messages: a plain class, told the time by its caller.

Rules (``docs/protocol.md``): messages are keyed by (source, msg_id); a message
is complete when every seq in ``0..total-1`` has arrived. A bad ``total``, a
``seq`` out of range or a repeated seq with different bytes invalidates the
message, even as its first fragment. Completed and invalidated keys stay as tombstones until their
deadline, so a duplicated datagram is never delivered twice (``tombstones.py``: past
their bound the source holding the most forgets its oldest). Buffers are
bounded per source and in total. At the total bound the source holding the most
buffered bytes loses its oldest partial message to make room, so that many sources
together cannot starve a well-behaved one. :meth:`Reassembler.add` first drops the
messages whose deadline has passed; its outcome names every other message it
dropped, and why (timed out or evicted), so the caller counts each once.
"""

import dataclasses
from collections import OrderedDict
from dataclasses import dataclass, field

from mcrelay.protocol.addresses import Address
from mcrelay.protocol.errors import DropReason
from mcrelay.protocol.legacy.fragments import FRAGMENT_SIZE, MAX_FRAGMENTS, Fragment
from mcrelay.protocol.tombstones import MessageKey as MessageKey
from mcrelay.protocol.tombstones import Tombstones

FRAGMENT_OVERHEAD_BYTES = 64
"""Bytes charged per buffered fragment on top of its piece, so tiny fragments still cost."""
MESSAGE_OVERHEAD_BYTES = 4096
"""Bytes charged per message in reassembly, on top of its fragments. Its bookkeeping
costs about 0.5 KB (tracemalloc); the charge errs high, so a storm of tiny messages
reaches the byte cap long before it costs that much memory."""
REASSEMBLY_TIMEOUT_S = 5.0
"""The legacy profile's deadline: the default the relay's setting starts from."""
MAX_TOMBSTONES = 65536
"""Finished keys remembered (a tombstone holds no data); past this the source holding the
most forgets its oldest."""


Dropped = tuple[tuple[MessageKey, DropReason], ...]
"""Messages a call ended besides the fragment's own: timed out, or evicted for room."""


@dataclass(frozen=True, slots=True)
class Pending:
    """The fragment was buffered; ``new`` when it started the message."""

    key: MessageKey
    deadline: float
    new: bool
    dropped: Dropped = ()


@dataclass(frozen=True, slots=True)
class Complete:
    key: MessageKey
    payload: bytes
    dropped: Dropped = ()


@dataclass(frozen=True, slots=True)
class Rejected:
    """The fragment was dropped; ``ended`` when it also invalidated a pending message."""

    reason: DropReason
    ended: bool = False
    dropped: Dropped = ()


Outcome = Pending | Complete | Rejected


@dataclass(slots=True)
class _Partial:
    total: int
    deadline: float
    lane: float
    """The timeout it started under."""
    pieces: dict[int, bytes] = field(default_factory=dict)
    charged: int = 0


class Reassembler:
    def __init__(
        self,
        *,
        timeout_s: float = REASSEMBLY_TIMEOUT_S,
        max_fragments: int = MAX_FRAGMENTS,
        max_messages_per_source: int = 8,
        max_total_bytes: int = 4 * 1024 * 1024,
        max_tombstones: int = MAX_TOMBSTONES,
    ) -> None:
        self.timeout_s = timeout_s
        self.max_fragments = max_fragments
        self.max_messages_per_source = max_messages_per_source
        self.max_total_bytes = max_total_bytes
        self._partials: dict[MessageKey, _Partial] = {}
        # One lane per timeout a message started under (one, but for a while after the
        # timeout changes): within a lane, first-fragment order is deadline order.
        self._lanes: dict[float, OrderedDict[MessageKey, _Partial]] = {}
        # Ended keys: until when their fragments are refused, and as what.
        self._tombstones = Tombstones(max_tombstones)
        # Each source's partial messages, oldest first, and the bytes charged for them.
        self._per_source: dict[Address, dict[MessageKey, _Partial]] = {}
        self._bytes_per_source: dict[Address, int] = {}
        self.buffered_bytes = 0

    @property
    def in_flight(self) -> int:
        return len(self._partials)

    def bytes_per_source(self) -> dict[Address, int]:
        """Bytes charged to each source holding a partial message."""
        return dict(self._bytes_per_source)

    def starts(self, key: MessageKey, now: float) -> bool:
        """Would a fragment of ``key`` start a message (none pending, none just ended)?
        A pending one past its deadline is expired by :meth:`add` first: it starts anew."""
        partial = self._partials.get(key)
        if partial is not None:
            return partial.deadline <= now
        return self.ended(key, now) is None

    def ended(self, key: MessageKey, now: float) -> DropReason | None:
        """Why a fragment of ``key`` is refused at ``now`` if its message has ended (it
        completed, was invalidated, evicted or refused, and its deadline is to come)."""
        buried = self._tombstones.get(key)
        return buried[1] if buried is not None and buried[0] > now else None

    def refuse(self, key: MessageKey, now: float) -> None:
        """The caller refused the message a fragment of ``key`` would start: its other
        fragments are refused as ``overloaded`` too, until the deadline it would have had
        (else a later one could start it, missing the first, and hold a slot to no end)."""
        self._bury(key, now + self.timeout_s, DropReason.OVERLOADED)

    def add(self, source: Address, fragment: Fragment, now: float) -> Outcome:
        """Take one fragment, at ``now``. Messages past their deadline are dropped first
        (a late fragment of one starts it afresh), and named in the outcome's ``dropped``
        with the messages evicted to make room, so each is counted once."""
        dropped = [(key, DropReason.REASSEMBLY_TIMEOUT) for key in self.expire(now)]
        result = self._add((source, fragment.msg_id), fragment, now, dropped)
        return dataclasses.replace(result, dropped=tuple(dropped)) if dropped else result

    def _add(
        self,
        key: MessageKey,
        fragment: Fragment,
        now: float,
        dropped: list[tuple[MessageKey, DropReason]],
    ) -> Outcome:
        buried = self._tombstones.get(key)
        if buried is not None:
            if buried[0] > now:
                return Rejected(buried[1])
            # Tombstones leave in completion order; this one is past its own deadline.
            self._tombstones.forget(key)
        partial = self._partials.get(key)
        if not self._valid_numbers(fragment) or (
            partial is not None and fragment.total != partial.total
        ):
            return self._invalidate(key, partial, now)
        if partial is None:
            return self._start(key, fragment, now, dropped)
        known = partial.pieces.get(fragment.seq)
        if known is not None:
            if known == fragment.piece:
                return Rejected(DropReason.DUPLICATE_FRAGMENT)
            return self._invalidate(key, partial, now)
        cost = len(fragment.piece) + FRAGMENT_OVERHEAD_BYTES
        self._make_room(cost, key, dropped)
        if self.buffered_bytes + cost > self.max_total_bytes:
            return Rejected(DropReason.BUFFER_LIMIT)
        partial.pieces[fragment.seq] = fragment.piece
        self._charge(key[0], partial, cost)
        if len(partial.pieces) == partial.total:
            return self._complete(key, partial)
        return Pending(key, partial.deadline, new=False)

    def clear(self) -> list[MessageKey]:
        """Drop every partial message (nothing more will come); return their keys."""
        ended = list(self._partials)
        for key in ended:
            self._release(key, self._partials[key])
        return ended

    def expire(self, now: float) -> list[MessageKey]:
        """Drop every message whose deadline has passed; return the keys that timed out."""
        timed_out: list[MessageKey] = []
        for lane in list(self._lanes.values()):
            while lane:
                key, partial = next(iter(lane.items()))
                if partial.deadline > now:
                    break
                self._release(key, partial)
                timed_out.append(key)
        self._tombstones.forget_ended(now)
        return timed_out

    def _valid_numbers(self, fragment: Fragment) -> bool:
        return (
            0 < fragment.total <= self.max_fragments
            and fragment.seq < fragment.total
            and len(fragment.piece) <= FRAGMENT_SIZE
        )

    def _start(
        self,
        key: MessageKey,
        fragment: Fragment,
        now: float,
        dropped: list[tuple[MessageKey, DropReason]],
    ) -> Outcome:
        source = key[0]
        deadline = now + self.timeout_s
        if fragment.total == 1:
            # Complete at once: never buffered, so no bound applies.
            self._bury(key, deadline)
            return Complete(key, fragment.piece)
        if len(self._per_source.get(source, ())) >= self.max_messages_per_source:
            return Rejected(DropReason.SOURCE_LIMIT)
        cost = MESSAGE_OVERHEAD_BYTES + len(fragment.piece) + FRAGMENT_OVERHEAD_BYTES
        self._make_room(cost, key, dropped)
        if self.buffered_bytes + cost > self.max_total_bytes:
            return Rejected(DropReason.BUFFER_LIMIT)
        partial = _Partial(fragment.total, deadline, self.timeout_s, {fragment.seq: fragment.piece})
        self._partials[key] = partial
        self._lanes.setdefault(partial.lane, OrderedDict())[key] = partial
        self._per_source.setdefault(source, {})[key] = partial
        self._charge(source, partial, cost)
        return Pending(key, partial.deadline, new=True)

    def _charge(self, source: Address, partial: _Partial, cost: int) -> None:
        partial.charged += cost
        self.buffered_bytes += cost
        self._bytes_per_source[source] = self._bytes_per_source.get(source, 0) + cost

    def _make_room(
        self, cost: int, keep: MessageKey, dropped: list[tuple[MessageKey, DropReason]]
    ) -> None:
        """Evict until ``cost`` more bytes fit: each time, the oldest partial message of
        the source holding the most bytes (never ``keep``, the fragment's own message);
        a source whose only message is ``keep`` is passed over for the next, so a sender
        growing one large message is not stopped by many sources holding a little.
        Nothing is evicted when evicting everything but ``keep`` would not do."""
        kept = self._partials[keep].charged if keep in self._partials else 0
        if kept + cost > self.max_total_bytes:  # every buffered byte is a partial message's
            return
        spent: Address | None = None
        held = self._bytes_per_source.__getitem__
        while self.buffered_bytes + cost > self.max_total_bytes:
            heaviest = max(
                (s for s in self._bytes_per_source if s != spent), key=held, default=None
            )
            if heaviest is None:
                break
            victim = next((k for k in self._per_source[heaviest] if k != keep), None)
            if victim is None:
                spent = heaviest  # keep's source, holding only keep
                continue
            partial = self._partials[victim]
            self._release(victim, partial)
            self._bury(victim, partial.deadline)
            dropped.append((victim, DropReason.REASSEMBLY_EVICTED))

    def _complete(self, key: MessageKey, partial: _Partial) -> Complete:
        payload = b"".join(partial.pieces[seq] for seq in range(partial.total))
        self._release(key, partial)
        self._bury(key, partial.deadline)
        return Complete(key, payload)

    def _invalidate(self, key: MessageKey, partial: _Partial | None, now: float) -> Rejected:
        if partial is None:
            # The page: an invalid first fragment invalidates its message too, until the
            # deadline it started (a valid message under the key was relayed, review).
            self._bury(key, now + self.timeout_s)
            return Rejected(DropReason.INVALID_FRAGMENT)
        self._release(key, partial)
        self._bury(key, partial.deadline)
        return Rejected(DropReason.INVALID_FRAGMENT, ended=True)

    def _release(self, key: MessageKey, partial: _Partial) -> None:
        del self._partials[key]
        lane = self._lanes[partial.lane]
        del lane[key]
        if not lane:
            del self._lanes[partial.lane]
        self.buffered_bytes -= partial.charged
        source = key[0]
        held = self._per_source[source]
        del held[key]
        if held:
            self._bytes_per_source[source] -= partial.charged
        else:
            del self._per_source[source], self._bytes_per_source[source]

    def _bury(
        self, key: MessageKey, deadline: float, reason: DropReason = DropReason.LATE_FRAGMENT
    ) -> None:
        self._tombstones.bury(key, deadline, reason)
