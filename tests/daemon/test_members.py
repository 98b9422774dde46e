"""The roster: registration, refresh, re-key, capacity, idle expiry and presence, with
explicit ``now``. Members here are legacy ones (their id is their address)."""

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from mcrelay.core.members import Departure, Left, Member, Registration, Roster, RosterFull
from mcrelay.daemon.legacy.profile import identity
from mcrelay.protocol.addresses import Address, format_address
from mcrelay.protocol.legacy import crypto

Keys = list[rsa.RSAPrivateKey]

A: Address = ("127.0.0.1", 40001)
B: Address = ("127.0.0.1", 40002)
C: Address = ("127.0.0.1", 40003)
D: Address = ("127.0.0.1", 40004)


def roster(max_members: int = 4) -> Roster:
    return Roster(max_members=max_members, max_members_per_host=256)


def register(r: Roster, address: Address, key: rsa.RSAPrivateKey, now: float) -> Registration:
    registration, _ = r.register(identity(key.public_key(), address), address, now)
    return registration


def addresses(members: list[Member]) -> list[Address]:
    return [member.address for member in members]


def same_key_other_object(key: rsa.RSAPrivateKey) -> rsa.RSAPublicKey:
    """The public half of ``key`` as a separate object (parsed back from its PEM)."""
    loaded = serialization.load_pem_public_key(crypto.public_key_to_pem(key.public_key()))
    assert isinstance(loaded, rsa.RSAPublicKey)
    return loaded


def test_a_new_member_is_registered_under_its_id_and_address(keys: Keys) -> None:
    r = roster()
    assert register(r, A, keys[1], now=10.0) is Registration.NEW
    assert len(r) == 1
    member = r.get(format_address(A))
    assert member is not None
    assert r.at(A) is member
    assert r.at(B) is None
    assert member.address == A
    assert member.last_seen == 10.0
    assert member.identity.profile == "legacy"
    assert member.identity.key_id == crypto.fingerprint(keys[1].public_key())
    assert member.identity.details["key_bits"] == keys[1].key_size


def test_the_same_key_refreshes_another_rekeys(keys: Keys) -> None:
    r = roster()
    register(r, A, keys[1], now=1.0)
    # A different object with equal public numbers is the same key.
    again = identity(same_key_other_object(keys[1]), A)
    assert r.register(again, A, now=2.0) == (Registration.REFRESHED, None)
    assert register(r, A, keys[2], now=3.0) is Registration.REKEYED
    member = r.at(A)
    assert member is not None
    assert member.identity.key_id == crypto.fingerprint(keys[2].public_key())
    assert member.last_seen == 3.0
    assert register(r, A, keys[1], now=4.0) is Registration.REKEYED
    assert register(r, A, keys[1], now=5.0) is Registration.REFRESHED
    assert len(r) == 1


def test_a_full_roster_refuses_new_members_only(keys: Keys) -> None:
    r = roster(max_members=2)
    register(r, A, keys[1], now=1.0)
    register(r, B, keys[2], now=1.0)
    with pytest.raises(RosterFull):
        register(r, C, keys[3], now=2.0)
    assert r.at(C) is None
    # Members already registered may refresh and re-key while it is full.
    assert register(r, A, keys[1], now=3.0) is Registration.REFRESHED
    assert register(r, B, keys[4], now=3.0) is Registration.REKEYED
    r.remove(format_address(A), Departure.DISCONNECT)
    assert register(r, C, keys[3], now=4.0) is Registration.NEW
    assert len(r) == 2


def test_members_per_host_are_capped(keys: Keys) -> None:
    r = Roster(max_members=10, max_members_per_host=2)
    register(r, ("10.0.0.1", 1), keys[1], 0.0)
    register(r, ("10.0.0.1", 2), keys[1], 0.0)
    register(r, ("10.0.0.2", 1), keys[1], 0.0)
    with pytest.raises(RosterFull):
        register(r, ("10.0.0.1", 3), keys[1], 0.0)
    r.remove("10.0.0.1:1", Departure.DISCONNECT)
    register(r, ("10.0.0.1", 3), keys[1], 0.0)


