"""Message bodies, carried reliably in FRAGMENT frames: ``kind u8`` + content.

Client to relay: CHAT (the text, any bytes, empty allowed) and DISCONNECT (empty).
Relay to client: CHAT (origin + text), PRESENCE (event, reason, origin) and NOTICE
(code, UTF-8 text). Each direction has its decoder; a kind the direction does not
carry is refused as ``unknown_kind``. A body refused here is still a complete message
to the reliable channel: one too large, of an unknown kind or with a NOTICE text over
1,000 bytes is ACKed, dropped and counted (secure-wire.md, Messages).
"""

import struct
from dataclasses import dataclass
from enum import IntEnum

from mcrelay.protocol.errors import DropReason, LocalProtocolError, RemoteProtocolError
from mcrelay.protocol.secure.origins import Origin, decode_origin_untrusted, encode_origin

MAX_CHAT_BYTES = 65_536
"""The largest CHAT text, either way."""
MAX_NOTICE_TEXT_BYTES = 1_000
"""The largest NOTICE text, in UTF-8 bytes."""

# | kind u8 | content ... |
KIND = struct.Struct("<B")
# PRESENCE content: | event u8 | reason u8 | origin |
PRESENCE_HEAD = struct.Struct("<BB")
# NOTICE content: | code u16 LE | UTF-8 text, at most 1,000 bytes |
NOTICE_CODE = struct.Struct("<H")


class MessageKind(IntEnum):
    CHAT = 1
    PRESENCE = 2
    NOTICE = 3
    DISCONNECT = 4


class PresenceEvent(IntEnum):
    JOINED = 1
    LEFT = 2
    ALREADY_PRESENT = 3


class LeaveReason(IntEnum):
    """Why a member left; ``NONE`` (0) for the events other than LEFT."""

    NONE = 0
    DISCONNECT = 1
    TIMEOUT = 2
    KICK = 3
    BAN = 4
    UNREACHABLE = 5


class NoticeCode(IntEnum):
    KICKED = 1
    BANNED = 2
    SHUTTING_DOWN = 3
    REPLACED = 4


def _check_chat(text: bytes) -> None:
    if len(text) > MAX_CHAT_BYTES:
        raise LocalProtocolError(f"a CHAT text of {len(text)} bytes, over {MAX_CHAT_BYTES}")


@dataclass(frozen=True, slots=True)
class Chat:
    """Client to relay: a text for every other member (any bytes, empty allowed)."""

    text: bytes

    def __post_init__(self) -> None:
        _check_chat(self.text)


@dataclass(frozen=True, slots=True)
class Disconnect:
    """Client to relay: the client leaves."""


@dataclass(frozen=True, slots=True)
class RelayedChat:
    """Relay to client: a text and whom it is from (a member, or the relay's operator)."""

    origin: Origin
    text: bytes

    def __post_init__(self) -> None:
        _check_chat(self.text)


@dataclass(frozen=True, slots=True)
class Presence:
    """Relay to client: a member joined, left (with its reason), or was already there."""

    event: PresenceEvent
    origin: Origin
    reason: LeaveReason = LeaveReason.NONE

    def __post_init__(self) -> None:
        if self.event not in _EVENTS or self.reason not in _REASONS:
            raise LocalProtocolError(f"PRESENCE event {self.event} reason {self.reason}")
        if (self.event == PresenceEvent.LEFT) == (self.reason == LeaveReason.NONE):
            raise LocalProtocolError("a PRESENCE has a reason if and only if its event is LEFT")


@dataclass(frozen=True, slots=True)
class Notice:
    """Relay to client: what the relay did to this client, and a text for its user.

    ``text`` is the UTF-8 bytes as sent; :attr:`readable_text` replaces invalid UTF-8
    (it is shown, never refused).
    """

    code: NoticeCode
    text: bytes

    def __post_init__(self) -> None:
        if self.code not in _CODES:
            raise LocalProtocolError(f"NOTICE code {self.code} is not one of 1 to 4")
        if len(self.text) > MAX_NOTICE_TEXT_BYTES:
            raise LocalProtocolError(
                f"a NOTICE text of {len(self.text)} bytes, over {MAX_NOTICE_TEXT_BYTES}"
            )

    @property
    def readable_text(self) -> str:
        return self.text.decode("utf-8", errors="replace")


_EVENTS = frozenset(PresenceEvent)
_REASONS = frozenset(LeaveReason)
_CODES = frozenset(NoticeCode)

ClientMessage = Chat | Disconnect
"""What a client sends the relay."""
RelayMessage = RelayedChat | Presence | Notice
"""What the relay sends a client."""
Message = ClientMessage | RelayMessage


