"""Members of the other relays of a federation, held on leases: sans-I/O.

Each relay of the cluster publishes its joins and leaves as they happen and a full
snapshot of its members every few seconds. Here they are held per relay: any envelope
heard from a relay renews its lease; a relay not heard for ``lease_s`` is forgotten,
and each of its members is announced as left (``timeout``). A relay heard with a newer
epoch restarted: its members as known are gone (``timeout``) before the new ones come.
A snapshot replaces what is known of that relay's members: those missing from it
left (a leave lost on the way), those new to it joined.

A remote member's id is its relay's name, ``/`` and its id there, so ``ip:port`` ids of
different sites cannot collide with each other or with this relay's members. What the
methods return is what to announce to this relay's members, in order.
"""

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

from mcrelay.core.members import Departure, Identity, Member
from mcrelay.protocol.addresses import Address

LEASE_S = 10.0
"""How long a relay's members are held without hearing from it."""
MAX_REMOTE_MEMBERS = 65536
"""Remote members held at most, over all relays (a relay's snapshot past it is cut)."""


@dataclass(frozen=True, slots=True)
class Remote:
    """A member as another relay describes it (its own id there, not prefixed)."""

    identity: Identity
    address: Address
    connected_at: float


@dataclass(frozen=True, slots=True)
class Change:
    """What to tell this relay's members about a remote member."""

    event: str
    """``joined``, ``left`` or ``moved``."""
    member: Member
    reason: Departure | None = None
    """A leave's reason."""
    old: Address | None = None
    """A move's previous address."""
    rekeyed_from: Identity | None = None
    """A join's earlier identity, when it is a re-key."""


@dataclass(slots=True)
class RemoteRelay:
    name: str
    epoch: int
    heard_at: float
    """Monotonic time of the last envelope heard from it (its lease's start)."""
    members: dict[str, Member] = field(default_factory=dict)
    """By prefixed id."""
    envelopes_in: int = 0
    gaps: int = 0
    """Envelopes of its message stream that never came (sequence numbers skipped)."""
    duplicates: int = 0
    """Envelopes refused as replays or duplicates."""


def remote_id(relay: str, member_id: str) -> str:
    return f"{relay}/{member_id}"


def relay_of(member_id: str) -> str | None:
    """The other relay a :func:`remote_id` names (its members', and its own posts'); None
    for an id of this relay's (no ``/``: ``ip:port``, ``k:`` and a key, ``relay``)."""
    relay, slash, _ = member_id.partition("/")
    return relay if slash else None


class Remotes:
    def __init__(self, *, lease_s: float = LEASE_S, max_members: int = MAX_REMOTE_MEMBERS):
        self.lease_s = lease_s
        self.max_members = max_members
        self.relays: dict[str, RemoteRelay] = {}
        self._members: dict[str, Member] = {}
        self.refused = 0
        """Members not held: past ``max_members``."""

    def __len__(self) -> int:
        return len(self._members)

    def __iter__(self) -> Iterator[Member]:
        return iter(list(self._members.values()))

    def get(self, member_id: str) -> Member | None:
        return self._members.get(member_id)

    def heard(self, name: str, epoch: int, now: float) -> list[Change]:
        """An authentic envelope from relay ``name`` of ``epoch`` (never older than the
        newest known: the caller refuses those): its lease renewed; a newer epoch first
        drops what was known of it."""
        relay = self.relays.get(name)
        changes: list[Change] = []
        if relay is not None and relay.epoch != epoch:
            changes = self._drop_relay(relay, Departure.TIMEOUT)
            relay = None
        if relay is None:
            relay = self.relays[name] = RemoteRelay(name, epoch, now)
        relay.heard_at = now
        relay.envelopes_in += 1
        return changes

    def joined(self, name: str, remote: Remote, now: float) -> list[Change]:
        """A member of ``name`` joined, moved or re-keyed (``heard`` came first)."""
        relay = self.relays[name]
        return self._join(relay, remote, now)

    def left(self, name: str, member_id: str, reason: Departure) -> list[Change]:
        relay = self.relays[name]
        member = relay.members.pop(remote_id(name, member_id), None)
        if member is None:
            return []
        del self._members[member.id]
        return [Change("left", member, reason)]

    def snapshot(self, name: str, remotes: Sequence[Remote], now: float) -> list[Change]:
        """Every member of ``name`` now: the ones missing left, the new ones joined."""
        relay = self.relays[name]
        present = {remote_id(name, remote.identity.id) for remote in remotes}
        changes = [
            change
            for member_id in [i for i in relay.members if i not in present]
            for change in self.left(name, member_id.removeprefix(f"{name}/"), Departure.TIMEOUT)
        ]
        for remote in remotes:
            changes += self._join(relay, remote, now)
        return changes

    def silent(self, now: float) -> list[str]:
        """The relays not heard for the lease (what :meth:`expire` forgets)."""
        return [name for name, relay in self.relays.items() if now - relay.heard_at >= self.lease_s]

    def expire(self, now: float) -> list[Change]:
        """Relays not heard for the lease: forgotten, their members left (``timeout``)."""
        changes: list[Change] = []
        for name in self.silent(now):
            changes += self._drop_relay(self.relays[name], Departure.TIMEOUT)
        return changes

    def next_expiry(self) -> float | None:
        """When the first lease runs out (monotonic), if any is held."""
        if not self.relays:
            return None
        return min(relay.heard_at for relay in self.relays.values()) + self.lease_s

    def _join(self, relay: RemoteRelay, remote: Remote, now: float) -> list[Change]:
        identity = remote.identity
        member_id = remote_id(relay.name, identity.id)
        member = relay.members.get(member_id)
        if member is not None:
            member.last_seen = now
            old = member.address
            member.address = remote.address
            if member.identity.key_id != identity.key_id:
                # Re-keyed (at its relay, a new member under the same id): joined again.
                earlier, member.identity = member.identity, _prefixed(relay.name, identity)
                return [Change("joined", member, rekeyed_from=earlier)]
            return [] if old == remote.address else [Change("moved", member, old=old)]
        if len(self._members) >= self.max_members:
            self.refused += 1
            return []
        member = Member(_prefixed(relay.name, identity), remote.address, remote.connected_at, now)
        relay.members[member_id] = self._members[member_id] = member
        return [Change("joined", member)]

    def _drop_relay(self, relay: RemoteRelay, reason: Departure) -> list[Change]:
        del self.relays[relay.name]
        for member_id in relay.members:
            del self._members[member_id]
        return [Change("left", member, reason) for member in relay.members.values()]


def _prefixed(relay: str, identity: Identity) -> Identity:
    return Identity(
        identity.profile,
        remote_id(relay, identity.id),
        identity.key_id,
        None,
        identity.origin_id,
        identity.details,
        relay,
    )
