"""Where each secure member is, as the relay's messages show it.

The page has no PRESENCE for a move: a secure member that roams (or replaces its
session from another address) keeps its membership, and the relay's origins show its
new address from its next message on. Legacy members are told "left" then "joined";
a secure client sees the move here, at the first message from the new address, as
:class:`~.client_events.MemberMoved` (before that message). Only secure members: one
key is one member, whereas legacy clients may share an RSA key from two addresses.
"""

from mcrelay.protocol.addresses import Address
from mcrelay.protocol.secure.client_events import (
    ChatReceived,
    MemberMoved,
    NoticeReceived,
    PresenceChanged,
)
from mcrelay.protocol.secure.messages import PresenceEvent
from mcrelay.protocol.secure.origins import OriginKind

MAX_KNOWN_MEMBERS = 16_384
"""Members whose address is kept; past it, the one heard from least recently is forgotten
(its next move is then not shown): a relay announcing members without end costs a
bounded memory (about 4 MiB)."""


class MemberAddresses:
    """The address of each secure member the relay announced or relayed, by key."""

    __slots__ = ("_addresses", "_limit")

    def __init__(self, limit: int = MAX_KNOWN_MEMBERS) -> None:
        self._addresses: dict[bytes, Address] = {}
        self._limit = limit

    def __len__(self) -> int:
        return len(self._addresses)

    def follow(self, event: ChatReceived | PresenceChanged | NoticeReceived) -> MemberMoved | None:
        """Take what the relay said; the move it shows, if any, to tell before ``event``."""
        if isinstance(event, NoticeReceived) or event.origin.kind != OriginKind.SECURE_CLIENT:
            return None
        key, address = event.origin.id, event.origin.address
        assert address is not None  # a member's origin has one
        if isinstance(event, PresenceChanged):
            if event.event == PresenceEvent.LEFT:
                self._addresses.pop(key, None)
            else:
                self._remember(key, address)
            return None
        previous = self._addresses.get(key)
        self._remember(key, address)
        if previous is None or previous == address:
            return None
        return MemberMoved(event.origin, previous)

    def _remember(self, key: bytes, address: Address) -> None:
        self._addresses.pop(key, None)
        if len(self._addresses) >= self._limit:
            del self._addresses[next(iter(self._addresses))]
        self._addresses[key] = address
