"""Where a federation plugs into the relay: what the relay tells it, what operators ask.

The relay knows nothing of NATS or envelopes: it tells a :class:`Publisher` what
happened to its own members and messages, as it happens, and holds the other relays'
members in :class:`~mcrelay.core.remotes.Remotes`. The control API reaches the
federation through :class:`FederationControl`.
"""

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from mcrelay.core.members import Departure, Member, Roster
from mcrelay.core.profile import Origin
from mcrelay.core.remotes import Change, Remotes


class Publisher(Protocol):
    """Told by the relay about its own members and messages (never remote ones)."""

    def joined(self, member: Member) -> None:
        """A member joined or re-keyed."""

    def left(self, member: Member, reason: Departure) -> None:
        """A member's leave, as announced to the others."""

    def moved(self, member: Member) -> None:
        """A member has a new address."""

    def relayed(self, origin: Origin, plaintext: bytes) -> None:
        """A message of a member (or the operator's) that was delivered here: publish it."""

    def leaving(self) -> None:
        """The relay stops: its members are gone for the others too."""


@dataclass(frozen=True, slots=True)
class KickResult:
    """A remote relay's answer to a forwarded kick."""

    removed: Sequence[str]
    """The ids removed, prefixed with that relay's name."""
    status: str
    """``removed``, ``not_found`` or ``refused``."""
    message: str = ""


class FederationControl(Protocol):
    def status(self) -> dict[str, object]:
        """The bus's state: cluster, this relay's name, state, servers, reconnects."""

    def relays(self) -> list[dict[str, object]]:
        """Every relay of the federation known here, this one first."""

    async def kick(self, member: Member, ban_s: float | None, scope: str | None) -> KickResult:
        """Ask a remote member's relay to kick (and ban) it; ``TimeoutError`` when it does
        not answer in time, ``ConnectionError`` when the bus is down."""


class Federation(Publisher, FederationControl, Protocol):
    """Both sides of a federation's link, as the relay holds it."""


class Host(Protocol):
    """What the relay offers its federation's link."""

    roster: Roster
    remotes: Remotes

    async def deliver_remote(self, origin: Origin, plaintext: bytes, line: str) -> str | None:
        """Deliver another relay's message to every member here, in ``line`` (queued once
        the queue has room, started when there is room in flight); or why not (a drop
        reason)."""

    def remote_changes(self, changes: Sequence[Change], line: str) -> None:
        """Tell the members here of other relays' members joining, leaving, moving, after
        the messages of ``line`` in flight."""

    def kick(
        self, member_id: str, ban_s: float | None = None, *, scope: str | None = None
    ) -> list[Member]:
        """An operator's kick (here, asked by another relay's operator)."""
