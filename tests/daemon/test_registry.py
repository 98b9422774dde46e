"""ClientRegistry: registration, refresh, re-key, capacity and idle expiry, with explicit ``now``."""

import re

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from mcrelay.daemon.registry import Client, ClientRegistry, Registration, RegistryFull
from mcrelay.protocol import crypto
from mcrelay.protocol.addresses import Address

Keys = list[rsa.RSAPrivateKey]

A: Address = ("127.0.0.1", 40001)
B: Address = ("127.0.0.1", 40002)
C: Address = ("127.0.0.1", 40003)
D: Address = ("127.0.0.1", 40004)


def configured(*, max_clients: int, max_clients_per_host: int = 256) -> ClientRegistry:
    registry = ClientRegistry()
    registry.configure(max_clients=max_clients, max_clients_per_host=max_clients_per_host)
    return registry


def addresses(clients: list[Client]) -> list[Address]:
    return [client.address for client in clients]


def same_key_other_object(key: rsa.RSAPrivateKey) -> rsa.RSAPublicKey:
    """The public half of ``key`` as a separate object (parsed back from its PEM)."""
    loaded = serialization.load_pem_public_key(crypto.public_key_to_pem(key.public_key()))
    assert isinstance(loaded, rsa.RSAPublicKey)
    return loaded


def test_new_client_is_registered(keys: Keys) -> None:
    registry = configured(max_clients=4)
    assert registry.register(A, keys[1].public_key(), now=10.0) is Registration.NEW
    assert len(registry) == 1
    assert A in registry
    assert B not in registry
    client = registry.get(A)
    assert client is not None
    assert client.address == A
    assert client.last_seen == 10.0
    assert client.numbers == keys[1].public_key().public_numbers()
    assert client.fingerprint == crypto.fingerprint(keys[1].public_key())
    assert client.key_bits == keys[1].key_size
    assert registry.get(B) is None


def test_same_key_refreshes(keys: Keys) -> None:
    registry = configured(max_clients=4)
    registry.register(A, keys[1].public_key(), now=1.0)
    # A different object with equal public numbers is the same key.
    other_object = same_key_other_object(keys[1])
    assert other_object is not keys[1].public_key()
    assert registry.register(A, other_object, now=2.0) is Registration.REFRESHED
    assert registry.register(A, keys[1].public_key(), now=3.0) is Registration.REFRESHED
    client = registry.get(A)
    assert client is not None
    assert client.last_seen == 3.0
    assert client.fingerprint == crypto.fingerprint(keys[1].public_key())
    assert len(registry) == 1


def test_other_key_rekeys(keys: Keys) -> None:
    registry = configured(max_clients=4)
    registry.register(A, keys[1].public_key(), now=1.0)
    assert registry.register(A, keys[2].public_key(), now=2.0) is Registration.REKEYED
    client = registry.get(A)
    assert client is not None
    assert client.numbers == keys[2].public_key().public_numbers()
    assert client.key.public_numbers() == keys[2].public_key().public_numbers()
    assert client.fingerprint == crypto.fingerprint(keys[2].public_key())
    assert client.last_seen == 2.0
    assert len(registry) == 1
    # Back to the first key is a re-key too; the same key again is a refresh.
    assert registry.register(A, keys[1].public_key(), now=3.0) is Registration.REKEYED
    assert registry.register(A, keys[1].public_key(), now=4.0) is Registration.REFRESHED


def test_full_registry_refuses_new_clients_only(keys: Keys) -> None:
    registry = configured(max_clients=2)
    assert registry.register(A, keys[1].public_key(), now=1.0) is Registration.NEW
    assert registry.register(B, keys[2].public_key(), now=1.0) is Registration.NEW
    with pytest.raises(RegistryFull):
        registry.register(C, keys[3].public_key(), now=2.0)
    assert C not in registry
    assert len(registry) == 2
    # Clients already registered may refresh and re-key while it is full.
    assert registry.register(A, keys[1].public_key(), now=3.0) is Registration.REFRESHED
    assert registry.register(B, keys[4].public_key(), now=3.0) is Registration.REKEYED
    # Room again once one leaves.
    assert registry.remove(A) is not None
    assert registry.register(C, keys[3].public_key(), now=4.0) is Registration.NEW
    assert len(registry) == 2


def test_touch(keys: Keys) -> None:
    registry = configured(max_clients=4)
    registry.register(A, keys[1].public_key(), now=1.0)
    assert registry.touch(A, now=5.0) is True
    client = registry.get(A)
    assert client is not None
    assert client.last_seen == 5.0
    assert registry.touch(B, now=5.0) is False
    assert B not in registry
    assert len(registry) == 1


