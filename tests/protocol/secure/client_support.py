"""A relay made of the relay-side pieces (HandshakeGate, Responder, Session(Role.RELAY)),
and an in-memory datagram network with explicit times that loses, duplicates and
reorders: enough to drive :class:`ClientConnection` against, deterministically."""

import heapq
import itertools
import random
from collections.abc import Callable
from dataclasses import dataclass, field

from mcrelay.protocol.addresses import Address
from mcrelay.protocol.errors import RemoteProtocolError
from mcrelay.protocol.secure.admission import Admit, HandshakeGate, Reply
from mcrelay.protocol.secure.channel import Role
from mcrelay.protocol.secure.channel_events import MessageDelivered
from mcrelay.protocol.secure.client import ClientConnection
from mcrelay.protocol.secure.client_events import ClientEvent
from mcrelay.protocol.secure.data import peek_data_untrusted
from mcrelay.protocol.secure.handshake import Responder
from mcrelay.protocol.secure.header import DatagramType, datagram_type_untrusted
from mcrelay.protocol.secure.keypairs import Keypair
from mcrelay.protocol.secure.keys import KeyPair
from mcrelay.protocol.secure.messages import Message, encode_message
from mcrelay.protocol.secure.session import Session

RELAY_ADDRESS: Address = ("127.0.0.1", 5007)
RELAY_KEY = KeyPair.from_private(bytes(range(32)))
WALL_NS = 1_800_000_000 * 10**9
MAX_STEPS = 200_000


def seeded_random(seed: int) -> Callable[[int], bytes]:
    generator = random.Random(seed)
    return generator.randbytes


@dataclass
class Member:
    session: Session
    client_epoch: int
    key: bytes
    delivered: list[bytes] = field(default_factory=list)


class StubRelay:
    """One relay: KEY_INFO, cookies under ``cookies_always``, handshakes, sessions."""

    def __init__(
        self,
        key: KeyPair = RELAY_KEY,
        *,
        epoch: int = 9,
        cookies_always: bool = False,
        address: Address = RELAY_ADDRESS,
        seed: int = 1,
    ) -> None:
        self.key, self.epoch, self.address = key, epoch, address
        self.random_bytes = seeded_random(seed)
        self.gate = HandshakeGate(
            key.public, cookies_always=cookies_always, random_bytes=self.random_bytes
        )
        self.responder = Responder(key)
        self.members: dict[bytes, Member] = {}
        self.pending: dict[int, tuple[Keypair, bytes, int, Address]] = {}
        self.by_index: dict[int, Member] = {}
        self.out: list[tuple[bytes, Address]] = []
        self.inits = self.key_queries = 0
        self.on_join: Callable[[Member, float], None] = lambda _member, _now: None
        self._indexes = itertools.count(1000)

    def receive(self, data: bytes, source: Address, now: float) -> None:
        try:
            kind = datagram_type_untrusted(data)
        except RemoteProtocolError:
            return
        if kind is DatagramType.KEY_QUERY:
            self.key_queries += 1
            answer = self.gate.answer_key_query(data, now)
            if isinstance(answer, Reply):
                self.out.append((answer.datagram, source))
        elif kind is DatagramType.INIT:
            self.inits += 1
            self._init(data, source, now)
        elif kind is DatagramType.DATA:
            self._data(data, source, now)

    def _init(self, data: bytes, source: Address, now: float) -> None:
        screened = self.gate.screen_init(data, source, now, 0)
        if isinstance(screened, Reply):
            self.out.append((screened.datagram, source))
        if not isinstance(screened, Admit):
            return
        received = self.responder.read_init_untrusted(data)
        index = next(self._indexes)
        response = received.respond(
            ephemeral_private=self.random_bytes(32), sender_index=index, epoch=self.epoch
        )
        keypair = Keypair.from_handshake(response.keys, received.epoch, now)
        member = self.members.get(received.client_static)
        if member is not None and member.client_epoch == received.epoch:
            member.session.install(keypair, now)  # a rekey
            self.by_index[index] = member
        else:
            self.pending[index] = (keypair, received.client_static, received.epoch, source)
        self.out.append((response.datagram, source))

    def _data(self, data: bytes, source: Address, now: float) -> None:
        header = peek_data_untrusted(data)
        member = self.by_index.get(header.receiver_index)
        if member is None and header.receiver_index in self.pending:
            keypair, key, epoch, address = self.pending[header.receiver_index]
            session = Session(Role.RELAY, keypair, address, now)
            try:
                session.receive_untrusted(keypair, data, header.counter, source, now)
            except RemoteProtocolError:
                return
            del self.pending[header.receiver_index]
            member = Member(session, epoch, key)
            self.members[key] = member
            self.by_index[header.receiver_index] = member
            self.on_join(member, now)
            self._collect(member)
            return
        if member is None:
            return
        held = member.session.keypair(header.receiver_index, now)
        if held is None:
            return
        try:
            member.session.receive_untrusted(held, data, header.counter, source, now)
        except RemoteProtocolError:
            return
        self._collect(member)

    def _collect(self, member: Member) -> None:
        while (event := member.session.channel.next_event()) is not None:
            if isinstance(event, MessageDelivered):
                member.delivered.append(event.body)

    def send(self, key: bytes, message: Message, now: float) -> None:
        self.members[key].session.channel.send(encode_message(message), now)

    def datagrams(self, now: float) -> list[tuple[bytes, Address]]:
        out, self.out = self.out, []
        for member in self.members.values():
            out += member.session.datagrams(now)
            self._collect(member)
        return out

    def next_deadline(self) -> float | None:
        times = [member.session.next_deadline() for member in self.members.values()]
        return min(times, default=None)


