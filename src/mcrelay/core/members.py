"""Members and the roster: the one owner of session state, whatever the wire profile.

A member is an identity (its profile, an id, the key it proved or claimed) at a current
address. It is registered, refreshed by its traffic, re-keyed, and removed by its own
leave, a timeout or an operator. The roster also owns presence: a member removed while
messages of its are still in flight is announced as gone only once they are out (its
leave is *deferred*), and an address that comes back before that is first seen
leaving. The roster does no I/O: callers pass ``now`` (monotonic seconds) for every
timing decision and announce what the returned values say; the wall clock is read only
for what the API shows (when a member joined).
"""

import time
from collections import Counter, OrderedDict
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from enum import Enum, StrEnum

from mcrelay.protocol.addresses import Address


class Registration(Enum):
    NEW = "new"
    REKEYED = "rekeyed"
    REFRESHED = "refreshed"


class Departure(StrEnum):
    """Why a member left, as events, the API and each profile's notices say it."""

    DISCONNECT = "disconnect"
    TIMEOUT = "timeout"
    KICK = "kick"
    BAN = "ban"
    UNREACHABLE = "unreachable"
    REPLACED = "replaced"
    """Another relay's member whose session a newer one replaced there; or a legacy
    member whose address a secure client proved it receives at (decision 67 of
    protocol.md)."""


class AddressInUse(Exception):
    """Another member holds the address (see :meth:`Relay.register`)."""


class RosterFull(Exception):
    """No room for another member."""


@dataclass(frozen=True, slots=True)
class Identity:
    """Who a member is, as its profile established it."""

    profile: str
    """The wire profile it speaks: ``legacy`` or ``secure``."""
    id: str
    """Opaque and stable while the member is: ``ip:port`` for a legacy member, ``k:`` and
    its static key (base64url) for a secure one."""
    key_id: str
    """Its key's fingerprint: a change of it is a re-key."""
    key: bytes | None
    """The key its profile seals copies with (a legacy member's RSA public key as DER,
    which the crypto workers load; a secure member's static public key, 32 bytes; None
    for a remote member)."""
    origin_id: bytes
    """Its 32-byte id in origins (secure PRESENCE and CHAT, federation envelopes): a
    secure member's static key, the SHA-256 of a legacy member's RSA key (DER)."""
    details: Mapping[str, object] = field(default_factory=dict)
    """What the API shows of the key, beyond the fingerprint (``key_bits``, say)."""
    relay: str | None = None
    """The relay it is a member of, when that is another relay of the federation (its
    id then starts with that relay's name and ``/``); None for this relay's own."""


@dataclass(slots=True)
class Member:
    identity: Identity
    address: Address
    connected_at: float
    """Wall-clock time (Unix seconds) of registration, for display."""
    last_seen: float
    """Monotonic time of the last well-formed datagram."""
    messages_in_flight: int = 0
    """Messages from this member between completion and fan-out."""
    leaving: Departure | None = None
    """The reason it was removed with, while its leave waits for its messages in flight."""
    messages_in: int = 0
    messages_out: int = 0
    bytes_in: int = 0
    bytes_out: int = 0

    @property
    def id(self) -> str:
        return self.identity.id


@dataclass(frozen=True, slots=True)
class Left:
    """A leave to announce now."""

    member: Member
    reason: Departure


