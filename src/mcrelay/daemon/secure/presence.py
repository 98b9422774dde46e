"""What a secure member is still to be told of the others' presence: one PRESENCE per
subject, the latest, handed to its channel as the channel has room.

A member acknowledges at most 8 messages a round trip, and legacy registrations need
no proof: a burst of joins, re-keys and leaves (a hundred legacy datagrams) once
queued a PRESENCE each for every secure member, faster than any could acknowledge,
and a member whose queue passed its bound was removed as unreachable (found by
review). Here a later PRESENCE of a subject replaces the (re)join waiting (a
re-key's join, a leave), and a leave of a subject the member was never told of
cancels the join waiting for it; a leave waiting is kept before a rejoin (its reason
is news): what waits stays within two per subject the member knows or is to know
of, and the relay's own messages in its channel within :data:`OWN_IN_CHANNEL`. The
order between PRESENCE and relayed messages is kept by the profile, which hands over
everything waiting before a relayed copy.
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


@dataclass(slots=True, eq=False)
class PresenceQueue:
    _waiting: OrderedDict[Hashable, list[Presence]] = field(default_factory=OrderedDict)
    """By subject (the member told of, under one origin: the profile gives its id and
    origin id, so a legacy member's re-key is a new subject), in the order first
    queued: a leave, a (re)join, or a leave then a rejoin; never more. Ordered: a plain
    dict finds its first item after deletions at the front by skipping the deleted
    slots (draining 16,384 took 42 ms, 2.6 us a take; now 0.4 us)."""
    _known: set[Hashable] = field(default_factory=set)
    """The subjects handed over as present (joined, already present), not yet as left."""

    def __len__(self) -> int:
        return len(self._waiting)

    def add(self, subject: Hashable, presence: Presence) -> None:
        waiting = self._waiting.get(subject, [])
        if waiting and waiting[-1].event is not PresenceEvent.LEFT:
            last = waiting.pop()  # a (re)join not told yet: what comes now replaces it
            if (
                last.event is PresenceEvent.ALREADY_PRESENT
                and presence.event is PresenceEvent.JOINED
            ):
                presence = Presence(PresenceEvent.ALREADY_PRESENT, presence.origin)
        if presence.event is PresenceEvent.LEFT:
            if waiting:  # a leave waits: this one, of a rejoin never told, stands for both
                waiting[-1] = presence
            elif subject in self._known:
                waiting.append(presence)
            # else: never told it was there, nothing to tell
        else:
            waiting.append(presence)
        if waiting:
            self._waiting[subject] = waiting
        else:
            self._waiting.pop(subject, None)

    def take(self) -> Presence:
        """The next PRESENCE to hand over (the caller checks there is one)."""
        subject = next(iter(self._waiting))
        waiting = self._waiting[subject]
        presence = waiting.pop(0)
        if not waiting:
            del self._waiting[subject]
        if presence.event is PresenceEvent.LEFT:
            self._known.discard(subject)
        else:
            self._known.add(subject)
        return presence
