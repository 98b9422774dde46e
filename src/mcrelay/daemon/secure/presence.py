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
bytes more each were kept for good once told (1,453 members held 789 MB: found by
review). So an entry is small (the PRESENCE made for the announcement, shared by every
member told, or the member itself), the profile counts each as :data:`WAITING_BYTES`
in that bound (:mod:`.buffers`), and nothing is kept of what was told: the relay tells
a subject's news in order (present, left, present again...), so a subject with
nothing waiting has been told of, and a leave is news to the member.
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
    Departure.REPLACED: LeaveReason.UNREACHABLE,  # another relay's: the page has no such
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


@dataclass(slots=True, eq=False)
class PresenceQueue:
    _waiting: OrderedDict[Hashable, Waiting] = field(default_factory=OrderedDict)
    """By subject (the member told of: the profile gives its id), in the order first
    queued. Ordered: a plain dict finds its first item after deletions at the front
    by skipping the deleted slots (draining 16,384 took 42 ms, 2.6 us a take; now
    0.4 us)."""

    def __len__(self) -> int:
        """The subjects waiting."""
        return len(self._waiting)

    def add(self, subject: Hashable, news: News) -> None:
        waiting = self._waiting.get(subject)
        if waiting is None:
            self._waiting[subject] = news
            return
        earlier: Presence | None = None
        rejoin: News | None = waiting if not isinstance(waiting, tuple) else waiting[1]
        if isinstance(waiting, tuple):
            earlier = waiting[0]
        elif isinstance(waiting, Presence) and waiting.event is PresenceEvent.LEFT:
            earlier, rejoin = waiting, None
        if _is_leave(news):
            # A (re)join never told: with no leave waiting, the two cancel out; else the
            # leave waiting stands for both, as it is of what the member was told (this
            # one may be of a key it never heard of: a re-key's).
            if earlier is None:
                del self._waiting[subject]
            else:
                self._waiting[subject] = earlier
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

    def take(self) -> Presence:
        """The next PRESENCE to hand over (the caller checks there is one)."""
        subject, waiting = next(iter(self._waiting.items()))
        if isinstance(waiting, tuple):
            self._waiting[subject] = waiting[1]  # its place kept: next in turn
            return waiting[0]
        del self._waiting[subject]
        if isinstance(waiting, Member):
            return presence_of(PresenceEvent.ALREADY_PRESENT, waiting)
        return waiting

    def clear(self) -> None:
        self._waiting.clear()


def _is_leave(news: News) -> bool:
    return isinstance(news, Presence) and news.event is PresenceEvent.LEFT
