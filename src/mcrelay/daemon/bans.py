"""Addresses the operator banned: all their traffic is dropped until the ban ends."""

import time
from dataclasses import dataclass

from mcrelay.protocol.addresses import Address


@dataclass(frozen=True, slots=True)
class Ban:
    address: Address
    until: float
    """Monotonic time the ban ends."""
    until_wall: float
    """The same moment as Unix time, for display."""


class BanList:
    def __init__(self) -> None:
        self._bans: dict[Address, Ban] = {}

    def __len__(self) -> int:
        return len(self._bans)

    def ban(self, address: Address, seconds: float, now: float) -> Ban:
        ban = Ban(address, now + seconds, time.time() + seconds)
        self._bans[address] = ban
        return ban

    def is_banned(self, address: Address, now: float) -> bool:
        ban = self._bans.get(address)
        if ban is None:
            return False
        if ban.until <= now:
            del self._bans[address]
            return False
        return True

    def lift(self, address: Address, now: float) -> Ban | None:
        """End an active ban early; ``None`` when there is none (or it already ended)."""
        ban = self._bans.pop(address, None)
        return ban if ban is not None and ban.until > now else None

    def active(self, now: float) -> list[Ban]:
        for address in [a for a, ban in self._bans.items() if ban.until <= now]:
            del self._bans[address]
        return sorted(self._bans.values(), key=lambda ban: ban.until)
