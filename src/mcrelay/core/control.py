"""What operators may do with a running relay: the interface the control API is given.

The API depends on this and nothing of the daemon's; the service hands it the relay.
"""

from typing import Protocol

from mcrelay.core.bans import Ban, BanList, BanTarget
from mcrelay.core.events import EventHub
from mcrelay.core.federation import FederationControl
from mcrelay.core.members import Member, Roster
from mcrelay.core.remotes import Remotes
from mcrelay.core.stats import Statistics
from mcrelay.protocol.addresses import Address
from mcrelay.settings.config import RelayConfig

POST_RETRY_AFTER_S = 1.0


class Overloaded(Exception):
    """The relay cannot take this message now; ``retry_after_s`` says when to try again."""

    def __init__(self, message: str, retry_after_s: float = POST_RETRY_AFTER_S) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class Control(Protocol):
    config: RelayConfig
    """The settings in effect."""
    address: Address
    """The relay's socket address (its port)."""
    roster: Roster
    remotes: Remotes
    """The other relays' members (none unless the relay federates)."""
    bans: BanList
    events: EventHub

    @property
    def fingerprint(self) -> str | None:
        """The RSA key's fingerprint, which legacy clients pin; none when legacy is not
        served (no RSA key is made then)."""

    @property
    def secure_key(self) -> str | None:
        """The secure profile's public key (base64), which secure clients pin; None when
        that profile is not served."""

    @property
    def federation(self) -> FederationControl | None:
        """The federation, when the relay joined one."""

    def statistics(self) -> Statistics: ...

    def kick(
        self, member_id: str, ban_s: float | None = None, *, scope: str | None = None
    ) -> list[Member]:
        """Remove a member, and with ``ban_s`` ban it by ``scope``: its address, its whole
        host (every member of which goes too) or its key (a secure member's, always
        banned); the members removed. ``ValueError`` for a key ban of a legacy member,
        :class:`~mcrelay.core.bans.TooManyBans` (one too) when the bans are full: then no
        one is removed."""

    def ban(self, target: BanTarget, ban_s: float) -> tuple[Ban, list[Member]]:
        """Ban a target, whether a member is connected by it or not; the ban, and the
        members here it removed. Raises :class:`~mcrelay.core.bans.TooManyBans`."""

    async def bans_saved(self) -> bool:
        """Whether a restart would find the bans as they are now: waits (a bounded
        while) for the bans file's write that holds the latest change; False when it
        failed or took too long, or the relay keeps no file (an ephemeral port's)."""

    async def post(
        self, plaintext: bytes, recipients: list[Member], *, federate: bool = False
    ) -> int:
        """A message from the relay itself; the copies sent here. ``federate``: the other
        relays deliver it to their members too. Raises :class:`Overloaded`."""
