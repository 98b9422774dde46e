"""Back-pressure: which members hold it.

A member whose copies outstanding (in flight and queued) reach
:data:`BACKPRESSURE_COPIES` holds back-pressure: no new message is started from anyone
(the shared receive budget's flag), so that a slow receiver slows the senders rather
than losing copies. As the page has it, it holds until its queue drains or the member
is removed (a message to it past its 10 s deadline): one member that stops reading
holds every sender up to then (docs/protocol.md, problems found in the page). A member
being sent its farewell (kicked, banned) is leaving and holds none.
"""

from mcrelay.daemon.secure.peers import Peer
from mcrelay.protocol.secure.budget import ReceiveBudget
from mcrelay.protocol.secure.sending import MESSAGE_WINDOW, QUEUE_LIMIT

BACKPRESSURE_COPIES = MESSAGE_WINDOW + QUEUE_LIMIT // 2
"""Relayed copies outstanding towards one member past which no new message is started
from anyone: its queue is half full."""


class Backpressure:
    def __init__(self, budget: ReceiveBudget) -> None:
        self._budget = budget
        self._holders: set[Peer] = set()

    def update(self, peer: Peer) -> None:
        """``peer``'s copies outstanding changed: it holds back-pressure, or not."""
        if len(peer.copies) >= BACKPRESSURE_COPIES and not peer.closed and peer.closing_at is None:
            self._holders.add(peer)
        else:
            self._holders.discard(peer)
        self._budget.backpressure = bool(self._holders)

    def forget(self, peer: Peer) -> None:
        """``peer`` closed."""
        self._holders.discard(peer)
        self._budget.backpressure = bool(self._holders)
