"""Where a wire profile plugs into the relay, and what the relay offers it.

The relay's socket loop hands each datagram to a profile chosen by its first byte
(:meth:`Profile.datagram_untrusted`). The profile decodes it and acts through
:class:`Services`: it registers and removes members in the roster, starts a message's
task, admits it and hands it on. Fan-out asks each recipient's profile to seal a copy
(:meth:`Profile.seal`) and to word presence notices for its members.
"""

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

import trio

from mcrelay.core.events import EventHub
from mcrelay.core.members import Departure, Identity, Member, Roster
from mcrelay.core.opened import Opened, Sealed
from mcrelay.core.ratelimit import SourceLimiter
from mcrelay.core.remotes import Remotes, relay_of
from mcrelay.protocol.addresses import RELAY_ITSELF, Address
from mcrelay.protocol.errors import DropReason


@dataclass(frozen=True, slots=True)
class Origin:
    """Who a relayed message is from, as recipients are told."""

    id: str
    address: Address
    identity: Identity | None = None
    """The sender's identity (None for the relay itself): how a profile names it."""


RELAY_ORIGIN = Origin("relay", RELAY_ITSELF)
"""The relay itself: an operator's message."""


def turn_host(member_id: str, address: Address) -> str:
    """The host whose turns a sender's crypto work takes (:mod:`mcrelay.daemon.fairqueue`):
    a member of this relay's is its IP address, as the relay's other bounds per host
    count it; the relay's own posts are one host (``relay``); another relay's members
    and posts are that relay (its name and ``/``: they come in its one line and in its
    order, and what addresses it says they have is its word)."""
    relay = relay_of(member_id)
    if relay is not None:
        return f"{relay}/"
    if member_id == RELAY_ORIGIN.id:
        return RELAY_ORIGIN.id
    return address[0]


class Profile(Protocol):
    name: str
    max_message_bytes: int
    """The largest plaintext its members may send (larger ones are dropped, counted)."""

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Its own tasks, if any (timers), in the relay's nursery."""

    def datagram_untrusted(self, data: bytes, source: Address, now: float) -> None:
        """Decode one datagram and act on it; whatever is wrong with it is a counted drop."""

    async def seal(
        self, origin: Origin, plaintext: bytes, recipients: Sequence[Member]
    ) -> list[Sealed]:
        """One copy for each recipient (all of this profile), or why it has none, in a
        new list (the caller's to change: a recipient re-keyed meanwhile is sealed again)."""

    def deliver(self, member: Member, copy: bytes) -> bool:
        """Send a member of this profile its copy; False when it was dropped (counted)."""

    def farewell(self, member: Member, reason: Departure) -> bool:
        """An operator removes a member of this profile (kick, ban): True when the
        profile tells it first and removes it itself once told (:meth:`Services.remove`);
        False to remove it now."""

    def removed(self, member: Member, reason: Departure) -> None:
        """A member of this profile left the roster (``reason`` as its leave says)."""

    def stop_receiving(self) -> None:
        """No datagram comes any more: end what only more datagrams could finish."""

    def announce_joined(self, member: Member, recipients: Sequence[Member]) -> None:
        """Tell these members (of this profile) that ``member`` joined."""

    def announce_rekeyed(self, member: Member, old: Identity, recipients: Sequence[Member]) -> None:
        """Tell these members (of this profile) that ``member`` is there under a new key
        (it was ``old``): a legacy member's re-key."""

    def announce_present(self, newcomer: Member, present: Sequence[Member]) -> None:
        """Tell ``newcomer`` (of this profile) who is already there."""

    def announce_left(
        self, member: Member, recipients: Sequence[Member], reason: Departure
    ) -> None:
        """Tell these members (of this profile) that ``member`` left, and why."""

    def announce_moved(self, member: Member, old: Address, recipients: Sequence[Member]) -> None:
        """Tell these members (of this profile) that ``member`` moved from ``old`` to its
        current address."""


Opener = Callable[[list[Member]], Awaitable[Opened]]
"""A profile's way to open a message it received, given the recipients (decided when
the message is admitted): called at admission, so the work may start at once; awaited
by the message's task for the plaintext and, if it sealed them on the way, the copies."""


class Admitted(Protocol):
    """An admitted message's life from admission on: its task runs it once, or, if the
    task is cancelled first, abandons it (either way its place and counts are settled)."""

    async def run(self) -> None: ...

    def abandon(self) -> None: ...


class Services(Protocol):
    """What the relay offers a profile."""

    roster: Roster
    remotes: Remotes
    """The members of the other relays of a federation (none without one)."""
    events: EventHub
    registrations: Mapping[str, SourceLimiter]
    """The rates of new members (and legacy re-keys), per host and in all, by profile:
    each profile its own budget of the same settings. One shared budget let spoofed
    legacy registrations, which nothing authenticates, keep secure members out (found
    by review); two make a host's worst case twice the rate when both are served."""

    def drop(
        self, reason: DropReason, source: Address, detail: object = None, count: int = 1
    ) -> None:
        """Count (and log at debug) a drop, or ``count`` of them."""

    def notify(self, datagram: bytes, address: Address) -> bool:
        """Queue a notice or an answer; False when it was dropped (its queue is full)."""

    def send(self, datagram: bytes, address: Address) -> bool:
        """Send a copy now, or queue it behind what waits; False when dropped (counted)."""

    def notify_all(self, notices: Sequence[tuple[bytes, Address]]) -> None:
        """Queue many notices; past the backlog's bound the rest are dropped, counted."""

    def log_presence(self, message: str, *args: object) -> None:
        """Log a join, leave, re-key, move or replacement (INFO), within the relay's budget
        of such lines: anyone may cause them."""

    def register(self, identity: Identity, address: Address, now: float) -> None:
        """Register, re-key or refresh a member, and announce it (raises ``RosterFull``, or
        ``AddressInUse`` when another member holds the address)."""

    def take_address(
        self, profile: str, member_id: str, address: Address, *, only_check: bool = False
    ) -> None:
        """Make way for a member of ``profile`` at ``address`` (``AddressInUse`` when
        another member holds it, or is still leaving from it; a legacy holder gives way
        to a secure member, and leaves; ``only_check``: not yet)."""

    def remove(self, member_id: str, reason: Departure) -> Member | None:
        """Remove a member and announce its leave (once its messages in flight are out)."""

    def move(self, member: Member, address: Address) -> None:
        """A member's proven new address: the roster follows it, the others are told."""

    def key_banned(self, member_id: str, now: float) -> bool:
        """Is this identity (a secure member's id) banned by the operator?"""

    def address_banned(self, address: Address, now: float) -> bool:
        """Is this source banned (by its address or its host's) by the operator?"""

    def start_message(self, life: Callable[[], Awaitable[None]]) -> None:
        """Run a message's life as a task in the relay's ``messages`` nursery."""

    def has_room(self, sender: Member) -> bool:
        """Could a message of ``sender`` be admitted now? (Nothing is counted.)"""

    def room_for(self, sender: Member) -> bool:
        """May a new message of ``sender`` start? A refusal is counted (``overloaded``)."""

    def admit(
        self, sender: Member, opener: Opener, *, acknowledged: bool = False
    ) -> "Admitted | None":
        """Admit a complete message, taking its place in its sender's line now; None
        (counted) when there is no room. An ``acknowledged`` message (its sender was
        told it arrived) is admitted whatever the room: its profile bounds how many
        such messages start (the secure channel's back-pressure)."""
