"""Back-pressure: which members hold it, and which of them stopped reading.

A member whose copies outstanding (in flight and queued) reach
:data:`BACKPRESSURE_COPIES` holds back-pressure: no new message is started from anyone
(the shared receive budget's flag), so that a slow receiver slows the senders rather
than losing copies. A member that holds it for :data:`STALL_LIMIT_S` without
acknowledging a copy is not slow but stalled (asleep, gone, hostile): the profile removes
it. Before, one such member held the whole group until its copies' 10 s deadline, and a
fresh key each time held it for good (found by review).
"""

from mcrelay.daemon.secure.peers import Peer
from mcrelay.protocol.secure.budget import ReceiveBudget
from mcrelay.protocol.secure.sending import MESSAGE_WINDOW, QUEUE_LIMIT

BACKPRESSURE_COPIES = MESSAGE_WINDOW + QUEUE_LIMIT // 2
"""Relayed copies outstanding towards one member past which no new message is started
from anyone: its queue is half full."""
STALL_LIMIT_S = 4.0
"""How long a member may hold back-pressure without acknowledging a copy: two of the
relay's longest retransmission timeouts (2 s), so that a member whose link paused for
a moment (a lost retransmission, a Wi-Fi roam) is not removed for it (2 s removed it
after a pause of 2.5 s: found by review)."""


class Backpressure:
    def __init__(self, budget: ReceiveBudget) -> None:
        self._budget = budget
        self._holders: set[Peer] = set()

    def update(self, peer: Peer, now: float) -> None:
        """``peer``'s copies outstanding changed: it holds back-pressure, or not."""
        if len(peer.copies) >= BACKPRESSURE_COPIES and not peer.closed and peer.closing_at is None:
            if peer not in self._holders:
                self._holders.add(peer)
                peer.stalled_since = now
        else:
            self.forget(peer)
        self._budget.backpressure = bool(self._holders)

    def acknowledged(self, peer: Peer, now: float) -> None:
        """A copy of ``peer``'s was acknowledged: it reads."""
        if peer.stalled_since is not None:
            peer.stalled_since = now

    def forget(self, peer: Peer) -> None:
        """``peer`` holds back-pressure no more (or closed)."""
        self._holders.discard(peer)
        peer.stalled_since = None
        self._budget.backpressure = bool(self._holders)

    @staticmethod
    def stalled_at(peer: Peer) -> float | None:
        """When ``peer`` counts as stalled, if it holds back-pressure."""
        return None if peer.stalled_since is None else peer.stalled_since + STALL_LIMIT_S
