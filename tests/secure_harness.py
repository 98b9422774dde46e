"""A secure client for tests: the page's handshake and a client session, built from
the sans-I/O parts, and driven by hand. On the relay harness (:mod:`relay_harness`)
its datagrams go straight into the relay and the relay's are read from the stub
socket; over UDP (:class:`UdpLink`) it talks to a real daemon on loopback."""

import itertools
import os
import socket
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Protocol

import trio

from mcrelay.daemon.relay import Relay
from mcrelay.daemon.secure.peers import COALESCE_S
from mcrelay.protocol.addresses import Address
from mcrelay.protocol.secure.channel import Role
from mcrelay.protocol.secure.channel_events import MessageDelivered
from mcrelay.protocol.secure.data import peek_data_untrusted
from mcrelay.protocol.secure.handshake import Initiator, tai64n
from mcrelay.protocol.secure.header import MAGIC, DatagramType, datagram_type_untrusted
from mcrelay.protocol.secure.keypairs import Keypair
from mcrelay.protocol.secure.keys import KeyPair, client_id, decode_key
from mcrelay.protocol.secure.messages import (
    Chat,
    Disconnect,
    RelayMessage,
    decode_relay_message_untrusted,
    encode_message,
)
from mcrelay.protocol.secure.session import Session
from relay_harness import RELAY_ADDRESS, Harness, client_address, settle
from support import wait_until

_indexes = itertools.count(1)
_wall_ns = itertools.count(1_800_000_000 * 10**9, 10**6)
"""TAI64N timestamps that only grow, whatever the (mock) clock says."""


class Link(Protocol):
    """How a :class:`SecurePeer` reaches the relay."""

    relay_public: bytes

    def send(self, data: bytes, source: Address) -> None: ...

    def received(self, address: Address) -> list[bytes]:
        """What the relay sent ``address`` since the last call."""
        ...

    async def settle(self) -> None:
        """Until what was sent has been acted on."""


class HarnessLink:
    def __init__(self, harness: Harness) -> None:
        self.harness = harness
        self.relay_public = harness.secure_key.public
        self._read: dict[Address, int] = {}

    def send(self, data: bytes, source: Address) -> None:
        self.harness.relay.handle_datagram(data, source, trio.current_time())

    def received(self, address: Address) -> list[bytes]:
        sent = self.harness.sock.sent
        mine = [data for data, to in sent[self._read.get(address, 0) :] if to == address]
        self._read[address] = len(sent)
        return mine

    async def settle(self) -> None:
        """What was sent has been acted on, and what the relay holds back to share a
        datagram (:data:`COALESCE_S`) has gone (the mock clock moves that much)."""
        await settle()
        await trio.sleep(COALESCE_S)
        await settle()


class UdpLink:
    """A UDP socket on loopback to a real relay (one peer per link: its address is the
    socket's)."""

    def __init__(self, relay: Address, relay_public: bytes) -> None:
        self.relay = relay
        self.relay_public = relay_public
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.setblocking(False)
        self.address: Address = self.sock.getsockname()

    def send(self, data: bytes, source: Address) -> None:
        self.sock.sendto(data, self.relay)

    def received(self, address: Address) -> list[bytes]:
        found: list[bytes] = []
        while True:
            try:
                data, _ = self.sock.recvfrom(65535)
            except BlockingIOError:
                return found
            found.append(data)

    async def settle(self) -> None:
        await trio.sleep(0.02)

    def close(self) -> None:
        self.sock.close()


