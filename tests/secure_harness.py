"""A secure client for the relay harness (:mod:`relay_harness`): the page's handshake
and a client session, built from the sans-I/O parts, its datagrams fed straight into
the relay and the relay's read from the stub socket. Tests drive it by hand."""

import itertools
import os
from collections.abc import Iterator
from dataclasses import dataclass, field

import trio

from mcrelay.protocol.addresses import Address
from mcrelay.protocol.secure.channel import Role
from mcrelay.protocol.secure.channel_events import MessageDelivered
from mcrelay.protocol.secure.data import peek_data_untrusted
from mcrelay.protocol.secure.handshake import Initiator, tai64n
from mcrelay.protocol.secure.header import DatagramType, datagram_type_untrusted
from mcrelay.protocol.secure.keypairs import Keypair
from mcrelay.protocol.secure.keys import KeyPair, client_id
from mcrelay.protocol.secure.messages import (
    Chat,
    Disconnect,
    RelayMessage,
    decode_relay_message_untrusted,
    encode_message,
)
from mcrelay.protocol.secure.session import Session
from relay_harness import RELAY_ADDRESS, Harness, settle

_indexes = itertools.count(1)
_wall_ns = itertools.count(1_800_000_000 * 10**9, 10**6)
"""TAI64N timestamps that only grow, whatever the (mock) clock says."""


@dataclass
class SecurePeer:
    harness: Harness
    address: Address
    static: KeyPair = field(default_factory=KeyPair.generate)
    epoch: int = 1
    session: Session | None = None
    read: int = 0
    """How much of the stub's record :meth:`receive` has looked at."""
    received: list[RelayMessage] = field(default_factory=list)
    """The relay's messages delivered to it, in order, until :meth:`take`."""
    others: list[tuple[bytes, DatagramType]] = field(default_factory=list)
    """Handshake answers (RESPONSE, COOKIE, KEY_INFO) the relay sent it."""

    @property
    def id(self) -> str:
        return client_id(self.static.public)

    def initiator(self, *, cookie: bytes | None = None) -> Initiator:
        return Initiator(
            self.static,
            self.harness.secure_key.public,
            ephemeral_private=os.urandom(32),
            sender_index=next(_indexes),
            timestamp=tai64n(next(_wall_ns)),
            epoch=self.epoch,
            cookie=cookie,
        )

    def send(self, *datagrams: bytes) -> None:
        for datagram in datagrams:
            self.harness.relay.handle_datagram(datagram, self.address, trio.current_time())

    async def handshake(self) -> bool:
        """Send an INIT; with the RESPONSE, start (or rekey) the session. False when the
        relay did not answer with a RESPONSE."""
        initiator = self.initiator()
        self.send(initiator.datagram)
        await settle()
        for data in self._new_datagrams():
            if datagram_type_untrusted(data) is DatagramType.RESPONSE:
                established = initiator.read_response_untrusted(data)
                now = trio.current_time()
                keypair = Keypair.from_handshake(established.keys, established.relay_epoch, now)
                if self.session is None:
                    self.session = Session(Role.CLIENT, keypair, RELAY_ADDRESS, now)
                else:
                    self.session.install(keypair, now)
                return True
            self.others.append((data, datagram_type_untrusted(data)))
        return False

    async def connect(self) -> None:
        """Handshake, confirm, and let the relay register it."""
        assert await self.handshake(), f"no RESPONSE: {self.harness.drops()}"
        await self.pump()

    async def pump(self, rounds: int = 3) -> None:
        """Exchange what is due both ways until quiet (a few rounds)."""
        for _ in range(rounds):
            await settle()
            self.flush()
            await settle()
            self.receive()

    def flush(self) -> None:
        if self.session is not None:
            for data, to in self.session.datagrams(trio.current_time()):
                assert to == RELAY_ADDRESS
                self.send(data)

    def receive(self) -> None:
        session = self.session
        for data in self._new_datagrams():
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

    def _new_datagrams(self) -> Iterator[bytes]:
        sent = self.harness.sock.sent
        mine = [data for data, to in sent[self.read :] if to == self.address]
        self.read = len(sent)
        return iter(mine)