def encode_message(message: Message) -> bytes:
    """A message body: its kind and its content."""
    match message:
        case Chat(text):
            return KIND.pack(MessageKind.CHAT) + text
        case Disconnect():
            return KIND.pack(MessageKind.DISCONNECT)
        case RelayedChat(origin, text):
            return relayed_chat_head(origin) + text
        case Presence(event, origin, reason):
            return (
                KIND.pack(MessageKind.PRESENCE)
                + PRESENCE_HEAD.pack(event, reason)
                + encode_origin(origin)
            )
        case Notice(code, text):
            return KIND.pack(MessageKind.NOTICE) + NOTICE_CODE.pack(code) + text


def relayed_chat_head(origin: Origin) -> bytes:
    """What a relayed CHAT's body holds before its text: its kind and its origin."""
    return KIND.pack(MessageKind.CHAT) + encode_origin(origin)


def decode_client_message_untrusted(body: bytes) -> ClientMessage:
    """A message body a client sent the relay.

    Raises :class:`RemoteProtocolError`: ``unknown_kind`` for a kind other than CHAT
    and DISCONNECT, ``too_large`` for a CHAT text over 65,536 bytes, ``malformed``
    for an empty body or a DISCONNECT with content.
    """
    kind = _kind_untrusted(body)
    if kind == MessageKind.CHAT:
        return Chat(_chat_text_untrusted(body, KIND.size))
    if kind == MessageKind.DISCONNECT:
        if len(body) != KIND.size:
            raise RemoteProtocolError(f"a DISCONNECT with {len(body) - KIND.size} bytes of content")
        return Disconnect()
    raise RemoteProtocolError(f"message kind {kind} from a client", DropReason.UNKNOWN_KIND)


def decode_relay_message_untrusted(body: bytes) -> RelayMessage:
    """A message body the relay sent a client.

    Raises :class:`RemoteProtocolError`: ``unknown_kind`` for a kind other than CHAT,
    PRESENCE and NOTICE, ``too_large`` for a CHAT text over 65,536 bytes,
    ``notice_too_long`` for a NOTICE text over 1,000 bytes, ``malformed`` for
    anything else that breaks its kind's layout (an unknown event, reason or code
    included).
    """
    kind = _kind_untrusted(body)
    if kind == MessageKind.CHAT:
        origin, offset = decode_origin_untrusted(body, KIND.size)
        return RelayedChat(origin, _chat_text_untrusted(body, offset))
    if kind == MessageKind.PRESENCE:
        return _presence_untrusted(body)
    if kind == MessageKind.NOTICE:
        return _notice_untrusted(body)
    raise RemoteProtocolError(f"message kind {kind} from the relay", DropReason.UNKNOWN_KIND)


def _kind_untrusted(body: bytes) -> int:
    if not body:
        raise RemoteProtocolError("an empty message body")
    kind: int = body[0]
    return kind


def _chat_text_untrusted(body: bytes, offset: int) -> bytes:
    if len(body) - offset > MAX_CHAT_BYTES:
        raise RemoteProtocolError(
            f"a CHAT text of {len(body) - offset} bytes, over {MAX_CHAT_BYTES}",
            DropReason.TOO_LARGE,
        )
    return bytes(body[offset:])


def _presence_untrusted(body: bytes) -> Presence:
    offset = KIND.size
    if len(body) - offset < PRESENCE_HEAD.size:
        raise RemoteProtocolError("a PRESENCE cut short before its origin")
    event, reason = PRESENCE_HEAD.unpack_from(body, offset)
    if event not in _EVENTS:
        raise RemoteProtocolError(f"unknown PRESENCE event {event}")
    if reason not in _REASONS or (event == PresenceEvent.LEFT) == (reason == LeaveReason.NONE):
        raise RemoteProtocolError(f"PRESENCE event {event} with leave reason {reason}")
    origin, offset = decode_origin_untrusted(body, offset + PRESENCE_HEAD.size)
    if offset != len(body):
        raise RemoteProtocolError(f"{len(body) - offset} bytes after a PRESENCE's origin")
    return Presence(PresenceEvent(event), origin, LeaveReason(reason))


def _notice_untrusted(body: bytes) -> Notice:
    offset = KIND.size
    if len(body) - offset < NOTICE_CODE.size:
        raise RemoteProtocolError("a NOTICE cut short before its code")
    (code,) = NOTICE_CODE.unpack_from(body, offset)
    if code not in _CODES:
        raise RemoteProtocolError(f"unknown NOTICE code {code}")
    text = bytes(body[offset + NOTICE_CODE.size :])
    if len(text) > MAX_NOTICE_TEXT_BYTES:
        raise RemoteProtocolError(
            f"a NOTICE text of {len(text)} bytes, over {MAX_NOTICE_TEXT_BYTES}",
            DropReason.NOTICE_TOO_LONG,
        )
    return Notice(NoticeCode(code), text)