class Roster:
    def __init__(self, *, max_members: int = 0, max_members_per_host: int = 0) -> None:
        """A roster with room for nobody until its limits are set (they are settings)."""
        self.max_members = max_members
        self.max_members_per_host = max_members_per_host
        self._per_profile: Counter[str] = Counter()
        self._per_host: Counter[tuple[str, str]] = Counter()
        """Members by profile, and by profile and host: each profile's counts are held to
        the limits on their own, so spoofed legacy registrations, of one host or of many,
        keep no secure client out (found by review)."""
        # By id, ordered by last activity, stalest first: expiry looks only at the front.
        self._members: OrderedDict[str, Member] = OrderedDict()
        self._at: dict[Address, Member] = {}
        self._leaving: dict[str, Member] = {}
        """Removed members whose leave waits for their messages in flight."""

    def __len__(self) -> int:
        return len(self._members)

    def __iter__(self) -> Iterator[Member]:
        return iter(list(self._members.values()))

    def get(self, member_id: str) -> Member | None:
        return self._members.get(member_id)

    def at(self, address: Address) -> Member | None:
        """The member at this address, if any."""
        return self._at.get(address)

    def others(self, member: Member | None) -> list[Member]:
        """Every member but ``member``, in a list the caller may keep."""
        return [other for other in self._members.values() if other is not member]

    def register(
        self, identity: Identity, address: Address, now: float
    ) -> tuple[Registration, Left | None]:
        """Register, re-key or refresh; also the deferred leave of this id to announce
        first, when the member comes back before its earlier leave was announced."""
        member = self._members.get(identity.id)
        if member is not None:
            self.touch(member, now)
            if member.identity.key_id == identity.key_id:
                return Registration.REFRESHED, None
            member.identity = identity
            return Registration.REKEYED, None
        if self._per_profile[identity.profile] >= self.max_members:
            raise RosterFull(f"{self.max_members} {identity.profile} clients registered")
        host = address[0]
        if self._per_host[identity.profile, host] >= self.max_members_per_host:
            raise RosterFull(
                f"{self.max_members_per_host} {identity.profile} clients registered from {host}"
            )
        earlier = self._leaving.pop(identity.id, None)
        member = Member(identity, address, time.time(), now)
        self._members[identity.id] = member
        self._at[address] = member
        self._per_profile[identity.profile] += 1
        self._per_host[identity.profile, host] += 1
        if earlier is None or earlier.leaving is None:
            return Registration.NEW, None
        left = Left(earlier, earlier.leaving)
        earlier.leaving = None
        return Registration.NEW, left

    def has_room(self, profile: str, host: str) -> bool:
        """Is there room for a new member of ``profile`` from ``host``?"""
        return (
            self._per_profile[profile] < self.max_members
            and self._per_host[profile, host] < self.max_members_per_host
        )

    def leaving_from(self, address: Address) -> Member | None:
        """A removed member of this address whose leave waits for its messages in flight
        (a few at most: no more than the messages in flight)."""
        return next((m for m in self._leaving.values() if m.address == address), None)

    def holds(self, identity: Identity) -> bool:
        """Is this identity registered with this very key (a refresh, not a registration)?"""
        member = self._members.get(identity.id)
        return member is not None and member.identity.key_id == identity.key_id

    def touch(self, member: Member, now: float) -> None:
        member.last_seen = now
        self._members.move_to_end(member.id)

    def move(self, member: Member, address: Address) -> None:
        """A member's new current address (a secure member roams; it proved the address).
        The host limit is not applied: the member is already admitted."""
        self._forget(member)
        member.address = address
        self._at[address] = member
        self._per_host[member.identity.profile, address[0]] += 1

    def remove(self, member_id: str, reason: Departure) -> tuple[Member | None, Left | None]:
        """Remove a member: it, and its leave to announce now (None while deferred)."""
        member = self._members.pop(member_id, None)
        if member is None:
            return None, None
        self._forget(member)
        self._per_profile[member.identity.profile] -= 1
        return member, self._leave(member, reason)

    def idle(self, now: float, timeout_s: float) -> list[Member]:
        """Every member idle for longer than ``timeout_s``, stalest first (the caller
        removes them, by ``timeout``)."""
        found: list[Member] = []
        for member in self._members.values():
            if now - member.last_seen <= timeout_s:
                break
            found.append(member)
        return found

    def message_started(self, member: Member) -> None:
        member.messages_in += 1
        member.messages_in_flight += 1

    def message_settled(self, member: Member) -> Left | None:
        """One of its messages is out (or dropped); its deferred leave, if now due."""
        member.messages_in_flight -= 1
        if member.leaving is None or member.messages_in_flight:
            return None
        if self._leaving.get(member.id) is member:
            del self._leaving[member.id]
        left = Left(member, member.leaving)
        member.leaving = None
        return left

    def leaves_pending(self) -> int:
        """Removed members whose leave waits for their messages in flight."""
        return len(self._leaving)

    def _leave(self, member: Member, reason: Departure) -> Left | None:
        if not member.messages_in_flight:
            return Left(member, reason)
        member.leaving = reason
        self._leaving[member.id] = member
        return None

    def _forget(self, member: Member) -> None:
        if self._at.get(member.address) is member:
            del self._at[member.address]
        counted = (member.identity.profile, member.address[0])
        self._per_host[counted] -= 1
        if not self._per_host[counted]:
            del self._per_host[counted]