def test_remove(keys: Keys) -> None:
    registry = configured(max_clients=4)
    registry.register(A, keys[1].public_key(), now=1.0)
    registry.register(B, keys[2].public_key(), now=1.0)
    removed = registry.remove(A)
    assert removed is not None
    assert removed.address == A
    assert A not in registry
    assert registry.get(A) is None
    assert registry.remove(A) is None
    assert registry.remove(C) is None
    assert addresses(list(registry)) == [B]


def test_expire_takes_only_idle_clients_stalest_first(keys: Keys) -> None:
    registry = configured(max_clients=4)
    registry.register(A, keys[1].public_key(), now=0.0)
    registry.register(B, keys[2].public_key(), now=1.0)
    registry.register(C, keys[3].public_key(), now=2.0)
    registry.register(D, keys[4].public_key(), now=3.0)
    assert registry.expire(now=2.0, timeout_s=5.0) == []
    assert len(registry) == 4
    # Idle: A 5.0 (exactly the timeout: kept), B 4.0, C 3.0, D 2.0.
    assert registry.expire(now=5.0, timeout_s=5.0) == []
    # Idle: A 6.5, B 5.5, C 4.5, D 3.5 -> A and B, A first.
    assert addresses(registry.expire(now=6.5, timeout_s=5.0)) == [A, B]
    assert addresses(list(registry)) == [C, D]
    assert addresses(registry.expire(now=100.0, timeout_s=5.0)) == [C, D]
    assert len(registry) == 0
    assert registry.expire(now=200.0, timeout_s=5.0) == []


def test_touched_client_moves_to_the_back(keys: Keys) -> None:
    registry = configured(max_clients=4)
    registry.register(A, keys[1].public_key(), now=0.0)
    registry.register(B, keys[2].public_key(), now=1.0)
    registry.register(C, keys[3].public_key(), now=2.0)
    assert registry.touch(A, now=3.0)
    assert addresses(list(registry)) == [B, C, A]
    # Idle: B 3.5, C 2.5, A 1.5 -> B and C, in that order; A stays.
    assert addresses(registry.expire(now=4.5, timeout_s=2.0)) == [B, C]
    assert addresses(list(registry)) == [A]


def test_refresh_moves_to_the_back(keys: Keys) -> None:
    registry = configured(max_clients=4)
    registry.register(A, keys[1].public_key(), now=0.0)
    registry.register(B, keys[2].public_key(), now=1.0)
    registry.register(C, keys[3].public_key(), now=2.0)
    registry.register(B, keys[2].public_key(), now=3.0)  # refresh
    registry.register(A, keys[4].public_key(), now=4.0)  # re-key
    assert addresses(list(registry)) == [C, B, A]
    assert addresses(registry.expire(now=10.0, timeout_s=1.0)) == [C, B, A]


def test_others_excludes_the_address(keys: Keys) -> None:
    registry = configured(max_clients=4)
    registry.register(A, keys[1].public_key(), now=0.0)
    registry.register(B, keys[2].public_key(), now=0.0)
    registry.register(C, keys[3].public_key(), now=0.0)
    assert addresses(registry.others(B)) == [A, C]
    assert addresses(registry.others(D)) == [A, B, C]
    # The list is the caller's: changing the registry does not change it.
    others = registry.others(A)
    registry.remove(C)
    assert addresses(others) == [B, C]
    assert addresses(registry.others(A)) == [B]


def test_iteration_is_a_snapshot(keys: Keys) -> None:
    registry = configured(max_clients=4)
    registry.register(A, keys[1].public_key(), now=0.0)
    registry.register(B, keys[2].public_key(), now=0.0)
    for client in registry:
        registry.remove(client.address)  # must not break the iteration
    assert len(registry) == 0


def test_a_registry_takes_no_one_until_configured(keys: Keys) -> None:
    registry = ClientRegistry()
    with pytest.raises(RegistryFull):
        registry.register(A, keys[1].public_key(), now=10.0)
    registry.configure(max_clients=1, max_clients_per_host=1)
    assert registry.register(A, keys[1].public_key(), now=10.0) is Registration.NEW
    registry.configure(max_clients=2, max_clients_per_host=1)
    with pytest.raises(RegistryFull, match=re.escape("1 clients registered from 127.0.0.1")):
        registry.register(B, keys[2].public_key(), now=10.0)
    assert A in registry  # a tighter bound removes no one
