"""Legacy registrations waiting for the rate: oldest first, bounded, a client timeout at most;
the messages held for them, bounded per source, per host and in all."""

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from mcrelay.daemon.legacy import waiting
from mcrelay.daemon.legacy.profile import identity
from mcrelay.daemon.legacy.waiting import WaitingRegistrations
from mcrelay.protocol.addresses import Address

Keys = list[rsa.RSAPrivateKey]


def at(n: int) -> Address:
    return ("127.0.0.1", 40000 + n)


def test_oldest_first_as_the_rates_allow_and_a_new_key_keeps_its_place(keys: Keys) -> None:
    queue = WaitingRegistrations()
    for n in range(4):
        assert queue.add(at(n), identity(keys[1].public_key(), at(n)), float(n)) is None
    newer = identity(keys[2].public_key(), at(1))
    assert queue.add(at(1), newer, 9.0) is None
    tokens = {at(1), at(2)}  # the hosts of at(0) and at(3) have none yet
    taken = queue.take(10.0, 30.0, lambda source: source in tokens, lambda: True)
    assert [source for source, _ in taken.ready] == [at(1), at(2)]
    assert taken.ready[0][1].identity is newer
    assert taken.expired == []
    assert len(queue) == 2
    assert at(0) in queue
    assert at(3) in queue


def test_no_room_in_all_stops_asking(keys: Keys) -> None:
    queue = WaitingRegistrations()
    for n in range(3):
        queue.add(at(n), identity(keys[1].public_key(), at(n)), 0.0)
    asked: list[Address] = []

    def allow(source: Address) -> bool:
        asked.append(source)
        return True

    taken = queue.take(1.0, 30.0, allow, lambda: False)
    assert (taken.ready, asked, len(queue)) == ([], [], 3)


def test_past_the_wait_they_expire_and_past_the_bound_the_oldest_goes(keys: Keys) -> None:
    queue = WaitingRegistrations()
    key = keys[1].public_key()
    for n in range(waiting.MAX_WAITING):
        assert queue.add(at(n), identity(key, at(n)), float(n)) is None
    pushed_out = queue.add(at(-1), identity(key, at(-1)), 5000.0)
    assert pushed_out is not None
    assert pushed_out[0] == at(0)
    taken = queue.take(31.0, 30.0, lambda _: False, lambda: True)
    assert [source for source, _ in taken.expired] == [at(1)]  # at(0) was pushed out
    assert queue.discard(at(-1)) is not None
    assert queue.discard(at(-1)) is None
    assert sorted(source for source, _ in queue.clear())[0] == at(2)


def test_messages_are_held_only_for_a_waiting_source_and_leave_with_it(keys: Keys) -> None:
    queue = WaitingRegistrations()
    assert not queue.may_hold(at(0))
    assert not queue.hold(at(0), b"no registration waits")
    queue.add(at(0), identity(keys[1].public_key(), at(0)), 0.0)
    for n in range(waiting.MAX_HELD_PER_SOURCE):
        assert queue.hold(at(0), b"%d" % n)
    assert not queue.may_hold(at(0))
    assert not queue.hold(at(0), b"one too many")
    taken = queue.take(1.0, 30.0, lambda _: True, lambda: True)
    ((source, made),) = taken.ready
    assert source == at(0)
    assert made.held == [b"%d" % n for n in range(waiting.MAX_HELD_PER_SOURCE)]


def test_held_bytes_are_bounded_in_all_and_per_host(
    keys: Keys, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(waiting, "MAX_HELD_BYTES", 100)
    queue = WaitingRegistrations()
    hosts = [("127.0.0.1", 1), ("127.0.0.1", 2), ("127.0.0.2", 1), ("127.0.0.3", 1)]
    for source in hosts:
        queue.add(source, identity(keys[1].public_key(), source), 0.0)
    assert queue.hold(hosts[0], bytes(30))
    assert not queue.hold(hosts[1], bytes(30))  # its host would pass half of all
    assert queue.hold(hosts[1], bytes(20))
    assert not queue.may_hold(hosts[1])  # its host holds its half
    assert queue.hold(hosts[2], bytes(40))
    assert not queue.hold(hosts[3], bytes(20))  # all would pass 100
    held = queue.discard(hosts[0])
    assert held is not None
    assert held.held == [bytes(30)]
    assert queue.hold(hosts[3], bytes(20))  # its bytes were freed with it
    assert queue.hold(hosts[1], bytes(20))  # its host too: 100 in all
