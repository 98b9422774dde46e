"""Registered clients and their transitions: the one owner of client-session state.

A client is its source address. It is registered by its public key, refreshed by
any well-formed datagram, and removed by DISCONNECT, by timeout or by an
operator. The registry is sans-I/O: callers pass ``now`` (monotonic seconds)
and send whatever notices the returned values call for.
"""

import time
from collections import Counter, OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass
from enum import Enum

from cryptography.hazmat.primitives.asymmetric import rsa

from mcrelay.protocol import crypto, legacy
from mcrelay.protocol.addresses import Address


class Registration(Enum):
    NEW = "new"
    REKEYED = "rekeyed"
    REFRESHED = "refreshed"


class RegistryFull(Exception):
    """No room for another client."""


@dataclass(slots=True)
class Client:
    address: Address
    key: rsa.RSAPublicKey
    numbers: rsa.RSAPublicNumbers
    fingerprint: str
    connected_at: float
    """Wall-clock time (Unix seconds) of registration, for display."""
    last_seen: float
    """Monotonic time of the last well-formed datagram."""
    joined_notice: bytes = b""
    """This client's CLIENT_CONNECTED datagram, encoded once."""
    relays_in_flight: int = 0
    """Messages from this client between completion and fan-out."""
    left_reason: str | None = None
    """Set when the client was removed while its messages were still in flight."""
    messages_in: int = 0
    messages_out: int = 0
    bytes_in: int = 0
    bytes_out: int = 0

    @property
    def key_bits(self) -> int:
        return self.key.key_size


class ClientRegistry:
    def __init__(self) -> None:
        self.max_clients = 0
        self.max_clients_per_host = 0
        """The bounds on registration; until :meth:`configure`, the registry is full."""
        self._per_host: Counter[str] = Counter()
        # Ordered by last activity, stalest first: expiry looks only at the front.
        self._clients: OrderedDict[Address, Client] = OrderedDict()

    def configure(self, *, max_clients: int, max_clients_per_host: int) -> None:
        """New bounds; they apply to new registrations, and every client registered stays."""
        self.max_clients = max_clients
        self.max_clients_per_host = max_clients_per_host

    def __len__(self) -> int:
        return len(self._clients)

    def __contains__(self, address: object) -> bool:
        return address in self._clients

    def __iter__(self) -> Iterator[Client]:
        return iter(list(self._clients.values()))

    def get(self, address: Address) -> Client | None:
        return self._clients.get(address)

    def others(self, address: Address) -> list[Client]:
        """Every client but ``address``, in a list the caller may keep."""
        return [client for client in self._clients.values() if client.address != address]

    def register(self, address: Address, key: rsa.RSAPublicKey, now: float) -> Registration:
        numbers = key.public_numbers()
        client = self._clients.get(address)
        if client is not None:
            self.touch(address, now)
            if client.numbers == numbers:
                return Registration.REFRESHED
            client.key, client.numbers = key, numbers
            client.fingerprint = crypto.fingerprint(key)
            return Registration.REKEYED
        if len(self._clients) >= self.max_clients:
            raise RegistryFull(f"{self.max_clients} clients registered")
        host = address[0]
        if self._per_host[host] >= self.max_clients_per_host:
            raise RegistryFull(f"{self.max_clients_per_host} clients registered from {host}")
        self._clients[address] = Client(
            address,
            key,
            numbers,
            crypto.fingerprint(key),
            time.time(),
            now,
            joined_notice=legacy.peer_joined(address),
        )
        self._per_host[host] += 1
        return Registration.NEW

    def touch(self, address: Address, now: float) -> bool:
        client = self._clients.get(address)
        if client is None:
            return False
        client.last_seen = now
        self._clients.move_to_end(address)
        return True

    def holds(self, address: Address, key: rsa.RSAPublicKey) -> bool:
        """Is ``address`` registered with this very key (a refresh, not a registration)?"""
        client = self._clients.get(address)
        return client is not None and client.numbers == key.public_numbers()

    def remove(self, address: Address) -> Client | None:
        client = self._clients.pop(address, None)
        if client is not None:
            self._forget_host(address[0])
        return client

    def _forget_host(self, host: str) -> None:
        self._per_host[host] -= 1
        if not self._per_host[host]:
            del self._per_host[host]

    def expire(self, now: float, timeout_s: float) -> list[Client]:
        """Remove and return every client idle for longer than ``timeout_s``."""
        expired: list[Client] = []
        while self._clients:
            client = next(iter(self._clients.values()))
            if now - client.last_seen <= timeout_s:
                break
            del self._clients[client.address]
            self._forget_host(client.address[0])
            expired.append(client)
        return expired
