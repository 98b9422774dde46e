"""The secure profile's records: a member's session (a peer), a handshake waiting for
its first DATA (pending), what the API shows of a peer, and the timers of all peers.

Timers: every peer's session says when it next needs a turn (a retransmission, an
ACK, a keep-alive); one heap holds those times and one task sleeps until the
earliest. A task per member would cost a few KB each, and the relay holds tens of
thousands of idle members.
"""

import heapq
import itertools
import math
from collections import OrderedDict
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

import trio

from mcrelay.core.members import Departure, Member
from mcrelay.daemon.secure.presence import PresenceQueue
from mcrelay.protocol.addresses import Address
from mcrelay.protocol.secure.keypairs import Keypair
from mcrelay.protocol.secure.session import PENDING_LIFETIME_S, Session

TIMER_GRANULARITY_S = 0.001
"""A peer is turned again no sooner than this (a session that has work it cannot do
now must not spin the loop)."""
COALESCE_S = 0.002
"""Copies and notices for a peer that was sent DATA less than this ago wait until
then, so that a busy peer's copies share datagrams (an idle one's go at once; a
peer sent 500 copies a second or more is busy). 2 ms holds a window's worth (8) at
4,000 messages a second; past the window, what waits goes as the peer's ACK opens
it. Against 1 ms: the relay's CPU per message 9 to 17 % lower, and a copy's wait is
bounded by 2 ms instead of 1 (the median latency at 500 messages a second rose from
0.39 to 1.51 ms; bench/README.md, issue 11)."""


@dataclass(eq=False, slots=True)
class Pending:
    """A handshake answered, waiting for the client's first DATA under its keypair."""

    key: bytes
    keypair: Keypair
    client_epoch: int
    relay_epoch: int
    address: Address
    """The INIT's source: validated once the handshake is confirmed."""
    created: float


@dataclass(eq=False, slots=True)
class Peer:
    """A secure member's state beyond its roster entry."""

    key: bytes
    session: Session
    client_epoch: int
    relay_epoch: int
    member: Member | None = None
    """Its roster entry (set as it is registered)."""
    scheduled: float = math.inf
    """When its next turn is due (inf: none scheduled)."""
    flushed_at: float = -math.inf
    """When DATA last went to it."""
    copies: dict[int, int] = field(default_factory=dict)
    """Relayed copies not yet acknowledged: message id -> bytes."""
    own: dict[int, int] = field(default_factory=dict)
    """The relay's own messages (PRESENCE, NOTICE) not yet acknowledged, likewise."""
    presence: PresenceQueue = field(default_factory=PresenceQueue)
    """PRESENCE waiting for room among ``own``."""
    copy_bytes: int = 0
    """The bytes of both, and :data:`~mcrelay.daemon.secure.presence.WAITING_BYTES` for
    each subject in ``presence``."""
    farewell: int | None = None
    """The id of the NOTICE (kicked, banned) it is sent before it goes."""
    leaving: Departure | None = None
    """Why it leaves once its farewell is acknowledged (kick, ban), or at ``closing_at``."""
    closing_at: float | None = None
    """When a peer that is being sent its farewell leaves, acknowledged or not."""
    closed: bool = False
    indexes: set[int] = field(default_factory=set)
    """Every local index its keypairs were given (forgotten together when it closes)."""

    def hold_indexes(self, table: "dict[int, Peer | Pending]") -> None:
        """Look up exactly the keypairs its session holds in ``table`` (the relay's): a
        rekey's keypair that a later rekey replaced before any DATA came under it is
        forgotten, so a member that rekeys without end does not grow the table."""
        held = self.session.local_indexes()
        for index in self.indexes - held:
            if table.get(index) is self:
                del table[index]
        for index in held:
            table[index] = self
        self.indexes = held


