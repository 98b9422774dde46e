"""The in-memory relay of the protocol tests (``StubRelay``) served on a loopback UDP
socket, forwarding CHAT to the other members and announcing joins: enough for the
secure driver and the CLI to run against, on Trio's clock."""

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import trio

from mcrelay.protocol.addresses import Address
from mcrelay.protocol.secure.keys import KeyPair
from mcrelay.protocol.secure.messages import (
    Disconnect,
    LeaveReason,
    Presence,
    PresenceEvent,
    RelayedChat,
    decode_client_message_untrusted,
)
from mcrelay.protocol.secure.origins import Origin, OriginKind
from protocol.secure.client_support import RELAY_KEY, Member, StubRelay

LOOPBACK = "127.0.0.1"


class ServedRelay:
    def __init__(self, sock: trio.socket.SocketType, relay: StubRelay) -> None:
        self.sock = sock
        self.relay = relay
        self.address: Address = sock.getsockname()
        self._seen: dict[bytes, int] = {}
        self.gone: set[bytes] = set()
        """Members that sent DISCONNECT (kept, so their session still ACKs it)."""
        relay.on_join = self._joined
        self._wake = trio.Event()
        self.drop: Callable[[bytes], bool] = lambda _data: False
        """A test's filter of what comes in: True drops that datagram."""

    def origin(self, member: Member) -> Origin:
        return Origin(OriginKind.SECURE_CLIENT, member.key, member.session.address)

    def present(self) -> dict[bytes, Member]:
        return {key: m for key, m in self.relay.members.items() if key not in self.gone}

    def _joined(self, joined: Member, now: float) -> None:
        self.gone.discard(joined.key)
        for key, other in self.present().items():
            if key != joined.key:
                self.relay.send(
                    joined.key, Presence(PresenceEvent.ALREADY_PRESENT, self.origin(other)), now
                )
                self.relay.send(key, Presence(PresenceEvent.JOINED, self.origin(joined)), now)

    def _forward(self, now: float) -> None:
        for key, member in self.present().items():
            new = member.delivered[self._seen.get(key, 0) :]
            self._seen[key] = len(member.delivered)
            for body in new:
                message = decode_client_message_untrusted(body)
                if isinstance(message, Disconnect):
                    self.gone.add(key)
                    left = Presence(PresenceEvent.LEFT, self.origin(member), LeaveReason.DISCONNECT)
                    for other in self.present():
                        self.relay.send(other, left, now)
                    break
                for other in self.present():
                    if other != key:
                        self.relay.send(other, RelayedChat(self.origin(member), message.text), now)

    async def _flush(self) -> None:
        now = trio.current_time()
        self._forward(now)
        for data, to in self.relay.datagrams(now):
            await self.sock.sendto(data, to)
        self._wake.set()
        self._wake = trio.Event()

    async def receive_loop(self) -> None:
        while True:
            data, source = await self.sock.recvfrom(2048)
            if self.drop(data):
                continue
            self.relay.receive(data, (source[0], source[1]), trio.current_time())
            await self._flush()

    async def timer_loop(self) -> None:
        while True:
            deadline = self.relay.next_deadline()
            with trio.move_on_at(deadline if deadline is not None else float("inf")):
                await self._wake.wait()
            await self._flush()


@asynccontextmanager
async def served_relay(key: KeyPair = RELAY_KEY, **options: bool) -> AsyncIterator[ServedRelay]:
    sock = trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_DGRAM)
    with sock:
        await sock.bind((LOOPBACK, 0))
        served = ServedRelay(sock, StubRelay(key, address=sock.getsockname(), **options))
        async with trio.open_nursery() as nursery:
            nursery.start_soon(served.receive_loop)
            nursery.start_soon(served.timer_loop)
            yield served
            nursery.cancel_scope.cancel()
