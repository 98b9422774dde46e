"""Back-pressure: which members hold it, and which of them no longer may.

A member whose copies outstanding (in flight and queued) reach
:data:`BACKPRESSURE_COPIES` holds back-pressure: no new message is started from anyone
(the shared receive budget's flag), so that a slow receiver slows the senders rather
than losing copies. A member that holds it for :data:`STALL_LIMIT_S` without
acknowledging a copy is released: it holds back-pressure no more until it acknowledges
one. Its copies keep queuing for it, within their bounds: past them it is removed
(queue full), as it is when one passes its 10 s deadline, and a member whose link only
paused catches up. Before, one such member held the whole group until its copies'
deadline (a fresh key each time: for good), and removing it after a few seconds instead
removed honest members whose link paused for 2.2 s (both found by review).
"""

from mcrelay.daemon.secure.peers import Peer
from mcrelay.protocol.secure.budget import ReceiveBudget
from mcrelay.protocol.secure.sending import MESSAGE_WINDOW, QUEUE_LIMIT

BACKPRESSURE_COPIES = MESSAGE_WINDOW + QUEUE_LIMIT // 2
"""Relayed copies outstanding towards one member past which no new message is started
from anyone: its queue is half full."""
STALL_LIMIT_S = 1.0
"""How long a member may hold back-pressure without acknowledging a copy. A receiver
that is only slow acknowledges within its round trip."""


class Backpressure:
    def __init__(self, budget: ReceiveBudget) -> None:
        self._budget = budget
        self._holders: set[Peer] = set()
        self._released: set[Peer] = set()
        """Held it past the limit, and acknowledged nothing since."""

    def update(self, peer: Peer, now: float) -> None:
        """``peer``'s copies outstanding changed: it holds back-pressure, or not."""
        if (
            len(peer.copies) >= BACKPRESSURE_COPIES
            and not peer.closed
            and peer.closing_at is None
            and peer not in self._released
        ):
            if peer not in self._holders:
                self._holders.add(peer)
                peer.stalled_since = now
        else:
            self._let_go(peer)

    def acknowledged(self, peer: Peer, now: float) -> None:
        """A copy of ``peer``'s was acknowledged: it reads."""
        self._released.discard(peer)
        if peer.stalled_since is not None:
            peer.stalled_since = now

    def release_if_stalled(self, peer: Peer, now: float) -> float | None:
        """Release ``peer`` if it has held back-pressure too long without acknowledging;
        else when it will have (None: it holds none)."""
        if peer.stalled_since is None:
            return None
        if now < peer.stalled_since + STALL_LIMIT_S:
            return peer.stalled_since + STALL_LIMIT_S
        self._released.add(peer)
        self._let_go(peer)
        return None

    def forget(self, peer: Peer) -> None:
        """``peer`` closed."""
        self._released.discard(peer)
        self._let_go(peer)

    def _let_go(self, peer: Peer) -> None:
        self._holders.discard(peer)
        peer.stalled_since = None
        self._budget.backpressure = bool(self._holders)