@dataclass
class SecurePeer:
    link: Link
    address: Address
    static: KeyPair = field(default_factory=KeyPair.generate)
    epoch: int = 1
    session: Session | None = None
    received: list[RelayMessage] = field(default_factory=list)
    """The relay's messages delivered to it, in order, until :meth:`take`."""
    others: list[tuple[bytes, DatagramType]] = field(default_factory=list)
    """Handshake answers (COOKIE, KEY_INFO, a RESPONSE not taken) the relay sent it."""
    cookie_rounds: int = 1
    """COOKIEs a handshake answers with a new INIT (the page: once per INIT scheduled)."""

    @property
    def cookies(self) -> int:
        """The COOKIEs the relay sent it."""
        return sum(kind is DatagramType.COOKIE for _, kind in self.others)

    @property
    def id(self) -> str:
        return client_id(self.static.public)

    def initiator(self, *, cookie: bytes | None = None) -> Initiator:
        return Initiator(
            self.static,
            self.link.relay_public,
            ephemeral_private=os.urandom(32),
            sender_index=next(_indexes),
            timestamp=tai64n(next(_wall_ns)),
            epoch=self.epoch,
            cookie=cookie,
        )

    def send(self, *datagrams: bytes) -> None:
        for datagram in datagrams:
            self.link.send(datagram, self.address)

    async def handshake(self) -> bool:
        """Send an INIT (again with the cookie when a COOKIE answers it); with the
        RESPONSE, start (or rekey) the session. False when no RESPONSE came."""
        initiator = self.initiator()
        for _ in range(1 + self.cookie_rounds):
            self.send(initiator.datagram)
            await self.link.settle()
            cookie = None
            for data in self._new_datagrams():
                kind = datagram_type_untrusted(data)
                if kind is DatagramType.RESPONSE:
                    self._start(initiator, data)
                    return True
                self.others.append((data, kind))
                if kind is DatagramType.COOKIE:
                    cookie = initiator.read_cookie_untrusted(data)
            if cookie is None:
                return False
            initiator = self.initiator(cookie=cookie)
        return False

    def _start(self, initiator: Initiator, response: bytes) -> None:
        established = initiator.read_response_untrusted(response)
        now = trio.current_time()
        keypair = Keypair.from_handshake(established.keys, established.relay_epoch, now)
        if self.session is None:
            self.session = Session(Role.CLIENT, keypair, RELAY_ADDRESS, now)
        else:
            self.session.install(keypair, now)

    async def connect(self) -> None:
        """Handshake, confirm, and let the relay register it."""
        assert await self.handshake(), "no RESPONSE"
        await self.pump()

    async def pump(self, rounds: int = 3) -> None:
        """Exchange what is due both ways until quiet (a few rounds)."""
        for _ in range(rounds):
            await self.link.settle()
            self.flush()
            await self.link.settle()
            self.receive()

    def flush(self) -> None:
        if self.session is not None:
            for data, to in self.session.datagrams(trio.current_time()):
                assert to == RELAY_ADDRESS
                self.send(data)

    def receive(self) -> None:
        session = self.session
        for data in self._new_datagrams():
            if data[:1] != bytes([MAGIC]):  # a legacy member's, at an address it shares
                continue
            kind = datagram_type_untrusted(data)
            if kind is not DatagramType.DATA or session is None:
                self.others.append((data, kind))
                continue
            now = trio.current_time()
            keypair = session.keypair(peek_data_untrusted(data).receiver_index, now)
            if keypair is None:
                continue
            session.receive_untrusted(
                keypair, data, peek_data_untrusted(data).counter, RELAY_ADDRESS, now
            )
        while session is not None and (event := session.channel.next_event()) is not None:
            if isinstance(event, MessageDelivered):
                self.received.append(decode_relay_message_untrusted(event.body))

    async def say(self, text: bytes) -> None:
        assert self.session is not None
        self.session.channel.send(encode_message(Chat(text)), trio.current_time())
        await self.pump()

    async def leave(self) -> None:
        assert self.session is not None
        self.session.channel.send(encode_message(Disconnect()), trio.current_time())
        await self.pump()

    def take(self) -> list[RelayMessage]:
        taken, self.received = self.received, []
        return taken

    async def wait_for(self, count: int) -> list[RelayMessage]:
        """Until it holds ``count`` messages (over UDP: they take their time); them."""

        def arrived() -> bool:
            self.flush()
            self.receive()
            return len(self.received) >= count

        await wait_until(arrived)
        return self.take()

    def _new_datagrams(self) -> Iterator[bytes]:
        return iter(self.link.received(self.address))


async def connected(harness: Harness, count: int) -> list[SecurePeer]:
    """``count`` secure members at ``client_address(0...)``, joined in that order."""
    peers = [SecurePeer(HarnessLink(harness), client_address(n)) for n in range(count)]
    for peer in peers:
        await peer.connect()
    return peers


@asynccontextmanager
async def secure_peer(relay: Relay) -> AsyncIterator[SecurePeer]:
    """A secure peer of a relay running on loopback (a whole daemon), over UDP."""
    assert relay.secure is not None
    link = UdpLink(relay.address, decode_key(relay.secure.public_key))
    try:
        yield SecurePeer(link, link.address)
    finally:
        link.close()
