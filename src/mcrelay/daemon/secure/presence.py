"""What a secure member is still to be told of the others' presence: one PRESENCE per
subject, the latest, handed to its channel as the channel has room.

A member acknowledges at most 8 messages a round trip, and legacy registrations need
no proof: a burst of joins, re-keys and leaves (a hundred legacy datagrams) once
queued a PRESENCE each for every secure member, faster than any could acknowledge,
and a member whose queue passed its bound was removed as unreachable (found by
review). Here a later PRESENCE of a subject replaces the one waiting (a re-key's
join, a leave), and a leave of a subject the member was never told of cancels the
join waiting for it: what waits stays within one per subject the member knows or is
to know of, and the relay's own messages in its channel within
:data:`OWN_IN_CHANNEL`. The order between PRESENCE and relayed messages is kept by
the profile, which hands over everything waiting before a relayed copy.
"""

from dataclasses import dataclass, field

from mcrelay.protocol.secure.messages import Presence, PresenceEvent

OWN_IN_CHANNEL = 16
"""The relay's own messages (PRESENCE, NOTICE) in a member's channel, unacknowledged,
past which PRESENCE waits here."""


@dataclass(slots=True, eq=False)
class PresenceQueue:
    _waiting: dict[str, Presence] = field(default_factory=dict)
    """By subject (the member id told of), in the order first queued."""
    _known: set[str] = field(default_factory=set)
    """The subjects handed over as present (joined, already present), not yet as left."""

    def __len__(self) -> int:
        return len(self._waiting)

    def add(self, subject: str, presence: Presence) -> None:
        if presence.event is PresenceEvent.LEFT and subject not in self._known:
            self._waiting.pop(subject, None)  # never told it was there: nothing to tell
        else:
            self._waiting[subject] = presence

    def take(self) -> Presence:
        """The next PRESENCE to hand over (the caller checks there is one)."""
        subject = next(iter(self._waiting))
        presence = self._waiting.pop(subject)
        if presence.event is PresenceEvent.LEFT:
            self._known.discard(subject)
        else:
            self._known.add(subject)
        return presence
