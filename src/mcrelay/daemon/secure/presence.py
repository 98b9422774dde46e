"""What a secure member is still to be told of the others' presence: one PRESENCE per
subject, the latest, handed to its channel as the channel has room.

A member acknowledges at most 8 messages a round trip, and legacy registrations need
no proof: a burst of joins, re-keys and leaves (a hundred legacy datagrams) once
queued a PRESENCE each for every secure member, faster than any could acknowledge,
and a member whose queue passed its bound was removed as unreachable (found by
review). Here a later PRESENCE of a subject replaces the (re)join waiting (a
re-key's join, a leave), and a leave of a subject whose join still waits cancels
it; a leave waiting is kept before a rejoin (its reason is news) and stands for a
later leave: what waits stays within two per subject, and the relay's own messages in
its channel within :data:`OWN_IN_CHANNEL`. The order between PRESENCE and relayed
messages is kept by the profile, which hands over everything waiting before a
relayed copy.

What waits is still one entry per (member, subject): a mass join of n members is n^2
of them. They were 342 bytes each, held outside the bound of all send buffers, and 176
bytes more each were kept for good once told, in a set per member (1,453 members held
789 MB: found by review). So an entry is small (the PRESENCE made for the
announcement, shared by every member told, or the member itself), the profile counts
each as :data:`WAITING_BYTES` in that bound (:mod:`.buffers`), and what was told is a
bit per subject (:class:`Subjects` numbers them). It must be kept: the relay does not
tell every subject's news in order to every member (a leave deferred behind the
member's messages reached members that joined meanwhile, never told it was there; a
remote member's join announced after a newcomer was told it was present), and without
it a member was told of leaves of strangers, and kept a ghost (found by review).
"""

from collections import OrderedDict
from collections.abc import Hashable
from dataclasses import dataclass, field

from mcrelay.core.members import Departure, Identity, Member
from mcrelay.daemon.secure.origin import origin_of
from mcrelay.protocol.secure.messages import LeaveReason, Presence, PresenceEvent

OWN_IN_CHANNEL = 16
"""The relay's own messages (PRESENCE, NOTICE) in a member's channel, unacknowledged,
past which PRESENCE waits here."""
WAITING_BYTES = 96
"""What a subject waiting is counted as in the bound of all send buffers: an ordered
dict's entry (its PRESENCE, or member, is shared), measured with tracemalloc at 74
bytes on average (342 before, and 176 more kept for each subject once told), with room
for the dict's growth."""
LEAVE_REASONS = {
    Departure.DISCONNECT: LeaveReason.DISCONNECT,
    Departure.TIMEOUT: LeaveReason.TIMEOUT,
    Departure.KICK: LeaveReason.KICK,
    Departure.BAN: LeaveReason.BAN,
    Departure.UNREACHABLE: LeaveReason.UNREACHABLE,
    # Another relay's member, or a legacy one displaced here: the page has no such reason.
    Departure.REPLACED: LeaveReason.UNREACHABLE,
}


def presence_of(
    event: PresenceEvent,
    member: Member,
    reason: Departure | None = None,
    *,
    identity: Identity | None = None,
) -> Presence:
    """The PRESENCE telling of ``member`` (under ``identity``, an earlier key of its,
    when given); a leave's ``reason`` as the roster says it."""
    origin = origin_of(identity or member.identity, member.address)
    if event is not PresenceEvent.LEFT:
        return Presence(event, origin)
    assert reason is not None, "a leave has a reason"
    return Presence(event, origin, LEAVE_REASONS[reason])


News = Presence | Member
"""A PRESENCE, or a member to tell a newcomer of as already present (as it is when
told: one PRESENCE a newcomer for each member was n^2 objects in a mass join)."""
Waiting = News | tuple[Presence, News]
"""A subject's news: one, or a leave before a rejoin."""


class Subjects:
    """Small numbers for the subjects some member was told of as present, so that what
    each member was told is a bit of its own (a set of them per member was n^2 entries
    of 176 bytes, kept for good). A number is reused once no member holds its bit."""

    def __init__(self) -> None:
        self._slots: dict[Hashable, int] = {}
        self._names: list[Hashable] = []
        self._holders: list[int] = []
        self._free: list[int] = []

    def __len__(self) -> int:
        return len(self._slots)

    def find(self, subject: Hashable) -> int | None:
        return self._slots.get(subject)

    def hold(self, subject: Hashable) -> int:
        slot = self._slots.get(subject)
        if slot is None:
            if self._free:
                slot = self._free.pop()
                self._names[slot] = subject
            else:
                slot = len(self._names)
                self._names.append(subject)
                self._holders.append(0)
            self._slots[subject] = slot
        self._holders[slot] += 1
        return slot

    def release(self, slot: int) -> None:
        self._holders[slot] -= 1
        if not self._holders[slot]:
            del self._slots[self._names[slot]]
            self._names[slot] = None
            self._free.append(slot)


