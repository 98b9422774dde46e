"""Legacy registrations waiting for the rate: oldest first, bounded, a client timeout at most."""

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
    assert taken.ready[0][1] is newer
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
    assert queue.add(at(-1), identity(key, at(-1)), 5000.0) == at(0)
    taken = queue.take(31.0, 30.0, lambda _: False, lambda: True)
    assert taken.expired == [at(1)]  # came at 1.0; at(0) was the one pushed out
    assert queue.discard(at(-1))
    assert not queue.discard(at(-1))
    assert sorted(queue.clear())[0] == at(2)
