"""Addresses, hosts and keys the operator banned, until the ban ends.

A ban names one client address (``ip:port``) or a whole host (``ip``), whose traffic
is all dropped, or a secure client's key (its id, ``k:`` and base64url), whose
handshakes get silence wherever they come from. A legacy client is its source
address, so a banned legacy client that merely changes its port is kept out only by
a host ban; a secure client is its key.
"""

import ipaddress
import re
import time
from dataclasses import dataclass

from mcrelay.protocol.addresses import Address, format_address, parse_address
from mcrelay.protocol.secure.keys import CLIENT_ID_PREFIX, parse_client_id

BanTarget = Address | str
"""An ``(ip, port)`` address, a host's IP address alone, or a secure client's id."""
MAX_BAN_S = 365 * 24 * 3600.0
BAN_SECONDS = re.compile(r"[0-9]{1,9}(\.[0-9]{1,6})?")
"""Plain ASCII decimal seconds: no sign, exponent, underscore, space or other digits."""


@dataclass(frozen=True, slots=True)
class Ban:
    target: BanTarget
    until: float
    """Monotonic time the ban ends."""
    until_wall: float
    """The same moment as Unix time, for display."""

    @property
    def id(self) -> str:
        """``ip:port`` for an address, the IP alone (never bracketed) for a host."""
        return self.target if isinstance(self.target, str) else format_address(self.target)

    @property
    def scope(self) -> str:
        if not isinstance(self.target, str):
            return "address"
        return "key" if self.target.startswith(CLIENT_ID_PREFIX) else "host"


def parse_ban_target(text: str) -> BanTarget:
    """``ip:port`` / ``[v6]:port`` (an address), a bare IP address (a host), or a secure
    client's id (``k:`` and base64url: its key).

    Raises ``ValueError`` with a readable reason."""
    if text.startswith(CLIENT_ID_PREFIX):
        parse_client_id(text)
        return text
    try:
        return str(ipaddress.ip_address(text.removeprefix("[").removesuffix("]")))
    except ValueError:
        return parse_address(text)


def parse_ban_seconds(text: str) -> float:
    """A ban's length: plain decimal seconds above 0, at most a year; else ``ValueError``."""
    if not BAN_SECONDS.fullmatch(text) or not 0 < float(text) <= MAX_BAN_S:
        raise ValueError(
            f"{text!r}: a ban is plain decimal seconds (as in 600 or 0.5), "
            f"above 0 and at most {MAX_BAN_S:.0f}"
        )
    return float(text)


class BanList:
    def __init__(self) -> None:
        self._bans: dict[BanTarget, Ban] = {}

    def __len__(self) -> int:
        return len(self._bans)

    def ban(self, target: BanTarget, seconds: float, now: float) -> Ban:
        seconds = min(seconds, MAX_BAN_S)  # its date must stay a date
        ban = Ban(target, now + seconds, time.time() + seconds)
        self._bans[target] = ban
        return ban

    def is_banned(self, address: Address, now: float) -> bool:
        """Is this source banned, by its own address or by its host's?"""
        return self._active(address, now) or self._active(address[0], now)

    def is_key_banned(self, client_id: str, now: float) -> bool:
        """Is this secure client's key banned?"""
        return self._active(client_id, now)

    def _active(self, target: BanTarget, now: float) -> bool:
        ban = self._bans.get(target)
        if ban is None:
            return False
        if ban.until <= now:
            del self._bans[target]
            return False
        return True

    def lift(self, target: BanTarget, now: float) -> Ban | None:
        """End an active ban early; ``None`` when there is none (or it already ended)."""
        ban = self._bans.pop(target, None)
        return ban if ban is not None and ban.until > now else None

    def active(self, now: float) -> list[Ban]:
        for target in [t for t, ban in self._bans.items() if ban.until <= now]:
            del self._bans[target]
        return sorted(self._bans.values(), key=lambda ban: ban.until)
