"""MemberAddresses: a secure member's move is seen at its first message from a new address;
legacy members' are not (they may share a key), and what is kept is bounded."""

from mcrelay.protocol.addresses import Address
from mcrelay.protocol.secure.client_events import (
    ChatReceived,
    MemberMoved,
    NoticeReceived,
    PresenceChanged,
)
from mcrelay.protocol.secure.member_addresses import MemberAddresses
from mcrelay.protocol.secure.messages import LeaveReason, NoticeCode, PresenceEvent
from mcrelay.protocol.secure.origins import RELAY_ORIGIN, Origin, OriginKind

HERE: Address = ("127.0.0.1", 40002)
THERE: Address = ("127.0.0.1", 40003)


def secure(address: Address, key: bytes = b"k" * 32) -> Origin:
    return Origin(OriginKind.SECURE_CLIENT, key, address)


def present(origin: Origin, event: PresenceEvent = PresenceEvent.JOINED) -> PresenceChanged:
    return PresenceChanged(event, origin, LeaveReason.NONE)


def test_a_message_from_a_new_address_is_a_move_once() -> None:
    addresses = MemberAddresses()
    assert addresses.follow(present(secure(HERE), PresenceEvent.ALREADY_PRESENT)) is None
    assert addresses.follow(ChatReceived(secure(HERE), b"a")) is None
    assert addresses.follow(ChatReceived(secure(THERE), b"b")) == MemberMoved(secure(THERE), HERE)
    assert addresses.follow(ChatReceived(secure(THERE), b"c")) is None


def test_a_member_that_left_and_came_back_elsewhere_did_not_move() -> None:
    addresses = MemberAddresses()
    addresses.follow(present(secure(HERE)))
    addresses.follow(PresenceChanged(PresenceEvent.LEFT, secure(HERE), LeaveReason.TIMEOUT))
    assert len(addresses) == 0
    assert addresses.follow(present(secure(THERE))) is None
    assert addresses.follow(ChatReceived(secure(THERE), b"back")) is None


def test_legacy_members_the_relay_and_notices_are_not_followed() -> None:
    addresses = MemberAddresses()
    legacy_here = Origin(OriginKind.LEGACY_CLIENT, b"r" * 32, HERE)
    legacy_there = Origin(OriginKind.LEGACY_CLIENT, b"r" * 32, THERE)
    addresses.follow(ChatReceived(legacy_here, b"one key, two clients"))
    assert addresses.follow(ChatReceived(legacy_there, b"the other")) is None
    assert addresses.follow(ChatReceived(RELAY_ORIGIN, b"from the operator")) is None
    assert addresses.follow(NoticeReceived(NoticeCode.SHUTTING_DOWN, "bye")) is None
    assert len(addresses) == 0


def test_past_its_bound_the_member_heard_from_least_recently_is_forgotten() -> None:
    addresses = MemberAddresses(limit=2)
    first, second, third = (secure(HERE, bytes([n]) * 32) for n in (1, 2, 3))
    for origin in (first, second):
        addresses.follow(present(origin))
    addresses.follow(ChatReceived(first, b"heard again"))
    addresses.follow(present(third))
    assert len(addresses) == 2
    assert addresses.follow(ChatReceived(secure(THERE, first.id), b"kept")) is not None
    assert addresses.follow(ChatReceived(secure(THERE, second.id), b"forgotten")) is None