class PendingHandshakes:
    """Handshakes answered and waiting for their first DATA: one per key (its latest
    INIT's), oldest first, each forgotten after :data:`PENDING_LIFETIME_S`. Their
    local indexes are in the profile's table of indexes, shared with the peers."""

    def __init__(self, indexes: dict[int, "Peer | Pending"]) -> None:
        self._indexes = indexes
        self._by_index: OrderedDict[int, Pending] = OrderedDict()
        self._by_key: dict[bytes, int] = {}

    def __len__(self) -> int:
        return len(self._by_index)

    def __contains__(self, key: bytes) -> bool:
        return key in self._by_key

    def __iter__(self) -> Iterator[bytes]:
        """The keys (a copy: the caller may forget them as it goes)."""
        return iter(list(self._by_key))

    def get(self, index: int) -> Pending | None:
        return self._by_index.get(index)

    def add(self, index: int, pending: Pending) -> None:
        """Hold ``pending`` under its local index (the caller forgot its key's earlier one)."""
        self._by_index[index] = pending
        self._by_key[pending.key] = index
        self._indexes[index] = pending

    def forget(self, key: bytes) -> None:
        index = self._by_key.pop(key, None)
        if index is not None:
            del self._by_index[index]
            self._indexes.pop(index, None)

    def expire(self, now: float) -> None:
        while self._by_index:
            index, pending = next(iter(self._by_index.items()))
            if pending.created + PENDING_LIFETIME_S > now:  # as next_expiry says it: in
                return  # floats, now - created could be just under it then, for ever
            del self._by_index[index]
            del self._by_key[pending.key]
            self._indexes.pop(index, None)

    def next_expiry(self) -> float:
        """When the oldest is forgotten (inf: none is held)."""
        oldest = next(iter(self._by_index.values()), None)
        return math.inf if oldest is None else oldest.created + PENDING_LIFETIME_S


class Details(Mapping[str, object]):
    """What the API shows of a secure member beyond its roster entry, read live."""

    _FIELDS = ("key", "epoch", "relay_epoch", "rtt_ms", "retransmissions")

    def __init__(self, peer: Peer, key_text: str) -> None:
        self.peer = peer
        """The member's current session (a replacement's, once it replaced one)."""
        self._key_text = key_text

    def __getitem__(self, name: str) -> object:
        peer = self.peer
        statistics = peer.session.channel.statistics()
        match name:
            case "key":
                return self._key_text
            case "epoch":
                return peer.client_epoch
            case "relay_epoch":
                return peer.relay_epoch
            case "rtt_ms":
                srtt = statistics.srtt_s
                return None if srtt is None else round(srtt * 1000, 3)
            case "retransmissions":
                return statistics.retransmissions
        raise KeyError(name)

    def __iter__(self) -> Iterator[str]:
        return iter(self._FIELDS)

    def __len__(self) -> int:
        return len(self._FIELDS)


class Timers:
    """When each peer next needs a turn; :meth:`wait` sleeps until the earliest."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, Peer]] = []
        self._order = itertools.count()
        self._sleep: trio.CancelScope | None = None

    def schedule(self, peer: Peer, at: float) -> None:
        """Turn ``peer`` at ``at`` or before (an earlier time wins; a later one waits
        for the turn already scheduled, which schedules again)."""
        if at >= peer.scheduled:
            return
        peer.scheduled = at
        heapq.heappush(self._heap, (at, next(self._order), peer))
        self.wake_by(at)

    def due(self, now: float) -> list[Peer]:
        """The peers whose turn has come (each once), to be scheduled again after it."""
        found: list[Peer] = []
        heap = self._heap
        while heap and heap[0][0] <= now:
            at, _, peer = heapq.heappop(heap)
            if at == peer.scheduled and not peer.closed:
                peer.scheduled = math.inf
                found.append(peer)
        return found

    def wake_by(self, at: float) -> None:
        """Have :meth:`wait` return by ``at`` (something else is due then)."""
        if self._sleep is not None and at < self._sleep.deadline:
            self._sleep.deadline = at

    async def wait(self, also_at: float) -> None:
        """Sleep until the earliest turn, or ``also_at``, or an earlier :meth:`schedule`."""
        first = self._heap[0][0] if self._heap else math.inf
        with trio.CancelScope(deadline=min(first, also_at)) as sleep:
            self._sleep = sleep
            try:
                await trio.sleep_forever()
            finally:
                self._sleep = None

    def __len__(self) -> int:
        return len(self._heap)