@dataclass(slots=True, eq=False)
class PresenceQueue:
    _waiting: OrderedDict[Hashable, Waiting] = field(default_factory=OrderedDict)
    """By subject (the member told of: the profile gives its id), in the order first
    queued. Ordered: a plain dict finds its first item after deletions at the front
    by skipping the deleted slots (draining 16,384 took 42 ms, 2.6 us a take; now
    0.4 us)."""
    _known: bytearray = field(default_factory=bytearray)
    """A bit per :class:`Subjects` number: told of as present, and not since as left."""

    def __len__(self) -> int:
        """The subjects waiting."""
        return len(self._waiting)

    def add(self, subject: Hashable, news: News, subjects: Subjects) -> None:
        """Queue ``news`` of ``subject``, as the member was told of it so far."""
        known = self._knows(subjects.find(subject))
        waiting = self._waiting.get(subject)
        if waiting is None:
            if _is_leave(news) is known:  # a leave of one told of; a join of one not
                self._waiting[subject] = news
            return  # a leave of one never told of, or a join of one told of already
        earlier: Presence | None = None
        rejoin: News | None = waiting if not isinstance(waiting, tuple) else waiting[1]
        if isinstance(waiting, tuple):
            earlier = waiting[0]
        elif isinstance(waiting, Presence) and waiting.event is PresenceEvent.LEFT:
            earlier, rejoin = waiting, None
        if _is_leave(news):
            # A (re)join never told: the leave waiting stands for both, as it is of what
            # the member was told (this one may be of a re-key's key it never heard of);
            # with none, the two cancel out, unless the member was told of it before.
            if earlier is not None:
                self._waiting[subject] = earlier
            elif known:
                self._waiting[subject] = news
            else:
                del self._waiting[subject]
            return
        if isinstance(rejoin, Member):
            news = rejoin  # a newcomer not told yet: already present, as it now is
        elif (
            isinstance(rejoin, Presence)
            and rejoin.event is PresenceEvent.ALREADY_PRESENT
            and isinstance(news, Presence)
        ):
            news = Presence(PresenceEvent.ALREADY_PRESENT, news.origin)
        self._waiting[subject] = news if earlier is None else (earlier, news)

    def take(self, subjects: Subjects) -> Presence:
        """The next PRESENCE to hand over (the caller checks there is one)."""
        subject, waiting = next(iter(self._waiting.items()))
        if isinstance(waiting, tuple):
            self._waiting[subject] = waiting[1]  # its place kept: next in turn
            news: News = waiting[0]
        else:
            del self._waiting[subject]
            news = waiting
        if _is_leave(news):
            slot = subjects.find(subject)
            if slot is not None and self._knows(slot):
                self._known[slot >> 3] &= ~(1 << (slot & 7)) & 0xFF
                subjects.release(slot)
        elif not self._knows(subjects.find(subject)):
            slot = subjects.hold(subject)
            if slot >> 3 >= len(self._known):
                self._known.extend(bytes((slot >> 3) + 1 - len(self._known)))
            self._known[slot >> 3] |= 1 << (slot & 7)
        if isinstance(news, Member):
            return presence_of(PresenceEvent.ALREADY_PRESENT, news)
        return news

    def clear(self, subjects: Subjects) -> None:
        """Forget everything (the member's session closed), its subjects' numbers too."""
        for index, byte in enumerate(self._known):
            for bit in range(8) if byte else ():
                if byte >> bit & 1:
                    subjects.release(index * 8 + bit)
        self._known.clear()
        self._waiting.clear()

    def _knows(self, slot: int | None) -> bool:
        return (
            slot is not None
            and slot >> 3 < len(self._known)
            and bool(self._known[slot >> 3] >> (slot & 7) & 1)
        )


def _is_leave(news: News) -> bool:
    return isinstance(news, Presence) and news.event is PresenceEvent.LEFT
