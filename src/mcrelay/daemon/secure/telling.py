"""What secure members are told of the others' presence, and when.

Each PRESENCE waits in its member's :class:`~mcrelay.daemon.secure.presence.PresenceQueue`
(one per subject, the latest) and goes into the member's channel while the relay's
own messages there are fewer than :data:`~mcrelay.daemon.secure.presence.OWN_IN_CHANNEL`,
or all of it before a relayed copy (a sender's join before its words). What waits
counts in the bound of all send buffers, :data:`WAITING_BYTES` a subject.
"""

from collections.abc import Callable

from mcrelay.core.members import Member
from mcrelay.daemon.secure.peers import Peer
from mcrelay.daemon.secure.presence import OWN_IN_CHANNEL, WAITING_BYTES, News, Subjects
from mcrelay.protocol.secure.messages import Presence


class Telling:
    def __init__(
        self,
        held: Callable[[Peer, int, float], None],
        send: Callable[[Peer, Presence, float], None],
    ) -> None:
        """``held``: bytes more (or fewer) held for a member; ``send``: a PRESENCE into
        its channel."""
        self._held = held
        self._send = send
        self.subjects = Subjects()
        """The subjects some member was told of, numbered (shared by every queue)."""

    def tell(self, peer: Peer | None, subject: Member, news: News, now: float) -> None:
        if peer is not None and not peer.closed:
            waiting = len(peer.presence)
            peer.presence.add(subject.id, news, self.subjects)
            self._held(peer, (len(peer.presence) - waiting) * WAITING_BYTES, now)
            self.pass_waiting(peer, now, everything=False)

    def pass_waiting(self, peer: Peer, now: float, *, everything: bool) -> None:
        """PRESENCE waiting for ``peer`` into its channel: while the relay's own messages
        there are few, or ``everything``."""
        while (
            peer.presence
            and not peer.closed
            and peer.closing_at is None  # its farewell is the last it hears
            and (everything or len(peer.own) < OWN_IN_CHANNEL)
        ):
            waiting = len(peer.presence)
            presence = peer.presence.take(self.subjects)
            self._held(peer, (len(peer.presence) - waiting) * WAITING_BYTES, now)
            self._send(peer, presence, now)
