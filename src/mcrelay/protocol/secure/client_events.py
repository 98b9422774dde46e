"""What a secure client tells its application (:meth:`ClientConnection.next_event`).

Beside these, the settlement of each message the application sent comes as the
channel's :class:`~.channel_events.MessageAcknowledged` (the relay holds it, hop by
hop) or :class:`~.channel_events.MessageAbandoned` (given up at its deadline).
"""

from dataclasses import dataclass
from enum import Enum

from mcrelay.protocol.addresses import Address
from mcrelay.protocol.secure.channel_events import MessageAbandoned, MessageAcknowledged
from mcrelay.protocol.secure.messages import (
    LeaveReason,
    Notice,
    NoticeCode,
    Presence,
    PresenceEvent,
    RelayedChat,
    decode_relay_message_untrusted,
)
from mcrelay.protocol.secure.origins import Origin


@dataclass(frozen=True, slots=True)
class Connected:
    """The relay answered our first handshake with DATA: we are a member.

    ``learned``: the relay key came from KEY_QUERY with nothing to compare it to
    (trust on first use); the application may now keep it as a known relay.
    """

    relay: Address
    relay_key: bytes
    learned: bool


@dataclass(frozen=True, slots=True)
class ChatReceived:
    origin: Origin
    text: bytes


@dataclass(frozen=True, slots=True)
class PresenceChanged:
    """A member joined, left (with its reason), or was there before us."""

    event: PresenceEvent
    origin: Origin
    reason: LeaveReason


@dataclass(frozen=True, slots=True)
class MemberMoved:
    """A secure member's messages come from another address: it roamed, or replaced its
    session from there. The page announces no move: this comes just before its first
    message from the new address (:mod:`.member_addresses`). ``origin`` has the new address."""

    origin: Origin
    previous: Address


@dataclass(frozen=True, slots=True)
class NoticeReceived:
    """What the relay did to us; ``text`` is its readable text (invalid UTF-8 replaced)."""

    code: NoticeCode
    text: str


class CloseReason(Enum):
    DISCONNECTED = "disconnected"
    """We sent DISCONNECT (and the relay acknowledged it, or 1 s passed)."""
    UNREACHABLE = "unreachable"
    """No relay answered in time (a first handshake, or a new one after 30 s of silence)."""
    KEY_MISMATCH = "key_mismatch"
    """KEY_INFO showed a key other than the one expected, or two answers disagreed."""
    KICKED = "kicked"
    BANNED = "banned"
    FELL_BEHIND = "fell_behind"
    """The relay fell silent while a message of its that we refused, holding back
    (:attr:`ClientConnection.hold_back
    <mcrelay.protocol.secure.client.ClientConnection.hold_back>`), was not taken, and
    answered the next handshake under the same epoch: it removed us, and the messages it
    had for us are lost."""
    REPLACED = "replaced"
    """Another session with our key took our place (a second client with one identity)."""


@dataclass(frozen=True, slots=True)
class Closed:
    """The connection ended; nothing more comes or goes.

    For ``KEY_MISMATCH``, ``expected_key`` and ``found_key`` are the two keys (the one
    pinned or known, or the first answer's; and the other).
    """

    reason: CloseReason
    expected_key: bytes | None = None
    found_key: bytes | None = None
    keys_disagreed: bool = False
    """``KEY_MISMATCH`` with no key pinned or known: two answers to one query differed."""


ClientEvent = (
    Connected
    | ChatReceived
    | PresenceChanged
    | MemberMoved
    | NoticeReceived
    | MessageAcknowledged
    | MessageAbandoned
    | Closed
)


def relay_message_event_untrusted(
    body: bytes,
) -> ChatReceived | PresenceChanged | NoticeReceived:
    """The event a message body from the relay makes (raises ``RemoteProtocolError``)."""
    message = decode_relay_message_untrusted(body)
    if isinstance(message, RelayedChat):
        return ChatReceived(message.origin, message.text)
    if isinstance(message, Presence):
        return PresenceChanged(message.event, message.origin, message.reason)
    assert isinstance(message, Notice)
    return NoticeReceived(message.code, message.readable_text)