@dataclass(order=True)
class _Transit:
    arrival: float
    order: int
    data: bytes = field(compare=False)
    source: Address = field(compare=False)
    to: Address = field(compare=False)


class Net:
    """Clients and a relay on a mock clock; every datagram takes ``delay_s``, unless it
    is lost, duplicated, or reordered (it then skips most of the delay)."""

    def __init__(
        self,
        relay: StubRelay,
        *,
        seed: int = 0,
        loss: float = 0.0,
        duplicate: float = 0.0,
        reorder: float = 0.0,
        delay_s: float = 0.002,
    ) -> None:
        self.relay = relay
        self.clients: dict[Address, ClientConnection] = {}
        self.events: dict[Address, list[ClientEvent]] = {}
        self.now = 0.0
        self.random = random.Random(seed)
        self.loss, self.duplicate, self.reorder, self.delay_s = loss, duplicate, reorder, delay_s
        self._transit: list[_Transit] = []
        self._order = itertools.count()
        self.relay_down = False
        """The relay's host is gone: nothing reaches it, nothing comes from it."""
        self.drop: Callable[[bytes, Address], bool] = lambda _data, _to: False
        """A test's own filter: True drops that datagram."""
        self.sent_to_relay: list[bytes] = []

    def add(self, address: Address, client: ClientConnection) -> ClientConnection:
        self.clients[address] = client
        self.events[address] = []
        return client

    def _put(self, data: bytes, source: Address, to: Address) -> None:
        copies = 2 if self.random.random() < self.duplicate else 1
        for _ in range(copies):
            if self.random.random() < self.loss or self.drop(data, to):
                continue
            delay = self.delay_s
            if self.random.random() < self.reorder:
                delay = self.random.uniform(0, delay / 2)
            heapq.heappush(
                self._transit, _Transit(self.now + delay, next(self._order), data, source, to)
            )

    def flush(self) -> None:
        for address, client in self.clients.items():
            for data, to in client.datagrams_to_send(self.now):
                self.sent_to_relay.append(data)
                self._put(data, address, to)
            while (event := client.next_event()) is not None:
                self.events[address].append(event)
        for data, to in self.relay.datagrams(self.now):
            if not self.relay_down:
                self._put(data, self.relay.address, to)

    def next_time(self) -> float | None:
        times = [c.next_deadline() for c in self.clients.values()] + [self.relay.next_deadline()]
        if self._transit:
            times.append(self._transit[0].arrival)
        return min((time for time in times if time is not None), default=None)

    def _arrive(self) -> None:
        while self._transit and self._transit[0].arrival <= self.now:
            transit = heapq.heappop(self._transit)
            if transit.to == self.relay.address:
                if not self.relay_down:
                    self.relay.receive(transit.data, transit.source, self.now)
            elif transit.to in self.clients:
                self.clients[transit.to].receive_datagram(transit.data, transit.source, self.now)

    def run(self, until: Callable[[], bool] | None = None, *, limit_s: float = 60.0) -> None:
        """Step from one arrival or deadline to the next until ``until()`` holds, or up to
        ``limit_s`` from now (the clock then stands there)."""
        end = self.now + limit_s
        for _ in range(MAX_STEPS):
            self.flush()
            if until is not None and until():
                return
            time = self.next_time()
            if time is None or time > end:
                self.now = max(self.now, end)
                self.flush()
                return
            self.now = max(self.now, time)
            self._arrive()
        raise AssertionError(f"no progress after {MAX_STEPS} steps at {self.now}")

    def run_for(self, seconds: float) -> None:
        self.run(limit_s=seconds)