def test_remove_returns_the_member_and_its_leave(keys: Keys) -> None:
    r = roster()
    register(r, A, keys[1], now=1.0)
    register(r, B, keys[2], now=1.0)
    member, leave = r.remove(format_address(A), Departure.KICK)
    assert member is not None
    assert leave == Left(member, Departure.KICK)
    assert r.at(A) is None
    assert r.remove(format_address(A), Departure.KICK) == (None, None)
    assert addresses(list(r)) == [B]


def test_idle_finds_only_idle_members_stalest_first(keys: Keys) -> None:
    r = roster()
    for n, address in enumerate((A, B, C, D)):
        register(r, address, keys[n + 1], now=float(n))
    assert r.idle(now=2.0, timeout_s=5.0) == []
    # Idle: A 5.0 (exactly the timeout: kept), B 4.0, C 3.0, D 2.0.
    assert r.idle(now=5.0, timeout_s=5.0) == []
    # Idle: A 6.5, B 5.5, C 4.5, D 3.5 -> A and B, A first.
    assert addresses(r.idle(now=6.5, timeout_s=5.0)) == [A, B]
    assert addresses(r.idle(now=100.0, timeout_s=5.0)) == [A, B, C, D]


def test_a_touched_or_refreshed_member_moves_to_the_back(keys: Keys) -> None:
    r = roster()
    register(r, A, keys[1], now=0.0)
    register(r, B, keys[2], now=1.0)
    register(r, C, keys[3], now=2.0)
    member = r.at(A)
    assert member is not None
    r.touch(member, now=3.0)
    assert addresses(list(r)) == [B, C, A]
    register(r, B, keys[2], now=4.0)  # refresh
    assert addresses(list(r)) == [C, A, B]
    assert addresses(r.idle(now=10.0, timeout_s=1.0)) == [C, A, B]


def test_others_is_a_list_the_caller_keeps(keys: Keys) -> None:
    r = roster()
    for n, address in enumerate((A, B, C)):
        register(r, address, keys[n + 1], now=0.0)
    b = r.at(B)
    assert addresses(r.others(b)) == [A, C]
    assert addresses(r.others(None)) == [A, B, C]
    others = r.others(b)
    r.remove(format_address(C), Departure.DISCONNECT)
    assert addresses(others) == [A, C]
    for member in r:
        r.remove(member.id, Departure.KICK)  # iteration is a snapshot
    assert len(r) == 0


def test_a_leave_waits_for_the_members_messages_in_flight(keys: Keys) -> None:
    r = roster()
    register(r, A, keys[1], now=0.0)
    member = r.at(A)
    assert member is not None
    r.message_started(member)
    r.message_started(member)
    assert r.remove(member.id, Departure.DISCONNECT) == (member, None)
    assert r.leaves_pending() == 1
    assert r.message_settled(member) is None
    assert r.message_settled(member) == Left(member, Departure.DISCONNECT)
    assert r.leaves_pending() == 0
    assert member.messages_in == 2


def test_an_id_back_before_its_leave_is_first_seen_leaving(keys: Keys) -> None:
    r = roster()
    register(r, A, keys[1], now=0.0)
    first = r.at(A)
    assert first is not None
    r.message_started(first)
    r.remove(first.id, Departure.TIMEOUT)
    registration, earlier = r.register(identity(keys[1].public_key(), A), A, now=1.0)
    assert (registration, earlier) == (Registration.NEW, Left(first, Departure.TIMEOUT))
    assert r.leaves_pending() == 0
    # The old member's last message settles later: no second leave.
    assert r.message_settled(first) is None


def test_a_roster_has_room_for_nobody_until_its_limits_are_set(keys: Keys) -> None:
    r = Roster()
    with pytest.raises(RosterFull):
        register(r, A, keys[1], now=0.0)
    r.max_members, r.max_members_per_host = 1, 1
    assert register(r, A, keys[1], now=0.0) is Registration.NEW
